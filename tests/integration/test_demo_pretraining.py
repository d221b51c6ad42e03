"""Demo CLIP pretraining through the CLI (a Trainer fit of a few steps)."""

from __future__ import annotations

from pathlib import Path

import torch


def test_pretraining_config_runs_from_the_cli_and_exports_open_clip_weights(tmp_path: Path) -> None:
    from lightning_unlearn.cli import main
    from lightning_unlearn.clip.loading import load_clip

    export = tmp_path / "out" / "demo.safetensors"
    config = Path(__file__).resolve().parents[2] / "configs" / "demo_pretrain.yaml"
    cli = main(["fit", "--config", str(config),
                "--data.init_args.train_per_class", "4", "--data.init_args.val_per_class", "2",
                "--trainer.max_steps", "3", "--trainer.val_check_interval", "3",
                "--model.init_args.export", str(export),
                "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])
    assert cli.trainer.global_step == 3
    assert "val/acc_objects" in cli.trainer.callback_metrics
    loaded = load_clip("demo-clip-rn", str(export)).model.state_dict()
    trained = cli.model.model.state_dict()
    assert loaded.keys() == trained.keys()
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)
    assert [p.name for p in export.parent.iterdir()] == [export.name]  # no temporary file left behind
