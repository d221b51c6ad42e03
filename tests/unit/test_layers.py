"""The package's import graph, read from the source (ast), keeps the rules of docs/DESIGN.md:

- no import circle between the package's modules;
- no import runs up the floors: a module imports only modules of lower floors, or of its own
  folder (``core`` 0 < ``maths`` 1 < ``clip``, ``datasets`` 2 < ``evaluation`` 3 <
  ``methods``, ``datamodules``, ``demo`` 4 < ``callbacks`` 5 < ``lightning`` 6 (the
  LightningModule and its callback wiring) < the top-level modules 7); folders on one floor do
  not import each other;
- the maths is pure: ``maths/`` touches no file, no Trainer and no model loading;
- no two modules share a name (nor a module and a folder).

Every import counts: at the top, inside functions, under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

from lightning_unlearn._moved import MOVED_MODULES

PACKAGE = Path(__file__).resolve().parents[2] / "lightning_unlearn"

#: Floor of each folder of the package; modules at the top level are the application (floor 5).
FLOORS = {"core": 0, "maths": 1, "clip": 2, "datasets": 2, "evaluation": 3, "methods": 4, "datamodules": 4,
          "demo": 4, "callbacks": 5, "lightning": 6}
TOP = 7
#: What pure maths must not import: files and folders, serialisation, Lightning, model loading.
IMPURE = ("os", "pathlib", "shutil", "tempfile", "json", "pickle", "safetensors", "lightning", "open_clip",
          "lightning_unlearn.core.io", "lightning_unlearn.core._distributed")
#: ...except open_clip's tables of prompt templates and class names (data, no I/O).
PURE_EXCEPTIONS = ("open_clip.zero_shot_metadata",)


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package ``__init__``)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_package)
    return found


MODULES = _modules()


def _imported(name: str, path: Path, is_package: bool) -> list[tuple[str, int]]:
    """Every module name ``name`` imports (absolute, resolved), with its line."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:  # `from pkg import mod` imports the module pkg.mod
                full = f"{module}.{alias.name}"
                out.append((full if full in MODULES or full in MOVED_MODULES else module, node.lineno))
    return out


def _edges() -> dict[str, list[tuple[str, int]]]:
    """Package-internal imports; the root package itself is not an edge (Python imports it first)."""
    edges = {}
    for name, (path, is_package) in MODULES.items():
        edges[name] = [(target, line) for target, line in _imported(name, path, is_package)
                       if target in MODULES and target not in (name, "lightning_unlearn")]
    return edges


def _place(name: str) -> tuple[int, str]:
    """(floor, folder) of a module: its first folder below the package, or the top level."""
    parts = name.split(".")
    if name == "lightning_unlearn" or len(parts) == 2 and parts[1] not in FLOORS:
        return TOP, ""
    return FLOORS[parts[1]], parts[1]


def test_every_folder_has_a_floor() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(FLOORS), f"give each folder a floor in FLOORS (and docs/DESIGN.md): {folders ^ set(FLOORS)}"


def test_no_import_circle() -> None:
    edges = {name: [target for target, _ in targets] for name, targets in _edges().items()}
    # Tarjan's strongly connected components: any component of more than one module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in sorted(edges):
        if name not in index:
            visit(name)
    assert not circles, f"import circles: {circles}"


def test_no_import_runs_up_the_floors() -> None:
    upward = []
    for name, targets in _edges().items():
        floor, folder = _place(name)
        for target, line in targets:
            target_floor, target_folder = _place(target)
            if target_folder == folder:
                continue  # inside one folder (circles are the other test's)
            if target_floor >= floor:
                upward.append(f"{name} (floor {floor}) line {line} imports {target} (floor {target_floor})")
    assert not upward, "imports that run up (or across) the floors:\n" + "\n".join(upward)


def test_the_maths_is_pure() -> None:
    impure = []
    for name, (path, is_package) in MODULES.items():
        if _place(name)[1] != "maths":
            continue
        for target, line in _imported(name, path, is_package):
            if target.startswith(PURE_EXCEPTIONS):
                continue
            if any(target == bad or target.startswith(bad + ".") for bad in IMPURE):
                impure.append(f"{name} line {line} imports {target}")
    assert not impure, "maths/ must stay pure (no files, Lightning or model loading):\n" + "\n".join(impure)


def test_no_two_modules_share_a_name() -> None:
    names = [name.rsplit(".", 1)[-1] for name, (_, is_package) in MODULES.items()
             if not is_package and not name.endswith(("__main__",))]
    folders = [name.rsplit(".", 1)[-1] for name, (_, is_package) in MODULES.items() if is_package]
    counts = Counter(n.lstrip("_") for n in names + folders)
    shared = sorted(n for n, c in counts.items() if c > 1 and n != "lightning_unlearn")
    assert not shared, f"module or folder names used twice: {shared}"


@pytest.mark.parametrize("bad", ["from lightning_unlearn.lightning.module import UnlearningModule"])
def test_the_floor_check_catches_an_upward_import(tmp_path, monkeypatch, bad: str) -> None:
    """The check itself can fail: a maths module importing the Lightning floor is reported."""
    fake = tmp_path / "lightning_unlearn" / "maths"
    fake.mkdir(parents=True)
    (fake / "zeroshot.py").write_text(bad + "\n")
    name = "lightning_unlearn.maths.zeroshot"
    imported = [t for t, _ in _imported(name, fake / "zeroshot.py", False)]
    assert imported == ["lightning_unlearn.lightning.module"]
    assert _place(imported[0])[0] > _place(name)[0]


#: The one place that reads the Trainer's callback list: the module's ``configure_callbacks``
#: (Lightning glue: a YAML callback list cannot hand one callback to another; see lightning/wiring.py).
CALLBACK_GLUE = {("lightning_unlearn.lightning.module", "configure_callbacks")}


def test_pieces_do_not_search_for_each_other() -> None:
    """No code reads ``<...>trainer.callbacks`` (but the glue above) or a private ``._trainer``:
    callbacks, the report and the methods connect through attributes, arguments and the method
    contract."""
    found = []
    for name, (path, _) in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] + [tree]:
            where = getattr(function, "name", "<module>")
            body = function.body if not isinstance(function, ast.Module) else [
                n for n in function.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))]
            for node in (n for stmt in body for n in ast.walk(stmt)):
                if not isinstance(node, ast.Attribute):
                    continue
                owner = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", "")
                searching = node.attr == "callbacks" and owner.endswith("trainer")
                if node.attr == "_trainer" or (searching and (name, where) not in CALLBACK_GLUE):
                    found.append(f"{name}.{where} line {node.lineno}: .{owner}.{node.attr}")
    assert not found, "pieces that search for each other:\n" + "\n".join(sorted(set(found)))


def test_the_package_imports_no_old_path() -> None:
    """Old module paths (lightning_unlearn/_moved.py) are for users: inside the package they would
    hide an import from the checks above."""
    old = []
    for name, (path, is_package) in MODULES.items():
        for target, line in _imported(name, path, is_package):
            if target in MOVED_MODULES:
                old.append(f"{name} line {line} imports {target} (now {MOVED_MODULES[target]})")
    assert not old, "imports of old module paths:\n" + "\n".join(old)
