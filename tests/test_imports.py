"""The direction of imports between kiln's layers, and that importing kiln has no side effects.

Layers, bottom up: the foundation (``kiln.errors``, ``kiln.types``,
``kiln.schema``), storage (``kiln.storage``), resources and queries
(``kiln.resource``, ``kiln.query``), then protocols and the process
(``kiln.http``, ``kiln.serve``, ``kiln.cli``). A layer may import from the ones
below it only. The modules are read with :mod:`ast`, so every import counts,
including those inside functions and ``if TYPE_CHECKING:`` blocks.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import kiln

SRC = Path(kiln.__file__).resolve().parent
"""The ``src/kiln`` folder."""

FOUNDATION = ("kiln.errors", "kiln.types", "kiln.schema")
STORAGE_MAY_IMPORT = ("kiln.storage", *FOUNDATION)
UPPER_LAYERS = ("kiln.http", "kiln.cli", "kiln.serve")


def module_name(path: Path) -> str:
    parts = ["kiln", *path.relative_to(SRC).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def imported_modules(name: str, source: str, *, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the module ``name``) imports, as absolute dotted names.

    ``from kiln import errors`` counts as importing ``kiln.errors`` (and ``kiln``).
    """
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(name: str, source: str, *, is_package: bool = False) -> list[str]:
    """The imports of module ``name`` that go against the layering."""
    imports = imported_modules(name, source, is_package=is_package)
    kiln_imports = sorted(m for m in imports if _within(m, ("kiln",)))
    found: list[str] = []
    if _within(name, ("kiln.storage",)):
        for module in kiln_imports:
            # `from kiln import errors` also yields plain `kiln`; the name imported decides
            if module != "kiln" and not _within(module, STORAGE_MAY_IMPORT):
                found.append(f"{name} imports {module}; storage may import {STORAGE_MAY_IMPORT}")
    if name == "kiln.resource" or _within(name, ("kiln.query",)):
        for module in kiln_imports:
            if _within(module, UPPER_LAYERS):
                found.append(f"{name} imports {module}, a layer above it")
    return found


def test_the_walker_sees_the_modules_and_their_imports() -> None:
    modules = all_modules()
    for expected in ("kiln", "kiln.storage.database", "kiln.storage.writer", "kiln.resource"):
        assert expected in modules
    assert any(name.startswith("kiln.query") for name in modules)
    database = imported_modules(
        "kiln.storage.database", modules["kiln.storage.database"].read_text()
    )
    assert {"kiln.schema.TableDef", "kiln.storage.table", "lmdb"} <= database
    assert "kiln.errors" in imported_modules("kiln", modules["kiln"].read_text(), is_package=True)


@pytest.mark.parametrize(
    ("name", "source", "bad"),
    [
        ("kiln.storage.table", "from kiln.http import rest", True),
        ("kiln.storage.table", "import kiln.resource", True),
        ("kiln.storage.table", "from kiln import config", True),
        ("kiln.storage.table", "def f():\n    from kiln.app import App\n", True),
        ("kiln.storage.table", "from ..validation import validate_record", True),
        ("kiln.storage.table", "from kiln import errors, types", False),
        ("kiln.storage.table", "from .keys import encode_key\nimport kiln.schema", False),
        ("kiln.resource", "from kiln.http.rest import RestHandler", True),
        ("kiln.resource", "from kiln import serve", True),
        ("kiln.resource", "from kiln.storage.writer import Writer", False),
        ("kiln.query.parser", "from ..cli import main", True),
        ("kiln.query.parser", "from kiln.errors import BadRequest", False),
    ],
)
def test_the_checker_flags_wrong_directions(name: str, source: str, bad: bool) -> None:
    assert bool(violations(name, source)) is bad, violations(name, source)


def test_import_direction() -> None:
    problems = [
        problem
        for name, path in all_modules().items()
        for problem in violations(name, path.read_text(), is_package=path.name == "__init__.py")
    ]
    assert problems == []


SIDE_EFFECTS_SCRIPT = """
import json, os, sys, threading

cwd = os.path.realpath(os.getcwd())
opened = []

def hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        full = os.path.realpath(os.path.join(cwd, path))
        if full == cwd or full.startswith(cwd + os.sep):
            opened.append(full)

before_threads = threading.active_count()
before_files = sorted(os.listdir(cwd))
sys.addaudithook(hook)
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({
    "threads_before": before_threads,
    "threads_after": threading.active_count(),
    "thread_names": [t.name for t in threading.enumerate()],
    "opened": opened,
    "files_before": before_files,
    "files_after": sorted(os.listdir(cwd)),
}))
"""


def run_script(workdir: Path, *modules: str) -> dict[str, Any]:
    """Import ``modules`` in a fresh interpreter whose cwd is ``workdir``; its report."""
    done = subprocess.run(
        [sys.executable, "-c", SIDE_EFFECTS_SCRIPT, *modules],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def app_folder(tmp_path: Path) -> Path:
    """A cwd that looks like an application folder, so a stray read would find files."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    (workdir / "schema.graphql").write_text("type Dog @table @export { id: Int @primaryKey }\n")
    (workdir / "config.yaml").write_text("http:\n  port: 1234\n")
    return workdir


def test_the_probe_sees_opens_and_threads(tmp_path: Path) -> None:
    """The harness itself: a module that reads config.yaml and starts a thread is caught."""
    workdir = app_folder(tmp_path)
    (workdir / "noisy_module.py").write_text(
        "import threading, time\n"
        "open('config.yaml').close()\n"
        "threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
    )
    report = run_script(workdir, "noisy_module")
    assert str((workdir / "config.yaml").resolve()) in report["opened"]
    assert report["threads_after"] == report["threads_before"] + 1


def test_importing_kiln_has_no_side_effects(tmp_path: Path) -> None:
    report = run_script(app_folder(tmp_path), "kiln")
    assert report["threads_after"] == report["threads_before"], report["thread_names"]
    assert report["opened"] == []
    assert report["files_after"] == report["files_before"]


def test_importing_every_kiln_module_has_no_side_effects(tmp_path: Path) -> None:
    """Not only the package: no module opens files or starts threads at import."""
    modules = [name for name in all_modules() if name != "kiln.__main__"]
    report = run_script(app_folder(tmp_path), *modules)
    assert report["threads_after"] == report["threads_before"], report["thread_names"]
    assert report["opened"] == []
    assert report["files_after"] == report["files_before"]
