"""The embedded first run: small models on `digits`, probed end to end, no download.

`klandscape demo` trains a few small MLPs on scikit-learn's digits (embedded in the
package), then runs `evaluate`, `connectivity` and `curviness` on them and writes the
models, a store and a summary into one folder.
"""

from __future__ import annotations

from pathlib import Path

import keras

from keras_landscape.data import load_data
from keras_landscape.runner import RunSpec, execute

HIDDEN = 32


def build_mlp(seed: int) -> keras.Model:
    """A 64-32-10 ReLU MLP for 8x8 digits (2,410 parameters)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(HIDDEN, activation="relu"),
            keras.layers.Dense(10),
        ],
        name=f"digits_mlp_{seed}",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def train_models(out_dir: Path, count: int, epochs: int, seed: int) -> list[str]:
    data = load_data("digits", seed=seed)
    paths = []
    for i in range(count):
        path = out_dir / "models" / f"mlp_{i}.keras"
        if not path.exists():
            model = build_mlp(seed + i)
            model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=64, verbose=0)
            path.parent.mkdir(parents=True, exist_ok=True)
            model.save(path)
        paths.append(str(path))
    return paths


def run_demo(out_dir: str, *, models: int = 3, epochs: int = 30, seed: int = 0,
             progress=None, resume: bool = False, command: str = "klandscape demo") -> dict:
    """Train the demo models (reused if present) and probe them; returns the run document."""
    out = Path(out_dir)
    paths = train_models(out, models, epochs, seed)
    store = out / "demo.h5"
    spec = RunSpec(
        models=paths,
        data="digits",
        probes=["evaluate", "connectivity", "curviness"],
        options={"learning_rate": 1e-3, "max_steps": 1500, "check_every": 25, "margin": 0.3,
                 "retrain_endpoints": True},
        level_fn="error",
        out=str(store),
        seed=seed,
        resume=resume,
        overwrite=not resume,
        command=command,
    )
    return execute(spec, progress)


def summary_lines(document: dict) -> list[str]:
    """A short plain-language summary of what the demo found."""
    results = document["results"]
    lines = []
    for row in results["evaluate"]["models"]:
        lines.append(f"{row['model']}: test error {row['level']:.2f}%, loss {row['loss']:.4f}")
    conn = results["connectivity"]
    for pair in conn["pairs"]:
        verdict = "connected" if pair["connected"] else f"NOT connected ({pair['reason']})"
        lines.append(
            f"{pair['a']} - {pair['b']} at {pair['level']:.2f}% error: {verdict}, "
            f"{pair['beads']} beads, normalized length {pair['normalized_length']:.3f}, "
            f"max {pair['max_loss']:.2f}%"
        )
    curv = results["curviness"]
    for level, length, beads, ok, failed in zip(
        curv["levels"], curv["normalized_length"], curv["beads"], curv["pairs"], curv["failed"]
    ):
        shown = "n/a" if length is None else f"{length:.3f}"
        shown_beads = "n/a" if beads is None else f"{beads:.1f}"
        lines.append(
            f"level {level:.2f}%: normalized length {shown}, beads {shown_beads} "
            f"({ok} connected, {failed} not)"
        )
    lines.append(f"store: {document['store']}")
    return lines
