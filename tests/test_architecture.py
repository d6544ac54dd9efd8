"""The package's layout rules, read from the source with ``ast`` (docs/architecture.md).

- no import circle, imports inside functions and under TYPE_CHECKING included;
- the core's subpackages import only from the floors below them;
- the front ends (the CLI and the widgets) import from the core only ``core.jobs``,
  ``core.events`` and the listed value types;
- no function in the core is longer than 80 lines;
- the public names that docs/architecture.md lists import.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_bloodcells"
ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
CORE = "napari_bloodcells.core"

FLOORS = (
    "base",
    "data",
    "model",
    "events",
    "inference",
    "measure",
    "exchange",
    "training",
    "large",
    "jobs",
)
"""The core's floors, bottom first: each imports only from those before it and itself."""

FRONT_END_VALUE_TYPES = {
    "base.bounds": {"MAGNIFICATION_RANGE", "check_bounds", "options_of", "range_of"},
    "base.cell_types": {"CORRECTION_VALUES", "NOT_A_WHITE_CELL", "TO_VERIFY"},
    "base.classes": {"BLOODCELL_CLASSES", "ClassInfo", "UNLABELLED"},
    "base.imaging": {"to_rgb_uint8"},
    "data.dataset": {"SegmentationData"},
    "exchange.export": {"ExportSettings", "WEIGHT_FORMATS"},
    "inference.tiled": {"TileSettings"},
    "large.stores": {"LARGE_PIXELS"},
    "measure.cells": {"COLUMNS", "Measurements"},
    "model.checkpoint": {"SUFFIX"},
    "model.networks": {"NOTEBOOK_UNET", "OFFERED_ENCODERS"},
    "model.trained": {"TrainedModel"},
    "training.config": {"PRESETS", "TrainConfig", "preset"},
    "training.ddp": {"ProcessGroup"},
}
"""What a front end may take from the core besides ``core.jobs`` and ``core.events``:
settings and their declared bounds, the model and data types the jobs take, the class
vocabulary, and the image conversion the widgets apply when they copy a layer."""

FRONT_ENDS = ("cli", "_widgets", "_launch")
MAX_LINES = 80


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> list[tuple[str, str, int]]:
    """Every (module, name, line) imported from this package, wherever the import stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("napari_bloodcells"):
                found += [(node.module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [
                (alias.name, "", node.lineno)
                for alias in node.names
                if alias.name.startswith("napari_bloodcells")
            ]
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for module, imported, _ in _imports(path):
            # "from package import submodule" depends on the submodule.
            target = f"{module}.{imported}" if f"{module}.{imported}" in modules else module
            if target in modules and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_no_import_circle():
    assert _circles(_graph()) == []


def test_the_circle_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]


def _floor(module: str) -> str | None:
    if not module.startswith(CORE + "."):
        return None
    return module[len(CORE) + 1 :].split(".")[0]


def test_core_floors_import_only_downward():
    wrong = []
    for name, path in _modules().items():
        floor = _floor(name)
        if floor not in FLOORS:
            continue
        for module, _, line in _imports(path):
            target = _floor(module)
            if target in FLOORS and FLOORS.index(target) > FLOORS.index(floor):
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert wrong == []


def test_every_core_module_sits_on_a_floor():
    loose = [
        name
        for name in _modules()
        if name.startswith(CORE + ".")
        and _floor(name) not in FLOORS
        # the import path that packages exported before the layout name
        and name != f"{CORE}.models"
    ]
    assert loose == []


def test_front_ends_import_only_jobs_events_and_value_types():
    wrong = []
    for name, path in _modules().items():
        local = name.removeprefix("napari_bloodcells.")
        if not local.startswith(FRONT_ENDS):
            continue
        for module, imported, line in _imports(path):
            if not module.startswith(CORE):
                continue
            inner = module.removeprefix(CORE).lstrip(".")
            if inner in ("jobs", "events") or imported in FRONT_END_VALUE_TYPES.get(inner, ()):
                continue
            wrong.append(f"{path.relative_to(PACKAGE)}:{line} takes {imported} from {module}")
    assert wrong == []


def _long_functions(source: str) -> list[tuple[str, int]]:
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]


def test_no_core_function_is_longer_than_80_lines():
    long = [
        f"{path.relative_to(PACKAGE)}: {name} ({lines} lines)"
        for name, path in _modules().items()
        if name.startswith(CORE)
        for name, lines in _long_functions(path.read_text(encoding="utf-8"))
    ]
    assert long == []


def test_the_length_check_counts_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    assert _long_functions(f"def f():\n{body}\n") == [("f", MAX_LINES + 1)]


def _public_names() -> list[tuple[str, str]]:
    """The ``module: name, name`` lines of the public API list in docs/architecture.md."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Public API", 1)[1].split("\n## ", 1)[0]
    pairs = []
    for module, names in re.findall(r"^- `([\w.]+)`: (.+)$", section, re.MULTILINE):
        pairs += [(module, n) for n in re.findall(r"`(\w+)`", names)]
    return pairs


def test_the_public_api_list_is_read():
    assert len(_public_names()) > 30


@pytest.mark.parametrize(("module", "name"), _public_names())
def test_public_names_import(module, name):
    assert hasattr(importlib.import_module(module), name)
