"""The BIDS derivative files of :class:`LaminarSurfaces`.

File names, GIFTI surfaces and maps, JSON/TSV sidecars, saving (atomic) and
loading back.
"""

from __future__ import annotations

import contextlib
import glob
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mne.utils import _validate_type, logger

from .. import bids
from .._conventions import (
    HEMIS,
    LAYER_ORDER,
)
from ._surfaces import DROP_REASONS

if TYPE_CHECKING:  # pragma: no cover
    from ._surfaces import LaminarSurfaces


LAYER_SUFFIX = "midthickness"
SPATIAL_REFERENCE = (
    "FreeSurfer surface RAS (tkRAS, the 'tkregister' space of the subject's "
    "mri/T1.mgz and of its surf/ files), in mm"
)


# ------------------------------------------------------------------ files
def layer_fname(root, subject, session, hemi, layer, spacing) -> Path:
    """Path of one layer's GIFTI surface (``desc-layer00`` = pial)."""
    return bids.bids_fname(
        root, subject=subject, session=session, datatype="anat", hemi=hemi,
        den=spacing, desc=bids.layer_desc(layer), suffix=LAYER_SUFFIX,
        extension=".surf.gii",
    )  # fmt: skip


def _hemi_fname(root, subject, session, hemi, spacing, desc) -> Path:
    return bids.bids_fname(
        root, subject=subject, session=session, datatype="anat", hemi=hemi,
        den=spacing, desc=desc, suffix="stat", extension=".func.gii",
    )  # fmt: skip


def orientation_fname(root, subject, session, hemi, spacing) -> Path:
    """Path of a hemisphere's orientation GIFTI (float64 unit vectors)."""
    return _hemi_fname(root, subject, session, hemi, spacing, "orientation")


def positions_fname(root, subject, session, hemi, spacing) -> Path:
    """Path of a hemisphere's exact (float64, metres) column positions GIFTI."""
    return _hemi_fname(root, subject, session, hemi, spacing, "positions")


def columns_fname(root, subject, session, spacing) -> Path:
    """Path of the columns TSV (every candidate column, kept or dropped)."""
    return bids.bids_fname(
        root, subject=subject, session=session, datatype="anat", den=spacing,
        desc="laminar", suffix="columns", extension=".tsv",
    )  # fmt: skip


def summary_fname(root, subject, session, spacing) -> Path:
    """Path of the summary JSON (everything :meth:`LaminarSurfaces.load` needs)."""
    return bids.bids_fname(
        root, subject=subject, session=session, datatype="anat", den=spacing,
        desc="laminar", suffix="surfaces", extension=".json",
    )  # fmt: skip


def saved_fnames(root, subject, session, spacing, *, pial=False) -> dict[str, Path]:
    """The files :meth:`LaminarSurfaces.load` reads (keys name them), for MBP
    steps that declare them as inputs; ``pial=True`` adds the layer-0 GIFTIs."""
    files = {
        "surfaces": summary_fname(root, subject, session, spacing),
        "columns": columns_fname(root, subject, session, spacing),
    }
    for hemi in HEMIS:
        files[f"positions_{hemi}"] = positions_fname(root, subject, session, hemi, spacing)
        files[f"orientation_{hemi}"] = orientation_fname(root, subject, session, hemi, spacing)
        if pial:
            files[f"pial_{hemi}"] = layer_fname(root, subject, session, hemi, 0, spacing)
    return files


#: Glob patterns (after ``<prefix>_``) of every file :meth:`save` writes.
STALE_PATTERNS = (
    "hemi-*_den-*_desc-layer*_midthickness.surf.gii",
    "hemi-*_den-*_desc-layer*_midthickness.json",
    "hemi-*_den-*_desc-orientation_stat.func.gii",
    "hemi-*_den-*_desc-orientation_stat.json",
    "hemi-*_den-*_desc-positions_stat.func.gii",
    "hemi-*_den-*_desc-positions_stat.json",
    "den-*_desc-laminar_columns.tsv",
    "den-*_desc-laminar_columns.json",
    "den-*_desc-laminar_surfaces.json",
)

BIDS_DESCRIPTIONS = {
    "positions": "Exact (float64, metres, tkRAS) position of every column at every "
    "layer: a lossless copy of the layer surfaces",
}


def layer_descriptions(n_layers: int) -> dict[str, str]:
    """``descriptions.tsv`` entries of the layer labels."""
    out = dict(BIDS_DESCRIPTIONS)
    for layer in range(n_layers):
        out[bids.layer_desc(layer)] = (
            f"Cortical layer surface {layer:02d} of the laminar model (00 = pial, "
            "higher = deeper; the last layer is white)"
        )
    return out


def density_description(surf: LaminarSurfaces) -> str:
    """The ``Density`` of the sidecars: how the columns were chosen, per hemisphere."""
    n = {h: int((surf.hemi == h).sum()) for h in HEMIS}
    if surf.spacing == "all":
        how = "all FreeSurfer vertices"
    elif surf.spacing.startswith("lameg"):
        how = f"the vertices of a laMEG layer set ({surf.spacing[5:]} stage)"
    else:
        how = f"MNE {surf.spacing} subsampling of ?h.sphere (as mne.setup_source_space)"
    return f"{how}, medial wall removed: {n['lh']} (L) and {n['rh']} (R) cortical columns"


def _gifti_meta(d: dict):
    import nibabel as nib

    return nib.gifti.GiftiMetaData({k: str(v) for k, v in d.items()})


def _common_sidecar(surf: LaminarSurfaces, hemi: str | None) -> dict:
    q = surf.qc
    out = {
        "SpatialReference": SPATIAL_REFERENCE,
        "Density": density_description(surf),
        "NumberOfLayers": surf.n_layers,
        "LayerOrder": LAYER_ORDER,
        "DepthFractions": surf.fractions.tolist(),
        "DepthFractionsDescription": (
            "fraction of cortical depth measured from white (1 = pial, 0 = white); "
            "equidistant: of the white-pial distance; equivolume: of the column "
            "volume (Bok)"
        ),
        "DepthMethod": surf.method,
        "ColumnSpacing": surf.spacing,
        "Orientation": surf.orientation,
        "OrientationSign": surf.orientation_sign,
        "FreeSurferSubject": surf.subject,
        "FreeSurferInputs": _portable_inputs(surf.sources),
    }
    if q:
        hemis = [hemi] if hemi else list(HEMIS)
        out["ColumnsKept"] = {bids.HEMI_LABEL[h]: q.get("n_kept", {}).get(h) for h in hemis}
        out["ColumnsDropped"] = {
            bids.HEMI_LABEL[h]: q.get("dropped", {}).get(h, {}) for h in hemis
        }
        out["CortexMask"] = {bids.HEMI_LABEL[h]: q.get("cortex_mask", {}).get(h) for h in hemis}
        out["DropReasons"] = DROP_REASONS
    return out


def _portable_inputs(sources: dict) -> dict:
    """``FreeSurferInputs`` with ``<subjects_dir>/...`` for the machine's subjects_dir."""
    roots = {"subjects_dir": sources.get("subjects_dir")}

    def convert(value):
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return bids.portable_path(value, roots)

    return convert(sources)


def _source_uris(surf: LaminarSurfaces, root: Path, raw_rel: str):
    """BIDS URIs of the FreeSurfer inputs, per hemi, and the DatasetLinks they need.

    Possible when ``subjects_dir`` lies in a sibling derivative dataset
    (``<root>/../<name>/...`` -> ``bids:<name>:...``) or in the raw dataset
    (``bids:raw:...``); otherwise no URIs (``FreeSurferInputs`` still names
    the files, relative to ``<subjects_dir>``).
    """
    uris: dict[str, list[str]] = {h: [] for h in HEMIS}
    links: dict[str, str] = {}
    try:
        deriv = root.resolve().parent
        raw = (root / raw_rel).resolve()
    except OSError:  # pragma: no cover
        return uris, links
    for hemi in HEMIS:
        for fname in (surf.sources.get(hemi) or {}).values():
            if not Path(fname).is_absolute():  # read back as <subjects_dir>/...
                continue
            path = Path(fname).resolve()
            datasets = {"raw": raw}
            if path.is_relative_to(deriv) and path.relative_to(deriv).parts[0] != root.name:
                name = path.relative_to(deriv).parts[0]
                links[name] = f"../{name}"
                datasets = {name: deriv / name}
            uri = bids.dataset_uri(path, datasets)
            if uri is not None:
                uris[hemi].append(uri)
    return uris, links


def surfaces_run_id(surf: LaminarSurfaces) -> str:
    """The ``RunId`` of a saved set of layer-surface files (from their content)."""
    return bids.content_id(
        surf.layers, surf.orientations, surf.vertno, surf.hemi.astype(str),
        *(np.asarray(surf.tris[h]) for h in HEMIS), surf.fractions,
        surf.dropped["vertno"], surf.dropped["hemi"].astype(str),
        surf.dropped["reason"].astype(str),
        [surf.method, surf.spacing, surf.orientation, surf.subject],
    )  # fmt: skip


def _check_run_id(files, summary: Path, run_id) -> None:
    """Every file of the set must carry the summary's ``RunId`` in its sidecar."""
    if run_id is None:  # written before run ids (no check possible)
        return
    for fname in files:
        side = bids.sidecar(fname)
        if not Path(fname).is_file() or not side.is_file():
            missing = fname if not Path(fname).is_file() else side
            raise FileNotFoundError(
                f"Missing laminar surface file {missing} (listed in {summary}); "
                "re-run the step laminar/layer_surfaces."
            )
        have = bids.read_json(side).get("RunId")
        if have != run_id:
            raise ValueError(
                f"{fname} is not from the same run as {summary} (RunId "
                f"{have!r} in {side.name}, {run_id!r} in the summary): the layer "
                "surface files are a mix of two runs. Re-run the step "
                "laminar/layer_surfaces (or LaminarSurfaces.save) to rewrite them."
            )


def _save(
    surf: LaminarSurfaces, root: Path, subject: str, session, *, remove_stale,
    source_relpath=None,
):  # fmt: skip
    """Write every file of :meth:`LaminarSurfaces.save` (see there).

    One function on purpose: all files go to temporary names inside one
    ``ExitStack`` and are renamed together at the end, so that an error
    leaves no partial output; the sidecars share the per-call URIs.
    """
    import nibabel as nib
    from nibabel.gifti import GiftiCoordSystem, GiftiDataArray, GiftiImage

    _validate_type(subject, str, "subject")
    spacing = surf.spacing
    # dataset-level files (keep an existing DatasetLinks target)
    dd = root / "dataset_description.json"
    rel = "../.." if source_relpath is None else str(source_relpath)
    if source_relpath is None and dd.is_file():
        with contextlib.suppress(Exception):
            rel = bids.read_json(dd)["DatasetLinks"]["raw"]
    uris, links = _source_uris(surf, root, rel)
    bids.ensure_derivative_dataset(
        root, source_relpath=rel, descriptions=layer_descriptions(surf.n_layers),
        links=links,
    )  # fmt: skip
    written: list[Path] = []
    struct = {"lh": "CortexLeft", "rh": "CortexRight"}
    xform = surf.scanner_xform
    if xform is not None:
        coordsys = GiftiCoordSystem(
            dataspace="NIFTI_XFORM_UNKNOWN", xformspace="NIFTI_XFORM_SCANNER_ANAT", xform=xform
        )
    else:
        coordsys = GiftiCoordSystem(
            dataspace="NIFTI_XFORM_UNKNOWN", xformspace="NIFTI_XFORM_UNKNOWN", xform=np.eye(4)
        )
    run_id = surfaces_run_id(surf)
    with bids.atomic_group():

        def _tmp(path):
            written.append(Path(path))
            return path

        for hemi in HEMIS:
            sl = surf.columns(hemi)
            vert = surf.vertno[sl]
            side = bids.HEMI_LABEL[hemi]
            common = _common_sidecar(surf, hemi)
            if uris[hemi]:
                common["Sources"] = uris[hemi]
            for layer in range(surf.n_layers):
                second = (
                    "Pial" if layer == 0 else "GrayWhite" if layer == surf.n_layers - 1
                    else "MidThickness"
                )  # fmt: skip
                desc = (
                    f"Layer {layer:02d} of {surf.n_layers} ({surf.method}, depth fraction "
                    f"{surf.fractions[layer]:.3f} from white) of the {hemi} cortex; "
                    f"coordinates in mm, {SPATIAL_REFERENCE}"
                )
                meta = {
                    "AnatomicalStructurePrimary": struct[hemi],
                    "AnatomicalStructureSecondary": second,
                    "GeometricType": "Anatomical",
                    "Name": bids.layer_desc(layer),
                    "Description": desc,
                    "SpatialReference": SPATIAL_REFERENCE,
                    "DepthFraction": repr(float(surf.fractions[layer])),
                }
                if xform is not None:
                    meta.update(
                        VolGeomC_R=f"{xform[0, 3]:.6f}", VolGeomC_A=f"{xform[1, 3]:.6f}",
                        VolGeomC_S=f"{xform[2, 3]:.6f}",
                    )  # fmt: skip
                img = GiftiImage(meta=_gifti_meta(meta))
                img.add_gifti_data_array(
                    GiftiDataArray(
                        (surf.layers[layer, sl] * 1e3).astype(np.float32),
                        intent="NIFTI_INTENT_POINTSET", datatype="NIFTI_TYPE_FLOAT32",
                        coordsys=coordsys,
                        meta=_gifti_meta({"AnatomicalStructurePrimary": struct[hemi]}),
                    )
                )  # fmt: skip
                img.add_gifti_data_array(
                    GiftiDataArray(
                        surf.tris[hemi].astype(np.int32), intent="NIFTI_INTENT_TRIANGLE",
                        datatype="NIFTI_TYPE_INT32",
                    )
                )  # fmt: skip
                path = layer_fname(root, subject, session, hemi, layer, spacing)
                with bids.atomic_path(_tmp(path)) as tmp:
                    nib.save(img, tmp)
                side_json = dict(
                    Description=desc, Layer=layer, DepthFraction=float(surf.fractions[layer]),
                    Hemisphere=side, Units="mm", **common, RunId=run_id,
                )  # fmt: skip
                bids.write_json(_tmp(bids.sidecar(path)), side_json)

            # orientations (float64 unit vectors) and exact positions (float64 m)
            for kind in ("orientation", "positions"):
                img = GiftiImage(
                    meta=_gifti_meta({"AnatomicalStructurePrimary": struct[hemi]})
                )
                img.add_gifti_data_array(
                    GiftiDataArray(
                        vert.astype(np.int32), intent="NIFTI_INTENT_NODE_INDEX",
                        datatype="NIFTI_TYPE_INT32", meta=_gifti_meta({"Name": "vertno"}),
                    )
                )  # fmt: skip
                if kind == "orientation":
                    arrays = (
                        [(surf.orientations[sl], "all layers")]
                        if surf.orientations.ndim == 2
                        else [
                            (surf.orientations[k, sl], bids.layer_desc(k))
                            for k in range(surf.n_layers)
                        ]
                    )
                    units = "1"
                else:
                    arrays = [
                        (surf.layers[k, sl], bids.layer_desc(k)) for k in range(surf.n_layers)
                    ]
                    units = "m"
                for data, name in arrays:
                    img.add_gifti_data_array(
                        GiftiDataArray(
                            np.ascontiguousarray(data, np.float64),
                            intent="NIFTI_INTENT_VECTOR", datatype="NIFTI_TYPE_FLOAT64",
                            encoding="GIFTI_ENCODING_B64BIN",  # gzip: slow, ~10 % smaller
                            meta=_gifti_meta({"Name": name, "Units": units}),
                        )
                    )  # fmt: skip
                if kind == "orientation":
                    path = orientation_fname(root, subject, session, hemi, spacing)
                    desc = (
                        f"Unit dipole orientation of every {hemi} column "
                        f"({surf.orientation}; {surf.orientation_sign}). Arrays: vertex "
                        "ids (NODE_INDEX), then one float64 (n, 3) array "
                        + ("for all layers." if surf.orientations.ndim == 2 else "per layer.")
                    )
                else:
                    path = positions_fname(root, subject, session, hemi, spacing)
                    desc = (
                        "Exact position (float64, metres, FreeSurfer surface RAS/tkRAS) "
                        f"of every {hemi} column at every layer. Arrays: vertex ids "
                        "(NODE_INDEX), then one (n, 3) array per layer (00 = pial). A "
                        "lossless copy of the float32 mm layer surfaces."
                    )
                # float64 is outside the GIFTI 1.0 type list but written and read
                # by nibabel and gifticlib; it makes the round trip exact
                with bids.atomic_path(_tmp(path)) as tmp:
                    nib.save(img, tmp, mode="force")
                bids.write_json(
                    _tmp(bids.sidecar(path)),
                    dict(Description=desc, Hemisphere=side, Units=units, **common,
                         RunId=run_id),
                )

        # columns table (every candidate column) and summary
        tsv = columns_fname(root, subject, session, spacing)
        table = _columns_table(surf)
        bids.write_tsv(_tmp(tsv), table)
        bids.write_json(_tmp(bids.sidecar(tsv)), dict(_columns_sidecar(surf), RunId=run_id))
        summary = summary_fname(root, subject, session, spacing)
        info = dict(
            Description="Laminar layer surfaces: parameters, quality checks and files",
            **_common_sidecar(surf, None),
            QualityChecks=surf.qc,
            **({"Sources": uris["lh"] + uris["rh"]} if uris["lh"] + uris["rh"] else {}),
            ScannerRASTransform=None if xform is None else xform.tolist(),
            Files=sorted(p.relative_to(root).as_posix() for p in written),
            RunId=run_id,
        )
        bids.write_json(_tmp(summary), info)
        written.append(summary)
    written = list(dict.fromkeys(written))
    if remove_stale:
        directory = written[0].parent
        for pattern in STALE_PATTERNS:
            for path in bids.remove_stale(
                directory, f"{bids.subject_prefix(subject, session)}_{pattern}", written
            ):
                logger.info(f"    removed stale {path.name}")
    logger.info(f"    wrote {len(written)} files to {written[0].parent}")
    return written


def _columns_table(surf: LaminarSurfaces) -> dict:
    """Every candidate column: kept ones (with index) and dropped ones (reason)."""
    thick = surf.thickness()
    hemi = np.concatenate([surf.hemi, surf.dropped["hemi"]])
    vert = np.concatenate([surf.vertno, surf.dropped["vertno"]])
    col = np.concatenate([np.arange(surf.n_columns), np.full(len(vert) - surf.n_columns, -1)])
    order = np.lexsort((vert, hemi == "rh"))
    hemi, vert, col = hemi[order], vert[order], col[order]
    kept = col >= 0
    reason = np.concatenate([np.full(surf.n_columns, ""), surf.dropped["reason"]])[order]
    return {
        "hemi": [bids.HEMI_LABEL[h] for h in hemi],
        "vertex": vert.tolist(),
        "column": [int(c) if c >= 0 else None for c in col],
        "status": np.where(kept, "kept", "dropped").tolist(),
        "reason": [r if r else None for r in reason],
        "thickness": [float(thick[c]) if c >= 0 else None for c in col],
    }


def _columns_sidecar(surf: LaminarSurfaces) -> dict:
    return {
        "Description": "Every candidate cortical column (after subsampling): kept in "
        "every layer, or dropped in every layer with the reason.",
        "Density": density_description(surf),
        "SpatialReference": SPATIAL_REFERENCE,
        "hemi": {"LongName": "Hemisphere", "Levels": {"L": "left", "R": "right"}},
        "vertex": {
            "LongName": "FreeSurfer vertex id",
            "Description": "Vertex index in the subject's ?h.white/?h.pial",
        },
        "column": {
            "LongName": "Column index",
            "Description": "Index into the kept columns (left first); source "
            "l * n_columns + column of the laminar leadfield; n/a if dropped",
        },
        "status": {
            "LongName": "Kept or dropped",
            "Levels": {"kept": "in every layer", "dropped": "from every layer"},
        },
        "reason": {"LongName": "Why the column was dropped", "Levels": DROP_REASONS},
        "thickness": {
            "LongName": "Cortical thickness",
            "Description": "Pial-white distance along the column (not ?h.thickness)",
            "Units": "mm",
        },
        "OrientationSign": surf.orientation_sign,
    }


def _find_summary(root: Path, subject, session, spacing) -> Path:
    if spacing is not None:
        path = summary_fname(root, subject, session, spacing)
        if not path.is_file():
            raise FileNotFoundError(f"No laminar surfaces saved: {path} does not exist.")
        return path
    pattern = bids.subject_dir(root, subject, session, "anat") / (
        f"{bids.subject_prefix(subject, session)}_den-*_desc-laminar_surfaces.json"
    )
    found = sorted(glob.glob(glob.escape(str(pattern.parent)) + os.sep + pattern.name))
    if not found:
        raise FileNotFoundError(
            f"No laminar surfaces saved for sub-{subject}"
            + (f" ses-{session}" if session else "")
            + f" under {root}: no file matches {pattern}."
        )
    if len(found) > 1:
        raise ValueError(
            f"Several saved spacings for sub-{subject}: {[Path(f).name for f in found]}; "
            "pass spacing=."
        )
    return Path(found[0])


def _load(cls, root: Path, subject, session, spacing):
    import nibabel as nib

    summary = _find_summary(root, subject, session, spacing)
    info = bids.read_json(summary)
    spacing = info["ColumnSpacing"]
    n_layers = int(info["NumberOfLayers"])
    _check_run_id(
        [
            *(f(root, subject, session, h, spacing)
              for h in HEMIS for f in (positions_fname, orientation_fname)),
            *(layer_fname(root, subject, session, h, k, spacing)
              for h in HEMIS for k in range(n_layers)),
            columns_fname(root, subject, session, spacing),
        ],
        summary, info.get("RunId"),
    )  # fmt: skip
    layers, oris, hemis, vertnos, tris = [], [], [], [], {}
    for hemi in HEMIS:
        fpos = positions_fname(root, subject, session, hemi, spacing)
        fori = orientation_fname(root, subject, session, hemi, spacing)
        fsurf = layer_fname(root, subject, session, hemi, 0, spacing)
        for f in (fpos, fori, fsurf):
            if not f.is_file():
                raise FileNotFoundError(f"Missing laminar surface file {f} (listed in {summary}).")
        pos = nib.load(fpos).darrays
        ori = nib.load(fori).darrays
        vert = np.asarray(pos[0].data, np.int64)
        if len(pos) != n_layers + 1 or not np.array_equal(vert, np.asarray(ori[0].data)):
            raise ValueError(
                f"{fpos} and {fori} disagree with {summary} ({n_layers} layers) or with "
                "each other: the files come from different runs; re-run the step."
            )
        layers.append(np.stack([np.asarray(d.data, np.float64) for d in pos[1:]]))
        arrs = [np.asarray(d.data, np.float64) for d in ori[1:]]
        oris.append(arrs[0] if len(arrs) == 1 else np.stack(arrs))
        hemis.append(np.full(len(vert), hemi))
        vertnos.append(vert)
        g = nib.load(fsurf)
        tris[hemi] = np.asarray(g.agg_data("NIFTI_INTENT_TRIANGLE"), np.int64).reshape(-1, 3)
        mm = np.asarray(g.agg_data("NIFTI_INTENT_POINTSET"), np.float64)
        if mm.shape != layers[-1][0].shape or not np.allclose(
            mm, layers[-1][0] * 1e3, rtol=0, atol=1e-3
        ):
            raise ValueError(f"{fsurf} does not match {fpos}: files from different runs.")
    ori_axis = 1 if oris[0].ndim == 3 else 0
    table = bids.read_tsv(columns_fname(root, subject, session, spacing))
    dropped_rows = [i for i, s in enumerate(table["status"]) if s == "dropped"]
    inv = {v: k for k, v in bids.HEMI_LABEL.items()}
    dropped = dict(
        hemi=np.array([inv[table["hemi"][i]] for i in dropped_rows], "<U2"),
        vertno=np.array([int(table["vertex"][i]) for i in dropped_rows], np.int64),
        reason=np.array([table["reason"][i] for i in dropped_rows], "<U32"),
    )
    xf = info.get("ScannerRASTransform")
    return cls(
        np.concatenate(layers, axis=1),
        np.concatenate(oris, axis=ori_axis),
        np.concatenate(hemis),
        np.concatenate(vertnos),
        tris,
        np.asarray(info["DepthFractions"], np.float64),
        method=info["DepthMethod"],
        spacing=spacing,
        orientation=info["Orientation"],
        subject=info.get("FreeSurferSubject"),
        qc=info.get("QualityChecks"),
        dropped=dropped,
        sources=info.get("FreeSurferInputs"),
        scanner_xform=None if xf is None else np.asarray(xf, float),
    )
