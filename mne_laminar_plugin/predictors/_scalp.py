"""The scalp surface of the ``distance`` and ``radiality`` predictors.

Finding it in a FreeSurfer subject, reading and checking it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mne.utils import _check_option, _validate_type, logger, verbose


# ======================================================================= scalp
@dataclass
class Scalp:
    """A scalp surface in metres, MRI (surface RAS) frame.

    Attributes
    ----------
    rr : array, shape (n_vertices, 3)
        Vertices (m).
    tris : array, shape (n_triangles, 3)
        Triangles.
    source : str
        Where the surface came from (file name or a description).
    """

    rr: np.ndarray
    tris: np.ndarray
    source: str = "array"

    def __repr__(self) -> str:
        return (
            f"<Scalp | {len(self.rr)} vertices, {len(self.tris)} triangles, "
            f"from {self.source}>"
        )


def scalp_files(subject: str, subjects_dir: str | os.PathLike, kind: str) -> list[Path]:
    """The files :func:`read_scalp` tries for a subject, in order (see there)."""
    bem = Path(subjects_dir) / subject / "bem"
    head = [
        bem / f"{subject}-head-dense.fif",
        bem / f"{subject}-head.fif",
        bem / f"{subject}-head-medium.fif",
        bem / f"{subject}-head-sparse.fif",
    ]
    skin = [bem / "outer_skin.surf", bem / "watershed" / f"{subject}_outer_skin_surface"]
    return skin + head if kind == "outer_skin" else head


@verbose
def read_scalp(
    subject: str,
    subjects_dir: str | os.PathLike | None = None,
    kind: str = "outer_skin",
    *,
    verbose: Any = None,
) -> Scalp:
    """Read a subject's scalp surface (metres, MRI frame).

    Parameters
    ----------
    subject : str
        FreeSurfer subject.
    subjects_dir : path-like | None
        FreeSurfer subjects directory (None: ``SUBJECTS_DIR``).
    kind : ``"outer_skin"`` | ``"head"``
        ``"outer_skin"``: the BEM ``bem/outer_skin.surf`` (or the watershed
        outer skin), else the head surface. ``"head"``: MNE's head surface
        ``bem/<subject>-head-dense.fif``, else ``-head.fif``, ``-head-medium``,
        ``-head-sparse``.
    %(verbose)s

    Returns
    -------
    scalp : Scalp
        The surface.
    """
    import mne

    _validate_type(subject, str, "subject")
    _check_option("kind", kind, ("outer_skin", "head"))
    subjects_dir = Path(mne.utils.get_subjects_dir(subjects_dir, raise_error=True))
    candidates = scalp_files(subject, subjects_dir, kind)
    for fname in candidates:
        if fname.is_file():
            logger.info(f"    Scalp surface: {fname}")
            return _read_scalp_file(fname)
    looked = "\n".join(f"  {c}" for c in candidates)
    raise FileNotFoundError(
        f"No scalp surface (kind={kind!r}) for subject {subject!r}; looked for:\n"
        f"{looked}\nMake one with MNE-BIDS-Pipeline's 'freesurfer' stage or "
        "mne.bem.make_watershed_bem / make_scalp_surfaces, or pass scalp=(rr, "
        "tris) in metres (MRI frame)."
    )


def _read_scalp_file(fname: Path) -> Scalp:
    import mne

    name = fname.name
    if name.endswith((".fif", ".fif.gz")):
        surfs = mne.read_bem_surfaces(fname, verbose="error")
        surf = surfs[0]
        if len(surfs) > 1:  # a BEM model file: the outermost is the scalp
            ids = [s.get("id") for s in surfs]
            head_id = mne.io.constants.FIFF.FIFFV_BEM_SURF_ID_HEAD
            if head_id in ids:
                surf = surfs[ids.index(head_id)]
        return _scalp_from_dict(surf, source=str(fname))
    rr, tris = mne.read_surface(fname, verbose="error")[:2]
    return _check_scalp(np.asarray(rr, float) / 1000.0, tris, source=str(fname))


def _scalp_from_dict(surf: Mapping, source: str) -> Scalp:
    from mne.io.constants import FIFF

    if "rr" not in surf or "tris" not in surf:
        raise ValueError(
            f"scalp dict from {source} needs keys 'rr' and 'tris', got {sorted(surf)}"
        )
    frame = surf.get("coord_frame", FIFF.FIFFV_COORD_MRI)
    if frame is not None and int(frame) != FIFF.FIFFV_COORD_MRI:
        raise ValueError(
            f"scalp surface from {source} is in coordinate frame {int(frame)}, "
            f"expected MRI ({FIFF.FIFFV_COORD_MRI}); transform it to MRI first."
        )
    return _check_scalp(surf["rr"], surf["tris"], source=source)


def _check_scalp(rr, tris, source: str) -> Scalp:
    rr = np.asarray(rr, float)
    tris = np.asarray(tris, np.int64)
    if rr.ndim != 2 or rr.shape[1] != 3 or tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(
            f"scalp from {source}: rr must be (n, 3) and tris (m, 3), got "
            f"{rr.shape} and {tris.shape}"
        )
    if len(tris) == 0 or tris.min() < 0 or tris.max() >= len(rr):
        raise ValueError(f"scalp from {source}: tris do not index its {len(rr)} vertices")
    if not np.isfinite(rr).all():
        raise ValueError(f"scalp from {source} has non-finite vertex coordinates")
    extent = np.ptp(rr, axis=0).max()
    if extent > 1.0:
        raise ValueError(
            f"scalp from {source} spans {extent:g} units: it looks like mm, expected "
            "metres (MRI frame); divide the coordinates by 1000."
        )
    return Scalp(rr=rr, tris=tris, source=source)


def _get_scalp(scalp: Any, surfaces: Any) -> Scalp:
    if isinstance(scalp, Scalp):
        return scalp
    if scalp is None:
        import mne

        subject = getattr(surfaces, "subject", None)
        sdir = mne.utils.get_subjects_dir(getattr(surfaces, "subjects_dir", None))
        if subject is None or sdir is None:
            raise ValueError(
                "scalp is required (the surfaces give no FreeSurfer subject and "
                "subjects_dir to find one): give (rr, tris) in metres (MRI frame), "
                "an MNE surface dict, a path to bem/outer_skin.surf or "
                "bem/<subject>-head*.fif, or read_scalp(subject, subjects_dir)."
            )
        return read_scalp(subject, sdir)
    if isinstance(scalp, str | os.PathLike):
        fname = Path(scalp)
        if not fname.is_file():
            raise FileNotFoundError(f"scalp surface file not found: {fname}")
        return _read_scalp_file(fname)
    if isinstance(scalp, Mapping):
        return _scalp_from_dict(scalp, source="dict")
    if isinstance(scalp, tuple | list) and len(scalp) == 2:
        return _check_scalp(scalp[0], scalp[1], source="(rr, tris)")
    raise TypeError(
        "scalp must be (rr, tris) in metres, an MNE surface dict, a path or a "
        f"Scalp, got {type(scalp).__name__}"
    )
