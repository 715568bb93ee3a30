"""House rules that keep the code easy to change, checked on the source itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "compressctl"


def test_only_the_measurement_module_opens_onnx_runtime_sessions() -> None:
    """Timing and evaluation settings live in one place (compressctl.measure.latency.make_session)."""
    opening = re.compile(r"InferenceSession\s*\(")
    found = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if opening.search(path.read_text(encoding="utf-8"))
    ]
    assert found == ["measure/latency.py"]


#: Cycles other refactors are removing (batch/report, data/sources); delete this once they are merged.
MAX_LINES = 400


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the package's modules it imports, anywhere in its source (functions too, relative imports resolved)."""
    paths = {module_name(path, package): path for path in package.rglob("*.py")}

    def known(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        parent = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = parent.split(".")[: len(parent.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                found = known(target) if target.split(".")[0] == package.name else None
                if found and found != name:
                    graph[name].add(found)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def describe(cycle: list[str], graph: dict[str, set[str]]) -> str:
    edges = [f"  {a} -> {b}" for a in cycle for b in sorted(graph[a]) if b in cycle]
    return " / ".join(cycle) + "\n" + "\n".join(edges)


def test_no_import_cycles() -> None:
    """Every import counts, inside functions too: a cycle makes the modules one module in disguise."""
    graph = import_graph()
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(describe(c, graph) for c in cycles)


def test_the_cycle_check_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    """The cycle check would pass vacuously if the graph missed edges."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg.sub.b import g\n")
    (package / "sub" / "b.py").write_text("from ..a import f as g\n")
    (package / "c.py").write_text("from . import a\n")
    graph = import_graph(package)
    assert graph["pkg.c"] == {"pkg", "pkg.a"}
    assert import_cycles(graph) == [["pkg.a", "pkg.sub.b"]]
    assert "compressctl.pipeline" in import_graph()["compressctl"]  # ``from compressctl.pipeline import apply``


def test_no_module_is_over_400_lines() -> None:
    long = [
        f"{path.relative_to(PACKAGE)}: {lines} lines"
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"
