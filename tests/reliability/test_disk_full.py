"""A full disk in the middle of a run: exit code 2 with a message that says so and names the
store, the store left as of its last commit (`show` reads it), and `--resume` after space is
freed finishing with exactly the uninterrupted run's results.

Two ways to fill the disk: a real tmpfs of a few hundred KiB (needs permission to mount; the
test is skipped without it), and a write that runs out of a byte budget (always runs): the
store's one low-level write (`store.hdf5._pwrite`) fails with ENOSPC once writes that grow
the file have used it up, after writing what still fits, as a full disk does.
"""

import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli

from keras_landscape.cli.main import EXIT_BAD_INPUT
from keras_landscape.store import hdf5
from keras_landscape.store.hdf5 import Store

from .conftest import assert_same_run, connectivity_args, stored_run


@pytest.fixture(scope="module")
def pair(digits_pair):
    """Two briefly trained digits MLPs whose string needs beads (depth 2, 4 beads)."""
    return digits_pair


def _probe(capsys, pair, out, *extra):
    return run_cli(capsys, *connectivity_args(pair, out, *extra))


def _budget(limit):
    """A `_pwrite` that fails with ENOSPC once `limit` bytes have grown the file; it counts
    the bytes that grew files in `used`."""
    real = hdf5._pwrite
    state = {"used": 0}

    def pwrite(fd, data, offset):
        data = memoryview(data).cast("B")
        grows = max(0, offset + len(data) - os.fstat(fd).st_size)
        if state["used"] + grows > limit:
            fits = max(0, limit - state["used"]) + (len(data) - grows)
            real(fd, data[:fits], offset)
            state["used"] = limit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        state["used"] += grows
        real(fd, data, offset)

    return pwrite, state


@pytest.fixture(scope="module")
def reference(pair, tmp_path_factory):
    """The uninterrupted run: its result, its datasets, its store, and how many bytes its
    writes had added to files at each of its commits."""
    from keras_landscape.cli.main import main

    out = tmp_path_factory.mktemp("reference") / "ref.h5"
    pwrite, state = _budget(1 << 40)
    commits, commit = [], hdf5._CommittedFile.commit

    def counted(self):
        commit(self)
        commits.append(state["used"])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hdf5, "_pwrite", pwrite)
        patch.setattr(hdf5._CommittedFile, "commit", counted)
        assert main(connectivity_args(pair, out)) == 0
    result, arrays = stored_run(out)
    assert result["beads"] == 4 and result["depth"] == 2, result  # a string with beads
    return result, arrays, sorted(set(commits)), out


def _between_commits(sizes, after):
    """A byte budget that runs out between the first commit holding at least `after` of
    the store's bytes and the next one (a failure in the middle of a commit)."""
    first = next(i for i, size in enumerate(sizes) if size >= after * sizes[-1])
    return (sizes[first] + sizes[first + 1]) // 2


def _check_disk_full(code, err, out):
    assert code == EXIT_BAD_INPUT, err
    assert "disk full" in err and repr(str(out)) in err, err
    assert "Traceback" not in err and "--resume" in err


def _check_resumed(capsys, pair, out, reference):
    expected, arrays, _, _ = reference
    code, stdout, err = _probe(capsys, pair, out, "--resume")
    assert code == 0, err
    assert json.loads(stdout)["results"]["connectivity"]["connected"] == expected["connected"]
    assert_same_run(stored_run(out), (expected, arrays))
    assert not os.path.exists(str(out) + ".lock")  # the lock is gone with its run


def _check_readable(capsys, out, reference):
    """`show` reads the store as of its last commit: every stored bead row is the
    uninterrupted run's row (rows are appended, never rewritten)."""
    code, stdout, err = run_cli(capsys, "show", str(out))
    assert code == 0 and str(out) in stdout, err
    arrays = reference[1]
    with Store.open(out) as store:
        if not store.has_run("connectivity"):
            return
        run = store.run("connectivity")
        assert run.status == "running"  # as committed: resumable
        for key in run.keys():
            if key.endswith("/beads"):
                stored = run.read(key)
                np.testing.assert_array_equal(stored, arrays[key][: len(stored)])


# Early: the store has its layout, not yet its models; late: the string has committed depth 0 (its
# first beads' chunks make most of the store), the disk fills up in a later commit.
@pytest.mark.parametrize(
    "after, beads",
    [
        pytest.param(0.1, 0, marks=pytest.mark.slow, id="early"),
        pytest.param(0.5, 2, marks=(pytest.mark.slow, pytest.mark.ci)),
    ],
)
def test_a_write_that_finds_the_disk_full(
    after, beads, pair, reference, capsys, tmp_path, monkeypatch
):
    out = tmp_path / "s.h5"
    monkeypatch.setattr(hdf5, "_pwrite", _budget(_between_commits(reference[2], after))[0])
    code, _, err = _probe(capsys, pair, out)
    _check_disk_full(code, err, out)
    monkeypatch.undo()  # space freed
    with Store.open(out) as store:  # as of the last commit before the disk filled up
        assert store.has_layout()
        run = store.run("connectivity") if store.has_run("connectivity") else None
        stored = run.length("pair_0_1/beads") if run is not None else 0
        assert stored >= beads and (stored == 0) == (beads == 0), stored
    _check_readable(capsys, out, reference)
    _check_resumed(capsys, pair, out, reference)


def test_creating_a_store_on_a_full_disk_leaves_nothing(pair, capsys, tmp_path, monkeypatch):
    out = tmp_path / "s.h5"
    monkeypatch.setattr(hdf5, "_pwrite", _budget(0)[0])
    code, _, err = _probe(capsys, pair, out)
    assert code == EXIT_BAD_INPUT and "disk full" in err and repr(str(out)) in err, err
    assert os.listdir(tmp_path) == []  # no store, no temporary file, no lock file


@pytest.fixture
def tiny_disk(tmp_path):
    """A tmpfs mounted at tmp_path/disk (skipped where mounting is not permitted)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if not sys.platform.startswith("linux") or not shutil.which("mount"):
        pytest.skip("needs Linux's mount")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")

    def resize(size):
        subprocess.run(
            ["mount", "-o", f"remount,size={size}", str(folder)], check=True, capture_output=True
        )

    yield folder, resize
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_real_full_disk(pair, reference, capsys, tiny_disk):
    folder, resize = tiny_disk
    resize(int(os.path.getsize(reference[3]) * 0.75) // 4096 * 4096)
    out = folder / "s.h5"
    code, _, err = _probe(capsys, pair, out)
    _check_disk_full(code, err, out)
    _check_readable(capsys, out, reference)
    resize("8m")  # space freed
    _check_resumed(capsys, pair, out, reference)
