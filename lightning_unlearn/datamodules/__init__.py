"""LightningDataModules: the synthetic forget set and the evaluation datasets."""

from lightning_unlearn.datamodules.evaluation import EvaluationDataModule
from lightning_unlearn.datamodules.synthetic import SyntheticForgetDataModule

__all__ = ["EvaluationDataModule", "SyntheticForgetDataModule"]
