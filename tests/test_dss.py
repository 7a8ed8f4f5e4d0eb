"""Dynamic String Sampling against landscapes whose answer is known from theory.

* Convex (linear regression, MSE): every pair connects at any u >= max(E(A), E(B)) with the
  straight line (2 beads, normalised length 1), and E along a segment is an exact quadratic in
  t whose maximum is at an endpoint.
* A one-weight double well E(w) = (w^2 - 1)^2: Omega_u is two intervals for u < 1 and one
  for u >= 1, so DSS between w = -1 and w = +1 must fail below 1 and succeed at and above 1.
* A width-2 two-layer linear net and its hidden-unit swap: E(A) = E(B), the straight line
  crosses a high ridge, but the level set is connected (n1 = 2 > min(n, m) = 1 output), so
  DSS must connect with beads and a normalised length > 1.
* DSS on Dense, Conv2D and LSTM models: the reported numbers are those of the returned string.

Bead counts include both endpoints (see the module docstring of keras_landscape.science.dss).
"""

import math

import keras
import numpy as np
import pytest
from conftest import fit_full_batch, weight_landscape

from keras_landscape.data.specs import load_data
from keras_landscape.engine.landscape import Landscape
from keras_landscape.errors import UserError
from keras_landscape.science import dss
from keras_landscape.science.dss import REASONS, Connection, DSSConfig, check_segments, connect
from keras_landscape.store.hdf5 import Store
from keras_landscape.store.strings import StringRecord

VERSIONS = {
    "package_version": "test",
    "keras_version": keras.__version__,
    "tensorflow_version": "test",
    "backend": "tensorflow",
}


def _string_segment_maxima(landscape, string, points):
    """The checked maximum of every segment of a string, recomputed from scratch."""
    checks = check_segments(landscape, list(zip(string, string[1:])), points)
    return np.array([c.maximum for c in checks])


def _assert_consistent(landscape, connection: Connection, a, b, level, config: DSSConfig):
    """What every Connection must satisfy, whatever its verdict."""
    string = [np.asarray(t, np.float64) for t in connection.string]
    assert connection.reason in REASONS
    assert connection.beads == len(string) >= 2
    np.testing.assert_array_equal(connection.string[0], np.asarray(a, np.float32))
    np.testing.assert_array_equal(connection.string[-1], np.asarray(b, np.float32))
    distance = float(np.linalg.norm(string[-1] - string[0]))
    path = sum(float(np.linalg.norm(q - p)) for p, q in zip(string, string[1:]))
    assert connection.distance == pytest.approx(distance, rel=1e-9)
    assert connection.path_length == pytest.approx(path, rel=1e-9)
    assert math.isfinite(connection.normalized_length)
    assert connection.normalized_length == pytest.approx(path / distance, rel=1e-9)
    assert connection.normalized_length >= 1.0 - 1e-6  # triangle inequality
    maxima = _string_segment_maxima(landscape, connection.string, config.points)
    assert connection.max_level == pytest.approx(float(maxima.max()), rel=1e-5, abs=1e-7)
    threshold = level * (1.0 + config.slack)
    # `connected` is True exactly when every checked point of the string is within the level.
    assert connection.connected == bool(np.all(maxima <= threshold * (1 + 1e-6)))
    if connection.connected:
        assert connection.reason == "connected"
        assert connection.max_level <= threshold * (1 + 1e-6)
        # every bead the string holds is inside Omega_u
        assert np.all(landscape.levels(np.stack(connection.string)) <= threshold * (1 + 1e-6))
    else:
        assert connection.reason != "connected"


# ----------------------------------------------------------------------------- convex


@pytest.fixture(scope="module")
def linreg(tmp_path_factory):
    """Linear regression y = x w + b + noise, a Dense(1) model, its Landscape and optimum."""
    rng = np.random.default_rng(11)
    n, d = 200, 3
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.normal(size=n)).astype(np.float32)
    path = tmp_path_factory.mktemp("linreg") / "linreg.npz"
    np.savez(path, x=x, y=y[:, None])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    landscape = Landscape(model, load_data(f"npz:{path}"))
    design = np.hstack([x, np.ones((n, 1), np.float32)]).astype(np.float64)
    optimum, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    # theta order: kernel (d, 1) then bias (1,)
    assert landscape.layout.shapes == ((d, 1), (1,))
    return {
        "landscape": landscape,
        "x": x,
        "y": y,
        "design": design,
        "optimum": optimum.astype(np.float32),
        "model": model,
        "path": path,
    }


def _mse(linreg, theta):
    theta = np.asarray(theta, np.float64)
    return float(np.mean((linreg["design"] @ theta - linreg["y"]) ** 2))


def test_linear_landscape_is_the_least_squares_objective(linreg):
    landscape = linreg["landscape"]
    thetas = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    thetas[0] = linreg["optimum"]
    expected = [_mse(linreg, t) for t in thetas]
    np.testing.assert_allclose(landscape.levels(thetas), expected, rtol=1e-5)


def _partially_trained(linreg, seed, steps):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    fit_full_batch(model, linreg["x"], linreg["y"][:, None], steps, 0.05)
    return linreg["landscape"].theta_of(model)


@pytest.mark.parametrize("endpoints", ["near_optimum", "partially_trained"])
def test_convex_pair_connects_with_the_straight_line(linreg, endpoints):
    landscape = linreg["landscape"]
    if endpoints == "near_optimum":
        rng = np.random.default_rng(3)
        a = (linreg["optimum"] + 0.2 * rng.normal(size=4)).astype(np.float32)
        b = (linreg["optimum"] + 0.2 * rng.normal(size=4)).astype(np.float32)
    else:
        a, b = _partially_trained(linreg, 1, 15), _partially_trained(linreg, 2, 25)
    ends = landscape.levels(np.stack([a, b]))
    assert ends[0] != pytest.approx(ends[1], rel=1e-3)  # two different points
    top = float(ends.max())
    assert top > _mse(linreg, linreg["optimum"]) * 1.5  # not both at the minimum itself
    config = DSSConfig()
    # top itself, up to float32 rounding: the endpoints are evaluated again inside DSS in
    # other batch shapes, whose reductions may differ in the last bit on other CPUs
    for level in (top * (1 + 1e-6), top * 1.01, top * 2.0, top + 10.0):
        connection = connect(landscape, a, b, level, config)
        assert connection.connected, connection.to_dict()
        assert connection.reason == "connected"
        assert connection.beads == 2  # endpoints only: no bead was needed
        assert connection.depth == 0 and connection.projection_steps == 0
        assert connection.normalized_length == pytest.approx(1.0, abs=1e-9)
        assert connection.normalized_length < 1.01
        # convex: the maximum over the segment is the larger endpoint
        assert connection.max_level == pytest.approx(top, rel=1e-6)
        assert connection.endpoint_levels == pytest.approx(list(ends), rel=1e-6)
        _assert_consistent(landscape, connection, a, b, level, config)


def test_first_bead_is_trained_even_where_the_line_passes(linreg):
    """first_bead (the authors' scripts): a midpoint bead is trained before any check can
    stop DSS, so a convex pair that the straight line joins gets 3 beads; on this convex
    problem the midpoint already lies below alpha x level, so the bead stays there and the
    path is the straight line."""
    landscape = linreg["landscape"]
    a, b = _partially_trained(linreg, 1, 15), _partially_trained(linreg, 2, 25)
    # the higher endpoint's level, up to float32 rounding in other batch shapes
    level = float(landscape.levels(np.stack([a, b])).max()) * (1 + 1e-6)
    plain = connect(landscape, a, b, level, DSSConfig())
    exact = DSSConfig(first_bead=True, learning_rate=0.01, perturbation=0.0)
    forced = connect(landscape, a, b, level, exact)
    assert plain.beads == 2 and plain.depth == 0
    assert forced.connected and forced.beads == 3 and forced.depth == 1
    middle = forced.string[1]
    np.testing.assert_allclose(middle, (a + b) / 2, atol=1e-6)
    assert landscape.level(middle) <= DSSConfig().alpha * level
    assert forced.normalized_length == pytest.approx(1.0, abs=1e-6)
    # the ends share one coordinate: the default start is a seeded step of perturbation x
    # |B - A| off the midpoint in that coordinate only (not trained: already below target)
    b_shared = b.copy()
    b_shared[0] = a[0]
    easy = 2 * float(landscape.levels(np.stack([a, b_shared])).max())  # convex: all below
    perturbed = connect(landscape, a, b_shared, easy, DSSConfig(first_bead=True))
    assert perturbed.connected and perturbed.beads == 3 and perturbed.projection_steps == 0
    offset = perturbed.string[1].astype(np.float64) - (a + b_shared) / 2
    distance = np.linalg.norm(b_shared.astype(np.float64) - a)
    assert abs(offset[0]) == pytest.approx(DSSConfig().perturbation * distance, rel=1e-3)
    np.testing.assert_allclose(offset[1:], 0.0, atol=1e-6)
    no_shared = connect(landscape, a, b, level, DSSConfig(first_bead=True, learning_rate=0.01))
    np.testing.assert_allclose(no_shared.string[1], (a + b) / 2, atol=1e-6)


def test_convex_pair_below_an_endpoint_is_reported_not_connected(linreg):
    landscape = linreg["landscape"]
    a = linreg["optimum"]
    b = (linreg["optimum"] + np.array([1.0, 0.0, 0.0, 0.0])).astype(np.float32)
    ends = landscape.levels(np.stack([a, b]))
    connection = connect(landscape, a, b, float(ends[1]) * 0.9, DSSConfig())
    assert not connection.connected
    assert connection.reason == "endpoint_above_level"
    assert connection.beads == 2
    assert connection.worst_segment["max_level"] == pytest.approx(float(ends[1]))


def test_check_segments_is_the_exact_quadratic_of_a_convex_loss(linreg):
    """For MSE of a linear model, E((1-t)A + tB) = (1-t)E(A) + tE(B) - t(1-t) mean((fA-fB)^2)."""
    landscape = linreg["landscape"]
    rng = np.random.default_rng(5)
    pairs = [
        (
            rng.normal(scale=s, size=4).astype(np.float32),
            rng.normal(scale=s, size=4).astype(np.float32),
        )
        for s in (0.1, 1.0, 3.0)
    ] + [(linreg["optimum"], (linreg["optimum"] + [0.5, -0.5, 0.0, 2.0]).astype(np.float32))]
    points = 20
    checks = check_segments(landscape, pairs, points)
    assert len(checks) == len(pairs)
    for (a, b), check in zip(pairs, checks):
        np.testing.assert_allclose(check.ts, np.linspace(0, 1, points + 1))
        assert check.levels.shape == (points + 1,)
        t = check.ts
        fa, fb = linreg["design"] @ a.astype(np.float64), linreg["design"] @ b.astype(np.float64)
        ea, eb = _mse(linreg, a), _mse(linreg, b)
        expected = (1 - t) * ea + t * eb - t * (1 - t) * np.mean((fa - fb) ** 2)
        np.testing.assert_allclose(check.levels, expected, rtol=2e-5)
        # convex: the straight segment never rises above its higher endpoint
        assert check.maximum <= max(check.levels[0], check.levels[-1]) * (1 + 1e-6)
        assert check.maximum == pytest.approx(max(ea, eb), rel=2e-5)
        assert check.argmax_t in (0.0, 1.0)


def test_check_segments_gives_the_same_curves_in_small_batches(linreg, monkeypatch):
    landscape = linreg["landscape"]
    rng = np.random.default_rng(6)
    pairs = [tuple(rng.normal(size=(2, 4)).astype(np.float32)) for _ in range(5)]
    whole = check_segments(landscape, pairs, 10)
    # one segment (11 thetas of 4 float32) per batched call
    monkeypatch.setattr(dss, "_SEGMENT_BATCH_BYTES", 4 * 4 * 11)
    pieces = check_segments(landscape, pairs, 10)
    for w, p in zip(whole, pieces):
        np.testing.assert_allclose(w.levels, p.levels, rtol=1e-6)


def test_dss_config_validation():
    for bad in (
        dict(alpha=0.0),
        dict(alpha=1.5),
        dict(slack=-0.1),
        dict(points=1),
        dict(max_depth=-1),
        dict(insertion="random"),
        dict(projection_mode="sphere"),
        dict(optimizer="adamm"),
        dict(learning_rate=0.0),
        dict(batch_size=0),
    ):
        with pytest.raises(UserError):
            DSSConfig(**bad).validate()
    DSSConfig().validate()
    projection = DSSConfig(learning_rate=0.5, max_steps=7).projection()
    assert (projection.learning_rate, projection.max_steps) == (0.5, 7)


# ------------------------------------------------------------------------- double well


def _square(t):
    return t * t


@pytest.fixture(scope="module")
def double_well(tmp_path_factory):
    """y_pred = (w x)^2 with x = 1, y = 1 and MSE: E(w) = (w^2 - 1)^2 exactly."""
    landscape = weight_landscape(tmp_path_factory.mktemp("double_well"), 1, _square, [1.0])
    assert landscape.size == 1
    return landscape


def _w(value):
    return np.array([value], np.float32)


def test_double_well_energy(double_well):
    w = np.linspace(-1.5, 1.5, 31).astype(np.float32)
    np.testing.assert_allclose(
        double_well.levels(w[:, None]), (w.astype(np.float64) ** 2 - 1) ** 2, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("level", [1.0, 1.2, 5.0])
def test_double_well_connects_at_and_above_the_barrier(double_well, level):
    config = DSSConfig(learning_rate=0.05)
    connection = connect(double_well, _w(-1.0), _w(1.0), level, config)
    assert connection.connected and connection.reason == "connected"
    assert connection.beads == 2
    assert connection.normalized_length == pytest.approx(1.0)
    # t = 0.5 (w = 0) is one of the R + 1 checked points: the true maximum along the line
    assert connection.max_level == pytest.approx(1.0, rel=1e-6)
    assert connection.worst_segment["t"] == pytest.approx(0.5)
    _assert_consistent(double_well, connection, _w(-1.0), _w(1.0), level, config)


@pytest.mark.parametrize("level", [0.3, 0.5, 0.9, 0.99])
def test_double_well_is_not_connected_below_the_barrier(double_well, level):
    """Asymmetric ends (E(1.1) = 0.0441): every bead falls into a well, some segment crosses 0."""
    a, b = _w(-1.0), _w(1.1)
    config = DSSConfig(learning_rate=0.05, max_depth=4)
    connection = connect(double_well, a, b, level, config)
    assert not connection.connected
    assert connection.reason == "depth_limit"
    assert connection.depth == config.max_depth
    # the string still has to cross w = 0, where E = 1 > u
    assert connection.max_level > level
    assert connection.max_level > 0.95
    assert connection.worst_segment["max_level"] == pytest.approx(connection.max_level)
    beads = np.array([t[0] for t in connection.string])
    assert connection.beads > 2
    # every inserted bead was projected into a well: E <= alpha * u,
    # i.e. |w| >= sqrt(1 - sqrt(alpha u))
    inner = beads[1:-1]
    assert np.all(np.abs(inner) >= math.sqrt(1 - math.sqrt(config.alpha * level)) - 1e-3)
    assert np.any(inner < 0) and np.any(inner > 0)
    _assert_consistent(double_well, connection, a, b, level, config)


def test_double_well_midpoint_is_a_stationary_point(double_well):
    """Symmetric ends: the first bead starts at w = 0, where grad E = 0; it cannot be
    trained (the two ends share no coordinate, so nothing perturbs it)."""
    config = DSSConfig(learning_rate=0.05, max_steps=200)
    connection = connect(double_well, _w(-1.0), _w(1.0), 0.5, config)
    assert not connection.connected
    assert connection.reason == "bead_not_reached"
    assert connection.worst_segment["bead_level"] == pytest.approx(1.0)
    assert connection.worst_segment["target"] == pytest.approx(config.alpha * 0.5)
    assert connection.max_level == pytest.approx(1.0)
    assert connection.projection_steps == config.max_steps  # the failed bead's work counts
    _assert_consistent(double_well, connection, _w(-1.0), _w(1.0), 0.5, config)


def _sum_of_squares(t):
    return keras.ops.sum(t * t, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    """y_pred = (w1 x)^2 + (w2 x)^2 with x = 1, y = 1, MSE: E(w) = (|w|^2 - 1)^2. Its minima
    form the unit circle: any two are joined at E = 0 (zero barrier), around the ring; the
    straight line between opposite points crosses the stationary maximum w = 0."""
    return weight_landscape(tmp_path_factory.mktemp("ring"), 2, _sum_of_squares, [1.0])


def test_opposite_minima_of_a_ring_connect_only_off_the_symmetric_midpoint(ring):
    """A zero-barrier pair whose midpoint is a stationary point: a bead started exactly there
    never moves (DSS fails: not evidence of a barrier); perturbed, it reaches the ring and
    DSS connects the pair around it, with a normalized length towards pi / 2."""
    a, b = np.array([1.0, 0.0], np.float32), np.array([-1.0, 0.0], np.float32)
    assert ring.levels(np.stack([a, b, 0 * a])).tolist() == pytest.approx([0.0, 0.0, 1.0])
    level = 0.05
    stuck = connect(ring, a, b, level, DSSConfig(learning_rate=0.05, perturbation=0.0))
    assert not stuck.connected and stuck.reason == "bead_not_reached"
    config = DSSConfig(learning_rate=0.05)
    found = connect(ring, a, b, level, config)
    assert found.connected, found.to_dict()
    radii = np.linalg.norm(np.stack(found.string), axis=1)
    assert np.all(np.abs(radii**2 - 1) <= math.sqrt(config.alpha * level) + 1e-4)
    assert 1.2 < found.normalized_length <= math.pi / 2 + 1e-3  # the half circle: pi / 2
    _assert_consistent(ring, found, a, b, level, config)
    # seeded: the same seed gives the same string
    again = connect(ring, a, b, level, config)
    np.testing.assert_array_equal(np.stack(again.string), np.stack(found.string))


def test_double_well_verdict_flips_exactly_at_the_barrier(double_well):
    """Symmetric ends: w = 0 (E = 1, the barrier) is checked, so the verdict flips at u = 1."""
    config = DSSConfig(learning_rate=0.05, max_depth=2, max_steps=200)
    pairs = ((_w(-1.0), _w(1.0)), (_w(-1.05), _w(0.98)))
    for level in (0.2, 0.6, 0.95, 0.999, 1.0, 1.001, 1.1, 2.0):
        for k, (a, b) in enumerate(pairs):
            if k == 1 and 0.95 < level < 1.0:
                continue  # the asymmetric line's grid misses w = 0: see the next test
            connection = connect(double_well, a, b, level, config)
            assert connection.connected == (level >= 1.0), (level, connection.to_dict())
            _assert_consistent(double_well, connection, a, b, level, config)


def test_segments_are_only_checked_on_the_grid(double_well):
    """From -1.05 to 0.98 the line crosses w = 0 at t = 0.517, between grid points.

    With R = 20 the checked maximum is E(-0.035) = 0.99755 < 1, so a level just below the
    true barrier passes (the documented heuristic: only the R + 1 points are checked); a
    finer grid (R = 200, t = 0.515 -> w = -0.0045) sees E > 0.9999 and fails it.
    """
    a, b = _w(-1.05), _w(0.98)
    ts = np.linspace(0, 1, 21)
    w = -1.05 + 2.03 * ts
    coarse = float(np.max((w**2 - 1) ** 2))
    assert coarse < 0.999
    level = 0.999
    loose = connect(double_well, a, b, level, DSSConfig(max_depth=0))
    assert loose.connected and loose.max_level == pytest.approx(coarse, rel=1e-5)
    fine = connect(double_well, a, b, level, DSSConfig(max_depth=0, points=200))
    assert not fine.connected and fine.reason == "depth_limit"
    assert fine.max_level > 0.9999


def test_slack_widens_the_threshold_only(double_well):
    """A segment passes when its maximum is <= u (1 + slack): 1.0 <= 0.9 * 1.2."""
    config = DSSConfig(learning_rate=0.05, slack=0.2, max_depth=0)
    connection = connect(double_well, _w(-1.0), _w(1.0), 0.9, config)
    assert connection.connected and connection.beads == 2
    assert connection.max_level == pytest.approx(1.0)
    _assert_consistent(double_well, connection, _w(-1.0), _w(1.0), 0.9, config)
    strict = connect(double_well, _w(-1.0), _w(1.0), 0.9, DSSConfig(max_depth=0))
    assert not strict.connected and strict.reason == "depth_limit"


def test_endpoint_with_non_finite_level_is_reported(double_well):
    connection = connect(double_well, _w(np.inf), _w(1.0), 1.0, DSSConfig())
    assert not connection.connected
    assert connection.reason == "non_finite"


# --------------------------------------------------------- width-2 two-layer linear net


@pytest.fixture(scope="module")
def linear_net(tmp_path_factory):
    """y = v^T W x with hidden width 2 (no biases) trained on a noisy rank-1 linear target.

    A is the trained net, B the same net with its two hidden units swapped (a symmetry of E).
    """
    rng = np.random.default_rng(0)
    n, d = 200, 3
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=n)).astype(np.float32)[:, None]
    path = tmp_path_factory.mktemp("linear_net") / "linear.npz"
    np.savez(path, x=x, y=y)
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((d,)),
            keras.layers.Dense(2, use_bias=False),
            keras.layers.Dense(1, use_bias=False),
        ]
    )
    fit_full_batch(model, x, y, 200, 0.05)
    landscape = Landscape(model, load_data(f"npz:{path}"))
    a = landscape.theta_of(model)
    w, v = a[: 2 * d].reshape(d, 2), a[2 * d :]
    b = np.concatenate([w[:, ::-1].ravel(), v[::-1]]).astype(np.float32)
    return {"landscape": landscape, "a": a, "b": b, "x": x, "y": y, "d": d}


def test_unit_swap_is_a_symmetry_with_a_ridge_in_between(linear_net):
    landscape, a, b = linear_net["landscape"], linear_net["a"], linear_net["b"]
    ea, eb = landscape.levels(np.stack([a, b]))
    assert ea == pytest.approx(eb, rel=1e-5)
    # A is (near) the least-squares minimum: the noise floor, about 0.1^2
    assert 0.005 < ea < 0.02
    # the midpoint has two identical units: its loss, computed by hand, is far above E(A)
    d = linear_net["d"]
    mid = (a.astype(np.float64) + b) / 2
    product = mid[: 2 * d].reshape(d, 2) @ mid[2 * d :]
    by_hand = float(np.mean((linear_net["x"] @ product - linear_net["y"][:, 0]) ** 2))
    assert landscape.level(mid.astype(np.float32)) == pytest.approx(by_hand, rel=1e-5)
    assert by_hand > 50 * ea


@pytest.mark.parametrize("mode", ["plain", "hyperplane"])
def test_unit_swap_connects_along_a_curved_path(linear_net, mode, tmp_path):
    landscape, a, b = linear_net["landscape"], linear_net["a"], linear_net["b"]
    ea = float(landscape.level(a))
    level = 5.0 * ea  # 0.05: five times the noise floor, far below the ridge
    config = DSSConfig(projection_mode=mode)  # library defaults suffice
    straight = check_segments(landscape, [(a, b)], config.points)[0]
    assert straight.maximum > 10 * level  # the straight line fails
    with Store.create(tmp_path / "s.h5", versions=VERSIONS, command="test") as store:
        run = store.begin_run("dss", "connectivity", {})
        record = StringRecord(run, "pair")
        connection = connect(landscape, a, b, level, config, seed=3, record=record)
        assert connection.connected, connection.to_dict()
        assert connection.beads >= 3
        assert connection.depth >= 1 and connection.projection_steps > 0
        assert connection.normalized_length > 1.0 + 1e-3
        assert connection.max_level <= level
        _assert_consistent(landscape, connection, a, b, level, config)
        # the record holds the same string
        order = run.read("pair/order")
        beads = run.read("pair/beads")
        np.testing.assert_array_equal(beads[order], np.stack(connection.string))
        depths = run.read("pair/bead_depth")
        np.testing.assert_array_equal(depths[:2], [0, 0])
        levels = run.read("pair/bead_level")
        assert np.all(levels[order][1:-1] <= config.alpha * level * (1 + 1e-6))
        assert run.get_attrs("pair")["verdict"]["connected"] is True
        if mode == "hyperplane":
            # the depth-1 bead stays in the hyperplane through the midpoint orthogonal to B - A
            first = beads[int(np.flatnonzero(depths == 1)[0])].astype(np.float64)
            mid = (a.astype(np.float64) + b) / 2
            normal = (b - a.astype(np.float64)) / np.linalg.norm(b - a.astype(np.float64))
            offset = first - mid
            assert np.linalg.norm(offset) > 0.1
            assert abs(offset @ normal) <= 1e-5 * max(1.0, np.linalg.norm(offset))


def test_argmax_insertion_also_connects(linear_net):
    landscape, a, b = linear_net["landscape"], linear_net["a"], linear_net["b"]
    level = 5.0 * float(landscape.level(a))
    config = DSSConfig(insertion="argmax")
    connection = connect(landscape, a, b, level, config)
    assert connection.connected and connection.beads >= 3
    assert connection.normalized_length > 1.0 + 1e-3
    _assert_consistent(landscape, connection, a, b, level, config)


def test_identical_endpoints(linear_net):
    a = linear_net["a"]
    connection = connect(linear_net["landscape"], a, a.copy(), 0.05, DSSConfig())
    assert connection.connected and connection.beads == 2
    assert connection.distance == 0.0 and connection.path_length == 0.0
    assert connection.normalized_length == 1.0  # defined as 1 for a zero-length string


def test_same_seed_gives_the_same_string(linear_net):
    landscape, a, b = linear_net["landscape"], linear_net["a"], linear_net["b"]
    config = DSSConfig(batch_size=32)  # mini-batch projections: the seed matters
    level = 5.0 * float(landscape.level(a))
    first = connect(landscape, a, b, level, config, seed=4)
    second = connect(landscape, a, b, level, config, seed=4)
    assert first.beads == second.beads and first.connected == second.connected
    for p, q in zip(first.string, second.string):
        np.testing.assert_array_equal(p, q)
    assert first.normalized_length == second.normalized_length


# ------------------------------------------------------------- Dense, Conv2D and LSTM


def _classifier_data(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    labels = rng.integers(0, 3, n)
    x = 0.5 * rng.normal(size=(n, 6, 6, 1)).astype(np.float32)
    for k in range(3):  # class k: a brighter band of rows 2k, 2k + 1
        x[labels == k, 2 * k : 2 * k + 2, :, 0] += 0.7
    path = tmp_path / "images.npz"
    np.savez(path, x=x, y=labels.astype(np.int32))
    return path, x, labels


def _sequence_data(tmp_path):
    rng = np.random.default_rng(0)
    vocab, steps = 5, 6
    starts = rng.integers(0, vocab, 80)
    tokens = np.array([[(s + i) % vocab for i in range(steps + 1)] for s in starts], np.int32)
    path = tmp_path / "tokens.npz"
    np.savez(path, x=tokens[:, :-1], y=tokens[:, 1:])
    return path, tokens[:, :-1], tokens[:, 1:]


def _train(make, x, y, seed, steps, lr):
    keras.utils.set_random_seed(seed)
    return fit_full_batch(make(), x, y, steps, lr)


@pytest.fixture(scope="module", params=["dense", "conv2d", "lstm"])
def architecture(request, tmp_path_factory):
    """Two trained endpoints of a tiny Dense / Conv2D / LSTM model and their Landscape."""
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "dense":
        spec = "teacher:d=4,h=3,n=200,n_test=0"
        data = load_data(spec)
        x, y = data.x_train, data.y_train

        def make():
            return keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)]
            )

        steps, lr = 150, 0.03
    elif request.param == "conv2d":
        path, x, y = _classifier_data(tmp)
        spec = f"npz:{path}"

        def make():
            return keras.Sequential(
                [
                    keras.Input((6, 6, 1)),
                    keras.layers.Conv2D(2, 3, activation="relu"),
                    keras.layers.Flatten(),
                    keras.layers.Dense(3),
                ]
            )

        steps, lr = 40, 0.03
    else:
        path, x, y = _sequence_data(tmp)
        spec = f"npz:{path}"

        def make():
            return keras.Sequential(
                [
                    keras.Input((6,), dtype="int32"),
                    keras.layers.Embedding(5, 3),
                    keras.layers.LSTM(4, return_sequences=True),
                    keras.layers.Dense(5),
                ]
            )

        steps, lr = 40, 0.05
    model_a, model_b = _train(make, x, y, 1, steps, lr), _train(make, x, y, 2, steps, lr)
    assert model_a.count_params() <= 300
    # XLA compiles the LSTM's projection loop anew for every number of failing segments
    # (about 3 s each on CPU); the plain TensorFlow graph gives the same numbers faster.
    landscape = Landscape(model_a, load_data(spec), xla=request.param != "lstm")
    return request.param, landscape, landscape.theta_of(model_a), landscape.theta_of(model_b)


def test_dss_on_dense_conv2d_and_lstm(architecture):
    name, landscape, a, b = architecture
    ends = landscape.levels(np.stack([a, b]))
    straight = check_segments(landscape, [(a, b)], 20)[0]
    # 1e-5: a batch of 21 points and a batch of 2 may sum in another order (JAX's CPU conv)
    assert straight.levels[0] == pytest.approx(ends[0], rel=1e-5)
    assert straight.levels[-1] == pytest.approx(ends[1], rel=1e-5)
    assert straight.maximum > 1.2 * ends.max()  # a barrier on the straight line (needs beads)
    level = 1.1 * float(ends.max())
    config = DSSConfig(learning_rate=0.01, max_depth=6, max_steps=1000)
    connection = connect(landscape, a, b, level, config)
    assert connection.connected, (name, connection.to_dict())
    assert connection.beads >= 3
    assert connection.normalized_length >= 1.0
    assert connection.max_level <= level
    _assert_consistent(landscape, connection, a, b, level, config)


def test_config_seed_seeds_the_mini_batches(linear_net):
    landscape, a, b = linear_net["landscape"], linear_net["a"], linear_net["b"]
    level = 5.0 * float(landscape.level(a))
    first = connect(landscape, a, b, level, DSSConfig(batch_size=32, seed=1))
    second = connect(landscape, a, b, level, DSSConfig(batch_size=32, seed=2))
    assert first.normalized_length != second.normalized_length
