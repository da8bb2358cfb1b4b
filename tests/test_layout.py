"""The house's layout holds: no import cycle among the project's own modules, and auttention/ (the science
of one run) never imports ray or the search layer. Read from the sources with `ast`; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("auttention", "search")


def module_name(path: Path) -> str:
    """auttention/corpus.py -> auttention.corpus; search/__init__.py -> search."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def first_party_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported_names(path: Path, name: str) -> set[str]:
    """Every absolute module name `path` imports, at module level or inside a function, plus the
    `package.name` candidates of `from package import name` (a submodule or an attribute)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the first-party modules it imports (importing a.b.c also runs a and a.b)."""
    modules = first_party_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in imported_names(path, name):
            parts = target.split(".")
            edges.update(m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in modules)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_graph_sees_the_modules():
    graph = import_graph()
    assert {"auttention.corpus", "search.cli", "search.runner", "search.trial", "search.report"} <= set(graph)
    assert "search.resources" in graph["search.trial"]  # function-level imports count
    assert "auttention.errors" in graph["search.runner"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle) + "; move what both need into its own module"


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_auttention_never_imports_ray_or_search():
    for name, path in first_party_modules().items():
        if not name.startswith("auttention"):
            continue
        roots = {target.split(".")[0] for target in imported_names(path, name)}
        assert not roots & {"ray", "search"}, f"{path.relative_to(ROOT)} imports {sorted(roots & {'ray', 'search'})}"
