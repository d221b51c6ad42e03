"""The offline demo: a procedural image world, its datasets, and a tiny CLIP trained on it.

Nothing outside this package imports it: the ``demo_objects``/``demo_textures`` datasets and the
``demo-world`` weights are registered lazily by name (``lightning_unlearn.datasets``,
``lightning_unlearn.clip.loading``). Importing it registers the project's open_clip model configs, so
that plain ``open_clip.create_model_and_transforms("demo-clip-rn")`` (and ``"demo-clip-lit"``, whose
config names the packaged text model's folder, :mod:`~lightning_unlearn.demo.lit`) works after it.
Lightning-dependent pieces (:mod:`~lightning_unlearn.demo.pretrain`, :func:`ensure_demo_clip`)
load on first use.
"""

from __future__ import annotations

from typing import Any

from lightning_unlearn.clip.loading import PROJECT_MODEL_CONFIGS as MODEL_CONFIG_DIR
from lightning_unlearn.clip.loading import register_project_model_configs as register_model_configs

#: open_clip name of the demo CLIP (the stem of ``model_configs/demo-clip-rn.json``).
DEMO_MODEL_NAME = "demo-clip-rn"

register_model_configs()

from lightning_unlearn.core.errors import MissingFileError  # noqa: E402
from lightning_unlearn.demo.lit import DEMO_LIT_MODEL_NAME, register_lit_model  # noqa: E402

try:
    register_lit_model()
except MissingFileError:  # the text model's package is missing: demo-clip-lit says so when asked for
    pass

from lightning_unlearn.demo import world  # noqa: E402
from lightning_unlearn.demo.world_datasets import DATASET_NAMES, DemoWorldDataset  # noqa: E402
from lightning_unlearn.demo.world import save_sample_grid  # noqa: E402

__all__ = [
    "DEMO_MODEL_NAME", "DEMO_LIT_MODEL_NAME", "DATASET_NAMES", "DemoWorldDataset", "register_model_configs",
    "save_sample_grid", "world", "ensure_demo_clip", "cached_demo_clip",
    "ensure_demo_clip_lit", "cached_demo_clip_lit", "DemoClipPretraining", "DemoWorldDataModule",
]

_LAZY = {
    "ensure_demo_clip": "lightning_unlearn.demo.cache",
    "cached_demo_clip": "lightning_unlearn.demo.cache",
    "ensure_demo_clip_lit": "lightning_unlearn.demo.cache",
    "cached_demo_clip_lit": "lightning_unlearn.demo.cache",
    "DemoClipPretraining": "lightning_unlearn.demo.pretrain",
    "DemoWorldDataModule": "lightning_unlearn.demo.pretrain",
}


def __getattr__(name: str) -> Any:
    # Lightning takes seconds to import; only the pretraining/caching side needs it.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
