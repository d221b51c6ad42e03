"""``lightning-unlearn compare``: methods x classes x seeds, and a Table-1-style comparison.

    lightning-unlearn compare --config configs/demo_compare.yaml \\
        --methods '[lip, emb, amns]' --classes '[kite]' --seeds '[0]' --out DIR

The compare config names the defaults (``methods``, ``classes``, ``seeds``, ``out``), the ``fit``
config(s) every run starts from, and per-method overrides; the four flags override the config.
Each (method, class, seed) is one ``fit`` through the same LightningCLI/Trainer path as
``lightning-unlearn fit`` (in this process), with the method's preset
(:mod:`lightning_unlearn.presets`) applied to the fit config. Each run writes its config,
``report.json``, ``report.md``, ``metrics.csv`` and (``export: true``) ``unlearned.safetensors``
and the open_clip folder ``unlearned/`` to ``DIR/<method>/<class>/seed<k>/``. After every run the comparison is rewritten, atomically:

- ``DIR/compare.csv``: one row per run (``method, class, seed, zero_shot, target_bf, target_af,
  other_bf, other_af``, then ``<dataset>_bf``/``<dataset>_af`` for every other evaluation
  dataset, ``target_attacked_af`` (the forgotten classes' test accuracy after the textual-inversion
  attack, ``evaluation.recovery.inversion``; empty when that section is off),
  ``target_paraphrased_bf/af`` (the forgotten classes' test accuracy when each is named by its
  paraphrases instead of its word, over the paraphrases no method saw,
  ``evaluation.recovery.paraphrases.held_out``), ``other_paraphrased_bf/af`` (the other classes,
  each named by its own paraphrases, ``evaluation.recovery.paraphrases.retained``; both empty when
  the paraphrases section is off), ``synthetic_af,
  real_valid_af, steps, seconds``, then ``forget_dataset, stop_reason,
  status, error``); a run that failed has ``status`` ``failed`` and its error, and the
  comparison goes on;
- ``DIR/compare.md``: the averages over classes and seeds per forget dataset and method (Table 1);
- ``DIR/compare.png``: the target's drop against the collateral drop, one point per method.

Everything that can be checked before a run is checked before the first one (unknown method or
class, a method that needs a split the dataset lacks, an output folder that is not writable, an
override that names nothing): such input raises a :class:`~lightning_unlearn.core.errors.UnlearnError`
and nothing is written. An interrupted comparison run again with the same settings skips the runs
it has finished (same run config, ``status`` ok).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import logging
import os
import re
import shutil
import signal
import statistics
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import yaml

from lightning_unlearn.core.errors import ConfigError, UnknownNameError, UnlearnError
from lightning_unlearn.core.io import atomic_write_json, atomic_write_text, check_output_dir
from lightning_unlearn.core.names import class_key, matches_clause
from lightning_unlearn.presets import (
    PRESETS,
    MethodPreset,
    accepted_args,
    apply_preset,
    get_preset,
    import_class,
    init_parameters,
    set_dotted,
)
from lightning_unlearn.maths.forget_spec import ForgetSpec, Vocabulary, resolve_forget_spec

RUN_FILE = "run.json"  # a finished run's row (written last, atomically)
RUN_CONFIG = "run_config.yaml"  # the fit config the run was given
ALL_METHODS = "*"  # the overrides key that applies to every method
REPORT_CALLBACK = "lightning_unlearn.callbacks.UnlearningReport"
HEAD = ["method", "class", "seed", "zero_shot", "target_bf", "target_af", "other_bf", "other_af"]
TAIL = ["target_attacked_af", "target_paraphrased_bf", "target_paraphrased_af", "other_paraphrased_bf",
        "other_paraphrased_af", "synthetic_af", "real_valid_af", "steps", "seconds", "forget_dataset", "stop_reason", "status", "error"]


@dataclass
class CompareSettings:
    """Settings of a comparison (a compare config; ``--methods``, ``--classes``, ``--seeds`` and
    ``--out`` override the config's values).

    Args:
        methods: short names of the methods (``lightning_unlearn.presets.PRESETS``), in table order.
        classes: classes to forget, one per run, as the forget dataset spells them.
        seeds: seeds; each run's Lightning, synthesis, noise, real-image draw and (where the
            method takes a ``seed``) method use it.
        out: output folder (``<out>/compare.csv``, ``compare.md``, ``compare.png`` and one folder
            per run).
        fit_configs: the fit configs runs start from (files or packaged names); each class runs
            with the one whose forget dataset holds it.
        overrides: per method short name (or ``*`` for all), dotted keys into the run's fit config
            and their values, e.g. ``{amns: {model.init_args.lr: 1.0e-4}}``; a list of callbacks is
            indexed by class name (``trainer.callbacks.NoiseLayerEscalation.init_args.positions``).
        real_data: init args of ``RealForgetDataModule`` for methods on real images, e.g.
            ``{forget_split_kwargs: {demo_objects: {num_per_class: 64}}}``.
        export: keep every run's ``unlearned.safetensors`` and ``unlearned/`` open_clip folder (about the
            model's size per run: the file is a hard link to the folder's weights where the file system allows).
        show_runs: print each run's own output as ``fit`` does (progress bar, tables) instead of
            one progress bar over the runs (``make demo`` shows its two runs this way).
        resume: skip the runs an earlier call of the same comparison finished (False: run them again).
        measure_forget_set: training-free methods keep the fit config's forget DataModule, so their
            reports also measure the forget set (e.g. the synthetic set's accuracy and its
            verification figures); the set is made once per class and cached, so with the paper's
            method in the same comparison it costs nothing.
    """

    methods: list[str] = field(default_factory=lambda: ["lip", "emb", "amns"])
    classes: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    out: str = "runs/compare"
    fit_configs: list[str] = field(default_factory=lambda: ["demo"])
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    real_data: dict[str, Any] = field(default_factory=dict)
    export: bool = True
    show_runs: bool = False
    resume: bool = True
    measure_forget_set: bool = False


@dataclass(frozen=True)
class FitConfig:
    """A fit config and what the runs need of it."""

    name: str
    config: dict[str, Any]
    forget_dataset: Optional[str]
    datasets: tuple[str, ...]
    vocabularies: dict[str, Vocabulary]
    explicit: Optional[Vocabulary]


@dataclass(frozen=True)
class Run:
    """One (method, class, seed) of a comparison."""

    method: str
    cls: str
    seed: int
    fit: FitConfig
    spec: ForgetSpec
    directory: Path

    @property
    def label(self) -> str:
        """``method / class / seed k`` for progress lines."""
        return f"{self.method} / {self.cls} / seed {self.seed}"


@dataclass
class Plan:
    """A checked comparison: its runs and the table's columns."""

    settings: CompareSettings
    runs: list[Run]
    other_datasets: list[str]
    out: Path

    @property
    def columns(self) -> list[str]:
        """``compare.csv``'s columns."""
        return HEAD + [f"{ds}_{when}" for ds in self.other_datasets for when in ("bf", "af")] + TAIL


# --------------------------------------------------------------------------------- checks
def slug(name: str) -> str:
    """A folder name for a class (``toy poodle`` -> ``toy_poodle``)."""
    return re.sub(r"[^0-9A-Za-z.-]+", "_", class_key(name)).strip("_") or "class"


def _unique(values: Sequence[Any], what: str) -> list[Any]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"{what} must be a non-empty list, got {values!r}")
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ConfigError(f"{what} lists {seen[0]!r} twice")
    return list(values)


def load_fit_config(name: str) -> dict[str, Any]:
    """A fit config file or packaged name as a dict (``resolve_config`` finds it)."""
    from lightning_unlearn.trainer_cli import resolve_config

    path = resolve_config(name)
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read fit config {name!r}: {err}") from err
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict) or "data" not in config:
        raise ConfigError(f"{name!r} is not a fit config (it needs 'model' and 'data' sections)")
    return config


def instantiate_data(section: Mapping[str, Any], where: str) -> Any:
    """The DataModule a ``data`` section describes (as LightningCLI would make it)."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    try:
        parsed = parser.parse_object({"data": dict(section)})
        return parser.instantiate_classes(parsed).data
    except UnlearnError:
        raise
    except Exception as err:  # jsonargparse's parse/instantiation errors: one line, the config named
        cause = err.__cause__ if isinstance(err.__cause__, UnlearnError) else None
        if cause is not None:
            raise cause from err
        raise ConfigError(f"{where}: the data section does not work: {str(err).splitlines()[0]}") from err


def _fit_config(name: str, read: dict[str, Vocabulary]) -> FitConfig:
    """A fit config with the vocabularies of its evaluation datasets (``read`` caches them across
    fit configs that share a dataset)."""
    config = load_fit_config(name)
    model_args = config["model"].get("init_args") or {}
    data = instantiate_data(config["data"], f"fit config {name!r}")
    vocabularies = {}
    for dataset_name in data.roots:
        key = json.dumps([dataset_name, data.roots[dataset_name], data.split, data.dataset_kwargs.get(dataset_name)],
                         sort_keys=True, default=str)
        if key not in read:  # the class names only: the runs build the datasets themselves
            read[key] = data.dataset_vocabulary(dataset_name)
        vocabularies[dataset_name] = read[key]
    forget_dataset = model_args.get("forget_dataset")
    explicit = None
    if model_args.get("vocabulary"):
        explicit = Vocabulary(tuple(model_args["vocabulary"]),
                              (model_args.get("vocabulary_template", "a photo of a {}."),))
    return FitConfig(name, config, forget_dataset, tuple(data.roots), vocabularies, explicit)


def _resolve_class(cls: str, fits: Sequence[FitConfig]) -> tuple[FitConfig, ForgetSpec]:
    """The fit config whose forget vocabulary holds ``cls``, and the spec."""
    found, errors = [], []
    for fit in fits:
        args = fit.config["model"].get("init_args") or {}
        try:
            spec = resolve_forget_spec([cls], fit.vocabularies, args.get("forget_prompt", "A picture of {}"),
                                       fit.forget_dataset, fit.explicit)
        except UnknownNameError as err:
            errors.append(err)
            continue
        found.append((fit, spec))
    if len(found) == 1:
        return found[0]
    if found:
        raise ConfigError(f"class {cls!r} is in the forget datasets of several fit configs "
                          f"{[f.name for f, _ in found]}: keep one of them in fit_configs")
    if len(fits) == 1:
        raise errors[0]
    every = sorted({c for f in fits for v in ([f.explicit] if f.explicit else f.vocabularies.values()) for c in v.classnames})
    raise UnknownNameError(f"unknown class {cls!r}: it is in none of the forget datasets of {[f.name for f in fits]}"
                           + matches_clause(cls, every))


def run_config(settings: CompareSettings, run: Run) -> dict[str, Any]:
    """The fit config of ``run``: its preset applied to its fit config, the class and seed set,
    the outputs sent to the run's folder, the overrides applied last."""
    preset = get_preset(run.method)
    config = apply_preset(run.fit.config, preset, keep_forget_set=settings.measure_forget_set)
    config["seed_everything"] = run.seed
    model = config["model"]["init_args"]
    model["forget_classes"] = [run.cls]
    model["noise_seed"] = run.seed
    method = model["method"]
    if "seed" in init_parameters(import_class(method["class_path"], f"method {run.method!r}")):
        method.setdefault("init_args", {})["seed"] = run.seed  # e.g. the edit's prompt draws
    data = config["data"]
    data_cls = import_class(data["class_path"], "DataModule")
    data_args = data.setdefault("init_args", {})
    if preset.uses_real_images:
        data_args.update(settings.real_data)
    shown = settings.show_runs  # a run prints as `fit` does, or stays quiet under compare's own bar
    data_args.update(accepted_args(data_cls, {"seed": run.seed, "progress": shown}))
    trainer = config["trainer"]
    trainer.update({
        "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                   "init_args": {"save_dir": str(run.directory), "name": "", "version": ""}},
        "enable_checkpointing": False,
    })
    if not shown:
        trainer.update({"enable_progress_bar": False, "enable_model_summary": False})
    callbacks = trainer["callbacks"]
    report = next((cb for cb in callbacks if cb.get("class_path", "").endswith(".UnlearningReport")), None)
    if report is None:
        report = {"class_path": REPORT_CALLBACK, "init_args": {}}
        callbacks.append(report)
    report.setdefault("init_args", {}).update({"output_dir": str(run.directory), "print_table": shown})
    if not settings.export:
        report["init_args"].update(export_name=None, export_dir=None)
    for key in (ALL_METHODS, run.method):
        for dotted, value in (settings.overrides.get(key) or {}).items():
            set_dotted(config, dotted, value)
    return config


def plan_comparison(settings: CompareSettings) -> Plan:
    """Check everything that can be checked before a run, and list the runs.

    Raises:
        UnknownNameError: an unknown method or class (close matches in the message).
        ConfigError: a method that is not installed or whose data the dataset cannot give (e.g. no
            ``train`` split for real images), a bad override, empty or repeated lists.
        OutputError: ``out`` cannot be created or written.
    """
    methods = _unique(settings.methods, "methods")
    presets = [get_preset(name) for name in methods]
    classes = _unique(settings.classes, "classes")
    seeds = _unique(settings.seeds, "seeds")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seeds must be ints >= 0, got {seed!r}")
    for key in settings.overrides:
        if key != ALL_METHODS and key not in PRESETS:
            raise UnknownNameError("overrides: " + _unknown_method(key))
    out = Path(settings.out).expanduser()
    check_output_dir(out, "out")
    read: dict[str, Vocabulary] = {}
    fits = [_fit_config(name, read) for name in _unique(settings.fit_configs, "fit_configs")]
    resolved = {cls: _resolve_class(cls, fits) for cls in classes}
    spelled = [(spec.dataset, spec.names[0]) for _, spec in resolved.values()]
    twice = [name for i, name in enumerate(spelled) if name in spelled[:i]]
    if twice:
        raise ConfigError(f"classes names {twice[0][1]!r} twice (as {[c for c in classes if resolved[c][1].names[0] == twice[0][1]]})")
    runs = [
        Run(preset.name, spec.names[0], seed, fit, spec, out / preset.name / slug(spec.names[0]) / f"seed{seed}")
        for cls, (fit, spec) in resolved.items() for seed in seeds for preset in presets
    ]
    _check_runs(settings, runs, presets)
    others = []
    for fit in fits:
        for name in fit.datasets:
            if name not in others and any(r.spec.dataset != name for r in runs if r.fit is fit):
                others.append(name)
    return Plan(settings, runs, others, out)


def _unknown_method(name: str) -> str:
    from lightning_unlearn.core.names import unknown_name_message

    return unknown_name_message("method", name, list(PRESETS), show_all=20)


def _check_runs(settings: CompareSettings, runs: Sequence[Run], presets: Sequence[MethodPreset]) -> None:
    """Each method's class and init args, each run's config, and the real images each needs."""
    checked_data: dict[tuple[int, str], Any] = {}
    for preset in presets:
        method_cls = import_class(preset.method, f"method {preset.name!r}")
        needs_retain = bool(getattr(method_cls, "needs_retain_images", False))
        for run in (r for r in runs if r.method == preset.name):
            config = run_config(settings, run)
            method = config["model"]["init_args"]["method"]
            try:
                method_cls(**method.get("init_args", {}))
            except TypeError as err:
                raise ConfigError(f"method {preset.name!r}: bad init args {method.get('init_args')}: {err}") from err
            if not preset.uses_real_images:
                continue
            if run.spec.dataset is None:
                raise ConfigError(f"method {preset.name!r} ({preset.zero_shot}) needs real images of {run.cls!r} from "
                                  "a dataset, but the fit config gives an explicit vocabulary")
            key = (id(run.fit), preset.name)
            if key not in checked_data:
                checked_data[key] = instantiate_data(config["data"], f"method {preset.name!r}")
            data = checked_data[key]
            if needs_retain and not getattr(data, "provides_retain_images", False):
                raise ConfigError(f"method {preset.name!r} needs retain images: set "
                                  "data.init_args.retain_images_per_class > 0 in its overrides")
            try:
                data.check_available(run.spec, retain=needs_retain)
            except UnlearnError as err:
                raise ConfigError(f"method {preset.name!r} ({preset.zero_shot}) needs real "
                                  f"{getattr(data, 'forget_split', 'train')!r} images of {run.cls!r}: {err}") from err


# --------------------------------------------------------------------------------- running
def _one_line(err: BaseException) -> str:
    from lightning_unlearn.trainer_cli import project_error

    cause = project_error(err) or err
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}".strip()


def _number(value: Any) -> Optional[float]:
    return None if value is None else round(float(value), 4)


def row_from_report(run: Run, report: Mapping[str, Any], other_datasets: Sequence[str]) -> dict[str, Any]:
    """``compare.csv``'s row of a finished run."""
    before, after = report["before"], report["after"]
    row: dict[str, Any] = {
        "method": run.method, "class": run.cls, "seed": run.seed, "zero_shot": report["method"]["zero_shot"],
        "target_bf": _number(before.get("target")), "target_af": _number(after.get("target")),
        "other_bf": _number(before.get("other_classes")), "other_af": _number(after.get("other_classes")),
    }
    for name in other_datasets:
        own = name == run.spec.dataset
        for when, measure in (("bf", before), ("af", after)):
            result = (measure.get("datasets") or {}).get(name) or {}
            row[f"{name}_{when}"] = None if own else _number(result.get("accuracy"))
    synthetic = (report.get("forget_set") or {}).get("kind") == "synthetic"
    recovery = (report.get("evaluation") or {}).get("recovery") or {}
    inversion = recovery.get("inversion") or {}
    paraphrases = recovery.get("paraphrases") or {}
    held_out, retained = paraphrases.get("held_out") or {}, paraphrases.get("retained") or {}
    row.update({
        "target_attacked_af": _number((inversion.get("after") or {}).get("target")),
        "target_paraphrased_bf": _number((held_out.get("before") or {}).get("target")),
        "target_paraphrased_af": _number((held_out.get("after") or {}).get("target")),
        "other_paraphrased_bf": _number(retained.get("before")),
        "other_paraphrased_af": _number(retained.get("after")),
        "synthetic_af": _number(after.get("synthetic_acc")) if synthetic else None,
        "real_valid_af": _number(after.get("real_valid_acc")),
        "steps": int(report.get("optimizer_steps", 0)),
        "forget_dataset": run.spec.dataset, "stop_reason": report.get("stop_reason"), "status": "ok", "error": "",
        # not a compare.csv column: printed at the end, so two users can tell whether they compared the same model
        "model": (report.get("model") or {}).get("name"),
        "model_fingerprint": (report.get("model") or {}).get("fingerprint"),
    })
    return row


def fingerprint_line(rows: Sequence[Optional[Mapping[str, Any]]]) -> Optional[str]:
    """Which weights the runs started from (model name and weights fingerprint), or None if unknown."""
    models = sorted({(str(r.get("model")), str(r["model_fingerprint"])) for r in rows
                     if r is not None and r.get("model_fingerprint")})
    if not models:
        return None
    listed = ", ".join(f"{name} {fingerprint}" for name, fingerprint in models)
    return (f"Weights fingerprint before unlearning: {listed} (the same fingerprint on two machines means the "
            "same model; the demo CLIP pretrains to different weights on different CPUs)")


def failed_row(run: Run, error: str) -> dict[str, Any]:
    """The row of a run that failed."""
    return {"method": run.method, "class": run.cls, "seed": run.seed, "zero_shot": get_preset(run.method).zero_shot,
            "forget_dataset": run.spec.dataset, "status": "failed", "error": error}


def _run_dir_placeholder(value: Any, spellings: Sequence[str]) -> Any:
    """``value`` with every path inside the run's folder written as ``<run>/...``, however spelt."""
    if isinstance(value, dict):
        return {k: _run_dir_placeholder(v, spellings) for k, v in value.items()}
    if isinstance(value, list):
        return [_run_dir_placeholder(v, spellings) for v in value]
    if isinstance(value, str):
        for spelling in spellings:
            if value == spelling or value.startswith(spelling + os.sep):
                return "<run>" + value[len(spelling):]
    return value


def finished_row(run: Run, config: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The saved row of ``run`` if it finished with this very config, else None.

    The run's own folder is compared as a place, not as a spelling: ``--out runs/x`` and
    ``--out /abs/path/runs/x`` name the same runs, so a resume with either finds them."""
    try:
        row = json.loads((run.directory / RUN_FILE).read_text())
        saved = yaml.safe_load((run.directory / RUN_CONFIG).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    ok = isinstance(row, dict) and row.get("status") == "ok" and (run.directory / "report.json").is_file()
    absolute = run.directory.resolve()
    spellings = sorted({str(run.directory), str(absolute), os.path.relpath(absolute)}, key=len, reverse=True)
    same = (_run_dir_placeholder(saved, spellings)
            == _run_dir_placeholder(json.loads(json.dumps(config)), spellings))
    return row if ok and same else None


@contextlib.contextmanager
def _quiet_runs(quiet: bool = True) -> Iterator[None]:
    """Known-harmless warnings off and (``quiet``) Lightning's per-run info lines too."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "lightning_unlearn")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING if quiet else lg.level)
        with warnings.catch_warnings():
            for message in (r".*does not have many workers.*", r".*module\(s\) in eval mode.*",
                            r".*isinstance\(treespec, LeafSpec\).*", r"Experiment logs directory .* exists"):
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class ComparisonStopped(KeyboardInterrupt):
    """Ctrl+C or SIGTERM arrived during a comparison: stop it, keep the runs finished so far."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[Callable[[], Optional[str]]]:
    """While the comparison runs, Ctrl+C and SIGTERM stop all of it, not only the run in progress.

    Lightning turns both into the end of the fit it is running (SIGTERM: a ``SIGTERMException`` at the
    next step; Ctrl+C: ``sys.exit(1)``), which ``execute_run`` would record as a failed run before
    going on with the next one. The handler notes the signal and interrupts (Lightning chains it
    into its own SIGTERM handler during a fit), so the run in progress stays unfinished (rerun on
    resume) and the loop ends. Yields a function returning the signal's name once one arrived.
    """
    received: list[str] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        raise ComparisonStopped(received[0])

    watched = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield lambda: None
        return
    previous = {s: signal.getsignal(s) for s in watched}
    for s in watched:
        signal.signal(s, handler)
    try:
        yield lambda: received[0] if received else None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def execute_run(plan: Plan, run: Run, config: Mapping[str, Any],
                stopped: Callable[[], Optional[str]] = lambda: None) -> dict[str, Any]:
    """Run one fit (in this process) and return its row; a failure becomes a ``failed`` row.

    ``stopped`` tells whether Ctrl+C or SIGTERM arrived (``_stop_on_signals``): then the run is left
    unfinished, without a row, and :class:`ComparisonStopped` ends the comparison."""
    from lightning_unlearn.trainer_cli import main

    if run.directory.exists():
        shutil.rmtree(run.directory)  # an unfinished earlier attempt: start clean
    run.directory.mkdir(parents=True)
    path = run.directory / RUN_CONFIG
    atomic_write_text(path, yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=False))
    start = time.perf_counter()
    try:
        quiet = not plan.settings.show_runs
        with _quiet_runs(quiet):
            main(["fit", "--config", str(path)], quiet=quiet)
        report = json.loads((run.directory / "report.json").read_text())
        row = row_from_report(run, report, plan.other_datasets)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - one run's failure must not end the comparison
        if stopped() is not None:  # Lightning ended the fit because of the signal: not the run's failure
            raise ComparisonStopped(stopped()) from err
        row = failed_row(run, _one_line(err) if not isinstance(err, SystemExit) else
                         f"the run's config was rejected (exit {err.code}; see {path})")
    row["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_json(run.directory / RUN_FILE, row)
    return row


# --------------------------------------------------------------------------------- outputs
def render_csv(plan: Plan, rows: Sequence[Mapping[str, Any]]) -> str:
    """``compare.csv``: one row per run, empty cells where a value does not apply."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=plan.columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in plan.columns})
    return buffer.getvalue()


def _mean(rows: Sequence[Mapping[str, Any]], key: str) -> Optional[float]:
    values = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
    return statistics.fmean(values) if values else None


def _pct(value: Optional[float]) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def summarise(plan: Plan, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Means per (forget dataset, method) over the finished runs, in the methods' order."""
    ok = [r for r in rows if r.get("status") == "ok"]
    groups = []
    datasets = list(dict.fromkeys(r.spec.dataset for r in plan.runs))
    for dataset in datasets:
        for method in plan.settings.methods:
            runs = [r for r in plan.runs if r.method == method and r.spec.dataset == dataset]
            done = [r for r in ok if r["method"] == method and r.get("forget_dataset") == dataset]
            keys = ["target_bf", "target_af", "other_bf", "other_af", "target_attacked_af", "target_paraphrased_bf",
                    "target_paraphrased_af", "other_paraphrased_bf", "other_paraphrased_af", "synthetic_af",
                    "real_valid_af", "steps", "seconds"] + [f"{ds}_{w}" for ds in plan.other_datasets for w in ("bf", "af")]
            groups.append({"dataset": dataset, "method": method, "zero_shot": get_preset(method).zero_shot,
                           "runs": len(runs), "done": len(done), **{k: _mean(done, k) for k in keys}})
    return groups


def render_markdown(plan: Plan, rows: Sequence[Mapping[str, Any]], seconds: Optional[float] = None) -> str:
    """``compare.md``: Table 1's layout (means over classes and seeds), then the failed runs."""
    groups = summarise(plan, rows)
    others = plan.other_datasets
    header = (["forget dataset", "method", "type", "runs", "target BF", "target AF", "target attacked",
               "target paraphrased BF", "target paraphrased AF", "other BF", "other AF", "other paraphrased BF",
               "other paraphrased AF"]
              + [f"{ds} {w}" for ds in others for w in ("BF", "AF")]
              + ["synthetic AF", "real valid AF", "steps", "seconds"])
    classes = list(dict.fromkeys(r.cls for r in plan.runs))
    lines = [
        "# Unlearning comparison",
        "",
        f"Zero-shot accuracy (%), mean over classes {classes} and seeds {plan.settings.seeds} of the finished runs"
        " (BF before, AF after forgetting). `other` = the other classes of the forget dataset; a dataset column is"
        " that whole dataset. Target attacked: the target after the textual-inversion attack on the unlearned"
        " model (evaluation.recovery.inversion; empty when that section is off). Target paraphrased: the target"
        " when named by paraphrases instead of its word, those no method saw (evaluation.recovery.paraphrases.held_out);"
        " other paraphrased: the other classes, each named by its own paraphrases"
        " (evaluation.recovery.paraphrases.retained); empty when that section is off. Type: ZS = no real data, semi ZS = real forget images, not ZS = real forget and retain"
        " images. Synthetic AF: accuracy on the run's synthetic forget set; real valid AF: on real validation images"
        " of the class. Per-run values: compare.csv.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 4 + ["---:"] * (len(header) - 4)) + "|",
    ]
    for g in groups:
        cells = [str(g["dataset"]), g["method"], g["zero_shot"], f"{g['done']}/{g['runs']}",
                 _pct(g["target_bf"]), _pct(g["target_af"]), _pct(g["target_attacked_af"]),
                 _pct(g["target_paraphrased_bf"]), _pct(g["target_paraphrased_af"]), _pct(g["other_bf"]),
                 _pct(g["other_af"]), _pct(g["other_paraphrased_bf"]), _pct(g["other_paraphrased_af"])]
        cells += [_pct(g[f"{ds}_{w}"]) for ds in others for w in ("bf", "af")]
        cells += [_pct(g["synthetic_af"]), _pct(g["real_valid_af"]),
                  "" if g["steps"] is None else f"{g['steps']:.0f}", "" if g["seconds"] is None else f"{g['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r.get("status") == "failed"]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [f"- {r['method']} / {r['class']} / seed {r['seed']}: {r['error']}" for r in failed]
    finished = sum(r.get("status") == "ok" for r in rows)
    lines += ["", f"{finished} of {len(plan.runs)} runs finished"
              + (f"; wall time {seconds / 60:.1f} min" if seconds is not None else "") + "."]
    return "\n".join(lines) + "\n"


def render_plot(plan: Plan, rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """``compare.png``: mean target drop against mean collateral drop (points), one per method."""
    from lightning_unlearn.evaluation.plots import new_figure, save_png

    colours = {"ZS": "tab:blue", "semi ZS": "tab:orange", "not ZS": "tab:red"}
    fig = new_figure(6.4, 4.8, dpi=120)
    ax = fig.subplots()
    points = []
    for method in plan.settings.methods:
        done = [r for r in rows if r.get("status") == "ok" and r["method"] == method]
        target = [100 * (float(r["target_bf"]) - float(r["target_af"])) for r in done if r.get("target_af") is not None]
        other = [100 * (float(r["other_bf"]) - float(r["other_af"])) for r in done if r.get("other_af") is not None]
        if target and other:
            points.append((method, statistics.fmean(other), statistics.fmean(target)))
    top = max([1.0] + [max(abs(x), abs(y)) for _, x, y in points])
    placed: list[tuple[float, float]] = []
    for method, x, y in points:
        ax.scatter([x], [y], color=colours.get(get_preset(method).zero_shot, "tab:gray"), s=40, zorder=3)
        # Stack the labels of points that (nearly) coincide instead of printing them over each other.
        near = sum(abs(x - px) < 0.04 * top and abs(y - py) < 0.04 * top for px, py in placed)
        placed.append((x, y))
        ax.annotate(method, (x, y), textcoords="offset points", xytext=(5, 4 + 10 * near), fontsize=8)
    ax.plot([0, top], [0, top], color="0.7", linestyle="--", linewidth=1, label="collateral = forgetting")
    for kind, colour in colours.items():
        ax.scatter([], [], color=colour, label=kind)
    ax.axhline(0, color="0.85", linewidth=0.8)
    ax.axvline(0, color="0.85", linewidth=0.8)
    ax.set_xlabel("collateral: drop of the other classes (points)")
    ax.set_ylabel("forgetting: drop of the target class (points)")
    ax.set_title("Forgetting against collateral (mean over classes and seeds)")
    ax.legend(fontsize=8, loc="lower right")
    save_png(fig, path)


def write_outputs(plan: Plan, rows: Sequence[Mapping[str, Any]], seconds: Optional[float] = None) -> None:
    """Write compare.csv, compare.md and compare.png (each atomically)."""
    atomic_write_text(plan.out / "compare.csv", render_csv(plan, rows))
    atomic_write_text(plan.out / "compare.md", render_markdown(plan, rows, seconds))
    render_plot(plan, rows, plan.out / "compare.png")


def summary_table(plan: Plan, rows: Sequence[Mapping[str, Any]], width: Optional[int] = None) -> Any:
    """The console's summary: per method (and forget dataset) the target, the other classes and
    every other dataset, before -> after, then (when the paraphrases section ran) the target and
    the other classes named by paraphrases, and the seconds per run (compare.md has every column).

    With ``width`` (the console's), a table wider than that is laid out long instead: one row per
    method and measure, with before and after in two columns, so a narrow terminal or a log file
    (80 columns) shows every number rather than cutting cells to "96.0 -> 4…".
    """
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    other = f"; other domain: {plan.other_datasets[0]}" if len(plan.other_datasets) == 1 else ""
    title = "Unlearning comparison: zero-shot accuracy (%){}, mean over runs" + other
    several = len({r.spec.dataset for r in plan.runs}) > 1
    groups = summarise(plan, rows)
    paraphrased = any(g["target_paraphrased_af"] is not None or g["other_paraphrased_af"] is not None for g in groups)
    measures = ([("target", "target"), ("other", "other classes")] + [(ds, ds) for ds in plan.other_datasets]
                + ([("target_paraphrased", "target paraphrased"), ("other_paraphrased", "other paraphrased")]
                   if paraphrased else []))
    both = lambda g, key: f"{_pct(g[key + '_bf'])} -> {_pct(g[key + '_af'])}" if g[key + "_af"] is not None else ""  # noqa: E731

    def method_cell(g: Mapping[str, Any]) -> str:
        done = "" if g["done"] == g["runs"] else f", {g['done']}/{g['runs']} runs"
        return f"{g['method']} ({g['zero_shot']}{done})"

    seconds = lambda g: "" if g["seconds"] is None else f"{g['seconds']:.0f}"  # noqa: E731
    table = Table(title=title.format(", before -> after"))
    heads = (["forget dataset"] if several else []) + ["method"] + [head for _, head in measures] + ["s"]
    for i, head in enumerate(heads):
        table.add_column(head, justify="left" if i < 1 + several else "right", no_wrap=True)
    for g in groups:
        table.add_row(*([str(g["dataset"])] if several else []), method_cell(g),
                      *[both(g, key) for key, _ in measures], seconds(g))
    unbounded = Console(width=10_000)
    if width is None or Measurement.get(unbounded, unbounded.options, table).maximum <= width:
        return table
    long = Table(title=title.format(""))
    for head in (["forget dataset"] if several else []) + ["method", "measure", "before", "after"]:
        long.add_column(head, justify="right" if head in ("before", "after") else "left")
    for g in groups:
        lines = [(head, _pct(g[key + "_bf"]), _pct(g[key + "_af"])) for key, head in measures
                 if g[key + "_af"] is not None] + [("seconds per run", "", seconds(g))]
        for j, cells in enumerate(lines):  # the method (and dataset) named on its first line, even if all runs failed
            labels = ([str(g["dataset"])] if several else []) + [method_cell(g)]
            long.add_row(*(labels if j == 0 else [""] * len(labels)), *cells, end_section=j == len(lines) - 1)
    return long


def _summary_line(row: Mapping[str, Any]) -> str:
    if row.get("status") != "ok":
        return f"[red]failed[/] {row.get('error', '')}"
    return (f"target {_pct(row['target_bf'])} -> {_pct(row['target_af'])}, other {_pct(row['other_bf'])} -> "
            f"{_pct(row['other_af'])}, {row['steps']} steps, {row['seconds']:.0f} s")


def _run_pending(plan: Plan, rows: list[Optional[dict[str, Any]]], pending: Sequence[int],
                 configs: Sequence[Mapping[str, Any]], skipped: int, console: Any,
                 stopped: Callable[[], Optional[str]]) -> None:
    """Run the unfinished runs in order, writing the outputs after each (``rows`` is filled in place)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if plan.settings.show_runs:  # each run's own progress bar and tables (one live display at a time)
        for i in pending:
            console.rule(f"[bold]{plan.runs[i].label}")
            rows[i] = execute_run(plan, plan.runs[i], configs[i], stopped)
            write_outputs(plan, [r for r in rows if r is not None])
        return
    columns = (TextColumn("[bold]compare[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("", total=len(plan.runs), completed=skipped)
        for i in pending:
            run = plan.runs[i]
            progress.update(task, description=run.label)
            rows[i] = execute_run(plan, run, configs[i], stopped)
            progress.console.print(f"{run.label}: {_summary_line(rows[i])}")
            write_outputs(plan, [r for r in rows if r is not None])
            progress.advance(task)
        progress.update(task, description="done")


def run_comparison(settings: CompareSettings, console: Any = None) -> Path:
    """Check, then run every (method, class, seed) not finished yet; returns the output folder."""
    from rich.console import Console

    plan = plan_comparison(settings)  # raises before anything is written
    console = console or Console()
    plan.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    configs = [run_config(settings, run) for run in plan.runs]
    rows: list[Optional[dict[str, Any]]] = [finished_row(run, cfg) if settings.resume else None
                                            for run, cfg in zip(plan.runs, configs)]
    skipped = sum(row is not None for row in rows)
    if skipped:
        console.print(f"Resuming: {skipped} of {len(plan.runs)} runs already finished in {plan.out}")
    pending = [i for i, row in enumerate(rows) if row is None]
    try:
        with _stop_on_signals() as stopped:
            _run_pending(plan, rows, pending, configs, skipped, console, stopped)
    except ComparisonStopped as stop:
        done = [r for r in rows if r is not None]
        write_outputs(plan, done, time.perf_counter() - start)
        console.print(f"[bold red]Comparison stopped by {stop.signal_name}[/] after {len(done)} of "
                      f"{len(plan.runs)} runs. The finished ones are kept in {plan.out} (compare.csv, "
                      "compare.md); the run in progress is not. The same command resumes.")
        raise SystemExit(128 + (signal.SIGINT if stop.signal_name == "SIGINT" else signal.SIGTERM)) from None
    seconds = time.perf_counter() - start
    write_outputs(plan, [r for r in rows if r is not None], seconds)
    failed = sum(r is not None and r.get("status") == "failed" for r in rows)
    console.print(summary_table(plan, [r for r in rows if r is not None], width=console.width))
    fingerprints = fingerprint_line(rows)
    if fingerprints:
        console.print(fingerprints)
    console.print(f"Comparison written to {plan.out / 'compare.csv'}, compare.md and compare.png "
                  f"({len(plan.runs)} runs, {failed} failed, {seconds / 60:.1f} min)")
    return plan.out


def build_parser() -> Any:
    """The ``lightning-unlearn compare`` parser (jsonargparse): ``--config`` plus the settings."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    methods = ", ".join(f"{p.name} ({p.zero_shot})" for p in PRESETS.values())
    parser = ArgumentParser(
        prog="lightning-unlearn compare",
        description="Run methods x classes x seeds and write a Table-1-style comparison "
                    f"(compare.csv, compare.md, compare.png). Methods: {methods}.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a compare config (file or packaged name)")
    parser.add_class_arguments(CompareSettings)
    return parser


def compare_main(args: Sequence[str]) -> Path:
    """``lightning-unlearn compare ARGS`` (packaged config names are resolved)."""
    from lightning_unlearn.trainer_cli import resolve_config_args

    parser = build_parser()
    parsed = parser.parse_args(resolve_config_args(list(args))).as_dict()
    settings = CompareSettings(**{k: copy.deepcopy(v) for k, v in parsed.items()
                                  if k in CompareSettings.__dataclass_fields__})
    return run_comparison(settings)


__all__ = ["CompareSettings", "Plan", "Run", "build_parser", "compare_main", "plan_comparison", "run_comparison",
           "run_config"]
