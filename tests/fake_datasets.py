"""Tiny fake copies of the evaluation datasets' on-disk layouts, for tests.

Each ``make_*`` writes 8x8 JPEGs (three per class: one per split) under a data root in either the
paper's layout (CoOp/Dassl split JSON) or the standard one (torchvision's / the official lists),
and returns the dataset folder. Every list has at least two entries (torchvision squeezes .mat
arrays, and a single entry becomes a 0-d array that its parsers cannot iterate), every file a
split lists exists, and every label appears in train. The two writers of a dataset may be called
on the same data root: they share the images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.io
from PIL import Image

CALTECH_FOLDERS = ("BACKGROUND_Google", "Faces", "Faces_easy", "airplanes", "car_side", "euphonium")
# The paper's classes of the folders above, in label order (sorted raw order, two folders dropped).
CALTECH_PAPER = ("face", "airplane", "car side", "euphonium")

# Flowers: torchvision label values (1-based) of the fake classes; 60 is "pink-yellow dahlia?".
FLOWER_VALUES = (1, 60, 71)
FLOWER_PAPER = ("pink primrose", "pink-yellow dahlia", "gazania")

CAR_META = ("AM General Hummer SUV 2000", "Spyker C8 Coupe 2009", "Dodge Ram Pickup 3500 Crew Cab 2010")
CAR_PAPER = ("2000 AM General Hummer SUV", "2009 Spyker C8 Coupe", "2010 Dodge Ram Pickup 3500 Crew Cab")

DOG_FOLDERS = ("n02085620-Chihuahua", "n02086079-Pekinese", "n02086240-Shih-Tzu", "n02113624-toy_poodle")
DOG_PAPER = ("Chihuahua", "Pekinese", "Shih", "toy poodle")

PER_CLASS = 3  # image i of each class goes to train (0), val (1), test (2) in the paper's splits
PAPER_SPLITS = ("train", "val", "test")


def write_jpeg(path: Path, seed: int) -> Path:
    """An 8x8 JPEG of one colour (derived from ``seed``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = tuple(int(v) for v in np.random.default_rng(seed).integers(0, 256, 3))
    Image.new("RGB", (8, 8), colour).save(path, format="JPEG")
    return path


def write_split_json(path: Path, entries: dict[str, list[list]]) -> Path:
    """A CoOp/Dassl split file: ``{"train"|"val"|"test": [[relative_path, label, classname], ...]}``."""
    path.write_text(json.dumps({split: entries[split] for split in PAPER_SPLITS}), encoding="utf-8")
    return path


def _paper_entries(items: list[tuple[str, int, str]]) -> dict[str, list[list]]:
    """Split ``(relative_path, label, name)`` items, in per-class groups of three, into train/val/test."""
    entries: dict[str, list[list]] = {split: [] for split in PAPER_SPLITS}
    for i, (rel, label, name) in enumerate(items):
        entries[PAPER_SPLITS[i % PER_CLASS]].append([rel, label, name])
    return entries


def make_caltech(data_root: Path, layout: str) -> Path:
    """``caltech-101/`` (paper) or ``caltech101/`` (torchvision) with the :data:`CALTECH_FOLDERS`."""
    folder = data_root / ("caltech-101" if layout == "paper" else "caltech101")
    images = folder / "101_ObjectCategories"
    for c, name in enumerate(CALTECH_FOLDERS):
        for i in range(1, PER_CLASS + 1):
            write_jpeg(images / name / f"image_{i:04d}.jpg", seed=100 * c + i)
    if layout == "paper":
        kept = [name for name in CALTECH_FOLDERS if name not in ("BACKGROUND_Google", "Faces_easy")]
        raw_names = {"Faces": "face", "airplanes": "airplane"}  # CoOp's JSON keeps "car_side"
        items = [
            (f"{name}/image_{i:04d}.jpg", label, raw_names.get(name, name))
            for label, name in enumerate(kept)
            for i in range(1, PER_CLASS + 1)
        ]
        write_split_json(folder / "split_zhou_Caltech101.json", _paper_entries(items))
    return folder


def _flower_images(folder: Path) -> list[str]:
    names = [f"image_{i:05d}.jpg" for i in range(1, PER_CLASS * len(FLOWER_VALUES) + 1)]
    for i, name in enumerate(names):
        write_jpeg(folder / "jpg" / name, seed=1000 + i)
    return names


def make_flowers(data_root: Path, layout: str) -> Path:
    """``oxford_flowers/`` (paper, labels 0..2) or ``flowers-102/`` (torchvision, :data:`FLOWER_VALUES`).

    torchvision MD5-checks the .mat files: tests must patch
    ``torchvision.datasets.flowers102.check_integrity`` as torchvision's own tests do.
    """
    folder = data_root / ("oxford_flowers" if layout == "paper" else "flowers-102")
    names = _flower_images(folder)
    if layout == "paper":
        (folder / "cat_to_name.json").write_text(
            json.dumps({str(k + 1): name for k, name in enumerate(FLOWER_PAPER)}), encoding="utf-8"
        )
        items = [(name, i // PER_CLASS, FLOWER_PAPER[i // PER_CLASS]) for i, name in enumerate(names)]
        write_split_json(folder / "split_zhou_OxfordFlowers.json", _paper_entries(items))
        return folder
    labels = [value for value in FLOWER_VALUES for _ in range(PER_CLASS)]
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": np.array([labels])})
    ids = {
        key: [c * PER_CLASS + k + 1 for c in range(len(FLOWER_VALUES))]
        for k, key in enumerate(("trnid", "valid", "tstid"))
    }
    scipy.io.savemat(folder / "setid.mat", {key: np.array([value]) for key, value in ids.items()})
    return folder


def _car_annotations(path: Path, fnames: list[str], classes: list[int]) -> None:
    """A 1xN struct array ``annotations`` with bbox fields, ``class`` (1-based) and ``fname``."""
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    records = np.zeros((1, len(fnames)), dtype=[(field, object) for field in fields])
    for i, (fname, cls) in enumerate(zip(fnames, classes)):
        records[0, i] = (0, 0, 7, 7, cls, fname)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"annotations": records})


def make_cars(data_root: Path, layout: str) -> Path:
    """``stanford_cars/`` with two train and one test image per :data:`CAR_META` class.

    ``layout="paper"`` adds the split JSON (train/val from ``cars_train``, test = ``cars_test``);
    ``"standard"`` adds torchvision's devkit and annotation files.
    """
    folder = data_root / "stanford_cars"
    n = len(CAR_META)
    train = [f"{i:05d}.jpg" for i in range(1, 2 * n + 1)]  # class of train image i: i % n
    test = [f"{i:05d}.jpg" for i in range(1, n + 1)]  # class of test image i: i
    for i, name in enumerate(train):
        write_jpeg(folder / "cars_train" / name, seed=2000 + i)
    for i, name in enumerate(test):
        write_jpeg(folder / "cars_test" / name, seed=3000 + i)
    train_labels = [i % n for i in range(2 * n)]
    if layout == "paper":
        entries = {
            "train": [[f"cars_train/{train[i]}", train_labels[i], CAR_PAPER[train_labels[i]]] for i in range(n)],
            "val": [[f"cars_train/{train[i]}", train_labels[i], CAR_PAPER[train_labels[i]]] for i in range(n, 2 * n)],
            "test": [[f"cars_test/{name}", i, CAR_PAPER[i]] for i, name in enumerate(test)],
        }
        write_split_json(folder / "split_zhou_StanfordCars.json", entries)
        return folder
    meta = {"class_names": np.array([list(CAR_META)], dtype=object)}
    scipy.io.savemat(_mkdir(folder / "devkit") / "cars_meta.mat", meta)
    _car_annotations(folder / "devkit" / "cars_train_annos.mat", train, [label + 1 for label in train_labels])
    _car_annotations(folder / "cars_test_annos_withlabels.mat", test, list(range(1, n + 1)))
    return folder


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_dogs(data_root: Path, layout: str, lists_dir: str = ".") -> Path:
    """``stanford_dogs/Images/`` with the :data:`DOG_FOLDERS`, plus the split JSON or the official lists.

    The official lists get two train and one test image per class (``lists_dir`` ``"."`` as
    ``lists.tar`` extracts, or ``"lists"``).
    """
    folder = data_root / "stanford_dogs"
    files = [f"{name}/{name.split('-')[0]}_{i}.jpg" for name in DOG_FOLDERS for i in range(1, PER_CLASS + 1)]
    for i, rel in enumerate(files):
        write_jpeg(folder / "Images" / rel, seed=4000 + i)
    labels = [i // PER_CLASS for i in range(len(files))]
    if layout == "paper":
        items = [(rel, label, DOG_PAPER[label]) for rel, label in zip(files, labels)]
        write_split_json(folder / "split_alexey_stanford_dogs.json", _paper_entries(items))
        return folder
    lists = _mkdir(folder / lists_dir)
    train = [i for i in range(len(files)) if i % PER_CLASS < 2]
    test = [i for i in range(len(files)) if i % PER_CLASS == 2]
    for name, chosen in (("file", range(len(files))), ("train", train), ("test", test)):
        scipy.io.savemat(
            lists / f"{name}_list.mat",
            {
                "file_list": np.array([[files[i]] for i in chosen], dtype=object),
                "annotation_list": np.array([[files[i][:-4]] for i in chosen], dtype=object),
                "labels": np.array([[labels[i] + 1] for i in chosen], dtype=np.uint8),
            },
        )
    return folder


MAKERS = {
    "caltech101": make_caltech,
    "oxford_flowers": make_flowers,
    "stanford_cars": make_cars,
    "stanford_dogs": make_dogs,
}


def make_all(data_root: Path, layout: str) -> dict[str, Path]:
    """All four datasets under one data root in ``layout`` (``"paper"`` or ``"standard"``)."""
    return {name: make(data_root, layout) for name, make in MAKERS.items()}


def make_image_folder(root: Path, classes: list[str], per_class: int = 2,
                      colour: Callable[[int, int], tuple[int, int, int]] = lambda c, i: (60 * c, 90 + 20 * i, 200),
                      size: int = 32) -> Path:
    """An ``image_folder`` dataset: ``root/<class>/<i>.png``, ``per_class`` flat images per class whose
    colour is ``colour(class index, image index)``; returns ``root``."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (size, size), colour(c, i)).save(root / name / f"{i}.png")
    return root


def training_free_fit_config(model_name: str, pretrained: str | None, method: str, method_args: dict,
                             image_folder: Path, runs: Path, **trainer: object) -> dict:
    """A fit config for a training-free method (``lightning_unlearn.methods.<method>``) on an
    ``image_folder`` dataset (:func:`make_image_folder`): forget ``dog``, no validation, the report
    written quietly under ``runs``; ``trainer`` adds Trainer arguments."""
    return {
        "seed_everything": 0,
        "model": {"class_path": "lightning_unlearn.UnlearningModule",
                  "init_args": {"model_name": model_name, "pretrained": pretrained, "forget_classes": ["dog"],
                                "method": {"class_path": f"lightning_unlearn.methods.{method}",
                                           "init_args": method_args}}},
        "data": {"class_path": "lightning_unlearn.datamodules.EvaluationDataModule",
                 "init_args": {"datasets": {"image_folder": str(image_folder)}, "batch_size": 8}},
        "trainer": {"accelerator": "cpu", "max_epochs": 1, "limit_val_batches": 0, "num_sanity_val_steps": 0,
                    "enable_checkpointing": False, **trainer,
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(runs)}},
                    "callbacks": [{"class_path": "lightning_unlearn.callbacks.UnlearningReport",
                                   "init_args": {"print_table": False}}]},
    }


def fit_config(root: Path) -> dict:
    """A fit config in the shape of configs/demo.yaml on the fake Stanford Dogs and Caltech101 under
    ``root`` (:func:`make_dogs`, :func:`make_caltech`), reduced to seconds."""
    return {
        "seed_everything": 0,
        "model": {"class_path": "lightning_unlearn.UnlearningModule", "init_args": {
            "model_name": "tiny-vit", "pretrained": None, "forget_classes": ["Pekinese"],
            "forget_dataset": "stanford_dogs", "sigma": 0.5, "lr": 0.005,
            "method": {"class_path": "lightning_unlearn.methods.MultimodalLipschitz",
                       "init_args": {"num_perturbations": 3}},
        }},
        "data": {"class_path": "lightning_unlearn.datamodules.SyntheticForgetDataModule", "init_args": {
            "datasets": {"stanford_dogs": str(root), "caltech101": str(root)}, "images_per_class": 8,
            "steps_per_epoch": 2, "real_valid_images": 2, "synthesis": {
                "target_probability": 0.33, "min_probability": 0.3, "jitter": 2, "step_size": 3.0,
                "max_iterations": 300}},
        },
        "trainer": {"accelerator": "cpu", "max_epochs": 3, "val_check_interval": 1, "num_sanity_val_steps": 0,
                    "callbacks": [
                        {"class_path": "lightning_unlearn.callbacks.GradientLayerSelection", "init_args": {"k": 4}},
                        {"class_path": "lightning_unlearn.callbacks.SyntheticAccuracyStopping",
                         "init_args": {"goal": 0.1}},
                        {"class_path": "lightning_unlearn.callbacks.NoiseLayerEscalation",
                         "init_args": {"sigma_schedule": [0.5, 1.0, 2.0]}},
                        {"class_path": "lightning_unlearn.callbacks.UnlearningReport"},
                    ]},
    }
