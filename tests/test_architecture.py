"""The shape of src/medft, read from its source with `ast` (nothing is imported): no import
circle between medft's modules, and no module over 400 lines.

Every `from medft... import` and `import medft...` counts, at module level or inside a
function: an import deferred into a function still ties the two modules together. A name
imported from a package (`from medft.x import y`) is the module ``medft.x.y`` when there is
one, else the package's ``__init__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SOURCE / "medft"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_module(name: str) -> str | None:
    """The medft module that an import of ``name`` runs: itself, or the nearest package or
    module above it (``medft.x.y`` for ``from medft.x.y import f``)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


def imports_of(module: str) -> set[str]:
    """The medft modules ``module`` imports, anywhere in its source."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {imported_module(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                above = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*above, base] if base else above)
            if base.split(".")[0] != "medft":
                continue
            for alias in node.names:  # a submodule by that name, else the module itself
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else imported_module(base))
    return {name for name in found if name is not None and name != module}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it (the first repeated at the end)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph[module]):
            cycle = visit(imported)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_the_import_graph_is_read_from_every_module():
    graph = {module: imports_of(module) for module in MODULES}
    assert "medft.inference.reading" in graph["medft"]  # function-level, in a package __init__
    assert "medft.formats.dicom_settings" in graph["medft.config.prepare"]
    assert graph["medft.errors"] == set()
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_circle_between_medft_modules():
    graph = {module: imports_of(module) for module in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_no_module_is_over_400_lines():
    lengths = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    over = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert not over, f"over {MAX_LINES} lines: {over}"


def test_only_the_commands_read_the_command_options():
    """Library modules keep their defaults where they use them; `medft.config.commands` (the
    options of the recipe commands and audit) is read by the commands and the cli only."""
    graph = {module: imports_of(module) for module in MODULES}
    readers = {module for module, imports in graph.items() if "medft.config.commands" in imports}
    assert all(
        module == "medft.cli" or module.startswith(("medft.commands.", "medft.config."))
        for module in readers
    ), readers
