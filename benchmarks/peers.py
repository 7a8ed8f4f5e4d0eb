"""Against the peers: keras-landscape vs PyHessian, loss-landscapes and Landscaper on CPU.

    python benchmarks/peers.py [--quick] [--threads N] [--out FILE.json] [--markdown]

One model defined twice with identical weights: a Keras MLP (64-64-10, ReLU) on the digits
training split (1437 samples, 8x8 images flattened) and the same architecture in PyTorch,
its weights copied from the Keras model (Dense kernels transposed into nn.Linear weights).
The data are the same arrays; the loss is the same (cross-entropy from logits, the mean
over the whole split). The two frameworks must give the same loss (rtol 1e-5) at both
trained models before anything is timed. Both frameworks run with the same thread count
(--threads, default: every core).

Tasks, each timed on both sides (wall clock, one warm-up run excluded, best of --repeats):

- hessian: the top 5 eigenvalues and the Hutchinson trace of the Hessian of the training
  loss at model A. Ours: the `hessian` probe (ARPACK through `Landscape.hessian_vector`,
  its defaults; trace_samples N). PyHessian: `hessian(model, criterion, data=(x, y))`,
  `.eigenvalues(top_n=5)` (its defaults) and `.trace(maxIter=N, tol=0)` (exactly N
  Rademacher samples, as ours). Both sides' eigenpairs are checked by torch's own
  Hessian-vector product: ||H q - lambda q|| (an eigenvalue of H lies within it of
  lambda); the eigenvalues agree when the two sides differ by less than the sum of their
  residuals (`within_residuals`; max_rel_diff is reported too: power iteration's values
  are often 1e-3 off), the traces when within 4 combined standard errors (both are means
  of N random z^T H z).
- slice: a 21 x 21 filter-normalised random plane around model A. Ours: the `slices` probe
  (mode random, dims 2). loss-landscapes: `random_plane(normalization='filter', steps=21)`
  is timed; its directions are its own, so the values are checked on the same points
  through `planar_interpolation` fed with our probe's directions (its zig-zag walk lands
  even columns one step further along the second direction: 430 of the 441 points fall
  on our grid and are compared point by point, rtol 1e-4).
- interpolation: 26 points on the line from model A to model B (t = 0, 0.04, ..., 1).
  Ours: the `slices` probe (mode models, dims 1, x_range 0:1). loss-landscapes:
  `linear_interpolation(start, B, steps=26)` from start = A - (B - A)/25 (it evaluates
  after each step, so its 26 points are t = 0 ... 1); point by point, rtol 1e-4.
- Landscaper (when installed): its `PyHessian` (eigenvalues, trace) and
  `compute_loss_landscape` (21 x 21 plane). It rescales every direction tensor to norm
  sqrt(numel) (no filter normalisation), so its plane is checked against our
  `Landscape.evaluate_many` at the same points. When it cannot be installed the JSON says
  why.

Per task: ours_s, peer_s, ratio (peer_s / ours_s: > 1 means ours is faster), values_agree,
max_rel_diff, and what was compared. Not a test: the numbers describe the machine.
See docs/performance.md ("Against the peers").
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import sys
import tempfile
import time


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one timed run, 20 trace samples")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="threads for both frameworks"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (best of)")
    parser.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(__file__), "results", "peers_cpu.json"),
        help="write the JSON here ('' for stdout only)",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument(
        "--tasks", default="hessian,slice,interpolation", help="comma-separated subset"
    )
    parser.add_argument("--note", default="", help="a note stored in the JSON (e.g. busy)")
    return parser.parse_args()


ARGS = _parse()
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU on both sides
os.environ["TF_NUM_INTRAOP_THREADS"] = str(ARGS.threads)
os.environ["TF_NUM_INTEROP_THREADS"] = str(ARGS.threads)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_landscape.data.specs import load_data  # noqa: E402
from keras_landscape.engine import backend  # noqa: E402
from keras_landscape.engine.landscape import Landscape  # noqa: E402
from keras_landscape.models.minimum import Minimum  # noqa: E402
from keras_landscape.plugins.hessian import HessianProbe  # noqa: E402
from keras_landscape.plugins.slices import SlicesProbe  # noqa: E402
from keras_landscape.progress import NullProgress  # noqa: E402
from keras_landscape.store.hdf5 import Store  # noqa: E402

try:
    import torch
    from torch import nn
except ImportError:  # pragma: no cover - the message is the point
    sys.exit("benchmarks/peers.py needs the peers: pip install -e '.[peers]'")

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(ARGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(ARGS.threads)
torch.set_num_threads(ARGS.threads)
torch.set_num_interop_threads(ARGS.threads)

REPEATS = ARGS.repeats or (1 if ARGS.quick else 5)
TRACE_SAMPLES = 20 if ARGS.quick else 100
TOP_K = 5
GRID = 21
LINE = 26
LOSS = "sparse_categorical_crossentropy:from_logits=true"


# ---------------------------------------------------------------- the model, twice
def keras_mlp(seed: int):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)],
        name="mlp",
    )


def torch_mlp():
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def train(data, seed: int, epochs: int):
    model = keras_mlp(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = data.split("train")
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, shuffle=True)
    return model


def theta_to_torch(theta: np.ndarray, layout, model) -> None:
    """Copy a flat theta (the landscape's layout: Dense kernel (in, out), bias) into the
    torch model (nn.Linear weight (out, in), bias), in place."""
    params = list(model.parameters())
    if len(params) != len(layout.shapes):
        raise SystemExit("the torch model does not mirror the Keras one")
    with torch.no_grad():
        for p, offset, shape in zip(params, layout.offsets, layout.shapes):
            size = int(np.prod(shape))
            value = np.asarray(theta[offset : offset + size], np.float32).reshape(shape)
            if value.ndim == 2:
                value = value.T  # Keras Dense kernel (in, out) -> torch Linear (out, in)
            if tuple(p.shape) != value.shape:
                raise SystemExit(f"shape mismatch: torch {tuple(p.shape)} vs {value.shape}")
            p.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def torch_from_theta(theta, layout):
    model = torch_mlp()
    theta_to_torch(theta, layout, model)
    return model.eval()


def torch_direction(direction: np.ndarray, layout) -> list:
    """A flat direction as per-parameter torch tensors in nn.Linear layout."""
    out = []
    for offset, shape in zip(layout.offsets, layout.shapes):
        size = int(np.prod(shape))
        value = np.asarray(direction[offset : offset + size], np.float32).reshape(shape)
        out.append(torch.from_numpy(np.ascontiguousarray(value.T if value.ndim == 2 else value)))
    return out


def torch_residuals(model, x, y, values, vectors) -> list[float]:
    """||H q - lambda q|| / ||q|| for each pair, H by torch's own double backward: an
    eigenvalue of H lies within it of lambda (H symmetric), whichever side found the pair."""
    params = list(model.parameters())
    loss = nn.CrossEntropyLoss()(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    out = []
    for value, vector in zip(values, vectors):
        hv = torch.autograd.grad(grads, params, grad_outputs=vector, retain_graph=True)
        r = sum(float(((h - value * v) ** 2).sum()) for h, v in zip(hv, vector))
        out.append(float(np.sqrt(r) / np.sqrt(sum(float((v**2).sum()) for v in vector))))
    return out


# ---------------------------------------------------------------- timing
def best_of(fn, repeats: int = REPEATS):
    """(seconds of the first, warm-up call; best of `repeats` timed calls; last result)."""
    begin = time.perf_counter()
    result = fn()
    first = time.perf_counter() - begin
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - begin)
    return first, min(times), result


@contextlib.contextmanager
def quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def rel_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


class Runs:
    """A scratch store: every probe run gets a fresh run record (no resume between runs)."""

    def __init__(self, folder: str):
        self.store = Store.create(
            os.path.join(folder, "peers.h5"), versions={}, command="benchmark"
        )
        self.count = 0

    def run(self, probe, landscape, models):
        self.count += 1
        record = self.store.begin_run(f"{probe.name}_{self.count}", probe.name, {}, seed=0)
        result = probe.run(landscape, models, record, NullProgress())
        record.complete(result)
        return result, record


def row(task, peer, first, ours_s, peer_first, peer_s, agree, max_rel, compared, **extra):
    return {
        "task": task,
        "peer": peer,
        "ours_s": ours_s,
        "peer_s": peer_s,
        "ratio": peer_s / ours_s,
        "ours_first_s": first,
        "peer_first_s": peer_first,
        "values_agree": bool(agree),
        "max_rel_diff": max_rel,
        "compared": compared,
        **extra,
    }


# ---------------------------------------------------------------- tasks
def hessian_task(ctx) -> list[dict]:
    from pyhessian import hessian as pyhessian

    landscape, a, x, y = ctx["landscape"], ctx["a"], ctx["x"], ctx["y"]
    probe = HessianProbe(
        HessianProbe.Config(top_k=TOP_K, trace_samples=TRACE_SAMPLES, density_probes=0, seed=0)
    )
    first, ours_s, (result, record) = best_of(lambda: ctx["runs"].run(probe, landscape, [a]))
    ours = result["models"][0]
    ours_vectors = [
        torch_direction(v, landscape.layout) for v in record.read("models/a/eigenvectors")
    ]
    model = torch_from_theta(a.theta, landscape.layout)
    criterion = nn.CrossEntropyLoss()

    def peer():
        h = pyhessian(model, criterion, data=(x, y), cuda=False)
        values, vectors = h.eigenvalues(top_n=TOP_K)
        samples = h.trace(maxIter=TRACE_SAMPLES, tol=0.0)
        return values, vectors, samples

    peer_first, peer_s, (values, vectors, samples) = best_of(peer)
    order = np.argsort(values)[::-1]
    peer_values = np.asarray(values, np.float64)[order]
    # both sides' pairs checked by torch's Hessian-vector product
    ours_r = torch_residuals(model, x, y, ours["eigenvalues"], ours_vectors)
    peer_r = torch_residuals(model, x, y, peer_values, [vectors[i] for i in order])
    gaps = np.abs(peer_values - np.asarray(ours["eigenvalues"]))
    samples = np.asarray(samples, np.float64)
    peer_trace, peer_se = samples.mean(), samples.std(ddof=1) / np.sqrt(len(samples))
    eig_rel = rel_diff(peer_values, ours["eigenvalues"])
    trace_gap = abs(peer_trace - ours["trace"]) / np.hypot(peer_se, ours["trace_se"])
    within = bool(np.all(gaps <= np.add(ours_r, peer_r)))
    rows = [
        row(
            "hessian top-5 + trace",
            "PyHessian",
            first,
            ours_s,
            peer_first,
            peer_s,
            within and trace_gap <= 4,
            eig_rel,
            f"top-{TOP_K} eigenvalues within the sum of both sides' residuals ||Hq - lambda q|| "
            "(torch's Hessian-vector product: an eigenvalue of H lies within its residual of "
            "each estimate); trace within 4 combined standard errors "
            f"({TRACE_SAMPLES} Rademacher samples each)",
            ours_eigenvalues=ours["eigenvalues"],
            peer_eigenvalues=peer_values.tolist(),
            ours_residuals_torch=ours_r,
            peer_residuals_torch=peer_r,
            within_residuals=within,
            ours_hvps=ours["eigen"]["hvps"],
            ours_trace=[ours["trace"], ours["trace_se"]],
            peer_trace=[float(peer_trace), float(peer_se)],
            trace_gap_in_se=float(trace_gap),
        )
    ]
    if ctx["landscaper"]:
        from landscaper import PyHessian as LandscaperHessian

        def landscaper_peer():
            h = LandscaperHessian(model, criterion, [(x, y)], device="cpu")
            values, vectors = h.eigenvalues(top_n=TOP_K)
            trace = h.trace(maxIter=TRACE_SAMPLES, tol=0.0)
            return values, vectors, trace

        with quiet():  # its progress bars
            l_first, l_s, (l_values, l_vectors, l_trace) = best_of(landscaper_peer)
        l_order = np.argsort(l_values)[::-1]
        l_values = np.asarray(l_values, np.float64)[l_order]
        l_r = torch_residuals(model, x, y, l_values, [l_vectors[i] for i in l_order])
        l_within = bool(np.all(np.abs(l_values - ours["eigenvalues"]) <= np.add(ours_r, l_r)))
        l_rel = rel_diff(l_values, ours["eigenvalues"])
        rows.append(
            row(
                "hessian top-5 + trace",
                "Landscaper",
                first,
                ours_s,
                l_first,
                l_s,
                l_within,
                l_rel,
                f"top-{TOP_K} eigenvalues within the sum of both sides' residuals (as for "
                "PyHessian); its trace is reported, not checked",
                peer_eigenvalues=l_values.tolist(),
                peer_residuals_torch=l_r,
                within_residuals=l_within,
                peer_trace=np.asarray(l_trace, np.float64).mean().item(),
            )
        )
    return rows


def _peer_plane_on_our_grid(peer, ours_loss):
    """Pairs (peer value, our value) of planar_interpolation's grid on ours: row i of the
    peer walks direction one (our x index i); within it, even rows sit at y index k + 1,
    odd rows at y index k (its zig-zag)."""
    pairs = []
    for i in range(GRID):
        for k in range(GRID):
            j = k + 1 if i % 2 == 0 else k
            if j < GRID:
                pairs.append((peer[i][k], ours_loss[j][i]))
    return np.array(pairs)


def slice_task(ctx) -> list[dict]:
    from loss_landscapes import planar_interpolation, random_plane
    from loss_landscapes.metrics import Loss

    landscape, a, x, y = ctx["landscape"], ctx["a"], ctx["x"], ctx["y"]
    probe = SlicesProbe(
        SlicesProbe.Config(mode="random", dims=2, x_points=GRID, y_points=GRID, seed=0)
    )
    first, ours_s, (result, record) = best_of(lambda: ctx["runs"].run(probe, landscape, [a]))
    ours_loss = np.asarray(result["loss"], np.float64)
    directions = record.read("directions").astype(np.float64)
    metric = Loss(nn.CrossEntropyLoss(), x, y)
    base = torch_from_theta(a.theta, landscape.layout)
    # engine alone: the same 441 points in one Landscape.evaluate_many (what the probe
    # calls, twice: the loss and the level, here the same function)
    grid = np.linspace(-1, 1, GRID)
    thetas = np.stack(
        [a.theta + gx * directions[0] + gy * directions[1] for gy in grid for gx in grid]
    ).astype(np.float32)
    _, engine_s, _ = best_of(lambda: landscape.evaluate_many(thetas, "train"))

    models = []

    def fresh():
        models.append(copy.deepcopy(base))
        return models[-1]

    for _ in range(REPEATS + 1):
        fresh()
    pool = iter(models)
    peer_first, peer_s, _ = best_of(
        lambda: random_plane(next(pool), metric, steps=GRID, normalization="filter")
    )

    # the values, on the same points: planar_interpolation with our directions
    step = 2.0 / (GRID - 1)
    corner = a.theta - directions[0] - directions[1]
    start = torch_from_theta(corner, landscape.layout)
    end_one = torch_from_theta(corner + GRID * step * directions[0], landscape.layout)
    end_two = torch_from_theta(corner + GRID * step * directions[1], landscape.layout)
    begin = time.perf_counter()
    peer_values = planar_interpolation(start, end_one, end_two, metric, steps=GRID)
    planar_s = time.perf_counter() - begin
    pairs = _peer_plane_on_our_grid(peer_values, ours_loss)
    max_rel = rel_diff(pairs[:, 0], pairs[:, 1])
    with torch.no_grad():
        centre = float(nn.CrossEntropyLoss()(base(x), y))
    centre_rel = rel_diff(centre, ours_loss[GRID // 2][GRID // 2])
    rows = [
        row(
            f"{GRID}x{GRID} filter-normalised slice",
            "loss-landscapes",
            first,
            ours_s,
            peer_first,
            peer_s,
            max_rel <= 1e-4 and centre_rel <= 1e-5,
            max_rel,
            f"{len(pairs)} of {GRID * GRID} points of our probe's plane, evaluated by the peer's "
            "planar_interpolation on our directions (rtol 1e-4), and the centre vs torch "
            "(rtol 1e-5); random_plane (timed) draws its own directions",
            engine_evaluate_many_s=engine_s,
            peer_planar_interpolation_s=planar_s,
            centre_rel_diff=centre_rel,
        )
    ]
    if ctx["landscaper"]:
        rows.append(landscaper_slice(ctx, first, ours_s, directions, base))
    return rows


def landscaper_slice(ctx, first, ours_s, directions, base) -> dict:
    """Landscaper's compute_loss_landscape on a 21x21 plane (our directions, which it
    renormalises per tensor), checked against Landscape.evaluate_many at its points."""
    from landscaper.compute import compute_loss_landscape

    landscape, a, x, y = ctx["landscape"], ctx["a"], ctx["x"], ctx["y"]
    layout = landscape.layout
    distance = 0.5
    criterion = nn.CrossEntropyLoss()

    def scalar(model, data):
        with torch.no_grad():
            return float(criterion(model(data[0]), data[1]))

    def peer():
        dirs = [torch_direction(d, layout) for d in directions]
        return compute_loss_landscape(
            copy.deepcopy(base), (x, y), dirs, scalar, GRID, distance, 2, "cpu"
        )[0]

    with quiet():  # its prints and progress bars
        peer_first, peer_s, values = best_of(peer)
    # its steps: each tensor scaled to norm sqrt(numel), then the whole direction to
    # |theta| * distance / (steps / 2)
    theta_norm = np.linalg.norm(a.theta.astype(np.float64))
    steps = []
    for d in directions:
        e = np.zeros_like(d)
        for offset, shape in zip(layout.offsets, layout.shapes):
            size = int(np.prod(shape))
            part = d[offset : offset + size]
            e[offset : offset + size] = part * np.sqrt(size) / (np.linalg.norm(part) + 1e-10)
        steps.append(e * (theta_norm * distance / (GRID / 2)) / np.linalg.norm(e))
    centre = GRID // 2
    thetas = np.stack(
        [
            a.theta + (i - centre) * steps[0] + (j - centre) * steps[1]
            for i in range(GRID)
            for j in range(GRID)
        ]
    ).astype(np.float32)
    ours = np.array([e.loss for e in landscape.evaluate_many(thetas, "train")]).reshape(GRID, GRID)
    keep = values != values.max()  # it adds noise to the maximum ("flat regions")
    max_rel = rel_diff(values[keep], ours[keep])
    return row(
        f"{GRID}x{GRID} filter-normalised slice",
        "Landscaper",
        first,
        ours_s,
        peer_first,
        peer_s,
        max_rel <= 1e-4,
        max_rel,
        "its plane (our directions renormalised its way: per tensor, no filter "
        "normalisation) vs Landscape.evaluate_many at the same points, the noised maximum "
        "left out (rtol 1e-4)",
    )


def interpolation_task(ctx) -> list[dict]:
    from loss_landscapes import linear_interpolation
    from loss_landscapes.metrics import Loss

    from keras_landscape.science.barriers import linear_profile

    landscape, a, b, x, y = ctx["landscape"], ctx["a"], ctx["b"], ctx["x"], ctx["y"]
    probe = SlicesProbe(
        SlicesProbe.Config(mode="models", dims=1, x_range="0:1", x_points=LINE, seed=0)
    )
    first, ours_s, result = best_of(lambda: ctx["runs"].run(probe, landscape, [a, b])[0])
    ours = np.asarray(result["loss"][0], np.float64)
    metric = Loss(nn.CrossEntropyLoss(), x, y)
    before = a.theta.astype(np.float64) - (b.theta - a.theta.astype(np.float64)) / (LINE - 1)
    start = torch_from_theta(before, landscape.layout)
    end = torch_from_theta(b.theta, landscape.layout)
    starts = [copy.deepcopy(start) for _ in range(REPEATS + 1)]
    pool = iter(starts)
    peer_first, peer_s, values = best_of(
        lambda: linear_interpolation(next(pool), end, metric, steps=LINE)
    )
    max_rel = rel_diff(values, ours)
    # The same line through the Python API (`science.barriers.linear_profile`): no store, as
    # the peer keeps none; the level here is the training loss (level_fn=loss, split=train).
    api_first, api_s, (_, api) = best_of(
        lambda: linear_profile(landscape, a.theta, b.theta, LINE - 1)
    )
    api_rel = rel_diff(values, api)
    compared = f"all {LINE} losses, t = 0 ... 1, point by point (rtol 1e-4)"
    return [
        row(
            f"{LINE}-point linear interpolation (slices probe, resumable store)",
            "loss-landscapes",
            first,
            ours_s,
            peer_first,
            peer_s,
            max_rel <= 1e-4,
            max_rel,
            compared,
        ),
        row(
            f"{LINE}-point linear interpolation (Python API, no store)",
            "loss-landscapes",
            api_first,
            api_s,
            peer_first,
            peer_s,
            api_rel <= 1e-4,
            api_rel,
            compared,
        ),
    ]


# ---------------------------------------------------------------- main
def landscaper_status() -> tuple[bool, str]:
    try:
        import landscaper  # noqa: F401
        from landscaper.compute import compute_loss_landscape  # noqa: F401
    except Exception as error:  # noqa: BLE001 - any import failure is the reason
        return False, f"not importable here: {type(error).__name__}: {error}"
    return True, "installed"


def markdown(document: dict) -> str:
    lines = [
        "| task | peer | ours (s) | peer (s) | peer / ours | values agree | max rel. diff |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in document["tasks"]:
        lines.append(
            f"| {r['task']} | {r['peer']} | {r['ours_s']:.3f} | {r['peer_s']:.3f} | "
            f"{r['ratio']:.2f}x | {'yes' if r['values_agree'] else 'NO'} | "
            f"{r['max_rel_diff']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    data = load_data("digits")
    epochs = 10 if ARGS.quick else 30
    model_a, model_b = train(data, 1, epochs), train(data, 2, epochs)
    x_np, y_np = data.split("train")
    landscape = Landscape(
        model_a, data, loss=LOSS, level_fn="loss", split="train", eval_batch_size=len(y_np)
    )
    a = Minimum("a", landscape.theta_of(model_a), "trained", state=landscape.state_or_own(None))
    b = Minimum("b", landscape.theta_of(model_b), "trained", state=landscape.state_or_own(None))
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np.astype(np.int64))
    criterion = nn.CrossEntropyLoss()
    losses = {}
    for m in (a, b):
        ours = landscape.loss(m.theta)
        with torch.no_grad():
            theirs = float(criterion(torch_from_theta(m.theta, landscape.layout)(x), y))
        if not np.isclose(ours, theirs, rtol=1e-5, atol=0):
            raise SystemExit(f"model {m.name}: Keras loss {ours} != torch loss {theirs}")
        losses[m.name] = {"keras": ours, "torch": theirs}
    usable, why = landscaper_status()
    ctx = {"landscape": landscape, "a": a, "b": b, "x": x, "y": y, "landscaper": usable}
    tasks = {"hessian": hessian_task, "slice": slice_task, "interpolation": interpolation_task}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        ctx["runs"] = Runs(folder)
        try:
            for name in filter(None, ARGS.tasks.split(",")):
                for r in tasks[name](ctx):
                    rows.append(r)
                    print(json.dumps(r), file=sys.stderr)
        finally:
            ctx["runs"].store.close()
    from importlib.metadata import version

    import loss_landscapes
    import pyhessian  # noqa: F401

    document = {
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "python": sys.version.split()[0],
            **backend.machine(),
        },
        "versions": {
            "keras": keras.__version__,
            "backend": backend.name,
            **backend.framework_versions(),
            "torch": torch.__version__,
            "pyhessian": version("pyhessian"),
            "loss-landscapes": getattr(loss_landscapes, "__version__", version("loss-landscapes")),
            "landscaper": version("landscaper") if usable else None,
        },
        "threads": ARGS.threads,
        "quick": ARGS.quick,
        "repeats": REPEATS,
        "timing": "wall clock; one warm-up call excluded; best of `repeats` calls",
        "note": ARGS.note,
        "model": {
            "architecture": "Dense 64 -> 64 (relu) -> 10 logits, identical weights in Keras "
            "and torch",
            "parameters": landscape.size,
            "data": f"digits train split, {len(y_np)} samples, one batch on both sides",
            "loss": "mean cross-entropy from logits",
            "losses": losses,
            "trace_samples": TRACE_SAMPLES,
        },
        "landscaper": {"used": usable, "why": why},
        "tasks": rows,
    }
    text = json.dumps(document, indent=2)
    print(markdown(document) if ARGS.markdown else text)
    if ARGS.out:
        with open(ARGS.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
