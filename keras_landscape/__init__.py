"""keras-landscape: topology and geometry of neural-network loss landscapes.

The public API is re-exported lazily: importing the package does not import TensorFlow, so
`klandscape --version` and the store reader stay fast.

Example:
    >>> from keras_landscape import Landscape, load_data, connect, DSSConfig
    >>> landscape = Landscape(model_a, load_data("cubic"), loss="mae", level_fn="mae")
    >>> result = connect(landscape, landscape.theta_of(model_a), landscape.theta_of(model_b),
    ...                  level=0.1, config=DSSConfig())
"""

from importlib import import_module

from keras_landscape._version import __version__

_EXPORTS = {
    "Landscape": "keras_landscape.landscape",
    "load_data": "keras_landscape.data",
    "Dataset": "keras_landscape.data",
    "ParameterLayout": "keras_landscape.params",
    "connect": "keras_landscape.dss",
    "DSSConfig": "keras_landscape.dss",
    "Connection": "keras_landscape.dss",
    "project": "keras_landscape.projection",
    "ProjectionConfig": "keras_landscape.projection",
    "load_model": "keras_landscape.models",
    "register_probe": "keras_landscape.registry",
    "Store": "keras_landscape.store",
    "UserError": "keras_landscape.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'keras_landscape' has no attribute {name!r}")
