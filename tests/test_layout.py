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


# Third-party packages that take a second or more to import (measured over numpy + pandas: TensorFlow 6 s,
# scikit-learn and scipy.stats 1 s, Ray 0.6 s): imported inside the functions that need them, so that a
# command pays only for what it uses. Everything else is imported at the top of its module.
EXPENSIVE = {"tensorflow", "keras", "ray", "optuna", "mlflow", "matplotlib", "sklearn", "scipy", "librosa"}


def top_level_imports(path: Path, name: str) -> set[str]:
    """The absolute module names `path` imports outside functions (TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text(), str(path))
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    inner |= {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
              and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
    return {t for node in ast.walk(tree) if id(node) not in inner
            for t in _targets(node, path, name)}


def _targets(node: ast.AST, path: Path, name: str) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        return {target} | {f"{target}.{alias.name}" for alias in node.names}
    return set()


def expensive_modules() -> set[str]:
    """The first-party modules whose import (at their top level, transitively) loads an EXPENSIVE package."""
    modules = first_party_modules()
    tops = {m: top_level_imports(p, m) for m, p in modules.items()}
    costly = {m for m, targets in tops.items() if {t.split(".")[0] for t in targets} & EXPENSIVE}
    while True:
        more = {m for m, targets in tops.items() if m not in costly and targets & costly}
        if not more:
            return costly
        costly |= more


def test_function_level_imports_are_only_of_expensive_modules():
    costly = expensive_modules()
    modules = first_party_modules()
    cheap_inside = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                targets = _targets(node, path, name)
                if not targets:
                    continue
                roots = {t.split(".")[0] for t in targets}
                first_party = {t for t in targets if t in modules}
                if roots & EXPENSIVE or first_party & costly or (targets & {"__main__"}):
                    continue
                cheap_inside.append(f"{path.relative_to(ROOT)}:{node.lineno} {sorted(targets)[0]}")
    assert not cheap_inside, ("import these at the top of the module (they are cheap): " + ", ".join(cheap_inside))
