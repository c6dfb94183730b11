"""Gaussian patch kernel over geodesic distance within one layer.

``q_j = exp(-d_j^2 / (2 sigma^2))`` with ``sigma = FWHM / 2.355`` and ``d_j``
the geodesic distance (shortest path along the edges of the layer's own
mesh) from the patch centre; zero beyond ``d > FWHM`` and below ``e^-8``;
normalised to sum 1 over the columns that have sources (notes §2 and §3.1).
No smoothing across layers.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import dijkstra

FWHM_TO_SIGMA = 1.0 / 2.355
MIN_WEIGHT = float(np.exp(-8.0))
#: up to this many centres, search only the Euclidean ball around each
_LOCAL_MAX = 16


@lru_cache(maxsize=8)
def _edges_cached(key, n, tris_bytes):
    tris = np.frombuffer(tris_bytes, np.int64).reshape(-1, 3)
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    e = np.sort(e, axis=1)
    code = np.unique(e[:, 0] * n + e[:, 1])
    out = np.stack([code // n, code % n], axis=1)
    out.setflags(write=False)
    return out


def mesh_edges(tris, n_vertices):
    """Unique undirected edges ``(n_edges, 2)`` of a triangle mesh (cached)."""
    tris = np.ascontiguousarray(tris, np.int64)
    raw = tris.tobytes()
    key = hashlib.blake2b(raw, digest_size=16).hexdigest()
    return _edges_cached(key, int(n_vertices), raw)


def _graph(rr, edges, n):
    w = np.linalg.norm(rr[edges[:, 0]] - rr[edges[:, 1]], axis=1)
    # zero-length edges would vanish from a sparse graph: keep them tiny instead
    w = np.maximum(w, 1e-12)
    g = sparse.coo_matrix((w, (edges[:, 0], edges[:, 1])), shape=(n, n))
    return (g + g.T).tocsr()


def geodesic_within(rr, edges, centers, limit):
    """Geodesic (edge-path) distances up to ``limit`` from each centre.

    Returns ``(rows, cols, dist)``: centre index (into ``centers``), vertex and
    distance of every vertex within ``limit``. For a few centres only the
    vertices inside the Euclidean ball of radius ``limit`` are searched (every
    vertex of a path of length <= limit lies in it, so this is exact); many
    centres go through :func:`_bounded_paths`.
    """
    rr = np.asarray(rr, float)
    centers = np.atleast_1d(np.asarray(centers, np.int64))
    n = len(rr)
    lim = float(limit) * (1 + 1e-9)
    rows, cols, dist = [], [], []
    if len(centers) <= _LOCAL_MAX:
        for i, c in enumerate(centers):
            ball = np.flatnonzero(((rr - rr[c]) ** 2).sum(1) <= lim**2)
            local = np.full(n, -1, np.int64)
            local[ball] = np.arange(len(ball))
            sub = edges[(local[edges[:, 0]] >= 0) & (local[edges[:, 1]] >= 0)]
            g = _graph(rr[ball], local[sub], len(ball))
            d = dijkstra(g, directed=False, indices=int(local[c]), limit=lim)
            ok = np.flatnonzero(np.isfinite(d))
            rows.append(np.full(len(ok), i))
            cols.append(ball[ok])
            dist.append(d[ok])
    else:
        r, c, d = _bounded_paths(rr, edges, centers, lim)
        rows.append(r)
        cols.append(c)
        dist.append(d)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(dist)


def _bounded_paths(rr, edges, centers, limit):
    """Shortest edge-path distances <= limit from many centres (vectorised).

    A label-correcting search over (centre, vertex) pairs: every vertex of a
    path of length <= limit lies in the Euclidean ball of the centre, so only
    those pairs (a k-d tree query) can be reached; each round extends the
    pairs improved in the previous round by one edge and keeps the minimum
    per pair, until nothing improves (the result is the Dijkstra distance).
    """
    from scipy.spatial import cKDTree

    n = len(rr)
    pairs = cKDTree(rr[centers]).sparse_distance_matrix(
        cKDTree(rr), limit, output_type="ndarray"
    )
    keys = np.sort(pairs["i"].astype(np.int64) * n + pairs["j"])
    dist = np.full(len(keys), np.inf)
    # directed adjacency (CSR) with edge lengths
    src = np.concatenate([edges[:, 0], edges[:, 1]])
    dst = np.concatenate([edges[:, 1], edges[:, 0]])
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    w = np.maximum(np.linalg.norm(rr[src] - rr[dst], axis=1), 1e-12)
    indptr = np.searchsorted(src, np.arange(n + 1))
    start = np.searchsorted(keys, np.arange(len(centers)) * n + centers)
    dist[start] = 0.0
    f_idx = start
    while len(f_idx):
        f_c = keys[f_idx] // n
        f_v = keys[f_idx] % n
        deg = indptr[f_v + 1] - indptr[f_v]
        rep = np.repeat(np.arange(len(f_idx)), deg)
        pos = np.repeat(indptr[f_v] - np.cumsum(np.r_[0, deg[:-1]]), deg) + np.arange(len(rep))
        new_d = dist[f_idx][rep] + w[pos]
        new_k = f_c[rep] * n + dst[pos]
        ok = new_d <= limit
        new_d, new_k = new_d[ok], new_k[ok]
        at = np.searchsorted(keys, new_k)
        at = np.minimum(at, len(keys) - 1)
        ok = keys[at] == new_k
        at, new_d = at[ok], new_d[ok]
        best = np.full(len(keys), np.inf)
        np.minimum.at(best, at, new_d)
        improved = np.flatnonzero(best < dist)
        dist[improved] = best[improved]
        f_idx = improved
    ok = np.isfinite(dist)
    return keys[ok] // n, keys[ok] % n, dist[ok]


_KERNELS: dict = {}
_KERNEL_CACHE = 32


def patch_kernel(rr, edges, fwhm, centers, *, keep=None):
    """Patch weights of each centre over the vertices of one layer mesh.

    Parameters
    ----------
    rr : array, shape (n_vertices, 3)
        Layer positions (mm, like ``fwhm``).
    edges : array, shape (n_edges, 2)
        Mesh edges (:func:`mesh_edges`); both hemispheres may be in one mesh
        (no edge joins them).
    fwhm : float
        Full width at half maximum (mm).
    centers : array of int, shape (n_patches,)
        Patch centres (vertex indices).
    keep : array of bool, shape (n_vertices,) | None
        Vertices with sources; the others get weight 0 (paths still run
        through them) and the weights are normalised over the kept ones.

    Returns
    -------
    kernel : scipy.sparse.csr_matrix, shape (n_patches, n_vertices)
        Rows sum to 1. Cached on the geometry, the centres and the FWHM
        (EBB's whole-layer kernels are reused by later comparisons).
    """
    centers = np.atleast_1d(np.asarray(centers, np.int64))
    rr = np.ascontiguousarray(rr, float)
    n = len(rr)
    h = hashlib.blake2b(digest_size=20)
    for arr in (rr, np.ascontiguousarray(edges), centers,
                np.zeros(0, bool) if keep is None else np.ascontiguousarray(keep)):  # fmt: skip
        h.update(arr.tobytes())
    key = (h.hexdigest(), float(fwhm))
    if key in _KERNELS:
        return _KERNELS[key].copy()
    sigma = float(fwhm) * FWHM_TO_SIGMA
    r, c, d = geodesic_within(rr, edges, centers, fwhm)
    w = np.exp(-(d**2) / (2 * sigma**2))
    ok = (d <= fwhm * (1 + 1e-9)) & (w >= MIN_WEIGHT)
    if keep is not None:
        ok &= keep[c]
    K = sparse.csr_matrix((w[ok], (r[ok], c[ok])), shape=(len(centers), n))
    sums = np.asarray(K.sum(axis=1)).ravel()
    if (sums <= 0).any():
        bad = centers[sums <= 0]
        raise ValueError(f"patch centre(s) {bad[:5].tolist()} have no kept vertex in the patch")
    K = (sparse.diags(1.0 / sums) @ K).tocsr()
    if len(_KERNELS) >= _KERNEL_CACHE:
        _KERNELS.pop(next(iter(_KERNELS)))
    _KERNELS[key] = K
    return K.copy()


def layer_patches(layers_rr, edges, fwhm, center, *, keep=None):
    """The patch of one column on every layer, in one small shortest-path search.

    Equivalent to :func:`patch_kernel` row ``center`` of each layer (the
    per-layer meshes share the edges), but only the vertices within the
    Euclidean ball of radius ``fwhm`` of the centre on some layer are
    searched, all layers at once (a block-diagonal graph).

    Parameters
    ----------
    layers_rr : array, shape (n_layers, n_vertices, 3)
        Positions of every layer (mm).
    edges : array, shape (n_edges, 2)
    fwhm : float
    center : int
    keep : array of bool, shape (n_vertices,) | None

    Returns
    -------
    layer, vertex, weight : arrays, shape (n_entries,)
        The weights of each layer sum to 1.
    """
    layers_rr = np.asarray(layers_rr, float)
    n_layers, n = layers_rr.shape[:2]
    lim = float(fwhm) * (1 + 1e-9)
    d2 = ((layers_rr - layers_rr[:, center : center + 1]) ** 2).sum(-1)
    ball = np.flatnonzero((d2 <= lim**2).any(0))
    m = len(ball)
    local = np.full(n, -1, np.int64)
    local[ball] = np.arange(m)
    sub = edges[(local[edges[:, 0]] >= 0) & (local[edges[:, 1]] >= 0)]
    ls = local[sub]
    w = np.linalg.norm(layers_rr[:, sub[:, 0]] - layers_rr[:, sub[:, 1]], axis=-1)
    w = np.maximum(w, 1e-12)  # (L, E)
    off = (np.arange(n_layers) * m)[:, None]
    r = (ls[:, 0] + off).ravel()
    c = (ls[:, 1] + off).ravel()
    g = sparse.csr_matrix((w.ravel(), (r, c)), shape=(n_layers * m, n_layers * m))
    src = np.arange(n_layers) * m + local[center]
    d = dijkstra(g, directed=False, indices=src, limit=lim)
    d = d.reshape(n_layers, n_layers, m)[np.arange(n_layers), np.arange(n_layers)]
    sigma = float(fwhm) * FWHM_TO_SIGMA
    lay, loc = np.nonzero(np.isfinite(d) & (d <= lim))
    wt = np.exp(-(d[lay, loc] ** 2) / (2 * sigma**2))
    ok = wt >= MIN_WEIGHT
    if keep is not None:
        ok &= keep[ball[loc]]
    lay, vert, wt = lay[ok], ball[loc[ok]], wt[ok]
    sums = np.bincount(lay, wt, minlength=n_layers)
    if (sums <= 0).any():
        raise ValueError(f"patch centre {center} has no kept vertex in the patch")
    return lay, vert, wt / sums[lay]
