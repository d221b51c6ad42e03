"""``UnlearningReport``: before/after evaluation, report files and the open_clip export."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lightning_unlearn.datamodules.evaluation import EvaluationDataModule
from lightning_unlearn.datamodules.forget import ForgetDataModule
from lightning_unlearn.errors import ConfigError, OutputError
from lightning_unlearn.io import atomic_write_json, atomic_write_text, check_output_dir, save_open_clip_weights
from lightning_unlearn.report import build_report, print_report, render_markdown


class UnlearningReport(Callback):
    """Evaluates before and after unlearning and writes what a user keeps.

    At fit start (before a training-free method edits the weights) it measures the forget-set
    accuracy and the zero-shot accuracy on every evaluation dataset; at fit end (after the
    escalation callback has loaded the best state) it measures again and writes, in
    ``output_dir`` (default: the trainer's log directory): ``report.json``, ``report.md`` and the
    unlearned weights as ``<export_name>`` (safetensors, loadable with
    ``open_clip.create_model_and_transforms(name, pretrained=<file>)``). Every file is written
    atomically on global rank zero; evaluation runs on every rank (counts are summed).

    Args:
        output_dir: where to write; default ``trainer.log_dir``. A folder that can certainly not
            be created (a file in its path, a read-only parent) is rejected here, before any work;
            the default is checked in ``setup``.
        evaluate_before: evaluate the datasets before unlearning.
        evaluate_after: evaluate the datasets after unlearning.
        export_name: file name of the exported weights (None: no export).
        print_table: print a Rich table of the results at the end.
    """

    def __init__(
        self,
        output_dir: Optional[str] = None,
        evaluate_before: bool = True,
        evaluate_after: bool = True,
        export_name: Optional[str] = "unlearned.safetensors",
        print_table: bool = True,
    ) -> None:
        if export_name is not None and not export_name.endswith(".safetensors"):
            raise ConfigError(f"export_name must end with '.safetensors', got {export_name!r}")
        if output_dir is not None:
            check_output_dir(output_dir)
        self.output_dir = output_dir
        self.evaluate_before = evaluate_before
        self.evaluate_after = evaluate_after
        self.export_name = export_name
        self.print_table = print_table
        self._announce: Optional[Path] = None  # output folder whose report is still to be shown
        self.before: dict[str, Any] = {}
        self.after: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self._start = 0.0
        self._running = False  # between on_fit_start and on_fit_end
        self.synthetic_acc_history: list[float] = []
        self.report: Optional[dict[str, Any]] = None

    def _out_dir(self, trainer: pl.Trainer) -> Path:
        return Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
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

    def _measure(self, trainer: pl.Trainer, pl_module: Any, run_datasets: bool) -> dict[str, Any]:
        dm = trainer.datamodule
        result: dict[str, Any] = {}
        t0 = time.perf_counter()
        if isinstance(dm, ForgetDataModule):
            forget = dm.forget_set
            result["synthetic_acc"] = pl_module.synthetic_accuracy(forget.images, forget.labels)
        if run_datasets and isinstance(dm, EvaluationDataModule):
            result["datasets"] = pl_module.evaluate_datasets(dm.evaluation_loaders(trainer.global_rank,
                                                                                   trainer.world_size))
        result["seconds"] = time.perf_counter() - t0
        return result

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()
        self._running = True
        if self.before:  # resumed: "before" was measured on the original weights
            return
        self.before = self._measure(trainer, pl_module, self.evaluate_before)
        self.timings["evaluate_before"] = self.before.pop("seconds")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get("forget/synthetic_acc")
        if trainer.state.fn == "fit" and not trainer.sanity_checking and value is not None:
            self.synthetic_acc_history.append(float(value))

    def state_dict(self) -> dict[str, Any]:
        timings = dict(self.timings)
        if self._running:  # a checkpoint during the fit: count the unlearning time so far, so a resume adds to it
            timings["unlearn"] = timings.get("unlearn", 0.0) + time.perf_counter() - self._start
        return {"before": self.before, "timings": timings, "synthetic_acc_history": list(self.synthetic_acc_history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = state_dict.get("before", {})
        self.timings = dict(state_dict.get("timings", {}))
        self.synthetic_acc_history = list(state_dict.get("synthetic_acc_history", []))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timings["unlearn"] = self.timings.get("unlearn", 0.0) + time.perf_counter() - self._start
        self._running = False
        self.after = self._measure(trainer, pl_module, self.evaluate_after)
        self.timings["evaluate_after"] = self.after.pop("seconds")
        dm = trainer.datamodule
        if isinstance(dm, ForgetDataModule):
            self.timings["synthesis"] = float(dm.forget_set.seconds)
        self.report = build_report(trainer, pl_module, self.before, self.after, self.timings, self.synthetic_acc_history)
        # On every rank: `trainer.log_dir` is a collective (a broadcast from rank 0) under DDP, so it
        # must not be resolved inside the rank-zero-only write (rank 1 would never join it).
        self._write(self._out_dir(trainer), pl_module)

    @rank_zero_only
    def _write(self, out: Path, pl_module: Any) -> None:
        if self.export_name:
            export = save_open_clip_weights(out / self.export_name, pl_module.model,
                                            metadata={"model": pl_module.hparams.model_name})
            self.report["export"] = str(export)
        atomic_write_json(out / "report.json", self.report)
        atomic_write_text(out / "report.md", render_markdown(self.report))
        self._announce = out  # printed in `teardown`, once the progress bar has finished

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
            print_report(self.report)
        rank_zero_info(f"Report written to {out / 'report.json'} and {out / 'report.md'}")
