"""Stanford Dogs (not in torchvision), read from the paper's split JSON or the official lists.

Class names follow the paper: the folder text after the first "-", cut at the next "-", with
underscores as spaces (``n02086079-Pekinese`` -> "Pekinese", ``n02113624-toy_poodle`` -> "toy poodle").
Seven names come out truncated that way and are kept so, because the paper prompts with them:
"Shih" (Shih-Tzu), "black" (black-and-tan coonhound), "wire", "soft", "flat", "curly",
"German short". Labels follow the sorted folder order in both layouts.

The paper's split (``split_alexey_stanford_dogs.json``: train 6,122 / val 6,122 / test 8,336) is
not the official one; the official ``train_list.mat``/``test_list.mat`` (12,000 / 8,580, from
``lists.tar``) give the standard layout, read with ``scipy.io.loadmat``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import scipy.io

from lightning_unlearn.datasets._layouts import Layout, missing_file_error, paper_layout
from lightning_unlearn.datasets._spec import DatasetSpec, define_dataset
from lightning_unlearn.datasets._splits import Samples
from lightning_unlearn.datasets.base import DatasetLayoutError
from lightning_unlearn.core.errors import DataFileError
from lightning_unlearn.core.names import prompt_name

SPLIT_FILE = "split_alexey_stanford_dogs.json"
IMAGES = "Images"
LIST_DIRS = (".", "lists")  # lists.tar extracts its .mat files flat; a lists/ folder is accepted too

PAPER = paper_layout(
    "stanford_dogs", SPLIT_FILE, IMAGES, tree=f"{{{SPLIT_FILE}, {IMAGES}/n02085620-Chihuahua/n02085620_10074.jpg ...}}"
)
STANDARD = Layout(
    kind="standard",
    folder="stanford_dogs",
    markers=(IMAGES,),
    splits=("train", "test"),
    tree=(
        f"{{{IMAGES}/<wnid>-<Name>/*.jpg, train_list.mat, test_list.mat}} "
        "(official lists, also under lists/; train/test only)"
    ),
)


def dog_classname(folder: str) -> str:
    """The paper's name for an ``Images/`` folder: text after the first "-", cut at the next "-"."""
    return prompt_name(folder.split("-")[1] if "-" in folder else folder)


def dog_class_folders(folders: Iterable[str]) -> list[str]:
    """Class folders in label order (sorted, i.e. by WordNet id)."""
    return sorted(folders)


def _list_file(folder: Path, split: str) -> Path:
    """``<split>_list.mat`` beside ``Images/`` or under ``lists/``."""
    for sub in LIST_DIRS:
        path = folder / sub / f"{split}_list.mat"
        if path.is_file():
            return path
    raise missing_file_error(SPEC.title, folder / f"{split}_list.mat", SPEC.layouts)


def _load_list(path: Path) -> tuple[list[str], list[int]]:
    """``file_list`` and 0-based ``labels`` of an official list file."""
    mat = scipy.io.loadmat(str(path), squeeze_me=True)
    # squeeze_me turns an N x 1 cell into a 1-D array, but a single entry into a 0-d one.
    files = [str(name) for name in np.atleast_1d(mat["file_list"])]
    labels = [int(label) - 1 for label in np.atleast_1d(mat["labels"])]
    if len(files) != len(labels):
        raise DataFileError(f"{SPEC.title}: {str(path)!r} has {len(files)} files but {len(labels)} labels.")
    return files, labels


def _class_folders(folder: Path) -> list[str]:
    """The class folders under ``Images/``, in label order."""
    return dog_class_folders(p.name for p in (folder / IMAGES).iterdir() if p.is_dir())


def _read_official(folder: Path, split: str) -> tuple[Samples, list[str]]:
    """The official split; each listed file's folder must be the class folder of its label."""
    class_folders = _class_folders(folder)
    list_path = _list_file(folder, split)
    files, labels = _load_list(list_path)
    for rel, label in zip(files, labels):
        if not 0 <= label < len(class_folders) or Path(rel).parts[0] != class_folders[label]:
            raise DatasetLayoutError(
                f"{SPEC.title}: {str(list_path)!r} gives {rel!r} label {label + 1}, which does not match the "
                f"sorted class folders under {str(folder / IMAGES)!r} ({len(class_folders)} found)."
            )
    samples = [(str(folder / IMAGES / rel), label) for rel, label in zip(files, labels)]
    return samples, [dog_classname(name) for name in class_folders]


def _official_classnames(folder: Path, split: str) -> list[str]:
    """The class names :func:`_read_official` gives, from the class folders (the split's list
    file must be there, as for reading it; it is not loaded)."""
    _list_file(folder, split)
    return [dog_classname(name) for name in _class_folders(folder)]


SPEC = DatasetSpec(
    name="stanford_dogs", title="Stanford Dogs", paper=PAPER, standard=STANDARD, read_standard=_read_official,
    standard_classnames=_official_classnames,
)
stanford_dogs = define_dataset(SPEC, __name__)
