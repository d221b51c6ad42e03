"""Textual inversion against a frozen CLIP: learn word embeddings that name a class again.

A recovery attack (beyond the paper): with a few real images of a forgotten class, learn the
input embeddings of one or more pseudo-words that stand in place of the class word of a prompt,
so that the frozen model classifies those images as the class again. A method that only hides the
class from the text tower's output for its usual words comes back; one that removed what the model
knows does not. The same recipe recovers "erased" concepts from diffusion models.

Pure functions of tensors: the text tower is reached only through ``encode_words`` (the caller
puts the words into the prompt), and nothing here changes a weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.maths.zeroshot import LOGIT_SCALE, zero_shot_logits

#: ``words [K, n, W] -> normalised class embeddings [K, D]``: the K learned prompts, encoded.
WordEncoder = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class InversionResult:
    """What :func:`learn_word_embeddings` found.

    Attributes:
        words: the learned input embeddings ``[K, n, W]`` (detached).
        embeddings: the K learned prompts' normalised class embeddings ``[K, D]`` (detached).
        losses: the cross-entropy before each step and after the last (``steps + 1`` values).
    """

    words: torch.Tensor
    embeddings: torch.Tensor
    losses: list[float]


def initial_words(table: torch.Tensor, classes: int, words: int, seed: int) -> torch.Tensor:
    """Starting embeddings ``[classes, words, W]``: rows of the token-embedding ``table`` ``[V, W]``
    drawn with ``seed`` (real words, so the attack starts at the scale the tower was trained on)."""
    if classes < 1 or words < 1:
        raise ConfigError(f"need at least one class and one word, got classes={classes!r}, words={words!r}")
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, table.shape[0], (classes * words,), generator=generator)
    return table.detach()[index.to(table.device)].clone().reshape(classes, words, -1)


def with_rows(embeddings: torch.Tensor, rows: Sequence[int], replacements: torch.Tensor) -> torch.Tensor:
    """``embeddings`` ``[C, D]`` with ``rows`` replaced by ``replacements`` ``[len(rows), D]`` (a copy)."""
    out = embeddings.clone()
    out[torch.as_tensor(list(rows), dtype=torch.long, device=out.device)] = replacements.to(out)
    return out


def learn_word_embeddings(
    encode_words: WordEncoder,
    vocabulary: torch.Tensor,
    rows: Sequence[int],
    image_features: torch.Tensor,
    labels: torch.Tensor,
    init: torch.Tensor,
    steps: int,
    lr: float,
    scale: float = LOGIT_SCALE,
    progress: Optional[Callable[[int], None]] = None,
) -> InversionResult:
    """Adam on the zero-shot cross-entropy of real images against a vocabulary whose forgotten
    classes' prompts carry the learned words.

    Args:
        encode_words: ``words [K, n, W] -> [K, D]``, the normalised embeddings of the K prompts
            with the words in place of the class words (gradients must reach ``words``).
        vocabulary: ``[C, D]`` normalised class embeddings of every class (constant).
        rows: the K vocabulary rows (forgotten classes) that the learned prompts replace, in the
            order of ``init``.
        image_features: ``[M, D]`` image features (constant) of real images of those classes.
        labels: ``[M]`` their vocabulary indices.
        init: starting words ``[K, n, W]`` (e.g. :func:`initial_words`).
        steps: Adam steps (>= 0).
        lr: Adam learning rate (> 0).
        scale: logit scale.
        progress: called with the number of steps done after each step.

    Returns:
        An :class:`InversionResult`; only the words change, never a tensor the caller passed.
    """
    if len(rows) != init.shape[0]:
        raise ConfigError(f"one set of words per replaced row: {len(rows)} rows, {init.shape[0]} sets")
    if steps < 0 or not lr > 0:
        raise ConfigError(f"steps must be >= 0 and lr > 0, got steps={steps!r}, lr={lr!r}")
    vocabulary = vocabulary.detach()
    features = F.normalize(image_features.detach().float(), dim=-1)
    labels = labels.long().to(features.device)
    words = init.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([words], lr=lr)

    def loss_of(current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        learned = encode_words(current)
        logits = zero_shot_logits(features, with_rows(vocabulary.to(learned), rows, learned).to(features), scale)
        return F.cross_entropy(logits, labels), learned

    losses = []
    with torch.enable_grad():
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss, _ = loss_of(words)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step + 1)
    with torch.no_grad():
        loss, learned = loss_of(words)
    losses.append(float(loss))
    return InversionResult(words=words.detach(), embeddings=learned.detach(), losses=losses)
