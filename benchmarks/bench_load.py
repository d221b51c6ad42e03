"""Under load: forget 5 classes in one run with a synthetic set of 256+ images, within 24 GiB.

One full ``trainer.fit`` (UnlearningModule + SyntheticForgetDataModule + GradientLayerSelection +
SyntheticAccuracyStopping + NoiseLayerEscalation + UnlearningReport, evaluation before and after
on the demo world's ``demo_objects``), then the peak memory of the process and the time of each
phase:

- peak RSS: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the high-water mark of the whole
  process: model, synthetic set, perturbation chunks, evaluation, everything);
- torch's view on CUDA: ``torch.cuda.max_memory_allocated``/``max_memory_reserved``;
- times: import, model, synthesis, unlearning, evaluation before/after (the report's timings).

The script exits with status 1 if a peak exceeds ``--limit-gib`` (24 by default).

Models:

- ``--model demo``: the pretrained demo CLIP of ``lightning_unlearn.demo`` (``demo-clip-lit``;
  ``ensure_demo_clip_lit()`` trains it first if the cache lacks it, 2-4 minutes on one core);
  the 5 classes are ``demo_objects`` classes and the vocabulary is that dataset's (24 classes).
  ``--model demo-rn``: the same with ``demo-clip-rn`` (the demo CLIP until 2026-12-07).
  Measured on ``demo-clip-rn`` 2026-11-28 (1 thread, 2 cores, CLIP cached): 260 images (all reached the target),
  25 perturbations, 4 optimizer steps: peak RSS 1.02 GiB, synthesis 3 s, unlearning 10 s, whole
  fit 14 s.
- ``--model tiny-vit`` (the default: needs no pretraining): the random-init tiny
  ViT of ``tests/model_configs`` with a 36-class vocabulary (the demo world's 27 object and first 9
  texture names). A random model cannot make most classes its arg-max, so synthesis cannot reach
  any sensible target; the bench then makes the set itself with a bounded budget
  (``max_iterations`` x (1 + ``max_restarts``) ascent steps), accepts the partial set that
  ``SynthesisError`` carries, and puts it in the DataModule's cache so ``fit`` uses it. Memory and
  time are those of the same pipeline; the accuracies are meaningless. Measured: peak RSS 0.99 GiB,
  synthesis 26 s, fit 5 s.

Few steps by default (``--max-epochs 2 --steps-per-epoch 2``): the point is memory and time per
phase, not how well the classes are forgotten.

    python benchmarks/bench_load.py [--model tiny-vit|demo] [--classes 5] [--images 256]
        [--perturbations 25] [--max-epochs 2] [--steps-per-epoch 2] [--accelerator cpu]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_synthesis.py: spinning threads on a shared CPU

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

T_START = time.perf_counter()

import lightning.pytorch as pl  # noqa: E402
import open_clip  # noqa: E402
import torch  # noqa: E402

from lightning_unlearn import UnlearningModule  # noqa: E402
from lightning_unlearn.callbacks import (  # noqa: E402
    GradientLayerSelection,
    NoiseLayerEscalation,
    SyntheticAccuracyStopping,
    UnlearningReport,
)
from lightning_unlearn.datamodules import ForgetSet, SyntheticForgetDataModule  # noqa: E402
from lightning_unlearn.methods import MultimodalLipschitz  # noqa: E402
from lightning_unlearn.datamodules.synthetic import _to_payload  # noqa: E402
from lightning_unlearn.core.io import atomic_path  # noqa: E402
from lightning_unlearn.maths.synthesis import SynthesisConfig, SynthesisError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3
FORGET = ("anchor", "apple", "guitar", "kite", "rocket", "umbrella", "bicycle", "crown")


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def demo_world_names() -> tuple[list[str], list[str]]:
    from lightning_unlearn.demo import world

    return list(world.CLASSES["objects"]), list(world.CLASSES["textures"])


def demo_model(steps: Optional[int] = None, rn: bool = False) -> tuple[str, str]:
    """(open_clip name, pretrained tag or weights path) of the demo CLIP: the project tag
    ``demo-world`` (built on first use by the module's prepare_data) or, with ``steps``, the cached
    weights of a demo CLIP trained for that many steps."""
    from lightning_unlearn.demo import DEMO_LIT_MODEL_NAME, DEMO_MODEL_NAME, ensure_demo_clip, ensure_demo_clip_lit

    name, ensure = (DEMO_MODEL_NAME, ensure_demo_clip) if rn else (DEMO_LIT_MODEL_NAME, ensure_demo_clip_lit)
    if not steps:
        return name, "demo-world"
    return name, str(ensure(steps=steps, progress=False))


class PhaseMemory(pl.Callback):
    """Current RSS at the phase boundaries of the fit (the peak is the process's high-water mark)."""

    def __init__(self) -> None:
        self.rss: dict[str, int] = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        self.rss["fit_start"] = current_rss_bytes()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.rss[f"epoch_{trainer.current_epoch}_end"] = current_rss_bytes()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.rss["fit_end"] = current_rss_bytes()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Peak memory and time of a 5-class, 256-image unlearning run.")
    parser.add_argument("--model", choices=["tiny-vit", "demo", "demo-rn"], default="tiny-vit")
    parser.add_argument("--model-name", default=None, help="override the open_clip name (with --model demo)")
    parser.add_argument("--pretrained", default=None, help="override the pretrained tag/path (with --model demo)")
    parser.add_argument("--demo-steps", type=int, default=None,
                        help="pretraining steps of the demo CLIP if it must be trained (default: the helper's)")
    parser.add_argument("--classes", type=int, default=5, help="classes forgotten in the one run")
    parser.add_argument("--images", type=int, default=256, help="synthetic images in all (rounded up per class)")
    parser.add_argument("--perturbations", type=int, default=25, help="N, perturbations per image and step")
    parser.add_argument("--max-batch", type=int, default=256, help="most perturbed images per forward pass")
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, default=2)
    parser.add_argument("--eval-per-class", type=int, default=20, help="demo_objects test images per class")
    parser.add_argument("--max-iterations", type=int, default=100, help="synthesis iterations per attempt")
    parser.add_argument("--max-restarts", type=int, default=1, help="synthesis restarts per image")
    parser.add_argument("--goal", type=float, default=None,
                        help="stop at this synthetic accuracy (default: 0.1 with --model demo; none with the random "
                             "model, whose partial set starts at accuracy 0: it runs max_epochs x steps_per_epoch)")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--devices", default="1")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--limit-gib", type=float, default=24.0)
    parser.add_argument("--workdir", default=None, help="cache and report folder (default: a temporary one)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import_seconds = time.perf_counter() - T_START

    demo_seconds = 0.0
    objects, textures = demo_world_names()
    if args.classes > len(FORGET):
        raise SystemExit(f"--classes at most {len(FORGET)}")
    forget = list(FORGET[: args.classes])
    per_class = math.ceil(args.images / args.classes)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_load_"))
    cache = workdir / "cache"

    demo = args.model in ("demo", "demo-rn")
    if demo:
        t_demo = time.perf_counter()
        name, tag = (args.model_name, args.pretrained) if args.model_name and args.pretrained \
            else demo_model(args.demo_steps, rn=args.model == "demo-rn")
        demo_seconds = time.perf_counter() - t_demo
        vocabulary = None  # the demo_objects classes
        synthesis = SynthesisConfig(step_size=10.0, jitter=4, max_iterations=args.max_iterations * 10,
                                    max_restarts=args.max_restarts)
    else:
        open_clip.add_model_config(ROOT / "tests" / "model_configs")
        name, tag = "tiny-vit", None
        vocabulary = objects + textures[: 36 - len(objects)]
        synthesis = SynthesisConfig(target_probability=0.3, min_probability=0.15, step_size=10.0, jitter=4,
                                    max_iterations=args.max_iterations, max_restarts=args.max_restarts)

    goal = args.goal if args.goal is not None else (0.1 if demo else None)
    t0 = time.perf_counter()
    pl.seed_everything(0, verbose=False)
    module = UnlearningModule(model_name=name, pretrained=tag, forget_classes=forget, vocabulary=vocabulary, lr=1e-4,
                              method=MultimodalLipschitz(num_perturbations=args.perturbations, max_batch=args.max_batch))
    model_seconds = time.perf_counter() - t0
    evaluation = dict(datasets={"demo_objects": None}, batch_size=128,
                      dataset_kwargs={"demo_objects": {"num_per_class": args.eval_per_class}}) \
        if demo else {}
    data = SyntheticForgetDataModule(images_per_class=per_class, steps_per_epoch=args.steps_per_epoch,
                                     synthesis=synthesis, cache_dir=str(cache), use_cache=True, progress=False,
                                     **evaluation)
    phases = PhaseMemory()
    trainer = pl.Trainer(
        accelerator=args.accelerator, devices=int(args.devices) if args.devices.isdigit() else args.devices,
        max_epochs=args.max_epochs, val_check_interval=1, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[GradientLayerSelection(k=5), NoiseLayerEscalation(),
                   UnlearningReport(output_dir=str(workdir / "report"), print_table=False), phases]
        + ([SyntheticAccuracyStopping(goal=goal)] if goal is not None else []),
    )

    partial_note = None
    # a set from an earlier run with the same key is reused (the demo's key needs the attached
    # evaluation datasets, so it is only known inside fit)
    cached = None
    if vocabulary is not None:
        module.resolve_spec({})  # what setup does; the tiny run has an explicit vocabulary
        cached = data.cache_path(module).is_file()
    if args.model == "tiny-vit" and not cached:
        # A random model cannot reach a target for most classes: make the set with a bounded budget and
        # cache the partial set where the DataModule looks for it.
        t1 = time.perf_counter()
        try:
            synthetic = data.synthesise(module)
        except SynthesisError as err:
            made = err.result
            synthetic = ForgetSet(images=made.images, labels=made.class_index, kind="synthetic",
                                  probability=made.probability, reached=made.reached)
            partial_note = f"{int((~made.reached).sum())} of {len(made.images)} images did not reach 0.3"
        synthetic.seconds = time.perf_counter() - t1
        with atomic_path(data.cache_path(module)) as tmp:
            torch.save(_to_payload(synthetic), tmp)

    t2 = time.perf_counter()
    trainer.fit(module, data)
    fit_seconds = time.perf_counter() - t2
    report = json.loads((workdir / "report" / "report.json").read_text())

    results = {
        "model": f"{name} ({tag or 'random init'})",
        "classes": forget,
        "vocabulary_size": len(module.spec.vocabulary.classnames),
        "synthetic_images": report["forget_set"]["images"],
        "perturbations": args.perturbations,
        "optimizer_steps": report["optimizer_steps"],
        "device": f"{args.accelerator} x {args.devices}",
        "threads": torch.get_num_threads(),
        "seconds": {
            "import": round(import_seconds, 1),
            "demo_clip (cache or pretraining)": round(demo_seconds, 1),
            "model": round(model_seconds, 1),
            # synthesis runs at the start of fit, except with the random model (made by this script first)
            "synthesis": round(report["timings"].get("synthesis", 0.0), 1),
            "fit": round(fit_seconds, 1),
            **{k: round(v, 1) for k, v in report["timings"].items() if k != "synthesis"},
            "total": round(time.perf_counter() - T_START, 1),
        },
        "synthetic_set_from_cache": cached,
        "peak_rss_gib": round(peak_rss_bytes() / GIB, 3),
        "rss_gib_at": {k: round(v / GIB, 3) for k, v in phases.rss.items()},
        "synthetic_acc": {"before": report["before"]["synthetic_acc"], "after": report["after"]["synthetic_acc"]},
        "stop_reason": report["stop_reason"],
    }
    if partial_note:
        results["note"] = f"random model, partial synthetic set: {partial_note} (accuracies meaningless)"
    if torch.cuda.is_available() and args.accelerator in ("gpu", "cuda", "auto"):
        results["cuda_max_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
        results["cuda_max_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 3)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    peaks = [results["peak_rss_gib"], results.get("cuda_max_reserved_gib", 0.0)]
    if max(peaks) > args.limit_gib:
        print(f"FAIL: peak memory {max(peaks):.2f} GiB exceeds {args.limit_gib} GiB", file=sys.stderr)
        return 1
    print(f"OK: peak RSS {results['peak_rss_gib']:.2f} GiB <= {args.limit_gib} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
