"""MNE-BIDS-Pipeline config of the mne-laminar offline demo dataset.

Written next to the data by ``mne-laminar demo DIR``; paths are relative to
this file. Run it with ``mne-laminar run demo_config.py`` (every
mne_bids_pipeline argument works, e.g. ``--steps laminar --n_jobs 2``).
"""

from pathlib import Path

_here = Path(__file__).resolve().parent

# ---------------------------------------------------------------- dataset
bids_root = _here / "bids"
subjects_dir = bids_root / "derivatives" / "freesurfer" / "subjects"
task = "demo"
ch_types = ["meg"]
data_type = "meg"

# ---------------------------------------------------------- preprocessing
use_maxwell_filter = False
find_flat_channels_meg = False
find_noisy_channels_meg = False
l_freq = None
h_freq = 40.0
spatial_filter = None
reject = None

# --------------------------------------------------------- epochs, evoked
conditions = ["stim", "layer"]  # "layer": a source on layer 8 of 11 only
epochs_tmin = -0.2
epochs_tmax = 0.5
baseline = (None, 0)
decode = False

# ----------------------------------------------------------------- source
run_source_estimation = True
spacing = "oct5"
mindist = 5.0
noise_cov = (None, 0)
inverse_method = "dSPM"

# ------------------------------------------------------ quick-look settings
# What a user would choose for a first look (about a minute end to end):
# an empirical noise covariance instead of MBP's cross-validated shrinkage,
# a few time points in the report's evoked and source figures, no raw PSD.
noise_cov_method = "empirical"
report_evoked_n_time_points = 3
report_stc_n_time_points = 3
plot_psd_for_runs = []

# ---------------------------------------------------------------- laminar
laminar_n_layers = 11
laminar_depth_method = "equidistant"
laminar_column_spacing = "oct5"
laminar_orientation = "link_vector"
laminar_leadfield_mode = "simulate"
laminar_orientation_type = "fixed"
laminar_rois = ("label/lh.demo_roi.label", "label/lh.demo_column.label")
laminar_comparison_woi = (0.05, 0.15)  # around the 100 ms peak
# simulate a source on every layer of every column (Szul et al. 2025)
laminar_accuracy_enable = True
laminar_accuracy_snr_db = 0.0  # one SNR for a quick look; a tuple sweeps, e.g. (-20.0, 0.0, 10.0)
# The demo runs offline: MBP's source/_99_group_average would download
# fsaverage; with this set it is skipped when fsaverage is not installed.
laminar_offline_mode = True

n_jobs = 1
