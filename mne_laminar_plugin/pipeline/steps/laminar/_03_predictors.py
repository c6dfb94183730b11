"""Anatomical predictors.

Per column: cortical thickness, the leadfield RMS difference between the
deepest and the most superficial layer, radiality and distance to the scalp;
the composite anatomical score, the best column and the prior (highest-score
column) of every region of interest. Writes one GIFTI map per hemisphere and
predictor (and the score), a TSV with one row per column and its JSON sidecar
(units, methods, best column and priors), and an "Anatomical predictors"
report section.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from mne_bids_pipeline._logging import gen_log_kwargs, logger
from mne_bids_pipeline._report import _open_report
from mne_bids_pipeline._run import failsafe_run

from .... import bids
from .... import leadfield as L
from .... import predictors as P
from .... import surfaces as S
from ....report import viz
from ... import _mbp

SECTION = "Anatomical predictors"
TOP_N = 10
MAPS = (*P.PREDICTORS, P.SCORE_NAME)
CMAPS = {
    "thickness": "viridis",
    "lf_rms_diff": "magma",
    "radiality": "cividis",
    "distance": "viridis_r",
    P.SCORE_NAME: "RdBu_r",
}


# ------------------------------------------------------------------ names
map_fname, table_fname = P.map_fname, P.table_fname  # the library names them


def _stale_patterns(subject, session) -> list[str]:
    """Glob patterns of every file this step writes (any spacing)."""
    prefix = bids.subject_prefix(subject, session)
    out = [f"{prefix}_space-individual_den-*_desc-laminar_predictors.*"]
    for desc in P.MAP_DESC.values():
        out.append(f"{prefix}_hemi-*_space-individual_den-*_desc-{desc}_stat.*")
    return out


# ----------------------------------------------------------------- inputs
def _read_leadfield(fname, n_layers):
    """Only the pial and the deepest layer: all lf_rms_diff needs."""
    return L.read_leadfield(fname, layers=[0, n_layers - 1], verbose=False)


def _scalp_file(cfg) -> Path | None:
    for fname in P.scalp_files(cfg.fs_subject, cfg.fs_subjects_dir, cfg.laminar_scalp_mesh):
        if fname.is_file():
            return fname
    return None


def _roi_files(cfg) -> dict[str, Path]:
    """Files behind the ROIs (annotations, labels), for MBP's change tracking."""
    out = {}
    for k, spec in enumerate(cfg.laminar_rois):
        found = [c for c in P.roi_files(spec, cfg.fs_subject, cfg.fs_subjects_dir) if c.is_file()]
        if found:
            out[f"roi{k}"] = found[0]
    return out


def get_input_fnames_predictors(
    *, cfg: SimpleNamespace, subject: str, session: str | None
) -> dict[str, Path]:
    """Layer surfaces, leadfield, scalp, noise covariance and ROI files."""
    in_files = _mbp.surface_files(cfg, subject, session)
    in_files["leadfield"] = _mbp.leadfield_file(cfg, subject, session)
    scalp = _scalp_file(cfg)
    if scalp is not None:  # else read_scalp raises, listing what it looked for
        in_files["scalp"] = scalp
    in_files.update(_mbp.cov_files(cfg, subject, session))
    in_files.update(_roi_files(cfg))
    return in_files


# ------------------------------------------------------------------- step
@failsafe_run(get_input_fnames=get_input_fnames_predictors)
def run_predictors(
    *,
    cfg: SimpleNamespace,
    exec_params: SimpleNamespace,
    subject: str,
    session: str | None,
    in_files: dict,
) -> dict:
    """Compute, save and report the anatomical predictors of one subject/session."""
    for key in _mbp.surface_files(cfg, subject, session):  # read by LaminarSurfaces.load
        in_files.pop(key)
    surf = S.LaminarSurfaces.load(
        cfg.laminar_root, subject, session, spacing=cfg.laminar_column_spacing, verbose=False
    )
    leadfield = _read_leadfield(in_files.pop("leadfield"), surf.n_layers)
    in_files.pop("scalp", None)  # read_scalp finds it (or raises, listing candidates)
    scalp = P.read_scalp(cfg.fs_subject, cfg.fs_subjects_dir, kind=cfg.laminar_scalp_mesh)
    # no machine-specific paths in the sidecars
    scalp.source = bids.portable_path(scalp.source, _mbp.portable_roots(cfg))
    cov, info, rank = _mbp.read_whitener(cfg, in_files)
    if cov is not None and not P.can_whiten(leadfield):
        msg = "The leadfield has no physical units (random?): not whitening"
        logger.info(**gen_log_kwargs(message=msg))
        cov = info = rank = None
    ch_type = None if cfg.laminar_predictors_ch_type == "auto" else cfg.laminar_predictors_ch_type
    how = "noise-whitened leadfield" if cov is not None else "one channel type"
    msg = f"Computing anatomical predictors of {surf.n_columns} columns ({how})"
    logger.info(**gen_log_kwargs(message=msg))
    pred = P.compute_predictors(
        surf, leadfield, scalp, whitener=cov, info=info, rank=rank,
        ch_type=None if cov is not None else ch_type, verbose=False,
    )  # fmt: skip
    weights = cfg.laminar_score_weights
    score = pred.score(weights)
    figures = _start_figures(surf, pred, score)  # drawn while the rest is computed, written
    rois = {
        spec: pred.roi_columns(spec, cfg.fs_subject, cfg.fs_subjects_dir)
        for spec in cfg.laminar_rois
    }
    for k in range(len(cfg.laminar_rois)):  # read by roi_columns
        in_files.pop(f"roi{k}", None)
    priors = {
        name: pred.column_record(P.select_prior(score, cols), score)
        | dict(n_columns=int(cols.size))
        for name, cols in rois.items()
    }
    best = pred.column_record(pred.best_vertex(weights), score)
    mni = _mni(pred, cfg, [best, *priors.values()])
    msg = (
        f"Best column: {best['hemi']} vertex {best['vertex']} (score {best['score']:.2f})"
        + "".join(f"; prior {k}: {v['hemi']} vertex {v['vertex']}" for k, v in priors.items())
    )
    logger.info(**gen_log_kwargs(message=msg))

    _mbp.ensure_dataset(cfg)
    paths = _save(cfg, subject, session, surf, pred, score, rois, best, priors, weights, mni)
    assert not in_files, in_files

    with _open_report(
        cfg=cfg, exec_params=exec_params, subject=subject, session=session
    ) as report:
        logger.info(**gen_log_kwargs(message="Adding anatomical predictors to the report"))
        _add_report(report, cfg, pred, score, best, priors, mni, figures)
    out_files = {path.name: path for path in paths}
    return _mbp.prep_out_files(cfg=cfg, exec_params=exec_params, out_files=out_files)


def _mni(pred, cfg, records) -> bool:
    """Add ``pos_mni`` to records when the talairach transform exists."""
    pos = np.array([r["pos_mri_mm"] for r in records], float) / 1e3
    out = P.mri_to_mni(pos, cfg.fs_subject, cfg.fs_subjects_dir) if len(pos) else None
    if out is None:
        return False
    for rec, xyz in zip(records, out):
        rec["pos_mni"] = [round(float(v), 2) for v in xyz]
    return True


def _save(cfg, subject, session, surf, pred, score, rois, best, priors, weights, mni):
    root, sp = Path(cfg.laminar_root), cfg.laminar_column_spacing
    anat = bids.subject_dir(root, subject, session, "anat")
    density = S.density_description(surf)
    sources = {
        hemi: bids.dataset_uri(S.layer_fname(root, subject, session, hemi, 0, sp), {"": root})
        for hemi in S.HEMIS
    }
    written = []
    with bids.atomic_group():  # the maps, the table and their sidecars, or none
        values = {**pred.as_dict(), P.SCORE_NAME: score}
        for hemi in S.HEMIS:
            sl = surf.columns(hemi)
            for name in MAPS:
                fname = map_fname(root, subject, session, hemi, sp, name)
                P.write_gifti_map(
                    fname, values[name][sl], hemi, name=name,
                    meta={"Description": P.LONG_NAMES[name], "Units": pred.units[name]},
                )  # fmt: skip
                side = {
                    "Description": f"{P.LONG_NAMES[name]}, one value per column of the "
                    f"{hemi} hemisphere, in the vertex order of the layer surfaces "
                    f"(den-{sp}). {P.DESCRIPTIONS[name]}",
                    "Units": pred.units[name],
                    "Density": density,
                    "SpatialReference": sources[hemi],
                    "Sources": [sources[hemi]],
                    "VertexIds": "FreeSurfer vertex of each value: column 'vertex' of "
                    f"{table_fname(root, subject, session, sp).name}",
                }
                if name in pred.methods:
                    side["Method"] = pred.methods[name]
                if name == P.SCORE_NAME:
                    side["ScoreWeights"] = P.score_weights(weights)
                written += [fname, bids.write_json(bids.sidecar(fname), side)]
        tsv = table_fname(root, subject, session, sp)
        extra = {
            "SpatialReference": S.SPATIAL_REFERENCE + " (columns x, y, z)",
            "Density": density,
            "Sources": list(sources.values()),
            "BestColumn": best,
            "Priors": priors,
            "ROIs": {name: P.roi_column_name(name) for name in rois},
            "Coordinates": "pos_mri_mm: pial position, FreeSurfer surface RAS (mm); "
            + (
                "pos_mni: MNI Talairach (mri/transforms/talairach.xfm), mm"
                if mni
                else "no MNI coordinates (no mri/transforms/talairach.xfm)"
            ),
        }
        pred.to_tsv(tsv, weights=weights, rois=rois, extra=extra)
        written += [tsv, bids.sidecar(tsv)]
    for pattern in _stale_patterns(subject, session):
        bids.remove_stale(anat, pattern, written)
    return written


# ----------------------------------------------------------------- report
def _start_figures(surf, pred, score) -> dict:
    """Start the section's figures in the render worker, by name.

    The histograms, the correlations, and the map of each predictor and of
    the score on the pial layer.
    """
    values = {**pred.as_dict(), P.SCORE_NAME: score}
    figures = {}
    for name in MAPS:
        vals = values[name]
        finite = vals[np.isfinite(vals)]
        clim = tuple(np.percentile(finite, [2, 98])) if finite.size else None
        if name == P.SCORE_NAME and finite.size:
            lim = float(np.percentile(np.abs(finite), 98))
            clim = (-lim, lim)
        unit = pred.units[name]
        figures[name] = _mbp.surface_map_grid(
            surf, 0, vals, title=name, cmap=CMAPS[name], clim=clim,
            label=f"{name} ({unit})" if unit != "arbitrary" else name,
        )  # fmt: skip
    # after the maps: drawn here instead if the worker has not got to them
    figures["histograms"] = viz.submit_figure(
        viz.plot_histograms, values, units=dict(pred.units), title="Distributions over columns")
    figures["correlations"] = viz.submit_figure(viz.plot_correlation_matrix, values)
    return figures


def _add_report(report, cfg, pred, score, best, priors, mni, figures) -> None:
    """The "Anatomical predictors" section; ``figures`` from :func:`_start_figures`."""
    tags = _mbp.REPORT_TAGS
    units = {**pred.units}
    # the figures this process may draw itself first, while the worker draws the maps
    hist, corr = _mbp.results([figures["histograms"], figures["correlations"]])
    # maps on the pial surface: one slider item per predictor and the score
    images, captions = [], []
    for name in MAPS:
        grid = figures[name]()
        if grid is not None:
            images.append(grid)
            captions.append(
                f"{P.LONG_NAMES[name]} on the pial surface ({units[name]}): "
                f"{P.DESCRIPTIONS[name]}"
            )
    if images:
        viz.add_figure(
            report, images, title="Predictor maps", caption=captions, section=SECTION,
            tags=tags, replace=True,
        )  # fmt: skip
    viz.add_figure(
        report, hist, title="Predictor histograms", section=SECTION, tags=tags, replace=True,
        caption="Dashed: median. NaN columns (e.g. dropped from the leadfield) are left out.",
    )  # fmt: skip
    viz.add_figure(
        report, corr, title="Predictor correlations", section=SECTION, tags=tags, replace=True,
        caption="Pearson correlation between the predictors and the score over the "
        "columns where all are finite.",
    )  # fmt: skip
    report.add_html(
        html=_top_table(pred, score, cfg, mni),
        title="Top columns", section=SECTION, tags=tags, replace=True,
    )  # fmt: skip
    report.add_html(
        html=_prior_table(best, priors, mni) + _methods_table(pred, cfg),
        title="Best column and ROI priors", section=SECTION, tags=tags, replace=True,
    )  # fmt: skip


def _fmt_xyz(xyz) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in xyz) + ")"


def _top_table(pred, score, cfg, mni) -> str:
    order = np.argsort(np.where(np.isfinite(score), -score, np.inf))[:TOP_N]
    order = order[np.isfinite(score[order])]
    pos = pred.pos[order] if pred.pos is not None else None
    pos_mni = P.mri_to_mni(pos, cfg.fs_subject, cfg.fs_subjects_dir) if mni else None
    header = ["rank", "column", "hemi", "vertex", "score", "thickness (mm)",
              f"lf_rms_diff ({pred.units['lf_rms_diff']})", "radiality", "distance (mm)",
              "MRI (mm)"] + (["MNI (mm)"] if pos_mni is not None else [])  # fmt: skip
    rows = []
    for k, col in enumerate(order):
        row = [k + 1, int(col), pred.hemi[col], int(pred.vertno[col]), float(score[col]),
               float(pred.thickness[col]), float(pred.lf_rms_diff[col]),
               float(pred.radiality[col]), float(pred.distance[col]),
               _fmt_xyz(pred.pos[col] * 1e3) if pred.pos is not None else "n/a"]  # fmt: skip
        if pos_mni is not None:
            row.append(_fmt_xyz(pos_mni[k]))
        rows.append(row)
    return viz.html_table(
        header, rows,
        caption=f"The {len(rows)} columns with the highest anatomical score "
        "(MRI: FreeSurfer surface RAS of the pial vertex).",
    )  # fmt: skip


def _prior_table(best, priors, mni) -> str:
    header = ["region", "columns in ROI", "column", "hemi", "vertex", "score", "MRI (mm)"]
    header += ["MNI (mm)"] if mni else []
    rows = []
    for name, rec in [("whole cortex (best column)", best), *priors.items()]:
        row = [name, rec.get("n_columns", "all"), rec["column"], rec["hemi"], rec["vertex"],
               rec["score"], _fmt_xyz(rec["pos_mri_mm"])]  # fmt: skip
        if mni:
            row.append(_fmt_xyz(rec["pos_mni"]))
        rows.append(row)
    return viz.html_table(
        header, rows, caption="Prior = the column with the highest score inside each ROI."
    )


def _methods_table(pred, cfg) -> str:
    n_nan = {name: int(np.isnan(getattr(pred, name)).sum()) for name in P.PREDICTORS}
    rows = [(name, pred.units[name], pred.methods.get(name, ""), n_nan[name])
            for name in P.PREDICTORS]  # fmt: skip
    rows.append((P.SCORE_NAME, "arbitrary",
                 f"weights {P.score_weights(cfg.laminar_score_weights)}",
                 int((~pred.kept).sum())))  # fmt: skip
    return viz.html_table(
        ("predictor", "units", "method", "NaN columns"), rows,
        caption="How each predictor was computed; NaN columns are excluded from the "
        "z-scores and never chosen.",
    )  # fmt: skip


# ----------------------------------------------------------------- config
def get_config(
    *, config: SimpleNamespace, subject: str, session: str | None = None
) -> SimpleNamespace:
    from mne_bids_pipeline._run import _sanitize_callable

    return SimpleNamespace(
        laminar_column_spacing=config.laminar_column_spacing,
        laminar_scalp_mesh=config.laminar_scalp_mesh,
        laminar_rois=tuple(config.laminar_rois),
        laminar_score_weights=config.laminar_score_weights,
        laminar_predictors_whiten=config.laminar_predictors_whiten,
        laminar_predictors_ch_type=config.laminar_predictors_ch_type,
        noise_cov=_sanitize_callable(config.noise_cov),
        source_info_path_update=config.source_info_path_update,
        **_mbp.laminar_cfg(config, subject, session),
    )


def main(*, config: SimpleNamespace) -> None:
    """Run the anatomical predictors step."""
    _mbp.run_step(run_predictors, config=config, get_config=get_config)
