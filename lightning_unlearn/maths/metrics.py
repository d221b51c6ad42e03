"""Zero-shot accuracy split into forgotten and other classes, as a torchmetrics ``Metric``.

The state is one confusion matrix (rows = true class) summed across DDP ranks, so the overall
accuracy, the accuracy on the forgotten classes' images and on the other classes' images all come
from exact counts; ``reset`` and the DDP reduction come from torchmetrics.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torchmetrics import Metric

from lightning_unlearn.core._validation import _positive_int_validation
from lightning_unlearn.core.errors import ConfigError


def _ratio(num: torch.Tensor, den: torch.Tensor) -> Optional[float]:
    return float(num / den) if float(den) > 0 else None


def split_accuracy(confusion: torch.Tensor, target_labels: Sequence[int]) -> dict[str, Optional[float]]:
    """Sample-weighted accuracies from a confusion matrix ``[C, C]`` (rows = true class).

    Returns ``accuracy`` (all images), ``target`` (images of ``target_labels``; None without
    targets), ``other_classes`` (all other images) and ``num_images``.
    """
    confusion = confusion.to(torch.float64)
    correct, support = confusion.diagonal(), confusion.sum(dim=1)
    is_target = torch.zeros(len(support), dtype=torch.bool)
    is_target[list(target_labels)] = True
    return {
        "accuracy": _ratio(correct.sum(), support.sum()),
        "target": _ratio(correct[is_target].sum(), support[is_target].sum()) if len(target_labels) else None,
        "other_classes": _ratio(correct[~is_target].sum(), support[~is_target].sum()),
        "num_images": int(support.sum()),
    }


class ZeroShotAccuracy(Metric):
    """Top-1 zero-shot accuracy, overall and split into target and other classes.

    ``update(logits [B, C], labels [B])`` counts predictions; ``compute()`` returns
    :func:`split_accuracy`'s dict. Call ``compute`` on every rank (it is collective).

    Args:
        num_classes: number of classes of the classifier.
        target_labels: labels of the forgotten classes (empty: no split).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confusion: torch.Tensor

    def __init__(self, num_classes: int, target_labels: Sequence[int] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        _positive_int_validation("num_classes", num_classes)
        bad = [label for label in target_labels if not 0 <= int(label) < num_classes]
        if bad:
            raise ConfigError(f"target_labels {bad} are outside [0, {num_classes})")
        self.num_classes = num_classes
        self.target_labels = [int(label) for label in target_labels]
        self.add_state("confusion", default=torch.zeros(num_classes, num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count the arg-max prediction of each row of ``logits`` against ``labels``."""
        pred = logits.argmax(dim=-1)
        flat = labels.to(torch.long) * self.num_classes + pred
        self.confusion += torch.bincount(flat, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def compute(self) -> dict[str, Optional[float]]:
        """``accuracy``, ``target``, ``other_classes`` and ``num_images``."""
        return split_accuracy(self.confusion.cpu(), self.target_labels)
