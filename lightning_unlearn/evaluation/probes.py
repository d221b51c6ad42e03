"""Recovery probes: is the class gone, or only hidden? (Beyond the paper.)

- :func:`linear_probe`: a logistic-regression probe on frozen image features, the forgotten
  classes against the rest, cross-validated; a balanced accuracy near 1 after unlearning means the
  image tower still separates the class, whatever the zero-shot head says.
- :func:`nearest_class_mean_probe`: every class's mean image feature from a non-test split, each
  test image given the class of the nearest mean; the balanced accuracy of "a forgotten class"
  against the rest says whether the image features still place the class apart, with no training.
- :func:`relearn`: fine-tune a copy of the model on a few real images of the class and count the
  steps until its accuracy is back to a goal (half of what it was before unlearning). A method
  that only hides the class comes back in a few steps.
- :func:`paraphrase_result`: zero-shot accuracy with the class's prompt replaced by paraphrases
  (synonyms, descriptions); :func:`own_paraphrase_accuracy`: the same for a class's own images
  only, many paraphrases at once (the retained classes, each named by its paraphrases).
"""

from __future__ import annotations

import copy
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import binary_auroc

from lightning_unlearn.evaluation.features import DatasetFeatures
from lightning_unlearn.evaluation.templates import split_from_features
from lightning_unlearn.maths.zeroshot import class_embeddings, zero_shot_logits


# ------------------------------------------------------------------------------ linear probe
def stratified_folds(positive: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """A fold index ``[N]`` per sample: each class is shuffled (seeded) and dealt out in turn."""
    generator = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(positive), dtype=torch.long)
    for members in (torch.nonzero(positive).flatten(), torch.nonzero(~positive).flatten()):
        order = members[torch.randperm(len(members), generator=generator)]
        fold[order] = torch.arange(len(order)) % folds
    return fold


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, max_iter: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced, L2-regularised logistic regression by L-BFGS; returns ``(weights [D], bias)``.

    ``x`` ``[n, D]`` (standardised), ``y`` ``[n]`` in {0, 1}. Each class weighs half of the loss,
    so a rare forgotten class is not ignored.
    """
    x, y = x.double(), y.double()
    positives = y.sum().clamp_min(1)
    negatives = (1 - y).sum().clamp_min(1)
    sample_weight = torch.where(y > 0, 0.5 / positives, 0.5 / negatives)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        losses = F.binary_cross_entropy_with_logits(x @ w + b, y, reduction="none")
        loss = (sample_weight * losses).sum() + l2 * (w @ w)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return w.detach(), b.detach()


def linear_probe(features: torch.Tensor, positive: torch.Tensor, folds: int = 2, seed: int = 0,
                 l2: float = 1e-3, max_iter: int = 100) -> dict[str, Any]:
    """Cross-validated linear separability of ``positive`` samples from the rest.

    Returns ``balanced_accuracy`` (mean of the true-positive and true-negative rates of held-out
    predictions: 0.5 is chance), ``auroc`` of the held-out scores, ``images`` and ``positives``.
    None where a class has fewer samples than ``folds``.
    """
    positive = positive.bool()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    result: dict[str, Any] = {"balanced_accuracy": None, "auroc": None, "images": len(positive), "positives": n_pos}
    if min(n_pos, n_neg) < folds:
        return result
    x = F.normalize(features.double(), dim=-1)
    fold = stratified_folds(positive, folds, seed)
    scores = torch.zeros(len(x), dtype=torch.float64)
    for k in range(folds):
        train, test = fold != k, fold == k
        mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
        w, b = fit_logistic((x[train] - mean) / std, positive[train].double(), l2, max_iter)
        scores[test] = ((x[test] - mean) / std) @ w + b
    predicted = scores > 0
    tpr = float((predicted & positive).sum()) / n_pos
    tnr = float((~predicted & ~positive).sum()) / n_neg
    result["balanced_accuracy"] = 0.5 * (tpr + tnr)
    result["auroc"] = float(binary_auroc(scores.float(), positive.long()))
    return result


# ------------------------------------------------------------------------------ nearest class mean
def nearest_class_mean_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                             test_labels: torch.Tensor, targets: Sequence[int]) -> dict[str, Any]:
    """Balanced accuracy of the forgotten classes against the rest by nearest class mean.

    Each class of ``train_labels`` gets the mean of its L2-normalised ``train_features`` (a
    non-test split); each test image goes to the class whose mean is nearest in cosine; a
    prediction is positive when that class is one of ``targets``. Returns ``balanced_accuracy``
    (mean of the true-positive and true-negative rates: 0.5 is chance; None without positives or
    negatives among the test images, or without a training image of a target), ``images`` and
    ``positives`` (test images), ``classes`` (class means).
    """
    wanted = torch.tensor(list(targets), dtype=torch.long)
    positive = torch.isin(test_labels.long(), wanted)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    classes = torch.unique(train_labels.long())
    result: dict[str, Any] = {"balanced_accuracy": None, "images": len(test_labels), "positives": n_pos,
                              "classes": len(classes)}
    if not n_pos or not n_neg or not bool(torch.isin(wanted, classes).any()):
        return result
    train = F.normalize(train_features.double(), dim=-1)
    means = F.normalize(torch.stack([train[train_labels.long() == c].mean(0) for c in classes]), dim=-1)
    nearest = classes[(F.normalize(test_features.double(), dim=-1) @ means.T).argmax(dim=-1)]
    predicted = torch.isin(nearest, wanted)
    tpr = float((predicted & positive).sum()) / n_pos
    tnr = float((~predicted & ~positive).sum()) / n_neg
    result["balanced_accuracy"] = 0.5 * (tpr + tnr)
    return result


# ------------------------------------------------------------------------------ relearning
def relearn(
    model: nn.Module,
    trainable: Sequence[str],
    images: torch.Tensor,
    labels: torch.Tensor,
    tokens: torch.Tensor,
    eval_images: torch.Tensor,
    eval_labels: torch.Tensor,
    goal: Optional[float],
    steps: int,
    lr: float,
    device: torch.device,
) -> dict[str, Any]:
    """Fine-tune a copy of ``model`` on real images of the forgotten classes until their test
    accuracy reaches ``goal``.

    Each step is one Adam step on the cross-entropy of the zero-shot logits of ``images`` (all at
    once) against ``labels``, over the classes of ``tokens`` ``[C, T, L]``; only the parameters
    named in ``trainable`` change (BatchNorm statistics and every other tensor stay as they are).
    After each step the zero-shot accuracy of ``eval_images`` (test images of the forgotten
    classes, labels ``eval_labels``) is measured. ``model`` itself is not changed.

    Returns ``curve`` (accuracy after 0, 1, ... steps; it ends where the goal is reached),
    ``steps_to_half`` (the first step count whose accuracy is at least ``goal``; None if not
    reached within ``steps``, or without a goal), ``reached`` and ``goal``.
    """
    twin = copy.deepcopy(model).to(device).eval()
    wanted = set(trainable)
    params = []
    for name, param in twin.named_parameters():
        param.requires_grad_(name in wanted)
        if name in wanted:
            params.append(param)
    tokens, images, labels = tokens.to(device), images.to(device), labels.to(device).long()
    eval_images, eval_labels = eval_images.to(device), eval_labels.to(device).long()

    @torch.no_grad()
    def accuracy() -> float:
        embeddings = class_embeddings(twin.encode_text, tokens)
        correct = zero_shot_logits(twin.encode_image(eval_images), embeddings).argmax(dim=-1) == eval_labels
        return float(correct.float().mean())

    curve = [accuracy()]
    reached_at = 0 if goal is not None and curve[0] >= goal else None
    if params:
        optimizer = torch.optim.Adam(params, lr=lr)
        with torch.enable_grad():
            for step in range(1, steps + 1):
                if reached_at is not None:
                    break
                optimizer.zero_grad(set_to_none=True)
                logits = zero_shot_logits(twin.encode_image(images), class_embeddings(twin.encode_text, tokens))
                F.cross_entropy(logits, labels).backward()
                optimizer.step()
                curve.append(accuracy())
                if goal is not None and curve[-1] >= goal:
                    reached_at = step
    del twin
    return {"steps_to_half": reached_at, "reached": reached_at is not None, "goal": goal, "curve": curve}


# ------------------------------------------------------------------------------ paraphrases
def paraphrase_result(data: DatasetFeatures, embeddings: torch.Tensor, label: int,
                      paraphrases: torch.Tensor, chunk: int = 128) -> list[dict[str, Optional[float]]]:
    """For each paraphrase embedding (``[P, D]``, normalised), the zero-shot ``target`` accuracy
    on class ``label``'s images and ``other_classes`` accuracy, with that class's row of
    ``embeddings`` replaced by the paraphrase."""
    out = []
    for row in paraphrases:
        swapped = embeddings.clone()
        swapped[label] = row
        split = split_from_features(data, swapped, [label], chunk)
        out.append({"target": split["target"], "other_classes": split["other_classes"]})
    return out


def own_paraphrase_accuracy(data: DatasetFeatures, embeddings: torch.Tensor, label: int,
                            paraphrases: torch.Tensor) -> list[Optional[float]]:
    """For each paraphrase embedding (``[P, D]``, normalised), the zero-shot accuracy on class
    ``label``'s images with that class's row of ``embeddings`` replaced by the paraphrase (the
    other rows as they are): an image counts when the paraphrase scores above every other class.
    None for every paraphrase when the class has no image."""
    mine = data.labels == label
    if not bool(mine.any()):
        return [None] * len(paraphrases)
    images = F.normalize(data.features[mine].float(), dim=-1)
    others = images @ embeddings.float().T
    others[:, label] = -float("inf")
    best_other = others.max(dim=1).values  # [n]
    correct = (images @ paraphrases.float().T) > best_other[:, None]  # [n, P]
    return [float(v) for v in correct.float().mean(dim=0)]
