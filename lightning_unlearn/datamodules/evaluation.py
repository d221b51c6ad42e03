"""Zero-shot evaluation over any registered datasets, one DataLoader per dataset."""

from typing import Any, Callable, Literal, Optional, Union

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

import lightning_unlearn.datasets  # noqa: F401  (registers the datasets)
from lightning_unlearn.datasets.base import ZeroShotDataset, close_matches, get_dataset_factory, needs_root


def _class_key(name: str) -> str:
    """Case- and underscore-insensitive form of a class name ("Scotch_terrier" == "scotch terrier")."""
    return " ".join(name.replace("_", " ").lower().split())


class EvaluationDataModule(LightningDataModule):
    """Zero-shot evaluation datasets, each with its own (unshuffled) DataLoader.

    Dataset names and roots are checked when the module is created (unknown names list the
    registered ones); the datasets themselves are read in :meth:`setup`. Images go through
    ``self.transform`` if set, else through ``trainer.lightning_module.preprocess``.

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
        self.save_hyperparameters()
        self.roots = self._resolve_roots(datasets, data_root)
        self.data_root = data_root
        self.split = split
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.dataset_kwargs = self._check_kwargs(dataset_kwargs or {})
        self.transform: Optional[Callable[[Any], Any]] = None
        self.eval_datasets: dict[str, ZeroShotDataset] = {}

    @staticmethod
    def _resolve_roots(
        datasets: Union[dict[str, Optional[str]], list[str]], data_root: Optional[str]
    ) -> dict[str, Optional[str]]:
        """Each dataset's root (its own or ``data_root``); fails on unknown names or no root."""
        pairs = dict(datasets) if isinstance(datasets, dict) else {name: None for name in datasets}
        if not pairs:
            raise ValueError("EvaluationDataModule: no dataset given.")
        roots = {}
        for name, root in pairs.items():
            get_dataset_factory(name)  # raises with the registered names
            if root is None and data_root is None and needs_root(name):
                raise ValueError(
                    f"EvaluationDataModule: dataset {name!r} has no root; give it one "
                    f"(datasets={{{name!r}: '/path'}}) or set data_root."
                )
            roots[name] = root if root is not None else data_root
        return roots

    def _check_kwargs(self, dataset_kwargs: dict[str, dict]) -> dict[str, dict]:
        unknown = sorted(set(dataset_kwargs) - set(self.roots))
        if unknown:
            raise ValueError(
                f"EvaluationDataModule: dataset_kwargs for {unknown}, which are not in datasets {list(self.roots)}."
            )
        return {name: dict(kwargs) for name, kwargs in dataset_kwargs.items()}

    def _resolve_transform(self) -> Optional[Callable[[Any], Any]]:
        """``self.transform`` if set, else the LightningModule's ``preprocess`` (may appear late)."""
        if self.transform is not None:
            return self.transform
        module = getattr(self.trainer, "lightning_module", None) if self.trainer is not None else None
        return getattr(module, "preprocess", None)

    def setup(self, stage: Optional[str] = None) -> None:
        """Read every dataset (once) and give it the current transform."""
        if not self.eval_datasets:
            self.eval_datasets = {name: self._build(name) for name in self.roots}
        self._apply_transform()

    def _build(self, name: str) -> ZeroShotDataset:
        kwargs = {"split": self.split, **self.dataset_kwargs.get(name, {})}
        return get_dataset_factory(name)(self.roots[name], transform=None, **kwargs)

    def _apply_transform(self) -> Optional[Callable[[Any], Any]]:
        transform = self._resolve_transform()
        for dataset in self.eval_datasets.values():
            dataset.transform = transform  # type: ignore[attr-defined]
        return transform

    def _loaders(self) -> list[DataLoader]:
        if not self.eval_datasets:
            self.setup()
        # The module may create ``preprocess`` after the datamodule's setup (e.g. in configure_model).
        if self._apply_transform() is None:
            raise RuntimeError(
                "EvaluationDataModule: no transform; set `datamodule.transform` or give the LightningModule "
                "a `preprocess` attribute (PIL images cannot be batched)."
            )
        return [
            DataLoader(
                dataset,
                batch_size=self.batch_size,
                shuffle=False,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            )
            for dataset in self.eval_datasets.values()
        ]

    def val_dataloader(self) -> list[DataLoader]:
        """One DataLoader per dataset, in the order given."""
        return self._loaders()

    def test_dataloader(self) -> list[DataLoader]:
        """One DataLoader per dataset, in the order given."""
        return self._loaders()

    def find_class(self, classname: str) -> list[tuple[str, int]]:
        """``(dataset name, label)`` of every class called ``classname`` (case and "_"/" " ignored)."""
        if not self.eval_datasets:
            self.setup()
        key = _class_key(classname)
        return [
            (name, label)
            for name, dataset in self.eval_datasets.items()
            for label, candidate in enumerate(dataset.classnames)
            if _class_key(candidate) == key
        ]

    def class_not_found(self, classname: str) -> ValueError:
        """The error for a class no dataset has, suggesting close matches from all datasets."""
        names = {c for dataset in self.eval_datasets.values() for c in dataset.classnames}
        hint = close_matches(classname.replace("_", " "), sorted(names))
        return ValueError(
            f"class {classname!r} is in none of the evaluation datasets ({', '.join(self.eval_datasets)})"
            + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else ".")
        )

    def require_class(self, classname: str) -> list[tuple[str, int]]:
        """Like :meth:`find_class`, but raises :meth:`class_not_found` when there is no match."""
        matches = self.find_class(classname)
        if not matches:
            raise self.class_not_found(classname)
        return matches
