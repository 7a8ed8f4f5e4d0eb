"""`klandscape export` never destroys what it reads: the output may not be the store, any
other keras-landscape store or a model file the store was computed from (same path, a
link, a hard link), not even with --overwrite; any other existing file needs --overwrite."""

import os
import shutil

import numpy as np
import pytest
from conftest import run_cli

from keras_landscape.cli.main import EXIT_BAD_INPUT
from keras_landscape.store.hdf5 import Store


@pytest.fixture
def store(tmp_path, capsys, digits_model_file):
    """A store of the evaluate probe on a copy of the digits model: (store, model file)."""
    model = tmp_path / "a.keras"
    shutil.copy(digits_model_file, model)
    out = tmp_path / "s.h5"
    code, _, err = run_cli(capsys, "probe", str(model), "--data", "digits", "--out", str(out))
    assert code == 0, err
    return out, model


def _export(capsys, store, output, *flags):
    return run_cli(capsys, "export", str(store), "--model", "a", "-o", str(output), *flags)


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
def test_the_store_itself_is_never_the_output(flags, store, capsys):
    path, _ = store
    before = path.read_bytes()
    link = path.with_name("link.h5")
    os.symlink(path, link)
    for output in (path, link):
        code, _, err = _export(capsys, path, output, *flags)
        assert code == EXIT_BAD_INPUT and "store being exported from" in err, err
        assert "Traceback" not in err
    assert path.read_bytes() == before


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
def test_an_input_model_is_never_the_output(flags, store, capsys, tmp_path):
    path, model = store
    before = model.read_bytes()
    hard = tmp_path / "hard.keras"
    os.link(model, hard)
    relative = os.path.relpath(model)
    for output in (model, hard, relative):
        code, _, err = _export(capsys, path, output, *flags)
        assert code == EXIT_BAD_INPUT, err
        assert "model file of the store's model 'a'" in err and "even with --overwrite" in err
    assert model.read_bytes() == before


def test_another_store_is_never_the_output(store, capsys, tmp_path):
    path, _ = store
    other = tmp_path / "other.h5"
    Store.create(other, versions={}, command="another run").close()
    before = other.read_bytes()
    code, _, err = _export(capsys, path, other, "--overwrite")
    assert code == EXIT_BAD_INPUT and "is a keras-landscape store" in err, err
    assert other.read_bytes() == before


def test_an_existing_file_needs_overwrite(store, capsys, tmp_path):
    import keras

    path, _ = store
    output = tmp_path / "exported.keras"
    output.write_text("an older export")
    code, _, err = _export(capsys, path, output)
    assert code == EXIT_BAD_INPUT and "already exists" in err and "--overwrite" in err, err
    assert output.read_text() == "an older export"
    code, _, err = _export(capsys, path, output, "--overwrite")
    assert code == 0, err
    with Store.open(path) as opened:
        theta = opened.read_model("a")["theta"]
    model = keras.saving.load_model(output)
    weights = np.concatenate([np.ravel(v.numpy()) for v in model.trainable_variables])
    np.testing.assert_array_equal(weights, theta)
    assert sorted(os.listdir(tmp_path)) == sorted(  # no temporary folder left behind
        ["a.keras", "exported.keras", "s.h5"]
    )


def test_a_new_output_is_written(store, capsys, tmp_path):
    path, _ = store
    code, _, err = _export(capsys, path, tmp_path / "new" / "b.h5")
    assert code == 0, err
    assert (tmp_path / "new" / "b.h5").stat().st_size > 0
