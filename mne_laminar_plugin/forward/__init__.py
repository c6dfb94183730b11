"""Laminar forward models."""

from ._forward import *  # noqa: F401,F403
from ._forward import _USE_MNE_INTERNALS, _fast_engine, _mne_internals  # noqa: F401
