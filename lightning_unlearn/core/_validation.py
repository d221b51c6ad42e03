"""Argument checks shared by the project's classes (one message per kind of mistake).

Each ``_..._validation`` function raises :class:`~lightning_unlearn.core.errors.ConfigError` naming the
argument, the value given and what would be valid, and returns nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from lightning_unlearn.core.errors import ConfigError


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_number_validation(name: str, value: Any, allow_zero: bool = False) -> None:
    """A finite number > 0 (>= 0 with ``allow_zero``); rejects NaN, inf and bools."""
    ok = _is_number(value) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")


def _positive_int_validation(name: str, value: Any, allow_none: bool = False, allow_zero: bool = False) -> None:
    """An int >= 1 (>= 0 with ``allow_zero``; None with ``allow_none``); rejects bools and floats."""
    if value is None and allow_none:
        return
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        extra = " or None" if allow_none else ""
        raise ConfigError(f"{name} must be an int >= {low}{extra}, got {value!r}")


def _unit_interval_validation(name: str, value: Any, open_low: bool = False, open_high: bool = False) -> None:
    """A number in [0, 1]; ``open_low``/``open_high`` exclude the ends."""
    ok = _is_number(value) and math.isfinite(value)
    if ok:
        ok = (value > 0 if open_low else value >= 0) and (value < 1 if open_high else value <= 1)
    if not ok:
        interval = ("(" if open_low else "[") + "0, 1" + (")" if open_high else "]")
        raise ConfigError(f"{name} must be a number in {interval}, got {value!r}")


def _template_validation(name: str, template: Any) -> None:
    """A prompt template: a string with exactly one ``{}`` for the class name."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ConfigError(f"{name} must be a string with exactly one '{{}}' for the class name, got {template!r}")


def _templates_validation(name: str, templates: Any) -> None:
    """A non-empty list of prompt templates, each with one ``{}``."""
    if isinstance(templates, str) or not isinstance(templates, Sequence) or not templates:
        raise ConfigError(f"{name} must be a non-empty list of templates with one '{{}}', got {templates!r}")
    for template in templates:
        _template_validation(f"each of {name}", template)


def _choice_validation(name: str, value: Any, choices: Sequence[Any]) -> None:
    """One of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _k_validation(name: str, k: Any, groups: Optional[Sequence[str]] = None) -> None:
    """A positive int, or a mapping group -> positive int (naming exactly ``groups`` if given)."""
    if isinstance(k, Mapping):
        if not k:
            raise ConfigError(f"{name} must be a positive int or a non-empty dict of group -> positive int, got {k!r}")
        for group, value in k.items():
            if not isinstance(group, str):
                raise ConfigError(f"{name} keys must be group names (str), got {group!r}")
            _positive_int_validation(f"{name}[{group!r}]", value)
        if groups is not None and set(k) != set(groups):
            unknown, missing = sorted(set(k) - set(groups)), sorted(set(groups) - set(k))
            raise ConfigError(
                f"{name} must give a value for exactly the groups {sorted(groups)}, got {dict(k)!r}"
                + (f" (unknown: {unknown})" if unknown else "")
                + (f" (missing: {missing})" if missing else "")
            )
        return
    _positive_int_validation(name, k)


def _number_list_validation(name: str, values: Any, positive_ints: bool = False) -> None:
    """A non-empty list of finite numbers > 0 (ints >= 1 with ``positive_ints``)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        kind = "positive ints" if positive_ints else "finite numbers > 0"
        raise ConfigError(f"{name} must be a non-empty list of {kind}, got {values!r}")
    for value in values:
        if positive_ints:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} values must be positive ints, got {value!r} in {list(values)!r}")
        elif not (_is_number(value) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} values must be finite and > 0, got {value!r} in {list(values)!r}")


def _finite_number_validation(name: str, value: Any, allow_none: bool = False) -> None:
    """A finite number (None with ``allow_none``); rejects NaN, inf and bools."""
    if value is None and allow_none:
        return
    if not (_is_number(value) and math.isfinite(value)):
        extra = " or None" if allow_none else ""
        raise ConfigError(f"{name} must be a finite number{extra}, got {value!r}")


def _identifier_validation(name: str, value: Any) -> None:
    """A Python identifier, e.g. an attribute name."""
    if not isinstance(value, str) or not value.isidentifier():
        raise ConfigError(f"{name} must be an attribute name (a Python identifier), got {value!r}")


def _str_keyed_dict_validation(name: str, value: Any, what: str) -> None:
    """A non-empty mapping with str keys; ``what`` describes it in the message (e.g. ``"group -> list of k"``)."""
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"{name} must be a non-empty dict of {what}, got {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{name} keys must be strings, got {key!r} in {dict(value)!r}")


def _regex_list_validation(name: str, patterns: Any) -> None:
    """A non-empty list of strings that compile as regular expressions."""
    if isinstance(patterns, (str, bytes)) or not isinstance(patterns, Sequence) or not patterns:
        raise ConfigError(f"{name} must be a non-empty list of regex patterns, got {patterns!r}")
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ConfigError(f"{name} patterns must be strings, got {pattern!r} in {list(patterns)!r}")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"{name} has an invalid regex {pattern!r}: {err}") from err
