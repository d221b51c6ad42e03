"""What is forgotten, resolved once: the forget spec.

:func:`resolve_forget_spec` is a pure function of the classes to forget and the vocabularies the
evaluation datasets offer (or an explicit vocabulary). It finds the vocabulary that synthesis and
the synthetic accuracy compete in, the index of every forgotten class in it, the unlearning prompt
of each, and the labels of the forgotten classes in every evaluation dataset (where the report
splits target from other classes). Unknown classes fail here, with close matches, before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from lightning_unlearn.core._validation import _template_validation, _templates_validation
from lightning_unlearn.core.errors import ConfigError, UnknownNameError
from lightning_unlearn.core.names import class_key, matches_clause, prompt_name


@dataclass(frozen=True)
class Vocabulary:
    """The classes a zero-shot classifier chooses among, and the prompt templates it uses.

    Args:
        classnames: class names in label order.
        templates: prompt templates with one ``{}``; the first is the evaluation prompt.
        name: the dataset the vocabulary comes from (None for an explicit list).
    """

    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    name: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.classnames:
            raise ConfigError(f"vocabulary {self.name or ''!r} has no class")
        _templates_validation(f"templates of vocabulary {self.name or ''!r}", list(self.templates))

    def index(self) -> dict[str, int]:
        """Normalised class name -> label (the first label where two names normalise alike)."""
        lookup: dict[str, int] = {}
        for label, name in enumerate(self.classnames):
            lookup.setdefault(class_key(name), label)
        return lookup


@dataclass(frozen=True)
class ForgetSpec:
    """The resolved request: which classes are forgotten, among which, with which prompts.

    Attributes:
        vocabulary: the classes synthesis and the synthetic accuracy compete among.
        forget_indices: index of each forgotten class in ``vocabulary``.
        names: the forgotten classes as the vocabulary spells them.
        prompts: the unlearning prompt of each forgotten class.
        dataset: the evaluation dataset the vocabulary comes from (None for an explicit list).
        targets: evaluation dataset -> labels of the forgotten classes in it (empty if none).
    """

    vocabulary: Vocabulary
    forget_indices: tuple[int, ...]
    names: tuple[str, ...]
    prompts: tuple[str, ...]
    dataset: Optional[str] = None
    targets: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def retain_indices(self) -> list[int]:
        """Indices of the vocabulary's classes that are kept."""
        forgotten = set(self.forget_indices)
        return [i for i in range(len(self.vocabulary.classnames)) if i not in forgotten]


def _unknown_class(name: str, vocabulary: Vocabulary, vocabularies: Mapping[str, Vocabulary]) -> UnknownNameError:
    where = f"dataset {vocabulary.name!r}" if vocabulary.name else "the vocabulary"
    message = f"unknown class {name!r} in {where}"
    message += matches_clause(name, vocabulary.classnames)
    elsewhere = [d for d, v in vocabularies.items() if d != vocabulary.name and class_key(name) in v.index()]
    if elsewhere:
        message += f"; it is a class of {', '.join(map(repr, elsewhere))}: set forget_dataset accordingly"
    return UnknownNameError(message)


def _holding_vocabulary(classes: Sequence[str], vocabularies: Mapping[str, Vocabulary]) -> Vocabulary:
    """The one evaluation vocabulary that holds every class to forget."""
    if not vocabularies:
        raise ConfigError(
            "no class vocabulary: give `vocabulary` (a class list) or evaluation datasets that hold the "
            "forgotten classes"
        )
    holders = [v for v in vocabularies.values() if all(class_key(c) in v.index() for c in classes)]
    if len(holders) == 1:
        return holders[0]
    if holders:
        raise ConfigError(
            f"the classes {list(classes)} occur in several datasets {[v.name for v in holders]}; set forget_dataset"
        )
    for name in classes:
        if not any(class_key(name) in v.index() for v in vocabularies.values()):
            every = sorted({c for v in vocabularies.values() for c in v.classnames})
            raise UnknownNameError(
                f"class {name!r} is in none of the evaluation datasets {list(vocabularies)}"
                + matches_clause(name, every)
            )
    raise ConfigError(f"no single evaluation dataset holds all of {list(classes)}; forget them in separate runs")


def resolve_forget_spec(
    forget_classes: Sequence[str],
    vocabularies: Mapping[str, Vocabulary],
    forget_prompt: str = "A picture of {}",
    forget_dataset: Optional[str] = None,
    vocabulary: Optional[Vocabulary] = None,
) -> ForgetSpec:
    """Resolve what to forget (pure: no model, no files).

    Args:
        forget_classes: the classes to forget, matched case/underscore-insensitively.
        vocabularies: evaluation dataset name -> its vocabulary (may be empty with ``vocabulary``).
        forget_prompt: the unlearning prompt, with one ``{}`` for the class.
        forget_dataset: the dataset whose vocabulary to use (default: the one holding every class).
        vocabulary: an explicit vocabulary instead of a dataset's.

    Raises:
        UnknownNameError: a class or dataset is not known (close matches in the message).
        ConfigError: empty or repeated classes, a bad prompt, or an ambiguous dataset.
    """
    classes = [forget_classes] if isinstance(forget_classes, str) else list(forget_classes)
    if not classes:
        raise ConfigError("forget_classes is empty: name at least one class to forget")
    _template_validation("forget_prompt", forget_prompt)
    if vocabulary is None:
        if forget_dataset is not None:
            if forget_dataset not in vocabularies:
                known = list(vocabularies)
                raise UnknownNameError(
                    f"forget_dataset {forget_dataset!r} is not among the evaluation datasets {known}"
                    + matches_clause(forget_dataset, known)
                )
            vocabulary = vocabularies[forget_dataset]
        else:
            vocabulary = _holding_vocabulary(classes, vocabularies)
    lookup = vocabulary.index()
    indices = []
    for name in classes:
        if class_key(name) not in lookup:
            raise _unknown_class(name, vocabulary, vocabularies)
        indices.append(lookup[class_key(name)])
    if len(set(indices)) != len(indices):
        raise ConfigError(f"forget_classes lists a class twice: {classes}")
    if len(indices) == len(vocabulary.classnames):
        raise ConfigError(
            f"forget_classes {classes} would forget every class of {vocabulary.name or 'the vocabulary'}; "
            "zero-shot classification needs at least one class to remain"
        )
    keys = {class_key(vocabulary.classnames[i]) for i in indices}
    targets = {
        name: tuple(label for key, label in v.index().items() if key in keys) for name, v in vocabularies.items()
    }
    return ForgetSpec(
        vocabulary=vocabulary,
        forget_indices=tuple(indices),
        names=tuple(vocabulary.classnames[i] for i in indices),
        prompts=tuple(forget_prompt.format(prompt_name(vocabulary.classnames[i])) for i in indices),
        dataset=vocabulary.name,
        targets=targets,
    )
