"""
.. _tut-accuracy:

06. Whole-brain laminar accuracy simulation: does the anatomical score hold?
============================================================================

The anatomical score is a prediction of where laminar inference works. Szul
et al. (2025) validated it on one subject by simulating, at every column, a
source on each layer and running the per-layer model comparison (11 x 11
inversions per column), on a cluster. :func:`~mne_laminar_plugin.simulate_laminar_accuracy`
runs the same protocol on a laptop, for your subject and sensors, and
measures how well the anatomical predictors predict where it is accurate.
"""

# %%
import json

import matplotlib.pyplot as plt
import mne

from mne_laminar_plugin import (
    AnatomicalPredictors,
    LaminarSurfaces,
    get_data_path,
    simulate_laminar_accuracy,
)
from mne_laminar_plugin.cli import main as mne_laminar
from mne_laminar_plugin.leadfield import read_leadfield

demo_dir = get_data_path() / "demo"
if not (demo_dir / "bids" / "derivatives" / "mne-laminar").is_dir():
    assert mne_laminar(["demo", str(demo_dir)]) == 0  # builds it once (tutorial 01)
bids_root = demo_dir / "bids"
lam_root = bids_root / "derivatives" / "mne-laminar"
mbp_meg = bids_root / "derivatives" / "mne-bids-pipeline" / "sub-01" / "meg"

surfaces = LaminarSurfaces.load(lam_root, "01")
leadfield = read_leadfield(lam_root, "01")
noise_cov = mne.read_cov(mbp_meg / "sub-01_proc-clean_cov.fif")
rank = json.loads((mbp_meg / "sub-01_proc-clean_rank.json").read_text())
tsv = sorted((lam_root / "sub-01" / "anat").glob("*_desc-laminar_predictors.tsv"))[0]
predictors = AnatomicalPredictors.from_tsv(tsv)

# %%
# Every column, every layer
# -------------------------
# The paper's protocol: a 10 nAm Gaussian patch (FWHM 5 mm) on the true layer,
# a Gaussian time course, SPM's SNR definition, MSP model comparison at the
# column with one model per layer; here at two SNRs.
accuracy = simulate_laminar_accuracy(
    leadfield, surfaces, noise_cov=noise_cov, rank=rank, snr_db=[0.0, 10.0],
    random_state=0,
)
print(accuracy)
for snr, frac in zip(accuracy.snr_db, accuracy.accurate.mean(axis=1)):
    print(f"{snr:+.0f} dB: {100 * frac:.1f} % of columns recover every layer exactly")

# %%
# Accuracy map beside the anatomical score
# ----------------------------------------
fig = accuracy.plot(snr_db=10.0)

# %%
# Does the score predict accuracy?
# --------------------------------
# A 5-fold cross-validated logistic regression of "accurate" on the four
# predictors, and the ROC-AUC of the composite score alone, next to the
# paper's 0.810.
pred = accuracy.predictivity(predictors, snr_db=0.0)
from mne_laminar_plugin.simulation import PAPER_AUC

for key in ("auc_raw", "auc_zscored", "auc_score"):
    print(f"{key}: {pred[key]}")
print(f"the paper's AUC (logistic regression, raw predictors): {PAPER_AUC}")

# %%
# The mean ΔF matrix: rows are the layer models, columns the simulated layer.
fig, ax = plt.subplots(figsize=(4.5, 4), layout="constrained")
i = list(accuracy.snr_db).index(10.0)
im = ax.imshow(accuracy.mean_delta_f[i], cmap="magma")
ax.set(xlabel="simulated layer", ylabel="layer model", title="mean ΔF (nats), +10 dB")
_ = fig.colorbar(im, ax=ax)
