"""The package's rules, read from the code itself (ast): the device side never imports torch or
export/ (only the command line may hand work to the torch front end), the library never imports
the command line, and no two modules import each other, directly or around a circle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "edge_saliency"
CLI = PACKAGE / "cli"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement in the file, at any depth."""
    found = []
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.append((base, node.lineno))
            for a in node.names:  # `from edge_saliency.serve import http` imports the module http
                if f"{base}.{a.name}" in MODULES:
                    found.append((f"{base}.{a.name}", node.lineno))
    return found


def violations(rule) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line}: {mod}" for name, path in sorted(MODULES.items())
            for mod, line in imports(path) if rule(path, mod)]


def test_the_device_side_never_imports_torch():
    assert violations(lambda p, m: m.split(".")[0] == "torch") == []


def test_only_the_command_line_reaches_into_export():
    assert violations(lambda p, m: m.split(".")[0] == "export" and CLI not in p.parents) == []


def test_the_library_never_imports_the_command_line():
    entry = {PACKAGE / "__main__.py"}
    assert violations(lambda p, m: (m == "edge_saliency.cli" or m.startswith("edge_saliency.cli."))
                      and CLI not in p.parents and p not in entry) == []


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for mod, _ in imports(path):
            while mod and mod not in MODULES:  # from pkg.mod import name -> pkg.mod
                mod = mod.rpartition(".")[0]
            if mod and mod != name and mod.startswith("edge_saliency") and not name.startswith(mod + "."):
                graph[name].add(mod)  # a module importing its own package's __init__ is not a circle
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_cycles():
    """Imports inside functions count too: a lazy import that closes a circle still ties the two."""
    cycle = find_cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("folder", ["runtime", "graph", "methods", "pipeline", "serve", "bench", "explain", "quality", "cli"])
def test_every_stage_is_a_package_with_its_own_description(folder):
    init = PACKAGE / folder / "__init__.py"
    assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), folder
