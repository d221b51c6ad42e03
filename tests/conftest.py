"""Fixtures shared by the test suite.

- The tiny open_clip configs in ``tests/model_configs/*.json`` (``tiny-vit``: a 2-block ViT at
  32 px; ``tiny-rn``: a [1, 1, 1, 1] ModifiedResNet at 32 px; both with a 2-block text tower of
  context 16) are registered with open_clip when this file is imported, so any test can call
  ``load_clip("tiny-vit")``.
- ``tiny_clip(name="tiny-vit", fresh=False)``: a factory returning ``load_clip(name)`` with
  random weights drawn from a fixed seed. By default one instance per name is shared by the
  whole session: treat it as read-only. Tests that train or edit the model ask for
  ``fresh=True`` (a new, identical copy).
- ``LIGHTNING_UNLEARN_CACHE`` points at a session temporary folder for every test (autouse), so
  the suite never reads or writes ``~/.cache``; ``isolated_cache`` gives one test its own folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import open_clip
import pytest
import torch

from lightning_unlearn.core.io import CACHE_ENV
from lightning_unlearn.clip.loading import LoadedClip, load_clip

MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"
TINY_MODELS = tuple(sorted(p.stem for p in MODEL_CONFIGS.glob("*.json")))  # ("tiny-rn", "tiny-vit")
TINY_SEED = 0

open_clip.add_model_config(MODEL_CONFIGS)  # every *.json in the folder, named by its file stem


def build_tiny_clip(name: str = "tiny-vit", seed: int = TINY_SEED) -> LoadedClip:
    """A tiny model with random weights from ``seed``; the global RNG is left untouched."""
    if name not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {name!r}; shipped: {TINY_MODELS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return load_clip(name, pretrained=None)


@pytest.fixture(scope="session")
def tiny_clip() -> Callable[..., LoadedClip]:
    """Factory ``tiny_clip(name="tiny-vit", fresh=False) -> LoadedClip`` (see module docstring)."""
    shared: dict[str, LoadedClip] = {}

    def factory(name: str = "tiny-vit", fresh: bool = False) -> LoadedClip:
        if fresh:
            return build_tiny_clip(name)
        if name not in shared:
            shared[name] = build_tiny_clip(name)
        return shared[name]

    return factory


@pytest.fixture(scope="session", autouse=True)
def _test_cache_dir(tmp_path_factory):
    """Every test (and session fixture) sees a temporary ``LIGHTNING_UNLEARN_CACHE``."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("lightning_unlearn_cache")
        mp.setenv(CACHE_ENV, str(path))
        yield path


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A cache folder of this test's own (empty at the start)."""
    path = tmp_path / "cache"
    path.mkdir()
    monkeypatch.setenv(CACHE_ENV, str(path))
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a whole test module (``pytestmark = usefixtures("one_thread")``):
    with tiny models on a shared 2-core machine, threads only contend (30x slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
