"""The one DSS-string schema: how a string of beads lives in a store run.

Every reader and writer of strings goes through here: the DSS writes with `StringRecord`,
`klandscape show` and `plot` find strings with `string_prefixes` and read them with
`read_string`, `klandscape export` takes a bead from `read_string`.

A string stored under `prefix` (a group path inside the run, or '' for the run's root):

- `beads` (n, P) float32, `bead_level` (n,), `bead_depth` (n,), `bead_steps` (n,), and
  `bead_state` (n, S) when the model has float non-trainable state: one row per bead in the
  order the beads were accepted; rows 0 and 1 are the endpoints A and B;
- `order` (m,) int64: the string as bead rows, from A to B, rewritten after each depth;
- `curves` (c, R + 1): the level at R + 1 evenly spaced points of a checked segment, with
  `curve_segments` (c, 3) int64 = (left row, right row, depth);
- attributes on the prefix group: `depth_done`, and `verdict` (JSON) once finished.

A relaxed copy of a string (`barriers.relax_path`) is stored under `<prefix>_relaxed` with
`beads`, `bead_level`, `order` (and `bead_state`); it is drawn over its string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from keras_landscape.errors import UserError

BEAD_DATASETS = ("beads", "bead_level", "bead_depth", "bead_steps", "bead_state")
CURVE_DATASETS = ("curves", "curve_segments")
#: what a group must hold to count as a string
REQUIRED = ("order", "beads", "bead_level")
RELAXED_SUFFIX = "_relaxed"


def verdict_words(connected, reason: str | None) -> str:
    """A DSS verdict as every table, figure and summary writes it: 'connected', or 'not
    connected by DSS (reason)' -- the search found no path, which is not evidence that the
    two are disconnected."""
    if connected:
        return "connected"
    return f"not connected by DSS ({reason})" if reason else "not connected by DSS"


def key(prefix: str, name: str) -> str:
    """The dataset `name` of the string at `prefix` ('' is the run's root)."""
    return f"{prefix}/{name}" if prefix else name


def natural_order(text: str) -> list:
    """Sort key that puts pair_2 before pair_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def has_string(run, prefix: str) -> bool:
    """Whether the run holds a string at `prefix`."""
    return all(run.has(key(prefix, name)) for name in REQUIRED)


def string_prefixes(run, relaxed: bool = False) -> list[str]:
    """Prefixes of the strings stored in a run ('' for a string at its root), naturally
    sorted; relaxed copies only with `relaxed`."""
    datasets = set(run.keys())
    found = []
    for name in datasets:
        if name == "order" or name.endswith("/order"):
            prefix = name[: -len("order")].rstrip("/")
            if all(key(prefix, k) in datasets for k in REQUIRED):
                found.append(prefix)
    if not relaxed:
        found = [p for p in found if not p.endswith(RELAXED_SUFFIX)]
    return sorted(found, key=natural_order)


@dataclass
class StoredString:
    """A string read back: its bead rows, the final order, the checked curves, the verdict.

    Attributes:
        prefix: where it is stored in the run.
        order: the final (last committed) string as bead rows, A first.
        beads: (n, P) every stored bead row (float32).
        bead_level, bead_depth, bead_steps: (n,) per row.
        bead_state: (n, S) per row, or None for models without float state.
        curves: (left row, right row, depth, levels (R + 1,)) per checked segment, in order.
        depth_done: the last completed depth, or None.
        verdict: the finished string's verdict, or None while it is unfinished.
    """

    prefix: str
    order: list[int]
    beads: np.ndarray | None
    bead_level: np.ndarray | None
    bead_depth: np.ndarray | None = None
    bead_steps: np.ndarray | None = None
    bead_state: np.ndarray | None = None
    curves: list[tuple[int, int, int, np.ndarray]] = field(default_factory=list)
    depth_done: int | None = None
    verdict: dict | None = None

    @property
    def rows(self) -> list[int]:
        """The order without rows cut off by an interrupted write."""
        if self.beads is None:  # read without its arrays
            return list(self.order)
        return [r for r in self.order if r < len(self.beads)]

    def state_of(self, row: int) -> np.ndarray | None:
        return None if self.bead_state is None else self.bead_state[row]


def _read_optional(run, name: str):
    return run.read(name) if run.has(name) else None


def read_string(run, prefix: str, *, arrays: bool = True) -> StoredString:
    """The string at `prefix` as stored (read-only: rows of an unfinished depth included).

    With `arrays=False` only its order, depth and verdict are read (beads, levels and curves
    are None / empty): cheap for listings of stores whose beads are large.
    """
    attrs = run.get_attrs(prefix or None)
    verdict = attrs.get("verdict") if isinstance(attrs.get("verdict"), dict) else None
    depth_done = None if attrs.get("depth_done") is None else int(attrs["depth_done"])
    order = [int(r) for r in run.read(key(prefix, "order"))]
    if not arrays:
        return StoredString(prefix, order, None, None, depth_done=depth_done, verdict=verdict)
    curves = []
    if run.has(key(prefix, "curves")) and run.has(key(prefix, "curve_segments")):
        for (left, right, depth), levels in zip(
            run.read(key(prefix, "curve_segments")), run.read(key(prefix, "curves"))
        ):
            curves.append((int(left), int(right), int(depth), np.asarray(levels, np.float64)))
    return StoredString(
        prefix=prefix,
        order=order,
        beads=run.read(key(prefix, "beads")),
        bead_level=run.read(key(prefix, "bead_level")),
        bead_depth=_read_optional(run, key(prefix, "bead_depth")),
        bead_steps=_read_optional(run, key(prefix, "bead_steps")),
        bead_state=_read_optional(run, key(prefix, "bead_state")),
        curves=curves,
        depth_done=depth_done,
        verdict=verdict,
    )


class StringRecord:
    """Streams one string into a store run under `prefix` as the DSS grows it.

    A run interrupted mid-depth resumes from the last committed depth: `load` cuts off the
    rows written after it.
    """

    def __init__(self, run, prefix: str):
        self.run, self.prefix = run, prefix.strip("/")
        # Bead and curve rows wait in memory for the write that commits them (one write
        # per dataset per depth): rows without a commit would be cut off on resume anyway.
        self._pending: dict[str, list] = {}
        self._beads: int | None = None

    def key(self, name: str) -> str:
        return key(self.prefix, name)

    def add_bead(self, theta, level, depth, steps, state=None) -> int:
        """Queue a bead row; returns its row index (written by the next commit_depth or
        finish)."""
        if self._beads is None:
            beads = self.key("beads")
            self._beads = self.run.length(beads) if self.run.has(beads) else 0
        self._queue("bead_level", np.float64(level))
        self._queue("bead_depth", np.int32(depth))
        self._queue("bead_steps", np.int64(steps))
        if state is not None and np.size(state):
            self._queue("bead_state", np.asarray(state, np.float32))
        self._queue("beads", np.asarray(theta, np.float32))
        self._beads += 1
        return self._beads - 1

    def add_curve(self, left: int, right: int, depth: int, levels) -> None:
        """Queue the checked levels of the segment between bead rows left and right."""
        self._queue("curves", np.asarray(levels, np.float64))
        self._queue("curve_segments", np.array([left, right, depth], np.int64))

    def _queue(self, name: str, row) -> None:
        self._pending.setdefault(name, []).append(row)

    def _write_pending(self) -> None:
        for name, rows in self._pending.items():
            self.run.extend(self.key(name), np.stack(rows), flush=False)
        self._pending.clear()

    def commit_depth(self, rows: list[int], depth: int) -> None:
        """The string after `depth` is complete: its bead rows from A to B."""
        self._write_pending()
        self.run.write(self.key("order"), np.array(rows, np.int64))
        self.run.set_attrs(self.prefix or None, depth_done=depth)

    def finish(self, verdict: dict) -> None:
        self._write_pending()
        self.run.set_attrs(self.prefix or None, verdict=verdict)

    def verdict(self) -> dict | None:
        """The stored verdict of a finished string, else None."""
        if not self.run.has(self.key("order")):
            return None
        return self.run.get_attrs(self.prefix or None).get("verdict")

    def load(self) -> StoredString | None:
        """The string as of its last committed depth (None if nothing was committed).

        Rows written after the last commit (beads of an unfinished depth, a curve without
        its segment row) are cut off the store first: all of them where no depth was
        committed (a run interrupted in its first depth).
        """
        if not self.run.has(self.key("order")):
            for name in BEAD_DATASETS + CURVE_DATASETS:
                if self.run.length(self.key(name)):
                    self.run.truncate(self.key(name), 0)
            return None
        committed = int(max(self.run.read(self.key("order")))) + 1
        for name in BEAD_DATASETS:
            if self.run.has(self.key(name)) and self.run.length(self.key(name)) > committed:
                self.run.truncate(self.key(name), committed)
        curves = min(self.run.length(self.key(n)) for n in CURVE_DATASETS)
        for name in CURVE_DATASETS:
            if self.run.length(self.key(name)) > curves:
                self.run.truncate(self.key(name), curves)
        stored = read_string(self.run, self.prefix)
        if stored.depth_done is None:
            stored.depth_done = 0
        return stored

    def write_relaxed(self, thetas, levels, states) -> str:
        """Store a relaxed copy of this string (every bead in order); returns its prefix."""
        prefix = self.prefix + RELAXED_SUFFIX
        self.run.write(key(prefix, "beads"), np.asarray(thetas, np.float32))
        self.run.write(key(prefix, "bead_level"), np.asarray(levels))
        if states is not None and np.shape(states)[1]:
            self.run.write(key(prefix, "bead_state"), np.asarray(states))
        self.run.write(key(prefix, "order"), np.arange(len(thetas), dtype=np.int64))
        return prefix


def choose_string(run: str, prefixes: list[str], string: str | None, what: str = "string") -> str:
    """`string`, checked against the run's `prefixes` (None: the run's only one); a
    UserError lists them where the choice is missing or wrong."""
    listed = ", ".join(prefixes) or "none"
    if string is None:
        if len(prefixes) != 1:
            raise UserError(
                f"Run {run!r} holds {len(prefixes)} {what}s; choose one with --string ({listed})."
            )
        return prefixes[0]
    if string not in prefixes:
        raise UserError(f"Run {run!r} has no {what} {string!r}; it has: {listed}.")
    return string


__all__ = [
    "choose_string",
    "BEAD_DATASETS",
    "CURVE_DATASETS",
    "RELAXED_SUFFIX",
    "StoredString",
    "StringRecord",
    "has_string",
    "key",
    "natural_order",
    "read_string",
    "string_prefixes",
]
