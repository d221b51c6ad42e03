"""The evaluation section as table rows (Rich and Markdown) and Markdown with the plots embedded."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

Row = tuple[str, list[str]]


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value: Any) -> str:
    return "-" if value is None else str(value)


def _per_state(states: list[str], get: Any, fmt: Any = _pct) -> list[str]:
    out = []
    for state in states:
        try:
            out.append(fmt(get(state)))
        except (KeyError, TypeError):
            out.append("-")
    return out


def evaluation_rows(evaluation: Mapping[str, Any]) -> list[Row]:
    """One ``(label, [value per state])`` row per headline figure of the evaluation section."""
    states = list(evaluation["states"])
    rows: list[Row] = []
    templates = evaluation.get("templates") or {}
    keys = [k for k in templates if k != "mean"]
    for key in keys + (["mean"] if len(keys) > 1 else []):
        name = "mean of the templates" if key == "mean" else f"'{key}'"
        entry = templates[key]
        rows.append((f"target @ {name}", _per_state(states, lambda s, e=entry: e[s]["target"])))
        rows.append((f"other classes @ {name}", _per_state(states, lambda s, e=entry: e[s]["other_classes"])))
    retrieval = evaluation.get("retrieval")
    if retrieval:
        ks = [f"p@{k}" for k in retrieval["k"]]
        for kind in ("image_from_text", "image_from_image"):
            for group, label in (("target", "target"), ("other_classes", "other classes")):
                rows.append((
                    f"{kind.replace('_', ' ')}, {label} {'/'.join(ks)}",
                    _per_state(states, lambda s, k=kind, g=group: " / ".join(_pct(retrieval[k][s][g][p]) for p in ks),
                               fmt=str),
                ))
    verification = evaluation.get("verification")
    if verification:
        for group in ("real", "synthetic"):
            section = verification.get(group)
            if not section:
                continue
            rows.append((f"{group} forget images: accuracy", _per_state(states, lambda s, v=section: v["accuracy"][s])))
            rows.append((f"{group} forget images: median class probability",
                         _per_state(states, lambda s, v=section: v["probability"][s]["median"])))
    recovery = evaluation.get("recovery") or {}
    probe = recovery.get("linear_probe")
    if probe:
        rows.append(("linear probe (balanced accuracy)", _per_state(states, lambda s: probe[s])))
    means = recovery.get("nearest_class_mean")
    if means:
        rows.append(("nearest class mean (balanced accuracy)", _per_state(states, lambda s: means[s])))
    inversion = recovery.get("inversion")
    if inversion and inversion.get("skipped"):
        rows.append(("inversion attack", ["skipped"] * len(states)))
    elif inversion:
        rows.append(("target, inversion attack", _per_state(states, lambda s: inversion[s]["target"])))
        rows.append(("other classes, inversion attack", _per_state(states, lambda s: inversion[s]["other_classes"])))
    relearn = recovery.get("relearn")
    if relearn:
        value = _num(relearn["steps_to_half"]) if relearn["goal"] is not None else "no goal"
        if relearn["goal"] is not None and relearn["steps_to_half"] is None:
            value = f"> {relearn['steps']}"
        rows.append((f"relearning: steps to {_pct(relearn['goal'])}% target accuracy",
                     ["-"] * (len(states) - 1) + [value]))
    paraphrases = recovery.get("paraphrases")
    if paraphrases:
        rows.append(("target @ paraphrases (mean)", _per_state(states, lambda s: paraphrases["mean"][s]["target"])))
        held_out = paraphrases.get("held_out")
        # no bank: the same as the mean; every paraphrase in the bank: nothing held out to show
        if held_out and held_out.get("prompts") and any((paraphrases.get("in_bank") or {}).values()):
            rows.append((f"target @ held-out paraphrases ({held_out['prompts']})",
                         _per_state(states, lambda s: held_out[s]["target"])))
        retained = paraphrases.get("retained")
        if retained:
            rows.append((f"other classes @ their paraphrases ({retained['classes']} classes)",
                         _per_state(states, lambda s: retained[s])))
    return rows


def render_markdown_section(evaluation: Mapping[str, Any]) -> list[str]:
    """``report.md`` lines of the evaluation section: a table, then the plots."""
    states = list(evaluation["states"])
    lines = ["", "## Evaluation suite", "",
             "| measure (%, or steps) | " + " | ".join(states) + " |",
             "|---|" + "---:|" * len(states)]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in evaluation_rows(evaluation)]
    plots = evaluation.get("plots") or []
    if plots:
        lines += ["", "### Plots", ""]
        for path in plots:
            title = path.rsplit("/", 1)[-1].removesuffix(".png")
            lines += [f"![{title}]({path})", ""]
    return lines


def print_evaluation(evaluation: Mapping[str, Any], title: str, extra: Sequence[Row] = ()) -> None:
    """Print the evaluation section as a Rich table (``extra`` rows first)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("evaluation suite (%, or steps)")
    for state in evaluation["states"]:
        table.add_column(state, justify="right")
    for label, values in [*extra, *evaluation_rows(evaluation)]:
        table.add_row(label, *values)
    Console().print(table)
