"""Triangle-mesh geometry shared by the whole package, each rule once.

Face and vertex normals, vertex areas, exact point-to-triangle distances,
closest points on a mesh and the normal there, and the inside-a-closed-surface
test. Arrays are ``rr`` (n_vertices, 3) and ``tris`` (n_triangles, 3) in any
one length unit; FreeSurfer winding (normals outward).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mne.utils import logger, verbose

#: Normals shorter than this (unnormalised sum of unit face normals) are zero.
_ZERO_NORMAL = 1e-8


# --------------------------------------------------------------- geometry
def _face_normals(rr, tris):
    """Unit face normals (zero for degenerate faces) and twice the face areas."""
    cross = np.cross(rr[tris[:, 1]] - rr[tris[:, 0]], rr[tris[:, 2]] - rr[tris[:, 0]])
    size = np.linalg.norm(cross, axis=1)
    unit = np.zeros_like(cross)
    ok = size > 0
    unit[ok] = cross[ok] / size[ok, None]
    return unit, size


def vertex_normals(rr, tris):
    """Outward vertex normals: normalised sum of incident unit face normals.

    Parameters
    ----------
    rr : array, shape (n_vertices, 3)
    tris : array, shape (n_tris, 3)

    Returns
    -------
    nn : array, shape (n_vertices, 3)
        Unit normals; rows are zero where the sum vanishes (no faces, or
        cancelling faces).
    """
    rr = np.asarray(rr, float)
    tris = np.asarray(tris)
    unit, _ = _face_normals(rr, tris)
    nn = np.zeros_like(rr)
    for k in range(3):  # three scatter-adds, vectorised over faces
        for d in range(3):
            nn[:, d] += np.bincount(tris[:, k], unit[:, d], minlength=len(rr))
    size = np.linalg.norm(nn, axis=1)
    ok = size > _ZERO_NORMAL
    nn[ok] /= size[ok, None]
    nn[~ok] = 0.0
    return nn


def vertex_areas(rr, tris):
    """Per-vertex area: one third of the areas of the incident triangles.

    Parameters
    ----------
    rr : array, shape (n_vertices, 3)
    tris : array, shape (n_tris, 3)

    Returns
    -------
    area : array, shape (n_vertices,)
        In the squared unit of ``rr``.
    """
    rr = np.asarray(rr, float)
    tris = np.asarray(tris)
    _, twice = _face_normals(rr, tris)
    third = twice / 6.0
    return np.bincount(tris.ravel(), np.repeat(third, 3), minlength=len(rr))


# ----------------------------------------------------- point-to-surface tests
def point_triangle_distance(p, a, b, c):
    """Exact distance from points to triangles (paired row by row).

    The same Voronoi-region construction as :func:`closest_points_on_mesh`
    (``_closest_params``), one triangle per point.

    Parameters
    ----------
    p, a, b, c : ndarray, shape (n, 3)
        Points and triangle corners.

    Returns
    -------
    dist : ndarray, shape (n,)
    """
    p, a, b, c = (np.asarray(x, float) for x in (p, a, b, c))
    ab, ac = b - a, c - a
    ap = p - a
    s, t, _ = _closest_params(ap, ab, ac, _rowdot(ab, ab), _rowdot(ab, ac), _rowdot(ac, ac))
    diff = ap - s[:, np.newaxis] * ab - t[:, np.newaxis] * ac  # no cancellation
    return np.sqrt(_rowdot(diff, diff))


def surface_distance_below(points, surf, limit):
    """Which points are closer than ``limit`` (m) to a triangulated surface.

    Exact (point to triangle). A KD-tree on the vertices gives the nearest
    vertex distance ``d_v``; since a triangle lies inside the ball of radius
    ``L`` (its longest edge) around each of its corners, the true distance is
    at least ``d_v - L``: only points with ``d_v - L < limit`` go to
    :func:`closest_points_on_mesh` (the one exact search).

    Returns
    -------
    close : ndarray of bool, shape (n_points,)
    dist : ndarray, shape (n_points,)
        The exact distance where tested, else the lower bound ``d_v - L``
        (which is >= limit).
    """
    from scipy.spatial import cKDTree

    rr, tris = np.asarray(surf["rr"], float), np.asarray(surf["tris"], int)
    points = np.asarray(points, float)
    close = np.zeros(len(points), bool)
    if len(points) == 0 or limit <= 0:
        return close, np.full(len(points), np.inf)
    edges = np.concatenate(
        [rr[tris[:, 1]] - rr[tris[:, 0]], rr[tris[:, 2]] - rr[tris[:, 1]],
         rr[tris[:, 0]] - rr[tris[:, 2]]]
    )  # fmt: skip
    max_edge = float(np.sqrt((edges**2).sum(1)).max())
    d_v, _ = cKDTree(rr[np.unique(tris)]).query(points)
    dist = d_v - max_edge
    cand = np.flatnonzero(dist < limit)
    if len(cand):
        dist[cand] = closest_points_on_mesh(points[cand], rr, tris, verbose=False)[0]
        close[cand] = dist[cand] < limit
    return close, dist


def points_inside_surface(points, surf):
    """Exact inside test for a closed triangulated surface (ray crossing count).

    The surface is oriented outward (by its signed volume), then a +z ray from
    every point counts signed crossings (the winding number, numba kernel in
    ``forward/_engine_numba.py``); points whose ray grazes an edge or a vertex,
    or that lie on the surface, are decided by MNE's solid angles. The same
    function decides the engine's ``check_inside`` (``forward._inside``).

    Parameters
    ----------
    points : ndarray, shape (n, 3)
    surf : dict
        With ``rr`` (n_vertices, 3) and ``tris`` (n_triangles, 3).

    Returns
    -------
    inside : ndarray of bool, shape (n,)
    """
    from .forward._inside import points_inside_exact

    rr = np.asarray(surf["rr"], float)
    tris = np.asarray(surf["tris"], np.int64)
    if _signed_volume(rr, tris) < 0:
        tris = tris[:, ::-1]
    return points_inside_exact(np.asarray(points, float).reshape(-1, 3), dict(rr=rr, tris=tris))


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
        # the longest edge and the largest |a|: bounds of the float32 rounding
        bc = ac - ab
        self.edge = float(np.sqrt(max(self.gram[:, 0].max(), self.gram[:, 2].max(),
                                      _rowdot(bc, bc).max())))  # fmt: skip
        self.radius = float(np.sqrt(_rowdot(a, a).max()))
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
        # exact (float64) evaluation of every candidate that can be the
        # closest: for those, float32 d2 is off by a few eps of
        # |ap|^2 + edge^2 + |ap| |a| (|ap| <= d + edge, |a| <= radius)
        d2min = d2.min(axis=1, keepdims=True)
        reach = np.sqrt(d2min) + geom.edge
        near = d2 <= d2min + 1e-6 * (d2min + geom.edge**2 + reach * geom.radius)
        row, col = np.nonzero(near)  # row-major: rows in order
        tb = c[row, col]
        ap64 = points[idx[row]] - geom.origin - geom.a[tb]
        s, t, _ = _closest_params(ap64, geom.ab[tb], geom.ac[tb], *geom.gram[tb].T)
        diff = ap64 - s[:, np.newaxis] * geom.ab[tb] - t[:, np.newaxis] * geom.ac[tb]
        dd = _rowdot(diff, diff)
        start = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        best = np.minimum.reduceat(dd, start)
        first = np.flatnonzero(dd == np.repeat(best, np.diff(np.r_[start, len(dd)])))
        first = first[np.r_[True, row[first][1:] != row[first][:-1]]]  # first per row
        tb, diff = tb[first], diff[first]
        d_best = np.sqrt(dd[first])
        better = d_best < dist[idx]
        upd = idx[better]
        dist[upd] = d_best[better]
        closest[upd] = points[upd] - diff[better]
        tri_idx[upd] = tb[better]


def _triangle_normals(rr: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Unit normals of the triangles (right-hand winding); zero if degenerate."""
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
