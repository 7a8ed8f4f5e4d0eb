"""Issue #26: a signal at any moment stops a run cleanly. SIGINT (Ctrl-C) while the command
line imports, while TensorFlow imports, in the middle of a probe or while h5py writes what a
commit commits ends the run with exit code 130, one line on stderr (no traceback) and, under
--json, a JSON document saying `interrupted`; the store is as of its last commit, readable
by `klandscape show`, the run marked `interrupted` (never `failed`), and `--resume` ends
with exactly the uninterrupted run's results. SIGTERM stops a run the same way. A run that
starts with SIGINT ignored (`klandscape ... &` in a shell without job control) keeps it
ignored from start to end.

The signals go to real `klandscape` processes at moments the test sees: a shared library
mapped into the process (/proc/PID/maps), or a pause in the store's writes that the test
switches on with KLANDSCAPE_TEST_COMMIT_PAUSE="N:PATH" (store/hdf5.py: the store operation
that makes commit N stops in HDF5's first write, inside h5py, until PATH is removed). The
runs that import TensorFlow and probe (over 10 s each) are marked slow; the default suite
keeps the start-up cases and the store's own handling of a signal inside h5py, in a plain
Python process.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, save_tiny_cubic_models

from keras_landscape.store import hdf5
from keras_landscape.store.hdf5 import RunRecord, Store

from .conftest import assert_same_run, connectivity_args, klandscape, stored_run, wait_for

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/maps").exists(), reason="watches /proc/PID/maps (Linux)"
)

DATA = "cubic:limit=64"
#: a connectivity string between two 1-4-1 networks: depth 2, a commit per depth and more
SETTINGS = ("max_depth=2", "points=4", "max_steps=50", "learning_rate=0.01")
PAUSE = "KLANDSCAPE_TEST_COMMIT_PAUSE"


def _args(pair, out, *extra):
    return connectivity_args(pair, out, *extra, data=DATA, settings=SETTINGS)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    return save_tiny_cubic_models(tmp_path_factory.mktemp("interrupt"), (0, 1), DATA)


@pytest.fixture(scope="module")
def reference(tiny_pair, tmp_path_factory):
    """The uninterrupted run, in this process: its (result, datasets), and the number of
    commits made up to the one that began the run (the probe's own commits follow)."""
    from keras_landscape.cli.main import main

    out = tmp_path_factory.mktemp("reference") / "ref.h5"
    marks, begin, complete = {}, Store.begin_run, RunRecord.complete

    def begun(self, *args, **kwargs):
        run = begin(self, *args, **kwargs)
        marks["begun"] = hdf5._commits_done
        return run

    def completing(self, result):
        marks["completing"] = hdf5._commits_done
        complete(self, result)

    start = hdf5._commits_done
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Store, "begin_run", begun)
        patch.setattr(RunRecord, "complete", completing)
        assert main(_args(tiny_pair, out)) == 0
    stored = stored_run(out)
    assert stored[0]["depth"] == 2, stored[0]  # a string that is checked twice
    assert marks["completing"] - marks["begun"] >= 3  # the probe commits depth by depth
    return stored, marks["begun"] - start


def _start(args, *, pause=None, ignore_sigint=False):
    """A `klandscape ARGS` process: stopped at `pause` = (commit number, marker path)
    where given; started with SIGINT ignored, as a shell starts `cmd &`, where asked."""
    env = dict(os.environ)
    if pause is not None:
        env[PAUSE] = f"{pause[0]}:{pause[1]}"
    return subprocess.Popen(
        klandscape(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # explicit either way: a test session started in the background ignores SIGINT too
        preexec_fn=lambda: signal.signal(
            signal.SIGINT, signal.SIG_IGN if ignore_sigint else signal.SIG_DFL
        ),
    )


def _mapped(process, library: str):
    """A condition: the shared library `library` is mapped into `process` (its import has
    begun)."""
    maps = Path(f"/proc/{process.pid}/maps")

    def loaded():
        try:
            return library in maps.read_text()
        except OSError:  # the process is gone: wait_for says why
            return False

    return loaded


def _check_stopped(process, out, store):
    """Exit code 130, one line on stderr, the JSON error document; `store`: whether the
    message names the store (the run had begun writing it)."""
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, (process.returncode, stderr[-3000:])
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Interrupted"), stderr
    error = json.loads(stdout)["error"]
    assert error["kind"] == "interrupted" and error["exit_code"] == 130, error
    assert error["store"] == (str(out) if store else None), error
    if store:
        assert f"--resume --out {out}" in lines[0]


def _check_resumable(capsys, pair, out, reference):
    """The store reads as of its last commit (the run `interrupted`), and --resume ends
    with the uninterrupted run's results."""
    with Store.open(out) as opened:
        run = opened.run("connectivity")
        assert run.status == "interrupted" and run.error == "interrupted by the user"
    code, stdout, err = run_cli(capsys, "show", str(out))
    assert code == 0 and str(out) in stdout and "interrupted" in stdout, err
    code, stdout, err = run_cli(capsys, *_args(pair, out, "--resume"))
    assert code == 0, err
    expected = reference[0]
    assert json.loads(stdout)["results"]["connectivity"]["beads"] == expected[0]["beads"]
    assert_same_run(stored_run(out), expected)
    assert not Path(f"{out}.lock").exists()


@pytest.mark.parametrize(
    "library",
    [
        pytest.param("h5py", id="while-the-command-line-imports"),
        pytest.param(
            "libtensorflow", id="while-tensorflow-imports", marks=(pytest.mark.slow, pytest.mark.ci)
        ),
    ],
)
def test_ctrl_c_while_starting_up(library, digits_model_file, tmp_path):
    """Ctrl-C in the first second (the command line's imports: h5py is one of the first
    libraries mapped) or while TensorFlow imports: nothing written, exit 130, one line."""
    out = tmp_path / "s.h5"
    process = _start(["probe", digits_model_file, "--data", "digits", "--out", out, "-q", "--json"])
    wait_for(_mapped(process, library), process, every=0.005)
    process.send_signal(signal.SIGINT)
    _check_stopped(process, out, store=False)
    assert os.listdir(tmp_path) == []  # no store, no temporary file, no lock file


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_h5py_writes_a_commit(signum, tiny_pair, reference, tmp_path, capsys):
    """The signal arrives inside h5py (HDF5's write of the probe's first commit): the
    operation finishes and its commit is made, then the run stops, marked interrupted (it
    was marked failed: the KeyboardInterrupt came out of h5py as a SystemError)."""
    out, marker = tmp_path / "s.h5", tmp_path / "paused"
    process = _start(_args(tiny_pair, out), pause=(reference[1] + 1, marker))
    wait_for(marker.exists, process, every=0.01)
    process.send_signal(signum)
    time.sleep(0.2)
    marker.unlink()  # the write goes on
    _check_stopped(process, out, store=True)
    _check_resumable(capsys, tiny_pair, out, reference)


@pytest.mark.slow
def test_ctrl_c_in_the_middle_of_a_probe(tiny_pair, reference, tmp_path, capsys):
    """Ctrl-C right after the probe's second commit, while it computes its next depth."""
    out, marker = tmp_path / "s.h5", tmp_path / "paused"
    process = _start(_args(tiny_pair, out), pause=(reference[1] + 2, marker))
    wait_for(marker.exists, process, every=0.01)
    marker.unlink()
    process.send_signal(signal.SIGINT)
    _check_stopped(process, out, store=True)
    _check_resumable(capsys, tiny_pair, out, reference)


@pytest.mark.slow
def test_a_run_started_with_sigint_ignored_keeps_it_ignored(tiny_pair, reference, tmp_path):
    """`klandscape ... &` in a shell without job control starts it with SIGINT ignored:
    SIGINT while it imports, while TensorFlow imports, inside h5py's write of a commit and
    in the middle of the probe changes nothing (SIGTERM stops such a run)."""
    out, marker = tmp_path / "s.h5", tmp_path / "paused"
    args = _args(tiny_pair, out)
    process = _start(args, pause=(reference[1] + 1, marker), ignore_sigint=True)
    for library in ("h5py", "libtensorflow"):
        wait_for(_mapped(process, library), process, every=0.005)
        process.send_signal(signal.SIGINT)
    wait_for(marker.exists, process, every=0.01)
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    marker.unlink()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert json.loads(stdout)["results"]["connectivity"]["beads"] == reference[0][0]["beads"]
    assert_same_run(stored_run(out), reference[0])


# ------------------------------------------------------------------ the store, without a model

SIGNALS_IN_THE_STORE = textwrap.dedent(
    """
    import json, os, signal, sys
    import numpy as np
    from keras_landscape.progress import deferred_interrupts, sigterm_interrupts
    from keras_landscape.store import hdf5
    from keras_landscape.store.hdf5 import Store

    real, rows, seen = hdf5._CommittedFile.write, np.arange(4000.0).reshape(400, 10), []
    store = Store.create(sys.argv[1], versions={}, command="test")
    run = store.begin_run("r", "evaluate", {})

    def write(self, buffer):  # the signal arrives in h5py's first write of an operation
        if not seen:
            seen.append(len(seen))
            os.kill(os.getpid(), SIGNAL)
        seen.append(1)
        return real(self, buffer)

    hdf5._CommittedFile.write = write
    outcome = {}
    SIGNAL = signal.SIGINT
    try:
        run.extend("x", rows)
        outcome["sigint"] = "went on"
    except KeyboardInterrupt:  # after the operation, its commit made
        outcome["sigint"] = "interrupted"
    outcome["writes after it"] = len(seen) - 2
    SIGNAL, seen[:] = signal.SIGTERM, []
    with sigterm_interrupts():
        try:
            run.extend("x", rows)
            outcome["sigterm"] = "went on"
        except KeyboardInterrupt:
            outcome["sigterm"] = "interrupted"
    SIGNAL, seen[:] = signal.SIGINT, []
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # started as `cmd &`: ignored stays ignored
    run.extend("x", rows)
    with deferred_interrupts():
        signal.raise_signal(signal.SIGINT)
    outcome["ignored"] = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    hdf5._CommittedFile.write = real
    run.fail("interrupted by the user", status="interrupted")
    store.close()
    print(json.dumps(outcome))
    """
)


def test_a_signal_inside_h5py_waits_for_the_store_operation(tmp_path):
    """SIGINT (or, under `sigterm_interrupts`, SIGTERM) delivered while h5py writes the
    store: the operation goes on to its commit, then KeyboardInterrupt; the store reads
    back whole. (Raised inside h5py's write, it came out as a SystemError, or the process
    died of a segmentation fault.) With SIGINT ignored, nothing happens at all."""
    path = tmp_path / "s.h5"
    done = subprocess.run(
        [sys.executable, "-c", SIGNALS_IN_THE_STORE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a foreground run
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout)
    assert outcome["sigint"] == outcome["sigterm"] == "interrupted", outcome
    assert outcome["writes after it"] > 0 and outcome["ignored"], outcome
    rows = np.arange(4000.0).reshape(400, 10)
    with Store.open(path) as store:
        run = store.run("r")
        assert run.status == "interrupted"
        np.testing.assert_array_equal(run.read("x"), np.concatenate([rows, rows, rows]))
