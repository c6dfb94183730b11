"""ReML hyperparameter fit and negative free energy (SPM's ``spm_reml_sc`` scheme).

Reimplemented from the formulas of ``shared/notes/laminar-inversion.md`` §3.7
(SPM is GPL: no code copied). The model of the (reduced, whitened) data
covariance is

    ``C(h) = V + sum_i exp(h_i) Q_i``,   ``YY = sum_k y_k y_k^T`` over N samples,

with a Gaussian hyperprior ``h ~ N(hE, hC I)`` on the log-scale
hyperparameters, all in the *scaled* space (``YY / s_Y``, ``Q_i / (tr Q_i /
n)``, ``s_Y = tr(YY) / (N n)``). The fit is a Fisher scoring in log space with
SPM's regularised matrix-exponential step (``spm_dx``-like, the step length
``t`` adapted from the predicted gain); the free energy is the Laplace
approximation at the last ``h`` before its final update, in nats, on the
original data scale (``- N n / 2 log s_Y``).

Two implementations of the same iteration:

:func:`reml`
    Dense ``n x n`` matrices: any components (several MSP patches).
:func:`reml_grouped`
    Every matrix diagonal in one common orthonormal basis (``V`` and the
    noise component are multiples of the identity and there is at most one
    other distinct component, or all share an eigenbasis). Diagonal entries
    with the same values are grouped with a multiplicity, so the single-patch
    MSP model (``I`` and ``n u u^T``) is 2 groups (``u`` and its orthogonal
    complement): O(1) per model, batched over any number of models. This is
    the closed form of §3.8; EBB uses it in the eigenbasis of its prior.

A component whose log hyperparameter falls to or below the prior mean ``hE``
leaves the model (automatic relevance determination): it no longer
contributes to ``C``, to the update or to the complexity term of ``F``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: SPM's hyperprior: log-scale mean and variance of every hyperparameter
HE = -4.0
HC = 16.0
#: noise floor of the MSP/EBB models, relative to the mean data variance
V0 = float(np.exp(-5.0))
MAX_ITER = 32
#: stop when the predicted gain of the step falls below this (nats)
TOL = 1e-2
T0 = 4.0
_LOG2PI = float(np.log(2 * np.pi))


@dataclass
class ReMLResult:
    """Outcome of a ReML fit (arrays batched over models when grouped).

    Attributes
    ----------
    free_energy : float | ndarray
        Negative free energy (nats), original data scale.
    h : ndarray, shape (..., m)
        Log hyperparameters (scaled space) at which ``free_energy`` was
        evaluated.
    active : ndarray of bool, shape (..., m)
        Components still in the model.
    n_iter : int | ndarray
        Iterations used.
    scale : float | ndarray
        ``s_Y``, the data scale.
    """

    free_energy: np.ndarray
    h: np.ndarray
    active: np.ndarray
    n_iter: np.ndarray
    scale: np.ndarray


def _step(Ht, gt, t, active):
    """SPM's regularised step ``H^-1 (expm(tau H) - I) g``, tau from ``t``.

    ``Ht`` (..., m, m) is negative definite (inactive rows/columns are -I and
    their ``gt`` is 0). Returns ``dh`` (..., m) and ``log|Ht|`` (active block).
    """
    lam, vec = np.linalg.eigh(Ht)
    logdet = np.log(np.abs(lam)).sum(-1)  # inactive block contributes log 1 = 0
    m_act = np.maximum(active.sum(-1), 1)
    tau = np.exp(t - logdet / m_act)
    f = np.expm1(tau[..., None] * lam) / lam
    coef = np.einsum("...ji,...j->...i", vec, gt)
    dh = np.einsum("...ij,...j->...i", vec, f * coef)
    return np.where(active, dh, 0.0), logdet


def _prior_terms(h, active, hE, hC):
    e = np.where(active, h - hE, 0.0)
    return e, e / hC


def _masked_curvature(H, active, hC):
    m = H.shape[-1]
    both = active[..., :, None] & active[..., None, :]
    Ht = np.where(both, H - np.eye(m) / hC, 0.0)
    return Ht - np.eye(m) * (~active)[..., None, :]  # -1 on inactive diagonals


def reml_grouped(yy, q, mult, n_samples, *, v=None, hE=HE, hC=HC, max_iter=MAX_ITER):
    """ReML and free energy for models diagonal in a common basis (batched).

    Parameters
    ----------
    yy : array, shape (..., G)
        Per group, the sum of the diagonal entries of ``YY`` in the common
        basis (``sum_k ||E_g^T y_k||^2``); ``yy.sum(-1) = tr(YY)``.
    q : array, shape (..., m, G)
        Per component and group, the (common) diagonal value of ``Q_i``.
    mult : array, shape (..., G)
        Multiplicity (number of basis vectors) of each group; ``n = mult.sum()``.
    n_samples : int | array, shape (...)
        N, the number of samples summed in ``YY``.
    v : array, shape (..., G) | None
        Diagonal of ``V`` in data units. None: SPM's floor
        ``exp(-5) tr(YY) / (N n)`` times the identity.
    hE, hC : float
        Hyperprior mean and variance.
    max_iter : int
        Iterations (SPM: 32).

    Returns
    -------
    result : ReMLResult
        Batched over the leading dimensions.
    """
    yy = np.asarray(yy, float)
    q = np.asarray(q, float)
    mult = np.asarray(mult, float)
    batch = np.broadcast_shapes(yy.shape[:-1], q.shape[:-2], mult.shape[:-1],
                                np.shape(n_samples))  # fmt: skip
    G, m = yy.shape[-1], q.shape[-2]
    yy = np.broadcast_to(yy, batch + (G,))
    q = np.broadcast_to(q, batch + (m, G))
    mult = np.broadcast_to(mult, batch + (G,))
    N = np.broadcast_to(np.asarray(n_samples, float), batch)
    n = mult.sum(-1)
    trYY = yy.sum(-1)
    sY = trYY / (N * n)
    yyh = yy / sY[..., None]
    vh = np.full(batch + (G,), V0) if v is None else np.asarray(v, float) / sY[..., None]
    trQ = (mult[..., None, :] * q).sum(-1)
    qh = q / (trQ / n[..., None])[..., None]
    h = np.zeros(batch + (m,))
    active = np.ones(batch + (m,), bool)
    t = np.full(batch, T0)
    dF = np.full(batch, np.inf)
    done = np.zeros(batch, bool)
    n_iter = np.zeros(batch, int)
    # state at which F is evaluated (pre-update h of the last iteration)
    keep = dict(c=None, h=h.copy(), active=active.copy(), Ht=None)
    Nh = N[..., None]
    for it in range(max_iter):
        eh = np.where(active, np.exp(h), 0.0)
        c = vh + np.einsum("...i,...ig->...g", eh, qh)
        ic = 1.0 / c
        ic2 = ic * ic
        trPQ = np.einsum("...g,...ig->...i", mult * ic, qh)
        trPQPY = np.einsum("...g,...ig->...i", yyh * ic2, qh)
        g = 0.5 * trPQPY - 0.5 * Nh * trPQ
        H = -0.5 * N[..., None, None] * np.einsum("...g,...ig,...jg->...ij", mult * ic2, qh, qh)
        e, pe = _prior_terms(h, active, hE, hC)
        gt = np.where(active, g * eh - pe, 0.0)
        Ht = _masked_curvature(H * eh[..., :, None] * eh[..., None, :], active, hC)
        upd = ~done
        if keep["c"] is None:
            keep["c"], keep["Ht"] = c.copy(), Ht.copy()
        else:
            keep["c"][upd] = c[upd]
            keep["Ht"][upd] = Ht[upd]
        keep["h"][upd] = h[upd]
        keep["active"][upd] = active[upd]
        n_iter[upd] = it + 1
        dh, _ = _step(Ht, gt, t, active)
        pF = (gt * dh).sum(-1)
        h = np.where(upd[..., None], h + dh, h)
        t = np.where(upd, np.where(pF > dF, t - 1.0, t + 0.125), t)
        dF = np.where(upd, pF, dF)
        active = np.where(upd[..., None], active & (h > hE), active)
        done |= upd & (pF < TOL)
        if done.all():
            break
    c, hk, act, Ht = keep["c"], keep["h"], keep["active"], keep["Ht"]
    e, _ = _prior_terms(hk, act, hE, hC)
    _, logdet_negH = np.linalg.slogdet(-Ht)
    F = (
        -0.5 * (yyh / c).sum(-1)
        - 0.5 * N * (mult * np.log(c)).sum(-1)
        - 0.5 * N * n * _LOG2PI
        - 0.5 * (e * e).sum(-1) / hC
        - 0.5 * (logdet_negH + act.sum(-1) * np.log(hC))
        - 0.5 * N * n * np.log(sY)
    )
    return ReMLResult(free_energy=F, h=hk, active=act, n_iter=n_iter, scale=sY)


def reml(YY, Q, n_samples, *, V=None, hE=HE, hC=HC, max_iter=MAX_ITER):
    """ReML and free energy with dense ``n x n`` components (``spm_reml_sc``-like).

    Parameters
    ----------
    YY : array, shape (n, n)
        ``sum_k y_k y_k^T`` over ``n_samples`` samples.
    Q : list of array, shape (n, n)
        Covariance components (symmetric, non-negative).
    n_samples : int
        N.
    V : array, shape (n, n) | None
        Fixed covariance. None: ``exp(-5) tr(YY) / (N n) I``.
    hE, hC : float
        Hyperprior mean and variance.
    max_iter : int
        Iterations.

    Returns
    -------
    result : ReMLResult
    """
    YY = np.asarray(YY, float)
    n = YY.shape[0]
    N = float(n_samples)
    m = len(Q)
    sY = np.trace(YY) / (N * n)
    Yh = YY / sY
    Vh = V0 * np.eye(n) if V is None else np.asarray(V, float) / sY
    Qh = np.stack([np.asarray(Qi, float) / (np.trace(Qi) / n) for Qi in Q])
    h = np.zeros(m)
    active = np.ones(m, bool)
    t, dF = T0, np.inf
    keep = None
    for it in range(max_iter):
        eh = np.where(active, np.exp(h), 0.0)
        C = Vh + np.einsum("i,ijk->jk", eh, Qh)
        P = np.linalg.inv(C)
        P = 0.5 * (P + P.T)
        PQ = P @ Qh  # (m, n, n)
        PY = P @ Yh
        g = 0.5 * np.einsum("ijk,kj->i", PQ, PY) - 0.5 * N * np.einsum("ijj->i", PQ)
        H = -0.5 * N * np.einsum("ijk,lkj->il", PQ, PQ)
        e, pe = _prior_terms(h, active, hE, hC)
        gt = np.where(active, g * eh - pe, 0.0)
        Ht = _masked_curvature(H * np.outer(eh, eh), active, hC)
        keep = (C, P, h.copy(), active.copy(), Ht, it + 1)
        dh, _ = _step(Ht, gt, np.asarray(t), active)
        pF = float(gt @ dh)
        h = h + dh
        t = t - 1.0 if pF > dF else t + 0.125
        dF = pF
        active = active & (h > hE)
        if pF < TOL:
            break
    C, P, hk, act, Ht, n_iter = keep
    e, _ = _prior_terms(hk, act, hE, hC)
    _, logdet_C = np.linalg.slogdet(C)
    _, logdet_negH = np.linalg.slogdet(-Ht)
    F = (
        -0.5 * np.sum(P * Yh)
        - 0.5 * N * logdet_C
        - 0.5 * N * n * _LOG2PI
        - 0.5 * float(e @ e) / hC
        - 0.5 * (logdet_negH + act.sum() * np.log(hC))
        - 0.5 * N * n * np.log(sY)
    )
    return ReMLResult(free_energy=float(F), h=hk, active=act, n_iter=n_iter, scale=float(sY))


def reml_msp(yy_u, yy_perp, n, n_samples, *, hE=HE, hC=HC, max_iter=MAX_ITER):
    """:func:`reml_grouped` for the single-patch MSP model, specialised (batched).

    The model is ``C = V0 I + e^h0 I + (e^h1 + e^h2) n u u^T`` (scaled), i.e.
    :func:`reml_grouped` with ``q = [[1, 1], [n, 0], [n, 0]]`` and ``mult =
    [1, n - 1]``. Its two patch components are identical and start equal, so
    ``h1 = h2`` along the whole iteration; in the basis ``{e0, (e1 + e2) /
    sqrt 2, (e1 - e2) / sqrt 2}`` the curvature is a 2 x 2 block plus the
    eigenvalue ``-1 / hC``, whose function is computed in closed form. The
    same iteration as :func:`reml_grouped`, several times faster for many
    models (no batched eigendecomposition).

    Parameters
    ----------
    yy_u, yy_perp : array, shape (...)
        ``u^T YY u`` and ``tr(YY) - u^T YY u``.
    n : int
        Dimension of the data.
    n_samples : int | array
        N.

    Returns
    -------
    F : array, shape (...)
        Free energy (nats); see :func:`reml_grouped`.
    h : array, shape (..., 2)
        ``h0`` (noise) and ``h1 = h2`` (each patch component).
    active : array of bool, shape (..., 2)
    """
    yy_u, yy_perp, N = np.broadcast_arrays(
        np.asarray(yy_u, float), np.asarray(yy_perp, float), np.asarray(n_samples, float)
    )
    out_shape = yy_u.shape
    yy_u, yy_perp, N = (x.reshape(-1) for x in (yy_u, yy_perp, N))
    n = float(n)
    sY = (yy_u + yy_perp) / (N * n)
    yu, yp = yy_u / sY, yy_perp / sY
    Pi = 1.0 / hC
    shape = yu.shape
    h0, h1 = np.zeros(shape), np.zeros(shape)
    a0, a1 = np.ones(shape, bool), np.ones(shape, bool)
    t = np.full(shape, T0)
    dF = np.full(shape, np.inf)
    done = np.zeros(shape, bool)
    keep = None
    r2 = np.sqrt(2.0)
    for _ in range(max_iter):
        e0 = np.where(a0, np.exp(h0), 0.0)
        e1 = np.where(a1, np.exp(h1), 0.0)
        cp = V0 + e0
        cu = cp + 2 * n * e1
        icu2, icp2 = 1.0 / cu**2, 1.0 / cp**2
        g0 = 0.5 * (yu * icu2 + yp * icp2) - 0.5 * N * (1.0 / cu + (n - 1) / cp)
        g1 = 0.5 * n * yu * icu2 - 0.5 * N * n / cu
        H00 = -0.5 * N * (icu2 + (n - 1) * icp2)
        H01 = -0.5 * N * n * icu2
        H11 = -0.5 * N * n * n * icu2
        gt0 = np.where(a0, g0 * e0 - (h0 - hE) * Pi, 0.0)
        gt1 = np.where(a1, g1 * e1 - (h1 - hE) * Pi, 0.0)
        # symmetric 2 x 2 block [[a, b], [b, d]] (inactive: -1, decoupled)
        both = a0 & a1
        a = np.where(a0, H00 * e0 * e0 - Pi, -1.0)
        b = np.where(both, r2 * H01 * e0 * e1, 0.0)
        d = np.where(a1, 2 * H11 * e1 * e1 - Pi, -1.0)
        gam0, gam1 = gt0, r2 * gt1
        theta = 0.5 * np.arctan2(2 * b, a - d)
        cs, sn = np.cos(theta), np.sin(theta)
        lam1 = a * cs * cs + 2 * b * sn * cs + d * sn * sn
        lam2 = a * sn * sn - 2 * b * sn * cs + d * cs * cs
        m_act = a0 + 2 * a1
        logdet = np.log(np.abs(lam1)) + np.log(np.abs(lam2)) + np.where(a1, np.log(Pi), 0.0)
        tau = np.exp(t - logdet / np.maximum(m_act, 1))
        f1 = np.expm1(tau * lam1) / lam1
        f2 = np.expm1(tau * lam2) / lam2
        p1 = cs * gam0 + sn * gam1
        p2 = -sn * gam0 + cs * gam1
        d0 = f1 * p1 * cs - f2 * p2 * sn
        ds = f1 * p1 * sn + f2 * p2 * cs
        dh0 = np.where(a0, d0, 0.0)
        dh1 = np.where(a1, ds / r2, 0.0)
        pF = gam0 * d0 * a0 + gam1 * ds * a1
        upd = ~done
        state = (cu, cp, h0, h1, a0, a1, lam1 * lam2)
        if keep is None:
            keep = [s.copy() for s in state]
        else:
            for k_, s in zip(keep, state):
                k_[upd] = s[upd]
        h0 = np.where(upd, h0 + dh0, h0)
        h1 = np.where(upd, h1 + dh1, h1)
        t = np.where(upd, np.where(pF > dF, t - 1.0, t + 0.125), t)
        dF = np.where(upd, pF, dF)
        a0 = np.where(upd, a0 & (h0 > hE), a0)
        a1 = np.where(upd, a1 & (h1 > hE), a1)
        done |= upd & (pF < TOL)
        if done.all():
            break
    cu, cp, h0, h1, a0, a1, det = keep
    e2 = np.where(a0, (h0 - hE) ** 2, 0.0) + np.where(a1, 2 * (h1 - hE) ** 2, 0.0)
    # log|-H~| of the active block: the 2 x 2 part (inactive: |-(-1)| = 1) and,
    # with the patches, the antisymmetric eigenvalue 1 / hC
    logdet_negH = np.log(np.abs(det)) + np.where(a1, np.log(Pi), 0.0)
    m_act = a0 + 2 * a1
    F = (
        -0.5 * (yu / cu + yp / cp)
        - 0.5 * N * (np.log(cu) + (n - 1) * np.log(cp))
        - 0.5 * N * n * _LOG2PI
        - 0.5 * e2 * Pi
        - 0.5 * (logdet_negH + m_act * np.log(hC))
        - 0.5 * N * n * np.log(sY)
    )
    return (
        F.reshape(out_shape),
        np.stack([h0, h1], -1).reshape(out_shape + (2,)),
        np.stack([a0, a1], -1).reshape(out_shape + (2,)),
    )
