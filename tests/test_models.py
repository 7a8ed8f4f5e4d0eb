"""Model files: .keras/.h5 round trips, custom objects, clear errors for bad input, clones."""

import zipfile

import keras
import numpy as np
import pytest

from keras_landscape.engine.landscape import clone_fresh
from keras_landscape.engine.params import ParameterLayout, non_trainable_state
from keras_landscape.errors import UserError
from keras_landscape.models.loading import (
    check_same_architecture,
    load_custom_objects,
    load_model,
    model_with_theta,
)


def _bn_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(3),
        ]
    )
    model.layers[1].moving_mean.assign(np.linspace(-1, 1, 5).astype(np.float32))
    model.layers[1].moving_variance.assign(np.linspace(0.5, 2, 5).astype(np.float32))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _theta(model):
    return ParameterLayout.from_model(model).theta_of(model)


@pytest.mark.parametrize("suffix", [".keras", ".h5", ".hdf5"])
def test_save_load_round_trip_keeps_theta_state_and_loss(tmp_path, suffix):
    model = _bn_model()
    path = tmp_path / f"model{suffix}"
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_array_equal(_theta(loaded), _theta(model))
    for a, b in zip(non_trainable_state(loaded), non_trainable_state(model)):
        np.testing.assert_array_equal(a, b)
    assert ParameterLayout.from_model(loaded).shapes == ParameterLayout.from_model(model).shapes
    assert loaded.loss is not None  # compiled: the landscape can take its loss
    # load_model accepts str paths too
    np.testing.assert_array_equal(_theta(load_model(str(path))), _theta(model))


CUSTOM_LAYER = '''
import keras


@keras.saving.register_keras_serializable(package="KlTest")
class Scale(keras.layers.Layer):
    """Multiplies each feature by a trainable weight."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, inputs):
        return inputs * self.scale


def helper():
    return 1


CONSTANT = 3
'''


def _save_custom_model(tmp_path):
    """A model with the custom Scale layer of a .py file, saved; returns (source, path, model)."""
    source = tmp_path / "my_layers.py"
    source.write_text(CUSTOM_LAYER)
    objects = load_custom_objects(str(source))
    # classes and functions defined in the file, nothing imported, no constants
    assert sorted(objects) == ["Scale", "helper"]
    model = keras.Sequential([keras.Input((3,)), objects["Scale"](), keras.layers.Dense(2)])
    model.layers[0].scale.assign(np.array([2.0, -1.0, 0.5], np.float32))
    model.compile(loss="mse")
    path = tmp_path / "custom.keras"
    model.save(path)
    return source, path, model


def _forget_custom_layer(monkeypatch):
    """A fresh process knows nothing of Scale: drop it from Keras's global registry."""
    registry = keras.saving.get_custom_objects()
    assert "KlTest>Scale" in registry
    monkeypatch.delitem(registry, "KlTest>Scale")


def test_custom_layer_loads_through_load_custom_objects(tmp_path, monkeypatch):
    source, path, model = _save_custom_model(tmp_path)
    _forget_custom_layer(monkeypatch)
    with pytest.raises(UserError, match="Could not load"):
        load_model(path)
    loaded = load_model(path, load_custom_objects(str(source)))
    np.testing.assert_array_equal(_theta(loaded), _theta(model))
    np.testing.assert_array_equal(loaded.layers[0].scale.numpy(), [2.0, -1.0, 0.5])
    assert type(loaded.layers[0]).__name__ == "Scale"


def test_missing_custom_layer_message_points_to_custom_objects(tmp_path, monkeypatch):
    _, path, _ = _save_custom_model(tmp_path)
    _forget_custom_layer(monkeypatch)
    with pytest.raises(UserError) as info:
        load_model(path)
    assert "--custom-objects" in str(info.value)
    assert "may be corrupt" not in str(info.value)


def test_custom_objects_from_a_module_name():
    objects = load_custom_objects("keras_landscape.engine.params")
    assert objects["ParameterLayout"] is ParameterLayout
    assert "UserError" not in objects  # imported there, defined elsewhere
    assert load_custom_objects(None) == {} and load_custom_objects("") == {}


@pytest.mark.parametrize(
    "spec, message",
    [
        ("missing_layers.py", "does not exist"),
        ("no_such_module_for_klandscape", "neither a .py file nor an importable module"),
    ],
)
def test_bad_custom_objects_are_user_errors(tmp_path, spec, message):
    if spec.endswith(".py"):
        spec = str(tmp_path / spec)
    with pytest.raises(UserError, match=message):
        load_custom_objects(spec)


def test_custom_objects_file_that_fails_to_import(tmp_path):
    broken = tmp_path / "broken_layers.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(
        UserError, match="Importing --custom-objects file .* failed: RuntimeError: boom"
    ):
        load_custom_objects(str(broken))


def _write_random(path, size=2048, seed=0):
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, np.uint8).tobytes())
    return path


def _bad_inputs(tmp_path):
    saved_model = tmp_path / "exported"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"\x08\x01")
    (saved_model / "variables").mkdir()
    plain_dir = tmp_path / "somedir"
    plain_dir.mkdir()
    good_h5 = tmp_path / "good.h5"
    _bn_model().save(good_h5)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good_h5.read_bytes()[:1500])
    fake_zip = tmp_path / "fake.keras"
    with zipfile.ZipFile(fake_zip, "w") as archive:
        archive.writestr("config.json", "this is not json")
        archive.writestr("metadata.json", "{}")
    torch = tmp_path / "model.pt"
    torch.write_bytes(b"PK\x03\x04")
    return {
        "missing": (tmp_path / "nope.keras", "does not exist"),
        "saved_model": (
            saved_model,
            "is a TensorFlow SavedModel directory.*model.save\\('model.keras'\\)",
        ),
        "directory": (plain_dir, "is a directory, not a model file"),
        "random_keras": (_write_random(tmp_path / "random.keras"), "not a valid .keras archive"),
        "random_h5": (_write_random(tmp_path / "random.h5", seed=1), "is not an HDF5 file"),
        "truncated_h5": (truncated, "Could not load .*truncated.h5"),
        "bad_zip_keras": (fake_zip, "Could not load .*fake.keras"),
        "pt": (torch, "unknown extension '.pt'.*Supported: .keras"),
        "no_extension": (_write_random(tmp_path / "model"), "unknown extension '\\(none\\)'"),
    }


BAD_INPUTS = [
    "missing",
    "saved_model",
    "directory",
    "random_keras",
    "random_h5",
    "truncated_h5",
    "bad_zip_keras",
    "pt",
    "no_extension",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_model_files_are_user_errors_with_a_message(tmp_path, case):
    path, message = _bad_inputs(tmp_path)[case]
    with pytest.raises(UserError, match=message) as info:
        load_model(path)
    assert str(path) in str(info.value) or repr(str(path)) in str(info.value)
    assert "\n" not in str(info.value)  # one paragraph


def _mlp(hidden, name, inputs=4, outputs=3):
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, name="hidden"),
            keras.layers.Dense(outputs, name="head"),
        ],
        name=name,
    )


def test_check_same_architecture_returns_the_shared_layout():
    layout = check_same_architecture(
        [_mlp(5, "a"), _mlp(5, "b"), _mlp(5, "c")], ["a.keras", "b.keras", "c.keras"]
    )
    assert layout.shapes == ((4, 5), (5,), (5, 3), (3,))
    assert layout.paths[0] == "a/hidden/kernel"


def test_check_same_architecture_names_the_differing_variable():
    with pytest.raises(UserError) as info:
        check_same_architecture(
            [_mlp(5, "a"), _mlp(5, "b"), _mlp(6, "c")], ["a.keras", "b.keras", "c.keras"]
        )
    message = str(info.value)
    assert "a.keras and c.keras do not share an architecture" in message
    assert "a/hidden/kernel (4, 5) vs c/hidden/kernel (4, 6)" in message


def test_check_same_architecture_through_saved_files(tmp_path):
    _mlp(5, "a").save(tmp_path / "a.keras")
    _mlp(5, "b", outputs=2).save(tmp_path / "b.h5")
    models = [load_model(tmp_path / "a.keras"), load_model(tmp_path / "b.h5")]
    # Keras drops the model-name prefix of paths when it loads a .keras Sequential.
    with pytest.raises(
        UserError,
        match=r"variable 2 differs: (a/)?head/kernel \(5, 3\) vs "
        r"(b/)?head/kernel \(5, 2\)",
    ):
        check_same_architecture(models, ["a", "b"])


def _functional():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3)(keras.layers.Dense(5, activation="relu")(inputs))
    return keras.Model(inputs, outputs)


def _subclassed():
    class Tiny(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(5, activation="relu")
            self.head = keras.layers.Dense(3)

        def call(self, inputs, training=False):
            return self.head(self.hidden(inputs))

    keras.utils.set_random_seed(0)
    model = Tiny()
    model(np.zeros((2, 4), np.float32))
    return model


@pytest.mark.parametrize(
    "build", [_bn_model, _functional, _subclassed], ids=["sequential", "functional", "subclassed"]
)
def test_clone_fresh_same_layout_new_theta(build):
    model = build()
    theta = _theta(model)
    state = non_trainable_state(model)
    first = clone_fresh(model, seed=11)
    second = clone_fresh(model, seed=11)
    other = clone_fresh(model, seed=12)
    layout = ParameterLayout.from_model(model)
    assert ParameterLayout.from_model(first).shapes == layout.shapes
    fresh = _theta(first)
    assert fresh.shape == theta.shape
    assert not np.allclose(fresh, theta)
    # seeded: the same seed gives the same initialisation, another seed another one
    np.testing.assert_array_equal(_theta(second), fresh)
    assert not np.allclose(_theta(other), fresh)
    # the original is untouched and shares no variables with the clone
    np.testing.assert_array_equal(_theta(model), theta)
    for a, b in zip(non_trainable_state(model), state):
        np.testing.assert_array_equal(a, b)
    assert not {id(v) for v in first.variables} & {id(v) for v in model.variables}
    # the clone computes: same output shape as the original
    x = np.ones((2, 4), np.float32)
    assert first(x).shape == model(x).shape


def test_model_with_theta_writes_theta_and_state_into_a_clone(rng):
    model = _bn_model()
    layout = ParameterLayout.from_model(model)
    theta = rng.standard_normal(layout.size).astype(np.float32)
    state = [np.full(v.shape, 0.75, np.float32) for v in model.non_trainable_variables]
    before = _theta(model)
    clone = model_with_theta(model, theta, state)
    np.testing.assert_array_equal(_theta(clone), theta)
    for a in non_trainable_state(clone):
        np.testing.assert_array_equal(a, 0.75)
    np.testing.assert_array_equal(_theta(model), before)


def test_recipe_initializers_reach_every_dense_layer():
    """kernel_initializer / bias_initializer (the authors' U[-1, 1] weights and N(0, 1)
    biases) replace Keras's Glorot kernels and zero biases; a bad spec is a ConfigError."""
    from keras_landscape.errors import ConfigError
    from keras_landscape.models.recipes import ModelRecipe, build_model

    recipe = ModelRecipe(
        "mlp",
        [1],
        1,
        layers=[64, 64],
        activation="sigmoid",
        kernel_initializer="random_uniform:minval=-1,maxval=1",
        bias_initializer="random_normal:stddev=1",
    )
    keras.utils.set_random_seed(0)
    model = build_model(recipe)
    kernels = [v.numpy() for v in model.trainable_variables if v.path.endswith("kernel")]
    biases = [v.numpy() for v in model.trainable_variables if v.path.endswith("bias")]
    middle = kernels[1]  # 64 x 64: Glorot's limit would be sqrt(6 / 128) = 0.22
    assert np.abs(middle).max() <= 1.0 and np.abs(middle).max() > 0.95
    assert abs(middle.std() - 1 / np.sqrt(3)) < 0.02  # U[-1, 1]
    assert all(np.abs(b).max() > 0 for b in biases)
    assert abs(np.concatenate(biases).std() - 1.0) < 0.15
    assert "kernel_initializer" in recipe.architecture()
    plain = ModelRecipe("mlp", [1], 1, layers=[4])
    assert "kernel_initializer" not in plain.architecture()  # older stamps unchanged
    with pytest.raises(ConfigError, match="not a Keras initializer"):
        build_model(ModelRecipe("mlp", [1], 1, layers=[4], kernel_initializer="nonsense"))
