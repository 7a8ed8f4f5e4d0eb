"""The layer rule (docs/architecture.md, "The layer rule"), checked two ways.

1. By importing: each layer is imported in a fresh interpreter where the frameworks it must
   not load cannot be imported.
2. By reading: the import graph of the whole installed package -- keras_landscape/, plugins/
   (keras_landscape.plugins) and cli/ (keras_landscape.cli), as setup.cfg's package_dir
   installs them -- counting every import: at module level, inside functions, classes,
   `if` and `try`, and `importlib.import_module("...")` / `__import__("...")` calls.
   Over that graph: no module of ours takes part in an import cycle, and every import,
   deferred or not, is one the layer table allows.
"""

from __future__ import annotations

import ast
import configparser
import re
import subprocess
import sys
import textwrap
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = "keras_landscape"

# --- 1. importing with frameworks made unimportable ----------------------------------------

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


def _package_dirs() -> dict[str, Path]:
    """Package name -> folder, as setup.cfg installs them (package_dir)."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    dirs = {TOP: ROOT / TOP}
    for line in parser["options"]["package_dir"].strip().splitlines():
        name, _, folder = line.partition("=")
        dirs[name.strip()] = ROOT / folder.strip()
    return dirs


def _find_modules() -> dict[str, Path]:
    """Every module of the installed package -> its file."""
    found = {}
    for package, folder in _package_dirs().items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _find_modules()


def _modules(*folders: str) -> list[str]:
    """The modules of keras_landscape.<folder> (the package and everything in it)."""
    prefixes = [f"{TOP}.{folder}" for folder in folders]
    return sorted(m for m in MODULES if any(_within(m, p) for p in prefixes))


def _import_without(modules: list[str], blocked=FRAMEWORKS, discover=False) -> None:
    code = _BLOCK.format(modules=modules, blocked=set(blocked), discover=discover)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


def test_store_and_report_import_without_keras_or_frameworks():
    _import_without(_modules("store", "report") + ["keras_landscape.registry"])


def test_science_and_probe_classes_import_without_keras():
    """Listing probes, `show` and `plot` load every probe class: none may import Keras."""
    _import_without(
        _modules("science", "plugins")
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


def test_cli_imports_without_frameworks():
    """`klandscape --help`, `probes`, `show` and `plot` start no framework: the commands
    that compute import `experiment.runner` (TensorFlow) when they run."""
    _import_without(_modules("cli"), discover=True)


def test_data_imports_without_keras():
    _import_without(_modules("data"), blocked=("keras", "tensorflow", "jax"))


# --- 2. the import graph ----------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One import in `module`'s source (`file`, `line`): of `target` (a module of ours where
    it names one or an attribute of one; otherwise the name as written), inside the
    functions `functions` (outermost first; empty: it runs when `module` is imported)."""

    module: str
    target: str
    file: str
    line: int
    functions: tuple[str, ...]
    how: str

    @property
    def deferred(self) -> bool:
        return bool(self.functions)

    def where(self) -> str:
        place = f"in {'.'.join(self.functions)}()" if self.deferred else "at import"
        return f"{self.file}:{self.line} ({self.how}, {place})"


@dataclass(frozen=True)
class Dynamic:
    """An import whose target the source does not spell out (a computed name, a file)."""

    module: str
    file: str
    line: int
    functions: tuple[str, ...]
    call: str


#: Dynamic imports of targets no literal names, allowed by (module, function) -- none other.
ALLOWED_DYNAMIC = {
    ("keras_landscape.registry", "discover"): (
        "probes of the keras_landscape.probes entry-point group, ours and third parties': "
        "plugins import the registry, and the registry finds them at run time"
    ),
    ("keras_landscape.models.loading", "load_custom_objects"): (
        "--custom-objects: the user's own module or .py file"
    ),
}

# Calls that import a module named by their first argument.
_IMPORT_CALLS = ("import_module", "__import__", "run_module")
# Calls that import a file.
_FILE_CALLS = ("spec_from_file_location", "run_path")


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _string_dicts(tree: ast.Module) -> dict[str, list[str]]:
    """Module-level `NAME = {key: "module", ...}` tables whose values are all strings."""
    tables = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Dict):
            values = node.value.values
            if values and all(
                isinstance(v, ast.Constant) and isinstance(v.value, str) for v in values
            ):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        tables[target.id] = [v.value for v in values]
    return tables


class _Reader(ast.NodeVisitor):
    """Every import in one module's source, and where it runs."""

    def __init__(self, graph: ImportGraph, module: str, tree: ast.Module):
        self.graph = graph
        self.module = module
        path = graph.modules[module]
        self.file = str(path.relative_to(graph.root))
        self.package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        self.tables = _string_dicts(tree)
        self.functions: list[str] = []

    def _add(self, target: str, node: ast.AST, how: str) -> None:
        """An import of the module `target` (of one of its attributes, for from-imports)."""
        if _within(target, TOP) and target not in self.graph.modules:
            self.graph.unknown.append(f"{self.file}:{node.lineno} imports {target}")
            return
        self.graph.imports.append(
            Import(self.module, target, self.file, node.lineno, tuple(self.functions), how)
        )

    def visit_FunctionDef(self, node) -> None:
        # Decorators and defaults run when the function is defined; the body when it is called.
        for child in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
            if child is not None:
                self.visit(child)
        self.functions.append(node.name)
        for statement in node.body:
            self.visit(statement)
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.functions.append("<lambda>")
        self.visit(node.body)
        self.functions.pop()

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node, "import")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:  # relative: from the package up `level - 1` packages
            parts = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            base = ".".join([*parts, node.module] if node.module else parts)
        else:
            base = node.module
        for alias in node.names:
            name = f"{base}.{alias.name}"
            self._add(name if name in self.graph.modules else base, node, "from-import")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        first = node.args[0] if node.args else None
        if name in _IMPORT_CALLS:
            literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
            if literal and not first.value.startswith("."):
                self._add(first.value, node, f"{name}()")
            elif (
                isinstance(first, ast.Subscript)
                and isinstance(first.value, ast.Name)
                and first.value.id in self.tables
            ):  # import_module(TABLE[key]): every module the table names
                for target in self.tables[first.value.id]:
                    self._add(target, node, f"{name}({first.value.id}[...])")
            else:
                self._dynamic(node)
        elif name in _FILE_CALLS or (
            name == "load"
            and isinstance(func, ast.Attribute)
            and "entry_point" in ast.unparse(func.value)
        ):  # a file, or an entry point's module
            self._dynamic(node)
        self.generic_visit(node)

    def _dynamic(self, node: ast.Call) -> None:
        self.graph.dynamic.append(
            Dynamic(
                self.module, self.file, node.lineno, tuple(self.functions), ast.unparse(node)[:120]
            )
        )


class ImportGraph:
    """The imports of a package's modules (name -> file under `root`): `imports`,
    `dynamic` (targets no literal names), `unknown` (names of ours that are no module)."""

    def __init__(self, modules: dict[str, Path], root: Path):
        self.modules = modules
        self.root = root
        self.imports: list[Import] = []
        self.dynamic: list[Dynamic] = []
        self.unknown: list[str] = []
        for module, path in modules.items():
            tree = ast.parse(path.read_text(), filename=str(path))
            _Reader(self, module, tree).visit(tree)

    def edges(self) -> dict[str, dict[str, Import]]:
        """module -> {module it imports: the first import that does}. Importing a.b.c runs
        the packages a and a.b first, so those count too, except the importer's own packages
        (imported before it, unless it names one: `from package import attribute`)."""
        edges: dict[str, dict[str, Import]] = defaultdict(dict)
        for imp in self.imports:
            if imp.target not in self.modules:
                continue
            parts = imp.target.split(".")
            parents = [".".join(parts[:n]) for n in range(1, len(parts))]
            for target in [imp.target, *(p for p in parents if not _within(imp.module, p))]:
                if target != imp.module and target in self.modules:
                    edges[imp.module].setdefault(target, imp)
        return edges

    def cycles(self) -> list[tuple[list[str], list[str]]]:
        """Each strongly connected component (Tarjan) of more than one module: its modules,
        and a shortest cycle [a, b, ..., a] through them."""
        edges = self.edges()
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        components = []

        def connect(v: str) -> None:
            index[v] = low[v] = len(index)
            stack.append(v)
            on_stack.add(v)
            for w in sorted(edges.get(v, ())):
                if w not in index:
                    connect(w)
                    low[v] = min(low[v], low[w])
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

        for v in sorted(self.modules):
            if v not in index:
                connect(v)
        return [(c, _shortest_cycle(c, edges)) for c in components]

    def describe(self, cycle: list[str]) -> str:
        edges = self.edges()
        steps = [cycle[0]]
        for a, b in zip(cycle, cycle[1:]):
            steps.append(f"  -> {b}    {edges[a][b].where()}")
        return "\n".join(steps)


def _shortest_cycle(component: list[str], edges) -> list[str]:
    """A shortest cycle through the component's modules: [a, b, ..., a] (breadth first)."""
    best: list[str] = []
    inside = set(component)
    for start in component:
        previous: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            v = queue.popleft()
            if start in edges.get(v, ()):
                path = [v]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                cycle = [*reversed(path), start]
                if not best or len(cycle) < len(best):
                    best = cycle
                break
            for w in sorted(edges.get(v, ())):
                if w in inside and w not in previous:
                    previous[w] = v
                    queue.append(w)
    return best


GRAPH = ImportGraph(MODULES, ROOT)


def test_every_import_names_a_module_that_exists():
    assert not GRAPH.unknown, "\n".join(GRAPH.unknown)


def test_no_import_cycle():
    """No cycle through our modules, counting deferred and literal dynamic imports: a cycle
    hidden in a function still makes the two modules one unit that cannot be read, tested
    or loaded apart, and it breaks as soon as someone moves the import up."""
    cycles = GRAPH.cycles()
    report = [
        f"{', '.join(modules)} import one another; a shortest cycle:\n{GRAPH.describe(cycle)}"
        for modules, cycle in cycles
    ]
    assert not cycles, "Import cycles:\n" + "\n\n".join(report)


def test_dynamic_imports_are_literal_or_allowed():
    """An import whose target no literal names escapes every check here: only the ones
    listed in ALLOWED_DYNAMIC, and each of those must still exist."""
    seen = set()
    refused = []
    for d in GRAPH.dynamic:
        key = (d.module, d.functions[0] if d.functions else "")
        if key in ALLOWED_DYNAMIC:
            seen.add(key)
        else:
            refused.append(f"{d.file}:{d.line}: {d.call}")
    assert not refused, "Dynamic imports of a computed target:\n" + "\n".join(refused)
    assert seen == set(ALLOWED_DYNAMIC), f"stale ALLOWED_DYNAMIC: {set(ALLOWED_DYNAMIC) - seen}"


# --- the layer table ----------------------------------------------------------------------

ANYWHERE = "anywhere"
IN_FUNCTIONS = "inside functions"


@dataclass(frozen=True)
class Layer:
    """A row of the layer table.

    members: the modules (prefixes) of the row. ours: modules of ours (prefixes) it may
    import anywhere; deferred: prefixes it may import only inside functions (the longest
    matching prefix of the two decides). frameworks: framework -> ANYWHERE, IN_FUNCTIONS,
    or the names of the functions it may be imported in; a framework not listed is never
    imported. Other third-party libraries are not checked.
    """

    members: tuple[str, ...]
    ours: tuple[str, ...] = ()
    deferred: tuple[str, ...] = ()
    frameworks: dict = field(default_factory=dict)


def _k(*names: str) -> tuple[str, ...]:
    return tuple(f"{TOP}.{n}" if n else TOP for n in names)


BASE = _k(
    "errors",
    "progress",
    "seeds",
    "_version",
    "levels",
    "flat",
    "values",
    "settings",
    "contract",
    "blas",
)
_TF_JAX = {"keras": ANYWHERE, "tensorflow": ANYWHERE, "jax": ANYWHERE}

#: docs/architecture.md "The layer rule", row by row, with the sub-rows its text states.
LAYERS = {
    "base": Layer(BASE, ours=BASE, frameworks={}),
    "store": Layer(_k("store"), ours=(*BASE, *_k("store")), frameworks={}),
    "data": Layer(
        _k("data"),
        ours=(*BASE, *_k("data")),
        frameworks={"tensorflow": ("_load_tfds",), "tensorflow_datasets": ("_load_tfds",)},
    ),
    "engine": Layer(
        _k("engine"), ours=(*BASE, *_k("data", "engine")), frameworks={"keras": ANYWHERE}
    ),
    "engine/backend": Layer(
        _k("engine.backend"), ours=(*BASE, *_k("engine.backend")), frameworks=_TF_JAX
    ),
    "engine.options": Layer(
        _k("engine.options", "engine.optimizer_names"),
        ours=(*BASE, *_k("engine.optimizer_names")),
        deferred=_k("engine.optimizers"),
        frameworks={},
    ),
    "models": Layer(
        _k("models"),
        ours=(*BASE, *_k("models", "engine", "data", "store")),
        frameworks={"keras": ANYWHERE},
    ),
    # models.files and models.minimum: checks before any framework loads; the Minimum type
    "models (no framework)": Layer(
        _k("models.files", "models.minimum"),
        ours=(*BASE, *_k("models", "engine", "data", "store")),
        frameworks={},
    ),
    "registry": Layer(_k("registry"), ours=BASE, frameworks={}),
    "science": Layer(
        _k("science"),
        ours=(*BASE, *_k("science", "engine.options", "store.strings")),
        frameworks={},
    ),
    "report": Layer(_k("report"), ours=(*BASE, *_k("report", "store", "registry")), frameworks={}),
    "plugins": Layer(
        _k("plugins"),
        ours=(
            *BASE,
            *_k("plugins", "registry", "science", "report", "store", "engine.options"),
            *_k("models.minimum", "models.align"),
        ),
        frameworks={"keras": ("run",), "tensorflow": ("run",), "jax": ("run",)},
    ),
    "experiment": Layer(
        _k("experiment", "callbacks"),
        ours=(
            *BASE,
            *_k("experiment", "callbacks", "store", "data", "engine", "models", "registry"),
            *_k("science", "report", "plugins"),
        ),
        frameworks={"keras": ANYWHERE},
    ),
    "cli": Layer(
        _k("cli"),
        ours=_k(""),
        deferred=_k("experiment.runner"),
        frameworks={"keras": IN_FUNCTIONS, "tensorflow": IN_FUNCTIONS, "jax": IN_FUNCTIONS},
    ),
    # keras_landscape/__init__: __version__, and the public API re-exported lazily
    "package": Layer(_k(""), ours=_k("_version"), deferred=_k(""), frameworks={}),
}


def _match(prefixes: tuple[str, ...], name: str) -> int:
    """Length of the longest prefix in `prefixes` that `name` is or lies in; -1 if none.
    The bare package name matches only as a target (every module lies in it)."""
    return max((len(p) for p in prefixes if _within(name, p)), default=-1)


def _layer_of(module: str) -> str | None:
    best, found = -1, None
    for name, layer in LAYERS.items():
        for member in layer.members:
            if module == member or (member != TOP and _within(module, member)):
                if len(member) > best:
                    best, found = len(member), name
    return found


def test_every_module_is_in_a_layer():
    missing = sorted(m for m in MODULES if _layer_of(m) is None)
    assert not missing, (
        f"{missing} belong to no row of the layer table: add them to docs/architecture.md "
        "and to LAYERS here"
    )


def _breaches(layer: str, graph: ImportGraph = GRAPH) -> list[str]:
    rule = LAYERS[layer]
    found = []
    for imp in graph.imports:
        if _layer_of(imp.module) != layer or imp.target == imp.module:
            continue
        framework = imp.target.split(".")[0]
        if imp.target in graph.modules:
            anywhere, deferred = _match(rule.ours, imp.target), _match(rule.deferred, imp.target)
            if max(anywhere, deferred) < 0:
                found.append(f"{imp.where()}: imports {imp.target}, which {layer} never imports")
            elif deferred > anywhere and not imp.deferred:
                found.append(
                    f"{imp.where()}: imports {imp.target} at import time, which "
                    f"{layer} imports only inside functions"
                )
        elif framework in FRAMEWORKS:
            allowed = rule.frameworks.get(framework)
            if allowed is None:
                found.append(f"{imp.where()}: imports {imp.target}; {layer} never does")
            elif allowed == IN_FUNCTIONS and not imp.deferred:
                found.append(
                    f"{imp.where()}: imports {imp.target} at import time; {layer} "
                    "imports it only inside functions"
                )
            elif isinstance(allowed, tuple) and not set(imp.functions) & set(allowed):
                found.append(
                    f"{imp.where()}: imports {imp.target}; {layer} imports it only "
                    f"inside {', '.join(allowed)}()"
                )
    return list(dict.fromkeys(found))  # once each: `from a import b, c` is one line


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_imports_follow_the_layer_table(layer):
    """Every import of the row's modules, deferred ones too: no module of ours the row does
    not list, no framework where the row does not allow it."""
    breaches = _breaches(layer)
    assert not breaches, "\n".join(breaches)


def test_the_layer_table_names_every_module():
    """docs/architecture.md's table has a row for every module and folder of the package."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text[text.index("## The layer rule") :]
    section = section[: section.index("\n## ", 1)]
    named = set(re.findall(r"`([^`]+)`", section))
    missing = set()
    for module in MODULES:
        parts = module.split(".")
        if module == TOP:
            wanted = {f"{TOP}/__init__.py"}
        elif len(parts) == 2 and MODULES[module].name != "__init__.py":
            wanted = {parts[1], f"{parts[1]}.py"}
        else:
            wanted = {f"{parts[1]}/"}
        if not wanted & named:
            missing.add(sorted(wanted)[0])
    assert not missing, f"The layer table in docs/architecture.md does not name {sorted(missing)}"


# --- the checks themselves, on a small package with known answers ------------------------

_SAMPLE = {
    "__init__.py": "",
    "pkg/__init__.py": "",
    "pkg/a.py": "from . import b\n",
    "pkg/b.py": (
        "def f():\n"
        "    import importlib\n"
        "    return importlib.import_module('keras_landscape.pkg.c')\n"
    ),
    "pkg/c.py": (
        "class C:\n"
        "    try:\n"
        "        __import__('keras_landscape.pkg.a')\n"
        "    except ImportError:\n"
        "        pass\n"
    ),
    "pkg/d.py": (
        "import importlib\n"
        "TABLE = {'x': 'keras_landscape.pkg.e'}\n"
        "def g(name):\n"
        "    return importlib.import_module(TABLE[name])\n"
        "def h(name):\n"
        "    import keras_landscape.pkg.nowhere\n"
        "    return importlib.import_module(name)\n"
    ),
    "pkg/e.py": "from ..pkg.a import b\n",
    "plugins/__init__.py": "",
    "plugins/x.py": (
        "import numpy\n"
        "class Probe:\n"
        "    def run(self):\n"
        "        import keras\n"
        "def other():\n"
        "    import keras\n"
        "import tensorflow\n"
    ),
    "cli/__init__.py": "",
    "cli/y.py": (
        "from keras_landscape.experiment import runner\n"
        "def command():\n"
        "    from keras_landscape.experiment import runner\n"
    ),
    "experiment/__init__.py": "",
    "experiment/runner.py": "",
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> ImportGraph:
    root = tmp_path_factory.mktemp("sample")
    for name, text in _SAMPLE.items():
        path = root / TOP / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    modules = {}
    for path in sorted((root / TOP).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return ImportGraph(modules, root)


def test_a_cycle_through_deferred_and_dynamic_imports_is_found(sample):
    """a -> b at import (relative), b -> c inside a function (import_module), c -> a in a
    class body's try (__import__): one cycle, reported with where each import runs."""
    p = "keras_landscape.pkg."
    ((modules, cycle),) = sample.cycles()
    assert modules == [p + "a", p + "b", p + "c"]
    assert sample.describe(cycle).splitlines() == [
        p + "a",
        f"  -> {p}b    keras_landscape/pkg/a.py:1 (from-import, at import)",
        f"  -> {p}c    keras_landscape/pkg/b.py:3 (import_module(), in f())",
        f"  -> {p}a    keras_landscape/pkg/c.py:3 (__import__(), at import)",
    ]


def test_tables_of_names_relative_imports_and_computed_names(sample):
    edges = sample.edges()
    p = "keras_landscape.pkg."
    assert edges[p + "d"][p + "e"].how == "import_module(TABLE[...])"
    assert edges[p + "e"][p + "a"].how == "from-import"  # from ..pkg.a import b
    assert sample.unknown == ["keras_landscape/pkg/d.py:6 imports keras_landscape.pkg.nowhere"]
    assert [(d.module, d.functions) for d in sample.dynamic] == [(p + "d", ("h",))]


def test_layer_breaches_count_where_an_import_runs(sample):
    assert _breaches("plugins", sample) == [
        "keras_landscape/plugins/x.py:6 (import, in other()): imports keras; plugins imports "
        "it only inside run()",
        "keras_landscape/plugins/x.py:7 (import, at import): imports tensorflow; plugins "
        "imports it only inside run()",
    ]
    assert _breaches("cli", sample) == [
        "keras_landscape/cli/y.py:1 (from-import, at import): imports "
        "keras_landscape.experiment.runner at import time, which cli imports only inside "
        "functions"
    ]
