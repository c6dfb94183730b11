"""Fast forward engine for laminar leadfields.

A laminar leadfield has ``n_layers`` times the sources of an ordinary one. This
module computes exactly what :func:`mne.make_forward_solution` computes for a
discrete source space (same conductor models, coil definitions, integration
points and formulas), but organises the per-source work for throughput:

* everything that does not depend on the sources is done once, reusing MNE for
  it (sensor and coil definitions, BEM solution, EEG electrode projection,
  transforms);
* the infinite-medium potentials at the BEM nodes and the primary-current
  (infinite-medium) magnetic field are computed in bulk by numba kernels,
  oriented *before* the BEM product when a fixed orientation is asked for (a
  third of the floating-point work of MNE, which always computes the three
  dipole components);
* the BEM correction for MEG and EEG together is one BLAS matrix product per
  chunk of sources, accumulated straight into a preallocated output matrix, so
  peak memory stays close to the size of the result;
* chunks run on one thread per core, or are farmed out through joblib (loky,
  threading, or a dask cluster), with identical results;
* the inside-the-inner-skull test counts ray crossings (exact winding number)
  instead of summing solid angles over all triangles, with MNE's decisions.

With float32 output the BEM product is a float32 product, except for the
terms of the BEM nodes nearest to each source, kept in float64 (see
``_k_near_field``); the error stays below 1e-5 (``benchmarks/README.md``).

The formulas follow MNE-Python 1.13 (``mne/forward/_compute_forward.py`` and
``_compute_forward_numba.py``, BSD-3-Clause), which derive from Matti
Hämäläinen's MNE-C: Hämäläinen & Sarvas (1989), Mosher, Leahy & Lewis (1999),
Sarvas (1987) and the Berg-Scherg EEG sphere approximation.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import types
from functools import lru_cache

import numpy as np
from mne.utils import (
    ProgressBar,
    _check_option,
    _ensure_int,
    _validate_type,
    logger,
    verbose,
)

__all__ = ["check_inside", "compute_gain", "compute_gain_mne", "gain_ch_names"]

_TIMINGS = dict()  # cumulative seconds per phase, summed over threads
_TIMINGS_LOCK = threading.Lock()
_MAG_FACTOR = 1e-7  # mu_0 / (4 pi), as mne.forward._compute_forward._MAG_FACTOR
_CHUNK_BYTES = 16e6  # per-chunk work buffer (infinite potentials), per thread
_N_NEAR = 16  # float32 output: nearest BEM nodes whose terms stay float64
_NEAR_GRID = 0.005  # m, voxel size of the lookup of those nodes
_RAY_EDGE_TOL = 1e-10  # relative (to the mesh extent squared) ambiguity tolerance
_RAY_Z_TOL = 1e-9  # metres: points this close to a crossing use MNE's solid angles

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
    """Do once what MNE does once: sensors, conductor, transforms."""
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


# #############################################################################
# Per-chunk work


def _add_time(key, dt):
    with _TIMINGS_LOCK:
        _TIMINGS[key] = _TIMINGS.get(key, 0.0) + dt


def _compute_chunk(plan, rr_head, nn_head, out_T, dtype, work=None):
    """Compute the gain of a chunk of sources into out_T (n_dip, n_ch), C order.

    ``out_T`` is the transpose of a column block of the (F-ordered) output.
    Runs in the calling thread (call it with single-threaded BLAS). Returns
    the work buffer for reuse.
    """
    kernels = _get_kernels()
    n_src = len(rr_head)
    fixed = nn_head is not None
    n_ori = 1 if fixed else 3
    n_dip = n_ori * n_src
    assert out_T.shape == (n_dip, plan.n_ch)
    rr_head = np.ascontiguousarray(rr_head, float)
    nn_head = None if nn_head is None else np.ascontiguousarray(nn_head, float)
    t0 = time.perf_counter()
    if plan.is_sphere:
        meg_bufs = list()
        if plan.has_meg:
            meg_bufs = [np.empty((n_dip, len(g[0]))) for g in plan.meg_groups]
        eeg_buf = None
        if plan.has_eeg:
            eeg_buf = np.empty((n_dip, plan.eeg_starts.shape[0] - 1))
            q = (
                np.ascontiguousarray(nn_head[:, np.newaxis])
                if fixed
                else np.ascontiguousarray(np.broadcast_to(np.eye(3), (n_src, 3, 3)))
            )

        def fun(a, b):
            for (_, pos, cosm, w), buf in zip(plan.meg_groups, meg_bufs):
                if fixed:
                    kernels.sphere_fixed(
                        rr_head[a:b], nn_head[a:b], plan.r0, pos, cosm, w, buf[a:b]
                    )
                else:
                    kernels.sphere_free(
                        rr_head[a:b], plan.r0, pos, cosm, w, buf[3 * a : 3 * b]
                    )
            if eeg_buf is not None:
                kernels.eeg_sphere(
                    rr_head[a:b], q[a:b], plan.r0, plan.eeg_pos, plan.eeg_w,
                    plan.eeg_starts, plan.eeg_rad, plan.eeg_mu, plan.eeg_lambda,
                    eeg_buf[n_ori * a : n_ori * b],
                )  # fmt: skip

        fun(0, n_src)
        if eeg_buf is not None:
            eeg_buf *= 0.25 / np.pi
            out_T[:, plan.eeg_sl] = eeg_buf
        if plan.has_meg:
            out_T[:, plan.meg_sl] = _meg_rows(plan, meg_bufs, n_dip)
        _add_time("kernels", time.perf_counter() - t0)
        return work
    # BEM: infinite-medium potentials at the nodes (and the primary field),
    # then the BEM correction for all channels as one matrix product
    from mne.transforms import apply_trans

    mri_rr = np.ascontiguousarray(apply_trans(plan.head_mri, rr_head))
    q_mri = None
    if fixed:  # head direction e_k is mri_Q[k] in MRI (MNE: diff @ mri_Q.T)
        q_mri = np.ascontiguousarray(nn_head @ plan.mri_Q)
    n_nodes = plan.nodes.shape[1]
    if work is None or work.shape[0] < n_dip or work.dtype != dtype:
        work = np.empty((n_dip, n_nodes), dtype)
    v0 = work[:n_dip]

    single = dtype == np.float32
    # the primary field goes straight into the float64 near-field buffer
    # (float32 output), or into a coil buffer added after the product
    direct = plan.has_meg and plan.meg_post is None
    if single:  # the nearest nodes' terms are done in float64 (_k_near_field)
        near_out = np.empty((n_dip, plan.n_ch))
        if fixed:
            q_near = np.ascontiguousarray(q_mri[:, np.newaxis])
        else:
            q_near = np.ascontiguousarray(np.broadcast_to(plan.mri_Q, (n_src, 3, 3)))
    if single and direct:
        prim_out = near_out  # (MEG columns come first)
    elif plan.has_meg:
        prim_out = np.empty((n_dip, plan.meg_n_coils))
    add = single and direct  # the primary field adds to the near-field terms

    def fun(a, b):
        if fixed:
            kernels.inf_pots_fixed(mri_rr[a:b], q_mri[a:b], plan.nodes, v0[a:b])
        else:
            kernels.inf_pots_free(
                mri_rr[a:b], plan.mri_Q, plan.nodes, v0[3 * a : 3 * b]
            )
        if single:  # (zero-initialises its rows of near_out)
            kernels.near_field(
                mri_rr[a:b], q_near[a:b], plan.nodes, plan.near_table,
                plan.near_grid, plan.sol_T, v0[n_ori * a : n_ori * b],
                near_out[n_ori * a : n_ori * b],
            )  # fmt: skip
        if not plan.has_meg:
            return
        for _, rmag, cw, cols in plan.meg_groups:
            if fixed:
                kernels.prim_fixed(
                    rr_head[a:b], nn_head[a:b], rmag, cw, cols, add, prim_out[a:b]
                )
            else:
                kernels.prim_free(
                    rr_head[a:b], rmag, cw, cols, add, prim_out[3 * a : 3 * b]
                )

    fun(0, n_src)
    t1 = time.perf_counter()
    # (numpy releases the GIL during the product; scipy's BLAS wrappers don't)
    np.matmul(v0, plan.sol_T32 if single else plan.sol_T, out=out_T)
    t2 = time.perf_counter()
    if plan.has_meg and not add:
        prim = prim_out if direct else prim_out @ plan.meg_post
        (near_out if single else out_T)[:, plan.meg_sl] += prim
    if single:  # sum in float64, rounded once
        np.add(near_out, out_T, out=out_T, casting="same_kind")
    t3 = time.perf_counter()
    _add_time("kernels", t1 - t0 + t3 - t2)
    _add_time("gemm", t2 - t1)
    return work


def _meg_rows(plan, meg_bufs, n_dip):
    """Coil-group buffers -> MEG channel columns (x mu0/4pi, compensation)."""
    buf = np.empty((n_dip, plan.meg_n_coils))
    for (coils, *_), gbuf in zip(plan.meg_groups, meg_bufs):
        buf[:, coils] = gbuf
    buf *= _MAG_FACTOR
    if plan.meg_post is not None:
        buf = buf @ plan.meg_post
    return buf


def _chunks_task(plan, rr_head, nn_head, bounds, dtype):
    """Consecutive chunks in a joblib/dask worker: (n_ch, n_dip) F-ordered.

    ``bounds`` are the chunks' (start, stop), relative to ``rr_head``; the
    arithmetic per chunk is the in-process one, with one BLAS thread.
    """
    from threadpoolctl import threadpool_limits

    n_ori = 1 if nn_head is not None else 3
    out = np.empty((plan.n_ch, n_ori * len(rr_head)), dtype, order="F")
    work = None
    with threadpool_limits(limits=1, user_api="blas"):
        for a, b in bounds:
            work = _compute_chunk(
                plan,
                rr_head[a:b],
                None if nn_head is None else nn_head[a:b],
                out[:, n_ori * a : n_ori * b].T,
                dtype,
                work,
            )
    return out


# #############################################################################
# Public API


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


def _to_head(plan, rr, nn):
    """MRI -> head coordinates, as MNE's SourceSpaces._transform_to."""
    from mne.transforms import apply_trans

    rr_head = apply_trans(plan.mri_head, rr)
    nn_head = None if nn is None else apply_trans(plan.mri_head, nn, False)
    return rr_head, nn_head


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


def _default_chunk(plan, n_src, n_ori, dtype):
    """~16 MB of work buffer per chunk, and at least one chunk per CPU."""
    per_dip = np.dtype(dtype).itemsize * (
        plan.nodes.shape[1] if not plan.is_sphere else plan.n_ch
    )
    by_mem = int(max(64, _CHUNK_BYTES // (per_dip * n_ori)))
    by_cpu = -(-n_src // _n_cpus())
    return max(1, min(by_mem, by_cpu))


def _get_parallel(parallel, n_jobs):
    """Return a joblib.Parallel (or None to compute in-process)."""
    import joblib

    if parallel is None:
        if n_jobs is None or n_jobs == 1:
            return None
        return joblib.Parallel(n_jobs=n_jobs, return_as="generator")
    if isinstance(parallel, joblib.Parallel):
        return parallel
    _validate_type(parallel, (str, joblib.Parallel), "parallel")
    _check_option(
        "parallel", parallel, ("loky", "threading", "multiprocessing", "dask")
    )
    if parallel == "dask":
        try:
            from distributed import get_client

            get_client()
        except Exception as exc:
            raise RuntimeError(
                "parallel='dask' needs an active dask.distributed Client (create "
                f"one with distributed.Client(...) first): {exc}"
            ) from None
    with joblib.parallel_config(backend=parallel):
        return joblib.Parallel(
            n_jobs=-1 if n_jobs is None else n_jobs, return_as="generator"
        )


@verbose
def compute_gain(
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
    """Compute an MEG/EEG gain matrix with the fast engine.

    Gives the same numbers as :func:`mne.make_forward_solution` for a discrete
    source space at ``rr_mri`` (``sol['data']``, free orientation) or its
    fixed-orientation version along ``nn_mri``, to ~1e-12 relative error in
    float64.

    Parameters
    ----------
    info : mne.Info | path-like
        Measurement info (sensor definitions and ``dev_head_t``).
    trans : path-like | mne.transforms.Transform | None
        The MRI <-> head transform, as in :func:`mne.make_forward_solution`.
    bem : path-like | mne.bem.ConductorModel
        A BEM solution (1- or 3-layer, linear collocation) or a sphere model
        from :func:`mne.make_sphere_model`.
    rr_mri : ndarray, shape (n_sources, 3)
        Source positions in metres, MRI (surface RAS) frame. Sources are not
        checked against the inner skull: drop them first (:func:`check_inside`).
    nn_mri : ndarray, shape (n_sources, 3) | None
        Source orientations (MRI frame; normalised here). None computes the
        three head-frame components per source (free orientation).
    meg, eeg : bool
        Include MEG / EEG channels (as in :func:`mne.make_forward_solution`).
    n_jobs : int | None
        Number of joblib workers over chunks of sources. None or 1 computes in
        this process with one thread per available core (each thread computes
        whole chunks: numba kernels, then a single-threaded BLAS product).
    dtype : numpy dtype
        ``np.float64`` (default) or ``np.float32``. float32 halves the memory
        and about halves the time; max relative column error vs float64 below
        1e-5 (2-6e-6 measured, see ``benchmarks/README.md``).
    chunk_size : int | None
        Sources per chunk. None picks ~16 MB of work buffer per chunk (and at
        least one chunk per core). For a given ``chunk_size`` the result is
        bitwise identical whatever ``n_jobs`` and ``parallel`` are; different
        chunk sizes differ by BLAS rounding only (~1e-16 relative).
    parallel : None | str | joblib.Parallel
        How chunks are distributed: None (in-process unless ``n_jobs > 1``,
        which uses joblib's active backend, e.g. the one MNE-BIDS-Pipeline
        configures), ``'loky'``, ``'threading'``, ``'multiprocessing'``,
        ``'dask'`` (needs an active ``distributed.Client``), or a
        :class:`joblib.Parallel` instance. The result does not depend on it.
    %(verbose)s

    Returns
    -------
    gain : ndarray, shape (n_channels, n_sources) or (n_channels, 3 * n_sources)
        SI gain (T/Am for magnetometers, T/m/Am for planar gradiometers, V/Am
        for EEG). Rows are the channels in the order of
        :func:`mne.make_forward_solution` (MEG then EEG, see
        :func:`gain_ch_names`); columns are sources, or ``[x, y, z]`` head-frame
        components per source when ``nn_mri`` is None. Fortran-ordered (like
        MNE's ``sol['data']``): each column is contiguous.

    Notes
    -----
    Like :func:`mne.make_forward_solution` (``on_inside='raise'``), raises a
    RuntimeError if a MEG sensor is inside the scalp (3-layer BEM), the inner
    skull (1-layer BEM) or the outer sphere shell.
    """
    _validate_type(meg, bool, "meg")
    _validate_type(eeg, bool, "eeg")
    dtype = np.dtype(dtype)
    _check_option("dtype", dtype.name, ("float64", "float32"))
    rr, nn = _check_sources(rr_mri, nn_mri)
    if chunk_size is not None:
        chunk_size = _ensure_int(chunk_size, "chunk_size")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    runner = _get_parallel(parallel, n_jobs)
    t0 = time.perf_counter()
    plan = _make_plan(info, trans, bem, meg=meg, eeg=eeg, n_jobs=n_jobs)
    _add_time("setup", time.perf_counter() - t0)
    if not plan.is_sphere and dtype == np.float32:
        plan.sol_T32 = plan.sol_T.astype(np.float32)
        plan.near_table, plan.near_grid = _near_table(plan.nodes.T)
    rr_head, nn_head = _to_head(plan, rr, nn)
    n_ori = 1 if nn is not None else 3
    n_src = len(rr)
    if chunk_size is None:
        chunk_size = _default_chunk(plan, n_src, n_ori, dtype)
    bounds = np.arange(0, n_src, int(chunk_size)).tolist() + [n_src]
    bounds = list(zip(bounds[:-1], bounds[1:]))
    out = np.empty((plan.n_ch, n_ori * n_src), dtype, order="F")
    model = "sphere" if plan.is_sphere else f"{len(plan.nodes.T)}-node BEM"
    logger.info(
        f"Fast engine: {plan.n_ch} channels x {n_src} sources "
        f"({'fixed' if nn is not None else 'free'} orientation, {model}, "
        f"{dtype.name}, {len(bounds)} chunk{'s' if len(bounds) != 1 else ''})"
    )
    show = logger.level <= logging.INFO and len(bounds) >= 16
    pbar = ProgressBar(
        len(bounds), mesg="Gain chunks", which_tqdm=None if show else "off"
    )
    with pbar:
        if runner is None:
            _run_threads(plan, rr_head, nn_head, out, bounds, n_ori, dtype, pbar)
        else:
            from threadpoolctl import threadpool_limits

            _get_kernels()  # load/compile once here, before workers start
            tasks = _group_chunks(bounds, runner, n_jobs, plan.n_ch * n_ori, dtype)
            # (single-threaded BLAS here too, for thread-based backends)
            with threadpool_limits(limits=1, user_api="blas"):
                results = runner(
                    _delayed_chunks(plan, rr_head, nn_head, group, dtype)
                    for group in tasks
                )
                done = 0
                for group, res in zip(tasks, results):
                    a, b = group[0][0], group[-1][1]
                    out[:, n_ori * a : n_ori * b] = res
                    done += len(group)
                    pbar.update(done)
    return out


def _run_threads(plan, rr_head, nn_head, out, bounds, n_ori, dtype, pbar):
    """Compute the chunks on a pool of threads, each with single-threaded BLAS."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from threadpoolctl import threadpool_limits

    local = threading.local()

    def task(a, b):
        local.work = _compute_chunk(
            plan,
            rr_head[a:b],
            None if nn_head is None else nn_head[a:b],
            out[:, n_ori * a : n_ori * b].T,
            dtype,
            getattr(local, "work", None),
        )

    n_threads = min(_n_cpus(), len(bounds))
    with threadpool_limits(limits=1, user_api="blas"):
        if n_threads == 1:
            for ci, (a, b) in enumerate(bounds):
                task(a, b)
                pbar.update(ci + 1)
            return
        with ThreadPoolExecutor(n_threads, thread_name_prefix="laminar-gain") as ex:
            futures = [ex.submit(task, a, b) for a, b in bounds]
            for ci, fut in enumerate(as_completed(futures)):
                fut.result()
                pbar.update(ci + 1)


def _group_chunks(bounds, runner, n_jobs, bytes_per_src, dtype):
    """Group consecutive chunks into joblib tasks.

    Few tasks, so that the plan (a few MB) is sent a few times per worker,
    not once per chunk; but at most ~64 MB of result per task, and at least
    4 tasks per worker for load balance.
    """
    import joblib

    n_workers = getattr(runner, "n_jobs", None) or n_jobs or -1
    try:
        n_workers = joblib.effective_n_jobs(n_workers)
    except Exception:  # pragma: no cover (exotic backends)
        n_workers = _n_cpus()
    n_src = bounds[-1][1]
    total = n_src * bytes_per_src * np.dtype(dtype).itemsize
    n_tasks = int(max(4 * max(n_workers, 1), np.ceil(total / 64e6)))
    n_tasks = min(n_tasks, len(bounds))
    edges = np.linspace(0, len(bounds), n_tasks + 1).round().astype(int)
    return [bounds[e0:e1] for e0, e1 in zip(edges[:-1], edges[1:]) if e1 > e0]


def _delayed_chunks(plan, rr_head, nn_head, group, dtype):
    import joblib

    a, b = group[0][0], group[-1][1]
    rel = [(c0 - a, c1 - a) for c0, c1 in group]
    nn = None if nn_head is None else nn_head[a:b]
    return joblib.delayed(_chunks_task)(plan, rr_head[a:b], nn, rel, dtype)


@verbose
def gain_ch_names(info, *, meg=True, eeg=True, verbose=None):
    """Channel names of the gain rows, in :func:`mne.make_forward_solution` order.

    Parameters
    ----------
    info : mne.Info
        Measurement info.
    meg, eeg : bool
        Include MEG / EEG channels.
    %(verbose)s

    Returns
    -------
    ch_names : list of str
        MEG channels (without reference channels) then EEG channels, as the
        rows of ``fwd['sol']['data']``.
    """
    from mne import pick_types

    picks = list()
    if meg:
        picks += list(pick_types(info, meg=True, ref_meg=False, exclude=[]))
    if eeg:
        picks += list(pick_types(info, meg=False, eeg=True, exclude=[]))
    return [info["ch_names"][p] for p in picks]


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
    sphere are outside, the rest by the total solid angle of the surface. The
    total solid angle of a closed surface is 4 pi times its winding number
    around the point, which a +z ray gives exactly by counting signed
    crossings; points whose ray grazes an edge or that lie on the surface are
    sent to MNE's solid-angle code itself.
    """
    from mne.surface import _points_outside_surface

    surf = check.surf
    inside = np.ones(len(rr), bool)
    idx = np.arange(len(rr))
    if check.inner_r is not None:
        dists = np.linalg.norm(rr - check.center, axis=-1)
        in_mask = dists < check.inner_r
        out_mask = dists > check.outer_r
        inside[out_mask] = False
        idx = idx[~in_mask & ~out_mask]
    if len(idx) == 0:
        return inside
    verts = np.ascontiguousarray(surf["rr"], float)
    tris = np.ascontiguousarray(surf["tris"], np.int64)
    cell_start, cell_tris, grid = _ray_grid(verts, tris)
    extent = np.ptp(verts, axis=0).max()
    wind = np.empty(len(idx), np.int64)
    pts = np.ascontiguousarray(rr[idx])
    kernel = _get_kernels().ray_winding
    tol_e = _RAY_EDGE_TOL * extent**2

    def fun(a, b):
        kernel(
            pts[a:b], verts, tris, cell_start, cell_tris, grid, tol_e, _RAY_Z_TOL,
            wind[a:b],
        )  # fmt: skip

    _Threads(_n_cpus()).run(len(pts), fun, min_per_thread=1000)
    amb = (wind != 0) & (wind != 1)
    inside[idx] = wind == 1
    if amb.any():
        logger.info(f"    {amb.sum()} point(s) resolved with solid angles")
        inside[idx[amb]] = ~_points_outside_surface(rr[idx[amb]], surf)
    return inside


@verbose
def check_inside(bem, trans, rr_mri, mindist=0.0, *, verbose=None):
    """Which sources :func:`mne.make_forward_solution` would keep.

    Reproduces MNE's decisions (inside the inner skull, or the innermost
    sphere, and at least ``mindist`` mm from it) with a fast exact test.

    Parameters
    ----------
    bem : path-like | mne.bem.ConductorModel
        The BEM solution or sphere model.
    trans : path-like | mne.transforms.Transform | None
        The MRI <-> head transform.
    rr_mri : ndarray, shape (n_sources, 3)
        Source positions in metres, MRI (surface RAS) frame.
    mindist : float
        Minimum distance from the inner skull in mm, as in
        :func:`mne.make_forward_solution` (MNE measures it to the nearest
        surface vertex; so does this function).
    %(verbose)s

    Returns
    -------
    keep : ndarray of bool, shape (n_sources,)
        True where MNE keeps the source.
    """
    from mne.bem import ConductorModel, _bem_find_surface, read_bem_solution
    from mne.surface import _CheckInsideSphere
    from mne.transforms import _get_trans, apply_trans, invert_transform

    rr, _ = _check_sources(rr_mri, None)
    mindist = float(mindist)
    if mindist < 0:
        raise ValueError(f"mindist must be >= 0 (mm), got {mindist}")
    _validate_type(bem, ("path-like", ConductorModel), "bem")
    if not isinstance(bem, ConductorModel):
        bem = read_bem_solution(bem, verbose=False)
    mri_head_t, _ = _get_trans(trans)
    # MNE transforms the source space to head coordinates, then (in
    # _filter_source_spaces) back with the inverse transform
    r1s = apply_trans(
        invert_transform(mri_head_t)["trans"], apply_trans(mri_head_t["trans"], rr)
    )
    if bem["is_sphere"]:
        # NB: like MNE 1.13, compares these MRI-frame points with the sphere
        # (whose centre is in head coordinates)
        check = _CheckInsideSphere(bem)
        inside = check(r1s)
    else:
        check = _FastCheckInside(_bem_find_surface(bem, "inner_skull"))
        inside = _inside_surface(check, r1s)
    if mindist > 0.0:
        idx = np.where(inside)[0]
        check_r1s = r1s[idx]
        if check.inner_r is not None:
            mask = (
                np.linalg.norm(check_r1s - check.center, axis=-1)
                >= check.inner_r - mindist / 1000.0
            )
            idx = idx[mask]
            check_r1s = check_r1s[mask]
        dists = check.query(check_r1s)[0]
        inside[idx[dists < mindist / 1000.0]] = False
    logger.info(f"    {inside.sum()}/{len(rr)} sources kept")
    return inside
