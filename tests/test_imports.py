"""The picture of docs/ARCHITECTURE.md, checked: imports point one way between the packages, and
no two modules import each other, directly or around a circle (imports inside functions count)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# package -> the packages of ours it may import (besides itself)
ALLOWED = {
    "replay_engine": set(),
    "control": {"replay_engine"},
    "api": {"control", "replay_engine"},
    "worker": {"control", "replay_engine"},
    "inference": {"control", "replay_engine"},
    "client": {"control", "replay_engine"},
    "cli": {"api", "worker", "inference", "client", "control", "replay_engine"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Our modules that `path` imports (`from pkg import mod` counts as importing pkg.mod)."""
    found = set()
    package = (
        module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    )
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports."""
    files = [p for pkg in ALLOWED for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p) for p in files}
    edges: dict[str, set[str]] = {}
    for path in files:
        source = module_name(path)
        # a module importing its own package (its __init__) is no arrow between files
        targets = {t for t in imports_of(path, modules) if not source.startswith(t + ".")}
        edges[source] = targets - {source}
    return edges


def test_packages_import_only_downwards():
    wrong = [
        f"{a} -> {b}"
        for a, targets in graph().items()
        for b in targets
        if (pa := a.split(".")[0]) != (pb := b.split(".")[0]) and pb not in ALLOWED[pa]
    ]
    assert not wrong, "imports against the direction of docs/ARCHITECTURE.md:\n" + "\n".join(wrong)


def test_no_module_import_circles():
    try:
        graphlib.TopologicalSorter(graph()).prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"modules that import each other, around: {exc.args[1]}") from None
