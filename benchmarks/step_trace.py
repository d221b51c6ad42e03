"""Where the collateral of an unlearning run comes from, step by step, and what a stopping goal would give.

Two parts:

* ``StepTrace``, a Lightning callback: after the fit starts and after every optimizer step it scores
  the forget dataset's evaluation split (the report's before/after split) at its evaluation
  prompt and appends one JSON line: target and other-class accuracy, each class's accuracy, and
  which classes the other classes' misread images are read as. Add it to any ``fit``:

      PYTHONPATH=benchmarks lightning-unlearn fit --config configs/demo_lip_tuned.yaml \\
          --trainer.logger.init_args.save_dir RUN --trainer.callbacks+=step_trace.StepTrace \\
          --trainer.callbacks.out=RUN/step_trace.jsonl

* ``python benchmarks/step_trace.py RUN [RUN ...] --goals 0.1 0.2 0.3``: for each goal, the run each
  folder's fit would have been had ``SyntheticAccuracyStopping`` stopped at the first step whose
  synthetic accuracy is at or below it (the rule only cuts a run short, so that run is this one's
  prefix), averaged over the folders. The goal should be at or above the one the traced run used.

It reads the model's own evaluation (``UnlearningModule.evaluate_datasets``), so the target and
other-class figures are the report's.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
from typing import Any

import lightning.pytorch as pl
import torch


class StepTrace(pl.Callback):
    """Score the forget dataset's evaluation split after every optimizer step (one JSON line each).

    Args:
        out: the JSON-lines file to append to (its folder is created).
    """

    def __init__(self, out: str = "step_trace.jsonl") -> None:
        self.out = out

    def _forget_dataset(self, trainer: pl.Trainer, pl_module: Any) -> tuple[str, Any]:
        datasets = trainer.datamodule.eval_datasets
        name = next((n for n in datasets if pl_module.spec.targets.get(n)), None)
        if name is None:
            raise ValueError(f"no evaluation dataset holds a forgotten class; datasets: {list(datasets)}")
        return name, datasets[name]

    @torch.no_grad()
    def _measure(self, trainer: pl.Trainer, pl_module: Any) -> None:
        name, dataset = self._forget_dataset(trainer, pl_module)
        loader = trainer.datamodule.evaluation_loaders()[name]  # one process: the whole split
        targets = set(pl_module.spec.targets[name])
        shards: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # the same pass's image features
        summary = pl_module.evaluate_datasets({name: loader}, shards=shards)[name]
        features, y = shards[name]
        p = (features @ pl_module.dataset_embeddings(dataset).float().cpu().T).argmax(-1)
        names = list(dataset.classnames)
        per_class = {names[c]: (p[y == c] == c).float().mean().item() for c in range(len(names)) if (y == c).any()}
        misread = p[(p != y) & torch.tensor([int(v) not in targets for v in y.tolist()])]
        read_as = {names[c]: int((misread == c).sum()) for c in misread.unique().tolist()}
        record = {"step": trainer.global_step, "sigma": float(pl_module.sigma), "target": summary["target"],
                  "other_classes": summary["other_classes"], "per_class": per_class, "others_read_as": read_as}
        os.makedirs(os.path.dirname(os.path.abspath(self.out)), exist_ok=True)
        with open(self.out, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._measure(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._measure(trainer, pl_module)


def _run(folder: str) -> tuple[list[dict], list[float], bool]:
    reports = glob.glob(os.path.join(folder, "**", "report.json"), recursive=True)
    traces = glob.glob(os.path.join(folder, "**", "step_trace.jsonl"), recursive=True)
    if len(reports) != 1 or len(traces) != 1:
        raise SystemExit(f"{folder}: expected one report.json and one step_trace.jsonl, found {len(reports)} and {len(traces)}")
    with open(reports[0]) as handle:
        report = json.load(handle)
    with open(traces[0]) as handle:
        trace = [json.loads(line) for line in handle]
    return trace, report["synthetic_acc_history"], bool(report["restored_epochs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="fit output folders, each with report.json and step_trace.jsonl")
    parser.add_argument("--goals", nargs="+", type=float, default=[0.1, 0.2, 0.3, 0.4, 0.5])
    args = parser.parse_args()
    runs = {folder: _run(folder) for folder in args.runs}
    for folder, (_, _, restored) in runs.items():
        if restored:  # an undone epoch is in the trace but not in the weights: the prefix rule does not hold
            print(f"skipped {folder}: the escalation undid an epoch")
    runs = {f: r for f, r in runs.items() if not r[2]}
    print("goal  runs  target drop mean (min)  other classes mean (worst)  below -3  steps mean")
    for goal in args.goals:
        drops, others, steps = [], [], []
        for trace, history, _ in runs.values():
            stop = next((i for i, acc in enumerate(history) if acc <= goal), len(history) - 1)
            start, end = trace[0], trace[stop + 1]  # trace[0]: before the first step
            drops.append(100 * (start["target"] - end["target"]))
            others.append(100 * (end["other_classes"] - start["other_classes"]))
            steps.append(stop + 1)
        n = len(drops)
        print(f"{goal:4.2f}  {n:4d}  {sum(drops) / n:10.1f} ({min(drops):3.0f})  {sum(others) / n:+14.2f} ({min(others):+5.1f})"
              f"  {sum(o < -3 for o in others):8d}  {sum(steps) / n:10.1f}")


if __name__ == "__main__":
    main()
