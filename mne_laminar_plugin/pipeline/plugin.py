"""This package's MBP plugin: the ``laminar`` stage and its ``laminar_*`` options.

Registered in the ``mne_bids_pipeline.plugins`` entry-point group (see
``pyproject.toml``) and loaded by :mod:`mne_laminar_plugin.pipeline.host`.
"""

from __future__ import annotations

from pathlib import Path

from .host import ConfigOption, StepGroup, hookimpl

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
    (:func:`mne_laminar_plugin.pipeline._mbp_3d.patch_mbp_3d_steps`).
    """
    from mne_bids_pipeline.steps.source import _99_group_average as step

    from ._mbp_3d import patch_mbp_3d_steps

    patch_mbp_3d_steps(mbp_version)

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
