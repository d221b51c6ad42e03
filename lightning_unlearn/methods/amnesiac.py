"""Amnesiac relabelling (Graves et al., "Amnesiac Machine Learning", AAAI 2021), adapted to CLIP.

The paper's baselines Amns and AmnsRetain (Kravets & Namboodiri, Table 1): fine-tune with CLIP's
own contrastive loss (open_clip's :class:`~open_clip.loss.ClipLoss`) on forget images whose caption
is replaced by the caption of a randomly drawn *other* class, so the image tower and the text tower
learn to pair the forgotten class's images with something else.

- :class:`AmnesiacRelabelling` (``amns``, ZS): the forget images alone (synthetic by default).
- :class:`AmnesiacRetain` (``amns_retain``, not ZS): plus real images of the other classes with
  their true captions in the same contrastive batch (``RealForgetDataModule`` with
  ``retain_images_per_class`` > 0), so the retained pairs are held in place.

Captions are ``caption_template`` (default: the module's ``forget_prompt``, the prompt the other
methods pair forget images with) filled with the class name. The other class of each forget image is
drawn from the module's per-image generators (seeded by the noise seed, the global step and the
image's index), so the draw does not depend on how a batch is split across devices.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from lightning_unlearn.core._validation import _template_validation
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.methods.contract import MethodHost, UnlearningMethod
from lightning_unlearn.core.names import prompt_name


class AmnesiacRelabelling(UnlearningMethod):
    """Amns: CLIP's contrastive loss on forget images captioned as a random other class.

    Args:
        caption_template: prompt with one ``{}`` for the class name (default: the module's
            ``forget_prompt``).
    """

    short_name = "amns"

    def __init__(self, caption_template: Optional[str] = None) -> None:
        if caption_template is not None:
            _template_validation("caption_template", caption_template)
        self.caption_template = caption_template
        self._tokens: Optional[torch.Tensor] = None
        self._others: Optional[torch.Tensor] = None
        self._loss: Optional[ClipLoss] = None

    def setup(self, module: "MethodHost") -> None:
        """Tokenise one caption per vocabulary class; the classes a caption may be drawn from are
        the retained ones."""
        vocabulary = module.spec.vocabulary
        template = self.caption_template or module.hparams.forget_prompt
        self._tokens = module.tokenizer([template.format(prompt_name(name)) for name in vocabulary.classnames])
        others = module.spec.retain_indices()
        if not others:
            raise ConfigError("amnesiac relabelling needs at least one class that is not forgotten")
        self._others = torch.tensor(others, dtype=torch.long)
        self._loss = None  # made at the first step, when the process group (DDP) exists

    def _clip_loss(self, module: "MethodHost") -> ClipLoss:
        if self._loss is None:
            # open_clip's training configuration: each rank's images against every rank's captions.
            self._loss = ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True,
                                  rank=module.global_rank, world_size=module.world_size)
        return self._loss

    def relabel(self, module: "MethodHost", indices: torch.Tensor) -> torch.Tensor:
        """A random retained class (vocabulary index) for each forget image, from its generator."""
        assert self._others is not None, "setup() first"
        draws = [int(torch.randint(len(self._others), (1,), generator=g, device=g.device)) for g in
                 module.noise_generators(indices)]
        return self._others[torch.tensor(draws, dtype=torch.long)]

    def caption_features(self, module: "MethodHost", classes: torch.Tensor) -> torch.Tensor:
        """Raw text embeddings of the captions of ``classes`` (each distinct caption encoded once)."""
        assert self._tokens is not None, "setup() first"
        unique, inverse = torch.unique(classes.cpu(), return_inverse=True)
        features = module.model.encode_text(self._tokens[unique].to(module.device))
        return features[inverse.to(module.device)]

    def contrastive_loss(self, module: "MethodHost", images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """open_clip's ``ClipLoss`` of ``images`` paired with the captions of ``classes``, at the
        model's own (frozen) temperature."""
        image_features = F.normalize(module.encode_image(images), dim=-1)
        text_features = F.normalize(self.caption_features(module, classes), dim=-1)
        return self._clip_loss(module)(image_features, text_features, module.model.logit_scale.exp())

    def training_step(self, module: "MethodHost", batch: dict[str, Any]) -> torch.Tensor:
        return self.contrastive_loss(module, batch["image"], self.relabel(module, batch["index"]))


class AmnesiacRetain(AmnesiacRelabelling):
    """AmnsRetain: amnesiac relabelling with real retain images (true captions) in the same
    contrastive batch. Needs a DataModule that serves ``retain_image``/``retain_label``.

    Args:
        caption_template: prompt with one ``{}`` for the class name (default: the module's
            ``forget_prompt``).
    """

    short_name = "amns_retain"
    needs_retain_images = True

    def training_step(self, module: "MethodHost", batch: dict[str, Any]) -> torch.Tensor:
        images = torch.cat([batch["image"], batch["retain_image"]])
        classes = torch.cat([self.relabel(module, batch["index"]), batch["retain_label"].cpu()])
        return self.contrastive_loss(module, images, classes)
