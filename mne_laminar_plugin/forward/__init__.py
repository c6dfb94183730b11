"""Laminar forward models: every layer's sources through MNE's conductor models.

``_forward`` holds :func:`compute_laminar_forward` (column checks, the choice
of engine, MNE's own forward as ``engine="mne"``). The fast engine computes
the same gain: ``_engine_setup`` (everything that does not depend on the
sources), ``_engine_numba`` (the numba kernels and the threads running them),
``_engine`` (per-chunk computation, scheduling, :func:`compute_gain`),
``_inside`` (ray-crossing inside test); ``_oracle`` is MNE's gain on the same
sources (:func:`compute_gain_mne`), the reference the engine is tested against.
"""

from ._engine import check_inside, compute_gain, gain_ch_names
from ._forward import (
    REASON_MINDIST,
    REASON_MNE,
    REASON_NONFINITE,
    REASON_OUTSIDE,
    REASON_ZERO_ORI,
    LaminarForward,
    check_columns,
    compute_laminar_forward,
    fwd_channel_picks,
    project_fixed,
)
from ._oracle import compute_gain_mne

__all__ = [
    "check_columns",
    "check_inside",
    "compute_gain",
    "compute_gain_mne",
    "compute_laminar_forward",
    "fwd_channel_picks",
    "gain_ch_names",
    "LaminarForward",
    "project_fixed",
    "REASON_MINDIST",
    "REASON_MNE",
    "REASON_NONFINITE",
    "REASON_OUTSIDE",
    "REASON_ZERO_ORI",
]
