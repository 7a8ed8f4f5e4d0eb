"""The HDF5 store: one file per run, readable with h5py alone.

The schema is written down in ``docs/hdf5-format.md``; this module is its only writer. It
imports h5py, numpy and the standard library only (never TensorFlow or Keras), so a store
can be opened anywhere: version strings are passed in by the caller.

Everything is flushed after every mutation, so an interrupted run loses nothing that was
written and can be resumed (``Store.begin_run(..., resume=True)``, ``RunRecord.length``,
``RunRecord.truncate``). Every operation on a store being written runs whole: SIGINT and
SIGTERM wait for it and its commit to finish (`_whole`).

JSON values (run ``config`` and ``result``, layout ``shapes``, any non-scalar attribute) are
encoded by :func:`to_json`: numpy scalars and arrays become Python numbers and lists, tuples
become lists, and non-finite floats (NaN, +-inf) become ``null``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import io
import json
import math
import os
import secrets
import socket
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from keras_landscape._version import __version__
from keras_landscape.errors import UserError
from keras_landscape.flat import split_flat
from keras_landscape.progress import deferred_interrupts

FORMAT_NAME = "keras-landscape"
FORMAT_VERSION = 1

RUN_STATUSES = ("running", "complete", "failed", "interrupted")

#: Name of the attribute (on any group or dataset) listing which of its attributes hold
#: JSON text. It is itself a JSON list of attribute names.
JSON_ATTRS = "json_attrs"

# Chunks of resizable run datasets: rows up to _CHUNK_BYTES are kept whole, at most
# _CHUNK_ROWS of them in about _SMALL_CHUNK_BYTES.
_CHUNK_BYTES = 1 << 20
_SMALL_CHUNK_BYTES = 64 << 10
_CHUNK_ROWS = 64

_STR = h5py.string_dtype("utf-8")


# --------------------------------------------------------------------------- whole operations


def _whole(method):
    """A store operation run whole: SIGINT and SIGTERM are held while it runs and delivered
    right after it (`progress.deferred_interrupts`).

    An exception raised inside HDF5's I/O callbacks (`_CommittedFile`'s reads and writes)
    comes out of h5py as an error of its own (SystemError, RuntimeError), and leaves its
    file in a state that cannot be flushed; a commit cut half way leaves a file that no
    commit described. Held, a Ctrl-C stops a run between two whole operations: the store
    is as of its last commit, the run is marked interrupted, and --resume continues it.
    A store read through h5py's own driver (read-only, or held in memory) has neither:
    its operations run as they are.
    """

    @functools.wraps(method)
    def whole(self, *args, **kwargs):
        # self: a Store, a RunRecord (its store's file), or the class (create, open)
        if getattr(getattr(self, "store", self), "_backing", True) is None:
            return method(self, *args, **kwargs)
        with deferred_interrupts():
            return method(self, *args, **kwargs)

    return whole


# --------------------------------------------------------------------------- replacing files


def _claim_for_replacement(path: str):
    """Check that `path` is a keras-landscape store no process is writing, and lock it.

    Returns an open descriptor holding an exclusive lock on the old file where the file
    system has locks (HDF5 locks files with flock too, so a running writer makes this
    fail). Anything that is not a store we wrote is refused: --overwrite never deletes a
    model, a text file or a damaged file.
    """
    refuse = f"--overwrite replaces only keras-landscape stores, and {path!r} is not one"
    if not _is_hdf5(path):
        raise UserError(
            f"{refuse}: it is not an HDF5 file. Remove it yourself if it is not needed, or "
            "choose another --out."
        )
    try:
        with h5py.File(path, "r") as f:
            fmt = _plain(f.attrs.get("format"))
    except OSError as exc:
        if _locked(str(exc)):
            raise UserError(_in_use(path)) from None
        raise UserError(
            f"{refuse}: it cannot be read ({str(exc).splitlines()[0][:200]}); a damaged store "
            "is not replaced automatically. Remove it yourself or choose another --out."
        ) from None
    if fmt != FORMAT_NAME:
        raise UserError(
            f"{refuse}: it is an HDF5 file without keras-landscape's format attribute (a Keras "
            "model file?). Choose another --out."
        )
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _flock(descriptor, path)  # a writer of an older version holds HDF5's flock on it
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _is_hdf5(path: str) -> bool:
    try:
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def _locked(message: str) -> bool:
    """h5py's error for a file another process holds (HDF5 file locking)."""
    text = message.lower()
    return "unable to lock" in text or "lock file" in text or "file locking" in text


def _in_use(path: str, holder: str = "") -> str:
    by = f" ({holder})" if holder else ""
    return (
        f"The store {path!r} is open in another process{by} (a run is writing it): it was "
        "left untouched. Wait for that run to finish, or choose another --out."
    )


def _release(descriptor) -> None:
    if descriptor is not None:
        os.close(descriptor)


def _move_into_place(temporary: str, path: str, *, replace: bool) -> None:
    """Rename `temporary` to `path`: over the old file when replacing (its lock is ours),
    else only if `path` still does not exist (an atomic hard link)."""
    if replace:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise UserError(
            f"The output file {path!r} appeared while the store was being created (another "
            "run?); it was left untouched. Choose another --out."
        ) from None
    except OSError:  # a file system without hard links
        if os.path.lexists(path):
            raise UserError(
                f"The output file {path!r} already exists; choose another --out."
            ) from None
        os.replace(temporary, path)
        return
    os.unlink(temporary)


# --------------------------------------------------------------------------- writing safely


class StoreWriteError(UserError):
    """The store could not be written (the disk is full, a quota is exceeded, an I/O error):
    the file on disk was left as of its last commit, readable and resumable."""

    def __init__(self, path: str, error: OSError, *, creating: bool = False):
        self.path, self.error = path, error
        reason = os.strerror(error.errno) if error.errno else str(error)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            what = "disk full" if error.errno == errno.ENOSPC else "disk quota exceeded"
            cure = "Free some space (or raise the quota)"
        else:
            what, cure = "write failed", "Fix the cause"
        if creating:
            message = (
                f"Cannot create the store {path!r}: {what} ({reason}). Nothing was written "
                f"there. {cure} and run the command again, or choose another --out."
            )
        else:
            message = (
                f"Writing the store {path!r} failed: {what} ({reason}). The store was left as "
                "of its last committed step (for a string, its last completed depth): "
                f"`klandscape show` reads it. {cure}, then rerun the same command with "
                "--resume to continue from there."
            )
        super().__init__(message)


# How the file system may say that it cannot reserve space: preallocation is then skipped.
_NO_FALLOCATE = {errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV, errno.ESPIPE}
# How it may say that it has no locks (Lustre without -o flock, some NFS): run unlocked.
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _pwrite(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    while len(view):
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class _CommittedFile:
    """The file under a writable store, handed to h5py as a file object.

    HDF5 has no journal: a write that fails halfway through a flush (a full disk) leaves a
    file whose superblock and object headers disagree, which nothing can read. Here the
    bytes of the last commit (a successful `commit`, after an HDF5 flush) are never
    overwritten until the next commit is sure to succeed: writes beyond the committed
    length go to the disk at once (new space: a failure there touches nothing committed),
    writes into the committed part wait in memory. `commit` first makes sure of the new
    space (fdatasync, so that a file system that reports a full disk late, such as NFS,
    reports it now) and reserves the space the waiting writes need, and only then writes
    them. A failure leaves the file exactly as of the last commit (the new tail is cut off)
    and the object `failed`: from then on nothing reaches the disk.
    """

    def __init__(self, fd: int, path: str):
        self.fd, self.path = fd, path
        self._position = 0
        self._committed = self._size = os.fstat(fd).st_size
        self._waiting: list[tuple[int, bytes]] = []  # (offset, bytes) in write order
        self._grown = False  # new space written since the last commit
        self._error: OSError | None = None  # the first write that failed
        self.failed = False

    def __repr__(self) -> str:  # h5py names a file object's file by its repr
        return self.path

    # The file-object protocol h5py's "fileobj" driver uses.

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: self._size}[whence]
        self._position = base + int(offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        size = max(0, self._size - self._position) if size is None or size < 0 else size
        buffer = bytearray(size)
        self.readinto(buffer)
        return bytes(buffer)

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        start, count = self._position, len(view)
        end = min(start + count, self._size)
        got = os.preadv(self.fd, [view[: max(0, end - start)]], start) if end > start else 0
        view[got:] = bytes(count - got)  # beyond the end of the file: zeros, as sec2 reads
        for offset, data in self._waiting:
            low, high = max(offset, start), min(offset + len(data), start + count)
            if low < high:
                view[low - start : high - start] = data[low - offset : high - offset]
        self._position += count
        return count

    def write(self, buffer) -> int:
        if _PAUSE:
            _pause_for_tests()
        view = memoryview(buffer).cast("B")
        start = self._position
        self._position += len(view)
        self._size = max(self._size, self._position)
        cut = min(max(self._committed - start, 0), len(view))
        if cut:  # into the committed bytes: wait for the commit
            self._waiting.append((start, bytes(view[:cut])))
        if cut < len(view):  # new space
            tail, offset = view[cut:], start + cut
            if self.failed or self._error is not None:
                self._waiting.append((offset, bytes(tail)))
            else:
                try:
                    _pwrite(self.fd, tail, offset)
                    self._grown = True
                except OSError as error:  # kept for `commit` to report; HDF5 carries on
                    self._error = error
                    self._waiting.append((offset, bytes(tail)))
        return len(view)

    def truncate(self, size: int) -> int:
        size = int(size)
        if size >= self._committed and not self.failed and self._error is None:
            try:
                os.ftruncate(self.fd, max(size, self._committed))
            except OSError as error:
                self._error = error
        self._size = size
        return size

    def flush(self) -> None:
        """HDF5's flush of the driver: the commit is the store's (`commit`)."""

    # The store's side.

    def commit(self) -> None:
        """Make what HDF5 wrote so far the committed state; raises the OSError of a write
        that failed (then the file is left as of the last commit and `failed` is set)."""
        global _commits_done
        if self.failed:
            raise self._error or OSError(errno.EIO, "the store failed earlier")
        try:
            if self._error is not None:
                raise self._error
            if self._grown:
                os.fdatasync(self.fd)
            for start, end in _merged((o, o + len(d)) for o, d in self._waiting):
                try:  # space under the waiting writes (a hole left by a truncate)
                    os.posix_fallocate(self.fd, start, end - start)
                except OSError as error:
                    if error.errno not in _NO_FALLOCATE:
                        raise
            for offset, data in self._waiting:
                _pwrite(self.fd, data, offset)
            if os.fstat(self.fd).st_size != self._size:
                os.ftruncate(self.fd, self._size)
        except OSError as error:
            self._fail(error)
            raise
        self._waiting.clear()
        self._committed, self._grown = self._size, False
        _commits_done += 1

    def _fail(self, error: OSError) -> None:
        self.failed, self._error = True, error
        with contextlib.suppress(OSError):  # cut the uncommitted tail (frees its space)
            os.ftruncate(self.fd, self._committed)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# For tests only (tests/reliability/test_interrupt.py), KLANDSCAPE_TEST_COMMIT_PAUSE="N:PATH"
# pauses the store operation that makes this process's Nth commit in HDF5's first write to
# the file (inside h5py): it creates PATH and waits until PATH is gone (a minute at most),
# so that a signal sent meanwhile arrives while h5py writes what commit N commits.
_PAUSE = os.environ.get("KLANDSCAPE_TEST_COMMIT_PAUSE", "")
_commits_done = 0  # commits made by this process (every store)


def _pause_for_tests() -> None:
    global _PAUSE
    number, _, path = _PAUSE.partition(":")
    if _commits_done != int(number) - 1:
        return
    _PAUSE = ""  # once
    Path(path).write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)


def _merged(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(start, end) for start, end in out]


def _flock(fd: int, path: str, holder: str = "") -> bool:
    """Take an exclusive lock on `fd` without waiting: True if held, False where the file
    system has no locks; a UserError if another process holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock on this platform
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in _NO_LOCKS:
            return False
        raise UserError(_in_use(path, holder)) from None
    return True


def _lock_store_file(fd: int, path: str) -> None:
    """The writer's flock on the store file itself, as HDF5 takes one when it opens a file
    for writing (so that HDF5 readers elsewhere are told the store is being written), and
    skipped where HDF5's file locking is off (HDF5_USE_FILE_LOCKING=FALSE). What keeps
    writers apart is `_StoreLock`."""
    if os.environ.get("HDF5_USE_FILE_LOCKING", "").strip().upper() not in ("FALSE", "0"):
        _flock(fd, path)


class _StoreLock:
    """`<store>.lock`: an flock held by the process that writes a store, for the whole time
    it has the store open (created, resumed, appended to). --overwrite, --resume, a census
    and every other writer take it first, so two writers never meet, also where HDF5's own
    file locking is off (HDF5_USE_FILE_LOCKING=FALSE on NFS or Lustre). Only the flock
    counts: a lock file left behind by a killed process (the kernel released its flock)
    blocks nothing, and is reused."""

    def __init__(self, fd: int, path: str):
        self.fd, self.path = fd, path

    @staticmethod
    def path_of(store: str) -> str:
        return store + ".lock"

    @classmethod
    def acquire(cls, store: str) -> _StoreLock:
        path = cls.path_of(store)
        if os.path.realpath(path) in _HELD:  # held by this process (`hold_store`)
            return cls(-1, path)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        for _ in range(10):
            try:
                fd = os.open(path, flags, 0o666)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                continue
            except OSError as error:
                if error.errno == errno.ELOOP:
                    raise UserError(
                        f"The lock file {path!r} of the store {store!r} is a symbolic link: it "
                        "was not followed. Remove it (it is not ours) and run again."
                    ) from None
                if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                    return cls(-1, path)  # a folder we may not write: run unlocked
                raise UserError(f"Cannot create the lock file {path!r}: {error}.") from None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise UserError(
                        f"The lock file {path!r} of the store {store!r} is not a regular "
                        "file: it was left alone. Remove it and run again."
                    )
                _flock(fd, store, _holder(fd))
                try:  # still the file at `path`? (its holder may have removed it meanwhile)
                    same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
                return cls(fd, path)
            os.close(fd)
        raise UserError(_in_use(store))  # pragma: no cover - the lock file keeps changing

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):  # removed while held: nobody can be waiting on it
            if os.path.samestat(os.fstat(self.fd), os.stat(self.path, follow_symlinks=False)):
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = -1


def _holder(fd: int) -> str:
    """Who holds a lock file, as its holder wrote it ("pid host"), for messages."""
    try:
        text = os.pread(fd, 200, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    pid, _, host = text.partition(" ")
    if pid.isdigit() and host and all(c.isalnum() or c in ".-_" for c in host):
        return f"process {pid} on {host}"
    return ""


# Lock files this process holds for a longer work than one open store (`hold_store`).
_HELD: dict[str, _StoreLock] = {}


@contextlib.contextmanager
def hold_store(store: str | os.PathLike):
    """Hold the lock of `store` (`<store>.lock`) for the whole block, for work that opens
    and closes the store several times (a census): other processes are refused from the
    start, and this process's own `Store.create` / `Store.open(..., "a")` go ahead."""
    lock = _StoreLock.acquire(os.fspath(store))
    key = os.path.realpath(lock.path)
    if lock.fd < 0:  # already held here, or no locks on this file system
        yield
        return
    _HELD[key] = lock
    try:
        yield
    finally:
        del _HELD[key]
        lock.release()


def check_not_in_use(store: str | os.PathLike) -> None:
    """Raise the "open in another process" UserError if a process is writing `store` (it
    holds `<store>.lock`), before anything deletes or replaces it (census --overwrite)."""
    lock = _StoreLock.acquire(os.fspath(store))
    lock.release()


def _create_temporary(parent: str, name: str) -> tuple[int, str]:
    """A new file beside the store, under a name nobody can guess, never through a link."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        temporary = os.path.join(parent, f".{name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
    raise UserError(f"Cannot create a temporary file in {parent!r}.")  # pragma: no cover


# --------------------------------------------------------------------------- JSON helpers


def jsonable(value: Any) -> Any:
    """Return ``value`` as plain JSON data: numpy -> Python, tuples -> lists, NaN/inf -> None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return None
        if isinstance(value, np.floating) and value.dtype.itemsize < 8:
            v = float(str(value))  # shortest decimal of a float32: 0.95, not 0.949999988
        return v
    if isinstance(value, (complex, np.complexfloating)):
        return [jsonable(value.real), jsonable(value.imag)]
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return jsonable(value[()])
        if value.dtype.kind == "f" and value.dtype.itemsize < 8:
            return [jsonable(v) for v in value]  # keep float32 decimals short
        return jsonable(value.tolist())
    if isinstance(value, np.generic):  # np.str_, np.bytes_, datetime64, ...
        return jsonable(value.item())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [jsonable(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # array-likes (e.g. tensors converted by the caller)
        return jsonable(value.tolist())
    raise TypeError(f"cannot encode {type(value).__name__} as JSON: {value!r}")


def to_json(value: Any) -> str:
    """Encode ``value`` as JSON text (see :func:`jsonable`); always strict JSON (no NaN)."""
    return json.dumps(jsonable(value), allow_nan=False, sort_keys=False)


def from_json(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return json.loads(text)


def utc_now() -> str:
    """Current time as ISO 8601 UTC with a ``Z`` suffix, e.g. ``2025-01-31T12:00:00.123Z``."""
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


# ------------------------------------------------------------------- attribute helpers


def _json_attr_names(obj) -> list[str]:
    raw = obj.attrs.get(JSON_ATTRS)
    if raw is None:
        return []
    try:
        names = from_json(raw)
    except (ValueError, TypeError):
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


def _set_json_attr_names(obj, names: Iterable[str]) -> None:
    names = sorted(set(names))
    if names:
        obj.attrs[JSON_ATTRS] = to_json(names)
    elif JSON_ATTRS in obj.attrs:
        del obj.attrs[JSON_ATTRS]


def _set_attr(obj, key: str, value: Any, *, as_json: bool | None = None) -> None:
    """Write one attribute. Scalars (str, bool, int, float) are stored natively; anything
    else (or everything, with ``as_json=True``) as JSON text listed in ``json_attrs``."""
    key = str(key)
    if key == JSON_ATTRS:
        raise ValueError(f"attribute name {JSON_ATTRS!r} is reserved by the store")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    native = None
    if not as_json:
        if isinstance(value, (str, np.str_)):
            native = str(value)
        elif isinstance(value, bytes):
            native = value.decode("utf-8", errors="replace")
        elif isinstance(value, (bool, np.bool_)):
            native = np.bool_(value)
        elif isinstance(value, (int, np.integer)):
            iv = int(value)
            if -(2**63) <= iv < 2**63:
                native = np.int64(iv)
        elif isinstance(value, (float, np.floating)):
            native = np.float64(value)
    names = set(_json_attr_names(obj))
    if native is not None:
        obj.attrs[key] = native
        names.discard(key)
    else:
        obj.attrs[key] = to_json(value)
        names.add(key)
    _set_json_attr_names(obj, names)


def _del_attr(obj, key: str) -> None:
    if key in obj.attrs:
        del obj.attrs[key]
    names = _json_attr_names(obj)
    if key in names:
        names.remove(key)
        _set_json_attr_names(obj, names)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return jsonable(value[()])
        if value.dtype.kind in "OS":
            return [_plain(v) for v in value.tolist()]
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _get_attrs(obj) -> dict:
    json_names = set(_json_attr_names(obj))
    out = {}
    for key in obj.attrs.keys():
        if key == JSON_ATTRS:
            continue
        value = _plain(obj.attrs[key])
        if key in json_names and isinstance(value, str):
            try:
                value = from_json(value)
            except ValueError:
                pass
        out[key] = value
    return out


def _get_attr(obj, key: str, default: Any = None) -> Any:
    if key not in obj.attrs:
        return default
    value = _plain(obj.attrs[key])
    if key in _json_attr_names(obj) and isinstance(value, str):
        try:
            return from_json(value)
        except ValueError:
            raise UserError(
                f"The attribute {key!r} of {obj.name!r} in the store {obj.file.filename!r} is "
                "not valid JSON: the store is damaged (edited or partly overwritten). Rerun the "
                "probe into a new store (--out) to get it back."
            ) from None
    return value


def refuse_existing(path: str) -> None:
    """The one answer to "write a new store where one exists" without --resume/--overwrite."""
    raise UserError(
        f"The store {str(path)!r} already exists. Use --resume to continue the work in it, "
        "--overwrite to replace it, or another --out."
    )


@contextlib.contextmanager
def reading(path: str):
    """Turn what h5py raises on a damaged file (garbled or truncated data) into one clear
    UserError, for the commands that read a store back (show, plot, export)."""
    try:
        yield
    except UserError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError) as error:
        text = str(error).strip()
        first = text.splitlines()[0][:200] if text else type(error).__name__
        raise UserError(
            f"The store {path!r} is damaged and cannot be read back ({first}): it was cut, "
            "edited or overwritten while being written. Rerun the probe into a new store "
            "(--out); a run that was merely interrupted resumes with --resume instead."
        ) from None


# ---------------------------------------------------------------------- name helpers


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise UserError(f"A {what} name must be a non-empty string, got {name!r}.")
    if "/" in name or name in (".", ".."):
        raise UserError(
            f"Invalid {what} name {name!r}: names of {what}s in a keras-landscape store "
            "cannot contain '/' or be '.' or '..'; use letters, digits, '_', '-' and '.'."
        )
    return name


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"a run dataset key must be a non-empty string, got {key!r}")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"invalid run dataset key {key!r}: use a relative path like 'beads' or "
            "'pair_0/level_0.3/beads' (no leading '/', no empty, '.' or '..' parts)"
        )
    return key


def _chunks_for(row_shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunk shape for a dataset of rows of ``row_shape``: whole rows where a row fits in
    1 MiB (so appending and reading a row touch few chunks), at most 64 rows and about
    64 KiB per chunk, so that the many short datasets of a store (a few beads, a level per
    bead) do not each allocate a large chunk."""
    dims = [max(1, int(d)) for d in row_shape]
    row_bytes = max(1, itemsize) * int(np.prod(dims, dtype=np.int64))
    if row_bytes <= _CHUNK_BYTES:
        rows = int(max(1, min(_CHUNK_ROWS, _SMALL_CHUNK_BYTES // row_bytes)))
        return (rows, *dims)
    # One row is bigger than the target: split its leading dimensions.
    budget = max(1, _CHUNK_BYTES // max(1, itemsize))
    out = []
    for i, d in enumerate(dims):
        rest = int(np.prod(dims[i + 1 :], dtype=np.int64)) if i + 1 < len(dims) else 1
        if rest >= budget:
            out.append(1)
            continue
        out.append(int(max(1, min(d, budget // rest))))
        budget = max(1, budget // max(1, out[-1]))
    return (1, *out)


def _h5_dtype(arr: np.ndarray):
    if arr.dtype.kind in "UO":
        return _STR
    return arr.dtype


def _as_array(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind == "U":
        arr = arr.astype(object)
    return arr


# ----------------------------------------------------------------------------- Store


def _write_header(f: h5py.File, versions: Mapping[str, str], command: str) -> None:
    """A new store's root attributes and groups (see `Store.create`)."""
    pkg_version = __version__
    attrs = {
        "package_version": pkg_version,
        "keras_version": "unknown",
        "tensorflow_version": "none",
        "backend": "unknown",
    }
    aliases = {
        "package": "package_version",
        "keras_landscape": "package_version",
        "keras": "keras_version",
        "tensorflow": "tensorflow_version",
        "tf": "tensorflow_version",
    }
    for key, value in dict(versions or {}).items():
        key = aliases.get(str(key), str(key))
        attrs[key] = "none" if value is None else str(value)
    attrs.setdefault("h5py_version", h5py.__version__)
    attrs.setdefault("numpy_version", np.__version__)
    now = utc_now()
    f.attrs["format"] = FORMAT_NAME
    f.attrs["format_version"] = np.int64(FORMAT_VERSION)
    for key, value in attrs.items():
        _set_attr(f, key, value)
    f.attrs["command"] = str(command)
    f.attrs["created"] = now
    f.attrs["updated"] = now
    f.require_group("models")
    f.require_group("runs")


class Store:
    """One keras-landscape HDF5 file. Create with :meth:`create`, open with :meth:`open`."""

    def __init__(
        self,
        h5: h5py.File,
        path: str,
        mode: str,
        *,
        backing: _CommittedFile | None = None,
        lock: _StoreLock | None = None,
    ):
        self._f = h5
        self.path = path
        self.mode = mode
        self._backing = backing  # the file under a writable store on disk (commits)
        self._lock = lock
        #: the StoreWriteError that ended writing (disk full); the file keeps its last commit
        self.failure: StoreWriteError | None = None

    # ----------------------------------------------------------------- opening/closing

    @classmethod
    @_whole
    def create(
        cls,
        path: str | os.PathLike,
        *,
        versions: Mapping[str, str],
        command: str,
        overwrite: bool = False,
    ) -> Store:
        """Create a new store at ``path`` (parent directories made as needed).

        ``versions`` gives the root attributes ``package_version``, ``keras_version``,
        ``tensorflow_version`` and ``backend``; the short keys ``package``, ``keras``,
        ``tensorflow`` (and ``keras_landscape``) are accepted too. Missing ones default to
        this package's version, ``"unknown"``, ``"none"`` and ``"unknown"``. Extra keys are
        stored as extra root attributes.
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            raise UserError(
                f"Cannot create the store {path!r}: it is a directory. Give a file path such as "
                "run.h5."
            )
        exists = os.path.lexists(path)
        if exists and not overwrite:
            refuse_existing(path)
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise UserError(f"Cannot create the store {path!r}: {exc}.") from exc
        # The new store is written beside the target and moved into place whole: an
        # existing store is replaced only while we hold its lock (no run is writing it),
        # and nothing is truncated in place. The temporary file has a random name and is
        # created new (O_EXCL, O_NOFOLLOW): a link planted beside the store is never
        # followed.
        lock = _StoreLock.acquire(path)
        try:
            claim = _claim_for_replacement(path) if exists else None
        except BaseException:
            lock.release()
            raise
        try:
            fd, temporary = _create_temporary(parent, os.path.basename(path))
        except OSError as exc:
            _release(claim)
            lock.release()
            raise UserError(f"Cannot create the store {path!r}: {exc}.") from exc
        backing, f = _CommittedFile(fd, path), None
        try:
            _lock_store_file(fd, path)
            f = h5py.File(backing, "w")
            _write_header(f, versions, command)
            f.flush()
            backing.commit()
            _move_into_place(temporary, path, replace=exists)
        except BaseException as error:
            backing.failed = True  # what HDF5 writes while closing stays in memory
            if f is not None:
                with contextlib.suppress(Exception):
                    f.close()
            backing.close()
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            lock.release()
            if isinstance(error, OSError):
                raise StoreWriteError(path, error, creating=True) from None
            raise
        finally:
            _release(claim)
        return cls(f, path, "a", backing=backing, lock=lock)

    @classmethod
    def scratch(
        cls,
        path: str | os.PathLike,
        *,
        copy_of: str | os.PathLike | None = None,
        versions: Mapping[str, str] | None = None,
        command: str = "",
    ) -> Store:
        """A store held in memory only, never written to disk: the store of a process that
        computes but does not write (the other processes of a multiworker run). It starts
        as a copy of the store at `copy_of` (a resumed run), else empty; `path` is the
        writer's path, for messages."""
        if copy_of is not None:
            image = io.BytesIO(Path(copy_of).read_bytes())
            return cls(h5py.File(image, "r+"), os.fspath(path), "a")
        f = h5py.File(io.BytesIO(), "w")
        _write_header(f, versions or {}, command)
        return cls(f, os.fspath(path), "a")

    @classmethod
    @_whole
    def open(cls, path: str | os.PathLike, mode: str = "r") -> Store:
        """Open an existing store for reading (``"r"``) or appending (``"a"``)."""
        if mode not in ("r", "a"):
            raise ValueError(f"Store.open mode must be 'r' or 'a', got {mode!r}")
        path = os.fspath(path)
        if not os.path.exists(path):
            raise UserError(
                f"The store {path!r} does not exist. Give the path of an HDF5 file written by "
                "keras-landscape (klandscape probe ... --out FILE.h5)."
            )
        if os.path.isdir(path):
            raise UserError(f"The store {path!r} is a directory, not a keras-landscape HDF5 file.")
        if not _is_hdf5(path):
            raise UserError(
                f"The file {path!r} is not an HDF5 file, so it cannot be a keras-landscape "
                "store. Give the .h5 file that klandscape wrote (--out)."
            )
        backing = lock = None
        try:
            if mode == "r":
                f = h5py.File(path, mode)
            else:  # a writer: our lock, then the file through commits (see _CommittedFile)
                lock = _StoreLock.acquire(path)
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                backing = _CommittedFile(fd, path)
                _lock_store_file(fd, path)
                f = h5py.File(backing, "r+")
        except BaseException as exc:
            if backing is not None:
                backing.close()
            if lock is not None:
                lock.release()
            if not isinstance(exc, OSError):
                raise
            text = str(exc)
            if _locked(text):
                raise UserError(_in_use(path)) from None
            if "truncated file" in text:
                raise UserError(
                    f"The store {path!r} is truncated (the file is shorter than its own header "
                    "says): it was cut while being copied or written, and cannot be read. Rerun "
                    "the probe into a new store (--out)."
                ) from None
            if exc.errno:  # from the operating system: permissions, ...
                reason = exc.strerror or str(exc)
                raise UserError(
                    f"Cannot open the store {path!r} (mode {mode!r}): {reason}."
                ) from None
            first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
            raise UserError(
                f"The store {path!r} is damaged and cannot be opened ({first}): it was cut, "
                "edited or overwritten while being written. Rerun the probe into a new store "
                "(--out)."
            ) from None
        store = cls(f, path, mode, backing=backing, lock=lock)
        fmt = _plain(f.attrs.get("format"))
        if fmt != FORMAT_NAME:
            store._let_go()
            raise UserError(
                f"The file {path!r} is an HDF5 file but not a keras-landscape store: its root "
                f"attribute 'format' is {fmt!r}, expected {FORMAT_NAME!r}. A Keras model file "
                "(.h5/.keras) is a model input, not a store; give the file klandscape wrote with "
                "--out."
            )
        version = _plain(f.attrs.get("format_version"))
        if not isinstance(version, int) or isinstance(version, bool):
            store._let_go()
            raise UserError(
                f"The store {path!r} has no valid 'format_version' attribute (got {version!r}); "
                "the file is damaged or was not written by keras-landscape."
            )
        if version != FORMAT_VERSION:
            store._let_go()
            newer = "a newer" if version > FORMAT_VERSION else "an older"
            raise UserError(
                f"The store {path!r} uses keras-landscape format version {version}, written by "
                f"{newer} keras-landscape; this version reads format version {FORMAT_VERSION} "
                "only. Use the matching keras-landscape version, or rerun to write a new store."
            )
        return store

    @_whole
    def close(self) -> None:
        """Flush, commit and close; a store that failed (`failure`) just lets go of its file
        (which holds its last commit) and its lock."""
        try:
            if self.failure is None and self._f is not None and self._f.id.valid:
                if self.mode != "r":
                    self._f.flush()
                    self._commit()
                self._f.close()
                self._commit()  # what HDF5 writes on closing
        finally:
            if self._backing is not None:
                self._backing.close()
            if self._lock is not None:
                self._lock.release()

    def _let_go(self) -> None:
        """Close without writing anything more (a file that turned out not to be a store)."""
        if self._backing is not None:
            self._backing.failed = True  # HDF5's closing writes stay in memory
        try:
            with contextlib.suppress(Exception):
                self._f.close()
        finally:
            if self._backing is not None:
                self._backing.close()
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<Store {self.path!r} mode={self.mode!r} {state}>"

    @property
    def is_open(self) -> bool:
        return self._f is not None and bool(self._f.id.valid)

    @property
    def h5(self) -> h5py.File:
        """The underlying h5py file (for readers that want raw access)."""
        return self._f

    @_whole
    def flush(self) -> None:
        if self.mode != "r" and self.is_open:
            self._f.flush()
            self._commit()

    def _touch(self, flush: bool = True) -> None:
        """Record the modification time, flush and commit (after every mutation, unless the
        writer commits at its own points: then both wait for the commit's write)."""
        if flush:
            self._f.attrs["updated"] = utc_now()
            self._f.flush()
            self._commit()

    def _commit(self) -> None:
        """Make the flushed state the file's committed state (see `_CommittedFile`). If the
        disk is full, the file keeps the previous commit, the store stops writing and a
        StoreWriteError (exit code 2) says so."""
        if self._backing is None:
            return
        try:
            self._backing.commit()
        except OSError as error:
            self.failure = StoreWriteError(self.path, error)
            with contextlib.suppress(Exception):  # HDF5's last writes stay in memory
                self._f.close()
            self._backing.close()
            if self._lock is not None:
                self._lock.release()
            raise self.failure from None

    def _writable(self) -> None:
        if self.failure is not None:
            raise self.failure
        if not self.is_open:
            raise ValueError(f"the store {self.path!r} is closed")
        if self.mode == "r":
            raise ValueError(
                f"the store {self.path!r} is open read-only; open it with mode 'a' to write"
            )

    # --------------------------------------------------------------------- root info

    @_whole
    def attrs(self) -> dict:
        """Root attributes (format, versions, command, created, updated), decoded."""
        return _get_attrs(self._f)

    # ------------------------------------------------------------------------ layout

    @_whole
    def write_layout(
        self,
        paths: Sequence[str],
        shapes: Sequence[Sequence[int]],
        offsets: Sequence[int],
        size: int,
        model_config: str = "",
        non_trainable_paths: Sequence[str] = (),
    ) -> None:
        """Write (or replace) ``/layout``: how theta is cut into the trainable variables."""
        self._writable()
        paths = [str(p) for p in paths]
        shapes = [[int(d) for d in s] for s in shapes]
        offsets = [int(o) for o in np.asarray(offsets, dtype=np.int64).reshape(-1)]
        size = int(size)
        if not (len(paths) == len(shapes) == len(offsets)):
            raise ValueError(
                f"layout: {len(paths)} paths, {len(shapes)} shapes and {len(offsets)} offsets; "
                "they must have one entry per trainable variable"
            )
        counts = [int(np.prod(s, dtype=np.int64)) for s in shapes]
        if sum(counts) != size:
            raise ValueError(f"layout: the shapes hold {sum(counts)} values but size is {size}")
        for p, o, c in zip(paths, offsets, counts):
            if o < 0 or o + c > size:
                raise ValueError(
                    f"layout: variable {p!r} at offset {o} with {c} values exceeds size {size}"
                )
        if "layout" in self._f:
            del self._f["layout"]
        g = self._f.create_group("layout")
        g.create_dataset("paths", data=np.array(paths, dtype=object), dtype=_STR)
        g.create_dataset("offsets", data=np.array(offsets, dtype=np.int64), dtype=np.int64)
        g.attrs["size"] = np.int64(size)
        _set_attr(g, "shapes", shapes, as_json=True)
        g.attrs["model_config"] = "" if model_config is None else str(model_config)
        _set_attr(g, "non_trainable_paths", [str(p) for p in non_trainable_paths], as_json=True)
        self._touch()

    @_whole
    def has_layout(self) -> bool:
        return "layout" in self._f

    @_whole
    def read_layout(self) -> dict:
        """``{"paths", "shapes" (list of tuples), "offsets", "size", "model_config",
        "non_trainable_paths"}``."""
        if "layout" not in self._f:
            raise UserError(
                f"The store {self.path!r} has no /layout group: no model was recorded in it, "
                "so its parameter vectors cannot be mapped back to model weights."
            )
        g = self._f["layout"]
        return {
            "paths": [str(p) for p in g["paths"].asstr()[()]],
            "shapes": [tuple(int(d) for d in s) for s in _get_attr(g, "shapes", [])],
            "offsets": [int(o) for o in g["offsets"][()]],
            "size": int(_plain(g.attrs["size"])),
            "model_config": str(_get_attr(g, "model_config", "") or ""),
            "non_trainable_paths": [str(p) for p in _get_attr(g, "non_trainable_paths", [])],
        }

    def split_theta(self, theta) -> list[np.ndarray]:
        """Cut a flat theta into one array per trainable variable, in layout order."""
        layout = self.read_layout()
        theta = np.asarray(theta).reshape(-1)
        if theta.size != layout["size"]:
            raise ValueError(f"theta has {theta.size} values, the layout says {layout['size']}")
        return split_flat(theta, [tuple(s) for s in layout["shapes"]])

    # -------------------------------------------------------------------------- data

    @_whole
    def write_data_info(self, info: Mapping[str, Any]) -> None:
        """Write (replace) the attributes of ``/data``: spec, description, loss, level_fn,
        split, and any other keys given. Non-scalar values are stored as JSON."""
        self._writable()
        if "data" in self._f:
            del self._f["data"]
        g = self._f.create_group("data")
        for key, value in dict(info).items():
            _set_attr(g, str(key), value)
        self._touch()

    @_whole
    def read_data_info(self) -> dict:
        if "data" not in self._f:
            return {}
        return _get_attrs(self._f["data"])

    # ------------------------------------------------------------------------ models

    @_whole
    def add_model(
        self,
        name: str,
        theta,
        *,
        source: str,
        role: str = "input",
        non_trainable: Sequence[Any] | Mapping[str, Any] = (),
        **attrs: Any,
    ) -> None:
        """Write ``/models/<name>`` (replacing it if it exists).

        ``non_trainable`` is either a sequence of arrays in the order of the layout's
        ``non_trainable_paths`` or a mapping path -> array.
        """
        self._writable()
        _check_name(name, "model")
        theta = np.asarray(theta, dtype=np.float32).reshape(-1)
        if "layout" in self._f:
            size = int(_plain(self._f["layout"].attrs["size"]))
            if theta.size != size:
                raise ValueError(
                    f"model {name!r}: theta has {theta.size} values, the layout says {size}"
                )
        if isinstance(non_trainable, Mapping):
            nt_items = [(str(p), v) for p, v in non_trainable.items()]
        else:
            values = list(non_trainable)
            known = []
            if "layout" in self._f:
                known = [str(p) for p in _get_attr(self._f["layout"], "non_trainable_paths", [])]
            if len(known) != len(values):
                known = [""] * len(values)
            nt_items = list(zip(known, values))
        models = self._f.require_group("models")
        if name in models:
            del models[name]
        g = models.create_group(name)
        g.create_dataset("theta", data=theta, dtype=np.float32)
        if nt_items:
            ng = g.create_group("non_trainable")
            for i, (p, v) in enumerate(nt_items):
                arr = _as_array(v)
                ds = ng.create_dataset(str(i), data=arr, dtype=_h5_dtype(arr))
                ds.attrs["path"] = p
        g.attrs["source"] = str(source)
        g.attrs["role"] = str(role)
        for key, value in attrs.items():
            _set_attr(g, key, value)
        self._touch()

    @_whole
    def has_model(self, name: str) -> bool:
        return "models" in self._f and name in self._f["models"]

    @_whole
    def model_names(self) -> list[str]:
        if "models" not in self._f:
            return []
        return list(self._f["models"].keys())

    @_whole
    def read_model(self, name: str) -> dict:
        """``{"theta": (P,) float32, "non_trainable": [arrays], "non_trainable_paths": [str],
        "attrs": {source, role, ...}}``."""
        if not self.has_model(name):
            names = ", ".join(self.model_names()) or "none"
            raise UserError(
                f"The store {self.path!r} has no model {name!r}; models in it: {names}."
            )
        g = self._f["models"][name]
        nt, nt_paths = [], []
        if "non_trainable" in g:
            ng = g["non_trainable"]
            for key in sorted(ng.keys(), key=lambda k: int(k) if k.isdigit() else k):
                ds = ng[key]
                nt.append(ds.asstr()[()] if h5py.check_string_dtype(ds.dtype) else ds[()])
                nt_paths.append(str(_plain(ds.attrs.get("path", ""))))
        return {
            "theta": np.asarray(g["theta"][()], dtype=np.float32),
            "non_trainable": nt,
            "non_trainable_paths": nt_paths,
            "attrs": _get_attrs(g),
        }

    # -------------------------------------------------------------------------- runs

    @_whole
    def run_names(self) -> list[str]:
        if "runs" not in self._f:
            return []
        return list(self._f["runs"].keys())

    @_whole
    def has_run(self, name: str) -> bool:
        return "runs" in self._f and name in self._f["runs"]

    @_whole
    def run(self, name: str) -> RunRecord:
        if not self.has_run(name):
            names = ", ".join(self.run_names()) or "none"
            raise UserError(f"The store {self.path!r} has no run {name!r}; runs in it: {names}.")
        return RunRecord(self, self._f["runs"][name])

    @_whole
    def begin_run(
        self,
        name: str,
        probe: str,
        config: Mapping[str, Any],
        seed: int | None = None,
        resume: bool = False,
    ) -> RunRecord:
        """Start run ``name`` (status ``running``). If it exists: with ``resume=True`` it is
        returned with status set back to ``running`` (``RunRecord.previous_status`` tells what it
        was, its datasets are kept); otherwise a UserError."""
        self._writable()
        _check_name(name, "run")
        runs = self._f.require_group("runs")
        if name in runs:
            g = runs[name]
            previous = _get_attr(g, "status", "")
            if not resume:
                raise UserError(
                    f"The store {self.path!r} already has a run {name!r} (status {previous}). "
                    "Resume it, choose another run name, or write to a new file."
                )
            old_probe = _get_attr(g, "probe", "")
            if old_probe != probe:
                raise UserError(
                    f"Cannot resume run {name!r} in {self.path!r} with probe {probe!r}: it was "
                    f"started by probe {old_probe!r}. Choose another run name."
                )
            g.attrs["status"] = "running"
            g.attrs["finished"] = ""
            _del_attr(g, "error")
            g.attrs["resumed"] = np.int64(int(_get_attr(g, "resumed", 0) or 0) + 1)
            g.attrs["resumed_at"] = utc_now()
            self._touch()
            run = RunRecord(self, g)
            run.previous_status = previous
            return run
        g = runs.create_group(name)
        g.attrs["probe"] = str(probe)
        _set_attr(g, "config", dict(config or {}), as_json=True)
        g.attrs["status"] = "running"
        g.attrs["started"] = utc_now()
        g.attrs["finished"] = ""
        if seed is not None:
            _set_attr(g, "seed", seed)
        self._touch()
        run = RunRecord(self, g)
        run.previous_status = None
        return run


# ------------------------------------------------------------------------------- RunRecord


class RunRecord:
    """One probe run: ``/runs/<name>`` with its attributes and datasets."""

    def __init__(self, store: Store, group: h5py.Group):
        self.store = store
        self._g = group
        self.name = group.name.rsplit("/", 1)[-1]
        #: status before ``begin_run(..., resume=True)`` reset it (None for a new run).
        self.previous_status: str | None = None

    def __repr__(self) -> str:
        return f"<RunRecord {self.name!r} probe={self.probe!r} status={self.status!r}>"

    # ------------------------------------------------------------------- attributes

    @property
    @_whole
    def probe(self) -> str:
        return str(_get_attr(self._g, "probe", ""))

    @property
    @_whole
    def config(self) -> dict:
        return _get_attr(self._g, "config", {}) or {}

    @property
    @_whole
    def status(self) -> str:
        return str(_get_attr(self._g, "status", ""))

    @property
    @_whole
    def seed(self):
        return _get_attr(self._g, "seed", None)

    @property
    @_whole
    def result(self) -> dict | None:
        return _get_attr(self._g, "result", None)

    @property
    @_whole
    def error(self) -> str | None:
        return _get_attr(self._g, "error", None)

    def _obj(self, key: str | None, create: bool = False):
        if key is None:
            return self._g
        _check_key(key)
        if key in self._g:
            return self._g[key]
        if create:
            return self._g.require_group(key)
        raise KeyError(f"run {self.name!r} has no dataset or group {key!r}")

    @_whole
    def set_attrs(self, key: str | None = None, **attrs: Any) -> None:
        """Set attributes on the run group (``key=None``) or on a dataset/subgroup (created
        as a group if missing). Non-scalar values are stored as JSON."""
        self.store._writable()
        obj = self._obj(key, create=True)
        for k, v in attrs.items():
            _set_attr(obj, k, v)
        self.store._touch()

    @_whole
    def get_attrs(self, key: str | None = None) -> dict:
        return _get_attrs(self._obj(key))

    @_whole
    def complete(self, result: Mapping[str, Any]) -> None:
        self.store._writable()
        _set_attr(self._g, "result", result, as_json=True)
        _del_attr(self._g, "error")
        self._g.attrs["status"] = "complete"
        self._g.attrs["finished"] = utc_now()
        self.store._touch()

    @_whole
    def fail(self, message: str, status: str = "failed") -> None:
        """Record that the run stopped; nothing where the store itself could not be written
        (disk full): the run then stays as of the store's last commit, resumable."""
        if status not in ("failed", "interrupted"):
            raise ValueError(
                f"RunRecord.fail status must be 'failed' or 'interrupted', got {status!r}"
            )
        if self.store.failure is not None:
            return
        self.store._writable()
        self._g.attrs["status"] = status
        self._g.attrs["error"] = str(message)
        self._g.attrs["finished"] = utc_now()
        self.store._touch()

    # --------------------------------------------------------------------- datasets

    @_whole
    def has(self, key: str) -> bool:
        _check_key(key)
        return key in self._g and isinstance(self._g[key], h5py.Dataset)

    def _dataset(self, key: str) -> h5py.Dataset:
        _check_key(key)
        obj = self._g.get(key)
        if not isinstance(obj, h5py.Dataset):
            keys = ", ".join(self.keys()) or "none"
            raise KeyError(f"run {self.name!r} has no dataset {key!r}; datasets: {keys}")
        return obj

    @_whole
    def length(self, key: str) -> int:
        """Number of rows of dataset ``key`` (0 if it does not exist yet)."""
        if not self.has(key):
            return 0
        ds = self._g[key]
        return int(ds.shape[0]) if ds.ndim else 1

    @_whole
    def keys(self) -> list[str]:
        """All datasets of the run, recursively, as path-like keys relative to the run."""
        out: list[str] = []

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out.append(name)

        self._g.visititems(visit)
        return sorted(out)

    @_whole
    def read(self, key: str) -> np.ndarray:
        ds = self._dataset(key)
        if h5py.check_string_dtype(ds.dtype):
            return np.asarray(ds.asstr()[()], dtype=object)
        return ds[()]

    @_whole
    def write(self, key: str, array) -> None:
        """Write dataset ``key`` whole (replacing it). Arrays with at least one dimension are
        stored resizable and chunked, so rows can be appended later."""
        self.write_many({key: array})

    @_whole
    def write_many(self, arrays: Mapping[str, Any]) -> None:
        """Write each dataset of `arrays` whole (see `write`) under one commit: a reader or a
        resumed run sees all of them or none (e.g. a grid row and its `done` mask)."""
        self.store._writable()
        for key, array in arrays.items():
            self._replace(key, array)
        self.store._touch()

    def _replace(self, key: str, array) -> None:
        arr = _as_array(array)
        if key in self._g:
            del self._g[key]
        dtype = _h5_dtype(arr)
        if arr.ndim == 0:
            self._g.create_dataset(key, data=arr, dtype=dtype)
        else:
            itemsize = 8 if dtype is _STR else arr.dtype.itemsize
            maxshape = (None, *(None if d == 0 else d for d in arr.shape[1:]))
            self._g.create_dataset(
                key,
                data=arr,
                dtype=dtype,
                maxshape=maxshape,
                chunks=_chunks_for(arr.shape[1:], itemsize),
            )

    @_whole
    def append(self, key: str, row, flush: bool = True) -> int:
        """Append one row to dataset ``key`` (created on first use from the row's shape and
        dtype, resizable and chunked), flush (unless `flush` is False: rows that count only
        once a later write commits them), and return the new number of rows."""
        arr = _as_array(row)
        return self.extend(key, arr.reshape((1, *arr.shape)), flush)

    @_whole
    def extend(self, key: str, rows, flush: bool = True) -> int:
        """Append the rows of ``rows`` (first axis) to dataset ``key`` in one write (see
        `append`); returns the new number of rows."""
        self.store._writable()
        _check_key(key)
        rows = _as_array(rows)
        arr = rows[0] if len(rows) else rows.reshape(rows.shape[1:])
        ds = self._g.get(key)
        if ds is None:
            dtype = _h5_dtype(arr)
            itemsize = 8 if dtype is _STR else arr.dtype.itemsize
            ds = self._g.create_dataset(
                key,
                shape=(0, *arr.shape),
                dtype=dtype,
                maxshape=(None, *(None if d == 0 else d for d in arr.shape)),
                chunks=_chunks_for(arr.shape, itemsize),
            )
        if not isinstance(ds, h5py.Dataset):
            raise ValueError(f"run {self.name!r}: {key!r} is a group, not a dataset")
        if ds.ndim == 0 or ds.maxshape[0] is not None:
            raise ValueError(f"run {self.name!r}: dataset {key!r} is not resizable along rows")
        if tuple(ds.shape[1:]) != tuple(rows.shape[1:]):
            raise ValueError(
                f"run {self.name!r}: cannot append a row of shape {tuple(rows.shape[1:])} to "
                f"dataset {key!r} whose rows have shape {tuple(ds.shape[1:])}"
            )
        n = int(ds.shape[0])
        ds.resize(n + len(rows), axis=0)
        ds[n:] = rows
        self.store._touch(flush)
        return n + len(rows)

    @_whole
    def truncate(self, key: str, n: int) -> None:
        """Keep the first ``n`` rows of dataset ``key`` (e.g. to drop a partial step before
        resuming)."""
        self.store._writable()
        ds = self._dataset(key)
        n = int(n)
        if ds.ndim == 0 or ds.maxshape[0] is not None:
            raise ValueError(f"run {self.name!r}: dataset {key!r} is not resizable along rows")
        if n < 0 or n > ds.shape[0]:
            raise ValueError(
                f"run {self.name!r}: cannot truncate {key!r} of {ds.shape[0]} rows to {n}"
            )
        if n != ds.shape[0]:
            ds.resize(n, axis=0)
        self.store._touch()

    @_whole
    def delete(self, key: str) -> None:
        """Remove a dataset or subgroup of the run (no-op if missing)."""
        self.store._writable()
        _check_key(key)
        if key in self._g:
            del self._g[key]
            self.store._touch()


__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "JSON_ATTRS",
    "RUN_STATUSES",
    "RunRecord",
    "Store",
    "StoreWriteError",
    "check_not_in_use",
    "from_json",
    "hold_store",
    "refuse_existing",
    "jsonable",
    "to_json",
    "utc_now",
]
