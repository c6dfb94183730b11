"""The laminar leadfield: build (simulate), load or generate it, with units.

:class:`LeadfieldBuilder` is call-compatible with CaliBrain's builder
(``get_leadfield(subject, orientation_type, retrieve_mode, n_sensors,
n_sources, return_metadata)``) and returns a :class:`LeadfieldData` holding
the matrix and its metadata.

Units
    Leadfields out of this module are in fT/nAm (magnetometers, FIFF unit T),
    fT/cm/nAm (planar gradiometers, FIFF unit T/m) and µV/nAm (EEG, FIFF unit
    V), per channel, whatever the mix of channel types. MNE's SI forward
    (T/(A·m), T/(m·A·m), V/(A·m)) is converted here and only here
    (:func:`si_to_target_units`): ×1e6, ×1e4 and ×1e-3. ``sensor_unitmult``
    is the power of ten of the stored unit per nA·m: −15 (fT/nAm), −13
    (fT/cm/nAm = 1e-13 T/m per nA·m), −6 (µV/nAm).

Orientation
    ``"fixed"``: ``(n_sensors, n_sources)``, one dipole per source along its
    orientation ``src_ori`` (head frame). ``"free"``: ``(n_sensors, n_sources,
    K)``; a simulated leadfield has K = 3 in the x/y/z basis of the head frame
    and ``Q_basis`` the identity per source; loaded files may hold K = 2 with
    their ``Q_basis`` (CaliBrain's reduced MEG basis, ``a_xyz = Q a``).

Sources are layer-major (source ``l * n_kept + k`` is kept column ``k`` at
depth ``l``, layer 0 = pial); ``layer`` and ``column`` give both per source.

Files
    ``*.npz``: CaliBrain's layout (``leadfield``, ``sensor_kind``,
    ``sensor_units``, ``sensor_unitmult``, ``coil_type``, ``src_coords``,
    ``Q_basis``) plus this package's keys; read with ``allow_pickle=False``.
    ``*_leadfield.h5``: this package's derivative format (HDF5, written in
    column chunks, with the metadata and the measurement info as FIF bytes),
    reloadable as :class:`LeadfieldData` and convertible to
    :class:`mne.Forward` (:meth:`LeadfieldData.to_forward`).
    ``*-fwd.fif`` / ``*_fwd.fif``: MNE forward solutions. A FIF tag cannot
    exceed 2 GB, so FIF is written only when the float32 matrix fits
    (:func:`fits_in_fif`); the HDF5 file has no such limit.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from mne.io.constants import FIFF
from mne.utils import _check_option, _validate_type, logger, verbose, warn

from .._version import __version__

ORIENTATION_TYPES = ("fixed", "free")
RETRIEVE_MODES = ("load", "simulate", "random")
H5_FORMAT = "mne-laminar-leadfield"
H5_FORMAT_VERSION = 1
FIF_TAG_LIMIT = 2**31 - 1  # bytes in one FIF tag (int32 size field)

#: FIFF unit -> (factor from MNE's SI per A·m, exponent per nA·m, label, type)
UNITS = {
    int(FIFF.FIFF_UNIT_T): (1e6, -15, "fT/nAm", "mag"),
    int(FIFF.FIFF_UNIT_T_M): (1e4, -13, "fT/cm/nAm", "grad"),
    int(FIFF.FIFF_UNIT_V): (1e-3, -6, "uV/nAm", "eeg"),
}
UNIT_LABELS = {label: unit for unit, (_, _, label, _) in UNITS.items()}
ARBITRARY = "arbitrary"
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


def _collapse(values):
    """A scalar when all channels agree, else the per-channel array (seed style)."""
    if values is None:
        return None
    arr = np.asarray(values)
    if arr.ndim == 0:
        return arr.item()
    if len(arr) and (arr == arr[0]).all():
        return arr[0].item()
    return arr


def _per_channel(value, n, name, fname=None):
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.ndim == 0:
        return np.full(n, arr.item())
    if arr.shape != (n,):
        raise ValueError(
            f"{_where(fname)}{name} must be a scalar or have one value per "
            f"sensor ({n}), got shape {arr.shape}"
        )
    return arr


def _where(fname):
    return f"{fname}: " if fname else ""


# ============================================================ LeadfieldData
@dataclass(repr=False, eq=False)
class LeadfieldData:
    """A leadfield and its metadata.

    The first seven fields are CaliBrain's; the others are this package's.

    Attributes
    ----------
    leadfield : ndarray
        ``(n_sensors, n_sources)`` fixed or ``(n_sensors, n_sources, K)`` free.
    sensor_kind : int | ndarray | None
        FIFF kind (1 MEG, 2 EEG): a scalar when every channel has the same,
        else one value per channel. Same for the next three fields.
    sensor_units : int | ndarray | None
        FIFF unit (112 T, 201 T/m, 107 V).
    sensor_unitmult : int | ndarray | None
        Power of ten of the stored unit per nA·m (−15, −13, −6).
    coil_type : int | ndarray | None
        FIFF coil type (e.g. 3022, 3012, 1).
    src_coords : ndarray, shape (n_sources, 3) | None
        Source positions in metres, head frame.
    Q_basis : ndarray, shape (n_sources, 3, K) | None
        Free orientation: the head-frame basis of the K components of every
        source (identity for simulated leadfields). None when fixed.
    ch_names : list of str
    units : list of str
        Per channel: "fT/nAm", "fT/cm/nAm", "uV/nAm" or "arbitrary".
    ch_types : list of str
        Per channel: "mag", "grad", "eeg" or "misc".
    layer, column : ndarray of int, shape (n_sources,)
        Depth (0 = pial) and column id of every source.
    n_layers : int
    n_columns : int
        Columns of the laminar model before dropping (column ids < n_columns).
    orientation_type : "fixed" | "free"
    synthetic : bool
        True for ``retrieve_mode="random"``.
    provenance : dict
        How it was made (mode, inputs, engine, times, versions).
    src_ori : ndarray, shape (n_sources, 3) | None
        Unit dipole orientation of every source, head frame (fixed).
    info : mne.Info | None
        Measurement info of the rows, in row order (needed by
        :meth:`to_forward`).
    mri_head_t : mne.transforms.Transform | None
    dropped_columns : ndarray of int
        Columns of the model without sources (dropped in every layer).
    dropped_reasons : list of str
        Why, one per dropped column.
    column_hemi, column_vertno : ndarray, shape (n_columns,) | None
        Hemisphere and FreeSurfer vertex of every column, if known.
    """

    leadfield: np.ndarray | None = None
    sensor_kind: Any = None
    sensor_units: Any = None
    sensor_unitmult: Any = None
    coil_type: Any = None
    src_coords: np.ndarray | None = None
    Q_basis: np.ndarray | None = None
    ch_names: list = field(default_factory=list)
    units: list = field(default_factory=list)
    ch_types: list = field(default_factory=list)
    layer: np.ndarray | None = None
    column: np.ndarray | None = None
    n_layers: int = 1
    n_columns: int = 0
    orientation_type: str = "fixed"
    synthetic: bool = False
    provenance: dict = field(default_factory=dict)
    src_ori: np.ndarray | None = None
    info: Any = None
    mri_head_t: Any = None
    dropped_columns: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    dropped_reasons: list = field(default_factory=list)
    column_hemi: np.ndarray | None = None
    column_vertno: np.ndarray | None = None

    # ------------------------------------------------------------ basics
    @property
    def n_sensors(self) -> int:
        return int(self.leadfield.shape[0])

    @property
    def n_sources(self) -> int:
        return int(self.leadfield.shape[1])

    @property
    def columns(self) -> np.ndarray:
        """Kept column ids, in source order within a layer."""
        n_kept = self.n_sources // max(self.n_layers, 1)
        return np.asarray(self.column[:n_kept])

    def __repr__(self) -> str:
        if self.leadfield is None:
            return "<LeadfieldData | no leadfield>"
        kinds = {t: self.ch_types.count(t) for t in dict.fromkeys(self.ch_types)}
        what = "synthetic " if self.synthetic else ""
        shape = "x".join(str(s) for s in self.leadfield.shape)
        return (
            f"<LeadfieldData | {what}{self.orientation_type}, {shape}, "
            f"{self.n_layers} layer(s) x {len(self.columns)} column(s), "
            f"channels {kinds}, units {sorted(set(self.units))}>"
        )

    def copy(self) -> LeadfieldData:
        import copy

        return copy.deepcopy(self)

    def channel_groups(self) -> dict[str, np.ndarray]:
        """Row indices per unit label (rows that can be compared together)."""
        units = np.asarray(self.units)
        return {u: np.flatnonzero(units == u) for u in dict.fromkeys(self.units)}

    def source_mask(self, layers=None) -> np.ndarray:
        """Sources of the given layers (all if None)."""
        if layers is None:
            return np.ones(self.n_sources, bool)
        return np.isin(self.layer, np.atleast_1d(layers))

    def to_layers(self) -> np.ndarray:
        """The leadfield as ``(n_layers, n_kept_columns, n_sensors[, K])`` view-like."""
        lf = self.leadfield
        n_kept = self.n_sources // self.n_layers
        out = lf.reshape(lf.shape[0], self.n_layers, n_kept, *lf.shape[2:])
        return np.moveaxis(out, 0, 2)

    def fixed(self) -> LeadfieldData:
        """Fixed-orientation version (projection on ``src_ori``)."""
        if self.orientation_type == "fixed":
            return self
        if self.src_ori is None:
            raise ValueError(
                "This free leadfield has no source orientations (src_ori); it "
                "cannot be made fixed. Simulate with orientation_type='fixed'."
            )
        coef = np.einsum("sdk,sd->sk", self.Q_basis, self.src_ori)  # (N, K)
        out = self.copy_metadata()
        out.leadfield = np.einsum("msk,sk->ms", self.leadfield, coef)
        out.orientation_type = "fixed"
        out.Q_basis = None
        out.provenance = dict(self.provenance, converted="free -> fixed (src_ori)")
        return out

    def copy_metadata(self) -> LeadfieldData:
        kwargs = {f.name: getattr(self, f.name) for f in fields(self)}
        kwargs["leadfield"] = None
        import copy

        out = copy.deepcopy(LeadfieldData(**kwargs))
        return out

    # --------------------------------------------------------------- I/O
    def save(self, fname, *, overwrite=False, verbose=None) -> Path:
        """Write ``.h5`` (derivative), ``.npz`` (seed layout) or ``_fwd.fif``."""
        fname = Path(fname)
        name = fname.name
        if name.endswith((".h5", ".hdf5")):
            return write_leadfield(fname, self, overwrite=overwrite, verbose=verbose)
        if name.endswith(".npz"):
            return self.to_npz(fname, overwrite=overwrite)
        if name.endswith(("-fwd.fif", "_fwd.fif")):
            return write_forward_fif(fname, self, overwrite=overwrite, verbose=verbose)
        raise ValueError(
            f"Unknown leadfield file type {name!r}: use .h5, .npz, -fwd.fif or _fwd.fif"
        )

    def to_npz(self, fname, *, overwrite=False) -> Path:
        """Write CaliBrain's npz layout (plus this package's keys), no pickles.

        Per-channel metadata are stored as scalars when every channel agrees
        (as CaliBrain expects), else per channel.
        """
        from ..bids import atomic_path

        fname = Path(fname)
        _check_overwrite(fname, overwrite)
        arrays = dict(leadfield=self.leadfield)
        for key in ("sensor_kind", "sensor_units", "sensor_unitmult", "coil_type"):
            val = getattr(self, key)
            if val is not None:
                arrays[key] = np.asarray(val)
        for key in ("src_coords", "Q_basis", "src_ori", "layer", "column"):
            val = getattr(self, key)
            if val is not None:
                arrays[key] = np.asarray(val)
        arrays.update(
            ch_names=np.asarray(self.ch_names, dtype=str),
            ch_units=np.asarray(self.units, dtype=str),
            ch_types=np.asarray(self.ch_types, dtype=str),
            n_layers=np.asarray(self.n_layers),
            n_columns=np.asarray(self.n_columns),
            orientation_type=np.asarray(self.orientation_type),
            source_ori=np.asarray(
                FIFF.FIFFV_MNE_FIXED_ORI
                if self.orientation_type == "fixed"
                else FIFF.FIFFV_MNE_FREE_ORI
            ),
            synthetic=np.asarray(bool(self.synthetic)),
            dropped_columns=np.asarray(self.dropped_columns, int),
            dropped_reasons=np.asarray(self.dropped_reasons, dtype=str),
            provenance_json=np.asarray(json.dumps(self.provenance, default=_jsonable)),
        )
        with atomic_path(fname) as tmp:
            with open(tmp, "wb") as fid:
                np.savez(fid, **arrays)
        return fname

    def to_forward(self, *, verbose=None):
        """An :class:`mne.Forward` in MNE's SI units (a copy of the matrix).

        Needs the measurement info, source positions and the MRI->head
        transform (present for simulated leadfields and for files written by
        this package); a fixed leadfield also needs ``src_ori``, a free one
        K = 3.
        """
        return _to_forward(self)


def _check_overwrite(fname, overwrite):
    if Path(fname).exists() and not overwrite:
        raise FileExistsError(f"{fname} exists; pass overwrite=True to replace it")


def _jsonable(obj):
    from ..bids import _json_default

    try:
        return _json_default(obj)
    except TypeError:
        return str(obj)
    return str(obj)


def _provenance(mode, **extra):
    import mne

    out = dict(
        mode=mode,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        generated_by=f"mne-laminar-plugin {__version__}",
        mne_version=mne.__version__,
    )
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def _ch_meta_from_info(info):
    """Per-channel FIFF metadata and types from an Info (rows in info order)."""
    import mne

    chs = info["chs"]
    kinds = np.array([ch["kind"] for ch in chs], int)
    units = np.array([ch["unit"] for ch in chs], int)
    coils = np.array([ch["coil_type"] for ch in chs], int)
    types = [mne.channel_type(info, i) for i in range(len(chs))]
    return kinds, units, coils, types


# ============================================================== validation
def _validate(data: LeadfieldData, fname=None, *, check_finite=True):
    """Check shapes and values of a LeadfieldData; raise with clear messages."""
    where = _where(fname)
    lf = data.leadfield
    _check_option("orientation_type", data.orientation_type, ORIENTATION_TYPES)
    if not isinstance(lf, np.ndarray) or lf.dtype.kind not in "fiu":
        raise ValueError(
            f"{where}the leadfield must be a numeric array, got "
            f"{getattr(lf, 'dtype', type(lf))}"
        )
    want = 2 if data.orientation_type == "fixed" else 3
    if lf.ndim != want:
        hint = (
            " (a free leadfield stored as (n_sensors, 3 * n_sources) must be "
            "reshaped to (n_sensors, n_sources, 3))"
            if data.orientation_type == "free" and lf.ndim == 2
            else ""
        )
        raise ValueError(
            f"{where}a {data.orientation_type} leadfield must be {want}-D "
            f"(n_sensors, n_sources{', K' if want == 3 else ''}), got shape "
            f"{lf.shape}{hint}"
        )
    n_sens, n_src = lf.shape[:2]
    if data.orientation_type == "free":
        k = lf.shape[2]
        if k not in (2, 3):
            raise ValueError(f"{where}free leadfield needs K = 2 or 3, got K = {k}")
        q = data.Q_basis
        if q is None:
            if k != 3:
                raise ValueError(
                    f"{where}a free leadfield with K = {k} needs Q_basis of "
                    f"shape (n_sources, 3, {k})"
                )
        elif q.shape != (n_src, 3, k):
            raise ValueError(
                f"{where}Q_basis has shape {q.shape} but the leadfield "
                f"{lf.shape} needs (n_sources, 3, K) = {(n_src, 3, k)}"
            )
    if data.src_coords is not None and data.src_coords.shape != (n_src, 3):
        raise ValueError(
            f"{where}src_coords has shape {data.src_coords.shape}: it needs one "
            f"row (x, y, z) per source, i.e. ({n_src}, 3)"
        )
    if data.src_ori is not None and data.src_ori.shape != (n_src, 3):
        raise ValueError(
            f"{where}src_ori has shape {data.src_ori.shape}, expected ({n_src}, 3)"
        )
    for name in ("ch_names", "units", "ch_types"):
        if len(getattr(data, name)) != n_sens:
            raise ValueError(
                f"{where}{name} has {len(getattr(data, name))} entries for "
                f"{n_sens} sensors"
            )
    for name in ("layer", "column"):
        arr = getattr(data, name)
        if arr is None or np.shape(arr) != (n_src,):
            raise ValueError(
                f"{where}{name} must have one entry per source ({n_src}), got "
                f"{None if arr is None else np.shape(arr)}"
            )
    if data.n_layers < 1 or n_src % data.n_layers:
        raise ValueError(
            f"{where}{n_src} sources are not a whole number of layers "
            f"(n_layers = {data.n_layers})"
        )
    if len(data.layer) and (data.layer.min() < 0 or data.layer.max() >= data.n_layers):
        raise ValueError(f"{where}layer values must be in [0, {data.n_layers})")
    if data.info is not None and list(data.info["ch_names"]) != list(data.ch_names):
        raise ValueError(f"{where}info channels differ from ch_names")
    if check_finite:
        bad = _count_nonfinite(lf)
        if bad:
            first = _first_nonfinite(lf)
            raise ValueError(
                f"{where}the leadfield has {bad} NaN/inf value(s) (first at index "
                f"{first}); recompute or repair the file"
            )


def _count_nonfinite(lf, step_bytes=2**26):
    n = 0
    per_col = max(1, lf.shape[0] * int(np.prod(lf.shape[2:])) * lf.itemsize)
    step = max(1, step_bytes // per_col)
    for start in range(0, lf.shape[1], step):
        n += int((~np.isfinite(lf[:, start : start + step])).sum())
    return n


def _first_nonfinite(lf):
    idx = np.argwhere(~np.isfinite(lf))
    return tuple(int(i) for i in idx[0]) if len(idx) else None


# ==================================================================== npz
_NPZ_SEED_KEYS = (
    "leadfield", "sensor_kind", "sensor_units", "units", "sensor_unitmult",
    "coil_type", "src_coords", "Q_basis",
)  # fmt: skip


def _npz_get(npz, key, fname):
    try:
        return npz[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise ValueError(
                f"{fname}: key {key!r} holds a pickled Python object (object "
                "array), which is never unpickled for safety. Re-save it as a "
                "plain numeric/string array (omit the key when it is None)."
            ) from None
        raise ValueError(f"{fname}: could not read key {key!r}: {exc}") from exc


def _read_npz(fname, orientation_type=None):
    """Read the seed's npz layout (and this package's extra keys)."""
    fname = Path(fname)
    try:
        npz = np.load(fname, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{fname} is not a readable .npz file: {exc}") from exc
    with npz:
        keys = set(npz.files)
        if "leadfield" not in keys:
            raise ValueError(
                f"{fname} has no 'leadfield' array; keys found: {sorted(keys)}"
            )
        get = {k: _npz_get(npz, k, fname) for k in sorted(keys)}
    lf = get["leadfield"]
    if lf.dtype.kind not in "fiu":
        raise ValueError(f"{fname}: 'leadfield' must be numeric, got dtype {lf.dtype}")
    lf = np.asarray(lf, dtype=np.float64 if lf.dtype.kind in "iu" else lf.dtype)
    stored_ori = str(get["orientation_type"]) if "orientation_type" in get else None
    if orientation_type is None:
        orientation_type = stored_ori or ("free" if lf.ndim == 3 else "fixed")
    if stored_ori is not None and stored_ori != orientation_type:
        raise ValueError(
            f"{fname} holds a {stored_ori} leadfield, but orientation_type="
            f"{orientation_type!r} was requested"
        )
    data = LeadfieldData(leadfield=lf, orientation_type=orientation_type)
    if lf.ndim not in (2, 3):
        _validate(data, fname)  # raises the ndim error
    n_sens, n_src = lf.shape[:2]
    # --- channel metadata (scalar or per channel)
    units = get.get("sensor_units")
    if units is None and "units" in get and get["units"].dtype.kind in "iu":
        units = get["units"]  # legacy CaliBrain key
    per = {}
    for key, val in (
        ("sensor_kind", get.get("sensor_kind")),
        ("sensor_units", units),
        ("sensor_unitmult", get.get("sensor_unitmult")),
        ("coil_type", get.get("coil_type")),
    ):
        if val is not None and val.dtype.kind not in "iuf":
            raise ValueError(f"{fname}: {key} must be an integer FIFF code")
        per[key] = _per_channel(val, n_sens, key, fname)
    ch_units = get.get("ch_units")
    if units is not None:
        factors, exps, labels = unit_conversion(per["sensor_units"], per["sensor_unitmult"])
        if ch_units is not None and list(ch_units.astype(str)) != labels:
            raise ValueError(f"{fname}: ch_units disagree with sensor_units/unitmult")
        if not np.all(factors == 1.0):
            lf = lf.astype(np.float64) if lf.dtype.kind != "f" else lf
            lf *= factors.reshape((-1,) + (1,) * (lf.ndim - 1)).astype(lf.dtype)
        per["sensor_unitmult"] = exps
        data.leadfield = lf
    elif ch_units is not None:
        labels = [str(u) for u in ch_units]
        unknown = sorted(set(labels) - set(UNIT_LABELS) - {ARBITRARY})
        if unknown:
            raise ValueError(
                f"{fname}: unknown units {unknown}; expected "
                f"{sorted(UNIT_LABELS)} or {ARBITRARY!r}"
            )
    else:
        warn(
            f"{fname} stores no sensor units (sensor_units); the values are "
            "returned as stored and labelled 'arbitrary'."
        )
        labels = [ARBITRARY] * n_sens
    data.units = list(labels)
    data.sensor_kind = _collapse(per["sensor_kind"])
    data.sensor_units = _collapse(per["sensor_units"])
    data.sensor_unitmult = _collapse(per["sensor_unitmult"]) if units is not None else None
    data.coil_type = _collapse(per["coil_type"])
    if "ch_types" in get:
        data.ch_types = [str(t) for t in get["ch_types"]]
    elif per["sensor_units"] is not None:
        data.ch_types = [UNITS[int(u)][3] for u in per["sensor_units"]]
    else:
        data.ch_types = ["misc"] * n_sens
    data.ch_names = (
        [str(c) for c in get["ch_names"]]
        if "ch_names" in get
        else [f"CH{i:03d}" for i in range(n_sens)]
    )
    # --- sources
    for key in ("src_coords", "src_ori"):
        if key in get:
            val = np.asarray(get[key], float)
            setattr(data, key, val)
    q = get.get("Q_basis")
    if q is not None:
        q = np.asarray(q, float)
        if orientation_type == "fixed":
            warn(
                f"{fname}: Q_basis of shape {q.shape} is ignored for a fixed "
                "leadfield (it is only meaningful for free orientations)."
            )
            q = None
        elif q.ndim == 2 and lf.ndim == 3 and q.shape == (3, lf.shape[2]):
            q = np.broadcast_to(q, (n_src, *q.shape)).copy()
    elif orientation_type == "free" and lf.ndim == 3 and lf.shape[2] == 3:
        q = np.broadcast_to(np.eye(3), (n_src, 3, 3)).copy()
    data.Q_basis = q
    data.n_layers = int(get["n_layers"]) if "n_layers" in get else 1
    if "layer" in get and "column" in get:
        data.layer = np.asarray(get["layer"], int)
        data.column = np.asarray(get["column"], int)
    else:
        n_kept = n_src // max(data.n_layers, 1)
        data.layer = np.repeat(np.arange(data.n_layers), n_kept)
        data.column = np.tile(np.arange(n_kept), data.n_layers)
    data.n_columns = int(get["n_columns"]) if "n_columns" in get else (
        int(data.column.max()) + 1 if len(data.column) else 0
    )
    data.synthetic = bool(get["synthetic"]) if "synthetic" in get else False
    if "dropped_columns" in get:
        data.dropped_columns = np.asarray(get["dropped_columns"], int)
        data.dropped_reasons = [str(r) for r in get.get("dropped_reasons", [])]
    prov = {}
    if "provenance_json" in get:
        try:
            prov = json.loads(str(get["provenance_json"]))
        except json.JSONDecodeError:
            prov = {}
    data.provenance = dict(prov, loaded_from=str(fname), loaded_format="npz")
    _validate(data, fname)
    return data


# ===================================================================== h5
def _info_to_bytes(info):
    import mne

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lf-info.fif"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mne.io.write_info(path, info, reset_range=False)
        return path.read_bytes()


def _info_from_bytes(raw):
    import mne

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lf-info.fif"
        path.write_bytes(bytes(raw))
        return mne.io.read_info(path, verbose=False)


def fits_in_fif(data: LeadfieldData) -> bool:
    """Whether the MEG and EEG blocks of a FIF forward stay under 2 GB each.

    A FIF tag's size field is a 32-bit int and MNE writes each block as one
    float32 tag of ``n_channels x n_columns`` (3 columns per source if free).
    """
    n_col = data.n_sources * (1 if data.orientation_type == "fixed" else 3)
    types = np.asarray(data.ch_types)
    n_meg = int(np.isin(types, ("mag", "grad")).sum())
    n_eeg = int((types == "eeg").sum())
    return max(n_meg, n_eeg) * n_col * 4 + 1024 < FIF_TAG_LIMIT


@verbose
def write_leadfield(fname, data: LeadfieldData, *, overwrite=False, chunk_mb=64, verbose=None):
    """Write this package's derivative leadfield (HDF5), atomically.

    The matrix is written in column chunks (so a float32 file is never
    converted as a whole in memory); the metadata, per-channel units and the
    measurement info (as FIF bytes, no pickles) go alongside.

    Parameters
    ----------
    fname : path-like
        Ends with ``.h5`` (e.g. ``sub-01_desc-laminar_leadfield.h5``).
    data : LeadfieldData
    overwrite : bool
    chunk_mb : float
        Size of the column slabs written at once.
    %(verbose)s

    Returns
    -------
    fname : Path
    """
    import h5py

    from ..bids import atomic_path

    fname = Path(fname)
    _check_overwrite(fname, overwrite)
    _validate(data, fname, check_finite=False)
    lf = data.leadfield
    n_sens, n_src = lf.shape[:2]
    k = int(np.prod(lf.shape[2:]))
    col_bytes = n_sens * k * lf.itemsize
    # HDF5 chunks of ~4 MB along the sources; slabs of several chunks
    chunk_cols = int(max(1, min(n_src, (4 * 2**20) // max(col_bytes, 1))))
    slab = int(max(chunk_cols, (chunk_mb * 2**20) // max(col_bytes, 1) // chunk_cols * chunk_cols))
    str_dt = h5py.string_dtype()
    with atomic_path(fname) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = H5_FORMAT
        f.attrs["format_version"] = H5_FORMAT_VERSION
        f.attrs["orientation_type"] = data.orientation_type
        f.attrs["n_layers"] = int(data.n_layers)
        f.attrs["n_columns"] = int(data.n_columns)
        f.attrs["synthetic"] = bool(data.synthetic)
        f.attrs["source_order"] = "layer-major: source l * n_kept + k"
        f.attrs["units_convention"] = (
            "values in the unit of units[i] per channel: fT/nAm (mag), "
            "fT/cm/nAm (planar grad), uV/nAm (EEG)"
        )
        f.attrs["provenance"] = json.dumps(data.provenance, default=_jsonable)
        dset = f.create_dataset(
            "leadfield",
            shape=lf.shape,
            dtype=lf.dtype,
            chunks=(n_sens, chunk_cols, *lf.shape[2:]),
        )
        for start in range(0, n_src, slab):
            dset[:, start : start + slab] = lf[:, start : start + slab]
        f.create_dataset("ch_names", data=list(data.ch_names), dtype=str_dt)
        f.create_dataset("units", data=list(data.units), dtype=str_dt)
        f.create_dataset("ch_types", data=list(data.ch_types), dtype=str_dt)
        for key in ("sensor_kind", "sensor_units", "sensor_unitmult", "coil_type"):
            val = getattr(data, key)
            if val is not None:
                f.create_dataset(key, data=_per_channel(val, n_sens, key).astype(int))
        for key in ("src_coords", "Q_basis", "src_ori", "layer", "column",
                    "column_vertno"):  # fmt: skip
            val = getattr(data, key)
            if val is not None:
                f.create_dataset(key, data=np.asarray(val))
        if data.column_hemi is not None:
            f.create_dataset("column_hemi", data=[str(h) for h in data.column_hemi], dtype=str_dt)
        f.create_dataset("dropped_columns", data=np.asarray(data.dropped_columns, int))
        f.create_dataset("dropped_reasons", data=list(data.dropped_reasons), dtype=str_dt)
        if data.mri_head_t is not None:
            f.create_dataset("mri_head_t", data=np.asarray(data.mri_head_t["trans"]))
        if data.info is not None:
            f.create_dataset("info_fif", data=np.frombuffer(_info_to_bytes(data.info), np.uint8))
    logger.info(f"Wrote {fname} ({lf.nbytes / 2**20:.1f} MiB leadfield)")
    return fname


def _h5_str_list(f, key):
    if key not in f:
        return None
    return [s.decode() if isinstance(s, bytes) else str(s) for s in f[key][()]]


def _read_h5(fname, orientation_type=None, layers=None):
    import h5py
    from mne.transforms import Transform

    fname = Path(fname)
    try:
        f = h5py.File(fname, "r")
    except OSError as exc:
        raise ValueError(f"{fname} is not a readable HDF5 file: {exc}") from exc
    with f:
        if f.attrs.get("format") != H5_FORMAT:
            raise ValueError(
                f"{fname} is not an {H5_FORMAT} file (format attribute "
                f"{f.attrs.get('format')!r}); keys: {sorted(f.keys())}"
            )
        if "leadfield" not in f:
            raise ValueError(f"{fname} has no 'leadfield' dataset; keys: {sorted(f.keys())}")
        stored_ori = str(f.attrs["orientation_type"])
        n_layers = int(f.attrs["n_layers"])
        dset = f["leadfield"]
        layer = f["layer"][()] if "layer" in f else None
        if layers is not None and layer is not None:
            layers = np.atleast_1d(layers).astype(int)
            bad = layers[(layers < 0) | (layers >= n_layers)]
            if len(bad):
                raise ValueError(f"layers {bad.tolist()} not in [0, {n_layers})")
            sel = np.flatnonzero(np.isin(layer, layers))
        else:
            sel = None
        if sel is None:
            lf = np.empty(dset.shape, dset.dtype)
            if lf.size:
                dset.read_direct(lf)
        else:
            lf = np.empty((dset.shape[0], len(sel), *dset.shape[2:]), dset.dtype)
            # sources of a layer are contiguous (layer-major): read slabs
            bounds = np.flatnonzero(np.diff(sel) != 1) + 1
            pos = 0
            for run in np.split(sel, bounds):
                if len(run):
                    lf[:, pos : pos + len(run)] = dset[:, run[0] : run[-1] + 1]
                    pos += len(run)

        def get(key):
            if key not in f:
                return None
            val = f[key][()]
            return val if sel is None or key not in _PER_SOURCE else val[sel]

        data = LeadfieldData(leadfield=lf, orientation_type=stored_ori)
        data.ch_names = _h5_str_list(f, "ch_names") or []
        data.units = _h5_str_list(f, "units") or []
        data.ch_types = _h5_str_list(f, "ch_types") or []
        for key in ("sensor_kind", "sensor_units", "sensor_unitmult", "coil_type"):
            data.__setattr__(key, _collapse(get(key)))
        for key in ("src_coords", "Q_basis", "src_ori", "layer", "column"):
            setattr(data, key, get(key))
        data.column_vertno = get("column_vertno")
        hemi = _h5_str_list(f, "column_hemi")
        data.column_hemi = None if hemi is None else np.asarray(hemi)
        data.n_layers = n_layers if sel is None else len(np.unique(layer[sel]))
        if sel is not None:  # renumber the selected layers 0..n-1
            data.layer = np.searchsorted(np.unique(layer[sel]), data.layer)
        data.n_columns = int(f.attrs["n_columns"])
        data.synthetic = bool(f.attrs["synthetic"])
        data.dropped_columns = np.asarray(f["dropped_columns"][()], int)
        data.dropped_reasons = _h5_str_list(f, "dropped_reasons") or []
        if "mri_head_t" in f:
            data.mri_head_t = Transform("mri", "head", f["mri_head_t"][()])
        if "info_fif" in f:
            data.info = _info_from_bytes(f["info_fif"][()].tobytes())
        try:
            prov = json.loads(f.attrs.get("provenance", "{}"))
        except json.JSONDecodeError:
            prov = {}
    data.provenance = dict(prov, loaded_from=str(fname), loaded_format="h5")
    if sel is not None:
        data.provenance["loaded_layers"] = [int(x) for x in np.atleast_1d(layers)]
    unknown = sorted(set(data.units) - set(UNIT_LABELS) - {ARBITRARY})
    if unknown:
        raise ValueError(f"{fname}: unknown units {unknown}")
    _validate(data, fname)
    return _reorient(data, orientation_type, fname)


_PER_SOURCE = ("src_coords", "Q_basis", "src_ori", "layer", "column")


def _reorient(data, orientation_type, fname):
    if orientation_type is None or orientation_type == data.orientation_type:
        return data
    if orientation_type == "fixed":
        return data.fixed()
    raise ValueError(
        f"{fname} holds a fixed leadfield; a free one cannot be derived from "
        "it. Simulate with orientation_type='free'."
    )


# =========================================================== MNE forwards
def _sidecar_layout(fname):
    """Layers/columns from the JSON sidecar of a forward written by this package."""
    from ..bids import sidecar

    side = sidecar(fname)
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    layout = meta.get("LaminarLayout")
    return layout if isinstance(layout, dict) else None


def _read_fwd(fname, orientation_type="fixed"):
    import mne

    fname = Path(fname)
    try:
        fwd = mne.read_forward_solution(fname, verbose=False)
    except Exception as exc:
        raise ValueError(f"Could not read {fname} as an MNE forward: {exc}") from exc
    fixed_file = mne.forward.is_fixed_orient(fwd, orig=True)
    if orientation_type is None:
        orientation_type = "fixed" if fixed_file else "free"
    if orientation_type == "fixed" and not mne.forward.is_fixed_orient(fwd):
        if any(s["type"] == "vol" for s in fwd["src"]):
            raise ValueError(
                f"{fname} uses a volume source space, which has no orientation "
                "for a fixed leadfield; request orientation_type='free'."
            )
        fwd = mne.convert_forward_solution(
            fwd, surf_ori=True, force_fixed=True, use_cps=True, verbose=False
        )
    elif orientation_type == "free" and fixed_file:
        raise ValueError(
            f"{fname} was computed with fixed orientation; a free leadfield "
            "cannot be derived from it"
        )
    gain = np.asarray(fwd["sol"]["data"], dtype=np.float64)
    info = fwd["info"]
    n_ch = gain.shape[0]
    if list(info["ch_names"]) != list(fwd["sol"]["row_names"]):
        info = mne.pick_info(info, [info["ch_names"].index(n) for n in fwd["sol"]["row_names"]])
    gain, exps, labels = si_to_target_units(gain, info)
    kinds, units, coils, types = _ch_meta_from_info(info)
    n_src = fwd["nsource"]
    data = LeadfieldData(orientation_type=orientation_type)
    if orientation_type == "fixed":
        data.leadfield = gain
        data.src_ori = np.asarray(fwd["source_nn"], float)
    else:
        data.leadfield = gain.reshape(n_ch, n_src, 3)
        data.Q_basis = np.broadcast_to(np.eye(3), (n_src, 3, 3)).copy()
    data.sensor_kind, data.sensor_units = _collapse(kinds), _collapse(units)
    data.sensor_unitmult, data.coil_type = _collapse(exps), _collapse(coils)
    data.ch_names, data.units, data.ch_types = list(info["ch_names"]), labels, types
    data.src_coords = np.asarray(fwd["source_rr"], float)
    data.info = info
    data.mri_head_t = fwd["mri_head_t"]
    layout = _sidecar_layout(fname)
    if layout and n_src % int(layout.get("n_layers", 1)) == 0:
        data.n_layers = int(layout["n_layers"])
        data.n_columns = int(layout.get("n_columns", n_src // data.n_layers))
        dropped = np.asarray(layout.get("dropped_columns", []), int)
        kept = np.setdiff1d(np.arange(data.n_columns), dropped)
        if len(kept) * data.n_layers == n_src:
            data.layer = np.repeat(np.arange(data.n_layers), len(kept))
            data.column = np.tile(kept, data.n_layers)
            data.dropped_columns = dropped
            data.dropped_reasons = [str(r) for r in layout.get("dropped_reasons", [])]
    if data.layer is None:
        data.n_layers = 1
        data.n_columns = n_src
        data.layer = np.zeros(n_src, int)
        data.column = np.arange(n_src)
        hemis = [("lh", "rh")[i] if len(fwd["src"]) == 2 else s["type"] for i, s in enumerate(fwd["src"])]
        if all(s["type"] == "surf" for s in fwd["src"]):
            data.column_hemi = np.concatenate(
                [np.full(len(s["vertno"]), h) for h, s in zip(hemis, fwd["src"])]
            )
            data.column_vertno = np.concatenate([s["vertno"] for s in fwd["src"]])
    data.provenance = _provenance("load", loaded_from=str(fname), loaded_format="fif")
    _validate(data, fname)
    return data


def _target_to_si_factors(data):
    units = data.sensor_units
    if units is None:
        raise ValueError("to_forward needs sensor units (sensor_units)")
    units = _per_channel(units, data.n_sensors, "sensor_units")
    exps = _per_channel(data.sensor_unitmult, data.n_sensors, "sensor_unitmult")
    factors, _, _ = unit_conversion(units, exps)  # stored -> target
    si = np.array([UNITS[int(u)][0] for u in units])  # SI -> target
    return factors / si  # stored -> SI


def _to_forward(data: LeadfieldData):
    import mne
    from mne.forward import Forward
    from mne.transforms import apply_trans, invert_transform

    missing = [
        name
        for name in ("info", "src_coords", "mri_head_t")
        if getattr(data, name) is None
    ]
    if data.orientation_type == "fixed" and data.src_ori is None:
        missing.append("src_ori")
    if missing:
        raise ValueError(
            f"This leadfield lacks {missing} and cannot become an mne.Forward "
            "(simulated leadfields and files written by this package have them)"
        )
    n_sens, n_src = data.leadfield.shape[:2]
    to_si = _target_to_si_factors(data)[:, None]
    if data.orientation_type == "fixed":
        sol = data.leadfield * to_si
        source_ori = FIFF.FIFFV_MNE_FIXED_ORI
        source_nn = np.asarray(data.src_ori, float)
    else:
        if data.leadfield.shape[2] != 3:
            raise ValueError(
                "A free leadfield with K = 2 (reduced basis) cannot become an "
                "mne.Forward; MNE needs all three components"
            )
        q = data.Q_basis
        lf = data.leadfield
        if q is not None and not np.allclose(q, np.eye(3)):
            lf = np.einsum("msk,sdk->msd", lf, q)  # back to x/y/z
        sol = (lf * to_si[:, :, None] if lf.ndim == 3 else lf).reshape(n_sens, 3 * n_src)
        source_ori = FIFF.FIFFV_MNE_FREE_ORI
        source_nn = np.tile(np.eye(3), (n_src, 1))
    head_mri_t = invert_transform(data.mri_head_t)
    rr_mri = apply_trans(head_mri_t, data.src_coords)
    nn = data.src_ori if data.src_ori is not None else np.tile([0.0, 0.0, 1.0], (n_src, 1))
    nn_mri = nn @ head_mri_t["trans"][:3, :3].T
    subject = data.provenance.get("fs_subject")
    src = mne.setup_volume_source_space(
        subject=subject, pos=dict(rr=rr_mri, nn=nn_mri), verbose=False
    )
    src._transform_to("head", data.mri_head_t)
    info = data.info
    fwd_info = mne.Info(
        chs=info["chs"],
        comps=info["comps"],
        dev_head_t=info["dev_head_t"],
        mri_file="",
        mri_id=dict(machid=np.zeros(2, np.int32), version=0, secs=0, usecs=0),
        meas_file="",
        meas_id=None,
        working_dir=os.getcwd(),
        command_line="mne_laminar_plugin LeadfieldData.to_forward()",
        bads=[b for b in info["bads"] if b in info["ch_names"]],
        mri_head_t=data.mri_head_t,
    )
    fwd_info._update_redundant()
    fwd_info._check_consistency()
    fwd = Forward(
        sol=dict(data=sol, nrow=n_sens, ncol=sol.shape[1],
                 row_names=list(data.ch_names), col_names=[]),
        source_ori=source_ori,
        nsource=n_src,
        coord_frame=FIFF.FIFFV_COORD_HEAD,
        sol_grad=None,
        nchan=n_sens,
        _orig_source_ori=source_ori,
        _orig_sol=sol,
        _orig_sol_grad=None,
        info=fwd_info,
        src=src,
        source_rr=np.asarray(data.src_coords, float),
        source_nn=source_nn,
        surf_ori=False,
        mri_head_t=data.mri_head_t,
    )  # fmt: skip
    return fwd


@verbose
def write_forward_fif(fname, data: LeadfieldData, *, overwrite=False, verbose=None):
    """Write a leadfield as an MNE ``-fwd.fif`` (float32, SI units), atomically.

    Raises
    ------
    ValueError
        If a FIF tag would exceed 2 GB (use the HDF5 format instead).
    """
    import mne

    fname = Path(fname)
    _check_overwrite(fname, overwrite)
    if not fits_in_fif(data):
        raise ValueError(
            f"The leadfield ({data.n_sensors} x {data.n_sources} "
            f"{data.orientation_type}) exceeds the 2 GB limit of one FIF tag; "
            "write the HDF5 format (.h5) instead"
        )
    fwd = _to_forward(data)
    fname.parent.mkdir(parents=True, exist_ok=True)
    from ..bids import atomic_path

    # the temporary name ends with the final one, so MNE accepts it (_fwd.fif)
    with atomic_path(fname) as tmp:
        mne.write_forward_solution(tmp, fwd, overwrite=True, verbose=False)
    return fname


# ================================================================= paths
def leadfield_fname(root, subject, session=None, *, datatype="meg", kind="h5") -> Path:
    """Path of the laminar leadfield derivative of one subject/session.

    Parameters
    ----------
    root : path-like
        The laminar derivative dataset root.
    subject, session : str | None
        BIDS labels (without ``sub-``/``ses-``).
    datatype : str
        ``meg`` or ``eeg`` folder.
    kind : "h5" | "json" | "fwd" | "fwd_json"
        The HDF5 leadfield, its sidecar, the MNE forward (FIF), its sidecar.
    """
    from .. import bids

    _check_option("kind", kind, ("h5", "json", "fwd", "fwd_json"))
    suffix, ext = {
        "h5": ("leadfield", ".h5"),
        "json": ("leadfield", ".json"),
        "fwd": ("fwd", ".fif"),
        "fwd_json": ("fwd", ".json"),
    }[kind]
    return bids.bids_fname(
        root, subject=subject, session=session, datatype=datatype, desc="laminar",
        suffix=suffix, extension=ext,
    )  # fmt: skip


def leadfield_fnames(root, subject, session=None, *, datatype="meg") -> dict[str, Path]:
    """The files the leadfield step always writes (``h5`` and its ``json``)."""
    return {
        kind: leadfield_fname(root, subject, session, datatype=datatype, kind=kind)
        for kind in ("h5", "json")
    }


# ================================================================= readers
@verbose
def read_leadfield(
    fname, subject=None, session=None, *, datatype="meg", orientation_type=None,
    layers=None, verbose=None,
):  # fmt: skip
    """Read a leadfield file as :class:`LeadfieldData` (never unpickles).

    Parameters
    ----------
    fname : path-like
        ``.npz`` (CaliBrain layout), ``.h5`` (this package's derivative), or an
        MNE forward (``-fwd.fif``, ``_fwd.fif``, ``.gz``). With ``subject``:
        the laminar derivative root, read at :func:`leadfield_fname`.
    subject, session : str | None
        BIDS labels, to read the derivative of the laminar leadfield step.
    datatype : str
        Data type folder of the derivative (with ``subject``).
    orientation_type : "fixed" | "free" | None
        Requested orientation (None: as stored). A free file with source
        orientations can be read as fixed; a fixed file never as free.
    layers : int | list of int | None
        Only these layers (``.h5`` only; read without loading the others).
    %(verbose)s

    Returns
    -------
    data : LeadfieldData
    """
    _validate_type(fname, "path-like", "fname")
    if subject is not None:
        fname = leadfield_fname(fname, subject, session, datatype=datatype)
    if orientation_type is not None:
        _check_option("orientation_type", orientation_type, ORIENTATION_TYPES)
    fname = Path(fname)
    if not fname.is_file():
        hint = " It is made by the step laminar/leadfield." if subject is not None else ""
        raise FileNotFoundError(_missing_message(fname) + hint)
    name = fname.name
    if name.endswith((".h5", ".hdf5")):
        return _read_h5(fname, orientation_type, layers)
    if layers is not None:
        raise ValueError("layers= is only supported for .h5 leadfield files")
    if name.endswith(".npz"):
        return _read_npz(fname, orientation_type)
    if name.endswith(("-fwd.fif", "_fwd.fif", "-fwd.fif.gz", "_fwd.fif.gz")):
        return _read_fwd(fname, orientation_type)
    raise ValueError(
        f"Unknown leadfield file type {name!r}: expected .npz, .h5, -fwd.fif or _fwd.fif"
    )


def _missing_message(path, tried=None):
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if folder.is_dir():
        entries = sorted(p.name for p in folder.iterdir())
        shown = ", ".join(entries[:30]) + (" ..." if len(entries) > 30 else "")
        there = f"Files in {folder}: {shown or '(empty folder)'}"
    else:
        there = f"The folder {folder} does not exist."
    what = f"none of {tried}" if tried else str(path)
    return f"Leadfield file not found: {what}. {there}"


# ================================================================= builder
class LeadfieldBuilder:
    """Build, load or generate a laminar leadfield (CaliBrain-compatible).

    Parameters
    ----------
    leadfield_dir : path-like | None
        Folder of files for ``retrieve_mode="load"``
        (``{subject}_{fixed|free}_leadfield.npz``, this package's
        ``*_leadfield.h5``, or MNE ``*-fwd.fif``/``*_fwd.fif``). Not needed by
        the other modes.
    subjects_dir : path-like | None
        FreeSurfer subjects folder (simulate: default BEM and surfaces).
    surfaces : LaminarSurfaces | path-like | callable | None
        Simulate: the laminar surfaces; a derivative root folder (read with
        ``LaminarSurfaces.load(root, subject, session)``); a callable
        ``surfaces(subject)``; or None to build them with
        ``LaminarSurfaces.from_freesurfer(subject, subjects_dir, **surfaces_kwargs)``.
    bem : path-like | ConductorModel | callable | None
        Simulate: BEM solution or sphere model (callable: ``bem(subject)``).
        None: the single ``<subjects_dir>/<subject>/bem/<subject>-*-bem-sol.fif``.
    trans : path-like | Transform | "fsaverage" | "identity" | callable
        Simulate: head <-> MRI transform (callable: ``trans(subject)``).
    info : path-like | mne.Info | callable
        Simulate: measurement info (FIF) with the sensors.
    mindist : float
        Simulate: minimum distance (mm) of every layer to the inner skull.
    engine : "mne" | "fast"
        Simulate: forward engine (see :func:`~mne_laminar_plugin.forward.compute_laminar_forward`).
    meg, eeg : bool
        Simulate: channel types to include.
    session : str | None
        Session of the surfaces when ``surfaces`` is a derivative root.
    surfaces_kwargs : dict | None
        Passed to ``LaminarSurfaces.from_freesurfer``.
    dtype : "float64" | "float32"
        Simulate: dtype of the leadfield.
    n_jobs : int | None
        Simulate: passed to the forward engine.
    verbose : bool | str | int | None
        MNE log level of the forward computations (None: MNE's global level).

    Notes
    -----
    The builder holds configuration only: each call returns fresh metadata.
    """

    def __init__(
        self,
        leadfield_dir=None,
        *,
        subjects_dir=None,
        surfaces=None,
        bem=None,
        trans=None,
        info=None,
        mindist=5.0,
        engine="fast",
        meg=True,
        eeg=True,
        session=None,
        surfaces_kwargs=None,
        dtype="float64",
        n_jobs=None,
        verbose=None,
    ):
        from ..forward import ENGINES

        if leadfield_dir is not None:
            _validate_type(leadfield_dir, "path-like", "leadfield_dir")
        _check_option("engine", engine, ENGINES)
        _validate_type(mindist, "numeric", "mindist")
        _check_option("dtype", np.dtype(dtype).name, ("float64", "float32"))
        self.leadfield_dir = None if leadfield_dir is None else Path(leadfield_dir)
        self.subjects_dir = None if subjects_dir is None else Path(subjects_dir)
        self.surfaces = surfaces
        self.bem = bem
        self.trans = trans
        self.info = info
        self.mindist = float(mindist)
        self.engine = engine
        self.meg = bool(meg)
        self.eeg = bool(eeg)
        self.session = session
        self.surfaces_kwargs = dict(surfaces_kwargs or {})
        self.dtype = np.dtype(dtype)
        self.n_jobs = n_jobs
        self.verbose = verbose

    def __repr__(self):
        return f"<LeadfieldBuilder | leadfield_dir={self.leadfield_dir}, engine={self.engine!r}>"

    @verbose
    def get_leadfield(
        self,
        subject="fsaverage",
        orientation_type="fixed",
        retrieve_mode="load",
        n_sensors=64,
        n_sources=1284,
        return_metadata=False,
        random_state=None,
        *,
        fname=None,
        n_layers=1,
        verbose=None,
    ):
        """Get a leadfield by loading, simulating or generating it.

        Parameters
        ----------
        subject : str
            Subject name (file prefix for load; FreeSurfer subject for simulate).
        orientation_type : "fixed" | "free"
        retrieve_mode : "load" | "simulate" | "random"
        n_sensors, n_sources : int
            Shape of a random leadfield (random mode only).
        return_metadata : bool
            Return a :class:`LeadfieldData` instead of the array.
        random_state : None | int | np.random.Generator | np.random.RandomState
            Random mode: the seed (the same seed gives the same matrix).
        fname : path-like | None
            Load: an explicit file instead of the search in ``leadfield_dir``.
        n_layers : int
            Random mode: number of layers the sources are split into.
        %(verbose)s

        Returns
        -------
        leadfield : ndarray | LeadfieldData
            ``(n_sensors, n_sources)`` fixed, ``(n_sensors, n_sources, K)`` free.
        """
        _check_option("orientation_type", orientation_type, ORIENTATION_TYPES)
        _check_option("retrieve_mode", retrieve_mode, RETRIEVE_MODES)
        _validate_type(subject, str, "subject")
        if retrieve_mode == "random":
            data = self.random(
                orientation_type, n_sensors, n_sources, random_state=random_state,
                n_layers=n_layers, subject=subject,
            )  # fmt: skip
        elif retrieve_mode == "load":
            data = self.load(subject, orientation_type, fname=fname)
        else:
            data = self.simulate(subject, orientation_type)
        return data if return_metadata else data.leadfield

    # ----------------------------------------------------------- random
    def random(
        self, orientation_type="fixed", n_sensors=64, n_sources=1284, *,
        random_state=None, n_layers=1, subject=None,
    ) -> LeadfieldData:  # fmt: skip
        """A standard-normal synthetic leadfield (no physical meaning)."""
        from mne.utils import check_random_state

        _check_option("orientation_type", orientation_type, ORIENTATION_TYPES)
        for name, val in (("n_sensors", n_sensors), ("n_sources", n_sources), ("n_layers", n_layers)):
            _validate_type(val, "int", name)
            if val < 1:
                raise ValueError(f"{name} must be >= 1, got {val}")
        if n_sources % n_layers:
            raise ValueError(
                f"n_sources ({n_sources}) must be a multiple of n_layers ({n_layers})"
            )
        rng = check_random_state(random_state)
        shape = (n_sensors, n_sources) + ((3,) if orientation_type == "free" else ())
        lf = rng.standard_normal(shape)
        n_col = n_sources // n_layers
        seed = random_state if isinstance(random_state, int | np.integer) else None
        data = LeadfieldData(
            leadfield=lf,
            ch_names=[f"RND{i:03d}" for i in range(n_sensors)],
            units=[ARBITRARY] * n_sensors,
            ch_types=["misc"] * n_sensors,
            layer=np.repeat(np.arange(n_layers), n_col),
            column=np.tile(np.arange(n_col), n_layers),
            n_layers=int(n_layers),
            n_columns=int(n_col),
            orientation_type=orientation_type,
            synthetic=True,
            Q_basis=(
                np.broadcast_to(np.eye(3), (n_sources, 3, 3)).copy()
                if orientation_type == "free"
                else None
            ),
            provenance=_provenance(
                "random", subject=subject, random_state=seed,
                random_state_given=random_state is not None,
                distribution="standard normal, arbitrary units",
            ),  # fmt: skip
        )
        return data

    # ------------------------------------------------------------- load
    def _candidates(self, subject, orientation_type):
        folder = self.leadfield_dir
        subs = [subject] + ([f"sub-{subject}"] if not subject.startswith("sub-") else [])
        tried = [f"{subject}_{orientation_type}_leadfield.npz"]
        exact = folder / tried[0]
        if exact.is_file():
            return [exact], tried
        for patterns in (
            [f"{s}_*leadfield.h5" for s in subs] + [f"{s}_leadfield.h5" for s in subs],
            [f"{s}{sep}fwd.fif" for s in subs for sep in ("-", "_")]
            + [f"{s}_*fwd.fif" for s in subs] + [f"{s}-*fwd.fif" for s in subs],
        ):  # fmt: skip
            tried += patterns
            found = sorted({p for pat in patterns for p in folder.glob(pat)})
            if found:
                return found, tried
        return [], tried

    def load(self, subject, orientation_type="fixed", *, fname=None) -> LeadfieldData:
        """Load a leadfield file (see :func:`read_leadfield`)."""
        _check_option("orientation_type", orientation_type, ORIENTATION_TYPES)
        if fname is None:
            if self.leadfield_dir is None:
                raise ValueError(
                    "retrieve_mode='load' needs leadfield_dir (or fname=): "
                    "LeadfieldBuilder(leadfield_dir=...)"
                )
            if not self.leadfield_dir.is_dir():
                raise FileNotFoundError(
                    f"leadfield_dir {self.leadfield_dir} does not exist or is not a folder"
                )
            found, tried = self._candidates(subject, orientation_type)
            if not found:
                raise FileNotFoundError(_missing_message(self.leadfield_dir, tried))
            if len(found) > 1:
                raise ValueError(
                    f"Several leadfield files match subject {subject!r} in "
                    f"{self.leadfield_dir}: {[p.name for p in found]}; pass fname="
                )
            fname = found[0]
        data = read_leadfield(fname, orientation_type=orientation_type)
        data.provenance = dict(data.provenance, mode="load", subject=subject)
        return data

    # --------------------------------------------------------- simulate
    def _resolve(self, value, subject):
        return value(subject) if callable(value) and not hasattr(value, "layers") else value

    def _surfaces_for(self, subject):
        surfaces = self.surfaces
        if surfaces is not None and hasattr(surfaces, "layers"):
            return surfaces
        if callable(surfaces):
            return surfaces(subject)
        from ..surfaces import LaminarSurfaces

        if surfaces is not None:
            return LaminarSurfaces.load(surfaces, subject, self.session)
        if self.subjects_dir is None:
            raise ValueError(
                "simulate needs the laminar surfaces: pass surfaces= (a "
                "LaminarSurfaces, a derivative root, or a callable) or "
                "subjects_dir= to build them from FreeSurfer"
            )
        return LaminarSurfaces.from_freesurfer(
            subject, self.subjects_dir, **self.surfaces_kwargs
        )

    def _bem_for(self, subject):
        bem = self._resolve(self.bem, subject)
        if bem is not None:
            return bem
        if self.subjects_dir is None:
            raise ValueError("simulate needs bem= (or subjects_dir= to find the BEM solution)")
        folder = self.subjects_dir / subject / "bem"
        found = sorted(folder.glob(f"{subject}-*-bem-sol.fif"))
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise FileNotFoundError(
                f"Found {what} BEM solution(s) {folder}/{subject}-*-bem-sol.fif "
                f"({[p.name for p in found]}); pass bem= explicitly (MBP makes it "
                "in step source/make_bem_solution)"
            )
        return found[0]

    def simulate(self, subject, orientation_type="fixed") -> LeadfieldData:
        """The MNE forward on the subject's laminar source space, in target units."""
        from ..forward import compute_laminar_forward

        _check_option("orientation_type", orientation_type, ORIENTATION_TYPES)
        info = self._resolve(self.info, subject)
        trans = self._resolve(self.trans, subject)
        if info is None:
            raise ValueError("simulate needs info= (a FIF file or mne.Info with the sensors)")
        if trans is None:
            raise ValueError(
                "simulate needs trans= (a -trans.fif, a Transform, 'fsaverage' "
                "or 'identity')"
            )
        surfaces = self._surfaces_for(subject)
        bem = self._bem_for(subject)
        fwd = compute_laminar_forward(
            surfaces, info, trans, bem, orientation_type=orientation_type,
            mindist=self.mindist, engine=self.engine, meg=self.meg, eeg=self.eeg,
            dtype=self.dtype, subject=subject, n_jobs=self.n_jobs, verbose=self.verbose,
        )  # fmt: skip
        return from_laminar_forward(
            fwd, subject=subject,
            inputs=dict(bem=_describe(bem), trans=_describe(trans), info=_describe(info)),
        )  # fmt: skip


def _describe(obj):
    if isinstance(obj, str | os.PathLike):
        return str(obj)
    return f"instance of {type(obj).__name__}"


def from_laminar_forward(fwd, *, subject=None, inputs=None) -> LeadfieldData:
    """LeadfieldData from a :class:`~mne_laminar_plugin.forward.LaminarForward`.

    The SI gain is converted to target units **in place** (the matrix is not
    copied); ``fwd`` should not be used afterwards.
    """
    gain, exps, labels = si_to_target_units(fwd.gain, fwd.info)
    kinds, units, coils, types = _ch_meta_from_info(fwd.info)
    n_ch = gain.shape[0]
    n_src = fwd.n_sources
    free = fwd.orientation_type == "free"
    data = LeadfieldData(
        leadfield=gain.reshape(n_ch, n_src, 3) if free else gain,
        sensor_kind=_collapse(kinds),
        sensor_units=_collapse(units),
        sensor_unitmult=_collapse(exps),
        coil_type=_collapse(coils),
        src_coords=fwd.rr_head,
        Q_basis=np.broadcast_to(np.eye(3), (n_src, 3, 3)).copy() if free else None,
        ch_names=fwd.ch_names,
        units=labels,
        ch_types=types,
        layer=fwd.layer,
        column=fwd.column,
        n_layers=fwd.n_layers,
        n_columns=fwd.n_columns,
        orientation_type=fwd.orientation_type,
        synthetic=False,
        src_ori=fwd.nn_head,
        info=fwd.info,
        mri_head_t=fwd.mri_head_t,
        dropped_columns=np.asarray(fwd.dropped["columns"], int),
        dropped_reasons=list(fwd.dropped["reasons"]),
        column_hemi=fwd.hemi,
        column_vertno=fwd.vertno,
        provenance=_provenance(
            "simulate", subject=subject, fs_subject=subject, engine=fwd.engine,
            mindist_mm=fwd.mindist, conductor=fwd.conductor,
            dropped_counts=fwd.dropped["counts"], timings_s=fwd.timings,
            orientation_basis=(
                "x/y/z of the head frame" if free
                else "projection of the free leadfield on src_ori (head frame)"
            ),
            **(inputs or {}),
        ),  # fmt: skip
    )
    _validate(data, check_finite=False)
    return data


# ====================================================================== QC
def column_norms(data: LeadfieldData, *, step_bytes=2**26) -> dict[str, np.ndarray]:
    """Per-source leadfield norm over the sensors of each unit group.

    Computed in blocks of sources, so no copy of the matrix is made.

    Returns
    -------
    norms : dict of unit label -> ndarray, shape (n_sources,)
        Norms over the rows sharing a unit (norms across units would mix
        fT/nAm with µV/nAm); free orientations include all K components.
    """
    lf = data.leadfield
    n_src = lf.shape[1]
    k = int(np.prod(lf.shape[2:]))
    groups = data.channel_groups()
    out = {unit: np.empty(n_src) for unit in groups}
    step = max(1, step_bytes // max(1, lf.shape[0] * k * 8))
    for start in range(0, n_src, step):
        blk = np.asarray(lf[:, start : start + step], dtype=np.float64)
        blk = blk.reshape(blk.shape[0], blk.shape[1], k)
        for unit, rows in groups.items():
            sub = blk[rows]
            out[unit][start : start + step] = np.sqrt(np.einsum("rsk,rsk->s", sub, sub))
    return out


def depth_ratio(data: LeadfieldData, *, norms=None) -> dict[str, np.ndarray]:
    """Deepest-layer over most superficial-layer column norm, per kept column."""
    norms = column_norms(data) if norms is None else norms
    n_kept = data.n_sources // data.n_layers
    out = {}
    for unit, nrm in norms.items():
        per_layer = nrm.reshape(data.n_layers, n_kept)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[unit] = per_layer[-1] / per_layer[0]
    return out


#: Floor of the robust spread of log10 column norms (decades), so that a
#: layer of identical norms does not flag every small deviation.
MIN_LOG_SPREAD = 0.05


def flag_outlier_columns(data: LeadfieldData, *, threshold=5.0, norms=None):
    """Columns whose norm is a robust outlier within a layer, or zero.

    For each unit group and layer, ``z = (log10 n - median) / s`` over the
    kept columns, with ``s = max(1.4826 MAD, 0.05)``; |z| > ``threshold`` (or
    a zero or non-finite norm) flags the column.

    Returns
    -------
    rows : list of dict
        ``column, hemi, vertno, layer, unit, norm, robust_z`` per flag.
    """
    norms = column_norms(data) if norms is None else norms
    n_kept = data.n_sources // data.n_layers
    cols = data.columns
    rows = []
    for unit, nrm in norms.items():
        per_layer = nrm.reshape(data.n_layers, n_kept)
        with np.errstate(divide="ignore"):
            logn = np.log10(per_layer)
        for layer in range(data.n_layers):
            vals = logn[layer]
            finite = np.isfinite(vals)
            if finite.sum() < 3:
                continue
            med = np.median(vals[finite])
            mad = max(1.4826 * np.median(np.abs(vals[finite] - med)), MIN_LOG_SPREAD)
            z = np.where(finite, (np.where(finite, vals, med) - med) / mad, -np.inf)
            flagged = np.flatnonzero(~finite | (np.abs(z) > threshold))
            for k in flagged:
                col = int(cols[k])
                rows.append(
                    dict(
                        column=col,
                        hemi=None if data.column_hemi is None else str(data.column_hemi[col]),
                        vertno=None if data.column_vertno is None else int(data.column_vertno[col]),
                        layer=int(layer),
                        unit=unit,
                        norm=float(per_layer[layer, k]),
                        robust_z=float(z[k]) if finite[k] else float("-inf"),
                    )
                )
    return rows


def plot_column_norms(data: LeadfieldData, *, title=None, norms=None):
    """The seed's QC plot, per unit group, colored by layer (matplotlib Figure)."""
    import matplotlib.pyplot as plt

    norms = column_norms(data) if norms is None else norms
    fig, axes = plt.subplots(
        len(norms), 1, figsize=(8, 2.6 * len(norms)), squeeze=False, layout="constrained"
    )
    cmap = plt.get_cmap("viridis", max(data.n_layers, 2))
    idx = np.arange(data.n_sources)
    for ax, (unit, nrm) in zip(axes[:, 0], norms.items()):
        for layer in range(data.n_layers):
            mask = data.layer == layer
            label = _layer_label(layer, data.n_layers)
            ax.plot(idx[mask], nrm[mask], ".", ms=2, color=cmap(layer), label=label)
        if np.all(nrm > 0):
            ax.set_yscale("log")
        ax.set(xlabel="Source index (layer-major)", ylabel=f"Column norm ({_pretty(unit)})")
        ax.legend(loc="upper right", fontsize=7, ncols=min(data.n_layers, 6), markerscale=4)
    axes[0, 0].set_title(title or "Leadfield column norm by layer")
    return fig


def plot_depth_ratio(data: LeadfieldData, *, norms=None):
    """Histogram of deepest / most superficial column norm, per unit group."""
    import matplotlib.pyplot as plt

    ratios = depth_ratio(data, norms=norms)
    fig, axes = plt.subplots(
        1, len(ratios), figsize=(4 * len(ratios), 3), squeeze=False, layout="constrained"
    )
    for ax, (unit, ratio) in zip(axes[0], ratios.items()):
        good = np.isfinite(ratio) & (ratio > 0)
        vals = np.log10(ratio[good])
        ax.hist(vals, bins=40, color="0.3")
        ax.axvline(0, color="r", lw=1)
        med = np.median(ratio[good]) if good.any() else np.nan
        ax.set(
            xlabel="log10(norm deepest / norm pial)",
            ylabel="Columns",
            title=f"{_pretty(unit)} (median ratio {med:.3g})",
        )
    return fig


def _layer_label(layer, n_layers):
    if layer == 0:
        return "0 (pial)"
    if layer == n_layers - 1:
        return f"{layer} (white)"
    return str(layer)


def _pretty(unit):
    return unit.replace("uV", "µV")
