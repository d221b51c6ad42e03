"""``SyntheticForgetDataModule``: the forget set synthesised from the model itself (cached)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.utilities import rank_zero_info

from lightning_unlearn.core._validation import _positive_int_validation
from lightning_unlearn.datamodules.forget import ForgetDataModule, ForgetSet
from lightning_unlearn.evaluation.descriptions import descriptions_for, load_descriptions
from lightning_unlearn.evaluation.verification import target_from_median
from lightning_unlearn.core.io import atomic_path, cache_dir as default_cache_dir
from lightning_unlearn.clip.loading import eval_mode
from lightning_unlearn.maths.synthesis import SynthesisConfig, resolve_class_targets, synthesize
from lightning_unlearn.maths.synthesis_schedule import cache_key_fields, resolve_class_decays

CACHE_FORMAT = 4  # bump when synthesis changes what it makes: old caches are then remade


class SyntheticForgetDataModule(ForgetDataModule):
    """Synthetic images of the classes to forget, made from the model by gradient ascent.

    On first use (after the LightningModule's ``setup``) global rank zero synthesises
    ``images_per_class`` images per forgotten class (Rich progress bar) or loads them from a cache
    keyed by the model's weights, the vocabulary, the classes and every setting; the set is then
    broadcast to every rank. See :class:`~lightning_unlearn.datamodules.ForgetDataModule` for
    the batches.

    Args:
        images_per_class: synthetic images per forgotten class (the paper: 64).
        synthesis: settings of the gradient ascent (the published generator's by default).
        seed: seed of the synthesis (same seed, same images).
        cache_dir: folder of cached sets (default ``$LIGHTNING_UNLEARN_CACHE/synthetic``).
        use_cache: reuse a cached set with the same key.
        progress: show a Rich progress bar while synthesising.
        descriptions: class descriptions as synthesis prompts (the paper's Table 8): a JSON file
            of class name -> list of descriptions, or ``demo`` (the demo world's, shipped). Each
            image draws one description of its class (seeded by ``seed``) and its objective uses
            that description's embedding in place of its class's prompt embedding. None: the
            class prompts. A file that is not valid JSON fails at once; one that lacks a
            forgotten class fails when the classes are resolved, before synthesis.
        **kwargs: the evaluation datasets and batching of
            :class:`~lightning_unlearn.datamodules.ForgetDataModule` (``datasets``, ``data_root``,
            ``split``, ``batch_size``, ``num_workers``, ``dataset_kwargs``, ``steps_per_epoch``,
            ``train_batch_size``, ``real_valid_images``).
    """

    def __init__(
        self,
        images_per_class: int = 64,
        synthesis: Optional[SynthesisConfig] = None,
        seed: int = 0,
        cache_dir: Optional[str] = None,
        use_cache: bool = True,
        progress: bool = True,
        descriptions: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _positive_int_validation("images_per_class", images_per_class)
        self.descriptions = descriptions
        self._descriptions = load_descriptions(descriptions) if descriptions is not None else None
        self.images_per_class = images_per_class
        self.synthesis = synthesis or SynthesisConfig()
        self.seed = seed
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.progress = progress

    def check_forget_spec(self, spec: Any) -> None:
        """Called by the module once the forgotten classes are known: the descriptions must cover them.

        Raises:
            ConfigError: the descriptions file lacks a forgotten class.
        """
        if self._descriptions is not None:
            descriptions_for(self._descriptions, spec.names, f"descriptions {self.descriptions!r}")

    def cache_path(self, module: Any, real_targets: Optional[dict[int, float]] = None) -> Path:
        """Where the set for ``module`` (its weights and forget spec) and these settings is cached."""
        spec = module.spec
        key = {
            "format": CACHE_FORMAT, "model": module.hparams.model_name, "weights": module.weights_fingerprint(),
            "vocabulary": list(spec.vocabulary.classnames), "templates": list(spec.vocabulary.templates),
            "forget": list(spec.forget_indices), "images_per_class": self.images_per_class,
            "synthesis": cache_key_fields(self.synthesis), "seed": self.seed, "image_size": module.image_size,
            "mean": list(module.image_mean), "std": list(module.image_std),
        }
        # Only when used, so that the sets cached without them keep their keys.
        if self._descriptions is not None:
            key["descriptions"] = descriptions_for(self._descriptions, spec.names, "descriptions")
        if real_targets:
            key["real_targets"] = {str(k): v for k, v in sorted(real_targets.items())}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        root = Path(self.cache_dir) if self.cache_dir else default_cache_dir("synthetic")
        return root / f"{digest}.pt"

    def real_targets(self, module: Any) -> dict[int, float]:
        """Per-class synthesis targets from real images (vocabulary index -> probability), if the
        module's evaluation suite asks for them (``synthesis_target_from_real``); else empty."""
        medians = module.real_target_probabilities() if hasattr(module, "real_target_probabilities") else {}
        return {c: target_from_median(p, self.synthesis.min_probability) for c, p in medians.items()}

    def draw_descriptions(self, module: Any, class_index: list[int]) -> tuple[list[str], torch.Tensor]:
        """One description per image, drawn (seeded) among its class's, and their text embeddings ``[M, D]``."""
        spec = module.spec
        names = dict(zip(spec.forget_indices, spec.names))
        by_class = descriptions_for(self._descriptions or {}, spec.names, f"descriptions {self.descriptions!r}")
        generator = torch.Generator().manual_seed(self.seed)
        texts = []
        for c in class_index:
            options = by_class[names[c]]
            texts.append(options[int(torch.randint(len(options), (1,), generator=generator))])
        unique = sorted(set(texts))
        with torch.no_grad(), eval_mode(module.model):
            encoded = module.model.encode_text(module.tokenizer(unique).to(module.device))
        row = {text: i for i, text in enumerate(unique)}
        return texts, encoded[torch.tensor([row[t] for t in texts], device=encoded.device)]

    def synthesise(self, module: Any, real_targets: Optional[dict[int, float]] = None) -> ForgetSet:
        """Synthesise the set for ``module`` (no cache); ``real_targets`` override the configured
        targets of their classes."""
        spec = module.spec
        targets = {**resolve_class_targets(self.synthesis, spec.vocabulary.classnames), **(real_targets or {})}
        class_index = [i for i in spec.forget_indices for _ in range(self.images_per_class)]
        texts, embeddings = self.draw_descriptions(module, class_index) if self._descriptions is not None else ([], None)
        start = time.perf_counter()
        with eval_mode(module.model), _progress_bar(self.progress, len(class_index), list(spec.names)) as update:
            made = synthesize(
                module.encode_image, module.vocabulary_embeddings(), class_index, module.image_size,
                module.image_mean, module.image_std, self.synthesis, seed=self.seed, progress=update,
                target_probabilities=targets, image_embeddings=embeddings,
                probability_decays=resolve_class_decays(self.synthesis, spec.vocabulary.classnames),
            )
        info = dict(made.info)
        if texts:
            info["descriptions"] = texts
        if real_targets:
            info["target_from_real"] = {spec.vocabulary.classnames[c]: p for c, p in real_targets.items()}
        return ForgetSet(images=made.images, labels=made.class_index, kind="synthetic", probability=made.probability,
                         reached=made.reached, seconds=time.perf_counter() - start, info=info)

    def make_forget_set(self, module: Any) -> ForgetSet:
        real_targets = self.real_targets(module)
        path = self.cache_path(module, real_targets)
        cached = _load(path) if self.use_cache else None
        if cached is not None:
            rank_zero_info(f"Synthetic forget set: using cache {path}")
            return cached
        made = self.synthesise(module, real_targets=real_targets)
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
    try:
        return ForgetSet.from_state(p)
    except (KeyError, TypeError, ValueError):  # a file of another layout under the same format: remake
        return None


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
