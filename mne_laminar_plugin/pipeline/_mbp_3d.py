"""MBP's 3D report figures drawn on the run's rendering path (MBP 1.10).

MBP's forward, inverse and group-average steps draw their report figures
(coregistration, source estimates) with MNE's Qt 3D backend. The plugin's
``mbp_patch`` hook routes those step functions through
:func:`patch_mbp_3d_steps`, which applies the rendering path decided by
:mod:`mne_laminar_plugin.report._render` (in the main process and in MBP's
loky or dask workers) before MBP's own function runs.
"""

from __future__ import annotations

import sys

from mne.utils import logger

from ..report._render import decide_in_process
from .host import _ORIG_ATTR

# ------------------------------------------------------------ MBP patching
#: MBP 1.10 step functions that draw with MNE's Qt 3D backend: (step module,
#: function name). Each is replaced by the wrapper of the same name below.
MBP_3D_STEPS = (
    ("mne_bids_pipeline.steps.source._04_make_forward", "run_forward"),
    ("mne_bids_pipeline.steps.source._05_make_inverse", "apply_inverse_data"),
    ("mne_bids_pipeline.steps.source._99_group_average", "run_average"),
)


def _call_mbp_step(module_name: str, func_name: str, kwargs: dict):
    """Call MBP's step function with MNE's 3D report figures drawn as decided."""
    import importlib

    from ..report._figures_3d import report_3d_figures

    func = getattr(importlib.import_module(module_name), func_name)
    func = getattr(func, _ORIG_ATTR, func)  # in a worker the module is not patched
    with report_3d_figures(decide_in_process()):
        return func(**kwargs)


# Module-level functions so that loky and dask pickle them by reference: MBP
# dispatches these to its workers, where they apply the decision before MBP's
# own function runs (patches of MBP's modules do not reach the workers).
def run_forward(**kwargs):  # noqa: D103
    return _call_mbp_step(*MBP_3D_STEPS[0], kwargs)


def apply_inverse_data(**kwargs):  # noqa: D103
    return _call_mbp_step(*MBP_3D_STEPS[1], kwargs)


def run_average(**kwargs):  # noqa: D103
    return _call_mbp_step(*MBP_3D_STEPS[2], kwargs)


def patch_mbp_3d_steps(mbp_version: str) -> list[str]:
    """Route MBP's 3D-drawing step functions through the decided render path.

    Called from this package's ``mbp_patch`` hook; written against MBP 1.10
    (the functions in :data:`MBP_3D_STEPS`). Idempotent.

    Returns
    -------
    patched : list of str
        ``module.function`` of every function routed.
    """
    import importlib

    from .host import _parse_version

    if _parse_version(mbp_version) != (1, 10):
        logger.info(f"mne-bids-pipeline {mbp_version}: 3D report figures not patched")
        return []
    patched = []
    this = sys.modules[__name__]
    for module_name, func_name in MBP_3D_STEPS:
        module = importlib.import_module(module_name)
        orig = getattr(module, func_name)
        if getattr(orig, _ORIG_ATTR, None) is not None:
            patched.append(f"{module_name}.{func_name}")
            continue
        wrapper = getattr(this, func_name)
        setattr(wrapper, _ORIG_ATTR, orig)
        setattr(module, func_name, wrapper)
        patched.append(f"{module_name}.{func_name}")
    return patched
