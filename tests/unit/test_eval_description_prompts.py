"""Description prompts for synthesis (the paper's Table 8): per-image target embeddings in
``synthesize`` (tiny random-init ViT from conftest; settings as in test_synthesis.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.maths.synthesis import SynthesisConfig, SynthesisError, synthesize
from lightning_unlearn.maths.zeroshot import encode_classes

CLASSNAMES = ["cat", "dog", "car", "tree"]
DOG, CAR = 1, 2
SIZE = 32
#: A fixed amount of work: the target is out of reach, so every image runs exactly 8 iterations.
FIXED = SynthesisConfig(target_probability=0.999, min_probability=0.999, max_iterations=8, max_restarts=0,
                        step_size=10.0, jitter=0, threshold_decay="per_image", pixel_space="model")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clip(tiny_clip):
    return tiny_clip("tiny-vit")


@pytest.fixture(scope="module")
def classes(clip):
    with torch.no_grad():
        return encode_classes(clip.model, clip.tokenizer, CLASSNAMES, ["a photo of a {}."])


def fixed_run(clip, classes, index, **kwargs) -> torch.Tensor:
    with pytest.raises(SynthesisError) as caught:
        synthesize(clip.model.encode_image, classes, index, SIZE, clip.mean, clip.std, FIXED, seed=0, **kwargs)
    return caught.value.result.images


def test_own_embeddings_equal_to_the_class_rows_change_nothing(clip, classes):
    index = [DOG, DOG, CAR]
    plain = fixed_run(clip, classes, index)
    same = fixed_run(clip, classes, index, image_embeddings=classes[index])
    torch.testing.assert_close(same, plain, rtol=0, atol=1e-4)


def test_each_image_ascends_towards_its_own_embedding():
    # A linear stand-in encoder, so that the ascent's direction is plain to see.
    weights = torch.randn(3 * 8 * 8, 4, generator=torch.Generator().manual_seed(0))

    def encode(images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ weights

    classes = torch.eye(4)
    index = [DOG, DOG]

    def images(**kwargs) -> torch.Tensor:
        try:  # the plain run reaches its target, the steered one cannot (two columns read car)
            return synthesize(encode, classes, index, 8, (0.5,) * 3, (0.25,) * 3, FIXED, seed=0, **kwargs).images
        except SynthesisError as err:
            return err.result.images

    def cosine(x: torch.Tensor, c: int) -> float:
        return float((F.normalize(encode(x), dim=-1) @ classes[c]).mean())

    plain, steered = images(), images(image_embeddings=classes[[CAR, CAR]])  # a dog "description" that reads car
    assert cosine(plain, DOG) > 0.5 > cosine(steered, DOG)
    assert cosine(steered, CAR) > 0.5 > cosine(plain, CAR)


def test_own_embeddings_must_be_one_per_image(clip, classes):
    with pytest.raises(ConfigError, match=r"image_embeddings must be \[3, \d+\] \(one per image\)"):
        synthesize(clip.model.encode_image, classes, [DOG, DOG, CAR], SIZE, clip.mean, clip.std, FIXED,
                   image_embeddings=classes[:2])
