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


def _check_inputs(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    """``update``'s inputs, checked in the order a mistake is easiest to read."""
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ConfigError(f"logits and labels must be tensors, got {type(logits).__name__} and {type(labels).__name__}")
    if not logits.is_floating_point():
        raise ConfigError(f"logits must be a floating point tensor, got dtype {logits.dtype}")
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ConfigError(f"logits must have shape [batch, {num_classes}] (one column per class), "
                          f"got {list(logits.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ConfigError(f"labels must be an integer tensor of class indices, got dtype {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ConfigError(f"labels must have shape [{logits.shape[0]}] (one per row of logits), "
                          f"got {list(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ConfigError(f"labels must be in [0, {num_classes}), got values from {int(labels.min())} "
                          f"to {int(labels.max())}")


class ZeroShotAccuracy(Metric):
    """Top-1 zero-shot accuracy, overall and split into target and other classes.

    ``update(logits [B, C], labels [B])`` counts predictions; ``compute()`` returns
    :func:`split_accuracy`'s dict. Call ``compute`` on every rank (it is collective).

    Args:
        num_classes: number of classes of the classifier.
        target_labels: labels of the forgotten classes (empty: no split).
        validate_args: check each ``update``'s inputs (shape, dtype, label range; as torchmetrics'
            classification metrics do) and raise :class:`~lightning_unlearn.core.errors.ConfigError`
            saying what is wrong. The label-range check reads two numbers from the device.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confusion: torch.Tensor

    def __init__(self, num_classes: int, target_labels: Sequence[int] = (), validate_args: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        _positive_int_validation("num_classes", num_classes)
        bad = [label for label in target_labels if not 0 <= int(label) < num_classes]
        if bad:
            raise ConfigError(f"target_labels {bad} are outside [0, {num_classes})")
        self.num_classes = num_classes
        self.target_labels = [int(label) for label in target_labels]
        self.validate_args = validate_args
        self.add_state("confusion", default=torch.zeros(num_classes, num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count the arg-max prediction of each row of ``logits`` ``[B, num_classes]`` (floating
        point) against ``labels`` ``[B]`` (integers in ``[0, num_classes)``)."""
        if self.validate_args:
            _check_inputs(logits, labels, self.num_classes)
        pred = logits.argmax(dim=-1)
        flat = labels.to(torch.long) * self.num_classes + pred
        self.confusion += torch.bincount(flat, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def compute(self) -> dict[str, Optional[float]]:
        """``accuracy``, ``target``, ``other_classes`` and ``num_images``."""
        return split_accuracy(self.confusion.cpu(), self.target_labels)
