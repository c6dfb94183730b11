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
  (forward model: the subject's single-layer ico-3 BEM) plus coloured sensor noise,
  written with mne-bids, with a T1w image and landmarks so that MBP computes
  the head-MRI transform itself.

Subjects differ by a global scale of the anatomy, the source amplitude and
the noise; everything is deterministic given the seed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._demo_sensors import (
    MEG_SYSTEMS,
    _mne_data,
    fit_sphere,
    head_in_array,
    make_ctf275_info,
    make_info_from_sensors,
    make_opm_info,
    place_on_helmet,
    tangent_frame,
)

DATA_ENV = "MNE_LAMINAR_DATA"
#: Stamp file of a demo folder: the settings it was made with, and whether complete.
STAMP_NAME = ".mne-laminar-demo.json"
TASK = "demo"
CONDITION = "stim"
ROI_NAME = "demo_roi"
SFREQ = 250.0
N_TRIALS = 60
#: where the simulated source sits: depth fraction from white (1 = pial)
SOURCE_DEPTH = 0.75
#: version of the demo dataset (in its stamp): a demo of another version is rebuilt
DEMO_VERSION = 3
SOURCE_TARGET_MM = np.array([-45.0, -22.0, 48.0])  # left central region, fsaverage
#: the second condition: a source on ONE layer of ONE column, as compare_layers' MSP patch
LAYER_CONDITION = "layer"
LAYER_SOURCE = dict(layer=8, n_layers=11, spacing="oct5", fwhm_mm=5.0)  # layer 0 = pial
#: its moment relative to the "stim" source: adjacent layers (0.25 mm apart) need SNR
LAYER_AMPLITUDE_FACTOR = 3.0
COLUMN_ROI_NAME = "demo_column"


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


#: voxel size (mm) and shape of the demo's T1: FreeSurfer's LIA orientation and
#: 256 mm field of view, at 2 mm (a quick demo: 8 times fewer voxels than a
#: conformed 1 mm volume to build, and half the slices in MBP's BEM figure)
T1_VOXEL_MM = 2.0
T1_SHAPE = (128, 128, 128)


def _t1_affine() -> np.ndarray:
    """LIA vox2ras of the demo T1 with c_ras = 0 (equal to its vox2ras_tkr)."""
    d, half = T1_VOXEL_MM, T1_VOXEL_MM * T1_SHAPE[0] / 2
    return np.array([[-d, 0, 0, half], [0, 0, d, -half], [0, -d, 0, half], [0, 0, 0, 1]])


def _fill_surface(rr_mm: np.ndarray, tris: np.ndarray, shape: tuple) -> np.ndarray:
    """Voxels inside a closed surface: rasterise its triangles, fill the shell.

    Each triangle is sampled on a barycentric grid finer than 0.4 voxel along
    its longest edge (triangles grouped by grid size); the fill runs on the
    surface's bounding box only (plus one voxel).
    """
    from scipy import ndimage

    inv = np.linalg.inv(_t1_affine())
    v0, v1, v2 = rr_mm[tris[:, 0]], rr_mm[tris[:, 1]], rr_mm[tris[:, 2]]
    edge = np.max([np.linalg.norm(v1 - v0, axis=1), np.linalg.norm(v2 - v0, axis=1),
                   np.linalg.norm(v2 - v1, axis=1)], axis=0)  # fmt: skip
    grid = np.ceil(edge / (0.4 * T1_VOXEL_MM)).astype(int) + 1
    pts = []
    for n in np.unique(grid):
        sel = grid == n
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        keep = i + j <= n
        a, b = (i[keep] / n)[None, :, None], (j[keep] / n)[None, :, None]
        w0 = v0[sel][:, None]
        pts.append((w0 + a * (v1[sel][:, None] - w0) + b * (v2[sel][:, None] - w0)).reshape(-1, 3))
    pts = np.concatenate(pts)
    vox = np.rint(pts @ inv[:3, :3].T + inv[:3, 3]).astype(int)
    vox = vox[np.all((vox >= 0) & (vox < np.array(shape)), axis=1)]
    out = np.zeros(shape, bool)
    if not len(vox):
        return out
    lo = np.maximum(vox.min(0) - 1, 0)
    hi = np.minimum(vox.max(0) + 2, shape)
    shell = np.zeros(tuple(hi - lo), bool)
    shell[tuple((vox - lo).T)] = True
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    out[box] = ndimage.binary_fill_holes(shell)
    return out


def _write_t1(fname: Path, geom: dict) -> None:
    """A synthetic T1-weighted image whose tissue boundaries are the surfaces."""
    import nibabel as nib
    from scipy import ndimage

    shape = T1_SHAPE
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
    pos, ez = place_on_helmet(helmet, center, lay_xy)
    return names, pos, ez


def make_meg_info(
    head_rr_head: np.ndarray | None = None,
    *,
    sfreq: float = SFREQ,
    min_gap: float | None = None,
    system: str = "vectorview",
):
    """The demo's MEG ``Info``: Vectorview-like, CTF-275 or on-scalp OPM.

    Parameters
    ----------
    head_rr_head : array, shape (n, 3) | None
        Scalp points in head coordinates (m), used to place the head in the
        helmet (device-to-head transform) so that the closest sensor is
        ``min_gap`` from the scalp. None: MNE's fsaverage head.
    sfreq : float
        Sampling frequency.
    min_gap : float | None
        Smallest sensor-to-scalp distance (m); None: 18 mm (Vectorview),
        20 mm (CTF), 6 mm (OPM).
    system : "vectorview" | "ctf275" | "opm"
        The sensor array (see :mod:`mne_laminar_plugin._demo_sensors`).

    Returns
    -------
    info : mne.Info
        With ``dev_head_t`` set, channel locations in device coordinates and
        a ``STI 014`` stim channel. Vectorview: coil types 3024
        (magnetometer) and 3012 (planar gradiometer); CTF-275: axial
        gradiometers (5001), 9 reference channels, grade-3 compensation in
        effect; OPM: radial and tangential magnetometers (8201).
    """
    from mne.io.constants import FIFF
    from mne.utils import _check_option

    _check_option("system", system, MEG_SYSTEMS)
    if system == "ctf275":
        return make_ctf275_info(head_rr_head, sfreq=sfreq, min_gap=min_gap or 0.02)
    if system == "opm":
        return make_opm_info(head_rr_head, sfreq=sfreq, min_gap=min_gap or 0.006)
    import mne

    helmet = mne.read_bem_surfaces(_mne_data() / "helmets" / "306m.fif.gz", verbose="error")[0]
    center_d, _ = fit_sphere(helmet["rr"])
    names, pos, ez = _vectorview_positions(helmet, center_d)
    ex, ey = tangent_frame(ez)
    dev_head_t = head_in_array(pos, center_d, head_rr_head, min_gap or 0.018)
    ch_names, kinds, locs, coils = [], [], [], []
    for k in range(len(pos)):
        mag, grad1, grad2 = names[k]
        for name, kind, exk, eyk in (
            (mag, "mag", ex[k], ey[k]),
            (grad1, "grad", ex[k], ey[k]),
            (grad2, "grad", ey[k], -ex[k]),
        ):
            ch_names.append(name)
            kinds.append(kind)
            locs.append(np.r_[pos[k], exk, eyk, ez[k]])
            coils.append(
                FIFF.FIFFV_COIL_VV_MAG_T3 if kind == "mag" else FIFF.FIFFV_COIL_VV_PLANAR_T1
            )
    return make_info_from_sensors(ch_names, kinds, locs, coils, dev_head_t, sfreq)


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
    meg_picks = mne.pick_types(info, meg=True, ref_meg=False)  # the forward's rows
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


def _layer_source(geom, vertex, subjects_dir, fs_subject):
    """The source of :data:`LAYER_CONDITION`: positions, orientations, weights.

    The model of ``compare_layers`` (MSP) on one layer: the Gaussian geodesic
    patch (FWHM 5 mm, the inverse's own kernel) centred on the oct5 column
    nearest to ``vertex`` on layer ``LAYER_SOURCE["layer"]`` of the 11
    equidistant layers, each source along its column's link vector. Writes
    ``label/lh.demo_column.label`` (that column only, as an ROI for the
    prior) and returns ``rr``, ``nn`` (m, MRI), the kernel weights and the
    truth record.
    """
    import mne

    from .inverse._patches import mesh_edges, patch_kernel
    from .surfaces import LaminarSurfaces

    layer, fwhm = LAYER_SOURCE["layer"], LAYER_SOURCE["fwhm_mm"]
    surf = LaminarSurfaces.from_freesurfer(
        fs_subject, subjects_dir, n_layers=LAYER_SOURCE["n_layers"],
        spacing=LAYER_SOURCE["spacing"], verbose=False,
    )  # fmt: skip
    lh = np.flatnonzero((surf.hemi == "lh") & (surf.thickness() > 2.0))
    near = np.linalg.norm(surf.layers[0, lh] * 1e3 - geom["lh"]["pial"][vertex], axis=1)
    col = int(lh[np.argmin(near)])
    edges = mesh_edges(surf.combined_tris(), surf.n_columns)
    K = patch_kernel(surf.layers[layer] * 1e3, edges, fwhm, [col]).tocoo()
    # the ROI of the prior: this column's vertex and full-resolution neighbours,
    # no other oct5 column
    g = geom["lh"]
    v = int(surf.vertno[col])
    others = np.setdiff1d(surf.vertno[surf.hemi == "lh"], [v])
    verts = np.flatnonzero(np.linalg.norm(g["white"] - g["white"][v], axis=1) < 3.0)
    verts = np.setdiff1d(verts[~g["medial"][verts]], others)
    label_fname = subjects_dir / fs_subject / "label" / f"lh.{COLUMN_ROI_NAME}.label"
    mne.write_label(label_fname, mne.Label(
        verts, g["white"][verts] / 1000.0, hemi="lh", subject=fs_subject,
        comment="demo: the column of the single-layer source"))  # fmt: skip
    truth = dict(
        condition=LAYER_CONDITION, event_id=2, hemi="lh", vertex=v, column=col,
        layer=layer, n_layers=surf.n_layers,
        depth_fraction_from_white=float(surf.fractions[layer]),
        spacing=LAYER_SOURCE["spacing"], patch_fwhm_mm=fwhm,
        patch="compare_layers' MSP patch: Gaussian over geodesic distance on the layer",
        orientation="link_vector (pial->white), each column's own",
        amplitude_nAm=None,  # set by the caller
        peak_latency_s=0.1,
        roi_label=str(label_fname.relative_to(subjects_dir / fs_subject)),
    )  # fmt: skip
    return dict(rr=surf.layers[layer, K.col], nn=surf.layer_orientations(layer)[K.col],
                weights=K.data, truth=truth)  # fmt: skip


def _layer_condition(raw, events, info, gain, weights, amplitude, rng, seed):
    """Append the trials of :data:`LAYER_CONDITION` (event 2) to ``raw``.

    ``gain`` is the fixed-orientation forward of the sources of
    :func:`_layer_source` and ``weights`` their kernel weights.
    """
    import mne

    # _simulate_raw splits the moment evenly: weight the sources by the kernel
    raw2, events2 = _simulate_raw(info, gain * (weights * len(weights)), amplitude, rng, seed)
    events2[:, 0] += len(raw.times)
    events2[:, 2] = 2
    raw = mne.concatenate_raws([raw, raw2])
    raw.set_annotations(None)  # no boundary: no epoch spans the junction
    return raw, np.concatenate([events, events2])


# ------------------------------------------------------------------ main
def make_demo_dataset(
    root: str | os.PathLike,
    *,
    n_subjects: int = 1,
    seed: int = 42,
    overwrite: bool = False,
    system: str = "vectorview",
    verbose: str | None = "error",
    progress: bool = False,
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
        Rebuild (delete ``root/bids`` and replace ``root/demo_config.py``)
        whatever ``root`` holds. Without it, ``root`` must be empty (or not
        exist) or hold a demo this package made with the same settings (the
        stamp file ``root/.mne-laminar-demo.json``); anything else raises
        :class:`FileExistsError` and nothing is deleted.
    system : "vectorview" | "ctf275" | "opm"
        The MEG array (:func:`make_meg_info`): 306 Vectorview-like channels,
        CTF-275 with references and grade-3 compensation, or on-scalp OPMs.
    verbose : str | None
        MNE log level while writing.
    progress : bool
        Print one line per stage of each subject (``mne-laminar demo`` does).

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
    from mne.utils import _check_option

    _check_option("system", system, MEG_SYSTEMS)
    stamp = dict(n_subjects=n_subjects, seed=seed, version=DEMO_VERSION)
    if system != "vectorview":  # (Vectorview stamps stay as they were)
        stamp["system"] = system
    have_stamp = _read_stamp(root)
    if have_stamp is None and truth_path.is_file():  # demos made before the stamp file
        with contextlib.suppress(OSError, ValueError, AttributeError):
            old = json.loads(truth_path.read_text()).get("stamp")
            if isinstance(old, dict):
                have_stamp = dict(old, complete=config_path.is_file())
    if not overwrite and have_stamp == dict(stamp, complete=True):
        if truth_path.is_file() and config_path.is_file():
            with contextlib.suppress(ValueError, KeyError):
                demo.truth = json.loads(truth_path.read_text())["subjects"]
                return demo
    if not overwrite:
        _check_demo_root(root, stamp, have_stamp)
    root.mkdir(parents=True, exist_ok=True)
    _write_stamp(root, dict(stamp, complete=False))
    if bids_root.exists():
        shutil.rmtree(bids_root)
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
        t_start = time.perf_counter()

        def _say(msg: str) -> None:
            if progress:
                print(f"[{time.perf_counter() - t_start:5.1f} s] {msg}", flush=True)

        _say(f"Building the demo dataset ({n_subjects} subject(s)) in {root}")
        for subject in subjects:
            sub_seed = int(rng_master.integers(0, 2**31 - 1))
            rng = np.random.default_rng(sub_seed)
            fs_subject = f"sub-{subject}"
            scale = float(rng.uniform(0.96, 1.04))
            _say(f"sub-{subject}: FreeSurfer subject (surfaces, BEM surfaces, T1)")
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
            info = make_meg_info(head_rr, system=system)
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

            # the sources: the patch of "stim" (at SOURCE_DEPTH) and the single-layer
            # model patch of "layer", in one forward (single-layer BEM of this subject)
            g = geom["lh"]
            depth = SOURCE_DEPTH
            patch = src_info["patch"]
            rr = (g["white"] + depth * (g["pial"] - g["white"]))[patch] / 1000.0
            link = g["white"][patch] - g["pial"][patch]
            nn = link / np.linalg.norm(link, axis=1, keepdims=True)
            layer_src = _layer_source(geom, src_info["vertex"], subjects_dir, fs_subject)
            src = mne.setup_volume_source_space(
                subject=None, pos=dict(rr=np.concatenate([rr, layer_src["rr"]]),
                                       nn=np.concatenate([nn, layer_src["nn"]])),
                verbose="error",
            )  # fmt: skip
            # ico-3 (1280 triangles): a different (coarser) BEM than MBP's ico-4
            # one, so that the demo's inverse does not use the simulation's model
            _say(f"sub-{subject}: forward model of the sources (1-layer ico-3 BEM)")
            model = mne.make_bem_model(fs_subject, ico=3, conductivity=(0.3,),
                                       subjects_dir=subjects_dir)
            bem = mne.make_bem_solution(model)
            fwd = mne.make_forward_solution(info, trans, src, bem, eeg=False, mindist=0.0)
            fwd = mne.convert_forward_solution(fwd, force_fixed=True, surf_ori=True)
            gain = fwd["sol"]["data"]
            if gain.shape[1] != len(rr) + len(layer_src["rr"]):  # pragma: no cover
                raise RuntimeError("a simulated source of the demo lies outside the inner skull")
            amplitude = float(rng.uniform(60e-9, 80e-9))
            raw, events = _simulate_raw(info, gain[:, : len(rr)], amplitude, rng,
                                        sub_seed % (2**31))  # fmt: skip
            amplitude_layer = amplitude * LAYER_AMPLITUDE_FACTOR
            raw, events = _layer_condition(
                raw, events, info, gain[:, len(rr):], layer_src["weights"], amplitude_layer,
                rng, (sub_seed + 1) % (2**31),
            )  # fmt: skip
            layer_truth = dict(layer_src["truth"], amplitude_nAm=amplitude_layer * 1e9)
            raw.set_meas_date(None)

            bids_path = BIDSPath(subject=subject, task=TASK, datatype="meg", root=bids_root)
            _say(f"sub-{subject}: writing {N_TRIALS} simulated trials as BIDS (MEG, T1w)")
            write_raw_bids(
                raw, bids_path, events=events, event_id={CONDITION: 1, LAYER_CONDITION: 2},
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
                meg_system=system,
                amplitude_nAm=amplitude * 1e9,
                peak_latency_s=0.1,
                anatomy_scale=scale,
                roi_label=str(label_fname.relative_to(subjects_dir / fs_subject)),
                layer_source=layer_truth,
            )
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    truth_path.write_text(json.dumps({"stamp": stamp, "subjects": truth}, indent=2))
    (bids_root / "README").write_text(
        "Offline demo dataset of mne-laminar-plugin: a simulated MEG evoked "
        "response from a known cortical patch (condition 'stim'), and a condition "
        "'layer' whose source sits on ONE layer of ONE column: layer 8 of 11 "
        "(0 = pial, 10 = white; depth fraction 0.2 from white), the model patch of "
        "laminar/model_comparison (FWHM 5 mm) at the column of the ROI "
        "label/lh.demo_column.label (see sourcedata/demo_truth.json), "
        "with a FreeSurfer-style subject built from fsaverage5 surfaces in "
        "derivatives/freesurfer/subjects.\n"
    )
    ignore = bids_root / ".bidsignore"
    ignore.write_text("sourcedata/\n")
    config_path.write_text(config_template(), encoding="utf-8")
    _write_stamp(root, dict(stamp, complete=True))
    demo.truth = truth
    return demo


def _read_stamp(root: Path) -> dict | None:
    try:
        have = json.loads((root / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return have if isinstance(have, dict) else None


def _write_stamp(root: Path, stamp: dict) -> None:
    from .bids import write_json

    write_json(root / STAMP_NAME, stamp)


def _check_demo_root(root: Path, stamp: dict, have: dict | None) -> None:
    """Refuse to delete or replace anything in ``root`` that is not our demo.

    ``root`` may be missing or empty, or hold a demo made with the same
    settings (complete or interrupted).
    """
    if not root.exists():
        return
    if not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder; choose another folder.")
    if have is not None and {k: have.get(k) for k in stamp} == stamp:
        return  # our own demo with these settings (possibly interrupted)
    entries = sorted(p.name for p in root.iterdir())
    if not entries:
        return
    shown = ", ".join(entries[:10]) + (" ..." if len(entries) > 10 else "")
    if have is not None:
        why = (
            f"it holds a demo made with other settings (n_subjects="
            f"{have.get('n_subjects')}, seed={have.get('seed')}; asked: "
            f"n_subjects={stamp['n_subjects']}, seed={stamp['seed']}), whose "
            "bids/ folder (with its derivatives) would be deleted"
        )
    else:
        why = (
            "it is not empty and is not a demo made by mne-laminar (no "
            f"{STAMP_NAME}); bids/ would be deleted and demo_config.py replaced"
        )
    raise FileExistsError(
        f"Refusing to write the demo in {root}: {why}. It holds: {shown}. Choose an "
        "empty or new folder, or pass --overwrite (overwrite=True) to replace it."
    )


def _main(argv: list[str]) -> int:
    """``python -m mne_laminar_plugin.demo KWARGS``: build a demo (``mne-laminar demo``).

    ``KWARGS`` is the JSON of :func:`make_demo_dataset`'s arguments (``root``
    included). Exit code 2 with the message on stderr when the folder holds
    something else.
    """
    import sys

    kwargs = json.loads(argv[0])
    try:
        make_demo_dataset(kwargs.pop("root"), **kwargs)
    except FileExistsError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
