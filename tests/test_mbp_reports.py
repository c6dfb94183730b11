"""MBP's report file between laminar steps: read in full once, not once per step."""

from __future__ import annotations

import os
import pickle
from types import SimpleNamespace

import mne


def test_report_saved_by_a_finished_step_is_not_read_again(tmp_path):
    from mne_bids_pipeline._report import _report_path

    from mne_laminar_plugin.pipeline import _mbp, _report_cache

    cfg = SimpleNamespace(acq=None, rec=None, space=None, datatype="meg", deriv_root=tmp_path)
    config = SimpleNamespace(deriv_root=tmp_path, all_tasks=[])
    report = _report_path(cfg=cfg, subject="01", session=None).fpath
    report.parent.mkdir(parents=True)
    report.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # unreadable
    _report_cache.forget()
    # as left by a step of this process (it saved it): not read again
    _report_cache.remember(report, mne.Report(title="kept"))
    assert _mbp.recover_mbp_files(config, [(cfg, "01", None)]) == []
    assert report.is_file()
    # changed since (another process wrote it): read, and set aside when unreadable
    report.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 90)
    st = os.stat(report)
    os.utime(report, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _report_cache.known(report) is None
    moved = _mbp.recover_mbp_files(config, [(cfg, "01", None)])
    assert len(moved) == 1 and not report.exists() and ".corrupt-" in moved[0].name
    _report_cache.forget()


def test_report_cache_returns_what_a_read_returns(tmp_path):
    """A report saved by this process, reopened unchanged: equal to a read, not aliased."""
    from mne_laminar_plugin.pipeline import _report_cache

    _report_cache.forget()
    fname = tmp_path / "sub-01_report.h5"
    report = mne.Report(title="sub-01")
    report.add_html("<p>one</p>", title="one", section="S")
    orig_open, orig_save = mne.open_report, mne.Report.save
    try:
        _report_cache.install()
        _report_cache.install()  # idempotent
        report.save(fname, overwrite=True, verbose="error")
        report.save(tmp_path / "sub-01_report.html", overwrite=True, open_browser=False,
                    verbose="error")  # (not kept: not HDF5)
        kept = mne.open_report(fname)
        read = orig_open(fname)
        assert kept is not report

        def state(rep):  # (HDF5 gives back a bool option as 0/1)
            return pickle.dumps({k: int(v) if isinstance(v, bool) else v
                                 for k, v in rep.__getstate__().items()})  # fmt: skip

        assert state(kept) == state(read)
        kept.add_html("<p>two</p>", title="two", section="S")  # the copy only
        assert len(mne.open_report(fname)._content) == 1
        # another writer: the file is read again
        other = mne.Report(title="other")
        orig_save(other, fname, overwrite=True, verbose="error")
        st = os.stat(fname)
        os.utime(fname, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        assert mne.open_report(fname).title == "other"
    finally:
        mne.open_report, mne.Report.save = orig_open, orig_save
        _report_cache.forget()


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
