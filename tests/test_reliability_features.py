"""Issue 14, "broken features": MNE forwards in load mode, layouts checked."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mne_laminar_plugin import leadfield as L

from _reliab_helpers import sphere_forward  # noqa: E402


@pytest.fixture(scope="module")
def fwd_file(tmp_path_factory):
    fname = tmp_path_factory.mktemp("fwd") / "sub-01_fwd.fif"
    fwd = sphere_forward(fname, n_sources=6)
    return fname, fwd


def test_read_any_mne_forward_and_save_it(fwd_file, tmp_path):
    """A forward's reduced Info (no 'events', no 'sfreq') no longer breaks the h5 write."""
    import mne

    fname, _ = fwd_file
    data = L.read_leadfield(fname, orientation_type="free")
    # independent reference: MNE's own gain, SI -> fT/nAm (mag) and fT/cm/nAm (grad)
    fwd = mne.read_forward_solution(fname, verbose=False)
    gain = fwd["sol"]["data"].reshape(len(data.ch_names), -1, 3)
    is_grad = np.array([t == "grad" for t in data.ch_types])
    scale = np.where(is_grad, 1e4, 1e6)[:, None, None]
    np.testing.assert_allclose(data.leadfield, gain * scale, rtol=1e-12)
    h5 = L.write_leadfield(tmp_path / "sub-01_desc-laminar_leadfield.h5", data)
    back = L.read_leadfield(h5)
    np.testing.assert_array_equal(back.leadfield, data.leadfield)
    assert back.info["ch_names"] == data.ch_names
    # and this package's own FIF (written from the h5) reads back too
    fif = L.write_forward_fif(tmp_path / "sub-01_desc-laminar_fwd.fif", back)
    again = L.read_leadfield(fif, orientation_type="free")
    np.testing.assert_allclose(again.leadfield, data.leadfield, rtol=1e-6)
    L.write_leadfield(tmp_path / "again_leadfield.h5", again)


def _surfaces(n_layers, n_columns):
    return SimpleNamespace(
        n_layers=n_layers, n_columns=n_columns,
        hemi=np.array(["lh"] * (n_columns // 2) + ["rh"] * (n_columns - n_columns // 2)),
        vertno=np.arange(n_columns),
    )  # fmt: skip


def test_loaded_layout_must_match_the_surfaces(tmp_path):
    data = L.LeadfieldBuilder().random("fixed", 30, 2 * 100, random_state=0, n_layers=2)
    with pytest.raises(ValueError, match=r"my_leadfield.npz has 2 layers x 100 columns, but "
                       r"the layer surfaces have 11 layers x 1950 columns"):
        L.attach_surface_layout(data, _surfaces(11, 1950), fname=tmp_path / "my_leadfield.npz")


def test_loaded_sources_without_layout_must_fit_the_surfaces(tmp_path):
    data = L.LeadfieldBuilder().random("fixed", 30, 21450, random_state=0, n_layers=1)
    with pytest.raises(ValueError, match=r"x.npz has 21450 sources and no layer/column layout; "
                       r"the layer surfaces need 11 layers x 1951 columns = 21461"):
        L.attach_surface_layout(data, _surfaces(11, 1951), fname=tmp_path / "x.npz")
    # the right number of sources gets the layer-major layout of the surfaces
    data = L.LeadfieldBuilder().random("fixed", 30, 11 * 1950, random_state=0, n_layers=1)
    L.attach_surface_layout(data, _surfaces(11, 1950))
    assert data.n_layers == 11 and data.n_columns == 1950
    np.testing.assert_array_equal(data.layer[1949:1951], [0, 1])
    np.testing.assert_array_equal(data.column[1949:1951], [1949, 0])
