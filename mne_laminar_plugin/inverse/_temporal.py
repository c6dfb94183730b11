"""Temporal reduction: DCT basis on the window, Hann for mode selection, SVD.

Notes §3.3: ``T`` is the orthonormal DCT-II basis of the ``Nb`` samples of
the window restricted to the frequency band; the Hann window
``w_i = 0.5 (1 - cos(2 pi i / (Nb + 1)))``, i = 1..Nb, weights the data only
to *select* the modes (the top ``Nr`` right singular vectors ``V`` of
``mean_k (A D_k W_h T)``'s Gram matrix); the data are projected without it:
``Y_k = A D_k T V``. Everything is batched over windows.
"""

from __future__ import annotations

import numpy as np


def dct_basis(n_samples, sfreq, band=(0.0, 256.0)):
    """Orthonormal DCT-II basis restricted to a frequency band.

    Column ``k`` is ``cos(pi k (i + 1/2) / Nb)`` (normalised), of frequency
    ``k sfreq / (2 Nb)`` Hz.

    Returns
    -------
    T : array, shape (n_samples, n_kept)
    freqs : array, shape (n_kept,)
    """
    nb = int(n_samples)
    k = np.arange(nb)
    i = np.arange(nb)[:, None]
    T = np.cos(np.pi * k * (i + 0.5) / nb) * np.sqrt(2.0 / nb)
    T[:, 0] = 1.0 / np.sqrt(nb)
    freqs = k * sfreq / (2.0 * nb)
    keep = (freqs >= band[0]) & (freqs <= band[1])
    return T[:, keep], freqs[keep]


def hann(n_samples):
    """SPM's Hann window ``0.5 (1 - cos(2 pi i / (Nb + 1)))``, i = 1..Nb."""
    i = np.arange(1, int(n_samples) + 1)
    return 0.5 * (1.0 - np.cos(2 * np.pi * i / (n_samples + 1)))


def temporal_modes(D, T, n_modes, *, window=None):
    """Reduced data ``Y = D T V`` with the top modes ``V``, batched over windows.

    Parameters
    ----------
    D : array, shape (..., n_trials, n, Nb)
        Whitened, spatially projected data of each window and trial.
    T : array, shape (Nb, n_basis)
        Temporal basis (:func:`dct_basis`).
    n_modes : int
        Modes kept (Nr).
    window : array, shape (Nb,) | None
        Selection window (Hann) or None.

    Returns
    -------
    Y : array, shape (..., n_trials, n, n_modes)
    S : array, shape (..., Nb, n_modes)
        The temporal projector ``T V`` of each window.
    """
    TW = T if window is None else window[:, None] * T
    Z = D @ TW  # (..., K, n, nb)
    gram = np.einsum("...kci,...kcj->...ij", Z, Z) / D.shape[-3]
    _, vec = np.linalg.eigh(gram)
    V = vec[..., ::-1][..., :n_modes]  # top modes, descending
    S = T @ V
    Y = D @ S[..., None, :, :]
    return Y, S
