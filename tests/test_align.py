"""Weight matching (keras_landscape.models.align): exact recovery of permuted copies, exact
symmetry."""

import numpy as np
import pytest

from keras_landscape.errors import UserError


# ----------------------------------------------------------------------------- small models
def _dense(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(6, activation="tanh"),
            keras.layers.Dense(3),
        ]
    )


def _conv(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(5, 3, use_bias=False)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3)(x)
    return keras.Model(inputs, outputs)


def _conv_pool(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(5, 1),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(7, activation="relu"),
            keras.layers.Dense(2),
        ]
    )


def _bn(seed=0):
    """Dense + BatchNorm with non-trivial moving statistics (and randomised gamma/beta)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.Dense(6, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("tanh"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3),
        ]
    )
    rng = np.random.default_rng(seed + 100)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0.0, 0.5, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0.0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
    return model


BUILDERS = {"dense": _dense, "conv": _conv, "conv_pool": _conv_pool, "bn": _bn}


# -------------------------------------------------- reference permuter (keras weights, clone)
def _reference_permuted(model, seed):
    """A clone of `model` whose hidden units are randomly permuted, via get/set_weights.

    Written independently of keras_landscape.models.align: walks model.layers, permutes the output
    axis of every hidden Dense/Conv2D (and the following BatchNorm's four arrays), and the input
    axis of the next Dense/Conv2D (after Flatten: rows p*C + c, channels-last).

    Returns:
        (clone, {kernel path of the permuted layer in `model`: q}) where clone unit i is
        model unit q[i].
    """
    import keras

    rng = np.random.default_rng(seed)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    layers = [layer for layer in clone.layers]
    originals = [layer for layer in model.layers]
    weighted = [
        i
        for i, layer in enumerate(layers)
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))
    ]
    applied = {}
    for k, i in enumerate(weighted[:-1]):
        layer = layers[i]
        w = layer.get_weights()
        n = w[0].shape[-1]
        q = rng.permutation(n)
        applied[originals[i].kernel.path] = q
        layer.set_weights([x[..., q] for x in w])  # kernel output axis is last; bias 1-D
        spatial = 1
        for j in range(i + 1, weighted[k + 1] + 1):
            nxt = layers[j]
            if isinstance(nxt, keras.layers.BatchNormalization):
                nxt.set_weights([x[q] for x in nxt.get_weights()])
            elif isinstance(nxt, keras.layers.Flatten):
                spatial = int(np.prod(nxt.input.shape[1:-1]))
            elif j == weighted[k + 1]:
                w = nxt.get_weights()
                kernel = w[0]
                if isinstance(nxt, keras.layers.Conv2D):
                    kernel = kernel[:, :, q, :]
                else:
                    out = kernel.shape[-1]
                    kernel = kernel.reshape(spatial, n, out)[:, q, :].reshape(spatial * n, out)
                nxt.set_weights([kernel] + w[1:])
    return clone, applied


def _outputs(model, theta, x, non_trainable=None):
    import keras

    from keras_landscape.engine.params import ParameterLayout

    clone = keras.models.clone_model(model)
    ParameterLayout.from_model(clone).assign(clone, theta)
    if non_trainable is not None:
        for variable, value in zip(clone.non_trainable_variables, non_trainable):
            variable.assign(value)
    return np.asarray(clone(x, training=False))


def _inputs(model, n=16, seed=3):
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("float32")


# ------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("kind", sorted(BUILDERS))
@pytest.mark.parametrize("perm_seed", [1, 2, 3])
def test_recovers_permuted_copy_exactly(kind, perm_seed, weights_unchanged):
    from keras_landscape.engine.params import ParameterLayout, non_trainable_state
    from keras_landscape.models.align import weight_matching

    model = BUILDERS[kind]()
    layout = ParameterLayout.from_model(model)
    theta_a = layout.theta_of(model)
    clone, applied = _reference_permuted(model, perm_seed)
    theta_b = layout.flatten(v.numpy() for v in clone.trainable_variables)
    check = weights_unchanged(model)

    result = weight_matching(model, theta_a, theta_b)

    check()
    assert result.distance_before > 0.5
    assert result.distance_after == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(result.theta, theta_a, atol=1e-6)
    assert result.theta.dtype == theta_b.dtype
    assert set(result.permutations) == set(applied)
    for path, q in applied.items():  # aligned unit i = B unit perm[i] = A unit q[perm[i]]
        np.testing.assert_array_equal(q[result.permutations[path]], np.arange(len(q)))
    assert 1 <= result.iterations <= 100

    x = _inputs(model)
    nt_b = non_trainable_state(clone)
    from keras_landscape.models.align import permute_non_trainable

    nt_aligned = permute_non_trainable(model, nt_b, result.permutations)
    for got, want in zip(nt_aligned, non_trainable_state(model)):
        if np.issubdtype(want.dtype, np.floating):  # BN statistics (not RNG seed states)
            np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(
        _outputs(model, result.theta, x, nt_aligned), _outputs(model, theta_b, x, nt_b), atol=1e-5
    )


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_independent_models_function_preserved(kind):
    from keras_landscape.engine.params import ParameterLayout, non_trainable_state
    from keras_landscape.models.align import permute_non_trainable, permute_theta, weight_matching

    model_a, model_b = BUILDERS[kind](seed=0), BUILDERS[kind](seed=1)
    layout = ParameterLayout.from_model(model_a)
    theta_a, theta_b = layout.theta_of(model_a), layout.theta_of(model_b)

    result = weight_matching(model_a, theta_a, theta_b, seed=5)

    assert result.distance_after <= result.distance_before + 1e-9
    assert result.distance_before == pytest.approx(np.linalg.norm(theta_b - theta_a), rel=1e-6)
    np.testing.assert_allclose(  # a permutation of theta_b's entries
        np.sort(result.theta), np.sort(theta_b), atol=0
    )
    np.testing.assert_array_equal(
        permute_theta(model_a, theta_b, result.permutations), result.theta
    )
    x = _inputs(model_a)
    nt_b = non_trainable_state(model_b)
    nt_aligned = permute_non_trainable(model_a, nt_b, result.permutations)
    np.testing.assert_allclose(
        _outputs(model_a, result.theta, x, nt_aligned),
        _outputs(model_a, theta_b, x, nt_b),
        atol=1e-5,
    )
    if kind == "bn":  # the BN statistics matter: unpermuted ones change the function
        assert not np.allclose(
            _outputs(model_a, result.theta, x, nt_b),
            _outputs(model_a, theta_b, x, nt_b),
            atol=1e-5,
        )


def _nested(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    inner = keras.Sequential([keras.layers.Dense(6, activation="relu"), keras.layers.Dense(5)])
    return keras.Sequential([keras.Input((4,)), inner, keras.layers.ReLU(), keras.layers.Dense(2)])


def _dense_on_maps(seed=0, freeze_bn=False):
    """Dense on a 4-D tensor, then Flatten, then BatchNorm over the flattened units."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((5, 5, 2)),
            keras.layers.Conv2D(3, 3, activation="relu"),
            keras.layers.Dense(4, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(7, activation="relu"),
            keras.layers.Dense(2),
        ]
    )
    bn = model.layers[3]
    rng = np.random.default_rng(seed + 7)
    bn.moving_mean.assign(rng.normal(0.0, 0.5, 36).astype("float32"))
    bn.gamma.assign(rng.uniform(0.5, 1.5, 36).astype("float32"))
    bn.trainable = not freeze_bn
    return model


@pytest.mark.parametrize(
    "builder",
    [_nested, _dense_on_maps, lambda seed: _dense_on_maps(seed, freeze_bn=True)],
    ids=["nested", "dense_on_maps", "frozen_bn"],
)
def test_more_architectures_function_preserved(builder):
    from keras_landscape.engine.params import ParameterLayout, non_trainable_state
    from keras_landscape.models.align import permute_non_trainable, weight_matching

    model_a, model_b = builder(seed=0), builder(seed=1)
    layout = ParameterLayout.from_model(model_a)
    theta_b = layout.theta_of(model_b)
    result = weight_matching(model_a, layout.theta_of(model_a), theta_b)
    assert result.permutations and result.distance_after < result.distance_before
    nt_b = non_trainable_state(model_b)
    nt_aligned = permute_non_trainable(model_a, nt_b, result.permutations)
    x = _inputs(model_a)
    np.testing.assert_allclose(
        _outputs(model_a, result.theta, x, nt_aligned),
        _outputs(model_a, theta_b, x, nt_b),
        atol=1e-5,
    )


def test_deterministic_and_wider_layer_improves():
    import keras

    from keras_landscape.engine.params import ParameterLayout
    from keras_landscape.models.align import weight_matching

    def build(seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)]
        )

    a, b = build(0), build(1)
    layout = ParameterLayout.from_model(a)
    theta_a, theta_b = layout.theta_of(a), layout.theta_of(b)
    r1 = weight_matching(a, theta_a, theta_b, seed=7)
    r2 = weight_matching(a, theta_a, theta_b, seed=7)
    assert r1.permutations == r2.permutations
    assert r1.distance_after < 0.95 * r1.distance_before


def test_output_layer_only_model_is_identity():
    import keras

    from keras_landscape.engine.params import ParameterLayout
    from keras_landscape.models.align import weight_matching

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    layout = ParameterLayout.from_model(model)
    theta = layout.theta_of(model)
    result = weight_matching(model, theta, theta + 1.0)
    assert result.permutations == {}
    np.testing.assert_array_equal(result.theta, theta + 1.0)


def _lstm():
    import keras

    return keras.Sequential(
        [keras.Input((5, 3)), keras.layers.LSTM(4, name="my_lstm"), keras.layers.Dense(2)]
    )


def _embedding():
    import keras

    return keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(10, 4, name="my_embedding"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )


def _concatenate():
    import keras

    inputs = keras.Input((4,))
    h = keras.layers.Dense(4, activation="relu")(inputs)
    h = keras.layers.Concatenate(name="my_concat")([h, keras.layers.Dense(3)(h)])
    return keras.Model(inputs, keras.layers.Dense(2)(h))


def _add_constant():
    import keras

    inputs = keras.Input((4,))
    h = keras.layers.Dense(5)(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(h + 1.0))


def _add_flattened():
    """Add of flattened conv maps (positions x channels) and a Dense's features."""
    import keras

    inputs = keras.Input((3, 3, 2))
    flat = keras.layers.Flatten()(keras.layers.Conv2D(2, 1)(inputs))
    dense = keras.layers.Dense(18)(keras.layers.Flatten()(inputs))
    h = keras.layers.Add(name="my_add")([flat, dense])
    return keras.Model(inputs, keras.layers.Dense(2)(h))


def _reshape():
    import keras

    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(6),
            keras.layers.Reshape((3, 2), name="my_reshape"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )


def _channels_first():
    import keras

    return keras.Sequential(
        [
            keras.Input((2, 6, 6)),
            keras.layers.Conv2D(3, 3, data_format="channels_first", name="my_conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )


def _shared():
    import keras

    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, name="my_shared")
    return keras.Model(inputs, keras.layers.Dense(2)(shared(shared(inputs))))


def _raw_op():
    import keras

    inputs = keras.Input((4,))
    h = keras.ops.tanh(keras.layers.Dense(5)(inputs))
    return keras.Model(inputs, keras.layers.Dense(2)(h))


@pytest.mark.parametrize(
    "builder, name, cls",
    [
        (_lstm, "my_lstm", "LSTM"),
        (_embedding, "my_embedding", "Embedding"),
        (_concatenate, "my_concat", "Concatenate"),
        (_add_constant, "add", "Add"),
        (_add_flattened, "my_add", "Add"),
        (_reshape, "my_reshape", "Reshape"),
        (_channels_first, "my_conv", "Conv2D"),
        (_shared, "my_shared", "Dense"),
        (_raw_op, "tanh", "Tanh"),
    ],
)
def test_unsupported_architectures_raise_user_error(builder, name, cls):
    from keras_landscape.engine.params import ParameterLayout
    from keras_landscape.models.align import weight_matching

    model = builder()
    theta = ParameterLayout.from_model(model).theta_of(model)
    with pytest.raises(UserError) as info:
        weight_matching(model, theta, theta)
    message = str(info.value)
    # (raw ops are named by Keras: add, add_1, ...)
    assert f"layer '{name}" in message and f"({cls})" in message and "Dense and Conv2D" in message


def test_frozen_hidden_layer_raises():
    from keras_landscape.engine.params import ParameterLayout
    from keras_landscape.models.align import weight_matching

    model = _dense()
    model.layers[0].trainable = False
    theta = ParameterLayout.from_model(model).theta_of(model)
    with pytest.raises(UserError, match="frozen"):
        weight_matching(model, theta, theta)


def test_subclassed_model_raises(digits_classifier):
    from keras_landscape.engine.params import ParameterLayout
    from keras_landscape.models.align import weight_matching

    model = digits_classifier("subclassed")
    theta = ParameterLayout.from_model(model).theta_of(model)
    with pytest.raises(UserError, match="subclassed"):
        weight_matching(model, theta, theta)


def test_bad_inputs_raise_user_error():
    from keras_landscape.engine.params import ParameterLayout, non_trainable_state
    from keras_landscape.models.align import permute_non_trainable, weight_matching

    model = _bn()
    theta = ParameterLayout.from_model(model).theta_of(model)
    with pytest.raises(UserError, match="shape"):
        weight_matching(model, theta, theta[:-1])
    with pytest.raises(UserError, match="NaN"):
        weight_matching(model, theta, np.full_like(theta, np.nan))
    with pytest.raises(UserError, match="max_iterations"):
        weight_matching(model, theta, theta, max_iterations=0)
    perms = weight_matching(model, theta, theta).permutations
    bad = {k: [0] * len(v) for k, v in perms.items()}
    with pytest.raises(UserError, match="not a permutation"):
        permute_non_trainable(model, non_trainable_state(model), bad)
    with pytest.raises(UserError, match="keyed"):
        permute_non_trainable(model, non_trainable_state(model), {})


# ------------------------------------------------------- residual connections (issue #25)
def _randomise_bn(model, seed):
    import keras

    rng = np.random.default_rng(seed + 100)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0.0, 0.5, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0.0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
    return model


def _res_mlp(seed=0):
    """A stem, two residual blocks (Dense-BN-Dense added back to the stream), a head: the
    stream's units (stem, b1_out, b2_out) form one permutation group."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((7,))
    x = L.BatchNormalization(name="bn0")(L.Dense(8, name="stem")(inputs))
    for k in (1, 2):
        h = L.Dense(6, activation="relu", name=f"b{k}_in")(x)
        h = L.BatchNormalization(name=f"b{k}_bn")(h)
        h = L.Dense(8, name=f"b{k}_out")(h)
        x = L.Activation("relu")(L.Add(name=f"add{k}")([x, h]))
    return _randomise_bn(keras.Model(inputs, L.Dense(3, name="head")(x)), seed)


def _res_conv(seed=0):
    """A conv stem with BatchNorm, a residual conv block (Add, then BatchNorm on the sum), a
    conv, pooling, Flatten and a Dense head."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    x = L.Activation("relu")(
        L.BatchNormalization(name="c0_bn")(L.Conv2D(4, 3, padding="same", name="c0")(inputs))
    )
    h = L.Conv2D(5, 3, padding="same", activation="relu", name="c1")(x)
    h = L.Conv2D(4, 1, name="c2")(h)
    x = L.ReLU()(L.BatchNormalization(name="sum_bn")(L.Add(name="add")([x, h])))
    x = L.Conv2D(3, 3, name="c3")(x)  # 4 x 4 x 3
    x = L.Flatten()(L.MaxPooling2D(2)(x))  # 2 x 2 positions x 3 channels
    return _randomise_bn(keras.Model(inputs, L.Dense(2, name="head")(x)), seed)


def _res_inner(seed=0):
    """x + Dense(x) written with the + operator: the inner Dense's kernel is permuted by the
    stream's group on both axes."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    x = L.Dense(6, activation="tanh", name="stem")(inputs)
    x = x + L.Dense(6, activation="tanh", name="inner")(x)
    x = L.LayerNormalization(name="ln")(x)
    return keras.Model(inputs, L.Dense(2, name="head")(x))


# per builder: layer name -> per weight (in get_weights order): (view or None, group per axis)
S, H1, H2, T = "S", "H1", "H2", "T"
RESIDUAL = {
    "res_mlp": (
        _res_mlp,
        {S: 8, H1: 6, H2: 6},
        {
            "stem": [(None, (None, S)), (None, (S,))],
            "bn0": [(None, (S,))] * 4,
            "b1_in": [(None, (S, H1)), (None, (H1,))],
            "b1_bn": [(None, (H1,))] * 4,
            "b1_out": [(None, (H1, S)), (None, (S,))],
            "b2_in": [(None, (S, H2)), (None, (H2,))],
            "b2_bn": [(None, (H2,))] * 4,
            "b2_out": [(None, (H2, S)), (None, (S,))],
            "head": [(None, (S, None)), (None, (None,))],
        },
        {S: ["stem", "b1_out", "b2_out"], H1: ["b1_in"], H2: ["b2_in"]},
    ),
    "res_conv": (
        _res_conv,
        {S: 4, H1: 5, T: 3},
        {
            "c0": [(None, (None, None, None, S)), (None, (S,))],
            "c0_bn": [(None, (S,))] * 4,
            "c1": [(None, (None, None, S, H1)), (None, (H1,))],
            "c2": [(None, (None, None, H1, S)), (None, (S,))],
            "sum_bn": [(None, (S,))] * 4,
            "c3": [(None, (None, None, S, T)), (None, (T,))],
            "head": [((4, 3, 2), (None, T, None)), (None, (None,))],  # rows p * 3 + c
        },
        {S: ["c0", "c2"], H1: ["c1"], T: ["c3"]},
    ),
    "res_inner": (
        _res_inner,
        {S: 6},
        {
            "stem": [(None, (None, S)), (None, (S,))],
            "inner": [(None, (S, S)), (None, (S,))],
            "ln": [(None, (S,))] * 2,
            "head": [(None, (S, None)), (None, (None,))],
        },
        {S: ["stem", "inner"]},
    ),
}


def _permuted_by_hand(model, spec, perms):
    """A clone of `model` with each group's units permuted (clone unit i = model unit
    perms[group][i]) by the hand-written table `spec`, through get/set_weights."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for name, weights in spec.items():
        layer = clone.get_layer(name)
        values = layer.get_weights()
        assert len(values) == len(weights), name
        out = []
        for value, (view, axes) in zip(values, weights):
            v = value.reshape(view) if view is not None else value
            for axis, g in enumerate(axes):
                if g is not None:
                    v = np.take(v, perms[g], axis=axis)
            out.append(v.reshape(value.shape))
        layer.set_weights(out)
    return clone


def _kernel(model, name):
    return model.get_layer(name).kernel.path


@pytest.mark.parametrize("kind", sorted(RESIDUAL))
def test_residual_groups_are_shared_across_the_merge(kind):
    from keras_landscape.models.align import permutation_groups

    builder, _, _, members = RESIDUAL[kind]
    model = builder()
    expected = {
        _kernel(model, names[0]): [_kernel(model, n) for n in names] for names in members.values()
    }
    assert permutation_groups(model) == expected


@pytest.mark.parametrize("kind", sorted(RESIDUAL))
@pytest.mark.parametrize("perm_seed", [1, 2])
def test_residual_permuted_copy_is_recovered_exactly(kind, perm_seed, weights_unchanged):
    from keras_landscape.engine.params import ParameterLayout, non_trainable_state
    from keras_landscape.models.align import permute_non_trainable, weight_matching

    builder, sizes, spec, members = RESIDUAL[kind]
    model = builder()
    rng = np.random.default_rng(perm_seed)
    perms = {g: rng.permutation(n) for g, n in sizes.items()}
    clone = _permuted_by_hand(model, spec, perms)
    layout = ParameterLayout.from_model(model)
    theta_a, theta_b = layout.theta_of(model), layout.theta_of(clone)
    x = _inputs(model)
    nt_a, nt_b = non_trainable_state(model), non_trainable_state(clone)
    # the hand permutation is a symmetry: the copy computes A's function
    np.testing.assert_allclose(
        _outputs(model, theta_b, x, nt_b), _outputs(model, theta_a, x, nt_a), atol=1e-5
    )
    check = weights_unchanged(model)

    result = weight_matching(model, theta_a, theta_b)

    check()
    assert result.distance_before > 0.5
    assert result.distance_after == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_array_equal(result.theta, theta_a)  # an exact rearrangement
    for g, names in members.items():  # aligned unit i = B unit perm[i] = A unit q[perm[i]]
        perm = result.permutations[_kernel(model, names[0])]
        np.testing.assert_array_equal(perms[g][perm], np.arange(sizes[g]))
    nt_aligned = permute_non_trainable(model, nt_b, result.permutations)
    for got, want in zip(nt_aligned, nt_a):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", sorted(RESIDUAL))
def test_residual_alignment_preserves_the_function(kind):
    from keras_landscape.engine.params import ParameterLayout, non_trainable_state
    from keras_landscape.models.align import permute_non_trainable, permute_theta, weight_matching

    builder = RESIDUAL[kind][0]
    model_a, model_b = builder(seed=0), builder(seed=1)
    layout = ParameterLayout.from_model(model_a)
    theta_a, theta_b = layout.theta_of(model_a), layout.theta_of(model_b)

    result = weight_matching(model_a, theta_a, theta_b, seed=3)

    assert result.distance_after < result.distance_before
    assert not np.array_equal(result.theta, theta_b)  # a real permutation happened
    assert any(p != sorted(p) for p in result.permutations.values())
    np.testing.assert_array_equal(np.sort(result.theta), np.sort(theta_b))
    np.testing.assert_array_equal(
        permute_theta(model_a, theta_b, result.permutations), result.theta
    )
    nt_b = non_trainable_state(model_b)
    nt_aligned = permute_non_trainable(model_a, nt_b, result.permutations)
    x = _inputs(model_a, n=32)
    np.testing.assert_allclose(
        _outputs(model_a, result.theta, x, nt_aligned),
        _outputs(model_a, theta_b, x, nt_b),
        rtol=1e-5,
        atol=1e-5,
    )
    if kind != "res_inner":  # BatchNorm statistics must move with the units
        assert not np.allclose(
            _outputs(model_a, result.theta, x, nt_b), _outputs(model_a, theta_b, x, nt_b), atol=1e-3
        )


def test_a_stream_added_to_the_inputs_stays_fixed():
    """x + Dense(x) on the model's inputs: the Dense's units are the input features, never
    permuted; the other hidden layer still is."""
    import keras

    from keras_landscape.models.align import permutation_groups

    L = keras.layers
    inputs = keras.Input((4,))
    x = L.Add()([inputs, L.Dense(4, name="to_inputs")(inputs)])
    h = L.Dense(5, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, L.Dense(2)(h))
    assert permutation_groups(model) == {
        model.get_layer("hidden").kernel.path: [model.get_layer("hidden").kernel.path]
    }
