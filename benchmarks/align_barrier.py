"""Linear barriers before and after weight matching: two wide MLPs and two residual MLPs
(Dense blocks with BatchNorm, joined to the stream by Add) trained on digits from different
seeds (docs/performance.md, "Weight matching across residual connections").

For each pair (A, B) the straight segment (1 - t) A + t B is evaluated on 25 points with the
project's Landscape and `linear_profile` (BatchNorm statistics recomputed at each point), once
with B as trained and once with B's hidden units permuted to A by
`keras_landscape.models.align.weight_matching` (its BatchNorm statistics permuted with them).
The barrier is the maximum of the loss on the segment minus the mean of the two end losses, on
the train split and on the test split. Writes JSON.

    python benchmarks/align_barrier.py --out benchmarks/results/align_barrier.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def wide_mlp(seed: int, width: int):
    import keras

    keras.utils.set_random_seed(seed)
    L = keras.layers
    inputs = keras.Input((64,))
    x = L.Dense(width, activation="relu")(inputs)
    x = L.Dense(width, activation="relu")(x)
    return keras.Model(inputs, L.Dense(10)(x), name=f"wide_mlp_{seed}")


def residual_mlp(seed: int, width: int, blocks: int = 2):
    """stem Dense -> `blocks` x [x + Dense(BN(relu(Dense(x))))] -> relu -> Dense(10)."""
    import keras

    keras.utils.set_random_seed(seed)
    L = keras.layers
    inputs = keras.Input((64,))
    x = L.Dense(width)(inputs)
    for _ in range(blocks):
        h = L.Dense(width, activation="relu")(x)
        h = L.BatchNormalization()(h)
        h = L.Dense(width)(h)
        x = L.Add()([x, h])
    x = L.Activation("relu")(x)
    return keras.Model(inputs, L.Dense(10)(x), name=f"residual_mlp_{seed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256, help="hidden units of the MLPs")
    parser.add_argument("--res-width", type=int, default=128, help="residual stream width")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--points", type=int, default=25, help="points of the linear profile")
    parser.add_argument("--seeds", type=int, nargs=2, default=(0, 1))
    parser.add_argument("--out", default="benchmarks/results/align_barrier.json")
    args = parser.parse_args()

    import keras

    from keras_landscape.data.specs import load_data
    from keras_landscape.engine.landscape import Landscape
    from keras_landscape.engine.params import ParameterLayout
    from keras_landscape.models.align import aligned_state, weight_matching
    from keras_landscape.science.barriers import linear_profile

    data = load_data("digits")
    started_all = time.perf_counter()
    result = {
        "data": data.spec,
        "train_samples": int(len(data.x_train)),
        "test_samples": int(len(data.x_test)),
        "epochs": args.epochs,
        "points": args.points,
        "seeds": list(args.seeds),
        "barrier": "max over the points of the loss minus the mean of the two end losses",
        "pairs": {},
    }
    builders = {
        "wide_mlp": lambda s: wide_mlp(s, args.width),
        "residual_mlp": lambda s: residual_mlp(s, args.res_width),
    }
    for name, build in builders.items():
        started = time.perf_counter()
        models = []
        for seed in args.seeds:
            model = build(seed)
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            model.fit(data.x_train, data.y_train, epochs=args.epochs, batch_size=64, verbose=0)
            models.append(model)
        train_seconds = time.perf_counter() - started
        entry = {
            "architecture": [type(layer).__name__ for layer in models[0].layers],
            "parameters": int(models[0].count_params()),
            "train_seconds": train_seconds,
            "splits": {},
        }
        layout = ParameterLayout.from_model(models[0])
        started = time.perf_counter()
        alignment = weight_matching(models[0], *(layout.theta_of(m) for m in models))
        entry["align_seconds"] = time.perf_counter() - started
        entry["align_sweeps"] = alignment.iterations
        entry["distance_raw"] = alignment.distance_before
        entry["distance_aligned"] = alignment.distance_after
        entry["groups"] = {g: len(m) for g, m in alignment.groups.items()}
        for split in ("train", "test"):
            landscape = Landscape(models[0], data, level_fn="loss", split=split)
            theta_a, theta_b = (landscape.theta_of(m) for m in models)
            state_a, state_b = (landscape.state_of(m) for m in models)
            aligned_b = alignment.theta
            aligned_state_b = aligned_state(landscape, state_b, alignment.permutations)
            rows = {}
            for label, (tb, sb) in (
                ("raw", (theta_b, state_b)),
                ("aligned", (aligned_b, aligned_state_b)),
            ):
                ts, levels = linear_profile(landscape, theta_a, tb, args.points - 1, state_a, sb)
                ends = float(np.mean([levels[0], levels[-1]]))
                rows[label] = {
                    "t": [float(t) for t in ts],
                    "loss": [float(v) for v in levels],
                    "end_losses": [float(levels[0]), float(levels[-1])],
                    "linear_max": float(levels.max()),
                    "barrier": float(levels.max()) - ends,
                }
            entry["splits"][split] = rows
        result["pairs"][name] = entry
    result["seconds"] = time.perf_counter() - started_all
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    summary = {
        name: {
            split: {
                label: {k: r[label][k] for k in ("end_losses", "linear_max", "barrier")}
                for label in ("raw", "aligned")
            }
            for split, r in entry["splits"].items()
        }
        | {"distance": [entry["distance_raw"], entry["distance_aligned"]]}
        for name, entry in result["pairs"].items()
    }
    print(json.dumps(summary | {"seconds": result["seconds"]}, indent=2))


if __name__ == "__main__":
    main()
