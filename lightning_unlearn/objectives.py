"""Unlearning objectives as pure functions of an image encoder and tensors.

The paper's multimodal Lipschitz loss for a synthetic image ``x`` and the embedding ``t`` of its
class prompt, averaged over ``N`` perturbations ``eps ~ N(0, sigma^2)``::

    (||f_img(x) - f_img(x + eps)|| + ||t - f_img(x + eps)||) / ||eps||

on raw (unnormalised) embeddings. The perturbed image stands in for a perturbed text, so the
gradient reaches both towers. Perturbed images are encoded in chunks of at most ``max_batch``
images, and their noise is drawn chunk by chunk, so memory stays flat as ``N`` grows (with the
perturbed branch detached, as in the published code).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]
# One generator for the batch, or one per image: per-image generators make each image's noise
# independent of how the batch is split (across chunks or DDP ranks).
NoiseGenerator = Optional[Union[torch.Generator, Sequence[torch.Generator]]]


def draw_noise(shape: torch.Size, generator: NoiseGenerator, device, dtype) -> torch.Tensor:
    """One standard-normal perturbation set of ``shape`` ``[B, C, H, W]``."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]} images")
    return torch.stack([torch.randn(shape[1:], generator=g, device=device, dtype=dtype) for g in generator])


def perturbed_features(
    encode_image: ImageEncoder,
    images: torch.Tensor,
    sigma: float,
    num_perturbations: int,
    max_batch: Optional[int] = None,
    detach: bool = True,
    clamp: bool = True,
    generator: NoiseGenerator = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode ``N`` Gaussian perturbations of every image.

    Returns ``(features [N, B, D], noise_norms [N, B])``. Noise is drawn one perturbation set
    ``[B, C, H, W]`` at a time in order ``n = 0..N-1``, so the result does not depend on
    ``max_batch``. With ``clamp`` the perturbed images are clipped to the ``[min, max]`` of their
    clean image (the published code uses the clean batch's range); the norms are those of the drawn noise.
    """
    if sigma <= 0 or not torch.isfinite(torch.tensor(sigma)):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    if num_perturbations < 1:
        raise ValueError(f"num_perturbations must be >= 1, got {num_perturbations!r}")
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1 or None, got {max_batch!r}")
    batch = images.shape[0]
    chunk = max(1, (max_batch or batch * num_perturbations))
    # Each image's own range (the published code uses the batch's): per image, the result does not
    # depend on which other images share the batch, e.g. on a DDP shard.
    lo = images.detach().flatten(1).amin(dim=1).view(-1, *([1] * (images.dim() - 1)))
    hi = images.detach().flatten(1).amax(dim=1).view(-1, *([1] * (images.dim() - 1)))
    clean = images.detach() if detach else images

    features: list[torch.Tensor] = []
    norms: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []  # perturbed images waiting to fill a chunk
    pending_count = 0

    def flush() -> None:
        nonlocal pending, pending_count
        if not pending:
            return
        stacked = torch.cat(pending)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):
            features.append(encode_image(stacked))
        pending, pending_count = [], 0

    for _ in range(num_perturbations):
        noise = draw_noise(images.shape, generator, images.device, images.dtype) * sigma
        norms.append(noise.flatten(1).norm(dim=1))
        perturbed = clean + noise
        if clamp:
            perturbed = torch.maximum(torch.minimum(perturbed, hi), lo)
        start = 0
        while start < batch:  # split a set across chunks when max_batch < B
            take = min(batch - start, chunk - pending_count)
            pending.append(perturbed[start : start + take])
            pending_count += take
            start += take
            if pending_count >= chunk:
                flush()
    flush()
    feats = torch.cat(features).reshape(num_perturbations, batch, -1)
    return feats, torch.stack(norms)


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
) -> torch.Tensor:
    """The paper's multimodal Lipschitz loss (mean over images and perturbations).

    Args:
        encode_image: maps images ``[B, C, H, W]`` to raw embeddings ``[B, D]``.
        images: synthetic images in the model's normalised pixel space.
        text_features: raw embedding of each image's class prompt ``[B, D]`` (or ``[1, D]``).
        sigma: standard deviation of the Gaussian perturbation.
        num_perturbations: N, perturbations per image.
        max_batch: most perturbed images encoded in one forward pass (None: all at once).
        detach_perturbed: encode perturbed images without gradient (the published code).
        clamp: clip each perturbed image to its clean image's range.
        generator: random generator(s) for the noise: one, or one per image.
        image_features: ``encode_image(images)`` if already computed.
    """
    clean = encode_image(images) if image_features is None else image_features
    pert, norms = perturbed_features(
        encode_image, images, sigma, num_perturbations, max_batch, detach_perturbed, clamp, generator
    )
    image_term = (clean.unsqueeze(0) - pert).norm(dim=-1)
    text_term = (text_features.unsqueeze(0) - pert).norm(dim=-1)
    return ((image_term + text_term) / norms).mean()


def image_lipschitz_loss(
    encode_image: ImageEncoder,
    images: torch.Tensor,
    sigma: float,
    num_perturbations: int = 25,
    max_batch: Optional[int] = None,
    detach_perturbed: bool = True,
    clamp: bool = True,
    generator: NoiseGenerator = None,
) -> torch.Tensor:
    """Image-only Lipschitz loss (ULip, Foster et al.): mean ``||f(x) - f(x+eps)|| / ||eps||``."""
    clean = encode_image(images)
    pert, norms = perturbed_features(
        encode_image, images, sigma, num_perturbations, max_batch, detach_perturbed, clamp, generator
    )
    return ((clean.unsqueeze(0) - pert).norm(dim=-1) / norms).mean()


def embedding_loss(
    encode_image: ImageEncoder,
    images: torch.Tensor,
    text_features: torch.Tensor,
    sigma: float,
    num_perturbations: int = 25,
    alpha: float = 1.0,
    max_batch: Optional[int] = None,
    detach_perturbed: bool = True,
    clamp: bool = True,
    generator: NoiseGenerator = None,
) -> torch.Tensor:
    """The paper's Emb baseline: the two distances without the ``1/||eps||`` factor, plus
    ``alpha * ||f_img(x) + f_txt(t)||`` (as the paper states it)."""
    clean = encode_image(images)
    pert, _ = perturbed_features(
        encode_image, images, sigma, num_perturbations, max_batch, detach_perturbed, clamp, generator
    )
    image_term = (clean.unsqueeze(0) - pert).norm(dim=-1)
    text_term = (text_features.unsqueeze(0) - pert).norm(dim=-1)
    pull = (clean + text_features).norm(dim=-1)
    return (image_term + text_term).mean() + alpha * pull.mean()
