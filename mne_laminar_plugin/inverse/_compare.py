"""Per-layer Bayesian model comparison: free energy of MSP and EBB models.

laMEG's protocol (``lameg.laminar.model_comparison`` and
``sliding_window_model_comparison``), reimplemented natively from the
formulas in ``shared/notes/laminar-inversion.md`` (SPM and laMEG are GPL: no
code copied): one inversion per layer, on that layer's sources (same columns,
same orientations), with the same data and the same spatial projection, so
that the negative free energies F (nats) are comparable; the winner is
``argmax F``, ΔF is taken relative to the worst layer and |ΔF| > 3 between
the best and the runner-up is "strong" evidence (about 20:1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from mne.utils import ProgressBar, _check_option, _validate_type, logger, verbose

from .._conventions import INVERSE_METHODS
from ._reml import HC, HE, reml, reml_grouped, reml_msp
from ._patches import layer_patches, mesh_edges, patch_kernel
from ._temporal import dct_basis, hann as hann_window, temporal_modes

METHODS = INVERSE_METHODS
#: |ΔF| above this (nats) between the best and the runner-up is strong evidence
STRONG_DF = 3.0
DEFAULT_BAND = (0.0, 256.0)
_DATA_TYPES = ("mag", "grad", "eeg")
#: windows of the sliding comparison processed at once (memory)
_WINDOW_CHUNK = 128
#: BLAS threads inside compare_layers: its matrices are small (n <= a few
#: hundred), where OpenBLAS threads cost more than they give (2-14x slower
#: with 2 threads on the 2-core test machine); parallelise over calls instead
BLAS_THREADS = 1
_CONTROLLER = None


def _blas_limit():
    """Context limiting BLAS/OpenMP threads to :data:`BLAS_THREADS`."""
    global _CONTROLLER
    from threadpoolctl import ThreadpoolController

    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=BLAS_THREADS, user_api="blas")


# ======================================================= batched MSP core
def _msp_free_energy_batch(tau, rho, n_channels, n_samples, *, return_result=False):
    """Free energy of single-patch MSP models from reduced data, batched.

    The single-patch MSP model of the reduced data covariance is ``C = V +
    e^h0 I/n + (e^h1 + e^h2) a a^T`` (noise floor ``V = e^-5 tr(YY) / (N n)
    I``, SPM's two MSP components, greedy search and ARD, both proportional
    to ``a a^T`` for one patch). In the basis ``{u, u_perp}`` (``u = a /
    ||a||``) every matrix is diagonal, so the ReML fit and F depend on the
    data only through ``tau = tr(YY)`` and ``rho = u^T YY u``: each model
    costs O(1), whatever ``n``, and any number of (prior column, layer
    model, simulation, window) combinations are fitted at once, following
    the iteration path of the dense fit (:func:`._reml.reml`) exactly
    (:func:`._reml.reml_msp`, the 2 x 2 closed form; 1e-12 nats from the
    generic :func:`._reml.reml_grouped` and the dense n x n fit).

    Parameters
    ----------
    tau : array, shape (...)
        ``tr(YY)``, the total power of the reduced data: ``YY = sum_k Y_k
        Y_k^T`` over trials of the whitened, spatially projected data after
        temporal reduction (``Y_k`` of shape (n, Nr)).
    rho : array, shape (...)
        ``u^T YY u = sum_k ||u^T Y_k||^2`` for the unit patch topography
        ``u`` of each model (``rho <= tau``). Broadcast against ``tau``
        (e.g. ``tau[:, None]`` with ``rho`` of shape (n_sim, n_layers)).
    n_channels : int
        n, the dimension of the reduced data (whitened rank, or the number
        of spatial modes).
    n_samples : int | array
        N = n_temporal_modes x n_trials.
    return_result : bool
        Also return ``h`` (..., 2): the noise and (each) patch log
        hyperparameter, and ``active`` (..., 2): whether they stayed in the
        model.

    Returns
    -------
    F : array, shape broadcast(tau, rho)
        Negative free energy (nats) of each model, on the data scale (models
        of the same data are comparable).
    """
    tau, rho = np.broadcast_arrays(np.asarray(tau, float), np.asarray(rho, float))
    F, h, active = reml_msp(rho, np.maximum(tau - rho, 0.0), int(n_channels), n_samples)
    return (F, h, active) if return_result else F


def _whitened_block(LF, rows, factors, W, src):
    """``W`` times the SI leadfield of the sources ``src`` (array or slice)."""
    G = LF[:, src]
    G = np.asarray(G if rows is None else G[rows], float)
    return W @ (G * factors[:, None])


def _patch_topographies(leadfield, surfaces, W, rows, columns, patch_fwhm, *,
                        projection=None, normalize=True, surface_layers=None):  # fmt: skip
    """Unit patch topographies of many columns on every layer, batched.

    For simulations over many columns (issue #12): the patch kernels of all
    ``columns`` on each layer at once (:func:`._patches.patch_kernel`), times
    the whitened (and projected) leadfield of the layer.

    Parameters
    ----------
    leadfield : LeadfieldData
        Fixed orientation, with its layout.
    surfaces : LaminarSurfaces
        The leadfield's surfaces (meshes for the geodesic kernel).
    W : array, shape (n, n_rows)
        Whitener of the leadfield rows ``rows`` (SI units).
    rows : array of int | None
        Leadfield rows, in the whitener's channel order (None: all, in order).
    columns : array of int
        Column ids (surfaces numbering), all kept by the leadfield.
    patch_fwhm : float
        FWHM (mm).
    projection : array, shape (m, n) | None
        Spatial projection A applied after the whitener.
    normalize : bool
        Unit topographies (the models); False: the field of a unit-moment
        (1 A·m) patch, whitened (the simulated signals).
    surface_layers : list of int | None
        Layer of ``surfaces`` of each leadfield layer (a leadfield read with
        a subset of layers); None: the same indices.

    Returns
    -------
    U : array, shape (n_layers, n_selected_columns, n)
        ``A W L_l q_l / ||.||`` for every layer ``l`` and column; with reduced
        data ``Y`` (``(..., K, n, Nr)``) ``rho = ||U Y||^2`` feeds
        :func:`_msp_free_energy_batch` (see :func:`_msp_rho`, ``U[l].T``).
    """
    columns = np.asarray(columns, np.int64)
    kept = np.asarray(leadfield.columns)
    n_kept = len(kept)
    keep = np.zeros(surfaces.n_columns, bool)
    keep[kept] = True
    if not keep[columns].all():
        raise ValueError(f"columns {columns[~keep[columns]][:5].tolist()} have no sources")
    edges = mesh_edges(surfaces.combined_tris(), surfaces.n_columns)
    factors = _si_factors(leadfield)
    if rows is not None:
        factors = factors[rows]
    out = None
    if surface_layers is None:
        surface_layers = range(leadfield.n_layers)
    for layer, l_surf in enumerate(surface_layers):
        K = patch_kernel(surfaces.layers[l_surf] * 1e3, edges, patch_fwhm, columns, keep=keep)
        G = _whitened_block(leadfield.leadfield, rows, factors, W,
                            slice(layer * n_kept, (layer + 1) * n_kept))  # fmt: skip
        if projection is not None:
            G = projection @ G
        topo = np.asarray(K[:, kept] @ G.T)
        if out is None:
            out = np.empty((leadfield.n_layers, len(columns), topo.shape[1]))
        out[layer] = topo / np.linalg.norm(topo, axis=1, keepdims=True) if normalize else topo
    return out


def _msp_rho(Y, U):
    """``rho`` of :func:`_msp_free_energy_batch`: ``sum_k ||U^T Y_k||^2``.

    Y : (..., K, n, Nr) reduced data; U : (n, L) unit topographies.
    Returns (tau (...), rho (..., L)).
    """
    tau = np.einsum("...kcr,...kcr->...", Y, Y)
    proj = np.einsum("cl,...kcr->...klr", U, Y)
    rho = np.einsum("...klr,...klr->...l", proj, proj)
    return tau, rho


def _ebb_free_energy(Ys, G, kernel, n_samples):
    """Free energy of one EBB layer model.

    Ys : (n, N) stacked reduced data (all trials and modes); G : (n, n_src)
    whitened, projected leadfield of the layer; kernel : (n_src, n_src)
    sparse patch kernel (row j = patch of source j).
    """
    n = Ys.shape[0]
    lam = np.asarray((kernel @ G.T).T)  # (n, n_src): smoothed topographies
    AYYA = Ys @ Ys.T
    delta = max(np.spacing(np.abs(AYYA).sum(1).max()) * n, np.exp(-32.0))
    # lam^T (AYYA + delta I)^-1 lam with AYYA = Uy s^2 Uy^T of rank <= N (Woodbury)
    Uy, s, _ = np.linalg.svd(Ys, full_matrices=False)
    proj = Uy.T @ lam
    perp = lam - Uy @ proj
    quad = (proj**2 / (s[:, None] ** 2 + delta)).sum(0) + (perp**2).sum(0) / delta
    power = (lam**2).sum(0) / quad
    power /= power.max()
    B = G * np.sqrt(power)
    K = B @ B.T  # symmetric rank-k product
    kval, kvec = np.linalg.eigh(K)
    kval = np.maximum(kval, 0.0)
    yy = ((kvec.T @ Ys) ** 2).sum(1)
    q = np.stack([np.ones(n), kval])
    res = reml_grouped(yy, q, np.ones(n), n_samples)
    return float(res.free_energy)


def _multi_patch_free_energy(Ys, A, n_samples):
    """MSP with several fixed patches (topographies ``A``, (n, P)), dense ReML.

    ARD over one component per patch, then the final fit on {noise, the ARD
    mixture, the uniform mixture}; with one patch both mixtures are ``a a^T``
    and this is the model of :func:`_msp_free_energy_batch`.
    """
    n = Ys.shape[0]
    YY = Ys @ Ys.T
    Qe = np.eye(n) / n
    comps = [np.outer(a, a) for a in A.T]
    ard = reml(YY, [Qe, *comps], n_samples)
    w = np.where(ard.active[1:], np.exp(ard.h[1:]), 0.0)
    uniform = sum(comps)
    if w.sum() > 0:
        mix = sum(wi * c / (np.trace(c) / n) for wi, c in zip(w, comps))
    else:
        mix = uniform
    return reml(YY, [Qe, mix, uniform], n_samples).free_energy


# ============================================================ evidence
@dataclass(repr=False)
class LayerEvidence:
    """Free energy of one model per layer (output of :func:`compare_layers`).

    Attributes
    ----------
    free_energy : ndarray, shape (n_layers,) | (n_layers, n_windows)
        Negative free energy of each layer model (nats); higher is better.
    method : "msp" | "ebb"
    prior : list of dict
        The prior column(s): ``column``, ``hemi``, ``vertex``, ``pos_mri_mm``
        (pial position, FreeSurfer surface RAS) when known.
    layer_depths : dict
        ``"fraction"``: depth of each layer as the fraction of thickness
        from white (1 = pial, 0 = white); ``"mm"``: distance from the pial
        surface along the column at the prior (mm; mean over prior columns).
    times : ndarray, shape (n_windows,) | None
        Window centres (s) of a sliding comparison; None for one window.
    woi : tuple of float
        First and last sample time (s) of the analysed data.
    settings : dict
        Every setting of the comparison (FWHM, modes, band, channels, rank).
    """

    free_energy: np.ndarray
    method: str
    prior: list
    layer_depths: dict
    times: np.ndarray | None = None
    woi: tuple = ()
    settings: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        """Number of layer models."""
        return self.free_energy.shape[0]

    @property
    def delta_f(self) -> np.ndarray:
        """F relative to the worst layer (nats, >= 0), per window."""
        return self.free_energy - self.free_energy.min(axis=0)

    @property
    def best_layer(self):
        """Index of the layer with the highest F (0 = pial), per window."""
        best = np.argmax(self.free_energy, axis=0)
        return int(best) if best.ndim == 0 else best

    @property
    def delta_f_runner_up(self) -> np.ndarray:
        """F of the best layer minus F of the second best (nats)."""
        top2 = np.sort(self.free_energy, axis=0)[-2:]
        return top2[1] - top2[0]

    @property
    def strong(self):
        """Whether the best layer beats the runner-up by more than 3 nats."""
        out = self.delta_f_runner_up > STRONG_DF
        return bool(out) if np.ndim(out) == 0 else out

    def __repr__(self) -> str:
        cols = ", ".join(f"{p['hemi']} {p['vertex']}" for p in self.prior)
        if self.times is None:
            what = (f"best layer {self.best_layer} (ΔF vs runner-up "
                    f"{float(self.delta_f_runner_up):.2f} nats, "
                    f"{'strong' if self.strong else 'weak'})")  # fmt: skip
        else:
            what = f"{len(self.times)} windows"
        return (f"<LayerEvidence | {self.method.upper()}, {self.n_layers} layers, "
                f"prior {cols}, {what}>")  # fmt: skip

    def to_dataframe(self):
        """One row per layer (and window): F, ΔF, depth, best, strong.

        Returns
        -------
        df : pandas.DataFrame
            Columns ``layer``, ``fraction``, ``depth_mm``, ``time`` (window
            centre, s; NaN for one window), ``free_energy``, ``delta_f``,
            ``best`` (this layer wins the window) and ``strong``.
        """
        from mne.utils import _check_pandas_installed

        pd = _check_pandas_installed(strict=True)  # (a dependency of MNE-BIDS-Pipeline)
        F = self.free_energy.reshape(self.n_layers, -1)
        n_win = F.shape[1]
        dF = F - F.min(0)
        best = np.argmax(F, axis=0)
        strong = np.atleast_1d(self.strong)
        layer = np.repeat(np.arange(self.n_layers), n_win)
        win = np.tile(np.arange(n_win), self.n_layers)
        times = np.full(n_win, np.nan) if self.times is None else self.times
        return pd.DataFrame(
            dict(
                layer=layer,
                fraction=np.asarray(self.layer_depths["fraction"])[layer],
                depth_mm=np.asarray(self.layer_depths["mm"])[layer],
                time=times[win],
                free_energy=F.ravel(),
                delta_f=dF.ravel(),
                best=best[win] == layer,
                strong=(best[win] == layer) & strong[win],
            )
        )

    def plot(self, *, ax=None, show=False):
        """ΔF per layer (bars), or ΔF over time per layer (sliding windows).

        Parameters
        ----------
        ax : matplotlib.axes.Axes | None
            Axes to draw into (a new figure if None).
        show : bool
            Call ``plt.show()`` (no effect headless).

        Returns
        -------
        fig : matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
        else:
            fig = ax.figure
        labels = _layer_labels(self.layer_depths["fraction"])
        if self.times is None:
            dF = self.delta_f
            colors = ["C3" if i == self.best_layer else "C0" for i in range(self.n_layers)]
            ax.bar(np.arange(self.n_layers), dF, color=colors)
            ax.axhline(STRONG_DF, color="k", ls="--", lw=0.8, label="ΔF = 3")
            ax.set_xticks(np.arange(self.n_layers), labels, rotation=45, ha="right")
            ax.set_xlabel("layer model (depth fraction from white)")
            ax.legend(loc="upper right", frameon=False)
        else:
            cmap = plt.get_cmap("viridis")
            for i in range(self.n_layers):
                ax.plot(self.times * 1e3, self.delta_f[i], lw=1.2,
                        color=cmap(i / max(self.n_layers - 1, 1)), label=labels[i])  # fmt: skip
            ax.set_xlabel("window centre (ms)")
            ax.legend(fontsize="x-small", ncol=2, frameon=False)
        ax.set_ylabel("ΔF vs worst layer (nats)")
        cols = ", ".join(f"{p['hemi']} {p['vertex']}" for p in self.prior)
        ax.set_title(f"{self.method.upper()} layer comparison at {cols}")
        if show:
            plt.show()
        return fig


def _layer_labels(fractions):
    n = len(fractions)
    out = []
    for i, f in enumerate(fractions):
        name = "pial" if i == 0 else "white" if i == n - 1 else f"{f:.3f}"
        out.append(name)
    return out


# ====================================================== input handling
def _si_factors(lf):
    """Per-row factor to MNE's SI units (ones for a leadfield in arbitrary units)."""
    from ..leadfield import si_factors

    if lf.sensor_unitmult is None and (not lf.units or set(lf.units) == {"arbitrary"}):
        return np.ones(lf.n_sensors)
    return si_factors(lf)


def _check_fixed(leadfield):
    from ..leadfield import LeadfieldData

    _validate_type(leadfield, LeadfieldData, "leadfield")
    if leadfield.leadfield is None:
        raise ValueError("leadfield holds no leadfield matrix (LeadfieldData.leadfield is None)")
    if leadfield.layer is None or leadfield.column is None:
        raise ValueError(
            "leadfield has no layer/column layout (LeadfieldData.layer/.column): "
            "compare_layers needs a laminar leadfield (the laminar/leadfield step's file)"
        )
    if leadfield.orientation_type == "free":
        logger.info("    Free leadfield: using its fixed projection on the orientations")
        leadfield = leadfield.fixed()
    return leadfield


def _data_channels(evoked, leadfield):
    """Good MEG/EEG channels of the data, in data order, of the leadfield's types.

    A channel type the leadfield has none of (e.g. EEG with a MEG-only
    leadfield) is left out, with a log message.
    """
    types = evoked.get_channel_types()
    bads = set(evoked.info["bads"])
    lf_types = set(leadfield.ch_types or _DATA_TYPES)
    skipped = {t for t in types if t in _DATA_TYPES and t not in lf_types}
    if skipped:
        logger.info(f"    the leadfield has no {sorted(skipped)} channels: not used")
    return [n for n, t in zip(evoked.ch_names, types)
            if t in _DATA_TYPES and t in lf_types and n not in bads]  # fmt: skip


def _match_channels(evoked, leadfield, noise_cov):
    names = _data_channels(evoked, leadfield)
    if not names:
        raise ValueError(
            f"evoked has no good MEG or EEG channel of the leadfield's types "
            f"{sorted(set(leadfield.ch_types))}"
        )
    lf_index = {n: i for i, n in enumerate(leadfield.ch_names)}
    for what, have in (("leadfield", lf_index), ("noise_cov", set(noise_cov.ch_names))):
        missing = [n for n in names if n not in have]
        if missing:
            raise ValueError(
                f"{len(missing)} of the {len(names)} good data channel(s) of evoked are "
                f"not in the {what}, e.g. {missing[:5]}: the evoked, the leadfield and "
                "the noise covariance must share their channels (mark the others as bad "
                "in evoked.info['bads'], or recompute the leadfield for these sensors)"
            )
    extra = len(set(leadfield.ch_names) - set(names))
    if extra:
        logger.info(f"    {extra} leadfield channel(s) not used (bad or absent in evoked)")
    return names, np.array([lf_index[n] for n in names])


def _whitener_key(evoked, noise_cov, names, rank):
    import hashlib

    h = hashlib.blake2b(digest_size=20)
    h.update(np.ascontiguousarray(noise_cov.data).tobytes())
    chs = {ch["ch_name"]: ch for ch in evoked.info["chs"]}
    h.update(repr((list(noise_cov.ch_names), list(names), repr(rank),
                   [(chs[n]["kind"], chs[n]["unit"], chs[n]["coil_type"]) for n in names],
                   bool(noise_cov["diag"]))).encode())  # fmt: skip
    for proj in (*evoked.info["projs"], *noise_cov["projs"]):
        h.update(repr((proj["active"], proj["data"]["col_names"])).encode())
        h.update(np.ascontiguousarray(proj["data"]["data"]).tobytes())
    return h.hexdigest()


_WHITENERS: dict = {}
_WHITENER_CACHE = 8


def _whitener(evoked, noise_cov, names, rank):
    """``compute_whitener`` (pca=True) times the data's SSP projector.

    Cached on the content of the covariance, the channels, the projectors
    and the rank: repeated comparisons on the same data (priors, ROIs,
    windows) do not redo the eigendecomposition.
    """
    import mne
    from mne._fiff.proj import make_projector

    key = _whitener_key(evoked, noise_cov, names, rank)
    if key in _WHITENERS:
        return _WHITENERS[key]
    info = mne.pick_info(evoked.info, [evoked.ch_names.index(n) for n in names])
    with info._unlock():
        info["bads"] = []
    W, w_names = mne.cov.compute_whitener(noise_cov, info, rank=rank, pca=True,
                                          verbose="error")  # fmt: skip
    assert list(w_names) == list(names)
    P, n_proj, _ = make_projector(info["projs"], names)
    if n_proj:
        W = W @ P
    W = np.asarray(W, float)
    W.setflags(write=False)
    if len(_WHITENERS) >= _WHITENER_CACHE:
        _WHITENERS.pop(next(iter(_WHITENERS)))
    _WHITENERS[key] = W
    return W


def _resolve_woi(woi, times):
    tmin, tmax = float(times[0]), float(times[-1])
    if woi is None:
        return 0, len(times)
    try:
        lo, hi = (float(w) for w in woi)
    except (TypeError, ValueError):
        raise ValueError(f"woi must be (tmin, tmax) in seconds, got {woi!r}") from None
    dt = float(times[1] - times[0]) if len(times) > 1 else 0.0
    if not lo < hi:
        raise ValueError(f"woi must be (tmin, tmax) with tmin < tmax, got {woi!r}")
    if lo < tmin - dt / 2 or hi > tmax + dt / 2:
        raise ValueError(
            f"woi {woi!r} (s) is outside the data ({tmin:.4f} to {tmax:.4f} s); woi is "
            "in seconds, like evoked.times"
        )
    i0 = int(np.searchsorted(times, lo - dt / 2))
    i1 = int(np.searchsorted(times, hi + dt / 2))
    if i1 - i0 < 2:
        raise ValueError(f"woi {woi!r} holds fewer than 2 samples of the data")
    return i0, i1


def _column_lookup(surfaces, leadfield):
    if surfaces is not None:
        return np.asarray(surfaces.hemi), np.asarray(surfaces.vertno)
    if leadfield.column_hemi is None or leadfield.column_vertno is None:
        return None, None
    return np.asarray(leadfield.column_hemi), np.asarray(leadfield.column_vertno)


def _prior_columns(prior, leadfield, surfaces, predictors, subjects_dir):
    """Column ids (surfaces numbering) of the prior; checks they are kept."""
    import mne

    n_columns = int(leadfield.n_columns)
    hemi, vertno = _column_lookup(surfaces, leadfield)

    def one(p):
        if isinstance(p, bool):
            raise TypeError(f"prior must be a column index, got {p!r}")
        if isinstance(p, int | np.integer):
            c = int(p)
            if not 0 <= c < n_columns:
                raise ValueError(
                    f"prior column {c} is outside the model's columns 0..{n_columns - 1}"
                )
            return c
        if isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str):
            h, v = p
            _check_option("prior hemisphere", h, ("lh", "rh"))
            if hemi is None:
                raise ValueError(
                    f"prior {p!r} is a (hemi, vertex) pair but neither surfaces nor the "
                    "leadfield give the columns' vertices; pass surfaces="
                )
            hit = np.flatnonzero((hemi == h) & (vertno == int(v)))
            if hit.size == 0:
                raise ValueError(
                    f"prior {p!r}: vertex {int(v)} of {h} is not a column of the model "
                    f"(spacing of the surfaces); e.g. columns of {h} are vertices "
                    f"{vertno[hemi == h][:5].tolist()}..."
                )
            return int(hit[0])
        if isinstance(p, str | mne.Label | mne.BiHemiLabel) or hasattr(p, "__fspath__"):
            return _roi_prior(p, predictors, surfaces, subjects_dir, n_columns)
        raise TypeError(
            "prior must be a column index, a (hemi, vertex) pair, a list of those, or "
            f"an ROI name known to the predictors, got {type(p).__name__} {p!r}"
        )

    items = list(prior) if isinstance(prior, list) else [prior]
    if not items:
        raise ValueError("prior is an empty list")
    cols = [one(p) for p in items]
    if len(set(cols)) != len(cols):
        raise ValueError(f"prior lists a column twice: {cols}")
    kept = np.asarray(leadfield.columns)
    dropped = dict(zip(np.asarray(leadfield.dropped_columns).tolist(),
                       leadfield.dropped_reasons or []))  # fmt: skip
    for c in cols:
        if c not in set(kept.tolist()):
            why = f" (dropped: {dropped[c]})" if c in dropped else ""
            raise ValueError(
                f"prior column {c} has no sources in the leadfield{why}; choose a kept "
                f"column (LeadfieldData.columns, {len(kept)} columns)"
            )
    return cols


def _roi_prior(roi, predictors, surfaces, subjects_dir, n_columns):
    from ..predictors import AnatomicalPredictors

    if predictors is None:
        raise ValueError(
            f"prior={roi!r} is an ROI name: pass predictors= (the AnatomicalPredictors "
            "whose score chooses the column inside the ROI)"
        )
    _validate_type(predictors, AnatomicalPredictors, "predictors")
    if predictors.n_columns != n_columns:
        raise ValueError(
            f"predictors has {predictors.n_columns} columns but the leadfield's model "
            f"has {n_columns}: they must come from the same laminar surfaces"
        )
    if isinstance(roi, str) and roi == "best":
        return int(predictors.best_vertex())
    subject = getattr(surfaces, "subject", None)
    try:
        rec = predictors.priors([roi], subject, subjects_dir)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"prior={roi!r} is not an ROI known to the predictors: {err}") from err
    return int(next(iter(rec.values()))["column"])


def _check_surfaces(surfaces, leadfield, layers):
    from ..surfaces import LaminarSurfaces

    if surfaces is None:
        raise ValueError(
            "compare_layers needs surfaces= (the LaminarSurfaces of the leadfield) for "
            "the geodesic patch kernel: LeadfieldData carries no meshes"
        )
    _validate_type(surfaces, LaminarSurfaces, "surfaces")
    if surfaces.n_columns != leadfield.n_columns:
        raise ValueError(
            f"surfaces have {surfaces.n_columns} columns but the leadfield's model has "
            f"{leadfield.n_columns}: use the surfaces the leadfield was computed on"
        )
    if max(layers) >= surfaces.n_layers:
        raise ValueError(
            f"the leadfield has layers {list(layers)} but the surfaces only "
            f"{surfaces.n_layers}"
        )
    if leadfield.column_vertno is not None and not np.array_equal(
        np.asarray(leadfield.column_vertno), surfaces.vertno
    ):
        raise ValueError(
            "surfaces and leadfield have different column vertices: use the surfaces "
            "the leadfield was computed on"
        )


def _epochs_data(evoked):
    import mne

    _validate_type(evoked, (mne.Evoked, mne.BaseEpochs), "evoked", "Evoked or Epochs")
    if isinstance(evoked, mne.BaseEpochs):
        data = evoked.get_data(copy=False)
        if data.shape[0] == 0:
            raise ValueError("evoked (Epochs) holds no epoch")
        return data, "epochs"
    return evoked.data[None], "evoked"


def _windows(windows, i0, i1, sfreq, n_times):
    """Sample slices of the windows: one over the woi, or sliding within it."""
    if windows is None:
        return np.array([i0]), i1 - i0, None
    try:
        width, step = windows if np.ndim(windows) else (windows, None)
        width = float(width)
        step = None if step is None else float(step)
    except (TypeError, ValueError):
        raise ValueError(f"windows must be (width_ms, step_ms | None), got {windows!r}") from None
    half = int(round(width / 2000.0 * sfreq))
    if half < 1:
        raise ValueError(
            f"windows width {width} ms is shorter than 3 samples at {sfreq} Hz "
            "(windows are in milliseconds)"
        )
    nb = 2 * half + 1
    stride = 1 if step is None else int(round(step / 1000.0 * sfreq))
    if stride < 1:
        raise ValueError(f"windows step {step} ms is below one sample at {sfreq} Hz")
    first, last = max(i0, half), min(i1 - 1, n_times - 1 - half)
    if last < first:
        raise ValueError(
            f"no window of {width} ms fits in the woi and the data ({n_times} samples)"
        )
    centres = np.arange(first, last + 1, stride)
    return centres - half, nb, centres


# ================================================================ public
@verbose
def compare_layers(
    evoked,
    leadfield,
    noise_cov,
    *,
    surfaces=None,
    prior,
    method="msp",
    woi=None,
    patch_fwhm=5.0,
    n_temporal_modes=4,
    hann=True,
    spatial_modes="all",
    windows=None,
    predictors=None,
    subjects_dir=None,
    rank=None,
    band=DEFAULT_BAND,
    verbose=None,
) -> LayerEvidence:
    """Compare one source model per layer by their free energy (laMEG's protocol).

    Each layer model places the sources on one layer (same columns, same
    orientations) and is fitted to the same whitened data with the same
    spatial projection and temporal modes, by SPM's empirical Bayes scheme
    (ReML hyperparameters, negative free energy F as the model evidence).

    Parameters
    ----------
    evoked : mne.Evoked | mne.Epochs
        The data (SI units). Epochs keep their trials (``YY`` sums them, as
        SPM does); an Evoked is one trial.
    leadfield : LeadfieldData
        Laminar leadfield with its layer/column layout (e.g.
        :func:`~mne_laminar_plugin.leadfield.read_leadfield` of the
        leadfield step's ``*_leadfield.h5``). Free orientation is projected
        on the source orientations.
    noise_cov : mne.Covariance
        Noise covariance; the data and the leadfield are whitened with
        :func:`mne.cov.compute_whitener` (``pca=True``: rank-reduced, e.g.
        after Maxwell filtering) and the data's SSP projectors.
    surfaces : LaminarSurfaces
        The layer surfaces of the leadfield: their meshes give the geodesic
        patch kernel (LeadfieldData carries no mesh, so this is required).
    prior : int | tuple | list | str | mne.Label
        Where the patch sits: a column index (the numbering of
        ``LeadfieldData.column``, the surfaces and the predictors TSV), a
        ``(hemi, vertex)`` pair, a list of those (MSP with several patches),
        an ROI (name or label file understood by the predictors, e.g.
        ``"aparc:lh.precentral"`` or ``"label/lh.V1.label"``; its
        highest-score column is used) or ``"best"`` (the highest-score column
        of ``predictors``). With ``method="ebb"`` the prior only labels the
        result and gives the depths (EBB's prior covers the whole layer).
    method : "msp" | "ebb"
        ``"msp"``: multiple sparse priors with fixed patches at the prior;
        ``"ebb"``: the empirical Bayes beamformer prior over the whole layer.
    woi : tuple of float | None
        Time window ``(tmin, tmax)`` in seconds (None: all samples).
    patch_fwhm : float
        FWHM (mm) of the Gaussian patch over geodesic distance within a layer.
    n_temporal_modes : int
        Temporal modes kept (SVD of the DCT-projected data); laMEG uses 4
        for one window and 1 for sliding windows.
    hann : bool
        Weight the window with a Hann taper to select the temporal modes
        (the data are projected without it, as SPM does).
    spatial_modes : "all" | int
        ``"all"``: no spatial reduction (beyond the whitener's rank); an
        int: the top eigenvectors of ``L L^T`` of the whitened leadfield of
        all layers (one projection for every layer model).
    windows : tuple | None
        Sliding windows ``(width_ms, step_ms)``, in milliseconds (``step_ms``
        None: one window centred on every sample), with centres inside
        ``woi``: temporal modes and F are re-estimated per window with the
        spatial projection fixed (MSP only, as laMEG).
    predictors : AnatomicalPredictors | None
        Needed when ``prior`` is an ROI or ``"best"``.
    subjects_dir : path-like | None
        FreeSurfer subjects folder, to read an ROI label or annotation.
    rank : None | dict | "info" | "full"
        Rank of the noise covariance, passed to ``compute_whitener``.
    band : tuple of float
        Frequency band (Hz) of the DCT basis (laMEG: 0-256 Hz).
    %(verbose)s

    Returns
    -------
    evidence : LayerEvidence
        F per layer (and window), ΔF, best layer, strength of evidence.

    Notes
    -----
    F is in nats and depends on the data only through the reduced data
    covariance and the number of samples, so layer models are compared on
    identical data. Units are otherwise irrelevant: scaling the data shifts
    every layer's F by the same amount.
    """
    _check_option("method", method, METHODS)
    _validate_type(patch_fwhm, "numeric", "patch_fwhm")
    if not np.isfinite(patch_fwhm) or patch_fwhm <= 0:
        raise ValueError(f"patch_fwhm must be a positive number of mm, got {patch_fwhm!r}")
    _validate_type(n_temporal_modes, "int", "n_temporal_modes")
    if n_temporal_modes < 1:
        raise ValueError(f"n_temporal_modes must be >= 1, got {n_temporal_modes}")
    if not (spatial_modes == "all" or (isinstance(spatial_modes, int | np.integer)
                                       and not isinstance(spatial_modes, bool)
                                       and spatial_modes >= 1)):  # fmt: skip
        raise ValueError(f"spatial_modes must be 'all' or a positive int, got {spatial_modes!r}")
    if windows is not None and method == "ebb":
        raise ValueError("windows= (sliding windows) is MSP only (as laMEG); use method='msp'")
    with _blas_limit():
        return _compare_layers(
            evoked, leadfield, noise_cov, surfaces=surfaces, prior=prior, method=method,
            woi=woi, patch_fwhm=patch_fwhm, n_temporal_modes=n_temporal_modes, hann=hann,
            spatial_modes=spatial_modes, windows=windows, predictors=predictors,
            subjects_dir=subjects_dir, rank=rank, band=band,
        )  # fmt: skip


def _compare_layers(
    evoked, leadfield, noise_cov, *, surfaces, prior, method, woi, patch_fwhm,
    n_temporal_modes, hann, spatial_modes, windows, predictors, subjects_dir, rank, band,
):  # fmt: skip
    import mne

    _validate_type(noise_cov, mne.Covariance, "noise_cov")
    data, kind = _epochs_data(evoked)
    leadfield = _check_fixed(leadfield)
    loaded = leadfield.layer_ids  # the model's layers after a partial read
    surf_layers = list(range(leadfield.n_layers)) if loaded is None else loaded.tolist()
    _check_surfaces(surfaces, leadfield, surf_layers)
    cols = _prior_columns(prior, leadfield, surfaces, predictors, subjects_dir)

    # channels, units, whitening
    names, rows = _match_channels(evoked, leadfield, noise_cov)
    W = _whitener(evoked, noise_cov, names, rank)
    index = {n: i for i, n in enumerate(evoked.ch_names)}
    picks = [index[n] for n in names]
    factors = _si_factors(leadfield)[rows]
    n_white = W.shape[0]

    # time window(s)
    times = evoked.times
    sfreq = float(evoked.info["sfreq"])
    i0, i1 = _resolve_woi(woi, times)
    starts, nb, centres = _windows(windows, i0, i1, sfreq, len(times))
    T, _ = dct_basis(nb, sfreq, band)
    if n_temporal_modes > T.shape[1]:
        raise ValueError(
            f"n_temporal_modes={n_temporal_modes} exceeds the {T.shape[1]} DCT components "
            f"of a {nb}-sample window in the band {band} Hz"
        )
    taper = hann_window(nb) if hann else None

    # leadfield: sources of each layer model
    kept = np.asarray(leadfield.columns)
    n_kept = len(kept)
    n_layers = leadfield.n_layers
    keep_mask = np.zeros(surfaces.n_columns, bool)
    keep_mask[kept] = True
    to_kept = np.full(surfaces.n_columns, -1, np.int64)
    to_kept[kept] = np.arange(n_kept)
    edges = mesh_edges(surfaces.combined_tris(), surfaces.n_columns)
    LF = leadfield.leadfield

    sel_rows = None if np.array_equal(rows, np.arange(LF.shape[0])) else rows

    def whitened(src):
        return _whitened_block(LF, sel_rows, factors, W, src)

    A = None
    if spatial_modes != "all":
        if spatial_modes > n_white:
            raise ValueError(
                f"spatial_modes={spatial_modes} exceeds the {n_white} whitened channels"
            )
        GG = np.zeros((n_white, n_white))
        for layer in range(n_layers):  # G G^T of all layers, one layer at a time
            G = whitened(slice(layer * n_kept, (layer + 1) * n_kept))
            GG += G @ G.T
        _, evecs = np.linalg.eigh(GG)
        A = evecs[:, ::-1][:, :spatial_modes].T
    n_red = n_white if A is None else A.shape[0]
    proj = W if A is None else A @ W

    # reduced data of every window: (n_win, K, n, Nr)
    s0 = int(starts[0])
    s1 = int(starts[-1]) + nb
    D = proj @ data[:, picks, s0:s1]  # (K, n, samples)
    starts = starts - s0
    n_trials = D.shape[0]
    N = n_temporal_modes * n_trials

    def reduced(chunk):
        idx = chunk[:, None] + np.arange(nb)
        Dw = np.moveaxis(D[:, :, idx], 2, 0)  # (w, K, n, nb)
        Y, _ = temporal_modes(Dw, T, n_temporal_modes, window=taper)
        return Y

    F = np.empty((n_layers, len(starts)))
    logger.info(
        f"    {method.upper()} comparison of {n_layers} layer models at column(s) {cols}: "
        f"{n_red} spatial dimensions, {nb} samples x {len(starts)} window(s), "
        f"{n_temporal_modes} temporal modes, {n_trials} trial(s)"
    )
    if method == "msp":
        topo = np.empty((n_layers, len(cols), n_red))
        layers_mm = surfaces.layers[surf_layers] * 1e3
        for i, c in enumerate(cols):
            lay, vert, wt = layer_patches(layers_mm, edges, patch_fwhm, c, keep=keep_mask)
            G = whitened(lay * n_kept + to_kept[vert])
            if A is not None:
                G = A @ G
            for l_model in range(n_layers):
                sel = lay == l_model
                topo[l_model, i] = G[:, sel] @ wt[sel]
        if len(cols) == 1:
            U = topo[:, 0, :].T  # (n, L)
            U = U / np.linalg.norm(U, axis=0)
            for s in range(0, len(starts), _WINDOW_CHUNK):
                tau, rho = _msp_rho(reduced(starts[s : s + _WINDOW_CHUNK]), U)
                F[:, s : s + _WINDOW_CHUNK] = _msp_free_energy_batch(
                    tau[:, None], rho, n_red, N
                ).T
        else:
            for s in ProgressBar(range(0, len(starts), _WINDOW_CHUNK),
                                 mesg="multi-patch windows"):  # fmt: skip
                Y = reduced(starts[s : s + _WINDOW_CHUNK])
                for w in range(Y.shape[0]):
                    Ys = np.concatenate(list(Y[w]), axis=1)
                    for l_model in range(n_layers):
                        F[l_model, s + w] = _multi_patch_free_energy(
                            Ys, topo[l_model].T, N
                        )
    else:  # EBB over the whole layer
        Y = reduced(starts)[0]
        Ys = np.concatenate(list(Y), axis=1)
        for l_model, l_surf in ProgressBar(list(enumerate(surf_layers)),
                                           mesg="EBB layer models"):  # fmt: skip
            rr_mm = surfaces.layers[l_surf] * 1e3
            Kfull = patch_kernel(rr_mm, edges, patch_fwhm, kept, keep=keep_mask)
            kernel = Kfull[:, kept]
            G = whitened(slice(l_model * n_kept, (l_model + 1) * n_kept))
            if A is not None:
                G = A @ G
            F[l_model, 0] = _ebb_free_energy(Ys, G, kernel, N)
    if windows is None:
        F = F[:, 0]

    fractions = np.asarray(surfaces.fractions)[surf_layers]
    depth_mm = np.mean(
        [np.linalg.norm(surfaces.layers[surf_layers, c] - surfaces.layers[0, c], axis=1)
         for c in cols], axis=0,
    ) * 1e3  # fmt: skip
    prior_recs = []
    for c in cols:
        rec = dict(column=int(c), hemi=str(surfaces.hemi[c]), vertex=int(surfaces.vertno[c]))
        rec["pos_mri_mm"] = [round(float(x) * 1e3, 3) for x in surfaces.layers[0, c]]
        prior_recs.append(rec)
    settings = dict(
        method=method, patch_fwhm_mm=float(patch_fwhm), n_temporal_modes=int(n_temporal_modes),
        hann=bool(hann), spatial_modes=spatial_modes if spatial_modes == "all" else int(spatial_modes),
        band_hz=[float(band[0]), float(band[1])], n_channels=len(names), rank=int(n_white),
        n_spatial_dims=int(n_red), n_trials=int(n_trials), data=kind, n_window_samples=int(nb),
        windows_ms=None if windows is None else [float(x) if x is not None else None
                                                 for x in np.atleast_1d(windows)],
        hyperprior=dict(mean=HE, variance=HC), units="nats",
    )  # fmt: skip
    return LayerEvidence(
        free_energy=F,
        method=method,
        prior=prior_recs,
        layer_depths=dict(fraction=fractions, mm=depth_mm),
        times=None if centres is None else times[centres],
        woi=(float(times[i0]), float(times[i1 - 1])),
        settings=settings,
    )
