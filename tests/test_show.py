"""`klandscape show` (and the result tables `probe` prints): key numbers in compact tables,
interrupted stores say what is there and what is missing, -q/-v after the subcommand."""

import json
import re

import pytest
from conftest import run_cli
from synthetic_stores import CUBIC, complete_store, interrupted_store, real_connectivity_stores

from keras_landscape.report.tables import expected_strings, fmt, result_tables, resume_command


def _run(capsys, *args):
    """main(args) -> (exit code, stdout with runs of spaces squeezed, stderr)."""
    code, out, err = run_cli(capsys, *args)
    return code, re.sub(r" +", " ", out), err


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("show_stores")
    return {
        "complete": complete_store(folder / "complete.h5"),
        "interrupted": interrupted_store(folder / "interrupted.h5"),
    }


def test_show_prints_compact_tables_for_every_kind(capsys, stores):
    code, out, err = _run(capsys, "show", stores["complete"])
    assert code == 0, err
    assert '{"connected"' not in out and '"pairs"' not in out  # no JSON dumps
    for name in ("evaluate", "connectivity", "curviness", "barrier", "components", "mystery"):
        assert f"run {name} (probe {name}): complete" in out
    for text in (
        "│ a - b │ 0.05 │ connected │ 4",  # connectivity: one row per pair
        "1 of 1 pair(s) connected",
        "│ 0.05 │ 1/1 │ 1.3 ± 0.1",  # curviness: one row per level
        "│ 0.02 │ 0/1 │ n/a",
        "bead_not_reached 1",
        "│ a - b │ 0.025 │ 0.52 │ [0.2, 0.3] │ 0.275 │ 0.26 │",
        "│ a - c │ 0.025 │ 0.52 │ [0.2, 0.3] │ 0.3 │ n/a │",
        "│ a - b │ 2.5 -> 0.1 │ 0.05 │ [0.025, 0.03] │ 0.005 │",
        "│ a c │ b d │",  # components: the merge of two clusters
        "highest merge level 0.25",
        "│ 0.1 │ 0.2 │ 1-2 │",  # N_u: equal bounds share a row, lower-upper
        "unresolved (bounds differ): 0.05 to 0.2",
        "│ answer │ 42 │",  # an unknown probe: its fields
    ):
        assert text in out, text


def test_show_interrupted_store_says_what_is_missing(capsys, stores):
    code, out, err = _run(capsys, "show", stores["interrupted"])
    assert code == 0, err
    assert "run connectivity (probe connectivity): interrupted" in out
    assert "error: interrupted by the user" in out
    assert "DSS strings: 1 finished, 1 in progress, 1 not started of 3 expected." in out
    assert "│ pair_0_2 │ in progress │ 3 │ 1" in out
    assert "missing (not started): pair_1_2" in out
    assert "run curviness (probe curviness): running" in out
    assert "the run was killed" in out
    assert "1 finished, 1 in progress, 4 not started of 6 expected" in out
    assert "to continue: klandscape probe a.keras b.keras --data cubic --out" in out
    assert out.count("--resume") == 2

    code, out, err = _run(capsys, "show", stores["interrupted"], "--json")
    assert code == 0, err
    runs = {r["name"]: r for r in json.loads(out)["runs"]}
    connectivity = runs["connectivity"]
    assert connectivity["result"] is None
    assert connectivity["progress"] == {
        "strings_finished": 1,
        "strings_in_progress": ["pair_0_2"],
        "strings_expected": 3,
        "not_started": ["pair_1_2"],
    }
    assert connectivity["stored"]["pair_0_2/order"] == 3
    assert [s["key"] for s in connectivity["strings"]] == ["pair_0_1", "pair_0_2"]
    assert connectivity["resume"].endswith("--resume")
    assert runs["curviness"]["progress"]["not_started"] == [
        "level_0/pair_1_2",
        "level_1/pair_0_1",
        "level_1/pair_0_2",
        "level_1/pair_1_2",
    ]


def test_show_real_interrupted_store(capsys):
    stores = real_connectivity_stores()
    code, out, err = _run(capsys, "show", stores["interrupted"], "-q")
    assert code == 0, err
    assert "interrupted" in out and "1 in progress" in out
    assert "to continue: klandscape probe m1.keras m2.keras --out x.h5 --resume" in out
    code, out, err = _run(capsys, "show", stores["complete"], "-v")
    assert code == 0, err
    result = stores["document"]["results"]["connectivity"]
    assert f"│ m1 - m2 │ {fmt(result['level'])}" in out
    assert f"│ {result['beads']} │ {fmt(result['normalized_length'])}" in out


@pytest.mark.slow
@pytest.mark.ci
def test_quiet_and_verbose_after_the_subcommand(capsys, tmp_path):
    a, b = real_connectivity_stores()["models"]
    out_path = str(tmp_path / "q.h5")
    code, out, err = _run(
        capsys,
        "probe",
        a,
        b,
        "--data",
        CUBIC,
        "--level-fn",
        "mae",
        "--loss",
        "mae",
        "--probe",
        "connectivity",
        "--set",
        "margin=3",
        "--xla",
        "off",
        "--out",
        out_path,
        "--json",
        "-q",
    )
    assert code == 0, err
    assert json.loads(out)["results"]["connectivity"]["connected"] in (True, False)
    assert err == ""  # -q: no progress display
    code, out, err = _run(
        capsys,
        "probe",
        a,
        "--data",
        CUBIC,
        "--level-fn",
        "mae",
        "--loss",
        "mae",
        "--out",
        str(tmp_path / "v.h5"),
        "-v",
    )
    assert code == 0, err
    assert "loss (train)" in out and "│ m1 │" in out  # the evaluate table


def test_result_tables_fall_back_on_unexpected_shapes():
    [table] = result_tables("connectivity", "connectivity", {"pairs": "not a list"})
    assert table["columns"][0] == "pair"  # the aggregate row, shown as one pair
    [table] = result_tables("curviness", "curviness", {"levels": [0.1], "pairs": [1]})
    assert table["rows"] == [["0.1", "1/1", "n/a", "n/a", "-"]]
    [table] = result_tables("x", "components", {"minima": 3})
    assert table["columns"] == ["field", "value"]  # not the components shape: fields


def test_expected_strings_and_resume_command():
    assert expected_strings("connectivity", {}, 3) == ["pair_0_1", "pair_0_2", "pair_1_2"]
    assert expected_strings("connectivity", {"partners": 2}, 1) == ["pair_0_1", "pair_0_2"]
    assert len(expected_strings("curviness", {"levels": ""}, 2)) == 3
    assert expected_strings("curviness", {"levels": "0.3:0.1:5"}, 2)[-1] == "level_4/pair_0_1"
    assert expected_strings("barrier", {}, 2) is None
    assert (
        resume_command("klandscape demo --out d --overwrite", "d/demo.h5")
        == "klandscape demo --out d --resume"
    )
    assert resume_command("", "s.h5") == "the same command with --resume --out s.h5"
