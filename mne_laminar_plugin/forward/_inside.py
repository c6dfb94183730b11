"""Inside-the-inner-skull test of the fast engine: ray crossings.

The exact winding number gives MNE's decisions at the cost of a ray cast
instead of a solid-angle sum over all triangles; ambiguous points fall back
to MNE's solid angles.
"""

from __future__ import annotations

import numpy as np
from mne.utils import (
    logger,
)

from ._engine_numba import _get_kernels, _n_cpus, _Threads

_RAY_EDGE_TOL = 1e-10  # relative (to the mesh extent squared) ambiguity tolerance
_RAY_Z_TOL = 1e-9  # metres: points this close to a crossing use MNE's solid angles


# #############################################################################
# Inside-the-inner-skull test


def _ray_grid(verts, tris):
    """Bin triangles by their xy bounding boxes into a CSR grid."""
    lo = verts[:, :2].min(0)
    hi = verts[:, :2].max(0)
    span = hi - lo
    pad = 1e-6 * span.max()
    lo = lo - pad
    span = span + 2 * pad
    n = max(1, int(np.sqrt(len(tris))))
    d = span / n
    tri_xy = verts[tris][:, :, :2]  # (n_tri, 3, 2)
    tlo = np.floor((tri_xy.min(1) - lo) / d).astype(np.int64) - 1
    thi = np.floor((tri_xy.max(1) - lo) / d).astype(np.int64) + 1
    tlo = np.clip(tlo, 0, n - 1)
    thi = np.clip(thi, 0, n - 1)
    nx = thi[:, 0] - tlo[:, 0] + 1
    ny = thi[:, 1] - tlo[:, 1] + 1
    counts = nx * ny
    tri_id = np.repeat(np.arange(len(tris)), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    cx = tlo[tri_id, 0] + local // ny[tri_id]
    cy = tlo[tri_id, 1] + local % ny[tri_id]
    cell = cx * n + cy
    order = np.argsort(cell, kind="stable")
    cell_tris = tri_id[order].astype(np.int64)
    cell_start = np.searchsorted(cell[order], np.arange(n * n + 1)).astype(np.int64)
    grid = np.array([lo[0], lo[1], d[0], d[1], n, n], float)
    return cell_start, cell_tris, grid


class _FastCheckInside:
    """The parts of MNE's _CheckInside ("old" mode) that decide the result.

    MNE builds a qhull Delaunay triangulation of the surface vertices to test
    whether the vertex mean is inside their convex hull (then it uses the
    interior/exterior spheres below) and to discard points outside the hull;
    the first is a convex-hull test here, the second is implied by the exact
    winding-number test (_inside_surface), so the decisions are the same.
    """

    def __init__(self, surf):
        from scipy.spatial import ConvexHull

        self.surf = surf
        rr = np.asarray(surf["rr"], float)
        self.center = rr.mean(0)
        self.inner_r = self.outer_r = None
        hull = ConvexHull(rr)
        tol = 1e-12 * np.ptp(rr, axis=0).max()
        if np.all(hull.equations[:, :3] @ self.center + hull.equations[:, 3] <= tol):
            dists = np.linalg.norm(rr - self.center, axis=-1)
            self.inner_r = dists.min()
            self.outer_r = dists.max()

    def query(self, rr):
        """Distance to the nearest surface vertex (as MNE's _CheckInside)."""
        if not hasattr(self, "_tree"):
            from scipy.spatial import cKDTree

            self._tree = cKDTree(self.surf["rr"])
        return self._tree.query(rr)


def _inside_surface(check, rr):
    """Inside test identical to MNE's _CheckInside (old mode) decisions.

    MNE: points within the interior sphere are inside, outside the exterior
    sphere are outside, the rest by the total solid angle of the surface,
    which is what :func:`points_inside_exact` gives.
    """
    inside = np.ones(len(rr), bool)
    idx = np.arange(len(rr))
    if check.inner_r is not None:
        dists = np.linalg.norm(rr - check.center, axis=-1)
        in_mask = dists < check.inner_r
        out_mask = dists > check.outer_r
        inside[out_mask] = False
        idx = idx[~in_mask & ~out_mask]
    if len(idx):
        inside[idx] = points_inside_exact(rr[idx], check.surf)
    return inside


def points_inside_exact(rr, surf):
    """Exact inside test of a closed, outward-oriented surface (MNE's rule).

    The one implementation behind ``mesh.points_inside_surface`` and the
    engine's :func:`check_inside`: inside where the winding number is +1
    (like MNE's solid angles, an inward-oriented surface has nothing inside;
    ``mesh.points_inside_surface`` orients the surface first).

    The total solid angle of a closed surface is 4 pi times its winding number
    around the point, which a +z ray gives exactly by counting signed
    crossings (numba kernel, threads); points whose ray grazes an edge or
    that lie on the surface are sent to MNE's solid-angle code itself.
    """
    from mne.surface import _points_outside_surface

    rr = np.asarray(rr, float)
    if len(rr) == 0:
        return np.zeros(0, bool)
    verts = np.ascontiguousarray(surf["rr"], float)
    tris = np.ascontiguousarray(surf["tris"], np.int64)
    cell_start, cell_tris, grid = _ray_grid(verts, tris)
    extent = np.ptp(verts, axis=0).max()
    wind = np.empty(len(rr), np.int64)
    pts = np.ascontiguousarray(rr)
    kernel = _get_kernels().ray_winding
    tol_e = _RAY_EDGE_TOL * extent**2

    def fun(a, b):
        kernel(
            pts[a:b], verts, tris, cell_start, cell_tris, grid, tol_e, _RAY_Z_TOL,
            wind[a:b],
        )  # fmt: skip

    _Threads(_n_cpus()).run(len(pts), fun, min_per_thread=1000)
    amb = (wind != 0) & (wind != 1)
    inside = wind == 1
    if amb.any():
        logger.info(f"    {amb.sum()} point(s) resolved with solid angles")
        inside[amb] = ~_points_outside_surface(rr[amb], surf)
    return inside
