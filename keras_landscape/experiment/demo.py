"""The embedded first run: small models on `digits`, probed end to end, no download.

`klandscape demo` trains a few small MLPs on scikit-learn's digits (embedded in the
package), runs `evaluate`, `connectivity` and `curviness` on them, and writes the models,
a store and figures into one folder. It is a run config (configs/demo.yaml holds the same
mapping) executed the way `klandscape run` executes one.
"""

from __future__ import annotations

from pathlib import Path

from keras_landscape.experiment.config import load_config
from keras_landscape.experiment.runner import run_experiment
from keras_landscape.store.strings import verdict_words

DEFAULT_FOLDER = "klandscape-demo"


def demo_config(
    out_dir: str = DEFAULT_FOLDER, *, models: int = 3, epochs: int = 30, seed: int = 0
) -> dict:
    """The demo as a run-config mapping (the schema of keras_landscape.experiment.config).

    Three 64-32-10 ReLU MLPs (2,410 parameters) trained with Adam on digits; the level
    function is the test error in percent.
    """
    folder = Path(out_dir).as_posix()
    return {
        "description": "The first run: small MLPs on the embedded digits data, "
        "connectivity and curviness at test-error levels.",
        "model": {
            "builder": "mlp",
            "input": [64],
            "layers": [32],
            "activation": "relu",
            "output": 10,
            "replicas": models,
            "train": {
                "epochs": epochs,
                "batch_size": 64,
                "learning_rate": 0.003,
                "optimizer": "adam",
            },
            "dir": f"{folder}/models",
        },
        "data": "digits",
        "loss": "sparse_categorical_crossentropy:from_logits=true",
        "level_fn": "error",
        "probes": ["evaluate", "connectivity", "curviness"],
        "options": {
            "learning_rate": 0.001,
            "max_steps": 1500,
            "check_every": 25,
            "margin": 0.3,
            "retrain_endpoints": True,
        },
        "seed": seed,
        "out": f"{folder}/demo.h5",
        "plots": {"format": "png", "dir": f"{folder}/figures"},
    }


def run_demo(
    out_dir: str = DEFAULT_FOLDER,
    *,
    models: int = 3,
    epochs: int = 30,
    seed: int = 0,
    progress=None,
    resume: bool = False,
    command: str = "klandscape demo",
) -> dict:
    """Train the demo models (reused if present), probe them, draw the figures.

    Returns:
        The run document ({"store", "models", "results"}) with "figures" (files written)
        and "figures_dir".
    """
    config = load_config(
        demo_config(out_dir, models=models, epochs=epochs, seed=seed), command=command
    )
    return run_experiment(config, progress, resume=resume, overwrite=not resume)


def summary_lines(document: dict) -> list[str]:
    """A short plain-language summary of what the demo found."""
    results = document["results"]
    lines = []
    for row in results["evaluate"]["models"]:
        lines.append(f"{row['model']}: test error {row['level']:.2f}%, loss {row['loss']:.4f}")
    conn = results["connectivity"]
    for pair in conn["pairs"]:
        verdict = verdict_words(pair["connected"], pair["reason"])
        lines.append(
            f"{pair['a']} - {pair['b']} at {pair['level']:.2f}% error: {verdict}, "
            f"{pair['beads']} beads, normalized length {pair['normalized_length']:.3f}, "
            f"max {pair['max_level']:.2f}%"
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
    if document.get("figures_dir"):
        lines.append(
            f"figures: {document['figures_dir']}/ ({len(document.get('figures', []))} files)"
        )
    return lines
