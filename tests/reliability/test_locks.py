"""Our own lock beside every store being written (`<store>.lock`, an flock held for the
writer's life): --overwrite, --resume and a second census are refused while a run writes,
also where HDF5's file locking is off (HDF5_USE_FILE_LOCKING=FALSE, as on NFS or Lustre); a
lock file left by a killed process blocks nothing; the lock file goes with its run."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli

from keras_landscape.cli.main import EXIT_BAD_INPUT
from keras_landscape.store.hdf5 import Store

from .conftest import finish_holder, klandscape, start_holder, wait_for

UNLOCKED = {**os.environ, "HDF5_USE_FILE_LOCKING": "FALSE"}


@pytest.fixture
def unlocked_holder(tmp_path, monkeypatch):
    """A process writing a store with HDF5's file locking off (here too)."""
    monkeypatch.setenv("HDF5_USE_FILE_LOCKING", "FALSE")
    path = tmp_path / "busy.h5"
    process = start_holder(path, UNLOCKED)
    yield path, process
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_no_second_writer_without_hdf5_file_locking(
    flag, unlocked_holder, capsys, digits_model_file
):
    path, process = unlocked_holder
    code, _, err = run_cli(
        capsys, "probe", str(digits_model_file), "--data", "digits", flag, "--out", str(path)
    )
    assert code == EXIT_BAD_INPUT, err
    assert "open in another process" in err and f"process {process.pid} on" in err, err
    assert "Traceback" not in err
    finish_holder(process)
    with Store.open(path) as store:  # the writer finished its own store, untouched
        assert store.read_data_info()["spec"] == "after"
        assert store.attrs()["command"] == "holder"
    assert not Path(f"{path}.lock").exists()


def test_a_killed_writers_lock_file_blocks_nothing(tmp_path, capsys, digits_model_file):
    path = tmp_path / "killed.h5"
    process = start_holder(path, UNLOCKED)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert Path(f"{path}.lock").exists()  # left behind; the kernel dropped its flock
    code, _, err = run_cli(
        capsys, "probe", str(digits_model_file), "--data", "digits", "--resume", "--out", str(path)
    )
    assert code == EXIT_BAD_INPUT  # it holds no model layout yet: nothing to resume...
    assert "open in another process" not in err, err  # ...but no lock is in the way
    code, _, err = run_cli(
        capsys,
        "probe",
        str(digits_model_file),
        "--data",
        "digits",
        "--overwrite",
        "--out",
        str(path),
        "-q",
    )
    assert code == 0, err
    with Store.open(path) as store:
        assert store.run("evaluate").result["models"][0]["parameters"] == 460
    assert not Path(f"{path}.lock").exists()


def test_a_planted_lock_link_is_refused(tmp_path, capsys, digits_model_file, victim):
    out = tmp_path / "s.h5"
    os.symlink(victim, f"{out}.lock")
    code, _, err = run_cli(
        capsys, "probe", str(digits_model_file), "--data", "digits", "--out", str(out)
    )
    assert code == EXIT_BAD_INPUT and "symbolic link" in err, err
    assert victim.read_text() == "keep me" and not out.exists()


# ------------------------------------------------------------------------------ census


@pytest.mark.slow
def test_census_overwrite_leaves_a_running_census_alone(tmp_path, capsys, census_sweep):
    sweep, out = census_sweep
    command = klandscape("census", sweep)
    running = subprocess.Popen(
        command + ["-q", "--json", "--no-plots"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        work = tmp_path / "census-work" / "width_1-depth_1.h5"
        wait_for(work.exists, running)  # the point's working store is being written
        for flag in ("--overwrite", "--resume"):
            code, _, err = run_cli(capsys, "census", str(sweep), flag, "-q", "--no-plots")
            assert code == EXIT_BAD_INPUT, err
            assert "open in another process" in err and "Traceback" not in err, err
        stdout, stderr = running.communicate(timeout=600)
    finally:
        if running.poll() is None:
            running.kill()
    assert running.returncode == 0, stderr[-3000:]  # the running census never noticed
    assert [p["name"] for p in json.loads(stdout)["points"]] == ["width_1-depth_1"]
    with Store.open(out) as store:
        assert {store.run(n).status for n in store.run_names()} == {"complete"}
        assert len(store.run_names()) == 2
    assert not Path(f"{out}.lock").exists()


def test_census_overwrite_refuses_a_working_store_being_written(tmp_path, capsys, census_sweep):
    """A working store that some process writes is not deleted (nor anything else)."""
    sweep, out = census_sweep
    work = tmp_path / "census-work" / "width_1-depth_1.h5"
    work.parent.mkdir()
    process = start_holder(work, dict(os.environ))
    try:
        code, _, err = run_cli(capsys, "census", str(sweep), "--overwrite", "-q", "--no-plots")
        assert code == EXIT_BAD_INPUT and "open in another process" in err, err
        assert work.exists() and not out.exists()
    finally:
        process.kill()
        process.wait()
