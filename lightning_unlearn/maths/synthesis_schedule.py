"""Per-class settings of the synthesis target and the order images are made in.

The published generator (``clip_forget_imagegen.py`` run by ``datagen.sh``) makes one image at a
time: the target probability is one value for the run, each attempt that times out lowers it by the
class's decrement before the next attempt starts, and it is never raised. ``mode: sequential`` of
:class:`~lightning_unlearn.maths.synthesis.SynthesisConfig` is that generator. ``mode: batched`` optimises
many images at once: images that time out in the same iteration lower the target together, and the
images running next to them were already judged against the higher target, so the accepted images
come from another distribution (docs/paper.md has the measurement).

This module holds the pure helpers: checks of the per-class decrements and the mode, resolution of
class names to indices, and the cache-key fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, Callable, Optional

from lightning_unlearn.core import names
from lightning_unlearn.core._validation import _choice_validation, _positive_number_validation
from lightning_unlearn.core.errors import ConfigError, UnknownNameError

#: The orders in which images are made.
MODES = ("batched", "sequential")

#: Fields whose default leaves the cache key of a set made before they existed unchanged.
_KEY_DEFAULTS: dict[str, Any] = {"class_probability_decay": None, "mode": "batched", "init_std": 1.0, "min_iterations": 1}


def check_schedule(cfg: Any) -> None:
    """``mode`` and ``class_probability_decay`` of a ``SynthesisConfig`` (ConfigError quoting the value)."""
    _choice_validation("mode", cfg.mode, MODES)
    if cfg.mode == "sequential" and cfg.batch_size not in (None, 1):
        raise ConfigError(f"batch_size must be None or 1 with mode 'sequential' (one image at a time), "
                          f"got {cfg.batch_size!r}")
    check_class_mapping("class_probability_decay", "decrement", cfg.class_probability_decay, _check_decay)


def _check_decay(field: str, decay: Any) -> None:
    _positive_number_validation(field, decay, allow_zero=True)
    if decay >= 1:
        raise ConfigError(f"{field} must be below 1, got {decay!r}")


def check_class_mapping(field: str, value_name: str, mapping: Optional[Mapping[str, Any]],
                        check_value: Callable[[str, Any], None]) -> None:
    """A per-class setting (``field``): None, or class names (each class once, by
    :func:`~lightning_unlearn.core.names.class_key`) -> values that ``check_value(f"{field}[name]", value)``
    accepts; a ConfigError quoting the bad entry otherwise."""
    if mapping is None:
        return
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{field} must be a dict class name -> {value_name} or None, got {mapping!r}")
    seen: dict[str, str] = {}
    for name, value in mapping.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{field} keys must be class names, got {name!r}")
        key = names.class_key(name)
        if key in seen:
            raise ConfigError(f"{field} names one class twice: {seen[key]!r} and {name!r}")
        seen[key] = name
        check_value(f"{field}[{name!r}]", value)


def resolve_by_name(settings: Optional[Mapping[str, float]], classnames: Sequence[str], where: str) -> dict[int, float]:
    """``settings`` (class name -> value) by class index into ``classnames``; every index whose name
    matches (:func:`lightning_unlearn.core.names.class_key`) gets the value. Empty if ``settings`` is empty.

    Raises:
        UnknownNameError: a named class is not in ``classnames`` (close matches in the message).
    """
    if not settings:
        return {}
    index_of: dict[str, list[int]] = {}
    for i, name in enumerate(classnames):
        index_of.setdefault(names.class_key(name), []).append(i)
    resolved: dict[int, float] = {}
    for name, value in settings.items():
        hits = index_of.get(names.class_key(name))
        if not hits:
            raise UnknownNameError(names.unknown_name_message("class", name, list(classnames), where=where))
        resolved.update({i: float(value) for i in hits})
    return resolved


def resolve_class_decays(config: Any, classnames: Sequence[str]) -> dict[int, float]:
    """``config.class_probability_decay`` by class index into ``classnames`` (for ``synthesize``)."""
    return resolve_by_name(config.class_probability_decay, classnames, "class_probability_decay")


def checked_decays(cfg: Any, decays: Optional[Mapping[int, float]], num_classes: int) -> dict[int, float]:
    """``probability_decays`` of ``synthesize`` checked: class indices -> decrements in [0, 1)."""
    if decays is None:
        if cfg.class_probability_decay:
            # Names need the class list, which synthesize does not have: refuse to ignore them.
            raise ConfigError("config.class_probability_decay is set but synthesize got no probability_decays: "
                              "pass probability_decays=resolve_class_decays(config, classnames)")
        return {}
    checked: dict[int, float] = {}
    for key, decay in decays.items():
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < num_classes:
            raise ConfigError(f"probability_decays keys must be class indices in [0, {num_classes}), got {key!r}")
        _positive_number_validation(f"probability_decays[{key}]", decay, allow_zero=True)
        checked[key] = float(decay)
    return checked


def cache_key_fields(cfg: Any) -> dict[str, Any]:
    """The config's fields for a cache key, leaving out newer fields at their defaults, so that a
    set cached before they existed keeps its key (it was made the same way)."""
    fields = asdict(cfg)
    for name, default in _KEY_DEFAULTS.items():
        if fields.get(name) == default:
            fields.pop(name)
    return fields
