"""The import graph of chronos/: no cycle, no module importing a layer above its own.

Every ``import`` and ``from ... import`` in chronos/ counts, those under ``if
TYPE_CHECKING:`` and inside functions included (a type-only cycle is still a cycle: a
Protocol breaks it).  Run it alone with ``python -m pytest tests/test_architecture.py -v``;
``python tests/test_architecture.py`` prints the graph, layer by layer.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "chronos"

#: The layers, lowest first.  A module may import modules of its own layer or below; a
#: module not listed fails the test (place it on purpose).  Prefixes ending in "." cover a
#: package's modules.
LAYERS: list[tuple[str, list[str]]] = [
    (
        "basics",
        [
            "chronos._validate",
            "chronos.clock",
            "chronos.errors",
            "chronos.status",
            "chronos.interrupt",
        ],
    ),
    ("primitives", ["chronos.stats", "chronos.retry", "chronos.ticker", "chronos.timer"]),
    ("the job", ["chronos._future", "chronos.spec", "chronos.job", "chronos.hooks"]),
    ("events", ["chronos.logging_listener", "chronos.events"]),
    ("the books", ["chronos._ledger", "chronos.context"]),
    (
        "backends",
        [
            "chronos.backends.base",
            "chronos.backends.memory",
            "chronos.backends.durable",
            "chronos.backends._sqlite_schema",
            "chronos.backends.sqlite",
            "chronos.backends.urls",
            "chronos.backends",
        ],
    ),
    ("the pool", ["chronos.pool."]),
    ("the pool's face", ["chronos.pool"]),
    ("producers", ["chronos.dispatcher", "chronos.shutdown", "chronos.testing"]),
    ("durable jobs", ["chronos.tasks", "chronos.worker", "chronos._worker_parts"]),
    ("the package", ["chronos"]),
    ("the command", ["chronos.cli.", "chronos.cli", "chronos.__main__"]),
]
#: Third-party imports and who may make them: the core's two dependencies, each in the
#: module that needs it.  (An optional extra would be listed here with its one module.)
THIRD_PARTY: dict[str, set[str]] = {
    "structlog": {"chronos.events", "chronos.logging_listener", "chronos.cli."},
    "tenacity": {"chronos.retry"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> Iterator[str]:
    """Every module named by an import in ``path`` (chronos's own resolved to the module,
    others to their top-level package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                assert node.module is not None
                target = node.module
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield submodule if submodule in modules else target


def layer_of(module: str) -> int:
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or (member.endswith(".") and module.startswith(member)):
                return index
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: place it")


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {
        name: {t for t in imports_of(path, name, modules) if t != name}
        for name, path in modules.items()
    }


def own(edges: set[str]) -> set[str]:
    return {t for t in edges if t == "chronos" or t.startswith("chronos.")}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph, as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(own(edges.get(node, set()))):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_imports_a_layer_above_its_own() -> None:
    def named(module: str) -> str:
        return f"{module} ({LAYERS[layer_of(module)][0]})"

    upward = [
        f"{named(module)} imports {named(target)}"
        for module, targets in sorted(graph().items())
        for target in sorted(own(targets))
        if layer_of(target) > layer_of(module)
    ]
    assert not upward, "\n".join(upward)


def test_third_party_imports_stay_in_the_modules_that_need_them() -> None:
    stray = []
    for module, targets in sorted(graph().items()):
        for target in sorted(targets - own(targets)):
            top = target.partition(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            allowed = THIRD_PARTY.get(top, set())
            if not any(module == a or (a.endswith(".") and module.startswith(a)) for a in allowed):
                stray.append(f"{module} imports {target}")
    assert not stray, "\n".join(stray)


@pytest.mark.parametrize("module", ["chronos", "chronos.pool", "chronos.dispatcher"])
def test_the_core_never_loads_the_command(module: str) -> None:
    """Importing the library loads nothing of chronos.cli (a fresh interpreter checks)."""
    import subprocess

    code = f"import sys, {module}; print(sorted(m for m in sys.modules if 'cli' in m))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "chronos.cli" not in out


def test_the_checker_finds_a_cycle() -> None:
    """The cycle finder is itself tested: it must not pass a graph with a cycle."""
    edges = {"chronos.a": {"chronos.b"}, "chronos.b": {"chronos.c"}, "chronos.c": {"chronos.a"}}
    assert find_cycle(edges) == ["chronos.a", "chronos.b", "chronos.c", "chronos.a"]
    assert find_cycle({"chronos.a": {"chronos.b"}, "chronos.b": set()}) is None


if __name__ == "__main__":
    edges = graph()
    for index, (title, _) in enumerate(LAYERS):
        print(f"{index}. {title}")
        for module in sorted(m for m in edges if layer_of(m) == index):
            print(f"     {module} -> {', '.join(sorted(own(edges[module]))) or '-'}")
