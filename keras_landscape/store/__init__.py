"""The HDF5 store: one file per run, readable with h5py alone.

May import: h5py, numpy, `errors`, `_version`. Never imports keras, tensorflow or jax
(tested: tests/test_layers.py imports it with those made unimportable). `store.strings`
is the one module that knows how a DSS string is laid out in a store.
"""

from keras_landscape.store.hdf5 import RunRecord, Store, from_json, reading, to_json

__all__ = ["RunRecord", "Store", "from_json", "reading", "to_json"]
