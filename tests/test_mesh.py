"""Tests of mne_laminar_plugin.mesh: the one exact distance and inside test."""

import mne
import numpy as np
import pytest

from mne_laminar_plugin import mesh


# ------------------------------------------------- independent references
def _seg_dist(p, u, v):
    d = v - u
    dd = (d * d).sum(-1)
    t = np.where(dd > 0, ((p - u) * d).sum(-1) / np.where(dd > 0, dd, 1.0), 0.0)
    t = np.clip(t, 0.0, 1.0)
    return np.linalg.norm(p - (u + t[..., None] * d), axis=-1)


def brute_distance(points, rr, tris):
    """Min over every triangle: the plane when the projection falls inside the
    triangle (barycentric test), else the nearest of the three edges."""
    p = np.asarray(points, float)[:, None]
    a, b, c = (rr[tris[:, k]][None] for k in range(3))
    n = np.cross(b - a, c - a)
    nn2 = (n * n).sum(-1)
    ok = nn2 > 1e-30 * np.maximum((b - a) ** 2, 1e-300).sum(-1) ** 2
    safe = np.where(ok, nn2, 1.0)
    ap = p - a
    # barycentric coordinates of the projection: (u, v, w) from sub-areas
    w = (np.cross(b - a, ap) * n).sum(-1) / safe
    v = (np.cross(ap, c - a) * n).sum(-1) / safe
    inside = ok & (v >= 0) & (w >= 0) & (v + w <= 1)
    plane = np.abs((ap * n).sum(-1)) / np.sqrt(safe)
    edge = np.minimum(np.minimum(_seg_dist(p, a, b), _seg_dist(p, b, c)), _seg_dist(p, c, a))
    return np.where(inside, plane, edge).min(1)


def _adversarial_points(rr, tris, rng, scale):
    a, b, c = (rr[tris[:, k]] for k in range(3))
    m = 60
    pick = rng.integers(0, len(tris), m)
    t = rng.uniform(size=(m, 1))
    n = np.cross(b - a, c - a)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)
    w = rng.dirichlet(np.ones(3), m)
    face = w[:, :1] * a[pick] + w[:, 1:2] * b[pick] + w[:, 2:] * c[pick]
    return np.concatenate([
        rr[rng.integers(0, len(rr), m)],  # on vertices
        a[pick] + t * (b[pick] - a[pick]),  # on edges
        face,  # on faces
        face + 1e-9 * scale * n[pick],  # just off the faces
        face + 0.05 * scale * rng.normal(size=(m, 3)),  # near
        rr.mean(0) + 0.3 * scale * rng.normal(size=(m, 3)),  # inside / around
        rr.mean(0) + 20 * scale * rng.normal(size=(20, 3)),  # far away
    ])  # fmt: skip


def _meshes():
    ico = mne.surface._get_ico_surface(2)
    sphere = dict(rr=ico["rr"] * 0.08, tris=ico["tris"])
    rng = np.random.default_rng(0)
    bumpy = ico["rr"] * (0.08 + 0.01 * rng.standard_normal(len(ico["rr"])))[:, None]
    # degenerate triangles: a zero-area sliver (collinear), a repeated vertex
    rr = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0], [1, 1, 1.0]]) * 0.01
    tris = np.array([[0, 1, 2], [0, 0, 3], [1, 3, 4], [0, 3, 4]])
    return dict(sphere=sphere, bumpy=dict(rr=bumpy, tris=ico["tris"]),
                degenerate=dict(rr=rr, tris=tris))  # fmt: skip


@pytest.mark.parametrize("name", ["sphere", "bumpy", "degenerate"])
def test_distance_matches_brute_force(name):
    """point_triangle_distance, closest_points_on_mesh and surface_distance_below
    against the brute force on vertices, edges, faces, near, inside and far."""
    surf = _meshes()[name]
    rr, tris = surf["rr"], surf["tris"]
    rng = np.random.default_rng(3)
    scale = float(np.ptp(rr, axis=0).max())
    pts = _adversarial_points(rr, tris, rng, scale)
    truth = brute_distance(pts, rr, tris)
    tol = 1e-12 * scale
    # the pairwise distance, all pairs
    n_p, n_t = len(pts), len(tris)
    pair = mesh.point_triangle_distance(
        np.repeat(pts, n_t, 0), *(np.tile(rr[tris[:, k]], (n_p, 1)) for k in range(3))
    ).reshape(n_p, n_t).min(1)
    np.testing.assert_allclose(pair, truth, rtol=1e-9, atol=tol)
    # the search
    d, closest, tri = mesh.closest_points_on_mesh(pts, rr, tris)
    np.testing.assert_allclose(d, truth, rtol=1e-6, atol=tol)
    np.testing.assert_allclose(np.linalg.norm(pts - closest, axis=1), d, rtol=1e-9, atol=tol)
    # the thresholded test, at limits cutting through the distribution
    for limit in np.percentile(truth[truth > 0], [10, 50, 90]):
        close, dist = mesh.surface_distance_below(pts, surf, limit)
        sure = np.abs(truth - limit) > 1e-9 * scale
        np.testing.assert_array_equal(close[sure], (truth < limit)[sure])
        np.testing.assert_allclose(dist[close], truth[close], rtol=1e-6, atol=tol)
        assert np.all(dist <= truth + tol)  # exact or a lower bound


@pytest.mark.parametrize("name", ["sphere", "bumpy"])
def test_inside_matches_solid_angles(name):
    """points_inside_surface against MNE's solid angles (the exact total angle)
    and against the side of the nearest face, on points whose rays run through
    vertices and edges, just inside/outside the surface, inside and far."""
    from mne.surface import _points_outside_surface

    surf = _meshes()[name]
    rr, tris = surf["rr"], surf["tris"]
    rng = np.random.default_rng(4)
    scale = float(np.ptp(rr, axis=0).max())
    nn = mesh.vertex_normals(rr, tris)
    a, b = rr[tris[:, 0]], rr[tris[:, 1]]
    on_edge = a + rng.uniform(size=(len(tris), 1)) * (b - a)
    edge_nn = mesh.vertex_normals(rr, tris)[tris[:, 0]] + nn[tris[:, 1]]
    eps = 1e-6 * scale
    # right above/below vertices and edges: the +z ray passes through them
    near_in = np.concatenate([rr - eps * nn, on_edge - eps * edge_nn])
    near_out = np.concatenate([rr + eps * nn, on_edge + eps * edge_nn])
    np.testing.assert_array_equal(mesh.points_inside_surface(near_in, surf), True)
    np.testing.assert_array_equal(mesh.points_inside_surface(near_out, surf), False)
    # random points inside and around, and far away
    pts = np.concatenate([
        rr.mean(0) + 0.4 * scale * rng.normal(size=(3000, 3)),
        rr.mean(0) + 50 * scale * rng.normal(size=(100, 3)),
    ])  # fmt: skip
    truth = ~_points_outside_surface(pts, surf)
    assert 0.1 < truth.mean() < 0.9
    np.testing.assert_array_equal(mesh.points_inside_surface(pts, surf), truth)
    # the answer does not depend on the winding
    rev = dict(rr=rr, tris=tris[:, ::-1])
    np.testing.assert_array_equal(mesh.points_inside_surface(pts, rev), truth)
    np.testing.assert_array_equal(mesh.points_inside_surface(near_in, rev), True)


# ------------------------------------------------- moved from test_forward
def test_points_inside_surface_exact():
    """Ray-crossing inside test: convex hull truth, reversed winding, fsaverage."""
    from scipy.spatial import ConvexHull

    rng = np.random.default_rng(0)
    ico = mne.surface._get_ico_surface(3)
    surf = dict(rr=ico["rr"] * 0.08, tris=ico["tris"])
    pts = rng.normal(scale=0.05, size=(20000, 3))
    hull = ConvexHull(surf["rr"])
    truth = (pts @ hull.equations[:, :3].T + hull.equations[:, 3] < 0).all(1)
    assert 0.2 < truth.mean() < 0.9
    np.testing.assert_array_equal(mesh.points_inside_surface(pts, surf), truth)
    rev = dict(rr=surf["rr"], tris=surf["tris"][:, ::-1])
    np.testing.assert_array_equal(mesh.points_inside_surface(pts, rev), truth)
    # a non-convex surface: MNE's fsaverage inner skull, against MNE's solid
    # angles for points not within 1 mm of it (MNE's sphere shortcut is not
    # exact right at the surface)
    from mne.surface import _CheckInside

    skull = mne.read_bem_surfaces(
        mne.__path__[0] + "/data/fsaverage/fsaverage-inner_skull-bem.fif", verbose=False
    )[0]
    pts = skull["rr"].mean(0) + rng.normal(scale=0.04, size=(600, 3))
    far = ~mesh.surface_distance_below(pts, skull, 0.001)[0]
    ours = mesh.points_inside_surface(pts[far], skull)
    theirs = _CheckInside(skull, verbose=False)(pts[far], verbose=False)
    np.testing.assert_array_equal(ours, theirs)
    assert 0.2 < ours.mean() < 0.95


def test_surface_distance_is_exact():
    """Distances below the limit equal brute-force point-to-triangle distances."""
    rng = np.random.default_rng(1)
    ico = mne.surface._get_ico_surface(2)
    surf = dict(rr=ico["rr"] * 0.08, tris=ico["tris"])
    pts = rng.normal(size=(400, 3))
    pts *= (rng.uniform(0.06, 0.1, 400) / np.linalg.norm(pts, axis=1))[:, None]
    close, dist = mesh.surface_distance_below(pts, surf, 0.006)
    rr, tris = surf["rr"], surf["tris"]
    brute = mesh.point_triangle_distance(
        np.repeat(pts, len(tris), 0), np.tile(rr[tris[:, 0]], (400, 1)),
        np.tile(rr[tris[:, 1]], (400, 1)), np.tile(rr[tris[:, 2]], (400, 1)),
    ).reshape(400, -1).min(1)  # fmt: skip
    np.testing.assert_array_equal(close, brute < 0.006)
    np.testing.assert_allclose(dist[close], brute[close], atol=1e-15)
    assert np.all(dist[~close] <= brute[~close] + 1e-15)  # lower bounds elsewhere
    # point-triangle against a dense sampling of one triangle
    a, b, c = np.eye(3)
    p = rng.normal(size=(50, 3))
    w = rng.dirichlet(np.ones(3), size=20000)
    samples = w @ np.stack([a, b, c])
    approx = np.linalg.norm(p[:, None] - samples[None], axis=-1).min(1)
    exact = mesh.point_triangle_distance(p, *(np.tile(v, (50, 1)) for v in (a, b, c)))
    assert np.all(exact <= approx + 1e-12) and np.all(approx - exact < 0.02)
