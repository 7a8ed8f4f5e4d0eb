"""One call of a Keras model at K parameter vectors ("beads") at once.

DSS projects several beads together and checks many points of a segment together, so the
engine evaluates a model at a stack `thetas` (K, P) on one shared batch of data. Mapping the
whole model over the K rows (`tf.vectorized_map`, `jax.vmap`) batches Dense layers well but
not convolutions with per-bead filters: TensorFlow's pfor has no batched Conv2D for stacked
filters (it falls back to a loop), and even where a backend batches them it redoes the first
layer's work on the shared input K times.

`build_stacked_forward` walks the graph of a Functional or Sequential model instead, layer by
layer, and keeps each intermediate value either *shared* (the same for every bead: the input,
and anything computed from it without trainable weights) or *stacked* (a leading bead axis K):

- Dense on a shared input: one matrix product with the K kernels side by side (D, K*U);
  on a stacked input: one batched matrix product.
- Conv1D/Conv2D on a shared input: one convolution with the K filter banks stacked along the
  output channels; on a stacked input: one grouped convolution (K groups), the beads' channels
  side by side.
- Any other layer: its own `call` mapped over the beads (`backend.map_beads`), so custom
  layers, recurrent layers and everything else keep Keras's exact semantics.

Models this walk cannot follow (subclassed models, masking) return None, and the engine maps
the whole model over the beads instead. The result equals K separate `stateless_call`s
(tests/test_stacked.py checks this against Keras on a zoo of models).
"""

from __future__ import annotations

import logging

import keras
from keras import ops

from keras_landscape import backend
from keras_landscape.params import ParameterLayout

log = logging.getLogger("keras_landscape")


class _Stacked:
    """A value with a leading bead axis K (a bare tensor in the walk is shared by all beads)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def _graph_of(model):
    """The Functional graph that runs `model`, or None when there is none to walk."""
    functional = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    if not isinstance(functional, keras.Model) or not hasattr(functional, "_run_through_graph"):
        return None
    if not hasattr(functional, "_nodes_by_depth") or not hasattr(functional, "_standardize_inputs"):
        return None
    return functional


def _masking_layer(model) -> str | None:
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Masking) or getattr(layer, "mask_zero", False):
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


def _dense_rule(layer) -> bool:
    return type(layer) is keras.layers.Dense and _plain(layer)


def _conv_rule(layer) -> bool:
    return (
        type(layer) in (keras.layers.Conv1D, keras.layers.Conv2D)
        and _plain(layer)
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


def _side_by_side(kernel):
    """(K, ..., I, O) per-bead kernels -> (..., I, K*O), bead-major along the last axis."""
    rank = len(kernel.shape)
    moved = ops.transpose(kernel, list(range(1, rank - 1)) + [0, rank - 1])
    shape = ops.shape(moved)
    return ops.reshape(moved, tuple(shape[:-2]) + (shape[-2] * shape[-1],))


def _split_beads(outputs, k: int):
    """(..., K*O) -> (K, ..., O)."""
    shape = ops.shape(outputs)
    split = ops.reshape(outputs, tuple(shape[:-1]) + (k, shape[-1] // k))
    return _beads_first(split, len(split.shape) - 2)


def _bias_and_activation(layer, outputs, bias):
    if bias is not None:
        outputs = outputs + ops.reshape(bias, (ops.shape(bias)[0],) + (1,) * (len(outputs.shape) - 2) + (ops.shape(bias)[-1],))
    return layer.activation(outputs) if layer.activation is not None else outputs


def _dense(layer, weights, inputs):
    kernel = weights[0]
    bias = weights[1] if layer.use_bias else None
    k = ops.shape(kernel)[0]
    if isinstance(inputs, _Stacked):
        x = inputs.value
        shape = ops.shape(x)
        flat = ops.reshape(x, (shape[0], -1, shape[-1]))
        out = ops.matmul(flat, kernel)
        out = ops.reshape(out, tuple(shape[:-1]) + (layer.units,))
    else:
        shape = ops.shape(inputs)
        flat = ops.reshape(inputs, (-1, shape[-1]))
        out = _split_beads(ops.matmul(flat, _side_by_side(kernel)), k)
        out = ops.reshape(out, (k,) + tuple(shape[:-1]) + (layer.units,))
    return _bias_and_activation(layer, out, bias)


def _conv(layer, weights, inputs):
    kernel = weights[0]
    bias = weights[1] if layer.use_bias else None
    k = ops.shape(kernel)[0]
    if isinstance(inputs, _Stacked):
        x = inputs.value  # (K, B, *spatial, C)
        rank = len(x.shape)
        x = ops.transpose(x, list(range(1, rank - 1)) + [0, rank - 1])
        shape = ops.shape(x)
        x = ops.reshape(x, tuple(shape[:-2]) + (shape[-2] * shape[-1],))
    else:
        x = inputs
    out = backend.convolution(
        x,
        _side_by_side(kernel),
        strides=list(layer.strides),
        padding=layer.padding,
        dilation_rate=list(layer.dilation_rate),
    )
    return _bias_and_activation(layer, _split_beads(out, k), bias)


RULES = ((_dense_rule, _dense), (_conv_rule, _conv))


class _Walk:
    """The per-model tables the stacked forward needs (built once, used at trace time)."""

    def __init__(self, model, layout: ParameterLayout):
        self.model = model
        self.layout = layout
        position = {id(v): i for i, v in enumerate(model.trainable_variables)}
        self.position = position
        self.non_trainable_position = {
            id(v): i for i, v in enumerate(model.non_trainable_variables)
        }
        self.regularized = [
            (i, v.regularizer)
            for i, v in enumerate(model.trainable_variables)
            if getattr(v, "regularizer", None) is not None
        ]

    def weights_of(self, layer, thetas):
        """The layer's trainable variables as (K, *shape) slices of thetas."""
        out = []
        for v in getattr(layer, "trainable_variables", []):
            i = self.position[id(v)]
            o, n, s = self.layout.offsets[i], self.layout.sizes[i], self.layout.shapes[i]
            out.append(ops.reshape(thetas[:, o : o + n], (-1,) + tuple(s)))
        return out

    def non_trainable_of(self, layer, non_trainable):
        return [non_trainable[self.non_trainable_position[id(v)]] for v in layer.non_trainable_variables]


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


def build_stacked_forward(model, layout: ParameterLayout, call_kwargs: dict):
    """fn(thetas (K, P), non_trainable, x) -> (outputs, regularizer (K,)), or None.

    `outputs` has the model's output structure, each leaf with a leading bead axis K;
    `regularizer` is each bead's sum of model losses (weight and activity regularizers,
    add_loss), as `model.stateless_call(..., return_losses=True)` would give it.
    """
    graph = _graph_of(model)
    if graph is None:
        return None
    masking = _masking_layer(model)
    if masking is not None:
        log.info("Beads map the whole model: layer %r produces masks.", masking)
        return None
    walk = _Walk(model, layout)

    def forward(thetas, non_trainable, x):
        k = ops.shape(thetas)[0]
        node_losses = []

        def operation_fn(operation):
            def call(*args, **kwargs):
                if "training" in getattr(operation, "_call_context_args", {}) and call_kwargs:
                    kwargs = {**kwargs, **call_kwargs}
                return _apply(operation, args, kwargs)

            return call

        def _apply(operation, args, kwargs):
            flat = keras.tree.flatten((args, kwargs))
            stacked_in = any(isinstance(a, _Stacked) for a in flat)
            trainable = list(getattr(operation, "trainable_variables", []))
            nt = walk.non_trainable_of(operation, non_trainable) if isinstance(operation, keras.layers.Layer) else []
            if not trainable and not stacked_in:
                outputs, loss = _scoped_call(operation, [], nt, args, kwargs)
                node_losses.append(ops.broadcast_to(loss, (k,)))
                return outputs
            weights = walk.weights_of(operation, thetas)
            context = getattr(operation, "_call_context_args", set())
            single_input = len(args) == 1 and all(name in context for name in kwargs)
            for applies, rule in RULES:
                if single_input and applies(operation):
                    return _Stacked(rule(operation, weights, args[0]))
            # Everything else: the layer's own call, mapped over the beads. Shared values do
            # not depend on thetas: cutting their gradient keeps the map's backward pass from
            # differentiating into the data (a gather whose size XLA would recompile for).
            flat = [a if isinstance(a, _Stacked) else _no_gradient(a) for a in flat]
            stacked_leaves = [a.value for a in flat if isinstance(a, _Stacked)]

            def one_bead(elems):
                bead_weights, bead_leaves = elems
                leaves = iter(bead_leaves)
                bead_flat = [next(leaves) if isinstance(a, _Stacked) else a for a in flat]
                bead_args, bead_kwargs = keras.tree.pack_sequence_as((args, kwargs), bead_flat)
                return _scoped_call(operation, bead_weights, nt, bead_args, bead_kwargs)

            outputs, loss = backend.map_beads(one_bead, (weights, stacked_leaves))
            node_losses.append(loss)
            return keras.tree.map_structure(_Stacked, outputs)

        inputs = graph._standardize_inputs(x)
        outputs = graph._run_through_graph(inputs, operation_fn=operation_fn)
        outputs = keras.tree.map_structure(
            lambda o: o.value
            if isinstance(o, _Stacked)
            else ops.broadcast_to(ops.expand_dims(o, 0), (k,) + tuple(ops.shape(o))),
            outputs,
        )
        if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
            outputs = outputs[0]
        regularizer = ops.zeros((k,), "float32")
        for loss in node_losses:
            regularizer = regularizer + loss
        for i, regularize in walk.regularized:
            o, n, s = layout.offsets[i], layout.sizes[i], layout.shapes[i]
            values = ops.reshape(thetas[:, o : o + n], (-1,) + tuple(s))
            regularizer = regularizer + backend.map_beads(
                lambda w, regularize=regularize: ops.cast(regularize(w), "float32"), values
            )
        return outputs, regularizer

    return forward
