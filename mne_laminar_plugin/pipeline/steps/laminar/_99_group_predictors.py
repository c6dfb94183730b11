"""Group anatomical score.

Every subject's anatomical score mapped to a FreeSurfer template
(``laminar_group_template``, default fsaverage) by nearest vertex on
``?h.sphere.reg``, the group mean map, and every subject's best column, in
the group report (subject ``average``). The template must be in
``subjects_dir``: it is never downloaded (the step is skipped with a message
when it is missing).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from mne_bids_pipeline._logging import gen_log_kwargs, logger
from mne_bids_pipeline._report import _open_report
from mne_bids_pipeline._run import failsafe_run

from .... import bids
from .... import predictors as P
from ....report import viz
from ....surfaces import HEMIS
from ... import _mbp

SECTION = "Anatomical predictors (group)"
AVERAGE = "average"
GAP_FACTOR = P.GAP_FACTOR


def _template_label(template: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]", "", template) or "template"


def group_dir(cfg) -> Path:
    """``<laminar root>/group`` (listed in the derivative's .bidsignore)."""
    return Path(cfg.laminar_root) / "group"


def group_map_fname(cfg, session, hemi, stat) -> Path:
    ses = f"ses-{session}_" if session else ""
    return group_dir(cfg) / (
        f"{ses}hemi-{bids.HEMI_LABEL[hemi]}_space-{_template_label(cfg.template)}"
        f"_desc-score{stat}_stat.func.gii"
    )


def group_table_fname(cfg, session) -> Path:
    ses = f"ses-{session}_" if session else ""
    return group_dir(cfg) / (
        f"{ses}space-{_template_label(cfg.template)}_desc-bestcolumns_predictors.tsv"
    )


def _template_surf(cfg, hemi, kind) -> Path:
    return Path(cfg.fs_subjects_dir) / cfg.template / "surf" / f"{hemi}.{kind}"


def _display_kind(cfg, hemi) -> str:
    for kind in ("inflated", "pial", "white"):
        if _template_surf(cfg, hemi, kind).is_file():
            return kind
    return "sphere.reg"


def get_input_fnames_group_predictors(
    *, cfg: SimpleNamespace, subject: str, session: str | None
) -> dict[str, Path]:
    assert subject == AVERAGE
    in_files: dict[str, Path] = {}
    for sub, fs_sub in cfg.group_subjects:
        in_files[f"{sub}-predictors"] = P.table_fname(
            cfg.laminar_root, sub, session, cfg.laminar_column_spacing
        )
        for hemi in HEMIS:
            in_files[f"{sub}-sphere-{hemi}"] = (
                Path(cfg.fs_subjects_dir) / fs_sub / "surf" / f"{hemi}.sphere.reg"
            )
    for hemi in HEMIS:
        in_files[f"template-sphere-{hemi}"] = _template_surf(cfg, hemi, "sphere.reg")
        in_files[f"template-display-{hemi}"] = _template_surf(cfg, hemi, _display_kind(cfg, hemi))
        # coordinates of template vertices: the anatomical (pial, else white) surface
        pial = _template_surf(cfg, hemi, "pial")
        in_files[f"template-anat-{hemi}"] = pial if pial.is_file() else _template_surf(
            cfg, hemi, "white"
        )
    return in_files


map_to_template = P.map_to_template  # the library maps (name kept for callers)


@failsafe_run(get_input_fnames=get_input_fnames_group_predictors)
def run_group_predictors(
    *,
    cfg: SimpleNamespace,
    exec_params: SimpleNamespace,
    subject: str,
    session: str | None,
    in_files: dict,
) -> dict:
    """Map every subject's score to the template; mean map and best columns."""
    import mne

    assert subject == AVERAGE
    msg = (
        f"Mapping the anatomical score of {len(cfg.group_subjects)} subject(s) to "
        f"{cfg.template} (nearest column on ?h.sphere.reg)"
    )
    logger.info(**gen_log_kwargs(message=msg))
    tpl = {hemi: _read_template(in_files, hemi) for hemi in HEMIS}
    mapped = {hemi: [] for hemi in HEMIS}
    best_rows = []
    for sub, _ in cfg.group_subjects:
        pred = P.AnatomicalPredictors.from_tsv(in_files.pop(f"{sub}-predictors"))
        spheres = {
            hemi: mne.read_surface(in_files.pop(f"{sub}-sphere-{hemi}"))[0] for hemi in HEMIS
        }
        best_rows.append(_map_subject(sub, pred, spheres, tpl, mapped))
    assert not in_files, in_files
    _mbp.ensure_dataset(cfg)
    out_files, means = _save(cfg, session, mapped, best_rows)
    with _open_report(
        cfg=cfg, exec_params=exec_params, subject=subject, session=session
    ) as report:
        _add_report(report, cfg, tpl, means, best_rows)
    return _mbp.prep_out_files(cfg=cfg, exec_params=exec_params, out_files=out_files)


def _save(cfg, session, mapped, best_rows) -> tuple[dict, dict]:
    """Write the mean and count maps, the best-column table and their sidecars.

    One set, committed together (:func:`~mne_laminar_plugin.bids.atomic_group`):
    a failed write keeps the previous run's files and leaves no temporary.
    Returns the files written (by name) and the mean map of each hemisphere.
    """
    out_files, means = {}, {}
    with bids.atomic_group():
        for hemi in HEMIS:
            stack = np.array(mapped[hemi])
            with warnings.catch_warnings():  # all-NaN vertices: "Mean of empty slice"
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(stack, axis=0)
            count = np.isfinite(stack).sum(axis=0)
            means[hemi] = mean
            for stat, vals in (("mean", mean), ("count", count)):
                fname = group_map_fname(cfg, session, hemi, stat.capitalize())
                P.write_gifti_map(fname, vals, hemi, name=f"score_{stat}")
                bids.write_json(
                    bids.sidecar(fname),
                    {
                        "Description": f"Group {stat} of the anatomical score over "
                        f"{len(cfg.group_subjects)} subject(s), on every vertex of "
                        f"{cfg.template} {hemi}; each subject's score mapped by nearest "
                        f"column on ?h.sphere.reg (n/a farther than {GAP_FACTOR} x the "
                        "median column spacing from every column).",
                        "SpatialReference": f"FreeSurfer template {cfg.template} "
                        f"(surf/{hemi}.sphere.reg vertex order)",
                        "Subjects": [s for s, _ in cfg.group_subjects],
                    },
                )
                out_files[fname.name] = fname
        tfname = group_table_fname(cfg, session)
        cols = list(best_rows[0]) if best_rows else ["subject"]
        bids.write_tsv(tfname, {c: [r[c] for r in best_rows] for c in cols})
        bids.write_json(bids.sidecar(tfname), _table_sidecar(cfg))
        out_files[tfname.name] = tfname
    return out_files, means


def _read_template(in_files, hemi) -> dict:
    """The template's sphere, display surface (m) and anatomical vertices (m)."""
    import mne

    sphere = mne.read_surface(in_files.pop(f"template-sphere-{hemi}"))[0]
    disp_rr, disp_tris = mne.read_surface(in_files.pop(f"template-display-{hemi}"))[:2]
    anat_rr = mne.read_surface(in_files.pop(f"template-anat-{hemi}"))[0]
    return dict(sphere=sphere, rr=disp_rr / 1e3, tris=disp_tris, anat=anat_rr / 1e3)


def _map_subject(sub, pred, spheres, tpl, mapped) -> dict:
    """Append a subject's score maps to ``mapped``; its best column's table row."""
    if pred.saved_score is None:
        raise ValueError(f"the predictors of {sub} have no {P.SCORE_NAME!r} column "
                         "(rerun laminar/predictors)")  # fmt: skip
    score = pred.saved_score
    best = int(np.nanargmax(score))
    for hemi in HEMIS:
        cols = np.flatnonzero(pred.hemi == hemi)
        vals = np.full(len(tpl[hemi]["sphere"]), np.nan)
        if cols.size:
            vals, _ = P.map_to_template(
                pred.hemi[cols], pred.vertno[cols], score[cols], spheres[hemi],
                tpl[hemi]["sphere"],
            )  # fmt: skip
        mapped[hemi].append(vals)
    hemi = pred.hemi[best]
    t_vert = P.nearest_template_vertex(spheres[hemi][pred.vertno[best]], tpl[hemi]["sphere"])
    pos = [None] * 3 if pred.pos is None else [float(v * 1e3) for v in pred.pos[best]]
    return dict(
        subject=sub,
        hemi=bids.HEMI_LABEL[hemi],
        vertex=int(pred.vertno[best]),
        score=float(score[best]),
        x=pos[0], y=pos[1], z=pos[2],
        template_vertex=t_vert,
        template_x=float(tpl[hemi]["anat"][t_vert, 0] * 1e3),
        template_y=float(tpl[hemi]["anat"][t_vert, 1] * 1e3),
        template_z=float(tpl[hemi]["anat"][t_vert, 2] * 1e3),
    )  # fmt: skip


def _table_sidecar(cfg) -> dict:
    return {
        "Description": "Best column (highest anatomical score) of every subject.",
        "subject": {"LongName": "BIDS subject label"},
        "hemi": {"LongName": "Hemisphere", "Levels": {"L": "left", "R": "right"}},
        "vertex": {"LongName": "FreeSurfer vertex of the subject"},
        "score": {"LongName": "Anatomical score", "Units": "arbitrary"},
        **{
            a: {"LongName": f"Pial {a} (subject surface RAS)", "Units": "mm"}
            for a in "xyz"
        },
        "template_vertex": {
            "LongName": f"Nearest {cfg.template} vertex on ?h.sphere.reg",
        },
        **{
            f"template_{a}": {
                "LongName": f"{a} of the template vertex on its pial (else white) "
                f"surface ({cfg.template} surface RAS)",
                "Units": "mm",
            }
            for a in "xyz"
        },
    }


def _add_report(report, cfg, tpl, means, best_rows) -> None:
    tags = _mbp.REPORT_TAGS
    images = []
    finite = np.concatenate([m[np.isfinite(m)] for m in means.values()])
    lim = float(np.percentile(np.abs(finite), 98)) if finite.size else 1.0
    for hemi in HEMIS:
        images += viz.plot_surface_map(
            tpl[hemi]["rr"], tpl[hemi]["tris"], means[hemi], title="mean score",
            cmap="RdBu_r", clim=(-lim, lim), hemi=hemi, label="anatomical score",
        )  # fmt: skip
    viz.add_figure(
        report, viz.image_grid(images, ncols=2),
        title="Group mean anatomical score",
        caption=f"Mean over {len(cfg.group_subjects)} subject(s) on {cfg.template} "
        "(nearest column on ?h.sphere.reg).",
        section=SECTION, tags=tags, replace=True,
    )  # fmt: skip
    header = ["subject", "hemi", "vertex", "score", "MRI (mm)", f"{cfg.template} vertex",
              f"{cfg.template} (mm)"]  # fmt: skip
    rows = [
        [r["subject"], r["hemi"], r["vertex"], r["score"],
         "n/a" if r["x"] is None else f"({r['x']:.1f}, {r['y']:.1f}, {r['z']:.1f})",
         r["template_vertex"],
         f"({r['template_x']:.1f}, {r['template_y']:.1f}, {r['template_z']:.1f})"]
        for r in best_rows
    ]  # fmt: skip
    report.add_html(
        html=viz.html_table(header, rows, caption="Best column of each subject."),
        title="Best column per subject", section=SECTION, tags=tags, replace=True,
    )  # fmt: skip


def get_config(*, config: SimpleNamespace, subjects, session) -> SimpleNamespace:
    from mne_bids_pipeline._config_utils import _bids_kwargs, get_fs_subjects_dir

    return SimpleNamespace(
        template=config.laminar_group_template,
        laminar_column_spacing=config.laminar_column_spacing,
        group_subjects=tuple(subjects),
        fs_subjects_dir=Path(get_fs_subjects_dir(config)),
        laminar_root=bids.deriv_root(config.bids_root, config.laminar_deriv_name),
        **_bids_kwargs(config=config),
    )


def _available_subjects(config, session, template_dir):
    from mne_bids_pipeline._config_utils import get_fs_subject, get_subjects_sessions

    root = bids.deriv_root(config.bids_root, config.laminar_deriv_name)
    out = []
    subjects = [s for s, ses in get_subjects_sessions(config).items() if session in ses]
    for sub in subjects:
        fs_sub = get_fs_subject(config=config, subject=sub, session=session)
        need = [P.table_fname(root, sub, session, config.laminar_column_spacing)]
        need += [template_dir.parent / fs_sub / "surf" / f"{h}.sphere.reg" for h in HEMIS]
        missing = [str(p) for p in need if not p.is_file()]
        if missing:
            msg = f"Skipping sub-{sub} in the group predictors, missing: {', '.join(missing)}"
            logger.info(**gen_log_kwargs(message=msg, subject=AVERAGE))
            continue
        out.append((sub, fs_sub))
    return out


def main(*, config: SimpleNamespace) -> None:
    """Run the group predictors step."""
    from mne_bids_pipeline._config_utils import get_fs_subjects_dir, get_sessions
    from mne_bids_pipeline._run import save_logs

    reason = _mbp.laminar_skip_reason(config)
    if reason:
        logger.info(**gen_log_kwargs(message=reason, subject=AVERAGE))
        return
    if hasattr(config.exec_params.overrides, "subjects"):
        msg = "Skipping, --subject is set …"
        logger.info(**gen_log_kwargs(message=msg, subject=AVERAGE))
        return
    template_dir = Path(get_fs_subjects_dir(config)) / config.laminar_group_template
    missing = [
        str(template_dir / "surf" / f"{h}.sphere.reg")
        for h in HEMIS
        if not (template_dir / "surf" / f"{h}.sphere.reg").is_file()
    ]
    if missing:
        msg = (
            f"Skipping, the group template {config.laminar_group_template!r} is not in "
            f"subjects_dir (missing {', '.join(missing)}); it is never downloaded. "
            "Copy it there (e.g. mne.datasets.fetch_fsaverage) or set "
            "laminar_group_template."
        )
        logger.info(**gen_log_kwargs(message=msg, subject=AVERAGE))
        return
    logs = []
    for session in get_sessions(config):
        subjects = _available_subjects(config, session, template_dir)
        if not subjects:
            msg = "Skipping, no subject has predictors and ?h.sphere.reg"
            logger.info(**gen_log_kwargs(message=msg, subject=AVERAGE, session=session))
            continue
        cfg = get_config(config=config, subjects=subjects, session=session)
        # a corrupt sub-average report (killed while MBP saved it): set aside
        _mbp.recover_mbp_files(config, [(cfg, AVERAGE, session)])
        logs.append(
            run_group_predictors(
                cfg=cfg, exec_params=config.exec_params, subject=AVERAGE, session=session
            )
        )
    save_logs(config=config, logs=logs)
