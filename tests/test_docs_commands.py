"""Every shell command the README and the user guide show runs, and exits as they say.

The commands are read from the docs themselves: every line of a ```bash, ```console or
```sh block that starts with `klandscape` or `$ klandscape`, with `\\` continuations
joined. Each one must match an entry of COMMANDS below (first match wins), which says
whether it is fast (runs by default: it does not import TensorFlow) or slow (`-m slow`), in
which phase it runs, and what else it needs. A command added to the docs without an entry
fails `test_doc_command` with a message saying to classify it; an entry that matches no
command any more fails `test_every_entry_matches_a_doc_command`.

All commands run in one working folder per test session (`configs/` linked into it), in
phase order, so that a command finds the files the docs assume earlier commands made:
`demo --out demo1` makes the digits models that `m/` copies, `probe ... --out runs/int.h5`
makes the store that `show`, `plot`, `--resume` and `export` read. The files the docs take
as given (a.keras, b.keras, c.h5 from the user guide's recipe; b.h5, model.h5, mydata.npz
and mnist.npz of the README) are made by the `doc_files` fixture before the first slow
command. In the default (fast) run no slow command makes the stores that `show` and `plot`
read, so small synthetic stores (h5py only, no TensorFlow) are written at those paths.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/user-guide.md")
SHELL_FENCES = ("bash", "console", "sh")

FAST, SLOW = "fast", "slow"


# ------------------------------------------------------------------------ reading the docs


@dataclass(frozen=True)
class DocCommand:
    """One command as a doc shows it.

    Attributes:
        text: the command with continuations joined and the `$ ` prompt removed.
        where: `file:line` of every place that shows it (identical commands run once).
        comment: the shell comment after it, if any (e.g. `# Ctrl-C after 9 s`).
    """

    text: str
    where: tuple[str, ...]
    comment: str

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text, comments=True)

    @property
    def command(self) -> str:
        """The command without its comment, one space between words."""
        return shlex.join(self.argv)


def extract_commands(markdown: str) -> list[tuple[str, int, str]]:
    """(text, line, comment) of every klandscape command in the shell blocks of `markdown`."""
    found = []
    lines = markdown.splitlines()
    fence = None  # the language of the open code block; None outside blocks
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("```"):
            fence = stripped[3:].strip().lower() if fence is None else None
            i += 1
            continue
        if fence in SHELL_FENCES:
            text = stripped[2:] if stripped.startswith("$ ") else stripped
            if text.startswith("klandscape ") or text == "klandscape":
                start = i
                while text.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    text = text[:-1].rstrip() + " " + lines[i].strip()
                comment = text.split(" #", 1)[1].strip() if " #" in text else ""
                found.append((text, start + 1, comment))
        i += 1
    return found


def doc_commands() -> list[DocCommand]:
    """The commands of DOCS, identical ones merged, in the order they first appear."""
    merged: dict[str, DocCommand] = {}
    for doc in DOCS:
        for text, line, comment in extract_commands((ROOT / doc).read_text(encoding="utf-8")):
            cmd = DocCommand(text, (f"{doc}:{line}",), comment)
            key = cmd.command
            if key in merged:
                old = merged[key]
                merged[key] = DocCommand(old.text, old.where + cmd.where, old.comment or comment)
            else:
                merged[key] = cmd
    return list(merged.values())


# ------------------------------------------------------------------- how each one runs


def copy_demo_models(folder: Path) -> None:
    """The user guide: "`m/` is a copy of `demo1/models/`"."""
    shutil.copytree(folder / "demo1" / "models", folder / "m", dirs_exist_ok=True)


@dataclass(frozen=True)
class Entry:
    """How the test runs the doc commands that `pattern` matches (re.search on the command
    without its comment).

    Attributes:
        speed: FAST (default run: no TensorFlow import, a few seconds) or SLOW (-m slow:
            trains or probes models).
        phase: commands run in phase order in the shared folder (producers of a file before
            its readers), then in doc order.
        exit_codes: the exit codes the docs give it (0 unless they say otherwise).
        stdout: a regex the standard output must match (re.search), if any.
        json_stdout: the command prints exactly one JSON document on stdout.
        tolerate: an `Error:` message (regex) that the run may end with instead (exit code 2),
            where the outcome depends on numbers the docs cannot fix (a bead index on a string
            whose length depends on the machine and the data).
        interrupt: send SIGINT (Ctrl-C) when the doc's comment says (`# Ctrl-C after 9 s`),
            and not before the command's --out store exists.
        after: called with the folder after a successful run (files later commands read).
    """

    pattern: str
    speed: str
    phase: int
    exit_codes: tuple[int, ...] = (0,)
    stdout: str | None = None
    json_stdout: bool = False
    tolerate: str | None = None
    interrupt: bool = False
    after: Callable[[Path], None] | None = field(default=None, compare=False)


BEAD_RANGE = r"Error: String '[^']+' has \d+ beads"

# First match wins. Keep entries specific (the files a command reads or writes), so that a new
# command in the docs needs a new entry here.
COMMANDS: list[Entry] = [
    # -- fast: no TensorFlow
    Entry(r"^klandscape --version$", FAST, 0, stdout=r"^klandscape, version \d+\.\d+"),
    Entry(r"^klandscape probes$", FAST, 0, stdout=r"connectivity"),
    Entry(r"^klandscape run configs/cubic\.yaml .*--dry-run$", FAST, 0, json_stdout=True),
    Entry(r"^klandscape (show|plot) runs/(ab|int|curv|m_eval)\.h5( |$)", FAST, 30),
    Entry(r"^klandscape census configs/census_\w+\.yaml .*--dry-run$", FAST, 0, json_stdout=True),
    # -- slow: models, probes and experiments
    Entry(r"^klandscape demo --out demo1$", SLOW, 10, after=copy_demo_models),
    Entry(r"^klandscape probe a\.keras b\.h5 --data npz:mydata\.npz ", SLOW, 20),
    Entry(
        r"^klandscape probe a\.keras b\.keras --data npz:mnist\.npz .*--out runs/ab\.h5$", SLOW, 20
    ),
    Entry(r"^klandscape probe model\.h5 --data cubic .*--partners 1$", SLOW, 20),
    Entry(
        r"^klandscape probe a\.keras b\.keras --data cubic .*curviness .*--retrain-endpoints$",
        SLOW,
        20,
    ),
    Entry(r"^klandscape probe m/mlp_0\.keras .*--out runs/(m_eval|m01)\.h5$", SLOW, 20),
    Entry(r"^klandscape probe a\.keras b\.keras c\.h5 .*--out runs/curv\.h5$", SLOW, 20),
    Entry(r"^klandscape probe a\.keras --data cubic --probe hessian --out runs/h\.h5$", SLOW, 20),
    Entry(
        r"^klandscape probe a\.keras b\.keras --data cubic --probe hessian .*h_path\.h5$", SLOW, 30
    ),
    Entry(r"^klandscape probe a\.keras b\.keras c\.h5 .*--out runs/plane\.h5$", SLOW, 20),
    Entry(r"^klandscape probe a\.keras .*--partners 1 .*--out runs/partner\.h5$", SLOW, 20),
    Entry(
        r"^klandscape probe a\.keras .*--json --out runs/json\.h5 -q$", SLOW, 20, json_stdout=True
    ),
    Entry(r"^klandscape probe a\.keras b\.keras .*--out runs/int\.h5 --resume$", SLOW, 40),
    Entry(
        r"^klandscape probe a\.keras b\.keras .*--out runs/int\.h5$",
        SLOW,
        20,
        exit_codes=(130, 0),
        interrupt=True,
    ),
    Entry(r"^klandscape run configs/cubic\.yaml --scale small$", SLOW, 20),
    Entry(
        r"^klandscape run configs/cubic\.yaml --scale small .*--out runs/c2\.h5 --no-plots$",
        SLOW,
        20,
    ),
    Entry(r"^klandscape census configs/census_quadratic\.yaml --scale small$", SLOW, 20),
    Entry(r"^klandscape export runs/(ab|int|curv)\.h5 ", SLOW, 50, tolerate=BEAD_RANGE),
]


def classify(cmd: DocCommand) -> Entry | None:
    return next((e for e in COMMANDS if re.search(e.pattern, cmd.command)), None)


def _params():
    params = []
    for index, cmd in enumerate(doc_commands()):
        entry = classify(cmd)
        marks = [pytest.mark.slow] if entry is not None and entry.speed == SLOW else []
        phase = entry.phase if entry is not None else -1
        params.append((phase, index, pytest.param(cmd, entry, marks=marks, id=cmd.where[0])))
    return [p for _, _, p in sorted(params, key=lambda t: t[:2])]


# ------------------------------------------------------------------ files the docs assume


def _cubic_model(seed: int):
    """The user guide's recipe for a.keras, b.keras and c.h5 (seeds 0, 1, 2)."""
    import keras

    from keras_landscape import load_data

    data = load_data("cubic")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(4, activation="sigmoid"),
            keras.layers.Dense(4, activation="sigmoid"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mean_squared_error")
    model.fit(data.x_train, data.y_train, epochs=80, batch_size=128, verbose=0)
    return model


def _threshold_data(path: Path, seed: int) -> None:
    """Binary labels y = [8x^3 - 10x^2 + 3x > 0.5] for the README's npz examples: the cubic
    models (one output) classify them with a 0.5 threshold (`--level-fn error`)."""
    rng = np.random.default_rng(seed)
    x_train, x_test = (rng.uniform(0, 1, (n, 1)).astype(np.float32) for n in (2000, 500))
    label = lambda x: ((8 * x**3 - 10 * x**2 + 3 * x)[:, 0] > 0.5).astype(np.int64)  # noqa: E731
    np.savez(path, x_train=x_train, y_train=label(x_train), x_test=x_test, y_test=label(x_test))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The working folder of every doc command, with the repository's configs/ linked in."""
    path = tmp_path_factory.mktemp("docs")
    (path / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    (path / "runs").mkdir()
    return path


@pytest.fixture(scope="module")
def doc_files(folder) -> Path:
    """The model and data files the README and the user guide take as given."""
    for seed, name in [(0, "a.keras"), (1, "b.keras"), (2, "c.h5")]:
        model = _cubic_model(seed)
        model.save(folder / name)
        if name == "a.keras":
            model.save(folder / "model.h5")  # README: one model, trained partner
        if name == "b.keras":
            model.save(folder / "b.h5")  # README: a legacy .h5 beside a .keras
    _threshold_data(folder / "mydata.npz", 0)
    _threshold_data(folder / "mnist.npz", 1)
    return folder


def _synthetic_store(path: Path) -> None:
    """A small store for `show`/`plot` when no slow command made the real one: the runs the
    docs show for that store, written with keras_landscape.store alone."""
    from synthetic_stores import (
        CONNECTED_SEGMENTS,
        _verdict,
        interrupted_store,
        new_store,
        write_string,
    )

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name == "int.h5":  # the guide shows it interrupted
        interrupted_store(path)
        return
    verdict = _verdict()
    with new_store(path, models=("a", "b")) as store:
        if path.name == "m_eval.h5":
            run = store.begin_run("evaluate", "evaluate", {"allow_nonfinite": False})
            run.complete(
                {
                    "models": [
                        {
                            "model": m,
                            "source": f"{m}.keras",
                            "loss": 0.001,
                            "level": 0.02,
                            "level_fn": "mae",
                            "split": "test",
                            "grad_norm": 0.01,
                            "parameters": 5,
                        }
                        for m in "ab"
                    ]
                }
            )
        elif path.name == "curv.h5":
            run = store.begin_run("curviness", "curviness", {"levels": "0.1,0.05"})
            details = []
            for k, level in enumerate([0.1, 0.05]):
                prefix = f"level_{k}/pair_0_1"
                row = {**verdict, "level": level, "prefix": prefix}
                write_string(
                    run,
                    prefix,
                    rows=4,
                    order=[0, 2, 3, 1],
                    segments=CONNECTED_SEGMENTS,
                    verdict=row,
                    depth_done=2,
                    seed=k,
                )
                details.append([row])
            run.complete(
                {
                    "levels": [0.1, 0.05],
                    "normalized_length": [1.05, 1.3],
                    "normalized_length_sd": [0.0, 0.0],
                    "beads": [4.0, 4.0],
                    "beads_sd": [0.0, 0.0],
                    "pairs": [1, 1],
                    "failed": [0, 0],
                    "reasons": [{}, {}],
                    "level_fn": "mae",
                    "details": details,
                }
            )
        else:
            run = store.begin_run("connectivity", "connectivity", {"level": 0.05})
            row = {**verdict, "prefix": "pair_0_1"}
            write_string(
                run,
                "pair_0_1",
                rows=4,
                order=[0, 2, 3, 1],
                segments=CONNECTED_SEGMENTS,
                verdict=row,
                depth_done=2,
            )
            run.complete(
                {
                    **{k: v for k, v in row.items() if k not in ("a", "b", "prefix")},
                    "level_fn": "mae",
                    "pairs": [row],
                    "connected_pairs": 1,
                }
            )


# ---------------------------------------------------------------------------- running


def klandscape_argv() -> list[str]:
    """The installed `klandscape` script of this interpreter's environment."""
    script = Path(sys.executable).with_name("klandscape")
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from keras_landscape.cli.main import main; "
        "sys.argv[0] = 'klandscape'; sys.exit(main())",
    ]


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float
    interrupted: bool = False


def run_command(cmd: DocCommand, entry: Entry, cwd: Path, timeout: float) -> Outcome:
    """Run one doc command in `cwd` (SIGINT after `entry.interrupt` s, once its store exists)."""
    argv = klandscape_argv() + cmd.argv[1:]
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    interrupted = False
    if entry.interrupt:
        when = re.search(r"Ctrl-C after (\d+(?:\.\d+)?) s", cmd.comment)
        if when is None:
            process.kill()
            pytest.fail(
                f"{cmd.where[0]}: `{cmd.text}` is run with Ctrl-C, but its comment does "
                "not say when (`# Ctrl-C after N s`)"
            )
        after = float(when.group(1))
        out = cmd.argv[cmd.argv.index("--out") + 1] if "--out" in cmd.argv else None
        deadline = started + timeout
        while process.poll() is None and time.perf_counter() < deadline:
            exists = out is None or (cwd / out).exists()
            if exists and time.perf_counter() - started >= after:
                process.send_signal(signal.SIGINT)
                interrupted = True
                break
            time.sleep(0.2)
    try:
        stdout, stderr = process.communicate(
            timeout=max(1.0, timeout - (time.perf_counter() - started))
        )
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(
            f"{cmd.where[0]}: `{cmd.text}` still ran after {timeout:.0f} s\n{stderr[-3000:]}"
        )
    return Outcome(process.returncode, stdout, stderr, time.perf_counter() - started, interrupted)


def check_outcome(cmd: DocCommand, entry: Entry, outcome: Outcome) -> str | None:
    """None if the run is what the docs say; otherwise the reason it is not."""
    where = ", ".join(cmd.where)
    tail = (
        f"\n--- stdout (end)\n{outcome.stdout[-2000:]}\n--- stderr (end)\n{outcome.stderr[-3000:]}"
    )
    if outcome.code not in entry.exit_codes:
        if entry.tolerate and outcome.code == 2 and re.search(entry.tolerate, outcome.stderr):
            warnings.warn(
                f"{where}: `{cmd.text}` ended with a tolerated error: "
                f"{outcome.stderr.strip().splitlines()[-1]}",
                stacklevel=2,
            )
            return None
        return (
            f"{where}: `{cmd.text}` exited with {outcome.code}, the docs say "
            f"{' or '.join(map(str, entry.exit_codes))}{tail}"
        )
    if outcome.code != 0:
        return None
    if entry.stdout and not re.search(entry.stdout, outcome.stdout):
        return f"{where}: `{cmd.text}`: stdout does not match {entry.stdout!r}{tail}"
    if entry.json_stdout:
        try:
            json.loads(outcome.stdout)
        except json.JSONDecodeError as error:
            return f"{where}: `{cmd.text}` should print one JSON document ({error}){tail}"
    return None


# ------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("cmd, entry", _params())
def test_doc_command(cmd: DocCommand, entry: Entry | None, folder: Path, request):
    if entry is None:
        pytest.fail(
            f"{', '.join(cmd.where)}: the command `{cmd.text}` is not classified. Add an Entry "
            "for it to COMMANDS in tests/test_docs_commands.py: FAST if it does not import "
            "TensorFlow (help, --version, probes, show, plot, run --dry-run), else SLOW; a "
            "phase after the commands that make the files it reads; the exit code the docs "
            "give it."
        )
    if entry.speed == SLOW:
        request.getfixturevalue("doc_files")
    elif cmd.argv[1] in ("show", "plot") and not (folder / cmd.argv[2]).exists():
        _synthetic_store(folder / cmd.argv[2])
    outcome = run_command(cmd, entry, folder, timeout=120 if entry.speed == FAST else 3600)
    problem = check_outcome(cmd, entry, outcome)
    if problem:
        pytest.fail(problem)
    if entry.after is not None:
        entry.after(folder)


def test_docs_show_commands():
    """The extraction still finds the docs' commands (a changed fence would hide them all)."""
    commands = doc_commands()
    texts = [c.command for c in commands]
    assert len(commands) >= 20, texts
    assert "klandscape probes" in texts
    assert any(
        t.startswith("klandscape run configs/cubic.yaml") and "--dry-run" in t for t in texts
    )


def test_every_entry_matches_a_doc_command():
    """An entry no doc command uses any more is stale: remove or update it."""
    commands = doc_commands()
    used = {id(classify(c)) for c in commands}
    stale = [e.pattern for e in COMMANDS if id(e) not in used]
    assert not stale, f"entries of COMMANDS that match no command in {DOCS}: {stale}"


def test_extraction_rules():
    markdown = "\n".join(
        [
            "```bash",
            "klandscape probe a.keras --data cubic \\",
            "    --level 0.1   # a comment",
            "python -m pytest  # not a klandscape line",
            "```",
            "```console",
            "$ klandscape probes",
            "connectivity ...",
            "```",
            "```",
            "klandscape plot FILE.h5 [-o DIR]",  # a synopsis, not a shell block
            "```",
            "```python",
            "klandscape = 1",
            "```",
        ]
    )
    found = extract_commands(markdown)
    assert [(t, line) for t, line, _ in found] == [
        ("klandscape probe a.keras --data cubic --level 0.1   # a comment", 2),
        ("klandscape probes", 7),
    ]
    assert found[0][2] == "a comment"
    cmd = DocCommand(found[0][0], ("x.md:2",), found[0][2])
    assert cmd.argv == ["klandscape", "probe", "a.keras", "--data", "cubic", "--level", "0.1"]
    # a command nobody classified is reported, not guessed
    assert classify(DocCommand("klandscape frobnicate runs/x.h5", ("x.md:1",), "")) is None


def test_a_renamed_option_fails(folder):
    """The check can fail: the documented dry run with an option the CLI does not know."""
    cmd = DocCommand("klandscape run configs/cubic.yaml --scale small --dry-runn", ("x.md:1",), "")
    entry = classify(
        DocCommand("klandscape run configs/cubic.yaml --scale small --dry-run", ("x.md:1",), "")
    )
    assert entry is not None and entry.speed == FAST
    outcome = run_command(cmd, entry, folder, timeout=120)
    assert outcome.code == 2, outcome.stderr
    problem = check_outcome(cmd, entry, outcome)
    assert problem is not None and "exited with 2" in problem
