"""Finding a dataset's folder and layout on disk, and the errors that say what is missing.

Every evaluation dataset can be read from more than one on-disk layout (the paper's CoOp/Dassl
layout with a split JSON, and the standard one torchvision or the dataset's authors use). A
:class:`Layout` names the files that identify it; :func:`locate` tries each accepted layout under
the given root (the dataset folder itself, or a data root holding the conventional sub-folder)
and, when none is complete, raises a :class:`~lightning_unlearn.datasets.base.DatasetLayoutError`
that names the missing file and describes every layout that would have been accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from lightning_unlearn.datasets.base import DatasetLayoutError
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.core.names import prompt_name  # re-exported: other modules still import it from here

__all__ = [
    "LAYOUT_CHOICES",
    "SPLITS",
    "Layout",
    "Located",
    "check_choice",
    "check_listed_files",
    "check_split",
    "layouts_text",
    "locate",
    "missing_file_error",
    "paper_layout",
    "prompt_name",
    "require",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
LAYOUT_CHOICES: tuple[str, ...] = ("auto", "paper", "standard")


@dataclass(frozen=True)
class Layout:
    """One accepted on-disk layout of a dataset.

    Args:
        kind: ``"paper"`` (CoOp/Dassl split JSON) or ``"standard"`` (torchvision's or the official one).
        folder: conventional name of the dataset folder under a data root.
        markers: paths, relative to the dataset folder, that must all exist for this layout.
        splits: the splits this layout provides.
        tree: a short description of the expected files, shown in errors and docs.
        fixed_folder_name: the dataset folder must be called ``folder`` (torchvision's classes
            join a fixed sub-folder name onto the root they are given).
        split_file: the paper layout's split JSON, relative to the dataset folder ("" otherwise).
        image_dir: the folder the split JSON's paths are relative to ("" for the dataset folder).
    """

    kind: str
    folder: str
    markers: tuple[str, ...]
    splits: tuple[str, ...]
    tree: str
    fixed_folder_name: bool = False
    split_file: str = ""
    image_dir: str = ""

    def describe(self) -> str:
        """One line for error messages: the layout's kind and its expected tree."""
        return f"{self.kind} layout: <data_root>/{self.folder}/{self.tree}"


def paper_layout(folder: str, split_file: str, image_dir: str, tree: str) -> Layout:
    """The paper's (CoOp/Dassl) layout: a split JSON with every split, and the images it lists.

    Args:
        folder: conventional name of the dataset folder under a data root.
        split_file: the split JSON, relative to the dataset folder.
        image_dir: the folder the JSON's paths are relative to ("" for the dataset folder itself).
        tree: a short description of the expected files, shown in errors and docs.
    """
    markers = (split_file, image_dir) if image_dir else (split_file,)
    return Layout("paper", folder, markers, SPLITS, tree, split_file=split_file, image_dir=image_dir)


@dataclass(frozen=True)
class Located:
    """A layout found on disk and the dataset folder it was found in."""

    layout: Layout
    folder: Path


def check_choice(title: str, what: str, value: str, allowed: Sequence[str]) -> None:
    """Reject a ``value`` of argument ``what`` (``"split"``, ``"layout"``) that is not in ``allowed``.

    Raises:
        ConfigError: ``"<title>: unknown <what> 'x'; expected one of ..."``.
    """
    if value not in allowed:
        raise ConfigError(f"{title}: unknown {what} {value!r}; expected one of {', '.join(map(repr, allowed))}.")


def check_split(title: str, split: str, allowed: Sequence[str] = SPLITS) -> None:
    """Reject a split name that no layout of the dataset offers (a :class:`ConfigError`)."""
    check_choice(title, "split", split, allowed)


def layouts_text(layouts: Iterable[Layout]) -> str:
    """The accepted layouts, one per line, for error messages."""
    return "\n".join(f"  - {layout.describe()}" for layout in layouts)


def missing_file_error(title: str, path: Path, layouts: Sequence[Layout], what: str = "") -> DatasetLayoutError:
    """An error that names the missing ``path`` and lists the layouts that would be accepted."""
    detail = f" ({what})" if what else ""
    return DatasetLayoutError(
        f"{title}: missing {str(path)!r}{detail}.\nAccepted layouts:\n{layouts_text(layouts)}"
    )


def require(title: str, folder: Path, relative: Iterable[str], layouts: Sequence[Layout]) -> None:
    """Raise :func:`missing_file_error` for the first of ``folder / relative`` that does not exist."""
    for rel in relative:
        if not (folder / rel).exists():
            raise missing_file_error(title, folder / rel, layouts)


def check_listed_files(
    title: str, samples: Sequence[tuple[str, int]], layouts: Sequence[Layout], source: str = "the split"
) -> None:
    """Every file a split lists must exist; name the first missing one and how many are missing.

    Checking up front (a ``stat`` per file) turns a crash deep inside a DataLoader worker into a
    clear message before evaluation starts.
    """
    missing = [path for path, _ in samples if not Path(path).is_file()]
    if missing:
        more = f"; {len(missing) - 1} more are missing" if len(missing) > 1 else ""
        raise missing_file_error(title, Path(missing[0]), layouts, what=f"listed in {source}{more}")


def _candidate_folders(root: Path, layout: Layout) -> list[Path]:
    """Where this layout's dataset folder may be: ``root`` itself, or ``root/<folder>``."""
    folders = []
    if not layout.fixed_folder_name or root.name == layout.folder:
        folders.append(root)
    folders.append(root / layout.folder)
    return folders


def _first_missing(folder: Path, layout: Layout) -> Optional[Path]:
    """The first of the layout's markers that ``folder`` lacks, or ``None`` when all are there."""
    for marker in layout.markers:
        if not (folder / marker).exists():
            return folder / marker
    return None


def _present(folder: Path, layout: Layout) -> int:
    """How many of the layout's markers ``folder`` holds."""
    return sum((folder / marker).exists() for marker in layout.markers)


def _closest_miss(root: Path, layout: Layout) -> Path:
    """The missing marker worth reporting, in the folder the user most likely meant."""
    candidates = [folder for folder in _candidate_folders(root, layout) if folder.is_dir()]
    # A folder that already holds part of the layout, or carries its name, is the one meant.
    for folder in sorted(candidates, key=lambda f: -_present(f, layout)):
        if _present(folder, layout) or folder.name == layout.folder:
            return _first_missing(folder, layout) or folder
    return root / layout.folder / layout.markers[0]


def _select(title: str, layouts: Sequence[Layout], layout: str) -> list[Layout]:
    """The layouts that ``layout`` (``"auto"``, ``"paper"``, ``"standard"``) allows, in order."""
    check_choice(title, "layout", layout, LAYOUT_CHOICES)
    chosen = [lay for lay in layouts if layout in ("auto", lay.kind)]
    if not chosen:
        raise ConfigError(f"{title}: no {layout!r} layout; accepted: {', '.join(lay.kind for lay in layouts)}.")
    return chosen


def locate(
    title: str,
    root: Optional[str | Path],
    layouts: Sequence[Layout],
    split: str,
    layout: str = "auto",
) -> Located:
    """Find the first accepted layout under ``root`` that provides ``split``.

    Args:
        title: dataset name for messages, e.g. ``"Caltech101"``.
        root: the dataset folder, or a data root holding the conventional sub-folder.
        layouts: accepted layouts in order of preference (the paper's first).
        split: ``"train"``, ``"val"`` or ``"test"``.
        layout: ``"auto"`` (first found), ``"paper"`` or ``"standard"``.

    Raises:
        DatasetLayoutError: no layout is complete; the first line names the missing files, the
            next ones every accepted layout.
        ConfigError: unknown split/layout, or the layout found does not provide ``split``.
    """
    check_split(title, split)
    chosen = _select(title, layouts, layout)
    if root is None:
        raise DatasetLayoutError(
            f"{title}: no root given; pass the dataset folder or a data root.\n"
            f"Accepted layouts:\n{layouts_text(chosen)}"
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise missing_file_error(title, root, chosen, what="the root folder itself")
    found = [
        Located(lay, folder)
        for lay in chosen
        for folder in _candidate_folders(root, lay)
        if folder.is_dir() and _first_missing(folder, lay) is None
    ]
    for hit in found:
        if split in hit.layout.splits:
            return hit
    if found:
        hit = found[0]
        others = [lay.kind for lay in layouts if split in lay.splits]
        raise ConfigError(
            f"{title}: the {hit.layout.kind} layout found at {str(hit.folder)!r} has no {split!r} split "
            f"(it has {', '.join(hit.layout.splits)}); "
            + (f"the {' or '.join(others)} layout has it." if others else "no layout has it.")
        )
    # The first line alone says what is missing; the accepted layouts follow for reference.
    misses = ", ".join(f"{str(_closest_miss(root, lay))!r} ({lay.kind} layout)" for lay in chosen)
    raise DatasetLayoutError(
        f"{title}: no readable layout under {str(root)!r}: missing {misses}.\n"
        f"Accepted layouts (give the dataset folder itself or a data root holding it):\n{layouts_text(chosen)}"
    )
