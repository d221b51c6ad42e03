"""The order synthetic images are made in, and per-class decrements of the target.

The published generator makes one image at a time: attempt j of image i is judged against the start target lowered
once per failed attempt before it (images 0..i-1, and image i's own j earlier attempts), never below the floor.
``mode: sequential`` must be that generator; ``mode: batched`` is not (images that time out together lower the target
together). Both properties hold for any trajectory: the tiny model's only role is to make attempts fail
(checked on seeds 0-4: sequential always follows the published sequence, batched never did).
"""

from __future__ import annotations

import re

import pytest
import torch

from lightning_unlearn.core.errors import ConfigError, UnknownNameError
from lightning_unlearn.maths.synthesis import SynthesisConfig, SyntheticSet, synthesize
from lightning_unlearn.maths.synthesis_schedule import cache_key_fields, resolve_class_decays
from lightning_unlearn.maths.zeroshot import encode_classes

CLASSNAMES = ["cat", "dog", "car", "tree"]
CAR = 2
START, DECAY, FLOOR = 0.45, 0.02, 0.25
#: short attempts on the tiny random CLIP: most first attempts time out
HARD = dict(target_probability=START, min_probability=FLOOR, probability_decay=DECAY, max_iterations=8,
            max_restarts=40, step_size=10.0, jitter=4)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clip(tiny_clip):
    return tiny_clip("tiny-vit")


@pytest.fixture(scope="module")
def classes(clip):
    with torch.no_grad():
        return encode_classes(clip.model, clip.tokenizer, CLASSNAMES, ["a photo of a {}."])


def make(clip, classes, config: SynthesisConfig, index=(CAR,) * 6, **kwargs) -> SyntheticSet:
    return synthesize(clip.model.encode_image, classes, list(index), 32, clip.mean, clip.std, config, seed=0,
                      **kwargs)


def published_targets(restarts: list[int], start: float = START, decay: float = DECAY) -> torch.Tensor:
    """The target each image of one class is accepted at by the one-at-a-time generator."""
    failures = torch.tensor(restarts).cumsum(0).to(torch.float64)
    return (start - decay * failures).clamp_min(FLOOR).to(torch.float32)


def test_sequential_mode_is_the_published_order(clip, classes):
    made = make(clip, classes, SynthesisConfig(**HARD, mode="sequential"))
    restarts = made.info["restarts"]
    assert bool(made.reached.all()) and sum(restarts[1:]) > 0  # later images failed too: the order matters
    assert float(made.target.max()) > FLOOR  # not every image at the floor: the sequence is visible
    torch.testing.assert_close(made.target, published_targets(restarts), rtol=0, atol=1e-6)
    assert bool((made.target[1:] <= made.target[:-1]).all())  # never raised again


def test_batched_mode_lowers_the_target_for_failures_of_later_images(clip, classes):
    made = make(clip, classes, SynthesisConfig(**HARD))  # mode: batched, all six at once
    assert not torch.allclose(made.target, published_targets(made.info["restarts"]), rtol=0, atol=1e-6)


def test_sequential_equals_batches_of_one(clip, classes):
    one = make(clip, classes, SynthesisConfig(**HARD, batch_size=1))
    sequential = make(clip, classes, SynthesisConfig(**HARD, mode="sequential"))
    assert torch.equal(one.images, sequential.images) and torch.equal(one.target, sequential.target)


def test_a_class_with_decrement_zero_keeps_its_target(clip, classes):
    config = SynthesisConfig(**{**HARD, "target_probability": 0.3, "max_restarts": 100}, mode="sequential",
                             class_probability_decay={"Car": 0.0})
    made = make(clip, classes, config, probability_decays=resolve_class_decays(config, CLASSNAMES))
    assert sum(made.info["restarts"]) > 0  # attempts failed, and the target stayed
    assert made.target.tolist() == pytest.approx([0.3] * 6, abs=1e-7)
    lowered = make(clip, classes, SynthesisConfig(**{**HARD, "target_probability": 0.3}, mode="sequential"))
    torch.testing.assert_close(lowered.target, published_targets(lowered.info["restarts"], start=0.3),
                               rtol=0, atol=1e-6)


def test_per_class_decrements_must_be_resolved_and_checked(clip, classes):
    config = SynthesisConfig(class_probability_decay={"car": 0.0})
    with pytest.raises(ConfigError, match="pass probability_decays=resolve_class_decays"):
        make(clip, classes, config)
    assert resolve_class_decays(config, CLASSNAMES) == {CAR: 0.0}
    assert resolve_class_decays(SynthesisConfig(), CLASSNAMES) == {}
    with pytest.raises(UnknownNameError, match="class_probability_decay"):
        resolve_class_decays(SynthesisConfig(class_probability_decay={"cars": 0.0}), ["car", "dog"])
    with pytest.raises(ConfigError, match=re.escape("probability_decays keys must be class indices in [0, 4), got 7")):
        make(clip, classes, SynthesisConfig(), probability_decays={7: 0.0})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(mode="parallel"), "mode must be one of 'batched', 'sequential', got 'parallel'"),
        (dict(mode="sequential", batch_size=8), "batch_size must be None or 1 with mode 'sequential'"),
        (dict(class_probability_decay={"dog": -0.1}), "class_probability_decay['dog']"),
        (dict(class_probability_decay={"dog": 1.0}), "class_probability_decay['dog'] must be below 1, got 1.0"),
        (dict(class_probability_decay={"Dog": 0.0, "dog": 0.1}), "names one class twice: 'Dog' and 'dog'"),
        (dict(class_probability_decay=[0.1]), "class_probability_decay must be a dict class name -> decrement"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        SynthesisConfig(**kwargs)


def test_cache_keys_of_earlier_sets_are_kept():
    assert "mode" not in cache_key_fields(SynthesisConfig())
    assert "class_probability_decay" not in cache_key_fields(SynthesisConfig())
    assert cache_key_fields(SynthesisConfig(mode="sequential"))["mode"] == "sequential"
    assert cache_key_fields(SynthesisConfig(class_probability_decay={"dog": 0.0}))["class_probability_decay"]
