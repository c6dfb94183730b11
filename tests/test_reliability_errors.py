"""Issue 14, "errors that do not say what is wrong" and "accepted but wrong".

Every case is a crafted file, option or folder; each test checks that the
message names the file/key/option and says what was expected.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from mne_laminar_plugin import bids
from mne_laminar_plugin import leadfield as L
from mne_laminar_plugin.surfaces import LaminarSurfaces

from _fs_fixtures import make_fsaverage5_subject  # noqa: E402
from _reliab_helpers import sphere_forward  # noqa: E402
from test_host import restore_mbp  # noqa: E402, F401  (fixture)


# ================================================================ memory
@pytest.fixture(scope="module")
def fs5(tmp_path_factory):
    return make_fsaverage5_subject(
        tmp_path_factory.mktemp("subjects_fs5"), "fs5", cortex_label=True
    )


@pytest.mark.parametrize("spacing", ["oct55", "ico7", "ico9"])
def test_spacing_finer_than_the_mesh(fs5, spacing):
    with pytest.raises(ValueError, match=rf"spacing='{spacing}' has \d+ vertices per "
                       r"hemisphere, more than the 10242 of .*lh.sphere"):
        LaminarSurfaces.from_freesurfer("fs5", fs5.subjects_dir, spacing=spacing)


def test_spacing_as_fine_as_the_mesh_is_accepted():
    from mne_laminar_plugin.surfaces._freesurfer import check_spacing, spacing_n_vertices

    assert spacing_n_vertices("ico5") == 10242 and spacing_n_vertices("oct6") == 16386
    check_spacing("ico5", 10242, "lh.sphere")  # no error


# ------------------------------------------------------------ h5 files
@pytest.fixture(scope="module")
def h5_file(tmp_path_factory):
    """A valid leadfield HDF5 (real MNE forward of 6 dipoles, free), no sidecar."""
    folder = tmp_path_factory.mktemp("h5")
    sphere_forward(folder / "sphere-fwd.fif", n_sources=6)
    data = L.read_leadfield(folder / "sphere-fwd.fif", orientation_type="free")
    return L.write_leadfield(folder / "sub-01_desc-laminar_leadfield.h5", data)


def _crafted(h5_file, tmp_path, edit) -> Path:
    fname = tmp_path / h5_file.name
    shutil.copy(h5_file, fname)
    with h5py.File(fname, "a") as f:
        edit(f)
    return fname


@pytest.mark.parametrize("attr", ["n_layers", "orientation_type", "n_columns", "synthetic",
                                  "format_version"])
def test_h5_missing_attribute(h5_file, tmp_path, attr):
    fname = _crafted(h5_file, tmp_path, lambda f: f.attrs.__delitem__(attr))
    with pytest.raises(ValueError, match=rf"{fname.name} lacks the attribute '{attr}'"):
        L.read_leadfield(fname)


def test_h5_missing_dropped_columns(h5_file, tmp_path):
    fname = _crafted(h5_file, tmp_path, lambda f: f.__delitem__("dropped_columns"))
    with pytest.raises(ValueError, match=rf"{fname.name} has no 'dropped_columns' dataset"):
        L.read_leadfield(fname)


def test_h5_leadfield_stored_as_group(h5_file, tmp_path):
    def edit(f):
        del f["leadfield"]
        f.create_group("leadfield")

    fname = _crafted(h5_file, tmp_path, edit)
    with pytest.raises(ValueError, match=rf"{fname.name}: 'leadfield' is an HDF5 Group"):
        L.read_leadfield(fname)


def test_h5_garbage_info_names_the_file(h5_file, tmp_path):
    def edit(f):
        del f["info_fif"]
        f.create_dataset("info_fif", data=np.frombuffer(b"garbage" * 50, np.uint8))

    fname = _crafted(h5_file, tmp_path, edit)
    with pytest.raises(ValueError, match=rf"{fname}: dataset 'info_fif' is not a readable"):
        L.read_leadfield(fname)


@pytest.mark.parametrize("trans", [np.eye(3), np.full((4, 4), np.nan)])
def test_h5_bad_mri_head_t(h5_file, tmp_path, trans):
    def edit(f):
        del f["mri_head_t"]
        f.create_dataset("mri_head_t", data=trans)

    fname = _crafted(h5_file, tmp_path, edit)
    with pytest.raises(ValueError, match=rf"{fname.name}: mri_head_t must be a finite 4x4"):
        L.read_leadfield(fname)


def test_h5_newer_format_version(h5_file, tmp_path):
    fname = _crafted(h5_file, tmp_path, lambda f: f.attrs.__setitem__("format_version", 99))
    with pytest.raises(ValueError, match=rf"{fname.name} has format_version 99.*versions 1 to 1"):
        L.read_leadfield(fname)


def test_h5_n_layers_disagrees_with_layer_data(h5_file, tmp_path):
    def edit(f):
        f.attrs["n_layers"] = 3
        del f["layer"]
        f.create_dataset("layer", data=np.array([0, 0, 0, 1, 1, 1]))

    fname = _crafted(h5_file, tmp_path, edit)
    with pytest.raises(ValueError, match=r"n_layers is 3 but the sources hold layer\(s\) \[0, 1\]"):
        L.read_leadfield(fname)


def test_h5_declaring_a_huge_leadfield(h5_file, tmp_path):
    def edit(f):
        del f["leadfield"]
        f.create_dataset("leadfield", shape=(306, 10**9, 3), dtype="f8", chunks=(306, 100, 3))

    fname = _crafted(h5_file, tmp_path, edit)
    with pytest.raises(ValueError, match=r"declares a leadfield of shape \(306, 1000000000, 3\)"
                       r" \(6839.63 GiB of float64\) but the file holds only"):
        L.read_leadfield(fname)


def test_h5_larger_than_memory(h5_file, monkeypatch):
    from mne_laminar_plugin import _conventions

    monkeypatch.setattr(_conventions, "available_memory", lambda: 1000)
    with pytest.raises(MemoryError, match=rf"the leadfield of .*{h5_file.name} .*needs"):
        L.read_leadfield(h5_file)


def test_h5_damaged_after_writing_fails_its_checksum(h5_file, tmp_path):
    fname = tmp_path / h5_file.name
    shutil.copy(h5_file, fname)
    bids.write_json(bids.sidecar(fname), L.with_checksum({}, fname))
    L.read_leadfield(fname)  # intact: reads
    raw = bytearray(fname.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 4096] = bytes(4096)
    fname.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"{fname.name} does not match the checksum "
                       r"\(LeadfieldSHA256\) in its sidecar"):
        L.read_leadfield(fname)


def test_rewriting_the_h5_through_the_library_refreshes_its_checksum(h5_file, tmp_path):
    fname = tmp_path / h5_file.name
    shutil.copy(h5_file, fname)
    bids.write_json(bids.sidecar(fname), L.with_checksum({"Other": 1}, fname))
    data = L.read_leadfield(fname)
    data.leadfield = data.leadfield * 2
    L.write_leadfield(fname, data, overwrite=True)
    side = json.loads(bids.sidecar(fname).read_text())
    assert side["Other"] == 1 and side["LeadfieldSHA256"] == bids.sha256_file(fname)
    np.testing.assert_array_equal(L.read_leadfield(fname).leadfield, data.leadfield)


def test_folder_named_like_the_file(tmp_path):
    folder = tmp_path / "sub-01_fixed_leadfield.npz"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=r"sub-01_fixed_leadfield.npz is a folder, not"):
        L.read_leadfield(folder)


# ----------------------------------------------------------- npz files
def _npz(tmp_path, name="bad_leadfield.npz", n_sens=4, n_src=6, **keys) -> Path:
    rng = np.random.default_rng(0)
    base = dict(
        leadfield=rng.normal(size=(n_sens, n_src)),
        sensor_units=np.full(n_sens, 112),
        sensor_unitmult=np.full(n_sens, -15),
    )
    base.update(keys)
    base = {k: v for k, v in base.items() if v is not None}
    fname = tmp_path / name
    np.savez(fname, **base)
    return fname


@pytest.mark.parametrize(
    "keys, match",
    [
        (dict(sensor_units=np.full(4, 9999)), r"Unknown sensor unit\(s\) \[9999\]"),
        (dict(sensor_unitmult=np.full(4, 7)), r"Unknown unit multiplier 7"),
        (dict(n_layers=np.array(-2)), r"n_layers must be one integer >= 1"),
        (dict(n_layers=np.array("two")), r"n_layers must be one integer >= 1"),
        (dict(sensor_units=np.full(4, 112.7)), r"sensor_units must hold integer FIFF codes"),
        (dict(ch_types=np.array(["grad"] * 4)), r"is 'grad' but sensor_units 112 is a mag unit"),
        (dict(ch_types=np.array(["banana"] * 4)), r"unknown channel type\(s\) \['banana'\]"),
        (dict(leadfield=np.zeros((4, 0))), r"has shape \(4, 0\): it needs at least one"),
        (dict(leadfield=np.zeros((0, 6)), sensor_units=None, sensor_unitmult=None),
         r"has shape \(0, 6\)"),
        (dict(column=np.array([0, 1, 2, -5, 4, 5]), layer=np.zeros(6, int)),
         r"column values must be in \[0, n_columns"),
        (dict(src_coords=np.r_[np.zeros((5, 3)), [[np.nan, 0, 0]]]),
         r"src_coords has NaN/inf for 1 source\(s\) \(first: source 5\)"),
        (dict(leadfield=np.full((4, 6), 1e308), sensor_unitmult=np.zeros(4, int)),
         r"24 value\(s\) overflow float64 when converted"),
    ],
)
@pytest.mark.filterwarnings("ignore:.*stores no sensor units")
def test_npz_bad_content_names_the_file(tmp_path, keys, match):
    fname = _npz(tmp_path, **keys)
    with pytest.raises(ValueError, match=match) as err:
        L.read_leadfield(fname)
    assert str(fname) in str(err.value)


def test_npz_header_declaring_a_huge_array(tmp_path):
    """A .npy header declaring (1e6, 1e7) is refused before numpy allocates it."""
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**7)}
    )
    buf.write(bytes(800))
    fname = tmp_path / "sub-01_fixed_leadfield.npz"
    with zipfile.ZipFile(fname, "w") as zf:
        zf.writestr("leadfield.npy", buf.getvalue())
    with pytest.raises(ValueError, match=rf"{fname.name}: key 'leadfield' declares an array "
                       r"of shape \(1000000, 10000000\) \(74505.81 GiB"):
        L.read_leadfield(fname)


def test_npz_float16_is_converted_without_overflow(tmp_path):
    lf = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float16) * 1000
    fname = _npz(tmp_path, leadfield=lf, sensor_unitmult=np.zeros(4, int))  # SI: x 1e6
    data = L.read_leadfield(fname)
    np.testing.assert_allclose(data.leadfield, lf.astype(np.float64) * 1e6, rtol=1e-6)


# --------------------------------------------------------------- labels
def _subject_copy(fs5, tmp_path) -> Path:
    sd = tmp_path / "subjects"
    shutil.copytree(fs5.subjects_dir / "fs5", sd / "fs5")
    return sd


def test_garbage_cortex_label(fs5, tmp_path):
    sd = _subject_copy(fs5, tmp_path)
    (sd / "fs5" / "label" / "lh.cortex.label").write_text("this is\nnot a label\n")
    with pytest.raises(ValueError, match=r"lh cortex label .*lh.cortex.label is not a "
                       r"FreeSurfer label file: line 2 should be the number of vertices"):
        LaminarSurfaces.from_freesurfer("fs5", sd, spacing="oct3", cortex_mask="cortex_label")


@pytest.mark.parametrize(
    "text, match",
    [("", "fewer than 2 lines"), ("#!ascii\n3\n1 0 0 0 0\n", "announces 3 vertices but 1"),
     ("#!ascii\n0\n", "has no vertices"), ("#!ascii\n1\n1 a b c d\n", "not a number")],
)
def test_empty_or_garbage_roi_label_names_the_roi(tmp_path, text, match):
    from mne_laminar_plugin.predictors import read_roi

    fname = tmp_path / "lh.myroi.label"
    fname.write_text(text)
    with pytest.raises(ValueError, match=rf"ROI '{fname}'.*{match}"):
        read_roi(str(fname))


def test_corrupt_t1_warns_that_the_scanner_transform_is_lost(fs5, tmp_path):
    sd = _subject_copy(fs5, tmp_path)
    (sd / "fs5" / "mri").mkdir(exist_ok=True)
    (sd / "fs5" / "mri" / "T1.mgz").write_bytes(b"\x1f\x8b" + b"corrupt" * 100)
    with pytest.warns(RuntimeWarning, match=r"Could not read .*T1.mgz.*no scanner-RAS transform"):
        LaminarSurfaces.from_freesurfer("fs5", sd, spacing="oct3")


# ----------------------------------------------------------- options
def test_all_score_weights_zero_refused():
    from mne_laminar_plugin.predictors import anatomical_score

    z = np.arange(5.0)
    with pytest.raises(ValueError, match=r"weights=.*makes every weight 0"):
        anatomical_score(z, z, z, z, weights=dict(thickness=0, lf_rms_diff=0,
                                                  radiality=0, distance=0))


def _config_error(tmp_path, line):
    from mne_bids_pipeline._config_import import _import_config

    from mne_laminar_plugin.pipeline.host import PluginHost

    PluginHost().install()
    cfg_file = tmp_path / "config.py"
    cfg_file.write_text(
        f"bids_root = {str(tmp_path)!r}\nch_types = ['meg']\nconditions = ['stim']\n{line}\n"
    )
    with pytest.raises(ValueError) as err:
        _import_config(config_path=cfg_file, add_all_tasks=False)
    return str(err.value)


@pytest.mark.parametrize(
    "line, match",
    [
        ("laminar_score_weights = dict(thickness=0.0, lf_rms_diff=0.0, radiality=0.0, "
         "distance=0.0)", "laminar_score_weights=.*makes every weight 0"),
        ("laminar_random_seed = -1", "laminar_random_seed"),
        ("laminar_skull_margin = 500.0", "laminar_skull_margin"),
        ("laminar_n_layers = 11\nlaminar_n_layer = 5",
         "'laminar_n_layer' .*close to the option 'laminar_n_layers', also set"),
    ],
)
def test_option_errors_name_the_option(tmp_path, restore_mbp, line, match):
    import re

    assert re.search(match, _config_error(tmp_path, line), re.S)


def test_plugin_whose_hook_raises_is_named():
    from mne_laminar_plugin.pipeline.host import PluginError, PluginHost, hookimpl

    class Broken:
        @hookimpl
        def mbp_config_options(self):
            raise KeyError("oops")

    host = PluginHost(plugins=[("brokenplugin", Broken())])
    with pytest.raises(PluginError, match=r"'brokenplugin'.*mbp_config_options raised KeyError"):
        host.options()


def test_outputs_changed_by_another_run(tmp_path):
    from mne_laminar_plugin.pipeline._mbp import prep_out_files

    cfg = SimpleNamespace(laminar_root=tmp_path)
    exec_params = SimpleNamespace(memory_file_method="mtime", deriv_root=tmp_path)
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(RuntimeError, match=r"b.json.*Another run on the same dataset"):
        prep_out_files(cfg=cfg, exec_params=exec_params,
                       out_files={"a": tmp_path / "a.json", "b": tmp_path / "b.json"})
    out = prep_out_files(cfg=cfg, exec_params=exec_params, out_files={"a": tmp_path / "a.json"})
    assert json.dumps(str(out["a"][0])).endswith('a.json"')


def test_leadfield_larger_than_memory_refused_before_computing(fs5, monkeypatch):
    import mne

    from mne_laminar_plugin import _conventions
    from mne_laminar_plugin.demo import make_meg_info
    from mne_laminar_plugin.forward import compute_laminar_forward

    surf = LaminarSurfaces.from_freesurfer("fs5", fs5.subjects_dir, n_layers=3, spacing="oct3")
    sphere = mne.make_sphere_model((0.0, 0.0, 0.0), 0.12, verbose=False)
    trans = mne.transforms.Transform("mri", "head", np.eye(4))
    monkeypatch.setattr(_conventions, "available_memory", lambda: 10_000)
    with pytest.raises(MemoryError, match=r"The fixed laminar leadfield \(306 channels x 3 "
                       r"layers x \d+ columns, float64\) needs .*laminar_column_spacing"):
        compute_laminar_forward(surf, make_meg_info(), trans, sphere, mindist=0.0)
