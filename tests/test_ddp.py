"""DDP correctness: 2 CPU ranks (gloo) against each other and against one process.

Lightning's CPU ``strategy="ddp"`` starts rank 1 by running the *script* again, so the run lives in
``tests/ddp_run.py`` and is driven with ``subprocess``; each rank writes a JSON of what it saw
(see that file). A tiny unlearning run: UnlearningModule (tiny-vit, random init, seeded) +
SyntheticForgetDataModule + GradientLayerSelection + SyntheticAccuracyStopping +
NoiseLayerEscalation + UnlearningReport.

What is shown:

- ``test_ddp_ranks_agree`` (default run): both ranks keep the same tensors at every step, end with
  identical weights, train on the identical synthetic set, which only rank 0 made (in
  ``prepare_data``; rank 1 loaded the cache), log the synthetic accuracy of the *whole* set
  although each validates half of it (the metric is reduced), and only rank 0 wrote files: one
  report.json/report.md/export, no temporary files.
- ``test_ddp_matches_single_process_*`` (slow): the final weights of the DDP run against a
  single-process run with the same seed. Tolerance: ``WEIGHT_ATOL`` (below).

Known bugs (see docs/multi_gpu.md, "DDP versus one device"): with the code as it is, DDP does
NOT reach the single-process weights (max abs difference about 1e-2 on this run, and a different
accuracy history) for two reasons, each confirmed by switching it off in ``ddp_run.py``:

1. Lightning's automatic ``DistributedSampler`` always *shuffles* training data (Lightning sets
   ``shuffle=True`` for the training stage whatever the DataLoader says), so a DDP step trains on
   a random draw of the repeated set, with repeats, instead of the whole set split across ranks.
   ``--sharded-sampler`` gives the DataLoader an unshuffled DistributedSampler (the proposed fix
   in ``SyntheticForgetDataModule.train_dataloader``).
2. ``objectives.perturbed_features`` clamps perturbed images to ``[images.min(), images.max()]``
   of the *batch*: a rank's shard has a narrower range than the whole batch. ``--no-clamp`` turns
   the clamp off (the proposed fix: clamp to each image's own range).

With both switched, the difference is 2e-8. ``test_ddp_matches_single_process_as_is`` is an
``xfail(strict=True)``: it starts failing (XPASS) once both bugs are fixed, and the marker must go.
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

SCRIPT = Path(__file__).resolve().parent / "ddp_run.py"
REPO = SCRIPT.parent.parent
VOCAB = ("cat", "dog", "car", "tree")

#: Max abs difference allowed between the final weights of a 2-rank DDP run and a one-process run.
#: Both compute the gradient of the same global mean loss, summed in a different order (gloo's
#: all-reduce of two half-batch means vs one full-batch mean): float32 relative differences of
#: ~1e-7 in the gradient. Adam's update is lr * m / (sqrt(v) + eps), bounded by lr per element
#: and per step, so a relative gradient difference d moves a weight by about lr * d per step:
#: 8 steps * 2e-3 * 1e-6 = 2e-8, which is what we measure (2.0e-8). 1e-5 leaves a factor of 500
#: for reduction-order noise while staying 200x below the smallest real discrepancy seen
#: (1.9e-3, the batch-range clamp alone).
WEIGHT_ATOL = 1e-5


def run_script(out: Path, cache: Path, *args: str, timeout: int = 300) -> dict[int, dict]:
    """Run ``ddp_run.py``; return its per-rank records."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    command = [sys.executable, str(SCRIPT), "--out", str(out), "--cache", str(cache), *args]
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
    # The same synthetic set, made once (prepare_data on local rank 0), loaded from the cache by rank 1.
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
        "report.json", "report.md", "unlearned.safetensors"]
    assert sorted(p.name for p in report_dir.iterdir()) == ["report.json", "report.md", "unlearned.safetensors"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "temporary files left behind"
    report = json.loads((report_dir / "report.json").read_text())
    assert report["optimizer_steps"] == r0["global_step"]
    assert report["synthetic_acc_history"] == [entry["logged"] for entry in r0["acc"]]


def test_ddp_ranks_agree(tmp_path):
    """Fast variant: 2 ranks, 2 optimizer steps, vocabulary only; the report goes to the trainer's
    log dir (UnlearningReport without output_dir, as with the CLI)."""
    out, cache = tmp_path / "ddp", tmp_path / "cache"
    records = run_script(out, cache, "--max-epochs", "1", "--steps-per-epoch", "2")
    assert_ranks_agree(records, out)
    assert records[0]["made_synthetic"] == 1  # an empty cache: rank 0 made the set, rank 1 did not
    assert len(list(cache.glob("*.pt"))) == 1 and not list(cache.glob(".*"))


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """The DDP and single-process runs (4 epochs of 2 steps, with an evaluation dataset), as is
    and with the two DDP-vs-single discrepancies switched off."""
    base = tmp_path_factory.mktemp("ddp_vs_single")
    root = eval_folder(base / "eval")
    cache = base / "cache"
    common = ("--eval-root", str(root), "--explicit-output")
    single = ("--devices", "1", "--strategy", "auto")
    runs = {
        "ddp": (base / "ddp", common),
        "single": (base / "single", common + single),
        "ddp_fixed": (base / "ddp_fixed", common + ("--sharded-sampler", "--no-clamp")),
        "single_fixed": (base / "single_fixed", common + single + ("--sharded-sampler", "--no-clamp")),
    }
    return {name: (out, run_script(out, cache, *args)) for name, (out, args) in runs.items()}


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


@pytest.mark.slow
def test_ddp_matches_single_process_once_shards_are_exact(ddp_runs):
    """With an unshuffled sharded sampler and no batch-range clamp, DDP equals one process."""
    ddp_out, ddp = ddp_runs["ddp_fixed"]
    single_out, single = ddp_runs["single_fixed"]
    assert_ranks_agree(ddp, ddp_out)
    # Every step trains on the whole set, split across the ranks.
    for step, (a, b) in enumerate(zip(ddp[0]["indices"], ddp[1]["indices"])):
        assert sorted(i % 8 for i in a + b) == list(range(8)), f"step {step}: {a} + {b}"
    assert ddp[0]["selected"] == single[0]["selected"]
    assert [e["logged"] for e in ddp[0]["acc"]] == [e["logged"] for e in single[0]["acc"]]
    diff = max_abs_diff(weights(ddp_out), weights(single_out))
    print(f"DDP (fixed shards) vs single process: max abs weight difference {diff:.3g}")
    assert diff <= WEIGHT_ATOL


@pytest.mark.slow
def test_ddp_matches_single_process_as_is(ddp_runs):
    ddp_out, ddp = ddp_runs["ddp"]
    single_out, single = ddp_runs["single"]
    diff = max_abs_diff(weights(ddp_out), weights(single_out))
    print(f"DDP vs single process, code as is: max abs weight difference {diff:.3g}")
    assert ddp[0]["selected"] == single[0]["selected"]
    assert [e["logged"] for e in ddp[0]["acc"]] == [e["logged"] for e in single[0]["acc"]]
    assert diff <= WEIGHT_ATOL
