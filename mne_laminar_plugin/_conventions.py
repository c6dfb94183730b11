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
