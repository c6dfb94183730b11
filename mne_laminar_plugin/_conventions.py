"""Conventions of the whole package, each written once.

Layer order, hemispheres, the choices of every option and function argument
that takes one of a fixed set of strings, the leadfield unit table, and the
check that a laminar model has at least two layers. Every other module (the
library and the MBP options alike) imports these names from here.
"""

from __future__ import annotations

from mne.io.constants import FIFF

# ------------------------------------------------------------------ layers
#: Layer order, as every sidecar and report caption states it.
LAYER_ORDER = "index 0 = pial (most superficial) ... n_layers-1 = white (deepest)"


def layer_order(n_layers: int) -> str:
    """The layer-order caption for a model of ``n_layers`` layers."""
    return f"0 = pial (most superficial) ... {n_layers - 1} = white (deepest)"


def check_n_layers(n_layers: int, *, what: str = "n_layers") -> int:
    """Return ``int(n_layers)``; a laminar model needs pial and white (>= 2)."""
    if n_layers < 2:
        raise ValueError(f"{what} must be >= 2 (pial and white), got {n_layers}")
    return int(n_layers)


#: FreeSurfer hemispheres, in MNE's order (left first).
HEMIS = ("lh", "rh")

# ----------------------------------------------------------------- choices
LAYER_METHODS = ("equidistant", "equivolume")
COLUMN_ORIENTATIONS = ("link_vector", "surface_normal", "pial_normal")
CORTEX_MASKS = ("auto", "cortex_label", "aparc", "thickness", "none")
LEADFIELD_MODES = ("simulate", "load", "random")
ORIENTATION_TYPES = ("fixed", "free")
FORWARD_ENGINES = ("fast", "mne")
SCALP_SOURCES = ("outer_skin", "head")

# ------------------------------------------------------------------- units
#: FIFF unit -> (factor from MNE's SI per A·m, exponent per nA·m, label, type).
#: Leadfields out of the library are in these units (fT/nAm, fT/cm/nAm, uV/nAm).
UNITS = {
    int(FIFF.FIFF_UNIT_T): (1e6, -15, "fT/nAm", "mag"),
    int(FIFF.FIFF_UNIT_T_M): (1e4, -13, "fT/cm/nAm", "grad"),
    int(FIFF.FIFF_UNIT_V): (1e-3, -6, "uV/nAm", "eeg"),
}
UNIT_LABELS = {label: unit for unit, (_, _, label, _) in UNITS.items()}
ARBITRARY = "arbitrary"
