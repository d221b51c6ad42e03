"""Zero-shot classification: class prompts -> token ids -> normalised text embeddings -> logits.

Prompts are tokenised once (:func:`tokenize_classes`) and encoded as often as the text tower
changes (:func:`class_embeddings`); the arithmetic is open_clip's
``build_zero_shot_classifier`` (normalise each prompt, average over templates, normalise), on
token ids instead of strings.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from lightning_unlearn.core._validation import _templates_validation
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.core.names import prompt_name

LOGIT_SCALE = 100.0  # CLIP's trained temperature; the paper uses 100 x cosine throughout
CLASSES_PER_CHUNK = 64  # as open_clip's build_zero_shot_classifier: bounds the text batch

TextEncoder = Callable[[torch.Tensor], torch.Tensor]


def class_prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every class under every template, class-major (``C x T`` strings)."""
    if not classnames:
        raise ConfigError("classnames is empty: a zero-shot classifier needs at least one class")
    _templates_validation("templates", list(templates))
    return [template.format(prompt_name(c)) for c in classnames for template in templates]


def tokenize_classes(
    tokenizer: Callable[[list[str]], torch.Tensor], classnames: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """Token ids ``[C, T, L]`` of every class under every template."""
    tokens = tokenizer(class_prompts(classnames, templates))
    return tokens.reshape(len(classnames), len(templates), -1)


def class_embeddings(encode_text: TextEncoder, tokens: torch.Tensor, chunk: int = CLASSES_PER_CHUNK) -> torch.Tensor:
    """Normalised class embeddings ``[C, D]`` from token ids ``[C, T, L]``, averaged over templates.

    Gradients flow if they are enabled (the caller decides); classes are encoded ``chunk`` at a
    time so memory does not grow with the vocabulary.
    """
    num_classes, num_templates, length = tokens.shape
    parts = []
    for start in range(0, num_classes, chunk):
        block = tokens[start : start + chunk]
        features = F.normalize(encode_text(block.reshape(-1, length)), dim=-1)
        mean = features.reshape(len(block), num_templates, -1).mean(dim=1)
        parts.append(mean / mean.norm(dim=1, keepdim=True))
    return torch.cat(parts)


def zero_shot_logits(
    image_features: torch.Tensor, class_embeddings: torch.Tensor, scale: float = LOGIT_SCALE
) -> torch.Tensor:
    """``scale`` x cosine similarity between image features ``[B, D]`` and classes ``[C, D]``."""
    return scale * F.normalize(image_features, dim=-1) @ class_embeddings.T


@torch.no_grad()
def encode_classes(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Normalised class embeddings ``[C, D]`` of an open_clip model, averaged over ``templates``
    (no gradient; the model's train/eval mode is left to the caller)."""
    return class_embeddings(model.encode_text, tokenize_classes(tokenizer, classnames, templates).to(device))
