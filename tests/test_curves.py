"""Curves with one trained bend (barrier relax=bezier|polychain) and the batched NEB.

- The curve's points: t = 0 and 1 are the minima; a polygonal chain passes through its bend.
- A convex problem (linear regression): the straight line never rises above the higher
  endpoint; the trained Bezier curve must not either (a badly trained bend would).
- The two-valley landscape: the Bezier curve and the chain find a lower maximum than the
  straight line ((1 + a b^2) / 2 = 1), and not below the saddle level 1/2; the barrier
  result says which path gave the lowest maximum.
- `Landscape.losses_and_grads` equals `loss_and_grad` row by row.
"""

from __future__ import annotations

import numpy as np
import pytest

from keras_landscape.science.curves import bend_weights, curve_points


def test_curve_points_and_weights():
    a, c, b = np.zeros(2), np.array([1.0, 2.0]), np.array([2.0, 0.0])
    for kind in ("bezier", "polychain"):
        ends = curve_points(kind, a, c, b, [0.0, 1.0])
        np.testing.assert_allclose(ends, [a, b])
    np.testing.assert_allclose(curve_points("polychain", a, c, b, [0.5])[0], c)
    np.testing.assert_allclose(
        curve_points("bezier", a, c, b, [0.5])[0], 0.25 * a + 0.5 * c + 0.25 * b
    )
    assert bend_weights("bezier", [0.5])[0] == 0.5 and bend_weights("polychain", [0.5])[0] == 1.0


def _barrier(paths, data, out, relax, custom_objects=None, **options):
    from keras_landscape.experiment.runner import RunSpec, execute

    spec = RunSpec(
        models=paths,
        data=data,
        probes=["barrier"],
        options={"relax": relax, "max_bisections": 0, **options},
        out=str(out),
        custom_objects=custom_objects,
    )
    return execute(spec)["results"]["barrier"]["pairs"][0]


def test_bezier_between_two_minima_of_a_convex_problem_stays_below_them(linreg_models, tmp_path):
    pair = _barrier(
        linreg_models["paths"][2:4],
        linreg_models["data"],
        tmp_path / "c.h5",
        "bezier",
        relax_steps=60,
        relax_learning_rate=0.05,
    )
    assert pair["relaxed_max"] <= max(pair["endpoint_levels"]) + 1e-6
    assert pair["lowest_path"]["max_level"] <= pair["linear_max"]


@pytest.mark.parametrize("kind", ["bezier", "polychain"])
def test_curves_go_round_the_two_valley_barrier(two_valley, tmp_path, kind):
    paths = [two_valley.save("left", (-1.0, 0.0)), two_valley.save("right", (1.0, 0.0))]
    pair = _barrier(
        paths,
        two_valley.data,
        tmp_path / f"{kind}.h5",
        kind,
        custom_objects=two_valley.custom_objects,
        relax_steps=150,
        relax_learning_rate=0.05,
        grid=200,
    )
    assert pair["linear_max"] == pytest.approx(two_valley.linear_max(), abs=1e-5)
    assert two_valley.SADDLE - 1e-6 <= pair["relaxed_max"] < 0.8 * pair["linear_max"]
    assert pair["lowest_path"] == {"path": kind, "max_level": pair["relaxed_max"]}


def test_batched_gradients_equal_one_at_a_time(linreg_models):
    import keras

    from keras_landscape.data.specs import load_data
    from keras_landscape.engine.landscape import Landscape

    model = keras.saving.load_model(linreg_models["paths"][0])
    landscape = Landscape(model, load_data(linreg_models["data"]), eval_batch_size=64)
    thetas = np.stack([landscape.theta_of(model) + 0.3 * k for k in range(3)]).astype(np.float32)
    losses, grads = landscape.losses_and_grads(thetas)
    for k in range(3):
        loss, grad = landscape.loss_and_grad(thetas[k])
        assert losses[k] == pytest.approx(loss, rel=1e-6)
        np.testing.assert_allclose(grads[k], grad, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------- the bend's optimizer is the run's


@pytest.fixture(scope="module")
def linreg_landscape(linreg_models):
    """A Landscape of linear regression (MSE: E exactly quadratic), the least-squares
    minimum theta*, and two points A, B off it."""
    import keras

    from keras_landscape.data.specs import load_data
    from keras_landscape.engine.landscape import Landscape

    model = keras.saving.load_model(linreg_models["paths"][0])
    landscape = Landscape(model, load_data(linreg_models["data"]))
    x, y = linreg_models["x"].astype(np.float64), linreg_models["y"][:, 0].astype(np.float64)
    design = np.hstack([x, np.ones((len(x), 1))])  # kernel (3) then bias, as the layout orders
    best = np.linalg.lstsq(design, y, rcond=None)[0]
    a = best + np.array([1.0, 0.5, -1.0, 0.3])
    b = best + np.array([-0.5, 1.0, 0.2, -0.8])
    return landscape, best, a, b


def _projection(name: str, learning_rate: float, options: str = ""):
    from keras_landscape.engine.options import ProjectionConfig

    return ProjectionConfig(optimizer=name, learning_rate=learning_rate, optimizer_options=options)


def test_stepper_is_keras_arithmetic(linreg_landscape):
    """SGD with momentum and Adam, two steps each, against their update rules by hand."""
    landscape = linreg_landscape[0]
    x = np.array([1.0, 2.0, -3.0, 0.5], np.float32)
    g1 = np.array([0.5, -1.0, 0.25, 2.0], np.float32)
    g2 = np.array([-0.1, 0.3, 0.7, -2.0], np.float32)
    lr, mu = np.float32(0.1), np.float32(0.9)
    sgd = landscape.stepper(_projection("sgd", 0.1, "momentum=0.9"))
    v1 = -lr * g1
    x1 = sgd.step(x, g1)
    np.testing.assert_array_equal(x1, x + v1)
    v2 = mu * v1 - lr * g2
    np.testing.assert_allclose(sgd.step(x1, g2), x1 + v2, rtol=1e-6)
    adam = landscape.stepper(_projection("adam", 0.1))
    m, s, y = np.zeros(4), np.zeros(4), x.astype(np.float64)
    for step, g in enumerate((g1, g2), start=1):
        m = 0.9 * m + 0.1 * g
        s = 0.999 * s + 0.001 * g.astype(np.float64) ** 2
        rate = 0.1 * np.sqrt(1 - 0.999**step) / (1 - 0.9**step)
        y = y - rate * m / (np.sqrt(s) + 1e-7)
        x = adam.step(x, g)
        np.testing.assert_allclose(x, y, rtol=0, atol=2e-6)  # float32 of values ~3
    assert adam.steps == 2 and adam.spec.name == "adam"


def test_an_unknown_optimizer_is_a_user_error(linreg_landscape):
    from keras_landscape.errors import UserError

    with pytest.raises(UserError, match="Keras does not know it"):
        linreg_landscape[0].stepper(_projection("nosuchopt", 0.1))


def test_sgd_first_step_of_the_bend_is_hand_computed(linreg_landscape):
    """One step of plain SGD: C1 = C0 - lr * mean_j w(t_j) grad E(phi(t_j)) in float32,
    with the t_j the seed draws."""
    from keras_landscape.science.curves import fit_curve

    landscape, _, a, b = linreg_landscape
    curve = fit_curve(
        landscape,
        "bezier",
        a,
        b,
        steps=1,
        optimizer=_projection("sgd", 0.1),
        samples=5,
        grid=4,
        seed=3,
    )
    c0 = (0.5 * (a + b)).astype(np.float32)
    ts = np.random.default_rng(3).uniform(0.0, 1.0, 5)
    _, grads = landscape.losses_and_grads(curve_points("bezier", a, c0, b, ts).astype(np.float32))
    g = (bend_weights("bezier", ts)[:, None] * grads.astype(np.float64)).mean(axis=0)
    np.testing.assert_array_equal(curve["bend"], c0 - np.float32(0.1) * g.astype(np.float32))


@pytest.mark.parametrize(
    "kind, optimum",
    [
        # dJ/dC = E_t[w H (m(t) + w C - theta*)] = 0 for a quadratic E, whatever H is:
        # C* = (E[w] theta* - E[w m]) / E[w^2]
        ("bezier", lambda best, a, b: 2.5 * best - 0.75 * (a + b)),  # 1/3, (A+B)/10, 2/15
        ("polychain", lambda best, a, b: 1.5 * best - 0.25 * (a + b)),  # 1/2, (A+B)/12, 1/3
    ],
)
def test_sgd_and_adam_bends_reach_the_known_optimum(linreg_landscape, kind, optimum):
    from keras_landscape.science.curves import fit_curve

    landscape, best, a, b = linreg_landscape
    target = optimum(best, a, b)
    bends = {}
    for name, rate in (("sgd", 0.3), ("adam", 0.02)):
        curve = fit_curve(
            landscape,
            kind,
            a,
            b,
            steps=300,
            optimizer=_projection(name, rate),
            samples=256,
            grid=10,
            seed=0,
        )
        bends[name] = curve["bend"].astype(np.float64)
        start = np.linalg.norm(target - 0.5 * (a + b))
        assert np.linalg.norm(bends[name] - target) < 0.03 * start, name
        assert curve["losses"][-1] < curve["losses"][0]
    # the same t draws, another optimizer: another path to the optimum
    assert np.linalg.norm(bends["sgd"] - bends["adam"]) > 1e-3


def test_the_barrier_probe_trains_the_bend_with_the_run_optimizer(linreg_models, tmp_path):
    """relax=bezier with optimizer=sgd: the stored bend is fit_curve's with SGD at
    relax_learning_rate (and not Adam's)."""
    import keras

    from keras_landscape.data.specs import load_data
    from keras_landscape.engine.landscape import Landscape
    from keras_landscape.science.curves import fit_curve
    from keras_landscape.seeds import derive_seed
    from keras_landscape.store.hdf5 import Store

    paths = linreg_models["paths"][:2]
    options = {"optimizer": "sgd", "relax_steps": 4, "relax_learning_rate": 0.05}
    options.update(curve_samples=3, grid=8, bootstrap=0)
    _barrier(paths, linreg_models["data"], tmp_path / "sgd.h5", "bezier", **options)
    with Store.open(tmp_path / "sgd.h5") as store:
        stored = store.run("barrier").read("pair_0_1/curve_bezier/bend")
        a, b = (store.read_model(n)["theta"] for n in store.model_names())
    model = keras.saving.load_model(paths[0])
    landscape = Landscape(model, load_data(linreg_models["data"]))
    kwargs = {"steps": 4, "samples": 3, "grid": 8, "seed": derive_seed(0, 11)}
    sgd = fit_curve(landscape, "bezier", a, b, optimizer=_projection("sgd", 0.05), **kwargs)
    adam = fit_curve(landscape, "bezier", a, b, optimizer=_projection("adam", 0.05), **kwargs)
    np.testing.assert_allclose(stored, sgd["bend"], rtol=1e-6, atol=1e-7)
    assert np.abs(stored - adam["bend"]).max() > 1e-4
