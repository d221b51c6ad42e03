"""Synthesis order on the demo CLIP: ``mode: batched`` vs ``mode: sequential`` (the published generator).

With one target for the whole run (``threshold_decay: global``, as published), the order in which
attempts fail decides the target each image is accepted at. The published generator makes one
image at a time; batched synthesis lowers the target once per image that times out in the same
iteration, while the images next to them are judged against the old target. This script makes the
same images both ways on the demo CLIP (``demo-clip-lit`` by default, ``--model demo-clip-rn`` for the
demo CLIP until 2026-12-07; built into the cache on first use, 1-4 min) and prints, per
mode and class: how many images were accepted at each target, the mean target and probability, the
failed attempts, and the wall time.

Settings: configs/demo.yaml's synthesis (tuned for the 32 px demo CLIP) with the published
``threshold_decay: global``, a start target of 0.995 and 3 iterations per attempt, so that attempts
fail and the decay shows (with the demo's own 0.9 and 300 iterations no attempt fails and the two
modes differ in speed only: ``--target 0.9 --max-iterations 300``).

    python benchmarks/bench_synthesis_order.py [--classes anchor kite] [--images 64] [--max-iterations 3]
        [--target 0.995] [--threads 2] [--seed 0] [--model demo-clip-lit]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by libgomp when torch loads

import argparse
import collections
import platform
import time
from dataclasses import replace

import torch

from lightning_unlearn.compare import load_fit_config
from lightning_unlearn.datamodules import EvaluationDataModule
from lightning_unlearn.clip.loading import build_pretrained, eval_mode, load_clip
from lightning_unlearn.maths.synthesis import SynthesisConfig, SynthesisError, synthesize
from lightning_unlearn.maths.zeroshot import encode_classes


def demo_synthesis(target: float, max_iterations: int) -> SynthesisConfig:
    """configs/demo.yaml's synthesis with the published global decay."""
    fields = dict(load_fit_config("demo")["data"]["init_args"]["synthesis"])
    fields.update(threshold_decay="global", target_probability=target, max_iterations=max_iterations,
                  max_restarts=200)
    return SynthesisConfig(**fields)


def histogram(values: torch.Tensor) -> str:
    counts = collections.Counter(round(float(v), 3) for v in values)
    return " ".join(f"{t:.3f}:{n}" for t, n in sorted(counts.items(), reverse=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", nargs="+", default=["anchor", "kite"])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--max-iterations", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.995)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="demo-clip-lit", choices=["demo-clip-lit", "demo-clip-rn"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    clip = load_clip(args.model, "demo-world")
    build_pretrained(clip)  # trains the demo CLIP into the cache on first use
    vocabulary = EvaluationDataModule(datasets={"demo_objects": None}).dataset_vocabulary("demo_objects")
    names = list(vocabulary.classnames)
    with torch.no_grad(), eval_mode(clip.model):
        classes = encode_classes(clip.model, clip.tokenizer, names, list(vocabulary.templates))
    base = demo_synthesis(args.target, args.max_iterations)
    print(f"demo CLIP, {args.images} images per class, target {base.target_probability} (global decay "
          f"{base.probability_decay}, floor {base.min_probability}), {base.max_iterations} iterations per "
          f"attempt, seed {args.seed}; {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads} threads")
    print(f"{'class':8} {'mode':10} {'s':>6} {'s/image':>7} {'failed':>6} {'mean target':>11} {'mean p':>6}  "
          "accepted at target:count")
    for name in args.classes:
        index = [names.index(name)] * args.images
        for mode in ("batched", "sequential"):
            start = time.perf_counter()
            with eval_mode(clip.model):
                try:
                    made = synthesize(clip.model.encode_image, classes, index, clip.image_size, clip.mean,
                                      clip.std, replace(base, mode=mode), seed=args.seed)
                except SynthesisError as err:
                    made = err.result
            seconds = time.perf_counter() - start
            kept = made.reached
            print(f"{name:8} {mode:10} {seconds:6.1f} {seconds / args.images:7.3f} {sum(made.info['restarts']):6d} "
                  f"{float(made.target[kept].mean()):11.3f} {float(made.probability[kept].mean()):6.3f}  "
                  f"{histogram(made.target[kept])}")


if __name__ == "__main__":
    main()
