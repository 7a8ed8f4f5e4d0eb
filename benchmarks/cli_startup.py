"""CLI start-up: how long the commands that never compute take, and what they import.

    python benchmarks/cli_startup.py [--repeat 5] [--out FILE.json]

Prints one JSON document on stdout: for `klandscape --version`, `klandscape probes` and
`klandscape probes --json`, the wall time of each run in a fresh process (best and median of
`--repeat`), and whether the process imported keras, tensorflow or jax (it must not: see
docs/architecture.md, the layer rule). Not a test: the numbers describe the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

COMMANDS = (["--version"], ["probes"], ["probes", "--json"])
# Runs the CLI in-process and reports which frameworks it loaded.
_PROBE = (
    "import sys; from keras_landscape.cli.main import main; code = main({args!r}); "
    "print('\\nLOADED', sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules), "
    "file=sys.stderr); sys.exit(code)"
)


def _time(args: list[str]) -> float:
    begin = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "keras_landscape.cli.main", *args], capture_output=True, check=True
    )
    return time.perf_counter() - begin


def _loaded(args: list[str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(args=args)], capture_output=True, text=True, check=True
    )
    line = [x for x in done.stderr.splitlines() if x.startswith("LOADED")][-1]
    return json.loads(line.split(" ", 1)[1].replace("'", '"'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    options = parser.parse_args()
    cases = {}
    for args in COMMANDS:
        times = [_time(args) for _ in range(options.repeat)]
        cases["klandscape " + " ".join(args)] = {
            "best_s": round(min(times), 3),
            "median_s": round(statistics.median(times), 3),
            "runs": options.repeat,
            "frameworks_imported": _loaded(args),
        }
    document = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "cases": cases,
    }
    text = json.dumps(document, indent=2)
    print(text)
    if options.out:
        with open(options.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
