"""Probes during training: the linear barrier to the previous checkpoint and the Hessian's
top eigenvalue every 5 epochs of `model.fit`, in one store and in TensorBoard.

    python examples/callback_example.py            # then: tensorboard --logdir logs/landscape
    klandscape show runs/fit.h5
"""

import keras

from keras_landscape.callbacks import LandscapeCallback
from keras_landscape.data import load_data

data = load_data("cubic:n=2000")
keras.utils.set_random_seed(0)
model = keras.Sequential(
    [
        keras.Input((1,)),
        keras.layers.Dense(4, activation="sigmoid"),
        keras.layers.Dense(4, activation="sigmoid"),
        keras.layers.Dense(1),
    ]
)
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mae")
callback = LandscapeCallback(
    data=data,
    probes=["barrier", "hessian"],
    every=5,
    store="runs/fit.h5",
    # barrier: the straight line only; hessian: the top eigenvalue and the trace
    options={"max_bisections": 0, "top_k": 1, "density_probes": 0},
    level_fn="mae",
    log_dir="logs/landscape",
)
model.fit(data.x_train, data.y_train, epochs=20, batch_size=256, verbose=0, callbacks=[callback])
for entry in callback.history:
    result = entry["result"]
    if entry["probe"] == "barrier":
        print(
            f"epoch {entry['epoch']:3d}: linear barrier {result['pairs'][0]['linear_barrier']:.4g}"
        )
    else:
        top = result["models"][0]["eigenvalues"][0]
        print(f"epoch {entry['epoch']:3d}: top Hessian eigenvalue {top:.4g}")
