"""The `curve` probe: a Bezier curve / polygonal chain with trained bends between minima.

Known answers:
- A convex loss with a line of minima (linear regression on two identical features): two
  minima on that line are joined at the minimum loss by the straight line, so the trained
  curve's barrier is ~0 and its maximum is the endpoints' loss.
- The two-valley energy (tests/conftest.py): the straight line peaks at 1, the saddle is
  exactly 1/2; the trained curve goes round the barrier, its maximum below the line's and
  near 1/2 (never below it, up to the grid: every path crosses w1 = 0, where E >= 1/2).
- The stored bends rebuild the curve: the loss at t of a model exported at t is the stored
  loss at t, as Keras's own `evaluate` computes it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import CountingProgress, run_cli

from keras_landscape.errors import UserError
from keras_landscape.models.minimum import Minimum
from keras_landscape.store.hdf5 import Store

VERSIONS = {"keras_landscape": "test"}
FAST = {"steps": 150, "learning_rate": 0.05, "points": 40}


@pytest.fixture(scope="module")
def flat_line(tmp_path_factory):
    """Linear regression on features (x1, x1, x2): every (w1, w2, w3, c) with w1 + w2 fixed
    at the least-squares value is a minimum. Two saved models on that line of minima."""
    import keras

    folder = tmp_path_factory.mktemp("flat_line")
    rng = np.random.default_rng(5)
    base = rng.normal(size=(64, 2))
    x = np.column_stack([base[:, 0], base[:, 0], base[:, 1]]).astype(np.float32)
    y = (1.5 * base[:, 0] - 0.5 * base[:, 1] + 0.2 + 0.05 * rng.normal(size=64))[:, None]
    np.savez(folder / "flat.npz", x=x, y=y.astype(np.float32))
    design = np.column_stack([base[:, 0], base[:, 1], np.ones(64)])
    w, w3, c = np.linalg.lstsq(design, y[:, 0], rcond=None)[0]
    paths = []
    for k, shift in enumerate((1.0, -1.0)):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)], name="flat")
        kernel = np.array([[w / 2 + shift], [w / 2 - shift], [w3]], np.float32)
        model.layers[-1].set_weights([kernel, np.array([c], np.float32)])
        model.compile(loss="mse")
        paths.append(str(folder / f"flat_{k}.keras"))
        model.save(paths[-1])
    return {"paths": paths, "data": f"npz:{folder / 'flat.npz'}", "x": x, "y": y}


def _execute(paths, data, out, custom_objects=None, **options):
    from keras_landscape.experiment.runner import RunSpec, execute

    spec = RunSpec(
        models=paths,
        data=data,
        probes=["curve"],
        options=options,
        out=str(out),
        custom_objects=custom_objects,
    )
    return execute(spec)["results"]["curve"]


def _valley_paths(two_valley):
    return [two_valley.save("left", (-1.0, 0.0)), two_valley.save("right", (1.0, 0.0))]


@pytest.fixture(scope="module")
def valley_run(two_valley, tmp_path_factory):
    """One bezier curve run on the two valleys (the store and its result)."""
    out = tmp_path_factory.mktemp("valley_curve") / "curve.h5"
    result = _execute(
        _valley_paths(two_valley), two_valley.data, out, two_valley.custom_objects, **FAST
    )
    return out, result


def test_curve_between_minima_of_a_convex_loss_has_no_barrier(flat_line, tmp_path):
    result = _execute(flat_line["paths"], flat_line["data"], tmp_path / "flat.h5", **FAST)
    (pair,) = result["pairs"]
    low = min(pair["endpoint_losses"])
    assert pair["endpoint_losses"] == pytest.approx([low, low], rel=1e-5)
    # the straight line is at the minimum loss all along; the curve stays there
    assert pair["line_max_loss"] == pytest.approx(low, rel=1e-5)
    assert pair["max_loss"] == pytest.approx(low, rel=1e-3)
    assert abs(pair["barrier_loss"]) <= 1e-3 * low
    assert pair["evaluation_points"] == 41 and pair["largest_loss_step"] <= 1e-3 * low
    assert len(pair["training_loss"]) == 150
    assert result["level_fn"] == "loss" and pair["max_level"] == pytest.approx(pair["max_loss"])


def test_curve_goes_round_the_two_valley_barrier(two_valley, valley_run):
    out, result = valley_run
    (pair,) = result["pairs"]
    assert pair["line_max_loss"] == pytest.approx(two_valley.linear_max(), abs=1e-5)
    assert pair["endpoint_losses"] == pytest.approx([0.0, 0.0], abs=1e-7)
    # every path crosses w1 = 0 where E >= 1/2 (up to where the grid samples it)
    assert two_valley.SADDLE - 2e-3 <= pair["max_loss"] <= two_valley.SADDLE + 0.03
    assert pair["max_loss"] < 0.6 * pair["line_max_loss"]
    assert pair["barrier_loss"] == pytest.approx(pair["max_loss"], abs=1e-7)
    assert pair["max_loss_t"] == pytest.approx(0.5, abs=0.1)
    # the history: the mean loss over the curve came down from the straight line's
    assert pair["training_loss"][-1] < 0.5 * pair["training_loss"][0]
    # the loss at each t is the energy at the curve's point there
    from keras_landscape.science.curves import curve_points

    with Store.open(out) as store:
        run = store.run("curve")
        ends, bend, ts = (run.read(f"pair_0_1/curve/{k}") for k in ("ends", "bend", "t"))
        stored = run.read("pair_0_1/curve/loss")
    energy = two_valley.energy(curve_points("bezier", ends[0], bend, ends[1], ts))
    np.testing.assert_allclose(stored, energy, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["bezier", "polychain"])
def test_several_bends_go_round_the_barrier_too(two_valley, tmp_path, kind):
    result = _execute(
        _valley_paths(two_valley),
        two_valley.data,
        tmp_path / f"{kind}.h5",
        two_valley.custom_objects,
        kind=kind,
        bends=3,
        **FAST,
    )
    (pair,) = result["pairs"]
    assert two_valley.SADDLE - 2e-3 <= pair["max_loss"] < 0.8 * pair["line_max_loss"]
    with Store.open(tmp_path / f"{kind}.h5") as store:
        assert store.run("curve").read("pair_0_1/curve/bend").shape == (3, 2)


def test_show_table_frames_and_figure(valley_run, capsys):
    from keras_landscape.plugins.curve import CurveProbe, draw_curve
    from keras_landscape.report.frames import frames

    out, result = valley_run
    (pair,) = result["pairs"]
    code, text, _ = run_cli(capsys, "show", str(out))
    assert code == 0
    assert "bezier curve, 1 bend(s)" in text and f"{pair['max_loss']:.4g}" in text
    (table,) = CurveProbe.tables("curve", result)  # the level function is the loss: one
    (row,) = table["rows"]
    assert row[0] == "left - right" and row[6] == "41"
    assert float(row[2]) == pytest.approx(pair["max_loss"], rel=1e-3)
    assert float(row[5]) == pytest.approx(1.0, rel=1e-3)

    tables = frames(out, "curve")
    points = tables["points"]
    assert list(points.columns[:5]) == ["pair", "a", "b", "prefix", "t"]
    assert len(points) == 41 and points["t"].iloc[-1] == 1.0
    assert points["loss"].max() == pytest.approx(pair["max_loss"])
    assert points["line_loss"].max() == pytest.approx(pair["line_max_loss"])
    assert tables["pairs"]["max_loss"].iloc[0] == pytest.approx(pair["max_loss"])

    figure, caption = draw_curve(result, "curve", "loss")
    ax = figure.axes[0]
    solid, dashed = ax.lines[:2]
    assert solid.get_linestyle() == "-" and dashed.get_linestyle() == "--"
    np.testing.assert_allclose(solid.get_ydata(), points["loss"])
    np.testing.assert_allclose(dashed.get_ydata(), points["line_loss"])
    assert len(figure.axes) == 2  # loss along t (the level is the loss) and the history
    assert len(figure.axes[1].lines[0].get_ydata()) == len(pair["training_loss"])
    assert "left - right" in caption


def test_the_exported_point_has_the_stored_loss(valley_run, two_valley, tmp_path, capsys):
    """klandscape export --t: Keras's evaluate of the written model gives the stored loss at
    that t, and the curve's point at t = 1 is B."""
    import keras

    from keras_landscape.models.loading import load_custom_objects

    out, _ = valley_run
    with Store.open(out) as store:
        run = store.run("curve")
        ts, losses = run.read("pair_0_1/curve/t"), run.read("pair_0_1/curve/loss")
    k = int(np.argmax(losses))
    data = np.load(two_valley.data[len("npz:") :])
    custom = load_custom_objects(two_valley.custom_objects)
    for index in (k, len(ts) - 1):
        target = tmp_path / f"point_{index}.keras"
        code, _, err = run_cli(
            capsys,
            "export",
            str(out),
            "--run",
            "curve",
            "--t",
            str(ts[index]),
            "-o",
            str(target),
            "--custom-objects",
            two_valley.custom_objects,
        )
        assert code == 0, err
        assert "the point t = " in err
        model = keras.saving.load_model(target, custom_objects=custom, compile=False)
        model.compile(loss="mse")
        keras_loss = model.evaluate(data["x"], data["y"], verbose=0)
        assert keras_loss == pytest.approx(losses[index], rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(model.layers[-1].get_weights()[0], [1.0, 0.0], atol=1e-7)

    code, _, err = run_cli(
        capsys, "export", str(out), "--run", "curve", "--t", "1.5", "-o", str(tmp_path / "x.keras")
    )
    assert code == 2 and "[0, 1]" in err
    code, _, err = run_cli(
        capsys,
        "export",
        str(out),
        "--run",
        "curve",
        "--string",
        "pair_0_7",
        "--t",
        "0.5",
        "-o",
        str(tmp_path / "x.keras"),
    )
    assert code == 2 and "pair_0_1" in err


def test_export_at_t_from_a_probe_without_paths_is_refused(valley_run, tmp_path):
    from keras_landscape.models.export import stored_theta
    from keras_landscape.registry import output_hook

    out, _ = valley_run
    with Store.open(out) as store:
        with pytest.raises(UserError, match="stores no path"):
            stored_theta(store, "curve", None, None, None, 0.5, lambda _: None)
        theta, state, what = stored_theta(
            store, "curve", None, None, None, 0.0, lambda p: output_hook(p, "export_point")
        )
    np.testing.assert_allclose(theta, [-1.0, 0.0])
    assert state is None and "t = 0" in what
    assert output_hook("evaluate", "export_point")(None, None, 0.5) is None


class _NoTraining:
    """A landscape that refuses to train or evaluate: a resumed run must read it all back."""

    def __init__(self, landscape):
        self._landscape = landscape

    def __getattr__(self, name):
        if name in ("stepper", "losses_and_grads", "evaluate_many", "levels_and_states"):
            raise AssertionError(f"resume recomputed with {name}")
        return getattr(self._landscape, name)


def test_a_resumed_run_reuses_the_stored_curve(two_valley, tmp_path):
    from keras_landscape.plugins.curve import CurveProbe

    landscape = two_valley.landscape()
    minima = [
        Minimum("left", np.array([-1.0, 0.0], np.float32), "left"),
        Minimum("right", np.array([1.0, 0.0], np.float32), "right"),
    ]
    probe = CurveProbe(CurveProbe.Config(steps=20, learning_rate=0.05, points=10))
    with Store.create(tmp_path / "s.h5", versions=VERSIONS, command="test") as store:
        run = store.begin_run("curve", "curve", {})
        first = probe.run(landscape, minima, run, CountingProgress())
        again = probe.run(_NoTraining(landscape), minima, run, CountingProgress())
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    assert first["pairs"][0]["evaluation_points"] == 11 and len(first["points"]) == 11


def test_curve_options_are_checked(two_valley, tmp_path):
    from keras_landscape.plugins.curve import CurveProbe

    for options, words in (
        ({"kind": "spline"}, "Unknown curve kind"),
        ({"bends": 0}, "bends >= 1"),
        ({"points": 1}, "points >= 2"),
        ({"learning_rate": 0.0}, "learning_rate > 0"),
    ):
        with pytest.raises(UserError, match=words):
            CurveProbe(CurveProbe.Config(**options)).validate_config()


@pytest.mark.slow
def test_default_curve_is_no_worse_than_the_dss_path_on_the_demo_mlps(tmp_path):
    """configs/demo.yaml's setting: 64-32-10 ReLU MLPs on digits, the test error as the level
    function, the demo's options; the curve (default kind, bends, steps, and the run's
    learning rate) reaches no higher test error than DSS's path (up to one test sample) and
    lies far below the straight line."""
    import keras

    from keras_landscape.data.specs import load_data
    from keras_landscape.experiment.runner import RunSpec, execute

    data = load_data("digits")
    paths = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
        model.compile(
            keras.optimizers.Adam(0.003),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(data.x_train, data.y_train, epochs=30, batch_size=64, verbose=0)
        paths.append(str(tmp_path / f"mlp_{seed}.keras"))
        model.save(paths[-1])
    spec = RunSpec(
        models=paths,
        data="digits",
        loss="sparse_categorical_crossentropy:from_logits=true",
        level_fn="error",
        probes=["connectivity", "curve"],
        options={"learning_rate": 0.001, "max_steps": 1500, "check_every": 25, "margin": 0.3},
        out=str(tmp_path / "demo.h5"),
    )
    results = execute(spec)["results"]
    (dss,) = results["connectivity"]["pairs"]
    (curve,) = results["curve"]["pairs"]
    one_sample = 100.0 / len(data.y_test)
    assert curve["max_level"] <= dss["max_level"] + one_sample + 1e-9
    assert curve["max_level"] < curve["line_max_level"]
    assert curve["max_loss"] < curve["line_max_loss"]
