"""The ``.npz`` layout: CaliBrain's files both ways (with the real package), safety.

CaliBrain (``calibrain==1.0.3``, installed by ``.ci/run`` without its GUI
dependencies) writes its leadfields with ``calibrain/extract_leadfield.py``;
that module runs its own extraction when imported, reading forwards from
``$CALIBRAIN_DATA/1284src_fwd``: the tests give it a real MNE forward there.
"""

from __future__ import annotations

import importlib.util
import pickle
import tracemalloc
import zipfile
from pathlib import Path

import mne
import numpy as np
import pytest
from test_forward import CENTER, make_info, mne_forward, some_trans

from mne_laminar_plugin import LeadfieldBuilder
from mne_laminar_plugin import leadfield as L

SI = {"mag": 1e6, "grad": 1e4, "eeg": 1e-3}
UNIT = {"mag": 112, "grad": 201, "eeg": 107}
# the subjects extract_leadfield.py extracts at import (eeg: fsaverage; mag: four)
CB_SUBJECTS = {"eeg": ["fsaverage"], "mag": ["CC120166", "CC120264", "CC120309", "CC120313"]}


def _warn_level():
    return mne.utils.use_log_level("warning")  # mne.utils.warn is silent below it


# ============================================================ fixtures
@pytest.fixture(scope="module")
def forward_file(tmp_path_factory):
    """A real MNE forward (mag + planar grad + EEG, sphere model) on disk."""
    root = tmp_path_factory.mktemp("cbfwd")
    rng = np.random.default_rng(3)
    u = rng.normal(size=(40, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    rr = CENTER + 0.06 * u
    nn = rng.normal(size=(40, 3))
    info = make_info(5, 8, 6)
    sphere = mne.make_sphere_model(r0=CENTER, head_radius=0.09, verbose=False)
    fwd = mne_forward(info, some_trans(), sphere, rr, nn)
    fname = root / "ref-fwd.fif"
    mne.write_forward_solution(fname, fwd, verbose=False)
    return fname


def _calibrain():
    return pytest.importorskip("calibrain.leadfield_builder")


@pytest.fixture(scope="module")
def calibrain_files(forward_file, tmp_path_factory):
    """Leadfields written by CaliBrain's own writer from ``forward_file``."""
    _calibrain()
    data = tmp_path_factory.mktemp("cbdata")
    fwd_dir = data / "1284src_fwd"
    fwd_dir.mkdir()
    for subject in sum(CB_SUBJECTS.values(), []):
        (fwd_dir / f"{subject}-fwd.fif").symlink_to(forward_file)
    mp = pytest.MonkeyPatch()
    mp.setenv("CALIBRAIN_DATA", str(data))
    try:
        import calibrain

        path = Path(calibrain.__file__).parent / "extract_leadfield.py"
        spec = importlib.util.spec_from_file_location("_cb_extract_leadfield", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # extracts eeg + mag, fixed + free
        grad_dir = data / "grad"
        for ori in ("fixed", "free"):
            module.extract_leadfield(str(fwd_dir), "CC120166", "grad", ori, grad_dir)
    finally:
        mp.undo()
    return {"mag": data / "1284src_leadfield", "eeg": data / "1284src_leadfield",
            "grad": grad_dir}  # fmt: skip


def _reference(forward_file, ch_type, ori):
    """Rows of one channel type from MNE directly: (SI gain, fixed or free xyz)."""
    fwd = mne.read_forward_solution(forward_file, verbose=False)
    if ori == "fixed":
        fwd = mne.convert_forward_solution(fwd, surf_ori=True, force_fixed=True, verbose=False)
    picks = [c["ch_name"] for c in fwd["info"]["chs"] if c["unit"] == UNIT[ch_type]]
    fwd = fwd.pick_channels(picks, ordered=True)
    gain = np.asarray(fwd["sol"]["data"], float)
    return gain if ori == "fixed" else gain.reshape(len(picks), -1, 3)


def _stored(fname, key="leadfield"):
    with np.load(fname, allow_pickle=False) as npz:  # plain arrays only
        return npz[key]


# ==================================================== CaliBrain -> here
@pytest.mark.filterwarnings("ignore:.*holds a pickled Python object:RuntimeWarning")
@pytest.mark.parametrize("ch_type", ["mag", "grad", "eeg"])
@pytest.mark.parametrize("ori", ["fixed", "free"])
def test_calibrain_writer_files_load_here(calibrain_files, forward_file, ch_type, ori):
    """Files of CaliBrain's writer load: values, shapes, units; pickles skipped."""
    cb = _calibrain()
    subject = CB_SUBJECTS[ch_type][0] if ch_type != "grad" else "CC120166"
    folder = calibrain_files[ch_type]
    fname = folder / f"{subject}_{ori}_leadfield.npz"
    with _warn_level(), pytest.warns(RuntimeWarning, match=r"'info' holds a pickled.*measurement info"):
        data = LeadfieldBuilder(leadfield_dir=folder).get_leadfield(
            subject, ori, "load", return_metadata=True
        )
    ref = _reference(forward_file, ch_type, ori)
    n_ch, n_src = ref.shape[:2]
    assert data.n_sensors == n_ch and data.n_sources == n_src
    label = {"mag": "fT/nAm", "grad": "fT/cm/nAm", "eeg": "uV/nAm"}[ch_type]
    assert data.units == [label] * n_ch and data.ch_types == [ch_type] * n_ch
    assert data.sensor_units == UNIT[ch_type]
    assert data.sensor_unitmult == {"mag": -15, "grad": -13, "eeg": -6}[ch_type]
    if ori == "fixed":
        np.testing.assert_allclose(data.leadfield, ref * SI[ch_type], rtol=1e-6)
        assert data.Q_basis is None
    elif ch_type == "eeg":
        np.testing.assert_allclose(data.leadfield, ref * SI[ch_type], rtol=1e-6)
        np.testing.assert_array_equal(data.Q_basis, np.broadcast_to(np.eye(3), (n_src, 3, 3)))
    else:  # CaliBrain's reduced basis: K = 2, L_i Q_i of MNE's x/y/z block
        assert data.leadfield.shape == (n_ch, n_src, 2)
        q = data.Q_basis
        np.testing.assert_allclose(np.einsum("sdk,sdj->skj", q, q),
                                   np.broadcast_to(np.eye(2), (n_src, 2, 2)), atol=1e-6)  # fmt: skip
        np.testing.assert_allclose(data.leadfield, np.einsum("msd,sdk->msk", ref, q) * SI[ch_type],
                                   rtol=1e-5, atol=1e-6 * np.abs(ref).max() * SI[ch_type])  # fmt: skip
        # our own basis rule gives CaliBrain's basis on the same rows (float32 file)
        q2, _ = L.local_svd_basis(ref)
        np.testing.assert_allclose(q2, q, atol=1e-5)
    np.testing.assert_allclose(data.src_coords, _stored(fname, "src_coords"))
    # CaliBrain's own loader on the same file: equal, gradiometers x 100 (fT/m)
    theirs = cb.LeadfieldBuilder(leadfield_dir=str(folder)).get_leadfield(
        subject, ori, "load", return_metadata=True
    )
    factor = 100.0 if ch_type == "grad" else 1.0
    rtol = 1e-6 if data.leadfield.dtype == np.float32 else 1e-12  # float32 files
    np.testing.assert_allclose(theirs.leadfield, data.leadfield * factor, rtol=rtol)
    as_cb = L.read_leadfield(fname, grad_unit="fT/m")
    np.testing.assert_allclose(as_cb.leadfield, theirs.leadfield, rtol=rtol)
    if ch_type == "grad":
        assert as_cb.units == ["fT/m/nAm"] * n_ch and as_cb.sensor_unitmult == -15


# ==================================================== here -> CaliBrain
@pytest.mark.parametrize(("ori", "free_k"), [("fixed", None), ("free", 3), ("free", 2)])
@pytest.mark.parametrize("grad_unit", ["fT/m", "fT/cm"])
def test_exports_load_in_calibrain(forward_file, calibrain_files, tmp_path, ori, free_k,
                                   grad_unit):  # fmt: skip
    """A mixed mag/grad/EEG export: CaliBrain's loader reads every file back equal."""
    cb = _calibrain()
    data = L.read_leadfield(forward_file, orientation_type=ori)
    assert set(data.ch_types) == {"mag", "grad", "eeg"}
    fnames = data.to_calibrain(tmp_path, "sub-01", grad_unit=grad_unit, free_k=free_k)
    assert sorted(fnames) == ["eeg", "grad", "mag"]
    with pytest.raises(FileExistsError):
        data.to_calibrain(tmp_path, "sub-01", grad_unit=grad_unit, free_k=free_k)
    with zipfile.ZipFile(fnames["mag"]) as z:  # no pickles
        assert "info.npy" not in z.namelist()
    for ch_type, fname in fnames.items():
        rows = [i for i, t in enumerate(data.ch_types) if t == ch_type]
        theirs = cb.LeadfieldBuilder(leadfield_dir=str(fname.parent)).get_leadfield(
            "sub-01", ori, "load", return_metadata=True
        )
        assert int(theirs.sensor_units) == UNIT[ch_type]
        scale = 100.0 if (ch_type == "grad" and grad_unit == "fT/m") else 1.0
        mine = data.leadfield[rows]
        if ori == "free":
            k = free_k
            assert theirs.leadfield.shape == (len(rows), data.n_sources, k)
            q = np.asarray(theirs.Q_basis)
            mine = np.einsum("msd,sdk->msk", mine, q)  # ours in their basis
            if k == 2 and ch_type == "mag":  # the same as CaliBrain's own writer
                own = cb.LeadfieldBuilder(leadfield_dir=str(calibrain_files["mag"])).get_leadfield(
                    "CC120166", "free", "load"
                )
                np.testing.assert_allclose(theirs.leadfield, own, rtol=1e-5,
                                           atol=1e-6 * np.abs(own).max())  # fmt: skip
        np.testing.assert_allclose(theirs.leadfield, mine * scale, rtol=1e-12,
                                   atol=1e-12 * np.abs(mine).max())  # fmt: skip
        # and back here, in our units, with nothing skipped
        back = L.read_leadfield(fname)
        ref = data.leadfield[rows] if ori == "fixed" else np.einsum(
            "msd,sdk->msk", data.leadfield[rows], back.Q_basis)  # fmt: skip
        np.testing.assert_allclose(back.leadfield, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
        assert back.ch_names == [data.ch_names[i] for i in rows]


def test_get_leadfield_calibrain_calling_convention(tmp_path):
    """``config`` is the 4th positional argument (CaliBrain); keywords still work."""
    builder = LeadfieldBuilder()
    a = builder.get_leadfield("x", "fixed", "random", None, 5, 12, random_state=3)
    b = builder.get_leadfield("x", "fixed", "random", config=None, n_sensors=5, n_sources=12,
                              random_state=3)  # fmt: skip
    np.testing.assert_array_equal(a, b)
    assert a.shape == (5, 12)
    lf = np.random.default_rng(0).normal(size=(4, 6)) * 1e-7
    np.savez(tmp_path / "s_fixed_leadfield.npz", leadfield=lf, sensor_units=201, sensor_unitmult=0)
    got = builder.get_leadfield("s", "fixed", "load", {"leadfield_dir": tmp_path, "grad_unit": "fT/m"})
    np.testing.assert_allclose(got, lf * 1e6)
    assert builder.leadfield_dir is None  # the config applies to that call only
    with pytest.raises(ValueError, match=r"config has unknown key\(s\) \['data'\]"):
        builder.get_leadfield("s", "fixed", "load", {"data": {"subject": "s"}})
    with pytest.raises(TypeError, match="config must be an instance of dict"):
        builder.get_leadfield("s", "fixed", "load", 64)


def test_grad_unit_conventions():
    """fT/cm (ours) and fT/m (CaliBrain) are read from either stored convention."""
    f, e, lab = L.unit_conversion([201, 201, 201], [0, -13, -15], grad_unit="fT/m")
    np.testing.assert_allclose(f, [1e6, 100.0, 1.0])
    assert list(e) == [-15] * 3 and lab == ["fT/m/nAm"] * 3
    f, e, lab = L.unit_conversion([201, 201, 201], [0, -13, -15])
    np.testing.assert_allclose(f, [1e4, 1.0, 1e-2])
    with pytest.raises(ValueError, match="grad_unit"):
        L.unit_conversion([201], grad_unit="T/m")


# ============================================================== safety
class _Marker:
    """Unpickling this creates a file (what a malicious pickle could do)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_pickles_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled.txt"
    lf = np.random.default_rng(0).normal(size=(4, 6)) * 1e-7
    fname = tmp_path / "s_fixed_leadfield.npz"
    np.savez(fname, leadfield=lf, sensor_units=112, sensor_unitmult=0,
             info=np.array([_Marker(marker)], dtype=object))  # fmt: skip
    with zipfile.ZipFile(fname, "a") as z:  # a raw-pickle member (not .npy)
        z.writestr("src_coords.npy", pickle.dumps(_Marker(marker)))
    with _warn_level(), pytest.warns(RuntimeWarning) as record:
        data = L.read_leadfield(fname)
    messages = " ".join(str(w.message) for w in record)
    assert "'info' holds a pickled" in messages
    assert "'src_coords' is not a NumPy .npy array" in messages
    np.testing.assert_allclose(data.leadfield, lf * 1e6)
    assert data.src_coords is None
    assert not marker.exists()
    # the crafted file is real: numpy with allow_pickle=True would run it
    with np.load(fname, allow_pickle=True) as npz:
        npz["info"]
    assert marker.exists()


def test_npz_sizes_checked_before_reading(tmp_path):
    """An unused 256 MiB member is never inflated; a lying header is refused."""
    lf = np.ones((3, 4))
    fname = tmp_path / "s_fixed_leadfield.npz"
    np.savez(fname, leadfield=lf, sensor_units=112, sensor_unitmult=-15)
    chunk = np.zeros(2**24, np.uint8).tobytes()
    with zipfile.ZipFile(fname, "a", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("junk.npy", "w", force_zip64=True) as fid:
            np.lib.format.write_array_header_1_0(
                fid, {"descr": "|u1", "fortran_order": False, "shape": (2**28,)})  # fmt: skip
            for _ in range(16):
                fid.write(chunk)
    assert fname.stat().st_size < 2**20  # ~256 KiB on disk, 256 MiB inflated
    tracemalloc.start()
    data = L.read_leadfield(fname)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 2**20, peak
    np.testing.assert_array_equal(data.leadfield, lf)
    # a header declaring (1e6, 1e7) over 96 bytes of data
    bad = tmp_path / "b_fixed_leadfield.npz"
    with zipfile.ZipFile(bad, "w") as z, z.open("leadfield.npy", "w") as fid:
        np.lib.format.write_array_header_1_0(
            fid, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**7)})  # fmt: skip
        fid.write(lf.tobytes())
    with pytest.raises(ValueError, match=r"b_fixed_leadfield\.npz: key 'leadfield' declares "
                                         r"shape \(1000000, 10000000\)"):  # fmt: skip
        L.read_leadfield(bad)
    # a truncated archive (BadZipFile) names the file
    cut = tmp_path / "c_fixed_leadfield.npz"
    cut.write_bytes(fname.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"c_fixed_leadfield\.npz is not a readable \.npz"):
        L.read_leadfield(cut)
