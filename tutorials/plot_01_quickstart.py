"""
.. _tut-quickstart:

01. Quickstart: the demo through ``mne-laminar run``
====================================================

The package ships an offline demo: a simulated 306-channel MEG recording of one
subject with a FreeSurfer reconstruction, written as a BIDS dataset from files
that installed packages ship (nothing is downloaded). ``mne-laminar demo``
writes it and runs MNE-BIDS-Pipeline's ``all`` stages followed by the
``laminar`` stage through ``mne-laminar run``, exactly as a user runs their own
config. From a shell::

    mne-laminar demo mne-laminar-demo

This tutorial does the same from Python, then shows where every output went
and what the report holds. The other tutorials reuse this demo folder.
"""

# %%
# Build and run the demo
# ----------------------
# The folder is ``$MNE_LAMINAR_DATA/demo`` (default ``~/mne_laminar_data``).
# A second run finds the dataset complete and MBP's cache up to date, so it
# only checks hashes.

import mne

from mne_laminar_plugin import get_data_path
from mne_laminar_plugin.cli import main as mne_laminar

demo_dir = get_data_path() / "demo"
rc = mne_laminar(["demo", str(demo_dir)])
assert rc == 0
bids_root = demo_dir / "bids"
print(f"demo in {demo_dir}")

# %%
# The MBP config
# --------------
# The demo's config is an ordinary MBP config with a few ``laminar_*`` options;
# ``mne-laminar info`` lists every option (see :doc:`../generated/options`).
config = (demo_dir / "demo_config.py").read_text()
print("\n".join(line for line in config.splitlines() if line.startswith("laminar_")))

# %%
# Where the outputs are
# ---------------------
# MBP writes to ``derivatives/mne-bids-pipeline``; the laminar stage writes a
# BIDS derivative dataset of its own, ``derivatives/mne-laminar``.
lam_root = bids_root / "derivatives" / "mne-laminar"
files = sorted(p.relative_to(lam_root) for p in lam_root.rglob("*") if p.is_file())
layer_files = [f for f in files if "_desc-layer" in f.name]
for f in files:
    if f not in layer_files:
        print(f)
print(f"... and {len(layer_files)} layer files (surface + sidecar per layer and hemisphere)")

# %%
# The report
# ----------
# Every laminar step adds a section to MBP's per-subject HTML report. Open
# ``sub-01_report.html`` in a browser; here we list its sections.
mbp_root = bids_root / "derivatives" / "mne-bids-pipeline"
report_html = sorted(mbp_root.glob("sub-01/**/*_report.html"))[0]
report_h5 = report_html.with_suffix(".h5")
report = mne.open_report(report_h5)
titles, _tags, _htmls = report.get_contents()
print(report_html.relative_to(bids_root))
print("sections:", titles)
assert {"Laminar surfaces", "Laminar leadfield", "Anatomical predictors"} <= set(titles)
