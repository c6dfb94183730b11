"""Shared builders of the reliability tests (issue 14): small real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def sphere_forward(fname: Path, *, n_sources: int = 4):
    """A real MNE forward (sphere model, the demo's 306 sensors) written to ``fname``."""
    import mne

    from mne_laminar_plugin.demo import make_meg_info

    info = make_meg_info()
    info = mne.pick_info(info, mne.pick_types(info, meg=True))
    sphere = mne.make_sphere_model((0.0, 0.0, 0.04), 0.09, verbose=False)
    rng = np.random.default_rng(0)
    rr = np.c_[rng.uniform(-0.02, 0.02, (n_sources, 2)), rng.uniform(0.03, 0.06, n_sources)]
    nn = rng.normal(size=(n_sources, 3))
    nn /= np.linalg.norm(nn, axis=1, keepdims=True)
    src = mne.setup_volume_source_space(pos=dict(rr=rr, nn=nn), sphere=sphere, verbose=False)
    fwd = mne.make_forward_solution(info, None, src, sphere, eeg=False, verbose=False)
    mne.write_forward_solution(fname, fwd, overwrite=True, verbose=False)
    return fwd


def write_leadfield_set(folder: Path, data, side: dict, *, fsize_limit_before_fif=None):
    """The leadfield step's set: HDF5 + sidecar + FIF + sidecar, as one group.

    ``fsize_limit_before_fif`` (bytes): a real file-size limit
    (``RLIMIT_FSIZE``) set after the HDF5 file is written and before the FIF,
    so that MNE's FIF write fails in the middle of the file.
    """
    import resource

    from mne_laminar_plugin import bids
    from mne_laminar_plugin import leadfield as L

    h5 = folder / "sub-01_desc-laminar_leadfield.h5"
    fif = folder / "sub-01_desc-laminar_fwd.fif"
    with bids.atomic_group():
        L.write_leadfield(h5, data, overwrite=True)
        side = L.with_checksum(dict(side, ForwardFile=fif.name), h5)
        bids.write_json(bids.sidecar(h5), side)
        if fsize_limit_before_fif is not None:
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit_before_fif, hard))
        L.write_forward_fif(fif, data, overwrite=True)
        bids.write_json(bids.sidecar(fif), dict(side, LeadfieldFile=h5.name))
    return h5, fif


def parts(root: Path) -> list[Path]:
    """Every temporary left under ``root``."""
    return sorted(p for p in Path(root).rglob(".part-*"))


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}
