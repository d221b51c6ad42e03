"""A CLIP's final linear projections, read and written; pooled text features captured.

- :func:`locate_text_projection` finds the text tower's final map ``P`` for open_clip's ``CLIP``
  (top-level ``text_projection``), ``CustomTextCLIP`` (``text.text_projection``) and a Hugging
  Face text tower (``text.proj``, open_clip's ``hf_proj_type: linear``), as an ``nn.Parameter``
  (``h @ P``) or an ``nn.Linear`` (``h W^T + b``, read as ``[W^T; b]``);
- :func:`pooled_text_features` runs the tower's own forward with the projection swapped for an
  identity, batched, optionally trimmed to each batch's longest prompt (exact for causal towers);
- :func:`nullspace_project_text` / :func:`nullspace_project_image` write a projector
  (:func:`~lightning_unlearn.maths.textedit.projector`) into the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lightning_unlearn.clip.loading import eval_mode, hf_text_tower
from lightning_unlearn.core._validation import _positive_int_validation
from lightning_unlearn.core.errors import ConfigError, IllConditionedError, UnsupportedModelError
from lightning_unlearn.maths.textedit import projector


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
        attribute: the projection's name in the tower (``text_projection``; ``proj`` in a Hugging
            Face tower).
    """

    model: nn.Module
    tower: nn.Module
    prefix: str
    kind: Literal["parameter", "linear"]
    attribute: str = "text_projection"

    @property
    def module(self) -> nn.Module | nn.Parameter:
        return getattr(self.tower, self.attribute)

    @property
    def name(self) -> str:
        """Name in ``model`` (``text_projection``, ``text.text_projection`` or ``text.proj``)."""
        return f"{self.prefix}{self.attribute}"

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


def _hf_projection_error(model: nn.Module, tower: nn.Module) -> UnsupportedModelError:
    proj = getattr(tower, "proj", None)
    if isinstance(proj, nn.Sequential):
        what = (f"an MLP ({' -> '.join(type(m).__name__ for m in proj)}: open_clip's hf_proj_type 'mlp'), which no "
                "linear map can be edited into")
    elif isinstance(proj, nn.Identity):
        what = "an identity (no hf_proj_type and a tower as wide as the embedding): there is no projection to edit"
    else:
        what = _describe(proj)
    return UnsupportedModelError(
        f"the Hugging Face text tower of {type(model).__name__} ({type(tower.transformer).__name__}) has no final "
        f"linear projection: `text.proj` is {what}; the edit and nullspace support hf_proj_type 'linear' "
        "(an nn.Linear), and open_clip's own text towers (`text_projection`)"
    )


def locate_text_projection(model: nn.Module) -> TextProjection:
    """The final linear projection of ``model``'s text tower.

    Raises:
        UnsupportedModelError: no open_clip text tower, or its ``text_projection`` is missing, an
            MLP, an identity or anything else than a 2-D ``nn.Parameter`` or an ``nn.Linear``;
            a Hugging Face tower whose ``proj`` is not an ``nn.Linear`` (``hf_proj_type`` ``mlp``,
            or none).
    """
    hf_tower = hf_text_tower(model)
    if hf_tower is not None:  # open_clip's HFTextEncoder: pooled output -> `proj`
        if not isinstance(hf_tower.proj, nn.Linear):
            raise _hf_projection_error(model, hf_tower)
        return TextProjection(model=model, tower=hf_tower, prefix="text.", kind="linear", attribute="proj")
    if hasattr(model, "token_embedding") and hasattr(model, "encode_text"):  # open_clip CLIP
        tower, prefix = model, ""
    elif isinstance(getattr(model, "text", None), nn.Module):  # CustomTextCLIP (and relatives)
        tower, prefix = model.text, "text."
    else:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no open_clip text tower: expected CLIP's top-level `token_embedding`"
            " and `text_projection`, CustomTextCLIP's `text` module or a Hugging Face text tower"
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


def _hf_padding(proj: TextProjection, tokens: Tensor) -> Optional[Tensor]:
    """Each prompt's length without its padding, if ``proj`` is a Hugging Face tower's and every
    prompt is padded on the right with the tower's pad id (else None).

    Such a tower masks its padding out of attention and pooling (open_clip's ``HFTextEncoder``
    builds the mask from ``config.pad_token_id``) and numbers positions from the left, so cutting
    trailing padding leaves every pooled feature as it was (up to float rounding).
    """
    if proj.attribute != "proj":
        return None
    pad = getattr(getattr(proj.tower, "config", None), "pad_token_id", None)
    if pad is None:
        return None
    real = tokens != pad
    lengths = real.sum(dim=1)
    if not torch.equal(real, torch.arange(tokens.shape[1]) < lengths[:, None]):  # a pad inside, or on the left
        return None
    return lengths.clamp(min=1)


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
    to match: the result is the same, and short prompts in a 77-token context cost 3-6x less. A
    Hugging Face tower's batches are cut the same way, after their longest prompt's padding-free
    length (it masks its padding itself).
    """
    _positive_int_validation("batch_size", batch_size)
    proj = locate_text_projection(model)
    if tokens.ndim != 2:
        raise ConfigError(f"tokens must be a 2-D tensor [prompts, context], got shape {tuple(tokens.shape)}")
    device = next(model.parameters()).device
    wrapper = _EncodeText(model)
    overrides = proj.identity_overrides(prefix="model.")
    plan = _trim_plan(proj) if trim else None
    unpadded = _hf_padding(proj, tokens) if trim else None
    order = torch.arange(len(tokens))
    if plan is not None:
        order = torch.argsort(_pooled_index(tokens, *plan) + 1, stable=True)
    elif unpadded is not None:
        order = torch.argsort(unpadded, stable=True)
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
            elif unpadded is not None:
                batch = batch[:, : int(unpadded[rows].max())]
            out[rows] = functional_call(wrapper, call, (batch,), strict=False).float().cpu()
    return out


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
