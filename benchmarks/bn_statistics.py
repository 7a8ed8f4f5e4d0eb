"""BatchNorm statistics along a path: the linear barrier between two BN CNNs, recomputed
versus interpolated statistics (docs/science.md, "BatchNorm along paths").

Trains two BatchNorm CNNs on an MNIST subset (different seeds), then evaluates the straight
segment between them with both `--bn-stats` modes, before and after weight matching (B's
units permuted to A's, its statistics with them), and each end's own level (Keras's
evaluate) against its level with recomputed statistics. Writes JSON (and, with --figure, a
PNG of the profiles).

    python benchmarks/bn_statistics.py --mnist ../shared/data/mnist.npz \\
        --out benchmarks/results/bn_statistics.json --figure docs/figures/bn_linear_barrier.png
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def bn_cnn(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(16, 3, padding="same"),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 3, padding="same"),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(10),
        ],
        name=f"bn_cnn_{seed}",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default="../shared/data/mnist.npz")
    parser.add_argument("--train", type=int, default=10000, help="training samples used")
    parser.add_argument("--test", type=int, default=2000, help="test samples used")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--grid", type=int, default=20, help="segments of the linear profile")
    parser.add_argument("--out", default="benchmarks/results/bn_statistics.json")
    parser.add_argument("--figure", default=None)
    args = parser.parse_args()

    import keras

    from keras_landscape.data.specs import Dataset
    from keras_landscape.engine.landscape import Landscape
    from keras_landscape.models.align import aligned_state, weight_matching
    from keras_landscape.science.barriers import linear_profile

    with np.load(args.mnist) as f:
        x_train = (f["x_train"][: args.train] / 255.0).astype("float32")[..., None]
        y_train = f["y_train"][: args.train].astype("int64")
        x_test = (f["x_test"][: args.test] / 255.0).astype("float32")[..., None]
        y_test = f["y_test"][: args.test].astype("int64")
    data = Dataset(
        spec=f"mnist[:{args.train}]",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        task="classification",
        num_classes=10,
        description=f"MNIST, first {args.train} train / {args.test} test images",
    )
    started = time.perf_counter()
    models = []
    for seed in (0, 1):
        model = bn_cnn(seed)
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=128, verbose=0)
        models.append(model)
    train_seconds = time.perf_counter() - started

    result = {
        "data": data.spec,
        "test_samples": args.test,
        "epochs": args.epochs,
        "train_seconds": train_seconds,
        "modes": {},
    }
    for mode in ("recompute", "interpolate"):
        landscape = Landscape(models[0], data, level_fn="error", bn_stats=mode)
        thetas = [landscape.theta_of(m) for m in models]
        states = [landscape.state_of(m) for m in models]
        alignment = weight_matching(models[0], *thetas)
        aligned_b = (alignment.theta, aligned_state(landscape, states[1], alignment.permutations))
        for label, (theta_b, state_b) in (("raw", (thetas[1], states[1])), ("aligned", aligned_b)):
            started = time.perf_counter()
            ts, levels = linear_profile(
                landscape, thetas[0], theta_b, args.grid, states[0], state_b
            )
            result["modes"][f"{mode}, {label}"] = {
                "t": ts.tolist(),
                "test_error": levels.tolist(),
                "linear_max": float(levels.max()),
                "linear_barrier": float(levels.max() - max(levels[0], levels[-1])),
                "seconds": time.perf_counter() - started,
            }
        own = [landscape.evaluate(t, state=s).level for t, s in zip(thetas, states)]
        recomputed = [
            landscape.evaluate(t, state=s, recompute=True).level for t, s in zip(thetas, states)
        ]
        keras_errors = [
            100.0 * (1.0 - m.evaluate(x_test, y_test, verbose=0, batch_size=1000)[1])
            for m in models
        ]
        result["ends"] = {
            "keras_evaluate": keras_errors,
            "own_statistics": own,
            "recomputed_statistics": recomputed,
            "recomputed_minus_own": [r - o for r, o in zip(recomputed, own)],
            "statistics_samples": landscape.statistics_samples,
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {
                m: {k: v for k, v in r.items() if k in ("linear_max", "linear_barrier")}
                for m, r in result["modes"].items()
            }
            | {"ends": result["ends"]},
            indent=2,
        )
    )
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6))
        for (name, r), style in zip(result["modes"].items(), ("-o", "--s", "-^", "--v")):
            ax.plot(r["t"], r["test_error"], style, ms=3, label=name)
        ax.set_xlabel("t  (theta = (1 - t) A + t B)")
        ax.set_ylabel("test error (%)")
        ax.set_title("Linear path between two BatchNorm CNNs (MNIST)")
        ax.legend()
        fig.tight_layout()
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=120)
    del keras


if __name__ == "__main__":
    main()
