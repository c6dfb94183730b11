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
import warnings
from pathlib import Path

import numpy as np
from mne.io.constants import FIFF
from mne.utils import _check_option, _validate_type, logger, verbose, warn

from .._conventions import (
    ARBITRARY,
    ORIENTATION_TYPES,
    UNIT_LABELS,
    UNITS,
)
from ._data import (
    LeadfieldData,
    _ch_meta_from_info,
    _check_overwrite,
    _collapse,
    _jsonable,
    _per_channel,
    _provenance,
    _validate,
)
from ._units import si_to_target_units, unit_conversion

H5_FORMAT = "mne-laminar-leadfield"
H5_FORMAT_VERSION = 1
FIF_TAG_LIMIT = 2**31 - 1  # bytes in one FIF tag (int32 size field)


# ==================================================================== npz
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
