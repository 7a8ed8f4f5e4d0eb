"""keras-landscape: topology and geometry of neural-network loss landscapes.

The public API re-exported here is lazy: importing the package does not import TensorFlow,
so `klandscape --version` and the store reader stay fast.
"""

from keras_landscape._version import __version__

__all__ = ["__version__"]
