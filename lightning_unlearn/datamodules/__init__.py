"""LightningDataModules: the evaluation datasets and the forget sets methods train on."""

from lightning_unlearn.datamodules.evaluation_data import EvaluationDataModule
from lightning_unlearn.datamodules.forget import ForgetDataModule, ForgetImages, ForgetSet
from lightning_unlearn.datamodules.real import RealForgetDataModule
from lightning_unlearn.datamodules.synthetic import SyntheticForgetDataModule

__all__ = [
    "EvaluationDataModule",
    "ForgetDataModule",
    "ForgetImages",
    "ForgetSet",
    "RealForgetDataModule",
    "SyntheticForgetDataModule",
]
