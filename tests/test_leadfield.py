"""LeadfieldBuilder / LeadfieldData: the seed tutorial, units, I/O, validation, step.

Geometry helpers come from ``test_forward.py`` (small sphere cortex, small
MEG/EEG arrays, a non-identity head<->MRI transform).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
from types import SimpleNamespace

import h5py
import mne
import numpy as np
import pytest
from mne.transforms import apply_trans
from test_forward import CENTER, SphereCortex, make_info, mne_forward, some_trans, sphere_bem

from mne_laminar_plugin import LeadfieldBuilder, LeadfieldData
from mne_laminar_plugin import leadfield as L

SI_FACTOR = {"mag": 1e6, "grad": 1e4, "eeg": 1e-3}
TARGET = {"mag": ("fT/nAm", -15), "grad": ("fT/cm/nAm", -13), "eeg": ("uV/nAm", -6)}

# The code of the seed tutorial "Leadfield Construction" with only its import
# lines changed (calibrain -> mne_laminar_plugin).
SEED_CODE = '''
import matplotlib.pyplot as plt
import numpy as np
from mne.io.constants import FIFF
from tempfile import TemporaryDirectory
from mne_laminar_plugin import LeadfieldBuilder, get_data_path
RANDOM_SEED = 23
data_root = get_data_path()
leadfield_dir = data_root / "1284src_leadfield"
print("tutorial data root:", data_root)
print("tutorial leadfield directory:", leadfield_dir)
builder = LeadfieldBuilder(leadfield_dir=leadfield_dir)
random_fixed = builder.get_leadfield(
subject="demo",
orientation_type="fixed",
retrieve_mode="random",
n_sensors=12,
n_sources=24,
return_metadata=True,
)
random_free = builder.get_leadfield(
subject="demo",
orientation_type="free",
retrieve_mode="random",
n_sensors=12,
n_sources=24,
return_metadata=True,
)
print("random fixed shape:", random_fixed.leadfield.shape)
print("random free shape:", random_free.leadfield.shape)
rng = np.random.default_rng(RANDOM_SEED)
n_sensors = 12
n_sources = 24
source_positions = rng.normal(scale=0.04, size=(n_sources, 3))
sensor_positions = rng.normal(scale=0.08, size=(n_sensors, 3))
distances = np.linalg.norm(
sensor_positions[:, None, :] - source_positions[None, :, :],
axis=2,
)
simulated_leadfield = 1.0 / np.maximum(distances, 0.02) ** 2
simulated_leadfield *= rng.choice([-1.0, 1.0], size=simulated_leadfield.shape)
simulated_leadfield /= np.linalg.norm(simulated_leadfield, axis=0, keepdims=True)
simulated_q_basis = np.eye(n_sources)
print("simulate-like shape:", simulated_leadfield.shape)
print("simulate-like sensor unit:", FIFF.FIFF_UNIT_T)
print("simulate-like sensor unit multiplier:", FIFF.FIFF_UNITM_F)
print("simulate-like coil type:", FIFF.FIFFV_COIL_VV_MAG_T1)
tmpdir = TemporaryDirectory()
temp_builder = LeadfieldBuilder(leadfield_dir=tmpdir.name)
np.savez(
f"{tmpdir.name}/demo_subject_fixed_leadfield.npz",
leadfield=simulated_leadfield,
sensor_kind=FIFF.FIFFV_MEG_CH,
sensor_units=FIFF.FIFF_UNIT_T,
sensor_unitmult=FIFF.FIFF_UNITM_F,
coil_type=FIFF.FIFFV_COIL_VV_MAG_T1,
src_coords=source_positions,
Q_basis=simulated_q_basis,
)
loaded = temp_builder.get_leadfield(
subject="demo_subject",
orientation_type="fixed",
retrieve_mode="load",
return_metadata=True,
)
print("loaded shape:", loaded.leadfield.shape)
print("loaded equals simulate-like:", np.allclose(loaded.leadfield, simulated_leadfield))
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(np.linalg.norm(random_fixed.leadfield, axis=0), label="random fixed")
ax.plot(np.linalg.norm(simulated_leadfield, axis=0), label="simulate-like fixed")
ax.plot(np.linalg.norm(loaded.leadfield, axis=0), "--", label="loaded fixed")
ax.set(
xlabel="Source index",
ylabel="Leadfield column norm",
title="Leadfield magnitude check",
)
ax.legend(loc="best")
fig.tight_layout()
'''

SEED_OUTPUT = """\
random fixed shape: (12, 24)
random free shape: (12, 24, 3)
simulate-like shape: (12, 24)
simulate-like sensor unit: 112 (FIFF_UNIT_T)
simulate-like sensor unit multiplier: -15 (FIFF_UNITM_F)
simulate-like coil type: 3022 (FIFFV_COIL_VV_MAG_T1)
loaded shape: (12, 24)
loaded equals simulate-like: True
"""


@pytest.fixture(scope="module")
def sphere():
    return mne.make_sphere_model(r0=CENTER, head_radius=0.09)


@pytest.fixture(scope="module")
def mixed_info():
    return make_info(4, 6, 5, eeg_first=True)


@pytest.fixture(scope="module")
def simulated(sphere, mixed_info):
    """Fixed and free laminar leadfields of a 3-layer sphere cortex (mixed types)."""
    cortex = SphereCortex(n_layers=3, grade=2, r_pial=0.076, r_white=0.07, seed=4,
                          center=CENTER + [0.004, 0, 0])  # fmt: skip
    builder = LeadfieldBuilder(surfaces=cortex, bem=sphere, trans=some_trans(),
                               info=mixed_info, mindist=3.0)  # fmt: skip
    out = {ori: builder.get_leadfield("sphere", ori, "simulate", return_metadata=True)
           for ori in ("fixed", "free")}  # fmt: skip
    return cortex, out


# ------------------------------------------------------------------- seed
def test_seed_tutorial_runs_unchanged(tmp_path, monkeypatch):
    """The seed tutorial's code prints the same shapes and True."""
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("MNE_LAMINAR_DATA", str(tmp_path / "data"))
    buf = io.StringIO()
    # (mne.utils.warn is silent below the "warning" log level, which other
    # modules may have set globally)
    with (
        mne.utils.use_log_level("warning"),
        contextlib.redirect_stdout(buf),
        pytest.warns(RuntimeWarning, match="Q_basis"),
    ):
        exec(compile(SEED_CODE, "leadfield-construction-tutorial", "exec"), {})
    # the loader's warning (identity Q_basis on a fixed leadfield) may reach
    # stdout through MNE's logger; the tutorial's own prints are the rest
    lines = [ln for ln in buf.getvalue().splitlines() if "is ignored for a fixed" not in ln]
    assert lines[0] == f"tutorial data root: {tmp_path / 'data'}"
    assert lines[1] == f"tutorial leadfield directory: {tmp_path / 'data' / '1284src_leadfield'}"
    assert "\n".join(lines[2:]) + "\n" == SEED_OUTPUT
    assert not (tmp_path / "data").exists()  # get_data_path creates nothing
    import matplotlib.pyplot as plt

    plt.close("all")


# ------------------------------------------------------------------ units
def test_units_against_mne_si(simulated, sphere, mixed_info):
    """Per-channel factors: mag x1e6, planar grad x1e4, EEG x1e-3 of MNE's SI."""
    cortex, out = simulated
    data = out["fixed"]
    trans = some_trans()
    kept = data.columns
    rr = cortex.layers[:, kept].reshape(-1, 3)
    nn = np.tile(cortex.orientations[kept], (3, 1))
    ref = mne_forward(mixed_info, trans, sphere, rr, nn)
    assert ref["sol"]["row_names"] == data.ch_names
    nn_head = nn @ trans["trans"][:3, :3].T
    si = np.einsum("csk,sk->cs", ref["sol"]["data"].reshape(len(data.ch_names), -1, 3), nn_head)
    # (MNE's fwd["info"] keeps the Info order, its rows are MEG first: by name)
    types = [mne.channel_type(mixed_info, mixed_info["ch_names"].index(n)) for n in data.ch_names]
    assert data.ch_types == types
    assert set(types) == {"mag", "grad", "eeg"}
    for i, kind in enumerate(types):
        np.testing.assert_allclose(data.leadfield[i], si[i] * SI_FACTOR[kind], rtol=1e-9)
        assert data.units[i] == TARGET[kind][0]
        assert data.sensor_unitmult[i] == TARGET[kind][1]
        assert data.sensor_units[i] == {"mag": 112, "grad": 201, "eeg": 107}[kind]
    # typical magnitudes in the target units are O(0.01-100), not 1e-7
    for kind in ("mag", "grad", "eeg"):
        rows = [i for i, t in enumerate(types) if t == kind]
        med = np.median(np.abs(data.leadfield[rows]))
        assert 1e-3 < med < 1e3, (kind, med)
    # free: the same factors on all three components
    free = out["free"]
    si_free = ref["sol"]["data"].reshape(len(types), -1, 3)
    factors = np.array([SI_FACTOR[t] for t in types])
    np.testing.assert_allclose(free.leadfield, si_free * factors[:, None, None], rtol=1e-9)
    # the conversion function itself, row by row from info["chs"][i]["unit"]
    gain, exps, labels = L.si_to_target_units(np.ones((len(types), 2)), data.info, copy=True)
    np.testing.assert_array_equal(gain[:, 0], factors)
    assert labels == [TARGET[t][0] for t in types]


def test_unit_conversion_table():
    f, e, lab = L.unit_conversion([112, 201, 107])
    np.testing.assert_array_equal(f, [1e6, 1e4, 1e-3])
    np.testing.assert_array_equal(e, [-15, -13, -6])
    assert lab == ["fT/nAm", "fT/cm/nAm", "uV/nAm"]
    f, _, _ = L.unit_conversion([112, 201, 107], [-15, -13, -6])  # already converted
    np.testing.assert_array_equal(f, [1, 1, 1])
    f, _, _ = L.unit_conversion([201], [-15])  # CaliBrain's fT/m/nAm gradiometers
    np.testing.assert_array_equal(f, [1e-2])
    with pytest.raises(ValueError, match="Unknown sensor unit.*999"):
        L.unit_conversion([112, 999])
    with pytest.raises(ValueError, match="Unknown unit multiplier -9 for FIFF unit 112"):
        L.unit_conversion([112], [-9])


def test_simulated_metadata(simulated):
    cortex, out = simulated
    data = out["fixed"]
    n_kept = len(data.columns)
    assert 0 < len(data.dropped_columns) < cortex.n_columns
    assert n_kept + len(data.dropped_columns) == cortex.n_columns == data.n_columns
    assert data.leadfield.shape == (15, 3 * n_kept)
    np.testing.assert_array_equal(data.layer, np.repeat([0, 1, 2], n_kept))
    np.testing.assert_array_equal(data.column, np.tile(data.columns, 3))
    trans = some_trans()
    np.testing.assert_allclose(
        data.src_coords, apply_trans(trans, cortex.layers[:, data.columns].reshape(-1, 3))
    )
    assert data.Q_basis is None and out["free"].Q_basis.shape == (3 * n_kept, 3, 3)
    assert out["free"].leadfield.shape == (15, 3 * n_kept, 3)
    assert not data.synthetic and data.provenance["mode"] == "simulate"
    assert data.provenance["mindist_mm"] == 3.0
    assert isinstance(data.sensor_kind, np.ndarray)  # mixed MEG/EEG: per channel
    np.testing.assert_array_equal(data.column_hemi, cortex.hemi)
    # free projected on src_ori is the fixed leadfield
    np.testing.assert_allclose(out["free"].fixed().leadfield, data.leadfield, rtol=1e-10,
                               atol=1e-12)  # fmt: skip
    # no state kept between calls
    data.provenance["touched"] = True
    assert "touched" not in out["free"].provenance
    assert "LeadfieldData | fixed" in repr(data)


# -------------------------------------------------------------- round trip
@pytest.mark.parametrize("ori", ["fixed", "free"])
def test_roundtrip_h5_npz_fif(simulated, tmp_path, ori):
    """What simulate wrote loads back exactly (h5, npz) or at float32 (FIF)."""
    data = simulated[1][ori]
    data.save(tmp_path / "sphere_desc-laminar_leadfield.h5")
    data.save(tmp_path / f"sphere_{ori}_leadfield.npz")
    data.save(tmp_path / "sphere-fwd.fif")
    for fname in ("sphere_desc-laminar_leadfield.h5", f"sphere_{ori}_leadfield.npz"):
        got = L.read_leadfield(tmp_path / fname)
        assert got.leadfield.dtype == data.leadfield.dtype
        np.testing.assert_array_equal(got.leadfield, data.leadfield)
        for key in ("ch_names", "units", "ch_types", "n_layers", "n_columns",
                    "orientation_type", "dropped_reasons", "synthetic"):  # fmt: skip
            assert getattr(got, key) == getattr(data, key), key
        for key in ("layer", "column", "src_coords", "src_ori", "Q_basis", "dropped_columns",
                    "sensor_kind", "sensor_units", "sensor_unitmult", "coil_type"):  # fmt: skip
            a, b = getattr(got, key), getattr(data, key)
            assert (a is None) == (b is None), key
            if a is not None:
                np.testing.assert_array_equal(a, b, err_msg=key)
    h5 = L.read_leadfield(tmp_path / "sphere_desc-laminar_leadfield.h5")
    np.testing.assert_array_equal(h5.mri_head_t["trans"], data.mri_head_t["trans"])
    np.testing.assert_array_equal(h5.column_hemi, data.column_hemi)
    assert h5.info["ch_names"] == data.ch_names
    np.testing.assert_array_equal(  # FIF stores channel locations as float32
        [ch["loc"] for ch in h5.info["chs"]],
        np.array([ch["loc"] for ch in data.info["chs"]], np.float32),
    )
    # the HDF5 dataset is chunked along the sources
    with h5py.File(tmp_path / "sphere_desc-laminar_leadfield.h5") as f:
        assert f["leadfield"].chunks[0] == data.n_sensors
    # one layer only, read without the others
    part = L.read_leadfield(tmp_path / "sphere_desc-laminar_leadfield.h5", layers=[2, 0])
    np.testing.assert_array_equal(part.leadfield, data.leadfield[:, data.layer != 1])
    np.testing.assert_array_equal(part.layer, np.repeat([0, 1], len(data.columns)))
    # builder search by subject in leadfield_dir
    builder = LeadfieldBuilder(leadfield_dir=tmp_path)
    got = builder.get_leadfield("sphere", ori, "load")
    np.testing.assert_array_equal(got, data.leadfield)  # npz is tried first
    # FIF: MNE reads it; SI values at float32 precision
    fwd = mne.read_forward_solution(tmp_path / "sphere-fwd.fif", verbose=False)
    assert mne.forward.is_fixed_orient(fwd) == (ori == "fixed")
    factors = np.array([SI_FACTOR[t] for t in data.ch_types])
    lf = data.leadfield if ori == "fixed" else data.leadfield.reshape(data.n_sensors, -1)
    np.testing.assert_allclose(fwd["sol"]["data"] * factors[:, None], lf, rtol=2e-6,
                               atol=1e-6 * np.abs(lf).max())  # fmt: skip
    np.testing.assert_allclose(fwd["source_rr"], data.src_coords, atol=1e-7)
    back = L.read_leadfield(tmp_path / "sphere-fwd.fif", orientation_type=ori)
    np.testing.assert_allclose(back.leadfield, data.leadfield, rtol=2e-6,
                               atol=1e-6 * np.abs(lf).max())  # fmt: skip
    assert back.units == data.units


def test_h5_to_forward_matches_mne(simulated, sphere, mixed_info):
    """to_forward gives MNE's SI forward (same rows, sources and values)."""
    cortex, out = simulated
    data = out["free"]
    fwd = data.to_forward()
    kept = data.columns
    ref = mne_forward(mixed_info, some_trans(), sphere, cortex.layers[:, kept].reshape(-1, 3),
                      np.tile(cortex.orientations[kept], (3, 1)))  # fmt: skip
    np.testing.assert_allclose(fwd["sol"]["data"], ref["sol"]["data"], rtol=1e-9,
                               atol=1e-12 * np.abs(ref["sol"]["data"]).max())  # fmt: skip
    np.testing.assert_allclose(fwd["source_rr"], ref["source_rr"], atol=1e-12)
    assert fwd["sol"]["row_names"] == ref["sol"]["row_names"]


def test_float32_and_size_checks(simulated, tmp_path):
    data = simulated[1]["fixed"]
    small = data.copy()
    small.leadfield = data.leadfield.astype(np.float32)
    small.save(tmp_path / "f32_desc-laminar_leadfield.h5")
    got = L.read_leadfield(tmp_path / "f32_desc-laminar_leadfield.h5")
    assert got.leadfield.dtype == np.float32
    np.testing.assert_array_equal(got.leadfield, small.leadfield)
    assert L.fits_in_fif(data)
    huge = SimpleNamespace(n_sources=600_000, orientation_type="free",
                           ch_types=["mag"] * 102 + ["grad"] * 204)  # fmt: skip
    assert not L.fits_in_fif(huge)  # 306 x 1.8M x 4 bytes > 2 GB
    with pytest.raises(FileExistsError, match="overwrite=True"):
        small.save(tmp_path / "f32_desc-laminar_leadfield.h5")


# ------------------------------------------------------------------ random
def test_random_is_reproducible():
    builder = LeadfieldBuilder()
    a = builder.get_leadfield("x", "fixed", "random", n_sensors=5, n_sources=12,
                              random_state=7, return_metadata=True)  # fmt: skip
    b = builder.get_leadfield("x", "fixed", "random", n_sensors=5, n_sources=12, random_state=7)
    c = builder.get_leadfield("x", "fixed", "random", n_sensors=5, n_sources=12, random_state=8)
    np.testing.assert_array_equal(a.leadfield, b)
    np.testing.assert_array_equal(b, np.random.RandomState(7).standard_normal((5, 12)))
    assert not np.array_equal(b, c)
    assert a.synthetic and a.provenance["mode"] == "random" and a.provenance["random_state"] == 7
    assert a.units == ["arbitrary"] * 5 and a.sensor_units is None
    free = builder.get_leadfield("x", "free", "random", n_sensors=5, n_sources=12,
                                 random_state=7, n_layers=3, return_metadata=True)  # fmt: skip
    assert free.leadfield.shape == (5, 12, 3) and free.n_layers == 3
    np.testing.assert_array_equal(free.layer, np.repeat([0, 1, 2], 4))
    rng = np.random.default_rng(3)
    d = builder.get_leadfield("x", "fixed", "random", n_sensors=2, n_sources=3, random_state=rng)
    assert d.shape == (2, 3)
    with pytest.raises(ValueError, match="multiple of n_layers"):
        builder.get_leadfield("x", "fixed", "random", n_sources=10, n_layers=3)
    # metadata are fresh per call: a later call does not inherit the seed
    other = builder.get_leadfield("x", "fixed", "random", n_sensors=5, n_sources=12,
                                  return_metadata=True)  # fmt: skip
    assert "random_state" not in other.provenance


def test_bad_arguments(tmp_path):
    builder = LeadfieldBuilder()
    with pytest.raises(ValueError, match="orientation_type"):
        builder.get_leadfield("x", "loose", "random")
    with pytest.raises(ValueError, match="retrieve_mode"):
        builder.get_leadfield("x", "fixed", "download")
    with pytest.raises(ValueError, match="needs leadfield_dir"):
        builder.get_leadfield("x", "fixed", "load")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LeadfieldBuilder(leadfield_dir=tmp_path / "nope").get_leadfield("x")
    with pytest.raises(ValueError, match="needs info="):
        LeadfieldBuilder(trans="identity").get_leadfield("x", retrieve_mode="simulate")
    with pytest.raises(ValueError, match="needs trans="):
        LeadfieldBuilder(info=make_info(1, 0)).get_leadfield("x", retrieve_mode="simulate")
    subjects = tmp_path / "subjects"
    (subjects / "x" / "bem").mkdir(parents=True)
    b = LeadfieldBuilder(subjects_dir=subjects, trans="identity", info=make_info(1, 0),
                         surfaces=SphereCortex(2, 1))  # fmt: skip
    with pytest.raises(FileNotFoundError, match="no BEM solution.*source/make_bem_solution"):
        b.get_leadfield("x", retrieve_mode="simulate")


# -------------------------------------------------------------- validation
def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _load(folder, subject="s", ori="fixed"):
    return LeadfieldBuilder(leadfield_dir=folder).get_leadfield(
        subject, ori, "load", return_metadata=True
    )


def test_load_validation_errors(tmp_path):
    rng = np.random.default_rng(0)
    good = rng.normal(size=(4, 6))
    unit = dict(sensor_units=112, sensor_unitmult=0)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"s_fixed_leadfield\.npz.*Files in .*notes\.txt"):
        _load(tmp_path)
    _npz(tmp_path / "s_fixed_leadfield.npz", gain=good)
    with pytest.raises(ValueError, match=r"no 'leadfield' array; keys found: \['gain'\]"):
        _load(tmp_path)
    _npz(tmp_path / "s_fixed_leadfield.npz", leadfield=rng.normal(size=(4, 6, 3)), **unit)
    with pytest.raises(ValueError, match="fixed leadfield must be 2-D"):
        _load(tmp_path)
    _npz(tmp_path / "s_free_leadfield.npz", leadfield=good, **unit)
    with pytest.raises(ValueError, match=r"must be 3-D.*reshaped to \(n_sensors, n_sources, 3\)"):
        _load(tmp_path, ori="free")
    _npz(tmp_path / "s_free_leadfield.npz", leadfield=rng.normal(size=(4, 6, 3)),
         Q_basis=np.zeros((6, 3, 2)), **unit)  # fmt: skip
    with pytest.raises(ValueError, match=r"Q_basis has shape \(6, 3, 2\).*\(6, 3, 3\)"):
        _load(tmp_path, ori="free")
    _npz(tmp_path / "s_free_leadfield.npz", leadfield=rng.normal(size=(4, 6, 2)), **unit)
    with pytest.raises(ValueError, match="K = 2 needs Q_basis"):
        _load(tmp_path, ori="free")
    _npz(tmp_path / "s_fixed_leadfield.npz", leadfield=good, src_coords=np.zeros((5, 3)), **unit)
    with pytest.raises(ValueError, match=r"src_coords has shape \(5, 3\).*\(6, 3\)"):
        _load(tmp_path)
    for bad_value in (np.nan, np.inf):
        bad = good.copy()
        bad[2, 3] = bad_value
        _npz(tmp_path / "s_fixed_leadfield.npz", leadfield=bad, **unit)
        with pytest.raises(ValueError, match=r"1 NaN/inf value\(s\) \(first at index \(2, 3\)\)"):
            _load(tmp_path)
    _npz(tmp_path / "s_fixed_leadfield.npz", leadfield=good, sensor_units=999)
    with pytest.raises(ValueError, match=r"Unknown sensor unit\(s\) \[999\]"):
        _load(tmp_path)
    _npz(tmp_path / "s_fixed_leadfield.npz", leadfield=good, sensor_units=112, sensor_unitmult=-9)
    with pytest.raises(ValueError, match="Unknown unit multiplier -9"):
        _load(tmp_path)
    _npz(tmp_path / "s_fixed_leadfield.npz", leadfield=good, ch_units=np.array(["mT"] * 4))
    with pytest.raises(ValueError, match=r"unknown units \['mT'\]"):
        _load(tmp_path)
    _npz(tmp_path / "s_fixed_leadfield.npz", leadfield=good, sensor_units=np.array([112] * 3))
    with pytest.raises(ValueError, match=r"one value per sensor \(4\)"):
        _load(tmp_path)
    # pickled objects are never loaded: skipped with a warning (CaliBrain stores
    # Q_basis=None that way), refused for the leadfield itself
    _npz(tmp_path / "s_fixed_leadfield.npz", leadfield=good, Q_basis=np.array(None, dtype=object),
         **unit)  # fmt: skip
    with (mne.utils.use_log_level("warning"),
          pytest.warns(RuntimeWarning, match="'Q_basis' holds a pickled Python object.*skipped")):
        np.testing.assert_allclose(_load(tmp_path).leadfield, good * 1e6)
    _npz(tmp_path / "s_fixed_leadfield.npz", leadfield=np.array([[object()]], dtype=object))
    with pytest.raises(ValueError, match="'leadfield' holds a pickled Python object"):
        _load(tmp_path)
    (tmp_path / "s_fixed_leadfield.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"s_fixed_leadfield\.npz is not a readable .npz"):
        _load(tmp_path)
    _npz(tmp_path / "s_fixed_leadfield.npz", leadfield=good, orientation_type="free")
    with pytest.raises(ValueError, match="holds a free leadfield"):
        _load(tmp_path)


def test_load_h5_validation(simulated, tmp_path):
    data = simulated[1]["fixed"]
    fname = data.save(tmp_path / "s_desc-laminar_leadfield.h5")
    with h5py.File(fname, "r+") as f:
        f["leadfield"][0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        L.read_leadfield(fname)
    with h5py.File(fname, "r+") as f:
        f.attrs["format"] = "something else"
    with pytest.raises(ValueError, match="is not an mne-laminar-leadfield file"):
        L.read_leadfield(fname)
    with pytest.raises(ValueError, match="Unknown leadfield file type"):
        (tmp_path / "x.mat").write_bytes(b"MATLAB")
        L.read_leadfield(tmp_path / "x.mat")
    # a fixed file is never read as free
    fixed = data.save(tmp_path / "t_desc-laminar_leadfield.h5")
    with pytest.raises(ValueError, match="a free one cannot be derived"):
        L.read_leadfield(fixed, orientation_type="free")
    # several candidates for one subject
    data.save(tmp_path / "t_desc-other_leadfield.h5")
    with pytest.raises(ValueError, match="Several leadfield files match subject 't'"):
        _load(tmp_path, subject="t")


def test_load_calibrain_free_meg(tmp_path):
    """CaliBrain's shipped free MEG layout: K = 2 with its Q_basis, SI units."""
    rng = np.random.default_rng(1)
    lf = rng.normal(size=(5, 8, 2)) * 1e-7
    q = np.linalg.qr(rng.normal(size=(8, 3, 3)))[0][:, :, :2]
    _npz(tmp_path / "sub_free_leadfield.npz", leadfield=lf, sensor_kind=1, sensor_units=112,
         sensor_unitmult=0, coil_type=3022, Q_basis=q, src_coords=rng.normal(size=(8, 3)))  # fmt: skip
    data = _load(tmp_path, subject="sub", ori="free")
    np.testing.assert_allclose(data.leadfield, lf * 1e6)
    np.testing.assert_array_equal(data.Q_basis, q)
    assert (data.sensor_kind, data.sensor_units, data.sensor_unitmult, data.coil_type) == (
        1, 112, -15, 3022
    )
    assert data.units == ["fT/nAm"] * 5 and data.ch_types == ["mag"] * 5
    # a reload of our own export is not scaled twice
    data.save(tmp_path / "again_free_leadfield.npz")
    again = _load(tmp_path, subject="again", ori="free")
    np.testing.assert_array_equal(again.leadfield, data.leadfield)
    with pytest.raises(ValueError, match=r"lacks \['info', 'mri_head_t'\]"):
        data.to_forward()


def test_load_mne_forward(tmp_path, sphere, mixed_info):
    """MNE forward files load fixed (MNE's conversion) or free, in target units."""
    cortex = SphereCortex(n_layers=1, grade=1)
    rr, nn = cortex.layers[0], cortex.orientations
    fwd = mne_forward(mixed_info, None, sphere, rr, nn)
    mne.write_forward_solution(tmp_path / "subj-fwd.fif", fwd, verbose=False)
    data = _load(tmp_path, subject="subj", ori="fixed")
    fixed = mne.convert_forward_solution(fwd, force_fixed=True, surf_ori=True, verbose=False)
    # MNE may reorder the rows on reading: compare channel by channel
    rows = [fwd["sol"]["row_names"].index(name) for name in data.ch_names]
    types = [mne.channel_type(mixed_info, mixed_info["ch_names"].index(n)) for n in data.ch_names]
    assert data.ch_types == types
    factors = np.array([SI_FACTOR[t] for t in types])
    np.testing.assert_allclose(data.leadfield, fixed["sol"]["data"][rows] * factors[:, None],
                               rtol=1e-5, atol=1e-6 * np.abs(data.leadfield).max())  # fmt: skip
    assert data.provenance["loaded_format"] == "fif" and data.provenance["mode"] == "load"
    free = _load(tmp_path, subject="subj", ori="free")
    assert free.ch_names == data.ch_names
    si = fwd["sol"]["data"][rows].reshape(len(factors), -1, 3)
    np.testing.assert_allclose(free.leadfield, si * factors[:, None, None], rtol=1e-5,
                               atol=1e-6 * np.abs(free.leadfield).max())  # fmt: skip
    np.testing.assert_allclose(free.src_coords, rr, atol=1e-7)


# ----------------------------------------------------------------------- QC
def test_qc_functions():
    lf = np.ones((4, 2 * 10))
    lf[2:] *= 1e-3  # second unit group
    lf[:, 10:] *= 0.5  # deep layer half as strong
    lf[:, 3] *= 1000.0  # an outlier column in layer 0
    lf[:, 17] = 0.0  # a dead source in layer 1
    data = LeadfieldData(
        leadfield=lf, ch_names=list("abcd"), units=["fT/nAm"] * 2 + ["uV/nAm"] * 2,
        ch_types=["mag"] * 2 + ["eeg"] * 2, layer=np.repeat([0, 1], 10),
        column=np.tile(np.arange(10) + 5, 2), n_layers=2, n_columns=20,
    )  # fmt: skip
    norms = L.column_norms(data)
    np.testing.assert_allclose(norms["fT/nAm"][0], np.sqrt(2))
    np.testing.assert_allclose(norms["uV/nAm"][12], 0.5e-3 * np.sqrt(2))
    ratio = L.depth_ratio(data)["fT/nAm"]
    np.testing.assert_allclose(ratio[[0, 1, 2, 4]], 0.5)
    flagged = L.flag_outlier_columns(data)
    got = {(r["column"], r["layer"], r["unit"]) for r in flagged}
    assert got == {(8, 0, "fT/nAm"), (8, 0, "uV/nAm"), (12, 1, "fT/nAm"), (12, 1, "uV/nAm")}
    import matplotlib.pyplot as plt

    fig = L.plot_column_norms(data)
    assert len(fig.axes) == 2
    fig2 = L.plot_depth_ratio(data)
    assert len(fig2.axes) == 2
    plt.close("all")


# -------------------------------------------------------------------- step
def _step_cfg(tmp_path, **kw):
    bids_root = tmp_path / "bids"
    cfg = SimpleNamespace(
        laminar_leadfield_mode="simulate", laminar_leadfield_dir=None,
        laminar_orientation_type="fixed", laminar_random_seed=42,
        laminar_skull_margin=5.0, laminar_forward_engine="mne",
        laminar_forward_float32=False, laminar_column_spacing="ico1",
        runs_tasks=[(None, "rest")], source_info_path_update=None, noise_cov="emptyroom",
        use_template_mri=None, fs_subject="fs01", fs_subjects_dir=tmp_path / "subjects",
        laminar_root=bids_root / "derivatives" / "mne-laminar", ch_types=("meg",),
        proc=None, datatype="meg", acq=None, rec=None, space=None, bids_root=bids_root,
        deriv_root=bids_root / "derivatives" / "mne-bids-pipeline", all_tasks=["rest"],
    )  # fmt: skip
    cfg.__dict__.update(kw)
    return cfg


def test_step_missing_inputs_name_their_step(tmp_path):
    from mne_laminar_plugin.pipeline.steps.laminar import _02_leadfield as step

    cfg = _step_cfg(tmp_path)
    with pytest.raises(FileNotFoundError) as exc:
        step.get_input_fnames_leadfield(cfg=cfg, subject="01", session=None)
    msg = str(exc.value)
    assert "fs01-5120-bem-sol.fif (made by MBP step 'source/make_bem_solution'" in msg
    assert "sub-01_trans.fif (made by MBP step 'source/make_forward'" in msg
    assert "sub-01_task-rest_ave.fif" in msg
    assert "laminar/layer_surfaces" in msg
    cfg = _step_cfg(tmp_path, laminar_leadfield_mode="load")
    with pytest.raises(ValueError, match="needs laminar_leadfield_dir"):
        step.get_input_fnames_leadfield(cfg=cfg, subject="01", session=None)
    cfg = _step_cfg(tmp_path, source_info_path_update={"processing": "filt", "suffix": "raw"},
                    ch_types=("meg", "eeg"))  # fmt: skip
    in_files = {}
    with pytest.raises(FileNotFoundError) as exc:
        step.get_input_fnames_leadfield(cfg=cfg, subject="01", session=None)
    assert "sub-01_task-rest_proc-filt_raw.fif" in str(exc.value)
    assert "fs01-5120-5120-5120-bem-sol.fif" in str(exc.value)
    del in_files


def test_step_outputs_sidecar_report_and_validator(simulated, tmp_path):
    """The step's writer: h5 + FIF + sidecars, valid BIDS derivative, report section."""
    from mne_laminar_plugin import bids
    from mne_laminar_plugin.pipeline.steps.laminar import _02_leadfield as step

    cfg = _step_cfg(tmp_path)
    data = simulated[1]["fixed"]
    bids.ensure_derivative_dataset(cfg.laminar_root)
    sources = dict(bem=cfg.fs_subjects_dir / "fs01" / "bem" / "fs01-5120-bem-sol.fif",
                   trans=cfg.deriv_root / "sub-01" / "meg" / "sub-01_trans.fif")  # fmt: skip
    data = data.copy()
    data.provenance = dict(data.provenance, bem=str(sources["bem"]), trans=str(sources["trans"]))
    paths, fwd_ok = step._save(cfg, "01", None, data, None, sources)
    names = sorted(p.name for p in paths)
    assert fwd_ok and names == sorted([
        "sub-01_desc-laminar_leadfield.h5", "sub-01_desc-laminar_leadfield.json",
        "sub-01_desc-laminar_fwd.fif", "sub-01_desc-laminar_fwd.json",
    ])  # fmt: skip
    side = json.loads((paths[0].parent / "sub-01_desc-laminar_leadfield.json").read_text())
    assert side["Units"] == {"mag": "fT/nAm", "grad": "fT/cm/nAm", "eeg": "uV/nAm"}
    assert side["NumberOfLayers"] == 3
    assert side["DroppedColumns"]["Count"] == len(data.dropped_columns)
    assert side["Trans"] == "bids:raw:derivatives/mne-bids-pipeline/sub-01/meg/sub-01_trans.fif"
    # outside the BIDS root but in subjects_dir: named relative to it, never by the
    # machine's folder
    assert side["BEM"] == "<subjects_dir>/fs01/bem/fs01-5120-bem-sol.fif"
    assert side["GeneratedBy"]["bem"] == side["BEM"]  # the provenance too (h5 and FIF)
    assert side["GeneratedBy"]["trans"] == (
        "<bids_root>/derivatives/mne-bids-pipeline/sub-01/meg/sub-01_trans.fif"
    )
    for path in paths:
        assert str(tmp_path).encode() not in path.read_bytes(), path.name
    # the FIF + its sidecar reload with the laminar layout
    back = L.read_leadfield(paths[0].parent / "sub-01_desc-laminar_fwd.fif")
    np.testing.assert_array_equal(back.layer, data.layer)
    np.testing.assert_array_equal(back.column, data.column)
    assert back.dropped_reasons == data.dropped_reasons
    # reading by subject (what the predictors step does)
    got = L.read_leadfield(cfg.laminar_root, "01", None, datatype="meg")
    np.testing.assert_array_equal(got.leadfield, data.leadfield)
    with pytest.raises(FileNotFoundError, match="made by the step laminar/leadfield"):
        L.read_leadfield(cfg.laminar_root, "02", None)
    # stale FIF removed when a later run cannot write one
    rnd = LeadfieldBuilder().random("fixed", 3, 6, random_state=1)
    paths2, fwd_ok2 = step._save(_step_cfg(tmp_path, laminar_leadfield_mode="random"),
                                 "01", None, rnd, None, {})  # fmt: skip
    assert not fwd_ok2
    assert not (paths[0].parent / "sub-01_desc-laminar_fwd.fif").exists()
    step._save(cfg, "01", None, data, None, sources)
    exe = shutil.which("bids-validator-deno")  # conftest puts the venv on PATH
    if exe is not None:
        res = subprocess.run([exe, str(cfg.laminar_root)], capture_output=True, text=True,
                             timeout=300)  # fmt: skip
        assert res.returncode == 0, res.stdout[-3000:]
    # report section
    report = mne.Report(title="sub-01")
    step._add_report(report, data, cfg, paths, True)
    titles, tags, htmls = report.get_contents()
    assert set(titles) == {"Laminar leadfield"}  # one section
    html = "".join(htmls)
    for title in ("Column norm by layer", "Deep vs superficial norm ratio", "Outlier columns",
                  "Leadfield metadata", "fT/cm/nAm", "closer than mindist"):  # fmt: skip
        assert title in html, title
    assert all("laminar" in t for t in tags)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_bem_simulate_through_builder(tmp_path, mixed_info):
    """simulate with a BEM solution file found in subjects_dir, MEG only."""
    subjects = tmp_path / "subjects"
    (subjects / "sph" / "bem").mkdir(parents=True)
    sol = sphere_bem(grade=2)
    mne.write_bem_solution(subjects / "sph" / "bem" / "sph-5120-bem-sol.fif", sol, verbose=False)
    mne.write_trans(tmp_path / "sph-trans.fif", some_trans())
    info_fname = tmp_path / "sph_ave.fif"
    meg_info = mne.pick_info(mixed_info, mne.pick_types(mixed_info, meg=True))
    mne.io.write_info(info_fname, meg_info)
    cortex = SphereCortex(n_layers=2, grade=1)
    builder = LeadfieldBuilder(subjects_dir=subjects, surfaces=lambda s: cortex,
                               trans=tmp_path / "sph-trans.fif", info=info_fname, eeg=False)  # fmt: skip
    data = builder.get_leadfield("sph", "fixed", "simulate", return_metadata=True)
    assert data.provenance["conductor"].endswith("sph-5120-bem-sol.fif")
    assert set(data.ch_types) == {"mag", "grad"}
    # reference from the same files (FIF stores BEM, locations, trans in float32)
    sol = mne.read_bem_solution(subjects / "sph" / "bem" / "sph-5120-bem-sol.fif", verbose=False)
    meg_info = mne.io.read_info(info_fname, verbose=False)
    trans = mne.read_trans(tmp_path / "sph-trans.fif")
    ref = mne_forward(meg_info, trans, sol, cortex.layers.reshape(-1, 3)[
        np.tile(np.isin(np.arange(cortex.n_columns), data.columns), 2)],
        np.tile(cortex.orientations[data.columns], (2, 1)))  # fmt: skip
    nn_head = data.src_ori
    si = np.einsum("csk,sk->cs", ref["sol"]["data"].reshape(data.n_sensors, -1, 3), nn_head)
    factors = np.array([SI_FACTOR[t] for t in data.ch_types])
    np.testing.assert_allclose(data.leadfield, si * factors[:, None], rtol=1e-9,
                               atol=1e-12 * np.abs(data.leadfield).max())  # fmt: skip
