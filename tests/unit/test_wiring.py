"""lightning/wiring.py: the run's callbacks are connected by type where the user left a connection
open, explicit connections are kept, and what cannot work is refused."""

from __future__ import annotations

import pytest

from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.callbacks import (
    GradientLayerSelection,
    NoiseLayerEscalation,
    SyntheticAccuracyStopping,
    UnlearningReport,
)
from lightning_unlearn.methods import ErrorMinMaxNoise, MultimodalLipschitz
from lightning_unlearn.lightning.wiring import connect_callbacks


def test_open_connections_are_filled_by_type() -> None:
    selection, escalation, stopping = GradientLayerSelection(k=1), NoiseLayerEscalation(), SyntheticAccuracyStopping()
    report = UnlearningReport(print_table=False)
    connect_callbacks([selection, stopping, escalation, report], MultimodalLipschitz())
    assert escalation.selection is selection
    assert (report.selection, report.escalation, report.stopping) == (selection, escalation, stopping)


def test_explicit_connections_are_kept() -> None:
    mine, other = GradientLayerSelection(k=1), GradientLayerSelection(k=2)
    escalation = NoiseLayerEscalation()
    escalation.selection = mine
    connect_callbacks([other, escalation], MultimodalLipschitz())
    assert escalation.selection is mine


def test_two_selections_or_a_steered_fixed_schedule_are_refused() -> None:
    with pytest.raises(ConfigError, match="2 `GradientLayerSelection` callbacks"):
        connect_callbacks([GradientLayerSelection(k=1), GradientLayerSelection(k=2)], MultimodalLipschitz())
    with pytest.raises(ConfigError, match=r"remove \['NoiseLayerEscalation'\]"):
        connect_callbacks([NoiseLayerEscalation()], ErrorMinMaxNoise())
