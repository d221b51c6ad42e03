"""Synthesis of 64 images batched (``batch_size=None``) vs one image at a time (``batch_size=1``,
as the published code does), on the tiny random-init open_clip models of ``tests/model_configs``.

Two kinds of run, same model, settings, seed and CPU threads for both modes:

- fixed work: target 0.999 (floor 0.999), ``max_iterations=N``, ``max_restarts=0``; no image can
  reach the goal on a random model, so every image does exactly N ascent iterations and
  ``SynthesisError`` is caught. The time ratio is a fair per-iteration throughput comparison.
- real goal: "dog"/"car" to 0.35 (floor 0.3), 60 iterations per attempt, 2 restarts, as in
  tests/test_synthesis.py. The two modes draw their noise in a different order, so their images
  and work differ; the table gives the iterations actually run.

Each (model, mode) is timed ``--repeats`` times, interleaved; the table shows medians. The
real-goal run is for the ViT only by default: the random ResNet tower hardly responds to its input
(every noise image gets almost the same probabilities), so half its images fail the goal.

``OMP_WAIT_POLICY`` defaults to PASSIVE here (set it to ACTIVE to override): on a shared 2-core
machine, spinning OpenMP threads that wait for a descheduled partner made one tiny
forward/backward with 2 threads up to ~100x slower than with 1 thread.

    python benchmarks/bench_synthesis.py [--quick] [--threads 2] [--models tiny-vit,tiny-rn]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by libgomp when torch loads

import argparse
import dataclasses
import logging
import platform
import statistics
import time
from pathlib import Path

import open_clip
import torch

from lightning_unlearn.clip.loading import load_clip
from lightning_unlearn.maths.synthesis import SynthesisConfig, SynthesisError, SyntheticSet, synthesize
from lightning_unlearn.maths.zeroshot import encode_classes

ROOT = Path(__file__).resolve().parents[1]
CLASSNAMES = ["cat", "dog", "car", "tree"]
DOG, CAR = 1, 2
BASE = SynthesisConfig(step_size=10.0, jitter=4)  # 32 px images: the paper's 25 / 16 are for 224 px


def load(name: str):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clip = load_clip(name, pretrained=None)
    with torch.no_grad():
        classes = encode_classes(clip.model, clip.tokenizer, CLASSNAMES, ["a photo of a {}."])
    return clip, classes


def timed(clip, classes, index, cfg: SynthesisConfig) -> tuple[float, SyntheticSet, bool]:
    start = time.perf_counter()
    try:
        res, ok = synthesize(clip.model.encode_image, classes, index, clip.image_size, clip.mean, clip.std, cfg, seed=0), True
    except SynthesisError as err:
        res, ok = err.result, False
    return time.perf_counter() - start, res, ok


def work(res: SyntheticSet, cfg: SynthesisConfig) -> int:
    """Ascent iterations run in all: the kept attempt plus max_iterations per restart."""
    return int(res.iterations.sum()) + sum(res.info["restarts"]) * cfg.max_iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 images, fewer iterations, 1 repeat")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=None, help="images per run (default 64, quick 16)")
    parser.add_argument("--iterations", type=int, default=None, help="fixed-work iterations (default 20, quick 5)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per mode (default 3, quick 1)")
    parser.add_argument("--models", default="tiny-vit,tiny-rn")
    parser.add_argument("--real-goal-models", default="tiny-vit", help="models also run to a real goal ('' for none)")
    args = parser.parse_args()
    images = args.images or (16 if args.quick else 64)
    iterations = args.iterations or (5 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 3)
    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "no pretrained weights" warning
    open_clip.add_model_config(ROOT / "tests" / "model_configs")

    fixed = dataclasses.replace(BASE, target_probability=0.999, min_probability=0.999, max_iterations=iterations, max_restarts=0)
    real = dataclasses.replace(BASE, target_probability=0.35, min_probability=0.3, max_iterations=60, max_restarts=2)
    index = [DOG, CAR] * (images // 2) + [DOG] * (images % 2)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, {images} images, "
          f"fixed work = {iterations} iterations/image, {repeats} repeats (median)")
    header = f"{'model':9} {'run':9} {'mode':8} {'seconds':>8} {'s/image':>8} {'iters':>6} {'ms/iter/img':>11} {'reached':>8}"
    print(header)
    print("-" * len(header))
    ratios = {}
    for name in args.models.split(","):
        clip, classes = load(name)
        # Warm-up: first calls pay lazy initialisation (oneDNN primitives, allocator).
        timed(clip, classes, index[:2], dataclasses.replace(fixed, max_iterations=2))
        timed(clip, classes, index[:2], dataclasses.replace(fixed, max_iterations=2, batch_size=1))
        runs = [("fixed", fixed)] + ([("real-goal", real)] if name in args.real_goal_models.split(",") else [])
        for kind, cfg in runs:
            times: dict[str, list[float]] = {"batched": [], "single": []}
            last = {}
            for _ in range(repeats):
                for mode, batch_size in (("batched", None), ("single", 1)):
                    c = dataclasses.replace(cfg, batch_size=batch_size)
                    seconds, res, ok = timed(clip, classes, index, c)
                    times[mode].append(seconds)
                    last[mode] = (res, c)
            for mode in ("batched", "single"):
                res, c = last[mode]
                med = statistics.median(times[mode])
                its = work(res, c)
                if kind == "fixed":
                    assert its == images * iterations, "fixed-work run did not do the same work"
                print(f"{name:9} {kind:9} {mode:8} {med:8.2f} {med / images:8.4f} {its:6d} "
                      f"{1000 * med / its:11.3f} {int(res.reached.sum()):5d}/{images}")
            ratios[(name, kind)] = statistics.median(times["single"]) / statistics.median(times["batched"])
            if kind == "real-goal":  # per-iteration ratio (the work differs between the modes)
                per_it = {m: statistics.median(times[m]) / work(*last[m]) for m in times}
                ratios[(name, "real-goal/iter")] = per_it["single"] / per_it["batched"]
    print()
    for (name, kind), r in ratios.items():
        print(f"{name:9} {kind:15} single / batched time = {r:6.2f}x")
    parts = " ".join(f"{name}:{kind}={r:.2f}x" for (name, kind), r in ratios.items())
    print(f"RATIO batched speed-up over batch_size=1 (target >= 5x on fixed work): {parts}")


if __name__ == "__main__":
    main()
