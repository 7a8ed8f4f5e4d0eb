"""TensorFlow primitives: tf.function (XLA where it compiles), GradientTape, map_fn."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os

import numpy as np
import tensorflow as tf

from keras_landscape.engine.backend.devices import Devices
from keras_landscape.errors import UserError

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

    def __init__(self, fn, xla: bool, label: str, autograph: bool = False):
        self._fn, self._label, self._autograph = fn, label, autograph
        self._graph = self._function(jit_compile=False)
        self._xla = self._function(jit_compile=True) if xla else None
        self._concrete: dict = {}

    def _function(self, jit_compile: bool):
        compiled = tf.function(
            self._fn, jit_compile=jit_compile, reduce_retracing=True, autograph=self._autograph
        )
        # Kernels are built on purpose per model, optimizer and stack width: the same nested
        # Python function compiled many times. TensorFlow's "frequent retracing" warning keys
        # on its code object and would call that a mistake (the attribute is TF's own switch).
        compiled._omit_frequent_tracing_warning = True
        return compiled

    def __call__(self, *args):
        try:
            return self._dispatch(args)
        except tf.errors.OperatorNotAllowedInGraphError as error:
            # Traced without AutoGraph (our kernels' Python control flow depends on shapes
            # and settings only, and AutoGraph's source rewriting was most of a first call:
            # 2 of 2.3 s for a 256-wide MLP evaluation). A layer whose Python `if`/`for`
            # reads a tensor's value (a TensorFlow-only custom layer) needs it: traced again
            # with AutoGraph.
            if self._autograph:
                raise
            log.info(
                "%s is traced with AutoGraph: a layer's Python control flow reads a tensor (%s).",
                self._label,
                str(error).strip().splitlines()[0][:160],
            )
            self._autograph = True
            self._graph = self._function(jit_compile=False)
            self._xla = self._function(jit_compile=True) if self._xla is not None else None
            self._concrete.clear()
            return self._dispatch(args)

    def _dispatch(self, args):
        if self._xla is not None:
            try:
                return self._call(self._xla, args)
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
        return self._call(self._graph, args)

    def _call(self, function, args):
        """function(*args), through the concrete function traced for these argument shapes
        once it exists: a tf.function call otherwise matches its arguments against its
        traces on every call (about a millisecond here, as much as a small model's work).
        Only eager tensors outside a distribution strategy qualify (a replica's call is
        placed on its own device); anything else takes the tf.function's own path."""
        plain = tf.executing_eagerly() and not tf.distribute.has_strategy()
        key = _signature(args) if plain else None
        if key is None:
            return function(*args)
        key = (id(function), _device_scope(), key)
        concrete = self._concrete.get(key)
        if concrete is None:
            out = function(*args)  # traces (and checks) as usual
            self._concrete[key] = function.get_concrete_function(*args)
            return out
        return concrete(*args)


def _device_scope() -> str:
    """The device a `with tf.device(...)` block around the call asks for ('' outside one)."""
    from tensorflow.python.eager import context

    return context.context().device_name or ""


def _signature(args):
    """The nesting, shapes and dtypes of `args` when every leaf is an eager tensor, else None."""
    leaves = tf.nest.flatten(args)
    # by name: making a tensor to learn its type at import would start TensorFlow's
    # runtime, after which a program can no longer set its thread counts
    if not all(type(leaf).__name__ == "EagerTensor" for leaf in leaves):
        return None
    nesting = tuple((type(a), len(a) if isinstance(a, (list, tuple, dict)) else -1) for a in args)
    return nesting, tuple((tuple(leaf.shape), leaf.dtype) for leaf in leaves)


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


def hessian_vector_product(fn):
    """fn(theta, *args) -> (value, aux)  becomes  (theta, v, *args) -> d/dtheta <grad fn, v>:
    the Hessian of fn times v, by reverse over reverse (two tapes)."""

    def wrapped(theta, v, *args):
        with tf.GradientTape() as outer:
            outer.watch(theta)
            with tf.GradientTape() as inner:
                inner.watch(theta)
                value, _ = fn(theta, *args)
            grad = inner.gradient(value, theta)
            along = tf.reduce_sum(grad * v)
        return outer.gradient(along, theta)

    return wrapped


def hessian_vector_products(fn):
    """fn(theta, *args) -> (value, aux)  becomes  (theta, vectors (K, P), *args) -> (K, P):
    the Hessian of fn times each row of `vectors`, all K in one graph: the reverse-over-
    reverse product vectorised over the rows (pfor), or a graph loop over them where an op
    has no batched form (as `map_beads`)."""
    single = hessian_vector_product(fn)

    def wrapped(theta, vectors, *args):
        def one(v):
            return single(theta, v, *args)

        products = _vectorized(one, vectors, "Hessian-vector products")
        return _looped(one, vectors) if products is None else products

    return wrapped


_warned_loop: set[str] = set()


def _vectorized(fn, elems, what: str = "Beads"):
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
                "%s are mapped with a graph loop, not vectorised (%s).",
                what,
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


def bead_convolutions(inputs, kernels, *, strides, padding, dilation_rate):
    """inputs (K, B, ..., C) and kernels (K, ..., C, O) -> (K, B, ..., O): each bead's input
    through its own filters, in a graph loop. (tf.vectorized_map would turn the loop back
    into one grouped convolution, which is what this avoids.)"""

    def one_bead(pair):
        return convolution(
            pair[0], pair[1], strides=strides, padding=padding, dilation_rate=dilation_rate
        )

    return tf.map_fn(
        one_bead, (inputs, kernels), fn_output_signature=inputs.dtype, parallel_iterations=16
    )


@functools.cache
def grouped_convolution_gradients() -> bool:
    """Whether TensorFlow can differentiate a grouped convolution on the default device,
    found once per process by a tiny eager call. Its CPU kernels have no grouped backprop
    unless oneDNN is on (TF_ENABLE_ONEDNN_OPTS; TensorFlow turns it on by default only on
    some Intel CPUs), so elsewhere -- e.g. AMD CPUs -- the stacked walk convolves bead by bead.
    """
    # The two backprop kernels called directly, eagerly even when first asked while tracing
    # a tf.function (init_scope; it also hides a GradientTape, hence no tape here).
    with tf.init_scope():
        x = tf.ones((1, 3, 3, 4))
        kernel = tf.ones((1, 1, 2, 2))  # 2 groups of 2 channels
        out = tf.ones((1, 3, 3, 2))
        common = dict(strides=[1, 1, 1, 1], padding="VALID")
        try:
            tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=kernel, out_backprop=out, **common
            )
            tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=tf.shape(kernel), out_backprop=out, **common
            )
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
            log.info(
                "This device cannot differentiate grouped convolutions (%s); convolutions of "
                "stacked beads run bead by bead.",
                str(error).strip().splitlines()[0][:120],
            )
            return False
    return True


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process (None: unknown)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # a private module: absent in some builds
        return None


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


# ----------------------------------------------------------------------------- devices


class StrategyDevices(Devices):
    """Stacks of beads over the replicas of a tf.distribute strategy: each replica runs the
    compiled kernel on its contiguous share of the bead axis (`strategy.run`), and results
    are gathered whole (`strategy.gather`, an all-gather across workers)."""

    def __init__(self, strategy, name: str):
        super().__init__()
        self.strategy = strategy
        self.name = name
        self.count = int(strategy.num_replicas_in_sync)
        resolver = getattr(strategy, "cluster_resolver", None)
        spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
        workers = len(spec.get("worker", [])) + len(spec.get("chief", []))
        self.processes = max(1, workers) if name == "multiworker" else 1
        task = getattr(resolver, "task_type", None), getattr(resolver, "task_id", None)
        self.process_index = 0 if task[0] in (None, "chief") else int(task[1] or 0)
        if task[0] == "worker" and "chief" in spec:
            self.process_index += 1

    def kernel_width(self, width: int) -> int:
        return width // self.count

    def put(self, value):
        if isinstance(value, tf.distribute.DistributedValues):
            return value
        value = np.asarray(value)
        share = len(value) // self.count

        def local(context):
            start = context.replica_id_in_sync_group * share
            return tf.constant(value[start : start + share])

        return self.strategy.experimental_distribute_values_from_function(local)

    def call(self, fn, args, real):
        out = self.strategy.run(fn, args=tuple(args))
        first = tf.nest.flatten(out)[0]
        locals_ = self.strategy.experimental_local_results(first)
        share = int(locals_[0].shape[0])
        local_ids = self._local_replica_ids(len(locals_))
        self._record(
            [(t.device, r * share, int(t.shape[0])) for t, r in zip(locals_, local_ids)], real
        )
        return out

    def _local_replica_ids(self, local: int) -> list[int]:
        """Global replica ids of this worker's replicas (workers hold equal contiguous
        blocks in MultiWorkerMirroredStrategy)."""
        return [self.process_index * local + i for i in range(local)]

    def fetch(self, value) -> np.ndarray:
        # A worker with one replica gets a plain tensor back from `run`: still its share.
        if self.count > 1:
            value = self.strategy.gather(value, axis=0)
        return np.asarray(value)

    def shared(self, value) -> np.ndarray:
        return np.asarray(self.strategy.experimental_local_results(value)[0])

    def scope(self):
        return self.strategy.scope()

    def sync(self, tag: str) -> None:
        if self.processes > 1:  # an all-reduce every worker must join (and finish)
            total = self.strategy.reduce(
                tf.distribute.ReduceOp.SUM,
                self.strategy.run(lambda: tf.constant(1.0)),
                axis=None,
            )
            float(total)


def _logical_cpus(count: int) -> list[str]:
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise UserError(
                f"Cannot split the CPU into {count} devices: TensorFlow has already started "
                "in this process. Choose the strategy before any TensorFlow work (in Python, "
                "call keras_landscape.engine.backend.devices_for first)."
            ) from None
    return [f"/cpu:{i}" for i in range(count)]


def make_devices(spec) -> Devices:
    """The Devices of a StrategySpec (see `keras_landscape.engine.options.StrategySpec`)."""
    if spec.name == "one":
        return Devices()
    if spec.name == "mirrored":
        if spec.cpus:
            devices = _logical_cpus(spec.cpus)
        else:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in gpus] or ["/cpu:0"]
        return StrategyDevices(tf.distribute.MirroredStrategy(devices), "mirrored")
    if spec.name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise UserError(
                "--strategy multiworker reads the cluster from the TF_CONFIG environment "
                "variable, which is not set. Set it in every process (docs/scaling.md has a "
                "two-host recipe), or use --strategy mirrored on one host."
            )
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except (ValueError, KeyError, json.JSONDecodeError) as error:
            raise UserError(f"TF_CONFIG cannot be used for multiworker: {error}.") from None
        return StrategyDevices(strategy, "multiworker")
    return StrategyDevices(_tpu_strategy(spec.tpu), "tpu")


def _tpu_strategy(name: str | None):
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except Exception as error:  # every failure to find a TPU reads the same to a user
        where = f"TPU {name!r}" if name else "a TPU (none named: --tpu NAME or TPU_NAME)"
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(
            f"--strategy tpu could not reach {where}: {first}. Run on a TPU VM or give the "
            "TPU's name with --tpu; without a TPU use --strategy one or mirrored "
            "(docs/scaling.md)."
        ) from None


# ----------------------------------------------------------------------------- summaries


class SummaryWriter:
    """TensorBoard event files (tf.summary): scalars and histograms by tag and step."""

    def __init__(self, log_dir: str):
        try:
            import tensorboard  # noqa: F401  (tf.summary writes through it)
        except ImportError:
            raise UserError(
                "TensorBoard logs (log_dir) need the tensorboard package: pip install "
                "'keras-landscape[tensorboard]' (or tensorboard), or leave log_dir out (the "
                "store keeps every result)."
            ) from None
        self._writer = tf.summary.create_file_writer(str(log_dir))

    def scalar(self, tag: str, value: float, step: int) -> None:
        with self._writer.as_default():
            tf.summary.scalar(tag, float(value), step=int(step))

    def histogram(self, tag: str, values, step: int) -> None:
        with self._writer.as_default():
            tf.summary.histogram(tag, np.asarray(values, np.float64), step=int(step))

    def flush(self) -> None:
        self._writer.flush()


def summary_writer(log_dir: str) -> SummaryWriter:
    return SummaryWriter(log_dir)
