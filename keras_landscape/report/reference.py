"""The probe reference (docs/probes.md), generated from the registry so it cannot drift."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

from keras_landscape import registry

HEADER = """# Probes

Generated from the registry by `klandscape probes --markdown > docs/probes.md`; a test fails
when this file and the code disagree. Options are set with `--set key=value` (and the
dedicated flags `--level`, `--levels`, `--partners`, `--retrain-endpoints`, `--seed`).

Models with BatchNorm: every probe evaluates each input model with its own statistics where
it reports that model alone (`evaluate`), and every point on or between paths with
statistics set by `--bn-stats` (`recompute`, the default: re-estimated from training data
at each point; `interpolate`: carried along segments like the weights), for every probe
alike. Beads train in train mode and their statistics are stored with them (`bead_state`).
See [science.md](science.md#batchnorm-along-paths).
"""


def attribute_docs(cls) -> dict[str, str]:
    """Field descriptions from the 'Attributes:' sections of a class and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(inspect.getmro(cls)):
        text = inspect.getdoc(klass) or ""
        if "Attributes:" not in text:
            continue
        section = text.split("Attributes:", 1)[1]
        current = None
        for line in section.splitlines():
            match = re.match(r"^\s{4}(\w+):\s*(.*)$", line)
            if match:
                current = match.group(1)
                docs[current] = match.group(2).strip()
            elif current and line.startswith(" " * 8):
                docs[current] += " " + line.strip()
            elif line.strip() and not line.startswith(" "):
                current = None
    return docs


def _type_name(hint) -> str:
    text = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
    return (text or str(hint).replace("typing.", "")).replace(" | ", " or ")


def probe_markdown(entry) -> str:
    cls = entry.cls
    hints = typing.get_type_hints(cls.Config)
    docs = attribute_docs(cls.Config)
    lines = [f"## `{entry.name}`", "", cls.summary, ""]
    lines += ["| option | type | default | meaning |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls.Config):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(
            f"| `{f.name}` | {_type_name(hints.get(f.name, str))} | `{default!r}` | "
            f"{docs.get(f.name, '')} |"
        )
    fields = getattr(cls, "result_fields", {})
    if fields:
        lines += ["", "Result fields:", ""]
        lines += [f"- `{name}`: {meaning}" for name, meaning in fields.items()]
    return "\n".join(lines) + "\n"


def probes_markdown() -> str:
    """The whole docs/probes.md text."""
    parts = [HEADER]
    for entry in registry.probes().values():
        if entry.origin == "built-in":
            parts.append(probe_markdown(entry))
    return "\n".join(parts)
