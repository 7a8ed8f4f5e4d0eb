"""NumPy's BLAS kept to one thread while framework kernels and NumPy take turns.

A probe alternates between compiled kernels (TensorFlow's or JAX's own thread pools) and
NumPy/SciPy linear algebra on the results (ARPACK's Lanczos steps, reorthogonalisation,
projections). OpenBLAS, which NumPy and SciPy ship with, wakes its worker threads for a
matrix-vector product and leaves them spinning for a while afterwards, waiting for more
work; on a machine with few cores they take those cores from the framework's next kernel.
Measured on two cores (docs/performance.md): the Hessian's 100 trace products took 83 ms
right after ARPACK against 50 ms alone; with BLAS on one thread, 50 ms in both places.
The vectors NumPy handles here are single model-sized vectors and thin stacks of them,
where one BLAS thread loses little.

`one_blas_thread()` holds NumPy's BLAS libraries (as threadpoolctl finds them: OpenBLAS,
MKL, BLIS) to one thread for as long as it is entered, and restores their previous limits
on leaving; nested uses cost nothing. The frameworks' own pools are untouched.
"""

from __future__ import annotations

import contextlib
import functools
import threading

_lock = threading.Lock()
_depth = 0
_controller = None  # threadpoolctl's ThreadpoolController, found once (a scan: ~6 ms)


def _blas_controller():
    global _controller
    if _controller is None:
        import numpy.linalg  # noqa: F401  (both libraries loaded before threadpoolctl looks)
        import scipy.linalg  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


@contextlib.contextmanager
def one_blas_thread():
    """NumPy's BLAS on one thread inside the block (re-entrant; limits restored after)."""
    global _depth
    with _lock:
        outer = _depth == 0
        _depth += 1
    limiter = None
    try:
        if outer:
            limiter = _blas_controller().limit(limits=1, user_api="blas")
        yield
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
        with _lock:
            _depth -= 1


def blas_single_threaded(fn):
    """Decorator: `fn` runs inside `one_blas_thread()`."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with one_blas_thread():
            return fn(*args, **kwargs)

    return wrapped


__all__ = ["blas_single_threaded", "one_blas_thread"]
