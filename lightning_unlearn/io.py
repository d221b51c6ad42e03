"""Atomic file writes and the project's cache folder."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

CACHE_ENV = "LIGHTNING_UNLEARN_CACHE"
# Read once at import: os.umask can only be read by setting it, which is process-wide.
_UMASK = os.umask(0)
os.umask(_UMASK)


def cache_dir(sub: str = "") -> Path:
    """The cache folder (``$LIGHTNING_UNLEARN_CACHE`` or ``~/.cache/lightning_unlearn``)."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lightning_unlearn")
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    On any error the temporary file is removed and ``path`` is left as it was, so a crash
    never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give the usual umask permissions
            os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj: Any) -> None:
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
