"""One evaluation state encodes each input once: the module's accuracies and the evaluation suite
share the class-prompt embeddings, the vocabulary embeddings and the forget images' features.

A tiny random-init ViT (conftest) counts, per state, every text and image row its towers encode:
``fit`` with a training-free no-op method measures ``before`` and ``after`` (forget-set and real
validation accuracy, the datasets, and the suite with templates, retrieval, verification and
paraphrases); ``validate`` is one state (the evaluation loop, then the suite).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from lightning_unlearn import UnlearningModule
from lightning_unlearn.callbacks import UnlearningReport
from lightning_unlearn.datamodules.forget import ForgetDataModule, ForgetSet
from lightning_unlearn.evaluation import EvaluationSuite
from lightning_unlearn.methods import UnlearningMethod

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["car", "cat", "dog", "tree"]


class NoEdit(UnlearningMethod):
    """A training-free method that changes nothing (fit then measures before and after only)."""

    short_name = "no_edit"
    trains = False

    def apply(self, module: UnlearningModule) -> dict[str, Any]:
        return {}


class FixedForgetData(ForgetDataModule):
    """A forget set of fixed random images (no synthesis), labelled as the forgotten class."""

    def make_forget_set(self, module: Any) -> ForgetSet:
        generator = torch.Generator().manual_seed(1)
        images = torch.randn(6, 3, 32, 32, generator=generator)
        labels = torch.full((6,), module.spec.forget_indices[0], dtype=torch.long)
        return ForgetSet(images=images, labels=labels, kind="synthetic")


def noise_folder(root: Path) -> Path:
    """``root/{train,val,test}/<class>/*.png`` of distinct random images."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("val", 2), ("test", 3)):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


class EncodeCounter:
    """Every row the model's text and image towers encode, per evaluation state."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.state: Optional[str] = None
        self.rows: dict[str, Counter] = {}

    def wrap(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # Patched on the class so that copies of the model (the relearning probe's) are not counted.
        cls = type(self.model)
        for name in ("encode_text", "encode_image"):
            original = getattr(cls, name)

            def counted(model: Any, inputs: torch.Tensor, *args: Any, _original: Any = original,
                        _tower: str = name, **kwargs: Any) -> torch.Tensor:
                if model is self.model and self.state is not None:
                    counter = self.rows.setdefault(self.state, Counter())
                    for row in inputs.detach().cpu().contiguous():
                        counter[(_tower, hashlib.sha256(row.numpy().tobytes()).hexdigest())] += 1
                return _original(model, inputs, *args, **kwargs)

            monkeypatch.setattr(cls, name, counted)

    def repeated(self, state: str) -> dict[str, int]:
        """Tower -> number of rows encoded more than once in ``state``."""
        out: dict[str, int] = {}
        for (tower, _), count in self.rows[state].items():
            if count > 1:
                out[tower] = out.get(tower, 0) + 1
        return out

    def encoded(self, state: str, tower: str) -> int:
        return sum(1 for t, _ in self.rows.get(state, {}) if t == tower)


def tiny_setup(root: Path) -> tuple[UnlearningModule, FixedForgetData]:
    suite = EvaluationSuite(templates=["a photo of a {}.", "We can see a {} in this image"],
                            retrieval_other_queries=4, verification_images=2,
                            paraphrases={"dog": ["a loyal hound on a lead."]})
    module = UnlearningModule(model_name="tiny-vit", pretrained=None, forget_classes=["dog"],
                              forget_dataset="image_folder", method=NoEdit(), evaluation=suite)
    data = FixedForgetData(datasets={"image_folder": str(root)}, batch_size=5, real_valid_images=2)
    return module, data


def test_each_evaluation_state_encodes_every_input_once(tmp_path, monkeypatch):
    module, data = tiny_setup(noise_folder(tmp_path / "folder"))
    counter = EncodeCounter(module.model)
    counter.wrap(monkeypatch)
    measure = UnlearningReport._measure

    def in_state(report: UnlearningReport, trainer: Any, pl_module: Any, run_datasets: bool, state: str) -> Any:
        counter.state = state
        try:
            return measure(report, trainer, pl_module, run_datasets, state)
        finally:
            counter.state = None

    monkeypatch.setattr(UnlearningReport, "_measure", in_state)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, num_sanity_val_steps=0,
                         callbacks=[UnlearningReport(output_dir=str(tmp_path / "out"), print_table=False)])
    trainer.fit(module, data)
    for state in ("before", "after"):
        # vocabulary prompts, class prompts under the second template, one paraphrase (the first
        # template is the vocabulary's); forget, real validation, real verification and test images
        assert counter.encoded(state, "encode_text") == 4 + 4 + 1
        assert counter.encoded(state, "encode_image") == 6 + 2 + 2 + 12
        assert counter.repeated(state) == {}, f"{state}: inputs encoded more than once"

    counter.state = "validate"
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         callbacks=[UnlearningReport(output_dir=str(tmp_path / "validate"), print_table=False)])
    trainer.validate(module, data, verbose=False)
    counter.state = None
    assert module.evaluation_results["after"]["verification"]["real"]["accuracy"] is not None
    assert counter.encoded("validate", "encode_text") == 4 + 4 + 1
    assert counter.encoded("validate", "encode_image") == 2 + 12
    assert counter.repeated("validate") == {}, "validate: inputs encoded more than once"
