"""The demo world's domains as registered zero-shot datasets (``demo_objects``, ``demo_textures``).

Images are rendered once when a dataset is built (thousands take a few seconds) and handed out
as PIL images, so any CLIP preprocess applies; the demo CLIP's preprocess expects the world's
32 px images. The class names and templates are the world's, so the registered vocabulary
readers answer them without rendering anything.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from lightning_unlearn.datasets.base import Transform, register_dataset
from lightning_unlearn.core.errors import ConfigError, UnknownNameError
from lightning_unlearn.demo import world

#: Registry names of the two demo domains.
DATASET_NAMES: dict[str, str] = {"objects": "demo_objects", "textures": "demo_textures"}


class DemoWorldDataset(Dataset):
    """Balanced images of one demo domain and split, rendered from a seed.

    Args:
        domain: ``"objects"`` or ``"textures"``.
        split: ``"train"``, ``"val"`` or ``"test"``; each split draws from its own random streams,
            so splits never share an image.
        num_per_class: images per class.
        seed: world seed; the same seed and split always give the same pixels.
        transform: applied to each PIL image.
    """

    def __init__(
        self,
        domain: str,
        split: str = "test",
        num_per_class: int = 50,
        seed: int = 0,
        transform: Optional[Transform] = None,
    ) -> None:
        _check_arguments(domain, split, num_per_class)
        self.domain = domain
        self.split = split
        self.seed = seed
        self.name = DATASET_NAMES[domain]
        self.classnames: list[str] = list(world.CLASSES[domain])
        self.templates: list[str] = list(world.TEMPLATES[domain])
        labels = world.balanced_labels(len(self.classnames), num_per_class)
        # rendered once here (thousands take seconds)
        self.images: np.ndarray = world.render_many(domain, labels, seed=seed, split=split)
        self.labels: np.ndarray = labels
        self.transform = transform

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


def _check_arguments(domain: str, split: str, num_per_class: int) -> None:
    """The checks of a dataset's arguments, made before anything is rendered (``ValueError``)."""
    if domain not in DATASET_NAMES:
        raise UnknownNameError(f"unknown demo domain {domain!r}; expected one of {list(DATASET_NAMES)}")
    if num_per_class < 1:
        raise ConfigError(f"num_per_class must be >= 1, got {num_per_class}")
    world.check_split(split)


def _factory(domain: str):
    def factory(
        root: Optional[str] = None,
        split: str = "test",
        transform: Optional[Transform] = None,
        num_per_class: int = 50,
        seed: int = 0,
    ) -> DemoWorldDataset:
        # ``root`` is part of the dataset protocol; the demo world needs no files.
        del root
        return DemoWorldDataset(domain, split=split, num_per_class=num_per_class, seed=seed,
                                transform=transform)

    factory.__name__ = f"{DATASET_NAMES[domain]}_factory"
    factory.__doc__ = (f"Build the demo world's {domain!r} dataset (no files needed; ``root`` is "
                       f"ignored). ``num_per_class`` images per class, rendered from ``seed``.")
    return factory


def _vocabulary(domain: str):
    def vocabulary(
        root: Optional[str] = None, split: str = "test", num_per_class: int = 50, seed: int = 0
    ) -> tuple[list[str], list[str]]:
        # The factory's arguments and checks; the names and templates do not depend on them.
        del root, seed
        _check_arguments(domain, split, num_per_class)
        return list(world.CLASSES[domain]), list(world.TEMPLATES[domain])

    vocabulary.__name__ = f"{DATASET_NAMES[domain]}_vocabulary"
    vocabulary.__doc__ = f"The class names and templates of the demo world's {domain!r} dataset (nothing rendered)."
    return vocabulary


demo_objects = register_dataset(DATASET_NAMES["objects"], needs_root=False, vocabulary=_vocabulary("objects"))(
    _factory("objects"))
demo_textures = register_dataset(DATASET_NAMES["textures"], needs_root=False, vocabulary=_vocabulary("textures"))(
    _factory("textures"))
