"""Curvature from Hessian-vector products: top eigenpairs, trace and spectral density.

Every estimator here sees the Hessian only through `matvec(v) -> H v` (exact over the whole
training split: `Landscape.hessian_vector`), so the Hessian is never formed:

- top eigenpairs: ARPACK's implicitly restarted Lanczos (`scipy.sparse.linalg.eigsh` on a
  `LinearOperator` of `matvec`, from a seeded random start), which stops when every Ritz
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
  routine returns, so its fixed-length Lanczos run (`lanczos`) is written out here: a
  fixed m is the rule's definition (an m-point Gauss quadrature), not a stopping rule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

MatVec = Callable[[np.ndarray], np.ndarray]

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


def lanczos(matvec: MatVec, start: np.ndarray, steps: int) -> Lanczos:
    """`steps` Lanczos iterations from `start`, with full reorthogonalisation (so the basis
    stays orthonormal in floating point). Stops early when the Krylov space is exhausted."""
    q = np.asarray(start, np.float64)
    q = q / np.linalg.norm(q)
    basis, alphas, betas = [q], [], []
    for _ in range(int(steps)):
        w = np.asarray(matvec(basis[-1]), np.float64)
        alpha = float(w @ basis[-1])
        alphas.append(alpha)
        block = np.stack(basis)
        w = w - block.T @ (block @ w)  # full reorthogonalisation, twice (Kahan's rule)
        w = w - block.T @ (block @ w)
        beta = float(np.linalg.norm(w))
        if len(alphas) == steps or beta <= 1e-10 * max(1.0, abs(alpha)):
            break
        betas.append(beta)
        basis.append(w / beta)
    basis = basis[: len(alphas)]
    return Lanczos(np.array(alphas), np.array(betas + [0.0])[: len(alphas)], np.stack(basis))


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


def top_eigenpairs(
    matvec: MatVec,
    dim: int,
    k: int,
    *,
    seed: int,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
    ncv: int | None = None,
) -> TopEigen:
    """The k largest (algebraic) eigenpairs of the symmetric operator `matvec` on R^dim.

    ARPACK (`scipy.sparse.linalg.eigsh`, which='LA') from a seeded random start, stopped
    on `tol` (or after `maxiter` restarts: then `converged` is False and the pairs ARPACK
    did not converge are NaN; a warning is logged). With dim <= the basis size (`ncv`,
    default max(2k + 1, 20)) H is formed from dim products and diagonalised exactly.
    """
    k = int(min(k, dim))
    ncv = basis_size(dim, k, ncv)
    count = [0]

    def product(v):
        count[0] += 1
        return np.asarray(matvec(np.asarray(v, np.float64).reshape(-1)), np.float64)

    values = np.full(k, np.nan)
    vectors = np.full((k, dim), np.nan)
    if dim <= ncv or k >= dim:
        method = "dense"
        columns = np.stack([product(e) for e in np.eye(dim)], axis=1)
        found, basis = np.linalg.eigh((columns + columns.T) / 2)
        order = np.argsort(found)[::-1][:k]
        values, vectors = found[order], basis[:, order].T
    else:
        method = "arpack"
        operator = LinearOperator((dim, dim), matvec=product, dtype=np.float64)
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
    for i in np.flatnonzero(done):
        residuals[i] = np.linalg.norm(product(vectors[i]) - values[i] * vectors[i])
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


def hutchinson_trace(matvec: MatVec, dim: int, samples: int, seed: int) -> tuple[float, float]:
    """tr(H) ~ mean of z^T H z over Rademacher z; (estimate, standard error)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(int(samples)):
        z = rng.choice([-1.0, 1.0], size=dim)
        values.append(float(z @ np.asarray(matvec(z), np.float64)))
    values = np.array(values)
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


def spectral_density(
    matvec: MatVec,
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
    nodes, weights = [], []
    for _ in range(int(probes)):
        run = lanczos(matvec, _start(dim, rng), min(steps, dim))
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
    "Lanczos",
    "TopEigen",
    "basis_size",
    "hutchinson_trace",
    "lanczos",
    "spectral_density",
    "top_eigenpairs",
]
