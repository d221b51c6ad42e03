"""demo-clip-lit: the demo CLIP with a locked Hugging Face text tower (LiT) and robustness training.

Fast tests build the same design on a tiny random BERT (width 32, 2 layers) saved to a temporary
folder with the packaged MiniLM's tokenizer files; the tests that load the real MiniLM or pretrain
for minutes are ``slow``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import open_clip
import pytest
import torch

from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.demo import lit

TINY = "tiny-lit-test"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def _tiny_bert(folder: Path, seed: int = 0) -> Path:
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(seed)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    for name in _TOKENIZER_FILES:
        shutil.copy(lit.text_model_dir() / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = _tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
    lit.register_lit_model(TINY, folder, context_length=16)
    return folder


def test_the_config_names_the_packaged_model_and_the_cache_key_does_not(tiny_text: Path) -> None:
    config = lit.lit_model_config()
    folder = str(lit.text_model_dir())
    assert config["text_cfg"]["hf_model_name"] == folder
    assert config["text_cfg"]["hf_pooler_type"] == "mean_pooler"
    assert "demo-clip-lit" in open_clip.list_models()  # registered on import of lightning_unlearn.demo
    portable = lit.portable_model_config(config)
    assert folder not in str(portable)
    assert portable["text_cfg"]["hf_model_files"] == lit.text_model_hash(folder)
    assert portable["vision_cfg"] == config["vision_cfg"]


def test_the_text_model_hash_follows_the_files(tmp_path: Path, tiny_text: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_text, copy)
    assert lit.text_model_hash(copy) == lit.text_model_hash(tiny_text)  # content, not place
    (copy / "vocab.txt").write_text((copy / "vocab.txt").read_text() + "newword\n")
    assert lit.text_model_hash(copy) != lit.text_model_hash(tiny_text)
    with pytest.raises(Exception, match="no Hugging Face model files"):
        lit.text_model_hash(tmp_path / "empty")


def test_locked_features_equal_the_towers_and_each_caption_runs_once(tiny_text: Path) -> None:
    from lightning_unlearn.demo.pretrain import DemoClipPretraining

    module = DemoClipPretraining(model_name=TINY, lock_text=True)
    model = module.model.eval()
    tokens = module.tokenizer(["a photo of a kite.", "a kite.", "a wax light with a wick, in the dark"])
    calls = []
    hook = model.text.transformer.register_forward_hook(lambda m, i, o: calls.append(1))
    first = module.encode_captions(tokens)
    again = module.encode_captions(tokens[[2, 0]])
    hook.remove()
    assert len(calls) == 1 and len(module.locked_text) == 3
    assert torch.allclose(first, model.encode_text(tokens, normalize=True), atol=1e-5)
    assert torch.equal(again, first[[2, 0]])
    # the projection still trains through the cached features
    first.sum().backward()
    assert model.text.proj.weight.grad is not None and model.text.proj.weight.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in model.text.transformer.parameters())


def test_lock_text_needs_an_hf_text_tower() -> None:
    from lightning_unlearn.demo.pretrain import DemoClipPretraining

    with pytest.raises(ConfigError, match="lock_text needs an open_clip HF text tower"):
        DemoClipPretraining(model_name="demo-clip-rn", lock_text=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"adv_radius": -1.0}, "adv_radius must be a finite number >= 0, got -1.0"),
    ({"adv_steps": 0}, "adv_steps must be an int >= 1, got 0"),
    ({"adv_fraction": 1.5}, r"adv_fraction must be a number in \[0, 1\], got 1.5"),
])
def test_robustness_settings_are_checked(kwargs: dict, message: str, tiny_text: Path) -> None:
    from lightning_unlearn.demo.pretrain import DemoClipPretraining

    with pytest.raises(ConfigError, match=message):
        DemoClipPretraining(model_name=TINY, **kwargs)


def test_adversarial_training_attacks_the_chosen_share_of_groups(tiny_text: Path, monkeypatch) -> None:
    from lightning_unlearn.demo import pretrain

    seen = []
    real = pretrain.l2_pgd

    def spy(loss_fn, images, radius, steps, step_size=None):
        out = real(loss_fn, images, radius, steps, step_size)
        seen.append((images.shape[0], radius, steps, loss_fn(out).item() - loss_fn(images).item(),
                     (out - images).flatten(1).norm(dim=1).max().item()))
        return out

    monkeypatch.setattr(pretrain, "l2_pgd", spy)
    torch.manual_seed(0)
    module = pretrain.DemoClipPretraining(model_name=TINY, lock_text=True, adv_radius=2.0, adv_steps=2,
                                          adv_fraction=0.5)
    module.log = lambda *a, **k: None  # no Trainer here
    classes = 34
    images = torch.randn(4, classes, 3, 32, 32)
    tokens = module.tokenizer([f"a photo of a thing number {i}." for i in range(classes)])
    loss = module.training_step((images, tokens), 0)
    assert loss.requires_grad
    [(n, radius, steps, gain, norm)] = seen
    assert (n, radius, steps) == (2 * classes, 2.0, 2)  # half of the 4 groups
    assert gain > 0 and norm <= 2.0 + 1e-4            # the attack raised the loss within the ball
    assert module.adversarial_groups(4) == 2
    module.hparams.adv_radius = 0.0
    assert module.adversarial_groups(4) == 0


def test_cache_keys_keep_demo_clip_rn_and_follow_the_lit_settings(tiny_text: Path) -> None:
    from lightning_unlearn.demo.cache import LIT_DEFAULTS, demo_settings, lit_settings

    rn = demo_settings()
    assert "lock_text" not in rn and "adv_radius" not in rn  # demo-clip-rn's cache key is unchanged
    lit_default = lit_settings()
    assert lit_default["model_name"] == "demo-clip-lit" and lit_default["lock_text"] is True
    assert lit_default["model_config"]["text_cfg"]["hf_model_files"] == lit.text_model_hash(lit.text_model_dir())
    assert {k: lit_default[k] for k in LIT_DEFAULTS} == LIT_DEFAULTS
    assert lit_settings(adv_radius=1.5) != lit_default
    tiny = lit_settings(model_name=TINY)
    assert tiny["model_config"]["text_cfg"]["hf_model_files"] == lit.text_model_hash(tiny_text)


def test_pretraining_a_tiny_lit_clip_into_the_cache_locks_the_language_model(tiny_text: Path, tmp_path: Path) -> None:
    from lightning_unlearn.clip.loading import load_clip
    from lightning_unlearn.demo.cache import ensure_demo_clip_lit, read_manifest

    before = {k: v.clone() for k, v in open_clip.create_model(TINY).state_dict().items()}
    path = ensure_demo_clip_lit(steps=3, cache_dir=tmp_path, progress=False, model_name=TINY,
                                train_per_class=2, batch_repeats=2, adv_radius=1.0, adv_steps=1,
                                adv_fraction=0.5)
    meta = read_manifest(path)
    assert meta["settings"]["adv_radius"] == 1.0 and set(meta["zero_shot_accuracy"]) == {"objects", "textures"}
    after = load_clip(TINY, str(path)).model.state_dict()
    language = [k for k in before if k.startswith("text.transformer.")]
    trained = [k for k in before if k.startswith(("visual.", "text.proj"))]
    assert language and all(torch.equal(before[k], after[k]) for k in language)
    assert any(not torch.equal(before[k], after[k]) for k in trained)


@pytest.mark.slow
def test_lit_pretraining_config_runs_from_the_cli(tmp_path: Path) -> None:
    from lightning_unlearn.cli import main

    export = tmp_path / "lit.safetensors"
    config = Path(__file__).resolve().parents[2] / "configs" / "demo_pretrain_lit.yaml"
    cli = main(["fit", "--config", str(config),
                "--data.init_args.train_per_class", "4", "--data.init_args.val_per_class", "2",
                "--trainer.max_steps", "3", "--trainer.val_check_interval", "3",
                "--model.init_args.export", str(export),
                "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])
    assert cli.trainer.global_step == 3
    assert cli.model.locked_text is not None and len(cli.model.locked_text) > 0
    assert export.is_file()


@pytest.mark.slow
def test_demo_clip_lit_reads_language() -> None:
    """The full recipe (minutes): accurate at the evaluation template and by paraphrase."""
    from lightning_unlearn.clip.loading import load_clip
    from lightning_unlearn.demo.cache import ensure_demo_clip_lit, read_manifest

    path = ensure_demo_clip_lit(progress=False)
    accuracy = read_manifest(path)["zero_shot_accuracy"]
    assert accuracy["objects"] >= 0.9 and accuracy["textures"] >= 0.9
    clip = load_clip("demo-clip-lit", str(path))
    assert type(clip.model).__name__ == "CustomTextCLIP"


def test_the_demo_world_tag_of_demo_clip_lit_is_the_cache(tmp_path: Path, monkeypatch) -> None:
    from lightning_unlearn.clip.loading import PretrainedProvider, weights_source
    from lightning_unlearn.demo import cache

    monkeypatch.setenv("LIGHTNING_UNLEARN_CACHE", str(tmp_path))
    source = weights_source("demo-clip-lit", "demo-world")
    assert isinstance(source, PretrainedProvider)
    assert source.cached() is None  # nothing trained in an empty cache
    weights, _ = cache.cache_paths(cache.lit_settings())
    assert weights.name.startswith("demo-clip-lit-seed0-") and weights.parent.parent == tmp_path
