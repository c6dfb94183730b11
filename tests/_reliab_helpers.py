"""Shared builders of the reliability tests (issue 14): small real files."""

from __future__ import annotations

import errno
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


class FullDisk:
    """A binary file object whose writes fail with ENOSPC after ``limit`` bytes.

    Reproduces a full disk at the file-object level (no tiny file system is
    available without root): writers that open files through ``open`` get
    this object instead, exactly like the OS would refuse the write.
    """

    def __init__(self, path, mode="wb", limit=1000):
        self._f = open(path, mode)  # noqa: SIM115
        self._n = 0
        self._limit = limit

    def write(self, data):
        self._n += len(data)
        if self._n > self._limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def parts(root: Path) -> list[Path]:
    """Every temporary left under ``root``."""
    return sorted(p for p in Path(root).rglob(".part-*"))


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}
