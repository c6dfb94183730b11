"""Laminar analysis: layer surfaces, laminar leadfield, anatomical predictors."""

from . import (
    _01_layer_surfaces,
    _02_leadfield,
    _03_predictors,
    _99_group_predictors,
)

_STEPS = (
    _01_layer_surfaces,
    _02_leadfield,
    _03_predictors,
    _99_group_predictors,
)
