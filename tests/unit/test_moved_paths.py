"""Nothing a user types breaks: every class path of the packaged configs and presets imports, and
every module path of the old flat layout still imports (the same module, with a DeprecationWarning
naming the new path)."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import yaml

from lightning_unlearn._moved import MOVED_MODULES

PACKAGE = Path(__file__).resolve().parents[2] / "lightning_unlearn"


def _class_paths() -> list[str]:
    paths = set()
    for config in [*sorted((PACKAGE / "configs").glob("*.yaml")), PACKAGE / "presets.yaml"]:
        paths |= set(re.findall(r"(?:class_path|method):\s*(lightning_unlearn[\w.]+)", config.read_text(encoding="utf-8")))
    return sorted(paths)


@pytest.mark.parametrize("class_path", _class_paths())
def test_every_class_path_of_the_packaged_configs_imports(class_path: str) -> None:
    module, _, name = class_path.rpartition(".")
    assert isinstance(getattr(importlib.import_module(module), name), type), class_path


@pytest.mark.parametrize("old, new", sorted(MOVED_MODULES.items()))
def test_old_module_paths_import_the_moved_module_with_a_deprecation_warning(old: str, new: str, monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, old, raising=False)  # import it afresh, as a new process would
    with pytest.warns(DeprecationWarning, match=re.escape(f"`{old}` moved to `{new}`")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__spec__.name == new  # the moved module keeps its own identity


def test_old_class_paths_name_the_same_classes(monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "lightning_unlearn.models", raising=False)
    with pytest.warns(DeprecationWarning):
        from lightning_unlearn.models import load_clip as old
    from lightning_unlearn.clip.loading import load_clip

    assert old is load_clip


@pytest.mark.parametrize("package", ["lightning_unlearn.callbacks", "lightning_unlearn.datamodules",
                                     "lightning_unlearn.methods"])
def test_the_public_subpackages_are_real_and_import_without_a_warning(package: str, recwarn) -> None:
    """``callbacks``, ``datamodules`` and ``methods`` are the package's public namespaces (the configs'
    class paths): real folders, not moved paths."""
    assert package not in MOVED_MODULES
    module = importlib.import_module(package)
    assert Path(module.__file__).parent == PACKAGE / package.rsplit(".", 1)[1]
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning) and "moved to" in str(w.message)]
