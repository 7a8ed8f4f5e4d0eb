"""SIGKILL a run at a random moment, resume it: the store ends identical to an uninterrupted
run's (strings bit for bit, verdicts equal), and is never left unreadable."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from keras_landscape.store.hdf5 import Store

from .conftest import assert_same_run, connectivity_args, klandscape, stored_run

STRING_DATASETS = ("beads", "bead_level", "bead_depth", "bead_steps", "order", "curves")


@pytest.fixture(scope="module")
def pair(digits_pair):
    """Two briefly trained digits MLPs and a level that needs beads between them."""
    return digits_pair


def _command(pair, out, resume=False):
    return klandscape(*connectivity_args(pair, out, *(["--resume"] if resume else [])))


def _strings(path):
    return stored_run(path, keys=[f"pair_0_1/{name}" for name in STRING_DATASETS])


@pytest.fixture(scope="module")
def reference(pair, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "ref.h5"
    started = time.perf_counter()
    done = subprocess.run(_command(pair, out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result, arrays = _strings(out)
    assert result["beads"] > 2, result  # there is a string to interrupt
    return time.perf_counter() - started, result, arrays


def _trial(seed, pair, reference, tmp_path):
    seconds, expected, arrays = reference
    out = tmp_path / f"trial{seed}.h5"
    process = subprocess.Popen(
        _command(pair, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(np.random.default_rng(seed).uniform(0.3, 1.0) * seconds)
    killed = process.poll() is None
    if killed:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    resume = out.exists()
    done = subprocess.run(
        _command(pair, out, resume=resume), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"]["connectivity"]["connected"] == expected["connected"]
    assert_same_run(_strings(out), (expected, arrays))
    return killed and resume


# Slow (-m slow, ~50 s): the default suite keeps in-process interrupt-and-resume checks
# (connectivity, barrier, scaling); this one kills real processes with SIGKILL.
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_killed_runs_resume_to_the_uninterrupted_store(seed, pair, reference, tmp_path):
    _trial(seed, pair, reference, tmp_path)


@pytest.mark.slow
def test_twenty_random_kills_all_resume_exactly(pair, reference, tmp_path):
    resumed = sum(_trial(seed, pair, reference, tmp_path) for seed in range(100, 120))
    print(f"{resumed} of 20 kills landed in a written store and were resumed")
    assert resumed >= 10  # most kills land mid-run, not before the store or after the end


@pytest.mark.parametrize("delay", [pytest.param(1.5, marks=(pytest.mark.slow, pytest.mark.ci))])
def test_ctrl_c_early_always_stops_with_130_and_a_message(delay, pair, tmp_path):
    """Ctrl-C in the first seconds (while the frameworks import, or the models load) ends
    the run with exit code 130 and one line, never carries on, never crashes silently."""
    out = tmp_path / "early.h5"
    command = [c for c in _command(pair, out) if c != "-q"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # SIGINT as in a foreground run, even where this session was started in the background
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, (process.returncode, stderr[-2000:])
    assert "Interrupted" in stderr and "Traceback" not in stderr
    assert json.loads(stdout)["error"]["kind"] == "interrupted"
    if out.exists():  # what was written is readable
        with Store.open(out) as store:
            assert store.model_names()
