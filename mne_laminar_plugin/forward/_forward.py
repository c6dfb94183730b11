"""Computing the laminar leadfield: every layer of every column in one forward.

The laminar source space is one discrete MNE source space holding all layers,
layer-major (source ``l * n_columns + c`` is column ``c`` at depth ``l``), with
the column orientations as ``nn``. One forward computation covers all layers,
so the sensor set-up (MEG coil integration points, BEM potential solution) is
done once.

MNE drops sources outside the inner skull or closer than ``mindist`` to it,
independently per source. That breaks the correspondence between layers (an
outer layer loses columns that deeper layers keep), so before the forward the
columns are tested in **every** layer and a column is dropped in all layers
when any of its layers fails. The distance test is exact (point to triangle
of the inner skull mesh, not MNE's point to nearest vertex), so it is never
more lenient than MNE's own test; the count, the ids and the reason of every
dropped column are recorded.

Engines
    ``"mne"`` runs MNE's own forward code on the kept sources (the same
    functions :func:`mne.make_forward_solution` calls, without its repeated
    per-source filter and without the two copies of the free gain its
    ``Forward`` keeps); ``"fast"`` is :func:`mne_laminar_plugin.engine.compute_gain`.

Orientations
    ``"fixed"``: one column per source, the projection of the free (x, y, z)
    leadfield on the source's orientation (rotated into the head frame), which
    is what :func:`mne.convert_forward_solution` with ``force_fixed=True``
    gives for a discrete source space whose ``nn`` are the orientations.
    ``"free"``: MNE's basis, three columns per source (source-major, x/y/z of
    the **head** coordinate frame): ``Q_basis`` is the identity per source.

Units here are MNE's SI units (T/(A·m), T/(m·A·m), V/(A·m)); the conversion to
fT/nAm, fT/cm/nAm and µV/nAm happens once, in :mod:`mne_laminar_plugin.leadfield`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mne.io.constants import FIFF
from mne.utils import _check_option, _validate_type, logger, verbose

from .._conventions import FORWARD_ENGINES, ORIENTATION_TYPES, check_memory
from ..mesh import points_inside_surface, surface_distance_below

#: Reasons recorded for dropped columns.
REASON_OUTSIDE = "outside the inner skull"
REASON_MINDIST = "closer than mindist to the inner skull"
#: A skull margin (mm) above this cannot leave any cortex (a head is ~70 mm in radius).
MAX_PLAUSIBLE_MINDIST = 30.0
REASON_ZERO_ORI = "zero-length or non-finite orientation"
REASON_NONFINITE = "non-finite position"
REASON_MNE = "dropped by MNE's forward (outside the inner skull by MNE's test)"


@dataclass
class LaminarForward:
    """A laminar leadfield in MNE's SI units, as computed.

    Attributes
    ----------
    gain : ndarray, shape (n_channels, n_sources) | (n_channels, 3 * n_sources)
        SI units. Fixed: one column per source. Free: three columns per
        source (source-major, x/y/z of the head frame).
    orientation_type : "fixed" | "free"
    info : mne.Info
        Measurement info of the rows, in row order (MEG then EEG, like MNE).
    mri_head_t : mne.transforms.Transform
        MRI -> head transform used.
    n_layers : int
    n_columns : int
        Number of columns of the input surfaces (before dropping).
    columns : ndarray of int, shape (n_kept,)
        Kept column ids (indices into the input columns), increasing.
    rr_mri, nn_mri : ndarray, shape (n_sources, 3)
        Source positions (m) and unit orientations in the MRI frame,
        layer-major over the kept columns.
    dropped : dict
        ``{"columns": ndarray of ids, "reasons": list of str}``, one reason per
        dropped column, plus ``"counts"`` per reason.
    engine, mindist, conductor : as used (``conductor`` describes the BEM).
    hemi, vertno : ndarray | None, shape (n_columns,)
        Hemisphere and FreeSurfer vertex of every input column, if known.
    timings : dict
        Seconds spent in the column check and in the forward.
    """

    gain: np.ndarray
    orientation_type: str
    info: Any
    mri_head_t: Any
    n_layers: int
    n_columns: int
    columns: np.ndarray
    rr_mri: np.ndarray
    nn_mri: np.ndarray
    dropped: dict
    engine: str
    mindist: float
    conductor: str
    hemi: np.ndarray | None = None
    vertno: np.ndarray | None = None
    timings: dict = field(default_factory=dict)

    @property
    def ch_names(self) -> list[str]:
        return list(self.info["ch_names"])

    @property
    def n_sources(self) -> int:
        return self.n_layers * len(self.columns)

    @property
    def layer(self) -> np.ndarray:
        """Layer of every source (layer-major)."""
        return np.repeat(np.arange(self.n_layers), len(self.columns))

    @property
    def column(self) -> np.ndarray:
        """Column id of every source (layer-major)."""
        return np.tile(self.columns, self.n_layers)

    @property
    def rr_head(self) -> np.ndarray:
        from mne.transforms import apply_trans

        return apply_trans(self.mri_head_t, self.rr_mri)

    @property
    def nn_head(self) -> np.ndarray:
        return self.nn_mri @ self.mri_head_t["trans"][:3, :3].T


# ------------------------------------------------------------------ inputs
def _get_mri_head_t(trans):
    """MRI -> head Transform from a path, a Transform, 'fsaverage' or 'identity'."""
    from mne.transforms import Transform, _get_trans

    if isinstance(trans, str) and trans == "identity":
        return Transform("mri", "head"), "identity"
    if trans is None:
        raise ValueError(
            "trans is required: give a head<->MRI transform file (-trans.fif), "
            "a mne.transforms.Transform, 'fsaverage', or 'identity' when the MRI "
            "and head frames coincide."
        )
    _validate_type(trans, ("path-like", Transform, str), "trans")
    if isinstance(trans, str | os.PathLike) and trans != "fsaverage":
        if not Path(trans).is_file():
            raise FileNotFoundError(f"trans file not found: {trans}")
    mri_head_t, desc = _get_trans(trans, "mri", "head")
    return mri_head_t, str(desc)


def _get_bem(bem):
    """A ConductorModel (BEM solution or sphere) from a path or an instance."""
    import mne
    from mne.bem import ConductorModel

    _validate_type(bem, ("path-like", ConductorModel), "bem")
    if not isinstance(bem, ConductorModel):
        path = Path(bem)
        if not path.is_file():
            raise FileNotFoundError(
                f"BEM solution file not found: {path} (make it with "
                "mne.make_bem_solution, or MBP's step source/make_bem_solution)"
            )
        try:
            return mne.read_bem_solution(path, verbose=False), str(path)
        except Exception as exc:
            raise ValueError(
                f"Could not read {path} as a BEM solution (-bem-sol.fif); a BEM "
                f"model without solution must go through mne.make_bem_solution "
                f"first. MNE said: {exc}"
            ) from exc
    if not bem["is_sphere"] and "solution" not in bem:
        raise ValueError(
            "bem is a BEM model without a solution; call mne.make_bem_solution(bem)"
        )
    return bem, "sphere model" if bem["is_sphere"] else "instance of ConductorModel"


def _get_info(info):
    import mne

    _validate_type(info, ("path-like", mne.Info), "info")
    if isinstance(info, mne.Info):
        return info, "instance of Info"
    path = Path(info)
    if not path.is_file():
        raise FileNotFoundError(f"Measurement info file not found: {path}")
    return mne.io.read_info(path, verbose=False), str(path)


def _gain_picks(info, *, meg, eeg) -> np.ndarray:
    """The rule: MEG channels without references, then EEG (may be empty)."""
    import mne

    picks = []
    if meg:
        picks.append(mne.pick_types(info, meg=True, ref_meg=False, exclude=[]))
    if eeg:
        picks.append(mne.pick_types(info, meg=False, eeg=True, exclude=[]))
    return np.concatenate(picks).astype(int) if picks else np.zeros(0, int)


def fwd_channel_picks(info, *, meg=True, eeg=True) -> np.ndarray:
    """Rows of a forward in MNE's order: MEG (no references) first, then EEG."""
    picks = _gain_picks(info, meg=meg, eeg=eeg)
    if len(picks) == 0:
        raise ValueError(
            f"No {'MEG' if meg else ''}{'/' if meg and eeg else ''}"
            f"{'EEG' if eeg else ''} channels in the measurement info "
            f"(channels: {info['ch_names'][:5]}...)"
        )
    return picks.astype(int)


def _surface_arrays(surfaces):
    """Layers (L, C, 3) and orientations (L, C, 3) from a LaminarSurfaces-like."""
    for attr in ("layers", "orientations"):
        if not hasattr(surfaces, attr):
            raise TypeError(
                f"surfaces must be a LaminarSurfaces (or have a {attr!r} "
                f"attribute), got {type(surfaces).__name__}"
            )
    layers = np.asarray(surfaces.layers, dtype=np.float64)
    if layers.ndim != 3 or layers.shape[-1] != 3 or layers.shape[0] < 1:
        raise ValueError(
            f"surfaces.layers must have shape (n_layers, n_columns, 3), got "
            f"{layers.shape}"
        )
    ori = np.asarray(surfaces.orientations, dtype=np.float64)
    if ori.shape == layers.shape[1:]:
        ori = np.broadcast_to(ori, layers.shape)
    elif ori.shape != layers.shape:
        raise ValueError(
            f"surfaces.orientations must have shape (n_columns, 3) = "
            f"{layers.shape[1:]} or (n_layers, n_columns, 3) = {layers.shape}, "
            f"got {ori.shape}"
        )
    hemi = getattr(surfaces, "hemi", None)
    vertno = getattr(surfaces, "vertno", None)
    n_col = layers.shape[1]
    hemi = None if hemi is None else np.asarray(hemi)
    vertno = None if vertno is None else np.asarray(vertno)
    if hemi is not None and hemi.shape != (n_col,):
        hemi = None
    if vertno is not None and vertno.shape != (n_col,):
        vertno = None
    return layers, ori, hemi, vertno


@verbose
def check_columns(layers_mri, bem, mri_head_t, mindist, *, verbose=None):
    """Which columns pass the inner-skull tests in every layer.

    Parameters
    ----------
    layers_mri : ndarray, shape (n_layers, n_columns, 3)
        Positions in metres, MRI (surface RAS) frame.
    bem : ConductorModel
        BEM solution (its inner skull surface, MRI frame) or sphere model
        (its innermost shell, head frame).
    mri_head_t : Transform
        MRI -> head.
    mindist : float
        Minimum distance (mm) of every layer to the inner skull.

    Returns
    -------
    reasons : ndarray of object, shape (n_columns,)
        ``None`` for kept columns, else the reason the column is dropped
        (the first failing test over all layers: outside, then mindist).

    Notes
    -----
    Both tests are exact: inside by ray crossings (:func:`points_inside_surface`,
    MNE uses solid angles after a sphere shortcut that calls points between
    the flat faces and the vertex sphere inside), distance point to triangle
    (MNE: to the nearest vertex, which overestimates it by up to an edge).
    The tests are therefore never more lenient than MNE's.
    """
    from mne.bem import _bem_find_surface
    from mne.transforms import apply_trans

    n_layers, n_col, _ = layers_mri.shape
    pts = layers_mri.reshape(-1, 3)
    reasons = np.full(n_col, None, object)
    finite = np.isfinite(pts).all(1).reshape(n_layers, n_col).all(0)
    reasons[~finite] = REASON_NONFINITE
    pts = np.where(np.isfinite(pts), pts, 0.0)
    limit = float(mindist) / 1000.0
    if bem["is_sphere"]:
        if not len(bem["layers"]):
            return reasons  # MEG-only sphere: no inner skull to test against
        r0, rad = np.asarray(bem["r0"], float), float(bem["layers"][0]["rad"])
        radius = np.linalg.norm(apply_trans(mri_head_t, pts) - r0, axis=1)
        inside = radius <= rad
        close = inside & (rad - radius < limit)
    else:
        surf = _bem_find_surface(bem, "inner_skull")
        if surf["coord_frame"] == FIFF.FIFFV_COORD_HEAD:
            pts = apply_trans(mri_head_t, pts)
        inside = points_inside_surface(pts, surf)
        close = np.zeros_like(inside)
        if limit > 0:
            idx = np.flatnonzero(inside)
            close[idx] = surface_distance_below(pts[idx], surf, limit)[0]
    inside = inside.reshape(n_layers, n_col).all(0)
    close = close.reshape(n_layers, n_col).any(0)
    keep = reasons == None  # noqa: E711
    reasons[keep & ~inside] = REASON_OUTSIDE
    reasons[keep & inside & close] = REASON_MINDIST
    return reasons


# ------------------------------------------------------------------ engines
def _fast_engine():
    from . import _engine

    if not callable(getattr(_engine, "compute_gain", None)):
        raise RuntimeError(
            "engine='fast' needs mne_laminar_plugin.forward.compute_gain, which is "
            "not available in this installation; use engine='mne'."
        )
    return _engine.compute_gain


def project_fixed(gain_free, nn, *, dtype=np.float64, max_bytes=2**27):
    """Fixed-orientation gain from a free (x, y, z) gain.

    Parameters
    ----------
    gain_free : ndarray, shape (n_channels, 3 * n_sources)
        Source-major, x/y/z-minor columns (MNE's free layout).
    nn : ndarray, shape (n_sources, 3)
        Unit orientations in the frame of the free components.
    dtype : dtype
        Output dtype.
    max_bytes : int
        Size of the blocks of the free gain processed at once.

    Returns
    -------
    gain : ndarray, shape (n_channels, n_sources)
        ``gain[:, i] = gain_free[:, 3i:3i+3] @ nn[i]``.
    """
    n_ch = gain_free.shape[0]
    n_src = nn.shape[0]
    if gain_free.shape[1] != 3 * n_src:
        raise ValueError(
            f"free gain has {gain_free.shape[1]} columns, expected 3 * {n_src}"
        )
    out = np.empty((n_ch, n_src), dtype)
    step = max(1, int(max_bytes // (24 * max(n_ch, 1))))
    for start in range(0, n_src, step):
        stop = min(start + step, n_src)
        blk = gain_free[:, 3 * start : 3 * stop].reshape(n_ch, stop - start, 3)
        out[:, start:stop] = np.einsum("csk,sk->cs", blk, nn[start:stop])
    return out


#: Use MNE's own two halves of make_forward_solution (sensor/BEM set-up, then
#: the field computation) without its per-source inside-skull filter, which
#: repeats our exact column test at O(n_sources x n_triangles). False (or an
#: MNE without these functions) calls mne.make_forward_solution instead.
_USE_MNE_INTERNALS = True


def _mne_internals():
    """MNE's private forward functions, if their signatures are as expected."""
    import inspect

    try:
        from mne.forward._compute_forward import _compute_forwards
        from mne.forward._make_forward import _prepare_for_forward
        from mne.forward.forward import _FWD_ORDER
    except ImportError:
        return None
    want = {"src", "mri_head_t", "info", "bem", "mindist", "n_jobs", "meg", "eeg"}
    if not want <= set(inspect.signature(_prepare_for_forward).parameters):
        return None
    if not {"rr", "bem", "sensors", "n_jobs"} <= set(
        inspect.signature(_compute_forwards).parameters
    ):
        return None
    return _prepare_for_forward, _compute_forwards, _FWD_ORDER


def _forward_mne_internals(info, mri_head_t, bem, rr, nn_head, want, *, fixed, meg,
                           eeg, n_jobs, dtype, max_bytes=2**27):  # fmt: skip
    """MNE's field computation for ``rr`` (MRI frame), rows in ``want`` order.

    The same code as :func:`mne.make_forward_solution` (sensor and BEM set-up,
    then ``_compute_forwards``), minus its source filtering (done before,
    exactly, per column) and its Forward bookkeeping (which keeps two copies
    of the free gain). The free (3 n_src, n_ch) blocks MNE returns are
    projected on ``nn_head`` (fixed) or transposed (free) block by block into
    the output. Returns None when MNE's internals are not available.
    """
    import mne
    from mne.transforms import apply_trans

    funcs = _mne_internals() if _USE_MNE_INTERNALS else None
    if funcs is None:
        return None
    prepare, compute, order = funcs
    sensors, _, _, _, bem_setup = prepare(
        mne.SourceSpaces([]), mri_head_t, info, bem, 0.0, n_jobs, meg=meg, eeg=eeg
    )
    blocks = compute(apply_trans(mri_head_t, rr), bem=bem_setup, sensors=sensors,
                     n_jobs=n_jobs)  # fmt: skip
    names = [n for key in order if key in blocks for n in sensors[key]["ch_names"]]
    if sorted(names) != sorted(want):
        raise RuntimeError(
            f"MNE computed channels {names[:5]}... which differ from the picked "
            f"channels {want[:5]}..."
        )
    n_src = len(rr)
    gain = np.empty((len(want), n_src if fixed else 3 * n_src), dtype)
    pos = {name: i for i, name in enumerate(want)}
    for key in order:
        if key not in blocks:
            continue
        block = blocks.pop(key)  # (3 * n_src, n_ch): source-major x/y/z rows
        rows = np.array([pos[n] for n in sensors[key]["ch_names"]])
        n_ch = block.shape[1]
        step = max(1, int(max_bytes // (24 * max(n_ch, 1))))
        for start in range(0, n_src, step):
            stop = min(start + step, n_src)
            blk = block[3 * start : 3 * stop]
            if fixed:
                blk = blk.reshape(stop - start, 3, n_ch)
                gain[rows, start:stop] = np.einsum("skc,sk->cs", blk, nn_head[start:stop])
            else:
                gain[rows, 3 * start : 3 * stop] = blk.T
        del block
    return gain


def _forward_mne(info, mri_head_t, bem, rr, nn, *, meg, eeg, n_jobs, subject):
    """mne.make_forward_solution on one discrete space; (free gain, kept, rows)."""
    import mne

    src = mne.setup_volume_source_space(
        subject=subject, pos=dict(rr=rr, nn=nn.copy()), verbose=False
    )
    # our column test is stricter than MNE's (exact distance), so mindist=0 here
    fwd = mne.make_forward_solution(
        info, mri_head_t, src, bem, meg=meg, eeg=eeg, mindist=0.0, n_jobs=n_jobs
    )
    kept = np.asarray(fwd["src"][0]["vertno"])
    gain = fwd["sol"]["data"]
    # the rows (MEG then EEG); fwd["info"] keeps the Info's order instead
    row_names = list(fwd["sol"]["row_names"])
    fwd["_orig_sol"] = None  # MNE keeps a second copy of the gain
    fwd["sol"]["data"] = None
    del fwd
    return gain, kept, row_names


@verbose
def compute_laminar_forward(
    surfaces,
    info,
    trans,
    bem,
    *,
    orientation_type="fixed",
    mindist=5.0,
    engine="fast",
    meg=True,
    eeg=True,
    dtype=np.float64,
    subject=None,
    n_jobs=None,
    verbose=None,
) -> LaminarForward:
    """Compute the laminar leadfield of every layer in one forward computation.

    Long on purpose: argument checks, the column drop test, the engine call
    and the provenance are one sequence whose intermediate arrays all feed
    the returned :class:`LaminarForward`.

    Parameters
    ----------
    surfaces : LaminarSurfaces
        Or any object with ``layers`` (n_layers, n_columns, 3) in metres, MRI
        surface-RAS frame, and ``orientations`` (n_columns, 3) or
        (n_layers, n_columns, 3); optional ``hemi`` and ``vertno``.
    info : path-like | mne.Info
        Measurement info (FIF file or instance) with the sensor definitions.
    trans : path-like | mne.transforms.Transform | "fsaverage" | "identity"
        Head <-> MRI transform.
    bem : path-like | mne.bem.ConductorModel
        BEM solution (``-bem-sol.fif``) or sphere model.
    orientation_type : "fixed" | "free"
        Fixed: projection of the free leadfield on each source's orientation.
        Free: x/y/z of the head frame, three columns per source.
    mindist : float
        Columns with any layer closer than this (mm) to the inner skull, or
        outside it, are dropped in every layer.
    engine : "mne" | "fast"
        ``"mne"``: MNE's forward code, i.e. the two halves of
        :func:`mne.make_forward_solution` (sensor/BEM set-up, field
        computation) without its per-source inside-skull filter, which the
        exact column test above replaces (falls back to
        :func:`mne.make_forward_solution` itself if those functions change).
        ``"fast"`` (default): this package's batched engine
        (:mod:`mne_laminar_plugin.engine`), same numbers to 1e-6.
    meg, eeg : bool
        Include MEG / EEG channels.
    dtype : dtype
        float64 or float32 for the returned gain.
    subject : str | None
        FreeSurfer subject name stored in the source space.
    n_jobs : int | None
        Passed to the engine.
    %(verbose)s

    Returns
    -------
    fwd : LaminarForward
        The SI gain with its channel info, kept columns and dropped columns.
    """
    import mne

    _check_option("orientation_type", orientation_type, ORIENTATION_TYPES)
    _check_option("engine", engine, FORWARD_ENGINES)
    _validate_type(mindist, "numeric", "mindist")
    if mindist < 0:
        raise ValueError(f"mindist must be >= 0 (mm), got {mindist}")
    dtype = np.dtype(dtype)
    _check_option("dtype", dtype.name, ("float64", "float32"))
    compute_gain = _fast_engine() if engine == "fast" else None
    t0 = time.perf_counter()
    layers, ori, hemi, vertno = _surface_arrays(surfaces)
    n_layers, n_col, _ = layers.shape
    info, _ = _get_info(info)
    mri_head_t, _ = _get_mri_head_t(trans)
    bem, bem_desc = _get_bem(bem)
    picks = fwd_channel_picks(info, meg=meg, eeg=eeg)

    # --- columns: kept in all layers or dropped in all layers
    norms = np.linalg.norm(ori, axis=-1)
    bad_ori = (~np.isfinite(norms) | (norms < 1e-12)).any(0)
    reasons = check_columns(layers, bem, mri_head_t, mindist, verbose=False)
    reasons[(reasons == None) & bad_ori] = REASON_ZERO_ORI  # noqa: E711
    kept_cols = np.flatnonzero(reasons == None)  # noqa: E711
    if len(kept_cols) == 0:
        raise RuntimeError(
            f"No column of the {n_col} is inside the inner skull and at least "
            f"{mindist} mm from it in every layer. "
            + (
                f"mindist={mindist} mm (the MBP option laminar_skull_margin) is "
                "larger than the brain: use a few mm (MBP's mindist, e.g. 5)."
                if mindist > MAX_PLAUSIBLE_MINDIST
                else "Check the trans and the BEM (or lower mindist, the MBP "
                "option laminar_skull_margin)."
            )
        )
    rr = layers[:, kept_cols].reshape(-1, 3)
    nn = ori[:, kept_cols]
    nn = (nn / np.linalg.norm(nn, axis=-1, keepdims=True)).reshape(-1, 3)
    n_kept = len(kept_cols)
    n_drop = n_col - n_kept
    logger.info(
        f"Laminar forward: {n_layers} layers x {n_kept} columns = {n_layers * n_kept}"
        f" sources ({n_drop} column{'s' if n_drop != 1 else ''} dropped), "
        f"{len(picks)} channels, engine {engine!r}"
    )
    t_check = time.perf_counter() - t0
    n_comp = 1 if orientation_type == "fixed" else 3
    check_memory(
        len(picks) * n_layers * n_kept * n_comp * dtype.itemsize,
        f"The {orientation_type} laminar leadfield ({len(picks)} channels x "
        f"{n_layers} layers x {n_kept} columns, {dtype.name})",
        hint="Use a coarser spacing (laminar_column_spacing), fewer layers "
        "(laminar_n_layers), or float32 (laminar_forward_float32).",
    )

    # --- the forward
    t1 = time.perf_counter()
    nn_head = nn @ mri_head_t["trans"][:3, :3].T
    fwd_info = mne.pick_info(info, picks)
    want = [info["ch_names"][p] for p in picks]
    gain = None
    if engine == "mne":
        gain = _forward_mne_internals(
            info, mri_head_t, bem, rr, nn_head, want,
            fixed=orientation_type == "fixed", meg=meg, eeg=eeg, n_jobs=n_jobs,
            dtype=dtype,
        )  # fmt: skip
    if engine == "mne" and gain is None:  # public API
        gain, kept_src, row_names = _forward_mne(
            info, mri_head_t, bem, rr, nn, meg=meg, eeg=eeg, n_jobs=n_jobs,
            subject=subject,
        )  # fmt: skip
        if row_names != want:  # MNE's rows are MEG then EEG, like picks
            order = [row_names.index(name) for name in want]
            gain = gain[order]
        if len(kept_src) < len(rr):
            # MNE dropped sources we kept: drop their whole column
            mask = np.zeros(len(rr), bool)
            mask[kept_src] = True
            col_ok = mask.reshape(n_layers, n_kept).all(0)
            reasons[kept_cols[~col_ok]] = REASON_MNE
            src_ok = np.tile(col_ok, n_layers)[kept_src]
            gain = gain.reshape(len(picks), -1, 3)[:, src_ok].reshape(len(picks), -1)
            kept_cols = kept_cols[col_ok]
            n_kept = len(kept_cols)
            keep_src = np.tile(col_ok, n_layers)
            rr, nn, nn_head = rr[keep_src], nn[keep_src], nn_head[keep_src]
        if orientation_type == "fixed":
            gain = project_fixed(gain, nn_head, dtype=dtype)
        elif gain.dtype != dtype:
            gain = gain.astype(dtype)
    elif engine == "fast":
        gain = compute_gain(
            fwd_info, mri_head_t, bem, rr,
            nn if orientation_type == "fixed" else None,
            meg=meg, eeg=eeg, n_jobs=n_jobs, dtype=dtype,
        )  # fmt: skip
        n_expect = len(rr) * (1 if orientation_type == "fixed" else 3)
        if gain.shape != (len(picks), n_expect):
            raise RuntimeError(
                f"engine 'fast' returned a gain of shape {gain.shape}, expected "
                f"{(len(picks), n_expect)}"
            )
        gain = np.asarray(gain, dtype=dtype)
    t_fwd = time.perf_counter() - t1

    dropped_ids = np.flatnonzero(reasons != None)  # noqa: E711
    dropped_reasons = [str(r) for r in reasons[dropped_ids]]
    counts = {r: dropped_reasons.count(r) for r in dict.fromkeys(dropped_reasons)}
    for reason, count in counts.items():
        logger.info(f"    {count} column(s) dropped: {reason}")
    return LaminarForward(
        gain=gain,
        orientation_type=orientation_type,
        info=fwd_info,
        mri_head_t=mri_head_t,
        n_layers=n_layers,
        n_columns=n_col,
        columns=kept_cols,
        rr_mri=rr,
        nn_mri=nn,
        dropped=dict(columns=dropped_ids, reasons=dropped_reasons, counts=counts),
        engine=engine,
        mindist=float(mindist),
        conductor=bem_desc,
        hemi=hemi,
        vertno=vertno,
        timings=dict(column_check=t_check, forward=t_fwd),
    )
