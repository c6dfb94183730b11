"""Anatomical predictors of laminar inference accuracy, the score and priors.

``_predictors`` holds :class:`AnatomicalPredictors` and
:func:`compute_predictors` (thickness, radiality, distance; TSV and GIFTI
output), ``_lf_rms_diff`` the leadfield predictor, ``_scalp`` the scalp
surface, ``_score`` the anatomical score and the prior choice, ``_rois`` the
regions of interest, ``_template`` the mapping of columns to a template.
"""

from ..mesh import closest_points_on_mesh, surface_normals_at
from ._lf_rms_diff import can_whiten, leadfield_rms_diff
from ._predictors import (
    DESCRIPTIONS,
    LONG_NAMES,
    MAP_DESC,
    AnatomicalPredictors,
    compute_predictors,
    map_fname,
    mri_to_mni,
    table_fname,
    write_gifti_map,
)
from ._rois import read_roi, roi_column_name, roi_columns, roi_files, roi_name
from ._scalp import Scalp, read_scalp, scalp_files
from ._template import GAP_FACTOR, map_to_template, nearest_template_vertex
from ._score import (
    PREDICTORS,
    SCORE_NAME,
    SCORE_SIGNS,
    anatomical_score,
    score_weights,
    select_prior,
)

__all__ = [
    "anatomical_score",
    "AnatomicalPredictors",
    "can_whiten",
    "closest_points_on_mesh",
    "compute_predictors",
    "DESCRIPTIONS",
    "GAP_FACTOR",
    "leadfield_rms_diff",
    "LONG_NAMES",
    "MAP_DESC",
    "map_to_template",
    "map_fname",
    "mri_to_mni",
    "nearest_template_vertex",
    "PREDICTORS",
    "read_roi",
    "read_scalp",
    "roi_column_name",
    "roi_columns",
    "roi_files",
    "roi_name",
    "Scalp",
    "scalp_files",
    "SCORE_NAME",
    "SCORE_SIGNS",
    "score_weights",
    "select_prior",
    "surface_normals_at",
    "table_fname",
    "write_gifti_map",
]
