"""The anatomical score (sum of signed z-scored predictors) and the prior choice."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from mne.utils import _validate_type, warn

#: The four predictors, in the order of the score.
PREDICTORS = ("thickness", "lf_rms_diff", "radiality", "distance")
#: Sign of each z-scored predictor in the composite score.
SCORE_SIGNS = {"thickness": 1.0, "lf_rms_diff": 1.0, "radiality": 1.0, "distance": -1.0}
#: TSV column name of the composite score.
SCORE_NAME = "anatomical_score"


# ================================================================== predictors
def _zscore(x: np.ndarray, mask: np.ndarray, name: str) -> np.ndarray:
    z = np.full(x.shape, np.nan)
    vals = x[mask]
    if vals.size == 0:
        return z
    sd = vals.std()  # population (ddof=0), like scipy.stats.zscore
    if not sd > 0:
        warn(f"{name} is constant over the kept columns: its z-score is set to 0")
        z[mask] = 0.0
    else:
        z[mask] = (vals - vals.mean()) / sd
    return z


def score_weights(
    weights: Mapping[str, float] | None, what: str = "weights"
) -> dict[str, float]:
    """The weight of every predictor in the score: 1 unless given, checked.

    Unknown keys, non-finite values and all weights 0 (every score 0, the
    choice of a column meaningless) are refused, naming ``what``.

    Parameters
    ----------
    weights : dict | None
        Weights by predictor name (missing ones are 1).
    what : str
        The name used in error messages (an argument or option name).

    Returns
    -------
    weights : dict
        A finite weight for each of :data:`PREDICTORS`.
    """
    out = {name: 1.0 for name in PREDICTORS}
    if weights is None:
        return out
    _validate_type(weights, Mapping, what)
    unknown = sorted(set(weights) - set(PREDICTORS))
    if unknown:
        raise ValueError(
            f"{what} has unknown key(s) {unknown}; valid keys: {list(PREDICTORS)}"
        )
    for key, val in weights.items():
        val = float(val)
        if not np.isfinite(val):
            raise ValueError(f"{what}[{key!r}] must be finite, got {val}")
        out[key] = val
    if not any(out.values()):
        raise ValueError(
            f"{what}={dict(weights)} makes every weight 0: every score would be 0 "
            "and the best column arbitrary. Give at least one predictor a non-zero "
            "weight (or None for all 1)."
        )
    return out


def anatomical_score(
    thickness: np.ndarray,
    lf_rms_diff: np.ndarray,
    radiality: np.ndarray,
    distance: np.ndarray,
    weights: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Composite anatomical score of laminar discriminability.

    ``score = w_t z(thickness) + w_lf z(lf_rms_diff) + w_r z(radiality) −
    w_d z(distance)`` (all weights 1 by default), with ``z`` the population
    z-score (ddof=0, as :func:`scipy.stats.zscore`) over the *kept* columns:
    those where every predictor with a non-zero weight is finite. Other
    columns get NaN. A predictor that is constant over the kept columns
    contributes 0 (with a warning).

    Parameters
    ----------
    thickness, lf_rms_diff, radiality, distance : array, shape (n_columns,)
        The predictors (see :func:`compute_predictors`).
    weights : dict | None
        Weights by predictor name (missing keys: 1). The sign of distance is
        applied here: give a positive weight.

    Returns
    -------
    score : array, shape (n_columns,)
        Higher = better predicted laminar discriminability; NaN for columns
        that are not kept.
    """
    w = score_weights(weights)
    arrays = {}
    for name, x in zip(PREDICTORS, (thickness, lf_rms_diff, radiality, distance)):
        x = np.asarray(x, float)
        if x.ndim != 1:
            raise ValueError(f"{name} must be 1D (one value per column), got {x.shape}")
        arrays[name] = x
    sizes = {x.size for x in arrays.values()}
    if len(sizes) != 1:
        raise ValueError(
            f"predictors differ in length: { {k: v.size for k, v in arrays.items()} }"
        )
    used = [name for name in PREDICTORS if w[name] != 0]
    keep = np.ones(sizes.pop(), bool)
    for name in used:
        keep &= np.isfinite(arrays[name])
    score = np.zeros(keep.shape)
    for name in used:
        score += SCORE_SIGNS[name] * w[name] * _zscore(arrays[name], keep, name)
    score[~keep] = np.nan
    return score


def select_prior(score: np.ndarray, roi_columns: np.ndarray) -> int:
    """The column with the highest score inside a region of interest.

    Parameters
    ----------
    score : array, shape (n_columns,)
        Anatomical score (NaN columns are never selected).
    roi_columns : array of int | array of bool, shape (n_columns,)
        The ROI's column indices, or a boolean mask over columns.

    Returns
    -------
    column : int
        Index of the chosen column (into ``score``).
    """
    score = np.asarray(score, float)
    roi = np.asarray(roi_columns)
    if roi.dtype == bool:
        if roi.shape != score.shape:
            raise ValueError(
                f"boolean roi_columns must have the score's shape {score.shape}, "
                f"got {roi.shape}"
            )
        roi = np.flatnonzero(roi)
    roi = roi.astype(np.int64, copy=False).ravel()
    if roi.size == 0:
        raise ValueError("roi_columns is empty: the ROI contains no kept column")
    if roi.min() < 0 or roi.max() >= score.size:
        raise ValueError(
            f"roi_columns must index the {score.size} columns, got "
            f"{roi.min()}..{roi.max()}"
        )
    vals = score[roi]
    finite = np.isfinite(vals)
    if not finite.any():
        raise ValueError(
            f"No column of the ROI ({roi.size} columns) has a finite score"
        )
    vals = np.where(finite, vals, -np.inf)
    return int(roi[np.argmax(vals)])
