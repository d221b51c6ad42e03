"""The unlearning objectives against direct computations of their formulas.

A tiny linear "encoder" (``x -> flatten(x) @ W``, float64) stands in for the image tower; the noise
is reconstructed from fresh generators seeded like the ones the functions consume
(``perturbed_features`` draws one ``[B, C, H, W]`` set per perturbation, in order ``n = 0..N-1``;
per-image generators draw one ``[C, H, W]`` tensor per image and perturbation). Exact
(bit-for-bit) comparisons use the identity encoder, whose features are the perturbed images
themselves, so they cannot depend on how a BLAS splits a matmul. With ``clamp`` each perturbed image
is clipped to the [min, max] of its own clean image (the published code used the batch's range,
which made an image's loss depend on the other images of its batch or DDP shard).

The direct formulas take the published defaults unless told otherwise: the reduction
``sum / (4N)`` (``"mean"``: the mean over images and perturbations) and the norm of the applied
perturbation ``||x~ - x||`` (``"drawn"``: ``||eps||``).
"""

from __future__ import annotations

import math

import pytest
import torch

from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.maths.objectives import (
    draw_noise,
    embedding_loss,
    image_lipschitz_loss,
    multimodal_lipschitz_loss,
    perturbed_features,
)

B, C, H, W_ = 3, 2, 3, 3
D = 5
SEED = 1234
SIGMA = 0.7


def gen(seed: int = SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gens(batch: int = B, base: int = 100) -> list[torch.Generator]:
    return [gen(base + i) for i in range(batch)]


@pytest.fixture
def data():
    g = gen(0)
    images = torch.randn(B, C, H, W_, generator=g, dtype=torch.float64)
    weight = torch.randn(C * H * W_, D, generator=g, dtype=torch.float64)
    text = torch.randn(B, D, generator=g, dtype=torch.float64)
    return images, weight, text


def linear(weight: torch.Tensor):
    return lambda x: x.flatten(1) @ weight


def identity(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


def norm(v: torch.Tensor) -> torch.Tensor:
    """The L2 norm written out (not ``Tensor.norm``)."""
    return torch.sqrt((v * v).sum())


def reference_noise(n_pert: int, generator, shape=(B, C, H, W_), dtype=torch.float64) -> torch.Tensor:
    """``[N, B, C, H, W]`` noise (times SIGMA) as the functions draw it, from fresh generators."""
    if isinstance(generator, torch.Generator):
        return torch.stack([torch.randn(shape, generator=generator, dtype=dtype) for _ in range(n_pert)]) * SIGMA
    per_set = [
        torch.stack([torch.randn(shape[1:], generator=g, dtype=dtype) for g in generator]) for _ in range(n_pert)
    ]
    return torch.stack(per_set) * SIGMA


def direct_terms(encode, images, text, noise, clamp=True, detach=True, noise_norm="applied"):
    """Per (n, b): (||f(x) - f(x~)||, ||t - f(x~)||, ||x~ - x|| or ||eps||), looping over perturbations
    and images; x~ = x + eps, clipped to the range of x. The norm is a constant (no gradient)."""
    out = []
    for n in range(noise.shape[0]):
        for b in range(images.shape[0]):
            x = images[b : b + 1]
            eps = noise[n, b : b + 1]
            src = x.detach() if detach else x
            lo, hi = float(x.detach().min()), float(x.detach().max())
            xt = (src + eps).clamp(lo, hi) if clamp else src + eps
            if detach:
                with torch.no_grad():
                    fp = encode(xt)[0]
            else:
                fp = encode(xt)[0]
            fx = encode(x)[0]
            t = text[b] if text is not None and text.shape[0] > 1 else (None if text is None else text[0])
            applied = norm(xt.detach() - x.detach()) if clamp else norm(eps)
            out.append((norm(fx - fp), None if t is None else norm(t - fp), applied if noise_norm == "applied" else norm(eps)))
    return out


def reduce(values, n_pert, reduction="published"):
    """A list over (n, b) -> the loss: sum / (4N), or the mean."""
    return sum(values) / (4 * n_pert) if reduction == "published" else sum(values) / len(values)


def direct_multimodal(encode, images, text, noise, reduction="published", **kw):
    terms = direct_terms(encode, images, text, noise, **kw)
    return reduce([(a + b) / e for a, b, e in terms], noise.shape[0], reduction)


# --------------------------------------------------------------------------------------- formula


@pytest.mark.parametrize("clamp", [True, False])
@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("reduction, noise_norm", [("published", "applied"), ("mean", "drawn"), ("mean", "applied"), ("published", "drawn")])
def test_multimodal_loss_matches_formula(data, clamp, per_image, reduction, noise_norm):
    images, weight, text = data
    n_pert = 4
    loss = multimodal_lipschitz_loss(
        linear(weight), images, text, SIGMA, n_pert, clamp=clamp, generator=gens() if per_image else gen(),
        reduction=reduction, noise_norm=noise_norm,
    )
    noise = reference_noise(n_pert, gens() if per_image else gen())
    expected = direct_multimodal(linear(weight), images, text, noise, reduction, clamp=clamp, noise_norm=noise_norm)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


def test_clamp_changes_the_loss(data):
    """Guard the formula test: with sigma this large, clamping really is exercised."""
    images, weight, text = data
    a = multimodal_lipschitz_loss(linear(weight), images, text, SIGMA, 3, clamp=True, generator=gen())
    b = multimodal_lipschitz_loss(linear(weight), images, text, SIGMA, 3, clamp=False, generator=gen())
    assert not torch.allclose(a, b)


def test_text_features_broadcast_from_one_row(data):
    images, weight, text = data
    one = text[:1]
    loss = multimodal_lipschitz_loss(linear(weight), images, one, SIGMA, 3, generator=gen())
    expected = direct_multimodal(linear(weight), images, one, reference_noise(3, gen()))
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    tiled = multimodal_lipschitz_loss(linear(weight), images, one.expand(B, D), SIGMA, 3, generator=gen())
    torch.testing.assert_close(loss, tiled, rtol=1e-12, atol=0)


def test_precomputed_image_features_are_used(data):
    images, weight, text = data
    encode = linear(weight)
    a = multimodal_lipschitz_loss(encode, images, text, SIGMA, 3, generator=gen())
    b = multimodal_lipschitz_loss(encode, images, text, SIGMA, 3, generator=gen(), image_features=encode(images))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    shifted = encode(images) + 1.0
    c = multimodal_lipschitz_loss(encode, images, text, SIGMA, 3, generator=gen(), image_features=shifted)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("noise_norm", ["applied", "drawn"])
def test_noise_norms_are_those_chosen(data, noise_norm):
    """``applied``: ||x - clamp(x + eps)||, the perturbation the encoder saw; ``drawn``: ||eps||."""
    images, _, _ = data
    feats, norms = perturbed_features(identity, images, SIGMA, 3, clamp=True, generator=gen(), noise_norm=noise_norm)
    noise = reference_noise(3, gen())
    assert feats.shape == (3, B, C * H * W_) and norms.shape == (3, B)
    applied = feats.view(3, B, C, H, W_) - images.unsqueeze(0)  # identity encoder: features = x~
    chosen = applied if noise_norm == "applied" else noise
    expected = torch.stack([torch.stack([norm(chosen[n, b]) for b in range(B)]) for n in range(3)])
    torch.testing.assert_close(norms, expected, rtol=1e-12, atol=0)
    for b in range(B):
        own = (images[b].unsqueeze(0) + noise[:, b]).clamp(float(images[b].min()), float(images[b].max()))
        assert torch.equal(feats[:, b], own.flatten(1))


def test_applied_and_drawn_norms_differ_with_clamping_only(data):
    """Clamping shortens the applied perturbation; without clamping it is the drawn noise exactly."""
    images, weight, text = data
    norms = {nn: perturbed_features(identity, images, SIGMA, 3, clamp=True, generator=gen(), noise_norm=nn)[1]
             for nn in ("applied", "drawn")}
    assert bool((norms["applied"] <= norms["drawn"] + 1e-12).all()) and bool((norms["applied"] < norms["drawn"]).any())
    unclamped = [perturbed_features(identity, images, SIGMA, 3, clamp=False, generator=gen(), noise_norm=nn)
                 for nn in ("applied", "drawn")]
    assert torch.equal(unclamped[0][0], unclamped[1][0]) and torch.equal(unclamped[0][1], unclamped[1][1])
    losses = [multimodal_lipschitz_loss(linear(weight), images, text, SIGMA, 3, generator=gen(), noise_norm=nn)
              for nn in ("applied", "drawn")]
    assert float(losses[0]) > float(losses[1])  # shorter perturbations, larger quotients


def test_clamp_uses_each_images_own_range():
    """An image with a narrow range is clipped to it, not to the wider range of the batch."""
    images = torch.stack([torch.full((C, H, W_), 0.5), torch.linspace(-3, 3, C * H * W_).view(C, H, W_)]).double()
    images[0, 0, 0, 0] = 0.25  # image 0 spans [0.25, 0.5]
    feats, _ = perturbed_features(identity, images, 2.0, 4, generator=gen())
    assert float(feats[:, 0].min()) >= 0.25 and float(feats[:, 0].max()) <= 0.5
    assert float(feats[:, 0].min()) == 0.25 and float(feats[:, 0].max()) == 0.5  # sigma 2 hits both ends
    assert float(feats[:, 1].min()) >= -3.0 and float(feats[:, 1].max()) <= 3.0


@pytest.mark.parametrize("reduction, noise_norm", [("published", "applied"), ("mean", "drawn")])
def test_image_only_loss_matches_formula(data, reduction, noise_norm):
    images, weight, _ = data
    loss = image_lipschitz_loss(linear(weight), images, SIGMA, 4, generator=gen(), reduction=reduction, noise_norm=noise_norm)
    terms = direct_terms(linear(weight), images, None, reference_noise(4, gen()), noise_norm=noise_norm)
    expected = reduce([a / e for a, _, e in terms], 4, reduction)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.3])
@pytest.mark.parametrize("reduction", ["published", "mean"])
def test_embedding_loss_matches_formula(data, alpha, reduction):
    """Distances over (n, b) plus alpha * ||f(x) + t|| (the paper's sign) once per image:
    published sum_b / 4, mean over b."""
    images, weight, text = data
    encode = linear(weight)
    loss = embedding_loss(encode, images, text, SIGMA, 4, alpha=alpha, generator=gen(), reduction=reduction)
    terms = direct_terms(encode, images, text, reference_noise(4, gen()))
    distances = reduce([a + b for a, b, _ in terms], 4, reduction)
    pulls = [norm(encode(images[b : b + 1])[0] + text[b]) for b in range(B)]
    pull = sum(pulls) / 4 if reduction == "published" else sum(pulls) / B
    torch.testing.assert_close(loss, distances + alpha * pull, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("max_batch", [1, 2, 3, 4, 5, 7, 12, 100])
@pytest.mark.parametrize("per_image", [False, True])
def test_chunked_equals_unchunked_exactly(data, max_batch, per_image):
    """B=3, N=4: max_batch below, equal to, not dividing, dividing B*N, and above it."""
    images, _, text_ = data
    text = text_.new_zeros(B, C * H * W_) + 0.1  # identity encoder: D = C*H*W
    make = (lambda: gens()) if per_image else (lambda: gen())
    full_f, full_n = perturbed_features(identity, images, SIGMA, 4, max_batch=None, generator=make())
    part_f, part_n = perturbed_features(identity, images, SIGMA, 4, max_batch=max_batch, generator=make())
    assert torch.equal(full_f, part_f) and torch.equal(full_n, part_n)
    a = multimodal_lipschitz_loss(identity, images, text, SIGMA, 4, max_batch=None, generator=make())
    b = multimodal_lipschitz_loss(identity, images, text, SIGMA, 4, max_batch=max_batch, generator=make())
    assert torch.equal(a, b)


@pytest.mark.parametrize("max_batch", [1, 3, 5])
def test_chunked_encoder_call_sizes(data, max_batch):
    """Every forward gets at most max_batch images, and all B*N perturbed images are encoded once."""
    images, weight, _ = data
    sizes = []

    def encode(x):
        sizes.append(x.shape[0])
        return x.flatten(1) @ weight

    perturbed_features(encode, images, SIGMA, 4, max_batch=max_batch, generator=gen())
    assert max(sizes) <= max_batch and sum(sizes) == B * 4
    assert sizes[:-1] == [max_batch] * (len(sizes) - 1)  # only the last chunk may be short


def test_chunked_gradients_match_unchunked(data):
    images, weight, text = data
    grads = []
    for max_batch in (None, 2, 5):
        for detach in (True, False):
            w = weight.clone().requires_grad_(True)
            x = images.clone().requires_grad_(True)
            t = text.clone().requires_grad_(True)
            loss = multimodal_lipschitz_loss(
                linear(w), x, t, SIGMA, 4, max_batch=max_batch, detach_perturbed=detach, generator=gen()
            )
            loss.backward()
            grads.append((detach, w.grad, x.grad, t.grad))
    for detach in (True, False):
        same = [g for g in grads if g[0] == detach]
        for other in same[1:]:
            for g0, g1 in zip(same[0][1:], other[1:]):
                torch.testing.assert_close(g0, g1, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("splits", [[1, 2, 3], [4, 2], [6], [5, 1]])
@pytest.mark.parametrize("max_batch", [None, 4])
@pytest.mark.parametrize("clamp", [True, False])
@pytest.mark.parametrize("reduction", ["published", "mean"])
def test_per_image_generators_make_results_independent_of_the_split(splits, max_batch, clamp, reduction):
    """Each image gets the same noise, perturbed features and loss terms whatever shard (DDP rank)
    and chunk it lands in, so the shards' losses give the whole batch's: summed (published, a sum
    over images), or weighted by size (mean)."""
    g = gen(0)
    images = torch.randn(6, C, H, W_, generator=g, dtype=torch.float64)
    text = torch.randn(6, C * H * W_, generator=g, dtype=torch.float64)
    full_f, full_n = perturbed_features(identity, images, SIGMA, 5, max_batch=max_batch, clamp=clamp, generator=gens(6))
    parts_f, parts_n, losses = [], [], []
    start = 0
    for size in splits:
        shard = slice(start, start + size)
        shard_gens = [gen(100 + i) for i in range(start, start + size)]  # image i always owns seed 100+i
        f, n = perturbed_features(identity, images[shard], SIGMA, 5, max_batch=max_batch, clamp=clamp, generator=shard_gens)
        parts_f.append(f)
        parts_n.append(n)
        shard_gens = [gen(100 + i) for i in range(start, start + size)]
        loss = multimodal_lipschitz_loss(
            identity, images[shard], text[shard], SIGMA, 5, max_batch=max_batch, clamp=clamp, generator=shard_gens,
            reduction=reduction,
        )
        losses.append(loss if reduction == "published" else loss * size / 6)
        start += size
    assert torch.equal(torch.cat(parts_f, dim=1), full_f)
    assert torch.equal(torch.cat(parts_n, dim=1), full_n)
    whole = multimodal_lipschitz_loss(identity, images, text, SIGMA, 5, clamp=clamp, generator=gens(6), reduction=reduction)
    torch.testing.assert_close(sum(losses), whole, rtol=1e-12, atol=0)


def test_single_generator_noise_depends_on_the_split():
    """Contrast: one shared generator gives an image different noise in a different shard."""
    images = torch.randn(4, C, H, W_, generator=gen(0), dtype=torch.float64)
    full, _ = perturbed_features(identity, images, SIGMA, 2, clamp=False, generator=gen())
    second_half, _ = perturbed_features(identity, images[2:], SIGMA, 2, clamp=False, generator=gen())
    assert not torch.equal(full[:, 2:], second_half)


def test_draw_noise_per_image_generators():
    shape = torch.Size((3, C, H, W_))
    noise = draw_noise(shape, gens(), "cpu", torch.float32)
    for i, g in enumerate(gens()):
        assert torch.equal(noise[i], torch.randn(shape[1:], generator=g))
    assert torch.equal(draw_noise(shape, gen(), "cpu", torch.float32), torch.randn(shape, generator=gen()))


def test_chunked_matches_unchunked_on_a_clip_tower(tiny_clip):
    """Integration: the real tiny ViT, float32; conv/attention kernels may differ by batch size."""
    model = tiny_clip("tiny-vit").model
    images = torch.randn(3, 3, 32, 32, generator=gen(0))
    text = torch.randn(1, 64, generator=gen(1))
    with torch.no_grad():
        a = multimodal_lipschitz_loss(model.encode_image, images, text, 0.5, 5, max_batch=None, generator=gens())
        b = multimodal_lipschitz_loss(model.encode_image, images, text, 0.5, 5, max_batch=4, generator=gens())
    assert math.isfinite(float(a))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ gradients


def grads_of(loss_fn, images, weight, text, detach, **kw):
    w = weight.clone().requires_grad_(True)
    x = images.clone().requires_grad_(True)
    t = text.clone().requires_grad_(True)
    loss_fn(linear(w), x, t, detach, **kw).backward()
    return w.grad, x.grad, t.grad


@pytest.mark.parametrize("detach", [True, False])
def test_gradients_match_the_formula(data, detach):
    """Gradients w.r.t. the encoder weights, the images and the text features equal those of the
    direct formula in which the perturbed features are constants (detach) or not."""
    images, weight, text = data

    def ours(encode, x, t, detach):
        return multimodal_lipschitz_loss(encode, x, t, SIGMA, 3, detach_perturbed=detach, generator=gen())

    def direct(encode, x, t, detach):
        return direct_multimodal(encode, x, t, reference_noise(3, gen()), detach=detach)

    for g_ours, g_direct in zip(grads_of(ours, images, weight, text, detach), grads_of(direct, images, weight, text, detach)):
        assert g_ours is not None
        torch.testing.assert_close(g_ours, g_direct, rtol=1e-10, atol=1e-12)


def test_detached_perturbed_branch_gets_no_gradient(data):
    images, weight, text = data
    outputs = []

    def encode(x):
        out = x.flatten(1) @ weight_param
        outputs.append(out)
        return out

    for detach in (True, False):
        weight_param = weight.clone().requires_grad_(True)
        x = images.clone().requires_grad_(True)
        t = text.clone().requires_grad_(True)
        outputs.clear()
        loss = multimodal_lipschitz_loss(encode, x, t, SIGMA, 4, max_batch=5, detach_perturbed=detach, generator=gen())
        clean, perturbed = outputs[0], outputs[1:]
        assert clean.requires_grad  # gradient flows through the clean branch ...
        assert all(p.requires_grad != detach for p in perturbed)  # ... and the perturbed one iff not detached
        loss.backward()
        assert t.grad is not None and t.grad.abs().sum() > 0  # text features get a gradient
        assert x.grad is not None and weight_param.grad.abs().sum() > 0


def test_no_grad_mode_is_respected(data):
    """Under no_grad nothing needs a graph; with detach=False inside enable_grad the graph exists."""
    images, weight, text = data
    w = weight.clone().requires_grad_(True)
    with torch.no_grad():
        loss = multimodal_lipschitz_loss(linear(w), images, text, SIGMA, 2, detach_perturbed=False, generator=gen())
    assert not loss.requires_grad


def test_text_gradient_matches_analytic_form(data):
    """d/dt of mean_{n,b} ||t_b - f(x~)|| / ||eps|| is (t_b - f(x~)) / (||.|| ||eps|| N B), summed over n."""
    images, weight, text = data
    t = text.clone().requires_grad_(True)
    multimodal_lipschitz_loss(linear(weight), images, t, SIGMA, 3, generator=gen(), reduction="mean", noise_norm="drawn").backward()
    noise = reference_noise(3, gen())
    expected = torch.zeros_like(text)
    for n in range(3):
        for b in range(B):
            x = images[b : b + 1]
            fp = linear(weight)((x + noise[n, b : b + 1]).clamp(float(x.min()), float(x.max())))[0]
            diff = text[b] - fp
            expected[b] += diff / (norm(diff) * norm(noise[n, b]) * 3 * B)
    torch.testing.assert_close(t.grad, expected, rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"sigma": 0.0}, r"sigma.*0\.0"),
        ({"sigma": -1.0}, r"sigma.*-1\.0"),
        ({"sigma": float("nan")}, r"sigma.*nan"),
        ({"sigma": float("inf")}, r"sigma.*inf"),
        ({"num_perturbations": 0}, r"num_perturbations.*\b0\b"),
        ({"num_perturbations": -3}, r"num_perturbations.*-3"),
        ({"max_batch": 0}, r"max_batch.*\b0\b"),
        ({"max_batch": -2}, r"max_batch.*-2"),
        ({"generator": [torch.Generator(), torch.Generator()]}, r"\b2 generators.*\b3 images"),
        ({"noise_norm": "clamped"}, r"noise_norm must be one of 'applied', 'drawn', got 'clamped'"),
    ],
)
@pytest.mark.parametrize("fn", ["multimodal", "image", "embedding", "features"])
def test_bad_arguments_raise_value_error_naming_the_value(data, kwargs, pattern, fn):
    images, weight, text = data
    args = {"sigma": SIGMA, "num_perturbations": 2, **kwargs}
    encode = linear(weight)
    with pytest.raises(ConfigError, match=pattern):
        if fn == "multimodal":
            multimodal_lipschitz_loss(encode, images, text, **args)
        elif fn == "image":
            image_lipschitz_loss(encode, images, **args)
        elif fn == "embedding":
            embedding_loss(encode, images, text, **args)
        else:
            perturbed_features(encode, images, **args)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"reduction": "sum"}, r"reduction must be one of 'published', 'mean', got 'sum'"),
        ({"world_size": 0}, r"world_size must be an int >= 1, got 0"),
        ({"world_size": 2.0}, r"world_size must be an int >= 1, got 2\.0"),
    ],
)
@pytest.mark.parametrize("fn", ["multimodal", "image", "embedding"])
def test_bad_reduction_arguments(data, kwargs, pattern, fn):
    images, weight, text = data
    calls = []

    def encode(x):
        calls.append(len(x))
        return linear(weight)(x)

    with pytest.raises(ConfigError, match=pattern):
        if fn == "multimodal":
            multimodal_lipschitz_loss(encode, images, text, SIGMA, 2, **kwargs)
        elif fn == "image":
            image_lipschitz_loss(encode, images, SIGMA, 2, **kwargs)
        else:
            embedding_loss(encode, images, text, SIGMA, 2, **kwargs)
    assert not calls  # checked before any forward


# ------------------------------------------------------------------------------------ reduction


def test_published_reduction_is_b_times_the_one_image_loss(tiny_clip):
    """For B identical images, each with its own identically seeded noise generator, the default
    multimodal loss is B times the value for one image, to 1e-5 relative; with reduction='mean'
    it is 1 times."""
    model = tiny_clip("tiny-vit").model
    one = torch.randn(1, 3, 32, 32, generator=gen(0))
    text = torch.randn(1, 64, generator=gen(1))
    batch = 4
    same = [gen(7) for _ in range(batch)]
    with torch.no_grad():
        single = multimodal_lipschitz_loss(model.encode_image, one, text, 0.5, 5, generator=[gen(7)])
        many = multimodal_lipschitz_loss(model.encode_image, one.expand(batch, -1, -1, -1), text, 0.5, 5, generator=same)
        single_mean = multimodal_lipschitz_loss(model.encode_image, one, text, 0.5, 5, generator=[gen(7)], reduction="mean")
        many_mean = multimodal_lipschitz_loss(
            model.encode_image, one.expand(batch, -1, -1, -1), text, 0.5, 5, generator=[gen(7) for _ in range(batch)],
            reduction="mean",
        )
    torch.testing.assert_close(many, batch * single, rtol=1e-5, atol=0)
    torch.testing.assert_close(many_mean, single_mean, rtol=1e-5, atol=0)
    torch.testing.assert_close(single, single_mean / 4, rtol=1e-6, atol=0)  # one image: sum / 4N = mean / 4


@pytest.mark.parametrize("fn", ["multimodal", "image", "embedding"])
def test_world_size_scales_the_published_loss_only(data, fn):
    images, weight, text = data
    losses = {}
    for reduction in ("published", "mean"):
        for world in (1, 3):
            kw = dict(generator=gen(), reduction=reduction, world_size=world)
            if fn == "multimodal":
                losses[reduction, world] = multimodal_lipschitz_loss(linear(weight), images, text, SIGMA, 3, **kw)
            elif fn == "image":
                losses[reduction, world] = image_lipschitz_loss(linear(weight), images, SIGMA, 3, **kw)
            else:
                losses[reduction, world] = embedding_loss(linear(weight), images, text, SIGMA, 3, **kw)
    torch.testing.assert_close(losses["published", 3], 3 * losses["published", 1], rtol=1e-12, atol=0)
    assert torch.equal(losses["mean", 3], losses["mean", 1])


@pytest.mark.parametrize("splits", [[3, 3], [2, 4], [1, 2, 3]])
def test_ddp_averaged_gradient_equals_the_one_process_gradient(splits):
    """Each "rank" returns world_size * (its sum) / 4N for its shard; the mean of the ranks'
    gradients (what DDP applies) is the gradient of the published loss of the whole batch, even for
    unequal shards."""
    g = gen(0)
    images = torch.randn(6, C, H, W_, generator=g, dtype=torch.float64)
    weight = torch.randn(C * H * W_, D, generator=g, dtype=torch.float64)
    text = torch.randn(6, D, generator=g, dtype=torch.float64)

    def grad(rows, world_size):
        w = weight.clone().requires_grad_(True)
        shard_gens = [gen(100 + i) for i in rows]
        multimodal_lipschitz_loss(linear(w), images[rows], text[rows], SIGMA, 4, generator=shard_gens,
                                  world_size=world_size).backward()
        return w.grad

    whole = grad(list(range(6)), 1)
    starts = [sum(splits[:k]) for k in range(len(splits))]
    ranks = [grad(list(range(s, s + n)), len(splits)) for s, n in zip(starts, splits)]
    torch.testing.assert_close(sum(ranks) / len(splits), whole, rtol=1e-12, atol=1e-15)
