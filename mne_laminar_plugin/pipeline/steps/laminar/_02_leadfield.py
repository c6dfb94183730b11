"""Laminar leadfield.

The leadfield of every layer of every cortical column, simulated with MNE on
the layer surfaces (MBP's BEM solution, head<->MRI transform and measurement
info), loaded from ``laminar_leadfield_dir`` or generated at random. Writes
``sub-XX_desc-laminar_leadfield.h5`` (+ JSON sidecar), the same leadfield as
an MNE forward ``sub-XX_desc-laminar_fwd.fif`` when it has the geometry and
fits in a FIF file (< 2 GB), and a "Laminar leadfield" report section.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from mne_bids import BIDSPath
from mne_bids_pipeline._logging import gen_log_kwargs, logger
from mne_bids_pipeline._report import _open_report
from mne_bids_pipeline._run import _sanitize_callable, failsafe_run

from .... import bids
from .... import leadfield as L
from .... import surfaces as S

from ....report import viz
from ... import _mbp

SECTION = "Laminar leadfield"
MAX_OUTLIER_ROWS = 50
#: The step that makes each input (named in the error when it is missing).
MAKERS = {
    "bem": "source/make_bem_solution",
    "trans": "source/make_forward",
    "info": "preprocessing/sensor (the info file of source/make_forward: the "
    "evoked *_ave.fif, or set source_info_path_update)",
    "surfaces": "laminar/layer_surfaces",
    "columns": "laminar/layer_surfaces",
    **{f"positions_{h}": "laminar/layer_surfaces" for h in S.HEMIS},
    **{f"orientation_{h}": "laminar/layer_surfaces" for h in S.HEMIS},
}


# ----------------------------------------------------------------- inputs
def _info_path(cfg, subject, session) -> BIDSPath:
    """The measurement info MBP's source/make_forward reads (same rule)."""
    task = cfg.runs_tasks[0][1]
    return _mbp.source_info_path(cfg, subject, session, task=task, path_task=task)


def _bem_path(cfg) -> Path:
    from mne_bids_pipeline._config_utils import _get_bem_conductivity

    _, tag = _get_bem_conductivity(cfg)
    return _mbp.fs_path(cfg, "bem", f"{cfg.fs_subject}-{tag}-bem-sol.fif")


def _surface_files(cfg, subject, session) -> dict[str, Path]:
    return S.saved_fnames(
        cfg.laminar_root, subject, session, cfg.laminar_column_spacing, pial=False
    )


def _load_candidate(cfg, subject) -> Path:
    """The file ``laminar_leadfield_mode='load'`` reads for this subject."""
    if cfg.laminar_leadfield_dir is None:
        raise ValueError(
            "laminar_leadfield_mode='load' needs laminar_leadfield_dir (a folder "
            "with {subject}_{fixed|free}_leadfield.npz, *_leadfield.h5 or *-fwd.fif)"
        )
    builder = L.LeadfieldBuilder(leadfield_dir=cfg.laminar_leadfield_dir)
    return builder.find(
        f"sub-{subject}", subject, orientation_type=cfg.laminar_orientation_type
    )


def get_input_fnames_leadfield(
    *, cfg: SimpleNamespace, subject: str, session: str | None
) -> dict:
    """Inputs by mode; missing ones raise an error naming the step that makes them."""
    mode = cfg.laminar_leadfield_mode
    in_files: dict = {}
    surf_files = _surface_files(cfg, subject, session)
    if mode == "load":
        in_files["leadfield"] = _load_candidate(cfg, subject)
        if all(Path(p).is_file() for p in surf_files.values()):
            in_files.update(surf_files)  # optional: gives the layer/column layout
    else:
        in_files.update(surf_files)
        in_files["info"] = _info_path(cfg, subject, session)
        if mode == "simulate":
            in_files["bem"] = _bem_path(cfg)
            in_files["trans"] = _mbp.mbp_path(cfg, subject, session, suffix="trans")
    _mbp.require_inputs(in_files, MAKERS)
    return in_files


# ------------------------------------------------------------------- step
def _channel_flags(cfg) -> tuple[bool, bool]:
    ch_types = set(cfg.ch_types)
    return bool(ch_types & {"meg", "mag", "grad"}), "eeg" in ch_types


@failsafe_run(get_input_fnames=get_input_fnames_leadfield)
def run_leadfield(
    *,
    cfg: SimpleNamespace,
    exec_params: SimpleNamespace,
    subject: str,
    session: str | None,
    in_files: dict,
) -> dict:
    """Simulate, load or generate the laminar leadfield of one subject/session."""
    mode = cfg.laminar_leadfield_mode
    surf = None
    surf_files = {
        key: in_files.pop(key)
        for key in _surface_files(cfg, subject, session)
        if key in in_files
    }
    if surf_files:  # read by LaminarSurfaces.load
        surf = S.LaminarSurfaces.load(
            cfg.laminar_root, subject, session, spacing=cfg.laminar_column_spacing,
            verbose=False,
        )  # fmt: skip
    make = dict(simulate=_simulate, random=_random, load=_load)[mode]
    data, sources = make(cfg, subject, surf, in_files)
    if surf is not None:
        sources["surfaces"] = S.summary_fname(
            cfg.laminar_root, subject, session, cfg.laminar_column_spacing
        )
    assert not in_files, in_files

    figures = _start_figures(data, surf)  # drawn while the files are written
    _mbp.ensure_dataset(cfg)
    paths, fwd_written = _save(cfg, subject, session, data, surf, sources)
    with _open_report(
        cfg=cfg, exec_params=exec_params, subject=subject, session=session
    ) as report:
        logger.info(**gen_log_kwargs(message="Adding the laminar leadfield to the report"))
        _add_report(report, data, cfg, paths, fwd_written, figures=figures)
    out_files = {path.name: path for path in paths}
    return _mbp.prep_out_files(cfg=cfg, exec_params=exec_params, out_files=out_files)


def _simulate(cfg, subject, surf, in_files):
    """The simulated leadfield (MBP's BEM, trans and info) and its inputs."""
    import mne

    meg, eeg = _channel_flags(cfg)
    ori = cfg.laminar_orientation_type
    dtype = "float32" if cfg.laminar_forward_float32 else "float64"
    msg = (
        f"Simulating the {ori} laminar leadfield: {surf.n_layers} layers x "
        f"{surf.n_columns} columns, engine {cfg.laminar_forward_engine!r}, "
        f"skull margin {cfg.laminar_skull_margin} mm"
    )
    logger.info(**gen_log_kwargs(message=msg))
    info_fname = Path(in_files.pop("info").fpath)
    sources = dict(
        bem=Path(in_files.pop("bem")), trans=Path(in_files.pop("trans").fpath),
        info=info_fname,
    )  # fmt: skip
    builder = L.LeadfieldBuilder(
        surfaces=surf, bem=sources["bem"], trans=sources["trans"],
        info=mne.io.read_info(info_fname, verbose=False),
        mindist=cfg.laminar_skull_margin, engine=cfg.laminar_forward_engine,
        meg=meg, eeg=eeg, dtype=dtype, verbose=False,
    )  # fmt: skip
    data = builder.simulate(cfg.fs_subject, ori)
    data.provenance.update(bem=str(sources["bem"]), trans=str(sources["trans"]),
                           info=str(info_fname))  # fmt: skip
    return data, sources


def _random(cfg, subject, surf, in_files):
    """A random leadfield with the channels of MBP's info, and its inputs."""
    import mne

    from ....forward import fwd_channel_picks

    meg, eeg = _channel_flags(cfg)
    ori = cfg.laminar_orientation_type
    info_fname = Path(in_files.pop("info").fpath)
    info = mne.io.read_info(info_fname, verbose=False)
    info = mne.pick_info(info, fwd_channel_picks(info, meg=meg, eeg=eeg))
    seed = cfg.laminar_random_seed
    msg = f"Generating a random {ori} leadfield (seed {seed})"
    logger.info(**gen_log_kwargs(message=msg))
    data = L.LeadfieldBuilder().random(
        ori, len(info["ch_names"]), surf.n_layers * surf.n_columns,
        random_state=seed, n_layers=surf.n_layers, subject=subject,
    )  # fmt: skip
    data.ch_names = list(info["ch_names"])
    data.column_hemi, data.column_vertno = surf.hemi, surf.vertno
    return data, dict(info=info_fname)


def _load(cfg, subject, surf, in_files):
    """The leadfield of ``laminar_leadfield_dir`` (with the surfaces' layout)."""
    fname = Path(in_files.pop("leadfield"))
    ori = cfg.laminar_orientation_type
    msg = f"Loading the {ori} leadfield {fname}"
    logger.info(**gen_log_kwargs(message=msg))
    data = L.read_leadfield(fname, orientation_type=ori)
    data.provenance.update(mode="load", subject=subject)
    if surf is not None:
        L.attach_surface_layout(data, surf, fname=fname)
    return data, dict(leadfield=fname)


def _uri(cfg, path) -> str | None:
    """A BIDS URI for a file of this dataset or of the raw dataset, else the path
    (as ``<subjects_dir>/...`` when it is there, see ``bids.portable_path``)."""
    if path is None:
        return None
    roots = {"": cfg.laminar_root, "raw": cfg.bids_root}
    return bids.dataset_uri(path, roots) or bids.portable_path(
        str(Path(path).resolve()), _mbp.portable_roots(cfg)
    )


def _sidecar(cfg, data: L.LeadfieldData, surf, sources, fwd_name) -> dict:
    types = list(dict.fromkeys(data.ch_types))
    units = {t: data.units[data.ch_types.index(t)] for t in types}
    counts = {t: data.ch_types.count(t) for t in types}
    hemi, vertno = data.column_hemi, data.column_vertno
    dropped = [
        dict(
            column=int(col),
            hemi=None if hemi is None else str(hemi[col]),
            vertex=None if vertno is None else int(vertno[col]),
            reason=reason,
        )
        for col, reason in zip(data.dropped_columns, data.dropped_reasons)
    ]
    by_reason = {r: data.dropped_reasons.count(r) for r in dict.fromkeys(data.dropped_reasons)}
    uris = {key: _uri(cfg, path) for key, path in sources.items()}
    side = {
        "Description": (
            "Laminar leadfield: sensor gain of every cortical column at every "
            "layer depth, sources layer-major (source l * n_kept + k is kept "
            f"column k at layer l; layers {S.layer_order(data.n_layers)}). Stored in HDF5 dataset "
            "'leadfield' with shape (n_channels, n_sources) for fixed or "
            "(n_channels, n_sources, K) for free orientation."
        ),
        "LeadfieldMode": cfg.laminar_leadfield_mode,
        "Synthetic": bool(data.synthetic),
        "OrientationType": data.orientation_type,
        "OrientationBasis": (
            "fixed: free leadfield projected on each source's orientation "
            "(dataset src_ori, head frame)"
            if data.orientation_type == "fixed"
            else "free: components along dataset Q_basis (x/y/z of the head frame "
            "for simulated leadfields)"
        ),
        "Units": units,
        "ChannelCounts": counts,
        "NumberOfLayers": int(data.n_layers),
        "LayerOrder": S.layer_order(data.n_layers),
        "NumberOfColumns": int(data.n_columns),
        "NumberOfKeptColumns": int(len(data.columns)),
        "NumberOfSources": int(data.n_sources),
        "DroppedColumns": {"Count": len(dropped), "ByReason": by_reason, "Columns": dropped},
        "CoordinateSystem": "src_coords: head coordinates (m); mri_head_t: MRI "
        "(FreeSurfer surface RAS) -> head",
        "Sources": [u for u in uris.values() if u],
        "LayerSurfaces": uris.get("surfaces"),
        "ForwardFile": fwd_name,
        "LaminarLayout": {
            "n_layers": int(data.n_layers),
            "n_columns": int(data.n_columns),
            "dropped_columns": [int(c) for c in data.dropped_columns],
            "dropped_reasons": list(data.dropped_reasons),
        },
        "GeneratedBy": L.reproducible_provenance(data.provenance),
    }
    if surf is not None:
        side["OrientationConvention"] = f"{surf.orientation}: {surf.orientation_sign}"
        side["ColumnSpacing"] = surf.spacing
    if cfg.laminar_leadfield_mode == "simulate":
        side.update(
            SkullMargin=float(cfg.laminar_skull_margin),
            SkullMarginUnits="mm",
            ForwardEngine=cfg.laminar_forward_engine,
            Float32=bool(cfg.laminar_forward_float32),
            BEM=uris.get("bem"),
            Trans=uris.get("trans"),
            Info=uris.get("info"),
        )
    if cfg.laminar_leadfield_mode == "random":
        side["RandomSeed"] = cfg.laminar_random_seed
    if cfg.laminar_leadfield_mode == "load":
        side["LoadedFrom"] = uris.get("leadfield")
    return side


def _save(cfg, subject, session, data, surf, sources):
    root = Path(cfg.laminar_root)
    # no machine-specific folders in the files: a copied dataset writes the same bytes
    roots = _mbp.portable_roots(cfg)
    data.provenance = {k: bids.portable_path(v, roots) for k, v in data.provenance.items()}
    names = {k: L.leadfield_fname(root, subject, session, datatype=cfg.datatype, kind=k)
             for k in ("h5", "json", "fwd", "fwd_json")}  # fmt: skip
    can_fwd = (
        data.info is not None
        and data.src_coords is not None
        and data.mri_head_t is not None
        and (data.orientation_type == "free" or data.src_ori is not None)
        and not (data.orientation_type == "free" and data.leadfield.shape[2] != 3)
    )
    fwd_ok = can_fwd and L.fits_in_fif(data)
    if can_fwd and not fwd_ok:
        logger.info(
            **gen_log_kwargs(
                message="Leadfield too large for one FIF tag (2 GB): no _fwd.fif, "
                "the HDF5 file is the only copy (LeadfieldData.to_forward converts)"
            )
        )
    side = _sidecar(cfg, data, surf, sources, names["fwd"].name if fwd_ok else None)
    with bids.atomic_group():  # all four files, or none (the old set is kept)
        written = [L.write_leadfield(names["h5"], data, overwrite=True, verbose=False)]
        side = L.with_checksum(side, names["h5"])
        written.append(bids.write_json(names["json"], side))
        if fwd_ok:
            written.append(L.write_forward_fif(names["fwd"], data, overwrite=True,
                                               verbose=False))  # fmt: skip
            written.append(
                bids.write_json(names["fwd_json"], dict(side, LeadfieldFile=names["h5"].name))
            )
    folder = names["h5"].parent
    prefix = bids.subject_prefix(subject, session)
    bids.remove_stale(folder, f"{prefix}_desc-laminar_fwd.*", written)
    return written, fwd_ok


# ----------------------------------------------------------------- report
def _start_figures(data: L.LeadfieldData, surf) -> dict:
    """Start the section's figures in the render worker (see ``viz.submit_figure``)."""
    norms = L.column_norms(data)
    # what the QC figures read of the leadfield: everything but its values (the
    # worker gets the column layout, not hundreds of MB)
    layout = data.copy_metadata()
    layout.leadfield = np.empty((0, data.n_sources), np.uint8)
    title = f"Leadfield column norm by layer ({data.orientation_type})"
    return dict(
        norms=norms,
        column_norms=viz.submit_figure(L.plot_column_norms, layout, title=title, norms=norms),
        depth_ratio=(viz.submit_figure(L.plot_depth_ratio, layout, norms=norms)
                     if data.n_layers > 1 else None),  # fmt: skip
        ratio_map=_start_ratio_map(data, surf, norms),
    )


def _add_report(report, data: L.LeadfieldData, cfg, paths, fwd_written, *,
                figures=None) -> None:
    """The "Laminar leadfield" section; ``figures`` from :func:`_start_figures`."""
    tags = _mbp.REPORT_TAGS
    figures = _start_figures(data, None) if figures is None else figures
    norms = figures["norms"]
    viz.add_figure(
        report, figures["column_norms"].result(), title="Column norm by layer",
        section=SECTION, tags=tags, replace=True,
        caption=(
            "Norm over the channels of each unit group of every source's leadfield "
            f"column, sources layer-major ({S.layer_order(data.n_layers)}); deeper layers are "
            "farther from the sensors and should have smaller norms. Jumps or "
            "zero columns point at scaling, orientation or loading problems."
        ),
    )  # fmt: skip
    if figures["depth_ratio"] is not None:
        viz.add_figure(
            report, figures["depth_ratio"].result(), title="Deep vs superficial norm ratio",
            section=SECTION, tags=tags, replace=True,
            caption="Per column: norm of the deepest layer over the pial layer "
            "(log10). Below 0 (red line): the deep source is weaker at the sensors.",
        )  # fmt: skip
    grid = figures["ratio_map"]() if figures["ratio_map"] is not None else None
    if grid is not None:
        viz.add_figure(
            report, grid, title="Deep vs superficial ratio map", section=SECTION,
            tags=tags, replace=True,
            caption="log10(deepest / pial column norm) on the pial surface "
            "(grey: columns without leadfield).",
        )  # fmt: skip
    flagged = L.flag_outlier_columns(data, norms=norms)
    rows = [
        (r["column"], r["hemi"] or "n/a", "n/a" if r["vertno"] is None else r["vertno"],
         r["layer"], L.pretty_unit(r["unit"]), r["norm"], r["robust_z"])
        for r in flagged[:MAX_OUTLIER_ROWS]
    ]  # fmt: skip
    caption = (
        f"{len(flagged)} flagged (layer, column) pairs: log10 norm more than 5 robust "
        "SDs (1.4826 MAD) from the layer's median, or zero."
        + (f" First {MAX_OUTLIER_ROWS} shown." if len(flagged) > MAX_OUTLIER_ROWS else "")
    )
    html = viz.html_table(
        ("column", "hemi", "vertex", "layer", "unit group", "norm", "robust z"),
        rows or [("none", "", "", "", "", "", "")], caption=caption,
    )  # fmt: skip
    report.add_html(html=html, title="Outlier columns", section=SECTION, tags=tags, replace=True)
    report.add_html(
        html=_metadata_table(data, cfg, paths, fwd_written),
        title="Leadfield metadata", section=SECTION, tags=tags, replace=True,
    )  # fmt: skip


def _start_ratio_map(data: L.LeadfieldData, surf, norms):
    """Start rendering log10(deepest / pial norm) on the pial layer; None if not drawable."""
    if (surf is None or data.n_layers < 2 or data.column_hemi is None
            or data.n_columns != surf.n_columns):  # fmt: skip
        return None
    ratios = L.depth_ratio(data, norms=norms)
    unit = next((u for u in ("fT/nAm", "fT/cm/nAm", "uV/nAm") if u in ratios), None)
    if unit is None:
        return None
    values = np.full(surf.n_columns, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        values[data.columns] = np.log10(ratios[unit])
    finite = np.abs(values[np.isfinite(values)])
    lim = float(np.percentile(finite, 98)) if finite.size else 1.0
    return _mbp.surface_map_grid(surf, 0, values, title="deep/pial", cmap="RdBu_r",
                                 clim=(-lim, lim), label=f"log10 ratio ({L.pretty_unit(unit)})")  # fmt: skip


def _metadata_table(data: L.LeadfieldData, cfg, paths, fwd_written) -> str:
    types = list(dict.fromkeys(data.ch_types))
    prov = data.provenance
    by_reason = {r: data.dropped_reasons.count(r) for r in dict.fromkeys(data.dropped_reasons)}
    rows = [
        ("Mode", cfg.laminar_leadfield_mode + (" (synthetic)" if data.synthetic else "")),
        ("Orientation", data.orientation_type),
        ("Shape", " x ".join(str(s) for s in data.leadfield.shape)),
        ("dtype", str(data.leadfield.dtype)),
        ("Channels", ", ".join(f"{data.ch_types.count(t)} {t}" for t in types)),
        ("Units", ", ".join(f"{t}: {L.pretty_unit(data.units[data.ch_types.index(t)])}" for t in types)),
        ("Layers", f"{data.n_layers} ({S.layer_order(data.n_layers, brief=True)})"),
        ("Columns kept", f"{len(data.columns)} of {data.n_columns}"),
        ("Columns dropped", "; ".join(f"{n}: {r}" for r, n in by_reason.items()) or "none"),
    ]
    if cfg.laminar_leadfield_mode == "simulate":
        timings = prov.get("timings_s", {})
        rows += [
            ("Engine", prov.get("engine", cfg.laminar_forward_engine)),
            ("Skull margin", f"{cfg.laminar_skull_margin} mm"),
            ("Conductor", prov.get("conductor", "")),
            ("BEM", prov.get("bem", "")),
            ("Trans", prov.get("trans", "")),
            ("Info", prov.get("info", "")),
            ("Time", ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())),
        ]
    elif cfg.laminar_leadfield_mode == "random":
        rows.append(("Random seed", cfg.laminar_random_seed))
    else:
        rows.append(("Loaded from", prov.get("loaded_from", "")))
    rows.append(("Files", ", ".join(Path(p).name for p in paths)))
    if not fwd_written:
        rows.append(("MNE forward", "not written (no geometry/info, or > 2 GB)"))
    return viz.html_table(("Quantity", "Value"), rows)


# ----------------------------------------------------------------- config
def get_config(
    *, config: SimpleNamespace, subject: str, session: str | None = None
) -> SimpleNamespace:
    from mne_bids_pipeline._config_utils import get_runs_tasks

    seed = config.laminar_random_seed
    margin = config.laminar_skull_margin
    return SimpleNamespace(
        laminar_leadfield_mode=config.laminar_leadfield_mode,
        laminar_leadfield_dir=config.laminar_leadfield_dir,
        laminar_orientation_type=config.laminar_orientation_type,
        laminar_random_seed=config.random_state if seed is None else seed,
        laminar_skull_margin=float(config.mindist if margin is None else margin),
        laminar_forward_engine=config.laminar_forward_engine,
        laminar_forward_float32=config.laminar_forward_float32,
        laminar_column_spacing=config.laminar_column_spacing,
        runs_tasks=get_runs_tasks(config=config, subject=subject, session=session),
        source_info_path_update=config.source_info_path_update,
        noise_cov=_sanitize_callable(config.noise_cov),
        use_template_mri=config.use_template_mri,
        **_mbp.laminar_cfg(config, subject, session),
    )


def main(*, config: SimpleNamespace) -> None:
    """Run the laminar leadfield step."""
    _mbp.run_step(run_leadfield, config=config, get_config=get_config)
