"""Data specs: short strings that name a dataset, loaded into numpy arrays.

Grammar: ``KIND[:POSITIONAL...][:key=val,key=val]``. The spec is split on ``:`` (except
inside ``[...]``, so that TFDS slices such as ``train[:80%]`` survive); a token containing
``=`` is a comma-separated option list, any other token is positional. Examples::

    digits                      npz:/data/mnist.npz:limit=5000
    cubic:n=10000               idx:/data/mnist
    teacher:d=10,h=4,n=2000     text:/data/ptb.zip:seq=35
    tfds:mnist:test             tfds:mnist:train[:10%]:download=1

Every kind accepts ``limit=N`` (keep N train and N test samples, a fixed-seed random subset
in the original order, so class-sorted files stay balanced); the
synthetic kinds (``cubic``, ``quadratic``, ``teacher``) also take ``seed=``, which defaults
to the ``seed`` argument of `load_data`. docs/data-specs.md has the full reference table.

All inputs come back as float32 (uint8 images scaled to [0, 1]) except token ids, which are
int32 like class labels; regression targets are float32 of shape (n, outputs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import math
import re
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_landscape.errors import UserError
from keras_landscape.values import BadValue, parse_pairs, to_bool

__all__ = [
    "KINDS",
    "Dataset",
    "Kind",
    "Teacher",
    "adapt_to_model",
    "load_data",
    "parse_spec",
    "read_idx",
]


@dataclass
class Dataset:
    """Arrays of one data spec, ready for a Keras model.

    Attributes:
        spec: The spec string the data were loaded from.
        x_train: Training inputs, float32 (int32 token ids for "sequence").
        y_train: Training targets: int32 labels, float32 (n, k) regression targets, or
            int32 next-token ids of shape (n, T).
        x_test: Test inputs, or None when the source has no test split.
        y_test: Test targets, or None when the source has no test split.
        task: "classification", "regression" or "sequence".
        num_classes: Number of classes (vocabulary size for "sequence"); None for regression.
        description: One human-readable line: source, sizes, shapes.
    """

    spec: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    task: str
    num_classes: int | None
    description: str

    def has_split(self, name: str) -> bool:
        """Whether the split "train" or "test" is present (any other name: False)."""
        if name == "train":
            return True
        return name == "test" and self.x_test is not None

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Returns (x, y) of the split "train" or "test".

        Raises:
            UserError: The name is not a split, or the source has no test split.
        """
        if name not in ("train", "test"):
            raise UserError(f"Unknown data split {name!r}: the splits are 'train' and 'test'.")
        if not self.has_split(name):
            raise UserError(
                f"The data spec {self.spec!r} has no test split ({self.description}). "
                "Evaluate on 'train', or use a source with a test set, such as an npz file "
                "with x_test/y_test or tfds:NAME without an explicit split."
            )
        if name == "train":
            return self.x_train, self.y_train
        return self.x_test, self.y_test


def parse_spec(spec: str) -> tuple[str, list[str], dict[str, str]]:
    """Splits a data spec into (kind, positionals, options) without validating them.

    Args:
        spec: A string such as ``"npz:/data/mnist.npz:limit=5000"``.

    Returns:
        The lower-cased kind, the positional tokens and the options as strings.

    Raises:
        UserError: The spec is empty, an option lacks ``=`` or a key is given twice.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(
            f"Empty data spec {spec!r}: expected KIND[:POSITIONAL...][:key=val,...], "
            f"with KIND one of {', '.join(KINDS)} (e.g. 'digits' or 'npz:/data/mnist.npz')."
        )
    # A ':' followed by ']' before any '[' sits inside a slice such as train[:80%].
    tokens = [t.strip() for t in re.split(r":(?![^\[]*\])", spec.strip())]
    positionals: list[str] = []
    options: dict[str, str] = {}
    for token in tokens[1:]:
        if "=" not in token:
            if token:
                positionals.append(token)
            continue
        options.update(
            parse_pairs(
                token, "option", example="'teacher:d=10,h=4,n=2000'", within=spec, taken=options
            )
        )
    return tokens[0].lower(), positionals, options


class _Options:
    """Typed access to a spec's options, with errors that name the option and the spec."""

    def __init__(self, spec: str, values: dict[str, str]):
        self.spec = spec
        self.values = values

    def get_int(self, key: str, default: int | None, minimum: int = 0) -> int | None:
        if key not in self.values:
            return default
        try:
            value = int(self.values[key])
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise UserError(
                f"Option {key}={self.values[key]!r} in data spec {self.spec!r} must be an "
                f"integer >= {minimum}."
            )
        return value

    def get_float(self, key: str, default: float) -> float:
        try:
            value = float(self.values.get(key, default))
        except ValueError:
            value = -1.0
        if not (math.isfinite(value) and value >= 0):
            raise UserError(
                f"Option {key}={self.values[key]!r} in data spec {self.spec!r} must be a "
                "finite number >= 0."
            )
        return value

    def get_str(self, key: str, default: str | None) -> str | None:
        return self.values.get(key, default)

    def get_bool(self, key: str, default: bool) -> bool:
        """The one boolean rule (keras_landscape.values): 1/0, true/false, yes/no."""
        try:
            return to_bool(self.values.get(key, default))
        except BadValue as error:
            raise UserError(
                f"Option {key}={self.values[key]!r} in data spec {self.spec!r} must be "
                f"{error.expected}."
            ) from None


# ---------------------------------------------------------------------------- arrays


def _inputs(x: np.ndarray) -> np.ndarray:
    """float32 inputs; uint8 is taken to be pixels and scaled to [0, 1]."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255)
    return x.astype(np.float32)


def _supervised(
    spec: str,
    source: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    num_classes: int | None = None,
) -> Dataset:
    """Types arrays of a file source and infers the task from the targets' dtype and shape."""
    pairs = [(x_train, y_train)] + ([(x_test, y_test)] if x_test is not None else [])
    for name, array in (("x", x_train), ("y", y_train), ("x_test", x_test), ("y_test", y_test)):
        if array is not None and array.dtype.kind not in "biuf":
            raise UserError(
                f"Data spec {spec!r}: {name} has dtype {array.dtype} ({source}), but inputs "
                "and targets must be numbers (integers, floats or booleans); encode text or "
                "categories as numbers (e.g. class indices) before saving."
            )
    if x_test is not None and x_test.shape[1:] != x_train.shape[1:]:
        raise UserError(
            f"Data spec {spec!r}: the test inputs have per-sample shape {x_test.shape[1:]} "
            f"but the training inputs {x_train.shape[1:]} ({source}); both splits must hold "
            "samples of one shape. Save x_test with the features of x_train."
        )
    for x, y in pairs:
        if len(x) != len(y) or len(x) == 0:
            raise UserError(
                f"Data spec {spec!r}: inputs and targets must be non-empty with one target "
                f"per sample, got x of shape {x.shape} and y of shape {y.shape} ({source})."
            )
    ys = [y for _, y in pairs]
    if all(np.issubdtype(y.dtype, np.floating) for y in ys):
        ys = [
            y.astype(np.float32).reshape(len(y), -1) if y.ndim == 1 else y.astype(np.float32)
            for y in ys
        ]
        xs, task, num_classes = [_inputs(x) for x, _ in pairs], "regression", None
    elif all(np.issubdtype(y.dtype, np.integer) or y.dtype == bool for y in ys):
        if min(int(y.min()) for y in ys) < 0:
            raise UserError(f"Data spec {spec!r}: class labels must be >= 0 ({source}).")
        if all(y.ndim == 1 or y.shape[1:] == (1,) for y in ys):
            ys, task = [y.reshape(len(y)).astype(np.int32) for y in ys], "classification"
            xs = [_inputs(x) for x, _ in pairs]
        elif all(np.issubdtype(x.dtype, np.integer) and x.shape == y.shape for x, y in pairs):
            ys, task = [y.astype(np.int32) for y in ys], "sequence"
            xs = [x.astype(np.int32) for x, _ in pairs]
        else:
            raise UserError(
                f"Data spec {spec!r}: integer targets of shape {y_train.shape} are neither "
                "class labels (n,) / (n, 1) nor next-token ids shaped like integer inputs "
                f"({source}). Store regression targets as floats."
            )
        largest = max(int(a.max()) for a in ys + (xs if task == "sequence" else []))
        num_classes = max(num_classes or 0, largest + 1)
    else:
        raise UserError(
            f"Data spec {spec!r}: targets must be integers (labels) or floats (regression), "
            f"got dtype {y_train.dtype} ({source})."
        )
    test = (xs[1], ys[1]) if len(xs) > 1 else (None, None)
    return Dataset(spec, xs[0], ys[0], *test, task, num_classes, source)


# ---------------------------------------------------------------------------- kinds


def _load_digits(spec: str, positionals: list[str], opts: _Options, seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    # The split is a property of the dataset, not of a training run: it stays fixed (seed 0)
    # unless seed= is given, so models trained under different seeds share their data.
    rng = np.random.default_rng(opts.get_int("seed", 0))
    order = rng.permutation(len(y))
    # Sorting by each sample's relative rank within its class interleaves the classes, so
    # the first 360 (the test set) hold every digit in proportion.
    counts = np.bincount(y)
    rank = np.empty(len(y))
    for label in range(len(counts)):
        members = order[y[order] == label]
        rank[members] = (np.arange(len(members)) + 0.5) / len(members)
    order = order[np.argsort(rank[order], kind="stable")]
    test, train = order[:360], order[360:]
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int32)
    return Dataset(
        spec,
        x[train],
        y[train],
        x[test],
        y[test],
        "classification",
        10,
        "digits (scikit-learn load_digits, 8x8 images flattened)",
    )


def _cubic(x: np.ndarray) -> np.ndarray:
    """Freeman & Bruna's cubic target (docs/science.md; func2 in their LaunchScripts/CUBICS.py)."""
    return 8 * x**3 - 10 * x**2 + 3 * x


def _quadratic(x: np.ndarray) -> np.ndarray:
    """Freeman & Bruna's quadratic target: func(x, .5, .25, .1) in LaunchScripts/QUADRATICS.py
    of github.com/danielfreeman11/convex-nets (the paper's text gives no formula)."""
    return 0.5 * x**2 + 0.25 * x + 0.1


def _polynomial_loader(target: Callable[[np.ndarray], np.ndarray], formula: str):
    def load(spec: str, positionals: list[str], opts: _Options, seed: int) -> Dataset:
        n = opts.get_int("n", 10000, minimum=1)
        n_test = opts.get_int("n_test", n // 5)
        # One seeded generator, two independent streams: changing n never changes the
        # test set, and vice versa.
        train_rng, test_rng = (
            np.random.default_rng(s)
            for s in np.random.SeedSequence(opts.get_int("seed", seed)).spawn(2)
        )
        xs = [
            rng.uniform(0.0, 1.0, size=(m, 1)).astype(np.float32)
            for rng, m in ((train_rng, n), (test_rng, n_test))
        ]
        # Targets are computed in float64 from the float32 inputs, then rounded once.
        ys = [target(x.astype(np.float64)).astype(np.float32) for x in xs]
        test = (xs[1], ys[1]) if n_test else (None, None)
        return Dataset(
            spec, xs[0], ys[0], *test, "regression", None, f"synthetic y = {formula}, x ~ U[0, 1]"
        )

    return load


TEACHER_ACTIVATIONS = ("relu", "square")


@dataclass(frozen=True)
class Teacher:
    """The fixed random network behind ``teacher`` data: y = act(x W1 + b1) W2 + b2.

    act is ReLU (``act=relu``, the default) or the square z -> z^2 (``act=square``: with
    ``bias=0`` the quadratic network y = U (W x)^2 of Freeman & Bruna, U = W2^T, W = W1^T).

    Attributes:
        w1: (d, h) first-layer weights, N(0, 1/d).
        b1: (h,) hidden biases, N(0, 0.25) (zeros with bias=0).
        w2: (h, out) output weights, N(0, 1/h).
        b2: (out,) output biases, N(0, 0.25) (zeros with bias=0).
        activation: "relu" or "square".
    """

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    activation: str = "relu"

    @classmethod
    def from_seed(
        cls, d: int, h: int, out: int, seed: int, activation: str = "relu", bias: bool = True
    ) -> Teacher:
        """The teacher of ``teacher:d=D,h=H,out=OUT,seed=SEED,act=ACT,bias=B`` (independent
        of n and noise). The same weights are drawn whatever act and bias are; bias=0 zeroes
        the biases."""
        if activation not in TEACHER_ACTIVATIONS:
            raise ValueError(f"unknown teacher activation {activation!r}")
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(5)[0])
        # Fan-in scaling keeps pre-activations O(1) for every d and h, so a useful fraction
        # of hidden units is active on Gaussian inputs.
        w1 = rng.normal(0, 1 / math.sqrt(d), (d, h))
        b1 = rng.normal(0, 0.5, h)
        w2 = rng.normal(0, 1 / math.sqrt(h), (h, out))
        b2 = rng.normal(0, 0.5, out)
        if not bias:
            b1, b2 = np.zeros_like(b1), np.zeros_like(b2)
        return cls(w1, b1, w2, b2, activation)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Teacher outputs (n, out), float64, for inputs x of shape (n, d)."""
        z = x @ self.w1 + self.b1
        hidden = np.square(z) if self.activation == "square" else np.maximum(z, 0.0)
        return hidden @ self.w2 + self.b2


def _load_teacher(spec: str, positionals: list[str], opts: _Options, seed: int) -> Dataset:
    d, h, out = (opts.get_int(k, v, minimum=1) for k, v in (("d", 10), ("h", 4), ("out", 1)))
    n = opts.get_int("n", 2000, minimum=1)
    n_test = opts.get_int("n_test", 500)
    noise = opts.get_float("noise", 0.0)
    seed = opts.get_int("seed", seed)
    activation = opts.get_str("act", "relu")
    if activation not in TEACHER_ACTIVATIONS:
        raise UserError(
            f"Option act={activation!r} in data spec {spec!r} must be one of "
            f"{', '.join(TEACHER_ACTIVATIONS)}."
        )
    bias = opts.get_bool("bias", True)
    teacher = Teacher.from_seed(d, h, out, seed, activation, bias)
    # Stream 0 is the teacher's; inputs and noise of each split have their own streams, so
    # n, n_test and noise change nothing else.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)[1:]]
    arrays = []
    for x_rng, noise_rng, m in ((streams[0], streams[2], n), (streams[1], streams[3], n_test)):
        x = x_rng.normal(size=(m, d)).astype(np.float32)
        y = teacher(x.astype(np.float64)) + noise * noise_rng.normal(size=(m, out))
        arrays += [x, y.astype(np.float32)]
    if not n_test:
        arrays[2:] = [None, None]
    return Dataset(
        spec,
        *arrays,
        "regression",
        None,
        f"teacher {'ReLU' if activation == 'relu' else 'square'} net {d}-{h}-{out}"
        f"{'' if bias else ' without biases'}, x ~ N(0, I), noise std {noise:g}",
    )


def _existing(spec: str, path: str, what: str) -> Path:
    found = Path(path).expanduser()
    if not found.exists():
        raise UserError(f"Data spec {spec!r}: {what} {str(found)!r} does not exist.")
    if what == "file" and not found.is_file():  # opening a FIFO would wait forever
        kind = "a directory" if found.is_dir() else "not a regular file (a pipe or device)"
        raise UserError(
            f"Data spec {spec!r}: {str(found)!r} is {kind}; give the path of the data file "
            "itself (e.g. npz:data/arrays.npz)."
        )
    return found


def _load_npz(spec: str, positionals: list[str], opts: _Options, seed: int) -> Dataset:
    path = _existing(spec, positionals[0], "file")
    with open(path, "rb") as handle:
        head = handle.read(6)
    if not (head.startswith(b"PK") or head.startswith(b"\x93NUMPY")):
        raise UserError(
            f"Data spec {spec!r}: {str(path)!r} is not an .npz archive (it is neither a zip "
            "archive nor a .npy file: a text or other file?). Save arrays with "
            "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...) or "
            "numpy.savez(path, x=..., y=...)."
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:  # numpy raises several types for non-npz content
        raise UserError(
            f"Data spec {spec!r}: {str(path)!r} is not a readable .npz archive ({error}). "
            "Save arrays with numpy.savez(path, x_train=..., y_train=..., x_test=..., "
            "y_test=...) or numpy.savez(path, x=..., y=...)."
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(
            f"Data spec {spec!r}: {str(path)!r} holds a single .npy array, "
            "not an .npz archive with keys x_train/y_train (or x/y)."
        )
    with archive:
        keys = set(archive.files)
        if {"x_train", "y_train"} <= keys:
            names = ["x_train", "y_train"]
            test = {"x_test", "y_test"} & keys
            if len(test) == 1:
                raise UserError(
                    f"Data spec {spec!r}: {str(path)!r} has {test.pop()} without "
                    f"its partner; found keys {sorted(keys)}."
                )
            names += ["x_test", "y_test"] if test else []
        elif {"x", "y"} <= keys:
            names = ["x", "y"]
        else:
            raise UserError(
                f"Data spec {spec!r}: {str(path)!r} has keys {sorted(keys)}, but needs "
                "x_train and y_train (optionally x_test and y_test, the Keras dataset "
                "convention), or x and y (training data only)."
            )
        arrays = []
        for name in names:
            try:
                arrays.append(archive[name])
            except ValueError:  # numpy: object arrays need allow_pickle, never allowed here
                raise UserError(
                    f"Data spec {spec!r}: {str(path)!r} holds {name} as an array of Python "
                    "objects (ragged lists or mixed types, stored pickled), which is not "
                    "loaded (unpickling can run code). Save numeric arrays of one shape: "
                    f"numpy.savez(path, {name}=np.asarray(values, dtype=np.float32), ...)."
                ) from None
    arrays += [None] * (4 - len(arrays))
    return _supervised(spec, f"npz {path.name}", *arrays)


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Reads one IDX file (the MNIST format), optionally gzip-compressed.

    The header is two zero bytes, a dtype code, the number of dimensions, then each
    dimension as a big-endian uint32; the big-endian data follow.

    Raises:
        UserError: The file is not a well-formed IDX file.
    """
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise UserError(f"{str(path)!r} is not a valid gzip file ({error}).") from None
    ndim = raw[3] if len(raw) >= 4 else 0
    header = 4 + 4 * ndim
    if len(raw) < header or raw[0] or raw[1] or raw[2] not in _IDX_DTYPES:
        raise UserError(
            f"{str(path)!r} is not an IDX file: its header (magic number "
            f"{raw[:4].hex() or 'missing'}) is not 00 00 TYPE NDIM."
        )
    dims = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    if len(raw) - header != math.prod(dims) * dtype.itemsize:
        raise UserError(
            f"{str(path)!r}: the IDX header promises shape {dims} of {dtype.name}, "
            f"but {len(raw) - header} data bytes follow (truncated or corrupt)."
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _load_idx(spec: str, positionals: list[str], opts: _Options, seed: int) -> Dataset:
    folder = _existing(spec, positionals[0], "directory")
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    found = {}
    for prefix in ("train", "t10k"):
        for part, rank in (("images", 3), ("labels", 1)):
            # Accept the canonical 'train-images-idx3-ubyte' and the common '...images.idx3...'.
            pattern = re.compile(rf"{prefix}-{part}[.-]idx{rank}-ubyte(\.gz)?$")
            matches = [n for n in names if pattern.match(n)]
            if matches:
                found[prefix, part] = folder / matches[0]
    if ("train", "images") not in found or ("train", "labels") not in found:
        raise UserError(
            f"Data spec {spec!r}: {str(folder)!r} must be a directory holding "
            "train-images-idx3-ubyte and train-labels-idx1-ubyte (optionally .gz, plus "
            f"t10k-images-idx3-ubyte / t10k-labels-idx1-ubyte); found {names[:20]}."
        )
    if (("t10k", "images") in found) != (("t10k", "labels") in found):
        raise UserError(
            f"Data spec {spec!r}: {str(folder)!r} has only one of the t10k "
            "images/labels files; provide both or neither."
        )
    arrays = [
        read_idx(found[key]) if key in found else None
        for key in [
            ("train", "images"),
            ("train", "labels"),
            ("t10k", "images"),
            ("t10k", "labels"),
        ]
    ]
    return _supervised(spec, f"idx {folder.name}", *arrays)


def _text_files(spec: str, path: Path, roles: list[str]) -> dict[str, str]:
    """Contents of the files ending in '<role>.txt' in a directory or a zip archive."""
    if path.is_dir():
        names = [p.relative_to(path).as_posix() for p in path.rglob("*.txt") if p.is_file()]
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
    else:
        raise UserError(
            f"Data spec {spec!r}: {str(path)!r} is neither a directory nor a zip "
            "archive of word files (e.g. ptb.train.txt, ptb.valid.txt, ptb.test.txt)."
        )
    chosen = {}
    for role in roles:
        matches = sorted(
            (len(n.split("/")[-1]), n)
            for n in names
            if n.split("/")[-1].endswith(f"{role}.txt")
            and "__MACOSX" not in n
            and not n.split("/")[-1].startswith(".")
        )
        # PTB archives may also hold ptb.char.train.txt: the shortest name is the word file.
        if len(matches) > 1 and matches[0][0] == matches[1][0]:
            raise UserError(
                f"Data spec {spec!r}: several files end in {role}.txt in "
                f"{str(path)!r}: {[n for _, n in matches]}; keep one."
            )
        if matches:
            chosen[role] = matches[0][1]
    texts = {}
    with zipfile.ZipFile(path) if path.is_file() else contextlib.nullcontext() as archive:
        for role, name in chosen.items():
            raw = archive.read(name) if archive else (path / name).read_bytes()
            try:
                texts[role] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"Data spec {spec!r}: {name} is not UTF-8 text.") from None
    return texts


def _load_text(spec: str, positionals: list[str], opts: _Options, seed: int) -> Dataset:
    cap = opts.get_int("vocab", 10000, minimum=2)
    steps = opts.get_int("seq", 20, minimum=1)
    test_role = opts.get_str("split_test", "test")
    if test_role not in ("test", "valid"):
        raise UserError(
            f"Option split_test={test_role!r} in data spec {spec!r} must be 'test' or 'valid'."
        )
    path = _existing(spec, positionals[0], "path")
    texts = _text_files(spec, path, ["train", test_role])
    if "train" not in texts:
        raise UserError(
            f"Data spec {spec!r}: no file ending in train.txt in {str(path)!r} "
            "(expected Penn-Treebank-style ptb.train.txt / ptb.test.txt)."
        )
    if test_role == "valid" and "valid" not in texts:
        raise UserError(
            f"Data spec {spec!r}: split_test=valid, but {str(path)!r} has no "
            "file ending in valid.txt."
        )
    # Every line ends with <eos>, as in the usual PTB language-model set-up.
    words = {
        role: [w for line in text.splitlines() for w in line.split() + ["<eos>"]]
        for role, text in texts.items()
    }
    counts = Counter(words["train"])
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    unseen = any(w not in counts for w in words.get(test_role, []))
    vocabulary = ranked[:cap]
    if (len(ranked) > cap or unseen) and "<unk>" not in vocabulary:
        vocabulary = ranked[: cap - 1] + ["<unk>"]
    index = {w: i for i, w in enumerate(vocabulary)}
    unk = index.get("<unk>")
    arrays = []
    for role in ("train", test_role):
        if role not in words:
            arrays += [None, None]
            continue
        ids = np.array([index.get(w, unk) for w in words[role]], dtype=np.int32)
        count = (len(ids) - 1) // steps
        if count < 1:
            raise UserError(
                f"Data spec {spec!r}: the {role} file has {len(ids)} tokens, too "
                f"few for one window of seq={steps} steps plus its shifted target."
            )
        arrays += [
            ids[: count * steps].reshape(count, steps),
            ids[1 : count * steps + 1].reshape(count, steps),
        ]
    return Dataset(
        spec,
        *arrays,
        "sequence",
        len(vocabulary),
        f"text {path.name}, vocabulary {len(vocabulary)}, windows of {steps} steps",
    )


def _load_tfds(spec: str, positionals: list[str], opts: _Options, seed: int) -> Dataset:
    try:
        import tensorflow  # noqa: F401  (tfds reads through tf.data)
        import tensorflow_datasets as tfds  # slow import: only for tfds specs
    except ImportError:
        raise UserError(
            f"The data spec {spec!r} needs TensorFlow and tensorflow-datasets, which are not "
            "installed here (e.g. a JAX-only machine). Export the dataset to an .npz file "
            "(x_train/y_train/x_test/y_test) and use npz:PATH instead."
        ) from None

    name = positionals[0]
    download = opts.get_bool("download", False)
    data_dir = opts.get_str("data_dir", None)
    limit = opts.get_int("limit", None, minimum=1)
    arrays, num_classes = [], None
    for split in positionals[1:] or ["train", "test"]:
        try:
            data, info = tfds.load(
                name,
                split=split,
                as_supervised=True,
                with_info=True,
                download=download,
                data_dir=data_dir,
            )
        except tfds.core.DatasetNotFoundError:
            raise UserError(
                f"Data spec {spec!r}: TensorFlow Datasets has no dataset named "
                f"{name!r} (see `tfds.list_builders()`)."
            ) from None
        except Exception as error:  # tfds reports missing data and bad splits variously
            if not download and ("could not find data" in str(error) or "download" in str(error)):
                raise UserError(
                    f"Data spec {spec!r}: the TFDS dataset {name!r} is not prepared locally "
                    f"({'data_dir ' + data_dir if data_dir else 'default data_dir'}). Download "
                    f"it once with '{spec}:download=1' on a machine with network access, or "
                    "export it to arrays and use npz:PATH."
                ) from None
            if split == "test" and len(positionals) == 1 and "split" in str(error).lower():
                break  # the dataset simply has no test split
            raise UserError(
                f"Data spec {spec!r}: TFDS could not load {name!r} split {split!r}: {error}"
            ) from None
        if limit:
            data = data.take(limit)
        batches = list(tfds.as_numpy(data.batch(4096)))
        if not batches:
            raise UserError(f"Data spec {spec!r}: TFDS split {split!r} of {name!r} is empty.")
        arrays += [np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])]
        label = info.features[info.supervised_keys[1]] if info.supervised_keys else None
        num_classes = getattr(label, "num_classes", None)
        if split == "train" and info.splits and "test" not in info.splits:
            break
    arrays += [None] * (4 - len(arrays))
    return _supervised(
        spec,
        f"tfds {name} ({', '.join(positionals[1:] or ['train', 'test'])})",
        *arrays,
        num_classes=num_classes,
    )


@dataclass(frozen=True)
class Kind:
    """One data kind: its loader, its positional arguments and the options it accepts."""

    loader: Callable[[str, list[str], _Options, int], Dataset]
    positionals: tuple[str, ...]
    optional_positionals: tuple[str, ...]
    options: frozenset[str]
    example: str


_SYNTHETIC = frozenset({"limit", "seed", "n", "n_test"})
KINDS: dict[str, Kind] = {
    "digits": Kind(_load_digits, (), (), frozenset({"limit", "seed"}), "digits"),
    "cubic": Kind(
        _polynomial_loader(_cubic, "8x^3 - 10x^2 + 3x"), (), (), _SYNTHETIC, "cubic:n=10000"
    ),
    "quadratic": Kind(
        _polynomial_loader(_quadratic, "0.5x^2 + 0.25x + 0.1"),
        (),
        (),
        _SYNTHETIC,
        "quadratic:n=10000",
    ),
    "teacher": Kind(
        _load_teacher,
        (),
        (),
        _SYNTHETIC | {"d", "h", "out", "noise", "act", "bias"},
        "teacher:d=10,h=4,n=2000",
    ),
    "npz": Kind(_load_npz, ("PATH",), (), frozenset({"limit"}), "npz:/data/mnist.npz"),
    "idx": Kind(_load_idx, ("DIR",), (), frozenset({"limit"}), "idx:/data/mnist"),
    "text": Kind(
        _load_text,
        ("PATH",),
        (),
        frozenset({"limit", "vocab", "seq", "split_test"}),
        "text:/data/ptb.zip:seq=35",
    ),
    "tfds": Kind(
        _load_tfds,
        ("NAME",),
        ("SPLIT",),
        frozenset({"limit", "download", "data_dir"}),
        "tfds:mnist",
    ),
}


def _subset(n: int, limit: int) -> np.ndarray:
    """Indices of `limit` of n samples, drawn with a fixed seed, in increasing order."""
    if limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))


def load_data(spec: str, seed: int = 0) -> Dataset:
    """Loads the dataset a spec names.

    Args:
        spec: A data spec, e.g. ``"digits"``, ``"teacher:d=10,n=2000"``, ``"npz:PATH"``.
        seed: Default seed of the synthetic kinds (their ``seed=`` option overrides it).

    Returns:
        The dataset, with ``limit=`` applied and a one-line description.

    Raises:
        UserError: Unknown kind or option, bad option value, missing or malformed file.
    """
    kind_name, positionals, options = parse_spec(spec)
    kind = KINDS.get(kind_name)
    if kind is None:
        raise UserError(
            f"Unknown data kind {kind_name!r} in spec {spec!r}. Valid kinds: "
            + ", ".join(f"{k} (e.g. {v.example})" for k, v in KINDS.items())
            + "."
        )
    usage = ":".join([kind_name, *kind.positionals, *(f"[{p}]" for p in kind.optional_positionals)])
    if (
        not len(kind.positionals)
        <= len(positionals)
        <= len(kind.positionals) + len(kind.optional_positionals)
    ):
        raise UserError(
            f"Data spec {spec!r} has {len(positionals)} positional argument(s) "
            f"{positionals}; the form is {usage}[:key=val,...], e.g. {kind.example}."
        )
    unknown = sorted(set(options) - kind.options)
    if unknown:
        raise UserError(
            f"Unknown option(s) {', '.join(unknown)} in data spec {spec!r}; "
            f"{kind_name} accepts: {', '.join(sorted(kind.options))}."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"The seed for data spec {spec!r} must be an integer >= 0, got {seed!r}.")
    opts = _Options(spec, options)
    limit = opts.get_int("limit", None, minimum=1)
    data = kind.loader(spec, positionals, opts, seed)
    if limit is not None:
        # A fixed-seed random subset in the original order, not the first N rows: dataset
        # files are often sorted by class (the CIFAR-10 subset is), and the first N would hold
        # a few classes only. Fancy indexing copies, so the full arrays can be freed.
        train = _subset(len(data.x_train), limit)
        test = None if data.x_test is None else _subset(len(data.x_test), limit)
        data = dataclasses.replace(
            data,
            x_train=data.x_train[train],
            y_train=data.y_train[train],
            x_test=None if test is None else data.x_test[test],
            y_test=None if test is None else data.y_test[test],
        )
    sizes = f"{len(data.x_train)} train / " + (
        f"{len(data.x_test)} test" if data.x_test is not None else "no test"
    )
    classes = {
        "classification": f", {data.num_classes} classes",
        "sequence": f", vocabulary {data.num_classes}",
    }.get(data.task, "")
    y_shape = data.y_train.shape[1:] or "scalar"
    data.description = (
        f"{data.description}: {sizes}, x {data.x_train.shape[1:]} "
        f"{data.x_train.dtype}, y {y_shape} {data.y_train.dtype}, "
        f"{data.task}{classes}"
    )
    return data


# ---------------------------------------------------------------------------- adapting

# Losses whose targets must have the model's output shape; sparse losses take int labels.
_DENSE_TARGET_LOSSES = frozenset(
    {
        "categoricalcrossentropy",
        "categoricalfocalcrossentropy",
        "categoricalhinge",
        "binarycrossentropy",
        "binaryfocalcrossentropy",
        "kldivergence",
        "kld",
        "kullbackleiblerdivergence",
        "meansquarederror",
        "mse",
        "meanabsoluteerror",
        "mae",
        "meansquaredlogarithmicerror",
        "msle",
        "meanabsolutepercentageerror",
        "mape",
        "huber",
        "logcosh",
        "hinge",
        "squaredhinge",
        "poisson",
        "cosinesimilarity",
    }
)
_ONE_HOT_BYTES = 2**30


def _conform(spec: str, what: str, have: tuple, want: tuple) -> tuple:
    """The per-sample shape `have` is fed as: itself when compatible, else `want` by reshape."""
    if len(have) == len(want) and all(w is None or w == h for h, w in zip(have, want)):
        return have
    if None not in want and math.prod(want) == math.prod(have):
        return want
    raise UserError(
        f"The data spec {spec!r} gives {what} of per-sample shape {have}, but the model "
        f"expects {want}. Shapes must be equal (None matches any size) or, with all sizes "
        f"known, hold the same number of elements ({math.prod(have)} here) so that the data "
        "can be reshaped; choose a matching model or data spec."
    )


def _one_hot(spec: str, labels: np.ndarray, width: int) -> np.ndarray:
    if labels.size * width * 4 > _ONE_HOT_BYTES:
        raise UserError(
            f"Data spec {spec!r}: one-hot targets of {labels.size} x {width} would "
            "take over 1 GiB; use a sparse loss (sparse_categorical_crossentropy) "
            "with integer labels instead."
        )
    return np.eye(width, dtype=np.float32)[labels]


def adapt_to_model(
    dataset: Dataset, input_shape: tuple, output_shape: tuple, loss_name: str | None = None
) -> Dataset:
    """Reshapes inputs and encodes targets to fit a model; returns a new Dataset.

    Args:
        dataset: Data from `load_data` (not modified).
        input_shape: The model's per-sample input shape, no batch axis; None = any size.
        output_shape: The model's per-sample output shape, no batch axis.
        loss_name: The loss's name, e.g. "categorical_crossentropy" or
            "CategoricalCrossentropy": losses that need dense targets get one-hot labels,
            sparse losses (and None) keep integer labels.

    Raises:
        UserError: Inputs or targets cannot be made to fit the model.
    """
    spec, task = dataset.spec, dataset.task
    input_shape, output_shape = tuple(input_shape), tuple(output_shape)
    shape = _conform(spec, "inputs", dataset.x_train.shape[1:], input_shape)
    xs = [
        None if x is None else x.reshape((len(x),) + shape)
        for x in (dataset.x_train, dataset.x_test)
    ]
    dense = (loss_name or "").replace("_", "").lower() in _DENSE_TARGET_LOSSES
    k = dataset.num_classes
    ys = [dataset.y_train, dataset.y_test]
    if task == "classification":
        if output_shape in ((), (1,)):
            if k > 2:
                raise UserError(
                    f"The data spec {spec!r} has {k} classes, but the model has a single "
                    f"output {output_shape}; one output fits only binary labels. Give the "
                    f"model an output of shape ({k},)."
                )
            ys = [
                None if y is None else y.astype(np.float32).reshape((len(y),) + output_shape)
                for y in ys
            ]
        elif len(output_shape) == 1:
            if output_shape[0] is not None and output_shape[0] < k:
                raise UserError(
                    f"The data spec {spec!r} has {k} classes, but the model "
                    f"outputs only {output_shape[0]} ({output_shape})."
                )
            if dense:
                ys = [None if y is None else _one_hot(spec, y, output_shape[0] or k) for y in ys]
        else:
            raise UserError(
                f"The data spec {spec!r} holds class labels, but the model's output "
                f"shape is {output_shape}; a classifier outputs (classes,) or (1,)."
            )
    elif task == "sequence":
        steps = dataset.y_train.shape[1:]
        if len(output_shape) != 2 or output_shape[0] not in (None, steps[0]):
            raise UserError(
                f"The data spec {spec!r} holds next-token targets of shape {steps}, "
                f"so the model must output (steps, vocabulary), got {output_shape}."
            )
        if output_shape[1] is not None and output_shape[1] < k:
            raise UserError(
                f"The data spec {spec!r} has a vocabulary of {k} tokens, but the "
                f"model outputs only {output_shape[1]} scores per step."
            )
        if dense:
            ys = [None if y is None else _one_hot(spec, y, output_shape[1] or k) for y in ys]
    else:
        shape = _conform(spec, "targets", dataset.y_train.shape[1:], output_shape)
        ys = [None if y is None else y.reshape((len(y),) + shape) for y in ys]
    return dataclasses.replace(dataset, x_train=xs[0], y_train=ys[0], x_test=xs[1], y_test=ys[1])
