"""Stanford Cars, read from the paper's CoOp layout or torchvision's layout.

Class names follow the paper (CoOp): the ``cars_meta.mat`` name with its last word, the year,
moved to the front ("Spyker C8 Coupe 2009" -> "2009 Spyker C8 Coupe"). Both layouts live in a
folder called ``stanford_cars/``; the paper's adds ``split_zhou_StanfordCars.json`` (train/val = 80/20
of the official train set, test = the official test set). torchvision's layout has the official
``train`` and ``test`` splits only. Kaggle copies (nested ``cars_train/cars_train``, no devkit)
are not read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torchvision

from lightning_unlearn.datasets._layouts import (
    SPLITS,
    Layout,
    LayoutImageList,
    check_listed_files,
    locate,
    prompt_name,
    require,
)
from lightning_unlearn.datasets._splits import Samples, read_split_json
from lightning_unlearn.datasets.base import Transform, register_dataset

NAME = "stanford_cars"
TITLE = "Stanford Cars"
TEMPLATES = ["a photo of a {}."]
SPLIT_FILE = "split_zhou_StanfordCars.json"
# What torchvision's StanfordCars opens for each split (it says only "Dataset not found." otherwise).
STANDARD_FILES = {
    "train": ("devkit/cars_train_annos.mat", "cars_train"),
    "test": ("cars_test_annos_withlabels.mat", "cars_test"),
}

PAPER = Layout(
    kind="paper",
    folder="stanford_cars",
    markers=(SPLIT_FILE,),
    splits=SPLITS,
    tree=f"{{{SPLIT_FILE}, cars_train/00001.jpg ..., cars_test/00001.jpg ...}}",
)
STANDARD = Layout(
    kind="standard",
    folder="stanford_cars",
    markers=("devkit/cars_meta.mat",),
    splits=("train", "test"),
    tree=(
        "{cars_train/, cars_test/, cars_test_annos_withlabels.mat, devkit/{cars_meta.mat, cars_train_annos.mat}} "
        "(torchvision; train/test only)"
    ),
    fixed_folder_name=True,
)
LAYOUTS = (PAPER, STANDARD)


def car_classname(meta_name: str) -> str:
    """The paper's name for a ``cars_meta.mat`` class: last word (the year) moved to the front."""
    words = meta_name.split()
    return prompt_name(" ".join(words[-1:] + words[:-1]))


def _read_torchvision(folder: Path, split: str) -> tuple[Samples, list[str]]:
    """The official split via torchvision's parser, with year-first class names."""
    require(TITLE, folder, STANDARD_FILES[split], LAYOUTS)
    # loader=str makes torchvision return the file path instead of opening the image.
    parsed = torchvision.datasets.StanfordCars(str(folder.parent), split=split, download=False, loader=str)
    samples = [parsed[i] for i in range(len(parsed))]
    return samples, [car_classname(name) for name in parsed.classes]


@register_dataset(NAME)
def stanford_cars(
    root: Optional[str] = None,
    split: str = "test",
    transform: Optional[Transform] = None,
    layout: str = "auto",
) -> LayoutImageList:
    """Stanford Cars as the paper evaluates it (196 classes, prompt "a photo of a {}.").

    Args:
        root: the dataset folder (``stanford_cars/``) or a data root holding it.
        split: ``"train"``, ``"val"`` or ``"test"`` (torchvision's layout: ``"train"``/``"test"``).
        transform: applied to each PIL image.
        layout: ``"auto"`` (paper first), ``"paper"`` or ``"standard"`` (torchvision's).
    """
    found = locate(TITLE, root, LAYOUTS, split, layout)
    if found.layout is PAPER:
        samples, classnames = read_split_json(TITLE, found.folder / SPLIT_FILE, found.folder, split, LAYOUTS)
    else:
        samples, classnames = _read_torchvision(found.folder, split)
        check_listed_files(TITLE, samples, LAYOUTS)
    return LayoutImageList(
        samples, classnames, TEMPLATES, NAME, transform, layout=found.layout.kind, root=str(found.folder), split=split
    )
