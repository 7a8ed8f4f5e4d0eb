"""Bootstrap intervals of path maxima and barriers (barrier probe, bootstrap > 0).

- `resampled_levels` equals the means recomputed draw by draw from explicit indices.
- Per-sample levels add up to the landscape's own levels (train and test).
- On a real barrier run: intervals for the train and the test split; on the test split
  (the evaluation split) the linear path's maximum is the probe's linear_max; every
  interval holds its point estimate and has positive width.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fit_full_batch

from keras_landscape.science.bootstrap import path_intervals, resampled_levels


def test_resampling_equals_explicit_draws():
    rng = np.random.default_rng(0)
    sums, counts = rng.random((4, 30)), np.ones((4, 30))
    offsets = np.array([0.0, 0.1, 0.0, 0.2])
    levels = resampled_levels(sums, counts, offsets, np.exp, 5, seed=3)
    draws = np.random.default_rng(3)
    for r in range(5):
        index = draws.integers(0, 30, 30)
        expected = np.exp(sums[:, index].mean(axis=1) + offsets)
        np.testing.assert_allclose(levels[r], expected, rtol=1e-12)
    intervals = path_intervals(levels, slice(None), (0, 3), 0.9)
    assert intervals["max"][0] <= intervals["max"][1]


@pytest.fixture(scope="module")
def cubic_pair(tmp_path_factory):
    import keras

    from keras_landscape.data.specs import load_data

    folder = tmp_path_factory.mktemp("bootstrap")
    data = load_data("cubic:limit=64")
    paths = []
    for k in range(2):
        keras.utils.set_random_seed(10 + k)
        model = keras.Sequential(
            [keras.Input((1,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
        )
        fit_full_batch(model, data.x_train, data.y_train, 150, 0.05)
        model.compile(loss="mse")
        paths.append(str(folder / f"m{k}.keras"))
        model.save(paths[-1])
    return paths


def test_per_sample_levels_add_up_to_the_levels(cubic_pair):
    import keras

    from keras_landscape.data.specs import load_data
    from keras_landscape.engine.landscape import Landscape

    model = keras.saving.load_model(cubic_pair[0])
    landscape = Landscape(model, load_data("cubic:limit=64"), level_fn="mae", eval_batch_size=16)
    thetas = np.stack([landscape.theta_of(model) * s for s in (1.0, 0.9)]).astype(np.float32)
    for split in ("train", "test"):
        sums, counts, offsets = landscape.sample_levels(thetas, split)
        expected = [e.level for e in landscape.evaluate_many(thetas, split)]
        np.testing.assert_allclose(sums.sum(1) / counts.sum(1) + offsets, expected, rtol=1e-6)


def test_barrier_intervals_on_both_splits(cubic_pair, tmp_path):
    from keras_landscape.experiment.runner import RunSpec, execute

    spec = RunSpec(
        models=cubic_pair,
        data="cubic:limit=64",
        probes=["barrier"],
        options={"max_bisections": 1, "points": 4, "max_steps": 200, "bootstrap": 100},
        level_fn="mae",
        out=str(tmp_path / "b.h5"),
    )
    pair = execute(spec)["results"]["barrier"]["pairs"][0]
    intervals = pair["intervals"]
    assert intervals["resamples"] == 100 and set(intervals) >= {"train", "test"}
    assert intervals["test"]["linear"]["max_level"] == pytest.approx(pair["linear_max"], rel=1e-6)
    for split in ("train", "test"):
        for path in intervals[split].values():
            low, high = path["max_interval"]
            assert low <= path["max_level"] <= high and high > low
            low, high = path["barrier_interval"]
            assert low <= path["barrier"] <= high
