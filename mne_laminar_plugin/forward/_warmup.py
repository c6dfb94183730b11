"""Compile the pipeline's numba kernels ahead of use (MNE's and this package's).

MNE and the fast engine compile their numba kernels the first time they run
and keep them in numba's on-disk cache. On a new installation that first
compile costs about 20 s of the first run (MNE's BEM forward kernels alone
about 8 s), paid inside MBP's forward step and the laminar leadfield step.
:func:`warm_up_kernels` runs the same public functions on a tiny problem
(a coarse single-shell BEM of MNE's bundled fsaverage inner skull, a handful
of sources, the demo's Vectorview-like sensors), so that the kernels are
compiled, with the argument types the pipeline uses, where nothing waits for
them: ``mne-laminar demo`` asks its figure worker to do it while the data are
built and MBP preprocesses. When the cache is warm it only loads it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def warm_up_kernels(system: str = "vectorview") -> list[str]:
    """Run the pipeline's numba-compiled code once on a tiny problem.

    Parameters
    ----------
    system : str
        The MEG array of :func:`mne_laminar_plugin.demo.make_meg_info` (its
        coil types select the kernels' code paths).

    Returns
    -------
    done : list of str
        What ran; a part that failed is left out (the pipeline then compiles
        it when it needs it, as without a warm-up).
    """
    import mne

    from .._demo_sensors import _mne_data
    from ..demo import make_meg_info

    done = []
    with mne.utils.use_log_level("error"), tempfile.TemporaryDirectory() as tmp:
        try:
            # the times of a raw recording (MBP's preprocessing, first)
            mne.io.RawArray(np.zeros((1, 10)), mne.create_info(1, 100.0)).times
            done.append("raw")
            # surface kernels: normals, areas (read_bem_surfaces completes the surface)
            inner = mne.read_bem_surfaces(
                _mne_data() / "fsaverage" / "fsaverage-inner_skull-bem.fif")[0]  # fmt: skip
            done.append("surfaces")
            # a subject with that inner skull: MBP's BEM model and solution code, coarse
            subject = Path(tmp) / "warmup"
            (subject / "bem").mkdir(parents=True)
            mne.write_surface(subject / "bem" / "inner_skull.surf", inner["rr"] * 1e3,
                              inner["tris"])  # fmt: skip
            model = mne.make_bem_model("warmup", ico=2, conductivity=(0.3,),
                                       subjects_dir=tmp)  # fmt: skip
            bem = mne.make_bem_solution(model)
            done.append("bem")
            # MNE's forward: inside test, infinite-medium and BEM kernels
            info = make_meg_info(system=system)
            trans = mne.transforms.Transform("head", "mri", np.eye(4))
            rr = np.array([[0.0, 0.0, 0.04], [0.02, 0.0, 0.05], [-0.02, 0.01, 0.05]])
            nn = np.tile([0.0, 0.0, 1.0], (len(rr), 1))
            src = mne.setup_volume_source_space(pos=dict(rr=rr, nn=nn))
            mne.make_forward_solution(info, trans, src, bem, eeg=False, mindist=0.0)
            done.append("mne forward")
            # co-registration from landmarks (MBP's forward step, through mne-bids)
            pts = np.array([[0.07, 0, 0], [0, 0.09, 0], [-0.07, 0, 0], [0, 0, 0.1]])
            mne.transforms.fit_matched_points(pts, pts + 0.001)
            done.append("coregistration")
            # this package's engine: inside test and fixed-orientation gain
            from ._engine import check_inside, compute_gain

            check_inside(bem, trans, rr)
            compute_gain(info, trans, bem, rr, nn, eeg=False)
            done.append("fast engine")
        except Exception as exc:  # what is left compiles when the pipeline needs it
            from mne.utils import logger

            logger.info(f"numba warm-up stopped after {done or 'nothing'}: {exc}")
    return done
