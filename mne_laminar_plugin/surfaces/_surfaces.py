"""Cortical layer surfaces with column correspondence: :class:`LaminarSurfaces`.

Layers are interpolated between a FreeSurfer subject's ``?h.pial`` and
``?h.white`` along the straight line joining corresponding vertices, so vertex
*i* is the same cortical column at every depth. Conventions (see
``docs/architecture.md``):

- layer 0 is pial (most superficial), layer ``n_layers - 1`` is white;
- coordinates in metres, MRI surface RAS (FreeSurfer tkRAS), like MNE;
  GIFTI files are in mm;
- columns are ordered left hemisphere first, then right, each by FreeSurfer
  vertex id; leadfield sources are layer-major (``l * n_columns + c``);
- link vectors point pial -> white (inward), surface normals point outward.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from mne.utils import _check_option, _validate_type, get_subjects_dir, logger, verbose

from .. import bids
from ..pipeline.options import COLUMN_ORIENTATIONS, CORTEX_MASKS, LAYER_METHODS

HEMIS = ("lh", "rh")
#: Links shorter than this (mm) count as zero length (pial == white).
ZERO_LENGTH_MM = 1e-4
#: Normals shorter than this (unnormalised sum of unit face normals) are zero.
_ZERO_NORMAL = 1e-8

ORIENTATION_SIGN = {
    "link_vector": (
        "inward: unit vector from the pial vertex to the white vertex of the column "
        "(pial -> white), identical at every depth; zero-length columns use the "
        "inward (negated) pial vertex normal"
    ),
    "surface_normal": (
        "outward: each layer's own vertex normal (normalised sum of the unit normals "
        "of the incident faces of the full-resolution layer mesh, FreeSurfer winding)"
    ),
    "pial_normal": (
        "outward: the pial vertex normal (normalised sum of the unit normals of the "
        "incident faces of the full-resolution pial mesh), identical at every depth"
    ),
}
DROP_REASONS = {
    "outside_cortex_label": "not in ?h.cortex.label (medial wall)",
    "aparc_unknown": "?h.aparc.annot label 'unknown' or <= 0 (medial wall)",
    "zero_thickness": f"pial == white (distance < {ZERO_LENGTH_MM} mm; medial wall)",
    "zero_normal": "degenerate mesh: the surface normal needed for the orientation "
    "is zero",
}
_MASK_REASON = {
    "cortex_label": "outside_cortex_label",
    "aparc": "aparc_unknown",
    "thickness": "zero_thickness",
}
_SPACING_RE = re.compile(r"(ico|oct)\d+|all")
LAYER_SUFFIX = "midthickness"
SPATIAL_REFERENCE = (
    "FreeSurfer surface RAS (tkRAS, the 'tkregister' space of the subject's "
    "mri/T1.mgz and of its surf/ files), in mm"
)


# --------------------------------------------------------------- geometry
def _face_normals(rr, tris):
    """Unit face normals (zero for degenerate faces) and twice the face areas."""
    cross = np.cross(rr[tris[:, 1]] - rr[tris[:, 0]], rr[tris[:, 2]] - rr[tris[:, 0]])
    size = np.linalg.norm(cross, axis=1)
    unit = np.zeros_like(cross)
    ok = size > 0
    unit[ok] = cross[ok] / size[ok, None]
    return unit, size


def vertex_normals(rr, tris):
    """Outward vertex normals: normalised sum of incident unit face normals.

    Parameters
    ----------
    rr : array, shape (n_vertices, 3)
    tris : array, shape (n_tris, 3)

    Returns
    -------
    nn : array, shape (n_vertices, 3)
        Unit normals; rows are zero where the sum vanishes (no faces, or
        cancelling faces).
    """
    rr = np.asarray(rr, float)
    tris = np.asarray(tris)
    unit, _ = _face_normals(rr, tris)
    nn = np.zeros_like(rr)
    for k in range(3):  # three scatter-adds, vectorised over faces
        for d in range(3):
            nn[:, d] += np.bincount(tris[:, k], unit[:, d], minlength=len(rr))
    size = np.linalg.norm(nn, axis=1)
    ok = size > _ZERO_NORMAL
    nn[ok] /= size[ok, None]
    nn[~ok] = 0.0
    return nn


def vertex_areas(rr, tris):
    """Per-vertex area: one third of the areas of the incident triangles.

    Parameters
    ----------
    rr : array, shape (n_vertices, 3)
    tris : array, shape (n_tris, 3)

    Returns
    -------
    area : array, shape (n_vertices,)
        In the squared unit of ``rr``.
    """
    rr = np.asarray(rr, float)
    tris = np.asarray(tris)
    _, twice = _face_normals(rr, tris)
    third = twice / 6.0
    return np.bincount(tris.ravel(), np.repeat(third, 3), minlength=len(rr))


def equivolume_beta(alpha, area_pial, area_white):
    """Bok's equivolume depth: fraction of the pial->white distance.

    Solves, per vertex, the surface form of Bok's model: with the area along
    the column varying linearly from ``A_p`` (pial) to ``A_w`` (white), the
    volume between pial and depth ``beta`` is the fraction ``alpha`` of the
    column's volume:
    ``beta = 1 - (-A_w + sqrt((1 - alpha) A_p^2 + alpha A_w^2)) / (A_p - A_w)``.
    Evaluated in the algebraically identical form
    ``alpha (A_p + A_w) / (A_p + sqrt((1 - alpha) A_p^2 + alpha A_w^2))``,
    which has no 0/0 when ``A_p == A_w`` (there it equals ``alpha``).

    Parameters
    ----------
    alpha : array, shape (n_layers,)
        Volume fractions measured from pial (0 = pial, 1 = white).
    area_pial, area_white : array, shape (n_vertices,)
        Per-vertex areas on the pial and white surfaces.

    Returns
    -------
    beta : array, shape (n_layers, n_vertices)
    """
    alpha = np.asarray(alpha, float)[:, None]
    a_p = np.asarray(area_pial, float)[None]
    a_w = np.asarray(area_white, float)[None]
    root = np.sqrt((1 - alpha) * a_p**2 + alpha * a_w**2)
    denom = a_p + root
    beta = np.broadcast_to(alpha, denom.shape).copy()
    ok = denom > 0
    beta[ok] = (alpha * (a_p + a_w) / np.where(ok, denom, 1.0))[ok]
    return np.clip(beta, 0.0, 1.0)


# --------------------------------------------------------------- FS reading
def _read_surface(fname: Path, what: str):
    """Read a FreeSurfer surface (mm), checking existence and finite values."""
    import nibabel as nib

    fname = Path(fname)
    if not fname.is_file():
        raise FileNotFoundError(
            f"FreeSurfer {what} surface not found: {fname}. Check subjects_dir and "
            "the subject name, and that FreeSurfer's recon-all finished."
        )
    try:
        with warnings.catch_warnings():  # surfaces without volume geometry: harmless
            warnings.filterwarnings("ignore", "No volume information", UserWarning)
            warnings.filterwarnings("ignore", "Unknown extension code", UserWarning)
            rr, tris, info = nib.freesurfer.read_geometry(str(fname), read_metadata=True)
    except Exception as exc:
        raise ValueError(
            f"Could not read {fname} as a FreeSurfer triangle surface ({exc}); "
            "the file is corrupt or not a surface, restore it or re-run recon-all."
        ) from None
    rr = np.asarray(rr, np.float64)
    bad = ~np.isfinite(rr).all(axis=1)
    if bad.any():
        idx = np.where(bad)[0]
        raise ValueError(
            f"{fname} has {len(idx)} vertices with NaN or infinite coordinates "
            f"(first: vertex {idx[0]}); the surface is corrupt, restore it or re-run "
            "FreeSurfer."
        )
    tris = np.asarray(tris, np.int64)
    if len(tris) and (tris.min() < 0 or tris.max() >= len(rr)):
        raise ValueError(
            f"{fname} has faces referring to vertices outside 0..{len(rr) - 1}; the "
            "surface is corrupt."
        )
    return rr, tris, dict(info) if info else {}


def _check_pair(white, pial, fw, fp):
    if len(white[0]) != len(pial[0]):
        raise ValueError(
            f"White and pial surfaces differ in vertex count: {fw} has "
            f"{len(white[0])} vertices, {fp} has {len(pial[0])}. Layers need "
            "vertex correspondence: both must come from the same recon-all run."
        )
    if white[1].shape != pial[1].shape or not np.array_equal(white[1], pial[1]):
        raise ValueError(
            f"White and pial surfaces have different faces: {fw} vs {fp}. Layers "
            "need the same topology: both must come from the same recon-all run."
        )


def _cortex_mask(hemi, n_vert, mode, label_dir: Path, link_len):
    """(cortex bool mask, route used, file used or None)."""
    import nibabel as nib

    fl = label_dir / f"{hemi}.cortex.label"
    fa = label_dir / f"{hemi}.aparc.annot"
    route = mode
    if mode == "auto":
        route = "cortex_label" if fl.is_file() else "aparc" if fa.is_file() else "thickness"
    if route == "none":
        return np.ones(n_vert, bool), route, None
    if route == "thickness":
        return link_len >= ZERO_LENGTH_MM, route, None
    if route == "cortex_label":
        if not fl.is_file():
            raise FileNotFoundError(
                f"cortex_mask='cortex_label' but {fl} does not exist; use "
                "cortex_mask='auto' (falls back to aparc, then zero thickness)."
            )
        try:
            verts = np.asarray(nib.freesurfer.read_label(str(fl)), np.int64)
        except Exception as exc:
            raise ValueError(f"Could not read the label file {fl}: {exc}") from None
        if len(verts) == 0:
            raise ValueError(f"The cortex label {fl} is empty.")
        if verts.min() < 0 or verts.max() >= n_vert:
            raise ValueError(
                f"The cortex label {fl} has vertex ids up to {verts.max()}, but the "
                f"{hemi} surfaces have {n_vert} vertices: the label belongs to another "
                "subject or surface."
            )
        mask = np.zeros(n_vert, bool)
        mask[verts] = True
        return mask, route, fl
    assert route == "aparc"
    if not fa.is_file():
        raise FileNotFoundError(
            f"cortex_mask='aparc' but {fa} does not exist; use cortex_mask='auto' "
            "(falls back to zero thickness)."
        )
    try:
        labels, _, names = nib.freesurfer.read_annot(str(fa))
    except Exception as exc:
        raise ValueError(f"Could not read the annotation {fa}: {exc}") from None
    if len(labels) != n_vert:
        raise ValueError(
            f"The annotation {fa} has {len(labels)} vertices, but the {hemi} surfaces "
            f"have {n_vert}: it belongs to another subject or surface."
        )
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    unknown = [i for i, n in enumerate(names) if n.lower() == "unknown"]
    medial = (labels <= 0) | np.isin(labels, unknown)
    return ~medial, route, fa


def _subsample(subject, subjects_dir: Path, spacing):
    """Per hemi: (candidate vertno, triangles in full-resolution vertex ids)."""
    import mne

    src = mne.setup_source_space(
        subject, spacing=spacing, surface="white", add_dist=False,
        subjects_dir=subjects_dir, verbose=False,
    )  # fmt: skip
    return {
        hemi: (np.asarray(s["vertno"], np.int64), np.asarray(s["use_tris"], np.int64))
        for hemi, s in zip(HEMIS, src)
    }


def _scanner_xform(subj_dir: Path, info: dict):
    """4x4 (mm) from surface RAS (tkRAS) to scanner RAS, and how it was found."""
    t1 = subj_dir / "mri" / "T1.mgz"
    if t1.is_file():
        import nibabel as nib

        try:
            hdr = nib.load(t1).header
            xf = hdr.get_vox2ras() @ np.linalg.inv(hdr.get_vox2ras_tkr())
            return xf, "mri/T1.mgz (vox2ras @ inv(vox2ras_tkr))"
        except Exception:  # pragma: no cover - unreadable T1: fall through
            pass
    if "cras" in info:
        xf = np.eye(4)
        xf[:3, 3] = np.asarray(info["cras"], float)
        return xf, "c_ras of the white surface's volume geometry (translation only)"
    return None, None


def _link_unit(layers, link_len):
    """Unit pial->white direction for the crossing check (zero where undefined)."""
    d = layers[-1] - layers[0]
    out = np.zeros_like(d)
    ok = link_len > 0
    out[ok] = d[ok] / np.linalg.norm(d[ok], axis=1, keepdims=True)
    return out


# ----------------------------------------------------------------- class
class LaminarSurfaces:
    """Cortical layer surfaces between white and pial, column by column.

    Build with :meth:`from_freesurfer`, reload with :meth:`load`.

    Parameters
    ----------
    layers : array, shape (n_layers, n_columns, 3)
        Positions (m, MRI surface RAS), layer 0 = pial, last = white.
    orientations : array, shape (n_columns, 3) | (n_layers, n_columns, 3)
        Unit dipole orientations (see ``orientation_sign``).
    hemi : array of str, shape (n_columns,)
        ``"lh"``/``"rh"``, left hemisphere columns first.
    vertno : array of int, shape (n_columns,)
        FreeSurfer vertex id of each column in its hemisphere.
    tris : dict
        ``{"lh": (n_tri, 3), "rh": ...}`` triangles of the column mesh, indices
        0-based within the hemisphere's columns.
    fractions : array, shape (n_layers,)
        Depth of each layer as the nominal fraction of cortical thickness
        measured from white (1 = pial, 0 = white); for ``equivolume`` it is
        the volume fraction (``1 - alpha``).
    method, spacing, orientation : str
        How the layers, columns and orientations were made.
    subject : str | None
        FreeSurfer subject.
    qc : dict | None
        Quality counts (see :meth:`from_freesurfer`).
    dropped : dict | None
        ``{"hemi", "vertno", "reason"}`` arrays of the removed columns.
    sources : dict | None
        FreeSurfer files used.
    scanner_xform : array, shape (4, 4) | None
        Surface RAS (mm) -> scanner RAS (mm), when known.
    """

    def __init__(
        self,
        layers,
        orientations,
        hemi,
        vertno,
        tris,
        fractions,
        *,
        method="equidistant",
        spacing="all",
        orientation="link_vector",
        subject=None,
        qc=None,
        dropped=None,
        sources=None,
        scanner_xform=None,
    ):
        layers = np.asarray(layers, np.float64)
        if layers.ndim != 3 or layers.shape[2] != 3 or layers.shape[0] < 2:
            raise ValueError(
                f"layers must have shape (n_layers >= 2, n_columns, 3), got {layers.shape}"
            )
        n_layers, n_columns = layers.shape[:2]
        orientations = np.asarray(orientations, np.float64)
        if orientations.shape not in ((n_columns, 3), (n_layers, n_columns, 3)):
            raise ValueError(
                f"orientations must have shape ({n_columns}, 3) or ({n_layers}, "
                f"{n_columns}, 3), got {orientations.shape}"
            )
        hemi = np.asarray(hemi, dtype="<U2")
        vertno = np.asarray(vertno, np.int64)
        if hemi.shape != (n_columns,) or vertno.shape != (n_columns,):
            raise ValueError(
                f"hemi and vertno must have shape ({n_columns},), got {hemi.shape} "
                f"and {vertno.shape}"
            )
        if not np.isin(hemi, HEMIS).all():
            raise ValueError("hemi entries must be 'lh' or 'rh'")
        if (np.diff((hemi == "rh").astype(int)) < 0).any():
            raise ValueError("columns must be ordered: all 'lh' first, then 'rh'")
        fractions = np.asarray(fractions, np.float64)
        if fractions.shape != (n_layers,):
            raise ValueError(f"fractions must have shape ({n_layers},)")
        _check_option("method", method, LAYER_METHODS)
        _check_option("orientation", orientation, COLUMN_ORIENTATIONS)
        self.layers = layers
        self.orientations = orientations
        self.hemi = hemi
        self.vertno = vertno
        self.fractions = fractions
        self.tris = {}
        for h in HEMIS:
            t = np.asarray((tris or {}).get(h, np.zeros((0, 3))), np.int64).reshape(-1, 3)
            n_h = int((hemi == h).sum())
            if len(t) and (t.min() < 0 or t.max() >= n_h):
                raise ValueError(f"tris[{h!r}] must index 0..{n_h - 1}")
            self.tris[h] = t
        self.method = method
        self.spacing = spacing
        self.orientation = orientation
        self.subject = subject
        self.qc = dict(qc or {})
        empty = dict(
            hemi=np.zeros(0, "<U2"), vertno=np.zeros(0, np.int64), reason=np.zeros(0, "<U32")
        )
        dropped = dict(dropped or empty)
        self.dropped = dict(
            hemi=np.asarray(dropped["hemi"], "<U2"),
            vertno=np.asarray(dropped["vertno"], np.int64),
            reason=np.asarray(dropped["reason"], "<U32"),
        )
        self.sources = dict(sources or {})
        self.scanner_xform = None if scanner_xform is None else np.asarray(scanner_xform, float)

    # ------------------------------------------------------------ basics
    @property
    def n_layers(self) -> int:
        """Number of layers."""
        return self.layers.shape[0]

    @property
    def n_columns(self) -> int:
        """Number of columns (both hemispheres)."""
        return self.layers.shape[1]

    @property
    def orientation_sign(self) -> str:
        """The sign convention of :attr:`orientations`."""
        return ORIENTATION_SIGN[self.orientation]

    def columns(self, hemi: str) -> slice:
        """The slice of the columns of one hemisphere."""
        _check_option("hemi", hemi, HEMIS)
        idx = np.where(self.hemi == hemi)[0]
        if len(idx) == 0:
            return slice(0, 0)
        return slice(int(idx[0]), int(idx[-1]) + 1)

    def combined_tris(self):
        """Triangles of both hemispheres indexing all columns (rh offset by n_lh)."""
        offset = self.columns("lh").stop
        return np.concatenate([self.tris["lh"], self.tris["rh"] + offset]).astype(np.int64)

    def thickness(self):
        """Cortical thickness of each column: pial-white distance (mm).

        Returns
        -------
        thickness : array, shape (n_columns,)
            ``||pial - white||`` in mm (not FreeSurfer's ``?h.thickness``).
        """
        return np.linalg.norm(self.layers[0] - self.layers[-1], axis=1) * 1e3

    def source_positions(self):
        """Positions of all sources, layer-major (m).

        Returns
        -------
        rr : array, shape (n_layers * n_columns, 3)
            Source ``l * n_columns + c`` is column ``c`` at layer ``l``.
        """
        return self.layers.reshape(-1, 3).copy()

    def source_orientations(self):
        """Orientations of all sources, layer-major, like :meth:`source_positions`.

        Returns
        -------
        nn : array, shape (n_layers * n_columns, 3)
        """
        ori = self.orientations
        if ori.ndim == 2:
            ori = np.broadcast_to(ori, self.layers.shape)
        return np.array(ori.reshape(-1, 3))

    def layer_orientations(self, layer: int):
        """Orientations of the columns at one layer, shape (n_columns, 3)."""
        return self.orientations[layer] if self.orientations.ndim == 3 else self.orientations

    @verbose
    def to_source_spaces(self, *, verbose=None):
        """Convert to discrete MNE source spaces, one per layer.

        Returns
        -------
        src : mne.SourceSpaces
            ``n_layers`` discrete source spaces in the MRI frame, each with the
            columns in this object's order and ``nn`` set to the orientations,
            so a forward solution's sources are layer-major.
        """
        import mne

        spaces = []
        for layer in range(self.n_layers):
            nn = self.layer_orientations(layer)
            src = mne.setup_volume_source_space(
                subject=self.subject, pos=dict(rr=self.layers[layer], nn=nn), verbose=False
            )
            s = src[0]
            s["rr"] = self.layers[layer].copy()
            s["nn"] = np.array(nn)
            s["subject_his_id"] = self.subject
            spaces.append(s)
        return mne.SourceSpaces(spaces)

    def __repr__(self) -> str:
        n = {h: int((self.hemi == h).sum()) for h in HEMIS}
        return (
            f"<LaminarSurfaces | {self.n_layers} layers ({self.method}), "
            f"{self.n_columns} columns (lh {n['lh']}, rh {n['rh']}, spacing "
            f"{self.spacing}), orientation {self.orientation}>"
        )

    # ------------------------------------------------------------ builder
    @classmethod
    @verbose
    def from_freesurfer(
        cls,
        subject,
        subjects_dir=None,
        n_layers=11,
        method="equidistant",
        spacing="oct6",
        orientation="link_vector",
        cortex_mask="auto",
        min_thickness=0.5,
        *,
        verbose=None,
    ):
        """Layer surfaces of a FreeSurfer subject.

        Parameters
        ----------
        subject : str
            FreeSurfer subject.
        subjects_dir : path-like | None
            FreeSurfer subjects dir (None: ``SUBJECTS_DIR``/MNE config).
        n_layers : int
            Number of layers (>= 2), pial (0) to white (``n_layers - 1``).
        method : ``"equidistant"`` | ``"equivolume"``
            ``equidistant``: ``x_l = white + f_l (pial - white)`` with
            ``f_l = linspace(1, 0, n_layers)``. ``equivolume``: Bok's depth
            ``beta`` (:func:`equivolume_beta`) for the volume fraction
            ``alpha_l = 1 - f_l`` from the per-vertex areas of the
            full-resolution pial and white meshes, ``x = pial + beta (white -
            pial)``.
        spacing : str
            ``"ico#"``/``"oct#"``: MNE's subsampling on ``?h.sphere`` (as
            :func:`mne.setup_source_space` on ``white``), identical vertex ids
            in every layer; ``"all"``: every vertex.
        orientation : ``"link_vector"`` | ``"surface_normal"`` | ``"pial_normal"``
            See :data:`ORIENTATION_SIGN` for each sign convention.
        cortex_mask : ``"auto"`` | ``"cortex_label"`` | ``"aparc"`` | ``"thickness"`` | ``"none"``
            Medial-wall removal. ``auto`` uses ``label/?h.cortex.label`` if
            present, else ``label/?h.aparc.annot`` (label ``unknown`` or <= 0),
            else zero thickness (pial == white), per hemisphere.
        min_thickness : float
            Columns thinner than this (mm) are counted in ``qc["thin_columns"]``.
        verbose : bool | str | int | None
            Control the logging level (see :func:`mne.verbose`).

        Returns
        -------
        surfaces : LaminarSurfaces
            With ``qc``: ``n_candidates``/``n_kept``/``dropped`` per hemi and
            reason, ``cortex_mask`` route per hemi, ``zero_length_link``
            (kept columns whose link vector had zero length; with
            ``link_vector`` they get the inward pial normal), ``crossings``
            (columns where a deeper layer lies outside a shallower one along
            the column), ``inverted_columns`` (pial inside white w.r.t. the
            outward white normal), ``thin_columns``, ``median_thickness_mm``.
        """
        _validate_type(subject, str, "subject")
        _validate_type(n_layers, "int", "n_layers")
        if n_layers < 2:
            raise ValueError(f"n_layers must be >= 2 (pial and white), got {n_layers}")
        n_layers = int(n_layers)
        _check_option("method", method, LAYER_METHODS)
        _validate_type(spacing, str, "spacing")
        if not _SPACING_RE.fullmatch(spacing):
            raise ValueError(
                f"spacing must be 'all', 'ico#' or 'oct#' (e.g. 'oct6'), got {spacing!r}"
            )
        _check_option("orientation", orientation, COLUMN_ORIENTATIONS)
        _check_option("cortex_mask", cortex_mask, CORTEX_MASKS)
        _validate_type(min_thickness, "numeric", "min_thickness")
        if not min_thickness >= 0:
            raise ValueError(f"min_thickness must be >= 0 (mm), got {min_thickness}")
        subjects_dir = Path(get_subjects_dir(subjects_dir, raise_error=True))
        subj_dir = subjects_dir / subject
        if not subj_dir.is_dir():
            raise FileNotFoundError(
                f"FreeSurfer subject folder not found: {subj_dir} (subject={subject!r}, "
                f"subjects_dir={str(subjects_dir)!r})."
            )
        surf_dir = subj_dir / "surf"
        label_dir = subj_dir / "label"
        fractions = np.linspace(1.0, 0.0, n_layers)

        # read and check every input before any computation
        geo, sources = {}, {}
        for hemi in HEMIS:
            fw, fp = surf_dir / f"{hemi}.white", surf_dir / f"{hemi}.pial"
            white = _read_surface(fw, f"{hemi} white")
            pial = _read_surface(fp, f"{hemi} pial")
            _check_pair(white, pial, fw, fp)
            sources[hemi] = {"white": str(fw), "pial": str(fp)}
            if spacing != "all":
                fs = surf_dir / f"{hemi}.sphere"
                sphere = _read_surface(fs, f"{hemi} sphere")
                if len(sphere[0]) != len(white[0]):
                    raise ValueError(
                        f"Sphere and white surfaces differ in vertex count: {fs} has "
                        f"{len(sphere[0])} vertices, {fw} has {len(white[0])}. "
                        f"spacing={spacing!r} subsamples on ?h.sphere; restore the "
                        "sphere of this recon-all run or use spacing='all'."
                    )
                sources[hemi]["sphere"] = str(fs)
            geo[hemi] = (white, pial)
        logger.info(
            f"Layer surfaces for {subject}: {n_layers} layers ({method}), spacing "
            f"{spacing}, orientation {orientation}"
        )
        sub = _subsample(subject, subjects_dir, spacing) if spacing != "all" else None
        xform, xform_src = _scanner_xform(subj_dir, geo["lh"][0][2])

        parts = []
        for hemi in HEMIS:
            (w_rr, tris, _), (p_rr, _, _) = geo[hemi]
            if sub is None:
                cand, sub_tris = np.arange(len(w_rr)), tris
            else:
                cand, sub_tris = sub[hemi]
            part = _hemi_columns(
                hemi, w_rr, p_rr, tris, cand, sub_tris, fractions=fractions,
                method=method, orientation=orientation, cortex_mask=cortex_mask,
                label_dir=label_dir, min_thickness=float(min_thickness),
            )  # fmt: skip
            if part["mask_file"] is not None:
                key = "cortex_label" if part["route"] == "cortex_label" else "aparc"
                sources[hemi][key] = str(part["mask_file"])
            if xform_src and xform_src.startswith("mri/"):
                sources[hemi]["T1"] = str(subj_dir / "mri" / "T1.mgz")
            parts.append(part)
            logger.info(
                f"    {hemi}: {part['n_kept']} of {len(cand)} columns kept "
                f"(medial wall via {part['route']}: {part['qc']['dropped']})"
            )

        layers = np.concatenate([p["layers"] for p in parts], axis=1) * 1e-3
        ori_axis = 1 if orientation == "surface_normal" else 0
        orientations = np.concatenate([p["ori"] for p in parts], axis=ori_axis)
        hemi_arr = np.concatenate([np.full(p["n_kept"], h) for p, h in zip(parts, HEMIS)])
        vertno = np.concatenate([p["vertno"] for p in parts])
        dropped = dict(
            hemi=np.concatenate([np.full(len(p["drop_v"]), h) for p, h in zip(parts, HEMIS)]),
            vertno=np.concatenate([p["drop_v"] for p in parts]),
            reason=np.concatenate([p["drop_r"] for p in parts]),
        )
        qc = _merge_qc(parts, min_thickness=float(min_thickness))
        qc["scanner_ras_from"] = xform_src
        all_t = np.concatenate([p["thick"] for p in parts])
        qc["median_thickness_mm"] = float(np.median(all_t)) if len(all_t) else None
        out = cls(
            layers, orientations, hemi_arr, vertno,
            {h: p["tris"] for p, h in zip(parts, HEMIS)}, fractions,
            method=method, spacing=spacing, orientation=orientation, subject=subject,
            qc=qc, dropped=dropped,
            sources=dict(subjects_dir=str(subjects_dir), subject=subject, **sources),
            scanner_xform=xform,
        )  # fmt: skip
        for key in ("crossings", "inverted_columns", "zero_length_link"):
            if qc[key]:
                logger.info(f"    quality: {qc[key]} {key.replace('_', ' ')}")
        return out

    # ------------------------------------------------------------ I/O
    @verbose
    def save(self, root, subject, session=None, *, remove_stale=True, verbose=None):
        """Write the derivative files (GIFTI surfaces, orientations, TSV, JSON).

        All files are written to temporary names and renamed together at the
        end, so an error leaves no partial output. Files of an earlier run
        (other spacing or more layers) are removed when ``remove_stale``.

        Parameters
        ----------
        root : path-like
            Derivative dataset root (e.g. ``<bids_root>/derivatives/mne-laminar``).
            Its ``dataset_description.json``, ``descriptions.tsv``,
            ``README.md`` and ``.bidsignore`` are created or updated.
        subject : str
            BIDS subject label (without ``sub-``).
        session : str | None
            BIDS session label.
        remove_stale : bool
            Remove this subject's layer-surface files not written now.
        verbose : bool | str | int | None
            Control the logging level (see :func:`mne.verbose`).

        Returns
        -------
        paths : list of Path
            Every file written (data files and sidecars).
        """
        return _save(self, Path(root), subject, session, remove_stale=remove_stale)

    @classmethod
    @verbose
    def load(cls, root, subject, session=None, *, spacing=None, verbose=None):
        """Reload surfaces written by :meth:`save` (exact round trip).

        Parameters
        ----------
        root : path-like
            Derivative dataset root.
        subject, session : str | None
            BIDS labels.
        spacing : str | None
            The ``den-`` label to load when several were saved.
        verbose : bool | str | int | None
            Control the logging level (see :func:`mne.verbose`).

        Returns
        -------
        surfaces : LaminarSurfaces
        """
        return _load(cls, Path(root), subject, session, spacing)


# ------------------------------------------------------------ per hemisphere
def _hemi_columns(
    hemi, w_rr, p_rr, tris, cand, sub_tris, *, fractions, method, orientation,
    cortex_mask, label_dir, min_thickness,
):  # fmt: skip
    n_vert = len(w_rr)
    link = w_rr - p_rr  # pial -> white, mm
    link_len = np.linalg.norm(link, axis=1)
    cortex, route, mask_file = _cortex_mask(hemi, n_vert, cortex_mask, label_dir, link_len)
    reason = np.full(len(cand), "", "<U32")
    if route != "none":
        reason[~cortex[cand]] = _MASK_REASON[route]

    # depth of each layer as a fraction of pial->white, per vertex
    if method == "equidistant":
        full_w = None
    else:
        full_w = equivolume_beta(
            1.0 - fractions, vertex_areas(p_rr, tris), vertex_areas(w_rr, tris)
        )

    def _layer_rr(idx):
        """(n_layers, len(idx), 3) mm, layer 0 exactly pial, last exactly white."""
        w, p = w_rr[idx], p_rr[idx]
        if method == "equidistant":
            rr = w[None] + fractions[:, None, None] * (p - w)[None]
        else:
            rr = p[None] + full_w[:, idx, None] * (w - p)[None]
        rr[0], rr[-1] = p, w
        return rr

    pial_nn = vertex_normals(p_rr, tris)
    zero_link = link_len[cand] < ZERO_LENGTH_MM
    ori_src = np.full(len(cand), orientation, "<U32")
    if orientation == "link_vector":
        ori = np.zeros((len(cand), 3))
        ok = ~zero_link
        ori[ok] = link[cand[ok]] / link_len[cand[ok], None]
        ori[~ok] = -pial_nn[cand[~ok]]  # inward, like the link vector
        ori_src[~ok] = "inward_pial_normal"
        bad_ori = np.linalg.norm(ori, axis=1) == 0
    elif orientation == "pial_normal":
        ori = pial_nn[cand]
        bad_ori = np.linalg.norm(ori, axis=1) == 0
    else:  # surface_normal: each full-resolution layer's own normals
        full = _layer_rr(np.arange(n_vert))
        ori = np.stack([vertex_normals(full[k], tris)[cand] for k in range(len(full))])
        del full
        bad_ori = (np.linalg.norm(ori, axis=2) == 0).any(axis=0)
    reason[(reason == "") & bad_ori] = "zero_normal"

    keep = reason == ""
    kept = cand[keep]
    layers = _layer_rr(kept)
    ori = ori[:, keep] if ori.ndim == 3 else ori[keep]
    # triangles of the subsampled mesh with every vertex kept, re-indexed
    lut = np.full(n_vert, -1, np.int64)
    lut[kept] = np.arange(len(kept))
    t = lut[sub_tris] if len(sub_tris) else np.zeros((0, 3), np.int64)
    t = t[(t >= 0).all(axis=1)]

    # quality checks on kept columns
    thick = link_len[kept]
    unit = _link_unit(layers, thick)
    steps = np.einsum("lcj,cj->lc", np.diff(layers, axis=0), unit)
    crossings = int(((steps < -1e-9).any(axis=0)).sum())
    white_nn = vertex_normals(w_rr, tris)[kept]
    nonzero = thick >= ZERO_LENGTH_MM
    inverted = int((np.einsum("ij,ij->i", p_rr[kept] - w_rr[kept], white_nn)[nonzero] < 0).sum())
    reasons, counts = np.unique(reason[~keep], return_counts=True)
    qc = dict(
        n_candidates=int(len(cand)),
        n_kept=int(len(kept)),
        dropped={str(r): int(c) for r, c in zip(reasons, counts)},
        zero_length_link=int(zero_link[keep].sum()),
        crossings=crossings,
        inverted_columns=inverted,
        thin_columns=int((thick < min_thickness).sum()),
    )
    return dict(
        layers=layers, ori=ori, vertno=kept, tris=t, route=route, mask_file=mask_file,
        drop_v=cand[~keep], drop_r=reason[~keep], n_kept=int(len(kept)), thick=thick,
        qc=qc, cand=cand, cand_reason=reason, cand_thick=link_len[cand],
        cand_ori_src=np.where(keep, ori_src, ""),
    )  # fmt: skip


def _merge_qc(parts, *, min_thickness):
    qc: dict[str, Any] = {"cortex_mask": {h: p["route"] for h, p in zip(HEMIS, parts)}}
    for key in ("n_candidates", "n_kept", "dropped"):
        qc[key] = {h: p["qc"][key] for h, p in zip(HEMIS, parts)}
    totals: dict[str, int] = {}
    for p in parts:
        for r, c in p["qc"]["dropped"].items():
            totals[r] = totals.get(r, 0) + c
    qc["dropped_total"] = dict(sorted(totals.items()))
    for key in ("zero_length_link", "crossings", "inverted_columns", "thin_columns"):
        qc[key] = int(sum(p["qc"][key] for p in parts))
    qc["min_thickness_mm"] = float(min_thickness)
    qc["zero_length_link_mm"] = ZERO_LENGTH_MM
    return qc


# ------------------------------------------------------------------ files
def _prefix(subject, session):
    return f"sub-{subject}" + (f"_ses-{session}" if session else "")


def layer_fname(root, subject, session, hemi, layer, spacing) -> Path:
    """Path of one layer's GIFTI surface (``desc-layer00`` = pial)."""
    return bids.bids_fname(
        root, subject=subject, session=session, datatype="anat", hemi=hemi,
        den=spacing, desc=bids.layer_desc(layer), suffix=LAYER_SUFFIX,
        extension=".surf.gii",
    )  # fmt: skip


def _hemi_fname(root, subject, session, hemi, spacing, desc) -> Path:
    return bids.bids_fname(
        root, subject=subject, session=session, datatype="anat", hemi=hemi,
        den=spacing, desc=desc, suffix="stat", extension=".func.gii",
    )  # fmt: skip


def orientation_fname(root, subject, session, hemi, spacing) -> Path:
    """Path of a hemisphere's orientation GIFTI (float64 unit vectors)."""
    return _hemi_fname(root, subject, session, hemi, spacing, "orientation")


def positions_fname(root, subject, session, hemi, spacing) -> Path:
    """Path of a hemisphere's exact (float64, metres) column positions GIFTI."""
    return _hemi_fname(root, subject, session, hemi, spacing, "positions")


def columns_fname(root, subject, session, spacing) -> Path:
    """Path of the columns TSV (every candidate column, kept or dropped)."""
    return bids.bids_fname(
        root, subject=subject, session=session, datatype="anat", den=spacing,
        desc="laminar", suffix="columns", extension=".tsv",
    )  # fmt: skip


def summary_fname(root, subject, session, spacing) -> Path:
    """Path of the summary JSON (everything :meth:`LaminarSurfaces.load` needs)."""
    return bids.bids_fname(
        root, subject=subject, session=session, datatype="anat", den=spacing,
        desc="laminar", suffix="surfaces", extension=".json",
    )  # fmt: skip


def saved_fnames(root, subject, session, spacing, *, pial=False) -> dict[str, Path]:
    """The files :meth:`LaminarSurfaces.load` reads (keys name them), for MBP
    steps that declare them as inputs; ``pial=True`` adds the layer-0 GIFTIs."""
    files = {
        "surfaces": summary_fname(root, subject, session, spacing),
        "columns": columns_fname(root, subject, session, spacing),
    }
    for hemi in HEMIS:
        files[f"positions_{hemi}"] = positions_fname(root, subject, session, hemi, spacing)
        files[f"orientation_{hemi}"] = orientation_fname(root, subject, session, hemi, spacing)
        if pial:
            files[f"pial_{hemi}"] = layer_fname(root, subject, session, hemi, 0, spacing)
    return files


#: Glob patterns (after ``<prefix>_``) of every file :meth:`save` writes.
STALE_PATTERNS = (
    "hemi-*_den-*_desc-layer*_midthickness.surf.gii",
    "hemi-*_den-*_desc-layer*_midthickness.json",
    "hemi-*_den-*_desc-orientation_stat.func.gii",
    "hemi-*_den-*_desc-orientation_stat.json",
    "hemi-*_den-*_desc-positions_stat.func.gii",
    "hemi-*_den-*_desc-positions_stat.json",
    "den-*_desc-laminar_columns.tsv",
    "den-*_desc-laminar_columns.json",
    "den-*_desc-laminar_surfaces.json",
)

BIDS_DESCRIPTIONS = {
    "positions": "Exact (float64, metres, tkRAS) position of every column at every "
    "layer: a lossless copy of the layer surfaces",
}


def layer_descriptions(n_layers: int) -> dict[str, str]:
    """``descriptions.tsv`` entries of the layer labels."""
    out = dict(BIDS_DESCRIPTIONS)
    for layer in range(n_layers):
        out[bids.layer_desc(layer)] = (
            f"Cortical layer surface {layer:02d} of the laminar model (00 = pial, "
            "higher = deeper; the last layer is white)"
        )
    return out


def _density(surf: LaminarSurfaces) -> str:
    n = {h: int((surf.hemi == h).sum()) for h in HEMIS}
    if surf.spacing == "all":
        how = "all FreeSurfer vertices"
    else:
        how = f"MNE {surf.spacing} subsampling of ?h.sphere (as mne.setup_source_space)"
    return f"{how}, medial wall removed: {n['lh']} (L) and {n['rh']} (R) cortical columns"


def _gifti_meta(d: dict):
    import nibabel as nib

    return nib.gifti.GiftiMetaData({k: str(v) for k, v in d.items()})


def _common_sidecar(surf: LaminarSurfaces, hemi: str | None) -> dict:
    q = surf.qc
    out = {
        "SpatialReference": SPATIAL_REFERENCE,
        "Density": _density(surf),
        "NumberOfLayers": surf.n_layers,
        "LayerOrder": "index 0 = pial (most superficial) ... n_layers-1 = white (deepest)",
        "DepthFractions": surf.fractions.tolist(),
        "DepthFractionsDescription": (
            "fraction of cortical depth measured from white (1 = pial, 0 = white); "
            "equidistant: of the white-pial distance; equivolume: of the column "
            "volume (Bok)"
        ),
        "DepthMethod": surf.method,
        "ColumnSpacing": surf.spacing,
        "Orientation": surf.orientation,
        "OrientationSign": surf.orientation_sign,
        "FreeSurferSubject": surf.subject,
        "FreeSurferInputs": surf.sources,
    }
    if q:
        hemis = [hemi] if hemi else list(HEMIS)
        out["ColumnsKept"] = {bids.HEMI_LABEL[h]: q.get("n_kept", {}).get(h) for h in hemis}
        out["ColumnsDropped"] = {
            bids.HEMI_LABEL[h]: q.get("dropped", {}).get(h, {}) for h in hemis
        }
        out["CortexMask"] = {bids.HEMI_LABEL[h]: q.get("cortex_mask", {}).get(h) for h in hemis}
        out["DropReasons"] = DROP_REASONS
    return out


def _source_uris(surf: LaminarSurfaces, root: Path, raw_rel: str):
    """BIDS URIs of the FreeSurfer inputs, per hemi, and the DatasetLinks they need.

    Possible when ``subjects_dir`` lies in a sibling derivative dataset
    (``<root>/../<name>/...`` -> ``bids:<name>:...``) or in the raw dataset
    (``bids:raw:...``); otherwise no URIs (absolute paths stay in
    ``FreeSurferInputs``).
    """
    uris: dict[str, list[str]] = {h: [] for h in HEMIS}
    links: dict[str, str] = {}
    try:
        deriv = root.resolve().parent
        raw = (root / raw_rel).resolve()
    except OSError:  # pragma: no cover
        return uris, links
    for hemi in HEMIS:
        for fname in (surf.sources.get(hemi) or {}).values():
            path = Path(fname).resolve()
            if path.is_relative_to(deriv) and path.relative_to(deriv).parts[0] != root.name:
                name = path.relative_to(deriv).parts[0]
                links[name] = f"../{name}"
                uris[hemi].append(bids.bids_uri(name, path.relative_to(deriv / name)))
            elif path.is_relative_to(raw):
                uris[hemi].append(bids.bids_uri("raw", path.relative_to(raw)))
    return uris, links


def _save(surf: LaminarSurfaces, root: Path, subject: str, session, *, remove_stale):
    import nibabel as nib
    from nibabel.gifti import GiftiCoordSystem, GiftiDataArray, GiftiImage

    _validate_type(subject, str, "subject")
    spacing = surf.spacing
    # dataset-level files (keep an existing DatasetLinks target)
    dd = root / "dataset_description.json"
    rel = "../.."
    if dd.is_file():
        with contextlib.suppress(Exception):
            rel = bids.read_json(dd)["DatasetLinks"]["raw"]
    uris, links = _source_uris(surf, root, rel)
    bids.ensure_derivative_dataset(
        root, source_relpath=rel, descriptions=layer_descriptions(surf.n_layers),
        links=links,
    )  # fmt: skip
    written: list[Path] = []
    struct = {"lh": "CortexLeft", "rh": "CortexRight"}
    xform = surf.scanner_xform
    if xform is not None:
        coordsys = GiftiCoordSystem(
            dataspace="NIFTI_XFORM_UNKNOWN", xformspace="NIFTI_XFORM_SCANNER_ANAT", xform=xform
        )
    else:
        coordsys = GiftiCoordSystem(
            dataspace="NIFTI_XFORM_UNKNOWN", xformspace="NIFTI_XFORM_UNKNOWN", xform=np.eye(4)
        )
    with contextlib.ExitStack() as stack:

        def _tmp(path):
            written.append(Path(path))
            return stack.enter_context(bids.atomic_path(path))

        for hemi in HEMIS:
            sl = surf.columns(hemi)
            vert = surf.vertno[sl]
            side = bids.HEMI_LABEL[hemi]
            common = _common_sidecar(surf, hemi)
            if uris[hemi]:
                common["Sources"] = uris[hemi]
            for layer in range(surf.n_layers):
                second = (
                    "Pial" if layer == 0 else "GrayWhite" if layer == surf.n_layers - 1
                    else "MidThickness"
                )  # fmt: skip
                desc = (
                    f"Layer {layer:02d} of {surf.n_layers} ({surf.method}, depth fraction "
                    f"{surf.fractions[layer]:.3f} from white) of the {hemi} cortex; "
                    f"coordinates in mm, {SPATIAL_REFERENCE}"
                )
                meta = {
                    "AnatomicalStructurePrimary": struct[hemi],
                    "AnatomicalStructureSecondary": second,
                    "GeometricType": "Anatomical",
                    "Name": bids.layer_desc(layer),
                    "Description": desc,
                    "SpatialReference": SPATIAL_REFERENCE,
                    "DepthFraction": repr(float(surf.fractions[layer])),
                }
                if xform is not None:
                    meta.update(
                        VolGeomC_R=f"{xform[0, 3]:.6f}", VolGeomC_A=f"{xform[1, 3]:.6f}",
                        VolGeomC_S=f"{xform[2, 3]:.6f}",
                    )  # fmt: skip
                img = GiftiImage(meta=_gifti_meta(meta))
                img.add_gifti_data_array(
                    GiftiDataArray(
                        (surf.layers[layer, sl] * 1e3).astype(np.float32),
                        intent="NIFTI_INTENT_POINTSET", datatype="NIFTI_TYPE_FLOAT32",
                        coordsys=coordsys,
                        meta=_gifti_meta({"AnatomicalStructurePrimary": struct[hemi]}),
                    )
                )  # fmt: skip
                img.add_gifti_data_array(
                    GiftiDataArray(
                        surf.tris[hemi].astype(np.int32), intent="NIFTI_INTENT_TRIANGLE",
                        datatype="NIFTI_TYPE_INT32",
                    )
                )  # fmt: skip
                path = layer_fname(root, subject, session, hemi, layer, spacing)
                nib.save(img, _tmp(path))
                side_json = dict(
                    Description=desc, Layer=layer, DepthFraction=float(surf.fractions[layer]),
                    Hemisphere=side, Units="mm", **common,
                )  # fmt: skip
                bids.write_json(_tmp(bids.sidecar(path)), side_json)

            # orientations (float64 unit vectors) and exact positions (float64 m)
            for kind in ("orientation", "positions"):
                img = GiftiImage(
                    meta=_gifti_meta({"AnatomicalStructurePrimary": struct[hemi]})
                )
                img.add_gifti_data_array(
                    GiftiDataArray(
                        vert.astype(np.int32), intent="NIFTI_INTENT_NODE_INDEX",
                        datatype="NIFTI_TYPE_INT32", meta=_gifti_meta({"Name": "vertno"}),
                    )
                )  # fmt: skip
                if kind == "orientation":
                    arrays = (
                        [(surf.orientations[sl], "all layers")]
                        if surf.orientations.ndim == 2
                        else [
                            (surf.orientations[k, sl], bids.layer_desc(k))
                            for k in range(surf.n_layers)
                        ]
                    )
                    units = "1"
                else:
                    arrays = [
                        (surf.layers[k, sl], bids.layer_desc(k)) for k in range(surf.n_layers)
                    ]
                    units = "m"
                for data, name in arrays:
                    img.add_gifti_data_array(
                        GiftiDataArray(
                            np.ascontiguousarray(data, np.float64),
                            intent="NIFTI_INTENT_VECTOR", datatype="NIFTI_TYPE_FLOAT64",
                            encoding="GIFTI_ENCODING_B64BIN",  # gzip: slow, ~10 % smaller
                            meta=_gifti_meta({"Name": name, "Units": units}),
                        )
                    )  # fmt: skip
                if kind == "orientation":
                    path = orientation_fname(root, subject, session, hemi, spacing)
                    desc = (
                        f"Unit dipole orientation of every {hemi} column "
                        f"({surf.orientation}; {surf.orientation_sign}). Arrays: vertex "
                        "ids (NODE_INDEX), then one float64 (n, 3) array "
                        + ("for all layers." if surf.orientations.ndim == 2 else "per layer.")
                    )
                else:
                    path = positions_fname(root, subject, session, hemi, spacing)
                    desc = (
                        "Exact position (float64, metres, FreeSurfer surface RAS/tkRAS) "
                        f"of every {hemi} column at every layer. Arrays: vertex ids "
                        "(NODE_INDEX), then one (n, 3) array per layer (00 = pial). A "
                        "lossless copy of the float32 mm layer surfaces."
                    )
                # float64 is outside the GIFTI 1.0 type list but written and read
                # by nibabel and gifticlib; it makes the round trip exact
                nib.save(img, _tmp(path), mode="force")
                bids.write_json(
                    _tmp(bids.sidecar(path)),
                    dict(Description=desc, Hemisphere=side, Units=units, **common),
                )

        # columns table (every candidate column) and summary
        tsv = columns_fname(root, subject, session, spacing)
        table = _columns_table(surf)
        bids.write_tsv(_tmp(tsv), table)
        bids.write_json(_tmp(bids.sidecar(tsv)), _columns_sidecar(surf))
        summary = summary_fname(root, subject, session, spacing)
        info = dict(
            Description="Laminar layer surfaces: parameters, quality checks and files",
            **_common_sidecar(surf, None),
            QualityChecks=surf.qc,
            **({"Sources": uris["lh"] + uris["rh"]} if uris["lh"] + uris["rh"] else {}),
            ScannerRASTransform=None if xform is None else xform.tolist(),
            Files=sorted(p.relative_to(root).as_posix() for p in written),
        )
        bids.write_json(_tmp(summary), info)
        written.append(summary)
    written = list(dict.fromkeys(written))
    if remove_stale:
        directory = written[0].parent
        for pattern in STALE_PATTERNS:
            for path in bids.remove_stale(
                directory, f"{_prefix(subject, session)}_{pattern}", written
            ):
                logger.info(f"    removed stale {path.name}")
    logger.info(f"    wrote {len(written)} files to {written[0].parent}")
    return written


def _columns_table(surf: LaminarSurfaces) -> dict:
    """Every candidate column: kept ones (with index) and dropped ones (reason)."""
    thick = surf.thickness()
    hemi = np.concatenate([surf.hemi, surf.dropped["hemi"]])
    vert = np.concatenate([surf.vertno, surf.dropped["vertno"]])
    col = np.concatenate([np.arange(surf.n_columns), np.full(len(vert) - surf.n_columns, -1)])
    order = np.lexsort((vert, hemi == "rh"))
    hemi, vert, col = hemi[order], vert[order], col[order]
    kept = col >= 0
    reason = np.concatenate([np.full(surf.n_columns, ""), surf.dropped["reason"]])[order]
    return {
        "hemi": [bids.HEMI_LABEL[h] for h in hemi],
        "vertex": vert.tolist(),
        "column": [int(c) if c >= 0 else None for c in col],
        "status": np.where(kept, "kept", "dropped").tolist(),
        "reason": [r if r else None for r in reason],
        "thickness": [float(thick[c]) if c >= 0 else None for c in col],
    }


def _columns_sidecar(surf: LaminarSurfaces) -> dict:
    return {
        "Description": "Every candidate cortical column (after subsampling): kept in "
        "every layer, or dropped in every layer with the reason.",
        "Density": _density(surf),
        "SpatialReference": SPATIAL_REFERENCE,
        "hemi": {"LongName": "Hemisphere", "Levels": {"L": "left", "R": "right"}},
        "vertex": {
            "LongName": "FreeSurfer vertex id",
            "Description": "Vertex index in the subject's ?h.white/?h.pial",
        },
        "column": {
            "LongName": "Column index",
            "Description": "Index into the kept columns (left first); source "
            "l * n_columns + column of the laminar leadfield; n/a if dropped",
        },
        "status": {
            "LongName": "Kept or dropped",
            "Levels": {"kept": "in every layer", "dropped": "from every layer"},
        },
        "reason": {"LongName": "Why the column was dropped", "Levels": DROP_REASONS},
        "thickness": {
            "LongName": "Cortical thickness",
            "Description": "Pial-white distance along the column (not ?h.thickness)",
            "Units": "mm",
        },
        "OrientationSign": surf.orientation_sign,
    }


def _find_summary(root: Path, subject, session, spacing) -> Path:
    if spacing is not None:
        path = summary_fname(root, subject, session, spacing)
        if not path.is_file():
            raise FileNotFoundError(f"No laminar surfaces saved: {path} does not exist.")
        return path
    pattern = bids.subject_dir(root, subject, session, "anat") / (
        f"{_prefix(subject, session)}_den-*_desc-laminar_surfaces.json"
    )
    found = sorted(glob.glob(glob.escape(str(pattern.parent)) + os.sep + pattern.name))
    if not found:
        raise FileNotFoundError(
            f"No laminar surfaces saved for sub-{subject}"
            + (f" ses-{session}" if session else "")
            + f" under {root}: no file matches {pattern}."
        )
    if len(found) > 1:
        raise ValueError(
            f"Several saved spacings for sub-{subject}: {[Path(f).name for f in found]}; "
            "pass spacing=."
        )
    return Path(found[0])


def _load(cls, root: Path, subject, session, spacing):
    import nibabel as nib

    summary = _find_summary(root, subject, session, spacing)
    info = bids.read_json(summary)
    spacing = info["ColumnSpacing"]
    n_layers = int(info["NumberOfLayers"])
    layers, oris, hemis, vertnos, tris = [], [], [], [], {}
    for hemi in HEMIS:
        fpos = positions_fname(root, subject, session, hemi, spacing)
        fori = orientation_fname(root, subject, session, hemi, spacing)
        fsurf = layer_fname(root, subject, session, hemi, 0, spacing)
        for f in (fpos, fori, fsurf):
            if not f.is_file():
                raise FileNotFoundError(f"Missing laminar surface file {f} (listed in {summary}).")
        pos = nib.load(fpos).darrays
        ori = nib.load(fori).darrays
        vert = np.asarray(pos[0].data, np.int64)
        if len(pos) != n_layers + 1 or not np.array_equal(vert, np.asarray(ori[0].data)):
            raise ValueError(
                f"{fpos} and {fori} disagree with {summary} ({n_layers} layers) or with "
                "each other: the files come from different runs; re-run the step."
            )
        layers.append(np.stack([np.asarray(d.data, np.float64) for d in pos[1:]]))
        arrs = [np.asarray(d.data, np.float64) for d in ori[1:]]
        oris.append(arrs[0] if len(arrs) == 1 else np.stack(arrs))
        hemis.append(np.full(len(vert), hemi))
        vertnos.append(vert)
        g = nib.load(fsurf)
        tris[hemi] = np.asarray(g.agg_data("NIFTI_INTENT_TRIANGLE"), np.int64).reshape(-1, 3)
        mm = np.asarray(g.agg_data("NIFTI_INTENT_POINTSET"), np.float64)
        if mm.shape != layers[-1][0].shape or not np.allclose(
            mm, layers[-1][0] * 1e3, rtol=0, atol=1e-3
        ):
            raise ValueError(f"{fsurf} does not match {fpos}: files from different runs.")
    ori_axis = 1 if oris[0].ndim == 3 else 0
    table = bids.read_tsv(columns_fname(root, subject, session, spacing))
    dropped_rows = [i for i, s in enumerate(table["status"]) if s == "dropped"]
    inv = {v: k for k, v in bids.HEMI_LABEL.items()}
    dropped = dict(
        hemi=np.array([inv[table["hemi"][i]] for i in dropped_rows], "<U2"),
        vertno=np.array([int(table["vertex"][i]) for i in dropped_rows], np.int64),
        reason=np.array([table["reason"][i] for i in dropped_rows], "<U32"),
    )
    xf = info.get("ScannerRASTransform")
    return cls(
        np.concatenate(layers, axis=1),
        np.concatenate(oris, axis=ori_axis),
        np.concatenate(hemis),
        np.concatenate(vertnos),
        tris,
        np.asarray(info["DepthFractions"], np.float64),
        method=info["DepthMethod"],
        spacing=spacing,
        orientation=info["Orientation"],
        subject=info.get("FreeSurferSubject"),
        qc=info.get("QualityChecks"),
        dropped=dropped,
        sources=info.get("FreeSurferInputs"),
        scanner_xform=None if xf is None else np.asarray(xf, float),
    )
