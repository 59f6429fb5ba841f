"""The shape of the code (issue 17): no import cycle between lth's modules, the read side never imports the
driver, the schema is a leaf, registries and the schema's choices agree, and no module grows past ~400 lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lth"
READ_SIDE = ("lth.report", "lth.plots", "lth.analyze", "lth.export")
DRIVER = ("lth.runs", "lth.imp", "lth.hydra_app", "lth.cli", "lth.signals")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The lth modules `name` imports anywhere in its source, function-level imports included."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imports(name) for name in MODULES}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for module in GRAPH[todo.pop()]:
            if module not in seen:
                seen.add(module)
                todo.append(module)
    return seen


def test_no_import_cycle_between_lth_modules():
    cycles = sorted(name for name in GRAPH if name in reachable(name))
    detail = {name: sorted(m for m in GRAPH[name] if name in reachable(m)) for name in cycles}
    assert not cycles, f"modules on an import cycle (and the imports that close it): {detail}"


@pytest.mark.parametrize("module", READ_SIDE)
def test_the_read_side_never_imports_the_driver(module):
    assert not reachable(module) & set(DRIVER), sorted(reachable(module) & set(DRIVER))


def test_the_schema_is_a_leaf():
    assert GRAPH["lth.schema"] <= {"lth.errors"}
    assert GRAPH["lth.errors"] == set()
    source = MODULES["lth.schema"].read_text()
    assert "hydra" not in source.split('"""', 2)[2] and "omegaconf" not in source.split('"""', 2)[2]


@pytest.mark.parametrize("module", ["lth.export", "lth.models", "lth.report", "lth.structured"])
def test_the_read_side_and_the_registries_load_no_hydra(module):
    code = f"import sys, {module}; print(any(m == 'hydra' or m.startswith('hydra.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_no_module_is_longer_than_about_400_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 400}
    assert not long


def test_each_choice_in_the_schema_has_its_registry_and_the_registries_no_others():
    from lth import controls, criteria, prune, retrain, schema, structures

    assert set(schema.CRITERIA) == set(criteria.CRITERIA)
    assert set(schema.SCHEDULES) == set(prune.SCHEDULES)
    assert set(schema.CONTROLS) == set(controls.CONTROLS)
    assert set(schema.RETRAIN) == set(retrain.RULES)
    assert set(schema.STRUCTURES) == set(structures.STRUCTURES)
    from lth import trackers
    from lth.structured import LOGGER_PACKAGES

    assert set(schema.LOGGERS) == {"none", *trackers.TRACKERS} == {"none", *LOGGER_PACKAGES}
