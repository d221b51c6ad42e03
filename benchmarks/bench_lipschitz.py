"""The multimodal Lipschitz loss, forward + backward, chunked vs a Python loop over perturbations.

Setting: the tiny random-init ViT of ``tests/model_configs`` (32 px), a batch of 64 images, N = 25
perturbations (sigma 0.5), one noise generator per image (as ``UnlearningModule`` does), the
perturbed branch without gradient (the published code), text features from the text tower in
every step, gradients for all parameters.

Variants:
- ``loop``: written here, the way the published code goes: for each of the N perturbation sets,
  draw the noise, encode the 64 perturbed images in one forward, accumulate the loss terms
  (perturbed images clipped to each clean image's range, as ``objectives`` does now; each term
  divided by the norm of the applied perturbation; the sum divided by 4N, as published).
- ``chunk-64``, ``chunk-256``: ``multimodal_lipschitz_loss(max_batch=...)``: the N*64 perturbed
  images encoded in forwards of at most 64 / 256 images.
- ``all``: ``max_batch=None``: all N*64 perturbed images in one forward.
All variants draw the same noise, so their losses agree (the table shows the largest difference).

Time: ``--rounds`` rounds of one step per variant (order rotated each round); the table gives the
median step time and the median over rounds of the paired ratio loop time / variant time.
Memory: each (variant, N) runs one step in a fresh subprocess; the peak resident set size
(``VmHWM``, the counter ``resource.getrusage(...).ru_maxrss`` reports) is reset with
``/proc/self/clear_refs`` after the model is built and warmed up, so the figure is the step's own
peak above the resident size before it. glibc's mmap threshold is pinned
(``MALLOC_MMAP_THRESHOLD_``) so freed large blocks go back to the system instead of being kept.
``tracemalloc`` would not see torch's CPU allocations.

    python benchmarks/bench_lipschitz.py [--quick] [--threads 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/README.md (shared 2-core CPUs)

import argparse
import json
import logging
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import open_clip
import torch

from lightning_unlearn.clip.loading import load_clip
from lightning_unlearn.maths.objectives import multimodal_lipschitz_loss
from lightning_unlearn.maths.synthesis import pixel_bounds

ROOT = Path(__file__).resolve().parents[1]
BATCH = 64
SIGMA = 0.5
VARIANTS = {"loop": "loop", "chunk-64": 64, "chunk-256": 256, "all": None}


class Setup:
    def __init__(self, batch: int = BATCH) -> None:
        logging.getLogger().setLevel(logging.ERROR)
        open_clip.add_model_config(ROOT / "tests" / "model_configs")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.clip = load_clip("tiny-vit", pretrained=None)
        self.model = self.clip.model
        lo, hi = pixel_bounds(self.clip.mean, self.clip.std)
        g = torch.Generator().manual_seed(0)
        self.images = torch.maximum(torch.minimum(torch.randn(batch, 3, 32, 32, generator=g), hi), lo)
        self.tokens = self.clip.tokenizer(["A picture of dog"])

    def generators(self, batch: int) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(1000 + i) for i in range(batch)]

    def step(self, variant: str, n: int, batch: int = BATCH) -> float:
        """One forward + backward; returns the loss."""
        self.model.zero_grad(set_to_none=True)
        images = self.images[:batch]
        text = self.model.encode_text(self.tokens)
        max_batch = VARIANTS[variant]
        if max_batch == "loop":
            loss = loop_loss(self.model.encode_image, images, text, SIGMA, n, self.generators(batch))
        else:
            loss = multimodal_lipschitz_loss(
                self.model.encode_image, images, text, SIGMA, n, max_batch=max_batch, generator=self.generators(batch)
            )
        loss.backward()
        return float(loss.detach())


def loop_loss(encode_image, images, text_features, sigma, n, generators) -> torch.Tensor:
    """Baseline: one forward of the B perturbed images per perturbation set, accumulated
    (``objectives``' defaults: the applied perturbation's norm, the published sum / 4N)."""
    clean = encode_image(images)
    flat = images.detach().flatten(1)
    lo, hi = flat.amin(dim=1).view(-1, 1, 1, 1), flat.amax(dim=1).view(-1, 1, 1, 1)  # each image's range
    total = images.new_zeros(())
    for _ in range(n):
        noise = torch.stack([torch.randn(images.shape[1:], generator=g) for g in generators]) * sigma
        perturbed = torch.maximum(torch.minimum(images.detach() + noise, hi), lo)
        with torch.no_grad():
            pert = encode_image(perturbed)
        distances = (clean - pert).norm(dim=-1) + (text_features - pert).norm(dim=-1)
        total = total + (distances / (perturbed - images.detach()).flatten(1).norm(dim=1)).sum()
    return total / (4 * n)


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def worker(variant: str, n: int, threads: int) -> None:
    """Fresh process: peak RSS of one step above the resident size just before it."""
    import resource

    torch.set_num_threads(threads)
    setup = Setup()
    setup.step(variant, 1, batch=2)  # lazy initialisation (kernels, allocator) outside the figure
    setup.model.zero_grad(set_to_none=True)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current RSS
    before = rss_kb("VmRSS")
    setup.step(variant, n)
    peak = rss_kb("VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"variant": variant, "n": n, "before_kb": before, "peak_kb": peak, "ru_maxrss_kb": maxrss}))


def measure_memory(variant: str, n: int, threads: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", PYTHONWARNINGS="ignore")
    out = subprocess.run(
        [sys.executable, __file__, "--worker", variant, "--n", str(n), "--threads", str(threads)],
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=5 timing, 1 round, fewer memory cells")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=None, help="perturbations for the timing (default 25)")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds, one step per variant each (default 9, quick 3)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.n, args.threads)
        return
    n = args.n or (5 if args.quick else 25)
    rounds = args.rounds or (3 if args.quick else 9)
    sweep = [5, 25] if args.quick else [5, 25, 100]
    torch.set_num_threads(args.threads)

    setup = Setup()
    for variant in VARIANTS:  # warm-up, and the losses must agree
        setup.step(variant, 1)
    losses = {v: setup.step(v, n) for v in VARIANTS}
    spread = max(losses.values()) - min(losses.values())
    # Rounds of one step per variant, order rotated each round; the ratios are paired per round,
    # so load from other processes shifts both sides of a ratio alike.
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    names = list(VARIANTS)
    for r in range(rounds):
        for variant in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            setup.step(variant, n)
            times[variant].append(time.perf_counter() - start)
    paired = {v: statistics.median(a / b for a, b in zip(times["loop"], times[v])) for v in VARIANTS}

    memory: dict[tuple[str, int], float] = {}
    mem_variants = ["loop", "chunk-256"] if args.quick else list(VARIANTS)
    for size in sweep:
        for variant in mem_variants:
            sample = measure_memory(variant, size, args.threads)
            memory[(variant, size)] = (sample["peak_kb"] - sample["before_kb"]) / 1024

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; tiny-vit 32 px, batch {BATCH}, sigma {SIGMA}, "
          f"forward+backward; median of {rounds} interleaved steps")
    print(f"# losses of the variants agree to {spread:.2e} (loss {losses['loop']:.5f})")
    print("# memory: peak RSS of one step above the RSS before it (VmHWM after clear_refs, fresh process per cell), MiB")
    header = f"{'variant':10} {'ms/step N=' + str(n):>14} {'loop/this':>9} " + " ".join(f"{'MiB N=' + str(s):>10}" for s in sweep)
    print(header)
    print("-" * len(header))
    for variant in VARIANTS:
        t = statistics.median(times[variant])
        mem = " ".join(f"{memory[(variant, s)]:10.1f}" if (variant, s) in memory else f"{'-':>10}" for s in sweep)
        print(f"{variant:10} {1000 * t:14.1f} {paired[variant]:8.2f}x {mem}")
    r64, r256 = paired["chunk-64"], paired["chunk-256"]
    flat = " ".join(f"N={s}:{memory[('chunk-256', s)]:.1f}MiB" for s in sweep)
    print(f"RATIO loop/chunked time (N={n}, >1 = chunked faster): chunk-256={r256:.2f}x chunk-64={r64:.2f}x; "
          f"chunk-256 peak {flat}")


if __name__ == "__main__":
    main()
