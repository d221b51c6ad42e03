"""``RealForgetDataModule``: forgetting from real images of the class (the paper's "semi ZS" runs).

The forget set is ``images_per_class`` real images of each forgotten class, drawn (seeded) from the
``forget_split`` (default ``train``) of the forget dataset, i.e. the evaluation dataset whose
vocabulary the forget spec uses; everything else is what a synthetic run gets: the same batches
(the whole set per step, ``steps_per_epoch`` steps per epoch), the same prompts and the same
forget-set accuracy for stopping. The evaluation datasets keep their own ``split`` (``test``), so
the images a method forgets from are never the images it is evaluated on.

With ``retain_images_per_class`` > 0 it also draws that many real images of every other class of
the forget dataset from the same split; every training batch then carries
``retain_image``/``retain_label`` (as many as forget images), walking through the retain set step
by step. Methods with ``needs_retain_images`` (e.g. ``AmnesiacRetain``) need this: such a run is
"not ZS".

The published real-data path (:mod:`lightning_unlearn.datamodules.real_training`):
``images_per_class: all``, ``augment: true``, ``shuffle: true``, ``train_batch_size: 64``,
``accumulate_batches: 5``, with ``val_check_interval: 1`` (configs/rn50_compare.yaml's ``real_data``).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch
from torch.utils.data import DataLoader

from lightning_unlearn.core._validation import _choice_validation, _positive_int_validation
from lightning_unlearn.datamodules.evaluation_data import dataset_labels
from lightning_unlearn.datamodules.forget import ForgetDataModule, ForgetSet
from lightning_unlearn.datamodules.real_training import (
    AugmentedImages,
    PerClass,
    accumulation,
    check_per_class,
    count_per_class,
    train_transform,
)
from lightning_unlearn.datasets.base import ZeroShotDataset, get_dataset_factory
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.clip.loading import eval_mode
from lightning_unlearn.maths.zeroshot import zero_shot_logits

Split = Literal["train", "val", "test"]


class RealForgetDataModule(ForgetDataModule):
    """Real images of the classes to forget (and optionally of the other classes) from a dataset split.

    Args:
        images_per_class: real images per forgotten class (fewer if the split holds fewer; the
            report's ``forget_set.images`` says how many were used); ``"all"``: every one (published).
        seed: seed of the draw (same seed, same images).
        forget_split: the split the forget (and retain) images come from; it must differ from
            ``split``, so that no evaluation image is trained on.
        forget_split_kwargs: extra keyword arguments per dataset name used only when
            ``forget_split`` is read, e.g. ``{demo_objects: {num_per_class: 64}}`` (the demo world
            renders 50 images per class and split by default).
        retain_images_per_class: real images of every retained class of the forget dataset served
            next to the forget images (0: none).
        augment: train on the forget images under a random resized crop and flip, drawn anew each
            time an image is used (published); the forget-set accuracy, the report and the
            probabilities use them without it. False: the fixed, preprocessed images.
        shuffle: shuffle the training batches every epoch (published).
        accumulate_batches: one optimiser step sums the gradients of min(batches per epoch,
            ``accumulate_batches``) batches (published: 5); it sets the Trainer's
            ``accumulate_grad_batches`` when the training batches are made. 1: a step per batch.
        **kwargs: the evaluation datasets and batching of
            :class:`~lightning_unlearn.datamodules.ForgetDataModule` (``datasets``, ``data_root``,
            ``split``, ``batch_size``, ``num_workers``, ``dataset_kwargs``, ``steps_per_epoch``,
            ``train_batch_size``, ``real_valid_images``).

    Raises:
        ConfigError: ``forget_split`` equals ``split``, or (when the set is made) the forget
            dataset has no ``forget_split`` or no image of a class in it, or the vocabulary is
            not an evaluation dataset's.
    """

    real_forget_images = True
    requires_datasets = True  # the real images come from an evaluation dataset

    def __init__(
        self,
        images_per_class: PerClass = 64,
        seed: int = 0,
        forget_split: Split = "train",
        forget_split_kwargs: Optional[dict[str, dict]] = None,
        retain_images_per_class: int = 0,
        augment: bool = False,
        shuffle: bool = False,
        accumulate_batches: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_per_class("images_per_class", images_per_class)
        for name, flag in (("augment", augment), ("shuffle", shuffle)):
            if not isinstance(flag, bool):
                raise ConfigError(f"{name} must be True or False, got {flag!r}")
        _positive_int_validation("accumulate_batches", accumulate_batches)
        self.augment, self.shuffle, self.accumulate_batches = augment, shuffle, accumulate_batches
        _positive_int_validation("retain_images_per_class", retain_images_per_class, allow_zero=True)
        _choice_validation("forget_split", forget_split, ("train", "val", "test"))
        if forget_split == self.split:
            raise ConfigError(f"forget_split {forget_split!r} is the evaluation split: the method would train on the "
                              "images it is evaluated on; use another split (e.g. 'train')")
        self.images_per_class = images_per_class
        self.seed = seed
        self.forget_split = forget_split
        self.forget_split_kwargs = self._check_kwargs(forget_split_kwargs or {})
        self.retain_images_per_class = retain_images_per_class
        self._source_counts: dict[str, torch.Tensor] = {}

    @property
    def provides_retain_images(self) -> bool:
        return self.retain_images_per_class > 0

    def build_dataset(self, name: str, split: Optional[str] = None) -> ZeroShotDataset:
        """As :meth:`EvaluationDataModule.build_dataset`, plus ``forget_split_kwargs`` when
        ``forget_split`` is asked for explicitly."""
        extra = self.forget_split_kwargs.get(name, {}) if split is not None and split == self.forget_split else {}
        if not extra:
            return super().build_dataset(name, split)
        kwargs = {**self.dataset_kwargs.get(name, {}), **extra, "split": split}
        dataset = get_dataset_factory(name)(self.roots[name], transform=None, **kwargs)
        dataset.transform = self._transform()  # type: ignore[attr-defined]
        return dataset

    def source_dataset(self, spec: Any) -> str:
        """The dataset real images are drawn from: the forget spec's dataset (its labels are the
        vocabulary's indices)."""
        if spec.dataset is None or spec.dataset not in self.roots:
            raise ConfigError(
                "real forget images come from the forget dataset's split, but the vocabulary is not an evaluation "
                "dataset's: set the module's forget_dataset (not an explicit vocabulary)"
            )
        return spec.dataset

    def check_available(self, spec: Any, retain: bool = False) -> None:
        """Fail now if the ``forget_split`` of the forget dataset lacks, or lacks images of, a
        class the run needs (no image is loaded; for checks before a run)."""
        name = self.source_dataset(spec)
        if name not in self._source_counts:  # count the split's labels once per dataset
            labels = dataset_labels(self.split_dataset(name, self.forget_split))
            self._source_counts[name] = torch.bincount(torch.as_tensor(labels, dtype=torch.long),
                                                       minlength=len(spec.vocabulary.classnames))
        counts = self._source_counts[name]
        needed = list(spec.forget_indices) + (spec.retain_indices() if retain else [])
        empty = [spec.vocabulary.classnames[c] for c in needed if int(counts[c]) == 0]
        if empty:
            raise ConfigError(f"dataset {name!r} has no image of {empty[:5]} in its {self.forget_split!r} split")

    def check_forget_spec(self, spec: Any) -> None:
        """Called by the module's ``setup``: the split holds every class the run needs (before any work)."""
        self.check_available(spec, retain=self.provides_retain_images)

    def _draw(self, module: Any, labels: list[int], per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Seeded real images of ``labels`` from ``forget_split`` (labels = vocabulary indices)."""
        name = self.source_dataset(module.spec)
        return self.class_images(name, labels, self.forget_split, per_class, seed=self.seed)

    def make_forget_set(self, module: Any) -> ForgetSet:
        """``images_per_class`` real images of each forgotten class, with the probability the
        model gives each its class (what synthesis would aim at; paper section 5.6)."""
        spec = module.spec
        images, labels = self._draw(module, list(spec.forget_indices), count_per_class(self.images_per_class))
        with torch.no_grad(), eval_mode(module.model):
            embeddings = module.vocabulary_embeddings()
            probs = torch.cat([
                zero_shot_logits(module.encode_image(chunk.to(module.device)), embeddings).softmax(-1).cpu()
                for chunk in images.split(256)
            ])
        probability = probs.gather(1, labels.unsqueeze(1)).squeeze(1)
        return ForgetSet(images=images, labels=labels, kind="real", probability=probability,
                         info={"dataset": spec.dataset, "split": self.forget_split, "seed": self.seed})

    def make_retain_set(self, module: Any) -> Optional[ForgetSet]:
        """``retain_images_per_class`` real images of every retained class, in a seeded order
        that mixes the classes (each training batch then holds many of them)."""
        if not self.retain_images_per_class:
            return None
        images, labels = self._draw(module, module.spec.retain_indices(), self.retain_images_per_class)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        return ForgetSet(images=images[order], labels=labels[order], kind="real",
                         info={"dataset": module.spec.dataset, "split": self.forget_split})

    def train_dataloader(self) -> DataLoader:
        """The fixed forget images (as :class:`ForgetDataModule`), or with ``augment``/``shuffle``
        the published batches; sets the Trainer's gradient accumulation (``accumulate_batches``)."""
        if not (self.augment or self.shuffle):
            loader = super().train_dataloader()
        else:
            loader = self._published_loader()
        if self.accumulate_batches > 1 and self.trainer is not None:
            self.trainer.accumulate_grad_batches = accumulation(len(loader), self.accumulate_batches)
        return loader

    def _published_loader(self) -> DataLoader:
        """Shuffled (``shuffle``) batches of the forget images, each under a fresh random crop and
        flip (``augment``); Lightning shards them under DDP."""
        module = self.trainer.lightning_module
        spec, forget = module.spec, self.forget_set
        if self.augment:
            name = self.source_dataset(spec)
            dataset = self.build_dataset(name, split=self.forget_split)  # its own copy: its own transform
            dataset.transform = train_transform(module.image_size, module.image_mean, module.image_std)
            indices = self.class_indices(name, list(spec.forget_indices), self.forget_split,
                                         count_per_class(self.images_per_class), seed=self.seed)
        else:
            dataset, indices = _Preprocessed(forget.images), list(range(len(forget.labels)))
        retain = self.retain_set
        samples = AugmentedImages(dataset, indices, forget.labels, repeats=self.steps_per_epoch,
                                  retain_images=(retain.images, retain.labels) if retain is not None else None)
        return DataLoader(samples, batch_size=self._per_device_batch(), shuffle=self.shuffle,
                          num_workers=self.num_workers)


class _Preprocessed:
    """Already preprocessed images as ``(image, label)`` samples (shuffle without augment)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], -1
