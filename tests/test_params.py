"""The flat parameter view theta: layouts, exact round trips, non-trainable state, mismatches."""

import keras
import numpy as np
import pytest

from keras_landscape.engine.params import ParameterLayout, non_trainable_state
from keras_landscape.errors import UserError


def _two_layer(name="net", hidden=4, inputs=3, outputs=2):
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, activation="relu", name="a"),
            keras.layers.Dense(outputs, name="b"),
        ],
        name=name,
    )


def _conv():
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, name="head"),
        ],
        name="conv_net",
    )


def _lstm():
    return keras.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.LSTM(4, name="lstm"),
            keras.layers.Dense(2, name="head"),
        ],
        name="lstm_net",
    )


def _batchnorm():
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, name="a"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(1, name="b"),
        ],
        name="bn_net",
    )


BUILDERS = {"dense": _two_layer, "conv": _conv, "lstm": _lstm, "batchnorm": _batchnorm}


def test_layout_records_paths_shapes_offsets_and_dtypes():
    layout = ParameterLayout.from_model(_two_layer())
    assert layout.paths == ("net/a/kernel", "net/a/bias", "net/b/kernel", "net/b/bias")
    assert layout.shapes == ((3, 4), (4,), (4, 2), (2,))
    assert layout.sizes == (12, 4, 8, 2)
    assert layout.offsets == (0, 12, 16, 24)
    assert layout.size == 26
    assert layout.dtypes == ("float32",) * 4


def test_layout_of_lstm_and_conv_follows_trainable_variables():
    lstm = ParameterLayout.from_model(_lstm())
    # Keras fuses the four LSTM gates: kernel (in, 4u), recurrent kernel (u, 4u), bias (4u,).
    assert lstm.shapes == ((3, 16), (4, 16), (16,), (4, 2), (2,))
    assert lstm.offsets == (0, 48, 112, 128, 136)
    assert lstm.size == 138
    conv = ParameterLayout.from_model(_conv())
    assert conv.shapes == ((3, 3, 2, 3), (3,), (48, 2), (2,))
    assert conv.size == 54 + 3 + 96 + 2


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_theta_weights_theta_round_trip_is_exact(kind, rng):
    model = BUILDERS[kind]()
    layout = ParameterLayout.from_model(model)
    theta = layout.theta_of(model)
    assert theta.dtype == np.float32 and theta.shape == (layout.size,)
    # theta is the trainable variables, flattened in C order, in layout order.
    expected = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
    np.testing.assert_array_equal(theta, expected)
    for array, variable in zip(layout.unflatten(theta), model.trainable_variables):
        np.testing.assert_array_equal(array, variable.numpy())
    np.testing.assert_array_equal(layout.flatten(layout.unflatten(theta)), theta)

    # Write a new theta into a clone: reading it back gives the same bits.
    new_theta = rng.standard_normal(layout.size).astype(np.float32)
    clone = keras.models.clone_model(model)
    layout.assign(clone, new_theta)
    np.testing.assert_array_equal(layout.theta_of(clone), new_theta)
    np.testing.assert_array_equal(layout.theta_of(model), theta)  # the original is untouched
    # Each variable got its own slice.
    for variable, offset, size, shape in zip(
        clone.trainable_variables, layout.offsets, layout.sizes, layout.shapes
    ):
        np.testing.assert_array_equal(
            variable.numpy(), new_theta[offset : offset + size].reshape(shape)
        )


def test_batchnorm_moving_statistics_are_kept_out_of_theta():
    model = _batchnorm()
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.array([1.0, 2.0, 3.0, 4.0], np.float32))
    bn.moving_variance.assign(np.array([5.0, 6.0, 7.0, 8.0], np.float32))
    layout = ParameterLayout.from_model(model)
    assert layout.paths == (
        "bn_net/a/kernel",
        "bn_net/a/bias",
        "bn_net/bn/gamma",
        "bn_net/bn/beta",
        "bn_net/b/kernel",
        "bn_net/b/bias",
    )
    assert not any("moving" in p for p in layout.paths)
    assert layout.size == 12 + 4 + 4 + 4 + 4 + 1
    state = non_trainable_state(model)
    assert [v.path for v in model.non_trainable_variables] == [
        "bn_net/bn/moving_mean",
        "bn_net/bn/moving_variance",
    ]
    np.testing.assert_array_equal(state[0], [1, 2, 3, 4])
    np.testing.assert_array_equal(state[1], [5, 6, 7, 8])
    # Snapshots are copies, not views of the live variables.
    state[0][:] = 0
    np.testing.assert_array_equal(bn.moving_mean.numpy(), [1, 2, 3, 4])
    # Assigning theta leaves the moving statistics alone.
    layout.assign(model, np.zeros(layout.size, np.float32))
    np.testing.assert_array_equal(bn.moving_variance.numpy(), [5, 6, 7, 8])


def test_separately_built_models_of_one_architecture_match():
    first, second = _two_layer(name="x"), _two_layer(name="y")
    assert (
        ParameterLayout.from_model(first).describe_difference(ParameterLayout.from_model(second))
        is None
    )
    ParameterLayout.from_model(first).check_compatible(ParameterLayout.from_model(second))


def test_describe_difference_names_the_first_differing_variable():
    small = ParameterLayout.from_model(_two_layer(name="small", hidden=4))
    wide = ParameterLayout.from_model(_two_layer(name="wide", hidden=5))
    text = small.describe_difference(wide)
    assert text == ("trainable variable 0 differs: small/a/kernel (3, 4) vs wide/a/kernel (3, 5)")
    other_head = ParameterLayout.from_model(_two_layer(name="head", outputs=3))
    assert "trainable variable 2 differs: net/b/kernel (4, 2) vs head/b/kernel (4, 3)" == (
        ParameterLayout.from_model(_two_layer()).describe_difference(other_head)
    )


def test_describe_difference_with_different_variable_counts():
    two = ParameterLayout.from_model(_two_layer())
    three = ParameterLayout.from_model(
        keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(4, name="a"),
                keras.layers.Dense(2, name="b"),
                keras.layers.Dense(2, name="c"),
            ],
            name="deep",
        )
    )
    text = two.describe_difference(three)
    assert text.startswith("they have 4 and 6 trainable variables")
    assert "variable 4: (none) vs deep/c/kernel (2, 2)" in text


def test_check_compatible_raises_user_error_naming_models_and_variable():
    a = ParameterLayout.from_model(_two_layer(name="n1"))
    b = ParameterLayout.from_model(_two_layer(name="n2", hidden=7))
    with pytest.raises(UserError) as info:
        a.check_compatible(b, ("first.keras", "second.keras"))
    message = str(info.value)
    assert "first.keras and second.keras do not share an architecture" in message
    assert "n1/a/kernel (3, 4) vs n2/a/kernel (3, 7)" in message
    # theta_of refuses a model of another architecture the same way.
    with pytest.raises(UserError, match="do not share an architecture"):
        a.theta_of(_two_layer(hidden=7))


def test_flatten_and_unflatten_reject_wrong_shapes():
    layout = ParameterLayout.from_model(_two_layer())
    with pytest.raises(ValueError, match=r"theta must have shape \(26,\)"):
        layout.unflatten(np.zeros(25, np.float32))
    with pytest.raises(ValueError, match="expected 4 arrays, got 3"):
        layout.flatten([np.zeros((3, 4)), np.zeros(4), np.zeros((4, 2))])
    with pytest.raises(ValueError, match=r"net/b/kernel: expected shape \(4, 2\)"):
        layout.flatten([np.zeros((3, 4)), np.zeros(4), np.zeros((2, 4)), np.zeros(2)])


def test_flatten_casts_to_float32():
    layout = ParameterLayout.from_model(_two_layer())
    arrays = [np.full(s, 0.1, np.float64) for s in layout.shapes]
    theta = layout.flatten(arrays)
    assert theta.dtype == np.float32
    np.testing.assert_array_equal(theta, np.full(26, np.float32(0.1)))


def test_layout_dict_round_trip():
    layout = ParameterLayout.from_model(_lstm())
    d = layout.to_dict()
    assert d["size"] == 138 and d["offsets"] == [0, 48, 112, 128, 136]
    assert ParameterLayout.from_dict(d) == layout
    # dtypes are optional in stored layouts (float32 assumed)
    del d["dtypes"]
    assert ParameterLayout.from_dict(d).dtypes == ("float32",) * 5


def test_model_without_trainable_variables_is_a_user_error():
    frozen = _two_layer()
    frozen.trainable = False
    with pytest.raises(UserError, match="no trainable variables"):
        ParameterLayout.from_model(frozen)
