"""L2 projected gradient ascent (PGD) on images, as pure functions of tensors.

Used to train a robust image tower (the demo CLIP ``demo-clip-lit``, docs/demo_world.md): a
model trained on worst-case images within an L2 ball of radius ``radius`` around each training
image has input gradients that point along the class's visible parts, so images synthesised by
gradient ascent from noise (the paper's synthetic forget set) come out looking like the class.

Every norm is per image, over all of its pixels (``[N, ...]`` tensors, norms over all but dim 0).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from lightning_unlearn.core._validation import _positive_int_validation, _positive_number_validation

#: Norms below this count as zero (a zero gradient gives a zero step, not a NaN).
_TINY = 1e-12


def _per_image_norm(x: Tensor) -> Tensor:
    """L2 norm of each image of ``x`` ``[N, ...]``, shaped ``[N, 1, ..., 1]`` for broadcasting."""
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1)))


def project_l2_ball(delta: Tensor, radius: float) -> Tensor:
    """Each image's perturbation scaled down, if needed, to L2 norm at most ``radius``."""
    _positive_number_validation("radius", radius, allow_zero=True)
    norm = _per_image_norm(delta)
    return delta * torch.clamp(radius / norm.clamp_min(_TINY), max=1.0)


def l2_pgd_step(delta: Tensor, grad: Tensor, step_size: float, radius: float) -> Tensor:
    """One step of L2 PGD ascent: ``delta + step_size * grad / ||grad||``, projected on the ball.

    Args:
        delta: current perturbations ``[N, ...]`` (the adversarial image is ``x + delta``).
        grad: gradient of the loss to maximise w.r.t. the images (or ``delta``), same shape.
        step_size: L2 length of the step of each image.
        radius: L2 radius of the allowed perturbation of each image.

    Returns:
        The new perturbations, each of L2 norm at most ``radius``. An image whose gradient is zero
        does not move.
    """
    _positive_number_validation("step_size", step_size, allow_zero=True)
    direction = grad / _per_image_norm(grad).clamp_min(_TINY)
    return project_l2_ball(delta + step_size * direction, radius)


def default_step_size(radius: float, steps: int) -> float:
    """The usual L2 PGD step length, ``2.5 * radius / steps`` (Madry et al. 2018): enough to cross
    the ball and come back along its surface within ``steps`` steps."""
    _positive_number_validation("radius", radius, allow_zero=True)
    _positive_int_validation("steps", steps)
    return 2.5 * radius / steps


def l2_pgd(
    loss_fn: Callable[[Tensor], Tensor],
    images: Tensor,
    radius: float,
    steps: int,
    step_size: float | None = None,
) -> Tensor:
    """Images within L2 distance ``radius`` of ``images`` that (locally) maximise ``loss_fn``.

    Starts at the clean images and takes ``steps`` :func:`l2_pgd_step` steps. Gradients reach the
    images only (``torch.autograd.grad``): no parameter's ``.grad`` is touched.

    Args:
        loss_fn: images ``[N, ...]`` -> scalar loss to maximise (e.g. a contrastive loss).
        images: clean images ``[N, ...]`` (any normalisation; the radius is in those units).
        radius: L2 radius per image; 0 returns the images unchanged.
        steps: ascent steps (>= 1).
        step_size: L2 step length; None: :func:`default_step_size`.

    Returns:
        The adversarial images, detached.
    """
    _positive_number_validation("radius", radius, allow_zero=True)
    _positive_int_validation("steps", steps)
    step = default_step_size(radius, steps) if step_size is None else step_size
    images = images.detach()
    delta = torch.zeros_like(images)
    if radius == 0:
        return images
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = loss_fn(images + delta)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = l2_pgd_step(delta.detach(), grad, step, radius)
    return (images + delta).detach()
