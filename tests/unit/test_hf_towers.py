"""Hugging Face text towers (open_clip's ``HFTextEncoder``): eligibility, the edit and null-space
methods on ``text.proj``, the textual-inversion attack on the word embeddings, no dropout while
unlearning.

The model is conftest's ``tiny-hf``: a random 2-layer, 32-wide BERT tower behind the packaged
all-MiniLM-L6-v2 tokenizer (``[CLS] ... [SEP]``, padded with 0), mean pooling and a linear
projection to 64; ``tiny-hf-mlp`` has open_clip's MLP projection. Nothing asks a hub.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from lightning_unlearn import UnlearningModule
from lightning_unlearn.clip.loading import eligible_groups, hf_encoder_layers, hf_text_tower
from lightning_unlearn.clip.text_projection import locate_text_projection, pooled_text_features
from lightning_unlearn.core.errors import UnsupportedModelError
from lightning_unlearn.evaluation.features import DatasetFeatures
from lightning_unlearn.evaluation.inversion import attack_support, inversion_attack, placeholder_prompt
from lightning_unlearn.maths.zeroshot import encode_classes
from lightning_unlearn.methods import NullSpaceProjection, TextProjectionEdit

pytestmark = pytest.mark.usefixtures("one_thread", "tiny_hf_models")

VOCAB = ["cat", "dog", "car", "tree", "boat", "house", "bird", "chair"]
FAST = dict(composed_templates=4, generic_vocabulary=["apple", "river", "mountain", "piano"], retain_templates_per_class=4)
TEMPLATE = "a photo of a {}."


def hf_module(method, name: str = "tiny-hf", forget=("dog",)) -> UnlearningModule:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = UnlearningModule(model_name=name, pretrained=None, forget_classes=list(forget), vocabulary=VOCAB,
                                  method=method)
    module.resolve_spec({})
    return module


def embed(module: UnlearningModule, prompts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return module.model.eval().encode_text(module.tokenizer(prompts)).double()


# --- eligibility ----------------------------------------------------------------------------------
def test_paper_eligibility_is_the_encoder_layers(tiny_hf_clip, tiny_clip):
    model = tiny_hf_clip().model
    text_names = [n for n, _ in model.named_parameters() if n.startswith("text.")]
    layers = [n for n in text_names if n.startswith("text.transformer.encoder.layer.")]
    assert len(layers) == 32  # 2 BERT layers x 16 tensors
    for preset in ("paper", "blocks"):
        assert [n for n, _ in eligible_groups(model, preset)["text"]] == layers
    everything = [n for n, _ in eligible_groups(model, "all")["text"]]
    assert everything == text_names and "text.proj.weight" in everything
    assert "text.transformer.embeddings.word_embeddings.weight" in everything
    # open_clip's own towers keep the published selection: the transformer blocks
    vit = [n for n, _ in eligible_groups(tiny_clip("tiny-vit").model, "paper")["text"]]
    assert vit and all(n.startswith("transformer.resblocks.") for n in vit)


def test_the_encoder_layers_are_found_in_other_layouts():
    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.Linear(8, 8)
            self.inner = nn.ModuleList([nn.Linear(8, 8), nn.LayerNorm(8)])  # mixed types: not a layer stack

    class Encoder(nn.Module):  # an NLLB/M2M100-like encoder: embed_tokens, layers, layer_norm
        def __init__(self) -> None:
            super().__init__()
            self.embed_tokens = nn.Embedding(10, 8)
            self.layers = nn.ModuleList([Layer() for _ in range(3)])
            self.heads = nn.ModuleList([nn.Linear(8, 1)])  # smaller: not the encoder's layers

    tower = nn.Module()
    tower.transformer = Encoder()
    assert hf_encoder_layers(tower) == "layers"
    tower.transformer = nn.Sequential(nn.Linear(8, 8))
    with pytest.raises(UnsupportedModelError, match="no list of encoder layers.*`include`"):
        hf_encoder_layers(tower)


# --- the projection --------------------------------------------------------------------------------
def test_the_projection_is_text_proj_and_pooled_features_reproduce_encode_text(tiny_hf_clip):
    clip = tiny_hf_clip()
    proj = locate_text_projection(clip.model)
    assert (proj.name, proj.kind, proj.in_features, proj.out_features) == ("text.proj", "linear", 32, 64)
    assert proj.parameter_names() == ["text.proj.weight"] and not proj.has_bias
    tokens = clip.tokenizer(["a photo of a cat.", "dog", "a very small photo of a bird in a tree"])
    pooled = pooled_text_features(clip.model, tokens, batch_size=2)
    with torch.no_grad():
        expected = clip.model.eval().encode_text(tokens)
    assert pooled.shape == (3, 32)
    torch.testing.assert_close(proj.augment(pooled).float() @ proj.matrix().float(), expected, atol=1e-5, rtol=1e-5)


def test_batches_are_cut_after_their_padding_with_the_same_features(tiny_hf_clip):
    clip = tiny_hf_clip()
    widths: list[int] = []
    hook = clip.model.text.transformer.register_forward_pre_hook(
        lambda _m, args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        tokens = clip.tokenizer(["dog", "a photo of a cat.", "a blurry photo of a small bird in a tall tree", "car"])
        full = pooled_text_features(clip.model, tokens, batch_size=2, trim=False)
        assert widths == [8, 14]  # unsorted; the tower itself still drops padding common to a batch (cut_hf_padding)
        widths.clear()
        cut = pooled_text_features(clip.model, tokens, batch_size=2)
        assert widths == [3, 14]  # [CLS] dog [SEP], [CLS] car [SEP]; then the two longer prompts
        torch.testing.assert_close(cut, full, rtol=0, atol=1e-5)
        widths.clear()
        left = torch.cat([tokens[:, -1:], tokens[:, :-1]], dim=1)  # a pad on the left: not sorted and cut by length,
        pooled_text_features(clip.model, left, batch_size=4)       # only the columns of padding in every prompt go
        assert widths == [15]
    finally:
        hook.remove()


@pytest.mark.parametrize("method", [TextProjectionEdit(**FAST), NullSpaceProjection()])
def test_an_mlp_projection_is_a_clear_error_before_any_change(method):
    module = hf_module(method, name="tiny-hf-mlp")
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    message = (r"Hugging Face text tower of CustomTextCLIP \(BertModel\) has no final linear projection: `text.proj` "
               r"is an MLP \(Linear -> GELU -> Linear: open_clip's hf_proj_type 'mlp'\).*support hf_proj_type 'linear'")
    with pytest.raises(UnsupportedModelError, match=message):
        module.method.setup(module)
    with pytest.raises(UnsupportedModelError, match=message):
        module.method.apply(module)
    assert all(torch.equal(v, before[k]) for k, v in module.model.state_dict().items())


def test_an_identity_projection_is_named(tiny_hf_clip):
    clip = tiny_hf_clip("linear", fresh=True)
    hf_text_tower(clip.model).proj = nn.Identity()
    with pytest.raises(UnsupportedModelError, match="`text.proj` is an identity .* no projection to edit"):
        locate_text_projection(clip.model)


# --- the methods -----------------------------------------------------------------------------------
def test_the_edit_writes_text_proj_only_and_moves_the_forgotten_class():
    module = hf_module(TextProjectionEdit(rank_per_class=1, **FAST))
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    forget, others = [TEMPLATE.format("dog")], [TEMPLATE.format(c) for c in VOCAB if c != "dog"]
    old_forget, old_others = embed(module, forget), embed(module, others)
    report = module.method.apply(module)
    changed = [k for k, v in module.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == ["text.proj.weight"] and report["projection"] == "text.proj"
    cosine = torch.nn.functional.cosine_similarity
    assert float(cosine(embed(module, forget), old_forget)) < 0.9
    assert float(cosine(embed(module, others), old_others).min()) > 0.99


def test_nullspace_projects_the_class_out_of_text_proj():
    module = hf_module(NullSpaceProjection(side="text"))
    target = embed(module, [t.format("dog") for t in module.spec.vocabulary.templates])
    report = module.method.apply(module)
    assert report["changed"] == ["text.proj.weight"]
    direction = torch.nn.functional.normalize(target.mean(0), dim=0)
    assert float(embed(module, ["a photo of a dog."]) @ direction) == pytest.approx(0.0, abs=1e-4)
    assert float(embed(module, ["a photo of a car."]).norm()) > 0.1


def test_nullspace_on_the_image_side_takes_any_text_tower():
    module = hf_module(NullSpaceProjection(side="image"), name="tiny-hf-mlp")  # the MLP is only read
    module.method.setup(module)
    target = embed(module, [t.format("dog") for t in module.spec.vocabulary.templates])
    report = module.method.apply(module)
    assert report["changed"] == ["visual.proj"]
    direction = torch.nn.functional.normalize(target.mean(0), dim=0)
    with torch.no_grad():
        images = module.model.encode_image(torch.randn(3, 3, 32, 32)).double()
    assert float((images @ direction).abs().max()) < 1e-4


# --- no dropout while unlearning -------------------------------------------------------------------
def test_dropout_is_off_in_training_mode_and_text_features_repeat():
    module = hf_module(TextProjectionEdit(**FAST))
    dropouts = [m for m in module.model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and any(m.p > 0 for m in dropouts)  # BERT's hidden/attention dropout
    module.train()
    assert not any(m.training for m in dropouts) and module.model.visual.training
    labels = torch.tensor(module.spec.forget_indices)
    torch.testing.assert_close(module.forget_text_features(labels), module.forget_text_features(labels), rtol=0, atol=0)


# --- the textual-inversion attack ------------------------------------------------------------------
def test_placeholder_positions_with_the_hf_tokenizer(tiny_hf_clip):
    tokenizer = tiny_hf_clip().tokenizer
    tokens, mask = placeholder_prompt(tokenizer, TEMPLATE, 3)
    # [CLS] a photo of a x x x . [SEP] [PAD]...: special tokens and padding are not placeholders
    assert mask.nonzero().flatten().tolist() == [5, 6, 7]
    assert int(tokens[0]) == tokenizer.tokenizer.cls_token_id and int(tokens[-1]) == tokenizer.tokenizer.pad_token_id
    tokens, mask = placeholder_prompt(tokenizer, "x marks a {}", 1)  # the first word is taken: the next one
    assert int(mask.sum()) == 1 and int(tokens[mask][0]) != int(tokens[1])


def hide_class(model: nn.Module, tokenizer, name: str) -> None:
    """Edit ``text.proj`` so that the class's prompt maps to the negative of its old embedding."""
    pooled = pooled_text_features(model, tokenizer([TEMPLATE.format(name)])).double()  # [1, 32]
    with torch.no_grad():
        weight = model.text.proj.weight  # [64, 32]
        out = pooled @ weight.double().T
        weight += (torch.linalg.pinv(pooled) @ (-2 * out)).T.to(weight)


def test_the_attack_reaches_the_hf_word_embeddings_and_brings_a_hidden_class_back(tiny_hf_clip):
    clip = tiny_hf_clip("linear", fresh=True)
    model, tokenizer = clip.model.eval(), clip.tokenizer
    classes = ["anchor", "kite", "rocket", "tree"]
    assert attack_support(model) is None
    original = encode_classes(model, tokenizer, classes, [TEMPLATE])
    hide_class(model, tokenizer, "anchor")
    vocabulary = encode_classes(model, tokenizer, classes, [TEMPLATE])
    labels = torch.arange(len(classes)).repeat_interleave(6)
    generator = torch.Generator().manual_seed(0)
    features = original[labels] + 0.01 * torch.randn(len(labels), original.shape[1], generator=generator)
    test = DatasetFeatures(features, labels)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    out = inversion_attack(model, tokenizer, TEMPLATE, vocabulary, [0], features[labels == 0], labels[labels == 0],
                           test, words=1, steps=40, lr=5e-2, seed=0, device=torch.device("cpu"))
    assert out["skipped"] is None and out["loss"][1] < out["loss"][0]
    assert out["target_no_attack"] <= 0.2 and out["target"] >= out["target_no_attack"] + 0.6
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_the_hook_sits_on_the_word_embeddings(tiny_hf_clip):
    from lightning_unlearn.evaluation.inversion import token_embedding

    model = tiny_hf_clip().model
    embedding = token_embedding(model)
    assert embedding is model.text.transformer.embeddings.word_embeddings
    assert re.search("token embedding", attack_support(nn.Module()) or "")


def test_the_tower_runs_only_up_to_its_batch_s_last_real_token(tiny_hf_clip):
    """clip.loading.cut_hf_padding: columns of padding in every prompt are dropped before the
    transformer; the features are those of the full, padded context."""
    from open_clip.hf_model import HFTextEncoder

    from lightning_unlearn.clip.loading import cut_hf_padding

    clip = tiny_hf_clip()
    tower = hf_text_tower(clip.model)
    tokens = clip.tokenizer(["a photo of a dog.", "a boat on a river at dawn"])
    assert int((tokens != 0).sum(dim=1).max()) < tokens.shape[1]  # there is padding to cut
    seen: list[int] = []
    handle = tower.transformer.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["input_ids"].shape[1]),
                                                         with_kwargs=True)
    try:
        with torch.no_grad():
            cut = clip.model.encode_text(tokens)
            full = HFTextEncoder.forward(tower, tokens)  # forward() itself: no hooks, the padded context
    finally:
        handle.remove()
    assert seen == [int((tokens != 0).sum(dim=1).max()), tokens.shape[1]]
    torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-6)
    assert cut_hf_padding(clip.model) is False  # installed once, when the model was built


# --- building an HF tower from its own pretrained weights (pretraining demo-clip-lit) -------------
# transformers' report when the checkpoint's BERT pooler is not built (the text as printed, colours kept)
POOLER_ONLY_REPORT = (
    "\x1b[1mBertModel LOAD REPORT\x1b[0m from: /somewhere/model\n"
    "Key                 | Status     |  | \n"
    "--------------------+------------+--+-\n"
    "pooler.dense.bias   | \x1b[38;5;208mUNEXPECTED\x1b[0m |  | \n"
    "pooler.dense.weight | UNEXPECTED |  | \n\n"
    "Notes:\n- UNEXPECTED:\tcan be ignored when loading from different task/architecture; not ok if you expect identical arch.")


def test_only_a_report_of_the_unused_pooler_is_expected():
    from lightning_unlearn.clip.loading import expected_hf_load_report

    assert expected_hf_load_report(POOLER_ONLY_REPORT)
    assert expected_hf_load_report(POOLER_ONLY_REPORT.replace("pooler.dense", "bert.pooler.dense"))
    missing = POOLER_ONLY_REPORT.replace("Notes:", "encoder.layer.0.output.dense.weight | MISSING |  | \n\nNotes:")
    assert not expected_hf_load_report(missing)
    other = POOLER_ONLY_REPORT.replace("pooler.dense.weight", "encoder.layer.0.extra")
    assert not expected_hf_load_report(other)
    assert not expected_hf_load_report("BertModel LOAD REPORT from: x\n(a format this cannot read)")
    assert not expected_hf_load_report("some other warning")


def _pretrained_tiny_bert(folder, drop: tuple[str, ...] = ()) -> str:
    """A tiny BERT saved with its pooler (as MiniLM's checkpoint is) and an open_clip config that
    builds a mean-pooled tower from it with its weights; ``drop``: tensors removed from the file."""
    import json

    import open_clip
    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64))
    bert.save_pretrained(folder / "bert")
    weights = folder / "bert" / "model.safetensors"
    tensors = load_file(str(weights))
    assert any(k.startswith("pooler.") for k in tensors)
    save_file({k: v for k, v in tensors.items() if k not in drop}, str(weights), metadata={"format": "pt"})
    name = f"tiny-hf-pretrained-{len(drop)}"
    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
              "text_cfg": {"hf_model_name": str(folder / "bert"), "hf_tokenizer_name": str(folder / "bert"),
                           "hf_pooler_type": "mean_pooler", "hf_proj_type": "linear", "hf_model_pretrained": True,
                           "context_length": 16}}
    (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(str(folder / f"{name}.json"))
    return name


def test_the_expected_notices_of_a_pretrained_hf_tower_are_quiet_and_others_are_not(tmp_path, caplog, capfd):
    import logging

    import open_clip

    from lightning_unlearn.clip.loading import quiet_hf_pretrained_load

    def notices() -> str:
        text = "\n".join(r.getMessage() for r in caplog.records)
        caplog.clear()
        return text + capfd.readouterr().err  # the records (pytest captures the loggers), the bars

    name = _pretrained_tiny_bert(tmp_path)
    capfd.readouterr()
    caplog.set_level(logging.WARNING)
    open_clip.create_model(name)  # without the context: both notices (the test can fail)
    text = notices()
    assert "LOAD REPORT" in text and f"Model {name} initialized partially." in text and "Loading weights" in text
    with quiet_hf_pretrained_load(name):
        model = open_clip.create_model(name)
        logging.getLogger().warning("another warning")
    text = notices()
    assert "LOAD REPORT" not in text and "initialized partially" not in text and "Loading weights" not in text
    assert "another warning" in text
    # the weights were read: the tower is the saved BERT's
    saved = open_clip.create_model(name).text.transformer.encoder.layer[0].output.dense.weight
    assert torch.equal(model.text.transformer.encoder.layer[0].output.dense.weight, saved)
    # a tensor missing from the checkpoint is reported as before
    (tmp_path / "b").mkdir()
    broken = _pretrained_tiny_bert(tmp_path / "b", drop=("encoder.layer.0.output.dense.weight",))
    notices()
    with quiet_hf_pretrained_load(broken):
        open_clip.create_model(broken)
    assert "LOAD REPORT" in notices()


# --- re-encoding the same prompts from the lowest changed layer (PrefixCachedEncoder) --------------
def test_the_prefix_cache_gives_the_whole_towers_features_and_runs_only_the_changed_layers(tiny_hf_clip):
    from lightning_unlearn.clip.prefix_cache import PrefixCachedEncoder

    clip = tiny_hf_clip(fresh=True)
    model, tokens = clip.model.eval(), clip.tokenizer([f"a photo of a {c}." for c in VOCAB] + ["a dog"])
    encoder = PrefixCachedEncoder(model)
    assert encoder.active and len(encoder.layers) == 2
    layer = model.text.transformer.encoder.layer

    def check(expected_layers: int) -> torch.Tensor:
        with torch.no_grad():
            got = encoder(tokens)
            assert torch.equal(got, model.encode_text(tokens))  # bitwise the whole tower's features
        assert encoder.layers_run == expected_layers
        return got

    first = check(2)
    with torch.no_grad():
        layer[1].output.dense.bias.add_(0.05)  # a change in the top layer: only it runs again
        assert not torch.equal(check(1), first)
        check(1)  # nothing changed: the last layer runs (its input still checked)
        layer[0].attention.self.value.weight.mul_(1.1)  # the bottom layer: both run
        check(2)
        model.text.proj.weight.mul_(0.9)  # above the encoder: the last layer only, the new projection
        check(1)
        model.text.transformer.embeddings.word_embeddings.weight[:, 0].add_(0.1)  # below: everything
        check(2)
        check(1)
    other = clip.tokenizer(["a photo of a cat."])  # other tokens: the whole tower
    with torch.no_grad():
        assert torch.equal(encoder(other), model.encode_text(other)) and encoder.layers_run == 2
    with torch.enable_grad():  # a call with gradients, or in training mode, is the plain encode
        assert encoder(tokens).requires_grad


def test_the_prefix_cache_passes_other_towers_through(tiny_clip):
    from lightning_unlearn.clip.prefix_cache import PrefixCachedEncoder

    clip = tiny_clip("tiny-vit")
    encoder = PrefixCachedEncoder(clip.model)
    tokens = clip.tokenizer(["a photo of a dog."])
    assert not encoder.active
    with torch.no_grad():
        assert torch.equal(encoder(tokens), clip.model.encode_text(tokens))
