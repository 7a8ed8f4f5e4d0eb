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
    "Landscape": "keras_landscape.engine.landscape",
    "LandscapeLike": "keras_landscape.contract",
    "load_data": "keras_landscape.data",
    "Dataset": "keras_landscape.data",
    "ParameterLayout": "keras_landscape.engine.params",
    "connect": "keras_landscape.science.dss",
    "DSSConfig": "keras_landscape.science.dss",
    "Connection": "keras_landscape.science.dss",
    "project": "keras_landscape.engine.projection",
    "ProjectionConfig": "keras_landscape.engine.projection",
    "load_model": "keras_landscape.models.loading",
    "register_probe": "keras_landscape.registry",
    "ProbeBase": "keras_landscape.registry",
    "Minimum": "keras_landscape.models.minimum",
    "RunSpec": "keras_landscape.experiment.spec",
    "execute": "keras_landscape.experiment.runner",
    "Store": "keras_landscape.store.hdf5",
    "UserError": "keras_landscape.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'keras_landscape' has no attribute {name!r}")
