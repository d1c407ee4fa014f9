"""The package's imports only point down the layers, close no cycle, and pure modules do no I/O.

The imports are read with ``ast`` (nothing is imported): every ``import`` that runs, at module level
or inside a function, but not those under ``if TYPE_CHECKING:``. The layer map below is the one
place that says which folder sits on which layer (docs/design.md §1 and the README's folder table
describe it). A module may import its own folder and the layers below it, never a layer above
nor a folder on its own layer; a folder missing from the map fails, so a new one must be placed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "iot_platform"

# Bottom to top. Within a layer no folder imports another.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("the error types every layer raises", frozenset({"__init__", "errors"})),
    ("the one settings object", frozenset({"settings"})),
    ("pure core; process plumbing", frozenset({"core", "observability"})),
    ("PostgreSQL", frozenset({"storage"})),
    ("on top of storage: broker access, analysts, Grafana", frozenset({"access", "analytics", "dashboards"})),
    ("the programs on the data path: bridge, consumer, device fleet and verify", frozenset({"bridge", "consumer", "devices"})),
    ("what runs them: Dagster, the local platform", frozenset({"orchestration", "stack"})),
    ("which failures a person can act on, across every library", frozenset({"failures"})),
    ("the command line", frozenset({"cli"})),
)
RANK = {folder: rank for rank, (_, folders) in enumerate(LAYERS) for folder in folders}

# Libraries that talk to the network, a database or other processes: a pure module reaches none of them.
IO_LIBRARIES = frozenset({
    "asyncio", "confluent_kafka", "dagster", "fcntl", "grafana_client", "http", "httpx", "multiprocessing", "paho",
    "psycopg2", "requests", "select", "selectors", "socket", "ssl", "subprocess", "urllib.request", "urllib3",
})
# A module is pure when its docstring says so: "(pure", "Pure:" or "module is pure"; every module of core/ is.
_SAYS_PURE = re.compile(r"\(pure\b|\bPure:|\bmodule is pure\b")
# Nothing shipped imports the tests or the benchmarks; benchmarks import no tests.
FORBIDDEN_OUTSIDE = {PACKAGE: ("iot_platform_tests", "benchmarks"), "benchmarks": ("iot_platform_tests",)}


@dataclass(frozen=True)
class Module:
    name: str
    source: str
    is_package: bool = False

    @property
    def folder(self) -> str:
        """The layer map's name for this module's place: its top folder, or the module for files at the root."""
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 else "__init__"


def modules_under(root: Path, prefix: str) -> dict[str, Module]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        found[name] = Module(name, path.read_text(encoding="utf-8"), is_package)
    return {name: module for name, module in found.items() if name == prefix or name.startswith(prefix + ".")}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(module: Module) -> set[str]:
    """Dotted names of every import that runs (``from a import b`` gives ``a`` and ``a.b``)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(module.source))
    return names


def edges(modules: Mapping[str, Module]) -> dict[str, set[str]]:
    """Module -> the package modules its imports run (a package's ``__init__`` counts when entered from outside it)."""
    graph: dict[str, set[str]] = {}
    for name, module in modules.items():
        targets = set()
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")) + 1)}
        for imported in imported_names(module):
            if imported not in modules:
                continue
            parts = imported.split(".")
            for i in range(1, len(parts) + 1):
                step = ".".join(parts[:i])
                if step in modules and (step == imported or step not in own_packages):
                    targets.add(step)
        targets.discard(name)
        graph[name] = targets
    return graph


def layer_violations(modules: Mapping[str, Module]) -> list[str]:
    problems = []
    for name, targets in sorted(edges(modules).items()):
        here = modules[name].folder
        if here not in RANK:
            problems.append(f"{name}: folder {here!r} is on no layer of LAYERS")
            continue
        for target in sorted(targets):
            there = modules[target].folder
            if there == here or there not in RANK:
                continue
            if RANK[there] >= RANK[here]:
                where = "up" if RANK[there] > RANK[here] else "across"
                problems.append(f"{name} imports {target}: runs {where} the layers ({here} is on layer {RANK[here]}, {there} on {RANK[there]})")
    return problems


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(found)


def is_pure(module: Module) -> bool:
    return module.folder == "core" or bool(_SAYS_PURE.search(ast.get_docstring(ast.parse(module.source)) or ""))


def _io_library(name: str) -> str | None:
    return next((lib for lib in IO_LIBRARIES if name == lib or name.startswith(lib + ".")), None)


def impurities(modules: Mapping[str, Module]) -> list[str]:
    """Pure modules that reach an I/O library, directly or through the package modules they import."""
    graph = edges(modules)
    problems = []
    for name in sorted(n for n, m in modules.items() if is_pure(m)):
        seen, todo = {name}, [(name, (name,))]
        while todo:
            current, path = todo.pop()
            for imported in sorted(imported_names(modules[current])):
                if (library := _io_library(imported)) is not None:
                    problems.append(f"{name} says it is pure but imports {library} (through {' -> '.join(path)})")
            for target in graph[current] - seen:
                seen.add(target)
                todo.append((target, (*path, target)))
    return sorted(set(problems))


def outside_imports(trees: Mapping[str, Mapping[str, Module]]) -> list[str]:
    problems = []
    for root, modules in trees.items():
        for name, module in sorted(modules.items()):
            for imported in sorted(imported_names(module)):
                if imported.split(".")[0] in FORBIDDEN_OUTSIDE.get(root, ()):
                    problems.append(f"{name} imports {imported}")
    return problems


def check(modules: Mapping[str, Module]) -> list[str]:
    return [*layer_violations(modules), *(f"cycle: {' <-> '.join(c)}" for c in cycles(edges(modules))), *impurities(modules)]


# -- the package as it is ------------------------------------------------------------------------

PACKAGE_MODULES = modules_under(REPO / PACKAGE, PACKAGE)


def test_every_folder_of_the_package_is_on_a_layer() -> None:
    """A folder missing from LAYERS (or a layer naming a folder that is gone) fails."""
    folders = {m.folder for m in PACKAGE_MODULES.values()}
    assert folders - set(RANK) == set()
    assert set(RANK) - folders == set()


def test_imports_only_point_down_the_layers() -> None:
    assert layer_violations(PACKAGE_MODULES) == []


def test_no_import_cycle() -> None:
    assert cycles(edges(PACKAGE_MODULES)) == []


def test_pure_modules_reach_no_io_library() -> None:
    """Every module of core/ and every module whose docstring says pure, followed through its package imports."""
    pure = [n for n, m in PACKAGE_MODULES.items() if is_pure(m)]
    assert len(pure) >= 20 and "iot_platform.consumer.pending" in pure  # the detection finds them
    assert impurities(PACKAGE_MODULES) == []


def test_nothing_shipped_imports_the_tests_and_benchmarks_import_no_tests() -> None:
    trees = {PACKAGE: PACKAGE_MODULES, "benchmarks": modules_under(REPO / "benchmarks", "benchmarks")}
    assert len(trees["benchmarks"]) >= 5
    assert outside_imports(trees) == []


# -- positive controls: the checks catch what they are meant to catch -------------------------------

def _synthetic(sources: Iterable[tuple[str, str]]) -> dict[str, Module]:
    modules = {name: Module(name, "") for name in (PACKAGE, "iot_platform.storage", "iot_platform.core")}
    modules.update({name: Module(name, text) for name, text in sources})
    return modules


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ([("iot_platform.core.x", "def f():\n    from iot_platform.storage.db import connect\n"), ("iot_platform.storage.db", "")],
         "iot_platform.core.x imports iot_platform.storage.db: runs up the layers (core is on layer 2, storage on 3)"),
        ([("iot_platform.bridge.x", "import iot_platform.devices.y"), ("iot_platform.devices.y", "")],
         "iot_platform.bridge.x imports iot_platform.devices.y: runs across the layers (bridge is on layer 5, devices on 5)"),
        ([("iot_platform.storage.a", "from iot_platform.storage import b"), ("iot_platform.storage.b", "from . import a")],
         "cycle: iot_platform.storage.a <-> iot_platform.storage.b"),
        ([("iot_platform.core.x", "from iot_platform.core import y"), ("iot_platform.core.y", "import psycopg2.extras")],
         "iot_platform.core.x says it is pure but imports psycopg2 (through iot_platform.core.x -> iot_platform.core.y)"),
        ([("iot_platform.storage.q", '"""Rows (pure)."""\nimport socket')],
         "iot_platform.storage.q says it is pure but imports socket (through iot_platform.storage.q)"),
        ([("iot_platform.newfolder.m", "")], "iot_platform.newfolder.m: folder 'newfolder' is on no layer of LAYERS"),
    ],
    ids=["lazy-import-up", "across", "cycle", "impure-through-a-pure-module", "says-pure", "unplaced-folder"],
)
def test_a_bad_import_is_caught(sources: list[tuple[str, str]], expected: str) -> None:
    assert expected in check(_synthetic(sources))


def test_imports_under_type_checking_and_down_the_layers_pass() -> None:
    """The negative control: what runs only for the type checker, and a downward import, are fine."""
    sources = [
        ("iot_platform.core.x", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from iot_platform.storage.db import connect\n"),
        ("iot_platform.storage.db", "import psycopg2\nfrom iot_platform.core import x\n"),
    ]
    assert check(_synthetic(sources)) == []


def test_benchmarks_importing_tests_is_caught() -> None:
    trees = {"benchmarks": {"benchmarks.b": Module("benchmarks.b", "from iot_platform_tests.faults import harness")}}
    assert "benchmarks.b imports iot_platform_tests.faults.harness" in outside_imports(trees)
