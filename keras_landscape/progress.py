"""Progress reporting that probes use without knowing who is watching.

Probes call `progress.task(description, total)` and then `advance()` / `update(...)` on the
handle. The CLI passes a rich display on stderr; library users get `NullProgress` unless they
pass their own object with the same two methods.
"""

from __future__ import annotations

from typing import Protocol


class TaskHandle(Protocol):
    def advance(self, amount: float = 1) -> None: ...

    def update(self, *, total: float | None = None, status: str | None = None) -> None: ...

    def close(self) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None = None) -> TaskHandle: ...

    def note(self, message: str) -> None: ...


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, *, total: float | None = None, status: str | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    """Progress that shows nothing."""

    def task(self, description: str, total: float | None = None) -> _NullTask:
        return _NullTask()

    def note(self, message: str) -> None:
        pass
