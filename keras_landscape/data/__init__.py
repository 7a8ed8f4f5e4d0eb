"""Datasets: data specs -> numpy arrays (embedded, synthetic, npz, idx, text, tfds).

May import: numpy, scikit-learn, `errors`, `seeds`; tensorflow-datasets (and TensorFlow,
which it reads through) only inside the `tfds:` loader. Never imports keras.
"""

from keras_landscape.data.specs import (
    KINDS,
    Dataset,
    Kind,
    Teacher,
    adapt_to_model,
    load_data,
    parse_spec,
    read_idx,
)

__all__ = [
    "KINDS",
    "Dataset",
    "Kind",
    "Teacher",
    "adapt_to_model",
    "load_data",
    "parse_spec",
    "read_idx",
]
