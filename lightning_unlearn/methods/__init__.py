"""Unlearning methods on one contract (:class:`UnlearningMethod`), chosen in YAML."""

from lightning_unlearn.methods.amnesiac import AmnesiacRelabelling, AmnesiacRetain
from lightning_unlearn.methods.contract import MethodHost, UnlearningMethod, ZeroShotType, as_method, zero_shot_type
from lightning_unlearn.methods.deep import DeepEdit
from lightning_unlearn.methods.edit import TextProjectionEdit
from lightning_unlearn.methods.emmn import ErrorMinMaxNoise
from lightning_unlearn.methods.lipschitz import EmbeddingLoss, ImageLipschitz, MultimodalLipschitz, PerturbationMethod
from lightning_unlearn.methods.nullspace import NullSpaceProjection

__all__ = [
    "AmnesiacRelabelling",
    "AmnesiacRetain",
    "DeepEdit",
    "EmbeddingLoss",
    "ErrorMinMaxNoise",
    "ImageLipschitz",
    "MultimodalLipschitz",
    "NullSpaceProjection",
    "PerturbationMethod",
    "TextProjectionEdit",
    "MethodHost",
    "UnlearningMethod",
    "as_method",
    "ZeroShotType",
    "zero_shot_type",
]
