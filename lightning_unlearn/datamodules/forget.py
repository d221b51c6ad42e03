"""The forget set a method trains on, served next to the evaluation datasets.

A :class:`ForgetDataModule` is an :class:`EvaluationDataModule` (it owns the evaluation datasets
and offers their vocabularies) plus a forget set: images of the classes to forget in the model's
normalised pixel space, with their class index in the forget spec's vocabulary. The forget set
depends on the model and the resolved spec, so it is made on first use, after the
LightningModule's ``setup``: on global rank zero, then broadcast, so every rank trains on the same
images. Subclasses say how it is made (:class:`~lightning_unlearn.datamodules.SyntheticForgetDataModule`
synthesises it; a real-image DataModule reads it from a dataset split).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_unlearn._validation import _positive_int_validation
from lightning_unlearn.datamodules.evaluation import EvaluationDataModule
from lightning_unlearn.errors import ConfigError


@dataclass
class ForgetSet:
    """Forget images and what is known about them.

    Attributes:
        images: ``[M, C, H, W]`` in the model's normalised pixel space.
        labels: ``[M]`` class index of each image in the forget spec's vocabulary.
        kind: ``"synthetic"`` or ``"real"``.
        probability: ``[M]`` the class probability each image had when it was made (synthetic).
        reached: ``[M]`` whether each image reached its target probability (synthetic).
        seconds: time it took to make the set (0 for real images).
    """

    images: torch.Tensor
    labels: torch.Tensor
    kind: Literal["synthetic", "real"]
    probability: Optional[torch.Tensor] = None
    reached: Optional[torch.Tensor] = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def to_state(self) -> dict[str, Any]:
        """Tensors, numbers and strings only (checkpoints load with ``weights_only``)."""
        state: dict[str, Any] = {"images": self.images, "labels": self.labels, "kind": self.kind,
                                 "seconds": float(self.seconds), "info": json.dumps(self.info)}
        if self.probability is not None:
            state["probability"] = self.probability
        if self.reached is not None:
            state["reached"] = self.reached
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "ForgetSet":
        """The inverse of :meth:`to_state`."""
        return cls(images=state["images"], labels=state["labels"], kind=state["kind"],
                   probability=state.get("probability"), reached=state.get("reached"),
                   seconds=float(state.get("seconds", 0.0)), info=json.loads(state.get("info", "{}")))

    def summary(self) -> dict[str, Any]:
        """The report's ``forget_set`` section."""
        out: dict[str, Any] = {"kind": self.kind, "images": int(len(self.images))}
        if self.probability is not None:
            out["mean_probability"] = float(self.probability.mean())
            out["min_probability"] = float(self.probability.min())
        if self.reached is not None:
            out["reached_target"] = int(self.reached.sum())
        return out


class ForgetImages(Dataset):
    """Forget images as dict samples: ``image``, ``label`` (vocabulary index) and ``index``."""

    def __init__(self, forget_set: ForgetSet, repeats: int = 1) -> None:
        self.forget_set = forget_set
        self.repeats = repeats

    def __len__(self) -> int:
        return len(self.forget_set.labels) * self.repeats

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = index % len(self.forget_set.labels)
        return {"image": self.forget_set.images[i], "label": int(self.forget_set.labels[i]), "index": i}


class ForgetDataModule(EvaluationDataModule):
    """Evaluation datasets plus the forget set a method trains on (made on first use).

    Training batches hold the whole forget set (split across ranks), repeated ``steps_per_epoch``
    times per epoch; validation during ``fit`` is one pass over it (the forget-set accuracy);
    ``validate``/``test`` run on the evaluation datasets.

    Args:
        datasets: evaluation datasets (see :class:`EvaluationDataModule`); none if the
            LightningModule has an explicit ``vocabulary`` (then nothing is evaluated).
        steps_per_epoch: optimiser steps per epoch, each on the whole forget set (published: 1).
        train_batch_size: forget images per training step on each device (default: the whole set
            split evenly across devices).
        **kwargs: the other :class:`EvaluationDataModule` arguments (``data_root``, ``split``,
            ``batch_size``, ``num_workers``, ``dataset_kwargs``).
    """

    real_forget_images: bool = False
    requires_datasets = False  # with an explicit vocabulary on the module, no dataset is needed

    def __init__(
        self,
        datasets: Optional[Union[dict[str, Optional[str]], list[str]]] = None,
        steps_per_epoch: int = 1,
        train_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(datasets=datasets, **kwargs)
        _positive_int_validation("steps_per_epoch", steps_per_epoch)
        _positive_int_validation("train_batch_size", train_batch_size, allow_none=True)
        self.steps_per_epoch = steps_per_epoch
        self.train_batch_size = train_batch_size
        self._forget_set: Optional[ForgetSet] = None

    def make_forget_set(self, module: Any) -> ForgetSet:
        """Make the forget set for ``module`` (runs on global rank zero only)."""
        raise NotImplementedError

    @property
    def forget_set(self) -> ForgetSet:
        """The forget set: made on rank zero at first use (from the weights before any training step),
        then broadcast to every rank; a resumed run gets it back from the checkpoint."""
        if self._forget_set is None:
            if self.trainer is None or self.trainer.lightning_module is None:
                raise ConfigError("the forget set is made for a model: attach this DataModule to a Trainer first")
            module = self.trainer.lightning_module
            if module.spec is None:
                raise ConfigError("the forget set needs the resolved forget spec: run the LightningModule's setup first")
            made = self.make_forget_set(module) if self.trainer.is_global_zero else None
            self._forget_set = self.trainer.strategy.broadcast(made, src=0)
        return self._forget_set

    def setup(self, stage: Optional[str] = None) -> None:
        super().setup(stage)
        if stage == "fit":
            self._forget_set = None  # each fit makes it from its own starting weights (a resume restores it)

    def state_dict(self) -> dict[str, Any]:
        # The forget set travels in checkpoints: a resumed run must train on the set made from the
        # original weights, and it is made lazily, after the checkpoint's weights are restored.
        return {"forget_set": self._forget_set.to_state()} if self._forget_set is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "forget_set" in state_dict:
            self._forget_set = ForgetSet.from_state(state_dict["forget_set"])

    def _per_device_batch(self) -> int:
        if self.train_batch_size is not None:
            return self.train_batch_size
        world = self.trainer.world_size if self.trainer is not None else 1
        return math.ceil(len(self.forget_set.labels) / world)

    def train_dataloader(self) -> DataLoader:
        dataset = ForgetImages(self.forget_set, repeats=self.steps_per_epoch)
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            # Lightning would swap in a *shuffling* DistributedSampler; an explicit one is kept.
            # Unshuffled, each step's shards together hold every image exactly once.
            sampler = DistributedSampler(dataset, num_replicas=self.trainer.world_size,
                                         rank=self.trainer.global_rank, shuffle=False)
        return DataLoader(dataset, batch_size=self._per_device_batch(), shuffle=False, sampler=sampler)

    def val_dataloader(self) -> Union[DataLoader, list[DataLoader]]:
        if self.trainer is not None and self.trainer.state.fn == "fit":
            return DataLoader(ForgetImages(self.forget_set), batch_size=self._per_device_batch())
        return super().val_dataloader()
