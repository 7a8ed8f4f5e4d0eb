"""Probe `hessian`: curvature of the training loss at each model and along stored paths.

Top-k eigenvalues and eigenvectors (ARPACK's restarted Lanczos, `scipy.sparse.linalg.eigsh`,
stopped on a tolerance; non-convergence is reported), trace (Hutchinson) and spectral density
(stochastic Lanczos quadrature) of the Hessian of the training loss E, through exact
Hessian-vector products over the whole training split (`Landscape.hessian_operator`: the
trace's samples, the density's Lanczos steps and the residual checks batched, one compiled
call per batch, the state held fixed). With `path=STORE:RUN`, the top eigenvalue
and the trace at every bead of every string stored in that run: how curvature changes
along a low-loss path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_landscape.contract import LandscapeLike
from keras_landscape.errors import UserError
from keras_landscape.registry import ProbeBase
from keras_landscape.report.plots import NoFigure, new_figure
from keras_landscape.report.tables import fmt, table
from keras_landscape.science.hessian import (
    DEFAULT_MAXITER,
    DEFAULT_TOL,
    basis_size,
    hutchinson_trace,
    spectral_density,
    top_eigenpairs,
)
from keras_landscape.seeds import derive_seed
from keras_landscape.store.hdf5 import Store
from keras_landscape.store.strings import read_string, string_prefixes

# keys of the random streams under the run's seed
_EIGEN, _TRACE, _DENSITY = 1, 2, 3


def hessian_tables(name: str, result: dict) -> list[dict]:
    models = [m for m in result.get("models") or [] if isinstance(m, dict)]
    k = max((len(m.get("eigenvalues") or []) for m in models), default=0)
    rows = [
        [m.get("model")]
        + [(m.get("eigenvalues") or [None] * k)[i] for i in range(k)]
        + [
            f"{fmt(m.get('trace'))} ± {fmt(m.get('trace_se'))}",
            m.get("max_residual"),
            _converged(m.get("eigen")),
        ]
        for m in models
    ]
    tables = [
        table(
            name,
            ["model"]
            + [f"lambda_{i + 1}" for i in range(k)]
            + ["trace ± se", "max residual", "converged (HVPs)"],
            rows,
            [
                "Hessian of the training loss on the training split (model's own state); "
                "eigenvalues by ARPACK (eigsh, stopped at ||Hq - lambda q|| <= tol |lambda|; "
                "exact from the formed Hessian where P <= the Lanczos basis), trace by "
                "Hutchinson; residual: ||Hq - lambda q||; converged: eigenpairs that met the "
                "tolerance (the others are n/a), with the Hessian-vector products used"
            ],
        )
    ]
    for string in result.get("path") or []:
        tables.append(
            table(
                f"{name}: path {string['string']}",
                ["bead", "position", "level", "lambda_max", "trace ± se"],
                [
                    [
                        b["bead"],
                        b["position"],
                        b["level"],
                        b["top_eigenvalue"],
                        f"{fmt(b['trace'])} ± {fmt(b['trace_se'])}",
                    ]
                    for b in string["beads"]
                ],
                ["position: arc length from A over the string's length"],
            )
        )
    return tables


def _converged(eigen) -> str:
    """'3/3 (57)': eigenpairs converged of those asked for (Hessian-vector products)."""
    if not isinstance(eigen, dict):
        return "n/a"
    asked = eigen.get("asked", eigen.get("converged_count"))
    return f"{fmt(eigen.get('converged_count'))}/{fmt(asked)} ({fmt(eigen.get('hvps'))})"


def draw_density(result: dict, run_name: str, xlabel: str):
    models = [m for m in result.get("models") or [] if m.get("density")]
    if not models:
        raise NoFigure("no spectral density in the result")
    figure, ax = new_figure(7.0, 4.2)
    for i, m in enumerate(models):
        density = np.maximum(np.asarray(m["density"], float), 1e-12)
        ax.semilogy(m["density_grid"], density, color=f"C{i % 10}", label=m["model"])
    ax.set_xlabel("eigenvalue of the Hessian of the training loss")
    ax.set_ylabel("density (stochastic Lanczos quadrature)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.suptitle(f"{run_name}: Hessian spectral density", fontsize=10)
    return figure, f"spectral density of {len(models)} model(s)"


def draw_path(result: dict, run_name: str, xlabel: str):
    strings = result.get("path") or []
    if not strings:
        raise NoFigure("no path was measured (path=STORE:RUN)")
    figure, (left, right) = new_figure(10.0, 4.2, ncols=2)
    for i, string in enumerate(strings):
        position = [b["position"] for b in string["beads"]]
        name = string.get("string") or "root"
        left.plot(
            position,
            [b["top_eigenvalue"] for b in string["beads"]],
            "o-",
            color=f"C{i}",
            label=name,
        )
        se = [b.get("trace_se") for b in string["beads"]]
        right.errorbar(
            position,
            [b["trace"] for b in string["beads"]],
            yerr=[0.0 if v is None or not np.isfinite(v) else v for v in se],
            fmt="o-",
            capsize=3,
            color=f"C{i}",
            label=f"{name} (± Hutchinson's standard error)",
        )
    for ax in (left, right):
        ax.legend(fontsize=8)
    for ax, label in ((left, "top eigenvalue"), (right, "trace")):
        ax.set_xlabel("position along the string (arc length fraction, A = 0)")
        ax.set_ylabel(f"Hessian {label}")
        ax.grid(alpha=0.3)
    figure.suptitle(f"{run_name}: curvature along {len(strings)} stored string(s)", fontsize=10)
    return figure, f"curvature along {len(strings)} string(s)"


class HessianProbe(ProbeBase):
    """Top eigenvalues, trace and spectral density of the Hessian, at models and beads."""

    name = "hessian"
    summary = "Hessian of the training loss: top eigenvalues, trace, density; along paths."
    result_fields = {
        "models": "per model: layers (per_layer: variable, parameters, top_eigenvalue of its "
        "block, converged), eigenvalues (largest first; NaN where ARPACK did not converge), "
        "residuals (||Hq - lambda q|| of each), max_residual, eigen (converged: all top_k "
        "met the tolerance, converged_count, asked, hvps: Hessian-vector products used, "
        "method: arpack or dense, tol, maxiter, ncv), trace, trace_se (Hutchinson's "
        "standard error), density_grid, density, density_sigma (stochastic Lanczos "
        "quadrature); eigenvectors are stored as datasets models/<model>/eigenvectors",
        "path": "with path=STORE:RUN: per stored string, per bead: bead, position (arc "
        "length fraction from A), level (as stored), top_eigenvalue (NaN if not converged), "
        "converged, hvps, trace, trace_se",
    }

    @dataclass
    class Config:
        """Options of `hessian`.

        Attributes:
            top_k: how many of the largest eigenvalues (and eigenvectors) to report.
            eigen_tol: ARPACK's stopping tolerance for them: a pair has converged when
                the norm of its residual Hq - lambda q is at most eigen_tol times the
                eigenvalue's magnitude (scipy.sparse.linalg.eigsh's tol).
            eigen_maxiter: ARPACK's restart budget; pairs not converged within it are
                reported as not converged (NaN), never hidden.
            lanczos_vectors: ARPACK's Lanczos basis size ncv (> top_k; 0: max(2 top_k + 1,
                20)); with no more parameters than that, the Hessian is formed and
                diagonalised exactly instead.
            trace_samples: Rademacher vectors for Hutchinson's trace (0: no trace).
            density_probes: random vectors for the spectral density (0: no density).
            density_steps: Lanczos iterations per density vector.
            density_points: grid points of the density.
            per_layer: also the top eigenvalue of each variable's own block of the Hessian
                (H restricted to that kernel's or bias's parameters).
            path: 'STORE:RUN': also measure the top eigenvalue and the trace at every bead
                of every string stored in that run of that store ('' : none).
            seed: seeds the random vectors (--seed by default).
        """

        top_k: int = 3
        eigen_tol: float = DEFAULT_TOL
        eigen_maxiter: int = DEFAULT_MAXITER
        lanczos_vectors: int = 0
        trace_samples: int = 10
        density_probes: int = 2
        density_steps: int = 20
        density_points: int = 200
        per_layer: bool = False
        path: str = ""
        seed: int = 0

        def validate(self) -> None:
            if self.top_k < 1 or (self.lanczos_vectors and self.lanczos_vectors <= self.top_k):
                raise UserError(
                    "hessian needs top_k >= 1 and lanczos_vectors > top_k or 0 (got "
                    f"{self.top_k}, {self.lanczos_vectors})."
                )
            if not self.eigen_tol >= 0 or self.eigen_maxiter < 1:
                raise UserError(
                    "hessian needs eigen_tol >= 0 and eigen_maxiter >= 1 (got "
                    f"{self.eigen_tol}, {self.eigen_maxiter})."
                )
            if min(self.trace_samples, self.density_probes) < 0 or self.density_steps < 1:
                raise UserError(
                    "trace_samples and density_probes must be >= 0 and density_steps >= 1."
                )
            if self.density_points < 2:
                raise UserError(f"density_points must be >= 2, got {self.density_points}.")
            if self.path and ":" not in self.path:
                raise UserError(
                    f"path {self.path!r}: give STORE:RUN, e.g. runs/ab.h5:connectivity."
                )

    figures = {"hessian_density": draw_density, "hessian_path": draw_path}

    def validate_inputs(self, models: list[str]) -> None:
        """path=STORE:RUN names a readable store with that run, holding strings."""
        if self.config.path:
            self._path_size(self.config.path)

    def validate_loaded(self, landscape: LandscapeLike, models: list) -> None:
        """path=STORE:RUN's beads have the models' parameter count."""
        if self.config.path:
            size = self._path_size(self.config.path)
            if size is not None and size != landscape.size:
                raise UserError(
                    f"path {self.config.path!r}: its beads have {size} parameters, the models "
                    f"here {landscape.size}: the strings belong to another architecture. Give "
                    "the store of a run on these models."
                )

    @staticmethod
    def _path_size(path: str) -> int | None:
        """The parameter count of the store path=STORE:RUN names (None: not recorded);
        UserError for a missing or unreadable store, a missing run or one without strings."""
        source, _, run_name = path.rpartition(":")
        try:
            with Store.open(source) as other:
                run = other.run(run_name)
                if not string_prefixes(run):
                    raise UserError(
                        f"the run {run_name!r} holds no DSS string (run a probe that stores "
                        "strings there: connectivity, curviness, components, barrier)"
                    )
                try:
                    return int(other.read_layout()["size"])
                except UserError:
                    return None
        except UserError as error:
            raise UserError(f"path {path!r}: {str(error).rstrip('.')}.") from None

    @classmethod
    def tables(cls, run_name: str, result: dict) -> list[dict]:
        return hessian_tables(run_name, result)

    @classmethod
    def summaries(cls, result: dict) -> dict[str, float]:
        """The single numbers to follow in training (TensorBoard scalars of
        `LandscapeCallback`): top_eigenvalue and trace, `<model>/...` for several models."""
        models = [m for m in result.get("models") or [] if isinstance(m, dict)]
        found = {}
        for m in models:
            name = "" if len(models) == 1 else f"{m.get('model')}/"
            if m.get("eigenvalues"):
                found[f"{name}top_eigenvalue"] = m["eigenvalues"][0]
            if m.get("trace") is not None:
                found[f"{name}trace"] = m["trace"]
        return found

    def run(self, landscape: LandscapeLike, models, store, progress) -> dict:
        config = self.config
        config.validate()
        beads = self._path_beads(landscape, config.path) if config.path else []
        task = progress.task("hessian", total=len(models) + sum(len(b[1]) for b in beads))
        results = []
        for minimum in models:
            results.append(self._at_model(landscape, minimum, store, progress))
            task.advance()
        path = []
        for prefix, points in beads:
            measured = []
            for index, (bead, position, level, theta, state) in enumerate(points):
                measured.append(
                    self._at_bead(landscape, store, prefix, index, bead, theta, state, progress)
                    | {"bead": bead, "position": position, "level": level}
                )
                task.advance()
            path.append({"string": prefix, "beads": measured})
        task.close()
        return {"models": results, "path": path, "source": config.path or None}

    def _products(self, landscape: LandscapeLike, theta, state):
        """H applied to each row of a (K, P) stack: `Landscape.hessian_operator` at theta."""
        return landscape.hessian_operator(theta, state=state)

    def _top(self, products, dim: int, k: int):
        """The k largest eigenpairs (science.hessian.top_eigenpairs with this config)."""
        config = self.config
        return top_eigenpairs(
            products,
            dim,
            k,
            seed=derive_seed(config.seed, _EIGEN),
            tol=config.eigen_tol,
            maxiter=config.eigen_maxiter,
            ncv=config.lanczos_vectors or None,
        )

    def _eigen(self, dim: int, converged: int, hvps: int) -> dict:
        """How the top eigenpairs were found, as the result reports it."""
        config = self.config
        k = min(config.top_k, dim)
        ncv = basis_size(dim, k, config.lanczos_vectors or None)
        return {
            "converged": int(converged) == k,
            "converged_count": int(converged),
            "asked": k,
            "hvps": int(hvps),
            "method": "dense" if dim <= ncv else "arpack",
            "tol": config.eigen_tol,
            "maxiter": config.eigen_maxiter,
            "ncv": ncv,
        }

    def _note(self, progress, where: str, eigen: dict) -> None:
        if not eigen["converged"]:
            progress.note(
                f"hessian at {where}: ARPACK converged {eigen['converged_count']} of the "
                f"{eigen['asked']} largest eigenvalues within eigen_maxiter="
                f"{eigen['maxiter']} ({eigen['hvps']} Hessian-vector products); the others "
                "are reported as NaN (raise eigen_maxiter, eigen_tol or lanczos_vectors)"
            )

    def _at_model(self, landscape: LandscapeLike, minimum, store, progress) -> dict:
        config, key = self.config, f"models/{minimum.name}"
        products = self._products(landscape, minimum.theta, minimum.state)
        if store.has(f"{key}/eigenvalues"):  # a resumed run: this model is done
            values = store.read(f"{key}/eigenvalues")
            residuals = store.read(f"{key}/residuals")
            counts = (
                store.read(f"{key}/eigen_counts")
                if store.has(f"{key}/eigen_counts")
                else np.array([np.isfinite(values).sum(), -1])  # written before the counts
            )
            trace = store.read(f"{key}/trace")
            grid, density = store.read(f"{key}/density_grid"), store.read(f"{key}/density")
            sigma = float(store.read(f"{key}/density_sigma"))
        else:
            top = self._top(products, landscape.size, config.top_k)
            values, vectors, residuals = top.values, top.vectors, top.residuals
            counts = np.array([top.converged_count, top.hvps], np.int64)
            trace = np.array(self._trace(landscape, products))
            if config.density_probes:
                density = spectral_density(
                    products,
                    landscape.size,
                    config.density_probes,
                    config.density_steps,
                    derive_seed(config.seed, _DENSITY),
                    config.density_points,
                )
                grid, sigma, density = density["grid"], density["sigma"], density["density"]
            else:
                grid, density, sigma = np.zeros(0), np.zeros(0), float("nan")
            # one commit: a resumed run finds all of the model's datasets or none
            store.write_many(
                {
                    f"{key}/eigenvectors": vectors.astype(np.float32),
                    f"{key}/residuals": residuals,
                    f"{key}/eigen_counts": counts,  # converged pairs, products
                    f"{key}/trace": trace,
                    f"{key}/density_grid": grid,
                    f"{key}/density": density,
                    f"{key}/density_sigma": np.float64(sigma),
                    f"{key}/eigenvalues": values,  # marks the model done
                }
            )
        eigen = self._eigen(landscape.size, int(counts[0]), int(counts[1]))
        self._note(progress, minimum.name, eigen)
        blocks = self._blocks(landscape, products) if config.per_layer else None
        finite = residuals[np.isfinite(residuals)]
        return {
            "model": minimum.name,
            **({"layers": blocks} if blocks is not None else {}),
            "eigenvalues": [float(v) for v in values],
            "residuals": [float(r) for r in residuals],
            "max_residual": float(np.max(finite)) if len(finite) else None,
            "eigen": eigen,
            "trace": float(trace[0]),
            "trace_se": float(trace[1]),
            "density_grid": [float(g) for g in grid],
            "density": [float(d) for d in density],
            "density_sigma": sigma,
        }

    def _blocks(self, landscape: LandscapeLike, products) -> list[dict]:
        """The top eigenvalue of each variable's diagonal block of H (ARPACK on the block, or
        the block formed exactly where it is small: H v for v zero outside the variable,
        read inside it)."""
        layout, found = landscape.layout, []
        for path, offset, shape in zip(layout.paths, layout.offsets, layout.shapes):
            size = int(np.prod(shape)) if shape else 1
            rows = slice(offset, offset + size)

            def block(vectors, rows=rows):
                full = np.zeros((len(vectors), landscape.size))
                full[:, rows] = vectors
                return np.asarray(products(full))[:, rows]

            top = self._top(block, size, 1)
            found.append(
                {
                    "variable": path,
                    "parameters": size,
                    "top_eigenvalue": float(top.values[0]),
                    "converged": top.converged,
                }
            )
        return found

    def _trace(self, landscape: LandscapeLike, products) -> tuple[float, float]:
        samples = self.config.trace_samples
        if not samples:
            return float("nan"), float("nan")
        return hutchinson_trace(
            products, landscape.size, samples, derive_seed(self.config.seed, _TRACE)
        )

    def _at_bead(
        self, landscape: LandscapeLike, store, prefix, index, bead, theta, state, progress
    ) -> dict:
        key = f"path/{prefix or 'root'}/bead_{index}"
        if store.has(f"{key}/measures"):
            # top eigenvalue, trace, its se, converged (0/1), products (-1: not recorded)
            measures = [*store.read(f"{key}/measures"), float("nan"), -1.0][:5]
            top, trace, se, converged, hvps = measures
            converged = bool(np.isfinite(top)) if np.isnan(converged) else bool(converged)
        else:
            products = self._products(landscape, theta, state)
            found = self._top(products, landscape.size, 1)
            trace, se = self._trace(landscape, products)
            top, converged, hvps = float(found.values[0]), found.converged, found.hvps
            if not converged:
                progress.note(
                    f"hessian at bead {bead} of {prefix or 'the string'}: ARPACK did not "
                    f"converge within eigen_maxiter={self.config.eigen_maxiter} "
                    f"({hvps} Hessian-vector products); its top eigenvalue is NaN"
                )
            row = [top, trace, se, float(converged), float(hvps)]
            store.write(f"{key}/measures", np.array(row, np.float64))
        return {
            "top_eigenvalue": float(top),
            "converged": bool(converged),
            "hvps": int(hvps),
            "trace": float(trace),
            "trace_se": float(se),
        }

    @staticmethod
    def _path_beads(landscape: LandscapeLike, path: str) -> list[tuple[str, list]]:
        """[(string prefix, [(bead row, position, level, theta, state)])] of a stored run."""
        source, _, run_name = path.rpartition(":")
        with Store.open(source) as other:
            run = other.run(run_name)
            found = []
            for prefix in string_prefixes(run):
                stored = read_string(run, prefix)
                thetas = stored.beads[stored.order].astype(np.float64)
                if thetas.shape[1] != landscape.size:
                    raise UserError(
                        f"path {path!r}: its beads have {thetas.shape[1]} parameters, the "
                        f"models here {landscape.size}: the strings belong to another "
                        "architecture."
                    )
                steps = np.linalg.norm(np.diff(thetas, axis=0), axis=1)
                length = float(steps.sum()) or 1.0
                positions = np.concatenate([[0.0], np.cumsum(steps) / length])
                found.append(
                    (
                        prefix,
                        [
                            (
                                int(row),
                                float(position),
                                float(stored.bead_level[row]),
                                stored.beads[row],
                                None if stored.bead_state is None else stored.bead_state[row],
                            )
                            for row, position in zip(stored.order, positions)
                        ],
                    )
                )
        if not found:
            raise UserError(f"path {path!r}: the run holds no string.")
        return found
