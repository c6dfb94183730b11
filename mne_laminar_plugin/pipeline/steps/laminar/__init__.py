"""Laminar analysis: layer surfaces, laminar leadfield, anatomical predictors,
laminar model comparison, laminar accuracy simulation."""

from . import (
    _01_layer_surfaces,
    _02_leadfield,
    _03_predictors,
    _04_model_comparison,
    _05_accuracy,
    _99_group_predictors,
)

_STEPS = (
    _01_layer_surfaces,
    _02_leadfield,
    _03_predictors,
    _04_model_comparison,
    _05_accuracy,
    _99_group_predictors,
)
