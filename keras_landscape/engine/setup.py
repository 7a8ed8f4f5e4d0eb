"""The model side of building a landscape: its input and output shapes, a check that it
runs on the data, the XLA decision, and fresh copies of its architecture."""

from __future__ import annotations

import logging

import keras
import numpy as np
from keras import ops

from keras_landscape.data.specs import Dataset
from keras_landscape.engine import backend, kernels
from keras_landscape.engine.params import ParameterLayout
from keras_landscape.errors import UserError

log = logging.getLogger("keras_landscape")


def model_io_shapes(model, x_sample: np.ndarray) -> tuple[tuple, tuple | None]:
    """Per-sample input and output shapes (no batch axis) of a model; the output shape is
    None for a model without symbolic outputs (subclassed: see `probe_output_shape`)."""
    inputs = getattr(model, "inputs", None)
    try:
        input_shape = tuple(inputs[0].shape[1:]) if inputs else tuple(x_sample.shape[1:])
    except (AttributeError, ValueError):
        input_shape = tuple(x_sample.shape[1:])
    outputs = None
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        pass
    if outputs:
        if len(outputs) != 1:
            raise UserError(
                f"The model has {len(outputs)} outputs; keras-landscape probes single-output "
                "models. Wrap the model so that it has one output."
            )
        return input_shape, tuple(outputs[0].shape[1:])
    return input_shape, None


def probe_output_shape(model, dataset: Dataset) -> tuple:
    """Output shape of a model without symbolic outputs (subclassed), by one real call."""
    y = call_on(model, ops.convert_to_tensor(dataset.x_train[:1]), dataset.spec)
    return tuple(y.shape[1:])


def call_on(model, x, spec: str):
    """The model's inference output on `x` with its own weights (not changed); a model that
    cannot run on the data is a UserError naming it."""
    try:
        y, _ = model.stateless_call(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            x,
            **kernels.inference_kwargs(model),
        )
        return y
    except Exception as error:  # the model's own message says what it expected
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        raise UserError(
            f"The model cannot run on the data {spec!r} (samples of shape "
            f"{tuple(x.shape[1:])}): {first[:300]}. Check that the data matches the "
            "model's input."
        ) from None


def clone_fresh(model, seed: int):
    """The same architecture with a fresh random initialisation (the model is not touched).

    Sequential and Functional models are cloned from their config; subclassed models are
    rebuilt from `get_config`/`from_config` and built on the original input shape.
    """
    keras.utils.set_random_seed(seed)
    try:
        clone = keras.models.clone_model(model)
    except Exception:
        try:
            clone = model.__class__.from_config(model.get_config())
        except Exception as error:
            raise UserError(
                f"Cannot create a fresh copy of {model.name!r} to train a partner: "
                f"{type(error).__name__}: {error}. Give two or more trained models instead, "
                "or implement get_config/from_config on the model class."
            ) from None
    if not clone.built:
        shape = getattr(model, "_build_shapes_dict", None) or {}
        input_shape = next(iter(shape.values()), None)
        if input_shape is None:
            raise UserError(f"Cannot build a fresh copy of {model.name!r}: unknown input shape.")
        clone.build(input_shape)
    fresh = ParameterLayout.from_model(clone)
    ParameterLayout.from_model(model).check_compatible(fresh, ("original", "clone"))
    return clone


def resolve_xla(xla: bool | str, model) -> bool:
    """The 'auto' XLA rule (see Landscape); logged so a user can see which was chosen."""
    if xla != "auto":
        return bool(xla)
    if backend.accelerator_present():
        return True
    has_conv = any("Conv" in type(layer).__name__ for layer in _all_layers(model))
    if has_conv:
        log.info(
            "XLA off for %s on CPU: it has convolutions (slower under XLA on CPU).", model.name
        )
    return not has_conv


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


__all__ = [
    "call_on",
    "clone_fresh",
    "model_io_shapes",
    "probe_output_shape",
    "resolve_xla",
]
