"""Leadfield units: from MNE's SI units to the library's (fT/nAm, fT/cm/nAm, uV/nAm).

The only place the conversion is done; the unit table is in ``_conventions``.
"""

from __future__ import annotations

import numpy as np
from mne.io.constants import FIFF

from mne.utils import _check_option

from .._conventions import (
    GRAD_UNITS,
    UNITS,
)

#: exponent used by CaliBrain for gradiometers (fT/m/nAm, i.e. ×1e6 of SI)
_CALIBRAIN_GRAD_EXP = GRAD_UNITS["fT/m"][1]


def _target(unit, grad_unit):
    """(factor from SI, exponent, label) of the target unit of a FIFF unit."""
    if int(unit) == FIFF.FIFF_UNIT_T_M:
        return GRAD_UNITS[grad_unit]
    return UNITS[int(unit)][:3]


# ===================================================================== units
def unit_conversion(units, unitmults=None, *, grad_unit="fT/cm"):
    """Factors from stored units to fT/nAm, fT/cm/nAm and µV/nAm, per channel.

    Parameters
    ----------
    units : array-like of int, shape (n_channels,)
        FIFF unit codes: 112 (T), 201 (T/m), 107 (V).
    unitmults : array-like of int | None
        Power of ten of the stored values. 0 (or None): MNE's SI units per
        A·m. The target exponent (−15 T, −13 T/m, −6 V): already converted.
        −15 with T/m: CaliBrain's fT/m/nAm.
    grad_unit : "fT/cm" | "fT/m"
        Target unit of planar gradiometers: this package's fT/cm/nAm
        (default, like MNE's plots) or CaliBrain's fT/m/nAm (100 × larger
        numbers for the same field gradient).

    Returns
    -------
    factors : ndarray, shape (n_channels,)
        Multiply the stored rows by these.
    exps : ndarray of int
        The target exponents (−15, −13 or −15 with ``grad_unit="fT/m"``, −6).
    labels : list of str
        "fT/nAm", "fT/cm/nAm" (or "fT/m/nAm"), "uV/nAm".
    """
    _check_option("grad_unit", grad_unit, tuple(GRAD_UNITS))
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
        si, exp, label = _target(unit, grad_unit)
        if mult == 0:
            factors[i] = si
        elif mult == exp:
            factors[i] = 1.0
        elif int(unit) == FIFF.FIFF_UNIT_T_M and mult in (-13, _CALIBRAIN_GRAD_EXP):
            # fT/m/nAm <-> fT/cm/nAm: the stored convention is not the target
            factors[i] = si / GRAD_UNITS["fT/m" if mult == -15 else "fT/cm"][0]
        else:
            raise ValueError(
                f"Unknown unit multiplier {int(mult)} for FIFF unit {int(unit)} "
                f"(channel {i}); expected 0 (SI per A·m) or {exp} ({label})"
            )
        exps[i] = exp
        labels.append(label)
    return factors, exps, labels


def si_to_target_units(gain, info, *, copy=False, grad_unit="fT/cm"):
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
    grad_unit : "fT/cm" | "fT/m"
        Planar gradiometers in fT/cm/nAm (default) or CaliBrain's fT/m/nAm.

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
    factors, exps, labels = unit_conversion(units, grad_unit=grad_unit)
    if copy:
        gain = gain.copy()
    gain *= factors.reshape((-1,) + (1,) * (gain.ndim - 1)).astype(gain.dtype)
    return gain, exps, labels


def convert_grad_unit(data, grad_unit):
    """Put the planar-gradiometer rows of a leadfield in ``grad_unit``, in place.

    Parameters
    ----------
    data : LeadfieldData
        Rows labelled "fT/cm/nAm" or "fT/m/nAm" are converted; others are
        left as they are.
    grad_unit : "fT/cm" | "fT/m"
        This package's fT/cm/nAm or CaliBrain's fT/m/nAm (×100).

    Returns
    -------
    data : LeadfieldData
    """
    _check_option("grad_unit", grad_unit, tuple(GRAD_UNITS))
    si, exp, label = GRAD_UNITS[grad_unit]
    labels = np.asarray(data.units, dtype=object)
    rows = np.flatnonzero(np.isin(labels, [g[2] for g in GRAD_UNITS.values()]) & (labels != label))
    if not len(rows):
        return data
    from_si = np.array([{g[2]: g[0] for g in GRAD_UNITS.values()}[lab] for lab in labels[rows]])
    factors = si / from_si
    data.leadfield[rows] *= factors.reshape((-1,) + (1,) * (data.leadfield.ndim - 1))
    labels[rows] = label
    data.units = [str(u) for u in labels]
    if data.sensor_unitmult is not None:
        exps = np.array(np.broadcast_to(data.sensor_unitmult, (data.n_sensors,)))
        exps[rows] = exp
        data.sensor_unitmult = exps[0].item() if (exps == exps[0]).all() else exps
    data.provenance = dict(data.provenance, grad_unit=f"{label} (gradiometer rows)")
    return data


def si_factors(data):
    """Per-row factors from a leadfield's stored units to MNE's SI units per A·m.

    Parameters
    ----------
    data : LeadfieldData
        A leadfield with ``sensor_units`` (FIFF unit codes) and
        ``sensor_unitmult`` (power of ten of the stored values, see
        :func:`unit_conversion`).

    Returns
    -------
    factors : ndarray, shape (n_sensors,)
        Multiply the stored rows by these to get T/(A·m), T/(m·A·m), V/(A·m).
    """
    from ._data import _per_channel

    units = data.sensor_units
    if units is None:
        raise ValueError(
            "leadfield.sensor_units is None: its rows cannot be put in SI units "
            "(simulated leadfields and files written by this package have them)"
        )
    units = _per_channel(units, data.n_sensors, "sensor_units")
    exps = _per_channel(data.sensor_unitmult, data.n_sensors, "sensor_unitmult")
    factors, _, _ = unit_conversion(units, exps)  # stored -> target
    si = np.array([UNITS[int(u)][0] for u in units])  # SI -> target
    return factors / si  # stored -> SI


def convert_rows(lf, factors, fname=None):
    """Multiply the rows of a stored leadfield by unit ``factors`` (float64 at least).

    Half precision is promoted (fT/nAm values overflow float16). Values that
    become infinite in the conversion are reported as the conversion's
    overflow, naming the file, not as NaN/inf stored in it.
    """
    lf = np.asarray(lf)
    dtype = np.result_type(lf.dtype, np.float32) if lf.dtype.kind == "f" else np.float64
    lf = lf.astype(dtype, copy=True) if lf.dtype != dtype or not lf.flags.writeable else lf
    finite_before = np.isfinite(lf)
    with np.errstate(over="ignore", invalid="ignore"):
        lf *= np.asarray(factors).reshape((-1,) + (1,) * (lf.ndim - 1)).astype(dtype)
    overflow = finite_before & ~np.isfinite(lf)
    if overflow.any():
        row = int(np.argwhere(overflow)[0][0])
        where = f"{fname}: " if fname else ""
        raise ValueError(
            f"{where}{int(overflow.sum())} value(s) overflow {dtype.name} when converted "
            f"to the library's units (first in row {row}, factor {factors[row]:g}): the "
            "stored values are far too large for their sensor_units/sensor_unitmult, "
            "which are probably wrong."
        )
    return lf
