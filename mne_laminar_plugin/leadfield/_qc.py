"""Quality control of a laminar leadfield.

Column norms, the deep/superficial depth ratio, outlier columns and their plots.
"""

from __future__ import annotations

import numpy as np

from .._conventions import pretty_unit
from ._data import LeadfieldData


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
        ax.set(xlabel="Source index (layer-major)", ylabel=f"Column norm ({pretty_unit(unit)})")
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
        ax.hist(vals, bins=40, histtype="stepfilled", color="0.3")
        ax.axvline(0, color="r", lw=1)
        med = np.median(ratio[good]) if good.any() else np.nan
        ax.set(
            xlabel="log10(norm deepest / norm pial)",
            ylabel="Columns",
            title=f"{pretty_unit(unit)} (median ratio {med:.3g})",
        )
    return fig


def _layer_label(layer, n_layers):
    if layer == 0:
        return "0 (pial)"
    if layer == n_layers - 1:
        return f"{layer} (white)"
    return str(layer)


