"""Our curviness curves next to Freeman & Bruna's (ICLR 2017), as in docs/reproductions.md.

    python benchmarks/paper_figures.py cubic runs/cubic-full.h5 "authors' protocol" \
        [STORE LABEL ...] [--length all|weights|both] [--xlim LO,HI] [--log] [--markdown]
        [--out docs/figures/cubic_vs_paper.png]

Each STORE's `curviness` run (STORE:RUN for another run name) is drawn as mean +- sample sd
over its connected pairs; the paper's values (docs/reference/freeman_bruna_2017.json, read
off the vector figures of the authors' repository) as black squares with their bars.
`--length weights` draws the weights-only normalized length (biases left out, as the
authors' cubic script measured it), `--length both` both. Prints a JSON summary.
Needs only h5py and matplotlib (no TensorFlow).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from keras_landscape.report.plots import new_figure, values
from keras_landscape.store.hdf5 import Store

REFERENCE = Path(__file__).resolve().parent.parent / "docs/reference/freeman_bruna_2017.json"


def curviness_of(spec: str) -> dict:
    path, _, run = spec.partition(":")
    with Store.open(path) as store:
        return dict(store.run(run or "curviness").result)


def _draw(ax, levels, means, sds, **style):
    keep = [i for i, m in enumerate(means) if m is not None]
    ax.errorbar(
        [levels[i] for i in keep],
        [means[i] for i in keep],
        yerr=[sds[i] or 0.0 for i in keep],
        capsize=3,
        **style,
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("figure", help="cubic, quadratic, mnist_cnn, cifar10_cnn or ptb_lstm")
    parser.add_argument("pairs", nargs="+", help="STORE[:RUN] LABEL [STORE LABEL ...]")
    parser.add_argument(
        "--length",
        choices=("all", "weights", "both"),
        default="all",
        help="normalized length over all parameters, the weights only, or both",
    )
    parser.add_argument("--log", action="store_true", help="log-scaled level axis")
    parser.add_argument("--xlim", default=None, help="LO,HI: the level range drawn")
    parser.add_argument("--out", default=None, help="figure file (default: docs/figures/...)")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print a level x store table (markdown): mean, sd, standard error, pairs, z",
    )
    args = parser.parse_args(argv)
    if len(args.pairs) % 2:
        parser.error("give a LABEL after every STORE")
    paper = json.loads(REFERENCE.read_text())["figures"][args.figure]
    figure, (left, right) = new_figure(11.0, 4.4, ncols=2)
    summary = {"figure": args.figure, "paper": paper, "ours": {}}
    for ax, key in ((left, "normalized_length"), (right, "beads")):
        rows = paper[key]
        ax.errorbar(
            [r[0] for r in rows],
            [r[1] for r in rows],
            yerr=[r[2] for r in rows],
            fmt="s-",
            color="black",
            capsize=3,
            markersize=4,
            label="Freeman & Bruna 2017 (their figure)",
        )
    for n, (store, label) in enumerate(zip(args.pairs[::2], args.pairs[1::2])):
        result = curviness_of(store)
        levels = values(result["levels"])
        color = f"C{n}"
        both = args.length == "both"
        series = [
            (left, "normalized_length", "o-", 1.0, ": all parameters" if both else ""),
            (
                left,
                "weights_normalized_length",
                "o--" if both else "o-",
                0.6 if both else 1.0,
                ": weights only" if both else "",
            ),
            (right, "beads", "o-", 1.0, ""),
        ]
        skip = {"all": "weights_normalized_length", "weights": "normalized_length"}
        for ax, key, fmt, alpha, suffix in series:
            if key == skip.get(args.length) or not result.get(key):
                continue
            means, sds = values(result[key]), values(result[f"{key}_sd"])
            _draw(ax, levels, means, sds, fmt=fmt, color=color, alpha=alpha, label=label + suffix)
        summary["ours"][label] = {
            k: result.get(k)
            for k in (
                "levels",
                "normalized_length",
                "normalized_length_sd",
                "weights_normalized_length",
                "weights_normalized_length_sd",
                "beads",
                "pairs",
                "failed",
            )
        }
    measure = {"all": "", "weights": ", weights only", "both": ""}[args.length]
    for ax, ylabel in (
        (left, f"normalized geodesic length{measure} (1 = straight)"),
        (right, "beads per string (endpoints included)"),
    ):
        ax.set_xlabel(f"level: {paper['level']}")
        ax.set_ylabel(ylabel)
        if args.log:
            ax.set_xscale("log")
        if args.xlim:
            ax.set_xlim(*sorted(float(v) for v in args.xlim.split(",")))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    right.set_yscale("log")
    figure.suptitle(f"{args.figure}: ours against the paper's figure (bars: ours sd over pairs)")
    out = Path(args.out or f"docs/figures/{args.figure}_vs_paper.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110, bbox_inches="tight")
    summary["figure_file"] = str(out)
    if args.markdown:
        print(markdown(paper, summary["ours"], "weights" if args.length == "weights" else "all"))
    else:
        print(json.dumps({k: v for k, v in summary.items() if k != "paper"}, default=str))
    return summary


def markdown(paper: dict, ours: dict, length: str = "all") -> str:
    """One row per level: the paper's value +- its bar (beads), then each store's mean
    normalized length over its connected pairs, its sample sd, its standard error (sd /
    sqrt(n)), n connected of all pairs, the mean beads, and how many of our standard errors
    it lies from the paper's mean (z). `length` picks the measure ("all" parameters or
    "weights" only)."""

    def cell(value, digits=3):
        return "-" if value is None else f"{value:.{digits}g}"

    key = "weights_normalized_length" if length == "weights" else "normalized_length"
    reference = {round(r[0], 6): (r[1], r[2]) for r in paper["normalized_length"]}
    reference_beads = {round(r[0], 6): r[1] for r in paper["beads"]}
    levels = sorted({round(u, 6) for o in ours.values() for u in o["levels"]}, reverse=True)
    head = ["level", "paper (bar; beads)"]
    for label in ours:
        head += [f"{label}: mean", "sd", "se", "n", "beads", "z"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for u in levels:
        mean_paper, bar = reference.get(u, (None, None))
        row = [f"{u:g}", f"{cell(mean_paper)} ({cell(bar, 2)}; {cell(reference_beads.get(u), 2)})"]
        for result in ours.values():
            rounded = [round(v, 6) for v in result["levels"]]
            if u not in rounded:
                row += [""] * 6
                continue
            k = rounded.index(u)
            mean = (result.get(key) or [None] * len(rounded))[k]
            sd = (result.get(f"{key}_sd") or [None] * len(rounded))[k]
            n, failed = result["pairs"][k], (result.get("failed") or [0] * len(rounded))[k]
            se = sd / n**0.5 if sd is not None and n else None
            z = (mean - mean_paper) / se if None not in (mean, mean_paper) and se else None
            row += [
                cell(mean),
                cell(sd, 2),
                cell(se, 2),
                f"{n}/{n + failed}",
                cell(result["beads"][k], 2),
                "-" if z is None else f"{z:+.1f}",
            ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
