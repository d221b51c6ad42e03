"""Training-free forgetting by a closed-form edit of the text projection (``edit``).

The text tower of a CLIP ends in a linear map ``P`` (pooled feature ``h`` -> embedding ``h P``).
:class:`TextProjectionEdit` replaces it by the solution of a ridge problem (see
:func:`~lightning_unlearn.maths.textedit.solve_ridge_edit`): the prompts of the forgotten classes (under a
bank of templates) go to class-free neutral embeddings, the prompts of every other class of every
evaluation vocabulary and of a generic vocabulary keep theirs. No image is used and nothing is
trained; the solve is one small linear system. What the defaults are and why is measured in
``docs/edit.md``.

:func:`build_edit_problem` assembles the rows, weights and targets from the model, its tokenizer
and the vocabularies (no Trainer involved), so the same problem can be solved and studied outside
``fit``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from lightning_unlearn.core._validation import (
    _choice_validation,
    _positive_int_validation,
    _positive_number_validation,
    _templates_validation,
    _unit_interval_validation,
)
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.core.names import class_key
from lightning_unlearn.evaluation.descriptions import descriptions_for, load_descriptions
from lightning_unlearn.methods.contract import MethodHost, UnlearningMethod
from lightning_unlearn.maths.promptbank import (
    composed_templates,
    fill,
    fits_context,
    imagenet_classnames,
    openai_templates,
    rotating_templates,
    shared_templates,
    spread,
    unique_classes,
)
from lightning_unlearn.maths.forget_spec import Vocabulary
from lightning_unlearn.clip.feature_cache import cached_pooled_features
from lightning_unlearn.clip.text_projection import (
    TextProjection,
    locate_text_projection,
    pooled_text_features,
)
from lightning_unlearn.maths.textedit import (
    RidgeSolution,
    check_finite,
    class_basis,
    class_free_targets,
    cosine_rows,
    forget_directions,
    null_space_basis,
    share_weights,
    solve_ridge_edit,
    split_paraphrases,
)

TargetKind = Literal["class_free", "neutral", "fixed"]
#: Templates the generic vocabulary rotates through (spread over the bank): few enough that each
#: holds many generic classes, for the class-relative retain term.
GENERIC_TEMPLATE_POOL = 16
#: Default weight of the class-relative retain term (docs/edit.md: 0 is the absolute term alone).
DEFAULT_RELATIVE_WEIGHT = 1.0


@dataclass
class EditSettings:
    """What :func:`build_edit_problem` puts into the system (the :class:`TextProjectionEdit` arguments)."""

    target: TargetKind = "class_free"
    neutral: str = "thing"
    neutral_prompt: str = "a photo of a thing."
    templates: Optional[list[str]] = None
    composed_templates: int = 100
    retain_templates_per_class: int = 8
    generic_vocabulary: Union[Literal["imagenet"], list[str], None] = "imagenet"
    generic_templates_per_class: int = 2
    evaluation_prompt_weight: float = 0.5
    generic_weight: float = 0.15
    seed: int = 0
    #: per forgotten class, the paraphrases to forget too (complete prompts; the bank, held-out ones excluded)
    paraphrase_bank: Optional[dict[str, list[str]]] = None
    paraphrase_weight: float = 0.5


@dataclass
class EditProblem:
    """The rows of the ridge system, before the solve.

    Attributes:
        projection: the text projection being edited.
        P: its matrix ``[d, D]`` (float64).
        forget: forget rows ``[n_f, d]`` (pooled features, augmented like ``P``).
        forget_groups: for each forgotten class, the indices of its template rows (and its
            unlearning prompt) in ``forget``.
        paraphrase_groups: for each forgotten class, the indices of its paraphrase rows in
            ``forget`` (empty lists without a paraphrase bank).
        forget_weights: per-row weights of the forget term (None: uniform), see
            :func:`~lightning_unlearn.maths.textedit.share_weights`.
        targets: the embeddings the forget rows should get ``[n_f, D]``.
        retain: retain rows ``[n_r, d]``.
        retain_weights: their weights (sum 1).
        retain_template_groups: for each retain row, the id of its (vocabulary, template) group,
            for the class-relative retain term (:func:`~lightning_unlearn.maths.textedit.retain_gram`).
        other_domain_rows: indices of the retain rows that are evaluation prompts of the other
            vocabularies (those the forgotten classes are not in), which ``exact_other_domains``
            keeps exactly.
        retain_groups: retain group name -> number of rows (for the report).
        templates: the template bank used for the forget prompts.
        vocabularies: names of the vocabularies retained.
        generic: description of the generic vocabulary (or None).
        encode_seconds: time spent encoding prompts.
        cached: whether the retain features came from the cache.
    """

    projection: TextProjection
    P: Tensor
    forget: Tensor
    forget_groups: list[list[int]]
    targets: Tensor
    retain: Tensor
    retain_weights: Tensor
    paraphrase_groups: list[list[int]] = field(default_factory=list)
    forget_weights: Optional[Tensor] = None
    retain_template_groups: Optional[Tensor] = None
    other_domain_rows: Optional[Tensor] = None
    retain_groups: dict[str, int] = field(default_factory=dict)
    templates: list[str] = field(default_factory=list)
    vocabularies: list[str] = field(default_factory=list)
    generic: Optional[str] = None
    encode_seconds: float = 0.0
    cached: bool = False


def template_bank(vocabulary_templates: Sequence[str], settings: EditSettings) -> list[str]:
    """The templates the forgotten classes are edited under: ``settings.templates`` (default: the
    forget vocabulary's own templates, then open_clip's 80 OpenAI templates), plus
    ``settings.composed_templates`` composed ones (see :func:`~lightning_unlearn.maths.promptbank.composed_templates`)."""
    base = list(settings.templates) if settings.templates else list(vocabulary_templates) + openai_templates()
    base = list(dict.fromkeys(base))
    return base + composed_templates(base, settings.composed_templates, seed=settings.seed)


def _generic_names(settings: EditSettings) -> Optional[list[str]]:
    if settings.generic_vocabulary is None:
        return None
    if settings.generic_vocabulary == "imagenet":
        return imagenet_classnames()
    return list(settings.generic_vocabulary)


def build_edit_problem(
    model: nn.Module,
    tokenizer: Any,
    forget_names: Sequence[str],
    forget_prompts: Sequence[str],
    vocabularies: Sequence[Vocabulary],
    settings: EditSettings,
    forget_prompt_template: Optional[str] = None,
    batch_size: int = 256,
    cache_dir: Optional[str] = None,
    use_cache: bool = True,
) -> EditProblem:
    """Assemble the edit's rows, weights and targets (no weight is changed).

    Forget rows: each forgotten class under every template of :func:`template_bank`, plus its
    unlearning prompt, plus its paraphrases in ``settings.paraphrase_bank`` (complete prompts
    without the class word, whose target is ``neutral_prompt``'s embedding made class-free: the
    concept is forgotten, not only the word). Retain rows: every other class of every vocabulary under the same
    ``retain_templates_per_class`` templates (:func:`~lightning_unlearn.maths.promptbank.shared_templates`:
    the vocabulary's evaluation template, which is its first, then more of its own and of the
    bank), and each class of the generic vocabulary under ``generic_templates_per_class`` templates
    rotating through :data:`GENERIC_TEMPLATE_POOL` templates spread over the bank. Each retain row
    is tagged with its (vocabulary, template) group for the class-relative term. Weights: the
    evaluation prompts share ``evaluation_prompt_weight``, the generic vocabulary
    ``generic_weight`` and the other rows the rest; within a share, each vocabulary counts the same
    and each of its rows the same. Prompts that do not fit the tokenizer's context are dropped (a
    cut prompt may have lost its class name). Classes spelled like a forgotten class are never
    retained, nor generic classes that contain its name ("beer bottle" for "bottle").

    Raises:
        UnsupportedModelError: the text tower has no final linear projection.
        ConfigError: nothing to forget, or an empty retain set.
    """
    projection = locate_text_projection(model)
    if not forget_names:
        raise ConfigError("no class to forget")
    if not vocabularies:
        raise ConfigError("no vocabulary: the edit needs the forget vocabulary and its other classes")
    start = time.perf_counter()
    bank = template_bank(vocabularies[0].templates, settings)
    forget_text, neutral_text, groups, paraphrase_groups = _forget_rows(
        tokenizer, forget_names, forget_prompts, bank, settings, forget_prompt_template)
    retain_rows = _retain_rows(vocabularies, forget_names, bank, settings)
    retain_rows.keep_fitting(tokenizer)
    if retain_rows.empty:
        raise ConfigError(
            f"the retain set is empty: every class of {[v.name for v in vocabularies]} is forgotten and there is no "
            "generic vocabulary; the edit needs prompts of classes to keep (set generic_vocabulary: imagenet)"
        )
    texts, weights, groups_of_rows, other_domain = retain_rows.weighted(settings)
    retain_feats, cached = cached_pooled_features(model, tokenizer, texts, batch_size=batch_size,
                                                  cache_dir=cache_dir, use_cache=use_cache)
    small = pooled_text_features(model, tokenizer(forget_text + neutral_text + [settings.neutral_prompt]),
                                 batch_size=batch_size)
    check_finite("the retain features", retain_feats)  # before any SVD, which would fail less clearly
    check_finite("the forget and neutral features", small)
    P = projection.matrix()
    n_f = len(forget_text)
    forget = projection.augment(small[:n_f])
    retain = projection.augment(retain_feats)
    targets = _edit_targets(settings, P, forget, projection.augment(small[n_f : 2 * n_f]),
                            projection.augment(small[-1:]), groups, retain[: len(retain_rows.evaluation)])
    generic = retain_rows.generic_names
    forget_weights = None
    if any(paraphrase_groups):  # each class alike; within it, its paraphrases hold paraphrase_weight
        forget_weights = share_weights(groups, paraphrase_groups, settings.paraphrase_weight, n_f)
    return EditProblem(
        projection=projection, P=P, forget=forget, forget_groups=groups, targets=targets, retain=retain,
        paraphrase_groups=paraphrase_groups, forget_weights=forget_weights,
        retain_weights=weights / weights.sum(),
        retain_template_groups=torch.tensor(groups_of_rows, dtype=torch.long),
        other_domain_rows=torch.tensor(other_domain, dtype=torch.long),
        retain_groups={"evaluation_prompts": len(retain_rows.evaluation), "other_templates": len(retain_rows.other),
                       "generic": len(retain_rows.generic)},
        templates=bank, vocabularies=[v.name or "vocabulary" for v in retain_rows.vocabularies],
        generic=(f"imagenet ({len(generic)} classes)" if settings.generic_vocabulary == "imagenet"
                 else f"{len(generic)} classes") if generic else None,
        encode_seconds=time.perf_counter() - start, cached=cached,
    )


def _forget_rows(
    tokenizer: Any, forget_names: Sequence[str], forget_prompts: Sequence[str], bank: Sequence[str],
    settings: EditSettings, forget_prompt_template: Optional[str],
) -> tuple[list[str], list[str], list[list[int]], list[list[int]]]:
    """Each forgotten class under every bank template plus its unlearning prompt, with the
    template-matched neutral prompts, then its paraphrases (if any, with ``neutral_prompt``);
    each class's template-row and paraphrase-row indices. Pairs that do not fit the context are
    dropped (the unlearning prompt is kept in any case)."""
    forget_text: list[str] = []
    neutral_text: list[str] = []
    groups: list[list[int]] = []
    paraphrase_groups: list[list[int]] = []
    paraphrases = {class_key(name): texts for name, texts in (settings.paraphrase_bank or {}).items()}
    for name, own_prompt in zip(forget_names, forget_prompts):
        pairs = [(fill(t, name), fill(t, settings.neutral)) for t in bank]
        if forget_prompt_template is not None:
            pairs.append((own_prompt, fill(forget_prompt_template, settings.neutral)))
        else:
            pairs.append((own_prompt, settings.neutral_prompt))
        fit = fits_context(tokenizer, [p for pair in pairs for p in pair])
        pairs = [pair for k, pair in enumerate(pairs) if fit[2 * k] and fit[2 * k + 1]] or pairs[-1:]
        groups.append(list(range(len(forget_text), len(forget_text) + len(pairs))))
        forget_text += [p for p, _ in pairs]
        neutral_text += [n for _, n in pairs]
        texts = [t for t, ok in zip(paraphrases.get(class_key(name), []),
                                    fits_context(tokenizer, paraphrases.get(class_key(name), []))) if ok]
        paraphrase_groups.append(list(range(len(forget_text), len(forget_text) + len(texts))))
        forget_text += texts
        neutral_text += [settings.neutral_prompt] * len(texts)
    return forget_text, neutral_text, groups, paraphrase_groups


#: One retain row: (vocabulary name, prompt, (vocabulary index, template) group of the class-relative term).
_Row = tuple[str, str, tuple[int, str]]


@dataclass
class _RetainRows:
    """The retain prompts by share: the evaluation prompts, the other templates, the generic vocabulary."""

    evaluation: list[_Row]
    other: list[_Row]
    generic: list[_Row]
    other_domain_keys: set[tuple[int, str]]  # the groups of the other domains' evaluation prompts
    vocabularies: list[Vocabulary]  # those with a class left to retain
    generic_names: list[str]

    @property
    def empty(self) -> bool:
        return not (self.evaluation or self.other or self.generic)

    def keep_fitting(self, tokenizer: Any) -> None:
        """Drop the prompts that do not fit the tokenizer's context (a cut prompt may have lost its class name)."""
        def fitting(rows: list[_Row]) -> list[_Row]:
            ok = fits_context(tokenizer, [r[1] for r in rows])
            return [r for r, keep in zip(rows, ok) if keep]

        self.evaluation, self.other, self.generic = fitting(self.evaluation), fitting(self.other), fitting(self.generic)

    def weighted(self, settings: EditSettings) -> tuple[list[str], Tensor, list[int], list[int]]:
        """``(texts, weights, group of each row, rows of the other domains' evaluation prompts)``:
        each share's weight split evenly among its vocabularies, then among each one's rows."""
        shares = {"evaluation": settings.evaluation_prompt_weight,
                  "generic": settings.generic_weight if self.generic else 0.0}
        shares["templates"] = 1.0 - shares["evaluation"] - shares["generic"]
        weights: list[float] = []
        texts: list[str] = []
        group_ids: dict[tuple[int, str], int] = {}
        groups_of_rows: list[int] = []
        other_domain: list[int] = []
        for share_name, rows in (("evaluation", self.evaluation), ("templates", self.other),
                                 ("generic", self.generic)):
            per_vocab: dict[str, int] = {}
            for vocab_name, _, _ in rows:
                per_vocab[vocab_name] = per_vocab.get(vocab_name, 0) + 1
            for vocab_name, text, key in rows:
                weights.append(shares[share_name] / (len(per_vocab) * per_vocab[vocab_name]))
                if share_name == "evaluation" and key in self.other_domain_keys:
                    other_domain.append(len(texts))
                texts.append(text)
                groups_of_rows.append(group_ids.setdefault(key, len(group_ids)))
        return texts, torch.tensor(weights, dtype=torch.float64), groups_of_rows, other_domain


def _retain_rows(
    vocabularies: Sequence[Vocabulary], forget_names: Sequence[str], bank: Sequence[str], settings: EditSettings,
) -> _RetainRows:
    """Every retained class of a vocabulary under the same templates (so that the class-relative
    term compares them template by template), and the generic vocabulary's classes under rotating
    templates of the bank."""
    retained = [v for v in vocabularies if unique_classes(v.classnames, forget_names)]
    other_domain_keys: set[tuple[int, str]] = set()
    evaluation_rows: list[_Row] = []
    other_rows: list[_Row] = []
    for index, vocab in enumerate(retained):
        name = vocab.name or "vocabulary"
        classes = unique_classes(vocab.classnames, forget_names)
        for k, template in enumerate(shared_templates(vocab.templates, bank, settings.retain_templates_per_class)):
            rows = evaluation_rows if k == 0 else other_rows
            rows += [(name, fill(template, cls), (index, template)) for cls in classes]
        if vocab is not vocabularies[0]:
            other_domain_keys.add((index, vocab.templates[0]))
    generic = _generic_names(settings)
    generic_rows: list[_Row] = []
    if generic:
        pool = spread(bank, GENERIC_TEMPLATE_POOL)
        for j, cls in enumerate(unique_classes(generic, forget_names, exclude_words=True)):
            generic_rows += [("generic", fill(t, cls), (-1, t))
                             for t in rotating_templates(pool, settings.generic_templates_per_class, j)]
    return _RetainRows(evaluation_rows, other_rows, generic_rows, other_domain_keys, retained, generic)


def _edit_targets(settings: EditSettings, P: Tensor, forget: Tensor, neutrals: Tensor, neutral_prompt: Tensor,
                  groups: Sequence[Sequence[int]], retain_evaluation: Tensor) -> Tensor:
    """Where each forget row's embedding should go (``settings.target``): the neutral prompt's
    embedding (``fixed``), its template-matched neutral prompt's (``neutral``), or its own with the
    class content projected out (``class_free``: the retained classes' evaluation-prompt embeddings
    and each forgotten class's mean embedding over the bank)."""
    originals = forget @ P
    if settings.target == "fixed":
        return (neutral_prompt @ P).expand(len(forget), -1).clone()
    if settings.target == "neutral":
        return neutrals @ P
    unit = torch.nn.functional.normalize(originals, dim=-1)
    forgotten = torch.stack([unit[list(g)].mean(0) for g in groups])
    classes = torch.cat([retain_evaluation @ P, forgotten])
    return class_free_targets(originals, neutrals @ P, class_basis(classes))


@dataclass(frozen=True)
class ExactRows:
    """What ``exact_other_domains`` did: the rows kept exactly and the dimensions left to the change,
    or why it was skipped."""

    rows: int
    free_dimensions: int
    skipped: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "free_dimensions": self.free_dimensions, "skipped": self.skipped}


def exact_subspace(problem: EditProblem, needed: int) -> tuple[Optional[Tensor], ExactRows]:
    """The input subspace that keeps the other domains' evaluation prompts exactly, if it leaves room.

    Returns ``(basis or None, summary)``. It is skipped (None) when there is no such row, or when
    their null space has fewer than ``max(needed, d // 8)`` dimensions (``d`` the pooled width):
    a change squeezed into fewer would forget poorly.
    """
    rows = problem.other_domain_rows
    d = problem.retain.shape[1]
    if rows is None or len(rows) == 0:
        return None, ExactRows(0, d, "no other vocabulary")
    basis = null_space_basis(problem.retain[rows])
    free = basis.shape[1]
    if free < max(needed, d // 8):
        return None, ExactRows(int(len(rows)), free, f"{len(rows)} prompts leave {free} of {d} dimensions, "
                                                      f"fewer than {max(needed, d // 8)}")
    return basis, ExactRows(int(len(rows)), free)


def solve_edit(
    problem: EditProblem,
    lam: float,
    mu: float,
    rank_per_class: Optional[int],
    relative_weight: float = DEFAULT_RELATIVE_WEIGHT,
    exact_other_domains: bool = True,
    paraphrase_rank: int = 2,
) -> RidgeSolution:
    """Solve the problem (restricted to ``rank_per_class`` directions per forgotten class, plus
    ``paraphrase_rank`` more per class from its paraphrase rows when it has some, or full),
    with the class-relative retain term weighted ``relative_weight`` in the solve and in the choice
    of directions alike. With ``exact_other_domains`` (see :func:`exact_subspace`) the change only
    reads inputs that the other vocabularies' evaluation prompts do not have, so their embeddings,
    and every zero-shot decision of those datasets at their evaluation template, stay exactly as
    they were; the solution's ``exact`` says how many rows were kept and how many input dimensions
    were left to the change, or why it was skipped."""
    start = time.perf_counter()
    relative = dict(retain_groups=problem.retain_template_groups, relative_weight=relative_weight)
    paraphrased = [g for g in problem.paraphrase_groups if g]
    needed = (rank_per_class or 1) * len(problem.forget_groups) + paraphrase_rank * len(paraphrased)
    d = problem.retain.shape[1]
    basis, exact = exact_subspace(problem, needed) if exact_other_domains else (None, ExactRows(0, d, "off"))
    directions = basis
    if rank_per_class is not None:
        # searched in the kept subspace's coordinates, then mapped back to the pooled space
        inside = (lambda rows: rows @ basis) if basis is not None else (lambda rows: rows)
        found = forget_directions(inside(problem.retain), [inside(problem.forget[g]) for g in problem.forget_groups],
                                  per_class=rank_per_class, mu=mu, retain_weights=problem.retain_weights, **relative)
        if paraphrased:
            # the paraphrases differ from the retain prompts along other inputs than the class word
            # does: directions of their own, or the change could not reach them
            more = forget_directions(inside(problem.retain), [inside(problem.forget[g]) for g in paraphrased],
                                     per_class=paraphrase_rank, mu=mu, retain_weights=problem.retain_weights,
                                     **relative)
            found = torch.linalg.qr(torch.cat([found, more], dim=1))[0]
        directions = torch.linalg.qr(basis @ found)[0] if basis is not None else found
    solution = solve_ridge_edit(problem.P, problem.retain, problem.forget, problem.targets, lam=lam, mu=mu,
                                retain_weights=problem.retain_weights, forget_weights=problem.forget_weights,
                                directions=directions, **relative)
    # the time of the whole solve: subspace, directions and system
    return replace(solution, exact=exact.to_dict(), seconds=time.perf_counter() - start)


def edit_summary(problem: EditProblem, new_matrix: Tensor) -> dict[str, Any]:
    """How far the embeddings moved: retain rows (1 - cosine) and forget rows (cosine to the original)."""
    retain_shift = 1.0 - cosine_rows(problem.retain @ new_matrix, problem.retain @ problem.P)
    forget_cos = cosine_rows(problem.forget @ new_matrix, problem.forget @ problem.P)
    target_cos = cosine_rows(problem.forget @ new_matrix, problem.targets)
    return {
        "retain_shift": {"mean_1_minus_cos": float(retain_shift.mean()), "max_1_minus_cos": float(retain_shift.max())},
        "forget_cosine_to_original": {"mean": float(forget_cos.mean()), "min": float(forget_cos.min()),
                                      "max": float(forget_cos.max())},
        "forget_cosine_to_target": {"mean": float(target_cos.mean()), "min": float(target_cos.min())},
    }


def evaluation_vocabularies(module: Any) -> list[Vocabulary]:
    """The forget vocabulary first, then every other vocabulary the run's DataModule offers."""
    spec = module.spec
    out = [spec.vocabulary]
    trainer = getattr(module, "_trainer", None)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    for vocab in (getattr(datamodule, "vocabularies", None) or {}).values():
        if vocab.name != spec.vocabulary.name or vocab.classnames != spec.vocabulary.classnames:
            out.append(vocab)
    return out


class TextProjectionEdit(UnlearningMethod):
    """Forget classes by editing the text tower's final linear projection in closed form (ZS).

    Forget prompts (every forgotten class under a template bank, plus its unlearning prompt) are
    mapped to class-free neutral embeddings; retain prompts (every other class of every
    evaluation vocabulary, and a generic vocabulary) keep theirs; see :func:`build_edit_problem`
    and :func:`~lightning_unlearn.maths.textedit.solve_ridge_edit`. By default the change only reads
    ``rank_per_class`` input directions per forgotten class (those where its prompts differ most
    from the retain prompts), which is what carries the edit to templates it never saw
    (``docs/edit.md``). Works for open_clip ``CLIP`` and ``CustomTextCLIP`` whose
    ``text_projection`` is an ``nn.Parameter`` or an ``nn.Linear``.

    Args:
        lam: weight of the forget term (mean over forget rows) against the retain term (weighted
            mean over retain rows).
        mu: ridge weight, relative to the retain features' mean energy per coordinate; also
            regularises the choice of directions. Must be > 0 when the retain prompts do not
            span the pooled space.
        rank_per_class: input directions per forgotten class the change may read (generalised
            eigenvectors, forget vs retain); None for the unrestricted ridge solution.
        relative_weight: weight of the class-relative retain term: how far each retain prompt
            moves relative to the other classes under the same template (the move that reorders
            classes), on top of how far it moves; 0 for the absolute term alone.
        exact_other_domains: keep the evaluation-prompt embeddings of the other vocabularies (the
            evaluation datasets without a forgotten class) exactly, by restricting the change to
            inputs those prompts do not have; skipped, and said so in the report, when they would
            leave fewer than an eighth of the pooled width (:func:`exact_subspace`).
        target: ``class_free``: the template-matched neutral prompt (``neutral`` in the same
            template) without its components along the class embeddings, at the original norm;
            ``neutral``: the template-matched neutral prompt as is; ``fixed``: the embedding of
            ``neutral_prompt`` for every forget row.
        neutral: the neutral word of template-matched targets.
        neutral_prompt: the neutral prompt of ``target: fixed``.
        templates: template bank for the forgotten classes (default: the forget vocabulary's
            templates, then open_clip's 80 OpenAI ImageNet templates).
        composed_templates: how many composed templates (a bank prefix, the class, then
            "<preposition> <determiner> <noun>") to add to the bank.
        retain_templates_per_class: retain prompts per retained class of the evaluation
            vocabularies: every class of a vocabulary under the same templates (its evaluation
            template, more of its own, then templates spread over the bank).
        generic_vocabulary: ``imagenet`` (the 1,000 class names open_clip ships), a list of
            class names, or None: extra classes to retain.
        generic_templates_per_class: prompts per generic class.
        evaluation_prompt_weight: share of the retain weight on the vocabularies' evaluation
            prompts (their first template), which zero-shot evaluation uses.
        generic_weight: share of the retain weight on the generic vocabulary.
        paraphrases: paraphrases of the forgotten classes to forget too, so that the concept goes,
            not only the word: a descriptions file (path, or a packaged name such as
            ``demo-paraphrases``) or a dict, class -> complete prompts without the class word.
            None (default): the class word only.
        held_out_paraphrases: per forgotten class, how many of its paraphrases stay out of the
            forget bank (a deterministic split, :func:`~lightning_unlearn.maths.textedit.split_paraphrases`
            with ``seed``), for the evaluation to measure the concept on prompts the edit never
            saw (``recovery.paraphrases.held_out``).
        paraphrase_weight: share of each forgotten class's forget term on its paraphrases (the
            rest on its template prompts).
        paraphrase_rank: input directions per forgotten class found from its paraphrases, on top
            of ``rank_per_class`` (used when ``rank_per_class`` is set).
        seed: seed of the composed templates and of the paraphrase split.
        batch_size: prompts per forward pass when encoding.
        cache_dir: folder of cached retain features (default ``$LIGHTNING_UNLEARN_CACHE/text_features``).
        use_cache: reuse cached retain features (keyed by the text tower's weights and the prompts).
    """

    short_name = "edit"
    trains = False

    def __init__(
        self,
        lam: float = 1.0,
        mu: float = 1e-3,
        rank_per_class: Optional[int] = 2,
        relative_weight: float = DEFAULT_RELATIVE_WEIGHT,
        exact_other_domains: bool = True,
        target: TargetKind = "class_free",
        neutral: str = "thing",
        neutral_prompt: str = "a photo of a thing.",
        templates: Optional[list[str]] = None,
        composed_templates: int = 100,
        retain_templates_per_class: int = 8,
        generic_vocabulary: Union[Literal["imagenet"], list[str], None] = "imagenet",
        generic_templates_per_class: int = 2,
        evaluation_prompt_weight: float = 0.5,
        generic_weight: float = 0.15,
        paraphrases: Optional[Union[str, dict[str, list[str]]]] = None,
        held_out_paraphrases: int = 3,
        paraphrase_weight: float = 0.5,
        paraphrase_rank: int = 2,
        seed: int = 0,
        batch_size: int = 256,
        cache_dir: Optional[str] = None,
        use_cache: bool = True,
    ) -> None:
        _positive_number_validation("lam", lam)
        _positive_number_validation("mu", mu, allow_zero=True)
        _positive_int_validation("rank_per_class", rank_per_class, allow_none=True)
        _positive_number_validation("relative_weight", relative_weight, allow_zero=True)
        if not isinstance(exact_other_domains, bool):
            raise ConfigError(f"exact_other_domains must be true or false, got {exact_other_domains!r}")
        _choice_validation("target", target, ("class_free", "neutral", "fixed"))
        if not isinstance(neutral, str) or not neutral.strip() or "{}" in neutral:
            raise ConfigError(f"neutral must be a non-empty word or phrase without '{{}}', got {neutral!r}")
        if not isinstance(neutral_prompt, str) or not neutral_prompt.strip():
            raise ConfigError(f"neutral_prompt must be a non-empty string, got {neutral_prompt!r}")
        if templates is not None:
            _templates_validation("templates", templates)
        _positive_int_validation("composed_templates", composed_templates, allow_zero=True)
        _positive_int_validation("retain_templates_per_class", retain_templates_per_class)
        if generic_vocabulary is not None and generic_vocabulary != "imagenet":
            if isinstance(generic_vocabulary, str) or not isinstance(generic_vocabulary, Sequence) or not all(
                isinstance(c, str) and c.strip() for c in generic_vocabulary
            ):
                raise ConfigError(
                    f"generic_vocabulary must be 'imagenet', a list of class names or None, got {generic_vocabulary!r}"
                )
        _positive_int_validation("generic_templates_per_class", generic_templates_per_class)
        _unit_interval_validation("evaluation_prompt_weight", evaluation_prompt_weight, open_high=True)
        _unit_interval_validation("generic_weight", generic_weight, open_high=True)
        if evaluation_prompt_weight + generic_weight >= 1:
            raise ConfigError(
                f"evaluation_prompt_weight + generic_weight must be < 1 (the rest weighs the other templates), got "
                f"{evaluation_prompt_weight!r} + {generic_weight!r}"
            )
        _positive_int_validation("held_out_paraphrases", held_out_paraphrases, allow_zero=True)
        _unit_interval_validation("paraphrase_weight", paraphrase_weight, open_high=True)
        _positive_int_validation("paraphrase_rank", paraphrase_rank)
        # read (and check) a paraphrases file now, so a bad one fails before any run
        self._paraphrase_texts = load_descriptions(paraphrases) if paraphrases is not None else None
        self._paraphrase_bank: dict[str, list[str]] = {}
        _positive_int_validation("seed", seed, allow_zero=True)
        _positive_int_validation("batch_size", batch_size)
        lam, mu, relative_weight, paraphrase_weight = float(lam), float(mu), float(relative_weight), float(paraphrase_weight)
        if isinstance(paraphrases, dict):
            paraphrases = {str(k): list(v) for k, v in paraphrases.items()}
        evaluation_prompt_weight, generic_weight = float(evaluation_prompt_weight), float(generic_weight)
        templates = list(templates) if templates is not None else None
        if isinstance(generic_vocabulary, (list, tuple)):
            generic_vocabulary = list(generic_vocabulary)
        self._keep(locals())

    def settings(self) -> EditSettings:
        """The prompt-bank settings (the init args :class:`EditSettings` names) as an
        :class:`EditSettings`, with the paraphrase bank of the last :meth:`setup`."""
        values = {f.name: getattr(self, f.name) for f in fields(EditSettings) if f.name != "paraphrase_bank"}
        return EditSettings(**values, paraphrase_bank=dict(self._paraphrase_bank) or None)

    def paraphrase_split(self, names: Sequence[str]) -> dict[str, tuple[list[str], list[str]]]:
        """Per forgotten class in ``names``: ``(bank, held_out)`` of its paraphrases (empty without
        ``paraphrases``).

        Raises:
            ConfigError: a class has no paraphrases, or too few to hold ``held_out_paraphrases`` out.
        """
        if self._paraphrase_texts is None:
            return {}
        found = descriptions_for(self._paraphrase_texts, names, "the edit's paraphrases")
        return {name: split_paraphrases(texts, self.held_out_paraphrases, self.seed, key=class_key(name))
                for name, texts in found.items()}

    def paraphrases_in_bank(self) -> dict[str, list[str]]:
        """The paraphrases this edit forgets, per forgotten class (set by :meth:`setup`); the
        evaluation suite marks them, and measures the concept on the others."""
        return {name: list(texts) for name, texts in self._paraphrase_bank.items()}

    def setup(self, module: "MethodHost") -> None:
        locate_text_projection(module.model)  # an unsupported model fails before any work
        self._paraphrase_bank = {name: bank for name, (bank, _) in self.paraphrase_split(module.spec.names).items()}

    def apply(self, module: "MethodHost") -> dict[str, Any]:
        spec = module.spec
        template = module.hparams.get("forget_prompt")  # checked by the module
        self._paraphrase_bank = {name: bank for name, (bank, _) in self.paraphrase_split(spec.names).items()}
        problem = build_edit_problem(
            module.model, module.tokenizer, spec.names, spec.prompts, evaluation_vocabularies(module), self.settings(),
            forget_prompt_template=template, batch_size=self.batch_size, cache_dir=self.cache_dir,
            use_cache=self.use_cache,
        )
        self.timings["edit_encode"] = problem.encode_seconds
        solution = solve_edit(problem, self.lam, self.mu, self.rank_per_class, self.relative_weight,
                              self.exact_other_domains, self.paraphrase_rank)  # raises before any write
        self.timings["edit"] = solution.seconds
        problem.projection.write(solution.matrix)
        return {
            "projection": problem.projection.name,
            "forget_prompts": int(len(problem.forget)),
            "retain_prompts": int(len(problem.retain)),
            "retain_groups": problem.retain_groups,
            "template_bank": len(problem.templates),
            "vocabularies": {"forget": spec.vocabulary.name, "retained": problem.vocabularies,
                             "generic": problem.generic},
            "target": self.target,
            "neutral": self.neutral if self.target != "fixed" else self.neutral_prompt,
            "lam": self.lam,
            "mu": self.mu,
            "rank_per_class": self.rank_per_class,
            "relative_weight": self.relative_weight,
            "exact_other_domains": solution.exact,
            "paraphrases": None if self._paraphrase_texts is None else {
                "forget_rows": int(sum(len(g) for g in problem.paraphrase_groups)),
                "in_bank": self.paraphrases_in_bank(),
                "held_out": {name: held for name, (_, held) in self.paraphrase_split(spec.names).items()},
                "weight": self.paraphrase_weight, "rank": self.paraphrase_rank,
            },
            "rcond": solution.rcond,
            "retain_features_cached": problem.cached,
            **edit_summary(problem, solution.matrix),
        }
