"""What the laminar step modules share: MBP config access, paths, report, outputs.

Step modules (``steps/laminar/_NN_*.py``) stay thin and call these helpers, so
that how a step finds its subject, its derivative folder, MBP's inputs and the
report is written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mne_bids import BIDSPath

from .. import bids
from .. import leadfield as L
from .. import surfaces as S

REPORT_TAGS = ("laminar",)


def laminar_skip_reason(config: SimpleNamespace) -> str | None:
    """Why the laminar stage does not run for this config, or None."""
    if not config.run_source_estimation:
        return "Skipping, run_source_estimation is set to False …"
    if not config.laminar_enable:
        return "Skipping, laminar_enable is set to False …"
    return None


def laminar_cfg(config: SimpleNamespace, subject: str, session: str | None) -> dict[str, Any]:
    """Entries every laminar step's ``get_config`` includes.

    MBP's ``_bids_kwargs`` (bids_root, deriv_root, datatype, ...) plus the
    FreeSurfer subject and subjects dir, and the laminar derivative root.
    Every value is a cache key and is pickled to workers, so only plain values.
    """
    from mne_bids_pipeline._config_utils import (
        _bids_kwargs,
        get_fs_subject,
        get_fs_subjects_dir,
    )

    return dict(
        fs_subject=get_fs_subject(config=config, subject=subject, session=session),
        fs_subjects_dir=Path(get_fs_subjects_dir(config)),
        laminar_root=bids.deriv_root(config.bids_root, config.laminar_deriv_name),
        ch_types=tuple(config.ch_types),
        **_bids_kwargs(config=config),
    )


def source_relpath(cfg: SimpleNamespace) -> str:
    """The raw BIDS dataset relative to the laminar derivative root."""
    import os

    rel = os.path.relpath(Path(cfg.bids_root).resolve(), Path(cfg.laminar_root).resolve())
    return Path(rel).as_posix()


def ensure_dataset(cfg: SimpleNamespace) -> Path:
    """Create/update the laminar derivative dataset's top-level files."""
    return bids.ensure_derivative_dataset(cfg.laminar_root, source_relpath=source_relpath(cfg))


def mbp_path(
    cfg: SimpleNamespace, subject: str, session: str | None, **update: Any
) -> BIDSPath:
    """A BIDSPath in MBP's own derivative folder, built like MBP builds them."""
    path = BIDSPath(
        subject=subject,
        session=session,
        acquisition=cfg.acq,
        recording=cfg.rec,
        space=cfg.space,
        datatype=cfg.datatype,
        root=cfg.deriv_root,
        extension=".fif",
        check=False,
    )
    return path.update(**update)


def source_info_path(
    cfg: SimpleNamespace,
    subject: str,
    session: str | None,
    *,
    task: str | None,
    path_task: str | None = None,
) -> BIDSPath:
    """The measurement info MBP's source steps read (one rule for both).

    ``source_info_path_update`` when set, else the cleaned ``rest``/``noise``
    raw of the noise covariance, else the evoked of ``task``. MBP's
    ``source/make_forward`` uses its first run's task for both ``task`` and
    ``path_task`` (the task of the path before the update),
    ``source/make_inverse`` the first task of the config and no path task.
    """
    if cfg.source_info_path_update is not None:
        update = dict(cfg.source_info_path_update)
    elif cfg.noise_cov in ("rest", "noise"):
        update = dict(processing="clean", suffix="raw", task=cfg.noise_cov)
    else:
        update = dict(suffix="ave", task=task)
    return mbp_path(cfg, subject, session, task=path_task, run=None).update(**update)


def fs_path(cfg: SimpleNamespace, *parts: str) -> Path:
    """A path inside the subject's FreeSurfer directory."""
    return Path(cfg.fs_subjects_dir) / cfg.fs_subject / Path(*parts)


def require_inputs(in_files: Mapping[str, Any], makers: Mapping[str, str]) -> None:
    """Raise a clear error for missing MBP inputs, naming the step that makes each."""
    missing = []
    for key, fname in in_files.items():
        path = Path(fname.fpath if isinstance(fname, BIDSPath) else fname)
        if not path.exists():
            maker = makers.get(key)
            hint = f" (made by MBP step {maker!r}; run it first)" if maker else ""
            missing.append(f"  {key}: {path}{hint}")
    if missing:
        raise FileNotFoundError(
            "Missing input file(s) for the laminar step:\n" + "\n".join(missing)
        )


def prep_out_files(
    *, cfg: SimpleNamespace, exec_params: SimpleNamespace, out_files: dict[str, Path]
) -> dict:
    """MBP's output bookkeeping for files under the laminar derivative root."""
    from mne_bids_pipeline._run import _prep_out_files_path

    out = {key: Path(val) for key, val in out_files.items()}
    gone = [str(path) for path in out.values() if not path.exists()]
    if gone:
        raise RuntimeError(
            "Files this step has just written are gone: " + ", ".join(gone) + ". "
            "Another run on the same dataset (another config?) changed the laminar "
            "outputs meanwhile. Run one configuration at a time per dataset (or give "
            "each its own laminar_deriv_name), then run this step again."
        )
    return _prep_out_files_path(
        exec_params=exec_params, out_files=out, check_relative=Path(cfg.laminar_root)
    )


def _set_aside(path: Path, what: str, error: BaseException) -> Path:
    """Move an unreadable MBP file aside (kept, never deleted) and say so."""
    import time

    from mne_bids_pipeline._logging import gen_log_kwargs, logger

    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    path.replace(aside)
    logger.warning(
        **gen_log_kwargs(
            message=f"{what} {path} could not be read ({type(error).__name__}: "
            f"{error}), probably because a run was killed while saving it. It was "
            f"moved to {aside} and a new one is started: the laminar steps rebuild "
            "their sections; re-run MBP's own steps to rebuild theirs, then delete "
            f"{aside.name}."
        )
    )
    return aside


def recover_mbp_files(config: SimpleNamespace, cfgs: list[tuple]) -> list[Path]:
    """Set aside MBP's report HDF5 files and log workbook when they are corrupt.

    A run killed while MBP saves ``sub-XX_report.h5`` or
    ``task-<tasks>_log.xlsx`` leaves a file that every later step fails to
    open. Called before a laminar step runs with ``(cfg, subject, session)``
    of each run; returns the files moved aside. A report this process saved
    or read, unchanged since, is not read again (:mod:`._report_cache`).
    """
    import zipfile

    from filelock import FileLock
    from mne_bids_pipeline._report import _report_path

    from . import _report_cache

    moved = []
    for cfg, subject, session in cfgs:
        fname = _report_path(cfg=cfg, subject=subject, session=session).fpath
        if fname.is_file() and _report_cache.known(fname) is None:
            import mne

            # MBP holds this lock while it reads and saves the report: never
            # judge a file another run is writing
            with FileLock(f"{fname}.lock"):
                try:
                    mne.open_report(fname)
                except Exception as exc:
                    moved.append(_set_aside(Path(fname), "MBP's report file", exc))
    all_tasks = "+".join(map(str, getattr(config, "all_tasks", []) or []))
    log = Path(config.deriv_root) / f"task-{all_tasks}_log.xlsx"
    if all_tasks and log.is_file():
        with FileLock(log.with_suffix(log.suffix + ".lock")):  # MBP's save_logs lock
            try:
                with zipfile.ZipFile(log) as zf:
                    bad = zf.testzip()
                if bad is not None:
                    raise zipfile.BadZipFile(f"member {bad} is corrupt")
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                moved.append(_set_aside(log, "MBP's log workbook", exc))
    return moved


def run_step(step_func: Any, *, config: SimpleNamespace, get_config: Any) -> None:
    """MBP's ``main`` body: one call per subject/session through MBP's backend."""
    from mne_bids_pipeline._config_utils import _get_ss
    from mne_bids_pipeline._logging import gen_log_kwargs, logger
    from mne_bids_pipeline._parallel import get_parallel_backend, parallel_func
    from mne_bids_pipeline._run import save_logs

    reason = laminar_skip_reason(config)
    if reason:
        logger.info(**gen_log_kwargs(message=reason))
        return
    ss = _get_ss(config=config)
    cfgs = [(get_config(config=config, subject=sub, session=ses), sub, ses) for sub, ses in ss]
    recover_mbp_files(config, cfgs)
    with get_parallel_backend(config.exec_params):
        parallel, run_func = parallel_func(
            step_func, exec_params=config.exec_params, n_iter=len(ss)
        )
        logs = parallel(
            run_func(
                cfg=get_config(config=config, subject=subject, session=session),
                exec_params=config.exec_params,
                subject=subject,
                session=session,
            )
            for subject, session in ss
        )
    # save_logs finds the step from the caller's frame (a file under steps/)
    save_logs(config=config, logs=logs)


def in_background(func, *args, **kwargs):
    """Start ``func(*args, **kwargs)`` (a library function) in the figure worker.

    Returns a :class:`~mne_laminar_plugin.report._worker.Pending`: its
    ``result()`` gives the value, computed here if the worker has not got to
    it (or there is none).
    """
    from ..report._worker import Pending

    return Pending(func, args, kwargs)


def results(pending) -> list:
    """The values of several pending calls (:func:`in_background`, ``viz.submit_*``), in order.

    Taken from the last, so that this process does what the figure worker
    has not got to (:func:`mne_laminar_plugin.report._worker.results`).
    """
    from ..report._worker import results as _results

    return _results(pending)


def surface_map_grid(surf, layer: int, values, **kwargs):
    """Start rendering ``values`` (one per column) on one layer of each hemisphere.

    The maps go to the render worker (:func:`~mne_laminar_plugin.report.viz.submit_surface_map`)
    at once; the step writes its files and draws its other figures meanwhile.
    ``kwargs`` are :func:`~mne_laminar_plugin.report.viz.plot_surface_map`'s
    (``title``, ``cmap``, ``clim``, ``label``).

    Returns
    -------
    collect : callable
        ``collect()`` waits for the images and returns them tiled, two per
        row (lateral, medial of lh then rh), or None when no hemisphere has
        columns.
    """
    from ..report import viz

    pending = []
    for hemi in S.HEMIS:
        sl = surf.columns(hemi)
        if sl.stop == sl.start or not len(surf.tris[hemi]):
            continue
        pending.append(viz.submit_surface_map(
            surf.layers[layer, sl], surf.tris[hemi], values[sl], hemi=hemi, **kwargs))  # fmt: skip

    def collect():
        images = [img for job in pending for img in job.result()]
        return viz.image_grid(images, ncols=2) if images else None

    return collect


def portable_roots(cfg) -> dict[str, Path]:
    """The folders :func:`~mne_laminar_plugin.bids.portable_path` names in outputs.

    FreeSurfer's ``subjects_dir`` first (it often lies inside the BIDS root),
    then the BIDS root: sidecars and provenance then say
    ``<subjects_dir>/sub-01/bem/...`` or ``<bids_root>/derivatives/...``.
    """
    return {"subjects_dir": Path(cfg.fs_subjects_dir), "bids_root": Path(cfg.bids_root)}


# ------------------------------------------- inputs shared by the laminar steps


def surface_files(cfg, subject, session) -> dict[str, Path]:
    return S.saved_fnames(
        cfg.laminar_root, subject, session, cfg.laminar_column_spacing, pial=True
    )

def leadfield_file(cfg, subject, session) -> Path:
    """The leadfield written by laminar/_02_leadfield (HDF5)."""
    return L.leadfield_fname(
        cfg.laminar_root, subject, session, datatype=cfg.datatype, kind="h5"
    )

def cov_files(cfg, subject, session) -> dict[str, Path]:
    """MBP's noise covariance, the info it goes with and its rank, if they exist."""
    if not cfg.laminar_predictors_whiten or cfg.noise_cov == "ad-hoc":
        return {}
    from mne_bids_pipeline._config_utils import get_noise_cov_bids_path

    cov = get_noise_cov_bids_path(cfg=cfg, subject=subject, session=session)
    if cfg.noise_cov == "custom":  # a callable, sanitized to "custom" for caching
        cov = cov.copy().update(processing="custom")
    # the info MBP's source/make_inverse uses with the noise covariance
    info = source_info_path(cfg, subject, session, task=cfg.all_tasks[0])
    rank = cov.copy().update(suffix="rank", extension=".json")
    files = {}
    if cov.fpath.is_file() and info.fpath.is_file():
        files = {"cov": cov.fpath, "cov_info": info.fpath}
        if rank.fpath.is_file():
            files["cov_rank"] = rank.fpath
    return files

def read_whitener(cfg, in_files):
    """Noise covariance, info and rank for whitening, or Nones."""
    import mne

    if "cov" not in in_files:
        return None, None, None
    cov = mne.read_cov(in_files.pop("cov"), verbose="error")
    info = mne.io.read_info(in_files.pop("cov_info"), verbose="error")
    rank = None
    if "cov_rank" in in_files:
        from mne_bids_pipeline._io import _read_json

        rank = _read_json(in_files.pop("cov_rank"))
    return cov, info, rank
