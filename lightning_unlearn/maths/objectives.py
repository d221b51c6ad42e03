"""Unlearning objectives as pure functions of an image encoder and tensors.

The paper's multimodal Lipschitz loss for a synthetic image ``x`` and the embedding ``t`` of its
class prompt, over ``N`` perturbations ``eps ~ N(0, sigma^2)``::

    (||f_img(x) - f_img(x~)|| + ||t - f_img(x~)||) / ||x~ - x||,    x~ = clamp(x + eps)

on raw (unnormalised) embeddings. The perturbed image stands in for a perturbed text, so the
gradient reaches both towers. Perturbed images are encoded in chunks of at most ``max_batch``
images, and their noise is drawn chunk by chunk, so memory stays flat as ``N`` grows (with the
perturbed branch detached, as in the published code).

Reduction (``reduction``): ``"published"`` is the published code's sum over images and
perturbations divided by ``4N``, i.e. ``B/4`` times the per-image mean. The factor matters because
Adam's weight decay is added to the gradient: a loss 16x smaller gives the decay 16x more weight.
Under DDP each rank passes ``world_size`` and returns ``world_size * (its sum) / (4N)``; DDP
averages the ranks' gradients, so the result is the gradient of the published loss of the global
batch, whatever the shard sizes. ``"mean"`` is the mean over images and perturbations (DDP's
averaging then gives the global mean for equal shards; ``world_size`` does not enter).

Clamping (``clamp``): each perturbed image is clipped to the ``[min, max]`` of its own clean image.
The published code clips to the range of the whole clean batch; the per-image range is kept here
so that an image's loss terms do not depend on which other images share its batch, i.e. on how a
batch is split across DDP ranks or chunks (with per-image noise generators the terms are then
exactly the same under any split).
"""

from __future__ import annotations

from typing import Callable, Literal, Optional, Sequence, Union

import torch

from lightning_unlearn.core._validation import (
    _choice_validation,
    _positive_int_validation,
    _positive_number_validation,
)
from lightning_unlearn.core.errors import ConfigError

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]
# One generator for the batch, or one per image: per-image generators make each image's noise
# independent of how the batch is split (across chunks or DDP ranks).
NoiseGenerator = Optional[Union[torch.Generator, Sequence[torch.Generator]]]
NoiseNorm = Literal["applied", "drawn"]
Reduction = Literal["published", "mean"]


def draw_noise(shape: torch.Size, generator: NoiseGenerator, device, dtype) -> torch.Tensor:
    """One standard-normal perturbation set of ``shape`` ``[B, C, H, W]``."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if len(generator) != shape[0]:
        raise ConfigError(f"got {len(generator)} generators for a batch of {shape[0]} images")
    return torch.stack([torch.randn(shape[1:], generator=g, device=device, dtype=dtype) for g in generator])


def _check_perturbations(sigma: float, num_perturbations: int, max_batch: Optional[int], noise_norm: str) -> None:
    """The perturbation arguments (:class:`~lightning_unlearn.core.errors.ConfigError` naming the value)."""
    _positive_number_validation("sigma", sigma)
    _positive_int_validation("num_perturbations", num_perturbations)
    _positive_int_validation("max_batch", max_batch, allow_none=True)
    _choice_validation("noise_norm", noise_norm, ("applied", "drawn"))


class _Chunks:
    """Encodes perturbed images in forwards of at most ``size`` images, in the order given."""

    def __init__(self, encode_image: ImageEncoder, size: int, grad: bool) -> None:
        self.encode_image, self.size, self.grad = encode_image, size, grad
        self.features: list[torch.Tensor] = []
        self.pending: list[torch.Tensor] = []
        self.count = 0

    def add(self, images: torch.Tensor) -> None:
        """Queue ``images``, splitting them across chunks where a chunk fills up."""
        start = 0
        while start < len(images):
            take = min(len(images) - start, self.size - self.count)
            self.pending.append(images[start : start + take])
            self.count += take
            start += take
            if self.count >= self.size:
                self.flush()

    def flush(self) -> None:
        """Encode what is queued."""
        if self.pending:
            with torch.set_grad_enabled(self.grad):
                self.features.append(self.encode_image(torch.cat(self.pending)))
            self.pending, self.count = [], 0


def perturbed_features(
    encode_image: ImageEncoder,
    images: torch.Tensor,
    sigma: float,
    num_perturbations: int,
    max_batch: Optional[int] = None,
    detach: bool = True,
    clamp: bool = True,
    generator: NoiseGenerator = None,
    noise_norm: NoiseNorm = "applied",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode ``N`` Gaussian perturbations of every image.

    Returns ``(features [N, B, D], norms [N, B])``. Noise is drawn one perturbation set
    ``[B, C, H, W]`` at a time in order ``n = 0..N-1``, so the result does not depend on
    ``max_batch``. With ``clamp`` the perturbed images are clipped to the ``[min, max]`` of their
    own clean image (module docstring). ``norms`` are those ``noise_norm`` chooses:
    ``"applied"`` (published) ``||x - clamp(x + eps)||``, the perturbation actually applied
    (the drawn one when ``clamp`` is False); ``"drawn"`` ``||eps||``. They carry no gradient.
    """
    _check_perturbations(sigma, num_perturbations, max_batch, noise_norm)
    batch = images.shape[0]
    flat = images.detach().flatten(1)
    lo, hi = (v.view(-1, *([1] * (images.dim() - 1))) for v in (flat.amin(dim=1), flat.amax(dim=1)))
    clean = images.detach() if detach else images
    chunk = max(1, max_batch or batch * num_perturbations)
    chunks = _Chunks(encode_image, chunk, torch.is_grad_enabled() and not detach)
    norms: list[torch.Tensor] = []
    for _ in range(num_perturbations):
        noise = draw_noise(images.shape, generator, images.device, images.dtype) * sigma
        perturbed = clean + noise
        applied = noise
        if clamp:
            perturbed = torch.maximum(torch.minimum(perturbed, hi), lo)
            applied = perturbed.detach() - images.detach()
        norms.append((applied if noise_norm == "applied" else noise).flatten(1).norm(dim=1))
        chunks.add(perturbed)
    chunks.flush()
    return torch.cat(chunks.features).reshape(num_perturbations, batch, -1), torch.stack(norms)


def _reduce(terms: torch.Tensor, reduction: Reduction, world_size: int) -> torch.Tensor:
    """``terms [N, B]`` -> the loss: ``world_size * sum / (4N)`` (published) or the mean."""
    if reduction == "mean":
        return terms.mean()
    return terms.sum() * world_size / (4 * terms.shape[0])


def _distances(
    encode_image: ImageEncoder, images: torch.Tensor, text_features: Optional[torch.Tensor], sigma: float,
    num_perturbations: int, max_batch: Optional[int], detach_perturbed: bool, clamp: bool,
    generator: NoiseGenerator, noise_norm: NoiseNorm, reduction: Reduction, world_size: int,
    image_features: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """What the losses share: ``(clean features [B, D], ||f(x) - f(x~)|| [N, B],
    ||t - f(x~)|| [N, B] or None without text, norms [N, B])``, arguments checked first."""
    _choice_validation("reduction", reduction, ("published", "mean"))
    _positive_int_validation("world_size", world_size)
    _check_perturbations(sigma, num_perturbations, max_batch, noise_norm)
    clean = encode_image(images) if image_features is None else image_features
    pert, norms = perturbed_features(
        encode_image, images, sigma, num_perturbations, max_batch, detach_perturbed, clamp, generator, noise_norm
    )
    image_term = (clean.unsqueeze(0) - pert).norm(dim=-1)
    text_term = None if text_features is None else (text_features.unsqueeze(0) - pert).norm(dim=-1)
    return clean, image_term, text_term, norms


def multimodal_lipschitz_loss(
    encode_image: ImageEncoder,
    images: torch.Tensor,
    text_features: torch.Tensor,
    sigma: float,
    num_perturbations: int = 25,
    max_batch: Optional[int] = None,
    detach_perturbed: bool = True,
    clamp: bool = True,
    generator: NoiseGenerator = None,
    image_features: Optional[torch.Tensor] = None,
    noise_norm: NoiseNorm = "applied",
    reduction: Reduction = "published",
    world_size: int = 1,
) -> torch.Tensor:
    """The paper's multimodal Lipschitz loss (module docstring).

    Args:
        encode_image: maps images ``[B, C, H, W]`` to raw embeddings ``[B, D]``.
        images: synthetic images in the model's normalised pixel space.
        text_features: raw embedding of each image's class prompt ``[B, D]`` (or ``[1, D]``).
        sigma: standard deviation of the Gaussian perturbation.
        num_perturbations: N, perturbations per image.
        max_batch: most perturbed images encoded in one forward pass (None: all at once).
        detach_perturbed: encode perturbed images without gradient (the published code).
        clamp: clip each perturbed image to its clean image's range (the published code: the
            clean batch's range; module docstring).
        generator: random generator(s) for the noise: one, or one per image.
        image_features: ``encode_image(images)`` if already computed.
        noise_norm: divide by the norm of the ``"applied"`` perturbation (published) or of the
            ``"drawn"`` noise (see :func:`perturbed_features`).
        reduction: ``"published"`` (sum / 4N, times ``world_size``) or ``"mean"``.
        world_size: DDP processes the batch is split across (``"published"`` only).
    """
    _, image_term, text_term, norms = _distances(
        encode_image, images, text_features, sigma, num_perturbations, max_batch, detach_perturbed, clamp,
        generator, noise_norm, reduction, world_size, image_features,
    )
    return _reduce((image_term + text_term) / norms, reduction, world_size)


def image_lipschitz_loss(
    encode_image: ImageEncoder, images: torch.Tensor, sigma: float, num_perturbations: int = 25,
    max_batch: Optional[int] = None, detach_perturbed: bool = True, clamp: bool = True,
    generator: NoiseGenerator = None, noise_norm: NoiseNorm = "applied", reduction: Reduction = "published",
    world_size: int = 1,
) -> torch.Tensor:
    """Image-only Lipschitz loss (ULip, Foster et al.): ``||f(x) - f(x~)|| / ||x~ - x||`` reduced
    like the multimodal loss; the arguments are those of :func:`multimodal_lipschitz_loss`."""
    _, image_term, _, norms = _distances(
        encode_image, images, None, sigma, num_perturbations, max_batch, detach_perturbed, clamp,
        generator, noise_norm, reduction, world_size,
    )
    return _reduce(image_term / norms, reduction, world_size)


def embedding_loss(
    encode_image: ImageEncoder, images: torch.Tensor, text_features: torch.Tensor, sigma: float,
    num_perturbations: int = 25, alpha: float = 1.0, max_batch: Optional[int] = None,
    detach_perturbed: bool = True, clamp: bool = True, generator: NoiseGenerator = None,
    noise_norm: NoiseNorm = "applied", reduction: Reduction = "published", world_size: int = 1,
) -> torch.Tensor:
    """The paper's Emb baseline: ``||f_img(x) - f_img(x~)|| + ||f_txt(t) - f_img(x~)||`` (no
    division by the perturbation's norm, so ``noise_norm`` has no effect) plus
    ``alpha * ||f_img(x) + f_txt(t)||``, reduced like the multimodal loss (the last term counts
    once per image). The ``+`` inside the last norm is the sign the paper writes (eq. 7-9), kept as
    written. Other arguments: those of :func:`multimodal_lipschitz_loss`.
    """
    clean, image_term, text_term, _ = _distances(
        encode_image, images, text_features, sigma, num_perturbations, max_batch, detach_perturbed, clamp,
        generator, noise_norm, reduction, world_size,
    )
    pull = (clean + text_features).norm(dim=-1).expand_as(image_term)  # one value per image, every n
    return _reduce(image_term + text_term, reduction, world_size) + alpha * _reduce(pull, reduction, world_size)
