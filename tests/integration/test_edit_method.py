"""The training-free methods `edit` (TextProjectionEdit) and `nullspace` (NullSpaceProjection) on
tiny random-init open_clip models: apply outside a Trainer, bad input before any weight changes,
and `lightning-unlearn fit` end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import open_clip
import pytest
import torch
import yaml
from torch import nn

from lightning_unlearn import UnlearningModule
from lightning_unlearn.cli import main
from lightning_unlearn.core.errors import ConfigError, IllConditionedError, UnsupportedModelError
from lightning_unlearn.methods import NullSpaceProjection, TextProjectionEdit
from lightning_unlearn.methods.edit import build_edit_problem, solve_edit
from lightning_unlearn.clip.text_projection import locate_text_projection, pooled_text_features
from lightning_unlearn.maths.textedit import cosine_rows

from fake_datasets import make_image_folder, training_free_fit_config

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB = ["cat", "dog", "car", "tree", "boat", "house", "bird", "chair"]
# small banks keep the tiny tests fast; the defaults are measured in docs/edit.md
FAST = dict(composed_templates=4, generic_vocabulary=["apple", "river", "mountain", "piano"], retain_templates_per_class=4)


def edit_module(name: str = "tiny-vit", forget: Any = ("dog",), vocabulary: Any = VOCAB, **method: Any) -> UnlearningModule:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # random-init weights: the same in every run
        module = UnlearningModule(model_name=name, pretrained=None, forget_classes=list(forget),
                                  vocabulary=list(vocabulary), method=TextProjectionEdit(**{**FAST, **method}))
    module.resolve_spec({})
    return module


def state(module: UnlearningModule) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.model.state_dict().items()}


def unchanged(module: UnlearningModule, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in module.model.state_dict().items())


def embed(module: UnlearningModule, prompts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return module.model.encode_text(module.tokenizer(prompts)).double()


# --- arguments ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lam": 0.0}, "lam must be a finite number > 0, got 0.0"),
        ({"mu": -1.0}, "mu must be a finite number >= 0, got -1.0"),
        ({"rank_per_class": 0}, "rank_per_class must be an int >= 1 or None, got 0"),
        ({"relative_weight": -1.0}, "relative_weight must be a finite number >= 0, got -1.0"),
        ({"exact_other_domains": "yes"}, "exact_other_domains must be true or false, got 'yes'"),
        ({"target": "zero"}, "target must be one of 'class_free', 'neutral', 'fixed', got 'zero'"),
        ({"neutral": "a {}"}, r"neutral must be a non-empty word or phrase without '\{\}', got 'a \{\}'"),
        ({"templates": ["no placeholder"]}, r"each of templates must be a string with exactly one '\{\}'"),
        ({"generic_vocabulary": "wordnet"}, "generic_vocabulary must be 'imagenet', a list of class names or None"),
        ({"evaluation_prompt_weight": 0.7, "generic_weight": 0.3}, r"must be < 1 .* got 0.7 \+ 0.3"),
        ({"evaluation_prompt_weight": 1.0}, r"evaluation_prompt_weight must be a number in \[0, 1\), got 1.0"),
    ],
)
def test_bad_edit_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TextProjectionEdit(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"alpha": 2.0}, r"alpha must be a number in \[0, 1\], got 2.0"),
     ({"side": "both"}, "side must be one of 'text', 'image', got 'both'"),
     ({"directions_per_class": 0}, "directions_per_class must be an int >= 1, got 0")],
)
def test_bad_nullspace_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        NullSpaceProjection(**kwargs)


# --- apply -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "forget"), [("tiny-vit", ("dog",)), ("tiny-custom", ("dog", "boat"))])
def test_edit_writes_the_solution_into_the_text_projection_only(name, forget):
    module = edit_module(name, forget)
    before = state(module)
    method = module.method
    problem = build_edit_problem(module.model, module.tokenizer, module.spec.names, module.spec.prompts,
                                 [module.spec.vocabulary], method.settings(), module.hparams.forget_prompt)
    expected = solve_edit(problem, method.lam, method.mu, method.rank_per_class, method.relative_weight,
                          method.exact_other_domains).matrix
    report = method.apply(module)
    proj = locate_text_projection(module.model)
    assert torch.allclose(proj.matrix(), expected, atol=1e-6)
    changed = [k for k, v in module.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == proj.parameter_names()
    assert report["projection"] == proj.name and report["rank_per_class"] == 2 and report["relative_weight"] == 1.0
    assert report["forget_prompts"] == len(problem.forget) > len(forget)
    assert report["retain_prompts"] == sum(report["retain_groups"].values()) == len(problem.retain)
    assert report["vocabularies"] == {"forget": None, "retained": ["vocabulary"], "generic": "4 classes"}
    assert 0 <= report["retain_shift"]["mean_1_minus_cos"] <= report["retain_shift"]["max_1_minus_cos"]
    assert 0 < method.timings["edit"] < 1.0 and method.timings["edit_encode"] > 0


def test_every_retained_class_is_encoded_under_the_same_templates():
    # the class-relative retain term compares classes template by template
    module = edit_module(forget=("dog", "boat"))
    problem = build_edit_problem(module.model, module.tokenizer, module.spec.names, module.spec.prompts,
                                 [module.spec.vocabulary], module.method.settings(), module.hparams.forget_prompt)
    groups = problem.retain_template_groups
    assert groups is not None and len(groups) == len(problem.retain)
    n_dataset = problem.retain_groups["evaluation_prompts"] + problem.retain_groups["other_templates"]
    sizes = torch.bincount(groups[:n_dataset])
    assert torch.all(sizes == len(VOCAB) - 2) and len(sizes) == 4  # 6 kept classes x retain_templates_per_class
    assert int(groups[n_dataset:].min()) >= len(sizes)  # generic rows have groups of their own
    weights = problem.retain_weights[: problem.retain_groups["evaluation_prompts"]]
    assert torch.isclose(weights.sum(), torch.tensor(0.5, dtype=torch.float64))  # the evaluation share


def test_other_domains_evaluation_prompts_are_kept_exactly():
    from lightning_unlearn.maths.forget_spec import Vocabulary

    module = edit_module()
    other = Vocabulary(("red", "green", "blue"), ("a {} colour.", "the colour {}."), "colours")
    vocabularies = [module.spec.vocabulary, other]
    other_prompts = ["a red colour.", "a green colour.", "a blue colour."]
    before_other, before_dog = embed(module, other_prompts), embed(module, ["a photo of a dog."])
    problem = build_edit_problem(module.model, module.tokenizer, module.spec.names, module.spec.prompts, vocabularies,
                                 module.method.settings(), module.hparams.forget_prompt)
    assert problem.other_domain_rows is not None and len(problem.other_domain_rows) == 3
    solution = solve_edit(problem, 1.0, 1e-3, 2)
    assert solution.exact == {"rows": 3, "free_dimensions": problem.retain.shape[1] - 3, "skipped": None}
    proj = locate_text_projection(module.model)
    proj.write(solution.matrix)
    assert torch.allclose(embed(module, other_prompts), before_other, atol=1e-5)  # not one decision can change
    # while the forget prompts moved towards their targets (a random tower moves them only a little)
    assert 1 - cosine_rows(embed(module, ["a photo of a dog."]), before_dog).item() > 1e-3
    toward = cosine_rows(problem.forget @ solution.matrix, problem.targets).mean()
    assert toward > cosine_rows(problem.forget @ problem.P, problem.targets).mean() + 0.05
    # without it, the other domain's prompts move too
    loose = solve_edit(problem, 1.0, 1e-3, 2, exact_other_domains=False)
    assert loose.exact["skipped"] == "off"
    moved = problem.retain[problem.other_domain_rows] @ (loose.matrix - problem.P)
    assert moved.abs().max() > 1e-4


def test_exact_other_domains_is_skipped_when_it_would_leave_too_little_room():
    from lightning_unlearn.maths.forget_spec import Vocabulary

    module = edit_module()
    width = locate_text_projection(module.model).in_features
    many = Vocabulary(tuple(f"thing{k}" for k in range(width)), ("a {}.",), "many")
    problem = build_edit_problem(module.model, module.tokenizer, module.spec.names, module.spec.prompts,
                                 [module.spec.vocabulary, many], module.method.settings(), module.hparams.forget_prompt)
    solution = solve_edit(problem, 1.0, 1e-3, 2)
    assert solution.exact["skipped"].startswith(f"{width} prompts leave") and torch.isfinite(solution.matrix).all()


def test_full_ridge_moves_forget_prompts_more_than_the_others():
    # a random tower separates classes weakly: the unrestricted solve with a strong forget term
    module = edit_module(rank_per_class=None, lam=10.0)
    keep = [f"a photo of a {c}." for c in VOCAB if c != "dog"]
    before_forget, before_keep = embed(module, ["a photo of a dog."]), embed(module, keep)
    report = module.method.apply(module)
    moved = cosine_rows(embed(module, ["a photo of a dog."]), before_forget)
    kept = cosine_rows(embed(module, keep), before_keep)
    assert moved.max() < 0.6 and kept.mean() > 0.85
    assert report["forget_cosine_to_original"]["mean"] < 0.6
    assert report["retain_shift"]["mean_1_minus_cos"] < 1 - report["forget_cosine_to_original"]["mean"]


def test_edit_on_a_linear_projection_with_bias(tiny_clip):
    module = edit_module(rank_per_class=1)
    proj = module.model.text_projection
    width, dim = proj.shape
    linear = nn.Linear(width, dim)
    with torch.no_grad():
        linear.weight.copy_(proj.T)
    del module.model.text_projection
    module.model.text_projection = linear
    before = linear.bias.detach().clone()
    report = module.method.apply(module)
    assert report["projection"] == "text_projection" and not torch.equal(linear.bias, before)
    assert report["forget_cosine_to_original"]["mean"] < 0.9


def test_unsupported_text_tower_fails_before_any_change():
    module = edit_module()
    del module.model.text_projection
    module.model.text_projection = nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 64))
    before = state(module)
    with pytest.raises(UnsupportedModelError, match="no final linear projection: `text_projection` is a Sequential"):
        module.method.apply(module)
    assert unchanged(module, before)


@pytest.mark.parametrize(
    ("forget", "error", "message"),
    [(["dgo"], "UnknownNameError", r"unknown class 'dgo' in the vocabulary; close matches: 'dog'"),
     (VOCAB, "ConfigError", r"would forget every class of the vocabulary")],
)
def test_bad_classes_fail_in_the_spec_before_the_edit(forget, error, message):
    from lightning_unlearn.core import errors

    with pytest.raises(getattr(errors, error), match=message):
        edit_module(forget=forget)


def test_empty_retain_set_fails_before_any_change():
    # the other class is the same class spelled differently: nothing is left to retain
    module = edit_module(vocabulary=["dog", "Dog"], generic_vocabulary=None)
    before = state(module)
    with pytest.raises(ConfigError, match="the retain set is empty"):
        module.method.apply(module)
    assert unchanged(module, before)


def test_singular_system_fails_before_any_change_and_names_mu():
    # 7 classes x 4 prompts and 4 generic ones do not span the 64-wide pooled space: mu = 0 is singular
    module = edit_module(mu=0.0, rank_per_class=None, generic_vocabulary=None)
    before = state(module)
    with pytest.raises(IllConditionedError, match=r"(singular|ill-conditioned).*with mu=0.0; set mu > 0"):
        module.method.apply(module)
    assert unchanged(module, before)


def test_non_finite_weights_fail_before_any_change():
    module = edit_module()
    with torch.no_grad():
        module.model.ln_final.weight[0] = float("nan")
    before = state(module)
    with pytest.raises(IllConditionedError, match="not finite: the retain features holds"):
        module.method.apply(module)
    assert all(torch.equal(v, before[k]) or torch.isnan(v).any() for k, v in module.model.state_dict().items())
    assert torch.equal(module.model.text_projection, before["text_projection"])


# --- paraphrases in the forget bank -------------------------------------------------------------------
DOG_WORDS = ["a loyal hound on a lead.", "a barking pet that fetches sticks.", "a puppy wagging its tail.",
             "man's best friend.", "a four-legged pet that guards the home.", "a furry companion that barks."]


def test_paraphrases_in_the_bank_become_forget_rows_and_the_held_out_ones_never_do():
    module = edit_module(forget=("dog", "boat"), paraphrases={"Dog": DOG_WORDS, "boat": ["a small sailing vessel.",
                                                                                       "a rowing craft."]},
                         held_out_paraphrases=1)
    method = module.method
    method.setup(module)
    bank = method.paraphrases_in_bank()
    held = {name: h for name, (_, h) in method.paraphrase_split(module.spec.names).items()}
    assert len(bank["dog"]) == 5 and len(held["dog"]) == 1 and len(bank["boat"]) == 1
    problem = build_edit_problem(module.model, module.tokenizer, module.spec.names, module.spec.prompts,
                                 [module.spec.vocabulary], method.settings(), module.hparams.forget_prompt)
    assert [len(g) for g in problem.paraphrase_groups] == [5, 1]
    rows = [i for g in problem.paraphrase_groups for i in g]
    assert not set(rows) & {i for g in problem.forget_groups for i in g}
    # each class weighs the same; within it, its paraphrases hold paraphrase_weight (0.5)
    w = problem.forget_weights
    assert w is not None and torch.isclose(w[problem.paraphrase_groups[0]].sum(), torch.tensor(0.25, dtype=torch.float64))
    # the held-out paraphrase is in no row: its features match none of the forget rows
    unseen = locate_text_projection(module.model).augment(pooled_text_features(module.model, module.tokenizer(held["dog"])))
    assert torch.cdist(unseen.double(), problem.forget.double()).min() > 1e-4
    report = method.apply(module)
    assert report["paraphrases"]["forget_rows"] == 6 and report["paraphrases"]["held_out"] == held
    assert report["paraphrases"]["in_bank"] == bank
    # the evaluation reads the same bank from the module
    from lightning_unlearn.evaluation.suite import EvaluationRunner, EvaluationSuite

    assert EvaluationRunner(EvaluationSuite(), module).paraphrase_bank() == bank


def test_paraphrases_in_the_bank_are_moved_and_without_them_they_are_not():
    with_bank = edit_module(paraphrases={"dog": DOG_WORDS}, held_out_paraphrases=2, paraphrase_weight=0.6)
    without = edit_module()
    seen = with_bank.method.paraphrase_split(["dog"])["dog"][0]
    keep = [f"a photo of a {c}." for c in VOCAB if c != "dog"]
    moved = {}
    for name, module in (("bank", with_bank), ("word", without)):
        before, before_keep = embed(module, seen), embed(module, keep)
        module.method.setup(module)
        module.method.apply(module)
        moved[name] = 1 - cosine_rows(embed(module, seen), before).mean().item()
        assert cosine_rows(embed(module, keep), before_keep).mean() > 0.9  # the others stay
    assert moved["bank"] > 0.05 and moved["bank"] > 3 * moved["word"]


@pytest.mark.usefixtures("tiny_hf_models")
def test_paraphrases_in_the_bank_on_a_hugging_face_tower_and_a_cut_one_is_dropped():
    # tiny-hf: a random BERT tower behind the packaged MiniLM tokenizer, 16 tokens of context
    long = "a very large and extremely friendly four-legged domestic animal that barks loudly at every visitor."
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = UnlearningModule(model_name="tiny-hf", pretrained=None, forget_classes=["dog"], vocabulary=VOCAB,
                                  method=TextProjectionEdit(**FAST, paraphrases={"dog": DOG_WORDS[:4] + [long]},
                                                            held_out_paraphrases=1))
    module.resolve_spec({})
    method = module.method
    method.setup(module)
    bank = method.paraphrases_in_bank()["dog"]
    problem = build_edit_problem(module.model, module.tokenizer, module.spec.names, module.spec.prompts,
                                 [module.spec.vocabulary], method.settings(), module.hparams.forget_prompt)
    assert long in bank and len(problem.paraphrase_groups[0]) == len(bank) - 1  # a cut prompt may have lost its meaning
    seen = [t for t in bank if t != long]
    before = embed(module, seen)
    report = method.apply(module)
    assert report["projection"] == "text.proj" and report["paraphrases"]["forget_rows"] == len(seen)
    assert 1 - cosine_rows(embed(module, seen), before).mean() > 0.05


def test_paraphrase_settings_are_checked_before_any_change(tmp_path):
    with pytest.raises(ConfigError, match=r"held_out_paraphrases must be an int >= 0, got -1"):
        TextProjectionEdit(paraphrases={"dog": DOG_WORDS}, held_out_paraphrases=-1)
    with pytest.raises(ConfigError, match=r"paraphrase_weight must be a number in \[0, 1\), got 1.0"):
        TextProjectionEdit(paraphrase_weight=1.0)
    bad = tmp_path / "p.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        TextProjectionEdit(paraphrases=str(bad))
    module = edit_module(paraphrases={"cat": DOG_WORDS})
    before = state(module)
    with pytest.raises(ConfigError, match=r"the edit's paraphrases has no descriptions of the forgotten class 'dog'"):
        module.method.apply(module)
    module = edit_module(paraphrases={"dog": DOG_WORDS[:3]}, held_out_paraphrases=3)
    with pytest.raises(ConfigError, match=r"held_out=3 paraphrases of 'dog' leave none of its 3"):
        module.method.setup(module)
    assert unchanged(module, before)


@pytest.mark.parametrize(("name", "side"), [("tiny-rn", "image"), ("tiny-vit", "image"), ("tiny-custom", "text")])
def test_nullspace_projects_the_target_out(name, side):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = UnlearningModule(model_name=name, pretrained=None, forget_classes=["dog"], vocabulary=VOCAB,
                                  method=NullSpaceProjection(side=side))
    module.resolve_spec({})
    target = embed(module, [t.format("dog") for t in module.spec.vocabulary.templates])
    report = module.method.apply(module)
    assert report["side"] == side and report["directions"] == 1 and "edit" in module.method.timings
    direction = torch.nn.functional.normalize(target.mean(0), dim=0)
    if side == "text":
        assert embed(module, ["a photo of a dog."]) @ direction == pytest.approx(0.0, abs=1e-4)
    else:
        with torch.no_grad():
            images = module.model.encode_image(torch.randn(3, 3, 32, 32)).double()
        assert (images @ direction).abs().max() < 1e-4


# --- fit end to end ----------------------------------------------------------------------------------
def _image_folder(root: Path, classes: list[str], per_class: int = 2) -> Path:
    return make_image_folder(root, classes, per_class, colour=lambda c, i: ((30 * c + 20 * i) % 255, 80, 160))


def test_fit_edit_writes_report_and_an_open_clip_export(tmp_path, tiny_clip):
    source = tmp_path / "tiny.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tiny_clip("tiny-vit").model.state_dict().items()}, str(source))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    data = _image_folder(tmp_path / "pets", VOCAB)
    config = training_free_fit_config("tiny-vit", str(source), "TextProjectionEdit", FAST, data, tmp_path / "runs")
    path = tmp_path / "edit.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = main(["fit", "--config", str(path), "--model.init_args.forget_classes", "[cat]"])
    out = Path(cli.trainer.log_dir)
    report = json.loads((out / "report.json").read_text())
    assert report["classes"] == ["cat"] and report["method"]["name"] == "edit"
    assert report["optimizer_steps"] == 0 and report["stop_reason"] == "training_free"
    assert report["edit"]["vocabularies"]["forget"] == "image_folder" and "edit" in report["timings"]
    assert report["timings"]["edit"] == pytest.approx(cli.model.method.timings["edit"], abs=1e-6)
    exported, _, _ = open_clip.create_model_and_transforms("tiny-vit", pretrained=str(out / "unlearned.safetensors"))
    for (name, a), (_, b) in zip(exported.state_dict().items(), cli.model.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert not torch.equal(exported.text_projection, tiny_clip("tiny-vit").model.text_projection)
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest  # the input checkpoint is untouched
    tokens = cli.model.tokenizer(["a photo of a cat."])
    assert pooled_text_features(exported, tokens).shape == (1, 64)


def test_packaged_edit_configs_parse(capsys):
    from lightning_unlearn.cli import packaged_configs

    names = [n for n in packaged_configs() if n.endswith("_edit")]
    assert {"demo_edit", "rn50_caltech101_edit", "vit_b16_stanford_dogs_edit"} <= set(names) and len(names) == 9
    for name in names:
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", name, "--print_config"])
        assert exit_info.value.code == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["model"]["init_args"]["method"]["class_path"] == "lightning_unlearn.methods.TextProjectionEdit"
        assert printed["data"]["class_path"] == "lightning_unlearn.datamodules.EvaluationDataModule"
