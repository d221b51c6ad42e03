"""Recovery probes (evaluation/probes.py): linear probe, relearning, paraphrases."""

from __future__ import annotations

import pytest
import torch

from lightning_unlearn.evaluation.features import DatasetFeatures
from lightning_unlearn.evaluation.probes import (
    linear_probe,
    nearest_class_mean_probe,
    paraphrase_result,
    relearn,
    stratified_folds,
)
from lightning_unlearn.evaluation.templates import split_from_features
from lightning_unlearn.maths.zeroshot import tokenize_classes

pytestmark = pytest.mark.usefixtures("one_thread")


def test_folds_deal_each_class_evenly():
    positive = torch.tensor([True] * 6 + [False] * 10)
    fold = stratified_folds(positive, 2, seed=0)
    assert int((fold[positive] == 0).sum()) == 3 and int((fold[~positive] == 0).sum()) == 5


def test_linear_probe_finds_a_separable_class_and_not_a_random_one():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(120, 16, generator=generator)
    positive = torch.zeros(120, dtype=torch.bool)
    positive[:20] = True
    separable = features.clone()
    separable[positive, 0] += 4.0  # the class differs along one direction
    found = linear_probe(separable, positive, seed=0)
    chance = linear_probe(features, positive, seed=0)
    assert found["balanced_accuracy"] > 0.9 and found["auroc"] > 0.95
    assert chance["balanced_accuracy"] < 0.75
    assert found["positives"] == 20 and found["images"] == 120


def test_linear_probe_needs_samples_of_both_classes():
    assert linear_probe(torch.randn(5, 3), torch.tensor([True, False, False, False, False]))["balanced_accuracy"] is None


def clustered(per_class: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes in 16 dimensions: class centres on the axes, Gaussian noise of std ``spread``."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(per_class)
    return torch.eye(16)[labels] + spread * torch.randn(len(labels), 16, generator=generator), labels


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_nearest_class_mean_separates_distinct_classes_and_not_mixed_ones(seed):
    train, train_labels = clustered(10, 0.1, seed)
    test, test_labels = clustered(25, 0.1, seed + 100)
    separable = nearest_class_mean_probe(train, train_labels, test, test_labels, [2])
    assert separable["balanced_accuracy"] > 0.95
    assert (separable["images"], separable["positives"], separable["classes"]) == (100, 25, 4)
    # the same features with labels drawn at random: the class means say nothing about the class
    generator = torch.Generator().manual_seed(seed)
    shuffled = nearest_class_mean_probe(train, train_labels[torch.randperm(40, generator=generator)], test,
                                        test_labels[torch.randperm(100, generator=generator)], [2])
    assert abs(shuffled["balanced_accuracy"] - 0.5) < 0.25


def test_nearest_class_mean_needs_both_groups():
    train, labels = clustered(3, 0.1, 0)
    assert nearest_class_mean_probe(train, labels, train[labels != 2], labels[labels != 2], [2])["balanced_accuracy"] is None
    assert nearest_class_mean_probe(train[labels != 2], labels[labels != 2], train, labels, [2])["balanced_accuracy"] is None


def test_paraphrase_replaces_only_the_class_row():
    classes = torch.eye(3)
    data = DatasetFeatures(torch.tensor([[1.0, 0.1, 0], [1.0, 0.1, 0], [0, 1.0, 0], [0, 0, 1.0]]),
                           torch.tensor([0, 0, 1, 2]))
    # a paraphrase pointing at class 2's direction: class 0's images go to class 1, class 2's to class 0
    scores = paraphrase_result(data, classes, 0, torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))
    assert scores[0] == {"target": 1.0, "other_classes": 1.0}
    assert scores[1]["target"] == 0.0 and scores[1]["other_classes"] == pytest.approx(0.5)
    assert split_from_features(data, classes, [0])["target"] == 1.0  # the embeddings given are untouched


def _relearn_inputs(tiny_clip):
    clip = tiny_clip("tiny-vit")
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 32, 32, generator=generator)
    tokens = tokenize_classes(clip.tokenizer, ["cat", "dog", "car"], ["a photo of a {}."])
    trainable = [name for name, _ in clip.model.named_parameters() if name.startswith("visual.")]
    return clip, images, tokens, trainable


def test_relearning_counts_steps_until_the_goal_and_leaves_the_model_alone(tiny_clip):
    clip, images, tokens, trainable = _relearn_inputs(tiny_clip)
    before = {k: v.clone() for k, v in clip.model.state_dict().items()}
    labels = torch.ones(4, dtype=torch.long)
    out = relearn(clip.model, trainable, images[:4], labels, tokens, images[4:], torch.ones(2, dtype=torch.long),
                  goal=1.0, steps=30, lr=1e-2, device=torch.device("cpu"))
    assert out["reached"] and out["steps_to_half"] == len(out["curve"]) - 1
    assert out["curve"][-1] >= 1.0 and all(v < 1.0 for v in out["curve"][:-1])
    assert all(torch.equal(before[k], v) for k, v in clip.model.state_dict().items())


def test_relearning_without_a_goal_reports_no_step_count(tiny_clip):
    clip, images, tokens, trainable = _relearn_inputs(tiny_clip)
    out = relearn(clip.model, trainable, images[:2], torch.ones(2, dtype=torch.long), tokens, images[2:4],
                  torch.ones(2, dtype=torch.long), goal=None, steps=2, lr=1e-3, device=torch.device("cpu"))
    assert out["steps_to_half"] is None and not out["reached"] and len(out["curve"]) == 3


def test_own_paraphrase_accuracy_counts_a_class_images_won_by_each_paraphrase():
    from lightning_unlearn.evaluation.probes import own_paraphrase_accuracy

    classes = torch.eye(3)
    # class 1's images: two along class 1, one leaning to class 2
    features = torch.tensor([[0, 1.0, 0], [0, 1.0, 0.2], [0, 0.4, 1.0], [1.0, 0, 0]])
    data = DatasetFeatures(features, torch.tensor([1, 1, 1, 0]))
    paraphrases = torch.nn.functional.normalize(torch.tensor([[0, 1.0, 0], [0, 0.6, 0.8], [1.0, 0, 0]]), dim=-1)
    scores = own_paraphrase_accuracy(data, classes, 1, paraphrases)
    # the class's own direction wins 2 of 3; a paraphrase between 1 and 2 beats class 2 on all three;
    # one pointing at class 0 wins none (class 0 scores as high)
    assert scores == pytest.approx([2 / 3, 1.0, 0.0])
    assert own_paraphrase_accuracy(data, classes, 2, paraphrases) == [None, None, None]
