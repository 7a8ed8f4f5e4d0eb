"""A resume continues only the run that is in the store: same models in the same order, same
data, loss, level function, options; anything else is refused by name."""

import os
import subprocess
import sys

import pytest
from conftest import run_cli

from keras_landscape.cli.main import EXIT_BAD_INPUT


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, digits_classifier):
    folder = tmp_path_factory.mktemp("identity")
    paths = []
    for seed in (0, 1):
        path = folder / f"m{seed}.keras"
        digits_classifier("dense", seed=seed).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize(
    "change, named",
    [
        (["--level-fn", "error"], "level_fn"),
        (["--loss", "categorical_hinge"], "loss"),
        (["--split", "train"], "split"),
        (["--bn-stats", "interpolate"], None),  # no BatchNorm: nothing to differ
        (["--reverse"], "models"),
        (["--other-weights"], "weights of model"),
    ],
)
def test_probe_resume_refuses_another_run(
    change, named, two_models, capsys, tmp_path, digits_classifier
):
    out = str(tmp_path / "s.h5")
    models = list(two_models)
    assert run_cli(capsys, "probe", *models, "--data", "digits", "--out", out, "-q")[0] == 0
    if change == ["--reverse"]:
        models, change = models[::-1], []
    elif change == ["--other-weights"]:
        digits_classifier("dense", seed=5).save(models[1])
        change = []
    code, _, err = run_cli(
        capsys, "probe", *models, "--data", "digits", "--out", out, "-q", "--resume", *change
    )
    if named is None:
        assert code == 0, err
    else:
        assert code == EXIT_BAD_INPUT and named in err and "Traceback" not in err, err


def test_run_resume_refuses_other_data_or_level_function(two_models, capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        f"models: [{two_models[0]}]\ndata: digits\nlevel_fn: loss\nout: {tmp_path / 'r.h5'}\n"
        "plots: false\n"
    )
    assert run_cli(capsys, "run", str(config), "-q")[0] == 0
    code, _, err = run_cli(capsys, "run", str(config), "-q", "--resume", "--set", "level_fn=error")
    assert code == EXIT_BAD_INPUT and "level_fn" in err, err
    code, _, err = run_cli(
        capsys, "run", str(config), "-q", "--resume", "--set", "data=digits:limit=500"
    )
    assert code == EXIT_BAD_INPUT and "spec" in err and "Traceback" not in err, err
    assert run_cli(capsys, "run", str(config), "-q", "--resume")[0] == 0


def test_no_matplotlib_warnings_under_a_read_only_home(two_models, tmp_path, capsys):
    out = tmp_path / "p.h5"
    assert (
        run_cli(
            capsys,
            "probe",
            *two_models,
            "--data",
            "digits",
            "--probe",
            "connectivity",
            "--set",
            "max_depth=0",
            "--out",
            str(out),
            "-q",
        )[0]
        == 0
    )
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    home = blocker / "home"  # not writable by anyone, root included: its parent is a file
    env = {k: v for k, v in os.environ.items() if k != "MPLCONFIGDIR"}
    env.update(
        HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache")
    )
    result = subprocess.run(
        [sys.executable, "-m", "keras_landscape.cli.main", "plot", str(out), "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "atplotlib" not in result.stderr, result.stderr


def test_resume_accepts_an_option_added_since_the_store_at_its_default(
    two_models, capsys, tmp_path
):
    """A store written before a probe gained an option resumes when the option is left at its
    default, and is refused by name when it is set to something else."""
    import h5py

    from keras_landscape.store.hdf5 import to_json

    out = str(tmp_path / "s.h5")
    assert run_cli(capsys, "probe", *two_models, "--data", "digits", "--out", out, "-q")[0] == 0
    with h5py.File(out, "a") as f:  # as an older version wrote it: no allow_nonfinite
        f["runs/evaluate"].attrs["config"] = to_json({})
    code, _, err = run_cli(
        capsys, "probe", *two_models, "--data", "digits", "--out", out, "-q", "--resume"
    )
    assert code == 0, err
    code, _, err = run_cli(
        capsys,
        "probe",
        *two_models,
        "--data",
        "digits",
        "--out",
        out,
        "-q",
        "--resume",
        "--set",
        "allow_nonfinite=true",
    )
    assert code == EXIT_BAD_INPUT and "allow_nonfinite" in err, err
