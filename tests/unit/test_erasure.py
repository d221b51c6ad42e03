"""maths/erasure.py: LEACE and the oblique eraser (pure tensors)."""

from __future__ import annotations

import pytest
import torch

from lightning_unlearn.core.errors import ConfigError, IllConditionedError
from lightning_unlearn.maths.erasure import covariance, leace_eraser, oblique_eraser, shrunk


def _samples(n: int = 400, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([5.0, 3.0, 1.0, 0.5, 0.3, 0.1])[:d]
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * scales @ torch.linalg.qr(
        torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    z = torch.rand(n, generator=g) < 0.2
    x[z] += torch.tensor([0.5, -1.0, 2.0, 0.3, 0.0, 1.0][:d], dtype=torch.float64)  # the concept shifts the mean
    return x, z


def test_leace_equalises_the_class_conditional_means_on_the_estimation_set():
    x, z = _samples()
    assert (x[z].mean(0) - x[~z].mean(0)).norm() > 1.0  # the concept is there before
    erased = leace_eraser(x, z)(x)
    assert torch.allclose(erased[z].mean(0), erased[~z].mean(0), atol=1e-10)


def test_leace_erases_a_several_class_concept():
    x, _ = _samples(seed=1)
    labels = torch.arange(len(x)) % 3
    x = x + torch.tensor([[2.0, 0, 0, 0, 0, 0], [0, -1.0, 1.0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.float64)[labels]
    eraser = leace_eraser(x, torch.nn.functional.one_hot(labels).double())
    erased = eraser(x)
    assert eraser.rank == 2  # one-hot columns sum to 1: two independent directions
    means = torch.stack([erased[labels == k].mean(0) for k in range(3)])
    assert torch.allclose(means, means[:1].expand_as(means), atol=1e-10)


def test_the_eraser_is_a_projection_that_ignores_moves_along_its_directions():
    x, z = _samples()
    eraser = leace_eraser(x, z)
    once = eraser(x)
    assert torch.allclose(eraser(once), once, atol=1e-10)
    moved = x + 3.7 * eraser.directions[:, 0]
    assert torch.allclose(eraser(moved), once, atol=1e-9)
    assert torch.allclose(x @ eraser.linear().T + eraser.offset(), once, atol=1e-10)  # the affine form


def test_the_oblique_readout_changes_samples_less_than_an_orthogonal_projection():
    x, _ = _samples(seed=2)
    mean, cov = covariance(x)
    direction = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    oblique = oblique_eraser(direction, cov, mean)
    orthogonal = oblique_eraser(direction, torch.eye(6, dtype=torch.float64), mean)
    change = lambda e: float(((e(x) - x) ** 2).sum(1).mean())
    assert change(oblique) < 0.9 * change(orthogonal)
    # a covariance shrunk far towards isotropy reads like the orthogonal projection
    shrunk_far = oblique_eraser(direction, shrunk(cov, 1e6), mean)
    assert torch.allclose(shrunk_far.readout, orthogonal.readout, atol=1e-4)


def test_bad_input_is_refused():
    x, z = _samples()
    mean, cov = covariance(x)
    with pytest.raises(ConfigError, match="must share d"):
        oblique_eraser(torch.ones(5), cov, mean)
    with pytest.raises(ConfigError, match="nothing to erase"):
        leace_eraser(x, torch.zeros(len(x)))
    with pytest.raises(ConfigError, match="shrinkage must be a finite number >= 0, got -1"):
        shrunk(cov, -1.0)
    flat = torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64))
    with pytest.raises(IllConditionedError, match="use shrinkage > 0"):
        oblique_eraser(torch.eye(6, dtype=torch.float64)[:, 5], flat, torch.zeros(6, dtype=torch.float64))
    with pytest.raises(IllConditionedError, match="not finite"):
        oblique_eraser(torch.full((6,), float("nan")), cov, mean)
