"""Loading open_clip models and choosing which of their tensors may be updated.

Everything model-specific the rest of the project needs lives here: building a model from an
open_clip name plus a pretrained tag or a local file, its tokenizer and image normalisation, the
split of its parameters into the vision and the text tower, and the eligibility presets.

Construction reads nothing: :func:`clip_architecture` returns the model at its random
initialisation with ``weights_pending`` naming where its weights come from: a local file, an
open_clip tag (downloaded into open_clip's cache) or, for weights the project makes itself (the
demo CLIP, tag ``demo-world``), a :class:`PretrainedProvider` (found in a cache, or built).
:func:`build_pretrained` obtains and loads them (a LightningModule calls it in ``prepare_data``,
on one process per node), :func:`load_pending_weights` loads them on the other processes
(``setup``). :func:`load_clip` does it all at once, for scripts and tests.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Optional, Sequence, Union

import open_clip
import torch
from torch import nn

from lightning_unlearn.core._validation import _choice_validation
from lightning_unlearn.core.errors import (
    CheckpointError,
    ConfigError,
    MissingFileError,
    UnknownNameError,
    UnsupportedModelError,
)
from lightning_unlearn.core.names import matches_clause

EligibilityPreset = Literal["paper", "blocks", "all"]
TOWERS = ("vision", "text")
#: open_clip configs of the project's own models (the demo CLIP), registered on first use.
PROJECT_MODEL_CONFIGS = Path(__file__).resolve().parents[1] / "model_configs"


@dataclass(frozen=True)
class PretrainedProvider:
    """Project-made weights: ``find()`` returns the cached file or None; ``build()`` makes it.

    Each is a function or a ``"module:function"`` string, imported only when called (so
    registering a provider imports nothing).
    """

    find: Union[str, Callable[[], Optional[Union[str, Path]]]]
    build: Union[str, Callable[[], Union[str, Path]]]

    @staticmethod
    def _call(target: Union[str, Callable[[], Any]]) -> Optional[str]:
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
        result = target()
        return None if result is None else str(result)

    def cached(self) -> Optional[str]:
        """The built weights file, or None if it is not built (or not valid) yet."""
        return self._call(self.find)

    def make(self) -> str:
        """Build the weights (or find them cached) and return the file."""
        path = self._call(self.build)
        assert path is not None
        return path


_PROVIDERS: dict[tuple[str, str], PretrainedProvider] = {
    ("demo-clip-rn", "demo-world"): PretrainedProvider(
        find="lightning_unlearn.demo.cache:cached_demo_clip", build="lightning_unlearn.demo.cache:ensure_demo_clip"
    ),
    ("demo-clip-lit", "demo-world"): PretrainedProvider(
        find="lightning_unlearn.demo.cache:cached_demo_clip_lit",
        build="lightning_unlearn.demo.cache:ensure_demo_clip_lit",
    ),
}
#: Project models whose open_clip config is made at run time (it names a folder on this machine,
#: e.g. the packaged text model of demo-clip-lit): name -> "module:function" that registers it.
_RUNTIME_MODEL_CONFIGS: dict[str, str] = {
    "demo-clip-lit": "lightning_unlearn.demo.lit:register_lit_model",
}


def register_pretrained(model_name: str, tag: str, provider: PretrainedProvider) -> None:
    """Make ``load_clip(model_name, pretrained=tag)`` use ``provider``'s weights."""
    _PROVIDERS[(model_name, tag)] = provider


@dataclass
class LoadedClip:
    """An open_clip model with what is needed to feed it.

    ``weights_pending`` is where weights that are not loaded yet come from (a project tag's
    provider, an open_clip tag, a local file): ``build_pretrained`` obtains and loads them,
    ``load_pending_weights`` loads them once obtained; None once the weights are in.
    """

    model: nn.Module
    tokenizer: Callable[..., torch.Tensor]
    preprocess: Callable  # PIL image -> normalised tensor (open_clip's eval transform)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    name: str
    pretrained: Optional[str]
    weights_pending: Optional[WeightsSource] = None
    #: the local file the weights come from (a checkpoint path, a ``local-dir:`` folder's weights), else None
    weights_file: Optional[str] = None


def register_project_model_configs() -> None:
    """Add the project's model configs to open_clip's registry (idempotent; per process)."""
    if not all(p.stem in open_clip.list_models() for p in PROJECT_MODEL_CONFIGS.glob("*.json")):
        open_clip.add_model_config(PROJECT_MODEL_CONFIGS)


def register_model_config(name: str, config: dict[str, Any]) -> None:
    """Add an open_clip model config made at run time to open_clip's registry under ``name``.

    ``open_clip.add_model_config`` reads JSON files only; a config that names a folder on this
    machine (an HF text tower's) is made in code, so it goes into open_clip's registry dict directly.
    """
    from open_clip import factory

    factory._MODEL_CONFIGS[name] = copy.deepcopy(config)


def _register_runtime_model_config(name: str) -> None:
    target = _RUNTIME_MODEL_CONFIGS.get(name)
    if target is not None and name not in open_clip.list_models():
        module, _, attr = target.partition(":")
        getattr(importlib.import_module(module), attr)()


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Model initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def quiet_random_init() -> Iterator[None]:
    """Hide open_clip's warning that no pretrained weights were loaded (weights come next, or random
    weights are the point)."""
    notice = _DropRandomInitNotice()
    root = logging.getLogger()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


#: The rows of transformers' "LOAD REPORT" table: ``<key> | <STATUS> | ...`` (the status maybe coloured).
_LOAD_REPORT_ROW = re.compile(r"^(\S+)\s*\|\s*(?:\x1b\[[0-9;]*m)*([A-Z_]+)\b", re.MULTILINE)
#: Checkpoint tensors a Hugging Face tower may leave unread on purpose: BERT-style pooler weights,
#: which open_clip's HF towers do not build unless they pool with it (``cls_pooler``).
UNUSED_HF_KEYS = re.compile(r"^(?:[A-Za-z_]+\.)?pooler\.")


def expected_hf_load_report(message: str) -> bool:
    """Whether transformers' load report ``message`` lists only checkpoint tensors the tower does
    not use (:data:`UNUSED_HF_KEYS`, status ``UNEXPECTED``). Any other row, or a report this
    cannot read, is not expected (the warning is then shown)."""
    if "LOAD REPORT" not in message:
        return False
    rows = _LOAD_REPORT_ROW.findall(message.split("\n", 1)[-1])
    rows = [(key, status) for key, status in rows if key != "Key" and not set(key) <= {"-", "+"}]
    return bool(rows) and all(status == "UNEXPECTED" and UNUSED_HF_KEYS.match(key) for key, status in rows)


class _DropExpectedHfLoadNotices(logging.Filter):
    def __init__(self, model_name: str) -> None:
        super().__init__()
        self.partial = f"Model {model_name} initialized partially."

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return message != self.partial and not expected_hf_load_report(message)


@contextlib.contextmanager
def quiet_hf_pretrained_load(model_name: str) -> Iterator[None]:
    """Build ``model_name`` with its Hugging Face text tower's own pretrained weights, without the
    notices that say exactly that: open_clip's "Model <name> initialized partially." (the text
    tower loaded, the rest random: what pretraining starts from) and transformers' load report
    when it lists only the unused pooler (:func:`expected_hf_load_report`), plus its per-tensor
    "Loading weights" bar. Any other warning, a missing tensor included, is shown."""
    from transformers.utils import logging as hf_logging

    notice = _DropExpectedHfLoadNotices(model_name)
    loggers = [logging.getLogger(), logging.getLogger("transformers.modeling_utils")]
    bar_was_on = hf_logging.is_progress_bar_enabled()
    for logger in loggers:
        logger.addFilter(notice)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(notice)
        if bar_was_on:
            hf_logging.enable_progress_bar()


#: open_clip's schema for a model folder (``open_clip_config.json`` and a weights file).
LOCAL_DIR = "local-dir:"
#: Weights file names open_clip looks for in a ``local-dir:`` folder, preferred first (its own order).
LOCAL_DIR_WEIGHTS = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
)


def local_dir_weights(name: str) -> Optional[str]:
    """The weights file open_clip loads from a ``local-dir:`` model's folder (None: none there)."""
    folder = Path(name[len(LOCAL_DIR):])
    for file in LOCAL_DIR_WEIGHTS:
        if (folder / file).is_file():
            return str(folder / file)
    return None


def check_model_name(name: str) -> None:
    """Raise :class:`UnknownNameError` naming close matches if open_clip has no config ``name``;
    :class:`MissingFileError` for a ``local-dir:`` folder without ``open_clip_config.json``."""
    if name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR):])
        if not (folder / "open_clip_config.json").is_file():
            raise MissingFileError(
                f"model {name!r}: {str(folder / 'open_clip_config.json')!r} does not exist; a `local-dir:` model is "
                "a folder holding open_clip_config.json and its weights (an export's folder)"
            )
        return
    if name.startswith("hf-hub:"):
        return
    register_project_model_configs()
    _register_runtime_model_config(name)
    models = open_clip.list_models()
    if name not in models:
        raise UnknownNameError(
            f"unknown open_clip model {name!r}"
            + matches_clause(name, models)
            + ". open_clip.list_models() lists all names"
        )


def _known_tags(name: str) -> list[str]:
    return list(open_clip.list_pretrained_tags_by_model(name)) + [t for (m, t) in _PROVIDERS if m == name]


def _looks_like_path(pretrained: str) -> bool:
    return os.sep in pretrained or Path(pretrained).suffix != ""


def _check_pretrained(name: str, pretrained: str) -> None:
    """Fail early, with what would be valid, for a tag that is not known or a file that is missing."""
    if (name, pretrained) in _PROVIDERS or pretrained in open_clip.list_pretrained_tags_by_model(name):
        return
    if Path(pretrained).is_file():
        return
    if _looks_like_path(pretrained):
        raise MissingFileError(f"pretrained checkpoint {pretrained!r} does not exist")
    tags = _known_tags(name)
    raise UnknownNameError(
        f"unknown pretrained tag {pretrained!r} for model {name!r}"
        + matches_clause(pretrained, tags)
        + f". Known tags: {', '.join(tags) or 'none'}; or give the path of a local checkpoint file"
    )


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local checkpoint (safetensors, state dict or OpenAI archive) into ``model``, strictly.

    Raises:
        MissingFileError: the file does not exist.
        CheckpointError: it cannot be read as a checkpoint, or its keys do not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"pretrained checkpoint {str(path)!r} does not exist")
    try:
        incompatible = open_clip.load_checkpoint(model, str(path), strict=False, weights_only=True)
    except Exception as err:  # safetensors, pickle and zip readers raise many types
        text = str(err).strip()
        if "Error(s) in loading state_dict" in text:  # read fine, but the shapes differ
            mismatches = [line.strip() for line in text.splitlines() if "size mismatch" in line]
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not fit this model: {len(mismatches)} tensors differ in shape"
                + (f" (e.g. {mismatches[0][:200]})" if mismatches else "")
            ) from err
        first = text.splitlines()[0][:300] if text else type(err).__name__
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} (truncated, or not a safetensors/PyTorch state dict): {first}"
        ) from err
    missing = list(getattr(incompatible, "missing_keys", []))
    unexpected = list(getattr(incompatible, "unexpected_keys", []))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(map(repr, missing[:3]))})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(map(repr, unexpected[:3]))})")
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this model: {'; '.join(parts)}")


@dataclass(frozen=True)
class _FileWeights:
    """A local checkpoint file: nothing to obtain."""

    path: str

    def cached(self) -> Optional[str]:
        return self.path

    def make(self) -> str:
        return self.path


@dataclass(frozen=True)
class _OpenClipTagWeights:
    """An open_clip pretrained tag (``openai``, ...): downloaded once into ``cache_dir``."""

    name: str
    tag: str
    cache_dir: Optional[str] = None

    def make(self) -> str:
        cfg = open_clip.get_pretrained_cfg(self.name, self.tag)
        try:
            return str(open_clip.download_pretrained(cfg, cache_dir=self.cache_dir))
        except Exception as err:  # network and hub errors come in many types
            raise MissingFileError(
                f"could not obtain the {self.tag!r} weights of {self.name!r} (no network?): put the file in "
                "open_clip's cache (cache_dir) or pass its local path as `pretrained`"
            ) from err

    def cached(self) -> Optional[str]:
        # after `make` on this node the file is in the cache, and this finds it there
        return self.make()


WeightsSource = Union[PretrainedProvider, _FileWeights, _OpenClipTagWeights]


def weights_source(name: str, pretrained: Optional[str], cache_dir: Optional[str] = None) -> Optional[WeightsSource]:
    """Where ``pretrained`` weights of ``name`` come from, checked without reading them (an unknown
    tag or a missing file fails here, with close matches); None for random weights."""
    if not pretrained:
        if name.startswith(LOCAL_DIR):  # the folder's own weights (open_clip ignores `pretrained` there)
            path = local_dir_weights(name)
            return _FileWeights(path) if path is not None else None
        return None
    _check_pretrained(name, pretrained)
    provider = _PROVIDERS.get((name, pretrained))
    if provider is not None:
        return provider
    if pretrained in open_clip.list_pretrained_tags_by_model(name):
        return _OpenClipTagWeights(name, pretrained, cache_dir)
    return _FileWeights(pretrained)


def build_pretrained(clip: LoadedClip) -> None:
    """Obtain the pending weights (build project-made ones, e.g. train the demo CLIP; download an
    open_clip tag) and load them. A LightningModule calls it in ``prepare_data``: once per node."""
    if clip.weights_pending is None:
        return
    load_weights(clip.model, clip.weights_pending.make())
    clip.weights_pending = None


def load_pending_weights(clip: LoadedClip) -> None:
    """Load weights obtained since the architecture was built (by this or another process); fail
    clearly if they are not there yet. A LightningModule calls it in ``setup``: on every process."""
    if clip.weights_pending is None:
        return
    path = clip.weights_pending.cached()
    if path is None:
        raise MissingFileError(
            f"the {clip.pretrained!r} weights of {clip.name!r} are not built yet: run the LightningModule's "
            "prepare_data() (Trainer.fit does), or `python -m lightning_unlearn.demo.cache` for the demo CLIP"
        )
    load_weights(clip.model, path)
    clip.weights_pending = None


def _architecture_options(name: str, source: Optional[WeightsSource], force_quick_gelu: Optional[bool]) -> dict:
    """What open_clip would set up for these weights, without loading them: QuickGELU (OpenAI
    weights were trained with it; the plain names use nn.GELU) and the tag's preprocessing."""
    options: dict[str, Any] = {"force_quick_gelu": False}
    if isinstance(source, _OpenClipTagWeights):
        cfg = open_clip.get_pretrained_cfg(name, source.tag)
        options["force_quick_gelu"] = bool(cfg.get("quick_gelu", False))
        for key, arg in (("mean", "image_mean"), ("std", "image_std"), ("interpolation", "image_interpolation"),
                         ("resize_mode", "image_resize_mode")):
            if cfg.get(key) is not None:
                options[arg] = cfg[key]
    if force_quick_gelu is not None:
        options["force_quick_gelu"] = force_quick_gelu
    return options


def clip_architecture(
    name: str,
    pretrained: Optional[str] = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    cache_dir: Optional[str] = None,
    force_quick_gelu: Optional[bool] = None,
) -> LoadedClip:
    """The open_clip model ``name`` with its tokenizer and eval preprocessing, at its random
    initialisation: nothing is read, downloaded or built. ``weights_pending`` names where the
    ``pretrained`` weights come from (:func:`build_pretrained`, then :func:`load_pending_weights`).

    Raises:
        UnknownNameError: unknown model name or pretrained tag (close matches in the message).
        MissingFileError: a checkpoint path that does not exist.
    """
    check_model_name(name)
    source = weights_source(name, pretrained, cache_dir)
    with quiet_random_init():  # the weights come later, or random weights are the point
        # load_weights=False: a `local-dir:` folder's weights are loaded later too; pretrained_text=False:
        # a Hugging Face text tower is built from its config alone (its weights are in the CLIP's)
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=None, load_weights=False, pretrained_text=False, precision=precision, device=device,
            cache_dir=cache_dir, **_architecture_options(name, source, force_quick_gelu),
        )
    model.eval()
    cut_hf_padding(model)
    return LoadedClip(
        model=model, tokenizer=open_clip.get_tokenizer(name), preprocess=preprocess,
        mean=tuple(getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN),
        std=tuple(getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD),
        image_size=_image_size(model), name=name, pretrained=pretrained, weights_pending=source,
        weights_file=source.path if isinstance(source, _FileWeights) else None,
    )


def load_clip(
    name: str,
    pretrained: Optional[str] = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    cache_dir: Optional[str] = None,
    force_quick_gelu: Optional[bool] = None,
    build: bool = True,
) -> LoadedClip:
    """Build an open_clip model with its tokenizer and eval preprocessing, and load its weights.

    Args:
        name: open_clip model name (``RN50``, ``ViT-B-16``, a registered tiny config, ...).
        pretrained: a pretrained tag (``openai``), a project tag (``demo-world``), a local
            checkpoint path, or None for random weights.
        precision: open_clip precision string.
        device: where to put the model.
        cache_dir: open_clip's download cache (weights already there load offline).
        force_quick_gelu: override the QuickGELU choice (by default on for OpenAI weights).
        build: obtain weights that are not there yet (download a tag, build project-made weights);
            with False, weights that are not there yet stay pending (``weights_pending``).

    Raises:
        UnknownNameError: unknown model name or pretrained tag (close matches in the message).
        MissingFileError: a checkpoint path that does not exist; OpenAI-style weights not in the cache.
        CheckpointError: an unreadable checkpoint or one that does not fit the model.
    """
    clip = clip_architecture(name, pretrained, precision, device, cache_dir, force_quick_gelu)
    if build:
        build_pretrained(clip)
    else:
        load_pending_weights_if_cached(clip)
    clip.model.eval()
    return clip


def load_pending_weights_if_cached(clip: LoadedClip) -> None:
    """Load pending weights if they are already there; otherwise leave them pending."""
    if isinstance(clip.weights_pending, _OpenClipTagWeights):
        return  # finding out would mean a download
    if clip.weights_pending is not None and clip.weights_pending.cached() is not None:
        load_pending_weights(clip)


def _image_size(model: nn.Module) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def tower_of(param_name: str) -> Optional[str]:
    """``"vision"``, ``"text"`` or None (``logit_scale``/``logit_bias``) for a parameter name.

    In open_clip's ``CLIP`` the text tower sits at the top level (``transformer.*``,
    ``token_embedding``, ...); ``CustomTextCLIP`` keeps it under ``text.``.
    """
    if param_name.startswith("visual."):
        return "vision"
    if param_name.startswith("text."):
        return "text"
    if param_name.split(".")[0] in ("transformer", "token_embedding", "positional_embedding", "ln_final",
                                    "text_projection"):
        return "text"
    return None


def is_resnet_vision(model: nn.Module) -> bool:
    """Whether the image tower is open_clip's ModifiedResNet (it has an attention pool)."""
    return hasattr(model.visual, "attnpool")


def hf_text_tower(model: nn.Module) -> Optional[nn.Module]:
    """The Hugging Face text tower of ``model`` (open_clip's ``HFTextEncoder``, ``model.text``:
    roberta-, xlm-roberta-, nllb-clip and custom ``hf_model_name`` models), or None."""
    from open_clip.hf_model import HFTextEncoder

    text = getattr(model, "text", None)
    return text if isinstance(text, HFTextEncoder) else None


def cut_hf_padding(model: nn.Module) -> bool:
    """Let a Hugging Face text tower run only up to its batch's last real token (once per model).

    open_clip pads every prompt to the full context (32-77 tokens) and the tower masks the padding,
    so columns that are padding in every prompt of a batch change nothing but cost a full pass:
    a forward pre-hook drops them (the poolers are masked or read position 0, so the result is
    the same). Returns whether the hook was installed now (False: no HF tower, or already there).
    A tower asked for its token outputs (``output_tokens``) is left whole.
    """
    tower = hf_text_tower(model)
    if tower is None or getattr(tower, "_cuts_padding", False):
        return False
    tower.register_forward_pre_hook(_cut_trailing_padding)
    tower._cuts_padding = True
    return True


def _cut_trailing_padding(tower: nn.Module, args: tuple[Any, ...]) -> Optional[tuple[Any, ...]]:
    pad = getattr(getattr(tower, "config", None), "pad_token_id", None)
    if not args or pad is None or getattr(tower, "output_tokens", False):
        return None
    tokens = args[0]
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.shape[1] < 2:
        return None
    used = (tokens != pad).any(dim=0)
    if bool(used[-1]):
        return None
    length = int(used.nonzero().max()) + 1 if bool(used.any()) else 1
    return (tokens[:, :length], *args[1:])


def hf_encoder_layers(tower: nn.Module) -> str:
    """Where a Hugging Face text tower keeps its encoder layers, as a name in ``tower.transformer``
    (``encoder.layer`` for BERT and RoBERTa, ``layers`` for an NLLB/M2M100 encoder, ``block`` for T5).

    Found without a table of architectures: the largest ``nn.ModuleList`` (by parameters) whose
    entries are all of one type, the stack of layers every transformer encoder is.

    Raises:
        UnsupportedModelError: the tower holds no such list.
    """
    best, best_size = None, 0
    for name, module in tower.transformer.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and len({type(m) for m in module}) == 1:
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_size = name, size
    if best is None:
        raise UnsupportedModelError(
            f"the Hugging Face text tower {type(tower.transformer).__name__} has no list of encoder layers (an "
            "nn.ModuleList of one layer type); give the text tower's patterns with `include`"
        )
    return best


def text_block_patterns(model: nn.Module) -> list[str]:
    """Regex patterns of the text tower's layers: open_clip's ``transformer.resblocks`` (``text.``
    under ``CustomTextCLIP``), or a Hugging Face tower's encoder layers
    (``text.transformer.encoder.layer.`` for BERT/RoBERTa); embeddings, final norms, poolers and
    projections stay out."""
    tower = hf_text_tower(model)
    if tower is not None:
        return [rf"^text\.transformer\.{re.escape(hf_encoder_layers(tower))}\."]
    return [r"^(text\.)?transformer\.resblocks\."]


def preset_patterns(model: nn.Module, preset: EligibilityPreset) -> dict[str, list[str]]:
    """Regex include-patterns per tower for an eligibility preset.

    - ``paper``: ResNet vision = attention-pool q/k/v/c projections; ViT vision = the whole tower;
      text = the transformer blocks (as the published code); for a Hugging Face text tower, its
      encoder's layers (:func:`text_block_patterns`).
    - ``blocks``: like ``paper`` but a ViT vision tower is limited to its transformer blocks, so
      global tensors (stem, class/positional embeddings, pre/post norms, projection) stay frozen.
    - ``all``: every tensor of both towers (the paper's AllParamsVary ablation).
    """
    _choice_validation("eligibility", preset, ("paper", "blocks", "all"))
    if preset == "all":
        return {"vision": [r"^visual\."],
                "text": [r"^(text\.|transformer\.|token_embedding|positional_embedding|ln_final|text_projection)"]}
    if is_resnet_vision(model):
        vision = [r"^visual\.attnpool\.(q_proj|k_proj|v_proj|c_proj)\."]
    elif preset == "blocks":
        vision = [r"^visual\.transformer\.resblocks\."]
    else:
        vision = [r"^visual\."]
    return {"vision": vision, "text": text_block_patterns(model)}


def _compiled_patterns(
    model: nn.Module, preset: EligibilityPreset, include: Optional[dict[str, Sequence[str]]],
    exclude: Optional[dict[str, Sequence[str]]],
) -> tuple[dict[str, list[str]], dict[str, list[re.Pattern]], dict[str, list[re.Pattern]]]:
    for what, given in (("include", include), ("exclude", exclude)):
        for tower in given or {}:
            _choice_validation(f"tower {tower!r} in {what}", tower, TOWERS)
    patterns = preset_patterns(model, preset)
    patterns.update({tower: list(pats) for tower, pats in (include or {}).items()})
    try:
        compiled = {tower: [re.compile(p) for p in pats] for tower, pats in patterns.items()}
        excluded = {tower: [re.compile(p) for p in (exclude or {}).get(tower, [])] for tower in TOWERS}
    except re.error as err:
        raise ConfigError(f"invalid regex in include/exclude: {err}") from err
    return patterns, compiled, excluded


def eligible_groups(
    model: nn.Module,
    preset: EligibilityPreset = "paper",
    include: Optional[dict[str, Sequence[str]]] = None,
    exclude: Optional[dict[str, Sequence[str]]] = None,
) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """The parameters of each tower that may be updated.

    ``include`` replaces the preset's patterns of a tower (an empty list leaves that tower out: it
    is then not in the result, and nothing of it is updated); ``exclude`` removes matches. The
    logit scale/bias and every BatchNorm parameter are never eligible (changing the temperature
    would "forget" everything at once; BatchNorm statistics come from real data).
    """
    patterns, compiled, excluded = _compiled_patterns(model, preset, include, exclude)
    batchnorm = {
        f"{mod_name}.{p_name}"
        for mod_name, mod in model.named_modules()
        if isinstance(mod, nn.modules.batchnorm._BatchNorm)
        for p_name, _ in mod.named_parameters(recurse=False)
    }
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {tower: [] for tower in TOWERS}
    for name, param in model.named_parameters():
        tower = tower_of(name)
        if tower is None or name in batchnorm:
            continue
        if any(p.search(name) for p in compiled[tower]) and not any(p.search(name) for p in excluded[tower]):
            groups[tower].append((name, param))
    for tower, params in list(groups.items()):
        if params:
            continue
        if not patterns[tower]:
            del groups[tower]  # `include: {tower: []}`: this tower is left as it is, on purpose
            continue
        raise ConfigError(
            f"no eligible parameters in the {tower} tower with patterns {patterns[tower]} (preset {preset!r});"
            f" check the include/exclude patterns (`include: {{{tower}: []}}` leaves the tower out on purpose)"
        )
    if not groups:
        raise ConfigError(f"include leaves no tower to update ({dict(include or {})}); give at least one tower patterns")
    return groups


def freeze_ineligible(model: nn.Module, groups: dict[str, list[tuple[str, nn.Parameter]]]) -> int:
    """Set ``requires_grad`` to True exactly on the eligible tensors; return how many."""
    eligible = {id(p) for params in groups.values() for _, p in params}
    for param in model.parameters():
        param.requires_grad_(id(param) in eligible)
    return len(eligible)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run the block with every submodule in eval mode, then restore each one's own mode.

    Restoring per submodule (not ``module.train(flag)``) keeps BatchNorm layers that were
    deliberately left in eval mode inside a training model where they were.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def set_batchnorm_eval(model: nn.Module) -> None:
    """Keep BatchNorm layers on their running statistics (the synthetic set is not real data)."""
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.eval()


def set_dropout_eval(model: nn.Module) -> None:
    """Switch dropout off (a Hugging Face text tower's hidden and attention dropout, say):
    unlearning moves pretrained weights a few steps, and random masks would make its losses, its
    stopping signal and each rank's text features differ. open_clip's own towers keep their
    dropouts at 0. A Hugging Face tower goes to eval mode whole: its attention applies dropout by
    its own ``training`` flag, not through an ``nn.Dropout`` (it has no BatchNorm)."""
    for mod in model.modules():
        if isinstance(mod, nn.modules.dropout._DropoutNd):
            mod.eval()
    tower = hf_text_tower(model)
    if tower is not None:
        tower.transformer.eval()


def tensors_fingerprint(named: Iterable[tuple[str, torch.Tensor]], salt: str = "") -> str:
    """A short hash of named tensors (names and float32 values, in the order given)."""
    digest = hashlib.sha256(salt.encode())
    for name, tensor in named:
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's weights, to key caches of things derived from it."""
    return tensors_fingerprint(sorted(model.state_dict().items()))
