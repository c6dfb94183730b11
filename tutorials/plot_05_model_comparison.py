"""
.. _tut-model-comparison:

05. Laminar model comparison at the prior: free energy per layer
================================================================

Which layer does a signal come from? As laMEG does through SPM, fit one
source model per layer to the same data with the same spatial projection,
and compare their Bayesian evidence (negative free energy F, in nats). The
layer with the highest F wins; a difference of more than 3 nats is usually
called strong evidence. Here the demo's ``layer`` condition, whose simulated
source sits on layer 8 of 11 (0 = pial) of one column, is analysed at that
column (the prior): whole-window comparison, then sliding windows.
"""

# %%
import json

import matplotlib.pyplot as plt
import mne
import numpy as np

from mne_laminar_plugin import LaminarSurfaces, compare_layers, get_data_path
from mne_laminar_plugin.cli import main as mne_laminar
from mne_laminar_plugin.leadfield import read_leadfield

demo_dir = get_data_path() / "demo"
if not (demo_dir / "bids" / "derivatives" / "mne-laminar").is_dir():
    assert mne_laminar(["demo", str(demo_dir)]) == 0  # builds it once (tutorial 01)
bids_root = demo_dir / "bids"
lam_root = bids_root / "derivatives" / "mne-laminar"
mbp_meg = bids_root / "derivatives" / "mne-bids-pipeline" / "sub-01" / "meg"

# %%
# The ingredients
# ---------------
# The layer surfaces and laminar leadfield of the pipeline, MBP's evoked
# response and noise covariance, and the ground truth of the demo.
surfaces = LaminarSurfaces.load(lam_root, "01")
leadfield = read_leadfield(lam_root, "01")
evoked = mne.read_evokeds(mbp_meg / "sub-01_task-demo_ave.fif", condition="layer")
noise_cov = mne.read_cov(mbp_meg / "sub-01_proc-clean_cov.fif")
rank = json.loads((mbp_meg / "sub-01_proc-clean_rank.json").read_text())
truth = json.loads((bids_root / "sourcedata" / "demo_truth.json").read_text())
source = truth["subjects"]["01"]["layer_source"]
print("simulated source:", source)

# %%
# The prior is the column of the simulated source, given as its FreeSurfer
# hemisphere and vertex (a column index, a list, an ROI name or ``"best"``
# work as well).
prior = (source["hemi"], source["vertex"])

# %%
# Whole-window comparison
# -----------------------
# MSP with a Gaussian patch (FWHM 5 mm over geodesic distance within each
# layer) at the prior, four temporal modes over 50-150 ms.
evidence = compare_layers(
    evoked, leadfield, noise_cov, surfaces=surfaces, prior=prior, method="msp",
    woi=(0.05, 0.15), patch_fwhm=5.0, n_temporal_modes=4, rank=rank,
)
print(evidence)
print(f"best layer {evidence.best_layer} (truth {source['layer']}); "
      f"strong evidence over the runner-up: {evidence.strong}")
assert abs(int(evidence.best_layer) - source["layer"]) <= 1
fig = evidence.plot()

# %%
# The free energies as a table (``delta_f`` relative to the worst layer):
print(evidence.to_dataframe().round(2).to_string(index=False))

# %%
# Sliding windows
# ---------------
# laMEG's sliding-window comparison: 50 ms windows every 10 ms over the whole
# evoked response, one temporal mode each, the spatial projection fixed. The
# evidence for the true layer builds up around the 100 ms peak.
sliding = compare_layers(
    evoked, leadfield, noise_cov, surfaces=surfaces, prior=prior,
    windows=(50.0, 10.0), n_temporal_modes=1, rank=rank,
)
fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
cmap = plt.get_cmap("viridis", sliding.n_layers)
for layer in range(sliding.n_layers):
    ax.plot(sliding.times * 1e3, sliding.delta_f[layer], color=cmap(layer),
            lw=2.5 if layer == source["layer"] else 1, label=f"layer {layer}")
ax.set(xlabel="time (ms)", ylabel="ΔF (nats)", title="Sliding-window model comparison")
_ = ax.legend(ncols=2, fontsize=7)

# %%
# Strength of evidence per window: the winning layer where ΔF between best
# and runner-up exceeds 3 nats.
best = np.asarray(sliding.best_layer)
strong = np.asarray(sliding.strong)
peak = np.argmin(np.abs(sliding.times - 0.1))
print(f"at {sliding.times[peak] * 1e3:.0f} ms: best layer {best[peak]}, strong {strong[peak]}")
