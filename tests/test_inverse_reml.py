"""ReML / free energy, patches and temporal modes of the laminar inversion.

Checked against independent computations: closed-form optima, direct
Gaussian log-likelihoods (scipy.stats), numerical integration of the evidence
over the hyperparameters, an analytic geodesic distance, a plain SVD.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats
from scipy.special import logsumexp

from mne_laminar_plugin.inverse._compare import _msp_free_energy_batch, _msp_rho
from mne_laminar_plugin.inverse._patches import (
    layer_patches,
    mesh_edges,
    patch_kernel,
)
from mne_laminar_plugin.inverse._reml import HC, HE, V0, reml, reml_grouped, reml_msp
from mne_laminar_plugin.inverse._temporal import dct_basis, hann, temporal_modes


def _problem(rng, n=12, N=4, amp=2.0):
    a = rng.normal(size=n)
    u = a / np.linalg.norm(a)
    Y = amp * np.outer(u, rng.normal(size=N)) + rng.normal(size=(n, N))
    return a, u, Y, Y @ Y.T


def _loglik(Y, C):
    """log N(Y; 0, C) summed over the columns of Y (scipy, independent)."""
    return stats.multivariate_normal(np.zeros(len(C)), C).logpdf(Y.T).sum()


def _laplace_terms(Yh, Qh, h, N, sY):
    """F = log p(Y|h) + log p(h) + log of the Gaussian volume at h (independent).

    The curvature is the expected (Fisher) one SPM uses, computed here with
    finite differences of the expected log-likelihood (not the ReML code).
    """
    n = len(Yh)
    m = len(h)

    def cov(hh):
        return V0 * np.eye(n) + sum(np.exp(hi) * q for hi, q in zip(hh, Qh))

    ll = -0.5 * np.trace(np.linalg.solve(cov(h), Yh)) - N / 2 * np.linalg.slogdet(cov(h))[1] \
        - N * n / 2 * np.log(2 * np.pi)  # fmt: skip
    # expected Fisher information in log space: N/2 tr(P dC_i P dC_j)
    P = np.linalg.inv(cov(h))
    dC = [np.exp(hi) * q for hi, q in zip(h, Qh)]
    fisher = np.array([[N / 2 * np.trace(P @ dC[i] @ P @ dC[j]) for j in range(m)]
                       for i in range(m)])  # fmt: skip
    prior = stats.multivariate_normal(np.full(m, HE), HC * np.eye(m)).logpdf(h)
    post_prec = fisher + np.eye(m) / HC
    volume = m / 2 * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(post_prec)[1]
    return ll + prior + volume - N * n / 2 * np.log(sY)


# ----------------------------------------------------------------- ReML
@pytest.mark.parametrize("n_comp", [1, 2, 3])
def test_grouped_equals_dense(n_comp):
    """The closed form (2 groups) follows the dense n x n iteration exactly."""
    rng = np.random.default_rng(n_comp)
    worst = 0.0
    for amp in (0.0, 0.3, 1.0, 3.0, 10.0, 100.0):
        a, u, Y, YY = _problem(rng, amp=amp)
        n, N = YY.shape[0], Y.shape[1]
        Q = [np.eye(n) / n] + [np.outer(a, a)] * (n_comp - 1)
        dense = reml(YY, Q, N)
        rho = u @ YY @ u
        q = np.array([[1.0, 1.0]] + [[n, 0.0]] * (n_comp - 1))
        grouped = reml_grouped([rho, np.trace(YY) - rho], q, [1, n - 1], N)
        np.testing.assert_allclose(grouped.h, dense.h, atol=1e-9)
        assert grouped.n_iter == dense.n_iter
        worst = max(worst, abs(grouped.free_energy - dense.free_energy))
    assert worst < 1e-8  # issue: 1e-5 nats


def test_msp_specialised_equals_generic_and_dense():
    """The batched single-patch core (2 x 2 closed form) = the generic grouped
    fit over a wide range of SNRs (including dropped components) and = the
    dense n x n fit on a few."""
    rng = np.random.default_rng(7)
    n, N = 306, 4
    tau = rng.uniform(1e3, 2e3, 20000)
    rho = tau * 10 ** rng.uniform(-4, -0.001, tau.shape)
    F, h, act = reml_msp(rho, tau - rho, n, N)
    gen = reml_grouped(np.stack([rho, tau - rho], -1), [[1, 1], [n, 0], [n, 0]],
                       [1, n - 1], N)  # fmt: skip
    np.testing.assert_allclose(F, gen.free_energy, rtol=0, atol=1e-8)
    np.testing.assert_allclose(h[:, 0], gen.h[:, 0], atol=1e-9)
    np.testing.assert_allclose(h[:, 1], gen.h[:, 1], atol=1e-9)
    np.testing.assert_array_equal(act[:, 1], gen.active[:, 1])
    assert (~act[:, 0]).any() and (~act[:, 1]).any() and act.all(1).any()
    F_b = _msp_free_energy_batch(tau, rho, n, N)
    np.testing.assert_array_equal(F_b, F)
    for _ in range(4):
        a, u, Y, YY = _problem(rng, n=40, N=N, amp=float(rng.uniform(0, 20)))
        dense = reml(YY, [np.eye(40) / 40, np.outer(a, a), np.outer(a, a)], N)
        rho1 = u @ YY @ u
        np.testing.assert_allclose(_msp_free_energy_batch(np.trace(YY), rho1, 40, N),
                                   dense.free_energy, atol=1e-8)  # fmt: skip


def test_one_component_closed_form():
    """Noise only, C = V + e^h I: the MAP h solves a scalar equation (brentq)."""
    rng = np.random.default_rng(0)
    for N in (1, 4, 50):
        Y = rng.normal(size=(8, N)) * 3.0
        YY = Y @ Y.T
        n = 8
        res = reml(YY, [np.eye(n)], N)
        sY = np.trace(YY) / (N * n)
        tr = np.trace(YY) / sY  # = N n

        # d/dh [ -tr/(2(v+e^h)) - N n/2 log(v+e^h) - (h-HE)^2/(2 HC) ] = 0
        def grad(h):
            c = V0 + np.exp(h)
            return 0.5 * tr * np.exp(h) / c**2 - 0.5 * N * n * np.exp(h) / c - (h - HE) / HC

        h_map = optimize.brentq(grad, -10, 10)
        assert abs(res.h[0] - h_map) < 0.05  # stopped at a predicted gain < 0.01 nats
        F_ref = _laplace_terms(YY / sY, [np.eye(n)], res.h, N, sY)
        np.testing.assert_allclose(res.free_energy, F_ref, rtol=0, atol=1e-8)


def test_two_components_against_independent_terms():
    """Noise + patch: ReML's h maximises the log joint (scipy), and F is the
    Laplace formula computed independently (scipy.stats) at that h."""
    rng = np.random.default_rng(3)
    for amp in (1.0, 4.0, 20.0):
        a, u, Y, YY = _problem(rng, n=10, N=6, amp=amp)
        n, N = 10, 6
        Q = [np.eye(n) / n, np.outer(a, a)]
        res = reml(YY, Q, N)
        sY = np.trace(YY) / (N * n)
        Qh = [q / (np.trace(q) / n) for q in Q]
        # a component whose h fell below hE has left the model (at high SNR
        # here: the noise component, the floor V stays)
        act = np.flatnonzero(res.active)
        F_ref = _laplace_terms(YY / sY, [Qh[i] for i in act], res.h[act], N, sY)
        np.testing.assert_allclose(res.free_energy, F_ref, atol=1e-8)

        def neg_joint(h):  # over the components still in the model
            C = V0 * np.eye(n) + sum(np.exp(hi) * Qh[i] for hi, i in zip(h, act))
            prior = stats.multivariate_normal(np.full(len(act), HE), HC * np.eye(len(act)))
            return -(_loglik(Y / np.sqrt(sY), C) + prior.logpdf(h))

        h_map = optimize.minimize(neg_joint, np.zeros(len(act)), method="Nelder-Mead",
                                  options=dict(xatol=1e-8, fatol=1e-10)).x  # fmt: skip
        # the log joint at ReML's h is within SPM's stopping tolerance of the max
        assert neg_joint(res.h[act]) - neg_joint(h_map) < 0.01
        # and the closed-form likelihood used by the batch equals scipy's
        C = V0 * np.eye(n) + sum(np.exp(res.h[i]) * Qh[i] for i in act)
        yy = np.array([u @ YY @ u, np.trace(YY) - u @ YY @ u]) / sY
        c_u = u @ C @ u
        c = np.array([c_u, (np.trace(C) - c_u) / (n - 1)])  # eigenvalues along / across u
        closed = -0.5 * (yy / c).sum() - 0.5 * N * (np.log(c[0]) + (n - 1) * np.log(c[1]))
        closed -= 0.5 * N * n * np.log(2 * np.pi)
        np.testing.assert_allclose(closed, _loglik(Y / np.sqrt(sY), C), atol=1e-8)


def test_free_energy_vs_numerical_evidence():
    """F (Laplace, expected curvature) vs log ∫ p(Y|h) p(h) dh on a grid.

    Documented Laplace error on this small problem (n = 4, N = 8, noise +
    patch, 20 random data sets): F is below the integrated log evidence by
    0.05-0.5 nats (the posterior of the patch hyperparameter has a long
    prior-dominated left tail the Gaussian misses); never more than 1 nat.
    """
    rng = np.random.default_rng(1)
    n, N = 4, 8
    g = np.linspace(-22, 10, 321)
    H0, H1 = np.meshgrid(g, g, indexing="ij")
    errors = []
    for _ in range(20):
        a, u, Y, YY = _problem(rng, n=n, N=N, amp=2.0)
        res = reml(YY, [np.eye(n) / n, np.outer(a, a)], N)
        sY = np.trace(YY) / (N * n)
        Yh = YY / sY
        # C = (V0 + e^h0) I + e^h1 n u u^T: eigenvalues along u and across
        c_u = V0 + np.exp(H0) + n * np.exp(H1)
        c_p = V0 + np.exp(H0)
        rho = u @ Yh @ u
        L = (-0.5 * (rho / c_u + (np.trace(Yh) - rho) / c_p)
             - 0.5 * N * (np.log(c_u) + (n - 1) * np.log(c_p)) - 0.5 * N * n * np.log(2 * np.pi))  # fmt: skip
        lp = -0.5 * ((H0 - HE) ** 2 + (H1 - HE) ** 2) / HC - np.log(2 * np.pi * HC)
        log_z = logsumexp(L + lp) + 2 * np.log(g[1] - g[0]) - 0.5 * N * n * np.log(sY)
        errors.append(res.free_energy - log_z)
    errors = np.array(errors)
    assert np.all(np.abs(errors) < 1.0), errors
    assert np.median(np.abs(errors)) < 0.5


def test_component_below_prior_mean_leaves_the_model():
    """No signal: the patch components fall below hE and drop out; F is then
    the noise-only model's F (same data), whatever the topography."""
    rng = np.random.default_rng(5)
    n, N = 20, 4
    Y = rng.normal(size=(n, N))
    YY = Y @ Y.T
    a = rng.normal(size=n)
    res = reml(YY, [np.eye(n) / n, np.outer(a, a), np.outer(a, a)], N)
    assert res.active[0] and not res.active[1:].any()


def test_msp_batch_invariances():
    """Scaling the data shifts F by -N n log(c) for every model; rho order is
    preserved (F increases with rho at fixed tau)."""
    rng = np.random.default_rng(2)
    n, N = 50, 4
    tau = np.full(7, 200.0)
    rho = np.linspace(1, 150, 7)
    F = _msp_free_energy_batch(tau, rho, n, N)
    F2 = _msp_free_energy_batch(tau * 9.0, rho * 9.0, n, N)
    np.testing.assert_allclose(F2 - F, -N * n * np.log(3.0), atol=1e-9)
    assert np.all(np.diff(F) > 0)
    # broadcasting: (n_sim, 1) against (n_sim, n_layers)
    Y = rng.normal(size=(6, 1, n, N))
    U = rng.normal(size=(n, 5))
    U /= np.linalg.norm(U, axis=0)
    t, r = _msp_rho(Y, U)
    Fb = _msp_free_energy_batch(t[:, None], r, n, N)
    for s in range(6):
        for layer in range(5):
            YY = Y[s, 0] @ Y[s, 0].T
            one = _msp_free_energy_batch(np.trace(YY), U[:, layer] @ YY @ U[:, layer], n, N)
            np.testing.assert_allclose(Fb[s, layer], one, rtol=1e-12)


# --------------------------------------------------------------- temporal
def test_dct_and_hann():
    T, freqs = dct_basis(31, 600.0, band=(0, np.inf))
    np.testing.assert_allclose(T.T @ T, np.eye(31), atol=1e-12)
    np.testing.assert_allclose(freqs[1], 600 / 62)
    T2, f2 = dct_basis(31, 1200.0, band=(0, 256))
    assert f2.max() <= 256 and T2.shape[1] == int(256 // (1200 / 62)) + 1
    w = hann(5)
    np.testing.assert_allclose(w, 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, 6) / 6)))


def test_temporal_modes_match_svd():
    """Modes = right singular vectors of the (Hann-weighted) DCT-projected
    data; the projection itself is unweighted (SPM's quirk)."""
    rng = np.random.default_rng(0)
    D = rng.normal(size=(3, 2, 10, 21))  # (windows, trials, n, Nb)
    T, _ = dct_basis(21, 250.0)
    w = hann(21)
    Y, S = temporal_modes(D, T, 4, window=w)
    for i in range(3):
        Z = np.concatenate([D[i, k] * w @ T for k in range(2)])
        _, _, vt = np.linalg.svd(Z)
        ref = T @ vt[:4].T
        for j in range(4):  # same subspace, sign free
            assert abs(abs(ref[:, j] @ S[i, :, j]) - 1) < 1e-10
        np.testing.assert_allclose(Y[i], D[i] @ S[i])


# ---------------------------------------------------------------- patches
def _grid_mesh(n=21, step=1.0):
    x, y = np.meshgrid(np.arange(n) * step, np.arange(n) * step, indexing="ij")
    rr = np.c_[x.ravel(), y.ravel(), np.zeros(n * n)]
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    tris = np.concatenate([np.c_[a, b, d], np.c_[a, d, c]])
    return rr, tris


def test_patch_kernel_on_a_grid():
    """Edge-path distances on a triangulated grid: along the axes they are
    exact, so the weights there are the analytic Gaussian (FWHM 5 mm)."""
    rr, tris = _grid_mesh()
    edges = mesh_edges(tris, len(rr))
    assert len(edges) == 3 * 20 * 20 + 2 * 20  # unique edges of the grid
    center = 10 * 21 + 10
    K = patch_kernel(rr, edges, 5.0, [center]).toarray()[0]
    np.testing.assert_allclose(K.sum(), 1.0)
    sigma = 5.0 / 2.355
    on_axis = [center + k for k in range(-5, 6)]
    ref = np.exp(-(np.arange(-5, 6) ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(K[on_axis] / K[center], ref, rtol=1e-12)
    assert K[center + 6] == 0 and K[center - 6 * 21] == 0  # beyond FWHM
    # a dropped vertex gets no weight; the others are renormalised
    keep = np.ones(len(rr), bool)
    keep[center + 1] = False
    K2 = patch_kernel(rr, edges, 5.0, [center], keep=keep).toarray()[0]
    assert K2[center + 1] == 0 and np.isclose(K2.sum(), 1.0)
    np.testing.assert_allclose(K2[center + 2] / K2[center], K[center + 2] / K[center])


def test_layer_patches_equal_patch_kernel():
    """The all-layers local search = the full Dijkstra of each layer."""
    rng = np.random.default_rng(0)
    rr, tris = _grid_mesh(15, 1.3)
    layers = np.stack([rr + [0, 0, z] + rng.normal(scale=0.2, size=rr.shape)
                       for z in (0.0, -1.0, -2.0)])  # fmt: skip
    edges = mesh_edges(tris, len(rr))
    keep = rng.random(len(rr)) > 0.1
    center = 7 * 15 + 7
    keep[center] = True
    lay, vert, wt = layer_patches(layers, edges, 4.0, center, keep=keep)
    for layer in range(3):
        ref = patch_kernel(layers[layer], edges, 4.0, [center], keep=keep).toarray()[0]
        got = np.zeros(len(rr))
        got[vert[lay == layer]] = wt[lay == layer]
        np.testing.assert_allclose(got, ref, atol=1e-14)
    # many centres take the chunked full-graph route: same rows
    many = patch_kernel(layers[0], edges, 4.0, np.arange(40), keep=None).toarray()
    few = np.concatenate([patch_kernel(layers[0], edges, 4.0, [c]).toarray() for c in (3, 17)])
    np.testing.assert_allclose(many[[3, 17]], few, atol=1e-14)


def test_bounded_paths_equal_dijkstra():
    """The vectorised search for many centres = scipy's full Dijkstra."""
    from scipy import sparse
    from scipy.sparse.csgraph import dijkstra

    from mne_laminar_plugin.inverse._patches import geodesic_within

    rng = np.random.default_rng(3)
    rr, tris = _grid_mesh(25, 1.1)
    rr = rr + rng.normal(scale=0.3, size=rr.shape)
    edges = mesh_edges(tris, len(rr))
    w = np.linalg.norm(rr[edges[:, 0]] - rr[edges[:, 1]], axis=1)
    g = sparse.coo_matrix((w, (edges[:, 0], edges[:, 1])), shape=(len(rr),) * 2).tocsr()
    full = dijkstra(g, directed=False)
    centers = rng.choice(len(rr), 200, replace=False)
    r, c, d = geodesic_within(rr, edges, centers, 4.5)
    got = np.full((len(centers), len(rr)), np.inf)
    got[r, c] = d
    ref = np.where(full[centers] <= 4.5, full[centers], np.inf)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
