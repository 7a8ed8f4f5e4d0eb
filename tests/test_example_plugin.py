"""examples/third_party_probe: the example plugin runs, shows and plots through the public
helpers, and its numbers are right on a convex landscape (linear regression, MSE)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_landscape import registry
from tests.conftest import run_cli

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "third_party_probe"


@pytest.fixture
def linear_path_probe():
    """The example's probe class, registered in-process (as its entry point would)."""
    spec = importlib.util.spec_from_file_location(
        "klandscape_linear_path", EXAMPLE / "klandscape_linear_path.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    registry.discover()
    saved = dict(registry._REGISTRY.probes)
    registry.register_probe(module.LinearPathProbe, origin="plugin (klandscape-linear-path)")
    yield module.LinearPathProbe
    registry._REGISTRY.probes.clear()
    registry._REGISTRY.probes.update(saved)
    sys.modules.pop(spec.name, None)


def _mse(x, y, theta):
    kernel, bias = theta[:-1].astype(np.float64), float(theta[-1])
    return float(np.mean((x.astype(np.float64) @ kernel + bias - y[:, 0]) ** 2))


def test_example_probe_on_a_convex_landscape(tmp_path, capsys, linreg_models, linear_path_probe):
    from keras_landscape.experiment.runner import execute
    from keras_landscape.experiment.spec import RunSpec

    paths = linreg_models["paths"][:2]
    store = str(tmp_path / "linear.h5")
    document = execute(
        RunSpec(
            models=paths,
            data=linreg_models["data"],
            probes=["linear_path"],
            options={"points": 8},
            out=store,
        )
    )
    (pair,) = document["results"]["linear_path"]["pairs"]
    x, y = linreg_models["x"], linreg_models["y"]
    from keras_landscape.store import Store

    with Store.open(store, "r") as opened:
        thetas = [opened.read_model(name)["theta"] for name in opened.model_names()]
        stored_curve = opened.run("linear_path").read("pair_0_1/levels")
    ts = np.linspace(0.0, 1.0, 9)
    expected = [_mse(x, y, (1 - t) * thetas[0] + t * thetas[1]) for t in ts]
    np.testing.assert_allclose(pair["levels"], expected, rtol=1e-4)
    np.testing.assert_allclose(stored_curve, pair["levels"], rtol=0, atol=0)
    # convex E: the maximum on a segment is at an end, so the linear barrier is zero
    assert pair["argmax_t"] in (0.0, 1.0)
    assert abs(pair["barrier"]) <= 1e-6 * max(pair["endpoint_levels"])
    # the probe's own table in `show`, its own figure in `plot`
    code, out, err = run_cli(capsys, "show", store)
    assert code == 0, err
    assert "linear barrier" in out and "max on the line" in out
    code, out, err = run_cli(capsys, "plot", store, "--json")
    assert code == 0, err
    report = json.loads(out)
    kinds = [figure["kind"] for figure in report["figures"]]
    assert "linear_path" in kinds, report
    assert all(Path(figure["path"]).is_file() for figure in report["figures"])


def test_example_probe_option_checked_before_loading(capsys, linear_path_probe):
    code, out, err = run_cli(
        capsys,
        "probe",
        "missing-is-not-reached.keras",
        "--data",
        "cubic",
        "--probe",
        "linear_path",
        "--set",
        "points=0",
    )
    assert code == 2
    assert "points must be >= 1" in err or "does not exist" in err
