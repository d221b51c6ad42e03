"""DDP correctness: 2 CPU ranks (gloo) against each other and against one process.

Lightning's CPU ``strategy="ddp"`` starts rank 1 by running the *script* again, so the run lives in
``tests/ddp_run.py`` and is driven with ``subprocess``; each rank writes a JSON of what it saw
(see that file). A tiny unlearning run: UnlearningModule (tiny-vit, random init, seeded) +
SyntheticForgetDataModule (8 synthetic images) + GradientLayerSelection +
SyntheticAccuracyStopping + NoiseLayerEscalation + UnlearningReport.

What is shown:

- ``test_ddp_ranks_agree`` (default run, 1 epoch of 2 steps): both ranks select the same tensors
  at every step and end with identical weights; every step trains on the whole synthetic set,
  split across the ranks without repeats (rank 0 images 0, 2, 4, 6; rank 1 images 1, 3, 5, 7:
  the DataModule's own unshuffled ``DistributedSampler``, which Lightning keeps); both train on
  the identical synthetic set, which only rank 0 made (rank 1 received it by broadcast); the logged synthetic accuracy is that of the *whole* set although each rank validates
  half of it (the metric is reduced); and only rank 0 wrote files: one
  report.json/report.md/export, no temporary files.
- ``test_ddp_full_run_ranks_agree_and_reduce_evaluation`` (slow, 4 epochs of 2 steps with an
  evaluation dataset): the same, and the evaluation before unlearning equals the single-process
  one with exact image counts (each rank evaluates every second image, confusion matrices summed).
- ``test_ddp_matches_single_process`` (slow): with the published loss reduction (a sum over the
  global batch / 4N: each rank scales its shard's sum by the world size, so DDP's gradient average
  is the one-process gradient), the DDP run and a one-process run with the same seed
  train on the same images at every step, select the same tensors, log the same synthetic
  accuracy history and escalate the same way, and their final weights differ by at most
  ``WEIGHT_ATOL`` = 1e-5 (max abs difference over all tensors). Where a decision is a near tie
  (``SCORE_NEAR_TIE``, ``LOGIT_NEAR_TIE``), rounding may take it differently in the two runs: they
  are then compared up to it.

Why a tolerance and not equality: both runs compute the gradient of the same global mean loss,
but summed in a different order (gloo's all-reduce of two half-batch mean gradients against one
full-batch mean, forward passes on 4 instead of 8 images), so the per-step losses agree only to
float32 rounding (~1e-7 relative) and Adam carries that into the weights. Measured on this run:
max abs weight difference 2.2e-7, against ``WEIGHT_ATOL`` = 1e-5 (the reasoning is at
``WEIGHT_ATOL``). Anything that makes DDP compute a *different* loss (a shard that is not the
whole set, a per-batch quantity such as the former batch-range clamp of perturbed images) shows up
orders of magnitude above it (1.9e-3 to 1.1e-2 before the fixes), and a flipped selection or
escalation decision fails the exact comparisons before the weights are even compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "ddp_run.py"
REPO = SCRIPT.parent.parent
VOCAB = ("cat", "dog", "car", "tree")
IMAGES = 8  #: synthetic images: ddp_run.py's 8 images per class x 1 forgotten class ("dog")

#: Max abs difference allowed between the final weights of a 2-rank DDP run and a one-process run
#: (8 Adam steps, lr 2e-3). In exact arithmetic the two are equal: each rank's shard is half of the
#: whole set, each image gets the same noise and the same per-image clamp on either side, and DDP's
#: average of two half-batch mean gradients is the full-batch mean. In float32 the sums run in a
#: different order (gloo's all-reduce; 4-image instead of 8-image forward passes), so the per-step
#: losses agree to ~1e-7 relative and the weights drift apart by rounding only. Adam's update
#: lr * m / (sqrt(v) + eps) is bounded by lr per element and step but is most sensitive where a
#: gradient element is near 0 (its relative rounding error is largest). Measured: 2.2e-7 (on
#: transformer.resblocks.0.mlp.c_proj.bias; 2e-8 was measured earlier with the clamp off),
#: about 1.4e-5 of the largest possible movement 8 * lr = 1.6e-2. 1e-5 leaves a factor of 45 for
#: other hardware and thread counts while staying 190x below the smallest real discrepancy seen
#: (1.9e-3: perturbed images clamped to the range of the rank's shard instead of their own, before
#: that was fixed in objectives.perturbed_features; 1.1e-2 with the shuffling sampler as well).
WEIGHT_ATOL = 1e-5


def run_script(out: Path, cache: Path, *args: str, seed: int = 0, timeout: int = 300) -> dict[int, dict]:
    """Run ``ddp_run.py`` (forgetting the class the seeded random model leans to); return its per-rank records."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    command = [sys.executable, str(SCRIPT), "--out", str(out), "--cache", str(cache), "--seed", str(seed), *args]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(command)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    records = {}
    for path in sorted((out / "ranks").glob("rank*.json")):
        record = json.loads(path.read_text())
        records[record["rank"]] = record
    return records


def weights(out: Path, rank: int = 0) -> dict[str, torch.Tensor]:
    return torch.load(out / "ranks" / f"weights{rank}.pt", weights_only=True)


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def eval_folder(root: Path) -> Path:
    """An image_folder dataset of the vocabulary's classes, 3 images each (12: even across 2 ranks)."""
    for c, name in enumerate(VOCAB):
        (root / name).mkdir(parents=True)
        for i in range(3):
            pixels = np.random.default_rng(10 * c + i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def assert_whole_set_every_step(records: dict[int, dict]) -> None:
    """Every optimizer step trains on every synthetic image exactly once, split across the ranks."""
    steps = [sum((records[r]["indices"][step] for r in sorted(records)), []) for step in range(
        len(records[0]["indices"]))]
    assert len(steps) == records[0]["global_step"]
    for step, indices in enumerate(steps):
        assert sorted(indices) == list(range(IMAGES)), f"step {step}: {indices}"
    if len(records) == 2:  # unshuffled shards: rank r holds images r, r + 2, ...
        for step in range(len(steps)):
            assert records[0]["indices"][step] == list(range(0, IMAGES, 2))
            assert records[1]["indices"][step] == list(range(1, IMAGES, 2))


def assert_ranks_agree(records: dict[int, dict], out: Path) -> None:
    assert sorted(records) == [0, 1], "expected one record per rank"
    r0, r1 = records[0], records[1]
    assert r0["strategy"] == "DDPStrategy" and r0["world_size"] == r1["world_size"] == 2
    # The same tensors are selected on both ranks at every optimizer step.
    assert r0["selected"] and len(r0["selected"]) == r0["global_step"]
    assert r0["selected"] == r1["selected"]
    assert r0["selection_counts"] == r1["selection_counts"]
    # The same weights at the end (and the same escalation path).
    assert r0["weights_sha"] == r1["weights_sha"]
    assert (r0["sigma"], r0["sigma_history"], r0["restored_epochs"]) == (r1["sigma"], r1["sigma_history"],
                                                                          r1["restored_epochs"])
    # The same synthetic set, made once by rank 0 and broadcast to rank 1.
    assert r0["synthetic_sha"] == r1["synthetic_sha"]
    assert r1["made_synthetic"] == 0 and r0["made_synthetic"] <= 1
    # Each rank validates half of the set; the logged accuracy is that of the whole set on both.
    assert r0["acc"] == r1["acc"] and r0["acc"]
    for entry in r0["acc"]:
        assert entry["logged"] == pytest.approx(entry["whole_set"], abs=1e-6)
    # Rank 0 alone wrote files: the cache, the export and the report, once, with no temporary file.
    assert r1["writes"] == []
    report_dir = out / "report"
    assert sorted(Path(p).name for p in r0["writes"] if Path(p).parent == report_dir) == [
        "report.json", "report.md", "unlearned", "unlearned.safetensors"]
    assert sorted(p.name for p in report_dir.iterdir()) == ["report.json", "report.md", "unlearned",
                                                            "unlearned.safetensors"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "temporary files left behind"
    report = json.loads((report_dir / "report.json").read_text())
    assert report["optimizer_steps"] == r0["global_step"]
    assert report["synthetic_acc_history"] == [entry["logged"] for entry in r0["acc"]]


def test_ddp_ranks_agree(tmp_path, global_seed):
    """Fast variant: 2 ranks, 2 optimizer steps, vocabulary only; the report goes to the trainer's
    log dir (UnlearningReport without output_dir, as with the CLI)."""
    out, cache = tmp_path / "ddp", tmp_path / "cache"
    records = run_script(out, cache, "--max-epochs", "1", "--steps-per-epoch", "2", seed=global_seed)
    assert_ranks_agree(records, out)
    assert_whole_set_every_step(records)
    assert records[0]["made_synthetic"] == 1  # an empty cache: rank 0 made the set, rank 1 did not
    assert len(list(cache.glob("*.pt"))) == 1 and not list(cache.glob(".*"))


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, global_seed):
    """The DDP run and the single-process run (4 epochs of 2 steps, with an evaluation dataset)."""
    base = tmp_path_factory.mktemp("ddp_vs_single")
    root = eval_folder(base / "eval")
    cache = base / "cache"
    common = ("--eval-root", str(root), "--explicit-output")
    runs = {
        "ddp": (base / "ddp", common),
        "single": (base / "single", common + ("--devices", "1", "--strategy", "auto")),
    }
    return {name: (out, run_script(out, cache, *args, seed=global_seed)) for name, (out, args) in runs.items()}


@pytest.mark.slow
def test_ddp_full_run_ranks_agree_and_reduce_evaluation(ddp_runs):
    out, records = ddp_runs["ddp"]
    assert_ranks_agree(records, out)
    _, single = ddp_runs["single"]
    # The evaluation before unlearning (same initial weights) is the single-process one: each rank
    # evaluates every second image and the confusion matrices are summed (no padding).
    report, single_report = records[0]["report"], single[0]["report"]
    assert report["before"] == single_report["before"]
    assert report["before"]["datasets"]["image_folder"]["num_images"] == 12
    assert report["after"]["datasets"]["image_folder"]["num_images"] == 12
    assert records[0]["synthetic_sha"] == single[0]["synthetic_sha"]


#: A selection whose k-th and (k+1)-th scores are closer than this (relative), or a validation with an
#: image whose two best logits are closer than ``LOGIT_NEAR_TIE``, is a near tie: float32 rounding
#: (the ~1e-7 relative differences above, grown by a few Adam steps) may decide it either way.
SCORE_NEAR_TIE = 1e-3
LOGIT_NEAR_TIE = 1e-2


def first_divergence(ddp: dict, single: dict) -> tuple[str, int] | None:
    """The first decision in which the two runs differ: ("selection" | "accuracy", step index), or None."""
    for step, (a, b) in enumerate(zip(ddp["selected"], single["selected"])):
        if a != b:
            return "selection", step
        if step < min(len(ddp["acc"]), len(single["acc"])) and ddp["acc"][step]["logged"] != single["acc"][step]["logged"]:
            return "accuracy", step
    return None


@pytest.mark.slow
def test_ddp_matches_single_process(ddp_runs):
    """DDP takes the single-process steps: same images, selections, accuracies, escalation; weights
    equal up to float32 reduction order (``WEIGHT_ATOL``).

    Both runs are this machine's, compared with each other. A decision taken at a near tie (two
    tensors' scores, or an image's two best classes, equal to within rounding) may go either way
    in the two runs, after which they follow different paths: then the runs are compared up to that
    decision, and the test checks that it was indeed a near tie.
    """
    ddp_out, ddp = ddp_runs["ddp"]
    single_out, single = ddp_runs["single"]
    assert single[0]["world_size"] == 1 and ddp[0]["world_size"] == 2
    assert_whole_set_every_step(ddp)
    assert_whole_set_every_step(single)
    d, s = ddp[0], single[0]
    divergence = first_divergence(d, s)
    steps = len(d["selected"]) if divergence is None else divergence[1] + 1
    # The loss of every step up to the divergence: each rank's loss is world_size x its shard's sum / 4N,
    # so the ranks' mean is the whole set's sum / 4N (rounding aside).
    for step, (a, b, c) in enumerate(zip(ddp[0]["losses"][:steps], ddp[1]["losses"][:steps], s["losses"][:steps])):
        assert (a + b) / 2 == pytest.approx(c, rel=1e-5), f"step {step}"
    if divergence is not None:
        kind, step = divergence
        if kind == "selection":
            gap = min(d["selection_gaps"][step], s["selection_gaps"][step])
            assert gap < SCORE_NEAR_TIE, f"selections differ at step {step} without a near tie (gap {gap:.3g})"
        else:
            margin = min(d["acc_margins"][step], s["acc_margins"][step])
            assert margin < LOGIT_NEAR_TIE, f"accuracies differ after step {step} without a near tie ({margin:.3g})"
        print(f"DDP vs single process: identical up to a near tie ({kind}) at step {step}")
        return
    assert d["global_step"] == s["global_step"] > 2
    assert d["selection_counts"] == s["selection_counts"]
    assert (d["sigma_history"], d["restored_epochs"]) == (s["sigma_history"], s["restored_epochs"])
    diff = max_abs_diff(weights(ddp_out), weights(single_out))
    print(f"DDP vs single process: max abs weight difference {diff:.3g}")
    assert diff <= WEIGHT_ATOL
