"""The offline demo: a procedural image world, its datasets, and a tiny CLIP trained on it.

Importing this package registers the project's open_clip model configs (the registry is per
process, so every process, including every DDP rank, must import it before creating the demo
model) and the ``demo_objects`` / ``demo_textures`` datasets. Lightning-dependent pieces
(:mod:`~lightning_unlearn.demo.pretrain`, :func:`ensure_demo_clip`) load on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import open_clip

#: open_clip name of the demo CLIP (the stem of ``model_configs/demo-clip-rn.json``).
DEMO_MODEL_NAME = "demo-clip-rn"
MODEL_CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"


def register_model_configs() -> None:
    """Add ``lightning_unlearn/model_configs`` to open_clip's registry (idempotent)."""
    if DEMO_MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIG_DIR)


register_model_configs()

from lightning_unlearn.demo import world  # noqa: E402
from lightning_unlearn.demo.datasets import DATASET_NAMES, DemoWorldDataset  # noqa: E402
from lightning_unlearn.demo.world import save_sample_grid  # noqa: E402

__all__ = [
    "DEMO_MODEL_NAME", "DATASET_NAMES", "DemoWorldDataset", "register_model_configs",
    "save_sample_grid", "world", "ensure_demo_clip", "DemoClipPretraining", "DemoWorldDataModule",
]

_LAZY = {
    "ensure_demo_clip": "lightning_unlearn.demo.cache",
    "DemoClipPretraining": "lightning_unlearn.demo.pretrain",
    "DemoWorldDataModule": "lightning_unlearn.demo.pretrain",
}


def __getattr__(name: str) -> Any:
    # Lightning takes seconds to import; only the pretraining/caching side needs it.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
