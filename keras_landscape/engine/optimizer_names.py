"""Keras's optimizers by name, known without importing Keras: those a projection steps
(`OPTIMIZERS`), those that would let beads move each other (`MIXES_BEADS`), and those that
are no optimizer of their own (`NOT_STEPPERS`).

Plain data, below both `engine.options` (the settings, checked without Keras) and
`engine.optimizers` (what Keras must resolve), so that neither imports the other for them.
"""

from __future__ import annotations

#: Keras's built-in optimizers whose step acts on each parameter separately, known here
#: without importing Keras. Any other name is resolved with `keras.optimizers.get`.
OPTIMIZERS = (
    "adam",
    "sgd",
    "rmsprop",
    "adamw",
    "nadam",
    "adamax",
    "adagrad",
    "adadelta",
    "ftrl",
    "lion",
)
# All beads are stepped as the rows of one (K, P) variable, so an optimizer whose step
# depends on the whole variable would let one bead's gradient move another.
MIXES_BEADS = {
    "adafactor": "it factors the second moments over the rows and columns of the bead stack",
    "muon": "it orthogonalises the update of the whole bead stack as one matrix",
    "lamb": "its trust ratio uses the norm of the whole bead stack",
    "clipnorm": "the norm is taken over the whole bead stack",
    "global_clipnorm": "the norm is taken over the whole bead stack",
}
NOT_STEPPERS = ("optimizer", "lossscaleoptimizer", "multioptimizer", "optimizermap")

__all__ = ["MIXES_BEADS", "NOT_STEPPERS", "OPTIMIZERS"]
