"""Progress reporting that probes use without knowing who is watching, and how a long
command is stopped.

Probes call `progress.task(description, total)` and then `advance()` / `update(...)` on the
handle. The CLI passes a rich display on stderr; library users get `NullProgress` unless they
pass their own object with the same two methods.

A run stops on SIGINT (Ctrl-C) or SIGTERM, except where an interruption would cut work that
must be whole: a store's write and commit, a framework's import. There `deferred_interrupts`
holds the signal and delivers it right after; `HeldInterrupts` holds it and lets the caller
decide (the CLI while it imports); `sigterm_interrupts` makes SIGTERM stop a command as
Ctrl-C does. A signal that is ignored (SIG_IGN, as the shell sets SIGINT for a job started
with `&` where there is no job control) stays ignored: nothing here installs a handler over
it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
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


# ------------------------------------------------------------------ stopping a long command

#: the signals that stop a run cleanly (the store keeps its last commit; --resume continues)
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)

_holding: HeldInterrupts | None = None  # the hold in force (main thread only)


class HeldInterrupts:
    """SIGINT and SIGTERM held from construction until `release()` (or the end of a `with`
    block): a signal that arrives meanwhile is recorded (`signal`, the first one), not acted
    on; the holder decides what to do with it.

    Holds only in the main thread (the only one Python runs signal handlers in), only where
    no hold is in force already (the outer hold keeps what arrives), and only signals that
    have a handler or their default action: an ignored signal stays ignored.
    """

    def __init__(self) -> None:
        global _holding
        self.signal: int | None = None
        self._previous: dict[int, object] = {}
        if _holding is not None or threading.current_thread() is not threading.main_thread():
            return
        for signum in INTERRUPTS:
            handler = signal.getsignal(signum)
            if handler is signal.SIG_IGN or handler is None:  # ignored, or not set by Python
                continue
            try:
                signal.signal(signum, self._hold)
            except ValueError:  # a sub-interpreter: signals are not ours to set
                break
            self._previous[signum] = handler
        if self._previous:
            _holding = self

    def __enter__(self) -> HeldInterrupts:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _hold(self, signum: int, frame) -> None:
        if self.signal is None:
            self.signal = signum

    @property
    def holding(self) -> bool:
        """Whether this object holds signals (False: nested in another hold, a thread)."""
        return _holding is self

    def release(self) -> int | None:
        """Stop holding (the handlers are as before); the signal held, if any (not
        delivered: see `deliver`)."""
        global _holding
        if _holding is self:
            _holding = None
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
        return self.signal

    def deliver(self) -> None:
        """Stop holding and act on the signal held as if it arrived now: its handler runs
        (Ctrl-C: KeyboardInterrupt raised here), or its default action."""
        signum = self.release()
        if signum is not None:
            self.signal = None
            signal.raise_signal(signum)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM held while the block runs and delivered right after it: the block
    is never cut half way (a store's commit; a framework's import, which may swallow a
    KeyboardInterrupt or die of it in native code). Nested blocks are held by the outer one.
    """
    held = HeldInterrupts()
    try:
        yield
    finally:
        held.deliver()


def _terminated(signum: int, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While the block runs, SIGTERM (`kill PID`, a scheduler's stop) raises
    KeyboardInterrupt as Ctrl-C does, so that a command stops cleanly: the store keeps its
    last commit and the run is marked interrupted. Left alone where SIGTERM is ignored or
    handled by someone else, and outside the main thread."""
    installed = False
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, _terminated)
                installed = True
    try:
        yield
    finally:
        if installed and signal.getsignal(signal.SIGTERM) is _terminated:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
