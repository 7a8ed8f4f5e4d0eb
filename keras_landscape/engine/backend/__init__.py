"""The only place that imports TensorFlow or JAX.

The engine (`keras_landscape.engine.kernels`) is written once with `keras.ops`; the few primitives
that differ between backends -- compiling a function, value-and-gradient, mapping a function
over a stack of beads, a (grouped) convolution and whether this device can differentiate it,
the float32 precision policy -- come from here, chosen by `keras.backend.backend()` (the
`KERAS_BACKEND` environment variable).
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
hessian_vector_products = _impl.hessian_vector_products
map_beads = _impl.map_beads
convolution = _impl.convolution
bead_convolutions = _impl.bead_convolutions
grouped_convolution_gradients = _impl.grouped_convolution_gradients
onednn_enabled = _impl.onednn_enabled
float32_precision = _impl.float32_precision
exact_float32 = _impl.exact_float32
framework_versions = _impl.framework_versions
accelerator_present = _impl.accelerator_present
summary_writer = _impl.summary_writer

_devices: dict = {}


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else `platform.processor()`)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware")) and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict[str, str]:
    """What decides this process's arithmetic beyond the versions: the CPU model, whether
    TensorFlow's oneDNN kernels are on ("on", "off"; "n/a" under JAX) and the convolution
    plan for stacked beads ("grouped" or "per-bead", `grouped_convolution_gradients`), and
    under JAX what became of XLA:CPU's YNNPACK fusions (`jax.YNN_FUSIONS`; "n/a" under
    TensorFlow)."""
    onednn = onednn_enabled()
    return {
        "cpu_model": cpu_model(),
        "onednn": "n/a" if onednn is None else ("on" if onednn else "off"),
        "stacked_convolutions": "grouped" if grouped_convolution_gradients() else "per-bead",
        "xla_ynn_fusions": getattr(_impl, "YNN_FUSIONS", "n/a"),
    }


def devices_for(spec=None) -> Devices:
    """The process's Devices for an `engine.options.StrategySpec` (None: one device), made
    once per process: a strategy, a logical CPU split or `jax.distributed` can be set up
    only once, before other framework work."""
    if not spec or spec.name == "one":
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
    "hessian_vector_products",
    "map_beads",
    "convolution",
    "bead_convolutions",
    "grouped_convolution_gradients",
    "onednn_enabled",
    "cpu_model",
    "machine",
    "float32_precision",
    "exact_float32",
    "framework_versions",
    "accelerator_present",
    "summary_writer",
    "Devices",
    "devices_for",
    "padded_count",
]
