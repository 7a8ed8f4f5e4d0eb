"""The layer rule (docs/architecture.md): what each folder may import, checked by importing
it in a fresh interpreter where the forbidden frameworks cannot be imported."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_landscape"

_BLOCK = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ImportError(f"{{name}} is forbidden in this layer")
            return None

    sys.meta_path.insert(0, Block())
    for module in {modules!r}:
        importlib.import_module(module)
    from keras_landscape import registry
    if {discover!r}:
        assert len(registry.probes()) >= 5, registry.broken_plugins()
        assert not registry.broken_plugins(), registry.broken_plugins()
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r})
    assert not leaked, leaked
    print("ok")
    """
)

FRAMEWORKS = ("keras", "tensorflow", "jax", "tensorflow_datasets")


def _modules(*folders: str) -> list[str]:
    names = []
    for folder in folders:
        base = PACKAGE / folder
        names.append(f"keras_landscape.{folder}")
        names += [
            f"keras_landscape.{folder}.{p.stem}"
            for p in sorted(base.glob("*.py"))
            if p.stem != "__init__"
        ]
    return names


def _import_without(modules: list[str], blocked=FRAMEWORKS, discover=False) -> None:
    code = _BLOCK.format(modules=modules, blocked=set(blocked), discover=discover)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


def test_store_and_report_import_without_keras_or_frameworks():
    _import_without(_modules("store", "report") + ["keras_landscape.registry"])


def test_science_and_probe_classes_import_without_keras():
    """Listing probes, `show` and `plot` load every probe class: none may import Keras."""
    _import_without(
        _modules("science")
        + [
            "keras_landscape.engine.options",
            "keras_landscape.experiment.spec",
            "keras_landscape.models.files",
            "keras_landscape.models.minimum",
            "keras_landscape.models.recipes",
            "keras_landscape.seeds",
        ],
        discover=True,
    )


def test_data_imports_without_keras():
    _import_without(_modules("data"), blocked=("keras", "tensorflow", "jax"))


def _imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


#: folder -> the keras_landscape folders it must never import (no import runs back up)
NEVER = {
    "store": ("engine", "science", "data", "models", "report", "experiment", "plugins", "cli"),
    "data": ("engine", "science", "models", "store", "report", "experiment", "plugins", "cli"),
    "engine": ("science", "models", "store", "report", "experiment", "plugins", "cli"),
    "science": ("models", "report", "experiment", "plugins", "cli"),
    "models": ("science", "report", "experiment", "plugins", "cli"),
    "report": ("engine", "science", "data", "models", "experiment", "plugins", "cli"),
}


@pytest.mark.parametrize("folder", sorted(NEVER))
def test_no_import_runs_back_up(folder):
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for module in _imports_of(path):
            parts = module.split(".")
            if parts[0] == "keras_landscape" and len(parts) > 1:
                assert parts[1] not in NEVER[folder], f"{path.relative_to(ROOT)} imports {module}"


def test_only_engine_backend_imports_tensorflow_or_jax():
    allowed = {PACKAGE / "engine" / "backend", PACKAGE / "data"}  # data: tfds reads via TF
    for path in sorted(PACKAGE.rglob("*.py")):
        if any(a in path.parents for a in allowed):
            continue
        for module in _imports_of(path):
            assert module.split(".")[0] not in ("tensorflow", "jax"), (
                f"{path.relative_to(ROOT)} imports {module}"
            )
