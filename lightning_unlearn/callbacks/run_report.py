"""The run report: what was forgotten, accuracies before and after, and how the run went."""

from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from lightning_unlearn.callbacks.escalation import EscalationStopReason, NoiseLayerEscalation
from lightning_unlearn.callbacks.selection import GradientLayerSelection
from lightning_unlearn.callbacks.stopping import SyntheticAccuracyStopping
from lightning_unlearn.datamodules.forget import ForgetDataModule
from lightning_unlearn.evaluation.render import print_evaluation, render_markdown_section
from lightning_unlearn.methods import zero_shot_type


def _headline(measure: dict[str, Any], dataset: Optional[str]) -> dict[str, Any]:
    """Per-dataset accuracies plus ``target``/``other_classes`` of the forgotten classes' dataset."""
    datasets = measure.get("datasets", {})
    own = datasets.get(dataset, {}) if dataset else {}
    return {
        "synthetic_acc": measure.get("synthetic_acc"),
        "real_valid_acc": measure.get("real_valid_acc"),
        "target": own.get("target"),
        "other_classes": own.get("other_classes"),
        "datasets": datasets,
    }


def stop_reason(
    module: Any,
    escalation: Optional[NoiseLayerEscalation] = None,
    stopping: Optional[SyntheticAccuracyStopping] = None,
) -> str:
    """Why the run ended: training_free, goal_reached, schedule_exhausted, non_finite_loss or
    max_epochs_or_steps (from the run's escalation and stopping callbacks, if it has them)."""
    if not module.method.trains:
        return "training_free"
    if escalation is not None and escalation.stopping_reason is not EscalationStopReason.NOT_STOPPED:
        return str(escalation.stopping_reason.value)
    if stopping is not None and stopping.stopping_reason is EarlyStoppingReason.STOPPING_THRESHOLD:
        return "goal_reached"
    return "max_epochs_or_steps"


def _with_final_weights(reason: str, escalation: Optional[NoiseLayerEscalation]) -> str:
    """``reason``, naming the ``no_improvement_weights`` rule that gave the final weights when no epoch improved."""
    rule = getattr(escalation, "final_weights", None)
    return reason if rule is None else f"{reason} (no epoch improved, no_improvement_weights={rule})"


def build_report(
    trainer: pl.Trainer,
    module: Any,
    before: dict[str, Any],
    after: dict[str, Any],
    timings: dict[str, float],
    synthetic_acc_history: list[float],
    real_valid_history: Optional[list[float]] = None,
    *,
    selection: Optional[GradientLayerSelection] = None,
    escalation: Optional[NoiseLayerEscalation] = None,
    stopping: Optional[SyntheticAccuracyStopping] = None,
) -> dict[str, Any]:
    """Assemble ``report.json`` from the module, the DataModule and the given callbacks' state.

    ``real_valid_history``: the forgotten classes' accuracy on real validation images at each
    epoch end (empty where the DataModule has none). ``selection``/``escalation``/``stopping``:
    the run's callbacks of those kinds (None: the report says what it can without them).
    """
    spec = module.spec
    datamodule = trainer.datamodule
    forget = datamodule if isinstance(datamodule, ForgetDataModule) else None
    method = module.method
    report: dict[str, Any] = {
        "model": {"name": module.hparams.model_name, "pretrained": module.hparams.pretrained,
                  "fingerprint": before.get("weights_fingerprint")},
        "classes": list(spec.names),
        "forget_dataset": spec.dataset,
        "prompts": list(spec.prompts),
        "method": {"name": method.short_name or type(method).__name__,
                   "zero_shot": zero_shot_type(method, bool(forget and forget.real_forget_images)),
                   **method.describe()},
        "before": _headline(before, spec.dataset),
        "after": _headline(after, spec.dataset),
        "synthetic_acc_history": synthetic_acc_history,
        "real_valid_history": list(real_valid_history or []),
        "sigma_history": list(getattr(escalation, "sigma_history", [module.sigma])),
        "epoch_acc_history": list(getattr(escalation, "monitor_history", [])),
        "restored_epochs": list(getattr(escalation, "restored_epochs", [])),
        "selected_parameters": dict(sorted(
            getattr(selection, "selection_counts", {}).items(), key=lambda kv: (-kv[1], kv[0])
        )),
        "stop_reason": _with_final_weights(stop_reason(module, escalation, stopping), escalation),
        "optimizer_steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "timings": {k: round(float(v), 6 if k in method.timings else 3)
                    for k, v in {**timings, **method.timings}.items()},
    }
    if forget is not None:
        report["forget_set"] = forget.forget_set.summary()
        real = forget.real_valid_set
        if real is not None:
            report["real_valid_set"] = real.summary()
    if module.method_report is not None:
        report[method.short_name or "method_report"] = module.method_report
    extra = method.report_section()
    if extra:
        report.update(extra)
    return report


def build_evaluation_report(trainer: pl.Trainer, module: Any, stage: str) -> dict[str, Any]:
    """The report of ``validate``/``test`` on the given weights (the caller adds ``evaluation``).

    The given model's figures are under ``after`` (as in a fit report, so the two compare key by
    key); ``after.datasets`` are the zero-shot accuracies under each dataset's own evaluation
    template, from the evaluation suite's shared features.
    """
    spec = module.spec
    results = (module.evaluation_results or {}).get("after", {})
    return {
        "stage": stage,
        "model": {"name": module.hparams.model_name, "pretrained": module.hparams.pretrained},
        "classes": list(spec.names),
        "forget_dataset": spec.dataset,
        "prompts": list(spec.prompts),
        "after": _headline({"datasets": results.get("accuracy", {})}, spec.dataset),
    }


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _real_valid_row(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    before, after = report["before"], report["after"]
    if before.get("real_valid_acc") is None and after.get("real_valid_acc") is None:
        return []
    return [("real validation images", _pct(before.get("real_valid_acc")), _pct(after.get("real_valid_acc")))]


def _rows(report: dict[str, Any], real_valid: bool = True) -> list[tuple[str, str, str]]:
    """The main table: forget set, (real validation images,) target, other classes, datasets."""
    before, after = report["before"], report["after"]
    rows = []
    if before.get("synthetic_acc") is not None or after.get("synthetic_acc") is not None:
        label = "synthetic set" if report.get("forget_set", {}).get("kind", "synthetic") == "synthetic" else "forget set"
        rows.append((label, _pct(before.get("synthetic_acc")), _pct(after.get("synthetic_acc"))))
    if real_valid:
        rows += _real_valid_row(report)
    if before.get("target") is not None or after.get("target") is not None:
        rows.append((f"target ({', '.join(report['classes'])})", _pct(before.get("target")), _pct(after.get("target"))))
        rows.append((f"other classes of {report['forget_dataset']}", _pct(before.get("other_classes")),
                     _pct(after.get("other_classes"))))
    for name in sorted(set(before.get("datasets", {})) | set(after.get("datasets", {}))):
        b = before.get("datasets", {}).get(name, {})
        a = after.get("datasets", {}).get(name, {})
        rows.append((f"{name} (all classes)", _pct(b.get("accuracy")), _pct(a.get("accuracy"))))
    return rows


def _render_evaluation_only(report: dict[str, Any]) -> str:
    """``report.md`` of ``validate``/``test``: the given model's accuracies and the suite."""
    lines = [
        f"# Evaluation report ({report['stage']}): {', '.join(report['classes'])}",
        "",
        f"- model: `{report['model']['name']}` (`{report['model']['pretrained']}`)",
        "",
        "| zero-shot accuracy (%) | model |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {a} |" for name, _, a in _rows({**report, "before": {}})]
    if report.get("evaluation"):
        lines += render_markdown_section(report["evaluation"])
    return "\n".join(lines) + "\n"


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: a readable table of the same content as ``report.json``, with the plots."""
    if report.get("stage") in ("validate", "test"):
        return _render_evaluation_only(report)
    lines = [
        f"# Unlearning report: {', '.join(report['classes'])}",
        "",
        f"- model: `{report['model']['name']}` (`{report['model']['pretrained']}`)",
        f"- method: {report['method']['name']} ({report['method']['zero_shot']}); stopped: {report['stop_reason']} after "
        f"{report['optimizer_steps']} optimizer steps, {report['epochs']} epochs",
        f"- sigma per epoch: {report['sigma_history']}",
        "",
        "| zero-shot accuracy (%) | before | after |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {b} | {a} |" for name, b, a in _rows(report)]
    lines += ["", "## Most selected parameter tensors (optimizer steps)", ""]
    top = list(report["selected_parameters"].items())[:15]
    lines += [f"- `{name}`: {count}" for name, count in top] or ["- none recorded"]
    lines += ["", "## Time (seconds)", ""]
    lines += [f"- {k}: {v}" for k, v in report["timings"].items()]
    if "export" in report:
        lines += ["", f"Unlearned weights: `{report['export']}`"]
    if "export_dir" in report:
        lines += ["", f"Unlearned model, an open_clip folder (offline, no project code): "
                      f"`open_clip.create_model_and_transforms(\"local-dir:{report['export_dir']}\")`"]
    if report.get("evaluation"):
        lines += render_markdown_section(report["evaluation"])
    return "\n".join(lines) + "\n"


def print_report(report: dict[str, Any]) -> None:
    """Print the before/after table with Rich, then the evaluation suite's table."""
    from rich.console import Console
    from rich.table import Table

    stage = report.get("stage")
    if stage in ("validate", "test"):
        table = Table(title=f"{stage.capitalize()}: {', '.join(report['classes'])} ({report['model']['name']})")
        table.add_column("zero-shot accuracy (%)")
        table.add_column("model", justify="right")
        for name, _, after in _rows({**report, "before": {}}):
            table.add_row(name, after)
    else:
        table = Table(title=f"Forgetting {', '.join(report['classes'])} ({report['model']['name']})")
        table.add_column("zero-shot accuracy (%)")
        table.add_column("before", justify="right")
        table.add_column("after", justify="right")
        # The printed main table keeps its rows (the real validation images go to the next table).
        for row in _rows(report, real_valid=False):
            table.add_row(*row)
    Console().print(table)
    if report.get("evaluation"):
        extra = [(label, [b, a]) for label, b, a in _real_valid_row(report)] if stage is None else []
        print_evaluation(report["evaluation"], f"Evaluation suite: {', '.join(report['classes'])}", extra)
