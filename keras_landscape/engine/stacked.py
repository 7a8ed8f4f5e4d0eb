"""One call of a Keras model at K parameter vectors ("beads") at once.

DSS projects several beads together and checks many points of a segment together, so the
engine evaluates a model at a stack `thetas` (K, P) on one shared batch of data. Mapping the
whole model over the K rows (`tf.vectorized_map`, `jax.vmap`) batches Dense layers well but
not convolutions with per-bead filters: TensorFlow's pfor has no batched Conv2D for stacked
filters (it falls back to a loop), and even where a backend batches them it redoes the first
layer's work on the shared input K times.

`StackedForward` walks the graph of a Functional or Sequential model instead, layer by layer,
and keeps each intermediate value either *shared* (the same for every bead: the input, and
anything computed from it without trainable weights) or *stacked* (a leading bead axis K).
Each layer gets one of these plans (`StackedForward.plan` records which):

- `batched matmul` (Dense): a shared input meets the K kernels side by side (D, K*U) in one
  GEMM; a stacked input, one batched matmul.
- `grouped convolution` (Conv1D/Conv2D): a shared input meets the K filter banks stacked
  along the output channels; a stacked input, one grouped convolution with K groups. Where
  the device cannot differentiate grouped convolutions (TensorFlow on a CPU without oneDNN,
  checked once per process), a stacked input takes `per-bead convolutions` instead: each
  bead's input meets its own filters, mapped over the beads.
- `unrolled recurrence` (LSTM/GRU over a static length): Keras's cell equations, every step
  one batched matmul for all beads.
- `batched normalisation` (BatchNormalization at inference), `stacked lookup` (Embedding).
- `beads as channel groups`: pooling, padding and elementwise layers after a convolution run
  once on its channel-grouped output (B, ..., K*C), which stays grouped.
- `beads into batch`: built-in per-sample layers without weights (pooling, Flatten,
  activations, ...) run once on the beads folded into the batch axis.
- `mapped`: any other layer runs its own `call`, mapped over the beads with
  `backend.map_beads`, so custom layers keep Keras's exact semantics.

Models this walk cannot follow (subclassed models, masks) get None from
`build_stacked_forward`, and the engine maps the whole model over the beads instead. The
result equals K separate `stateless_call`s (tests/test_stacked.py checks outputs, losses and
gradients against Keras on a zoo of models).
"""

from __future__ import annotations

import logging

import keras
import numpy as np
from keras import ops

from keras_landscape.engine import backend
from keras_landscape.engine.params import ParameterLayout
from keras_landscape.engine.state import StateLayout

log = logging.getLogger("keras_landscape")


class _Stacked:
    """A value with a leading bead axis K (a bare tensor in the walk is shared by all beads)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


class _Grouped(_Stacked):
    """A bead-dependent value kept as (B, ..., K*C): the beads' channels side by side,
    bead-major. Convolutions produce it and take it without moving the bead axis; layers
    that work channel by channel pass it on; `value` gives the (K, B, ..., C) view."""

    __slots__ = ("grouped", "k", "_value")

    def __init__(self, grouped, k):
        self.grouped = grouped
        self.k = k
        self._value = None

    @property
    def value(self):
        if self._value is None:
            self._value = _split_beads(self.grouped, self.k)
        return self._value


def _graph_of(model):
    """The Functional graph that runs `model`, or None when there is none to walk."""
    functional = model
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
    if not isinstance(functional, keras.Model) or not hasattr(functional, "_run_through_graph"):
        return None
    if not hasattr(functional, "_nodes_by_depth") or not hasattr(functional, "_standardize_inputs"):
        return None
    return functional


def _masking_layer(model) -> str | None:
    """A layer that may attach a Keras mask to its output (the walk does not carry masks)."""
    base = keras.layers.Layer.compute_mask
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Masking) or getattr(layer, "mask_zero", False):
            return layer.name
        custom = not type(layer).__module__.startswith("keras.")
        if custom and getattr(type(layer), "compute_mask", base) is not base:
            return layer.name
    return None


def _plain(layer) -> bool:
    """A layer whose call we may replace by our own batched arithmetic."""
    return (
        getattr(layer, "activity_regularizer", None) is None
        and not getattr(layer, "lora_enabled", False)
        and getattr(layer, "quantization_mode", None) is None
        and getattr(layer.dtype_policy, "quantization_mode", None) is None
        and layer.compute_dtype == "float32"
        and getattr(layer, "_remat_mode", None) is None
    )


def _state_free(layer) -> bool:
    """No non-trainable state other than random seeds (unused at inference)."""
    seeds = {
        id(generator.state)
        for sub in layer._flatten_layers(include_self=True)
        for generator in getattr(sub, "_seed_generators", [])
    }
    return all(id(v) in seeds for v in layer.non_trainable_variables)


def _all_trainable(layer) -> bool:
    return _plain(layer) and bool(layer.trainable_variables) and _state_free(layer)


def _dense_rule(layer) -> bool:
    return type(layer) is keras.layers.Dense and _all_trainable(layer)


def _conv_rule(layer) -> bool:
    return (
        type(layer) in (keras.layers.Conv1D, keras.layers.Conv2D)
        and _all_trainable(layer)
        and layer.groups == 1
        and layer.data_format == "channels_last"
        and layer.padding in ("valid", "same")
    )


def _no_gradient(value):
    return ops.stop_gradient(value) if ops.is_tensor(value) else value


def _beads_first(value, axis: int):
    """Move `axis` of value to the front."""
    rank = len(value.shape)
    order = [axis] + [i for i in range(rank) if i != axis]
    return ops.transpose(value, order)


def _single_bead(value) -> bool:
    """The stack holds one bead (statically): moving the bead axis is then a reshape."""
    return value.shape[0] == 1


def _side_by_side(kernel):
    """(K, ..., I, O) per-bead kernels -> (..., I, K*O), bead-major along the last axis."""
    if _single_bead(kernel):
        return kernel[0]
    rank = len(kernel.shape)
    moved = ops.transpose(kernel, list(range(1, rank - 1)) + [0, rank - 1])
    shape = ops.shape(moved)
    return ops.reshape(moved, tuple(shape[:-2]) + (shape[-2] * shape[-1],))


def _split_beads(outputs, k: int):
    """(..., K*O) -> (K, ..., O)."""
    if isinstance(k, int) and k == 1:
        return ops.expand_dims(outputs, 0)
    shape = ops.shape(outputs)
    split = ops.reshape(outputs, tuple(shape[:-1]) + (k, shape[-1] // k))
    return _beads_first(split, len(split.shape) - 2)


_ELEMENTWISE = {
    "linear",
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "swish",
    "sigmoid",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "tanh",
    "softplus",
    "softsign",
    "exponential",
    "mish",
    "log_sigmoid",
}


def _elementwise(activation) -> bool:
    """An activation that acts on each element alone (softmax, for one, does not)."""
    return activation is None or getattr(activation, "__name__", None) in _ELEMENTWISE


def _bias_and_activation(layer, outputs, bias):
    if bias is not None:
        per_bead = (ops.shape(bias)[0],) + (1,) * (len(outputs.shape) - 2) + (ops.shape(bias)[-1],)
        outputs = outputs + ops.reshape(bias, per_bead)
    return layer.activation(outputs) if layer.activation is not None else outputs


def _matmul(inputs, kernel):
    """inputs (K, ..., D) stacked or (..., D) shared, kernel (K, D, O) -> (K, ..., O)."""
    k, units = ops.shape(kernel)[0], ops.shape(kernel)[-1]
    if isinstance(inputs, _Stacked):
        x = inputs.value
        shape = ops.shape(x)
        out = ops.matmul(ops.reshape(x, (shape[0], -1, shape[-1])), kernel)
        return ops.reshape(out, tuple(shape[:-1]) + (units,))
    shape = ops.shape(inputs)
    flat = ops.reshape(inputs, (-1, shape[-1]))
    out = _split_beads(ops.matmul(flat, _side_by_side(kernel)), k)
    return ops.reshape(out, (k,) + tuple(shape[:-1]) + (units,))


def _dense(layer, value, inputs):
    bias = value(layer.bias) if layer.use_bias else None
    return _bias_and_activation(layer, _matmul(inputs, value(layer.kernel)), bias)


MAX_UNROLLED_STEPS = 256


def _recurrent_rule(layer) -> bool:
    """LSTM/GRU over a short static sequence: unrolled, every step batched over beads."""
    return (
        type(layer) in (keras.layers.LSTM, keras.layers.GRU)
        and _all_trainable(layer)
        and not layer.stateful
        and not layer.return_state
    )


def _lstm_step(cell, recurrent, x_t, state):
    h, c = state
    z = ops.split(x_t + ops.matmul(h, recurrent), 4, axis=-1)
    gate = cell.recurrent_activation
    c = gate(z[1]) * c + gate(z[0]) * cell.activation(z[2])
    h = cell.recurrent_activation(z[3]) * cell.activation(c)
    return h, (h, c)


def _gru_step(cell, recurrent, recurrent_bias, x_t, state):
    (h,) = state
    units = cell.units
    x_z, x_r, x_h = x_t[..., :units], x_t[..., units : 2 * units], x_t[..., 2 * units :]
    inner = ops.matmul(h, recurrent[..., : 2 * units])
    if recurrent_bias is not None:
        inner = inner + recurrent_bias[..., : 2 * units]
    z = cell.recurrent_activation(x_z + inner[..., :units])
    r = cell.recurrent_activation(x_r + inner[..., units:])
    if cell.reset_after:
        candidate = ops.matmul(h, recurrent[..., 2 * units :])
        if recurrent_bias is not None:
            candidate = candidate + recurrent_bias[..., 2 * units :]
        candidate = r * candidate
    else:
        candidate = ops.matmul(r * h, recurrent[..., 2 * units :])
    h = z * h + (1.0 - z) * cell.activation(x_h + candidate)
    return h, (h,)


def _recurrent(layer, value, inputs):
    """Keras's LSTM/GRU equations (zero initial state, inference), all beads per step.

    None (the layer's own call is mapped instead) when the sequence length is not static
    or longer than MAX_UNROLLED_STEPS.
    """
    x = inputs.value if isinstance(inputs, _Stacked) else inputs
    steps = x.shape[-2]
    if (
        len(x.shape) != (4 if isinstance(inputs, _Stacked) else 3)
        or not isinstance(steps, int)
        or steps > MAX_UNROLLED_STEPS
    ):
        return None
    cell = layer.cell
    kernel, recurrent = value(cell.kernel), value(cell.recurrent_kernel)
    bias = value(cell.bias) if cell.use_bias else None
    k = ops.shape(kernel)[0]
    input_bias, recurrent_bias = bias, None
    if bias is not None and len(bias.shape) == 3:  # GRU reset_after: (K, 2, 3U)
        input_bias, recurrent_bias = bias[:, 0], ops.expand_dims(bias[:, 1], 1)
    projected = _matmul(inputs, kernel)  # (K, B, T, G*U): the input term of every step
    if input_bias is not None:
        projected = projected + ops.reshape(input_bias, (k, 1, 1, -1))
    batch = ops.shape(projected)[1]
    h0 = ops.zeros((k, batch, cell.units), projected.dtype)
    if isinstance(layer, keras.layers.LSTM):
        state = (h0, h0)
        step = lambda x_t, st: _lstm_step(cell, recurrent, x_t, st)  # noqa: E731
    else:
        state = (h0,)
        step = lambda x_t, st: _gru_step(cell, recurrent, recurrent_bias, x_t, st)  # noqa: E731
    order = range(steps - 1, -1, -1) if layer.go_backwards else range(steps)
    outputs = []
    for t in order:
        h, state = step(projected[:, :, t], state)
        outputs.append(h)
    return ops.stack(outputs, axis=2) if layer.return_sequences else outputs[-1]


class _Planned:
    """A rule's result with the plan it chose, where one rule has more than one."""

    __slots__ = ("how", "result")

    def __init__(self, how: str, result):
        self.how = how
        self.result = result


def _conv(layer, value, inputs):
    kernel = value(layer.kernel)
    bias = value(layer.bias) if layer.use_bias else None
    k = ops.shape(kernel)[0]
    settings = dict(
        strides=list(layer.strides), padding=layer.padding, dilation_rate=list(layer.dilation_rate)
    )
    stacked = isinstance(inputs, _Stacked) and not _single_bead(kernel)
    if stacked and not backend.grouped_convolution_gradients():
        # No grouped-convolution gradient on this device (TensorFlow's CPU kernels without
        # oneDNN): each bead's input meets its own filters in a loop. Measured there, this
        # is also faster than the grouped forward pass (docs/performance.md).
        out = backend.bead_convolutions(inputs.value, kernel, **settings)
        return _Planned("per-bead convolutions", _bias_and_activation(layer, out, bias))
    if isinstance(inputs, _Grouped):
        x = inputs.grouped
    elif isinstance(inputs, _Stacked):
        x = inputs.value  # (K, B, *spatial, C)
        if _single_bead(x):
            x = x[0]
        else:
            rank = len(x.shape)
            x = ops.transpose(x, list(range(1, rank - 1)) + [0, rank - 1])
            shape = ops.shape(x)
            x = ops.reshape(x, tuple(shape[:-2]) + (shape[-2] * shape[-1],))
    else:
        x = inputs
    out = backend.convolution(x, _side_by_side(kernel), **settings)
    if not _elementwise(layer.activation):
        return _bias_and_activation(layer, _split_beads(out, k), bias)
    if bias is not None:
        out = out + ops.reshape(bias, (-1,))
    return _Grouped(layer.activation(out) if layer.activation is not None else out, k)


def _batch_norm_rule(layer) -> bool:
    return (
        type(layer) is keras.layers.BatchNormalization
        and _plain(layer)
        and bool(layer.trainable_variables)
        and not getattr(layer, "renorm", False)
    )


def _batch_norm(layer, value, inputs):
    """Inference batch normalisation: moving statistics and gamma/beta per bead (or shared)."""
    grouped = isinstance(inputs, _Grouped)
    if grouped:
        x, rank = inputs.grouped, len(inputs.grouped.shape)
    elif isinstance(inputs, _Stacked):
        x, rank = inputs.value, len(inputs.value.shape) - 1
    else:
        x, rank = inputs, len(inputs.shape)
    if layer.axis not in (-1, rank - 1):
        return None
    # Per-bead (K, C) scale and offset; the rule admits only layers with gamma or beta.
    inverse = ops.rsqrt(value(layer.moving_variance) + layer.epsilon)
    if layer.scale:
        inverse = inverse * value(layer.gamma)
    else:
        inverse = ops.broadcast_to(inverse, ops.shape(value(layer.beta)))
    offset = -value(layer.moving_mean) * inverse
    if layer.center:
        offset = offset + value(layer.beta)
    x = ops.cast(x, "float32")
    if grouped:
        return _Grouped(x * ops.reshape(inverse, (-1,)) + ops.reshape(offset, (-1,)), inputs.k)
    per_bead = (ops.shape(inverse)[0],) + (1,) * (rank - 1) + (-1,)
    return x * ops.reshape(inverse, per_bead) + ops.reshape(offset, per_bead)


def _batch_norm_train(layer, value, inputs, record):
    """Train-mode batch normalisation (Keras's: biased batch moments over every axis but the
    channels), each bead on its own batch moments; `record(layer, mean, variance)` receives
    the (K, C) moments, or (C,) for a shared input."""
    grouped = isinstance(inputs, _Grouped)
    if grouped:
        x = inputs.grouped
        rank = len(x.shape)
        axes = list(range(rank - 1))
    elif isinstance(inputs, _Stacked):
        x = inputs.value
        rank = len(x.shape) - 1
        axes = list(range(1, rank))
    else:
        x = inputs
        rank = len(x.shape)
        axes = list(range(rank - 1))
    if layer.axis not in (-1, rank - 1):
        return None
    x = ops.cast(x, "float32")
    mean, variance = ops.moments(x, axes)
    gamma = value(layer.gamma) if layer.scale else None
    beta = value(layer.beta) if layer.center else None
    inverse = ops.rsqrt(variance + layer.epsilon)
    if grouped:
        record(layer, ops.reshape(mean, (inputs.k, -1)), ops.reshape(variance, (inputs.k, -1)))
        scale = inverse * ops.reshape(gamma, (-1,)) if gamma is not None else inverse
        out = (x - mean) * scale
        if beta is not None:
            out = out + ops.reshape(beta, (-1,))
        return _Grouped(out, inputs.k)
    record(layer, mean, variance)
    k = ops.shape(gamma if gamma is not None else beta)[0]
    per_bead = (k,) + (1,) * (rank - 1) + (-1,)
    if isinstance(inputs, _Stacked):
        normalized = (x - ops.expand_dims(mean, 1)) * ops.expand_dims(inverse, 1)
    else:
        normalized = ops.expand_dims((x - mean) * inverse, 0)
    if gamma is not None:
        normalized = normalized * ops.reshape(gamma, per_bead)
    if beta is not None:
        normalized = normalized + ops.reshape(beta, per_bead)
    return normalized


def _embedding_rule(layer) -> bool:
    return type(layer) is keras.layers.Embedding and _all_trainable(layer)


def _embedding(layer, value, inputs):
    """Shared ids into K tables at once: one gather from the tables stacked end to end."""
    if isinstance(inputs, _Stacked):
        return None
    table = value(layer.embeddings)  # (K, V, D)
    k, vocabulary = ops.shape(table)[0], ops.shape(table)[1]
    ids = ops.cast(inputs, "int32")
    offsets = ops.reshape(ops.arange(k, dtype="int32") * vocabulary, (k,) + (1,) * len(ids.shape))
    flat = ops.reshape(table, (-1, ops.shape(table)[-1]))
    return ops.take(flat, ops.expand_dims(ids, 0) + offsets, axis=0)


def _layer_types(names) -> tuple:
    return tuple(getattr(keras.layers, name) for name in names if hasattr(keras.layers, name))


# Built-in layers that treat every channel of every sample on its own (channels last)...
_CHANNELWISE_NAMES = (
    "ReLU",
    "LeakyReLU",
    "ELU",
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "Identity",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
    "Cropping1D",
    "Cropping2D",
    "Cropping3D",
    "UpSampling1D",
    "UpSampling2D",
    "UpSampling3D",
)
_CHANNELWISE = _layer_types(_CHANNELWISE_NAMES)
# ...and those that treat every sample on its own.
_PER_SAMPLE = _layer_types(
    _CHANNELWISE_NAMES
    + ("Activation", "PReLU", "Softmax", "Flatten", "Reshape", "Permute", "RepeatVector")
)


def _per_sample_rule(layer) -> bool:
    """Built-in layers without weights that treat every sample on its own."""
    return (
        type(layer) in _PER_SAMPLE
        and not layer.trainable_variables
        and _state_free(layer)
        and _plain(layer)
    )


def _channelwise(layer) -> bool:
    """Per-sample layers that also treat every channel on its own (channels last)."""
    return (
        type(layer) in _CHANNELWISE
        and _per_sample_rule(layer)
        and getattr(layer, "data_format", "channels_last") == "channels_last"
        and not getattr(layer, "keepdims", False)
    )


def _beads_into_batch(layer, inputs, kwargs, seeds):
    """(K, B, ...) -> the layer on (K*B, ...) -> (K, B, ...): one call for all beads.
    `seeds`: the layer's seed-generator states (Dropout in train mode draws from them)."""
    x = inputs.value
    k = ops.shape(x)[0]
    merged = ops.reshape(x, (-1,) + tuple(ops.shape(x)[2:]))
    outputs, _ = _scoped_call(layer, [], seeds, (merged,), kwargs)
    return ops.reshape(outputs, (k, -1) + tuple(ops.shape(outputs)[1:]))


RULES = (
    ("batched matmul", _dense_rule, _dense),
    ("grouped convolution", _conv_rule, _conv),
    ("unrolled recurrence", _recurrent_rule, _recurrent),
    ("batched normalisation", _batch_norm_rule, _batch_norm),
    ("stacked lookup", _embedding_rule, _embedding),
)


class _Walk:
    """The per-model tables the stacked forward needs (built once, used at trace time)."""

    def __init__(self, model, layout: ParameterLayout, state_layout: StateLayout):
        self.layout = layout
        self.position = {id(v): i for i, v in enumerate(model.trainable_variables)}
        self.non_trainable_position = {
            id(v): i for i, v in enumerate(model.non_trainable_variables)
        }
        variables = list(model.non_trainable_variables)
        self.state_slot = {
            id(variables[p]): (o, n, shape) for p, o, n, shape in state_layout.entries()
        }
        self.regularized = [
            (i, v.regularizer)
            for i, v in enumerate(model.trainable_variables)
            if getattr(v, "regularizer", None) is not None
        ]

    def slice(self, i: int, thetas):
        """Trainable variable i as a (K, *shape) slice of thetas."""
        o, n, shape = self.layout.offsets[i], self.layout.sizes[i], self.layout.shapes[i]
        return ops.reshape(thetas[:, o : o + n], (-1,) + tuple(shape))

    def weights_of(self, layer, thetas):
        """The layer's trainable variables as (K, *shape) slices of thetas."""
        return [
            self.slice(self.position[id(v)], thetas)
            for v in getattr(layer, "trainable_variables", [])
        ]

    def non_trainable_of(self, layer, states, non_trainable):
        """(values, per_bead): the layer's non-trainable variables, float ones as (K, *shape)
        slices of the states (per bead), the others (seed counters) shared."""
        values, per_bead = [], []
        for v in getattr(layer, "non_trainable_variables", []):
            if id(v) in self.state_slot:
                o, n, shape = self.state_slot[id(v)]
                values.append(ops.reshape(states[:, o : o + n], (-1,) + tuple(shape)))
                per_bead.append(True)
            else:
                values.append(non_trainable[self.non_trainable_position[id(v)]])
                per_bead.append(False)
        return values, per_bead


def _scoped_call(operation, trainable, non_trainable, args, kwargs):
    """operation(*args, **kwargs) with its variables bound to the given values.

    Returns (outputs, sum of the losses it added: activity regularizers, add_loss).
    """
    mapping = list(zip(getattr(operation, "trainable_variables", []), trainable)) + list(
        zip(getattr(operation, "non_trainable_variables", []), non_trainable)
    )
    with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
        outputs = operation(*args, **kwargs)
        losses = list(scope.losses)
    total = ops.cast(sum(ops.sum(loss) for loss in losses) if losses else 0.0, "float32")
    return outputs, total


def activation_elements(model, sample_shape: tuple) -> int:
    """Elements of every layer output for one sample: what each extra bead costs in memory.

    From the graph's symbolic shapes (unknown lengths taken as the longest input axis);
    for models without a graph, a generous multiple of the input size.
    """
    longest = max([int(d) for d in sample_shape if d] or [1])
    graph = _graph_of(model)
    if graph is None:
        return 64 * max(1, int(np.prod(sample_shape, dtype=np.int64)))
    total = 0
    for nodes in graph._nodes_by_depth.values():
        for node in nodes:
            if node.is_input:
                continue  # the data is shared by all thetas
            for tensor in node.outputs:
                dims = [longest if d is None else int(d) for d in tuple(tensor.shape)[1:]]
                total += int(np.prod(dims, dtype=np.int64))
    return max(1, total)


_logged: set[tuple[int, str]] = set()


def log_once(model, message: str) -> None:
    """Log `message` (INFO, -v) once per model."""
    if (id(model), message) not in _logged:
        _logged.add((id(model), message))
        log.info(message)


def _no_dropout(layer) -> bool:
    cell = getattr(layer, "cell", None)
    return not (getattr(cell, "dropout", 0) or getattr(cell, "recurrent_dropout", 0))


class StackedForward:
    """fn(thetas (K, P), states (K, S), non_trainable, x) -> (outputs, regularizer (K,)).

    `outputs` has the model's output structure, each leaf with a leading bead axis K;
    `regularizer` is each bead's sum of model losses (weight and activity regularizers,
    add_loss), as `model.stateless_call(..., return_losses=True)` would give it. Each bead
    uses its own row of `states` for its float non-trainable variables (BatchNorm
    statistics); `non_trainable` supplies the others (seed counters).
    `plan` maps each layer to how its beads were evaluated at the last trace. In train mode
    (`call_kwargs` training=True) `moments` receives each BatchNorm layer's batch moments.
    """

    def __init__(
        self, model, graph, layout: ParameterLayout, state_layout: StateLayout, call_kwargs: dict
    ):
        self.model = model
        self.graph = graph
        self.call_kwargs = call_kwargs
        self.training = bool(call_kwargs.get("training", False))
        self.walk = _Walk(model, layout, state_layout)
        self.plan: dict[str, str] = {}
        self.moments: dict[int, tuple] = {}
        self._layers: dict[int, object] = {}
        self.rules = self._train_rules() if self.training else RULES

    def _train_rules(self) -> tuple:
        """RULES for train mode: BatchNorm on batch moments (recorded), and recurrent layers
        with dropout left to their own call (the unrolled equations have none)."""
        rules = []
        for how, applies, rule in RULES:
            if how == "batched normalisation":
                rules.append(("batch statistics", applies, self._batch_norm_train))
            elif how == "unrolled recurrence":
                rules.append((how, lambda layer, a=applies: a(layer) and _no_dropout(layer), rule))
            else:
                rules.append((how, applies, rule))
        return tuple(rules)

    def _batch_norm_train(self, layer, value, inputs):
        def record(layer, mean, variance):
            self.moments[id(layer)] = (mean, variance)
            self._layers[id(layer)] = layer

        return _batch_norm_train(layer, value, inputs, record)

    def moments_as_state(self, k):
        """(K, S): the recorded batch moments in their moving statistics' slots, zeros
        elsewhere (the layout of `engine.make_batch_moments`)."""
        slots = {}
        for key, (mean, variance) in self.moments.items():
            layer = self._layers[key]
            slots[id(layer.moving_mean)] = mean
            slots[id(layer.moving_variance)] = variance
        pieces = []
        for variable in self.model.non_trainable_variables:
            if id(variable) not in self.walk.state_slot:
                continue
            _, n, _ = self.walk.state_slot[id(variable)]
            value = slots.get(id(variable))
            if value is None:
                pieces.append(ops.zeros((k, n), "float32"))
            else:
                pieces.append(ops.broadcast_to(ops.reshape(value, (-1, n)), (k, n)))
        return ops.concatenate(pieces, axis=1)

    def __call__(self, thetas, states, non_trainable, x):
        k = ops.shape(thetas)[0]
        node_losses = []

        def operation_fn(operation):
            def call(*args, **kwargs):
                if "training" in getattr(operation, "_call_context_args", {}) and self.call_kwargs:
                    kwargs = {**kwargs, **self.call_kwargs}
                how, outputs, loss = self._apply(
                    operation, args, kwargs, thetas, states, non_trainable
                )
                self.plan[operation.name] = how
                if loss is not None:
                    node_losses.append(ops.broadcast_to(loss, (k,)))
                return outputs

            return call

        inputs = self.graph._standardize_inputs(x)
        outputs = self.graph._run_through_graph(inputs, operation_fn=operation_fn)
        plan = "; ".join(f"{name}: {how}" for name, how in self.plan.items())
        mode = "train mode" if self.training else "inference"
        name = getattr(self.model, "name", "model")
        log_once(self.model, f"Beads through {name} ({mode}): {plan}.")
        outputs = keras.tree.map_structure(
            lambda o: (
                o.value
                if isinstance(o, _Stacked)
                else ops.broadcast_to(ops.expand_dims(o, 0), (k,) + tuple(ops.shape(o)))
            ),
            outputs,
        )
        if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
            outputs = outputs[0]
        regularizer = ops.zeros((k,), "float32")
        for loss in node_losses:
            regularizer = regularizer + loss
        for i, regularize in self.walk.regularized:
            values = self.walk.slice(i, thetas)
            regularizer = regularizer + backend.map_beads(
                lambda w, regularize=regularize: ops.cast(regularize(w), "float32"), values
            )
        return outputs, regularizer

    def _apply(self, operation, args, kwargs, thetas, states, non_trainable):
        """(how, outputs, summed losses or None) of one graph node."""
        flat = keras.tree.flatten((args, kwargs))
        stacked_in = any(isinstance(a, _Stacked) for a in flat)
        trainable = list(getattr(operation, "trainable_variables", []))
        nt, per_bead = self.walk.non_trainable_of(operation, states, non_trainable)
        if not trainable and not stacked_in and not any(per_bead):
            outputs, loss = _scoped_call(operation, [], nt, args, kwargs)
            return "shared", outputs, loss
        weights = self.walk.weights_of(operation, thetas)
        values = {
            id(v): w
            for v, w in zip(
                list(getattr(operation, "trainable_variables", []))
                + list(getattr(operation, "non_trainable_variables", [])),
                weights + nt,
            )
        }
        context = getattr(operation, "_call_context_args", set())
        single_input = len(args) == 1 and all(
            name in context or value is None for name, value in kwargs.items()
        )
        if single_input:
            for how, applies, rule in self.rules:
                if applies(operation):
                    result = rule(operation, lambda v: values[id(v)], args[0])
                    if isinstance(result, _Planned):
                        how, result = result.how, result.result
                    if result is not None:
                        if not isinstance(result, _Stacked):
                            result = _Stacked(result)
                        return how, result, None
            # These layers hold no state but seed-generator states (shared by the beads).
            if isinstance(args[0], _Grouped) and _channelwise(operation):
                outputs, _ = _scoped_call(operation, [], nt, (args[0].grouped,), kwargs)
                return "beads as channel groups", _Grouped(outputs, args[0].k), None
            if stacked_in and _per_sample_rule(operation):
                outputs = _beads_into_batch(operation, args[0], kwargs, nt)
                return "beads into batch", _Stacked(outputs), None
        # Everything else: the layer's own call, mapped over the beads. Shared values do not
        # depend on thetas: cutting their gradient keeps the map's backward pass from
        # differentiating into the data (a gather whose size XLA would recompile for).
        flat = [a if isinstance(a, _Stacked) else _no_gradient(a) for a in flat]
        stacked_leaves = [a.value for a in flat if isinstance(a, _Stacked)]
        bead_state = [v for v, b in zip(nt, per_bead) if b]

        def one_bead(elems):
            bead_weights, bead_nt, bead_leaves = elems
            leaves, states_of_bead = iter(bead_leaves), iter(bead_nt)
            bead_flat = [next(leaves) if isinstance(a, _Stacked) else a for a in flat]
            bead_args, bead_kwargs = keras.tree.pack_sequence_as((args, kwargs), bead_flat)
            own_nt = [next(states_of_bead) if b else v for v, b in zip(nt, per_bead)]
            return _scoped_call(operation, bead_weights, own_nt, bead_args, bead_kwargs)

        outputs, loss = backend.map_beads(one_bead, (weights, bead_state, stacked_leaves))
        return "mapped", keras.tree.map_structure(_Stacked, outputs), loss


def build_stacked_forward(
    model, layout: ParameterLayout, state_layout: StateLayout, call_kwargs: dict
):
    """A StackedForward for `model`, or None where its graph cannot be walked."""
    graph = _graph_of(model)
    if graph is None:
        return None
    masking = _masking_layer(model)
    if masking is not None:
        log.info("Beads map the whole model: layer %r produces masks.", masking)
        return None
    return StackedForward(model, graph, layout, state_layout, call_kwargs)
