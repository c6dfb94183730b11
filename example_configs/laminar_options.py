"""Laminar options to add to an existing MNE-BIDS-Pipeline config file.

Copy what you need into your MBP config and run it with
``mne-laminar run config.py --steps all`` (or ``--steps laminar`` once MBP's
source stage has run). ``mne-laminar info`` documents every option.
"""

# Layer surfaces: 11 equidistant layers, pial (0) to white (10), on an oct6
# column grid with pial->white link-vector orientations (Bonaiuto et al.)
laminar_n_layers = 11
laminar_depth_method = "equidistant"  # or "equivolume" (Bok)
laminar_column_spacing = "oct6"
laminar_orientation = "link_vector"  # "surface_normal", "pial_normal"
laminar_cortex_mask = "auto"  # ?h.cortex.label, else aparc "unknown", else thickness 0
# A laMEG layer set (lameg.surf.LayerSurfaceSet.create) instead of building layers:
# laminar_column_spacing = "lameg"
# laminar_lameg_layers = "{subjects_dir}/{subject}/surf/laminar"

# Laminar leadfield: the MNE forward on every layer (MBP's BEM, trans, info)
laminar_leadfield_mode = "simulate"  # "load" (from laminar_leadfield_dir), "random"
laminar_orientation_type = "fixed"  # or "free"
laminar_forward_engine = "fast"  # or "mne" (mne.make_forward_solution)
laminar_skull_margin = None  # mm; None uses MBP's mindist

# Anatomical predictors, score and priors
laminar_scalp_mesh = "outer_skin"  # or "head" (bem/<subject>-head*.fif)
laminar_rois = ("aparc:lh.precentral", "label/lh.my_roi.label")
laminar_score_weights = None  # e.g. {"lf_rms_diff": 2.0}

# Laminar model comparison: free energy of one model per layer (laMEG's protocol)
laminar_layer_comparison = True
laminar_comparison_method = "msp"  # or "ebb" (empirical Bayes beamformer prior)
laminar_comparison_woi = (0.05, 0.15)  # s; None: every sample of the evoked
laminar_patch_fwhm = 5.0  # mm, Gaussian over geodesic distance within a layer
laminar_temporal_modes = 4
laminar_sliding_windows = (50.0, 10.0)  # (width_ms, step_ms); None: no sliding windows
laminar_comparison_conditions = None  # e.g. ["stim"]; None: all of MBP's evoked

# Accuracy simulation (Szul et al. 2025): a source on every layer of every column
laminar_accuracy_enable = False  # True: maps of accuracy, error (mm), bias; AUC of the predictors
laminar_accuracy_snr_db = -20.0  # or a sweep, e.g. (-40.0, -20.0, 0.0)
laminar_accuracy_random_state = 0
