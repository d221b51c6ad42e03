"""Any folder of class sub-folders as a zero-shot evaluation dataset.

Two layouts:

- ``root/<class>/*.jpg`` (one set of images: only ``split="test"``), or
- ``root/{train,val,test}/<class>/*.jpg`` (the split picks the sub-folder).

Classes are the sorted sub-folders (torchvision's ``find_classes``), or those listed in a class-list
file, in its order: one sub-folder name per line, optionally followed by a tab and the name to use
in prompts; blank lines and lines starting with ``#`` are skipped. Without a given name, the
folder name is used with underscores as spaces. Files are collected by torchvision's
``make_dataset`` (its image extensions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from lightning_unlearn.core._validation import _template_validation
from lightning_unlearn.datasets._layouts import SPLITS, check_split
from lightning_unlearn.datasets.base import DatasetLayoutError, ImageListDataset, Transform, register_dataset
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.core.names import prompt_name

NAME = "image_folder"
TITLE = "image_folder"
LAYOUTS_TEXT = (
    "Accepted layouts:\n"
    "  - <root>/<class>/*.jpg (a single set: split='test')\n"
    "  - <root>/{train,val,test}/<class>/*.jpg\n"
    "  with an optional class-list file: one sub-folder per line, optionally '<TAB>prompt name'."
)


def read_class_list(path: str | Path) -> list[tuple[str, str]]:
    """``(folder, prompt name)`` pairs from a class-list file, in label order."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetLayoutError(f"{TITLE}: missing class-list file {str(path)!r}.\n{LAYOUTS_TEXT}")
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        folder, _, shown = line.partition("\t")
        entries.append((folder.strip(), prompt_name(shown or folder)))
    if not entries:
        raise ConfigError(f"{TITLE}: class-list file {str(path)!r} lists no class.")
    return entries


def _split_folder(root: Path, split: str) -> Path:
    """``root/<split>`` when the root has split sub-folders, else the root itself (test only)."""
    if any((root / name).is_dir() for name in SPLITS):
        folder = root / split
        if not folder.is_dir():
            raise DatasetLayoutError(f"{TITLE}: missing {str(folder)!r} (the split {split!r}).\n{LAYOUTS_TEXT}")
        return folder
    if split != "test":
        raise ConfigError(
            f"{TITLE}: {str(root)!r} has no train/val/test sub-folders, so it is one set; "
            f"use split='test' (got {split!r})."
        )
    return root


def _classes(folder: Path, classes_file: Optional[str]) -> list[tuple[str, str]]:
    """``(folder, prompt name)`` of every class: the class-list file's, or the sorted sub-folders."""
    if classes_file is not None:
        entries = read_class_list(classes_file)
        for name, _ in entries:
            if not (folder / name).is_dir():
                raise DatasetLayoutError(f"{TITLE}: missing class folder {str(folder / name)!r}.\n{LAYOUTS_TEXT}")
        return entries
    try:
        folders, _ = find_classes(folder)
    except FileNotFoundError as err:
        raise DatasetLayoutError(f"{TITLE}: {err}\n{LAYOUTS_TEXT}") from err
    return [(name, prompt_name(name)) for name in folders]


def _checked_folder(root: Optional[str], split: str, template: str) -> Path:
    """The folder of ``split``'s class sub-folders, after the checks every reader makes."""
    check_split(TITLE, split)
    _template_validation(f"{TITLE}: template", template)
    if root is None:
        raise DatasetLayoutError(f"{TITLE}: no root given.\n{LAYOUTS_TEXT}")
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DatasetLayoutError(f"{TITLE}: missing {str(root_path)!r} (the root folder itself).\n{LAYOUTS_TEXT}")
    return _split_folder(root_path, split)


def image_folder_vocabulary(
    root: Optional[str] = None,
    split: str = "test",
    template: str = "a photo of a {}.",
    classes_file: Optional[str] = None,
    name: str = NAME,
) -> tuple[list[str], list[str]]:
    """The class names and templates :func:`image_folder` gives for these arguments, from the
    class sub-folders (or the class-list file) alone: the images are not listed. Same errors for
    a missing root, split, class folder or class-list file."""
    del name  # the dataset's ``name`` attribute, not part of its vocabulary
    folder = _checked_folder(root, split, template)
    return [shown for _, shown in _classes(folder, classes_file)], [template]


@register_dataset(NAME, vocabulary=image_folder_vocabulary)
def image_folder(
    root: Optional[str] = None,
    split: str = "test",
    transform: Optional[Transform] = None,
    template: str = "a photo of a {}.",
    classes_file: Optional[str] = None,
    name: str = NAME,
) -> ImageListDataset:
    """A folder of class sub-folders as a zero-shot dataset.

    Args:
        root: folder of class sub-folders, or of ``train``/``val``/``test`` folders holding them.
        split: ``"train"``, ``"val"`` or ``"test"``; a folder without split sub-folders has only ``"test"``.
        transform: applied to each PIL image.
        template: the evaluation prompt, with one ``{}`` for the class name.
        classes_file: optional class-list file fixing which sub-folders are classes, their order
            and (after a tab) their prompt names.
        name: the dataset's ``name`` attribute.

    Raises:
        ConfigError: unknown split, a split the folder does not have, or a template without
            exactly one ``{}``.
        DatasetLayoutError: the root, a split or class folder, or the class-list file is missing.
    """
    folder = _checked_folder(root, split, template)
    classes = _classes(folder, classes_file)
    class_to_idx = {name: label for label, (name, _) in enumerate(classes)}
    try:
        samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as err:  # a class folder without any image
        raise DatasetLayoutError(f"{TITLE}: under {str(folder)!r}: {err}") from err
    classnames = [shown for _, shown in classes]
    return ImageListDataset(
        samples, classnames, [template], name, transform, layout="folder", root=str(folder), split=split
    )
