""":class:`LeadfieldData`: a laminar leadfield, its channels, sources and provenance."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from mne.io.constants import FIFF
from mne.utils import _check_option

from .._conventions import (
    ORIENTATION_TYPES,
    UNITS,
)
from .._version import __version__


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
    layer_ids : ndarray of int, shape (n_layers,) | None
        After a partial read (``read_leadfield(..., layers=)``): the layer of
        the model that each held layer ``0 .. n_layers - 1`` is (sorted,
        0 = pial). None when every layer of the model is held.
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
    layer_ids: np.ndarray | None = None

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
            from ._formats import write_leadfield

            return write_leadfield(fname, self, overwrite=overwrite, verbose=verbose)
        if name.endswith(".npz"):
            return self.to_npz(fname, overwrite=overwrite)
        if name.endswith(("-fwd.fif", "_fwd.fif")):
            from ._formats import write_forward_fif

            return write_forward_fif(fname, self, overwrite=overwrite, verbose=verbose)
        raise ValueError(
            f"Unknown leadfield file type {name!r}: use .h5, .npz, -fwd.fif or _fwd.fif"
        )

    def to_npz(self, fname, *, overwrite=False) -> Path:
        """Write CaliBrain's npz layout (plus this package's keys), no pickles.

        Per-channel metadata are stored as scalars when every channel agrees
        (as CaliBrain expects), else per channel: CaliBrain's loader reads one
        scalar unit per file, so for CaliBrain write a mixed-type leadfield
        with :meth:`to_calibrain` (one file per channel type).
        """
        from ..bids import write_npz

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
            provenance_json=np.asarray(
                json.dumps(reproducible_provenance(self.provenance), default=_jsonable)
            ),
        )
        return write_npz(fname, arrays)

    def to_calibrain(self, folder, subject, *, grad_unit="fT/m", free_k=None,
                     overwrite=False) -> dict:  # fmt: skip
        """Write CaliBrain files, one per channel type (see :func:`export_calibrain`)."""
        from ._npz import export_calibrain

        return export_calibrain(self, folder, subject, grad_unit=grad_unit,
                                free_k=free_k, overwrite=overwrite)  # fmt: skip

    def to_forward(self, *, verbose=None):
        """An :class:`mne.Forward` in MNE's SI units (a copy of the matrix).

        Needs the measurement info, source positions and the MRI->head
        transform (present for simulated leadfields and for files written by
        this package); a fixed leadfield also needs ``src_ori``, a free one
        K = 3.
        """
        from ._formats import _to_forward

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


def _provenance(mode, **extra):
    import mne

    out = dict(
        mode=mode,
        generated_by=f"mne-laminar-plugin {__version__}",
        mne_version=mne.__version__,
    )
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


#: Provenance entries that change from run to run (wall-clock times), never written.
VOLATILE_PROVENANCE = ("created", "timings_s")


def reproducible_provenance(provenance: dict | None) -> dict:
    """The provenance as written to files: no wall-clock time, so reruns match.

    Drops :data:`VOLATILE_PROVENANCE` (creation time, step timings: logged and
    in the report, not in the files). When ``SOURCE_DATE_EPOCH`` is set
    (reproducible-builds convention), ``created`` is that time, in UTC.
    """
    import os

    out = {k: v for k, v in (provenance or {}).items() if k not in VOLATILE_PROVENANCE}
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            stamp = time.gmtime(int(epoch))
        except (ValueError, OverflowError, OSError):
            raise ValueError(
                f"SOURCE_DATE_EPOCH={epoch!r} is not a Unix time (integer seconds "
                "since 1970-01-01 UTC); set it to e.g. $(git log -1 --format=%ct) or "
                "unset it."
            ) from None
        out["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp)
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


def describe_sensors(info, ch_names=None) -> str:
    """The sensors of (some) channels in words, with counts and coil types.

    E.g. ``"275 CTF axial gradiometer (coil 5001), synthetic gradiometer
    compensation grade 3"`` or ``"80 Kernel OPM sensor (coil 8201)"``, from
    MNE's coil definitions (``coil_def.dat``).
    """
    from mne.forward._make_forward import _read_coil_defs

    names = info["ch_names"] if ch_names is None else list(ch_names)
    idx = [info["ch_names"].index(n) for n in names if n in info["ch_names"]]
    coils = np.array([int(info["chs"][i]["coil_type"]) & 0xFFFF for i in idx], int)
    descs = {}
    for d in _read_coil_defs(verbose=False):
        descs.setdefault(int(d["coil_type"]), d["desc"].split(" size")[0].strip(' "'))
    descs[int(FIFF.FIFFV_COIL_EEG)] = "EEG electrode"
    parts = [f"{int((coils == c).sum())} {descs.get(int(c), 'sensor')} (coil {int(c)})"
             for c in dict.fromkeys(coils.tolist())]  # fmt: skip
    # the grade in effect is in the upper 16 bits of the MEG coil types (as MNE)
    grades = {int(info["chs"][i]["coil_type"]) >> 16 for i in idx
              if info["chs"][i]["kind"] == FIFF.FIFFV_MEG_CH}  # fmt: skip
    grade = max(grades) if grades else 0
    if grade:
        parts.append(f"synthetic gradiometer compensation grade {grade}")
    return ", ".join(parts)


# ============================================================== validation
def _channel_types() -> set[str]:
    from mne.io import get_channel_type_constants

    return set(get_channel_type_constants(include_defaults=True))


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
    if n_sens == 0 or n_src == 0:
        raise ValueError(
            f"{where}the leadfield has shape {lf.shape}: it needs at least one "
            "sensor (rows) and one source (columns)"
        )
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
    if data.src_coords is not None and not np.all(np.isfinite(data.src_coords)):
        bad = np.flatnonzero(~np.all(np.isfinite(data.src_coords), axis=1))
        raise ValueError(
            f"{where}src_coords has NaN/inf for {len(bad)} source(s) (first: source "
            f"{int(bad[0])}); every source needs a finite position (head frame, m)"
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
    have = np.unique(data.layer)
    if len(have) != data.n_layers:
        raise ValueError(
            f"{where}n_layers is {data.n_layers} but the sources hold layer(s) "
            f"{have.tolist()}: every layer 0..n_layers-1 needs its sources"
        )
    if len(data.column) and (
        data.column.min() < 0 or data.column.max() >= max(int(data.n_columns), 1)
    ):
        raise ValueError(
            f"{where}column values must be in [0, n_columns = {data.n_columns}), got "
            f"[{int(data.column.min())}, {int(data.column.max())}]"
        )
    known = _channel_types()
    bad_types = sorted(set(map(str, data.ch_types)) - known)
    if bad_types:
        raise ValueError(
            f"{where}unknown channel type(s) {bad_types} in ch_types; expected MNE "
            "channel types such as 'mag', 'grad', 'eeg' (or 'misc')"
        )
    if data.sensor_units is not None:
        units = _per_channel(data.sensor_units, n_sens, "sensor_units", fname)
        want = [UNITS[int(u)][3] if int(u) in UNITS else None for u in units]
        clash = [
            i for i, (t, w) in enumerate(zip(data.ch_types, want))
            if w is not None and t in {v[3] for v in UNITS.values()} and t != w
        ]  # fmt: skip
        if clash:
            i = clash[0]
            raise ValueError(
                f"{where}{len(clash)} channel(s) have a unit that does not fit their "
                f"type (first: channel {i} {data.ch_names[i]!r} is "
                f"{data.ch_types[i]!r} but sensor_units {int(units[i])} is a "
                f"{want[i]} unit); fix sensor_units or ch_types"
            )
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
