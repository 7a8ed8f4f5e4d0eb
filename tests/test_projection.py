"""Projection onto a sublevel set, checked on linear least squares where every step is known.

E(theta) = mean((X theta - y)^2) for a Dense(1) model (theta = kernel then bias), so
grad E = 2/n X^T (X theta - y) and the optimum is the least-squares solution: one SGD step,
one Adam step, a mini-batch step on the drawn indices and the minimiser over a hyperplane can
all be computed by hand.
"""

import math

import keras
import numpy as np
import pytest

from keras_landscape.data.specs import load_data
from keras_landscape.errors import UserError
from keras_landscape.engine.landscape import Landscape
from keras_landscape.engine.projection import ProjectionConfig, project

N, D = 200, 3


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    rng = np.random.default_rng(21)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = (x @ np.array([0.5, -1.0, 2.0]) - 0.7 + 0.2 * rng.normal(size=N)).astype(np.float32)
    path = tmp_path_factory.mktemp("projection") / "ls.npz"
    np.savez(path, x=x, y=y[:, None])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    landscape = Landscape(model, load_data(f"npz:{path}"))
    assert landscape.split == "train"  # the level is E itself, on the training data
    design = np.hstack([x, np.ones((N, 1), np.float32)]).astype(np.float64)
    optimum, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    minimum = float(np.mean((design @ optimum - y) ** 2))
    return {"landscape": landscape, "design": design, "y": y.astype(np.float64),
            "optimum": optimum, "minimum": minimum}


def _energy(problem, theta, rows=None):
    design, y = problem["design"], problem["y"]
    if rows is not None:
        design, y = design[rows], y[rows]
    return float(np.mean((design @ np.asarray(theta, np.float64) - y) ** 2))


def _gradient(problem, theta, rows=None):
    design, y = problem["design"], problem["y"]
    if rows is not None:
        design, y = design[rows], y[rows]
    return 2.0 / len(y) * design.T @ (design @ np.asarray(theta, np.float64) - y)


def _starts(k, scale=3.0, seed=0):
    return np.random.default_rng(seed).normal(scale=scale, size=(k, D + 1)).astype(np.float32)


def test_gradient_matches_the_least_squares_gradient(problem):
    theta = _starts(1)[0]
    value, grad = problem["landscape"].loss_and_grad(theta)
    assert value == pytest.approx(_energy(problem, theta), rel=1e-5)
    np.testing.assert_allclose(grad, _gradient(problem, theta), rtol=1e-4, atol=1e-5)


def test_projection_reaches_the_target_and_reports_true_levels(problem):
    landscape = problem["landscape"]
    starts = _starts(3)
    target = problem["minimum"] + 0.1
    assert np.all(landscape.levels(starts) > 10 * target)
    config = ProjectionConfig(learning_rate=0.05, max_steps=3000, check_every=50)
    result = project(landscape, starts, target, config, seed=0)
    assert result.thetas.shape == starts.shape and result.thetas.dtype == np.float32
    assert result.reached.all()
    assert np.all(result.levels <= target)
    assert np.all(result.levels >= problem["minimum"] * (1 - 1e-5))  # never below the minimum
    np.testing.assert_allclose(result.levels, landscape.levels(result.thetas), rtol=1e-6)
    np.testing.assert_allclose(result.levels, [_energy(problem, t) for t in result.thetas], rtol=1e-5)
    assert np.all(result.steps > 0) and np.all(result.steps % config.check_every == 0)
    assert np.all(result.steps <= config.max_steps)


def test_unreachable_target_spends_the_budget(problem):
    landscape = problem["landscape"]
    config = ProjectionConfig(learning_rate=0.05, max_steps=120, check_every=50)
    result = project(landscape, _starts(2), problem["minimum"] * 0.5, config, seed=0)
    assert not result.reached.any()
    # 50 + 50 + 20: the last loop is cut to the budget
    np.testing.assert_array_equal(result.steps, [120, 120])
    assert np.all(result.levels > problem["minimum"] * 0.5)
    np.testing.assert_allclose(result.levels, landscape.levels(result.thetas), rtol=1e-6)


def test_bead_below_the_target_is_frozen(problem):
    landscape = problem["landscape"]
    starts = _starts(3)
    starts[1] = problem["optimum"].astype(np.float32)  # already at the minimum
    target = problem["minimum"] + 0.1
    config = ProjectionConfig(learning_rate=0.05, max_steps=2000)
    result = project(landscape, starts, target, config, seed=0)
    np.testing.assert_array_equal(result.thetas[1], starts[1])
    assert result.steps[1] == 0 and result.reached[1]
    assert result.levels[1] == pytest.approx(landscape.level(starts[1]), rel=1e-7)
    assert result.reached.all() and np.all(result.steps[[0, 2]] > 0)


def test_beads_are_projected_independently(problem):
    """A bead's path does not depend on the others in its batch (frozen ones stay put)."""
    landscape = problem["landscape"]
    starts = _starts(2, seed=4)
    starts[0] = (problem["optimum"] + 0.3).astype(np.float32)  # near: frozen early
    target = problem["minimum"] + 0.1
    config = ProjectionConfig(learning_rate=0.05, max_steps=2000, check_every=50)
    together = project(landscape, starts, target, config, seed=0)
    assert together.steps[0] < together.steps[1]
    for k in range(2):
        alone = project(landscape, starts[k : k + 1], target, config, seed=0)
        np.testing.assert_allclose(together.thetas[k], alone.thetas[0], rtol=1e-6, atol=1e-7)
        assert together.steps[k] == alone.steps[0]


def test_one_sgd_step_is_theta_minus_lr_grad(problem):
    landscape = problem["landscape"]
    theta = _starts(1, seed=1)[0]
    lr = 0.05
    config = ProjectionConfig(optimizer="sgd", learning_rate=lr, max_steps=1, check_every=1)
    result = project(landscape, theta[None], 0.0, config, seed=0)
    _, grad = landscape.loss_and_grad(theta)
    expected = theta.astype(np.float64) - lr * grad.astype(np.float64)
    np.testing.assert_allclose(result.thetas[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.thetas[0], theta - lr * _gradient(problem, theta), rtol=1e-5,
                               atol=1e-6)
    assert result.steps[0] == 1 and not result.reached[0]


def test_sgd_steps_follow_gradient_descent(problem):
    landscape = problem["landscape"]
    theta = _starts(1, seed=2)[0].astype(np.float64)
    lr, steps = 0.1, 7
    config = ProjectionConfig(optimizer="sgd", learning_rate=lr, max_steps=steps, check_every=3)
    result = project(landscape, theta[None].astype(np.float32), 0.0, config, seed=0)
    for _ in range(steps):
        theta = theta - lr * _gradient(problem, theta)
    np.testing.assert_allclose(result.thetas[0], theta, rtol=1e-4, atol=1e-5)
    assert result.steps[0] == steps


def test_one_adam_step_moves_each_weight_by_lr(problem):
    """First Adam step: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + epsilon)."""
    landscape = problem["landscape"]
    theta = _starts(1, seed=3)[0]
    lr = 0.01
    config = ProjectionConfig(learning_rate=lr, max_steps=1, check_every=1)
    result = project(landscape, theta[None], 0.0, config, seed=0)
    g = _gradient(problem, theta)
    expected = theta - lr * g / (np.abs(g) + config.epsilon)
    np.testing.assert_allclose(result.thetas[0], expected, rtol=1e-5, atol=1e-6)


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def test_hyperplane_mode_keeps_beads_in_their_hyperplane(problem):
    landscape = problem["landscape"]
    starts = _starts(3, seed=5)
    rng = np.random.default_rng(9)
    normals = np.stack([_unit(rng.normal(size=D + 1)) for _ in range(3)])
    normals[2] = 0.0  # a zero row: unconstrained
    config = ProjectionConfig(learning_rate=0.05, max_steps=500, check_every=50)
    result = project(landscape, starts, problem["minimum"] + 0.5, config, seed=0,
                     normals=normals.astype(np.float32))
    moves = result.thetas.astype(np.float64) - starts
    for k in range(2):
        assert np.linalg.norm(moves[k]) > 0.5
        assert abs(moves[k] @ normals[k]) <= 1e-5 * np.linalg.norm(moves[k])
    # the unconstrained bead is the plain projection of the same start
    plain = project(landscape, starts[2:], problem["minimum"] + 0.5, config, seed=0)
    np.testing.assert_allclose(result.thetas[2], plain.thetas[0], rtol=1e-6, atol=1e-7)


def test_one_sgd_step_in_a_hyperplane_drops_the_normal_component(problem):
    landscape = problem["landscape"]
    theta = _starts(1, seed=6)[0]
    normal = _unit([1.0, 1.0, 0.0, -1.0])
    lr = 0.05
    config = ProjectionConfig(optimizer="sgd", learning_rate=lr, max_steps=1, check_every=1)
    result = project(landscape, theta[None], 0.0, config, seed=0,
                     normals=normal[None].astype(np.float32))
    g = _gradient(problem, theta)
    expected = theta - lr * (g - (g @ normal) * normal)
    np.testing.assert_allclose(result.thetas[0], expected, rtol=1e-5, atol=1e-6)


def test_hyperplane_projection_converges_to_the_constrained_minimiser(problem):
    """min E over {theta : n . (theta - theta0) = 0}, by Lagrange multipliers, for a quadratic."""
    landscape = problem["landscape"]
    theta0 = _starts(1, seed=7)[0].astype(np.float64)
    normal = _unit([0.0, 1.0, 1.0, 0.5])
    design, y = problem["design"], problem["y"]
    hessian = 2.0 / N * design.T @ design
    kkt = np.block([[hessian, normal[:, None]], [normal[None, :], np.zeros((1, 1))]])
    rhs = np.concatenate([2.0 / N * design.T @ y, [normal @ theta0]])
    constrained = np.linalg.solve(kkt, rhs)[: D + 1]
    config = ProjectionConfig(optimizer="sgd", learning_rate=0.2, max_steps=1500, check_every=500)
    result = project(landscape, theta0[None].astype(np.float32), 0.0, config, seed=0,
                     normals=normal[None].astype(np.float32))
    np.testing.assert_allclose(result.thetas[0], constrained, atol=2e-4)
    assert result.levels[0] > problem["minimum"]  # the plane misses the global minimiser


def test_same_seed_same_result_full_batch(problem):
    landscape = problem["landscape"]
    config = ProjectionConfig(learning_rate=0.05, max_steps=300)
    runs = [project(landscape, _starts(2), problem["minimum"] + 0.1, config, seed=s) for s in (1, 1, 2)]
    np.testing.assert_array_equal(runs[0].thetas, runs[1].thetas)
    np.testing.assert_array_equal(runs[0].steps, runs[1].steps)
    # full batch: the seed only draws mini-batches, so it changes nothing
    np.testing.assert_array_equal(runs[0].thetas, runs[2].thetas)


def test_batch_size_at_least_n_is_full_batch(problem):
    landscape = problem["landscape"]
    base = dict(learning_rate=0.05, max_steps=100)
    full = project(landscape, _starts(2), 0.0, ProjectionConfig(**base), seed=0)
    big = project(landscape, _starts(2), 0.0, ProjectionConfig(batch_size=N, **base), seed=5)
    np.testing.assert_array_equal(full.thetas, big.thetas)


def test_mini_batches_are_reproducible_and_seeded(problem):
    landscape = problem["landscape"]
    config = ProjectionConfig(learning_rate=0.05, max_steps=200, batch_size=16)
    target = problem["minimum"] * 0.5  # unreachable: every bead runs its full budget
    runs = [project(landscape, _starts(2), target, config, seed=s) for s in (3, 3, 4)]
    np.testing.assert_array_equal(runs[0].thetas, runs[1].thetas)
    np.testing.assert_array_equal(runs[0].levels, runs[1].levels)
    assert not np.allclose(runs[0].thetas, runs[2].thetas, rtol=1e-4, atol=1e-5)
    # both runs still descend: the mini-batch gradient is an unbiased estimate of grad E
    assert np.all(runs[2].levels < landscape.levels(_starts(2)) / 5)


def test_one_mini_batch_sgd_step_uses_the_seeded_indices(problem):
    """Indices are drawn as numpy.random.default_rng(seed).integers(0, n, (steps, batch))."""
    landscape = problem["landscape"]
    theta = _starts(1, seed=8)[0]
    lr, batch, seed = 0.05, 16, 123
    config = ProjectionConfig(optimizer="sgd", learning_rate=lr, max_steps=1, check_every=1,
                              batch_size=batch)
    result = project(landscape, theta[None], 0.0, config, seed=seed)
    rows = np.random.default_rng(seed).integers(0, N, size=(1, batch), dtype=np.int32)[0]
    expected = theta - lr * _gradient(problem, theta, rows)
    np.testing.assert_allclose(result.thetas[0], expected, rtol=1e-5, atol=1e-6)
    full_step = theta - lr * _gradient(problem, theta)
    assert not np.allclose(result.thetas[0], full_step, rtol=1e-4)


def test_on_check_sees_every_level_check(problem):
    landscape = problem["landscape"]
    seen = []
    config = ProjectionConfig(learning_rate=0.05, max_steps=130, check_every=50)
    result = project(landscape, _starts(2), 0.0, config, seed=0,
                     on_check=lambda levels, steps: seen.append((levels.copy(), steps.copy())))
    assert [list(s) for _, s in seen] == [[50, 50], [100, 100], [130, 130]]
    np.testing.assert_array_equal(seen[-1][0], result.levels)
    assert np.all(np.diff([lv[0] for lv, _ in seen]) < 0)  # descending on a convex problem


def test_non_finite_start_is_left_alone(problem):
    landscape = problem["landscape"]
    starts = _starts(2)
    starts[0, 0] = np.nan
    result = project(landscape, starts, problem["minimum"] + 0.1,
                     ProjectionConfig(learning_rate=0.05, max_steps=2000), seed=0)
    assert not result.reached[0] and result.steps[0] == 0
    assert math.isnan(result.levels[0])
    assert result.reached[1]


def test_projection_config_validation():
    for bad in (dict(optimizer="rmsprop"), dict(learning_rate=-1.0), dict(max_steps=0),
                dict(check_every=0), dict(batch_size=0)):
        with pytest.raises(UserError):
            ProjectionConfig(**bad).validate()
    ProjectionConfig(optimizer="sgd", batch_size=1).validate()
