"""Runs as pandas DataFrames (keras_landscape.report.frames), checked against the result
and the store they come from.

A real run on the linear-regression models (evaluate, curviness, slices, hessian and barrier
with a bootstrap) and the synthetic stores of tests/synthetic_stores.py (a hessian result
with a measured path and per-layer blocks, written by hand): every frame's values are the
stored ones, one row per eigenvalue, per bead, per checked point and per interval.
"""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_stores import POINTS, complete_store, new_store

from keras_landscape.report.frames import frames, models, runs
from keras_landscape.store.hdf5 import Store
from keras_landscape.store.strings import read_string, string_prefixes

PROBES = ["evaluate", "curviness", "slices", "hessian", "barrier"]


@pytest.fixture(scope="module")
def store(linreg_models, tmp_path_factory):
    from keras_landscape.experiment.runner import RunSpec, execute

    out = tmp_path_factory.mktemp("frames") / "f.h5"
    spec = RunSpec(
        models=linreg_models["paths"][:3],
        data=linreg_models["data"],
        probes=PROBES,
        options={
            "levels": "0.6,0.3",
            "max_depth": 2,
            "x_points": 5,
            "dims": 2,
            "y_points": 3,
            "top_k": 2,
            "trace_samples": 20,
            "density_probes": 1,
            "density_steps": 4,
            "density_points": 20,
            "max_bisections": 2,
            "bootstrap": 40,
        },
        out=str(out),
    )
    return out, execute(spec)["results"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return complete_store(tmp_path_factory.mktemp("frames_synthetic") / "c.h5")


def test_runs_and_models(store):
    out, results = store
    table = runs(out)
    assert sorted(table["run"]) == sorted(PROBES)
    assert set(table["status"]) == {"complete"}
    assert list(models(out)["parameters"]) == [4, 4, 4]


def test_per_model_per_level_and_per_string_rows(store):
    out, results = store
    evaluate = frames(out, "evaluate")["models"]
    assert list(evaluate["loss"]) == pytest.approx(
        [m["loss"] for m in results["evaluate"]["models"]]
    )
    curviness = frames(out, "curviness")
    levels = curviness["levels"]
    assert list(levels["level"]) == [0.6, 0.3]
    assert list(levels["pairs"]) == results["curviness"]["pairs"]
    strings = curviness["strings"]
    assert len(strings) == 2 * 3 and set(strings["index_0"]) == {0, 1}
    flat = [r for level in results["curviness"]["details"] for r in level]
    assert list(strings["beads"]) == [r["beads"] for r in flat]
    beads = curviness["beads"]
    # every string's final beads, in order, as many as its verdict says
    for r in flat:
        mine = beads[beads["string"] == r["prefix"]]
        assert int(mine["position"].notna().sum()) == r["beads"]


def test_grid_rows_of_a_slice(store):
    out, results = store
    grid = frames(out, "slices")["grid"]
    assert len(grid) == 5 * 3
    loss = np.array(results["slices"]["loss"])
    assert list(grid["loss"]) == pytest.approx(list(loss.ravel()))
    assert sorted(set(grid["x"])) == pytest.approx(results["slices"]["x"])


def test_every_hessian_eigenvalue_with_its_rank_trace_and_error(store):
    out, results = store
    tables = frames(out, "hessian")
    eigen = tables["eigenvalues"]
    with Store.open(out) as opened:
        run = opened.run("hessian")
        for m in results["hessian"]["models"]:
            mine = eigen[eigen["model"] == m["model"]]
            stored = run.read(f"models/{m['model']}/eigenvalues")
            assert list(mine["rank"]) == [1, 2]
            assert list(mine["eigenvalue"]) == [float(v) for v in stored]
            assert list(mine["residual"]) == list(run.read(f"models/{m['model']}/residuals"))
            trace, se = run.read(f"models/{m['model']}/trace")
            assert set(mine["trace"]) == {trace} and set(mine["trace_se"]) == {se}
            density = tables["density"][tables["density"]["model"] == m["model"]]
            assert list(density["eigenvalue"]) == list(
                run.read(f"models/{m['model']}/density_grid")
            )
            assert list(density["density"]) == list(run.read(f"models/{m['model']}/density"))
    assert len(eigen) == 3 * 2
    assert list(eigen["eigenvalue"].iloc[:2]) == sorted(eigen["eigenvalue"].iloc[:2], reverse=True)
    # the per-model row keeps the trace and its error too
    assert list(tables["models"]["trace_se"]) == [
        m["trace_se"] for m in results["hessian"]["models"]
    ]


def test_bootstrap_intervals_as_lower_and_upper_columns(store):
    out, results = store
    tables = frames(out, "barrier")
    intervals = tables["intervals"]
    expected = [
        (i, split, path, v)
        for i, pair in enumerate(results["barrier"]["pairs"])
        for split, paths in pair["intervals"].items()
        if isinstance(paths, dict)
        for path, v in paths.items()
    ]
    assert len(intervals) == len(expected) > 0
    for (_, row), (i, split, path, v) in zip(intervals.iterrows(), expected):
        assert (row["pair"], row["split"], row["path"], row["aligned"]) == (i, split, path, False)
        assert row["max_level"] == v["max_level"] and row["barrier"] == v["barrier"]
        assert [row["max_lower"], row["max_upper"]] == v["max_interval"]
        assert [row["barrier_lower"], row["barrier_upper"]] == v["barrier_interval"]
        assert row["confidence"] == 0.95 and row["resamples"] == 40
    pairs = tables["pairs"]
    brackets = [p["barrier_bracket"] for p in results["barrier"]["pairs"]]
    assert [
        list(b) for b in zip(pairs["barrier_bracket_lower"], pairs["barrier_bracket_upper"])
    ] == (brackets)
    assert list(pairs["a"]) == [p["a"] for p in results["barrier"]["pairs"]]


def _string_lengths(run, prefix):
    stored = read_string(run, prefix)
    final = stored.beads[stored.rows].astype(np.float64)
    return stored, np.concatenate(
        [[0.0], np.cumsum(np.linalg.norm(np.diff(final, axis=0), axis=1))]
    )


@pytest.mark.parametrize("run_name", ["connectivity", "curviness", "barrier"])
def test_beads_and_checked_points_of_every_string(synthetic, run_name):
    tables = frames(synthetic, run_name)
    beads, checks = tables["beads"], tables["checks"]
    with Store.open(synthetic) as opened:
        run = opened.run(run_name)
        prefixes = string_prefixes(run, relaxed=True)
        assert sorted(set(beads["string"])) == sorted(prefixes)
        for prefix in prefixes:
            stored, distances = _string_lengths(run, prefix)
            mine = beads[beads["string"] == prefix].set_index("row")
            assert list(mine.index) == list(range(len(stored.bead_level)))
            assert list(mine["level"]) == list(stored.bead_level)
            on = mine.loc[stored.rows]
            assert list(on["position"]) == list(range(len(stored.rows)))
            assert list(on["distance"]) == pytest.approx(list(distances))
            assert list(on["t"]) == pytest.approx(list(distances / distances[-1]))
            off = mine.drop(index=stored.rows)
            assert off["distance"].isna().all() and off["t"].isna().all()
            # checked points: every stored curve, each value as stored
            points = checks[checks["string"] == prefix]
            curves = stored.curves
            assert len(points) == sum(len(c[3]) for c in curves)
            if curves:
                assert list(points["level"]) == list(np.concatenate([c[3] for c in curves]))
            # on the path: the last check of each segment of the final string, A to B
            path = points[points["on_path"]]
            rows = stored.rows
            segments = set(zip(rows, rows[1:]))
            checked = [(left, right) for left, right, *_ in curves if (left, right) in segments]
            assert len(path) == (POINTS + 1) * len(set(checked))
            if len(set(checked)) == len(segments):  # fully checked: ends at B
                assert path["distance"].max() == pytest.approx(distances[-1])
                assert path["t"].max() == pytest.approx(1.0)
            for (left, right), group in path.groupby(["left", "right"]):
                i = rows.index(left)
                assert rows[i + 1] == right
                assert group["distance"].iloc[0] == pytest.approx(distances[i])
                assert group["distance"].iloc[-1] == pytest.approx(distances[i + 1])


def test_relaxed_copy_and_brackets_and_keyed_pairs(synthetic):
    barrier = frames(synthetic, "barrier")
    relaxed = barrier["beads"][barrier["beads"]["string"] == "pair_0_1/bisect_1_relaxed"]
    assert list(relaxed["level"]) == [0.02, 0.2, 0.25, 0.025]
    # beads at 0, 1, 2, 3 on every coordinate: steps of sqrt(5)
    assert list(relaxed["distance"]) == pytest.approx([0.0, 5**0.5, 2 * 5**0.5, 3 * 5**0.5])
    assert relaxed["depth"].isna().all()
    pairs = barrier["pairs"]
    assert list(pairs["barrier_bracket_lower"].iloc[:1]) == [0.175]
    assert np.isnan(pairs["barrier_bracket_lower"].iloc[1])
    assert list(pairs["barrier_bracket_upper"]) == [0.275, 0.3]
    assert list(pairs["aligned.barrier_bracket_upper"].iloc[:1]) == [0.005]
    assert "intervals" not in barrier  # no bootstrap in this store
    components = frames(synthetic, "components")
    assert list(components["pairs"]["key"]) == ["0-1"]
    assert list(components["pairs"]["saddle_level.lower"]) == [0.2]
    assert not any(c.startswith("pairs.") for c in components["result"].columns)


def test_hessian_path_and_layers_one_row_per_bead(tmp_path):
    path = tmp_path / "h.h5"
    beads = [
        {"bead": 0, "position": 0.0, "level": 0.02, "top_eigenvalue": 3.0, "trace": 5.0},
        {"bead": 2, "position": 0.4, "level": 0.03, "top_eigenvalue": 1.5, "trace": 2.0},
        {"bead": 1, "position": 1.0, "level": 0.025, "top_eigenvalue": 2.5, "trace": 4.0},
    ]
    for b in beads:
        b["trace_se"] = 0.1 * b["trace"]
    with new_store(path) as store:
        run = store.begin_run("hessian", "hessian", {})
        run.complete(
            {
                "models": [
                    {
                        "model": "a",
                        "layers": [
                            {"variable": "dense/kernel", "parameters": 4, "top_eigenvalue": 2.0},
                            {"variable": "dense/bias", "parameters": 1, "top_eigenvalue": 0.5},
                        ],
                        "eigenvalues": [4.0, 1.0, -0.5],
                        "residuals": [1e-9, 2e-9, 3e-9],
                        "max_residual": 3e-9,
                        "trace": 6.0,
                        "trace_se": 0.2,
                        "density_grid": [],
                        "density": [],
                        "density_sigma": None,
                    }
                ],
                "path": [
                    {"string": "pair_0_1", "beads": beads[:2]},
                    {"string": "pair_0_2", "beads": beads[2:]},
                ],
                "source": "ab.h5:connectivity",
            }
        )
    tables = frames(path, "hessian")
    eigen = tables["eigenvalues"]
    assert list(eigen["rank"]) == [1, 2, 3]
    assert list(eigen["eigenvalue"]) == [4.0, 1.0, -0.5]
    assert list(eigen["residual"]) == [1e-9, 2e-9, 3e-9]
    assert set(eigen["trace"]) == {6.0} and set(eigen["trace_se"]) == {0.2}
    assert "density" not in tables  # no density measured
    walk = tables["path"]
    assert list(walk["string"]) == ["pair_0_1", "pair_0_1", "pair_0_2"]
    for column in ("bead", "position", "level", "top_eigenvalue", "trace", "trace_se"):
        assert list(walk[column]) == [b[column] for b in beads]
    layers = tables["layers"]
    assert list(layers["model"]) == ["a", "a"]
    assert list(layers["variable"]) == ["dense/kernel", "dense/bias"]
    assert list(layers["top_eigenvalue"]) == [2.0, 0.5]
    assert tables["result"]["source"].iloc[0] == "ab.h5:connectivity"
