"""Closed-form edits of a CLIP's final linear projections (pure functions, no Trainer).

The text tower of an open_clip CLIP ends in a linear map ``P``: pooled text feature ``h`` ->
embedding ``h P`` (``h @ text_projection`` for an ``nn.Parameter``, ``h W^T + b`` for an
``nn.Linear``; a bias is handled by augmenting ``h`` with a 1, so ``P`` is ``[W^T; b]``). This
module

- finds that map (:func:`locate_text_projection`), for open_clip's ``CLIP`` (top-level
  ``text_projection``) and ``CustomTextCLIP`` (``text.text_projection``);
- captures pooled features with the tower's own forward, the projection swapped for an identity
  (:func:`pooled_text_features`), batched, optionally trimmed to each batch's longest prompt
  (exact for causal towers), and cached on disk (:func:`cached_pooled_features`);
- solves the ridge edit in float64 (:func:`solve_ridge_edit`) and writes it back
  (:meth:`TextProjection.write`);
- implements the null-space projection of arXiv 2512.14137 (:func:`orthonormal_directions`,
  :func:`nullspace_project_text`, :func:`nullspace_project_image`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lightning_unlearn.core._validation import (
    _positive_int_validation,
    _positive_number_validation,
    _unit_interval_validation,
)
from lightning_unlearn.core.errors import ConfigError, IllConditionedError, UnsupportedModelError
from lightning_unlearn.core.io import atomic_path, cache_dir as default_cache_dir
from lightning_unlearn.clip.loading import eval_mode, tensors_fingerprint

#: Bump when what :func:`pooled_text_features` returns changes: old caches are then ignored.
FEATURE_CACHE_FORMAT = 1
#: Smallest eigenvalue / largest eigenvalue below which the ridge system is refused (float64 keeps
#: about 16 digits; beyond 1e12 fewer than 4 are left in the solution).
MIN_RCOND = 1e-12

Tokenizer = Callable[[list[str]], Tensor]


# --------------------------------------------------------------------------------------------
# Locating the projection
# --------------------------------------------------------------------------------------------
@dataclass
class TextProjection:
    """The final linear map of a model's text tower.

    Attributes:
        model: the whole open_clip model.
        tower: the module whose ``encode``/``forward`` ends in the projection (``model`` for
            ``CLIP``, ``model.text`` for ``CustomTextCLIP``).
        prefix: the tower's name prefix in ``model`` (``""`` or ``"text."``).
        kind: ``"parameter"`` (``h @ P``) or ``"linear"`` (``nn.Linear``, maybe with a bias).
    """

    model: nn.Module
    tower: nn.Module
    prefix: str
    kind: Literal["parameter", "linear"]

    @property
    def module(self) -> nn.Module | nn.Parameter:
        return self.tower.text_projection

    @property
    def name(self) -> str:
        """Parameter name in ``model`` (``text_projection`` or ``text.text_projection``)."""
        return f"{self.prefix}text_projection"

    @property
    def has_bias(self) -> bool:
        return self.kind == "linear" and self.module.bias is not None

    @property
    def in_features(self) -> int:
        """Width of the pooled feature ``h`` (without the bias's 1)."""
        return self.module.in_features if self.kind == "linear" else self.module.shape[0]

    @property
    def out_features(self) -> int:
        return self.module.out_features if self.kind == "linear" else self.module.shape[1]

    def parameter_names(self) -> list[str]:
        """Names (in ``model``) of every tensor the edit writes."""
        if self.kind == "parameter":
            return [self.name]
        return [f"{self.name}.weight"] + ([f"{self.name}.bias"] if self.has_bias else [])

    def matrix(self) -> Tensor:
        """``P`` in float64 on the CPU, ``[in (+1 for a bias), out]``, so that an embedding is ``[h, 1] @ P``."""
        if self.kind == "parameter":
            return self.module.detach().to("cpu", torch.float64).clone()
        weight = self.module.weight.detach().to("cpu", torch.float64).T
        if self.has_bias:
            weight = torch.cat([weight, self.module.bias.detach().to("cpu", torch.float64)[None]], dim=0)
        return weight.clone()

    def augment(self, features: Tensor) -> Tensor:
        """Pooled features as rows of the system: ``[h, 1]`` with a bias, ``h`` without (float64)."""
        features = features.to(torch.float64)
        if self.has_bias:
            features = torch.cat([features, features.new_ones(len(features), 1)], dim=1)
        return features

    @torch.no_grad()
    def write(self, matrix: Tensor) -> None:
        """Replace the projection by ``matrix`` (as returned by :meth:`matrix`), in place, in its dtype."""
        expected = (self.in_features + int(self.has_bias), self.out_features)
        if tuple(matrix.shape) != expected:
            raise ConfigError(f"new projection must have shape {expected}, got {tuple(matrix.shape)}")
        if not torch.isfinite(matrix).all():
            raise IllConditionedError("the new text projection holds NaN or inf values; nothing was written")
        if self.kind == "parameter":
            self.module.copy_(matrix.to(self.module.device, self.module.dtype))
            return
        weight = self.module.weight
        weight.copy_(matrix[: self.in_features].T.to(weight.device, weight.dtype))
        if self.has_bias:
            self.module.bias.copy_(matrix[self.in_features].to(weight.device, self.module.bias.dtype))

    def identity_overrides(self, prefix: str = "") -> dict[str, Tensor]:
        """Tensors that turn the projection into the identity under ``functional_call``."""
        ref = self.module if self.kind == "parameter" else self.module.weight
        eye = torch.eye(self.in_features, dtype=ref.dtype, device=ref.device)
        if self.kind == "parameter":
            return {f"{prefix}{self.name}": eye}
        out = {f"{prefix}{self.name}.weight": eye}
        if self.has_bias:
            out[f"{prefix}{self.name}.bias"] = torch.zeros(self.in_features, dtype=ref.dtype, device=ref.device)
        return out


def _describe(obj: object) -> str:
    if obj is None:
        return "None"
    if isinstance(obj, nn.Parameter):
        return f"an nn.Parameter of shape {tuple(obj.shape)}"
    return f"a {type(obj).__name__}"


def locate_text_projection(model: nn.Module) -> TextProjection:
    """The final linear projection of ``model``'s text tower.

    Raises:
        UnsupportedModelError: no open_clip text tower, or its ``text_projection`` is missing, an
            MLP, an identity or anything else than a 2-D ``nn.Parameter`` or an ``nn.Linear``.
    """
    if hasattr(model, "token_embedding") and hasattr(model, "encode_text"):  # open_clip CLIP
        tower, prefix = model, ""
    elif isinstance(getattr(model, "text", None), nn.Module):  # CustomTextCLIP (and relatives)
        tower, prefix = model.text, "text."
    else:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no open_clip text tower: expected CLIP's top-level `token_embedding`"
            " and `text_projection`, or CustomTextCLIP's `text` module"
        )
    proj = getattr(tower, "text_projection", None)
    if isinstance(proj, nn.Parameter) and proj.ndim == 2:
        kind: Literal["parameter", "linear"] = "parameter"
    elif isinstance(proj, nn.Linear):
        kind = "linear"
    else:
        others = [n for n in ("proj", "projection") if isinstance(getattr(tower, n, None), (nn.Module, nn.Parameter))]
        found = f" (it has `{prefix}{others[0]}`: {_describe(getattr(tower, others[0]))})" if others else ""
        raise UnsupportedModelError(
            f"the text tower of {type(model).__name__} ({type(tower).__name__}) has no final linear projection: "
            f"`{prefix}text_projection` is {_describe(proj)}{found}; the edit needs an nn.Parameter [width, dim] "
            "or an nn.Linear there"
        )
    return TextProjection(model=model, tower=tower, prefix=prefix, kind=kind)


# --------------------------------------------------------------------------------------------
# Pooled features
# --------------------------------------------------------------------------------------------
class _EncodeText(nn.Module):
    """``forward`` = ``model.encode_text``, so ``functional_call`` can swap tensors inside it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model.encode_text(tokens)


def _trim_plan(proj: TextProjection) -> Optional[tuple[str, Optional[int]]]:
    """``(pool_type, eos_id)`` if trailing tokens provably cannot change the pooled feature.

    True for a causal tower pooled at the end-of-text token (``argmax``/``eos``) with no appended
    class token: no position up to the pooled one attends to anything after it.
    """
    tower = proj.tower
    pool = getattr(tower, "text_pool_type", None) if proj.prefix == "" else getattr(tower, "pool_type", None)
    mask = getattr(tower, "attn_mask", None)
    pos = getattr(tower, "positional_embedding", None)
    if pool not in ("argmax", "eos") or getattr(tower, "cls_emb", None) is not None:
        return None
    if not isinstance(mask, Tensor) or mask.ndim != 2 or not isinstance(pos, Tensor) or pos.ndim != 2:
        return None
    eos = getattr(tower, "text_eos_id", None) if proj.prefix == "" else getattr(tower, "eos_id", None)
    if pool == "eos" and eos is None:
        return None
    return pool, eos


def _pooled_index(tokens: Tensor, pool: str, eos: Optional[int]) -> Tensor:
    if pool == "argmax":
        return tokens.argmax(dim=-1)
    return (tokens == eos).int().argmax(dim=-1)


@torch.no_grad()
def pooled_text_features(model: nn.Module, tokens: Tensor, batch_size: int = 256, trim: bool = True) -> Tensor:
    """Pooled text features ``[N, width]`` (float32, CPU): the input of the final projection.

    Runs the tower's own ``encode_text`` with the projection swapped for an identity
    (``torch.func.functional_call``), in eval mode, ``batch_size`` prompts at a time. With
    ``trim`` (and a causal tower pooled at the end-of-text token), prompts are sorted by length and
    each batch is cut after its longest prompt, with the positional embedding and causal mask cut
    to match: the result is the same, and short prompts in a 77-token context cost 3-6x less.
    """
    _positive_int_validation("batch_size", batch_size)
    proj = locate_text_projection(model)
    if tokens.ndim != 2:
        raise ConfigError(f"tokens must be a 2-D tensor [prompts, context], got shape {tuple(tokens.shape)}")
    device = next(model.parameters()).device
    wrapper = _EncodeText(model)
    overrides = proj.identity_overrides(prefix="model.")
    plan = _trim_plan(proj) if trim else None
    order = torch.arange(len(tokens))
    if plan is not None:
        lengths = _pooled_index(tokens, *plan) + 1
        order = torch.argsort(lengths, stable=True)
    out = torch.empty(len(tokens), proj.in_features, dtype=torch.float32)
    tower_prefix = f"model.{proj.prefix}"
    with eval_mode(model):
        for start in range(0, len(tokens), batch_size):
            rows = order[start : start + batch_size]
            batch = tokens[rows].to(device)
            call = dict(overrides)
            if plan is not None:
                length = int(_pooled_index(batch, *plan).max()) + 1
                batch = batch[:, :length]
                call[f"{tower_prefix}positional_embedding"] = proj.tower.positional_embedding[:length]
                call[f"{tower_prefix}attn_mask"] = proj.tower.attn_mask[:length, :length]
            out[rows] = functional_call(wrapper, call, (batch,), strict=False).float().cpu()
    return out


def text_tower_fingerprint(model: nn.Module) -> str:
    """A short hash of the text tower's tensors except the final projection (what pooled features depend on)."""
    proj = locate_text_projection(model)
    skip = tuple(proj.parameter_names())
    named = [(name, tensor) for name, tensor in sorted(proj.tower.state_dict(prefix=proj.prefix).items())
             if name not in skip and not (proj.prefix == "" and name.startswith(("visual.", "logit_")))]
    return tensors_fingerprint(named, salt=type(model).__name__)


def prompts_digest(prompts: Sequence[str]) -> str:
    """A hash of a prompt list (order matters)."""
    return hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest()[:20]


def feature_cache_path(model: nn.Module, prompts: Sequence[str], cache_dir: Optional[str | Path] = None) -> Path:
    """Where the pooled features of ``prompts`` under ``model``'s text tower are cached."""
    key = {"format": FEATURE_CACHE_FORMAT, "tower": text_tower_fingerprint(model), "prompts": prompts_digest(prompts)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir("text_features")
    return root / f"{digest}.pt"


def _load_features(path: Path, count: int, width: int) -> Optional[Tensor]:
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file: encode again
        return None
    if not isinstance(payload, dict) or payload.get("format") != FEATURE_CACHE_FORMAT:
        return None
    features = payload.get("features")
    if not isinstance(features, Tensor) or tuple(features.shape) != (count, width):
        return None
    return features


def cached_pooled_features(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    batch_size: int = 256,
    cache_dir: Optional[str | Path] = None,
    use_cache: bool = True,
) -> tuple[Tensor, bool]:
    """Pooled features of ``prompts`` (see :func:`pooled_text_features`), from the cache if there.

    The cache is keyed by the text tower's weights (projection excluded) and the prompt list and
    written atomically, so concurrent runs and crashes never leave a half-written file.

    Returns:
        ``(features [N, width] float32, whether they came from the cache)``.
    """
    proj = locate_text_projection(model)
    path = feature_cache_path(model, prompts, cache_dir) if use_cache else None
    if path is not None:
        cached = _load_features(path, len(prompts), proj.in_features)
        if cached is not None:
            return cached, True
    features = pooled_text_features(model, tokenizer(list(prompts)), batch_size=batch_size)
    if path is not None:
        with atomic_path(path) as tmp:
            torch.save({"format": FEATURE_CACHE_FORMAT, "features": features, "count": len(prompts)}, tmp)
    return features, False


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


@torch.no_grad()
def nullspace_project_text(model: nn.Module, basis: Tensor, alpha: float = 1.0) -> None:
    """Project the directions ``basis`` out of the text projection's outputs: ``P <- P (I - a U U^T)``."""
    proj = locate_text_projection(model)
    proj.write(proj.matrix() @ projector(basis.to("cpu"), alpha))


def image_projection_names(model: nn.Module) -> list[str]:
    """Names of the image tower's final projection tensors (``visual.proj`` of a ViT, the attention
    pool's ``c_proj`` weight and bias of a ModifiedResNet).

    Raises:
        UnsupportedModelError: the image tower has neither.
    """
    visual = getattr(model, "visual", None)
    if isinstance(getattr(visual, "proj", None), nn.Parameter) and visual.proj.ndim == 2:
        return ["visual.proj"]
    c_proj = getattr(getattr(visual, "attnpool", None), "c_proj", None)
    if isinstance(c_proj, nn.Linear):
        return ["visual.attnpool.c_proj.weight"] + (["visual.attnpool.c_proj.bias"] if c_proj.bias is not None else [])
    raise UnsupportedModelError(
        f"the image tower of {type(model).__name__} ({type(visual).__name__}) has no final linear projection: "
        "expected a ViT's `visual.proj` (nn.Parameter) or a ModifiedResNet's `visual.attnpool.c_proj` (nn.Linear)"
    )


@torch.no_grad()
def nullspace_project_image(model: nn.Module, basis: Tensor, alpha: float = 1.0) -> None:
    """Project the directions ``basis`` out of the image tower's outputs (its final projection)."""
    names = image_projection_names(model)
    params = dict(model.named_parameters())
    first = params[names[0]]
    Q = projector(basis.to("cpu"), alpha).to(first.device)
    if names == ["visual.proj"]:
        first.copy_((first.to(torch.float64) @ Q).to(first.dtype))  # x @ proj
        return
    first.copy_((Q @ first.to(torch.float64)).to(first.dtype))  # y = W x + b: project W's rows and b
    if len(names) > 1:
        bias = params[names[1]]
        bias.copy_((Q @ bias.to(torch.float64)).to(bias.dtype))
