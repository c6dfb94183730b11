"""The ``lf_rms_diff`` predictor: RMS over sensors of deepest minus pial leadfield.

Channel types are never summed in raw units: the leadfield is whitened, or a
single channel type is used, and the units are recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from mne.utils import _check_option, logger, verbose

from .._conventions import LABEL_SI_FACTORS, check_n_layers

#: MNE's SI leadfield units (e.g. of a LaminarForward's gain), per FIFF unit.
_SI_LABELS = {112: "T/Am", 201: "T/m/Am", 107: "V/Am"}
_CH_TYPE_ORDER = ("mag", "grad", "eeg")


def _norm_unit(unit: str) -> str:
    unit = str(unit).replace("µ", "u").replace("μ", "u").lower()
    return re.sub(r"[\s()*·.]", "", unit)


def _physical_units() -> list[str]:
    """Leadfield unit labels that have an SI factor (library and SI labels)."""
    return list(LABEL_SI_FACTORS) + list(_SI_LABELS.values())


def can_whiten(leadfield) -> bool:
    """Whether a leadfield can be noise-whitened: physical units, not synthetic."""
    units = getattr(leadfield, "units", None) or []
    return not getattr(leadfield, "synthetic", False) and set(units) <= set(_physical_units())


def _unit_to_si(unit: str) -> float | None:
    """Factor from a leadfield unit label to MNE's SI units, or None if unknown.

    The library units and their SI factors come from
    :data:`mne_laminar_plugin._conventions.LABEL_SI_FACTORS` (the one place of the
    conversion); SI labels give 1.
    """
    key = _norm_unit(unit)
    for label, si_to_target in LABEL_SI_FACTORS.items():
        if _norm_unit(label) == key:
            return 1.0 / si_to_target
    if key in {_norm_unit(lab) for lab in _SI_LABELS.values()}:
        return 1.0
    return None


# =================================================================== leadfield
@dataclass
class _LF:
    G: Any  # (n_channels, n_sources) or (n_channels, n_sources, K)
    ch_names: list[str]
    ch_types: np.ndarray | None
    units: np.ndarray | None
    n_layers: int | None
    info: Any = None
    columns: np.ndarray | None = None  # kept column ids (into the surfaces)
    n_columns: int | None = None  # columns of the surfaces (before dropping)
    loaded_layers: list | None = None  # layers of the model held (partial read, sorted)
    hemi: np.ndarray | None = None  # per model column, if known
    vertno: np.ndarray | None = None


class _LFView:
    """An already parsed leadfield (so that it is parsed once)."""

    def __init__(self, lf: _LF):
        self.parsed = lf


def _info_units(info) -> list[str] | None:
    units = []
    for ch in info["chs"]:
        unit = _SI_LABELS.get(int(ch["unit"]))
        if unit is None or int(ch.get("unit_mul", 0)) != 0:
            return None
        units.append(unit)
    return units


def _leadfield_parts(leadfield: Any) -> _LF:
    """Array, channel names/types/units and column ids of a leadfield object.

    Long on purpose: the one adaptor of every accepted leadfield type
    (LeadfieldData, MNE Forward, arrays), so that no other function branches
    on the type.

    Accepts a ``LeadfieldData`` (attribute ``leadfield``, library units per
    channel in ``units``), this package's ``LaminarForward`` (attribute
    ``gain`` in SI units with ``info``) or a plain array.
    """
    if isinstance(leadfield, _LFView):
        return leadfield.parsed
    if (
        getattr(leadfield, "orientation_type", "fixed") == "free"
        and getattr(leadfield, "src_ori", None) is not None
        and hasattr(leadfield, "fixed")
    ):
        logger.info("    Free leadfield: using its fixed projection on the orientations")
        leadfield = leadfield.fixed()
    if hasattr(leadfield, "leadfield") or hasattr(leadfield, "gain"):
        G = getattr(leadfield, "leadfield", None)
        if G is None:
            G = getattr(leadfield, "gain", None)
        if G is None:
            raise ValueError(f"{type(leadfield).__name__} holds no leadfield array")
        info = getattr(leadfield, "info", None)

        def _listish(name):  # LeadfieldData defaults are empty lists
            val = getattr(leadfield, name, None)
            return None if val is None or (not isinstance(val, str) and len(val) == 0) else val

        ch_names = _listish("ch_names")
        if ch_names is None and info is not None:
            ch_names = info["ch_names"]
        n_ch = G.shape[0]
        ch_names = list(ch_names) if ch_names is not None else [f"ch{i}" for i in range(n_ch)]
        ch_types = _listish("ch_types")
        if ch_types is None and info is not None:
            ch_types = info.get_channel_types()
        units = _listish("units")
        if isinstance(units, str):
            units = [units] * n_ch
        if units is None and info is not None and hasattr(leadfield, "gain"):
            units = _info_units(info)
        n_layers = getattr(leadfield, "n_layers", None)
        try:
            columns = getattr(leadfield, "columns", None)
        except (TypeError, AttributeError):  # LeadfieldData without column ids
            columns = None
        n_columns = getattr(leadfield, "n_columns", None) or None
        loaded = getattr(leadfield, "layer_ids", None)
        l_hemi = getattr(leadfield, "column_hemi", getattr(leadfield, "hemi", None))
        l_vert = getattr(leadfield, "column_vertno", getattr(leadfield, "vertno", None))
        if (
            len(G.shape) == 2
            and getattr(leadfield, "orientation_type", "fixed") == "free"
            and isinstance(G, np.ndarray)
        ):
            G = G.reshape(n_ch, -1, 3)  # MNE's free layout: x/y/z per source
        out = _LF(
            G=G,
            ch_names=ch_names,
            ch_types=None if ch_types is None else np.asarray(ch_types, str),
            units=None if units is None else np.asarray(units, str),
            n_layers=None if n_layers is None else int(n_layers),
            info=info,
            columns=None if columns is None else np.asarray(columns, np.int64),
            n_columns=None if n_columns is None else int(n_columns),
            loaded_layers=None if loaded is None else [int(x) for x in loaded],
            hemi=None if l_hemi is None else np.asarray(l_hemi, str),
            vertno=None if l_vert is None else np.asarray(l_vert, np.int64),
        )
    elif hasattr(leadfield, "shape") and hasattr(leadfield, "__getitem__"):
        G = leadfield
        n_ch = G.shape[0]
        out = _LF(G, [f"ch{i}" for i in range(n_ch)], None, None, None)
    else:
        raise TypeError(
            "leadfield must be a LeadfieldData or an array of shape (n_channels, "
            f"n_layers * n_columns), got {type(leadfield).__name__}"
        )
    if len(out.G.shape) not in (2, 3):
        raise ValueError(
            "leadfield must have shape (n_channels, n_sources) (fixed) or "
            f"(n_channels, n_sources, n_components) (free), got {out.G.shape}"
        )
    n_ch = out.G.shape[0]
    for name in ("ch_types", "units"):
        val = getattr(out, name)
        if val is not None and len(val) != n_ch:
            raise ValueError(f"leadfield has {n_ch} channels but {len(val)} {name}")
    if len(out.ch_names) != n_ch:
        raise ValueError(f"leadfield has {n_ch} channels but {len(out.ch_names)} ch_names")
    return out


def _default_ch_type(ch_types: np.ndarray) -> str:
    present = set(ch_types.tolist())
    for kind in _CH_TYPE_ORDER:
        if kind in present:
            return kind
    if len(present) == 1:  # e.g. a synthetic leadfield of 'misc' channels
        return present.pop()
    raise ValueError(
        f"leadfield has no MEG/EEG channels (types {sorted(present)}); pass ch_type"
    )


def _resolve_whitener(
    whitener, lf: _LF, rows: np.ndarray, info, rank=None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Whitener matrix (n_white, n_rows) for the leadfield rows, in SI."""
    import mne

    if isinstance(whitener, mne.Covariance):
        info = info if info is not None else lf.info
        if info is None:
            raise ValueError(
                "whitener is a Covariance: pass info= (the measurement info of the "
                "leadfield's channels) or use a LeadfieldData that carries info"
            )
        names = [lf.ch_names[i] for i in rows]
        missing = sorted(set(names) - set(info["ch_names"]))
        if missing:
            raise ValueError(
                f"{len(missing)} leadfield channel(s) are not in info, e.g. {missing[:3]}"
            )
        bads = set(info["bads"]) | (set(names) - set(whitener.ch_names))
        keep = np.array([n not in bads for n in names])
        if not keep.any():
            raise ValueError("no leadfield channel is in the noise covariance")
        if not keep.all():
            logger.info(
                f"    {(~keep).sum()} channel(s) not in the covariance or bad: not used"
            )
        rows = rows[keep]
        names = [lf.ch_names[i] for i in rows]
        W, w_names = mne.cov.compute_whitener(
            whitener, info, picks=names, rank=rank, pca=True, verbose="error"
        )
        order = {n: i for i, n in enumerate(names)}
        rows = rows[[order[n] for n in w_names]]
        desc = f"noise covariance ({len(w_names)} channels, rank {W.shape[0]})"
        return np.asarray(W, float), rows, desc
    W = np.asarray(whitener, float)
    if W.ndim != 2 or W.shape[1] != len(rows):
        raise ValueError(
            f"whitener must have shape (n_components, {len(rows)}) for the "
            f"{len(rows)} selected leadfield channels, got {W.shape}"
        )
    return W, rows, f"whitening matrix ({W.shape[0]} x {W.shape[1]})"


def _raw_channels(lf, ch_type):
    """Rows of one channel type (or all, sharing one unit), in raw units."""
    if lf.ch_types is None:
        if ch_type not in (None, "all"):
            raise ValueError(
                f"ch_type={ch_type!r} needs channel types: use a LeadfieldData"
            )
        rows = np.arange(lf.G.shape[0])
        used_type = "all"
    else:
        if ch_type == "all":
            used_type = "all"
            rows = np.arange(lf.G.shape[0])
        else:
            used_type = _default_ch_type(lf.ch_types) if ch_type is None else ch_type
            rows = np.flatnonzero(lf.ch_types == used_type)
            if rows.size == 0:
                raise ValueError(
                    f"ch_type={used_type!r}: the leadfield has no such channel "
                    f"(types: {sorted(set(lf.ch_types.tolist()))})"
                )
    units = None if lf.units is None else sorted(set(lf.units[rows].tolist()))
    if units is not None and len(units) > 1:
        raise ValueError(
            f"The selected channels have different units {units}: raw units are "
            "never summed; pick one ch_type or give a whitener/noise covariance"
        )
    if lf.units is None and lf.ch_types is not None and len(set(lf.ch_types[rows])) > 1:
        raise ValueError(
            "The selected channels are of several types without units: pick one "
            "ch_type or give a whitener"
        )
    unit = units[0] if units else "arbitrary"
    scale = None
    desc = f"{used_type} channels ({rows.size}), {unit}"
    return rows, scale, unit, used_type, desc


def _whitened_channels(lf, ch_type, whitener, info, rank):
    """Rows and the noise-whitening matrix (per nAm) applied to them."""
    if lf.ch_types is not None and ch_type not in (None, "all"):
        rows = np.flatnonzero(lf.ch_types == ch_type)
        if rows.size == 0:
            raise ValueError(f"ch_type={ch_type!r}: the leadfield has no such channel")
        used_type = ch_type
    else:
        rows = np.arange(lf.G.shape[0])
        used_type = "all"
    W, rows, wdesc = _resolve_whitener(whitener, lf, rows, info, rank)
    if lf.units is None:
        si = np.ones(len(rows))
    else:
        si = np.array([_unit_to_si(u) or np.nan for u in lf.units[rows]])
        if not np.isfinite(si).all():
            bad = sorted(set(lf.units[rows][~np.isfinite(si)].tolist()))
            raise ValueError(
                f"Cannot whiten: the leadfield unit(s) {bad} have no SI factor "
                "(a synthetic/random leadfield has no physical units); compute "
                "per channel type instead (whitener=None)"
            )
    # W (1/SI data) @ G_SI (SI/(A*m)) -> 1/(A*m); * 1e-9 -> per nAm
    scale = W * (si * 1e-9)[np.newaxis, :]
    unit = "1/nAm"
    desc = f"noise-whitened with {wdesc}, {used_type} channels; noise SD per nAm"
    return rows, scale, unit, used_type, desc


def _rms_diff(G, rows, scale, n_layers):
    """RMS over the rows of deepest minus pial, per column (NaN where dropped)."""
    n_ch, n_src = G.shape[:2]
    n_col = n_src // n_layers
    out = np.empty(n_col)
    deep0 = (n_layers - 1) * n_col
    chunk = max(1, int(4_000_000 // max(n_ch, 1)))
    for start in range(0, n_col, chunk):
        stop = min(start + chunk, n_col)
        pial = np.asarray(G[:, start:stop], float)[rows]
        deep = np.asarray(G[:, deep0 + start : deep0 + stop], float)[rows]
        diff = deep - pial
        if scale is not None:
            diff = np.tensordot(scale, diff, axes=(1, 0))
        sq = diff**2
        if sq.ndim == 3:  # free orientation: squared norm over components
            sq = sq.sum(axis=2)
            pial = np.abs(pial).sum(axis=2)
            deep = np.abs(deep).sum(axis=2)
        val = np.sqrt(sq.mean(axis=0))
        dropped = (
            ~(pial != 0).any(axis=0)
            | ~(deep != 0).any(axis=0)
            | ~np.isfinite(pial).all(axis=0)
            | ~np.isfinite(deep).all(axis=0)
        )
        val[dropped] = np.nan
        out[start:stop] = val
    return out


@verbose
def leadfield_rms_diff(
    leadfield: Any,
    n_layers: int | None = None,
    *,
    whitener: Any = None,
    info: Any = None,
    rank: Any = None,
    ch_type: str | None = None,
    verbose: Any = None,
) -> tuple[np.ndarray, dict]:
    """RMS over channels of the deepest minus the most superficial leadfield.

    Parameters
    ----------
    leadfield : LeadfieldData | array, shape (n_channels, n_layers * n_columns)
        Layer-major laminar leadfield: source ``l * n_columns + c`` is column
        ``c`` at depth ``l`` (0 = pial). A free-orientation leadfield
        ``(n_channels, n_sources, K)`` uses the norm over the ``K``
        components (orientation independent).
    n_layers : int | None
        Number of layers (None: ``leadfield.n_layers``).
    whitener : None | array, shape (n_components, n_channels) | mne.Covariance
        Compute on the noise-whitened leadfield ``W @ G``: a whitener for
        data in MNE's SI units (as :func:`mne.cov.compute_whitener` returns;
        the leadfield rows are converted to SI from their per-channel units,
        a plain array is taken as SI), or a noise covariance (needs ``info``
        or a LeadfieldData with ``info``). The result is in noise standard
        deviations per nAm (``1/nAm``).
    info : mne.Info | None
        Measurement info, for a covariance ``whitener`` (its projectors are
        applied, as in :func:`mne.cov.compute_whitener`).
    rank : None | dict | str
        Rank of the covariance ``whitener`` (e.g. MBP's ``_rank.json``), see
        :func:`mne.cov.compute_whitener`.
    ch_type : None | ``"mag"`` | ``"grad"`` | ``"eeg"`` | ``"all"``
        Channels used. Without a whitener, a single channel type is required
        (raw units of different types are never summed); None picks
        ``"mag"`` if present (CTF axial gradiometers are ``mag`` in MNE, as in
        the paper), else ``"grad"``, else ``"eeg"``. With a whitener, None
        means every channel. ``"all"`` uses every channel (only allowed with
        a whitener or when all channels share one unit).
    %(verbose)s

    Returns
    -------
    lf_rms_diff : array, shape (n_sources // n_layers,)
        One value per column of the leadfield. NaN where the pial or deepest
        leadfield of a column is identically zero or not finite (a dropped
        column).
    meta : dict
        ``unit``, ``method`` (``"whitened"`` or ``"channel_type"``),
        ``ch_type``, ``n_channels``, ``description``, and ``columns``: the
        leadfield's column ids into the surfaces' columns when it holds only
        the kept columns (else None).
    """
    lf = _leadfield_parts(leadfield)
    G = lf.G
    n_ch, n_src = G.shape[:2]
    if n_layers is None:
        n_layers = lf.n_layers
    if n_layers is None:
        raise ValueError("n_layers is required for a plain leadfield array")
    n_layers = check_n_layers(n_layers, what="lf_rms_diff: n_layers")
    if lf.n_layers is not None and lf.n_layers != n_layers:
        raise ValueError(
            f"leadfield.n_layers={lf.n_layers} does not match n_layers={n_layers}"
        )
    if n_src % n_layers:
        raise ValueError(
            f"leadfield has {n_src} sources, not a multiple of n_layers={n_layers}"
        )
    n_col = n_src // n_layers
    if lf.columns is not None and len(lf.columns) != n_col:
        raise ValueError(
            f"leadfield has {n_col} columns per layer but {len(lf.columns)} column ids"
        )
    if ch_type is not None:
        _check_option("ch_type", ch_type, ("mag", "grad", "eeg", "all"))
    if whitener is None:
        rows, scale, unit, used_type, desc = _raw_channels(lf, ch_type)
        method = "channel_type"
    else:
        rows, scale, unit, used_type, desc = _whitened_channels(lf, ch_type, whitener, info, rank)
        method = "whitened"
    out = _rms_diff(G, rows, scale, n_layers)
    sensors = None
    if lf.info is not None:
        from ..leadfield._data import describe_sensors

        sensors = describe_sensors(lf.info, [lf.ch_names[i] for i in rows])
        desc += f"; sensors: {sensors}"
    if len(G.shape) == 3:
        desc += f"; free orientation: norm over {G.shape[2]} components"
    n_nan = int(np.isnan(out).sum())
    if n_nan:
        logger.info(f"    lf_rms_diff: {n_nan} column(s) with a zero/invalid leadfield -> NaN")
    meta = dict(
        columns=lf.columns,
        unit=unit,
        method=method,
        ch_type=used_type,
        n_channels=int(len(rows)) if whitener is None else int(scale.shape[0]),
        sensors=sensors,
        description=desc,
    )
    return out, meta
