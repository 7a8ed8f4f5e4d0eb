"""The run's plan, checked before anything is loaded, trained or created.

`check_plan` is the one place where a run's probes are built and every option is checked:
each probe's own checks (`registry.check_config`), `partners` against the number of models,
each probe's options against the input models (`registry.check_inputs`, the probes'
`validate_inputs` hook), and where the store goes (`check_out`). `klandscape probe`
(`experiment.runner.execute`), `run` and `census` call it, their `--dry-run`s too (through
`experiment.config.load_config`), so a refused command leaves nothing behind. What needs the
loaded models (`registry.check_loaded`) runs in `execute` before the store is created.

No framework import: the dry runs validate without TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

from keras_landscape import registry
from keras_landscape.errors import UserError
from keras_landscape.experiment.spec import model_names
from keras_landscape.settings import RunSpec
from keras_landscape.store.hdf5 import refuse_existing


def build_probes(spec: RunSpec) -> list:
    """Probe instances with their configs; UserError for unknown or repeated probes and
    unknown or bad options (every probe's `validate_config`, no file of the run read)."""
    if not spec.probes:
        raise UserError("No probe given: name one with --probe (see `klandscape probes`).")
    repeated = sorted({name for name in spec.probes if spec.probes.count(name) > 1})
    if repeated:
        raise UserError(
            f"The probe {repeated[0]!r} is given more than once (--probe "
            f"{' --probe '.join(spec.probes)}); each probe runs once per store, into the run "
            "of its name. Give each probe once (its options apply to that one run)."
        )
    entries = [registry.get_probe(name) for name in spec.probes]
    unused = set(spec.options)
    instances = []
    for entry in entries:
        names = {f.name for f in registry.config_fields(entry.cls)}
        options = {k: v for k, v in spec.options.items() if k.replace("-", "_") in names}
        unused -= set(options)
        options.update(spec.probe_options.get(entry.name, {}))
        if "seed" in names and "seed" not in options:
            options["seed"] = spec.seed
        instance = entry.cls(registry.make_config(entry.cls, options))
        registry.check_config(instance)
        instances.append(instance)
    if unused:
        known = sorted({f.name for e in entries for f in registry.config_fields(e.cls)})
        raise UserError(
            f"Unknown option(s) {', '.join(sorted(unused))} for probe(s) "
            f"{', '.join(spec.probes)}. Their options: {', '.join(known) or '(none)'}."
        )
    return instances


def refuse_unused_partners(spec: RunSpec, probes: list, count: int | None = None) -> None:
    """`partners` trains fresh models to pair with a single input model; with two or more
    models every pair of them is measured and no partner is trained, so `partners` >= 1
    given for a run of `count` (default: the spec's) models >= 2 is refused, not ignored."""
    count = len(spec.models) if count is None else count
    if count < 2:
        return
    for probe in probes:
        given = "partners" in spec.options or "partners" in spec.probe_options.get(probe.name, {})
        if given and getattr(probe.config, "partners", 0):
            raise UserError(
                f"partners={probe.config.partners} was given for probe {probe.name!r} with "
                f"{count} models, but partners are trained only for a single "
                "model: with two or more, every pair of the given models is measured. Drop "
                "--partners (or the partners option), or give one model to connect it to "
                "trained partners."
            )


def check_out(path: str, flag: str = "--out") -> None:
    """The output store path can be a store file: not an existing directory, not a path
    ending in '/' (a folder), not inside a path that is a file. Nothing is created."""
    text = str(path)
    example = f"{text.rstrip('/' + os.sep) or '.'}/run.h5"
    if not text.strip():
        raise UserError(f"{flag}: give a store file path such as runs/run.h5.")
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        raise UserError(
            f"{flag} {text!r} is a directory (or ends in '/'), but the store is one file; "
            f"give a file path such as {example}."
        )
    for parent in Path(text).parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(
                    f"{flag} {text!r}: {str(parent)!r} is a file, not a folder, so the store "
                    "cannot be written inside it; give another path."
                )
            break


def refuse_resume_and_overwrite(resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise UserError(
            "--resume continues the work in a store and --overwrite replaces it: give one of them."
        )


def check_store_target(path: str, *, resume: bool, overwrite: bool, flag: str = "--out") -> None:
    """Where a run writes its store, checked before anything is loaded or created: a file
    path (`check_out`), --resume or --overwrite but not both, a store to resume, and no
    existing file replaced without --overwrite."""
    check_out(path, flag)
    refuse_resume_and_overwrite(resume, overwrite)
    if resume and not Path(path).exists():
        raise UserError(
            f"Nothing to resume: there is no store {str(path)!r}. Run the same command without "
            f"--resume to start, or give the {flag} of the interrupted run."
        )
    if not resume and not overwrite and Path(path).exists():
        refuse_existing(path)


def check_plan(spec: RunSpec, models: list[str] | None = None) -> list:
    """Everything about a run that can be checked before any model is loaded or trained and
    before any store or folder is created: the probes and their options (`build_probes`),
    `partners` against the number of models, each probe's options against the input models
    (`registry.check_inputs`: `models` by name in order, default the spec's files), and the
    store path. `klandscape probe`, `run`, `census` and their --dry-run all call it.

    Returns:
        The probe instances.
    """
    names = model_names(spec.models) if models is None else list(models)
    probes = build_probes(spec)
    refuse_unused_partners(spec, probes, len(names))
    for probe in probes:
        registry.check_inputs(probe, names)
    if spec.out:
        check_out(spec.out)
    refuse_resume_and_overwrite(spec.resume, spec.overwrite)
    return probes


def replica_names(recipe) -> list[str]:
    """The store names of the models a recipe trains (`<builder>_<i>`)."""
    return model_names([f"{recipe.builder}_{i}.keras" for i in range(recipe.replicas)])


__all__ = [
    "build_probes",
    "check_out",
    "check_plan",
    "check_store_target",
    "refuse_resume_and_overwrite",
    "refuse_unused_partners",
    "replica_names",
]
