"""Synthetic forget samples: gradient ascent from noise on a class's zero-shot logit.

The defaults of :class:`SynthesisConfig` are the published generator (``clip_forget_imagegen.py``):
the image is optimised in ImageNet-normalised space, jittered by offsets in ``0..16``, blurred with
a 5-tap Gaussian from the first iteration on, judged after each step on its min-max rescaled pixels,
and one target probability per class is lowered for the rest of the run after each failed attempt.
The fields ``threshold_decay``, ``pixel_space``, ``jitter_mode``, ``blur_kernel_size`` and
``blur_from_first_iteration`` switch each of these back to the project's earlier generator.

The published code makes one image at a time. Here many images are optimised at once (one
forward/backward for the whole active batch); an image leaves the batch as soon as its class is
the arg-max with a probability above its target, and a pending image takes its place. Per image
the procedure is the same: every image's objective, gradient step, clamp and blur depend on its
own pixels only (the model runs in eval mode). What batching changes is the random stream: the
noise and the jitter offsets (one pair per iteration, shared by the active batch) are drawn from
one generator; and the target's decay: images that time out in the same iteration lower the target
together, while the images next to them were judged against the higher one, so batched images come
from another distribution than the published one-at-a-time generator's (``mode: sequential``, see
:mod:`lightning_unlearn.maths.synthesis_schedule`).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from lightning_unlearn.core._validation import (
    _choice_validation,
    _positive_int_validation,
    _positive_number_validation,
    _unit_interval_validation,
)
from lightning_unlearn.core.errors import ConfigError, UnlearnError
from lightning_unlearn.maths.synthesis_schedule import (
    check_class_mapping,
    check_schedule,
    checked_decays,
    resolve_by_name,
)
from lightning_unlearn.maths.zeroshot import LOGIT_SCALE, zero_shot_logits

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]

#: The ImageNet (SqueezeNet) normalisation the published generator optimises in.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SynthesisError(UnlearnError, RuntimeError):
    """Some images never reached their target probability within the allowed restarts.

    ``result`` holds the partial :class:`SyntheticSet` (the failed images flagged ``reached=False``).
    """

    def __init__(self, message: str, result: Optional["SyntheticSet"] = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class SynthesisConfig:
    """Settings of the ascent. Defaults: the published generator, for 224 px images.

    Args:
        target_probability: softmax probability an image must exceed (with its class the arg-max);
            the published default is 0.8.
        class_target_probability: per-class targets, class NAME -> probability (the published
            datagen.sh sets 0.6-0.99 per class); classes not named use ``target_probability``.
            Names are matched by :func:`resolve_class_targets`.
        class_probability_decay: per-class decrements, class NAME -> decrement (datagen.sh sets 0,
            a target that never falls, for two RN50 classes); classes not named use
            ``probability_decay``. Names are matched as for ``class_target_probability``.
        min_probability: floor of the target when it decays after failed attempts.
        probability_decay: how much the target drops after ``max_iterations`` without success.
        threshold_decay: ``"global"`` (published): one target per class for the whole run; each
            failed attempt lowers it for every later success check of that class and it is never
            raised again. ``"per_image"``: each image decays its own target.
        max_iterations: iterations per attempt before the image restarts from new noise.
        max_restarts: restarts allowed per image before giving up (no endless loop).
        step_size: length of the normalised gradient step.
        l2_weight: weight of the L2 penalty on the image (in the optimised space).
        pixel_space: ``"imagenet"`` (published): the image is optimised in ImageNet-normalised
            space and clamped to the [0, 1] pixel range there; the ascent feeds the model that
            tensor with the model's normalisation applied on top, as the published code does;
            the success check and the kept image undo the ImageNet normalisation, min-max rescale
            each image to [0, 1] and apply the model's mean/std. ``"model"``: the image is
            optimised, clamped, judged and kept directly in the model's normalised space.
        jitter: largest random circular shift in pixels (undone after each step).
        jitter_mode: ``"positive"`` (published): offsets drawn from ``0..jitter``;
            ``"symmetric"``: from ``-jitter..jitter``.
        blur_every: apply a Gaussian blur every this many iterations (0: never).
        blur_sigma: the blur's standard deviation.
        blur_kernel_size: taps of the separable blur kernel (odd); 5 is scipy's
            ``gaussian_filter1d`` at sigma 0.5, as published.
        blur_from_first_iteration: count iterations from 0 for the blur, so the first iteration
            is blurred too (published: ``t % blur_every == 0``); False counts from 1.
        batch_size: images optimised at once (None: all). Results per image follow the same
            procedure at any size (module docstring), but the target's decay does not.
        min_iterations: iterations an attempt runs before its image may be kept (published: 1,
            kept as soon as it passes the target). On a small model the target is often passed
            within a few iterations, while the image is still mostly its starting noise; more
            iterations (with a blur) let the ascent draw the image.
        init_std: standard deviation of the noise each image starts from, in the optimised space
            (published: 1.0, standard-normal noise). Smaller starts leave more of the final image
            to the ascent, and less to the noise it started from.
        mode: ``"batched"``: up to ``batch_size`` images at once; ``"sequential"`` (published):
            one image at a time, in order, each attempt judged against the target that every
            earlier failure left (:mod:`lightning_unlearn.maths.synthesis_schedule`).

    The results are always in the model's normalised pixel space. All fields set to
    ``threshold_decay="per_image", pixel_space="model", jitter_mode="symmetric",
    blur_kernel_size=3, blur_from_first_iteration=False`` (and ``target_probability=0.9``)
    reproduce the project's earlier generator bit for bit.
    """

    target_probability: float = 0.8
    class_target_probability: Optional[dict[str, float]] = None
    class_probability_decay: Optional[dict[str, float]] = None
    min_probability: float = 0.45
    probability_decay: float = 0.025
    threshold_decay: Literal["global", "per_image"] = "global"
    max_iterations: int = 3000
    max_restarts: int = 20
    step_size: float = 25.0
    l2_weight: float = 1e-3
    pixel_space: Literal["imagenet", "model"] = "imagenet"
    jitter: int = 16
    jitter_mode: Literal["positive", "symmetric"] = "positive"
    blur_every: int = 10
    blur_sigma: float = 0.5
    blur_kernel_size: int = 5
    blur_from_first_iteration: bool = True
    batch_size: Optional[int] = None
    mode: Literal["batched", "sequential"] = "batched"
    init_std: float = 1.0
    min_iterations: int = 1

    def __post_init__(self) -> None:
        """Check every field (:class:`~lightning_unlearn.core.errors.ConfigError` naming the field and value)."""
        _check_probabilities(self)
        _check_class_targets(self)
        _check_ascent(self)
        check_schedule(self)


def _target_validation(name: str, value: object, floor: float) -> None:
    """A target probability: in (0, 1) and not below the decay's floor ``min_probability``."""
    _unit_interval_validation(name, value, open_low=True, open_high=True)
    if value < floor:  # type: ignore[operator]
        raise ConfigError(f"{name} ({value}) must not be below min_probability ({floor})")


def _check_probabilities(cfg: SynthesisConfig) -> None:
    """The target, its floor and its decay."""
    for name in ("target_probability", "min_probability"):
        _unit_interval_validation(name, getattr(cfg, name), open_low=True, open_high=True)
    if cfg.min_probability > cfg.target_probability:
        raise ConfigError(
            f"min_probability ({cfg.min_probability}) must not exceed target_probability ({cfg.target_probability})"
        )
    _positive_number_validation("probability_decay", cfg.probability_decay, allow_zero=True)
    _choice_validation("threshold_decay", cfg.threshold_decay, ("global", "per_image"))


def _check_class_targets(cfg: SynthesisConfig) -> None:
    """``class_target_probability``: None, or class names (each class once) -> valid targets."""
    check_class_mapping("class_target_probability", "probability", cfg.class_target_probability,
                        lambda field, probability: _target_validation(field, probability, cfg.min_probability))


def _check_ascent(cfg: SynthesisConfig) -> None:
    """Iterations, step, pixel space, jitter, blur and batch size."""
    _positive_int_validation("max_iterations", cfg.max_iterations)
    _positive_int_validation("max_restarts", cfg.max_restarts, allow_zero=True)
    _positive_number_validation("step_size", cfg.step_size)
    _positive_number_validation("l2_weight", cfg.l2_weight, allow_zero=True)
    _choice_validation("pixel_space", cfg.pixel_space, ("imagenet", "model"))
    _positive_int_validation("jitter", cfg.jitter, allow_zero=True)
    _choice_validation("jitter_mode", cfg.jitter_mode, ("positive", "symmetric"))
    _positive_int_validation("blur_every", cfg.blur_every, allow_zero=True)
    _positive_number_validation("blur_sigma", cfg.blur_sigma)
    _positive_int_validation("blur_kernel_size", cfg.blur_kernel_size)
    if cfg.blur_kernel_size % 2 == 0:
        raise ConfigError(f"blur_kernel_size must be odd, got {cfg.blur_kernel_size!r}")
    if not isinstance(cfg.blur_from_first_iteration, bool):
        raise ConfigError(f"blur_from_first_iteration must be True or False, got {cfg.blur_from_first_iteration!r}")
    _positive_int_validation("batch_size", cfg.batch_size, allow_none=True)
    _positive_number_validation("init_std", cfg.init_std, allow_zero=True)
    _positive_int_validation("min_iterations", cfg.min_iterations)
    if cfg.min_iterations > cfg.max_iterations:
        raise ConfigError(f"min_iterations must be <= max_iterations ({cfg.max_iterations}), got {cfg.min_iterations!r}")


def resolve_class_targets(config: SynthesisConfig, classnames: Sequence[str]) -> dict[int, float]:
    """``config.class_target_probability`` by class index into ``classnames`` (for :func:`synthesize`).

    Names are compared with :func:`lightning_unlearn.core.names.class_key` (case, underscores and
    spacing ignored); every index whose name matches gets the target. Empty if none are set.

    Raises:
        UnknownNameError: a named class is not in ``classnames`` (close matches in the message).
    """
    return resolve_by_name(config.class_target_probability, classnames, "class_target_probability")


@dataclass
class SyntheticSet:
    """Images in the model's normalised pixel space with what produced them."""

    images: torch.Tensor  # [M, C, H, W]
    class_index: torch.Tensor  # [M] index into the class list used for synthesis
    probability: torch.Tensor  # [M] softmax probability reached
    target: torch.Tensor  # [M] target probability the image was judged against when it finished
    iterations: torch.Tensor  # [M] iterations of the final attempt
    reached: torch.Tensor  # [M] bool: the target was reached
    info: dict = field(default_factory=dict)


def pixel_bounds(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel bounds ``[C, 1, 1]`` of the normalised image of [0, 1]."""
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (0 - m) / s, (1 - m) / s


# ------------------------------------------------------------------------------ the pieces


class _PixelSpace:
    """Where images are optimised, and how they become the ascent's input and kept images."""

    def __init__(self, kind: str, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.kind = kind
        self.model_mean = torch.tensor(mean, dtype=torch.float32, device=device).view(-1, 1, 1)
        self.model_std = torch.tensor(std, dtype=torch.float32, device=device).view(-1, 1, 1)
        own_mean, own_std = (IMAGENET_MEAN, IMAGENET_STD) if kind == "imagenet" else (mean, std)
        self.mean = torch.tensor(own_mean, dtype=torch.float32, device=device).view(-1, 1, 1)
        self.std = torch.tensor(own_std, dtype=torch.float32, device=device).view(-1, 1, 1)
        self.lo, self.hi = (b.to(device) for b in pixel_bounds(own_mean, own_std))

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """Each channel clamped to the image of the [0, 1] pixel range in this space."""
        return torch.maximum(torch.minimum(x, self.hi), self.lo)

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        """A new image from standard-normal noise."""
        # Model space judges the evaluated input, so it is clamped at once (an image kept at its
        # first iteration is a valid image); ImageNet space judges stepped, clamped images and
        # starts from raw noise, as published.
        return self.clamp(noise) if self.kind == "model" else noise

    def ascent_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the model sees during the ascent."""
        if self.kind == "model":
            return x
        # Published: CLIP's Normalize applied to the ImageNet-normalised tensor itself.
        return (x - self.model_mean) / self.model_std

    def kept(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet space -> the image that is judged and kept, in the model's normalised space."""
        pixels = x * self.std + self.mean
        flat = pixels.flatten(1)
        low, high = flat.amin(dim=1).view(-1, 1, 1, 1), flat.amax(dim=1).view(-1, 1, 1, 1)
        # Min-max rescale of each image (published); the floor only guards a constant image.
        pixels = (pixels - low) / (high - low).clamp_min(1e-12)
        return (pixels - self.model_mean) / self.model_std


class _Targets:
    """The target in force for each image: one level per image (per_image) or per class (global)."""

    def __init__(self, cfg: SynthesisConfig, class_index: torch.Tensor, start: Mapping[int, float],
                 decays: Optional[Mapping[int, float]] = None) -> None:
        self.cfg = cfg
        classes = class_index.tolist()
        if cfg.threshold_decay == "per_image":
            self.key = torch.arange(len(classes))
            owners = classes
        else:
            self.key = class_index.cpu()
            owners = list(range(max(classes) + 1))
        self.level = torch.tensor([float(start.get(c, cfg.target_probability)) for c in owners])
        self.decay = [float((decays or {}).get(c, cfg.probability_decay)) for c in owners]

    def current(self, images: torch.Tensor) -> torch.Tensor:
        """Targets of ``images`` (indices into the run's images) now."""
        return self.level[self.key[images]]

    def lower(self, image: int) -> None:
        """A failed attempt of ``image``: its level drops by the decay, not below the floor."""
        k = int(self.key[image])
        self.level[k] = max(self.cfg.min_probability, float(self.level[k]) - self.decay[k])


@dataclass
class _Record:
    """What each image of the run ends with, filled in as images finish."""

    images: torch.Tensor
    probability: torch.Tensor
    target: torch.Tensor
    iterations: torch.Tensor
    restarts: torch.Tensor
    reached: torch.Tensor
    done: int = 0

    @classmethod
    def empty(cls, total: int, shape: tuple[int, ...], device: torch.device) -> "_Record":
        """A record of ``total`` images of ``shape``, none finished."""
        return cls(
            images=torch.empty((total, *shape), device=device),
            probability=torch.zeros(total),
            target=torch.zeros(total),
            iterations=torch.zeros(total, dtype=torch.long),
            restarts=torch.zeros(total, dtype=torch.long),
            reached=torch.zeros(total, dtype=torch.bool),
        )

    def finish(self, i: int, image: torch.Tensor, probability: torch.Tensor, iterations: int, target: torch.Tensor,
               reached: bool) -> None:
        """Image ``i`` is done (kept, or given up on): store its final state."""
        self.images[i] = image
        self.probability[i], self.iterations[i] = probability, iterations
        self.target[i], self.reached[i] = target, reached
        self.done += 1

    def to_set(self, class_index: torch.Tensor, seed: int) -> SyntheticSet:
        """The finished run as a :class:`SyntheticSet` on the CPU."""
        return SyntheticSet(
            images=self.images.cpu(), class_index=class_index.cpu(), probability=self.probability,
            target=self.target, iterations=self.iterations, reached=self.reached,
            info={"restarts": self.restarts.tolist(), "seed": seed},
        )


@dataclass
class _Active:
    """The images being optimised now: their run indices, current pixels and attempt iterations."""

    index: torch.Tensor  # [A] long, CPU
    x: torch.Tensor  # [A, C, H, W] in the optimised space
    step: torch.Tensor  # [A] long, CPU: iterations of the current attempt


def _draw_offsets(cfg: SynthesisConfig, generator: torch.Generator) -> tuple[int, int]:
    """This iteration's jitter offsets (rows, columns), shared by the active batch."""
    if not cfg.jitter:
        return 0, 0
    low = 0 if cfg.jitter_mode == "positive" else -cfg.jitter
    dx, dy = torch.randint(low, cfg.jitter + 1, (2,), generator=generator).tolist()
    return dx, dy


def _blur(x: torch.Tensor, step: torch.Tensor, cfg: SynthesisConfig) -> torch.Tensor:
    """Blur (in place) the images whose iteration is due: every ``blur_every``-th, counted from 0 or 1."""
    if not cfg.blur_every:
        return x
    counted = step - 1 if cfg.blur_from_first_iteration else step
    due = (counted % cfg.blur_every == 0).to(x.device)
    if bool(due.any()):
        # torchvision's kernel is the Gaussian sampled at the kernel_size taps and normalised,
        # which is scipy's gaussian_filter1d kernel when the tap counts agree (scipy: 2*int(4*sigma
        # + 0.5) + 1, so 5 at sigma 0.5). They differ only at the border, where torchvision pads by
        # mirroring about the edge pixel and scipy's default repeats it, and in precision (scipy
        # filters float32 input in float64).
        x[due] = gaussian_blur(x[due], kernel_size=cfg.blur_kernel_size, sigma=cfg.blur_sigma)
    return x


class _Run:
    """One synthesis run: the ascent, the success checks, retiring and refilling the active batch."""

    def __init__(self, encode_image: ImageEncoder, classes: torch.Tensor, class_index: torch.Tensor,
                 shape: tuple[int, ...], space: _PixelSpace, targets: _Targets, cfg: SynthesisConfig,
                 seed: int, logit_scale: float, progress: Optional[Callable[[int, int], None]],
                 own_embeddings: Optional[torch.Tensor] = None) -> None:
        self.encode_image, self.classes, self.class_index = encode_image, classes, class_index
        self.own_embeddings = own_embeddings  # [M, D] normalised, per image (description prompts), or None
        self.shape, self.space, self.targets, self.cfg = shape, space, targets, cfg
        self.logit_scale, self.progress = logit_scale, progress
        self.device = classes.device
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        total = class_index.numel()
        self.record = _Record.empty(total, shape, self.device)
        self.slots = 1 if cfg.mode == "sequential" else (cfg.batch_size or total)
        self.pending = list(range(total))
        empty = torch.zeros(0, dtype=torch.long)
        self.active = _Active(empty, torch.empty((0, *shape), device=self.device), empty.clone())
        self._refill(torch.zeros(0, dtype=torch.bool))

    def run(self) -> _Record:
        """Iterate until every image is kept or given up on."""
        while len(self.active.index):
            self._iterate()
        return self.record

    def _fresh(self, n: int) -> torch.Tensor:
        """``n`` new images from noise of std ``init_std`` (drawn on the CPU: same images on any device)."""
        noise = torch.randn((n, *self.shape), generator=self.generator).to(self.device) * self.cfg.init_std
        return self.space.start(noise)

    def _logits(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Zero-shot logits ``[B, C]`` of model inputs ``x`` (images ``index`` of the run).

        With per-image embeddings, each image's own class column is its own embedding's logit
        (its description in place of its class row); the other columns are unchanged.
        """
        if self.own_embeddings is None:
            return zero_shot_logits(self.encode_image(x), self.classes, self.logit_scale)
        features = self.encode_image(x)
        logits = zero_shot_logits(features, self.classes, self.logit_scale)
        own = self.own_embeddings[index.to(self.own_embeddings.device)]
        own_logit = self.logit_scale * (F.normalize(features, dim=-1) * own).sum(dim=-1)
        columns = self.class_index[index.to(self.class_index.device)].unsqueeze(1)
        return logits.scatter(1, columns, own_logit.unsqueeze(1))

    def _iterate(self) -> None:
        """One iteration of the active batch: ascent, blur, success check, retire, refill."""
        active = self.active
        active.step += 1
        own = self.class_index[active.index]
        evaluated, logits, stepped = self._ascend(active.x, own, _draw_offsets(self.cfg, self.generator))
        active.x = _blur(stepped, active.step, self.cfg)
        candidates, p_own, is_top = self._judge(evaluated, logits, active.x, own)
        judged = self.targets.current(active.index)
        success = is_top & (p_own > judged) & (active.step >= self.cfg.min_iterations)
        timeout = ~success & (active.step >= self.cfg.max_iterations)
        keep = self._retire(candidates, p_own, judged, success, timeout)
        if not bool(keep.all()) and self.progress is not None:
            self.progress(self.record.done, len(self.record.reached))
        self._refill(keep)

    def _ascend(self, x: torch.Tensor, own: torch.Tensor, offsets: tuple[int, int]):
        """Jitter, gradient of ``logit - l2_weight * ||x||``, normalised step, un-jitter, clamp.

        Returns ``(evaluated, logits, stepped)``: the jittered input the model judged, its logits,
        and the new images (stepped, un-jittered and clamped).
        """
        dx, dy = offsets
        x_req = torch.roll(x, shifts=(dx, dy), dims=(2, 3)).requires_grad_(True)
        with torch.enable_grad():
            logits = self._logits(self.space.ascent_input(x_req), self.active.index)
            own_logit = logits.gather(1, own.unsqueeze(1)).squeeze(1)
            objective = own_logit - self.cfg.l2_weight * x_req.flatten(1).norm(dim=1)
            (grad,) = torch.autograd.grad(objective.sum(), x_req)
        with torch.no_grad():
            evaluated = x_req.detach()
            norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            stepped = torch.roll(evaluated + self.cfg.step_size * grad / norm, shifts=(-dx, -dy), dims=(2, 3))
            return evaluated, logits.detach(), self.space.clamp(stepped)

    @torch.no_grad()
    def _judge(self, evaluated: torch.Tensor, logits: torch.Tensor, x: torch.Tensor, own: torch.Tensor):
        """The images this iteration may keep, with their class probability and whether it is the arg-max.

        Model space: the input the ascent just evaluated, judged by its logits (no extra forward),
        so a kept image is exactly what the model saw. ImageNet space (published): the images
        after this iteration's step and blur, processed by :meth:`_PixelSpace.kept` and judged by
        a gradient-free forward of their own.
        """
        if self.space.kind == "imagenet":
            evaluated = self.space.kept(x)
            logits = self._logits(evaluated, self.active.index)
        probs = logits.softmax(dim=1)
        p_own = probs.gather(1, own.unsqueeze(1)).squeeze(1).cpu()
        return evaluated, p_own, (probs.argmax(dim=1) == own).cpu()

    def _retire(self, candidates: torch.Tensor, p_own: torch.Tensor, judged: torch.Tensor, success: torch.Tensor,
                timeout: torch.Tensor) -> torch.Tensor:
        """Record successes and give-ups, restart other timeouts; returns the mask of images staying."""
        active, record = self.active, self.record
        keep = torch.ones(len(active.index), dtype=torch.bool)
        for j in torch.nonzero(success).flatten().tolist():
            record.finish(int(active.index[j]), candidates[j], p_own[j], int(active.step[j]), judged[j], True)
            keep[j] = False
        for j in torch.nonzero(timeout).flatten().tolist():
            i = int(active.index[j])
            if record.restarts[i] >= self.cfg.max_restarts:
                # Give up on this image: keep its last state, flagged as not reached.
                record.finish(i, candidates[j], p_own[j], int(active.step[j]), judged[j], False)
                keep[j] = False
            else:
                record.restarts[i] += 1
                active.x[j] = self._fresh(1)[0]
                active.step[j] = 0
            self.targets.lower(i)  # every failed attempt lowers the target of later checks
        return keep

    def _refill(self, keep: torch.Tensor) -> None:
        """Drop the finished images from the active batch and fill free slots with pending ones."""
        active = self.active
        index, x, step = active.index[keep], active.x[keep], active.step[keep]
        free = self.slots - len(index)
        if free > 0 and self.pending:
            take, self.pending = self.pending[:free], self.pending[free:]
            index = torch.cat([index, torch.tensor(take, dtype=torch.long)])
            x = torch.cat([x, self._fresh(len(take))])
            step = torch.cat([step, torch.zeros(len(take), dtype=torch.long)])
        self.active = _Active(index, x, step)


# ------------------------------------------------------------------------------ the entry point


def _checked_class_index(class_index: Sequence[int] | torch.Tensor, num_classes: int, device) -> torch.Tensor:
    """``class_index`` as a long tensor on ``device``; each value a class of ``class_embeddings``."""
    index = torch.as_tensor(class_index, dtype=torch.long, device=device)
    if index.numel() == 0:
        raise ConfigError("class_index is empty: nothing to synthesise")
    if int(index.min()) < 0 or int(index.max()) >= num_classes:
        raise ConfigError(f"class_index values must be in [0, {num_classes}), got {index.tolist()}")
    return index


def _checked_targets(
    cfg: SynthesisConfig, targets: Optional[Mapping[int, float]], num_classes: int
) -> dict[int, float]:
    """``target_probabilities`` checked: class indices -> targets in (0, 1), not below the floor."""
    if targets is None:
        if cfg.class_target_probability:
            # Names need the class list, which synthesize does not have: refuse to ignore them.
            raise ConfigError(
                "config.class_target_probability is set but synthesize got no target_probabilities: "
                "pass target_probabilities=resolve_class_targets(config, classnames)"
            )
        return {}
    checked: dict[int, float] = {}
    for key, probability in targets.items():
        try:
            c = operator.index(key)
        except TypeError:
            c = -1
        if isinstance(key, bool) or not 0 <= c < num_classes:
            raise ConfigError(f"target_probabilities keys must be class indices in [0, {num_classes}), got {key!r}")
        _target_validation(f"target_probabilities[{c}]", probability, cfg.min_probability)
        checked[c] = float(probability)
    return checked


def _failure(result: SyntheticSet, cfg: SynthesisConfig) -> SynthesisError:
    """The error for a run in which some images never reached their target (one line)."""
    failed = ~result.reached
    best = [round(float(p), 3) for p in result.probability[failed][:10]]
    return SynthesisError(
        f"{int(failed.sum())} of {len(failed)} synthetic images never reached their target probability after "
        f"{cfg.max_restarts} restarts of {cfg.max_iterations} iterations each (best probabilities reached: {best}). "
        "Lower target_probability, class_target_probability or min_probability, raise max_iterations, "
        "or check the class name and prompt.",
        result,
    )


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
    target_probabilities: Optional[Mapping[int, float]] = None,
    image_embeddings: Optional[torch.Tensor] = None,
    probability_decays: Optional[Mapping[int, float]] = None,
) -> SyntheticSet:
    """Make one image per entry of ``class_index`` by gradient ascent from standard-normal noise.

    Objective per image: ``logit_scale * cos(f(x), e_c) - l2_weight * ||x||`` with ``e_c`` the
    normalised embedding of its class among ``class_embeddings`` ``[C, D]``; ``mean``/``std`` are
    the model's normalisation. Each iteration jitters the batch, steps by
    ``step_size * g / ||g||`` per image, undoes the jitter, clamps to the valid pixel range, blurs
    when due, and keeps the images whose class is the arg-max with a probability above the target
    (see :class:`SynthesisConfig` for where each happens). ``target_probabilities`` maps class
    indices to their own targets (overriding ``target_probability``; build it from class names
    with :func:`resolve_class_targets`). ``progress(done, total)`` is called whenever images finish.

    ``image_embeddings`` ``[M, D]`` (optional): one text embedding per image, e.g. of a class
    description drawn for it (the paper's Table 8). Image ``i``'s objective and success check then
    use it in place of its class's row of ``class_embeddings``; the other classes keep theirs.
    Without it the computation is exactly the class-row one.

    ``probability_decays`` maps class indices to their own decrements (overriding
    ``probability_decay``; from class names with
    :func:`~lightning_unlearn.maths.synthesis_schedule.resolve_class_decays`).

    Raises:
        ConfigError: bad ``class_index``, ``target_probabilities`` or ``image_embeddings``.
        SynthesisError: if an image still fails after ``max_restarts`` restarts (the partial set
            is its ``result``).
    """
    cfg = config or SynthesisConfig()
    device = class_embeddings.device
    index = _checked_class_index(class_index, class_embeddings.shape[0], device)
    start = _checked_targets(cfg, target_probabilities, class_embeddings.shape[0])
    decays = checked_decays(cfg, probability_decays, class_embeddings.shape[0])
    space = _PixelSpace(cfg.pixel_space, mean, std, device)
    classes = F.normalize(class_embeddings.detach(), dim=-1)
    own = None
    if image_embeddings is not None:
        if tuple(image_embeddings.shape) != (index.numel(), classes.shape[1]):
            raise ConfigError(f"image_embeddings must be [{index.numel()}, {classes.shape[1]}] (one per image), "
                              f"got {list(image_embeddings.shape)}")
        own = F.normalize(image_embeddings.detach().to(device=device, dtype=classes.dtype), dim=-1)
    run = _Run(encode_image, classes, index, (3, image_size, image_size), space, _Targets(cfg, index.cpu(), start, decays),
               cfg, seed, logit_scale, progress, own)
    result = run.run().to_set(index, seed)
    if not bool(result.reached.all()):
        raise _failure(result, cfg)
    return result
