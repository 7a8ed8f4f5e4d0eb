"""Loading Keras models, custom objects, fresh clones and architecture checks.

Supported files: `.keras` (Keras 3 archives) and legacy `.h5` / `.hdf5` (saved by tf.keras
2.x or Keras 3). A SavedModel directory, a corrupt file or another extension is bad input with
a message saying what is supported.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import sys
from pathlib import Path

import keras
import numpy as np

from keras_landscape.engine.params import ParameterLayout
from keras_landscape.errors import UserError
from keras_landscape.models import activations  # noqa: F401  (registers keras_landscape>square)
from keras_landscape.models.files import SUPPORTED, check_model_file

log = logging.getLogger("keras_landscape")


def load_custom_objects(spec: str | None) -> dict:
    """Classes and functions from a Python file or an importable module name.

    Importing the module also runs its `@keras.saving.register_keras_serializable`
    decorators, so registered serializables are found without being listed.

    Args:
        spec: 'path/to/layers.py' or 'package.module'; None for none.

    Returns:
        {name: object} for every class or function defined in that module.
    """
    if not spec:
        return {}
    if spec.endswith(".py") or os.path.sep in spec:
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"--custom-objects file {spec!r} does not exist.")
        module_name = f"klandscape_custom_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as error:
            raise UserError(
                f"Importing --custom-objects file {spec!r} failed: {type(error).__name__}: {error}."
            ) from None
    else:
        try:
            module = importlib.import_module(spec)
        except Exception as error:
            raise UserError(
                f"--custom-objects {spec!r} is neither a .py file nor an importable module "
                f"({type(error).__name__}: {error})."
            ) from None
    return {
        name: obj
        for name, obj in vars(module).items()
        if (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == module.__name__
    }


def load_model(path: str | os.PathLike, custom_objects: dict | None = None):
    """Load a Keras model file (compiled when its compile config can be restored).

    Args:
        path: a `.keras` or `.h5` file.
        custom_objects: classes/functions for custom layers, losses, ...

    Returns:
        The Keras model.
    """
    path = check_model_file(path)
    custom_objects = custom_objects or {}
    try:
        model = keras.saving.load_model(path, custom_objects=custom_objects, compile=True)
    except Exception as compile_error:
        try:
            model = keras.saving.load_model(path, custom_objects=custom_objects, compile=False)
        except Exception as error:
            raise UserError(_load_failure_message(path, error)) from None
        log.warning(
            "Loaded %s without its compile config (%s); pass --loss to choose the loss.",
            path,
            str(compile_error).splitlines()[0][:200] if str(compile_error) else "unknown",
        )
    if not model.built or not model.trainable_variables:
        raise UserError(
            f"The model in {str(path)!r} has no built weights; save a built (trained) model."
        )
    return model


def allow_unsafe_deserialization() -> None:
    """Let Keras deserialize Lambda layers and other arbitrary Python code in model files
    (`--unsafe`: only for files you trust; loading such a file can run any code)."""
    keras.config.enable_unsafe_deserialization()


def _load_failure_message(path: Path, error: Exception) -> str:
    full = str(error).strip()
    text = full.splitlines()[0] if full else type(error).__name__
    if "safe_mode" in full or "unsafe" in full.lower():
        return (
            f"Could not load {str(path)!r}: the model holds a Lambda layer or other Python code "
            "that Keras will not run from a file unless told to (safe mode). If you trust the "
            "file (loading it can run any code), rerun with --unsafe; otherwise rebuild the "
            "layer as a registered custom layer and pass --custom-objects."
        )
    if "Unknown" in full or "custom" in full.lower() or "Could not locate" in full:
        return (
            f"Could not load {str(path)!r}: {text[:300]}. The model uses a custom layer, loss "
            "or function: pass --custom-objects FILE.py (or a module name) that defines it, or "
            "register it with @keras.saving.register_keras_serializable."
        )
    return (
        f"Could not load {str(path)!r}: {text[:300]}. The file may be corrupt; supported are "
        f"{SUPPORTED}."
    )


def check_same_architecture(models, names) -> ParameterLayout:
    """The shared parameter layout of `models`; UserError naming the first difference."""
    layouts = [ParameterLayout.from_model(m) for m in models]
    for layout, name in zip(layouts[1:], names[1:]):
        layouts[0].check_compatible(layout, (names[0], name))
    return layouts[0]


def model_with_theta(model, theta: np.ndarray, non_trainable=None):
    """A clone of `model` whose trainable weights are theta (for export; model untouched)."""
    clone = keras.models.clone_model(model)
    if not clone.built:
        clone.build(next(iter((getattr(model, "_build_shapes_dict", None) or {}).values())))
    layout = ParameterLayout.from_model(clone)
    layout.assign(clone, theta)
    if non_trainable is not None:
        for variable, value in zip(clone.non_trainable_variables, non_trainable):
            variable.assign(value)
    return clone
