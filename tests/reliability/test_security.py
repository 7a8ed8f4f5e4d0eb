"""A store is written through no planted link, and read back without obeying what it holds.

Creating a store writes a temporary file beside it: it is created new (O_EXCL, O_NOFOLLOW)
under a random name, so a link planted at the old predictable name `.<name>.<pid>.tmp` (or
at the name drawn) is never followed. `klandscape show` and `plot` print store-provided text
(names, attributes, messages) with every control character escaped.
"""

import os

import numpy as np
import pytest
from conftest import run_cli

from keras_landscape.cli.main import EXIT_BAD_INPUT
from keras_landscape.report.text import printable, printable_data
from keras_landscape.store import hdf5
from keras_landscape.store.hdf5 import Store


def test_a_link_at_the_old_temporary_name_is_not_followed(tmp_path, victim):
    out = tmp_path / "s.h5"
    planted = tmp_path / f".s.h5.{os.getpid()}.tmp"
    os.symlink(victim, planted)
    with Store.create(out, versions={}, command="test") as store:
        store.write_data_info({"spec": "fine"})
    assert victim.read_text() == "keep me"
    assert os.readlink(planted) == str(victim)  # left alone
    with Store.open(out) as store:
        assert store.read_data_info()["spec"] == "fine"


def test_a_link_at_the_drawn_temporary_name_is_skipped(tmp_path, victim, monkeypatch):
    """Even a link at the random name itself (guessed, or raced in) is not followed: the
    file is created new, and another name is drawn."""
    names = iter(["guessed", "fresh"])
    monkeypatch.setattr(hdf5.secrets, "token_hex", lambda n: next(names))
    os.symlink(victim, tmp_path / ".s.h5.guessed.tmp")
    with Store.create(tmp_path / "s.h5", versions={}, command="test"):
        pass
    assert victim.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == [".s.h5.guessed.tmp", "s.h5", "victim.txt"]


def test_temporary_names_are_not_predictable(tmp_path, monkeypatch):
    made = []
    create = hdf5._create_temporary

    def recorded(parent, name):
        made.append(create(parent, name))
        return made[-1]

    monkeypatch.setattr(hdf5, "_create_temporary", recorded)
    for _ in range(2):
        Store.create(tmp_path / "s.h5", versions={}, command="test", overwrite=True).close()
    names = [os.path.basename(path) for _, path in made]
    assert len(set(names)) == 2 and all(str(os.getpid()) not in n for n in names), names


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_link_at_the_output_path_never_truncates_its_target(
    overwrite, tmp_path, victim, capsys, digits_model_file
):
    out = tmp_path / "s.h5"
    os.symlink(victim, out)
    flags = ["--overwrite"] if overwrite else []
    code, _, err = run_cli(
        capsys, "probe", str(digits_model_file), "--data", "digits", "--out", str(out), *flags
    )
    assert code == EXIT_BAD_INPUT, err
    assert ("already exists" if not overwrite else "not an HDF5 file") in err, err
    assert victim.read_text() == "keep me" and os.path.islink(out)


def test_overwrite_replaces_a_link_not_the_store_it_points_to(tmp_path, capsys, digits_model_file):
    other = tmp_path / "other.h5"
    Store.create(other, versions={}, command="someone else's store").close()
    before = other.read_bytes()
    out = tmp_path / "s.h5"
    os.symlink(other, out)
    code, _, err = run_cli(
        capsys,
        "probe",
        str(digits_model_file),
        "--data",
        "digits",
        "--out",
        str(out),
        "--overwrite",
        "-q",
    )
    assert code == 0, err
    assert other.read_bytes() == before and not os.path.islink(out)
    with Store.open(out) as store:
        assert store.run("evaluate").status == "complete"


# --------------------------------------------------------------- escapes in what is shown

EVIL = "\x1b[2J\x07"


def test_printable_escapes_control_characters():
    assert printable("a\x1b[2Jb\x07c") == "a\\x1b[2Jb\\x07c"
    assert printable("line\nnext\ttab") == "line\nnext\ttab"
    assert printable("line\nnext", newlines=False) == "line\\x0anext"
    assert printable("\x9b31m \u202eevil") == "\\x9b31m \\u202eevil"  # C1 CSI, RTL override
    assert printable("ünïcödé ± 0.5") == "ünïcödé ± 0.5"
    assert printable_data({EVIL: [EVIL, 1, None, {"k": EVIL}]}) == {
        "\\x1b[2J\\x07": ["\\x1b[2J\\x07", 1, None, {"k": "\\x1b[2J\\x07"}]
    }


@pytest.fixture
def crafted_store(tmp_path):
    """A store whose names, attributes, options, results and messages hold escapes."""
    path = tmp_path / "crafted.h5"
    with Store.create(path, versions={"keras": "3" + EVIL}, command="klandscape " + EVIL) as s:
        s.write_layout(["dense/kernel" + EVIL], [[2]], [0], 2, model_config="")
        s.write_data_info({"spec": "digits" + EVIL, "loss": "mse" + EVIL, "split": "test"})
        s.add_model("m" + EVIL, np.zeros(2), source="a.keras" + EVIL, role="input" + EVIL)
        run = s.begin_run("evaluate" + EVIL, "evaluate", {"option" + EVIL: "value" + EVIL})
        run.complete({"models": [{"model": "m" + EVIL, "loss_train": 0.5}], EVIL: EVIL})
        other = s.begin_run("odd" + EVIL, "probe" + EVIL, {"x": 1})
        other.fail("boom" + EVIL)
    return path


def test_show_prints_no_escape_sequence_from_a_store(crafted_store, capsys):
    code, out, err = run_cli(capsys, "show", str(crafted_store))
    assert code == 0, err
    assert "\x1b" not in out + err and "\x07" not in out + err
    for shown in ("m\\x1b[2J\\x07", "evaluate\\x1b[2J\\x07", "boom\\x1b[2J\\x07"):
        assert shown in out, out
    assert "klandscape \\x1b[2J\\x07" in out and "digits\\x1b[2J\\x07" in out


def test_plot_prints_no_escape_sequence_from_a_store(crafted_store, capsys, tmp_path):
    code, out, err = run_cli(capsys, "plot", str(crafted_store), "-o", str(tmp_path / "figs"))
    assert code in (0, EXIT_BAD_INPUT), err
    assert "\x1b" not in out + err and "\x07" not in out + err
