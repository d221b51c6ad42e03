"""The disk cache of pooled text features, beside the edit's maths (which stays pure).

Keyed by the text tower's weights (projection excluded), the prompt list and
:data:`FEATURE_CACHE_FORMAT`; written atomically under ``LIGHTNING_UNLEARN_CACHE``
(``text_features/``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from lightning_unlearn.clip.loading import tensors_fingerprint
from lightning_unlearn.clip.text_projection import locate_text_projection, pooled_text_features
from lightning_unlearn.core.io import atomic_path, cache_dir as default_cache_dir

#: Bump when what :func:`pooled_text_features` returns changes: old caches are then ignored.
FEATURE_CACHE_FORMAT = 1

Tokenizer = Callable[[list[str]], Tensor]


def text_tower_fingerprint(model: nn.Module) -> str:
    """A short hash of the text tower's tensors except the final projection (what pooled features depend on)."""
    proj = locate_text_projection(model)
    skip = tuple(proj.parameter_names())
    named = [(name, tensor) for name, tensor in sorted(proj.tower.state_dict(prefix=proj.prefix).items())
             if name not in skip and not (proj.prefix == "" and name.startswith(("visual.", "logit_")))]
    return tensors_fingerprint(named, salt=type(model).__name__)


def prompts_digest(prompts: Sequence[str]) -> str:
    """A hash of a prompt list (order matters)."""
    return hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest()[:20]


def feature_cache_path(model: nn.Module, prompts: Sequence[str], cache_dir: Optional[str | Path] = None) -> Path:
    """Where the pooled features of ``prompts`` under ``model``'s text tower are cached."""
    key = {"format": FEATURE_CACHE_FORMAT, "tower": text_tower_fingerprint(model), "prompts": prompts_digest(prompts)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir("text_features")
    return root / f"{digest}.pt"


def _load_features(path: Path, count: int, width: int) -> Optional[Tensor]:
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file: encode again
        return None
    if not isinstance(payload, dict) or payload.get("format") != FEATURE_CACHE_FORMAT:
        return None
    features = payload.get("features")
    if not isinstance(features, Tensor) or tuple(features.shape) != (count, width):
        return None
    return features


def cached_pooled_features(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    batch_size: int = 256,
    cache_dir: Optional[str | Path] = None,
    use_cache: bool = True,
) -> tuple[Tensor, bool]:
    """Pooled features of ``prompts`` (see :func:`pooled_text_features`), from the cache if there.

    The cache is keyed by the text tower's weights (projection excluded) and the prompt list and
    written atomically, so concurrent runs and crashes never leave a half-written file.

    Returns:
        ``(features [N, width] float32, whether they came from the cache)``.
    """
    proj = locate_text_projection(model)
    path = feature_cache_path(model, prompts, cache_dir) if use_cache else None
    if path is not None:
        cached = _load_features(path, len(prompts), proj.in_features)
        if cached is not None:
            return cached, True
    features = pooled_text_features(model, tokenizer(list(prompts)), batch_size=batch_size)
    if path is not None:
        with atomic_path(path) as tmp:
            torch.save({"format": FEATURE_CACHE_FORMAT, "features": features, "count": len(prompts)}, tmp)
    return features, False
