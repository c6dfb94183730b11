"""Laminar MEG analysis as MNE-BIDS-Pipeline steps.

Layer surfaces between white and pial with column correspondence, the laminar
leadfield (simulate, load or random), and anatomical predictors of laminar
inference accuracy, usable from an MBP config file (``mne-laminar run``) or as
a plain Python library.
"""

from ._version import __version__

# Public API, imported lazily so that ``mne-laminar --help`` stays fast.
_LAZY = {
    "LaminarSurfaces": "surfaces",
    "LeadfieldBuilder": "leadfield",
    "LeadfieldData": "leadfield",
    "compute_predictors": "predictors",
    "AnatomicalPredictors": "predictors",
    "anatomical_score": "predictors",
    "select_prior": "predictors",
    "compare_layers": "inverse",
    "LayerEvidence": "inverse",
    "simulate_laminar_accuracy": "simulation",
    "LaminarAccuracy": "simulation",
    "get_data_path": "demo",
    "make_demo_dataset": "demo",
    "PluginHost": "pipeline.host",
    "StepGroup": "pipeline.host",
    "ConfigOption": "pipeline.host",
    "hookimpl": "pipeline.host",
    "sys_info": "cli",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
