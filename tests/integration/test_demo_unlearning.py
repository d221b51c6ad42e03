"""The demo path end to end on a reduced setting.

A demo CLIP trained for fewer steps (``demo-clip-rn``, the fast one, through the real cache, in a
temporary folder) forgets one object class with ``configs/demo.yaml`` run through the CLI, its
``demo-clip-lit`` swapped for it (pretraining that one is minutes), on smaller synthetic and
evaluation sets. What is asserted holds on any machine:

- the reduced CLIP is a usable zero-shot classifier, with a margin measured over 5 pretraining
  seeds and 1 and 2 threads (docs/demo_world.md, "Across machines"); this is this suite's check
  that pretraining learns;
- the run goes through the whole path (synthesis, unlearning with the demo's callbacks, the
  evaluation before and after, report and export) and writes a consistent report.

How much the class is forgotten, and at what cost to the other classes, depends on where a
few dozen optimizer steps of a tiny CLIP end, which differs between CPUs (docs/demo.md): that is
measured by ``benchmarks/bench_demo.py``, not asserted here.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch

from lightning_unlearn.cli import main
from lightning_unlearn.demo import DEMO_MODEL_NAME
from lightning_unlearn.demo.cache import ensure_demo_clip

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
#: Pretraining steps of the reduced demo CLIP (the shipped one trains 600).
REDUCED_STEPS = 300
#: The stop reasons a fit run can report (report.stop_reason).
STOP_REASONS = {"goal_reached", "schedule_exhausted", "non_finite_loss", "max_epochs_or_steps"}


@pytest.fixture(scope="module")
def reduced_demo_clip(tmp_path_factory: pytest.TempPathFactory, global_seed: int) -> Path:
    # trains on one thread and restores the caller's thread count itself
    return ensure_demo_clip(seed=global_seed, steps=REDUCED_STEPS, cache_dir=tmp_path_factory.mktemp("cache"),
                            progress=False)


def test_reduced_demo_clip_is_a_usable_zero_shot_classifier(reduced_demo_clip: Path) -> None:
    manifest = json.loads(reduced_demo_clip.with_suffix(".json").read_text())
    accuracy = manifest["zero_shot_accuracy"]
    # Chance is 1/24 (objects) and 1/10 (textures). Over pretraining seeds 0-4 on 1 thread, and
    # seeds 0-1 on 2 threads (other weights), the reduced CLIP measured objects 0.457-0.619 and
    # textures 0.576-0.766 (docs/demo_world.md, "Across machines"): the bars sit 0.2 below the
    # lowest and still far above chance. (The bars this test had before, 0.45 / 0.6, failed seed 2.)
    assert accuracy["objects"] > 0.25 and accuracy["textures"] > 0.35, accuracy


def test_demo_config_runs_the_whole_path_and_writes_a_consistent_report(
    reduced_demo_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, global_seed: int
) -> None:
    monkeypatch.setenv("LIGHTNING_UNLEARN_CACHE", str(tmp_path / "cache"))
    per_class = json.dumps({"demo_objects": {"num_per_class": 20}, "demo_textures": {"num_per_class": 20}})
    cli = main([
        "fit", "--config", str(CONFIG), "--seed_everything", str(global_seed),
        "--model.init_args.model_name", DEMO_MODEL_NAME,  # the shipped config's demo-clip-lit is not for a fast test
        "--model.init_args.pretrained", str(reduced_demo_clip),
        "--model.init_args.forget_classes", '["anchor"]',
        "--model.init_args.method.init_args.num_perturbations", "10",
        "--data.init_args.images_per_class", "32",
        "--data.init_args.dataset_kwargs", per_class,
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
    ])
    log_dir = Path(cli.trainer.log_dir)
    report = json.loads((log_dir / "report.json").read_text())
    assert report["classes"] == ["anchor"] and report["stop_reason"] in STOP_REASONS, report["stop_reason"]
    assert report["forget_set"]["kind"] == "synthetic" and report["forget_set"]["images"] == 32
    # every synthetic image was accepted as the class: before unlearning the set is recognised
    assert report["before"]["synthetic_acc"] == 1.0
    history = report["synthetic_acc_history"]
    assert len(history) == report["optimizer_steps"] > 0 and all(0.0 <= v <= 1.0 for v in history)
    for when in ("before", "after"):
        datasets = report[when]["datasets"]
        assert set(datasets) == {"demo_objects", "demo_textures"}, when
        assert datasets["demo_objects"]["num_images"] == 24 * 20 and datasets["demo_textures"]["num_images"] == 10 * 20
        for name, result in datasets.items():
            values = [result[k] for k in ("accuracy", "other_classes") if result.get(k) is not None]
            assert values and all(0.0 <= v <= 1.0 for v in values), (when, name, result)
        assert 0.0 <= datasets["demo_objects"]["target"] <= 1.0
        assert datasets["demo_textures"].get("target") is None  # nothing of that domain is forgotten
    # The export is the run's final model, in a file plain open_clip loads.
    exported, _, _ = open_clip.create_model_and_transforms(
        DEMO_MODEL_NAME, pretrained=str(log_dir / "unlearned.safetensors"))
    for (name, a), (_, b) in zip(exported.state_dict().items(), cli.model.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
