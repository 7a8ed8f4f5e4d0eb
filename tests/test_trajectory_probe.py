"""The trajectory probe against known answers.

- Checkpoints built on a plane through the final model (theta_i = theta_final + a_i u + b_i v,
  u and v orthonormal) have explained variance [r, 1 - r, 0, ...] and path coordinates equal
  to (a_i, b_i) up to a rotation or reflection: every distance between path points is kept.
  The Gram-matrix PCA, taken over slices of the parameters, equals numpy's SVD of the
  differences.
- Each checkpoint's loss is Keras's `evaluate` of that file; the surface at the grid point
  (0, 0) is the final model's loss; files given in shell (lexical) order are put in natural
  order (epoch_2 before epoch_10).
- A real training run saving epoch_<E>.keras files (Keras's ModelCheckpoint), then the probe
  over those files.
- `show` tables, `frames` (path, surface, variance) and the figure's artists.
- Fewer than 3 checkpoints and checkpoints of different architectures are refused (exit 2).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import run_cli

from keras_landscape.plugins.trajectory import (
    checkpoint_order,
    draw_trajectory,
    grid_axis,
    pca_plane,
)

DATA = "cubic:limit=64"


# ------------------------------------------------------------------ numpy only


def _plane_thetas(rng, size=50, n=6):
    final = rng.normal(size=size)
    u, v = np.linalg.qr(rng.normal(size=(size, 2)))[0].T
    a, b = rng.normal(size=n - 1), rng.normal(size=n - 1) * 0.4
    thetas = [final + ai * u + bi * v for ai, bi in zip(a, b)]
    return thetas, final, np.stack([a, b], axis=1)


def _distances(points):
    points = np.asarray(points, float)
    return np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)


def test_pca_plane_of_points_on_a_plane(rng):
    thetas, final, ab = _plane_thetas(rng)
    plane = pca_plane(thetas, final, chunk=7)  # slices of 7 parameters
    ratios = plane["explained_variance_ratio"]
    assert len(ratios) == 5 and ratios.sum() == pytest.approx(1.0)
    assert ratios[0] >= ratios[1] > 0.0
    np.testing.assert_allclose(ratios[2:], 0.0, atol=1e-12)
    # the same as numpy's SVD of the differences (uncentred: the plane holds the final model)
    singular = np.linalg.svd(np.stack(thetas) - final, compute_uv=False)
    # (the Gram matrix resolves singular values down to ~sqrt(eps) of the largest)
    np.testing.assert_allclose(plane["singular_values"], singular, rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(ratios[:2], singular[:2] ** 2 / (singular**2).sum(), rtol=1e-9)
    # orthonormal directions; coordinates are (a, b) up to a rotation / reflection
    d = plane["directions"]
    np.testing.assert_allclose(d @ d.T, np.eye(2), atol=1e-12)
    with_final = np.vstack([ab, [0.0, 0.0]])
    coords = np.vstack([plane["coordinates"], [0.0, 0.0]])
    np.testing.assert_allclose(_distances(coords), _distances(with_final), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(coords, axis=1), np.linalg.norm(with_final, axis=1))
    assert plane["second_axis"] == "pca"
    whole = pca_plane(thetas, final)  # one slice of all parameters
    np.testing.assert_allclose(whole["singular_values"], plane["singular_values"], atol=1e-7)


def test_a_straight_path_gets_an_orthogonal_second_axis(rng):
    final, u = rng.normal(size=20), rng.normal(size=20)
    plane = pca_plane([final + t * u for t in (3.0, 2.0, 1.0)], final)
    assert plane["second_axis"] == "orthogonal"
    assert plane["explained_variance_ratio"][0] == pytest.approx(1.0)
    d = plane["directions"]
    np.testing.assert_allclose(d @ d.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(plane["coordinates"][:, 1], 0.0, atol=1e-9)
    np.testing.assert_allclose(
        np.abs(plane["coordinates"][:, 0]), np.array([3, 2, 1]) * np.linalg.norm(u)
    )


def test_grid_axis_covers_the_range_and_holds_zero():
    for low, high, points in ((-1.3, 0.2, 5), (-0.01, 7.0, 21), (0.0, 1.0, 3), (-2.0, 0.0, 4)):
        axis = grid_axis(low, high, points)
        assert len(axis) == points and axis[0] <= low and axis[-1] >= high - 1e-12
        assert 0.0 in axis


def test_checkpoint_order_is_natural_for_numbered_names():
    names = ["epoch_1", "epoch_10", "epoch_2", "epoch_9"]
    assert [names[i] for i in checkpoint_order(names, "auto")] == [
        "epoch_1",
        "epoch_2",
        "epoch_9",
        "epoch_10",
    ]
    assert checkpoint_order(names, "given") == [0, 1, 2, 3]
    plain = ["start", "middle", "final"]  # no numbers: the given order
    assert checkpoint_order(plain, "auto") == [0, 1, 2]


# ------------------------------------------------------------------ a tiny model


def _tiny(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(loss="mse")
    return model


def _with_theta(model, theta):
    offset = 0
    for variable in model.trainable_variables:
        size = int(np.prod(variable.shape))
        variable.assign(theta[offset : offset + size].reshape(variable.shape))
        offset += size


def _run(paths, out, **options):
    from keras_landscape.experiment.runner import RunSpec, execute

    spec = RunSpec(models=paths, data=DATA, probes=["trajectory"], options=options, out=str(out))
    return execute(spec)["results"]["trajectory"]


def _keras_loss(path):
    import keras

    from keras_landscape.data.specs import load_data

    data = load_data(DATA)
    model = keras.saving.load_model(path)
    return model.evaluate(data.x_train, data.y_train, verbose=0, batch_size=len(data.x_train))


@pytest.fixture(scope="module")
def plane_run(tmp_path_factory):
    """Six checkpoints epoch_1 ... epoch_10 on a plane through the final one (epoch_10),
    given in lexical order, and the probe's result over them."""
    folder = tmp_path_factory.mktemp("trajectory_plane")
    model = _tiny()
    final = np.concatenate([v.numpy().reshape(-1) for v in model.trainable_variables])
    final = final.astype(np.float64)
    rng = np.random.default_rng(5)
    u, v = np.linalg.qr(rng.normal(size=(final.size, 2)))[0].T
    ab = np.array([[2.0, 1.0], [1.5, -0.4], [1.0, 0.5], [0.6, -0.3], [0.2, 0.1]])
    epochs = [1, 2, 3, 5, 9, 10]
    paths = {}
    for epoch, (a, b) in zip(epochs, [*ab, (0.0, 0.0)]):
        theta = final + a * u + b * v
        _with_theta(model, theta.astype(np.float32))
        paths[epoch] = str(folder / f"epoch_{epoch}.keras")
        model.save(paths[epoch])
    lexical = sorted(paths.values())  # epoch_1, epoch_10, epoch_2, ... as a shell glob gives
    out = folder / "t.h5"
    result = _run(lexical, out, grid=5, margin=0.25)
    return {
        "result": result,
        "out": out,
        "ab": np.vstack([ab, [0.0, 0.0]]),
        "paths": [paths[e] for e in epochs],
    }


def test_plane_checkpoints_known_answers(plane_run):
    result, ab = plane_run["result"], plane_run["ab"]
    assert result["checkpoints"] == [f"epoch_{e}" for e in (1, 2, 3, 5, 9, 10)]
    ratios = [v["explained_variance_ratio"] for v in result["variance"]]
    assert len(ratios) == 5 and sum(ratios) == pytest.approx(1.0)
    assert ratios[0] + ratios[1] == pytest.approx(1.0, abs=1e-6)  # float32 files
    np.testing.assert_allclose(ratios[2:], 0.0, atol=1e-6)
    path = result["path"]
    coords = [(p["x"], p["y"]) for p in path]
    assert coords[-1] == (0.0, 0.0)  # the final model is the centre
    np.testing.assert_allclose(_distances(coords), _distances(ab), rtol=1e-4, atol=1e-5)
    assert max(p["off_plane"] for p in path) < 1e-4
    assert path[0]["x"] >= 0 and path[0]["y"] >= 0  # the start in the positive quadrant
    steps = np.linalg.norm(np.diff(ab, axis=0), axis=1)
    assert result["path_length"] == pytest.approx(steps.sum(), rel=1e-4)
    assert result["start_to_end"] == pytest.approx(np.linalg.norm(ab[0]), rel=1e-4)


def test_checkpoint_losses_are_keras_evaluate_and_the_centre_is_the_final_loss(plane_run):
    result = plane_run["result"]
    for point, path in zip(result["path"], plane_run["paths"]):
        assert point["loss"] == pytest.approx(_keras_loss(path), rel=1e-5)
    x, y = result["x"], result["y"]
    assert len(x) == len(y) == 5 and 0.0 in x and 0.0 in y
    centre = next(s for s in result["surface"] if s["x"] == 0.0 and s["y"] == 0.0)
    assert centre["loss"] == pytest.approx(result["path"][-1]["loss"], rel=1e-6)
    assert centre["level"] == pytest.approx(result["path"][-1]["level"], rel=1e-6)
    for p in result["path"]:  # the grid covers the path
        assert x[0] < p["x"] < x[-1] or p["x"] == 0.0
        assert y[0] < p["y"] < y[-1] or p["y"] == 0.0


def test_show_frames_and_figure(plane_run, capsys):
    from keras_landscape.report.frames import frames
    from keras_landscape.report.tables import result_tables

    result, out = plane_run["result"], plane_run["out"]
    summary, checkpoints = result_tables("trajectory", "trajectory", result)
    ratios = [v["explained_variance_ratio"] for v in result["variance"]]
    assert summary["rows"][0][:4] == [
        "6",
        f"{100 * ratios[0]:.4g}",
        f"{100 * ratios[1]:.4g}",
        f"{100 * (ratios[0] + ratios[1]):.4g}",
    ]
    assert summary["rows"][0][-1] == f"{result['path'][-1]['loss']:.4g}"
    assert [row[0] for row in checkpoints["rows"]] == result["checkpoints"]
    code, text, err = run_cli(capsys, "show", str(out))
    assert code == 0, err
    assert f"{100 * ratios[0]:.4g}" in text and "epoch_10" in text and " -0 " not in text

    tables = frames(out, "trajectory")
    assert list(tables["path"]["model"]) == result["checkpoints"]
    assert {"x", "y", "off_plane", "step", "loss", "level"} <= set(tables["path"].columns)
    surface = tables["surface"]
    assert len(surface) == 25 and {"x", "y", "loss", "level"} <= set(surface.columns)
    assert tables["variance"]["explained_variance_ratio"].sum() == pytest.approx(1.0)
    assert list(tables["variance"]["component"]) == [1, 2, 3, 4, 5]

    figure, caption = draw_trajectory(result, "trajectory", "loss")
    ax = figure.axes[0]
    line = next(line for line in ax.get_lines() if line.get_label() == "checkpoints")
    np.testing.assert_allclose(line.get_xdata(), [p["x"] for p in result["path"]])
    np.testing.assert_allclose(line.get_ydata(), [p["y"] for p in result["path"]])
    assert ax.collections  # the contours
    assert ax.get_xlabel() == f"PC1 ({100 * ratios[0]:.1f}% of the variance)"
    assert ax.get_ylabel().startswith("PC2 (") and "5 x 5 grid" in caption
    texts = [t.get_text() for t in ax.texts]
    assert texts == result["checkpoints"]

    from keras_landscape.registry import output_hook

    found = output_hook("trajectory", "summaries")(result)
    assert found["explained_variance_1"] == pytest.approx(ratios[0])
    assert found["final_loss"] == result["path"][-1]["loss"]


def test_training_run_checkpoints(tmp_path, capsys):
    """A tiny model trained for 10 epochs, each saved as epoch_<E>.keras by Keras's
    ModelCheckpoint; `klandscape probe ckpt/epoch_*.keras --probe trajectory` over the files
    as a shell glob gives them (lexical order)."""
    import keras

    from keras_landscape.data.specs import load_data
    from keras_landscape.store.hdf5 import Store

    data = load_data(DATA)
    model = _tiny(3)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    save = keras.callbacks.ModelCheckpoint(str(tmp_path / "epoch_{epoch}.keras"))
    model.fit(data.x_train, data.y_train, epochs=10, batch_size=16, verbose=0, callbacks=[save])
    files = sorted(str(p) for p in tmp_path.glob("epoch_*.keras"))
    assert len(files) == 10 and files[1].endswith("epoch_10.keras")
    out = tmp_path / "fit.h5"
    code, _, err = run_cli(
        capsys, "-q", "probe", *files, "--data", DATA, "--probe", "trajectory",
        "--set", "grid=4", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    with Store.open(out) as store:
        result = store.run("trajectory").result
    assert result["checkpoints"] == [f"epoch_{e}" for e in range(1, 11)]
    ratios = [v["explained_variance_ratio"] for v in result["variance"]]
    assert len(ratios) == 9 and sum(ratios) == pytest.approx(1.0)
    assert ratios == sorted(ratios, reverse=True) and ratios[0] > 0.3
    path = result["path"]
    for point, epoch in ((path[0], 1), (path[4], 5), (path[-1], 10)):
        assert point["loss"] == pytest.approx(
            _keras_loss(tmp_path / f"epoch_{epoch}.keras"), rel=1e-5
        )
    steps = [p["step"] for p in path[1:]]
    assert result["path_length"] == pytest.approx(sum(steps)) and all(s > 0 for s in steps)
    # every checkpoint's distance from the final model is split into plane and off-plane
    coords = np.array([(p["x"], p["y"], p["off_plane"]) for p in path])
    assert np.linalg.norm(coords[0]) == pytest.approx(result["start_to_end"], rel=1e-6)
    assert math.isfinite(path[0]["loss"]) and path[-1]["loss"] < path[0]["loss"]


def test_refusals(plane_run, tmp_path, capsys):
    two = plane_run["paths"][-2:]
    code, _, err = run_cli(
        capsys, "-q", "probe", *two, "--data", DATA, "--probe", "trajectory",
        "--out", str(tmp_path / "two.h5"),
    )  # fmt: skip
    assert code == 2 and "at least 3 checkpoints" in err and "got 2" in err

    import keras

    wide = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(1)]
    )
    wide.compile(loss="mse")
    wide.save(tmp_path / "epoch_11.keras")
    code, _, err = run_cli(
        capsys, "-q", "probe", *plane_run["paths"][:3], str(tmp_path / "epoch_11.keras"),
        "--data", DATA, "--probe", "trajectory", "--out", str(tmp_path / "arch.h5"),
    )  # fmt: skip
    assert code == 2 and "epoch_11" in err

    code, _, err = run_cli(
        capsys, "-q", "probe", *plane_run["paths"], "--data", DATA, "--probe", "trajectory",
        "--set", "grid=2", "--out", str(tmp_path / "g.h5"),
    )  # fmt: skip
    assert code == 2 and "grid must be >= 3" in err


def test_the_fit_callback_runs_it_once_on_every_checkpoint(tmp_path):
    """In `LandscapeCallback` the probe (takes_history) runs once, when fit ends, on every
    checkpoint in order (the start of fit included), and each point's loss is what Keras's
    own evaluate gave for the weights at that epoch."""
    import keras

    from keras_landscape.callbacks import LandscapeCallback
    from keras_landscape.data.specs import load_data
    from keras_landscape.store.hdf5 import Store

    data = load_data(DATA)
    model = _tiny(5)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    seen = []

    def evaluate(*_):
        seen.append(model.evaluate(data.x_train, data.y_train, verbose=0, batch_size=64))

    keras_losses = keras.callbacks.LambdaCallback(
        on_train_begin=evaluate, on_epoch_end=lambda *_: evaluate()
    )
    callback = LandscapeCallback(
        data=data, probes=["trajectory"], every=1, store=tmp_path / "fit.h5", options={"grid": 4}
    )
    model.fit(
        data.x_train, data.y_train, epochs=4, batch_size=16, verbose=0,
        callbacks=[keras_losses, callback],
    )  # fmt: skip
    assert [h["epoch"] for h in callback.history] == [4]
    result = callback.history[0]["result"]
    assert result["checkpoints"] == [f"epoch_{e}" for e in range(5)]
    assert [p["loss"] for p in result["path"]] == pytest.approx(seen, rel=1e-5)
    with Store.open(tmp_path / "fit.h5") as store:
        assert store.run_names() == ["trajectory_epoch0004"]
        assert sorted(store.model_names()) == [f"epoch_{e}" for e in range(5)]
