"""Anatomical predictors, score and priors against analytic geometry.

Geometry: concentric spheres. The cortex is an icosphere whose pial surface
has radius R_P and whose white surface lies on the same rays at a radius that
varies with the vertex (so thickness is known exactly and varies); the
columns are radial (link vectors). The scalp is an icosphere too: a convex
polyhedron, so the distance of an interior point to it is exactly
``min_f (h_f - n_f . p)`` over the face planes, and the closest face is the
argmin (an independent formula, not a closest-point search).
"""

from __future__ import annotations

import mne
import nibabel as nib
import numpy as np
import pytest
from scipy.stats import zscore

from mne_laminar_plugin import bids
from mne_laminar_plugin.leadfield import LeadfieldData, read_leadfield, write_leadfield
from mne_laminar_plugin.predictors import (
    PREDICTORS,
    SCORE_NAME,
    AnatomicalPredictors,
    anatomical_score,
    closest_points_on_mesh,
    compute_predictors,
    leadfield_rms_diff,
    read_roi,
    read_scalp,
    roi_column_name,
    roi_columns,
    select_prior,
    write_gifti_map,
)
from mne_laminar_plugin.surfaces import LaminarSurfaces

R_P = 0.070  # pial radius (m)
R_SCALP = 0.090
N_LAYERS = 5


def _ico(grade):
    surf = mne.surface._get_ico_surface(grade)
    return surf["rr"] / np.linalg.norm(surf["rr"], axis=1, keepdims=True), surf["tris"]


def _white_radius(u):
    """White radius per unit direction: thickness 3 mm +- 1 mm with z."""
    return R_P - (3.0 + u[:, 2]) * 1e-3


def _sphere_surfaces(grade=2, n_layers=N_LAYERS):
    """A LaminarSurfaces on concentric spheres (lh: x < 0, rh: x >= 0)."""
    u, tris = _ico(grade)
    is_rh = u[:, 0] >= 0
    order = np.concatenate([np.flatnonzero(~is_rh), np.flatnonzero(is_rh)])
    u = u[order]
    hemi = np.where(u[:, 0] >= 0, "rh", "lh")
    vertno = np.concatenate([np.arange((hemi == h).sum()) for h in ("lh", "rh")])
    pial = R_P * u
    white = _white_radius(u)[:, np.newaxis] * u
    frac = np.linspace(1, 0, n_layers)  # 1 = pial
    layers = white[np.newaxis] + frac[:, np.newaxis, np.newaxis] * (pial - white)
    ori = -u  # link vector pial -> white (inward, radial)
    # triangles within each hemisphere (re-indexed to the hemisphere's columns)
    inv = np.empty(len(order), int)
    inv[order] = np.arange(len(order))
    t_all = inv[tris]
    tri_d = {}
    for h in ("lh", "rh"):
        cols = np.flatnonzero(hemi == h)
        local = -np.ones(len(u), int)
        local[cols] = np.arange(len(cols))
        t = local[t_all]
        tri_d[h] = t[(t >= 0).all(axis=1)]
    return LaminarSurfaces(
        layers, ori, hemi, vertno, tri_d, frac, subject="sphere", spacing="all"
    )


def _scalp(grade=3, radius=R_SCALP, rotate=True):
    """Icosphere scalp, rotated so no cortex direction hits an edge or vertex."""
    u, tris = _ico(grade)
    if rotate:
        from scipy.spatial.transform import Rotation

        u = u @ Rotation.from_euler("xyz", [0.11, 0.23, 0.37]).as_matrix().T
    return u * radius, tris


def _plane_distance(points, rr, tris):
    """Exact distance of interior points to a convex polyhedron, and the face."""
    a, b, c = (rr[tris[:, k]] for k in range(3))
    nn = np.cross(b - a, c - a)
    nn /= np.linalg.norm(nn, axis=1, keepdims=True)
    h = np.einsum("ij,ij->i", nn, a)
    sign = np.sign(h)  # make normals outward (origin inside)
    nn *= sign[:, np.newaxis]
    h *= sign
    d = h[np.newaxis, :] - points @ nn.T  # (n_points, n_faces)
    face = np.argmin(d, axis=1)
    return d[np.arange(len(points)), face], nn[face]


def _brute_distance(p, rr, tris):
    """Point-to-mesh distance by projection on each plane + edge segments."""

    def seg(p, a, b):
        ab = b - a
        t = np.clip(((p - a) @ ab) / (ab @ ab), 0, 1)
        return np.linalg.norm(p - (a + t * ab))

    best = np.inf
    for tri in tris:
        a, b, c = rr[tri]
        n = np.cross(b - a, c - a)
        n /= np.linalg.norm(n)
        h = (p - a) @ n
        q = p - h * n
        m = np.array([b - a, c - a]).T
        lam = np.linalg.lstsq(m, q - a, rcond=None)[0]
        if lam.min() >= 0 and lam.sum() <= 1:
            d = abs(h)
        else:
            d = min(seg(p, a, b), seg(p, b, c), seg(p, a, c))
        best = min(best, d)
    return best


def _lfdata(G, ch_names, ch_types, units, n_layers, columns=None, n_columns=None):
    """A real LeadfieldData of a layer-major fixed leadfield."""
    n_kept = G.shape[1] // n_layers
    columns = np.arange(n_kept) if columns is None else np.asarray(columns)
    return LeadfieldData(
        leadfield=G, ch_names=list(ch_names), ch_types=list(ch_types), units=list(units),
        n_layers=n_layers, n_columns=n_kept if n_columns is None else n_columns,
        layer=np.repeat(np.arange(n_layers), n_kept), column=np.tile(columns, n_layers),
    )  # fmt: skip


def _layered_leadfield(n_ch, n_layers, n_col, seed=0):
    """G[c, l*N + v] = a[c, v] + l * b[c, v]: deep - pial = (L-1) b exactly."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n_ch, n_col))
    b = rng.normal(size=(n_ch, n_col))
    G = np.concatenate([a + layer * b for layer in range(n_layers)], axis=1)
    return G, b


# ------------------------------------------------------------ geometry
def test_closest_points_exact_vs_brute_force():
    """Closest points on a non-convex mesh equal an independent brute force."""
    u, tris = _ico(2)
    rng = np.random.default_rng(1)
    rr = u * (0.08 + 0.01 * rng.standard_normal(len(u)))[:, np.newaxis]  # bumpy
    pts = np.concatenate([rng.normal(size=(40, 3)) * 0.03, rng.normal(size=(10, 3)) * 0.15])
    ref = np.array([_brute_distance(p, rr, tris) for p in pts])
    for k in (1, 6):  # k=1 exercises the escalation and the all-triangle pass
        d, closest, tri = closest_points_on_mesh(pts, rr, tris, n_neighbors=k)
        np.testing.assert_allclose(d, ref, rtol=0, atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(pts - closest, axis=1), d, atol=1e-12)
        # the closest point lies on the returned triangle (in its plane)
        a, b, c = (rr[tris[tri, j]] for j in range(3))
        n = np.cross(b - a, c - a)
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        np.testing.assert_allclose(np.einsum("ij,ij->i", closest - a, n), 0, atol=1e-12)


def test_closest_point_not_nearest_vertex():
    """Above a face centre of a coarse scalp, distance is to the face plane."""
    rr, tris = _scalp(grade=0, rotate=False)  # icosahedron: 12 vertices, 20 faces
    face = 7
    centre = rr[tris[face]].mean(axis=0)
    p = 0.5 * centre  # on the ray through the face centre, inside
    d, closest, tri = closest_points_on_mesh(p[np.newaxis], rr, tris)
    a, b, c = rr[tris[face]]
    n = np.cross(b - a, c - a)
    n /= np.linalg.norm(n)
    plane_d = abs((p - a) @ n)  # foot of the perpendicular: inside the face
    assert tri[0] == face
    np.testing.assert_allclose(d[0], plane_d, rtol=1e-12)
    np.testing.assert_allclose(closest[0], p - ((p - a) @ n) * n, atol=1e-15)
    np.testing.assert_allclose(closest[0], centre, atol=1e-6)  # ~ the face centre
    nearest_vertex = np.linalg.norm(rr - p, axis=1).min()
    assert nearest_vertex - d[0] > 0.01  # more than 10 mm apart


def test_radiality_at_scalp_vertex():
    """At a closest point on a scalp vertex the normal is the vertex normal."""
    rr, tris = _scalp(grade=0, rotate=False)  # icosahedron
    u = rr / np.linalg.norm(rr, axis=1, keepdims=True)
    # two columns outside the icosahedron on vertex rays: the vertex is the
    # closest point, shared by 5 faces; their normals sum to the radial one
    layers = np.stack([u[:2] * R_SCALP * 1.2, u[:2] * R_SCALP * 1.1])
    surf = LaminarSurfaces(layers, -u[:2], ["lh", "lh"], [0, 1], {}, [1.0, 0.0])
    G = _layered_leadfield(3, 2, 2)[0]
    with pytest.warns(RuntimeWarning, match="outside the scalp"):
        pred = compute_predictors(surf, G, scalp=(rr, tris))
    np.testing.assert_allclose(pred.radiality, 1.0, atol=1e-6)
    np.testing.assert_allclose(pred.distance, R_SCALP * 0.2 * 1e3, rtol=1e-6)


def test_predictors_on_concentric_spheres():
    """Thickness, distance and radiality equal the analytic values."""
    surf = _sphere_surfaces(grade=2)
    rr, tris = _scalp(grade=3)
    n_col = surf.n_columns
    G, b = _layered_leadfield(8, N_LAYERS, n_col)
    pred = compute_predictors(surf, G, scalp=(rr, tris))
    u = surf.layers[0] / R_P
    # thickness: R_P - R_W(u), in mm
    np.testing.assert_allclose(pred.thickness, (R_P - _white_radius(u)) * 1e3, rtol=1e-10)
    # distance and radiality: exact plane formula of the convex scalp
    d_ref, nn_ref = _plane_distance(surf.layers[0], rr, tris)
    np.testing.assert_allclose(pred.distance, d_ref * 1e3, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pred.radiality, np.abs(np.sum(nn_ref * u, axis=1)), atol=1e-9)
    # radial columns under a fine sphere: radiality ~ 1, distance ~ 20 mm
    assert pred.radiality.min() > 0.99 and pred.radiality.max() <= 1.0
    assert np.all(pred.distance < (R_SCALP - R_P) * 1e3)
    assert np.all(pred.distance > (R_SCALP * np.cos(np.deg2rad(8)) - R_P) * 1e3)
    # lf_rms_diff: deep - pial = (L-1) b exactly
    np.testing.assert_allclose(
        pred.lf_rms_diff, (N_LAYERS - 1) * np.sqrt((b**2).mean(axis=0)), rtol=1e-12
    )
    assert pred.units == {
        "thickness": "mm",
        "lf_rms_diff": "arbitrary",
        "radiality": "arbitrary",
        "distance": "mm",
        SCORE_NAME: "arbitrary",
    }
    np.testing.assert_array_equal(pred.hemi, surf.hemi)
    np.testing.assert_array_equal(pred.vertno, surf.vertno)
    assert pred.kept.all()


def test_radiality_tangential_and_oblique():
    """|cos| of the column orientation with the scalp normal (0 and 0.5)."""
    surf = _sphere_surfaces(grade=1)
    u = surf.layers[0] / R_P
    tang = np.cross(u, [0.3, 0.4, 0.866])
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)
    oblique = 0.5 * u + np.sqrt(0.75) * tang  # 60 degrees from radial, outward
    rr, tris = _scalp(grade=4)  # face normals within ~2.5 deg of radial
    _, nn_ref = _plane_distance(surf.layers[0], rr, tris)
    G = _layered_leadfield(4, N_LAYERS, surf.n_columns)[0]
    for ori, expect in ((tang, 0.0), (oblique, 0.5), (-oblique, 0.5)):
        surf.orientations = ori
        pred = compute_predictors(surf, G, scalp=(rr, tris))
        np.testing.assert_allclose(pred.radiality, np.abs(np.sum(nn_ref * ori, axis=1)),
                                   atol=1e-12)  # fmt: skip
        np.testing.assert_allclose(pred.radiality, expect, atol=0.05)
    # per-layer orientations: the pial layer's is used
    surf.orientations = np.stack([tang] + [u] * (N_LAYERS - 1))
    pred = compute_predictors(surf, G, scalp=(rr, tris))
    np.testing.assert_allclose(pred.radiality, np.abs(np.sum(nn_ref * tang, axis=1)),
                               atol=1e-12)  # fmt: skip


# ------------------------------------------------------------ leadfield
def test_lf_rms_diff_channel_types_and_whitening():
    """Per channel type without a whitener; whitened = sqrt(d' C^-1 d / n)."""
    n_layers, n_col = 3, 20
    G_mag, b_mag = _layered_leadfield(6, n_layers, n_col, seed=1)
    G_grad, b_grad = _layered_leadfield(10, n_layers, n_col, seed=2)
    G = np.concatenate([G_mag, G_grad])
    names = [f"M{i}" for i in range(6)] + [f"G{i}" for i in range(10)]
    types = ["mag"] * 6 + ["grad"] * 10
    units = ["fT/nAm"] * 6 + ["fT/cm/nAm"] * 10
    lf = _lfdata(G, names, types, units, n_layers)
    rms = lambda x: np.sqrt((x**2).mean(axis=0))  # noqa: E731
    val, meta = leadfield_rms_diff(lf)
    np.testing.assert_allclose(val, 2 * rms(b_mag))  # default: mag
    assert meta["ch_type"] == "mag" and meta["unit"] == "fT/nAm"
    assert meta["method"] == "channel_type" and meta["n_channels"] == 6
    val, meta = leadfield_rms_diff(lf, ch_type="grad")
    np.testing.assert_allclose(val, 2 * rms(b_grad))
    assert meta["unit"] == "fT/cm/nAm"
    with pytest.raises(ValueError, match="different units"):
        leadfield_rms_diff(lf, ch_type="all")
    with pytest.raises(ValueError, match="no such channel"):
        leadfield_rms_diff(lf, ch_type="eeg")
    # whitened with a diagonal noise covariance (SI: T and T/m)
    info = mne.create_info(names, 1000.0, types)
    sd = np.array([20e-15] * 6 + [5e-13] * 10)
    cov = mne.Covariance(np.diag(sd**2), names, [], [], nfree=100)
    lf.info = info
    val, meta = leadfield_rms_diff(lf, whitener=cov)
    d_si = np.concatenate([2 * b_mag * 1e-6, 2 * b_grad * 1e-4]) * 1e-9  # per nAm
    ref = np.sqrt(((d_si / sd[:, np.newaxis]) ** 2).sum(axis=0) / len(names))
    np.testing.assert_allclose(val, ref, rtol=1e-8)
    assert meta["method"] == "whitened" and meta["unit"] == "1/nAm"
    assert "noise covariance" in meta["description"]
    # an explicit whitening matrix (SI) gives the same
    W = np.diag(1.0 / sd)
    val2, _ = leadfield_rms_diff(lf, whitener=W)
    np.testing.assert_allclose(val2, ref, rtol=1e-10)
    with pytest.raises(ValueError, match="whitener must have shape"):
        leadfield_rms_diff(lf, whitener=W[:, :5])
    lf.info = None
    with pytest.raises(ValueError, match="pass info"):
        leadfield_rms_diff(lf, whitener=cov)


def test_lf_rms_diff_free_orientation():
    """Free orientation: RMS over sensors of the norm over components."""
    rng = np.random.default_rng(3)
    n_layers, n_col = 2, 7
    G = rng.normal(size=(5, n_layers * n_col, 3))
    val, meta = leadfield_rms_diff(G, n_layers)
    diff = G[:, n_col:] - G[:, :n_col]
    ref = np.sqrt((diff**2).sum(axis=2).mean(axis=0))
    np.testing.assert_allclose(val, ref)
    assert "free orientation" in meta["description"]


def test_wrong_number_of_sources():
    surf = _sphere_surfaces(grade=1)
    G = np.ones((4, N_LAYERS * surf.n_columns + 3))
    with pytest.raises(ValueError, match=r"sources but the surfaces have 5 layers x"):
        compute_predictors(surf, G, scalp=_scalp(1))
    lf = _lfdata(np.ones((2, 3 * surf.n_columns)), ["a", "b"], ["mag"] * 2, ["fT/nAm"] * 2, 3)
    with pytest.raises(ValueError, match="n_layers=3, the surfaces 5"):
        compute_predictors(surf, lf, scalp=_scalp(1))
    with pytest.raises(ValueError, match="not a multiple of n_layers"):
        leadfield_rms_diff(np.ones((2, 7)), 2)


def test_dropped_columns_nan_never_selected():
    """A zero-leadfield column: NaN lf_rms_diff and score, never the prior."""
    surf = _sphere_surfaces(grade=1)
    n_col = surf.n_columns
    G, _ = _layered_leadfield(6, N_LAYERS, n_col)
    pred0 = compute_predictors(surf, G, scalp=_scalp(3))
    best = pred0.best_vertex()
    G[:, best::n_col] = 0.0  # drop the best column in every layer
    pred = compute_predictors(surf, G, scalp=_scalp(3))
    assert np.isnan(pred.lf_rms_diff[best]) and np.isnan(pred.score()[best])
    assert np.isfinite(np.delete(pred.score(), best)).all()
    assert pred.best_vertex() != best
    assert select_prior(pred.score(), [best, 0, 1]) in (0, 1)
    with pytest.raises(ValueError, match="finite score"):
        select_prior(pred.score(), [best])
    # z statistics exclude the NaN column
    keep = np.arange(n_col) != best
    ref = (
        zscore(pred.thickness[keep]) + zscore(pred.lf_rms_diff[keep])
        + zscore(pred.radiality[keep]) - zscore(pred.distance[keep])
    )  # fmt: skip
    np.testing.assert_allclose(pred.score()[keep], ref)
    # a leadfield holding only the kept columns (LaminarForward-like)
    kept = np.flatnonzero(keep)
    lf = _lfdata(G.reshape(6, N_LAYERS, n_col)[:, :, kept].reshape(6, -1),
                 [f"m{i}" for i in range(6)], ["mag"] * 6, ["fT/nAm"] * 6, N_LAYERS,
                 columns=kept, n_columns=n_col)  # fmt: skip
    pred2 = compute_predictors(surf, lf, scalp=_scalp(3))
    np.testing.assert_allclose(pred2.lf_rms_diff, pred.lf_rms_diff, equal_nan=True)
    assert pred2.units["lf_rms_diff"] == "fT/nAm"


# -------------------------------------------------------------- score
def test_score_zscore_and_distance_sign():
    rng = np.random.default_rng(5)
    n = 50
    t, lf, rad, dist = rng.uniform(1, 4, n), rng.uniform(0, 1, n), rng.uniform(0, 1, n), \
        rng.uniform(10, 40, n)  # fmt: skip
    score = anatomical_score(t, lf, rad, dist)
    np.testing.assert_allclose(score, zscore(t) + zscore(lf) + zscore(rad) - zscore(dist))
    # closer to the scalp = higher score, everything else equal
    dist2 = dist.copy()
    dist2[3] -= 5.0
    assert anatomical_score(t, lf, rad, dist2)[3] > score[3]
    # weights: 0 removes a predictor (even its NaNs), 2 doubles it
    w = anatomical_score(t, lf, rad, dist, weights={"distance": 0, "radiality": 2})
    np.testing.assert_allclose(w, zscore(t) + zscore(lf) + 2 * zscore(rad))
    dist_nan = dist.copy()
    dist_nan[0] = np.nan
    assert np.isfinite(anatomical_score(t, lf, rad, dist_nan, weights={"distance": 0})).all()
    with pytest.raises(ValueError, match="unknown key"):
        anatomical_score(t, lf, rad, dist, weights={"thick": 1})
    with pytest.raises(ValueError, match="differ in length"):
        anatomical_score(t, lf, rad, dist[:-1])
    with pytest.warns(RuntimeWarning, match="constant"):
        s = anatomical_score(np.full(n, 3.0), lf, rad, dist)
    np.testing.assert_allclose(s, zscore(lf) + zscore(rad) - zscore(dist))
    # argmax
    assert select_prior(score, np.arange(n)) == np.argmax(score)
    mask = np.zeros(n, bool)
    mask[10:20] = True
    assert select_prior(score, mask) == 10 + np.argmax(score[10:20])
    with pytest.raises(ValueError, match="empty"):
        select_prior(score, [])


# --------------------------------------------------------------- scalp
def test_read_scalp(tmp_path):
    subject = "sub"
    with pytest.raises(FileNotFoundError, match=r"outer_skin\.surf[\s\S]*head-dense"):
        read_scalp(subject, tmp_path)
    bem = tmp_path / subject / "bem"
    bem.mkdir(parents=True)
    rr, tris = _scalp(2)
    surf = dict(rr=rr, tris=tris, id=mne.io.constants.FIFF.FIFFV_BEM_SURF_ID_HEAD,
                sigma=0.3, coord_frame=mne.io.constants.FIFF.FIFFV_COORD_MRI,
                np=len(rr), ntri=len(tris))  # fmt: skip
    mne.write_bem_surfaces(bem / f"{subject}-head.fif", [surf], verbose="error")
    scalp = read_scalp(subject, tmp_path)  # outer_skin missing: head fallback
    assert scalp.source.endswith("sub-head.fif")
    np.testing.assert_allclose(scalp.rr, rr, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="kind='head'"):
        read_scalp("other", tmp_path, kind="head")
    nib.freesurfer.write_geometry(bem / "outer_skin.surf", rr * 1e3 * 1.1, tris)
    scalp = read_scalp(subject, tmp_path)
    assert scalp.source.endswith("outer_skin.surf")
    np.testing.assert_allclose(scalp.rr, rr * 1.1, atol=1e-6)  # mm -> m
    # compute_predictors reads the scalp from a path, and rejects mm
    surf = _sphere_surfaces(grade=1)
    G = _layered_leadfield(3, N_LAYERS, surf.n_columns)[0]
    pred = compute_predictors(surf, G, scalp=bem / "outer_skin.surf")
    assert pred.methods["scalp"].endswith("outer_skin.surf")
    with pytest.raises(ValueError, match="looks like mm"):
        compute_predictors(surf, G, scalp=(rr * 1e3, tris))
    with pytest.raises(FileNotFoundError, match="scalp surface file not found"):
        compute_predictors(surf, G, scalp=tmp_path / "nope.surf")
    with pytest.raises(ValueError, match="scalp is required"):
        compute_predictors(surf, G, scalp=None)


def test_outside_scalp_warns():
    surf = _sphere_surfaces(grade=1)
    G = _layered_leadfield(3, N_LAYERS, surf.n_columns)[0]
    rr, tris = _scalp(2, radius=0.069)  # smaller than the pial sphere
    with pytest.warns(RuntimeWarning, match="outside the scalp"):
        compute_predictors(surf, G, scalp=(rr, tris))


# ---------------------------------------------------------------- ROIs
def test_rois_and_priors(tmp_path):
    surf = _sphere_surfaces(grade=2)
    G, _ = _layered_leadfield(5, N_LAYERS, surf.n_columns)
    pred = compute_predictors(surf, G, scalp=_scalp(3))
    subject = "sphere"
    label_dir = tmp_path / subject / "label"
    label_dir.mkdir(parents=True)
    n_lh = int((surf.hemi == "lh").sum())
    # annotation: 0 = unknown, 1 = "top" (z > 0.3), 2 = "empty" (no vertex)
    lh_u = surf.layers[0][surf.hemi == "lh"] / R_P
    labels = np.where(lh_u[:, 2] > 0.3, 1, 0).astype(np.int32)
    ctab = np.array([[25, 5, 25, 0, 0], [220, 20, 10, 0, 0], [0, 0, 255, 0, 0]], np.int32)
    nib.freesurfer.write_annot(
        str(label_dir / "lh.aparc.annot"), labels, ctab, ["unknown", "top", "empty"],
        fill_ctab=True,
    )
    score = pred.score()
    cols = roi_columns("aparc:lh.top", surf.hemi, surf.vertno, subject, tmp_path)
    expect = np.flatnonzero(surf.hemi == "lh")[labels == 1]
    np.testing.assert_array_equal(cols, expect)
    # label file (right hemisphere, a few vertices, one not a column)
    rh_vert = surf.vertno[surf.hemi == "rh"][:6]
    label = mne.Label(np.concatenate([rh_vert, [10_000]]), hemi="rh", subject=subject)
    label.save(label_dir / "rh.patch.label")
    priors = pred.priors(["aparc:lh.top", "label/rh.patch.label"], subject, tmp_path)
    top = priors["aparc:lh.top"]
    assert top["column"] in expect
    assert top["column"] == expect[np.argmax(score[expect])]
    assert top["hemi"] == "lh" and top["vertex"] == surf.vertno[top["column"]]
    assert top["n_columns"] == len(expect)
    np.testing.assert_allclose(top["pos_mri_mm"], surf.layers[0][top["column"]] * 1e3, atol=1e-3)
    patch = priors["label/rh.patch.label"]
    rh_cols = n_lh + np.arange(6)
    assert patch["column"] == rh_cols[np.argmax(score[rh_cols])]
    # the same ROI by absolute path and as a Label
    np.testing.assert_array_equal(
        pred.roi_columns(str(label_dir / "rh.patch.label")), rh_cols
    )
    np.testing.assert_array_equal(pred.roi_columns(label), rh_cols)
    # errors
    with pytest.raises(ValueError, match="contains no kept column"):
        pred.roi_columns("aparc:lh.empty", subject, tmp_path)
    with pytest.raises(ValueError, match="no label 'nope'.*top"):
        read_roi("aparc:lh.nope", subject, tmp_path)
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        read_roi("aparc.a2009s:lh.top", subject, tmp_path)
    with pytest.raises(FileNotFoundError, match="looked for"):
        read_roi("label/lh.missing.label", subject, tmp_path)
    assert roi_column_name("aparc:lh.top") == "roi_aparc_lh_top"
    assert roi_column_name("label/rh.patch.label") == "roi_rh_patch"


# ----------------------------------------------------------------- I/O
def test_tsv_round_trip_and_sidecar(tmp_path):
    surf = _sphere_surfaces(grade=1)
    G, _ = _layered_leadfield(5, N_LAYERS, surf.n_columns)
    G[:, 2 :: surf.n_columns] = 0  # one dropped column: n/a in the TSV
    pred = compute_predictors(surf, G, scalp=_scalp(3))
    fname = tmp_path / "sub-01_den-ico1_desc-laminar_predictors.tsv"
    roi = {"aparc:lh.top": np.array([0, 1, 2])}
    pred.to_tsv(fname, rois=roi, extra={"Priors": {"x": 1}})
    table = bids.read_tsv(fname)
    assert table["lf_rms_diff"][2] == "n/a" and table[SCORE_NAME][2] == "n/a"
    assert table["roi_aparc_lh_top"][:4] == ["true", "true", "true", "false"]
    assert set(table["hemi"]) == {"L", "R"}
    side = bids.read_json(bids.sidecar(fname))
    for name in (*PREDICTORS, SCORE_NAME, "hemi", "vertex", "roi_aparc_lh_top"):
        assert name in side and side[name]["LongName"]
    assert side["thickness"]["Units"] == "mm" and side["distance"]["Units"] == "mm"
    assert side["BestColumn"]["column"] == pred.best_vertex()
    assert side["Priors"] == {"x": 1}
    back = AnatomicalPredictors.from_tsv(fname)
    for name in PREDICTORS:
        np.testing.assert_allclose(getattr(back, name), getattr(pred, name), equal_nan=True)
    np.testing.assert_array_equal(back.hemi, pred.hemi)
    np.testing.assert_array_equal(back.vertno, pred.vertno)
    np.testing.assert_allclose(back.pos, pred.pos, atol=1e-7)
    np.testing.assert_allclose(back.score(), pred.score(), equal_nan=True)
    # GIFTI map
    gii = tmp_path / "sub-01_hemi-L_desc-score_stat.func.gii"
    lh = pred.hemi == "lh"
    write_gifti_map(gii, pred.score()[lh], "lh", name="score")
    img = nib.load(gii)
    np.testing.assert_allclose(img.darrays[0].data, pred.score()[lh].astype(np.float32),
                               equal_nan=True)  # fmt: skip
    assert img.meta["AnatomicalStructurePrimary"] == "CortexLeft"


def test_leadfield_file_partial_layers_and_free(tmp_path):
    """h5 file read with only pial + deepest layers; free -> fixed projection."""
    surf = _sphere_surfaces(grade=1)
    n_col = surf.n_columns
    G, b = _layered_leadfield(4, N_LAYERS, n_col, seed=7)
    names = [f"M{i}" for i in range(4)]
    lf = _lfdata(G, names, ["mag"] * 4, ["fT/nAm"] * 4, N_LAYERS)
    lf.column_hemi, lf.column_vertno = surf.hemi, surf.vertno
    fname = write_leadfield(tmp_path / "sub-01_desc-laminar_leadfield.h5", lf)
    full = compute_predictors(surf, read_leadfield(fname), scalp=_scalp(2))
    part = read_leadfield(fname, layers=[0, N_LAYERS - 1])
    assert part.n_layers == 2
    pred = compute_predictors(surf, part, scalp=_scalp(2))
    np.testing.assert_allclose(pred.lf_rms_diff, full.lf_rms_diff)
    np.testing.assert_allclose(pred.lf_rms_diff, (N_LAYERS - 1) * np.sqrt((b**2).mean(0)))
    bad = read_leadfield(fname, layers=[0, 2])  # not the deepest layer
    with pytest.raises(ValueError, match="n_layers=2, the surfaces 5"):
        compute_predictors(surf, bad, scalp=_scalp(2))
    # leadfield of other surfaces
    lf.column_vertno = surf.vertno[::-1].copy()
    with pytest.raises(ValueError, match="computed for other layer surfaces"):
        compute_predictors(surf, lf, scalp=_scalp(2))
    # free leadfield with orientations: its fixed projection is used
    rng = np.random.default_rng(8)
    free = rng.normal(size=(4, N_LAYERS * n_col, 3))
    ori = rng.normal(size=(N_LAYERS * n_col, 3))
    ori /= np.linalg.norm(ori, axis=1, keepdims=True)
    lf_free = _lfdata(free[..., 0], names, ["mag"] * 4, ["fT/nAm"] * 4, N_LAYERS)
    lf_free.leadfield, lf_free.orientation_type, lf_free.src_ori = free, "free", ori
    lf_free.Q_basis = np.broadcast_to(np.eye(3), (N_LAYERS * n_col, 3, 3)).copy()
    pred = compute_predictors(surf, lf_free, scalp=_scalp(2))
    fixed = np.einsum("msk,sk->ms", free, ori)
    ref = np.sqrt(((fixed[:, -n_col:] - fixed[:, :n_col]) ** 2).mean(axis=0))
    np.testing.assert_allclose(pred.lf_rms_diff, ref)


def test_mri_to_mni(tmp_path):
    """tkRAS (m) -> scanner RAS (T1.mgz c_ras) -> talairach.xfm, in mm."""
    from mne_laminar_plugin.predictors import mri_to_mni

    subj = tmp_path / "s"
    (subj / "mri" / "transforms").mkdir(parents=True)
    assert mri_to_mni(np.zeros((1, 3)), "s", tmp_path) is None  # no transform
    c_ras = np.array([10.0, -5.0, 3.0])
    img = nib.MGHImage(np.zeros((16, 16, 16), np.uint8), np.eye(4))
    tkr = img.header.get_vox2ras_tkr()
    affine = tkr.copy()
    affine[:3, 3] += c_ras  # scanner = tkRAS + c_ras
    nib.save(nib.MGHImage(np.zeros((16, 16, 16), np.uint8), affine), subj / "mri" / "T1.mgz")
    xfm = np.array([[1.1, 0, 0, 2.0], [0, 1.0, 0.1, -3.0], [0, 0, 0.9, 1.0]])
    rows = "\n".join(" ".join(f"{v:.6f}" for v in row) for row in xfm)
    (subj / "mri" / "transforms" / "talairach.xfm").write_text(
        "MNI Transform File\n\nTransform_Type = Linear;\nLinear_Transform =\n" + rows + ";\n"
    )
    pos = np.array([[0.01, 0.02, -0.03], [-0.05, 0.0, 0.04]])
    expect = (pos * 1e3 + c_ras) @ xfm[:, :3].T + xfm[:, 3]
    np.testing.assert_allclose(mri_to_mni(pos, "s", tmp_path), expect, atol=1e-6)


def test_map_to_template():
    """Nearest column on the registered spheres; radii do not matter."""
    from mne_laminar_plugin.pipeline.steps.laminar._99_group_predictors import map_to_template

    u, _ = _ico(3)
    cols = np.arange(0, len(u), 3)  # the subject's columns: every 3rd vertex
    values = np.arange(len(cols), dtype=float)
    values[4] = np.nan
    from scipy.spatial.transform import Rotation

    tpl = _ico(2)[0] @ Rotation.from_euler("xyz", [0.05, 0.02, 0.07]).as_matrix().T  # no ties
    mapped, nearest = map_to_template(None, cols, values, u * 100.0, tpl * 50.0)
    ref = np.argmin(np.linalg.norm(tpl[:, np.newaxis] - u[cols][np.newaxis], axis=2), axis=1)
    np.testing.assert_array_equal(nearest, ref)
    np.testing.assert_array_equal(mapped, values[ref])
    # a template equal to the subject gives every column its own value back
    mapped, _ = map_to_template(None, cols, values, u, u[cols])
    np.testing.assert_array_equal(mapped, values)
    # no columns in a cap (like the medial wall): NaN there, not extrapolated
    keep = u[cols, 2] < 0.5
    mapped, _ = map_to_template(None, cols[keep], values[keep], u, tpl)
    assert np.isnan(mapped[tpl[:, 2] > 0.8]).all()
    assert np.isfinite(mapped[tpl[:, 2] < 0.4]).sum() >= (tpl[:, 2] < 0.4).sum() - 1


def test_report_figures():
    from mne_laminar_plugin.report import viz

    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 40))
    x[1] += x[0]
    vals = {"a": x[0], "b": x[1], "c": x[2].copy()}
    vals["c"][5] = np.nan
    fig, corr = viz.plot_correlation_matrix(vals)
    keep = np.arange(40) != 5
    np.testing.assert_allclose(corr, np.corrcoef(x[:, keep]))
    fig = viz.plot_histograms(vals, units={"a": "mm"})
    assert fig.axes[0].get_xlabel() == "a (mm)"
    assert "1 NaN" in fig.axes[2].get_title()


# ------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def demo_run(pipeline_run):
    """The shared 2-subject demo run (conftest), with group template ``tmpl``."""
    return pipeline_run


@pytest.mark.slow
def test_step_outputs_equal_library_call(demo_run):
    """Maps, TSV and sidecar of the step = compute_predictors on the same inputs."""
    from mne_laminar_plugin.pipeline.steps.laminar._03_predictors import map_fname, table_fname

    demo, res = demo_run
    root = bids.deriv_root(demo.bids_root)
    surf = LaminarSurfaces.load(root, "01")
    lf = read_leadfield(next((root / "sub-01" / "meg").glob("*_leadfield.h5")))
    meg = demo.deriv_root / "sub-01" / "meg"
    cov = mne.read_cov(meg / "sub-01_proc-clean_cov.fif", verbose="error")
    info = mne.io.read_info(meg / "sub-01_task-demo_ave.fif", verbose="error")
    rank = bids.read_json(meg / "sub-01_proc-clean_rank.json")
    scalp = read_scalp("sub-01", demo.subjects_dir)
    pred = compute_predictors(surf, lf, scalp, whitener=cov, info=info, rank=rank)
    assert pred.methods["lf_rms_diff_method"] == "whitened"
    tsv = table_fname(root, "01", None, surf.spacing)
    back = AnatomicalPredictors.from_tsv(tsv)
    for name in PREDICTORS:
        np.testing.assert_allclose(getattr(back, name), getattr(pred, name), rtol=1e-12,
                                   equal_nan=True, err_msg=name)  # fmt: skip
    score = pred.score()
    np.testing.assert_allclose(back.score(), score, rtol=1e-9, equal_nan=True)
    for hemi in ("lh", "rh"):
        sl = surf.columns(hemi)
        for name, vals in (*pred.as_dict().items(), (SCORE_NAME, score)):
            img = nib.load(map_fname(root, "01", None, hemi, surf.spacing, name))
            np.testing.assert_allclose(img.darrays[0].data, vals[sl].astype(np.float32),
                                       equal_nan=True, err_msg=f"{hemi} {name}")  # fmt: skip
            side = bids.read_json(bids.sidecar(map_fname(root, "01", None, hemi,
                                                         surf.spacing, name)))  # fmt: skip
            assert side["Density"] and side["SpatialReference"] and side["Units"]
    side = bids.read_json(bids.sidecar(tsv))
    roi = "label/lh.demo_roi.label"
    cols = pred.roi_columns(roi, "sub-01", demo.subjects_dir)
    assert side["Priors"][roi]["column"] == select_prior(score, cols)
    assert side["BestColumn"]["column"] == pred.best_vertex()
    table = bids.read_tsv(tsv)
    member = np.array(table["roi_lh_demo_roi"]) == "true"
    np.testing.assert_array_equal(np.flatnonzero(member), cols)
    report = (meg / "sub-01_report.html").read_text(encoding="utf-8")
    for title in ("Anatomical predictors", "Predictor maps", "Predictor histograms",
                  "Predictor correlations", "Top columns", "Best column and ROI priors"):
        assert title in report, title


@pytest.mark.slow
def test_group_step(demo_run):
    """The template has sub-01's spheres (sub-02 differs by scale only): at a
    column's template vertex the group mean is the mean of both subjects'
    scores of that column."""
    from mne_laminar_plugin.pipeline.steps.laminar._03_predictors import table_fname

    demo, res = demo_run
    root = bids.deriv_root(demo.bids_root)
    preds = [AnatomicalPredictors.from_tsv(table_fname(root, s, None, "oct5"))
             for s in demo.subjects]  # fmt: skip
    scores = [p.score() for p in preds]
    for hemi, side in (("lh", "L"), ("rh", "R")):
        img = nib.load(root / "group" / f"hemi-{side}_space-tmpl_desc-scoreMean_stat.func.gii")
        mean = np.asarray(img.darrays[0].data, float)
        expected = {}
        for pred, score in zip(preds, scores):
            cols = np.flatnonzero(pred.hemi == hemi)
            for v, val in zip(pred.vertno[cols], score[cols]):
                expected.setdefault(int(v), []).append(val)
        verts = np.array(sorted(expected))
        want = np.array([np.nanmean(expected[v]) if np.isfinite(expected[v]).any()
                         else np.nan for v in verts])  # fmt: skip
        np.testing.assert_allclose(mean[verts], want, rtol=1e-6, equal_nan=True)
    best = bids.read_tsv(root / "group" / "space-tmpl_desc-bestcolumns_predictors.tsv")
    assert best["subject"] == demo.subjects
    for i, pred in enumerate(preds):
        b = pred.best_vertex()
        assert int(best["vertex"][i]) == pred.vertno[b]
        assert int(best["template_vertex"][i]) == pred.vertno[b]
    report = demo.deriv_root / "sub-average" / "meg" / "sub-average_report.html"
    assert "Group mean anatomical score" in report.read_text(encoding="utf-8")
