"""Energy barriers against known answers: the `barrier` probe and `saddle_bracket`.

* Convex E (linear regression, MSE): the straight segment never rises above its higher
  endpoint, so linear_max = max(E(A), E(B)), the barrier is ~0 and no DSS run is needed.
* A constructed two-valley E(w1, w2) = ((w1^2 - 1)^2 + a (w2 - b (1 - w1^2))^2) / 2 (see
  conftest.TwoValleyFiles): minima (+-1, 0) at E = 0; every path between them crosses w1 = 0
  where E >= 1/2, and the curved valley attains exactly 1/2, so s = 1/2 while the straight
  line peaks at (1 + a b^2) / 2. The DSS-bisection bracket must contain 1/2.
* B = a hidden-unit permutation of a ReLU MLP A: weight matching recovers A exactly (aligned
  distance 0, aligned barrier 0) while the raw straight line crosses a real barrier.
* An interrupted barrier run resumes to the same bracket as an uninterrupted one.

DSS settings the two-valley landscape needs (tuned here, not in the library): Adam with
learning_rate 0.05 (Adam moves ~learning_rate per step: with the default 1e-3 a bead barely
reaches the valley floor w2 ~ b within the default 2000 steps, and for a = 2, b = 1.5 the bracket
ends at [0.544, 0.552], missing s), points 40, the default max_steps 2000 and max_depth 10;
both plain and hyperplane projections work. With alpha = 0.97 a bead must reach 0.97 u, so
every level below 0.5 / 0.97 fails -- but a connected level's path maximum (~0.5007) tightens
`upper`, so the bracket still ends within the tolerance of 1/2.
"""

import keras
import numpy as np
import pytest
from conftest import CountingProgress, fit_full_batch, weight_landscape

from keras_landscape.data.specs import load_data
from keras_landscape.engine.landscape import Landscape
from keras_landscape.errors import UserError
from keras_landscape.experiment.runner import Minimum, RunSpec, execute
from keras_landscape.models.loading import load_model
from keras_landscape.progress import NullProgress
from keras_landscape.science.barriers import (
    BisectionOptions,
    linear_profile,
    relax_path,
    saddle_bracket,
)
from keras_landscape.science.dss import check_segments
from keras_landscape.store.hdf5 import Store

VERSIONS = {
    "package_version": "test",
    "keras_version": keras.__version__,
    "tensorflow_version": "test",
    "backend": "tensorflow",
}
TOL = 0.02  # BisectionOptions.tolerance (relative)
VALLEY_DSS = {"learning_rate": 0.05, "points": 40}

pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")


def _barrier_config(**kw):
    from keras_landscape.plugins.barrier import BarrierProbe

    return BarrierProbe.Config(**{**VALLEY_DSS, "tolerance": TOL, **kw})


def _read_run(out, run_name="barrier", attrs=()):
    with Store.open(out) as store:
        run = store.run(run_name)
        return {
            "status": run.status,
            "result": run.result,
            "keys": run.keys(),
            "data": {k: run.read(k) for k in run.keys()},
            "attrs": {k: run.get_attrs(k) for k in attrs},
        }


# ------------------------------------------------------------------------------ convex


def test_convex_barrier_is_zero(linreg_models, tmp_path):
    paths, data = linreg_models["paths"][:2], linreg_models["data"]
    out = tmp_path / "convex.h5"
    document = execute(RunSpec(models=paths, data=data, probes=["barrier"], out=str(out)))
    result = document["results"]["barrier"]
    landscape = Landscape(load_model(paths[0]), load_data(data))
    thetas = np.stack([landscape.theta_of(load_model(p)) for p in paths])
    ends = landscape.levels(thetas)
    assert ends[0] != pytest.approx(ends[1], rel=1e-3)  # two different points
    top = float(ends.max())
    assert result["endpoint_levels"] == pytest.approx(list(ends), rel=1e-6)
    # convex: the straight segment's maximum is the higher endpoint
    assert result["linear_max"] <= top * (1 + 1e-6)
    assert result["linear_max"] == pytest.approx(top, rel=1e-6)
    assert abs(result["barrier"]) <= TOL * top
    assert result["saddle_level"]["upper"] == pytest.approx(top, rel=1e-6)
    assert result["saddle_level"]["lower"] <= result["saddle_level"]["upper"]
    assert result["level_fn"] == "loss"
    assert result["aligned"] is None and result["relaxed_max"] is None
    (pair,) = result["pairs"]
    assert pair["bisections"] == []  # the straight line already settles it
    assert pair["estimators"]["upper"] == "linear"
    assert pair["distance"] == pytest.approx(
        float(np.linalg.norm(thetas[1].astype(np.float64) - thetas[0])), rel=1e-6
    )
    stored = _read_run(out)
    assert stored["status"] == "complete"
    profile = stored["data"]["pair_0_1/linear_level"]
    assert len(profile) == BisectionOptions().grid + 1
    np.testing.assert_allclose(stored["data"]["pair_0_1/linear_t"], np.linspace(0, 1, len(profile)))
    assert float(profile.max()) == pytest.approx(result["linear_max"], rel=1e-9)
    # E along the segment of a convex quadratic: (1-t)E(A) + tE(B) - t(1-t)c with c >= 0
    t = stored["data"]["pair_0_1/linear_t"]
    chord = (1 - t) * ends[0] + t * ends[1]
    assert np.all(profile <= chord * (1 + 1e-5))


# ------------------------------------------------------------------------- two valleys


@pytest.fixture(scope="module")
def valley_landscapes(two_valley):
    cache = {}

    def get(a, b):
        if (a, b) not in cache:
            cache[(a, b)] = two_valley.landscape(a, b)
        return cache[(a, b)]

    return get


def test_two_valley_energy_is_the_formula(two_valley, valley_landscapes):
    for a, b in ((1.0, 1.0), (2.0, 1.5)):
        landscape = valley_landscapes(a, b)
        assert landscape.size == 2
        w = np.random.default_rng(0).uniform(-1.5, 1.5, size=(50, 2)).astype(np.float32)
        w[:4] = [[-1, 0], [1, 0], [0, 0], [0, b]]
        expected = two_valley.energy(w, a, b)
        np.testing.assert_allclose(landscape.levels(w), expected, rtol=1e-5, atol=1e-6)
        assert expected[:4] == pytest.approx([0, 0, two_valley.linear_max(a, b), 0.5])
        # E >= 1/2 on the whole line w1 = 0 (the ridge every path must cross)
        w2 = np.append(np.linspace(-3, 3, 41), b)
        ridge = np.stack([np.zeros(42), w2], axis=1).astype(np.float32)
        assert landscape.levels(ridge).min() == pytest.approx(0.5, abs=1e-6)
        assert np.all(landscape.levels(ridge) >= 0.5 - 1e-6)


def _bracket(landscape, wa, wb, store_path, config, seed=0):
    a = Minimum("a", np.asarray(wa, np.float32), "test")
    b = Minimum("b", np.asarray(wb, np.float32), "test")
    store = Store.create(store_path, versions=VERSIONS, command="test")
    run = store.begin_run("barrier", "barrier", {})
    result = saddle_bracket(landscape, a, b, config, run, "pair", seed, NullProgress().task("x"))
    return result, store, run


@pytest.mark.parametrize(
    "a, b, mode",
    [(1.0, 1.0, "plain"), (1.0, 1.0, "hyperplane"), (2.0, 1.5, "plain")],
)
def test_saddle_bracket_contains_the_known_saddle(
    two_valley, valley_landscapes, tmp_path, a, b, mode
):
    landscape = valley_landscapes(a, b)
    config = _barrier_config(projection_mode=mode)
    result, store, run = _bracket(landscape, (-1.0, 0.0), (1.0, 0.0), tmp_path / "s.h5", config)
    with store:
        s = two_valley.SADDLE
        lower, upper = result["saddle_level"]["lower"], result["saddle_level"]["upper"]
        assert result["endpoint_levels"] == pytest.approx([0.0, 0.0], abs=1e-7)
        # the straight line peaks at (1 + a b^2) / 2 (t = 1/2 is on the grid)
        assert result["linear_max"] == pytest.approx(two_valley.linear_max(a, b), abs=1e-5)
        assert result["linear_barrier"] == pytest.approx(two_valley.linear_max(a, b), abs=1e-5)
        # the bracket holds s = 1/2 within the tolerance
        assert lower <= upper
        assert lower <= s + TOL * upper
        assert upper >= s - 1e-3  # DSS checks paths on a grid: a hair of numerical slack
        # A failure at u bounds s below only by its bead target, alpha of the way from the
        # minima (here at 0) up to u: the bracket closes to TOL plus that 1 - alpha
        resolution = TOL + (1 - config.alpha)
        assert (
            upper - lower <= resolution * upper * (1 + 1e-9)
            or len(result["bisections"]) == config.max_bisections
        )
        assert result["barrier"] == pytest.approx(upper - 0.0)
        assert result["barrier"] == pytest.approx(s, rel=2 * TOL)
        assert result["barrier_bracket"] == pytest.approx([lower, upper])
        assert result["estimators"]["upper"] == "dss-bisection"
        # bisections: every connected level above every failing one, none connected below s
        bisections = result["bisections"]
        assert 1 <= len(bisections) <= config.max_bisections
        connected = [x["level"] for x in bisections if x["connected"]]
        failed = [x["level"] for x in bisections if not x["connected"]]
        assert connected and failed
        assert max(failed) < min(connected)
        assert min(connected) >= s - 1e-3
        assert all(x["max_level"] <= x["level"] * (1 + 1e-6) for x in bisections if x["connected"])
        assert upper == pytest.approx(min(x["max_level"] for x in bisections if x["connected"]))
        # the best path is stored, lies in Omega_upper and goes through the curved valley
        prefix = result["best_path"]
        assert prefix is not None and prefix.startswith("pair/bisect_")
        beads = run.read(f"{prefix}/beads")[run.read(f"{prefix}/order")]
        np.testing.assert_array_equal(beads[0], [-1.0, 0.0])
        np.testing.assert_array_equal(beads[-1], [1.0, 0.0])
        assert len(beads) >= 3
        maxima = [
            c.maximum for c in check_segments(landscape, list(zip(beads, beads[1:])), config.points)
        ]
        assert max(maxima) == pytest.approx(upper, rel=1e-5)
        crossing = beads[np.argmin(np.abs(beads[:, 0]))]
        assert abs(crossing[0]) < 0.05
        assert crossing[1] == pytest.approx(b, abs=0.15)  # on the valley floor, not the line
        assert two_valley.energy(crossing, a, b)[0] >= s - 1e-6


def test_tight_tolerance_bracket_still_contains_the_saddle(two_valley, valley_landscapes, tmp_path):
    """a = 2, b = 1.5, tolerance 0.005 (< 1 - alpha = 0.03), other settings as above."""
    landscape = valley_landscapes(2.0, 1.5)
    tolerance = 0.005
    config = _barrier_config(tolerance=tolerance, max_bisections=12)
    result, store, _ = _bracket(landscape, (-1.0, 0.0), (1.0, 0.0), tmp_path / "s.h5", config)
    store.close()
    lower, upper = result["saddle_level"]["lower"], result["saddle_level"]["upper"]
    assert upper >= two_valley.SADDLE - 1e-3  # the upper end is right: a real path at ~0.507
    assert lower <= two_valley.SADDLE + tolerance * upper  # fails: lower = 0.5051


def test_saddle_bracket_with_a_known_upper_bound(two_valley, valley_landscapes, tmp_path):
    """An upper bound below the straight line's maximum starts the bisection there."""
    landscape = valley_landscapes(1.0, 1.0)
    config = _barrier_config()
    a = Minimum("a", np.array([-1.0, 0.0], np.float32), "test")
    b = Minimum("b", np.array([1.0, 0.0], np.float32), "test")
    with Store.create(tmp_path / "s.h5", versions=VERSIONS, command="test") as store:
        run = store.begin_run("barrier", "barrier", {})
        result = saddle_bracket(
            landscape, a, b, config, run, "pair", 0, NullProgress().task("x"), upper_bound=0.6
        )
        assert result["linear_max"] == pytest.approx(1.0, abs=1e-5)
        assert all(x["level"] < 0.6 for x in result["bisections"])
        lower, upper = result["saddle_level"]["lower"], result["saddle_level"]["upper"]
        assert lower <= 0.5 + TOL * upper and 0.5 - 1e-3 <= upper <= 0.6
        # and a bound that bisection cannot beat is reported as the estimator
        result = saddle_bracket(
            landscape,
            a,
            b,
            _barrier_config(max_bisections=0),
            run,
            "other",
            0,
            NullProgress().task("x"),
            upper_bound=0.7,
        )
        assert result["saddle_level"]["upper"] == 0.7
        assert result["estimators"]["upper"] == "through other minima"
        assert result["bisections"] == []


def test_relaxation_never_goes_below_the_saddle(two_valley, valley_landscapes, tmp_path):
    """The nudged elastic band lowers a path's maximum to s = 1/2, but not below.

    The string is laid by hand: A, a middle bead off the valley floor at (0, 0.5), where
    E = (1 + 0.25) / 2 = 0.625, and B.
    """
    from keras_landscape.store.strings import StringRecord

    landscape = valley_landscapes(1.0, 1.0)
    config = _barrier_config(relax="neb", relax_steps=100, relax_learning_rate=0.05)
    store = Store.create(tmp_path / "s.h5", versions=VERSIONS, command="test")
    with store:
        run = store.begin_run("barrier", "barrier", {})
        record = StringRecord(run, "manual")
        rows = [
            record.add_bead(np.asarray(w, np.float32), 0.0, 0, 0)
            for w in ((-1.0, 0.0), (0.0, 0.5), (1.0, 0.0))
        ]
        record.commit_depth(rows, 1)
        relaxed = relax_path(landscape, run, "manual", config)
        assert relaxed is not None
        assert relaxed["path_max_before"] >= 0.625 - 1e-3  # the middle bead (or beside it)
        # symmetric ends: the band slides the middle bead along w1 = 0 to the saddle (0, b)
        assert relaxed["kept"]
        assert 0.5 - 1e-5 <= relaxed["relaxed_max"] < relaxed["path_max_before"]
        assert relaxed["relaxed_max"] == pytest.approx(0.5, abs=1e-4)
        beads = run.read("manual_relaxed/beads")
        np.testing.assert_allclose(beads[0], [-1.0, 0.0])
        np.testing.assert_allclose(beads[-1], [1.0, 0.0])
        middle = beads[np.argmin(np.abs(beads[:, 0]))]
        np.testing.assert_allclose(middle, [0.0, 1.0], atol=1e-2)


def test_barrier_probe_end_to_end_on_two_valleys(two_valley, tmp_path):
    paths = [two_valley.save("left", (-1.0, 0.0)), two_valley.save("right", (1.0, 0.0))]
    out = tmp_path / "valley.h5"
    spec = RunSpec(
        models=paths,
        data=two_valley.data,
        probes=["barrier"],
        options={**VALLEY_DSS, "relax": "neb", "relax_steps": 50, "relax_learning_rate": 0.05},
        custom_objects=two_valley.custom_objects,
        out=str(out),
    )
    result = execute(spec)["results"]["barrier"]
    lower, upper = result["saddle_level"]["lower"], result["saddle_level"]["upper"]
    assert result["linear_max"] == pytest.approx(1.0, abs=1e-5)
    assert (
        lower <= 0.5 + TOL * upper and upper >= 0.5 - 1e-3 and upper - lower <= (TOL + 0.03) * upper
    )
    assert result["barrier"] == pytest.approx(upper)
    assert result["endpoint_levels"] == pytest.approx([0.0, 0.0], abs=1e-7)
    if upper > 0.5 + 1e-4:  # room to relax: the band lowers the best path's maximum
        assert result["relaxed_max"] is not None
        assert 0.5 - 1e-5 <= result["relaxed_max"] <= upper
        assert result["pairs"][0]["relaxed_barrier"] == pytest.approx(result["relaxed_max"])
    else:  # bisection already found a path at the saddle: nothing to relax
        assert result["relaxed_max"] is None
    (pair,) = result["pairs"]
    assert pair["distance"] == pytest.approx(2.0)
    prefixes = [f"pair_0_1/bisect_{k}" for k in range(len(pair["bisections"]))]
    stored = _read_run(out, attrs=prefixes)
    assert stored["status"] == "complete"
    assert stored["data"]["pair_0_1/linear_level"].max() == pytest.approx(1.0, abs=1e-5)
    for k, bisection in enumerate(pair["bisections"]):
        verdict = stored["attrs"][f"pair_0_1/bisect_{k}"]["verdict"]
        assert verdict["connected"] == bisection["connected"]
        assert verdict["level"] == pytest.approx(bisection["level"])


def test_barrier_options_are_validated(two_valley, tmp_path):
    paths = [two_valley.save("left", (-1.0, 0.0)), two_valley.save("right", (1.0, 0.0))]
    cases = (
        ({"tolerance": 0.0}, "tolerance > 0"),
        ({"grid": 1}, "grid >= 2"),
        ({"relax": "spline"}, "Unknown relax"),
        ({"align": "sorting"}, "Unknown align"),
    )
    for k, (options, message) in enumerate(cases):
        spec = RunSpec(
            models=paths,
            data=two_valley.data,
            probes=["barrier"],
            options=options,
            custom_objects=two_valley.custom_objects,
            out=str(tmp_path / f"{k}.h5"),
        )
        with pytest.raises(UserError, match=message):
            execute(spec)


# ------------------------------------------------------------------------------ resume


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("inside the first DSS", marks=pytest.mark.slow),
        pytest.param("half way", marks=(pytest.mark.slow, pytest.mark.ci)),
    ],
)
def test_interrupted_barrier_run_resumes_to_the_same_bracket(two_valley, tmp_path, where):
    """a = 2, b = 1.5: the straight line peaks at 2.75, so bisection takes ~7 DSS runs.

    'inside the first DSS' interrupts at the check of depth 1 of the first bisection (its
    depth-1 bead committed, no verdict yet); 'half way' interrupts a later bisection.
    """
    paths = [
        two_valley.save("left_a2", (-1.0, 0.0), 2.0, 1.5),
        two_valley.save("right_a2", (1.0, 0.0), 2.0, 1.5),
    ]

    def spec(out, **kw):
        return RunSpec(
            models=paths,
            data=two_valley.data,
            probes=["barrier"],
            options=dict(VALLEY_DSS),
            custom_objects=two_valley.custom_objects,
            out=str(out),
            **kw,
        )

    counting = CountingProgress()
    full = execute(spec(tmp_path / "full.h5"), counting)["results"]["barrier"]
    assert counting.updates >= 4
    want = full["pairs"][0]["bisections"]
    assert len(want) >= 3 and want[0]["connected"] and want[0]["beads"] >= 3
    out = tmp_path / "resumed.h5"
    interrupt_after = 2 if where == "inside the first DSS" else counting.updates // 2 + 1
    with pytest.raises(KeyboardInterrupt):
        execute(spec(out), CountingProgress(interrupt_after=interrupt_after))
    partial = _read_run(out, attrs=["pair_0_1/bisect_0"])
    assert partial["status"] == "interrupted" and partial["result"] is None
    if where == "inside the first DSS":
        assert partial["attrs"]["pair_0_1/bisect_0"]["depth_done"] == 1
        assert "verdict" not in partial["attrs"]["pair_0_1/bisect_0"]
    else:
        assert "verdict" in partial["attrs"]["pair_0_1/bisect_0"]
    resumed = execute(spec(out, resume=True))["results"]["barrier"]
    for key in ("linear_max", "endpoint_levels", "barrier"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-6), key
    assert resumed["saddle_level"]["lower"] == pytest.approx(
        full["saddle_level"]["lower"], rel=1e-6
    )
    assert resumed["saddle_level"]["upper"] == pytest.approx(
        full["saddle_level"]["upper"], rel=1e-6
    )
    got = resumed["pairs"][0]["bisections"]
    assert [(x["level"], x["connected"], x["reason"], x["beads"]) for x in got] == [
        (x["level"], x["connected"], x["reason"], x["beads"]) for x in want
    ]
    assert [x["max_level"] for x in got] == pytest.approx([x["max_level"] for x in want], rel=1e-6)
    assert _read_run(out)["status"] == "complete"
    with Store.open(out) as store:
        assert store.run("barrier").get_attrs()["resumed"] == 1


# --------------------------------------------------------------- permutation alignment


def _mlp():
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)],
        name="mlp",
    )


@pytest.fixture(scope="module")
def permuted_pair(tmp_path_factory):
    """A trained ReLU MLP A and B = A with its 8 hidden units permuted (the same function)."""
    pytest.importorskip("keras_landscape.models.align")
    tmp = tmp_path_factory.mktemp("permuted")
    spec = "teacher:d=4,h=3,n=200,n_test=100,seed=0"
    data = load_data(spec)
    keras.utils.set_random_seed(1)
    a = fit_full_batch(_mlp(), data.x_train, data.y_train, 300, 0.03)
    a.compile(loss="mse")
    b = keras.models.clone_model(a)
    b.compile(loss="mse")
    perm = np.random.default_rng(0).permutation(8)
    assert not np.array_equal(perm, np.arange(8))
    kernel, bias, out_kernel, out_bias = a.get_weights()
    b.set_weights([kernel[:, perm], bias[perm], out_kernel[perm], out_bias])
    a.save(tmp / "A.keras")
    b.save(tmp / "B.keras")
    return {"paths": [str(tmp / "A.keras"), str(tmp / "B.keras")], "data": spec, "perm": perm}


def test_permuted_pair_aligns_to_zero_barrier(permuted_pair, tmp_path):
    paths, data = permuted_pair["paths"], permuted_pair["data"]
    spec = RunSpec(
        models=paths,
        data=data,
        probes=["barrier"],
        options={"align": "weight-matching", "max_bisections": 0},
        out=str(tmp_path / "aligned.h5"),
    )
    result = execute(spec)["results"]["barrier"]
    landscape = Landscape(load_model(paths[0]), load_data(data))
    theta_a, theta_b = (landscape.theta_of(load_model(p)) for p in paths)
    ends = result["endpoint_levels"]
    assert ends[0] == pytest.approx(ends[1], rel=1e-5)  # a symmetry of E
    level = max(ends)
    raw_distance = float(np.linalg.norm(theta_b.astype(np.float64) - theta_a))
    assert result["pairs"][0]["distance"] == pytest.approx(raw_distance, rel=1e-6)
    aligned = result["aligned"]
    assert aligned is not None
    assert aligned["distance_raw"] == pytest.approx(raw_distance, rel=1e-6)
    assert aligned["distance"] <= 1e-6 * raw_distance
    # aligned unit i is B's unit perm[i], and B's unit j is A's unit permutation[j]
    (groups,) = aligned["permutations"].values()
    np.testing.assert_array_equal(np.asarray(groups), np.argsort(permuted_pair["perm"]))
    assert aligned["endpoint_levels"] == pytest.approx(ends, rel=1e-5)
    assert aligned["linear_max"] == pytest.approx(level, rel=1e-5)
    assert abs(aligned["barrier"]) <= 1e-5 * level
    # the raw straight line crosses a barrier many times the endpoint level
    assert result["linear_max"] > 5 * level
    raw_barrier = result["pairs"][0]["linear_barrier"]
    assert raw_barrier > 4 * level
    assert raw_barrier > 100 * max(abs(aligned["barrier"]), 1e-9)
    # the raw profile really has the bump: its midpoint averages two different units' weights
    ts, levels = linear_profile(landscape, theta_a, theta_b, 20)
    assert float(levels.max()) == pytest.approx(result["linear_max"], rel=0.05)


@pytest.fixture(scope="module")
def lstm_pair(tmp_path_factory):
    """Two saved LSTM regressors of sequences (the LSTM is the first weighted layer)."""
    tmp = tmp_path_factory.mktemp("lstm")
    rng = np.random.default_rng(0)
    starts = rng.integers(0, 5, 40)
    tokens = np.array([[(s + i) % 5 for i in range(7)] for s in starts], np.int32)
    series = (tokens[..., None] / 4.0).astype(np.float32)  # predict the next value (regression)
    np.savez(tmp / "series.npz", x=series[:, :-1], y=series[:, -1])
    paths = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [keras.Input((6, 1)), keras.layers.LSTM(4), keras.layers.Dense(1)], name="lstm_net"
        )
        model.compile(loss="mse")
        paths.append(str(tmp / f"lstm_{seed}.keras"))
        model.save(paths[-1])
    return {"paths": paths, "data": f"npz:{tmp / 'series.npz'}"}


def test_weight_matching_refuses_an_lstm(lstm_pair, tmp_path):
    pytest.importorskip("keras_landscape.models.align")
    spec = RunSpec(
        models=lstm_pair["paths"],
        data=lstm_pair["data"],
        probes=["barrier"],
        options={"align": "weight-matching", "max_bisections": 0},
        out=str(tmp_path / "lstm.h5"),
        xla=False,
    )
    with pytest.raises(
        UserError, match=r"Weight matching cannot align layer '[^']+' \(LSTM\)"
    ) as info:
        execute(spec)
    assert "Dense" in str(info.value)  # says what is supported
    with Store.open(tmp_path / "lstm.h5") as store:
        assert store.run("barrier").status == "failed"


def test_weight_matching_on_an_lstm_exits_2_from_the_cli(lstm_pair, tmp_path, capsys):
    pytest.importorskip("keras_landscape.models.align")
    from keras_landscape.cli.main import EXIT_BAD_INPUT, main

    capsys.readouterr()
    code = main(
        [
            "-q",
            "probe",
            *lstm_pair["paths"],
            "--data",
            lstm_pair["data"],
            "--probe",
            "barrier",
            "--set",
            "align=weight-matching",
            "--set",
            "max_bisections=0",
            "--xla",
            "off",
            "--out",
            str(tmp_path / "cli.h5"),
        ]
    )
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert "Weight matching cannot align" in err and "Traceback" not in err


# ------------------------------------------------------------- a barrier high above zero


def _offset_square(t):
    """(w x)^2 beside a constant 7: with targets (1, 0), E(w) = ((w^2 - 1)^2 + 49) / 2."""
    return keras.ops.concatenate([t * t, 0.0 * t + 7.0], axis=-1)


@pytest.fixture(scope="module")
def raised_double_well(tmp_path_factory):
    """A double well lifted far above zero: minima w = +-1 at E = 24.5, saddle w = 0 at
    E = 25, so the barrier is 2% of the minima's level."""
    folder = tmp_path_factory.mktemp("raised_well")
    return weight_landscape(folder, 1, _offset_square, [1.0, 0.0])


def test_bracket_closes_on_a_barrier_small_against_the_minima_level(raised_double_well, tmp_path):
    """Beads of a bisection test at u aim alpha of the way from the higher minimum up to u.
    The plain DSS target alpha * u lies below both minima here (0.97 x 25 < 24.52), where no
    bead can go: every test would fail and the bracket would stay [24.52, 25]."""
    a, b = np.array([-1.0], np.float32), np.array([1.1], np.float32)
    floor = float(raised_double_well.levels(b[None])[0])
    assert floor == pytest.approx((0.21**2 + 49) / 2, rel=1e-6)
    saddle = 25.0
    tolerance = 0.002  # 5e-2 in level units: well inside the 0.48 gap
    config = _barrier_config(tolerance=tolerance, max_bisections=12, max_depth=3)
    result, store, _ = _bracket(raised_double_well, a, b, tmp_path / "s.h5", config)
    store.close()
    lower, upper = result["saddle_level"]["lower"], result["saddle_level"]["upper"]
    # DSS checks paths on a grid of points, which may step over w = 0 by a hair
    assert lower <= saddle * (1 + 1e-6) and upper >= saddle - 1e-3
    assert upper - lower <= tolerance * upper * (1 + 1e-9)
    assert lower > floor + 0.5 * (saddle - floor)  # the failures raised it well above the floor
    targets = [x["bead_target"] for x in result["bisections"]]
    assert all(floor < t < x["level"] for t, x in zip(targets, result["bisections"]))


def test_a_finished_bisection_run_counts_for_the_level_it_was_run_at(
    two_valley, valley_landscapes, tmp_path
):
    """A store from an earlier rule holds bisect_0 run at another level than this rule
    would choose: resuming, the bracket takes the stored run's own level and bead target
    (a path found at 0.9 bounds s by 0.9 and its maximum, not by today's first level)."""
    from keras_landscape.science.pairs import connect_pair

    landscape = valley_landscapes(1.0, 1.0)
    config = _barrier_config(max_bisections=1)
    a = Minimum("a", np.array([-1.0, 0.0], np.float32), "test")
    b = Minimum("b", np.array([1.0, 0.0], np.float32), "test")
    with Store.create(tmp_path / "s.h5", versions=VERSIONS, command="test") as store:
        run = store.begin_run("barrier", "barrier", {})
        task = NullProgress().task("x")
        stored = connect_pair(landscape, a, b, 0.9, config, run, "pair/bisect_0", 0, task)
        assert stored["connected"]
        result = saddle_bracket(landscape, a, b, config, run, "pair", 0, task)
    (first,) = result["bisections"]
    assert first["level"] == pytest.approx(0.9)
    assert first["bead_target"] == pytest.approx(config.alpha * 0.9)
    assert result["saddle_level"]["upper"] == pytest.approx(min(0.9, stored["max_level"]))
