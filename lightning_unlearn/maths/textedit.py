"""The closed-form edits' linear algebra (pure functions of tensors: no model, no file, no Trainer).

The text tower of an open_clip CLIP ends in a linear map ``P``: pooled text feature ``h`` ->
embedding ``h P`` (a bias is handled by augmenting ``h`` with a 1). This module

- solves the ridge edit of ``P`` in float64 (:func:`solve_ridge_edit`), with the retain Gram and
  its class-relative term (:func:`weighted_gram`, :func:`retain_gram`), the forget directions and
  the class-free targets;
- gives the null-space projection of arXiv 2512.14137 as matrices (:func:`orthonormal_directions`,
  :func:`projector`);
- splits a class's paraphrases into those the edit forgets and those held out for evaluation
  (:func:`split_paraphrases`), and weighs forget rows by share (:func:`share_weights`).

Reading ``P`` out of a model and writing it back, and capturing pooled features, are the model's
side (:mod:`lightning_unlearn.clip.text_projection`); caching those features on disk is
:mod:`lightning_unlearn.clip.feature_cache`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from lightning_unlearn.core._validation import (
    _positive_int_validation,
    _positive_number_validation,
    _unit_interval_validation,
)
from lightning_unlearn.core.errors import ConfigError, IllConditionedError

#: Smallest eigenvalue / largest eigenvalue below which the ridge system is refused (float64 keeps
#: about 16 digits; beyond 1e12 fewer than 4 are left in the solution).
MIN_RCOND = 1e-12


# --------------------------------------------------------------------------------------------
# The ridge edit
# --------------------------------------------------------------------------------------------
def check_finite(name: str, tensor: Tensor) -> None:
    """Raise :class:`IllConditionedError` naming ``name`` if ``tensor`` holds NaN or inf."""
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise IllConditionedError(
            f"the edit's system is not finite: {name} holds {bad} NaN/inf values (of {tensor.numel()}); "
            "check the model's weights and the prompts"
        )


def _weights(name: str, weights: Optional[Tensor], count: int) -> Tensor:
    if weights is None:
        return torch.full((count,), 1.0 / count, dtype=torch.float64)
    weights = weights.to(torch.float64).flatten()
    if len(weights) != count:
        raise ConfigError(f"{name} must have one weight per row ({count}), got {len(weights)}")
    check_finite(name, weights)
    if (weights < 0).any() or weights.sum() <= 0:
        raise ConfigError(f"{name} must be >= 0 with a positive sum, got min {float(weights.min())}")
    return weights / weights.sum()


@dataclass(frozen=True)
class RidgeSolution:
    """The edited projection and what the solve saw.

    Attributes:
        matrix: ``P'`` in float64, the shape of ``P``.
        rcond: smallest / largest eigenvalue of the system matrix.
        seconds: time of the solve (system build included).
        exact: what keeping some rows exactly did (set by callers that restrict the change so).
    """

    matrix: Tensor
    rcond: float
    seconds: float
    exact: Optional[dict] = None


def solve_ridge_edit(
    P: Tensor,
    retain: Tensor,
    forget: Tensor,
    targets: Tensor,
    lam: float = 1.0,
    mu: float = 1e-3,
    retain_weights: Optional[Tensor] = None,
    forget_weights: Optional[Tensor] = None,
    directions: Optional[Tensor] = None,
    retain_groups: Optional[Tensor] = None,
    relative_weight: float = 0.0,
) -> RidgeSolution:
    """Solve, in float64,

    ``min_P'  mean_R w_i ||r_i P' - r_i P||^2 + c sum_g mean_{R_g} w_i ||(r_i - m_g)(P' - P)||^2
    + lam mean_F v_j ||f_j P' - z_j||^2 + mu s ||P' - P||^2``

    where each data term is a weighted mean over its rows (so ``lam`` does not depend on how many
    prompts a bank holds) and ``s = trace(G) / d`` is the retain term's mean energy per coordinate
    (so ``mu`` does not depend on the features' scale). The second, class-relative term (weight
    ``c = relative_weight``, groups ``retain_groups``) penalises how each retain prompt moves
    relative to the (weighted) mean ``m_g`` of its group, e.g. every class under one template:
    that relative move is what reorders classes at that template (see :func:`retain_gram`). With
    ``A = G + lam F^T V F + mu s I`` (``G`` the retain Gram) the normal equations give
    ``P' = P + A^{-1} lam F^T V (Z - F P)``: one SPD solve of size ``d x d`` (``d`` = the pooled
    width, +1 with a bias), whatever the number of prompts or classes.

    Args:
        P: the projection ``[d, D]`` (rows for ``h`` augmented with a 1 if it has a bias).
        retain: retain rows ``[n_r, d]`` (pooled features, augmented like ``P``).
        forget: forget rows ``[n_f, d]``.
        targets: embeddings the forget rows should get, ``[n_f, D]``.
        lam: weight of the forget term (>= 0; 0 returns ``P``).
        mu: ridge weight, relative to ``s`` (>= 0).
        retain_weights: per-row weights of the retain term (default: uniform).
        forget_weights: per-row weights of the forget term (default: uniform).
        directions: restrict the change to ``P' = P + U W`` for these input directions ``U``
            ``[d, k]`` (e.g. :func:`forget_directions`): ``W = (U^T A U)^{-1} U^T B``, a ``k x k``
            solve; None for the full ``d x d`` solution.
        retain_groups: a group id per retain row (``[n_r]`` integers) for the class-relative term.
        relative_weight: its weight ``c`` (>= 0; 0 leaves only the absolute retain term).

    Raises:
        ConfigError: an empty retain or forget set, mismatched shapes, a negative weight.
        IllConditionedError: a non-finite input, or a singular / ill-conditioned system
            (smallest/largest eigenvalue below ``MIN_RCOND``); the message suggests ``mu > 0``.
    """
    start = time.perf_counter()
    _positive_number_validation("lam", lam, allow_zero=True)
    _positive_number_validation("mu", mu, allow_zero=True)
    if retain.ndim != 2 or len(retain) == 0:
        raise ConfigError(
            f"the retain set is empty (retain features of shape {tuple(retain.shape)}): the edit needs prompts of "
            "classes to keep; give retain vocabularies or evaluation datasets with other classes"
        )
    if forget.ndim != 2 or len(forget) == 0:
        raise ConfigError(f"the forget set is empty (forget features of shape {tuple(forget.shape)})")
    d, out = P.shape
    if retain.shape[1] != d or forget.shape[1] != d:
        raise ConfigError(f"features must have {d} columns like P {tuple(P.shape)}; got retain {tuple(retain.shape)}, "
                          f"forget {tuple(forget.shape)}")
    if tuple(targets.shape) != (len(forget), out):
        raise ConfigError(f"targets must have shape {(len(forget), out)}, got {tuple(targets.shape)}")
    P64, R, F, Z = (t.to(torch.float64) for t in (P, retain, forget, targets))
    for name, tensor in (("the projection", P64), ("the retain features", R), ("the forget features", F),
                         ("the forget targets", Z)):
        check_finite(name, tensor)
    v = _weights("forget_weights", forget_weights, len(F))
    gram_r = retain_gram(R, retain_weights, retain_groups, relative_weight)
    scale = float(torch.trace(gram_r)) / d
    A = gram_r + lam * F.T @ (v[:, None] * F) + (mu * scale) * torch.eye(d, dtype=torch.float64)
    B = lam * F.T @ (v[:, None] * (Z - F @ P64))
    eig = torch.linalg.eigvalsh(A)
    rcond = float(eig[0] / eig[-1]) if float(eig[-1]) > 0 else 0.0
    if not rcond >= MIN_RCOND:
        rank_seen = int((eig > eig[-1].abs() * MIN_RCOND).sum()) if float(eig[-1]) > 0 else 0
        raise IllConditionedError(
            f"the edit's system is {'singular' if rcond <= 0 else 'ill-conditioned'} (smallest/largest eigenvalue "
            f"{rcond:.3g}, below {MIN_RCOND:g}): the retain and forget features span about {rank_seen} of {d} "
            f"dimensions with mu={mu!r}; set mu > 0 (e.g. 1e-3) or add retain prompts"
        )
    if directions is None:
        delta = torch.cholesky_solve(B, torch.linalg.cholesky(A))
    else:
        U = directions.to(torch.float64)
        if U.ndim != 2 or U.shape[0] != d or U.shape[1] == 0:
            raise ConfigError(f"directions must have shape [{d}, k>0], got {tuple(directions.shape)}")
        check_finite("the edit directions", U)
        delta = U @ torch.linalg.solve(U.T @ A @ U, U.T @ B)
    solution = P64 + delta
    check_finite("the solution", solution)
    return RidgeSolution(matrix=solution, rcond=rcond, seconds=time.perf_counter() - start)


def _scaled_ridge(gram: Tensor, mu: float) -> Tensor:
    d = gram.shape[0]
    return gram + (mu * float(torch.trace(gram)) / d) * torch.eye(d, dtype=torch.float64)


def weighted_gram(rows: Tensor, weights: Optional[Tensor] = None) -> Tensor:
    """``R^T W R`` in float64 with the weights normalised to sum 1 (uniform by default)."""
    rows = rows.to(torch.float64)
    w = _weights("weights", weights, len(rows))
    return rows.T @ (w[:, None] * rows)


def retain_gram(
    rows: Tensor,
    weights: Optional[Tensor] = None,
    groups: Optional[Tensor] = None,
    relative_weight: float = 0.0,
) -> Tensor:
    """The retain term's Gram matrix: ``R^T W R + c sum_g (R_g - m_g)^T W_g (R_g - m_g)``.

    ``W`` are the weights normalised to sum 1, ``m_g`` the weighted mean of the rows of group
    ``g`` and ``c = relative_weight``. For a change ``D`` of the projection, ``tr(D^T G D)`` is the
    weighted mean squared move of the retain embeddings plus ``c`` times their move *relative to
    their group's mean move*. With one group per template (every retained class under it), the
    second part is the move that reorders classes at that template: a move shared by all of them
    changes no zero-shot decision among them. Weighting it keeps the classifier's ranking at
    templates the edit never saw better than the absolute term alone (``docs/edit.md``).

    Raises:
        ConfigError: weights or groups that do not match the rows, or a negative ``relative_weight``.
    """
    _positive_number_validation("relative_weight", relative_weight, allow_zero=True)
    rows = rows.to(torch.float64)
    w = _weights("retain_weights", weights, len(rows))
    gram = weighted_gram(rows, w)
    if relative_weight == 0:
        return gram
    if groups is None:
        raise ConfigError("relative_weight > 0 needs retain groups (a group id per retain row)")
    groups = torch.as_tensor(groups).flatten()
    if len(groups) != len(rows) or groups.dtype.is_floating_point:
        raise ConfigError(f"retain groups must be {len(rows)} integer ids, got {tuple(groups.shape)} {groups.dtype}")
    ids, index = torch.unique(groups, return_inverse=True)
    mass = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, index, w)
    means = torch.zeros(len(ids), rows.shape[1], dtype=torch.float64).index_add_(0, index, w[:, None] * rows)
    centred = rows - means[index] / mass[index, None].clamp_min(1e-300)
    return gram + float(relative_weight) * (centred.T @ (w[:, None] * centred))


def forget_directions(
    retain: Tensor,
    forget_groups: Sequence[Tensor],
    per_class: int = 2,
    mu: float = 1e-3,
    retain_weights: Optional[Tensor] = None,
    retain_groups: Optional[Tensor] = None,
    relative_weight: float = 0.0,
) -> Tensor:
    """Input directions along which each forgotten class's prompts differ most from the retain prompts.

    For each group of forget rows ``F_c`` (one forgotten class under many templates), the top
    ``per_class`` generalised eigenvectors of ``(F_c^T F_c / n, G + mu s I)`` (``G`` from
    :func:`retain_gram`, with the same groups and ``relative_weight`` as the solve): the directions
    ``u`` maximising the forget energy ``mean (f u)^2`` per unit of retain energy ``u^T G u``.
    An edit that reads only these directions moves every prompt by ``(h u) w``: a lot for the
    forgotten class in any template, little for the others. Returns an orthonormal basis
    ``[d, k]`` of their span (the restricted solve depends on the span only).
    """
    _positive_int_validation("per_class", per_class)
    _positive_number_validation("mu", mu, allow_zero=True)
    if not forget_groups:
        raise ConfigError("forget_directions needs at least one group of forget rows")
    gram = _scaled_ridge(retain_gram(retain, retain_weights, retain_groups, relative_weight), mu)
    eig = torch.linalg.eigvalsh(gram)
    if not float(eig[0]) > float(eig[-1]) * MIN_RCOND:
        raise IllConditionedError(
            f"the retain features' Gram matrix is singular (smallest/largest eigenvalue "
            f"{float(eig[0] / eig[-1]) if float(eig[-1]) > 0 else 0.0:.3g}) with mu={mu!r}; set mu > 0 (e.g. 1e-3)"
        )
    chol = torch.linalg.cholesky(gram)
    columns = []
    for group in forget_groups:
        rows = group.to(torch.float64)
        inner = torch.linalg.solve_triangular(chol, rows.T, upper=False)  # L^{-1} F^T
        _, vecs = torch.linalg.eigh(inner @ inner.T / len(rows))
        top = vecs[:, -min(per_class, vecs.shape[1]):]
        columns.append(torch.linalg.solve_triangular(chol.T, top, upper=True))
    basis, _ = torch.linalg.qr(torch.cat(columns, dim=1))
    return basis


def null_space_basis(rows: Tensor, rtol: float = 1e-8) -> Tensor:
    """An orthonormal basis ``[d, d - r]`` of the inputs ``u`` with ``rows @ u = 0`` (``r`` = the
    rows' numerical rank, singular values below ``rtol`` times the largest dropped): a change
    ``P' = P + U W`` with ``U`` in it leaves every one of ``rows @ P`` exactly as it was."""
    rows = rows.to(torch.float64)
    d = rows.shape[1]
    if len(rows) == 0:
        return torch.eye(d, dtype=torch.float64)
    _, sing, vh = torch.linalg.svd(rows, full_matrices=True)
    rank = int((sing > sing[0] * rtol).sum()) if float(sing[0]) > 0 else 0
    return vh[rank:].T.contiguous()


def class_basis(embeddings: Tensor, max_dim: Optional[int] = None) -> Tensor:
    """An orthonormal basis ``[D, k]`` of the span of class embeddings ``[C, D]`` (rows normalised).

    With more classes than ``max_dim`` (default: half the embedding width) the leading
    ``max_dim`` principal directions are kept, so a neutral direction outside the span is left.
    """
    emb = torch.nn.functional.normalize(embeddings.to(torch.float64), dim=-1)
    limit = max_dim if max_dim is not None else emb.shape[1] // 2
    u, s, _ = torch.linalg.svd(emb.T, full_matrices=False)
    keep = int(min(limit, int((s > s[0] * 1e-6).sum())))
    return u[:, :keep]


def class_free_targets(originals: Tensor, neutrals: Tensor, basis: Tensor) -> Tensor:
    """Targets for forget prompts: each neutral embedding without any class content.

    Each row of ``neutrals`` (the template-matched neutral prompt, e.g. "a photo of a thing.")
    loses its components along the class embeddings (``basis``, see :func:`class_basis`) and along
    its own forget prompt's original embedding, and gets the original's norm. The forgotten
    prompt then points where no class of the vocabularies points (images of the class lose it),
    and, unlike a raw neutral prompt, which may happen to sit near some class, it attracts none.

    Raises:
        IllConditionedError: a neutral embedding lies entirely in the class span.
    """
    orig = originals.to(torch.float64)
    free = neutrals.to(torch.float64)
    free = free - (free @ basis) @ basis.T
    # the part of each original outside the class span, so that removing it keeps `free` out of the span
    rest = orig - (orig @ basis) @ basis.T
    unit = rest / rest.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    free = free - (free * unit).sum(-1, keepdim=True) * unit
    norms = free.norm(dim=-1, keepdim=True)
    if not bool((norms > 1e-9 * orig.norm(dim=-1, keepdim=True)).all()):
        raise IllConditionedError(
            "a neutral prompt's embedding lies in the span of the class embeddings: no class-free target is left; "
            "use target='neutral' or another neutral word"
        )
    return free / norms * orig.norm(dim=-1, keepdim=True)


def cosine_rows(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity of two ``[N, D]`` tensors (float64)."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-300)


# --------------------------------------------------------------------------------------------
# Paraphrases in the forget bank
# --------------------------------------------------------------------------------------------
def split_paraphrases(texts: Sequence[str], held_out: int, seed: int = 0, key: str = "") -> tuple[list[str], list[str]]:
    """``(bank, held_out)``: ``texts`` split into those an edit may forget and ``held_out`` of them
    it must never see (the evaluation measures the concept on those).

    The split is deterministic and depends on each text alone (a SHA-256 of ``seed``, ``key``,
    e.g. the class name, and the text): adding, removing or reordering other paraphrases does not
    move a text from one side to the other unless it changes which ones rank first. Both lists
    keep the order of ``texts``; repeats are dropped.

    Raises:
        ConfigError: ``held_out`` is negative, or leaves no text for the bank.
    """
    _positive_int_validation("held_out", held_out, allow_zero=True)
    unique = list(dict.fromkeys(texts))
    if held_out >= len(unique):
        raise ConfigError(
            f"held_out={held_out} paraphrases of {key or 'a class'!r} leave none of its {len(unique)} for the forget "
            f"bank; give more paraphrases or hold out fewer (at most {len(unique) - 1})"
        )

    def rank(text: str) -> str:
        return hashlib.sha256(f"{seed}\x00{key}\x00{text}".encode("utf-8")).hexdigest()

    held = set(sorted(unique, key=rank)[:held_out])
    return [t for t in unique if t not in held], [t for t in unique if t in held]


def share_weights(groups: Sequence[Sequence[int]], shared: Sequence[Sequence[int]], share: float, count: int) -> Tensor:
    """Row weights ``[count]`` (sum 1): each group (a forgotten class's template rows) and its
    ``shared`` rows (the same class's paraphrases) weigh the same in total; within a class, the
    ``shared`` rows hold ``share`` of its weight and the group the rest, each row of a part alike.
    A class without shared rows gives its group all of its weight.

    Raises:
        ConfigError: ``share`` outside [0, 1), or groups that do not cover ``count`` rows once.
    """
    _unit_interval_validation("share", share, open_high=True)
    if len(groups) != len(shared) or not groups:
        raise ConfigError(f"share_weights needs one list of shared rows per group, got {len(groups)} and {len(shared)}")
    weights = torch.zeros(count, dtype=torch.float64)
    seen = torch.zeros(count, dtype=torch.long)
    for own, extra in zip(groups, shared):
        part = share if len(extra) else 0.0
        for rows, mass in ((own, 1.0 - part), (extra, part)):
            if len(rows):
                index = torch.as_tensor(list(rows), dtype=torch.long)
                weights[index] = mass / len(rows) / len(groups)
                seen[index] += 1
    if not bool((seen == 1).all()):
        raise ConfigError(f"share_weights: the groups must cover each of the {count} rows exactly once")
    return weights


# --------------------------------------------------------------------------------------------
# Null-space projection (arXiv 2512.14137)
# --------------------------------------------------------------------------------------------
def orthonormal_directions(embeddings: Sequence[Tensor], per_class: int = 1) -> Tensor:
    """An orthonormal basis ``[D, k]`` of the directions spanned by each class's text embeddings.

    Args:
        embeddings: per class, its embeddings ``[T, D]`` (e.g. under several templates).
        per_class: leading (uncentred) singular directions kept per class; the first is close to
            the class's mean embedding.
    """
    _positive_int_validation("per_class", per_class)
    if not embeddings:
        raise ConfigError("no target embeddings: name at least one class")
    columns = []
    for emb in embeddings:
        emb = torch.nn.functional.normalize(emb.to(torch.float64), dim=-1)
        _, _, vh = torch.linalg.svd(emb, full_matrices=False)
        columns.append(vh[:per_class].T)
    basis, _ = torch.linalg.qr(torch.cat(columns, dim=1))
    return basis


def projector(basis: Tensor, alpha: float = 1.0) -> Tensor:
    """``I - alpha U U^T`` (float64) for an orthonormal ``U`` ``[D, k]``; ``alpha`` in [0, 1]."""
    _unit_interval_validation("alpha", alpha)
    dim = basis.shape[0]
    return torch.eye(dim, dtype=torch.float64) - alpha * basis @ basis.T
