"""
.. _tut-layer-surfaces:

02. Layer surfaces: equidistant and equivolume layers with column correspondence
================================================================================

A laminar source model needs surfaces between the FreeSurfer white and pial
surfaces in which vertex *i* is the same cortical column at every depth. This
tutorial builds them on the demo subject twice, with equidistant and with
equivolume (Bok) depths, and looks at the columns, their orientations and the
quality counts.
"""

# %%

import matplotlib.pyplot as plt
import numpy as np

from mne_laminar_plugin import LaminarSurfaces, get_data_path
from mne_laminar_plugin.cli import main as mne_laminar

demo_dir = get_data_path() / "demo"
if not (demo_dir / "bids" / "derivatives" / "mne-laminar").is_dir():
    assert mne_laminar(["demo", str(demo_dir)]) == 0  # builds it once (tutorial 01)
subjects_dir = demo_dir / "bids" / "derivatives" / "freesurfer" / "subjects"

# %%
# Build the layers
# ----------------
# 11 layers from pial (layer 0) to white (layer 10), on the columns of an oct5
# subsampling of ``?h.sphere`` (the same vertex ids at every depth), with the
# medial wall removed.
equidistant = LaminarSurfaces.from_freesurfer(
    "sub-01", subjects_dir, n_layers=11, method="equidistant", spacing="oct5"
)
equivolume = LaminarSurfaces.from_freesurfer(
    "sub-01", subjects_dir, n_layers=11, method="equivolume", spacing="oct5"
)
print(equidistant)
print(equivolume)

# %%
# Columns, depths and quality counts
# ----------------------------------
# ``layers`` holds every column at every depth, in metres (FreeSurfer surface
# RAS, MNE's MRI frame). Layer 0 is exactly pial and the last layer exactly
# white in both methods; in between, equivolume layers move towards white in
# convex (gyral) columns and towards pial in concave (sulcal) ones.
thickness = equidistant.thickness()
print(f"{equidistant.n_columns} columns, median thickness {np.median(thickness):.2f} mm")
assert np.array_equal(equidistant.layers[0], equivolume.layers[0])
assert np.array_equal(equidistant.layers[-1], equivolume.layers[-1])
print("quality counts:", {k: v for k, v in equidistant.qc.items() if not isinstance(v, dict)})

# %%
# Depth of the middle layer, as a fraction of the column from white (0) to
# pial (1): constant 0.5 for equidistant layers, spread around it for
# equivolume ones.
mid = 5
white, pial = equidistant.layers[-1], equidistant.layers[0]
length = np.linalg.norm(pial - white, axis=1)
ok = length > 0
frac = {
    name: np.linalg.norm(surf.layers[mid] - white, axis=1)[ok] / length[ok]
    for name, surf in [("equidistant", equidistant), ("equivolume", equivolume)]
}
fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
ax.hist(frac["equivolume"], bins=60, color="C1", label="equivolume")
ax.axvline(np.median(frac["equidistant"]), color="C0", label="equidistant")
ax.set(xlabel="depth of layer 5 (fraction from white)", ylabel="columns")
_ = ax.legend()

# %%
# Orientations
# ------------
# The default orientation of every column is its link vector, the unit vector
# from pial to white, the same at every depth.
ori = equidistant.orientations
link = (white - pial)[ok] / length[ok, None]
print("link-vector orientations:", np.allclose(ori[ok], link))

# %%
# A slice through the layers
# --------------------------
# Every layer's intersection with a coronal and an axial plane, over the T1
# (the same figure as the report's "Laminar surfaces" section).
from mne_laminar_plugin.report.viz import plot_layer_slices

lh = equidistant.columns("lh")
fig = plot_layer_slices(
    equidistant.layers[:, lh],
    equidistant.tris["lh"],
    t1_fname=subjects_dir / "sub-01" / "mri" / "T1.mgz",
    title="sub-01 left hemisphere, 11 equidistant layers",
)
