"""Training losses and level functions, resolved from names or a model's compile config.

The *loss* is what beads are trained on (differentiable, the paper's training loss). The
*level function* decides "below level u": the loss itself, classification error in percent,
perplexity, or any per-sample Keras loss/metric function (e.g. `mean_absolute_error`, the
paper's level for regression). Both are recorded in every store.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import ops

from keras_landscape.errors import UserError
from keras_landscape.values import conform, parse_named

LEVEL_FUNCTIONS = {
    "loss": "the training loss itself (mean per element, plus model regularisers)",
    "error": "classification error in percent (argmax, or a 0.5 / logit-0 threshold for one "
    "output)",
    "perplexity": "exp of the mean cross-entropy (language models; needs a cross-entropy loss)",
    "<keras name>": "any per-sample Keras loss or metric function, e.g. mean_absolute_error",
}

_CROSSENTROPY = ("crossentropy",)


@dataclass(frozen=True)
class Objective:
    """A per-element loss and a per-element level function.

    Attributes:
        loss: Keras Loss with reduction "none": (y_true, y_pred) -> per-element losses.
        level: (y_true, y_pred, per_element_loss) -> per-element level values.
        level_includes_regularizer: the level is the loss itself (E includes model.losses).
        level_transform: host-side map from the mean level to the reported value
            (e.g. exp for perplexity); identity when None.
    """

    loss: Callable
    level: Callable
    level_includes_regularizer: bool
    level_transform: Callable | None = None


@dataclass(frozen=True)
class ResolvedObjective:
    """An Objective plus the names and settings that produced it (recorded in the store)."""

    objective: Objective
    loss_name: str
    loss_config: dict
    level_fn: str

    def finalize_level(self, mean_level: float) -> float:
        transform = self.objective.level_transform
        return float(transform(mean_level)) if transform else float(mean_level)


def parse_named_spec(spec: str) -> tuple[str, dict]:
    """'name:key=val,key=val' -> (name, {key: value}), by the one key=value parser (values
    typed by `values.text_value`; `keras_loss` then gives each the type of the loss's own
    argument, so `from_logits=maybe` is refused)."""
    return parse_named(
        spec, "loss option", example="'sparse_categorical_crossentropy:from_logits=true'"
    )


class PerElementLoss(keras.losses.Loss):
    """A loss function (or another Loss's `call`) applied without reduction."""

    def __init__(self, fn, name: str | None = None, **fn_kwargs):
        super().__init__(name=name or getattr(fn, "__name__", "loss"), reduction="none")
        self.fn = fn
        self.fn_kwargs = fn_kwargs

    def call(self, y_true, y_pred):
        if len(y_true.shape) == len(y_pred.shape) + 1 and y_true.shape[-1] == 1:
            y_true = ops.squeeze(y_true, -1)
        elif len(y_pred.shape) == len(y_true.shape) + 1 and y_pred.shape[-1] == 1:
            y_pred = ops.squeeze(y_pred, -1)
        return self.fn(y_true, y_pred, **self.fn_kwargs)

    def get_config(self) -> dict:
        return {"name": self.name, **self.fn_kwargs}


def _unreduced(loss) -> keras.losses.Loss:
    """A copy of a Keras loss (object, function or config) with reduction 'none'."""
    if isinstance(loss, PerElementLoss):
        return loss  # already unreduced (a loss name given with options)
    if isinstance(loss, keras.losses.Loss):
        config = dict(loss.get_config())
        config["reduction"] = "none"
        try:
            return loss.__class__.from_config(config)
        except Exception:  # a custom Loss whose config does not round-trip
            return PerElementLoss(loss.call, name=loss.name)
    if callable(loss):
        return PerElementLoss(loss)
    raise TypeError(loss)


def keras_loss(spec: str):
    """The Keras loss a spec names, with its options: 'mae',
    'sparse_categorical_crossentropy:from_logits=true'.

    Where Keras has a Loss class of that name (CamelCase), an instance built with the options,
    so that a model compiled with it saves; otherwise the loss function (its options bound,
    per element).

    Raises:
        UserError: an unknown loss, or options the loss does not take.
    """
    name, options = parse_named_spec(spec)
    cls = getattr(keras.losses, "".join(part.capitalize() for part in name.split("_")), None)
    if isinstance(cls, type) and issubclass(cls, keras.losses.Loss):
        options = conform(options, cls.__init__, f"loss {name}")
        try:
            return cls(**options)
        except TypeError as error:
            raise UserError(f"Bad option for loss {name!r}: {error}.") from None
    try:
        found = keras.losses.get(name)
    except (ValueError, TypeError):
        found = None
    if found is None:
        raise UserError(
            f"Unknown loss {name!r}. Use any Keras loss name, e.g. mean_squared_error, "
            "mean_absolute_error, sparse_categorical_crossentropy, "
            "categorical_crossentropy, binary_crossentropy; options as "
            "'sparse_categorical_crossentropy:from_logits=true'."
        )
    if not options:
        return found
    if not isinstance(found, keras.losses.Loss):
        _refuse_unknown_options(found, options, name)
    options = conform(
        options,
        type(found).__init__ if isinstance(found, keras.losses.Loss) else found,
        f"loss {name}",
    )
    if isinstance(found, keras.losses.Loss):
        try:
            return found.__class__.from_config({**found.get_config(), **options})
        except TypeError as error:
            raise UserError(f"Bad option for loss {name!r}: {error}.") from None
    return PerElementLoss(found, name=name, **options)  # functions take options as kwargs


def _refuse_unknown_options(function, options: dict, name: str) -> None:
    """UserError for options a loss function does not take (`mse:from_logits=true`), which
    would otherwise fail inside the first evaluation."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    taken = [p for p in parameters if p not in ("y_true", "y_pred")]
    unknown = sorted(set(options) - set(taken))
    if unknown:
        raise UserError(
            f"Loss {name!r} takes no option {', '.join(unknown)}; its options: "
            f"{', '.join(taken) or '(none)'}. Give the loss without it (from_logits belongs to "
            "the cross-entropy losses)."
        )


def resolve_loss(loss_spec: str | None, model) -> tuple[keras.losses.Loss, str, dict]:
    """The training loss from `--loss` (a Keras loss name, with options) or the model's compile.

    Returns:
        (per-element Loss with reduction 'none', its name, its config dict).
    """
    if loss_spec:
        loss = keras_loss(loss_spec)
    else:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise UserError(
                "The model was saved without a compiled loss, so there is no loss to take from "
                "it: pass one with --loss (any Keras loss name, e.g. "
                "sparse_categorical_crossentropy or mean_squared_error)."
            )
        if isinstance(loss, (list, tuple, dict)):
            raise UserError(
                "The model has several outputs with separate losses; keras-landscape probes "
                "single-output models. Wrap the model so that it has one output."
            )
        if isinstance(loss, (str, dict)):
            loss = keras.losses.get(loss)
    unreduced = _unreduced(loss)
    config = {}
    try:
        config = {k: v for k, v in unreduced.get_config().items() if k != "reduction"}
    except Exception:  # custom losses without a config: the name is what we can record
        pass
    name = getattr(getattr(unreduced, "fn", None), "__name__", None) or unreduced.name
    return unreduced, name, config


def _error_percent(from_logits: bool):
    threshold = 0.0 if from_logits else 0.5

    def level(y_true, y_pred, per_element):
        del per_element
        if y_pred.shape[-1] == 1:
            predicted = ops.cast(ops.squeeze(y_pred, -1) > threshold, "int32")
            truth = ops.cast(ops.reshape(y_true, ops.shape(predicted)) > 0.5, "int32")
        else:
            predicted = ops.argmax(y_pred, axis=-1)
            if len(y_true.shape) == len(y_pred.shape):
                truth = ops.argmax(y_true, axis=-1)  # one-hot targets
            else:
                truth = ops.cast(y_true, predicted.dtype)
        return 100.0 * ops.cast(
            ops.not_equal(predicted, ops.cast(truth, predicted.dtype)), "float32"
        )

    return level


def resolve_objective(
    model, loss_spec: str | None = None, level_fn: str = "loss"
) -> ResolvedObjective:
    """Loss and level function for a model.

    Args:
        model: the Keras model (its compile config supplies the loss when `loss_spec` is None).
        loss_spec: a Keras loss name, optionally with options ('name:from_logits=true').
        level_fn: 'loss', 'error', 'perplexity', or a per-sample Keras loss/metric name.

    Returns:
        A ResolvedObjective.
    """
    loss, loss_name, loss_config = resolve_loss(loss_spec, model)
    from_logits = bool(loss_config.get("from_logits", False))
    level_fn = level_fn or "loss"
    if level_fn == "loss":
        objective = Objective(loss, lambda y, p, e: e, level_includes_regularizer=True)
    elif level_fn == "error":
        objective = Objective(loss, _error_percent(from_logits), level_includes_regularizer=False)
    elif level_fn == "perplexity":
        if not any(word in loss_name.lower() for word in _CROSSENTROPY):
            raise UserError(
                f"--level-fn perplexity is exp(mean cross-entropy), but the loss is {loss_name!r}. "
                "Use a cross-entropy loss (--loss sparse_categorical_crossentropy) or another "
                "level function."
            )
        objective = Objective(
            loss, lambda y, p, e: e, level_includes_regularizer=False, level_transform=_safe_exp
        )
    else:
        objective = Objective(loss, _named_level(level_fn), level_includes_regularizer=False)
    return ResolvedObjective(objective, loss_name, loss_config, level_fn)


def check_targets(resolved: ResolvedObjective, target_shape, output_shape, spec: str) -> None:
    """UserError when a Keras loss or level function would compare targets and outputs of
    per-sample shapes it cannot pair: a `sparse_*` function takes class ids, (...) against
    outputs (..., classes); any other takes targets of the output's own shape (a trailing
    axis of 1 on either side is squeezed, as Keras does). Integer labels (n,) against a
    10-way output under mean_squared_error would otherwise fail inside the first
    evaluation, or, where the sizes happen to broadcast, give silently wrong numbers.
    Functions that are not Keras's own (custom losses) are not checked."""
    target, output = tuple(target_shape), tuple(output_shape)
    checks = [("loss", resolved.loss_name, resolved.objective.loss)]
    if resolved.level_fn not in ("loss", "error", "perplexity"):
        checks.append(("level function", resolved.level_fn, _named_function(resolved.level_fn)))
    for role, name, function in checks:
        if not _is_keras_own(function) or _shapes_pair(name, target, output):
            continue
        sparse = "sparse" in name.lower()
        labels = _shapes_pair("sparse", target, output)  # one class id per output row
        if sparse:
            fix = (
                "a sparse function takes one class id per sample; with one-hot or real-valued "
                f"targets use its dense form ({name.replace('sparse_', '')})"
            )
        elif labels:
            fix = (
                "the targets are class ids, one per sample, and the model outputs "
                f"{output[-1]} scores: use --level-fn error or loss, a sparse_ function "
                "(sparse_categorical_crossentropy), or one-hot targets"
            )
        else:
            fix = "give data whose targets have the model's output shape, or another function"
        flag = "--loss" if role == "loss" else "--level-fn"
        raise UserError(
            f"The {role} {name!r} ({flag}) cannot compare the targets of {spec!r} (per-sample "
            f"shape {target}) with the model's outputs (per-sample shape {output}): {fix}."
        )


def _named_function(name: str):
    for getter in (keras.losses.get, keras.metrics.get):
        try:
            return getter(name)
        except (ValueError, TypeError):
            continue
    return None


def _is_keras_own(function) -> bool:
    """A loss or metric of Keras itself (a function, a Loss class, or one wrapped in
    PerElementLoss), whose target convention is known from its name."""
    inner = getattr(function, "fn", function)
    module = getattr(inner, "__module__", None) or type(inner).__module__
    return isinstance(module, str) and module.startswith("keras.")


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _shapes_pair(name: str, target: tuple, output: tuple) -> bool:
    """Whether a Keras function called `name` pairs targets and outputs of these
    per-sample shapes (see `check_targets`)."""
    if "sparse" in name.lower():
        ids = target[:-1] if target[-1:] == (1,) else target
        return len(output) >= 1 and _same(ids, output[:-1])
    if len(target) == len(output) + 1 and target[-1:] == (1,):
        target = target[:-1]
    elif len(output) == len(target) + 1 and output[-1:] == (1,):
        output = output[:-1]
    return _same(target, output)


def _safe_exp(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf


def _named_level(name: str):
    fn = None
    for getter in (keras.losses.get, keras.metrics.get):
        try:
            candidate = getter(name)
        except (ValueError, TypeError):
            continue
        if callable(candidate) and not isinstance(candidate, keras.metrics.Metric):
            fn = candidate
            break
    if fn is None:
        raise UserError(
            f"Unknown level function {name!r}. Use one of: loss, error, perplexity, or a "
            "per-sample Keras loss/metric function name such as mean_absolute_error or "
            "mean_squared_error."
        )
    per_element = _unreduced(fn)
    return lambda y_true, y_pred, loss_values: per_element(y_true, y_pred)
