"""DSS engine benchmark: compiled projection vs Keras training, batching, the cubic experiment.

    python benchmarks/dss_bench.py [--quick] [--out FILE.json]

Prints one JSON document (and writes it to --out):
- per case (MLP on digits, small CNN on 28x28 images): `projection_step_s` (seconds per Adam
  step inside the compiled projection loop, one bead), `train_step_s` (seconds per
  `model.train_on_batch` step on the same model, batch and optimiser), `step_ratio`;
- `batched_speedup`: K=8 beads projected together vs one after another, same steps;
- `cubic`: wall time of DSS between two trained 1-4-4-1 sigmoid MLPs on the cubic
  regression (MAE level) at one level.
Not a test: numbers depend on the machine. docs/performance.md keeps the latest figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_landscape import backend  # noqa: E402
from keras_landscape.data import Dataset, load_data  # noqa: E402
from keras_landscape.dss import DSSConfig, connect  # noqa: E402
from keras_landscape.landscape import Landscape  # noqa: E402
from keras_landscape.projection import ProjectionConfig, project  # noqa: E402


def mlp_case():
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10)])
    return "mlp_digits", model, load_data("digits"), "sparse_categorical_crossentropy:from_logits=true"


def cnn_case(n: int):
    rng = np.random.default_rng(0)
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    data = Dataset("synthetic28", x, y, x[: n // 4], y[: n // 4], "classification", 10, "random 28x28")
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 5, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 5, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(10),
    ])
    return "cnn_28x28", model, data, "sparse_categorical_crossentropy:from_logits=true"


def time_projection(landscape, k: int, steps: int, batch: int) -> float:
    """Seconds per optimiser step for k beads (target unreachable, so every step runs)."""
    starts = np.repeat(landscape.initial_theta()[None], k, axis=0)
    config = ProjectionConfig(max_steps=steps, check_every=steps, batch_size=batch)
    project(landscape, starts, -1.0, config, seed=0)  # compile
    begin = time.perf_counter()
    project(landscape, starts, -1.0, config, seed=1)
    elapsed = time.perf_counter() - begin
    # one level check of k beads is included; it is small next to `steps` steps
    return elapsed / steps


def time_train_on_batch(model, data, loss, steps: int, batch: int) -> float:
    from keras_landscape.objectives import resolve_loss

    loss_obj, _, _ = resolve_loss(loss, model)
    clone = keras.models.clone_model(model)
    clone.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.get(
        {"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": True}}))
    del loss_obj
    x, y = data.x_train[:batch], data.y_train[:batch]
    if x.shape[1:] != tuple(model.inputs[0].shape[1:]):
        x = x.reshape((len(x),) + tuple(model.inputs[0].shape[1:]))
    for _ in range(3):
        clone.train_on_batch(x, y)
    begin = time.perf_counter()
    for _ in range(steps):
        clone.train_on_batch(x, y)
    return (time.perf_counter() - begin) / steps


def cubic_case(quick: bool) -> dict:
    data = load_data(f"cubic:n={2000 if quick else 10000}")

    def build(seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([keras.Input((1,)), keras.layers.Dense(4, activation="sigmoid"),
                                 keras.layers.Dense(4, activation="sigmoid"), keras.layers.Dense(1)])

    landscape = Landscape(build(0), data, loss="mae", level_fn="mae")
    starts = np.stack([landscape.theta_of(build(s)) for s in (1, 2)])
    trained = project(landscape, starts, 0.1, ProjectionConfig(learning_rate=1e-2, max_steps=20000,
                                                               check_every=200), seed=0)
    level = float(max(trained.levels)) * 1.05
    begin = time.perf_counter()
    result = connect(landscape, trained.thetas[0], trained.thetas[1], level,
                     DSSConfig(learning_rate=1e-2, max_steps=5000, check_every=100))
    return {
        "level": level,
        "seconds": time.perf_counter() - begin,
        "connected": result.connected,
        "beads": result.beads,
        "normalized_length": result.normalized_length,
        "projection_steps": result.projection_steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, about a minute")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    steps = 50 if args.quick else 200
    cases = []
    for name, model, data, loss in (mlp_case(), cnn_case(256 if args.quick else 2048)):
        for batch in (32, 128):
            landscape = Landscape(model, data, loss=loss, level_fn="error")
            projection = time_projection(landscape, 1, steps, batch)
            batched = time_projection(landscape, 8, steps, batch)
            train = time_train_on_batch(model, data, loss, steps, batch)
            cases.append({
                "case": name, "batch_size": batch, "parameters": landscape.size,
                "projection_step_s": projection, "train_step_s": train,
                "step_ratio": projection / train,
                "batched_speedup": 8 * projection / batched,
            })
    document = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "versions": {"keras": keras.__version__, "backend": backend.name,
                     **backend.framework_versions()},
        "quick": args.quick,
        "cases": cases,
        "cubic": cubic_case(args.quick),
    }
    text = json.dumps(document, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
