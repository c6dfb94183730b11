"""The public API and the package layout."""

from __future__ import annotations

import subprocess
import sys

import mne_laminar_plugin

#: Everything but ``pipeline/`` and ``cli.py``: the library, usable without MBP.
LIBRARY_MODULES = (
    "mne_laminar_plugin._conventions",
    "mne_laminar_plugin.bids",
    "mne_laminar_plugin.demo",
    "mne_laminar_plugin.mesh",
    "mne_laminar_plugin.surfaces",
    "mne_laminar_plugin.forward",
    "mne_laminar_plugin.leadfield",
    "mne_laminar_plugin.predictors",
    "mne_laminar_plugin.inverse",
    "mne_laminar_plugin.simulation",
    "mne_laminar_plugin.report",
    "mne_laminar_plugin.report.viz",
)
#: Public names of the library (the rest of ``__all__`` is the plugin host's).
LIBRARY_NAMES = (
    "LaminarSurfaces",
    "LeadfieldBuilder",
    "LeadfieldData",
    "compute_predictors",
    "AnatomicalPredictors",
    "anatomical_score",
    "select_prior",
    "get_data_path",
    "make_demo_dataset",
)


def test_library_imports_without_mbp():
    """A fresh interpreter imports the library API without pluggy or MBP."""
    code = (
        "import importlib, sys\n"
        "import mne_laminar_plugin as m\n"
        f"for name in {LIBRARY_NAMES!r}:\n"
        "    getattr(m, name)\n"
        f"for mod in {LIBRARY_MODULES!r}:\n"
        "    importlib.import_module(mod)\n"
        "print(sorted(n for n in ('pluggy', 'mne_bids_pipeline') if n in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout


def test_public_api_resolves():
    """Every name in ``__all__`` resolves (the lazy table points at real modules)."""
    for name in mne_laminar_plugin.__all__:
        assert getattr(mne_laminar_plugin, name) is not None, name
    assert set(LIBRARY_NAMES) < set(mne_laminar_plugin.__all__)


def test_subpackage_imports():
    """The imports other modules and users rely on."""
    from mne_laminar_plugin.leadfield import LeadfieldData
    from mne_laminar_plugin.predictors import AnatomicalPredictors, compute_predictors
    from mne_laminar_plugin.surfaces import LaminarSurfaces

    assert LeadfieldData is mne_laminar_plugin.LeadfieldData
    assert LaminarSurfaces is mne_laminar_plugin.LaminarSurfaces
    assert AnatomicalPredictors is mne_laminar_plugin.AnatomicalPredictors
    assert compute_predictors is mne_laminar_plugin.compute_predictors


def test_steps_are_explicit():
    """The laminar stage lists its steps in ``_STEPS``, in run order, like MBP."""
    from mne_laminar_plugin.pipeline.steps import laminar

    names = [mod.__name__.rsplit(".", 1)[1] for mod in laminar._STEPS]
    assert names == sorted(names)
    assert names[0] == "_01_layer_surfaces" and names[-1] == "_99_group_predictors"


def test_steps_use_public_library_names():
    """Steps import only public library names and never another step."""
    import ast
    from pathlib import Path

    from mne_laminar_plugin.pipeline.steps import laminar

    for mod in laminar._STEPS:
        tree = ast.parse(Path(mod.__file__).read_text(encoding="utf-8"))
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:  # relative imports
                parts = (node.module or "").split(".")
                where = f"{mod.__name__}: from {'.' * node.level}{node.module} import ..."
                assert not any(p.startswith("_") for p in parts if p != "_mbp"), where
                assert not any(a.name.startswith("_") and a.name != "_mbp" for a in node.names), where
                if node.level == 1:  # the steps' own package: another step
                    assert False, where
                aliases |= {a.asname or a.name for a in node.names if (a.asname or a.name)}
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id in aliases and node.value.id != "_mbp":
                    assert not node.attr.startswith("_"), (
                        f"{mod.__name__}: {node.value.id}.{node.attr}"
                    )
        assert aliases, mod.__name__
