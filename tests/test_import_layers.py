"""The house rules of DESIGN.md's layout, read from the source's import statements: imports
run one way (no cycle between the packages of ``so8t_kedro``), no pipeline imports another
pipeline, the framework-free ``so8t`` library imports nothing of the project or of Kedro,
and no domain package imports a pipeline."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "so8t_kedro"


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` of ``path`` names (relative imports
    resolved against the package ``path`` lives in)."""
    package = path.relative_to(SOURCE.parent).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def unit_of(module: str) -> str | None:
    """The top-level unit of ``so8t_kedro`` a module belongs to (``training`` for
    ``so8t_kedro.training.loop``, ``hooks`` for ``so8t_kedro.hooks``), else None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "so8t_kedro" and len(parts) > 1 else None


def unit_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in SOURCE.rglob("*.py"):
        unit = path.relative_to(SOURCE).with_suffix("").parts[0]
        for module in imported_modules(path):
            target = unit_of(module)
            known = target and ((SOURCE / target).is_dir() or (SOURCE / f"{target}.py").exists())
            if known and target != unit:
                edges[unit].add(target)
    return edges


def test_no_cycle_between_the_packages():
    edges = unit_graph()

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            unit = stack.pop()
            if unit == goal:
                return True
            if unit not in seen:
                seen.add(unit)
                stack.extend(edges.get(unit, ()))
        return False

    cycles = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if reaches(b, a)})
    assert cycles == [], f"packages that import each other (directly or through others): {cycles}"


def test_the_graph_sees_the_known_edges():
    """The scan reads real imports: the training loop loads bases through models/."""
    edges = unit_graph()
    assert "models" in edges["training"]
    assert "decision" in edges["pipelines"]


@pytest.mark.parametrize("path", sorted((SOURCE / "pipelines").glob("*/*.py")),
                         ids=lambda p: str(p.relative_to(SOURCE)))
def test_no_pipeline_imports_another(path: Path):
    own = path.parent.name
    others = sorted(module for module in imported_modules(path)
                    if module.startswith("so8t_kedro.pipelines.")
                    and module.split(".")[2] not in (own, "shared_nodes"))
    assert others == [], f"{path.relative_to(SOURCE)} imports another pipeline: {others}"


def test_domain_packages_do_not_import_pipelines_and_so8t_stays_framework_free():
    offenders = []
    for path in SOURCE.rglob("*.py"):
        unit = path.relative_to(SOURCE).parts[0]
        if unit in ("pipelines", "pipeline_registry.py", "settings.py"):
            continue
        modules = imported_modules(path)
        if any(m.startswith("so8t_kedro.pipelines") for m in modules):
            offenders.append(f"{path.relative_to(SOURCE)} imports a pipeline")
        if unit == "so8t" and any(m.split(".")[0] in ("kedro", "so8t_kedro") and
                                  not m.startswith("so8t_kedro.so8t") for m in modules):
            offenders.append(f"{path.relative_to(SOURCE)} (so8t/) imports kedro or the project")
    assert offenders == []
