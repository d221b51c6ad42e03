"""`lightning-unlearn fit|validate` from YAML configs (in process: the tiny configs are registered
by conftest, which a separate process would not see), packaged configs and the wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import lightning.pytorch as pl
import open_clip
import pytest
import torch
import yaml

from lightning_unlearn.cli import main, packaged_configs, resolve_config
from lightning_unlearn.errors import ConfigError, MissingFileError, UnknownNameError
from lightning_unlearn.models import load_clip

from fake_datasets import make_image_folder

REPO = Path(__file__).resolve().parents[2]
CONFIG = {
    "seed_everything": 0,
    "model": {
        "class_path": "lightning_unlearn.UnlearningModule",
        "init_args": {
            "model_name": "tiny-vit", "pretrained": None, "forget_classes": ["dog", "car"],
            "vocabulary": ["cat", "dog", "car", "tree"], "sigma": 0.5, "lr": 0.005,
            "method": {"class_path": "lightning_unlearn.methods.MultimodalLipschitz",
                       "init_args": {"num_perturbations": 3, "reduction": "mean", "noise_norm": "drawn"}},
        },
    },
    "data": {
        "class_path": "lightning_unlearn.datamodules.SyntheticForgetDataModule",
        "init_args": {
            "images_per_class": 8, "steps_per_epoch": 3, "progress": False,
            "synthesis": {"target_probability": 0.33, "min_probability": 0.3, "jitter": 2, "step_size": 3.0,
                          "max_iterations": 300, "threshold_decay": "per_image", "pixel_space": "model",
                          "jitter_mode": "symmetric", "blur_kernel_size": 3, "blur_from_first_iteration": False},
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


def test_fit_from_yaml_writes_outputs_and_a_checkpoint_validate_reloads(tmp_path, global_seed, classes_noise_leans_to):
    # The random model's initial weights decide which class synthesis can reach:
    # forget that one (classes_noise_leans_to); how much a run forgets is not asserted here.
    pl.seed_everything(global_seed)
    clip = load_clip("tiny-vit")
    torch.save(clip.model.state_dict(), tmp_path / "input.pt")
    forget = classes_noise_leans_to(clip.model, CONFIG["model"]["init_args"]["vocabulary"])[0]
    path = write_config(tmp_path, CONFIG)
    runs = ["--seed_everything", str(global_seed), "--model.init_args.pretrained", str(tmp_path / "input.pt"),
            "--model.init_args.forget_classes", json.dumps([forget]),
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    cli = main(["fit", "--config", str(path), *runs])
    log_dir = Path(cli.trainer.log_dir)
    report = json.loads((log_dir / "report.json").read_text())
    assert report["classes"] == [forget] and report["before"]["synthetic_acc"] == 1.0
    assert len(report["synthetic_acc_history"]) == report["optimizer_steps"] > 0
    assert (log_dir / "report.md").is_file() and (log_dir / "metrics.csv").is_file()
    exported, _, _ = open_clip.create_model_and_transforms("tiny-vit", pretrained=str(log_dir / "unlearned.safetensors"))
    for (name, a), (_, b) in zip(exported.state_dict().items(), cli.model.model.state_dict().items()):
        assert torch.equal(a, b), name
    # The checkpoint Lightning saved loads with weights_only and holds the unlearned weights and sigma.
    ckpt = next((log_dir / "checkpoints").glob("*.ckpt"))
    state = torch.load(ckpt, weights_only=True)
    assert state["hyper_parameters"]["method"]["init_args"]["num_perturbations"] == 3
    assert float(state["state_dict"]["_sigma"]) in (0.5, 1.0, 2.0)


def test_help_lists_module_and_method_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model", "lightning_unlearn.UnlearningModule", "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "forget_prompt: A picture of {}" in printed and "sigma: 0.1" in printed


def test_bad_value_is_the_projects_one_line_error(tmp_path, capsys):
    config = json.loads(json.dumps(CONFIG))
    config["trainer"]["callbacks"][1]["init_args"]["goal"] = 1.5
    path = write_config(tmp_path, config)
    from lightning_unlearn.cli import console_main

    with pytest.raises(SystemExit) as exit_info:
        console_main(["fit", "--config", str(path), "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["lightning-unlearn: error: `goal` must be a number in [0, 1], got 1.5"], err


SHIPPED = sorted((REPO / "lightning_unlearn" / "configs").glob("*.yaml"))
FIT_CONFIGS = [p for p in SHIPPED if "model" in yaml.safe_load(p.read_text())]  # compare configs: test_compare_table.py


@pytest.mark.parametrize("config", FIT_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_parse(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    assert "class_path: lightning_unlearn" in capsys.readouterr().out


def test_the_demo_configs_run_on_demo_clip_lit():
    """`make demo`, demo_compare and the demo configs use the language demo CLIP; only the
    pretraining config of the tiny one names demo-clip-rn (the fast tests override it per test)."""
    demo = {p.name: yaml.safe_load(p.read_text())["model"]["init_args"] for p in FIT_CONFIGS
            if p.name.startswith("demo")}
    assert {"demo.yaml", "demo_edit.yaml", "demo_deep.yaml"} <= set(demo)
    for name, args in demo.items():
        expected = "demo-clip-rn" if name == "demo_pretrain.yaml" else "demo-clip-lit"
        assert args["model_name"] == expected, name
        if not name.startswith("demo_pretrain"):
            assert args["pretrained"] == "demo-world", name


def test_demo_lip_tuned_is_demo_yaml_with_its_named_changes_only():
    """configs/demo_lip_tuned.yaml is a full copy of demo.yaml (compare reads one file per fit
    config): it may differ only in the settings its header names, so the copy cannot drift."""
    configs = REPO / "lightning_unlearn" / "configs"
    demo = yaml.safe_load((configs / "demo.yaml").read_text())
    tuned = yaml.safe_load((configs / "demo_lip_tuned.yaml").read_text())
    model, data = tuned["model"]["init_args"], tuned["data"]["init_args"]
    assert model.pop("include") == {"text": []} and model.pop("lr") == 1.0e-3
    assert data["synthesis"].pop("min_iterations") == 100
    demo["model"]["init_args"].pop("lr")
    callbacks = {c["class_path"].rsplit(".", 1)[1]: c for c in tuned["trainer"]["callbacks"]}
    assert callbacks["GradientLayerSelection"]["init_args"]["k"] == {"vision": 5}
    escalation = callbacks["NoiseLayerEscalation"]["init_args"]["k_schedules"]
    demo_callbacks = {c["class_path"].rsplit(".", 1)[1]: c for c in demo["trainer"]["callbacks"]}
    assert escalation == {"vision": demo_callbacks["NoiseLayerEscalation"]["init_args"]["k_schedules"]["vision"]}
    assert callbacks["SyntheticAccuracyStopping"]["init_args"].pop("goal") == 0.3
    demo_callbacks["SyntheticAccuracyStopping"]["init_args"].pop("goal")
    for cfg in (demo, tuned):  # the k settings were checked above; the logger folder is its own
        for c in cfg["trainer"]["callbacks"]:
            c.get("init_args", {}).pop("k", None)
            c.get("init_args", {}).pop("k_schedules", None)
        cfg["trainer"]["logger"]["init_args"].pop("name")
    assert tuned == demo


def test_packaged_config_names_resolve_and_unknown_ones_say_what_exists(tmp_path, monkeypatch):
    assert Path(resolve_config("demo")) == REPO / "lightning_unlearn" / "configs" / "demo.yaml"
    assert resolve_config(str(SHIPPED[0])) == str(SHIPPED[0])
    # the repository-relative spelling of the docs also works outside a checkout
    monkeypatch.chdir(tmp_path)
    assert Path(resolve_config("configs/demo_edit.yaml")) == REPO / "lightning_unlearn" / "configs" / "demo_edit.yaml"
    with pytest.raises(MissingFileError, match="config file 'configs/nope.yaml' does not exist"):
        resolve_config("configs/nope.yaml")
    assert {"demo", "rn50_stanford_dogs", "vit_b16_caltech101"} <= set(packaged_configs())
    with pytest.raises(UnknownNameError, match=r"unknown config 'dmeo'; close matches: 'demo'"):
        resolve_config("dmeo")
    with pytest.raises(MissingFileError, match=r"config file '.*nope.yaml' does not exist"):
        resolve_config(str(tmp_path / "nope.yaml"))
    assert isinstance(UnknownNameError("x"), ConfigError)


def test_repo_configs_folder_is_the_packaged_one():
    assert (REPO / "configs").resolve() == (REPO / "lightning_unlearn" / "configs").resolve()


def test_wheel_ships_every_config_and_the_demo_config_prints_outside_the_repo(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(tmp_path.glob("lightning_unlearn-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in SHIPPED:
        assert f"lightning_unlearn/configs/{config.name}" in names, config.name
    assert "lightning_unlearn/model_configs/demo-clip-rn.json" in names
    assert "lightning_unlearn/presets.yaml" in names and "lightning_unlearn/demo/descriptions.json" in names
    printed = subprocess.run([sys.executable, "-m", "lightning_unlearn", "fit", "--config", "demo", "--print_config"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert "model_name: demo-clip-lit" in printed.stdout


def _image_folder(root: Path, classes: list[str]) -> Path:
    return make_image_folder(root, classes)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--model.init_args.model_name", "tiny-vti"], r"unknown open_clip model 'tiny-vti'; close matches: 'tiny-vit'"),
        (["--model.init_args.pretrained", "opnai"], r"unknown pretrained tag 'opnai' for model 'tiny-vit'"),
        (["--model.init_args.pretrained", "{tmp}/missing/w.safetensors"], r"pretrained checkpoint .* does not exist"),
        (["--model.init_args.pretrained", "{tmp}/broken.safetensors"], r"cannot read checkpoint .*broken.safetensors"),
        (["--model.init_args.forget_classes", "[ankor]"], r"class 'ankor' is in none of the evaluation datasets.*'anchor'"),
        (["--data.init_args.datasets", "{{imagefolder: {tmp}/pets}}"], r"unknown dataset 'imagefolder'; close matches"),
        (["--model.init_args.sigma", "-1"], r"sigma must be a finite number > 0, got -1"),
        (["--data.init_args.images_per_class", "0"], r"images_per_class must be an int >= 1, got 0"),
        (["--trainer.logger.init_args.save_dir", "{tmp}/a-file"], r"the log folder .* cannot be a folder: .*a-file' is a file"),
        (["--config", "rn50_stanford_dgs"], r"unknown config 'rn50_stanford_dgs'; close matches: 'rn50_stanford_dogs'"),
        (["--trainer.callbacks+=RichProgressBar"],  # Lightning's own misconfiguration, shortened too
         r"You added multiple progress bar callbacks to the Trainer"),
    ],
    ids=["model", "tag", "missing", "truncated", "class", "dataset", "sigma", "images", "output", "config", "trainer"],
)
def test_each_bad_input_is_one_line_and_exit_status_2(tmp_path, capsys, override, message):
    """The issue's list: stderr holds the project's message and no traceback; the exit status is 2."""
    from lightning_unlearn.cli import console_main

    (tmp_path / "broken.safetensors").write_bytes(b"\x00\x01 truncated")
    (tmp_path / "a-file").write_text("not a folder")
    config = json.loads(json.dumps(CONFIG))
    config["model"]["init_args"].update(vocabulary=None, forget_classes=["anchor"])
    config["data"]["init_args"]["datasets"] = {"image_folder": str(_image_folder(tmp_path / "pets", ["anchor", "kite"]))}
    path = write_config(tmp_path, config)
    args = ["fit", "--config", str(path), "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    args += [a.format(tmp=tmp_path) for a in override]
    with pytest.raises(SystemExit) as exit_info:
        console_main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 3 and "Traceback" not in err, err
    assert lines[-1].startswith("lightning-unlearn: error: ") and __import__("re").search(message, lines[-1]), lines
    assert not list((tmp_path / "runs").rglob("report.json"))


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    from lightning_unlearn.cli import console_main

    monkeypatch.setenv("LIGHTNING_UNLEARN_DEBUG", "1")
    path = write_config(tmp_path, CONFIG)
    with pytest.raises(ValueError, match="unknown open_clip model 'tiny-vti'") as info:  # the whole chain, raised
        console_main(["fit", "--config", str(path), "--model.init_args.model_name", "tiny-vti"])
    from lightning_unlearn.cli import project_error

    assert isinstance(project_error(info.value), UnknownNameError)
