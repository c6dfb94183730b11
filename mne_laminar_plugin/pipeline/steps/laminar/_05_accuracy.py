"""Laminar accuracy simulation.

Szul et al. (2025)'s whole-brain simulation on this subject's geometry and
sensors: a source on every layer of every column, the per-layer MSP model
comparison, and per column whether every layer is recovered, the error (mm)
and the bias; then how well the anatomical predictors predict accuracy
(cross-validated ROC-AUC, next to the paper's 0.810). Writes GIFTI maps of
accuracy, error and bias per hemisphere, a TSV (one row per column and SNR)
with a JSON sidecar (AUCs and settings), and a "Laminar accuracy" report
section. Off unless ``laminar_accuracy_enable``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from mne_bids_pipeline._logging import gen_log_kwargs, logger
from mne_bids_pipeline._report import _open_report
from mne_bids_pipeline._run import failsafe_run

from .... import bids
from .... import predictors as P
from .... import surfaces as S
from ....report import viz
from ....simulation import PAPER_AUC, simulate_laminar_accuracy
from ... import _mbp

SECTION = "Laminar accuracy"
#: map name -> (LaminarAccuracy attribute, desc- label, units, description)
MAPS = {
    "accuracy": ("accurate", "accuracy", "fraction",
                 "1 if every simulated layer was recovered at this column, else 0"),
    "error_mm": ("error_mm_paper", "errormm", "mm",
                 "mean |true - peak layer| x thickness / n_layers (the paper's conversion)"),
    "bias": ("bias", "bias", "layers",
             "mean (true - peak layer); > 0: the peak is more superficial"),
}  # fmt: skip


def map_fname(root, subject, session, hemi, spacing, name, snr_index) -> Path:
    """GIFTI map of one accuracy measure at one SNR (``run`` = SNR index + 1)."""
    return bids.bids_fname(
        root, subject=subject, session=session, datatype="anat", hemi=hemi,
        space="individual", den=spacing, desc=MAPS[name][1], run=snr_index + 1,
        suffix="stat", extension=".func.gii",
    )  # fmt: skip


def table_fname(root, subject, session, spacing) -> Path:
    """One row per column and SNR; the sidecar holds the AUCs and settings."""
    return bids.bids_fname(
        root, subject=subject, session=session, datatype="anat", space="individual",
        den=spacing, desc="laminar", suffix="accuracy", extension=".tsv",
    )  # fmt: skip


def _stale_patterns(subject, session) -> list[str]:
    prefix = bids.subject_prefix(subject, session)
    out = [f"{prefix}_space-individual_den-*_desc-laminar_accuracy.*"]
    for _, desc, _, _ in MAPS.values():
        out.append(f"{prefix}_run-*_hemi-*_space-individual_den-*_desc-{desc}_stat.*")
    return out


def get_input_fnames_accuracy(
    *, cfg: SimpleNamespace, subject: str, session: str | None
) -> dict[str, Path]:
    """Layer surfaces, leadfield, predictors TSV and the noise covariance."""
    in_files = _mbp.surface_files(cfg, subject, session)
    in_files["leadfield"] = _mbp.leadfield_file(cfg, subject, session)
    in_files["predictors"] = P.table_fname(cfg.laminar_root, subject, session,
                                               cfg.laminar_column_spacing)  # fmt: skip
    in_files.update(_mbp.cov_files(cfg, subject, session))
    return in_files


@failsafe_run(get_input_fnames=get_input_fnames_accuracy)
def run_accuracy(
    *,
    cfg: SimpleNamespace,
    exec_params: SimpleNamespace,
    subject: str,
    session: str | None,
    in_files: dict,
) -> dict:
    """Simulate, save and report the laminar accuracy of one subject/session."""
    from .... import leadfield as L

    for key in _mbp.surface_files(cfg, subject, session):
        in_files.pop(key)
    surf = S.LaminarSurfaces.load(
        cfg.laminar_root, subject, session, spacing=cfg.laminar_column_spacing, verbose=False
    )
    leadfield = L.read_leadfield(in_files.pop("leadfield"), verbose=False)
    pred = P.AnatomicalPredictors.from_tsv(in_files.pop("predictors"))
    cov, _, rank = _mbp.read_whitener(cfg, in_files)
    snr = list(np.atleast_1d(cfg.laminar_accuracy_snr_db).astype(float))
    msg = (f"Simulating a source on each of {surf.n_layers} layers at "
           f"{len(leadfield.columns)} columns, SNR {snr} dB")  # fmt: skip
    logger.info(**gen_log_kwargs(message=msg))
    acc = simulate_laminar_accuracy(
        leadfield, surf, noise_cov=cov, rank=rank, snr_db=snr,
        random_state=cfg.laminar_accuracy_random_state, n_jobs=exec_params.n_jobs,
        verbose=False,
    )  # fmt: skip
    score = pred.score(cfg.laminar_score_weights)
    # the cross-validation (first: it is needed first) and the figures go to the
    # render worker (report._worker) while this process writes the maps
    jobs = [_mbp.in_background(acc.predictivity, pred, snr_db=s,
                               weights=cfg.laminar_score_weights) for s in acc.snr_db]  # fmt: skip
    maps = _start_maps(surf, acc, score)
    summary = viz.submit_figure(acc.plot, snr_db=acc.snr_db[int(np.argmax(acc.snr_db))])
    _mbp.ensure_dataset(cfg)
    paths = _save_maps(cfg, subject, session, surf, acc)
    predictivity = []
    for s, job in zip(acc.snr_db, jobs):
        try:
            predictivity.append(job.result())
        except ValueError as err:  # one class only (e.g. nothing accurate)
            predictivity.append(dict(snr_db=float(s), error=str(err)))
    roc = viz.submit_figure(viz.plot_score_roc, predictivity)
    msg = "; ".join(
        f"{s:g} dB: {100 * a:.1f} % accurate" for s, a in zip(acc.snr_db, acc.accurate.mean(1))
    )
    logger.info(**gen_log_kwargs(message=msg))
    paths += _save_table(cfg, subject, session, acc, predictivity, paths)
    assert not in_files, in_files
    with _open_report(
        cfg=cfg, exec_params=exec_params, subject=subject, session=session
    ) as report:
        logger.info(**gen_log_kwargs(message="Adding laminar accuracy to the report"))
        _add_report(report, acc, predictivity, maps, summary, roc)
    out_files = {path.name: path for path in paths}
    return _mbp.prep_out_files(cfg=cfg, exec_params=exec_params, out_files=out_files)


def _per_column(surf, acc, values):
    """Values of the simulated columns on all columns of the surfaces (NaN elsewhere)."""
    out = np.full(surf.n_columns, np.nan)
    out[acc.columns] = values
    return out


def _summary(predictivity):
    """JSON-friendly predictivity records (no ROC arrays)."""
    out = []
    for rec in predictivity:
        rec = {k: v for k, v in rec.items() if k != "roc_score"}
        if "confusion" in rec:
            rec["confusion"] = np.asarray(rec["confusion"]).tolist()
        out.append(rec)
    return out


def _save_maps(cfg, subject, session, surf, acc) -> list[Path]:
    """The accuracy, error and bias maps of each SNR (GIFTI and sidecars)."""
    root, sp = Path(cfg.laminar_root), cfg.laminar_column_spacing
    written = []
    for i, s in enumerate(acc.snr_db):
        for name, (attr, _, units, desc) in MAPS.items():
            vals = _per_column(surf, acc, getattr(acc, attr)[i])
            for hemi in S.HEMIS:
                fname = map_fname(root, subject, session, hemi, sp, name, i)
                P.write_gifti_map(fname, vals[surf.columns(hemi)], hemi, name=name,
                                  meta={"Description": desc, "Units": units})  # fmt: skip
                side = {
                    "Description": f"{desc}; simulation at SNR {s:g} dB, one value per "
                    f"column of the {hemi} hemisphere in the vertex order of the layer "
                    f"surfaces (den-{sp}); NaN: column not simulated",
                    "Units": units, "SNR_dB": float(s),
                }  # fmt: skip
                written += [fname, bids.write_json(bids.sidecar(fname), side)]
    return written


def _save_table(cfg, subject, session, acc, predictivity, maps) -> list[Path]:
    """The table and its sidecar (AUCs, settings); stale files of other runs removed."""
    root, sp = Path(cfg.laminar_root), cfg.laminar_column_spacing
    anat = bids.subject_dir(root, subject, session, "anat")
    tsv = table_fname(root, subject, session, sp)
    df = acc.to_dataframe()
    bids.write_tsv(tsv, {c: df[c].tolist() for c in df.columns})
    side = {
        "Description": "Laminar accuracy simulation (Szul et al. 2025 protocol): one row "
        "per simulated column and SNR",
        "Columns": {
            "accurate": "every simulated layer recovered (peak = argmax F)",
            "layer_error": "mean |true - peak| (layers)",
            "bias": "mean (true - peak) (layers)",
            "error_mm_paper": "layer_error x thickness / n_layers (mm, the paper's)",
            "error_mm_exact": "mean |depth(true) - depth(peak)| along the column (mm)",
            "thickness_mm": "pial-white distance (mm)",
        },
        "Settings": acc.settings,
        "AccurateFraction": dict(zip([f"{s:g}" for s in acc.snr_db],
                                     acc.accurate.mean(1).round(4).tolist())),  # fmt: skip
        "Predictivity": _summary(predictivity),
        "ScoreWeights": P.score_weights(cfg.laminar_score_weights),
        "PaperAUC": {"mean": PAPER_AUC[0], "std": PAPER_AUC[1]},
    }
    written = [tsv, bids.write_json(bids.sidecar(tsv), side)]
    for pattern in _stale_patterns(subject, session):
        bids.remove_stale(anat, pattern, [*maps, *written])
    return written


def _start_maps(surf, acc, score):
    """Start rendering accuracy (highest SNR) and the score on the pial layer.

    Returns ``[(collect, caption), ...]`` (see ``_mbp.surface_map_grid``).
    """
    i = int(np.argmax(acc.snr_db))
    maps = [("accuracy", _per_column(surf, acc, acc.accurate[i].astype(float)), "RdYlGn", (0, 1)),
            (P.SCORE_NAME, score, "RdBu_r", None)]  # fmt: skip
    out = []
    for name, vals, cmap, clim in maps:
        if clim is None:
            lim = float(np.nanpercentile(np.abs(vals), 98))
            clim = (-lim, lim)
        caption = (f"{name} on the pial surface"
                   + (f" ({acc.snr_db[i]:g} dB)" if name == "accuracy" else ""))  # fmt: skip
        out.append((_mbp.surface_map_grid(surf, 0, vals, title=name, cmap=cmap, clim=clim,
                                          label=name), caption))  # fmt: skip
    return out


def _add_report(report, acc, predictivity, maps, summary, roc):
    """The "Laminar accuracy" section; the figures are pending (render worker)."""
    tags = _mbp.REPORT_TAGS
    # the figures this process may draw itself first, while the worker draws the maps
    summary, roc = _mbp.results([summary, roc])
    images, captions = [], []
    for collect, caption in maps:
        grid = collect()
        if grid is not None:
            images.append(grid)
            captions.append(caption)
    if images:
        viz.add_figure(report, images, title="Accuracy and anatomical score maps",
                       caption=captions, section=SECTION, tags=tags, replace=True)  # fmt: skip
    viz.add_figure(
        report, summary, title="Error, bias, mean ΔF, confusion", section=SECTION,
        tags=tags, replace=True,
        caption="Left: layer error and bias vs SNR (or their distributions); middle: mean "
        "ΔF over columns (layer model x true layer); right: peak vs true layer.",
    )  # fmt: skip
    viz.add_figure(report, roc, title="ROC curve of the anatomical score",
                   section=SECTION, tags=tags, replace=True,
                   caption="How well the composite score alone ranks accurate columns.")  # fmt: skip
    rows = []
    for rec, frac in zip(predictivity, acc.accurate.mean(1)):
        if "error" in rec:
            rows.append([f"{rec['snr_db']:g}", f"{100 * frac:.1f}", "n/a", "n/a", "n/a",
                         f"{PAPER_AUC[0]:.3f} ± {PAPER_AUC[1]:.3f}"])  # fmt: skip
            continue
        rows.append([f"{rec['snr_db']:g}", f"{100 * frac:.1f}",
                     f"{rec['auc_raw'][0]:.3f} ± {rec['auc_raw'][1]:.3f}",
                     f"{rec['auc_zscored'][0]:.3f} ± {rec['auc_zscored'][1]:.3f}",
                     f"{rec['auc_score']:.3f}", f"{PAPER_AUC[0]:.3f} ± {PAPER_AUC[1]:.3f}"])  # fmt: skip
    report.add_html(
        html=viz.html_table(
            ["SNR (dB)", "accurate (%)", "AUC logistic (raw)", "AUC logistic (z)",
             "AUC score", "paper AUC"], rows,
            caption="5-fold cross-validated ROC-AUC of a logistic regression of accuracy on "
            "the four predictors, and of the composite score alone; the paper: one subject, "
            "29,130 columns, -20 dB (84.8 % accurate). n/a: one class only.",
        ),  # fmt: skip
        title="Predictivity of the anatomical score", section=SECTION, tags=tags, replace=True,
    )


def get_config(
    *, config: SimpleNamespace, subject: str, session: str | None = None
) -> SimpleNamespace:
    from mne_bids_pipeline._run import _sanitize_callable

    return SimpleNamespace(
        laminar_column_spacing=config.laminar_column_spacing,
        laminar_accuracy_snr_db=config.laminar_accuracy_snr_db,
        laminar_accuracy_random_state=config.laminar_accuracy_random_state,
        laminar_predictors_whiten=config.laminar_predictors_whiten,
        laminar_score_weights=config.laminar_score_weights,
        noise_cov=_sanitize_callable(config.noise_cov),
        source_info_path_update=config.source_info_path_update,
        **_mbp.laminar_cfg(config, subject, session),
    )


def main(*, config: SimpleNamespace) -> None:
    """Run the laminar accuracy simulation step (when laminar_accuracy_enable)."""
    if not config.laminar_accuracy_enable:
        logger.info(**gen_log_kwargs(message="Skipping: laminar_accuracy_enable is False",
                                     emoji="skip"))  # fmt: skip
        return
    _mbp.run_step(run_accuracy, config=config, get_config=get_config)
