"""Class names: the one normaliser, and close matches for error messages.

A class is matched case-insensitively, with underscores as spaces and runs of white space folded
("Scotch_terrier" == "scotch terrier"); in a prompt, underscores become spaces (the CoOp
convention the paper's datasets follow).
"""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence


def prompt_name(name: str) -> str:
    """A class name as it goes into a prompt: underscores become spaces."""
    return name.replace("_", " ").strip()


def class_key(name: str) -> str:
    """The form two class names are compared in (case, underscores and spacing ignored)."""
    return " ".join(prompt_name(name).casefold().split())


def close_matches(word: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Close matches of ``word`` among ``candidates`` (compared by :func:`class_key`, original spelling)."""
    keyed: dict[str, str] = {}
    for candidate in candidates:
        keyed.setdefault(class_key(candidate), candidate)
    hits = difflib.get_close_matches(class_key(word), list(keyed), n=n, cutoff=0.5)
    return [keyed[hit] for hit in hits]


def matches_clause(word: str, candidates: Iterable[str]) -> str:
    """``"; close matches: 'a', 'b'"`` for the close matches of ``word``, or ``""`` if there are none."""
    hint = close_matches(word, candidates)
    return f"; close matches: {', '.join(map(repr, hint))}" if hint else ""


def unknown_name_message(kind: str, name: str, known: Sequence[str], where: str = "", show_all: int = 12) -> str:
    """``unknown <kind> 'x' [in where]; close matches: 'a', 'b'`` plus the known names if they are few."""
    message = f"unknown {kind} {name!r}" + (f" in {where}" if where else "")
    clause = matches_clause(name, known)
    if clause:
        message += clause
    elif known and len(known) <= show_all:
        message += f"; known: {', '.join(map(repr, known))}"
    return message
