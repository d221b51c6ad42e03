"""Time per section of the evaluation suite on the offline demo, and its validate round trip.

Runs ``configs/demo.yaml`` (every section the demo world supports turned on) through the CLI in
this process, then reads the report's ``timings``: the suite's ``evaluation/<state>/<section>``
entries, the plots, and the main evaluation (``evaluate_before``/``evaluate_after``), which
computes the image features every section shares. With ``--validate`` it then runs
``lightning-unlearn validate`` on the exported weights, prints that run's sections too, and
compares every after-figure of the two reports (they must be equal).

    python benchmarks/bench_evaluation.py [--classes anchor] [--seed 0] [--validate] [--out DIR]
        [--threads 1] [CLI overrides, e.g. --model.init_args.evaluation.relearn_steps 50]

The bar: the whole suite within 60 s on 2 cores. ``OMP_WAIT_POLICY`` defaults to PASSIVE (see
benchmarks/README.md).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by libgomp when torch loads

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from lightning_unlearn.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
BAR_SECONDS = 60.0


def run(subcommand: str, config: Path, out: Path, name: str, overrides: list[str]) -> tuple[dict[str, Any], float]:
    """One CLI run; returns its report and wall time."""
    args = [subcommand, "--config", str(config), *overrides,
            "--trainer.logger.init_args.save_dir", str(out), "--trainer.logger.init_args.name", name]
    start = time.perf_counter()
    cli = cli_main(args)
    seconds = time.perf_counter() - start
    return json.loads((Path(cli.trainer.log_dir) / "report.json").read_text()), seconds


def sections(report: dict[str, Any]) -> dict[str, float]:
    """The suite's seconds per ``<state>/<section>`` (and ``plots``)."""
    prefix = "evaluation/"
    return {k[len(prefix):]: float(v) for k, v in report.get("timings", {}).items() if k.startswith(prefix)}


def print_sections(title: str, report: dict[str, Any]) -> float:
    """Print the per-section table; returns the suite's total (shared features included)."""
    timings = sections(report)
    shared = {k: float(report["timings"][k]) for k in ("evaluate_before", "evaluate_after") if k in report.get("timings", {})}
    print(f"\n{title}")
    print(f"{'section':34s} {'seconds':>9s}")
    for name, seconds in timings.items():
        print(f"{name:34s} {seconds:9.3f}")
    for name, seconds in shared.items():
        print(f"{name + ' (features, shared)':34s} {seconds:9.3f}")
    total = sum(timings.values()) + sum(shared.values())
    print(f"{'TOTAL':34s} {total:9.3f}")
    return total


def after_numbers(tree: Any, path: tuple = ()) -> dict[tuple, float]:
    """Every number whose path passes through an ``after`` key."""
    out: dict[tuple, float] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(after_numbers(value, path + (key,)))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out.update(after_numbers(value, path + (i,)))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool) and "after" in path:
        out[path] = float(tree)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", nargs="+", default=["anchor"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--out", default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--validate", action="store_true", help="also validate the exported weights and compare")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args, overrides = parser.parse_known_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_evaluation_"))
    config = Path(args.config)
    common = [*overrides, "--model.init_args.forget_classes", json.dumps(args.classes),
              "--seed_everything", str(args.seed), "--model.init_args.noise_seed", str(args.seed)]
    report, wall = run("fit", config, out, "fit", [*common, "--data.init_args.seed", str(args.seed)])
    total = print_sections(f"fit ({', '.join(args.classes)}, seed {args.seed}; run {wall:.1f} s wall)", report)
    print(f"SUITE fit total={total:.2f}s bar={BAR_SECONDS:.0f}s {'met' if total <= BAR_SECONDS else 'NOT MET'}")
    if args.validate:
        export = report["export"]
        validated, vwall = run("validate", config, out, "validate", [*common, "--model.init_args.pretrained", export])
        vtotal = print_sections(f"validate on {export} ({vwall:.1f} s wall)", validated)
        fit_after = {p: v for p, v in after_numbers(report["evaluation"]).items()
                     if p[:2] != ("verification", "synthetic") and p[0] != "trace"}
        val_after = after_numbers(validated["evaluation"])
        differ = [p for p in fit_after if val_after.get(p) != fit_after[p]]
        print(f"SUITE validate total={vtotal:.2f}s; after-figures compared={len(fit_after)} differ={len(differ)}")
        for path in differ[:10]:
            print("  differs:", "/".join(map(str, path)), fit_after[path], val_after.get(path))
    print(f"runs in {out}")


if __name__ == "__main__":
    main()
