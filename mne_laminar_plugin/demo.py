"""The offline demo dataset: a BIDS MEG dataset with a FreeSurfer subject.

Built only from what installed packages ship, so that the demo and the tests
never download anything:

- cortex: nilearn's bundled fsaverage5 surfaces (white, pial, sphere,
  inflated, thickness, curvature); the medial wall is where pial == white;
- head: MNE's bundled fsaverage head surface, inner skull, fiducials;
- sensors: 102 sensor locations (one magnetometer and two orthogonal planar
  gradiometers each, Vectorview coil types) spread over MNE's bundled
  ``306m`` helmet, in a plausible device-to-head position;
- data: an evoked response from a known cortical patch at a known depth
  (forward model: the subject's single-layer BEM) plus coloured sensor noise,
  written with mne-bids, with a T1w image and landmarks so that MBP computes
  the head-MRI transform itself.

Subjects differ by a global scale of the anatomy, the source amplitude and
the noise; everything is deterministic given the seed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATA_ENV = "MNE_LAMINAR_DATA"
TASK = "demo"
CONDITION = "stim"
ROI_NAME = "demo_roi"
SFREQ = 250.0
N_TRIALS = 60
#: where the simulated source sits: depth fraction from white (1 = pial)
SOURCE_DEPTH = 0.75
SOURCE_TARGET_MM = np.array([-45.0, -22.0, 48.0])  # left central region, fsaverage


def get_data_path(path: str | os.PathLike | None = None) -> Path:
    """Return the root folder of local laminar datasets.

    Parameters
    ----------
    path : path-like | None
        Returned as is when given. Otherwise the ``MNE_LAMINAR_DATA``
        environment variable, else ``~/mne_laminar_data``.

    Returns
    -------
    path : pathlib.Path
        The folder (not created; nothing is written inside the Python
        environment).
    """
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path("~/mne_laminar_data").expanduser()


@dataclass
class DemoDataset:
    """Paths of a demo dataset written by :func:`make_demo_dataset`."""

    root: Path
    bids_root: Path
    subjects_dir: Path
    deriv_root: Path
    config_path: Path
    subjects: list[str] = field(default_factory=list)
    truth: dict = field(default_factory=dict)


# ----------------------------------------------------------- bundled data
def _nilearn_fsaverage5() -> Path:
    import nilearn

    path = Path(nilearn.__file__).parent / "datasets" / "data" / "fsaverage5"
    if not (path / "pial_left.gii.gz").is_file():
        raise FileNotFoundError(
            f"nilearn's bundled fsaverage5 surfaces were not found in {path}; "
            "install nilearn>=0.10 (it ships them)."
        )
    return path


def _mne_data() -> Path:
    import mne

    return Path(mne.__file__).parent / "data"


def config_template() -> str:
    """Text of the demo MBP config (also checked in as example_configs/demo_config.py)."""
    return (Path(__file__).parent / "data" / "demo_config.py").read_text(encoding="utf-8")


# ------------------------------------------------------------- anatomy
def _read_gifti_pair(fs5: Path, kind: str, hemi: str) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    side = "left" if hemi == "lh" else "right"
    img = nib.load(fs5 / f"{kind}_{side}.gii.gz")
    rr = np.asarray(img.darrays[0].data, float)
    tris = np.asarray(img.darrays[1].data, np.int32)
    return rr, tris


def _read_gifti_data(fs5: Path, kind: str, hemi: str) -> np.ndarray:
    import nibabel as nib

    side = "left" if hemi == "lh" else "right"
    return np.asarray(nib.load(fs5 / f"{kind}_{side}.gii.gz").darrays[0].data, float)


def _write_fs_subject(subjects_dir: Path, subject: str, scale: float) -> dict:
    """Write the FreeSurfer-style subject; returns geometry used later (mm)."""
    import mne
    import nibabel.freesurfer as nfs

    fs5 = _nilearn_fsaverage5()
    subj = subjects_dir / subject
    for sub in ("surf", "bem", "mri", "label"):
        (subj / sub).mkdir(parents=True, exist_ok=True)
    geom: dict = {"scale": scale}
    for hemi in ("lh", "rh"):
        white, tris = _read_gifti_pair(fs5, "white", hemi)
        pial, tris_p = _read_gifti_pair(fs5, "pial", hemi)
        if not np.array_equal(tris, tris_p):
            raise RuntimeError("nilearn fsaverage5 white and pial topologies differ")
        sphere, _ = _read_gifti_pair(fs5, "sphere", hemi)
        infl, _ = _read_gifti_pair(fs5, "infl", hemi)
        white, pial = white * scale, pial * scale
        # medial wall: pial == white exactly (as nilearn ships it)
        medial = np.all(pial == white, axis=1)
        thickness = np.linalg.norm(pial - white, axis=1)
        surf = subj / "surf"
        nfs.write_geometry(surf / f"{hemi}.white", white, tris)
        nfs.write_geometry(surf / f"{hemi}.pial", pial, tris)
        nfs.write_geometry(surf / f"{hemi}.inflated", infl * scale, tris)
        nfs.write_geometry(surf / f"{hemi}.sphere", sphere, tris)
        nfs.write_geometry(surf / f"{hemi}.sphere.reg", sphere, tris)
        nfs.write_morph_data(surf / f"{hemi}.thickness", thickness.astype(np.float32))
        nfs.write_morph_data(
            surf / f"{hemi}.curv", _read_gifti_data(fs5, "curv", hemi).astype(np.float32)
        )
        nfs.write_morph_data(
            surf / f"{hemi}.sulc", _read_gifti_data(fs5, "sulc", hemi).astype(np.float32)
        )
        cortex = np.flatnonzero(~medial)
        mne.write_label(
            subj / "label" / f"{hemi}.cortex.label",
            mne.Label(cortex, white[cortex] / 1000.0, hemi=hemi, subject=subject,
                      comment="cortex (pial != white)"),
            verbose="error",
        )
        geom[hemi] = dict(white=white, pial=pial, tris=tris, medial=medial)

    # BEM surfaces (MNE's fsaverage head and inner skull, scaled), in mm
    inner = mne.read_bem_surfaces(
        _mne_data() / "fsaverage" / "fsaverage-inner_skull-bem.fif", verbose="error"
    )[0]
    head = mne.read_bem_surfaces(
        _mne_data() / "fsaverage" / "fsaverage-head.fif", verbose="error"
    )[0]
    inner_rr = inner["rr"] * 1000.0 * scale
    head_rr = head["rr"] * 1000.0 * scale
    bem = subj / "bem"
    nfs.write_geometry(bem / "inner_skull.surf", inner_rr, inner["tris"])
    nfs.write_geometry(bem / "outer_skin.surf", head_rr, head["tris"])
    head_surf = dict(head)  # uniform scaling keeps the normals
    head_surf["rr"] = head_rr / 1000.0
    mne.write_bem_surfaces(bem / f"{subject}-head.fif", [head_surf], overwrite=True,
                           verbose="error")
    geom["inner_skull"] = (inner_rr, inner["tris"])
    geom["head"] = (head_rr, head["tris"])

    fids, _ = mne.io.read_fiducials(_mne_data() / "fsaverage" / "fsaverage-fiducials.fif")
    geom["fiducials_mm"] = {
        "lpa": fids[0]["r"] * 1000 * scale,
        "nasion": fids[1]["r"] * 1000 * scale,
        "rpa": fids[2]["r"] * 1000 * scale,
    }
    _write_t1(subj / "mri" / "T1.mgz", geom)
    return geom


def _t1_affine() -> np.ndarray:
    """FreeSurfer conformed (LIA, 1 mm, 256^3) vox2ras with c_ras = 0."""
    return np.array(
        [[-1.0, 0, 0, 128], [0, 0, 1, -128], [0, -1, 0, 128], [0, 0, 0, 1]]
    )


def _fill_surface(rr_mm: np.ndarray, tris: np.ndarray, shape: tuple) -> np.ndarray:
    """Voxels inside a closed surface: rasterise its triangles, fill the shell."""
    from scipy import ndimage

    inv = np.linalg.inv(_t1_affine())
    v0, v1, v2 = rr_mm[tris[:, 0]], rr_mm[tris[:, 1]], rr_mm[tris[:, 2]]
    edge = max(
        np.linalg.norm(v1 - v0, axis=1).max(),
        np.linalg.norm(v2 - v0, axis=1).max(),
        np.linalg.norm(v2 - v1, axis=1).max(),
    )
    n = int(np.ceil(edge / 0.4)) + 1
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = i + j <= n
    a, b = (i[keep] / n)[:, None, None], (j[keep] / n)[:, None, None]
    pts = (v0 + a * (v1 - v0) + b * (v2 - v0)).reshape(-1, 3)
    vox = np.rint(pts @ inv[:3, :3].T + inv[:3, 3]).astype(int)
    ok = np.all((vox >= 0) & (vox < np.array(shape)), axis=1)
    shell = np.zeros(shape, bool)
    shell[tuple(vox[ok].T)] = True
    return ndimage.binary_fill_holes(shell)


def _write_t1(fname: Path, geom: dict) -> None:
    """A synthetic T1-weighted image whose tissue boundaries are the surfaces."""
    import nibabel as nib
    from scipy import ndimage

    shape = (256, 256, 256)
    img = np.zeros(shape, np.float32)
    img[_fill_surface(*geom["head"], shape)] = 60.0  # scalp and skull
    img[_fill_surface(*geom["inner_skull"], shape)] = 25.0  # CSF
    for hemi in ("lh", "rh"):
        g = geom[hemi]
        img[_fill_surface(g["pial"], g["tris"], shape)] = 70.0  # grey matter
    for hemi in ("lh", "rh"):
        g = geom[hemi]
        img[_fill_surface(g["white"], g["tris"], shape)] = 110.0  # white matter
    img = ndimage.gaussian_filter(img, 0.6)
    data = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    mgh = nib.MGHImage(data, _t1_affine())
    fname.parent.mkdir(parents=True, exist_ok=True)
    nib.save(mgh, fname)


# -------------------------------------------------------------- sensors
def _farthest_points(rr: np.ndarray, n: int) -> np.ndarray:
    idx = [int(np.argmax(rr[:, 2]))]
    dist = np.linalg.norm(rr - rr[idx[0]], axis=1)
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        idx.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(rr - rr[nxt], axis=1))
    return np.array(idx)


def _fit_sphere(rr: np.ndarray) -> tuple[np.ndarray, float]:
    # linear least squares: |x|^2 = 2 c.x + (r^2 - |c|^2)
    A = np.c_[2 * rr, np.ones(len(rr))]
    sol = np.linalg.lstsq(A, (rr**2).sum(1), rcond=None)[0]
    center = sol[:3]
    return center, float(np.sqrt(sol[3] + center @ center))


def _vectorview_positions(helmet: dict, center: np.ndarray):
    """Vectorview channel names and sensor positions on the helmet surface.

    Each of the 102 triplets of MNE's ``Vectorview-all`` layout (one
    magnetometer ``…1``, two gradiometers ``…2``/``…3``) is placed where the
    layout's 2D position falls on an azimuthal projection of the helmet, so
    names, topography and MNE's topomap layouts agree.
    """
    import mne

    lay = mne.channels.read_layout("Vectorview-all")
    xy = lay.pos[:, :2] + lay.pos[:, 2:] / 2.0
    groups: dict[str, dict[str, np.ndarray]] = {}
    for name, p in zip(lay.names, xy):
        groups.setdefault(name[:-1], {})[name[-1]] = p
    bases = sorted(groups)
    names = [(f"{b}1", f"{b}2", f"{b}3") for b in bases]
    lay_xy = np.array([groups[b]["1"] for b in bases])
    # densify the helmet (barycentric samples, interpolated normals)
    rr, nn, tris = helmet["rr"], helmet["nn"], helmet["tris"]
    n = 8
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = i + j <= n
    a, b = (i[keep] / n)[:, None, None], (j[keep] / n)[:, None, None]
    pts = (rr[tris[:, 0]] + a * (rr[tris[:, 1]] - rr[tris[:, 0]])
           + b * (rr[tris[:, 2]] - rr[tris[:, 0]])).reshape(-1, 3)
    nrm = ((1 - a - b) * nn[tris[:, 0]] + a * nn[tris[:, 1]] + b * nn[tris[:, 2]]).reshape(-1, 3)
    d = pts - center
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    theta = np.arccos(np.clip(d[:, 2], -1, 1))
    phi = np.arctan2(d[:, 1], d[:, 0])
    proj = theta[:, None] * np.c_[np.cos(phi), np.sin(phi)]
    # layout -> same frame: centre, then scale to the helmet's extent
    lay_c = lay_xy - (lay_xy.max(0) + lay_xy.min(0)) / 2.0
    top = theta < np.percentile(theta, 85)
    scale = np.percentile(np.abs(proj[top]), 98, axis=0) / np.abs(lay_c).max(0)
    target = lay_c * scale
    idx = np.argmin(((proj[:, None, :] - target[None]) ** 2).sum(-1), axis=0)
    pos = pts[idx]
    ez = nrm[idx] * np.sign(np.sum(nrm[idx] * (pos - center), axis=1))[:, None]
    ez /= np.linalg.norm(ez, axis=1, keepdims=True)
    return names, pos, ez


def make_meg_info(
    head_rr_head: np.ndarray | None = None,
    *,
    sfreq: float = SFREQ,
    min_gap: float = 0.018,
):
    """A 306-channel Vectorview-like MEG ``Info``: sensors on MNE's 306m helmet.

    Parameters
    ----------
    head_rr_head : array, shape (n, 3) | None
        Scalp points in head coordinates (m), used to place the head in the
        helmet (device-to-head transform) so that the closest sensor is
        ``min_gap`` from the scalp. None: MNE's fsaverage head.
    sfreq : float
        Sampling frequency.
    min_gap : float
        Smallest sensor-to-scalp distance (m).

    Returns
    -------
    info : mne.Info
        With ``dev_head_t`` set, channel locations in device coordinates,
        coil types 3024 (magnetometer) and 3012 (planar gradiometer), and a
        ``STI 014`` stim channel.
    """
    import mne
    from mne.io.constants import FIFF
    from scipy.spatial import cKDTree

    helmet = mne.read_bem_surfaces(_mne_data() / "helmets" / "306m.fif.gz", verbose="error")[0]
    center_d, _ = _fit_sphere(helmet["rr"])
    names, pos, ez = _vectorview_positions(helmet, center_d)
    n_locations = len(pos)
    ref = np.where(np.abs(ez[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    ex = np.cross(ref, ez)
    ex /= np.linalg.norm(ex, axis=1, keepdims=True)
    ey = np.cross(ez, ex)

    if head_rr_head is None:
        head = mne.read_bem_surfaces(
            _mne_data() / "fsaverage" / "fsaverage-head.fif", verbose="error"
        )[0]
        trans = mne.read_trans(_mne_data() / "fsaverage" / "fsaverage-trans.fif")
        head_rr_head = mne.transforms.apply_trans(
            np.linalg.inv(trans["trans"]), head["rr"]
        )
    top = head_rr_head[head_rr_head[:, 2] > np.percentile(head_rr_head[:, 2], 40)]
    center_h, _ = _fit_sphere(top)
    tree = cKDTree(head_rr_head)
    # device -> head: translate the helmet centre onto the scalp's, then move
    # the head down into the helmet until the closest sensor is min_gap away
    best = None
    for dz in np.arange(0.0, 0.08, 0.001):
        t = center_h - center_d + np.array([0.0, 0.0, dz])
        dist = tree.query(pos + t)[0].min()
        best = t
        if dist >= min_gap:
            break
    dev_head_t = np.eye(4)
    dev_head_t[:3, 3] = best

    ch_names, types, locs, coils = [], [], [], []
    for k in range(n_locations):
        mag, grad1, grad2 = names[k]
        for name, kind, exk, eyk in (
            (mag, "mag", ex[k], ey[k]),
            (grad1, "grad", ex[k], ey[k]),
            (grad2, "grad", ey[k], -ex[k]),
        ):
            ch_names.append(name)
            types.append(kind)
            locs.append(np.r_[pos[k], exk, eyk, ez[k]])
            coils.append(
                FIFF.FIFFV_COIL_VV_MAG_T3 if kind == "mag" else FIFF.FIFFV_COIL_VV_PLANAR_T1
            )
    info = mne.create_info(ch_names + ["STI 014"], sfreq, types + ["stim"])
    with info._unlock():
        for ch, loc, coil in zip(info["chs"], locs, coils):
            ch["loc"][:] = loc
            ch["coil_type"] = coil
            ch["coord_frame"] = FIFF.FIFFV_COORD_DEVICE
        info["dev_head_t"] = mne.transforms.Transform("meg", "head", dev_head_t)
        info["line_freq"] = 50.0
    return info


# ------------------------------------------------------------ simulation
def _choose_source(geom: dict, rng: np.random.Generator) -> dict:
    white, pial = geom["lh"]["white"], geom["lh"]["pial"]
    thick = np.linalg.norm(pial - white, axis=1)
    target = SOURCE_TARGET_MM * geom["scale"]
    cand = np.flatnonzero((thick > 2.0) & ~geom["lh"]["medial"])
    d = np.linalg.norm(pial[cand] - target, axis=1)
    near = cand[np.argsort(d)[:10]]
    vertex = int(rng.choice(near))
    # patch: vertices within 6 mm (white surface) of the centre
    dist = np.linalg.norm(white - white[vertex], axis=1)
    patch = np.flatnonzero((dist < 6.0) & ~geom["lh"]["medial"])
    roi = np.flatnonzero((dist < 20.0) & ~geom["lh"]["medial"])
    return dict(vertex=vertex, patch=patch, roi=roi)


def _waveform(times: np.ndarray, amplitude: float) -> np.ndarray:
    """Evoked waveform (A m): gamma-shaped peak at 100 ms, smaller late wave."""
    t = np.clip(times, 0, None)
    early = (t / 0.1) ** 3 * np.exp(3 * (1 - t / 0.1))
    late = -0.4 * (t / 0.2) ** 4 * np.exp(4 * (1 - t / 0.2))
    return amplitude * (early + late)


def _simulate_raw(info, fwd_gain: np.ndarray, amplitude: float, rng, seed: int):
    import mne

    n_times_trial = int(SFREQ * 1.2)
    onsets = (np.arange(N_TRIALS) * n_times_trial + int(SFREQ) + rng.integers(0, 25, N_TRIALS))
    n_times = onsets[-1] + n_times_trial + int(SFREQ)
    meg_picks = mne.pick_types(info, meg=True)
    data = np.zeros((len(info["ch_names"]), n_times))
    times = np.arange(int(0.6 * SFREQ)) / SFREQ
    wave = _waveform(times, amplitude)
    topo = fwd_gain.sum(axis=1) / fwd_gain.shape[1]  # patch, moment split evenly
    for onset in onsets:
        data[meg_picks, onset : onset + len(times)] += np.outer(topo, wave)
    stim = mne.pick_types(info, meg=False, stim=True)[0]
    data[stim, onsets] = 1.0
    raw = mne.io.RawArray(data, info, verbose="error")
    cov = mne.make_ad_hoc_cov(raw.info, std=dict(mag=12e-15, grad=3e-13), verbose="error")
    mne.simulation.add_noise(
        raw, cov, iir_filter=[0.2, -0.2, 0.04], random_state=seed, verbose="error"
    )
    events = np.c_[onsets, np.zeros(len(onsets), int), np.ones(len(onsets), int)]
    return raw, events


# ------------------------------------------------------------------ main
def make_demo_dataset(
    root: str | os.PathLike,
    *,
    n_subjects: int = 1,
    seed: int = 42,
    overwrite: bool = False,
    verbose: str | None = "error",
) -> DemoDataset:
    """Write the offline demo dataset and its MBP config.

    Parameters
    ----------
    root : path-like
        Folder to write into: ``bids/`` (raw BIDS dataset with
        ``derivatives/freesurfer/subjects``) and ``demo_config.py``.
    n_subjects : int
        Number of subjects (``sub-01`` …).
    seed : int
        Random seed; the dataset is deterministic given it.
    overwrite : bool
        Rebuild even if ``root`` already holds a complete demo.
    verbose : str | None
        MNE log level while writing.

    Returns
    -------
    demo : DemoDataset
        Paths (BIDS root, subjects dir, MBP derivatives root, config) and
        the simulated source of each subject (``truth``).
    """
    import mne
    from mne_bids import BIDSPath, make_dataset_description, write_anat, write_raw_bids

    root = Path(root).expanduser().resolve()
    bids_root = root / "bids"
    subjects_dir = bids_root / "derivatives" / "freesurfer" / "subjects"
    config_path = root / "demo_config.py"
    truth_path = bids_root / "sourcedata" / "demo_truth.json"
    subjects = [f"{i + 1:02d}" for i in range(n_subjects)]
    demo = DemoDataset(
        root=root,
        bids_root=bids_root,
        subjects_dir=subjects_dir,
        deriv_root=bids_root / "derivatives" / "mne-bids-pipeline",
        config_path=config_path,
        subjects=subjects,
    )
    stamp = dict(n_subjects=n_subjects, seed=seed, version=2)
    if not overwrite and truth_path.is_file() and config_path.is_file():
        have = json.loads(truth_path.read_text())
        if have.get("stamp") == stamp:
            demo.truth = have["subjects"]
            return demo
    if bids_root.exists():
        shutil.rmtree(bids_root)
    root.mkdir(parents=True, exist_ok=True)
    truth: dict = {}
    with mne.utils.use_log_level(verbose):
        make_dataset_description(
            path=bids_root,
            name="mne-laminar demo: simulated MEG evoked response",
            dataset_type="raw",
            authors=["mne-laminar-plugin"],
            overwrite=True,
        )
        rng_master = np.random.default_rng(seed)
        for subject in subjects:
            sub_seed = int(rng_master.integers(0, 2**31 - 1))
            rng = np.random.default_rng(sub_seed)
            fs_subject = f"sub-{subject}"
            scale = float(rng.uniform(0.96, 1.04))
            geom = _write_fs_subject(subjects_dir, fs_subject, scale)
            src_info = _choose_source(geom, rng)
            label_fname = subjects_dir / fs_subject / "label" / f"lh.{ROI_NAME}.label"
            white = geom["lh"]["white"]
            mne.write_label(
                label_fname,
                mne.Label(src_info["roi"], white[src_info["roi"]] / 1000.0, hemi="lh",
                          subject=fs_subject, comment="demo ROI around the simulated source"),
            )

            # head frame from the MRI fiducials (Neuromag convention)
            # float64: mne-bids cannot write float32 landmarks to JSON
            fid = {k: np.asarray(v, np.float64) / 1000.0 for k, v in geom["fiducials_mm"].items()}
            mri_head = mne.transforms.get_ras_to_neuromag_trans(
                fid["nasion"], fid["lpa"], fid["rpa"]
            )
            trans = mne.transforms.Transform("head", "mri", np.linalg.inv(mri_head))
            head_rr = mne.transforms.apply_trans(mri_head, geom["head"][0] / 1000.0)
            info = make_meg_info(head_rr)
            hsp = head_rr[_farthest_points(head_rr, 120)]
            hsp = hsp[hsp[:, 2] > -0.01]
            montage = mne.channels.make_dig_montage(
                nasion=mne.transforms.apply_trans(mri_head, fid["nasion"]),
                lpa=mne.transforms.apply_trans(mri_head, fid["lpa"]),
                rpa=mne.transforms.apply_trans(mri_head, fid["rpa"]),
                hsp=hsp,
                coord_frame="head",
            )
            info.set_montage(montage)

            # forward of the source patch: single-layer BEM of this subject
            g = geom["lh"]
            depth = SOURCE_DEPTH
            patch = src_info["patch"]
            rr = (g["white"] + depth * (g["pial"] - g["white"]))[patch] / 1000.0
            link = g["white"][patch] - g["pial"][patch]
            nn = link / np.linalg.norm(link, axis=1, keepdims=True)
            src = mne.setup_volume_source_space(
                subject=None, pos=dict(rr=rr, nn=nn), verbose="error"
            )
            model = mne.make_bem_model(fs_subject, ico=4, conductivity=(0.3,),
                                       subjects_dir=subjects_dir)
            bem = mne.make_bem_solution(model)
            fwd = mne.make_forward_solution(info, trans, src, bem, eeg=False, mindist=0.0)
            fwd = mne.convert_forward_solution(fwd, force_fixed=True, surf_ori=True)
            gain = fwd["sol"]["data"]
            amplitude = float(rng.uniform(60e-9, 80e-9))
            raw, events = _simulate_raw(info, gain, amplitude, rng, sub_seed % (2**31))
            raw.set_meas_date(None)

            bids_path = BIDSPath(subject=subject, task=TASK, datatype="meg", root=bids_root)
            write_raw_bids(
                raw, bids_path, events=events, event_id={CONDITION: 1},
                format="FIF", allow_preload=True, overwrite=True,
            )
            landmarks = mne.channels.make_dig_montage(
                nasion=fid["nasion"], lpa=fid["lpa"], rpa=fid["rpa"], coord_frame="ras"
            )
            t1_path = BIDSPath(subject=subject, root=bids_root, datatype="anat", suffix="T1w")
            write_anat(
                image=subjects_dir / fs_subject / "mri" / "T1.mgz",
                bids_path=t1_path, landmarks=landmarks, deface=False, overwrite=True,
            )
            truth[subject] = dict(
                fs_subject=fs_subject,
                hemi="lh",
                vertex=src_info["vertex"],
                patch_vertices=[int(v) for v in patch],
                depth_fraction_from_white=depth,
                orientation="link_vector (pial->white)",
                amplitude_nAm=amplitude * 1e9,
                peak_latency_s=0.1,
                anatomy_scale=scale,
                roi_label=str(label_fname.relative_to(subjects_dir / fs_subject)),
            )
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    truth_path.write_text(json.dumps({"stamp": stamp, "subjects": truth}, indent=2))
    (bids_root / "README").write_text(
        "Offline demo dataset of mne-laminar-plugin: a simulated MEG evoked "
        "response from a known cortical patch (see sourcedata/demo_truth.json), "
        "with a FreeSurfer-style subject built from fsaverage5 surfaces in "
        "derivatives/freesurfer/subjects.\n"
    )
    ignore = bids_root / ".bidsignore"
    ignore.write_text("sourcedata/\n")
    config_path.write_text(config_template(), encoding="utf-8")
    demo.truth = truth
    return demo
