"""Batched kernel of the accuracy simulation: noise statistics and free energies.

For one column the simulated whitened data of trial ``k`` in the window are
``D_k = s g^T + sigma E_k`` (``s``: whitened topography of the patch on the
true layer, ``g``: the time course in the window, ``E_k``: i.i.d. standard
normal, n x Nb). Everything the MSP layer models use is a function of the
data in the full DCT basis of the window, ``Z_k = D_k T_full`` (n x Nb,
``T_full`` orthonormal, so ``E_k T_full`` is again i.i.d.):

* the Hann-weighted Gram matrix that selects the temporal modes,
  ``H^T (sum_k Z_k^T Z_k) H`` with ``H = T_full^T diag(hann) T``;
* ``tau = tr(V^T (sum_k Z_k^T Z_k)_band V)`` and, for each layer model,
  ``rho_l = sum_k ||u_l^T Z_k[:, band] V||^2`` (``_msp_free_energy_batch``).

Let ``Q`` (n x d) be an orthonormal basis of the span of the model
topographies ``u_l`` and the simulated topographies ``s`` (d = n_layers
without co-registration error, where ``s`` is proportional to one of the
``u_l``). Then ``Z_k = Q (a g^T + P_k) + (I - Q Q^T) E_k T_full`` with
``a = Q^T s``, ``P_k = Q^T E_k T_full`` (d x Nb, i.i.d. standard normal) and
the Gram matrix of the second term, summed over trials, a Wishart matrix
with ``K (n - d)`` degrees of freedom independent of ``P`` -- so the exact
distribution of the data the models see is drawn from d x Nb normals per
trial plus one Nb x Nb Wishart sample (Bartlett decomposition), instead of
the n x Nb normals of the data: about 10x fewer random numbers at n = 306.
"""

from __future__ import annotations

import numpy as np

from ..inverse._compare import _msp_free_energy_batch


def column_bases(U, S):
    """Orthonormal basis of the model and signal topographies of each column.

    Parameters
    ----------
    U : array, shape (C, n, L)
        Unit whitened topography of every layer model of each column.
    S : array, shape (C, n, Ls) | None
        Whitened topographies of the simulated patches; None when each is
        proportional to a model topography (``S[..., j] ∝ U[..., true[j]]``).

    Returns
    -------
    Q : array, shape (C, n, d)
    """
    M = U if S is None else np.concatenate([U, S], axis=-1)
    Q, _ = np.linalg.qr(M)
    return Q


def draw_noise(rng, shape, n_trials, d, nb, dof):
    """Sufficient statistics of i.i.d. standard normal noise, exactly.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple
        Batch shape (columns, true layers).
    n_trials : int
    d, nb : int
        Dimension of the basis ``Q`` and samples of the window.
    dof : int
        ``n_trials * (n - d)``: degrees of freedom of the Wishart part.

    Returns
    -------
    P : array, shape (*shape, n_trials, d, nb)
        Noise in the basis ``Q``.
    W : array, shape (*shape, nb, nb)
        Gram matrix of the noise outside ``Q``, summed over trials
        (Wishart(dof, I)).
    """
    P = rng.standard_normal((*shape, n_trials, d, nb))
    if dof >= nb:  # Bartlett: W = A A^T, A lower triangular
        A = np.zeros((*shape, nb, nb))
        il = np.tril_indices(nb, -1)
        A[..., il[0], il[1]] = rng.standard_normal((*shape, len(il[0])))
        diag = np.sqrt(rng.chisquare(dof - np.arange(nb), size=(*shape, nb)))
        A[..., np.arange(nb), np.arange(nb)] = diag
    else:  # fewer dimensions than samples: the noise itself
        A = np.swapaxes(rng.standard_normal((*shape, dof, nb)), -1, -2)
    return P, A @ np.swapaxes(A, -1, -2)


def noise_stats(E, Q, T_full):
    """The statistics of :func:`draw_noise` from an explicit noise array.

    Parameters
    ----------
    E : array, shape (C, Ls, K, n, nb)
        Whitened noise in the window (time domain), unit variance.
    Q : array, shape (C, n, d)
    T_full : array, shape (nb, nb)

    Returns
    -------
    P, W : see :func:`draw_noise`.
    """
    Z = E @ T_full
    P = np.einsum("cnd,clknt->clkdt", Q, Z)
    R = Z - np.einsum("cnd,clkdt->clknt", Q, P)
    W = np.einsum("clknt,clkns->clts", R, R)
    return P, W


def layer_free_energy(b, a, ghat, alpha, P, W, H, band, n_modes, n, n_trials):
    """Free energy of every layer model for every simulation, batched.

    Parameters
    ----------
    b : array, shape (C, d, L)
        ``Q^T u_l``: the unit model topographies in the basis.
    a : array, shape (C, d, Ls)
        ``Q^T s``: the simulated topographies in the basis (whitened data
        units per unit of the time course).
    ghat : array, shape (nb,)
        The time course in the window, in the full DCT basis (``g T_full``).
    alpha : array, shape (C, Ls)
        ``1 / sigma``: the signal amplitude relative to the noise std.
    P, W : arrays
        Noise statistics (:func:`draw_noise`), unit variance.
    H : array, shape (nb, n_band)
        ``T_full^T diag(hann) T_band``: selects the temporal modes.
    band : array of int, shape (n_band,)
        Columns of ``T_full`` in the frequency band (``T_band``).
    n_modes : int
        Temporal modes kept.
    n, n_trials : int
        Dimension of the whitened data; trials.

    Returns
    -------
    F : array, shape (C, L, Ls)
        Negative free energy (nats) of layer model ``l`` on the simulation of
        true layer ``j``, for the data divided by the noise std ``sigma``
        (add ``-N n log(sigma)`` for the data scale).
    """
    sig = alpha[..., None] * np.swapaxes(a, 1, 2)  # (C, Ls, d)
    R = P + sig[:, :, None, :, None] * ghat  # (C, Ls, K, d, nb)
    G = np.einsum("clkdt,clkds->clts", R, R) + W  # (C, Ls, nb, nb)
    _, vec = np.linalg.eigh(H.T @ G @ H)
    V = vec[..., ::-1][..., :n_modes]  # top modes (C, Ls, n_band, r)
    Gb = G[..., band[:, None], band]
    tau = np.einsum("clir,clir->cl", Gb @ V, V)  # tr(V^T G_band V)
    X = np.einsum("cdm,clkdt->clkmt", b, R)[..., band] @ V[:, :, None]  # (C, Ls, K, L, r)
    rho = np.einsum("clkmr,clkmr->clm", X, X)
    F = _msp_free_energy_batch(tau[..., None], rho, n, n_modes * n_trials)
    return np.swapaxes(F, 1, 2)
