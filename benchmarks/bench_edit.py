"""The text-projection edit: prompt encoding and solve time, and peak memory, on CPU.

Settings:
- ``demo``: the demo CLIP (``demo-clip-lit``: the packaged MiniLM text tower, width 384, 6 layers,
  context 32; built and cached on first use), forgetting one object class with the shipped defaults (``TextProjectionEdit()``) against
  the demo's two vocabularies (24 objects, 10 textures) and the ImageNet generic vocabulary.
  ``demo-rn``: the same on ``demo-clip-rn`` (text width 64, context 16), the demo CLIP until
  2026-12-07.
- ``rn50``: a random-init RN50 (``load_clip("RN50", None)``: text width 512, 12 blocks, context
  77), the shipped defaults, one class forgotten from a 100-class vocabulary (the first 100
  ImageNet names under "a photo of a {}.", standing in for an evaluation dataset), plus the
  ImageNet generic vocabulary. The real configs (``configs/rn50_*_edit.yaml``) retain about 520
  classes of four datasets, which adds about 420 x 8 prompts.

Encoding is timed cold (no feature cache) and, for the retain prompts, once more from the cache.
``trim`` shows what cutting each batch after its longest prompt saves (causal towers only):
the same 256 prompts encoded with and without it. Peak memory is the process's peak resident
set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after each setting; tracemalloc would
not see torch's allocations.

    python benchmarks/bench_edit.py [--models demo,rn50] [--threads 1]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/README.md (shared 2-core CPUs)

import argparse
import logging
import resource
import tempfile
import time

import torch

from lightning_unlearn.methods.edit import EditSettings, build_edit_problem, solve_edit
from lightning_unlearn.clip.loading import load_clip
from lightning_unlearn.maths.promptbank import imagenet_classnames
from lightning_unlearn.maths.forget_spec import Vocabulary
from lightning_unlearn.clip.text_projection import pooled_text_features


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def setting(name: str) -> tuple[str, str | None, str, list[Vocabulary]]:
    """(model name, pretrained tag, class to forget, vocabularies) of a benchmark setting."""
    if name in ("demo", "demo-rn"):
        from lightning_unlearn.demo import world

        vocabularies = [Vocabulary(world.OBJECT_CLASSES, world.OBJECT_TEMPLATES, "demo_objects"),
                        Vocabulary(world.TEXTURE_CLASSES, world.TEXTURE_TEMPLATES, "demo_textures")]
        return ("demo-clip-lit" if name == "demo" else "demo-clip-rn"), "demo-world", "kite", vocabularies
    if name == "rn50":
        names = tuple(imagenet_classnames()[:100])
        return "RN50", None, names[0], [Vocabulary(names, ("a photo of a {}.",), "imagenet100")]
    raise SystemExit(f"unknown model setting {name!r}; known: demo, demo-rn, rn50")


def bench(name: str) -> dict[str, float]:
    model_name, pretrained, forget, vocabularies = setting(name)
    clip = load_clip(model_name, pretrained)
    settings = EditSettings()
    with tempfile.TemporaryDirectory() as cache:
        kwargs = dict(forget_names=[forget], forget_prompts=[f"A picture of {forget}"], vocabularies=vocabularies,
                      settings=settings, forget_prompt_template="A picture of {}", cache_dir=cache)
        start = time.perf_counter()
        problem = build_edit_problem(clip.model, clip.tokenizer, **kwargs)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        build_edit_problem(clip.model, clip.tokenizer, **kwargs)
        warm = time.perf_counter() - start
    solves = []
    for _ in range(5):
        solves.append(solve_edit(problem, lam=1.0, mu=1e-3, rank_per_class=2).seconds)
    tokens = clip.tokenizer([f"a photo of a {c}." for c in imagenet_classnames()[:256]])
    start = time.perf_counter()
    pooled_text_features(clip.model, tokens, trim=True)
    trimmed = time.perf_counter() - start
    start = time.perf_counter()
    pooled_text_features(clip.model, tokens, trim=False)
    untrimmed = time.perf_counter() - start
    return {"forget_prompts": len(problem.forget), "retain_prompts": len(problem.retain),
            "width": problem.P.shape[0], "encode_cold_s": cold, "encode_cached_s": warm,
            "solve_median_s": sorted(solves)[len(solves) // 2], "trim_256_s": trimmed, "no_trim_256_s": untrimmed,
            "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,rn50")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "initialized randomly" notice
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    print(f"{'setting':8s} {'width':>5s} {'forget':>6s} {'retain':>6s} {'encode cold s':>13s} {'from cache s':>12s} "
          f"{'solve s':>8s} {'256 trim s':>10s} {'256 full s':>10s} {'peak RSS MiB':>12s}")
    for name in args.models.split(","):
        r = bench(name.strip())
        print(f"{name:8s} {r['width']:5d} {r['forget_prompts']:6d} {r['retain_prompts']:6d} {r['encode_cold_s']:13.2f} "
              f"{r['encode_cached_s']:12.2f} {r['solve_median_s']:8.4f} {r['trim_256_s']:10.2f} "
              f"{r['no_trim_256_s']:10.2f} {r['peak_rss_mib']:12.0f}", flush=True)


if __name__ == "__main__":
    main()
