"""Per-class synthesis targets set in YAML reach the synthesis (``synthesis.class_target_probability``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lightning_unlearn.cli import main

from fake_datasets import fit_config, make_dogs

pytestmark = pytest.mark.usefixtures("one_thread")


def _forget_set(tmp_path: Path, class_targets) -> dict:
    make_dogs(tmp_path / "data", "paper")
    config = fit_config(tmp_path / "data")
    config["data"]["init_args"]["datasets"] = {"stanford_dogs": str(tmp_path / "data")}
    config["data"]["init_args"]["synthesis"]["class_target_probability"] = class_targets
    config["trainer"]["max_epochs"] = 1
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    cli = main(["fit", "--config", str(tmp_path / "fit.yaml"), "--trainer.logger.init_args.save_dir",
                str(tmp_path / "runs")], quiet=True)
    return json.loads((Path(cli.trainer.log_dir) / "report.json").read_text())["forget_set"]


def test_class_target_from_yaml_raises_the_bar_of_that_class(tmp_path):
    default = _forget_set(tmp_path / "default", None)  # target_probability 0.33 for every class
    raised = _forget_set(tmp_path / "raised", {"pekinese": 0.6})  # matched case-insensitively
    assert default["min_probability"] < 0.6 and default["reached_target"] == default["images"]
    assert raised["min_probability"] > 0.6 and raised["reached_target"] == raised["images"]
