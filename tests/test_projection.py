"""Projection onto a sublevel set, checked on linear least squares where every step is known.

E(theta) = mean((X theta - y)^2) for a Dense(1) model (theta = kernel then bias), so
grad E = 2/n X^T (X theta - y) and the optimum is the least-squares solution: SGD, momentum
and Adam trajectories (as Keras's optimizers define them), a mini-batch step on the drawn
indices and the minimiser over a hyperplane can all be computed by hand.
"""

import math
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_landscape.data.specs import load_data
from keras_landscape.engine import backend
from keras_landscape.engine.kernels import optimizer_spec, padded_count
from keras_landscape.engine.landscape import Landscape
from keras_landscape.engine.projection import ProjectionConfig, project
from keras_landscape.errors import UserError

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
    return {
        "landscape": landscape,
        "design": design,
        "y": y.astype(np.float64),
        "optimum": optimum,
        "minimum": minimum,
        "model": model,
        "data": f"npz:{path}",
    }


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
    np.testing.assert_allclose(
        result.levels, [_energy(problem, t) for t in result.thetas], rtol=1e-5
    )
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
    np.testing.assert_allclose(
        result.thetas[0], theta - lr * _gradient(problem, theta), rtol=1e-5, atol=1e-6
    )
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


def test_one_adam_step_is_keras_adams(problem):
    """First Keras Adam step: m = (1 - b1) g, v = (1 - b2) g^2 and alpha = lr sqrt(1 - b2) /
    (1 - b1), so the step is lr g / (|g| + epsilon / sqrt(1 - b2)): epsilon sits on the
    uncorrected root. A large epsilon tells it from epsilon on the corrected root (optax),
    lr g / (|g| + epsilon)."""
    landscape = problem["landscape"]
    theta = _starts(1, seed=3)[0]
    lr, epsilon = 0.01, 0.5
    config = ProjectionConfig(learning_rate=lr, epsilon=epsilon, max_steps=1, check_every=1)
    result = project(landscape, theta[None], 0.0, config, seed=0)
    g = _gradient(problem, theta)
    expected = theta - lr * g / (np.abs(g) + epsilon / math.sqrt(1 - config.beta_2))
    np.testing.assert_allclose(result.thetas[0], expected, rtol=1e-5, atol=1e-6)
    optax = theta - lr * g / (np.abs(g) + epsilon)
    assert np.abs(optax - expected).max() > 100 * np.abs(result.thetas[0] - expected).max()


def _adam_trajectory(problem, theta, steps, lr, beta_1, beta_2, epsilon):
    """Keras's Adam by its formula, float64: theta after 1..steps full-batch steps."""
    theta = np.asarray(theta, np.float64)
    m, v, path = np.zeros_like(theta), np.zeros_like(theta), []
    for t in range(1, steps + 1):
        g = _gradient(problem, theta)
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        alpha = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        theta = theta - alpha * m / (np.sqrt(v) + epsilon)
        path.append(theta)
    return np.array(path)


def test_adam_beads_follow_keras_adam_step_for_step(problem):
    """K = 3 beads (a stack of 4 with one padded row) after each of 6 steps equal Keras's
    Adam applied by hand to a keras.Variable per bead, and its formula."""
    landscape = problem["landscape"]
    starts = _starts(3, seed=11)
    lr, beta_1, beta_2, epsilon, steps = 0.05, 0.8, 0.99, 0.05, 6
    settings = dict(learning_rate=lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
    ours = np.array(
        [
            project(
                landscape,
                starts,
                0.0,
                ProjectionConfig(max_steps=s, check_every=1, **settings),
                seed=0,
            ).thetas
            for s in range(1, steps + 1)
        ]
    )  # (steps, K, P)
    for k in range(3):
        optimizer = keras.optimizers.Adam(**settings)
        variable = keras.Variable(starts[k])
        by_hand = []
        for _ in range(steps):
            grad = _gradient(problem, np.asarray(variable.numpy(), np.float64))
            optimizer.apply([keras.ops.convert_to_tensor(grad.astype(np.float32))], [variable])
            by_hand.append(np.asarray(variable.numpy(), np.float64))
        np.testing.assert_allclose(ours[:, k], by_hand, rtol=2e-5, atol=2e-6)
        formula = _adam_trajectory(problem, starts[k], steps, lr, beta_1, beta_2, epsilon)
        np.testing.assert_allclose(ours[:, k], formula, rtol=2e-5, atol=2e-6)


def test_sgd_with_momentum_follows_the_keras_momentum_formula(problem):
    """keras SGD(momentum=mu): velocity = mu velocity - lr g, theta += velocity; run in
    chunks of 2 steps, so the velocity must carry from one compiled loop to the next."""
    landscape = problem["landscape"]
    starts = _starts(2, seed=12)
    lr, mu, steps = 0.05, 0.9, 7
    config = ProjectionConfig(
        optimizer="sgd",
        optimizer_options="momentum=0.9",
        learning_rate=lr,
        max_steps=steps,
        check_every=2,
    )
    result = project(landscape, starts, 0.0, config, seed=0)
    plain = project(
        landscape,
        starts,
        0.0,
        ProjectionConfig(optimizer="sgd", learning_rate=lr, max_steps=steps, check_every=2),
        seed=0,
    )
    for k in range(2):
        theta, velocity = starts[k].astype(np.float64), np.zeros(D + 1)
        for _ in range(steps):
            velocity = mu * velocity - lr * _gradient(problem, theta)
            theta = theta + velocity
        np.testing.assert_allclose(result.thetas[k], theta, rtol=1e-5, atol=1e-5)
        assert not np.allclose(plain.thetas[k], theta, rtol=1e-3)  # momentum mattered
    np.testing.assert_array_equal(result.steps, [steps, steps])


@pytest.mark.parametrize(
    "name, options",
    [
        ("adamw", "weight_decay=0.05"),
        ("rmsprop", ""),
        ("nadam", ""),
        ("RMSprop", "rho=0.8,centered=true"),
    ],
)
def test_other_keras_optimizers_descend(problem, name, options):
    landscape = problem["landscape"]
    starts = _starts(2, seed=13)
    config = ProjectionConfig(
        optimizer=name,
        optimizer_options=options,
        learning_rate=0.05,
        max_steps=300,
        check_every=100,
    )
    result = project(landscape, starts, 0.0, config, seed=0)
    start_levels = landscape.levels(starts)
    assert np.all(np.isfinite(result.levels))
    assert np.all(result.levels < start_levels / 5)
    np.testing.assert_array_equal(result.steps, [300, 300])


def test_one_adamw_step_decays_the_weights_first(problem):
    """keras AdamW: theta (1 - lr wd), then the Adam step of the gradient at theta."""
    landscape = problem["landscape"]
    theta = _starts(1, seed=14)[0].astype(np.float64)
    lr, wd, epsilon = 0.05, 0.5, 0.3
    config = ProjectionConfig(
        optimizer="adamw",
        optimizer_options=f"weight_decay={wd}",
        learning_rate=lr,
        epsilon=epsilon,
        max_steps=1,
        check_every=1,
    )
    result = project(landscape, theta[None].astype(np.float32), 0.0, config, seed=0)
    g = _gradient(problem, theta)
    adam = lr * g / (np.abs(g) + epsilon / math.sqrt(1 - config.beta_2))
    np.testing.assert_allclose(result.thetas[0], theta * (1 - lr * wd) - adam, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(optimizer="adamm"), "Unknown optimizer 'adamm'"),
        (dict(optimizer="adafactor"), "cannot train beads"),
        (dict(optimizer="lossscaleoptimizer"), "cannot train beads"),
        (dict(optimizer="sgd", optimizer_options="momentun=0.9"), "does not accept"),
        (dict(optimizer="sgd", optimizer_options="momentum"), "Malformed optimizer_options"),
        (dict(optimizer="adam", optimizer_options="clipnorm=1.0"), "beads would move each other"),
        (dict(optimizer="adam", optimizer_options="beta_1=0.5"), "set it with the `beta_1` option"),
    ],
)
def test_bad_optimizers_are_user_errors_before_any_step(problem, settings, message):
    config = ProjectionConfig(**settings)
    with pytest.raises(UserError, match=message):
        config.validate()
    with pytest.raises(UserError, match=message):
        project(problem["landscape"], _starts(1), 0.0, config, seed=0)


def test_common_optimizer_names_validate_without_keras():
    """Listing and checking probe options must not load a framework (nor fail without it)."""
    code = (
        "import sys; sys.modules['keras'] = None\n"
        "from keras_landscape.engine.options import ProjectionConfig\n"
        "from keras_landscape.errors import UserError\n"
        "for name in ('adam', 'SGD', 'adamw', 'rmsprop', 'lion'):\n"
        "    ProjectionConfig(optimizer=name).validate()\n"
        "for bad in (dict(optimizer='muon'), dict(learning_rate=0.0)):\n"
        "    try:\n"
        "        ProjectionConfig(**bad).validate()\n"
        "    except UserError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit(f'{bad} passed')\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-2000:]


@pytest.mark.parametrize("name, options", [("adam", ""), ("sgd", "momentum=0.9")])
def test_a_frozen_row_keeps_its_parameters_and_optimizer_state(problem, name, options):
    """One compiled chunk with bead 1 inactive: its parameters and its row of every (width,
    P) optimizer variable come back unchanged, while bead 0's move."""
    landscape = problem["landscape"]
    config = ProjectionConfig(optimizer=name, optimizer_options=options, learning_rate=0.05)
    width = padded_count(2)
    kernel = landscape.projection_kernel(True, optimizer_spec(config), width)
    starts = _starts(width, seed=15)
    ops = keras.ops
    slots = kernel.initial_slots(config.learning_rate)
    # Two chunks: in the first both beads move, so that bead 1 has momentum to lose.
    x, y = landscape.training_tensors()
    common = (
        ops.convert_to_tensor(np.zeros((width, D + 1), np.float32)),
        ops.convert_to_tensor(landscape.fill_states(None, width)),
        landscape.non_trainable,
        x,
        y,
        ops.convert_to_tensor(np.zeros((5, 1), np.int32)),
    )
    active = ops.convert_to_tensor(np.ones(width, np.float32))
    thetas, slots, _ = kernel(
        ops.convert_to_tensor(starts), slots, active, *common, ops.convert_to_tensor(np.int32(0))
    )
    before = [np.asarray(s) for s in slots]
    gate = np.ones(width, np.float32)
    gate[1] = 0.0
    after_thetas, after, _ = kernel(
        thetas, slots, ops.convert_to_tensor(gate), *common, ops.convert_to_tensor(np.int32(5))
    )
    after = [np.asarray(s) for s in after]
    np.testing.assert_array_equal(np.asarray(after_thetas)[1], np.asarray(thetas)[1])
    assert np.abs(np.asarray(after_thetas)[0] - np.asarray(thetas)[0]).max() > 1e-3
    rows = [i for i, s in enumerate(before) if s.shape == (width, D + 1)]
    assert rows, "the optimizer has per-bead state"
    for i in rows:
        np.testing.assert_array_equal(after[i][1], before[i][1])
        assert np.abs(after[i][0] - before[i][0]).max() > 1e-6


@pytest.mark.parametrize("name, options", [("adam", ""), ("sgd", "momentum=0.9")])
def test_chunks_of_steps_continue_one_another(problem, name, options):
    """3 compiled loops of 50 steps end where one loop of 150 does: the step count and the
    moments carry across loops (restarting Adam's bias correction would move the beads)."""
    landscape = problem["landscape"]
    starts = _starts(3, seed=16)
    base = dict(optimizer=name, optimizer_options=options, learning_rate=0.01, max_steps=150)
    chunked = project(landscape, starts, 0.0, ProjectionConfig(check_every=50, **base), seed=0)
    whole = project(landscape, starts, 0.0, ProjectionConfig(check_every=150, **base), seed=0)
    np.testing.assert_allclose(chunked.thetas, whole.thetas, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(chunked.steps, whole.steps)
    restarted = starts
    for _ in range(3):  # what forgetting the optimizer state between loops would give
        restarted = project(
            landscape,
            restarted,
            0.0,
            ProjectionConfig(check_every=50, **{**base, "max_steps": 50}),
            seed=0,
        ).thetas
    assert np.abs(restarted - whole.thetas).max() > 1e-3


def _precision_setting():
    """The process-wide float32 matmul setting of the backend (TF32 on TF, JAX's default)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.config.experimental.tensor_float_32_execution_enabled()
    import jax

    return jax.config.jax_default_matmul_precision


def test_fast_float32_applies_to_the_landscapes_projections_only(problem, monkeypatch):
    """Constructing a landscape leaves the process setting alone; its projection loop runs
    under its own setting (TF32 allowed only with fast_float32), restored afterwards."""
    before = _precision_setting()
    fast = Landscape(problem["model"], load_data(problem["data"]), fast_float32=True)
    exact = Landscape(problem["model"], load_data(problem["data"]), fast_float32=False)
    assert _precision_setting() == before
    seen = []
    original = backend.compile_function

    def spy(fn, **kwargs):
        compiled = original(fn, **kwargs)

        def call(*args):
            seen.append(_precision_setting())
            return compiled(*args)

        return call

    monkeypatch.setattr(backend, "compile_function", spy)
    config = ProjectionConfig(learning_rate=0.05, max_steps=2, check_every=1)
    for landscape in (fast, exact, fast):
        project(landscape, _starts(1), 0.0, config, seed=0)
        assert _precision_setting() == before
    with backend.float32_precision(True):
        on = _precision_setting()
    with backend.exact_float32():
        off = _precision_setting()
    assert on != off
    assert seen == [on, on, off, off, on, on]
    assert problem["landscape"].fast_float32 is False  # the module's landscape: untouched


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
    result = project(
        landscape,
        starts,
        problem["minimum"] + 0.5,
        config,
        seed=0,
        normals=normals.astype(np.float32),
    )
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
    result = project(
        landscape, theta[None], 0.0, config, seed=0, normals=normal[None].astype(np.float32)
    )
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
    result = project(
        landscape,
        theta0[None].astype(np.float32),
        0.0,
        config,
        seed=0,
        normals=normal[None].astype(np.float32),
    )
    np.testing.assert_allclose(result.thetas[0], constrained, atol=2e-4)
    assert result.levels[0] > problem["minimum"]  # the plane misses the global minimiser


def test_same_seed_same_result_full_batch(problem):
    landscape = problem["landscape"]
    config = ProjectionConfig(learning_rate=0.05, max_steps=300)
    runs = [
        project(landscape, _starts(2), problem["minimum"] + 0.1, config, seed=s) for s in (1, 1, 2)
    ]
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
    config = ProjectionConfig(
        optimizer="sgd", learning_rate=lr, max_steps=1, check_every=1, batch_size=batch
    )
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
    result = project(
        landscape,
        _starts(2),
        0.0,
        config,
        seed=0,
        on_check=lambda levels, steps: seen.append((levels.copy(), steps.copy())),
    )
    assert [list(s) for _, s in seen] == [[50, 50], [100, 100], [130, 130]]
    np.testing.assert_array_equal(seen[-1][0], result.levels)
    assert np.all(np.diff([lv[0] for lv, _ in seen]) < 0)  # descending on a convex problem


def test_non_finite_start_is_left_alone(problem):
    landscape = problem["landscape"]
    starts = _starts(2)
    starts[0, 0] = np.nan
    result = project(
        landscape,
        starts,
        problem["minimum"] + 0.1,
        ProjectionConfig(learning_rate=0.05, max_steps=2000),
        seed=0,
    )
    assert not result.reached[0] and result.steps[0] == 0
    assert math.isnan(result.levels[0])
    assert result.reached[1]


def test_projection_config_validation():
    for bad in (
        dict(optimizer="adamm"),
        dict(learning_rate=-1.0),
        dict(max_steps=0),
        dict(check_every=0),
        dict(batch_size=0),
        dict(beta_1=1.0),
    ):
        with pytest.raises(UserError):
            ProjectionConfig(**bad).validate()
    ProjectionConfig(optimizer="sgd", batch_size=1).validate()
    ProjectionConfig(optimizer="rmsprop").validate()
    ProjectionConfig(optimizer="sgd", optimizer_options="momentum=0.9,nesterov=true").validate()
    ProjectionConfig(optimizer="adamw", optimizer_options='{"weight_decay": 0.01}').validate()


def test_power_of_two_parts_cover_the_rows_without_padding():
    from keras_landscape.engine.backend.devices import power_of_two_parts

    def sizes(k, cap):
        return [part.stop - part.start for part in power_of_two_parts(k, cap)]

    assert sizes(100, 256) == [64, 32, 4]
    assert sizes(100, 32) == [32, 32, 32, 4]
    assert sizes(1, 8) == [1] and sizes(0, 8) == []
    for k in range(1, 70):
        parts = power_of_two_parts(k, 16)
        assert parts[0].start == 0 and parts[-1].stop == k
        assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
        assert all(s & (s - 1) == 0 and s <= 16 for s in sizes(k, 16))


@pytest.mark.skipif(backend.name != "tensorflow", reason="AutoGraph is TensorFlow's")
def test_kernels_trace_without_autograph_and_fall_back_to_it(caplog):
    """Kernels are traced without AutoGraph (its source rewriting was most of a first
    call); a function whose Python `if` reads a tensor's value is traced again with it."""
    import tensorflow as tf

    def shapes_only(x):
        total = x
        for _ in range(3):  # Python control flow on Python values: no AutoGraph needed
            total = total + x
        return total

    def reads_a_value(x):
        if tf.reduce_sum(x) > 0.0:
            return x * 2.0
        return -x

    with caplog.at_level("INFO", logger="keras_landscape"):
        plain = backend.compile_function(shapes_only, xla=False, label="plain kernel")
        np.testing.assert_allclose(plain(tf.constant([1.0, 2.0])), [4.0, 8.0])
        gated = backend.compile_function(reads_a_value, xla=True, label="gated kernel")
        np.testing.assert_allclose(gated(tf.constant([1.0, 2.0])), [2.0, 4.0])
        np.testing.assert_allclose(gated(tf.constant([-1.0, -2.0])), [1.0, 2.0])
    assert "gated kernel is traced with AutoGraph" in caplog.text
    assert "plain kernel" not in caplog.text
    assert caplog.text.count("traced with AutoGraph") == 1
