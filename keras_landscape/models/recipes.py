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
from dataclasses import dataclass, field
from pathlib import Path

from keras_landscape.errors import ConfigError, UserError

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
OPTIMIZERS = {
    "adam": "Adam",
    "sgd": "SGD",
    "rmsprop": "RMSprop",
    "adamw": "AdamW",
    "nadam": "Nadam",
    "adagrad": "Adagrad",
}
DEFAULT_TRAIN = {"epochs": 20, "batch_size": 32, "learning_rate": 1e-3, "optimizer": "adam"}


@dataclass
class ModelRecipe:
    """An architecture to build with Keras and train `replicas` times (seeds seed + i)."""

    builder: str
    input: list[int]
    output: int
    layers: list[int] = field(default_factory=list)
    filters: list[int] = field(default_factory=list)
    kernel_size: int = 3
    pool: int = 2
    activation: str = "relu"
    output_activation: str | None = None
    dropout: float = 0.0
    embedding: int = 0
    use_bias: bool = True
    kernel_initializer: str = ""
    bias_initializer: str = ""
    replicas: int = 2
    train: dict = field(default_factory=lambda: dict(DEFAULT_TRAIN))
    dir: str = ""

    def architecture(self) -> dict:
        """What determines the trained weights besides data, loss and seed.

        `use_bias` appears only when false, and the initializers only when set, so that
        recipes written before they existed keep their recorded stamps (and their trained
        models are reused).
        """
        skip = ("dir", "replicas") + (("use_bias",) if self.use_bias else ())
        skip += tuple(k for k in ("kernel_initializer", "bias_initializer") if not getattr(self, k))
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


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
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, value = item.partition("=")
        if not equals:
            _bad(where, f"{spec!r}: options are key=value, got {item!r}")
        try:
            options[key.strip()] = float(value)
        except ValueError:
            options[key.strip()] = value.strip()
    try:
        return keras.initializers.get({"class_name": name.strip(), "config": options})
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


__all__ = ["build_model", "train_replicas", "training_loss"]
