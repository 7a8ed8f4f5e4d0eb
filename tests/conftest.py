"""Shared test set-up: one quiet TensorFlow import per session, small seeded models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

if os.environ.get("KLANDSCAPE_BLOCK_TENSORFLOW") == "1":
    import sys

    # The JAX run proves the core never imports TensorFlow: any import of it fails.
    sys.modules["tensorflow"] = None

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
                keras.layers.Dense(
                    6, activation="relu", kernel_regularizer=keras.regularizers.L2(0.01)
                ),
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


@functools.cache
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
    from keras_landscape.data.specs import load_data

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

    loss = loss or (
        "mse"
        if np.asarray(y).dtype.kind == "f"
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss=loss, steps_per_execution=steps
    )
    reps = (steps,) + (1,) * (np.ndim(x) - 1)
    model.fit(
        np.tile(x, reps),
        np.tile(y, (steps,) + (1,) * (np.ndim(y) - 1)),
        epochs=1,
        batch_size=len(x),
        shuffle=False,
        verbose=0,
    )
    return model


def weight_landscape(folder, units: int, head, targets):
    """A Landscape whose parameters are the `units` weights w of Dense(units, no bias) on
    the constant input x = 1 (4 samples): y_pred = head(w) (a Lambda), MSE against
    `targets` (per-sample row). Known energies in closed form for DSS and barrier tests."""
    import keras

    from keras_landscape.data.specs import load_data
    from keras_landscape.engine.landscape import Landscape

    path = folder / "constant_input.npz"
    y = np.tile(np.asarray(targets, np.float32), (4, 1))
    np.savez(path, x=np.ones((4, 1), np.float32), y=y)
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(units, use_bias=False),
            keras.layers.Lambda(head),
        ]
    )
    model.compile(loss="mse")
    return Landscape(model, load_data(f"npz:{path}"))


def save_tiny_cubic_models(folder, seeds, data: str = "cubic:limit=64") -> list[str]:
    """1-4-1 tanh networks (one per seed) fitted briefly on `data` (150 full-batch Adam
    steps at 0.05) and saved as folder/tiny_<seed>.keras; their paths."""
    import keras

    from keras_landscape.data.specs import load_data

    dataset = load_data(data)
    paths = []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [keras.Input((1,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)],
            name="tiny",
        )
        fit_full_batch(model, dataset.x_train, dataset.y_train, 150, 0.05)
        model.compile(loss="mse")
        paths.append(str(folder / f"tiny_{seed}.keras"))
        model.save(paths[-1])
    return paths


@pytest.fixture(scope="session")
def full_batch_fit():
    """fit_full_batch(model, x, y, steps, learning_rate, loss=None) -> the trained model."""
    return fit_full_batch


# ------------------------------------------------------------------ energy-barrier landscapes
# Shared by tests/test_barriers.py and tests/test_components.py.

TWO_VALLEY_LAYER = '''
"""A two-parameter custom layer with two valleys and a saddle level known exactly."""

import keras
from keras import ops


class TwoValley(keras.layers.Layer):
    """w = (w1, w2); every sample's output is (w1^2 - 1, sqrt(a) (w2 - b (1 - w1^2)))."""

    def __init__(self, a=1.0, b=1.0, **kwargs):
        super().__init__(**kwargs)
        self.a, self.b = float(a), float(b)

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(2,), initializer="zeros")

    def call(self, x):
        w1, w2 = self.w[0], self.w[1]
        r = ops.stack([w1 * w1 - 1.0, (self.a ** 0.5) * (w2 - self.b * (1.0 - w1 * w1))])
        return ops.zeros_like(x[:, :1]) + r[None, :]

    def get_config(self):
        return {**super().get_config(), "a": self.a, "b": self.b}
'''


class TwoValleyFiles:
    """E(w) = ((w1^2 - 1)^2 + a (w2 - b (1 - w1^2))^2) / 2 as saved Keras models (MSE, zero
    targets).

    Minima (+-1, 0) with E = 0. Every path from w1 = -1 to w1 = +1 crosses w1 = 0, where
    E >= 1/2, and the curved valley w2 = b (1 - w1^2) reaches w1 = 0 at exactly E = 1/2: the
    saddle level is s = 1/2 whatever a, b. The straight line w2 = 0 peaks at (1 + a b^2) / 2.
    The data is 4 dummy samples x = 0 (n, 1) with targets 0 (n, 2).
    """

    SADDLE = 0.5

    def __init__(self, folder):
        from keras_landscape.models.loading import load_custom_objects

        self.folder = folder
        self.custom_objects = str(folder / "two_valley_layer.py")
        (folder / "two_valley_layer.py").write_text(TWO_VALLEY_LAYER)
        np.savez(
            folder / "zeros.npz", x=np.zeros((4, 1), np.float32), y=np.zeros((4, 2), np.float32)
        )
        self.data = f"npz:{folder / 'zeros.npz'}"
        self.layer_class = load_custom_objects(self.custom_objects)["TwoValley"]

    @staticmethod
    def energy(w, a=1.0, b=1.0):
        w = np.asarray(w, np.float64).reshape(-1, 2)
        w1, w2 = w[:, 0], w[:, 1]
        return ((w1**2 - 1) ** 2 + a * (w2 - b * (1 - w1**2)) ** 2) / 2

    @staticmethod
    def linear_max(a=1.0, b=1.0):
        """max of E on the straight segment (-1, 0) - (1, 0), at w = (0, 0)."""
        return (1 + a * b * b) / 2

    def model(self, w=(1.0, 0.0), a=1.0, b=1.0):
        import keras

        model = keras.Sequential(
            [keras.Input((1,)), self.layer_class(a=a, b=b, name="valley")], name="two_valley"
        )
        model.compile(loss="mse")
        model.layers[0].w.assign(np.asarray(w, np.float32))
        return model

    def save(self, name, w, a=1.0, b=1.0) -> str:
        """A saved model at w (a .keras file; load it with custom_objects=self.custom_objects)."""
        path = self.folder / f"{name}.keras"
        if not path.exists():
            self.model(w, a, b).save(path)
        return str(path)

    def landscape(self, a=1.0, b=1.0):
        from keras_landscape.data.specs import load_data
        from keras_landscape.engine.landscape import Landscape

        return Landscape(self.model((1.0, 0.0), a, b), load_data(self.data))


@pytest.fixture(scope="session")
def two_valley(tmp_path_factory):
    """TwoValleyFiles: custom-objects file, data spec and saved models of the two-valley E."""
    return TwoValleyFiles(tmp_path_factory.mktemp("two_valley"))


@pytest.fixture(scope="session")
def linreg_models(tmp_path_factory):
    """Convex E: linear regression (Dense(1), MSE) data and 4 saved, partially trained models.

    The models sit at 4 different levels above the least-squares minimum (so that their
    levels differ), which is where a convex E is known to connect them at max(E(A), E(B)).
    """
    import keras

    folder = tmp_path_factory.mktemp("linreg_models")
    rng = np.random.default_rng(11)
    n, d = 200, 3
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.normal(size=n)).astype(np.float32)[
        :, None
    ]
    np.savez(folder / "linreg.npz", x=x, y=y)
    paths = []
    for k, (seed, steps) in enumerate(((1, 15), (2, 25), (3, 40), (4, 60))):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(1)], name="linreg")
        fit_full_batch(model, x, y, steps, 0.05)
        model.compile(loss="mse")
        paths.append(str(folder / f"linreg_{k}.keras"))
        model.save(paths[-1])
    return {"paths": paths, "data": f"npz:{folder / 'linreg.npz'}", "x": x, "y": y}


def run_cli(capsys, *args):
    """klandscape's main(args) in-process -> (exit code, stdout, stderr)."""
    from keras_landscape.cli.main import main

    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class _CountingTask:
    def __init__(self, owner):
        self.owner = owner

    def advance(self, amount=1):
        pass

    def update(self, *, total=None, status=None):
        self.owner.updates += 1
        if self.owner.interrupt_after and self.owner.updates >= self.owner.interrupt_after:
            raise KeyboardInterrupt

    def close(self):
        pass


class CountingProgress:
    """Counts task().update calls; raises KeyboardInterrupt on the Nth one when N is given."""

    def __init__(self, interrupt_after=None):
        self.interrupt_after, self.updates = interrupt_after, 0

    def task(self, description, total=None):
        return _CountingTask(self)

    def note(self, message):
        pass
