"""MBP's report files, not read back when this process wrote them last.

Every MBP step (MBP's own and the laminar ones) opens the subject's report
(``mne.open_report`` of ``sub-XX_report.h5``, 0.1-0.3 s), adds its section
and saves it (``Report.save``). Within one run the next step reads back
exactly what the previous one saved. With :func:`install` (the plugin's
``mbp_patch`` hook, i.e. runs through ``mne-laminar``), a report this process
saved, or read, is kept in memory with the file's state (size, modification
time, inode) at that moment; opening that file again, unchanged, returns a
copy of it instead of reading it. Anything else (another process wrote the
file, it was moved or deleted, ``open_report`` with parameters) reads the
file as before. A report's state after an HDF5 round trip equals the one
saved (``Report.__getstate__``), so the copy is what the read would give.
"""

from __future__ import annotations

import copy
import functools
import os
import threading
from pathlib import Path

from .host import _ORIG_ATTR

#: path -> (file state, report) of the reports this process saved or read last
_KNOWN: dict[str, tuple[tuple[int, int, int], object]] = {}
_LOCK = threading.Lock()


def file_state(fname) -> tuple[int, int, int] | None:
    """(size, modification time in ns, inode) of a file, None if it is not there."""
    try:
        st = os.stat(fname)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _key(fname) -> str | None:
    path = Path(os.fspath(fname))
    return str(path.resolve()) if path.suffix == ".h5" else None


def remember(fname, report) -> None:
    """Keep a copy of ``report``, which ``fname`` now holds."""
    key = _key(fname)
    state = file_state(fname) if key else None
    if state is not None:
        with _LOCK:
            _KNOWN[key] = (state, copy.deepcopy(report))


def known(fname):
    """A copy of the report ``fname`` holds, if this process saved or read it unchanged."""
    key = _key(fname)
    if key is None:
        return None
    with _LOCK:
        hit = _KNOWN.get(key)
    if hit is None or hit[0] != file_state(fname):
        return None
    return copy.deepcopy(hit[1])


def forget() -> None:
    """Drop every kept report (tests)."""
    with _LOCK:
        _KNOWN.clear()


def install() -> None:
    """Route ``mne.open_report`` and ``mne.Report.save`` through the cache (idempotent)."""
    import mne

    if getattr(mne.open_report, _ORIG_ATTR, None) is None:
        orig_open = mne.open_report

        @functools.wraps(orig_open)
        def open_report(fname, **params):
            report = None if params else known(fname)
            if report is not None:
                return report
            state = file_state(fname)
            report = orig_open(fname, **params)
            if not params and state is not None and file_state(fname) == state:
                remember(fname, report)  # read while unchanged: that is its content
            return report

        setattr(open_report, _ORIG_ATTR, orig_open)
        mne.open_report = open_report
    if getattr(mne.Report.save, _ORIG_ATTR, None) is None:
        orig_save = mne.Report.save

        @functools.wraps(orig_save)
        def save(self, fname=None, *args, **kwargs):
            out = orig_save(self, fname, *args, **kwargs)
            target = fname if fname is not None else getattr(self, "fname", None)
            if target is not None:
                remember(target, self)
            return out

        setattr(save, _ORIG_ATTR, orig_save)
        mne.Report.save = save
