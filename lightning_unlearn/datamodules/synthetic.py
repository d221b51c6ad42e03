"""``SyntheticForgetDataModule``: the forget set synthesised from the model itself (cached)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, Optional, Union

import torch
from lightning.pytorch.utilities import rank_zero_info

from lightning_unlearn._validation import _positive_int_validation
from lightning_unlearn.datamodules.forget import ForgetDataModule, ForgetSet
from lightning_unlearn.io import atomic_path, cache_dir as default_cache_dir
from lightning_unlearn.models import eval_mode
from lightning_unlearn.synthesis import SynthesisConfig, resolve_class_targets, synthesize

CACHE_FORMAT = 3  # bump when synthesis changes what it makes: old caches are then remade


class SyntheticForgetDataModule(ForgetDataModule):
    """Synthetic images of the classes to forget, made from the model by gradient ascent.

    On first use (after the LightningModule's ``setup``) global rank zero synthesises
    ``images_per_class`` images per forgotten class (Rich progress bar) or loads them from a cache
    keyed by the model's weights, the vocabulary, the classes and every setting; the set is then
    broadcast to every rank. See :class:`~lightning_unlearn.datamodules.ForgetDataModule` for
    the batches.

    Args:
        datasets: evaluation datasets (see :class:`~lightning_unlearn.datamodules.EvaluationDataModule`).
        data_root: folder holding the datasets.
        split: split of the evaluation datasets.
        batch_size: images per evaluation batch.
        num_workers: DataLoader worker processes per evaluation dataset.
        dataset_kwargs: extra keyword arguments per dataset name.
        images_per_class: synthetic images per forgotten class (the paper: 64).
        steps_per_epoch: optimiser steps per epoch, each on the whole set (published: 1).
        synthesis: settings of the gradient ascent (the published generator's by default).
        seed: seed of the synthesis (same seed, same images).
        cache_dir: folder of cached sets (default ``$LIGHTNING_UNLEARN_CACHE/synthetic``).
        use_cache: reuse a cached set with the same key.
        train_batch_size: images per training step on each device (default: the whole set split
            evenly across devices).
        progress: show a Rich progress bar while synthesising.
    """

    def __init__(
        self,
        datasets: Optional[Union[dict[str, Optional[str]], list[str]]] = None,
        data_root: Optional[str] = None,
        split: Literal["train", "val", "test"] = "test",
        batch_size: int = 64,
        num_workers: int = 0,
        dataset_kwargs: Optional[dict[str, dict]] = None,
        images_per_class: int = 64,
        steps_per_epoch: int = 1,
        synthesis: Optional[SynthesisConfig] = None,
        seed: int = 0,
        cache_dir: Optional[str] = None,
        use_cache: bool = True,
        train_batch_size: Optional[int] = None,
        progress: bool = True,
    ) -> None:
        super().__init__(datasets, data_root, split, batch_size, num_workers, dataset_kwargs, steps_per_epoch,
                         train_batch_size)
        _positive_int_validation("images_per_class", images_per_class)
        self.images_per_class = images_per_class
        self.synthesis = synthesis or SynthesisConfig()
        self.seed = seed
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.progress = progress

    def cache_path(self, module: Any) -> Path:
        """Where the set for ``module`` (its weights and forget spec) and these settings is cached."""
        spec = module.spec
        key = {
            "format": CACHE_FORMAT, "model": module.hparams.model_name, "weights": module.weights_fingerprint(),
            "vocabulary": list(spec.vocabulary.classnames), "templates": list(spec.vocabulary.templates),
            "forget": list(spec.forget_indices), "images_per_class": self.images_per_class,
            "synthesis": asdict(self.synthesis), "seed": self.seed, "image_size": module.image_size,
            "mean": list(module.image_mean), "std": list(module.image_std),
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        root = Path(self.cache_dir) if self.cache_dir else default_cache_dir("synthetic")
        return root / f"{digest}.pt"

    def synthesise(self, module: Any) -> ForgetSet:
        """Synthesise the set for ``module`` (no cache)."""
        spec = module.spec
        targets = resolve_class_targets(self.synthesis, spec.vocabulary.classnames)
        class_index = [i for i in spec.forget_indices for _ in range(self.images_per_class)]
        start = time.perf_counter()
        with eval_mode(module.model), _progress_bar(self.progress, len(class_index), list(spec.names)) as update:
            made = synthesize(
                module.encode_image, module.vocabulary_embeddings(), class_index, module.image_size,
                module.image_mean, module.image_std, self.synthesis, seed=self.seed, progress=update,
                target_probabilities=targets,
            )
        return ForgetSet(images=made.images, labels=made.class_index, kind="synthetic", probability=made.probability,
                         reached=made.reached, seconds=time.perf_counter() - start, info=dict(made.info))

    def make_forget_set(self, module: Any) -> ForgetSet:
        path = self.cache_path(module)
        cached = _load(path) if self.use_cache else None
        if cached is not None:
            rank_zero_info(f"Synthetic forget set: using cache {path}")
            return cached
        made = self.synthesise(module)
        with atomic_path(path) as tmp:
            torch.save(_to_payload(made), tmp)
        rank_zero_info(f"Synthetic forget set: {len(made.images)} images in {made.seconds:.1f}s, "
                       f"mean probability {float(made.probability.mean()):.3f} -> {path}")
        return made


def _to_payload(s: ForgetSet) -> dict[str, Any]:
    return {"format": CACHE_FORMAT, **s.to_state()}


def _load(path: Path) -> Optional[ForgetSet]:
    """The cached set, or None if missing or unreadable (a broken file is remade)."""
    if not path.is_file():
        return None
    try:
        p = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file: make the set again
        return None
    if not isinstance(p, dict) or p.get("format") != CACHE_FORMAT:
        return None
    return ForgetSet.from_state(p)


class _progress_bar:
    """A Rich progress bar for synthesis, or a no-op."""

    def __init__(self, enabled: bool, total: int, names: list[str]) -> None:
        self.enabled, self.total, self.names = enabled, total, names
        self._progress: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]Synthesising[/] " + ", ".join(self.names)), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), transient=False,
        )
        self._progress.start()
        task = self._progress.add_task("synth", total=self.total)
        return lambda done, total: self._progress.update(task, completed=done)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
