"""Retrieval precision@k (the paper's Table 10 and Appendix H), with torchmetrics.

The database is every test image of every evaluation dataset. An image is relevant to a query
when it shows the query's class; classes are identified by name across datasets
(:func:`~lightning_unlearn.core.names.class_key`), so a class that two datasets share is one class.

- image from text: each class prompt of each dataset (its evaluation template) is a query;
- image from image: each test image of the forgotten classes is a query, and so is a seeded
  sample of the other images; a query image is never its own answer.

Precision@k of a query is the share of relevant images among its ``k`` most similar (cosine);
each figure is the mean over the queries of the forgotten classes (``target``) or of the other
classes (``other_classes``).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torchmetrics.retrieval import RetrievalPrecision

from lightning_unlearn.evaluation.features import DatasetFeatures
from lightning_unlearn.core.names import class_key
from lightning_unlearn.core.errors import ConfigError


def precision_at_k(
    similarity: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int], valid: Optional[torch.Tensor] = None
) -> dict[str, Optional[float]]:
    """Mean precision@k over the rows (queries) of ``similarity`` ``[Q, N]``.

    ``relevant`` ``[Q, N]`` marks the relevant database items of each query; ``valid`` (optional)
    marks the items each query may retrieve at all (others are left out, e.g. the query itself).
    Queries without any relevant item are skipped; no query at all gives None.
    """
    if similarity.shape != relevant.shape:
        raise ConfigError(f"similarity {tuple(similarity.shape)} and relevant {tuple(relevant.shape)} differ")
    num_queries, size = similarity.shape
    if num_queries == 0 or size == 0:
        return {f"p@{k}": None for k in ks}
    indexes = torch.arange(num_queries).unsqueeze(1).expand(num_queries, size)
    preds, target = similarity.float(), relevant.bool()
    if valid is not None:
        preds, target, indexes = preds[valid], target[valid], indexes[valid]
    else:
        preds, target, indexes = preds.reshape(-1), target.reshape(-1), indexes.reshape(-1)
    out: dict[str, Optional[float]] = {}
    for k in ks:
        # The features are already gathered on every rank: no second synchronisation.
        metric = RetrievalPrecision(top_k=int(k), empty_target_action="skip", sync_on_compute=False)
        metric.update(preds, target, indexes=indexes)
        out[f"p@{k}"] = float(metric.compute())
    return out


class RetrievalDatabase:
    """Every evaluation image's normalised feature, class identity and origin, concatenated.

    Args:
        features: dataset name -> its features.
        classnames: dataset name -> its class names (label order).
        targets: dataset name -> labels of the forgotten classes in it.
    """

    def __init__(self, features: Mapping[str, DatasetFeatures], classnames: Mapping[str, Sequence[str]],
                 targets: Mapping[str, Sequence[int]]) -> None:
        self.ids: dict[str, int] = {}  # class key -> integer identity
        self.target_ids: set[int] = set()
        parts, keys = [], []
        for name, data in features.items():
            names = classnames[name]
            ids = torch.tensor([self._id(c) for c in names], dtype=torch.long)
            self.target_ids |= {int(ids[label]) for label in targets.get(name, ())}
            parts.append(data.normalized)
            keys.append(ids[data.labels] if len(data) else torch.zeros(0, dtype=torch.long))
        self.features = torch.cat(parts) if parts else torch.zeros(0, 0)
        self.class_ids = torch.cat(keys) if keys else torch.zeros(0, dtype=torch.long)
        self.is_target = torch.isin(self.class_ids, torch.tensor(sorted(self.target_ids), dtype=torch.long))

    def _id(self, name: str) -> int:
        return self.ids.setdefault(class_key(name), len(self.ids))

    def class_id(self, name: str) -> int:
        """The identity of a class name (a new one if the database has no image of it)."""
        return self._id(name)

    def __len__(self) -> int:
        return len(self.class_ids)


def image_from_text(
    database: RetrievalDatabase, text_embeddings: Mapping[str, torch.Tensor], classnames: Mapping[str, Sequence[str]],
    ks: Sequence[int],
) -> dict[str, Any]:
    """Precision@k of retrieving images from each class prompt (``text_embeddings``: dataset ->
    normalised ``[C, D]`` under its evaluation template)."""
    queries, ids = [], []
    for name, embeddings in text_embeddings.items():
        queries.append(embeddings.float())
        ids += [database.class_id(c) for c in classnames[name]]
    query_ids = torch.tensor(ids, dtype=torch.long)
    similarity = torch.cat(queries) @ database.features.T
    relevant = query_ids.unsqueeze(1) == database.class_ids.unsqueeze(0)
    is_target = torch.isin(query_ids, torch.tensor(sorted(database.target_ids), dtype=torch.long))
    return {
        "target": precision_at_k(similarity[is_target], relevant[is_target], ks),
        "other_classes": precision_at_k(similarity[~is_target], relevant[~is_target], ks),
        "queries": {"target": int(is_target.sum()), "other_classes": int((~is_target).sum())},
    }


def image_queries(database: RetrievalDatabase, other_queries: int, seed: int) -> torch.Tensor:
    """Database indices of the image queries: every forgotten-class image, then a seeded sample
    of ``other_queries`` other images."""
    target = torch.nonzero(database.is_target).flatten()
    others = torch.nonzero(~database.is_target).flatten()
    generator = torch.Generator().manual_seed(seed)
    sample = others[torch.randperm(len(others), generator=generator)[:other_queries]]
    return torch.cat([target, sample.sort().values])


def image_from_image(database: RetrievalDatabase, queries: torch.Tensor, ks: Sequence[int]) -> dict[str, Any]:
    """Precision@k of retrieving images from each query image (``queries``: database indices)."""
    similarity = database.features[queries] @ database.features.T
    relevant = database.class_ids[queries].unsqueeze(1) == database.class_ids.unsqueeze(0)
    valid = torch.ones_like(relevant)
    valid[torch.arange(len(queries)), queries] = False  # an image is not its own answer
    is_target = database.is_target[queries]
    return {
        "target": precision_at_k(similarity[is_target], relevant[is_target], ks, valid[is_target]),
        "other_classes": precision_at_k(similarity[~is_target], relevant[~is_target], ks, valid[~is_target]),
        "queries": {"target": int(is_target.sum()), "other_classes": int((~is_target).sum())},
    }
