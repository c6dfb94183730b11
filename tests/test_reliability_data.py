"""Issue 14, "data loss and mixed outputs": a user's files are never deleted or mixed.

Each test rebuilds one case of the adversarial run (crafted folders, files in
the way, a write failing in the middle, a full disk, a killed process, a
corrupt MBP report) and checks the message and the files left on disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mne_laminar_plugin import bids
from mne_laminar_plugin.demo import DEMO_VERSION, STAMP_NAME, make_demo_dataset
from mne_laminar_plugin.surfaces import LaminarSurfaces

from _fs_fixtures import make_fsaverage5_subject  # noqa: E402
from _reliab_helpers import parts, snapshot, sphere_forward, write_leadfield_set  # noqa: E402
from test_host import restore_mbp  # noqa: E402, F401  (fixture)


@pytest.fixture(scope="module")
def fs5(tmp_path_factory):
    return make_fsaverage5_subject(tmp_path_factory.mktemp("subjects_fs5"), "fs5")


@pytest.fixture(scope="module")
def surf_pair(fs5):
    """Two layer-surface sets of one subject that differ by an option."""
    a = LaminarSurfaces.from_freesurfer("fs5", fs5.subjects_dir, n_layers=3, spacing="oct3")
    b = LaminarSurfaces.from_freesurfer(
        "fs5", fs5.subjects_dir, n_layers=3, spacing="oct3", method="equivolume"
    )
    return a, b


# ------------------------------------------------------------------ demo
def _fake_finished_demo(root: Path, demo, seed: int) -> None:
    """The files by which a finished demo is recognised, plus MBP/laminar outputs."""
    (root / "bids" / "sourcedata").mkdir(parents=True)
    (root / "bids" / "sourcedata" / "demo_truth.json").write_bytes(
        (demo.bids_root / "sourcedata" / "demo_truth.json").read_bytes()
    )
    (root / "demo_config.py").write_bytes(demo.config_path.read_bytes())
    (root / STAMP_NAME).write_text(
        json.dumps(dict(n_subjects=1, seed=seed, version=DEMO_VERSION, complete=True))
    )
    for name in ("mne-bids-pipeline", "mne-laminar"):
        out = root / "bids" / "derivatives" / name / "sub-01"
        out.mkdir(parents=True)
        (out / "result.txt").write_text("a day of computing")


def test_demo_refuses_user_bids_folder(tmp_path):
    (tmp_path / "bids").mkdir()
    (tmp_path / "bids" / "mine.txt").write_text("my data")
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match="not a demo made by mne-laminar.*--overwrite"):
        make_demo_dataset(tmp_path)
    assert snapshot(tmp_path) == before


def test_demo_refuses_to_replace_user_config(tmp_path):
    (tmp_path / "demo_config.py").write_text("# my own config\n")
    with pytest.raises(FileExistsError, match="demo_config.py"):
        make_demo_dataset(tmp_path, seed=1)
    assert (tmp_path / "demo_config.py").read_text() == "# my own config\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo_config.py"]


def test_demo_rerun_with_other_seed_keeps_derivatives(tmp_path, demo):
    _fake_finished_demo(tmp_path, demo, seed=42)
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match=r"other settings .*seed=42.*seed=43"):
        make_demo_dataset(tmp_path, seed=43)
    assert snapshot(tmp_path) == before
    # same settings: the finished demo is reused, nothing rebuilt or deleted
    again = make_demo_dataset(tmp_path, seed=42)
    assert again.truth == demo.truth
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("no_run", [True, False])
def test_demo_cli_refuses_with_exit_2(tmp_path, cli, no_run):
    """Built here (``--no-run``) or in the demo's child process: the same refusal."""
    (tmp_path / "bids").mkdir()
    (tmp_path / "bids" / "mine.txt").write_text("my data")
    res = cli("demo", str(tmp_path), *(["--no-run"] if no_run else []))
    assert res.returncode == 2, res.stderr
    assert "Refusing to write the demo" in res.stderr and "--overwrite" in res.stderr
    assert "Traceback" not in res.stderr
    assert (tmp_path / "bids" / "mine.txt").read_text() == "my data"


def test_demo_in_empty_folder_writes_a_stamp(demo):
    stamp = json.loads((demo.root / STAMP_NAME).read_text())
    assert stamp == dict(n_subjects=1, seed=42, version=DEMO_VERSION, complete=True)


# ----------------------------------------------------------- deriv name
@pytest.mark.parametrize(
    "name, match",
    [
        ("../../escaped", "plain folder name"),
        ("", "plain folder name"),
        ("a/b", "plain folder name"),
        ("..", "plain folder name"),
        (".hidden", "plain folder name"),
        ("mne-bids-pipeline", "another tool"),
        ("freesurfer", "another tool"),
    ],
)
def test_deriv_name_is_a_plain_folder_name(tmp_path, name, match):
    with pytest.raises(ValueError, match=f"laminar_deriv_name={name!r}.*{match}"):
        bids.deriv_root(tmp_path, name)
    assert bids.deriv_root(tmp_path, "mne-laminar_v2") == tmp_path / "derivatives" / "mne-laminar_v2"


def test_deriv_name_refused_by_config_validation(tmp_path, restore_mbp):
    from mne_bids_pipeline._config_import import _import_config

    from mne_laminar_plugin.pipeline.host import PluginHost

    PluginHost().install()
    base = f"bids_root = {str(tmp_path)!r}\nch_types = ['meg']\nconditions = ['stim']\n"
    for i, name in enumerate(("../../escaped", "", "mne-bids-pipeline")):
        cfg_file = tmp_path / f"bad{i}.py"
        cfg_file.write_text(base + f"laminar_deriv_name = {name!r}\n")
        with pytest.raises(ValueError, match="laminar_deriv_name"):
            _import_config(config_path=cfg_file, add_all_tasks=False)
    assert not (tmp_path / "derivatives").exists()


# ------------------------------------------------------- group commits
def test_surface_save_failing_on_one_file_keeps_the_old_set(surf_pair, tmp_path):
    """A file in the way of the new set: nothing of the new set is committed."""
    a, b = surf_pair
    root = tmp_path / "deriv"
    a.save(root, "01")
    before = snapshot(root)
    # the sidecar of one layer replaced by a folder (cannot be overwritten)
    blocked = sorted((root / "sub-01" / "anat").glob("*desc-layer01_midthickness.json"))[0]
    blocked.unlink()
    blocked.mkdir()
    with pytest.raises(IsADirectoryError, match=blocked.name):
        b.save(root, "01")
    after = snapshot(root)
    assert {p: v for p, v in before.items() if p != blocked} == after
    assert parts(root) == []
    blocked.rmdir()
    b.save(root, "01")
    loaded = LaminarSurfaces.load(root, "01")
    np.testing.assert_array_equal(loaded.layers, b.layers)


def test_surface_save_rename_failure_rolls_back(surf_pair, tmp_path, monkeypatch):
    """A rename failing midway through the commit puts every old file back."""
    a, b = surf_pair
    root = tmp_path / "deriv"
    a.save(root, "01")
    before = snapshot(root)
    orig = os.replace
    calls = {"n": 0}

    def flaky(src, dst):
        if ".part-" in str(src) and not Path(dst).name.startswith(".part-"):
            calls["n"] += 1
            if calls["n"] == 6:
                raise PermissionError(13, "Permission denied", str(dst))
        return orig(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(PermissionError):
        b.save(root, "01")
    monkeypatch.setattr(os, "replace", orig)
    assert calls["n"] > 6  # the sixth rename failed, then the rollback renamed back
    assert snapshot(root) == before
    assert parts(root) == []
    np.testing.assert_array_equal(LaminarSurfaces.load(root, "01").layers, a.layers)


def test_load_refuses_a_mix_of_two_runs(surf_pair, tmp_path):
    a, b = surf_pair
    root_a, root_b = tmp_path / "a", tmp_path / "b"
    a.save(root_a, "01")
    b.save(root_b, "01")
    side_a = json.loads(
        next((root_a / "sub-01" / "anat").glob("*_surfaces.json")).read_text()
    )
    assert side_a["RunId"] != json.loads(
        next((root_b / "sub-01" / "anat").glob("*_surfaces.json")).read_text()
    )["RunId"]
    # one layer (GIFTI + sidecar) of run b inside run a's set
    for path in (root_b / "sub-01" / "anat").glob("*hemi-R*desc-layer02_midthickness*"):
        (root_a / "sub-01" / "anat" / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match=r"desc-layer02_midthickness.surf.gii is not from the same run"):
        LaminarSurfaces.load(root_a, "01")


def test_clean_rerun_is_byte_identical(surf_pair, tmp_path):
    a, _ = surf_pair
    a.save(tmp_path / "x", "01")
    a.save(tmp_path / "y", "01")
    sx, sy = snapshot(tmp_path / "x"), snapshot(tmp_path / "y")
    assert [p.relative_to(tmp_path / "x") for p in sx] == [p.relative_to(tmp_path / "y") for p in sy]
    assert list(sx.values()) == list(sy.values())


def _group_run(fs5, root, seed):
    """The group step's inputs: two subjects' scores on the fs5 template, best rows."""
    import mne

    from mne_laminar_plugin.pipeline.steps.laminar import _99_group_predictors as G

    cfg = SimpleNamespace(laminar_root=root, template="fs5",
                          group_subjects=(("01", "fs5"), ("02", "fs5")))  # fmt: skip
    rng = np.random.default_rng(seed)
    n_vert = {h: len(mne.read_surface(fs5.surf_dir / f"{h}.sphere")[0]) for h in ("lh", "rh")}
    mapped = {h: [rng.normal(size=n) for _ in range(2)] for h, n in n_vert.items()}
    for vals in mapped["lh"]:
        vals[fs5.medial["lh"]] = np.nan  # no columns on the medial wall
    rows = [dict(subject=s, hemi="L", vertex=int(rng.integers(100)), score=float(rng.normal()),
                 x=1.0, y=2.0, z=3.0, template_vertex=7, template_x=1.5, template_y=2.5,
                 template_z=3.5) for s in ("01", "02")]  # fmt: skip
    return G, cfg, mapped, rows


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_group_save_failing_midway_keeps_the_old_set(fs5, tmp_path, monkeypatch):
    """The group step's maps, table and sidecars are one set: a write failing after
    some of them keeps every file of the previous run; stale temporaries are removed."""
    import nibabel as nib

    from mne_laminar_plugin import predictors as P

    root = tmp_path / "deriv"
    G, cfg, mapped, rows = _group_run(fs5, root, seed=0)
    out, means = G._save(cfg, None, mapped, rows)
    assert len(out) == 5 and all(p.is_file() for p in out.values())
    mean = nib.load(out["hemi-L_space-fs5_desc-scoreMean_stat.func.gii"]).darrays[0].data
    np.testing.assert_allclose(mean, np.nanmean(mapped["lh"], axis=0), rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(means["lh"], np.nanmean(mapped["lh"], axis=0))
    before = snapshot(root)
    G2, cfg2, mapped2, rows2 = _group_run(fs5, root, seed=1)  # a new result
    orig, calls = P.write_gifti_map, {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # rh mean, after both lh maps and their sidecars
            raise OSError(28, "No space left on device")
        return orig(*args, **kwargs)

    monkeypatch.setattr(P, "write_gifti_map", failing)
    with pytest.raises(OSError, match="No space left"):
        G2._save(cfg2, None, mapped2, rows2)
    monkeypatch.setattr(P, "write_gifti_map", orig)
    assert calls["n"] == 3
    assert snapshot(root) == before
    assert parts(root) == []
    # a temporary of a killed run is removed by the next commit in the folder
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = root / "group" / f".part-{dead}-x1-hemi-L_space-fs5_desc-scoreMean_stat.func.gii"
    stale.write_text("half")
    out2, _ = G2._save(cfg2, None, mapped2, rows2)
    assert parts(root) == []
    assert sorted(out2) == sorted(out)
    assert bids.read_tsv(out2["space-fs5_desc-bestcolumns_predictors.tsv"])["score"] == [
        repr(r["score"]) for r in rows2
    ]


# ------------------------------------------------------------ disk full
@pytest.fixture(scope="module")
def fwd_data(tmp_path_factory):
    from mne_laminar_plugin.leadfield import read_leadfield

    fname = tmp_path_factory.mktemp("fwd") / "sphere-fwd.fif"
    sphere_forward(fname)
    return read_leadfield(fname, orientation_type="free")


def test_full_disk_refused_before_the_h5_write(fwd_data, tmp_path, monkeypatch):
    import shutil

    from mne_laminar_plugin.leadfield import write_leadfield

    real = shutil.disk_usage
    monkeypatch.setattr(
        bids.shutil, "disk_usage", lambda p: real(p)._replace(free=fwd_data.leadfield.nbytes // 2)
    )
    fname = tmp_path / "sub-01_desc-laminar_leadfield.h5"
    with pytest.raises(OSError, match=r"Not enough disk space to write the leadfield "
                       r"sub-01_desc-laminar_leadfield.h5") as err:
        write_leadfield(fname, fwd_data)
    assert err.value.errno == 28
    assert list(tmp_path.iterdir()) == []


_LIMITED_WRITE = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from _reliab_helpers import write_leadfield_set
    from mne_laminar_plugin.leadfield import read_leadfield

    data = read_leadfield({fwd!r}, orientation_type="free")
    data.leadfield *= 2.0  # a new result
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit: EFBIG
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    if {where!r} == "h5":
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, hard))
        write_leadfield_set(Path({folder!r}), data, {{"Run": "new"}})
    else:
        write_leadfield_set(Path({folder!r}), data, {{"Run": "new"}},
                            fsize_limit_before_fif={limit})
    """
)


@pytest.mark.parametrize("where", ["h5", "fif"])
def test_write_limit_mid_file_keeps_old_set(fwd_data, tmp_path, where):
    """A real file-size limit hit in the middle of the HDF5 or FIF write (EFBIG,
    as a disk filling up): a clear error, no crash, the old set byte-identical."""
    fwd = tmp_path / "sphere-fwd.fif"
    from mne_laminar_plugin.leadfield import write_forward_fif

    write_forward_fif(fwd, fwd_data)
    folder = tmp_path / "meg"
    folder.mkdir()
    h5, fif = write_leadfield_set(folder, fwd_data, {"Run": "old"})
    before = snapshot(folder)
    target = h5 if where == "h5" else fif
    size = target.stat().st_size
    limit = size // 2  # half of the file (every sidecar is smaller)
    assert max(p.stat().st_size for p in folder.glob("*.json")) < limit
    script = _LIMITED_WRITE.format(
        tests=str(Path(__file__).parent), fwd=str(fwd), where=where, limit=limit,
        folder=str(folder),
    )  # fmt: skip
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert res.returncode > 0, (res.returncode, res.stderr[-3000:])  # an error, not a signal
    what = "the leadfield" if where == "h5" else "the forward"
    assert f"OSError: [Errno 27] Could not write {what} {target.name} in {folder}" in res.stderr
    assert "bytes). Free some space" in res.stderr and "previous run were kept" in res.stderr
    if where == "h5":  # the exact size of the image
        assert f"{size} bytes)" in res.stderr
    assert snapshot(folder) == before
    assert parts(tmp_path) == []
    assert json.loads(bids.sidecar(h5).read_text())["Run"] == "old"


def test_leadfield_files_hold_no_wall_clock_time(fwd_data, tmp_path, monkeypatch):
    """A clean rewrite gives the same bytes (no creation time, no timings);
    SOURCE_DATE_EPOCH, when set, is the creation time written."""
    import h5py

    from mne_laminar_plugin import leadfield as L

    data = fwd_data
    prov = dict(data.provenance)
    try:
        data.provenance = dict(prov, created="2026-01-01T10:00:00+0000",
                               timings_s={"forward": 1.25})  # fmt: skip
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
        a = L.write_leadfield(tmp_path / "a_leadfield.h5", data)
        data.provenance["created"], data.provenance["timings_s"] = "later", {"forward": 2.5}
        b = L.write_leadfield(tmp_path / "b_leadfield.h5", data)
        fa, fb = L.write_forward_fif(tmp_path / "a_fwd.fif", data), L.write_forward_fif(
            tmp_path / "b_fwd.fif", data
        )
        na = data.to_npz(tmp_path / "a_leadfield.npz")
        nb = data.to_npz(tmp_path / "b_leadfield.npz")
        monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
        c = L.write_leadfield(tmp_path / "c_leadfield.h5", data)
        monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
        with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH='yesterday' is not a Unix time"):
            L.write_leadfield(tmp_path / "d_leadfield.h5", data)
    finally:
        data.provenance = prov
    assert a.read_bytes() == b.read_bytes() and fa.read_bytes() == fb.read_bytes()
    assert na.read_bytes() == nb.read_bytes()
    import zipfile

    with zipfile.ZipFile(na) as zf:  # the zip epoch, not the time of writing
        assert {m.date_time for m in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    back = L.read_leadfield(na)
    np.testing.assert_array_equal(back.leadfield, data.leadfield)
    assert "created" not in back.provenance
    with h5py.File(a) as f:
        written = json.loads(f.attrs["provenance"])
    assert "created" not in written and "timings_s" not in written
    with h5py.File(c) as f:
        assert json.loads(f.attrs["provenance"])["created"] == "2026-01-01T00:00:00Z"
    assert not (tmp_path / "d_leadfield.h5").exists() and parts(tmp_path) == []


# ---------------------------------------------------- stale temporaries
def test_stale_temporaries_of_dead_processes_are_removed(surf_pair, tmp_path):
    a, _ = surf_pair
    root = tmp_path / "deriv"
    anat = root / "sub-01" / "anat"
    anat.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = anat / f".part-{dead}-x1-sub-01_hemi-L_den-oct3_desc-layer00_midthickness.surf.gii"
    stale.write_text("half")
    old_style = anat / ".part-abcdefgh-sub-01_den-oct3_desc-laminar_columns.tsv"
    old_style.write_text("half")
    os.utime(old_style, (time.time() - 7200, time.time() - 7200))
    alive = anat / f".part-{os.getppid()}-x2-other.json"  # a running process's
    alive.write_text("in progress")
    a.save(root, "01")
    assert not stale.exists() and not old_style.exists()
    assert alive.exists()


def test_sigkill_during_surface_save_then_rerun(surf_pair, fs5, tmp_path):
    """A real process killed mid-save leaves temporaries; the next run removes them."""
    root = tmp_path / "deriv"
    script = textwrap.dedent(
        f"""
        import time, nibabel as nib
        from mne_laminar_plugin.surfaces import LaminarSurfaces
        surf = LaminarSurfaces.from_freesurfer("fs5", {str(fs5.subjects_dir)!r},
                                               n_layers=3, spacing="oct3")
        orig = nib.save
        def slow(*a, **k):
            orig(*a, **k)
            print("saved", flush=True)
            time.sleep(0.5)
        nib.save = slow
        surf.save({str(root)!r}, "01")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    n_saved = 0
    while n_saved < 3:
        line = proc.stdout.readline()
        assert line, "the save ended before it could be killed"
        n_saved += line.startswith("saved")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(parts(root)) >= 3
    assert not list((root / "sub-01" / "anat").glob("sub-01_*"))  # nothing committed
    a, _ = surf_pair
    a.save(root, "01")
    assert parts(root) == []
    np.testing.assert_array_equal(LaminarSurfaces.load(root, "01").layers, a.layers)


# --------------------------------------------------- corrupt MBP files
def _mbp_cfg(deriv_root: Path):
    cfg = SimpleNamespace(acq=None, rec=None, space=None, datatype="meg", deriv_root=deriv_root)
    config = SimpleNamespace(deriv_root=deriv_root, all_tasks=["demo"])
    return config, cfg


def test_corrupt_report_and_log_are_set_aside(tmp_path, caplog):
    import zipfile

    from mne_bids_pipeline._report import _report_path

    from mne_laminar_plugin.pipeline._mbp import recover_mbp_files

    config, cfg = _mbp_cfg(tmp_path)
    report = _report_path(cfg=cfg, subject="01", session=None).fpath
    report.parent.mkdir(parents=True)
    report.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # truncated by a SIGKILL
    log = tmp_path / "task-demo_log.xlsx"
    with zipfile.ZipFile(log, "w") as zf:
        zf.writestr("xl/workbook.xml", "<workbook/>" * 100)
    log.write_bytes(log.read_bytes()[:-40])  # cut mid-write
    report_bytes, log_bytes = report.read_bytes(), log.read_bytes()
    moved = recover_mbp_files(config, [(cfg, "01", None)])
    assert len(moved) == 2 and not report.exists() and not log.exists()
    assert {p.read_bytes() for p in moved} == {report_bytes, log_bytes}  # kept, not deleted
    assert all(".corrupt-" in p.name for p in moved)


def test_readable_report_and_log_are_left_alone(tmp_path):
    import mne
    import pandas as pd

    from mne_bids_pipeline._report import _report_path

    from mne_laminar_plugin.pipeline._mbp import recover_mbp_files

    config, cfg = _mbp_cfg(tmp_path)
    report = _report_path(cfg=cfg, subject="01", session=None).fpath
    report.parent.mkdir(parents=True)
    mne.Report(title="ok").save(report, open_browser=False)
    pd.DataFrame({"a": [1]}).to_excel(tmp_path / "task-demo_log.xlsx")
    before = snapshot(tmp_path)
    assert recover_mbp_files(config, [(cfg, "01", None)]) == []
    after = {p: v for p, v in snapshot(tmp_path).items() if p.suffix != ".lock"}  # MBP's locks
    assert after == before
