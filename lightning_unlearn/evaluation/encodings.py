"""What one evaluation state encodes, encoded once: :class:`StateEncodings`.

In one model state (``before``/``after`` unlearning, or one ``validate``/``test`` run) the
module's accuracies and the evaluation suite need the same few encodings: the forget vocabulary's
class embeddings (forget-set and real validation accuracy, verification), each evaluation
dataset's class embeddings under its own template (zero-shot accuracy, the template table,
retrieval) and the forget images' features (synthetic accuracy, verification). One
:class:`StateEncodings` per state computes each on first use and hands the same tensor to every
later caller. It never outlives its state: the weights change between states, so a new one is
made for each, and it holds no decision that could differ between ranks (every rank makes the
same calls in the same order).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from lightning_unlearn.clip.loading import eval_mode


class StateEncodings:
    """Text and image encodings of one model state, each computed at most once.

    Make one per evaluation state and drop it when the state ends: it assumes the weights do not
    change while it lives. The tensors it returns are exactly those the uncached computations
    give (same calls, same batches); callers must not modify them in place.

    Args:
        module: the :class:`~lightning_unlearn.UnlearningModule` whose current weights are encoded.
    """

    def __init__(self, module: Any) -> None:
        self.module = module
        # (class names, templates) -> class embeddings: a forget vocabulary with one template is
        # the same prompts as its dataset's classes under that template, encoded once
        self._text: dict[tuple[tuple[str, ...], tuple[str, ...]], torch.Tensor] = {}
        # (images, batch size, per-batch features): the images are kept so their id stays theirs
        self._images: list[tuple[torch.Tensor, int, list[torch.Tensor]]] = []

    def vocabulary_embeddings(self) -> torch.Tensor:
        """The forget vocabulary's normalised class embeddings ``[C, D]`` (``module.vocabulary_embeddings``)."""
        vocabulary = self.module.spec.vocabulary
        key = (tuple(vocabulary.classnames), tuple(vocabulary.templates))
        if key not in self._text:
            self._text[key] = self.module.vocabulary_embeddings()
        return self._text[key]

    def class_embeddings(self, classnames: Sequence[str], template: str) -> torch.Tensor:
        """Normalised class embeddings ``[C, D]`` of ``classnames`` under one template, on the
        module's device (``module.template_embeddings``)."""
        key = (tuple(classnames), (template,))
        if key not in self._text:
            self._text[key] = self.module.template_embeddings(list(classnames), template)
        return self._text[key]

    def dataset_embeddings(self, dataset: Any) -> torch.Tensor:
        """Class embeddings of an evaluation dataset under its evaluation prompt (its first template)."""
        return self.class_embeddings(dataset.classnames, dataset.templates[0])

    @torch.no_grad()
    def image_features(self, images: torch.Tensor, batch_size: int = 256) -> list[torch.Tensor]:
        """Raw features of ``images`` (this very tensor), ``batch_size`` images at a time: one
        ``[b, D]`` tensor per batch, on the module's device, with the model in eval mode."""
        for held, size, features in self._images:
            if held is images and size == batch_size:
                return features
        module = self.module
        with eval_mode(module):
            features = [module.encode_image(images[start : start + batch_size].to(module.device))
                        for start in range(0, len(images), batch_size)]
        self._images.append((images, batch_size, features))
        return features
