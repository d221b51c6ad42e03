"""The published real-data path (``RealForgetDataModule(images_per_class="all", augment, shuffle,
accumulate_batches)``), fitted on a fake Caltech101 in the paper's layout whose forgotten class has 7 train and 3
val images of random texture (so that a crop or a flip changes the pixels).

What must hold: every train image of the class is trained on in every epoch, each time under a new random crop and
flip, in a new order; one optimiser step per min(batches, accumulate_batches) batches; the forget-set accuracy
(the stopping check) after every batch; "Real valid." on every val image of the class.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from PIL import Image

from lightning_unlearn import UnlearningModule
from lightning_unlearn.datamodules import RealForgetDataModule
from lightning_unlearn.datamodules.real_training import accumulation, count_per_class
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.methods import MultimodalLipschitz

try:
    from tests.fake_datasets import CALTECH_FOLDERS, write_split_json
except ImportError:  # tests/ is not a package: pytest put the test folders on sys.path
    from fake_datasets import CALTECH_FOLDERS, write_split_json  # type: ignore[no-redef]

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN, VAL = 7, 3  # images of the forgotten class per split
BATCH = 2


@pytest.fixture(scope="module")
def caltech(tmp_path_factory) -> Path:
    """caltech-101/ in the paper's layout: euphonium with TRAIN/VAL/1 images, every other class 1/1/1."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "caltech-101"
    kept = [name for name in CALTECH_FOLDERS if name not in ("BACKGROUND_Google", "Faces_easy")]
    entries: dict[str, list[list]] = {"train": [], "val": [], "test": []}
    rng = np.random.default_rng(0)
    for label, name in enumerate(kept):
        counts = {"train": TRAIN, "val": VAL, "test": 1} if name == "euphonium" else {"train": 1, "val": 1, "test": 1}
        for split, n in counts.items():
            for i in range(n):
                rel = f"{name}/{split}_{i}.png"
                (folder / "101_ObjectCategories" / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
                    folder / "101_ObjectCategories" / rel)
                entries[split].append([rel, label, {"Faces": "face", "airplanes": "airplane"}.get(name, name)])
    write_split_json(folder / "split_zhou_Caltech101.json", entries)
    return root


class Record(Callback):
    """Per epoch: the image indices of each batch and their pixels; validations and optimiser steps."""

    def __init__(self) -> None:
        self.batches: dict[int, list[list[int]]] = {}
        self.pixels: dict[int, dict[int, torch.Tensor]] = {}
        self.validations = 0
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
        epoch = trainer.current_epoch
        self.batches.setdefault(epoch, []).append(batch["index"].tolist())
        for i, image in zip(batch["index"].tolist(), batch["image"]):
            self.pixels.setdefault(epoch, {})[i] = image.clone()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # type: ignore[no-untyped-def]
        self.steps += 1

    def on_validation_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        if not trainer.sanity_checking:
            self.validations += 1


def fit(caltech: Path, epochs: int = 2, **data_args: Any) -> tuple[RealForgetDataModule, Record, Trainer]:
    seed_everything(0)
    module = UnlearningModule(model_name="tiny-rn", pretrained=None, forget_classes=["euphonium"],
                              forget_dataset="caltech101", method=MultimodalLipschitz(num_perturbations=2), lr=1e-3)
    args = dict(datasets={"caltech101": str(caltech)}, images_per_class="all", augment=True, shuffle=True,
                train_batch_size=BATCH, accumulate_batches=5, real_valid_images="all")
    data = RealForgetDataModule(**{**args, **data_args})
    record = Record()
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=epochs, val_check_interval=1, num_sanity_val_steps=0,
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[record])
    trainer.fit(module, data)
    return data, record, trainer


def test_every_image_in_shuffled_batches_with_fresh_crops_each_epoch(caltech):
    data, record, trainer = fit(caltech)
    assert len(data.forget_set.labels) == TRAIN  # every train image of the class, no subset
    batches = math.ceil(TRAIN / BATCH)
    orders = []
    for epoch in (0, 1):
        assert [len(b) for b in record.batches[epoch]] == [BATCH] * (batches - 1) + [TRAIN % BATCH or BATCH]
        order = [i for b in record.batches[epoch] for i in b]
        assert sorted(order) == list(range(TRAIN))  # each image once per epoch
        orders.append(order)
    assert orders[0] != orders[1] or orders[0] != list(range(TRAIN))  # shuffled
    # the training images are the forget set's images under a random crop and flip, drawn anew each epoch
    for i in range(TRAIN):
        assert record.pixels[0][i].shape == data.forget_set.images[i].shape
        assert not torch.equal(record.pixels[0][i], record.pixels[1][i])
        assert not torch.equal(record.pixels[0][i], data.forget_set.images[i])
    # min(4 batches, 5) per step: one step per epoch; the check after every batch
    assert trainer.accumulate_grad_batches == accumulation(batches, 5) == batches
    assert record.steps == 2 == trainer.global_step
    assert record.validations == 2 * batches
    assert len(data.real_valid_set.labels) == VAL  # "Real valid.": every val image of the class


def test_accumulation_is_capped_by_accumulate_batches(caltech):
    _, record, trainer = fit(caltech, epochs=1, accumulate_batches=2)
    assert trainer.accumulate_grad_batches == 2 and record.steps == 2  # 4 batches, 2 per step


def test_the_fixed_path_is_unchanged_by_default(caltech):
    data, record, trainer = fit(caltech, epochs=1, images_per_class=3, augment=False, shuffle=False,
                                train_batch_size=None, accumulate_batches=1, real_valid_images=2)
    assert len(data.forget_set.labels) == 3 and record.batches[0] == [[0, 1, 2]]
    assert torch.equal(record.pixels[0][0], data.forget_set.images[0])
    assert trainer.accumulate_grad_batches == 1 and len(data.real_valid_set.labels) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(images_per_class="every"), "images_per_class must be an int >= 1, got 'every' (or 'all'"),
        (dict(real_valid_images=-1), "real_valid_images must be an int >= 0, got -1 (or 'all'"),
        (dict(augment="yes"), "augment must be True or False, got 'yes'"),
        (dict(accumulate_batches=0), "accumulate_batches must be an int >= 1, got 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        RealForgetDataModule(datasets=["demo_objects"], **kwargs)


def test_count_per_class():
    assert count_per_class(3) == 3 and count_per_class("all") > 10**9
