"""The core tests again on the JAX backend, with TensorFlow made unimportable.

Runs in a subprocess (a Keras backend is fixed per process). Proves that DSS, projections,
barriers, components, the store, the registry and model loading work under jax.jit /
jax.vmap without TensorFlow. Skipped where jax is not installed.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: The engine's known answers on JAX, run by default: DSS, projections (every optimizer
#: check), the flat layouts, the store, the registry and BatchNorm statistics.
CORE = [
    "test_dss.py",
    "test_projection.py",
    "test_params.py",
    "test_store.py",
    "test_registry.py",
    "test_wide_stacks.py",
    # BatchNorm on JAX: the engine's known answers and one exported path (the CLI, store and
    # resume plumbing around them is backend-neutral and runs on TensorFlow only).
    "test_batchnorm.py::test_recomputed_statistics_of_input_features_are_the_data_moments",
    "test_batchnorm.py::test_batch_moments_match_a_train_mode_forward_by_hand",
    "test_batchnorm.py::test_train_mode_stacked_forward_equals_keras_training_calls",
    "test_batchnorm.py::test_weight_matching_permutes_the_statistics",
    "test_batchnorm.py::test_models_without_batch_norm_are_unaffected",
    "test_batchnorm.py::test_exported_beads_evaluate_in_keras_to_their_stored_level[recompute]",
]
#: The probes end to end, model loading and the stacked walk's zoo on JAX (slow: `-m slow`).
MORE = [
    "test_connectivity_probe.py",
    "test_barriers.py",
    "test_components.py",
    "test_models.py",
    "test_stacked.py",
]


def _run_on_jax(names: list[str]) -> None:
    pytest.importorskip("jax")
    if os.environ.get("KERAS_BACKEND") == "jax":
        pytest.skip("already running on the JAX backend")
    here = Path(__file__).parent
    files = [str(here / name) for name in names if (here / name.split("::")[0]).exists()]
    env = {**os.environ, "KERAS_BACKEND": "jax", "KLANDSCAPE_BLOCK_TENSORFLOW": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-30:])
    assert completed.returncode == 0, f"JAX suite failed:\n{tail}"
    assert " passed" in tail


@pytest.mark.slow
@pytest.mark.ci
def test_core_suite_passes_on_jax_without_tensorflow():
    _run_on_jax(CORE)


@pytest.mark.slow
def test_probes_and_models_pass_on_jax_without_tensorflow():
    _run_on_jax(MORE)
