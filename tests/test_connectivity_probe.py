"""The `connectivity` and `curviness` probes end to end: RunSpec -> execute -> HDF5 store.

The pair is a width-2 two-layer linear net A and its hidden-unit swap B (E(A) = E(B), a ridge
on the straight line, a connected level set), so DSS needs several depths: enough to
interrupt it half way and check that a resumed run finishes exactly like an uninterrupted one.
"""

import re

import keras
import numpy as np
import pytest
from conftest import CountingProgress, fit_full_batch

from keras_landscape.data.specs import load_data
from keras_landscape.engine.landscape import Landscape
from keras_landscape.experiment.runner import RunSpec, execute
from keras_landscape.models.loading import load_model
from keras_landscape.science.dss import check_segments
from keras_landscape.store.hdf5 import Store

LEVEL = 0.05  # five times the noise floor (0.1^2) of the linear data
POINTS = 20


@pytest.fixture(scope="module")
def swap_pair(tmp_path_factory):
    """Two saved models (A, B = A with its hidden units swapped) and the data spec."""
    tmp = tmp_path_factory.mktemp("swap_pair")
    rng = np.random.default_rng(0)
    n, d = 200, 3
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=n)).astype(np.float32)[:, None]
    np.savez(tmp / "linear.npz", x=x, y=y)

    def make():
        return keras.Sequential(
            [
                keras.Input((d,)),
                keras.layers.Dense(2, use_bias=False),
                keras.layers.Dense(1, use_bias=False),
            ]
        )

    keras.utils.set_random_seed(1)
    a = fit_full_batch(make(), x, y, 200, 0.05)
    b = make()
    b.compile(loss="mse")
    w, v = a.layers[0].kernel.numpy(), a.layers[1].kernel.numpy()
    b.layers[0].kernel.assign(w[:, ::-1])
    b.layers[1].kernel.assign(v[::-1])
    a.save(tmp / "a.keras")
    b.save(tmp / "b.keras")
    data = f"npz:{tmp / 'linear.npz'}"
    landscape = Landscape(load_model(tmp / "a.keras"), load_data(data))
    return {
        "a": str(tmp / "a.keras"),
        "b": str(tmp / "b.keras"),
        "data": data,
        "landscape": landscape,
    }


def _spec(pair, out, **kw):
    options = {"level": LEVEL, "points": POINTS, **kw.pop("options", {})}
    return RunSpec(
        models=[pair["a"], pair["b"]],
        data=pair["data"],
        probes=["connectivity"],
        options=options,
        out=str(out),
        seed=kw.pop("seed", 0),
        **kw,
    )


@pytest.fixture(scope="module")
def uninterrupted(swap_pair, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full.h5"
    document = execute(_spec(swap_pair, out, options={"batch_size": 64}))
    return out, document


def _read(out, run_name, prefix):
    with Store.open(out) as store:
        run = store.run(run_name)
        data = {
            key.split("/")[-1]: run.read(key) for key in run.keys() if key.startswith(prefix + "/")
        }
        data["status"] = run.status
        data["attrs"] = run.get_attrs(prefix)
        data["models"] = {name: store.read_model(name)["theta"] for name in store.model_names()}
        data["result"] = run.result
    return data


def test_connectivity_probe_writes_the_string(swap_pair, uninterrupted):
    out, document = uninterrupted
    result = document["results"]["connectivity"]
    assert result["connected"] is True and result["reason"] == "connected"
    assert result["level"] == LEVEL
    assert result["beads"] >= 3 and result["beads_include_endpoints"] is True
    assert result["normalized_length"] > 1.0
    assert result["max_level"] <= LEVEL
    assert len(result["pairs"]) == 1 and result["pairs"][0]["a"] == "a"
    stored = _read(out, "connectivity", "pair_0_1")
    assert stored["status"] == "complete"
    for key in (
        "beads",
        "bead_level",
        "bead_depth",
        "bead_steps",
        "order",
        "curves",
        "curve_segments",
    ):
        assert key in stored, key
    beads, order = stored["beads"], stored["order"]
    landscape = swap_pair["landscape"]
    assert beads.shape[1] == landscape.size
    assert len(order) == result["beads"] and order[0] == 0 and order[-1] == 1
    string = beads[order]
    np.testing.assert_array_equal(string[0], landscape.theta_of(load_model(swap_pair["a"])))
    np.testing.assert_array_equal(string[-1], landscape.theta_of(load_model(swap_pair["b"])))
    np.testing.assert_array_equal(string[0], stored["models"]["a"])
    np.testing.assert_array_equal(string[-1], stored["models"]["b"])
    # stored bead levels are the levels of the stored beads
    np.testing.assert_allclose(stored["bead_level"], landscape.levels(beads), rtol=1e-5)
    assert np.all(stored["bead_level"][order] <= LEVEL)
    # lengths recomputed from the stored string
    steps = np.linalg.norm(np.diff(string.astype(np.float64), axis=0), axis=1)
    distance = np.linalg.norm(string[-1].astype(np.float64) - string[0])
    assert result["normalized_length"] == pytest.approx(steps.sum() / distance, rel=1e-6)
    # every segment of the final string has its curve, and the curves give max_level
    assert stored["curves"].shape == (len(stored["curve_segments"]), POINTS + 1)
    curves = {
        (int(left), int(right)): c
        for (left, right, _), c in zip(stored["curve_segments"], stored["curves"])
    }
    final = [curves[(int(p), int(q))] for p, q in zip(order, order[1:])]
    assert max(c.max() for c in final) == pytest.approx(result["max_level"], rel=1e-9)
    recomputed = check_segments(landscape, list(zip(string, string[1:])), POINTS)
    for c, r in zip(final, recomputed):
        np.testing.assert_allclose(c, r.levels, rtol=1e-5)
    assert stored["attrs"]["depth_done"] == result["depth"]
    assert stored["attrs"]["verdict"]["beads"] == result["beads"]


@pytest.mark.slow
@pytest.mark.ci
def test_interrupted_run_resumes_to_the_same_result(swap_pair, uninterrupted, tmp_path):
    full_out, full_document = uninterrupted
    full = full_document["results"]["connectivity"]
    assert full["depth"] >= 3  # deep enough to be interrupted half way
    out = tmp_path / "resumed.h5"
    progress = CountingProgress(interrupt_after=3)  # during the check of depth 2
    with pytest.raises(KeyboardInterrupt):
        execute(_spec(swap_pair, out, options={"batch_size": 64}), progress)
    partial = _read(out, "connectivity", "pair_0_1")
    assert partial["status"] == "interrupted"
    assert partial["result"] is None
    assert partial["attrs"]["depth_done"] == 2
    assert "verdict" not in partial["attrs"]

    resumed_document = execute(_spec(swap_pair, out, options={"batch_size": 64}, resume=True))
    resumed = resumed_document["results"]["connectivity"]
    for key in ("connected", "beads", "depth", "reason", "projection_steps"):
        assert resumed[key] == full[key], key
    for key in ("normalized_length", "path_length", "distance", "max_level"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-6), key
    a, b = _read(out, "connectivity", "pair_0_1"), _read(full_out, "connectivity", "pair_0_1")
    assert a["status"] == "complete"
    np.testing.assert_allclose(a["beads"][a["order"]], b["beads"][b["order"]], rtol=1e-6)
    np.testing.assert_array_equal(a["bead_depth"], b["bead_depth"])
    with Store.open(out) as store:
        assert store.run("connectivity").get_attrs()["resumed"] == 1


@pytest.mark.slow
@pytest.mark.ci
def test_resumed_store_has_no_duplicate_curves(swap_pair, uninterrupted, tmp_path):
    full_out, _ = uninterrupted
    out = tmp_path / "resumed.h5"
    with pytest.raises(KeyboardInterrupt):
        execute(_spec(swap_pair, out, options={"batch_size": 64}), CountingProgress(3))
    execute(_spec(swap_pair, out, options={"batch_size": 64}, resume=True))
    a, b = _read(out, "connectivity", "pair_0_1"), _read(full_out, "connectivity", "pair_0_1")
    assert len(a["curve_segments"]) == len(b["curve_segments"])
    np.testing.assert_array_equal(a["curve_segments"], b["curve_segments"])


def test_resuming_a_complete_run_reuses_it(swap_pair, uninterrupted):
    out, document = uninterrupted
    again = execute(_spec(swap_pair, out, options={"batch_size": 64}, resume=True))
    assert again["results"]["connectivity"] == document["results"]["connectivity"]


@pytest.mark.slow
@pytest.mark.ci
def test_default_level_is_the_higher_endpoint_plus_margin(swap_pair, tmp_path):
    landscape = swap_pair["landscape"]
    ends = landscape.levels(np.stack([landscape.theta_of(load_model(swap_pair[k])) for k in "ab"]))
    spec = RunSpec(
        models=[swap_pair["a"], swap_pair["b"]],
        data=swap_pair["data"],
        probes=["connectivity"],
        options={"margin": 0.5},
        out=str(tmp_path / "d.h5"),
    )
    result = execute(spec)["results"]["connectivity"]
    assert result["level"] == pytest.approx(1.5 * float(ends.max()), rel=1e-6)
    assert result["connected"] is True and result["max_level"] <= result["level"]


# ------------------------------------------------------------------------------ curviness


def _cubic_mlp():
    return keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )


@pytest.fixture(scope="module")
def cubic_models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cubic")
    data = load_data("cubic:n=200")
    paths = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        model = fit_full_batch(_cubic_mlp(), data.x_train, data.y_train, 400, 0.02)
        paths.append(str(tmp / f"m{seed}.keras"))
        model.save(paths[-1])
    landscape = Landscape(load_model(paths[0]), data, level_fn="mean_absolute_error")
    return paths, landscape


@pytest.mark.slow
@pytest.mark.ci
def test_curviness_probe_tables_one_row_per_level(cubic_models, tmp_path):
    paths, landscape = cubic_models
    ends = [landscape.level(landscape.theta_of(load_model(p))) for p in paths]
    assert max(ends) < 0.2  # both endpoints lie below both levels
    spec = RunSpec(
        models=paths,
        data="cubic:n=200",
        probes=["curviness"],
        options={"levels": "0.3,0.2", "max_depth": 4, "learning_rate": 0.01},
        level_fn="mean_absolute_error",
        out=str(tmp_path / "c.h5"),
    )
    result = execute(spec)["results"]["curviness"]
    assert result["levels"] == [0.3, 0.2]
    assert result["level_fn"] == "mean_absolute_error"
    for key in (
        "normalized_length",
        "normalized_length_sd",
        "beads",
        "beads_sd",
        "pairs",
        "failed",
        "reasons",
        "details",
    ):
        assert len(result[key]) == 2, key
    for k, level in enumerate(result["levels"]):
        assert result["pairs"][k] + result["failed"][k] == 1  # one pair of models
        (detail,) = result["details"][k]
        assert detail["level"] == level
        assert detail["prefix"] == f"level_{k}/pair_0_1"
        assert detail["endpoint_levels"] == pytest.approx(ends, rel=1e-5)
        if detail["connected"]:
            assert result["normalized_length"][k] == pytest.approx(detail["normalized_length"])
            assert result["normalized_length"][k] >= 1.0 - 1e-6
            assert result["beads"][k] == detail["beads"] >= 2
            assert result["normalized_length_sd"][k] == 0.0
            assert detail["max_level"] <= level
        else:
            assert result["reasons"][k] == {detail["reason"]: 1}
    with Store.open(tmp_path / "c.h5") as store:
        run = store.run("curviness")
        assert run.status == "complete"
        for k in range(2):
            order = run.read(f"level_{k}/pair_0_1/order")
            assert order[0] == 0 and order[-1] == 1


@pytest.mark.slow
@pytest.mark.ci
def test_curviness_with_one_model_trains_a_partner(cubic_models, tmp_path):
    paths, landscape = cubic_models
    model_level = landscape.level(landscape.theta_of(load_model(paths[0])))
    # seed= pins the data: a synthetic spec's seed otherwise defaults to the run's --seed
    spec = RunSpec(
        models=paths[:1],
        data="cubic:n=200,seed=0",
        probes=["curviness"],
        options={
            "levels": "0.3,0.25",
            "partners": 1,
            "partner_steps": 4000,
            "partner_learning_rate": 0.02,
            "max_depth": 3,
            "learning_rate": 0.01,
        },
        level_fn="mean_absolute_error",
        out=str(tmp_path / "p.h5"),
        seed=3,
    )
    result = execute(spec)["results"]["curviness"]
    assert [p + f for p, f in zip(result["pairs"], result["failed"])] == [1, 1]
    with Store.open(tmp_path / "p.h5") as store:
        run = store.run("curviness")
        partners = run.read("partners/theta")
        assert partners.shape == (1, landscape.size)
        level = float(run.read("partners/level")[0])
        steps = int(run.read("partners/steps")[0])
    assert level == pytest.approx(landscape.level(partners[0]), rel=1e-5)
    # trained down to the model's own level within its budget (checked every 50 steps)
    assert level <= model_level
    assert 0 < steps < 4000 and steps % 50 == 0
    theta = landscape.theta_of(load_model(paths[0]))
    assert np.linalg.norm(partners[0] - theta) > 0.1  # a different minimum
    (detail,) = result["details"][0]
    assert (detail["a"], detail["b"]) == ("m1", "m1_partner0")
    np.testing.assert_allclose(detail["endpoint_levels"], [model_level, level], rtol=1e-5)


# ------------------------------------------------------------------- endpoint protocols


def _curviness_spec(paths, out, **options):
    return RunSpec(
        models=paths,
        data="cubic:n=200,seed=0",
        probes=["curviness"],
        options={"max_depth": 3, "learning_rate": 0.01, **options},
        level_fn="mean_absolute_error",
        out=str(out),
        seed=3,
    )


def test_fresh_endpoints_are_new_models_trained_to_each_level(cubic_models, tmp_path):
    """endpoints='fresh' (the authors' scripts): per level and pair, two models from random
    inits trained until level <= endpoint_target x level; the input models only fix the
    architecture and the pairs."""
    paths, landscape = cubic_models
    given = [landscape.theta_of(load_model(p)) for p in paths]
    levels = [0.2, 0.15]
    spec = _curviness_spec(
        paths,
        tmp_path / "f.h5",
        levels="0.2,0.15",
        endpoints="fresh",
        endpoint_target=1.0,
        partner_steps=4000,
        partner_learning_rate=0.02,
    )
    result = execute(spec)["results"]["curviness"]
    with Store.open(tmp_path / "f.h5") as store:
        run = store.run("curviness")
        thetas = run.read("fresh_endpoints/theta")
        stored_levels = run.read("fresh_endpoints/level")
        steps = run.read("fresh_endpoints/steps")
    assert thetas.shape == (4, landscape.size)  # 2 levels x 1 pair x 2 sides
    for k, level in enumerate(levels):
        (detail,) = result["details"][k]
        ends = stored_levels[2 * k : 2 * k + 2]
        # each trained from scratch, stopped at the first check at or below the level itself
        assert np.all(ends <= level) and np.all(steps[2 * k : 2 * k + 2] % 50 == 0)
        np.testing.assert_allclose(detail["endpoint_levels"], ends, rtol=1e-5)
        np.testing.assert_allclose(landscape.levels(thetas[2 * k : 2 * k + 2]), ends, rtol=1e-5)
        assert detail["a"] == f"fresh_{k}_0_1_0" and detail["b"] == f"fresh_{k}_0_1_1"
        for theta in thetas[2 * k : 2 * k + 2]:
            assert min(np.linalg.norm(theta - g) for g in given) > 0.1
    assert not np.allclose(thetas[0], thetas[1])  # two different random inits
    assert steps.max() > 0
    # resumed: the stored endpoints are reused, not trained again
    again = execute(RunSpec(**{**vars(spec), "resume": True}))["results"]["curviness"]
    assert again["normalized_length"] == result["normalized_length"]


@pytest.mark.slow
def test_endpoint_target_sets_how_far_below_the_level_endpoints_are_retrained(
    cubic_models, tmp_path
):
    paths, landscape = cubic_models
    ends = np.array([landscape.level(landscape.theta_of(load_model(p))) for p in paths])
    level = 0.8 * ends.max()
    above = ends > level  # the endpoints to retrain; the other one is kept as it is
    reached = {}
    for target in (1.0, 0.95):
        out = tmp_path / f"t{target}.h5"
        execute(
            _curviness_spec(
                paths, out, levels=str(level), endpoints="retrain", endpoint_target=target
            )
        )
        with Store.open(out) as store:
            thetas = store.run("curviness").read("level_0/endpoints/theta")
        reached[target] = landscape.levels(thetas)
        assert np.all(reached[target][above] <= target * level)
        np.testing.assert_allclose(reached[target][~above], ends[~above], rtol=1e-5)
    # Training follows one trajectory and stops at the first check below target x level, so
    # the lower target stops at the same step or later: at or below (one step may pass both
    # targets at once, and then the two are equal: no strict inequality).
    assert np.all(reached[0.95][above] <= reached[1.0][above] * (1 + 1e-6))


@pytest.mark.parametrize(
    "options, words",
    [
        ({"endpoints": "scratch"}, "endpoints must be one of stopped, retrain, fresh"),
        ({"endpoints": "fresh", "retrain_endpoints": True}, "contradicts"),
        ({"endpoint_target": 1.5}, "endpoint_target must be in (0, 1]"),
    ],
)
def test_bad_endpoint_options_are_refused_before_any_work(options, words):
    from keras_landscape.errors import UserError
    from keras_landscape.experiment.plan import build_probes

    with pytest.raises(UserError, match=re.escape(words)):
        build_probes(RunSpec(models=[], data="cubic", probes=["curviness"], options=options))


def test_weights_only_length_leaves_the_biases_out(cubic_models):
    """The authors' cubic script measured lengths over weights only: bias_mask picks the 9
    bias entries of the 1-4-4-1 net; a detour through the biases alone lengthens the path
    over all parameters (sqrt 2 here) and not over the weights."""
    from keras_landscape.science.dss import Bead, _lengths, _weights_only, connect

    _, landscape = cubic_models
    mask = landscape.layout.bias_mask()
    assert mask.sum() == 4 + 4 + 1 and mask.size == landscape.size
    a = np.zeros(landscape.size, np.float32)
    b = a.copy()
    b[~mask] = 2.0 / np.sqrt((~mask).sum())  # ||b - a|| = 2, all in the weights
    middle = (a + b) / 2
    middle[mask] = 1.0 / np.sqrt(mask.sum())  # 1 away from the chord, all in the biases
    string = [Bead(i, t, 0.0) for i, t in enumerate((a, middle, b))]
    assert _lengths(string)[2] == pytest.approx(np.sqrt(2), rel=1e-6)
    assert _lengths(string, _weights_only(landscape))[2] == pytest.approx(1.0, rel=1e-6)
    theta = landscape.initial_theta()
    connection = connect(landscape, theta, theta + b, level=1e3)  # far above: straight
    assert connection.beads == 2
    assert connection.normalized_length == connection.weights_normalized_length == 1.0
