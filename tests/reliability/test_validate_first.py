"""Validate first, create nothing (issue #26 item 7): every bad option, bad data file and bad
output path is refused with exit code 2 and one paragraph naming the fix, before any store,
folder or lock file is made; `census --dry-run` runs the same checks as the census."""

import json
import os
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import run_cli

from keras_landscape import registry
from keras_landscape.cli.main import EXIT_BAD_INPUT
from keras_landscape.experiment.plan import check_plan
from keras_landscape.registry import ProbeBase, register_probe
from keras_landscape.settings import RunSpec

LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, digits_model_file):
    """Two digits models, a softmax classifier, npz files good and bad, a FIFO, a store."""
    d = tmp_path_factory.mktemp("validate_first")
    keras.utils.set_random_seed(3)
    softmax = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(4), keras.layers.Dense(10, activation="softmax")]
    )
    softmax.compile(loss="sparse_categorical_crossentropy")
    softmax.save(d / "softmax.keras")
    (d / "b.keras").write_bytes(Path(digits_model_file).read_bytes())
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 64)).astype("float32"), rng.integers(0, 10, 40)
    np.savez(d / "good.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    np.savez(d / "strings.npz", x_train=np.array(["a"] * 40), y_train=y)
    ragged = np.empty(2, dtype=object)
    ragged[:] = [np.zeros(3), np.zeros(4)]
    np.savez(d / "objects.npz", x_train=ragged, y_train=y[:2])
    np.savez(
        d / "test_shape.npz",
        x_train=x,
        y_train=y,
        x_test=rng.normal(size=(8, 32)).astype("float32"),
        y_test=y[:8],
    )
    (d / "dir.npz").mkdir()
    os.mkfifo(d / "pipe.keras")
    (d / "outdir").mkdir()
    (d / "afile").write_text("a file, not a folder\n")
    store = d / "evaluated.h5"
    code = run_cli_plain("probe", str(digits_model_file), "--data", "digits", "--out", str(store))
    assert code == 0
    (d / "sweep.yaml").write_text(
        "model: {builder: mlp, input: [1], activation: tanh, output: 1,\n"
        "        train: {epochs: 1, batch_size: full}}\n"
        "data: cubic:n=32,n_test=8\nloss: mse\nlevel_fn: mse\n"
        "grid: {width: [1, 2]}\nreplicas: 2\ncomponents: {levels: abc}\n"
    )
    (d / "evaluate.yaml").write_text(f"models: [{digits_model_file}]\ndata: digits\n")
    (d / "slices_one.yaml").write_text(
        f"models: [{digits_model_file}]\ndata: digits\nprobes: [{{slices: {{mode: models}}}}]\n"
    )
    return {"good": str(digits_model_file), "dir": d, "store": str(store)}


def run_cli_plain(*args):
    from keras_landscape.cli.main import main

    return main(["-q", *args])


def _cases(f):
    """name -> (arguments before --out, expected message, --out relative to the case folder
    or None for <case>.h5)."""
    d = f["dir"]
    good, b = f["good"], str(d / "b.keras")
    digits = ["--data", "digits"]
    npz = lambda name: ["--data", f"npz:{d / name}"]  # noqa: E731
    return {
        # data files
        "npz of strings": ([good, *npz("strings.npz")], "dtype <U1.*numbers", None),
        "npz of objects": ([good, *npz("objects.npz")], "Python objects.*numeric arrays", None),
        "npz x_test shape": ([good, *npz("test_shape.npz")], "test inputs.*x_test", None),
        "npz is a directory": ([good, *npz("dir.npz")], "is a directory", None),
        # objective
        "mse on class labels": (
            [str(d / "softmax.keras"), *npz("good.npz"), "--level-fn", "mean_squared_error"],
            "cannot compare the targets.*--level-fn error",
            None,
        ),
        "unknown loss argument": (
            [good, *digits, "--loss", "mse:foo=1"],
            "takes no option foo",
            None,
        ),
        # model files
        "FIFO as model": ([str(d / "pipe.keras"), *digits], "not a regular file", None),
        # output paths
        "out existing directory": ([good, *digits], "is a directory", "outdir"),
        "out ending in slash": ([good, *digits], "ends in '/'", "newdir/"),
        "out inside a file": ([good, *digits], "is a file, not a folder", "afile/run.h5"),
        # probe options against the models, before anything is created
        "slices models, one model": (
            [good, *digits, "--probe", "slices", "--set", "mode=models"],
            "two models.*or three.*got 1",
            None,
        ),
        "slices models, four models": (
            [good, b, good, b, *digits, "--probe", "slices", "--set", "mode=models"],
            "got 4",
            None,
        ),
        "repeated probe": (
            [good, b, *digits, "--probe", "evaluate", "--probe", "evaluate"],
            "more than once",
            None,
        ),
        "barrier align bogus": (
            [good, b, *digits, "--probe", "barrier", "--set", "align=bogus"],
            "Unknown align 'bogus'",
            None,
        ),
        "one model, no partners": (
            [good, *digits, "--probe", "connectivity", "--partners", "0"],
            "partners=0, so there is no pair",
            None,
        ),
        "hessian path missing store": (
            [good, *digits, "--probe", "hessian", "--set", f"path={d / 'none.h5'}:connectivity"],
            "does not exist",
            None,
        ),
        "hessian path missing run": (
            [good, *digits, "--probe", "hessian", "--set", f"path={f['store']}:connectivity"],
            "no run 'connectivity'",
            None,
        ),
        "hessian path run without strings": (
            [good, *digits, "--probe", "hessian", "--set", f"path={f['store']}:evaluate"],
            "holds no DSS string",
            None,
        ),
    }


CASES = list(_cases({"good": "g", "dir": Path("d"), "store": "s"}))


@pytest.mark.parametrize("case", CASES)
def test_bad_probe_input_exits_2_and_creates_nothing(case, folder, capsys, tmp_path):
    args, message, out = _cases(folder)[case]
    target = str(tmp_path / "case.h5") if out is None else f"{folder['dir']}/{out}"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, stdout, err = run_cli(capsys, "probe", *args, "--out", target, "--json", "-q")
    assert code == EXIT_BAD_INPUT, (case, err)
    assert "Traceback" not in err and "Internal error" not in err, err
    assert re.search(message, err), (case, err)
    assert len(err.strip().splitlines()) == 1, err  # one paragraph
    assert json.loads(stdout)["error"]["kind"] == "bad_input"
    if out is None:
        assert not Path(target).exists(), case
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # no lock or temporary
    elif out.endswith("/"):
        assert not Path(target).exists(), case  # the folder was not made


def test_out_ending_in_slash_on_run_and_census(folder, capsys, tmp_path):
    for command, source in (("run", "evaluate.yaml"), ("census", "sweep.yaml")):
        target = tmp_path / f"{command}-new/"
        code, _, err = run_cli(
            capsys, command, str(folder["dir"] / source), "--out", f"{target}/", "-q"
        )
        assert code == EXIT_BAD_INPUT, err
        assert "ends in '/'" in err and not target.exists(), err


def test_census_dry_run_refuses_what_the_census_refuses(folder, capsys, tmp_path):
    """components.levels: abc was accepted by --dry-run and refused by the run."""
    sweep = str(folder["dir"] / "sweep.yaml")
    out = tmp_path / "census.h5"
    for extra in (["--dry-run"], []):
        code, _, err = run_cli(capsys, "census", sweep, "--out", str(out), "-q", *extra)
        assert code == EXIT_BAD_INPUT, err
        assert "components: Bad levels 'abc'" in err, err
        assert not out.exists() and not list(tmp_path.iterdir())
    code, stdout, err = run_cli(
        capsys, "census", sweep, "--out", str(out), "--set", "components.levels=0.1", "--dry-run"
    )
    assert code == 0, err
    assert [p["name"] for p in json.loads(stdout)["points"]] == ["width_1", "width_2"]


def test_run_dry_run_checks_options_against_the_models(folder, capsys):
    """A run config's probe options are checked against its model count by --dry-run."""
    code, _, err = run_cli(capsys, "run", str(folder["dir"] / "slices_one.yaml"), "--dry-run")
    assert code == EXIT_BAD_INPUT, err
    assert "mode models takes two models" in err and "got 1" in err, err


class _NeedsThree(ProbeBase):
    """A third-party probe using the plan hook: it measures triples of models."""

    name = "needs_three_test"
    summary = "test probe: refuses fewer than three models at plan time"

    from dataclasses import dataclass

    @dataclass
    class Config:
        seed: int = 0

    def validate_inputs(self, models):
        from keras_landscape.errors import UserError

        if len(models) < 3:
            raise UserError(f"{self.name} needs three models, got {', '.join(models)}.")

    def run(self, landscape, models, store, progress):  # pragma: no cover - never reached
        raise AssertionError("the plan check runs first")


@pytest.fixture
def needs_three():
    registry.probes()  # discovered first, so that the built-ins stay registered
    saved = dict(registry._REGISTRY.probes)
    register_probe(_NeedsThree)
    yield
    registry._REGISTRY.probes.clear()
    registry._REGISTRY.probes.update(saved)


def test_a_third_party_probe_validates_against_the_models_through_the_hook(
    folder, capsys, tmp_path, needs_three
):
    spec = RunSpec(models=["x/a.keras", "y/a.keras"], data="digits", probes=[_NeedsThree.name])
    with pytest.raises(Exception, match=r"needs three models, got x_a, y_a"):
        check_plan(spec)
    out = tmp_path / "t.h5"
    code, _, err = run_cli(
        capsys, "probe", folder["good"], "--data", "digits", "--probe", _NeedsThree.name,
        "--out", str(out), "-q",
    )  # fmt: skip
    assert code == EXIT_BAD_INPUT and "needs three models" in err, err
    assert not out.exists()
