"""What every evaluation dataset provides, and the registry that finds them by name.

A dataset here is a ``torch.utils.data.Dataset`` of ``(image, label)`` pairs (the image passed
through ``transform``, the label an ``int`` from 0) that also carries what zero-shot evaluation
needs: the ordered class names and the prompt template(s).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence, runtime_checkable

from PIL import Image
from torch.utils.data import Dataset

Transform = Callable[[Image.Image], Any]


@runtime_checkable
class ZeroShotDataset(Protocol):
    """The attributes every evaluation dataset carries besides ``__getitem__``/``__len__``."""

    name: str
    classnames: list[str]
    templates: list[str]  # first one is the dataset's evaluation prompt, e.g. "a photo of a {}."

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Any, int]: ...


class DatasetLayoutError(FileNotFoundError):
    """A dataset root does not hold any layout this project can read."""


class CorruptImageError(OSError):
    """An image file exists but cannot be decoded."""


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as RGB; the error names the file when it cannot be decoded."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise
    except Exception as err:  # PIL raises several types for broken files
        raise CorruptImageError(f"cannot read image {str(path)!r}: {err}") from err


class ImageListDataset(Dataset):
    """Images listed as ``(path, label)`` with class names and prompt templates.

    Args:
        samples: ``(path, label)`` pairs.
        classnames: class names in label order.
        templates: prompt templates with one ``{}``; the first is used for evaluation.
        name: registry name of the dataset.
        transform: applied to each PIL image.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classnames: Sequence[str],
        templates: Sequence[str],
        name: str,
        transform: Optional[Transform] = None,
    ) -> None:
        self.samples = list(samples)
        self.classnames = list(classnames)
        self.templates = list(templates)
        self.name = name
        self.transform = transform

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = load_rgb(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


DatasetFactory = Callable[..., ZeroShotDataset]
_REGISTRY: dict[str, DatasetFactory] = {}
_ROOTLESS: set[str] = set()


def register_dataset(name: str, needs_root: bool = True) -> Callable[[DatasetFactory], DatasetFactory]:
    """Register ``factory(root, split="test", transform=None, **kwargs)`` under ``name``.

    ``needs_root=False`` marks datasets that read no files (the demo world): they take ``root=None``.
    """

    def wrap(factory: DatasetFactory) -> DatasetFactory:
        _REGISTRY[name] = factory
        if not needs_root:
            _ROOTLESS.add(name)
        return factory

    return wrap


def needs_root(name: str) -> bool:
    """Whether the dataset registered as ``name`` reads files from a root folder."""
    return name not in _ROOTLESS


def available_datasets() -> list[str]:
    return sorted(_REGISTRY)


def close_matches(word: str, candidates: Sequence[str], n: int = 5) -> list[str]:
    """Case-insensitive close matches of ``word`` among ``candidates`` (original spelling)."""
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def get_dataset_factory(name: str) -> DatasetFactory:
    """The factory registered as ``name``; the error lists close matches and all names."""
    if name not in _REGISTRY:
        hint = close_matches(name, list(_REGISTRY))
        raise ValueError(
            f"unknown dataset {name!r}"
            + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else "")
            + f" Registered datasets: {', '.join(available_datasets())}."
        )
    return _REGISTRY[name]
