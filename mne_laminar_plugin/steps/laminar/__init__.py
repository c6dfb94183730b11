"""Laminar analysis: layer surfaces, laminar leadfield, anatomical predictors.

The stage's steps are the ``_NN_<name>.py`` modules of this folder, in file
name order (like MBP's own stages, whose run order is the ``_STEPS`` tuple).
"""

import importlib
import pkgutil

_STEPS = tuple(
    importlib.import_module(f"{__name__}.{info.name}")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name)
    if info.name[:1] == "_" and info.name[1:3].isdigit()
)
