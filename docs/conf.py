"""Sphinx configuration of the mne-laminar-plugin documentation.

Builds offline: no intersphinx inventories are downloaded unless
``MNE_LAMINAR_DOCS_INTERSPHINX=1`` is set, and the gallery tutorials run on the
offline demo dataset (built once per docs build, then cached).

Build with ``python -m sphinx -W -b html docs docs/_build/html``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import mne_laminar_plugin  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # for _docs_ext

project = "mne-laminar-plugin"
author = "mne-laminar-plugin developers"
copyright = "2026, mne-laminar-plugin developers"
release = version = mne_laminar_plugin.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "_docs_ext",
]
if os.environ.get("MNE_LAMINAR_DOCS_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "mne": ("https://mne.tools/stable", None),
    }

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "auto_tutorials/*.ipynb", "auto_tutorials/*.py",
                    "auto_tutorials/*.zip", "auto_tutorials/*.md5",
                    "auto_tutorials/*.codeobj.json", "**.ipynb_checkpoints"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False

html_theme = "pydata_sphinx_theme"
html_title = "mne-laminar-plugin"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []

sphinx_gallery_conf = {
    "examples_dirs": [str(ROOT / "tutorials")],
    "gallery_dirs": ["auto_tutorials"],
    # which tutorials are executed (all by default; e.g. "plot_07" for one)
    "filename_pattern": os.environ.get("MNE_LAMINAR_DOCS_TUTORIALS", r"/plot_"),
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "reset_modules": ("matplotlib",),
    "capture_repr": ("_repr_html_", "__repr__"),
    "abort_on_example_error": True,
    "show_memory": False,
    "image_scrapers": ("matplotlib",),
}
