"""The HDF5 store: round trips, appends across interruption, resume, errors, h5py-only reading."""

import json
import math
import subprocess
import sys

import h5py
import numpy as np
import pytest

from keras_landscape.errors import UserError
from keras_landscape.store.hdf5 import FORMAT_NAME, FORMAT_VERSION, Store, from_json, to_json

VERSIONS = {
    "package_version": "0.1.0",
    "keras_version": "3.15.0",
    "tensorflow_version": "2.21.0",
    "backend": "tensorflow",
}
PATHS = ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]
SHAPES = [(3, 4), (4,), (4, 1), ()]  # a scalar variable too
OFFSETS = [0, 12, 16, 20]
P = 21
MODEL_JSON = json.dumps({"class_name": "Sequential", "config": {"name": "m", "layers": ["x" * 10]}})


def _layout(store, nt_paths=("bn/moving_mean", "bn/moving_variance")):
    store.write_layout(
        PATHS, SHAPES, OFFSETS, P, model_config=MODEL_JSON, non_trainable_paths=nt_paths
    )


def _new(tmp_path, name="run.h5", **kw):
    return Store.create(
        tmp_path / name, versions=VERSIONS, command="klandscape probe a.keras b.keras", **kw
    )


def test_round_trip_layout_models_data_and_attrs(tmp_path, rng):
    theta_a = rng.standard_normal(P).astype(np.float32)
    theta_b = rng.standard_normal(P)  # float64 in, float32 stored
    mean, var = rng.standard_normal(5).astype(np.float32), np.arange(5, dtype=np.float64)
    with _new(tmp_path) as s:
        _layout(s)
        s.write_data_info(
            {
                "spec": "digits",
                "description": "8x8 digits",
                "loss": "sparse_ce",
                "level_fn": "error_rate",
                "split": "test",
                "n": 360,
                "classes": [0, 1],
            }
        )
        s.add_model("a", theta_a, source="a.keras", non_trainable=[mean, var], loss=0.25, level=3.5)
        s.add_model(
            "b",
            theta_b,
            source="trained:adam seed=1",
            role="endpoint",
            non_trainable={"seed/state": np.array([7, 9], dtype=np.int64)},
        )
        s.add_model("a", theta_a, source="a.keras", non_trainable=[mean, var], loss=0.25, level=3.5)
    path = tmp_path / "run.h5"
    with Store.open(path) as s:
        root = s.attrs()
        assert root["format"] == FORMAT_NAME and root["format_version"] == FORMAT_VERSION
        for k, v in VERSIONS.items():
            assert root[k] == v
        assert root["command"] == "klandscape probe a.keras b.keras"
        assert root["created"].endswith("Z") and root["updated"] >= root["created"]
        lay = s.read_layout()
        assert lay == {
            "paths": PATHS,
            "shapes": SHAPES,
            "offsets": OFFSETS,
            "size": P,
            "model_config": MODEL_JSON,
            "non_trainable_paths": ["bn/moving_mean", "bn/moving_variance"],
        }
        info = s.read_data_info()
        assert info["spec"] == "digits" and info["level_fn"] == "error_rate"
        assert info["n"] == 360 and info["classes"] == [0, 1]
        assert s.model_names() == ["a", "b"]
        a = s.read_model("a")
        assert a["theta"].dtype == np.float32
        np.testing.assert_array_equal(a["theta"], theta_a)
        np.testing.assert_array_equal(a["non_trainable"][0], mean)
        np.testing.assert_array_equal(a["non_trainable"][1], var)
        assert a["non_trainable"][1].dtype == np.float64
        assert a["non_trainable_paths"] == ["bn/moving_mean", "bn/moving_variance"]
        assert a["attrs"] == {"source": "a.keras", "role": "input", "loss": 0.25, "level": 3.5}
        b = s.read_model("b")
        np.testing.assert_array_equal(b["theta"], theta_b.astype(np.float32))
        assert b["non_trainable_paths"] == ["seed/state"]
        np.testing.assert_array_equal(b["non_trainable"][0], [7, 9])
        assert b["attrs"]["role"] == "endpoint" and b["attrs"]["source"].startswith("trained:")
        parts = s.split_theta(theta_a)
        assert [p.shape for p in parts] == SHAPES
        np.testing.assert_array_equal(parts[2].ravel(), theta_a[16:20])
        with pytest.raises(UserError, match="no model 'zz'.*a, b"):
            s.read_model("zz")


def test_layout_is_validated(tmp_path):
    with _new(tmp_path) as s:
        with pytest.raises(ValueError, match="size"):
            s.write_layout(PATHS, SHAPES, OFFSETS, P + 1)
        with pytest.raises(ValueError, match="one entry per"):
            s.write_layout(PATHS[:2], SHAPES, OFFSETS, P)
        with pytest.raises(UserError, match="no /layout"):
            s.read_layout()
        _layout(s)
        with pytest.raises(ValueError, match="theta has 3 values"):
            s.add_model("x", np.zeros(3), source="x")


def test_run_whole_writes_subgroups_and_attrs(tmp_path, rng):
    beads = rng.standard_normal((4, P)).astype(np.float32)
    curves = rng.random((3, 11))
    with _new(tmp_path) as s:
        run = s.begin_run(
            "conn",
            "connectivity",
            {"alpha": np.float32(0.95), "levels": np.array([0.1, 0.3])},
            seed=7,
        )
        run.write("pair_0/level_0.3/beads", beads)
        run.write("pair_0/level_0.3/curves", curves)
        run.write("labels", np.array(["a", "bé"]))
        run.write("scalar", np.float64(2.5))
        run.set_attrs("pair_0", a="m0", b="m1", connected=True)
        run.set_attrs("pair_0/level_0.3/beads", level=0.3, failed_segments=[])
        run.set_attrs(None, note="hello", extra={"k": (1, 2)})
        run.complete(
            {
                "connected": True,
                "beads": np.int64(4),
                "length": np.float32(1.25),
                "worst": float("nan"),
            }
        )
    with Store.open(tmp_path / "run.h5") as s:
        assert s.run_names() == ["conn"]
        run = s.run("conn")
        assert run.probe == "connectivity" and run.status == "complete" and run.seed == 7
        assert run.config == {"alpha": 0.95, "levels": [0.1, 0.3]}
        assert run.result == {"connected": True, "beads": 4, "length": 1.25, "worst": None}
        assert run.keys() == [
            "labels",
            "pair_0/level_0.3/beads",
            "pair_0/level_0.3/curves",
            "scalar",
        ]
        np.testing.assert_array_equal(run.read("pair_0/level_0.3/beads"), beads)
        np.testing.assert_array_equal(run.read("pair_0/level_0.3/curves"), curves)
        assert list(run.read("labels")) == ["a", "bé"]
        assert run.read("scalar") == 2.5
        assert run.length("pair_0/level_0.3/beads") == 4 and run.length("missing") == 0
        assert run.has("pair_0/level_0.3/beads") and not run.has("pair_0") and not run.has("nope")
        assert run.get_attrs("pair_0") == {"a": "m0", "b": "m1", "connected": True}
        assert run.get_attrs("pair_0/level_0.3/beads") == {"level": 0.3, "failed_segments": []}
        top = run.get_attrs(None)
        assert top["note"] == "hello" and top["extra"] == {"k": [1, 2]} and top["finished"]
        with pytest.raises(KeyError, match="labels"):
            run.read("nope")
        with pytest.raises(UserError, match="no run 'other'.*conn"):
            s.run("other")
        with pytest.raises(ValueError, match="read-only"):
            run.append("labels", "c")


def test_append_survives_interruption_and_resume_with_truncate(tmp_path, rng):
    rows = rng.standard_normal((5, P)).astype(np.float32)
    path = tmp_path / "sub" / "dir" / "run.h5"  # parent directories are made
    s = Store.create(path, versions=VERSIONS, command="c")
    run = s.begin_run("dss", "connectivity", {"d_max": 10})
    for i in range(3):
        assert run.append("beads", rows[i]) == i + 1
        assert run.append("bead_loss", np.float32(i)) == i + 1
    run.append("beads", rows[3])  # partial step: bead written, its loss not
    # Everything is flushed: another process sees every row while the writer is still open
    # (it must open without HDF5 file locking, since the writer holds the lock).
    code = (
        "import sys, h5py; f = h5py.File(sys.argv[1], 'r', locking=False); "
        "print(f['runs/dss/beads'].shape, f['runs/dss/bead_loss'].shape)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["(4,", f"{P})", "(3,)"]
    s.close()  # closed without complete(): simulated kill

    with Store.open(path) as s:
        run = s.run("dss")
        assert run.status == "running" and run.result is None
        np.testing.assert_array_equal(run.read("beads"), rows[:4])
        np.testing.assert_array_equal(run.read("bead_loss"), [0, 1, 2])
        assert run.read("beads").dtype == np.float32

    with Store.open(path, "a") as s:
        with pytest.raises(UserError, match="already has a run 'dss'.*[Rr]esume"):
            s.begin_run("dss", "connectivity", {"d_max": 10})
        with pytest.raises(UserError, match="started by probe 'connectivity'"):
            s.begin_run("dss", "barrier", {}, resume=True)
        run = s.begin_run("dss", "connectivity", {"d_max": 10}, resume=True)
        assert run.status == "running" and run.previous_status == "running"
        n = min(run.length("beads"), run.length("bead_loss"))
        run.truncate("beads", n)
        assert run.length("beads") == 3
        for i in range(n, 5):
            run.append("beads", rows[i])
            run.append("bead_loss", np.float32(i))
        with pytest.raises(ValueError, match="shape"):
            run.append("beads", rows[0][:3])
        with pytest.raises(ValueError, match="truncate"):
            run.truncate("beads", 99)
        run.complete({"n": 5})

    with Store.open(path, "a") as s:
        run = s.run("dss")
        assert run.status == "complete" and run.result == {"n": 5}
        np.testing.assert_array_equal(run.read("beads"), rows)
        np.testing.assert_array_equal(run.read("bead_loss"), np.arange(5, dtype=np.float32))
        again = s.begin_run("dss", "connectivity", {}, resume=True)
        assert again.previous_status == "complete" and again.status == "running"
        assert again.get_attrs(None)["resumed"] == 2
        again.fail("stopped by user", status="interrupted")
        assert s.run("dss").status == "interrupted" and s.run("dss").error == "stopped by user"
        other = s.begin_run("bad", "barrier", {})
        other.fail("NaN loss")
        assert other.status == "failed" and other.error == "NaN loss"
        assert sorted(s.run_names()) == ["bad", "dss"]


def test_written_whole_then_appended(tmp_path):
    with _new(tmp_path) as s:
        run = s.begin_run("r", "p", {})
        run.write("x", np.zeros((2, 3), np.float32))
        assert run.append("x", np.ones(3, np.float32)) == 3
        run.write("x", np.full((1, 3), 5.0, np.float32))  # replaces
        assert run.read("x").tolist() == [[5, 5, 5]]
        run.write("empty", np.zeros((0, 4)))
        assert run.append("empty", np.ones(4)) == 1
        run.delete("empty")
        assert not run.has("empty")


def test_json_numpy_values_and_non_finite():
    value = {
        "a": np.float32(0.95),
        "b": np.array([[1.0, np.nan], [np.inf, -np.inf]]),
        "c": np.int32(3),
        "d": (np.bool_(True), None),
        "e": np.array(np.float32(0.1)),
        "f": float("-inf"),
    }
    text = to_json(value)
    assert "NaN" not in text and "Infinity" not in text
    assert from_json(text) == {
        "a": 0.95,
        "b": [[1.0, None], [None, None]],
        "c": 3,
        "d": [True, None],
        "e": 0.1,
        "f": None,
    }
    with pytest.raises(TypeError):
        to_json({"x": object()})


def test_nan_in_config_attrs_and_run_datasets(tmp_path):
    with _new(tmp_path) as s:
        s.add_model("m", np.zeros(2), source="m.keras", loss=float("nan"), hist=[1.0, float("nan")])
        run = s.begin_run("r", "p", {"slack": float("nan"), "nested": {"x": np.arange(2)}})
        run.append("loss", np.float64("nan"))
    with Store.open(tmp_path / "run.h5") as s:
        attrs = s.read_model("m")["attrs"]
        assert math.isnan(attrs["loss"]) and attrs["hist"] == [1.0, None]
        run = s.run("r")
        assert run.config == {"slack": None, "nested": {"x": [0, 1]}}
        assert np.isnan(run.read("loss")[0])


def test_create_refuses_existing_unless_overwrite(tmp_path):
    _new(tmp_path).close()
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        _new(tmp_path)
    with _new(tmp_path, overwrite=True) as s:
        assert s.run_names() == [] and s.model_names() == []
    with pytest.raises(UserError, match="directory"):
        Store.create(tmp_path, versions=VERSIONS, command="c")


def test_open_rejects_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Store.open(tmp_path / "missing.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5 at all\n")
    with pytest.raises(UserError, match="not an HDF5 file"):
        Store.open(text)
    other = tmp_path / "model.h5"
    with h5py.File(other, "w") as f:
        f.attrs["keras_version"] = "3.15"
        f.create_dataset("w", data=np.zeros(3))
    with pytest.raises(UserError, match="not a keras-landscape store"):
        Store.open(other)
    future = tmp_path / "future.h5"
    _new(tmp_path, "future.h5").close()
    with h5py.File(future, "a") as f:
        f.attrs["format_version"] = np.int64(FORMAT_VERSION + 1)
    with pytest.raises(UserError, match=r"format version 2.*newer"):
        Store.open(future, "a")
    with pytest.raises(ValueError):
        Store.open(future, "w")
    # Error messages are one paragraph.
    try:
        Store.open(other)
    except UserError as exc:
        assert "\n" not in str(exc)


def test_bad_names(tmp_path):
    with _new(tmp_path) as s:
        with pytest.raises(UserError, match="cannot contain '/'"):
            s.begin_run("a/b", "p", {})
        with pytest.raises(UserError, match="non-empty"):
            s.add_model("", np.zeros(1), source="x")
        run = s.begin_run("ok", "p", {})
        for key in ("/abs", "a//b", "../up", ""):
            with pytest.raises(ValueError):
                run.append(key, 1.0)


def test_chunking_of_appended_datasets(tmp_path):
    with _new(tmp_path) as s:
        run = s.begin_run("r", "p", {})
        run.append("small", np.zeros(10, np.float32))
        run.append("big", np.zeros(600_000, np.float32))
        small, big = s.h5["runs/r/small"], s.h5["runs/r/big"]
        assert small.maxshape == (None, 10) and small.chunks[1] == 10 and small.chunks[0] > 1
        assert big.maxshape == (None, 600_000) and big.chunks[0] == 1
        assert big.chunks[1] * 4 <= (1 << 20)


_PLAIN_READER = r"""
import json, sys
import h5py, numpy as np

def attrs(obj):
    json_names = set(json.loads(obj.attrs.get("json_attrs", "[]")))
    out = {}
    for k, v in obj.attrs.items():
        if k == "json_attrs":
            continue
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        out[k] = json.loads(v) if k in json_names else v
    return out

out = {}
with h5py.File(sys.argv[1], "r") as f:
    assert f.attrs["format"] == "keras-landscape" and f.attrs["format_version"] == 1
    out["keras_version"] = f.attrs["keras_version"]
    lay = f["layout"]
    paths = list(lay["paths"].asstr()[()])
    offsets = lay["offsets"][()]
    shapes = json.loads(lay.attrs["shapes"])
    size = int(lay.attrs["size"])
    out["layout"] = [paths, offsets.tolist(), shapes, size, lay.attrs["model_config"],
                     json.loads(lay.attrs["non_trainable_paths"])]
    def unflatten(theta):
        return [theta[o:o + int(np.prod(s))].reshape(s) for o, s in zip(offsets, shapes)]
    g = f["models"]["a"]
    theta = g["theta"][()]
    nt = g.get("non_trainable")
    state = [nt[k][()] for k in sorted(nt, key=int)] if nt is not None else []
    out["model_a"] = [attrs(g), theta.tolist(), [x.tolist() for x in state],
                      [nt[k].attrs["path"] for k in sorted(nt, key=int)],
                      [w.tolist() for w in unflatten(theta)]]
    out["data"] = attrs(f["data"])
    run = f["runs"]["conn"]
    keys = []
    run.visititems(lambda k, o: keys.append(k) if isinstance(o, h5py.Dataset) else None)
    out["run"] = [attrs(run), sorted(keys), run["beads"][()].tolist(),
                  run["pair_0/level_0.3/curve"][()].tolist(), attrs(run["pair_0"])]
print(json.dumps(out, default=lambda o: o.item()))
"""


def test_readable_with_plain_h5py_following_the_docs(tmp_path, rng):
    """A separate interpreter that imports only h5py, numpy and json reads the store the way
    docs/hdf5-format.md says, and gets back exactly what the Store wrote."""
    theta = rng.standard_normal(P).astype(np.float32)
    beads = rng.standard_normal((3, P)).astype(np.float32)
    path = tmp_path / "run.h5"
    with _new(tmp_path) as s:
        _layout(s)
        s.write_data_info(
            {
                "spec": "cubic",
                "loss": "mse",
                "level_fn": "mae",
                "split": "test",
                "description": "x^3",
            }
        )
        s.add_model("a", theta, source="a.keras", non_trainable=[np.ones(2), np.zeros(2)], loss=0.5)
        run = s.begin_run("conn", "connectivity", {"alpha": 0.95, "levels": [1.0, 0.3]}, seed=1)
        for b in beads:
            run.append("beads", b)
        run.append("pair_0/level_0.3/curve", np.array([0.1, np.nan]))
        run.set_attrs("pair_0", connected=False, worst=[1, 0.7])
        run.complete({"connected": False, "gap": float("inf")})
    script = tmp_path / "reader.py"
    script.write_text(_PLAIN_READER)
    proc = subprocess.run(
        [sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["keras_version"] == VERSIONS["keras_version"]
    assert out["layout"] == [
        PATHS,
        OFFSETS,
        [list(s) for s in SHAPES],
        P,
        MODEL_JSON,
        ["bn/moving_mean", "bn/moving_variance"],
    ]
    m_attrs, m_theta, m_state, m_nt_paths, m_weights = out["model_a"]
    assert m_attrs == {"source": "a.keras", "role": "input", "loss": 0.5}
    np.testing.assert_array_equal(np.array(m_theta, np.float32), theta)
    assert m_state == [[1.0, 1.0], [0.0, 0.0]]
    assert m_nt_paths == ["bn/moving_mean", "bn/moving_variance"]
    assert np.array(m_weights[0]).shape == (3, 4) and m_weights[3] == float(theta[20])
    assert out["data"] == {
        "spec": "cubic",
        "loss": "mse",
        "level_fn": "mae",
        "split": "test",
        "description": "x^3",
    }
    r_attrs, keys, r_beads, curve, pair_attrs = out["run"]
    assert r_attrs["probe"] == "connectivity" and r_attrs["status"] == "complete"
    assert r_attrs["config"] == {"alpha": 0.95, "levels": [1.0, 0.3]} and r_attrs["seed"] == 1
    assert r_attrs["result"] == {"connected": False, "gap": None}
    assert r_attrs["started"] <= r_attrs["finished"]
    assert keys == ["beads", "pair_0/level_0.3/curve"]
    np.testing.assert_array_equal(np.array(r_beads, np.float32), beads)
    assert len(curve) == 1 and curve[0][0] == 0.1 and math.isnan(curve[0][1])
    assert pair_attrs == {"connected": False, "worst": [1, 0.7]}


def test_store_module_does_not_import_tensorflow_or_keras():
    code = (
        "import sys, keras_landscape.store.hdf5; "
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
