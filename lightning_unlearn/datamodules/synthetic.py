"""``SyntheticForgetDataModule``: makes (once, cached) and serves the synthetic forget set."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_unlearn.io import atomic_path, cache_dir as default_cache_dir
from lightning_unlearn.models import model_fingerprint
from lightning_unlearn.synthesis import SynthesisConfig, SyntheticSet, synthesize
from lightning_unlearn.zeroshot import encode_classes

CACHE_FORMAT = 2  # bump when synthesis changes what it makes: old caches are then remade


class SyntheticImages(Dataset):
    """Synthetic images as dict samples: ``image``, ``label`` (vocabulary index), ``prompt``, ``index``."""

    def __init__(self, synthetic: SyntheticSet, prompts: list[str], repeats: int = 1) -> None:
        self.synthetic = synthetic
        self.prompts = prompts  # per image
        self.repeats = repeats

    def __len__(self) -> int:
        return len(self.prompts) * self.repeats

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = index % len(self.prompts)
        return {
            "image": self.synthetic.images[i],
            "label": int(self.synthetic.class_index[i]),
            "prompt": self.prompts[i],
            "index": i,
        }


class SyntheticForgetDataModule(pl.LightningDataModule):
    """Synthetic images of the classes to forget, made from the model itself.

    ``prepare_data`` (once per node) asks the LightningModule for its model, the vocabulary and the
    forgotten classes (``forget_spec()``), synthesises ``images_per_class`` images per class and
    caches them under a key of the model's weights, the classes, the prompts and every setting;
    ``setup`` loads that file on every rank, so every rank trains on the same set. Training
    batches hold the whole set (split across ranks), repeated ``steps_per_epoch`` times per epoch;
    validation is one pass over the set (the synthetic accuracy); test is the evaluation DataModule.

    Args:
        images_per_class: synthetic images per forgotten class (the paper: 64).
        steps_per_epoch: optimizer steps per epoch, each on the whole set.
        synthesis: settings of the gradient ascent (the paper's by default).
        seed: seed of the synthesis (same seed, same images).
        evaluation: evaluation DataModule (datasets for the vocabulary, test and the report).
        cache_dir: folder of cached sets (default ``$LIGHTNING_UNLEARN_CACHE/synthetic``).
        use_cache: reuse a cached set with the same key.
        batch_size: images per training step on each device (default: the whole set split
            evenly across devices).
        progress: show a Rich progress bar while synthesising.
    """

    def __init__(
        self,
        images_per_class: int = 64,
        steps_per_epoch: int = 10,
        synthesis: Optional[SynthesisConfig] = None,
        seed: int = 0,
        evaluation: Optional[pl.LightningDataModule] = None,
        cache_dir: Optional[str] = None,
        use_cache: bool = True,
        batch_size: Optional[int] = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if images_per_class < 1:
            raise ValueError(f"images_per_class must be >= 1, got {images_per_class!r}")
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size!r}")
        self.images_per_class = images_per_class
        self.steps_per_epoch = steps_per_epoch
        self.synthesis = synthesis or SynthesisConfig()
        self.seed = seed
        self.evaluation = evaluation
        self.cache_dir = cache_dir
        self._path_for: Optional[tuple[int, Path]] = None  # (id of the module, its cache path)
        self.use_cache = use_cache
        self.batch_size = batch_size
        self.progress = progress
        self.synthetic: Optional[SyntheticSet] = None
        self.prompts: list[str] = []
        self.synthesis_seconds: float = 0.0
        self.cache_hit: Optional[bool] = None

    # --- making and caching ---------------------------------------------------------------
    def _module(self) -> Any:
        if self.trainer is None or self.trainer.lightning_module is None:
            raise RuntimeError("SyntheticForgetDataModule needs a Trainer with a LightningModule attached")
        return self.trainer.lightning_module

    def _link_evaluation(self) -> None:
        if self.evaluation is not None and self.trainer is not None:
            self.evaluation.trainer = self.trainer

    def cache_path(self, module: Any) -> Path:
        """Where the set for this module and these settings is cached."""
        spec = module.forget_spec()
        key = {
            "format": CACHE_FORMAT,
            "model": module.hparams.model_name,
            "weights": model_fingerprint(module.model),
            "vocabulary": spec.vocabulary,
            "templates": spec.templates,
            "forget": spec.forget_indices,
            "images_per_class": self.images_per_class,
            "synthesis": asdict(self.synthesis),
            "seed": self.seed,
            "image_size": module.image_size,
            "mean": list(module.image_mean),
            "std": list(module.image_std),
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        root = Path(self.cache_dir) if self.cache_dir else default_cache_dir("synthetic")
        return root / f"{digest}.pt"

    def _resolved_cache_path(self, module: Any) -> Path:
        # prepare_data and setup both need the path; hashing large weights (RN50: ~1 s) once is enough
        if self._path_for is None or self._path_for[0] != id(module):
            self._path_for = (id(module), self.cache_path(module))
        return self._path_for[1]

    def make(self, module: Any) -> SyntheticSet:
        """Synthesise the set for ``module`` (no caching)."""
        spec = module.forget_spec()
        model = module.model
        was_training = model.training
        model.eval()
        class_embeddings = encode_classes(model, module.tokenizer, spec.vocabulary, spec.templates, module.device)
        class_index = [i for i in spec.forget_indices for _ in range(self.images_per_class)]
        start = time.perf_counter()
        with _progress_bar(self.progress and module.global_rank == 0, len(class_index), spec.names) as update:
            synthetic = synthesize(
                module.encode_image, class_embeddings, class_index, module.image_size,
                module.image_mean, module.image_std, self.synthesis, seed=self.seed, progress=update,
            )
        synthetic.info["seconds"] = time.perf_counter() - start
        model.train(was_training)
        return synthetic

    def prepare_data(self) -> None:
        # Disk work only, once per node: later every rank loads the same file in setup().
        self._link_evaluation()
        module = self._module()
        path = self._resolved_cache_path(module)
        if self.use_cache and _load(path) is not None:
            rank_zero_info(f"Synthetic forget set: using cache {path}")
            return
        synthetic = self.make(module)
        with atomic_path(path) as tmp:
            torch.save(_to_payload(synthetic), tmp)
        rank_zero_info(
            f"Synthetic forget set: {len(synthetic.images)} images in {synthetic.info['seconds']:.1f}s, "
            f"mean probability {float(synthetic.probability.mean()):.3f} -> {path}"
        )

    def setup(self, stage: str) -> None:
        self._link_evaluation()
        if stage not in ("fit", "validate") or self.synthetic is not None:
            return
        module = self._module()
        path = self._resolved_cache_path(module)
        self._path_for = None  # a later fit may start from other weights: hash them again then
        payload = _load(path)
        if payload is None:
            # prepare_data was skipped (e.g. prepare_data_per_node and a node-local disk).
            raise FileNotFoundError(f"synthetic forget set {path} is missing; prepare_data did not make it")
        self.synthetic = _from_payload(payload)
        self.synthesis_seconds = float(self.synthetic.info.get("seconds", 0.0))
        spec = module.forget_spec()
        prompt_of = dict(zip(spec.forget_indices, spec.prompts))
        self.prompts = [prompt_of[int(c)] for c in self.synthetic.class_index]

    # --- loaders ---------------------------------------------------------------------------
    def _per_device_batch(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        world = self.trainer.world_size if self.trainer is not None else 1
        return math.ceil(len(self.prompts) / world)

    def train_dataloader(self) -> DataLoader:
        dataset = SyntheticImages(self.synthetic, self.prompts, repeats=self.steps_per_epoch)
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            # Lightning would swap in a *shuffling* DistributedSampler; an explicit one is kept.
            # Unshuffled, each step's shards together hold every image exactly once.
            sampler = DistributedSampler(
                dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False
            )
        return DataLoader(dataset, batch_size=self._per_device_batch(), shuffle=False, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(SyntheticImages(self.synthetic, self.prompts), batch_size=self._per_device_batch())

    def test_dataloader(self) -> Any:
        if self.evaluation is None:
            raise ValueError("no evaluation DataModule: set `evaluation` to test on datasets")
        self.evaluation.setup("test")
        return self.evaluation.test_dataloader()


def _to_payload(s: SyntheticSet) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "images": s.images,
        "class_index": s.class_index,
        "probability": s.probability,
        "target": s.target,
        "iterations": s.iterations,
        "reached": s.reached,
        "info": json.dumps(s.info),
    }


def _from_payload(p: dict[str, Any]) -> SyntheticSet:
    return SyntheticSet(
        images=p["images"], class_index=p["class_index"], probability=p["probability"],
        target=p["target"], iterations=p["iterations"], reached=p["reached"], info=json.loads(p["info"]),
    )


def _load(path: Path) -> Optional[dict[str, Any]]:
    """The cached payload, or None if missing or unreadable (a broken file is remade)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    return payload if isinstance(payload, dict) and payload.get("format") == CACHE_FORMAT else None


class _progress_bar:
    """A Rich progress bar for synthesis, or a no-op."""

    def __init__(self, enabled: bool, total: int, names: list[str]) -> None:
        self.enabled, self.total, self.names = enabled, total, names
        self._progress = None

    def __enter__(self):
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
