"""Laminar leadfields."""

from ._formats import *  # noqa: F401,F403
from ._formats import _missing_message, _pretty  # noqa: F401
