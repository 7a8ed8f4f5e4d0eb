"""docs/probes.md is generated from the registry: it must match the code."""

from pathlib import Path

from keras_landscape.registry import probes
from keras_landscape.report.reference import attribute_docs, probes_markdown


def test_docs_probe_reference_matches_the_registry():
    path = Path(__file__).resolve().parents[1] / "docs" / "probes.md"
    assert path.read_text() == probes_markdown(), (
        "docs/probes.md is stale: regenerate it with "
        "`klandscape probes --markdown > docs/probes.md`"
    )


def test_every_builtin_option_is_documented():
    import dataclasses

    for entry in probes().values():
        if entry.origin != "built-in":
            continue
        docs = attribute_docs(entry.cls.Config)
        missing = [f.name for f in dataclasses.fields(entry.cls.Config) if not docs.get(f.name)]
        assert not missing, f"{entry.name}: undocumented options {missing}"
        assert getattr(entry.cls, "result_fields", None), f"{entry.name} lists no result fields"
