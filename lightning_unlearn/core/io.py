"""Atomic file and folder writes and the project's cache folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from lightning_unlearn.core.errors import OutputError

CACHE_ENV = "LIGHTNING_UNLEARN_CACHE"


def check_output_dir(path: str | Path, what: str = "output_dir") -> None:
    """Raise :class:`OutputError` if folder ``path`` can certainly not be created or written.

    No side effect: the nearest existing ancestor must be a folder the process may write into
    (root passes permission checks, but not a file standing where a folder is needed).
    """
    probe = Path(path).expanduser().absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{what} {str(path)!r} cannot be a folder: {str(probe)!r} is a file; choose another")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {str(path)!r} is not writable: no write permission on {str(probe)!r}")


def cache_dir(sub: str = "") -> Path:
    """The cache folder (``$LIGHTNING_UNLEARN_CACHE`` or ``~/.cache/lightning_unlearn``)."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lightning_unlearn")
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    The temporary file is not created here: the writer creates it, with the usual permissions of
    the process's umask. On any error it is removed and ``path`` is left as it was, so a crash
    never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it takes the place of ``path``.

    A folder cannot replace a folder in one step, so the old one (if any) is renamed aside first
    and removed after the new one is in place: ``path`` is at every moment missing for an instant
    at most, and never half-written. On any error the temporary folder is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    tmp_path = path.parent / f".{path.name}.{token}.tmp"
    old_path = path.parent / f".{path.name}.{token}.old"
    tmp_path.mkdir()
    try:
        yield tmp_path
        if path.exists():
            os.replace(path, old_path)
        try:
            os.replace(tmp_path, path)
        except OSError:
            if old_path.exists():  # put the old folder back
                os.replace(old_path, path)
            raise
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
        shutil.rmtree(old_path, ignore_errors=True)


def atomic_link(source: str | Path, path: str | Path) -> Path:
    """Make ``path`` hold the bytes of file ``source`` atomically: a hard link where the file system
    allows one (no second copy on disk), else a copy."""
    with atomic_path(path) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_open_clip_weights(path: str | Path, weights: Any, metadata: dict[str, str] | None = None) -> Path:
    """Write a model's (or a state dict's) tensors atomically as ``.safetensors``, the file that
    ``open_clip``'s ``pretrained=<file>`` loads; returns the path."""
    from safetensors.torch import save_file

    tensors = weights.state_dict() if hasattr(weights, "state_dict") else weights
    state = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(path)
