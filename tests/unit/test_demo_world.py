"""The offline demo world, its datasets, the demo CLIP's pretraining and its weights cache."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from lightning_unlearn.datasets.base import ZeroShotDataset, get_dataset_factory
from lightning_unlearn.demo import DEMO_MODEL_NAME, DemoWorldDataset, world
from lightning_unlearn.core.io import CACHE_ENV


# ----------------------------------------------------------------------------- the world
@pytest.mark.parametrize("domain", world.DOMAINS)
def test_render_is_deterministic_in_the_generator(domain: str) -> None:
    a = world.render(domain, 3, np.random.default_rng(7))
    b = world.render(domain, 3, np.random.default_rng(7))
    c = world.render(domain, 3, np.random.default_rng(8))
    assert a.dtype == np.uint8 and a.shape == (world.IMAGE_SIZE, world.IMAGE_SIZE, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_render_many_is_deterministic_per_seed_and_split() -> None:
    labels = world.balanced_labels(len(world.OBJECT_CLASSES), 2)
    a = world.render_many("objects", labels, seed=0, split="test")
    assert np.array_equal(a, world.render_many("objects", labels, seed=0, split="test"))
    assert not np.array_equal(a, world.render_many("objects", labels, seed=1, split="test"))
    assert not np.array_equal(a, world.render_many("objects", labels, seed=0, split="train"))


def test_class_counts_names_and_templates() -> None:
    assert len(world.OBJECT_CLASSES) >= 20 and len(world.TEXTURE_CLASSES) >= 8
    names = world.OBJECT_CLASSES + world.TEXTURE_CLASSES
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)?", n) for n in names)
    for domain in world.DOMAINS:
        templates = world.TEMPLATES[domain]
        assert len(templates) >= 5 and all(t.count("{}") == 1 for t in templates)
    assert world.TEMPLATES["objects"][0] == "a photo of a {}."


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="'shapes'"):
        world.render("shapes", 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="out of range"):
        world.render("textures", len(world.TEXTURE_CLASSES), np.random.default_rng(0))
    with pytest.raises(ValueError, match="'dev'"):
        world.image_rng(0, "dev", "objects", 0, 0)


def test_every_class_renders_something_and_is_not_colour_coded() -> None:
    # each image has structure (not a flat fill), and a class's mean colour varies across images
    for domain in world.DOMAINS:
        for c in range(len(world.CLASSES[domain])):
            imgs = world.render_many(domain, [c] * 6, seed=0, split="val").astype(float)
            assert imgs.std(axis=(1, 2)).mean() > 10, (domain, c)
            assert imgs.mean(axis=(1, 2)).std(axis=0).mean() > 10, (domain, c)


def test_render_many_gives_one_distinct_image_per_label() -> None:
    # Speed is the benchmark's business (benchmarks/bench_load.py); here: shape, dtype and that a
    # batch is not one image repeated.
    for domain in world.DOMAINS:
        labels = world.balanced_labels(len(world.CLASSES[domain]), 8)
        imgs = world.render_many(domain, labels, 0, "train")
        assert imgs.shape == (len(labels), world.IMAGE_SIZE, world.IMAGE_SIZE, 3) and imgs.dtype == np.uint8
        flat = {img.tobytes() for img in imgs}
        assert len(flat) == len(labels), "two labels rendered the same pixels"


def test_sample_grid_png(tmp_path: Path) -> None:
    path = tmp_path / "grid.png"
    world.save_sample_grid(str(path), per_class=2)
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.height >= (len(world.OBJECT_CLASSES) + len(world.TEXTURE_CLASSES)) * world.IMAGE_SIZE


# ----------------------------------------------------------------------------- datasets
@pytest.mark.parametrize("name", ["demo_objects", "demo_textures"])
def test_registered_datasets_follow_the_protocol(name: str) -> None:
    seen = []
    ds = get_dataset_factory(name)(None, split="test", transform=lambda im: seen.append(im.size) or "x",
                                   num_per_class=2)
    assert isinstance(ds, ZeroShotDataset)
    assert ds.name == name
    assert len(ds) == 2 * len(ds.classnames)
    assert ds.templates[0].count("{}") == 1
    image, label = ds[len(ds) - 1]
    assert image == "x" and seen == [(world.IMAGE_SIZE, world.IMAGE_SIZE)]
    assert label == len(ds.classnames) - 1 and isinstance(label, int)
    raw = get_dataset_factory(name)(None, num_per_class=1)
    assert isinstance(raw[0][0], Image.Image) and raw[0][0].mode == "RGB"
    assert sorted(set(ds.targets)) == list(range(len(ds.classnames)))  # balanced, every class


def _hashes(ds: DemoWorldDataset) -> set[str]:
    return {hashlib.sha1(img.tobytes()).hexdigest() for img in ds.images}


def test_splits_are_disjoint_and_sets_grow_by_appending() -> None:
    train = DemoWorldDataset("objects", split="train", num_per_class=4)
    test = DemoWorldDataset("objects", split="test", num_per_class=4)
    val = DemoWorldDataset("objects", split="val", num_per_class=4)
    assert not (_hashes(train) & _hashes(test)) and not (_hashes(val) & _hashes(test))
    small = DemoWorldDataset("objects", split="test", num_per_class=2)
    per_class = test.images.reshape(len(test.classnames), 4, *test.images.shape[1:])
    assert np.array_equal(small.images.reshape(len(small.classnames), 2, *small.images.shape[1:]),
                          per_class[:, :2])


# ----------------------------------------------------------------------------- the model
def test_model_config_registered_and_preprocess_matches_the_world() -> None:
    assert DEMO_MODEL_NAME in open_clip.list_models()
    model, _, preprocess = open_clip.create_model_and_transforms(DEMO_MODEL_NAME)
    tokenizer = open_clip.get_tokenizer(DEMO_MODEL_NAME)
    assert tokenizer.context_length == model.context_length
    assert model.vocab_size == 49408

    from lightning_unlearn.demo.pretrain import to_model_input

    ds = DemoWorldDataset("textures", num_per_class=1)
    assert torch.equal(preprocess(ds[0][0]), to_model_input(ds.images[:1])[0])


def test_pretraining_captions_add_the_openai_templates() -> None:
    from lightning_unlearn.demo.cache import demo_settings
    from lightning_unlearn.demo.pretrain import DemoWorldDataModule, pretraining_caption_templates
    from lightning_unlearn.maths.promptbank import openai_templates

    own = ["a {} pattern.", "a {} fabric."]
    assert pretraining_caption_templates(own, "textures", "own") == own
    rich = pretraining_caption_templates(own, "textures", "own+openai")
    assert rich[:2] == own and len(rich) == 2 + len(openai_templates()) == 82
    assert rich[2] == openai_templates()[0].replace("{}", "{} texture")
    assert pretraining_caption_templates(own, "objects", "own+openai")[2:] == openai_templates()
    with pytest.raises(ValueError, match="caption_templates must be 'own' or 'own\\+openai', got 'all'"):
        DemoWorldDataModule(caption_templates="all")
    # the captions are part of the cache key: another choice trains another file
    assert demo_settings()["caption_templates"] == "own+openai"
    assert demo_settings() != demo_settings(caption_templates="own")


def test_training_batches_are_class_balanced_and_seeded() -> None:
    from lightning_unlearn.demo.pretrain import DemoWorldDataModule

    def first_batches(seed: int, noise_std: float):
        dm = DemoWorldDataModule(seed=seed, train_per_class=3, batch_repeats=2, noise_std=noise_std)
        dm.setup("fit")
        it = iter(dm.train_dataloader())
        return [next(it) for _ in range(2)]

    a = first_batches(0, 0.5)
    images, tokens = a[0]
    classes = len(world.OBJECT_CLASSES) + len(world.TEXTURE_CLASSES)
    assert images.shape == (2, classes, 3, world.IMAGE_SIZE, world.IMAGE_SIZE)
    assert tokens.shape == (classes, open_clip.get_tokenizer(DEMO_MODEL_NAME).context_length)
    b = first_batches(0, 0.5)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b))
    assert not torch.equal(a[0][0], first_batches(0, 0.0)[0][0])  # the noise is applied
    assert not torch.equal(a[0][0], first_batches(1, 0.5)[0][0])


# ----------------------------------------------------------------------------- the cache
@pytest.fixture
def fake_training(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Replace training by a random-init model (the cache logic is what is under test)."""
    from lightning_unlearn.demo import cache

    calls: list[dict] = []

    def fake(settings: dict, progress: bool = True, num_threads=None):
        calls.append(settings)
        torch.manual_seed(len(calls))
        model = open_clip.create_model(settings["model_name"])
        return {k: v.contiguous() for k, v in model.state_dict().items()}, {"objects": 0.5, "textures": 0.5}, 0.1

    monkeypatch.setattr(cache, "train_demo_clip", fake)
    return calls


def test_cache_writes_loadable_weights_and_manifest(tmp_path: Path, fake_training: list[dict]) -> None:
    from lightning_unlearn.demo.cache import ensure_demo_clip, read_manifest, sha256_file

    path = ensure_demo_clip(seed=3, steps=5, cache_dir=tmp_path, progress=False)
    assert path.suffix == ".safetensors" and path.parent == tmp_path / "demo_clip"
    meta = read_manifest(path)
    assert meta["sha256"] == sha256_file(path) and meta["settings"]["seed"] == 3
    assert set(meta["zero_shot_accuracy"]) == set(world.DOMAINS)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers
    model, _, _ = open_clip.create_model_and_transforms(DEMO_MODEL_NAME, pretrained=str(path))
    assert isinstance(model, torch.nn.Module)
    # cached: same path, no training; other settings: another file
    assert ensure_demo_clip(seed=3, steps=5, cache_dir=tmp_path, progress=False) == path
    assert len(fake_training) == 1
    assert ensure_demo_clip(seed=3, steps=6, cache_dir=tmp_path, progress=False) != path
    assert len(fake_training) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "drop_manifest", "bad_manifest", "other_settings"])
def test_damaged_cache_is_never_loaded(tmp_path: Path, fake_training: list[dict], damage: str) -> None:
    from lightning_unlearn.demo.cache import ensure_demo_clip, read_manifest, sha256_file

    path = ensure_demo_clip(seed=0, steps=5, cache_dir=tmp_path, progress=False)
    manifest = path.with_suffix(".json")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif damage == "drop_manifest":
        manifest.unlink()
    elif damage == "bad_manifest":
        manifest.write_text("{not json")
    else:
        meta = json.loads(manifest.read_text())
        meta["settings"]["steps"] = 999
        manifest.write_text(json.dumps(meta))
    again = ensure_demo_clip(seed=0, steps=5, cache_dir=tmp_path, progress=False)
    assert again == path and len(fake_training) == 2  # retrained, not loaded
    assert read_manifest(again)["sha256"] == sha256_file(again)


def test_failed_write_leaves_no_file(tmp_path: Path, fake_training: list[dict],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    from lightning_unlearn.demo.cache import demo_settings, cache_paths, ensure_demo_clip

    def crash(state, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        ensure_demo_clip(seed=0, steps=5, cache_dir=tmp_path, progress=False)
    weights, manifest = cache_paths(demo_settings(seed=0, steps=5), tmp_path)
    assert not weights.exists() and not manifest.exists()
    assert list(weights.parent.iterdir()) == []


def test_training_restores_torch_threads_and_determinism_flag() -> None:
    from lightning_unlearn.demo.cache import _torch_state

    threads, flag = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with _torch_state(1):
        assert torch.get_num_threads() == 1
        torch.use_deterministic_algorithms(True)  # what Trainer(deterministic=True) does
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == flag


def test_cache_folder_follows_the_environment(tmp_path: Path, fake_training: list[dict],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_unlearn.demo.cache import ensure_demo_clip

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    path = ensure_demo_clip(seed=0, steps=5, progress=False)
    assert path.parent == tmp_path / "env" / "demo_clip"
    assert ensure_demo_clip(seed=0, steps=5, progress=False, cache_dir=tmp_path / "arg").parent == \
        tmp_path / "arg" / "demo_clip"
