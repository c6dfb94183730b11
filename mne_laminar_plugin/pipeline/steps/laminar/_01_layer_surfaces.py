"""Layer surfaces.

Cortical layer surfaces between white and pial with column correspondence:
``laminar_n_layers`` GIFTI surfaces per hemisphere (pial = layer 00), the
column orientations, the columns table, and a "Laminar surfaces" report
section.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from mne_bids_pipeline._logging import gen_log_kwargs, logger
from mne_bids_pipeline._report import _open_report
from mne_bids_pipeline._run import failsafe_run

from ....report import viz
from ....surfaces import DROP_REASONS, HEMIS, LaminarSurfaces, lameg_inputs, layer_order
from ... import _mbp

SECTION = "Laminar surfaces"


def get_input_fnames_layer_surfaces(
    *, cfg: SimpleNamespace, subject: str, session: str | None
) -> dict[str, Path]:
    """The FreeSurfer files the layers depend on (MBP reruns when one changes)."""
    if cfg.laminar_lameg_layers:  # a laMEG layer set instead of building layers
        return lameg_inputs(_lameg_folder(cfg), subjects_dir=cfg.fs_subjects_dir,
                            subject=cfg.fs_subject)  # fmt: skip
    in_files: dict[str, Path] = {}
    for hemi in HEMIS:
        kinds = ["white", "pial"]
        if cfg.laminar_column_spacing != "all":
            kinds.append("sphere")
        for kind in kinds:
            in_files[f"{hemi}_{kind}"] = _mbp.fs_path(cfg, "surf", f"{hemi}.{kind}")
        label = _mbp.fs_path(cfg, "label", f"{hemi}.cortex.label")
        annot = _mbp.fs_path(cfg, "label", f"{hemi}.aparc.annot")
        mask = cfg.laminar_cortex_mask
        if mask == "cortex_label" or (mask == "auto" and label.is_file()):
            in_files[f"{hemi}_cortex_label"] = label
        elif mask == "aparc" or (mask == "auto" and annot.is_file()):
            in_files[f"{hemi}_aparc"] = annot
    t1 = _mbp.fs_path(cfg, "mri", "T1.mgz")
    if t1.is_file():  # tkRAS -> scanner RAS transform and the report's slices
        in_files["t1"] = t1
    return in_files


@failsafe_run(get_input_fnames=get_input_fnames_layer_surfaces)
def run_layer_surfaces(
    *,
    cfg: SimpleNamespace,
    exec_params: SimpleNamespace,
    subject: str,
    session: str | None,
    in_files: dict,
) -> dict:
    """Compute, save and report the layer surfaces of one subject/session."""
    if cfg.laminar_lameg_layers:
        surf = _from_lameg(cfg)
        in_files.clear()  # every file of the laMEG set (read by from_lameg)
        figures = _start_figures(surf, cfg)
        _mbp.ensure_dataset(cfg)
        paths = surf.save(cfg.laminar_root, subject, session, verbose=False)
        with _open_report(
            cfg=cfg, exec_params=exec_params, subject=subject, session=session
        ) as report:
            _add_report(report, surf, cfg, figures)
        out_files = {path.name: path for path in paths}
        return _mbp.prep_out_files(cfg=cfg, exec_params=exec_params, out_files=out_files)
    # missing or broken FreeSurfer files raise errors naming them (from_freesurfer)
    msg = (
        f"Computing {cfg.laminar_n_layers} {cfg.laminar_depth_method} layer surfaces "
        f"(columns {cfg.laminar_column_spacing}, orientation {cfg.laminar_orientation})"
    )
    logger.info(**gen_log_kwargs(message=msg))
    surf = LaminarSurfaces.from_freesurfer(
        cfg.fs_subject,
        cfg.fs_subjects_dir,
        n_layers=cfg.laminar_n_layers,
        method=cfg.laminar_depth_method,
        spacing=cfg.laminar_column_spacing,
        orientation=cfg.laminar_orientation,
        cortex_mask=cfg.laminar_cortex_mask,
        min_thickness=cfg.laminar_min_thickness,
        verbose=False,
    )
    qc = surf.qc
    msg = (
        f"Kept {qc['n_kept']['lh']} lh + {qc['n_kept']['rh']} rh columns; dropped "
        f"{qc['dropped_total'] or 'none'}; crossings {qc['crossings']}, thin columns "
        f"{qc['thin_columns']}, zero-length links {qc['zero_length_link']}"
    )
    logger.info(**gen_log_kwargs(message=msg))
    figures = _start_figures(surf, cfg)  # drawn while the files are written
    # save writes the dataset-level files too (with the layers' descriptions)
    paths = surf.save(
        cfg.laminar_root, subject, session, source_relpath=_mbp.source_relpath(cfg),
        verbose=False,
    )  # fmt: skip
    for hemi in HEMIS:  # all read by from_freesurfer
        for kind in ("white", "pial", "sphere", "cortex_label", "aparc"):
            in_files.pop(f"{hemi}_{kind}", None)
    in_files.pop("t1", None)  # read by from_freesurfer (scanner RAS) and the report
    assert not in_files, in_files

    with _open_report(
        cfg=cfg, exec_params=exec_params, subject=subject, session=session
    ) as report:
        logger.info(**gen_log_kwargs(message="Adding layer surfaces to the report"))
        _add_report(report, surf, cfg, figures)

    out_files = {path.name: path for path in paths}
    return _mbp.prep_out_files(cfg=cfg, exec_params=exec_params, out_files=out_files)


def _lameg_folder(cfg: SimpleNamespace) -> Path:
    if cfg.laminar_column_spacing != "lameg":
        raise ValueError(
            f"laminar_lameg_layers is set ({cfg.laminar_lameg_layers!r}) but "
            f"laminar_column_spacing is {cfg.laminar_column_spacing!r}: set "
            "laminar_column_spacing = 'lameg' to use the laMEG layer set's columns"
        )
    return Path(cfg.laminar_lameg_layers.format(
        subjects_dir=cfg.fs_subjects_dir, subject=cfg.fs_subject))  # fmt: skip


def _from_lameg(cfg: SimpleNamespace) -> LaminarSurfaces:
    folder = _lameg_folder(cfg)
    surf = LaminarSurfaces.from_lameg(folder, subjects_dir=cfg.fs_subjects_dir,
                                      subject=cfg.fs_subject, verbose=False)  # fmt: skip
    info = surf.sources["lameg"]
    msg = (
        f"Read the laMEG layer set {folder}: {surf.n_layers} layers "
        f"({', '.join(info['layers'])}), {surf.n_columns} columns; frame: "
        f"{info['frame']}; orientations: {info['orientations']}"
    )
    logger.info(**gen_log_kwargs(message=msg))
    if surf.n_layers != cfg.laminar_n_layers:
        msg = (f"The laMEG set has {surf.n_layers} layers; laminar_n_layers = "
               f"{cfg.laminar_n_layers} is not used")  # fmt: skip
        logger.warning(**gen_log_kwargs(message=msg))
    return surf


def _start_figures(surf: LaminarSurfaces, cfg: SimpleNamespace) -> dict:
    """Start the slices and the thickness map in the render worker."""
    t1 = _mbp.fs_path(cfg, "mri", "T1.mgz")
    mid = surf.n_layers // 2
    thick = surf.thickness()
    clim = tuple(np.percentile(thick, [2, 98])) if len(thick) else None
    return dict(
        t1=t1.is_file(),
        slices=viz.submit_figure(
            viz.plot_layer_slices, surf.layers, surf.combined_tris(),
            t1_fname=t1 if t1.is_file() else None,
            title=f"{surf.n_layers} {surf.method} layers of {cfg.fs_subject} (tkRAS)",
        ),
        thickness=_mbp.surface_map_grid(surf, mid, thick, title=f"layer {mid:02d}",
                                        cmap="viridis", clim=clim, label="thickness (mm)"),
    )  # fmt: skip


def _add_report(report, surf: LaminarSurfaces, cfg: SimpleNamespace, figures) -> None:
    """The "Laminar surfaces" section; ``figures`` from :func:`_start_figures`."""
    tags = _mbp.REPORT_TAGS
    viz.add_figure(
        report, figures["slices"].result(),
        title="Layer surfaces: slices",
        caption=(
            f"Intersections of every layer surface ({layer_order(surf.n_layers)}) "
            "with coronal and axial planes"
            + (" through T1.mgz" if figures["t1"] else "")
            + f"; drawn on the column mesh (spacing {surf.spacing}), as saved."
        ),
        section=SECTION,
        tags=tags,
        replace=True,
    )
    mid = surf.n_layers // 2
    grid = figures["thickness"]()
    if grid is not None:
        viz.add_figure(
            report, grid,
            title="Layer surfaces: one layer",
            caption=(
                f"Layer {mid:02d} of {surf.n_layers} (depth fraction "
                f"{surf.fractions[mid]:.2f} from white), coloured by the column's "
                "white-pial thickness; holes are the removed medial wall."
            ),
            section=SECTION,
            tags=tags,
            replace=True,
        )
    report.add_html(
        html=_summary_table(surf),
        title="Layer surfaces: summary",
        section=SECTION,
        tags=tags,
        replace=True,
    )


def _summary_table(surf: LaminarSurfaces) -> str:
    qc = surf.qc
    thick = surf.thickness()
    rows = [
        ("Layers", f"{surf.n_layers} ({surf.method}; {layer_order(surf.n_layers, brief=True)})"),
        ("Column spacing", surf.spacing),
        ("Orientation", f"{surf.orientation} ({surf.orientation_sign})"),
    ]
    for hemi in HEMIS:
        sl = surf.columns(hemi)
        dropped = qc.get("dropped", {}).get(hemi, {})
        why = ", ".join(f"{n} {r}" for r, n in dropped.items()) or "none"
        rows += [
            (
                f"Columns kept ({hemi})",
                f"{qc.get('n_kept', {}).get(hemi, sl.stop - sl.start)} of "
                f"{qc.get('n_candidates', {}).get(hemi, '?')}",
            ),
            (f"Columns dropped ({hemi})", why),
            (f"Medial-wall mask ({hemi})", qc.get("cortex_mask", {}).get(hemi, "?")),
            (
                f"Median thickness ({hemi})",
                f"{np.median(thick[sl]):.2f} mm" if sl.stop > sl.start else "n/a",
            ),
        ]
    rows += [
        ("Layer crossings (columns)", qc.get("crossings", "?")),
        ("Pial inside white (columns)", qc.get("inverted_columns", "?")),
        (
            f"Thin columns (< {qc.get('min_thickness_mm', '?')} mm)",
            qc.get("thin_columns", "?"),
        ),
        ("Zero-length link vectors", qc.get("zero_length_link", "?")),
    ]
    caption = "Drop reasons: " + "; ".join(f"{k}: {v}" for k, v in DROP_REASONS.items())
    return viz.html_table(("Quantity", "Value"), rows, caption=caption)


def get_config(
    *, config: SimpleNamespace, subject: str, session: str | None = None
) -> SimpleNamespace:
    return SimpleNamespace(
        laminar_n_layers=config.laminar_n_layers,
        laminar_depth_method=config.laminar_depth_method,
        laminar_column_spacing=config.laminar_column_spacing,
        laminar_orientation=config.laminar_orientation,
        laminar_cortex_mask=config.laminar_cortex_mask,
        laminar_min_thickness=config.laminar_min_thickness,
        laminar_lameg_layers=config.laminar_lameg_layers,
        **_mbp.laminar_cfg(config, subject, session),
    )


def main(*, config: SimpleNamespace) -> None:
    """Run the layer surfaces step."""
    _mbp.run_step(run_layer_surfaces, config=config, get_config=get_config)
