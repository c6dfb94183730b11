"""This package's MBP plugin: the ``laminar`` stage and its ``laminar_*`` options.

Registered in the ``mne_bids_pipeline.plugins`` entry-point group (see
``pyproject.toml``) and loaded by :mod:`mne_laminar_plugin.pipeline.host`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .host import _ORIG_ATTR, ConfigOption, StepGroup, hookimpl

STAGE = "laminar"


@hookimpl
def mbp_register_steps() -> list[StepGroup]:
    from .steps import laminar

    return [StepGroup(stage=STAGE, modules=laminar._STEPS, in_all=True, after="source")]


@hookimpl
def mbp_config_options() -> dict[str, ConfigOption]:
    from .options import laminar_options

    return laminar_options()


@hookimpl
def mbp_patch(mbp_version: str) -> None:
    """Honour ``laminar_offline_mode`` in MBP's source group average (MBP 1.10).

    MBP 1.10's ``source/_99_group_average`` calls
    ``mne.datasets.fetch_fsaverage`` unconditionally, which downloads when
    fsaverage is not complete in ``subjects_dir``. With ``laminar_offline_mode``
    set, the step is skipped instead (with a log message). The step's
    ``main`` runs in the main process, so patching it here is enough.

    Also routes MBP's 3D report figures (coregistration, source estimates)
    through the run's rendering path, so that they work without a display
    (:func:`mne_laminar_plugin.pipeline._mbp_3d.patch_mbp_3d_steps`), and
    takes MBP's system information from the figure worker when it is ready
    (:func:`patch_sys_info`), finds the running step without
    ``inspect.stack()`` (:func:`patch_step_path`), and does not read back a
    report file it has just saved (:mod:`._report_cache`).
    """
    from mne_bids_pipeline.steps.source import _99_group_average as step

    from . import _report_cache
    from ._mbp_3d import patch_mbp_3d_steps

    patch_mbp_3d_steps(mbp_version)
    patch_sys_info()
    patch_step_path()
    _report_cache.install()

    if getattr(step.main, "__mne_laminar_offline__", False):
        return
    orig_main = step.main

    def main(*, config) -> None:
        from mne_bids_pipeline._config_utils import get_fs_subjects_dir
        from mne_bids_pipeline._logging import gen_log_kwargs, logger

        if getattr(config, "laminar_offline_mode", False):
            missing = fsaverage_missing(Path(get_fs_subjects_dir(config)))
            if missing:
                msg = (
                    "Skipping, laminar_offline_mode is set and fsaverage is not complete "
                    f"in subjects_dir ({len(missing)} files missing, e.g. {missing[0]}) …"
                )
                logger.info(**gen_log_kwargs(message=msg, subject="average"))
                return
        orig_main(config=config)

    main.__mne_laminar_offline__ = True  # type: ignore[attr-defined]
    main.__doc__ = orig_main.__doc__
    step.main = main


def fsaverage_missing(subjects_dir: Path) -> list[str]:
    """Files of MNE's fsaverage manifest that are missing from ``subjects_dir``."""
    import mne

    manifest_dir = Path(mne.__file__).parent / "datasets" / "_fsaverage"
    missing = []
    for manifest, base in (("root.txt", subjects_dir), ("bem.txt", subjects_dir / "fsaverage")):
        for line in (manifest_dir / manifest).read_text().splitlines():
            line = line.strip()
            if line and not (base / line).exists():
                missing.append(line)
    return missing


def patch_sys_info() -> None:
    """MBP's cached ``mne.sys_info()`` text from the figure worker (MBP 1.10).

    MBP adds ``mne.sys_info()`` to the report when a process first saves it
    (``_report._cached_sys_info``, 1-2 s). The laminar figure worker
    (:mod:`mne_laminar_plugin.report._worker`) computes it at start on the
    other core, in the same environment; MBP's first report save takes it
    (waiting if the worker is on it) instead of computing it again. Otherwise
    (no worker, or it has not started it) MBP's own function runs, with the
    OpenGL strings of the run's test render
    (:func:`~mne_laminar_plugin.report._render.known_gpu_info`). Idempotent.
    """
    import functools

    from mne_bids_pipeline import _report

    orig = getattr(_report, "_cached_sys_info", None)
    if orig is None or getattr(orig, _ORIG_ATTR, None) is not None:
        return

    @functools.lru_cache(maxsize=1)  # MBP asks cache_info() whether it ran
    def _cached_sys_info() -> str:
        from ..report._render import known_gpu_info
        from ..report._worker import system_info_from_worker

        text = system_info_from_worker()
        if text is None:
            with known_gpu_info():
                text = orig()
        return text

    setattr(_cached_sys_info, _ORIG_ATTR, orig)
    _report._cached_sys_info = _cached_sys_info


def patch_step_path() -> None:
    """MBP's ``_run._get_step_path`` by walking the frames (MBP 1.10; same result).

    MBP names a step's sheet of the log workbook (``save_logs``, after every
    step) after the first calling frame whose file is under a ``steps``
    folder, or whose local ``__mne_bids_pipeline_step__`` names it. It finds
    it with ``inspect.stack()``, which also reads every frame's source lines
    and module: about 0.2 s per step with MNE, MBP and this package imported.
    The frames themselves give the same answer at no cost. A ``stack``
    passed explicitly is used as MBP does. Idempotent.
    """
    import pathlib

    from mne_bids_pipeline import _run

    orig = getattr(_run, "_get_step_path", None)
    if orig is None or getattr(orig, _ORIG_ATTR, None) is not None:
        return

    def _get_step_path(stack=None) -> pathlib.Path:
        if stack is not None:
            return orig(stack)
        frame = sys._getframe(1)
        while frame is not None:
            fname = pathlib.Path(frame.f_code.co_filename)
            if "steps" in fname.parts:
                return fname
            out = frame.f_locals.get("__mne_bids_pipeline_step__")
            if out is not None:
                assert isinstance(out, pathlib.Path)
                return out
            frame = frame.f_back
        return orig()  # MBP's own error, listing the stack

    setattr(_get_step_path, _ORIG_ATTR, orig)
    _get_step_path.__doc__ = orig.__doc__
    _run._get_step_path = _get_step_path
