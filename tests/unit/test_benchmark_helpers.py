"""Helpers that the benchmark scripts plug into the shipped pipeline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from lightning_unlearn import UnlearningModule
from lightning_unlearn.demo.datasets import DemoWorldDataset
from lightning_unlearn.demo.pretrain import to_model_input

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_forget_set_serves_train_images_of_the_class(monkeypatch):
    real_forget_set = _load("real_forget_set")
    module = UnlearningModule(model_name="tiny-rn", pretrained=None, forget_classes=["kite"],
                              forget_dataset="demo_objects", num_perturbations=2)
    # What an EvaluationDataModule attached through a Trainer would give the module.
    evaluation = {"demo_objects": DemoWorldDataset("objects", "test", num_per_class=3, seed=0)}
    monkeypatch.setattr(module, "eval_datasets", lambda: evaluation)
    data = real_forget_set.RealImagesForgetDataModule(images_per_class=3, seed=0)
    made = data.make(module)

    train = DemoWorldDataset("objects", "train", num_per_class=3, seed=0)
    kite = train.classnames.index("kite")
    expected = to_model_input(train.images[train.labels == kite])
    assert made.class_index.tolist() == [kite] * 3
    assert torch.equal(made.images, expected)
    test = to_model_input(evaluation["demo_objects"].images)
    assert not any(torch.equal(image, other) for image in made.images for other in test)
    assert made.probability.shape == (3,) and bool(((made.probability > 0) & (made.probability < 1)).all())


def test_real_forget_set_needs_a_demo_dataset():
    real_forget_set = _load("real_forget_set")
    module = UnlearningModule(model_name="tiny-rn", pretrained=None, forget_classes=["dog"],
                              vocabulary=["cat", "dog"], num_perturbations=2)
    with pytest.raises(ValueError, match="real forget images exist only for"):
        real_forget_set.RealImagesForgetDataModule(images_per_class=2).make(module)
