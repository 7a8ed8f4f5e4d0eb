"""Training-time probes: `LandscapeCallback` (see `keras_landscape.experiment.callbacks`)."""

from keras_landscape.experiment.callbacks import LandscapeCallback

__all__ = ["LandscapeCallback"]
