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

import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from mne.io.constants import FIFF
from mne.utils import _check_option, _validate_type, logger, verbose

from .._conventions import (
    ARBITRARY,
    ORIENTATION_TYPES,
    UNIT_LABELS,
    check_memory,
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
    reproducible_provenance,
)
from ._npz import read_npz
from ._units import convert_grad_unit, si_factors, si_to_target_units

H5_FORMAT = "mne-laminar-leadfield"
H5_FORMAT_VERSION = 1
FIF_TAG_LIMIT = 2**31 - 1  # bytes in one FIF tag (int32 size field)


# ===================================================================== h5
def _info_to_bytes(info):
    import mne

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lf-info.fif"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mne.io.write_info(path, info, reset_range=False)
        return path.read_bytes()


def _info_from_bytes(raw, fname=None):
    import mne

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lf-info.fif"
        path.write_bytes(bytes(raw))
        try:
            return mne.io.read_info(path, verbose=False)
        except Exception as exc:
            raise ValueError(
                f"{fname}: dataset 'info_fif' is not a readable FIF measurement info "
                f"({type(exc).__name__}); the file is corrupt, re-run the step "
                "laminar/leadfield"
            ) from None


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
    measurement info (as FIF bytes, no pickles) go alongside. The HDF5 file
    is built in memory (``io.BytesIO``) and its bytes written to the
    temporary with plain Python I/O, so that a disk filling up mid-write is
    an ``OSError`` naming the file (h5py never sees it: it crashed
    deallocating a half-written file); the image needs about the leadfield's
    size in memory again. The file holds no wall-clock time (see
    :func:`reproducible_provenance`): a clean rerun writes the same bytes.

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
    from ..bids import atomic_group, check_free_space, write_bytes

    fname = Path(fname)
    _check_overwrite(fname, overwrite)
    _validate(data, fname, check_finite=False)
    lf = data.leadfield
    n_sens, n_src = lf.shape[:2]
    k = int(np.prod(lf.shape[2:]))
    # refuse before building anything when the matrix and its metadata do not fit
    meta_bytes = 64 * n_sens * (10 + k) + 200 * n_src + 2**20
    check_free_space(fname.parent, lf.nbytes + meta_bytes, f"the leadfield {fname.name}")
    check_memory(
        lf.nbytes + meta_bytes, f"The HDF5 image of the leadfield {fname.name}",
        hint="Write it from a machine with more memory, or use float32 "
        "(laminar_forward_float32).",
    )  # fmt: skip
    image = _h5_image(data, chunk_mb)
    with atomic_group():  # the file and the checksum in its sidecar, together
        write_bytes(fname, image.getbuffer(), "the leadfield")
        _refresh_checksum(fname)
    logger.info(f"Wrote {fname} ({lf.nbytes / 2**20:.1f} MiB leadfield)")
    return fname


def _h5_image(data: LeadfieldData, chunk_mb) -> io.BytesIO:
    """The bytes of the HDF5 leadfield file, built in memory."""
    import h5py

    lf = data.leadfield
    n_sens, n_src = lf.shape[:2]
    k = int(np.prod(lf.shape[2:]))
    col_bytes = n_sens * k * lf.itemsize
    # HDF5 chunks of ~4 MB along the sources; slabs of several chunks
    chunk_cols = int(max(1, min(n_src, (4 * 2**20) // max(col_bytes, 1))))
    slab = int(max(chunk_cols, (chunk_mb * 2**20) // max(col_bytes, 1) // chunk_cols * chunk_cols))
    str_dt = h5py.string_dtype()
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
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
        f.attrs["provenance"] = json.dumps(
            reproducible_provenance(data.provenance), default=_jsonable
        )
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
    return image


#: Sidecar key of the SHA-256 of the HDF5 leadfield, verified on reading.
CHECKSUM_KEY = "LeadfieldSHA256"


def with_checksum(side: dict, fname) -> dict:
    """A leadfield sidecar with the SHA-256 of the HDF5 file (and the RunId of the set).

    Works inside :func:`mne_laminar_plugin.bids.atomic_group` (hashes the
    file not yet renamed). :func:`read_leadfield` verifies it.
    """
    from ..bids import pending, sha256_file

    digest = sha256_file(pending(fname))
    return dict(side, **{CHECKSUM_KEY: digest, "RunId": digest[:16]})


def _refresh_checksum(fname) -> None:
    """After rewriting an HDF5 leadfield, update the checksum its sidecar holds."""
    from ..bids import read_json, sidecar, write_json

    side = sidecar(fname)
    if not side.is_file():
        return
    try:
        meta = read_json(side)
    except ValueError:
        return
    if isinstance(meta, dict) and CHECKSUM_KEY in meta:
        write_json(side, with_checksum(meta, fname))


def _verify_checksum(fname: Path) -> None:
    """Compare an HDF5 leadfield with the checksum its JSON sidecar stores."""
    from ..bids import read_json, sha256_file, sidecar

    side = sidecar(fname)
    if not side.is_file():
        return
    try:
        want = read_json(side).get(CHECKSUM_KEY)
    except (ValueError, AttributeError):
        return
    if want and sha256_file(fname) != want:
        raise ValueError(
            f"{fname} does not match the checksum ({CHECKSUM_KEY}) in its sidecar "
            f"{side.name}: the file changed or was damaged after it was written. "
            "Re-run the step laminar/leadfield (or restore the file)."
        )


def _h5_attr(f, key, fname, cast):
    """A required attribute of the HDF5 leadfield, cast, with a clear error."""
    if key not in f.attrs:
        raise ValueError(
            f"{fname} lacks the attribute {key!r} that every {H5_FORMAT} file has; "
            "the file is incomplete or was not written by this package (re-run the "
            "step laminar/leadfield)"
        )
    val = f.attrs[key]
    try:
        if cast is str:
            return val.decode() if isinstance(val, bytes) else str(val)
        if cast is bool:
            if not isinstance(val, bool | np.bool_ | int | np.integer):
                raise TypeError
            return bool(val)
        if isinstance(val, str | bytes) or float(val) != int(val):
            raise TypeError
        return int(val)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(
            f"{fname}: attribute {key!r} must be {cast.__name__}, got {val!r}"
        ) from None


def _check_declared_size(dset, fname) -> None:
    """A dataset must fit in its file and in memory before it is allocated."""
    from .._conventions import check_memory

    need = int(np.prod(dset.shape, dtype=np.float64)) * dset.dtype.itemsize
    size = Path(fname).stat().st_size
    if dset.compression is None and need > size:
        raise ValueError(
            f"{fname} declares a leadfield of shape {dset.shape} ({need / 2**30:.2f} "
            f"GiB of {dset.dtype}) but the file holds only {size / 2**20:.1f} MiB: it "
            "is truncated or corrupt; re-run the step laminar/leadfield"
        )
    check_memory(need, f"the leadfield of {fname} (shape {dset.shape})")


def _h5_str_list(f, key):
    if key not in f:
        return None
    return [s.decode() if isinstance(s, bytes) else str(s) for s in f[key][()]]


def _read_h5(fname, orientation_type=None, layers=None):
    """Read a ``.h5`` leadfield, optionally only some layers.

    One function on purpose: every dataset is read inside one open h5py
    file, and the partial-layer read needs the layer index before the
    others; splitting would pass the open file and the selection around.
    """
    import h5py
    from mne.transforms import Transform

    fname = Path(fname)
    _verify_checksum(fname)
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
        version = _h5_attr(f, "format_version", fname, int)
        if not 1 <= version <= H5_FORMAT_VERSION:
            raise ValueError(
                f"{fname} has format_version {version}; this mne-laminar-plugin reads "
                f"versions 1 to {H5_FORMAT_VERSION}. Update mne-laminar-plugin (a newer "
                "version wrote it) or re-run the step laminar/leadfield."
            )
        if "leadfield" not in f:
            raise ValueError(f"{fname} has no 'leadfield' dataset; keys: {sorted(f.keys())}")
        if not isinstance(f["leadfield"], h5py.Dataset):
            raise ValueError(
                f"{fname}: 'leadfield' is an HDF5 {type(f['leadfield']).__name__}, not a "
                "dataset (an array of shape (n_channels, n_sources[, K]))"
            )
        stored_ori = _h5_attr(f, "orientation_type", fname, str)
        _check_option(f"orientation_type (attribute of {fname})", stored_ori, ORIENTATION_TYPES)
        n_layers = _h5_attr(f, "n_layers", fname, int)
        dset = f["leadfield"]
        _check_declared_size(dset, fname)
        layer = f["layer"][()] if "layer" in f else None
        if layers is not None and layer is not None:
            layers = np.atleast_1d(layers).astype(int)
            bad = layers[(layers < 0) | (layers >= n_layers)]
            if len(bad):
                raise ValueError(
                    f"{fname}: layers {bad.tolist()} not in [0, {n_layers}) (the file "
                    f"has {n_layers} layers)"
                )
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
            data.layer_ids = np.unique(layer[sel])
            data.layer = np.searchsorted(data.layer_ids, data.layer)
        data.n_columns = _h5_attr(f, "n_columns", fname, int)
        data.synthetic = _h5_attr(f, "synthetic", fname, bool)
        if "dropped_columns" not in f:
            raise ValueError(
                f"{fname} has no 'dropped_columns' dataset (every file written by "
                "this package has one, empty when no column is dropped); re-run the "
                "step laminar/leadfield"
            )
        data.dropped_columns = np.asarray(f["dropped_columns"][()], int)
        data.dropped_reasons = _h5_str_list(f, "dropped_reasons") or []
        if "mri_head_t" in f:
            trans = np.asarray(f["mri_head_t"][()])
            if (
                trans.shape != (4, 4) or not np.all(np.isfinite(trans))
                or not np.allclose(trans[3], [0, 0, 0, 1])
            ):  # fmt: skip
                raise ValueError(
                    f"{fname}: mri_head_t must be a finite 4x4 affine transform "
                    f"(last row 0 0 0 1), got shape {trans.shape}"
                )
            data.mri_head_t = Transform("mri", "head", trans)
        if "info_fif" in f:
            data.info = _info_from_bytes(f["info_fif"][()].tobytes(), fname)
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


def _full_info(fwd_info):
    """A complete :class:`mne.Info` from a forward's reduced one.

    MNE stores only the channels, transforms and a few ids in a forward; such
    an Info lacks keys (``events``, ``sfreq`` ...) that writing it needs.
    """
    import copy

    import mne

    info = mne.create_info(list(fwd_info["ch_names"]), 1000.0, "misc")
    with info._unlock():
        info["chs"] = copy.deepcopy(fwd_info["chs"])
        info["bads"] = [b for b in fwd_info["bads"] if b in fwd_info["ch_names"]]
        for key in ("dev_head_t", "comps"):
            if fwd_info.get(key) is not None:
                info[key] = copy.deepcopy(fwd_info[key])
        info._update_redundant()
    info._check_consistency()
    return info


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
    info = _full_info(fwd["info"])
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
    to_si = si_factors(data)[:, None]
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
    from ..bids import atomic_path, check_free_space, disk_errors

    n_col = data.n_sources * (1 if data.orientation_type == "fixed" else 3)
    n_bytes = 4 * data.n_sensors * n_col + 400 * data.n_sources + 2**20
    check_free_space(fname.parent, n_bytes, f"the forward {fname.name}")
    # the temporary name ends with the final one, so MNE accepts it (_fwd.fif);
    # MNE writes with plain Python I/O: a disk filling up is an OSError
    with atomic_path(fname) as tmp, disk_errors(fname, n_bytes, "the forward"):
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
    layers=None, grad_unit="fT/cm", verbose=None,
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
    grad_unit : "fT/cm" | "fT/m"
        Planar gradiometers in this package's fT/cm/nAm (default) or
        CaliBrain's fT/m/nAm (100 × larger numbers; CaliBrain scales T/m like
        T). Files in either convention are read correctly: their
        ``sensor_unitmult`` (−13 or −15 for T/m) says which they hold.
    %(verbose)s

    Returns
    -------
    data : LeadfieldData

    Notes
    -----
    An ``.npz`` is read lazily: only the keys this package uses are
    decompressed, each after its header is checked against the archive. A
    key that would need unpickling (CaliBrain pickles ``info`` and a fixed
    file's ``Q_basis=None``) is skipped with a warning that names it.
    """
    data = _read_any(fname, subject, session, datatype, orientation_type, layers)
    return convert_grad_unit(data, grad_unit)


def _read_any(fname, subject, session, datatype, orientation_type, layers):
    _validate_type(fname, "path-like", "fname")
    if subject is not None:
        fname = leadfield_fname(fname, subject, session, datatype=datatype)
    if orientation_type is not None:
        _check_option("orientation_type", orientation_type, ORIENTATION_TYPES)
    fname = Path(fname)
    if fname.is_dir():
        raise IsADirectoryError(
            f"{fname} is a folder, not a leadfield file; pass the file itself "
            "(.npz, .h5, -fwd.fif)"
            + ("" if subject is not None else " or, with subject=, the derivative root")
        )
    if not fname.is_file():
        hint = " It is made by the step laminar/leadfield." if subject is not None else ""
        raise FileNotFoundError(_missing_message(fname) + hint)
    name = fname.name
    if name.endswith((".h5", ".hdf5")):
        return _read_h5(fname, orientation_type, layers)
    if layers is not None:
        raise ValueError("layers= is only supported for .h5 leadfield files")
    if name.endswith(".npz"):
        return read_npz(fname, orientation_type)
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
