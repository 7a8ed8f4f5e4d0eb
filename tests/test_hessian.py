"""The Hessian probe against known answers.

- Linear regression with MSE: E is quadratic, H = (2/n) [X 1]^T [X 1] exactly. The probe's
  eigenvalues equal H's, Hutchinson's trace is within 4 standard errors of tr(H), and with
  as many Lanczos steps as parameters every quadrature node of the density is an eigenvalue
  of H (the rule is exact) and the density integrates to 1.
- A small tanh MLP: the top eigenvalues equal those of its explicit Hessian, built here by
  differentiating Keras's own loss twice with TensorFlow (GradientTape.jacobian); with
  per_layer, each variable's top eigenvalue is that of its diagonal block.
- Along a stored DSS string: one measure per bead, positions from 0 to 1, and the first
  bead's top eigenvalue equals the first model's.
- The science alone: ARPACK (eigsh) on a symmetric matrix of known spectrum finds its top
  eigenpairs (numpy.linalg.eigvalsh), stopping on its tolerance; with too few restarts it
  says so (partial results, NaN for the rest) instead of returning unconverged numbers;
  a small operator is formed and diagonalised exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fit_full_batch

from keras_landscape.science.hessian import hutchinson_trace, spectral_density, top_eigenpairs


def test_arpack_finds_the_top_eigenpairs_of_a_symmetric_matrix():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 30))
    h = a @ a.T / 30 - 0.5 * np.eye(30)
    exact = np.sort(np.linalg.eigvalsh(h))[::-1]
    top = top_eigenpairs(lambda vs: vs @ h, 30, 4, seed=1, tol=1e-12, maxiter=200)
    assert top.method == "arpack" and top.converged and top.converged_count == 4
    np.testing.assert_allclose(top.values, exact[:4], rtol=1e-10)
    np.testing.assert_allclose(top.vectors @ h @ top.vectors.T, np.diag(top.values), atol=1e-9)
    assert top.residuals.max() < 1e-8
    assert top.hvps >= 20 + 4  # one basis of 20 vectors at least, and the residual checks
    estimate, se = hutchinson_trace(lambda vs: vs @ h, 30, 400, seed=2)
    assert abs(estimate - np.trace(h)) < 4 * se
    density = spectral_density(lambda vs: vs @ h, 30, 3, 30, seed=3)
    assert np.trapezoid(density["density"], density["grid"]) == pytest.approx(1.0, abs=1e-3)


def test_batched_estimators_equal_their_one_vector_forms(monkeypatch):
    """The trace draws the same z whatever the block; the density's Lanczos runs in
    lockstep equal the runs one by one; products are asked for many vectors at once."""
    from keras_landscape.science import hessian

    h, _ = _known_spectrum(40, [5.0, 3.0], seed=4)
    calls = []

    def products(vectors):
        calls.append(len(vectors))
        return vectors @ h

    together = hutchinson_trace(products, 40, 50, seed=7)
    assert calls == [50]  # one call for all samples
    density = spectral_density(products, 40, 3, 10, seed=8)
    assert calls[1:] == [3] * 10  # three runs in lockstep, one call per step
    monkeypatch.setattr(hessian, "BLOCK_BYTES", 8 * 40)  # one vector per call
    calls.clear()
    np.testing.assert_allclose(hutchinson_trace(products, 40, 50, seed=7), together, rtol=1e-12)
    assert calls == [1] * 50
    alone = spectral_density(products, 40, 3, 10, seed=8)
    np.testing.assert_allclose(alone["nodes"], density["nodes"], rtol=1e-12)
    np.testing.assert_allclose(alone["weights"], density["weights"], rtol=1e-10, atol=1e-14)


def _known_spectrum(size: int, top: list[float], seed: int = 0):
    """A symmetric matrix Q diag(spectrum) Q^T with the given top eigenvalues above a
    bulk in [-1, 1], and its spectrum from numpy.linalg.eigvalsh, largest first."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((size, size)))
    spectrum = np.concatenate([top, rng.uniform(-1.0, 1.0, size - len(top))])
    h = q @ np.diag(spectrum) @ q.T
    h = (h + h.T) / 2
    return h, np.sort(np.linalg.eigvalsh(h))[::-1]


def test_the_tolerance_decides_the_accuracy_and_the_cost():
    # an evenly spaced spectrum (no gap after the top): ARPACK needs restarts
    size = 300
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((size, size)))
    spectrum = np.linspace(10.0, 0.0, size)
    h = q @ np.diag(spectrum) @ q.T
    exact = np.sort(np.linalg.eigvalsh((h + h.T) / 2))[::-1]
    products = {}
    for tol in (1e-3, 1e-10):
        top = top_eigenpairs(lambda vs: vs @ h, size, 3, seed=2, tol=tol, maxiter=500, ncv=12)
        assert top.converged and top.method == "arpack"
        # ARPACK stops when ||Hq - lambda q|| <= tol |lambda| for every pair
        assert np.all(top.residuals <= tol * np.abs(top.values))
        np.testing.assert_allclose(top.values, exact[:3], rtol=tol)
        products[tol] = top.hvps
    assert products[1e-10] > products[1e-3]


def test_non_convergence_is_reported_not_hidden(caplog):
    # an evenly spaced spectrum: no gap after the top eigenvalues, slow to converge
    size = 300
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((size, size)))
    spectrum = np.linspace(10.0, 0.0, size)
    h = q @ np.diag(spectrum) @ q.T
    top = top_eigenpairs(lambda vs: vs @ h, size, 4, seed=1, tol=1e-8, maxiter=2, ncv=9)
    assert not top.converged and top.converged_count < 4
    assert np.isnan(top.values).sum() == 4 - top.converged_count
    assert top.summary()["converged"] is False and top.hvps > 0
    assert "ARPACK converged" in caplog.text
    enough = top_eigenpairs(lambda vs: vs @ h, size, 4, seed=1, tol=1e-8, maxiter=500, ncv=9)
    assert enough.converged
    np.testing.assert_allclose(enough.values, spectrum[:4], rtol=1e-7)


def test_a_small_operator_is_formed_and_diagonalised_exactly():
    h, exact = _known_spectrum(12, [3.0, 2.0])
    top = top_eigenpairs(lambda vs: vs @ h, 12, 5, seed=0)
    assert top.method == "dense" and top.converged and top.hvps == 12 + 5
    np.testing.assert_allclose(top.values, exact[:5], rtol=1e-12)


def _run(paths, data, out, **options):
    from keras_landscape.experiment.runner import RunSpec, execute

    spec = RunSpec(models=paths, data=data, probes=["hessian"], options=options, out=str(out))
    return execute(spec)["results"]["hessian"]


def test_quadratic_loss_gives_the_analytic_spectrum(linreg_models, tmp_path):
    x = linreg_models["x"].astype(np.float64)
    design = np.hstack([x, np.ones((len(x), 1))])
    hessian = 2.0 / len(x) * design.T @ design  # kernel (3) then bias, as the layout orders
    exact = np.sort(np.linalg.eigvalsh(hessian))[::-1]
    result = _run(
        linreg_models["paths"][:1],
        linreg_models["data"],
        tmp_path / "h.h5",
        top_k=3,
        trace_samples=300,
        density_probes=3,
        density_steps=4,
    )
    model = result["models"][0]
    np.testing.assert_allclose(model["eigenvalues"], exact[:3], rtol=1e-4)
    # four parameters: H formed from four products (and three residual checks), exactly
    assert model["eigen"]["method"] == "dense" and model["eigen"]["converged"]
    assert model["eigen"]["hvps"] == 4 + 3
    assert abs(model["trace"] - np.trace(hessian)) < 4 * model["trace_se"]
    from keras_landscape.store.hdf5 import Store

    with Store.open(tmp_path / "h.h5") as store:
        run = store.run("hessian")
        name = model["model"]
        vectors = run.read(f"models/{name}/eigenvectors").astype(np.float64)
    np.testing.assert_allclose(np.abs(vectors @ hessian @ vectors.T), np.diag(exact[:3]), atol=1e-3)
    grid, density = np.array(model["density_grid"]), np.array(model["density"])
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-3)
    # exact quadrature: the density's peaks sit on the eigenvalues
    peaks = grid[1:-1][(density[1:-1] > density[:-2]) & (density[1:-1] >= density[2:])]
    for peak in peaks:
        assert np.min(np.abs(exact - peak)) < 3 * model["density_sigma"]


def test_small_mlp_matches_its_explicit_hessian(tmp_path):
    import keras
    import tensorflow as tf

    from keras_landscape.data.specs import load_data

    data = load_data("cubic:limit=64")
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)]
    )
    fit_full_batch(model, data.x_train, data.y_train, 100, 0.05)
    model.compile(loss="mse")
    path = str(tmp_path / "mlp.keras")
    model.save(path)
    x = tf.constant(data.x_train)
    y = tf.constant(data.y_train)
    variables = model.trainable_variables
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_mean(keras.losses.mean_squared_error(y, model(x)))
        grads = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(loss, variables)], 0)
    blocks = outer.jacobian(grads, variables)
    explicit = np.concatenate(
        [np.reshape(b.numpy(), (grads.shape[0], -1)) for b in blocks], axis=1
    ).astype(np.float64)
    exact = np.sort(np.linalg.eigvalsh((explicit + explicit.T) / 2))[::-1]
    # the engine's products, one vector and batched (parts of 4, 2 and 1 rows), against it
    from keras_landscape.engine.landscape import Landscape

    landscape = Landscape(model, data, loss="mse", split="train")
    theta = landscape.theta_of(model)
    vectors = np.random.default_rng(0).standard_normal((7, theta.size))
    batched = landscape.hessian_operator(theta)(vectors)
    np.testing.assert_allclose(batched, vectors @ explicit.T, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(landscape.hessian_vector(theta, vectors[5]), batched[5], rtol=1e-5)
    # a basis of 8 Lanczos vectors for 10 parameters: ARPACK, restarted to its tolerance
    result = _run(
        [path],
        "cubic:limit=64",
        tmp_path / "mlp.h5",
        top_k=3,
        lanczos_vectors=8,
        eigen_tol=1e-5,
        eigen_maxiter=200,
        per_layer=True,
    )
    eigen = result["models"][0]["eigen"]
    assert eigen["method"] == "arpack" and eigen["converged"] and eigen["ncv"] == 8
    assert eigen["hvps"] > 8
    np.testing.assert_allclose(result["models"][0]["eigenvalues"], exact[:3], rtol=1e-3, atol=1e-5)
    # each variable's block of the explicit Hessian: its own top eigenvalue
    start = 0
    for layer, variable in zip(result["models"][0]["layers"], variables):
        size = int(np.prod(variable.shape))
        block = explicit[start : start + size, start : start + size]
        top = np.linalg.eigvalsh((block + block.T) / 2)[-1]
        assert layer["parameters"] == size
        assert layer["top_eigenvalue"] == pytest.approx(top, rel=1e-3, abs=1e-5)
        start += size


def test_curvature_along_a_stored_string(linreg_models, tmp_path):
    from keras_landscape.experiment.runner import RunSpec, execute

    paths, data = linreg_models["paths"][:2], linreg_models["data"]
    store = tmp_path / "path.h5"
    spec = RunSpec(models=paths, data=data, probes=["connectivity"], out=str(store))
    execute(spec)
    result = _run(
        paths, data, tmp_path / "h.h5", path=f"{store}:connectivity", trace_samples=5, top_k=1
    )
    (string,) = result["path"]
    positions = [b["position"] for b in string["beads"]]
    assert positions[0] == 0.0 and positions[-1] == pytest.approx(1.0)
    assert positions == sorted(positions)
    # a convex E: the Hessian is the same everywhere, so the same at every bead
    first = result["models"][0]["eigenvalues"][0]
    for bead in string["beads"]:
        assert bead["top_eigenvalue"] == pytest.approx(first, rel=1e-4)


def test_bad_path_is_a_clear_error(linreg_models, tmp_path, capsys):
    from conftest import run_cli

    code, _, err = run_cli(
        capsys,
        "probe",
        linreg_models["paths"][0],
        "--data",
        linreg_models["data"],
        "--probe",
        "hessian",
        "--set",
        "path=nowhere",
        "--out",
        str(tmp_path / "x.h5"),
    )
    assert code == 2 and "give STORE:RUN" in err
