"""Whole-brain laminar accuracy simulation (Szul et al. 2025's protocol).

For every column and every true layer: a Gaussian patch (geodesic FWHM on
the true layer) at the column with a Gaussian time course, white noise at
SPM's SNR, then laMEG's per-layer MSP model comparison with the prior at the
column (one model per layer, the same data, the same projection), peak =
argmax F. The models and the ReML/free-energy core are those of
:func:`~mne_laminar_plugin.compare_layers` (``inverse._compare``), batched
over columns and simulations (``_kernel``), chunked over columns through
joblib's active backend.
"""

from __future__ import annotations

import contextlib

import numpy as np
from mne.utils import ProgressBar, _check_option, _validate_type, logger, verbose

from ..inverse._compare import (
    DEFAULT_BAND,
    _blas_limit,
    _check_fixed,
    _check_surfaces,
    _match_channels,
    _patch_topographies,
    _resolve_woi,
    _whitener,
)
from ..inverse._temporal import dct_basis, hann as hann_window
from ._accuracy import LaminarAccuracy
from ._kernel import column_bases, draw_noise, layer_free_energy, noise_stats

METHODS = ("msp",)
#: the paper's epoch: 600 Hz, -1 to 1 s, Gaussian time course (sigma 0.4 s, x10)
SFREQ = 600.0
TMIN, TMAX = -1.0, 1.0
WAVE_SIGMA_S = 0.4
WAVE_SCALE = 10.0
#: dipole moment of the patch (nA·m), spread over the patch weights (sum 1)
DIPOLE_NAM = 10.0
#: the paper's window of interest (s)
DEFAULT_WOI = (-0.025, 0.025)
#: columns per chunk: fixed, so that the random streams (one per chunk) and
#: the results do not depend on n_jobs
CHUNK_COLUMNS = 128


def _time_course():
    """Times (s) and the paper's Gaussian time course on the simulated epoch."""
    n = int(round((TMAX - TMIN) * SFREQ)) + 1
    times = TMIN + np.arange(n) / SFREQ
    return times, WAVE_SCALE * np.exp(-(times**2) / (2 * WAVE_SIGMA_S**2))


def _as_snr(snr_db):
    snr = np.atleast_1d(np.asarray(snr_db, dtype=float)) if not isinstance(snr_db, str) else None
    if snr is None or snr.ndim != 1 or snr.size == 0 or not np.isfinite(snr).all():
        raise ValueError(
            f"snr_db must be a finite number of dB or a list of them (an SNR sweep), got "
            f"{snr_db!r}; use e.g. -100 for (nearly) pure noise"
        )
    return snr


def _check_int(value, name, low):
    _validate_type(value, "int", name)
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _seed_entropy(random_state):
    """An int entropy for the chunk seeds (drawn when None or a Generator)."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31))
    _validate_type(random_state, "int", "random_state", "None, int or Generator")
    return int(random_state)


def _symmetric_whitener_basis(W):
    """Map from the whitener's components to whitened channels (polar factor).

    ``W = U S V^T`` (rank x channels); the symmetric whitener is ``V S V^T =
    (V U^T) W``: for a diagonal noise covariance, each channel divided by its
    noise std. SPM's SNR is defined per channel on these whitened channels.
    """
    U, _, Vt = np.linalg.svd(W, full_matrices=False)
    return Vt.T @ U.T


def _perturbed_trans(mri_head_t, error_mm, rng):
    """The MRI <-> head transform shifted by ``error_mm`` in a random direction."""
    import mne

    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    trans = mne.transforms._ensure_trans(mri_head_t, "mri", "head")
    mat = np.array(trans["trans"], float)
    mat[:3, 3] += direction * error_mm * 1e-3
    return mne.transforms.Transform("mri", "head", mat), direction


def _inversion_leadfield(leadfield, surfaces, inversion_leadfield, coreg_error_mm, bem, rng):
    """The leadfield of the layer models (recomputed when co-registration is off)."""
    from ..leadfield import from_laminar_forward

    if inversion_leadfield is not None:
        inv = _check_fixed(inversion_leadfield)
        if list(inv.ch_names) != list(leadfield.ch_names):
            raise ValueError(
                "inversion_leadfield must have the channels of leadfield, in the same order"
            )
        if inv.n_columns != leadfield.n_columns or inv.n_layers != leadfield.n_layers:
            raise ValueError(
                f"inversion_leadfield has {inv.n_layers} layers x {inv.n_columns} columns, "
                f"leadfield {leadfield.n_layers} x {leadfield.n_columns}: both must be "
                "computed on the same laminar surfaces"
            )
        return inv, dict(inversion_leadfield="given")
    if coreg_error_mm == 0:
        return leadfield, dict(inversion_leadfield="same as simulation")
    from ..forward import compute_laminar_forward

    prov = leadfield.provenance or {}
    if bem is None:
        from pathlib import Path

        described = prov.get("bem")
        if isinstance(described, str) and Path(described).is_file():
            bem = described
    if bem is None or leadfield.info is None or leadfield.mri_head_t is None:
        missing = [what for what, v in (("bem=", bem), ("LeadfieldData.info", leadfield.info),
                                        ("LeadfieldData.mri_head_t", leadfield.mri_head_t))
                   if v is None]  # fmt: skip
        raise ValueError(
            f"coreg_error_mm={coreg_error_mm} recomputes the inversion leadfield on the "
            f"perturbed head<->MRI transform, which needs {', '.join(missing)}: pass bem= "
            "(the BEM solution the leadfield was computed with) with a leadfield that "
            "carries its info and transform (the laminar/leadfield step's .h5 does), or "
            "pass inversion_leadfield= computed yourself"
        )
    trans, direction = _perturbed_trans(leadfield.mri_head_t, coreg_error_mm, rng)
    types = set(leadfield.ch_types)
    logger.info(f"    Inversion leadfield on the head<->MRI transform shifted by "
                f"{coreg_error_mm} mm (fast engine)")  # fmt: skip
    fwd = compute_laminar_forward(
        surfaces, leadfield.info, trans, bem, mindist=float(prov.get("mindist_mm", 5.0)),
        engine="fast", meg=bool(types & {"mag", "grad"}), eeg="eeg" in types,
        subject=prov.get("fs_subject"), verbose="error",
    )  # fmt: skip
    inv = from_laminar_forward(fwd, subject=prov.get("fs_subject"))
    if list(inv.ch_names) != list(leadfield.ch_names):
        raise RuntimeError("the recomputed inversion leadfield lost channels of leadfield")
    return inv, dict(inversion_leadfield="recomputed (fast engine)",
                     coreg_shift_direction_head=[round(float(x), 6) for x in direction])  # fmt: skip


def _resolve_columns(columns, kept):
    if isinstance(columns, str):
        _check_option("columns", columns, ("all",))
        return np.asarray(kept, np.int64)
    cols = np.atleast_1d(np.asarray(columns))
    if cols.ndim != 1 or cols.size == 0 or not np.issubdtype(cols.dtype, np.integer):
        raise ValueError(f'columns must be "all" or a list of column indices, got {columns!r}')
    if len(np.unique(cols)) != len(cols):
        raise ValueError("columns lists a column twice")
    bad = cols[~np.isin(cols, kept)]
    if bad.size:
        raise ValueError(
            f"columns {bad[:10].tolist()} are not columns with sources in the leadfield(s) "
            f"(unknown or dropped); valid columns are LeadfieldData.columns "
            f"({len(kept)} columns)"
        )
    return cols.astype(np.int64)


def _resolve_layers(true_layers, n_layers):
    if isinstance(true_layers, str):
        _check_option("true_layers", true_layers, ("all",))
        return np.arange(n_layers)
    lay = np.atleast_1d(np.asarray(true_layers))
    if lay.ndim != 1 or lay.size == 0 or not np.issubdtype(lay.dtype, np.integer):
        raise ValueError(f'true_layers must be "all" or a list of layer indices, got {true_layers!r}')
    if len(np.unique(lay)) != len(lay) or lay.min() < 0 or lay.max() >= n_layers:
        raise ValueError(
            f"true_layers must be distinct layers in 0..{n_layers - 1} (0 = pial), got "
            f"{lay.tolist()}"
        )
    return lay.astype(np.int64)


def _topographies(lf, rows, W, surfaces, surf_layers, cols, fwhm):
    """Whitened field of a 10 nA·m patch at each column on every layer.

    Returns an array (n_cols, n, n_layers).
    """
    topo = _patch_topographies(lf, surfaces, W, rows, cols, fwhm, normalize=False,
                               surface_layers=surf_layers)  # fmt: skip
    # C order: the chunks must see the same memory layout in every process
    # (pickled or memory-mapped by joblib), else BLAS rounding differs
    return np.ascontiguousarray(np.moveaxis(topo, 0, -1)) * (DIPOLE_NAM * 1e-9)


def _run_chunk(seed, U_inv, S_sim, same, sigma0, snr, K, n, T_full, H, band, ghat,
               n_modes, noise=None, *, limit_blas=True):  # fmt: skip
    """F (n_snr, C, L, Ls) of one chunk of columns.

    ``limit_blas=False`` when the caller holds the BLAS limit already (threads
    of one process: threadpoolctl's limits are per process).
    """
    U_inv, S_sim, sigma0 = (np.ascontiguousarray(x) for x in (U_inv, S_sim, sigma0))
    with _blas_limit() if limit_blas else contextlib.nullcontext():
        U = U_inv / np.linalg.norm(U_inv, axis=1, keepdims=True)
        Q = column_bases(U, None if same else S_sim)
        d = Q.shape[-1]
        if d >= n:
            raise ValueError(
                f"the whitened data have {n} dimensions, too few for {d} layer and "
                "simulated topographies per column"
            )
        b = np.einsum("cnd,cnl->cdl", Q, U)
        a = np.einsum("cnd,cnl->cdl", Q, S_sim)
        nb = T_full.shape[0]
        if noise is None:
            rng = np.random.default_rng(seed)
            P, Wn = draw_noise(rng, S_sim.shape[::2], K, d, nb, K * (n - d))
        else:
            P, Wn = noise_stats(noise, Q, T_full)
        N = n_modes * K
        out = np.empty((len(snr), U.shape[0], U.shape[2], S_sim.shape[2]))
        for i, s in enumerate(snr):
            sigma = sigma0 * 10.0 ** (-s / 20.0)  # (C, Ls)
            F = layer_free_energy(b, a, ghat, 1.0 / sigma, P, Wn, H, band, n_modes, n, K)
            out[i] = F - (N * n * np.log(sigma))[:, None, :]
        return out


@verbose
def simulate_laminar_accuracy(
    leadfield,
    surfaces,
    *,
    noise_cov=None,
    snr_db=-20.0,
    n_trials=1,
    woi=None,
    patch_fwhm=5.0,
    n_temporal_modes=4,
    columns="all",
    true_layers="all",
    method="msp",
    coreg_error_mm=0.0,
    inversion_leadfield=None,
    bem=None,
    hann=True,
    band=DEFAULT_BAND,
    rank=None,
    random_state=None,
    n_jobs=None,
    verbose=None,
) -> LaminarAccuracy:
    """Simulate a source on every layer of every column and compare the layers.

    Szul et al. (2025)'s whole-brain simulation, run natively: for each
    column and each true layer, a patch (Gaussian over geodesic distance on
    the true layer, ``patch_fwhm``, 10 nA·m) at the column with the paper's
    Gaussian time course (sigma 0.4 s on -1..1 s at 600 Hz), white noise at
    SPM's SNR, then the per-layer MSP model comparison of
    :func:`~mne_laminar_plugin.compare_layers` with the prior at the column
    (``woi``, Hann, ``n_temporal_modes``); the peak is the layer model with
    the highest free energy.

    Parameters
    ----------
    leadfield : LeadfieldData
        The laminar leadfield with its layer/column layout and measurement
        info (the laminar/leadfield step's ``*_leadfield.h5``): the forward
        model of the simulated data (and of the inversion, unless
        ``coreg_error_mm`` or ``inversion_leadfield`` says otherwise).
    surfaces : LaminarSurfaces
        The layer surfaces of the leadfield (patch kernel, depths, thickness).
    noise_cov : mne.Covariance | None
        Noise covariance: the data and leadfield are whitened with it as in
        ``compare_layers`` and the noise is white after whitening. None: an
        ad hoc diagonal covariance (:func:`mne.make_ad_hoc_cov`).
    snr_db : float | list of float
        SNR (dB), SPM's definition: noise std = mean over whitened channels of
        the signal's std over the epoch, times ``10^(-SNR/20)``. A list runs
        an SNR sweep on the same noise draws (common random numbers).
    n_trials : int
        Trials per simulation, kept as trials (``YY`` sums them, as SPM).
    woi : tuple of float | None
        Window of the inversion (s); None: the paper's (-0.025, 0.025).
    patch_fwhm : float
        FWHM (mm) of the simulated patch and of the MSP patch prior.
    n_temporal_modes : int
        Temporal modes of the inversion (laMEG: 4).
    columns : "all" | array of int
        Columns to simulate (surfaces numbering; kept columns only).
    true_layers : "all" | array of int
        Layers to simulate a source on (0 = pial); the models are always
        every layer.
    method : "msp"
        Single-patch MSP at the column (EBB's prior depends on the data, so a
        whole-brain EBB simulation costs hours; use ``compare_layers``).
    coreg_error_mm : float
        Co-registration error (mm): the inversion's leadfield is recomputed
        with the fast forward engine on the head<->MRI transform shifted by
        this much in a random direction (seeded by ``random_state``), so the
        data come from the true geometry and the models from a wrong one.
        Needs ``bem`` (or a leadfield whose provenance names a BEM file) and
        the leadfield's info and transform, or ``inversion_leadfield``.
    inversion_leadfield : LeadfieldData | None
        An explicit leadfield for the layer models (same channels, layers and
        columns as ``leadfield``), e.g. computed on a perturbed transform or
        another head model. Overrides ``coreg_error_mm``'s recomputation.
    bem : path-like | mne.bem.ConductorModel | None
        The BEM of ``leadfield`` (only for ``coreg_error_mm > 0``).
    hann : bool
        Hann taper for the selection of temporal modes (laMEG: on).
    band : tuple of float
        Frequency band (Hz) of the temporal DCT basis.
    rank : None | dict | "info" | "full"
        Rank of the noise covariance (``mne.cov.compute_whitener``).
    random_state : None | int | numpy.random.Generator
        Seed; the same seed gives identical results whatever ``n_jobs``.
    n_jobs : int | None
        Processes for the column chunks, through joblib's active backend
        (loky, or a dask client inside ``joblib.parallel_config``); each
        runs with one BLAS thread. None or 1 computes in this process with
        one thread per available core (the chunks' numpy work releases the
        GIL; one BLAS thread each), as the forward engine does.
    %(verbose)s

    Returns
    -------
    accuracy : LaminarAccuracy
        F of every layer model for every column, true layer and SNR, and the
        per-column accuracy, errors (layers and mm), bias.

    Notes
    -----
    Noise is drawn only where the models see it: in an orthonormal basis of
    the column's layer (and signal) topographies, plus an exact Wishart
    sample for the rest of the data's temporal Gram matrix (``_kernel``).
    The result has the distribution of simulating the full sensor data and
    calling ``compare_layers`` once per simulation (the tests check both).
    """
    return _simulate(
        leadfield, surfaces, noise_cov=noise_cov, snr_db=snr_db, n_trials=n_trials, woi=woi,
        patch_fwhm=patch_fwhm, n_temporal_modes=n_temporal_modes, columns=columns,
        true_layers=true_layers, method=method, coreg_error_mm=coreg_error_mm,
        inversion_leadfield=inversion_leadfield, bem=bem, hann=hann, band=band, rank=rank,
        random_state=random_state, n_jobs=n_jobs,
    )  # fmt: skip


def _simulate(leadfield, surfaces, *, noise_cov, snr_db, n_trials, woi, patch_fwhm,
              n_temporal_modes, columns, true_layers, method, coreg_error_mm,
              inversion_leadfield, bem, hann, band, rank, random_state, n_jobs,
              noise=None):  # fmt: skip
    """:func:`simulate_laminar_accuracy`; ``noise``: explicit whitened noise
    (n_columns, n_true, n_trials, n, n_window) instead of the sampler (tests)."""
    import mne

    _check_option("method", method, METHODS)
    snr = _as_snr(snr_db)
    K = _check_int(n_trials, "n_trials", 1)
    n_modes = _check_int(n_temporal_modes, "n_temporal_modes", 1)
    _validate_type(patch_fwhm, "numeric", "patch_fwhm")
    if not np.isfinite(patch_fwhm) or patch_fwhm <= 0:
        raise ValueError(f"patch_fwhm must be a positive number of mm, got {patch_fwhm!r}")
    _validate_type(coreg_error_mm, "numeric", "coreg_error_mm")
    if not np.isfinite(coreg_error_mm) or coreg_error_mm < 0:
        raise ValueError(f"coreg_error_mm must be a finite number >= 0 (mm), got {coreg_error_mm!r}")
    entropy = _seed_entropy(random_state)

    leadfield = _check_fixed(leadfield)
    loaded = (leadfield.provenance or {}).get("loaded_layers")
    surf_layers = list(loaded) if loaded else list(range(leadfield.n_layers))
    _check_surfaces(surfaces, leadfield, surf_layers)
    if leadfield.info is None:
        raise ValueError(
            "leadfield has no measurement info (LeadfieldData.info is None): the channels "
            "and the whitener come from it; use the laminar/leadfield step's .h5 or "
            "LeadfieldBuilder.simulate"
        )
    if noise_cov is None:
        noise_cov = mne.make_ad_hoc_cov(leadfield.info, verbose="error")
    _validate_type(noise_cov, mne.Covariance, "noise_cov")
    coreg_rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(1,)))
    inv_lf, inv_info = _inversion_leadfield(
        leadfield, surfaces, inversion_leadfield, float(coreg_error_mm), bem, coreg_rng
    )
    same = inv_lf is leadfield

    # channels and whitener, exactly as compare_layers on data with this info
    template = mne.EvokedArray(np.zeros((len(leadfield.ch_names), 1)), leadfield.info,
                               verbose="error")  # fmt: skip
    names, rows = _match_channels(template, leadfield, noise_cov)
    W = _whitener(template, noise_cov, names, rank)
    n = W.shape[0]

    kept = np.intersect1d(leadfield.columns, inv_lf.columns)
    cols = _resolve_columns(columns, kept)
    true = _resolve_layers(true_layers, leadfield.n_layers)
    n_layers = leadfield.n_layers

    # time course, window, temporal bases
    times, wave = _time_course()
    i0, i1 = _resolve_woi(DEFAULT_WOI if woi is None else woi, times)
    nb = i1 - i0
    T_full, freqs = dct_basis(nb, SFREQ, (0.0, np.inf))
    band_idx = np.flatnonzero((freqs >= band[0]) & (freqs <= band[1]))
    if n_modes > len(band_idx):
        raise ValueError(
            f"n_temporal_modes={n_modes} exceeds the {len(band_idx)} DCT components of a "
            f"{nb}-sample window in the band {band} Hz"
        )
    taper = hann_window(nb) if hann else np.ones(nb)
    H = T_full.T @ (taper[:, None] * T_full[:, band_idx])
    ghat = wave[i0:i1] @ T_full

    logger.info(
        f"Laminar accuracy simulation: {len(cols)} columns x {len(true)} true layers x "
        f"{n_layers} layer models, SNR {snr.tolist()} dB, {n} whitened dimensions, "
        f"{nb} samples, {K} trial(s)"
    )
    with _blas_limit():
        S_all = _topographies(leadfield, rows, W, surfaces, surf_layers, cols, patch_fwhm)
        U_all = S_all
        if not same:  # same channel order (checked)
            U_all = _topographies(inv_lf, rows, W, surfaces, surf_layers, cols, patch_fwhm)
            same = np.array_equal(U_all, S_all)  # e.g. a copy: the same models
        S_all = np.ascontiguousarray(S_all[:, :, true])
        E = _symmetric_whitener_basis(W)
        sigma0 = np.concatenate([np.abs(E @ S_all[s : s + 1024]).mean(axis=1)
                                 for s in range(0, len(cols), 1024)])  # fmt: skip
        sigma0 *= wave.std(ddof=1)  # noise std at 0 dB, (n_cols, Ls)
    if not (sigma0 > 0).all():
        raise ValueError("some simulated patches have no field on the sensors")
    F = _simulate_chunks(entropy, U_all, S_all, same, sigma0, snr, K, n, T_full, H,
                         band_idx, ghat, n_modes, n_jobs, noise)  # fmt: skip

    depth = _column_depths(surfaces, surf_layers, cols)
    settings = dict(
        method=method, snr_db=snr.tolist(), n_trials=K, woi_s=[float(times[i0]), float(times[i1 - 1])],
        n_window_samples=int(nb), sfreq_hz=SFREQ, epoch_s=[TMIN, TMAX],
        time_course=f"Gaussian, sigma {WAVE_SIGMA_S} s, x{WAVE_SCALE}", dipole_nAm=DIPOLE_NAM,
        patch_fwhm_mm=float(patch_fwhm), n_temporal_modes=n_modes, hann=bool(hann),
        band_hz=[float(band[0]), float(band[1])], n_channels=len(names), rank=int(n),
        coreg_error_mm=float(coreg_error_mm), random_state_entropy=entropy,
        snr_definition="SPM: noise std = mean over whitened channels of the signal std "
                       "over the epoch x 10^(-SNR/20); white noise after whitening",
        **inv_info,
    )  # fmt: skip
    return LaminarAccuracy(
        free_energy=F, snr_db=snr, columns=cols, hemi=np.asarray(surfaces.hemi)[cols],
        vertno=np.asarray(surfaces.vertno)[cols], true_layers=true,
        depth_mm=depth, thickness_mm=surfaces.thickness()[cols],
        fractions=np.asarray(surfaces.fractions)[surf_layers], settings=settings,
    )  # fmt: skip


def _simulate_chunks(entropy, U_all, S_all, same, sigma0, snr, K, n, T_full, H, band,
                     ghat, n_modes, n_jobs, noise):  # fmt: skip
    from joblib import Parallel, delayed

    n_cols = U_all.shape[0]
    starts = range(0, n_cols, CHUNK_COLUMNS)
    jobs = (
        delayed(_run_chunk)(
            np.random.SeedSequence(entropy, spawn_key=(0, k)),
            U_all[s : s + CHUNK_COLUMNS], S_all[s : s + CHUNK_COLUMNS], same,
            sigma0[s : s + CHUNK_COLUMNS], snr, K, n, T_full, H, band, ghat, n_modes,
            None if noise is None else noise[s : s + CHUNK_COLUMNS],
        )  # fmt: skip
        for k, s in enumerate(starts)
    )
    if n_jobs in (None, 1):  # in this process: one thread per core, same numbers
        parts = _run_threads(jobs, len(starts))
    else:
        parallel = Parallel(n_jobs=n_jobs, return_as="generator")
        parts = []
        with ProgressBar(len(starts), mesg="Column chunks") as pb:
            for part in parallel(jobs):
                parts.append(part)
                pb.update(len(parts))
    return np.concatenate(parts, axis=1)


def _run_threads(jobs, n_chunks):
    """Run joblib ``delayed`` chunks on threads of this process, results in order."""
    from concurrent.futures import ThreadPoolExecutor

    from ..forward._engine_numba import _n_cpus

    n_threads = max(1, min(_n_cpus(), n_chunks))
    # one BLAS thread for the whole pool, set once: threadpoolctl's limits are per process
    with _blas_limit(), ThreadPoolExecutor(n_threads,
                                           thread_name_prefix="laminar-accuracy") as ex:
        futures = [ex.submit(func, *args, **kwargs, limit_blas=False)
                   for func, args, kwargs in jobs]  # fmt: skip
        parts = []
        with ProgressBar(n_chunks, mesg="Column chunks") as pb:
            for future in futures:
                parts.append(future.result())
                pb.update(len(parts))
    return parts


def _column_depths(surfaces, surf_layers, cols):
    """Distance (mm) of each layer from pial along each column (path through layers)."""
    rr = surfaces.layers[surf_layers][:, cols]  # (L, C, 3)
    seg = np.linalg.norm(np.diff(rr, axis=0), axis=-1) * 1e3
    return np.concatenate([np.zeros((1, len(cols))), np.cumsum(seg, axis=0)]).T
