"""Data flows one way: no import cycles between edgeq's stages, nor between any two of its modules.

Imports inside functions count (edgeq imports heavy or optional modules lazily; a lazy import is still a
dependency). A stage is a subpackage of edgeq (edgeq.calib, edgeq.converter, ...), a top-level module of
edgeq (edgeq.artifacts, ...) or datagen. docs/architecture.md draws the resulting order.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edgeq", "datagen")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every edgeq/datagen module ``path`` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    return {t for t in targets if t in known and t != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, set(modules)) for name, path in modules.items()}


def _stage(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "edgeq" else parts[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _stage_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    stages: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        # The package's own __init__ re-exports the public API from below; it is not a stage of its own.
        if module in PACKAGES:
            continue
        stages[_stage(module)].update(_stage(t) for t in targets if t not in PACKAGES and _stage(t) != _stage(module))
    return stages


def _witness(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete module-level import that makes two stages of ``component`` depend on each other."""
    members = set(component)
    return sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts
                  if _stage(m) in members and _stage(t) in members and _stage(m) != _stage(t)
                  and m not in PACKAGES and t not in PACKAGES)


def test_the_scanner_sees_relative_and_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "mod.py"
    module.write_text("from .b import c\n\ndef f():\n    from edgeq.calib import stats\n    import datagen.limits\n")
    known = {"edgeq.x.b", "edgeq.x.b.c", "edgeq.calib", "edgeq.calib.stats", "datagen.limits"}
    assert _imports(module, "edgeq.x.mod", known) == {"edgeq.x.b", "edgeq.x.b.c", "edgeq.calib",
                                                      "edgeq.calib.stats", "datagen.limits"}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back() -> None:
    assert _cycles(_graph()) == []


def test_stages_form_a_one_way_order() -> None:
    graph = _graph()
    cycles = _cycles(_stage_graph(graph))
    assert not cycles, "stages import each other: " + "; ".join(
        f"{component} via {_witness(graph, component)}" for component in cycles)


def test_lower_stages_never_reach_the_stages_above_them() -> None:
    """The layering docs/architecture.md documents: loading, calibration and the runtime never depend on
    conversion, validation, reports, builds or the CLI."""
    stages = _stage_graph(_graph())

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in stages.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    above = {"edgeq.converter", "edgeq.recover", "edgeq.validate", "edgeq.report", "edgeq.build", "edgeq.cli"}
    for lower in ("edgeq.tflite", "edgeq.intake", "edgeq.calib", "edgeq.harness", "edgeq.spec", "datagen"):
        assert not reach(lower) & above, f"{lower} reaches {sorted(reach(lower) & above)}"
    assert "edgeq.build" not in reach("edgeq.report") and "edgeq.cli" not in reach("edgeq.report")
