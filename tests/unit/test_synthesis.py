"""Synthetic forget samples on the tiny random-init ViT (``tiny-vit`` from conftest).

Most tests run in the model's pixel space with the project's earlier settings (``LEGACY``): there
the start image, the judged image and the kept image are one tensor in one space, which the
premises below are measured in. ``PUBLISHED`` (the defaults) runs the same goal the published
way; its own tests check the ImageNet space, the global threshold, the jitter offsets and the blur
against direct computations, with a scripted stand-in encoder where exact control is needed.

Random weights give nearly input-independent logits: with the prompts below, standard-normal
images (clamped to the pixel range, as synthesis starts in model space) get softmax probabilities of about 0.34 / 0.21 / 0.31 / 0.14 for cat / dog / car / tree
(measured over 256 noise images). The tests synthesise "dog" and "car" with a target of 0.35
(floor 0.3), above every starting probability, so reaching it takes real ascent steps; "tree"
stays out of reach of short runs. Step size 10 suits 32 px images (the paper's 25 is for 224 px).

Torch runs single-threaded here: on the shared 2-core machines two OpenMP threads fighting other
processes made one tiny forward/backward up to 100x slower.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from torchvision.transforms.functional import gaussian_blur

from lightning_unlearn.core.errors import ConfigError, UnknownNameError, UnlearnError
from lightning_unlearn.maths.synthesis import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SynthesisConfig,
    SynthesisError,
    SyntheticSet,
    pixel_bounds,
    resolve_class_targets,
    synthesize,
)
from lightning_unlearn.maths.zeroshot import LOGIT_SCALE, encode_classes

CLASSNAMES = ["cat", "dog", "car", "tree"]
DOG, CAR, TREE = 1, 2, 3
INDEX = [DOG, CAR, DOG, CAR]
SIZE = 32
#: The project's earlier generator (the published one is the default).
LEGACY = dict(threshold_decay="per_image", pixel_space="model", jitter_mode="symmetric", blur_kernel_size=3,
              blur_from_first_iteration=False)
GOAL = dict(target_probability=0.35, min_probability=0.3, max_iterations=60, max_restarts=2, step_size=10.0, jitter=4)
CFG = SynthesisConfig(**GOAL, **LEGACY)
PUBLISHED = SynthesisConfig(**GOAL)
EPS = 1e-6  # float32 slack on the pixel bounds
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clip(tiny_clip):
    return tiny_clip("tiny-vit")  # shared, read-only: synthesis never changes the weights


@pytest.fixture(scope="module")
def classes(clip):
    with torch.no_grad():
        return encode_classes(clip.model, clip.tokenizer, CLASSNAMES, ["a photo of a {}."])


def run(clip, classes, index=INDEX, config=CFG, seed=0, **kwargs) -> SyntheticSet:
    return synthesize(clip.model.encode_image, classes, index, SIZE, clip.mean, clip.std, config, seed=seed, **kwargs)


def probabilities(clip, classes, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (LOGIT_SCALE * F.normalize(clip.model.encode_image(images), dim=-1) @ classes.T).softmax(dim=1)


def start_images(clip, n: int, seed: int = 0) -> torch.Tensor:
    """The images synthesis starts from: its first draw, clamped to the pixel range."""
    lo, hi = pixel_bounds(clip.mean, clip.std)
    noise = torch.randn((n, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(seed))
    return torch.maximum(torch.minimum(noise, hi), lo)


@pytest.fixture(scope="module")
def result(clip, classes) -> SyntheticSet:
    return run(clip, classes)


def assert_within_bounds(clip, images: torch.Tensor) -> None:
    lo, hi = pixel_bounds(clip.mean, clip.std)
    assert bool((images >= lo - EPS).all()) and bool((images <= hi + EPS).all())


def assert_valid(clip, classes, res: SyntheticSet, index=INDEX) -> None:
    """Every image reached its goal, and re-encoding it gives the probability recorded."""
    index = torch.tensor(index)
    assert res.images.shape == (len(index), 3, SIZE, SIZE)
    assert torch.equal(res.class_index, index)
    assert bool(res.reached.all())
    assert bool((res.probability > res.target).all())
    assert bool((res.target >= CFG.min_probability - 1e-9).all()) and bool((res.target <= CFG.target_probability).all())
    probs = probabilities(clip, classes, res.images)
    assert torch.equal(probs.argmax(dim=1), index)
    own = probs.gather(1, index.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(own, res.probability, rtol=0, atol=2e-5)


# --------------------------------------------------------------------------------- the goal


def test_starting_noise_is_below_the_goal(clip, classes):
    """The premise of the tests: every starting image must be lifted, none starts at 0.35 or above."""
    own = probabilities(clip, classes, start_images(clip, len(INDEX))).gather(1, torch.tensor(INDEX).unsqueeze(1)).squeeze(1)
    assert bool((own < CFG.target_probability).all()), own


def test_synthesis_reaches_the_goal_and_kept_images_give_it(clip, classes, result):
    assert_valid(clip, classes, result)
    assert bool((result.iterations > 1).all())  # real ascent, not a lucky start
    assert result.info["seed"] == 0 and len(result.info["restarts"]) == len(INDEX)


def test_an_image_above_target_is_kept_only_when_its_class_is_the_arg_max(clip, classes):
    """Car noise starts above 0.3 but below cat: it must not be kept before car leads."""
    cfg = dataclasses.replace(CFG, target_probability=0.3, min_probability=0.3)
    probs = probabilities(clip, classes, start_images(clip, 2))
    assert bool((probs[:, CAR] > 0.3).all()) and bool((probs.argmax(dim=1) != CAR).all())  # premise
    res = run(clip, classes, index=[CAR, CAR], config=cfg)
    assert bool((res.iterations > 1).all())
    assert torch.equal(probabilities(clip, classes, res.images).argmax(dim=1), torch.tensor([CAR, CAR]))


def test_images_respect_the_pixel_range(clip, result):
    """Kept images are the evaluated (jittered) input of their last iteration, which the previous
    iteration clamped (and maybe blurred); so they lie within pixel_bounds."""
    assert bool((result.iterations > 1).all())
    assert_within_bounds(clip, result.images)
    lo, hi = pixel_bounds(clip.mean, clip.std)
    at_bound = (result.images <= lo + EPS) | (result.images >= hi - EPS)
    assert bool(at_bound.any())  # the clamp really acted (step 10 pushes pixels out)


def test_pixel_bounds_are_the_normalised_unit_interval():
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 2.0)
    lo, hi = pixel_bounds(mean, std)
    assert lo.shape == hi.shape == (3, 1, 1)
    torch.testing.assert_close(lo.flatten(), torch.tensor([-1.0, -1.0, 0.0]))
    torch.testing.assert_close(hi.flatten(), torch.tensor([1.0, 3.0, 0.5]))


def test_image_kept_at_the_first_iteration_is_within_the_pixel_range(clip, classes):
    cfg = dataclasses.replace(CFG, target_probability=0.3, min_probability=0.3)  # cat starts at ~0.34
    res = run(clip, classes, index=[0, 0], config=cfg)
    assert bool((res.iterations == 1).all())
    assert_within_bounds(clip, res.images)


# ------------------------------------------------------------------------------ determinism


def test_same_seed_is_bit_identical_and_another_seed_differs(clip, classes, result):
    again = run(clip, classes, seed=0)
    for field in ("images", "probability", "target", "iterations", "reached"):
        assert torch.equal(getattr(result, field), getattr(again, field)), field
    assert again.info == result.info
    other = run(clip, classes, seed=1)
    assert not torch.equal(other.images, result.images)
    assert_valid(clip, classes, other)


@pytest.mark.parametrize("batch_size", [None, 1, 3])
@pytest.mark.parametrize("config", [CFG, PUBLISHED], ids=["legacy", "published"])
def test_batched_and_one_at_a_time_both_succeed(clip, classes, batch_size, config):
    """All at once, one image at a time (the published code) and a size that leaves a remainder."""
    calls = []

    def encode(x):
        calls.append(x.shape[0])
        return clip.model.encode_image(x)

    cfg = dataclasses.replace(config, batch_size=batch_size)
    res = synthesize(encode, classes, INDEX, SIZE, clip.mean, clip.std, cfg, seed=0)
    assert_valid(clip, classes, res)
    assert_within_bounds(clip, res.images)
    assert max(calls) == (batch_size or len(INDEX))


def test_progress_reports_every_finished_image(clip, classes):
    seen = []
    run(clip, classes, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (len(INDEX), len(INDEX))
    assert all(b[0] > a[0] for a, b in zip(seen, seen[1:]))


# ---------------------------------------------------------------------------------- failure


@pytest.mark.parametrize(
    "batch_size, restarts, decay, targets",
    [
        (None, 1, "global", [0.98] * 3),
        (1, 1, "global", [0.98] * 3),
        (None, 0, "global", [0.99] * 3),  # all judged at once, before any failure
        (1, 0, "global", [0.99, 0.99, 0.98]),  # the second tree is judged after the first failed
        (1, 0, "per_image", [0.99] * 3),
    ],
)
def test_unreachable_goal_raises_with_the_partial_result(clip, classes, batch_size, restarts, decay, targets):
    calls = []

    def encode(x):
        calls.append(x.shape[0])
        return clip.model.encode_image(x)

    cfg = SynthesisConfig(target_probability=0.99, min_probability=0.98, max_iterations=5, max_restarts=restarts,
                          batch_size=batch_size, step_size=10.0, jitter=4, threshold_decay=decay)
    index = [TREE, DOG, TREE]
    with pytest.raises(SynthesisError, match="never reached their target probability") as info:
        synthesize(encode, classes, index, SIZE, clip.mean, clip.std, cfg, seed=0)
    message = str(info.value)
    assert "\n" not in message
    assert "3 of 3 synthetic images never reached their target probability" in message
    assert f"after {restarts} restarts of 5 iterations each" in message
    assert "Lower target_probability" in message
    res = info.value.result
    assert isinstance(res, SyntheticSet)
    assert not bool(res.reached.any())
    assert res.images.shape == (3, 3, SIZE, SIZE) and bool(torch.isfinite(res.images).all())
    assert_within_bounds(clip, res.images)
    assert res.info["restarts"] == [restarts] * 3
    assert res.iterations.tolist() == [5, 5, 5]
    torch.testing.assert_close(res.target, torch.tensor(targets))
    # Recorded probabilities are those of the kept (last judged) images.
    own = probabilities(clip, classes, res.images).gather(1, torch.tensor(index).unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(own, res.probability, rtol=0, atol=2e-5)
    # Bounded work: every image gets (restarts + 1) attempts of max_iterations iterations, each an
    # ascent forward plus (ImageNet space) the success check's own forward.
    assert sum(calls) == 3 * (restarts + 1) * 5 * 2


def test_synthesis_error_is_a_project_error_and_a_runtime_error():
    assert issubclass(SynthesisError, UnlearnError) and issubclass(SynthesisError, RuntimeError)


def test_resnet_tower_runs(tiny_clip):
    """Smoke test on the ModifiedResNet tower (BatchNorm, attention pool): fixed-iteration mode."""
    rn = tiny_clip("tiny-rn")
    with torch.no_grad():
        classes = encode_classes(rn.model, rn.tokenizer, CLASSNAMES, ["a photo of a {}."])
    cfg = SynthesisConfig(target_probability=0.999, min_probability=0.999, max_iterations=3, max_restarts=0, step_size=10.0, jitter=4)
    with pytest.raises(SynthesisError, match="never reached their target probability") as info:
        synthesize(rn.model.encode_image, classes, [TREE, CAR], SIZE, rn.mean, rn.std, cfg, seed=0)
    res = info.value.result
    assert res.iterations.tolist() == [3, 3]
    assert_within_bounds(rn, res.images)


# ------------------------------------------------------------------- the published generator


@pytest.fixture(scope="module")
def published_result(clip, classes) -> SyntheticSet:
    return run(clip, classes, config=PUBLISHED)


def test_imagenet_space_images_are_rescaled_into_the_models_range(clip, classes, published_result):
    """Kept images are in the model's normalised space, each spanning exactly [0, 1] in pixels,
    and re-encoding them gives the recorded probabilities."""
    assert_valid(clip, classes, published_result)
    assert_within_bounds(clip, published_result.images)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (clip.mean, clip.std))
    pixels = (published_result.images * std + mean).flatten(1)
    torch.testing.assert_close(pixels.amin(dim=1), torch.zeros(len(INDEX)), rtol=0, atol=1e-6)
    torch.testing.assert_close(pixels.amax(dim=1), torch.ones(len(INDEX)), rtol=0, atol=1e-6)


class Scripted:
    """A stand-in image encoder for two classes (embeddings ``CLASSES2``): call k (from 1) gives
    every image class-0 probability ``schedule(k)`` at ``SCALE``; ``inputs`` keeps what it saw.
    Its output does not depend on the pixels, so with ``l2_weight=0`` the gradient is exactly 0
    and the ascent never moves an image."""

    def __init__(self, schedule):
        self.schedule, self.inputs = schedule, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        d = math.log(self.schedule(len(self.inputs)) / (1 - self.schedule(len(self.inputs)))) / SCALE
        theta = math.acos(d / math.sqrt(2)) - math.pi / 4  # cos - sin = d: logit difference d * SCALE
        feature = torch.tensor([math.cos(theta), math.sin(theta)])
        return feature.expand(x.shape[0], 2) + 0 * x.flatten(1)[:, :1]


CLASSES2 = torch.eye(2)
SCALE = 10.0
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # CLIP's
STILL = dict(l2_weight=0.0, jitter=0, blur_every=0, step_size=10.0)  # the scripted ascent changes nothing


def scripted_run(encoder, index, config, **kwargs) -> SyntheticSet:
    return synthesize(encoder, CLASSES2, index, SIZE, MEAN, STD, config, seed=0, logit_scale=SCALE, **kwargs)



def test_scripted_encoder_gives_the_probability_asked():
    probs = (SCALE * F.normalize(Scripted(lambda k: 0.7)(torch.zeros(1, 3, 2, 2)), dim=-1) @ CLASSES2.T).softmax(dim=1)
    torch.testing.assert_close(probs[0, 0], torch.tensor(0.7))


@pytest.mark.parametrize("decay, expected", [("global", [0.7, 0.7, 0.8]), ("per_image", [0.7, 0.8, 0.8])])
def test_global_threshold_is_lowered_for_later_images_of_the_class_only(decay, expected):
    """One at a time: image 0 (class 0) fails its first attempt at 0.8, so its target drops to 0.7,
    then every image gets class-0 probability 0.85 (image 2, of class 1: 1 - 0.15). Under the global
    threshold image 1 is judged against the lowered 0.7 at once; class 1 keeps its 0.8."""
    schedule = lambda k: 0.5 if k <= 2 else (0.15 if k == 5 else 0.85)  # noqa: E731
    cfg = SynthesisConfig(target_probability=0.8, probability_decay=0.1, max_iterations=2, max_restarts=1,
                          batch_size=1, pixel_space="model", threshold_decay=decay, **STILL)
    res = scripted_run(Scripted(schedule), [0, 0, 1], cfg)
    torch.testing.assert_close(res.target, torch.tensor(expected))
    assert res.info["restarts"] == [1, 0, 0] and res.iterations.tolist() == [1, 1, 1]


def test_per_class_targets_override_the_default_target():
    """Class-0 probability 0.75: below the default 0.8, above its own target 0.7."""
    cfg = SynthesisConfig(target_probability=0.8, max_iterations=1, max_restarts=0, pixel_space="model", **STILL)
    res = scripted_run(Scripted(lambda k: 0.75), [0, 0], cfg, target_probabilities={0: 0.7})
    assert bool(res.reached.all()) and res.iterations.tolist() == [1, 1]
    torch.testing.assert_close(res.target, torch.tensor([0.7, 0.7]))
    for targets in (None, {1: 0.5}):  # class 0 not given its own target: 0.8 is out of reach
        with pytest.raises(SynthesisError, match="never reached their target probability"):
            scripted_run(Scripted(lambda k: 0.75), [0, 0], cfg, target_probabilities=targets)


def test_class_targets_by_name_must_be_resolved_and_checked():
    cfg = SynthesisConfig(class_target_probability={"Dog": 0.6}, pixel_space="model", **STILL)
    with pytest.raises(ConfigError, match=r"pass target_probabilities=resolve_class_targets\(config, classnames\)"):
        scripted_run(Scripted(lambda k: 0.75), [0], cfg)
    with pytest.raises(ConfigError, match=r"target_probabilities\[0\] \(0\.3\) must not be below min_probability"):
        scripted_run(Scripted(lambda k: 0.75), [0], SynthesisConfig(), target_probabilities={0: 0.3})
    with pytest.raises(ConfigError, match=r"target_probabilities keys must be class indices in \[0, 2\), got 2"):
        scripted_run(Scripted(lambda k: 0.75), [0], SynthesisConfig(), target_probabilities={2: 0.7})


def test_resolve_class_targets_ignores_case_underscores_and_spacing():
    cfg = SynthesisConfig(class_target_probability={"Scotch_Terrier": 0.6, " toy  poodle": 0.95})
    assert resolve_class_targets(cfg, ["pekinese", "toy poodle", "scotch terrier"]) == {2: 0.6, 1: 0.95}
    assert resolve_class_targets(SynthesisConfig(), ["pekinese"]) == {}


def test_resolve_class_targets_rejects_an_unknown_class_with_close_matches():
    cfg = SynthesisConfig(class_target_probability={"toy pooodle": 0.9})
    with pytest.raises(UnknownNameError, match=r"unknown class 'toy pooodle' in class_target_probability; close matches: 'toy_poodle'"):
        resolve_class_targets(cfg, ["pekinese", "toy_poodle", "scotch terrier"])


@pytest.mark.parametrize("mode", ["positive", "symmetric"])
def test_jitter_offsets(clip, mode):
    """The ascent never moves the image, so each input the encoder sees is the start image rolled
    by that iteration's offsets: published offsets lie in 0..jitter, the others in -jitter..jitter."""
    jitter = 3
    encoder = Scripted(lambda k: 0.5)
    cfg = SynthesisConfig(max_iterations=40, max_restarts=0, pixel_space="model", **{**STILL, "jitter": jitter},
                          jitter_mode=mode)
    with pytest.raises(SynthesisError, match="never reached their target probability"):
        synthesize(encoder, CLASSES2, [0], SIZE, clip.mean, clip.std, cfg, seed=0, logit_scale=SCALE)
    start = start_images(clip, 1)
    shifts = range(-jitter, jitter + 1)
    offsets = []
    for seen in encoder.inputs:
        found = [(a, b) for a in shifts for b in shifts if torch.equal(torch.roll(start, (a, b), dims=(2, 3)), seen)]
        assert len(found) == 1
        offsets.extend(found[0])
    assert len(offsets) == 2 * 40
    if mode == "positive":
        assert min(offsets) == 0 and max(offsets) == jitter
    else:
        assert min(offsets) == -jitter and max(offsets) == jitter


def imagenet_start(n: int = 1) -> torch.Tensor:
    """The published start: the seed's raw standard-normal noise, not clamped."""
    return torch.randn((n, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(0))


def processed(x: torch.Tensor) -> torch.Tensor:
    """ImageNet space -> clamp -> pixels -> min-max per image -> CLIP's normalisation, written out."""
    lo, hi = pixel_bounds(IMAGENET_MEAN, IMAGENET_STD)
    pixels = torch.maximum(torch.minimum(x, hi), lo) * torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = pixels + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    pixels = (pixels - pixels.min()) / (pixels.max() - pixels.min())
    return (pixels - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def test_imagenet_space_ascent_input_and_judged_image():
    """Iteration 1 of the published generator on an image the ascent cannot move: the ascent sees
    the raw start with CLIP's normalisation on top of it; the success check (a second forward)
    sees the clamped, de-normalised, min-max rescaled image in CLIP's space, which is kept."""
    encoder = Scripted(lambda k: 0.5)
    cfg = SynthesisConfig(max_iterations=1, max_restarts=0, **STILL)
    with pytest.raises(SynthesisError, match="never reached their target probability") as info:
        scripted_run(encoder, [0], cfg)
    start = imagenet_start()
    assert len(encoder.inputs) == 2
    torch.testing.assert_close(encoder.inputs[0], (start - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1))
    torch.testing.assert_close(encoder.inputs[1], processed(start))
    assert torch.equal(info.value.result.images, encoder.inputs[1])


@pytest.mark.parametrize("first, kernel", [(True, 5), (False, 5), (True, 3)])
def test_blur_from_the_first_iteration(first, kernel):
    """With t counted from 0 the first iteration's image is blurred (kernel_size taps) before it is judged."""
    encoder = Scripted(lambda k: 0.5)
    cfg = SynthesisConfig(max_iterations=1, max_restarts=0, **{**STILL, "blur_every": 10},
                          blur_from_first_iteration=first, blur_kernel_size=kernel)
    with pytest.raises(SynthesisError, match="never reached their target probability"):
        scripted_run(encoder, [0], cfg)
    lo, hi = pixel_bounds(IMAGENET_MEAN, IMAGENET_STD)
    clamped = torch.maximum(torch.minimum(imagenet_start(), hi), lo)
    blurred = gaussian_blur(clamped, kernel_size=kernel, sigma=0.5) if first else clamped
    torch.testing.assert_close(encoder.inputs[1], processed(blurred))
    if first:
        assert not torch.allclose(encoder.inputs[1], processed(clamped))


# ------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_probability": 0.0}, "target_probability must be a number in (0, 1), got 0.0"),
        ({"target_probability": 1.0}, "target_probability must be a number in (0, 1), got 1.0"),
        ({"target_probability": 1.5}, "target_probability must be a number in (0, 1), got 1.5"),
        ({"target_probability": math.nan}, "target_probability must be a number in (0, 1), got nan"),
        ({"min_probability": -0.1}, "min_probability must be a number in (0, 1), got -0.1"),
        ({"min_probability": 0.95}, "min_probability (0.95) must not exceed target_probability (0.8)"),
        ({"max_iterations": 0}, "max_iterations must be an int >= 1, got 0"),
        ({"step_size": -1.0}, "step_size must be a finite number > 0, got -1.0"),
        ({"max_restarts": -1}, "max_restarts must be an int >= 0, got -1"),
        ({"jitter": -2}, "jitter must be an int >= 0, got -2"),
        ({"blur_every": -1}, "blur_every must be an int >= 0, got -1"),
        ({"blur_sigma": 0.0}, "blur_sigma must be a finite number > 0, got 0.0"),
        ({"probability_decay": -0.01}, "probability_decay must be a finite number >= 0, got -0.01"),
        ({"l2_weight": -1e-3}, "l2_weight must be a finite number >= 0, got -0.001"),
        ({"batch_size": 0}, "batch_size must be an int >= 1 or None, got 0"),
        ({"threshold_decay": "local"}, "threshold_decay must be one of 'global', 'per_image', got 'local'"),
        ({"pixel_space": "clip"}, "pixel_space must be one of 'imagenet', 'model', got 'clip'"),
        ({"jitter_mode": "negative"}, "jitter_mode must be one of 'positive', 'symmetric', got 'negative'"),
        ({"blur_kernel_size": 4}, "blur_kernel_size must be odd, got 4"),
        ({"blur_kernel_size": 0}, "blur_kernel_size must be an int >= 1, got 0"),
        ({"blur_from_first_iteration": "yes"}, "blur_from_first_iteration must be True or False, got 'yes'"),
        ({"class_target_probability": {"dog": 1.0}}, "class_target_probability['dog'] must be a number in (0, 1), got 1.0"),
        ({"class_target_probability": {"dog": 0.3}}, "class_target_probability['dog'] (0.3) must not be below min_probability (0.45)"),
        ({"class_target_probability": {"Toy_Poodle": 0.6, "toy poodle": 0.7}},
         "class_target_probability names one class twice: 'Toy_Poodle' and 'toy poodle'"),
        ({"class_target_probability": {"": 0.6}}, "class_target_probability keys must be class names, got ''"),
        ({"class_target_probability": [0.6]}, "class_target_probability must be a dict class name -> probability or None, got [0.6]"),
    ],
)
def test_config_validation_messages(kwargs, message):
    with pytest.raises(ConfigError) as info:
        SynthesisConfig(**kwargs)
    assert str(info.value) == message


def test_config_defaults_are_the_published_generators():
    cfg = SynthesisConfig()
    assert (cfg.target_probability, cfg.class_target_probability, cfg.min_probability, cfg.probability_decay) == (0.8, None, 0.45, 0.025)
    assert (cfg.threshold_decay, cfg.pixel_space, cfg.jitter_mode) == ("global", "imagenet", "positive")
    assert (cfg.max_iterations, cfg.step_size, cfg.l2_weight) == (3000, 25.0, 1e-3)
    assert (cfg.jitter, cfg.blur_every, cfg.blur_sigma, cfg.blur_kernel_size, cfg.blur_from_first_iteration) == (16, 10, 0.5, 5, True)
    assert cfg.batch_size is None
    SynthesisConfig(max_restarts=0, jitter=0, blur_every=0, probability_decay=0.0, l2_weight=0.0, batch_size=1, **LEGACY)


@pytest.mark.parametrize(
    "index, message",
    [([], "class_index is empty"), ([0, 4], r"class_index values must be in \[0, 4\), got \[0, 4\]"), ([-1], r"got \[-1\]")],
)
def test_bad_class_index_raises(clip, classes, index, message):
    with pytest.raises(ConfigError, match=message):
        run(clip, classes, index=index)


# ------------------------------------------------------------- the start and the least iterations


def test_min_iterations_keeps_no_image_before_it(clip, classes, result):
    """Images that pass the target early keep ascending until ``min_iterations``, then are judged."""
    least = min(int(result.iterations.min()) + 5, CFG.max_iterations)  # past the earliest image kept
    res = run(clip, classes, config=dataclasses.replace(CFG, min_iterations=least))
    assert_valid(clip, classes, res)
    assert bool((res.iterations >= least).all())


def test_init_std_scales_the_noise_each_image_starts_from(clip, classes):
    """The first input the ascent evaluates is the first noise draw times ``init_std``, clamped."""
    seen = []

    def encode(x):
        seen.append(x.detach().clone())
        return clip.model.encode_image(x)

    config = dataclasses.replace(CFG, jitter=0, init_std=0.25)
    synthesize(encode, classes, INDEX, SIZE, clip.mean, clip.std, config, seed=0)
    lo, hi = pixel_bounds(clip.mean, clip.std)
    noise = torch.randn((len(INDEX), 3, SIZE, SIZE), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(seen[0], torch.maximum(torch.minimum(0.25 * noise, hi), lo), rtol=0, atol=0)


@pytest.mark.parametrize("field, value, message", [
    ("min_iterations", 0, "min_iterations must be an int >= 1, got 0"),
    ("min_iterations", 61, r"min_iterations must be <= max_iterations \(60\), got 61"),
    ("init_std", -1.0, r"init_std must be a finite number >= 0, got -1.0"),
])
def test_bad_start_settings_are_refused(field, value, message):
    with pytest.raises(ConfigError, match=message):
        SynthesisConfig(**{**GOAL, **LEGACY, field: value})


def test_start_settings_enter_the_cache_key_only_when_changed():
    from lightning_unlearn.maths.synthesis_schedule import cache_key_fields

    assert {"init_std", "min_iterations"}.isdisjoint(cache_key_fields(SynthesisConfig()))
    changed = cache_key_fields(SynthesisConfig(init_std=0.5, min_iterations=10))
    assert changed["init_std"] == 0.5 and changed["min_iterations"] == 10
