"""Engine benchmark: compiled projection vs Keras training, bead batching, segment checks.

    python benchmarks/run.py [--quick] [--backend tensorflow|jax] [--out FILE.json]

Prints one JSON document on stdout: machine and versions, then per case (an MLP on digits,
a small CNN on 28x28 images, a small LSTM on token sequences; two batch sizes each):

- projection_step_s: seconds per Adam step inside the compiled projection loop (one bead;
  a run of 2S steps minus a run of S, so the level checks around them cancel; timings are
  the best of 2 runs with --quick, else 3);
- train_step_s: seconds per step of the same model, batch and optimiser with Keras's own
  compiled `train_on_batch`, in the same process;
- step_ratio: projection_step_s / train_step_s (the projection is training: <= 1 is the goal);
- batched_speedup: K=8 beads projected together vs one after another: whole projections
  of the same steps, level checks included;
- batched_step_speedup: the same for the in-loop step alone (8 x one bead's step / the
  8-bead step): where one bead's step already keeps the cores busy, this stays near 1;
- segment_eval_speedup: R=32 points of a segment in one batched call vs a loop of calls;
- plan: how the engine batches the beads through each layer (see keras_landscape.engine.stacked);
- peak_rss_mb: the process's peak resident memory after the case.
Plus `cubic`: DSS between two trained 1-4-4-1 sigmoid MLPs on the cubic regression (MAE)
at one level; and at the top level `lockstep_speedup`: the curviness probe over 10 pairs x 3
levels of five such networks, strings run one after another vs in lockstep (wall time of the
probe's DSS, best of 2), with both runs' verdicts, bead counts and lengths compared in
`lockstep`. Not a test: the numbers describe the machine. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, about a minute on 2 cores"
    )
    parser.add_argument("--backend", choices=["tensorflow", "jax"], default=None)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument(
        "--cases", default="mlp,cnn,lstm", help="comma-separated subset ('' for none)"
    )
    return parser.parse_args()


ARGS = _parse()
if ARGS.backend:
    os.environ["KERAS_BACKEND"] = ARGS.backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_landscape.data.specs import Dataset, load_data  # noqa: E402
from keras_landscape.engine import (
    backend,
    stacked,  # noqa: E402
)
from keras_landscape.engine import kernels as engine
from keras_landscape.engine.landscape import Landscape  # noqa: E402
from keras_landscape.engine.projection import ProjectionConfig, project  # noqa: E402
from keras_landscape.science.dss import DSSConfig, check_segments, connect  # noqa: E402

LOGITS = "sparse_categorical_crossentropy:from_logits=true"
# Step timings are the best of this many runs (the least disturbed by other work).
REPEATS = 2 if ARGS.quick else 3


def mlp_case(n: int):
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)],
        name="mlp",
    )
    return "mlp_digits", model, load_data("digits")


def cnn_case(n: int):
    rng = np.random.default_rng(0)
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    data = Dataset("random28", x, y, x[: n // 4], y[: n // 4], "classification", 10, "random 28x28")
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 5, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 5, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ],
        name="cnn",
    )
    return "cnn_28x28", model, data


def lstm_case(n: int):
    rng = np.random.default_rng(0)
    vocab, steps = 50, 10
    ids = rng.integers(0, vocab, (n, steps + 1)).astype(np.int32)
    x, y = ids[:, :-1], ids[:, 1:]
    data = Dataset("tokens", x, y, x[: n // 4], y[: n // 4], "sequence", vocab, "random tokens")
    model = keras.Sequential(
        [
            keras.Input((steps,), dtype="int32"),
            keras.layers.Embedding(vocab, 16),
            keras.layers.LSTM(32, return_sequences=True),
            keras.layers.Dense(vocab),
        ],
        name="lstm",
    )
    return "lstm_tokens", model, data


def projection_timings(landscape, k: int, steps: int, batch: int) -> tuple[float, float]:
    """(seconds per step inside the compiled loop, seconds of a whole projection of `steps`
    steps) for k beads together; the target is unreachable, so every step runs.

    The step is the marginal cost: a run of 2*steps minus a run of steps, so the level checks
    around each run cancel out. The whole run includes them, as a real projection does.
    """
    starts = np.repeat(landscape.initial_theta()[None], k, axis=0)

    def best(count: int) -> float:
        config = ProjectionConfig(max_steps=count, check_every=count, batch_size=batch)
        project(landscape, starts, -1.0, config, seed=0)  # compile for this chunk length
        times = []
        for seed in range(1, 1 + REPEATS):
            begin = time.perf_counter()
            project(landscape, starts, -1.0, config, seed=seed)
            times.append(time.perf_counter() - begin)
        return min(times)

    run = best(steps)
    return max(best(2 * steps) - run, 1e-9) / steps, run


def train_step(model, landscape, steps: int, batch: int) -> float:
    clone = keras.models.clone_model(model)
    clone.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = landscape.dataset.split("train")
    x, y = x[:batch], y[:batch]
    for _ in range(3):
        clone.train_on_batch(x, y)
    times = []
    for _ in range(REPEATS):
        begin = time.perf_counter()
        for _ in range(steps):
            clone.train_on_batch(x, y)
        times.append((time.perf_counter() - begin) / steps)
    return min(times)


def segment_speedup(landscape, points: int = 32, repeats: int = 3) -> float:
    theta = landscape.initial_theta()
    other = theta + 0.1 * np.random.default_rng(0).standard_normal(theta.size).astype(np.float32)
    ts = np.linspace(0, 1, points)
    thetas = ((1 - ts)[:, None] * theta + ts[:, None] * other).astype(np.float32)
    landscape.levels(thetas)
    landscape.levels(thetas[:1])
    begin = time.perf_counter()
    for _ in range(repeats):
        check_segments(landscape, [(theta, other)], points - 1)
    batched = time.perf_counter() - begin
    begin = time.perf_counter()
    for _ in range(repeats):
        for row in thetas:
            landscape.levels(row[None])
    looped = time.perf_counter() - begin
    return looped / batched


def _cubic_model(seed: int):
    """The paper's 1-4-4-1 sigmoid network, initialised from `seed`."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(4, activation="sigmoid"),
            keras.layers.Dense(4, activation="sigmoid"),
            keras.layers.Dense(1),
        ]
    )


def _trained_cubic(landscape, seeds):
    """Fresh cubic networks (one per seed) trained together down to MAE 0.1."""
    starts = np.stack([landscape.theta_of(_cubic_model(s)) for s in seeds])
    config = ProjectionConfig(learning_rate=1e-2, max_steps=20000, check_every=200)
    return project(landscape, starts, 0.1, config, seed=0)


def cubic(quick: bool) -> dict:
    data = load_data(f"cubic:n={2000 if quick else 10000}")
    build = _cubic_model
    landscape = Landscape(build(0), data, loss="mae", level_fn="mae")
    trained = _trained_cubic(landscape, (1, 2))
    level = float(max(trained.levels)) * 1.05
    begin = time.perf_counter()
    result = connect(
        landscape,
        trained.thetas[0],
        trained.thetas[1],
        level,
        DSSConfig(learning_rate=1e-2, max_steps=5000, check_every=100),
    )
    return {
        "level": level,
        "seconds": time.perf_counter() - begin,
        "connected": result.connected,
        "beads": result.beads,
        "normalized_length": result.normalized_length,
        "projection_steps": result.projection_steps,
    }


def lockstep(quick: bool) -> dict:
    """The curviness probe over 10 pairs x 3 levels of the cubic network, one string after
    another vs all strings in lockstep (the probe's wall time, best of 2 runs each)."""
    import tempfile

    from keras_landscape.models.minimum import Minimum
    from keras_landscape.plugins.curviness import CurvinessProbe
    from keras_landscape.progress import NullProgress
    from keras_landscape.store.hdf5 import Store

    data = load_data(f"cubic:n={2000 if quick else 10000}")
    model = _cubic_model(0)
    landscape = Landscape(model, data, loss="mae", level_fn="mae")
    trained = _trained_cubic(landscape, range(1, 6))
    minima = [
        Minimum(f"replica_{i}", theta, "trained", state=landscape.state_or_own(None))
        for i, theta in enumerate(trained.thetas)
    ]
    config = CurvinessProbe.Config(
        levels="0.3,0.2,0.12", learning_rate=1e-2, max_steps=5000, check_every=100
    )
    timings, results = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for together in (False, True, False, True):
            landscape.lockstep = together
            path = os.path.join(folder, f"{together}-{time.perf_counter_ns()}.h5")
            with Store.create(path, versions={}, command="benchmark") as store:
                run = store.begin_run("curviness", "curviness", {}, seed=0)
                begin = time.perf_counter()
                result = CurvinessProbe(config).run(landscape, minima, run, NullProgress())
                seconds = time.perf_counter() - begin
            timings[together] = min(timings.get(together, float("inf")), seconds)
            results[together] = result
    details = [[(r["connected"], r["beads"]) for r in level] for level in results[True]["details"]]
    lengths = [
        abs(a["normalized_length"] - b["normalized_length"])
        for la, lb in zip(results[True]["details"], results[False]["details"])
        for a, b in zip(la, lb)
    ]
    return {
        "strings": sum(len(level) for level in details),
        "one_at_a_time_s": timings[False],
        "lockstep_s": timings[True],
        "same_verdicts_and_beads": details
        == [[(r["connected"], r["beads"]) for r in level] for level in results[False]["details"]],
        "max_length_difference": max(lengths),
        "normalized_length": results[True]["normalized_length"],
        "beads": results[True]["beads"],
    }


def bead_plan(landscape) -> dict:
    """How the engine batches beads through each layer (keras_landscape.engine.stacked's plans)."""
    model = landscape.model
    forward = stacked.build_stacked_forward(
        model, landscape.layout, landscape.state_layout, engine.inference_kwargs(model)
    )
    if forward is None:
        return {model.name: "whole model mapped"}
    x = landscape.dataset.split("train")[0][:2]
    thetas = np.repeat(landscape.initial_theta()[None], 2, axis=0)
    states = landscape.fill_states(None, 2)
    forward(
        keras.ops.convert_to_tensor(thetas),
        keras.ops.convert_to_tensor(states),
        landscape.non_trainable,
        keras.ops.convert_to_tensor(x),
    )
    return dict(forward.plan)


def main() -> None:
    steps = 40 if ARGS.quick else 200
    n = 256 if ARGS.quick else 2048
    builders = {"mlp": mlp_case, "cnn": cnn_case, "lstm": lstm_case}
    cases = []
    for key in filter(None, ARGS.cases.split(",")):
        name, model, data = builders[key](n)
        landscape = Landscape(model, data, loss=LOGITS, level_fn="loss")
        for batch in (32, 128):
            one, one_run = projection_timings(landscape, 1, steps, batch)
            eight, eight_run = projection_timings(landscape, 8, steps, batch)
            train = train_step(model, landscape, steps, batch)
            cases.append(
                {
                    "case": name,
                    "batch_size": batch,
                    "parameters": landscape.size,
                    "xla": landscape.xla,
                    "projection_step_s": one,
                    "train_step_s": train,
                    "step_ratio": one / train,
                    "batched_speedup": 8 * one_run / eight_run,
                    "batched_step_speedup": 8 * one / eight,
                    "segment_eval_speedup": segment_speedup(landscape),
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "plan": bead_plan(landscape),
                }
            )
            print(json.dumps(cases[-1]), file=sys.stderr)
    document = {
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "accelerator": backend.accelerator_present(),
            **backend.machine(),  # cpu_model, onednn, stacked_convolutions
        },
        "versions": {
            "keras": keras.__version__,
            "backend": backend.name,
            **backend.framework_versions(),
        },
        "quick": ARGS.quick,
        "cases": cases,
        "cubic": cubic(ARGS.quick),
    }
    document["lockstep"] = lockstep(ARGS.quick)
    document["lockstep_speedup"] = (
        document["lockstep"]["one_at_a_time_s"] / document["lockstep"]["lockstep_s"]
    )
    text = json.dumps(document, indent=2)
    print(text)
    if ARGS.out:
        with open(ARGS.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
