"""Models from a recipe: a Keras architecture built and trained `replicas` times with fit.

Used by `klandscape run` (a config's `model:` key) and `klandscape demo`. Replica i starts
from seed `seed + i`. The models are saved as `<builder>_<i>.keras` with a `recipe.json`
recording what they were trained from, so a rerun reuses them and a changed recipe retrains.
Full-batch training (`batch_size: full`, one optimiser step per epoch) fuses many steps into
one compiled Keras call, because Keras pays a per-epoch overhead.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass
from typing_extensions import TypedDict

from keras_landscape.errors import ConfigError, UserError
from keras_landscape.settings import Bool, Float, Int, Text, explain, problem
from keras_landscape.values import BadValue, conform, parse_named, to_type

BUILDERS = {
    "mlp": (
        "input",
        "layers",
        "activation",
        "output",
        "output_activation",
        "dropout",
        "use_bias",
        "kernel_initializer",
        "bias_initializer",
    ),
    "cnn": (
        "input",
        "filters",
        "kernel_size",
        "pool",
        "layers",
        "activation",
        "output",
        "output_activation",
        "dropout",
        "kernel_initializer",
        "bias_initializer",
    ),
    # token sequences: Embedding(output, embedding) -> LSTM(units) per `layers` -> Dense(output)
    "lstm": ("input", "embedding", "layers", "output", "dropout"),
}
#: keys every builder takes
COMMON_KEYS = ("builder", "replicas", "train", "dir")
OPTIMIZERS = {
    "adam": "Adam",
    "sgd": "SGD",
    "rmsprop": "RMSprop",
    "adamw": "AdamW",
    "nadam": "Nadam",
    "adagrad": "Adagrad",
}
DEFAULT_TRAIN = {"epochs": 20, "batch_size": 32, "learning_rate": 1e-3, "optimizer": "adam"}


def _listed(value):
    """A single width where a list is expected: `input: 1` is `input: [1]`."""
    return [value] if isinstance(value, (int, str)) and not isinstance(value, bool) else value


def _batch_size(value):
    if value is None or value == "full":
        return "full"
    try:
        number = to_type(value, int)
    except BadValue:
        number = 0
    if number < 1:
        raise problem(f"expected full or an integer >= 1, got {value!r}")
    return number


def _optimizer(value):
    name = str(value).strip().lower()
    if name not in OPTIMIZERS:
        raise problem(f"unknown optimizer {value!r}; use one of {', '.join(OPTIMIZERS)}")
    return name


def _builder(value):
    if value not in BUILDERS:
        raise problem(f"unknown builder {value!r}; builders: {', '.join(BUILDERS)}")
    return value


def _with_defaults(value):
    """`train` with DEFAULT_TRAIN's values for the keys it does not set."""
    if value is None:
        return dict(DEFAULT_TRAIN)
    return {**DEFAULT_TRAIN, **value} if isinstance(value, dict) else value


Positive = Annotated[Int, Field(ge=1)]
Widths = Annotated[list[Positive], BeforeValidator(_listed)]
#: an initializer spec ('' and null: the layer's default)
Initializer = Annotated[str, BeforeValidator(lambda v: "" if v is None else v)]


class Train(TypedDict):
    """`model.train`: how each replica is trained with Keras's fit."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    epochs: Positive
    batch_size: Annotated[Literal["full"] | int, BeforeValidator(_batch_size)]
    learning_rate: Annotated[Float, Field(gt=0)]
    optimizer: Annotated[str, BeforeValidator(_optimizer)]


@dataclass(config=ConfigDict(extra="forbid"))
class ModelRecipe:
    """An architecture to build with Keras and train `replicas` times (seeds seed + i): the
    `model:` section of a run config, declared once (keys, types and checks)."""

    builder: Annotated[Text, BeforeValidator(_builder)]
    input: Annotated[Widths, Field(min_length=1, description="the model's input shape")]
    output: Annotated[Positive, Field(description="the model's output width")]
    layers: Widths = dataclasses.field(default_factory=list)
    filters: Widths = dataclasses.field(default_factory=list)
    kernel_size: Positive = 3
    pool: Positive = 2
    activation: Text = "relu"
    output_activation: Text | None = None
    dropout: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    embedding: Annotated[Int, Field(ge=0)] = 0
    use_bias: Bool = True
    kernel_initializer: Initializer = ""
    bias_initializer: Initializer = ""
    replicas: Positive = 2
    train: Annotated[Train, BeforeValidator(_with_defaults)] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_TRAIN)
    )
    dir: Annotated[str, BeforeValidator(lambda v: "" if v is None else v)] = ""

    def architecture(self) -> dict:
        """What determines the trained weights besides data, loss and seed.

        `use_bias` appears only when false, and the initializers only when set, so that
        recipes written before they existed keep their recorded stamps (and their trained
        models are reused).
        """
        skip = ("dir", "replicas") + (("use_bias",) if self.use_bias else ())
        skip += tuple(k for k in ("kernel_initializer", "bias_initializer") if not getattr(self, k))
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def read_recipe(document, where: str = "model") -> ModelRecipe:
    """A `model:` mapping of a config as a ModelRecipe; ConfigError naming the key path
    (`model.layers[1]: must be >= 1, got -1`) for a bad key or value, a key the builder
    does not take, or a shape the builder cannot build."""
    if not isinstance(document, dict):
        _bad(where, "expected a mapping with builder, input, layers, output, ...")
    try:
        recipe = TypeAdapter(ModelRecipe).validate_python(document)
    except ValidationError as error:
        path, message = explain(error, ModelRecipe)
        _bad(f"{where}.{path}", message)
    allowed = set(BUILDERS[recipe.builder]) | set(COMMON_KEYS)
    for key in document:
        if key not in allowed:
            _bad(
                f"{where}.{key}",
                f"not an option of the {recipe.builder} builder; its options: "
                f"{', '.join(sorted(allowed))}",
            )
    if recipe.builder == "lstm" and (
        len(recipe.input) != 1 or recipe.embedding < 1 or not recipe.layers
    ):
        _bad(
            where,
            "the lstm builder needs input [steps], embedding >= 1 and layers "
            "(LSTM units, e.g. [200, 200]); output is the vocabulary size",
        )
    if recipe.builder == "cnn":
        if not recipe.filters:
            _bad(f"{where}.filters", "the cnn builder needs at least one Conv2D layer")
        if len(recipe.input) != 3:
            _bad(
                f"{where}.input",
                f"the cnn builder needs an image shape [height, width, channels], got "
                f"{recipe.input}",
            )
    return recipe


def _bad(where: str, message: str) -> None:
    raise ConfigError(f"{where}: {message}")


# Rows of full-batch data tiled into one Keras epoch (many optimiser steps per compiled call).
_TILE_BYTES = 64 << 20
_MAX_STEPS_PER_CALL = 200


def initializer(spec: str, where: str):
    """A Keras initializer from 'name' or 'name:key=value,...' (e.g. 'random_uniform:
    minval=-1,maxval=1', 'random_normal:stddev=1'); '' keeps the layer's default (None)."""
    import keras

    if not spec:
        return None
    try:
        name, options = parse_named(spec, "initializer option", example="random_normal:stddev=1")
        found = keras.initializers.get(name)
        options = conform(options, type(found).__init__, f"initializer {name}")
    except UserError as error:
        _bad(where, str(error))
    except (ValueError, TypeError) as error:
        _bad(where, f"not a Keras initializer: {spec!r} ({error})")
    try:
        return keras.initializers.get({"class_name": name, "config": options})
    except (ValueError, TypeError) as error:
        _bad(where, f"not a Keras initializer: {spec!r} ({error})")


def build_model(recipe: ModelRecipe, name: str = "model"):
    """A Keras model of the recipe (uncompiled, built, fresh random weights)."""
    import keras

    from keras_landscape.models.activations import get_activation

    def activation(value, where):
        value = get_activation(value)  # ours (square), else a Keras name
        try:
            keras.activations.get(value)
        except (ValueError, TypeError):
            _bad(where, f"unknown Keras activation {value!r}")
        return value

    hidden = activation(recipe.activation, "model.activation")
    output = (
        activation(recipe.output_activation, "model.output_activation")
        if recipe.output_activation
        else None
    )
    if recipe.builder == "lstm":
        layers = [
            keras.Input(tuple(recipe.input), dtype="int32"),
            keras.layers.Embedding(recipe.output, recipe.embedding),
        ]
        for units in recipe.layers:
            layers.append(keras.layers.LSTM(units, return_sequences=True))
            if recipe.dropout:
                layers.append(keras.layers.Dropout(recipe.dropout))
        layers.append(keras.layers.Dense(recipe.output, activation=output))
        return keras.Sequential(layers, name=name)
    inits = {}
    for key in ("kernel_initializer", "bias_initializer"):
        value = initializer(getattr(recipe, key), f"model.{key}")
        if value is not None:
            inits[key] = value
    layers = [keras.Input(tuple(recipe.input))]
    if recipe.builder == "cnn":
        for filters in recipe.filters:
            layers.append(
                keras.layers.Conv2D(
                    filters, recipe.kernel_size, padding="same", activation=hidden, **inits
                )
            )
            if recipe.pool > 1:
                layers.append(keras.layers.MaxPooling2D(recipe.pool))
        layers.append(keras.layers.Flatten())
    bias = recipe.use_bias
    for width in recipe.layers:
        layers.append(keras.layers.Dense(width, activation=hidden, use_bias=bias, **inits))
        if recipe.dropout:
            layers.append(keras.layers.Dropout(recipe.dropout))
    layers.append(keras.layers.Dense(recipe.output, activation=output, use_bias=bias, **inits))
    return keras.Sequential(layers, name=name)


def training_loss(spec: str):
    """A Keras loss for `fit` from a loss spec ('mae', 'sparse_categorical_crossentropy:
    from_logits=true'): the Loss class when Keras has one, so that the model saves."""
    from keras_landscape.engine.objectives import keras_loss  # Keras: only when training

    try:
        return keras_loss(spec)
    except UserError as error:
        _bad("loss", str(error))


def _steps_per_call(epochs: int, rows: int, row_bytes: int) -> int:
    """Full-batch steps fused into one Keras epoch: a divisor of `epochs` whose tiled copy
    of the data stays under _TILE_BYTES (Keras pays its per-epoch overhead once per call)."""
    cap = max(1, min(_MAX_STEPS_PER_CALL, _TILE_BYTES // max(1, rows * row_bytes)))
    return max(d for d in range(1, min(cap, epochs) + 1) if epochs % d == 0)


def _fit(model, x, y, train: dict, task) -> None:
    import keras
    import numpy as np

    class Advance(keras.callbacks.Callback):
        def __init__(self, amount):
            super().__init__()
            self.amount = amount

        def on_epoch_end(self, epoch, logs=None):
            task.advance(self.amount)
            if logs and "loss" in logs:
                task.update(status=f"loss {logs['loss']:.4g}")

    epochs = train["epochs"]
    if train["batch_size"] == "full":
        steps = _steps_per_call(epochs, len(x), x[:1].nbytes + y[:1].nbytes)
        model.fit(
            np.tile(x, (steps,) + (1,) * (x.ndim - 1)),
            np.tile(y, (steps,) + (1,) * (y.ndim - 1)),
            batch_size=len(x),
            epochs=epochs // steps,
            shuffle=False,
            verbose=0,
            callbacks=[Advance(steps)],
        )
    else:
        model.fit(
            x, y, batch_size=train["batch_size"], epochs=epochs, verbose=0, callbacks=[Advance(1)]
        )


def stamp(recipe: ModelRecipe, data_spec: str, loss: str, seed: int) -> dict:
    """What the trained replicas depend on (recipe.json beside them)."""
    return {"recipe": recipe.architecture(), "data": data_spec, "loss": loss, "seed": seed}


def read_stamp(record: Path) -> dict | None:
    try:
        return json.loads(record.read_text()) if record.is_file() else None
    except (OSError, ValueError):
        return None


def train_replicas(
    recipe: ModelRecipe, data_spec: str, loss: str, seed: int, progress=None
) -> list[str]:
    """Build and train `recipe.replicas` models (seeds seed, seed + 1, ...) into recipe.dir.

    Models already there from the same recipe, data, loss and seed (recipe.json) are reused.

    Returns:
        The saved model files, `<builder>_<i>.keras`.
    """
    import keras

    from keras_landscape.data.specs import adapt_to_model, load_data
    from keras_landscape.progress import NullProgress

    progress = progress or NullProgress()
    folder = Path(recipe.dir)
    paths = [folder / f"{recipe.builder}_{i}.keras" for i in range(recipe.replicas)]
    expected = stamp(recipe, data_spec, loss, seed)
    record = folder / "recipe.json"
    previous = read_stamp(record)
    if previous == expected and all(p.is_file() for p in paths):
        progress.note(f"reusing the {len(paths)} trained models in {folder}")
        return [str(p) for p in paths]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if previous != expected:  # models of another recipe must not be mistaken for these
            for path in paths:
                path.unlink(missing_ok=True)
            record.write_text(json.dumps(expected, indent=1))
    except OSError as error:
        raise UserError(f"Cannot write the models into {str(folder)!r}: {error}.") from None
    dataset = load_data(data_spec, seed=seed)
    train = recipe.train
    for i, path in enumerate(paths):
        if path.is_file():
            continue  # trained by an earlier, interrupted run of the same recipe
        keras.utils.set_random_seed(seed + i)
        model = build_model(recipe, name=f"{recipe.builder}_{i}")
        adapted = adapt_to_model(
            dataset, model.input_shape[1:], model.output_shape[1:], loss.partition(":")[0]
        )
        optimizer = keras.optimizers.get(
            {
                "class_name": OPTIMIZERS[train["optimizer"]],
                "config": {"learning_rate": train["learning_rate"]},
            }
        )
        model.compile(optimizer=optimizer, loss=training_loss(loss))
        task = progress.task(f"training {path.stem} ({i + 1}/{len(paths)})", total=train["epochs"])
        _fit(model, adapted.x_train, adapted.y_train, train, task)
        task.close()
        model.save(path)
    return [str(p) for p in paths]


__all__ = ["ModelRecipe", "build_model", "read_recipe", "train_replicas", "training_loss"]
