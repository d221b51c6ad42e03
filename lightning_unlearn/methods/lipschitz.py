"""The paper's multimodal Lipschitz method and its perturbation-based relatives (ULip, Emb).

All three perturb each forget image with ``N`` Gaussian draws of the module's current noise
level ``sigma`` (raised by ``NoiseLayerEscalation``), from per-image generators, and differ only in
the loss (:mod:`lightning_unlearn.maths.objectives`).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch

from lightning_unlearn.core._validation import _choice_validation, _positive_int_validation
from lightning_unlearn.methods.contract import MethodHost, UnlearningMethod
from lightning_unlearn.maths.objectives import embedding_loss, image_lipschitz_loss, multimodal_lipschitz_loss

Reduction = Literal["published", "mean"]
NoiseNorm = Literal["applied", "drawn"]


class PerturbationMethod(UnlearningMethod):
    """Shared settings of the perturbation losses.

    Args:
        num_perturbations: N, perturbations per image and step (the paper: 25).
        max_batch: most perturbed images per forward pass (memory bound), None for all at once.
        detach_perturbed: no gradient through the perturbed branch (as the published code).
        reduction: ``published``: sum over the global batch divided by 4N (the published code);
            ``mean``: mean over images and perturbations.
        noise_norm: ``applied``: divide by the norm of the perturbation after clamping (published);
            ``drawn``: by the norm of the drawn noise.
        clamp: clip each perturbed image to its clean image's value range.
    """

    def __init__(
        self,
        num_perturbations: int = 25,
        max_batch: Optional[int] = 256,
        detach_perturbed: bool = True,
        reduction: Reduction = "published",
        noise_norm: NoiseNorm = "applied",
        clamp: bool = True,
    ) -> None:
        super().__init__()
        _positive_int_validation("num_perturbations", num_perturbations)
        _positive_int_validation("max_batch", max_batch, allow_none=True)
        _choice_validation("reduction", reduction, ("published", "mean"))
        _choice_validation("noise_norm", noise_norm, ("applied", "drawn"))
        self._keep(locals())

    def _perturbation_kwargs(self, module: "MethodHost", batch: dict[str, Any]) -> dict[str, Any]:
        return dict(
            sigma=module.sigma, num_perturbations=self.num_perturbations, max_batch=self.max_batch,
            detach_perturbed=self.detach_perturbed, clamp=self.clamp, generator=module.noise_generators(batch["index"]),
            reduction=self.reduction, noise_norm=self.noise_norm, world_size=module.world_size,
        )


class MultimodalLipschitz(PerturbationMethod):
    """The paper's method (Lip): the multimodal Lipschitz loss; the perturbed image stands in for a
    perturbed text, so both towers unlearn."""

    short_name = "lip"

    def training_step(self, module: "MethodHost", batch: dict[str, Any]) -> torch.Tensor:
        text = module.forget_text_features(batch["label"])
        return multimodal_lipschitz_loss(module.encode_image, batch["image"], text,
                                         **self._perturbation_kwargs(module, batch))


class ImageLipschitz(PerturbationMethod):
    """ULip (Foster et al.): the Lipschitz loss of the image tower alone."""

    short_name = "ulip"

    def training_step(self, module: "MethodHost", batch: dict[str, Any]) -> torch.Tensor:
        return image_lipschitz_loss(module.encode_image, batch["image"], **self._perturbation_kwargs(module, batch))


class EmbeddingLoss(PerturbationMethod):
    """Emb (the paper's equations 7-9): the two distances without ``1/||eps||``, plus
    ``alpha * ||f_img(x) + f_txt(t)||`` with the sign as the paper writes it.

    Args:
        alpha: weight of the last term (the paper gives no value; 1.0 here).
        **kwargs: the :class:`PerturbationMethod` settings (num_perturbations, max_batch, ...);
            ``noise_norm`` is accepted (a config carried over from another method keeps working)
            but has no effect: Emb does not divide by the noise norm.
    """

    short_name = "emb"

    def __init__(self, alpha: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        alpha = float(alpha)
        self._keep(locals())

    def training_step(self, module: "MethodHost", batch: dict[str, Any]) -> torch.Tensor:
        text = module.forget_text_features(batch["label"])
        kwargs = self._perturbation_kwargs(module, batch)
        kwargs.pop("noise_norm")  # Emb does not divide by the noise norm
        return embedding_loss(module.encode_image, batch["image"], text, alpha=self.alpha, **kwargs)
