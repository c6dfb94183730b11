"""The ``laminar_*`` config options: annotation, default and doc, declared once.

Every option is registered into MNE-BIDS-Pipeline's config by the plugin host,
so MBP's strict pydantic validation checks it and steps receive it in the
config namespace. The names are chosen so that MBP's misspelling check
(``difflib`` against MBP's own option names) does not mistake them for one of
MBP's options (``laminar_spacing`` would read as ``spacing``, for instance).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from annotated_types import Ge, Gt, Le
from pydantic import AfterValidator

from .. import bids
from ..forward._forward import MAX_PLAUSIBLE_MINDIST
from ..predictors import score_weights

from .._conventions import (
    MIN_LAYERS,
    COLUMN_ORIENTATIONS,
    CORTEX_MASKS,
    FORWARD_ENGINES,
    INVERSE_METHODS,
    LAYER_METHODS,
    LEADFIELD_MODES,
    ORIENTATION_TYPES,
    SCALP_SOURCES,
)
from .host import ConfigOption


def _deriv_name(name: str) -> str:
    return bids.check_deriv_name(name, "laminar_deriv_name")


def _score_weights(weights):
    if weights is not None:
        score_weights(weights, "laminar_score_weights")
    return weights


OPTIONS: dict[str, ConfigOption] = {
    # ---------------------------------------------------------------- stage
    "laminar_enable": ConfigOption(
        bool,
        True,
        "Run the laminar stage; False skips every laminar step.",
    ),
    "laminar_deriv_name": ConfigOption(
        Annotated[str, AfterValidator(_deriv_name)],
        "mne-laminar",
        "Folder under <bids_root>/derivatives/ for the laminar derivatives: a "
        "plain folder name, not MBP's (mne-bids-pipeline) or freesurfer.",
    ),
    "laminar_offline_mode": ConfigOption(
        bool,
        False,
        "Never download: MBP's source/_99_group_average (which fetches "
        "fsaverage) is skipped when fsaverage is not already in subjects_dir.",
    ),
    # ------------------------------------------------------ layer surfaces
    "laminar_n_layers": ConfigOption(
        Annotated[int, Ge(MIN_LAYERS)],
        11,
        "Number of layer surfaces from pial (layer 0) to white (last layer).",
    ),
    "laminar_depth_method": ConfigOption(
        Literal[LAYER_METHODS],
        "equidistant",
        "Layer placement: 'equidistant' (fraction of the white-pial distance) or "
        "'equivolume' (Bok's area-weighted depth, per vertex).",
    ),
    "laminar_column_spacing": ConfigOption(
        Literal["oct4", "oct5", "oct6", "ico3", "ico4", "ico5", "all", "lameg"],
        "oct6",
        "Column subsampling on ?h.sphere, identical vertex ids at every depth "
        "('all' keeps every cortical vertex; 'lameg': the columns of the laMEG "
        "layer set of laminar_lameg_layers).",
    ),
    "laminar_lameg_layers": ConfigOption(
        str | None,
        None,
        "A laMEG layer folder (surf/laminar, decimated 'ds' set) used instead of "
        "building the layers; '{subjects_dir}' and '{subject}' are replaced by "
        "the FreeSurfer ones. Needs laminar_column_spacing = 'lameg'.",
    ),
    "laminar_orientation": ConfigOption(
        Literal[COLUMN_ORIENTATIONS],
        "link_vector",
        "Dipole orientation per column: 'link_vector' (unit pial->white vector, "
        "same at every depth), 'surface_normal' (each layer's outward normal) "
        "or 'pial_normal' (outward pial normal at every depth).",
    ),
    "laminar_cortex_mask": ConfigOption(
        Literal[CORTEX_MASKS],
        "auto",
        "How medial-wall columns are removed: 'auto' tries ?h.cortex.label, then "
        "aparc 'unknown', then zero thickness; or force one of those; 'none'.",
    ),
    "laminar_min_thickness": ConfigOption(
        Annotated[float, Ge(0)],
        0.5,
        "Columns thinner than this (mm) are flagged in the quality counts.",
    ),
    # ------------------------------------------------------------ leadfield
    "laminar_leadfield_mode": ConfigOption(
        Literal[LEADFIELD_MODES],
        "simulate",
        "How the laminar leadfield is obtained: 'simulate' (MNE forward on the "
        "layer surfaces), 'load' (from laminar_leadfield_dir) or 'random'.",
    ),
    "laminar_leadfield_dir": ConfigOption(
        str | None,
        None,
        "Folder with {subject}_{fixed|free}_leadfield.npz or forward files, for "
        "laminar_leadfield_mode='load'.",
    ),
    "laminar_orientation_type": ConfigOption(
        Literal[ORIENTATION_TYPES],
        "fixed",
        "Leadfield orientation: 'fixed' (one dipole per source, along the column "
        "orientation) or 'free' (three components per source).",
    ),
    "laminar_random_seed": ConfigOption(
        Annotated[int, Ge(0)] | None,
        None,
        "Seed of laminar_leadfield_mode='random' (None: MBP's random_state).",
    ),
    "laminar_skull_margin": ConfigOption(
        Annotated[float, Ge(0), Le(MAX_PLAUSIBLE_MINDIST)] | None,
        None,
        "Columns with any layer closer than this (mm) to the inner skull are "
        "dropped in every layer (None: MBP's mindist); at most 30 mm.",
    ),
    "laminar_forward_engine": ConfigOption(
        Literal[FORWARD_ENGINES],
        "fast",
        "Forward engine for 'simulate': 'fast' (this package's batched engine) "
        "or 'mne' (mne.make_forward_solution).",
    ),
    "laminar_forward_float32": ConfigOption(
        bool,
        False,
        "Store the simulated leadfield in float32 (halves memory; ~1e-6 error).",
    ),
    # ----------------------------------------------------------- predictors
    "laminar_scalp_mesh": ConfigOption(
        Literal[SCALP_SOURCES],
        "outer_skin",
        "Scalp for radiality/distance: BEM 'outer_skin' (bem/outer_skin.surf, "
        "else the head surface) or MNE 'head' (bem/<subject>-head*.fif).",
    ),
    "laminar_rois": ConfigOption(
        Sequence[str],
        (),
        "Regions of interest for the prior: label files (path or "
        "'label/lh.<name>.label' in the subject) or '<atlas>:<hemi>.<name>'.",
    ),
    "laminar_score_weights": ConfigOption(
        Annotated[dict[str, float] | None, AfterValidator(_score_weights)],
        None,
        "Weights of the z-scored predictors in the anatomical score (None: "
        "all 1; keys thickness, lf_rms_diff, radiality, distance).",
    ),
    "laminar_predictors_whiten": ConfigOption(
        bool,
        True,
        "Compute lf_rms_diff on the noise-whitened leadfield when MBP's noise "
        "covariance (sub-XX_proc-clean_cov.fif) exists; False (or no covariance): "
        "one channel type, laminar_predictors_ch_type.",
    ),
    "laminar_predictors_ch_type": ConfigOption(
        Literal["auto", "mag", "grad", "eeg"],
        "auto",
        "Channel type of lf_rms_diff without whitening (raw units of different "
        "types are never summed); 'auto': mag if present (CTF axial gradiometers "
        "are 'mag' in MNE), else grad, else eeg.",
    ),
    # -------------------------------------------------- accuracy simulation
    "laminar_accuracy_enable": ConfigOption(
        bool,
        False,
        "Run laminar/accuracy: simulate a source on every layer of every column "
        "(Szul et al. 2025), per-layer MSP model comparison, per-column accuracy, "
        "error and bias, and the cross-validated AUC of the predictors.",
    ),
    "laminar_accuracy_snr_db": ConfigOption(
        float | Sequence[float],
        -20.0,
        "SNR (dB, SPM's definition) of the accuracy simulation; a list runs an SNR "
        "sweep (the paper: -20).",
    ),
    "laminar_accuracy_random_state": ConfigOption(
        int,
        0,
        "Seed of the accuracy simulation's noise (results do not depend on n_jobs).",
    ),
    "laminar_group_template": ConfigOption(
        str,
        "fsaverage",
        "FreeSurfer template subject (in subjects_dir, never downloaded) the "
        "group step maps every subject's score to (nearest vertex on "
        "?h.sphere.reg); skipped with a message when it is missing.",
    ),
    # ---------------------------------------------------- model comparison
    "laminar_layer_comparison": ConfigOption(
        bool,
        True,
        "Run laminar/model_comparison: free energy of one model per layer at "
        "the best-score column and at every ROI prior, on MBP's evoked data.",
    ),
    "laminar_comparison_method": ConfigOption(
        Literal[INVERSE_METHODS],
        "msp",
        "Layer model: 'msp' (a Gaussian patch at the prior column) or 'ebb' "
        "(empirical Bayes beamformer prior over the whole layer).",
    ),
    "laminar_comparison_woi": ConfigOption(
        tuple[float, float] | None,
        None,
        "Time window (s) of the whole-window comparison (None: every sample "
        "of the evoked).",
    ),
    "laminar_patch_fwhm": ConfigOption(
        Annotated[float, Gt(0)],
        5.0,
        "FWHM (mm) of the MSP patch: Gaussian over geodesic distance within a layer.",
    ),
    "laminar_temporal_modes": ConfigOption(
        Annotated[int, Ge(1)],
        4,
        "Temporal modes of the whole-window comparison (sliding windows use 1, "
        "as laMEG).",
    ),
    "laminar_sliding_windows": ConfigOption(
        tuple[Annotated[float, Gt(0)], Annotated[float, Gt(0)] | None] | None,
        (50.0, 10.0),
        "Sliding-window comparison (MSP only) over the whole evoked: (width_ms, "
        "step_ms), step None = every sample; None: no sliding windows.",
    ),
    "laminar_comparison_conditions": ConfigOption(
        Sequence[str] | None,
        None,
        "Conditions of MBP's evoked file to compare layers on (None: all).",
    ),
}


def laminar_options() -> dict[str, ConfigOption]:
    """The options this plugin registers (a copy)."""
    return dict(OPTIONS)
