"""The shape of src/medft, read from its source with `ast` (nothing is imported): no import
circle between medft's modules, no module over 400 lines, and no module outside
`medft.tasks` asking which kind (single- or multi-label) a task is, and none outside
`medft.modeling` that tells the backbone families apart (they ask the family instead).

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
# how code would test for a family: names of timm's wrapper and of a family test, and the
# strings a family is told by
FAMILY_NAMES = ("is_timm", "TimmWrapper", "timm_model")
FAMILY_STRINGS = {"timm", "timm/", "timm_model"}
# the recipe refuses pretrained_weights without a timm/ name when it is read, before any
# model is resolved (medft.config cannot import medft.modeling, which imports it)
FAMILY_TESTS_ALLOWED = {"medft.config.model": {"timm/"}}


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


def identifiers(tree: ast.AST) -> set[str]:
    """Every name the code uses or defines: variables, attributes, imports, functions,
    classes, arguments and keywords."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.alias):
            found |= {node.name, node.asname or node.name}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, (ast.arg, ast.keyword)) and node.arg:
            found.add(node.arg)
    return found


def family_tests(module: str) -> set[str]:
    """The names and strings in ``module`` that would tell the backbone families apart."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    names = {name for name in identifiers(tree) if any(part in name for part in FAMILY_NAMES)}
    strings = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in FAMILY_STRINGS
    }
    return names | strings


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


# The task kind is chosen in medft.tasks; no module outside it asks which kind a task is.
KINDS = {"multilabel", "multi_label_classification", "single_label_classification"}
# Readers of a CSV label table (`medft prepare csv`, `medft prepare dicom --csv`): the table
# holds one label per row, or several split by --label-separator; the reader describes that
# table with a boolean, which `SourceListing` turns into the listing's task.
DESCRIBES_ITS_LABEL_TABLE = {"medft.prepare.csv_table", "medft.prepare.dicom"}


def kind_questions(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) where the source asks a task's kind: reads an attribute `multi_label`,
    tests a name `multi_label`, compares anything to a kind's name, or compares a
    `problem_type`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "multi_label":
            found.append((node.lineno, "reads .multi_label"))
        elif isinstance(node, (ast.If, ast.IfExp, ast.While, ast.Assert)):
            names = [n for n in ast.walk(node.test) if isinstance(n, ast.Name)]
            if any(name.id == "multi_label" for name in names):
                found.append((node.lineno, "tests multi_label"))
        elif isinstance(node, ast.Compare):
            inside = list(ast.walk(node))
            constants = [n.value for n in inside if isinstance(n, ast.Constant)]
            found += [(node.lineno, f"compares to {c!r}") for c in constants if c in KINDS]
            if any(isinstance(n, ast.Attribute) and n.attr == "problem_type" for n in inside):
                found.append((node.lineno, "compares a problem_type"))
    return found


def test_kind_questions_are_found():
    source = (
        "a.multi_label\nx = 1 if multi_label else 2\nb = c.task in ('binary', 'multilabel')\n"
        "if config.problem_type == KIND: pass\nd = multi_label\ne = f(multi_label=True)"
    )
    assert sorted(line for line, _ in kind_questions(ast.parse(source))) == [1, 2, 3, 4]


def test_only_the_tasks_package_asks_which_kind_a_task_is():
    asked = {
        f"{name}:{line}": what
        for name, path in MODULES.items()
        if name.split(".")[:2] != ["medft", "tasks"] and name not in DESCRIBES_ITS_LABEL_TABLE
        for line, what in kind_questions(ast.parse(path.read_text(), str(path)))
    }
    assert not asked, f"ask the task object instead: {asked}"


def test_family_tests_are_found_where_the_families_live():
    assert {"TimmWrapperConfig", "timm_model"} <= family_tests("medft.modeling.families.timm")
    assert family_tests("medft.config.model") == {"timm/"}


def test_no_module_outside_modeling_tells_the_families_apart():
    outside = [m for m in MODULES if m != "medft.modeling" and not m.startswith("medft.modeling.")]
    found = {
        module: family_tests(module) - FAMILY_TESTS_ALLOWED.get(module, set()) for module in outside
    }
    found = {module: tests for module, tests in found.items() if tests}
    assert not found, f"family tests outside medft.modeling (ask the family instead): {found}"


def test_every_package_is_installed():
    """pyproject.toml lists its packages: a package left out is missing from a wheel."""
    import tomllib

    setup = tomllib.loads((SOURCE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    found = {
        ".".join(path.parent.relative_to(PACKAGE.parent).parts)
        for path in PACKAGE.rglob("__init__.py")
    }
    assert found - listed == set()
