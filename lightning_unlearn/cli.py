"""Command line: ``lightning-unlearn fit|validate|test --config FILE_OR_NAME`` (a LightningCLI),
and ``lightning-unlearn compare --config FILE_OR_NAME [--methods ...] [--classes ...] [--seeds ...]
[--out DIR]`` (methods x classes x seeds; :mod:`lightning_unlearn.compare`).

- ``--config`` takes a file, or the name of a config shipped in the package
  (``lightning-unlearn fit --config demo`` works from any folder; ``rn50_stanford_dogs``, ...).
- A bad input (an unknown model, class or dataset, a missing or unreadable checkpoint, a bad
  value) prints the project's one-line message on stderr and exits with status 2. ``--debug``
  anywhere on the line, or ``LIGHTNING_UNLEARN_DEBUG=1``, shows the full traceback instead.
- Lightning's informational lines go to stdout, so stderr carries only warnings and errors.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Optional, Sequence

from lightning_unlearn.trainer_cli import (  # noqa: F401 - re-exported: the names the CLI always offered
    DESCRIPTION,
    PACKAGED_CONFIGS,
    UnlearnCLI,
    main,
    packaged_configs,
    project_error,
    resolve_config,
    resolve_config_args,
)

DEBUG_ENV = "LIGHTNING_UNLEARN_DEBUG"


def _info_to_stdout() -> None:
    """Send Lightning's info lines ("Seed set to 0", "GPU available", ...) to stdout."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_unlearn"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(sys.stdout)


def _hide_known_noise() -> None:
    """Warnings that say nothing to this command's users: BatchNorm layers are kept in eval mode on
    purpose (their statistics are real data's), a training-free method has no optimiser by design,
    and a Lightning/torch version notice."""
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    warnings.filterwarnings("ignore", message=r"`LightningModule.configure_optimizers` returned `None`")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def console_main(argv: Optional[Sequence[str]] = None) -> None:
    """The ``lightning-unlearn`` console script: bad input ends in one line on stderr and status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    _info_to_stdout()
    _hide_known_noise()
    saved = list(sys.argv)
    try:
        if args[:1] == ["compare"]:  # not a Trainer method: its own parser (lightning_unlearn.compare)
            from lightning_unlearn.compare import compare_main

            compare_main(args[1:])
            return
        # Through sys.argv, not `args=`: LightningCLI warns when it is given both.
        sys.argv[1:] = resolve_config_args(args)
        main()
    except Exception as err:  # noqa: BLE001 - only the project's own errors are shortened
        cause = project_error(err)
        if cause is None or debug:
            raise
        print(f"lightning-unlearn: error: {cause}", file=sys.stderr)
        sys.exit(2)
    finally:
        sys.argv[:] = saved


if __name__ == "__main__":
    console_main()
