"""Class descriptions files (evaluation/descriptions.py): the shipped one, and bad files."""

from __future__ import annotations

import json
import re

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


# ------------------------------------------------------------------------------ the shipped paraphrases
#: Words derived from a class's name (or its usual short forms) that a paraphrase must not use either.
DERIVED = {
    "airplane": ["plane", "aeroplane"], "bicycle": ["bike", "cycl"], "hourglass": ["hour", "sandglass"],
    "umbrella": ["brolly"], "star": ["starr"], "key": ["keyhole"], "moon": ["lunar"],
    "bubbly": ["bubbl"], "chequered": ["chequer", "checker", "check"], "cracked": ["crack"],
    "marbled": ["marble"], "polka-dotted": ["polka", "dot"], "spiralled": ["spiral"], "striped": ["stripe"],
    "woven": ["weav", "wove"], "zigzagged": ["zigzag", "zig", "zag"], "house": ["hous"],
}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _stems(cls: str) -> list[str]:
    """The class's own words (a hyphenated name's parts too) and the listed derivations."""
    return sorted({w for w in re.split(r"[\s_-]+", cls.lower()) if w} | {cls.lower().replace("-", "")}
                  | set(DERIVED.get(cls, [])))


def test_the_shipped_paraphrases_cover_every_demo_class_with_several_distinct_prompts():
    paraphrases = load_descriptions("demo-paraphrases")
    classes = list(world.OBJECT_CLASSES) + list(world.TEXTURE_CLASSES)
    covered = descriptions_for(paraphrases, classes, "demo-paraphrases")
    assert set(paraphrases) == set(classes)
    assert PACKAGED_DESCRIPTIONS["demo-paraphrases"].is_file()
    for cls, texts in covered.items():
        assert 6 <= len(texts) <= 8, cls
        assert len(set(texts)) == len(texts), cls
    every = [t for texts in paraphrases.values() for t in texts]
    assert len(set(every)) == len(every)  # no prompt stands for two classes


@pytest.mark.parametrize("cls", list(world.OBJECT_CLASSES) + list(world.TEXTURE_CLASSES))
def test_no_paraphrase_says_its_class_word_or_a_word_derived_from_it(cls):
    texts = load_descriptions("demo-paraphrases")[cls]
    stems = _stems(cls)
    for text in texts:
        said = [w for w in _words(text) for s in stems if w.startswith(s)]
        assert not said, f"{cls}: {text!r} says {said}"


def test_no_paraphrase_names_another_demo_class():
    # a paraphrase that names another class would measure confusion between two classes, not language
    paraphrases = load_descriptions("demo-paraphrases")
    names = {cls: {w for w in re.split(r"[\s_-]+", cls.lower()) if len(w) > 2} for cls in paraphrases}
    for cls, texts in paraphrases.items():
        for text in texts:
            words = set(_words(text))
            named = [other for other, own in names.items() if other != cls
                     and any(w in words or w + "s" in words or w + "es" in words for w in own)]
            assert not named, f"{cls}: {text!r} names {named}"


def test_the_class_word_check_can_fail():
    stems = _stems("polka-dotted")
    assert [w for w in _words("a dotty fabric.") if any(w.startswith(s) for s in stems)] == ["dotty"]
