"""The bead-stacked forward equals K separate Keras calls, on a zoo of architectures."""

import numpy as np
import pytest

from keras_landscape.engine.state import StateLayout

K = 3


def _zoo(name: str):
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)
    l2 = keras.regularizers.L2(0.03)
    if name == "mlp_regularized_dropout":
        model = keras.Sequential(
            [
                keras.Input((7,)),
                layers.BatchNormalization(),  # on the shared input
                layers.Dense(5, activation="relu", kernel_regularizer=l2, bias_regularizer=l2),
                layers.BatchNormalization(scale=False),  # on a stacked value
                layers.Dropout(0.5),
                layers.Dense(3, activation="softmax"),
            ]
        )
        x = np.random.default_rng(0).normal(size=(6, 7))
    elif name == "cnn_bn_pool":
        model = keras.Sequential(
            [
                keras.Input((9, 9, 2)),
                layers.Conv2D(4, 3, activation="relu", kernel_regularizer=l2),
                layers.BatchNormalization(),
                layers.MaxPooling2D(),
                layers.Conv2D(5, 2, strides=2, padding="same", use_bias=False),
                layers.Conv2D(3, 2, dilation_rate=1, padding="valid", activation="tanh"),
                layers.Flatten(),
                layers.Dense(4),
            ]
        )
        x = np.random.default_rng(0).normal(size=(5, 9, 9, 2))
    elif name == "conv_channel_groups":
        model = keras.Sequential(
            [
                keras.Input((8, 8, 2)),
                layers.Conv2D(4, 3, activation="relu"),
                layers.BatchNormalization(center=False),
                layers.ReLU(max_value=1.5),
                layers.ZeroPadding2D(1),
                layers.AveragePooling2D(2),
                layers.Conv2D(3, 1, activation="softmax"),
                layers.Conv2D(5, 2),
                layers.GlobalAveragePooling2D(keepdims=True),
                layers.Flatten(),
                layers.Dense(2),
            ]
        )
        x = np.random.default_rng(0).normal(size=(5, 8, 8, 2))
    elif name == "conv1d_causal_global_pool":
        model = keras.Sequential(
            [
                keras.Input((12, 3)),
                layers.Conv1D(4, 3, padding="causal", activation="relu"),
                layers.Conv1D(6, 2, dilation_rate=2, activation="relu"),
                layers.GlobalAveragePooling1D(),
                layers.Dense(2),
            ]
        )
        x = np.random.default_rng(0).normal(size=(4, 12, 3))
    elif name == "functional_branches_shared_layer":
        inputs = keras.Input((6,))
        shared = layers.Dense(4, activation="tanh", kernel_regularizer=l2)
        a = shared(inputs)
        b = shared(layers.Dense(6)(inputs))
        c = layers.Dense(4, activity_regularizer=keras.regularizers.L1(0.1))(inputs)
        merged = layers.Concatenate()([layers.Add()([a, b]), c * 2.0])
        outputs = layers.Dense(2)(keras.ops.relu(merged))
        model = keras.Model(inputs, outputs)
        x = np.random.default_rng(0).normal(size=(5, 6))
    elif name == "embedding_lstm":
        model = keras.Sequential(
            [
                keras.Input((5,), dtype="int32"),
                layers.Embedding(11, 4),
                layers.LSTM(3, return_sequences=True),
                layers.Dense(11),
            ]
        )
        x = np.random.default_rng(0).integers(0, 11, size=(4, 5))
    elif name == "gru_variants_backwards":
        inputs = keras.Input((6, 3))
        a = layers.GRU(4, return_sequences=True, go_backwards=True)(inputs)
        b = layers.GRU(2, reset_after=False, activation="relu")(a)
        c = layers.LSTM(3, use_bias=False, go_backwards=True)(inputs)
        outputs = layers.Dense(2)(layers.Concatenate()([b, c]))
        model = keras.Model(inputs, outputs)
        x = np.random.default_rng(0).normal(size=(4, 6, 3))
    elif name == "masked_embedding_gru":
        model = keras.Sequential(
            [
                keras.Input((5,), dtype="int32"),
                layers.Embedding(11, 4, mask_zero=True),
                layers.GRU(3),
                layers.Dense(2),
            ]
        )
        x = np.random.default_rng(0).integers(0, 11, size=(4, 5))
    elif name == "custom_add_loss_frozen":

        class Scale(layers.Layer):
            def build(self, shape):
                self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

            def call(self, inputs):
                self.add_loss(0.5 * keras.ops.sum(keras.ops.square(self.w)))
                return inputs * self.w

        frozen, frozen_conv = layers.Dense(4), layers.Conv1D(2, 1)
        model = keras.Sequential(
            [
                keras.Input((3,)),
                frozen,
                Scale(),
                layers.Dense(6),
                layers.Reshape((3, 2)),
                frozen_conv,
                layers.Flatten(),
                layers.Dense(2),
            ]
        )
        frozen.trainable = False
        frozen_conv.trainable = False
        x = np.random.default_rng(0).normal(size=(4, 3))
    elif name == "nested_model_two_inputs":
        inner = keras.Sequential(
            [keras.Input((4,)), layers.Dense(3, activation="tanh"), layers.Dense(3)], name="inner"
        )
        a, b = keras.Input((4,), name="a"), keras.Input((2,), name="b")
        merged = layers.Concatenate()([inner(a), layers.Dense(3)(b)])
        model = keras.Model([a, b], layers.Dense(2)(merged))
        rng = np.random.default_rng(0)
        x = [rng.normal(size=(4, 4)).astype("float32"), rng.normal(size=(4, 2)).astype("float32")]
        return model, x
    elif name == "subclassed":

        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.a = layers.Dense(4, activation="relu")
                self.b = layers.Dense(2)

            def call(self, inputs):
                return self.b(self.a(inputs))

        model = Net()
        model(np.zeros((1, 3), "float32"))
        x = np.random.default_rng(0).normal(size=(4, 3))
    else:
        raise KeyError(name)
    for bn in (layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)):
        bn.moving_mean.assign(np.linspace(-0.5, 0.5, bn.moving_mean.shape[0]))
        bn.moving_variance.assign(np.linspace(0.5, 2.0, bn.moving_variance.shape[0]))
    return model, x.astype("int32" if x.dtype.kind == "i" else "float32")


ZOO = [
    "mlp_regularized_dropout",
    "cnn_bn_pool",
    "conv_channel_groups",
    "conv1d_causal_global_pool",
    "functional_branches_shared_layer",
    "embedding_lstm",
    "gru_variants_backwards",
    "masked_embedding_gru",
    "custom_add_loss_frozen",
    "nested_model_two_inputs",
    "subclassed",
]


@pytest.mark.parametrize("beads", [1, K])
@pytest.mark.parametrize("name", ZOO)
def test_stacked_forward_equals_separate_keras_calls(name, beads):
    from keras import ops

    from keras_landscape.engine import kernels as engine
    from keras_landscape.engine.params import ParameterLayout, non_trainable_state

    model, x = _zoo(name)
    layout = ParameterLayout.from_model(model)
    theta0 = layout.theta_of(model)
    rng = np.random.default_rng(2)
    thetas = np.stack([theta0 + 0.3 * rng.normal(size=theta0.shape) for _ in range(beads)])
    thetas = thetas.astype("float32")
    nt = [ops.convert_to_tensor(v) for v in non_trainable_state(model)]
    # Every bead has its own state (BatchNorm statistics, frozen weights), scaled apart.
    state_layout = StateLayout.from_model(model)
    states = np.stack([state_layout.state_of(model) * (1.0 + 0.2 * k) for k in range(beads)])
    forward = engine.make_stacked_forward(model, layout, state_layout)
    inputs = (
        [ops.convert_to_tensor(v) for v in x] if isinstance(x, list) else ops.convert_to_tensor(x)
    )
    predictions, regularizers = forward(
        ops.convert_to_tensor(thetas), ops.convert_to_tensor(states), nt, inputs
    )
    predictions = ops.convert_to_numpy(predictions)
    regularizers = ops.convert_to_numpy(regularizers)
    assert predictions.shape[0] == beads and regularizers.shape == (beads,)
    for k in range(beads):
        bead_nt = state_layout.non_trainable_values(states[k], non_trainable_state(model))
        y_pred, _, losses = model.stateless_call(
            [ops.convert_to_tensor(w) for w in layout.unflatten(thetas[k])],
            bead_nt,
            x,
            return_losses=True,
            **engine.inference_kwargs(model),
        )
        np.testing.assert_allclose(
            predictions[k], ops.convert_to_numpy(y_pred), rtol=2e-5, atol=2e-5
        )
        if k == 0:  # bead 0 has the model's own state: Keras's own call agrees
            layout.assign(model, thetas[k])
            expected = ops.convert_to_numpy(model(x, **engine.inference_kwargs(model)))
            np.testing.assert_allclose(predictions[k], expected, rtol=2e-5, atol=2e-5)
        expected_reg = float(sum(ops.convert_to_numpy(v) for v in losses)) if losses else 0.0
        np.testing.assert_allclose(regularizers[k], expected_reg, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["cnn_bn_pool", "mlp_regularized_dropout"])
def test_stacked_gradients_equal_per_bead_gradients(name):
    """d(sum of K bead losses)/d(thetas) row k is bead k's own gradient (Keras's, one model)."""
    import keras
    from keras import ops

    from keras_landscape.engine import backend
    from keras_landscape.engine import kernels as engine
    from keras_landscape.engine.params import ParameterLayout, non_trainable_state

    model, x = _zoo(name)
    layout = ParameterLayout.from_model(model)
    theta0 = layout.theta_of(model)
    rng = np.random.default_rng(3)
    thetas = (theta0 + 0.2 * rng.normal(size=(K,) + theta0.shape)).astype("float32")
    nt = [ops.convert_to_tensor(v) for v in non_trainable_state(model)]
    state_layout = StateLayout.from_model(model)
    states = ops.convert_to_tensor(np.stack([state_layout.state_of(model)] * K))
    forward = engine.make_stacked_forward(model, layout, state_layout)

    def total(thetas_t):
        predictions, regularizers = forward(thetas_t, states, nt, ops.convert_to_tensor(x))
        values = ops.mean(ops.square(predictions), axis=tuple(range(1, len(predictions.shape))))
        return ops.sum(values + regularizers), values

    _, _, grads = backend.value_and_grad(total)(ops.convert_to_tensor(thetas))
    grads = ops.convert_to_numpy(grads)

    def single(theta_t):
        weights = engine.split_theta(layout, theta_t)
        y_pred, _, losses = model.stateless_call(weights, nt, x, return_losses=True, training=False)
        return ops.mean(ops.square(y_pred)) + sum(losses), None

    for k in range(K):
        _, _, expected = backend.value_and_grad(single)(ops.convert_to_tensor(thetas[k]))
        np.testing.assert_allclose(grads[k], ops.convert_to_numpy(expected), rtol=1e-4, atol=1e-5)
    del keras


def test_walk_is_used_for_graph_models_and_not_for_masking_or_subclassed():
    from keras_landscape.engine import kernels as engine
    from keras_landscape.engine import stacked
    from keras_landscape.engine.params import ParameterLayout

    for name, walked in [
        ("cnn_bn_pool", True),
        ("masked_embedding_gru", False),
        ("subclassed", False),
    ]:
        model, _ = _zoo(name)
        built = stacked.build_stacked_forward(
            model,
            ParameterLayout.from_model(model),
            StateLayout.from_model(model),
            engine.inference_kwargs(model),
        )
        assert (built is not None) is walked, name


def test_plan_names_how_each_layer_is_batched():
    """Dense, Conv, LSTM/GRU and pooling use batched kernels; a custom layer is mapped."""
    from keras import ops

    from keras_landscape.engine import kernels as engine
    from keras_landscape.engine import stacked
    from keras_landscape.engine.params import ParameterLayout, non_trainable_state

    expectations = {
        "cnn_bn_pool": {
            "Conv2D": "grouped convolution",
            "MaxPooling2D": "beads as channel groups",
            "Flatten": "beads into batch",
            "Dense": "batched matmul",
            "BatchNormalization": "batched normalisation",
        },
        "conv_channel_groups": {
            "ReLU": "beads as channel groups",
            "ZeroPadding2D": "beads as channel groups",
            "AveragePooling2D": "beads as channel groups",
            "GlobalAveragePooling2D": "beads into batch",
            "BatchNormalization": "batched normalisation",
        },
        "gru_variants_backwards": {"GRU": "unrolled recurrence", "LSTM": "unrolled recurrence"},
        "embedding_lstm": {"Embedding": "stacked lookup", "LSTM": "unrolled recurrence"},
        "custom_add_loss_frozen": {"Scale": "mapped", "Dense": "batched matmul"},
        "mlp_regularized_dropout": {
            "Dropout": "beads into batch",
            "BatchNormalization": "batched normalisation",
        },
    }
    for name, expected in expectations.items():
        model, x = _zoo(name)
        layout = ParameterLayout.from_model(model)
        state_layout = StateLayout.from_model(model)
        forward = stacked.build_stacked_forward(
            model, layout, state_layout, engine.inference_kwargs(model)
        )
        thetas = ops.convert_to_tensor(np.stack([layout.theta_of(model)] * 2))
        states = ops.convert_to_tensor(np.stack([state_layout.state_of(model)] * 2))
        nt = [ops.convert_to_tensor(v) for v in non_trainable_state(model)]
        forward(thetas, states, nt, ops.convert_to_tensor(x))
        kinds = {}
        for layer in model._flatten_layers(include_self=False):
            if layer.name in forward.plan:
                kinds.setdefault(type(layer).__name__, set()).add(forward.plan[layer.name])
        for kind, how in expected.items():
            assert how in kinds[kind], (name, kind, kinds)


def _conv_stack(batch_norm: bool):
    import keras
    from keras import layers

    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [keras.Input((8, 8, 2)), layers.Conv2D(4, 3, activation="relu")]
        + ([layers.BatchNormalization()] if batch_norm else [])
        + [
            layers.Conv2D(3, 3, strides=2, padding="same", activation="tanh"),  # stacked input
            layers.Conv2D(2, 2, dilation_rate=1, name="after_stacked"),
            layers.Flatten(),
            layers.Dense(2),
        ]
    )
    return model, np.random.default_rng(5).normal(size=(4, 8, 8, 2)).astype("float32")


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("beads", [1, 2, 8])
def test_grouped_and_per_bead_convolution_plans_equal_keras(beads, batch_norm, monkeypatch):
    """Both plans for convolutions of stacked beads (one grouped convolution; one convolution
    per bead, for devices that cannot differentiate grouped ones) give Keras's own outputs and
    gradients, bead by bead. The grouped plan's gradient is checked only where this device
    can take it (oneDNN on)."""
    from keras import ops

    from keras_landscape.engine import backend
    from keras_landscape.engine import kernels as engine
    from keras_landscape.engine.params import ParameterLayout, non_trainable_state

    model, x = _conv_stack(batch_norm)
    layout = ParameterLayout.from_model(model)
    state_layout = StateLayout.from_model(model)
    theta0 = layout.theta_of(model)
    rng = np.random.default_rng(6)
    thetas = (theta0 + 0.3 * rng.normal(size=(beads,) + theta0.shape)).astype("float32")
    # Each bead with its own BatchNorm statistics.
    states = np.stack([state_layout.state_of(model) * (1.0 + 0.3 * k) for k in range(beads)])
    nt = [ops.convert_to_tensor(v) for v in non_trainable_state(model)]
    expected = []
    for k in range(beads):
        bead_nt = state_layout.non_trainable_values(states[k], non_trainable_state(model))

        def single(theta_t, bead_nt=bead_nt):
            weights = engine.split_theta(layout, theta_t)
            y_pred, _ = model.stateless_call(weights, bead_nt, x, training=False)
            return ops.mean(ops.square(y_pred)), y_pred

        loss, y_pred, grad = backend.value_and_grad(single)(ops.convert_to_tensor(thetas[k]))
        expected.append((ops.convert_to_numpy(y_pred), ops.convert_to_numpy(grad)))

    supported = backend.grouped_convolution_gradients()
    for grouped in (True, False):
        monkeypatch.setattr(backend, "grouped_convolution_gradients", lambda g=grouped: g)
        forward = engine.make_stacked_forward(model, layout, state_layout)

        def total(thetas_t, forward=forward):
            predictions, _ = forward(thetas_t, ops.convert_to_tensor(states), nt, x)
            per_bead = ops.mean(ops.square(predictions), axis=(1, 2))
            return ops.sum(per_bead), predictions

        if grouped and not supported:
            predictions = ops.convert_to_numpy(total(ops.convert_to_tensor(thetas))[1])
            grads = None
        else:
            _, predictions, grads = backend.value_and_grad(total)(ops.convert_to_tensor(thetas))
            predictions, grads = ops.convert_to_numpy(predictions), ops.convert_to_numpy(grads)
        if beads > 1:  # one bead is one plain convolution either way
            how = "grouped convolution" if grouped else "per-bead convolutions"
            assert forward.plan["after_stacked"] == how
        for k, (y_pred, grad) in enumerate(expected):
            np.testing.assert_allclose(predictions[k], y_pred, rtol=2e-5, atol=2e-5)
            if grads is not None:
                np.testing.assert_allclose(grads[k], grad, rtol=1e-4, atol=1e-5)
