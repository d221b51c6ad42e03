"""Evaluation datasets (both layouts each), their class-name rules and errors, the registry
(lazy entries included) and EvaluationDataModule.

Everything runs on tiny fake copies written by ``fake_datasets`` (8x8 JPEGs, a few per class).
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import torch
import torchvision
from torchvision import transforms

import fake_datasets as fake

from lightning_unlearn.datamodules.evaluation_data import EvaluationDataModule
from lightning_unlearn.datasets import (
    CorruptImageError,
    DatasetLayoutError,
    ImageListDataset,
    available_datasets,
    car_classname,
    caltech_classname,
    dog_class_folders,
    dog_classname,
    flower_classname,
    get_dataset_factory,
    needs_root,
    paper_class_folders,
    read_vocabulary,
    register_dataset,
    register_lazy_dataset,
)
from lightning_unlearn.datasets import base as registry
from lightning_unlearn.core.errors import ConfigError, MissingFileError, UnknownNameError, UnlearnError
from lightning_unlearn.maths.forget_spec import resolve_forget_spec

REPO = Path(__file__).resolve().parents[2]
TRANSFORM = transforms.Compose([transforms.Resize((8, 8)), transforms.ToTensor()])
FOUR = ("caltech101", "oxford_flowers", "stanford_cars", "stanford_dogs")


def build(name: str, root: Path | str | None, split: str = "test", **kwargs):
    return get_dataset_factory(name)(None if root is None else str(root), split, **kwargs)


@pytest.fixture
def md5_ok(monkeypatch):
    """Accept fake Flowers .mat files, the way torchvision's own tests patch the check."""
    monkeypatch.setattr(torchvision.datasets.flowers102, "check_integrity", lambda *args, **kwargs: True)


@pytest.fixture(scope="module")
def paper_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paper")
    fake.make_all(root, "paper")
    return root


@pytest.fixture(scope="module")
def standard_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("standard")
    fake.make_all(root, "standard")
    return root


# ---------------------------------------------------------------- registry, paper layout

def test_all_datasets_registered():
    assert set(FOUR) | {"image_folder", "demo_objects", "demo_textures"} <= set(available_datasets())


@pytest.mark.parametrize("name", FOUR)
def test_factories_keep_their_public_signature(name):
    factory = get_dataset_factory(name)
    params = inspect.signature(factory).parameters
    assert [(p.name, p.default) for p in params.values()] == [
        ("root", None), ("split", "test"), ("transform", None), ("layout", "auto")
    ]
    module = {"oxford_flowers": "flowers102"}.get(name, name)
    assert (factory.__name__, factory.__module__) == (name, f"lightning_unlearn.datasets.{module}")
    assert factory.__doc__.startswith(f"{factory.__doc__.split(' as the paper')[0]} as the paper evaluates it")


PAPER_EXPECTED = {
    "caltech101": (fake.CALTECH_PAPER, "a photo of a {}."),
    "oxford_flowers": (fake.FLOWER_PAPER, "a photo of a {}, a type of flower."),
    "stanford_cars": (fake.CAR_PAPER, "a photo of a {}."),
    "stanford_dogs": (fake.DOG_PAPER, "a photo of a {}."),
}


@pytest.mark.parametrize("name", FOUR)
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_paper_layout(paper_root, name, split):
    ds = build(name, paper_root, split)
    classnames, template = PAPER_EXPECTED[name]
    assert isinstance(ds, ImageListDataset)
    assert (ds.name, ds.layout, ds.split, ds.transform) == (name, "paper", split, None)
    assert ds.classnames == list(classnames)  # from train, in label order, underscores as spaces
    assert ds.templates[0] == template and ds.templates[0].count("{}") == 1
    assert ds.targets == list(range(len(classnames)))  # one image per class in each fake split
    image, label = ds[0]
    assert image.size == (8, 8) and label == 0


def test_paper_labels_come_from_the_json(paper_root):
    ds = build("caltech101", paper_root)
    by_folder = {Path(path).parent.name: label for path, label in ds.samples}
    assert by_folder == {"Faces": 0, "airplanes": 1, "car_side": 2, "euphonium": 3}


# ---------------------------------------------------------------- standard layouts vs torchvision

def test_caltech_standard_agrees_with_torchvision(standard_root):
    tv = torchvision.datasets.Caltech101(str(standard_root), download=False)
    with pytest.warns(UserWarning, match="no splits"):
        ds = build("caltech101", standard_root)
    assert ds.layout == "standard" and ds.classnames == list(fake.CALTECH_PAPER)
    # Same files and labels as torchvision, minus Faces_easy (dropped, as in the paper).
    expected = {}
    for y, index in zip(tv.y, tv.index):
        folder = tv.categories[y]
        if folder != "Faces_easy":
            path = standard_root / "caltech101" / "101_ObjectCategories" / folder / f"image_{index:04d}.jpg"
            expected[str(path)] = ds.classnames.index(caltech_classname(folder))
    assert dict(ds.samples) == expected and len(ds) == len(tv) - fake.PER_CLASS


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_flowers_standard_agrees_with_torchvision(standard_root, md5_ok, split):
    tv = torchvision.datasets.Flowers102(str(standard_root), split=split, download=False)
    ds = build("oxford_flowers", standard_root, split)
    assert [(str(p), y) for p, y in zip(tv._image_files, tv._labels)] == ds.samples
    assert ds.targets == [v - 1 for v in fake.FLOWER_VALUES]
    assert len(ds.classnames) == 102 and ds.classnames[59] == "pink-yellow dahlia"  # "?" dropped
    assert ds.templates == ["a photo of a {}, a type of flower."]


@pytest.mark.parametrize("split", ["train", "test"])
def test_cars_standard_agrees_with_torchvision(standard_root, split):
    tv = torchvision.datasets.StanfordCars(str(standard_root), split=split, download=False)
    ds = build("stanford_cars", standard_root, split)
    assert ds.samples == [(str(p), y) for p, y in tv._samples] and len(ds) == len(tv)
    assert ds.classnames == [car_classname(name) for name in tv.classes] == list(fake.CAR_PAPER)


@pytest.mark.parametrize("split, size", [("train", 8), ("test", 4)])
def test_dogs_official_lists(standard_root, split, size):
    ds = build("stanford_dogs", standard_root, split)
    assert ds.layout == "standard" and len(ds) == size
    assert ds.classnames == list(fake.DOG_PAPER)
    mat = scipy.io.loadmat(str(standard_root / "stanford_dogs" / f"{split}_list.mat"), squeeze_me=True)
    assert [Path(p).relative_to(standard_root / "stanford_dogs" / "Images").as_posix() for p, _ in ds.samples] == list(
        mat["file_list"]
    )
    assert ds.targets == [int(v) - 1 for v in mat["labels"]]


def test_dogs_lists_in_a_lists_folder(tmp_path):
    fake.make_dogs(tmp_path, "standard", lists_dir="lists")
    assert len(build("stanford_dogs", tmp_path, "train")) == 8


def test_dogs_list_that_contradicts_the_folders(tmp_path):
    folder = fake.make_dogs(tmp_path, "standard")
    files = np.array([["n02086079-Pekinese/a.jpg"], ["n02085620-Chihuahua/b.jpg"]], dtype=object)
    scipy.io.savemat(folder / "test_list.mat", {"file_list": files, "labels": np.array([[1], [2]])})
    with pytest.raises(DatasetLayoutError, match="does not match the sorted class folders"):
        build("stanford_dogs", tmp_path)


# ---------------------------------------------------------------- root discovery and layout choice

@pytest.mark.parametrize("name, sub", [("caltech101", "caltech-101"), ("stanford_dogs", "stanford_dogs")])
def test_root_may_be_the_dataset_folder(paper_root, name, sub):
    assert build(name, paper_root / sub).root == str(paper_root / sub)


def test_torchvision_folder_given_directly(standard_root, md5_ok):
    assert build("oxford_flowers", standard_root / "flowers-102").layout == "standard"


def test_paper_layout_preferred_and_choosable(tmp_path):
    fake.make_cars(tmp_path, "standard")
    fake.make_cars(tmp_path, "paper")  # same folder, both layouts
    assert build("stanford_cars", tmp_path).layout == "paper"
    assert build("stanford_cars", tmp_path, layout="standard").layout == "standard"
    assert len(build("stanford_cars", tmp_path, "train", layout="standard")) == 6


# ---------------------------------------------------------------- the paper's class-name rules

# All 102 Caltech101 folders. With them the rules reproduce every Caltech label of the facts
# sheet: paper euphonium 37 / minaret 64 / platypus 72, torchvision 38 / 65 / 73, and
# face 0, leopard 1, motorbike 2, accordion 3.
CALTECH_ALL = """accordion airplanes anchor ant BACKGROUND_Google barrel bass beaver binocular bonsai brain
brontosaurus buddha butterfly camera cannon car_side ceiling_fan cellphone chair chandelier cougar_body
cougar_face crab crayfish crocodile crocodile_head cup dalmatian dollar_bill dolphin dragonfly
electric_guitar elephant emu euphonium ewer Faces Faces_easy ferry flamingo flamingo_head garfield gerenuk
gramophone grand_piano hawksbill headphone hedgehog helicopter ibis inline_skate joshua_tree kangaroo ketch
lamp laptop Leopards llama lobster lotus mandolin mayfly menorah metronome minaret Motorbikes nautilus
octopus okapi pagoda panda pigeon pizza platypus pyramid revolver rhino rooster saxophone schooner scissors
scorpion sea_horse snoopy soccer_ball stapler starfish stegosaurus stop_sign strawberry sunflower tick
trilobite umbrella watch water_lilly wheelchair wild_cat windsor_chair wrench yin_yang""".split()


def test_caltech_rules_give_the_facts_sheet_labels():
    assert len(CALTECH_ALL) == 102
    names = [caltech_classname(f) for f in paper_class_folders(CALTECH_ALL)]
    assert len(names) == 100 and names[:5] == ["face", "leopard", "motorbike", "accordion", "airplane"]
    assert [names.index(c) for c in ("euphonium", "minaret", "platypus")] == [37, 64, 72]
    tv_order = sorted(set(CALTECH_ALL) - {"BACKGROUND_Google"})  # torchvision's categories
    assert [tv_order.index(c) for c in ("euphonium", "minaret", "platypus")] == [38, 65, 73]
    assert caltech_classname("car_side") == "car side" and caltech_classname("water_lilly") == "water lilly"


def test_flowers_rules_give_the_facts_sheet_labels():
    # Verified against torchvision's hard-coded list: gazania 70, tree mallow 85, trumpet creeper 100
    # (keys "71", "86", "101" minus one), barbeton daisy 40, and the "?" of index 59 dropped.
    names = [flower_classname(n) for n in torchvision.datasets.Flowers102.classes]
    assert [names[i] for i in (70, 85, 100, 40, 59)] == [
        "gazania", "tree mallow", "trumpet creeper", "barbeton daisy", "pink-yellow dahlia"
    ]
    assert not any("?" in n for n in names) and len(set(names)) == 102


def test_cars_year_first_names():
    # Labels 179/85/110 are the cars_meta.mat order (class - 1), read as is; not checkable without it.
    assert car_classname("Spyker C8 Coupe 2009") == "2009 Spyker C8 Coupe"
    assert car_classname("Dodge Ram Pickup 3500 Crew Cab 2010") == "2010 Dodge Ram Pickup 3500 Crew Cab"
    assert car_classname("Ford Ranger SuperCab 2011") == "2011 Ford Ranger SuperCab"


def test_dogs_names_and_order():
    # Pekinese = 3 is verified with the four first real folders (sorted by WordNet id). Scotch
    # terrier 48 and toy poodle 113 need all 120 folders; only their names are verified here.
    first = ["n02086079-Pekinese", "n02085936-Maltese_dog", "n02085620-Chihuahua", "n02085782-Japanese_spaniel"]
    assert [dog_classname(f) for f in dog_class_folders(first)].index("Pekinese") == 3
    assert dog_classname("n02113624-toy_poodle") == "toy poodle"
    assert dog_classname("n02097298-Scotch_terrier") == "Scotch terrier"
    truncated = {
        "n02086240-Shih-Tzu": "Shih",
        "n02089078-black-and-tan_coonhound": "black",
        "n02095314-wire-haired_fox_terrier": "wire",
        "n02098105-soft-coated_wheaten_terrier": "soft",
        "n02099267-flat-coated_retriever": "flat",
        "n02099429-curly-coated_retriever": "curly",
        "n02100236-German_short-haired_pointer": "German short",
    }
    assert {f: dog_classname(f) for f in truncated} == truncated


# ---------------------------------------------------------------- errors

def test_missing_split_file_names_it_and_the_layouts(tmp_path):
    folder = fake.make_caltech(tmp_path, "paper")
    (folder / "split_zhou_Caltech101.json").unlink()
    with pytest.raises(DatasetLayoutError, match="no readable layout") as err:
        build("caltech101", tmp_path)
    first, *rest = str(err.value).splitlines()
    # The first line alone says what is missing; the accepted layouts follow.
    assert f"missing {str(folder / 'split_zhou_Caltech101.json')!r} (paper layout)" in first
    assert f"{str(tmp_path / 'caltech101' / '101_ObjectCategories')!r} (standard layout)" in first
    assert rest[0].startswith("Accepted layouts")
    assert any("paper layout: <data_root>/caltech-101/" in line for line in rest)
    assert any("standard layout: <data_root>/caltech101/" in line for line in rest)


def test_layout_errors_are_missing_file_errors(tmp_path):
    with pytest.raises(MissingFileError, match="the root folder itself") as err:
        build("stanford_dogs", tmp_path / "absent")
    assert isinstance(err.value, DatasetLayoutError) and isinstance(err.value, FileNotFoundError)
    assert isinstance(err.value, UnlearnError)
    assert str(tmp_path / "absent") in str(err.value).splitlines()[0]


def test_missing_listed_image_is_named(tmp_path):
    folder = fake.make_dogs(tmp_path, "paper")
    victim = folder / "Images" / fake.DOG_FOLDERS[1] / "n02086079_3.jpg"
    victim.unlink()
    with pytest.raises(DatasetLayoutError, match="listed in the split") as err:
        build("stanford_dogs", tmp_path)
    assert str(victim) in str(err.value) and "Accepted layouts" in str(err.value)


def test_missing_standard_files_are_named(tmp_path):
    fake.make_cars(tmp_path, "standard")
    (tmp_path / "stanford_cars" / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DatasetLayoutError, match="cars_test_annos_withlabels.mat"):
        build("stanford_cars", tmp_path)
    fake.make_dogs(tmp_path, "standard")
    (tmp_path / "stanford_dogs" / "test_list.mat").unlink()
    with pytest.raises(DatasetLayoutError, match="test_list.mat"):
        build("stanford_dogs", tmp_path)


def test_missing_root_and_no_root(tmp_path):
    with pytest.raises(DatasetLayoutError, match="the root folder itself"):
        build("stanford_cars", tmp_path / "absent")
    with pytest.raises(DatasetLayoutError, match="no root given"):
        build("stanford_dogs", None)


def test_split_errors(standard_root, paper_root):
    with pytest.raises(ConfigError, match="has no 'val' split.*paper layout has it"):
        build("stanford_cars", standard_root, "val")
    with pytest.raises(ConfigError, match="unknown split 'dev'; expected one of 'train', 'val', 'test'"):
        build("caltech101", paper_root, "dev")
    with pytest.raises(ConfigError, match="unknown layout 'coop'; expected one of 'auto', 'paper', 'standard'"):
        build("caltech101", paper_root, layout="coop")


def test_corrupt_jpeg_names_the_file(tmp_path):
    folder = fake.make_flowers(tmp_path, "paper")
    broken = folder / "jpg" / "image_00003.jpg"
    broken.write_bytes(b"not a jpeg")
    ds = build("oxford_flowers", tmp_path)
    with pytest.raises(CorruptImageError, match="image_00003.jpg") as err:
        ds[0]
    assert isinstance(err.value, UnlearnError) and isinstance(err.value, OSError)


def test_flowers_md5_check_is_kept(tmp_path):
    folder = fake.make_flowers(tmp_path, "standard")
    with pytest.raises(RuntimeError, match="MD5") as err:
        build("oxford_flowers", tmp_path)
    assert str(folder / "imagelabels.mat") in str(err.value) and str(folder / "setid.mat") in str(err.value)


def test_unknown_dataset_lists_registered_names():
    expected = "unknown dataset 'caltech-101'; close matches: 'caltech101'. Registered datasets: caltech101, "
    with pytest.raises(UnknownNameError, match="^" + re.escape(expected)) as err:
        get_dataset_factory("caltech-101")
    message = str(err.value)
    assert "\n" not in message and message.endswith(f"{', '.join(available_datasets())}.")
    # Without a close match the names are listed once, not twice.
    with pytest.raises(UnknownNameError, match=r"^unknown dataset 'mnist'\. Registered datasets: ") as err:
        get_dataset_factory("mnist")
    assert str(err.value).count("stanford_dogs") == 1
    with pytest.raises(UnknownNameError, match="unknown dataset 'imagenet'.*Registered datasets: ") as err:
        EvaluationDataModule(["caltech101", "imagenet"], data_root="/data")
    assert isinstance(err.value, ValueError)


# ---------------------------------------------------------------- lazy registration

@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry's tables, restored after the test (the functions read them as module globals)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_LAZY", dict(registry._LAZY))
    monkeypatch.setattr(registry, "_ROOTLESS", set(registry._ROOTLESS))
    monkeypatch.setattr(registry, "_VOCABULARY", dict(registry._VOCABULARY))


@pytest.fixture
def lazy_module(tmp_path, monkeypatch):
    """An importable module ``<name>`` holding ``factory``; removed from ``sys.modules`` afterwards."""
    name = f"lazy_dataset_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text("def factory(root=None, split='test', transform=None):\n    return split\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_lazy_dataset_imported_on_first_use(scratch_registry, lazy_module):
    register_lazy_dataset("lazy_one", f"{lazy_module}:factory", needs_root=False)
    assert "lazy_one" in available_datasets() and not needs_root("lazy_one")
    assert lazy_module not in sys.modules  # listing and needs_root import nothing
    factory = get_dataset_factory("lazy_one")
    assert factory is sys.modules[lazy_module].factory and factory(None, "val") == "val"
    assert get_dataset_factory("lazy_one") is factory


def test_latest_registration_wins(scratch_registry, lazy_module):
    def eager(root=None, split="test", transform=None):
        return "eager"

    register_lazy_dataset("twice", f"{lazy_module}:factory", needs_root=False)
    register_dataset("twice")(eager)
    assert get_dataset_factory("twice") is eager and needs_root("twice")
    assert lazy_module not in sys.modules
    register_lazy_dataset("twice", f"{lazy_module}:factory")
    assert get_dataset_factory("twice") is sys.modules[lazy_module].factory


def test_lazy_target_errors(scratch_registry, lazy_module):
    with pytest.raises(ConfigError, match="target must be 'module.path:attribute', got 'no_colon'"):
        register_lazy_dataset("bad", "no_colon")
    register_lazy_dataset("missing_attr", f"{lazy_module}:absent")
    with pytest.raises(ImportError, match=f"'missing_attr' is registered as '{lazy_module}:absent'"):
        get_dataset_factory("missing_attr")


def test_demo_datasets_are_the_real_factories():
    from lightning_unlearn.demo import datasets as demo

    assert get_dataset_factory("demo_objects") is demo.demo_objects
    assert get_dataset_factory("demo_textures") is demo.demo_textures
    assert not needs_root("demo_objects") and not needs_root("demo_textures")


# ---------------------------------------------------------------- vocabularies without building

def built_vocabulary(dataset_name: str, root, /, **kwargs) -> tuple[list[str], list[str]]:
    dataset = get_dataset_factory(dataset_name)(None if root is None else str(root), **kwargs)
    return list(dataset.classnames), list(dataset.templates)


@pytest.fixture
def nothing_built(monkeypatch):
    """While active, building a dataset, listing its samples or rendering an image fails."""
    from lightning_unlearn.datasets import _spec, stanford_dogs
    from lightning_unlearn.demo import world

    def refuse(*args, **kwargs):
        raise AssertionError("read more than the class names")

    monkeypatch.setattr(ImageListDataset, "__init__", refuse)  # every file-based factory ends here
    monkeypatch.setattr(_spec, "read_split_json", refuse)  # the paper layouts' sample lists
    monkeypatch.setattr(torchvision.datasets, "Caltech101", refuse)
    monkeypatch.setattr(torchvision.datasets, "StanfordCars", refuse)
    monkeypatch.setattr(stanford_dogs, "_load_list", refuse)
    monkeypatch.setattr(world, "render_many", refuse)


def _image_folder_root(tmp_path: Path) -> Path:
    _class_folders(tmp_path / "folder" / "val")
    (tmp_path / "classes.txt").write_text("red_fox\tfox\ncat\n", encoding="utf-8")
    _class_folders(tmp_path / "flat", names=("tabby_cat", "dog"))
    return tmp_path


# (name, root: "paper", "standard" or "folder", kwargs); Flowers' standard layout is read, not
# skipped (its .mat files are MD5-checked as when building): see test_flowers_standard_vocabulary.
VOCABULARY_CASES = [
    *[(name, "paper", {"split": split}) for name in FOUR for split in ("train", "val", "test")],
    ("caltech101", "standard", {}),
    *[(name, "standard", {"split": split})
      for name in ("stanford_cars", "stanford_dogs") for split in ("train", "test")],
    ("stanford_cars", "paper", {"layout": "paper", "split": "val"}),
    ("image_folder", "folder", {"root": "flat", "template": "a blurry photo of a {}."}),
    ("image_folder", "folder", {"root": "folder", "split": "val", "classes_file": "classes.txt", "name": "pets"}),
    ("demo_objects", None, {"split": "val", "num_per_class": 3, "seed": 4}),
    ("demo_textures", None, {}),
]


@pytest.mark.filterwarnings("ignore:Caltech101. torchvision's layout has no splits")
@pytest.mark.parametrize("name, where, kwargs", VOCABULARY_CASES)
def test_vocabulary_is_the_built_datasets_without_building_it(request, tmp_path, name, where, kwargs):
    kwargs = dict(kwargs)
    root = {"paper": request.getfixturevalue("paper_root") if where == "paper" else None,
            "standard": request.getfixturevalue("standard_root") if where == "standard" else None,
            "folder": _image_folder_root(tmp_path) if where == "folder" else None, None: None}[where]
    if where == "folder":
        root = root / kwargs.pop("root")
        if "classes_file" in kwargs:
            kwargs["classes_file"] = str(tmp_path / kwargs["classes_file"])
    expected = built_vocabulary(name, root, **kwargs)
    request.getfixturevalue("nothing_built")
    assert read_vocabulary(name, None if root is None else str(root), **kwargs) == expected


def test_flowers_standard_vocabulary(standard_root, md5_ok):
    assert read_vocabulary("oxford_flowers", str(standard_root)) == built_vocabulary("oxford_flowers", standard_root)


def _error(call) -> tuple[type, str]:
    with pytest.raises(Exception) as err:
        call()
    return type(err.value), str(err.value)


@pytest.mark.parametrize("name, root, kwargs", [
    *[(name, "absent", {}) for name in FOUR],
    *[(name, None, {}) for name in FOUR],
    ("caltech101", "paper", {"split": "dev"}),
    ("caltech101", "paper", {"layout": "coop"}),
    ("stanford_cars", "standard", {"split": "val"}),
    ("stanford_dogs", "empty", {}),
    ("image_folder", "absent", {}),
    ("image_folder", None, {}),
    ("image_folder", "empty", {"split": "train"}),
    ("image_folder", "empty", {"template": "a photo"}),
    ("demo_objects", None, {"split": "dev"}),
    ("demo_textures", None, {"num_per_class": 0}),
])
def test_vocabulary_fails_as_building_does(request, tmp_path, name, root, kwargs):
    (tmp_path / "empty").mkdir()
    if root in ("paper", "standard"):
        path = str(request.getfixturevalue(f"{root}_root"))
    else:
        path = None if root is None else str(tmp_path / root)
    built = _error(lambda: get_dataset_factory(name)(path, **kwargs))
    assert _error(lambda: read_vocabulary(name, path, **kwargs)) == built


def test_missing_standard_files_fail_the_vocabulary_too(tmp_path):
    fake.make_cars(tmp_path, "standard")
    (tmp_path / "stanford_cars" / "cars_test_annos_withlabels.mat").unlink()
    fake.make_dogs(tmp_path, "standard")
    (tmp_path / "stanford_dogs" / "test_list.mat").unlink()
    for name in ("stanford_cars", "stanford_dogs"):
        built = _error(lambda: build(name, tmp_path))
        assert _error(lambda: read_vocabulary(name, str(tmp_path))) == built and built[0] is DatasetLayoutError


def test_a_replaced_factory_does_not_keep_the_old_reader(scratch_registry, tmp_path):
    _class_folders(tmp_path)

    def renamed(root=None, split="test", transform=None):
        return ImageListDataset([], ["zebra"], ["a {}."], "image_folder")

    register_dataset("image_folder")(renamed)
    assert read_vocabulary("image_folder", str(tmp_path)) == (["zebra"], ["a {}."])


def test_datamodule_dataset_vocabulary_before_setup(paper_root, standard_root, monkeypatch):
    def make() -> EvaluationDataModule:
        return EvaluationDataModule(
            {"stanford_cars": str(standard_root), "stanford_dogs": None, "demo_objects": None},
            data_root=str(paper_root),
            dataset_kwargs={"stanford_cars": {"split": "train", "layout": "standard"},
                            "demo_objects": {"num_per_class": 1}},
        )

    dm = make()
    dm.setup("test")
    expected = dm.vocabularies
    assert {name: dm.dataset_vocabulary(name) for name in dm.roots} == expected  # read from the built datasets
    fresh = make()
    monkeypatch.setattr(EvaluationDataModule, "build_dataset", lambda *a, **k: pytest.fail("built a dataset"))
    assert {name: fresh.dataset_vocabulary(name) for name in fresh.roots} == expected
    assert fresh.eval_datasets == {}


# ---------------------------------------------------------------- image_folder

def _class_folders(root: Path, names=("red_fox", "cat")) -> None:
    for c, name in enumerate(names):
        for i in range(2):
            fake.write_jpeg(root / name / f"{i}.jpg", seed=10 * c + i)


def test_image_folder_flat(tmp_path):
    _class_folders(tmp_path)
    ds = build("image_folder", tmp_path, template="a blurry photo of a {}.")
    assert ds.classnames == ["cat", "red fox"] and ds.targets == [0, 0, 1, 1]
    assert ds.templates == ["a blurry photo of a {}."]
    with pytest.raises(ConfigError, match="use split='test'"):
        build("image_folder", tmp_path, "train")
    with pytest.raises(ConfigError, match="image_folder: template must be a string with exactly one"):
        build("image_folder", tmp_path, template="a photo")
    with pytest.raises(ConfigError, match="image_folder: unknown split 'dev'"):
        build("image_folder", tmp_path, "dev")


def test_image_folder_splits_and_class_list(tmp_path):
    _class_folders(tmp_path / "val")
    listing = tmp_path / "classes.txt"
    listing.write_text("# order and names\nred_fox\tfox\ncat\n", encoding="utf-8")
    ds = build("image_folder", tmp_path, "val", classes_file=str(listing))
    assert ds.classnames == ["fox", "cat"] and ds.targets == [1, 1, 0, 0]
    with pytest.raises(DatasetLayoutError, match="the split 'test'"):
        build("image_folder", tmp_path, "test")
    listing.write_text("dog\n", encoding="utf-8")
    with pytest.raises(DatasetLayoutError, match="missing class folder"):
        build("image_folder", tmp_path, "val", classes_file=str(listing))


# ---------------------------------------------------------------- EvaluationDataModule

def test_datamodule_end_to_end(paper_root):
    order = ["stanford_dogs", "caltech101", "oxford_flowers", "stanford_cars"]
    dm = EvaluationDataModule(order, data_root=str(paper_root), batch_size=2)
    dm.transform = TRANSFORM
    dm.setup("test")
    assert list(dm.eval_datasets) == order
    loaders = dm.test_dataloader()
    assert len(loaders) == 4 and len(dm.val_dataloader()) == 4
    for name, loader in zip(order, loaders):
        images, labels = next(iter(loader))
        assert images.shape == (2, 3, 8, 8) and images.dtype == torch.float32
        assert labels.tolist() == [0, 1]  # no shuffling
        assert sum(len(y) for _, y in loader) == len(PAPER_EXPECTED[name][0])


def test_datamodule_roots_kwargs_and_module_preprocess(paper_root, standard_root):
    dm = EvaluationDataModule(
        {"stanford_cars": str(standard_root / "stanford_cars"), "caltech101": None},
        data_root=str(paper_root),
        dataset_kwargs={"stanford_cars": {"split": "train", "layout": "standard"}},
    )
    dm.trainer = SimpleNamespace(lightning_module=SimpleNamespace(preprocess=TRANSFORM))
    dm.setup("test")
    cars, caltech = dm.eval_datasets.values()
    assert (cars.layout, cars.split, len(cars)) == ("standard", "train", 6)
    assert caltech.layout == "paper" and caltech.transform is TRANSFORM
    assert next(iter(dm.test_dataloader()[1]))[0].shape[1:] == (3, 8, 8)


def test_datamodule_vocabularies_resolve_the_forget_spec(paper_root):
    dm = EvaluationDataModule(list(FOUR), data_root=str(paper_root))
    dm.setup("test")
    vocabularies = dm.vocabularies
    assert list(vocabularies) == list(FOUR)
    assert vocabularies["stanford_dogs"].classnames == tuple(dm.eval_datasets["stanford_dogs"].classnames)
    spec = resolve_forget_spec(["toy_poodle"], vocabularies)  # case/underscore-insensitive
    assert spec.dataset == "stanford_dogs" and spec.names == ("toy poodle",)
    assert spec.targets["stanford_dogs"] == (3,) and spec.targets["caltech101"] == ()
    with pytest.raises(UnknownNameError, match=r"class 'Pekingese' is in none of the evaluation datasets.*'Pekinese'"):
        resolve_forget_spec(["Pekingese"], vocabularies)


def test_datamodule_class_images_draws_real_images_of_the_classes(paper_root):
    dm = EvaluationDataModule(["stanford_dogs"], data_root=str(paper_root))
    dm.transform = TRANSFORM
    images, labels = dm.class_images("stanford_dogs", [1, 3], split="train", per_class=1, seed=0)
    assert images.shape == (2, 3, 8, 8) and labels.tolist() == [1, 3]
    again, _ = dm.class_images("stanford_dogs", [1, 3], split="train", per_class=1, seed=0)
    assert torch.equal(images, again)


def test_datamodule_fails_early():
    with pytest.raises(ConfigError, match="has no root"):
        EvaluationDataModule(["caltech101"])
    with pytest.raises(ConfigError, match="not in datasets"):
        EvaluationDataModule(["caltech101"], data_root="/d", dataset_kwargs={"stanford_dogs": {}})


def test_datamodule_without_transform(paper_root):
    dm = EvaluationDataModule(["stanford_dogs"], data_root=str(paper_root))
    dm.setup("test")
    with pytest.raises(ConfigError, match="no image transform"):
        dm.test_dataloader()


def test_shard_sampler_splits_without_padding():
    from lightning_unlearn.datamodules.evaluation_data import ShardSampler

    data = list(range(7))
    shards = [list(ShardSampler(data, num_replicas=3, rank=r)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]] and [len(ShardSampler(data, 3, r)) for r in range(3)] == [3, 2, 2]
    assert sorted(sum(shards, [])) == data  # every image once, none repeated
