"""BatchNorm and other non-trainable state: every model keeps its own, paths recompute or
interpolate it, and every stored point evaluates in Keras to its stored level."""

import json

import keras
import numpy as np
import pytest
from conftest import run_cli

from keras_landscape.engine import kernels as engine
from keras_landscape.engine.landscape import Landscape
from keras_landscape.engine.params import ParameterLayout
from keras_landscape.engine.state import StateLayout, pooled_moments

LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _bn_cnn(seed: int, steps: int = 40):
    """A digits CNN with BatchNorm after a convolution and a dense layer, trained briefly:
    its moving statistics (momentum 0.9) lag behind its weights, so its own statistics and
    recomputed ones give different numbers."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.Activation("relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(12),
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.Activation("relu"),
            keras.layers.Dense(10),
        ],
        name=f"bn_cnn_{seed}",
    )
    return model


@pytest.fixture(scope="module")
def bn_files(tmp_path_factory, digits_data):
    """Three trained BN CNNs saved as .keras files (different seeds and training lengths)."""
    folder = tmp_path_factory.mktemp("bn_models")
    x, y = digits_data.split("train")
    x = x.reshape(-1, 8, 8, 1)
    paths = []
    for seed, steps in ((0, 40), (1, 25), (2, 60)):
        model = _bn_cnn(seed)
        keras.utils.set_random_seed(seed)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss=LOGITS, metrics=["accuracy"])
        model.fit(x, y, epochs=1, batch_size=len(x) // steps, shuffle=False, verbose=0)
        path = folder / f"bn{seed}.keras"
        model.save(path)
        paths.append(str(path))
    return paths


def _keras_error_and_loss(path, data):
    model = keras.models.load_model(path)
    x, y = data.split("test")
    x_train, y_train = data.split("train")
    _, accuracy = model.evaluate(x.reshape(-1, 8, 8, 1), y, verbose=0, batch_size=4096)
    train_loss, _ = model.evaluate(
        x_train.reshape(-1, 8, 8, 1), y_train, verbose=0, batch_size=4096
    )
    return 100.0 * (1.0 - accuracy), train_loss


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0)])
def test_each_model_is_evaluated_with_its_own_statistics_in_any_order(
    order, bn_files, digits_data, tmp_path
):
    from keras_landscape.experiment.runner import RunSpec, execute
    from keras_landscape.store.hdf5 import Store

    files = [bn_files[i] for i in order]
    spec = RunSpec(models=files, data="digits", level_fn="error", out=str(tmp_path / "s.h5"))
    document = execute(spec)
    rows = document["results"]["evaluate"]["models"]
    for path, row in zip(files, rows):
        error, train_loss = _keras_error_and_loss(path, digits_data)
        assert row["level"] == pytest.approx(error, abs=1e-4), row["model"]
        assert row["loss"] == pytest.approx(train_loss, rel=1e-5), row["model"]
        # Under recompute, what the paths see at the model is reported beside it.
        assert "level_recomputed" in row
    with Store.open(document["store"], "r") as store:
        for path, row in zip(files, rows):
            stored = store.read_model(row["model"])["non_trainable"]
            own = [v.numpy() for v in keras.models.load_model(path).non_trainable_variables]
            for a, b in zip(stored, own):
                np.testing.assert_array_equal(a, b)


def _input_bn_model(subclassed: bool):
    keras.utils.set_random_seed(3)
    if not subclassed:
        return keras.Sequential(
            [keras.Input((64,)), keras.layers.BatchNormalization(), keras.layers.Dense(10)]
        )

    class InputNorm(keras.Model):
        def __init__(self):
            super().__init__()
            self.norm = keras.layers.BatchNormalization()
            self.out = keras.layers.Dense(10)

        def call(self, inputs, training=False):
            return self.out(self.norm(inputs, training=training))

    model = InputNorm()
    model(np.zeros((1, 64), np.float32))
    return model


@pytest.mark.parametrize("subclassed", [False, True], ids=["stacked", "mapped"])
def test_recomputed_statistics_of_input_features_are_the_data_moments(subclassed, digits_data):
    model = _input_bn_model(subclassed)
    model.compile(loss=LOGITS)
    x = digits_data.split("train")[0].astype(np.float64)
    assert len(x) == 1437 == 3 * 479
    # Three batches covering the training set: the pooled moments are the population ones.
    whole = Landscape(model, digits_data, level_fn="error", bn_batches=3, bn_batch_size=479)
    layout = whole.state_layout
    thetas = np.stack([whole.initial_theta()] * 2)
    states = whole.recompute_states(thetas)
    for row in states:
        np.testing.assert_allclose(row[layout.bn_mean], x.mean(0), atol=2e-5)
        np.testing.assert_allclose(row[layout.bn_var], x.var(0), rtol=2e-4, atol=2e-4)
    # The default: 11 batches of 128 (1,408 of 1,437 samples), within the sampling error.
    sampled = Landscape(model, digits_data, level_fn="error")
    row = sampled.recompute_states(thetas[:1])[0]
    assert sampled.statistics_samples == 11 * 128
    bound = 4.0 * np.sqrt(x.var(0) / sampled.statistics_samples) * np.sqrt(29 / 1437) + 1e-5
    assert np.all(np.abs(row[layout.bn_mean] - x.mean(0)) <= bound)


def test_pooled_moments_are_the_moments_of_the_union():
    rng = np.random.default_rng(0)
    batches = rng.normal(2.0, 3.0, size=(5, 40, 3))
    mean, variance = pooled_moments(batches.mean(1), batches.var(1))
    np.testing.assert_allclose(mean, batches.reshape(-1, 3).mean(0))
    np.testing.assert_allclose(variance, batches.reshape(-1, 3).var(0))


def _deep_bn_model():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(7)(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    hidden = keras.layers.Activation("tanh")(hidden)
    hidden = keras.layers.Dense(5)(hidden)
    hidden = keras.layers.BatchNormalization(center=False)(hidden)
    return keras.Model(inputs, keras.layers.Dense(10)(hidden))


def test_batch_moments_match_a_train_mode_forward_by_hand(digits_data):
    """Stacked train-mode moments of several beads equal numpy's train-mode forward."""
    from keras import ops

    model = _deep_bn_model()
    layout, state_layout = ParameterLayout.from_model(model), StateLayout.from_model(model)
    theta0 = layout.theta_of(model)
    rng = np.random.default_rng(1)
    thetas = np.stack([theta0 + 0.2 * rng.normal(size=theta0.shape) for _ in range(3)])
    states = np.stack([state_layout.state_of(model)] * 3)
    x = digits_data.split("train")[0][:50]
    kernel = engine.make_batch_moments(model, layout, state_layout)
    nt = [ops.convert_to_tensor(v.numpy()) for v in model.non_trainable_variables]
    got = np.asarray(
        kernel(
            ops.convert_to_tensor(thetas.astype("float32")),
            ops.convert_to_tensor(states),
            nt,
            ops.convert_to_tensor(x),
        )
    )
    for k, theta in enumerate(thetas):
        w1, b1, g1, be1, w2, b2, g2, w3, b3 = layout.unflatten(theta)
        h = x @ w1 + b1
        m1, v1 = h.mean(0), h.var(0)
        h = np.tanh((h - m1) / np.sqrt(v1 + 1e-3) * g1 + be1)
        h = h @ w2 + b2
        m2, v2 = h.mean(0), h.var(0)
        expected = np.concatenate([m1, v1, m2, v2])
        np.testing.assert_allclose(got[k], expected, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("build", ["cnn", "deep"])
def test_train_mode_stacked_forward_equals_keras_training_calls(build, digits_data):
    from keras import ops

    model = _bn_cnn(4) if build == "cnn" else _deep_bn_model()
    x = digits_data.split("train")[0][:32]
    if build == "cnn":
        x = x.reshape(-1, 8, 8, 1)
    layout, state_layout = ParameterLayout.from_model(model), StateLayout.from_model(model)
    theta0 = layout.theta_of(model)
    rng = np.random.default_rng(2)
    thetas = np.stack([theta0 + 0.2 * rng.normal(size=theta0.shape) for _ in range(3)])
    thetas = thetas.astype("float32")
    states = np.stack([state_layout.state_of(model)] * 3)
    nt = [ops.convert_to_tensor(v.numpy()) for v in model.non_trainable_variables]
    forward = engine.make_stacked_forward(model, layout, state_layout, training=True)
    outputs, _ = forward(
        ops.convert_to_tensor(thetas), ops.convert_to_tensor(states), nt, ops.convert_to_tensor(x)
    )
    for k, theta in enumerate(thetas):
        expected, _ = model.stateless_call(
            [ops.convert_to_tensor(w) for w in layout.unflatten(theta)], nt, x, training=True
        )
        np.testing.assert_allclose(
            np.asarray(outputs[k]), np.asarray(expected), rtol=1e-4, atol=1e-4
        )


@pytest.fixture(scope="module")
def bn_pair(bn_files):
    return bn_files[0], bn_files[2]


@pytest.mark.parametrize(
    "mode", ["recompute", pytest.param("interpolate", marks=(pytest.mark.slow, pytest.mark.ci))]
)
def test_exported_beads_evaluate_in_keras_to_their_stored_level(
    mode, bn_pair, digits_data, tmp_path
):
    from keras_landscape.experiment.runner import RunSpec, execute
    from keras_landscape.models.export import export
    from keras_landscape.store.hdf5 import Store

    out = str(tmp_path / f"{mode}.h5")
    spec = RunSpec(
        models=list(bn_pair),
        data="digits",
        level_fn="error",
        out=out,
        bn_stats=mode,
        probes=["connectivity"],
        options={
            "max_steps": 600,
            "max_depth": 2,
            "points": 8,
            "margin": 0.0,
            "learning_rate": 0.005,
        },
    )
    result = execute(spec)["results"]["connectivity"]
    assert result["beads"] >= 3, result  # the straight line failed: there are beads
    x, y = digits_data.split("test")
    with Store.open(out, "r") as store:
        run = store.run("connectivity")
        order = run.read("pair_0_1/order")
        levels = run.read("pair_0_1/bead_level")
        states = run.read("pair_0_1/bead_state")
        beads = run.read("pair_0_1/beads")
    landscape_model = keras.models.load_model(bn_pair[0])
    state_layout = StateLayout.from_model(landscape_model)
    for index in range(len(order)):
        path = str(tmp_path / f"bead{index}.keras")
        export(out, path, run="connectivity", bead=index)
        exported = keras.models.load_model(path)
        predictions = exported.predict(x.reshape(-1, 8, 8, 1), verbose=0)
        error = 100.0 * float(np.mean(np.argmax(predictions, 1) != y))
        assert error == pytest.approx(levels[order[index]], abs=1e-9), index
    ends = [state_layout.state_of(keras.models.load_model(p)) for p in bn_pair]
    # Beads are trained in train mode: their statistics are estimated at their weights.
    landscape = Landscape(landscape_model, digits_data, level_fn="error")
    np.testing.assert_allclose(
        states[2:], landscape.recompute_states(beads[2:], states[2:]), rtol=1e-4, atol=1e-4
    )
    if mode == "interpolate":
        # The ends keep their own statistics (segments interpolate between beads' states).
        np.testing.assert_array_equal(states[0], ends[0])
        np.testing.assert_array_equal(states[1], ends[1])
    else:
        # The path is one function of theta: its ends use recomputed statistics too.
        np.testing.assert_allclose(
            states[:2], landscape.recompute_states(beads[:2]), rtol=1e-4, atol=1e-4
        )
        assert not np.allclose(states[0], ends[0])


def test_interpolated_statistics_raise_the_aligned_linear_barrier(bn_pair, digits_data):
    """Between two BN nets aligned by weight matching, interpolated statistics do not match
    the interpolated weights' activations (variance collapse); recomputed ones do: the
    linear maximum is higher with 'interpolate'. The ends are the same in both modes when
    each end's statistics are its own recomputed ones."""
    from keras_landscape.models.align import aligned_state, weight_matching
    from keras_landscape.science.barriers import linear_profile

    models = [keras.models.load_model(p) for p in bn_pair]
    profiles = {}
    for mode in ("recompute", "interpolate"):
        landscape = Landscape(models[0], digits_data, level_fn="error", bn_stats=mode)
        thetas = [landscape.theta_of(m) for m in models]
        states = list(landscape.recompute_states(np.stack(thetas)))
        alignment = weight_matching(models[0], *thetas)
        b = (alignment.theta, aligned_state(landscape, states[1], alignment.permutations))
        _, profiles[mode] = linear_profile(landscape, thetas[0], b[0], 10, states[0], b[1])
    np.testing.assert_allclose(profiles["interpolate"][[0, -1]], profiles["recompute"][[0, -1]])
    assert profiles["interpolate"].max() > profiles["recompute"].max()


def test_weight_matching_permutes_the_statistics(bn_pair, digits_data):
    from keras_landscape.models.align import aligned_state, weight_matching
    from keras_landscape.models.loading import model_with_theta

    dense_bn = _deep_bn_model()
    other = keras.models.clone_model(dense_bn)
    rng = np.random.default_rng(4)
    for model in (dense_bn, other):
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
                layer.moving_variance.assign(rng.uniform(0.5, 2, size=layer.moving_variance.shape))
    dense_bn.compile(loss=LOGITS)
    landscape = Landscape(dense_bn, digits_data, level_fn="error")
    theta_a, theta_b = landscape.theta_of(dense_bn), landscape.theta_of(other)
    alignment = weight_matching(dense_bn, theta_a, theta_b)
    assert any(p != list(range(len(p))) for p in alignment.permutations.values())
    state = aligned_state(landscape, landscape.state_of(other), alignment.permutations)
    x = digits_data.split("test")[0]
    values = landscape.state_layout.non_trainable_values(
        state, [v.numpy() for v in other.non_trainable_variables]
    )
    aligned = model_with_theta(dense_bn, alignment.theta, values)
    np.testing.assert_allclose(
        aligned.predict(x, verbose=0), other.predict(x, verbose=0), rtol=1e-4, atol=1e-5
    )
    assert landscape.evaluate(alignment.theta, state=state).level == pytest.approx(
        landscape.evaluate(theta_b, state=landscape.state_of(other)).level
    )


@pytest.mark.slow
@pytest.mark.ci
def test_models_without_batch_norm_are_unaffected(digits_data, digits_classifier):
    from keras_landscape.engine.projection import ProjectionConfig, project

    model = digits_classifier("dense")
    results = {}
    for mode in ("recompute", "interpolate"):
        landscape = Landscape(model, digits_data, level_fn="error", bn_stats=mode)
        assert landscape.state_size == 0 and not landscape.has_batch_norm
        assert not landscape.trains_in_train_mode
        theta = landscape.initial_theta()
        start = np.stack([theta + 0.1])
        config = ProjectionConfig(max_steps=20, check_every=10)
        result = project(landscape, start, 0.0, config, seed=0)
        results[mode] = (landscape.levels(start), result.thetas)
    np.testing.assert_array_equal(results["recompute"][0], results["interpolate"][0])
    np.testing.assert_array_equal(results["recompute"][1], results["interpolate"][1])


def test_cli_takes_bn_stats_and_refuses_unknown_modes(capsys, bn_pair, tmp_path):
    code, out, _ = run_cli(
        capsys,
        "probe",
        *bn_pair,
        "--data",
        "digits",
        "--level-fn",
        "error",
        "--probe",
        "barrier",
        "--bn-stats",
        "interpolate",
        "--set",
        "max_bisections=0",
        "--set",
        "grid=4",
        "--out",
        str(tmp_path / "b.h5"),
        "--json",
    )
    assert code == 0
    document = json.loads(out)
    assert document["results"]["barrier"]["linear_max"] >= max(
        document["results"]["barrier"]["endpoint_levels"]
    )
    code, _, err = run_cli(capsys, "probe", *bn_pair, "--data", "digits", "--bn-stats", "ema")
    assert code == 2 and "ema" in err and "Traceback" not in err


def test_config_validates_bn_stats(tmp_path):
    from keras_landscape.errors import UserError
    from keras_landscape.experiment.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("models: []\ndata: digits\nbn_stats: ema\n")
    with pytest.raises(UserError, match="bn_stats"):
        load_config(str(path))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"bn_stats": "interpolate"}, "bn_stats"),
        ({"level_fn": "loss"}, "level_fn"),
        ({"reverse": True}, "models"),
    ],
)
def test_resume_refuses_other_statistics_settings_or_models(change, message, bn_files, tmp_path):
    from keras_landscape.errors import UserError
    from keras_landscape.experiment.runner import RunSpec, execute

    out = str(tmp_path / "r.h5")
    files = list(bn_files[:2])
    execute(RunSpec(models=files, data="digits", level_fn="error", out=out))
    settings = {"level_fn": "error", "bn_stats": "recompute", **change}
    if settings.pop("reverse", False):
        files = files[::-1]
    with pytest.raises(UserError, match=message):
        execute(RunSpec(models=files, data="digits", out=out, resume=True, **settings))
    # The same settings resume (the evaluate run is reused).
    execute(
        RunSpec(models=list(bn_files[:2]), data="digits", level_fn="error", out=out, resume=True)
    )


def test_a_model_that_cannot_train_its_batch_norm_is_refused_recompute(digits_data):
    class NoTraining(keras.Model):
        def __init__(self):
            super().__init__()
            self.norm = keras.layers.BatchNormalization()
            self.out = keras.layers.Dense(10)

        def call(self, inputs):  # no `training`: BatchNorm can never run in train mode
            return self.out(self.norm(inputs))

    from keras_landscape.errors import UserError

    model = NoTraining()
    model(np.zeros((1, 64), np.float32))
    model.compile(loss=LOGITS)
    with pytest.raises(UserError, match="training=None"):
        Landscape(model, digits_data, level_fn="error")
    landscape = Landscape(model, digits_data, level_fn="error", bn_stats="interpolate")
    assert landscape.has_batch_norm and not landscape.trains_in_train_mode


def test_train_mode_projection_draws_new_dropout_masks_every_step(digits_data):
    """BN + Dropout trains as fit does: the seed state advances, so masks change per step."""
    from keras import ops

    keras.utils.set_random_seed(6)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(12),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10),
        ]
    )
    layout, state_layout = ParameterLayout.from_model(model), StateLayout.from_model(model)
    positions = engine.seed_positions(model)
    assert len(positions) == 1
    forward = engine.make_stacked_forward(model, layout, state_layout, training=True)
    thetas = ops.convert_to_tensor(layout.theta_of(model)[None])
    states = ops.convert_to_tensor(state_layout.state_of(model)[None])
    x = ops.convert_to_tensor(digits_data.x_train[:16])
    nt = [ops.convert_to_tensor(v.numpy()) for v in model.non_trainable_variables]
    first, _ = forward(thetas, states, nt, x)
    again, _ = forward(thetas, states, nt, x)
    advanced = list(nt)
    advanced[positions[0]] = advanced[positions[0]] + ops.cast(1, advanced[positions[0]].dtype)
    other, _ = forward(thetas, states, advanced, x)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))  # seeded: repeatable
    assert not np.allclose(np.asarray(first), np.asarray(other))  # a new step, a new mask
