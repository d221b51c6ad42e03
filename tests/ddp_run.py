"""A tiny unlearning run for the DDP tests, as a standalone script.

Lightning's CPU ``strategy="ddp"`` starts rank 1 by running this *script* again (with
``LOCAL_RANK``/``NODE_RANK``/``WORLD_SIZE`` set), so everything a rank needs is built here from the
command line: the tiny open_clip configs are registered with ``open_clip.add_model_config`` at
import time, the seed is fixed before the module is built (a random-init model must be the same on
every rank: the synthetic set's cache key includes the weights' fingerprint), and the synthetic
cache folder is given explicitly (it must be visible to every rank of the node).

Each rank writes ``<out>/ranks/rank<R>.json`` with what it saw:

- ``selected``: ``GradientLayerSelection.last_selected`` at every optimizer step (group -> names);
- ``selection_gaps``: at every optimizer step, the smallest relative gap between the k-th and the
  (k+1)-th score of a group (how close the selection was to a tie that rounding could flip);
- ``acc_margins``: at every validation, the smallest top-1 minus top-2 logit over the whole set
  (how close an image was to changing class);
- ``synthetic_sha``: sha256 of the synthetic images and labels it trained on;
- ``made_synthetic``: how many times this rank synthesised (only global rank 0 should; the others get
  the set by broadcast);
- ``acc``: per validation, the logged ``forget/synthetic_acc`` and the accuracy of the whole set
  computed locally (each rank validates only its shard, so they agree only if the metric is reduced);
- ``indices``: the image indices of its training batch at every step;
- ``writes``: every file (and the export folder) this rank wrote through the helpers that the
  report callback and the synthetic DataModule use;
- ``weights_sha`` and the final weights in ``<out>/ranks/weights<R>.pt``;
- the escalation's sigma history, selection counts and the report (written to ``<out>/report``:
  the trainer's ``default_root_dir``, or ``UnlearningReport(output_dir=...)`` with ``--explicit-output``).

``--devices 1 --strategy auto`` runs the same thing in one process: the reference that
``tests/test_ddp.py`` compares the DDP weights with (docs/multi_gpu.md, "DDP versus one device").

Usage: ``python tests/ddp_run.py --out DIR --cache DIR [--eval-root DIR] [--devices 2 --strategy ddp]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)  # two ranks on a shared 2-core machine: avoid thread oversubscription

import lightning.pytorch as pl  # noqa: E402
import open_clip  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

HERE = Path(__file__).resolve().parent
open_clip.add_model_config(HERE / "model_configs")  # per process: every rank registers them

import lightning_unlearn.callbacks.report as report_callback  # noqa: E402
import lightning_unlearn.datamodules.synthetic as synthetic_dm  # noqa: E402
from lightning_unlearn import UnlearningModule  # noqa: E402
from lightning_unlearn.callbacks import (  # noqa: E402
    GradientLayerSelection,
    NoiseLayerEscalation,
    SyntheticAccuracyStopping,
    UnlearningReport,
)
from lightning_unlearn.datamodules import SyntheticForgetDataModule  # noqa: E402
from lightning_unlearn.methods import EmbeddingLoss, ImageLipschitz, MultimodalLipschitz  # noqa: E402
from lightning_unlearn.synthesis import SynthesisConfig  # noqa: E402
from lightning_unlearn.models import load_clip  # noqa: E402
from lightning_unlearn.zeroshot import zero_shot_logits  # noqa: E402

from conftest import _classes_noise_leans_to  # noqa: E402  (this folder is sys.path[0] for a script)

VOCAB = ("cat", "dog", "car", "tree")
SYNTHESIS = SynthesisConfig(target_probability=0.3, min_probability=0.27, jitter=2, step_size=3.0, max_iterations=100,
                            threshold_decay="per_image", pixel_space="model", jitter_mode="symmetric",
                            blur_kernel_size=3, blur_from_first_iteration=False)
METHODS = {"lipschitz": MultimodalLipschitz, "image_lipschitz": ImageLipschitz, "embedding": EmbeddingLoss}


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


# --- instruments: which rank writes what, who synthesises --------------------------------------
WRITES: list[str] = []
MADE = {"count": 0}


def _recording(fn):
    def wrapper(path, *args, **kwargs):
        WRITES.append(str(path))
        return fn(path, *args, **kwargs)

    return wrapper


report_callback.save_open_clip_weights = _recording(report_callback.save_open_clip_weights)
report_callback.write_open_clip_folder = _recording(report_callback.write_open_clip_folder)
_link = report_callback.atomic_link


def _recording_link(source, path):
    WRITES.append(str(path))  # the file it makes, not the one it links to
    return _link(source, path)


report_callback.atomic_link = _recording_link
report_callback.atomic_write_json = _recording(report_callback.atomic_write_json)
report_callback.atomic_write_text = _recording(report_callback.atomic_write_text)
synthetic_dm.atomic_path = _recording(synthetic_dm.atomic_path)
_synthesise = SyntheticForgetDataModule.synthesise


def _counting_synthesise(self, module, **kwargs):
    MADE["count"] += 1
    return _synthesise(self, module, **kwargs)


SyntheticForgetDataModule.synthesise = _counting_synthesise


def tensor_sha(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def state_sha(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class SelectionMargin(Callback):
    """Placed before ``GradientLayerSelection``: how close each step's selection is to a tie."""

    def __init__(self, selection: GradientLayerSelection) -> None:
        self.selection = selection
        self.gaps: list[float] = []

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        gaps = [1.0]
        for group, members in pl_module.parameter_groups().items():
            scores = sorted((float(p.grad.abs().sum() / p.numel()) for _, p in members if p.grad is not None),
                            reverse=True)
            k = self.selection.get_k(group)
            if len(scores) > k:
                gaps.append((scores[k - 1] - scores[k]) / max(scores[k - 1], 1e-30))
        self.gaps.append(min(gaps))


class Recorder(Callback):
    """Records, on its rank, the selection of every step and the synthetic accuracy of every validation."""

    def __init__(self, selection: GradientLayerSelection) -> None:
        self.selection = selection
        self.selected: list[dict[str, list[str]]] = []
        self.acc: list[dict[str, float]] = []
        self.losses: list[float] = []
        self.indices: list[list[int]] = []
        self.margins: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # placed after GradientLayerSelection in the callback list: its choice of this step is made
        self.selected.append({g: list(names) for g, names in self.selection.last_selected.items()})

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.indices.append([int(i) for i in batch["index"]])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        synthetic = trainer.datamodule.forget_set
        logged = float(trainer.callback_metrics["forget/synthetic_acc"])
        whole = pl_module.synthetic_accuracy(synthetic.images, synthetic.labels)
        self.acc.append({"logged": logged, "whole_set": whole})
        with torch.no_grad():
            logits = zero_shot_logits(pl_module.encode_image(synthetic.images.to(pl_module.device)),
                                      pl_module.vocabulary_embeddings())
            top2 = logits.topk(2, dim=-1).values
        self.margins.append(float((top2[:, 0] - top2[:, 1]).min()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--cache", required=True, help="synthetic cache folder (shared by all ranks)")
    parser.add_argument("--eval-root", default=None, help="image_folder dataset with the VOCAB classes")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--forget", default="auto",
                        help="class to forget; auto: the one the seeded random model gives noise to (any seed works)")
    parser.add_argument("--images-per-class", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--goal", type=float, default=0.0)
    parser.add_argument("--explicit-output", action="store_true",
                        help="give UnlearningReport an output_dir instead of using the trainer's log dir")
    parser.add_argument("--objective", default="lipschitz", choices=sorted(METHODS))
    parser.add_argument("--reduction", default="published", choices=["published", "mean"],
                        help="the loss reduction (published: sum over the global batch / 4N)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    forget = args.forget
    if forget == "auto":  # the module below draws the same initial weights from the same seed
        pl.seed_everything(args.seed, verbose=False)
        forget = _classes_noise_leans_to(load_clip("tiny-vit").model, list(VOCAB))[0]
    pl.seed_everything(args.seed, verbose=False)
    module = UnlearningModule(
        model_name="tiny-vit", pretrained=None, forget_classes=[forget],
        vocabulary=None if args.eval_root else list(VOCAB), sigma=0.5, lr=args.lr,
        method=METHODS[args.objective](num_perturbations=2, reduction=args.reduction),
    )
    data = SyntheticForgetDataModule(
        datasets={"image_folder": args.eval_root} if args.eval_root else None, batch_size=4,
        images_per_class=args.images_per_class, steps_per_epoch=args.steps_per_epoch, synthesis=SYNTHESIS,
        seed=args.seed, cache_dir=args.cache, progress=False,
    )
    selection = GradientLayerSelection(k=2)
    escalation = NoiseLayerEscalation(sigma_schedule=[0.5, 1.0, 2.0], k_schedules={"vision": [2, 4, 8], "text": [2, 4, 8]})
    # By default the report goes to the trainer's log dir (here default_root_dir, no logger), as with the CLI:
    # resolving trainer.log_dir is a collective (a broadcast from rank 0).
    report = UnlearningReport(output_dir=str(out / "report") if args.explicit_output else None, print_table=False)
    recorder = Recorder(selection)
    margin = SelectionMargin(selection)
    trainer = pl.Trainer(
        accelerator="cpu", devices=args.devices, strategy=args.strategy, max_epochs=args.max_epochs,
        val_check_interval=1, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, deterministic=True,
        default_root_dir=str(out / "report"),
        callbacks=[margin, selection, recorder, SyntheticAccuracyStopping(goal=args.goal), escalation, report],
    )
    trainer.fit(module, data)

    rank = trainer.global_rank
    ranks = out / "ranks"
    ranks.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().clone() for k, v in module.model.state_dict().items()}
    torch.save(weights, ranks / f"weights{rank}.pt")
    synthetic = data.forget_set
    record = {
        "rank": rank,
        "env_rank": _rank(),
        "world_size": trainer.world_size,
        "strategy": type(trainer.strategy).__name__,
        "selected": recorder.selected,
        "selection_gaps": margin.gaps,
        "acc_margins": recorder.margins,
        "acc": recorder.acc,
        "losses": recorder.losses,
        "indices": recorder.indices,
        "synthetic_sha": tensor_sha(synthetic.images, synthetic.labels),
        "made_synthetic": MADE["count"],
        "writes": WRITES,
        "weights_sha": state_sha(weights),
        "sigma": module.sigma,
        "sigma_history": escalation.sigma_history,
        "restored_epochs": escalation.restored_epochs,
        "selection_counts": selection.selection_counts,
        "global_step": trainer.global_step,
        "report": report.report,
    }
    (ranks / f"rank{rank}.json").write_text(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
