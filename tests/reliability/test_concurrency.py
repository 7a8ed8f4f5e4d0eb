"""Two commands on one store: the one that writes it keeps it whole and readable."""

import subprocess

import pytest
from conftest import run_cli

from keras_landscape.cli.main import EXIT_BAD_INPUT
from keras_landscape.store.hdf5 import Store

from .conftest import finish_holder, klandscape, start_holder


@pytest.fixture
def holder(tmp_path):
    """A process that creates a store and keeps it open for writing until told to finish."""
    path = tmp_path / "busy.h5"
    process = start_holder(path)
    yield path, process
    if process.poll() is None:
        process.kill()


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_second_command_leaves_a_store_being_written_intact(
    flag, holder, capsys, digits_model_file
):
    path, process = holder
    code, _, err = run_cli(
        capsys, "probe", str(digits_model_file), "--data", "digits", flag, "--out", str(path)
    )
    assert code == EXIT_BAD_INPUT, err
    assert "open in another process" in err and "Traceback" not in err
    finish_holder(process)  # the writer goes on as if nothing happened
    with Store.open(path) as store:
        assert store.read_data_info()["spec"] == "after"


@pytest.mark.slow
def test_two_overwrites_at_once_leave_one_complete_store(tmp_path, digits_model_file):
    path = tmp_path / "twice.h5"
    command = klandscape("probe", digits_model_file, "--data", "digits", "--out", path, "-q")
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    runs = [
        subprocess.Popen(
            command + ["--overwrite"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outcomes = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert any(code == 0 for code, _ in outcomes), outcomes
    for code, err in outcomes:
        assert code in (0, EXIT_BAD_INPUT) and "Traceback" not in err, err
        if code:
            assert "open in another process" in err or "appeared" in err, err
    with Store.open(path) as store:
        assert store.run("evaluate").status == "complete"
        assert store.run("evaluate").result["models"][0]["parameters"] == 460
    assert not list(tmp_path.glob(".twice.h5.*.tmp"))  # no temporary file left behind


def test_an_interrupted_replacement_leaves_the_old_store(
    tmp_path, digits_model_file, capsys, monkeypatch
):
    """Replacing writes a new file beside the old one: interrupted before the rename, the
    old store is untouched and the temporary file is removed."""
    from keras_landscape.store import hdf5 as store_module

    path = tmp_path / "old.h5"
    assert (
        run_cli(
            capsys, "probe", str(digits_model_file), "--data", "digits", "--out", str(path), "-q"
        )[0]
        == 0
    )
    before = path.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module, "_move_into_place", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Store.create(path, versions={}, command="replacement", overwrite=True)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".old.h5.*.tmp"))
