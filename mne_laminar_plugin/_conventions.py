"""Conventions of the whole package, each written once.

Layer order, hemispheres, the choices of every option and function argument
that takes one of a fixed set of strings, the leadfield unit table, and the
check that a laminar model has at least two layers. Every other module (the
library and the MBP options alike) imports these names from here.
"""

from __future__ import annotations

from mne.io.constants import FIFF

# ------------------------------------------------------------------ layers
def layer_order(n_layers: int | None = None, *, brief: bool = False) -> str:
    """The layer-order caption for a model of ``n_layers`` layers.

    ``brief`` leaves out "(most superficial)"/"(deepest)" (table cells, axis
    labels); without ``n_layers`` the last layer is called "last".
    """
    last = "last" if n_layers is None else str(n_layers - 1)
    if brief:
        return f"0 = pial ... {last} = white"
    return f"0 = pial (most superficial) ... {last} = white (deepest)"


#: Layer order of any model, as the surfaces' sidecars state it.
LAYER_ORDER = "index " + layer_order().replace("last", "n_layers-1")


#: A laminar model has at least pial and white.
MIN_LAYERS = 2


def check_n_layers(n_layers: int, *, what: str = "n_layers") -> int:
    """Return ``int(n_layers)``; a laminar model needs pial and white (>= 2)."""
    if n_layers < MIN_LAYERS:
        raise ValueError(f"{what} must be >= {MIN_LAYERS} (pial and white), got {n_layers}")
    return int(n_layers)


def check_layer_array(layers, *, what: str = "layers"):
    """``layers`` as float64 of shape (n_layers >= 2, n_columns, 3), or a clear error."""
    import numpy as np

    layers = np.asarray(layers, np.float64)
    if layers.ndim != 3 or layers.shape[2] != 3 or layers.shape[0] < MIN_LAYERS:
        raise ValueError(
            f"{what} must have shape (n_layers >= {MIN_LAYERS}, n_columns, 3), got "
            f"{layers.shape}"
        )
    return layers


def check_memory(n_bytes: float, what: str, *, hint: str = "") -> None:
    """Raise :class:`MemoryError` naming ``what`` before allocating more than is free.

    Uses the available physical memory (``MemAvailable``, else free pages).
    """
    avail = available_memory()
    if avail is not None and n_bytes > avail:
        raise MemoryError(
            f"{what} needs {n_bytes / 2**30:.2f} GiB but only {avail / 2**30:.2f} GiB "
            f"of memory are available.{' ' + hint if hint else ''}"
        )


def available_memory() -> int | None:
    """Available physical memory in bytes (None when unknown)."""
    import os

    try:
        with open("/proc/meminfo") as fid:
            for line in fid:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return None


#: FreeSurfer hemispheres, in MNE's order (left first).
HEMIS = ("lh", "rh")

# ----------------------------------------------------------------- choices
LAYER_METHODS = ("equidistant", "equivolume")
#: layer-model priors of compare_layers: multiple sparse priors, empirical Bayes beamformer
INVERSE_METHODS = ("msp", "ebb")
COLUMN_ORIENTATIONS = ("link_vector", "surface_normal", "pial_normal")
CORTEX_MASKS = ("auto", "cortex_label", "aparc", "thickness", "none")
LEADFIELD_MODES = ("simulate", "load", "random")
ORIENTATION_TYPES = ("fixed", "free")
FORWARD_ENGINES = ("fast", "mne")
SCALP_SOURCES = ("outer_skin", "head")
#: MEG arrays of the demo (``mne-laminar demo --system``).
MEG_SYSTEMS = ("vectorview", "ctf275", "opm")

# ------------------------------------------------------------------- units
#: FIFF unit -> (factor from MNE's SI per A·m, exponent per nA·m, label, type).
#: Leadfields out of the library are in these units (fT/nAm, fT/cm/nAm, uV/nAm).
UNITS = {
    int(FIFF.FIFF_UNIT_T): (1e6, -15, "fT/nAm", "mag"),
    int(FIFF.FIFF_UNIT_T_M): (1e4, -13, "fT/cm/nAm", "grad"),
    int(FIFF.FIFF_UNIT_V): (1e-3, -6, "uV/nAm", "eeg"),
}
#: Planar-gradiometer conventions: this package's fT/cm/nAm (MNE's plots,
#: Neuromag) or CaliBrain's fT/m/nAm (it scales T/m like T, by 1e6).
#: Name -> (factor from SI per A·m, exponent per nA·m, label).
GRAD_UNITS = {
    "fT/cm": UNITS[int(FIFF.FIFF_UNIT_T_M)][:3],
    "fT/m": (1e6, -15, "fT/m/nAm"),
}
UNIT_LABELS = {label: unit for unit, (_, _, label, _) in UNITS.items()}
UNIT_LABELS[GRAD_UNITS["fT/m"][2]] = int(FIFF.FIFF_UNIT_T_M)
#: Unit label -> factor from MNE's SI units (every label the library writes).
LABEL_SI_FACTORS = {label: si for si, _, label in
                    [u[:3] for u in UNITS.values()] + list(GRAD_UNITS.values())}  # fmt: skip


def pretty_unit(unit: str) -> str:
    """A unit label for figures and reports (``uV`` written ``µV``)."""
    return unit.replace("uV", "µV")
ARBITRARY = "arbitrary"
