"""Class descriptions: a JSON file of class name -> list of texts (CuPL-style prompts).

The same file format serves two purposes: description prompts for synthesis (the paper's Table 8:
each synthetic image is made for one description of its class, drawn at random) and paraphrase
prompts at evaluation (does the class come back under another wording?). Every text is a complete
prompt, used as it is (no template is applied to it).

A value may be a file path or the name of a file shipped with the package:

- ``demo``: descriptions of the demo world's classes that name the class
  (``lightning_unlearn/demo/descriptions.json``, the synthesis prompts);
- ``demo-paraphrases``: seven paraphrases of every demo class that never name it nor a word
  derived from it ("a six-string instrument", "a wax light with a wick"), varied in wording and in
  what they describe (shape, use, parts), written without looking at any result
  (``lightning_unlearn/demo/paraphrases.json``): does the concept come back when the word is not
  said?
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from lightning_unlearn.core.errors import ConfigError, MissingFileError
from lightning_unlearn.core.names import class_key, matches_clause

#: Description files shipped with the package, by name.
PACKAGED_DESCRIPTIONS: dict[str, Path] = {
    "demo": Path(__file__).resolve().parents[1] / "demo" / "descriptions.json",
    "demo-paraphrases": Path(__file__).resolve().parents[1] / "demo" / "paraphrases.json",
}

Descriptions = dict[str, list[str]]


def resolve_descriptions_path(value: str) -> Path:
    """A descriptions value as a file: an existing path as is, else a packaged name.

    Raises:
        MissingFileError: neither a file nor a packaged name (the message lists the packaged names).
    """
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if value in PACKAGED_DESCRIPTIONS:
        return PACKAGED_DESCRIPTIONS[value]
    raise MissingFileError(
        f"descriptions file {value!r} does not exist; packaged descriptions: {', '.join(sorted(PACKAGED_DESCRIPTIONS))}"
    )


def check_descriptions(data: Any, where: str) -> Descriptions:
    """``data`` as class -> non-empty list of non-empty strings (a copy), or a ConfigError naming ``where``."""
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{where} must be a non-empty JSON object of class name -> list of descriptions, "
                          f"got {type(data).__name__}")
    out: Descriptions = {}
    seen: dict[str, str] = {}
    for name, texts in data.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: class names must be non-empty strings, got {name!r}")
        if class_key(name) in seen:
            raise ConfigError(f"{where} names one class twice: {seen[class_key(name)]!r} and {name!r}")
        seen[class_key(name)] = name
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
            raise ConfigError(f"{where}[{name!r}] must be a non-empty list of descriptions, got {texts!r}")
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"{where}[{name!r}] holds {text!r}; each description must be a non-empty string")
        out[name] = [str(t) for t in texts]
    return out


def load_descriptions(value: Union[str, Mapping[str, Sequence[str]]]) -> Descriptions:
    """Read and check descriptions from a file path, a packaged name, or an in-memory dict.

    Raises:
        MissingFileError: the file does not exist.
        ConfigError: the file is not valid JSON or not a dict of class -> list of strings.
    """
    if not isinstance(value, str):
        return check_descriptions(value, "descriptions")
    path = resolve_descriptions_path(value)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ConfigError(f"descriptions file {str(path)!r} is not valid JSON: {err}") from err
    except OSError as err:
        raise MissingFileError(f"cannot read descriptions file {str(path)!r}: {err}") from err
    return check_descriptions(data, f"descriptions file {str(path)!r}")


def descriptions_for(descriptions: Mapping[str, list[str]], classes: Sequence[str], where: str) -> dict[str, list[str]]:
    """The descriptions of each class in ``classes`` (matched by :func:`~lightning_unlearn.core.names.class_key`).

    Raises:
        ConfigError: a class has no entry (close matches among the file's classes in the message).
    """
    by_key = {class_key(name): texts for name, texts in descriptions.items()}
    out = {}
    for name in classes:
        texts = by_key.get(class_key(name))
        if texts is None:
            raise ConfigError(
                f"{where} has no descriptions of the forgotten class {name!r}"
                + matches_clause(name, list(descriptions))
                + f" (it describes {len(descriptions)} classes)"
            )
        out[name] = list(texts)
    return out
