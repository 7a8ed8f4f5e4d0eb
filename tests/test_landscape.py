"""Landscape: E(theta), its gradient and the level functions agree with Keras itself.

Every number is checked against `model.evaluate` (or a tf.GradientTape on the model's own
variables) on the same split; the user's model must come out of all of it unchanged.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import DIGITS_KINDS

from keras_landscape.data.specs import Dataset, load_data
from keras_landscape.engine.landscape import Landscape
from keras_landscape.errors import UserError
from keras_landscape.models.loading import load_model

RTOL = 1e-5


def _keras_evaluate(model, x, y):
    """model.evaluate as a dict {loss, <metrics>} on the whole split in one batch."""
    return model.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)


def _tape_gradient(model, x, y):
    """d(compiled loss + model.losses)/d(trainable variables), flattened in theta order."""
    loss_fn = keras.losses.get(model.loss) if isinstance(model.loss, str) else model.loss
    with tf.GradientTape() as tape:
        y_pred = model(x, training=False)
        value = tf.reduce_mean(loss_fn(y, y_pred))  # a loss *function* is per sample
        if model.losses:
            value = value + tf.add_n(model.losses)
    grads = tape.gradient(value, model.trainable_variables)
    return float(value), np.concatenate([tf.convert_to_tensor(g).numpy().ravel() for g in grads])


@pytest.fixture(scope="module")
def landscapes(digits_data, digits_classifier):
    """One model and two Landscapes (eval_batch_size 7 and 1024) per digits model kind."""
    built = {}
    for kind in DIGITS_KINDS:
        model = digits_classifier(kind)
        built[kind] = (
            model,
            Landscape(model, digits_data, eval_batch_size=7),
            Landscape(model, digits_data),
        )
    return built


@pytest.mark.parametrize("kind", DIGITS_KINDS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_energy_equals_keras_evaluate(kind, split, landscapes):
    model, small_batches, one_batch = landscapes[kind]
    x, y = one_batch.dataset.split(split)  # adapted to the model: reshaped / one-hot
    expected = _keras_evaluate(model, x, y)["loss"]
    theta = one_batch.initial_theta()
    # 1437 and 360 samples are not multiples of 7: the padded last batch must be masked out.
    assert len(x) % 7 != 0
    assert small_batches.loss(theta, split) == pytest.approx(expected, rel=RTOL)
    assert one_batch.loss(theta, split) == pytest.approx(expected, rel=RTOL)
    assert small_batches.loss(theta, split) == pytest.approx(one_batch.loss(theta, split), rel=1e-6)
    # level_fn='loss' on the evaluation split (test) is E itself.
    if split == "test":
        assert one_batch.split == "test"
        assert one_batch.level(theta) == pytest.approx(expected, rel=RTOL)


def test_energy_includes_the_kernel_regularizer(landscapes, digits_data):
    model, landscape, _ = landscapes["dense"]
    theta = landscape.initial_theta()
    kernel = model.layers[0].kernel.numpy()
    penalty = 0.01 * float(np.sum(kernel.astype(np.float64) ** 2))
    assert penalty > 0.01  # large enough to matter at the tolerance used
    logits = model(digits_data.x_train, training=False)
    bare = float(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)(digits_data.y_train, logits)
    )
    assert landscape.loss(theta, "train") == pytest.approx(bare + penalty, rel=RTOL)


def test_energy_follows_theta_not_the_model(landscapes, digits_data):
    """E(theta) uses the theta given: theta = 0 makes logits 0, so E = log(10) + 0 penalty."""
    model, landscape, _ = landscapes["dense"]
    zero = np.zeros(landscape.size, np.float32)
    assert landscape.loss(zero, "train") == pytest.approx(math.log(10), rel=1e-6)
    assert landscape.evaluate(zero).loss == pytest.approx(math.log(10), rel=1e-6)


@pytest.mark.parametrize("kind", DIGITS_KINDS)
def test_gradient_equals_gradient_tape(kind, landscapes):
    model, small_batches, one_batch = landscapes[kind]
    x, y = one_batch.dataset.split("train")
    expected_value, expected_grad = _tape_gradient(model, x, y)
    theta = one_batch.initial_theta()
    scale = float(np.max(np.abs(expected_grad)))
    assert scale > 1e-3
    for landscape in (small_batches, one_batch):
        value, grad = landscape.loss_and_grad(theta)
        assert grad.dtype == np.float32 and grad.shape == (landscape.size,)
        assert value == pytest.approx(expected_value, rel=RTOL)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-5 * scale)


def test_regularizer_term_of_energy_and_gradient(landscapes, digits_data):
    """With and without the L2(0.01) kernel regularizer, E differs by 0.01 ||W||^2 and
    grad E by 0.02 W on the regularised kernel's slice of theta, 0 elsewhere."""
    model, landscape, _ = landscapes["dense"]
    plain = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(10)]
    )
    plain.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    unregularised = Landscape(plain, digits_data, eval_batch_size=7)
    rng = np.random.default_rng(3)
    theta = landscape.initial_theta() + 0.1 * rng.standard_normal(landscape.size).astype(np.float32)
    kernel = theta[: 64 * 6].astype(np.float64)
    value, grad = landscape.loss_and_grad(theta)
    plain_value, plain_grad = unregularised.loss_and_grad(theta)
    assert value - plain_value == pytest.approx(0.01 * np.sum(kernel**2), rel=1e-4)
    difference = grad.astype(np.float64) - plain_grad
    np.testing.assert_allclose(difference[: 64 * 6], 0.02 * kernel, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(difference[64 * 6 :], 0.0, atol=1e-6)


@pytest.mark.parametrize("kind", ["dense", "conv", "bn_dropout"])
def test_evaluate_many_equals_a_loop_of_evaluate(kind, landscapes):
    _, landscape, _ = landscapes[kind]
    theta = landscape.initial_theta()
    rng = np.random.default_rng(1)
    thetas = np.stack(
        [theta, 0.5 * theta, theta + 0.05 * rng.standard_normal(theta.shape).astype(np.float32)]
    )
    for split in ("train", "test"):
        many = landscape.evaluate_many(thetas, split)
        assert len(many) == 3
        for row, single in zip(many, (landscape.evaluate(t, split) for t in thetas)):
            assert row.loss == pytest.approx(single.loss, rel=1e-6)
            assert row.level == pytest.approx(single.level, rel=1e-6)
        assert many[0].loss != pytest.approx(many[1].loss, rel=1e-3)  # rows really differ
    # The path view: BatchNorm statistics re-estimated at each theta (bn_stats=recompute).
    states = landscape.recompute_states(thetas)
    np.testing.assert_allclose(
        landscape.levels(thetas),
        [landscape.level(t, s) for t, s in zip(thetas, states)],
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="thetas must have shape"):
        landscape.evaluate_many(theta)


def test_evaluation_stacks_are_split_to_fit_the_activation_budget(monkeypatch, digits_data):
    """A budget that fits two thetas: five thetas take three calls and give the same values."""
    import keras

    from keras_landscape.engine import stacked
    from keras_landscape.engine import stacks as stacks_module
    from keras_landscape.engine.landscape import Landscape

    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(7, activation="relu"), keras.layers.Dense(10)]
    )
    elements = stacked.activation_elements(model, (64,))
    assert elements == 7 + 10  # every layer's output per sample (the input is not counted)
    eval_batch = 100
    monkeypatch.setattr(stacks_module, "STACK_ACTIVATION_BYTES", 4 * eval_batch * elements * 3)
    landscape = Landscape(
        model,
        digits_data,
        loss="sparse_categorical_crossentropy:from_logits=true",
        eval_batch_size=eval_batch,
    )
    assert landscape.max_stack == 2
    theta = landscape.initial_theta()
    thetas = np.stack([theta * (1.0 - 0.1 * i) for i in range(5)])
    calls = []
    evaluator = landscape._evaluator  # the part that evaluates stacks (engine/evaluation.py)
    original = evaluator.stacked_sums
    monkeypatch.setattr(
        evaluator,
        "stacked_sums",
        lambda stack, *rest: calls.append(len(stack)) or original(stack, *rest),
    )
    levels = landscape.levels(thetas)
    batches = len(evaluator.batches[landscape.split].batches)
    assert calls == [2] * batches + [2] * batches + [1] * batches
    np.testing.assert_allclose(levels, [landscape.level(t) for t in thetas], rtol=1e-6)


def _train_briefly(model, landscape):
    x, y = landscape.dataset.split("train")
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss=model.loss, metrics=["accuracy"])
    model.fit(x, y, epochs=3, batch_size=128, verbose=0)


@pytest.mark.parametrize("kind", ["dense", "functional"])
def test_error_level_is_100_minus_accuracy(kind, digits_data, digits_classifier):
    """Sparse labels (dense) and one-hot targets (functional, categorical_crossentropy)."""
    model = digits_classifier(kind, seed=5)
    landscape = Landscape(model, digits_data, level_fn="error", eval_batch_size=50)
    _train_briefly(model, landscape)
    theta = landscape.theta_of(model)
    for split in ("train", "test"):
        x, y = landscape.dataset.split(split)
        accuracy = _keras_evaluate(model, x, y)["accuracy"]
        assert 0.3 < accuracy < 1.0  # not degenerate: some right, some wrong
        evaluation = landscape.evaluate(theta, split)
        assert evaluation.level == pytest.approx(100 * (1 - accuracy), abs=1e-4)
        # the loss is still the training loss, not the error
        assert evaluation.loss == pytest.approx(_keras_evaluate(model, x, y)["loss"], rel=RTOL)


def test_error_level_with_one_sigmoid_output(tmp_path, rng):
    x = rng.standard_normal((230, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.standard_normal(230) > 0).astype(np.int64)
    np.savez(
        tmp_path / "binary.npz", x_train=x[:170], y_train=y[:170], x_test=x[170:], y_test=y[170:]
    )
    data = load_data(f"npz:{tmp_path / 'binary.npz'}")
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", metrics=["binary_accuracy"])
    model.layers[0].kernel.assign(np.array([[0.3], [-0.2], [0.9]], np.float32))
    landscape = Landscape(model, data, level_fn="error", eval_batch_size=32)
    x_test, y_test = landscape.dataset.split("test")
    result = _keras_evaluate(model, x_test, y_test)
    assert 0.1 < result["binary_accuracy"] < 0.95
    evaluation = landscape.evaluate(landscape.initial_theta())
    assert evaluation.level == pytest.approx(100 * (1 - result["binary_accuracy"]), abs=1e-4)
    assert evaluation.loss == pytest.approx(result["loss"], rel=RTOL)


def _token_data(rng, vocabulary=12, steps=6):
    x = rng.integers(0, vocabulary, size=(53, steps)).astype(np.int32)
    y = np.roll(x, -1, axis=1)
    return Dataset("tokens", x[:40], y[:40], x[40:], y[40:], "sequence", vocabulary, "tokens")


def _lstm_language_model(vocabulary=12, steps=6):
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((steps,), dtype="int32"),
            keras.layers.Embedding(vocabulary, 4),
            keras.layers.LSTM(5, return_sequences=True),
            keras.layers.Dense(vocabulary),
        ]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_lstm_energy_gradient_and_perplexity(rng, weights_unchanged):
    data = _token_data(rng)
    model = _lstm_language_model()
    unchanged = weights_unchanged(model)
    landscape = Landscape(model, data, level_fn="perplexity", eval_batch_size=7)
    theta = landscape.initial_theta()
    for split in ("train", "test"):
        x, y = data.split(split)
        crossentropy = _keras_evaluate(model, x, y)["loss"]
        evaluation = landscape.evaluate(theta, split)
        assert evaluation.loss == pytest.approx(crossentropy, rel=RTOL)
        assert evaluation.level == pytest.approx(math.exp(crossentropy), rel=RTOL)
    value, grad = landscape.loss_and_grad(theta)
    expected_value, expected_grad = _tape_gradient(model, *data.split("train"))
    assert value == pytest.approx(expected_value, rel=RTOL)
    np.testing.assert_allclose(
        grad, expected_grad, rtol=1e-4, atol=1e-5 * np.max(np.abs(expected_grad))
    )
    many = landscape.evaluate_many(np.stack([theta, 0.9 * theta]))
    assert many[0].level == pytest.approx(landscape.level(theta), rel=1e-6)
    assert many[1].level == pytest.approx(landscape.level(0.9 * theta), rel=1e-6)
    unchanged()


def test_named_metric_level_equals_keras_metric():
    """The paper's regression level: mean absolute error of a 1-4-4-1 sigmoid MLP on cubic."""
    data = load_data("cubic:n=200")
    keras.utils.set_random_seed(6)
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(4, activation="sigmoid"),
            keras.layers.Dense(4, activation="sigmoid"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(loss="mean_squared_error", metrics=["mean_absolute_error"])
    landscape = Landscape(model, data, level_fn="mean_absolute_error", eval_batch_size=7)
    assert landscape.split == "test" and len(data.x_test) == 40
    theta = landscape.initial_theta()
    for split in ("train", "test"):
        x, y = data.split(split)
        result = _keras_evaluate(model, x, y)
        evaluation = landscape.evaluate(theta, split)
        assert evaluation.loss == pytest.approx(result["loss"], rel=RTOL)
        assert evaluation.level == pytest.approx(result["mean_absolute_error"], rel=RTOL)
        direct = float(np.mean(np.abs(model.predict(x, verbose=0) - y)))
        assert evaluation.level == pytest.approx(direct, rel=1e-5)
    assert landscape.objective.loss_name == "mean_squared_error"
    assert landscape.describe()["level_fn"] == "mean_absolute_error"


def test_user_model_is_never_changed(digits_data, digits_classifier, weights_unchanged):
    model = digits_classifier("bn_dropout", seed=7)
    unchanged = weights_unchanged(model)
    landscape = Landscape(model, digits_data, level_fn="error", eval_batch_size=100)
    theta = landscape.initial_theta()
    other = np.full_like(theta, 0.25)
    landscape.evaluate(other)
    landscape.loss(other, "train")
    landscape.loss_and_grad(other)
    landscape.evaluate_many(np.stack([theta, other]))
    landscape.levels(np.stack([other]))
    unchanged()
    np.testing.assert_array_equal(landscape.theta_of(model), theta)


def test_loss_comes_from_the_compile_config(landscapes):
    _, landscape, _ = landscapes["dense"]
    assert landscape.objective.loss_name == "sparse_categorical_crossentropy"
    assert landscape.objective.loss_config["from_logits"] is True
    _, functional, _ = landscapes["functional"]
    assert functional.objective.loss_name == "categorical_crossentropy"
    # categorical_crossentropy takes one-hot targets: the data were encoded for it
    assert functional.dataset.y_train.shape == (1437, 10)


def test_explicit_loss_overrides_the_compiled_one(landscapes, digits_data):
    model, landscape, _ = landscapes["dense"]
    theta = landscape.initial_theta()
    # from_logits=false on logits gives another value than the compiled (from_logits) loss
    other = Landscape(model, digits_data, loss="sparse_categorical_crossentropy:from_logits=true")
    assert other.loss(theta, "test") == pytest.approx(landscape.loss(theta, "test"), rel=1e-6)
    with pytest.raises(UserError, match="Unknown loss 'no_such_loss'"):
        Landscape(model, digits_data, loss="no_such_loss")


def test_model_saved_without_compile_needs_a_loss(tmp_path, digits_data):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.save(tmp_path / "uncompiled.keras")
    loaded = load_model(tmp_path / "uncompiled.keras")
    with pytest.raises(UserError, match="saved without a compiled loss.*--loss"):
        Landscape(loaded, digits_data)
    landscape = Landscape(
        loaded, digits_data, loss="sparse_categorical_crossentropy:from_logits=true"
    )
    x, y = digits_data.split("test")
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert landscape.level(landscape.initial_theta()) == pytest.approx(
        _keras_evaluate(model, x, y)["loss"], rel=RTOL
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"level_fn": "no_such_metric"}, "Unknown level function 'no_such_metric'"),
        ({"level_fn": "perplexity", "loss": "mean_squared_error"}, "perplexity is exp"),
        ({"split": "valid"}, "Unknown split 'valid'"),
    ],
)
def test_bad_settings_are_user_errors(kwargs, message, digits_data, digits_classifier):
    with pytest.raises(UserError, match=message):
        Landscape(digits_classifier("dense"), digits_data, **kwargs)


def test_data_without_test_split_evaluates_on_train(digits_classifier, digits_data):
    import dataclasses

    train_only = dataclasses.replace(digits_data, x_test=None, y_test=None)
    landscape = Landscape(digits_classifier("dense"), train_only)
    assert landscape.split == "train"
    with pytest.raises(UserError, match="no 'test' split"):
        Landscape(digits_classifier("dense"), train_only, split="test")


def test_train_split_landscape_can_still_evaluate_the_test_split(digits_data, digits_classifier):
    model = digits_classifier("dense")
    landscape = Landscape(model, digits_data, split="train")
    x, y = digits_data.split("test")
    assert landscape.loss(landscape.initial_theta(), "test") == pytest.approx(
        _keras_evaluate(model, x, y)["loss"], rel=RTOL
    )


def test_wrong_input_shape_is_a_user_error(digits_data):
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(10)])
    model.compile(loss="sparse_categorical_crossentropy")
    with pytest.raises(UserError, match=r"per-sample shape \(64,\), but the model expects \(5,\)"):
        Landscape(model, digits_data)


class SubclassedWithoutTraining(keras.Model):
    """The Keras guide's subclassing pattern: call(inputs) with no `training` argument."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(5, activation="tanh")
        self.out = keras.layers.Dense(10)

    def call(self, inputs):
        return self.out(self.hidden(inputs))


def test_subclassed_model_without_training_argument(digits_data):
    keras.utils.set_random_seed(0)
    model = SubclassedWithoutTraining(name="plain_subclassed")
    model(np.zeros((1, 64), np.float32))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = digits_data.split("test")
    expected = _keras_evaluate(model, x, y)["loss"]  # Keras itself runs this model
    landscape = Landscape(model, digits_data)
    assert landscape.level(landscape.initial_theta()) == pytest.approx(expected, rel=RTOL)


def test_xla_auto_is_off_for_convolutions_on_cpu_and_on_for_dense():
    from keras_landscape.engine.landscape import resolve_xla

    conv = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(2, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    assert resolve_xla("auto", conv) is False
    assert resolve_xla("auto", dense) is True
    assert resolve_xla(True, conv) is True and resolve_xla(False, dense) is False


def test_loss_name_with_options_keeps_its_name_and_allows_perplexity():
    from keras_landscape.engine.objectives import resolve_objective

    model = keras.Sequential(
        [keras.Input((3,), dtype="int32"), keras.layers.Embedding(5, 2), keras.layers.Dense(5)]
    )
    resolved = resolve_objective(
        model, "sparse_categorical_crossentropy:from_logits=true", "perplexity"
    )
    assert resolved.loss_name == "sparse_categorical_crossentropy"
    assert resolved.loss_config.get("from_logits") is True
    y = np.array([[1, 2, 3]])
    logits = np.random.default_rng(0).normal(size=(1, 3, 5)).astype("float32")
    expected = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    np.testing.assert_allclose(resolved.objective.loss(y, logits), expected, rtol=1e-6)
