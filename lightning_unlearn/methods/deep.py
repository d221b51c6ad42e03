"""Training-free forgetting on both towers (``deep``): the text-projection edit plus a LEACE-style
erasure of the forgotten classes from the image tower's final projection.

Why: the text edit (:class:`~lightning_unlearn.methods.edit.TextProjectionEdit`) changes what the
text tower says, not the image features. A textual-inversion attack learns a new word for real
images of the class and, as long as those images still form their own cluster, finds it again
(docs/evaluation.md, ``recovery.inversion``). :class:`DeepEdit` also edits the image side: it
removes from every image embedding the forgotten classes' direction along the oblique readout of
least change (:func:`~lightning_unlearn.maths.erasure.oblique_eraser`), estimated without real
images: from the retained classes' prompt embeddings (``covariance="prompts"``), or from synthetic
images of every class of every evaluation vocabulary, synthesised by name
(:func:`~lightning_unlearn.maths.synthesis.synthesize`). No real image is read.

How far this goes on the demo CLIPs is measured in docs/edit.md ("Against recovery attacks"):
neither estimate gives the readout of real images, so the attack is lowered less than an eraser
estimated from real images would (that one is reported there as a diagnostic only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_unlearn.clip.loading import eval_mode
from lightning_unlearn.clip.text_projection import affine_edit_image, image_projection_names
from lightning_unlearn.core._validation import _choice_validation, _positive_int_validation, _positive_number_validation
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.maths.erasure import AffineEraser, covariance, oblique_eraser, shrunk
from lightning_unlearn.maths.forget_spec import Vocabulary
from lightning_unlearn.maths.synthesis import SynthesisConfig, SynthesisError, synthesize
from lightning_unlearn.maths.zeroshot import encode_classes
from lightning_unlearn.methods.contract import MethodHost
from lightning_unlearn.methods.edit import TextProjectionEdit, evaluation_vocabularies

Direction = Literal["text", "synthetic"]
Covariance = Literal["synthetic", "prompts"]


@dataclass
class SyntheticFeatures:
    """Synthetic images of every class of every vocabulary and their image embeddings.

    Attributes:
        images: ``[M, 3, H, W]`` (the model's normalised pixel space).
        features: ``[M, D]`` their image embeddings (not normalised, float64).
        vocabulary: ``[M]`` the index of each image's vocabulary.
        label: ``[M]`` its class index in that vocabulary.
        evaluation: per vocabulary, the class embeddings ``[C, D]`` at its evaluation template.
    """

    images: Tensor
    features: Tensor
    vocabulary: Tensor
    label: Tensor
    evaluation: list[Tensor]


def synthetic_features(
    module: "MethodHost", vocabularies: list[Vocabulary], images_per_class: int, config: SynthesisConfig, seed: int,
) -> SyntheticFeatures:
    """Synthesise ``images_per_class`` images of every class of every vocabulary (by name, from noise,
    :func:`~lightning_unlearn.maths.synthesis.synthesize`) and encode them. Images that miss their
    target are kept out."""
    model = module.model
    device = next(model.parameters()).device
    kept, features, vocab_of, class_of, evaluation = [], [], [], [], []
    with eval_mode(model):
        for v, vocabulary in enumerate(vocabularies):
            averaged = encode_classes(model, module.tokenizer, vocabulary.classnames, vocabulary.templates, device)
            evaluation.append(encode_classes(model, module.tokenizer, vocabulary.classnames, vocabulary.templates[:1],
                                             device).double().cpu())
            index = [c for c in range(len(vocabulary.classnames)) for _ in range(images_per_class)]
            try:
                made = synthesize(module.encode_image, averaged, index, module.image_size, module.image_mean,
                                  module.image_std, config, seed=seed + v)
            except SynthesisError as err:  # keep what reached its target
                made = err.result
                if made is None:
                    raise
            keep = made.reached.cpu()
            images = made.images[keep.to(made.images.device)]
            with torch.no_grad():
                feats = torch.cat([model.encode_image(images[s : s + 256].to(device)).double().cpu()
                                   for s in range(0, len(images), 256)])
            kept.append(images.cpu())
            features.append(feats)
            vocab_of.append(torch.full((len(feats),), v, dtype=torch.long))
            class_of.append(made.class_index.cpu()[keep])
    return SyntheticFeatures(torch.cat(kept), torch.cat(features), torch.cat(vocab_of), torch.cat(class_of), evaluation)


def prompt_embeddings(module: "MethodHost", vocabularies: list[Vocabulary]) -> tuple[Tensor, Tensor, Tensor]:
    """Every class of every vocabulary under each of its templates, one normalised embedding per
    prompt ``[P, D]`` (float64, CPU), with each prompt's vocabulary ``[P]`` and class ``[P]``."""
    model = module.model
    device = next(model.parameters()).device
    rows, vocab_of, class_of = [], [], []
    with eval_mode(model):
        for v, vocabulary in enumerate(vocabularies):
            for template in vocabulary.templates:
                rows.append(encode_classes(model, module.tokenizer, vocabulary.classnames, [template], device).double().cpu())
                vocab_of.append(torch.full((len(vocabulary.classnames),), v, dtype=torch.long))
                class_of.append(torch.arange(len(vocabulary.classnames)))
    return torch.cat(rows), torch.cat(vocab_of), torch.cat(class_of)


class DeepEdit(TextProjectionEdit):
    """The text-projection edit, plus the forgotten classes erased from the image embeddings (ZS).

    After the text edit (every argument of :class:`TextProjectionEdit` applies), the image tower's
    final projection (``visual.attnpool.c_proj`` of a ModifiedResNet, ``visual.proj`` of a ViT) is
    composed with the oblique projection ``f -> f - D R^T (f - m)`` that removes each forgotten
    class's direction ``D``; the readout ``R = S^-1 D (D^T S^-1 D)^-1`` is the least-change one for
    the covariance ``S`` of synthetic images of the retained classes (shrunk towards isotropy by
    ``shrinkage``), and ``m`` their mean (zero for a ViT, whose projection has no bias). This is
    LEACE's closed form with the class direction given. No real image is used. With
    ``covariance: prompts`` and ``direction: text`` nothing is synthesised either: ``S`` is the
    covariance of the retained classes' prompt embeddings (every template of every vocabulary), a
    text-side estimate of how the retained classes spread, and ``m`` is zero.

    Args:
        image_erasure: erase on the image side (False: the text edit alone).
        direction: ``text``: each forgotten class's embedding at its vocabulary's evaluation
            template minus the mean class embedding of every vocabulary; ``synthetic``: the mean
            embedding of its synthetic images minus that of the retained classes' synthetic images.
        shrinkage: ridge on the covariance, relative to its mean variance per coordinate (0: the
            estimated covariance as is; large: an orthogonal projection).
        covariance: ``synthetic``: of the retained classes' synthetic images; ``prompts``: of the
            retained classes' prompt embeddings, one per class and template of every vocabulary
            (with ``direction: text`` no image is synthesised; docs/edit.md compares the two).
        images_per_class: synthetic images per class of every evaluation vocabulary.
        synthesis: :class:`~lightning_unlearn.maths.synthesis.SynthesisConfig` fields (default:
            the published generator's).
        synthesis_seed: seed of the synthetic images.
        **kwargs: the :class:`TextProjectionEdit` arguments.
    """

    short_name = "deep"
    trains = False

    def __init__(
        self,
        image_erasure: bool = True,
        direction: Direction = "text",
        shrinkage: float = 0.1,
        covariance: Covariance = "synthetic",
        images_per_class: int = 16,
        synthesis: Optional[dict[str, Any]] = None,
        synthesis_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(image_erasure, bool):
            raise ConfigError(f"image_erasure must be true or false, got {image_erasure!r}")
        _choice_validation("direction", direction, ("text", "synthetic"))
        _positive_number_validation("shrinkage", shrinkage, allow_zero=True)
        _choice_validation("covariance", covariance, ("synthetic", "prompts"))
        _positive_int_validation("images_per_class", images_per_class)
        _positive_int_validation("synthesis_seed", synthesis_seed, allow_zero=True)
        if synthesis is not None and not isinstance(synthesis, dict):
            raise ConfigError(f"synthesis must be a mapping of SynthesisConfig fields or None, got {synthesis!r}")
        synthesis = dict(synthesis) if synthesis is not None else None
        self._synthesis_config = self._config(synthesis)  # bad fields fail here, before any work
        shrinkage = float(shrinkage)
        self._keep(locals())

    @staticmethod
    def _config(synthesis: Optional[dict[str, Any]]) -> SynthesisConfig:
        try:
            return SynthesisConfig(**(synthesis or {}))
        except TypeError as err:
            raise ConfigError(f"synthesis: {err} (valid fields: those of SynthesisConfig)") from err

    def setup(self, module: "MethodHost") -> None:
        super().setup(module)
        if self.image_erasure:
            image_projection_names(module.model)  # an unsupported image tower fails before any work

    @property
    def synthesises(self) -> bool:
        """Whether the eraser needs synthetic images (not with prompt covariance and text direction)."""
        return self.covariance == "synthetic" or self.direction == "synthetic"

    def eraser(self, module: "MethodHost") -> tuple[AffineEraser, dict[str, Any]]:
        """The image-side eraser for ``module.spec``'s forgotten classes (no weight changes)."""
        spec = module.spec
        vocabularies = evaluation_vocabularies(module)
        made = None
        if self.synthesises:
            start = time.perf_counter()
            made = synthetic_features(module, vocabularies, self.images_per_class, self._synthesis_config,
                                      self.synthesis_seed)
            self.synthetic = made  # kept for inspection (tests, notebooks)
            self.timings["synthesis"] = time.perf_counter() - start
        start = time.perf_counter()
        if self.covariance == "prompts":
            prompts, p_vocab, p_class = prompt_embeddings(module, vocabularies)
        if made is not None:
            feats, vocab_of, class_of, evaluation = made.features, made.vocabulary, made.label, made.evaluation
            forget_rows = torch.tensor([c in spec.forget_indices for c in class_of.tolist()]) & (vocab_of == 0)
            if not bool((~forget_rows).sum() > 1):
                raise ConfigError("the image erasure needs synthetic images of at least one retained class")
            mean = feats[~forget_rows].mean(0)
        else:  # prompt covariance: each vocabulary's evaluation embeddings are its first template's rows
            evaluation = [prompts[p_vocab == v][: len(vocabulary.classnames)] for v, vocabulary in enumerate(vocabularies)]
            mean = torch.zeros(evaluation[0].shape[1], dtype=torch.float64)  # the mean hardly matters (docs/edit.md)
        if self.covariance == "synthetic":
            _, cov = covariance(feats[~forget_rows])
        else:
            retained = ~(torch.tensor([c in spec.forget_indices for c in p_class.tolist()]) & (p_vocab == 0))
            if not bool(retained.sum() > 1):
                raise ConfigError("covariance 'prompts' needs at least two retained prompts (retained classes x templates)")
            _, cov = covariance(prompts[retained])
        if image_projection_names(module.model) == ["visual.proj"]:
            mean = torch.zeros_like(mean)  # a ViT's projection has no bias: erase around the origin
        if self.direction == "text":
            centre = F.normalize(torch.cat(evaluation), dim=-1).mean(0)
            directions = torch.stack([evaluation[0][c] - centre for c in spec.forget_indices], dim=1)
        else:
            missing = [spec.vocabulary.classnames[c] for c in spec.forget_indices
                       if not bool(((class_of == c) & (vocab_of == 0)).any())]
            if missing:
                raise ConfigError(f"no synthetic image of {missing} reached its target: direction 'synthetic' needs them")
            directions = torch.stack([feats[(class_of == c) & (vocab_of == 0)].mean(0) - feats[~forget_rows].mean(0)
                                      for c in spec.forget_indices], dim=1)
        eraser = oblique_eraser(directions, shrunk(cov, self.shrinkage), mean)
        self.timings["erasure"] = time.perf_counter() - start
        section: dict[str, Any] = {
            "direction": self.direction,
            "covariance": self.covariance,
            "shrinkage": self.shrinkage,
            "rank": eraser.rank,
        }
        if made is not None:
            erased = eraser(feats)
            shift = 1.0 - F.cosine_similarity(erased[~forget_rows], feats[~forget_rows], dim=-1)
            section["synthetic_images"] = {"forget": int(forget_rows.sum()), "retain": int((~forget_rows).sum()),
                                           "vocabularies": [v.name or "vocabulary" for v in vocabularies]}
            section["retain_shift"] = {"mean_1_minus_cos": float(shift.mean()), "max_1_minus_cos": float(shift.max())}
        else:
            section["prompts"] = {"retain": int(retained.sum()), "vocabularies": [v.name or "vocabulary" for v in vocabularies]}
        return eraser, section

    def apply(self, module: "MethodHost") -> dict[str, Any]:
        section: dict[str, Any] = {}
        eraser = None
        if self.image_erasure:  # synthesised from the unedited model, so the forgotten classes still have a name
            eraser, section["image_erasure"] = self.eraser(module)
        section = {**super().apply(module), **section}
        if eraser is not None:
            section["image_erasure"]["changed"] = affine_edit_image(module.model, eraser.linear(), eraser.offset())
        return section
