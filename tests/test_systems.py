"""CTF-275 and OPM arrays of the demo: MNE-valid infos, the fast engine vs MNE.

The engine's reference is ``mne.make_forward_solution`` (through
``engine.compute_gain_mne``) on the same sources, with CTF's grade-3
compensation in effect.
"""

from __future__ import annotations

import mne
import numpy as np
import pytest
from mne.io.constants import FIFF
from test_engine import TOL, _bem, _brain, _col_err, _sources, _trans

from mne_laminar_plugin import demo
from mne_laminar_plugin import forward as engine
from mne_laminar_plugin._demo_sensors import CTF_G3BR, _environment_response, default_head


@pytest.fixture(scope="module")
def infos():
    return {s: demo.make_meg_info(system=s) for s in ("ctf275", "opm")}


def test_ctf275_info_is_a_compensated_ctf_recording(infos, tmp_path):
    info = infos["ctf275"]
    meg = mne.pick_types(info, meg=True, ref_meg=False)
    ref = mne.pick_types(info, meg=False, ref_meg=True)
    assert len(meg) == 275 and len(ref) == 9
    assert {info["chs"][i]["coil_type"] & 0xFFFF for i in meg} == {FIFF.FIFFV_COIL_CTF_GRAD}
    assert mne._fiff.compensator.get_current_comp(info) == 3
    assert {info["chs"][i]["coil_type"] for i in ref} == {
        FIFF.FIFFV_COIL_CTF_REF_MAG, FIFF.FIFFV_COIL_CTF_REF_GRAD,
        FIFF.FIFFV_COIL_CTF_OFFDIAG_REF_GRAD}  # fmt: skip
    assert info["comps"][0]["kind"] == 3 and info["comps"][0]["ctfkind"] == CTF_G3BR
    # grade 3 cancels the environment: uniform fields and uniform gradients
    resp = _environment_response([info["chs"][i] for i in np.r_[meg, ref]])
    coef = info["comps"][0]["data"]["data"]
    resid = resp[: len(meg)] - coef @ resp[len(meg):]
    assert np.abs(resid).max() < 1e-10 * np.abs(resp[: len(meg), 3:]).max()
    assert np.abs(resp[: len(meg), 3:]).max() > 0  # the gradiometers do see gradients
    # a raw FIF with it reads back with the compensation
    raw = mne.io.RawArray(np.zeros((len(info["ch_names"]), 10)), info, verbose=False)
    raw.save(tmp_path / "ctf_raw.fif", verbose=False)
    back = mne.io.read_raw_fif(tmp_path / "ctf_raw.fif", verbose=False)
    assert back.compensation_grade == 3
    np.testing.assert_allclose(back.info["comps"][0]["data"]["data"], coef, rtol=1e-6)


def test_opm_info_radial_and_tangential(infos):
    info = infos["opm"]
    meg = mne.pick_types(info, meg=True)
    assert len(meg) == 80 and set(info.get_channel_types(picks=meg)) == {"mag"}
    chs = [info["chs"][i] for i in meg]
    assert {c["coil_type"] for c in chs} == {FIFF.FIFFV_COIL_KERNEL_OPM_MAG_GEN1}
    pos = np.array([c["loc"][:3] for c in chs])
    normal = np.array([c["loc"][9:12] for c in chs])
    center = pos.mean(0)
    radial = (pos - center) / np.linalg.norm(pos - center, axis=1, keepdims=True)
    cos = np.abs(np.sum(normal * radial, axis=1))
    names = [c["ch_name"] for c in chs]
    z = np.array([n.endswith("-Z") for n in names])
    assert z.sum() == 40 and cos[z].min() > 0.8 and cos[~z].max() < 0.6
    # on the scalp: every sensor outside the head, the closest ~6 mm away
    head = default_head()
    dev_head = info["dev_head_t"]["trans"]
    pos_head = pos @ dev_head[:3, :3].T + dev_head[:3, 3]
    from scipy.spatial import cKDTree

    assert 0.004 < cKDTree(head).query(pos_head)[0].min() < 0.012


@pytest.mark.parametrize("system", ["ctf275", "opm"])
@pytest.mark.parametrize("orient", ["fixed", "free"])
def test_engine_matches_mne_on_system(infos, system, orient):
    """The fast engine equals make_forward_solution (CTF: grade 3) to 1e-6."""
    info = infos[system]
    bem = _bem(1)
    rr, nn = _sources(_brain(bem), 40, seed=3)
    nnx = nn if orient == "fixed" else None
    gain = engine.compute_gain(info, _trans(), bem, rr, nnx, eeg=False)
    ref = engine.compute_gain_mne(info, _trans(), bem, rr, nnx, eeg=False)
    n_meg = len(mne.pick_types(info, meg=True, ref_meg=False))
    assert gain.shape == ref.shape == (n_meg, len(rr) * (1 if nnx is not None else 3))
    assert _col_err(gain, ref, info, eeg=False) < TOL
    if system == "ctf275":  # the compensation is in the gain: grade 0 differs
        info0 = info.copy()
        mne._fiff.compensator.set_current_comp(info0, 0)
        raw_gain = engine.compute_gain(info0, _trans(), bem, rr, nnx, eeg=False)
        assert _col_err(raw_gain, ref, info, eeg=False) > 1e-3


@pytest.mark.parametrize("system", ["ctf275", "opm"])
def test_leadfield_and_predictor_say_which_sensors(infos, system):
    """A laminar leadfield on each array: mag rows (axial gradiometers / OPM), described."""
    from test_forward import SphereCortex

    from mne_laminar_plugin import LeadfieldBuilder
    from mne_laminar_plugin.predictors import leadfield_rms_diff

    info = infos[system]
    bem = _bem(1)
    center = _brain(bem)["rr"].mean(0)
    cortex = SphereCortex(n_layers=3, grade=1, r_pial=0.05, r_white=0.045, center=center)
    data = LeadfieldBuilder(surfaces=cortex, bem=bem, trans=_trans(), info=info,
                            mindist=0.0, eeg=False).get_leadfield(
        "x", "fixed", "simulate", return_metadata=True)  # fmt: skip
    n_meg = len(mne.pick_types(info, meg=True, ref_meg=False))
    assert data.n_sensors == n_meg and set(data.ch_types) == {"mag"}
    assert data.units == ["fT/nAm"] * n_meg
    want = ("275 CTF axial gradiometer (coil 5001), synthetic gradiometer compensation "
            "grade 3" if system == "ctf275" else "80 Kernel OPM sensor Gen1 (coil 8201)")
    assert data.provenance["sensors"] == want
    values, meta = leadfield_rms_diff(data)
    assert meta["ch_type"] == "mag" and meta["n_channels"] == n_meg
    assert meta["sensors"] == want and want in meta["description"]
    assert np.isfinite(values).all()


def test_cli_demo_system_option():
    from mne_laminar_plugin.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["demo", "d"]).system == "vectorview"
    assert parser.parse_args(["demo", "d", "--system", "ctf275"]).system == "ctf275"
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "d", "--system", "kit"])
    with pytest.raises(ValueError, match="system"):
        demo.make_meg_info(system="kit")
