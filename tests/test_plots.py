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


@pytest.mark.slow
@pytest.mark.ci
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


# ------------------------------------------------------------ what the figures show


def _interval(barrier, low, high):
    return {
        "max_level": 0.5 + barrier,
        "barrier": barrier,
        "max_interval": [0.5 + low, 0.5 + high],
        "barrier_interval": [low, high],
    }


BOOTSTRAP_RESULT = {
    "level_fn": "error",
    "pairs": [
        {  # a convex pair: no barrier anywhere
            "a": "a",
            "b": "b",
            "endpoint_levels": [0.5, 0.4],
            "linear_max": 0.5,
            "linear_barrier": 0.0,
            "barrier": 0.0,
            "barrier_bracket": [0.0, 0.0],
            "relaxed_max": None,
            "intervals": {
                "confidence": 0.9,
                "resamples": 50,
                "train": {"linear": _interval(0.0, 0.0, 0.0)},
                "test": {"linear": _interval(0.0, 0.0, 0.01)},
            },
        },
        {
            "a": "a",
            "b": "c",
            "endpoint_levels": [0.5, 0.3],
            "linear_max": 2.5,
            "linear_barrier": 2.0,
            "barrier": 1.0,
            "barrier_bracket": [0.6, 1.0],
            "relaxed_max": None,
            "intervals": {
                "confidence": 0.9,
                "resamples": 50,
                "train": {"linear": _interval(1.9, 1.7, 2.2), "dss": _interval(1.1, 0.8, 1.3)},
                "test": {"linear": _interval(2.0, 1.6, 2.4), "dss": _interval(1.0, 0.7, 1.2)},
            },
        },
    ],
}


def _errorbar_spans(ax) -> set[tuple[float, float, float]]:
    """(x, lower end, upper end) of every vertical error bar drawn on the axes."""
    from matplotlib.container import ErrorbarContainer

    spans = set()
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            for collection in container.lines[2]:
                for (x0, y0), (_, y1) in collection.get_segments():
                    spans.add((round(float(x0), 9), round(min(y0, y1), 9), round(max(y0, y1), 9)))
    return spans


def test_barrier_figure_draws_the_bootstrap_intervals():
    from keras_landscape.plugins.barrier import draw_barrier

    figure, caption = draw_barrier(BOOTSTRAP_RESULT, "barrier", "error (%), test split")
    bars, boot = figure.axes
    assert "bootstrap" in caption and "bootstrap" in boot.get_title()
    assert "90% intervals over 50 resamples" in boot.get_title()
    assert boot.get_ylabel() == "barrier above the higher minimum\n(error (%), on the split marked)"
    spans = _errorbar_spans(boot)
    stored = {
        (round(lo, 9), round(hi, 9))
        for pair in BOOTSTRAP_RESULT["pairs"]
        for split in ("train", "test")
        for v in pair["intervals"][split].values()
        for lo, hi in [v["barrier_interval"]]
    }
    assert {(lo, hi) for _, lo, hi in spans} == stored
    assert len(spans) == 6  # one bar per pair, split and path
    # the point estimates, as markers, one line per (path, split)
    points = {line.get_label(): list(line.get_ydata()) for line in boot.get_lines()}
    assert points["linear, train split"] == [0.0, 1.9]
    assert points["dss, test split"] == [1.0]
    # each marker has its error bar at the same x
    marked = {
        round(float(x), 9)
        for line in boot.get_lines()
        if not line.get_label().startswith("_")
        for x in line.get_xdata()
    }
    assert marked == {x for x, _, _ in spans}
    # the bars keep the bisection bracket as their error bar (zero-width for the convex pair)
    brackets = {(lo, hi) for _, lo, hi in _errorbar_spans(bars)}
    assert brackets == {(0.0, 0.0), (0.6, 1.0)}


def test_zero_barriers_are_marked_and_labelled():
    from matplotlib.patches import Rectangle

    from keras_landscape.plugins.barrier import draw_barrier

    figure, _ = draw_barrier(BOOTSTRAP_RESULT, "barrier", "error (%), test split")
    bars = figure.axes[0]
    rectangles = [p for p in bars.patches if isinstance(p, Rectangle)]
    zero = [r for r in rectangles if r.get_height() == 0]
    assert len(zero) == 2  # linear and DSS of the convex pair: invisible as bars
    for r in zero:
        x = r.get_x() + r.get_width() / 2
        markers = [
            line
            for line in bars.get_lines()
            if line.get_marker() == "D"
            and list(line.get_xdata()) == pytest.approx([x])
            and list(line.get_ydata()) == [0.0]
        ]
        assert len(markers) == 1 and markers[0].get_visible()
        labels = [t for t in bars.texts if t.get_text() == "0" and t.xy == pytest.approx((x, 0.0))]
        assert len(labels) == 1
    # the other pair's bars are tall enough to see: no marker, no label
    assert len([t for t in bars.texts if t.get_text() == "0"]) == 2
    assert sorted(r.get_height() for r in rectangles if r.get_height() > 0) == [1.0, 2.0]
    # the scale is not changed to show them: zero stays zero, the axis starts at or below it
    assert bars.get_ylim()[0] <= 0.0


def test_a_barrier_figure_without_bootstrap_has_one_panel(stores, tmp_path):
    from keras_landscape.plugins.barrier import draw_barrier

    with Store.open(stores["complete"]) as store:
        result = store.run("barrier").result
    figure, caption = draw_barrier(result, "barrier", "mae, test split")
    assert len(figure.axes) == 1 and "bootstrap" not in caption
    # the aligned DSS barrier of the first pair, 0.005, is 1% of the scale: marked with
    # its value; the aligned linear one (0.05 - 0.025) is tall enough
    assert [t.get_text() for t in figure.axes[0].texts] == ["0.005"]


def test_barrier_bootstrap_through_plot_store(tmp_path):
    with new_store(tmp_path / "boot.h5") as store:
        run = store.begin_run("barrier", "barrier", {"bootstrap": 50})
        run.complete(BOOTSTRAP_RESULT)
    report = plot_store(str(tmp_path / "boot.h5"), str(tmp_path / "figs"))
    [figure] = report.figures
    assert figure.kind == "barrier" and "bootstrap intervals" in figure.caption
    _assert_valid_pngs([figure.path])


def test_hessian_path_figure_draws_the_trace_error():
    from keras_landscape.plugins.hessian import draw_path

    beads = [
        {"bead": 0, "position": 0.0, "top_eigenvalue": 3.0, "trace": 5.0, "trace_se": 0.5},
        {"bead": 2, "position": 0.5, "top_eigenvalue": 1.0, "trace": 2.0, "trace_se": 0.25},
        {"bead": 1, "position": 1.0, "top_eigenvalue": 2.0, "trace": 4.0, "trace_se": 0.1},
    ]
    figure, _ = draw_path({"path": [{"string": "pair_0_1", "beads": beads}]}, "h", "mae")
    top, trace = figure.axes
    assert top.get_ylabel() == "Hessian top eigenvalue" and trace.get_ylabel() == "Hessian trace"
    assert _errorbar_spans(trace) == {
        (b["position"], b["trace"] - b["trace_se"], b["trace"] + b["trace_se"]) for b in beads
    }


def test_census_summary_draws_the_length_sd():
    from keras_landscape.report.census import draw_summary

    def point(width, index, lengths, sds):
        curviness = {
            "levels": [0.2, 0.1],
            "normalized_length": lengths,
            "normalized_length_sd": sds,
            "pairs": [2, 2],
            "failed": [0, 0],
        }
        components = {
            "minima": ["a", "b"],
            "minimum_levels": [0.05, 0.06],
            "levels": [0.05, 0.2],
            "n_components": [2, 1],
            "highest_merge_level": 0.1,
            "pairs": {"0-1": {"barrier": 0.0, "saddle_level": {"lower": 0.06, "upper": 0.06}}},
        }
        return {
            "name": f"w{width}",
            "index": index,
            "grid": {"width": width},
            "probes": ["components", "curviness"],
            "runs": {
                "components": {"status": "complete", "result": components},
                "curviness": {"status": "complete", "result": curviness},
            },
        }

    census = {
        "data": {"level_fn": "mae", "split": "test"},
        "points": [point(4, 0, [1.2, 1.5], [0.1, 0.2]), point(8, 1, [1.1, 1.3], [0.05, None])],
    }
    figure, _ = draw_summary(census)
    spans = _errorbar_spans(figure.axes[2])
    # highest level first (u = 0.2), then u = 0.1; a missing sd is drawn as none
    assert {(4.0, 1.1, 1.3), (8.0, 1.05, 1.15), (4.0, 1.3, 1.7), (8.0, 1.3, 1.3)} == {
        (x, round(lo, 9), round(hi, 9)) for x, lo, hi in spans
    }
    # a zero mean barrier is a visible point at 0
    barrier = next(
        line for line in figure.axes[1].get_lines() if "mean barrier" in line.get_label()
    )
    assert list(barrier.get_ydata()) == [0.0, 0.0] and barrier.get_marker() == "o"


def test_components_figure_keeps_zero_components_in_view(stores):
    from keras_landscape.plugins.components import draw_components

    with Store.open(stores["complete"]) as store:
        result = dict(store.run("components").result)
    result["levels"] = [0.01] + result["levels"]
    for key in ("n_components", "n_components_lower", "n_components_upper"):
        result[key] = [0] + result[key]
    figure, _ = draw_components(result, "components", "mae, test split")
    ax = figure.axes[0]
    assert ax.get_ylim()[0] < 0.0 < ax.get_ylim()[1]
    assert ax.get_ylabel() == "N_u: components holding a sampled minimum"
