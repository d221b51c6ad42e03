"""Retrieval precision@k (evaluation/retrieval.py) on hand-made feature sets."""

from __future__ import annotations

import pytest
import torch

from lightning_unlearn.evaluation.features import DatasetFeatures
from lightning_unlearn.evaluation.retrieval import (
    RetrievalDatabase,
    image_from_image,
    image_from_text,
    image_queries,
    precision_at_k,
)

E = torch.eye(4)


def test_precision_at_k_counts_relevant_items_in_the_top_k():
    similarity = torch.tensor([[0.9, 0.8, 0.1, 0.7], [0.1, 0.2, 0.9, 0.3]])
    relevant = torch.tensor([[True, False, False, True], [True, True, False, False]])
    # query 0: top-2 = items 0 (rel), 1 (not) -> 0.5; query 1: top-2 = items 2 (not), 3 (not) -> 0
    assert precision_at_k(similarity, relevant, [1, 2]) == {"p@1": pytest.approx(0.5), "p@2": pytest.approx(0.25)}


def test_precision_at_k_without_queries_is_none():
    assert precision_at_k(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.bool), [1, 5]) == {"p@1": None, "p@5": None}


def _database() -> RetrievalDatabase:
    # dataset "a": classes x, y (two images each); dataset "b": classes y (shared by name), z
    a = DatasetFeatures(torch.stack([E[0], E[0], E[1], E[1]]), torch.tensor([0, 0, 1, 1]))
    b = DatasetFeatures(torch.stack([E[1], E[2], E[2]]), torch.tensor([0, 1, 1]))
    return RetrievalDatabase({"a": a, "b": b}, {"a": ["x", "y"], "b": ["Y", "z"]}, {"a": (0,), "b": ()})


def test_image_from_text_separates_target_and_other_queries():
    db = _database()
    result = image_from_text(db, {"a": E[[0, 1]], "b": E[[1, 2]]}, {"a": ["x", "y"], "b": ["Y", "z"]}, [1, 3])
    assert result["queries"] == {"target": 1, "other_classes": 3}
    assert result["target"] == {"p@1": 1.0, "p@3": pytest.approx(2 / 3)}  # two images of x, one other at k=3
    # "y" is one class across datasets: its three images are all relevant to both y prompts
    assert result["other_classes"]["p@3"] == pytest.approx((1 + 1 + 2 / 3) / 3)


def test_image_from_image_never_returns_the_query_itself():
    # the nearest image to x's first image, apart from itself, is a y image: precision@1 is 0 (1 with itself)
    a = DatasetFeatures(torch.stack([E[0], E[3], 0.5 * E[0] + E[1], E[1]]), torch.tensor([0, 0, 1, 1]))
    db = RetrievalDatabase({"a": a}, {"a": ["x", "y"]}, {"a": (0,)})
    result = image_from_image(db, torch.tensor([0]), [1])
    assert result["target"]["p@1"] == pytest.approx(0.0)
    assert result["queries"] == {"target": 1, "other_classes": 0} and result["other_classes"]["p@1"] is None


def test_image_queries_take_every_target_image_and_a_seeded_sample():
    db = _database()
    first = image_queries(db, other_queries=2, seed=3)
    assert first[:2].tolist() == [0, 1]  # the target images
    assert len(first) == 4 and not db.is_target[first[2:]].any()
    assert torch.equal(first, image_queries(db, other_queries=2, seed=3))
