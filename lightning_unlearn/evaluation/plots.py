"""The report's plots (matplotlib, drawn off-screen; no pyplot state, no display needed).

:func:`write_plots` draws what the evaluation section and the run hold and returns the PNG paths
relative to the report's folder. A plot that fails to render is a warning, never an error: the
report is written all the same, without that plot.
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from lightning_unlearn.core.io import atomic_path
from lightning_unlearn.core.errors import ConfigError

#: Folder of the plots, relative to the report.
PLOTS_DIR = "plots"
_COLOURS = {"before": "#4c72b0", "after": "#dd8452"}


def new_figure(width: float, height: float, dpi: int = 100) -> Any:
    """A matplotlib ``Figure`` that needs no pyplot (no global backend, no figure registry)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def save_png(fig: Any, path: Path) -> None:
    """Write ``fig`` as a PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _pct(value: Optional[float]) -> float:
    return float("nan") if value is None else 100.0 * float(value)


def to_pixels(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Images in a model's normalised space -> ``[N, H, W, 3]`` pixels in [0, 1]."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1)


def plot_samples(path: Path, rows: Mapping[str, torch.Tensor], per_row: int = 8) -> None:
    """A grid of images: one row per label (e.g. ``synthetic anchor``, ``real anchor``), pixels in [0, 1]."""
    rows = {label: images[:per_row] for label, images in rows.items() if len(images)}
    if not rows:
        raise ConfigError("no images to show")
    columns = max(len(images) for images in rows.values())
    fig = new_figure(1.1 * columns + 1.2, 1.15 * len(rows) + 0.3)
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(images[c].numpy(), interpolation="nearest")
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("Forget images (model input)")
    save_png(fig, path)


def _bars(ax: Any, groups: Sequence[str], series: Mapping[str, Sequence[float]], ylabel: str) -> None:
    """Grouped bars: one group per entry of ``groups``, one bar per series."""
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        state = name.rsplit(" ", 1)[-1]
        hatch = "//" if name.startswith("other") else None
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=name, color=_COLOURS.get(state), hatch=hatch, edgecolor="white")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 105)


def _short(template: str, width: int = 22) -> str:
    return "\n".join(textwrap.wrap(template, width)) or template


def plot_template_bars(path: Path, evaluation: Mapping[str, Any], forget_dataset: Optional[str]) -> None:
    """Zero-shot accuracy per dataset and template (and their mean), before/after."""
    templates = evaluation["templates"]
    states = evaluation["states"]
    keys = list(templates)
    datasets = list(next(iter(templates.values()))[states[0]]["datasets"])
    fig = new_figure(max(6.0, 1.4 * len(keys) + 2), 3.0 * len(datasets))
    axes = fig.subplots(len(datasets), 1, squeeze=False)
    for ax, name in zip((a[0] for a in axes), datasets):
        series: dict[str, list[float]] = {}
        own = name == forget_dataset
        for state in states:
            entries = [templates[k][state]["datasets"][name] for k in keys]
            if own:
                series[f"target {state}"] = [_pct(e["target"]) for e in entries]
                series[f"other classes {state}"] = [_pct(e["other_classes"]) for e in entries]
            else:
                series[f"all classes {state}"] = [_pct(e["accuracy"]) for e in entries]
        _bars(ax, [_short(k) for k in keys], series, "zero-shot accuracy (%)")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_png(fig, path)


def plot_trace(path: Path, trace: Mapping[str, Any]) -> None:
    """The escalation trace: synthetic (and real validation) accuracy, sigma and k per step."""
    synthetic = list(trace.get("synthetic_acc") or [])
    if not synthetic:
        raise ConfigError("no validation step was recorded")
    steps = list(range(1, len(synthetic) + 1))
    fig = new_figure(7.0, 5.0)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(steps, [_pct(v) for v in synthetic], marker=".", label="synthetic set")
    real = trace.get("real_valid_acc") or []
    if any(v is not None for v in real):
        top.plot(steps[: len(real)], [_pct(v) for v in real], marker=".", label="real validation")
    top.set_ylabel("forget accuracy (%)")
    top.set_ylim(0, 105)
    top.legend(fontsize=8)
    sigma = trace.get("sigma") or []
    bottom.step(steps[: len(sigma)], sigma, where="post", color="black", label="sigma")
    bottom.set_ylabel("sigma")
    bottom.set_xlabel("validation step")
    ks = trace.get("k") or {}
    if ks:
        twin = bottom.twinx()
        for group, values in ks.items():
            twin.step(steps[: len(values)], values, where="post", linestyle="--", label=f"k {group}")
        twin.set_ylabel("k (selected tensors)")
        twin.legend(fontsize=8, loc="lower right")
    bottom.legend(fontsize=8, loc="upper left")
    save_png(fig, path)


def plot_retrieval(path: Path, retrieval: Mapping[str, Any], states: Sequence[str]) -> None:
    """Precision@k of both retrieval kinds, target and other classes, before/after."""
    ks = [f"p@{k}" for k in retrieval["k"]]
    fig = new_figure(9.0, 3.2)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    for ax, kind in zip(axes, ("image_from_text", "image_from_image")):
        series = {}
        for state in states:
            for group, label in (("target", "target"), ("other_classes", "other classes")):
                series[f"{label} {state}"] = [_pct(retrieval[kind][state][group][k]) for k in ks]
        _bars(ax, ks, series, "precision (%)")
        ax.set_title(kind.replace("_", " "), fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_png(fig, path)


def _attempt(name: str, draw: Callable[[], None], written: list[str], relative: str) -> None:
    try:
        draw()
    except Exception as err:  # noqa: BLE001 - a plot must never cost the report
        warnings.warn(f"plot {name!r} could not be rendered and is left out of the report: {err}", RuntimeWarning,
                      stacklevel=2)
        return
    written.append(relative)


def write_plots(
    out_dir: Path,
    evaluation: Mapping[str, Any],
    forget_dataset: Optional[str] = None,
    trace: Optional[Mapping[str, Any]] = None,
    samples: Optional[Mapping[str, torch.Tensor]] = None,
) -> list[str]:
    """Draw every plot the data allows into ``out_dir/plots``; returns the paths written,
    relative to ``out_dir``. Failures are warnings (the plot is left out)."""
    folder = Path(out_dir) / PLOTS_DIR
    written: list[str] = []
    if samples:
        _attempt("samples", lambda: plot_samples(folder / "samples.png", samples), written, f"{PLOTS_DIR}/samples.png")
    if evaluation.get("templates"):
        _attempt("accuracy", lambda: plot_template_bars(folder / "accuracy.png", evaluation, forget_dataset), written,
                 f"{PLOTS_DIR}/accuracy.png")
    if trace and trace.get("synthetic_acc"):
        _attempt("escalation", lambda: plot_trace(folder / "escalation.png", trace), written,
                 f"{PLOTS_DIR}/escalation.png")
    if evaluation.get("retrieval"):
        _attempt("retrieval", lambda: plot_retrieval(folder / "retrieval.png", evaluation["retrieval"],
                                                     evaluation["states"]), written, f"{PLOTS_DIR}/retrieval.png")
    return written
