"""Developer tasks: `nox -s lint`, `nox -s tests_tensorflow`, `nox -s tests_jax`, `nox -s slow`,
`nox -s "tests_onednn(onednn='0')"` and `nox -s "tests_onednn(onednn='1')"`.

Each session installs the project from its own files (setup.cfg) into a fresh virtualenv,
exactly as CI does (.ci/run).
"""

import nox

nox.options.sessions = ["lint", "tests_tensorflow"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and format check (100 columns), as CI runs it."""
    session.install("-e", ".[test]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def tests_tensorflow(session: nox.Session) -> None:
    """The default test suite (TensorFlow backend; the JAX re-runs are in `tests_jax`)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
@nox.parametrize("onednn", ["0", "1"])
def tests_onednn(session: nox.Session, onednn: str) -> None:
    """The default suite with TensorFlow's oneDNN CPU kernels off (0: as on AMD and most
    non-Intel CPUs, where grouped convolutions have no gradient) or on (1: TensorFlow's
    default on recent Intel CPUs). Both must pass; CI runs the stacked and projection tests
    under the setting its CPU does not default to."""
    session.install("-e", ".[test]")
    session.run(
        "python", "-m", "pytest", "-q", *session.posargs, env={"TF_ENABLE_ONEDNN_OPTS": onednn}
    )


@nox.session
def tests_jax(session: nox.Session) -> None:
    """Every JAX re-run (the engine's known answers, and the probes, models and stacked walk
    marked slow) under KERAS_BACKEND=jax in a process without TensorFlow."""
    session.install("-e", ".[test]")
    session.run(
        "python", "-m", "pytest", "-q", "-m", "", "tests/test_jax_backend.py", *session.posargs
    )


@nox.session
def slow(session: nox.Session) -> None:
    """The tests marked slow (kill-and-resume trials, long docs commands, reproductions)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", "-m", "slow", *session.posargs)
