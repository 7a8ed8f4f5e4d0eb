"""Issue #26, "silently wrong" results: inputs that used to run and give a wrong answer
without a word now give the right one or are refused (exit 2, one paragraph).

- Model names: files sharing a stem get distinct names (`d0.keras dir/d0.keras
  sub/d0_2.keras` gave d0, d0_2, d0_2 and the store kept two of the three models); names of
  inputs that did not collide are their stems, as before (resume).
- Architectures: models with the same parameter shapes but another computation (ReLU vs
  sigmoid, another wiring) are refused, naming the layer and the setting; the same network
  saved apart (other layer names, .h5 vs .keras, Sequential vs Functional, other
  initializers) is accepted.
- `from_logits=maybe` is refused (never read as true); `bootstrap` below the fewest
  resamples a percentile interval needs is refused; `partners` with two or more models is
  refused (it was ignored); a `slices` plane through three models on one line (or a line
  through two equal models) is refused, naming them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from keras_landscape.cli.main import EXIT_BAD_INPUT
from keras_landscape.errors import UserError
from keras_landscape.experiment.spec import model_names

DATA = "cubic:limit=32"


def _tiny(activation="tanh", seed=0, hidden_name="hidden"):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(4, activation=activation, name=hidden_name),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(loss="mse")
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny 1-4-1 models saved as files: three sharing the stem d0 as in the issue, a ReLU
    and a sigmoid twin, and three models on one line in parameter space."""
    folder = tmp_path_factory.mktemp("silently_wrong")
    for sub in ("dir", "sub", "line"):
        (folder / sub).mkdir()
    paths = {
        "d0": folder / "d0.keras",
        "dir/d0": folder / "dir" / "d0.keras",
        "sub/d0_2": folder / "sub" / "d0_2.keras",
    }
    for seed, path in enumerate(paths.values()):
        _tiny(seed=seed).save(path)
    _tiny("relu", seed=5).save(folder / "relu.keras")
    _tiny("sigmoid", seed=6).save(folder / "sigmoid.keras")
    a, b = _tiny(seed=7), _tiny(seed=8)
    c = _tiny(seed=9)
    for vc, va, vb in zip(c.trainable_variables, a.trainable_variables, b.trainable_variables):
        vc.assign((va.numpy() + 0.5 * (vb.numpy() - va.numpy())).astype(np.float32))
    for name, model in (("a", a), ("b", b), ("c", c)):
        model.save(folder / "line" / f"{name}.keras")
    return {
        "folder": folder,
        **{k: str(v) for k, v in paths.items()},
        "relu": str(folder / "relu.keras"),
        "sigmoid": str(folder / "sigmoid.keras"),
        "line": [str(folder / "line" / f"{n}.keras") for n in "abc"],
    }


# ------------------------------------------------------------------ 5. model names


def test_names_of_files_sharing_a_stem_are_distinct_and_name_the_folder(tmp_path):
    paths = [tmp_path / "d0.keras", tmp_path / "dir" / "d0.keras", tmp_path / "sub/d0_2.keras"]
    # was d0, d0_2, d0_2: the second file took the third one's stem
    assert model_names([str(p) for p in paths]) == [f"{tmp_path.name}_d0", "dir_d0", "d0_2"]


def test_names_that_did_not_collide_stay_their_stems():
    assert model_names(["runs/a.keras", "b.h5", "c/d/e.hdf5"]) == ["a", "b", "e"]


def test_names_never_take_another_inputs_stem_and_never_repeat(tmp_path):
    paths = [
        str(tmp_path / "x" / "m.keras"),
        str(tmp_path / "y" / "m.keras"),
        str(tmp_path / "x_m.keras"),
        str(tmp_path / "x" / "m.keras"),  # the same file twice
        str(tmp_path / "m.h5"),
    ]
    names = model_names(paths)
    assert names == ["x_m_2", "y_m", "x_m", "x_m_3", f"{tmp_path.name}_m"]
    assert len(set(names)) == len(names)


def test_names_are_the_same_from_any_working_directory(tmp_path, monkeypatch):
    absolute = [str(tmp_path / "p" / "m.keras"), str(tmp_path / "q" / "m.keras")]
    monkeypatch.chdir(tmp_path)
    assert model_names(["p/m.keras", "q/m.keras"]) == model_names(absolute) == ["p_m", "q_m"]
    (tmp_path / "p").mkdir()
    monkeypatch.chdir(tmp_path / "p")
    assert model_names(["m.keras", "../q/m.keras"]) == ["p_m", "q_m"]


def test_the_store_keeps_every_model_of_colliding_stems(files, tmp_path, capsys):
    from keras_landscape.store.hdf5 import Store

    out = tmp_path / "names.h5"
    models = [files["d0"], files["dir/d0"], files["sub/d0_2"]]
    code, _, err = run_cli(capsys, "probe", *models, "--data", DATA, "--out", str(out), "-q")
    assert code == 0, err
    with Store.open(out) as store:
        names = store.model_names()
        sources = {n: store.read_model(n)["attrs"]["source"] for n in names}
        result = store.run("evaluate").result
    assert sorted(names) == sorted([f"{files['folder'].name}_d0", "dir_d0", "d0_2"])
    assert sorted(sources.values()) == sorted(models)  # three models, each its own file
    assert len(result["models"]) == 3


# ------------------------------------------------------------------ 6. architectures


def test_relu_and_sigmoid_twins_are_refused_naming_the_layer_and_setting():
    from keras_landscape.models.loading import check_same_architecture

    with pytest.raises(UserError) as info:
        check_same_architecture([_tiny("relu"), _tiny("sigmoid")], ["r", "s"])
    message = str(info.value)
    assert "layer 1 (hidden): activation relu vs sigmoid" in message
    assert "Models r and s have the same parameter shapes" in message
    assert "\n" not in message


def test_the_same_network_saved_apart_is_accepted(tmp_path):
    import keras

    from keras_landscape.models.loading import check_same_architecture, load_model

    reference = _tiny("relu", seed=1)
    other_names = _tiny("relu", seed=2, hidden_name="dense_7")
    keras.utils.set_random_seed(3)
    inputs = keras.Input((1,))
    hidden = keras.layers.Dense(4, activation="relu", kernel_initializer="he_normal")(inputs)
    functional = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    reference.save(tmp_path / "r.keras")
    reference.save(tmp_path / "r.h5")
    loaded = [load_model(tmp_path / "r.keras"), load_model(tmp_path / "r.h5")]
    models = [reference, other_names, functional, *loaded]
    layout = check_same_architecture(models, [f"m{i}" for i in range(len(models))])
    assert layout.shapes == ((1, 4), (4,), (4, 1), (1,))


def test_other_settings_and_other_wiring_are_refused():
    import keras

    from keras_landscape.models.loading import architecture, architecture_difference

    def batchnorm(epsilon):
        return keras.Sequential(
            [keras.Input((3,)), keras.layers.BatchNormalization(epsilon=epsilon, name="bn")]
        )

    assert None is architecture_difference(
        architecture(batchnorm(1e-3)), architecture(batchnorm(1e-3))
    )
    assert architecture_difference(
        architecture(batchnorm(1e-3)), architecture(batchnorm(1e-5))
    ) == ("layer 1 (bn): epsilon 0.001 vs 1e-05")

    def residual(skip: bool):
        inputs = keras.Input((4,))
        h = keras.layers.Dense(4, name="h")(inputs)
        g = keras.layers.Dense(4, name="g")(h)
        added = keras.layers.Add(name="add")([h, g] if skip else [g, g])
        return keras.Model(inputs, keras.layers.Dense(1, name="out")(added))

    assert None is architecture_difference(
        architecture(residual(True)), architecture(residual(True))
    )
    assert architecture_difference(architecture(residual(True)), architecture(residual(False))) == (
        "layer 3 (add): its inputs are layer 1, layer 2 vs layer 2, layer 2"
    )


def test_relu_and_sigmoid_files_exit_2(files, tmp_path, capsys):
    out = tmp_path / "arch.h5"
    code, _, err = run_cli(
        capsys, "probe", files["relu"], files["sigmoid"], "--data", DATA, "--out", str(out)
    )
    assert code == EXIT_BAD_INPUT, err
    assert "activation relu vs sigmoid" in err and "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------ 8. options


@pytest.mark.parametrize(
    "loss",
    ["sparse_categorical_crossentropy:from_logits=maybe", "binary_crossentropy:from_logits=2"],
)
def test_from_logits_maybe_is_refused_not_read_as_true(loss):
    from keras_landscape.engine.objectives import keras_loss

    with pytest.raises(UserError, match="from_logits: expected true or false"):
        keras_loss(loss)
    assert keras_loss(loss.rsplit("=", 1)[0] + "=yes").get_config()["from_logits"] is True


def test_a_loss_option_the_loss_does_not_take_exits_2(files, tmp_path, capsys):
    # was an internal error (exit 1) inside the first evaluation
    code, _, err = run_cli(
        capsys,
        "probe",
        files["relu"],
        "--data",
        DATA,
        "--loss",
        "mse:from_logits=maybe",
        "--out",
        str(tmp_path / "loss.h5"),
    )
    assert code == EXIT_BAD_INPUT, err
    assert "takes no option from_logits" in err


def test_fewest_bootstrap_resamples():
    from keras_landscape.science.bootstrap import minimum_resamples

    assert [minimum_resamples(c) for c in (0.9, 0.95, 0.99)] == [19, 39, 199]


@pytest.mark.parametrize(
    ("options", "refused"),
    [
        ({"bootstrap": 1}, True),
        ({"bootstrap": 38}, True),
        ({"bootstrap": 39}, False),
        ({"bootstrap": 0}, False),
        ({"bootstrap": 19, "confidence": 0.9}, False),
        ({"bootstrap": 19, "confidence": 0.95}, True),
    ],
)
def test_bootstrap_below_the_fewest_resamples_is_refused(options, refused):
    from keras_landscape.experiment.plan import build_probes
    from keras_landscape.settings import RunSpec

    spec = RunSpec(models=["a.keras"], data=DATA, probes=["barrier"], options=options)
    if refused:
        with pytest.raises(UserError, match=r"too few .* bootstrap >= \d+"):
            build_probes(spec)
    else:
        assert build_probes(spec)[0].config.bootstrap == options["bootstrap"]


def test_bootstrap_1_exits_2(files, tmp_path, capsys):
    args = ["probe", files["d0"], files["sub/d0_2"], "--data", DATA, "--probe", "barrier"]
    code, _, err = run_cli(capsys, *args, "--set", "bootstrap=1", "--out", str(tmp_path / "b.h5"))
    assert code == EXIT_BAD_INPUT, err
    assert "bootstrap=1 resamples are too few" in err and "bootstrap >= 39" in err


def test_partners_with_two_models_exits_2(files, tmp_path, capsys):
    out = tmp_path / "partners.h5"
    args = ["probe", files["d0"], files["sub/d0_2"], "--data", DATA, "--probe", "connectivity"]
    code, _, err = run_cli(capsys, *args, "--partners", "2", "--out", str(out))
    assert code == EXIT_BAD_INPUT, err
    assert "partners=2 was given for probe 'connectivity' with 2 models" in err
    assert not out.exists()


def test_partners_rule_for_one_model_several_models_and_zero():
    from keras_landscape.experiment.plan import build_probes, refuse_unused_partners
    from keras_landscape.settings import RunSpec

    def check(models, options, probe_options=None):
        spec = RunSpec(
            models=models,
            data=DATA,
            probes=["connectivity"],
            options=options,
            probe_options=probe_options or {},
        )
        refuse_unused_partners(spec, build_probes(spec))

    check(["a.keras"], {"partners": 3})  # one model: partners are trained
    check(["a.keras", "b.keras"], {})  # the default is not a request
    check(["a.keras", "b.keras"], {"partners": 0})  # nothing to ignore
    with pytest.raises(UserError, match="partners=1 was given"):
        check(["a.keras", "b.keras", "c.keras"], {"partners": 1})
    with pytest.raises(UserError, match="partners=2 was given"):
        check(["a.keras", "b.keras"], {}, {"connectivity": {"partners": 2}})


def test_partners_with_a_recipe_of_replicas_is_refused_before_training(tmp_path):
    from keras_landscape.experiment.config import load_config
    from keras_landscape.experiment.runner import run_experiment

    config = tmp_path / "partners.yaml"
    config.write_text(
        "model: {builder: mlp, input: [1], layers: [2], output: 1, replicas: 2,\n"
        "        train: {epochs: 1}}\n"
        f"data: {DATA}\nloss: mse\n"
        "probes: [{connectivity: {partners: 2}}]\n"
        f"out: {tmp_path / 'run.h5'}\n"
    )
    with pytest.raises(UserError, match="with 2 models"):
        run_experiment(load_config(str(config)))
    assert not (tmp_path / "run-models").exists()  # nothing was trained


def test_a_plane_through_three_models_on_one_line_is_refused(files, tmp_path):
    from keras_landscape.experiment.runner import execute
    from keras_landscape.settings import RunSpec

    spec = RunSpec(
        models=files["line"],
        data=DATA,
        probes=["slices"],
        options={"mode": "models", "dims": 2, "x_points": 3, "y_points": 3},
        out=str(tmp_path / "plane.h5"),
    )
    with pytest.raises(UserError) as info:
        execute(spec)
    message = str(info.value)
    assert "models 'a', 'b' and 'c' lie on one line" in message
    assert "plane through them is undefined" in message
    assert not Path(spec.out).exists()  # refused before the store is created


def test_collinearity_is_judged_relative_to_the_distances():
    from keras_landscape.plugins.slices import model_frame

    rng = np.random.default_rng(0)
    a = rng.normal(size=50).astype(np.float32)
    step, across = rng.normal(size=50), rng.normal(size=50)
    for scale in (10.0, 1e-2):  # the same shape at two sizes
        b = (a + scale * step).astype(np.float32)
        on_line = (a + np.float32(2.5) * (b - a)).astype(np.float32)
        with pytest.raises(UserError, match="'a', 'b' and 'c' lie on one line"):
            model_frame([a, b, on_line], ["a", "b", "c"])
        off_line = (a + 0.5 * scale * step + 1e-3 * scale * across).astype(np.float32)
        u, v = model_frame([a, b, off_line], ["a", "b", "c"])
        assert abs(u @ v) <= 1e-9 * np.linalg.norm(u) * np.linalg.norm(v)
        assert np.linalg.norm(v) > 1e-4 * scale
    with pytest.raises(UserError, match="models 'a' and 'b' coincide"):
        model_frame([a, a.copy()], ["a", "b"])
    with pytest.raises(UserError, match="models 'b' and 'c' coincide"):
        model_frame([a, b, b.copy()], ["a", "b", "c"])


def test_docs_name_the_new_refusals():
    docs = Path(__file__).parents[2] / "docs"
    text = (docs / "troubleshooting.md").read_text() + (docs / "user-guide.md").read_text()
    for phrase in ("lie on one line", "too few for a", "partners are trained only", "`dir_d0`"):
        assert phrase in text, phrase
