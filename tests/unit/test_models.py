"""Model loading (tags, files, project-made weights built on demand) and eligibility, on tiny models."""

from __future__ import annotations

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from lightning_unlearn.core.errors import CheckpointError, ConfigError, MissingFileError, UnknownNameError
from lightning_unlearn.clip.loading import (
    PretrainedProvider,
    build_pretrained,
    eligible_groups,
    eval_mode,
    freeze_ineligible,
    load_clip,
    load_pending_weights,
    register_pretrained,
)


def test_unknown_model_name_lists_close_matches():
    with pytest.raises(UnknownNameError, match=r"unknown open_clip model 'RN05'.*close matches:.*'RN50'"):
        load_clip("RN05")


def test_unknown_pretrained_tag_lists_known_tags():
    with pytest.raises(UnknownNameError, match=r"unknown pretrained tag 'opnai'.*close matches: 'openai'"):
        load_clip("RN50", pretrained="opnai")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(MissingFileError, match=r"pretrained checkpoint '.*nope.safetensors' does not exist"):
        load_clip("tiny-vit", pretrained=str(tmp_path / "nope.safetensors"))


def test_checkpoint_with_wrong_keys_is_rejected(tmp_path):
    path = tmp_path / "rn.pt"
    torch.save(load_clip("tiny-rn").model.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"does not fit this model: \d+ (tensors differ in shape|missing keys)"):
        load_clip("tiny-vit", pretrained=str(path))
    vit = load_clip("tiny-vit").model.state_dict()
    del vit["text_projection"]
    vit["extra.weight"] = torch.zeros(1)
    torch.save(vit, path)
    with pytest.raises(CheckpointError, match=r"does not fit this model: 1 missing keys \(e.g. 'text_projection'\); "
                                               r"1 unexpected keys \(e.g. 'extra.weight'\)"):
        load_clip("tiny-vit", pretrained=str(path))


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"\x00" * 7])
def test_unreadable_checkpoint_is_named(tmp_path, content):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint '.*broken.safetensors' \(truncated"):
        load_clip("tiny-vit", pretrained=str(path))


def test_truncated_safetensors_is_named(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in load_clip("tiny-vit").model.state_dict().items()}, str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_clip("tiny-vit", pretrained=str(path))


def test_local_checkpoint_loads_exactly(tmp_path):
    source = load_clip("tiny-vit").model
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    loaded = load_clip("tiny-vit", pretrained=str(path)).model
    for (name, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_project_weights_are_built_only_when_asked(tmp_path):
    """A provider's weights are found if cached; otherwise `build=False` defers them (no training in a
    constructor) until `build_pretrained` (prepare_data) or `load_pending_weights` (setup)."""
    reference = load_clip("tiny-vit").model
    target = tmp_path / "built.pt"
    builds = []

    def build():
        builds.append(1)
        torch.save(reference.state_dict(), target)
        return target

    register_pretrained("tiny-vit", "unit-test-built", PretrainedProvider(
        find=lambda: target if target.exists() else None, build=build))
    pending = load_clip("tiny-vit", "unit-test-built", build=False)
    assert pending.weights_pending is not None and not builds
    with pytest.raises(MissingFileError, match="are not built yet"):
        load_pending_weights(pending)
    build_pretrained(pending)
    assert builds == [1] and pending.weights_pending is None
    assert torch.equal(pending.model.state_dict()["text_projection"], reference.state_dict()["text_projection"])
    other = load_clip("tiny-vit", "unit-test-built", build=False)  # another process: found in the cache
    assert other.weights_pending is None and builds == [1]


def test_eval_mode_restores_each_submodule():
    model = load_clip("tiny-rn").model
    model.train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.eval()  # deliberately kept in eval mode inside a training model
    with eval_mode(model):
        assert not model.training
    assert model.training and not bn.training


def test_paper_preset_on_resnet_tower():
    model = load_clip("tiny-rn").model
    groups = eligible_groups(model, "paper")
    vision = [n for n, _ in groups["vision"]]
    assert vision and all(n.startswith("visual.attnpool.") for n in vision)
    assert {n.split(".")[2] for n in vision} == {"q_proj", "k_proj", "v_proj", "c_proj"}
    text = [n for n, _ in groups["text"]]
    assert text and all(n.startswith("transformer.resblocks.") for n in text)


def test_blocks_preset_keeps_global_vit_tensors_out():
    model = load_clip("tiny-vit").model
    vision = [n for n, _ in eligible_groups(model, "blocks")["vision"]]
    assert all(n.startswith("visual.transformer.resblocks.") for n in vision)
    paper = [n for n, _ in eligible_groups(model, "paper")["vision"]]
    assert "visual.conv1.weight" in paper and "visual.conv1.weight" not in vision


def test_include_exclude_patterns_and_bad_values():
    model = load_clip("tiny-vit").model
    groups = eligible_groups(model, "paper", include={"vision": [r"\.mlp\."]}, exclude={"text": [r"\.ln_"]})
    assert all(".mlp." in n for n, _ in groups["vision"])
    assert not any(".ln_" in n for n, _ in groups["text"])
    with pytest.raises(ConfigError, match=r"tower 'audio' in include must be one of 'vision', 'text'"):
        eligible_groups(model, "paper", include={"audio": ["x"]})
    with pytest.raises(ConfigError, match="no eligible parameters in the vision tower"):
        eligible_groups(model, "paper", include={"vision": ["does-not-match"]})
    with pytest.raises(ConfigError, match="no tower to update"):
        eligible_groups(model, "paper", include={"vision": [], "text": []})
    with pytest.raises(ConfigError, match=r"eligibility must be one of 'paper', 'blocks', 'all', got 'some'"):
        eligible_groups(model, "some")


def test_an_empty_include_leaves_a_tower_out():
    model = load_clip("tiny-vit").model
    groups = eligible_groups(model, "paper", include={"text": []})
    assert list(groups) == ["vision"] and groups["vision"]
    assert freeze_ineligible(model, groups) == len(groups["vision"])
    assert not any(p.requires_grad for n, p in model.named_parameters() if not n.startswith("visual."))


def test_towers_of_custom_text_clip():
    model = load_clip("tiny-custom").model
    assert type(model).__name__ == "CustomTextCLIP"
    groups = eligible_groups(model, "paper")
    assert all(n.startswith("text.transformer.resblocks.") for n, _ in groups["text"])
    assert all(n.startswith("visual.") for n, _ in groups["vision"])
    names = {n for params in eligible_groups(model, "all").values() for n, _ in params}
    assert "text.token_embedding.weight" in names and "logit_scale" not in names


def test_construction_reads_no_weights_for_any_source(tmp_path, monkeypatch):
    """An open_clip tag, a local checkpoint and a project tag are all only named at construction:
    ``prepare_data`` obtains and loads them (one download/build per node), ``setup`` loads them."""
    from lightning_unlearn import UnlearningModule

    reference = load_clip("tiny-vit").model
    path = tmp_path / "weights.pt"
    torch.save(reference.state_dict(), path)
    reads, downloads = [], []
    real_load = open_clip.load_checkpoint
    monkeypatch.setattr(open_clip, "load_checkpoint", lambda *a, **k: (reads.append(a[1]), real_load(*a, **k))[1])
    # a pretend open_clip tag of the tiny model, "downloaded" to the file above
    real_tags, real_cfg = open_clip.list_pretrained_tags_by_model, open_clip.get_pretrained_cfg
    monkeypatch.setattr(open_clip, "list_pretrained_tags_by_model",
                        lambda name: ["unit-tag"] if name == "tiny-vit" else real_tags(name))
    monkeypatch.setattr(open_clip, "get_pretrained_cfg",
                        lambda name, tag: {"url": "unused", "quick_gelu": False} if tag == "unit-tag" else real_cfg(name, tag))
    monkeypatch.setattr(open_clip, "download_pretrained", lambda cfg, cache_dir=None: (downloads.append(1), str(path))[1])
    register_pretrained("tiny-vit", "unit-project", PretrainedProvider(find=lambda: str(path), build=lambda: str(path)))

    for source in ("unit-tag", str(path), "unit-project"):
        reads.clear(), downloads.clear()
        module = UnlearningModule(model_name="tiny-vit", pretrained=source, forget_classes=["dog"], vocabulary=["dog", "cat"])
        assert not reads and not downloads, source  # nothing read, downloaded or built
        assert module.clip.weights_pending is not None
        module.prepare_data()
        assert reads == [str(path)] and module.clip.weights_pending is None
        assert torch.equal(module.model.state_dict()["text_projection"], reference.state_dict()["text_projection"])
        other = UnlearningModule(model_name="tiny-vit", pretrained=source, forget_classes=["dog"], vocabulary=["dog", "cat"])
        load_pending_weights(other.clip)  # another process, after prepare_data: finds the weights
        assert torch.equal(other.model.state_dict()["text_projection"], reference.state_dict()["text_projection"])
