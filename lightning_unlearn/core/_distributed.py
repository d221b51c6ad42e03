"""Work done once, on global rank zero, and shared with every rank."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch
from torch import nn

from lightning_unlearn.core.errors import RunError, UnlearnError

T = TypeVar("T")


def on_rank_zero(trainer: Any, make: Callable[[], T]) -> T:
    """``make()`` on global rank zero, its result broadcast to every rank.

    If ``make`` raises on rank zero, every rank raises (rank zero its own error, the others a
    ``RuntimeError`` quoting it, a :class:`~lightning_unlearn.core.errors.RunError` if it was bad
    input): no rank is left waiting in the broadcast.
    """
    result, error = None, None
    if trainer.is_global_zero:
        try:
            result = make()
        except Exception as err:  # noqa: BLE001 - re-raised on every rank below
            error = err
    failure = None if error is None else (repr(error), isinstance(error, UnlearnError))
    result, failure = trainer.strategy.broadcast((result, failure), src=0)
    if error is not None:
        raise error
    if failure is not None:
        message, bad_input = failure
        # bad input on rank 0 is bad input on every rank: the same error family, one line in the CLI
        raise (RunError if bad_input else RuntimeError)(f"rank 0 failed: {message}")
    return result


def share_weights_from_rank_zero(trainer: Any, model: nn.Module) -> None:
    """Copy rank zero's parameters and buffers into every rank's ``model`` (in place)."""
    if trainer.world_size <= 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    with torch.no_grad():
        for tensor in model.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
