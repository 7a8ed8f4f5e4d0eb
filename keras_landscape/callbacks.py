"""Training-time probes: `LandscapeCallback` (see `keras_landscape.experiment.callbacks`)."""

from keras_landscape.experiment.callbacks import PAIR_PROBES, LandscapeCallback

__all__ = ["LandscapeCallback", "PAIR_PROBES"]
