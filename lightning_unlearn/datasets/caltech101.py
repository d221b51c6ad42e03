"""Caltech101, read from the paper's CoOp layout or torchvision's layout.

Class names follow the paper (CoOp): ``BACKGROUND_Google`` and ``Faces_easy`` are dropped,
``airplanes``/``Faces``/``Leopards``/``Motorbikes`` become ``airplane``/``face``/``leopard``/
``motorbike``, labels follow the sorted raw folder order (face=0, leopard=1, motorbike=2,
accordion=3, ...), and underscores become spaces.

torchvision's layout keeps ``Faces_easy`` as a class (101 classes). Here it is dropped there too,
with its images: it shows the same people as ``Faces``, both would be prompted as "a photo of a
face.", and dropping it gives both layouts the same 100 classes and the same labels (euphonium is
37 in both, where torchvision itself says 38). torchvision's layout has no splits: ``split="test"``
returns every image (with a warning); ``"train"``/``"val"`` need the paper's layout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torchvision

from lightning_unlearn.datasets._layouts import Layout, paper_layout
from lightning_unlearn.datasets._spec import DatasetSpec, define_dataset
from lightning_unlearn.datasets._splits import Samples
from lightning_unlearn.core.names import prompt_name

SPLIT_FILE = "split_zhou_Caltech101.json"
IMAGES = "101_ObjectCategories"
DROPPED = frozenset({"BACKGROUND_Google", "Faces_easy"})
RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}

PAPER = paper_layout("caltech-101", SPLIT_FILE, IMAGES, tree=f"{{{SPLIT_FILE}, {IMAGES}/<class>/image_0001.jpg ...}}")
STANDARD = Layout(
    kind="standard",
    folder="caltech101",
    markers=(IMAGES, f"{IMAGES}/BACKGROUND_Google"),  # torchvision removes BACKGROUND_Google by name
    splits=("test",),
    tree=f"{IMAGES}/{{BACKGROUND_Google/, <class>/image_0001.jpg ...}} (torchvision; no splits)",
    fixed_folder_name=True,
)


def caltech_classname(folder: str) -> str:
    """The paper's name for a raw Caltech101 folder, e.g. ``Faces`` -> ``face``, ``car_side`` -> ``car side``."""
    return prompt_name(RENAMES.get(folder, folder))


def paper_class_folders(folders: Iterable[str]) -> list[str]:
    """The raw folders the paper keeps, in label order (sorted, without background and Faces_easy)."""
    return [folder for folder in sorted(folders) if folder not in DROPPED]


def _read_torchvision(folder: Path, split: str) -> tuple[Samples, list[str]]:
    """All images via torchvision's parser, relabelled to the paper's classes (Faces_easy dropped).

    ``split`` is always ``"test"`` (the layout's only split) and means every image.
    """
    del split
    parsed = torchvision.datasets.Caltech101(str(folder.parent), download=False)
    kept = paper_class_folders(parsed.categories)
    new_label = {parsed.categories.index(name): label for label, name in enumerate(kept)}
    # torchvision opens ``image_{i:04d}.jpg`` in the category folder; it has no public path list.
    samples = [
        (str(folder / IMAGES / parsed.categories[old] / f"image_{index:04d}.jpg"), new_label[old])
        for old, index in zip(parsed.y, parsed.index)
        if old in new_label
    ]
    return samples, [caltech_classname(name) for name in kept]


def _torchvision_classnames(folder: Path, split: str) -> list[str]:
    """The class names :func:`_read_torchvision` gives, from the category folders' names alone."""
    del split
    # torchvision's categories: the sorted entries of the image folder (paper_class_folders then
    # drops BACKGROUND_Google, which torchvision removes, and Faces_easy)
    return [caltech_classname(name) for name in paper_class_folders(sorted(os.listdir(folder / IMAGES)))]


SPEC = DatasetSpec(
    name="caltech101", title="Caltech101", paper=PAPER, standard=STANDARD, read_standard=_read_torchvision,
    standard_source="torchvision's Caltech101, which numbers each folder's files 1..n",
    standard_warning=(
        "Caltech101: torchvision's layout has no splits, so split='test' uses all {count} images; "
        f"add {SPLIT_FILE} (paper layout) for the paper's test split."
    ),
    standard_classnames=_torchvision_classnames,
)
caltech101 = define_dataset(SPEC, __name__)
