"""Template robustness: zero-shot accuracy of every dataset under each evaluation template.

Pure functions of image features and class embeddings. Accuracies are counted exactly as
:class:`~lightning_unlearn.maths.metrics.ZeroShotAccuracy` counts them (a confusion matrix split into the
forgotten classes and the others), in chunks of the evaluation batch size.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from lightning_unlearn.evaluation.features import DatasetFeatures
from lightning_unlearn.maths.metrics import ZeroShotAccuracy
from lightning_unlearn.maths.zeroshot import class_embeddings, tokenize_classes, zero_shot_logits

#: The paper's Table 9 evaluation templates.
PAPER_TEMPLATES: tuple[str, ...] = (
    "We can see a {} in this image",
    "This is a representation of {}",
    "There is evidence of a {} in the picture",
)

Result = dict[str, Any]


@torch.no_grad()
def template_embeddings(
    encode_text: Callable[[torch.Tensor], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    template: str,
    device: torch.device,
) -> torch.Tensor:
    """Normalised class embeddings ``[C, D]`` of ``classnames`` under one template (CPU, float32)."""
    tokens = tokenize_classes(tokenizer, classnames, [template]).to(device)
    return class_embeddings(encode_text, tokens).float().cpu()


def split_from_features(
    data: DatasetFeatures, embeddings: torch.Tensor, target_labels: Sequence[int], chunk: int = 128
) -> dict[str, Optional[float]]:
    """``accuracy``, ``target``, ``other_classes``, ``num_images`` of zero-shot predictions.

    ``embeddings`` are the ``[C, D]`` normalised class embeddings; logits are computed ``chunk``
    images at a time (as the evaluation loop does, so the arithmetic is the same).
    """
    # The features are already gathered from every rank: count locally, no sync.
    metric = ZeroShotAccuracy(embeddings.shape[0], list(target_labels), sync_on_compute=False)
    for start in range(0, len(data), chunk):
        metric.update(zero_shot_logits(data.features[start : start + chunk], embeddings),
                      data.labels[start : start + chunk])
    return metric.compute()


def template_result(
    features: Mapping[str, DatasetFeatures],
    embeddings: Mapping[str, torch.Tensor],
    targets: Mapping[str, Sequence[int]],
    forget_dataset: Optional[str],
    templates_used: Mapping[str, str],
    chunk: int = 128,
) -> Result:
    """One template's figures: every dataset's split accuracy, and ``target``/``other_classes`` of
    the forgotten classes' dataset (None where there is none)."""
    datasets = {}
    for name, data in features.items():
        datasets[name] = {**split_from_features(data, embeddings[name], targets.get(name, ()), chunk),
                          "template": templates_used[name]}
    own = datasets.get(forget_dataset, {}) if forget_dataset else {}
    return {"target": own.get("target"), "other_classes": own.get("other_classes"), "datasets": datasets}


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    known = [float(v) for v in values if v is not None]
    return sum(known) / len(known) if known else None


def mean_result(results: Sequence[Result]) -> Result:
    """The mean of several :func:`template_result` figures (None values ignored)."""
    names = list(results[0]["datasets"]) if results else []
    datasets = {
        name: {key: _mean([r["datasets"][name][key] for r in results]) for key in ("accuracy", "target", "other_classes")}
        for name in names
    }
    return {"target": _mean([r["target"] for r in results]), "other_classes": _mean([r["other_classes"] for r in results]),
            "datasets": datasets}


def template_key(templates: Optional[Sequence[str]], dataset_templates: Mapping[str, str],
                 forget_dataset: Optional[str]) -> list[str]:
    """The report keys of the evaluated templates: the templates given, or (None) the forgotten
    classes' dataset's own evaluation template, which stands for "each dataset's own"."""
    if templates:
        return list(templates)
    name = forget_dataset if forget_dataset in dataset_templates else next(iter(dataset_templates), None)
    return [dataset_templates[name]] if name is not None else []
