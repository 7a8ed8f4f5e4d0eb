"""A wide stack of parameter vectors evaluates every row as that row alone, on both backends.

On jaxlib 0.10.2, XLA:CPU's YNNPACK fusions returned the losses of beads 0, 1, ... again
for beads 22 and up of a 32-wide stack (a 64-64-10 MLP on the 1437 digits training
samples: the beads whose activations lie beyond 2^21 floats); the JAX backend turns them
off (`engine.backend.jax.YNN_FUSIONS`). Runs on TensorFlow here and on JAX in
tests/test_jax_backend.py's core list. No TensorFlow import.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from keras_landscape.engine import backend


def test_a_wide_stack_evaluates_every_row_as_alone(digits_data):
    import keras

    from keras_landscape.engine.landscape import Landscape

    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = digits_data.split("train")
    landscape = Landscape(
        model,
        digits_data,
        loss="sparse_categorical_crossentropy:from_logits=true",
        split="train",
        eval_batch_size=len(y),
    )
    theta = landscape.theta_of(model)
    rng = np.random.default_rng(0)
    thetas = (theta + 0.1 * rng.standard_normal((32, theta.size))).astype(np.float32)
    many = np.array([e.loss for e in landscape.evaluate_many(thetas, "train")])
    alone = np.array([landscape.loss(t) for t in thetas])
    np.testing.assert_allclose(many, alone, rtol=1e-5)
    assert len(np.unique(np.round(many, 5))) == len(thetas)  # no row repeats another
    for row in (0, 22, 31):  # and Keras's own evaluate, on both sides of the old fault
        landscape.layout.assign(model, thetas[row])
        keras_loss = model.evaluate(x, y, batch_size=len(y), verbose=0)
        assert many[row] == pytest.approx(keras_loss, rel=1e-5)


jax_only = pytest.mark.skipif(backend.name != "jax", reason="XLA_FLAGS of the JAX backend")


@jax_only
def test_the_jax_backend_turns_off_ynn_fusions():
    import jaxlib

    from keras_landscape.engine.backend import jax as impl

    if impl._version(jaxlib.__version__) < impl.YNN_SINCE:
        assert impl.YNN_FUSIONS == "old"
    else:
        assert impl.YNN_FUSIONS in ("set", "user")
        assert impl.YNN_FLAG in os.environ["XLA_FLAGS"]
    assert backend.machine()["xla_ynn_fusions"] == impl.YNN_FUSIONS


@jax_only
def test_ynn_flag_appended_never_clobbering(monkeypatch, caplog):
    from jax._src import xla_bridge

    from keras_landscape.engine.backend import jax as impl

    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: False)
    monkeypatch.setattr("jaxlib.__version__", "0.10.2")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert impl._no_ynn_fusions() == "set"
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_force_host_platform_device_count=2",
        f"--{impl.YNN_FLAG}=",
    ]
    monkeypatch.setenv("XLA_FLAGS", f"--{impl.YNN_FLAG}=individual_dot")  # the user's choice
    assert impl._no_ynn_fusions() == "user"
    assert os.environ["XLA_FLAGS"] == f"--{impl.YNN_FLAG}=individual_dot"
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setattr("jaxlib.__version__", "0.8.0")  # no such fusions, nor the flag
    assert impl._no_ynn_fusions() == "old" and "XLA_FLAGS" not in os.environ
    monkeypatch.setattr("jaxlib.__version__", "0.11.2")
    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: True)
    with caplog.at_level(logging.WARNING, logger="keras_landscape"):
        assert impl._no_ynn_fusions() == "late"
    assert "XLA_FLAGS" not in os.environ and impl.YNN_FLAG in caplog.text
