"""lightning-unlearn: make a CLIP model forget a class from synthetic samples, with Lightning.

Importing the package is cheap: ``UnlearningModule`` loads on first access. The one thing the
import does is to keep the module paths of the old flat layout importable (see
:mod:`lightning_unlearn._moved`).
"""

from __future__ import annotations

from typing import Any

from lightning_unlearn import _moved

__all__ = ["UnlearningModule"]
__version__ = "0.1.0"

_moved.install()


def __getattr__(name: str) -> Any:
    # Lazy, so that `import lightning_unlearn.callbacks` does not pull in open_clip and the datasets.
    if name == "UnlearningModule":
        from lightning_unlearn.lightning.module import UnlearningModule

        return UnlearningModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
