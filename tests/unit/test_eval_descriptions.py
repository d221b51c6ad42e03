"""Class descriptions files (evaluation/descriptions.py): the shipped one, and bad files."""

from __future__ import annotations

import json

import pytest

from lightning_unlearn.demo import world
from lightning_unlearn.core.errors import ConfigError, MissingFileError
from lightning_unlearn.evaluation.descriptions import PACKAGED_DESCRIPTIONS, descriptions_for, load_descriptions


def test_the_shipped_demo_descriptions_cover_every_demo_class():
    descriptions = load_descriptions("demo")
    classes = list(world.OBJECT_CLASSES) + list(world.TEXTURE_CLASSES)
    covered = descriptions_for(descriptions, classes, "demo")
    assert all(len(texts) >= 2 for texts in covered.values())
    assert PACKAGED_DESCRIPTIONS["demo"].is_file()


def test_a_file_path_loads_and_classes_match_by_normalised_name(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"Scotch_terrier": ["a small dog."]}))
    assert descriptions_for(load_descriptions(str(path)), ["scotch terrier"], "d") == {"scotch terrier": ["a small dog."]}


def test_invalid_json_is_a_config_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"anchor": ["a hook",]')
    with pytest.raises(ConfigError, match=r"is not valid JSON"):
        load_descriptions(str(path))


@pytest.mark.parametrize("data, message", [
    ([["anchor", "x"]], r"must be a non-empty JSON object"),
    ({"anchor": "a hook"}, r"\['anchor'\] must be a non-empty list of descriptions"),
    ({"anchor": ["ok", ""]}, r"each description must be a non-empty string"),
    ({"anchor": ["a"], "Anchor": ["b"]}, r"names one class twice"),
])
def test_malformed_descriptions_name_the_problem(tmp_path, data, message):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message):
        load_descriptions(str(path))


def test_a_missing_forgotten_class_is_named_with_close_matches():
    with pytest.raises(ConfigError, match=r"no descriptions of the forgotten class 'ankor'.*close matches: 'anchor'"):
        descriptions_for(load_descriptions("demo"), ["ankor"], "descriptions 'demo'")


def test_an_unknown_file_lists_the_packaged_names():
    with pytest.raises(MissingFileError, match=r"does not exist; packaged descriptions: demo"):
        load_descriptions("no/such/file.json")
