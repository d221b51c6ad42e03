"""Zero-shot classification: class prompts -> normalised text embeddings -> logits."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from open_clip.zero_shot_classifier import build_zero_shot_classifier
from torch import nn

LOGIT_SCALE = 100.0  # CLIP's trained temperature; the paper uses 100 x cosine throughout


def format_classname(name: str) -> str:
    """Underscores become spaces before a name goes into a prompt (CoOp convention)."""
    return name.replace("_", " ")


def encode_classes(
    model: nn.Module,
    tokenizer: Callable[..., torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Normalised class embeddings ``[C, D]``, averaged over ``templates`` (no gradient)."""
    if not classnames:
        raise ValueError("classnames is empty")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"every template needs one '{{}}' placeholder, got {list(templates)!r}")
    # Mode is left to the caller: toggling train() here would also wake BatchNorm layers.
    weights = build_zero_shot_classifier(
        model, tokenizer, [format_classname(c) for c in classnames], list(templates),
        num_classes_per_batch=64, device=device,
    )
    return weights.T.contiguous()


def zero_shot_logits(
    image_features: torch.Tensor, class_embeddings: torch.Tensor, scale: float = LOGIT_SCALE
) -> torch.Tensor:
    """``scale`` x cosine similarity between image features ``[B, D]`` and classes ``[C, D]``."""
    return scale * F.normalize(image_features, dim=-1) @ class_embeddings.T
