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

import re
from pathlib import Path
from typing import Any

import numpy as np
from mne.utils import _check_option, _validate_type, get_subjects_dir, logger, verbose

from .._conventions import (
    COLUMN_ORIENTATIONS,
    CORTEX_MASKS,
    HEMIS,
    LAYER_METHODS,
    check_layer_array,
    check_n_layers,
)
from ..mesh import vertex_areas, vertex_normals
from ._freesurfer import (
    _check_pair,
    _read_surface,
    _scanner_xform,
    _subsample,
    check_label_file,
    check_spacing,
)

#: Links shorter than this (mm) count as zero length (pial == white).
ZERO_LENGTH_MM = 1e-4

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
        check_label_file(fl, f"The {hemi} cortex label (cortex_mask={mode!r})")
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
        layers = check_layer_array(layers)
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

        Long on purpose: reads, masks and interpolates in one pass per
        hemisphere and records the QC counts of every step in one ``qc`` dict.

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
        n_layers = check_n_layers(n_layers)
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
                check_spacing(spacing, len(sphere[0]), fs)
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
    @classmethod
    @verbose
    def from_lameg(cls, path, *, subjects_dir=None, subject=None, stage="ds",
                   n_layers=None, orientation="link_vector", fixed=True,
                   verbose=None):  # fmt: skip
        """Read a laMEG layer set (``$SUBJECTS_DIR/<subject>/surf/laminar``).

        Parameters
        ----------
        path : path-like
            The ``surf/laminar`` folder laMEG's ``LayerSurfaceSet.create``
            wrote (or the subject folder holding it).
        subjects_dir, subject : path-like, str | None
            The FreeSurfer subject, when ``path`` is not inside it: its
            ``mri/orig.mgz`` (else ``mri/T1.mgz``) converts laMEG's scanner
            RAS to surface RAS, and its ``surf/?h.white`` gives the
            hemisphere sizes.
        stage : "ds" | "combined"
            The decimated set (laMEG's source space) or the full resolution.
        n_layers : int | None
            The set to read when the folder holds several (laMEG names the
            layers ``pial``, ``0.900``, ..., ``white`` from
            ``linspace(1, 0, n_layers)``); None: the one set found.
        orientation : "link_vector" | "ds_surf_norm" | "orig_surf_norm" | "cps"
            Which ``<layer>.ds.<orientation>.<fixed|not_fixed>.gii`` to take
            the orientations from (``ds`` only); without it, link vectors are
            computed from the layers (laMEG's rule: ``white - pial``,
            normalised).
        fixed : bool
            laMEG's ``fixed`` / ``not_fixed`` variant of the orientation files.
        %(verbose)s

        Returns
        -------
        surfaces : LaminarSurfaces
            Columns ordered left then right hemisphere by FreeSurfer vertex;
            ``sources["lameg"]["lameg_vertex"][c]`` is laMEG's vertex of
            column ``c`` (the correspondence across layers is laMEG's).

        Notes
        -----
        The frame conversion is logged and recorded in ``sources``. Vertices
        laMEG removed (aparc 'unknown') are the dropped columns.
        """
        from ._lameg import read_lameg

        kwargs = read_lameg(path, subjects_dir=subjects_dir, subject=subject, stage=stage,
                            n_layers=n_layers, orientation=orientation, fixed=fixed)  # fmt: skip
        return cls(
            kwargs.pop("layers"), kwargs.pop("orientations"), kwargs.pop("hemi"),
            kwargs.pop("vertno"), kwargs.pop("tris"), kwargs.pop("fractions"),
            method="equidistant", subject=subject, **kwargs,
        )  # fmt: skip

    def to_lameg(self, folder, *, dtype="float32", overwrite=False):
        """Write these layers in laMEG's ``ds`` layout (scanner RAS, mm).

        For each layer (laMEG's names ``pial``, ``0.900``, ..., ``white``):
        ``<layer>.ds.gii`` and ``<layer>.ds.<orientation>.<fixed>.gii`` with
        the orientations, each with its JSON sidecar (``t_orig``/``n_orig``
        whose product is the surface RAS -> scanner RAS transform, and the
        columns' hemisphere and FreeSurfer vertex).

        Parameters
        ----------
        folder : path-like
            Usually ``$SUBJECTS_DIR/<subject>/surf/laminar``.
        dtype : "float32" | "float64"
            float32: the GIFTI standard's type, as laMEG and SPM write and
            read (positions to ~1e-5 mm). float64: outside the standard's
            types (nibabel reads it), :meth:`from_lameg` reads the layers back
            to rounding error.
        overwrite : bool

        Returns
        -------
        fnames : list of Path
        """
        from ._lameg import write_lameg

        return write_lameg(self, folder, dtype=dtype, overwrite=overwrite)

    @verbose
    def save(
        self, root, subject, session=None, *, remove_stale=True, source_relpath=None,
        verbose=None,
    ):  # fmt: skip
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
        source_relpath : str | None
            The raw dataset relative to ``root`` (``DatasetLinks["raw"]``);
            None keeps the one of an existing ``dataset_description.json``,
            else ``"../.."``.
        verbose : bool | str | int | None
            Control the logging level (see :func:`mne.verbose`).

        Returns
        -------
        paths : list of Path
            Every file written (data files and sidecars).
        """
        from ._io import _save

        return _save(
            self, Path(root), subject, session, remove_stale=remove_stale,
            source_relpath=source_relpath,
        )  # fmt: skip

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
        from ._io import _load

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
