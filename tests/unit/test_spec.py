"""The forget spec: one pure function resolves what is forgotten, among which classes."""

from __future__ import annotations

import pytest

from lightning_unlearn.core.errors import ConfigError, UnknownNameError
from lightning_unlearn.maths.forget_spec import ForgetSpec, Vocabulary, resolve_forget_spec

DOGS = Vocabulary(("Chihuahua", "Pekinese", "toy poodle", "Scotch terrier"), ("a photo of a {}.",), "stanford_dogs")
CALTECH = Vocabulary(("face", "euphonium", "minaret", "toy poodle"), ("a photo of a {}.",), "caltech101")
FLOWERS = Vocabulary(("gazania", "tree mallow"), ("a photo of a {}, a type of flower.",), "oxford_flowers")


def test_the_one_dataset_holding_every_class_gives_the_vocabulary():
    spec = resolve_forget_spec(["pekinese", "Scotch_terrier"], {"stanford_dogs": DOGS, "oxford_flowers": FLOWERS})
    assert isinstance(spec, ForgetSpec)
    assert spec.dataset == "stanford_dogs" and spec.vocabulary is DOGS
    assert spec.forget_indices == (1, 3) and spec.names == ("Pekinese", "Scotch terrier")
    assert spec.prompts == ("A picture of Pekinese", "A picture of Scotch terrier")
    assert spec.targets == {"stanford_dogs": (1, 3), "oxford_flowers": ()}
    assert spec.retain_indices() == [0, 2]


def test_targets_are_found_in_every_dataset_that_has_the_class():
    spec = resolve_forget_spec(["toy poodle"], {"stanford_dogs": DOGS, "caltech101": CALTECH}, forget_dataset="stanford_dogs")
    assert spec.targets == {"stanford_dogs": (2,), "caltech101": (3,)}


def test_explicit_vocabulary_and_prompt():
    vocabulary = Vocabulary(("cat", "dog", "car"), ("a photo of a {}.",))
    spec = resolve_forget_spec("dog", {}, forget_prompt="an image of {}", vocabulary=vocabulary)
    assert spec.dataset is None and spec.forget_indices == (1,) and spec.prompts == ("an image of dog",)


@pytest.mark.parametrize(
    ("classes", "kwargs", "error", "message"),
    [
        (["Pekingese"], {}, UnknownNameError, r"class 'Pekingese' is in none of the evaluation datasets.*'Pekinese'"),
        (["Pekingese"], {"forget_dataset": "stanford_dogs"}, UnknownNameError,
         r"unknown class 'Pekingese' in dataset 'stanford_dogs'; close matches: 'Pekinese'"),
        (["gazania"], {"forget_dataset": "stanford_dogs"}, UnknownNameError, r"it is a class of 'oxford_flowers'"),
        (["toy poodle"], {}, ConfigError, r"occur in several datasets.*set forget_dataset"),
        (["Pekinese"], {"forget_dataset": "stanford_dgs"}, UnknownNameError, r"close matches: 'stanford_dogs'"),
        ([], {}, ConfigError, "forget_classes is empty"),
        (["Pekinese", "pekinese"], {}, ConfigError, "lists a class twice"),
        (["Pekinese"], {"forget_prompt": "A picture of"}, ConfigError, r"forget_prompt must be a string with exactly one"),
        (["gazania", "tree mallow"], {}, ConfigError, "would forget every class of oxford_flowers"),
    ],
)
def test_bad_requests_name_the_value_and_what_is_valid(classes, kwargs, error, message):
    vocabularies = {"stanford_dogs": DOGS, "caltech101": CALTECH, "oxford_flowers": FLOWERS}
    with pytest.raises(error, match=message):
        resolve_forget_spec(classes, vocabularies, **kwargs)


def test_no_vocabulary_at_all_is_an_error():
    with pytest.raises(ConfigError, match="no class vocabulary"):
        resolve_forget_spec(["dog"], {})


def test_vocabulary_checks_its_templates():
    with pytest.raises(ConfigError, match="exactly one"):
        Vocabulary(("a", "b"), ("no placeholder",))
