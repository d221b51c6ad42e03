"""NoiseLayerEscalation's final weights when no epoch improves (``no_improvement_weights``).

The published code copies the weights just before it undoes an epoch and, if no epoch ever improved, ends with that
copy (the last failed epoch's weights); ``"restored"`` ends on the restored start (the weights the run began with).
The monitored value is scripted per epoch, so the decisions do not depend on the training trajectory.
"""

from __future__ import annotations

import io
import re
from typing import Any, Optional

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn.callbacks import EscalationStopReason, GradientLayerSelection, NoiseLayerEscalation
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.callbacks.run_report import _with_final_weights

MONITOR = "forget/synthetic_acc"


class Scripted(LightningModule):
    """Two linear "towers"; the monitored value of epoch e is ``acc_by_epoch[e]``."""

    def __init__(self, acc_by_epoch: list[float]) -> None:
        super().__init__()
        self.vision = nn.Linear(4, 4)
        self.text = nn.Linear(4, 1)
        self.sigma = 1.0
        self.acc_by_epoch = acc_by_epoch

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return {"vision": [(f"vision.{n}", p) for n, p in self.vision.named_parameters()],
                "text": [(f"text.{n}", p) for n, p in self.text.named_parameters()]}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(self.global_step)) * self.sigma
        return (self.text(torch.tanh(self.vision(x + noise))) - 1.0).pow(2).mean()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log(MONITOR, self.acc_by_epoch[self.current_epoch], batch_size=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.05, weight_decay=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(4, 4, generator=torch.Generator().manual_seed(0))), batch_size=4)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(1, 4)), batch_size=1)


class EpochEnds(Callback):
    """The weights at every epoch start and at every train batch end (before any undo)."""

    def __init__(self) -> None:
        self.start: dict[int, dict[str, torch.Tensor]] = {}
        self.reached: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_epoch_start(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        self.start[trainer.current_epoch] = weights(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.reached[trainer.current_epoch] = weights(pl_module)


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def fit(acc: list[float], rule: Optional[str], max_epochs: int = 6, **trainer_kwargs: Any):
    seed_everything(0)
    model = Scripted(acc)
    options = {} if rule is None else {"no_improvement_weights": rule}
    escalation = NoiseLayerEscalation(sigma_schedule=[0.1, 0.3, 0.5], k_schedules={"vision": [1, 2], "text": [1]},
                                      initial_best=1.0, positions="sigma", **options)
    probe = EpochEnds()
    selection = GradientLayerSelection(k=1)
    escalation.selection = selection  # the explicit connection (docs/callbacks.md)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, val_check_interval=1,
                      max_epochs=max_epochs, callbacks=[selection, escalation, probe],
                      **{"enable_checkpointing": False, **trainer_kwargs})
    return model, escalation, probe, trainer


# published: best so far starts at 1.0 and no epoch goes below it
NEVER = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("rule", ["last_failed", "restored", None])
def test_no_epoch_improves(rule: Optional[str]) -> None:
    model, escalation, probe, trainer = fit(NEVER, rule)
    trainer.fit(model)
    assert escalation.restored_epochs == [0, 1, 2]
    assert escalation.stopping_reason is EscalationStopReason.SCHEDULE_EXHAUSTED
    assert escalation.best_state is None
    final = weights(model)
    assert not same(probe.reached[2], probe.start[0])  # the last epoch did move the weights before it was undone
    if rule == "last_failed":  # the weights epoch 2 reached, copied before it was undone
        assert same(final, probe.reached[2]) and escalation.final_weights == "last_failed"
    else:  # the default: the restored start, which is where the run began
        assert same(final, probe.start[0]) and escalation.final_weights == "restored"


@pytest.mark.parametrize("rule", ["last_failed", "restored"])
def test_an_improving_epoch_makes_the_rule_irrelevant(rule: str) -> None:
    model, escalation, probe, trainer = fit([1.0, 0.6, 0.7, 0.8, 0.9, 0.9], rule)
    trainer.fit(model)
    assert escalation.best_epoch == 1 and escalation.restored_epochs == [0, 2, 3]
    assert same(weights(model), probe.reached[1]) and escalation.final_weights is None


def test_the_last_failed_epoch_is_the_last_one_undone_not_the_first() -> None:
    # max_epochs cuts the run after two undone epochs: the weights are those epoch 1 reached
    model, escalation, probe, trainer = fit(NEVER, "last_failed", max_epochs=2)
    trainer.fit(model)
    assert escalation.restored_epochs == [0, 1]
    assert same(weights(model), probe.reached[1]) and not same(weights(model), probe.reached[0])


def test_stop_reason_names_the_rule() -> None:
    for rule in ("last_failed", "restored"):
        model, escalation, _, trainer = fit(NEVER, rule)
        trainer.fit(model)
        assert _with_final_weights("schedule_exhausted", escalation) == (
            f"schedule_exhausted (no epoch improved, no_improvement_weights={rule})")
    model, escalation, _, trainer = fit([0.5, 0.6, 0.7, 0.8, 0.9, 0.9], "last_failed")
    trainer.fit(model)
    assert _with_final_weights("schedule_exhausted", escalation) == "schedule_exhausted"
    assert _with_final_weights("max_epochs_or_steps", None) == "max_epochs_or_steps"


@pytest.mark.filterwarnings("ignore:The dirpath has changed")
@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_the_last_failed_state_survives_a_resume(tmp_path: Any) -> None:
    model, escalation, _, trainer = fit(NEVER, "last_failed")
    trainer.fit(model)
    expected = weights(model)

    class Interrupt(Callback):
        def on_train_epoch_start(self, trainer, pl_module):  # type: ignore[no-untyped-def]
            if trainer.current_epoch == 2:
                raise RuntimeError("simulated interruption")

    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_epochs=1, save_on_train_epoch_end=True)
    model, escalation, _, trainer = fit(NEVER, "last_failed", enable_checkpointing=True, default_root_dir=tmp_path)
    trainer.callbacks.extend([checkpoint, Interrupt()])
    with pytest.raises(RuntimeError, match="simulated interruption"):
        trainer.fit(model)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"][escalation.state_key]
    assert saved["last_failed_state"] is not None and saved["restored_epochs"] == [0, 1]

    model, escalation, probe, trainer = fit(NEVER, "last_failed", enable_checkpointing=False,
                                            default_root_dir=tmp_path)
    trainer.fit(model, ckpt_path=tmp_path / "last.ckpt")
    assert same(weights(model), expected) and escalation.restored_epochs == [0, 1, 2]


def test_state_dict_round_trip_and_bad_argument() -> None:
    model, escalation, _, trainer = fit(NEVER, "last_failed", max_epochs=1)
    trainer.fit(model)
    buffer = io.BytesIO()
    torch.save(escalation.state_dict(), buffer)
    buffer.seek(0)
    restored = NoiseLayerEscalation(no_improvement_weights="last_failed")
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert same(restored._last_failed_state, escalation._last_failed_state)
    NoiseLayerEscalation().load_state_dict({"position": 0})  # a checkpoint written before the option loads
    with pytest.raises(ConfigError, match=re.escape(
            "`no_improvement_weights` must be one of 'restored', 'last_failed', got 'best'")):
        NoiseLayerEscalation(no_improvement_weights="best")
