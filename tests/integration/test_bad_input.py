"""Bad input, one test per case: each fails with a message that says what is wrong (matched here)
and leaves the disk as it was: no report or export written, no temporary file, the input
checkpoint unchanged. Where a case can only show up in a run, the run is a real ``trainer.fit``
of a tiny model (tiny-vit, 4 classes, 8 synthetic images).

Some cases are also covered next to their code (test_module.py, test_callbacks.py,
test_datasets.py); here they are checked end to end, in one place.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import pytest
import torch

from lightning_unlearn import UnlearningModule
from lightning_unlearn.callbacks import (
    GradientLayerSelection,
    NoiseLayerEscalation,
    SyntheticAccuracyStopping,
    UnlearningReport,
)
from lightning_unlearn.datamodules import SyntheticForgetDataModule
from lightning_unlearn.datasets.base import CorruptImageError, DatasetLayoutError
from lightning_unlearn.core.errors import CheckpointError, ConfigError, MissingFileError, OutputError, UnknownNameError
from lightning_unlearn.methods import MultimodalLipschitz
from lightning_unlearn.clip.loading import load_clip
from lightning_unlearn.maths.synthesis import SynthesisConfig, SynthesisError

from fake_datasets import make_caltech, make_dogs

VOCAB = ["cat", "dog", "car", "tree"]
# Today's per-image generator in the model's pixel space: quick on a 32 px random-init model.
TINY_GENERATOR = dict(threshold_decay="per_image", pixel_space="model", jitter_mode="symmetric", blur_kernel_size=3,
                      blur_from_first_iteration=False)
EASY = SynthesisConfig(target_probability=0.3, min_probability=0.27, jitter=2, step_size=3.0, max_iterations=100,
                       **TINY_GENERATOR)
OUTPUTS = ("report.json", "report.md", "unlearned", "unlearned.safetensors")
pytestmark = pytest.mark.usefixtures("one_thread")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Any]:
    """An input checkpoint (tiny-vit weights) and a synthetic cache shared by this file's runs."""
    base = tmp_path_factory.mktemp("bad_input")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        weights = load_clip("tiny-vit").model.state_dict()
    checkpoint = base / "input.pt"
    torch.save(weights, checkpoint)
    return {"checkpoint": checkpoint, "sha": sha(checkpoint), "cache": base / "cache"}


def module(inputs, **kwargs) -> UnlearningModule:
    args = dict(model_name="tiny-vit", pretrained=str(inputs["checkpoint"]), forget_classes=["dog"],
                vocabulary=VOCAB, method=MultimodalLipschitz(num_perturbations=2, reduction="mean", noise_norm="drawn"),
                sigma=0.5, lr=2e-3)
    args.update(kwargs)
    return UnlearningModule(**args)


def fit(inputs, out: Path, model: UnlearningModule, *, datasets=None, data_root=None, synthesis: SynthesisConfig = EASY,
        callbacks: Optional[list] = None, max_epochs: int = 2, cache: Optional[Path] = None) -> pl.Trainer:
    data = SyntheticForgetDataModule(datasets=datasets, data_root=data_root, batch_size=4, images_per_class=2, steps_per_epoch=2,
                                     synthesis=synthesis, cache_dir=str(cache or inputs["cache"]), progress=False)
    if callbacks is None:
        callbacks = [GradientLayerSelection(k=2), SyntheticAccuracyStopping(goal=0.0),
                     NoiseLayerEscalation(sigma_schedule=[0.5, 1.0])]
    callbacks = callbacks + [UnlearningReport(output_dir=str(out), print_table=False)]
    trainer = pl.Trainer(accelerator="cpu", max_epochs=max_epochs, val_check_interval=1, num_sanity_val_steps=0,
                         callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, data)
    return trainer


def assert_untouched(inputs, *folders: Path) -> None:
    """No report/export under ``folders``, no temporary file anywhere, the input checkpoint unchanged."""
    for folder in folders:
        if folder.exists():
            written = [p.name for p in folder.rglob("*") if p.name in OUTPUTS]
            assert not written, f"written despite the error: {written}"
    for folder in (*folders, inputs["cache"], inputs["checkpoint"].parent):
        if folder.exists():
            leftovers = [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
            assert not leftovers, f"temporary files left behind: {leftovers}"
    assert sha(inputs["checkpoint"]) == inputs["sha"], "the input checkpoint was modified"


# --- what to forget -----------------------------------------------------------------------------
def test_unknown_class_names_close_matches(inputs, tmp_path):
    with pytest.raises(UnknownNameError, match=r"unknown class 'dgo' in the vocabulary; close matches: 'dog'"):
        fit(inputs, tmp_path / "out", module(inputs, forget_classes=["dgo"]), cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # failed in setup, before anything was synthesised
    assert_untouched(inputs, tmp_path)


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    make_caltech(root, "paper")
    make_dogs(root, "paper")
    return root


def test_class_in_the_wrong_dataset_names_the_right_one(inputs, tmp_path, two_datasets):
    model = module(inputs, vocabulary=None, forget_classes=["Pekinese"], forget_dataset="caltech101")
    with pytest.raises(UnknownNameError, match=r"unknown class 'Pekinese' in dataset 'caltech101'.*"
                                               r"it is a class of 'stanford_dogs': set forget_dataset accordingly"):
        fit(inputs, tmp_path / "out", model, datasets=["caltech101", "stanford_dogs"], data_root=str(two_datasets))
    assert_untouched(inputs, tmp_path)


def test_class_in_no_dataset(inputs, tmp_path, two_datasets):
    model = module(inputs, vocabulary=None, forget_classes=["Pekingese"])
    with pytest.raises(UnknownNameError, match=r"class 'Pekingese' is in none of the evaluation datasets "
                                               r"\['caltech101', 'stanford_dogs'\]; close matches: 'Pekinese'"):
        fit(inputs, tmp_path / "out", model, datasets=["caltech101", "stanford_dogs"], data_root=str(two_datasets))
    assert_untouched(inputs, tmp_path)


@pytest.mark.parametrize("classes", [[], ()])
def test_empty_forget_list(inputs, classes):
    with pytest.raises(ConfigError, match="forget_classes is empty: name at least one class to forget"):
        module(inputs, forget_classes=classes)
    assert_untouched(inputs)


# --- thresholds and schedules ---------------------------------------------------------------------
@pytest.mark.parametrize("goal", [-0.1, 1.5, math.nan, "0.1"])
def test_goal_outside_0_1(goal):
    with pytest.raises(ConfigError, match=r"`goal` must be a number in \[0, 1\], got"):
        SyntheticAccuracyStopping(goal=goal)


@pytest.mark.parametrize("probability", [0.0, 1.0, 1.2, -0.5])
def test_target_probability_outside_open_interval(probability):
    with pytest.raises(ConfigError, match=rf"target_probability must be a number in \(0, 1\), got {probability!r}"):
        SynthesisConfig(target_probability=probability, min_probability=0.01)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sigma_schedule": []}, r"`sigma_schedule` must be a non-empty list of finite numbers > 0, got \[\]"),
        ({"sigma_schedule": [0.5, -0.1]}, r"values must be finite and > 0, got -0.1 in \[0.5, -0.1\]"),
        ({"sigma_schedule": [0.0]}, r"values must be finite and > 0, got 0.0"),
        ({"sigma_schedule": [math.nan]}, r"values must be finite and > 0, got nan"),
        ({"sigma_schedule": [0.5, math.inf]}, r"values must be finite and > 0, got inf"),
        ({"k_schedules": {}}, r"`k_schedules` must be a non-empty dict"),
        ({"k_schedules": {"vision": []}}, r"`k_schedules\['vision'\]` must be a non-empty list of positive ints"),
        ({"k_schedules": {"vision": [5, 0]}}, r"`k_schedules\['vision'\]` values must be positive ints, got 0"),
        ({"k_schedules": {"text": [-3]}}, r"`k_schedules\['text'\]` values must be positive ints, got -3"),
    ],
)
def test_bad_schedules(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        NoiseLayerEscalation(**kwargs)


@pytest.mark.parametrize("k, message", [
    (0, r"`k` must be an int >= 1, got 0"),
    (-1, r"`k` must be an int >= 1, got -1"),
    ({"vision": 0, "text": 5}, r"`k`\['vision'\] must be an int >= 1, got 0"),
])
def test_k_not_positive(k, message):
    with pytest.raises(ConfigError, match=message):
        GradientLayerSelection(k=k)


# --- model and weights ----------------------------------------------------------------------------
def test_unknown_model_name_names_close_matches(inputs):
    with pytest.raises(UnknownNameError, match=r"unknown open_clip model 'tiny-vti'; close matches: 'tiny-vit'"):
        module(inputs, model_name="tiny-vti")
    assert_untouched(inputs)


def test_missing_checkpoint_file(inputs, tmp_path):
    missing = tmp_path / "weights" / "unlearned.safetensors"
    with pytest.raises(MissingFileError, match=rf"pretrained checkpoint '{missing}' does not exist"):
        module(inputs, pretrained=str(missing))
    assert not missing.parent.exists()


def test_checkpoint_with_mismatched_keys(inputs, tmp_path):
    wrong = tmp_path / "rn.pt"
    torch.save(load_clip("tiny-rn").model.state_dict(), wrong)
    digest = sha(wrong)
    model = module(inputs, pretrained=str(wrong))  # construction reads no weights
    with pytest.raises(CheckpointError, match=rf"checkpoint '{wrong}' does not fit this model"):
        model.prepare_data()
    assert sha(wrong) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rn.pt"]


# --- data -----------------------------------------------------------------------------------------
def test_missing_dataset_files(inputs, tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    model = module(inputs, vocabulary=None, forget_classes=["face"])
    with pytest.raises(DatasetLayoutError, match=rf"Caltech101: no readable layout under '{empty}'"):
        fit(inputs, tmp_path / "out", model, datasets=["caltech101"], data_root=str(empty))
    assert_untouched(inputs, tmp_path)
    assert list(empty.iterdir()) == []


def test_corrupt_image_names_the_file(inputs, tmp_path):
    root = tmp_path / "pets"
    from PIL import Image

    for c, name in enumerate(VOCAB):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), (60 * c, 90, 200)).save(root / name / "0.png")
    broken = root / "dog" / "1.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(CorruptImageError, match=rf"cannot read image '{broken}'"):
        fit(inputs, tmp_path / "out", module(inputs, vocabulary=None), datasets={"image_folder": str(root)})
    assert_untouched(inputs, tmp_path / "out")


# --- outputs --------------------------------------------------------------------------------------
def test_output_dir_that_cannot_be_created(tmp_path):
    # Tests run as root, for whom permission bits do not stop writes: a folder under a regular FILE
    # can never be created, whoever runs. An explicit output_dir is checked at once, without
    # touching the disk (a run's setup comes only after the synthesis).
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "sub" / "report"
    with pytest.raises(OutputError, match=rf"output_dir '{out}' cannot be a folder: '{blocker}' is a file; choose another"):
        UnlearningReport(output_dir=str(out))
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_default_output_dir_that_cannot_be_created(inputs, tmp_path):
    """The default output folder (the trainer's log dir) is checked in setup, on rank zero."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    data = SyntheticForgetDataModule(images_per_class=2, steps_per_epoch=2, synthesis=EASY,
                                     cache_dir=str(inputs["cache"]), progress=False)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, val_check_interval=1, num_sanity_val_steps=0,
                         default_root_dir=str(blocker / "runs"), logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[GradientLayerSelection(k=2), UnlearningReport(print_table=False)])
    model = module(inputs)
    # the weights the fit starts from (construction reads none; prepare_data loads these)
    before = {f"model.{n}": t for n, t in torch.load(inputs["checkpoint"]).items()}
    with pytest.raises(OutputError, match=rf"output folder '{blocker / 'runs'}' is not writable; choose another"):
        trainer.fit(model, data)
    assert trainer.global_step == 0 and all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert blocker.read_text() == "not a folder"
    assert_untouched(inputs, tmp_path)


# --- during the run -------------------------------------------------------------------------------
class NaNAt(UnlearningModule):
    """The loss becomes NaN at optimizer step ``nan_at_step`` (0-based), as a numerical blow-up would."""

    nan_at_step = 3

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * math.nan if self.global_step == self.nan_at_step else loss


class WeightsAtEpochEnd(pl.Callback):
    """The weights at every epoch end (after the escalation's decision)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.states.append({k: v.detach().clone() for k, v in pl_module.named_parameters()})


def test_non_finite_loss_keeps_the_best_state_and_stops(inputs, tmp_path):
    model = NaNAt(model_name="tiny-vit", pretrained=str(inputs["checkpoint"]), forget_classes=["dog"],
                  vocabulary=VOCAB, method=MultimodalLipschitz(num_perturbations=2, reduction="mean", noise_norm="drawn"),
                  sigma=0.5, lr=2e-3)
    escalation = NoiseLayerEscalation(sigma_schedule=[0.5, 1.0])
    # the escalation runs its epoch-end decision before the recorder looks at the weights
    recorder = WeightsAtEpochEnd()
    callbacks = [GradientLayerSelection(k=2), SyntheticAccuracyStopping(goal=0.0), escalation, recorder]
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"the training loss is not finite .* at epoch 1, step 4\. Restored the best state \(epoch 0"):
        trainer = fit(inputs, out, model, callbacks=callbacks, max_epochs=4)
    assert escalation.stopping_reason.value == "non_finite_loss"
    assert trainer.global_step == 4  # stopped right after the 4th step (index 3), in epoch 1
    assert escalation.best_epoch == 0 and escalation.best_state is not None
    # The final weights are finite and are the best state (that of epoch 0's end).
    final = dict(model.named_parameters())
    for name, value in escalation.best_state.items():
        assert torch.isfinite(final[name]).all(), name
        assert torch.equal(final[name], value), name
        assert torch.equal(recorder.states[0][name], value), name
    report = json.loads((out / "report.json").read_text())
    assert report["stop_reason"] == "non_finite_loss"
    assert all(math.isfinite(v) for v in report["synthetic_acc_history"])
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)  # a normal end: written once, no temp file
    assert sha(inputs["checkpoint"]) == inputs["sha"]


def test_forget_set_that_never_reaches_the_target(inputs, tmp_path):
    hopeless = SynthesisConfig(target_probability=0.99, min_probability=0.98, max_iterations=5, max_restarts=2,
                               jitter=2, step_size=3.0, **TINY_GENERATOR)
    start = time.perf_counter()
    with pytest.raises(SynthesisError, match=r"2 of 2 synthetic images never reached their target probability "
                                             r"after 2 restarts of 5 iterations each \(best probabilities reached: "
                                             r"\[0\.\d+, 0\.\d+\]\)\. Lower target_probability") as info:
        fit(inputs, tmp_path / "out", module(inputs), synthesis=hopeless, cache=tmp_path / "cache")
    assert time.perf_counter() - start < 60  # bounded by max_restarts: no endless loop
    partial = info.value.result  # the partial set, for a report
    assert not partial.reached.any() and partial.info["restarts"] == [2, 2]
    assert all(0.0 < float(p) < 0.98 for p in partial.probability)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())  # nothing cached
    assert_untouched(inputs, tmp_path)
