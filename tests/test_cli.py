"""The klandscape command line: JSON output that matches Keras, exit codes, clean errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli

from keras_landscape import __version__
from keras_landscape.cli.main import EXIT_BAD_INPUT


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, digits_model_file):
    """Good, mismatched, wrongly shaped, NaN-weighted and corrupt model files."""
    folder = tmp_path_factory.mktemp("cli_models")
    keras.utils.set_random_seed(1)
    wider = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(7, activation="relu"), keras.layers.Dense(10)],
        name="wider",
    )
    wider.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wider.save(folder / "wider.keras")
    five = keras.Sequential([keras.Input((5,)), keras.layers.Dense(10)], name="five")
    five.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    five.save(folder / "five_features.keras")
    nan = keras.models.load_model(digits_model_file)
    kernel = nan.layers[0].kernel
    kernel.assign(np.where(np.arange(kernel.shape[1]) == 2, np.nan, kernel.numpy()))
    nan.save(folder / "nan_weights.keras")
    (folder / "corrupt.keras").write_bytes(
        np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes()
    )
    (folder / "model.pt").write_bytes(b"\x80\x02torch")
    return {
        "good": str(digits_model_file),
        "wider": str(folder / "wider.keras"),
        "five": str(folder / "five_features.keras"),
        "nan": str(folder / "nan_weights.keras"),
        "corrupt": str(folder / "corrupt.keras"),
        "pt": str(folder / "model.pt"),
        "missing": str(folder / "missing.keras"),
    }


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"klandscape, version {__version__}"


def test_probes_lists_evaluate(capsys):
    code, out, _ = run_cli(capsys, "probes")
    assert code == 0
    assert "evaluate" in out and "Loss" in out  # a table (wrapped to the console width)
    code, out, _ = run_cli(capsys, "probes", "--json")
    assert code == 0
    document = json.loads(out)
    by_name = {p["name"]: p for p in document["probes"]}
    assert by_name["evaluate"]["origin"] == "built-in"
    assert by_name["evaluate"]["summary"].startswith("Loss, level function")
    assert isinstance(document["broken"], list)


def _keras_reference(path):
    """(train loss, test loss, gradient norm on train) of a model file, by Keras itself."""
    from keras_landscape.data.specs import load_data

    data = load_data("digits")
    model = keras.models.load_model(path)
    train = model.evaluate(
        data.x_train, data.y_train, batch_size=4096, verbose=0, return_dict=True
    )["loss"]
    test = model.evaluate(data.x_test, data.y_test, batch_size=4096, verbose=0, return_dict=True)[
        "loss"
    ]
    with tf.GradientTape() as tape:
        value = model.loss(data.y_train, model(data.x_train)) + tf.add_n(model.losses)
    grads = tape.gradient(value, model.trainable_variables)
    norm = float(np.sqrt(sum(float(tf.reduce_sum(g * g)) for g in grads)))
    return float(train), float(test), norm, model.count_params()


def test_probe_json_matches_keras_and_show_reads_it_back(capsys, tmp_path, model_files):
    out_path = tmp_path / "run.h5"
    code, out, err = run_cli(
        capsys, "probe", model_files["good"], "--data", "digits", "--out", str(out_path), "--json"
    )
    assert code == 0, err
    document = json.loads(out)  # exactly one JSON document, nothing else on stdout
    assert set(document) == {"store", "models", "results", "devices", "writer"}
    assert document["writer"] is True and document["devices"]["strategy"] == "one"
    assert document["store"] == str(out_path) and out_path.exists()
    assert document["models"] == [{"name": "digits_mlp", "source": model_files["good"]}]
    [row] = document["results"]["evaluate"]["models"]
    train_loss, test_loss, grad_norm, count = _keras_reference(model_files["good"])
    # 'loss' is E on the training split; the level ('loss' by default) is on the test split
    assert row["loss"] == pytest.approx(train_loss, rel=1e-5)
    assert row["level"] == pytest.approx(test_loss, rel=1e-5)
    assert row["grad_norm"] == pytest.approx(grad_norm, rel=1e-4)
    assert row["parameters"] == count == 64 * 6 + 6 + 6 * 10 + 10
    assert (row["level_fn"], row["split"], row["model"]) == ("loss", "test", "digits_mlp")

    code, out, err = run_cli(capsys, "show", str(out_path), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["parameters"] == count and summary["variables"] == 4
    assert summary["data"]["spec"] == "digits"
    assert summary["data"]["loss"] == "sparse_categorical_crossentropy"
    assert [m["name"] for m in summary["models"]] == ["digits_mlp"]
    [run] = summary["runs"]
    assert (run["name"], run["probe"], run["status"]) == ("evaluate", "evaluate", "complete")
    assert run["config"] == {"allow_nonfinite": False}
    assert run["result"]["models"] == document["results"]["evaluate"]["models"]
    assert run["stored"] == {"grad_norm": 1, "level": 1, "loss": 1}

    # Human-readable show: a table, not JSON, and it names the store.
    code, out, _ = run_cli(capsys, "show", str(out_path))
    assert code == 0 and str(out_path) in out and "evaluate" in out


def test_probe_level_error_and_resume(capsys, tmp_path, model_files):
    out_path = tmp_path / "errors.h5"
    args = [
        "-q",
        "probe",
        model_files["good"],
        "--data",
        "digits",
        "--level-fn",
        "error",
        "--eval-batch-size",
        "7",
        "--out",
        str(out_path),
        "--json",
    ]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    [row] = json.loads(out)["results"]["evaluate"]["models"]
    from keras_landscape.data.specs import load_data

    data = load_data("digits")
    model = keras.models.load_model(model_files["good"])
    predicted = np.argmax(model.predict(data.x_test, verbose=0), axis=1)
    assert row["level"] == pytest.approx(100 * np.mean(predicted != data.y_test), abs=1e-6)
    # --resume finds the complete run and reports the same result
    code, out_again, err = run_cli(capsys, *args, "--resume")
    assert code == 0, err
    assert json.loads(out_again)["results"] == json.loads(out)["results"]


def _bad_cases(files, existing):
    digits = ["--data", "digits"]
    return {
        "missing model file": ([files["missing"], *digits], "does not exist"),
        "corrupt file": ([files["corrupt"], *digits], "not a valid .keras archive"),
        "unknown extension": ([files["pt"], *digits], "unknown extension '.pt'"),
        "unknown data kind": ([files["good"], "--data", "mnistt"], "Unknown data kind 'mnistt'"),
        "unknown probe": ([files["good"], *digits, "--probe", "nosuch"], "Unknown probe 'nosuch'"),
        "unknown --set option": (
            [files["good"], *digits, "--set", "bogus=1"],
            "Unknown option.*bogus",
        ),
        "malformed --set": ([files["good"], *digits, "--set", "bogus"], "write key=value"),
        "mismatched architectures": (
            [files["good"], files["wider"], *digits],
            "digits_mlp and wider do not share an architecture.*"
            r"\(64, 6\) vs .*\(64, 7\)",
        ),
        "wrong data shapes": (
            [files["five"], *digits],
            r"per-sample shape \(64,\), but the model expects \(5,\)",
        ),
        "NaN weights": ([files["nan"], *digits], "loss of model 'nan_weights'.*is not finite"),
        "existing --out": ([files["good"], *digits, "--out", existing], "already exists.*--resume"),
    }


BAD_CASES = [
    "missing model file",
    "corrupt file",
    "unknown extension",
    "unknown data kind",
    "unknown probe",
    "unknown --set option",
    "malformed --set",
    "mismatched architectures",
    "wrong data shapes",
    "NaN weights",
    "existing --out",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_message(case, capsys, tmp_path, model_files):
    existing = tmp_path / "existing.h5"
    existing.write_bytes(b"placeholder")
    args, message = _bad_cases(model_files, str(existing))[case]
    out_args = [] if "--out" in args else ["--out", str(tmp_path / "new.h5")]
    code, out, err = run_cli(capsys, "probe", *args, *out_args, "--json")
    assert code == EXIT_BAD_INPUT
    # stdout holds exactly one JSON document, the error (no half result document)
    error = json.loads(out)["error"]
    assert error["kind"] == "bad_input" and error["exit_code"] == EXIT_BAD_INPUT
    assert error["message"] == err.strip().splitlines()[-1]
    # Progress lines (off a terminal: one per stage) may come first; the message is last.
    assert err.strip().splitlines()[-1].startswith("Error: ")
    assert err.count("Error: ") == 1
    assert "Traceback" not in err
    assert re.search(message, err, re.S), err
    if case == "existing --out":
        assert existing.read_bytes() == b"placeholder"  # not overwritten


def test_click_usage_errors_exit_2(capsys):
    code, _, err = run_cli(capsys, "probe", "--data", "digits")  # no model
    assert code == EXIT_BAD_INPUT and "Missing argument" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "nosuchcommand")
    assert code == EXIT_BAD_INPUT and "No such command" in err


def test_show_missing_store_exits_2(capsys, tmp_path):
    code, out, err = run_cli(capsys, "show", str(tmp_path / "absent.h5"), "--json")
    assert code == EXIT_BAD_INPUT and json.loads(out)["error"]["kind"] == "bad_input"
    assert err.startswith("Error: ") and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.ci
def test_console_script_json_has_no_framework_noise(tmp_path, model_files):
    script = Path(sys.executable).with_name("klandscape")
    command = (
        [str(script)] if script.exists() else [sys.executable, "-m", "keras_landscape.cli.main"]
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY", "ABSL_MIN_LOG_LEVEL")
    }
    env["CUDA_VISIBLE_DEVICES"] = ""
    result = subprocess.run(
        [
            *command,
            "probe",
            model_files["good"],
            "--data",
            "digits",
            "--out",
            str(tmp_path / "sub.h5"),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["results"]["evaluate"]["models"][0]["parameters"] == 460
    noise = [
        line
        for line in result.stderr.splitlines()
        if line.startswith(("I0000", "W0000", "E0000"))
        or any(word in line for word in ("oneDNN", "cuda", "absl::InitializeLog"))
    ]
    assert noise == [], result.stderr
    # A bad input from the console script: exit 2, one message, no traceback, and without
    # --json nothing on stdout.
    bad = subprocess.run(
        [*command, "show", str(tmp_path / "absent.h5")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("Error: ") and "Traceback" not in bad.stderr


def test_resume_with_other_options_exits_2_naming_the_option(capsys, tmp_path, model_files):
    out = str(tmp_path / "s.h5")
    base = ["probe", model_files["good"], "--data", "digits", "--out", out]
    code, _, _ = run_cli(capsys, *base, "--set", "allow_nonfinite=false")
    assert code == 0
    code, stdout, stderr = run_cli(capsys, *base, "--resume", "--set", "allow_nonfinite=true")
    assert code == EXIT_BAD_INPUT and stdout == ""  # no --json: stdout stays empty
    assert "allow_nonfinite" in stderr and "Traceback" not in stderr
    code, _, _ = run_cli(capsys, *base, "--resume", "--set", "allow_nonfinite=false")
    assert code == 0


def test_export_to_unwritable_path_exits_2(capsys, tmp_path, model_files):
    out = str(tmp_path / "s.h5")
    assert run_cli(capsys, "probe", model_files["good"], "--data", "digits", "--out", out)[0] == 0
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, _, stderr = run_cli(
        capsys, "export", out, "--model", "digits_model", "-o", str(blocker / "b.keras")
    )
    if "No model" in stderr:  # the stored name follows the file stem
        name = Path(model_files["good"]).stem
        code, _, stderr = run_cli(
            capsys, "export", out, "--model", name, "-o", str(blocker / "b.keras")
        )
    assert code == EXIT_BAD_INPUT and "Cannot write" in stderr
