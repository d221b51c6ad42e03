"""UnlearningModule, model loading and eligibility on tiny random-init open_clip models."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning.pytorch as pl
import open_clip
import pytest
import torch
from PIL import Image

from lightning_unlearn import UnlearningModule
from lightning_unlearn.callbacks import (
    GradientLayerSelection,
    NoiseLayerEscalation,
    SyntheticAccuracyStopping,
    UnlearningReport,
)
from lightning_unlearn.datamodules import EvaluationDataModule, SyntheticForgetDataModule
from lightning_unlearn.models import eligible_groups, load_clip
from lightning_unlearn.synthesis import SynthesisConfig

VOCAB = ["cat", "dog", "car", "tree"]
# A random-init tiny model separates classes only slightly: modest synthesis targets.
EASY_SYNTHESIS = SynthesisConfig(
    target_probability=0.33, min_probability=0.3, jitter=2, step_size=3.0, max_iterations=300
)


def tiny_module(**kwargs) -> UnlearningModule:
    args = dict(
        model_name="tiny-vit", pretrained=None, forget_classes=["dog"], vocabulary=VOCAB,
        num_perturbations=3, sigma=0.5, lr=1e-3,
    )
    args.update(kwargs)
    return UnlearningModule(**args)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- model loading --------------------------------------------------------------------------
def test_unknown_model_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown open_clip model 'RN05'.*close matches:.*'RN50'"):
        load_clip("RN05")


def test_unknown_pretrained_tag_lists_known_tags():
    with pytest.raises(ValueError, match=r"unknown pretrained tag 'opnai'.*'openai'"):
        load_clip("RN50", pretrained="opnai")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip("tiny-vit", pretrained=str(tmp_path / "nope.safetensors"))


def test_checkpoint_with_wrong_keys_is_rejected(tmp_path):
    rn = load_clip("tiny-rn").model
    path = tmp_path / "rn.pt"
    torch.save(rn.state_dict(), path)
    with pytest.raises(ValueError, match="does not match model 'tiny-vit'"):
        load_clip("tiny-vit", pretrained=str(path))


def test_local_checkpoint_loads_exactly(tmp_path):
    source = load_clip("tiny-vit").model
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    loaded = load_clip("tiny-vit", pretrained=str(path)).model
    for (name, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


# --- eligibility ----------------------------------------------------------------------------
def test_paper_preset_on_resnet_tower():
    model = load_clip("tiny-rn").model
    groups = eligible_groups(model, "paper")
    vision = [n for n, _ in groups["vision"]]
    assert vision and all(n.startswith("visual.attnpool.") for n in vision)
    assert {n.split(".")[2] for n in vision} == {"q_proj", "k_proj", "v_proj", "c_proj"}
    assert not any("positional_embedding" in n for n in vision)
    text = [n for n, _ in groups["text"]]
    assert text and all(n.startswith("transformer.resblocks.") for n in text)


def test_blocks_preset_keeps_global_vit_tensors_out():
    model = load_clip("tiny-vit").model
    vision = [n for n, _ in eligible_groups(model, "blocks")["vision"]]
    assert all(n.startswith("visual.transformer.resblocks.") for n in vision)
    paper = [n for n, _ in eligible_groups(model, "paper")["vision"]]
    assert "visual.conv1.weight" in paper and "visual.conv1.weight" not in vision


def test_include_exclude_patterns_and_bad_tower():
    model = load_clip("tiny-vit").model
    groups = eligible_groups(model, "paper", include={"vision": [r"\.mlp\."]}, exclude={"text": [r"\.ln_"]})
    assert all(".mlp." in n for n, _ in groups["vision"])
    assert not any(".ln_" in n for n, _ in groups["text"])
    with pytest.raises(ValueError, match="unknown tower 'audio'"):
        eligible_groups(model, "paper", include={"audio": ["x"]})
    with pytest.raises(ValueError, match="no eligible parameters in the vision tower"):
        eligible_groups(model, "paper", include={"vision": ["does-not-match"]})


def test_module_freezes_logit_scale_and_batchnorm():
    module = tiny_module(model_name="tiny-rn")
    assert not module.model.logit_scale.requires_grad
    bns = [m for m in module.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not p.requires_grad for m in bns for p in m.parameters())
    module.train()
    assert all(not m.training for m in bns)


# --- argument and class checks --------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"forget_classes": []}, "forget_classes is empty"),
        ({"forget_prompt": "no placeholder"}, "forget_prompt needs"),
        ({"sigma": 0.0}, "sigma must be a positive finite number, got 0.0"),
        ({"sigma": float("nan")}, "sigma must be a positive finite number"),
        ({"num_perturbations": 0}, "num_perturbations must be >= 1, got 0"),
        ({"objective": "magic"}, "objective must be"),
    ],
)
def test_bad_module_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_module(**kwargs)


def test_unknown_class_suggests_close_matches():
    module = tiny_module(forget_classes=["dgo"])
    with pytest.raises(ValueError, match=r"unknown class 'dgo'.*close matches: 'dog'"):
        module.forget_spec()


def _image_folder(root: Path, classes: list[str], per_class: int = 2) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (32, 32), ((40 * c + 20 * i) % 255, 80, 160)).save(root / name / f"{i}.png")
    return root


class _Datasets:
    """What the module reads from an evaluation DataModule."""

    def __init__(self, eval_datasets: dict) -> None:
        self.eval_datasets = eval_datasets


def _folder_dataset(root: Path, name: str):
    from lightning_unlearn.datasets.base import get_dataset_factory

    return get_dataset_factory("image_folder")(str(root), name=name)


def test_class_in_wrong_dataset_is_named(tmp_path, monkeypatch):
    pets = _folder_dataset(_image_folder(tmp_path / "pets", ["cat", "dog"]), "pets")
    cars = _folder_dataset(_image_folder(tmp_path / "cars", ["sedan", "truck"]), "cars")
    module = tiny_module(vocabulary=None, forget_classes=["dog"], forget_dataset="cars")
    monkeypatch.setattr(module, "_evaluation_datamodule", lambda: _Datasets({"pets": pets, "cars": cars}))
    with pytest.raises(ValueError, match=r"unknown class 'dog' in dataset 'cars'.*class of 'pets'"):
        module.forget_spec()


def test_vocabulary_comes_from_the_dataset_holding_the_classes(tmp_path, monkeypatch):
    pets = _folder_dataset(_image_folder(tmp_path / "pets", ["cat", "dog"]), "pets")
    cars = _folder_dataset(_image_folder(tmp_path / "cars", ["sedan", "truck"]), "cars")
    module = tiny_module(vocabulary=None, forget_classes=["Dog"])
    monkeypatch.setattr(module, "_evaluation_datamodule", lambda: _Datasets({"cars": cars, "pets": pets}))
    spec = module.forget_spec()
    assert (spec.dataset, spec.vocabulary, spec.forget_indices) == ("pets", ["cat", "dog"], [1])
    assert spec.prompts == ["A picture of dog"]


# --- end to end with a Trainer --------------------------------------------------------------
def _callbacks(out: Path) -> list[pl.Callback]:
    return [
        GradientLayerSelection(k=4),
        SyntheticAccuracyStopping(goal=0.1),
        NoiseLayerEscalation(sigma_schedule=[0.5, 1.0, 2.0], k_schedules={"vision": [4, 8, 16], "text": [4, 8, 16]}),
        UnlearningReport(output_dir=str(out), print_table=False),
    ]


def test_fit_end_to_end_writes_outputs_and_forgets(tmp_path):
    pl.seed_everything(0)
    source = tmp_path / "input.pt"
    torch.save(load_clip("tiny-vit").model.state_dict(), source)
    digest = sha(source)
    module = tiny_module(pretrained=str(source), num_perturbations=3, lr=5e-3)
    frozen_before = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    data = SyntheticForgetDataModule(images_per_class=8, steps_per_epoch=3, synthesis=EASY_SYNTHESIS, progress=False)
    out = tmp_path / "out"
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=4, val_check_interval=1, num_sanity_val_steps=0,
        callbacks=_callbacks(out), logger=False, enable_checkpointing=False, enable_progress_bar=False,
    )
    trainer.fit(module, data)

    report = json.loads((out / "report.json").read_text())
    for key in ("model", "classes", "before", "after", "synthetic_acc_history", "sigma_history",
                "selected_parameters", "timings"):
        assert key in report, key
    assert report["classes"] == ["dog"]
    assert report["before"]["synthetic_acc"] == 1.0  # every kept image is classified as its class
    assert report["after"]["synthetic_acc"] <= 0.1
    assert report["stop_reason"] == "goal_reached"
    assert set(report["timings"]) >= {"synthesis", "unlearn", "evaluate_before", "evaluate_after"}
    assert "Unlearning report: dog" in (out / "report.md").read_text()
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


def test_validate_on_evaluation_datasets_splits_target(tmp_path):
    root = _image_folder(tmp_path / "pets", VOCAB, per_class=3)
    module = tiny_module(vocabulary=None)
    evaluation = EvaluationDataModule({"image_folder": str(root)}, batch_size=5)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    metrics = trainer.validate(module, evaluation, verbose=False)[0]
    results = module.last_evaluation["image_folder"]
    assert results["num_images"] == 12
    # 3 dog images and 9 others; accuracies are multiples of the class sizes.
    assert results["target"] is not None and abs(results["target"] * 3 - round(results["target"] * 3)) < 1e-9
    overall = (results["target"] * 3 + results["other_classes"] * 9) / 12
    assert abs(overall - results["accuracy"]) < 1e-9
    assert abs(metrics["eval/image_folder/accuracy"] - results["accuracy"]) < 1e-6


def test_towers_of_custom_text_clip():
    model = load_clip("tiny-custom").model
    assert type(model).__name__ == "CustomTextCLIP"
    groups = eligible_groups(model, "paper")
    assert all(n.startswith("text.transformer.resblocks.") for n, _ in groups["text"])
    assert all(n.startswith("visual.") for n, _ in groups["vision"])
    everything = eligible_groups(model, "all")
    names = {n for params in everything.values() for n, _ in params}
    assert "text.token_embedding.weight" in names and "logit_scale" not in names


def test_report_table_comes_after_the_progress_bar(tmp_path, monkeypatch):
    """The Rich table and the file names are the last lines of a run, not followed by a redrawn bar."""
    from lightning.pytorch.callbacks import RichProgressBar

    from lightning_unlearn.callbacks import report as report_module

    events: list[str] = []
    bar = RichProgressBar()
    bar_teardown = bar.teardown
    monkeypatch.setattr(bar, "teardown", lambda *a, **k: (events.append("bar closed"), bar_teardown(*a, **k)))
    monkeypatch.setattr(report_module, "print_report", lambda report: events.append("table"))
    pl.seed_everything(0)
    module = tiny_module(num_perturbations=2, lr=5e-3)
    data = SyntheticForgetDataModule(images_per_class=4, steps_per_epoch=1, synthesis=EASY_SYNTHESIS, progress=False)
    callbacks = _callbacks(tmp_path / "out")[:-1] + [UnlearningReport(output_dir=str(tmp_path / "out")), bar]
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, val_check_interval=1, num_sanity_val_steps=0,
                         callbacks=callbacks, logger=False, enable_checkpointing=False)
    trainer.fit(module, data)
    assert "table" in events and events.index("bar closed") < events.index("table"), events
    assert events.count("table") == 1
