"""The package's shape, checked from its source: no import cycles, one home for task names."""

from __future__ import annotations

import ast
from pathlib import Path

from videovlm.pipelines import recipe_names
from videovlm.tasks import PROTOCOLS, TASKS

PACKAGE = Path(__file__).resolve().parent.parent / "videovlm"


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.Module, name: str, known: set[str]) -> set[str]:
    """Every videovlm module ``name`` imports, at the top or inside functions (imports that
    only type checkers see are left out: they never run)."""
    found: set[str] = set()
    package = name if any(k.startswith(name + ".") for k in known) else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in known and m != name}


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _imports(tree, name, set(modules)) for name, tree in modules.items()}
    # a package imports its own submodules to re-export them; a submodule importing its
    # package's __init__ back is the cycle that counts
    cycles = []

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in done:
                walk(nxt, [*path, nxt])
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            walk(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_only_the_task_table_names_tasks_and_recipes() -> None:
    """Task, recipe and protocol names are written in tasks.py alone (and in the recipes);
    everything else looks them up. ``__all__`` and the lazy-export table name the public
    functions ``describe``/``ask``, not tasks."""
    names = set(TASKS) | set(recipe_names()) | set(PROTOCOLS)
    found = []
    for name, tree in _modules().items():
        if name == "videovlm.tasks":
            continue
        exempt = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id in ("__all__", "_LAZY") for t in node.targets):
                exempt.update(id(n) for n in ast.walk(node.value))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and node.value in names and id(node) not in exempt):
                found.append(f"{name}:{node.lineno}: {node.value!r}")
    assert not found, "task or recipe names outside videovlm/tasks.py:\n" + "\n".join(found)
