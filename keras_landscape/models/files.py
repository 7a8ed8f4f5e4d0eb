"""Checks of input files that need no framework: the CLI runs them before TensorFlow or JAX
is imported, so a missing or mislabelled file is reported in a fraction of a second.

Imports the standard library only.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from keras_landscape.errors import UserError

SUPPORTED = ".keras (Keras 3) and legacy .h5/.hdf5 files"
_H5_MAGIC = b"\x89HDF\r\n\x1a\n"


def check_model_file(path: str | os.PathLike) -> Path:
    """`path` as a Path when it can be a Keras model file; UserError saying what it is if not
    (a SavedModel directory, a missing file, another extension, a corrupt archive)."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise UserError(
                f"{str(path)!r} is a TensorFlow SavedModel directory. keras-landscape needs the "
                "model's Keras architecture: save it as a .keras file "
                "(model.save('model.keras')), or load it with tf.keras and re-save it."
            )
        raise UserError(f"{str(path)!r} is a directory, not a model file ({SUPPORTED}).")
    if not path.exists():
        raise UserError(f"Model file {str(path)!r} does not exist.")
    if not path.is_file():  # a FIFO would block the open below; a device never ends
        raise UserError(
            f"{str(path)!r} is not a regular file (a named pipe, socket or device), so it "
            f"cannot be a model file ({SUPPORTED}); give the path of a saved model file."
        )
    suffix = path.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise UserError(
            f"Cannot load {str(path)!r}: unknown extension {suffix or '(none)'!r}. "
            f"Supported: {SUPPORTED}."
        )
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as error:
        reason = error.strerror or error
        raise UserError(f"Cannot read the model file {str(path)!r}: {reason}.") from None
    if suffix == ".keras" and not zipfile.is_zipfile(path):
        raise UserError(
            f"{str(path)!r} is not a valid .keras archive (a .keras file is a zip archive); the "
            "file is corrupt or was saved in another format."
        )
    if suffix in (".h5", ".hdf5") and head != _H5_MAGIC:
        raise UserError(f"{str(path)!r} is not an HDF5 file; the file is corrupt or mislabelled.")
    return path


__all__ = ["SUPPORTED", "check_model_file"]
