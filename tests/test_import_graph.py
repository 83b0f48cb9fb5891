"""The house's structure, read from the code: goalrm's modules import one another without a circle, and
Ray stays at the edges (the packages that run on Ray, and the CLI that dispatches to them)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "goalrm"
RAY_EDGES = ("goalrm.train", "goalrm.tune", "goalrm.score", "goalrm.serve", "goalrm.cli")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path) -> set[str]:
    """Every module an `import` names, at the top or inside a function (`from a import b` names a and a.b)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}  # state: 1 on the current path, 2 done

    def visit(node, path):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_no_import_circles():
    modules = _modules()
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the walk found the house
    assert _cycles(graph) == []


def test_cycles_are_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_only_the_edges_import_ray():
    core = {m: p for m, p in _modules().items() if not m.startswith(RAY_EDGES)}
    assert "goalrm.model" in core and "goalrm.losses" in core
    offenders = {m: sorted(i for i in _imports(p) if i.split(".")[0] == "ray") for m, p in core.items()}
    assert {m: i for m, i in offenders.items() if i} == {}
