"""Anatomical predictors of laminar inference accuracy, the score and priors.

``_predictors`` holds :class:`AnatomicalPredictors` and
:func:`compute_predictors` (thickness, radiality, distance; TSV and GIFTI
output), ``_lf_rms_diff`` the leadfield predictor, ``_scalp`` the scalp
surface, ``_score`` the anatomical score and the prior choice, ``_rois`` the
regions of interest.
"""

from ..mesh import closest_points_on_mesh, surface_normals_at
from ._lf_rms_diff import leadfield_rms_diff
from ._predictors import (
    DESCRIPTIONS,
    LONG_NAMES,
    MAP_DESC,
    AnatomicalPredictors,
    compute_predictors,
    mri_to_mni,
    write_gifti_map,
)
from ._rois import read_roi, roi_column_name, roi_columns, roi_name
from ._scalp import Scalp, read_scalp
from ._score import PREDICTORS, SCORE_NAME, SCORE_SIGNS, anatomical_score, select_prior

__all__ = [
    "anatomical_score",
    "AnatomicalPredictors",
    "closest_points_on_mesh",
    "compute_predictors",
    "DESCRIPTIONS",
    "leadfield_rms_diff",
    "LONG_NAMES",
    "MAP_DESC",
    "mri_to_mni",
    "PREDICTORS",
    "read_roi",
    "read_scalp",
    "roi_column_name",
    "roi_columns",
    "roi_name",
    "Scalp",
    "SCORE_NAME",
    "SCORE_SIGNS",
    "select_prior",
    "surface_normals_at",
    "write_gifti_map",
]
