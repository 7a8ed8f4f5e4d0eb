"""The one seed scheme: every random stream of a run derives from its seed by SeedSequence.

A unit of work (a pair, a level, a refinement depth, a partner) gets its seed from the run's
seed and the unit's integer keys, so a resumed run redraws exactly the same numbers and two
units never share a stream (an arithmetic scheme such as ``seed * C + depth`` collides).
"""

from __future__ import annotations

import numpy as np

_MOD = 2**64


def derive_seed(seed: int, *keys: int) -> int:
    """A reproducible seed in [0, 2**31 - 1) for the unit of work named by `keys`.

    Args:
        seed: the run's seed (`--seed`).
        *keys: integers naming the unit of work, e.g. (pair index,) or (level, depth).

    Returns:
        An int usable by numpy, Keras and TensorFlow seeding alike.

    Example:
        >>> derive_seed(0, 3) == derive_seed(0, 3) != derive_seed(0, 4)
        True
    """
    entropy = [int(k) % _MOD for k in (seed, *keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint32)[0] % (2**31 - 1))


__all__ = ["derive_seed"]
