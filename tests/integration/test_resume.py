"""Resume: an interrupted unlearning run, resumed with ``trainer.fit(ckpt_path=...)``, ends where an
uninterrupted run with the same seed ends: same weights (bit for bit), sigma, k, selection counts,
escalation state and report (accuracy histories, before/after evaluation), and it trains in the
same mode (the CLIP in train mode at every step).

The run: tiny-vit (random init, seeded) forgetting one class of a 4-class image_folder dataset (the
one the random model gives noise to, so that synthesis reaches it for any seed), 8
synthetic images, 2 steps per epoch, validation after every step. The weights train for real, but
the forget-set accuracy the callbacks decide on is scripted (``ScriptedForgetAccuracy`` feeds the
module's own metric a known sequence), so the path is the same on any machine and for any seed:
10 optimizer steps over 5 epochs; epochs 0-2 improve, epoch 3 does not and is undone (sigma
escalates from 0.5 to 1.0), and the goal (synthetic accuracy 0) is reached at step 10. What is
compared is always two runs of this machine with each other.

Checkpoints must be saved after each validation:
``ModelCheckpoint(every_n_epochs=1, save_on_train_epoch_end=False, save_top_k=-1)`` saves in
``on_validation_end`` (after the other callbacks' ``on_validation_end``). Lightning's
``ModelCheckpoint(every_n_train_steps=1)`` saves in ``on_train_batch_end``, *before* the
validation that follows the step, and on resume Lightning does not run that validation again
(nor, at an epoch's last step, the epoch end): the run loses a history entry, or an escalation
decision (``test_train_batch_end_checkpoints_lose_the_following_validation`` shows it).

What is shown, with validation-end checkpoints and the plain callbacks:

- mid-epoch (step 3, by default) and at epoch ends (steps 2 and 8, by default; step 8 ends epoch 3,
  which is then undone): the resumed run ends exactly as the uninterrupted one. At an epoch's last
  validation Lightning resumes into that epoch's ``on_train_epoch_end`` with empty
  ``trainer.callback_metrics``; ``NoiseLayerEscalation`` decides on the monitored value it saved
  in its checkpoint state (``last_monitor``);
- the checkpoint holds the callbacks' state (selection counts, the escalation's epoch-start
  snapshot and ``last_monitor``, the report's history, evaluation before unlearning and unlearning
  time so far) and the DataModule's forget set, and loads with ``torch.load(weights_only=True)``;
- the resumed run trains the CLIP in train mode, as the uninterrupted one does
  (``UnlearningModule.on_fit_start``; Lightning 2.6 no longer switches modes at fit start);
- slow: interrupted after every step of the run (1-9), the resume is exact each time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from PIL import Image

from lightning_unlearn import UnlearningModule
from lightning_unlearn.callbacks import (
    GradientLayerSelection,
    NoiseLayerEscalation,
    SyntheticAccuracyStopping,
    UnlearningReport,
)
from lightning_unlearn.datamodules import SyntheticForgetDataModule
from lightning_unlearn.methods import MultimodalLipschitz
from lightning_unlearn.models import load_clip
from lightning_unlearn.synthesis import SynthesisConfig

# Expected here: the resumed run has no ModelCheckpoint (the first one had), and the synthetic
# DataLoader is not resumable (harmless: every batch is the whole set, see docs/multi_gpu.md).
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*callbacks used to create the checkpoint need to be provided.*"),
    pytest.mark.filterwarnings("ignore:.*your dataloader is not resumable.*"),
]

CLASSES = ("cat", "dog", "car", "tree")
IMAGES = 8  #: synthetic images of the forgotten class
SYNTHESIS = SynthesisConfig(target_probability=0.3, min_probability=0.27, jitter=2, step_size=3.0, max_iterations=100,
                            threshold_decay="per_image", pixel_space="model", jitter_mode="symmetric",
                            blur_kernel_size=3, blur_from_first_iteration=False)
#: The forget-set accuracy logged after each optimizer step (index: step - 1), in eighths of the
#: 8-image set: epochs (2 steps each) 0-2 improve, epoch 3 (steps 7-8) does not, step 10 reaches 0.
ACCURACY_SCRIPT = (7, 6, 5, 4, 3, 2, 3, 3, 1, 0)
TOTAL_STEPS = len(ACCURACY_SCRIPT)


@pytest.fixture(scope="module")
def world(tmp_path_factory, global_seed, classes_noise_leans_to) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("resume")
    root = base / "eval"
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(2):
            pixels = np.random.default_rng(10 * c + i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    # the class the seeded random model gives noise to: synthesis reaches it for any seed (the module
    # in run() draws these same initial weights from the same seed)
    pl.seed_everything(global_seed, verbose=False)
    forget = classes_noise_leans_to(load_clip("tiny-vit").model, list(CLASSES))[0]
    return {"base": base, "eval": root, "cache": base / "cache", "seed": global_seed, "forget": forget}


class Interrupted(Exception):
    """Raised by ``InterruptAt`` (a crash, as far as the run is concerned)."""


class InterruptAt(Callback):
    """Crash at the start of the batch after ``step`` optimizer steps (step ``step`` and its validation done)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise Interrupted(f"interrupted after {trainer.global_step} steps")


class ScriptedForgetAccuracy(Callback):
    """Make the module log ``ACCURACY_SCRIPT[step - 1] / 8`` as its forget-set accuracy after step ``step``.

    Callbacks' ``on_validation_epoch_end`` runs before the module's, which computes and logs its
    ``synthetic_metric``: this callback refills that metric with predictions of which exactly the
    scripted number are right, through the metric's public ``update``. Everything downstream (the
    logged value, the callbacks' decisions, the report's history) then follows the script.
    """

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        metric = pl_module.synthetic_metric
        correct = ACCURACY_SCRIPT[trainer.global_step - 1]
        target = metric.target_labels[0]
        labels = torch.full((IMAGES,), target)
        predicted = labels.clone()
        predicted[correct:] = (target + 1) % metric.num_classes
        metric.reset()
        metric.update(torch.nn.functional.one_hot(predicted, metric.num_classes).float(), labels)


class ModeProbe(Callback):
    """Whether the CLIP model is in training mode at each training step."""

    def __init__(self) -> None:
        self.modes: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.modes.append(pl_module.model.training)


def validation_end_checkpoints(dirpath: Path) -> ModelCheckpoint:
    return ModelCheckpoint(dirpath=dirpath, filename="{step}", every_n_epochs=1, save_on_train_epoch_end=False,
                           save_top_k=-1)


def train_batch_end_checkpoints(dirpath: Path) -> ModelCheckpoint:
    return ModelCheckpoint(dirpath=dirpath, filename="{step}", every_n_train_steps=1, save_top_k=-1)


def run(world: dict[str, Path], out: Path, *, checkpoint: Optional[ModelCheckpoint] = None,
        stop_at: Optional[int] = None, ckpt_path: Optional[Path] = None) -> Optional[dict[str, Any]]:
    """One run; the end state, or None if it was interrupted."""
    pl.seed_everything(world["seed"], verbose=False)
    module = UnlearningModule(model_name="tiny-vit", pretrained=None, forget_classes=[world["forget"]], sigma=0.5, lr=2e-3,
                              method=MultimodalLipschitz(num_perturbations=2, reduction="mean", noise_norm="drawn"))
    data = SyntheticForgetDataModule(datasets={"image_folder": str(world["eval"])}, batch_size=8, images_per_class=IMAGES,
                                     steps_per_epoch=2, synthesis=SYNTHESIS, cache_dir=str(world["cache"]),
                                     progress=False)
    selection = GradientLayerSelection(k=2)
    escalation = NoiseLayerEscalation(sigma_schedule=[0.5, 1.0, 2.0],
                                      k_schedules={"vision": [2, 4, 8], "text": [2, 4, 8]})
    report = UnlearningReport(output_dir=str(out), print_table=False)
    probe = ModeProbe()
    callbacks: list[Callback] = [ScriptedForgetAccuracy(), selection, SyntheticAccuracyStopping(goal=0.0), escalation,
                                 report, probe]
    if checkpoint is not None:
        callbacks.append(checkpoint)
    if stop_at is not None:
        callbacks.append(InterruptAt(stop_at))
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=8, val_check_interval=1, num_sanity_val_steps=0, callbacks=callbacks,
        logger=False, enable_checkpointing=checkpoint is not None, enable_progress_bar=False,
        enable_model_summary=False,
    )
    try:
        trainer.fit(module, data, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except Interrupted:
        return None
    return {
        "weights": {k: v.detach().clone() for k, v in module.model.state_dict().items()},
        "sigma": module.sigma,
        "k": selection.current_k,
        "selection_counts": dict(selection.selection_counts),
        "escalation": {key: getattr(escalation, key) for key in (
            "position", "sigma_history", "monitor_history", "restored_epochs", "best_value", "best_epoch",
            "stopping_reason")},
        "global_step": trainer.global_step,
        "train_modes": probe.modes,
        "report": {k: v for k, v in report.report.items() if k not in ("timings", "export", "export_dir")},
    }


def assert_same_end(resumed: dict[str, Any], reference: dict[str, Any]) -> None:
    assert resumed["global_step"] == reference["global_step"] == TOTAL_STEPS
    for name, value in reference["weights"].items():
        assert torch.equal(resumed["weights"][name], value), name
    for key in ("sigma", "k", "selection_counts", "escalation"):
        assert resumed[key] == reference[key], key
    for key, value in reference["report"].items():
        assert resumed["report"][key] == value, key


@pytest.fixture(scope="module")
def reference(world) -> dict[str, Any]:
    end = run(world, world["base"] / "reference")
    # The scripted path: improvements, one undone epoch with an escalation, the goal.
    assert end["report"]["synthetic_acc_history"] == [c / IMAGES for c in ACCURACY_SCRIPT]
    assert end["global_step"] == TOTAL_STEPS
    assert end["escalation"]["restored_epochs"] == [3] and end["sigma"] == 1.0
    assert end["report"]["stop_reason"] == "goal_reached"
    assert len(end["report"]["synthetic_acc_history"]) == TOTAL_STEPS
    assert end["report"]["before"]["datasets"]["image_folder"]["num_images"] == 8
    return end


def interrupt_then_resume(world, tmp_path: Path, step: int,
                          make_checkpoint=validation_end_checkpoints) -> dict[str, Any]:
    ckpts = tmp_path / "ckpts"
    first = run(world, tmp_path / "first", checkpoint=make_checkpoint(ckpts), stop_at=step)
    assert first is None, "the run should have been interrupted"
    assert not (tmp_path / "first" / "report.json").exists()  # nothing written by the interrupted run
    saved = sorted(ckpts.glob("*.ckpt"))
    assert [p.name for p in saved] == sorted(f"step={s}.ckpt" for s in range(1, step + 1))
    for path in saved:  # every checkpoint loads without unpickling arbitrary objects
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert checkpoint["global_step"] == int(path.stem.split("=")[1])
    return run(world, tmp_path / "resumed", ckpt_path=ckpts / f"step={step}.ckpt")


@pytest.fixture(scope="module")
def mid_epoch(world, tmp_path_factory) -> tuple[dict[str, Any], Path]:
    """Interrupted after step 3 (the first step of epoch 1), resumed from its checkpoint."""
    folder = tmp_path_factory.mktemp("mid_epoch")
    return interrupt_then_resume(world, folder, step=3), folder


def test_resume_mid_epoch_reaches_the_same_end(mid_epoch, reference):
    resumed, folder = mid_epoch
    assert_same_end(resumed, reference)
    # The resumed run reports the evaluation made before unlearning by the first run (not re-measured).
    assert resumed["report"]["before"] == reference["report"]["before"]
    assert sorted(p.name for p in (folder / "resumed").iterdir()) == [
        "report.json", "report.md", "unlearned", "unlearned.safetensors"]


def test_resumed_run_trains_in_the_same_mode(mid_epoch, reference):
    resumed, _ = mid_epoch
    assert set(reference["train_modes"]) == {True}
    assert set(resumed["train_modes"]) == {True}


def test_checkpoint_holds_the_callbacks_state(world, reference, tmp_path):
    ckpts = tmp_path / "ckpts"
    assert run(world, tmp_path / "first", checkpoint=validation_end_checkpoints(ckpts), stop_at=2) is None
    checkpoint = torch.load(ckpts / "step=2.ckpt", map_location="cpu", weights_only=True)
    states = checkpoint["callbacks"]
    selection = next(v for k, v in states.items() if k.startswith("GradientLayerSelection"))
    assert sum(selection["selection_counts"].values()) == 2 * 4  # 2 steps x (2 vision + 2 text)
    escalation = next(v for k, v in states.items() if k.startswith("NoiseLayerEscalation"))
    assert escalation["epoch_open"] and escalation["snapshot_epoch"] == 0  # saved before epoch 0's end
    # the value the epoch-end decision needs on resume (callback_metrics are empty after a restore)
    assert escalation["last_monitor"] == reference["report"]["synthetic_acc_history"][1]
    report = next(v for k, v in states.items() if k.startswith("UnlearningReport"))
    # the unlearning time so far is saved, so a resumed run's report counts it too
    assert report["timings"]["unlearn"] > 0 and "evaluate_before" in report["timings"]
    assert report["synthetic_acc_history"] == reference["report"]["synthetic_acc_history"][:2]
    before = reference["report"]["before"]
    assert report["before"] == {"synthetic_acc": before["synthetic_acc"], "datasets": before["datasets"],
                                "weights_fingerprint": reference["report"]["model"]["fingerprint"]}
    # The forget set made from the original weights travels with the checkpoint: a resumed run (whose
    # weights are restored before the set is first needed) trains on the same images.
    forget = checkpoint["SyntheticForgetDataModule"]["forget_set"]
    assert forget["images"].shape == (8, 3, 32, 32) and forget["kind"] == "synthetic"


def test_resume_from_the_last_step_of_an_undone_epoch(world, reference, tmp_path):
    """Step 8 ends epoch 3, which is then undone: its checkpoint holds the epoch-start snapshot."""
    assert_same_end(interrupt_then_resume(world, tmp_path, step=8), reference)


def test_resume_at_the_end_of_an_improving_epoch(world, reference, tmp_path):
    """Step 2 ends epoch 0, which improves: the resume runs its epoch end on the saved ``last_monitor``."""
    assert_same_end(interrupt_then_resume(world, tmp_path, step=2), reference)


def test_train_batch_end_checkpoints_lose_the_following_validation(world, reference, tmp_path):
    """Why the checkpoints above are saved at validation end: Lightning's every_n_train_steps
    checkpoint is written before the step's validation, which a resume does not run again."""
    resumed = interrupt_then_resume(world, tmp_path, step=3, make_checkpoint=train_batch_end_checkpoints)
    for name, value in reference["weights"].items():  # mid-epoch: the training itself is unaffected
        assert torch.equal(resumed["weights"][name], value), name
    history = list(reference["report"]["synthetic_acc_history"])
    del history[2]  # the validation after step 3 never happened in either run
    assert resumed["report"]["synthetic_acc_history"] == history


@pytest.mark.slow
@pytest.mark.parametrize("step", range(1, TOTAL_STEPS))
def test_resume_after_every_step(world, reference, tmp_path, step):
    """Every step of the run as the interruption point: mid-epoch (odd steps) and epoch ends (even)."""
    assert_same_end(interrupt_then_resume(world, tmp_path, step=step), reference)
