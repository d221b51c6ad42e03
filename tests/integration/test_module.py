"""UnlearningModule with a Trainer, on tiny random-init open_clip models: fit end to end, the
training-free path of the method contract, validate on evaluation datasets, and argument checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import open_clip
import pytest
import torch

from lightning_unlearn import UnlearningModule
from lightning_unlearn.callbacks import (
    GradientLayerSelection,
    NoiseLayerEscalation,
    SyntheticAccuracyStopping,
    UnlearningReport,
)
from lightning_unlearn.datamodules import EvaluationDataModule, SyntheticForgetDataModule
from lightning_unlearn.errors import ConfigError, UnknownNameError
from lightning_unlearn.methods import MultimodalLipschitz, UnlearningMethod
from lightning_unlearn.models import load_clip, model_fingerprint
from lightning_unlearn.synthesis import SynthesisConfig

from fake_datasets import make_image_folder

VOCAB = ["cat", "dog", "car", "tree"]
# A random-init tiny model separates classes only slightly: modest synthesis targets (today's
# per-image generator, which is quicker on a 32 px tiny model than the published one).
EASY_SYNTHESIS = SynthesisConfig(
    target_probability=0.33, min_probability=0.3, jitter=2, step_size=3.0, max_iterations=300,
    threshold_decay="per_image", pixel_space="model", jitter_mode="symmetric", blur_kernel_size=3,
    blur_from_first_iteration=False,
)


def tiny_module(**kwargs: Any) -> UnlearningModule:
    args: dict[str, Any] = dict(
        model_name="tiny-vit", pretrained=None, forget_classes=["dog"], vocabulary=VOCAB, sigma=0.5, lr=1e-3,
        method=MultimodalLipschitz(num_perturbations=3, reduction="mean", noise_norm="drawn"),
    )
    args.update(kwargs)
    return UnlearningModule(**args)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _callbacks(out: Path) -> list[pl.Callback]:
    return [
        GradientLayerSelection(k=4),
        SyntheticAccuracyStopping(goal=0.1),
        NoiseLayerEscalation(sigma_schedule=[0.5, 1.0, 2.0], k_schedules={"vision": [4, 8, 16], "text": [4, 8, 16]}),
        UnlearningReport(output_dir=str(out), print_table=False),
    ]


def _image_folder(root: Path, classes: list[str], per_class: int = 2) -> Path:
    return make_image_folder(root, classes, per_class, colour=lambda c, i: ((40 * c + 20 * i) % 255, 80, 160))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"forget_prompt": "no placeholder"}, r"forget_prompt must be a string with exactly one '\{\}'"),
        ({"sigma": 0.0}, "sigma must be a finite number > 0, got 0.0"),
        ({"sigma": float("nan")}, "sigma must be a finite number > 0, got nan"),
        ({"lr": -1.0}, "lr must be a finite number > 0, got -1.0"),
    ],
)
def test_bad_module_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        tiny_module(**kwargs)


def test_sigma_is_one_value_that_checkpoints_keep():
    module = tiny_module(sigma=0.5)
    module.sigma = 2.0  # what NoiseLayerEscalation does
    assert module.sigma == 2.0 and float(module.state_dict()["_sigma"]) == 2.0
    fresh = tiny_module(sigma=0.5)
    fresh.load_state_dict(module.state_dict())
    assert fresh.sigma == 2.0
    with pytest.raises(ConfigError, match="sigma must be a finite number > 0, got -1"):
        module.sigma = -1
    assert module.hparams["method"]["class_path"] == "lightning_unlearn.methods.lipschitz.MultimodalLipschitz"
    assert module.hparams["method"]["init_args"]["num_perturbations"] == 3


def test_unknown_class_fails_in_setup_before_any_work(tmp_path):
    module = tiny_module(forget_classes=["dgo"])
    data = SyntheticForgetDataModule(images_per_class=2, synthesis=EASY_SYNTHESIS, progress=False)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, default_root_dir=str(tmp_path))
    with pytest.raises(UnknownNameError, match=r"unknown class 'dgo' in the vocabulary; close matches: 'dog'"):
        trainer.fit(module, data)
    assert data._forget_set is None  # nothing was synthesised


def test_fit_end_to_end_writes_outputs(tmp_path, global_seed, classes_noise_leans_to):
    """The whole fit path on a random-init model: what is checked holds for any initial weights.

    How much a run forgets is a property of its trajectory (benchmarks/bench_demo.py measures it on
    the demo CLIP); here the class is the one the random model already gives noise to, so that the
    synthetic set can be made for any seed (``classes_noise_leans_to``).
    """
    pl.seed_everything(global_seed)
    source = tmp_path / "input.pt"
    clip = load_clip("tiny-vit")
    torch.save(clip.model.state_dict(), source)
    digest = sha(source)
    forget = classes_noise_leans_to(clip.model, VOCAB)[0]
    module = tiny_module(pretrained=str(source), lr=5e-3, forget_classes=[forget])
    weights = torch.load(source)  # construction reads no weights: prepare_data loads these
    frozen_before = {n: weights[n.removeprefix("model.")] for n, p in module.named_parameters() if not p.requires_grad}
    data = SyntheticForgetDataModule(images_per_class=8, steps_per_epoch=3, synthesis=EASY_SYNTHESIS, progress=False)
    out = tmp_path / "out"
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=4, val_check_interval=1, num_sanity_val_steps=0,
        callbacks=_callbacks(out), logger=False, enable_checkpointing=False, enable_progress_bar=False,
    )
    trainer.fit(module, data)

    report = json.loads((out / "report.json").read_text())
    assert report["classes"] == [forget]
    # the fingerprint of the weights the run started from (make demo prints it)
    assert report["model"]["fingerprint"] == model_fingerprint(clip.model)
    assert report["method"]["name"] == "lip" and report["method"]["zero_shot"] == "ZS"
    assert report["before"]["synthetic_acc"] == 1.0  # every kept image is classified as its class
    assert 0.0 <= report["after"]["synthetic_acc"] <= 1.0
    assert report["stop_reason"] in {"goal_reached", "schedule_exhausted", "max_epochs_or_steps"}
    # the history has one entry per step, and the run stops exactly when the goal (0.1) is reached
    history = report["synthetic_acc_history"]
    assert len(history) == report["optimizer_steps"] == trainer.global_step > 0
    assert all(value > 0.1 for value in history[:-1])
    assert (report["stop_reason"] == "goal_reached") == (history[-1] <= 0.1)
    assert report["forget_set"]["kind"] == "synthetic" and report["forget_set"]["images"] == 8
    assert set(report["timings"]) >= {"synthesis", "unlearn", "evaluate_before", "evaluate_after"}
    assert "| synthetic set | 100.0 |" in (out / "report.md").read_text()
    # Frozen tensors never move; the input checkpoint is never overwritten.
    for name, value in module.named_parameters():
        if name in frozen_before:
            assert torch.equal(value, frozen_before[name]), name
    assert sha(source) == digest
    # The export loads with open_clip and equals the module's final weights.
    exported, _, _ = open_clip.create_model_and_transforms("tiny-vit", pretrained=str(out / "unlearned.safetensors"))
    for (name, a), (_, b) in zip(exported.state_dict().items(), module.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert not list(out.glob(".*tmp")), "temporary files left behind"


def test_an_empty_include_updates_the_image_tower_alone(tmp_path, global_seed, classes_noise_leans_to):
    """`include: {text: []}` leaves the text tower out: selection and escalation then know one
    group (vision), the run steps, and no text tensor moves."""
    pl.seed_everything(global_seed)
    clip = load_clip("tiny-vit")
    source = tmp_path / "input.pt"
    torch.save(clip.model.state_dict(), source)
    forget = classes_noise_leans_to(clip.model, VOCAB)[0]
    module = tiny_module(pretrained=str(source), lr=5e-3, forget_classes=[forget], include={"text": []})
    assert list(module.parameter_groups()) == ["vision"]
    data = SyntheticForgetDataModule(images_per_class=8, steps_per_epoch=2, synthesis=EASY_SYNTHESIS, progress=False)
    out = tmp_path / "out"
    callbacks = [GradientLayerSelection(k={"vision": 4}), SyntheticAccuracyStopping(goal=0.1),
                 NoiseLayerEscalation(sigma_schedule=[0.5, 1.0], k_schedules={"vision": [4, 8]}),
                 UnlearningReport(output_dir=str(out), print_table=False)]
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, val_check_interval=1, num_sanity_val_steps=0,
                         callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, data)
    weights = torch.load(source)
    text = [n for n in weights if not n.startswith("visual.") and n != "logit_scale"]
    assert text and all(torch.equal(module.model.state_dict()[n], weights[n]) for n in text)
    assert trainer.global_step > 0
    assert any(not torch.equal(module.model.state_dict()[n], weights[n]) for n in weights if n.startswith("visual."))
    report = json.loads((out / "report.json").read_text())
    selected = report["selected_parameters"]  # name -> how many steps updated it
    assert selected and all(name.startswith("model.visual.") for name in selected)


class ZeroTextProjection(UnlearningMethod):
    """A training-free method for the contract test: it zeroes the text projection."""

    short_name = "zero_text"
    trains = False

    def apply(self, module: UnlearningModule) -> dict[str, Any]:
        module.model.text_projection.zero_()
        self.timings["zero_text"] = 0.001
        return {"zeroed": "text_projection"}


def test_a_training_free_method_runs_through_fit_with_no_optimizer_step(tmp_path):
    root = _image_folder(tmp_path / "pets", VOCAB, per_class=3)
    module = tiny_module(vocabulary=None, method=ZeroTextProjection())
    data = EvaluationDataModule({"image_folder": str(root)}, batch_size=4)
    out = tmp_path / "out"
    trainer = pl.Trainer(accelerator="cpu", max_epochs=5, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[UnlearningReport(output_dir=str(out), print_table=False)])
    trainer.fit(module, data)
    report = json.loads((out / "report.json").read_text())
    assert report["optimizer_steps"] == 0 and report["stop_reason"] == "training_free"
    assert report["zero_text"] == {"zeroed": "text_projection"} and report["timings"]["zero_text"] == 0.001
    assert "forget_set" not in report and report["before"]["synthetic_acc"] is None
    # "before" was measured on the original weights: a zero projection makes every class embedding
    # the same, so "after" every image gets class 0 (3 of 12 right).
    assert report["after"]["datasets"]["image_folder"]["accuracy"] == 0.25
    assert report["before"]["datasets"]["image_folder"]["num_images"] == 12
    exported, _, _ = open_clip.create_model_and_transforms("tiny-vit", pretrained=str(out / "unlearned.safetensors"))
    assert torch.count_nonzero(exported.text_projection) == 0


def test_validate_on_evaluation_datasets_splits_target(tmp_path):
    root = _image_folder(tmp_path / "pets", VOCAB, per_class=3)
    module = tiny_module(vocabulary=None)
    evaluation = EvaluationDataModule({"image_folder": str(root)}, batch_size=5)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    metrics = trainer.validate(module, evaluation, verbose=False)[0]
    # The same numbers as the report's evaluation outside the loop.
    results = module.evaluate_datasets(evaluation.evaluation_loaders())["image_folder"]
    assert results["num_images"] == 12
    overall = (results["target"] * 3 + results["other_classes"] * 9) / 12
    assert abs(overall - results["accuracy"]) < 1e-9
    for key in ("accuracy", "target", "other_classes"):
        assert abs(metrics[f"eval/image_folder/{key}"] - results[key]) < 1e-6


def test_report_table_comes_after_the_progress_bar(tmp_path, monkeypatch, global_seed, classes_noise_leans_to):
    """The Rich table and the file names are the last lines of a run, not followed by a redrawn bar."""
    from lightning.pytorch.callbacks import RichProgressBar

    from lightning_unlearn.callbacks import report as report_module

    events: list[str] = []
    bar = RichProgressBar()
    bar_teardown = bar.teardown
    monkeypatch.setattr(bar, "teardown", lambda *a, **k: (events.append("bar closed"), bar_teardown(*a, **k)))
    monkeypatch.setattr(report_module, "print_report", lambda report: events.append("table"))
    pl.seed_everything(global_seed)
    clip = load_clip("tiny-vit")
    torch.save(clip.model.state_dict(), tmp_path / "input.pt")
    module = tiny_module(pretrained=str(tmp_path / "input.pt"), lr=5e-3,
                         forget_classes=classes_noise_leans_to(clip.model, VOCAB)[:1])
    data = SyntheticForgetDataModule(images_per_class=4, steps_per_epoch=1, synthesis=EASY_SYNTHESIS, progress=False)
    callbacks = _callbacks(tmp_path / "out")[:-1] + [UnlearningReport(output_dir=str(tmp_path / "out")), bar]
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, val_check_interval=1, num_sanity_val_steps=0,
                         callbacks=callbacks, logger=False, enable_checkpointing=False)
    trainer.fit(module, data)
    assert "table" in events and events.index("bar closed") < events.index("table"), events
    assert events.count("table") == 1


def test_load_from_checkpoint_rebuilds_the_method_and_the_weights(tmp_path):
    module = tiny_module(method=MultimodalLipschitz(num_perturbations=4, reduction="mean"))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(module)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = UnlearningModule.load_from_checkpoint(path, weights_only=True)
    assert isinstance(loaded.method, MultimodalLipschitz) and loaded.method.hparams == module.method.hparams
    for (name, a), (_, b) in zip(module.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
