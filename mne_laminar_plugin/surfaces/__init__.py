"""Laminar layer surfaces."""

from ._surfaces import *  # noqa: F401,F403
from ._surfaces import _density, _face_normals  # noqa: F401
