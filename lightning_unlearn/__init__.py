"""lightning-unlearn: make a CLIP model forget a class from synthetic samples, with Lightning.

Importing the package is cheap and has no side effect: ``UnlearningModule`` loads on first access.
"""

from __future__ import annotations

from typing import Any

__all__ = ["UnlearningModule"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy, so that `import lightning_unlearn.callbacks` does not pull in open_clip and the datasets.
    if name == "UnlearningModule":
        from lightning_unlearn.module import UnlearningModule

        return UnlearningModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
