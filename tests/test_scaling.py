"""Scale-out: lockstep strings, strategies over several devices and processes.

- The lockstep driver serves every pending request of a kind in one call, and gives each
  search its own rows (a fake landscape counts the calls).
- A probe's strings run in lockstep give the verdicts, bead counts and lengths of the same
  strings run one after another (full batch and mini-batch projections).
- `--strategy mirrored:cpus=2` (TensorFlow, 2 logical CPU devices) and the same on JAX (a
  2-device CPU mesh) give the one-device results, and both devices computed rows (the run's
  `devices` attribute counts the real bead rows each device's outputs held).
- `--strategy tpu` without a TPU and a bad strategy exit 2 with a message.
- Slow (-m slow): two processes on loopback (TF_CONFIG; jax.distributed) finish with one
  store equal to a one-process run; a multi-device run interrupted midway and resumed ends
  with the store of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, save_tiny_cubic_models

from keras_landscape.science.lockstep import Levels, Projection, drive

pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")

DATA = "cubic:limit=64"
OPTIONS = [
    "--set",
    "points=4",
    "--set",
    "max_depth=3",
    "--set",
    "max_steps=200",
    "--set",
    "check_every=25",
    "--set",
    "learning_rate=0.01",
    "--levels",
    "0.05,0.03",
]


# ------------------------------------------------------------------ the driver, on a fake


class _Counting:
    """Levels = the row sums; projections move every start to its target."""

    lockstep = True
    train_size = 10

    def __init__(self):
        self.calls = {"levels": 0, "project": 0}

    def fill_states(self, states, k):
        return np.zeros((k, 0), np.float32) if states is None else np.asarray(states)

    def levels_and_states(self, thetas, states):
        self.calls["levels"] += 1
        return thetas.sum(axis=1), states

    def project(self, starts, targets, config, seed, normals, states):
        from keras_landscape.engine.projection import ProjectionResult

        self.calls["project"] += 1
        k = len(starts)
        thetas = starts * 0 + np.asarray(targets)[:, None] / starts.shape[1]
        return ProjectionResult(
            thetas.astype(np.float32), np.asarray(targets), np.full(k, seed), np.ones(k, bool)
        )


def _search(offset: float, config, seed: int):
    levels, _ = yield Levels(np.array([[offset, 1.0], [offset, 2.0]], np.float32))
    result = yield Projection(np.ones((3, 2), np.float32), float(levels[0]), config, seed)
    return list(levels), list(result.levels), list(result.steps)


def test_driver_serves_each_kind_in_one_call_and_returns_each_search_its_rows():
    from keras_landscape.engine.options import ProjectionConfig

    fake = _Counting()
    config = ProjectionConfig()
    results = drive(fake, [_search(float(i), config, seed=i) for i in range(4)])
    assert fake.calls == {"levels": 1, "project": 1}  # full batch: the seed does not split
    for i, (levels, projected, _) in enumerate(results):
        assert levels == [i + 1.0, i + 2.0]
        assert projected == [i + 1.0] * 3
    fake = _Counting()
    drive(fake, [_search(float(i), config, seed=i) for i in range(4)], together=False)
    assert fake.calls == {"levels": 4, "project": 4}


def test_driver_keeps_apart_beads_that_draw_different_mini_batches():
    from keras_landscape.engine.options import ProjectionConfig

    fake = _Counting()
    config = ProjectionConfig(batch_size=4)  # < train_size: draws depend on the seed
    results = drive(fake, [_search(0.0, config, seed=s) for s in (1, 1, 2)])
    assert fake.calls["project"] == 2
    assert [r[2][0] for r in results] == [1, 1, 2]
    other = ProjectionConfig(learning_rate=0.5)
    fake = _Counting()
    drive(fake, [_search(0.0, c, seed=0) for c in (ProjectionConfig(), other)])
    assert fake.calls["project"] == 2


# ------------------------------------------------------------------ real probes


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return save_tiny_cubic_models(tmp_path_factory.mktemp("scaling"), range(3), DATA)


def _execute(paths, out, **extra):
    from keras_landscape.experiment.runner import RunSpec, execute

    options = {
        "points": 4,
        "max_depth": 3,
        "max_steps": 200,
        "check_every": 25,
        "learning_rate": 0.01,
        "levels": "0.05,0.03",
    }
    options.update(extra.pop("options", {}))
    spec = RunSpec(
        models=paths, data=DATA, probes=["curviness"], options=options, out=str(out), **extra
    )
    return execute(spec)


def _strings(result: dict) -> list[tuple]:
    return [
        (r["a"], r["b"], r["level"], r["connected"], r["reason"], r["beads"])
        for level in result["details"]
        for r in level
    ]


def _assert_same(a: dict, b: dict, rel: float) -> None:
    assert _strings(a) == _strings(b)
    for la, lb in zip(a["details"], b["details"]):
        for x, y in zip(la, lb):
            assert x["normalized_length"] == pytest.approx(y["normalized_length"], rel=rel)


@pytest.mark.parametrize(
    "batch_size",
    [
        pytest.param(None, marks=(pytest.mark.slow, pytest.mark.ci)),
        pytest.param(16, marks=pytest.mark.slow),
    ],
)
def test_lockstep_equals_one_string_at_a_time(tiny_models, tmp_path, batch_size):
    extra = {"options": {"batch_size": batch_size}} if batch_size else {}
    together = _execute(tiny_models, tmp_path / "lockstep.h5", **extra)
    apart = _execute(tiny_models, tmp_path / "apart.h5", lockstep=False, **extra)
    a, b = together["results"]["curviness"], apart["results"]["curviness"]
    assert sum(a["pairs"]) >= 3 and sum(a["failed"]) >= 1  # both verdicts occur
    # Different stack widths round differently; Adam carries it a little way.
    _assert_same(a, b, rel=1e-3)


def _cli(paths, out, *extra, env=None, timeout=240):
    command = [sys.executable, "-m", "keras_landscape.cli.main", "probe", *paths, "--data", DATA]
    command += ["--probe", "curviness", *OPTIONS, "--out", str(out), "--json", *extra]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return done


def _devices_of(store: Path) -> dict:
    from keras_landscape.store.hdf5 import Store

    with Store.open(store) as opened:
        return opened.run("curviness").get_attrs()["devices"]


@pytest.fixture(scope="module")
def one_device(tiny_models, tmp_path_factory):
    """The curviness result on one device, in this process (TensorFlow)."""
    out = tmp_path_factory.mktemp("one") / "one.h5"
    return _execute(tiny_models, out)["results"]["curviness"], _devices_of(out)


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_cpu_devices_give_the_one_device_result(tiny_models, one_device, tmp_path, backend):
    pytest.importorskip(backend)
    two = _cli(
        tiny_models,
        tmp_path / "two.h5",
        "--strategy",
        "mirrored:cpus=2",
        env={"KERAS_BACKEND": backend},
    )
    assert two.returncode == 0, two.stderr[-2000:]
    expected, one_devices = one_device
    _assert_same(expected, json.loads(two.stdout)["results"]["curviness"], rel=1e-5)
    devices = _devices_of(tmp_path / "two.h5")
    assert devices["strategy"] == "mirrored" and devices["replicas"] == 2
    rows = devices["rows_per_device"]
    assert len(rows) == 2 and all(count > 0 for count in rows.values()), rows
    # the same beads, spread over both (a stack narrows to 1 row on one device, 2 on two)
    assert sum(rows.values()) >= sum(one_devices["rows_per_device"].values())


def test_tpu_strategy_without_a_tpu_exits_2(tiny_models, tmp_path, capsys):
    code, _, err = run_cli(
        capsys,
        "probe",
        *tiny_models[:2],
        "--data",
        DATA,
        "--strategy",
        "tpu",
        "--tpu",
        "no-such-tpu",
        "--out",
        str(tmp_path / "tpu.h5"),
    )
    assert code == 2
    assert "--strategy tpu could not reach TPU 'no-such-tpu'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "tpu.h5").exists()


@pytest.mark.parametrize(
    "strategy, message",
    [
        ("bogus", "Unknown strategy 'bogus'"),
        ("one:cpus=2", "cpus=N takes a whole number >= 1 and goes with mirrored"),
        ("mirrored:gpus=2", "Bad strategy option 'gpus=2'"),
    ],
)
def test_bad_strategy_exits_2(tiny_models, tmp_path, capsys, strategy, message):
    code, _, err = run_cli(
        capsys, "probe", *tiny_models[:2], "--data", DATA, "--strategy", strategy
    )
    assert code == 2 and message in err, err


def test_multiworker_without_a_cluster_exits_2(tiny_models, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    code, _, err = run_cli(
        capsys,
        "probe",
        *tiny_models[:2],
        "--data",
        DATA,
        "--strategy",
        "multiworker",
        "--out",
        str(tmp_path / "m.h5"),
    )
    assert code == 2 and "TF_CONFIG" in err and "Traceback" not in err, err
    assert not (tmp_path / "m.h5").exists()


# ------------------------------------------------------------------ several processes (slow)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _two_processes(paths, out, envs, timeout=300) -> list[dict]:
    command = [sys.executable, "-m", "keras_landscape.cli.main", "probe", *paths, "--data", DATA]
    command += ["--probe", "curviness", *OPTIONS, "--out", str(out), "--json"]
    command += ["--strategy", "multiworker"]
    workers = [
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        for env in envs
    ]
    documents = []
    try:
        for worker in workers:
            out_text, err_text = worker.communicate(timeout=timeout)
            assert worker.returncode == 0, err_text[-3000:]
            documents.append(json.loads(out_text))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    return documents


def _assert_two_processes_match_one(paths, tmp_path, envs, backend: str) -> None:
    """Two processes (environments `envs`) write one store, process 0 alone; each process's
    replica computed rows; the store equals a one-process run's."""
    documents = _two_processes(paths, tmp_path / "two.h5", envs)
    assert [d["writer"] for d in documents] == [True, False]
    for document in documents:  # each process's own replica computed rows
        rows = document["devices"]["rows_per_device"]
        assert document["devices"]["processes"] == 2 and sum(rows.values()) > 0, rows
    single = _cli(paths, tmp_path / "one.h5", env={"KERAS_BACKEND": backend})
    assert single.returncode == 0, single.stderr[-2000:]
    _assert_store_equals(tmp_path / "two.h5", tmp_path / "one.h5")


def _assert_store_equals(a: Path, b: Path) -> None:
    from keras_landscape.store.hdf5 import Store
    from keras_landscape.store.strings import read_string

    with Store.open(a) as first, Store.open(b) as second:
        ra, rb = first.run("curviness"), second.run("curviness")
        _assert_same(ra.result, rb.result, rel=1e-5)
        for level in ra.result["details"]:
            for string in level:
                x, y = read_string(ra, string["prefix"]), read_string(rb, string["prefix"])
                np.testing.assert_allclose(x.beads[x.order], y.beads[y.order], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_tensorflow_workers_on_loopback_write_the_one_process_store(tiny_models, tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    envs = [
        {
            "KERAS_BACKEND": "tensorflow",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
        }
        for i in range(2)
    ]
    _assert_two_processes_match_one(tiny_models, tmp_path, envs, "tensorflow")


@pytest.mark.slow
def test_two_jax_processes_on_loopback_write_the_one_process_store(tiny_models, tmp_path):
    pytest.importorskip("jax")
    address = f"127.0.0.1:{_free_port()}"
    envs = [
        {
            "KERAS_BACKEND": "jax",
            "JAX_COORDINATOR_ADDRESS": address,
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(i),
        }
        for i in range(2)
    ]
    _assert_two_processes_match_one(tiny_models, tmp_path, envs, "jax")


@pytest.mark.slow
def test_interrupted_multi_device_run_resumes_to_the_uninterrupted_store(tiny_models, tmp_path):
    extra = ["--strategy", "mirrored:cpus=2", "--set", "max_depth=6", "--set", "max_steps=400"]
    full = _cli(tiny_models, tmp_path / "full.h5", *extra)
    assert full.returncode == 0, full.stderr[-2000:]
    command = [sys.executable, "-m", "keras_landscape.cli.main", "probe", *tiny_models]
    command += ["--data", DATA, "--probe", "curviness", *OPTIONS, *extra]
    command += ["--out", str(tmp_path / "cut.h5")]
    worker = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        for line in worker.stderr:  # interrupt once the probe has started its strings
            if "curviness: started" in line:
                time.sleep(1.0)
                worker.send_signal(signal.SIGINT)
                break
        worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
    from keras_landscape.store.hdf5 import Store

    with Store.open(tmp_path / "cut.h5") as store:
        assert store.run("curviness").status == "interrupted"
    resumed = _cli(tiny_models, tmp_path / "cut.h5", *extra, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_store_equals(tmp_path / "cut.h5", tmp_path / "full.h5")
