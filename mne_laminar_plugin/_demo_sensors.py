"""MEG sensor arrays of the demo: Vectorview-like, CTF-275 and on-scalp OPM.

Built from what MNE ships (helmets, layouts, coil definitions), so nothing is
downloaded:

- ``vectorview``: 102 triplets (magnetometer + two planar gradiometers) on
  the ``306m`` helmet, named and placed from the ``Vectorview-all`` layout;
- ``ctf275``: 275 first-order axial gradiometers (coil 5001, 50 mm baseline,
  outward) on the ``CTF_275`` helmet, named and placed from the ``CTF-275``
  layout, with CTF's reference array (3 magnetometers, 3 diagonal and 3
  off-diagonal gradiometers in the dewar above the helmet) and a grade-3
  (``G3BR``) synthetic-gradiometer compensation in effect, as a CTF
  recording has it. The compensation coefficients cancel the environmental
  field model of a synthetic third-order gradiometer: uniform fields and
  uniform field gradients (8 patterns), least squares over the references;
- ``opm``: on-scalp optically pumped magnetometers in the directions of MNE's
  bundled Kernel Flux module positions, each ``min_gap`` outside the scalp,
  two channels per position: radial (``OPM-<module>-Z``) and tangential
  (``-Y``) axes
  (coil ``KERNEL_OPM_MAG_GEN1``); device frame = head frame.

Helmet systems: the head is put in the array by a translation (device ->
head) so the closest sensor is ``min_gap`` from the scalp.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._conventions import MEG_SYSTEMS  # noqa: F401  (re-exported for the demo)
#: CTF's ctfkind code of grade-3 compensation ("G3BR").
CTF_G3BR = int("47334252", 16)


def _mne_data() -> Path:
    import mne

    return Path(mne.__file__).parent / "data"


def fit_sphere(rr: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through points: (centre, radius)."""
    # linear least squares: |x|^2 = 2 c.x + (r^2 - |c|^2)
    A = np.c_[2 * rr, np.ones(len(rr))]
    sol = np.linalg.lstsq(A, (rr**2).sum(1), rcond=None)[0]
    center = sol[:3]
    return center, float(np.sqrt(sol[3] + center @ center))


def place_on_helmet(helmet: dict, center: np.ndarray, lay_xy: np.ndarray, *,
                    extent=98, n_sub=8):  # fmt: skip
    """Positions and outward normals on a helmet for 2D layout positions.

    Each layout point is placed where it falls on an azimuthal projection of
    the (densified: ``n_sub`` steps per triangle edge) helmet surface, the
    layout scaled to the ``extent`` percentile of the projection, so names
    and topography agree with MNE's layouts.
    """
    rr, nn, tris = helmet["rr"], helmet["nn"], helmet["tris"]
    n = n_sub
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
    scale = np.percentile(np.abs(proj[top]), extent, axis=0) / np.abs(lay_c).max(0)
    target = lay_c * scale
    idx = np.argmin(((proj[:, None, :] - target[None]) ** 2).sum(-1), axis=0)
    pos = pts[idx]
    ez = nrm[idx] * np.sign(np.sum(nrm[idx] * (pos - center), axis=1))[:, None]
    ez /= np.linalg.norm(ez, axis=1, keepdims=True)
    return pos, ez


def tangent_frame(ez):
    """Unit ex, ey orthogonal to each unit ez (right-handed)."""
    ref = np.where(np.abs(ez[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    ex = np.cross(ref, ez)
    ex /= np.linalg.norm(ex, axis=1, keepdims=True)
    return ex, np.cross(ez, ex)


def default_head():
    """Scalp points of MNE's fsaverage head, head frame (m)."""
    import mne

    head = mne.read_bem_surfaces(_mne_data() / "fsaverage" / "fsaverage-head.fif",
                                 verbose="error")[0]  # fmt: skip
    trans = mne.read_trans(_mne_data() / "fsaverage" / "fsaverage-trans.fif")
    return mne.transforms.apply_trans(np.linalg.inv(trans["trans"]), head["rr"])


def head_in_array(pos_dev, center_dev, head_rr_head, min_gap):
    """Device -> head (4x4): helmet centre on the scalp's, then down until ``min_gap``."""
    from scipy.spatial import cKDTree

    if head_rr_head is None:
        head_rr_head = default_head()
    top = head_rr_head[head_rr_head[:, 2] > np.percentile(head_rr_head[:, 2], 40)]
    center_h, _ = fit_sphere(top)
    tree = cKDTree(head_rr_head)
    best = None
    for dz in np.arange(0.0, 0.08, 0.001):
        t = center_h - center_dev + np.array([0.0, 0.0, dz])
        dist = tree.query(pos_dev + t)[0].min()
        best = t
        if dist >= min_gap:
            break
    dev_head_t = np.eye(4)
    dev_head_t[:3, 3] = best
    return dev_head_t


def make_info_from_sensors(ch_names, kinds, locs, coils, dev_head_t, sfreq):
    """An Info with MEG channels in device coordinates and a ``STI 014``."""
    import mne
    from mne.io.constants import FIFF

    types = ["ref_meg" if k == "ref" else "mag" if k == "mag" else k for k in kinds]
    info = mne.create_info(list(ch_names) + ["STI 014"], sfreq, types + ["stim"])
    with info._unlock():
        for ch, loc, coil in zip(info["chs"], locs, coils):
            ch["loc"][:] = loc
            ch["coil_type"] = int(coil)
            ch["coord_frame"] = FIFF.FIFFV_COORD_DEVICE
        info["dev_head_t"] = mne.transforms.Transform("meg", "head", dev_head_t)
        info["line_freq"] = 50.0
    return info


# ------------------------------------------------------------------ CTF
def _ctf_references(center_dev, top_z):
    """CTF's reference array: names, kinds, locs, coil types (device frame)."""
    from mne.io.constants import FIFF

    base = center_dev + np.array([0.0, 0.0, top_z + 0.06])
    eye = np.eye(3)
    names, locs, coils = [], [], []
    for i, axis in enumerate("123"):  # reference magnetometers along x, y, z
        ez = eye[i]
        ex, ey = eye[(i + 1) % 3], eye[(i + 2) % 3]
        names.append(f"BR{axis}")
        locs.append(np.r_[base + 0.02 * eye[i], ex, ey, ez])
        coils.append(FIFF.FIFFV_COIL_CTF_REF_MAG)
    for i, axis in enumerate("123"):  # diagonal gradiometers (baseline along ez)
        ez = eye[i]
        ex, ey = eye[(i + 1) % 3], eye[(i + 2) % 3]
        names.append(f"G{axis}{axis}")
        locs.append(np.r_[base - 0.03 * eye[i] + [0, 0, 0.04], ex, ey, ez])
        coils.append(FIFF.FIFFV_COIL_CTF_REF_GRAD)
    for i, (a, b) in enumerate(((0, 1), (1, 2), (0, 2))):  # off-diagonal
        ez, ex = eye[a], eye[b]
        ey = np.cross(ez, ex)
        names.append(f"P{a + 1}{b + 1}")
        locs.append(np.r_[base + [0.03 * (i - 1), 0.03, 0.08], ex, ey, ez])
        coils.append(FIFF.FIFFV_COIL_CTF_OFFDIAG_REF_GRAD)
    return names, locs, coils


def _environment_response(chs):
    """Response of each channel to uniform fields and uniform gradients (8 patterns)."""
    from mne.forward._make_forward import _create_meg_coils

    patterns = [("B", np.eye(3)[i]) for i in range(3)]
    for i, j in ((0, 1), (1, 2), (0, 2)):  # symmetric off-diagonal gradients
        g = np.zeros((3, 3))
        g[i, j] = g[j, i] = 1.0
        patterns.append(("G", g))
    for i in range(2):  # traceless diagonal gradients
        g = np.zeros((3, 3))
        g[i, i], g[2, 2] = 1.0, -1.0
        patterns.append(("G", g))
    coils = _create_meg_coils(chs, "accurate")
    out = np.zeros((len(chs), len(patterns)))
    for k, coil in enumerate(coils):
        rmag, cosmag, w = coil["rmag"], coil["cosmag"], coil["w"]
        for p, (kind, val) in enumerate(patterns):
            field = np.broadcast_to(val, rmag.shape) if kind == "B" else rmag @ val.T
            out[k, p] = np.sum(w * np.sum(cosmag * field, axis=1))
    return out


def make_ctf275_info(head_rr_head=None, *, sfreq=250.0, min_gap=0.02):
    """A CTF-275 ``Info``: axial gradiometers, references, grade-3 compensation.

    Parameters
    ----------
    head_rr_head : array, shape (n, 3) | None
        Scalp points (head frame, m); None: MNE's fsaverage head.
    sfreq : float
    min_gap : float
        Smallest sensor-to-scalp distance (m).

    Returns
    -------
    info : mne.Info
        275 MEG channels (coil 5001 with grade 3 in effect), 9 reference
        channels, the ``G3BR`` compensation matrix in ``info["comps"]``.
    """
    import mne
    from mne.io.constants import FIFF

    helmet = mne.read_bem_surfaces(_mne_data() / "helmets" / "CTF_275.fif.gz",
                                   verbose="error")[0]  # fmt: skip
    center_d, _ = fit_sphere(helmet["rr"])
    lay = mne.channels.read_layout("CTF-275")
    lay_xy = lay.pos[:, :2] + lay.pos[:, 2:] / 2.0
    # denser and inside the rim, so that no two of the 275 sensors coincide
    pos, ez = place_on_helmet(helmet, center_d, lay_xy, extent=90, n_sub=24)
    ex, ey = tangent_frame(ez)
    names = [n.split("-")[0] for n in lay.names]
    locs = [np.r_[p, x, y, z] for p, x, y, z in zip(pos, ex, ey, ez)]
    grade3 = FIFF.FIFFV_COIL_CTF_GRAD + (3 << 16)
    ref_names, ref_locs, ref_coils = _ctf_references(center_d, (pos - center_d)[:, 2].max())
    dev_head_t = head_in_array(pos, center_d, head_rr_head, min_gap)
    info = make_info_from_sensors(
        names + ref_names, ["mag"] * len(names) + ["ref"] * len(ref_names),
        locs + ref_locs, [grade3] * len(names) + ref_coils, dev_head_t, sfreq,
    )  # fmt: skip
    meg = mne.pick_types(info, meg=True, ref_meg=False)
    ref = mne.pick_types(info, meg=False, ref_meg=True)
    resp = _environment_response([info["chs"][i] for i in np.r_[meg, ref]])
    m_resp, r_resp = resp[: len(meg)], resp[len(meg):]
    coef = m_resp @ np.linalg.pinv(r_resp)  # raw - coef @ refs cancels the environment
    comp = dict(
        ctfkind=CTF_G3BR, kind=3, save_calibrated=True,
        rowcals=np.ones(len(meg)), colcals=np.ones(len(ref)),
        data=dict(nrow=len(meg), ncol=len(ref), row_names=[names[i] for i in range(len(meg))],
                  col_names=list(ref_names), data=coef),
    )  # fmt: skip
    with info._unlock():
        info["comps"] = [comp]
    return info


# ------------------------------------------------------------------ OPM
def make_opm_info(head_rr_head=None, *, sfreq=250.0, min_gap=0.006):
    """On-scalp OPMs at Kernel Flux module positions: radial and tangential axes.

    Parameters
    ----------
    head_rr_head, sfreq
        As :func:`make_ctf275_info`.
    min_gap : float
        Distance of each sensor from the scalp along its radial axis (m).

    Returns
    -------
    info : mne.Info
        Two magnetometer channels per module position (``OPM-<module>-Z``
        radial, ``OPM-<module>-Y`` tangential), coil ``KERNEL_OPM_MAG_GEN1``.
    """
    from mne.io.constants import FIFF

    pos_map = json.loads((_mne_data() / "helmets" / "Kernel_Flux_ch_pos.txt").read_text())
    modules = sorted(pos_map)
    kernel = np.array([pos_map[m] for m in modules], float)
    center_k, _ = fit_sphere(kernel)
    ez = kernel - center_k
    ez /= np.linalg.norm(ez, axis=1, keepdims=True)
    # on the scalp: each module along its direction from the head's centre,
    # min_gap outside the farthest scalp point within ~6 degrees of that ray
    head = default_head() if head_rr_head is None else np.asarray(head_rr_head, float)
    top = head[head[:, 2] > np.percentile(head[:, 2], 40)]
    center_h, _ = fit_sphere(top)
    d = head - center_h
    dist = np.linalg.norm(d, axis=1)
    cos = (d / dist[:, None]) @ ez.T  # (n_scalp, n_modules)
    reach = np.where(cos > 0.995, dist[:, None] * cos, 0.0).max(axis=0)
    pos = center_h + (reach + min_gap)[:, None] * ez  # head frame = device frame
    ex, ey = tangent_frame(ez)
    names, locs = [], []
    for m, p, x, y, z in zip(modules, pos, ex, ey, ez):
        # not "<module>..." names: MNE would warp its Kernel helmet onto them
        names += [f"OPM-{m}-Z", f"OPM-{m}-Y"]
        locs += [np.r_[p, x, y, z], np.r_[p, z, x, y]]  # coil normal = 3rd axis: ez, then ey
    return make_info_from_sensors(
        names, ["mag"] * len(names), locs,
        [FIFF.FIFFV_COIL_KERNEL_OPM_MAG_GEN1] * len(names), np.eye(4), sfreq,
    )  # fmt: skip
