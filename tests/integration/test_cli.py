"""`lightning-unlearn fit|validate` from YAML configs, in process (the tiny configs are
registered by conftest, which a separate process would not see)."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import yaml

from lightning_unlearn.cli import main

CONFIG = {
    "seed_everything": 0,
    "model": {
        "class_path": "lightning_unlearn.UnlearningModule",
        "init_args": {
            "model_name": "tiny-vit", "pretrained": None, "forget_classes": ["dog", "car"],
            "vocabulary": ["cat", "dog", "car", "tree"], "num_perturbations": 3, "sigma": 0.5, "lr": 0.005,
        },
    },
    "data": {
        "class_path": "lightning_unlearn.datamodules.SyntheticForgetDataModule",
        "init_args": {
            "images_per_class": 8, "steps_per_epoch": 3, "progress": False,
            "synthesis": {"target_probability": 0.33, "min_probability": 0.3, "jitter": 2,
                          "step_size": 3.0, "max_iterations": 300},
        },
    },
    "trainer": {
        "accelerator": "cpu", "max_epochs": 4, "val_check_interval": 1, "num_sanity_val_steps": 0,
        "callbacks": [
            {"class_path": "lightning_unlearn.callbacks.GradientLayerSelection", "init_args": {"k": 4}},
            {"class_path": "lightning_unlearn.callbacks.SyntheticAccuracyStopping", "init_args": {"goal": 0.1}},
            {"class_path": "lightning_unlearn.callbacks.NoiseLayerEscalation",
             "init_args": {"sigma_schedule": [0.5, 1.0, 2.0], "k_schedules": {"vision": [4, 8, 16], "text": [4, 8, 16]}}},
            {"class_path": "lightning_unlearn.callbacks.UnlearningReport", "init_args": {"print_table": False}},
        ],
    },
}


def write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_from_yaml_writes_outputs(tmp_path):
    path = write_config(tmp_path, CONFIG)
    cli = main(["fit", "--config", str(path), "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])
    log_dir = Path(cli.trainer.log_dir)
    report = json.loads((log_dir / "report.json").read_text())
    assert report["classes"] == ["dog", "car"] and report["after"]["synthetic_acc"] <= 0.1
    assert (log_dir / "report.md").is_file() and (log_dir / "metrics.csv").is_file()
    model, _, _ = open_clip.create_model_and_transforms("tiny-vit", pretrained=str(log_dir / "unlearned.safetensors"))
    assert model is not None
    # The checkpoint Lightning saved reloads for `validate` with weights_only.
    ckpt = next((log_dir / "checkpoints").glob("*.ckpt"))
    import torch

    torch.load(ckpt, weights_only=True)


def test_help_lists_module_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model", "lightning_unlearn.UnlearningModule", "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "forget_prompt: A picture of {}" in printed and "num_perturbations: 25" in printed


def test_bad_value_is_reported_by_the_cli(tmp_path, capsys):
    config = json.loads(json.dumps(CONFIG))
    config["trainer"]["callbacks"][1]["init_args"]["goal"] = 1.5
    path = write_config(tmp_path, config)
    with pytest.raises((SystemExit, ValueError)):
        main(["fit", "--config", str(path), "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])


CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_parse(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    assert "class_path: lightning_unlearn" in capsys.readouterr().out
