"""Checking forgetting with a few real images (the paper's section 5.6).

Synthetic accuracy is a reliable stopping signal only when the synthetic images get about the
class probability that real images of the class get. This section compares the two
distributions (median and quartiles, in the forget vocabulary, at the logit scale of synthesis)
and reports the real images' accuracy before and after. The real images' median can also set the
synthesis target probability (:func:`target_from_median`).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from lightning_unlearn.maths.zeroshot import zero_shot_logits

#: Highest synthesis target taken from real images (the published datagen.sh's highest is 0.99;
#: a target of 1 could never be exceeded).
MAX_TARGET_FROM_REAL = 0.99


def class_probability(features: torch.Tensor, embeddings: torch.Tensor,
                      labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's softmax probability of its own class and whether that class is the arg-max.

    ``features`` ``[M, D]`` raw image features, ``embeddings`` ``[C, D]`` normalised class
    embeddings, ``labels`` ``[M]`` class indices into ``embeddings``.
    """
    logits = zero_shot_logits(features.float(), embeddings.float())
    probability = logits.softmax(dim=-1).gather(1, labels.long().unsqueeze(1)).squeeze(1)
    return probability, logits.argmax(dim=-1) == labels.long()


def probability_summary(probability: torch.Tensor) -> dict[str, Optional[float]]:
    """``median``, quartiles ``q1``/``q3``, ``mean`` and ``images`` of a set of probabilities."""
    if probability.numel() == 0:
        return {"median": None, "q1": None, "q3": None, "mean": None, "images": 0}
    p = probability.double()
    q1, median, q3 = torch.quantile(p, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    return {"median": median, "q1": q1, "q3": q3, "mean": float(p.mean()), "images": int(p.numel())}


def image_set_result(features: torch.Tensor, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """``probability`` (summary) and ``accuracy`` of one set of images."""
    probability, correct = class_probability(features, embeddings, labels)
    return {"probability": probability_summary(probability),
            "accuracy": float(correct.float().mean()) if len(correct) else None}


def target_from_median(median: float, floor: float, ceiling: float = MAX_TARGET_FROM_REAL) -> float:
    """A synthesis target probability from the real images' median, kept within ``[floor, ceiling]``."""
    return float(min(max(float(median), floor), ceiling))
