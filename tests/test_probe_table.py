"""Every registered probe (built-in or plugin) against one table of contracts, on a tiny problem.

Three 1-4-1 tanh nets trained briefly on 64 samples of `cubic`, every probe in one store, the
whole thing twice under one seed (two stores). For each probe:

1. every number it returns is finite (None where it has no value): checked on what `run`
   returned, before the store turns NaN / inf into null;
2. the same result twice under one seed (timing fields left out);
3. the result read back from the store equals the one `execute` returned;
4. `klandscape show STORE --json` prints valid JSON holding the run, complete, and `show`
   without --json exits 0;
5. `klandscape plot STORE --run NAME` exits 0 and writes figures that exist, or says why the
   probe has none (`skipped`).

Options are shrunk for every probe whose Config has them (few points, shallow DSS, small
step budgets), so a plugin's probe is held to the same table without knowing it here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, save_tiny_cubic_models

from keras_landscape import registry

pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")

PROBES = sorted(registry.probes())
DATA = "cubic:limit=64"
SEED = 3
SMALL = {  # applied to each probe whose Config has the field
    "points": 4,
    "max_depth": 2,
    "max_steps": 100,
    "check_every": 25,
    "learning_rate": 0.01,
    "grid": 20,
    "max_bisections": 2,
    "tolerance": 0.2,
    "partner_steps": 100,
    "relax_steps": 20,
    "steps": 30,
    "samples": 2,
    "trace_samples": 5,
    "density_probes": 1,
    "density_steps": 8,
    "x_points": 5,
    "y_points": 5,
}
TIMING = {"seconds"}


def _options() -> dict[str, dict]:
    options = {}
    for name in PROBES:
        fields = {f.name for f in registry.config_fields(registry.probes()[name].cls)}
        options[name] = {k: v for k, v in SMALL.items() if k in fields}
    return options


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """{"raw": {probe: what run returned}, "documents": [execute(...)] * 2, "stores": [...]}."""
    from keras_landscape.experiment.runner import RunSpec, execute
    from keras_landscape.store.hdf5 import RunRecord

    folder = tmp_path_factory.mktemp("probe_table")
    paths = save_tiny_cubic_models(folder, range(3), DATA)

    raw, complete = {}, RunRecord.complete

    def recording(self, result):
        raw.setdefault(self.name, []).append(result)
        return complete(self, result)

    documents, stores = [], []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunRecord, "complete", recording)
        for rep in range(2):
            stores.append(str(folder / f"run_{rep}.h5"))
            documents.append(
                execute(
                    RunSpec(
                        models=paths,
                        data=DATA,
                        probes=PROBES,
                        probe_options=_options(),
                        out=stores[-1],
                        seed=SEED,
                    )
                )
            )
    return {"raw": raw, "documents": documents, "stores": stores, "folder": folder}


def _non_finite(value, where="result"):
    """Paths to every NaN / inf number in a nested result (numpy included)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, f"{where}.{k}")]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{where}[{i}]")]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            return [f"{where} (array)"]
        return [] if value.dtype.kind in "fciub" else _non_finite(value.tolist(), where)
    if isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, str):
        return []
    if isinstance(value, (int, float, np.number)):
        return (
            []
            if math.isfinite(float(np.real(value))) and math.isfinite(float(np.imag(value)))
            else [where]
        )
    return [f"{where} (unexpected {type(value).__name__})"]


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


@pytest.mark.parametrize("probe", PROBES)
def test_probe_table(probe, table, capsys):
    from keras_landscape.store import Store

    first, second = (d["results"][probe] for d in table["documents"])

    # 1. finite or None, as the probe returned it (the store would hide NaN as null)
    assert len(table["raw"][probe]) == 2
    for returned in table["raw"][probe]:
        bad = _non_finite(returned)
        assert not bad, f"{probe}: non-finite numbers at {bad}"

    # 2. deterministic under one seed
    assert _untimed(first) == _untimed(second), f"{probe}: another result under one seed"

    # 3. stored and read back equal
    store_path = table["stores"][0]
    with Store.open(store_path) as store:
        run = store.run(probe)
        assert run.status == "complete"
        assert run.result == first

    # 4. show: JSON with the run, complete; the tables exit 0
    code, out, err = run_cli(capsys, "show", store_path, "--json")
    assert code == 0, err
    runs = {r["name"]: r for r in json.loads(out)["runs"]}
    assert runs[probe]["status"] == "complete"
    code, out, err = run_cli(capsys, "show", store_path)
    assert code == 0, err
    assert probe in out

    # 5. plot: figures that exist, or the reason there are none
    figures_dir = table["folder"] / f"figures_{probe}"
    code, out, err = run_cli(
        capsys, "plot", store_path, "--run", probe, "--json", "-q", "-o", str(figures_dir)
    )
    assert code == 0, err
    report = json.loads(out)
    drawn = [f for f in report["figures"] if f["run"] == probe]
    for figure in drawn:
        assert Path(figure["path"]).is_file() and Path(figure["path"]).stat().st_size > 0
    if not drawn:
        reasons = [s for s in report["skipped"] if s.get("run") == probe]
        assert reasons and all(s.get("reason") for s in reasons), report
