"""Small FreeSurfer subjects for tests, written from shipped data only.

Two builders, both returning a :class:`FsSubject` that records what was
written (so tests can compare against the analytic geometry):

``make_sphere_subject``
    Concentric spheres per hemisphere, built from an MNE icosahedron:
    ``?h.white`` of radius ``r_white`` and ``?h.pial`` of radius ``r_pial``
    (mm, same vertex order and faces), ``?h.sphere`` (radius 100), optionally
    ``?h.thickness``, ``label/?h.cortex.label``, ``label/?h.aparc.annot`` and a
    small synthetic ``mri/T1.mgz``. A "medial wall" (the cap of the sphere
    facing the midline) can be given zero thickness (pial == white there), as
    FreeSurfer does.

``make_fsaverage5_subject``
    nilearn's fsaverage5 (10,242 vertices per hemisphere; shipped in
    ``nilearn/datasets/data/fsaverage5``) written as FreeSurfer surfaces with
    :func:`nibabel.freesurfer.write_geometry`. Its medial wall has pial ==
    white, so the zero-thickness mask route applies; a cortex label (non-zero
    white-pial distance) and an aparc (label 0 "unknown" on the medial wall)
    can be written too.

Both builders write coordinates as FreeSurfer does (float32, mm, surface RAS).
Import from tests as ``from _fs_fixtures import make_sphere_subject`` (the
tests folder is on ``sys.path`` under pytest's default rootdir-based import
mode) or ``from tests._fs_fixtures import ...``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

HEMIS = ("lh", "rh")
SPHERE_RADIUS = 100.0  # FreeSurfer ?h.sphere radius (mm)


@dataclass
class FsSubject:
    """What a fixture builder wrote.

    Attributes
    ----------
    subjects_dir : Path
    subject : str
    white, pial : dict of hemi -> (n_vertices, 3) float64 mm, as stored
        (i.e. after the float32 round trip of the FreeSurfer format).
    tris : dict of hemi -> (n_tris, 3) int
    center : dict of hemi -> (3,) mm, centre of the spheres (sphere subject).
    r_white, r_pial : float | None, radii in mm (sphere subject).
    medial : dict of hemi -> bool (n_vertices,), the medial-wall vertices.
    files : dict of name -> Path, every file written.
    """

    subjects_dir: Path
    subject: str
    white: dict = field(default_factory=dict)
    pial: dict = field(default_factory=dict)
    tris: dict = field(default_factory=dict)
    center: dict = field(default_factory=dict)
    r_white: float | None = None
    r_pial: float | None = None
    medial: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)

    @property
    def surf_dir(self) -> Path:
        return self.subjects_dir / self.subject / "surf"

    @property
    def label_dir(self) -> Path:
        return self.subjects_dir / self.subject / "label"


# ------------------------------------------------------------------ writers
def write_surface(fname, rr_mm, tris, *, volume_info=None) -> Path:
    """Write a FreeSurfer triangle surface (mm, float32 as FreeSurfer does)."""
    fname = Path(fname)
    fname.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {}
    if volume_info is not None:
        kwargs["volume_info"] = volume_info
    nib.freesurfer.write_geometry(
        str(fname), np.asarray(rr_mm, np.float64), np.asarray(tris, np.int32), **kwargs
    )
    return fname


def write_label(fname, vertices, rr_mm, *, subject="") -> Path:
    """Write a FreeSurfer ``.label`` file (ASCII: vertex x y z value)."""
    fname = Path(fname)
    fname.parent.mkdir(parents=True, exist_ok=True)
    vertices = np.asarray(vertices, int)
    data = np.column_stack(
        [vertices, np.asarray(rr_mm, float)[vertices], np.zeros(len(vertices))]
    )
    header = f"#!ascii label , from subject {subject} vox2ras=TkReg\n{len(vertices)}"
    np.savetxt(fname, data, fmt="%d %.6f %.6f %.6f %.6f", header=header, comments="")
    return fname


def write_aparc(fname, medial) -> Path:
    """Write a 2-region ``aparc.annot``: "unknown" (index 0) on the medial wall.

    Non-medial vertices get "superiorfrontal" (index 1). Every vertex has a
    label, so only the name/index rule marks the medial wall.
    """
    fname = Path(fname)
    fname.parent.mkdir(parents=True, exist_ok=True)
    labels = np.where(np.asarray(medial, bool), 0, 1).astype(np.int32)
    ctab = np.array([[25, 5, 25, 0, 0], [20, 220, 160, 0, 0]], np.int32)
    names = [b"unknown", b"superiorfrontal"]
    nib.freesurfer.write_annot(str(fname), labels, ctab, names, fill_ctab=True)
    return fname


def write_t1(fname, *, centers, radius, size=96, voxel_mm=2.0) -> Path:
    """Write a small conformed-orientation (LIA) ``T1.mgz``.

    Intensity 110 inside the spheres of ``radius`` around ``centers`` (white
    matter-like), 60 in a 6 mm shell outside (grey matter-like), 0 elsewhere.
    Its tkRAS (``vox2ras_tkr``) is centred on the volume, like FreeSurfer's.
    """
    fname = Path(fname)
    fname.parent.mkdir(parents=True, exist_ok=True)
    # LIA: i -> -x, j -> -z, k -> +y
    affine = np.array(
        [
            [-voxel_mm, 0, 0, 0],
            [0, 0, voxel_mm, 0],
            [0, -voxel_mm, 0, 0],
            [0, 0, 0, 1],
        ],
        float,
    )
    affine[:3, 3] = -affine[:3, :3] @ (np.full(3, size / 2.0))
    img = nib.MGHImage(np.zeros((size,) * 3, np.uint8), affine)
    tkr = img.header.get_vox2ras_tkr()
    ijk = np.stack(np.meshgrid(*(np.arange(size),) * 3, indexing="ij"), -1)
    xyz = ijk.reshape(-1, 3) @ tkr[:3, :3].T + tkr[:3, 3]
    data = np.zeros(len(xyz), np.uint8)
    for center in centers:
        dist = np.linalg.norm(xyz - np.asarray(center, float), axis=1)
        data[(dist <= radius + 6) & (data == 0)] = 60
        data[dist <= radius] = 110
    img = nib.MGHImage(data.reshape((size,) * 3), affine)
    nib.save(img, fname)
    return fname


# ------------------------------------------------------------------ builders
def _ico(grade):
    from mne.surface import _get_ico_surface

    surf = _get_ico_surface(grade)
    rr = surf["rr"] / np.linalg.norm(surf["rr"], axis=1, keepdims=True)
    return rr, surf["tris"].astype(np.int64)


def _reread(fname):
    rr, tris = nib.freesurfer.read_geometry(str(fname))
    return rr.astype(np.float64), tris.astype(np.int64)


def make_sphere_subject(
    subjects_dir,
    subject="spheres",
    *,
    grade=3,
    r_white=30.0,
    r_pial=33.0,
    center_x=40.0,
    medial_cos=0.8,
    zero_medial=False,
    thickness=True,
    cortex_label=False,
    aparc=False,
    t1=False,
    sphere=True,
) -> FsSubject:
    """Write a FreeSurfer subject whose white/pial are concentric spheres.

    Parameters
    ----------
    subjects_dir : path-like
    subject : str
    grade : int
        Icosahedron grade of the full-resolution mesh (3: 642 vertices,
        4: 2,562, 5: 10,242 per hemisphere).
    r_white, r_pial : float
        Radii (mm). ``lh`` is centred at ``(-center_x, 0, 0)``, ``rh`` at
        ``(+center_x, 0, 0)``.
    medial_cos : float
        Vertices whose unit direction has a component towards the midline
        greater than this form the "medial wall".
    zero_medial : bool
        Put the pial surface on the white surface on the medial wall.
    thickness, cortex_label, aparc, t1, sphere : bool
        Which extra files to write (``?h.thickness``, ``label/?h.cortex.label``
        (non-medial vertices), ``label/?h.aparc.annot`` (medial = "unknown"),
        ``mri/T1.mgz``, ``surf/?h.sphere``).
    """
    subjects_dir = Path(subjects_dir)
    out = FsSubject(subjects_dir, subject, r_white=float(r_white), r_pial=float(r_pial))
    unit, tris = _ico(grade)
    for hemi, sign in zip(HEMIS, (-1.0, 1.0)):
        center = np.array([sign * center_x, 0.0, 0.0])
        medial = (-sign * unit[:, 0]) > medial_cos  # faces the midline
        white = center + r_white * unit
        pial = center + r_pial * unit
        if zero_medial:
            pial[medial] = white[medial]
        surf = out.surf_dir
        out.files[f"{hemi}.white"] = write_surface(surf / f"{hemi}.white", white, tris)
        out.files[f"{hemi}.pial"] = write_surface(surf / f"{hemi}.pial", pial, tris)
        if sphere:
            out.files[f"{hemi}.sphere"] = write_surface(
                surf / f"{hemi}.sphere", SPHERE_RADIUS * unit, tris
            )
        out.white[hemi], out.tris[hemi] = _reread(out.files[f"{hemi}.white"])
        out.pial[hemi] = _reread(out.files[f"{hemi}.pial"])[0]
        out.center[hemi] = center
        out.medial[hemi] = medial
        if thickness:
            thick = np.linalg.norm(out.pial[hemi] - out.white[hemi], axis=1)
            fname = surf / f"{hemi}.thickness"
            nib.freesurfer.write_morph_data(str(fname), thick.astype(np.float32))
            out.files[f"{hemi}.thickness"] = fname
        if cortex_label:
            out.files[f"{hemi}.cortex.label"] = write_label(
                out.label_dir / f"{hemi}.cortex.label",
                np.where(~medial)[0],
                out.white[hemi],
                subject=subject,
            )
        if aparc:
            out.files[f"{hemi}.aparc.annot"] = write_aparc(
                out.label_dir / f"{hemi}.aparc.annot", medial
            )
    if t1:
        out.files["T1.mgz"] = write_t1(
            subjects_dir / subject / "mri" / "T1.mgz",
            centers=[out.center[h] for h in HEMIS],
            radius=r_white,
        )
    return out


def fsaverage5_dir() -> Path:
    """nilearn's shipped fsaverage5 GIFTI folder."""
    import nilearn

    return Path(nilearn.__file__).parent / "datasets" / "data" / "fsaverage5"


def subdivide(rr, tris, *, radius=None):
    """One 1-to-4 midpoint subdivision of a triangle mesh (vectorised).

    New vertices (edge midpoints) are appended after the old ones, in the
    order of ``np.unique`` over the sorted edges, so two meshes with the same
    faces (white and pial) stay in vertex correspondence. With ``radius``,
    new vertices are projected onto the sphere of that radius (for
    ``?h.sphere``).

    Returns
    -------
    rr : array, shape (n_vertices + n_edges, 3)
    tris : array, shape (4 * n_tris, 3)
        Same winding as the input.
    """
    rr = np.asarray(rr, np.float64)
    tris = np.asarray(tris, np.int64)
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    uniq, inv = np.unique(np.sort(edges, axis=1), axis=0, return_inverse=True)
    mid = (rr[uniq[:, 0]] + rr[uniq[:, 1]]) / 2
    if radius is not None:
        mid *= radius / np.linalg.norm(mid, axis=1, keepdims=True)
    m = len(rr) + inv.reshape(3, -1).T  # midpoints of edges 01, 12, 20 per face
    a, b, c = tris.T
    new = np.concatenate(
        [
            np.column_stack([a, m[:, 0], m[:, 2]]),
            np.column_stack([m[:, 0], b, m[:, 1]]),
            np.column_stack([m[:, 2], m[:, 1], c]),
            m,
        ]
    )
    return np.concatenate([rr, mid]), new


def make_fsaverage5_subject(
    subjects_dir,
    subject="fs5",
    *,
    cortex_label=False,
    aparc=False,
    thickness=True,
    sphere=True,
    n_subdivide=0,
) -> FsSubject:
    """Write nilearn's fsaverage5 as a FreeSurfer subject (10,242 vertices/hemi).

    The medial wall (pial == white in fsaverage5, 285/ 10,242 vertices in lh)
    is recorded in ``medial``; ``cortex_label`` writes the complement and
    ``aparc`` marks it "unknown". ``n_subdivide`` midpoint subdivisions
    (:func:`subdivide`) give 40,962 (1) or 163,842 (2) vertices per
    hemisphere, i.e. full FreeSurfer resolution, for benchmarks; the
    thickness file is then not written.
    """
    subjects_dir = Path(subjects_dir)
    src = fsaverage5_dir()
    out = FsSubject(subjects_dir, subject)
    thickness = thickness and not n_subdivide
    for hemi, side in zip(HEMIS, ("left", "right")):
        for kind, name in (("white", "white"), ("pial", "pial"), ("sphere", "sphere")):
            if kind == "sphere" and not sphere:
                continue
            gii = nib.load(src / f"{name}_{side}.gii.gz")
            rr = gii.agg_data("NIFTI_INTENT_POINTSET")
            tris = gii.agg_data("NIFTI_INTENT_TRIANGLE")
            for _ in range(n_subdivide):
                rad = SPHERE_RADIUS if kind == "sphere" else None
                rr, tris = subdivide(rr, tris, radius=rad)
            out.files[f"{hemi}.{kind}"] = write_surface(
                out.surf_dir / f"{hemi}.{kind}", rr, tris
            )
        out.white[hemi], out.tris[hemi] = _reread(out.files[f"{hemi}.white"])
        out.pial[hemi] = _reread(out.files[f"{hemi}.pial"])[0]
        dist = np.linalg.norm(out.pial[hemi] - out.white[hemi], axis=1)
        out.medial[hemi] = dist == 0
        if thickness:
            thick = nib.load(src / f"thick_{side}.gii.gz").agg_data()
            fname = out.surf_dir / f"{hemi}.thickness"
            nib.freesurfer.write_morph_data(str(fname), np.asarray(thick, np.float32))
            out.files[f"{hemi}.thickness"] = fname
        if cortex_label:
            out.files[f"{hemi}.cortex.label"] = write_label(
                out.label_dir / f"{hemi}.cortex.label",
                np.where(~out.medial[hemi])[0],
                out.white[hemi],
                subject=subject,
            )
        if aparc:
            out.files[f"{hemi}.aparc.annot"] = write_aparc(
                out.label_dir / f"{hemi}.aparc.annot", out.medial[hemi]
            )
    return out
