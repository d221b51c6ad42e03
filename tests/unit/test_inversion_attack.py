"""The textual-inversion attack (maths/textual_inversion.py, evaluation/inversion.py).

A tiny random open_clip model whose text projection is edited (rank one) so that the class
word's prompt points away from its class: the zero-shot target is then near 0, and the attack,
with the model frozen, must bring it back without changing a weight. Image features are the
original model's class embeddings plus small noise (classified correctly by the unedited model).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.evaluation.features import DatasetFeatures
from lightning_unlearn.evaluation.inversion import attack_support, inversion_attack, placeholder_prompt
from lightning_unlearn.maths.textual_inversion import initial_words, learn_word_embeddings, with_rows
from lightning_unlearn.maths.zeroshot import encode_classes

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["anchor", "kite", "rocket", "tree", "boat", "house"]
TEMPLATE = "a photo of a {}."


def hide_class(model: nn.Module, tokenizer, *names: str) -> None:
    """Low-rank edit of the text projection: the pooled feature of each class's prompt maps to the
    negative of its old output; directions orthogonal to them map as before."""
    captured = {}
    handle = model.ln_final.register_forward_hook(lambda m, i, o: captured.__setitem__("x", o))
    tokens = tokenizer([TEMPLATE.format(name) for name in names])
    with torch.no_grad():
        model.encode_text(tokens)
        handle.remove()
        pooled = captured["x"][torch.arange(len(names)), tokens.argmax(dim=-1)]  # [n, width]
        model.text_projection += torch.linalg.pinv(pooled) @ (-2 * (pooled @ model.text_projection))


def features_of(embeddings: torch.Tensor, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(embeddings)).repeat_interleave(per_class)
    gap = torch.cdist(embeddings, embeddings).masked_fill(torch.eye(len(embeddings), dtype=torch.bool), 9).min()
    noise = 0.1 * gap / embeddings.shape[1] ** 0.5
    return embeddings[labels] + noise * torch.randn(len(labels), embeddings.shape[1], generator=generator), labels


@pytest.fixture(scope="module")
def edited(tiny_clip):
    clip = tiny_clip("tiny-vit", fresh=True)  # edited below: not the shared instance
    model = clip.model.eval()
    original = encode_classes(model, clip.tokenizer, CLASSES, [TEMPLATE])
    hide_class(model, clip.tokenizer, "anchor")
    return model, clip.tokenizer, original, encode_classes(model, clip.tokenizer, CLASSES, [TEMPLATE])


@pytest.mark.parametrize("seed", [0, 1, 2])  # the margins below held for seeds 0-4
def test_the_attack_brings_a_hidden_class_back_and_changes_no_weight(edited, seed):
    model, tokenizer, original, vocabulary = edited
    test = DatasetFeatures(*features_of(original, 20, seed))
    images, labels = features_of(original, 8, seed + 100)
    images, labels = images[labels == 0], labels[labels == 0]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    out = inversion_attack(model, tokenizer, TEMPLATE, vocabulary, [0], images, labels, test, words=1, steps=60,
                           lr=1e-2, seed=seed, device=torch.device("cpu"))
    assert out["skipped"] is None
    # hidden by the edit (exactly 0 for seeds 0-4), back after the attack (1.0 for seeds 0-4)
    assert out["target_no_attack"] <= 0.2 and out["target"] >= out["target_no_attack"] + 0.6
    assert out["loss"][1] < out["loss"][0]
    assert 0.0 <= out["other_classes"] <= 1.0
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags
    assert not any(p.grad is not None for p in model.parameters())


def test_more_words_and_the_seed_are_used(edited):
    model, tokenizer, original, vocabulary = edited
    test = DatasetFeatures(*features_of(original, 5, 0))
    images, labels = test.features[test.labels == 0], test.labels[test.labels == 0]
    run = lambda words, seed: inversion_attack(model, tokenizer, TEMPLATE, vocabulary, [0], images, labels, test,  # noqa: E731
                                               words=words, steps=1, lr=1e-2, seed=seed, device=torch.device("cpu"))
    assert run(1, 0)["loss"] == run(1, 0)["loss"]
    assert run(1, 0)["loss"][0] != run(1, 1)["loss"][0] and run(2, 0)["loss"][0] != run(1, 0)["loss"][0]


def test_placeholder_positions(tiny_clip):
    tokenizer = tiny_clip().tokenizer
    tokens, mask = placeholder_prompt(tokenizer, TEMPLATE, 3)
    assert int(mask.sum()) == 3 and mask.nonzero().flatten().tolist() == [5, 6, 7]  # sot a photo of a x x x . eot
    # a template that holds the first placeholder word itself takes the next one
    tokens, mask = placeholder_prompt(tokenizer, "x marks a {}", 1)
    assert int(mask.sum()) == 1 and int(tokens[mask][0]) != int(tokens[1])


def test_a_tower_without_token_embedding_is_skipped_with_a_reason():
    class HFTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text = nn.Linear(2, 2)

    reason = attack_support(HFTower())
    assert reason is not None and "token_embedding" in reason
    out = inversion_attack(HFTower(), None, TEMPLATE, torch.eye(2), [0], torch.zeros(1, 2), torch.zeros(1),
                           DatasetFeatures(torch.zeros(2, 2), torch.tensor([0, 1])), 1, 1, 1e-2, 0, torch.device("cpu"))
    assert out["skipped"] == reason and out["target"] is None


def test_the_pure_optimisation_moves_only_the_words():
    # a linear "text tower": words [K, 1, W] -> their normalised projection; class 0 is learned
    generator = torch.Generator().manual_seed(0)
    projection = torch.randn(8, 4, generator=generator)
    vocabulary = torch.nn.functional.normalize(torch.randn(3, 4, generator=generator), dim=-1)
    images = vocabulary[0].repeat(5, 1) + 0.01 * torch.randn(5, 4, generator=generator)
    init = initial_words(torch.randn(50, 8, generator=generator), 1, 1, seed=0)
    kept = (vocabulary.clone(), images.clone(), init.clone())
    encode = lambda w: torch.nn.functional.normalize(w[:, 0] @ projection, dim=-1)  # noqa: E731
    result = learn_word_embeddings(encode, with_rows(vocabulary, [0], -vocabulary[:1]), [0], images,
                                   torch.zeros(5, dtype=torch.long), init, steps=50, lr=5e-2)
    assert len(result.losses) == 51 and result.losses[-1] < 0.5 * result.losses[0]
    assert torch.nn.functional.cosine_similarity(result.embeddings[0], vocabulary[0], dim=0) > 0.9
    assert all(torch.equal(a, b) for a, b in zip(kept, (vocabulary, images, init)))
    with pytest.raises(ConfigError, match="one set of words per replaced row"):
        learn_word_embeddings(encode, vocabulary, [0, 1], images, torch.zeros(5), init, 1, 1e-2)


def test_two_hidden_classes_each_get_their_own_words(tiny_clip):
    clip = tiny_clip("tiny-vit", fresh=True)
    model, tokenizer = clip.model.eval(), clip.tokenizer
    original = encode_classes(model, tokenizer, CLASSES, [TEMPLATE])
    hide_class(model, tokenizer, "anchor", "tree")
    vocabulary = encode_classes(model, tokenizer, CLASSES, [TEMPLATE])
    test = DatasetFeatures(*features_of(original, 20, 0))
    images, labels = features_of(original, 8, 100)
    keep = (labels == 0) | (labels == 3)
    out = inversion_attack(model, tokenizer, TEMPLATE, vocabulary, [0, 3], images[keep], labels[keep], test, words=2,
                           steps=60, lr=1e-2, seed=0, device=torch.device("cpu"))
    # both hidden by the edit, both back (one learned prompt per class); 0.0 -> 1.0 for seeds 0-4
    assert out["target_no_attack"] <= 0.2 and out["target"] >= out["target_no_attack"] + 0.6
