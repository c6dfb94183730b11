"""Leadfield units: from MNE's SI units to the library's (fT/nAm, fT/cm/nAm, uV/nAm).

The only place the conversion is done; the unit table is in ``_conventions``.
"""

from __future__ import annotations

import numpy as np
from mne.io.constants import FIFF

from .._conventions import (
    UNITS,
)

#: exponent used by CaliBrain for gradiometers (fT/m/nAm, i.e. ×1e6 of SI)
_CALIBRAIN_GRAD_EXP = -15


# ===================================================================== units
def unit_conversion(units, unitmults=None):
    """Factors from stored units to fT/nAm, fT/cm/nAm and µV/nAm, per channel.

    Parameters
    ----------
    units : array-like of int, shape (n_channels,)
        FIFF unit codes: 112 (T), 201 (T/m), 107 (V).
    unitmults : array-like of int | None
        Power of ten of the stored values. 0 (or None): MNE's SI units per
        A·m. The target exponent (−15 T, −13 T/m, −6 V): already converted.
        −15 with T/m: CaliBrain's fT/m/nAm.

    Returns
    -------
    factors : ndarray, shape (n_channels,)
        Multiply the stored rows by these.
    exps : ndarray of int
        The target exponents (−15, −13, −6).
    labels : list of str
        "fT/nAm", "fT/cm/nAm", "uV/nAm".
    """
    units = np.atleast_1d(np.asarray(units)).astype(int)
    mults = (
        np.zeros(len(units), int)
        if unitmults is None
        else np.broadcast_to(np.asarray(unitmults).astype(int), units.shape)
    )
    bad = sorted({int(u) for u in units} - set(UNITS))
    if bad:
        raise ValueError(
            f"Unknown sensor unit(s) {bad}; known FIFF units are 112 (T, "
            "magnetometer), 201 (T/m, planar gradiometer), 107 (V, EEG)"
        )
    factors = np.empty(len(units))
    exps = np.empty(len(units), int)
    labels = []
    for i, (unit, mult) in enumerate(zip(units, mults)):
        si, exp, label, _ = UNITS[int(unit)]
        if mult == 0:
            factors[i] = si
        elif mult == exp:
            factors[i] = 1.0
        elif int(unit) == FIFF.FIFF_UNIT_T_M and mult == _CALIBRAIN_GRAD_EXP:
            factors[i] = 1e-2  # fT/m/nAm -> fT/cm/nAm
        else:
            raise ValueError(
                f"Unknown unit multiplier {int(mult)} for FIFF unit {int(unit)} "
                f"(channel {i}); expected 0 (SI per A·m) or {exp} ({label})"
            )
        exps[i] = exp
        labels.append(label)
    return factors, exps, labels


def si_to_target_units(gain, info, *, copy=False):
    """Convert an MNE SI gain to fT/nAm, fT/cm/nAm, µV/nAm, row by row.

    The one place where units are converted. The factor of each row comes
    from ``info["chs"][i]["unit"]``: ×1e6 (T/(A·m) -> fT/nAm), ×1e4
    (T/(m·A·m) -> fT/cm/nAm), ×1e-3 (V/(A·m) -> µV/nAm).

    Parameters
    ----------
    gain : ndarray, shape (n_channels, ...)
        Rows in the order of ``info["chs"]``.
    info : mne.Info
    copy : bool
        If False (default) the conversion is in place.

    Returns
    -------
    gain : ndarray
    exps : ndarray of int
    labels : list of str
    """
    units = [ch["unit"] for ch in info["chs"]]
    if gain.shape[0] != len(units):
        raise ValueError(
            f"gain has {gain.shape[0]} rows but info has {len(units)} channels"
        )
    factors, exps, labels = unit_conversion(units)
    if copy:
        gain = gain.copy()
    gain *= factors.reshape((-1,) + (1,) * (gain.ndim - 1)).astype(gain.dtype)
    return gain, exps, labels
