"""Synthetic forget samples: gradient ascent from noise on a class's zero-shot logit.

Many images are optimised at once (one forward/backward for the whole active batch); each image
leaves the batch as soon as its class is the arg-max with a probability above its target. The
published code optimises one image at a time; batching gives the same per-image procedure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from lightning_unlearn.zeroshot import LOGIT_SCALE

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]


class SynthesisError(RuntimeError):
    """Some images never reached their target probability within the allowed restarts."""


@dataclass
class SynthesisConfig:
    """Settings of the ascent (defaults: the paper's, for 224 px images).

    Args:
        target_probability: softmax probability an image must exceed (with its class the arg-max).
        min_probability: floor of the target when it decays after failed attempts.
        probability_decay: how much the target drops after ``max_iterations`` without success.
        max_iterations: iterations per attempt before the image restarts from new noise.
        max_restarts: restarts allowed per image before giving up (no endless loop).
        step_size: length of the normalised gradient step.
        l2_weight: weight of the L2 penalty on the image.
        jitter: largest random circular shift in pixels (undone after each step).
        blur_every: apply a Gaussian blur every this many iterations (0: never).
        blur_sigma: the blur's standard deviation.
        batch_size: images optimised at once (None: all).
    """

    target_probability: float = 0.9
    min_probability: float = 0.45
    probability_decay: float = 0.025
    max_iterations: int = 3000
    max_restarts: int = 20
    step_size: float = 25.0
    l2_weight: float = 1e-3
    jitter: int = 16
    blur_every: int = 10
    blur_sigma: float = 0.5
    batch_size: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ("target_probability", "min_probability"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value!r}")
        if self.min_probability > self.target_probability:
            raise ValueError(
                f"min_probability ({self.min_probability}) must not exceed target_probability "
                f"({self.target_probability})"
            )
        for name in ("max_iterations", "step_size"):
            if not getattr(self, name) > 0:  # "not >" also rejects NaN
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not self.blur_sigma > 0:
            raise ValueError(f"blur_sigma must be positive, got {self.blur_sigma!r}")
        for name in ("max_restarts", "jitter", "blur_every", "probability_decay", "l2_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size!r}")


@dataclass
class SyntheticSet:
    """Images in the model's normalised pixel space with what produced them."""

    images: torch.Tensor  # [M, C, H, W]
    class_index: torch.Tensor  # [M] index into the class list used for synthesis
    probability: torch.Tensor  # [M] softmax probability reached
    target: torch.Tensor  # [M] target probability in force when the image was kept
    iterations: torch.Tensor  # [M] iterations of the successful attempt
    reached: torch.Tensor  # [M] bool: the target was reached
    info: dict = field(default_factory=dict)


def pixel_bounds(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel bounds ``[C, 1, 1]`` of the normalised image of [0, 1]."""
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (0 - m) / s, (1 - m) / s


def synthesize(
    encode_image: ImageEncoder,
    class_embeddings: torch.Tensor,
    class_index: Sequence[int] | torch.Tensor,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    config: Optional[SynthesisConfig] = None,
    seed: int = 0,
    logit_scale: float = LOGIT_SCALE,
    progress: Optional[Callable[[int, int], None]] = None,
) -> SyntheticSet:
    """Make one image per entry of ``class_index`` by gradient ascent from standard-normal noise.

    Objective per image: ``logit_scale * cos(f(x), e_c) - l2_weight * ||x||`` with ``e_c`` the
    normalised embedding of its class among ``class_embeddings`` ``[C, D]``. Each iteration
    jitters the batch, steps by ``step_size * g / ||g||`` per image, undoes the jitter, clamps to
    the valid pixel range, and blurs every ``blur_every`` iterations. ``progress(done, total)`` is
    called whenever images finish.

    Raises:
        SynthesisError: if an image still fails after ``max_restarts`` restarts.
    """
    cfg = config or SynthesisConfig()
    device = class_embeddings.device
    targets = torch.as_tensor(class_index, dtype=torch.long, device=device)
    if targets.numel() == 0:
        raise ValueError("class_index is empty: nothing to synthesise")
    num_classes = class_embeddings.shape[0]
    if int(targets.min()) < 0 or int(targets.max()) >= num_classes:
        raise ValueError(f"class_index values must be in [0, {num_classes}), got {targets.tolist()}")
    total = targets.numel()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    lo, hi = (b.to(device) for b in pixel_bounds(mean, std))
    shape = (3, image_size, image_size)
    classes = F.normalize(class_embeddings.detach(), dim=-1)

    images = torch.empty((total, *shape), device=device)
    probability = torch.zeros(total)
    target_prob = torch.full((total,), float(cfg.target_probability))
    iterations = torch.zeros(total, dtype=torch.long)
    restarts = torch.zeros(total, dtype=torch.long)
    reached = torch.zeros(total, dtype=torch.bool)
    finished = torch.zeros(total, dtype=torch.bool)

    def fresh(n: int) -> torch.Tensor:
        # Clamped at once, so an image kept at its first iteration is a valid image too.
        noise = torch.randn((n, *shape), generator=generator).to(device)
        return torch.maximum(torch.minimum(noise, hi), lo)

    slots = cfg.batch_size or total
    pending = list(range(total))
    active = torch.tensor(pending[:slots], dtype=torch.long)
    pending = pending[slots:]
    x = fresh(len(active))
    step = torch.zeros(len(active), dtype=torch.long)
    done_count = 0

    while len(active):
        step += 1
        shift = cfg.jitter
        dx, dy = (torch.randint(-shift, shift + 1, (2,), generator=generator).tolist() if shift else (0, 0))
        x_req = torch.roll(x, shifts=(dx, dy), dims=(2, 3)).requires_grad_(True)
        with torch.enable_grad():
            logits = logit_scale * F.normalize(encode_image(x_req), dim=-1) @ classes.T
            own = logits.gather(1, targets[active].unsqueeze(1)).squeeze(1)
            objective = own - cfg.l2_weight * x_req.flatten(1).norm(dim=1)
            (grad,) = torch.autograd.grad(objective.sum(), x_req)
        with torch.no_grad():
            # An image is kept exactly as it was evaluated (the jittered input of this
            # iteration), so its recorded probability is the one the model gives it.
            evaluated = x_req.detach()
            norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            x_req = evaluated + cfg.step_size * grad / norm
            x = torch.roll(x_req.detach(), shifts=(-dx, -dy), dims=(2, 3))
            x = torch.maximum(torch.minimum(x, hi), lo)
            if cfg.blur_every:
                due = (step % cfg.blur_every == 0).to(device)
                if bool(due.any()):
                    x[due] = gaussian_blur(x[due], kernel_size=3, sigma=cfg.blur_sigma)
            probs = logits.detach().softmax(dim=1)
            p_own = probs.gather(1, targets[active].unsqueeze(1)).squeeze(1).cpu()
            is_top = (probs.argmax(dim=1) == targets[active]).cpu()
            success = is_top & (p_own > target_prob[active])
            timeout = ~success & (step.cpu() >= cfg.max_iterations)

        keep = torch.ones(len(active), dtype=torch.bool)
        for j in torch.nonzero(success).flatten().tolist():
            i = int(active[j])
            images[i] = evaluated[j]
            probability[i], iterations[i], reached[i], finished[i] = p_own[j], int(step[j]), True, True
            keep[j] = False
        for j in torch.nonzero(timeout).flatten().tolist():
            i = int(active[j])
            if restarts[i] >= cfg.max_restarts:
                # Give up on this image: keep its last state, flagged as not reached.
                images[i] = evaluated[j]
                probability[i], iterations[i], finished[i] = p_own[j], int(step[j]), True
                keep[j] = False
                continue
            restarts[i] += 1
            target_prob[i] = max(cfg.min_probability, float(target_prob[i]) - cfg.probability_decay)
            x[j] = fresh(1)[0]
            step[j] = 0
        newly_done = int((~keep).sum())
        if newly_done:
            done_count += newly_done
            if progress is not None:
                progress(done_count, total)
        active, x, step = active[keep], x[keep], step[keep]
        free = slots - len(active)
        if free > 0 and pending:
            take, pending = pending[:free], pending[free:]
            active = torch.cat([active, torch.tensor(take, dtype=torch.long)])
            x = torch.cat([x, fresh(len(take))])
            step = torch.cat([step, torch.zeros(len(take), dtype=torch.long)])

    result = SyntheticSet(
        images=images.cpu(),
        class_index=targets.cpu(),
        probability=probability,
        target=target_prob,
        iterations=iterations,
        reached=reached,
        info={"restarts": restarts.tolist(), "seed": seed},
    )
    failed = int((~reached).sum())
    if failed:
        error = SynthesisError(
            f"{failed} of {total} synthetic images never reached their target probability "
            f"after {cfg.max_restarts} restarts of {cfg.max_iterations} iterations each "
            f"(best probabilities reached: {[round(float(p), 3) for p in probability[~reached][:10]]}). "
            "Lower target_probability/min_probability, raise max_iterations, or check the class "
            "name and prompt."
        )
        error.result = result  # the partial set, for reporting
        raise error
    return result
