"""`klandscape run CONFIG.yaml` and keras_landscape.experiment.config: validation names the bad key,
scales and command-line overrides apply, the shipped configs validate, a config runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli
from synthetic_stores import cubic_models

from keras_landscape.cli.main import EXIT_BAD_INPUT
from keras_landscape.experiment.config import ModelRecipe, choose_data, load_config
from keras_landscape.experiment.demo import demo_config
from keras_landscape.experiment.plan import build_probes
from keras_landscape.models.recipes import _steps_per_call, build_model
from keras_landscape.report.plots import is_png

ROOT = Path(__file__).resolve().parents[1]


def _write(folder: Path, document, name="run.yaml") -> str:
    path = folder / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return str(path)


BASE = {
    "model": {
        "builder": "mlp",
        "input": [1],
        "layers": [4, 4],
        "activation": "sigmoid",
        "output": 1,
        "replicas": 2,
        "train": {"epochs": 4, "batch_size": "full", "learning_rate": 0.01},
    },
    "data": "cubic:n=200",
    "loss": "mae",
    "level_fn": "mae",
    "probes": ["evaluate", {"curviness": {"levels": "0.3,0.2", "alpha": 0.95}}],
    "options": {"max_steps": 300},
    "out": "runs/x.h5",
    "scales": {"small": {"model": {"replicas": 3}, "probes": {"curviness": {"levels": "0.5"}}}},
}


def _with(**changes):
    document = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        target = document
        *parents, last = dotted.split("__")
        for part in parents:
            target = target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return document


_DELETE = object()

BAD = {
    "unknown top-level key": (_with(modle=1), "modle: unknown key"),
    "unknown probe option": (
        _with(probes=[{"curviness": {"alpah": 0.9}}]),
        "probes.curviness.alpah: unknown option (did you mean alpha?)",
    ),
    "bad probe option value": (
        _with(probes=[{"curviness": {"alpha": "high"}}]),
        "probes.curviness.alpha: expected a number, got 'high'",
    ),
    "probe option out of range": (
        _with(probes=[{"curviness": {"alpha": 1.5}}]),
        "probes.curviness: alpha must be in (0, 1], got 1.5",
    ),
    "integer option given a float": (
        _with(probes=[{"curviness": {"max_depth": 2.5}}]),
        "probes.curviness.max_depth: expected an integer",
    ),
    "unknown probe": (
        _with(probes=["curvines"]),
        "probes.curvines: unknown probe (did you mean curviness?)",
    ),
    "shared option no probe has": (
        _with(options={"max_stepz": 3}),
        "options.max_stepz: no listed probe",
    ),
    "unknown train key": (_with(model__train__epochz=3), "model.train.epochz: unknown key"),
    "negative width": (_with(model__layers=[4, -1]), "model.layers[1]: must be >= 1"),
    "unknown builder": (_with(model__builder="rnn"), "model.builder: unknown builder 'rnn'"),
    "cnn option on an mlp": (
        _with(model__filters=[8]),
        "model.filters: not an option of the mlp builder",
    ),
    "unknown optimizer": (
        _with(model__train__optimizer="adamm"),
        "model.train.optimizer: unknown optimizer",
    ),
    "bad learning rate": (
        _with(model__train__learning_rate=-1),
        "model.train.learning_rate: must be a positive",
    ),
    "models and model": (_with(models=["a.keras"]), "models: give either models"),
    "neither models nor model": (_with(model=_DELETE), "models: give either models"),
    "missing model file": (
        _with(model=_DELETE, models=["nothere.keras"]),
        "models[0]: the model file",
    ),
    "unknown data kind": (_with(data="cubc"), "data: unknown data kind 'cubc'"),
    "missing data file": (_with(data="npz:nothere.npz"), "data: the data file"),
    "bad data mapping": (
        _with(data={"online": "cubic", "ofline": "digits"}),
        "data.ofline: unknown key",
    ),
    "missing data": (_with(data=_DELETE), "data: missing"),
    "bad split": (_with(split="validation"), "split: expected train or test"),
    "bad xla": (_with(xla="maybe"), "xla: expected auto, on or off"),
    "bad seed": (_with(seed=-1), "seed: must be >= 0"),
    "bad plots format": (_with(plots={"format": "gif"}), "plots.format: unknown format 'gif'"),
    "bad key in a scale": (_with(scales={"small": {"dta": 1}}), "scales.small.dta: unknown key"),
    "recipe without loss": (_with(loss=_DELETE), "loss: missing"),
    "not a mapping": ("- just\n- a list\n", "must hold a mapping"),
    "bad YAML": ("model: [1, 2\ndata: x\n", "is not valid YAML (line"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_exits_2_naming_the_key(case, capsys, tmp_path):
    document, message = BAD[case]
    path = _write(tmp_path, document)
    code, out, err = run_cli(capsys, "run", path, "--dry-run")
    assert code == EXIT_BAD_INPUT, err
    assert out == "" and err.startswith("Error: ") and "Traceback" not in err
    assert message in err, err


def test_unknown_scale_and_missing_file_exit_2(capsys, tmp_path):
    path = _write(tmp_path, BASE)
    code, _, err = run_cli(capsys, "run", path, "--scale", "huge", "--dry-run")
    assert (
        code == EXIT_BAD_INPUT and "--scale huge: unknown scale; the config defines: small" in err
    )
    code, _, err = run_cli(capsys, "run", str(tmp_path / "absent.yaml"))
    assert code == EXIT_BAD_INPUT and "does not exist" in err


def _dryrun_cli(capsys, *args):
    code, out, err = run_cli(capsys, "run", *args, "--dry-run")
    assert code == 0, err
    return json.loads(out)


def test_scale_and_overrides(capsys, tmp_path):
    path = _write(tmp_path, BASE)
    plain = _dryrun_cli(capsys, path)
    assert plain["run"]["probe_options"]["curviness"] == {
        "levels": "0.3,0.2",
        "alpha": 0.95,
        "max_steps": 300,
    }
    assert plain["model"]["replicas"] == 2 and plain["run"]["out"] == "runs/x.h5"
    assert plain["model"]["dir"] == "runs/x-models"  # beside the store

    small = _dryrun_cli(capsys, path, "--scale", "small")
    assert small["model"]["replicas"] == 3
    assert small["model"]["layers"] == [4, 4]  # mappings merge key by key
    assert small["run"]["probe_options"]["curviness"]["levels"] == "0.5"
    assert small["run"]["probe_options"]["curviness"]["alpha"] == 0.95

    over = _dryrun_cli(
        capsys,
        path,
        "--scale",
        "small",
        "--out",
        "o.h5",
        "--seed",
        "7",
        "--levels",
        "0.25,0.1",
        "--set",
        "model.train.epochs=9",
        "--set",
        "max_steps=50",
        "--set",
        "probes.curviness.alpha=0.9",
        "--set",
        "model.layers=[8, 8]",
        "--set",
        "data=quadratic:n=100",
    )
    run = over["run"]
    assert (run["out"], run["seed"], run["data"]) == ("o.h5", 7, "quadratic:n=100")
    assert run["probe_options"]["curviness"] == {
        "levels": "0.25,0.1",
        "alpha": 0.9,
        "max_steps": 50,
    }
    assert over["model"]["train"]["epochs"] == 9 and over["model"]["layers"] == [8, 8]
    assert over["model"]["dir"] == "o-models"
    code, _, err = run_cli(capsys, "run", path, "--set", "probes.barrier.grid=5", "--dry-run")
    assert (
        code == EXIT_BAD_INPUT and "probes.barrier: not a listed probe (evaluate, curviness)" in err
    )
    code, _, err = run_cli(capsys, "run", path, "--set", "max_stepz=5", "--dry-run")
    assert code == EXIT_BAD_INPUT
    assert (
        "max_stepz: neither a config key nor an option of any probe (did you mean max_steps?)"
        in err
    )


def test_paths_resolve_against_the_config_folder(capsys, tmp_path):
    folder = tmp_path / "experiment"
    folder.mkdir()
    a, b = cubic_models()
    for name, source in (("a.keras", a), ("b.keras", b)):
        (folder / name).write_bytes(Path(source).read_bytes())
    np.savez(folder / "data.npz", x=np.zeros((4, 1), np.float32), y=np.zeros((4, 1), np.float32))
    path = _write(
        folder,
        {
            "models": ["a.keras", "b.keras"],
            "data": "npz:data.npz:limit=2",
            "probes": ["evaluate"],
            "out": "here.h5",
        },
    )
    resolved = _dryrun_cli(capsys, path)["run"]
    assert resolved["models"] == [str(folder / "a.keras"), str(folder / "b.keras")]
    assert resolved["data"] == f"npz:{folder / 'data.npz'}:limit=2"
    assert resolved["out"] == "here.h5"  # outputs are relative to the current folder


def test_offline_data_is_used_when_the_online_one_is_missing(tmp_path):
    config = load_config(
        _with(data={"online": "npz:not/downloaded.npz", "offline": "cubic:n=50"}),
        base_dir=str(tmp_path),
    )
    notes = []

    class Notes:
        def note(self, message):
            notes.append(message)

    assert choose_data(config, Notes()) == "cubic:n=50"
    assert "using data cubic:n=50" in notes[0] and "does not exist" in notes[0]


def test_shipped_configs_validate(capsys):
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    assert demo == demo_config()  # `klandscape demo` and configs/demo.yaml stay one run
    for name in ("demo", "cubic", "quadratic", "mnist_cnn", "cifar10_cnn", "ptb_lstm"):
        path = ROOT / "configs" / f"{name}.yaml"
        scales = list(yaml.safe_load(path.read_text()).get("scales") or {})
        if name not in ("demo", "cifar10_cnn"):
            assert "full" in scales  # every reproduction has its full-scale table
        for scale in [None] + scales:
            resolved = _dryrun_cli(capsys, str(path), *(["--scale", scale] if scale else []))
            assert resolved["run"]["probes"][0] == "evaluate"
            # every probe option of every scale is valid (checked before any training)
            build_probes(load_config(str(path), scale=scale).spec)
    cubic = _dryrun_cli(capsys, str(ROOT / "configs/cubic.yaml"))
    assert cubic["model"]["layers"] == [4, 4] and cubic["model"]["activation"] == "sigmoid"
    assert cubic["run"]["loss"] == "mae" and cubic["run"]["data"] == "cubic:n=10000"
    assert cubic["run"]["probe_options"]["curviness"]["levels"] == "0.3,0.2,0.1,0.05,0.03,0.02,0.01"
    small = _dryrun_cli(capsys, str(ROOT / "configs/cubic.yaml"), "--scale", "small")
    assert small["run"]["probe_options"]["curviness"]["levels"] == "0.3,0.1,0.05"
    assert small["model"]["replicas"] * (small["model"]["replicas"] - 1) // 2 >= 8  # pairs
    assert cubic["model"]["train"] == {
        "epochs": 20000,
        "batch_size": "full",
        "learning_rate": 0.001,
        "optimizer": "adam",
    }


def test_builders():
    mlp = build_model(ModelRecipe("mlp", [1], 1, layers=[4, 4], activation="sigmoid"))
    assert mlp.count_params() == 33
    lstm = build_model(ModelRecipe("lstm", [5], 7, layers=[3, 3], embedding=2))
    assert lstm.output_shape == (None, 5, 7)
    assert [type(layer).__name__ for layer in lstm.layers] == ["Embedding", "LSTM", "LSTM", "Dense"]
    cnn = build_model(ModelRecipe("cnn", [8, 8, 1], 10, filters=[4], layers=[6]))
    assert cnn.output_shape == (None, 10)
    assert [type(layer).__name__ for layer in cnn.layers] == [
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
        "Dense",
    ]


def test_full_batch_steps_divide_the_epochs():
    assert _steps_per_call(5000, 10000, 8) == 200
    assert _steps_per_call(7, 10, 8) == 7
    assert _steps_per_call(4999, 10000, 8) == 1  # a prime: exact epochs, one per call
    assert _steps_per_call(100, 10**7, 800) == 1  # big data: no tiled copy


def test_a_bad_probe_option_is_refused_before_any_training(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, _with(probes=["evaluate", {"curviness": {"endpoint_target": 2}}]))
    code, out, err = run_cli(capsys, "run", path)
    assert code == EXIT_BAD_INPUT and "endpoint_target must be in (0, 1]" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()  # nothing trained


def test_run_trains_probes_and_plots(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    document = _with(
        probes=["evaluate", {"connectivity": {"max_depth": 2, "margin": 3.0}}],
        options={},
        xla="off",
        plots={"dir": "figs"},
        model={
            **BASE["model"],
            "train": {"epochs": 40, "batch_size": "full", "learning_rate": 0.05},
        },
    )
    path = _write(tmp_path, document)
    code, out, err = run_cli(capsys, "run", path, "--json", "-q")
    assert code == 0, err
    result = json.loads(out)
    assert result["store"] == "runs/x.h5" and result["config"] == path
    assert [m["name"] for m in result["models"]] == ["mlp_0", "mlp_1"]
    assert sorted(p.name for p in (tmp_path / "runs" / "x-models").iterdir()) == [
        "mlp_0.keras",
        "mlp_1.keras",
        "recipe.json",
    ]
    assert result["results"]["connectivity"]["level"] > 0
    assert [Path(p).name for p in result["figures"]] == ["connectivity_path_pair_0_1.png"]
    assert all(is_png(p) for p in result["figures"])
    trained = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "x-models").iterdir()}

    # the store exists: refused before any training, the models are untouched
    code, out, err = run_cli(capsys, "run", path, "--set", "model.train.epochs=41")
    assert code == EXIT_BAD_INPUT and "already exists. Use --resume" in err
    code, out, err = run_cli(capsys, "run", path, "--set", "model.train.epochs=41", "--resume")
    assert code == EXIT_BAD_INPUT and "trained from another model recipe" in err

    # again with --resume: the models are reused (same recipe), the complete runs too
    code, out, err = run_cli(capsys, "run", path, "--resume")
    assert code == 0, err
    assert "connectivity" in out and "figures: figs/ (1 file)" in out
    assert "reusing the 2 trained models" in err and "already complete" in err
    assert {
        p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "x-models").iterdir()
    } == trained
