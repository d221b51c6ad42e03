"""`deep` (DeepEdit): the text edit plus a LEACE-style erasure in the image projection, on tiny
random-init open_clip models: what changes, the erasure's defining property, arguments, and
`lightning-unlearn fit` with an open_clip export."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import open_clip
import pytest
import torch
import yaml

from lightning_unlearn import UnlearningModule
from lightning_unlearn.cli import main
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.maths.synthesis import SynthesisConfig, SyntheticSet
from lightning_unlearn.methods import DeepEdit
from lightning_unlearn.methods import deep as deep_module_code

from fake_datasets import make_image_folder, training_free_fit_config

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB = ["cat", "dog", "car", "tree", "boat", "house", "bird", "chair"]
FAST = dict(composed_templates=4, generic_vocabulary=["apple", "river", "mountain", "piano"], retain_templates_per_class=4)
# quick on a 32 px random-init model (as in tests/integration/test_bad_input.py)
EASY = asdict(SynthesisConfig(target_probability=0.3, min_probability=0.27, jitter=2, step_size=3.0, max_iterations=100,
                              threshold_decay="per_image", pixel_space="model", jitter_mode="symmetric",
                              blur_kernel_size=3, blur_from_first_iteration=False))
EASY = {k: v for k, v in EASY.items() if v is not None}


@pytest.fixture(autouse=True)
def quick_synthesis(monkeypatch):
    """A random-init tiny CLIP reaches the synthesis targets of few classes (the demo CLIP reaches
    them all, docs/edit.md): here every class gets smooth random images instead, so the tests check
    the erasure and its wiring, not the ascent (tested in tests/unit/test_synthesis.py)."""

    def fake(encode_image, class_embeddings, class_index, image_size, mean, std, config=None, seed=0, **_):
        index = torch.as_tensor(list(class_index), dtype=torch.long)
        g = torch.Generator().manual_seed(seed)
        base = torch.randn(int(index.max()) + 1, 3, image_size, image_size, generator=g)
        images = base[index] + 0.3 * torch.randn(len(index), 3, image_size, image_size, generator=g)
        ones = torch.ones(len(index))
        return SyntheticSet(images=images, class_index=index, probability=ones, target=ones,
                            iterations=ones.long(), reached=ones.bool())

    monkeypatch.setattr(deep_module_code, "synthesize", fake)


def deep_module(name: str, **method: Any) -> UnlearningModule:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = UnlearningModule(model_name=name, pretrained=None, forget_classes=["dog"], vocabulary=VOCAB,
                                  method=DeepEdit(**{**FAST, "images_per_class": 4, "synthesis": EASY, **method}))
    module.resolve_spec({})
    return module


@pytest.mark.parametrize(("name", "changed"), [
    ("tiny-rn", {"text_projection", "visual.attnpool.c_proj.weight", "visual.attnpool.c_proj.bias"}),
    ("tiny-vit", {"text_projection", "visual.proj"}),
])
def test_deep_edit_writes_the_two_projections_only(name, changed):
    module = deep_module(name)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    section = module.method.apply(module)
    after = module.model.state_dict()
    assert {k for k, v in after.items() if not torch.equal(v, before[k])} == changed
    assert set(section["image_erasure"]["changed"]) == changed - {"text_projection"}
    assert section["image_erasure"]["rank"] == 1 and section["image_erasure"]["synthetic_images"]["forget"] > 0
    assert {"synthesis", "erasure", "edit"} <= set(module.method.timings)


def test_synthetic_direction_equalises_the_class_means_of_the_estimation_images():
    """The erasure's defining property: re-encoded with the edited model, the synthetic images of
    the forgotten class and of the retained classes have the same mean embedding."""
    module = deep_module("tiny-rn", direction="synthetic", shrinkage=0.0)
    module.method.apply(module)
    made = module.method.synthetic
    forget = (made.vocabulary == 0) & (made.label == VOCAB.index("dog"))
    gap_before = (made.features[forget].mean(0) - made.features[~forget].mean(0)).norm()
    with torch.no_grad():
        edited = module.model.encode_image(made.images).double()
    gap_after = (edited[forget].mean(0) - edited[~forget].mean(0)).norm()
    spread = (made.features - made.features.mean(0)).norm(dim=1).mean()
    assert gap_before > 0.5 * spread  # there was a class direction to remove (random-init features vary little)
    assert gap_after < 1e-2 * gap_before


def test_without_image_erasure_it_is_the_text_edit():
    module = deep_module("tiny-rn", image_erasure=False)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    section = module.method.apply(module)
    assert "image_erasure" not in section
    assert {k for k, v in module.model.state_dict().items() if not torch.equal(v, before[k])} == {"text_projection"}


def test_prompt_covariance_synthesises_nothing_and_erases_its_readout(monkeypatch):
    """covariance 'prompts' with the text direction: no image is synthesised, and every image
    embedding of the edited model reads the erased direction's readout as the same constant."""

    def refuse(*_, **__):
        raise AssertionError("covariance 'prompts' with direction 'text' must not synthesise")

    monkeypatch.setattr(deep_module_code, "synthesize", refuse)
    module = deep_module("tiny-rn", covariance="prompts", shrinkage=0.0)
    eraser, _ = module.method.eraser(module)
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        read_before = module.model.encode_image(images).double() @ eraser.readout
    section = module.method.apply(module)
    with torch.no_grad():
        read_after = module.model.encode_image(images).double() @ eraser.readout
    constant = eraser.readout.T @ eraser.mean  # zero here: no synthetic mean to erase around
    gap_before, gap_after = (read_before - constant).abs().max(), (read_after - constant).abs().max()
    assert gap_before > 1e-2  # the readout saw something before (random-init features vary little)
    assert gap_after < 1e-3 * gap_before
    erasure = section["image_erasure"]
    assert erasure["covariance"] == "prompts" and "synthetic_images" not in erasure
    assert erasure["prompts"]["retain"] == (len(VOCAB) - 1) * len(module.spec.vocabulary.templates)
    assert "synthesis" not in module.method.timings


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"covariance": "real"}, "covariance must be one of 'synthetic', 'prompts', got 'real'"),
    ({"direction": "real"}, "direction must be one of 'text', 'synthetic', got 'real'"),
    ({"shrinkage": -0.5}, "shrinkage must be a finite number >= 0, got -0.5"),
    ({"images_per_class": 0}, "images_per_class must be an int >= 1"),
    ({"image_erasure": "yes"}, "image_erasure must be true or false, got 'yes'"),
    ({"synthesis": {"colour": 1}}, "synthesis: .*colour"),
    ({"lam": 0.0}, "lam must be a finite number > 0, got 0.0"),  # the text edit's own checks still apply
])
def test_bad_deep_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DeepEdit(**kwargs)


def test_fit_deep_writes_report_and_an_open_clip_export(tmp_path):
    data = make_image_folder(tmp_path / "pets", VOCAB, 2, colour=lambda c, i: ((30 * c + 20 * i) % 255, 80, 160))
    config = training_free_fit_config("tiny-rn", None, "DeepEdit", {**FAST, "images_per_class": 4, "synthesis": EASY},
                                      data, tmp_path / "runs")
    path = tmp_path / "deep.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = main(["fit", "--config", str(path), "--model.init_args.forget_classes", "[cat]"])
    out = Path(cli.trainer.log_dir)
    report = json.loads((out / "report.json").read_text())
    assert report["method"]["name"] == "deep" and report["optimizer_steps"] == 0
    assert report["deep"]["image_erasure"]["changed"] == ["visual.attnpool.c_proj.weight", "visual.attnpool.c_proj.bias"]
    exported, _, _ = open_clip.create_model_and_transforms("tiny-rn", pretrained=str(out / "unlearned.safetensors"))
    for (name, a), (_, b) in zip(exported.state_dict().items(), cli.model.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_packaged_deep_config_parses(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "demo_deep", "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["method"]["class_path"] == "lightning_unlearn.methods.DeepEdit"
    assert printed["model"]["init_args"]["evaluation"]["inversion"] is True
