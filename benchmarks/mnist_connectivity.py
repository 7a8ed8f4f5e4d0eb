"""MNIST CNN connectivity at one level: train two models, connect them, time every stage.

    python benchmarks/mnist_connectivity.py [--data npz:../shared/data/mnist.npz]
        [--limit N] [--epochs E] [--batch-size B] [--out DIR]

The paper's MNIST network (conv5x5x32-pool-conv5x5x64-pool-fc1024 with dropout-10, 3.27M
parameters), trained twice from different seeds with Adam, then `connectivity` at
1.1 x the larger test error (%) with mini-batch projections. Prints one JSON document.
Sized for a GPU; on CPU use e.g. --limit 2000 --epochs 1.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from keras_landscape.data.specs import load_data  # noqa: E402
from keras_landscape.engine import backend  # noqa: E402
from keras_landscape.experiment.runner import RunSpec, execute  # noqa: E402


def mnist_cnn(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 5, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 5, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10),
        ],
        name=f"mnist_cnn_{seed}",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="npz:../shared/data/mnist.npz")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--out", default="mnist-bench")
    args = parser.parse_args()
    spec = args.data + (f":limit={args.limit}" if args.limit else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(spec)
    x = data.x_train.reshape((-1, 28, 28, 1))
    timings, paths = {}, []
    begin = time.perf_counter()
    for seed in (0, 1):
        model = mnist_cnn(seed)
        model.fit(x, data.y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
        path = out / f"cnn_{seed}.keras"
        model.save(path)
        paths.append(str(path))
    timings["train_two_models_s"] = time.perf_counter() - begin
    begin = time.perf_counter()
    document = execute(
        RunSpec(
            models=paths,
            data=spec,
            probes=["evaluate", "connectivity"],
            level_fn="error",
            options={
                "batch_size": args.batch_size,
                "margin": 0.1,
                "check_every": 100,
                "max_steps": 3000,
            },
            out=str(out / "mnist.h5"),
            overwrite=True,
            command="benchmarks/mnist_connectivity.py",
        )
    )
    timings["probe_s"] = time.perf_counter() - begin
    conn = document["results"]["connectivity"]
    print(
        json.dumps(
            {
                "backend": backend.name,
                "accelerator": backend.accelerator_present(),
                "machine": backend.machine(),
                "versions": backend.framework_versions(),
                "data": spec,
                "epochs": args.epochs,
                "test_error": [m["level"] for m in document["results"]["evaluate"]["models"]],
                "connectivity": {
                    k: conn[k]
                    for k in (
                        "connected",
                        "level",
                        "beads",
                        "normalized_length",
                        "max_level",
                        "depth",
                        "projection_steps",
                        "reason",
                    )
                },
                "timings": timings,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
