"""The slices probe against known answers.

- A 1-D random slice of a quadratic bowl (linear regression, MSE) is the analytic parabola
  E0 + a g.d + a^2 d^T H d / 2, with H = (2/n) [X 1]^T [X 1] and d the stored direction;
  filter normalisation gives d the norm of the model's kernel, and no bias component.
- The plane through three models passes through them: each model's mark has the loss
  Keras's own evaluate gives for that model file.
- A non-square 2-D grid has explicit axes, full masks and (y, x)-shaped grids in the store.
- The line through two models puts them at t = 0 and t = 1.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest


def _run(paths, data, out, **options):
    from keras_landscape.experiment.runner import RunSpec, execute

    spec = RunSpec(models=paths, data=data, probes=["slices"], options=options, out=str(out))
    return execute(spec)["results"]["slices"]


def _read(out, key):
    from keras_landscape.store.hdf5 import Store

    with Store.open(out) as store:
        return store.run("slices").read(key)


def test_random_slice_of_a_quadratic_bowl_is_the_analytic_parabola(linreg_models, tmp_path):
    x = linreg_models["x"].astype(np.float64)
    y = linreg_models["y"].astype(np.float64)[:, 0]
    design = np.hstack([x, np.ones((len(x), 1))])
    hessian = 2.0 / len(x) * design.T @ design
    out = tmp_path / "s.h5"
    result = _run(
        linreg_models["paths"][:1], linreg_models["data"], out, x_points=9, x_range="-2:2"
    )
    (d,) = _read(out, "directions").astype(np.float64)
    model = keras.saving.load_model(linreg_models["paths"][0])
    theta = np.concatenate([v.numpy().reshape(-1) for v in model.trainable_variables])
    assert d[-1] == 0.0  # the bias is left out
    np.testing.assert_allclose(np.linalg.norm(d[:3]), np.linalg.norm(theta[:3]), rtol=1e-6)
    a = np.array(result["x"])
    residual = design @ theta - y
    gradient = 2.0 / len(x) * design.T @ residual
    expected = np.mean(residual**2) + a * (gradient @ d) + 0.5 * a**2 * (d @ hessian @ d)
    np.testing.assert_allclose(result["loss"][0], expected, rtol=1e-5, atol=1e-6)
    # the loss level function on the training split is the same function
    assert result["marks"][0]["x"] == pytest.approx(0.0, abs=1e-7)


def test_plane_through_three_models_passes_through_them(linreg_models, tmp_path):
    paths = linreg_models["paths"][:3]
    result = _run(
        paths,
        linreg_models["data"],
        tmp_path / "p.h5",
        mode="models",
        dims=2,
        x_points=5,
        y_points=4,
        x_range="-0.5:0.5",
        y_range="-0.5:0.5",
    )
    x, y = linreg_models["x"], linreg_models["y"]
    for mark, path in zip(result["marks"], paths):
        model = keras.saving.load_model(path)
        expected = model.evaluate(x, y, verbose=0, batch_size=len(x))
        assert mark["loss"] == pytest.approx(expected, rel=1e-5)
    a, b = result["marks"][0], result["marks"][1]
    assert (a["x"], a["y"]) == pytest.approx((0.0, 0.0), abs=1e-6)
    assert b["y"] == pytest.approx(0.0, abs=1e-5) and b["x"] > 0
    grid_x, grid_y = result["x"], result["y"]
    for mark in result["marks"]:  # the grid covers the three models
        assert grid_x[0] < mark["x"] < grid_x[-1] and grid_y[0] < mark["y"] < grid_y[-1]


def test_non_square_grid_has_axes_and_a_mask(linreg_models, tmp_path):
    out = tmp_path / "g.h5"
    result = _run(
        linreg_models["paths"][:1], linreg_models["data"], out, dims=2, x_points=4, y_points=3
    )
    assert np.array(result["loss"]).shape == (3, 4)
    assert np.isfinite(np.array(result["level"])).all()
    assert _read(out, "done").shape == (3, 4) and _read(out, "done").all()
    assert len(_read(out, "x")) == 4 and len(_read(out, "y")) == 3


def test_line_through_two_models(linreg_models, tmp_path):
    result = _run(
        linreg_models["paths"][:2],
        linreg_models["data"],
        tmp_path / "l.h5",
        mode="models",
        x_range="-0.5:1.5",
        x_points=5,
    )
    assert [m["x"] for m in result["marks"]] == pytest.approx([0.0, 1.0], abs=1e-6)
    assert result["x"] == pytest.approx([-0.5, 0.0, 0.5, 1.0, 1.5])
    # t = 0 and t = 1 are grid points: the models' own losses
    assert result["loss"][0][1] == pytest.approx(result["marks"][0]["loss"], rel=1e-6)
    assert result["loss"][0][3] == pytest.approx(result["marks"][1]["loss"], rel=1e-6)


class _StopAfter:
    """A progress whose task raises KeyboardInterrupt after `rows` advances."""

    def __init__(self, rows):
        self.rows = rows

    def task(self, *args, **kwargs):
        return self

    def advance(self, amount=1):
        self.rows -= 1
        if self.rows == 0:
            raise KeyboardInterrupt

    def update(self, **kwargs):
        pass

    def close(self):
        pass

    def note(self, message):
        pass


def test_interrupted_slice_resumes_without_redoing_rows(linreg_models, tmp_path, monkeypatch):
    from keras_landscape.errors import Interrupted
    from keras_landscape.experiment.runner import RunSpec, execute
    from keras_landscape.plugins import slices
    from keras_landscape.store.hdf5 import Store

    monkeypatch.setattr(slices, "GRID_CALL_POINTS", 4)  # one row (4 points) per call
    options = {"dims": 2, "x_points": 4, "y_points": 5}
    paths, data = linreg_models["paths"][:1], linreg_models["data"]
    whole = _run(paths, data, tmp_path / "whole.h5", **options)
    out = tmp_path / "cut.h5"
    spec = RunSpec(models=paths, data=data, probes=["slices"], options=options, out=str(out))
    with pytest.raises(Interrupted):
        execute(spec, _StopAfter(2))
    done = _read(out, "done")
    assert done[:2].all() and not done[2:].any()
    with Store.open(out) as store:
        first_rows = store.run("slices").read("loss")[:2].copy()
    # the directions and axes went in with the first rows, under their commit
    for key in ("directions", "x", "y"):
        np.testing.assert_array_equal(_read(out, key), _read(tmp_path / "whole.h5", key))
    spec.resume = True
    resumed = execute(spec)["results"]["slices"]
    np.testing.assert_allclose(np.array(resumed["loss"])[:2], first_rows)
    np.testing.assert_allclose(resumed["loss"], whole["loss"], rtol=1e-6)
    assert _read(out, "done").all()


def _one_d_result(**extra):
    return {
        "mode": "models",
        "dims": 1,
        "x": [0.0, 0.5, 1.0],
        "y": [0.0],
        "x_label": "t (0 = A, 1 = B)",
        "loss": [[0.2, 3.0, 0.1]],
        "level": [[5.0, 40.0, 4.0]],
        "marks": [
            {"model": "A", "x": 0.0, "y": 0.0, "loss": 0.2, "level": 5.0},
            {"model": "B", "x": 1.0, "y": 0.0, "loss": 0.1, "level": 4.0},
        ],
        **extra,
    }


def test_a_1d_slice_puts_loss_and_level_on_two_labelled_axes():
    from keras_landscape.plugins.slices import draw_slice

    result = _one_d_result(loss_fn="categorical_crossentropy")
    figure, _ = draw_slice(result, "slices", "error (%), test split")
    loss_axis, level_axis = figure.axes
    assert loss_axis.get_shared_x_axes().joined(loss_axis, level_axis)  # one x, two y axes
    assert loss_axis.get_ylabel() == "training loss (categorical_crossentropy), train split"
    assert level_axis.get_ylabel() == "level: error (%), test split"
    assert loss_axis.get_xlabel() == "t (0 = A, 1 = B)"
    loss_line = next(line for line in loss_axis.get_lines() if line.get_label().startswith("train"))
    level_line = next(line for line in level_axis.get_lines() if line.get_label().startswith("lev"))
    assert list(loss_line.get_ydata()) == [0.2, 3.0, 0.1]
    assert list(level_line.get_ydata()) == [5.0, 40.0, 4.0]
    # each axis is coloured as its curve, and the legend names both
    assert loss_axis.yaxis.label.get_color() == loss_line.get_color()
    assert level_axis.yaxis.label.get_color() == level_line.get_color()
    legend = [t.get_text() for t in loss_axis.get_legend().get_texts()]
    assert legend == [loss_axis.get_ylabel(), level_axis.get_ylabel(), "models"]
    # the models are marked on both axes at their own loss and level
    marks = lambda ax: sorted(  # noqa: E731
        (float(line.get_xdata()[0]), float(line.get_ydata()[0]))
        for line in ax.get_lines()
        if line.get_label().startswith("_") and len(line.get_xdata()) == 1
    )
    assert marks(loss_axis) == [(0.0, 0.2), (1.0, 0.1)]
    assert marks(level_axis) == [(0.0, 5.0), (1.0, 4.0)]


def test_a_1d_slice_of_an_old_store_without_the_loss_name():
    from keras_landscape.plugins.slices import draw_slice

    figure, _ = draw_slice(_one_d_result(), "slices", "mae, test split")
    assert figure.axes[0].get_ylabel() == "training loss, train split"


def test_a_2d_slice_labels_its_axes_and_colour_bar():
    from keras_landscape.plugins.slices import draw_slice

    result = {
        "mode": "random",
        "dims": 2,
        "x": [-1.0, 0.0, 1.0],
        "y": [-1.0, 1.0],
        "x_label": "random direction 1",
        "y_label": "random direction 2",
        "loss": [[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]],
        "level": [[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]],
        "marks": [],
    }
    figure, _ = draw_slice(result, "slices", "mae, test split")
    ax, bar = figure.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("random direction 1", "random direction 2")
    assert bar.get_ylabel() == "level: mae, test split"


def test_the_slice_records_its_loss_name(linreg_models, tmp_path):
    from keras_landscape.store.hdf5 import Store

    out = tmp_path / "n.h5"
    result = _run(linreg_models["paths"][:1], linreg_models["data"], out, x_points=3)
    with Store.open(out) as store:
        assert result["loss_fn"] == store.read_data_info()["loss"]
    assert result["loss_fn"]
