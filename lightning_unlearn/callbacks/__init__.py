"""Reusable Lightning callbacks for synthetic-sample unlearning (usable in any Lightning project)."""

from lightning_unlearn.callbacks.escalation import EscalationStopReason, NoiseLayerEscalation
from lightning_unlearn.callbacks.selection import GradientLayerSelection
from lightning_unlearn.callbacks.stopping import SyntheticAccuracyStopping

from lightning_unlearn.callbacks.report import UnlearningReport

__all__ = [
    "EscalationStopReason",
    "GradientLayerSelection",
    "NoiseLayerEscalation",
    "SyntheticAccuracyStopping",
    "UnlearningReport",
]
