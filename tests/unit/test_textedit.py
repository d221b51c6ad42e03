"""The closed-form edit's pure functions (lightning_unlearn.textedit, promptbank) on tiny random models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_unlearn.core.errors import ConfigError, IllConditionedError, UnsupportedModelError
from lightning_unlearn.maths.promptbank import (
    composed_templates,
    fits_context,
    openai_templates,
    shared_templates,
    spread,
    unique_classes,
)
from lightning_unlearn.clip.feature_cache import (
    cached_pooled_features,
    feature_cache_path,
    text_tower_fingerprint,
)
from lightning_unlearn.clip.text_projection import (
    locate_text_projection,
    nullspace_project_image,
    nullspace_project_text,
    pooled_text_features,
)
from lightning_unlearn.maths.textedit import (
    class_basis,
    class_free_targets,
    forget_directions,
    null_space_basis,
    orthonormal_directions,
    retain_gram,
    solve_ridge_edit,
    weighted_gram,
)

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["a photo of a cat.", "a dog", "x", "a much longer prompt about a red car on a road"]


def _with_linear_projection(model: nn.Module, bias: bool = True) -> nn.Module:
    """A CLIP whose text projection is an nn.Linear (open_clip's proj_type 'linear')."""
    width, dim = model.text_projection.shape
    linear = nn.Linear(width, dim, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(model.text_projection.T)
        if bias:
            linear.bias.normal_()
    del model.text_projection  # a Parameter slot cannot take a module
    model.text_projection = linear
    return model


def _pre_projection_input(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The real input of an nn.Linear text projection, caught by a forward hook."""
    seen = []
    handle = model.text_projection.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    with torch.no_grad():
        model.encode_text(tokens)
    handle.remove()
    return seen[0]


# --- locating the projection ---------------------------------------------------------------------
def test_locates_clip_and_custom_text_clip_projections(tiny_clip):
    clip = locate_text_projection(tiny_clip("tiny-vit").model)
    assert (clip.kind, clip.name, clip.prefix, clip.in_features, clip.out_features) == (
        "parameter", "text_projection", "", 64, 64)
    custom = locate_text_projection(tiny_clip("tiny-custom").model)
    assert (custom.kind, custom.name, custom.prefix) == ("parameter", "text.text_projection", "text.")
    assert custom.parameter_names() == ["text.text_projection"]


def test_locates_a_linear_projection_with_bias(tiny_clip):
    model = _with_linear_projection(tiny_clip("tiny-vit", fresh=True).model)
    proj = locate_text_projection(model)
    assert proj.kind == "linear" and proj.has_bias and proj.matrix().shape == (65, 64)
    assert proj.parameter_names() == ["text_projection.weight", "text_projection.bias"]


@pytest.mark.parametrize(
    ("replacement", "shown"),
    [(nn.Identity(), "a Identity"), (nn.Sequential(nn.Linear(64, 64), nn.GELU()), "a Sequential"), (None, "None")],
)
def test_a_tower_without_linear_projection_is_refused(tiny_clip, replacement, shown):
    model = tiny_clip("tiny-vit", fresh=True).model
    del model.text_projection
    model.text_projection = replacement
    with pytest.raises(UnsupportedModelError, match=rf"no final linear projection: `text_projection` is {shown}"):
        locate_text_projection(model)


def test_a_model_without_text_tower_is_refused():
    with pytest.raises(UnsupportedModelError, match="Linear has no open_clip text tower"):
        locate_text_projection(nn.Linear(3, 3))


# --- capturing pooled features -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny-vit", "tiny-custom"])
def test_pooled_features_times_projection_are_the_embeddings(tiny_clip, name):
    clip = tiny_clip(name)
    proj = locate_text_projection(clip.model)
    tokens = clip.tokenizer(PROMPTS)
    features = pooled_text_features(clip.model, tokens, batch_size=3)
    with torch.no_grad():
        expected = clip.model.encode_text(tokens).double()
    assert torch.allclose(proj.augment(features) @ proj.matrix(), expected, atol=1e-5)


def test_functional_capture_equals_the_real_pre_projection_input(tiny_clip):
    clip = tiny_clip("tiny-vit", fresh=True)
    model = _with_linear_projection(clip.model)
    tokens = clip.tokenizer(PROMPTS)
    captured = pooled_text_features(model, tokens, batch_size=2)
    assert torch.allclose(captured, _pre_projection_input(model, tokens), atol=1e-6)
    # trimming each batch after its longest prompt changes nothing (causal tower pooled at EOT)
    assert torch.allclose(captured, pooled_text_features(model, tokens, trim=False), atol=1e-5)


def test_feature_cache_is_keyed_by_tower_and_prompts(tiny_clip, tmp_path):
    clip = tiny_clip("tiny-vit", fresh=True)
    first, hit = cached_pooled_features(clip.model, clip.tokenizer, PROMPTS, cache_dir=tmp_path)
    again, hit_again = cached_pooled_features(clip.model, clip.tokenizer, PROMPTS, cache_dir=tmp_path)
    assert (hit, hit_again) == (False, True) and torch.equal(first, again)
    assert feature_cache_path(clip.model, PROMPTS[:2], tmp_path) != feature_cache_path(clip.model, PROMPTS, tmp_path)
    # the projection is not part of the key (features do not depend on it); the tower's blocks are
    before = text_tower_fingerprint(clip.model)
    with torch.no_grad():
        clip.model.text_projection.mul_(2)
    assert text_tower_fingerprint(clip.model) == before
    with torch.no_grad():
        clip.model.ln_final.weight.mul_(2)
    assert text_tower_fingerprint(clip.model) != before
    # a truncated cache file is re-encoded, not trusted
    path = feature_cache_path(clip.model, PROMPTS, tmp_path)
    cached_pooled_features(clip.model, clip.tokenizer, PROMPTS, cache_dir=tmp_path)
    path.write_bytes(path.read_bytes()[:20])
    _, hit = cached_pooled_features(clip.model, clip.tokenizer, PROMPTS, cache_dir=tmp_path)
    assert not hit and not list(tmp_path.glob(".*.tmp"))


# --- the ridge solve -----------------------------------------------------------------------------
def _system(seed: int = 0, d: int = 6, out: int = 4, n_r: int = 40, n_f: int = 5):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(d, out, generator=g, dtype=torch.float64), torch.randn(n_r, d, generator=g, dtype=torch.float64),
            torch.randn(n_f, d, generator=g, dtype=torch.float64), torch.randn(n_f, out, generator=g, dtype=torch.float64),
            torch.rand(n_r, generator=g, dtype=torch.float64) + 0.1)


def test_solution_satisfies_the_normal_equations():
    P, R, F, Z, w = _system()
    lam, mu = 2.0, 0.05
    new = solve_ridge_edit(P, R, F, Z, lam=lam, mu=mu, retain_weights=w).matrix
    wn = w / w.sum()
    gram = R.T @ (wn[:, None] * R)
    s = torch.trace(gram) / P.shape[0]
    # gradient of the objective at the solution is zero
    grad = gram @ (new - P) + lam * F.T @ (F @ new - Z) / len(F) + mu * s * (new - P)
    assert grad.abs().max() < 1e-10


def test_lambda_zero_returns_the_projection():
    P, R, F, Z, _ = _system()
    assert torch.equal(solve_ridge_edit(P, R, F, Z, lam=0.0, mu=1e-3).matrix, P)


def test_restricted_solution_lies_in_the_directions_and_is_optimal_there():
    P, R, F, Z, w = _system(seed=1)
    U = torch.linalg.qr(torch.randn(6, 2, dtype=torch.float64))[0]
    new = solve_ridge_edit(P, R, F, Z, lam=1.0, mu=1e-2, retain_weights=w, directions=U).matrix
    delta = new - P
    assert torch.allclose(U @ (U.T @ delta), delta, atol=1e-12)  # the change reads only U
    wn = w / w.sum()
    gram = R.T @ (wn[:, None] * R)
    grad = gram @ delta + F.T @ (F @ new - Z) / len(F) + 1e-2 * torch.trace(gram) / 6 * delta
    assert (U.T @ grad).abs().max() < 1e-10  # no better change within span(U)


def test_empty_retain_set_is_refused():
    P, _, F, Z, _ = _system()
    with pytest.raises(ConfigError, match="the retain set is empty"):
        solve_ridge_edit(P, torch.zeros(0, 6, dtype=torch.float64), F, Z)


def test_non_finite_inputs_are_named():
    P, R, F, Z, _ = _system()
    R[3, 2] = float("nan")
    with pytest.raises(IllConditionedError, match="not finite: the retain features holds 1 NaN/inf"):
        solve_ridge_edit(P, R, F, Z)


def test_singular_system_suggests_mu():
    P, R, F, Z, _ = _system()
    R[:, 0] = 0.0  # no retain prompt has energy in coordinate 0, and the forget rows do not fill it
    F[:, 0] = 0.0
    with pytest.raises(IllConditionedError, match=r"singular .* span about 5 of 6 dimensions with mu=0.0; set mu > 0"):
        solve_ridge_edit(P, R, F, Z, mu=0.0)
    solve_ridge_edit(P, R, F, Z, mu=1e-3)  # and mu > 0 solves it


def test_forget_directions_find_what_only_the_forget_rows_have():
    g = torch.Generator().manual_seed(0)
    R = torch.randn(200, 5, generator=g, dtype=torch.float64)
    R[:, 3] *= 1e-3  # the retain prompts hardly use coordinate 3
    F = torch.randn(20, 5, generator=g, dtype=torch.float64)
    F[:, 3] += 10.0
    U = forget_directions(R, [F], per_class=1, mu=1e-6)
    assert U.shape == (5, 1) and abs(float(U[3, 0])) > 0.999
    both = forget_directions(R, [F, F[:, [1, 0, 2, 3, 4]]], per_class=2, mu=1e-6)
    assert both.shape == (5, 4) and torch.allclose(both.T @ both, torch.eye(4, dtype=torch.float64), atol=1e-10)


def test_weighted_gram_normalises_weights():
    R = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(weighted_gram(R, torch.tensor([2.0, 1.0, 1.0])), torch.diag(torch.tensor([0.5, 0.25, 0.25],
                                                                                                  dtype=torch.float64)))


def test_retain_gram_relative_term_ignores_a_move_shared_by_a_group():
    g = torch.Generator().manual_seed(0)
    R = torch.randn(12, 5, generator=g, dtype=torch.float64)
    w = torch.rand(12, generator=g, dtype=torch.float64) + 0.1
    groups = torch.tensor([0] * 4 + [1] * 5 + [2] * 3)
    assert torch.equal(retain_gram(R, w), weighted_gram(R, w))
    assert torch.equal(retain_gram(R, w, groups, relative_weight=0.0), weighted_gram(R, w))
    relative = retain_gram(R, w, groups, relative_weight=1.0) - weighted_gram(R, w)
    shifted = R + torch.randn(3, 5, generator=g, dtype=torch.float64)[groups]  # one offset per group
    assert torch.allclose(retain_gram(shifted, w, groups, 1.0) - weighted_gram(shifted, w), relative, atol=1e-12)
    # by hand: the weighted deviations from each group's weighted mean
    wn = w / w.sum()
    manual = torch.zeros(5, 5, dtype=torch.float64)
    for k in range(3):
        m = groups == k
        mean = (wn[m, None] * R[m]).sum(0) / wn[m].sum()
        manual += (R[m] - mean).T @ (wn[m, None] * (R[m] - mean))
    assert torch.allclose(relative, manual, atol=1e-12)
    assert torch.allclose(retain_gram(R, w, groups, 2.5) - weighted_gram(R, w), 2.5 * manual, atol=1e-12)


def test_retain_gram_needs_matching_groups():
    R = torch.randn(6, 3, dtype=torch.float64)
    with pytest.raises(ConfigError, match="relative_weight > 0 needs retain groups"):
        retain_gram(R, None, None, relative_weight=1.0)
    with pytest.raises(ConfigError, match=r"retain groups must be 6 integer ids, got \(5,\)"):
        retain_gram(R, None, torch.zeros(5, dtype=torch.long), relative_weight=1.0)
    with pytest.raises(ConfigError, match="relative_weight must be a finite number >= 0, got -1"):
        retain_gram(R, None, torch.zeros(6, dtype=torch.long), relative_weight=-1.0)


def test_relative_solution_satisfies_its_normal_equations_and_keeps_class_order_better():
    P, R, F, Z, w = _system(seed=3, n_r=40)
    groups = torch.arange(40) // 8  # 5 "templates" of 8 "classes"
    lam, mu, c = 1.0, 1e-2, 3.0
    new = solve_ridge_edit(P, R, F, Z, lam=lam, mu=mu, retain_weights=w, retain_groups=groups, relative_weight=c).matrix
    gram = retain_gram(R, w, groups, c)
    grad = gram @ (new - P) + lam * F.T @ (F @ new - Z) / len(F) + mu * torch.trace(gram) / 6 * (new - P)
    assert grad.abs().max() < 1e-10
    plain = solve_ridge_edit(P, R, F, Z, lam=lam, mu=mu, retain_weights=w).matrix

    def relative_move(matrix):  # how far the retain rows move apart from their group's mean move
        move = R @ (matrix - P)
        return sum(float((move[groups == k] - move[groups == k].mean(0)).pow(2).sum()) for k in range(5))

    assert relative_move(new) < relative_move(plain)


def test_null_space_basis_is_orthonormal_and_annihilated_by_the_rows():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(3, 7, generator=g, dtype=torch.float64)
    rows = torch.cat([rows, rows[:1] + rows[1:2]])  # rank 3 with 4 rows
    basis = null_space_basis(rows)
    assert basis.shape == (7, 4)
    assert torch.allclose(basis.T @ basis, torch.eye(4, dtype=torch.float64), atol=1e-12)
    assert (rows @ basis).abs().max() < 1e-12
    assert torch.equal(null_space_basis(torch.zeros(0, 5, dtype=torch.float64)), torch.eye(5, dtype=torch.float64))


def test_shared_templates_start_with_the_evaluation_template_and_fill_from_the_bank():
    own = ["a photo of a {}.", "a drawing of a {}.", "a {}."]
    bank = ["a photo of a {}.", "b {}", "c {}", "d {}", "e {}", "f {}", "g {}", "h {}"]
    got = shared_templates(own, bank, 8)
    assert got[0] == own[0] and len(got) == len(set(got)) == 8
    assert got[:3] == own and set(got[3:]) <= set(bank[1:])  # few own templates: the bank fills the rest
    many = [f"own {k} {{}}" for k in range(10)]
    got = shared_templates(many, bank, 8)
    assert got[:4] == many[:4] and len(got) == 8 and set(got[4:]) <= set(bank)  # half own, half bank
    assert shared_templates(own, bank, 1) == own[:1]
    assert spread(list("abcdefgh"), 4) == ["a", "c", "e", "g"] and spread(list("ab"), 5) == ["a", "b"]


def test_class_free_targets_carry_no_class_content():
    g = torch.Generator().manual_seed(0)
    classes = torch.randn(3, 8, generator=g, dtype=torch.float64)
    originals = torch.randn(4, 8, generator=g, dtype=torch.float64)
    neutrals = torch.randn(4, 8, generator=g, dtype=torch.float64)
    basis = class_basis(classes, max_dim=8)
    targets = class_free_targets(originals, neutrals, basis)
    assert (targets @ basis).abs().max() < 1e-12
    assert (targets * originals).sum(-1).abs().max() < 1e-10
    assert torch.allclose(targets.norm(dim=-1), originals.norm(dim=-1))
    with pytest.raises(IllConditionedError, match="lies in the span of the class embeddings"):
        class_free_targets(originals, classes[:1].expand(4, -1), basis)


# --- writing the edit back --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["parameter", "linear"])
def test_write_makes_encode_text_use_the_new_matrix(tiny_clip, kind):
    clip = tiny_clip("tiny-vit", fresh=True)
    model = _with_linear_projection(clip.model) if kind == "linear" else clip.model
    proj = locate_text_projection(model)
    tokens = clip.tokenizer(PROMPTS)
    features = proj.augment(pooled_text_features(model, tokens))
    new = proj.matrix() + 0.1 * torch.randn_like(proj.matrix())
    proj.write(new)
    with torch.no_grad():
        assert torch.allclose(model.encode_text(tokens).double(), features @ new, atol=1e-5)
    with pytest.raises(ConfigError, match=r"new projection must have shape \(65, 64\)|\(64, 64\)"):
        proj.write(new[:-2])


# --- null-space projection ----------------------------------------------------------------------------
def test_nullspace_text_side_removes_the_directions(tiny_clip):
    clip = tiny_clip("tiny-vit", fresh=True)
    tokens = clip.tokenizer(["a photo of a dog.", "a dog", "a photo of a cat."])
    with torch.no_grad():
        dog = clip.model.encode_text(tokens[:2])
    basis = orthonormal_directions([dog], per_class=1)
    nullspace_project_text(clip.model, basis, alpha=1.0)
    with torch.no_grad():
        after = clip.model.encode_text(tokens).double()
    assert (after @ basis).abs().max() < 1e-4
    with pytest.raises(ConfigError, match=r"alpha must be a number in \[0, 1\], got 1.5"):
        nullspace_project_text(clip.model, basis, alpha=1.5)


@pytest.mark.parametrize("name", ["tiny-rn", "tiny-vit"])
def test_nullspace_image_side_removes_the_directions(tiny_clip, name):
    clip = tiny_clip(name, fresh=True)
    basis = orthonormal_directions([torch.randn(3, 64)], per_class=2)
    nullspace_project_image(clip.model, basis, alpha=1.0)
    with torch.no_grad():
        images = clip.model.encode_image(torch.randn(4, 3, 32, 32)).double()
    assert (images @ basis).abs().max() < 1e-4 * images.abs().max()


def test_nullspace_image_side_needs_a_final_projection(tiny_clip):
    model = tiny_clip("tiny-vit", fresh=True).model
    model.visual.proj = None
    with pytest.raises(UnsupportedModelError, match=r"`visual.proj` \(nn.Parameter\).*`visual.attnpool.c_proj`"):
        nullspace_project_image(model, torch.eye(64, 1, dtype=torch.float64))


# --- prompt banks ----------------------------------------------------------------------------------------
def test_composed_templates_are_deterministic_and_new():
    base = openai_templates()
    made = composed_templates(base, 30, seed=3)
    assert made == composed_templates(base, 30, seed=3) != composed_templates(base, 30, seed=4)
    assert len(made) == 30 and all(t.count("{}") == 1 and t not in base for t in made)


def test_prompts_that_do_not_fit_the_context_are_flagged(tiny_clip):
    tokenizer = tiny_clip("tiny-vit").tokenizer  # context of 16 tokens
    assert fits_context(tokenizer, ["a photo of a dog.", " ".join(["word"] * 20)]) == [True, False]


def test_generic_classes_containing_a_forgotten_name_are_dropped():
    names = ["beer bottle", "bottle", "bottlenose", "cat", "Cat"]
    assert unique_classes(names, ["bottle"], exclude_words=True) == ["bottlenose", "cat"]
    assert unique_classes(names, ["bottle"]) == ["beer bottle", "bottlenose", "cat"]


# --- paraphrases in the forget bank ----------------------------------------------------------
def test_the_paraphrase_split_is_deterministic_disjoint_and_order_free():
    from lightning_unlearn.maths.textedit import split_paraphrases

    texts = [f"paraphrase {k}." for k in range(7)]
    bank, held = split_paraphrases(texts, 3, seed=0, key="kite")
    assert len(bank) == 4 and len(held) == 3 and not set(bank) & set(held) and set(bank) | set(held) == set(texts)
    assert bank == [t for t in texts if t in bank]  # the file's order is kept
    assert split_paraphrases(texts[::-1], 3, seed=0, key="kite")[1] == held[::-1]  # same texts, whatever the order
    assert split_paraphrases(texts + texts[:2], 3, seed=0, key="kite") == (bank, held)  # repeats count once
    # another seed or class draws another split (among 35 possible ones)
    assert {tuple(split_paraphrases(texts, 3, seed=s, key="kite")[1]) for s in range(6)} != {tuple(held)}
    assert split_paraphrases(texts, 0) == (texts, [])
    with pytest.raises(ConfigError, match=r"held_out=7 paraphrases of 'kite' leave none of its 7 for the forget bank"):
        split_paraphrases(texts, 7, key="kite")
    with pytest.raises(ConfigError, match=r"held_out must be an int >= 0, got -1"):
        split_paraphrases(texts, -1)


def test_share_weights_give_each_class_the_same_mass_and_its_paraphrases_their_share():
    from lightning_unlearn.maths.textedit import share_weights

    # class 0: rows 0-3 (templates) and 4-5 (paraphrases); class 1: rows 6-7, no paraphrase
    w = share_weights([[0, 1, 2, 3], [6, 7]], [[4, 5], []], 0.4, 8)
    assert torch.isclose(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.isclose(w[:6].sum(), torch.tensor(0.5, dtype=torch.float64))
    assert torch.isclose(w[4:6].sum(), torch.tensor(0.2, dtype=torch.float64)) and w[4] == w[5]
    assert torch.allclose(w[6:], torch.full((2,), 0.25, dtype=torch.float64))
    with pytest.raises(ConfigError, match=r"cover each of the 8 rows exactly once"):
        share_weights([[0, 1, 2, 3], [6]], [[4, 5], []], 0.4, 8)
    with pytest.raises(ConfigError, match=r"share must be a number in \[0, 1\), got 1.0"):
        share_weights([[0]], [[1]], 1.0, 2)
