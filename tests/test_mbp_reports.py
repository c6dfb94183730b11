"""MBP's report file between laminar steps: read in full once, not once per step."""

from __future__ import annotations

import os
from types import SimpleNamespace


def test_report_saved_by_a_finished_step_is_not_read_again(tmp_path, monkeypatch):
    from mne_bids_pipeline._report import _report_path

    from mne_laminar_plugin.pipeline import _mbp

    cfg = SimpleNamespace(acq=None, rec=None, space=None, datatype="meg", deriv_root=tmp_path)
    config = SimpleNamespace(deriv_root=tmp_path, all_tasks=[])
    report = _report_path(cfg=cfg, subject="01", session=None).fpath
    report.parent.mkdir(parents=True)
    report.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # unreadable
    monkeypatch.setattr(_mbp, "_REPORTS_SAVED", {})
    # as left by a laminar step of this process that ran to its end: not read again
    _mbp._REPORTS_SAVED[str(report)] = _mbp._file_state(report)
    assert _mbp.recover_mbp_files(config, [(cfg, "01", None)]) == []
    assert report.is_file()
    # changed since (another process wrote it): read, and set aside when unreadable
    report.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 90)
    st = os.stat(report)
    os.utime(report, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    moved = _mbp.recover_mbp_files(config, [(cfg, "01", None)])
    assert len(moved) == 1 and not report.exists() and ".corrupt-" in moved[0].name


def test_portable_path(tmp_path):
    """One rule for folders in outputs: ``<name>/relative`` inside a root, else as is."""
    from mne_laminar_plugin.bids import portable_path

    sd, root = tmp_path / "bids" / "derivatives" / "freesurfer", tmp_path / "bids"
    roots = {"subjects_dir": sd, "bids_root": root}
    assert portable_path(str(sd / "sub-01" / "bem" / "x.fif"), roots) == (
        "<subjects_dir>/sub-01/bem/x.fif"  # the first root holding it, not bids_root
    )
    assert portable_path(root / "derivatives" / "mne-bids-pipeline" / "t.fif", roots) == (
        "<bids_root>/derivatives/mne-bids-pipeline/t.fif"
    )
    assert portable_path(str(sd), roots) == "<subjects_dir>"
    elsewhere = str(tmp_path / "other" / "lf.npz")
    assert portable_path(elsewhere, roots) == elsewhere
    for value in ("relative/path.fif", "fast", 5.0, None, ["a"]):
        assert portable_path(value, roots) == value
    assert portable_path(str(sd / "a"), {"subjects_dir": None}) == str(sd / "a")
