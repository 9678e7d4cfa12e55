"""The package's import graph, read from the source with `ast`: no import cycles, and no import that
runs back up the layers core <- runtime, engines <- plugins <- top (CLI, commands, benchmarks)."""
from __future__ import annotations

import ast
import graphlib
import importlib.util
from pathlib import Path

import pytest

ROOTS = ("posestream", "posestream.stream", "posestream.engines", "posestream.plugins",
         "posestream.benchmarks")
ALLOWED = {  # layer -> the layers it may import
    "core": {"core"},
    "runtime": {"core", "runtime"},
    "engines": {"core", "engines"},
    "plugins": {"core", "runtime", "engines", "plugins"},
    "top": {"core", "runtime", "engines", "plugins", "top"},
}


def layer(module: str) -> str:
    for prefix, name in (("posestream.stream.core", "core"), ("posestream.stream", "runtime"),
                         ("posestream.engines", "engines"), ("posestream.plugins", "plugins")):
        if module == prefix or module.startswith(prefix + "."):
            return name
    return "top"  # posestream itself (public API, cli, commands) and posestream.benchmarks


def modules() -> dict[str, Path]:
    """Every module of the package by its import name, found where setuptools' package_dir maps it."""
    found: dict[str, Path] = {}
    for root in ROOTS:
        spec = importlib.util.find_spec(root)
        assert spec is not None and spec.submodule_search_locations, f"{root} is not importable"
        folder = Path(list(spec.submodule_search_locations)[0])
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([root, *parts])
            found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, top_level_only: bool) -> list[ast.Import | ast.ImportFrom]:
    """Import statements; `top_level_only` skips function bodies and `if TYPE_CHECKING:` blocks
    (they do not run when the module is imported, so they cannot close a cycle)."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending = list(ast.iter_child_nodes(tree))
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if top_level_only and (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                               or (isinstance(node, ast.If) and _is_type_checking(node))):
            continue
        pending.extend(ast.iter_child_nodes(node))
    return found


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that `name` names or lies in; None outside posestream."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, known: set[str], top_level_only: bool) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path)), top_level_only):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        targets |= {t for t in (_resolve(n, known) for n in names) if t is not None and t != module}
    return targets


@pytest.fixture(scope="module")
def package() -> dict[str, Path]:
    return modules()


def test_the_package_is_found(package: dict[str, Path]) -> None:
    assert {"posestream.cli", "posestream.stream.pipeline", "posestream.stream.core.config",
            "posestream.plugins.sinks.json_sink", "posestream.engines.backends.base"} <= set(package)


def test_no_import_cycles(package: dict[str, Path]) -> None:
    known = set(package)
    graph = {m: imports_of(m, p, known, top_level_only=True) for m, p in package.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail("import cycle: " + " -> ".join(reversed(exc.args[1])))  # graphlib lists importers first


def test_layers_point_one_way(package: dict[str, Path]) -> None:
    known = set(package)
    violations = sorted(
        f"{m} -> {t} ({layer(m)} -> {layer(t)})"
        for m, p in package.items() for t in imports_of(m, p, known, top_level_only=False)
        if layer(t) not in ALLOWED[layer(m)])
    assert not violations, "upward imports:\n" + "\n".join(violations)
