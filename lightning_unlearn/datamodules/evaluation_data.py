"""Zero-shot evaluation datasets, one DataLoader per dataset, and their vocabularies."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Literal, Optional, Sequence, Union

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, DistributedSampler, Subset

from lightning_unlearn.core._validation import _choice_validation, _positive_int_validation
from lightning_unlearn.datasets.base import (  # dataset_labels: re-exported for the forget DataModules
    ZeroShotDataset,
    dataset_labels,
    get_dataset_factory,
    needs_root,
    read_vocabulary,
)
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.maths.forget_spec import Vocabulary


class ShardSampler(DistributedSampler):
    """Rank ``r`` of ``W`` takes images ``r, r + W, r + 2W, ...``, in order and without padding.

    Lightning keeps a ``DistributedSampler`` it is given, so evaluation under DDP counts every image
    exactly once (its own sampler would pad the last shards with repeated images), and each rank's
    shard is the one ``evaluation_loaders`` gives, which the evaluation suite gathers.
    """

    def __init__(self, dataset: Any, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


class EvaluationDataModule(LightningDataModule):
    """Zero-shot evaluation datasets, each with its own (unshuffled) DataLoader.

    Dataset names and roots are checked when the DataModule is created (unknown names list the
    registered ones); the datasets are read in :meth:`setup`, once, and their class lists are
    offered as :attr:`vocabularies`, which the LightningModule resolves the forget spec against.
    Images go through :attr:`transform` if set, else through the LightningModule's ``preprocess``
    (the model decides its input format).

    Args:
        datasets: registered dataset names, in evaluation order, each mapped to its root (the
            dataset folder or a data root) or to ``null`` to use ``data_root``; a plain list
            uses ``data_root`` for all.
        data_root: folder holding the datasets under their conventional sub-folder names
            (``caltech-101/``, ``oxford_flowers/``, ``stanford_cars/``, ``stanford_dogs/``, or
            torchvision's ``caltech101/``, ``flowers-102/``, ``stanford_cars/``).
        split: split of every dataset (a layout without it raises a clear error).
        batch_size: images per evaluation batch.
        num_workers: DataLoader worker processes per dataset.
        dataset_kwargs: extra keyword arguments per dataset name, e.g.
            ``{"stanford_cars": {"layout": "standard"}}`` or ``{"image_folder": {"template": "..."}}``;
            a ``split`` here overrides ``split`` for that dataset.
    """

    #: Whether at least one dataset must be given (a forget DataModule may run on an explicit vocabulary).
    requires_datasets: bool = True

    def __init__(
        self,
        datasets: Union[dict[str, Optional[str]], list[str]],
        data_root: Optional[str] = None,
        split: Literal["train", "val", "test"] = "test",
        batch_size: int = 64,
        num_workers: int = 0,
        dataset_kwargs: Optional[dict[str, dict]] = None,
    ) -> None:
        super().__init__()
        _choice_validation("split", split, ("train", "val", "test"))
        _positive_int_validation("batch_size", batch_size)
        _positive_int_validation("num_workers", num_workers, allow_zero=True)
        self.roots = self._resolve_roots(datasets, data_root)
        self.data_root = data_root
        self.split = split
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.dataset_kwargs = self._check_kwargs(dataset_kwargs or {})
        self.transform: Optional[Callable[[Any], Any]] = None
        self.eval_datasets: dict[str, ZeroShotDataset] = {}
        self._splits: dict[tuple[str, str], ZeroShotDataset] = {}  # other splits, read on demand

    def _resolve_roots(
        self, datasets: Optional[Union[dict[str, Optional[str]], list[str]]], data_root: Optional[str]
    ) -> dict[str, Optional[str]]:
        """Each dataset's root (its own or ``data_root``); fails on unknown names or no root."""
        pairs = dict(datasets) if isinstance(datasets, dict) else {name: None for name in datasets or []}
        if not pairs and self.requires_datasets:
            raise ConfigError("datasets is empty: name at least one evaluation dataset")
        roots = {}
        for name, root in pairs.items():
            get_dataset_factory(name)  # raises with close matches and the registered names
            if root is None and data_root is None and needs_root(name):
                raise ConfigError(
                    f"dataset {name!r} has no root: give it one (datasets: {{{name}: /path}}) or set data_root"
                )
            roots[name] = root if root is not None else data_root
        return roots

    def _check_kwargs(self, dataset_kwargs: dict[str, dict]) -> dict[str, dict]:
        unknown = sorted(set(dataset_kwargs) - set(self.roots))
        if unknown:
            raise ConfigError(f"dataset_kwargs names {unknown}, which are not in datasets {list(self.roots)}")
        return {name: dict(kwargs) for name, kwargs in dataset_kwargs.items()}

    def _dataset_args(self, name: str) -> dict[str, Any]:
        """The factory's keyword arguments of dataset ``name``: its split and ``dataset_kwargs``."""
        return {"split": self.split, **self.dataset_kwargs.get(name, {})}

    def build_dataset(self, name: str, split: Optional[str] = None) -> ZeroShotDataset:
        """Read dataset ``name`` (its split from ``dataset_kwargs``, ``split`` or the default)."""
        kwargs = self._dataset_args(name)
        if split is not None:
            kwargs["split"] = split
        dataset = get_dataset_factory(name)(self.roots[name], transform=None, **kwargs)
        dataset.transform = self._transform()  # type: ignore[attr-defined]
        return dataset

    def split_dataset(self, name: str, split: str) -> ZeroShotDataset:
        """Dataset ``name`` at ``split``, read once (the evaluation split is the evaluation dataset)."""
        if split == self.dataset_kwargs.get(name, {}).get("split", self.split) and name in self.eval_datasets:
            return self.eval_datasets[name]
        if (name, split) not in self._splits:
            self._splits[(name, split)] = self.build_dataset(name, split=split)
        dataset = self._splits[(name, split)]
        dataset.transform = self._transform()  # type: ignore[attr-defined]
        return dataset

    def _transform(self) -> Optional[Callable[[Any], Any]]:
        if self.transform is not None:
            return self.transform
        module = self.trainer.lightning_module if self.trainer is not None else None
        return getattr(module, "preprocess", None)

    def setup(self, stage: Optional[str] = None) -> None:
        """Read every evaluation dataset (once)."""
        if not self.eval_datasets:
            self.eval_datasets = {name: self.build_dataset(name) for name in self.roots}
        for dataset in self.eval_datasets.values():
            dataset.transform = self._transform()  # type: ignore[attr-defined]

    @property
    def vocabularies(self) -> dict[str, Vocabulary]:
        """Dataset name -> its classes and prompt templates (after :meth:`setup`)."""
        return {
            name: Vocabulary(tuple(ds.classnames), tuple(ds.templates), name) for name, ds in self.eval_datasets.items()
        }

    def dataset_vocabulary(self, name: str) -> Vocabulary:
        """The classes and prompt templates of evaluation dataset ``name``, as :attr:`vocabularies`
        will hold them, without building the dataset where it can say them more cheaply (see
        :func:`~lightning_unlearn.datasets.base.read_vocabulary`: split files or folder names are
        read, no image is rendered or listed). Needs no :meth:`setup`. A subclass whose
        :meth:`build_dataset` changes the evaluation split's classes overrides this too.

        Raises:
            DatasetLayoutError, ConfigError: as :meth:`build_dataset`, e.g. for a missing root.
        """
        if name in self.eval_datasets:  # already read: nothing to read again
            dataset = self.eval_datasets[name]
            return Vocabulary(tuple(dataset.classnames), tuple(dataset.templates), name)
        classnames, templates = read_vocabulary(name, self.roots[name], **self._dataset_args(name))
        return Vocabulary(tuple(classnames), tuple(templates), name)

    def class_images(
        self, name: str, labels: Sequence[int], split: str, per_class: int, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to ``per_class`` real images of each class in ``labels`` from ``split`` of dataset ``name``.

        A seeded draw without replacement (the same seed gives the same images), transformed for
        the model. Returns ``(images [M, C, H, W], labels [M])`` in the dataset's label space.

        Raises:
            ConfigError: the dataset's layout has no such split, or a class has no image in it.
        """
        dataset = self.split_dataset(name, split)
        chosen = self.class_indices(name, labels, split, per_class, seed)
        self._require_transform()
        images = torch.stack([dataset[i][0] for i in chosen])
        return images, torch.as_tensor(dataset_labels(dataset))[chosen].clone()

    def class_indices(self, name: str, labels: Sequence[int], split: str, per_class: int, seed: int = 0) -> list[int]:
        """The dataset indices :meth:`class_images` takes (the same seeded draw), no image decoded."""
        dataset = self.split_dataset(name, split)
        targets = torch.as_tensor(dataset_labels(dataset))
        generator = torch.Generator().manual_seed(seed)
        chosen: list[int] = []
        for label in labels:
            members = torch.nonzero(targets == int(label)).flatten()
            if len(members) == 0:
                raise ConfigError(
                    f"dataset {name!r} has no image of class {dataset.classnames[int(label)]!r} in its {split!r} split"
                )
            order = members[torch.randperm(len(members), generator=generator)]
            chosen += order[:per_class].tolist()
        return chosen

    def _require_transform(self) -> None:
        if self._transform() is None:
            raise ConfigError(
                "no image transform: set `datamodule.transform` or give the LightningModule a `preprocess`"
                " attribute (PIL images cannot be batched)"
            )

    def _loader(self, dataset: Any, shard: bool = False) -> DataLoader:
        self._require_transform()
        sampler = None
        if shard and getattr(self.trainer, "world_size", 1) > 1:
            sampler = ShardSampler(dataset, self.trainer.world_size, self.trainer.global_rank)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def evaluation_loaders(self, rank: int = 0, world_size: int = 1) -> dict[str, DataLoader]:
        """Each dataset's shard for ``rank``: every ``world_size``-th image, no padding (exact counts)."""
        self.setup()
        return {name: self._loader(Subset(ds, range(rank, len(ds), world_size)))
                for name, ds in self.eval_datasets.items()}

    def val_dataloader(self) -> list[DataLoader]:
        """One DataLoader per dataset, in the order given (under DDP each rank's exact shard)."""
        return [self._loader(ds, shard=True) for ds in self.eval_datasets.values()]

    def test_dataloader(self) -> list[DataLoader]:
        """One DataLoader per dataset, in the order given (under DDP each rank's exact shard)."""
        return [self._loader(ds, shard=True) for ds in self.eval_datasets.values()]
