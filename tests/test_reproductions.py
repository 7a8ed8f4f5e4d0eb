"""The small cubic reproduction end to end (slow: run with `python -m pytest -m slow`).

Checks the paper's trend on our own run: at lower MAE levels the connecting strings are
longer (normalized geodesic length) and hold more beads, and every pair is measured.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_cubic_small_reproduction_shows_the_curviness_trend(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_landscape.cli.main",
            "-q",
            "run",
            str(ROOT / "configs" / "cubic.yaml"),
            "--scale",
            "small",
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    table = json.loads(completed.stdout)["results"]["curviness"]
    assert table["levels"] == [0.3, 0.1, 0.05]
    assert all(p + f >= 8 for p, f in zip(table["pairs"], table["failed"]))
    assert all(p >= 8 for p in table["pairs"])  # (almost) every pair connects
    lengths, beads = table["normalized_length"], table["beads"]
    assert lengths[0] < lengths[1] < lengths[2]
    assert beads[0] < beads[1] < beads[2]
    assert lengths[0] == pytest.approx(1.0, abs=0.05)  # nearly straight at the easy level
    assert all(len(table[k]) == 3 for k in ("normalized_length_sd", "beads", "pairs", "failed"))
