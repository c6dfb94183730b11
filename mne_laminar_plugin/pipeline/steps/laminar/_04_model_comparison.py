"""Laminar model comparison.

For every condition of MBP's evoked data: the negative free energy of one
source model per layer (laMEG's protocol, :func:`~mne_laminar_plugin.compare_layers`)
on MBP's noise covariance, at the best-score column and at every ROI prior of
the anatomical predictors, over the whole window and in sliding windows.
Writes one TSV per subject and task (one row per condition, prior, layer and
window; nats) with its JSON sidecar (method, settings, priors), and a
"Laminar model comparison" report section.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from mne_bids_pipeline._logging import gen_log_kwargs, logger
from mne_bids_pipeline._report import _open_report
from mne_bids_pipeline._run import failsafe_run

from .... import bids
from .... import inverse as I
from .... import leadfield as L
from .... import predictors as P
from .... import surfaces as S
from ....report import viz
from ... import _mbp

SECTION = "Laminar model comparison"
BEST = "best"  # prior name of the best-score column over the whole cortex
STRONG_DF = I.STRONG_DF  # nats: "strong evidence" (LayerEvidence.strong)


# ------------------------------------------------------------------ names
def evidence_fname(root, subject, session, datatype, task) -> Path:
    """The model-comparison TSV of one subject and task; its sidecar has the settings."""
    return bids.bids_fname(
        root, subject=subject, session=session, datatype=datatype, task=task,
        desc="laminar", suffix="evidence", extension=".tsv",
    )  # fmt: skip


# ----------------------------------------------------------------- inputs
def get_input_fnames_model_comparison(
    *, cfg: SimpleNamespace, subject: str, session: str | None
) -> dict[str, Path]:
    """Layer surfaces, leadfield, predictors TSV/sidecar, MBP evoked and noise covariance."""
    in_files = _mbp.surface_files(cfg, subject, session)
    in_files["leadfield"] = _mbp.leadfield_file(cfg, subject, session)
    tsv = P.table_fname(
        cfg.laminar_root, subject, session, cfg.laminar_column_spacing
    )
    in_files["predictors"] = tsv
    in_files["predictors_sidecar"] = bids.sidecar(tsv)
    for task in cfg.all_tasks:
        in_files[f"evoked_{task}"] = _mbp.mbp_path(
            cfg, subject, session, task=task, suffix="ave"
        ).fpath
    if cfg.noise_cov != "ad-hoc":
        from mne_bids_pipeline._config_utils import get_noise_cov_bids_path

        cov = get_noise_cov_bids_path(cfg=cfg, subject=subject, session=session)
        if cfg.noise_cov == "custom":  # a callable, sanitized to "custom" for caching
            cov = cov.copy().update(processing="custom")
        in_files["cov"] = cov.fpath
        in_files["cov_rank"] = cov.copy().update(suffix="rank", extension=".json").fpath
    return in_files


# ------------------------------------------------------------------- step
def _priors(sidecar: dict) -> dict[str, dict]:
    """Name -> column record of the best column and every ROI prior."""
    return {BEST: sidecar["BestColumn"], **sidecar.get("Priors", {})}


def _evokeds(fname, conditions):
    """The evoked responses of MBP's ``*_ave.fif`` of the chosen conditions."""
    import mne

    evokeds = mne.read_evokeds(fname, verbose="error")
    have = [ev.comment for ev in evokeds]
    if conditions is None:
        return evokeds
    unknown = [c for c in conditions if c not in have]
    if unknown:
        raise ValueError(
            f"laminar_comparison_conditions {unknown} are not in {Path(fname).name}, "
            f"which holds {have}; use some of those (or None for all)"
        )
    return [ev for ev in evokeds if ev.comment in conditions]


def compare(evoked, leadfield, cov, surf, column, cfg, rank=None, *, sliding=False):
    """The library call of one (condition, prior): whole window or sliding."""
    kw = dict(surfaces=surf, prior=int(column), method=cfg.laminar_comparison_method,
              patch_fwhm=cfg.laminar_patch_fwhm, rank=rank, verbose=False)  # fmt: skip
    if sliding:
        return I.compare_layers(evoked, leadfield, cov, n_temporal_modes=1,
                                windows=tuple(cfg.laminar_sliding_windows), **kw)  # fmt: skip
    return I.compare_layers(evoked, leadfield, cov, woi=cfg.laminar_comparison_woi,
                            n_temporal_modes=cfg.laminar_temporal_modes, **kw)  # fmt: skip


def _sliding(cfg) -> bool:
    return cfg.laminar_sliding_windows is not None and cfg.laminar_comparison_method == "msp"


@failsafe_run(get_input_fnames=get_input_fnames_model_comparison)
def run_model_comparison(
    *,
    cfg: SimpleNamespace,
    exec_params: SimpleNamespace,
    subject: str,
    session: str | None,
    in_files: dict,
) -> dict:
    """Compare the layer models of one subject/session and save and report them."""
    import mne

    if not cfg.laminar_layer_comparison:
        for key in list(in_files):
            in_files.pop(key)
        msg = "Skipping, laminar_layer_comparison is set to False …"
        logger.info(**gen_log_kwargs(message=msg))
        return _mbp.prep_out_files(cfg=cfg, exec_params=exec_params, out_files={})
    for key in _mbp.surface_files(cfg, subject, session):
        in_files.pop(key)  # read by LaminarSurfaces.load
    surf = S.LaminarSurfaces.load(
        cfg.laminar_root, subject, session, spacing=cfg.laminar_column_spacing, verbose=False
    )
    leadfield = L.read_leadfield(in_files.pop("leadfield"), verbose=False)
    P.AnatomicalPredictors.from_tsv(in_files.pop("predictors"))  # checks the table
    priors = _priors(bids.read_json(in_files.pop("predictors_sidecar")))
    cov = rank = None
    if "cov" in in_files:
        from mne_bids_pipeline._io import _read_json

        cov = mne.read_cov(in_files.pop("cov"), verbose="error")
        rank = _read_json(in_files.pop("cov_rank"))

    _mbp.ensure_dataset(cfg)
    written, results, figures = [], {}, {}
    for task in cfg.all_tasks:
        evokeds = _evokeds(in_files.pop(f"evoked_{task}"), cfg.laminar_comparison_conditions)
        res = results[task] = {}
        for evoked in evokeds:
            noise = cov if cov is not None else mne.make_ad_hoc_cov(evoked.info, verbose=False)
            for name, rec in priors.items():
                whole = compare(evoked, leadfield, noise, surf, rec["column"], cfg, rank)
                slide = (compare(evoked, leadfield, noise, surf, rec["column"], cfg, rank,
                                 sliding=True) if _sliding(cfg) else None)  # fmt: skip
                res[evoked.comment, name] = (whole, slide)
                # drawn by the render worker while the next comparison runs
                figures.setdefault(task, {})[evoked.comment, name] = viz.submit_figure(
                    viz.plot_evidence, whole, slide)  # fmt: skip
                msg = (f"{evoked.comment!r} at {name} ({rec['hemi']} {rec['vertex']}): "
                       f"best layer {whole.best_layer}, ΔF vs runner-up "
                       f"{float(whole.delta_f_runner_up):.1f} nats")  # fmt: skip
                logger.info(**gen_log_kwargs(message=msg))
        written += _save(cfg, subject, session, task, res, priors)
    assert not in_files, in_files

    with _open_report(
        cfg=cfg, exec_params=exec_params, subject=subject, session=session
    ) as report:
        logger.info(**gen_log_kwargs(message="Adding laminar model comparison to the report"))
        for task, res in results.items():
            _add_report(report, task, res, figures[task])
    out_files = {path.name: path for path in written}
    return _mbp.prep_out_files(cfg=cfg, exec_params=exec_params, out_files=out_files)


def _rows(res) -> dict[str, list]:
    """TSV columns: one row per condition, prior, layer and window."""
    import pandas as pd

    frames = []
    for (condition, name), (whole, slide) in res.items():
        for kind, ev in (("whole", whole), ("sliding", slide)):
            if ev is None:
                continue
            df = ev.to_dataframe()
            p = ev.prior[0]
            df.insert(0, "window", kind)
            df.insert(0, "vertex", p["vertex"])
            df.insert(0, "hemi", p["hemi"])
            df.insert(0, "column", p["column"])
            df.insert(0, "prior", name)
            df.insert(0, "condition", condition)
            frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    return {c: df[c].tolist() for c in df.columns}


def _save(cfg, subject, session, task, res, priors) -> list[Path]:
    tsv = evidence_fname(cfg.laminar_root, subject, session, cfg.datatype, task)
    bids.write_tsv(tsv, _rows(res))
    first = next(iter(res.values()))[0]
    settings = {k: v for k, v in first.settings.items() if k not in ("channels",)}
    side = {
        "Description": "Negative free energy of one source model per layer (laMEG's "
        "laminar model comparison) for each condition of MBP's evoked data and each "
        "prior column; window 'whole' = the woi, 'sliding' = sliding windows "
        "(time = window centre, s).",
        "Method": cfg.laminar_comparison_method,
        "WindowOfInterest": list(first.woi),
        "PatchFWHM": cfg.laminar_patch_fwhm,
        "PatchFWHMUnits": "mm",
        "TemporalModes": cfg.laminar_temporal_modes,
        "SlidingWindows": (
            dict(width_ms=cfg.laminar_sliding_windows[0],
                 step_ms=cfg.laminar_sliding_windows[1], temporal_modes=1)
            if _sliding(cfg) else None
        ),  # fmt: skip
        "Conditions": sorted({c for c, _ in res}),
        "Priors": {name: {k: rec[k] for k in ("column", "hemi", "vertex", "pos_mri_mm")
                          if k in rec} for name, rec in priors.items()},  # fmt: skip
        "Settings": settings,
        "StrongEvidence": f"best layer beats the runner-up by more than {STRONG_DF} nats",
        "Layers": "0 = pial ... n-1 = white; fraction = depth from white (1 = pial); "
        "depth_mm = distance from the pial surface along the column",
        "free_energy": {"Description": "negative free energy F", "Units": "nats"},
        "delta_f": {"Description": "F minus the worst layer's F", "Units": "nats"},
        "time": {"Description": "window centre (n/a for the whole window)", "Units": "s"},
        "depth_mm": {"Units": "mm"},
    }
    return [tsv, bids.write_json(bids.sidecar(tsv), side)]


# ----------------------------------------------------------------- report
def _add_report(report, task, res, figures) -> None:
    """The section of one task; ``figures``: ΔF images by (condition, prior) (pending)."""
    tags = _mbp.REPORT_TAGS
    rows = []
    images = dict(zip(figures, _mbp.results(figures.values())))
    for (condition, name), (whole, slide) in res.items():
        p = whole.prior[0]
        where = f"{name} ({p['hemi']} {p['vertex']})"
        viz.add_figure(
            report, images[condition, name],
            title=f"ΔF per layer: {condition}, {where}, task {task}",
            caption="Left: ΔF (free energy relative to the worst layer, nats) of each layer "
            "model over the whole window (red: best; dashed: 3 nats). Right: ΔF per "
            "layer in sliding windows (1 temporal mode).",
            section=SECTION, tags=tags, replace=True,
        )  # fmt: skip
        best, F = whole.best_layer, whole.free_energy
        far = np.abs(np.arange(whole.n_layers) - best) >= 2
        vs_far = float(F[best] - F[far].max()) if far.any() else float("nan")
        rows.append([condition, name, p["hemi"], p["vertex"], best,
                     f"{whole.layer_depths['fraction'][best]:.2f}",
                     f"{float(whole.delta_f_runner_up):.2f}",
                     "strong" if whole.strong else "weak",
                     f"{float(F[best] - F[0]):.1f}", f"{float(F[best] - F[-1]):.1f}",
                     f"{vs_far:.1f}", "strong" if vs_far > STRONG_DF else "weak"])  # fmt: skip
    report.add_html(
        html=viz.html_table(
            ["condition", "prior", "hemi", "vertex", "best layer", "depth (from white)",
             "ΔF vs runner-up (nats)", "evidence vs runner-up", "ΔF vs pial",
             "ΔF vs white", "ΔF vs layers ≥ 2 away", "evidence vs layers ≥ 2 away"], rows,
            caption="Winning layer model (0 = pial) per condition and prior (whole "
            f"window); strong = beats the other model(s) by more than {STRONG_DF:g} nats "
            "(about 20:1). Adjacent layers are a fraction of a millimetre apart: the "
            "runner-up is usually a neighbour and rarely beaten strongly.",
        ),
        title=f"Winning layers, task {task}", section=SECTION, tags=tags, replace=True,
    )  # fmt: skip


# ----------------------------------------------------------------- config
def get_config(
    *, config: SimpleNamespace, subject: str, session: str | None = None
) -> SimpleNamespace:
    from mne_bids_pipeline._run import _sanitize_callable

    conditions = config.laminar_comparison_conditions
    return SimpleNamespace(
        laminar_column_spacing=config.laminar_column_spacing,
        laminar_layer_comparison=config.laminar_layer_comparison,
        laminar_comparison_method=config.laminar_comparison_method,
        laminar_comparison_woi=(None if config.laminar_comparison_woi is None
                                else tuple(config.laminar_comparison_woi)),  # fmt: skip
        laminar_patch_fwhm=float(config.laminar_patch_fwhm),
        laminar_temporal_modes=int(config.laminar_temporal_modes),
        laminar_sliding_windows=(None if config.laminar_sliding_windows is None
                                 else tuple(config.laminar_sliding_windows)),  # fmt: skip
        laminar_comparison_conditions=None if conditions is None else tuple(conditions),
        noise_cov=_sanitize_callable(config.noise_cov),
        **_mbp.laminar_cfg(config, subject, session),
    )


def main(*, config: SimpleNamespace) -> None:
    """Run the laminar model comparison step."""
    _mbp.run_step(run_model_comparison, config=config, get_config=get_config)
