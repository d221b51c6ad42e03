"""The paper's split files: CoOp/Dassl JSON with ``train``/``val``/``test`` lists.

Each list holds ``[relative_path, label, classname]`` entries; the path is joined onto a
per-dataset image folder. As in Dassl, the class list is built from the train split
(``num_classes = max train label + 1``, names in label order), and the test set is the ``test`` list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from lightning_unlearn.datasets._layouts import Layout, check_listed_files
from lightning_unlearn.core.errors import DataFileError
from lightning_unlearn.core.names import prompt_name

Samples = list[tuple[str, int]]


def load_split_json(path: Path) -> dict[str, list[Any]]:
    """Read a split JSON; the error names the file when it is not a dict of the three lists."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataFileError(f"cannot read split file {str(path)!r}: {err}") from err
    if not isinstance(data, dict) or any(not isinstance(data.get(key), list) for key in ("train", "val", "test")):
        raise DataFileError(f"split file {str(path)!r} must be a JSON object with lists 'train', 'val' and 'test'.")
    return data


def _entry(entry: Any, path: Path) -> tuple[str, int, str]:
    """One ``[relative_path, label, classname]`` entry, checked."""
    if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
        raise DataFileError(f"split file {str(path)!r}: expected [path, label, classname], got {entry!r}.")
    rel, label, name = entry
    return str(rel), int(label), str(name)


def classnames_from_train(entries: Sequence[Any], path: Path) -> list[str]:
    """Class names in label order from the train list (Dassl's rule); every label must appear."""
    names: dict[int, str] = {}
    for entry in entries:
        _, label, name = _entry(entry, path)
        if names.setdefault(label, name) != name:
            raise DataFileError(f"split file {str(path)!r}: label {label} is named both {names[label]!r} and {name!r}.")
    if not names:
        raise DataFileError(f"split file {str(path)!r}: the train list is empty.")
    missing = sorted(set(range(max(names) + 1)) - set(names))
    if missing or min(names) < 0:
        raise DataFileError(f"split file {str(path)!r}: labels {missing or [min(names)]} do not appear in train.")
    return [prompt_name(names[label]) for label in range(len(names))]


def read_split_json(
    title: str, json_path: Path, image_dir: Path, split: str, layouts: Sequence[Layout]
) -> tuple[Samples, list[str]]:
    """Samples of ``split`` (paths joined onto ``image_dir``) and the class names from train.

    Raises:
        ValueError: the JSON is malformed or a label is outside the train classes.
        DatasetLayoutError: a listed image does not exist (names it and the accepted layouts).
    """
    data = load_split_json(json_path)
    classnames = classnames_from_train(data["train"], json_path)
    samples: Samples = []
    for entry in data[split]:
        rel, label, _ = _entry(entry, json_path)
        if not 0 <= label < len(classnames):
            raise DataFileError(f"split file {str(json_path)!r}: {split} label {label} of {rel!r} is not a train class.")
        samples.append((str(image_dir / rel), label))
    check_listed_files(title, samples, layouts)
    return samples, classnames
