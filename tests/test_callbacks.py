"""LandscapeCallback: probes at the right epochs of model.fit, into one store and TensorBoard.

A 1-4-1 network is fitted for 4 epochs with every=2. The store then holds a run per probe
at epochs 2 and 4, and checkpoints epoch_0, epoch_2 and epoch_4, the last equal to the
fitted weights. The barrier at epoch 2 joins epoch_0 and epoch_2: its endpoint levels are
those checkpoints' levels. TensorBoard's own reader finds the scalars and histograms at
steps 2 and 4, with the values of the stored results: the Hessian's top eigenvalue and trace
as scalars (its probe's summaries), its eigenvalue list as a histogram, a one-number list as
a scalar, and the barrier's bracket and bootstrap intervals as lower/upper scalars.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    import keras

    from keras_landscape.callbacks import LandscapeCallback
    from keras_landscape.data.specs import load_data

    folder = tmp_path_factory.mktemp("callback")
    data = load_data("cubic:limit=64")
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    callback = LandscapeCallback(
        data=data,
        probes=["barrier", "hessian"],
        every=2,
        store=folder / "fit.h5",
        options={
            "max_bisections": 0,
            "top_k": 2,
            "density_probes": 0,
            "trace_samples": 2,
            "bootstrap": 40,
        },
        log_dir=folder / "logs",
    )
    model.fit(data.x_train, data.y_train, epochs=4, batch_size=16, verbose=0, callbacks=[callback])
    return {"folder": folder, "model": model, "callback": callback}


def test_probes_run_at_the_right_epochs(fitted):
    from keras_landscape.store.hdf5 import Store

    callback, model = fitted["callback"], fitted["model"]
    assert [(h["epoch"], h["probe"]) for h in callback.history] == [
        (2, "barrier"),
        (2, "hessian"),
        (4, "barrier"),
        (4, "hessian"),
    ]
    with Store.open(fitted["folder"] / "fit.h5") as store:
        assert sorted(store.run_names()) == [
            "barrier_epoch0002",
            "barrier_epoch0004",
            "hessian_epoch0002",
            "hessian_epoch0004",
        ]
        assert sorted(store.model_names()) == ["epoch_0", "epoch_2", "epoch_4"]
        final = store.read_model("epoch_4")["theta"]
        barrier = store.run("barrier_epoch0002").result
    weights = np.concatenate([v.numpy().reshape(-1) for v in model.trainable_variables])
    np.testing.assert_array_equal(final, weights)
    landscape = callback.landscape
    with Store.open(fitted["folder"] / "fit.h5") as store:
        ends = [landscape.level(store.read_model(n)["theta"]) for n in ("epoch_0", "epoch_2")]
    assert barrier["pairs"][0]["endpoint_levels"] == pytest.approx(ends, rel=1e-5)
    assert barrier["linear_max"] >= max(ends) - 1e-7


def test_tensorboard_reads_the_logs(fitted):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = EventAccumulator(str(fitted["folder"] / "logs"), size_guidance={"tensors": 0})
    logs.Reload()
    tags = logs.Tags()["tensors"]
    assert "barrier/linear_max" in tags and "hessian/models/0/eigenvalues" in tags
    events = logs.Tensors("barrier/linear_max")
    assert [e.step for e in events] == [2, 4]
    stored = [
        h["result"]["linear_max"] for h in fitted["callback"].history if h["probe"] == "barrier"
    ]
    import tensorflow as tf

    values = [float(tf.make_ndarray(e.tensor_proto)) for e in events]
    assert values == pytest.approx(stored, rel=1e-6)
    assert [e.step for e in logs.Tensors("hessian/models/0/eigenvalues")] == [2, 4]


def _logs(fitted):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = EventAccumulator(str(fitted["folder"] / "logs"), size_guidance={"tensors": 0})
    logs.Reload()
    return logs


def _values(logs, tag):
    """[(step, numpy value)] of a tag; a scalar has shape (), a histogram (bins, 3)."""
    import tensorflow as tf

    return [(e.step, tf.make_ndarray(e.tensor_proto)) for e in logs.Tensors(tag)]


def _results(fitted, probe):
    return [h["result"] for h in fitted["callback"].history if h["probe"] == probe]


def test_single_numbers_are_scalars_and_lists_histograms(fitted):
    logs = _logs(fitted)
    hessians = _results(fitted, "hessian")
    top = _values(logs, "hessian/top_eigenvalue")
    assert [step for step, _ in top] == [2, 4]
    assert all(value.shape == () for _, value in top)
    assert [float(v) for _, v in top] == pytest.approx(
        [r["models"][0]["eigenvalues"][0] for r in hessians], rel=1e-6
    )
    assert [float(v) for _, v in _values(logs, "hessian/trace")] == pytest.approx(
        [r["models"][0]["trace"] for r in hessians], rel=1e-6
    )
    # the two eigenvalues: a histogram holding both (counts sum to 2, range spans them)
    for (_, histogram), result in zip(_values(logs, "hessian/models/0/eigenvalues"), hessians):
        assert histogram.ndim == 2 and histogram.shape[1] == 3
        assert histogram[:, 2].sum() == 2
        low, high = sorted(result["models"][0]["eigenvalues"])
        assert histogram[0, 0] == pytest.approx(low, rel=1e-6)
        assert histogram[-1, 1] == pytest.approx(high, rel=1e-6)
    barriers = _results(fitted, "barrier")
    for bound, index in (("lower", 0), ("upper", 1)):
        bracket = _values(logs, f"barrier/barrier_bracket/{bound}")
        assert [s for s, _ in bracket] == [2, 4] and all(v.shape == () for _, v in bracket)
        assert [float(v) for _, v in bracket] == pytest.approx(
            [r["barrier_bracket"][index] for r in barriers], abs=1e-7
        )
        tag = f"barrier/pairs/0/intervals/train/linear/max_interval/{bound}"
        assert [float(v) for _, v in _values(logs, tag)] == pytest.approx(
            [
                r["pairs"][0]["intervals"]["train"]["linear"]["max_interval"][index]
                for r in barriers
            ],
            rel=1e-6,
        )
    assert "barrier/barrier_bracket" not in logs.Tags()["tensors"]


def test_single_number_lists_and_probe_summaries_rule():
    from keras_landscape.experiment.callbacks import _numbers, _summaries
    from keras_landscape.plugins.hessian import HessianProbe

    result = {
        "models": [{"model": "a", "eigenvalues": [3.0], "trace": 5.0, "residuals": [1.0, 2.0]}],
        "barrier_bracket": [None, 0.3],
        "max_interval": [0.1, float("nan")],
        "flags": [True],
    }
    assert dict(_numbers(result, "p")) == {
        "p/models/0/eigenvalues": 3.0,
        "p/models/0/trace": 5.0,
        "p/models/0/residuals": [1.0, 2.0],
        "p/barrier_bracket/upper": 0.3,
        "p/max_interval/lower": 0.1,
    }
    probe = HessianProbe()
    assert dict(_summaries(probe, result)) == {
        "hessian/top_eigenvalue": 3.0,
        "hessian/trace": 5.0,
    }
    two = {"models": [result["models"][0], {"model": "b", "eigenvalues": [1.0, 0.5]}]}
    assert HessianProbe.summaries(two) == {
        "a/top_eigenvalue": 3.0,
        "a/trace": 5.0,
        "b/top_eigenvalue": 1.0,
    }

    class ThirdParty:  # any probe, not only ProbeBase's subclasses
        name = "mine"

        @staticmethod
        def summaries(result):
            return {"first": result["values"][0], "bad": float("inf"), "word": "x"}

    assert list(_summaries(ThirdParty(), {"values": [7, 8]})) == [("mine/first", 7.0)]


def test_an_unknown_option_fails_before_fit(tmp_path):
    from keras_landscape.callbacks import LandscapeCallback
    from keras_landscape.errors import UserError

    with pytest.raises(UserError, match="Unknown option"):
        LandscapeCallback("cubic", ["hessian"], store=tmp_path / "x.h5", options={"bogus": 1})


def test_a_third_party_pair_probe_sees_two_checkpoints(tmp_path):
    """A probe registered by a third party that declares takes_pairs gets the previous
    checkpoint and this one, with no list of probe names edited; its gap is the
    difference of the two checkpoints' levels."""
    import keras
    from toy_probes import registered_toy

    from keras_landscape.callbacks import LandscapeCallback
    from keras_landscape.data.specs import load_data
    from keras_landscape.store.hdf5 import Store

    data = load_data("cubic:limit=64")
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    with registered_toy():
        callback = LandscapeCallback(
            data=data, probes=["endpoint_gap"], every=1, store=tmp_path / "toy.h5"
        )
        model.fit(data.x_train, data.y_train, epochs=2, verbose=0, callbacks=[callback])
    results = [h["result"] for h in callback.history]
    assert [r["models"] for r in results] == [["epoch_0", "epoch_1"], ["epoch_1", "epoch_2"]]
    with Store.open(tmp_path / "toy.h5") as store:
        levels = {
            n: callback.landscape.level(store.read_model(n)["theta"]) for n in store.model_names()
        }
        assert sorted(store.run_names()) == ["endpoint_gap_epoch0001", "endpoint_gap_epoch0002"]
    for result in results:
        a, b = result["models"]
        assert result["max_gap"] == pytest.approx(abs(levels[a] - levels[b]), rel=1e-5)
