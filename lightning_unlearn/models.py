"""Loading open_clip models and choosing which of their tensors may be updated.

Everything model-specific the rest of the project needs lives here: building a model from an
open_clip name plus a pretrained tag or a local file, its tokenizer and image normalisation, the
split of its parameters into the vision and the text tower, and the eligibility presets.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence

import open_clip
import torch
from torch import nn

from lightning_unlearn.datasets.base import close_matches

EligibilityPreset = Literal["paper", "blocks", "all"]
TOWERS = ("vision", "text")

# Project-made weights (the demo CLIP) are found through resolvers: name, tag -> local file.
_PRETRAINED_RESOLVERS: dict[tuple[str, str], Callable[[], str]] = {}


def register_pretrained(model_name: str, tag: str, resolver: Callable[[], str]) -> None:
    """Make ``load_clip(model_name, pretrained=tag)`` load the file that ``resolver()`` returns."""
    _PRETRAINED_RESOLVERS[(model_name, tag)] = resolver


@dataclass
class LoadedClip:
    """An open_clip model with what is needed to feed it."""

    model: nn.Module
    tokenizer: Callable[..., torch.Tensor]
    preprocess: Callable  # PIL image -> normalised tensor (open_clip's eval transform)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    name: str
    pretrained: Optional[str]


def _known_tags(name: str) -> list[str]:
    tags = list(open_clip.list_pretrained_tags_by_model(name))
    tags += [tag for (model, tag) in _PRETRAINED_RESOLVERS if model == name]
    return tags


def check_model_name(name: str) -> None:
    """Raise ``ValueError`` naming close matches if open_clip has no config called ``name``."""
    if name.startswith(("hf-hub:", "local-dir:")):
        return
    models = open_clip.list_models()
    if name not in models:
        hint = close_matches(name, models)
        raise ValueError(
            f"unknown open_clip model {name!r}"
            + (f"; close matches: {', '.join(map(repr, hint))}" if hint else "")
            + ". See open_clip.list_models() for all names."
        )


def _resolve_pretrained(name: str, pretrained: Optional[str]) -> tuple[Optional[str], bool]:
    """Return (tag or path for open_clip, whether QuickGELU must be forced)."""
    if not pretrained:
        return None, False
    if (name, pretrained) in _PRETRAINED_RESOLVERS:
        return _PRETRAINED_RESOLVERS[(name, pretrained)](), False
    if pretrained in open_clip.list_pretrained_tags_by_model(name):
        cfg = open_clip.get_pretrained_cfg(name, pretrained)
        # OpenAI weights were trained with QuickGELU; the plain names use nn.GELU.
        return pretrained, bool(cfg.get("quick_gelu", False))
    looks_like_path = os.sep in pretrained or Path(pretrained).suffix != ""
    if Path(pretrained).is_file():
        return pretrained, False
    if looks_like_path:
        raise FileNotFoundError(f"pretrained checkpoint {pretrained!r} does not exist")
    tags = _known_tags(name)
    hint = close_matches(pretrained, tags)
    raise ValueError(
        f"unknown pretrained tag {pretrained!r} for model {name!r}"
        + (f"; close matches: {', '.join(map(repr, hint))}" if hint else "")
        + f". Known tags: {', '.join(tags) or 'none'}; or give the path of a local checkpoint file."
    )


def load_clip(
    name: str,
    pretrained: Optional[str] = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    cache_dir: Optional[str] = None,
    force_quick_gelu: Optional[bool] = None,
) -> LoadedClip:
    """Build an open_clip model with its tokenizer and eval preprocessing.

    Args:
        name: open_clip model name (``RN50``, ``ViT-B-16``, a registered tiny config, ...).
        pretrained: a pretrained tag (``openai``), a project tag (``demo-world``), a local
            checkpoint path, or None for random weights.
        precision: open_clip precision string.
        device: where to put the model.
        cache_dir: open_clip's download cache (weights already there load offline).
        force_quick_gelu: override the QuickGELU choice (by default on for OpenAI weights).
    """
    check_model_name(name)
    source, quick_gelu = _resolve_pretrained(name, pretrained)
    if force_quick_gelu is not None:
        quick_gelu = force_quick_gelu
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name,
            pretrained=source,
            precision=precision,
            device=device,
            force_quick_gelu=quick_gelu,
            cache_dir=cache_dir,
            weights_only=True,
        )
    except RuntimeError as err:
        if "Error(s) in loading state_dict" in str(err):
            raise ValueError(
                f"checkpoint {source!r} does not match model {name!r}: {str(err)[:2000]}"
            ) from err
        if "download" in str(err).lower():
            raise RuntimeError(
                f"could not obtain the {pretrained!r} weights of {name!r} (no network?). Put the file "
                f"in open_clip's cache (cache_dir) or pass its local path as `pretrained`. Cause: {err}"
            ) from err
        raise
    model.eval()
    visual = model.visual
    size = visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    return LoadedClip(
        model=model,
        tokenizer=open_clip.get_tokenizer(name),
        preprocess=preprocess,
        mean=tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN),
        std=tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD),
        image_size=size,
        name=name,
        pretrained=pretrained,
    )


def tower_of(param_name: str, model: nn.Module) -> Optional[str]:
    """``"vision"``, ``"text"`` or None (``logit_scale``/``logit_bias``) for a parameter name.

    In open_clip's ``CLIP`` the text tower sits at the top level (``transformer.*``,
    ``token_embedding``, ...); ``CustomTextCLIP`` keeps it under ``text.``.
    """
    if param_name.startswith("visual."):
        return "vision"
    if param_name.startswith("text."):
        return "text"
    if param_name.split(".")[0] in (
        "transformer",
        "token_embedding",
        "positional_embedding",
        "ln_final",
        "text_projection",
    ):
        return "text"
    return None


def is_resnet_vision(model: nn.Module) -> bool:
    return hasattr(model.visual, "attnpool")


def preset_patterns(model: nn.Module, preset: EligibilityPreset) -> dict[str, list[str]]:
    """Regex include-patterns per tower for an eligibility preset.

    - ``paper``: ResNet vision = attention-pool q/k/v/c projections; ViT vision = the whole tower;
      text = the transformer blocks (as the published code).
    - ``blocks``: like ``paper`` but a ViT vision tower is limited to its transformer blocks, so
      global tensors (stem, class/positional embeddings, pre/post norms, projection) stay frozen.
    - ``all``: every tensor of both towers (the paper's AllParamsVary ablation).
    """
    if preset not in ("paper", "blocks", "all"):
        raise ValueError(f"unknown eligibility preset {preset!r}; choose 'paper', 'blocks' or 'all'")
    text_blocks = [r"^(text\.)?transformer\.resblocks\."]
    if preset == "all":
        return {"vision": [r"^visual\."], "text": [r"^(text\.|transformer\.|token_embedding|positional_embedding|ln_final|text_projection)"]}
    if is_resnet_vision(model):
        vision = [r"^visual\.attnpool\.(q_proj|k_proj|v_proj|c_proj)\."]
    elif preset == "blocks":
        vision = [r"^visual\.transformer\.resblocks\."]
    else:
        vision = [r"^visual\."]
    return {"vision": vision, "text": text_blocks}


def eligible_groups(
    model: nn.Module,
    preset: EligibilityPreset = "paper",
    include: Optional[dict[str, Sequence[str]]] = None,
    exclude: Optional[dict[str, Sequence[str]]] = None,
) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """The parameters of each tower that may be updated.

    ``include`` replaces the preset's patterns of a tower; ``exclude`` removes matches. The
    logit scale/bias and every BatchNorm parameter are never eligible (changing the temperature
    would "forget" everything at once; BatchNorm statistics come from real data).
    """
    patterns = preset_patterns(model, preset)
    for tower, pats in (include or {}).items():
        if tower not in TOWERS:
            raise ValueError(f"unknown tower {tower!r} in include; use {TOWERS}")
        patterns[tower] = list(pats)
    excluded = {tower: [re.compile(p) for p in (exclude or {}).get(tower, [])] for tower in TOWERS}
    for tower in (exclude or {}):
        if tower not in TOWERS:
            raise ValueError(f"unknown tower {tower!r} in exclude; use {TOWERS}")
    compiled = {tower: [re.compile(p) for p in pats] for tower, pats in patterns.items()}
    batchnorm = {
        f"{mod_name}.{p_name}"
        for mod_name, mod in model.named_modules()
        if isinstance(mod, nn.modules.batchnorm._BatchNorm)
        for p_name, _ in mod.named_parameters(recurse=False)
    }
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {tower: [] for tower in TOWERS}
    for name, param in model.named_parameters():
        tower = tower_of(name, model)
        if tower is None or name in batchnorm:
            continue
        if any(p.search(name) for p in compiled[tower]) and not any(p.search(name) for p in excluded[tower]):
            groups[tower].append((name, param))
    for tower, params in groups.items():
        if not params:
            raise ValueError(
                f"no eligible parameters in the {tower} tower with patterns {patterns[tower]}"
                f" (preset {preset!r}); check the include/exclude patterns"
            )
    return groups


def freeze_ineligible(model: nn.Module, groups: dict[str, list[tuple[str, nn.Parameter]]]) -> int:
    """Set ``requires_grad`` to True exactly on the eligible tensors; return how many."""
    eligible = {id(p) for params in groups.values() for _, p in params}
    for param in model.parameters():
        param.requires_grad_(id(param) in eligible)
    return len(eligible)


def set_batchnorm_eval(model: nn.Module) -> None:
    """Keep BatchNorm layers on their running statistics (the synthetic set is not real data)."""
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.eval()


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's weights, to key caches of things derived from it."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()[:16]
