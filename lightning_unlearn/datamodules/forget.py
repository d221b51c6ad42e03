"""The forget set a method trains on, served next to the evaluation datasets.

A :class:`ForgetDataModule` is an :class:`EvaluationDataModule` (it owns the evaluation datasets
and offers their vocabularies) plus a forget set: images of the classes to forget in the model's
normalised pixel space, with their class index in the forget spec's vocabulary. The forget set
depends on the model and the resolved spec, so it is made on first use, after the
LightningModule's ``setup``: on global rank zero, then broadcast, so every rank trains on the same
images. Subclasses say how it is made (:class:`~lightning_unlearn.datamodules.SyntheticForgetDataModule`
synthesises it; :class:`~lightning_unlearn.datamodules.RealForgetDataModule` reads it from a dataset split).

Two optional extras, made the same way (rank zero, then broadcast):

- real validation images (``real_valid_images``): up to N real images per forgotten class from the
  forget dataset's ``val`` split, on which ``UnlearningReport`` measures the target's accuracy
  before, after and at every epoch end (``forget/real_valid_acc``; reported, never used for
  stopping);
- retain images (:attr:`ForgetDataModule.retain_set`, real-image DataModules only): real images of
  the other classes, served next to the forget images in every training batch
  (``retain_image``/``retain_label``) for methods with ``needs_retain_images``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning.pytorch.utilities import rank_zero_info

from lightning_unlearn.core._distributed import on_rank_zero
from lightning_unlearn.core._validation import _positive_int_validation
from lightning_unlearn.datamodules.evaluation_data import EvaluationDataModule
from lightning_unlearn.datamodules.real_training import PerClass, check_per_class, count_per_class
from lightning_unlearn.core.errors import ConfigError

#: The split real validation images come from.
VALIDATION_SPLIT = "val"


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
        if self.kind == "real":  # where the images come from
            out.update({key: self.info[key] for key in ("dataset", "split") if key in self.info})
        return out


class ForgetImages(Dataset):
    """Forget images as dict samples: ``image``, ``label`` (vocabulary index) and ``index``.

    With a ``retain_set`` every sample also carries ``retain_image``/``retain_label``: sample ``j``
    gets retain image ``j % len(retain_set)``. Sample indices past ``len(self)`` are valid (they
    wrap), so a sampler that continues its indices across epochs walks through the retain set.
    """

    def __init__(self, forget_set: ForgetSet, repeats: int = 1, retain_set: Optional[ForgetSet] = None) -> None:
        self.forget_set = forget_set
        self.repeats = repeats
        self.retain_set = retain_set

    def __len__(self) -> int:
        return len(self.forget_set.labels) * self.repeats

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = index % len(self.forget_set.labels)
        item = {"image": self.forget_set.images[i], "label": int(self.forget_set.labels[i]), "index": i}
        if self.retain_set is not None:
            j = index % len(self.retain_set.labels)
            item["retain_image"] = self.retain_set.images[j]
            item["retain_label"] = int(self.retain_set.labels[j])
        return item


class _ContinuingSampler(DistributedSampler):
    """Unshuffled shards (as ``DistributedSampler(shuffle=False)``) whose indices continue across
    epochs (``+ epoch * len(dataset)``): the forget images repeat as before, while the retain images
    (:class:`ForgetImages`) move on instead of repeating the first batch every epoch. Lightning
    calls ``set_epoch`` at every epoch start."""

    def __iter__(self):
        offset = self.epoch * len(self.dataset)
        return (index + offset for index in super().__iter__())


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
        real_valid_images: up to this many real images per forgotten class from the forget
            dataset's ``val`` split, on which the target's accuracy is measured at every epoch end
            (0: none; ``"all"``: every one, as published; skipped, with a note, where the dataset
            has no such split).
        **kwargs: the other :class:`EvaluationDataModule` arguments (``data_root``, ``split``,
            ``batch_size``, ``num_workers``, ``dataset_kwargs``).

    Class attributes:
        real_forget_images: the forget set holds real images (the run is then "semi ZS").
    """

    real_forget_images: bool = False
    requires_datasets = False  # with an explicit vocabulary on the module, no dataset is needed

    def __init__(
        self,
        datasets: Optional[Union[dict[str, Optional[str]], list[str]]] = None,
        steps_per_epoch: int = 1,
        train_batch_size: Optional[int] = None,
        real_valid_images: PerClass = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(datasets=datasets, **kwargs)
        _positive_int_validation("steps_per_epoch", steps_per_epoch)
        _positive_int_validation("train_batch_size", train_batch_size, allow_none=True)
        check_per_class("real_valid_images", real_valid_images, allow_zero=True)
        self.steps_per_epoch = steps_per_epoch
        self.train_batch_size = train_batch_size
        self.real_valid_images = real_valid_images
        self._forget_set: Optional[ForgetSet] = None
        self._retain_set: Optional[ForgetSet] = None
        self._real_valid_set: Optional[ForgetSet] = None
        self._made: set[str] = set()  # which of the three are made (a made one may be None)

    def make_forget_set(self, module: Any) -> ForgetSet:
        """Make the forget set for ``module`` (runs on global rank zero only)."""
        raise NotImplementedError

    def make_retain_set(self, module: Any) -> Optional[ForgetSet]:
        """Make the retain set for ``module`` (rank zero only); None: this DataModule has none."""
        return None

    def make_real_valid_set(self, module: Any) -> Optional[ForgetSet]:
        """Up to ``real_valid_images`` real images per forgotten class from the forget dataset's
        ``val`` split, labelled with their vocabulary index (rank zero only); None if switched off,
        if the vocabulary is not a dataset's, or if that dataset has no such split."""
        spec = module.spec
        if not self.real_valid_images:
            return None
        if spec.dataset is None or spec.dataset not in self.roots:
            rank_zero_info("Real validation images: none (the vocabulary is not an evaluation dataset's)")
            return None
        try:
            images, labels = self.class_images(spec.dataset, spec.forget_indices, VALIDATION_SPLIT,
                                               count_per_class(self.real_valid_images), seed=0)
        except ConfigError as err:  # no such split in this layout, or a class without val images
            rank_zero_info(f"Real validation images: none ({err})")
            return None
        # The vocabulary is the dataset's class list, so the dataset's labels are vocabulary indices.
        return ForgetSet(images=images, labels=labels, kind="real",
                         info={"dataset": spec.dataset, "split": VALIDATION_SPLIT})

    def _lazy(self, attribute: str, make: Any) -> Any:
        """``make(module)`` on global rank zero at first use, then broadcast to every rank; kept in
        ``attribute`` (``_forget_set``, ``_retain_set``, ``_real_valid_set``)."""
        if attribute not in self._made:
            what = attribute.strip("_").replace("_", " ")
            if self.trainer is None or self.trainer.lightning_module is None:
                raise ConfigError(f"the {what} is made for a model: attach this DataModule to a Trainer first")
            module = self.trainer.lightning_module
            if module.spec is None:
                raise ConfigError(f"the {what} needs the resolved forget spec: run the LightningModule's setup first")
            setattr(self, attribute, on_rank_zero(self.trainer, lambda: make(module)))
            self._made.add(attribute)
        return getattr(self, attribute)

    @property
    def forget_set(self) -> ForgetSet:
        """The forget set: made on rank zero at first use (from the weights before any training step),
        then broadcast to every rank; a resumed run gets it back from the checkpoint."""
        return self._lazy("_forget_set", self.make_forget_set)

    @property
    def retain_set(self) -> Optional[ForgetSet]:
        """Real images of retained classes served in training batches (None: none)."""
        return self._lazy("_retain_set", self.make_retain_set) if self.provides_retain_images else None

    @property
    def provides_retain_images(self) -> bool:
        """Whether training batches carry ``retain_image``/``retain_label`` (default: no)."""
        return False

    @property
    def real_valid_set(self) -> Optional[ForgetSet]:
        """Real validation images of the forgotten classes (None: switched off or unavailable)."""
        return self._lazy("_real_valid_set", self.make_real_valid_set) if self.real_valid_images else None

    def setup(self, stage: Optional[str] = None) -> None:
        super().setup(stage)
        if stage == "fit":
            # Each fit makes them from its own starting weights (a resume restores the forget set;
            # retain and real validation images do not depend on the weights and are drawn again).
            self._forget_set = self._retain_set = self._real_valid_set = None
            self._made = set()

    def state_dict(self) -> dict[str, Any]:
        # The forget set travels in checkpoints: a resumed run must train on the set made from the
        # original weights, and it is made lazily, after the checkpoint's weights are restored.
        return {"forget_set": self._forget_set.to_state()} if self._forget_set is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "forget_set" in state_dict:
            self._forget_set = ForgetSet.from_state(state_dict["forget_set"])
            self._made.add("_forget_set")

    def _per_device_batch(self) -> int:
        if self.train_batch_size is not None:
            return self.train_batch_size
        world = self.trainer.world_size if self.trainer is not None else 1
        return math.ceil(len(self.forget_set.labels) / world)

    def train_dataloader(self) -> DataLoader:
        retain = self.retain_set
        dataset = ForgetImages(self.forget_set, repeats=self.steps_per_epoch, retain_set=retain)
        world = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        sampler = None
        if retain is not None:
            sampler = _ContinuingSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        elif world > 1:
            # Lightning would swap in a *shuffling* DistributedSampler; an explicit one is kept.
            # Unshuffled, each step's shards together hold every image exactly once.
            sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(dataset, batch_size=self._per_device_batch(), shuffle=False, sampler=sampler)

    def val_dataloader(self) -> Union[DataLoader, list[DataLoader]]:
        if self.trainer is not None and self.trainer.state.fn == "fit":
            return DataLoader(ForgetImages(self.forget_set), batch_size=self._per_device_batch())
        return super().val_dataloader()
