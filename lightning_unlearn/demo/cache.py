"""The cached weights of the demo CLIP: trained once on the demo world, then reused.

``ensure_demo_clip()`` returns the path of a ``.safetensors`` state dict that
``open_clip.create_model_and_transforms(DEMO_MODEL_NAME, pretrained=str(path))`` loads. The file
name carries a key derived from every setting that shapes the weights (world version, model
config, seed, steps, ...), so changing any of them trains a new file. Next to it a manifest
(``<name>.json``) records the file's SHA-256, the settings, the measured zero-shot accuracy and
the training time; it is written last, and a weights file whose manifest is missing, different or
whose hash does not match is never loaded: it is trained again.

Rebuild from the shell::

    python -m lightning_unlearn.demo.cache [--model demo-clip-lit] [--seed 0] [--steps N] [--force]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

from lightning.pytorch.utilities import rank_zero_info

from lightning_unlearn.core import io
from lightning_unlearn.demo import DEMO_LIT_MODEL_NAME, DEMO_MODEL_NAME, MODEL_CONFIG_DIR, world

log = logging.getLogger(__name__)

#: Sub-folder of the project cache that holds the demo CLIP.
CACHE_SUBDIR = "demo_clip"
#: Bump when the training recipe changes in a way the settings below do not capture.
RECIPE_VERSION = 2
DEFAULT_STEPS = 600
DEFAULT_TRAIN_PER_CLASS = 400
DEFAULT_BATCH_REPEATS = 4
DEFAULT_LR = 3e-3
#: Gaussian noise on training images (per-image std uniform in [0, this], normalised units). It
#: makes the features robust to the noise that synthesis starts from, so synthetic images of a
#: class carry its real features and forgetting them transfers to real images (docs/demo_world.md).
DEFAULT_NOISE_STD = 0.5
#: Pretraining captions: each domain's templates plus open_clip's 80 OpenAI templates, so that the
#: text tower generalises to templates it never saw (docs/demo_world.md).
DEFAULT_CAPTION_TEMPLATES = "own+openai"


def demo_settings(
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    model_name: str = DEMO_MODEL_NAME,
    train_per_class: int = DEFAULT_TRAIN_PER_CLASS,
    batch_repeats: int = DEFAULT_BATCH_REPEATS,
    lr: float = DEFAULT_LR,
    warmup_steps: int = 50,
    weight_decay: float = 0.1,
    augment: bool = False,
    noise_std: float = DEFAULT_NOISE_STD,
    caption_templates: str = DEFAULT_CAPTION_TEMPLATES,
    lock_text: bool = False,
    adv_radius: float = 0.0,
    adv_steps: int = 3,
    adv_fraction: float = 1.0,
) -> dict[str, Any]:
    """Everything that determines the demo CLIP's weights, as a JSON-able dict (the cache key).

    A model whose config is made at run time (``demo-clip-lit``) enters with its HF text model's
    folder replaced by a hash of the folder's files. The LiT and robustness settings enter only
    when used, so that the keys of ``demo-clip-rn`` stay those of the caches users already hold.
    """
    config_path = MODEL_CONFIG_DIR / f"{model_name}.json"
    model_config = json.loads(config_path.read_text()) if config_path.is_file() else None
    if model_config is None:
        import open_clip

        from lightning_unlearn.clip.loading import check_model_name
        from lightning_unlearn.demo.lit import portable_model_config

        check_model_name(model_name)
        model_config = open_clip.get_model_config(model_name)
        if "hf_model_name" in model_config.get("text_cfg", {}):
            model_config = portable_model_config(model_config)
    extra: dict[str, Any] = {}
    if lock_text or adv_radius:
        extra = {"lock_text": lock_text, "adv_radius": adv_radius, "adv_steps": adv_steps,
                 "adv_fraction": adv_fraction}
    return {
        "recipe_version": RECIPE_VERSION,
        "world_version": world.WORLD_VERSION,
        "image_size": world.IMAGE_SIZE,
        "classes": {d: list(world.CLASSES[d]) for d in world.DOMAINS},
        "model_name": model_name,
        "model_config": model_config,
        "seed": seed,
        "steps": steps,
        "train_per_class": train_per_class,
        "batch_repeats": batch_repeats,
        "lr": lr,
        "warmup_steps": warmup_steps,
        "weight_decay": weight_decay,
        "augment": augment,
        "noise_std": noise_std,
        "caption_templates": caption_templates,
        **extra,
    }


def _key(settings: dict[str, Any]) -> str:
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_paths(settings: dict[str, Any], cache_dir: Optional[str | Path] = None) -> tuple[Path, Path]:
    """``(weights, manifest)`` paths for ``settings`` under ``cache_dir`` (default: project cache)."""
    root = Path(cache_dir) / CACHE_SUBDIR if cache_dir is not None else io.cache_dir(CACHE_SUBDIR)
    stem = f"{settings['model_name']}-seed{settings['seed']}-{_key(settings)}"
    return root / f"{stem}.safetensors", root / f"{stem}.json"


def read_valid_manifest(weights: Path, manifest: Path, settings: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The manifest if it matches ``settings`` and the weights file's hash; else ``None`` (and why, logged)."""
    if not weights.is_file() or not manifest.is_file():
        return None
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("demo CLIP manifest %s unreadable (%s); retraining", manifest, err)
        return None
    if meta.get("settings") != settings:
        log.warning("demo CLIP manifest %s has other settings; retraining", manifest)
        return None
    if meta.get("size") != weights.stat().st_size or meta.get("sha256") != sha256_file(weights):
        log.warning("demo CLIP weights %s do not match their manifest (truncated or modified); retraining",
                    weights)
        return None
    return meta


@contextlib.contextmanager
def _torch_state(num_threads: Optional[int]) -> Iterator[None]:
    """Run the block with ``num_threads`` torch threads (``None``: as is); afterwards restore the
    thread count, the deterministic-algorithms flag (``Trainer(deterministic=True)`` sets it for
    the whole process) and the random states that ``seed_everything`` resets, so that the run
    which first builds the demo CLIP continues exactly like one that finds it cached."""
    import os
    import random

    import numpy as np
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seed_env = {k: os.environ.get(k) for k in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        for key, value in seed_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def train_demo_clip(
    settings: dict[str, Any], progress: bool = True, num_threads: Optional[int] = 1
) -> tuple[dict[str, Any], dict[str, float], float]:
    """Train the demo CLIP for ``settings``; returns ``(state_dict, zero-shot accuracy, seconds)``."""
    with _torch_state(num_threads):
        return _train(settings, progress)


def _train(settings: dict[str, Any], progress: bool) -> tuple[dict[str, Any], dict[str, float], float]:
    import lightning as L
    from lightning.pytorch.callbacks import RichProgressBar

    from lightning_unlearn.demo.pretrain import DemoClipPretraining, DemoWorldDataModule, zero_shot_accuracy

    L.seed_everything(settings["seed"], workers=True, verbose=False)
    datamodule = DemoWorldDataModule(
        seed=settings["seed"], train_per_class=settings["train_per_class"],
        batch_repeats=settings["batch_repeats"], augment=settings["augment"],
        noise_std=settings["noise_std"], model_name=settings["model_name"],
        caption_templates=settings["caption_templates"],
    )
    module = DemoClipPretraining(model_name=settings["model_name"], lr=settings["lr"],
                                 warmup_steps=settings["warmup_steps"], weight_decay=settings["weight_decay"],
                                 lock_text=settings.get("lock_text", False),
                                 adv_radius=settings.get("adv_radius", 0.0),
                                 adv_steps=settings.get("adv_steps", 3),
                                 adv_fraction=settings.get("adv_fraction", 1.0))
    steps = settings["steps"]
    trainer = L.Trainer(
        # max_epochs=1: the stream is endless, max_steps ends the run (the bar then reads "Epoch 0/0")
        accelerator="cpu", devices=1, max_steps=steps, max_epochs=1, deterministic=True,
        logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=progress, callbacks=[RichProgressBar()] if progress else [],
        val_check_interval=max(1, steps // 2), check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        # the batches are made in-process on purpose (rendered once, indexed per step)
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    model = module.model
    accuracy = zero_shot_accuracy(model, module.tokenizer, split="test", seed=settings["seed"])
    return model.state_dict(), accuracy, seconds


def ensure_demo_clip(
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    cache_dir: Optional[str | Path] = None,
    progress: bool = True,
    force: bool = False,
    num_threads: Optional[int] = 1,
    **settings_overrides: Any,
) -> Path:
    """Path of the cached demo CLIP weights for these settings, training them first if needed.

    Args:
        seed: world and training seed.
        steps: optimiser steps of pretraining.
        cache_dir: cache root; default ``$LIGHTNING_UNLEARN_CACHE`` or ``~/.cache/lightning_unlearn``.
        progress: show Lightning's Rich progress bar while training.
        force: retrain even if a valid cached file exists.
        num_threads: torch CPU threads while training (``None``: torch's current setting). The
            default 1 is the steady choice: two threads are ~1.4x faster on an idle dual-core
            machine but can be many times slower when other processes compete for the cores,
            and a fixed count keeps the weights reproducible across machines.
        **settings_overrides: other :func:`demo_settings` arguments (``train_per_class``, ``lr``...).

    Returns:
        Path of a ``.safetensors`` file for
        ``open_clip.create_model_and_transforms(DEMO_MODEL_NAME, pretrained=str(path))``.
    """
    settings = demo_settings(seed=seed, steps=steps, **settings_overrides)
    weights, manifest = cache_paths(settings, cache_dir)
    if not force and read_valid_manifest(weights, manifest, settings) is not None:
        return weights

    duration = ""
    if settings["steps"] == DEFAULT_STEPS and settings["model_name"] == DEMO_MODEL_NAME:
        duration = ", about 2 minutes on one CPU core"
    elif settings == lit_settings(seed=settings["seed"]):
        duration = ", about 4 minutes on one CPU core"
    rank_zero_info(f"Demo CLIP: not cached yet; training it once ({settings['steps']} steps{duration}) "
                   f"into {weights.parent}")
    state, accuracy, seconds = train_demo_clip(settings, progress=progress, num_threads=num_threads)
    # weights first, manifest last: a crash in between leaves no manifest, hence a retrain
    manifest.unlink(missing_ok=True)
    io.save_open_clip_weights(weights, state)
    io.atomic_write_json(manifest, {
        "file": weights.name,
        "sha256": sha256_file(weights),
        "size": weights.stat().st_size,
        "settings": settings,
        "zero_shot_accuracy": accuracy,
        "train_seconds": round(seconds, 1),
        "num_threads": num_threads,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    rank_zero_info("Demo CLIP trained in {:.0f} s, zero-shot accuracy {}: {}".format(
        seconds, ", ".join(f"{d} {100 * a:.1f}%" for d, a in accuracy.items()), weights))
    return weights


def cached_demo_clip(seed: int = 0, steps: int = DEFAULT_STEPS, cache_dir: Optional[str | Path] = None,
                     **settings_overrides: Any) -> Optional[Path]:
    """The cached demo CLIP weights for these settings if they exist and are valid, else None."""
    settings = demo_settings(seed=seed, steps=steps, **settings_overrides)
    weights, manifest = cache_paths(settings, cache_dir)
    return weights if read_valid_manifest(weights, manifest, settings) is not None else None


#: The ``demo-clip-lit`` recipe (docs/demo_world.md): the packaged MiniLM locked, the image tower
#: and the projection trained on the demo world with noise. PGD is off by default: the robust
#: towers measured so far help the paper's method forget but cost clean accuracy and pretraining
#: time (docs/demo_world.md, "Robust image towers and the paper's method").
LIT_DEFAULTS: dict[str, Any] = {
    "model_name": DEMO_LIT_MODEL_NAME,
    "lock_text": True,
    "noise_std": DEFAULT_NOISE_STD,
    "adv_radius": 0.0,
    "adv_steps": 3,
    "adv_fraction": 1.0,
}


def lit_settings(seed: int = 0, steps: int = DEFAULT_STEPS, **overrides: Any) -> dict[str, Any]:
    """:func:`demo_settings` of ``demo-clip-lit``: :data:`LIT_DEFAULTS`, then ``overrides``."""
    return demo_settings(seed=seed, steps=steps, **{**LIT_DEFAULTS, **overrides})


def ensure_demo_clip_lit(seed: int = 0, steps: int = DEFAULT_STEPS, **kwargs: Any) -> Path:
    """:func:`ensure_demo_clip` for ``demo-clip-lit`` (its recipe :data:`LIT_DEFAULTS`, then ``kwargs``).

    Loadable with ``open_clip.create_model_and_transforms("demo-clip-lit", pretrained=str(path))``
    once :mod:`lightning_unlearn.demo` is imported (it registers the config).
    """
    return ensure_demo_clip(seed=seed, steps=steps, **{**LIT_DEFAULTS, **kwargs})


def cached_demo_clip_lit(seed: int = 0, steps: int = DEFAULT_STEPS, cache_dir: Optional[str | Path] = None,
                         **overrides: Any) -> Optional[Path]:
    """The cached ``demo-clip-lit`` weights for these settings if they exist and are valid, else None."""
    return cached_demo_clip(seed=seed, steps=steps, cache_dir=cache_dir, **{**LIT_DEFAULTS, **overrides})


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest written next to a cached weights file (``.safetensors`` -> ``.json``)."""
    return json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m lightning_unlearn.demo.cache``: (re)build the demo CLIP cache."""
    parser = argparse.ArgumentParser(prog="python -m lightning_unlearn.demo.cache",
                                     description="Train (once) and cache the demo CLIP.")
    parser.add_argument("--model", choices=[DEMO_MODEL_NAME, DEMO_LIT_MODEL_NAME], default=DEMO_MODEL_NAME,
                        help="which demo CLIP (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="world and training seed")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="pretraining steps")
    parser.add_argument("--cache-dir", default=None, help="cache root (default: $LIGHTNING_UNLEARN_CACHE)")
    parser.add_argument("--force", action="store_true", help="retrain even if cached")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads while training (0: torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    ensure = ensure_demo_clip_lit if args.model == DEMO_LIT_MODEL_NAME else ensure_demo_clip
    path = ensure(seed=args.seed, steps=args.steps, cache_dir=args.cache_dir,
                  progress=not args.no_progress, force=args.force, num_threads=args.threads or None)
    meta = read_manifest(path)
    print(f"{path}\nzero-shot accuracy: {meta['zero_shot_accuracy']}  train seconds: {meta['train_seconds']}")


if __name__ == "__main__":
    main()
