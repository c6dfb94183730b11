"""The offline demo dataset: files, BIDS validity, FreeSurfer subject, physics."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import mne
import nibabel as nib
import numpy as np
import pytest
from mne_bids import BIDSPath, get_head_mri_trans, read_raw_bids

from mne_laminar_plugin.demo import (
    CONDITION,
    LAYER_CONDITION,
    N_TRIALS,
    ROI_NAME,
    TASK,
    config_template,
    get_data_path,
    make_demo_dataset,
    make_meg_info,
)

REPO = Path(__file__).resolve().parents[1]


def test_files_exist(demo):
    subj = demo.subjects_dir / "sub-01"
    for hemi in ("lh", "rh"):
        for kind in ("white", "pial", "sphere", "sphere.reg", "inflated", "thickness",
                     "curv"):
            assert (subj / "surf" / f"{hemi}.{kind}").is_file()
        assert (subj / "label" / f"{hemi}.cortex.label").is_file()
    assert (subj / "label" / f"lh.{ROI_NAME}.label").is_file()
    for fname in ("bem/inner_skull.surf", "bem/outer_skin.surf", "bem/sub-01-head.fif",
                  "mri/T1.mgz"):
        assert (subj / fname).is_file()
    meg = demo.bids_root / "sub-01" / "meg"
    for suffix in ("meg.fif", "events.tsv", "channels.tsv", "meg.json"):
        assert (meg / f"sub-01_task-{TASK}_{suffix}").is_file()
    assert (demo.bids_root / "sub-01" / "anat" / "sub-01_T1w.json").is_file()
    assert demo.config_path.read_text() == config_template()


def test_config_checked_in_is_the_demo_config():
    assert (REPO / "example_configs" / "demo_config.py").read_text() == config_template()


def test_raw_is_vectorview_like_and_readable_by_mne_bids(demo):
    bp = BIDSPath(subject="01", task=TASK, datatype="meg", root=demo.bids_root)
    raw = read_raw_bids(bp, verbose="error")
    types = raw.get_channel_types()
    assert types.count("mag") == 102 and types.count("grad") == 204
    coils = {ch["coil_type"] for ch in raw.info["chs"] if ch["kind"] == 1}
    assert coils == {mne.io.constants.FIFF.FIFFV_COIL_VV_MAG_T3,
                     mne.io.constants.FIFF.FIFFV_COIL_VV_PLANAR_T1}
    # channel names are Vectorview's: MNE finds its Vectorview layout
    assert mne.channels.find_layout(raw.info, ch_type="grad").kind == "Vectorview-grad"
    events, event_id = mne.events_from_annotations(raw, verbose="error")
    assert set(event_id) == {CONDITION, LAYER_CONDITION} and len(events) == 2 * N_TRIALS
    assert (events[:, 2] == event_id[CONDITION]).sum() == N_TRIALS
    # sensors outside the scalp, at a realistic distance
    trans = get_head_mri_trans(bp, fs_subject="sub-01", fs_subjects_dir=demo.subjects_dir,
                               verbose="error")
    head = mne.read_bem_surfaces(demo.subjects_dir / "sub-01" / "bem" / "sub-01-head.fif",
                                 verbose="error")[0]
    head_rr = mne.transforms.apply_trans(np.linalg.inv(trans["trans"]), head["rr"])
    sensors = mne.transforms.apply_trans(
        raw.info["dev_head_t"], np.array([ch["loc"][:3] for ch in raw.info["chs"][:306]])
    )
    inside = mne.surface._CheckInside(dict(head, rr=head_rr))(sensors)
    assert not inside.any()
    from scipy.spatial import cKDTree

    dist = cKDTree(head_rr).query(sensors)[0]
    assert 0.015 < dist.min() and np.median(dist) < 0.06


def test_trans_from_landmarks_matches_fiducials(demo):
    """MBP computes head<->MRI from the T1w landmarks: it must be the true one."""
    bp = BIDSPath(subject="01", task=TASK, datatype="meg", root=demo.bids_root)
    trans = get_head_mri_trans(bp, fs_subject="sub-01", fs_subjects_dir=demo.subjects_dir,
                               verbose="error")
    raw = read_raw_bids(bp, verbose="error")
    fids = {d["ident"]: d["r"] for d in raw.info["dig"] if d["kind"] == 1}
    scale = demo.truth["01"]["anatomy_scale"]
    mri_fids, _ = mne.io.read_fiducials(
        Path(mne.__file__).parent / "data" / "fsaverage" / "fsaverage-fiducials.fif"
    )
    for ident, mri in zip((1, 2, 3), mri_fids):  # LPA, nasion, RPA
        head_pos = mne.transforms.apply_trans(trans, fids[ident])
        np.testing.assert_allclose(head_pos, mri["r"] * scale, atol=1e-5)


def test_freesurfer_subject_usable_by_mne(demo):
    src = mne.setup_source_space("sub-01", spacing="oct5", subjects_dir=demo.subjects_dir,
                                 add_dist=False, verbose="error")
    assert [s["nuse"] for s in src] == [1026, 1026]
    white, tris = nib.freesurfer.read_geometry(demo.subjects_dir / "sub-01/surf/lh.white")
    pial, tris_p = nib.freesurfer.read_geometry(demo.subjects_dir / "sub-01/surf/lh.pial")
    np.testing.assert_array_equal(tris, tris_p)
    medial = np.all(white == pial, axis=1)
    cortex = mne.read_label(demo.subjects_dir / "sub-01/label/lh.cortex.label")
    assert medial.sum() > 100
    np.testing.assert_array_equal(np.sort(cortex.vertices), np.flatnonzero(~medial))
    thick = nib.freesurfer.read_morph_data(demo.subjects_dir / "sub-01/surf/lh.thickness")
    np.testing.assert_allclose(thick, np.linalg.norm(pial - white, axis=1), atol=1e-4)
    # the 1-layer BEM of MBP's source stage (ico-4 decimation) works
    model = mne.make_bem_model("sub-01", ico=4, conductivity=(0.3,),
                               subjects_dir=demo.subjects_dir, verbose="error")
    assert model[0]["np"] == 2562
    # every cortical vertex is inside the inner skull
    inner = mne.read_surface(demo.subjects_dir / "sub-01/bem/inner_skull.surf",
                             return_dict=True)[2]
    inner["rr"] = inner["rr"] / 1000.0
    check = mne.surface._CheckInside(inner)
    assert check(pial[~medial] / 1000.0).mean() > 0.99
    # the T1: FreeSurfer's LIA orientation and 256 mm field of view at 2 mm,
    # tkRAS == scanner RAS, and brighter in white matter
    t1 = nib.load(demo.subjects_dir / "sub-01/mri/T1.mgz")
    assert t1.shape == (128, 128, 128)
    np.testing.assert_allclose(t1.header.get_zooms(), (2.0, 2.0, 2.0))
    np.testing.assert_allclose(t1.header.get_vox2ras_tkr(), t1.affine, atol=1e-4)
    vox = np.rint(mne.transforms.apply_trans(np.linalg.inv(t1.affine), white[::50])).astype(int)
    data = np.asarray(t1.dataobj)
    assert data[tuple(vox.T)].mean() > 60


def test_evoked_response_comes_from_the_known_source(demo):
    """Averaged data at 100 ms correlate with the true source's topography."""
    bp = BIDSPath(subject="01", task=TASK, datatype="meg", root=demo.bids_root)
    raw = read_raw_bids(bp, verbose="error")
    raw.load_data().filter(None, 40.0, verbose="error")
    events, event_id = mne.events_from_annotations(raw, verbose="error")
    epochs = mne.Epochs(raw, events, event_id[CONDITION], tmin=-0.2, tmax=0.5,
                        baseline=(None, 0), picks="mag", verbose="error")
    evoked = epochs.average()
    truth = demo.truth["01"]
    # independent forward of the true patch: a sphere fitted to the head
    # shape (the demo simulated with a 1-layer ico-3 BEM)
    sub = demo.subjects_dir / "sub-01"
    white = nib.freesurfer.read_geometry(sub / "surf/lh.white")[0]
    pial = nib.freesurfer.read_geometry(sub / "surf/lh.pial")[0]
    patch = np.array(truth["patch_vertices"])
    f = truth["depth_fraction_from_white"]
    rr = (white + f * (pial - white))[patch] / 1000.0
    nn = white[patch] - pial[patch]
    nn /= np.linalg.norm(nn, axis=1, keepdims=True)
    trans = get_head_mri_trans(bp, fs_subject="sub-01", fs_subjects_dir=demo.subjects_dir,
                               verbose="error")
    src = mne.setup_volume_source_space(pos=dict(rr=rr, nn=nn), verbose="error")
    sphere = mne.make_sphere_model("auto", "auto", evoked.info, verbose="error")
    fwd = mne.make_forward_solution(evoked.info, trans, src, sphere, eeg=False,
                                    verbose="error")
    fwd = mne.convert_forward_solution(fwd, force_fixed=True, verbose="error")
    topo = fwd["sol"]["data"].sum(1)
    peak = evoked.copy().crop(0.09, 0.11).data.mean(1)
    corr = np.corrcoef(topo, peak)[0, 1]
    assert abs(corr) > 0.9, corr
    baseline_std = evoked.copy().crop(None, 0).data.std()
    assert np.abs(peak).max() > 5 * baseline_std


def test_deterministic_and_cached(demo, tmp_path):
    bp = BIDSPath(subject="01", task=TASK, datatype="meg", root=demo.bids_root)
    again = make_demo_dataset(tmp_path / "again", n_subjects=1, seed=42)
    bp2 = bp.copy().update(root=again.bids_root)
    a = mne.io.read_raw_fif(bp.fpath, verbose="error").get_data()
    b = mne.io.read_raw_fif(bp2.fpath, verbose="error").get_data()
    np.testing.assert_array_equal(a, b)
    assert again.truth == demo.truth
    mtime = bp2.fpath.stat().st_mtime
    make_demo_dataset(tmp_path / "again", n_subjects=1, seed=42)  # reuses
    assert bp2.fpath.stat().st_mtime == mtime


def test_bids_validator_on_raw_dataset(demo):
    exe = shutil.which("bids-validator-deno")
    if exe is None:
        pytest.skip("bids-validator-deno not installed")
    res = subprocess.run([exe, str(demo.bids_root), "--ignoreWarnings"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:]


def test_meg_info_standalone():
    info = make_meg_info()
    assert len(info["ch_names"]) == 307
    pos = np.array([ch["loc"][:3] for ch in info["chs"][:306]])
    # three channels (mag + 2 grads) per location, orthogonal grad baselines
    assert len(np.unique(np.round(pos, 6), axis=0)) == 102
    ex1 = np.array([ch["loc"][3:6] for ch in info["chs"][1:306:3]])
    ex2 = np.array([ch["loc"][3:6] for ch in info["chs"][2:306:3]])
    np.testing.assert_allclose(np.sum(ex1 * ex2, axis=1), 0, atol=1e-12)


def test_get_data_path(monkeypatch, tmp_path):
    assert get_data_path(tmp_path) == tmp_path
    monkeypatch.setenv("MNE_LAMINAR_DATA", str(tmp_path / "x"))
    assert get_data_path() == tmp_path / "x"
    assert not (tmp_path / "x").exists()  # nothing created
    monkeypatch.delenv("MNE_LAMINAR_DATA")
    assert get_data_path().name == "mne_laminar_data"


def test_truth_json(demo):
    data = json.loads((demo.bids_root / "sourcedata" / "demo_truth.json").read_text())
    t = data["subjects"]["01"]
    assert t["hemi"] == "lh" and t["vertex"] in t["patch_vertices"]
    assert 60 <= t["amplitude_nAm"] <= 80
    layer = t["layer_source"]
    assert layer["condition"] == LAYER_CONDITION and layer["layer"] == 8
    assert layer["roi_label"] == "label/lh.demo_column.label" and layer["patch_fwhm_mm"] == 5.0
