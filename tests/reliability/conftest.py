"""What the reliability tests share: `klandscape` as a command line for a new process,
waiting on a running process, a file for planted links to point at, a process that holds a
store open for writing, two digits MLPs whose connectivity string needs beads (with that
probe's command line and the comparison of a resumed run with the uninterrupted one), and a
small census sweep.

In-process runs use tests/conftest.py's `run_cli`; the test modules import the helpers below
with `from .conftest import ...` (this folder is a package: see its __init__.py).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml

from keras_landscape.store.hdf5 import Store


def klandscape(*args) -> list[str]:
    """The command line that runs `klandscape ARGS` in a new Python process."""
    return [sys.executable, "-m", "keras_landscape.cli.main", *(str(a) for a in args)]


def wait_for(condition, process: subprocess.Popen, seconds: float = 240, every=0.05) -> None:
    """Wait until `condition()` holds (checked `every` seconds), failing if `process` ends
    first or time runs out."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


@pytest.fixture
def victim(tmp_path):
    """A file that a planted link points at: tmp_path/victim.txt, holding "keep me"."""
    path = tmp_path / "victim.txt"
    path.write_text("keep me")
    return path


# ------------------------------------------------------------------ a process holding a store

HOLDER = textwrap.dedent(
    """
    import sys
    from keras_landscape.store.hdf5 import Store

    store = Store.create(sys.argv[1], versions={}, command="holder")
    store.write_data_info({"spec": "before"})
    print("ready", flush=True)
    sys.stdin.readline()  # the test runs its commands while this process writes the store
    store.write_data_info({"spec": "after"})
    store.close()
    print("done", flush=True)
    """
)


def start_holder(path, env=None) -> subprocess.Popen:
    """A process that creates the store `path` (data spec "before") and keeps it open for
    writing until `finish_holder`; returned once the store is written."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def finish_holder(process: subprocess.Popen) -> None:
    """Let the holder write its last data spec ("after"), close its store and exit 0."""
    process.stdin.write("go\n")
    process.stdin.flush()
    assert process.stdout.readline().strip() == "done"
    assert process.wait(timeout=60) == 0


# ------------------------------------------------------------------ a digits connectivity run

#: the options of a connectivity string between the digits pair that needs beads (depth 2)
CONNECTIVITY_SETTINGS = ("max_depth=4", "points=10", "max_steps=1000", "learning_rate=0.01")
#: what a resumed connectivity run's result must share with the uninterrupted run's
RESULT_KEYS = ("connected", "reason", "beads", "depth", "projection_steps", "max_level")


@pytest.fixture(scope="session")
def digits_pair(tmp_path_factory, digits_classifier, digits_data, full_batch_fit) -> list[str]:
    """Two briefly trained digits MLPs (150 full-batch Adam steps at 0.02, seeds 0 and 1)
    whose connectivity string needs beads: their .keras paths."""
    folder = tmp_path_factory.mktemp("digits_pair")
    paths = []
    for seed in (0, 1):
        model = digits_classifier("dense", seed=seed)
        full_batch_fit(model, digits_data.x_train, digits_data.y_train, 150, 0.02)
        model.save(folder / f"m{seed}.keras")
        paths.append(str(folder / f"m{seed}.keras"))
    return paths


def connectivity_args(pair, out, *extra, data: str = "digits", settings=CONNECTIVITY_SETTINGS):
    """`klandscape probe` arguments of the connectivity probe on `pair` into `out`, quiet,
    with --json."""
    sets = [word for option in settings for word in ("--set", option)]
    where = ["--out", str(out), "-q", "--json", *extra]
    return ["probe", *pair, "--data", data, "--probe", "connectivity", *sets, *where]


def stored_run(path, keys=None, run: str = "connectivity") -> tuple[dict, dict]:
    """(result, {dataset key: array}) of a stored run: every dataset, or those of `keys`
    that it has."""
    with Store.open(path) as store:
        record = store.run(run)
        names = record.keys() if keys is None else [k for k in keys if record.has(k)]
        return record.result, {key: record.read(key) for key in names}


def assert_same_run(got: tuple[dict, dict], expected: tuple[dict, dict]) -> None:
    """A resumed run's (result, datasets) are the uninterrupted run's: the verdict exactly,
    the lengths to 1e-9, every dataset bit for bit."""
    result, arrays = got
    expected_result, expected_arrays = expected
    for key in RESULT_KEYS:
        assert result[key] == expected_result[key], key
    assert result["normalized_length"] == pytest.approx(
        expected_result["normalized_length"], rel=1e-9
    )
    assert set(arrays) == set(expected_arrays)
    for name, values in expected_arrays.items():
        np.testing.assert_array_equal(arrays[name], values, err_msg=name)


# ------------------------------------------------------------------------------ a census

CENSUS = {
    "model": {
        "builder": "mlp",
        "input": [2],
        "activation": "tanh",
        "output": 1,
        "train": {"epochs": 60, "batch_size": "full", "learning_rate": 0.02},
    },
    "data": "teacher:d=2,h=2,n=120,n_test=40",
    "loss": "mse",
    "level_fn": "mse",
    "split": "train",
    "grid": {"width": [1], "depth": [1]},
    "replicas": 2,
    "components": {"max_bisections": 1, "grid": 10},
    "curviness": {"levels": "2.0", "retrain_endpoints": True},
    "options": {"max_steps": 100, "learning_rate": 0.02, "points": 5, "max_depth": 2},
    "seed": 0,
}


@pytest.fixture
def census_sweep(tmp_path):
    """A one-point census sweep (width 1, depth 1, 2 replicas) written to
    tmp_path/sweep.yaml: (the sweep file, its store tmp_path/census.h5)."""
    sweep, out = tmp_path / "sweep.yaml", tmp_path / "census.h5"
    sweep.write_text(yaml.safe_dump({**CENSUS, "out": str(out)}, sort_keys=False))
    return sweep, out
