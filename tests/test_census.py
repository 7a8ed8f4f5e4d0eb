"""`klandscape census`: the sweep schema, the grid, one store for every point, resume, the
census table and figures; the quadratic activation and the quadratic teacher it needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli

from keras_landscape.cli.main import EXIT_BAD_INPUT
from keras_landscape.errors import ConfigError
from keras_landscape.experiment.census import load_census
from keras_landscape.experiment.config import TOP_KEYS
from keras_landscape.report.census import census_rows, read_census
from keras_landscape.report.plots import is_png
from keras_landscape.store.hdf5 import Store

ROOT = Path(__file__).resolve().parents[1]

#: two widths, two replicas, one pair per probe, a handful of steps: seconds per point
TINY = {
    "model": {
        "builder": "mlp",
        "input": [2],
        "activation": "tanh",
        "output": 1,
        "train": {"epochs": 60, "batch_size": "full", "learning_rate": 0.02},
    },
    "data": "teacher:d=2,h=2,n=120,n_test=40",
    "loss": "mse",
    "level_fn": "mse",
    "split": "train",
    "grid": {"width": [1, 3], "depth": [1]},
    "replicas": 2,
    "components": {"max_bisections": 1, "grid": 10},
    "curviness": {"levels": "2.0", "retrain_endpoints": True},
    "options": {"max_steps": 100, "learning_rate": 0.02, "points": 5, "max_depth": 2},
    "seed": 0,
}


def _sweep(tmp_path: Path, **changes) -> str:
    document = {**TINY, **changes}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


# ------------------------------------------------------------------------ schema and grid


def test_grid_expands_as_written(tmp_path):
    sweep = {
        **TINY,
        "grid": {"width": [2, 5], "depth": [1, 2], "activation": ["tanh", "square"]},
        "replicas": 3,
        "out": str(tmp_path / "c.h5"),
        "scales": {"small": {"grid": {"width": [7]}, "replicas": 2}},
    }
    census = load_census(sweep)
    assert len(census.points) == 8
    assert [p.name for p in census.points][:3] == [
        "width_2-depth_1-activation_tanh",
        "width_2-depth_1-activation_square",
        "width_2-depth_2-activation_tanh",
    ]
    point = census.points[7]
    assert point.values == {"width": 5, "depth": 2, "activation": "square"}
    recipe = point.config.recipe
    assert recipe.layers == [5, 5] and recipe.activation == "square" and recipe.replicas == 3
    assert recipe.dir == str(tmp_path / "c-models" / point.name)
    spec = point.config.spec
    assert spec.probes == ["components", "curviness"]
    assert spec.probe_options["components"]["max_bisections"] == 1
    assert spec.probe_options["curviness"]["levels"] == "2.0"
    assert spec.probe_options["curviness"]["max_steps"] == 100  # shared options reach both
    assert spec.out == str(tmp_path / "c-work" / f"{point.name}.h5")
    small = load_census(sweep, scale="small")
    assert [p.name for p in small.points] == [
        "width_7-depth_1-activation_tanh",
        "width_7-depth_1-activation_square",
        "width_7-depth_2-activation_tanh",
        "width_7-depth_2-activation_square",
    ]
    assert small.points[0].config.recipe.replicas == 2


@pytest.mark.parametrize(
    "change, where",
    [
        ({"grid": {"widht": [1, 2]}}, "grid.widht: unknown key (did you mean width?)"),
        ({"replica": 3}, "replica: unknown key (did you mean replicas?)"),
        ({"components": {"alpah": 0.9}}, "components.alpah: unknown option"),
        ({"grid": {"width": [1, 0]}}, "grid.width[1]: expected a positive integer"),
        ({"grid": {"width": 4}}, "grid.width: expected a non-empty list"),
        ({"replicas": 1}, "replicas: expected an integer >= 2"),
        ({"probes": ["evaluate"]}, "probes.evaluate: the evaluate probe adds nothing"),
        ({"probes": ["components"]}, "curviness: options of a probe that is not listed"),
        ({"probes": ["componets"]}, "probes.componets: unknown probe"),
    ],
)
def test_bad_sweep_exits_2_naming_the_key(change, where, capsys, tmp_path):
    code, out, err = run_cli(capsys, "census", _sweep(tmp_path, **change), "--dry-run")
    assert code == EXIT_BAD_INPUT, err
    assert where in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1  # one paragraph


def test_strategy_passes_through_only_when_run_configs_know_it(tmp_path):
    sweep = {**TINY, "strategy": "one", "out": str(tmp_path / "c.h5")}
    if "strategy" in TOP_KEYS:
        census = load_census(sweep)
        assert all(p.config.document.get("strategy") == "one" for p in census.points)
    else:
        with pytest.raises(ConfigError, match="strategy: unknown key"):
            load_census(sweep)


def test_shipped_census_configs_validate(capsys):
    for name in ("census_quadratic", "census_width"):
        for scale in ([], ["--scale", "small"]):
            path = str(ROOT / "configs" / f"{name}.yaml")
            code, out, err = run_cli(capsys, "census", path, *scale, "--dry-run")
            assert code == 0, err
            document = json.loads(out)
            assert len(document["points"]) >= 4
            probes = document["points"][0]["run"]["probes"]
            assert probes == ["components", "curviness"]
    quadratic = load_census(str(ROOT / "configs/census_quadratic.yaml"), scale="small")
    n = quadratic.points[0].config.recipe.input[0]
    widths = [p.values["width"] for p in quadratic.points]
    assert min(widths) == 1 and max(widths) == 3 * n * n  # up to Freeman & Bruna's 3N^2
    assert not quadratic.points[0].config.recipe.use_bias


# ------------------------------------------------------------------ a tiny census, resumed


@pytest.fixture(scope="module")
def census(tmp_path_factory):
    """A census run first with one width (as if interrupted after its first point), then
    resumed with both: {"sweep", "store", "first", "second" (JSON documents), "before"
    (width_1's run attributes after the first run)}."""
    from keras_landscape.cli.main import main

    folder = tmp_path_factory.mktemp("census")
    sweep = _sweep(folder, out=str(folder / "census.h5"))
    store = str(folder / "census.h5")

    def run(*args):
        import contextlib
        import io

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = main(["census", sweep, "-q", "--json", *args])
        assert code == 0, buffer.getvalue()
        return json.loads(buffer.getvalue())

    first = run("--set", "grid.width=[1]")
    with Store.open(store) as opened:
        before = {n: opened.run(n).get_attrs(None) for n in opened.run_names()}
    second = run("--resume")
    return {"sweep": sweep, "store": store, "first": first, "second": second, "before": before}


def test_the_store_holds_both_probes_for_every_point(census):
    with Store.open(census["store"]) as store:
        names = sorted(store.run_names())
        assert names == [
            "width_1-depth_1.components",
            "width_1-depth_1.curviness",
            "width_3-depth_1.components",
            "width_3-depth_1.curviness",
        ]
        for name in names:
            run = store.run(name)
            assert run.status == "complete" and run.probe == name.rsplit(".", 1)[1]
            attrs = run.get_attrs(None)
            assert attrs["census_point"] == name.rsplit(".", 1)[0]
            assert attrs["parameters"] == (5 if "width_1" in name else 13)
        models = sorted(store.model_names())
        assert models == [f"width_{w}-depth_1.mlp_{i}" for w in (1, 3) for i in (0, 1)]
        assert store.read_model("width_3-depth_1.mlp_1")["theta"].shape == (13,)
    assert not Path(census["store"]).with_name("census-work").exists()  # one store is left


def test_a_resumed_census_reuses_finished_points(census):
    first, second = census["first"], census["second"]
    assert [p["reused"] for p in first["points"]] == [False]
    assert [(p["name"], p["reused"]) for p in second["points"]] == [
        ("width_1-depth_1", True),
        ("width_3-depth_1", False),
    ]
    with Store.open(census["store"]) as store:
        for name, attrs in census["before"].items():
            now = store.run(name).get_attrs(None)
            assert now["started"] == attrs["started"] and now["finished"] == attrs["finished"]
            assert "resumed" not in now  # never reopened
    # and a resume with other settings for a finished point is refused before any work
    changed = yaml.safe_load(Path(census["sweep"]).read_text())
    changed["model"]["train"]["epochs"] = 61
    other = Path(census["sweep"]).with_name("changed.yaml")
    other.write_text(yaml.safe_dump(changed, sort_keys=False))
    from keras_landscape.cli.main import main

    assert main(["census", str(other), "-q", "--resume"]) == EXIT_BAD_INPUT


def test_the_census_table_equals_the_probe_results(census):
    rows = {r["point"]: r for r in census_rows(census["store"])}
    assert census["second"]["rows"] == json.loads(json.dumps(list(rows.values())))
    with Store.open(census["store"]) as store:
        for point, row in rows.items():
            components = store.run(f"{point}.components").result
            curviness = store.run(f"{point}.curviness").result
            assert row["replicas"] == 2 and row["width"] in (1, 3) and row["depth"] == 1
            assert row["highest_merge_level"] == components["highest_merge_level"]
            assert row["lowest_minimum"] == min(components["minimum_levels"])
            barriers = [p["barrier"] for p in components["pairs"].values()]
            assert row["mean_barrier"] == pytest.approx(np.mean(barriers))
            levels, counts = components["levels"], components["n_components"]
            assert row["n_u_lowest_level"] == counts[int(np.argmin(levels))]
            assert row["n_u_max"] == max(counts)
            lower = components["n_components_lower"]
            assert row["n_u_lowest_level_lower"] == lower[int(np.argmin(levels))]
            assert row["n_u_max_lower"] == max(lower) <= row["n_u_max"]
            assert all(lo <= hi for lo, hi in zip(lower, counts))
            top = max(components["minimum_levels"])
            above = [hi for u, hi in zip(levels, counts) if u >= top]
            assert row["n_u_max_above_minima"] == max(above, default=None)
            assert row["normalized_length"] == curviness["normalized_length"][-1]
            assert row["connected"] == curviness["pairs"][-1]


def test_census_figures_are_drawn_beside_the_store(census):
    figures = census["second"]["figures"]
    directory = Path(census["store"]).with_name("census_figures")
    assert census["second"]["figures_dir"] == str(directory)
    for kind in ("census_summary", "census_components"):
        assert str(directory / f"{kind}.png") in figures
        assert is_png(directory / f"{kind}.png")
    assert read_census(census["store"])["points"][1]["grid"] == {"width": 3, "depth": 1}


# ------------------------------------------------------- the quadratic network and teacher


def test_square_activation_model_saves_and_reloads(tmp_path):
    import keras

    from keras_landscape.data.specs import load_data
    from keras_landscape.models.loading import load_model
    from keras_landscape.models.recipes import ModelRecipe, build_model

    recipe = ModelRecipe("mlp", [2], 1, layers=[3], activation="square", use_bias=False)
    keras.utils.set_random_seed(0)
    model = build_model(recipe)
    assert [v.path.rsplit("/", 1)[-1] for v in model.trainable_variables] == ["kernel", "kernel"]
    model.compile(loss="mse")
    data = load_data("teacher:d=2,h=2,act=square,bias=0,n=64", seed=0)
    before = model.evaluate(data.x_train, data.y_train, verbose=0)
    path = tmp_path / "square.keras"
    model.save(path)
    loaded = load_model(path)
    assert loaded.layers[0].get_config()["activation"]["config"] == "keras_landscape>square"
    assert loaded.evaluate(data.x_train, data.y_train, verbose=0) == before
    x = data.x_train[:5]
    w, u = (v.numpy() for v in model.trainable_variables)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), ((x @ w) ** 2) @ u, rtol=1e-5)


def test_quadratic_teacher_targets_are_u_wx_squared():
    from keras_landscape.data.specs import Teacher, load_data

    data = load_data("teacher:d=3,h=2,act=square,bias=0,n=40,n_test=10,seed=4")
    teacher = Teacher.from_seed(3, 2, 1, 4, "square", bias=False)
    w, u = teacher.w1.T, teacher.w2.T  # W: (h, d), U: (1, h)
    assert not teacher.b1.any() and not teacher.b2.any()
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        by_hand = np.array([u @ (w @ row.astype(np.float64)) ** 2 for row in x])
        np.testing.assert_allclose(y, by_hand.astype(np.float32), rtol=1e-6, atol=1e-7)
    # the default teacher is unchanged: the same ReLU network with biases
    relu = load_data("teacher:d=3,h=2,n=40,seed=4")
    same = Teacher.from_seed(3, 2, 1, 4)
    expected = np.maximum(relu.x_train @ same.w1 + same.b1, 0) @ same.w2 + same.b2
    np.testing.assert_allclose(relu.y_train, expected.astype(np.float32), rtol=1e-6)
    assert np.array_equal(same.w1, teacher.w1)  # act and bias change nothing else


# --------------------------------------------------- a third party's probe in a census


def test_a_third_party_probe_takes_part_in_a_census(tmp_path):
    """A registered probe that declares census columns is listed under `probes`; its runs
    are copied, its columns and cells are in the census rows and table, a resume reuses
    its points, and the summary figure (no column of its) is skipped with a reason. No
    list of probe names was edited for it."""
    from toy_probes import registered_toy

    from keras_landscape.experiment.census import run_census
    from keras_landscape.report.census import census_tables

    document = {k: v for k, v in TINY.items() if k not in ("components", "curviness", "options")}
    document.update(
        probes=["endpoint_gap"], endpoint_gap={"scale": 2.0}, out=str(tmp_path / "toy.h5")
    )
    with registered_toy():
        census = load_census(document)
        assert census.points[0].config.spec.probe_options["endpoint_gap"]["scale"] == 2.0
        first = run_census(census)
        again = run_census(load_census(document), resume=True)
        rows = {r["point"]: r for r in census_rows(census.out)}
        tables = census_tables(census.out)
    assert [p["reused"] for p in again["points"]] == [True, True]
    assert "census_summary" not in " ".join(first["figures"])
    with Store.open(census.out) as store:
        assert sorted(store.run_names()) == [
            "width_1-depth_1.endpoint_gap",
            "width_3-depth_1.endpoint_gap",
        ]
        for point, row in rows.items():
            result = store.run(f"{point}.endpoint_gap").result
            levels = store.run(f"{point}.endpoint_gap").read("levels")
            assert result["levels"] == pytest.approx(list(levels))
            assert row["max_gap"] == pytest.approx(2.0 * abs(levels[0] - levels[1]))
            assert row["gap_models"] == row["replicas"] == 2 and row["complete"]
    assert first["rows"] == json.loads(json.dumps(list(rows.values())))
    header = tables[0]["columns"]
    assert header[-1] == "largest gap" and "highest merge" not in header
