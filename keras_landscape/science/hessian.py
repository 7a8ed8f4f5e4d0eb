"""Curvature from Hessian-vector products: top eigenpairs, trace and spectral density.

Every estimator here sees the Hessian only through `products(V) -> H V`: H applied to each
row of a (K, P) stack of vectors (exact over the whole training split:
`Landscape.hessian_operator`, which batches the rows), so the Hessian is never formed. The
estimators hand over as many vectors at once as they can: the trace its samples, the
density its probes' Lanczos steps in lockstep, the eigen solver its residual checks.

- top eigenpairs: ARPACK's implicitly restarted Lanczos (`scipy.sparse.linalg.eigsh` on a
  `LinearOperator` of `products`, from a seeded random start), which stops when every Ritz
  pair's residual is within `tol` of its eigenvalue, or reports that it did not converge
  within `maxiter` restarts (`TopEigen.converged`; ARPACK's converged pairs are kept and
  the others are NaN). Where the Krylov basis would span the whole space (P <= ncv), H is
  formed column by column from P products instead and diagonalised exactly. `residuals`
  (||H q - lambda q||) say how far each pair has converged, and `hvps` counts the products;
- trace: Hutchinson's estimator, the mean of z^T H z over Rademacher vectors z (unbiased;
  `trace_se` is its standard error);
- spectral density: stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani,
  Krishnan & Xiao 2019): for each random unit vector, the Ritz values theta_j of an m-step
  Lanczos run with weights tau_j^2 (squared first components of the tridiagonal matrix's
  eigenvectors) form a quadrature rule for v^T f(H) v; their average over vectors, each
  node broadened by a Gaussian of width `sigma`, estimates the density of eigenvalues
  phi(t) = (1/P) sum_i delta(t - lambda_i). It integrates to 1 over the real line. The
  quadrature needs the m-step tridiagonal matrix and its eigenvectors, which no scipy
  routine returns, so its fixed-length Lanczos runs (`lanczos`, several started together,
  one product call per step for all of them) are written out here: a fixed m is the
  rule's definition (an m-point Gauss quadrature), not a stopping rule.

Each estimator runs with NumPy's BLAS on one thread (`keras_landscape.blas`): its NumPy
work alternates with the products' framework kernels, which spinning BLAS threads slow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from keras_landscape.blas import blas_single_threaded

#: H applied to each row of a (K, P) stack of vectors -> (K, P)
Products = Callable[[np.ndarray], np.ndarray]

#: vectors one call holds at most in the estimators' own memory (float64, K x P), unless
#: a single vector is larger
BLOCK_BYTES = 1 << 28


def block_rows(dim: int) -> int:
    """How many P-vectors of float64 the estimators hand over in one products call."""
    return max(1, BLOCK_BYTES // (8 * max(1, int(dim))))


def product(products: Products, v: np.ndarray) -> np.ndarray:
    """H v for one vector v (P,), float64."""
    return np.asarray(products(np.asarray(v, np.float64)[None, :]), np.float64)[0]


log = logging.getLogger("keras_landscape")

#: ARPACK's stopping tolerance on each Ritz pair (||H q - lambda q|| <= tol |lambda|) and
#: its restart budget, unless told otherwise
DEFAULT_TOL = 1e-4
DEFAULT_MAXITER = 20


@dataclass
class Lanczos:
    """An m-step Lanczos run: H Q ~ Q T, T tridiagonal with `alphas` on the diagonal and
    `betas` beside it; `basis` (m, P) orthonormal rows."""

    alphas: np.ndarray
    betas: np.ndarray
    basis: np.ndarray

    @property
    def tridiagonal(self) -> np.ndarray:
        m = len(self.alphas)
        t = np.diag(self.alphas)
        if m > 1:
            t += np.diag(self.betas[: m - 1], 1) + np.diag(self.betas[: m - 1], -1)
        return t


@blas_single_threaded
def lanczos(products: Products, starts: np.ndarray, steps: int) -> list[Lanczos]:
    """`steps` Lanczos iterations from each row of `starts` (n, P), the n runs in lockstep
    (one products call per step for all runs still going), each with full
    reorthogonalisation (so its basis stays orthonormal in floating point). A run stops
    early when its Krylov space is exhausted."""
    starts = np.atleast_2d(np.asarray(starts, np.float64))
    runs = [
        {"basis": [q / np.linalg.norm(q)], "alphas": [], "betas": [], "going": True} for q in starts
    ]
    for _ in range(int(steps)):
        going = [run for run in runs if run["going"]]
        if not going:
            break
        found = np.asarray(products(np.stack([run["basis"][-1] for run in going])), np.float64)
        for run, w in zip(going, found):
            basis = run["basis"]
            alpha = float(w @ basis[-1])
            run["alphas"].append(alpha)
            block = np.stack(basis)
            w = w - block.T @ (block @ w)  # full reorthogonalisation, twice (Kahan's rule)
            w = w - block.T @ (block @ w)
            beta = float(np.linalg.norm(w))
            if len(run["alphas"]) == steps or beta <= 1e-10 * max(1.0, abs(alpha)):
                run["going"] = False
                continue
            run["betas"].append(beta)
            basis.append(w / beta)
    out = []
    for run in runs:
        m = len(run["alphas"])
        betas = np.array(run["betas"] + [0.0])[:m]
        out.append(Lanczos(np.array(run["alphas"]), betas, np.stack(run["basis"][:m])))
    return out


def _start(dim: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(dim)


@dataclass
class TopEigen:
    """The k largest eigenpairs of a symmetric operator and how they were found.

    Attributes:
        values: (k,) eigenvalues, largest first (NaN where ARPACK did not converge).
        vectors: (k, P) unit eigenvectors, in the same order (NaN rows where not converged).
        residuals: (k,) ||H q - lambda q|| of each pair (NaN where not converged).
        converged: every one of the k pairs met the tolerance.
        converged_count: how many did.
        hvps: products H v used, the residual checks included.
        method: 'arpack' (eigsh) or 'dense' (H formed from P products, exact).
        tol: ARPACK's tolerance; maxiter: its restart budget; ncv: its Lanczos basis size.
    """

    values: np.ndarray
    vectors: np.ndarray
    residuals: np.ndarray
    converged: bool
    converged_count: int
    hvps: int
    method: str
    tol: float
    maxiter: int
    ncv: int

    def summary(self) -> dict:
        """The run's facts as plain data (for a probe's result)."""
        return {
            "converged": bool(self.converged),
            "converged_count": int(self.converged_count),
            "hvps": int(self.hvps),
            "method": self.method,
            "tol": float(self.tol),
            "maxiter": int(self.maxiter),
            "ncv": int(self.ncv),
        }


def basis_size(dim: int, k: int, ncv: int | None = None) -> int:
    """ARPACK's Lanczos basis size: `ncv` if given (0 or None: scipy's default,
    max(2k + 1, 20)), at most dim."""
    return int(min(dim, int(ncv) if ncv else max(2 * k + 1, 20)))


@blas_single_threaded
def top_eigenpairs(
    products: Products,
    dim: int,
    k: int,
    *,
    seed: int,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
    ncv: int | None = None,
) -> TopEigen:
    """The k largest (algebraic) eigenpairs of the symmetric operator `products` on R^dim.

    ARPACK (`scipy.sparse.linalg.eigsh`, which='LA') from a seeded random start, stopped
    on `tol` (or after `maxiter` restarts: then `converged` is False and the pairs ARPACK
    did not converge are NaN; a warning is logged). With dim <= the basis size (`ncv`,
    default max(2k + 1, 20)) H is formed from dim products and diagonalised exactly.
    """
    k = int(min(k, dim))
    ncv = basis_size(dim, k, ncv)
    count = [0]

    def apply(rows):
        rows = np.atleast_2d(np.asarray(rows, np.float64))
        count[0] += len(rows)
        out = np.empty_like(rows)
        for part in range(0, len(rows), block_rows(dim)):
            chunk = slice(part, part + block_rows(dim))
            out[chunk] = np.asarray(products(rows[chunk]), np.float64)
        return out

    values = np.full(k, np.nan)
    vectors = np.full((k, dim), np.nan)
    if dim <= ncv or k >= dim:
        method = "dense"
        rows = apply(np.eye(dim))  # row i: H e_i
        found, basis = np.linalg.eigh((rows + rows.T) / 2)
        order = np.argsort(found)[::-1][:k]
        values, vectors = found[order], basis[:, order].T
    else:
        method = "arpack"
        operator = LinearOperator(
            (dim, dim),
            matvec=lambda v: apply(np.reshape(v, -1))[0],
            matmat=lambda columns: apply(np.asarray(columns).T).T,
            dtype=np.float64,
        )
        start = np.random.default_rng(seed).standard_normal(dim)
        try:
            found, basis = eigsh(
                operator, k=k, which="LA", v0=start, ncv=ncv, tol=tol, maxiter=maxiter
            )
        except ArpackNoConvergence as error:
            found, basis = error.eigenvalues, error.eigenvectors
        order = np.argsort(found)[::-1]
        values[: len(order)] = found[order]
        vectors[: len(order)] = basis[:, order].T
    done = np.isfinite(values)
    vectors[done] /= np.linalg.norm(vectors[done], axis=1, keepdims=True)
    residuals = np.full(k, np.nan)
    if done.any():  # every converged pair checked in one call
        checked = apply(vectors[done]) - values[done, None] * vectors[done]
        residuals[done] = np.linalg.norm(checked, axis=1)
    converged = int(done.sum())
    if converged < k:
        log.warning(
            "ARPACK converged %d of the %d largest Hessian eigenvalues within maxiter=%d "
            "restarts (tol=%g, %d Hessian-vector products); the others are NaN: raise tol, "
            "maxiter or the basis size (ncv).",
            converged,
            k,
            maxiter,
            tol,
            count[0],
        )
    return TopEigen(
        values,
        vectors,
        residuals,
        converged == k,
        converged,
        count[0],
        method,
        float(tol),
        int(maxiter),
        ncv,
    )


@blas_single_threaded
def hutchinson_trace(products: Products, dim: int, samples: int, seed: int) -> tuple[float, float]:
    """tr(H) ~ mean of z^T H z over Rademacher z; (estimate, standard error). The samples
    are drawn one after another from the seed (the same z whatever the block size) and
    multiplied in blocks of `block_rows(dim)`."""
    rng = np.random.default_rng(seed)
    values: list[float] = []
    remaining = int(samples)
    while remaining > 0:
        count = min(remaining, block_rows(dim))
        z = np.stack([rng.choice([-1.0, 1.0], size=dim) for _ in range(count)])
        values.extend(np.einsum("kp,kp->k", z, np.asarray(products(z), np.float64)))
        remaining -= count
    values = np.array(values)
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


@blas_single_threaded
def spectral_density(
    products: Products,
    dim: int,
    probes: int,
    steps: int,
    seed: int,
    points: int = 200,
    sigma: float | None = None,
) -> dict:
    """Stochastic Lanczos quadrature: {"grid", "density", "nodes", "weights", "sigma"}.

    `nodes` and `weights` (probes, m) are each probe's quadrature rule (weights sum to 1
    per probe); the density on `grid` is their average, each node a Gaussian of width
    `sigma` (default: 1% of the spectrum's range seen by the nodes).
    """
    rng = np.random.default_rng(seed)
    starts = [_start(dim, rng) for _ in range(int(probes))]
    steps = min(steps, dim)
    # probes whose bases (steps x P each) fit the block budget run together
    together = max(1, block_rows(dim) // max(1, steps))
    nodes, weights = [], []
    for first in range(0, len(starts), together):
        for run in lanczos(products, np.stack(starts[first : first + together]), steps):
            values, vectors = np.linalg.eigh(run.tridiagonal)
            nodes.append(values)
            weights.append(vectors[0] ** 2)
    width = max(len(n) for n in nodes)
    node_array = np.full((len(nodes), width), np.nan)
    weight_array = np.zeros((len(nodes), width))
    for i, (n, w) in enumerate(zip(nodes, weights)):
        node_array[i, : len(n)], weight_array[i, : len(w)] = n, w
    low, high = float(np.nanmin(node_array)), float(np.nanmax(node_array))
    span = max(high - low, 1e-12 * max(1.0, abs(high)))
    sigma = float(sigma) if sigma else 0.01 * span
    grid = np.linspace(low - 0.05 * span - 3 * sigma, high + 0.05 * span + 3 * sigma, points)
    finite = np.isfinite(node_array)
    centers, mass = node_array[finite], weight_array[finite] / len(nodes)
    density = (
        mass[None, :]
        * np.exp(-0.5 * ((grid[:, None] - centers[None, :]) / sigma) ** 2)
        / (sigma * np.sqrt(2 * np.pi))
    ).sum(axis=1)
    return {
        "grid": grid,
        "density": density,
        "nodes": node_array,
        "weights": weight_array,
        "sigma": sigma,
    }


__all__ = [
    "DEFAULT_MAXITER",
    "DEFAULT_TOL",
    "BLOCK_BYTES",
    "Lanczos",
    "Products",
    "TopEigen",
    "basis_size",
    "block_rows",
    "hutchinson_trace",
    "lanczos",
    "product",
    "spectral_density",
    "top_eigenpairs",
]
