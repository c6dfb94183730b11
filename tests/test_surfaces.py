"""Tests of LaminarSurfaces, its derivative files, the viz helpers and the step.

Geometry is checked against analytic solutions (concentric spheres) and
against independent computations (MNE's source space subsampling, Heron's
triangle areas), never against the code's own intermediate results.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from mne_laminar_plugin import bids
from mne_laminar_plugin.surfaces import (
    ZERO_LENGTH_MM,
    LaminarSurfaces,
    equivolume_beta,
    layer_fname,
    vertex_areas,
)
from mne_laminar_plugin.surfaces._io import _portable_inputs

from _fs_fixtures import (  # noqa: E402  (tests folder is on sys.path)
    make_fsaverage5_subject,
    make_sphere_subject,
    write_surface,
)

R_W, R_P = 30.0, 33.0


def _radial(surf, fs):
    """Distance (mm) of every layer vertex from its hemisphere's centre, and unit dirs."""
    centers = np.array([fs.center[h] for h in surf.hemi]) * 1e-3
    rel = surf.layers - centers[None]
    return np.linalg.norm(rel, axis=2) * 1e3, rel / np.linalg.norm(rel, axis=2, keepdims=True)


def _files(root):
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def spheres(tmp_path_factory):
    sd = tmp_path_factory.mktemp("subjects")
    return make_sphere_subject(sd, "spheres", grade=3, r_white=R_W, r_pial=R_P, t1=True)


@pytest.fixture(scope="module")
def fs5(tmp_path_factory):
    sd = tmp_path_factory.mktemp("subjects_fs5")
    return make_fsaverage5_subject(sd, "fs5")


# ------------------------------------------------------------- geometry
def test_equidistant_sphere_radii(spheres):
    """Equidistant layers of concentric spheres are spheres of linear radius."""
    n_layers = 11
    surf = LaminarSurfaces.from_freesurfer(
        "spheres", spheres.subjects_dir, n_layers=n_layers, spacing="all", cortex_mask="none"
    )
    assert surf.layers.shape == (n_layers, 2 * 642, 3)
    radius, unit = _radial(surf, spheres)
    f = np.linspace(1, 0, n_layers)
    want = R_W + f * (R_P - R_W)
    np.testing.assert_allclose(radius, np.broadcast_to(want[:, None], radius.shape), atol=2e-5)
    # every layer vertex stays on its column's radial line
    np.testing.assert_allclose(np.abs(np.einsum("lcj,cj->lc", unit, unit[0])), 1, atol=1e-9)
    # exact pial (layer 0) and white (last layer), in metres
    for h in ("lh", "rh"):
        sl = surf.columns(h)
        np.testing.assert_array_equal(surf.layers[0, sl], spheres.pial[h] * 1e-3)
        np.testing.assert_array_equal(surf.layers[-1, sl], spheres.white[h] * 1e-3)
    np.testing.assert_allclose(surf.thickness(), R_P - R_W, atol=2e-5)
    assert surf.qc["crossings"] == 0 and surf.qc["inverted_columns"] == 0
    assert surf.qc["median_thickness_mm"] == pytest.approx(R_P - R_W, abs=1e-4)


def test_equivolume_sphere_radii(spheres):
    """Bok's layers of concentric spheres: radius from the closed form.

    Scaling a sphere mesh by r scales every per-vertex area by r**2, so
    A_p / A_w = (R_p / R_w)**2 at every vertex, and Bok's
    beta = (sqrt((1 - a) R_p^4 + a R_w^4) - R_p^2) / (R_w^2 - R_p^2);
    the layer radius is R_p + beta (R_w - R_p).
    """
    n_layers = 7
    surf = LaminarSurfaces.from_freesurfer(
        "spheres", spheres.subjects_dir, n_layers=n_layers, method="equivolume",
        spacing="all", cortex_mask="none",
    )  # fmt: skip
    radius, _ = _radial(surf, spheres)
    alpha = 1 - np.linspace(1, 0, n_layers)
    beta = (np.sqrt((1 - alpha) * R_P**4 + alpha * R_W**4) - R_P**2) / (R_W**2 - R_P**2)
    want = R_P + beta * (R_W - R_P)
    np.testing.assert_allclose(radius, np.broadcast_to(want[:, None], radius.shape), atol=2e-5)
    # discriminative: the middle layer is measurably shallower than equidistant
    mid = n_layers // 2
    assert want[mid] - (R_W + 0.5 * (R_P - R_W)) > 0.03
    assert surf.method == "equivolume" and surf.qc["crossings"] == 0


def _heron_vertex_areas(rr, tris):
    a = np.linalg.norm(rr[tris[:, 1]] - rr[tris[:, 2]], axis=1)
    b = np.linalg.norm(rr[tris[:, 0]] - rr[tris[:, 2]], axis=1)
    c = np.linalg.norm(rr[tris[:, 0]] - rr[tris[:, 1]], axis=1)
    s = (a + b + c) / 2
    area = np.sqrt(np.clip(s * (s - a) * (s - b) * (s - c), 0, None))
    out = np.zeros(len(rr))
    np.add.at(out, tris.ravel(), np.repeat(area / 3, 3))
    return out


def test_equivolume_solves_bok_model(fs5):
    """On folded cortex each layer satisfies Bok's volume equation per vertex."""
    n_layers = 6
    surf = LaminarSurfaces.from_freesurfer(
        "fs5", fs5.subjects_dir, n_layers=n_layers, method="equivolume", spacing="all"
    )
    alpha = 1 - np.linspace(1, 0, n_layers)
    for h in ("lh", "rh"):
        sl = surf.columns(h)
        v = surf.vertno[sl]
        a_p = _heron_vertex_areas(fs5.pial[h], fs5.tris[h])[v]
        a_w = _heron_vertex_areas(fs5.white[h], fs5.tris[h])[v]
        p, w = fs5.pial[h][v], fs5.white[h][v]
        d = np.linalg.norm(w - p, axis=1)
        beta = np.linalg.norm(surf.layers[:, sl] * 1e3 - p[None], axis=2) / d[None]
        # volume from pial to beta (area linear in beta) == alpha * total volume
        vol = a_p * beta + (a_w - a_p) * beta**2 / 2
        np.testing.assert_allclose(vol, alpha[:, None] * (a_p + a_w) / 2, rtol=1e-6, atol=1e-9)
        assert np.all(np.diff(beta, axis=0) > 0)  # monotone: no crossings
    assert surf.qc["crossings"] == 0


def test_equivolume_beta_limits():
    rng = np.random.default_rng(0)
    a_p, a_w = rng.uniform(0.2, 2, 50), rng.uniform(0.2, 2, 50)
    alpha = np.linspace(0, 1, 9)
    beta = equivolume_beta(alpha, a_p, a_w)
    np.testing.assert_allclose(beta[0], 0, atol=1e-15)
    np.testing.assert_allclose(beta[-1], 1, atol=1e-15)
    # the notes' form, where A_p != A_w
    ref = 1 - (-a_w + np.sqrt((1 - alpha[:, None]) * a_p**2 + alpha[:, None] * a_w**2)) / (
        a_p - a_w
    )
    np.testing.assert_allclose(beta, ref, rtol=1e-9, atol=1e-12)
    # equal areas (and zero areas): beta == alpha, no NaN
    for a in (1.0, 0.0):
        got = equivolume_beta(alpha, np.full(3, a), np.full(3, a))
        np.testing.assert_array_equal(got, np.repeat(alpha[:, None], 3, axis=1))
    np.testing.assert_allclose(vertex_areas(*_tetra()).sum(), _tetra_area())


def _unit_normals(rr, tris):
    """Reference vertex normals: sum of unit face normals (np.add.at), normalised."""
    fn = np.cross(rr[tris[:, 1]] - rr[tris[:, 0]], rr[tris[:, 2]] - rr[tris[:, 0]])
    fn /= np.linalg.norm(fn, axis=1, keepdims=True)
    nn = np.zeros_like(rr)
    for k in range(3):
        np.add.at(nn, tris[:, k], fn)
    return nn / np.linalg.norm(nn, axis=1, keepdims=True)


def _tetra():
    rr = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    tris = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return rr, tris


def _tetra_area():
    return 3 * 0.5 + np.sqrt(3) / 2


def test_column_correspondence_subsampled(fs5):
    """oct columns: MNE's vertno on the sphere, same ids in every layer, on the link."""
    import mne

    n_layers = 5
    surf = LaminarSurfaces.from_freesurfer(
        "fs5", fs5.subjects_dir, n_layers=n_layers, spacing="oct4"
    )
    src = mne.setup_source_space(
        "fs5", "oct4", subjects_dir=fs5.subjects_dir, add_dist=False, verbose=False
    )
    assert list(np.unique(surf.hemi)) == ["lh", "rh"]
    assert np.all(surf.hemi[: surf.columns("lh").stop] == "lh")
    f = np.linspace(1, 0, n_layers)
    n_drop = 0
    for h, s in zip(("lh", "rh"), src):
        sl = surf.columns(h)
        v = surf.vertno[sl]
        cortex = ~fs5.medial[h][s["vertno"]]
        np.testing.assert_array_equal(v, s["vertno"][cortex])
        n_drop += (~cortex).sum()
        w, p = fs5.white[h][v], fs5.pial[h][v]
        want = w[None] + f[:, None, None] * (p - w)[None]
        np.testing.assert_allclose(surf.layers[:, sl] * 1e3, want, atol=1e-9)
        # triangles: MNE's use_tris with every vertex kept, re-indexed
        kept_tris = s["use_tris"][np.isin(s["use_tris"], v).all(axis=1)]
        np.testing.assert_array_equal(v[surf.tris[h]], kept_tris)
    assert sum(surf.qc["dropped_total"].values()) == n_drop > 0
    assert surf.qc["cortex_mask"] == {"lh": "thickness", "rh": "thickness"}
    # layer-major source order
    pos = surf.source_positions()
    c = 17
    np.testing.assert_array_equal(pos[[k * surf.n_columns + c for k in range(n_layers)]],
                                  surf.layers[:, c])  # fmt: skip


def test_ico_columns_nest(tmp_path):
    """ico3 columns of an ico4 sphere are its first 642 vertices (nested ico)."""
    fs = make_sphere_subject(tmp_path, "g4", grade=4)
    surf = LaminarSurfaces.from_freesurfer(
        "g4", tmp_path, n_layers=3, spacing="ico3", cortex_mask="none"
    )
    for h in ("lh", "rh"):
        np.testing.assert_array_equal(surf.vertno[surf.columns(h)], np.arange(642))
    radius, _ = _radial(surf, fs)
    np.testing.assert_allclose(radius[1], (R_W + R_P) / 2, atol=2e-5)
    assert len(surf.tris["lh"]) == 1280


# ---------------------------------------------------------- orientations
@pytest.mark.parametrize("orientation", ["link_vector", "surface_normal", "pial_normal"])
def test_orientations(spheres, orientation):
    surf = LaminarSurfaces.from_freesurfer(
        "spheres", spheres.subjects_dir, n_layers=4, spacing="all", orientation=orientation,
        cortex_mask="none",
    )  # fmt: skip
    _, radial = _radial(surf, spheres)
    ori = surf.orientations
    if orientation == "surface_normal":
        assert ori.shape == (4, surf.n_columns, 3)
    else:
        assert ori.shape == (surf.n_columns, 3)
    np.testing.assert_allclose(np.linalg.norm(ori, axis=-1), 1, atol=1e-12)
    cos = np.einsum("...j,...j->...", np.broadcast_to(ori, surf.layers.shape), radial)
    if orientation == "link_vector":  # inward, exactly radial
        np.testing.assert_allclose(cos, -1, atol=1e-9)
    else:  # outward vertex normals of a sphere mesh: nearly radial
        assert cos.min() > 0.99
    assert surf.source_orientations().shape == (4 * surf.n_columns, 3)
    sign = "inward" if orientation == "link_vector" else "outward"
    assert surf.orientation_sign.startswith(sign)


def test_zero_length_link_fallback(tmp_path):
    """pial == white columns kept: inward pial normal, counted, never zero/NaN."""
    fs = make_sphere_subject(tmp_path, "zm", grade=3, zero_medial=True)
    n_medial = sum(int(fs.medial[h].sum()) for h in ("lh", "rh"))
    surf = LaminarSurfaces.from_freesurfer(
        "zm", tmp_path, n_layers=3, spacing="all", cortex_mask="none"
    )
    assert surf.qc["zero_length_link"] == n_medial > 0
    _, radial = _radial(surf, fs)
    zero = surf.thickness() < ZERO_LENGTH_MM
    assert zero.sum() == n_medial
    ori = surf.orientations
    assert np.isfinite(ori).all()
    np.testing.assert_allclose(np.linalg.norm(ori, axis=1), 1, atol=1e-12)
    # fallback = negated (inward) pial normal: same sign as the link vectors
    assert np.einsum("ij,ij->i", ori[zero], radial[0, zero]).max() < -0.9
    for h in ("lh", "rh"):
        sl = surf.columns(h)
        ref = _unit_normals(fs.pial[h], fs.tris[h])[surf.vertno[sl]]
        np.testing.assert_allclose(ori[sl][zero[sl]], -ref[zero[sl]], atol=1e-9)
    src = surf.to_source_spaces()
    assert all(np.isfinite(s["nn"]).all() for s in src)
    # the thickness mask drops exactly those columns instead
    surf2 = LaminarSurfaces.from_freesurfer("zm", tmp_path, n_layers=3, spacing="all")
    assert surf2.qc["cortex_mask"] == {"lh": "thickness", "rh": "thickness"}
    assert surf2.qc["dropped_total"] == {"zero_thickness": n_medial}
    assert surf2.qc["zero_length_link"] == 0
    assert set(surf2.dropped["reason"]) == {"zero_thickness"}


# ---------------------------------------------------------- cortex masks
def test_cortex_mask_routes(tmp_path):
    fs = make_sphere_subject(
        tmp_path, "cm", grade=3, zero_medial=True, cortex_label=True, aparc=True
    )
    n_medial = {h: int(fs.medial[h].sum()) for h in ("lh", "rh")}
    kw = dict(n_layers=3, spacing="all")

    def _check(surf, route, reason):
        assert surf.qc["cortex_mask"] == {"lh": route, "rh": route}
        assert surf.qc["dropped"] == {h: {reason: n_medial[h]} for h in ("lh", "rh")}
        for h in ("lh", "rh"):
            drop = surf.dropped["vertno"][surf.dropped["hemi"] == h]
            np.testing.assert_array_equal(drop, np.where(fs.medial[h])[0])
            np.testing.assert_array_equal(
                surf.vertno[surf.columns(h)], np.where(~fs.medial[h])[0]
            )
            # faces touching a removed column are gone, the rest re-indexed
            keep_faces = ~fs.medial[h][fs.tris[h]].any(axis=1)
            np.testing.assert_array_equal(
                surf.vertno[surf.columns(h)][surf.tris[h]], fs.tris[h][keep_faces]
            )

    for route, reason in (
        ("cortex_label", "outside_cortex_label"),
        ("aparc", "aparc_unknown"),
        ("thickness", "zero_thickness"),
    ):
        surf = LaminarSurfaces.from_freesurfer("cm", tmp_path, cortex_mask=route, **kw)
        _check(surf, route, reason)
        if route != "thickness":
            assert surf.sources["lh"][route]
    # auto: label, then aparc, then thickness
    auto = LaminarSurfaces.from_freesurfer("cm", tmp_path, **kw)
    _check(auto, "cortex_label", "outside_cortex_label")
    for h in ("lh", "rh"):
        (fs.label_dir / f"{h}.cortex.label").unlink()
    _check(LaminarSurfaces.from_freesurfer("cm", tmp_path, **kw), "aparc", "aparc_unknown")
    for h in ("lh", "rh"):
        (fs.label_dir / f"{h}.aparc.annot").unlink()
    _check(LaminarSurfaces.from_freesurfer("cm", tmp_path, **kw), "thickness", "zero_thickness")
    surf = LaminarSurfaces.from_freesurfer("cm", tmp_path, cortex_mask="none", **kw)
    assert surf.n_columns == 2 * 642 and surf.qc["dropped_total"] == {}
    match = r"cortex_mask='cortex_label' but .*lh\.cortex\.label"
    with pytest.raises(FileNotFoundError, match=match):
        LaminarSurfaces.from_freesurfer("cm", tmp_path, cortex_mask="cortex_label", **kw)
    with pytest.raises(FileNotFoundError, match=r"cortex_mask='aparc' but .*lh\.aparc\.annot"):
        LaminarSurfaces.from_freesurfer("cm", tmp_path, cortex_mask="aparc", **kw)


# ---------------------------------------------------------------- errors
def _broken(tmp_path, kind):
    fs = make_sphere_subject(tmp_path, "bad", grade=3, cortex_label=True, aparc=True)
    surf = fs.surf_dir
    if kind == "nan":
        rr = fs.pial["lh"].copy()
        rr[5] = np.nan
        write_surface(surf / "lh.pial", rr, fs.tris["lh"])
        return (ValueError, r"lh\.pial has 1 vertices with NaN or infinite"), {}
    if kind == "inf":
        rr = fs.white["rh"].copy()
        rr[7, 1] = np.inf
        write_surface(surf / "rh.white", rr, fs.tris["rh"])
        return (ValueError, r"rh\.white has 1 vertices with NaN or infinite"), {}
    if kind == "count":
        other = make_sphere_subject(tmp_path / "o", "o", grade=2)
        shutil.copy(other.surf_dir / "lh.pial", surf / "lh.pial")
        return (ValueError, r"differ in vertex count: .*lh\.white has 642 .*lh\.pial has 162"), {}
    if kind == "faces":
        write_surface(surf / "rh.pial", fs.pial["rh"], fs.tris["rh"][:, [0, 2, 1]])
        return (ValueError, r"different faces: .*rh\.white vs .*rh\.pial"), {}
    if kind == "sphere":
        other = make_sphere_subject(tmp_path / "o", "o", grade=2)
        shutil.copy(other.surf_dir / "lh.sphere", surf / "lh.sphere")
        return (ValueError, r"Sphere and white .*lh\.sphere has 162 .*lh\.white has 642"), {
            "spacing": "oct3"
        }
    if kind == "missing":
        (surf / "rh.pial").unlink()
        return (FileNotFoundError, r"rh pial surface not found: .*rh\.pial"), {}
    if kind == "label":
        rr = np.vstack([fs.white["lh"], fs.white["lh"][:3]])
        from _fs_fixtures import write_label

        write_label(fs.label_dir / "lh.cortex.label", np.array([0, 643]), rr)
        return (ValueError, r"cortex label .*lh\.cortex\.label has vertex ids up to 643"), {}
    if kind == "annot":
        from _fs_fixtures import write_aparc

        write_aparc(fs.label_dir / "rh.aparc.annot", np.zeros(100, bool))
        return (ValueError, r"annotation .*rh\.aparc\.annot has 100 vertices"), {
            "cortex_mask": "aparc"
        }
    raise AssertionError(kind)


ERRORS = ("nan", "inf", "count", "faces", "sphere", "missing", "label", "annot")


@pytest.mark.parametrize("kind", ERRORS)
def test_broken_inputs(tmp_path, kind):
    (exc, match), kw = _broken(tmp_path, kind)
    kw = {"spacing": "all", **kw}
    with pytest.raises(exc, match=match):
        LaminarSurfaces.from_freesurfer("bad", tmp_path, n_layers=3, **kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_layers=1), "n_layers must be >= 2"),
        (dict(method="bok"), "method"),
        (dict(spacing="oct"), "spacing must be 'all'"),
        (dict(orientation="normal"), "orientation"),
        (dict(cortex_mask="label"), "cortex_mask"),
        (dict(min_thickness=-1), "min_thickness must be >= 0"),
    ],
)
def test_bad_arguments(spheres, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        LaminarSurfaces.from_freesurfer("spheres", spheres.subjects_dir, **kw)
    with pytest.raises(FileNotFoundError, match="subject folder not found"):
        LaminarSurfaces.from_freesurfer("nobody", spheres.subjects_dir)


# ------------------------------------------------------------ save / load
def _assert_same(a: LaminarSurfaces, b: LaminarSurfaces):
    for key in ("layers", "orientations", "hemi", "vertno", "fractions"):
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype == y.dtype and x.shape == y.shape, key
        np.testing.assert_array_equal(x, y, err_msg=key)
    for h in ("lh", "rh"):
        np.testing.assert_array_equal(a.tris[h], b.tris[h])
    for key in ("hemi", "vertno", "reason"):
        np.testing.assert_array_equal(a.dropped[key], b.dropped[key])
    assert (a.method, a.spacing, a.orientation, a.subject) == (
        b.method, b.spacing, b.orientation, b.subject,
    )  # fmt: skip
    # files name their FreeSurfer inputs relative to <subjects_dir> (portable)
    assert a.qc == b.qc and _portable_inputs(a.sources) == _portable_inputs(b.sources)
    np.testing.assert_array_equal(a.scanner_xform, b.scanner_xform)


@pytest.mark.parametrize(
    "orientation, method, session",
    [("link_vector", "equidistant", None), ("surface_normal", "equivolume", "01")],
)
def test_save_load_roundtrip(fs5, tmp_path, orientation, method, session):
    surf = LaminarSurfaces.from_freesurfer(
        "fs5", fs5.subjects_dir, n_layers=4, method=method, spacing="oct4",
        orientation=orientation,
    )  # fmt: skip
    root = tmp_path / "derivatives" / "mne-laminar"
    paths = surf.save(root, "01", session)
    assert all(p.is_file() for p in paths)
    assert sorted(paths) == [p for p in _files(root) if "sub-01" in str(p)]
    anat = root / "sub-01" / ("ses-01" if session else "") / "anat"
    assert not list(anat.glob(".*"))  # no temporary files left
    _assert_same(surf, LaminarSurfaces.load(root, "01", session))
    # GIFTI surfaces: mm (float32, pointset), triangles, metadata
    g = nib.load(layer_fname(root, "01", session, "rh", 0, "oct4"))
    mm = g.agg_data("NIFTI_INTENT_POINTSET")
    assert mm.dtype == np.float32
    sl = surf.columns("rh")
    np.testing.assert_allclose(mm, surf.layers[0, sl] * 1e3, atol=1e-4)
    assert 50 < np.abs(mm).max() < 150  # a brain in mm, not metres
    meta = dict(g.meta)
    assert meta["AnatomicalStructurePrimary"] == "CortexRight"
    assert meta["AnatomicalStructureSecondary"] == "Pial"
    assert "tkRAS" in meta["SpatialReference"]
    side = bids.read_json(bids.sidecar(layer_fname(root, "01", session, "lh", 3, "oct4")))
    assert side["NumberOfLayers"] == 4 and side["Layer"] == 3
    assert side["DepthFraction"] == 0.0 and side["Orientation"] == orientation
    assert "ward" in side["OrientationSign"] and side["Density"].startswith("MNE oct4")
    assert side["ColumnsDropped"]["L"] == surf.qc["dropped"]["lh"]
    # named relative to subjects_dir: no machine-specific folder in the sidecars
    assert side["FreeSurferInputs"]["lh"]["white"] == "<subjects_dir>/fs5/surf/lh.white"
    assert side["FreeSurferInputs"]["subjects_dir"] == "<subjects_dir>"
    assert str(fs5.subjects_dir) not in bids.sidecar(layer_fname(root, "01", session, "lh", 3,
                                                                 "oct4")).read_text()  # fmt: skip
    table = bids.read_tsv(next(anat.glob("*_columns.tsv")))
    assert table["status"].count("kept") == surf.n_columns
    assert table["status"].count("dropped") == len(surf.dropped["vertno"])
    desc = bids.read_tsv(root / "descriptions.tsv")["desc_id"]
    assert {"desc-layer00", "desc-layer03", "desc-orientation", "desc-positions"} <= set(desc)


def test_save_removes_stale_and_is_atomic(fs5, tmp_path, monkeypatch):
    root = tmp_path / "deriv"
    big = LaminarSurfaces.from_freesurfer("fs5", fs5.subjects_dir, n_layers=5, spacing="oct4")
    big.save(root, "01")
    small = LaminarSurfaces.from_freesurfer("fs5", fs5.subjects_dir, n_layers=3, spacing="oct3")
    written = small.save(root, "01")
    assert sorted(written) == [p for p in _files(root) if "sub-01" in str(p)]
    names = " ".join(p.name for p in written)
    assert "den-oct4" not in names and "layer03" not in names and "layer02" in names
    _assert_same(small, LaminarSurfaces.load(root, "01"))
    # a failure in the middle of save leaves the earlier outputs untouched
    before = {p: p.read_bytes() for p in _files(root)}
    calls = {"n": 0}
    orig = nib.save

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full")
        return orig(*args, **kwargs)

    monkeypatch.setattr(nib, "save", flaky)
    with pytest.raises(OSError, match="disk full"):
        big.save(root, "01")
    assert {p: p.read_bytes() for p in _files(root)} == before


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No laminar surfaces saved for sub-01"):
        LaminarSurfaces.load(tmp_path, "01")


def test_nilearn_reads_layers(fs5, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from nilearn import plotting, surface

    surf = LaminarSurfaces.from_freesurfer("fs5", fs5.subjects_dir, n_layers=3, spacing="oct4")
    surf.save(tmp_path, "01")
    fname = layer_fname(tmp_path, "01", None, "lh", 1, "oct4")
    mesh = surface.load_surf_mesh(str(fname))
    sl = surf.columns("lh")
    np.testing.assert_allclose(mesh.coordinates, surf.layers[1, sl] * 1e3, atol=1e-4)
    np.testing.assert_array_equal(mesh.faces, surf.tris["lh"])
    fig = plotting.plot_surf(str(fname), surf_map=surf.thickness()[sl], engine="matplotlib")
    assert fig is not None
    import matplotlib.pyplot as plt

    plt.close("all")


def _validator():
    return shutil.which("bids-validator-deno")  # conftest puts the venv on PATH


@pytest.mark.skipif(_validator() is None, reason="bids-validator-deno not installed")
def test_bids_validator(fs5, tmp_path):
    root = tmp_path / "derivatives" / "mne-laminar"
    surf = LaminarSurfaces.from_freesurfer("fs5", fs5.subjects_dir, n_layers=3, spacing="oct3")
    surf.save(root, "01")
    surf.save(root, "02", "a")
    res = subprocess.run([_validator(), str(root)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


# ---------------------------------------------------------- source spaces
def test_to_source_spaces(spheres):
    surf = LaminarSurfaces.from_freesurfer(
        "spheres", spheres.subjects_dir, n_layers=3, spacing="oct3", orientation="surface_normal"
    )
    src = surf.to_source_spaces()
    assert len(src) == 3 and src.kind == "discrete"
    for layer, s in enumerate(src):
        assert s["coord_frame"] == 5  # FIFFV_COORD_MRI
        np.testing.assert_array_equal(s["rr"], surf.layers[layer])
        np.testing.assert_array_equal(s["nn"], surf.orientations[layer])
        assert s["nuse"] == surf.n_columns
        assert s["subject_his_id"] == "spheres"
    rr = np.concatenate([s["rr"] for s in src])
    np.testing.assert_array_equal(rr, surf.source_positions())
    np.testing.assert_array_equal(
        np.concatenate([s["nn"] for s in src]), surf.source_orientations()
    )


# ------------------------------------------------------------------ viz
def test_plane_segments_and_slices(spheres):
    from mne_laminar_plugin.report import viz

    rr, tris = spheres.pial["lh"], spheres.tris["lh"]
    c = spheres.center["lh"]
    seg = viz.mesh_plane_segments(rr, tris, 1, 5.0)
    assert len(seg)
    np.testing.assert_allclose(seg[..., 1], 5.0, atol=1e-9)
    # endpoints lie on edges of the sphere mesh: radius slightly below R_P
    r = np.linalg.norm(seg - c, axis=2)
    assert np.all(r <= R_P + 1e-6) and np.all(r > 0.98 * np.sqrt(R_P**2 - 25))
    surf = LaminarSurfaces.from_freesurfer(
        "spheres", spheres.subjects_dir, n_layers=4, spacing="all"
    )
    fig = viz.plot_layer_slices(
        surf.layers, surf.combined_tris(), t1_fname=spheres.files["T1.mgz"]
    )
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == 2
    for ax in axes:
        assert len(ax.collections) == 4  # one line collection per layer
        assert len(ax.images) == 1  # the T1 slice
    img = viz.figure_to_image(fig)
    assert img.ndim == 3 and img.std() > 0


@pytest.mark.parametrize("backend", ["matplotlib", "auto"])
def test_plot_surface_map(fs5, backend):
    from mne_laminar_plugin.report import viz

    rr = fs5.white["rh"] * 1e-3
    vals = np.linalg.norm(fs5.pial["rh"] - fs5.white["rh"], axis=1)
    imgs = viz.plot_surface_map(
        rr, fs5.tris["rh"], vals, title="t", views=("lateral", "dorsal"), size=(160, 120),
        backend=backend,
    )  # fmt: skip
    assert len(imgs) == 2
    for img in imgs:
        assert img.shape == (120, 160, 3) and img.dtype == np.uint8 and img.std() > 0
    grid = viz.image_grid(imgs, ncols=2, pad=4)
    assert grid.shape == (120, 324, 3)
    with pytest.raises(ValueError, match="one entry per vertex"):
        viz.plot_surface_map(rr, fs5.tris["rh"], vals[:5], title="t")


def test_html_table():
    from mne_laminar_plugin.report import viz

    out = viz.html_table(("a", "b"), [("<x>", 1.23456789)], caption="c&d")
    assert "&lt;x&gt;" in out and "1.235" in out and "c&amp;d" in out
    with pytest.raises(ValueError, match="cells"):
        viz.html_table(("a",), [(1, 2)])


# ------------------------------------------------------------------ step
def _step_cfg(tmp_path, fs, **kw):
    bids_root = tmp_path / "bids"
    bids_root.mkdir(exist_ok=True)
    cfg = SimpleNamespace(
        laminar_n_layers=3, laminar_depth_method="equidistant", laminar_column_spacing="oct3",
        laminar_orientation="link_vector", laminar_cortex_mask="auto", laminar_min_thickness=0.5,
        laminar_lameg_layers=None, fs_subject=fs.subject, fs_subjects_dir=fs.subjects_dir,
        laminar_root=bids_root / "derivatives" / "mne-laminar", ch_types=("meg",),
        proc=None, datatype="meg", acq=None, rec=None, space=None, bids_root=bids_root,
        deriv_root=bids_root / "derivatives" / "mne-bids-pipeline", all_tasks=("demo",),
    )  # fmt: skip
    for k, v in kw.items():
        setattr(cfg, k, v)
    config_path = tmp_path / "config.py"
    config_path.write_text("laminar_n_layers = 3\n")
    exec_params = SimpleNamespace(
        on_error="abort", memory_location=False, memory_subdir="_cache", memory_verbose=0,
        memory_file_method="mtime", deriv_root=cfg.deriv_root, config_path=config_path,
    )  # fmt: skip
    return cfg, exec_params


def test_step_worker(tmp_path, monkeypatch):
    from mne_laminar_plugin.pipeline.steps.laminar import _01_layer_surfaces as step

    monkeypatch.setenv("_MNE_BIDS_STUDY_TESTING", "true")
    # subjects_dir inside the BIDS dataset, as MBP's layout: sidecars get BIDS URIs
    fs = make_sphere_subject(
        tmp_path / "bids" / "derivatives" / "freesurfer" / "subjects", "sub01", grade=4,
        zero_medial=True, cortex_label=True, t1=True,
    )  # fmt: skip
    cfg, exec_params = _step_cfg(tmp_path, fs)
    in_files = step.get_input_fnames_layer_surfaces(cfg=cfg, subject="01", session=None)
    assert set(in_files) == {
        f"{h}_{k}" for h in ("lh", "rh") for k in ("white", "pial", "sphere", "cortex_label")
    } | {"t1"}
    log = step.run_layer_surfaces(
        cfg=cfg, exec_params=exec_params, subject="01", session=None
    )
    assert log["success"], log["error_message"]
    root = cfg.laminar_root
    surf = LaminarSurfaces.load(root, "01")
    assert surf.n_layers == 3 and surf.spacing == "oct3"
    assert surf.qc["cortex_mask"]["lh"] == "cortex_label"
    links = bids.read_json(root / "dataset_description.json")["DatasetLinks"]
    assert links == {"raw": "../..", "freesurfer": "../freesurfer"}
    side = bids.read_json(bids.sidecar(layer_fname(root, "01", None, "rh", 1, "oct3")))
    assert "bids:freesurfer:subjects/sub01/surf/rh.pial" in side["Sources"]
    assert "bids:freesurfer:subjects/sub01/label/rh.cortex.label" in side["Sources"]
    report = cfg.deriv_root / "sub-01" / "meg" / "sub-01_report.h5"
    import mne

    rep = mne.open_report(report)
    assert "Laminar surfaces" in rep.get_contents()[0]  # one section, three items
    items = {c.name: c.section for c in rep._content}
    for what in ("slices", "one layer", "summary"):
        title = f"Layer surfaces: {what}"
        assert items[title] == "Laminar surfaces"
    html = (cfg.deriv_root / "sub-01" / "meg" / "sub-01_report.html").read_text()
    assert "Layer crossings" in html and "outside_cortex_label" in html
    if _validator():
        res = subprocess.run([_validator(), str(root)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout


@pytest.mark.parametrize("kind", ERRORS)
def test_step_broken_input_leaves_nothing(tmp_path, monkeypatch, kind):
    """Every broken FreeSurfer input fails the step with its message, writing nothing."""
    from mne_laminar_plugin.pipeline.steps.laminar import _01_layer_surfaces as step

    monkeypatch.setenv("_MNE_BIDS_STUDY_TESTING", "true")
    (exc, match), kw = _broken(tmp_path / "subjects", kind)
    fs = SimpleNamespace(subject="bad", subjects_dir=tmp_path / "subjects")
    cfg, exec_params = _step_cfg(
        tmp_path, fs, laminar_column_spacing=kw.get("spacing", "all"),
        laminar_cortex_mask=kw.get("cortex_mask", "auto"),
    )  # fmt: skip
    with pytest.raises(exc, match=match):
        step.run_layer_surfaces(cfg=cfg, exec_params=exec_params, subject="01", session=None)
    assert not cfg.laminar_root.exists() or not (cfg.laminar_root / "sub-01").exists()
    assert not cfg.deriv_root.exists()  # no report either
