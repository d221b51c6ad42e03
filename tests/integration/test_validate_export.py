"""``lightning-unlearn validate --model.init_args.pretrained <file>``: the module is built without
reading the file, and the weights that are evaluated and reported are the file's (loaded in
``prepare_data``/``setup``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from lightning_unlearn.clip.loading import load_clip
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.core.io import save_open_clip_weights
from lightning_unlearn.trainer_cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def evaluation_config(tmp_path: Path, **trainer: Any) -> Path:
    """A validate/test config on a random tiny ViT and one demo image per class, written to
    ``tmp_path`` (its report goes to ``tmp_path/out``); ``trainer`` adds Trainer settings."""
    config = {
        "seed_everything": 0,
        "model": {"class_path": "lightning_unlearn.UnlearningModule", "init_args": {
            "model_name": "tiny-vit", "pretrained": None, "forget_classes": ["anchor"],
            "forget_dataset": "demo_objects"}},
        "data": {"class_path": "lightning_unlearn.datamodules.EvaluationDataModule", "init_args": {
            "datasets": {"demo_objects": None}, "batch_size": 32,
            "dataset_kwargs": {"demo_objects": {"num_per_class": 1}}}},
        "trainer": {"accelerator": "cpu", "logger": False, "default_root_dir": str(tmp_path), **trainer,
                    "callbacks": [{"class_path": "lightning_unlearn.callbacks.UnlearningReport",
                                   "init_args": {"output_dir": str(tmp_path / "out"), "print_table": False}}]},
    }
    path = tmp_path / "evaluate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_validate_evaluates_the_given_weights_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = load_clip("tiny-vit").model  # weights that differ from the module's random initialisation
    export = save_open_clip_weights(tmp_path / "export.safetensors", source)
    path = evaluation_config(tmp_path)
    cli = main(["validate", "--config", str(path), "--model.init_args.pretrained", str(export)], quiet=True)
    assert cli.model.clip.weights_pending is None
    for (name, a), (_, b) in zip(source.state_dict().items(), cli.model.model.state_dict().items()):
        assert torch.equal(a, b), name
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["stage"] == "validate" and report["model"]["pretrained"] == str(export)
    assert report["after"]["datasets"]["demo_objects"]["accuracy"] is not None


@pytest.mark.parametrize("subcommand,setting", [("validate", "limit_val_batches"), ("test", "limit_test_batches")])
def test_an_evaluation_that_would_evaluate_nothing_is_refused(tmp_path: Path, subcommand: str, setting: str) -> None:
    """The demo's fit configs set limit_val_batches 0; reused for validate they must not end with no report."""
    path = evaluation_config(tmp_path, **{setting: 0})
    with pytest.raises(ConfigError, match=rf"{subcommand} with trainer\.{setting}=0 .*--trainer\.{setting} 1\.0"):
        main([subcommand, "--config", str(path)], quiet=True)
    assert not (tmp_path / "out" / "report.json").exists()
