"""Activations of our own, registered as Keras serializables.

`square` (z -> z^2, the quadratic activation of Freeman & Bruna's two-layer networks) is
registered as ``keras_landscape>square``: a model saved with it loads wherever this module
has been imported. `keras_landscape.models.loading` and the recipe builder import it, so
`klandscape` commands and `load_model` always find it; a script that calls
`keras.saving.load_model` itself imports `keras_landscape.models.activations` first.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="keras_landscape", name="square")
def square(x):
    """The quadratic activation z -> z^2, elementwise."""
    return keras.ops.square(x)


#: recipe activation names -> our activations (Keras's own names are looked up by Keras)
ACTIVATIONS = {"square": square, "keras_landscape>square": square}


def get_activation(name: str):
    """Our activation of that name, else the name itself (for keras.activations.get)."""
    return ACTIVATIONS.get(name, name)


__all__ = ["ACTIVATIONS", "get_activation", "square"]
