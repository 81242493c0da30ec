"""The package layout is the architecture: each package imports only the layers below it,
and the core (every decision the daemon makes) does no IO and reads no clock."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "maildesk"

# Which packages of maildesk each one may import (its own always).
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "metrics": frozenset(),
    "worker": frozenset(),
    "lifecycle": frozenset(),
    "gcpolicy": frozenset(),
    "core": frozenset({"errors"}),
    "spam": frozenset({"core", "errors"}),
    "config": frozenset({"core", "errors"}),
    "storage": frozenset({"core", "config", "spam", "errors"}),
    "intake": frozenset({"worker", "core", "config", "storage", "metrics", "errors"}),
    "work": frozenset({"worker", "core", "config", "storage", "spam", "metrics", "errors",
                       "gcpolicy"}),
    "app": frozenset({"worker", "core", "config", "storage", "spam", "intake", "work", "metrics",
                      "errors", "lifecycle", "gcpolicy"}),
    "cli": frozenset({"worker", "core", "config", "storage", "spam", "intake", "work", "metrics",
                      "errors", "lifecycle", "app"}),
    "__main__": frozenset({"cli", "lifecycle"}),
    "__init__": frozenset(),
}

# The core decides; it never touches a database, a socket, the event loop, the
# environment or the clock (the time is an argument), nor reads a file.
CORE_BANNED_MODULES = ("sqlalchemy", "sqlmodel", "alembic", "asyncio", "os", "time",
                       "subprocess", "socket", "threading", "shutil")
CORE_BANNED_CALLS = ("now", "utcnow", "today", "monotonic", "perf_counter", "open",
                     "read_text", "read_bytes", "write_text", "write_bytes", "getenv")


def _modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "storage" and "migrations" in relative.parts:
            continue
        yield relative.parts[0].removesuffix(".py"), path, ast.parse(path.read_text())


def _imports(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "maildesk":
                for alias in node.names:
                    yield node.lineno, f"maildesk.{alias.name}"
            else:
                yield node.lineno, node.module


def _layer_of(module: str) -> str:
    return module.split(".")[1]


def _layer_problems(layer: str, where: str, tree: ast.Module) -> list[str]:
    return [
        f"{where}:{line}: {layer} imports {module}"
        for line, module in _imports(tree)
        if module.startswith("maildesk.")
        and _layer_of(module) != layer
        and _layer_of(module) not in ALLOWED[layer]
    ]


def _core_problems(tree: ast.Module) -> list[str]:
    wrong = [
        f"line {line}: imports {module}"
        for line, module in _imports(tree)
        if module.split(".")[0] in CORE_BANNED_MODULES
    ]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in CORE_BANNED_CALLS:
                wrong.append(f"line {node.lineno}: calls {name}()")
    return wrong


def test_every_package_imports_only_the_layers_below_it() -> None:
    wrong = []
    for layer, path, tree in _modules():
        assert layer in ALLOWED, f"{path}: a package the layout does not know: {layer}"
        wrong.extend(_layer_problems(layer, str(path.relative_to(PACKAGE)), tree))
    assert wrong == []


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "core").glob("*.py")), ids=lambda p: p.name
)
def test_the_core_does_no_io_and_reads_no_clock(path: Path) -> None:
    assert _core_problems(ast.parse(path.read_text())) == []


def test_the_checks_find_what_they_forbid() -> None:
    """A core module that imports the database, reads the clock or opens a file, and a
    storage module that imports a worker, are each reported."""
    core = ast.parse(
        "from sqlmodel import Session\nimport asyncio\nfrom datetime import datetime\n"
        "stamp = datetime.now()\ntext = open('x').read()\n"
    )
    assert len(_core_problems(core)) == 4
    storage = ast.parse("from maildesk.work.outbox import OutboxSender\nimport maildesk.core.tid\n")
    assert _layer_problems("storage", "x.py", storage) == [
        "x.py:1: storage imports maildesk.work.outbox"
    ]
