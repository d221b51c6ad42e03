"""Unlearning methods on one contract (:class:`UnlearningMethod`), chosen in YAML."""

from lightning_unlearn.methods.amnesiac import AmnesiacRelabelling, AmnesiacRetain
from lightning_unlearn.methods.base import UnlearningMethod, ZeroShotType, zero_shot_type
from lightning_unlearn.methods.emmn import ErrorMinMaxNoise
from lightning_unlearn.methods.lipschitz import EmbeddingLoss, ImageLipschitz, MultimodalLipschitz, PerturbationMethod

__all__ = [
    "AmnesiacRelabelling",
    "AmnesiacRetain",
    "EmbeddingLoss",
    "ErrorMinMaxNoise",
    "ImageLipschitz",
    "MultimodalLipschitz",
    "PerturbationMethod",
    "UnlearningMethod",
    "ZeroShotType",
    "zero_shot_type",
]
