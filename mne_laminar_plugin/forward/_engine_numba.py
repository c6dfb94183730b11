"""Numba kernels of the fast forward engine, and the threads that run them.

Like MNE's ``_compute_forward_numba.py``: each kernel is written once with
``prange`` and compiled serial by :func:`_get_kernels`; all take preallocated
outputs.
"""

from __future__ import annotations

import os
import types
from functools import lru_cache

import numpy as np

# LLVM fast-math flags without "afn" (approximate functions): sqrt and division
# stay correctly rounded, so the kernels agree with MNE to ~1e-14.
_FASTMATH = frozenset({"nnan", "ninf", "nsz", "arcp", "contract", "reassoc"})


# #############################################################################
# numba kernels (compiled lazily, cached on disk)
#
# Each kernel is written once with ``prange`` and compiled twice: parallel (used
# in-process, all cores) and serial (used inside joblib/dask workers, where the
# parallelism comes from the workers). All take preallocated outputs.


def _k_inf_pots_fixed(mri_rr, q, nodes, out):  # pragma: no cover (numba)
    """Oriented infinite-medium potentials (without 1/(4 pi sigma)).

    out[i, j] = q_i . (r_j - s_i) / |r_j - s_i|^3, the potential at BEM node j
    of a unit dipole at s_i along q_i (MRI frame). ``nodes`` is (3, n_nodes).
    """
    n_src = mri_rr.shape[0]
    n_nodes = nodes.shape[1]
    nx = nodes[0]
    ny = nodes[1]
    nz = nodes[2]
    for i in prange(n_src):  # noqa: F821
        x = mri_rr[i, 0]
        y = mri_rr[i, 1]
        z = mri_rr[i, 2]
        qx = q[i, 0]
        qy = q[i, 1]
        qz = q[i, 2]
        for j in range(n_nodes):
            dx = nx[j] - x
            dy = ny[j] - y
            dz = nz[j] - z
            d2 = dx * dx + dy * dy + dz * dz
            d3 = d2 * np.sqrt(d2)
            d3 = d3 if d3 != 0.0 else 1.0
            out[i, j] = (qx * dx + qy * dy + qz * dz) / d3


def _k_inf_pots_free(mri_rr, a, nodes, out):  # pragma: no cover (numba)
    """Infinite-medium potentials for three orientations per source.

    out[3 i + k, j] = a_k . (r_j - s_i) / |r_j - s_i|^3 with a_k = a[k] the
    head-frame axis k expressed in MRI coordinates (MNE's ``mri_Q`` rows).
    """
    n_src = mri_rr.shape[0]
    n_nodes = nodes.shape[1]
    nx = nodes[0]
    ny = nodes[1]
    nz = nodes[2]
    a00 = a[0, 0]
    a01 = a[0, 1]
    a02 = a[0, 2]
    a10 = a[1, 0]
    a11 = a[1, 1]
    a12 = a[1, 2]
    a20 = a[2, 0]
    a21 = a[2, 1]
    a22 = a[2, 2]
    for i in prange(n_src):  # noqa: F821
        x = mri_rr[i, 0]
        y = mri_rr[i, 1]
        z = mri_rr[i, 2]
        for j in range(n_nodes):
            dx = nx[j] - x
            dy = ny[j] - y
            dz = nz[j] - z
            d2 = dx * dx + dy * dy + dz * dz
            d3 = d2 * np.sqrt(d2)
            d3 = d3 if d3 != 0.0 else 1.0
            inv = 1.0 / d3
            out[3 * i, j] = (a00 * dx + a01 * dy + a02 * dz) * inv
            out[3 * i + 1, j] = (a10 * dx + a11 * dy + a12 * dz) * inv
            out[3 * i + 2, j] = (a20 * dx + a21 * dy + a22 * dz) * inv


def _k_prim_fixed(rr, q, rmag, cw, cols, add, out):  # pragma: no cover (numba)
    """Primary-current (infinite-medium) field at MEG coils.

    For a dipole q at r and the integration points (m, c, w) of a coil, MNE's
    field is sum_p w (q x (m - r)) . c / |m - r|^3 = sum_p (w c) . (q x d) / |d|^3
    with d = m - r (times mu0 / 4 pi, folded into ``cw`` by the caller). Coils
    are grouped by their number of points P: ``rmag`` and ``cw`` (= w c) are
    (3, P, n_coils) so the inner loop runs over coils (contiguous,
    vectorised). Writes (``add``: adds) out[i, cols[coil]] for q = q[i].
    """
    n_src = rr.shape[0]
    n_pts = rmag.shape[1]
    n_coils = rmag.shape[2]
    acc = np.empty(n_coils)
    for i in prange(n_src):  # noqa: F821
        x = rr[i, 0]
        y = rr[i, 1]
        z = rr[i, 2]
        qx = q[i, 0]
        qy = q[i, 1]
        qz = q[i, 2]
        for c in range(n_coils):
            acc[c] = 0.0
        for p in range(n_pts):
            for c in range(n_coils):
                dx = rmag[0, p, c] - x
                dy = rmag[1, p, c] - y
                dz = rmag[2, p, c] - z
                d2 = dx * dx + dy * dy + dz * dz
                d3 = d2 * np.sqrt(d2)
                d3 = d3 if d3 != 0.0 else 1.0
                ux = qy * dz - qz * dy
                uy = qz * dx - qx * dz
                uz = qx * dy - qy * dx
                acc[c] += (ux * cw[0, p, c] + uy * cw[1, p, c] + uz * cw[2, p, c]) / d3
        if add:
            for c in range(n_coils):
                out[i, cols[c]] += acc[c]
        else:
            for c in range(n_coils):
                out[i, cols[c]] = acc[c]


def _k_prim_free(rr, rmag, cw, cols, add, out):  # pragma: no cover (numba)
    """As _k_prim_fixed for the three head-frame axes: out[3 i + k, cols[coil]].

    Component k of sum_p w (d x c) / |d|^3 (MNE's ``_bem_inf_fields``).
    """
    n_src = rr.shape[0]
    n_pts = rmag.shape[1]
    n_coils = rmag.shape[2]
    acc = np.empty((3, n_coils))
    for i in prange(n_src):  # noqa: F821
        x = rr[i, 0]
        y = rr[i, 1]
        z = rr[i, 2]
        for c in range(n_coils):
            acc[0, c] = 0.0
            acc[1, c] = 0.0
            acc[2, c] = 0.0
        for p in range(n_pts):
            for c in range(n_coils):
                dx = rmag[0, p, c] - x
                dy = rmag[1, p, c] - y
                dz = rmag[2, p, c] - z
                d2 = dx * dx + dy * dy + dz * dz
                d3 = d2 * np.sqrt(d2)
                d3 = d3 if d3 != 0.0 else 1.0
                inv = 1.0 / d3
                acc[0, c] += (dy * cw[2, p, c] - dz * cw[1, p, c]) * inv
                acc[1, c] += (dz * cw[0, p, c] - dx * cw[2, p, c]) * inv
                acc[2, c] += (dx * cw[1, p, c] - dy * cw[0, p, c]) * inv
        for k in range(3):
            if add:
                for c in range(n_coils):
                    out[3 * i + k, cols[c]] += acc[k, c]
            else:
                for c in range(n_coils):
                    out[3 * i + k, cols[c]] = acc[k, c]


def _k_lin_field_coeff(nodes, area_nn, rmag, cw, starts, out):  # pragma: no cover
    """Linear-collocation field coefficients of BEM nodes at MEG coils.

    MNE's ``_do_lin_field_coeff`` sums, over the triangles t of node j,
    w c . ((m - r_j) x n_t) area_t / (3 |m - r_j|^3); the cross product is
    linear in n_t, so the sum is w c . ((m - r_j) x A_j) / |m - r_j|^3 with
    A_j = sum_t area_t n_t / 3 (``area_nn``, shape (n_nodes, 3)).
    out[node, coil]; rmag and cw are (3, n_points), ``starts`` delimits coils.
    """
    n_nodes = nodes.shape[0]
    n_coils = starts.shape[0] - 1
    mx = rmag[0]
    my = rmag[1]
    mz = rmag[2]
    cx = cw[0]
    cy = cw[1]
    cz = cw[2]
    for j in prange(n_nodes):  # noqa: F821
        x = nodes[j, 0]
        y = nodes[j, 1]
        z = nodes[j, 2]
        ax = area_nn[j, 0]
        ay = area_nn[j, 1]
        az = area_nn[j, 2]
        for c in range(n_coils):
            s = 0.0
            for p in range(starts[c], starts[c + 1]):
                dx = mx[p] - x
                dy = my[p] - y
                dz = mz[p] - z
                d2 = dx * dx + dy * dy + dz * dz
                d3 = d2 * np.sqrt(d2)
                s += (
                    (dy * az - dz * ay) * cx[p]
                    + (dz * ax - dx * az) * cy[p]
                    + (dx * ay - dy * ax) * cz[p]
                ) / d3
            out[j, c] = s


def _k_sphere_fixed(rr, q, r0, pos, cosmag, w, out):  # pragma: no cover (numba)
    """Sarvas' field of a dipole in a conducting sphere (MNE's formulation).

    Same expressions as MNE's ``_do_sphere_field``, projected on q:
    w (q . (r x c) / F + g q . (r x p)) = w ((q x r) . c / F + g (q x r) . p).
    Coil-grouped layout as _k_prim_fixed: ``pos`` (relative to r0) and
    ``cosmag`` are (3, P, n_coils), ``w`` is (P, n_coils).
    """
    n_src = rr.shape[0]
    n_pts = pos.shape[1]
    n_coils = pos.shape[2]
    for i in prange(n_src):  # noqa: F821
        x = rr[i, 0] - r0[0]
        y = rr[i, 1] - r0[1]
        z = rr[i, 2] - r0[2]
        ux = q[i, 1] * z - q[i, 2] * y
        uy = q[i, 2] * x - q[i, 0] * z
        uz = q[i, 0] * y - q[i, 1] * x
        for c in range(n_coils):
            out[i, c] = 0.0
        if np.sqrt(x * x + y * y + z * z) <= 1e-10:
            continue  # dipole at the origin: no field (as MNE)
        for p in range(n_pts):
            for c in range(n_coils):
                px = pos[0, p, c]
                py = pos[1, p, c]
                pz = pos[2, p, c]
                cx = cosmag[0, p, c]
                cy = cosmag[1, p, c]
                cz = cosmag[2, p, c]
                r = np.sqrt(px * px + py * py + pz * pz)
                ax = px - x
                ay = py - y
                az = pz - z
                a = np.sqrt(ax * ax + ay * ay + az * az)
                rr0 = px * x + py * y + pz * z
                ar = r * r - rr0
                ar0 = ar / a
                F = a * (r * a + ar)
                gr = (a * a) / r + ar0 + 2.0 * (a + r)
                g0 = a + 2 * r + ar0
                re = px * cx + py * cy + pz * cz
                r0e = x * cx + y * cy + z * cz
                g = (g0 * r0e - gr * re) / (F * F)
                good = (a > 0) or (r > 0) or ((a * r) + 1 > 1e-5)
                wg = w[p, c] if good else 0.0
                out[i, c] += wg * (
                    (ux * cx + uy * cy + uz * cz) / F
                    + g * (ux * px + uy * py + uz * pz)
                )


def _k_sphere_free(rr, r0, pos, cosmag, w, out):  # pragma: no cover (numba)
    """As _k_sphere_fixed for the three head-frame axes: out[3 i + k, coil]."""
    n_src = rr.shape[0]
    n_pts = pos.shape[1]
    n_coils = pos.shape[2]
    for i in prange(n_src):  # noqa: F821
        x = rr[i, 0] - r0[0]
        y = rr[i, 1] - r0[1]
        z = rr[i, 2] - r0[2]
        for c in range(n_coils):
            out[3 * i, c] = 0.0
            out[3 * i + 1, c] = 0.0
            out[3 * i + 2, c] = 0.0
        if np.sqrt(x * x + y * y + z * z) <= 1e-10:
            continue
        for p in range(n_pts):
            for c in range(n_coils):
                px = pos[0, p, c]
                py = pos[1, p, c]
                pz = pos[2, p, c]
                cx = cosmag[0, p, c]
                cy = cosmag[1, p, c]
                cz = cosmag[2, p, c]
                r = np.sqrt(px * px + py * py + pz * pz)
                ax = px - x
                ay = py - y
                az = pz - z
                a = np.sqrt(ax * ax + ay * ay + az * az)
                rr0 = px * x + py * y + pz * z
                ar = r * r - rr0
                ar0 = ar / a
                F = a * (r * a + ar)
                gr = (a * a) / r + ar0 + 2.0 * (a + r)
                g0 = a + 2 * r + ar0
                re = px * cx + py * cy + pz * cz
                r0e = x * cx + y * cy + z * cz
                g = (g0 * r0e - gr * re) / (F * F)
                good = (a > 0) or (r > 0) or ((a * r) + 1 > 1e-5)
                wg = w[p, c] if good else 0.0
                f = wg / F
                wgg = wg * g
                # v1 = r x cosmag, v2 = r x pos
                out[3 * i, c] += f * (y * cz - z * cy) + wgg * (y * pz - z * py)
                out[3 * i + 1, c] += f * (z * cx - x * cz) + wgg * (z * px - x * pz)
                out[3 * i + 2, c] += f * (x * cy - y * cx) + wgg * (x * py - y * px)


def _k_eeg_sphere(rr, q, r0, pos, w, starts, rad, mu, lam, out):  # pragma: no cover
    """EEG in a multi-shell sphere (Berg-Scherg equivalent dipoles), as MNE.

    Same expressions as MNE's ``_do_eeg_spherepot_coil`` without the final
    1 / (4 pi); sources outside the innermost shell give zeros like MNE.
    """
    n_src = rr.shape[0]
    n_ori = q.shape[1]
    n_coils = starts.shape[0] - 1
    n_eq = mu.shape[0]
    px = pos[0]
    py = pos[1]
    pz = pos[2]
    for i in prange(n_src):  # noqa: F821
        x = rr[i, 0] - r0[0]
        y = rr[i, 1] - r0[1]
        z = rr[i, 2] - r0[2]
        inside = np.sqrt(x * x + y * y + z * z) < rad
        for c in range(n_coils):
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            if inside:
                for p in range(starts[c], starts[c + 1]):
                    r2 = px[p] * px[p] + py[p] * py[p] + pz[p] * pz[p]
                    r = np.sqrt(r2)
                    v0 = 0.0
                    v1 = 0.0
                    v2 = 0.0
                    for eq in range(n_eq):
                        rdx = mu[eq] * x
                        rdy = mu[eq] * y
                        rdz = mu[eq] * z
                        rd2 = rdx * rdx + rdy * rdy + rdz * rdz
                        rd2_inv = 1.0 / rd2
                        avx = px[p] - rdx
                        avy = py[p] - rdy
                        avz = pz[p] - rdz
                        a = np.sqrt(avx * avx + avy * avy + avz * avz)
                        a3 = 2.0 / (a * a * a)
                        rrd = px[p] * rdx + py[p] * rdy + pz[p] * rdz
                        ra = r2 - rrd
                        rda = rrd - rd2
                        F = a * (r * a + ra)
                        c1 = a3 * rda + 1.0 / a - 1.0 / r
                        c2 = a3 + (a + r) / (r * F)
                        m1 = c1 - c2 * rrd
                        m2 = c2 * rd2
                        f = lam[eq] * rd2_inv
                        v0 += f * (m1 * rdx + m2 * px[p])
                        v1 += f * (m1 * rdy + m2 * py[p])
                        v2 += f * (m1 * rdz + m2 * pz[p])
                    s0 += w[p] * v0
                    s1 += w[p] * v1
                    s2 += w[p] * v2
            for k in range(n_ori):
                out[n_ori * i + k, c] = (
                    q[i, k, 0] * s0 + q[i, k, 1] * s1 + q[i, k, 2] * s2
                )


def _k_near_field(mri_rr, q, nodes, table, grid, sol_T, v0, out):  # pragma: no cover
    """Take the BEM nodes near each source out of a float32 product.

    For float32 output the BEM correction v0 @ sol_T is a float32 product, but
    for sources close to the surface it is many times larger than the final
    field (it cancels most of the primary field), and its largest terms come
    from the nodes nearest to the source. Those terms are recomputed here in
    float64 (out[dip] = sum_j v0_64[dip, j] sol_T[j]) and zeroed in the float32
    ``v0``; the split is exact whichever nodes are taken. The nodes are those
    nearest to the centre of the source's voxel in a regular grid, ``grid`` =
    (x0, y0, z0, h, nx, ny, nz), ``table`` (n_voxels, k). ``q`` is
    (n_src, n_ori, 3), MRI frame.
    """
    n_src = mri_rr.shape[0]
    n_ori = q.shape[1]
    n_ch = sol_T.shape[1]
    gnx = int(grid[4])
    gny = int(grid[5])
    gnz = int(grid[6])
    for i in prange(n_src):  # noqa: F821
        ix = min(max(int((mri_rr[i, 0] - grid[0]) / grid[3]), 0), gnx - 1)
        iy = min(max(int((mri_rr[i, 1] - grid[1]) / grid[3]), 0), gny - 1)
        iz = min(max(int((mri_rr[i, 2] - grid[2]) / grid[3]), 0), gnz - 1)
        vox = (ix * gny + iy) * gnz + iz
        for k in range(n_ori):
            for c in range(n_ch):
                out[n_ori * i + k, c] = 0.0
        for jj in range(table.shape[1]):
            j = table[vox, jj]
            dx = nodes[0, j] - mri_rr[i, 0]
            dy = nodes[1, j] - mri_rr[i, 1]
            dz = nodes[2, j] - mri_rr[i, 2]
            d2 = dx * dx + dy * dy + dz * dz
            d3 = d2 * np.sqrt(d2)
            d3 = d3 if d3 != 0.0 else 1.0
            for k in range(n_ori):
                v = (q[i, k, 0] * dx + q[i, k, 1] * dy + q[i, k, 2] * dz) / d3
                v0[n_ori * i + k, j] = 0.0
                for c in range(n_ch):
                    out[n_ori * i + k, c] += v * sol_T[j, c]


def _k_ray_winding(pts, verts, tris, cell_start, cell_tris, grid, tol_e, tol_z, out):
    """Signed crossings of +z rays with a closed triangle mesh (winding number).

    out[i] = winding number (+1 inside an outward-oriented closed surface,
    0 outside), or -99 when the ray passes within a tolerance of an edge or
    the point is within ``tol_z`` of a crossing (resolved by the caller with
    MNE's solid-angle test). ``grid`` = (x0, y0, dx, dy, nx, ny) bins the
    triangles by their xy bounding boxes (CSR in cell_start/cell_tris).
    """  # pragma: no cover (numba)
    x0 = grid[0]
    y0 = grid[1]
    gdx = grid[2]
    gdy = grid[3]
    gnx = int(grid[4])
    gny = int(grid[5])
    for i in prange(pts.shape[0]):  # noqa: F821
        px = pts[i, 0]
        py = pts[i, 1]
        pz = pts[i, 2]
        ix = int(np.floor((px - x0) / gdx))
        iy = int(np.floor((py - y0) / gdy))
        if ix < 0 or iy < 0 or ix >= gnx or iy >= gny:
            out[i] = 0
            continue
        cell = ix * gny + iy
        wind = 0
        amb = False
        for tt in range(cell_start[cell], cell_start[cell + 1]):
            t = cell_tris[tt]
            a = tris[t, 0]
            b = tris[t, 1]
            c = tris[t, 2]
            ax = verts[a, 0]
            ay = verts[a, 1]
            bx = verts[b, 0]
            by = verts[b, 1]
            cx = verts[c, 0]
            cy = verts[c, 1]
            # edge functions (twice the signed areas of the sub-triangles)
            e_ab = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
            e_bc = (cx - bx) * (py - by) - (cy - by) * (px - bx)
            e_ca = (ax - cx) * (py - cy) - (ay - cy) * (px - cx)
            s = e_ab + e_bc + e_ca
            if (e_ab > tol_e and e_bc > tol_e and e_ca > tol_e) or (
                e_ab < -tol_e and e_bc < -tol_e and e_ca < -tol_e
            ):
                # strictly inside the projected triangle: height of the plane
                zh = (e_bc * verts[a, 2] + e_ca * verts[b, 2] + e_ab * verts[c, 2]) / s
                if abs(zh - pz) <= tol_z:
                    amb = True
                elif zh > pz:
                    wind += 1 if s > 0 else -1
            elif not (
                (e_ab > tol_e or e_bc > tol_e or e_ca > tol_e)
                and (e_ab < -tol_e or e_bc < -tol_e or e_ca < -tol_e)
            ):
                # not clearly outside either: within tol of an edge or vertex
                # (or a vertical triangle containing the ray)
                amb = True
        out[i] = -99 if amb else wind


_KERNELS = (
    "_k_inf_pots_fixed",
    "_k_inf_pots_free",
    "_k_prim_fixed",
    "_k_prim_free",
    "_k_lin_field_coeff",
    "_k_sphere_fixed",
    "_k_sphere_free",
    "_k_eeg_sphere",
    "_k_ray_winding",
    "_k_near_field",
)


@lru_cache(maxsize=1)
def _get_kernels():
    """Compile (or load from numba's on-disk cache) the kernels.

    They are compiled serial (``prange`` = ``range``) and release the GIL. The
    unit of parallelism is a chunk of sources, computed start to finish by one
    thread (kernels, then a single-threaded BLAS product): chunks run on a
    pool of Python threads in-process, or on joblib/dask workers, with the
    same per-chunk arithmetic, hence the same result. Unlike numba's OpenMP
    layer, idle pool threads do not spin and steal cores from BLAS.
    """
    import numba

    glb = dict(globals())
    glb["prange"] = range
    out = dict()
    for name in _KERNELS:
        f = globals()[name]
        g = types.FunctionType(f.__code__, glb, name, f.__defaults__)
        g.__qualname__ = name
        g.__module__ = __name__
        g.__doc__ = f.__doc__
        out[name[3:]] = numba.njit(fastmath=set(_FASTMATH), nogil=True, cache=True)(g)
    return types.SimpleNamespace(**out)


def _n_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (macOS, Windows)
        return os.cpu_count() or 1


class _Threads:
    """Split a range of sources over a few threads running GIL-free kernels."""

    _pools = dict()

    def __init__(self, n_threads):
        self.n = max(1, int(n_threads))

    def run(self, n, fun, min_per_thread=16):
        """Call fun(a, b) on n_threads contiguous sub-ranges of range(n)."""
        n_split = min(self.n, max(1, n // min_per_thread))
        if n_split <= 1:
            fun(0, n)
            return
        from concurrent.futures import ThreadPoolExecutor

        pool = self._pools.get(n_split)
        if pool is None:
            pool = self._pools[n_split] = ThreadPoolExecutor(
                n_split, thread_name_prefix="laminar-engine"
            )
        edges = np.linspace(0, n, n_split + 1).round().astype(int)
        futures = [
            pool.submit(fun, a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a
        ]
        for fut in futures:
            fut.result()
