"""Template robustness (evaluation/templates.py): accuracies from shared features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_unlearn.evaluation.features import DatasetFeatures, interleave_shards
from lightning_unlearn.evaluation.templates import mean_result, split_from_features, template_key, template_result
from lightning_unlearn.maths.metrics import ZeroShotAccuracy
from lightning_unlearn.maths.zeroshot import zero_shot_logits


def _data(num_classes: int = 5, per_class: int = 7, dim: int = 16, seed: int = 0) -> tuple[DatasetFeatures, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    classes = F.normalize(torch.randn(num_classes, dim, generator=generator), dim=-1)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    features = 3 * classes[labels] + torch.randn(len(labels), dim, generator=generator)  # noisy: some errors
    return DatasetFeatures(features, labels), classes


@pytest.mark.parametrize("chunk", [1, 4, 128])
def test_split_matches_the_zero_shot_metric(chunk):
    data, classes = _data()
    metric = ZeroShotAccuracy(5, [1, 3])
    metric.update(zero_shot_logits(data.features, classes), data.labels)
    expected = metric.compute()
    assert split_from_features(data, classes, [1, 3], chunk) == expected
    assert 0 < expected["accuracy"] < 1  # the noise makes the check meaningful


def test_template_result_reports_the_forget_dataset_target():
    objects, object_classes = _data(seed=1)
    textures, texture_classes = _data(num_classes=3, seed=2)
    result = template_result({"objects": objects, "textures": textures},
                             {"objects": object_classes, "textures": texture_classes},
                             {"objects": (2,), "textures": ()}, "objects", {"objects": "a {}.", "textures": "b {}."})
    own = split_from_features(objects, object_classes, [2])
    assert result["target"] == own["target"] and result["other_classes"] == own["other_classes"]
    assert result["datasets"]["textures"]["target"] is None
    assert result["datasets"]["textures"]["template"] == "b {}."


def test_mean_result_ignores_missing_values():
    a = {"target": 0.2, "other_classes": 0.8, "datasets": {"d": {"accuracy": 0.5, "target": None, "other_classes": 0.5}}}
    b = {"target": 0.4, "other_classes": 0.6, "datasets": {"d": {"accuracy": 0.7, "target": None, "other_classes": 0.7}}}
    mean = mean_result([a, b])
    assert mean["target"] == pytest.approx(0.3) and mean["other_classes"] == pytest.approx(0.7)
    assert mean["datasets"]["d"] == {"accuracy": pytest.approx(0.6), "target": None, "other_classes": pytest.approx(0.6)}


def test_template_keys_default_to_the_forget_datasets_own_template():
    own = {"objects": "a photo of a {}.", "textures": "a {} texture."}
    assert template_key(None, own, "textures") == ["a {} texture."]
    assert template_key(None, own, None) == ["a photo of a {}."]
    assert template_key(["x {}", "y {}"], own, "objects") == ["x {}", "y {}"]


def test_shards_are_put_back_in_dataset_order():
    features = torch.arange(7, dtype=torch.float32).unsqueeze(1)
    labels = torch.arange(7)
    shards = [(features[r::3], labels[r::3]) for r in range(3)]
    merged, merged_labels = interleave_shards(shards)
    assert torch.equal(merged, features) and torch.equal(merged_labels, labels)
