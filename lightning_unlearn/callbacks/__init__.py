"""Reusable Lightning callbacks for synthetic-sample unlearning (usable in any Lightning project).

``GradientLayerSelection``, ``SyntheticAccuracyStopping`` and ``NoiseLayerEscalation`` know nothing of
CLIP; ``UnlearningReport`` (this project's report and export) loads on first access.
"""

from typing import Any

from lightning_unlearn.callbacks.escalation import EscalationStopReason, NoiseLayerEscalation
from lightning_unlearn.callbacks.selection import GradientLayerSelection
from lightning_unlearn.callbacks.stopping import SyntheticAccuracyStopping

__all__ = [
    "EscalationStopReason",
    "GradientLayerSelection",
    "NoiseLayerEscalation",
    "SyntheticAccuracyStopping",
    "UnlearningReport",
]


def __getattr__(name: str) -> Any:
    if name == "UnlearningReport":
        from lightning_unlearn.callbacks.unlearning_report import UnlearningReport

        return UnlearningReport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
