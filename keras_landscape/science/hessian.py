"""Curvature from Hessian-vector products: top eigenpairs, trace and spectral density.

Every estimator here sees the Hessian only through `matvec(v) -> H v` (exact over the whole
training split: `Landscape.hessian_vector`), so the Hessian is never formed:

- top eigenpairs: Lanczos with full reorthogonalisation from a seeded random start; the
  Ritz values of the m x m tridiagonal matrix converge to the extreme eigenvalues first
  (Golub & Van Loan, ch. 10), and `residuals` (||H q - lambda q||) say how far each has;
- trace: Hutchinson's estimator, the mean of z^T H z over Rademacher vectors z (unbiased;
  `trace_se` is its standard error);
- spectral density: stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani,
  Krishnan & Xiao 2019): for each random unit vector, the Ritz values theta_j of an m-step
  Lanczos run with weights tau_j^2 (squared first components of the tridiagonal matrix's
  eigenvectors) form a quadrature rule for v^T f(H) v; their average over vectors, each
  node broadened by a Gaussian of width `sigma`, estimates the density of eigenvalues
  phi(t) = (1/P) sum_i delta(t - lambda_i). It integrates to 1 over the real line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MatVec = Callable[[np.ndarray], np.ndarray]


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


def top_eigenpairs(
    matvec: MatVec, dim: int, k: int, steps: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k largest (algebraic) eigenvalues, their unit eigenvectors (k, P) and residual
    norms ||H q - lambda q||, from min(steps, dim) Lanczos steps (steps >= k)."""
    run = lanczos(matvec, _start(dim, np.random.default_rng(seed)), min(steps, dim))
    values, vectors = np.linalg.eigh(run.tridiagonal)
    order = np.argsort(values)[::-1][: min(k, len(values))]
    ritz = vectors[:, order].T @ run.basis  # (k, P)
    ritz /= np.linalg.norm(ritz, axis=1, keepdims=True)
    residuals = np.array(
        [np.linalg.norm(matvec(q) - values[i] * q) for i, q in zip(order, ritz)], np.float64
    )
    return values[order], ritz, residuals


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
    "Lanczos",
    "hutchinson_trace",
    "lanczos",
    "spectral_density",
    "top_eigenpairs",
]
