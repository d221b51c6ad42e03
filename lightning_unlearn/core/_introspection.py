"""What a class takes as ``__init__`` arguments (the project's ``**kwargs`` convention included)."""

from __future__ import annotations

import inspect


def init_parameters(cls: type) -> list[str]:
    """The argument names ``cls(...)`` takes: those of its ``__init__`` and, where an ``__init__``
    passes ``**kwargs`` on, those of the base classes' (the project's convention)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names: dict[str, None] = {}  # ordered, without repeats
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        params = inspect.signature(init).parameters.values()
        names.update(dict.fromkeys(p.name for p in params if p.kind in kinds and p.name != "self"))
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return list(names)
