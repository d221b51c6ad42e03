"""The comparison's method registry: what each short name runs, on which data."""

from __future__ import annotations

import copy

import pytest

from lightning_unlearn.core.errors import ConfigError, UnknownNameError
from lightning_unlearn.methods import UnlearningMethod, zero_shot_type
from lightning_unlearn.presets import PRESETS, apply_preset, get_preset, import_class, set_dotted

FIT = {
    "seed_everything": 0,
    "model": {"class_path": "lightning_unlearn.UnlearningModule", "init_args": {
        "model_name": "tiny-rn", "pretrained": None, "forget_classes": ["kite"], "forget_dataset": "demo_objects",
        "method": {"class_path": "lightning_unlearn.methods.MultimodalLipschitz",
                   "init_args": {"num_perturbations": 7, "reduction": "mean"}},
    }},
    "data": {"class_path": "lightning_unlearn.datamodules.SyntheticForgetDataModule", "init_args": {
        "datasets": {"demo_objects": None}, "images_per_class": 16, "steps_per_epoch": 5, "seed": 0,
        "real_valid_images": 4, "synthesis": {"target_probability": 0.5, "min_probability": 0.45},
    }},
    "trainer": {"max_epochs": 30, "callbacks": [
        {"class_path": "lightning_unlearn.callbacks.GradientLayerSelection", "init_args": {"k": 2}},
        {"class_path": "lightning_unlearn.callbacks.SyntheticAccuracyStopping", "init_args": {"goal": 0.1}},
        {"class_path": "lightning_unlearn.callbacks.NoiseLayerEscalation",
         "init_args": {"k_schedules": {"vision": [2, 3], "text": [2, 3]}}},
        {"class_path": "lightning_unlearn.callbacks.UnlearningReport"},
    ]},
}


def _callbacks(config: dict) -> list[str]:
    return [cb["class_path"].rpartition(".")[2] for cb in config["trainer"]["callbacks"]]


@pytest.mark.parametrize("name", list(PRESETS))
def test_declared_zero_shot_type_is_the_one_the_report_computes(name):
    preset = get_preset(name)
    method = import_class(preset.method)()
    assert isinstance(method, UnlearningMethod) and method.trains == (preset.forget_images != "none")
    data = import_class(apply_preset(FIT, preset)["data"]["class_path"])
    assert zero_shot_type(method, getattr(data, "real_forget_images", False)) == preset.zero_shot


def test_the_issue_names_are_registered_with_their_types():
    expected = {"lip": "ZS", "lip_real": "semi ZS", "emb": "ZS", "ulip": "ZS", "ulip_real": "semi ZS", "amns": "ZS",
                "emmn": "ZS", "amns_retain": "not ZS", "all_params_vary": "ZS", "one_iter": "ZS"}
    assert {name: PRESETS[name].zero_shot for name in expected} == expected


def test_unknown_method_names_close_matches():
    with pytest.raises(UnknownNameError, match=r"unknown method 'amnsretain'; close matches: 'amns_retain'"):
        get_preset("amnsretain")


def test_real_preset_switches_the_datamodule_and_keeps_shared_settings():
    config = apply_preset(FIT, get_preset("lip_real"))
    data = config["data"]
    assert data["class_path"] == "lightning_unlearn.datamodules.RealForgetDataModule"
    assert data["init_args"] == {"datasets": {"demo_objects": None}, "images_per_class": 16, "steps_per_epoch": 5,
                                 "seed": 0, "real_valid_images": 4}  # synthesis settings dropped
    assert config["model"]["init_args"]["method"] == FIT["model"]["init_args"]["method"]
    assert FIT["data"]["class_path"].endswith("SyntheticForgetDataModule")  # the input is not modified


def test_method_switch_keeps_the_init_args_the_new_class_takes():
    emb = apply_preset(FIT, get_preset("emb"))["model"]["init_args"]["method"]
    assert emb == {"class_path": "lightning_unlearn.methods.EmbeddingLoss",
                   "init_args": {"num_perturbations": 7, "reduction": "mean"}}
    amns = apply_preset(FIT, get_preset("amns"))["model"]["init_args"]["method"]
    assert amns == {"class_path": "lightning_unlearn.methods.AmnesiacRelabelling", "init_args": {}}


def test_amns_retain_asks_for_retain_images():
    config = apply_preset(FIT, get_preset("amns_retain"))
    assert config["data"]["init_args"]["retain_images_per_class"] > 0
    assert import_class(config["model"]["init_args"]["method"]["class_path"]).needs_retain_images


def test_ablations():
    every = apply_preset(FIT, get_preset("all_params_vary"))
    assert every["model"]["init_args"]["eligibility"] == "all"
    assert _callbacks(every) == ["SyntheticAccuracyStopping", "NoiseLayerEscalation", "UnlearningReport"]
    assert every["trainer"]["callbacks"][1]["init_args"]["k_schedules"] is None
    once = apply_preset(FIT, get_preset("one_iter"))
    assert once["trainer"]["max_epochs"] == 1 and once["data"]["init_args"]["steps_per_epoch"] == 1
    assert "NoiseLayerEscalation" not in _callbacks(once)
    emmn = apply_preset(FIT, get_preset("emmn"))
    assert _callbacks(emmn) == ["UnlearningReport"]  # every parameter eligible, no selection (docs/paper.md)
    assert emmn["model"]["init_args"]["eligibility"] == "all"


@pytest.mark.parametrize("name", ["edit", "nullspace"])
def test_training_free_preset_uses_an_evaluation_datamodule(name):
    config = apply_preset(FIT, get_preset(name))
    assert config["model"]["init_args"]["method"] == {"class_path": get_preset(name).method, "init_args": {}}
    assert config["data"]["class_path"] == "lightning_unlearn.datamodules.EvaluationDataModule"
    assert config["data"]["init_args"] == {"datasets": {"demo_objects": None}}
    assert _callbacks(config) == ["UnlearningReport"]


def test_deep_preset_is_the_shipped_erasure_and_builds():
    """`compare --methods deep` runs configs/demo_deep.yaml's erasure (prompt covariance, no
    synthesis), whatever the fit config's method was."""
    from pathlib import Path

    import yaml

    from lightning_unlearn.methods import DeepEdit

    config = apply_preset(FIT, get_preset("deep"))
    method = config["model"]["init_args"]["method"]
    assert method["class_path"] == "lightning_unlearn.methods.DeepEdit"
    shipped = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "demo_deep.yaml").read_text())
    shipped_args = shipped["model"]["init_args"]["method"]["init_args"]
    for key in ("direction", "covariance", "shrinkage"):
        assert method["init_args"][key] == shipped_args[key], key
    built = DeepEdit(**method["init_args"])
    assert not built.synthesises and not built.trains
    assert config["data"]["class_path"] == "lightning_unlearn.datamodules.EvaluationDataModule"
    assert _callbacks(config) == ["UnlearningReport"]


def test_missing_method_class_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"method 'x' 'lightning_unlearn.methods.Nope' is not available"):
        import_class("lightning_unlearn.methods.Nope", "method 'x'")


def test_set_dotted_reaches_callbacks_by_class_name():
    config = copy.deepcopy(FIT)
    set_dotted(config, "trainer.callbacks.NoiseLayerEscalation.init_args.positions", "sigma")
    set_dotted(config, "model.init_args.lr", 1e-3)
    set_dotted(config, "data.init_args.new.deep", 1)
    assert config["trainer"]["callbacks"][2]["init_args"]["positions"] == "sigma"
    assert config["model"]["init_args"]["lr"] == 1e-3 and config["data"]["init_args"]["new"] == {"deep": 1}


@pytest.mark.parametrize("key, message", [
    ("trainer.callbacks.EarlyStopping.init_args.patience", r"no 'EarlyStopping' in trainer.callbacks"),
    ("trainer.callbacks.NoiseLayerEscalation", r"must name a field of 'NoiseLayerEscalation'"),
    ("seed_everything.x", r"'seed_everything' is not a mapping"),
])
def test_set_dotted_errors(key, message):
    with pytest.raises(ConfigError, match=message):
        set_dotted(copy.deepcopy(FIT), key, 1)
