"""`klandscape plot` and keras_landscape.report.plots: every figure written, named
predictably, valid.

Stores come from tests/synthetic_stores.py: written with keras_landscape.store.hdf5 alone (every
result kind, an unknown probe, interrupted runs), and real connectivity stores made by
runner.execute on two 1-4-4-1 sigmoid MLPs of the cubic regression.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from synthetic_stores import (
    complete_store,
    interrupted_store,
    new_store,
    real_connectivity_stores,
    write_string,
)

from keras_landscape.cli.main import EXIT_BAD_INPUT
from keras_landscape.plugins.components import tree_layout
from keras_landscape.report.plots import is_png, plot_store, read_path
from keras_landscape.store.hdf5 import Store
from keras_landscape.store.strings import string_prefixes

EXPECTED = {
    "connectivity_path_pair_0_1.png",
    "curviness_path_level_0-pair_0_1.png",
    "curviness_path_level_1-pair_0_1.png",
    "curviness_path_level_2-pair_0_1.png",
    "curviness_curviness.png",
    "barrier_path_pair_0_1-bisect_1.png",  # the lowest connected bisection string only
    "barrier_barrier.png",
    "components_components.png",
    "components_disconnectivity.png",
}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plot_stores")
    return {
        "complete": complete_store(folder / "complete.h5"),
        "interrupted": interrupted_store(folder / "interrupted.h5"),
    }


def _assert_valid_pngs(paths):
    for path in paths:
        assert Path(path).stat().st_size > 1000, path
        assert is_png(path), path


def test_every_result_kind_gets_its_figure(stores, tmp_path):
    report = plot_store(stores["complete"], str(tmp_path / "figs"))
    names = {Path(f.path).name for f in report.figures}
    assert names == EXPECTED
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(EXPECTED)
    _assert_valid_pngs(f.path for f in report.figures)
    kinds = {(f.run, f.kind) for f in report.figures}
    assert ("components", "disconnectivity") in kinds and ("barrier", "barrier") in kinds
    skipped = {s["run"]: s["reason"] for s in report.skipped}
    assert set(skipped) == {"evaluate", "mystery"}  # a table, and an unknown probe
    assert "mystery" in skipped["mystery"]


def test_all_paths_and_no_paths(stores, tmp_path):
    every = plot_store(stores["complete"], str(tmp_path / "all"), paths="all", runs=["barrier"])
    assert {Path(f.path).name for f in every.figures} == {
        "barrier_path_pair_0_1-bisect_0.png",
        "barrier_path_pair_0_1-bisect_1.png",
        "barrier_barrier.png",
    }
    none = plot_store(stores["complete"], str(tmp_path / "none"), paths="none")
    assert all(f.kind != "path" for f in none.figures) and len(none.figures) == 4


def test_interrupted_store_draws_what_is_there(stores, tmp_path):
    report = plot_store(stores["interrupted"], str(tmp_path / "figs"))
    names = {Path(f.path).name for f in report.figures}
    assert names == {
        "connectivity_path_pair_0_1.png",
        "connectivity_path_pair_0_2.png",
        "curviness_path_level_0-pair_0_1.png",
        "curviness_path_level_0-pair_0_2.png",
    }
    _assert_valid_pngs(f.path for f in report.figures)
    unfinished = next(f for f in report.figures if f.string == "pair_0_2")
    assert "unfinished (depth 1 done)" in unfinished.caption
    assert "1 segment(s) not checked yet" in unfinished.caption
    [skip] = report.skipped
    assert skip["run"] == "curviness" and "status running" in skip["reason"]


def test_path_profile_follows_the_final_string(stores):
    with Store.open(stores["complete"]) as store:
        run = store.run("connectivity")
        assert string_prefixes(run) == ["pair_0_1"]
        assert string_prefixes(store.run("barrier")) == ["pair_0_1/bisect_0", "pair_0_1/bisect_1"]
        profile = read_path(run, "pair_0_1")
        beads = run.read("pair_0_1/beads").astype(np.float64)[[0, 2, 3, 1]]
    steps = np.linalg.norm(np.diff(beads, axis=0), axis=1)
    np.testing.assert_allclose(profile.distances, np.concatenate([[0], np.cumsum(steps)]))
    assert profile.path_x[0] == 0 and profile.path_x[-1] == pytest.approx(steps.sum())
    assert len(profile.path_x) == 3 * 11 and profile.unchecked == 0
    assert profile.line_x[-1] == pytest.approx(np.linalg.norm(beads[-1] - beads[0]))
    assert profile.line_y.max() == pytest.approx(0.52)  # the depth-0 curve, not a later one
    assert profile.level == 0.05 and profile.verdict["a"] == "a"


def test_the_last_curve_of_a_segment_counts(tmp_path):
    # a resumed run may check a segment again: the row written last is the one drawn
    with new_store(tmp_path / "dup.h5") as store:
        run = store.begin_run("connectivity", "connectivity", {})
        write_string(
            run,
            "",
            rows=3,
            order=[0, 2, 1],
            verdict=None,
            depth_done=1,
            segments=[(0, 1, 0, 0.5), (0, 2, 1, 0.9), (2, 1, 1, 0.1), (0, 2, 1, 0.2)],
        )
        assert string_prefixes(run) == [""]
        profile = read_path(run, "")
    assert np.nanmax(profile.path_y) == pytest.approx(0.02 + 0.2)
    assert profile.level is None and profile.verdict is None


def test_tree_layout_has_no_crossings():
    # ((0, 2) at 0.04, (1, 3) at 0.08) at 0.25; leaf 4 never merges
    layout = tree_layout(
        [0.02, 0.03, 0.025, 0.04, 0.05], [[0.04, 0, 2, 5], [0.08, 1, 3, 6], [0.25, 5, 6, 7]]
    )
    assert layout["leaves"] == [0, 2, 1, 3, 4]
    x = layout["x"]
    assert x[5] == 0.5 and x[6] == 2.5 and x[7] == 1.5
    assert layout["roots"] == [7, 4]
    assert layout["y"][7] == 0.25 and layout["parent"][0] == 5


def test_other_formats(stores, tmp_path):
    for fmt, magic in (("svg", b"<?xml"), ("pdf", b"%PDF")):
        report = plot_store(stores["complete"], str(tmp_path / fmt), fmt=fmt, runs=["components"])
        assert len(report.figures) == 2
        for figure in report.figures:
            assert figure.path.endswith(f".{fmt}")
            assert Path(figure.path).read_bytes()[:5].startswith(magic[:4])


def test_plot_command(capsys, stores, tmp_path):
    out_dir = tmp_path / "cli"
    code, out, err = run_cli(capsys, "plot", stores["complete"], "-o", str(out_dir))
    assert code == 0, err
    assert f"wrote {len(EXPECTED)} figure(s) to {out_dir}" in out
    assert "curviness_curviness.png" in out
    assert "no figure for mystery" in err
    code, out, err = run_cli(capsys, "plot", stores["interrupted"], "--json", "-q")
    assert code == 0, err
    document = json.loads(out)
    assert document["directory"] == str(
        Path(stores["interrupted"]).with_name("interrupted_figures")
    )
    assert len(document["figures"]) == 4 and document["skipped"][0]["run"] == "curviness"
    _assert_valid_pngs(f["path"] for f in document["figures"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "gif"], "Invalid value for '--format'"),
        (["--run", "nosuch"], "has no run 'nosuch'"),
    ],
)
def test_plot_bad_input_exits_2(capsys, stores, tmp_path, args, message):
    code, out, err = run_cli(capsys, "plot", stores["complete"], "-o", str(tmp_path), *args)
    assert code == EXIT_BAD_INPUT and message in err and "Traceback" not in err


def test_plot_missing_store_exits_2(capsys, tmp_path):
    code, out, err = run_cli(capsys, "plot", str(tmp_path / "absent.h5"))
    assert code == EXIT_BAD_INPUT and err.startswith("Error: ") and out == ""


def test_plots_need_no_tensorflow(stores, tmp_path):
    script = (
        "import sys\n"
        "from keras_landscape.report.plots import plot_store\n"
        f"report = plot_store({stores['complete']!r}, {str(tmp_path / 'no_tf')!r})\n"
        "assert len(report.figures) == 9\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_real_connectivity_store(tmp_path):
    stores = real_connectivity_stores()
    result = stores["document"]["results"]["connectivity"]
    report = plot_store(stores["complete"], str(tmp_path / "real"))
    [figure] = report.figures
    assert Path(figure.path).name == "connectivity_path_pair_0_1.png"
    _assert_valid_pngs([figure.path])
    with Store.open(stores["complete"]) as store:
        profile = read_path(store.run("connectivity"), "pair_0_1")
    # the drawn path is the stored final string: its length, its checked maximum, its level
    assert len(profile.distances) == result["beads"]
    assert profile.distances[-1] == pytest.approx(result["path_length"], rel=1e-6)
    assert np.nanmax(profile.path_y) == pytest.approx(result["max_level"], rel=1e-9)
    assert profile.level == pytest.approx(result["level"])
    assert profile.line_y.max() > result["level"]  # the straight line crosses the level

    interrupted = plot_store(stores["interrupted"], str(tmp_path / "cut"))
    [figure] = interrupted.figures
    _assert_valid_pngs([figure.path])
    assert "unfinished" in figure.caption


def test_demo_writes_figures_and_says_where(capsys, tmp_path):
    # a quick demo: 2 models, 1 epoch (the README's demo trains 3 for 30 epochs)
    folder = tmp_path / "demo"
    code, out, err = run_cli(
        capsys, "demo", "--out", str(folder), "--models", "2", "--epochs", "1", "-q"
    )
    assert code == 0, err
    figures = sorted((folder / "figures").iterdir())
    assert f"figures: {folder}/figures/ ({len(figures)} files)" in out
    names = {p.name for p in figures}
    assert {
        "connectivity_path_pair_0_1.png",
        "curviness_curviness.png",
        "curviness_path_level_2-pair_0_1.png",
    } <= names
    _assert_valid_pngs(figures)
    assert (folder / "models" / "recipe.json").is_file()
