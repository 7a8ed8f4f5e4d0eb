"""Shared test set-up: one quiet TensorFlow import per session, small seeded models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ------------------------------------------------------------------ tiny models and data
# Keras is imported inside the fixtures so that collecting tests that need no model (store,
# data) does not import TensorFlow.

import functools  # noqa: E402


def _digits_classifier(kind: str, seed: int = 0):
    """A compiled classifier of digits (64 features, 10 classes) with a few hundred weights.

    Kinds: dense (L2 kernel_regularizer, logits), functional (softmax, one-hot loss),
    conv (Conv2D on 8x8x1 inputs), bn_dropout (BatchNorm with non-trivial moving statistics
    and Dropout), subclassed (a keras.Model subclass built by calling it).
    """
    import keras

    keras.utils.set_random_seed(seed)
    logits = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if kind == "dense":
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(6, activation="relu",
                                   kernel_regularizer=keras.regularizers.L2(0.01)),
                keras.layers.Dense(10),
            ],
            name="dense_net",
        )
        model.compile(loss=logits, metrics=["accuracy"])
    elif kind == "functional":
        inputs = keras.Input((64,))
        hidden = keras.layers.Dense(5, activation="tanh")(inputs)
        outputs = keras.layers.Dense(10, activation="softmax")(hidden)
        model = keras.Model(inputs, outputs, name="functional_net")
        model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    elif kind == "conv":
        model = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(3, 3, strides=2, activation="relu"),
                keras.layers.Flatten(),
                keras.layers.Dense(10),
            ],
            name="conv_net",
        )
        model.compile(loss=logits, metrics=["accuracy"])
    elif kind == "bn_dropout":
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(6),
                keras.layers.BatchNormalization(),
                keras.layers.Activation("relu"),
                keras.layers.Dropout(0.5),
                keras.layers.Dense(10),
            ],
            name="bn_net",
        )
        rng = np.random.default_rng(seed + 100)
        bn = model.layers[1]
        bn.moving_mean.assign(rng.normal(0.0, 0.5, 6).astype("float32"))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, 6).astype("float32"))
        model.compile(loss=logits, metrics=["accuracy"])
    elif kind == "subclassed":
        model = subclassed_digits_class()(name="subclassed_net")
        model(np.zeros((1, 64), np.float32))
        model.compile(loss=logits, metrics=["accuracy"])
    else:
        raise ValueError(kind)
    return model


@functools.lru_cache(maxsize=None)
def subclassed_digits_class():
    """A keras.Model subclass: layers in __init__, wiring in call (with Keras's `training`)."""
    import keras

    class SubclassedDigits(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(5, activation="tanh")
            self.out = keras.layers.Dense(10)

        def call(self, inputs, training=False):
            return self.out(self.hidden(inputs))

    return SubclassedDigits


DIGITS_KINDS = ("dense", "functional", "conv", "bn_dropout", "subclassed")


@pytest.fixture(scope="session")
def digits_data():
    """The digits Dataset (1437 train / 360 test, 64 features, 10 classes)."""
    from keras_landscape.data import load_data

    return load_data("digits")


@pytest.fixture(scope="session")
def digits_classifier():
    """A factory: digits_classifier(kind, seed=0) -> a fresh compiled model (see DIGITS_KINDS)."""
    return _digits_classifier


@pytest.fixture(scope="session")
def digits_model_file(tmp_path_factory):
    """A saved compiled 64-6-10 digits classifier (logits, L2 on the first kernel)."""
    path = tmp_path_factory.mktemp("models") / "digits_mlp.keras"
    _digits_classifier("dense").save(path)
    return path


@pytest.fixture
def weights_unchanged():
    """check(model) -> a callable that asserts the model's variables are what they were."""

    def snapshot(model):
        before = [np.array(v.numpy()) for v in model.variables]

        def check():
            after = [np.array(v.numpy()) for v in model.variables]
            assert len(after) == len(before)
            for path, a, b in zip((v.path for v in model.variables), before, after):
                np.testing.assert_array_equal(a, b, err_msg=f"{path} changed")

        return check

    return snapshot


# ------------------------------------------------------------------ fast full-batch training


def fit_full_batch(model, x, y, steps: int, learning_rate: float, loss=None):
    """Train a Keras model with `steps` full-batch Adam steps in one compiled execution.

    Plain `fit(epochs=steps)` pays Keras's per-epoch overhead (tens of ms) every step; tiling
    the data into one epoch of `steps` full batches with steps_per_execution=steps gives the
    same full-batch Adam trajectory (no shuffling) in a fraction of the time.
    """
    import keras

    loss = loss or ("mse" if np.asarray(y).dtype.kind == "f"
                    else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss,
                  steps_per_execution=steps)
    reps = (steps,) + (1,) * (np.ndim(x) - 1)
    model.fit(np.tile(x, reps), np.tile(y, (steps,) + (1,) * (np.ndim(y) - 1)), epochs=1,
              batch_size=len(x), shuffle=False, verbose=0)
    return model


@pytest.fixture(scope="session")
def full_batch_fit():
    """fit_full_batch(model, x, y, steps, learning_rate, loss=None) -> the trained model."""
    return fit_full_batch
