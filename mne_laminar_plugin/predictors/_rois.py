"""Regions of interest: reading labels and volumes, and the columns inside them."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from mne.utils import _validate_type, verbose


# ======================================================================== ROIs
def roi_name(roi: Any) -> str:
    """Name of an ROI specification (the string, or the label's name)."""
    if isinstance(roi, str | os.PathLike):
        return str(roi)
    name = getattr(roi, "name", None)
    if not name:
        raise ValueError(f"ROI {roi!r} has no name")
    return str(name)


def roi_column_name(name: str) -> str:
    """TSV column of ROI membership: ``roi_<name>`` in snake case."""
    base = os.path.basename(str(name))
    for ext in (".label", ".annot"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return "roi_" + re.sub(r"[^0-9a-zA-Z]+", "_", base).strip("_").lower()


@verbose
def read_roi(
    roi: Any,
    subject: str | None = None,
    subjects_dir: str | os.PathLike | None = None,
    *,
    verbose: Any = None,
):
    """Read a region of interest as an :class:`mne.Label`.

    Parameters
    ----------
    roi : str | path-like | mne.Label
        ``"<atlas>:<hemi>.<name>"`` (a label of the FreeSurfer annotation
        ``label/<hemi>.<atlas>.annot``, e.g. ``"aparc:lh.precentral"``), a
        label file (absolute, or relative to the subject's folder, e.g.
        ``"label/lh.V1.label"``, or to its ``label/`` folder), or a Label.
    subject, subjects_dir
        FreeSurfer subject, for annotations and subject-relative files.
    %(verbose)s

    Returns
    -------
    label : mne.Label | mne.BiHemiLabel
        The ROI.
    """
    import mne

    if isinstance(roi, mne.Label | mne.BiHemiLabel):
        return roi
    _validate_type(roi, (str, os.PathLike), "roi")
    spec = str(roi)
    annot = _annot_spec(spec)
    if annot is not None:
        atlas, hemi, name = annot
        if subject is None:
            raise ValueError(f"ROI {spec!r} is an annotation label: subject is required")
        fname = roi_files(spec, subject, subjects_dir)[0]
        if not fname.is_file():
            raise FileNotFoundError(
                f"ROI {spec!r}: annotation file not found: {fname}"
            )
        import nibabel as nib

        labels, _, names = nib.freesurfer.read_annot(str(fname))
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        if name not in names:
            raise ValueError(
                f"ROI {spec!r}: no label {name!r} in {fname.name}; it has "
                f"{len(names)} labels, e.g. {names[:8]}"
            )
        vertices = np.flatnonzero(labels == names.index(name))
        return mne.Label(vertices, hemi=hemi, name=spec, subject=subject)
    candidates = roi_files(spec, subject, subjects_dir)
    for fname in candidates:
        if fname.is_file():
            from ..surfaces._freesurfer import check_label_file

            if not check_label_file(fname, f"ROI {spec!r}"):
                raise ValueError(f"ROI {spec!r}: the label file {fname} has no vertices.")
            label = mne.read_label(fname, subject=subject)
            label.name = spec
            return label
    looked = "\n".join(f"  {c}" for c in candidates)
    raise FileNotFoundError(
        f"ROI {spec!r}: not an '<atlas>:<hemi>.<name>' annotation label and no label "
        f"file found; looked for:\n{looked}"
    )


def _annot_spec(spec: str) -> tuple[str, str, str] | None:
    """``(atlas, hemi, name)`` of an ``"<atlas>:<hemi>.<name>"`` ROI, else None."""
    m = re.fullmatch(r"([^:/\\]+):(lh|rh)\.(.+)", spec)
    return m.groups() if m and not Path(spec).is_file() else None


def roi_files(
    roi: str | os.PathLike,
    subject: str | None = None,
    subjects_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """The files an ROI specification may be read from, in the order tried.

    For ``"<atlas>:<hemi>.<name>"`` the annotation
    ``<subjects_dir>/<subject>/label/<hemi>.<atlas>.annot``; for a label file,
    the path itself, then relative to the subject's folder and its ``label/``
    folder, each also with ``.label`` appended. :func:`read_roi` reads the
    first that exists (and MBP's steps track it).

    Parameters
    ----------
    roi : str | path-like
        See :func:`read_roi`.
    subject, subjects_dir
        FreeSurfer subject.

    Returns
    -------
    candidates : list of Path
    """
    import mne

    spec = str(roi)
    annot = _annot_spec(spec)
    if annot is not None:
        atlas, hemi, _ = annot
        sdir = Path(mne.utils.get_subjects_dir(subjects_dir, raise_error=True))
        return [sdir / subject / "label" / f"{hemi}.{atlas}.annot"]
    candidates = [Path(spec)]
    if subject is not None and not Path(spec).is_absolute():
        sdir = mne.utils.get_subjects_dir(subjects_dir)
        if sdir is not None:
            candidates += [Path(sdir) / subject / spec, Path(sdir) / subject / "label" / spec]
    for cand in list(candidates):
        if not cand.name.endswith(".label"):
            candidates.append(cand.with_name(cand.name + ".label"))
    return candidates


def roi_columns(
    roi: Any,
    hemi: np.ndarray,
    vertno: np.ndarray,
    subject: str | None = None,
    subjects_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Column indices of a region of interest.

    The label's vertices are intersected with the column vertex ids of its
    hemisphere.

    Parameters
    ----------
    roi : str | path-like | mne.Label
        See :func:`read_roi`.
    hemi, vertno : array, shape (n_columns,)
        Hemisphere and FreeSurfer vertex id of every column.
    subject, subjects_dir
        FreeSurfer subject, see :func:`read_roi`.

    Returns
    -------
    columns : array of int
        Sorted column indices (never empty: an ROI without a kept column is
        an error).
    """
    import mne

    label = read_roi(roi, subject, subjects_dir)
    hemi = np.asarray(hemi, str)
    vertno = np.asarray(vertno, np.int64)
    parts = [label.lh, label.rh] if isinstance(label, mne.BiHemiLabel) else [label]
    member = np.zeros(hemi.shape, bool)
    for part in parts:
        member |= (hemi == part.hemi) & np.isin(vertno, part.vertices)
    cols = np.flatnonzero(member)
    if cols.size == 0:
        raise ValueError(
            f"ROI {roi_name(roi)!r} ({sum(len(p.vertices) for p in parts)} vertices, "
            f"{'/'.join(p.hemi for p in parts)}) contains no kept column: none of its "
            "vertices is a column vertex (check the subject, the column spacing and "
            "the cortex mask)"
        )
    return cols
