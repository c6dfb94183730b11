"""The reference gain: MNE's own forward on the same sources (the engine's oracle)."""

from __future__ import annotations

import numpy as np
from mne.utils import (
    _check_option,
    verbose,
)

from ._engine_setup import _check_sources


@verbose
def compute_gain_mne(
    info,
    trans,
    bem,
    rr_mri,
    nn_mri=None,
    *,
    meg=True,
    eeg=True,
    n_jobs=None,
    dtype=np.float64,
    chunk_size=None,
    parallel=None,
    verbose=None,
):
    """Compute the same gain matrix with :func:`mne.make_forward_solution`.

    The oracle for :func:`compute_gain` (same signature; ``chunk_size`` and
    ``parallel`` are ignored). A discrete source space is built at ``rr_mri``
    and MNE computes the free-orientation forward (``mindist=0``); a fixed
    orientation is then ``sum_k G[:, 3 i + k] nn_head[i, k]`` in float64 (what
    :func:`mne.convert_forward_solution` with ``force_fixed=True`` computes, but
    without its float32 cast).

    Parameters
    ----------
    info, trans, bem, rr_mri, nn_mri, meg, eeg, n_jobs, dtype, chunk_size, parallel
        See :func:`compute_gain`.
    %(verbose)s

    Returns
    -------
    gain : ndarray, shape (n_channels, n_sources) or (n_channels, 3 * n_sources)
        The gain matrix; raises if MNE drops any source (outside the inner
        skull), since the columns would no longer match ``rr_mri``.
    """
    import mne

    dtype = np.dtype(dtype)
    _check_option("dtype", dtype.name, ("float64", "float32"))
    rr, nn = _check_sources(rr_mri, nn_mri)
    pos_nn = nn if nn is not None else np.tile([0.0, 0.0, 1.0], (len(rr), 1))
    src = mne.setup_volume_source_space(
        subject=None, pos=dict(rr=rr, nn=pos_nn), mri=None, verbose=False
    )
    fwd = mne.make_forward_solution(
        info, trans, src, bem, meg=meg, eeg=eeg, mindist=0.0, n_jobs=n_jobs
    )
    if fwd["nsource"] != len(rr):
        kept = fwd["src"][0]["vertno"]
        lost = np.setdiff1d(np.arange(len(rr)), kept)
        raise RuntimeError(
            f"mne.make_forward_solution dropped {len(lost)} of {len(rr)} sources "
            f"(outside the inner skull; first index {lost[0]}); drop them from "
            "rr_mri first (see check_inside)."
        )
    gain = fwd["sol"]["data"]
    if nn is not None:
        nn_head = fwd["src"][0]["nn"]
        n_ch = gain.shape[0]
        gain = np.einsum("cik,ik->ci", gain.reshape(n_ch, len(rr), 3), nn_head)
        gain = np.asfortranarray(gain)
    return gain.astype(dtype, copy=False)
