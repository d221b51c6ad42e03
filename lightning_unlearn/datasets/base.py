"""What every evaluation dataset provides, and the registry that finds them by name.

A dataset here is a ``torch.utils.data.Dataset`` of ``(image, label)`` pairs (the image passed
through ``transform``, the label an ``int`` from 0) that also carries what zero-shot evaluation
needs: the ordered class names and the prompt template(s).

Datasets are registered eagerly with :func:`register_dataset`, or lazily with
:func:`register_lazy_dataset`, which names a ``"module.path:attribute"`` that is imported only
when the dataset is first asked for (so listing datasets never imports, say, the demo world).
A registration may also give a vocabulary reader, which :func:`read_vocabulary` uses to answer a
dataset's class names and templates without building it (no image rendered or listed).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence, runtime_checkable

from PIL import Image
from torch.utils.data import Dataset

from lightning_unlearn.core.errors import ConfigError, MissingFileError, UnknownNameError, UnlearnError
from lightning_unlearn.core.names import close_matches, unknown_name_message

__all__ = [
    "CorruptImageError",
    "DatasetFactory",
    "DatasetLayoutError",
    "ImageListDataset",
    "Transform",
    "VocabularyReader",
    "ZeroShotDataset",
    "available_datasets",
    "close_matches",
    "dataset_labels",
    "get_dataset_factory",
    "load_rgb",
    "needs_root",
    "read_vocabulary",
    "register_dataset",
    "register_lazy_dataset",
]

Transform = Callable[[Image.Image], Any]


@runtime_checkable
class ZeroShotDataset(Protocol):
    """The attributes every evaluation dataset carries besides ``__getitem__``/``__len__``."""

    name: str
    classnames: list[str]
    templates: list[str]  # first one is the dataset's evaluation prompt, e.g. "a photo of a {}."

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Any, int]: ...


class DatasetLayoutError(MissingFileError):
    """A dataset root does not hold any layout this project can read (a ``FileNotFoundError``)."""


class CorruptImageError(UnlearnError, OSError):
    """An image file exists but cannot be decoded."""


def dataset_labels(dataset: Any) -> list[int]:
    """Every image's label, without decoding images where the dataset lists them (``targets``)."""
    if hasattr(dataset, "targets"):
        return list(dataset.targets)
    return [int(dataset[i][1]) for i in range(len(dataset))]


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
    """Images listed as ``(path, label)`` with class names, prompt templates and their origin.

    Args:
        samples: ``(path, label)`` pairs.
        classnames: class names in label order.
        templates: prompt templates with one ``{}``; the first is used for evaluation.
        name: registry name of the dataset.
        transform: applied to each PIL image.
        layout: kind of the layout that was read (``"paper"``, ``"standard"``, ``"folder"``).
        root: the dataset folder that was read.
        split: the split the samples come from.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classnames: Sequence[str],
        templates: Sequence[str],
        name: str,
        transform: Optional[Transform] = None,
        layout: str = "",
        root: str = "",
        split: str = "test",
    ) -> None:
        self.samples = list(samples)
        self.classnames = list(classnames)
        self.templates = list(templates)
        self.name = name
        self.transform = transform
        self.layout = layout
        self.root = root
        self.split = split

    @property
    def targets(self) -> list[int]:
        """The label of every sample, in order."""
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = load_rgb(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, layout={self.layout!r}, "
            f"root={self.root!r}, images={len(self)}, classes={len(self.classnames)})"
        )


DatasetFactory = Callable[..., ZeroShotDataset]
#: ``reader(root, split="test", **kwargs) -> (classnames, templates)``: the factory's arguments
#: but ``transform``, its class names and templates, and its errors for a missing root or split.
VocabularyReader = Callable[..., tuple[Sequence[str], Sequence[str]]]
_REGISTRY: dict[str, DatasetFactory] = {}
_LAZY: dict[str, str] = {}  # name -> "module.path:attribute", imported on first use
_ROOTLESS: set[str] = set()
_VOCABULARY: dict[str, VocabularyReader] = {}  # name -> the factory's vocabulary reader, if it has one


def _mark_root(name: str, needs_root: bool) -> None:
    # The latest registration of a name decides, so re-registering can also clear the mark.
    if needs_root:
        _ROOTLESS.discard(name)
    else:
        _ROOTLESS.add(name)


def register_dataset(
    name: str, needs_root: bool = True, vocabulary: Optional[VocabularyReader] = None
) -> Callable[[DatasetFactory], DatasetFactory]:
    """Register ``factory(root, split="test", transform=None, **kwargs)`` under ``name``.

    ``needs_root=False`` marks datasets that read no files (the demo world): they take ``root=None``.
    ``vocabulary`` (optional) answers the factory's class names and templates without building the
    dataset (:data:`VocabularyReader`). Registering a name again replaces its factory, a lazy one
    included, and its reader (none unless given again).
    """

    def wrap(factory: DatasetFactory) -> DatasetFactory:
        _LAZY.pop(name, None)
        _REGISTRY[name] = factory
        _mark_root(name, needs_root)
        # A reader belongs to its factory: a replaced factory must not keep the old one's.
        if vocabulary is None:
            _VOCABULARY.pop(name, None)
        else:
            _VOCABULARY[name] = vocabulary
        return factory

    return wrap


def register_lazy_dataset(name: str, target: str, needs_root: bool = True) -> None:
    """Register the factory at ``target`` (``"module.path:attribute"``) under ``name``, unimported.

    The module is imported by the first :func:`get_dataset_factory` call for ``name``;
    :func:`available_datasets` and :func:`needs_root` answer without importing it.

    Raises:
        ConfigError: ``target`` is not of the form ``"module.path:attribute"``.
    """
    module, sep, attribute = target.partition(":")
    dotted = module.split(".")
    if not (sep and attribute.isidentifier() and all(part.isidentifier() for part in dotted)):
        raise ConfigError(f"dataset {name!r}: target must be 'module.path:attribute', got {target!r}")
    _REGISTRY.pop(name, None)
    _VOCABULARY.pop(name, None)  # the target's module registers its own reader when imported
    _LAZY[name] = target
    _mark_root(name, needs_root)


def needs_root(name: str) -> bool:
    """Whether the dataset registered as ``name`` reads files from a root folder."""
    return name not in _ROOTLESS


def available_datasets() -> list[str]:
    """The registered dataset names, lazy ones included, sorted."""
    return sorted(set(_REGISTRY) | set(_LAZY))


def _resolve_lazy(name: str) -> DatasetFactory:
    """Import the factory registered lazily as ``name`` and keep it as an eager registration."""
    target = _LAZY[name]
    module_name, _, attribute = target.partition(":")
    # Importing may itself call register_dataset(name) with the same function; either way the
    # attribute named by the target is what gets registered.
    factory = getattr(importlib.import_module(module_name), attribute, None)
    if not callable(factory):
        raise ImportError(f"dataset {name!r} is registered as {target!r}, but that is not a callable factory")
    _LAZY.pop(name, None)
    _REGISTRY[name] = factory
    return factory


def get_dataset_factory(name: str) -> DatasetFactory:
    """The factory registered as ``name`` (importing a lazy one on first use).

    Raises:
        UnknownNameError: no dataset has that name; the one-line message gives close matches and
            every registered name.
        ImportError: the module or attribute a lazy entry names cannot be imported.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _LAZY:
        return _resolve_lazy(name)
    known = available_datasets()
    # show_all=0: the full list follows anyway, so the message names it once.
    message = unknown_name_message("dataset", name, known, show_all=0)
    raise UnknownNameError(f"{message}. Registered datasets: {', '.join(known)}.")


def read_vocabulary(name: str, root: Optional[str], /, **kwargs: Any) -> tuple[list[str], list[str]]:
    """Class names and prompt templates of the dataset ``get_dataset_factory(name)(root, **kwargs)``
    would build, without building it where the dataset registered a vocabulary reader (its class
    names come from split files or folder names; no image is read or rendered, no sample list is
    made); else the dataset is built and read. ``name`` and ``root`` are positional: ``kwargs`` are
    the factory's (``image_folder`` takes a ``name`` of its own).

    Raises:
        UnknownNameError: no dataset has that name.
        DatasetLayoutError, ConfigError: as the factory, for a missing root, layout or split.
    """
    factory = get_dataset_factory(name)  # imports a lazy entry, whose module registers its reader
    reader = _VOCABULARY.get(name)
    if reader is None:
        dataset = factory(root, transform=None, **kwargs)
        return list(dataset.classnames), list(dataset.templates)
    classnames, templates = reader(root, **kwargs)
    return list(classnames), list(templates)
