"""
.. _tut-predictors:

04. Anatomical predictors of laminar inference accuracy
=======================================================

This mirrors laMEG's tutorial "Anatomical Predictors of Laminar Inference
Accuracy" with this package and without SPM. Szul et al. (2025) showed that
even with identical signal-to-noise ratio, laminar inference accuracy varies
across the cortex with four anatomical properties of each column: cortical
thickness, the difference between the deepest and most superficial leadfields
(``lf_rms_diff``), the radiality of the column to the scalp and its distance
to the scalp. Their z-scored sum is the anatomical score; its maximum is the
best column for laminar inference, over the whole brain or inside a region of
interest (the prior of the model comparison).
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import zscore

from mne_laminar_plugin import (
    LaminarSurfaces,
    anatomical_score,
    compute_predictors,
    get_data_path,
    select_prior,
)
from mne_laminar_plugin.cli import main as mne_laminar
from mne_laminar_plugin.leadfield import read_leadfield
from mne_laminar_plugin.predictors import read_scalp, roi_columns
from mne_laminar_plugin.report.viz import image_grid, plot_surface_map

demo_dir = get_data_path() / "demo"
if not (demo_dir / "bids" / "derivatives" / "mne-laminar").is_dir():
    assert mne_laminar(["demo", str(demo_dir)]) == 0  # builds it once (tutorial 01)
bids_root = demo_dir / "bids"
subjects_dir = bids_root / "derivatives" / "freesurfer" / "subjects"
lam_root = bids_root / "derivatives" / "mne-laminar"

# %%
# The multilayer model
# --------------------
# The layer surfaces and the laminar leadfield the pipeline wrote for sub-01
# (the ``laminar/layer_surfaces`` and ``laminar/leadfield`` steps).
surf_set = LaminarSurfaces.load(lam_root, "01")
lf = read_leadfield(lam_root, "01")
scalp = read_scalp("sub-01", subjects_dir)
print(surf_set)
print(lf)

# %%
# Compute vertex-wise anatomical predictors
# -----------------------------------------
pred = compute_predictors(surf_set, lf, scalp, ch_type="mag")
thickness = pred.thickness        # cortical thickness (mm)
lf_rms_diff = pred.lf_rms_diff    # leadfield variability across depth (fT/nAm)
orientations = pred.radiality     # column orientation relative to the scalp (0-1)
distances = pred.distance         # cortical distance to the scalp (mm)
for name in ("thickness", "lf_rms_diff", "radiality", "distance"):
    print(f"{name:12s} [{pred.units[name]}]  median {np.nanmedian(getattr(pred, name)):.3g}")


# %%
# Each predictor captures a distinct anatomical constraint on laminar
# inference; here on the left hemisphere's pial surface (lateral and medial
# views; columns dropped by the leadfield are grey).
def show(values, title, label):
    lh = surf_set.columns("lh")
    images = plot_surface_map(
        surf_set.layers[0, lh], surf_set.tris["lh"], values[lh],
        title=title, label=label, hemi="lh", cmap="Spectral_r",
    )
    fig, ax = plt.subplots(figsize=(8, 3), layout="constrained")
    ax.imshow(image_grid(images, ncols=2))
    ax.set_axis_off()
    return fig


_ = show(thickness, "Cortical thickness", "mm")

# %%
# **Leadfield RMS difference**: the difference between the leadfields of the
# deepest and most superficial source of each column; higher values mean
# layers are easier to tell apart.
_ = show(lf_rms_diff, "Leadfield RMS difference", pred.units["lf_rms_diff"])

# %%
# **Orientation**: alignment of the column with the scalp normal (1 = radial).
_ = show(orientations, "Radiality to the scalp", "|cos|")

# %%
# **Distance**: from the pial vertex to the closest point of the scalp.
_ = show(distances, "Distance to the scalp", "mm")

# %%
# The composite anatomical score
# ------------------------------
# ``z(thickness) + z(lf_rms_diff) + z(radiality) - z(distance)``: exactly the
# tutorial's formula on the columns where every predictor is defined.
score = anatomical_score(thickness, lf_rms_diff, orientations, distances)
kept = pred.kept
tutorial = (zscore(thickness[kept]) + zscore(lf_rms_diff[kept])
            + zscore(orientations[kept]) + zscore(-distances[kept]))
assert np.allclose(score[kept], tutorial)
_ = show(score, "Anatomical score", "z")

# %%
# The best column over the whole brain (a column index into the layer
# surfaces; ``hemi`` and ``vertno`` give the FreeSurfer vertex):
best_vertex = pred.best_vertex()
assert kept[best_vertex]
print(f"Highest anatomical score at column {best_vertex}: "
      f"{pred.hemi[best_vertex]} vertex {pred.vertno[best_vertex]}")

# %%
# Selecting the prior within a region of interest
# -----------------------------------------------
# The demo subject has a label around its simulated source. Among the columns
# in it, the one with the best anatomical score is the prior for laminar
# inference (the tutorial's ``roi_idx[np.argmax(anatomical_score[roi_idx])]``).
roi_idx = roi_columns("label/lh.demo_roi.label", pred.hemi, pred.vertno,
                      "sub-01", subjects_dir)
prior_idx = select_prior(score, roi_idx)
candidate = roi_idx[np.nanargmax(score[roi_idx])]
assert prior_idx == candidate
print(f"{len(roi_idx)} columns in the ROI; prior at column {prior_idx} "
      f"({pred.hemi[prior_idx]} vertex {pred.vertno[prior_idx]})")
