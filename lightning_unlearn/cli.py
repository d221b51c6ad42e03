"""Command line: ``lightning-unlearn fit|validate|test --config FILE`` (a LightningCLI)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger

import lightning_unlearn  # noqa: F401  (registers datasets and model configs on every rank)


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


def main(args: Any = None, run: bool = True) -> UnlearnCLI:
    """Run the CLI (``args`` as on the command line); returns the ``UnlearnCLI`` for inspection."""
    return UnlearnCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "callbacks": [RichProgressBar(leave=True), RichModelSummary(max_depth=2)],
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
        },
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def console_main() -> None:
    """The ``lightning-unlearn`` console script (returns nothing, so nothing extra is printed)."""
    main()


if __name__ == "__main__":
    console_main()
