"""Training batches of real images as the published real-data path makes them.

The authors' code forgets from real images this way: every training image of the class, the
training transform (random resized crop and horizontal flip) drawn anew each time an image is
used, so every epoch; shuffled batches of 64; the gradients of min(number of batches, 5) batches
accumulated per optimiser step; the stopping check after every batch (``val_check_interval: 1``
counts batches in Lightning, so that needs nothing here).

The pieces: :func:`count_per_class` (``"all"`` or a number), :func:`train_transform`,
:class:`AugmentedImages` (a class's images under that transform, as forget-set samples) and
:func:`accumulation` (how many batches one optimiser step takes).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Callable, Literal, Optional, Union

import torch
from torch.utils.data import Dataset
from torchvision import transforms

from lightning_unlearn.core._validation import _positive_int_validation
from lightning_unlearn.core.errors import ConfigError

#: A count of images per class: a number, or every image the split holds.
PerClass = Union[int, Literal["all"]]


def check_per_class(name: str, value: Any, allow_zero: bool = False) -> None:
    """``value`` is ``"all"`` or an int >= 1 (>= 0 with ``allow_zero``); ConfigError quoting it."""
    if value == "all":
        return
    try:
        _positive_int_validation(name, value, allow_zero=allow_zero)
    except ConfigError as err:
        raise ConfigError(f"{err} (or 'all': every image of the class)") from None


def count_per_class(value: PerClass) -> int:
    """The number of images to take per class (``"all"``: as many as there are)."""
    return sys.maxsize if value == "all" else int(value)


def train_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Any], torch.Tensor]:
    """Random resized crop to ``image_size`` and a random horizontal flip, then the model's
    normalisation; redrawn at every call. The crop's scale and ratio ranges are torchvision's
    defaults ((0.08, 1) and (3/4, 4/3)): the published settings name the transform, not its ranges."""
    return transforms.Compose([
        transforms.Lambda(lambda image: image.convert("RGB")),
        transforms.RandomResizedCrop(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


class AugmentedImages(Dataset):
    """Samples ``image`` (``dataset[i]`` under its own random transform), ``label`` (vocabulary
    index) and ``index`` (position in the forget set, for the per-image noise) for the dataset
    indices ``indices``; ``repeats`` passes per epoch.

    With ``retain_images`` (the retain set's normalised images and labels) every sample also
    carries ``retain_image``/``retain_label``, one drawn at random per sample.
    """

    def __init__(self, dataset: Any, indices: Sequence[int], labels: torch.Tensor, repeats: int = 1,
                 retain_images: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> None:
        if len(indices) != len(labels):
            raise ValueError(f"{len(indices)} indices but {len(labels)} labels")
        self.dataset, self.indices, self.labels = dataset, list(indices), labels
        self.repeats, self.retain_images = repeats, retain_images

    def __len__(self) -> int:
        return len(self.indices) * self.repeats

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = index % len(self.indices)
        image, _ = self.dataset[self.indices[i]]
        item = {"image": image, "label": int(self.labels[i]), "index": i}
        if self.retain_images is not None:
            images, labels = self.retain_images
            j = int(torch.randint(len(labels), ()))
            item["retain_image"], item["retain_label"] = images[j], int(labels[j])
        return item


def accumulation(batches_per_epoch: int, accumulate_batches: int) -> int:
    """Batches whose gradients one optimiser step sums: ``min(batches_per_epoch, accumulate_batches)``
    (published: up to 5), at least 1."""
    return max(1, min(int(batches_per_epoch), int(accumulate_batches)))
