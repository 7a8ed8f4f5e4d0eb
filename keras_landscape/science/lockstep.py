"""Lockstep: many searches (DSS strings, bisections) advancing together on one landscape.

A search is written as a generator that *yields requests* for the work it needs from the
landscape (levels of some points, curves of some segments, a projection of some beads) and
receives each answer back, so its code reads as the algorithm does, one string at a time.
`drive` runs many searches at once: in every round it collects the pending request of every
search, serves all requests of one kind in one stacked call (all new beads of every string
form one projection stack; all new segments' check points one evaluation batch), and sends
each search its own rows. This is what fills an accelerator: one pair at depth 1 has one
bead, 20 pairs x 8 levels have 160.

A search's answers do not depend on which searches it is served with: evaluations are per
row, and the projection of a bead depends only on its start, target, normal, state, the
projection settings and its mini-batch draws. Beads are stacked only with beads that share
those settings and, under mini-batch steps, the seed of the draws (DSS seeds the draws of
depth d by the string's seed and d; the probes give every string of a run the run's seed,
so all strings at depth d share them); a stack larger than memory allows
is split by `Landscape.project`. Results equal a one-at-a-time run (`together=False`) up to
float rounding of differently sized stacks; models with dropout draw their masks per stack
row, so for them the equality holds in distribution only.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import astuple, dataclass
from typing import Any

import numpy as np

from keras_landscape.contract import LandscapeLike

Search = Generator[Any, Any, Any]


class Request:
    """Work a search asks of the landscape. Requests with equal `group` are served together
    by one `serve(landscape, requests)` call, which returns one answer per request."""

    def group(self, landscape: LandscapeLike) -> tuple:
        del landscape
        return (type(self).__name__,)

    @classmethod
    def serve(cls, landscape: LandscapeLike, requests: list) -> list:
        raise NotImplementedError


@dataclass
class Levels(Request):
    """The path view of points (`Landscape.levels_and_states`): answers (levels, states)."""

    thetas: np.ndarray
    states: np.ndarray | None = None

    @classmethod
    def serve(cls, landscape: LandscapeLike, requests: list[Levels]) -> list:
        sizes = [len(r.thetas) for r in requests]
        thetas = np.concatenate([np.asarray(r.thetas, np.float32) for r in requests])
        states = np.concatenate(
            [landscape.fill_states(r.states, n) for r, n in zip(requests, sizes)]
        )
        levels, used = landscape.levels_and_states(thetas, states)
        return list(zip(split_rows(levels, sizes), split_rows(used, sizes)))


@dataclass
class Projection(Request):
    """Beads to train down to their targets (`Landscape.project`): answers a
    ProjectionResult of this request's rows."""

    starts: np.ndarray
    target: float
    config: Any
    seed: int
    normals: np.ndarray | None = None
    states: np.ndarray | None = None

    def group(self, landscape: LandscapeLike) -> tuple:
        # Full-batch steps draw nothing: the seed does not matter and is not a reason to
        # keep beads apart.
        size = self.config.batch_size
        draws = size is not None and size < landscape.train_size
        return ("Projection", self.seed if draws else None, astuple(self.config))

    @classmethod
    def serve(cls, landscape: LandscapeLike, requests: list[Projection]) -> list:
        first = requests[0]
        sizes = [len(r.starts) for r in requests]
        starts = np.concatenate([np.asarray(r.starts, np.float32) for r in requests])
        normals = np.concatenate(
            [
                np.zeros_like(r.starts, np.float32) if r.normals is None else r.normals
                for r in requests
            ]
        ).astype(np.float32)
        states = np.concatenate(
            [landscape.fill_states(r.states, n) for r, n in zip(requests, sizes)]
        )
        targets = np.concatenate(
            [np.full(n, r.target, np.float64) for r, n in zip(requests, sizes)]
        )
        result = landscape.project(
            starts, targets, first.config, seed=first.seed, normals=normals, states=states
        )
        return [result.rows(rows) for rows in _slices(sizes)]


def _slices(sizes: list[int]) -> list[slice]:
    ends = np.cumsum([0, *sizes])
    return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]


def split_rows(rows, sizes: list[int]) -> list:
    """`rows` (an array or a list) cut into consecutive parts of `sizes`: each request's
    share of a stacked answer."""
    return [rows[part] for part in _slices(sizes)]


def drive(
    landscape: LandscapeLike,
    searches: list[Search],
    *,
    together: bool | None = None,
    on_done: Callable[[int, Any], None] | None = None,
    progress=None,
) -> list:
    """Run `searches` to their ends; their return values, in order.

    Args:
        landscape: serves the requests.
        searches: generators yielding `Request`s (see the module docstring).
        together: lockstep (True) or one search after another (False); None takes the
            landscape's `lockstep` setting (default True).
        on_done: called with (index, value) as each search finishes (store flushes, progress).
        progress: a TaskHandle whose status shows the round (strings running, beads).
    """
    if together is None:
        together = landscape.lockstep
    results: dict[int, Any] = {}
    if together:
        results = _run(landscape, dict(enumerate(searches)), on_done, progress)
    else:
        for index, search in enumerate(searches):
            results.update(_run(landscape, {index: search}, on_done, progress))
    return [results[index] for index in range(len(searches))]


def _run(
    landscape: LandscapeLike, searches: dict[int, Search], on_done, progress
) -> dict[int, Any]:
    results: dict[int, Any] = {}
    pending: dict[int, Request] = {}

    def advance(index: int, answer) -> None:
        try:
            pending[index] = searches[index].send(answer)
        except StopIteration as stop:
            pending.pop(index, None)
            results[index] = stop.value
            if on_done is not None:
                on_done(index, stop.value)

    for index in list(searches):
        advance(index, None)
    while pending:
        groups: dict[tuple, list[int]] = {}
        for index, request in pending.items():
            groups.setdefault(request.group(landscape), []).append(index)
        if progress is not None and len(pending) > 1:  # one search reports its own status
            beads = sum(len(r.starts) for r in pending.values() if isinstance(r, Projection))
            progress.update(
                status=f"{len(pending)} searches running"
                + (f", projecting {beads} beads together" if beads else "")
            )
        for members in groups.values():
            requests = [pending[i] for i in members]
            answers = type(requests[0]).serve(landscape, requests)
            for index, answer in zip(members, answers):
                advance(index, answer)
    return results


def run_one(landscape: LandscapeLike, search: Search):
    """One search to its end (its return value)."""
    return drive(landscape, [search], together=True)[0]


__all__ = ["Levels", "Projection", "Request", "Search", "drive", "run_one", "split_rows"]
