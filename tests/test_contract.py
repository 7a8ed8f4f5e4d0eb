"""The contract (keras_landscape/contract.py): the science and the probes use nothing of a
landscape but `LandscapeLike`, and the engine's `Landscape` implements it.

The first tests read the source of science/, plugins/ and the example third-party probe and
follow every value that is a landscape (a parameter named `landscape` or annotated with a
contract type, its aliases, and what contract members return) to each attribute read on it.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

from keras_landscape import contract
from keras_landscape.contract import (
    Evaluation,
    LandscapeLike,
    ParameterLayoutLike,
    ProjectionResult,
    Stepper,
)

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    *sorted((ROOT / "keras_landscape" / "science").glob("*.py")),
    *sorted((ROOT / "plugins").glob("*.py")),
    ROOT / "examples" / "third_party_probe" / "klandscape_linear_path.py",
]

#: the contract's types, by name (annotations name them)
TYPES = {
    name: value
    for name, value in vars(contract).items()
    if inspect.isclass(value) and value.__module__ == contract.__name__
}


def members(cls) -> set[str]:
    """The public members a contract type declares (methods, properties, fields)."""
    names = set()
    for base in cls.__mro__:
        if base.__module__ != contract.__name__:
            continue
        names |= {n for n in vars(base) if not n.startswith("_")}
        names |= {n for n in getattr(base, "__annotations__", {}) if not n.startswith("_")}
    return names


def _returned(cls, name: str):
    """What member `name` of contract type `cls` gives: ('value', type) for a field or
    property, ('method', return type) for a method; the type is a contract type or None."""
    declared = inspect.getattr_static(cls, name, None)
    if isinstance(declared, property):
        hint = typing.get_type_hints(declared.fget).get("return")
        kind = "value"
    elif inspect.isfunction(declared) or isinstance(declared, staticmethod):
        function = declared.__func__ if isinstance(declared, staticmethod) else declared
        hint = typing.get_type_hints(function).get("return")
        kind = "method"
    else:
        hint = typing.get_type_hints(cls).get(name)
        kind = "value"
    return kind, hint if hint in TYPES.values() else None


def _contract_type(annotation: ast.expr | None):
    """The contract type an annotation names (LandscapeLike, 'LandscapeLike', ...)."""
    if annotation is None:
        return None
    text = ast.unparse(annotation).strip("'\"")
    return TYPES.get(text.rsplit(".", 1)[-1])


class _Reads(ast.NodeVisitor):
    """Every attribute read on a contract-typed value, checked against its type."""

    def __init__(self, where: str):
        self.where = where
        self.scopes: list[dict[str, type]] = [{}]
        self.breaches: list[tuple[str, str, str]] = []  # (where:line, type, attribute)
        self.used: set[tuple[str, str]] = set()  # (type, attribute) read and declared

    # -- what an expression is
    def _type_of(self, node: ast.expr):
        """The contract type of `node`'s value, or ('method', type, name) for a bound
        contract method, or None (not a contract value)."""
        if isinstance(node, ast.Name):
            return self.scopes[-1].get(node.id)
        if isinstance(node, ast.Attribute):
            owner = self._type_of(node.value)
            if inspect.isclass(owner):
                return self._member(owner, node.attr, node)
            return None
        if isinstance(node, ast.Call):
            called = self._type_of(node.func)
            if isinstance(called, tuple):
                return called[1]
            if isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
                self._dynamic(node)
        return None

    def _member(self, owner, name: str, node: ast.AST):
        if name not in members(owner):
            self.breaches.append((f"{self.where}:{node.lineno}", owner.__name__, name))
            return None
        self.used.add((owner.__name__, name))
        kind, result = _returned(owner, name)
        return ("method", result, name) if kind == "method" else result

    def _dynamic(self, node: ast.Call) -> None:
        """getattr(landscape, "name", ...) / hasattr(landscape, "name") read `name`."""
        if len(node.args) >= 2:
            owner = self._type_of(node.args[0])
            name = node.args[1]
            if inspect.isclass(owner):
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    self._member(owner, name.value, node)
                else:
                    self.breaches.append((f"{self.where}:{node.lineno}", owner.__name__, "?"))

    # -- scopes: parameters and aliases
    def _function(self, node) -> None:
        scope = dict(self.scopes[-1])
        arguments = node.args
        for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
            kind = _contract_type(getattr(arg, "annotation", None))
            if kind is None and arg.arg == "landscape":
                kind = LandscapeLike
            if kind is not None:
                scope[arg.arg] = kind
            else:
                scope.pop(arg.arg, None)  # a parameter shadows an outer contract value
        self.scopes.append(scope)
        for _ in range(2):  # aliases of aliases, whatever order they are written in
            for inner in ast.walk(node):
                if isinstance(inner, ast.Assign):
                    for target in inner.targets:
                        self._bind(target, inner.value, scope)
                elif isinstance(inner, ast.AnnAssign) and inner.value is not None:
                    self._bind(inner.target, inner.value, scope)
        self.generic_visit(node)
        self.scopes.pop()

    def _bind(self, target: ast.expr, value: ast.expr, scope: dict) -> None:
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
            for t, v in zip(target.elts, value.elts):
                self._bind(t, v, scope)
        elif isinstance(target, ast.Name):
            saved, self.breaches = self.breaches, []  # binding reads nothing new
            kind = self._type_of(value)
            self.breaches = saved
            if inspect.isclass(kind):
                scope[target.id] = kind

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    # -- reads
    def visit_Attribute(self, node: ast.Attribute) -> None:
        owner = self._type_of(node.value)
        if inspect.isclass(owner):
            self._member(owner, node.attr, node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            self._dynamic(node)
        self.generic_visit(node)


def breaches_in(source: str, where: str = "<source>") -> list[tuple[str, str, str]]:
    """(where:line, contract type, attribute) for every read the contract does not declare."""
    reads = _Reads(where)
    reads.visit(ast.parse(source))
    return sorted(set(reads.breaches))


# ------------------------------------------------------------------ the static check


def test_the_check_finds_every_read_outside_the_contract():
    """Known answers: reach-throughs, aliases, chained results, getattr, closures."""
    source = """
def run(self, landscape, models):
    model = landscape.model                      # 3: not in the contract
    ls = landscape
    level = ls.objective.level_fn                # 5: objective (its level_fn is not checked)
    layout = landscape.layout
    parts = layout.unflatten(theta)              # 7: ParameterLayoutLike has no unflatten
    data = getattr(landscape, "dataset", None)   # 8
    moved = landscape.stepper(config).optimizer  # 9: Stepper has only step
    def inner(v):
        return landscape.devices.rows            # 11
    fine = landscape.levels(thetas), landscape.layout.bias_mask(), landscape.size
    value = landscape.evaluate(theta).level
    grad = landscape.evaluate(theta).grad        # 14: Evaluation has loss and level
    beads = landscape.project(s, 1.0, c, 0).rows(slice(0, 1)).thetas
    return landscape.project(s, 1.0, c, 0).models  # 16

def other(space: "LandscapeLike", landscape: int):
    a, b = space, space.size
    return a.state_layout                        # 20: an alias through a tuple
"""
    found = breaches_in(source)
    assert sorted((int(w.rsplit(":", 1)[1]), t, a) for w, t, a in found) == sorted(
        [
            (3, "LandscapeLike", "model"),
            (5, "LandscapeLike", "objective"),
            (7, "ParameterLayoutLike", "unflatten"),
            (8, "LandscapeLike", "dataset"),
            (9, "Stepper", "optimizer"),
            (11, "LandscapeLike", "devices"),
            (14, "Evaluation", "grad"),
            (16, "ProjectionResult", "models"),
            (20, "LandscapeLike", "state_layout"),
        ]
    )


def test_the_contract_is_what_the_science_and_the_probes_use():
    """The check follows the landscape through every source (a check that reads nothing
    would pass anything), and the contract is minimal: each member is used somewhere."""
    assert len(SOURCES) >= 15 and all(path.is_file() for path in SOURCES)
    used: dict[str, set[str]] = {}
    for path in SOURCES:
        reads = _Reads(str(path.relative_to(ROOT)))
        reads.visit(ast.parse(path.read_text()))
        for kind, name in reads.used:
            used.setdefault(kind, set()).add(name)
    assert used["LandscapeLike"] == members(LandscapeLike)
    assert used["ParameterLayoutLike"] == members(ParameterLayoutLike)
    assert used["Stepper"] == {"step"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_science_and_probes_use_only_the_contract(path):
    found = breaches_in(path.read_text(), str(path.relative_to(ROOT)))
    assert not found, (
        "These read a landscape outside keras_landscape.contract.LandscapeLike; use a member "
        "of the contract, or add one (to the Protocol and to engine.landscape.Landscape): "
        + "; ".join(f"{where}: {kind}.{name}" for where, kind, name in found)
    )


def test_landscape_parameters_are_annotated_with_the_contract():
    """Every `landscape` parameter of the science and the probes says what it may use."""
    bare = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                    if arg.arg == "landscape" and _contract_type(arg.annotation) is None:
                        bare.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not bare, bare


# ------------------------------------------------------------------ the contract module


def test_the_contract_imports_only_the_standard_library_typing_and_numpy():
    tree = ast.parse((ROOT / "keras_landscape" / "contract.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"numpy"}
    code = (
        "import sys; import keras_landscape.contract; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('keras', 'tensorflow', 'jax', 'h5py', 'scipy', 'matplotlib')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_contract_declares_shapes_and_types_of_every_member():
    """Each member is typed (parameters and result) and documented."""
    for cls in (LandscapeLike, ParameterLayoutLike, Stepper):
        for name in members(cls):
            declared = inspect.getattr_static(cls, name, None)
            function = declared.fget if isinstance(declared, property) else declared
            if not inspect.isfunction(function):
                assert name in typing.get_type_hints(cls), f"{cls.__name__}.{name}"
                continue
            hints = typing.get_type_hints(function)
            parameters = list(inspect.signature(function).parameters)[1:]
            assert set(parameters) | {"return"} <= set(hints), f"{cls.__name__}.{name}"
            assert (function.__doc__ or "").strip(), f"{cls.__name__}.{name} has no docstring"


# ------------------------------------------------------------------ the engine implements it


def _same_signature(declared, implemented) -> list[str]:
    """Differences between a Protocol method and an implementation (names, kinds, defaults)."""
    want = list(inspect.signature(declared).parameters.values())
    have = list(inspect.signature(implemented).parameters.values())
    got = [(p.name, p.kind, p.default) for p in have]
    expected = [(p.name, p.kind, p.default) for p in want]
    return [] if got == expected else [f"declared {expected}", f"implemented {got}"]


def test_landscape_has_every_member_with_the_declared_signature():
    from keras_landscape.engine.landscape import Landscape

    for name in sorted(members(LandscapeLike)):
        declared = inspect.getattr_static(LandscapeLike, name)
        implemented = inspect.getattr_static(Landscape, name, None)
        if inspect.isfunction(declared):
            assert inspect.isfunction(implemented), f"Landscape.{name} is not a method"
            assert not _same_signature(declared, implemented), (
                name,
                _same_signature(declared, implemented),
            )
        elif implemented is not None:
            # a property of the contract: a property of the class, or an attribute that
            # every instance is given in __init__ (checked on a real one below)
            assert isinstance(implemented, property), f"Landscape.{name} is not a property"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two weights w on a constant input, y = w, MSE against (1, -1): E(w) = ((w1 - 1)^2 +
    (w2 + 1)^2) / 2, grad E = w - (1, -1), H = I."""
    from conftest import weight_landscape

    return weight_landscape(tmp_path_factory.mktemp("tiny"), 2, lambda w: w, [1.0, -1.0])


def test_a_real_landscape_is_a_landscape_like(tiny):
    from keras_landscape.engine.options import ProjectionConfig

    assert isinstance(tiny, LandscapeLike)
    assert isinstance(tiny.layout, ParameterLayoutLike)
    assert tiny.size == 2 and tiny.state_size == 0
    assert tiny.layout.paths[0].endswith("kernel") and tiny.layout.shapes == ((1, 2),)
    assert not tiny.layout.bias_mask().any()
    assert (tiny.train_size, tiny.split, tiny.splits) == (4, "train", ("train",))
    assert (tiny.level_name, tiny.recomputes, tiny.lockstep) == ("loss", False, True)
    assert tiny.loss_name == tiny.describe()["loss"] and "squared" in tiny.loss_name
    assert tiny.describe()["parameters"] == 2
    thetas = np.array([[1.0, -1.0], [0.0, 0.0], [2.0, 0.0]], np.float32)
    np.testing.assert_allclose(tiny.levels(thetas), [0.0, 1.0, 1.0], atol=1e-7)
    assert tiny.fill_states(None, 3).shape == (3, 0)
    assert tiny.state_or_own(None).shape == (0,)
    evaluation = tiny.evaluate(thetas[1])
    assert isinstance(evaluation, Evaluation) and evaluation.loss == pytest.approx(1.0)
    loss, grad = tiny.loss_and_grad(thetas[1])
    assert loss == pytest.approx(1.0) and grad.dtype == np.float32
    np.testing.assert_allclose(grad, [-1.0, 1.0], atol=1e-6)
    losses, grads = tiny.losses_and_grads(thetas)
    np.testing.assert_allclose(losses, [0.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(grads, thetas - [1.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(tiny.hessian_vector(thetas[2], np.array([1.0, 2.0])), [1.0, 2.0])
    sums, counts, offsets = tiny.sample_levels(thetas)
    np.testing.assert_allclose(
        tiny.finalize_levels(sums.sum(1) / counts.sum(1) + offsets), [0.0, 1.0, 1.0], atol=1e-7
    )
    stepper = tiny.stepper(ProjectionConfig(optimizer="sgd", learning_rate=0.5))
    assert isinstance(stepper, Stepper)
    np.testing.assert_allclose(stepper.step(thetas[1], grad), [0.5, -0.5])
    projected = tiny.project(
        thetas[1:2], 0.5, ProjectionConfig(optimizer="sgd", learning_rate=0.1), seed=0
    )
    assert isinstance(projected, ProjectionResult)
    assert bool(projected.reached[0]) and projected.levels[0] <= 0.5


def test_the_results_are_the_contracts_types():
    """The engine returns the contract's own data types (one definition of each)."""
    from keras_landscape.engine import landscape, projection

    assert landscape.Evaluation is Evaluation
    assert projection.ProjectionResult is ProjectionResult
    assert [f.name for f in dataclasses.fields(ProjectionResult)] == [
        "thetas",
        "levels",
        "steps",
        "reached",
        "states",
    ]
