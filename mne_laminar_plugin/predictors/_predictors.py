"""Anatomical predictors of laminar inference accuracy, the score and priors.

Per cortical column (a vertex seen at every depth), following Szul et al.
(2025) and the laMEG tutorial "Anatomical Predictors of Laminar Inference
Accuracy", re-derived from the published formulas:

``thickness`` (mm)
    ``‖pial_v − white_v‖`` on corresponding vertices (first and last layer),
    not FreeSurfer's ``?h.thickness``.
``lf_rms_diff``
    ``sqrt(mean_c (G[deep, v, c] − G[pial, v, c])²)`` over sensors ``c``, the
    RMS of the deepest minus the most superficial layer's leadfield. Channel
    types are never summed in raw units: either the noise-whitened leadfield
    is used (a whitener or a noise covariance is given), or a single channel
    type (``ch_type``), and the units are recorded.
``radiality`` (0–1)
    ``|cos|`` between the column orientation (pial layer) and the scalp
    normal at the point of the scalp closest to the pial vertex: the normal
    of the closest triangle, or where that point is an edge or vertex shared
    by several triangles, the normalized sum of their normals.
``distance`` (mm)
    Distance from the pial vertex to the scalp surface: the exact closest
    point on the scalp's triangles (not the nearest scalp vertex, which
    discretises the distance by the mesh spacing).

The composite score is ``z(thickness) + z(lf_rms_diff) + z(radiality) −
z(distance)``, each ``z`` a population z-score (ddof=0) over the columns
where every predictor is finite; columns with a non-finite predictor get a
NaN score and are never selected as best vertex or prior.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mne.utils import _check_option, _validate_type, logger, verbose, warn

from .. import bids

#: The four predictors, in the order of the score.
PREDICTORS = ("thickness", "lf_rms_diff", "radiality", "distance")
#: Sign of each z-scored predictor in the composite score.
SCORE_SIGNS = {"thickness": 1.0, "lf_rms_diff": 1.0, "radiality": 1.0, "distance": -1.0}
#: TSV column name of the composite score.
SCORE_NAME = "anatomical_score"
#: ``desc-`` label of each map (see :data:`mne_laminar_plugin.bids.DESCRIPTIONS`).
MAP_DESC = {
    "thickness": "thickness",
    "lf_rms_diff": "lfrmsdiff",
    "radiality": "radiality",
    "distance": "distance",
    SCORE_NAME: "score",
}
LONG_NAMES = {
    "thickness": "Cortical thickness along the column",
    "lf_rms_diff": "Leadfield RMS difference, deepest minus most superficial layer",
    "radiality": "Radiality of the column to the scalp",
    "distance": "Distance from the pial vertex to the scalp",
    SCORE_NAME: "Composite anatomical score",
}
DESCRIPTIONS = {
    "thickness": "Euclidean distance between the pial (layer 0) and white (last "
    "layer) position of the column, in mm.",
    "lf_rms_diff": "sqrt(mean over channels of (G_deep - G_pial)^2) of the "
    "fixed-orientation laminar leadfield; NaN where the pial or deepest "
    "leadfield of the column is zero or not finite (dropped column).",
    "radiality": "|cos| of the angle between the column orientation (pial layer) "
    "and the scalp normal at the point of the scalp closest to the pial vertex "
    "(normal of the closest triangle; on an edge or vertex, the normalized sum "
    "of the normals of the triangles sharing it); 1 = radial, 0 = tangential.",
    "distance": "Distance from the pial vertex to the closest point of the scalp "
    "surface (exact point-to-triangle distance), in mm.",
    SCORE_NAME: "z(thickness) + z(lf_rms_diff) + z(radiality) - z(distance), "
    "population z-scores (ddof=0) over the columns where every predictor is "
    "finite (optionally weighted); NaN elsewhere. Higher = better predicted "
    "laminar discriminability.",
}

#: MNE's SI leadfield units (e.g. of a LaminarForward's gain), per FIFF unit.
_SI_LABELS = {112: "T/Am", 201: "T/m/Am", 107: "V/Am"}
_CH_TYPE_ORDER = ("mag", "grad", "eeg")


def _norm_unit(unit: str) -> str:
    unit = str(unit).replace("µ", "u").replace("μ", "u").lower()
    return re.sub(r"[\s()*·.]", "", unit)


def _physical_units() -> list[str]:
    """Leadfield unit labels that have an SI factor (library and SI labels)."""
    from ..leadfield import UNITS

    return [label for _, _, label, _ in UNITS.values()] + list(_SI_LABELS.values())


def _unit_to_si(unit: str) -> float | None:
    """Factor from a leadfield unit label to MNE's SI units, or None if unknown.

    The library units and their SI factors come from
    :data:`mne_laminar_plugin.leadfield.UNITS` (the one place of the
    conversion); SI labels give 1.
    """
    from ..leadfield import UNITS

    key = _norm_unit(unit)
    for si_to_target, _, label, _ in UNITS.values():
        if _norm_unit(label) == key:
            return 1.0 / si_to_target
    if key in {_norm_unit(lab) for lab in _SI_LABELS.values()}:
        return 1.0
    return None


# ===================================================================== geometry
def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("...i,...i->...", a, b)


def _vertex_triangles(tris: np.ndarray, n_vert: int) -> np.ndarray:
    """Padded vertex -> incident triangles table, -1 where unused."""
    flat = tris.ravel()
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=n_vert)
    width = max(int(counts.max()) if counts.size else 0, 1)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(flat.size) - np.repeat(start, counts)
    table = np.full((n_vert, width), -1, np.int64)
    table[flat[order], rank] = order // 3
    return table


def _max_barycentric_variance(rr: np.ndarray, tris: np.ndarray) -> float:
    """Max over triangles and their points p of sum_i λ_i |v_i − p|².

    For ``p = Σ λ_i v_i`` and any point ``q``:
    ``|p − q|² = Σ λ_i |v_i − q|² − Σ λ_i |v_i − p|²``, so a triangle whose
    vertices are all at least ``D`` from ``q`` is at least
    ``sqrt(D² − V)`` from ``q``. ``V`` is the squared circumradius for a
    non-obtuse triangle and a quarter of the squared longest edge otherwise.
    """
    a, b, c = (rr[tris[:, k]] for k in range(3))
    e = np.stack(
        [_rowdot(b - c, b - c), _rowdot(c - a, c - a), _rowdot(a - b, a - b)], axis=1
    )
    e_max = e.max(axis=1)
    cross2 = _rowdot(np.cross(b - a, c - a), np.cross(b - a, c - a))
    non_obtuse = 2 * e_max <= e.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.prod(e, axis=1) / (4.0 * cross2)
    v = np.where(non_obtuse & np.isfinite(r2), r2, e_max / 4.0)
    return float(v.max()) if v.size else 0.0


@verbose
def closest_points_on_mesh(
    points: np.ndarray,
    rr: np.ndarray,
    tris: np.ndarray,
    *,
    n_neighbors: int = 6,
    n_jobs: int | None = None,
    verbose: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact closest point of a triangle mesh to each of many points.

    Candidates are the triangles incident to the ``n_neighbors`` nearest mesh
    vertices (KD-tree); the exact point-to-triangle distance is computed for
    all of them at once. The result is certified exact when
    ``d² ≤ D² − V``, with ``D`` the distance of the next nearest vertex and
    ``V`` the largest barycentric variance of any triangle (see Notes);
    uncertified points are redone with 4x more neighbours, and the few
    that remain are compared against every triangle.

    Parameters
    ----------
    points : array, shape (n_points, 3)
        Query points (same units as ``rr``).
    rr : array, shape (n_vertices, 3)
        Mesh vertices.
    tris : array, shape (n_triangles, 3)
        Triangles (vertex indices).
    n_neighbors : int
        Nearest vertices whose triangles are tested first.
    n_jobs : int | None
        Threads of the KD-tree queries (None: 1, -1: all cores).
    %(verbose)s

    Returns
    -------
    distance : array, shape (n_points,)
        Euclidean distance to the closest point of the mesh.
    closest : array, shape (n_points, 3)
        The closest point.
    tri : array, shape (n_points,)
        Index of the triangle that holds the closest point (the first one
        when several share it, e.g. at an edge or vertex).

    Notes
    -----
    For ``p = Σ λ_i v_i`` on a triangle and any ``q``,
    ``|p − q|² = Σ λ_i |v_i − q|² − Σ λ_i |v_i − p|²``, so a triangle none
    of whose vertices is among the ``k`` nearest is at least
    ``sqrt(D_{k+1}² − V)`` away. The bound depends on the triangle size, not
    on the distance of the point to the mesh, so a few neighbours certify
    almost every point.
    """
    points = np.asarray(points, float)
    rr = np.asarray(rr, float)
    tris = np.asarray(tris, np.int64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (n, 3), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("points must be finite (drop NaN/inf positions first)")
    if rr.ndim != 2 or rr.shape[1] != 3 or len(rr) < 3:
        raise ValueError(f"mesh vertices rr must have shape (n>=3, 3), got {rr.shape}")
    if tris.ndim != 2 or tris.shape[1] != 3 or len(tris) == 0:
        raise ValueError(f"mesh tris must have shape (n>=1, 3), got {tris.shape}")
    if tris.min() < 0 or tris.max() >= len(rr):
        raise ValueError(
            f"mesh tris index vertices 0..{len(rr) - 1}, got {tris.min()}..{tris.max()}"
        )
    from scipy.spatial import cKDTree

    n_pts = len(points)
    dist = np.full(n_pts, np.inf)
    closest = np.full((n_pts, 3), np.nan)
    tri_idx = np.full(n_pts, -1, np.int64)
    if n_pts == 0:
        return dist, closest, tri_idx
    # only vertices used by a triangle are candidates
    used = np.unique(tris)
    # large leaves: the query points are far from the mesh (cm vs mm spacing)
    tree = cKDTree(rr[used], leafsize=64)
    workers = 1 if n_jobs is None else int(n_jobs)
    vtab = _vertex_triangles(tris, len(rr))[used]
    v_max = _max_barycentric_variance(rr, tris)
    geom = _TriGeom(rr, tris)
    n_used = len(used)
    todo = np.arange(n_pts)
    k = max(1, int(n_neighbors))
    while todo.size and k < n_used:
        d_nn, i_nn = tree.query(points[todo], k=k + 1, workers=workers)
        cand = vtab[i_nn[:, :k]].reshape(len(todo), -1)
        _closest_candidates(points, geom, todo, cand, dist, closest, tri_idx)
        cert = dist[todo] ** 2 <= d_nn[:, k] ** 2 - v_max
        logger.debug(
            f"    closest point: k={k}, {cert.sum()}/{len(todo)} points certified"
        )
        todo = todo[~cert]
        k *= 4
        if k > 256:
            break
    if todo.size:  # compare with every triangle
        logger.info(
            f"    closest point: {len(todo)} point(s) checked against all "
            f"{len(tris)} triangles"
        )
        all_tris = np.arange(len(tris))
        chunk = max(1, 2_000_000 // len(tris))
        for start in range(0, len(todo), chunk):
            sub = todo[start : start + chunk]
            cand = np.broadcast_to(all_tris, (len(sub), len(tris)))
            _closest_candidates(points, geom, sub, cand, dist, closest, tri_idx)
    return dist, closest, tri_idx


class _TriGeom:
    """Per-triangle quantities of the closest-point computation.

    ``packed`` holds, per triangle, ``a`` (3), ``ab`` (3), ``ac`` (3) and the
    Gram entries ``ab.ab``, ``ab.ac``, ``ac.ac`` relative to ``origin``, in
    float32 for the candidate search (one gather per candidate); the chosen
    triangle is re-evaluated in float64.
    """

    def __init__(self, rr: np.ndarray, tris: np.ndarray):
        self.origin = rr.mean(axis=0)
        a = rr[tris[:, 0]] - self.origin
        ab = rr[tris[:, 1]] - rr[tris[:, 0]]
        ac = rr[tris[:, 2]] - rr[tris[:, 0]]
        self.a, self.ab, self.ac = a, ab, ac
        self.gram = np.stack([_rowdot(ab, ab), _rowdot(ab, ac), _rowdot(ac, ac)], axis=1)
        self.packed = np.concatenate([a, ab, ac, self.gram], axis=1).astype(np.float32)


def _closest_params(ap, ab, ac, aa, bc, cc):
    """Barycentric (s, t) of the closest point ``a + s ab + t ac`` and its d².

    Voronoi-region classification of the point against the triangle's
    vertices, edges and face (the standard exact construction, e.g.
    Ericson, *Real-Time Collision Detection*, §5.1.5), vectorised, with the
    dot products ``d3..d6`` expressed through ``d1, d2`` and the triangle's
    Gram matrix so that only ``ap = p - a`` is needed per point. Vertex and
    edge regions give exact 0/1 barycentric values.
    """
    d1 = _rowdot(ab, ap)
    d2 = _rowdot(ac, ap)
    d3 = d1 - aa
    d4 = d2 - bc
    d5 = d1 - bc
    d6 = d2 - cc
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        denom = va + vb + vc
        s = vb / denom
        t = vc / denom
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
    regions = (
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), 1.0 - t_bc, t_bc),  # edge bc
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), 0.0, t_ac),  # edge ac
        ((d6 >= 0) & (d5 <= d6), 0.0, 1.0),  # vertex c
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), t_ab, 0.0),  # edge ab
        ((d3 >= 0) & (d4 <= d3), 1.0, 0.0),  # vertex b
        ((d1 <= 0) & (d2 <= 0), 0.0, 0.0),  # vertex a
    )
    for mask, s_val, t_val in regions:
        np.copyto(s, s_val, where=mask)
        np.copyto(t, t_val, where=mask)
    bad = ~(np.isfinite(s) & np.isfinite(t))
    np.copyto(s, 0.0, where=bad)
    np.copyto(t, 0.0, where=bad)
    # |ap - s ab - t ac|^2 from the Gram matrix
    out = _rowdot(ap, ap) - 2 * (s * d1 + t * d2) + s * (s * aa + 2 * t * bc) + t * t * cc
    return s, t, np.maximum(out, 0.0)


def _closest_candidates(points, geom, which, cand, dist, closest, tri_idx):
    """Update dist/closest/tri_idx of points[which] with candidate triangles."""
    n_cand = cand.shape[1]
    chunk = max(1, 200_000 // max(n_cand, 1))  # small chunks stay in cache
    rel = (points - geom.origin).astype(np.float32)
    for start in range(0, len(which), chunk):
        idx = which[start : start + chunk]
        c = cand[start : start + chunk]
        valid = c >= 0
        c = np.where(valid, c, 0)
        g = geom.packed[c]  # (n, C, 12)
        ap = rel[idx][:, np.newaxis, :] - g[..., 0:3]
        _, _, d2 = _closest_params(ap, g[..., 3:6], g[..., 6:9], g[..., 9], g[..., 10], g[..., 11])
        d2[~valid] = np.inf
        rows = np.arange(len(idx))
        tb = c[rows, np.argmin(d2, axis=1)]
        # exact (float64) evaluation of the chosen triangle
        ap64 = points[idx] - geom.origin - geom.a[tb]
        s, t, _ = _closest_params(ap64, geom.ab[tb], geom.ac[tb], *geom.gram[tb].T)
        diff = ap64 - s[:, np.newaxis] * geom.ab[tb] - t[:, np.newaxis] * geom.ac[tb]
        d_best = np.sqrt(_rowdot(diff, diff))
        better = d_best < dist[idx]
        upd = idx[better]
        dist[upd] = d_best[better]
        closest[upd] = points[upd] - diff[better]
        tri_idx[upd] = tb[better]


def _triangle_normals(rr: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Unit normals of the triangles (right-hand winding); zero if degenerate."""
    from ..surfaces import _face_normals

    return _face_normals(np.asarray(rr, float), np.asarray(tris))[0]


def _signed_volume(rr: np.ndarray, tris: np.ndarray) -> float:
    a, b, c = (rr[tris[:, k]] for k in range(3))
    return float(_rowdot(a, np.cross(b, c)).sum() / 6.0)


def _edge_neighbors(tris: np.ndarray) -> np.ndarray:
    """Triangle across each local edge (0: v0-v1, 1: v1-v2, 2: v2-v0), -1 if none."""
    n_tri = len(tris)
    edges = np.stack([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]], axis=1)
    edges = np.sort(edges.reshape(-1, 2), axis=1)
    key = edges[:, 0] * (int(tris.max()) + 1) + edges[:, 1]
    order = np.argsort(key, kind="stable")
    ks = key[order]
    nb = np.full(3 * n_tri, -1, np.int64)
    pair = np.flatnonzero(ks[1:] == ks[:-1])  # manifold edges: exactly 2 sharing
    nb[order[pair]] = order[pair + 1] // 3
    nb[order[pair + 1]] = order[pair] // 3
    return nb.reshape(n_tri, 3)


def surface_normals_at(
    rr: np.ndarray, tris: np.ndarray, points: np.ndarray, tri: np.ndarray
) -> np.ndarray:
    """Unit normal of a mesh at points lying on given triangles.

    The normal of the triangle when the point is inside it; when the point
    is on an edge or a vertex (where several triangles hold it equally) the
    normalized sum of the unit normals of the triangles sharing that edge or
    vertex (for a vertex, laMEG's scalp vertex normal), so ties never depend
    on which triangle a search returned.

    Parameters
    ----------
    rr, tris : array
        The mesh.
    points : array, shape (n, 3)
        Points on the mesh (e.g. closest points).
    tri : array of int, shape (n,)
        The triangle holding each point.

    Returns
    -------
    nn : array, shape (n, 3)
        Unit normals, oriented like the triangles' winding (zero where
        degenerate).
    """
    tri_nn = _triangle_normals(rr, tris)
    t = tris[tri]
    a = rr[t[:, 0]]
    ab = rr[t[:, 1]] - a
    ac = rr[t[:, 2]] - a
    gram = [_rowdot(ab, ab), _rowdot(ab, ac), _rowdot(ac, ac)]
    s, u, _ = _closest_params(points - a, ab, ac, *gram)
    nn = tri_nn[tri].copy()
    # vertex normals: sum of unit normals of incident triangles
    vnn = np.zeros_like(rr)
    for k in range(3):
        np.add.at(vnn, tris[:, k], tri_nn)
    eps = 1e-12
    at_a = (s <= eps) & (u <= eps)
    at_b = (s >= 1 - eps) & (u <= eps)
    at_c = (s <= eps) & (u >= 1 - eps)
    on_v = at_a | at_b | at_c
    vert = np.where(at_a, t[:, 0], np.where(at_b, t[:, 1], t[:, 2]))
    nn[on_v] = vnn[vert[on_v]]
    # edge normals: this triangle's plus the neighbour's across the edge
    local = np.where(u <= eps, 0, np.where(s <= eps, 2, 1))
    on_e = ~on_v & ((u <= eps) | (s <= eps) | (np.abs(s + u - 1) <= eps))
    if on_e.any():
        nb = _edge_neighbors(tris)[tri[on_e], local[on_e]]
        nn[on_e] += np.where(nb[:, np.newaxis] >= 0, tri_nn[np.maximum(nb, 0)], 0.0)
    norm = np.linalg.norm(nn, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, nn / norm, 0.0)


# ======================================================================= scalp
@dataclass
class Scalp:
    """A scalp surface in metres, MRI (surface RAS) frame.

    Attributes
    ----------
    rr : array, shape (n_vertices, 3)
        Vertices (m).
    tris : array, shape (n_triangles, 3)
        Triangles.
    source : str
        Where the surface came from (file name or a description).
    """

    rr: np.ndarray
    tris: np.ndarray
    source: str = "array"

    def __repr__(self) -> str:
        return (
            f"<Scalp | {len(self.rr)} vertices, {len(self.tris)} triangles, "
            f"from {self.source}>"
        )


def _scalp_candidates(subject: str, subjects_dir: Path, kind: str) -> list[Path]:
    bem = Path(subjects_dir) / subject / "bem"
    head = [
        bem / f"{subject}-head-dense.fif",
        bem / f"{subject}-head.fif",
        bem / f"{subject}-head-medium.fif",
        bem / f"{subject}-head-sparse.fif",
    ]
    skin = [bem / "outer_skin.surf", bem / "watershed" / f"{subject}_outer_skin_surface"]
    return skin + head if kind == "outer_skin" else head


@verbose
def read_scalp(
    subject: str,
    subjects_dir: str | os.PathLike | None = None,
    kind: str = "outer_skin",
    *,
    verbose: Any = None,
) -> Scalp:
    """Read a subject's scalp surface (metres, MRI frame).

    Parameters
    ----------
    subject : str
        FreeSurfer subject.
    subjects_dir : path-like | None
        FreeSurfer subjects directory (None: ``SUBJECTS_DIR``).
    kind : ``"outer_skin"`` | ``"head"``
        ``"outer_skin"``: the BEM ``bem/outer_skin.surf`` (or the watershed
        outer skin), else the head surface. ``"head"``: MNE's head surface
        ``bem/<subject>-head-dense.fif``, else ``-head.fif``, ``-head-medium``,
        ``-head-sparse``.
    %(verbose)s

    Returns
    -------
    scalp : Scalp
        The surface.
    """
    import mne

    _validate_type(subject, str, "subject")
    _check_option("kind", kind, ("outer_skin", "head"))
    subjects_dir = Path(mne.utils.get_subjects_dir(subjects_dir, raise_error=True))
    candidates = _scalp_candidates(subject, subjects_dir, kind)
    for fname in candidates:
        if fname.is_file():
            logger.info(f"    Scalp surface: {fname}")
            return _read_scalp_file(fname)
    looked = "\n".join(f"  {c}" for c in candidates)
    raise FileNotFoundError(
        f"No scalp surface (kind={kind!r}) for subject {subject!r}; looked for:\n"
        f"{looked}\nMake one with MNE-BIDS-Pipeline's 'freesurfer' stage or "
        "mne.bem.make_watershed_bem / make_scalp_surfaces, or pass scalp=(rr, "
        "tris) in metres (MRI frame)."
    )


def _read_scalp_file(fname: Path) -> Scalp:
    import mne

    name = fname.name
    if name.endswith((".fif", ".fif.gz")):
        surfs = mne.read_bem_surfaces(fname, verbose="error")
        surf = surfs[0]
        if len(surfs) > 1:  # a BEM model file: the outermost is the scalp
            ids = [s.get("id") for s in surfs]
            head_id = mne.io.constants.FIFF.FIFFV_BEM_SURF_ID_HEAD
            if head_id in ids:
                surf = surfs[ids.index(head_id)]
        return _scalp_from_dict(surf, source=str(fname))
    rr, tris = mne.read_surface(fname, verbose="error")[:2]
    return _check_scalp(np.asarray(rr, float) / 1000.0, tris, source=str(fname))


def _scalp_from_dict(surf: Mapping, source: str) -> Scalp:
    from mne.io.constants import FIFF

    if "rr" not in surf or "tris" not in surf:
        raise ValueError(
            f"scalp dict from {source} needs keys 'rr' and 'tris', got {sorted(surf)}"
        )
    frame = surf.get("coord_frame", FIFF.FIFFV_COORD_MRI)
    if frame is not None and int(frame) != FIFF.FIFFV_COORD_MRI:
        raise ValueError(
            f"scalp surface from {source} is in coordinate frame {int(frame)}, "
            f"expected MRI ({FIFF.FIFFV_COORD_MRI}); transform it to MRI first."
        )
    return _check_scalp(surf["rr"], surf["tris"], source=source)


def _check_scalp(rr, tris, source: str) -> Scalp:
    rr = np.asarray(rr, float)
    tris = np.asarray(tris, np.int64)
    if rr.ndim != 2 or rr.shape[1] != 3 or tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(
            f"scalp from {source}: rr must be (n, 3) and tris (m, 3), got "
            f"{rr.shape} and {tris.shape}"
        )
    if len(tris) == 0 or tris.min() < 0 or tris.max() >= len(rr):
        raise ValueError(f"scalp from {source}: tris do not index its {len(rr)} vertices")
    if not np.isfinite(rr).all():
        raise ValueError(f"scalp from {source} has non-finite vertex coordinates")
    extent = np.ptp(rr, axis=0).max()
    if extent > 1.0:
        raise ValueError(
            f"scalp from {source} spans {extent:g} units: it looks like mm, expected "
            "metres (MRI frame); divide the coordinates by 1000."
        )
    return Scalp(rr=rr, tris=tris, source=source)


def _get_scalp(scalp: Any, surfaces: Any) -> Scalp:
    if isinstance(scalp, Scalp):
        return scalp
    if scalp is None:
        import mne

        subject = getattr(surfaces, "subject", None)
        sdir = mne.utils.get_subjects_dir(getattr(surfaces, "subjects_dir", None))
        if subject is None or sdir is None:
            raise ValueError(
                "scalp is required (the surfaces give no FreeSurfer subject and "
                "subjects_dir to find one): give (rr, tris) in metres (MRI frame), "
                "an MNE surface dict, a path to bem/outer_skin.surf or "
                "bem/<subject>-head*.fif, or read_scalp(subject, subjects_dir)."
            )
        return read_scalp(subject, sdir)
    if isinstance(scalp, str | os.PathLike):
        fname = Path(scalp)
        if not fname.is_file():
            raise FileNotFoundError(f"scalp surface file not found: {fname}")
        return _read_scalp_file(fname)
    if isinstance(scalp, Mapping):
        return _scalp_from_dict(scalp, source="dict")
    if isinstance(scalp, tuple | list) and len(scalp) == 2:
        return _check_scalp(scalp[0], scalp[1], source="(rr, tris)")
    raise TypeError(
        "scalp must be (rr, tris) in metres, an MNE surface dict, a path or a "
        f"Scalp, got {type(scalp).__name__}"
    )


# =================================================================== leadfield
@dataclass
class _LF:
    G: Any  # (n_channels, n_sources) or (n_channels, n_sources, K)
    ch_names: list[str]
    ch_types: np.ndarray | None
    units: np.ndarray | None
    n_layers: int | None
    info: Any = None
    columns: np.ndarray | None = None  # kept column ids (into the surfaces)
    n_columns: int | None = None  # columns of the surfaces (before dropping)
    loaded_layers: list | None = None  # layers of the model held (partial read)
    hemi: np.ndarray | None = None  # per model column, if known
    vertno: np.ndarray | None = None


class _LFView:
    """An already parsed leadfield (so that it is parsed once)."""

    def __init__(self, lf: _LF):
        self.parsed = lf


def _info_units(info) -> list[str] | None:
    units = []
    for ch in info["chs"]:
        unit = _SI_LABELS.get(int(ch["unit"]))
        if unit is None or int(ch.get("unit_mul", 0)) != 0:
            return None
        units.append(unit)
    return units


def _leadfield_parts(leadfield: Any) -> _LF:
    """Array, channel names/types/units and column ids of a leadfield object.

    Accepts a ``LeadfieldData`` (attribute ``leadfield``, library units per
    channel in ``units``), this package's ``LaminarForward`` (attribute
    ``gain`` in SI units with ``info``) or a plain array.
    """
    if isinstance(leadfield, _LFView):
        return leadfield.parsed
    if (
        getattr(leadfield, "orientation_type", "fixed") == "free"
        and getattr(leadfield, "src_ori", None) is not None
        and hasattr(leadfield, "fixed")
    ):
        logger.info("    Free leadfield: using its fixed projection on the orientations")
        leadfield = leadfield.fixed()
    if hasattr(leadfield, "leadfield") or hasattr(leadfield, "gain"):
        G = getattr(leadfield, "leadfield", None)
        if G is None:
            G = getattr(leadfield, "gain", None)
        if G is None:
            raise ValueError(f"{type(leadfield).__name__} holds no leadfield array")
        info = getattr(leadfield, "info", None)

        def _listish(name):  # LeadfieldData defaults are empty lists
            val = getattr(leadfield, name, None)
            return None if val is None or (not isinstance(val, str) and len(val) == 0) else val

        ch_names = _listish("ch_names")
        if ch_names is None and info is not None:
            ch_names = info["ch_names"]
        n_ch = G.shape[0]
        ch_names = list(ch_names) if ch_names is not None else [f"ch{i}" for i in range(n_ch)]
        ch_types = _listish("ch_types")
        if ch_types is None and info is not None:
            ch_types = info.get_channel_types()
        units = _listish("units")
        if isinstance(units, str):
            units = [units] * n_ch
        if units is None and info is not None and hasattr(leadfield, "gain"):
            units = _info_units(info)
        n_layers = getattr(leadfield, "n_layers", None)
        try:
            columns = getattr(leadfield, "columns", None)
        except (TypeError, AttributeError):  # LeadfieldData without column ids
            columns = None
        n_columns = getattr(leadfield, "n_columns", None) or None
        loaded = (getattr(leadfield, "provenance", None) or {}).get("loaded_layers")
        l_hemi = getattr(leadfield, "column_hemi", getattr(leadfield, "hemi", None))
        l_vert = getattr(leadfield, "column_vertno", getattr(leadfield, "vertno", None))
        if (
            len(G.shape) == 2
            and getattr(leadfield, "orientation_type", "fixed") == "free"
            and isinstance(G, np.ndarray)
        ):
            G = G.reshape(n_ch, -1, 3)  # MNE's free layout: x/y/z per source
        out = _LF(
            G=G,
            ch_names=ch_names,
            ch_types=None if ch_types is None else np.asarray(ch_types, str),
            units=None if units is None else np.asarray(units, str),
            n_layers=None if n_layers is None else int(n_layers),
            info=info,
            columns=None if columns is None else np.asarray(columns, np.int64),
            n_columns=None if n_columns is None else int(n_columns),
            loaded_layers=None if loaded is None else [int(x) for x in loaded],
            hemi=None if l_hemi is None else np.asarray(l_hemi, str),
            vertno=None if l_vert is None else np.asarray(l_vert, np.int64),
        )
    elif hasattr(leadfield, "shape") and hasattr(leadfield, "__getitem__"):
        G = leadfield
        n_ch = G.shape[0]
        out = _LF(G, [f"ch{i}" for i in range(n_ch)], None, None, None)
    else:
        raise TypeError(
            "leadfield must be a LeadfieldData or an array of shape (n_channels, "
            f"n_layers * n_columns), got {type(leadfield).__name__}"
        )
    if len(out.G.shape) not in (2, 3):
        raise ValueError(
            "leadfield must have shape (n_channels, n_sources) (fixed) or "
            f"(n_channels, n_sources, n_components) (free), got {out.G.shape}"
        )
    n_ch = out.G.shape[0]
    for name in ("ch_types", "units"):
        val = getattr(out, name)
        if val is not None and len(val) != n_ch:
            raise ValueError(f"leadfield has {n_ch} channels but {len(val)} {name}")
    if len(out.ch_names) != n_ch:
        raise ValueError(f"leadfield has {n_ch} channels but {len(out.ch_names)} ch_names")
    return out


def _default_ch_type(ch_types: np.ndarray) -> str:
    present = set(ch_types.tolist())
    for kind in _CH_TYPE_ORDER:
        if kind in present:
            return kind
    if len(present) == 1:  # e.g. a synthetic leadfield of 'misc' channels
        return present.pop()
    raise ValueError(
        f"leadfield has no MEG/EEG channels (types {sorted(present)}); pass ch_type"
    )


def _resolve_whitener(
    whitener, lf: _LF, rows: np.ndarray, info, rank=None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Whitener matrix (n_white, n_rows) for the leadfield rows, in SI."""
    import mne

    if isinstance(whitener, mne.Covariance):
        info = info if info is not None else lf.info
        if info is None:
            raise ValueError(
                "whitener is a Covariance: pass info= (the measurement info of the "
                "leadfield's channels) or use a LeadfieldData that carries info"
            )
        names = [lf.ch_names[i] for i in rows]
        missing = sorted(set(names) - set(info["ch_names"]))
        if missing:
            raise ValueError(
                f"{len(missing)} leadfield channel(s) are not in info, e.g. {missing[:3]}"
            )
        bads = set(info["bads"]) | (set(names) - set(whitener.ch_names))
        keep = np.array([n not in bads for n in names])
        if not keep.any():
            raise ValueError("no leadfield channel is in the noise covariance")
        if not keep.all():
            logger.info(
                f"    {(~keep).sum()} channel(s) not in the covariance or bad: not used"
            )
        rows = rows[keep]
        names = [lf.ch_names[i] for i in rows]
        W, w_names = mne.cov.compute_whitener(
            whitener, info, picks=names, rank=rank, pca=True, verbose="error"
        )
        order = {n: i for i, n in enumerate(names)}
        rows = rows[[order[n] for n in w_names]]
        desc = f"noise covariance ({len(w_names)} channels, rank {W.shape[0]})"
        return np.asarray(W, float), rows, desc
    W = np.asarray(whitener, float)
    if W.ndim != 2 or W.shape[1] != len(rows):
        raise ValueError(
            f"whitener must have shape (n_components, {len(rows)}) for the "
            f"{len(rows)} selected leadfield channels, got {W.shape}"
        )
    return W, rows, f"whitening matrix ({W.shape[0]} x {W.shape[1]})"


@verbose
def leadfield_rms_diff(
    leadfield: Any,
    n_layers: int | None = None,
    *,
    whitener: Any = None,
    info: Any = None,
    rank: Any = None,
    ch_type: str | None = None,
    verbose: Any = None,
) -> tuple[np.ndarray, dict]:
    """RMS over channels of the deepest minus the most superficial leadfield.

    Parameters
    ----------
    leadfield : LeadfieldData | array, shape (n_channels, n_layers * n_columns)
        Layer-major laminar leadfield: source ``l * n_columns + c`` is column
        ``c`` at depth ``l`` (0 = pial). A free-orientation leadfield
        ``(n_channels, n_sources, K)`` uses the norm over the ``K``
        components (orientation independent).
    n_layers : int | None
        Number of layers (None: ``leadfield.n_layers``).
    whitener : None | array, shape (n_components, n_channels) | mne.Covariance
        Compute on the noise-whitened leadfield ``W @ G``: a whitener for
        data in MNE's SI units (as :func:`mne.cov.compute_whitener` returns;
        the leadfield rows are converted to SI from their per-channel units,
        a plain array is taken as SI), or a noise covariance (needs ``info``
        or a LeadfieldData with ``info``). The result is in noise standard
        deviations per nAm (``1/nAm``).
    info : mne.Info | None
        Measurement info, for a covariance ``whitener`` (its projectors are
        applied, as in :func:`mne.cov.compute_whitener`).
    rank : None | dict | str
        Rank of the covariance ``whitener`` (e.g. MBP's ``_rank.json``), see
        :func:`mne.cov.compute_whitener`.
    ch_type : None | ``"mag"`` | ``"grad"`` | ``"eeg"`` | ``"all"``
        Channels used. Without a whitener, a single channel type is required
        (raw units of different types are never summed); None picks
        ``"mag"`` if present (CTF axial gradiometers are ``mag`` in MNE, as in
        the paper), else ``"grad"``, else ``"eeg"``. With a whitener, None
        means every channel. ``"all"`` uses every channel (only allowed with
        a whitener or when all channels share one unit).
    %(verbose)s

    Returns
    -------
    lf_rms_diff : array, shape (n_sources // n_layers,)
        One value per column of the leadfield. NaN where the pial or deepest
        leadfield of a column is identically zero or not finite (a dropped
        column).
    meta : dict
        ``unit``, ``method`` (``"whitened"`` or ``"channel_type"``),
        ``ch_type``, ``n_channels``, ``description``, and ``columns``: the
        leadfield's column ids into the surfaces' columns when it holds only
        the kept columns (else None).
    """
    lf = _leadfield_parts(leadfield)
    G = lf.G
    n_ch, n_src = G.shape[:2]
    if n_layers is None:
        n_layers = lf.n_layers
    if n_layers is None:
        raise ValueError("n_layers is required for a plain leadfield array")
    n_layers = int(n_layers)
    if n_layers < 2:
        raise ValueError(f"lf_rms_diff needs at least 2 layers, got n_layers={n_layers}")
    if lf.n_layers is not None and lf.n_layers != n_layers:
        raise ValueError(
            f"leadfield.n_layers={lf.n_layers} does not match n_layers={n_layers}"
        )
    if n_src % n_layers:
        raise ValueError(
            f"leadfield has {n_src} sources, not a multiple of n_layers={n_layers}"
        )
    n_col = n_src // n_layers
    if lf.columns is not None and len(lf.columns) != n_col:
        raise ValueError(
            f"leadfield has {n_col} columns per layer but {len(lf.columns)} column ids"
        )
    if ch_type is not None:
        _check_option("ch_type", ch_type, ("mag", "grad", "eeg", "all"))
    # ------------------------------------------------------------ channels
    if whitener is None:
        if lf.ch_types is None:
            if ch_type not in (None, "all"):
                raise ValueError(
                    f"ch_type={ch_type!r} needs channel types: use a LeadfieldData"
                )
            rows = np.arange(n_ch)
            used_type = "all"
        else:
            if ch_type == "all":
                used_type = "all"
                rows = np.arange(n_ch)
            else:
                used_type = _default_ch_type(lf.ch_types) if ch_type is None else ch_type
                rows = np.flatnonzero(lf.ch_types == used_type)
                if rows.size == 0:
                    raise ValueError(
                        f"ch_type={used_type!r}: the leadfield has no such channel "
                        f"(types: {sorted(set(lf.ch_types.tolist()))})"
                    )
        units = None if lf.units is None else sorted(set(lf.units[rows].tolist()))
        if units is not None and len(units) > 1:
            raise ValueError(
                f"The selected channels have different units {units}: raw units are "
                "never summed; pick one ch_type or give a whitener/noise covariance"
            )
        if lf.units is None and lf.ch_types is not None and len(set(lf.ch_types[rows])) > 1:
            raise ValueError(
                "The selected channels are of several types without units: pick one "
                "ch_type or give a whitener"
            )
        unit = units[0] if units else "arbitrary"
        scale = None
        method = "channel_type"
        desc = f"{used_type} channels ({rows.size}), {unit}"
    else:
        if lf.ch_types is not None and ch_type not in (None, "all"):
            rows = np.flatnonzero(lf.ch_types == ch_type)
            if rows.size == 0:
                raise ValueError(f"ch_type={ch_type!r}: the leadfield has no such channel")
            used_type = ch_type
        else:
            rows = np.arange(n_ch)
            used_type = "all"
        W, rows, wdesc = _resolve_whitener(whitener, lf, rows, info, rank)
        if lf.units is None:
            si = np.ones(len(rows))
        else:
            si = np.array([_unit_to_si(u) or np.nan for u in lf.units[rows]])
            if not np.isfinite(si).all():
                bad = sorted(set(lf.units[rows][~np.isfinite(si)].tolist()))
                raise ValueError(
                    f"Cannot whiten: the leadfield unit(s) {bad} have no SI factor "
                    "(a synthetic/random leadfield has no physical units); compute "
                    "per channel type instead (whitener=None)"
                )
        # W (1/SI data) @ G_SI (SI/(A*m)) -> 1/(A*m); * 1e-9 -> per nAm
        scale = W * (si * 1e-9)[np.newaxis, :]
        unit = "1/nAm"
        method = "whitened"
        desc = f"noise-whitened with {wdesc}, {used_type} channels; noise SD per nAm"
    # ------------------------------------------------------------- compute
    out = np.empty(n_col)
    deep0 = (n_layers - 1) * n_col
    chunk = max(1, int(4_000_000 // max(n_ch, 1)))
    for start in range(0, n_col, chunk):
        stop = min(start + chunk, n_col)
        pial = np.asarray(G[:, start:stop], float)[rows]
        deep = np.asarray(G[:, deep0 + start : deep0 + stop], float)[rows]
        diff = deep - pial
        if scale is not None:
            diff = np.tensordot(scale, diff, axes=(1, 0))
        sq = diff**2
        if sq.ndim == 3:  # free orientation: squared norm over components
            sq = sq.sum(axis=2)
            pial = np.abs(pial).sum(axis=2)
            deep = np.abs(deep).sum(axis=2)
        val = np.sqrt(sq.mean(axis=0))
        dropped = (
            ~(pial != 0).any(axis=0)
            | ~(deep != 0).any(axis=0)
            | ~np.isfinite(pial).all(axis=0)
            | ~np.isfinite(deep).all(axis=0)
        )
        val[dropped] = np.nan
        out[start:stop] = val
    if len(G.shape) == 3:
        desc += f"; free orientation: norm over {G.shape[2]} components"
    n_nan = int(np.isnan(out).sum())
    if n_nan:
        logger.info(f"    lf_rms_diff: {n_nan} column(s) with a zero/invalid leadfield -> NaN")
    meta = dict(
        columns=lf.columns,
        unit=unit,
        method=method,
        ch_type=used_type,
        n_channels=int(len(rows)) if whitener is None else int(scale.shape[0]),
        description=desc,
    )
    return out, meta


# ================================================================== predictors
def _zscore(x: np.ndarray, mask: np.ndarray, name: str) -> np.ndarray:
    z = np.full(x.shape, np.nan)
    vals = x[mask]
    if vals.size == 0:
        return z
    sd = vals.std()  # population (ddof=0), like scipy.stats.zscore
    if not sd > 0:
        warn(f"{name} is constant over the kept columns: its z-score is set to 0")
        z[mask] = 0.0
    else:
        z[mask] = (vals - vals.mean()) / sd
    return z


def _check_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    out = {name: 1.0 for name in PREDICTORS}
    if weights is None:
        return out
    _validate_type(weights, Mapping, "weights")
    unknown = sorted(set(weights) - set(PREDICTORS))
    if unknown:
        raise ValueError(
            f"weights has unknown key(s) {unknown}; valid keys: {list(PREDICTORS)}"
        )
    for key, val in weights.items():
        val = float(val)
        if not np.isfinite(val):
            raise ValueError(f"weights[{key!r}] must be finite, got {val}")
        out[key] = val
    return out


def anatomical_score(
    thickness: np.ndarray,
    lf_rms_diff: np.ndarray,
    radiality: np.ndarray,
    distance: np.ndarray,
    weights: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Composite anatomical score of laminar discriminability.

    ``score = w_t z(thickness) + w_lf z(lf_rms_diff) + w_r z(radiality) −
    w_d z(distance)`` (all weights 1 by default), with ``z`` the population
    z-score (ddof=0, as :func:`scipy.stats.zscore`) over the *kept* columns:
    those where every predictor with a non-zero weight is finite. Other
    columns get NaN. A predictor that is constant over the kept columns
    contributes 0 (with a warning).

    Parameters
    ----------
    thickness, lf_rms_diff, radiality, distance : array, shape (n_columns,)
        The predictors (see :func:`compute_predictors`).
    weights : dict | None
        Weights by predictor name (missing keys: 1). The sign of distance is
        applied here: give a positive weight.

    Returns
    -------
    score : array, shape (n_columns,)
        Higher = better predicted laminar discriminability; NaN for columns
        that are not kept.
    """
    w = _check_weights(weights)
    arrays = {}
    for name, x in zip(PREDICTORS, (thickness, lf_rms_diff, radiality, distance)):
        x = np.asarray(x, float)
        if x.ndim != 1:
            raise ValueError(f"{name} must be 1D (one value per column), got {x.shape}")
        arrays[name] = x
    sizes = {x.size for x in arrays.values()}
    if len(sizes) != 1:
        raise ValueError(
            f"predictors differ in length: { {k: v.size for k, v in arrays.items()} }"
        )
    used = [name for name in PREDICTORS if w[name] != 0]
    keep = np.ones(sizes.pop(), bool)
    for name in used:
        keep &= np.isfinite(arrays[name])
    score = np.zeros(keep.shape)
    for name in used:
        score += SCORE_SIGNS[name] * w[name] * _zscore(arrays[name], keep, name)
    score[~keep] = np.nan
    return score


def select_prior(score: np.ndarray, roi_columns: np.ndarray) -> int:
    """The column with the highest score inside a region of interest.

    Parameters
    ----------
    score : array, shape (n_columns,)
        Anatomical score (NaN columns are never selected).
    roi_columns : array of int | array of bool, shape (n_columns,)
        The ROI's column indices, or a boolean mask over columns.

    Returns
    -------
    column : int
        Index of the chosen column (into ``score``).
    """
    score = np.asarray(score, float)
    roi = np.asarray(roi_columns)
    if roi.dtype == bool:
        if roi.shape != score.shape:
            raise ValueError(
                f"boolean roi_columns must have the score's shape {score.shape}, "
                f"got {roi.shape}"
            )
        roi = np.flatnonzero(roi)
    roi = roi.astype(np.int64, copy=False).ravel()
    if roi.size == 0:
        raise ValueError("roi_columns is empty: the ROI contains no kept column")
    if roi.min() < 0 or roi.max() >= score.size:
        raise ValueError(
            f"roi_columns must index the {score.size} columns, got "
            f"{roi.min()}..{roi.max()}"
        )
    vals = score[roi]
    finite = np.isfinite(vals)
    if not finite.any():
        raise ValueError(
            f"No column of the ROI ({roi.size} columns) has a finite score"
        )
    vals = np.where(finite, vals, -np.inf)
    return int(roi[np.argmax(vals)])


@dataclass
class AnatomicalPredictors:
    """Anatomical predictors of laminar inference accuracy, one value per column.

    Attributes
    ----------
    thickness : array, shape (n_columns,)
        White-pial distance (mm).
    lf_rms_diff : array, shape (n_columns,)
        Leadfield RMS difference, deepest minus pial (``units["lf_rms_diff"]``).
    radiality : array, shape (n_columns,)
        |cos| column orientation vs. scalp normal (0-1).
    distance : array, shape (n_columns,)
        Pial vertex to scalp (mm).
    hemi : array of str, shape (n_columns,)
        ``"lh"`` / ``"rh"``.
    vertno : array of int, shape (n_columns,)
        FreeSurfer vertex id of each column in its hemisphere.
    pos : array, shape (n_columns, 3) | None
        Pial position of each column (m, MRI surface RAS).
    units : dict
        Units of every predictor.
    methods : dict
        How each predictor was computed (scalp, leadfield channels, ...).
    """

    thickness: np.ndarray
    lf_rms_diff: np.ndarray
    radiality: np.ndarray
    distance: np.ndarray
    hemi: np.ndarray
    vertno: np.ndarray
    pos: np.ndarray | None = None
    units: dict = field(default_factory=dict)
    methods: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in PREDICTORS:
            setattr(self, name, np.asarray(getattr(self, name), float))
        self.hemi = np.asarray(self.hemi, str)
        self.vertno = np.asarray(self.vertno, np.int64)
        n = self.hemi.size
        for name in (*PREDICTORS, "vertno"):
            if getattr(self, name).shape != (n,):
                raise ValueError(
                    f"{name} has shape {getattr(self, name).shape}, expected ({n},)"
                )
        bad = sorted(set(self.hemi.tolist()) - {"lh", "rh"})
        if bad:
            raise ValueError(f"hemi must be 'lh'/'rh', got {bad}")
        if self.pos is not None:
            self.pos = np.asarray(self.pos, float)
            if self.pos.shape != (n, 3):
                raise ValueError(f"pos has shape {self.pos.shape}, expected ({n}, 3)")
        units = {
            "thickness": "mm",
            "lf_rms_diff": "arbitrary",
            "radiality": "arbitrary",
            "distance": "mm",
            SCORE_NAME: "arbitrary",
        }
        units.update(self.units or {})
        self.units = units

    @property
    def n_columns(self) -> int:
        """Number of columns."""
        return self.hemi.size

    def __len__(self) -> int:
        return self.n_columns

    def __repr__(self) -> str:
        n_nan = int((~self.kept).sum())
        return (
            f"<AnatomicalPredictors | {self.n_columns} columns "
            f"(lh {int((self.hemi == 'lh').sum())}, rh {int((self.hemi == 'rh').sum())}), "
            f"{n_nan} not kept, lf_rms_diff in {self.units['lf_rms_diff']}>"
        )

    @property
    def kept(self) -> np.ndarray:
        """Columns where every predictor is finite (used for the z-scores)."""
        keep = np.ones(self.n_columns, bool)
        for name in PREDICTORS:
            keep &= np.isfinite(getattr(self, name))
        return keep

    def as_dict(self) -> dict[str, np.ndarray]:
        """The four predictors by name."""
        return {name: getattr(self, name) for name in PREDICTORS}

    def score(self, weights: Mapping[str, float] | None = None) -> np.ndarray:
        """Composite score, see :func:`anatomical_score`."""
        return anatomical_score(*(getattr(self, n) for n in PREDICTORS), weights=weights)

    def best_vertex(self, weights: Mapping[str, float] | None = None) -> int:
        """Column index with the highest score over the whole cortex.

        Use ``hemi[idx]`` and ``vertno[idx]`` for its hemisphere and
        FreeSurfer vertex id.
        """
        return select_prior(self.score(weights), np.arange(self.n_columns))

    def roi_columns(
        self,
        roi: Any,
        subject: str | None = None,
        subjects_dir: str | os.PathLike | None = None,
    ) -> np.ndarray:
        """Columns of a region of interest, see :func:`roi_columns`."""
        return roi_columns(roi, self.hemi, self.vertno, subject, subjects_dir)

    def priors(
        self,
        rois: Sequence[Any],
        subject: str | None = None,
        subjects_dir: str | os.PathLike | None = None,
        *,
        weights: Mapping[str, float] | None = None,
    ) -> dict[str, dict]:
        """The prior (highest-score column) of each region of interest.

        Parameters
        ----------
        rois : list of str | mne.Label
            ROI specifications, see :func:`read_roi`.
        subject, subjects_dir
            FreeSurfer subject, for annotation and subject-relative ROIs.
        weights : dict | None
            Score weights.

        Returns
        -------
        priors : dict
            By ROI name: ``column``, ``hemi``, ``vertex``, ``score``,
            ``n_columns`` (in the ROI) and ``pos_mri_mm`` (pial position,
            FreeSurfer surface RAS in mm, if known).
        """
        score = self.score(weights)
        out = {}
        for roi in rois:
            name = roi_name(roi)
            cols = self.roi_columns(roi, subject, subjects_dir)
            col = select_prior(score, cols)
            out[name] = self.column_record(col, score) | dict(n_columns=int(cols.size))
        return out

    def column_record(self, col: int, score: np.ndarray) -> dict:
        """Column index, hemisphere, vertex, score and pial MRI position (mm)."""
        rec = dict(
            column=int(col),
            hemi=str(self.hemi[col]),
            vertex=int(self.vertno[col]),
            score=float(score[col]),
        )
        if self.pos is not None:
            rec["pos_mri_mm"] = [round(float(v) * 1e3, 3) for v in self.pos[col]]
        return rec

    # ----------------------------------------------------------------- I/O
    def table(
        self,
        weights: Mapping[str, float] | None = None,
        rois: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Columns of the TSV (name -> values)."""
        score = self.score(weights)
        cols: dict[str, Any] = dict(
            column=np.arange(self.n_columns),
            hemi=np.array([bids.HEMI_LABEL[h] for h in self.hemi]),
            vertex=self.vertno,
        )
        if self.pos is not None:
            for k, axis in enumerate("xyz"):
                cols[axis] = np.round(self.pos[:, k] * 1e3, 4)
        for name in PREDICTORS:
            cols[name] = getattr(self, name)
        cols[SCORE_NAME] = score
        for name, idx in (rois or {}).items():
            member = np.zeros(self.n_columns, bool)
            member[np.asarray(idx, np.int64)] = True
            cols[roi_column_name(name)] = member
        return cols

    def sidecar(
        self,
        weights: Mapping[str, float] | None = None,
        rois: Mapping[str, np.ndarray] | None = None,
    ) -> dict:
        """JSON sidecar of the TSV: every column described with its units."""
        desc: dict[str, Any] = {
            "column": {
                "LongName": "Column index",
                "Description": "Index of the column in the laminar model (the "
                "leadfield source of column c at depth l is l * n_columns + c).",
            },
            "hemi": {
                "LongName": "Hemisphere",
                "Levels": {"L": "left", "R": "right"},
            },
            "vertex": {
                "LongName": "FreeSurfer vertex",
                "Description": "Vertex id of the column in the hemisphere's "
                "FreeSurfer surfaces (?h.white/?h.pial).",
            },
        }
        if self.pos is not None:
            for axis in "xyz":
                desc[axis] = {
                    "LongName": f"Pial {axis} coordinate",
                    "Description": f"{axis} of the column's pial vertex, FreeSurfer "
                    "surface RAS (tkRAS) of the subject's MRI.",
                    "Units": "mm",
                }
        for name in (*PREDICTORS, SCORE_NAME):
            desc[name] = {
                "LongName": LONG_NAMES[name],
                "Description": DESCRIPTIONS[name]
                + (f" Method: {self.methods[name]}." if name in self.methods else ""),
                "Units": self.units[name],
            }
        desc["radiality"]["Minimum"] = 0
        desc["radiality"]["Maximum"] = 1
        for name in rois or {}:
            desc[roi_column_name(name)] = {
                "LongName": f"Member of ROI {name}",
                "Description": f"Whether the column belongs to the region of interest {name!r}.",
                "Levels": {"true": "in the ROI", "false": "not in the ROI"},
            }
        return desc

    def to_tsv(
        self,
        fname: str | os.PathLike,
        *,
        weights: Mapping[str, float] | None = None,
        rois: Mapping[str, np.ndarray] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write the table (one row per column) and its JSON sidecar, atomically.

        Parameters
        ----------
        fname : path-like
            The ``.tsv`` file; the sidecar is the same name with ``.json``.
        weights : dict | None
            Score weights.
        rois : dict | None
            ROI name -> column indices, written as ``roi_<name>`` columns.
        extra : dict | None
            Extra top-level keys of the sidecar.

        Returns
        -------
        fname : pathlib.Path
            The TSV path.
        """
        fname = Path(fname)
        if fname.suffix != ".tsv":
            raise ValueError(f"fname must end with .tsv, got {fname.name}")
        table = self.table(weights, rois)
        side = self.sidecar(weights, rois)
        score = table[SCORE_NAME]
        meta: dict[str, Any] = {
            "Description": "Anatomical predictors of laminar inference accuracy "
            "(Szul et al. 2025), one row per cortical column.",
            "ScoreWeights": _check_weights(weights),
            "Methods": dict(self.methods),
            "NColumnsKept": int(np.isfinite(score).sum()),
        }
        if np.isfinite(score).any():
            meta["BestColumn"] = self.column_record(int(np.nanargmax(score)), score)
        meta.update(extra or {})
        bids.write_tsv(fname, table)
        bids.write_json(bids.sidecar(fname), {**side, **meta})
        return fname

    @classmethod
    def from_tsv(cls, fname: str | os.PathLike) -> AnatomicalPredictors:
        """Read predictors written by :meth:`to_tsv`."""
        fname = Path(fname)
        if not fname.is_file():
            raise FileNotFoundError(f"predictors TSV not found: {fname}")
        cols = bids.read_tsv(fname)
        missing = [c for c in ("hemi", "vertex", *PREDICTORS) if c not in cols]
        if missing:
            raise ValueError(f"{fname} is not a predictors table: no column(s) {missing}")
        side_path = bids.sidecar(fname)
        side = bids.read_json(side_path) if side_path.is_file() else {}

        def num(name):
            return np.array(
                [np.nan if v == "n/a" else float(v) for v in cols[name]], float
            )

        inv = {v: k for k, v in bids.HEMI_LABEL.items()}
        pos = None
        if all(a in cols for a in "xyz"):
            pos = np.stack([num(a) for a in "xyz"], axis=1) / 1e3
        units = {
            name: side[name]["Units"]
            for name in (*PREDICTORS, SCORE_NAME)
            if isinstance(side.get(name), dict) and "Units" in side[name]
        }
        return cls(
            **{name: num(name) for name in PREDICTORS},
            hemi=np.array([inv.get(h, h) for h in cols["hemi"]]),
            vertno=np.array([int(v) for v in cols["vertex"]]),
            pos=pos,
            units=units,
            methods=dict(side.get("Methods", {})),
        )


# ============================================================ compute (public)
def _surface_arrays(surfaces: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    for attr in ("layers", "orientations", "hemi", "vertno"):
        if not hasattr(surfaces, attr):
            raise TypeError(
                f"surfaces must be a LaminarSurfaces (attributes layers, orientations, "
                f"hemi, vertno); {type(surfaces).__name__} has no {attr!r}"
            )
    layers = np.asarray(surfaces.layers, float)
    if layers.ndim != 3 or layers.shape[2] != 3 or layers.shape[0] < 2:
        raise ValueError(
            f"surfaces.layers must have shape (n_layers>=2, n_columns, 3), got {layers.shape}"
        )
    n_col = layers.shape[1]
    ori = np.asarray(surfaces.orientations, float)
    if ori.shape == (layers.shape[0], n_col, 3):
        ori = ori[0]  # the pial layer's orientation
    if ori.shape != (n_col, 3):
        raise ValueError(
            f"surfaces.orientations must have shape ({n_col}, 3) or "
            f"({layers.shape[0]}, {n_col}, 3), got {ori.shape}"
        )
    hemi = np.asarray(surfaces.hemi, str)
    vertno = np.asarray(surfaces.vertno, np.int64)
    if hemi.shape != (n_col,) or vertno.shape != (n_col,):
        raise ValueError(
            f"surfaces.hemi/vertno must have shape ({n_col},), got {hemi.shape}/{vertno.shape}"
        )
    extent = np.nanmax(np.abs(layers)) if np.isfinite(layers).any() else 0.0
    if extent > 1.0:
        raise ValueError(
            f"surfaces.layers reach {extent:g}: they look like mm, expected metres "
            "(MRI surface RAS)"
        )
    return layers, ori, hemi, vertno


@verbose
def compute_predictors(
    surfaces: Any,
    leadfield: Any,
    scalp: Any = None,
    *,
    whitener: Any = None,
    info: Any = None,
    rank: Any = None,
    ch_type: str | None = None,
    n_jobs: int | None = None,
    verbose: Any = None,
) -> AnatomicalPredictors:
    """Compute the four anatomical predictors of laminar inference accuracy.

    Parameters
    ----------
    surfaces : LaminarSurfaces
        Layer surfaces: ``layers`` (n_layers, n_columns, 3) in metres (MRI
        surface RAS, layer 0 = pial, last = white), ``orientations``
        (n_columns, 3) or (n_layers, n_columns, 3), ``hemi``, ``vertno``.
    leadfield : LeadfieldData | array, shape (n_channels, n_layers * n_columns)
        Layer-major laminar leadfield of the same columns (source
        ``l * n_columns + c``), e.g. from ``simulate``, ``load`` or
        ``random`` retrieval.
    scalp : tuple | dict | path-like | Scalp | None
        Scalp surface in metres, MRI frame: ``(rr, tris)``, an MNE surface
        dict, a path to ``bem/outer_skin.surf`` or ``bem/<subject>-head*.fif``,
        or a :class:`Scalp` from :func:`read_scalp`. None: read with
        :func:`read_scalp` from ``surfaces.subject``/``surfaces.subjects_dir``.
    whitener : None | array | mne.Covariance
        Compute ``lf_rms_diff`` on the noise-whitened leadfield, see
        :func:`leadfield_rms_diff`.
    info : mne.Info | None
        Measurement info, for a covariance ``whitener``.
    rank : None | dict | str
        Rank of a covariance ``whitener``.
    ch_type : None | str
        Channel type of ``lf_rms_diff`` without a whitener, see
        :func:`leadfield_rms_diff`.
    n_jobs : int | None
        Threads of the closest-point search (None: 1, -1: all cores).
    %(verbose)s

    Returns
    -------
    predictors : AnatomicalPredictors
        Thickness (mm), lf_rms_diff, radiality (0-1) and distance (mm) per
        column, with hemispheres, vertex ids, units and methods.

    Notes
    -----
    Radiality and distance use the pial layer (position and orientation),
    like laMEG. The closest scalp point is exact (point to triangle); the
    scalp normal there is the normal of the closest triangle (see
    :func:`surface_normals_at` for edges and vertices). Columns with a
    zero or non-finite leadfield, a non-finite position or a zero-length
    orientation get NaN for the affected predictor; they are excluded from
    the z-scores of :meth:`AnatomicalPredictors.score` and never selected.
    """
    layers, ori, hemi, vertno = _surface_arrays(surfaces)
    n_layers, n_col = layers.shape[:2]
    logger.info(f"Anatomical predictors: {n_col} columns x {n_layers} layers")
    # ------------------------------------------------------- leadfield size
    lf = _leadfield_parts(leadfield)
    leadfield = _LFView(lf)  # parsed once (free -> fixed done here)
    n_src = lf.G.shape[1]
    lf_layers = n_layers
    if lf.n_layers is not None and lf.n_layers != n_layers:
        if lf.n_layers == 2 and lf.loaded_layers == [0, n_layers - 1]:
            lf_layers = 2  # only the pial and deepest layers were read
        else:
            raise ValueError(
                f"The leadfield has n_layers={lf.n_layers}, the surfaces {n_layers}: "
                "use the leadfield computed for these layer surfaces"
            )
    columns = np.arange(n_col)
    if lf.columns is not None:  # only the kept columns are in the leadfield
        if lf.n_columns is not None and lf.n_columns != n_col:
            raise ValueError(
                f"The leadfield was computed for {lf.n_columns} columns, the surfaces "
                f"have {n_col}: use the leadfield computed for these layer surfaces"
            )
        columns = lf.columns
        if columns.size and (
            columns.min() < 0 or columns.max() >= n_col or (np.diff(columns) <= 0).any()
        ):
            raise ValueError(
                f"leadfield.columns must be increasing column ids in 0..{n_col - 1}"
            )
    for attr in ("hemi", "vertno"):
        other = getattr(lf, attr)
        if other is not None:
            mine = hemi if attr == "hemi" else vertno
            if other.shape != mine.shape and other.shape == columns.shape:
                mine = mine[columns]
            if other.shape == mine.shape and not np.array_equal(other.astype(mine.dtype), mine):
                raise ValueError(
                    f"leadfield.{attr} differs from surfaces.{attr}: the leadfield was "
                    "computed for other layer surfaces"
                )
    if n_src != lf_layers * len(columns):
        raise ValueError(
            f"The leadfield has {n_src} sources but the surfaces have {lf_layers} "
            f"layers x {len(columns)} columns = {lf_layers * len(columns)}: use the "
            "leadfield computed for these layer surfaces (layer-major, source "
            "l * n_columns + c)"
        )
    scalp = _get_scalp(scalp, surfaces)
    # ------------------------------------------------------------ thickness
    pial = layers[0]
    thickness = np.linalg.norm(pial - layers[-1], axis=1) * 1e3
    # -------------------------------------------------------- lf_rms_diff
    lf_vals, lf_meta = leadfield_rms_diff(
        leadfield, lf_layers, whitener=whitener, info=info, rank=rank, ch_type=ch_type
    )
    lf_diff = np.full(n_col, np.nan)
    lf_diff[columns] = lf_vals
    if len(columns) < n_col:
        logger.info(
            f"    {n_col - len(columns)} column(s) not in the leadfield (dropped): "
            "lf_rms_diff NaN"
        )
    # -------------------------------------------------- distance, radiality
    ok = np.isfinite(pial).all(axis=1)
    dist = np.full(n_col, np.nan)
    radiality = np.full(n_col, np.nan)
    d, closest, tri = closest_points_on_mesh(pial[ok], scalp.rr, scalp.tris, n_jobs=n_jobs)
    dist[ok] = d * 1e3
    scalp_nn = surface_normals_at(scalp.rr, scalp.tris, closest, tri)
    norm = np.linalg.norm(ori, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        o = ori / norm[:, np.newaxis]
    cosang = np.abs(_rowdot(o[ok], scalp_nn))
    good_n = np.linalg.norm(scalp_nn, axis=1) > 0
    radiality[ok] = np.where(good_n & (norm[ok] > 0), np.clip(cosang, 0.0, 1.0), np.nan)
    n_zero_ori = int((~(norm > 0) & ok).sum())
    if n_zero_ori:
        logger.info(f"    {n_zero_ori} column(s) with a zero-length orientation: radiality NaN")
    _check_inside(pial[ok], closest, tri, scalp)
    methods = {
        "thickness": "norm(pial - white) of corresponding layer vertices",
        "lf_rms_diff": lf_meta["description"],
        "radiality": "pial-layer column orientation vs. scalp normal at the closest "
        "point (the closest triangle's normal; on an edge or vertex the normalized "
        f"sum of the sharing triangles' normals) ({scalp.source})",
        "distance": f"pial vertex to closest point on the scalp triangles ({scalp.source})",
        "lf_rms_diff_method": lf_meta["method"],
        "lf_rms_diff_ch_type": lf_meta["ch_type"],
        "lf_rms_diff_n_channels": lf_meta["n_channels"],
        "scalp": scalp.source,
        "n_layers": int(n_layers),
    }
    pred = AnatomicalPredictors(
        thickness=thickness,
        lf_rms_diff=lf_diff,
        radiality=radiality,
        distance=dist,
        hemi=hemi,
        vertno=vertno,
        pos=pial,
        units={"lf_rms_diff": lf_meta["unit"]},
        methods=methods,
    )
    logger.info(f"    {pred!r}")
    return pred


def _check_inside(points, closest, tri, scalp: Scalp) -> None:
    """Warn when pial vertices lie outside a closed scalp (bad coordinates?).

    Outside = the vector from the closest scalp point to the vertex points
    along the outward normal of the closest triangle (exact for a closest
    point inside a triangle; a heuristic at edges and vertices).
    """
    vol = _signed_volume(scalp.rr, scalp.tris)
    ext = np.ptp(scalp.rr, axis=0)
    if abs(vol) < 0.01 * np.prod(ext):  # open or degenerate: no inside
        return
    nn = _triangle_normals(scalp.rr, scalp.tris) * np.sign(vol)
    outside = _rowdot(points - closest, nn[tri]) > 1e-6
    if outside.any():
        warn(
            f"{int(outside.sum())} pial vertex/vertices lie outside the scalp surface "
            f"({scalp.source}): are the surfaces and the scalp in the same frame (MRI, m)?"
        )


# ======================================================================== ROIs
def roi_name(roi: Any) -> str:
    """Name of an ROI specification (the string, or the label's name)."""
    if isinstance(roi, str | os.PathLike):
        return str(roi)
    name = getattr(roi, "name", None)
    if not name:
        raise ValueError(f"ROI {roi!r} has no name")
    return str(name)


def roi_column_name(name: str) -> str:
    """TSV column of ROI membership: ``roi_<name>`` in snake case."""
    base = os.path.basename(str(name))
    for ext in (".label", ".annot"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return "roi_" + re.sub(r"[^0-9a-zA-Z]+", "_", base).strip("_").lower()


@verbose
def read_roi(
    roi: Any,
    subject: str | None = None,
    subjects_dir: str | os.PathLike | None = None,
    *,
    verbose: Any = None,
):
    """Read a region of interest as an :class:`mne.Label`.

    Parameters
    ----------
    roi : str | path-like | mne.Label
        ``"<atlas>:<hemi>.<name>"`` (a label of the FreeSurfer annotation
        ``label/<hemi>.<atlas>.annot``, e.g. ``"aparc:lh.precentral"``), a
        label file (absolute, or relative to the subject's folder, e.g.
        ``"label/lh.V1.label"``, or to its ``label/`` folder), or a Label.
    subject, subjects_dir
        FreeSurfer subject, for annotations and subject-relative files.
    %(verbose)s

    Returns
    -------
    label : mne.Label | mne.BiHemiLabel
        The ROI.
    """
    import mne

    if isinstance(roi, mne.Label | mne.BiHemiLabel):
        return roi
    _validate_type(roi, (str, os.PathLike), "roi")
    spec = str(roi)
    m = re.fullmatch(r"([^:/\\]+):(lh|rh)\.(.+)", spec)
    if m and not Path(spec).is_file():
        atlas, hemi, name = m.groups()
        if subject is None:
            raise ValueError(f"ROI {spec!r} is an annotation label: subject is required")
        sdir = Path(mne.utils.get_subjects_dir(subjects_dir, raise_error=True))
        fname = sdir / subject / "label" / f"{hemi}.{atlas}.annot"
        if not fname.is_file():
            raise FileNotFoundError(
                f"ROI {spec!r}: annotation file not found: {fname}"
            )
        import nibabel as nib

        labels, _, names = nib.freesurfer.read_annot(str(fname))
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        if name not in names:
            raise ValueError(
                f"ROI {spec!r}: no label {name!r} in {fname.name}; it has "
                f"{len(names)} labels, e.g. {names[:8]}"
            )
        vertices = np.flatnonzero(labels == names.index(name))
        return mne.Label(vertices, hemi=hemi, name=spec, subject=subject)
    candidates = [Path(spec)]
    if subject is not None and not Path(spec).is_absolute():
        sdir = mne.utils.get_subjects_dir(subjects_dir)
        if sdir is not None:
            candidates += [Path(sdir) / subject / spec, Path(sdir) / subject / "label" / spec]
    for cand in list(candidates):
        if not cand.name.endswith(".label"):
            candidates.append(cand.with_name(cand.name + ".label"))
    for fname in candidates:
        if fname.is_file():
            label = mne.read_label(fname, subject=subject)
            label.name = spec
            return label
    looked = "\n".join(f"  {c}" for c in candidates)
    raise FileNotFoundError(
        f"ROI {spec!r}: not an '<atlas>:<hemi>.<name>' annotation label and no label "
        f"file found; looked for:\n{looked}"
    )


def roi_columns(
    roi: Any,
    hemi: np.ndarray,
    vertno: np.ndarray,
    subject: str | None = None,
    subjects_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Column indices of a region of interest.

    The label's vertices are intersected with the column vertex ids of its
    hemisphere.

    Parameters
    ----------
    roi : str | path-like | mne.Label
        See :func:`read_roi`.
    hemi, vertno : array, shape (n_columns,)
        Hemisphere and FreeSurfer vertex id of every column.
    subject, subjects_dir
        FreeSurfer subject, see :func:`read_roi`.

    Returns
    -------
    columns : array of int
        Sorted column indices (never empty: an ROI without a kept column is
        an error).
    """
    import mne

    label = read_roi(roi, subject, subjects_dir)
    hemi = np.asarray(hemi, str)
    vertno = np.asarray(vertno, np.int64)
    parts = [label.lh, label.rh] if isinstance(label, mne.BiHemiLabel) else [label]
    member = np.zeros(hemi.shape, bool)
    for part in parts:
        member |= (hemi == part.hemi) & np.isin(vertno, part.vertices)
    cols = np.flatnonzero(member)
    if cols.size == 0:
        raise ValueError(
            f"ROI {roi_name(roi)!r} ({sum(len(p.vertices) for p in parts)} vertices, "
            f"{'/'.join(p.hemi for p in parts)}) contains no kept column: none of its "
            "vertices is a column vertex (check the subject, the column spacing and "
            "the cortex mask)"
        )
    return cols


# ========================================================================= MNI
def mri_to_mni(
    pos: np.ndarray, subject: str, subjects_dir: str | os.PathLike | None = None
) -> np.ndarray | None:
    """MRI (surface RAS, m) to MNI (Talairach, mm), or None without talairach.xfm."""
    import mne

    try:
        xfm = mne.read_talxfm(subject, subjects_dir, verbose="error")
    except Exception as exc:  # missing talairach.xfm / T1.mgz
        logger.info(f"    No MNI coordinates ({type(exc).__name__}: {exc})")
        return None
    return mne.transforms.apply_trans(xfm, np.asarray(pos, float)) * 1e3


# ======================================================================= GIFTI
def write_gifti_map(
    fname: str | os.PathLike,
    values: np.ndarray,
    hemi: str,
    *,
    name: str,
    meta: Mapping[str, str] | None = None,
) -> Path:
    """Write one value per column of a hemisphere as a ``.func.gii``, atomically."""
    import nibabel as nib

    _check_option("hemi", hemi, ("lh", "rh"))
    values = np.asarray(values, np.float32)
    structure = {"lh": "CortexLeft", "rh": "CortexRight"}[hemi]
    darray = nib.gifti.GiftiDataArray(
        values,
        intent="NIFTI_INTENT_NONE",
        datatype="NIFTI_TYPE_FLOAT32",
        meta=nib.gifti.GiftiMetaData({"Name": name}),
    )
    img = nib.gifti.GiftiImage(
        darrays=[darray],
        meta=nib.gifti.GiftiMetaData(
            {"AnatomicalStructurePrimary": structure, **(meta or {})}
        ),
    )
    fname = Path(fname)
    with bids.atomic_path(fname) as tmp:
        nib.save(img, tmp)
    return fname
