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


def ensure_dataset(cfg: SimpleNamespace) -> Path:
    """Create/update the laminar derivative dataset's top-level files."""
    import os

    rel = Path(os.path.relpath(Path(cfg.bids_root).resolve(), Path(cfg.laminar_root).resolve()))
    return bids.ensure_derivative_dataset(cfg.laminar_root, source_relpath=rel.as_posix())


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
    return _prep_out_files_path(
        exec_params=exec_params, out_files=out, check_relative=Path(cfg.laminar_root)
    )


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
