"""laMEG layer sets: a folder in laMEG's documented layout, read and written.

The test writes ``$SUBJECTS_DIR/<subject>/surf/laminar`` as laMEG 0.2.1's
``LayerSurfaceSet.create`` documents it (layer names from
``linspace(1, 0, n)``, ``combined`` and decimated ``ds`` stages, link-vector
files, aparc 'unknown' vertices removed, scanner RAS from ``mri/orig.mgz``)
from known geometry, with its own code.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from _fs_fixtures import make_sphere_subject
from nibabel.gifti import GiftiDataArray, GiftiImage
from scipy.spatial import ConvexHull

from mne_laminar_plugin import LaminarSurfaces

N_LAYERS = 5
NAMES = ["pial", "0.750", "0.500", "0.250", "white"]
CODES = nib.nifti1.intent_codes


def _write_gii(fname, rr, tris, vectors=None):
    arrays = [GiftiDataArray(np.asarray(rr, np.float64), intent=CODES["NIFTI_INTENT_POINTSET"],
                             datatype="NIFTI_TYPE_FLOAT64"),
              GiftiDataArray(np.asarray(tris, np.int32), intent=CODES["NIFTI_INTENT_TRIANGLE"],
                             datatype="NIFTI_TYPE_INT32")]  # fmt: skip
    if vectors is not None:
        arrays.append(GiftiDataArray(np.asarray(vectors, np.float64),
                                     intent=CODES["NIFTI_INTENT_VECTOR"],
                                     datatype="NIFTI_TYPE_FLOAT64"))  # fmt: skip
    nib.save(GiftiImage(darrays=arrays), str(fname), mode="force")  # float64: exact


def _rotation(a, b, c):
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rz = np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.fixture(scope="module")
def lameg_subject(tmp_path_factory):
    """A FreeSurfer subject with a laMEG layer folder of known geometry."""
    fs = make_sphere_subject(tmp_path_factory.mktemp("lameg"), grade=3, aparc=True)
    subj = fs.subjects_dir / fs.subject
    # mri/orig.mgz with a rotated, shifted scanner frame (conformed LIA voxels)
    size, vox = 64, 2.0
    lia = np.array([[-vox, 0, 0], [0, 0, vox], [0, -vox, 0]], float)
    affine = np.eye(4)
    affine[:3, :3] = _rotation(0.1, -0.05, 0.2) @ lia
    affine[:3, 3] = -affine[:3, :3] @ np.full(3, size / 2) + [12.0, -7.0, 20.0]
    img = nib.MGHImage(np.zeros((size,) * 3, np.uint8), affine)
    (subj / "mri").mkdir(exist_ok=True)
    nib.save(img, subj / "mri" / "orig.mgz")
    img = nib.load(subj / "mri" / "orig.mgz")  # as stored (float32 header fields)
    t_orig = np.asarray(img.header.get_vox2ras_tkr(), float)
    n_orig = np.asarray(img.header.get_vox2ras(), float)
    to_scanner = n_orig @ np.linalg.inv(t_orig)

    def scanner(rr_mm):
        return rr_mm @ to_scanner[:3, :3].T + to_scanner[:3, 3]

    folder = subj / "surf" / "laminar"
    folder.mkdir(parents=True)
    fractions = np.linspace(1, 0, N_LAYERS)  # from white: 1 = pial
    kept, tk_layers, tris_all, offset = {}, [], [], 0
    for hemi in ("lh", "rh"):
        kept[hemi] = np.flatnonzero(~fs.medial[hemi])
        remap = -np.ones(len(fs.medial[hemi]), int)
        remap[kept[hemi]] = np.arange(len(kept[hemi]))
        t = remap[fs.tris[hemi]]
        tris_all.append(t[(t >= 0).all(axis=1)] + offset)
        offset += len(kept[hemi])
    tris = np.concatenate(tris_all)
    for f in fractions:  # mris_expand -thickness: fraction f of the thickness from white
        tk_layers.append(np.concatenate(
            [fs.white[h][kept[h]] + f * (fs.pial[h][kept[h]] - fs.white[h][kept[h]])
             for h in ("lh", "rh")]))  # fmt: skip
    tk_layers = np.stack(tk_layers)  # (n_layers, n, 3) mm tkRAS
    removed = {f"{h}_deep_vertices_removed": np.flatnonzero(fs.medial[h]).tolist()
               for h in ("lh", "rh")}  # fmt: skip
    meta = dict(t_orig=t_orig.tolist(), n_orig=n_orig.tolist(), **removed)
    for name, rr in zip(NAMES, tk_layers):
        _write_gii(folder / f"{name}.combined.gii", scanner(rr), tris)
        (folder / f"{name}.combined.json").write_text(json.dumps(meta))
    # decimation: a shuffled subset of the combined vertices, re-triangulated
    rng = np.random.default_rng(0)
    n_lh = len(kept["lh"])
    ds_idx, ds_tris, start = [], [], 0
    for lo, hi in ((0, n_lh), (n_lh, tk_layers.shape[1])):
        pick = rng.permutation(np.arange(lo, hi))[: (hi - lo) // 3]
        hull = ConvexHull(tk_layers[-1][pick])
        ds_idx.append(pick)
        ds_tris.append(hull.simplices + start)
        start += len(pick)
    ds_idx = np.concatenate(ds_idx)
    ds_tris = np.concatenate(ds_tris)
    link = tk_layers[-1][ds_idx] - tk_layers[0][ds_idx]
    link_scanner = link @ to_scanner[:3, :3].T
    link_scanner /= np.linalg.norm(link_scanner, axis=1, keepdims=True)
    ds_meta = dict(meta, ds_factor=1 / 3, orientation="link_vector", fix_orientation=True)
    for name, rr in zip(NAMES, tk_layers):
        _write_gii(folder / f"{name}.ds.gii", scanner(rr[ds_idx]), ds_tris)
        _write_gii(folder / f"{name}.ds.link_vector.fixed.gii", scanner(rr[ds_idx]), ds_tris,
                   link_scanner)  # fmt: skip
        (folder / f"{name}.ds.link_vector.fixed.json").write_text(json.dumps(ds_meta))
    hemi = np.where(ds_idx >= n_lh, "rh", "lh")
    vertno = np.where(ds_idx >= n_lh, kept["rh"][np.maximum(ds_idx - n_lh, 0)],
                      kept["lh"][np.minimum(ds_idx, n_lh - 1)])  # fmt: skip
    return dict(fs=fs, folder=folder, tk=tk_layers, ds_idx=ds_idx, hemi=hemi, vertno=vertno,
                tris=ds_tris, link=link / np.linalg.norm(link, axis=1, keepdims=True),
                kept=kept, to_scanner=to_scanner)  # fmt: skip


def test_from_lameg_ds(lameg_subject):
    """Decimated set: positions, link vectors, hemispheres, vertices, correspondence."""
    g = lameg_subject
    surf = LaminarSurfaces.from_lameg(g["folder"])
    n = len(g["ds_idx"])
    assert surf.n_layers == N_LAYERS and surf.n_columns == n and surf.spacing == "lameg"
    np.testing.assert_allclose(surf.fractions, np.linspace(1, 0, N_LAYERS))
    order = np.asarray(surf.sources["lameg"]["lameg_vertex"])  # column c <- laMEG vertex
    assert sorted(order) == list(range(n))
    np.testing.assert_array_equal(surf.hemi, g["hemi"][order])
    np.testing.assert_array_equal(surf.vertno, g["vertno"][order])
    assert (surf.hemi[: (surf.hemi == "lh").sum()] == "lh").all()
    np.testing.assert_allclose(surf.layers * 1e3, g["tk"][:, g["ds_idx"][order]], atol=1e-9)
    assert surf.orientations.shape == (n, 3) and surf.orientation == "link_vector"
    np.testing.assert_allclose(surf.orientations, g["link"][order], atol=1e-9)
    # the triangles are laMEG's, per hemisphere in column order
    inv = np.empty(n, int)
    inv[order] = np.arange(n)
    want = {tuple(sorted(t)) for t in inv[g["tris"]]}
    got = {tuple(sorted(t)) for t in surf.combined_tris()}
    assert got == want
    np.testing.assert_allclose(surf.scanner_xform, g["to_scanner"], atol=1e-12)
    assert "orig.mgz" in surf.sources["lameg"]["frame"]
    medial = sum(int(g["fs"].medial[h].sum()) for h in ("lh", "rh"))
    assert len(surf.dropped["vertno"]) == medial


def test_from_lameg_combined_and_errors(lameg_subject, tmp_path):
    g = lameg_subject
    surf = LaminarSurfaces.from_lameg(g["folder"].parent.parent, stage="combined")
    n_lh = len(g["kept"]["lh"])
    np.testing.assert_array_equal(surf.vertno[:n_lh], g["kept"]["lh"])
    np.testing.assert_array_equal(surf.vertno[n_lh:], g["kept"]["rh"])
    np.testing.assert_allclose(surf.layers * 1e3, g["tk"], atol=1e-9)
    np.testing.assert_allclose(surf.orientations, (g["tk"][-1] - g["tk"][0]) / np.linalg.norm(
        g["tk"][-1] - g["tk"][0], axis=1, keepdims=True), atol=1e-12)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="laMEG layer folder not found"):
        LaminarSurfaces.from_lameg(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"No laMEG 'ds' layer set in .*found \[\]"):
        LaminarSurfaces.from_lameg(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"laMEG layer '0.667' not found: .*0\.667\.ds\.gii"):
        LaminarSurfaces.from_lameg(g["folder"], n_layers=4)


def test_to_lameg_roundtrip(lameg_subject, tmp_path):
    """Export then import is exact (float64 files), correspondence kept."""
    surf = LaminarSurfaces.from_lameg(lameg_subject["folder"])
    written = surf.to_lameg(tmp_path / "laminar", dtype="float64")
    names = sorted(p.name for p in written)
    assert "pial.ds.link_vector.fixed.gii" in names and "0.750.ds.gii" in names
    with pytest.raises(FileExistsError):
        surf.to_lameg(tmp_path / "laminar", dtype="float64")
    back = LaminarSurfaces.from_lameg(tmp_path / "laminar")
    np.testing.assert_allclose(back.layers, surf.layers, rtol=0, atol=1e-15)
    np.testing.assert_allclose(back.orientations, surf.orientations, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(back.hemi, surf.hemi)
    np.testing.assert_array_equal(back.vertno, surf.vertno)
    np.testing.assert_array_equal(back.sources["lameg"]["lameg_vertex"], np.arange(surf.n_columns))
    for h in ("lh", "rh"):
        np.testing.assert_array_equal(back.tris[h], surf.tris[h])
    np.testing.assert_allclose(back.scanner_xform, surf.scanner_xform, atol=1e-12)
    # the GIFTI standard's float32 (what laMEG and SPM read): to float32 rounding
    surf.to_lameg(tmp_path / "f32")
    f32 = LaminarSurfaces.from_lameg(tmp_path / "f32")
    np.testing.assert_allclose(f32.layers, surf.layers, rtol=0, atol=2e-8)  # 0.02 um
    np.testing.assert_array_equal(f32.vertno, surf.vertno)


def test_step_takes_a_lameg_folder(lameg_subject, tmp_path, monkeypatch):
    """laminar/layer_surfaces with laminar_lameg_layers: the laMEG set is saved as is."""
    from test_surfaces import _step_cfg

    from mne_laminar_plugin.pipeline.steps.laminar import _01_layer_surfaces as step

    monkeypatch.setenv("_MNE_BIDS_STUDY_TESTING", "true")
    fs = lameg_subject["fs"]
    cfg, exec_params = _step_cfg(
        tmp_path, fs, laminar_column_spacing="oct3",
        laminar_lameg_layers="{subjects_dir}/{subject}/surf/laminar",
    )  # fmt: skip
    with pytest.raises(ValueError, match="set laminar_column_spacing = 'lameg'"):
        step.get_input_fnames_layer_surfaces(cfg=cfg, subject="01", session=None)
    cfg.laminar_column_spacing = "lameg"
    in_files = step.get_input_fnames_layer_surfaces(cfg=cfg, subject="01", session=None)
    assert "lameg_pial.ds.link_vector.fixed.gii" in in_files and "lameg_orig.mgz" in in_files
    log = step.run_layer_surfaces(cfg=cfg, exec_params=exec_params, subject="01", session=None)
    assert log["success"], log["error_message"]
    saved = LaminarSurfaces.load(cfg.laminar_root, "01")
    direct = LaminarSurfaces.from_lameg(lameg_subject["folder"])
    assert saved.spacing == "lameg" and saved.n_layers == N_LAYERS
    np.testing.assert_allclose(saved.layers, direct.layers, atol=1e-12)
    np.testing.assert_array_equal(saved.vertno, direct.vertno)
