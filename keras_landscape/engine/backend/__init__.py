"""The only place that imports TensorFlow or JAX.

The engine (`keras_landscape.engine.kernels`) is written once with `keras.ops`; the few primitives
that differ between backends -- compiling a function, value-and-gradient, mapping a function
over a stack of beads, a (grouped) convolution, the float32 precision policy -- come from
here, chosen by `keras.backend.backend()` (the `KERAS_BACKEND` environment variable).
"""

from __future__ import annotations

import keras

from keras_landscape.engine.backend.devices import ONE, Devices, padded_count
from keras_landscape.errors import UserError

name: str = keras.backend.backend()

if name == "tensorflow":
    from keras_landscape.engine.backend import tensorflow as _impl
elif name == "jax":
    from keras_landscape.engine.backend import jax as _impl
else:  # pragma: no cover - depends on the environment
    raise UserError(
        f"keras-landscape runs on the 'tensorflow' and 'jax' Keras backends; KERAS_BACKEND is "
        f"{name!r}. Set KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax."
    )

compile_function = _impl.compile_function
value_and_grad = _impl.value_and_grad
hessian_vector_product = _impl.hessian_vector_product
map_beads = _impl.map_beads
convolution = _impl.convolution
float32_precision = _impl.float32_precision
exact_float32 = _impl.exact_float32
framework_versions = _impl.framework_versions
accelerator_present = _impl.accelerator_present
summary_writer = _impl.summary_writer

_devices: dict = {}


def devices_for(spec=None) -> Devices:
    """The process's Devices for a StrategySpec (None: one device), made once per process:
    a strategy, a logical CPU split or `jax.distributed` can be set up only once, before
    other framework work."""
    from keras_landscape.engine.options import StrategySpec

    spec = spec or StrategySpec()
    if spec.name == "one":
        return ONE
    if _devices and spec not in _devices:
        (other,) = _devices
        raise UserError(
            f"This process already runs with --strategy {other}; a process takes one "
            f"strategy (asked for {spec})."
        )
    if spec not in _devices:
        _devices[spec] = _impl.make_devices(spec)
    return _devices[spec]


__all__ = [
    "name",
    "compile_function",
    "value_and_grad",
    "hessian_vector_product",
    "map_beads",
    "convolution",
    "float32_precision",
    "exact_float32",
    "framework_versions",
    "accelerator_present",
    "summary_writer",
    "Devices",
    "devices_for",
    "padded_count",
]
