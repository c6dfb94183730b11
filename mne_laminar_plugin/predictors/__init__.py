"""Anatomical predictors."""

from ._predictors import *  # noqa: F401,F403
from ._predictors import _check_weights, _physical_units, _scalp_candidates  # noqa: F401
