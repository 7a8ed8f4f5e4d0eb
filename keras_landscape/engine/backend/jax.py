"""JAX primitives: jax.jit, jax.value_and_grad, jax.vmap, matmul precision."""

from __future__ import annotations

import contextlib
import logging
import os

import jax
import numpy as np

from keras_landscape.engine.backend.devices import Devices
from keras_landscape.errors import UserError

log = logging.getLogger("keras_landscape")

#: XLA:CPU's YNNPACK library fusions (jaxlib 0.8.1 and later, on by default) compute some
#: stacked evaluations wrongly: on jaxlib 0.10.2, a batched dot fused with a masked
#: reduction returned, for a 64-64-10 MLP on 1437 samples, the losses of beads 0, 1, ...
#: again for beads 22 and up (whose activations lie beyond 2^21 floats); the same graph
#: without jit, and TensorFlow's XLA, are right. Turned off (an empty fusion list) unless
#: XLA_FLAGS already sets it: 4x faster on that stack, 1.2-2.9x slower for the LSTM's
#: projection steps (their gain came from the elementwise and reduction fusions, the faulty
#: ones; docs/performance.md).
YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
YNN_SINCE = (0, 8, 1)  # older jaxlib has no such fusions and would refuse the flag


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _no_ynn_fusions() -> str:
    """Add `--xla_cpu_experimental_ynn_fusion_type=` to XLA_FLAGS before JAX starts its CPU
    backend; says what it did: 'set', 'user' (XLA_FLAGS chose), 'old' (jaxlib without the
    fusions) or 'late' (JAX had started: warned)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if YNN_FLAG in flags:
        return "user"
    try:
        import jaxlib

        if _version(jaxlib.__version__) < YNN_SINCE:
            return "old"
        from jax._src import xla_bridge

        started = bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # pragma: no cover - a JAX without these
        started = False
    if started:
        log.warning(
            "JAX started before keras-landscape was imported, so XLA's YNNPACK fusions stay "
            "on; on CPU they can give wrong stacked evaluations (jaxlib 0.10.2). Set "
            "XLA_FLAGS=--%s= before starting Python.",
            YNN_FLAG,
        )
        return "late"
    os.environ["XLA_FLAGS"] = f"{flags} --{YNN_FLAG}=".strip()
    return "set"


YNN_FUSIONS = _no_ynn_fusions()


def compile_function(fn, *, xla: bool = True, label: str = "function"):
    """jax.jit always compiles with XLA; `xla` and `label` exist for the TensorFlow twin."""
    del xla, label
    return jax.jit(fn)


def value_and_grad(fn):
    """fn(theta, *args) -> (value, aux)  becomes  (theta, *args) -> (value, aux, dvalue/dtheta)."""
    vg = jax.value_and_grad(fn, has_aux=True)

    def wrapped(theta, *args):
        (value, aux), grad = vg(theta, *args)
        return value, aux, grad

    return wrapped


def hessian_vector_product(fn):
    """fn(theta, *args) -> (value, aux)  becomes  (theta, v, *args) -> d/dtheta <grad fn, v>:
    the Hessian of fn times v, by forward over reverse (jax.jvp of jax.grad)."""

    def wrapped(theta, v, *args):
        grad = jax.grad(lambda t: fn(t, *args)[0])
        return jax.jvp(grad, (theta,), (v,))[1]

    return wrapped


def hessian_vector_products(fn):
    """fn(theta, *args) -> (value, aux)  becomes  (theta, vectors (K, P), *args) -> (K, P):
    the Hessian of fn times each row of `vectors` (jax.vmap of the forward-over-reverse
    product)."""
    single = hessian_vector_product(fn)

    def wrapped(theta, vectors, *args):
        return jax.vmap(lambda v: single(theta, v, *args))(vectors)

    return wrapped


def map_beads(fn, elems):
    """Apply fn to every bead of `elems` (array or pytree, leading axis K) with jax.vmap."""
    return jax.vmap(fn)(elems)


def convolution(inputs, kernel, *, strides, padding, dilation_rate):
    """Channels-last convolution; grouped when the input has a multiple of the kernel's
    input channels (`keras.ops.conv` sets XLA's feature_group_count)."""
    from keras import ops

    return ops.conv(inputs, kernel, strides=strides, padding=padding, dilation_rate=dilation_rate)


def bead_convolutions(inputs, kernels, *, strides, padding, dilation_rate):
    """inputs (K, B, ..., C) and kernels (K, ..., C, O) -> (K, B, ..., O), bead by bead."""

    def one_bead(x, kernel):
        return convolution(x, kernel, strides=strides, padding=padding, dilation_rate=dilation_rate)

    return jax.lax.map(lambda pair: one_bead(*pair), (inputs, kernels))


def grouped_convolution_gradients() -> bool:
    """XLA differentiates grouped convolutions (feature_group_count) on every platform."""
    return True


def onednn_enabled() -> bool | None:
    """oneDNN is a TensorFlow setting; JAX's CPU kernels come from XLA."""
    return None


@contextlib.contextmanager
def float32_precision(fast: bool):
    """TF32-class matmuls inside the block only when `fast` (JAX's own default on GPUs);
    off means true float32. The setting is part of jax.jit's cache key, so a function
    compiled under one precision is not reused under the other."""
    with jax.default_matmul_precision(None if fast else "highest"):
        yield


def exact_float32():
    """True float32 inside the block, whatever the projection precision is."""
    return float32_precision(False)


def accelerator_present() -> bool:
    """JAX runs on a GPU or TPU."""
    return jax.default_backend() != "cpu"


def _tensorflow_version() -> str:
    """TensorFlow's version where this environment can import it, else "none".

    Checked without importing TensorFlow: a module spec must exist (`find_spec`; a bare
    namespace folder named `tensorflow` does not count), and the version comes from the
    metadata of the distribution that provides it (tensorflow, tensorflow-cpu, ...). A
    leftover `tensorflow` dist-info without the package is not TensorFlow.
    """
    import importlib.util
    import sys
    from importlib import metadata

    module = sys.modules.get("tensorflow")
    if module is not None and getattr(module, "__version__", None):
        return str(module.__version__)
    try:
        spec = importlib.util.find_spec("tensorflow")
    except (ImportError, ValueError):
        return "none"
    if spec is None or spec.loader is None or spec.origin in (None, "namespace"):
        return "none"
    try:
        return metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        pass
    try:  # another distribution provides the package (tensorflow-cpu, tf-nightly, ...)
        providers = metadata.packages_distributions().get("tensorflow", [])
    except Exception:  # pragma: no cover - broken metadata of unrelated distributions
        providers = []
    for dist in providers:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def framework_versions() -> dict[str, str]:
    """The versions a store records. TensorFlow's is "none" where it cannot be imported
    here (a JAX-only environment), even if another environment on the machine has it."""
    return {"tensorflow_version": _tensorflow_version(), "jax_version": jax.__version__}


# ----------------------------------------------------------------------------- devices


class MeshDevices(Devices):
    """Stacks of beads sharded over a `jax.sharding.Mesh` with one axis, 'beads': the same
    compiled program runs everywhere (XLA's SPMD partitioning), each device on its share of
    the bead axis; the other arguments are replicated. Across processes (after
    `jax.distributed.initialize`) arrays are assembled from each process's shards."""

    def __init__(self, devices: list, name: str):
        super().__init__()
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        self.name = name
        self.mesh = Mesh(np.array(devices), ("beads",))
        self._beads = NamedSharding(self.mesh, PartitionSpec("beads"))
        self._whole = NamedSharding(self.mesh, PartitionSpec())
        self.count = len(devices)
        self.process_index = jax.process_index()
        self.processes = jax.process_count()
        self._placed: dict[int, tuple] = {}  # id(tensor) -> (tensor, its replicated copy)

    def _placed_on(self, value, sharding):
        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    def put(self, value):
        if getattr(getattr(value, "sharding", None), "mesh", None) == self.mesh:
            return value
        return self._placed_on(value, self._beads)

    def _whole_copy(self, leaf):
        """A replicated copy of data or weights, placed once per tensor."""
        if getattr(getattr(leaf, "sharding", None), "mesh", None) == self.mesh:
            return leaf  # an earlier call's output, already on the mesh
        cached = self._placed.get(id(leaf))
        if cached is not None and cached[0] is leaf:
            return cached[1]
        placed = self._placed_on(leaf, self._whole)
        if isinstance(leaf, jax.Array):
            self._placed[id(leaf)] = (leaf, placed)
        return placed

    def call(self, fn, args, real):
        values = [jax.tree_util.tree_map(self._whole_copy, arg) for arg in args]
        out = fn(*values)
        first = jax.tree_util.tree_leaves(out)[0]
        self._record(
            [
                (str(s.device), s.index[0].start or 0, int(s.data.shape[0]))
                for s in first.addressable_shards
            ],
            real,
        )
        return out

    def fetch(self, value) -> np.ndarray:
        if isinstance(value, jax.Array) and not value.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(value, tiled=True))
        return np.asarray(value)

    def shared(self, value) -> np.ndarray:
        if isinstance(value, jax.Array) and not value.is_fully_addressable:
            return np.asarray(value.addressable_data(0))
        return np.asarray(value)

    def sync(self, tag: str) -> None:
        if self.processes > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(tag)


@contextlib.contextmanager
def _native_stdout_to_stderr():
    """File descriptor 1 pointed at 2 inside the block (C++ libraries print on it; --json
    output on stdout must stay one document)."""
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _distributed() -> None:
    """`jax.distributed.initialize`, from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
    JAX_PROCESS_ID where set (else JAX's own detection: TPU pods, SLURM, ...)."""
    import os

    keys = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
    given = {k: os.environ.get(k) for k in keys}
    kwargs = {}
    if all(given.values()):
        kwargs = {
            "coordinator_address": given["JAX_COORDINATOR_ADDRESS"],
            "num_processes": int(given["JAX_NUM_PROCESSES"]),
            "process_id": int(given["JAX_PROCESS_ID"]),
        }
    elif any(given.values()):
        missing = [k for k, v in given.items() if not v]
        raise UserError(
            f"--strategy multiworker on JAX: {', '.join(missing)} not set (set all of "
            f"{', '.join(keys)}, or none for JAX's own cluster detection)."
        )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        with _native_stdout_to_stderr():  # Gloo prints its connections on stdout
            jax.distributed.initialize(**kwargs)
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("keras_landscape started")
    except (RuntimeError, ValueError) as error:
        first = (str(error).strip().splitlines() or ["failed"])[0][:200]
        raise UserError(
            f"--strategy multiworker could not start jax.distributed: {first}. Set "
            f"{', '.join(keys)} in every process (docs/scaling.md)."
        ) from None


def make_devices(spec) -> Devices:
    """The Devices of a StrategySpec: 'one'; a mesh over the local devices ('mirrored'), the
    TPU cores ('tpu') or every process's devices ('multiworker')."""
    if spec.name == "one":
        return Devices()
    if spec.name == "multiworker":
        _distributed()
        return MeshDevices(jax.devices(), "multiworker")
    if spec.name == "tpu":
        try:
            tpus = jax.devices("tpu")
        except RuntimeError:
            tpus = []
        if not tpus:
            raise UserError(
                "--strategy tpu: JAX sees no TPU on this machine. Run on a TPU VM (with "
                "jax[tpu] installed); without a TPU use --strategy one or mirrored "
                "(docs/scaling.md)."
            )
        return MeshDevices(tpus, "tpu")
    if spec.cpus:
        try:
            jax.config.update("jax_num_cpu_devices", int(spec.cpus))
        except RuntimeError:
            pass  # already started: checked below
        cpus = jax.devices("cpu")
        if len(cpus) != spec.cpus:
            raise UserError(
                f"Cannot split the CPU into {spec.cpus} devices: JAX has already started with "
                f"{len(cpus)}. Choose the strategy before any JAX work, or set "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={spec.cpus}."
            )
        return MeshDevices(cpus, "mirrored")
    return MeshDevices(jax.local_devices(), "mirrored")


def summary_writer(log_dir: str):
    """TensorBoard event files through TensorFlow's tf.summary, where TensorFlow is
    installed beside JAX (TensorBoard's own format)."""
    try:
        from keras_landscape.engine.backend.tensorflow import SummaryWriter
    except ImportError:
        raise UserError(
            "TensorBoard logs (log_dir) are written with tf.summary, and TensorFlow is not "
            "installed here. Install tensorflow, or leave log_dir out (the store keeps every "
            "result)."
        ) from None
    return SummaryWriter(log_dir)
