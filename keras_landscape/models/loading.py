"""Loading Keras models, custom objects, fresh clones and architecture checks.

Supported files: `.keras` (Keras 3 archives) and legacy `.h5` / `.hdf5` (saved by tf.keras
2.x or Keras 3). A SavedModel directory, a corrupt file or another extension is bad input with
a message saying what is supported.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
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
    """The shared parameter layout of `models`; UserError naming the first difference.

    First the parameter layouts (the same variables, shapes and order), then the layers:
    models with the same shapes but another computation (a ReLU where the other has a
    sigmoid, another BatchNorm epsilon, a residual connection where the other has none)
    are refused too, since every model is evaluated with the first one's layers. What does
    not change the computation at given weights is ignored (`architecture_difference`).
    """
    layouts = [ParameterLayout.from_model(m) for m in models]
    for layout, name in zip(layouts[1:], names[1:]):
        layouts[0].check_compatible(layout, (names[0], name))
    first = architecture(models[0])
    for model, name in zip(models[1:], names[1:]):
        difference = architecture_difference(first, architecture(model))
        if difference is not None:
            raise UserError(
                f"Models {names[0]} and {name} have the same parameter shapes but not the same "
                f"architecture: {difference}. Every model is "
                f"evaluated with the layers of the first ({names[0]}), so {name} would be "
                "measured as a network it is not. Compare models built alike (layer names, "
                "initializers and dtype policies may differ)."
            )
    return layouts[0]


# ----------------------------------------------------------------- the layers' architecture

#: layer settings that do not change what a model computes at given weights: names, dtype
#: policies, the trainable flag, and what matters only when weights are created
#: (initializers, seeds) or stepped by Keras's own optimizers (constraints); input shapes
#: (the parameter layouts are compared first)
_IGNORED = {
    "name",
    "trainable",
    "dtype",
    "dtype_policy",
    "autocast",
    "seed",
    "build_config",
    "compile_config",
    "input_shape",
    "batch_input_shape",
    "batch_shape",
    "batch_size",
}
_IGNORED_SUFFIXES = ("_initializer", "_constraint")
_NESTED_MODELS = ("Sequential", "Functional", "Model")


def _clean(value):
    """A config with the ignored settings dropped, at every depth."""
    if isinstance(value, dict):
        return {
            k: _clean(v)
            for k, v in value.items()
            if k not in _IGNORED and not str(k).endswith(_IGNORED_SUFFIXES)
        }
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _history(value, found: list) -> None:
    """Every `keras_history` [layer, node, tensor] in a serialized call, in order."""
    if isinstance(value, dict):
        if "keras_history" in value:
            found.append(tuple(value["keras_history"]))
            return
        for v in value.values():
            _history(v, found)
    elif isinstance(value, list | tuple):
        for v in value:
            _history(v, found)


def _refs(entries) -> list:
    """`input_layers` / `output_layers` of a Functional config as a list of refs."""
    if entries and not isinstance(entries[0], list | tuple):
        return [tuple(entries)]
    return [tuple(e) for e in entries or []]


def _config_architecture(serialized: dict) -> dict:
    """{"layers": [(class, name, config or nested architecture)], "wiring": ...} of a
    serialized model (Sequential or Functional config); input layers left out."""
    config = serialized.get("config", serialized)
    entries = [e for e in config.get("layers", []) if e.get("class_name") != "InputLayer"]
    layers = []
    for entry in entries:
        inner = entry.get("config", {})
        name = inner.get("name", entry.get("name", ""))
        if entry.get("class_name") in _NESTED_MODELS and "layers" in inner:
            layers.append((entry["class_name"], name, _config_architecture(entry)))
        else:
            layers.append((entry.get("class_name"), name, _clean(inner)))
    if serialized.get("class_name") == "Sequential" or "input_layers" not in config:
        wiring = [[[("input", 0) if i == 0 else ("layer", i - 1)]] for i in range(len(layers))]
        outputs = [("layer", len(layers) - 1)] if layers else []
        return {"layers": layers, "wiring": (wiring, outputs)}
    inputs = {ref[0]: k for k, ref in enumerate(_refs(config.get("input_layers")))}
    positions = {e.get("name", e.get("config", {}).get("name")): i for i, e in enumerate(entries)}

    def source(ref):
        layer, node, tensor = (list(ref) + [0, 0])[:3]
        if layer in inputs:
            return ("input", inputs[layer])
        return ("layer", positions.get(layer, layer), node, tensor)

    wiring = []
    for entry in entries:
        nodes = []
        for node in entry.get("inbound_nodes", []):
            found: list = []
            _history(node, found)
            nodes.append([source(ref) for ref in found])
        wiring.append(nodes)
    outputs = [source(ref) for ref in _refs(config.get("output_layers"))]
    # a chain reads the same however it was built: ("layer", i) for output 0 of node 0
    wiring = [
        [[(s[0], s[1]) if s[0] == "layer" and s[2:] == (0, 0) else s for s in n] for n in nodes]
        for nodes in wiring
    ]
    outputs = [(s[0], s[1]) if s[0] == "layer" and s[2:] == (0, 0) else s for s in outputs]
    return {"layers": layers, "wiring": (wiring, outputs)}


def architecture(model) -> dict:
    """What a model computes, layer by layer (for `architecture_difference`): each layer's
    class, name and config without the ignored settings, and how the layers are wired.

    Sequential and Functional models are read from their config (a Sequential is a chain,
    so it matches the Functional chain of the same layers); a subclassed model whose
    config Keras cannot write is read from its tracked layers, unwired (its `call` is code).
    """
    try:
        serialized = keras.saving.serialize_keras_object(model)
        if isinstance(serialized, dict) and "layers" in serialized.get("config", {}):
            return _config_architecture(serialized)
    except Exception:  # noqa: S110  (a subclassed model without get_config: its layers)
        pass
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layers.append((type(layer).__name__, layer.name, architecture(layer)))
            continue
        try:
            config = _clean(layer.get_config())
        except Exception:  # a custom layer without get_config: its class only
            config = {}
        layers.append((type(layer).__name__, layer.name, config))
    return {"layers": layers, "wiring": None}


def _show(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _first_key_difference(a, b, path: str = "") -> tuple[str, object, object] | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                where = f"{path}.{key}" if path else str(key)
                return where, a.get(key, "(unset)"), b.get(key, "(unset)")
            found = _first_key_difference(a[key], b[key], f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_key_difference(x, y, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    return None if a == b else (path or "config", a, b)


def _wire_text(sources) -> str:
    names = [
        f"{kind} {where + 1}" if isinstance(where, int) else f"{kind} {where}"
        for kind, where, *_ in sources
    ]
    return ", ".join(names) or "nothing"


def architecture_difference(a: dict, b: dict, prefix: str = "") -> str | None:
    """The first difference between two `architecture`s in words ('layer 2 (dense_1):
    activation relu vs sigmoid'; layers numbered from 1, input layers not counted, named as
    in the first model), or None when they compute the same."""
    for i, (x, y) in enumerate(zip(a["layers"], b["layers"])):
        where = f"{prefix}layer {i + 1} ({x[1]})"
        if x[0] != y[0]:
            return f"{where}: {x[0]} vs {y[0]}"
        if isinstance(x[2], dict) and "layers" in x[2] and "wiring" in x[2]:
            inner = architecture_difference(x[2], y[2], f"{where} > ")
            if inner is not None:
                return inner
            continue
        found = _first_key_difference(x[2], y[2])
        if found is not None:
            key, va, vb = found
            return f"{where}: {key} {_show(va)} vs {_show(vb)}"
    if len(a["layers"]) != len(b["layers"]):
        longer = a["layers"] if len(a["layers"]) > len(b["layers"]) else b["layers"]
        extra = longer[min(len(a["layers"]), len(b["layers"]))]
        return (
            f"{prefix}{len(a['layers'])} layers vs {len(b['layers'])} (the first extra: "
            f"{extra[0]} {extra[1]!r})"
        )
    if a["wiring"] is not None and b["wiring"] is not None and a["wiring"] != b["wiring"]:
        (wires_a, out_a), (wires_b, out_b) = a["wiring"], b["wiring"]
        for i, (x, y) in enumerate(zip(wires_a, wires_b)):
            if x != y:
                sources_a = [s for node in x for s in node]
                sources_b = [s for node in y for s in node]
                return (
                    f"{prefix}layer {i + 1} ({a['layers'][i][1]}): its inputs are "
                    f"{_wire_text(sources_a)} vs {_wire_text(sources_b)}"
                )
        return f"{prefix}the outputs are {_wire_text(out_a)} vs {_wire_text(out_b)}"
    return None


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
