"""ZeroShotAccuracy: split accuracy from exact counts, as a torchmetrics Metric."""

from __future__ import annotations

import pytest
import torch

from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.maths.metrics import ZeroShotAccuracy, split_accuracy


def one_hot_logits(predictions: list[int], num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(predictions), num_classes).float()


def test_split_into_target_and_other_classes():
    metric = ZeroShotAccuracy(num_classes=3, target_labels=[1])
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    metric.update(one_hot_logits([0, 2, 1, 0, 0, 2], 3), labels)
    result = metric.compute()
    assert result == {"accuracy": 3 / 6, "target": 1 / 3, "other_classes": 2 / 3, "num_images": 6}


def test_updates_accumulate_and_reset_clears():
    metric = ZeroShotAccuracy(num_classes=2)
    metric.update(one_hot_logits([0], 2), torch.tensor([0]))
    metric.update(one_hot_logits([0], 2), torch.tensor([1]))
    assert metric.compute()["accuracy"] == 0.5 and metric.compute()["target"] is None
    metric.reset()
    metric.update(one_hot_logits([1], 2), torch.tensor([1]))
    assert metric.compute() == {"accuracy": 1.0, "target": None, "other_classes": 1.0, "num_images": 1}


def test_split_accuracy_without_images_of_a_group_is_none():
    confusion = torch.tensor([[2, 0], [0, 0]])
    assert split_accuracy(confusion, [1]) == {"accuracy": 1.0, "target": None, "other_classes": 1.0, "num_images": 2}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_classes": 0}, "num_classes must be an int >= 1, got 0"),
    ({"num_classes": 3, "target_labels": [3]}, r"target_labels \[3\] are outside \[0, 3\)"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ZeroShotAccuracy(**kwargs)
