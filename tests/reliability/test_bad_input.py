"""The bad-input matrix: every case exits 2 with one paragraph that names the fix, no
traceback, a JSON error document under --json, and nothing of the user's destroyed."""

import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import run_cli

from keras_landscape.cli.main import EXIT_BAD_INPUT

LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_model_file):
    """Models, stores and other files the cases point at."""
    folder = tmp_path_factory.mktemp("reliability")
    keras.utils.set_random_seed(1)
    regression = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
    )
    regression.compile(loss="mse")
    regression.save(folder / "regression.keras")
    lam = keras.Sequential(
        [keras.Input((64,)), keras.layers.Lambda(lambda x: x * 2.0), keras.layers.Dense(10)]
    )
    lam.compile(loss=LOGITS)
    lam.save(folder / "lambda.keras")
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (folder / "nan_levels.yaml").write_text(
        f"models: [{digits_model_file}]\ndata: digits\n"
        "probes: [{curviness: {levels: [.nan, 0.1]}}]\n"
    )
    (folder / "text.npz").write_text("not arrays\n")
    (folder / "configdir").mkdir()
    (folder / "outdir").mkdir()
    good_store = folder / "good.h5"
    code = run_cli_plain(
        "probe", str(digits_model_file), "--data", "digits", "--out", str(good_store), "-q"
    )
    assert code == 0
    raw = good_store.read_bytes()
    (folder / "truncated.h5").write_bytes(raw[: len(raw) // 3])
    garbled = bytearray(raw)
    rng = np.random.default_rng(0)
    garbled[4096:24576] = rng.integers(0, 256, 20480, np.uint8).tobytes()
    (folder / "garbled.h5").write_bytes(bytes(garbled))
    import h5py

    broken = folder / "broken_result.h5"
    broken.write_bytes(raw)
    with h5py.File(broken, "a") as f:
        f["runs/evaluate"].attrs["result"] = "{not json"
    return {"good": str(digits_model_file), "folder": folder, "store": str(good_store)}


def run_cli_plain(*args):
    from keras_landscape.cli.main import main

    return main(list(args))


def _cases(f):
    d = f["folder"]
    good, digits = f["good"], ["--data", "digits"]
    conn = [good, *digits, "--probe", "connectivity"]
    curv = [good, *digits, "--probe", "curviness"]
    return {
        # model files
        "missing model": (["probe", str(d / "absent.keras"), *digits], "does not exist"),
        "directory as model": (["probe", str(d / "configdir"), *digits], "is a directory"),
        "text file as model": (["probe", str(d / "notes.txt"), *digits], "unknown extension"),
        "lambda without --unsafe": (["probe", str(d / "lambda.keras"), *digits], "--unsafe"),
        # levels and options
        "level 0": (["probe", *conn, "--level", "0"], "positive, finite"),
        "level negative": (["probe", *conn, "--level", "-1"], "positive, finite"),
        "level nan": (["probe", *conn, "--level", "nan"], "finite"),
        "level inf": (["probe", *conn, "--level", "inf"], "finite"),
        "levels empty range": (["probe", *curv, "--levels", "1:0:0"], "range has 0 levels"),
        "levels empty item": (["probe", *curv, "--levels", "0.3,,0.1"], "item is empty"),
        "levels nan": (["probe", *curv, "--levels", "nan,0.1"], "positive, finite"),
        "levels zero": (["probe", *curv, "--levels", "0.2,0"], "positive, finite"),
        "learning rate nan": (["probe", *conn, "--set", "learning_rate=nan"], "finite number"),
        "learning rate 0": (["probe", *conn, "--set", "learning_rate=0"], "learning_rate > 0"),
        "alpha inf": (["probe", *conn, "--set", "alpha=inf"], "finite number"),
        "partners -1 flag": (["probe", *conn, "--partners", "-1"], "x>=0"),
        "partners -1 set": (["probe", *conn, "--set", "partners=-1"], "partners must be >= 0"),
        "eval batch 0": (["probe", good, *digits, "--eval-batch-size", "0"], "x>=1"),
        "eval batch -1": (["probe", good, *digits, "--eval-batch-size", "-1"], "x>=1"),
        "bn stats unknown": (["probe", good, *digits, "--bn-stats", "ema"], "ema"),
        "unknown probe": (["probe", good, *digits, "--probe", "nosuch"], "nosuch"),
        "unknown option": (["probe", good, *digits, "--set", "alhpa=1"], "Unknown option"),
        "error level on regression": (
            ["probe", str(d / "regression.keras"), "--data", "cubic", "--level-fn", "error"],
            "regression",
        ),
        # stores
        "resume missing store": (
            ["probe", good, *digits, "--resume", "--out", str(d / "never.h5")],
            "Nothing to resume",
        ),
        "resume and overwrite": (
            ["probe", good, *digits, "--resume", "--overwrite", "--out", f["store"]],
            "give one of them",
        ),
        "out is a directory": (
            ["probe", good, *digits, "--out", str(d / "outdir")],
            "is a directory",
        ),
        "overwrite a text file": (
            ["probe", good, *digits, "--overwrite", "--out", str(d / "notes.txt")],
            "replaces only keras-landscape stores",
        ),
        "overwrite an input model": (
            ["probe", good, *digits, "--overwrite", "--out", good],
            "replaces only keras-landscape stores",
        ),
        "show truncated store": (["show", str(d / "truncated.h5")], "truncated"),
        "show garbled store": (["show", str(d / "garbled.h5")], "damaged"),
        "plot garbled store": (["plot", str(d / "garbled.h5")], "damaged"),
        "show broken result": (["show", str(d / "broken_result.h5")], "not valid JSON"),
        "plot broken result": (["plot", str(d / "broken_result.h5")], "not valid JSON"),
        # configs and data
        "config is a directory": (["run", str(d / "configdir")], "is a directory"),
        "config is binary": (["run", str(d / "binary.yaml")], "not a text file"),
        "config nan level": (["run", str(d / "nan_levels.yaml")], "positive, finite"),
        "text file as npz": (
            ["probe", good, "--data", f"npz:{d / 'text.npz'}"],
            "not an .npz archive",
        ),
    }


CASES = list(_cases({"good": "g", "folder": Path("f"), "store": "s"}))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_a_message_that_names_the_fix(case, files, capsys, tmp_path):
    args, message = _cases(files)[case]
    protected = {
        p: Path(p).read_bytes()
        for p in (files["good"], files["store"], str(files["folder"] / "notes.txt"))
    }
    extra = [] if "--out" in args or args[0] != "probe" else ["--out", str(tmp_path / "x.h5")]
    code, out, err = run_cli(capsys, *args, *extra, "--json")
    assert code == EXIT_BAD_INPUT, (case, err)
    assert "Traceback" not in err and "Internal error" not in err, err
    assert re.search(message, err), (case, err)
    error = json.loads(out)["error"]
    assert error["exit_code"] == EXIT_BAD_INPUT and error["kind"] == "bad_input"
    for path, content in protected.items():  # nothing of the user's was touched
        assert Path(path).read_bytes() == content, path


def test_unsafe_loads_a_lambda_model(files, capsys, tmp_path):
    path = str(files["folder"] / "lambda.keras")
    code, out, err = run_cli(
        capsys,
        "probe",
        path,
        "--data",
        "digits",
        "--unsafe",
        "--out",
        str(tmp_path / "l.h5"),
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["results"]["evaluate"]["models"][0]["parameters"] == 650


def test_missing_model_is_reported_before_the_frameworks_load(tmp_path):
    """A missing model file is reported without importing TensorFlow or Keras (which takes
    seconds): the check runs first."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from keras_landscape.cli.main import main\n"
        f"rc = main(['probe', {str(tmp_path / 'a.keras')!r}, '--data', 'digits'])\n"
        "print(rc, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split() == ["2", "False", "False"], result.stderr
    assert "does not exist" in result.stderr
