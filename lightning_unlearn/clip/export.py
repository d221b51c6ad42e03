"""A model as an open_clip model folder: plain open_clip loads it with no network.

``open_clip.create_model_and_transforms("local-dir:<folder>")`` (and
``create_model_from_pretrained``, ``get_tokenizer``) read the folder's ``open_clip_config.json``
(``model_cfg``: the architecture; ``preprocess_cfg``: the image size, mean, std, interpolation)
and its weights file, ``open_clip_model.safetensors``. :func:`write_open_clip_folder` writes such
a folder, atomically, for any model the project loads:

- the architecture is the model's open_clip config (a registered name such as the project's own
  models, another ``local-dir:`` folder), with ``quick_gelu`` set when the model runs QuickGELU
  (OpenAI weights) and the preprocessing the model was built with;
- a Hugging Face text tower (``text_cfg.hf_model_name``) gets its config (``config.json``) and
  tokenizer files copied into the folder, and ``hf_model_name``/``hf_tokenizer_name`` name the
  folder by its absolute path. open_clip reads the tokenizer of a ``local-dir:`` model from the
  folder itself; the tower's config is read by ``transformers`` from ``hf_model_name``, which it
  resolves against the working directory, hence the absolute path: the folder loads from any
  working directory. After moving the folder, :func:`relocate_open_clip_folder` writes its new
  path in (or edit those two fields by hand).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import open_clip
from torch import nn

from lightning_unlearn.clip.loading import hf_text_tower
from lightning_unlearn.core.errors import MissingFileError, UnsupportedModelError
from lightning_unlearn.core.io import atomic_dir, atomic_write_json, save_open_clip_weights

#: The file names open_clip reads in a ``local-dir:`` folder.
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"


def open_clip_model_config(name: str) -> dict[str, Any]:
    """The open_clip architecture config (``model_cfg``) of model ``name``: a registered name (the
    project's own models are registered first), a ``local-dir:`` folder's, or an ``hf-hub:``
    model's (from the Hugging Face cache; open_clip asks the hub if it is not there).

    Raises:
        MissingFileError: the config of a ``local-dir:`` or ``hf-hub:`` model cannot be read.
        UnsupportedModelError: open_clip knows no config of that name.
    """
    from lightning_unlearn.clip.loading import register_project_model_configs

    register_project_model_configs()
    try:
        config = open_clip.get_model_config(name)
    except Exception as err:  # a missing file, a hub error (no network): many types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise MissingFileError(f"cannot read the open_clip config of model {name!r}: {first}") from err
    if config is None:
        raise UnsupportedModelError(
            f"open_clip has no config registered as {name!r}, so it cannot be written into an open_clip folder; "
            "models built from a registered name, a local-dir: folder or an hf-hub: model can be"
        )
    return config


def _uses_quick_gelu(model: nn.Module) -> bool:
    return any(isinstance(m, open_clip.transformer.QuickGELU) for m in model.modules())


def _preprocess_config(model: nn.Module) -> dict[str, Any]:
    config = dict(getattr(model.visual, "preprocess_cfg", None) or {})
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def write_open_clip_folder(
    folder: str | Path,
    model: nn.Module,
    model_name: str,
    tokenizer: Optional[Callable[..., Any]] = None,
    metadata: Optional[dict[str, str]] = None,
) -> Path:
    """Write ``model`` as an open_clip ``local-dir:`` folder, atomically (the folder is replaced
    whole, never half-written); returns the folder.

    Args:
        folder: where; loaded with ``open_clip.create_model_and_transforms(f"local-dir:{folder}")``.
        model: the open_clip model (its weights are written as they are).
        model_name: the open_clip name it was built from (its config is the folder's architecture).
        tokenizer: the model's tokenizer; a Hugging Face one (``save_pretrained``) is saved in the
            folder, where open_clip reads it.
        metadata: string metadata of the weights file (safetensors header).

    Raises:
        UnsupportedModelError: no open_clip config is known for ``model_name``.
    """
    folder = Path(folder).absolute()
    model_cfg = json.loads(json.dumps(open_clip_model_config(model_name)))  # a copy
    if _uses_quick_gelu(model):  # OpenAI weights: the plain names' config says nn.GELU
        model_cfg["quick_gelu"] = True
    text_cfg = model_cfg.setdefault("text_cfg", {})
    with atomic_dir(folder) as tmp:
        hf_tower = hf_text_tower(model)
        if hf_tower is not None:  # the tower's config, read by transformers from hf_model_name
            hf_tower.config.save_pretrained(tmp)
            text_cfg.update(hf_model_name=str(folder), hf_model_pretrained=False)
        if hasattr(tokenizer, "save_pretrained"):  # open_clip reads it from the folder itself
            tokenizer.save_pretrained(str(tmp))
            text_cfg["hf_tokenizer_name"] = str(folder)
        elif "hf_tokenizer_name" in text_cfg:
            raise UnsupportedModelError(
                f"model {model_name!r} uses the Hugging Face tokenizer {text_cfg['hf_tokenizer_name']!r}, but no "
                "tokenizer with save_pretrained was given to write into the folder"
            )
        save_open_clip_weights(tmp / OPEN_CLIP_WEIGHTS, model, metadata=metadata)
        atomic_write_json(tmp / OPEN_CLIP_CONFIG, {"model_cfg": model_cfg, "preprocess_cfg": _preprocess_config(model)})
    return folder


def relocate_open_clip_folder(folder: str | Path) -> Path:
    """After moving a folder written by :func:`write_open_clip_folder`: point its
    ``hf_model_name``/``hf_tokenizer_name`` (absolute paths of the folder) at where it is now.
    Nothing to do for a folder without a Hugging Face tower or tokenizer; returns the folder.

    Raises:
        MissingFileError: ``folder`` holds no ``open_clip_config.json``.
    """
    folder = Path(folder).absolute()
    path = folder / OPEN_CLIP_CONFIG
    if not path.is_file():
        raise MissingFileError(f"{str(path)!r} does not exist: {str(folder)!r} is not an open_clip model folder")
    config = json.loads(path.read_text(encoding="utf-8"))
    text_cfg = config.get("model_cfg", {}).get("text_cfg", {})
    changed = False
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if key in text_cfg and text_cfg[key] != str(folder):
            text_cfg[key] = str(folder)
            changed = True
    if changed:
        atomic_write_json(path, config)
    return folder
