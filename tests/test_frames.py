"""Runs as pandas DataFrames (keras_landscape.report.frames), checked against the result
and the store they come from."""

from __future__ import annotations

import numpy as np
import pytest

from keras_landscape.report.frames import frames, models, runs


@pytest.fixture(scope="module")
def store(linreg_models, tmp_path_factory):
    from keras_landscape.experiment.runner import RunSpec, execute

    out = tmp_path_factory.mktemp("frames") / "f.h5"
    spec = RunSpec(
        models=linreg_models["paths"][:3],
        data=linreg_models["data"],
        probes=["evaluate", "curviness", "slices"],
        options={"levels": "0.6,0.3", "max_depth": 2, "x_points": 5, "dims": 2, "y_points": 3},
        out=str(out),
    )
    return out, execute(spec)["results"]


def test_runs_and_models(store):
    out, results = store
    table = runs(out)
    assert sorted(table["run"]) == ["curviness", "evaluate", "slices"]
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
