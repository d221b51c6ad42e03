"""L2 PGD (lightning_unlearn.maths.adversarial) against direct computations."""

from __future__ import annotations

import pytest
import torch

from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.maths.adversarial import default_step_size, l2_pgd, l2_pgd_step, project_l2_ball


def _norms(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


def test_projection_scales_only_perturbations_outside_the_ball() -> None:
    delta = torch.zeros(3, 2, 2, 2, dtype=torch.float64)
    delta[0, 0, 0, 0] = 0.5   # inside radius 1: unchanged
    delta[1, 1, 1, 1] = 4.0   # outside: scaled to norm 1
    delta[2] = 1.0            # norm sqrt(8): scaled, direction kept
    out = project_l2_ball(delta, 1.0)
    assert torch.equal(out[0], delta[0])
    assert _norms(out)[1:].tolist() == pytest.approx([1.0, 1.0])
    assert torch.allclose(out[2], delta[2] / 8 ** 0.5)


def test_pgd_step_moves_each_image_by_step_size_along_its_own_gradient() -> None:
    delta = torch.zeros(2, 4, dtype=torch.float64)
    grad = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 10.0]], dtype=torch.float64)
    out = l2_pgd_step(delta, grad, step_size=0.5, radius=10.0)
    assert torch.allclose(out, torch.tensor([[0.3, 0.4, 0, 0], [0, 0, 0, 0.5]], dtype=torch.float64))
    # a step beyond the radius is projected back onto the sphere
    assert _norms(l2_pgd_step(delta, grad, step_size=5.0, radius=2.0)).tolist() == pytest.approx([2.0, 2.0])


def test_zero_gradient_gives_no_step_and_no_nan() -> None:
    delta = torch.full((1, 3), 0.1)
    out = l2_pgd_step(delta, torch.zeros(1, 3), step_size=1.0, radius=1.0)
    assert torch.equal(out, delta)


def test_pgd_finds_the_worst_case_of_a_linear_loss_on_the_sphere() -> None:
    # loss = <w, x> per image: its maximum in the ball is x + radius * w / ||w||
    torch.manual_seed(0)
    w = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    adv = l2_pgd(lambda z: (z * w).sum(), x, radius=0.7, steps=3)
    expected = x + 0.7 * w / _norms(w).view(-1, 1, 1, 1)
    assert torch.allclose(adv, expected)
    assert not adv.requires_grad


def test_pgd_raises_a_nonlinear_loss_and_leaves_parameter_gradients_alone() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 3)
    target = torch.tensor([0, 1, 2, 0])
    x = torch.randn(4, 6)

    def loss(z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(layer(z), target)

    adv = l2_pgd(loss, x, radius=1.0, steps=5)
    assert loss(adv) > loss(x)
    assert (_norms(adv - x) <= 1.0 + 1e-6).all()
    assert all(p.grad is None for p in layer.parameters())
    assert torch.equal(l2_pgd(loss, x, radius=0.0, steps=2), x)


def test_default_step_size_and_checks() -> None:
    assert default_step_size(2.0, 5) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="radius must be a finite number >= 0, got -1"):
        project_l2_ball(torch.zeros(1, 2), -1)
    with pytest.raises(ConfigError, match="steps must be an int >= 1, got 0"):
        l2_pgd(lambda z: z.sum(), torch.zeros(1, 2), radius=1.0, steps=0)
