"""The import structure of the package, read from the source with `ast` (nothing is imported).

Layers point one way (schemas <- infra <- streams, services), packages import each other without
cycles, the metrics core stays free of I/O, and pyproject.toml lists every package.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "safeloop"
LAYERS = ("schemas", "infra", "streams", "services")
# Folders whose files import the package too (and so must use its one top-level name).
OTHER_SOURCES = ("tests", "bench")

METRICS_CORE = f"{PACKAGE}.services.metrics"
CLI = f"{PACKAGE}.services.cli"
IO_LIBRARIES = frozenset({"confluent_kafka", "clickhouse_connect", "starlette", "uvicorn", "faust"})
# What each layer may import of ours besides itself.
LAYER_ALLOWS: dict[str, frozenset[str]] = {
    "schemas": frozenset(),
    "infra": frozenset({"schemas"}),
    "streams": frozenset({"schemas", "infra"}),
    "services": frozenset({"schemas", "infra"}),
}


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it is (imports inside functions included)."""

    path: Path
    line: int
    importer: str
    # The imported module, absolute and dotted; for `from X import name` X.name when that is
    # a module of ours, else X.
    target: str

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} ({self.importer} -> {self.target})"


def _python_files(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


@cache
def _packages() -> frozenset[str]:
    """Every directory with an `__init__.py` under the four roots, as dotted names."""
    return frozenset(_module_of(p) for p in _python_files(*LAYERS) if p.name == "__init__.py")


@cache
def _modules() -> frozenset[str]:
    return frozenset(_module_of(p) for p in _python_files(*LAYERS))


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module a `from` import reads from (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports_of(path: Path) -> list[Import]:
    importer = _module_of(path)
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, importer, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(node, importer, is_package)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                target = submodule if submodule in _modules() else source
                found.append(Import(path, node.lineno, importer, target))
    return found


@cache
def _package_imports() -> tuple[Import, ...]:
    return tuple(i for p in _python_files(*LAYERS) for i in _imports_of(p))


def _ours(target: str) -> bool:
    return target == PACKAGE or target.startswith(f"{PACKAGE}.")


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def _package_of(module: str) -> str:
    """The deepest package holding `module` (a package is its own)."""
    parts = module.split(".")
    while parts:
        name = ".".join(parts)
        if name in _packages():
            return name
        parts.pop()
    return PACKAGE


def _unique(lines: list[str]) -> list[str]:
    return sorted(set(lines))


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that starts and ends on the same node, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt)
            if cycle is not None:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle is not None:
            return cycle
    return None


def _package_graph() -> dict[str, set[str]]:
    """Package -> the other packages of ours its modules import."""
    graph: dict[str, set[str]] = {package: set() for package in _packages()}
    for found in _package_imports():
        if not _ours(found.target):
            continue
        source, target = _package_of(found.importer), _package_of(found.target)
        if source != target and target in graph:
            graph[source].add(target)
    return graph


def test_imports_of_ours_go_through_the_safeloop_name() -> None:
    bare = frozenset(LAYERS)
    wrong = []
    for path in _python_files(*LAYERS, *OTHER_SOURCES):
        in_package = path.relative_to(ROOT).parts[0] in bare
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.ImportFrom) and in_package:
                names = ["." * node.level + (node.module or "")]
            else:
                continue
            wrong += [
                f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
                for name in names
                if name.startswith(".") or name.split(".")[0] in bare
            ]
    assert not wrong, "import these as safeloop.<layer>...:\n" + "\n".join(wrong)


def test_layers_import_only_the_layers_below_them() -> None:
    wrong = []
    for found in _package_imports():
        if not _ours(found.target):
            continue
        source, target = _layer(found.importer), _layer(found.target)
        if source is None or target is None or source == target:
            continue
        allowed = LAYER_ALLOWS[source]
        if source == "services" and target == "streams" and _within(found.importer, CLI):
            continue  # the CLI is the composition root: `safeloop process` runs the processor
        if target not in allowed:
            wrong.append(found.where())
    assert not wrong, "imports against the layering:\n" + "\n".join(_unique(wrong))


def test_no_import_cycle_between_packages() -> None:
    cycle = _find_cycle(_package_graph())
    assert cycle is None, "packages import each other in a cycle: " + " -> ".join(cycle or [])


def test_metrics_core_imports_no_io_library_and_no_other_service() -> None:
    wrong = []
    for found in _package_imports():
        if not _within(found.importer, METRICS_CORE):
            continue
        io_library = found.target.split(".")[0] in IO_LIBRARIES
        # Of ours the core reads only the event contracts, the error root (and itself).
        foreign = (
            _ours(found.target)
            and found.target != PACKAGE
            and not any(
                _within(found.target, allowed) for allowed in (METRICS_CORE, f"{PACKAGE}.schemas")
            )
        )
        if io_library or foreign:
            wrong.append(found.where())
    assert not wrong, "the metrics core stays pure numpy:\n" + "\n".join(_unique(wrong))


def test_pyproject_lists_every_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = config["tool"]["setuptools"]["packages"]
    expected = {PACKAGE} | _packages()
    assert len(listed) == len(set(listed)), f"listed twice: {sorted(listed)}"
    assert set(listed) == expected, (
        f"missing: {sorted(expected - set(listed))}, not packages: {sorted(set(listed) - expected)}"
    )


def test_test_files_have_names_of_their_own_across_tiers() -> None:
    # The tiers are not packages: pytest imports each test file by its bare name, so a unit and
    # an integration test of one name cannot both be collected in one run.
    seen: dict[str, list[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}
