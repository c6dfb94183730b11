"""Laminar accuracy simulation: a source on every layer of every column.

:func:`simulate_laminar_accuracy` runs Szul et al. (2025)'s whole-brain
simulation (per-layer MSP model comparison of :mod:`..inverse` for a patch
on each layer of each column) in minutes and returns a
:class:`LaminarAccuracy` (per-column accuracy, error, bias, ΔF matrices, and
how well the anatomical predictors predict accuracy).
"""

from ._accuracy import PAPER_AUC, LaminarAccuracy
from ._simulate import simulate_laminar_accuracy

__all__ = ["LaminarAccuracy", "PAPER_AUC", "simulate_laminar_accuracy"]
