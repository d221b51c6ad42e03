"""Zero-shot accuracy split into forgotten and other classes, on torchmetrics.

One ``MulticlassConfusionMatrix`` per dataset holds everything: overall accuracy, the accuracy
on the forgotten classes' images and on the other classes' images are read off its diagonal and
row sums. Its state is a sum, so it reduces across DDP ranks exactly.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix


def _ratio(num: torch.Tensor, den: torch.Tensor) -> Optional[float]:
    return float(num / den) if float(den) > 0 else None


def split_accuracy(confusion: torch.Tensor, target_labels: Sequence[int]) -> dict[str, Optional[float]]:
    """Sample-weighted accuracies from a confusion matrix ``[C, C]`` (rows = true class).

    Returns ``accuracy`` (all images), ``target`` (images of ``target_labels``; None if there are
    none) and ``other_classes`` (all other images), plus ``num_images``.
    """
    confusion = confusion.to(torch.float64)
    correct, support = confusion.diagonal(), confusion.sum(dim=1)
    is_target = torch.zeros(len(support), dtype=torch.bool)
    is_target[list(target_labels)] = True
    return {
        "accuracy": _ratio(correct.sum(), support.sum()),
        "target": _ratio(correct[is_target].sum(), support[is_target].sum()) if target_labels else None,
        "other_classes": _ratio(correct[~is_target].sum(), support[~is_target].sum()),
        "num_images": int(support.sum()),
    }


class ZeroShotEvaluation(nn.Module):
    """Confusion matrices of several datasets; ``compute()`` gives per-dataset split accuracies.

    Args:
        num_classes: dataset name -> number of classes.
        target_labels: dataset name -> labels of the forgotten classes in that dataset.
    """

    def __init__(self, num_classes: dict[str, int], target_labels: dict[str, list[int]]) -> None:
        super().__init__()
        self.names = list(num_classes)
        self.target_labels = {name: list(target_labels.get(name, [])) for name in self.names}
        self.matrices = nn.ModuleList(MulticlassConfusionMatrix(num_classes[n]) for n in self.names)

    def update(self, dataset_index: int, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.matrices[dataset_index].update(logits.argmax(dim=-1), labels)

    def compute(self) -> dict[str, dict[str, Optional[float]]]:
        # compute() syncs across ranks: call it on every rank, never under a rank-zero guard.
        return {
            name: split_accuracy(matrix.compute().cpu(), self.target_labels[name])
            for name, matrix in zip(self.names, self.matrices)
        }

    def reset(self) -> None:
        for matrix in self.matrices:
            matrix.reset()
