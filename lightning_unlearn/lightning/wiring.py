"""The one place where the callbacks of a run are connected to each other (Lightning glue).

A YAML callback list (LightningCLI) builds each callback on its own: a config cannot hand one
callback to another. :class:`~lightning_unlearn.UnlearningModule` therefore calls
:func:`connect_callbacks` from ``configure_callbacks``, the hook in which Lightning shows a module
the run's callbacks before any callback's ``setup``. Connections made explicitly (e.g.
``escalation.selection = selection`` in Python) are kept; only missing ones are filled in, by
type. Outside this module no callback, method or report looks through ``trainer.callbacks``.
"""

from __future__ import annotations

from typing import Optional, Sequence, TypeVar

from lightning.pytorch.callbacks import Callback

from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.callbacks.escalation import NoiseLayerEscalation
from lightning_unlearn.callbacks.selection import GradientLayerSelection
from lightning_unlearn.callbacks.stopping import SyntheticAccuracyStopping
from lightning_unlearn.callbacks.unlearning_report import UnlearningReport
from lightning_unlearn.methods.contract import UnlearningMethod

_C = TypeVar("_C", bound=Callback)


def _at_most_one(callbacks: Sequence[Callback], kind: type[_C]) -> Optional[_C]:
    found = [cb for cb in callbacks if isinstance(cb, kind)]
    if len(found) > 1:
        raise ConfigError(f"the trainer has {len(found)} `{kind.__name__}` callbacks; a run takes one")
    return found[0] if found else None


def connect_callbacks(callbacks: Sequence[Callback], method: UnlearningMethod) -> None:
    """Connect the run's callbacks: the escalation to the selection whose ``k`` it sets, the report
    to what it reports on (selection counts, escalation histories, stopping reasons).

    Raises:
        ConfigError: a method with its own schedule (``steerable = False``) given a callback that
            stops or undoes epochs, or two callbacks of a kind the run takes once.
    """
    steering = [type(cb).__name__ for cb in callbacks
                if isinstance(cb, (SyntheticAccuracyStopping, NoiseLayerEscalation))]
    if steering and not method.steerable:
        raise ConfigError(
            f"{type(method).__name__} runs its own schedule; remove {steering} from the trainer's callbacks (a goal "
            "would end the run before the schedule does, and an undone epoch would undo part of it)"
        )
    selection = _at_most_one(callbacks, GradientLayerSelection)
    escalation = _at_most_one(callbacks, NoiseLayerEscalation)
    stopping = _at_most_one(callbacks, SyntheticAccuracyStopping)
    if escalation is not None and escalation.selection is None:
        escalation.selection = selection
    for report in (cb for cb in callbacks if isinstance(cb, UnlearningReport)):
        report.selection = report.selection or selection
        report.escalation = report.escalation or escalation
        report.stopping = report.stopping or stopping
