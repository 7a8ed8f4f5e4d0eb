"""A split of the data cut into equal, padded and masked batches (tensors made once), so
that one compiled graph serves every batch; the host adds up the batches' sums."""

from __future__ import annotations

import numpy as np
from keras import ops


class Batches:
    """A split cut into equal padded batches (tensors made once), with a 0/1 sample mask.

    Attributes:
        n: the split's number of samples.
        batch_size: samples per batch (the whole split if it is smaller).
        batches: [(x, y, mask)] tensors; the last batch is padded with copies of its last
            sample, masked out.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int):
        n = len(x)
        self.n = n
        self.batch_size = max(1, min(batch_size, n))
        self.batches = []
        for start in range(0, n, self.batch_size):
            xb, yb = x[start : start + self.batch_size], y[start : start + self.batch_size]
            pad = self.batch_size - len(xb)
            mask = np.concatenate([np.ones(len(xb), np.float32), np.zeros(pad, np.float32)])
            if pad:
                xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
                yb = np.concatenate([yb, np.repeat(yb[-1:], pad, axis=0)])
            self.batches.append(
                (ops.convert_to_tensor(xb), ops.convert_to_tensor(yb), ops.convert_to_tensor(mask))
            )
