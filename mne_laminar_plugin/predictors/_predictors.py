"""Anatomical predictors of laminar inference accuracy, the score and priors.

Per cortical column (a vertex seen at every depth), following Szul et al.
(2025) and the laMEG tutorial "Anatomical Predictors of Laminar Inference
Accuracy", re-derived from the published formulas:

``thickness`` (mm)
    ``‖pial_v − white_v‖`` on corresponding vertices (first and last layer),
    not FreeSurfer's ``?h.thickness``.
``lf_rms_diff``
    ``sqrt(mean_c (G[deep, v, c] − G[pial, v, c])²)`` over sensors ``c``, the
    RMS of the deepest minus the most superficial layer's leadfield. Channel
    types are never summed in raw units: either the noise-whitened leadfield
    is used (a whitener or a noise covariance is given), or a single channel
    type (``ch_type``), and the units are recorded.
``radiality`` (0–1)
    ``|cos|`` between the column orientation (pial layer) and the scalp
    normal at the point of the scalp closest to the pial vertex: the normal
    of the closest triangle, or where that point is an edge or vertex shared
    by several triangles, the normalized sum of their normals.
``distance`` (mm)
    Distance from the pial vertex to the scalp surface: the exact closest
    point on the scalp's triangles (not the nearest scalp vertex, which
    discretises the distance by the mesh spacing).

The composite score is ``z(thickness) + z(lf_rms_diff) + z(radiality) −
z(distance)``, each ``z`` a population z-score (ddof=0) over the columns
where every predictor is finite; columns with a non-finite predictor get a
NaN score and are never selected as best vertex or prior.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mne.utils import _check_option, logger, verbose, warn

from .. import bids
from .._conventions import check_layer_array
from ..mesh import (
    _rowdot,
    _signed_volume,
    _triangle_normals,
    closest_points_on_mesh,
    surface_normals_at,
)
from ._lf_rms_diff import _leadfield_parts, _LFView, leadfield_rms_diff
from ._rois import roi_column_name, roi_columns, roi_name
from ._scalp import Scalp, _get_scalp
from ._score import (
    PREDICTORS,
    SCORE_NAME,
    score_weights,
    anatomical_score,
    select_prior,
)

#: ``desc-`` label of each map (see :data:`mne_laminar_plugin.bids.DESCRIPTIONS`).
MAP_DESC = {
    "thickness": "thickness",
    "lf_rms_diff": "lfrmsdiff",
    "radiality": "radiality",
    "distance": "distance",
    SCORE_NAME: "score",
}
LONG_NAMES = {
    "thickness": "Cortical thickness along the column",
    "lf_rms_diff": "Leadfield RMS difference, deepest minus most superficial layer",
    "radiality": "Radiality of the column to the scalp",
    "distance": "Distance from the pial vertex to the scalp",
    SCORE_NAME: "Composite anatomical score",
}
DESCRIPTIONS = {
    "thickness": "Euclidean distance between the pial (layer 0) and white (last "
    "layer) position of the column, in mm.",
    "lf_rms_diff": "sqrt(mean over channels of (G_deep - G_pial)^2) of the "
    "fixed-orientation laminar leadfield; NaN where the pial or deepest "
    "leadfield of the column is zero or not finite (dropped column).",
    "radiality": "|cos| of the angle between the column orientation (pial layer) "
    "and the scalp normal at the point of the scalp closest to the pial vertex "
    "(normal of the closest triangle; on an edge or vertex, the normalized sum "
    "of the normals of the triangles sharing it); 1 = radial, 0 = tangential.",
    "distance": "Distance from the pial vertex to the closest point of the scalp "
    "surface (exact point-to-triangle distance), in mm.",
    SCORE_NAME: "z(thickness) + z(lf_rms_diff) + z(radiality) - z(distance), "
    "population z-scores (ddof=0) over the columns where every predictor is "
    "finite (optionally weighted); NaN elsewhere. Higher = better predicted "
    "laminar discriminability.",
}


@dataclass
class AnatomicalPredictors:
    """Anatomical predictors of laminar inference accuracy, one value per column.

    Attributes
    ----------
    thickness : array, shape (n_columns,)
        White-pial distance (mm).
    lf_rms_diff : array, shape (n_columns,)
        Leadfield RMS difference, deepest minus pial (``units["lf_rms_diff"]``).
    radiality : array, shape (n_columns,)
        ``|cos|`` of the column orientation vs. scalp normal (0-1).
    distance : array, shape (n_columns,)
        Pial vertex to scalp (mm).
    hemi : array of str, shape (n_columns,)
        ``"lh"`` / ``"rh"``.
    vertno : array of int, shape (n_columns,)
        FreeSurfer vertex id of each column in its hemisphere.
    pos : array, shape (n_columns, 3) | None
        Pial position of each column (m, MRI surface RAS).
    units : dict
        Units of every predictor.
    methods : dict
        How each predictor was computed (scalp, leadfield channels, ...).
    saved_score : array, shape (n_columns,) | None
        The score column of the TSV it was read from (:meth:`from_tsv`), else
        None (:meth:`score` computes it).
    """

    thickness: np.ndarray
    lf_rms_diff: np.ndarray
    radiality: np.ndarray
    distance: np.ndarray
    hemi: np.ndarray
    vertno: np.ndarray
    pos: np.ndarray | None = None
    units: dict = field(default_factory=dict)
    methods: dict = field(default_factory=dict)
    saved_score: np.ndarray | None = None

    def __post_init__(self):
        for name in PREDICTORS:
            setattr(self, name, np.asarray(getattr(self, name), float))
        self.hemi = np.asarray(self.hemi, str)
        self.vertno = np.asarray(self.vertno, np.int64)
        n = self.hemi.size
        for name in (*PREDICTORS, "vertno"):
            if getattr(self, name).shape != (n,):
                raise ValueError(
                    f"{name} has shape {getattr(self, name).shape}, expected ({n},)"
                )
        bad = sorted(set(self.hemi.tolist()) - {"lh", "rh"})
        if bad:
            raise ValueError(f"hemi must be 'lh'/'rh', got {bad}")
        if self.pos is not None:
            self.pos = np.asarray(self.pos, float)
            if self.pos.shape != (n, 3):
                raise ValueError(f"pos has shape {self.pos.shape}, expected ({n}, 3)")
        units = {
            "thickness": "mm",
            "lf_rms_diff": "arbitrary",
            "radiality": "arbitrary",
            "distance": "mm",
            SCORE_NAME: "arbitrary",
        }
        units.update(self.units or {})
        self.units = units

    @property
    def n_columns(self) -> int:
        """Number of columns."""
        return self.hemi.size

    def __len__(self) -> int:
        return self.n_columns

    def __repr__(self) -> str:
        n_nan = int((~self.kept).sum())
        return (
            f"<AnatomicalPredictors | {self.n_columns} columns "
            f"(lh {int((self.hemi == 'lh').sum())}, rh {int((self.hemi == 'rh').sum())}), "
            f"{n_nan} not kept, lf_rms_diff in {self.units['lf_rms_diff']}>"
        )

    @property
    def kept(self) -> np.ndarray:
        """Columns where every predictor is finite (used for the z-scores)."""
        keep = np.ones(self.n_columns, bool)
        for name in PREDICTORS:
            keep &= np.isfinite(getattr(self, name))
        return keep

    def as_dict(self) -> dict[str, np.ndarray]:
        """The four predictors by name."""
        return {name: getattr(self, name) for name in PREDICTORS}

    def score(self, weights: Mapping[str, float] | None = None) -> np.ndarray:
        """Composite score, see :func:`anatomical_score`."""
        return anatomical_score(*(getattr(self, n) for n in PREDICTORS), weights=weights)

    def best_vertex(self, weights: Mapping[str, float] | None = None) -> int:
        """Column index with the highest score over the whole cortex.

        Use ``hemi[idx]`` and ``vertno[idx]`` for its hemisphere and
        FreeSurfer vertex id.
        """
        return select_prior(self.score(weights), np.arange(self.n_columns))

    def roi_columns(
        self,
        roi: Any,
        subject: str | None = None,
        subjects_dir: str | os.PathLike | None = None,
    ) -> np.ndarray:
        """Columns of a region of interest, see :func:`roi_columns`."""
        return roi_columns(roi, self.hemi, self.vertno, subject, subjects_dir)

    def priors(
        self,
        rois: Sequence[Any],
        subject: str | None = None,
        subjects_dir: str | os.PathLike | None = None,
        *,
        weights: Mapping[str, float] | None = None,
    ) -> dict[str, dict]:
        """The prior (highest-score column) of each region of interest.

        Parameters
        ----------
        rois : list of str | mne.Label
            ROI specifications, see :func:`read_roi`.
        subject, subjects_dir
            FreeSurfer subject, for annotation and subject-relative ROIs.
        weights : dict | None
            Score weights.

        Returns
        -------
        priors : dict
            By ROI name: ``column``, ``hemi``, ``vertex``, ``score``,
            ``n_columns`` (in the ROI) and ``pos_mri_mm`` (pial position,
            FreeSurfer surface RAS in mm, if known).
        """
        score = self.score(weights)
        out = {}
        for roi in rois:
            name = roi_name(roi)
            cols = self.roi_columns(roi, subject, subjects_dir)
            col = select_prior(score, cols)
            out[name] = self.column_record(col, score) | dict(n_columns=int(cols.size))
        return out

    def column_record(self, col: int, score: np.ndarray) -> dict:
        """Column index, hemisphere, vertex, score and pial MRI position (mm)."""
        rec = dict(
            column=int(col),
            hemi=str(self.hemi[col]),
            vertex=int(self.vertno[col]),
            # 10 significant digits: reruns agree to the bit (the last digits of
            # a z-score sum are floating-point noise of the BLAS reductions)
            score=float(f"{float(score[col]):.10g}"),
        )
        if self.pos is not None:
            rec["pos_mri_mm"] = [round(float(v) * 1e3, 3) for v in self.pos[col]]
        return rec

    # ----------------------------------------------------------------- I/O
    def table(
        self,
        weights: Mapping[str, float] | None = None,
        rois: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Columns of the TSV (name -> values)."""
        score = self.score(weights)
        cols: dict[str, Any] = dict(
            column=np.arange(self.n_columns),
            hemi=np.array([bids.HEMI_LABEL[h] for h in self.hemi]),
            vertex=self.vertno,
        )
        if self.pos is not None:
            for k, axis in enumerate("xyz"):
                cols[axis] = np.round(self.pos[:, k] * 1e3, 4)
        for name in PREDICTORS:
            cols[name] = getattr(self, name)
        cols[SCORE_NAME] = score
        for name, idx in (rois or {}).items():
            member = np.zeros(self.n_columns, bool)
            member[np.asarray(idx, np.int64)] = True
            cols[roi_column_name(name)] = member
        return cols

    def sidecar(
        self,
        weights: Mapping[str, float] | None = None,
        rois: Mapping[str, np.ndarray] | None = None,
    ) -> dict:
        """JSON sidecar of the TSV: every column described with its units."""
        desc: dict[str, Any] = {
            "column": {
                "LongName": "Column index",
                "Description": "Index of the column in the laminar model (the "
                "leadfield source of column c at depth l is l * n_columns + c).",
            },
            "hemi": {
                "LongName": "Hemisphere",
                "Levels": {"L": "left", "R": "right"},
            },
            "vertex": {
                "LongName": "FreeSurfer vertex",
                "Description": "Vertex id of the column in the hemisphere's "
                "FreeSurfer surfaces (?h.white/?h.pial).",
            },
        }
        if self.pos is not None:
            for axis in "xyz":
                desc[axis] = {
                    "LongName": f"Pial {axis} coordinate",
                    "Description": f"{axis} of the column's pial vertex, FreeSurfer "
                    "surface RAS (tkRAS) of the subject's MRI.",
                    "Units": "mm",
                }
        for name in (*PREDICTORS, SCORE_NAME):
            desc[name] = {
                "LongName": LONG_NAMES[name],
                "Description": DESCRIPTIONS[name]
                + (f" Method: {self.methods[name]}." if name in self.methods else ""),
                "Units": self.units[name],
            }
        desc["radiality"]["Minimum"] = 0
        desc["radiality"]["Maximum"] = 1
        for name in rois or {}:
            desc[roi_column_name(name)] = {
                "LongName": f"Member of ROI {name}",
                "Description": f"Whether the column belongs to the region of interest {name!r}.",
                "Levels": {"true": "in the ROI", "false": "not in the ROI"},
            }
        return desc

    def to_tsv(
        self,
        fname: str | os.PathLike,
        *,
        weights: Mapping[str, float] | None = None,
        rois: Mapping[str, np.ndarray] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write the table (one row per column) and its JSON sidecar, atomically.

        Parameters
        ----------
        fname : path-like
            The ``.tsv`` file; the sidecar is the same name with ``.json``.
        weights : dict | None
            Score weights.
        rois : dict | None
            ROI name -> column indices, written as ``roi_<name>`` columns.
        extra : dict | None
            Extra top-level keys of the sidecar.

        Returns
        -------
        fname : pathlib.Path
            The TSV path.
        """
        fname = Path(fname)
        if fname.suffix != ".tsv":
            raise ValueError(f"fname must end with .tsv, got {fname.name}")
        table = self.table(weights, rois)
        side = self.sidecar(weights, rois)
        score = table[SCORE_NAME]
        meta: dict[str, Any] = {
            "Description": "Anatomical predictors of laminar inference accuracy "
            "(Szul et al. 2025), one row per cortical column.",
            "ScoreWeights": score_weights(weights),
            "Methods": dict(self.methods),
            "NColumnsKept": int(np.isfinite(score).sum()),
        }
        if np.isfinite(score).any():
            meta["BestColumn"] = self.column_record(int(np.nanargmax(score)), score)
        meta.update(extra or {})
        bids.write_tsv(fname, table)
        bids.write_json(bids.sidecar(fname), {**side, **meta})
        return fname

    @classmethod
    def from_tsv(cls, fname: str | os.PathLike) -> AnatomicalPredictors:
        """Read predictors written by :meth:`to_tsv`."""
        fname = Path(fname)
        if not fname.is_file():
            raise FileNotFoundError(f"predictors TSV not found: {fname}")
        cols = bids.read_tsv(fname)
        missing = [c for c in ("hemi", "vertex", *PREDICTORS) if c not in cols]
        if missing:
            raise ValueError(f"{fname} is not a predictors table: no column(s) {missing}")
        side_path = bids.sidecar(fname)
        side = bids.read_json(side_path) if side_path.is_file() else {}

        def num(name):
            return np.array(
                [np.nan if v == "n/a" else float(v) for v in cols[name]], float
            )

        inv = {v: k for k, v in bids.HEMI_LABEL.items()}
        pos = None
        if all(a in cols for a in "xyz"):
            pos = np.stack([num(a) for a in "xyz"], axis=1) / 1e3
        units = {
            name: side[name]["Units"]
            for name in (*PREDICTORS, SCORE_NAME)
            if isinstance(side.get(name), dict) and "Units" in side[name]
        }
        return cls(
            **{name: num(name) for name in PREDICTORS},
            hemi=np.array([inv.get(h, h) for h in cols["hemi"]]),
            vertno=np.array([int(v) for v in cols["vertex"]]),
            pos=pos,
            units=units,
            methods=dict(side.get("Methods", {})),
            saved_score=num(SCORE_NAME) if SCORE_NAME in cols else None,
        )


# ============================================================ compute (public)
def _surface_arrays(surfaces: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    for attr in ("layers", "orientations", "hemi", "vertno"):
        if not hasattr(surfaces, attr):
            raise TypeError(
                f"surfaces must be a LaminarSurfaces (attributes layers, orientations, "
                f"hemi, vertno); {type(surfaces).__name__} has no {attr!r}"
            )
    layers = check_layer_array(surfaces.layers, what="surfaces.layers")
    n_col = layers.shape[1]
    ori = np.asarray(surfaces.orientations, float)
    if ori.shape == (layers.shape[0], n_col, 3):
        ori = ori[0]  # the pial layer's orientation
    if ori.shape != (n_col, 3):
        raise ValueError(
            f"surfaces.orientations must have shape ({n_col}, 3) or "
            f"({layers.shape[0]}, {n_col}, 3), got {ori.shape}"
        )
    hemi = np.asarray(surfaces.hemi, str)
    vertno = np.asarray(surfaces.vertno, np.int64)
    if hemi.shape != (n_col,) or vertno.shape != (n_col,):
        raise ValueError(
            f"surfaces.hemi/vertno must have shape ({n_col},), got {hemi.shape}/{vertno.shape}"
        )
    extent = np.nanmax(np.abs(layers)) if np.isfinite(layers).any() else 0.0
    if extent > 1.0:
        raise ValueError(
            f"surfaces.layers reach {extent:g}: they look like mm, expected metres "
            "(MRI surface RAS)"
        )
    return layers, ori, hemi, vertno


@verbose
def compute_predictors(
    surfaces: Any,
    leadfield: Any,
    scalp: Any = None,
    *,
    whitener: Any = None,
    info: Any = None,
    rank: Any = None,
    ch_type: str | None = None,
    n_jobs: int | None = None,
    verbose: Any = None,
) -> AnatomicalPredictors:
    """Compute the four anatomical predictors of laminar inference accuracy.

    Long on purpose: the checks of the leadfield/surfaces layout, then the
    four predictors in turn, sharing the kept columns and their masks.

    Parameters
    ----------
    surfaces : LaminarSurfaces
        Layer surfaces: ``layers`` (n_layers, n_columns, 3) in metres (MRI
        surface RAS, layer 0 = pial, last = white), ``orientations``
        (n_columns, 3) or (n_layers, n_columns, 3), ``hemi``, ``vertno``.
    leadfield : LeadfieldData | array, shape (n_channels, n_layers * n_columns)
        Layer-major laminar leadfield of the same columns (source
        ``l * n_columns + c``), e.g. from ``simulate``, ``load`` or
        ``random`` retrieval.
    scalp : tuple | dict | path-like | Scalp | None
        Scalp surface in metres, MRI frame: ``(rr, tris)``, an MNE surface
        dict, a path to ``bem/outer_skin.surf`` or ``bem/<subject>-head*.fif``,
        or a :class:`Scalp` from :func:`read_scalp`. None: read with
        :func:`read_scalp` from ``surfaces.subject``/``surfaces.subjects_dir``.
    whitener : None | array | mne.Covariance
        Compute ``lf_rms_diff`` on the noise-whitened leadfield, see
        :func:`leadfield_rms_diff`.
    info : mne.Info | None
        Measurement info, for a covariance ``whitener``.
    rank : None | dict | str
        Rank of a covariance ``whitener``.
    ch_type : None | str
        Channel type of ``lf_rms_diff`` without a whitener, see
        :func:`leadfield_rms_diff`.
    n_jobs : int | None
        Threads of the closest-point search (None: 1, -1: all cores).
    %(verbose)s

    Returns
    -------
    predictors : AnatomicalPredictors
        Thickness (mm), lf_rms_diff, radiality (0-1) and distance (mm) per
        column, with hemispheres, vertex ids, units and methods.

    Notes
    -----
    Radiality and distance use the pial layer (position and orientation),
    like laMEG. The closest scalp point is exact (point to triangle); the
    scalp normal there is the normal of the closest triangle (see
    :func:`surface_normals_at` for edges and vertices). Columns with a
    zero or non-finite leadfield, a non-finite position or a zero-length
    orientation get NaN for the affected predictor; they are excluded from
    the z-scores of :meth:`AnatomicalPredictors.score` and never selected.
    """
    layers, ori, hemi, vertno = _surface_arrays(surfaces)
    n_layers, n_col = layers.shape[:2]
    logger.info(f"Anatomical predictors: {n_col} columns x {n_layers} layers")
    # ------------------------------------------------------- leadfield size
    lf = _leadfield_parts(leadfield)
    leadfield = _LFView(lf)  # parsed once (free -> fixed done here)
    n_src = lf.G.shape[1]
    lf_layers = n_layers
    if lf.n_layers is not None and lf.n_layers != n_layers:
        if lf.n_layers == 2 and lf.loaded_layers == [0, n_layers - 1]:
            lf_layers = 2  # only the pial and deepest layers were read
        else:
            raise ValueError(
                f"The leadfield has n_layers={lf.n_layers}, the surfaces {n_layers}: "
                "use the leadfield computed for these layer surfaces"
            )
    columns = np.arange(n_col)
    if lf.columns is not None:  # only the kept columns are in the leadfield
        if lf.n_columns is not None and lf.n_columns != n_col:
            raise ValueError(
                f"The leadfield was computed for {lf.n_columns} columns, the surfaces "
                f"have {n_col}: use the leadfield computed for these layer surfaces"
            )
        columns = lf.columns
        if columns.size and (
            columns.min() < 0 or columns.max() >= n_col or (np.diff(columns) <= 0).any()
        ):
            raise ValueError(
                f"leadfield.columns must be increasing column ids in 0..{n_col - 1}"
            )
    for attr in ("hemi", "vertno"):
        other = getattr(lf, attr)
        if other is not None:
            mine = hemi if attr == "hemi" else vertno
            if other.shape != mine.shape and other.shape == columns.shape:
                mine = mine[columns]
            if other.shape == mine.shape and not np.array_equal(other.astype(mine.dtype), mine):
                raise ValueError(
                    f"leadfield.{attr} differs from surfaces.{attr}: the leadfield was "
                    "computed for other layer surfaces"
                )
    if n_src != lf_layers * len(columns):
        raise ValueError(
            f"The leadfield has {n_src} sources but the surfaces have {lf_layers} "
            f"layers x {len(columns)} columns = {lf_layers * len(columns)}: use the "
            "leadfield computed for these layer surfaces (layer-major, source "
            "l * n_columns + c)"
        )
    scalp = _get_scalp(scalp, surfaces)
    # ------------------------------------------------------------ thickness
    pial = layers[0]
    thickness = np.linalg.norm(pial - layers[-1], axis=1) * 1e3
    # -------------------------------------------------------- lf_rms_diff
    lf_vals, lf_meta = leadfield_rms_diff(
        leadfield, lf_layers, whitener=whitener, info=info, rank=rank, ch_type=ch_type
    )
    lf_diff = np.full(n_col, np.nan)
    lf_diff[columns] = lf_vals
    if len(columns) < n_col:
        logger.info(
            f"    {n_col - len(columns)} column(s) not in the leadfield (dropped): "
            "lf_rms_diff NaN"
        )
    # -------------------------------------------------- distance, radiality
    ok = np.isfinite(pial).all(axis=1)
    dist = np.full(n_col, np.nan)
    radiality = np.full(n_col, np.nan)
    d, closest, tri = closest_points_on_mesh(pial[ok], scalp.rr, scalp.tris, n_jobs=n_jobs)
    dist[ok] = d * 1e3
    scalp_nn = surface_normals_at(scalp.rr, scalp.tris, closest, tri)
    norm = np.linalg.norm(ori, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        o = ori / norm[:, np.newaxis]
    cosang = np.abs(_rowdot(o[ok], scalp_nn))
    good_n = np.linalg.norm(scalp_nn, axis=1) > 0
    radiality[ok] = np.where(good_n & (norm[ok] > 0), np.clip(cosang, 0.0, 1.0), np.nan)
    n_zero_ori = int((~(norm > 0) & ok).sum())
    if n_zero_ori:
        logger.info(f"    {n_zero_ori} column(s) with a zero-length orientation: radiality NaN")
    _check_inside(pial[ok], closest, tri, scalp)
    methods = {
        "thickness": "norm(pial - white) of corresponding layer vertices",
        "lf_rms_diff": lf_meta["description"],
        "radiality": "pial-layer column orientation vs. scalp normal at the closest "
        "point (the closest triangle's normal; on an edge or vertex the normalized "
        f"sum of the sharing triangles' normals) ({scalp.source})",
        "distance": f"pial vertex to closest point on the scalp triangles ({scalp.source})",
        "lf_rms_diff_method": lf_meta["method"],
        "lf_rms_diff_ch_type": lf_meta["ch_type"],
        "lf_rms_diff_n_channels": lf_meta["n_channels"],
        "scalp": scalp.source,
        "n_layers": int(n_layers),
    }
    pred = AnatomicalPredictors(
        thickness=thickness,
        lf_rms_diff=lf_diff,
        radiality=radiality,
        distance=dist,
        hemi=hemi,
        vertno=vertno,
        pos=pial,
        units={"lf_rms_diff": lf_meta["unit"]},
        methods=methods,
    )
    logger.info(f"    {pred!r}")
    return pred


def _check_inside(points, closest, tri, scalp: Scalp) -> None:
    """Warn when pial vertices lie outside a closed scalp (bad coordinates?).

    Outside = the vector from the closest scalp point to the vertex points
    along the outward normal of the closest triangle (exact for a closest
    point inside a triangle; a heuristic at edges and vertices).
    """
    vol = _signed_volume(scalp.rr, scalp.tris)
    ext = np.ptp(scalp.rr, axis=0)
    if abs(vol) < 0.01 * np.prod(ext):  # open or degenerate: no inside
        return
    nn = _triangle_normals(scalp.rr, scalp.tris) * np.sign(vol)
    outside = _rowdot(points - closest, nn[tri]) > 1e-6
    if outside.any():
        warn(
            f"{int(outside.sum())} pial vertex/vertices lie outside the scalp surface "
            f"({scalp.source}): are the surfaces and the scalp in the same frame (MRI, m)?"
        )


# ======================================================================= names
def map_fname(root, subject, session, hemi, spacing, name) -> Path:
    """GIFTI map of one predictor (or the score) of one hemisphere."""
    return bids.bids_fname(
        root, subject=subject, session=session, datatype="anat", hemi=hemi,
        space="individual", den=spacing, desc=MAP_DESC[name], suffix="stat",
        extension=".func.gii",
    )  # fmt: skip


def table_fname(root, subject, session, spacing) -> Path:
    """The predictors TSV (one row per column); its sidecar has the priors."""
    return bids.bids_fname(
        root, subject=subject, session=session, datatype="anat", space="individual",
        den=spacing, desc="laminar", suffix="predictors", extension=".tsv",
    )  # fmt: skip


# ========================================================================= MNI
def mri_to_mni(
    pos: np.ndarray, subject: str, subjects_dir: str | os.PathLike | None = None
) -> np.ndarray | None:
    """MRI (surface RAS, m) to MNI (Talairach, mm), or None without talairach.xfm."""
    import mne

    try:
        xfm = mne.read_talxfm(subject, subjects_dir, verbose="error")
    except Exception as exc:  # missing talairach.xfm / T1.mgz
        logger.info(f"    No MNI coordinates ({type(exc).__name__}: {exc})")
        return None
    return mne.transforms.apply_trans(xfm, np.asarray(pos, float)) * 1e3


# ======================================================================= GIFTI
def write_gifti_map(
    fname: str | os.PathLike,
    values: np.ndarray,
    hemi: str,
    *,
    name: str,
    meta: Mapping[str, str] | None = None,
) -> Path:
    """Write one value per column of a hemisphere as a ``.func.gii``, atomically."""
    import nibabel as nib

    _check_option("hemi", hemi, ("lh", "rh"))
    values = np.asarray(values, np.float32)
    structure = {"lh": "CortexLeft", "rh": "CortexRight"}[hemi]
    darray = nib.gifti.GiftiDataArray(
        values,
        intent="NIFTI_INTENT_NONE",
        datatype="NIFTI_TYPE_FLOAT32",
        meta=nib.gifti.GiftiMetaData({"Name": name}),
    )
    img = nib.gifti.GiftiImage(
        darrays=[darray],
        meta=nib.gifti.GiftiMetaData(
            {"AnatomicalStructurePrimary": structure, **(meta or {})}
        ),
    )
    fname = Path(fname)
    with bids.atomic_path(fname) as tmp:
        nib.save(img, tmp)
    return fname
