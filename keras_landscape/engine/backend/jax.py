"""JAX primitives: jax.jit, jax.value_and_grad, jax.vmap, matmul precision."""

from __future__ import annotations

import contextlib

import jax


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


def map_beads(fn, elems):
    """Apply fn to every bead of `elems` (array or pytree, leading axis K) with jax.vmap."""
    return jax.vmap(fn)(elems)


def convolution(inputs, kernel, *, strides, padding, dilation_rate):
    """Channels-last convolution; grouped when the input has a multiple of the kernel's
    input channels (`keras.ops.conv` sets XLA's feature_group_count)."""
    from keras import ops

    return ops.conv(inputs, kernel, strides=strides, padding=padding, dilation_rate=dilation_rate)


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
