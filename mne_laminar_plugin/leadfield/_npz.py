"""``.npz`` leadfields: CaliBrain's layout both ways, read lazily and never unpickled.

Reading opens the zip archive and reads only the members this package uses,
one at a time: the NumPy header of a member is checked first (object dtypes,
which would need unpickling, are skipped with a warning naming the key; the
declared shape must match the member's declared size and fit in memory), and
only then are its data decompressed. Members that are not used (CaliBrain's
``subject``, ``source_ori``, anything else) are never decompressed.

Writing for CaliBrain (:func:`export_calibrain`) gives one file per channel
type, ``<folder>/<ch_type>/<subject>_<fixed|free>_leadfield.npz``, with the
scalar ``sensor_kind``/``sensor_units``/``sensor_unitmult``/``coil_type`` its
loader expects (``get_leadfield`` reads one scalar unit per file, from
``chs[0]`` when CaliBrain writes it).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
from mne.io.constants import FIFF
from mne.utils import _check_option, _validate_type, logger, warn

from .._conventions import ARBITRARY, GRAD_UNITS, UNIT_LABELS, UNITS
from ._data import LeadfieldData, _collapse, _per_channel, _validate
from ._units import convert_rows, unit_conversion

#: Keys of the npz layout this package reads (CaliBrain's and its own).
NPZ_KEYS = (
    "leadfield", "orientation_type", "sensor_kind", "sensor_units", "units",
    "sensor_unitmult", "coil_type", "ch_units", "ch_types", "ch_names",
    "src_coords", "src_ori", "Q_basis", "n_layers", "layer", "column",
    "n_columns", "synthetic", "dropped_columns", "dropped_reasons",
    "provenance_json",
)  # fmt: skip

#: What is lost when a pickled key is skipped (CaliBrain pickles these).
_LOST = {
    "info": (
        "the measurement info (CaliBrain pickles its mne.Info) is lost: channel "
        "names become CH000, CH001, ..., and positions, coil definitions and "
        "compensation are unknown, so to_forward() and whitening with a noise "
        "covariance are unavailable. For those, read the -fwd.fif the file was "
        "made from with read_leadfield()"
    ),
    "Q_basis": (
        "CaliBrain stores Q_basis=None of a fixed leadfield as a pickled "
        "object; nothing is lost for a fixed leadfield"
    ),
}


_PICKLED = "holds a pickled Python object (object array), which is never unpickled for safety"


class _NotLoaded(Exception):
    """A member that is not a plain NumPy array (skipped or refused)."""


class SafeNpz:
    """A ``.npz`` archive read member by member, never unpickled.

    Parameters
    ----------
    fname : path-like
        The ``.npz`` file.
    """

    def __init__(self, fname):
        self.fname = Path(fname)
        try:
            self._zip = zipfile.ZipFile(self.fname)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ValueError(
                f"{self.fname} is not a readable .npz file (a zip archive of .npy "
                f"arrays, as numpy.savez writes): {exc}. Re-save it with "
                "numpy.savez, or check that the copy is complete."
            ) from None
        self.members = {}
        for info in self._zip.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            self.members[key] = info

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self._zip.close()

    @property
    def files(self):
        return list(self.members)

    def __contains__(self, key):
        return key in self.members

    def _header(self, key):
        """(shape, fortran_order, dtype, header bytes) of member ``key``."""
        info = self.members[key]
        fmt = np.lib.format
        with self._zip.open(info) as fid:
            magic = fid.read(6)
            if magic != fmt.MAGIC_PREFIX:
                raise _NotLoaded(
                    f"is not a NumPy .npy array (it starts with {magic[:6]!r}; "
                    "a raw pickle or another file type), so it is not read"
                )
            major, minor = (ord(c) if isinstance(c, str) else c for c in fid.read(2))
            try:
                if (major, minor) == (1, 0):
                    shape, fortran, dtype = fmt.read_array_header_1_0(fid)
                elif (major, minor) == (2, 0):
                    shape, fortran, dtype = fmt.read_array_header_2_0(fid)
                else:
                    raise ValueError(f"unsupported .npy format version {major}.{minor}")
            except ValueError as exc:
                raise ValueError(f"{self.fname}: key {key!r} has a bad .npy header: {exc}") from None
            header_len = fid.tell()
        return shape, fortran, dtype, header_len

    def check_unused(self, key):
        """Warn (naming what is lost) if an unused key needs unpickling; reads its header only."""
        try:
            dtype = self._header(key)[2]
            why = _PICKLED
        except _NotLoaded as exc:
            dtype, why = None, str(exc)
        if dtype is None or dtype.hasobject:
            warn(f"{self.fname}: key {key!r} {why}; it is skipped: {_LOST.get(key, 'not used')}.")

    def get(self, key, *, required=False):
        """Member ``key`` as an array; None if absent or skipped (with a warning)."""
        if key not in self.members:
            return None
        try:
            shape, _, dtype, header_len = self._header(key)
            if dtype.hasobject:
                raise _NotLoaded(_PICKLED)
        except _NotLoaded as exc:
            if required:
                raise ValueError(
                    f"{self.fname}: key {key!r} {exc}. Re-save it as a plain "
                    "numeric array."
                ) from None
            lost = _LOST.get(key, "its value is not used")
            warn(f"{self.fname}: key {key!r} {exc}; it is skipped: {lost}.")
            return None
        info = self.members[key]
        n_bytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        if header_len + n_bytes != info.file_size:
            raise ValueError(
                f"{self.fname}: key {key!r} declares shape {shape} {dtype} "
                f"({n_bytes} bytes) but the archive member holds "
                f"{info.file_size - header_len} bytes of data: the file is "
                "corrupt or crafted. Re-save it with numpy.savez."
            )
        _check_memory(n_bytes, f"{self.fname}: key {key!r} (shape {shape}, {dtype})")
        try:
            with self._zip.open(info) as fid:
                return np.lib.format.read_array(fid, allow_pickle=False)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{self.fname}: could not read key {key!r}: {exc}") from None


def _check_memory(n_bytes, what):
    """Refuse an allocation larger than the available memory, naming it."""
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return
    if n_bytes > avail:
        raise MemoryError(
            f"{what} needs {n_bytes / 2**30:.1f} GiB, more than the "
            f"{avail / 2**30:.1f} GiB of memory available"
        )


# ================================================================= read
def _npz_int(get, key, fname, minimum):
    """An integer scalar key of an npz file (>= minimum), with a clear error."""
    if key not in get:
        return minimum
    val = get[key]
    if val.ndim != 0 or val.dtype.kind not in "iu" or int(val) < minimum:
        raise ValueError(f"{fname}: {key} must be one integer >= {minimum}, got {val!r}")
    return int(val)


def read_npz(fname, orientation_type=None):
    """Read CaliBrain's npz layout (and this package's extra keys), gradiometers in fT/cm."""
    fname = Path(fname)
    with SafeNpz(fname) as npz:
        if "leadfield" not in npz:
            raise ValueError(f"{fname} has no 'leadfield' array; keys found: {sorted(npz.files)}")
        get = {"leadfield": npz.get("leadfield", required=True)}
        for key in NPZ_KEYS[1:]:
            val = npz.get(key)
            if val is not None:
                get[key] = val
        if "info" in npz:
            npz.check_unused("info")  # CaliBrain's pickled mne.Info: warns what is lost
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
        if val is not None and (
            val.dtype.kind not in "iuf"
            or (val.dtype.kind == "f" and not np.all(np.isfinite(val) & (val == np.round(val))))
        ):
            raise ValueError(
                f"{fname}: {key} must hold integer FIFF codes, got {val.ravel()[:5]} "
                f"(dtype {val.dtype})"
            )
        per[key] = _per_channel(val, n_sens, key, fname)
    ch_units = get.get("ch_units")
    if units is not None:
        try:
            factors, exps, labels = unit_conversion(per["sensor_units"], per["sensor_unitmult"])
        except ValueError as exc:
            raise ValueError(f"{fname}: {exc}") from None
        if ch_units is not None and not np.all(factors == 1.0):
            ch_units = None  # stored in another unit convention (e.g. fT/m)
        if ch_units is not None and list(ch_units.astype(str)) != labels:
            raise ValueError(f"{fname}: ch_units disagree with sensor_units/unitmult")
        if not np.all(factors == 1.0):
            lf = convert_rows(lf, factors, fname)  # promotes float16, names an overflow
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
            setattr(data, key, np.asarray(get[key], float))
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
    data.n_layers = _npz_int(get, "n_layers", fname, 1)
    if "layer" in get and "column" in get:
        data.layer = np.asarray(get["layer"], int)
        data.column = np.asarray(get["column"], int)
    else:
        n_kept = n_src // max(data.n_layers, 1)
        data.layer = np.repeat(np.arange(data.n_layers), n_kept)
        data.column = np.tile(np.arange(n_kept), data.n_layers)
    data.n_columns = _npz_int(get, "n_columns", fname, 0) if "n_columns" in get else (
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


# ================================================================ write
#: CaliBrain's coil type per channel type when the rows disagree (its writer's codes).
_CALIBRAIN_COILS = {
    "mag": FIFF.FIFFV_COIL_VV_MAG_T1,
    "grad": FIFF.FIFFV_COIL_VV_PLANAR_T1,
    "eeg": FIFF.FIFFV_COIL_EEG,
}


def local_svd_basis(leadfield_xyz):
    """CaliBrain's reduced free-MEG basis: per source the top-2 right singular vectors.

    Parameters
    ----------
    leadfield_xyz : ndarray, shape (n_sensors, n_sources, 3)

    Returns
    -------
    Q : ndarray, shape (n_sources, 3, 2)
        Orthonormal columns; the largest-magnitude entry of each column is
        made positive (sign convention of CaliBrain's writer).
    reduced : ndarray, shape (n_sensors, n_sources, 2)
        ``L_i Q_i`` per source.
    """
    blocks = np.moveaxis(np.asarray(leadfield_xyz, float), 1, 0)  # (N, M, 3)
    _, _, vt = np.linalg.svd(blocks, full_matrices=False)  # batched, (N, 3, 3)
    q = np.swapaxes(vt[:, :2, :], 1, 2)  # (N, 3, 2)
    idx = np.abs(q).argmax(axis=1)  # (N, 2)
    sign = np.sign(np.take_along_axis(q, idx[:, None, :], axis=1))
    q = q * np.where(sign == 0, 1.0, sign)
    reduced = np.einsum("nmd,ndk->mnk", blocks, q)
    return q, reduced


def export_calibrain(
    data: LeadfieldData, folder, subject, *, grad_unit="fT/m", free_k=None,
    overwrite=False,
):  # fmt: skip
    """Write a leadfield as CaliBrain files, one per channel type.

    Parameters
    ----------
    data : LeadfieldData
        With physical units (not ``retrieve_mode="random"``).
    folder : path-like
        Files go to ``<folder>/<ch_type>/<subject>_<orientation>_leadfield.npz``
        (``ch_type`` in mag, grad, eeg): give
        ``LeadfieldBuilder(leadfield_dir=<folder>/<ch_type>)`` to CaliBrain.
    subject : str
        The file prefix CaliBrain's ``get_leadfield(subject, ...)`` looks for.
    grad_unit : "fT/m" | "fT/cm"
        Gradiometer values in CaliBrain's fT/m/nAm (default; ``sensor_unitmult``
        −15) or this package's fT/cm/nAm (``sensor_unitmult`` −13). CaliBrain's
        loader returns either unchanged.
    free_k : None | 2 | 3
        Free leadfields: 2 reduces each MEG source to CaliBrain's local-SVD
        basis (``Q_basis`` ``(N, 3, 2)``, :func:`local_svd_basis`); 3 keeps
        x/y/z with an identity ``Q_basis``. None: CaliBrain's convention
        (2 for MEG, 3 for EEG).
    overwrite : bool

    Returns
    -------
    fnames : dict
        Channel type -> path written.

    Notes
    -----
    No pickles are written: CaliBrain's ``info`` key (a pickled ``mne.Info``)
    and ``Q_basis=None`` of fixed files are left out; its loader reads absent
    keys as None.
    """
    from ..bids import write_npz
    from ._data import _check_overwrite

    _validate_type(subject, str, "subject")
    _check_option("grad_unit", grad_unit, tuple(GRAD_UNITS))
    _check_option("free_k", free_k, (None, 2, 3))
    if data.sensor_units is None or data.synthetic:
        raise ValueError(
            "export_calibrain needs a leadfield with sensor units (simulated or "
            "loaded from a file with units), not a synthetic one"
        )
    folder = Path(folder)
    for ch_type in dict.fromkeys(data.ch_types):
        _check_overwrite(_calibrain_fname(folder, ch_type, subject, data), overwrite)
    types = np.asarray(data.ch_types)
    per = {
        key: _per_channel(getattr(data, key), data.n_sensors, key)
        for key in ("sensor_kind", "sensor_units", "sensor_unitmult", "coil_type")
    }
    out = {}
    for ch_type in dict.fromkeys(data.ch_types):
        if ch_type not in _CALIBRAIN_COILS:
            raise ValueError(
                f"Channel type {ch_type!r} has no CaliBrain file; keep only mag, "
                "grad and eeg rows"
            )
        rows = np.flatnonzero(types == ch_type)
        unit = int(per["sensor_units"][rows[0]])
        target_exp = (
            GRAD_UNITS[grad_unit][1] if unit == FIFF.FIFF_UNIT_T_M else UNITS[unit][1]
        )
        factors, _, _ = unit_conversion(
            per["sensor_units"][rows], per["sensor_unitmult"][rows],
            grad_unit=grad_unit if unit == FIFF.FIFF_UNIT_T_M else "fT/cm",
        )  # fmt: skip
        lf = data.leadfield[rows] * factors.reshape((-1,) + (1,) * (data.leadfield.ndim - 1))
        arrays = dict(
            subject=np.asarray(subject),
            orientation_type=np.asarray(data.orientation_type),
            source_ori=np.asarray(
                FIFF.FIFFV_MNE_FIXED_ORI if data.orientation_type == "fixed"
                else FIFF.FIFFV_MNE_FREE_ORI
            ),
            sensor_kind=np.asarray(int(per["sensor_kind"][rows[0]])),
            sensor_units=np.asarray(unit),
            sensor_unitmult=np.asarray(int(target_exp)),
            coil_type=np.asarray(_calibrain_coil(per["coil_type"], rows, ch_type)),
            ch_names=np.asarray([data.ch_names[i] for i in rows], dtype=str),
        )  # fmt: skip
        if data.src_coords is not None:
            arrays["src_coords"] = np.asarray(data.src_coords, float)
        if data.orientation_type == "free":
            k = free_k or (3 if ch_type == "eeg" else 2)
            lf, arrays["Q_basis"] = _free_for_calibrain(lf, data.Q_basis, k)
        arrays["leadfield"] = lf
        fname = _calibrain_fname(folder, ch_type, subject, data)
        write_npz(fname, arrays)
        logger.info(f"Wrote {fname} ({len(rows)} {ch_type} channels, {lf.shape})")
        out[ch_type] = fname
    return out


def _calibrain_fname(folder, ch_type, subject, data):
    return Path(folder) / ch_type / f"{subject}_{data.orientation_type}_leadfield.npz"


def _calibrain_coil(coils, rows, ch_type):
    """One coil type per file: the rows' own when they agree, else CaliBrain's code."""
    if coils is None:
        return int(_CALIBRAIN_COILS[ch_type])
    these = np.unique(coils[rows])
    return int(these[0]) if len(these) == 1 else int(_CALIBRAIN_COILS[ch_type])


def _free_for_calibrain(lf, q, k):
    """The free rows in a K = ``k`` basis and its ``Q_basis``."""
    n_src = lf.shape[1]
    if q is not None and q.shape[2] == 2:
        if k == 3:
            raise ValueError(
                "This free leadfield has K = 2 (a reduced basis); K = 3 cannot "
                "be recovered from it (free_k=2 or None)"
            )
        return lf, q
    xyz = lf if q is None else np.einsum("msk,sdk->msd", lf, q)
    if k == 3:
        return xyz, np.broadcast_to(np.eye(3), (n_src, 3, 3)).copy()
    q2, reduced = local_svd_basis(xyz)
    return reduced, q2
