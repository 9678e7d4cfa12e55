"""The package's import graph, read from the source with `ast`: no import cycle (function-level
imports included), no import that runs back up the layers core <- runtime, engines <- plugins <- top,
and inside the runtime, the engines and the top the order below (e.g. the fleet above the pipeline,
inference backends below the model families, the CLI above the benchmarks); model families import
each other only through shared modules. A planted violation in a synthetic tree makes each check fail.
"""
from __future__ import annotations

import ast
import graphlib
import importlib.util
import textwrap
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
# Inside a layer: (module prefix, rank); the longest matching prefix gives a module's rank, and a
# module imports only modules of its own rank or lower.
ORDER: tuple[tuple[str, int], ...] = (
    # runtime: building blocks (sources, rings, metrics, NMS, rendering, client ...) < the chain's
    # links and the stage runtime < stage bodies < the stage graph < chain, pipeline < fleet
    ("posestream.stream", 0),
    ("posestream.stream.links", 1), ("posestream.stream.stage_runtime", 1), ("posestream.stream.supervisor", 1),
    ("posestream.stream.stage_bodies", 2),
    ("posestream.stream.stage_graph", 3),
    ("posestream.stream.chain", 4), ("posestream.stream.pipeline", 4),
    ("posestream.stream.image_inference", 5),
    ("posestream.stream.fleet", 6),
    # engines: plain helpers and formats < backends < shared model plumbing < model families
    ("posestream.engines", 2),
    ("posestream.engines.model_card", 0), ("posestream.engines.preprocess", 0),
    ("posestream.engines.checkpoint", 0), ("posestream.engines.wheels", 0), ("posestream.engines.family", 0),
    ("posestream.engines.formats", 0), ("posestream.engines.crops", 0),
    ("posestream.engines.topdown_outputs", 0),
    ("posestream.engines.backends", 1), ("posestream.engines.model_check", 1),
    ("posestream.engines.families", 3),
    # top: benchmarks < public API, CLI and its commands
    ("posestream", 1), ("posestream.benchmarks", 0),
)
FAMILIES = "posestream.engines.families."  # a family imports no other family


def layer(module: str) -> str:
    for prefix, name in (("posestream.stream.core", "core"), ("posestream.stream", "runtime"),
                         ("posestream.engines", "engines"), ("posestream.plugins", "plugins")):
        if module == prefix or module.startswith(prefix + "."):
            return name
    return "top"  # posestream itself (public API, cli, commands) and posestream.benchmarks


def rank(module: str) -> int | None:
    """The module's rank inside its layer (None: the layer has no inner order)."""
    matches = [(len(prefix), r) for prefix, r in ORDER
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches and layer(module) in ("runtime", "engines", "top") else None


def family(module: str) -> str | None:
    return module[len(FAMILIES):].split(".")[0] if module.startswith(FAMILIES) else None


def modules_under(folder: Path, root: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in folder.rglob("*.py"):
        parts = list(path.relative_to(folder).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([root, *parts])] = path
    return found


def modules() -> dict[str, Path]:
    """Every module of the package by its import name, found where setuptools' package_dir maps it."""
    found: dict[str, Path] = {}
    for root in ROOTS:
        spec = importlib.util.find_spec(root)
        assert spec is not None and spec.submodule_search_locations, f"{root} is not importable"
        found.update(modules_under(Path(list(spec.submodule_search_locations)[0]), root))
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: module level and inside functions (a function-level
    import closes a cycle as soon as the function is called), not `if TYPE_CHECKING:` blocks."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending = list(ast.iter_child_nodes(tree))
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return found


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that `name` names or lies in; None outside posestream."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
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


def graph_of(package: dict[str, Path]) -> dict[str, set[str]]:
    known = set(package)
    return {m: imports_of(m, p, known) for m, p in package.items()}


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (importers first), or [] when there is none. A package's `__init__` and the
    modules under it are one unit only through real imports, as Python runs them."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(reversed(exc.args[1]))
    return []


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that runs up the layers, against a layer's inner order, or between families."""
    found = []
    for m, targets in graph.items():
        for t in targets:
            if layer(t) not in ALLOWED[layer(m)]:
                found.append(f"{m} -> {t} ({layer(m)} -> {layer(t)})")
            elif layer(t) == layer(m) and rank(m) is not None and rank(t) > rank(m):  # type: ignore[operator]
                found.append(f"{m} -> {t} (rank {rank(m)} -> {rank(t)} inside {layer(m)})")
            elif family(m) and family(t) and family(m) != family(t):
                found.append(f"{m} -> {t} (family {family(m)} -> family {family(t)})")
    return sorted(found)


@pytest.fixture(scope="module")
def package() -> dict[str, Path]:
    return modules()


def test_the_package_is_found(package: dict[str, Path]) -> None:
    assert {"posestream.cli", "posestream.stream.pipeline", "posestream.stream.core.config",
            "posestream.plugins.sinks.json_sink", "posestream.engines.backends.base",
            "posestream.engines.families.yolo11.detector"} <= set(package)


def test_no_import_cycles(package: dict[str, Path]) -> None:
    found = cycle(graph_of(package))
    assert not found, "import cycle: " + " -> ".join(found)


def test_layers_point_one_way(package: dict[str, Path]) -> None:
    found = violations(graph_of(package))
    assert not found, "imports against the layers:\n" + "\n".join(found)


# --- the checks catch what they are for: planted violations in a synthetic tree ------------------

PLANTED = [  # (files of a synthetic package: path -> source, what the check must report)
    ({"stream/core/a.py": "import posestream.stream.pipeline\n", "stream/pipeline.py": ""},
     "core -> runtime"),
    ({"stream/pipeline.py": "def run():\n    from posestream.stream.fleet import spec\n",
      "stream/fleet/__init__.py": "", "stream/fleet/spec.py": ""},
     "rank 4 -> 6 inside runtime"),
    ({"engines/backends/torch_engine.py": "from posestream.engines.families.yolo11 import network\n",
      "engines/families/__init__.py": "", "engines/families/yolo11/__init__.py": "",
      "engines/families/yolo11/network.py": ""},
     "rank 1 -> 3 inside engines"),
    ({"engines/families/__init__.py": "", "engines/families/a/__init__.py": "",
      "engines/families/a/pose.py": "from posestream.engines.families.b.decode import decode\n",
      "engines/families/b/__init__.py": "", "engines/families/b/decode.py": ""},
     "family a -> family b"),
    ({"engines/runner.py": "import posestream.plugins.sinks.json_sink\n",
      "plugins/sinks/json_sink.py": ""},
     "engines -> plugins"),
    ({"benchmarks/bench.py": "def main():\n    from posestream.commands.common import add_config_args\n",
      "posestream/commands/common.py": ""},
     "rank 0 -> 1 inside top"),
]


def _synthetic(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    """A tree laid out like the repository, mapped into the namespace as setup.py maps it."""
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    found: dict[str, Path] = {}
    for folder, root in (("posestream", "posestream"), ("stream", "posestream.stream"),
                         ("engines", "posestream.engines"), ("plugins", "posestream.plugins"),
                         ("benchmarks", "posestream.benchmarks")):
        if (tmp_path / folder).is_dir():
            found.update(modules_under(tmp_path / folder, root))
    return found


@pytest.mark.parametrize("files, report", PLANTED, ids=[r for _, r in PLANTED])
def test_a_planted_violation_is_reported(tmp_path: Path, files: dict[str, str], report: str) -> None:
    found = violations(graph_of(_synthetic(tmp_path, files)))
    assert any(report in line for line in found), found


def test_a_cycle_through_a_function_level_import_is_reported(tmp_path: Path) -> None:
    package = _synthetic(tmp_path, {
        "stream/a.py": "import posestream.stream.b\n",
        "stream/b.py": "def later():\n    from posestream.stream import a\n",
        "stream/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import posestream.stream.a\n"})
    assert set(cycle(graph_of(package))) == {"posestream.stream.a", "posestream.stream.b"}
    del package["posestream.stream.b"]  # without the function-level import there is none
    assert cycle(graph_of(package)) == []
