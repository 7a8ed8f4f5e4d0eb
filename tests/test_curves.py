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
