"""The Lightning side of the command line: ``fit``/``validate``/``test`` through a LightningCLI.

Used by :mod:`lightning_unlearn.cli` (the console script) and :mod:`lightning_unlearn.compare`
(which runs one ``fit`` per row of its matrix); it imports neither.

- ``--config`` takes a file, or the name of a config shipped in the package (:func:`resolve_config`).
- :func:`project_error` tells bad input (the project's errors, Lightning's
  ``MisconfigurationException``) from bugs.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from pathlib import Path
from typing import Any, Optional, Sequence

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.cli import LightningCLI

from lightning_unlearn.core.errors import ConfigError, MissingFileError, UnknownNameError, UnlearnError
from lightning_unlearn.core.io import check_output_dir
from lightning_unlearn.core.names import matches_clause

#: What ``lightning-unlearn --help`` says first.
DESCRIPTION = (
    "lightning-unlearn: make a CLIP model forget classes (Kravets & Namboodiri, WACV 2025), "
    "evaluate it, and compare unlearning methods. Subcommands: fit, validate, test, compare. "
    "fit (unlearn: writes report.json, report.md and the unlearned weights), "
    "validate and test (evaluate given weights, e.g. an export, with the same report), "
    "compare (methods x classes x seeds from one fit config: compare.csv/md/png; "
    "`lightning-unlearn compare --help`). "
    "--config takes a file or the name of a packaged config (e.g. demo)."
)

PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"


class UnlearnCLI(LightningCLI):
    """LightningCLI with the project's defaults: Rich progress bar and model summary, a CSV logger
    under ``runs/``, a fixed seed, and only the ``fit``/``validate``/``test`` subcommands."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": {"model", "dataloaders", "datamodule"},
            "test": {"model", "dataloaders", "datamodule"},
        }

    def _check_output_folders(self) -> None:
        # The logger creates its folder before any callback's setup: check it first, legibly.
        trainer = self.trainer
        if trainer.loggers:
            check_output_dir(trainer.log_dir or trainer.default_root_dir, "the log folder")
        else:
            check_output_dir(trainer.default_root_dir, "default_root_dir")

    def before_fit(self) -> None:
        self._check_output_folders()

    def _check_evaluates(self, subcommand: str, setting: str) -> None:
        # The demo's fit configs set limit_val_batches 0 (fit measures before/after by itself);
        # reused for validate/test, that value would evaluate nothing and write no report, silently.
        if getattr(self.trainer, setting) == 0:
            raise ConfigError(
                f"{subcommand} with trainer.{setting}=0 evaluates nothing and writes no report (the config sets it for "
                f"fit, which measures before/after by itself); pass --trainer.{setting} 1.0 to evaluate every batch"
            )

    def before_validate(self) -> None:
        self._check_output_folders()
        self._check_evaluates("validate", "limit_val_batches")

    def before_test(self) -> None:
        self._check_output_folders()
        self._check_evaluates("test", "limit_test_batches")


def packaged_configs() -> list[str]:
    """Names of the configs shipped in the package (``demo``, ``rn50_stanford_dogs``, ...)."""
    return sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))


def resolve_config(value: str) -> str:
    """A ``--config`` value: an existing file as is, else the packaged config of that name.

    ``configs/<name>.yaml``, the repository-relative spelling the README and docs use, also finds
    the packaged config when run outside a checkout (the repository's ``configs`` is the package's).
    """
    if Path(value).is_file():
        return value
    path = Path(value)
    if len(path.parts) == 2 and path.parts[0] == "configs" and (PACKAGED_CONFIGS / path.name).is_file():
        return str(PACKAGED_CONFIGS / path.name)
    packaged = PACKAGED_CONFIGS / (value if value.endswith((".yaml", ".yml")) else f"{value}.yaml")
    if packaged.is_file() and not os.sep in value:
        return str(packaged)
    names = packaged_configs()
    if os.sep in value or value.endswith((".yaml", ".yml")):
        raise MissingFileError(f"config file {value!r} does not exist; packaged configs: {', '.join(names)}")
    raise UnknownNameError(
        f"unknown config {value!r}" + matches_clause(value, names)
        + f". Packaged configs: {', '.join(names)}"
    )


def resolve_config_args(args: Sequence[str]) -> list[str]:
    """Replace packaged config names after ``--config``/``-c`` (also ``--config=NAME``) by their paths."""
    out, pending = [], False
    for arg in args:
        if pending:
            out.append(resolve_config(arg))
            pending = False
        elif arg in ("--config", "-c"):
            out.append(arg)
            pending = True
        elif arg.startswith("--config="):
            out.append("--config=" + resolve_config(arg.split("=", 1)[1]))
        else:
            out.append(arg)
    return out


def main(args: Any = None, run: bool = True, quiet: bool = False) -> UnlearnCLI:
    """Run the CLI (``args`` as on the command line); returns the ``UnlearnCLI`` for inspection.

    ``quiet``: no progress bar and no model summary (``lightning-unlearn compare`` runs many fits
    under its own progress bar).
    """
    argv = sys.argv[:]
    if isinstance(args, (list, tuple)):
        # Given through sys.argv: LightningCLI then parses exactly these arguments without warning
        # about the caller's own command line, and DDP's launcher starts the other ranks with them.
        sys.argv[1:] = resolve_config_args(args)
        args = None
    display: dict[str, Any] = (
        {"enable_progress_bar": False, "enable_model_summary": False} if quiet
        else {"callbacks": [RichProgressBar(leave=True), RichModelSummary(max_depth=2)]}
    )
    try:
        return UnlearnCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                **display,
                "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
            },
            args=args,
            run=run,
            parser_kwargs={"prog": "lightning-unlearn", "description": DESCRIPTION},
            auto_configure_optimizers=False,
        )
    finally:
        sys.argv[:] = argv


def project_error(err: BaseException) -> Optional[BaseException]:
    """The bad-input error that caused ``err`` (``err`` itself, or one in its cause/context chain):
    the project's own errors, and Lightning's ``MisconfigurationException`` (Trainer flags that
    contradict each other or the config, e.g. ``--trainer.enable_progress_bar false`` with a
    progress-bar callback in the config), which is about the command line, not a bug."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    seen, queue = set(), deque([err])
    while queue:
        current = queue.popleft()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (UnlearnError, MisconfigurationException)):
            return current
        queue.extend([current.__cause__, current.__context__])
    return None
