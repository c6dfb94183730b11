"""This package's MBP plugin: the ``laminar`` stage and its ``laminar_*`` options.

Registered in the ``mne_bids_pipeline.plugins`` entry-point group (see
``pyproject.toml``) and loaded by :mod:`mne_laminar_plugin.host`.
"""

from __future__ import annotations

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
