"""``UnlearningReport``: before/after evaluation, the evaluation suite, report files and the open_clip export."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from lightning_unlearn.callbacks.escalation import NoiseLayerEscalation
from lightning_unlearn.callbacks.selection import GradientLayerSelection
from lightning_unlearn.callbacks.stopping import SyntheticAccuracyStopping
from lightning_unlearn.datamodules.evaluation_data import EvaluationDataModule
from lightning_unlearn.datamodules.forget import ForgetDataModule
from lightning_unlearn.core.errors import ConfigError, OutputError, UnlearnError
from lightning_unlearn.evaluation.encodings import StateEncodings
from lightning_unlearn.evaluation.suite import REFERENCE_METADATA_KEY, assemble, section_seconds
from lightning_unlearn.clip.export import OPEN_CLIP_WEIGHTS, write_open_clip_folder
from lightning_unlearn.core.io import (
    atomic_link,
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    save_open_clip_weights,
)
from lightning_unlearn.callbacks.run_report import build_evaluation_report, build_report, print_report, render_markdown


class UnlearningReport(Callback):
    """Evaluates before and after unlearning and writes what a user keeps.

    At fit start (before a training-free method edits the weights) it measures the forget-set
    accuracy, the zero-shot accuracy on every evaluation dataset and the module's evaluation
    suite (``UnlearningModule(evaluation=...)``, sharing the same image features); at fit end
    (after the escalation callback has loaded the best state) it measures again and writes, in
    ``output_dir`` (default: the trainer's log directory): ``report.json`` (the suite under
    ``evaluation``), ``report.md`` with the plots (``plots/*.png``) embedded, and the unlearned
    model as an open_clip model folder ``<export_dir>`` (``open_clip_config.json``, the weights
    and, for a Hugging Face text tower, its config and tokenizer: plain open_clip loads it with
    ``open_clip.create_model_and_transforms("local-dir:<folder>")``, offline, from any working
    directory; see :mod:`lightning_unlearn.clip.export`) and its weights as ``<export_name>``
    (safetensors, loadable with ``open_clip.create_model_and_transforms(name, pretrained=<file>)``;
    a hard link to the folder's weights where the file system allows, so no second copy). The
    weights' metadata keeps the target accuracy before unlearning, the relearning probe's
    reference in a later ``validate``.
    Where the DataModule has real validation images of the forgotten classes
    (``real_valid_images``), their accuracy is measured before, after and at every epoch end
    (logged as ``forget/real_valid_acc``; the report's ``real_valid_history`` and
    ``before``/``after.real_valid_acc``). Every file is written atomically on global rank zero;
    evaluation runs on every rank (counts are summed).

    In ``validate``/``test`` it writes the same files for the given weights (no export): the
    suite's figures of that single state are under ``after`` (e.g.
    ``evaluation.templates.<template>.after.target``), so they compare with the ``after`` of the
    report the weights came from.

    Args:
        output_dir: where to write; default ``trainer.log_dir``. A folder that can certainly not
            be created (a file in its path, a read-only parent) is rejected here, before any work;
            the default is checked in ``setup``.
        evaluate_before: evaluate the datasets before unlearning.
        evaluate_after: evaluate the datasets after unlearning.
        export_name: file name of the exported weights (None: no such file).
        export_dir: name of the exported open_clip model folder (None: no folder). If it cannot be
            written (no open_clip config is known for the model), a warning says why and the
            weights file is written (``export_name``, else ``unlearned.safetensors``).
        print_table: print a Rich table of the results at the end.

    Attributes:
        selection: the run's :class:`GradientLayerSelection` (the report's ``selected_parameters``
            and the ``k`` trace), or None.
        escalation: the run's :class:`NoiseLayerEscalation` (sigma and monitor histories, undone
            epochs, ``stop_reason``), or None.
        stopping: the run's :class:`SyntheticAccuracyStopping` (``stop_reason: goal_reached``), or None.

        Set them to connect the report (``report.escalation = escalation``); ``UnlearningModule``
        connects those of its run that are left ``None``.
    """

    def __init__(
        self,
        output_dir: Optional[str] = None,
        evaluate_before: bool = True,
        evaluate_after: bool = True,
        export_name: Optional[str] = "unlearned.safetensors",
        print_table: bool = True,
        export_dir: Optional[str] = "unlearned",
    ) -> None:
        if export_name is not None and not export_name.endswith(".safetensors"):
            raise ConfigError(f"export_name must end with '.safetensors', got {export_name!r}")
        if export_dir is not None and (not isinstance(export_dir, str) or export_dir in ("", ".", "..")
                                       or "/" in export_dir or "\\" in export_dir or export_dir == export_name):
            raise ConfigError(
                f"export_dir must be a folder name inside the output folder (no '/', not '.', '..' or the "
                f"export_name), got {export_dir!r}"
            )
        if output_dir is not None:
            check_output_dir(output_dir)
        self.output_dir = output_dir
        self.evaluate_before = evaluate_before
        self.evaluate_after = evaluate_after
        self.export_name = export_name
        self.export_dir = export_dir
        self.print_table = print_table
        self._announce: Optional[Path] = None  # output folder whose report is still to be shown
        self.before: dict[str, Any] = {}
        self.after: dict[str, Any] = {}
        self.suite_states: dict[str, dict[str, Any]] = {}  # the evaluation suite's figures per state
        self.timings: dict[str, float] = {}
        self._start = 0.0
        self._running = False  # between on_fit_start and on_fit_end
        self.synthetic_acc_history: list[float] = []
        self.real_valid_history: list[float] = []
        # per validation step of the fit: the escalation trace (plots)
        self.trace: dict[str, Any] = {"synthetic_acc": [], "real_valid_acc": [], "sigma": [], "k": {}}
        self.report: Optional[dict[str, Any]] = None
        self.selection: Optional[GradientLayerSelection] = None
        self.escalation: Optional[NoiseLayerEscalation] = None
        self.stopping: Optional[SyntheticAccuracyStopping] = None

    def _out_dir(self, trainer: pl.Trainer) -> Path:
        return Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage not in ("fit", "validate", "test"):
            return
        out = self._out_dir(trainer)
        ok = True  # rank zero decides, before any work
        if trainer.is_global_zero:
            try:
                out.mkdir(parents=True, exist_ok=True)
                tempfile.TemporaryFile(dir=out).close()
            except OSError:
                ok = False
        if not trainer.strategy.reduce_boolean_decision(ok, all=True):
            raise OutputError(f"output folder {str(out)!r} is not writable; choose another output_dir")

    def _measure(self, trainer: pl.Trainer, pl_module: Any, run_datasets: bool, state: str) -> dict[str, Any]:
        dm = trainer.datamodule
        result: dict[str, Any] = {}
        t0 = time.perf_counter()
        synthetic = None
        # This state's class embeddings and forget-image features, encoded once for every measure
        # below (the weights do not change in between; the next state gets new ones).
        encodings = StateEncodings(pl_module)
        if state == "before":  # which weights the run started from: the same fingerprint, the same model
            result["weights_fingerprint"] = pl_module.weights_fingerprint()
        if isinstance(dm, ForgetDataModule):
            forget = dm.forget_set
            result["synthetic_acc"] = pl_module.synthetic_accuracy(forget.images, forget.labels, encodings=encodings)
            real = dm.real_valid_set
            if real is not None:
                result["real_valid_acc"] = pl_module.synthetic_accuracy(real.images, real.labels, encodings=encodings)
            synthetic = (forget.images, forget.labels)
        if run_datasets and isinstance(dm, EvaluationDataModule):
            shards: dict[str, Any] = {}  # the image features, shared with the evaluation suite
            result["datasets"] = pl_module.evaluate_datasets(
                dm.evaluation_loaders(trainer.global_rank, trainer.world_size), shards=shards, encodings=encodings)
            result["seconds"] = time.perf_counter() - t0
            runner = getattr(pl_module, "evaluation_runner", None)
            if runner is not None and result["datasets"]:  # no evaluation dataset: nothing to measure
                reference = self._reference(trainer, pl_module) if state == "after" else None
                self.suite_states[state] = runner.run(state, trainer, shards, synthetic, reference, encodings=encodings)
        result.setdefault("seconds", time.perf_counter() - t0)
        return result

    def _reference(self, trainer: pl.Trainer, pl_module: Any) -> Optional[float]:
        """Target accuracy before unlearning (the suite's figure), the relearning goal's base."""
        dataset = pl_module.evaluation_runner.target_dataset(trainer.datamodule) if pl_module.evaluation_runner else None
        accuracy = self.suite_states.get("before", {}).get("accuracy", {})
        return accuracy.get(dataset, {}).get("target") if dataset else None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()
        self._running = True
        if self.before:  # resumed: "before" was measured on the original weights
            return
        self.suite_states = {}
        self.before = self._measure(trainer, pl_module, self.evaluate_before, "before")
        self.timings["evaluate_before"] = self.before.pop("seconds")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._finish_evaluation(trainer, pl_module, "validate")
            return
        value = trainer.callback_metrics.get("forget/synthetic_acc")
        if trainer.state.fn == "fit" and not trainer.sanity_checking and value is not None:
            self.synthetic_acc_history.append(float(value))
            self._record_trace(trainer, pl_module, float(value))

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish_evaluation(trainer, pl_module, "test")

    def _record_trace(self, trainer: pl.Trainer, pl_module: Any, synthetic_acc: float) -> None:
        """One validation step of the escalation trace: forget accuracies, sigma and each group's k."""
        real = trainer.callback_metrics.get("forget/real_valid_acc")
        self.trace["synthetic_acc"].append(synthetic_acc)
        self.trace["real_valid_acc"].append(None if real is None else float(real))
        self.trace["sigma"].append(float(getattr(pl_module, "sigma", float("nan"))))
        for group, k in (self.selection.current_k if self.selection is not None else {}).items():
            self.trace["k"].setdefault(group, []).append(int(k))

    def _finish_evaluation(self, trainer: pl.Trainer, pl_module: Any, stage: str) -> None:
        """validate/test: write the report of the given weights (the suite ran in the module)."""
        results = getattr(pl_module, "evaluation_results", None)
        if trainer.sanity_checking or not results:
            return
        self.report = build_evaluation_report(trainer, pl_module, stage)
        self.report["evaluation"] = assemble(pl_module.evaluation, results)
        self.report["timings"] = section_seconds(results)
        self._write(self._out_dir(trainer), pl_module, export=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Real validation images of the forgotten classes: measured (on every rank, identically)
        # and logged at every epoch end, including an epoch a stopping callback cut short; never a
        # stopping signal. Placed after NoiseLayerEscalation (as in the shipped configs), this sees
        # the weights the run goes on from: an undone epoch measures its restored start.
        dm = trainer.datamodule
        real = dm.real_valid_set if isinstance(dm, ForgetDataModule) else None
        if real is None:
            return
        value = pl_module.synthetic_accuracy(real.images, real.labels)
        self.real_valid_history.append(value)
        pl_module.log("forget/real_valid_acc", value, on_step=False, on_epoch=True, batch_size=len(real.labels))

    def state_dict(self) -> dict[str, Any]:
        timings = dict(self.timings)
        if self._running:  # a checkpoint during the fit: count the unlearning time so far, so a resume adds to it
            timings["unlearn"] = timings.get("unlearn", 0.0) + time.perf_counter() - self._start
        return {"before": self.before, "timings": timings, "synthetic_acc_history": list(self.synthetic_acc_history),
                "real_valid_history": list(self.real_valid_history),
                "suite_before": self.suite_states.get("before", {}),
                "trace": json.loads(json.dumps(self.trace))}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = state_dict.get("before", {})
        self.suite_states = {"before": state_dict["suite_before"]} if state_dict.get("suite_before") else {}
        self.timings = dict(state_dict.get("timings", {}))
        self.synthetic_acc_history = list(state_dict.get("synthetic_acc_history", []))
        self.real_valid_history = list(state_dict.get("real_valid_history", []))
        trace = state_dict.get("trace") or {}
        self.trace = {"synthetic_acc": list(trace.get("synthetic_acc", [])),
                      "real_valid_acc": list(trace.get("real_valid_acc", [])),
                      "sigma": list(trace.get("sigma", [])), "k": dict(trace.get("k", {}))}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timings["unlearn"] = self.timings.get("unlearn", 0.0) + time.perf_counter() - self._start
        self._running = False
        self.after = self._measure(trainer, pl_module, self.evaluate_after, "after")
        self.timings["evaluate_after"] = self.after.pop("seconds")
        dm = trainer.datamodule
        if isinstance(dm, ForgetDataModule):
            self.timings["synthesis"] = float(dm.forget_set.seconds)
        self.report = build_report(trainer, pl_module, self.before, self.after, self.timings, self.synthetic_acc_history,
                                   real_valid_history=self.real_valid_history, selection=self.selection,
                                   escalation=self.escalation, stopping=self.stopping)
        states = {name: self.suite_states[name] for name in ("before", "after") if name in self.suite_states}
        if states:
            self.report["evaluation"] = {**assemble(pl_module.evaluation, states), "trace": self.trace}
            self.report["timings"].update(section_seconds(states))
            verification = self.report["evaluation"]["verification"]
            if verification is not None and isinstance(dm, ForgetDataModule):
                # the synthesis targets that the real images' medians set (synthesis_target_from_real)
                verification["synthesis_target_from_real"] = dm.forget_set.info.get("target_from_real")
        # On every rank: `trainer.log_dir` is a collective (a broadcast from rank 0) under DDP, so it
        # must not be resolved inside the rank-zero-only write (rank 1 would never join it).
        self._write(self._out_dir(trainer), pl_module)

    def _samples(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, Any]:
        """Images for the samples plot: synthetic forget images and the real ones, per class (pixels)."""
        from lightning_unlearn.evaluation.plots import to_pixels

        rows: dict[str, Any] = {}
        names = dict(enumerate(pl_module.spec.vocabulary.classnames))
        dm = trainer.datamodule
        if trainer.state.fn == "fit" and isinstance(dm, ForgetDataModule):
            forget = dm.forget_set
            pixels = to_pixels(forget.images, pl_module.image_mean, pl_module.image_std)
            for label in forget.labels.unique().tolist():
                rows[f"{forget.kind} {names[label]}"] = pixels[forget.labels == label]
        runner = pl_module.evaluation_runner
        if runner is not None and runner.real_images is not None and pl_module.evaluation.verification_images:
            classnames = dm.eval_datasets[runner.real_dataset].classnames
            pixels = to_pixels(runner.real_images, pl_module.image_mean, pl_module.image_std)
            for label in runner.real_labels.unique().tolist():
                rows[f"real {classnames[label]}"] = pixels[runner.real_labels == label]
        return rows

    @rank_zero_only
    def _write(self, out: Path, pl_module: Any, export: bool = True) -> None:
        evaluation = self.report.get("evaluation")
        if export and (self.export_name or self.export_dir):
            self._export(out, pl_module, evaluation)
        if evaluation is not None:
            evaluation["plots"] = self._plots(out, pl_module) if pl_module.evaluation.plots else []
        atomic_write_json(out / "report.json", self.report)
        atomic_write_text(out / "report.md", render_markdown(self.report))
        self._announce = out  # printed in `teardown`, once the progress bar has finished

    def _export(self, out: Path, pl_module: Any, evaluation: Optional[dict[str, Any]]) -> None:
        """The open_clip folder and/or the weights file (the folder's weights, linked)."""
        metadata = {"model": pl_module.hparams.model_name}
        if evaluation and evaluation["recovery"].get("relearn") is not None:
            reference = evaluation["recovery"]["relearn"].get("reference")
            if reference is not None:
                metadata[REFERENCE_METADATA_KEY] = json.dumps(reference)
        weights = None
        if self.export_dir:
            try:
                folder = write_open_clip_folder(out / self.export_dir, pl_module.model, pl_module.hparams.model_name,
                                                pl_module.tokenizer, metadata=metadata)
            except UnlearnError as err:  # e.g. an hf-hub: model whose config is not cached: keep the run's files
                rank_zero_warn(f"the open_clip folder {self.export_dir!r} was not written ({err}); the weights file "
                               "and the report are")
            else:
                self.report["export_dir"] = str(folder)
                weights = folder / OPEN_CLIP_WEIGHTS
        if self.export_name or weights is None:
            path = out / (self.export_name or "unlearned.safetensors")
            if weights is not None:
                atomic_link(weights, path)
            else:
                save_open_clip_weights(path, pl_module.model, metadata=metadata)
            self.report["export"] = str(path)

    def _plots(self, out: Path, pl_module: Any) -> list[str]:
        """Write the plots; any failure is a warning and the report is written without that plot."""
        import warnings

        from lightning_unlearn.evaluation.plots import write_plots

        start = time.perf_counter()
        try:
            samples = self._samples(pl_module.trainer, pl_module)
        except Exception as err:  # noqa: BLE001 - a plot must never cost the report
            warnings.warn(f"the samples plot could not be prepared: {err}", RuntimeWarning, stacklevel=2)
            samples = {}
        evaluation = self.report["evaluation"]
        written = write_plots(out, evaluation, evaluation.get("target_dataset"), evaluation.get("trace"), samples)
        self.report.setdefault("timings", {})["evaluation/plots"] = round(time.perf_counter() - start, 4)
        return written

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        out, self._announce = self._announce, None
        if out is None or not trainer.is_global_zero:
            return
        # A live Rich bar would redraw itself below the table: close it first (idempotent) so the
        # table and the file names are the last lines of the run.
        bar = trainer.progress_bar_callback
        if bar is not None and bar is not self:
            bar.teardown(trainer, pl_module, stage)
        if self.print_table:
            print_report(self.report)  # the main table, then the evaluation suite's
        rank_zero_info(f"Report written to {out / 'report.json'} and {out / 'report.md'}")
