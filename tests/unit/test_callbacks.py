"""Tests of the reusable callbacks: GradientLayerSelection, SyntheticAccuracyStopping, NoiseLayerEscalation.

Toy LightningModule: two "towers" of nn.Linear layers (groups "vision" and "text"), a trainable head in no group, a
frozen layer, a `sigma` attribute, and a fake "forget/synthetic_acc" the test controls (per step or per epoch).
Training is deterministic: the noise of step s comes from a generator seeded with s.
"""

import io
import math
import re
from typing import Any, Optional

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn.callbacks import (
    EscalationStopReason,
    GradientLayerSelection,
    NoiseLayerEscalation,
    SyntheticAccuracyStopping,
)
from lightning_unlearn.core.errors import CheckpointError, ConfigError

MONITOR = "forget/synthetic_acc"
STEPS_PER_EPOCH = 2

NAMES = {
    "vision": ["vision.0.weight", "vision.0.bias", "vision.1.weight", "vision.1.bias"],
    "text": ["text.0.weight", "text.0.bias", "text.1.weight", "text.1.bias"],
}


class Toy(LightningModule):
    def __init__(
        self,
        acc_by_step: Optional[list[float]] = None,
        acc_by_epoch: Optional[list[float]] = None,
        grad_magnitudes: Optional[dict[str, float]] = None,
        nan_at_step: Optional[int] = None,
        weight_decay: float = 0.1,
        with_groups: bool = True,
    ) -> None:
        super().__init__()
        self.vision = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        self.text = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        self.head = nn.Linear(4, 1)  # trainable, in no group
        self.frozen = nn.Linear(4, 4).requires_grad_(False)
        self.sigma = 1.0
        self.acc_by_step = acc_by_step
        self.acc_by_epoch = acc_by_epoch
        self.grad_magnitudes = grad_magnitudes
        self.nan_at_step = nan_at_step
        self.weight_decay = weight_decay
        self.with_groups = with_groups
        self.sigma_by_step: dict[int, float] = {}

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        if not self.with_groups:
            raise AttributeError("no groups")  # pragma: no cover
        return {
            "vision": [(f"vision.{n}", p) for n, p in self.vision.named_parameters()],
            "text": [(f"text.{n}", p) for n, p in self.text.named_parameters()],
        }

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        generator = torch.Generator().manual_seed(1000 + self.global_step)
        noise = torch.randn(x.shape, generator=generator) * self.sigma
        out = self.head(torch.tanh(self.vision(x + noise)) + self.text(self.frozen(x)))
        loss = (out - 1.0).pow(2).mean()
        if self.nan_at_step is not None and self.global_step == self.nan_at_step:
            loss = loss * float("nan")
        self.sigma_by_step[self.global_step] = self.sigma
        return loss

    def on_after_backward(self) -> None:
        if self.grad_magnitudes:
            for name, p in self.named_parameters():
                if name in self.grad_magnitudes:
                    p.grad.fill_(self.grad_magnitudes[name])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if self.acc_by_step is not None:
            value = self.acc_by_step[self.global_step - 1]  # validation after step s sees global_step s + 1
        elif self.acc_by_epoch is not None:
            value = self.acc_by_epoch[self.current_epoch]
        else:
            value = 0.5
        self.log(MONITOR, value, batch_size=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=0.05, weight_decay=self.weight_decay)

    def train_dataloader(self) -> DataLoader:
        # the same 4 rows in every batch: resuming mid-epoch with a non-resumable dataloader restarts the epoch's
        # data from its first batch, which must not change the result
        x = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)).repeat(STEPS_PER_EPOCH, 1)
        return DataLoader(TensorDataset(x), batch_size=4)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(1, 4)), batch_size=1)


class NoGroups(Toy):
    parameter_groups = None  # type: ignore[assignment]


def make_trainer(callbacks: list[Callback], **kwargs: Any) -> Trainer:
    options = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        val_check_interval=1,  # validate after every optimizer step
        max_epochs=1,
    )
    options.update(kwargs)
    return Trainer(callbacks=callbacks, **options)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def assert_tree_equal(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_tree_equal(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_tree_equal(x, y)
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def copy_tree(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: copy_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(copy_tree(v) for v in obj)
    return obj


# ======================================================================== GradientLayerSelection

MAGNITUDES = {
    "vision.0.weight": 1.0, "vision.0.bias": 4.0, "vision.1.weight": 3.0, "vision.1.bias": 2.0,
    "text.0.weight": 0.5, "text.0.bias": 0.1, "text.1.weight": 0.9, "text.1.bias": 0.3,
}


@pytest.mark.parametrize("use_patterns", [False, True])
def test_selection_keeps_top_k_and_leaves_the_rest_untouched(use_patterns: bool) -> None:
    seed_everything(0)
    model = Toy(grad_magnitudes=MAGNITUDES, weight_decay=0.1)
    groups = {"vision": [r"^vision\."], "text": [r"^text\."]} if use_patterns else None
    selection = GradientLayerSelection(k={"vision": 2, "text": 1}, groups=groups)
    before = snapshot(model)
    trainer = make_trainer([selection], max_steps=1)
    trainer.fit(model)
    after = snapshot(model)

    assert selection.last_selected == {"vision": ["vision.0.bias", "vision.1.weight"], "text": ["text.1.weight"]}
    assert selection.selection_counts == {"vision.0.bias": 1, "vision.1.weight": 1, "text.1.weight": 1}
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    # weight decay > 0 would move every tensor that got a zero gradient: unchanged proves grad=None
    assert changed == {"vision.0.bias", "vision.1.weight", "text.1.weight"}
    optimizer = trainer.optimizers[0]
    with_state = {n for n, p in model.named_parameters() if optimizer.state.get(p)}
    assert with_state == changed  # Adam kept no momentum for the dropped tensors
    assert trainer.callback_metrics["selection/vision_k"].item() == 2
    assert trainer.callback_metrics["selection/text_k"].item() == 1


def test_selection_other_keep_updates_ungrouped_parameters() -> None:
    seed_everything(0)
    model = Toy(grad_magnitudes=MAGNITUDES)
    selection = GradientLayerSelection(k=1, other="keep")
    before = snapshot(model)
    make_trainer([selection], max_steps=1).fit(model)
    after = snapshot(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == {"vision.0.bias", "text.1.weight", "head.weight", "head.bias"}


def test_selection_ties_are_broken_by_parameter_order() -> None:
    equal = {name: 1.0 for names in NAMES.values() for name in names}
    results = []
    for _ in range(2):
        seed_everything(0)
        selection = GradientLayerSelection(k=3)
        make_trainer([selection], max_steps=1).fit(Toy(grad_magnitudes=equal))
        results.append(selection.last_selected)
    assert results[0] == results[1] == {"vision": NAMES["vision"][:3], "text": NAMES["text"][:3]}


def test_selection_set_k_takes_effect_during_training() -> None:
    class SetKAtStep(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
            if trainer.global_step == 1:
                selection.set_k("vision", 3)

    seed_everything(0)
    selection = GradientLayerSelection(k=1)
    seen: list[int] = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
            seen.append(len(selection.last_selected["vision"]))

    make_trainer([selection, SetKAtStep(), Record()], max_steps=2).fit(Toy(grad_magnitudes=MAGNITUDES))
    assert seen == [1, 3]
    assert selection.current_k == {"vision": 3, "text": 1}
    assert selection.state_dict()["k_overrides"] == {"vision": 3}

    restored = GradientLayerSelection(k=1)
    restored.load_state_dict(selection.state_dict())
    assert restored.get_k("vision") == 3 and restored.selection_counts == selection.selection_counts

    with pytest.raises(ConfigError, match=re.escape("`k` for group 'vision' must be an int >= 1, got 0")):
        selection.set_k("vision", 0)
    with pytest.raises(ConfigError, match=re.escape("Unknown group 'audio'")):
        selection.set_k("audio", 2)


def test_selection_unknown_group_from_set_k_fails_at_fit_start() -> None:
    selection = GradientLayerSelection(k=1)  # groups come from the module: the name cannot be checked yet
    selection.set_k("audio", 2)
    with pytest.raises(MisconfigurationException, match=re.escape("unknown groups ['audio']")):
        make_trainer([selection], max_steps=1).fit(Toy())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(k=0), "got 0"),
        (dict(k=-2), "got -2"),
        (dict(k=True), "got True"),
        (dict(k=2.5), "got 2.5"),
        (dict(k={"vision": 0}), "`k`['vision'] must be an int >= 1, got 0"),
        (dict(k={}), "got {}"),
        (dict(groups={"vision": []}), "got []"),
        (dict(groups={"vision": "^vision"}), "got '^vision'"),
        (dict(groups={"vision": ["("]}), "invalid regex '('"),
        (dict(groups={"vision": [3]}), "patterns must be strings, got 3"),
        (dict(groups={}), "`groups` must be a non-empty dict of group -> list of regex patterns, got {}"),
        (dict(groups={1: ["v"]}), "`groups` keys must be strings, got 1"),
        (dict(other="maybe"), "got 'maybe'"),
        (dict(k={"vision": 1, "audio": 1}, groups={"vision": ["v"], "text": ["t"]}), "unknown: ['audio']"),
    ],
)
def test_selection_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        GradientLayerSelection(**kwargs)


@pytest.mark.parametrize(
    ("selection", "model", "message"),
    [
        (GradientLayerSelection(k=1, groups={"a": ["0"], "b": ["weight"]}), Toy(), "matches the patterns of several"),
        (GradientLayerSelection(k=1, groups={"a": ["^nothing"]}), Toy(), "Group 'a' matches no parameter"),
        (GradientLayerSelection(k=1), NoGroups(), "parameter_groups()"),
        (GradientLayerSelection(k={"vision": 1}), Toy(), "no value for group 'text'"),
    ],
)
def test_selection_group_errors(selection: GradientLayerSelection, model: Toy, message: str) -> None:
    with pytest.raises(MisconfigurationException, match=re.escape(message)):
        make_trainer([selection], max_steps=1).fit(model)


# ======================================================================== SyntheticAccuracyStopping


@pytest.mark.parametrize(
    ("values", "goal", "expected_steps"),
    [
        ([0.5, 0.3, 0.1, 0.05, 0.0, 0.0], 0.1, 3),  # exactly equal to the goal (logged as float32) stops
        ([0.5, 0.3, 0.1000001, 0.09375, 0.0, 0.0], 0.1, 4),  # just above does not
        ([0.5, 0.0, 0.0, 0.0], 0.0, 2),
        ([0.9, 0.8, 0.7, 0.6], 0.1, 4),  # never reached: runs to max_epochs
    ],
)
def test_stopping_at_first_validation_at_or_below_goal(values: list[float], goal: float, expected_steps: int) -> None:
    stopping = SyntheticAccuracyStopping(goal=goal)
    trainer = make_trainer([stopping], max_epochs=2)
    trainer.fit(Toy(acc_by_step=values))
    assert trainer.global_step == expected_steps
    reached = expected_steps < 2 * STEPS_PER_EPOCH or values[expected_steps - 1] <= goal
    assert (stopping.stopping_reason == EarlyStoppingReason.STOPPING_THRESHOLD) == reached


@pytest.mark.parametrize("goal", [-0.1, 1.5, float("nan"), True, "0.1", None])
def test_stopping_bad_goal(goal: Any) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"`goal` must be a number in [0, 1], got {goal!r}")):
        SyntheticAccuracyStopping(goal=goal)


def test_stopping_bad_mode() -> None:
    with pytest.raises(ConfigError, match=re.escape("`mode` must be one of 'min', 'max', got 'avg'")):
        SyntheticAccuracyStopping(mode="avg")  # type: ignore[arg-type]


# ======================================================================== NoiseLayerEscalation


class EpochProbe(Callback):
    """Copies model and optimizer state at every epoch start and end (place it after the escalation)."""

    def __init__(self) -> None:
        self.start: dict[int, tuple] = {}
        self.end: dict[int, tuple] = {}

    def _copy(self, trainer: Trainer, pl_module: LightningModule) -> tuple:
        return snapshot(pl_module), copy_tree(trainer.optimizers[0].state_dict()), pl_module.sigma

    def on_train_epoch_start(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        self.start[trainer.current_epoch] = self._copy(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        self.end[trainer.current_epoch] = self._copy(trainer, pl_module)


def test_escalation_restores_model_and_optimizer_bit_exactly_and_escalates() -> None:
    seed_everything(0)
    model = Toy(acc_by_epoch=[0.5, 0.6, 0.4])
    selection = GradientLayerSelection(k=1)
    escalation = NoiseLayerEscalation(sigma_schedule=[0.1, 0.3, 0.5], k_schedules={"vision": [1, 2, 3], "text": [1]})
    escalation.selection = selection  # a plain LightningModule: connected by hand
    probe = EpochProbe()
    make_trainer([selection, escalation, probe], max_epochs=3).fit(model)

    # epoch 1 did not improve on 0.5: everything back to the start of epoch 1, including Adam's moments and steps
    params_start, optim_start, _ = probe.start[1]
    params_end, optim_end, sigma_after = probe.end[1]
    assert_tree_equal(params_end, params_start)
    assert_tree_equal(optim_end, optim_start)
    assert optim_start["state"]  # not trivially empty
    assert sigma_after == 0.3
    assert [model.sigma_by_step[s] for s in range(6)] == [0.1, 0.1, 0.1, 0.1, 0.3, 0.3]
    assert escalation.sigma_history == [0.1, 0.1, 0.3]
    assert escalation.monitor_history == pytest.approx([0.5, 0.6, 0.4])
    assert escalation.restored_epochs == [1]
    assert escalation.position == 1 and selection.current_k == {"vision": 2, "text": 1}
    # epoch 2 improved: recorded as best, and the weights it reached are the final ones
    assert escalation.best_value == pytest.approx(0.4) and escalation.best_epoch == 2
    assert_tree_equal(escalation.best_state, {n: p for n, p in probe.end[2][0].items() if n in escalation.best_state})
    assert set(escalation.best_state) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert escalation.stopping_reason is EscalationStopReason.NOT_STOPPED
    assert escalation.stopping_reason_message is None


def test_escalation_loads_best_state_at_the_end() -> None:
    class StopAt(Callback):  # another callback ends the run in a worse epoch, which is not undone
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
            if trainer.global_step == 6:
                trainer.should_stop = True
                self.weights = snapshot(pl_module)

    seed_everything(0)
    model = Toy(acc_by_epoch=[0.5, 0.4, 0.45, 0.3])
    escalation = NoiseLayerEscalation(sigma_schedule=[0.1, 0.2])
    stop_at, probe = StopAt(), EpochProbe()
    make_trainer([GradientLayerSelection(k=2), escalation, stop_at, probe], max_epochs=4).fit(model)
    assert escalation.monitor_history == pytest.approx([0.5, 0.4, 0.45])
    assert escalation.restored_epochs == [] and escalation.best_epoch == 1
    final = snapshot(model)
    assert not all(torch.equal(final[n], stop_at.weights[n]) for n in final)
    assert_tree_equal(final, probe.end[1][0])


@pytest.mark.parametrize(
    ("positions", "epochs", "sigma_history", "text_k"),
    [
        # 3 positions: sigma holds its last value once done, text k goes on
        ("longest", 4, [0.1, 0.1, 0.2, 0.2], 3),
        # 2 positions, as the published code: stops when sigma is done, text k's last value is never used
        ("sigma", 3, [0.1, 0.1, 0.2], 2),
    ],
)
def test_escalation_stops_when_schedules_are_exhausted(
    positions: str, epochs: int, sigma_history: list[float], text_k: int
) -> None:
    seed_everything(0)
    model = Toy(acc_by_epoch=[0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9, 0.9])
    selection = GradientLayerSelection(k=1)
    escalation = NoiseLayerEscalation(
        sigma_schedule=[0.1, 0.2], k_schedules={"vision": [1], "text": [1, 2, 3]}, positions=positions
    )
    assert escalation.num_positions == epochs - 1
    escalation.selection = selection
    probe = EpochProbe()
    trainer = make_trainer([selection, escalation, probe], max_epochs=8)
    trainer.fit(model)
    assert trainer.current_epoch == epochs  # epochs 0..epochs-1 ran
    assert escalation.stopping_reason is EscalationStopReason.SCHEDULE_EXHAUSTED
    assert "the schedules are exhausted" in escalation.stopping_reason_message
    assert escalation.sigma_history == sigma_history
    assert escalation.restored_epochs == list(range(1, epochs))
    assert selection.current_k == {"vision": 1, "text": text_k}
    assert escalation.best_epoch == 0
    assert_tree_equal(snapshot(model), probe.end[0][0])


@pytest.mark.parametrize("initial_best", [None, 1.0])
def test_escalation_initial_best(initial_best: Optional[float]) -> None:
    seed_everything(0)
    model = Toy(acc_by_epoch=[1.0, 0.5, 0.6])
    escalation = NoiseLayerEscalation(sigma_schedule=[0.1, 0.3, 0.5], initial_best=initial_best)
    probe = EpochProbe()
    make_trainer([GradientLayerSelection(k=2), escalation, probe], max_epochs=3).fit(model)
    assert escalation.monitor_history == pytest.approx([1.0, 0.5, 0.6])
    assert escalation.best_value == pytest.approx(0.5) and escalation.best_epoch == 1
    assert_tree_equal(snapshot(model), probe.end[1][0])
    if initial_best is None:  # the first value counts as an improvement: epoch 0 is kept
        assert escalation.restored_epochs == [2]
        assert escalation.sigma_history == [0.1, 0.1, 0.1]
        start, end = probe.start[0][0], probe.end[0][0]
        assert not all(torch.equal(start[n], end[n]) for n in start)
    else:  # 1.0 does not beat 1.0: epoch 0 is undone and escalates, as in the published code
        assert escalation.restored_epochs == [0, 2]
        assert escalation.sigma_history == [0.1, 0.3, 0.3]
        params_start, optim_start, _ = probe.start[0]
        params_end, optim_end, sigma_after = probe.end[0]
        assert_tree_equal(params_end, params_start)
        assert_tree_equal(optim_end, optim_start)
        assert sigma_after == 0.3


def test_escalation_initial_best_never_beaten_keeps_the_last_restored_state() -> None:
    seed_everything(0)
    model = Toy(acc_by_epoch=[1.0, 1.0, 1.0, 1.0])
    escalation = NoiseLayerEscalation(sigma_schedule=[0.1, 0.2], initial_best=1.0)
    probe = EpochProbe()
    trainer = make_trainer([GradientLayerSelection(k=2), escalation, probe], max_epochs=4)
    trainer.fit(model)
    assert trainer.current_epoch == 2 and escalation.restored_epochs == [0, 1]
    assert escalation.stopping_reason is EscalationStopReason.SCHEDULE_EXHAUSTED
    assert "did not improve on 1.0" in escalation.stopping_reason_message
    assert escalation.best_value is None and escalation.best_epoch is None and escalation.best_state is None
    assert_tree_equal(snapshot(model), probe.start[1][0])  # the restored start of the last epoch
    assert_tree_equal(snapshot(model), probe.start[0][0])  # which is where the run began


@pytest.mark.parametrize("nan_at_step", [3, 1])
def test_escalation_non_finite_loss_keeps_best_state_and_stops(nan_at_step: int) -> None:
    seed_everything(0)
    model = Toy(acc_by_epoch=[0.5, 0.4, 0.3], nan_at_step=nan_at_step)
    escalation = NoiseLayerEscalation(sigma_schedule=[0.1, 0.2])
    probe = EpochProbe()
    trainer = make_trainer([GradientLayerSelection(k=2), escalation, probe], max_epochs=3)
    with pytest.warns(UserWarning, match="training loss is not finite"):
        trainer.fit(model)
    assert escalation.stopping_reason is EscalationStopReason.NON_FINITE_LOSS
    assert "the training loss is not finite" in escalation.stopping_reason_message
    assert trainer.global_step == nan_at_step + 1
    final = snapshot(model)
    assert all(torch.isfinite(p).all() for p in final.values())
    moments = [t for s in trainer.optimizers[0].state_dict()["state"].values() for t in s.values()]
    assert all(torch.isfinite(t).all() for t in moments)
    if nan_at_step == 3:  # in epoch 1: epoch 0 is the best state
        assert escalation.best_epoch == 0 and escalation.monitor_history == pytest.approx([0.5])
        assert_tree_equal(final, probe.end[0][0])
    else:  # in epoch 0: no best yet, back to the initial weights
        assert escalation.best_value is None and escalation.monitor_history == []
        assert_tree_equal(final, probe.start[0][0])


def test_all_three_together_goal_reached_keeps_the_goal_weights() -> None:
    class Weights(Callback):
        def on_validation_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
            self.last = snapshot(pl_module)

    seed_everything(0)
    # steps 0..5: epoch 0 ends at 0.5, epoch 1 at 0.6 (undone), the goal is reached at the first step of epoch 2
    model = Toy(acc_by_step=[0.7, 0.5, 0.55, 0.6, 0.08, 0.0])
    selection, escalation, stopping = GradientLayerSelection(k=2), NoiseLayerEscalation(), SyntheticAccuracyStopping()
    weights = Weights()
    trainer = make_trainer([selection, escalation, stopping, weights], max_epochs=5)
    trainer.fit(model)
    assert trainer.global_step == 5 and stopping.stopping_reason == EarlyStoppingReason.STOPPING_THRESHOLD
    assert escalation.stopping_reason is EscalationStopReason.NOT_STOPPED and escalation.restored_epochs == [1]
    assert escalation.best_epoch == 2 and escalation.best_value == pytest.approx(0.08)
    assert escalation.sigma_history == [0.1, 0.1, 0.3]
    assert_tree_equal(snapshot(model), weights.last)


def test_escalation_stopping_reason_state_dict_round_trip() -> None:
    seed_everything(0)
    escalation = NoiseLayerEscalation(sigma_schedule=[0.1, 0.2])
    make_trainer([GradientLayerSelection(k=2), escalation], max_epochs=4).fit(Toy(acc_by_epoch=[0.5, 0.6, 0.7, 0.8]))
    assert escalation.stopping_reason is EscalationStopReason.SCHEDULE_EXHAUSTED

    state = escalation.state_dict()
    assert state["stopping_reason"] == "schedule_exhausted" and type(state["stopping_reason"]) is str
    assert "stop_reason" not in state
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # as `fit(ckpt_path=...)` loads callback state
    restored = NoiseLayerEscalation(sigma_schedule=[0.1, 0.2])
    restored.load_state_dict(loaded)
    assert restored.stopping_reason is EscalationStopReason.SCHEDULE_EXHAUSTED
    assert restored.stopping_reason_message == escalation.stopping_reason_message
    assert restored.position == escalation.position and restored.restored_epochs == [1, 2]

    fresh = NoiseLayerEscalation().state_dict()
    assert fresh["stopping_reason"] == "not_stopped" and fresh["stopping_reason_message"] is None


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ({"position": 1, "stop_reason": "non_finite_loss"}, EscalationStopReason.NON_FINITE_LOSS),
        ({"position": 1, "stop_reason": "schedule_exhausted"}, EscalationStopReason.SCHEDULE_EXHAUSTED),
        ({"position": 1, "stop_reason": None}, EscalationStopReason.NOT_STOPPED),
        ({"position": 1}, EscalationStopReason.NOT_STOPPED),
    ],
)
def test_escalation_loads_the_old_stop_reason_string(state: dict, reason: EscalationStopReason) -> None:
    escalation = NoiseLayerEscalation()
    escalation.load_state_dict(state)
    assert escalation.stopping_reason is reason and escalation.stopping_reason_message is None
    assert escalation.position == 1


def test_escalation_unknown_stopping_reason_in_state() -> None:
    with pytest.raises(CheckpointError, match=re.escape("unknown stopping reason 'tired'")):
        NoiseLayerEscalation().load_state_dict({"stopping_reason": "tired"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(sigma_schedule=[]), "got []"),
        (dict(sigma_schedule=[0.1, 0.0]), "got 0.0"),
        (dict(sigma_schedule=[-1.0]), "got -1.0"),
        (dict(sigma_schedule=[float("inf")]), "got inf"),
        (dict(sigma_schedule="0.1"), "got '0.1'"),
        (dict(k_schedules={"vision": []}), "`k_schedules['vision']` must be a non-empty list of positive ints, got []"),
        (dict(k_schedules={"vision": [2, 0]}), "got 0"),
        (dict(k_schedules={"vision": [1.5]}), "got 1.5"),
        (dict(k_schedules={}), "`k_schedules` must be a non-empty dict of group -> list of k, got {}"),
        (dict(mode="avg"), "got 'avg'"),
        (dict(sigma_attribute="not a name"), "`sigma_attribute` must be an attribute name"),
        (dict(initial_best=float("nan")), "`initial_best` must be a finite number or None, got nan"),
        (dict(initial_best="1.0"), "`initial_best` must be a finite number or None, got '1.0'"),
        (dict(positions="all"), "`positions` must be one of 'longest', 'sigma', got 'all'"),
    ],
)
def test_escalation_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        NoiseLayerEscalation(**kwargs)


def test_escalation_setup_errors() -> None:
    with pytest.raises(MisconfigurationException, match="needs a `GradientLayerSelection`"):
        make_trainer([NoiseLayerEscalation(k_schedules={"vision": [1]})]).fit(Toy())
    with pytest.raises(MisconfigurationException, match=re.escape("`Toy.noise`, which does not exist")):
        make_trainer([NoiseLayerEscalation(sigma_attribute="noise")]).fit(Toy())
    with pytest.raises(RuntimeError, match="monitors `missing`"):
        make_trainer([NoiseLayerEscalation(monitor="missing")]).fit(Toy())


# ======================================================================== resume

RESUME_ACC = [0.5, 0.6, 0.4, 0.45, 0.3, 0.35, 0.2, 0.25]


def resume_callbacks(
    **options: Any,
) -> tuple[GradientLayerSelection, NoiseLayerEscalation, SyntheticAccuracyStopping]:
    selection = GradientLayerSelection(k=1)
    escalation = NoiseLayerEscalation(
        sigma_schedule=[0.1, 0.3, 0.5, 0.7], k_schedules={"vision": [1, 2, 3], "text": [1, 2, 2, 3, 4]}, **options
    )
    escalation.selection = selection
    return selection, escalation, SyntheticAccuracyStopping(goal=0.0)  # never reached, but saved and restored


def outcome(model: Toy, selection: GradientLayerSelection, escalation: NoiseLayerEscalation) -> dict:
    return {
        "weights": snapshot(model),
        "sigma": model.sigma,
        "k": selection.current_k,
        "counts": selection.selection_counts,
        "sigma_history": escalation.sigma_history,
        "monitor_history": escalation.monitor_history,
        "restored": escalation.restored_epochs,
        "best": (escalation.best_value, escalation.best_epoch),
        "best_state": escalation.best_state,
        "stopping_reason": escalation.stopping_reason,
        "sigma_by_step": {s: v for s, v in model.sigma_by_step.items() if s >= 11},
    }


class Interrupt(Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated interruption")


# default options; or the published ones: 0.5 does not beat 0.45, so epoch 0 is undone too, and the run stops when
# sigma's 4 values are used (at epoch 5) though the text k schedule has 5
RESUME_OPTIONS = [
    (dict(), [1, 3, 5, 7], {"vision": 3, "text": 4}, EscalationStopReason.NOT_STOPPED, 2, [1, 3]),
    (dict(initial_best=0.45, positions="sigma"), [0, 1, 3, 5], {"vision": 3, "text": 3},
     EscalationStopReason.SCHEDULE_EXHAUSTED, 3, [0, 1, 3]),
]


@pytest.mark.filterwarnings("ignore:The dirpath has changed")
@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
@pytest.mark.parametrize(
    ("options", "restored", "k", "reason", "position", "restored_at_11"), RESUME_OPTIONS, ids=["default", "published"]
)
@pytest.mark.parametrize("mid_epoch", [False, True])
def test_resume_matches_uninterrupted_run(
    tmp_path: Any, mid_epoch: bool, options: dict, restored: list[int], k: dict, reason: EscalationStopReason,
    position: int, restored_at_11: list[int],
) -> None:
    seed_everything(0)
    model = Toy(acc_by_epoch=RESUME_ACC)
    selection, escalation, stopping = resume_callbacks(**options)
    make_trainer([selection, escalation, stopping], max_epochs=8).fit(model)
    expected = outcome(model, selection, escalation)
    assert expected["restored"] == restored and expected["k"] == k and expected["stopping_reason"] is reason

    # interrupted in the second step of epoch 5, an epoch that gets undone; checkpoints at every epoch end, or after
    # every step (then the resumed run must undo epoch 5 with the snapshot taken before the interruption)
    seed_everything(0)
    selection, escalation, stopping = resume_callbacks(**options)
    checkpoint = (
        ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1, save_on_train_epoch_end=False)
        if mid_epoch
        else ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_epochs=1, save_on_train_epoch_end=True)
    )
    callbacks = [selection, escalation, stopping, checkpoint, Interrupt(11)]
    trainer = make_trainer(callbacks, max_epochs=8, enable_checkpointing=True)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        trainer.fit(Toy(acc_by_epoch=RESUME_ACC))

    path = tmp_path / "last.ckpt"
    saved = torch.load(path, weights_only=True)
    state = saved["callbacks"][escalation.state_key]
    assert state["position"] == position and state["restored_epochs"] == restored_at_11
    assert state["stopping_reason"] == "not_stopped"
    assert state["epoch_open"] == mid_epoch and state["snapshot_epoch"] == (5 if mid_epoch else 4)
    assert set(state["best_state"]) == set(state["snapshot_state"]) and state["snapshot_optimizers"]
    assert saved["callbacks"][selection.state_key]["selection_counts"]
    assert saved["callbacks"][stopping.state_key]["patience"] == stopping.patience

    seed_everything(123)  # a different init: everything must come from the checkpoint
    model = Toy(acc_by_epoch=RESUME_ACC)
    selection, escalation, stopping = resume_callbacks(**options)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "again", save_last=True)
    trainer = make_trainer([selection, escalation, stopping, checkpoint], max_epochs=8, enable_checkpointing=True)
    trainer.fit(model, ckpt_path=path)
    assert_tree_equal(outcome(model, selection, escalation), expected)
