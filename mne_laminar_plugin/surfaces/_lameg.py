"""laMEG layer sets: read a ``surf/laminar`` folder, write one.

The layout follows laMEG's documentation (``lameg.surf.LayerSurfaceSet``,
version 0.2.1); no laMEG code is used. In ``$SUBJECTS_DIR/<subject>/surf/laminar``:

- file names ``[<hemi>.]<layer>.<stage>[.<orientation>[.fixed|.not_fixed]].gii``
  with a JSON sidecar of the same stem;
- layers ``pial``, ``0.900``, ..., ``white``: the fraction of thickness from
  white, ``numpy.linspace(1, 0, n_layers)`` with three decimals (1 = pial,
  0 = white), made with FreeSurfer's ``mris_expand -thickness``;
- stages ``combined`` (full resolution, left then right hemisphere, the
  vertices of aparc's 'unknown' label (or label <= 0) removed, listed in the
  sidecar's ``lh_/rh_deep_vertices_removed``) and ``ds`` (decimated; every
  layer takes the same ``combined`` vertices, so vertex *i* is one column at
  every depth); ``<layer>.ds.<orientation>.<fixed>.gii`` adds the dipole
  orientations as a ``NIFTI_INTENT_VECTOR`` array; ``multilayer.<n>.ds...``
  concatenates the layers;
- coordinates in mm, **scanner RAS** (for SPM): tkRAS mapped with
  ``vox2ras @ inv(vox2ras_tkr)`` of ``mri/orig.mgz`` (the sidecar keeps both
  as ``n_orig`` and ``t_orig``);
- link vectors ``white - pial`` normalised: pial -> white, like this package.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from mne.utils import _check_option, logger, warn

from .._conventions import HEMIS

#: laMEG's orientation names -> this package's (sign: link vectors inward, normals outward).
LAMEG_ORIENTATIONS = {
    "link_vector": "link_vector",
    "ds_surf_norm": "surface_normal",
    "orig_surf_norm": "surface_normal",
    "cps": "surface_normal",
}
_TO_LAMEG = {"link_vector": "link_vector", "surface_normal": "ds_surf_norm",
             "pial_normal": "ds_surf_norm"}  # fmt: skip
LAMEG_STAGES = ("ds", "combined")
#: sidecar key of the extra column facts this package writes (laMEG ignores it)
_COLUMNS_KEY = "mne_laminar_columns"


def lameg_layer_names(n_layers):
    """laMEG's layer names for ``n_layers`` layers: pial, 0.900, ..., white."""
    fractions = np.linspace(1, 0, int(n_layers))
    return ["pial" if f == 1 else "white" if f == 0 else f"{f:.3f}" for f in fractions]


def _fraction(name):
    return 1.0 if name == "pial" else 0.0 if name == "white" else float(name)


def _folder(path):
    """The ``surf/laminar`` folder and the subject folder (or None)."""
    path = Path(path)
    if (path / "surf" / "laminar").is_dir():
        path = path / "surf" / "laminar"
    if not path.is_dir():
        raise FileNotFoundError(
            f"laMEG layer folder not found: {path}. Give the subject's "
            "surf/laminar folder (made by lameg's LayerSurfaceSet.create) or the "
            "subject folder that holds it."
        )
    subj = path.parent.parent if path.parent.name == "surf" else None
    return path, subj


def _fname(folder, name, stage, orientation=None, fixed=None, hemi=None):
    parts = ([hemi] if hemi else []) + [name, stage]
    if orientation:
        parts.append(orientation)
        if fixed is not None:
            parts.append("fixed" if fixed else "not_fixed")
    return Path(folder) / (".".join(parts) + ".gii")


def _read_gii(fname):
    """(positions mm, triangles, vectors or None) of a laMEG GIFTI."""
    import nibabel as nib

    try:
        img = nib.load(str(fname))
    except Exception as exc:
        raise ValueError(f"Could not read {fname} as a GIFTI surface: {exc}") from None
    codes = nib.nifti1.intent_codes
    get = {}
    for arr in img.darrays:
        for what in ("POINTSET", "TRIANGLE", "VECTOR"):
            if arr.intent == codes[f"NIFTI_INTENT_{what}"] and what not in get:
                get[what] = np.asarray(arr.data)
    if "POINTSET" not in get or "TRIANGLE" not in get:
        raise ValueError(
            f"{fname} is not a triangle surface (needs POINTSET and TRIANGLE arrays)"
        )
    rr = np.asarray(get["POINTSET"], np.float64)
    if not np.isfinite(rr).all():
        raise ValueError(f"{fname} has NaN or infinite vertex coordinates")
    vec = get.get("VECTOR")
    return rr, np.asarray(get["TRIANGLE"], np.int64), (None if vec is None else np.asarray(vec, np.float64))


def _read_meta(fname):
    side = Path(fname).with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"Could not read the laMEG sidecar {side}: {exc}") from None


def _find_layers(folder, stage, n_layers):
    if n_layers is not None:
        names = lameg_layer_names(n_layers)
    else:
        pat = re.compile(rf"^(pial|white|[01]\.\d{{3}})\.{stage}(\..+)?\.gii$")
        names = {m.group(1) for p in folder.glob(f"*.{stage}*.gii") if (m := pat.match(p.name))}
        names = sorted(names, key=_fraction, reverse=True)
        if len(names) < 2 or names[0] != "pial" or names[-1] != "white":
            raise FileNotFoundError(
                f"No laMEG '{stage}' layer set in {folder}: expected pial.{stage}.gii, "
                f"white.{stage}.gii and the layers between (found {names})"
            )
        if names != lameg_layer_names(len(names)):
            raise ValueError(
                f"The '{stage}' layers in {folder} ({names}) are not one laMEG set "
                f"of {len(names)} layers ({lameg_layer_names(len(names))}); pass n_layers="
            )
    return names


def _scanner_to_tkras(folder, subj_dir, meta, subjects_dir, subject):
    """4x4 (mm) scanner RAS -> tkRAS, and where it came from."""
    import nibabel as nib

    if subjects_dir is not None and subject is not None:
        subj_dir = Path(subjects_dir) / subject
    for name in ("orig.mgz", "T1.mgz"):
        mgz = None if subj_dir is None else Path(subj_dir) / "mri" / name
        if mgz is not None and mgz.is_file():
            try:
                hdr = nib.load(str(mgz)).header
                # float64 before inverting: MGH headers are float32
                xf = np.asarray(hdr.get_vox2ras_tkr(), float) @ np.linalg.inv(
                    np.asarray(hdr.get_vox2ras(), float))  # fmt: skip
                return xf, f"{mgz} (vox2ras_tkr @ inv(vox2ras))"
            except Exception as exc:
                warn(f"Could not read {mgz} ({exc}); trying the next source of the "
                     "scanner RAS -> surface RAS transform")  # fmt: skip
    if "t_orig" in meta and "n_orig" in meta:
        t = np.asarray(meta["t_orig"], float)
        n = np.asarray(meta["n_orig"], float)
        return t @ np.linalg.inv(n), "t_orig @ inv(n_orig) of the laMEG sidecar"
    raise ValueError(
        f"The laMEG surfaces in {folder} are in scanner RAS, but neither the "
        "subject's mri/orig.mgz or mri/T1.mgz nor the sidecar's t_orig/n_orig are "
        "available to convert them to surface RAS: pass subjects_dir= and subject="
    )


def read_lameg(path, *, subjects_dir=None, subject=None, stage="ds", n_layers=None,
               orientation="link_vector", fixed=True):  # fmt: skip
    """Read a laMEG layer folder as the arguments of :class:`LaminarSurfaces`."""
    _check_option("stage", stage, LAMEG_STAGES)
    _check_option("orientation", orientation, tuple(LAMEG_ORIENTATIONS))
    folder, subj_dir = _folder(path)
    names = _find_layers(folder, stage, n_layers)
    layers, tris, vectors, files = [], None, [], []
    for name in names:
        ori_f = _fname(folder, name, stage, orientation, fixed)
        fname = ori_f if (stage == "ds" and ori_f.is_file()) else _fname(folder, name, stage)
        if not fname.is_file():
            raise FileNotFoundError(f"laMEG layer {name!r} not found: {fname}")
        rr, t, vec = _read_gii(fname)
        if layers and rr.shape != layers[0].shape:
            raise ValueError(
                f"{fname} has {len(rr)} vertices but {files[0]} has {len(layers[0])}: "
                "the layers of a laMEG set must correspond vertex by vertex"
            )
        tris = t if tris is None else tris
        layers.append(rr)
        vectors.append(vec)
        files.append(fname)
    meta = _read_meta(files[0])
    xf, how = _scanner_to_tkras(folder, subj_dir, meta, subjects_dir, subject)
    logger.info(f"laMEG surfaces of {folder}: scanner RAS -> surface RAS with {how}")
    rr_mm = np.stack(layers)
    rr_tk = rr_mm @ xf[:3, :3].T + xf[:3, 3]
    # --- hemispheres and FreeSurfer vertices of the columns
    hemi, vertno, dropped = _columns(folder, subj_dir, names, stage, rr_mm, meta, files,
                                     subjects_dir, subject)  # fmt: skip
    # --- orientations: the file's vectors, else link vectors from the positions
    ours = LAMEG_ORIENTATIONS[orientation]
    if all(v is not None for v in vectors):
        ori = np.stack(vectors) @ xf[:3, :3].T  # scanner -> tkRAS directions
        ori /= np.linalg.norm(ori, axis=-1, keepdims=True)
        if np.allclose(ori, ori[:1], atol=1e-7):
            ori = ori[0]
        if orientation != "link_vector" and ori.ndim == 2:
            ours = "pial_normal"
        ori_how = f"from the files ({orientation}, {'fixed' if fixed else 'not fixed'})"
    else:
        link = rr_tk[-1] - rr_tk[0]
        ori = link / np.linalg.norm(link, axis=1, keepdims=True)
        ours = "link_vector"
        ori_how = "link vectors (white - pial, normalised) computed from the layers"
    # --- order the columns lh then rh, by FreeSurfer vertex (keep the map)
    order = np.lexsort((vertno, hemi == "rh"))
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    col_tris = inv[tris]
    is_rh = (hemi[order] == "rh")
    n_lh = int((~is_rh).sum())
    tri_rh = is_rh[col_tris]
    mixed = tri_rh.any(axis=1) & ~tri_rh.all(axis=1)
    if mixed.any():
        raise ValueError(f"{files[0]} has {int(mixed.sum())} triangles joining the hemispheres")
    split = {"lh": col_tris[~tri_rh[:, 0]], "rh": col_tris[tri_rh[:, 0]] - n_lh}
    ori_sorted = ori[order] if ori.ndim == 2 else ori[:, order]
    fractions = np.array([_fraction(n) for n in names])
    return dict(
        layers=rr_tk[:, order] * 1e-3,
        orientations=ori_sorted,
        hemi=hemi[order],
        vertno=vertno[order],
        tris=split,
        fractions=fractions,
        orientation=ours,
        spacing="lameg" if stage == "ds" else "lamegcombined",
        dropped=dropped,
        scanner_xform=np.linalg.inv(xf),
        sources={"lameg": {"folder": str(folder), "stage": stage, "layers": names,
                           "files": [str(f) for f in files], "frame": how,
                           "orientations": ori_how,
                           "lameg_vertex": order.tolist()}},  # fmt: skip
    )


def _columns(folder, subj_dir, names, stage, rr_mm, meta, files, subjects_dir, subject):
    """Per laMEG vertex: hemisphere, FreeSurfer vertex id; and the removed vertices."""
    n = rr_mm.shape[1]
    known = meta.get(_COLUMNS_KEY)
    if known:  # written by this package
        hemi = np.asarray(known["hemi"], "<U2")
        vertno = np.asarray(known["vertno"], np.int64)
        if hemi.shape != (n,) or vertno.shape != (n,):
            raise ValueError(f"{files[0]}: {_COLUMNS_KEY} does not match the {n} vertices")
        return hemi, vertno, None
    if stage == "ds":
        comb = _fname(folder, names[-1], "combined")  # white: ds vertices are its vertices
        if not comb.is_file():
            raise FileNotFoundError(
                f"To know the hemisphere and FreeSurfer vertex of each decimated "
                f"column, {comb} (laMEG's full-resolution white) is needed next to "
                f"{files[-1]}"
            )
        from scipy.spatial import cKDTree

        c_rr, _, _ = _read_gii(comb)
        dist, idx = cKDTree(c_rr).query(rr_mm[-1])
        if dist.max() > 1e-3:
            raise ValueError(
                f"{files[-1]}: {int((dist > 1e-3).sum())} decimated white vertices are "
                f"not vertices of {comb} (up to {dist.max():.3g} mm away)"
            )
        meta = _read_meta(comb) or meta
        n_comb = len(c_rr)
    else:
        idx = np.arange(n)
        n_comb = n
    removed = {h: np.asarray(meta.get(f"{h}_deep_vertices_removed", []), np.int64) for h in HEMIS}
    n_fs = {}
    for h in HEMIS:
        nodeep = _fname(folder, "pial", "nodeep", hemi=h)
        fs = None if subj_dir is None else Path(subj_dir) / "surf" / f"{h}.white"
        if subjects_dir is not None and subject is not None:
            fs = Path(subjects_dir) / subject / "surf" / f"{h}.white"
        if nodeep.is_file():
            n_fs[h] = len(_read_gii(nodeep)[0]) + len(removed[h])
        elif fs is not None and fs.is_file():
            import nibabel as nib

            n_fs[h] = len(nib.freesurfer.read_geometry(str(fs))[0])
    if set(n_fs) != set(HEMIS):
        raise FileNotFoundError(
            f"The hemisphere sizes of the laMEG set in {folder} are unknown: need "
            "lh/rh.pial.nodeep.gii there or the subject's surf/?h.white "
            "(pass subjects_dir= and subject=)"
        )
    kept = {h: np.setdiff1d(np.arange(n_fs[h]), removed[h]) for h in HEMIS}
    if len(kept["lh"]) + len(kept["rh"]) != n_comb:
        raise ValueError(
            f"The laMEG set in {folder} has {n_comb} full-resolution vertices but the "
            f"hemispheres keep {len(kept['lh'])} + {len(kept['rh'])}"
        )
    is_rh = idx >= len(kept["lh"])
    hemi = np.where(is_rh, "rh", "lh").astype("<U2")
    vertno = np.where(is_rh, kept["rh"][np.clip(idx - len(kept["lh"]), 0, None)],
                      kept["lh"][np.clip(idx, None, len(kept["lh"]) - 1)])  # fmt: skip
    dropped = dict(
        hemi=np.concatenate([np.full(len(removed[h]), h) for h in HEMIS]),
        vertno=np.concatenate([removed[h] for h in HEMIS]),
        reason=np.full(sum(len(r) for r in removed.values()), "aparc_unknown"),
    )
    return hemi, vertno.astype(np.int64), dropped


def lameg_inputs(path, *, subjects_dir=None, subject=None, stage="ds"):
    """The files :func:`read_lameg` may read (layers, sidecars, frame, sizes).

    Returns
    -------
    files : dict of str -> Path
        Existing files only, named by their file name.
    """
    _check_option("stage", stage, LAMEG_STAGES)
    folder, subj_dir = _folder(path)
    if subjects_dir is not None and subject is not None:
        subj_dir = Path(subjects_dir) / subject
    found = sorted(folder.glob(f"*.{stage}*.gii")) + sorted(folder.glob(f"*.{stage}*.json"))
    found += sorted(folder.glob("white.combined.*")) + sorted(folder.glob("?h.pial.nodeep.gii"))
    if subj_dir is not None:
        found += [Path(subj_dir) / "mri" / n for n in ("orig.mgz", "T1.mgz")]
        found += [Path(subj_dir) / "surf" / f"{h}.white" for h in HEMIS]
    return {f"lameg_{p.name}": p for p in found if p.is_file()}


def write_lameg(surf, folder, *, dtype="float32", overwrite=False):
    """Write surfaces in laMEG's ``ds`` layout (scanner RAS, mm, link-vector files)."""
    import nibabel as nib
    from nibabel.gifti import GiftiDataArray, GiftiImage

    from ..bids import atomic_path

    folder = Path(folder)
    _check_option("dtype", dtype, ("float32", "float64"))
    gii_type = {"float32": "NIFTI_TYPE_FLOAT32", "float64": "NIFTI_TYPE_FLOAT64"}[dtype]
    if surf.scanner_xform is None:
        raise ValueError(
            "These surfaces have no surface RAS -> scanner RAS transform "
            "(scanner_xform), which laMEG's layout needs (its files are in scanner "
            "RAS); build them from a FreeSurfer subject with mri/T1.mgz"
        )
    names = lameg_layer_names(surf.n_layers)
    if not np.allclose(surf.fractions, [_fraction(n) for n in names], atol=5e-4):
        warn(
            f"The layer fractions {np.round(surf.fractions, 3).tolist()} are not "
            f"laMEG's equidistant {names}; the files carry laMEG's names in layer order"
        )
    ori_name = _TO_LAMEG[surf.orientation]
    fixed = surf.orientations.ndim == 2
    xf = np.asarray(surf.scanner_xform, float)
    rr = (surf.layers * 1e3) @ xf[:3, :3].T + xf[:3, 3]
    ori = np.broadcast_to(surf.orientations, surf.layers.shape) @ xf[:3, :3].T
    ori = ori / np.linalg.norm(ori, axis=-1, keepdims=True)
    tris = surf.combined_tris().astype(np.int32)
    t_orig = np.eye(4)
    meta = dict(
        t_orig=t_orig.tolist(), n_orig=xf.tolist(), orientation=ori_name,
        fix_orientation=bool(fixed), ds_factor=None,
        **{_COLUMNS_KEY: dict(hemi=surf.hemi.tolist(), vertno=surf.vertno.tolist(),
                              note="t_orig/n_orig: their product n_orig @ inv(t_orig) "
                                   "is the tkRAS -> scanner RAS transform")},
    )  # fmt: skip
    codes = nib.nifti1.intent_codes
    targets = []
    for layer, name in enumerate(names):
        targets.append((_fname(folder, name, "ds"), layer, False))
        targets.append((_fname(folder, name, "ds", ori_name, fixed), layer, True))
    for fname, _, _ in targets:
        if fname.exists() and not overwrite:
            raise FileExistsError(f"{fname} exists; pass overwrite=True to replace it")
    written = []
    for fname, layer, with_ori in targets:
        arrays = [
            GiftiDataArray(rr[layer].astype(dtype), intent=codes["NIFTI_INTENT_POINTSET"],
                           datatype=gii_type),
            GiftiDataArray(tris, intent=codes["NIFTI_INTENT_TRIANGLE"], datatype="NIFTI_TYPE_INT32"),
        ]  # fmt: skip
        if with_ori:
            arrays.append(GiftiDataArray(ori[layer].astype(dtype),
                                         intent=codes["NIFTI_INTENT_VECTOR"],
                                         datatype=gii_type))  # fmt: skip
        with atomic_path(fname) as tmp:
            # float64 is not in the GIFTI standard's types ("force"): exact round trip
            nib.save(GiftiImage(darrays=arrays), str(tmp),
                     mode="strict" if dtype == "float32" else "force")  # fmt: skip
        side = fname.with_suffix(".json")
        with atomic_path(side) as tmp:
            tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        written += [fname, side]
    logger.info(f"Wrote {len(names)} laMEG layers ({surf.n_columns} columns) to {folder}")
    return written
