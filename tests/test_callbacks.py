"""LandscapeCallback: probes at the right epochs of model.fit, into one store and TensorBoard.

A 1-4-1 network is fitted for 4 epochs with every=2. The store then holds a run per probe
at epochs 2 and 4, and checkpoints epoch_0, epoch_2 and epoch_4, the last equal to the
fitted weights. The barrier at epoch 2 joins epoch_0 and epoch_2: its endpoint levels are
those checkpoints' levels. TensorBoard's own reader finds the scalars and histograms at
steps 2 and 4, with the values of the stored results.
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
        options={"max_bisections": 0, "top_k": 1, "density_probes": 0, "trace_samples": 2},
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


def test_an_unknown_option_fails_before_fit(tmp_path):
    from keras_landscape.callbacks import LandscapeCallback
    from keras_landscape.errors import UserError

    with pytest.raises(UserError, match="Unknown option"):
        LandscapeCallback("cubic", ["hessian"], store=tmp_path / "x.h5", options={"bogus": 1})
