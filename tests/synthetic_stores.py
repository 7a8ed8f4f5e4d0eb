"""Small stores written with keras_landscape.store.hdf5 alone (no model, no TensorFlow).

Used by test_plots.py and test_show.py: every result kind the reports know (evaluate,
connectivity, curviness, barrier, components), an unknown probe, and interrupted runs whose
datasets stop part way through, laid out as the probes write them (see dss.StringRecord).
"""

from __future__ import annotations

import numpy as np

from keras_landscape.store.hdf5 import Store

P = 5  # parameters
POINTS = 10  # a checked segment has POINTS + 1 values


def _bump(height: float, base: float = 0.02) -> np.ndarray:
    t = np.linspace(0.0, 1.0, POINTS + 1)
    return base + height * np.sin(np.pi * t)


def write_string(
    run,
    prefix: str,
    *,
    rows: int,
    order: list[int],
    segments: list[tuple],
    verdict: dict | None,
    depth_done: int,
    seed: int = 0,
) -> None:
    """A DSS string: `rows` beads (0 = A, 1 = B), the final `order`, checked `segments`
    (left, right, depth, bump height), and the verdict attribute when finished."""
    rng = np.random.default_rng(seed)
    key = (lambda name: f"{prefix}/{name}") if prefix else (lambda name: name)
    beads = rng.normal(size=(rows, P)).astype(np.float32)
    run.write(key("beads"), beads)
    run.write(key("bead_level"), 0.02 + 0.005 * np.arange(rows, dtype=np.float64))
    run.write(key("bead_depth"), np.array([0, 0] + [1] * (rows - 2), np.int32))
    run.write(key("bead_steps"), np.array([0, 0] + [50] * (rows - 2), np.int64))
    run.write(key("order"), np.array(order, np.int64))
    if segments:
        run.write(key("curves"), np.stack([_bump(h) for *_, h in segments]))
        run.write(key("curve_segments"), np.array([s[:3] for s in segments], np.int64))
    attrs = {"depth_done": depth_done}
    if verdict is not None:
        attrs["verdict"] = verdict
    run.set_attrs(prefix or None, **attrs)


CONNECTED_SEGMENTS = [
    (0, 1, 0, 0.5),
    (0, 2, 1, 0.1),
    (2, 1, 1, 0.2),
    (2, 3, 2, 0.01),
    (3, 1, 2, 0.01),
]


def _verdict(a="a", b="b", level=0.05, connected=True, prefix="pair_0_1", beads=4):
    return {
        "connected": connected,
        "level": level,
        "reason": "connected" if connected else "bead_not_reached",
        "beads": beads,
        "normalized_length": 1.2,
        "path_length": 3.0,
        "distance": 2.5,
        "max_level": 0.04,
        "depth": 2,
        "projection_steps": 100,
        "seconds": 0.1,
        "endpoint_levels": [0.02, 0.025],
        "worst_segment": None,
        "explanation": "x",
        "a": a,
        "b": b,
        "prefix": prefix,
    }


def new_store(path, models=("a", "b", "c", "d")) -> Store:
    store = Store.create(
        path,
        versions={"keras": "3.15.1", "backend": "tensorflow"},
        command="klandscape probe a.keras b.keras --data cubic --out " + str(path),
    )
    store.write_layout([f"dense/w{i}" for i in range(P)], [[1]] * P, list(range(P)), P)
    store.write_data_info(
        {
            "spec": "cubic",
            "loss": "mean_squared_error",
            "level_fn": "mae",
            "split": "test",
            "parameters": P,
        }
    )
    for i, name in enumerate(models):
        store.add_model(name, np.full(P, i, np.float32), source=f"{name}.keras", role="input")
    return store


def complete_store(path) -> str:
    """A store with one complete run of every kind the reports know, and an unknown one."""
    with new_store(path) as store:
        run = store.begin_run("evaluate", "evaluate", {"allow_nonfinite": False})
        run.complete(
            {
                "models": [
                    {
                        "model": "a",
                        "source": "a.keras",
                        "loss": 0.001,
                        "level": 0.02,
                        "level_fn": "mae",
                        "split": "test",
                        "grad_norm": 0.01,
                        "parameters": P,
                    }
                ]
            }
        )

        run = store.begin_run("connectivity", "connectivity", {"level": 0.05})
        write_string(
            run,
            "pair_0_1",
            rows=4,
            order=[0, 2, 3, 1],
            segments=CONNECTED_SEGMENTS,
            verdict=_verdict(),
            depth_done=2,
        )
        run.complete(
            {
                "connected": True,
                "level": 0.05,
                "beads": 4,
                "normalized_length": 1.2,
                "path_length": 3.0,
                "distance": 2.5,
                "max_level": 0.04,
                "depth": 2,
                "projection_steps": 100,
                "reason": "connected",
                "level_fn": "mae",
                "pairs": [_verdict()],
                "connected_pairs": 1,
                "seconds": 0.5,
            }
        )

        run = store.begin_run("curviness", "curviness", {"levels": "0.1,0.05,0.02"})
        details = []
        for k, (level, ok) in enumerate([(0.1, True), (0.05, True), (0.02, False)]):
            prefix = f"level_{k}/pair_0_1"
            verdict = _verdict(level=level, connected=ok, prefix=prefix)
            write_string(
                run,
                prefix,
                rows=4,
                order=[0, 2, 3, 1] if ok else [0, 2, 1],
                segments=CONNECTED_SEGMENTS if ok else CONNECTED_SEGMENTS[:3],
                verdict=verdict,
                depth_done=2 if ok else 1,
                seed=k,
            )
            details.append([verdict])
        run.complete(
            {
                "levels": [0.1, 0.05, 0.02],
                "normalized_length": [1.05, 1.3, None],
                "normalized_length_sd": [0.01, 0.1, None],
                "beads": [3.0, 5.5, None],
                "beads_sd": [0.0, 1.5, None],
                "pairs": [1, 1, 0],
                "failed": [0, 0, 1],
                "reasons": [{}, {}, {"bead_not_reached": 1}],
                "level_fn": "mae",
                "details": details,
                "seconds": 1.0,
            }
        )

        run = store.begin_run("barrier", "barrier", {"align": "weight-matching"})
        write_string(
            run,
            "pair_0_1/bisect_0",
            rows=3,
            order=[0, 2, 1],
            segments=CONNECTED_SEGMENTS[:3],
            verdict=_verdict(level=0.2, connected=False, prefix="pair_0_1/bisect_0"),
            depth_done=1,
        )
        write_string(
            run,
            "pair_0_1/bisect_1",
            rows=4,
            order=[0, 2, 3, 1],
            segments=CONNECTED_SEGMENTS,
            verdict=_verdict(level=0.3, prefix="pair_0_1/bisect_1"),
            depth_done=2,
        )
        run.write(
            "pair_0_1/bisect_1_relaxed/beads", np.zeros((4, P), np.float32) + np.arange(4)[:, None]
        )
        run.write("pair_0_1/bisect_1_relaxed/bead_level", np.array([0.02, 0.2, 0.25, 0.025]))
        run.write("pair_0_1/bisect_1_relaxed/order", np.arange(4))
        pair = {
            "a": "a",
            "b": "b",
            "endpoint_levels": [0.02, 0.025],
            "linear_max": 0.52,
            "linear_barrier": 0.495,
            "saddle_level": {"lower": 0.2, "upper": 0.3},
            "barrier": 0.275,
            "barrier_bracket": [0.175, 0.275],
            "relaxed_max": 0.26,
            "best_path": "pair_0_1/bisect_1",
            "distance": 2.5,
            "aligned": {
                "linear_max": 0.05,
                "saddle_level": {"lower": 0.025, "upper": 0.03},
                "barrier": 0.005,
                "barrier_bracket": [0.0, 0.005],
                "distance": 0.1,
                "endpoint_levels": [0.02, 0.025],
            },
        }
        second = {
            **pair,
            "a": "a",
            "b": "c",
            "relaxed_max": None,
            "aligned": None,
            "barrier_bracket": [None, 0.3],
            "barrier": 0.3,
        }
        run.complete(
            {
                **{
                    k: pair[k]
                    for k in (
                        "linear_max",
                        "saddle_level",
                        "barrier",
                        "barrier_bracket",
                        "endpoint_levels",
                        "relaxed_max",
                        "aligned",
                    )
                },
                "level_fn": "mae",
                "pairs": [pair, second],
            }
        )

        run = store.begin_run("components", "components", {"levels": ""})
        run.complete(
            {
                "minima": ["a", "b", "c", "d"],
                "minimum_levels": [0.02, 0.03, 0.025, 0.04],
                "levels": [0.02, 0.05, 0.1, 0.2, 0.3, 0.4],
                "n_components": [1, 3, 2, 2, 1, 1],
                "n_components_lower": [1, 2, 1, 1, 1, 1],
                "n_components_upper": [1, 3, 2, 2, 1, 1],
                "unresolved": [[0.05, 0.2]],
                "merge_levels": [0.04, 0.08, 0.25],
                "merge_tree": [[0.04, 0, 2, 4], [0.08, 1, 3, 5], [0.25, 4, 5, 6]],
                "highest_merge_level": 0.25,
                "level_fn": "mae",
                "pairs": {
                    "0-1": {
                        "linear_max": 0.5,
                        "saddle_level": {"lower": 0.2, "upper": 0.25},
                        "barrier": 0.22,
                        "decided_by": "dss-bisection",
                        "bisections": 3,
                    }
                },
            }
        )

        run = store.begin_run("mystery", "mystery", {})
        run.complete({"answer": 42})
    return str(path)


def interrupted_store(path) -> str:
    """connectivity interrupted mid-depth over three pairs; curviness killed (status running)."""
    with new_store(path, models=("a", "b", "c")) as store:
        run = store.begin_run("connectivity", "connectivity", {"level": 0.05, "partners": 1})
        write_string(
            run,
            "pair_0_1",
            rows=4,
            order=[0, 2, 3, 1],
            segments=CONNECTED_SEGMENTS,
            verdict=_verdict(),
            depth_done=2,
        )
        # pair_0_2: depth 1 committed, bead 3 of depth 2 written, segment (2, 1) unchecked
        write_string(
            run,
            "pair_0_2",
            rows=4,
            order=[0, 2, 1],
            segments=CONNECTED_SEGMENTS[:2],
            verdict=None,
            depth_done=1,
            seed=1,
        )
        run.fail("interrupted by the user", status="interrupted")

        run = store.begin_run("curviness", "curviness", {"levels": "0.1,0.05", "partners": 1})
        write_string(
            run,
            "level_0/pair_0_1",
            rows=4,
            order=[0, 2, 3, 1],
            segments=CONNECTED_SEGMENTS,
            depth_done=2,
            verdict=_verdict(level=0.1, prefix="level_0/pair_0_1"),
        )
        write_string(
            run, "level_0/pair_0_2", rows=2, order=[0, 1], segments=[], verdict=None, depth_done=0
        )
        # status stays "running": the process was killed
    return str(path)


# ------------------------------------------------------------------ real stores (Keras)

import atexit  # noqa: E402
import functools  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

CUBIC = "cubic:n=200"


def _scratch(prefix: str) -> Path:
    """A temporary folder shared by the test modules of this session, removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def cubic_mlp():
    """The paper's 1-4-4-1 sigmoid MLP for the cubic regression (33 parameters)."""
    import keras

    return keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(4, activation="sigmoid"),
            keras.layers.Dense(4, activation="sigmoid"),
            keras.layers.Dense(1),
        ]
    )


@functools.cache
def cubic_models() -> tuple[str, str]:
    """Two 1-4-4-1 sigmoid MLPs trained on cubic:n=200 with the MAE loss (saved .keras files).

    Cached for the session, so that the test modules that need them train them once.
    """
    import keras
    from conftest import fit_full_batch

    from keras_landscape.data.specs import load_data

    folder = _scratch("klandscape-test-models-")
    data = load_data(CUBIC)
    paths = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        model = fit_full_batch(cubic_mlp(), data.x_train, data.y_train, 600, 0.05, loss="mae")
        paths.append(str(folder / f"m{seed}.keras"))
        model.save(paths[-1])
    return tuple(paths)


class _StopAt:
    """A progress display that raises KeyboardInterrupt at the Nth status update (Ctrl-C)."""

    def __init__(self, after: int):
        self.after, self.updates = after, 0

    def task(self, description, total=None):
        return self

    def note(self, message):
        pass

    def advance(self, amount=1):
        pass

    def update(self, *, total=None, status=None):
        self.updates += 1
        if self.updates >= self.after:
            raise KeyboardInterrupt

    def close(self):
        pass


@functools.cache
def real_connectivity_stores() -> dict:
    """Connectivity stores made by runner.execute on the cubic models: a complete one and
    one interrupted at its second depth (status 'interrupted', partial datasets)."""
    from keras_landscape.experiment.runner import RunSpec, execute

    a, b = cubic_models()
    folder = _scratch("klandscape-test-stores-")

    def spec(out, **kw):
        return RunSpec(
            models=[a, b],
            data=CUBIC,
            probes=["connectivity"],
            loss="mae",
            level_fn="mae",
            options={"learning_rate": 0.01, "max_depth": 6, "max_steps": 1000, "margin": 3.0},
            xla=False,
            out=str(folder / out),
            **kw,
        )

    document = execute(spec("complete.h5"))
    try:
        execute(
            spec("interrupted.h5", command="klandscape probe m1.keras m2.keras --out x.h5"),
            _StopAt(2),
        )
    except KeyboardInterrupt:
        pass
    return {
        "complete": str(folder / "complete.h5"),
        "interrupted": str(folder / "interrupted.h5"),
        "document": document,
        "models": (a, b),
    }
