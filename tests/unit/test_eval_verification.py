"""Real-image verification (evaluation/verification.py): probabilities, summaries, targets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_unlearn.evaluation.verification import (
    MAX_TARGET_FROM_REAL,
    class_probability,
    image_set_result,
    probability_summary,
    target_from_median,
)
from lightning_unlearn.maths.zeroshot import LOGIT_SCALE


def test_class_probability_is_the_softmax_of_the_own_class():
    classes = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    features = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 1])
    probability, correct = class_probability(features, classes, labels)
    softmax = (LOGIT_SCALE * F.normalize(features, dim=-1) @ classes.T).softmax(-1)
    assert torch.allclose(probability, softmax[torch.arange(4), labels])
    assert torch.equal(correct, softmax.argmax(-1) == labels)


def test_probability_summary_gives_median_and_quartiles():
    summary = probability_summary(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]))
    assert summary["median"] == pytest.approx(0.3)
    assert (summary["q1"], summary["q3"]) == (pytest.approx(0.2), pytest.approx(0.4))
    assert summary["images"] == 5
    assert probability_summary(torch.zeros(0))["median"] is None


def test_image_set_result_accuracy():
    classes = torch.eye(2)
    result = image_set_result(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]), classes, torch.tensor([0, 1, 1]))
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["probability"]["images"] == 3


@pytest.mark.parametrize("median, floor, expected", [(1.0, 0.45, MAX_TARGET_FROM_REAL), (0.7, 0.45, 0.7), (0.2, 0.45, 0.45)])
def test_target_from_the_real_median_stays_in_range(median, floor, expected):
    assert target_from_median(median, floor) == pytest.approx(expected)
