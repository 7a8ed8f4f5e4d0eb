"""TensorFlow primitives: tf.function (XLA where it compiles), GradientTape, map_fn."""

from __future__ import annotations

import contextlib
import logging

import tensorflow as tf

log = logging.getLogger("keras_landscape")

_XLA_ERRORS = (
    tf.errors.InvalidArgumentError,
    tf.errors.UnimplementedError,
    tf.errors.NotFoundError,
    tf.errors.InternalError,
)
_warned_fallback: set[str] = set()


class _Compiled:
    """A tf.function that tries XLA first and falls back to a plain graph once, saying so."""

    def __init__(self, fn, xla: bool, label: str):
        self._label = label
        self._graph = tf.function(fn, jit_compile=False, reduce_retracing=True)
        self._xla = tf.function(fn, jit_compile=True, reduce_retracing=True) if xla else None
        # Kernels are built on purpose per model, optimizer and stack width: the same nested
        # Python function compiled many times. TensorFlow's "frequent retracing" warning keys
        # on its code object and would call that a mistake (the attribute is TF's own switch).
        for compiled in (self._graph, self._xla):
            if compiled is not None:
                compiled._omit_frequent_tracing_warning = True

    def __call__(self, *args):
        if self._xla is not None:
            try:
                return self._xla(*args)
            except _XLA_ERRORS as error:
                if self._label not in _warned_fallback:
                    _warned_fallback.add(self._label)
                    first_line = str(error).strip().splitlines()[0][:200]
                    log.warning(
                        "XLA could not compile %s (%s); running it as a plain TensorFlow graph.",
                        self._label,
                        first_line,
                    )
                self._xla = None
        return self._graph(*args)


def compile_function(fn, *, xla: bool = True, label: str = "function"):
    """Compile `fn` into a graph; with `xla`, try XLA and fall back (logged once)."""
    return _Compiled(fn, xla, label)


def value_and_grad(fn):
    """fn(theta, *args) -> (value, aux)  becomes  (theta, *args) -> (value, aux, dvalue/dtheta)."""

    def wrapped(theta, *args):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            value, aux = fn(theta, *args)
        return value, aux, tape.gradient(value, theta)

    return wrapped


_warned_loop: set[str] = set()


def _vectorized(fn, elems):
    """tf.vectorized_map without pfor's silent loop fallback; None where an op can't batch."""
    tf_log = logging.getLogger("tensorflow")
    previous = tf_log.level
    tf_log.setLevel(logging.CRITICAL)  # pfor logs each unconvertible op as an ERROR
    try:
        return tf.vectorized_map(fn, elems, fallback_to_while_loop=False)
    except (ValueError, NotImplementedError, TypeError) as error:
        label = getattr(fn, "__qualname__", "function")
        if label not in _warned_loop:
            _warned_loop.add(label)
            log.info(
                "Beads are mapped with a graph loop, not vectorised (%s).",
                str(error).splitlines()[0][:160],
            )
        return None
    finally:
        tf_log.setLevel(previous)


def _looped(fn, elems):
    # Traced once for its output structure; the unused copy is pruned from the graph.
    first = tf.nest.map_structure(lambda e: e[0], elems)
    signature = tf.nest.map_structure(tf.TensorSpec.from_tensor, fn(first))
    return tf.map_fn(fn, elems, fn_output_signature=signature, parallel_iterations=16)


def map_beads(fn, elems):
    """Apply fn to every bead of `elems` (a tensor or nested structure, leading axis K).

    fn receives one bead's slice of `elems` (same structure) and returns tensor(s); the
    results are stacked along a new leading axis K. fn must not capture tensors that need
    gradients: everything bead-dependent comes in through `elems`.

    Vectorised with tf.vectorized_map where every op has a batched form (Dense, most
    elementwise work): one batched kernel for all K. Where an op has none (some recurrent
    kernels), pfor would silently fall back to a loop; we refuse that fallback, say so once
    (-v), and use a graph while-loop with parallel iterations.

    The vectorised map carries its own gradient: each bead's vector-Jacobian product, itself
    vectorised. Differentiating through pfor directly would put gathers with data-dependent
    sizes at a function boundary, which XLA recompiles for on every call.
    """
    flat = tf.nest.flatten(elems)
    if _vectorized(fn, elems) is None:
        return _looped(fn, elems)

    @tf.custom_gradient
    def mapped(*flat_elems):
        bead_elems = tf.nest.pack_sequence_as(elems, list(flat_elems))
        outputs = _vectorized(fn, bead_elems)

        def backward(*upstream):
            def bead_vjp(pair):
                bead, cotangent = pair
                leaves = tf.nest.flatten(bead)
                with tf.GradientTape() as tape:
                    tape.watch([x for x in leaves if x.dtype.is_floating])
                    out = fn(tf.nest.pack_sequence_as(elems, leaves))
                sources = [x for x in leaves if x.dtype.is_floating]
                targets = [
                    (o, c) for o, c in zip(tf.nest.flatten(out), cotangent) if o.dtype.is_floating
                ]
                grads = iter(
                    tape.gradient(
                        [o for o, _ in targets],
                        sources,
                        output_gradients=[c for _, c in targets],
                        unconnected_gradients=tf.UnconnectedGradients.ZERO,
                    )
                )
                return [next(grads) if x.dtype.is_floating else tf.zeros_like(x) for x in leaves]

            flat_outputs = tf.nest.flatten(outputs)
            upstream = [
                tf.zeros_like(o) if u is None else u for u, o in zip(upstream, flat_outputs)
            ]
            pair = (list(flat_elems), upstream)
            grads = _vectorized(bead_vjp, pair)
            if grads is None:
                grads = _looped(bead_vjp, pair)
            return [g if x.dtype.is_floating else None for g, x in zip(grads, flat_elems)]

        return outputs, backward

    return mapped(*flat)


def convolution(inputs, kernel, *, strides, padding, dilation_rate):
    """Channels-last convolution; grouped when the input has a multiple of the kernel's
    input channels (TensorFlow runs grouped convolutions on CPU without XLA, unlike
    `keras.ops.conv`, which forces XLA for them)."""
    return tf.nn.convolution(
        inputs, kernel, strides=strides, padding=padding.upper(), dilations=dilation_rate
    )


@contextlib.contextmanager
def float32_precision(fast: bool):
    """TF32 for float32 matrix work inside the block only when `fast` (recent NVIDIA GPUs);
    off means true float32. TensorFlow's switch is process-wide, so it is set on entry and
    the previous setting restored on exit."""
    previous = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(bool(fast))
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(previous)


def exact_float32():
    """True float32 inside the block, whatever the projection precision is."""
    return float32_precision(False)


def accelerator_present() -> bool:
    """A GPU or TPU is visible to TensorFlow."""
    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))


def framework_versions() -> dict[str, str]:
    return {"tensorflow_version": tf.__version__, "jax_version": "none"}
