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


def spacing_n_vertices(spacing: str) -> int:
    """Vertices per hemisphere of MNE's ``ico#``/``oct#`` subdivision (``all``: 0)."""
    if spacing == "all":
        return 0
    grade = int(spacing[3:])
    if spacing.startswith("ico"):
        return 10 * 4**grade + 2
    return 4 ** (grade + 1) + 2


def check_spacing(spacing: str, n_vertices: int, fname) -> None:
    """A subsampling must be coarser than the mesh it subsamples (checked first:
    a too fine ``oct#``/``ico#`` makes MNE build a huge icosahedron)."""
    need = spacing_n_vertices(spacing)
    if need > n_vertices:
        raise ValueError(
            f"spacing={spacing!r} has {need} vertices per hemisphere, more than the "
            f"{n_vertices} of {fname}: a subsampling must be coarser than the mesh. "
            "Use a coarser spacing (e.g. 'oct6' or 'ico5') or spacing='all' (every "
            "vertex)."
        )


def check_label_file(fname: Path, what: str) -> int:
    """Check that ``fname`` is a FreeSurfer ``.label`` file; return its vertex count.

    Line 1 is a comment, line 2 the number of vertices, then one line per
    vertex (id x y z value). Raises naming ``what`` (the cortex label, an ROI).
    """
    try:
        lines = Path(fname).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise ValueError(f"{what}: could not read the label file {fname}: {exc}") from None
    why = None
    if len(lines) < 2:
        why = "it has fewer than 2 lines (a comment, then the number of vertices)"
    else:
        try:
            count = int(lines[1].strip())
        except ValueError:
            why = f"line 2 should be the number of vertices, got {lines[1][:40]!r}"
        else:
            rows = [ln for ln in lines[2:] if ln.strip()]
            if count < 0 or len(rows) != count:
                why = f"line 2 announces {count} vertices but {len(rows)} follow"
            elif any(len(r.split()) != 5 for r in rows):
                why = "every vertex line needs 5 numbers (id x y z value)"
            else:
                try:
                    ids = np.array([float(r.split()[0]) for r in rows])
                    np.array([[float(v) for v in r.split()[1:]] for r in rows])
                except ValueError:
                    why = "a vertex line holds something that is not a number"
                else:
                    if len(ids) and (np.any(ids < 0) or np.any(ids != np.round(ids))):
                        why = "vertex ids must be integers >= 0"
    if why is not None:
        raise ValueError(f"{what}: {fname} is not a FreeSurfer label file: {why}.")
    return count


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
        except Exception as exc:  # unreadable T1: say what is lost
            from mne.utils import warn

            warn(
                f"Could not read {t1} ({type(exc).__name__}: {exc}); the layer "
                "surfaces get no scanner-RAS transform from it"
                + (" (c_ras of the white surface is used instead)" if "cras" in info
                   else "") + ". Repair or restore mri/T1.mgz to keep it."
            )
    if "cras" in info:
        xf = np.eye(4)
        xf[:3, 3] = np.asarray(info["cras"], float)
        return xf, "c_ras of the white surface's volume geometry (translation only)"
    return None, None
