"""The evaluation suite end to end: ``fit`` writes every section and plot, ``validate`` on the
exported weights reproduces the after-figures, and bad settings fail before any run.

A tiny random-init ViT (conftest) on small demo-world datasets (rendered, no files); the forgotten
class (of anchor, kite, rocket and tree, the one the seeded random model gives noise to) competes
in an explicit 4-class vocabulary so that synthesis reaches its modest target quickly for any seed. What is checked is the suite's plumbing and shape, not how well the class is
forgotten.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml
from PIL import Image

from lightning_unlearn.cli import console_main, main
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.evaluation import PAPER_TEMPLATES
from lightning_unlearn.models import load_clip

pytestmark = pytest.mark.usefixtures("one_thread")

KS = ("p@1", "p@5", "p@10")
TEMPLATES = ["a photo of a {}.", *PAPER_TEMPLATES]
CONFIG: dict[str, Any] = {
    "seed_everything": 0,
    "model": {
        "class_path": "lightning_unlearn.UnlearningModule",
        "init_args": {
            "model_name": "tiny-vit", "pretrained": None, "forget_classes": ["anchor"],
            "vocabulary": ["anchor", "kite", "rocket", "tree"], "sigma": 0.5, "lr": 2e-3,
            "method": {"class_path": "lightning_unlearn.methods.MultimodalLipschitz",
                       "init_args": {"num_perturbations": 2, "reduction": "mean", "noise_norm": "drawn"}},
            "evaluation": {
                "templates": TEMPLATES, "retrieval_other_queries": 20, "verification_images": 2,
                "linear_probe": True, "relearn_steps": 3, "relearn_images": 2, "relearn_lr": 1e-3,
                "paraphrases": "demo-paraphrases", "plots": True, "class_mean_probe": True, "class_mean_images": 2,
                "inversion": True, "inversion_steps": 3, "inversion_images": 2,
            },
        },
    },
    "data": {
        "class_path": "lightning_unlearn.datamodules.SyntheticForgetDataModule",
        "init_args": {
            "datasets": {"demo_objects": None, "demo_textures": None},
            "dataset_kwargs": {"demo_objects": {"num_per_class": 4}, "demo_textures": {"num_per_class": 3}},
            "batch_size": 32, "images_per_class": 4, "steps_per_epoch": 2, "progress": False,
            "synthesis": {"target_probability": 0.3, "min_probability": 0.27, "jitter": 2, "step_size": 3.0,
                          "max_iterations": 100, "threshold_decay": "per_image", "pixel_space": "model",
                          "jitter_mode": "symmetric", "blur_kernel_size": 3, "blur_from_first_iteration": False},
        },
    },
    "trainer": {
        "accelerator": "cpu", "max_epochs": 2, "val_check_interval": 1, "num_sanity_val_steps": 0,
        "enable_checkpointing": False,
        "callbacks": [
            {"class_path": "lightning_unlearn.callbacks.GradientLayerSelection", "init_args": {"k": 2}},
            {"class_path": "lightning_unlearn.callbacks.NoiseLayerEscalation",
             "init_args": {"sigma_schedule": [0.5, 1.0], "k_schedules": {"vision": [2, 4], "text": [2, 4]}}},
            {"class_path": "lightning_unlearn.callbacks.UnlearningReport", "init_args": {"print_table": False}},
        ],
    },
}


def write_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, global_seed, classes_noise_leans_to) -> tuple[Path, dict[str, Any]]:
    base = tmp_path_factory.mktemp("suite")
    # seeded random weights, and the one of the 4 classes they give noise to: synthesis reaches it for any seed
    pl.seed_everything(global_seed)
    clip = load_clip("tiny-vit")
    torch.save(clip.model.state_dict(), base / "input.pt")
    forget = classes_noise_leans_to(clip.model, CONFIG["model"]["init_args"]["vocabulary"])[0]
    cli = main(["fit", "--config", str(write_config(base)), "--seed_everything", str(global_seed),
                "--model.init_args.pretrained", str(base / "input.pt"),
                "--model.init_args.forget_classes", json.dumps([forget]),
                "--trainer.logger.init_args.save_dir", str(base / "runs"),
                "--data.init_args.cache_dir", str(base / "cache")])
    log_dir = Path(cli.trainer.log_dir)
    return log_dir, json.loads((log_dir / "report.json").read_text())


def test_fit_report_has_every_section_with_numbers(fitted):
    log_dir, report = fitted
    ev = report["evaluation"]
    assert list(ev["templates"]) == [*TEMPLATES, "mean"]
    for entry in ev["templates"].values():
        for state in ("before", "after"):
            assert is_number(entry[state]["target"]) and is_number(entry[state]["other_classes"])
    for kind in ("image_from_text", "image_from_image"):
        for state in ("before", "after"):
            for group in ("target", "other_classes"):
                assert all(is_number(ev["retrieval"][kind][state][group][k]) for k in KS), (kind, state, group)
    assert ev["retrieval"]["image_from_image"]["queries"] == {"target": 4, "other_classes": 20}
    for group in ("real", "synthetic"):
        assert is_number(ev["verification"][group]["median_probability"])
    assert all(is_number(ev["verification"]["real"]["accuracy"][s]) for s in ("before", "after"))
    assert is_number(ev["recovery"]["linear_probe"]["before"]) and is_number(ev["recovery"]["linear_probe"]["after"])
    assert is_number(ev["recovery"]["relearn"]["steps_to_half"])
    assert all(is_number(ev["recovery"]["nearest_class_mean"][s]) for s in ("before", "after"))
    inversion = ev["recovery"]["inversion"]
    assert inversion["skipped"] is None and (inversion["steps"], inversion["images_per_class"]) == (3, 2)
    assert (inversion["template"], inversion["split"]) == ("a photo of a {}.", "train")  # never the test split
    for state in ("before", "after"):
        assert all(is_number(inversion[state][key]) for key in ("target", "other_classes", "target_no_attack"))
        # the attack's reference is the section's own: the target at the dataset's template
        assert inversion[state]["target_no_attack"] == ev["accuracy"][state]["demo_objects"]["target"]
    forget = report["classes"][0]
    assert set(ev["recovery"]["paraphrases"]["classes"][forget]) == set(json.loads(
        (Path(__file__).resolve().parents[2] / "lightning_unlearn" / "demo" / "paraphrases.json").read_text())[forget])
    paraphrases = ev["recovery"]["paraphrases"]
    # a method that trains on images puts no paraphrase in a bank: every one is held out
    assert paraphrases["in_bank"] == {forget: []} and paraphrases["held_out"]["prompts"] == len(paraphrases["classes"][forget])
    assert paraphrases["held_out"]["after"] == paraphrases["mean"]["after"]
    # the other 23 object classes, each under its own paraphrases
    assert paraphrases["retained"]["classes"] == 23 and is_number(paraphrases["retained"]["after"])
    # the template-level figures are those of the dataset holding the class, its own template first
    assert ev["target_dataset"] == "demo_objects"
    assert ev["templates"]["a photo of a {}."]["before"]["target"] == ev["accuracy"]["before"]["demo_objects"]["target"]
    assert ev["accuracy"]["before"]["demo_objects"] == report["before"]["datasets"]["demo_objects"]
    assert len(ev["trace"]["synthetic_acc"]) == report["optimizer_steps"]
    assert any(key.startswith("evaluation/after/") for key in report["timings"])


def test_every_listed_plot_opens_and_is_embedded(fitted):
    log_dir, report = fitted
    plots = report["evaluation"]["plots"]
    assert {Path(p).name for p in plots} == {"samples.png", "accuracy.png", "escalation.png", "retrieval.png"}
    markdown = (log_dir / "report.md").read_text()
    for relative in plots:
        with Image.open(log_dir / relative) as image:
            image.verify()
        assert f"]({relative})" in markdown


def numbers_under_after(tree: Any, path: tuple = ()) -> dict[tuple, float]:
    """Every number whose path passes through an ``after`` key."""
    out: dict[tuple, float] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(numbers_under_after(value, path + (key,)))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out.update(numbers_under_after(value, path + (i,)))
    elif is_number(tree) and "after" in path:
        out[path] = tree
    return out


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_validate_on_the_exported_weights_reproduces_the_after_figures(fitted, tmp_path, stage, global_seed):
    log_dir, report = fitted
    cli = main([stage, "--config", str(write_config(tmp_path)), "--seed_everything", str(global_seed),
                "--model.init_args.pretrained", str(log_dir / "unlearned.safetensors"),
                "--model.init_args.forget_classes", json.dumps(report["classes"]),
                "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])
    validated = json.loads((Path(cli.trainer.log_dir) / "report.json").read_text())
    assert validated["stage"] == stage and validated["evaluation"]["states"] == ["after"]
    fit_after = numbers_under_after(report["evaluation"])
    val_after = numbers_under_after(validated["evaluation"])
    # validate has no synthetic forget set (it would be made from the unlearned weights)
    expected = {p: v for p, v in fit_after.items() if p[:2] != ("verification", "synthetic") and p[0] != "trace"}
    assert val_after == expected
    assert validated["after"]["datasets"] == report["after"]["datasets"]
    # the relearning goal came from the exported weights' metadata: half the target accuracy before
    assert validated["evaluation"]["recovery"]["relearn"]["reference"] == report["evaluation"]["recovery"]["relearn"]["reference"]


# --- bad input: a clear error before any run -----------------------------------------------------
def run_cli(tmp_path: Path, *overrides: str) -> None:
    main(["fit", "--config", str(write_config(tmp_path)), "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
          "--data.init_args.cache_dir", str(tmp_path / "cache"), *overrides])


def cli_error(tmp_path: Path, capsys: pytest.CaptureFixture, *overrides: str) -> str:
    """The one-line error ``lightning-unlearn fit`` prints (exit status 2) for these overrides."""
    with pytest.raises(SystemExit) as exit_info:
        console_main(["fit", "--config", str(write_config(tmp_path)), "--trainer.logger.init_args.save_dir",
                      str(tmp_path / "runs"), "--data.init_args.cache_dir", str(tmp_path / "cache"), *overrides])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert not (tmp_path / "cache").exists() and not list((tmp_path / "runs").rglob("report.json"))
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("override, message", [
    (["--model.init_args.evaluation.templates", '["We can see a dog in this image"]'],
     r"evaluation.templates must be a string with exactly one '\{\}' for the class name, got 'We can see a dog"),
    (["--model.init_args.evaluation.retrieval_k", "[1, 0]"],
     r"evaluation.retrieval_k values must be positive ints, got 0"),
])
def test_bad_settings_are_one_line_errors_before_any_run(tmp_path, capsys, override, message):
    assert re.search("^lightning-unlearn: error: .*" + message, cli_error(tmp_path, capsys, *override))


def test_descriptions_that_are_not_json_fail_at_once(tmp_path, capsys):
    path = tmp_path / "descriptions.json"
    path.write_text("anchor: a hook")
    line = cli_error(tmp_path, capsys, "--data.init_args.descriptions", str(path))
    assert re.search(r"^lightning-unlearn: error: descriptions file '.*descriptions.json' is not valid JSON", line)


def test_descriptions_lacking_the_forgotten_class_fail_before_synthesis(tmp_path):
    path = tmp_path / "descriptions.json"
    path.write_text(json.dumps({"kite": ["a kite with a tail."]}))
    with pytest.raises(ConfigError, match=r"no descriptions of the forgotten class 'anchor'"):
        run_cli(tmp_path, "--data.init_args.descriptions", str(path))
    assert not (tmp_path / "cache").exists()


def test_verification_without_a_non_test_split_fails_before_synthesis(tmp_path):
    root = tmp_path / "folder"
    for c, name in enumerate(["anchor", "kite"]):
        for i in range(2):
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * c, 20 * i, 90)).save(root / name / f"{i}.jpg")
    with pytest.raises(ConfigError, match=r"real images per forgotten class from the 'train' split of 'image_folder'"):
        run_cli(tmp_path, "--data.init_args.datasets", json.dumps({"image_folder": str(root)}),
                "--data.init_args.dataset_kwargs", "null")
    assert not (tmp_path / "cache").exists()


def test_description_prompts_are_drawn_per_image_and_key_the_cache(tmp_path):
    from lightning_unlearn import UnlearningModule
    from lightning_unlearn.datamodules import SyntheticForgetDataModule
    from lightning_unlearn.evaluation.descriptions import load_descriptions

    module = UnlearningModule(model_name="tiny-vit", pretrained=None, forget_classes=["anchor", "kite"],
                              vocabulary=["anchor", "kite", "rocket"])
    module.resolve_spec({})
    plain = SyntheticForgetDataModule(cache_dir=str(tmp_path), progress=False)
    described = SyntheticForgetDataModule(cache_dir=str(tmp_path), progress=False, descriptions="demo")
    described.check_forget_spec(module.spec)
    texts, embeddings = described.draw_descriptions(module, [0, 0, 0, 1, 1, 1])
    shipped = load_descriptions("demo")
    assert all(t in shipped["anchor"] for t in texts[:3]) and all(t in shipped["kite"] for t in texts[3:])
    assert embeddings.shape == (6, module.model.text_projection.shape[1])
    assert described.draw_descriptions(module, [0, 0, 0, 1, 1, 1])[0] == texts  # seeded
    assert described.cache_path(module) != plain.cache_path(module)
    kite_only = tmp_path / "kite_only.json"
    kite_only.write_text(json.dumps({"kite": ["a kite."]}))
    with pytest.raises(ConfigError, match=r"has no descriptions of the forgotten class 'anchor'"):
        SyntheticForgetDataModule(progress=False, descriptions=str(kite_only)).check_forget_spec(module.spec)
