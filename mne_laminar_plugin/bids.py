"""BIDS derivatives of the laminar steps: paths, dataset files, sidecars, writes.

Every derivative path of this package is built here (one place), every file is
written atomically (temporary name in the same folder, then ``os.replace``), and
the derivative dataset gets a valid ``dataset_description.json``,
``descriptions.tsv``, ``README.md`` and ``.bidsignore`` so that
``bids-validator-deno`` run on the folder exits 0.
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__

DERIV_NAME = "mne-laminar"
BIDS_VERSION = "1.10.0"
CODE_URL = "https://pypi.org/project/mne-laminar-plugin/"

#: BIDS entity order (schema 1.11), for file names mne-bids cannot build
#: (it has no ``hemi`` or ``den``).
ENTITY_ORDER = (
    "sub", "ses", "task", "acq", "rec", "run", "proc", "hemi", "space", "den",
    "label", "desc",
)  # fmt: skip
HEMI_LABEL = {"lh": "L", "rh": "R"}

#: File types BIDS has no schema for yet; their sidecars must be listed too.
BIDSIGNORE = (
    "*.surf.gii",
    "*.shape.gii",
    "*.func.gii",
    "*_fwd.fif",
    "*_fwd.json",
    "*_leadfield.h5",
    "*_leadfield.json",
    "*_columns.tsv",
    "*_columns.json",
    "*_predictors.tsv",
    "*_predictors.json",
    "*_accuracy.tsv",
    "*_accuracy.json",
    "*_surfaces.json",
    "*_stat.json",
    "*_shape.json",
    "*_surf.json",
    "*_midthickness.json",
    "*_priors.json",
    "*_evidence.tsv",
    "*_evidence.json",
    # the group folder; bids-validator-deno 3.0 ignores a trailing-slash
    # pattern ("group/") here but honours the bare name
    "group",
)

#: ``desc-`` labels used by this package, documented in descriptions.tsv.
DESCRIPTIONS = {
    "laminar": "Laminar (multilayer) model: every cortical column at every depth",
    "lfrmsdiff": "RMS over sensors of deepest minus most superficial leadfield",
    "thickness": "White-pial distance along the column (mm)",
    "radiality": "|cos| between column orientation and scalp normal (0-1)",
    "distance": "Distance from the pial vertex to the scalp surface (mm)",
    "score": "Composite anatomical score of laminar discriminability",
    "orientation": "Unit dipole orientation of every column",
    "accuracy": "Simulated laminar accuracy: every layer recovered at the column (0/1)",
    "errormm": "Simulated laminar error: mean |true - peak layer| x thickness / n_layers (mm)",
    "bias": "Simulated laminar bias: mean (true - peak layer) (layers)",
}


def layer_desc(layer: int) -> str:
    """The ``desc-`` label of one layer: ``layer00`` is pial."""
    return f"layer{int(layer):02d}"


#: Derivative folders of other tools that the laminar derivatives must not share.
RESERVED_DERIV_NAMES = ("mne-bids-pipeline", "freesurfer")


# ----------------------------------------------------------------- paths
def check_deriv_name(name: str, what: str = "laminar_deriv_name") -> str:
    """Check that ``name`` is a plain folder name under ``derivatives/``.

    Not empty, no path separator, not ``.``/``..``, no leading dot, and not
    the folder of MNE-BIDS-Pipeline or FreeSurfer (whose files it would
    overwrite or mix with).
    """
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}")
    bad = (
        not name.strip()
        or name != name.strip()
        or name in (".", "..")
        or name.startswith(".")
        or any(sep in name for sep in ("/", "\\", os.sep, "\0"))
    )
    if bad:
        raise ValueError(
            f"{what}={name!r} must be a plain folder name under <bids_root>/derivatives/ "
            f"(letters, digits, '-', '_'; no path separators, not empty), e.g. {DERIV_NAME!r}"
        )
    if name.lower() in RESERVED_DERIV_NAMES:
        raise ValueError(
            f"{what}={name!r} is the derivative folder of another tool; the laminar "
            f"files would overwrite or mix with its files. Use e.g. {DERIV_NAME!r}."
        )
    return name


def deriv_root(bids_root: str | os.PathLike, name: str = DERIV_NAME) -> Path:
    """The laminar derivative dataset folder of a BIDS dataset."""
    return Path(bids_root) / "derivatives" / check_deriv_name(name)


def subject_prefix(subject: str, session: str | None) -> str:
    """``sub-XX[_ses-YY]``: how every file of a subject/session starts."""
    return f"sub-{subject}" + (f"_ses-{session}" if session else "")


def subject_dir(
    root: str | os.PathLike, subject: str, session: str | None, datatype: str
) -> Path:
    """``<root>/sub-XX[/ses-YY]/<datatype>``."""
    path = Path(root) / f"sub-{subject}"
    if session:
        path = path / f"ses-{session}"
    return path / datatype


def bids_fname(
    root: str | os.PathLike,
    *,
    subject: str,
    session: str | None = None,
    datatype: str,
    suffix: str,
    extension: str,
    **entities: str | int | None,
) -> Path:
    """A derivative file name with entities in BIDS schema order.

    ``hemi`` may be given as ``"lh"``/``"rh"`` (written ``L``/``R``).
    """
    entities = {k: v for k, v in entities.items() if v is not None}
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"Unknown BIDS entities {sorted(unknown)}")
    if "hemi" in entities:
        entities["hemi"] = HEMI_LABEL.get(str(entities["hemi"]), entities["hemi"])
    values = {"sub": subject, "ses": session, **entities}
    parts = []
    for key in ENTITY_ORDER:
        val = values.get(key)
        if val is None:
            continue
        val = str(val)
        if not val.isalnum():
            raise ValueError(f"BIDS label {key}-{val!r} must be alphanumeric")
        parts.append(f"{key}-{val}")
    parts.append(suffix)
    return subject_dir(root, subject, session, datatype) / (
        "_".join(parts) + extension
    )


def sidecar(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a derivative file (``.surf.gii`` -> ``.json``)."""
    path = Path(path)
    name = path.name
    for ext in (".surf.gii", ".shape.gii", ".func.gii", ".label.gii", ".nii.gz"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


# ---------------------------------------------------------- atomic writes
#: Prefix of every temporary file (``.part-<pid>-<token>-<final name>``).
PART_PREFIX = ".part-"
_PART_RE = re.compile(r"^\.part-(\d+)-")
#: Temporaries without a process id (older versions) older than this are stale.
_PART_MAX_AGE = 3600.0
_GROUP: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "mne_laminar_atomic_group", default=None
)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_parts(directory: str | os.PathLike) -> list[Path]:
    """Remove temporaries (``.part-*``) left in ``directory`` by a killed run.

    A temporary is stale when the process that wrote it (its id is in the
    name) no longer runs; this process's own temporaries, and those of a
    concurrent run, are kept.
    """
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    now = time.time()
    for path in directory.iterdir():
        name = path.name
        if not name.startswith(PART_PREFIX):
            continue
        match = _PART_RE.match(name)
        try:
            if match:
                stale = not _pid_alive(int(match.group(1)))
            else:
                stale = now - path.lstat().st_mtime > _PART_MAX_AGE
            if stale and not path.is_dir():
                path.unlink()
                removed.append(path)
        except OSError:  # pragma: no cover - removed concurrently
            continue
    return removed


def _new_part(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(
        prefix=f"{PART_PREFIX}{os.getpid()}-", suffix=f"-{path.name}", dir=path.parent
    )
    os.close(fd)
    return Path(tmp)


def _chmod_default(tmp: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


def _check_target(path: Path) -> None:
    if path.is_dir():
        raise IsADirectoryError(
            f"Cannot write {path}: a folder of that name is in the way; remove or "
            "rename it and run again."
        )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On error the temporary file is removed, so no half-written file is left.
    The temporary name ends with the final name (``.part-<pid>-<token>-<name>``)
    so that writers that check endings (MNE's ``_fwd.fif``, nibabel's ``.gii``)
    accept it; the process id lets a later run remove temporaries of a killed
    one (:func:`clean_stale_parts`). The file gets the usual permissions (0666
    minus the umask). Inside :func:`atomic_group` the rename waits for the
    whole group.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_target(path)
    tmp = _new_part(path)
    group = _GROUP.get()
    try:
        yield tmp
        _chmod_default(tmp)
        if group is not None:
            group.append((tmp, path))
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _commit(pairs: list[tuple[Path, Path]]) -> None:
    """Rename every temporary onto its target, or none: roll back on failure."""
    last: dict[Path, tuple[Path, Path]] = {}
    for tmp, path in pairs:
        if path in last:  # written twice: the last write wins
            last[path][0].unlink(missing_ok=True)
        last[path] = (tmp, path)
    pairs = list(last.values())
    for _, path in pairs:
        _check_target(path)
    backups: list[tuple[Path, Path | None]] = []  # (target, hard link to old file)
    try:
        for tmp, path in pairs:
            old = None
            if path.exists():
                old = _new_part(path)
                old.unlink()
                try:
                    os.link(path, old)
                except OSError:  # no hard links on this file system
                    shutil.copy2(path, old)
            backups.append((path, old))
            os.replace(tmp, path)
    except BaseException:
        for path, old in reversed(backups):
            with contextlib.suppress(OSError):
                if old is not None:
                    os.replace(old, path)
                    # a rename onto a hard link of the same file does nothing
                    old.unlink(missing_ok=True)
                else:
                    path.unlink(missing_ok=True)
        for tmp, _ in pairs:
            tmp.unlink(missing_ok=True)
        raise
    for _, old in backups:
        if old is not None:
            old.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_group() -> Iterator[None]:
    """Commit every file written inside the block as one set, or none of them.

    Each writer (:func:`atomic_path`, :func:`write_json`, :func:`write_tsv`
    and the leadfield and surface writers built on them) writes to its
    temporary; at the end of the block all temporaries are renamed onto their
    targets. If a write or a rename fails, the temporaries are removed and
    the files of the previous run are put back, so a set is never a mix of
    two runs. Stale temporaries of killed runs in the folders written are
    removed first.
    """
    outer = _GROUP.get()
    if outer is not None:  # nested: part of the outer group
        yield
        return
    pairs: list[tuple[Path, Path]] = []
    token = _GROUP.set(pairs)
    try:
        yield
    except BaseException:
        for tmp, _ in pairs:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        _GROUP.reset(token)
    for folder in dict.fromkeys(path.parent for _, path in pairs):
        clean_stale_parts(folder)
    _commit(pairs)


def pending(path: str | os.PathLike) -> Path:
    """Where the content of ``path`` is now: its temporary inside an
    :func:`atomic_group` not yet committed, else ``path`` itself."""
    path = Path(path)
    for tmp, target in reversed(_GROUP.get() or []):
        if target == path:
            return tmp
    return path


def check_free_space(folder: str | os.PathLike, n_bytes: int, what: str) -> None:
    """Raise ``OSError(ENOSPC)`` naming ``what`` when ``folder`` has too little room.

    Called before large writes, so that a full disk is reported before any
    byte is written; a disk filling up during the write is reported by
    :func:`disk_errors`.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if n_bytes > free:
        raise OSError(
            errno.ENOSPC,
            f"Not enough disk space to write {what} in {folder}: it needs about "
            f"{n_bytes / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free. Free some "
            "space (or move the dataset) and run again; nothing was written.",
        )


#: errno values of a write refused for lack of room (full disk, quota, file-size limit).
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextlib.contextmanager
def disk_errors(path: str | os.PathLike, n_bytes: int, what: str) -> Iterator[None]:
    """Turn a write refused for lack of room into an ``OSError`` naming the file.

    A full disk (``ENOSPC``), a quota (``EDQUOT``) or a file-size limit
    (``EFBIG``) met in the middle of writing ``path`` re-raises with the same
    errno and a message naming ``what``, the file and the bytes it needs.
    The writers use it inside :func:`atomic_path`, so the temporary is
    removed and the previous file (or set, in :func:`atomic_group`) is kept.
    """
    path = Path(path)
    try:
        yield
    except OSError as exc:
        if exc.errno not in _NO_ROOM:
            raise
        raise OSError(
            exc.errno,
            f"Could not write {what} {path.name} in {path.parent}: "
            f"{os.strerror(exc.errno)} (it needs about {n_bytes / 2**20:.1f} MiB, "
            f"{n_bytes} bytes). Free some space (or raise the quota or file-size "
            "limit, `ulimit -f`) and run again; the files of the previous run were "
            "kept.",
        ) from exc


def write_bytes(
    path: str | os.PathLike, data: bytes | memoryview, what: str, *, chunk: int = 2**24
) -> Path:
    """Write ``data`` to ``path`` atomically, in chunks, with plain Python I/O.

    Used for file images built in memory (the HDF5 leadfield), so that a disk
    filling up mid-file is an ordinary ``OSError`` (see :func:`disk_errors`)
    and never reaches a library that cannot recover from it.
    """
    path = Path(path)
    view = memoryview(data).cast("B")
    with atomic_path(path) as tmp, disk_errors(path, view.nbytes, what):
        with open(tmp, "wb") as fid:
            for start in range(0, view.nbytes, chunk):
                fid.write(view[start : start + chunk])
    return path


def content_id(*parts: Any) -> str:
    """A short identifier of a set of files from what they hold (arrays, values).

    Written as ``RunId`` in every sidecar of a set (e.g. the layer surfaces)
    so that a reader can check that all files come from the same run; equal
    inputs give equal ids, so a clean rerun stays byte-identical.
    """
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            arr = np.ascontiguousarray(part)
            h.update(str((arr.dtype.str, arr.shape)).encode())
            h.update(arr.tobytes() if arr.dtype.kind != "O" else repr(arr.tolist()).encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=_json_default).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def sha256_file(path: str | os.PathLike, chunk: int = 2**22) -> str:
    """SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fid:
        while block := fid.read(chunk):
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented UTF-8 JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(
            json.dumps(data, indent=2, default=_json_default, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
    return path


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> Path:
    """Write arrays as an uncompressed ``.npz`` (what :func:`numpy.savez` writes), atomically.

    The zip members carry a fixed date (1980-01-01, the zip epoch) instead
    of the time of writing, so the same arrays give the same bytes; object
    arrays are refused (never pickled).
    """
    import zipfile

    path = Path(path)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
        for key, val in arrays.items():
            member = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(member, "w", force_zip64=True) as fid:
                np.lib.format.write_array(fid, np.asanyarray(val), allow_pickle=False)
    return path


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"JSON file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def _tsv_value(val: Any) -> str:
    if val is None:
        return "n/a"
    if isinstance(val, float | np.floating):
        return "n/a" if not np.isfinite(val) else repr(float(val))
    if isinstance(val, bool | np.bool_):
        return "true" if val else "false"
    return str(val)


def write_tsv(path: str | os.PathLike, columns: Mapping[str, Sequence[Any]]) -> Path:
    """Write a BIDS TSV (header row, ``n/a`` for missing), atomically."""
    path = Path(path)
    names = list(columns)
    lengths = {len(columns[name]) for name in names}
    if len(lengths) > 1:
        raise ValueError(f"TSV columns of {path.name} differ in length: {lengths}")
    n_rows = lengths.pop() if lengths else 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fid:
            writer = csv.writer(fid, delimiter="\t", lineterminator="\n")
            writer.writerow(names)
            cols = [columns[name] for name in names]
            for i in range(n_rows):
                writer.writerow([_tsv_value(col[i]) for col in cols])
    return path


def read_tsv(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a TSV into columns of strings."""
    with open(path, newline="", encoding="utf-8") as fid:
        rows = list(csv.reader(fid, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path} is empty")
    header, body = rows[0], rows[1:]
    return {name: [row[i] for row in body] for i, name in enumerate(header)}


# ------------------------------------------------------ dataset-level files
def ensure_derivative_dataset(
    root: str | os.PathLike,
    *,
    source_name: str = "raw",
    source_relpath: str = "../..",
    descriptions: Mapping[str, str] | None = None,
    links: Mapping[str, str] | None = None,
) -> Path:
    """Create or update the dataset-level files of the derivative dataset.

    ``links`` adds ``DatasetLinks`` entries (e.g. ``{"freesurfer":
    "../freesurfer"}`` for ``bids:freesurfer:...`` URIs in sidecars); links
    already in the file are kept.

    ``dataset_description.json`` (DatasetType derivative, GeneratedBy whose
    first name ``mne-laminar`` is part of the folder name, SourceDatasets as
    an array), ``README.md``, ``.bidsignore`` and ``descriptions.tsv``.
    Safe to call from several worker processes at once (atomic renames of
    identical content).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    desc = {
        "Name": "mne-laminar: laminar MEG derivatives",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": DERIV_NAME,
                "Version": __version__,
                "Description": "Layer surfaces, laminar leadfields and anatomical "
                "predictors of laminar inference accuracy (mne-laminar-plugin, "
                "run as MNE-BIDS-Pipeline steps).",
                "CodeURL": CODE_URL,
            }
        ],
        "SourceDatasets": [{"URL": f"bids:{source_name}:"}],
        "DatasetLinks": {source_name: source_relpath},
    }
    fname = root / "dataset_description.json"
    if fname.exists() or links:
        with contextlib.suppress(Exception):
            have_links = read_json(fname).get("DatasetLinks", {}) if fname.exists() else {}
            desc["DatasetLinks"] = {**have_links, **(links or {}), source_name: source_relpath}
    if not fname.exists() or read_json(fname) != json.loads(json.dumps(desc)):
        write_json(fname, desc)
    readme = root / "README.md"
    if not readme.exists():
        with atomic_path(readme) as tmp:
            tmp.write_text(
                "# mne-laminar derivatives\n\nWritten by mne-laminar-plugin "
                f"{__version__}. Layer surfaces and predictor maps are GIFTI in "
                "`anat/`, the laminar leadfield is in the data type folder "
                "(`meg/`, `eeg/`). Every file has a JSON sidecar.\n",
                encoding="utf-8",
            )
    ignore = root / ".bidsignore"
    lines = list(BIDSIGNORE)
    if ignore.exists():
        have = ignore.read_text(encoding="utf-8").splitlines()
        lines = have + [line for line in BIDSIGNORE if line not in have]
    if not ignore.exists() or ignore.read_text(encoding="utf-8").splitlines() != lines:
        with atomic_path(ignore) as tmp:
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    all_desc = dict(DESCRIPTIONS)
    all_desc.update(descriptions or {})
    dfname = root / "descriptions.tsv"
    if dfname.exists():
        have = read_tsv(dfname)
        old = {
            str(k).removeprefix("desc-"): v
            for k, v in zip(have.get("desc_id", []), have.get("description", []))
        }
        all_desc = {**old, **all_desc}
    ids = sorted(all_desc)
    # the schema requires desc_id values of the form "desc-<label>"
    write_tsv(
        dfname,
        {"desc_id": [f"desc-{i}" for i in ids], "description": [all_desc[i] for i in ids]},
    )
    return root


def bids_uri(dataset: str, relpath: str | os.PathLike) -> str:
    """A BIDS URI such as ``bids:raw:sub-01/anat/sub-01_T1w.nii.gz``."""
    return f"bids:{dataset}:{Path(relpath).as_posix()}"


def dataset_uri(
    path: str | os.PathLike, datasets: Mapping[str, str | os.PathLike]
) -> str | None:
    """BIDS URI of a file in the first of ``datasets`` (name -> root) holding it.

    ``""`` names the current dataset (``bids::sub-01/...``); None when no
    dataset holds the file. Paths are compared resolved.
    """
    path = Path(path).resolve()
    for name, root in datasets.items():
        root = Path(root).resolve()
        if path.is_relative_to(root):
            return bids_uri(name, path.relative_to(root))
    return None


def portable_path(value, roots: Mapping[str, str | os.PathLike | None]):
    """``<name>/relative/path`` for a path under one of ``roots``, else ``value``.

    The rule that keeps machine-specific folders out of sidecars and
    provenance: an absolute path (a string or path) inside root ``name``
    (the first that holds it, compared resolved) becomes
    ``"<name>/<path relative to it>"`` (POSIX separators), e.g.
    ``"<subjects_dir>/sub-01/surf/lh.white"``; a path equal to a root becomes
    ``"<name>"``. Anything else (relative paths, other strings, numbers,
    None) is returned unchanged, so a copied or moved dataset writes the
    same bytes.
    """
    if not isinstance(value, str | os.PathLike) or not os.path.isabs(value):
        return value
    path = Path(value).resolve()
    for name, root in roots.items():
        if root is None:
            continue
        root = Path(root).resolve()
        if path == root:
            return f"<{name}>"
        if path.is_relative_to(root):
            return f"<{name}>/{path.relative_to(root).as_posix()}"
    return value if isinstance(value, str) else str(value)


def remove_stale(directory: str | os.PathLike, pattern: str, keep: Sequence[Path]) -> list[Path]:
    """Remove files matching ``pattern`` in ``directory`` that are not in ``keep``.

    MBP never deletes stale outputs (e.g. ``desc-layer10`` after switching to
    3 layers); the laminar steps call this after writing their outputs.
    """
    directory = Path(directory)
    keep_set = {Path(p).resolve() for p in keep}
    removed = []
    if not directory.is_dir():
        return removed
    for path in directory.glob(pattern):
        if path.resolve() not in keep_set and path.is_file():
            path.unlink()
            removed.append(path)
    return removed
