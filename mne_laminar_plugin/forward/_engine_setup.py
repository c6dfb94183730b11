"""Set-up of the fast forward engine: everything that does not depend on sources.

Sensor and coil definitions, the BEM solution for MEG and EEG, transforms and
the checked sources, gathered once into a :class:`_Plan` (reusing MNE for
each of them).
"""

from __future__ import annotations

import logging

import numpy as np
from mne.utils import (
    _validate_type,
    logger,
    verbose,
)

from ._engine_numba import _get_kernels, _n_cpus, _Threads
from ._inside import _FastCheckInside, _inside_surface

_MAG_FACTOR = 1e-7  # mu_0 / (4 pi), as mne.forward._compute_forward._MAG_FACTOR
_N_NEAR = 16  # float32 output: nearest BEM nodes whose terms stay float64
_NEAR_GRID = 0.005  # m, voxel size of the lookup of those nodes






# #############################################################################
# Setup: what MNE does once per forward computation


def _soa(x):
    """(n, 3) -> contiguous (3, n) float64."""
    return np.ascontiguousarray(np.asarray(x, float).T)


def _coil_arrays(defs):
    """Concatenate coil integration points like MNE's _concatenate_coils."""
    from mne.forward._compute_forward import _concatenate_coils

    rmags, cosmags, ws, bins = _concatenate_coils(defs)
    n_int = np.array([len(d["rmag"]) for d in defs])
    starts = np.concatenate([[0], np.cumsum(n_int)]).astype(np.int64)
    return rmags, cosmags, ws, starts


def _coil_groups(rmags, cw, starts):
    """Group coils by number of integration points: [(coil_idx, rmag, cw)].

    rmag and cw are (3, P, n_coils_in_group), the layout of _k_prim_*.
    """
    n_pts = np.diff(starts)
    groups = list()
    for n_p in np.unique(n_pts):
        coils = np.flatnonzero(n_pts == n_p)
        idx = starts[coils][np.newaxis, :] + np.arange(n_p)[:, np.newaxis]
        groups.append(
            (
                coils,
                np.ascontiguousarray(rmags[idx].transpose(2, 0, 1)),
                np.ascontiguousarray(cw[idx].transpose(2, 0, 1)),
            )
        )
    return groups


def _post_matrix(sens):
    """Compensation and post-picks as one (n_coils, n_out) matrix, or None."""
    comp = sens.get("compensator", None)
    picks = sens.get("post_picks", None)
    if comp is None and picks is None:
        return None
    n_coils = len(sens["defs"])
    post = np.eye(n_coils) if comp is None else np.asarray(comp, float).T
    if picks is not None:
        post = post[:, picks]
    return np.ascontiguousarray(post)


def _meg_bem_solution(bem, defs, mults, threads):
    """MEG field-computation matrix, equivalent to MNE's _bem_specify_coils.

    Returns (n_coils, n_nodes): field at each coil per unit infinite-medium
    potential at each BEM node, already multiplied by ``mults``.
    """
    from mne.transforms import apply_trans

    kernels = _get_kernels()
    rmags, cosmags, ws, starts = _coil_arrays(defs)
    t = bem["head_mri_t"]["trans"]  # coils are in head coordinates
    rmag = _soa(apply_trans(t, rmags))
    cw = _soa(apply_trans(t, cosmags, False) * ws[:, np.newaxis])
    sol = np.zeros((len(defs), bem["solution"].shape[1]))
    o1 = 0
    for surf, mult in zip(bem["surfs"], bem["field_mult"]):
        o2 = o1 + len(surf["rr"])
        nodes = np.ascontiguousarray(surf["rr"], float)
        area_nn = np.zeros((len(nodes), 3))
        tri_w = surf["tri_nn"] * (surf["tri_area"][:, np.newaxis] / 3.0)
        for vi in range(3):
            np.add.at(area_nn, surf["tris"][:, vi], tri_w)
        coeff = np.empty((len(nodes), len(defs)))

        def fun(a, b, nodes=nodes, area_nn=area_nn, coeff=coeff):
            kernels.lin_field_coeff(
                nodes[a:b], area_nn[a:b], rmag, cw, starts, coeff[a:b]
            )

        threads.run(len(nodes), fun)
        sol += np.dot(mult * coeff.T, bem["solution"][o1:o2])
        o1 = o2
    sol *= mults
    return sol


def _setup_bem(bem, n_eeg, mri_head_t):
    """MNE's _setup_bem (same checks and errors), without the deep copy.

    MNE deep-copies the ConductorModel, including its dense solution matrix
    (0.5 GB for a 3-layer ico-4 BEM); a shallow copy is enough here since
    only ``head_mri_t`` is added.
    """
    from mne.bem import ConductorModel, read_bem_solution
    from mne.io.constants import FIFF
    from mne.transforms import _coord_frame_name, _ensure_trans

    _validate_type(bem, ("path-like", ConductorModel), "bem")
    if not isinstance(bem, ConductorModel):
        bem = read_bem_solution(bem, verbose=False)
    bem = ConductorModel(bem)  # shallow
    if bem["is_sphere"]:
        if len(bem["layers"]) == 0 and n_eeg > 0:
            raise RuntimeError(
                "Spherical model has zero shells, cannot use with EEG data"
            )
        if bem["coord_frame"] != FIFF.FIFFV_COORD_HEAD:
            raise RuntimeError("Spherical model is not in head coordinates")
    else:
        frame = bem["surfs"][0]["coord_frame"]
        if frame != FIFF.FIFFV_COORD_MRI:
            raise RuntimeError(
                f"BEM is in {_coord_frame_name(frame)} coordinates, should be in MRI"
            )
        if n_eeg > 0 and len(bem["surfs"]) == 1:
            raise RuntimeError(
                "Cannot use a homogeneous (1-layer BEM) model for EEG forward "
                "calculations, consider using a 3-layer BEM instead"
            )
        bem["head_mri_t"] = _ensure_trans(mri_head_t, "head", "mri")
    return bem


def _check_meg_outside(bem, defs, mri_head_t):
    """MNE's check that no MEG sensor is inside the head (or inner skull)."""
    from mne.bem import _bem_find_surface
    from mne.surface import _CheckInsideSphere
    from mne.transforms import apply_trans, invert_transform

    meg_loc = np.array([coil["r0"] for coil in defs])
    if bem["is_sphere"]:
        surface = "outermost sphere shell"
        if bem.radius is None:
            return
        inside = _CheckInsideSphere(bem, check="outer")(meg_loc)
    else:
        meg_loc = apply_trans(invert_transform(mri_head_t), meg_loc)
        three = len(bem["surfs"]) == 3
        surface = "scalp surface" if three else "inner skull surface"
        surf = _bem_find_surface(bem, "head" if three else "inner_skull")
        inside = _inside_surface(_FastCheckInside(surf), meg_loc)
    n_inside = int(inside.sum())
    if n_inside:
        raise RuntimeError(
            f"Found {n_inside} MEG sensor{'s' if n_inside > 1 else ''} inside the "
            f"{surface}, perhaps coordinate frames and/or coregistration are "
            "incorrect (as mne.make_forward_solution, on_inside='raise')"
        )


class _Plan:
    """Everything the per-chunk work needs: plain arrays, cheap to pickle."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


@verbose
def _make_plan(info, trans, bem, *, meg, eeg, n_jobs=None, verbose=None):
    """Do once what MNE does once: sensors, conductor, transforms.

    Long on purpose: mirrors MNE's ``_prepare_for_forward`` step by step, so
    that each part can be compared with MNE's source.
    """
    from mne import Info
    from mne.forward._compute_forward import _bem_specify_els
    from mne.forward._make_forward import _prepare_for_forward
    from mne.io import read_info
    from mne.io.constants import FIFF
    from mne.source_space import SourceSpaces
    from mne.transforms import _get_trans, invert_transform
    from mne.utils import _check_fname

    _validate_type(info, ("path-like", Info), "info")
    if not isinstance(info, Info):
        info = read_info(_check_fname(info, "read", must_exist=True, name="info"))
    mri_head_t, trans_name = _get_trans(trans)
    mne_verbose = "debug" if logger.level <= logging.DEBUG else "warning"
    # An empty source space and no BEM: MNE's own preparation (channel
    # selection, coil and electrode definitions in head coordinates with MNE's
    # "accurate" integration points, compensation) without touching any
    # source; then MNE's BEM set-up, and its sensors-inside-the-head check
    # with the fast inside test (same decisions, without building qhull
    # structures for the surface).
    sensors, _, _, _, _ = _prepare_for_forward(
        SourceSpaces([]),
        mri_head_t,
        info,
        None,
        0.0,
        n_jobs,
        trans=trans_name,
        meg=meg,
        eeg=eeg,
        allow_bem_none=True,
        verbose=mne_verbose,
    )
    n_eeg = len(sensors["eeg"]["ch_names"]) if "eeg" in sensors else 0
    bem = _setup_bem(bem, n_eeg, mri_head_t)
    if "meg" in sensors:
        _check_meg_outside(bem, sensors["meg"]["defs"], mri_head_t)
    ch_names = list()
    for key in ("meg", "eeg"):  # MNE's _FWD_ORDER: MEG rows, then EEG rows
        if key in sensors:
            ch_names += list(sensors[key]["ch_names"])
    plan = _Plan(
        is_sphere=bool(bem["is_sphere"]),
        ch_names=ch_names,
        n_ch=len(ch_names),
        mri_head=np.array(mri_head_t["trans"], float),
        has_meg="meg" in sensors,
        has_eeg="eeg" in sensors,
    )
    n_meg = len(sensors["meg"]["ch_names"]) if plan.has_meg else 0
    plan.meg_sl = slice(0, n_meg)
    plan.eeg_sl = slice(n_meg, plan.n_ch)
    if plan.has_meg:
        defs = sensors["meg"]["defs"]
        rmags, cosmags, ws, starts = _coil_arrays(defs)
        plan.meg_post = _post_matrix(sensors["meg"])
        plan.meg_n_coils = len(defs)
        if plan.is_sphere:
            # groups of (coils, pos - r0, cosmag, w)
            plan.meg_groups = [
                (coils, pos, cosm, np.ascontiguousarray(w[0]))
                for (coils, pos, cosm), (_, w, _) in zip(
                    _coil_groups(rmags - bem["r0"], cosmags, starts),
                    _coil_groups(np.c_[ws, ws, ws], cosmags, starts),
                )
            ]
        else:
            # mu0 / 4 pi folded into w c; coil -> column of the output (no
            # compensation) or of a coil buffer (compensation / references)
            cw = cosmags * (ws * _MAG_FACTOR)[:, np.newaxis]
            plan.meg_groups = [
                (coils, rmag, cw, np.ascontiguousarray(coils, np.int64))
                for coils, rmag, cw in _coil_groups(rmags, cw, starts)
            ]
    if plan.is_sphere:
        plan.r0 = np.array(bem["r0"], float)
        if plan.has_eeg:
            rmags, _, ws, starts = _coil_arrays(sensors["eeg"]["defs"])
            plan.eeg_pos = _soa(rmags - bem["r0"])
            plan.eeg_w = np.ascontiguousarray(ws, float)
            plan.eeg_starts = starts
            plan.eeg_rad = float(bem["layers"][0]["rad"])
            plan.eeg_mu = np.ascontiguousarray(bem["mu"], float)
            plan.eeg_lambda = np.ascontiguousarray(bem["lambda"], float)
        return plan
    if bem["bem_method"] != FIFF.FIFFV_BEM_APPROX_LINEAR:
        raise RuntimeError(
            "Only linear-collocation BEM solutions are supported by the fast "
            f"engine (got bem_method={bem['bem_method']}); use engine='mne'."
        )
    if bem.get("solver", "mne") != "mne":
        raise RuntimeError(
            "The BEM solution was computed with OpenMEEG; the fast engine "
            "supports MNE's linear-collocation solutions only, use engine='mne'."
        )
    head_mri_t = invert_transform(mri_head_t)
    plan.head_mri = np.array(head_mri_t["trans"], float)
    # as MNE's _prep_field_computation: mu_0/(4 pi) factor stored per node
    mults = np.repeat(
        bem["source_mult"] / (4.0 * np.pi), [len(s["rr"]) for s in bem["surfs"]]
    )[np.newaxis, :]
    plan.nodes = _soa(np.concatenate([s["rr"] for s in bem["surfs"]]))
    plan.mri_Q = np.ascontiguousarray(bem["head_mri_t"]["trans"][:3, :3].T)
    rows = list()
    if plan.has_meg:
        logger.info("Composing the field computation matrix (fast engine)...")
        sol = _meg_bem_solution(bem, sensors["meg"]["defs"], mults, _Threads(_n_cpus()))
        if plan.meg_post is not None:
            sol = plan.meg_post.T @ sol
        rows.append(sol * _MAG_FACTOR)
    if plan.has_eeg:
        logger.info("Setting up for EEG...")
        rows.append(_bem_specify_els(bem, sensors["eeg"]["defs"], mults))
    # (n_nodes, n_ch): the BEM-correction operator for MEG and EEG together
    plan.sol_T = np.ascontiguousarray(np.concatenate(rows, axis=0).T)
    return plan


def _near_table(nodes):
    """Nearest BEM nodes to the centres of a regular grid around the nodes."""
    from scipy.spatial import cKDTree

    lo = nodes.min(0) - _NEAR_GRID
    n = np.ceil((nodes.max(0) + _NEAR_GRID - lo) / _NEAR_GRID).astype(int)
    axes = [lo[d] + _NEAR_GRID * (np.arange(n[d]) + 0.5) for d in range(3)]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    k = min(_N_NEAR, len(nodes))
    table = cKDTree(nodes).query(centres, k=k, workers=-1)[1]
    table = np.ascontiguousarray(table.reshape(len(centres), k), np.int64)
    return table, np.array([*lo, _NEAR_GRID, *n], float)





def _check_sources(rr_mri, nn_mri):
    _validate_type(rr_mri, np.ndarray, "rr_mri")
    rr = np.asarray(rr_mri, dtype=float)
    if rr.ndim != 2 or rr.shape[1] != 3:
        raise ValueError(
            f"rr_mri must have shape (n_sources, 3) in metres (MRI surface RAS), "
            f"got shape {rr.shape}; reshape your source positions accordingly."
        )
    if not np.isfinite(rr).all():
        raise ValueError("rr_mri contains NaN or infinite values; drop those sources.")
    if nn_mri is None:
        return rr, None
    _validate_type(nn_mri, np.ndarray, "nn_mri")
    nn = np.array(nn_mri, dtype=float)
    if nn.shape != rr.shape:
        raise ValueError(
            f"nn_mri must have the same shape as rr_mri {rr.shape} (one unit "
            f"orientation per source), got {nn.shape}; pass nn_mri=None for free "
            "orientation."
        )
    norm = np.linalg.norm(nn, axis=1)
    bad = ~(np.isfinite(norm) & (norm > 0))
    if bad.any():
        raise ValueError(
            f"nn_mri has {bad.sum()} zero or non-finite orientation vector(s) "
            f"(first at index {np.flatnonzero(bad)[0]}); every source needs a "
            "non-zero orientation."
        )
    nn /= norm[:, np.newaxis]  # as mne.setup_volume_source_space(pos=...) does
    return rr, nn
