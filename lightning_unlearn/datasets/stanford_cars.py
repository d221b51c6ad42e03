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

import torchvision

from lightning_unlearn.datasets._layouts import Layout, paper_layout, require
from lightning_unlearn.datasets._spec import DatasetSpec, define_dataset
from lightning_unlearn.datasets._splits import Samples
from lightning_unlearn.core.names import prompt_name

SPLIT_FILE = "split_zhou_StanfordCars.json"
# What torchvision's StanfordCars opens for each split (it says only "Dataset not found." otherwise).
STANDARD_FILES = {
    "train": ("devkit/cars_train_annos.mat", "cars_train"),
    "test": ("cars_test_annos_withlabels.mat", "cars_test"),
}

# The split JSON's paths ("cars_train/00001.jpg") are relative to the dataset folder itself.
PAPER = paper_layout(
    "stanford_cars", SPLIT_FILE, "", tree=f"{{{SPLIT_FILE}, cars_train/00001.jpg ..., cars_test/00001.jpg ...}}"
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


def car_classname(meta_name: str) -> str:
    """The paper's name for a ``cars_meta.mat`` class: last word (the year) moved to the front."""
    words = meta_name.split()
    return prompt_name(" ".join(words[-1:] + words[:-1]))


def _read_torchvision(folder: Path, split: str) -> tuple[Samples, list[str]]:
    """The official split via torchvision's parser, with year-first class names."""
    require(SPEC.title, folder, STANDARD_FILES[split], SPEC.layouts)
    # loader=str makes torchvision return the file path instead of opening the image.
    parsed = torchvision.datasets.StanfordCars(str(folder.parent), split=split, download=False, loader=str)
    samples = [parsed[i] for i in range(len(parsed))]
    return samples, [car_classname(name) for name in parsed.classes]


def _torchvision_classnames(folder: Path, split: str) -> list[str]:
    """The class names :func:`_read_torchvision` gives, from ``devkit/cars_meta.mat`` alone (the
    split's files must be there, as for reading it; its annotations are not loaded)."""
    import scipy.io  # as torchvision: only the standard layout needs scipy

    require(SPEC.title, folder, STANDARD_FILES[split], SPEC.layouts)
    # torchvision's StanfordCars.classes, read the way it reads them
    names = scipy.io.loadmat(str(folder / "devkit" / "cars_meta.mat"), squeeze_me=True)["class_names"].tolist()
    return [car_classname(name) for name in names]


SPEC = DatasetSpec(
    name="stanford_cars", title="Stanford Cars", paper=PAPER, standard=STANDARD, read_standard=_read_torchvision,
    standard_classnames=_torchvision_classnames,
)
stanford_cars = define_dataset(SPEC, __name__)
