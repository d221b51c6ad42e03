r"""
Synthetic accuracy stopping
^^^^^^^^^^^^^^^^^^^^^^^^^^^

Stop training as soon as the accuracy on the synthetic forget set is at or below a goal.

"""

import math
import sys
from typing import Literal

import torch

from lightning.pytorch.callbacks.early_stopping import EarlyStopping

from lightning_unlearn.core._validation import _choice_validation, _unit_interval_validation


def _inclusive_threshold(goal: float, mode: str) -> float:
    """The strict threshold that makes ``goal`` itself count as reached.

    ``EarlyStopping`` stops when ``current < stopping_threshold`` (``>`` in max mode), strictly. Lightning logs metrics
    as float32 (float64 if that is the default dtype) and torch compares a tensor with a Python float in the tensor's
    dtype, so a threshold one float64 ulp above the goal would round back to the goal in float32 and stay strict.
    One float32 ulp beyond ``float32(goal)`` is exact for float32 values (``current <= float32(goal)``) and admits at
    most about two float32 ulps (~1.5e-8 at 0.1) above the goal for float64 values.
    """
    toward = math.inf if mode == "min" else -math.inf
    goal32 = torch.tensor(goal, dtype=torch.float32)
    return float(torch.nextafter(goal32, torch.tensor(toward, dtype=torch.float32)))


class SyntheticAccuracyStopping(EarlyStopping):
    r"""Stop as soon as the monitored synthetic-set accuracy is at or below ``goal``.

    The check runs after every validation (``on_validation_end``); configure the Trainer to validate after every
    optimizer step (``val_check_interval=1``) to stop at the first step that reaches the goal. It is Lightning's
    :class:`~lightning.pytorch.callbacks.EarlyStopping` with an inclusive ``stopping_threshold`` and no patience
    (plateaus are handled by :class:`~lightning_unlearn.callbacks.NoiseLayerEscalation`); ``stopping_reason`` and
    ``stopped_epoch`` are set as there, and the decision is shared by all DDP ranks.

    Args:
        goal: stop when the monitored value is ``<= goal`` (``>= goal`` in ``"max"`` mode); a number in [0, 1].
        monitor: the logged metric to watch.
        mode: ``"min"``: the goal is an upper bound (accuracy to forget); ``"max"``: a lower bound.
        strict: raise if ``monitor`` is not among the logged metrics at a check.
        check_finite: also stop when the monitored value is NaN or infinite.
        verbose: log a message when stopping.

    Raises:
        ~lightning_unlearn.core.errors.ConfigError: (a ``ValueError``) if ``goal`` is not a number in [0, 1] or ``mode``
            is not ``"min"`` or ``"max"``; the message quotes the value.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(val_check_interval=1, callbacks=[SyntheticAccuracyStopping(goal=0.1)])

    """

    def __init__(
        self,
        goal: float = 0.1,
        monitor: str = "forget/synthetic_acc",
        mode: Literal["min", "max"] = "min",
        strict: bool = True,
        check_finite: bool = True,
        verbose: bool = False,
    ) -> None:
        _unit_interval_validation("`goal`", goal)
        _choice_validation("`mode`", mode, ("min", "max"))
        super().__init__(
            monitor=monitor,
            mode=mode,
            patience=sys.maxsize,  # never stop on a plateau
            strict=strict,
            check_finite=check_finite,
            stopping_threshold=_inclusive_threshold(float(goal), mode),
            check_on_train_epoch_end=False,
            verbose=verbose,
        )
        self.goal = float(goal)
