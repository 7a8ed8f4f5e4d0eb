"""Where stacks of beads run: one device, or the replicas of a distribution strategy.

A `Devices` object runs a compiled stack kernel (a projection loop, a batched evaluation)
with the bead axis of its stacks (`put`) split across replicas: each replica computes its own
beads, and nothing is reduced across beads (beads are independent), so results equal a
one-device run. Everything else (data, frozen weights, step indices) goes to every replica
whole. Backends subclass it: `tensorflow.StrategyDevices` (tf.distribute) and
`jax.MeshDevices` (a `jax.sharding.Mesh` with one 'beads' axis); this base is one device.

Several processes (multiworker) run one program: every process makes the same calls in the
same order with the same inputs (seeded), `fetch` gives every process the whole result, and
only `writer` (process 0) writes the store.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

log = logging.getLogger("keras_landscape")


def padded_count(k: int) -> int:
    """The next power of two >= k: stacks of beads are padded to it so that a compiled
    function sees few shapes (each new shape is a new trace and, under XLA, a compilation)."""
    return 1 << max(0, int(k) - 1).bit_length()


def power_of_two_parts(k: int, cap: int) -> list[slice]:
    """Rows 0..k split into consecutive parts whose sizes are powers of two, each at most
    `cap` (itself a power of two), largest first: 100 rows under cap 64 -> 64, 32, 4. Like
    padding (`padded_count`), a compiled function then sees few shapes, and no row is
    wasted on padding."""
    parts, start = [], 0
    while start < k:
        size = min(int(cap), 1 << (int(k - start).bit_length() - 1))
        parts.append(slice(start, start + size))
        start += size
    return parts


class Devices:
    """One device (the base of the strategies).

    Attributes:
        name: the strategy ('one', 'mirrored', 'tpu', 'multiworker').
        count: replicas across all processes (stacks are padded to a multiple of it).
        process_index, processes: this process and how many run the program.
        rows: real (unpadded) bead rows each device computed, by device name: the evidence
            that every replica worked (recorded in each run's `devices` attribute).
    """

    name = "one"
    count = 1
    process_index = 0
    processes = 1

    def __init__(self) -> None:
        self.rows: Counter = Counter()
        self.split_note: str | None = None

    @property
    def writer(self) -> bool:
        """Whether this process writes the store (process 0)."""
        return self.process_index == 0

    def width(self, k: int) -> int:
        """Rows of a stack of k beads once padded: a power of two per replica."""
        if 0 < k < self.count and self.split_note is None:
            self.split_note = (
                f"stacks of fewer beads than the {self.count} replicas occur (e.g. {k}): the "
                "beads stay sharded and the other replicas run padding rows; the data batch "
                "is not sharded instead"
            )
            log.info("--strategy %s: %s.", self.name, self.split_note)
        return self.count * padded_count(-(-max(1, int(k)) // self.count))

    def kernel_width(self, width: int) -> int:
        """Rows one compiled call sees for a padded stack of `width` (the whole stack on
        one device or under SPMD; a replica's share under tf.distribute)."""
        return width

    def put(self, value):
        """A stack (bead axis first, padded to `width`) split across the replicas."""
        return value

    def call(self, fn: Callable, args: Sequence, real: int):
        """fn(*args) on every replica: stacks from `put` (or an earlier call's outputs) give
        each replica its share of the beads; any other argument goes to every replica
        whole. `real` rows of the stack are beads, the rest padding (counted in `rows`)."""
        out = fn(*args)
        self.rows["/device:0"] += int(real)
        return out

    def fetch(self, value) -> np.ndarray:
        """The whole of a (possibly distributed) result, on this host, in every process."""
        return np.asarray(value)

    def scope(self):
        """Where variables a kernel captures are made (a strategy's scope: one copy per
        replica, on its device)."""
        return contextlib.nullcontext()

    def shared(self, value) -> np.ndarray:
        """A value every replica holds the same copy of (an optimizer's step count), on the
        host."""
        return np.asarray(value)

    def sync(self, tag: str) -> None:
        """Wait until every process reaches this point (a no-op in one process)."""
        del tag

    def describe(self) -> dict:
        return {
            "strategy": self.name,
            "replicas": self.count,
            "processes": self.processes,
            "rows_per_device": dict(self.rows),
            **({"note": self.split_note} if self.split_note else {}),
        }

    def _record(self, shard_rows: list[tuple[str, int, int]], real: int) -> None:
        """Count the real rows of each (device, first row, row count) shard."""
        for device, start, size in shard_rows:
            self.rows[device] += max(0, min(start + size, real) - start)


ONE = Devices()

__all__ = ["Devices", "ONE", "padded_count"]
