"""Prompt banks for training-free edits: templates and a generic vocabulary, all offline.

open_clip ships the 80 prompt templates of OpenAI's ImageNet zero-shot classifier and the 1,000
ImageNet class names (``open_clip.zero_shot_metadata``); they are the default template bank and
generic retain vocabulary. :func:`composed_templates` adds templates in which the class is followed
by more words (OpenAI's templates nearly all end with the class, so an edit fitted on them alone
forgets less when words follow the class). Everything here is deterministic.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import torch

from lightning_unlearn.core._validation import _positive_int_validation, _templates_validation
from lightning_unlearn.core.names import class_key, prompt_name

# Grammar words of the continuations ("<preposition> <determiner> <noun>"); the nouns come from
# the ImageNet class names, so no sentence here is written by hand.
_PREPOSITIONS = ("in", "on", "with", "near", "at", "under", "behind", "beside", "next to", "above", "inside", "by",
                 "from", "of", "and")
_DETERMINERS = ("a", "the", "my", "some", "an old", "one")


def openai_templates() -> list[str]:
    """The 80 templates of OpenAI's ImageNet classifier, as ``"... {} ..."`` strings."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]


def imagenet_classnames() -> list[str]:
    """The 1,000 ImageNet class names open_clip ships."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def composed_templates(base: Sequence[str], count: int, seed: int = 0) -> list[str]:
    """``count`` templates ``"<prefix of a base template>{}<continuation>"``, drawn with ``seed``.

    The continuation is ``" <preposition> <determiner> <noun>"`` (nouns: one-word ImageNet class
    names) for 80 % of them and nothing for the rest; a trailing period half the time.
    """
    _templates_validation("base", list(base))
    _positive_int_validation("count", count, allow_zero=True)
    rng = random.Random(seed)
    prefixes = sorted({t.split("{}")[0] for t in base})
    nouns = sorted({c.lower() for c in imagenet_classnames() if c.isalpha() and c.islower()})
    existing = set(base)
    out: list[str] = []
    seen: set[str] = set()
    for _ in range(count * 50):  # bounded: duplicates are rare
        if len(out) == count:
            break
        cont = (f" {rng.choice(_PREPOSITIONS)} {rng.choice(_DETERMINERS)} {rng.choice(nouns)}"
                if rng.random() < 0.8 else "")
        template = rng.choice(prefixes) + "{}" + cont + rng.choice(("", "."))
        if template not in seen and template not in existing:
            seen.add(template)
            out.append(template)
    return out


def rotating_templates(pool: Sequence[str], count: int, offset: int) -> list[str]:
    """``count`` consecutive templates of ``pool`` starting at ``offset * count`` (wrapping), so that
    consecutive classes cover the whole pool between them."""
    if not pool or count <= 0:
        return []
    return [pool[(offset * count + q) % len(pool)] for q in range(min(count, len(pool)))]


def spread(pool: Sequence[str], count: int) -> list[str]:
    """``count`` items of ``pool`` evenly spaced from its start (all of it if it is not longer)."""
    if count <= 0:
        return []
    if count >= len(pool):
        return list(pool)
    return [pool[(i * len(pool)) // count] for i in range(count)]


def shared_templates(own: Sequence[str], bank: Sequence[str], count: int) -> list[str]:
    """The ``count`` templates every class of a vocabulary is encoded under when it is retained.

    Its evaluation template (``own[0]``) first, then up to ``count - 1 - count // 2`` more of its
    own templates, then templates spread evenly over ``bank`` (more of them when the vocabulary has
    few of its own). Every class getting the same templates is what lets an edit compare the
    classes under each template (:func:`~lightning_unlearn.maths.textedit.retain_gram`).
    """
    _templates_validation("own", list(own))
    _positive_int_validation("count", count)
    chosen = list(dict.fromkeys(own))[: max(1, count - count // 2)]
    chosen += spread([t for t in dict.fromkeys(bank) if t not in chosen], count - len(chosen))
    return chosen


def fill(template: str, classname: str) -> str:
    """A template with a class name (underscores as spaces)."""
    return template.format(prompt_name(classname))


def fits_context(tokenizer: Callable[[list[str]], torch.Tensor], prompts: Sequence[str]) -> list[bool]:
    """Whether each prompt fits the tokenizer's context untruncated.

    A truncated prompt may have lost its class name (open_clip's tokenizer cuts the tail and puts
    the end-of-text token last), so edits drop such prompts.
    """
    if not prompts:
        return []
    tokens = tokenizer(list(prompts))
    pad = tokenizer([""])[0, -1]  # what the last position holds when a prompt is short
    # A prompt that fills the whole context may have been cut.
    return [bool(t) for t in (tokens[:, -1] == pad).tolist()]


def unique_classes(names: Sequence[str], exclude: Sequence[str] = (), exclude_words: bool = False) -> list[str]:
    """``names`` without repeats and without the classes in ``exclude`` (compared by :func:`class_key`).

    With ``exclude_words``, names that contain an excluded name as whole words are dropped too
    ("beer bottle" when "bottle" is excluded): in a generic vocabulary they are kinds of it.
    """
    skip = {class_key(n) for n in exclude}
    out, seen = [], set()
    for name in names:
        key = class_key(name)
        padded = f" {key} "
        if exclude_words and any(f" {s} " in padded for s in skip):
            continue
        if key not in skip and key not in seen:
            seen.add(key)
            out.append(name)
    return out
