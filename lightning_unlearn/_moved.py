"""Old module paths of the package, kept importable after the layout of 2026-12-07.

The package is laid out in floors (``core`` < ``maths`` < ``clip``/``datasets`` < ``evaluation``
< ``methods``/``datamodules``/``demo`` < ``callbacks`` < ``lightning`` (the LightningModule) < the
application at the top level). Modules that lived elsewhere before
keep working under their old names, so that configs, checkpoints and user code written against
them still load: importing an old path gives the module at its new home (the same module object,
so classes compare equal) and a :class:`DeprecationWarning` that names the new path.

This is done by one import finder (installed by ``lightning_unlearn/__init__.py``) rather than
files at the old paths, so the old paths hold no code that could drift from the real modules.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Optional, Sequence

#: old module path -> new module path.
MOVED_MODULES: dict[str, str] = {
    "lightning_unlearn.errors": "lightning_unlearn.core.errors",
    "lightning_unlearn.io": "lightning_unlearn.core.io",
    "lightning_unlearn.names": "lightning_unlearn.core.names",
    "lightning_unlearn._validation": "lightning_unlearn.core._validation",
    "lightning_unlearn._distributed": "lightning_unlearn.core._distributed",
    "lightning_unlearn._introspection": "lightning_unlearn.core._introspection",
    "lightning_unlearn.spec": "lightning_unlearn.maths.forget_spec",
    "lightning_unlearn.zeroshot": "lightning_unlearn.maths.zeroshot",
    "lightning_unlearn.objectives": "lightning_unlearn.maths.objectives",
    "lightning_unlearn.synthesis": "lightning_unlearn.maths.synthesis",
    "lightning_unlearn.textedit": "lightning_unlearn.maths.textedit",
    "lightning_unlearn.metrics": "lightning_unlearn.maths.metrics",
    "lightning_unlearn.promptbank": "lightning_unlearn.maths.promptbank",
    "lightning_unlearn.models": "lightning_unlearn.clip.loading",
    "lightning_unlearn.module": "lightning_unlearn.lightning.module",
    "lightning_unlearn.report": "lightning_unlearn.callbacks.run_report",
    "lightning_unlearn.callbacks.report": "lightning_unlearn.callbacks.unlearning_report",
    "lightning_unlearn.datamodules.evaluation": "lightning_unlearn.datamodules.evaluation_data",
    "lightning_unlearn.methods.base": "lightning_unlearn.methods.contract",
    "lightning_unlearn.demo.datasets": "lightning_unlearn.demo.world_datasets",
}


def _renamed_leaves(moved: dict[str, str]) -> dict[str, str]:
    """``from lightning_unlearn.callbacks import report`` looks for ``report`` below the package's
    *new* name: alias the old leaf names of renamed files there too."""
    extra = {}
    for old, new in moved.items():
        parent, leaf = old.rsplit(".", 1)
        if parent in moved and new.rsplit(".", 1)[1] != leaf:
            extra[f"{moved[parent]}.{leaf}"] = new
    return extra


MOVED_MODULES.update(_renamed_leaves(MOVED_MODULES))


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to the module at its new path, with a DeprecationWarning."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]] = None, target: Optional[ModuleType] = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED_MODULES[spec.name]
        # stacklevel 2: `warnings` skips importlib's frames, so this names the importing line
        warnings.warn(f"`{spec.name}` moved to `{new}`; import it from there (the old path will be removed)",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # importlib stamped the old path's spec (and, for a plain module, an empty __path__) on the
        # shared module: give it back its own
        module.__spec__ = self._specs.pop(module.__spec__.name, module.__spec__)
        if module.__spec__.submodule_search_locations is None and "__path__" in vars(module):
            del module.__path__


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once), ahead of the path finder: an old
    submodule path such as ``lightning_unlearn.callbacks.escalation`` must not be found as a file
    below the new folder and loaded a second time."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
