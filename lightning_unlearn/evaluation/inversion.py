"""The textual-inversion attack on a frozen open_clip model (``evaluation.recovery.inversion``).

The maths is :func:`~lightning_unlearn.maths.textual_inversion.learn_word_embeddings`; this
module puts the learned words into the prompt of the text tower (a forward hook on its token
embedding replaces the embeddings at the placeholder positions of the evaluation template), keeps
every weight frozen, and measures the test split with the learned prompt in the vocabulary.

The token embedding is open_clip's ``token_embedding`` (``CLIP``, ``CustomTextCLIP``) or a Hugging
Face tower's word embeddings (``get_input_embeddings()``: the position and token-type embeddings
are added after the hook, as for the real words). The placeholder positions are found by
tokenising the template twice, with two different placeholder words, so any tokenizer's special
tokens and padding are left where they are. A tower with neither is not attacked:
:func:`attack_support` says why, and the report carries that reason.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightning_unlearn.clip.loading import hf_text_tower
from lightning_unlearn.evaluation.features import DatasetFeatures
from lightning_unlearn.evaluation.templates import split_from_features
from lightning_unlearn.maths.textual_inversion import initial_words, learn_word_embeddings, with_rows

#: Single-token words tried, in turn, as the placeholder of the class word (one absent from the template wins).
PLACEHOLDERS = ("x", "z", "q", "j")


def token_embedding(model: nn.Module) -> Optional[nn.Embedding]:
    """The text tower's token embedding: open_clip's ``token_embedding`` (``CLIP`` or
    ``CustomTextCLIP`` with a ``TextTransformer``), a Hugging Face tower's word embeddings; or None
    for a tower this attack cannot handle."""
    hf_tower = hf_text_tower(model)
    if hf_tower is not None:
        embedding = hf_tower.transformer.get_input_embeddings()
        return embedding if isinstance(embedding, nn.Embedding) else None
    for tower in (model, getattr(model, "text", None)):
        embedding = getattr(tower, "token_embedding", None)
        if isinstance(embedding, nn.Embedding) and hasattr(tower, "transformer"):
            return embedding
    return None


def attack_support(model: nn.Module) -> Optional[str]:
    """None if the attack can run on ``model``; else the reason it is skipped."""
    if token_embedding(model) is None:
        tower = type(getattr(model, "text", model)).__name__
        return (f"the text tower ({tower}) has no token embedding the attack can reach (open_clip's token_embedding "
                "with its transformer, or a Hugging Face tower's input embeddings)")
    return None


def placeholder_prompt(tokenizer: Callable[[list[str]], torch.Tensor], template: str,
                       words: int) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """Token ids ``[L]`` of ``template`` with ``words`` placeholder words for the class, and the
    mask ``[L]`` of the placeholder positions; None if no placeholder is a single token absent
    from the template.

    Tokenizer-agnostic: the template is tokenised with each placeholder and with another one; the
    positions where the two differ are the placeholder's, and they count if there are ``words`` of
    them, all one token that appears nowhere else in the prompt (start, end, padding and any
    other special token are the same in both and never differ).
    """
    filled = {word: tokenizer([template.format(" ".join([word] * words))])[0] for word in PLACEHOLDERS}
    for word in PLACEHOLDERS:
        tokens = filled[word]
        for other in PLACEHOLDERS:
            if other == word or filled[other].shape != tokens.shape:
                continue
            mask = tokens != filled[other]
            ids = tokens[mask].unique()
            if int(mask.sum()) == words and len(ids) == 1 and int((tokens == ids[0]).sum()) == words:
                return tokens, mask
    return None


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """No parameter of ``model`` takes a gradient inside; each gets its flag back afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for param, _ in flags:
            param.requires_grad_(False)
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


@contextlib.contextmanager
def words_in_prompt(embedding: nn.Embedding, mask: torch.Tensor, words: list[Optional[torch.Tensor]]) -> Iterator[None]:
    """While inside, the token embedding's output at ``mask`` (``[K, L]``) is ``words[0]``
    ``[K, n, W]`` (the caller sets ``words[0]`` before each encoding)."""

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if words[0] is None or output.shape[0] != mask.shape[0] or output.shape[1] > mask.shape[1]:
            return output
        # a tower that cut its trailing padding (clip.loading.cut_hf_padding) sees fewer positions;
        # the placeholders are real tokens, so they are all still there
        cut = mask[:, : output.shape[1]]
        if int(cut.sum()) != int(mask.sum()):
            return output
        out = output.clone()
        out[cut.to(out.device)] = words[0].reshape(-1, out.shape[-1]).to(out)
        return out

    handle = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def inversion_attack(
    model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    template: str,
    vocabulary: torch.Tensor,
    targets: Sequence[int],
    image_features: torch.Tensor,
    labels: torch.Tensor,
    test: DatasetFeatures,
    words: int,
    steps: int,
    lr: float,
    seed: int,
    device: torch.device,
    progress: Optional[Callable[[int], None]] = None,
    chunk: int = 128,
) -> dict[str, Any]:
    """Learn ``words`` pseudo-words per forgotten class in place of the class word of ``template``
    from real images of those classes, the model frozen; measure the test split with them.

    Args:
        model: an open_clip model (unchanged: its weights and ``requires_grad`` flags are as before).
        tokenizer: its tokenizer.
        template: the evaluation template (one ``{}``) whose class word is replaced.
        vocabulary: ``[C, D]`` normalised class embeddings of the dataset under ``template``.
        targets: the forgotten classes' labels (rows of ``vocabulary``).
        image_features: ``[M, D]`` features of the real (non-test) images the attack learns from.
        labels: ``[M]`` their labels, each in ``targets``.
        test: the test split's features and labels.
        words, steps, lr, seed: the attack's settings (words per class, Adam steps and rate, seed
            of the starting words).
        device: where the text tower runs.
        progress: called with the steps done.

    Returns:
        ``target`` and ``other_classes`` (test accuracy with the learned prompts in the
        vocabulary), ``target_no_attack`` (with the class words), ``loss`` (first and last),
        ``skipped`` (None, or why the attack did not run: then every figure is None).
    """
    out: dict[str, Any] = {"target": None, "other_classes": None, "target_no_attack": None, "loss": None,
                           "skipped": attack_support(model)}
    if out["skipped"] is not None:
        return out
    prompt = placeholder_prompt(tokenizer, template, words)
    if prompt is None:
        out["skipped"] = f"no single-token placeholder word {PLACEHOLDERS} fits the template {template!r}"
        return out
    tokens, mask = prompt
    embedding = token_embedding(model)
    assert embedding is not None
    rows = list(targets)
    batch_tokens = tokens.unsqueeze(0).repeat(len(rows), 1).to(device)
    batch_mask = mask.unsqueeze(0).repeat(len(rows), 1)
    slot: list[Optional[torch.Tensor]] = [None]

    def encode_words(current: torch.Tensor) -> torch.Tensor:
        slot[0] = current
        return F.normalize(model.encode_text(batch_tokens).float(), dim=-1)

    init = initial_words(embedding.weight, len(rows), words, seed).float()
    with frozen(model), words_in_prompt(embedding, batch_mask, slot):
        result = learn_word_embeddings(encode_words, vocabulary.float().to(device), rows,
                                       image_features.float().to(device), labels, init, steps, lr, progress=progress)
    attacked = with_rows(vocabulary.float().cpu(), rows, result.embeddings.float().cpu())
    split = split_from_features(test, attacked, rows, chunk)
    out.update(target=split["target"], other_classes=split["other_classes"],
               target_no_attack=split_from_features(test, vocabulary.float().cpu(), rows, chunk)["target"],
               loss=[result.losses[0], result.losses[-1]])
    return out
