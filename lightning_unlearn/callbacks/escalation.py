r"""
Noise and layer escalation
^^^^^^^^^^^^^^^^^^^^^^^^^^

Iterate and escalate: an epoch that does not improve the monitored value is undone (model and optimizer go back to
the epoch start) and the next noise level ``sigma`` and layer counts ``k`` are taken from their schedules.

"""

import math
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, Literal, NamedTuple, Optional

import torch
from torch import Tensor
from typing_extensions import override

import lightning.pytorch as pl
from lightning.pytorch.callbacks.callback import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from lightning_unlearn.core._validation import (
    _choice_validation,
    _finite_number_validation,
    _identifier_validation,
    _number_list_validation,
    _str_keyed_dict_validation,
)
from lightning_unlearn.callbacks.selection import CallbackConfigError, GradientLayerSelection
from lightning_unlearn.core.errors import CheckpointError, RunError

#: The noise schedule of Kravets & Namboodiri (WACV 2025).
PAPER_SIGMA_SCHEDULE = (0.1, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)


def _cpu_copy(obj: Any) -> Any:
    """Deep copy of nested dicts/lists/tuples with every tensor detached and copied to CPU."""
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: _cpu_copy(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_cpu_copy(value) for value in obj]
    if isinstance(obj, tuple):
        return tuple(_cpu_copy(value) for value in obj)
    return obj


def _trainable_state(pl_module: "pl.LightningModule") -> dict[str, Tensor]:
    """CPU copies of the parameters that require grad (frozen ones never change)."""
    return {name: p.detach().to("cpu", copy=True) for name, p in pl_module.named_parameters() if p.requires_grad}


class EscalationStopReason(Enum):
    """Why :class:`NoiseLayerEscalation` stopped training (as Lightning's ``EarlyStoppingReason``)."""

    NOT_STOPPED = "not_stopped"
    SCHEDULE_EXHAUSTED = "schedule_exhausted"
    NON_FINITE_LOSS = "non_finite_loss"


class _Action(Enum):
    """What an epoch end does."""

    IMPROVE = "improve"  # record the value and the weights as the best
    KEEP = "keep"  # no improvement, but another callback is stopping the run: leave everything as it is
    ESCALATE = "escalate"  # restore the epoch start and move the schedules one position on
    STOP = "stop"  # restore the epoch start and stop: no position left


class _Decision(NamedTuple):
    action: _Action
    message: str


@torch.no_grad()
def _load_trainable_state(pl_module: "pl.LightningModule", state: Mapping[str, Tensor]) -> None:
    params = dict(pl_module.named_parameters())
    missing = [name for name in state if name not in params]
    if missing:
        raise CheckpointError(f"Saved trainable state names parameters the module does not have: {missing[:5]}")
    for name, value in state.items():
        params[name].copy_(value)


class NoiseLayerEscalation(Callback):
    r"""Undo epochs that do not improve the monitored value and escalate noise level and layer counts.

    * At each train epoch start: snapshot the trainable parameters (those with ``requires_grad``) and the optimizers'
      state, on CPU.
    * At each train epoch end: read ``monitor`` from ``trainer.callback_metrics``. If it improved (strictly) on the
      best value so far, record it and a copy of the trainable parameters as the best state. Otherwise restore model
      and optimizers bit-exactly to the epoch-start snapshot and move every schedule one position on: set
      ``pl_module.<sigma_attribute>`` and the ``k`` of the connected :class:`GradientLayerSelection` (``selection``).
    * When no position is left, training stops (``stopping_reason = EscalationStopReason.SCHEDULE_EXHAUSTED``).
    * If the training loss returned by the step is NaN/Inf on any rank, the best state (the epoch-start snapshot if
      there is none yet) is restored, the optimizers go back to the epoch-start snapshot, training stops with
      ``stopping_reason = EscalationStopReason.NON_FINITE_LOSS`` and a warning says so.
    * At the end of training the best state is loaded into the module, so the final weights are the best ones. If no
      epoch ever improved there is no best state, and ``no_improvement_weights`` chooses: ``"restored"`` leaves the
      weights as they are (after a stop: the last restored epoch start, i.e. the starting weights);
      ``"last_failed"`` (the published code) loads the weights the last undone epoch had reached, copied just before
      it was undone. :attr:`final_weights` says which rule gave the final weights.

    The "best so far" before the first epoch is ``initial_best``: with ``None`` the first finite value always counts
    as an improvement; with a number (the published code uses 1.0 for an accuracy) an epoch must beat it, and a first
    epoch that does not is undone and escalates like any other.

    Schedules of different lengths (``positions``): with ``"longest"`` all schedules move one position at each
    escalation; a schedule that has reached its last value keeps it, and training stops at the first non-improving
    epoch once every schedule is at its end. So the run has ``max(len(...))`` positions and no given value goes unused
    (for the paper's RN50 settings: 9 positions, sigma stays at 2 and the vision ``k`` at 25 while the text ``k`` goes
    on to 45). With ``"sigma"`` the run has ``len(sigma_schedule)`` positions, as in the published code: the values of
    a longer ``k`` schedule beyond that are never used (RN50: 7 positions, the text ``k`` stops at 35).

    The schedules' first values are applied at fit start (overriding the module's own ``sigma``). If the epoch that
    stops training through another callback (e.g. :class:`SyntheticAccuracyStopping`) does not improve, it is not
    undone and nothing escalates; the best state is loaded at the end all the same. Learning-rate schedulers are not
    rewound.

    Resuming with ``trainer.fit(ckpt_path=...)`` restores the schedule position, histories, best value and state and
    the epoch-start snapshot (all tensors, lists, dicts, floats, ints and strings, so the checkpoint loads with
    ``torch.load(weights_only=True)``); the current sigma and ``k`` are re-applied at fit start. The stopping reason is
    saved too, so a checkpoint says why its run stopped (``load_state_dict`` reads it back), but every fit starts
    ``NOT_STOPPED``: it says why *this* fit stopped. A
    checkpoint saved in the middle of an epoch keeps that epoch's start snapshot. ``initial_best`` and ``positions``
    are init args: give the resumed run the same ones.

    DDP: every rank snapshots and restores its own replica identically. The monitored value is the one Lightning
    reduced across ranks when it was logged with ``sync_dist=True``; rank 0's value is broadcast before deciding in any
    case, so every rank makes the same decision. The non-finite check is OR-reduced across ranks.

    Args:
        sigma_schedule: noise levels, one per position; positive and finite. Default: the paper's
            ``(0.1, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)``.
        k_schedules: group -> ``k`` values (positive ints), applied with ``GradientLayerSelection.set_k``;
            ``None`` leaves ``k`` alone. Requires ``selection``.
        monitor: metric read at each train epoch end.
        mode: ``"min"``: lower is better; ``"max"``: higher is better.
        sigma_attribute: name of the LightningModule attribute that holds the noise level.
        strict: raise if ``monitor`` was not logged by the end of an epoch; if ``False``, warn and skip the decision.
        verbose: log a line at each decision.
        initial_best: the best value before the first epoch, a finite number; an epoch improves only if it beats it
            (or a later best). ``None``: the first finite value is an improvement. The published code: ``1.0``.
        positions: number of schedule positions: ``"longest"``: the longest schedule's length (finished schedules
            keep their last value); ``"sigma"``: ``len(sigma_schedule)``, as the published code.
        no_improvement_weights: the final weights when no epoch improved: ``"restored"``: the last restored state
            (the weights the run started from); ``"last_failed"``: the weights the last undone epoch reached (the
            published code; one more CPU copy of the trainable parameters until an epoch improves).

    Attributes:
        sigma_history: sigma used in each completed epoch.
        monitor_history: monitored value at each epoch end.
        restored_epochs: epochs that were undone.
        best_value: best monitored value so far (``None`` until an epoch improves; ``initial_best`` is not counted).
        best_epoch: epoch of ``best_value``.
        stopping_reason: an :class:`EscalationStopReason`; ``NOT_STOPPED`` until this callback stops the current fit.
        stopping_reason_message: why it stopped, in words (``None`` until then).
        position: current position in the schedules.
        selection: the :class:`GradientLayerSelection` whose ``k`` the schedules set (``escalation.selection =
            selection``; ``UnlearningModule`` connects the one of its run when this is ``None``).
        final_weights: ``None`` if the final weights are the best state (or training has not ended); else the
            ``no_improvement_weights`` rule that gave them (``"restored"`` or ``"last_failed"``).

    Raises:
        ~lightning_unlearn.core.errors.ConfigError: (a ``ValueError``) if a schedule or argument is invalid; the message
            quotes it.
        MisconfigurationException: at setup, if ``k_schedules`` is given without a connected ``selection``,
            or the module lacks ``sigma_attribute``.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> from lightning_unlearn.callbacks import GradientLayerSelection
        >>> selection = GradientLayerSelection(k=5)
        >>> escalation = NoiseLayerEscalation(k_schedules={"vision": [5, 7, 10], "text": [5, 7, 12, 18]})
        >>> escalation.selection = selection
        >>> trainer = Trainer(callbacks=[selection, escalation], max_epochs=30)
        >>> # after training:
        >>> if escalation.stopping_reason == EscalationStopReason.SCHEDULE_EXHAUSTED:
        ...     print("no noise level or layer count left")

    """

    def __init__(
        self,
        sigma_schedule: Sequence[float] = PAPER_SIGMA_SCHEDULE,
        k_schedules: Optional[dict[str, list[int]]] = None,
        monitor: str = "forget/synthetic_acc",
        mode: Literal["min", "max"] = "min",
        sigma_attribute: str = "sigma",
        strict: bool = True,
        verbose: bool = False,
        initial_best: Optional[float] = None,
        positions: Literal["longest", "sigma"] = "longest",
        no_improvement_weights: Literal["restored", "last_failed"] = "restored",
    ) -> None:
        super().__init__()
        self._check_arguments(sigma_schedule, k_schedules, mode, sigma_attribute, initial_best, positions)
        _choice_validation("`no_improvement_weights`", no_improvement_weights, ("restored", "last_failed"))

        self.sigma_schedule: list[float] = [float(s) for s in sigma_schedule]
        self.k_schedules: Optional[dict[str, list[int]]] = (
            {group: list(values) for group, values in k_schedules.items()} if k_schedules is not None else None
        )
        self.monitor = monitor
        self.mode = mode
        self.sigma_attribute = sigma_attribute
        self.strict = strict
        self.verbose = verbose
        self.initial_best: Optional[float] = None if initial_best is None else float(initial_best)
        self.positions: Literal["longest", "sigma"] = positions
        self.no_improvement_weights: Literal["restored", "last_failed"] = no_improvement_weights
        self.final_weights: Optional[str] = None
        self._last_failed_state: Optional[dict[str, Tensor]] = None  # weights of the last undone epoch, until one improves

        self.position = 0
        self.sigma_history: list[float] = []
        self.monitor_history: list[float] = []
        self.restored_epochs: list[int] = []
        self.best_value: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.stopping_reason: EscalationStopReason = EscalationStopReason.NOT_STOPPED
        self.stopping_reason_message: Optional[str] = None

        self._best_state: Optional[dict[str, Tensor]] = None
        self._snapshot_state: Optional[dict[str, Tensor]] = None
        self._snapshot_optimizers: Optional[list[dict[str, Any]]] = None
        self._snapshot_epoch = -1
        self._epoch_open = False  # between an epoch's start snapshot and its end decision
        self._just_loaded = False
        self._last_monitor: Optional[float] = None
        self.selection: Optional[GradientLayerSelection] = None

    @staticmethod
    def _check_arguments(
        sigma_schedule: Any, k_schedules: Any, mode: Any, sigma_attribute: Any, initial_best: Any, positions: Any
    ) -> None:
        _number_list_validation("`sigma_schedule`", sigma_schedule)
        if k_schedules is not None:
            _str_keyed_dict_validation("`k_schedules`", k_schedules, "group -> list of k")
            for group, values in k_schedules.items():
                _number_list_validation(f"`k_schedules[{group!r}]`", values, positive_ints=True)
        _choice_validation("`mode`", mode, ("min", "max"))
        _identifier_validation("`sigma_attribute`", sigma_attribute)
        _finite_number_validation("`initial_best`", initial_best, allow_none=True)
        _choice_validation("`positions`", positions, ("longest", "sigma"))

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode, sigma_attribute=self.sigma_attribute)

    # ------------------------------------------------------------------ schedules
    @property
    def num_positions(self) -> int:
        """Number of schedule positions: the longest schedule's length, or the sigma schedule's (``positions``)."""
        if self.positions == "sigma":
            return len(self.sigma_schedule)
        lengths = [len(self.sigma_schedule)] + [len(v) for v in (self.k_schedules or {}).values()]
        return max(lengths)

    @staticmethod
    def _at(schedule: Sequence[Any], position: int) -> Any:
        """The value of ``schedule`` at ``position``; a finished schedule keeps its last value."""
        return schedule[min(position, len(schedule) - 1)]

    @property
    def current_sigma(self) -> float:
        """Sigma at the current position (a finished schedule keeps its last value)."""
        return self._at(self.sigma_schedule, self.position)

    @property
    def current_k(self) -> dict[str, int]:
        """Group -> ``k`` at the current position (empty without ``k_schedules``)."""
        return {g: self._at(v, self.position) for g, v in (self.k_schedules or {}).items()}

    @property
    def best_state(self) -> Optional[dict[str, Tensor]]:
        """CPU copy of the trainable parameters at ``best_epoch`` (``None`` before the first improvement)."""
        return self._best_state

    def _apply(self, pl_module: "pl.LightningModule") -> None:
        setattr(pl_module, self.sigma_attribute, self.current_sigma)
        if self.selection is not None:
            for group, k in self.current_k.items():
                self.selection.set_k(group, k)

    # ------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage != "fit":
            return
        if not hasattr(pl_module, self.sigma_attribute):
            raise CallbackConfigError(
                f"`NoiseLayerEscalation` sets `{type(pl_module).__name__}.{self.sigma_attribute}`, which does not"
                " exist; define it in the module's __init__ or set `sigma_attribute`."
            )
        if self.k_schedules is not None and self.selection is None:
            raise CallbackConfigError(
                f"`NoiseLayerEscalation(k_schedules={self.k_schedules!r})` needs a `GradientLayerSelection`:"
                " set `escalation.selection = selection`."
            )

    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # runs after callbacks' `load_state_dict`, so a resumed run gets back its sigma and k here
        self.stopping_reason = EscalationStopReason.NOT_STOPPED  # why *this* fit stopped
        self.stopping_reason_message = None
        self.final_weights = None
        self._apply(pl_module)

    @override
    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # Resuming from a mid-epoch checkpoint, Lightning skips this hook and the loaded snapshot is used as it is; it
        # does call it again if the checkpoint was written during this hook: keep the loaded snapshot then too.
        resumed_mid_epoch = (
            self._just_loaded and self._epoch_open and self._snapshot_epoch == trainer.current_epoch
        )
        self._just_loaded = False
        if resumed_mid_epoch and self._snapshot_state is not None:
            return  # keep the start snapshot of the interrupted epoch, not the weights it had reached
        self._snapshot_state = _trainable_state(pl_module)
        self._snapshot_optimizers = [_cpu_copy(opt.state_dict()) for opt in trainer.optimizers]
        self._snapshot_epoch = trainer.current_epoch
        self._epoch_open = True

    @override
    def on_train_batch_end(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        bad = isinstance(loss, Tensor) and not bool(torch.isfinite(loss.detach()).all())
        # called on every rank at every batch: stop everywhere if any rank saw a bad loss
        bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad or self.stopping_reason is EscalationStopReason.NON_FINITE_LOSS:
            return
        if self._best_state is not None:
            _load_trainable_state(pl_module, self._best_state)
            what = f"the best state (epoch {self.best_epoch}, {self.monitor}={self.best_value:.6g})"
        elif self._snapshot_state is not None:
            _load_trainable_state(pl_module, self._snapshot_state)
            what = f"the snapshot from the start of epoch {self._snapshot_epoch}"
        else:
            what = "nothing (no snapshot yet)"
        self._restore_optimizers(trainer)
        message = (
            f"the training loss is not finite (loss={loss} on rank 0; checked on every rank) at epoch"
            f" {trainer.current_epoch}, step {trainer.global_step}. Restored {what}, put the optimizer state back to"
            " the start of the epoch and stopped training."
        )
        self._stop(trainer, EscalationStopReason.NON_FINITE_LOSS, message)
        rank_zero_warn(f"`NoiseLayerEscalation`: {message}")

    @override
    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not self._epoch_open:
            return
        self._epoch_open = False
        if self.stopping_reason is EscalationStopReason.NON_FINITE_LOSS:
            return
        value = self._read_monitor(trainer)
        if value is None:
            return
        self.sigma_history.append(self.current_sigma)
        self.monitor_history.append(value)
        decision = self._evaluate_epoch_end(value, trainer.current_epoch, stopping_elsewhere=trainer.should_stop)
        self._apply_decision(trainer, pl_module, decision, value)

    @property
    def _value_to_beat(self) -> Optional[float]:
        """The best value so far, or ``initial_best`` before any improvement (``None``: anything finite improves)."""
        return self.best_value if self.best_value is not None else self.initial_best

    def _improves(self, value: float) -> bool:
        """Whether ``value`` is finite and strictly better than :attr:`_value_to_beat`."""
        reference = self._value_to_beat
        if not math.isfinite(value):
            return False
        return reference is None or (value < reference if self.mode == "min" else value > reference)

    def _evaluate_epoch_end(self, value: float, epoch: int, stopping_elsewhere: bool) -> _Decision:
        """What the end of ``epoch`` does given the monitored ``value`` and the current state; changes nothing.

        The inputs are the same on every rank (``value`` is rank 0's, broadcast), so is the decision.
        """
        head = f"epoch {epoch}: {self.monitor}={value:.6g}"
        if self._improves(value):
            return _Decision(_Action.IMPROVE, f"{head} is the new best (sigma={self.current_sigma}).")
        if stopping_elsewhere:
            # another callback is ending the run (e.g. the goal was reached): no point undoing or escalating
            return _Decision(_Action.KEEP, f"{head} did not improve; training is stopping, the epoch is kept.")
        head = f"{head} did not improve on {self._value_to_beat}; restored the epoch start"
        if self.position + 1 >= self.num_positions:
            return _Decision(_Action.STOP, f"{head} and stopped: the schedules are exhausted.")
        following = self.position + 1
        sigma = self._at(self.sigma_schedule, following)
        k = {g: self._at(v, following) for g, v in (self.k_schedules or {}).items()}
        return _Decision(_Action.ESCALATE, f"{head}, now sigma={sigma}, k={k}.")

    def _apply_decision(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", decision: _Decision, value: float
    ) -> None:
        """Carry out ``decision`` for the epoch that just ended."""
        epoch = trainer.current_epoch
        if decision.action is _Action.IMPROVE:
            self.best_value, self.best_epoch = value, epoch
            self._best_state = _trainable_state(pl_module)
            self._last_failed_state = None
        elif decision.action is _Action.KEEP:
            self._last_failed_state = None  # the run ends on this epoch's weights
        elif decision.action in (_Action.ESCALATE, _Action.STOP):
            assert self._snapshot_state is not None
            if self._best_state is None and self.no_improvement_weights == "last_failed":
                # published: the weights are copied just before the epoch start is restored
                self._last_failed_state = _trainable_state(pl_module)
            _load_trainable_state(pl_module, self._snapshot_state)
            self._restore_optimizers(trainer)
            self.restored_epochs.append(epoch)
            if decision.action is _Action.STOP:
                self._stop(trainer, EscalationStopReason.SCHEDULE_EXHAUSTED, decision.message)
            else:
                self.position += 1
                self._apply(pl_module)
        self._info(decision.message)

    def _stop(self, trainer: "pl.Trainer", reason: EscalationStopReason, message: str) -> None:
        """Record why this callback stops training, and stop it."""
        self.stopping_reason = reason
        self.stopping_reason_message = message
        trainer.should_stop = True

    @override
    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._best_state is not None:
            _load_trainable_state(pl_module, self._best_state)
            return
        self.final_weights = _final_weights_without_improvement(self, pl_module)

    # ------------------------------------------------------------------ helpers
    @override
    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # Remembered (and checkpointed) because callback_metrics are empty right after a resume
        # from a checkpoint taken at an epoch's last validation.
        metric = trainer.callback_metrics.get(self.monitor)
        if metric is not None and not trainer.sanity_checking:
            self._last_monitor = float(metric.item()) if isinstance(metric, Tensor) else float(metric)

    def _read_monitor(self, trainer: "pl.Trainer") -> Optional[float]:
        metric = trainer.callback_metrics.get(self.monitor)
        if metric is None and self._last_monitor is not None:
            metric = self._last_monitor
        if metric is None:
            message = (
                f"`NoiseLayerEscalation` monitors `{self.monitor}`, which was not logged by the end of epoch"
                f" {trainer.current_epoch}. Logged: {sorted(trainer.callback_metrics)}."
            )
            if self.strict:
                raise RunError(message)
            rank_zero_warn(message + " Skipping this epoch's decision.")
            return None
        value = float(metric.item()) if isinstance(metric, Tensor) else float(metric)
        # Lightning reduces the value across ranks only if it was logged with `sync_dist=True`; take rank 0's value so
        # that every rank makes the same decision (restore or not, escalate, stop) whatever the logging.
        return float(trainer.strategy.broadcast(value, src=0))

    def _restore_optimizers(self, trainer: "pl.Trainer") -> None:
        if self._snapshot_optimizers is None:
            return
        if len(self._snapshot_optimizers) != len(trainer.optimizers):
            raise RunError(
                f"The snapshot holds {len(self._snapshot_optimizers)} optimizer states but the trainer has"
                f" {len(trainer.optimizers)} optimizers."
            )
        for optimizer, state in zip(trainer.optimizers, self._snapshot_optimizers):
            # a fresh copy: `load_state_dict` may keep the given tensors (e.g. Adam's `step`) and update them in place
            optimizer.load_state_dict(_cpu_copy(state))

    def _info(self, message: str) -> None:
        if self.verbose:
            rank_zero_info(f"NoiseLayerEscalation: {message}")

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "sigma_history": list(self.sigma_history),
            "monitor_history": list(self.monitor_history),
            "restored_epochs": list(self.restored_epochs),
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "stopping_reason": self.stopping_reason.value,
            "stopping_reason_message": self.stopping_reason_message,
            "best_state": self._best_state,
            "snapshot_state": self._snapshot_state,
            "snapshot_optimizers": self._snapshot_optimizers,
            "snapshot_epoch": self._snapshot_epoch,
            "epoch_open": self._epoch_open,
            "last_monitor": self._last_monitor,
            "last_failed_state": self._last_failed_state,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        position = int(state_dict.get("position", 0))
        if position >= self.num_positions:
            rank_zero_warn(
                f"`NoiseLayerEscalation`: the checkpoint is at schedule position {position} but the schedules have"
                f" {self.num_positions} positions; continuing at the last one."
            )
            position = self.num_positions - 1
        self.position = position
        self.sigma_history = [float(v) for v in state_dict.get("sigma_history", [])]
        self.monitor_history = [float(v) for v in state_dict.get("monitor_history", [])]
        self.restored_epochs = [int(v) for v in state_dict.get("restored_epochs", [])]
        best_value = state_dict.get("best_value")
        self.best_value = None if best_value is None else float(best_value)
        self.best_epoch = state_dict.get("best_epoch")
        self.stopping_reason = self._stopping_reason_from(state_dict)
        message = state_dict.get("stopping_reason_message")
        self.stopping_reason_message = None if message is None else str(message)
        self._best_state = state_dict.get("best_state")
        self._snapshot_state = state_dict.get("snapshot_state")
        self._snapshot_optimizers = state_dict.get("snapshot_optimizers")
        self._snapshot_epoch = int(state_dict.get("snapshot_epoch", -1))
        self._epoch_open = bool(state_dict.get("epoch_open", False))
        self._just_loaded = True
        last = state_dict.get("last_monitor")
        self._last_monitor = None if last is None else float(last)
        self._last_failed_state = state_dict.get("last_failed_state")

    @staticmethod
    def _stopping_reason_from(state_dict: Mapping[str, Any]) -> EscalationStopReason:
        """The saved stopping reason: the enum's value under ``"stopping_reason"``, or, in checkpoints written before
        the enum, the string (or ``None``) under ``"stop_reason"``."""
        value = state_dict.get("stopping_reason", state_dict.get("stop_reason"))
        if value is None:
            return EscalationStopReason.NOT_STOPPED
        try:
            return EscalationStopReason(value)
        except ValueError as err:
            known = [reason.value for reason in EscalationStopReason]
            raise CheckpointError(
                f"`NoiseLayerEscalation` state has an unknown stopping reason {value!r}; known: {known}"
            ) from err


def _final_weights_without_improvement(escalation: NoiseLayerEscalation, pl_module: "pl.LightningModule") -> str:
    """Apply ``escalation.no_improvement_weights`` at train end when no epoch improved; returns the rule used.

    The decisions that set ``_last_failed_state`` are rank 0's (broadcast), so every rank loads its own identical copy.
    """
    if escalation.no_improvement_weights == "last_failed" and escalation._last_failed_state is not None:
        _load_trainable_state(pl_module, escalation._last_failed_state)
        return "last_failed"
    return "restored"
