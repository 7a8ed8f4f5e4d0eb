"""NumPy's BLAS held to one thread while estimators and probe runs alternate with kernels.

Read back through threadpoolctl (the libraries NumPy and SciPy loaded): one thread inside
`one_blas_thread()`, nested blocks included, the previous limit restored after, also when
the block raises; the Hessian estimators' products and a probe run through the runner see
one thread; the estimators' results do not depend on it.
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from keras_landscape.blas import blas_single_threaded, one_blas_thread
from keras_landscape.science.hessian import hutchinson_trace, top_eigenpairs


def _threads() -> set[int]:
    found = {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
    if not found:
        pytest.skip("threadpoolctl finds no BLAS library here")
    return found


@pytest.fixture
def two_threads():
    """BLAS at two threads around the test (whatever this machine's default)."""
    with threadpool_limits(limits=2, user_api="blas"):
        if _threads() != {2}:
            pytest.skip("this BLAS cannot be set to two threads")
        yield


def test_one_thread_inside_restored_after(two_threads):
    with one_blas_thread():
        assert _threads() == {1}
        with one_blas_thread():
            assert _threads() == {1}
        assert _threads() == {1}  # the inner block leaves the outer one's limit alone
    assert _threads() == {2}
    with pytest.raises(RuntimeError), one_blas_thread():
        raise RuntimeError("inside")
    assert _threads() == {2}


def test_the_decorator_and_the_estimators(two_threads):
    seen = []

    @blas_single_threaded
    def decorated(value):
        seen.append(_threads())
        return value * 2

    assert decorated(3) == 6 and seen == [{1}]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 40))
    h = a @ a.T / 40

    def products(vectors):
        seen.append(_threads())
        return vectors @ h

    seen.clear()
    top = top_eigenpairs(products, 40, 3, seed=1, tol=1e-10, maxiter=100)
    estimate, _ = hutchinson_trace(products, 40, 20, seed=2)
    assert seen and all(s == {1} for s in seen)
    assert _threads() == {2}
    # the same numbers as with BLAS free to use its threads
    free = top_eigenpairs.__wrapped__(lambda v: v @ h, 40, 3, seed=1, tol=1e-10, maxiter=100)
    np.testing.assert_allclose(top.values, free.values, rtol=1e-12)
    np.testing.assert_allclose(top.values, np.sort(np.linalg.eigvalsh(h))[::-1][:3], rtol=1e-9)
    assert estimate == hutchinson_trace.__wrapped__(lambda v: v @ h, 40, 20, seed=2)[0]


def test_a_probe_run_through_the_runner_holds_one_thread(two_threads, tmp_path):
    from keras_landscape.experiment.runner import run_probe
    from keras_landscape.progress import NullProgress
    from keras_landscape.store.hdf5 import Store

    seen = []

    @dataclasses.dataclass
    class Config:
        pass

    class Probe:
        name, config = "threads", Config()

        def run(self, landscape, minima, store, progress):
            seen.append(_threads())
            return {"ok": True}

    landscape = types.SimpleNamespace(devices=types.SimpleNamespace(rows={}, describe=lambda: {}))
    spec = types.SimpleNamespace(resume=False, seed=0)
    store = Store.create(str(tmp_path / "s.h5"), versions={}, command="test")
    try:
        result = run_probe(Probe(), landscape, [], store, spec, NullProgress())
    finally:
        store.close()
    assert seen == [{1}] and result["ok"] is True
    assert _threads() == {2}
