"""RealForgetDataModule, retain batches and real validation images, without a Trainer fit."""

from __future__ import annotations

import pytest
import torch

from lightning_unlearn import UnlearningModule
from lightning_unlearn.datamodules import ForgetImages, ForgetSet, RealForgetDataModule, SyntheticForgetDataModule
from lightning_unlearn.datamodules.forget import _ContinuingSampler
from lightning_unlearn.demo.world_datasets import DemoWorldDataset
from lightning_unlearn.core.errors import ConfigError

from fake_datasets import make_caltech

PER_CLASS = 3  # demo images per class and split: small sets render in milliseconds


@pytest.fixture(scope="module")
def module():
    return UnlearningModule(model_name="tiny-rn", pretrained=None, forget_classes=["kite"],
                            forget_dataset="demo_objects")


def _data(module, **kwargs) -> RealForgetDataModule:
    args = dict(datasets=["demo_objects"], dataset_kwargs={"demo_objects": {"num_per_class": PER_CLASS}},
                images_per_class=2, seed=0)
    args.update(kwargs)
    data = RealForgetDataModule(**args)
    data.transform = module.preprocess
    data.setup()
    module.resolve_spec(data.vocabularies)
    return data


def test_forget_set_holds_train_images_of_the_class(module):
    data = _data(module)
    made = data.make_forget_set(module)
    kite = module.spec.forget_indices[0]
    train = DemoWorldDataset("objects", "train", num_per_class=PER_CLASS, seed=0, transform=module.preprocess)
    members = [train[i][0] for i in range(len(train)) if train.labels[i] == kite]
    assert made.kind == "real" and made.labels.tolist() == [kite, kite]
    assert all(any(torch.equal(image, m) for m in members) for image in made.images)
    test = DemoWorldDataset("objects", "test", num_per_class=PER_CLASS, seed=0, transform=module.preprocess)
    assert not any(torch.equal(image, test[i][0]) for image in made.images for i in range(len(test)))
    assert made.probability.shape == (2,) and bool(((made.probability > 0) & (made.probability < 1)).all())
    assert made.summary()["dataset"] == "demo_objects" and made.summary()["split"] == "train"


def test_same_seed_same_images_other_seed_other_images(module):
    def draw(seed):
        return _data(module, images_per_class=1, seed=seed).make_forget_set(module).images

    first = draw(0)
    assert torch.equal(first, draw(0))
    assert any(not torch.equal(first, draw(seed)) for seed in range(1, 6))  # 3 candidates: some seed differs


def test_forget_split_kwargs_apply_to_the_forget_split_only(module):
    data = _data(module, images_per_class=5, forget_split_kwargs={"demo_objects": {"num_per_class": 5}})
    assert len(data.make_forget_set(module).labels) == 5  # 5 rendered for train; the test split keeps 3
    assert len(data.eval_datasets["demo_objects"]) == 24 * PER_CLASS


def test_retain_set_covers_every_other_class(module):
    data = _data(module, retain_images_per_class=1)
    retain = data.make_retain_set(module)
    assert sorted(retain.labels.tolist()) == module.spec.retain_indices()
    assert data.provides_retain_images and not _data(module).provides_retain_images


def test_real_validation_images_come_from_the_val_split(module):
    data = _data(module, real_valid_images=2)
    valid = data.make_real_valid_set(module)
    kite = module.spec.forget_indices[0]
    val = DemoWorldDataset("objects", "val", num_per_class=PER_CLASS, seed=0, transform=module.preprocess)
    members = [val[i][0] for i in range(len(val)) if val.labels[i] == kite]
    assert valid.labels.tolist() == [kite, kite]
    assert all(any(torch.equal(image, m) for m in members) for image in valid.images)
    assert _data(module).make_real_valid_set(module) is None  # off by default


def test_synthetic_datamodule_takes_real_valid_images():
    data = SyntheticForgetDataModule(datasets=["demo_objects"], real_valid_images=3)
    assert data.real_valid_images == 3


def test_batches_carry_retain_images_that_move_on_each_epoch():
    forget = ForgetSet(images=torch.zeros(2, 3, 4, 4), labels=torch.tensor([5, 5]), kind="real")
    retain = ForgetSet(images=torch.arange(6.0).view(6, 1, 1, 1).expand(6, 3, 4, 4).clone(),
                       labels=torch.arange(6), kind="real")
    dataset = ForgetImages(forget, repeats=1, retain_set=retain)
    sampler = _ContinuingSampler(dataset, num_replicas=1, rank=0, shuffle=False)
    seen = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        items = [dataset[i] for i in sampler]
        assert [item["index"] for item in items] == [0, 1] and all(item["label"] == 5 for item in items)
        seen.append([item["retain_label"] for item in items])
    assert seen == [[0, 1], [2, 3], [4, 5]]
    assert float(dataset[3]["retain_image"][0, 0, 0]) == 3.0


def test_real_images_need_a_dataset():
    with pytest.raises(ConfigError, match=r"datasets is empty"):
        RealForgetDataModule()


def test_forget_split_must_differ_from_the_evaluation_split():
    with pytest.raises(ConfigError, match=r"forget_split 'test' is the evaluation split"):
        RealForgetDataModule(datasets=["demo_objects"], forget_split="test")


def test_real_images_need_a_dataset_vocabulary():
    module = UnlearningModule(model_name="tiny-rn", pretrained=None, forget_classes=["dog"],
                              vocabulary=["cat", "dog"])
    module.resolve_spec({})
    with pytest.raises(ConfigError, match=r"the vocabulary is not an evaluation dataset's"):
        RealForgetDataModule(datasets=["demo_objects"]).source_dataset(module.spec)


def test_check_available_names_a_split_the_layout_lacks(module, tmp_path):
    make_caltech(tmp_path, "standard")  # torchvision's layout: no train split
    caltech = UnlearningModule(model_name="tiny-rn", pretrained=None, forget_classes=["euphonium"],
                               forget_dataset="caltech101")
    data = RealForgetDataModule(datasets={"caltech101": str(tmp_path)})
    with pytest.warns(UserWarning):
        data.setup()
    caltech.resolve_spec(data.vocabularies)
    with pytest.raises(ConfigError, match=r"split"):
        data.check_available(caltech.spec)


def test_continuing_sampler_shards_cover_every_image_once_per_epoch():
    forget = ForgetSet(images=torch.zeros(4, 3, 2, 2), labels=torch.zeros(4, dtype=torch.long), kind="real")
    retain = ForgetSet(images=torch.zeros(10, 3, 2, 2), labels=torch.arange(10), kind="real")
    dataset = ForgetImages(forget, repeats=1, retain_set=retain)
    for epoch in range(2):
        shards = []
        for rank in range(2):
            sampler = _ContinuingSampler(dataset, num_replicas=2, rank=rank, shuffle=False)
            sampler.set_epoch(epoch)
            shards.append([dataset[i] for i in sampler])
        assert sorted(item["index"] for shard in shards for item in shard) == [0, 1, 2, 3]
        assert sorted(item["retain_label"] for shard in shards for item in shard) == [4 * epoch + j for j in range(4)]
