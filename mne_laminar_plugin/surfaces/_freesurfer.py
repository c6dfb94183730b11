"""Reading a FreeSurfer subject.

Surfaces (with clear errors naming the file), the source-space subsampling
of the columns, and the tkRAS -> scanner RAS transform of ``mri/T1.mgz``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .._conventions import (
    HEMIS,
)


# --------------------------------------------------------------- FS reading
def _read_surface(fname: Path, what: str):
    """Read a FreeSurfer surface (mm), checking existence and finite values."""
    import nibabel as nib

    fname = Path(fname)
    if not fname.is_file():
        raise FileNotFoundError(
            f"FreeSurfer {what} surface not found: {fname}. Check subjects_dir and "
            "the subject name, and that FreeSurfer's recon-all finished."
        )
    try:
        with warnings.catch_warnings():  # surfaces without volume geometry: harmless
            warnings.filterwarnings("ignore", "No volume information", UserWarning)
            warnings.filterwarnings("ignore", "Unknown extension code", UserWarning)
            rr, tris, info = nib.freesurfer.read_geometry(str(fname), read_metadata=True)
    except Exception as exc:
        raise ValueError(
            f"Could not read {fname} as a FreeSurfer triangle surface ({exc}); "
            "the file is corrupt or not a surface, restore it or re-run recon-all."
        ) from None
    rr = np.asarray(rr, np.float64)
    bad = ~np.isfinite(rr).all(axis=1)
    if bad.any():
        idx = np.where(bad)[0]
        raise ValueError(
            f"{fname} has {len(idx)} vertices with NaN or infinite coordinates "
            f"(first: vertex {idx[0]}); the surface is corrupt, restore it or re-run "
            "FreeSurfer."
        )
    tris = np.asarray(tris, np.int64)
    if len(tris) and (tris.min() < 0 or tris.max() >= len(rr)):
        raise ValueError(
            f"{fname} has faces referring to vertices outside 0..{len(rr) - 1}; the "
            "surface is corrupt."
        )
    return rr, tris, dict(info) if info else {}


def _check_pair(white, pial, fw, fp):
    if len(white[0]) != len(pial[0]):
        raise ValueError(
            f"White and pial surfaces differ in vertex count: {fw} has "
            f"{len(white[0])} vertices, {fp} has {len(pial[0])}. Layers need "
            "vertex correspondence: both must come from the same recon-all run."
        )
    if white[1].shape != pial[1].shape or not np.array_equal(white[1], pial[1]):
        raise ValueError(
            f"White and pial surfaces have different faces: {fw} vs {fp}. Layers "
            "need the same topology: both must come from the same recon-all run."
        )


def _subsample(subject, subjects_dir: Path, spacing):
    """Per hemi: (candidate vertno, triangles in full-resolution vertex ids)."""
    import mne

    src = mne.setup_source_space(
        subject, spacing=spacing, surface="white", add_dist=False,
        subjects_dir=subjects_dir, verbose=False,
    )  # fmt: skip
    return {
        hemi: (np.asarray(s["vertno"], np.int64), np.asarray(s["use_tris"], np.int64))
        for hemi, s in zip(HEMIS, src)
    }


def _scanner_xform(subj_dir: Path, info: dict):
    """4x4 (mm) from surface RAS (tkRAS) to scanner RAS, and how it was found."""
    t1 = subj_dir / "mri" / "T1.mgz"
    if t1.is_file():
        import nibabel as nib

        try:
            hdr = nib.load(t1).header
            xf = hdr.get_vox2ras() @ np.linalg.inv(hdr.get_vox2ras_tkr())
            return xf, "mri/T1.mgz (vox2ras @ inv(vox2ras_tkr))"
        except Exception:  # pragma: no cover - unreadable T1: fall through
            pass
    if "cras" in info:
        xf = np.eye(4)
        xf[:3, 3] = np.asarray(info["cras"], float)
        return xf, "c_ras of the white surface's volume geometry (translation only)"
    return None, None
