"""The export as an open_clip ``local-dir:`` folder (clip/export.py, core/io.atomic_dir) and
``local-dir:`` models in the project's loading, in process (the plain-open_clip subprocess is in
tests/integration/test_open_clip_folder.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lightning_unlearn.callbacks import UnlearningReport
from lightning_unlearn.clip.export import (
    OPEN_CLIP_CONFIG,
    OPEN_CLIP_WEIGHTS,
    open_clip_model_config,
    relocate_open_clip_folder,
    write_open_clip_folder,
)
from lightning_unlearn.clip.loading import clip_architecture, load_clip, load_pending_weights
from lightning_unlearn.core.errors import ConfigError, MissingFileError, UnsupportedModelError
from lightning_unlearn.core.io import atomic_dir

pytestmark = pytest.mark.usefixtures("one_thread", "tiny_hf_models")


def test_atomic_dir_replaces_the_folder_whole_or_not_at_all(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    with atomic_dir(folder) as tmp:
        assert tmp.is_dir() and tmp.parent == tmp_path and not any(tmp.iterdir())
        (tmp / "new.txt").write_text("new")
        assert (folder / "old.txt").is_file()  # untouched until the block ends
    assert sorted(p.name for p in folder.iterdir()) == ["new.txt"]
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(folder) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in folder.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_an_open_clip_tower_folder_holds_the_config_and_the_weights(tmp_path, tiny_clip):
    clip = tiny_clip("tiny-vit")
    folder = write_open_clip_folder(tmp_path / "export", clip.model, "tiny-vit", clip.tokenizer,
                                    metadata={"model": "tiny-vit"})
    assert sorted(p.name for p in folder.iterdir()) == [OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS]
    config = json.loads((folder / OPEN_CLIP_CONFIG).read_text())
    assert config["model_cfg"] == open_clip_model_config("tiny-vit")  # no QuickGELU: the config as registered
    assert config["preprocess_cfg"]["size"] == [32, 32] and len(config["preprocess_cfg"]["mean"]) == 3


def test_quick_gelu_is_written_when_the_model_runs_it(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clip = load_clip("tiny-vit", force_quick_gelu=True)
    folder = write_open_clip_folder(tmp_path / "export", clip.model, "tiny-vit", clip.tokenizer)
    assert json.loads((folder / OPEN_CLIP_CONFIG).read_text())["model_cfg"]["quick_gelu"] is True


def test_an_hf_tower_folder_is_self_contained(tmp_path, tiny_hf_clip):
    clip = tiny_hf_clip()
    folder = write_open_clip_folder(tmp_path / "export", clip.model, "tiny-hf", clip.tokenizer)
    names = {p.name for p in folder.iterdir()}
    assert {OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS, "config.json", "tokenizer_config.json"} <= names
    text_cfg = json.loads((folder / OPEN_CLIP_CONFIG).read_text())["model_cfg"]["text_cfg"]
    # every path the config holds is the folder itself, absolute: it loads from any working directory
    assert text_cfg["hf_model_name"] == text_cfg["hf_tokenizer_name"] == str(folder) and folder.is_absolute()
    assert (text_cfg["hf_proj_type"], text_cfg["hf_pooler_type"]) == ("linear", "mean_pooler")
    assert json.loads((folder / "config.json").read_text())["hidden_size"] == 32


def test_a_moved_folder_is_relocated(tmp_path, tiny_hf_clip):
    clip = tiny_hf_clip()
    folder = write_open_clip_folder(tmp_path / "a", clip.model, "tiny-hf", clip.tokenizer)
    moved = Path(shutil.move(str(folder), str(tmp_path / "b")))
    assert relocate_open_clip_folder(moved) == moved
    text_cfg = json.loads((moved / OPEN_CLIP_CONFIG).read_text())["model_cfg"]["text_cfg"]
    assert text_cfg["hf_model_name"] == text_cfg["hf_tokenizer_name"] == str(moved)
    with pytest.raises(MissingFileError, match="is not an open_clip model folder"):
        relocate_open_clip_folder(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-hf"])
def test_a_local_dir_model_loads_its_folder_weights_after_construction(tmp_path, tiny_clip, tiny_hf_clip, name):
    clip = tiny_hf_clip() if name == "tiny-hf" else tiny_clip(name)
    folder = write_open_clip_folder(tmp_path / "export", clip.model, name, clip.tokenizer)
    loaded = clip_architecture(f"local-dir:{folder}")
    assert loaded.weights_file == str(folder / OPEN_CLIP_WEIGHTS) and loaded.weights_pending is not None
    state = clip.model.state_dict()
    assert not all(torch.equal(v, state[k]) for k, v in loaded.model.state_dict().items())  # nothing read yet
    load_pending_weights(loaded)
    assert all(torch.equal(v, state[k]) for k, v in loaded.model.state_dict().items())
    prompts = ["a photo of a cat.", "dog"]
    assert torch.equal(loaded.tokenizer(prompts), clip.tokenizer(prompts))


def test_bad_folders_and_names_are_project_errors(tmp_path):
    with pytest.raises(MissingFileError, match=r"open_clip_config.json' does not exist; a `local-dir:` model is a"):
        clip_architecture(f"local-dir:{tmp_path}")
    with pytest.raises(UnsupportedModelError, match="open_clip has no config registered as 'no-such-model'"):
        open_clip_model_config("no-such-model")
    with pytest.raises(MissingFileError, match="cannot read the open_clip config of model 'hf-hub:org/model'"):
        open_clip_model_config("hf-hub:org/model")  # not in the cache, and the tests never ask a hub
    for bad in ("a/b", "", "..", "unlearned.safetensors"):
        with pytest.raises(ConfigError, match="export_dir must be a folder name inside the output folder"):
            UnlearningReport(export_dir=bad)


def test_a_model_without_a_known_config_still_gets_its_weights_file(tmp_path, tiny_clip):
    from types import SimpleNamespace

    clip = tiny_clip("tiny-vit")
    module = SimpleNamespace(hparams=SimpleNamespace(model_name="no-such-model"), model=clip.model,
                             tokenizer=clip.tokenizer)
    report = UnlearningReport(export_name=None)
    report.report = {}
    with pytest.warns(UserWarning, match="the open_clip folder 'unlearned' was not written .*no config registered"):
        report._export(tmp_path, module, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unlearned.safetensors"]
    assert report.report == {"export": str(tmp_path / "unlearned.safetensors")}
