"""docs/DESIGN.md matches the code: its module map names every module of the package (and only
modules that exist), and each of its rules names a test that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lightning_unlearn"
DESIGN = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")


def _module_map() -> str:
    section = DESIGN.split("## Modules", 1)[1]
    return section.split("```", 2)[1]


def _named_modules() -> set[str]:
    """Module files the map names, relative to the package: ``dir/file.py`` entries, and the bare
    ``file.py`` names listed after a folder (``datasets/  base.py, _spec.py, ...``)."""
    named, folder = set(), ""
    for line in _module_map().splitlines()[1:]:
        head = re.match(r"\s{2}(\S+)", line)
        if head:
            entry = head.group(1)
            folder = entry.rstrip("/") if entry.endswith("/") else (entry.rsplit("/", 1)[0] if "/" in entry else "")
            if entry.endswith(".py"):
                named.add(entry)
        for name in re.findall(r"(?<![\w/.])(\w+\.py)\b", line[2 + len(head.group(1)) if head else 0:]):
            named.add(f"{folder}/{name}" if folder else name)
    return named


def test_design_names_every_module() -> None:
    actual = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
              if p.name != "__init__.py" or p.parent == PACKAGE}
    named = _named_modules()
    assert not actual - named, f"modules docs/DESIGN.md does not name: {sorted(actual - named)}"
    assert not named - actual, f"docs/DESIGN.md names modules that do not exist: {sorted(named - actual)}"


def test_every_rule_names_an_existing_test() -> None:
    rules = DESIGN.split("## Rules the pieces keep", 1)[1]
    bullets = re.split(r"\n- ", rules)[1:]
    assert bullets, "no rules found"
    for bullet in bullets:
        tests = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", bullet)
        assert tests, f"a rule without a test: {bullet[:80]!r}"
        for path, name in tests:
            source = (ROOT / path).read_text(encoding="utf-8")
            assert re.search(rf"^def {name}\(", source, re.M), f"{path}::{name} does not exist"
