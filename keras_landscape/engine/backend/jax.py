"""JAX primitives: jax.jit, jax.value_and_grad, jax.vmap, matmul precision."""

from __future__ import annotations

import contextlib

import jax

_precision = {"fast": False}


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


def set_fast_float32(enabled: bool) -> None:
    """Allow TF32-class matmuls (JAX's default on GPUs); off means true float32."""
    _precision["fast"] = bool(enabled)
    jax.config.update("jax_default_matmul_precision", None if enabled else "highest")


@contextlib.contextmanager
def exact_float32():
    """True float32 inside the block, whatever the projection precision is."""
    with jax.default_matmul_precision("highest"):
        yield


def accelerator_present() -> bool:
    """JAX runs on a GPU or TPU."""
    return jax.default_backend() != "cpu"


def framework_versions() -> dict[str, str]:
    from importlib import metadata

    try:
        tf_version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tf_version = "none"
    return {"tensorflow_version": tf_version, "jax_version": jax.__version__}
