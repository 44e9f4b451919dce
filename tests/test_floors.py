"""The shipped packages stand on floors, and every import points down or sideways within its floor, never up; and
no chain of imports leads back to where it started. Every import counts, inside functions too (read with ``ast``).

Floors, bottom to top:

0. ``avzsl`` (its helpers: common, fetching, lockfile, gpu_pool): what every package shares
1. ``extractors``: raw inputs to stored features, splits and text
2. ``training``: models, training, evaluation, tables
3. ``bench``: the synthetic benchmark and the evidence runs built on training
4. ``avzsl.app`` (and ``avzsl.__main__``): the ``avzsl`` command and the workflow's configuration check
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

FLOORS = ("avzsl", "extractors", "training", "bench", "avzsl.app")
TOP_ALIASES = {"avzsl.__main__": "avzsl.app"}  # `python -m avzsl` is the command


def floor_of(module: str) -> int | None:
    """The floor of a shipped module; None for anything else (the standard library, third parties)."""
    for alias, owner in TOP_ALIASES.items():
        if module == alias or module.startswith(alias + "."):
            return FLOORS.index(owner)
    best = None
    for i, prefix in enumerate(FLOORS):
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(FLOORS[best]):
                best = i
    return best


def shipped_modules() -> dict[str, Path]:
    out = {}
    for package in {p.split(".")[0] for p in FLOORS}:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The shipped modules ``module`` imports anywhere in its file (``from X import Y`` names X.Y when that is a
    module, else X)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in found if m in known}


def import_graph() -> dict[str, set[str]]:
    modules = shipped_modules()
    known = set(modules)
    return {m: imports_of(m, p, known) - {m} for m, p in modules.items()}


def test_floors_are_named_for_every_shipped_module():
    assert all(floor_of(m) is not None for m in import_graph())
    assert floor_of("avzsl.common") == 0 and floor_of("avzsl.app.cli") == 4 and floor_of("avzsl.__main__") == 4
    assert floor_of("extractors.backbones.base") == 1 and floor_of("training.engine") == 2


def test_no_import_points_up_a_floor():
    upward = sorted(f"{m} (floor {floor_of(m)}) imports {t} (floor {floor_of(t)})"
                    for m, targets in import_graph().items() for t in targets if floor_of(t) > floor_of(m))
    assert upward == []


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == []
