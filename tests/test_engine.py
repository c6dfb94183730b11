"""Tests for the fast forward engine (mne_laminar_plugin.forward).

The oracle is mne.make_forward_solution on the same inputs (through
engine.compute_gain_mne); independent checks are Sarvas' closed-form sphere
field written out here, the silence of radial dipoles in a sphere, and a BEM
of a spherical mesh converging to the sphere model.
"""

from __future__ import annotations

import os.path as op
from functools import lru_cache

import mne
import numpy as np
import pytest
from mne._fiff.meas_info import _merge_info
from mne.bem import _surfaces_to_bem
from mne.io.constants import FIFF
from mne.surface import _get_ico_surface
from mne.transforms import Transform, _get_trans, apply_trans

from mne_laminar_plugin import forward as engine
from mne_laminar_plugin.forward import _engine_numba, _engine_setup

FS_DIR = op.join(op.dirname(mne.__file__), "data", "fsaverage")
TOL = 1e-6  # max relative column error required vs MNE in float64


# #############################################################################
# Geometry


def _fib_dirs(n, zmin):
    """Quasi-uniform unit vectors with z >= zmin."""
    i = np.arange(8 * n)
    phi = np.arccos(1 - 2 * (i + 0.5) / (8 * n))
    th = np.pi * (1 + 5**0.5) * i
    p = np.c_[np.cos(th) * np.sin(phi), np.sin(th) * np.sin(phi), np.cos(phi)]
    p = p[p[:, 2] >= zmin]
    return p[np.round(np.linspace(0, len(p) - 1, n)).astype(int)]


def _make_info(
    center, *, n_loc=8, n_eeg=12, radius=0.13, eeg_radius=0.1, eeg_first=False
):
    """Vectorview-like MEG (mag 3022 + two planar 3012 per location) + EEG.

    MEG in device coordinates with an identity dev_head_t, EEG in head
    coordinates, all centred on ``center`` (head frame).
    """
    meg = []
    for li, ez in enumerate(_fib_dirs(n_loc, 0.0)):
        tmp = [0.0, 0.0, 1.0] if abs(ez[2]) < 0.9 else [1.0, 0.0, 0.0]
        ex = np.cross(tmp, ez)
        ex /= np.linalg.norm(ex)
        ey = np.cross(ez, ex)
        r0 = center + radius * ez
        meg += [
            (f"MEG{li:03d}1", "mag", FIFF.FIFFV_COIL_VV_MAG_T1, np.r_[r0, ex, ey, ez]),
            (
                f"MEG{li:03d}2",
                "grad",
                FIFF.FIFFV_COIL_VV_PLANAR_T1,
                np.r_[r0, ex, ey, ez],
            ),
            (
                f"MEG{li:03d}3",
                "grad",
                FIFF.FIFFV_COIL_VV_PLANAR_T1,
                np.r_[r0, ey, -ex, ez],
            ),
        ]
    eeg = [
        (
            f"EEG{ei:03d}",
            "eeg",
            FIFF.FIFFV_COIL_EEG,
            np.r_[center + eeg_radius * d, np.zeros(9)],
        )
        for ei, d in enumerate(_fib_dirs(n_eeg, -0.3))
    ]
    chans = eeg + meg if eeg_first else meg + eeg
    info = mne.create_info([c[0] for c in chans], 1000.0, [c[1] for c in chans])
    with info._unlock():
        info["dev_head_t"] = Transform("meg", "head")
    for ch, (_, _, coil, loc) in zip(info["chs"], chans):
        ch["loc"][:] = loc
        ch["coil_type"] = coil
    return info


@lru_cache
def _inner_skull(ico):
    surf = mne.read_bem_surfaces(
        op.join(FS_DIR, "fsaverage-inner_skull-bem.fif"), verbose=False
    )[0]
    surf = dict(rr=surf["rr"] * 1000.0, tris=surf["tris"].copy())
    return _surfaces_to_bem([surf], [FIFF.FIFFV_BEM_SURF_ID_BRAIN], [0.3], ico=ico)[0]


@lru_cache
def _bem(n_layers):
    """1-layer: inner skull ico-3 (642 nodes); 3-layer: nested ico-2 copies."""
    if n_layers == 1:
        return mne.make_bem_solution([_inner_skull(3)], verbose=False)
    surf = _inner_skull(2)
    c = surf["rr"].mean(0)
    ids = [
        FIFF.FIFFV_BEM_SURF_ID_BRAIN,
        FIFF.FIFFV_BEM_SURF_ID_SKULL,
        FIFF.FIFFV_BEM_SURF_ID_HEAD,
    ]
    surfs = [
        dict(rr=(c + scale * (surf["rr"] - c)) * 1000.0, tris=surf["tris"].copy())
        for scale in (1.0, 1.06, 1.12)
    ]
    model = _surfaces_to_bem(surfs, ids, [0.3, 0.006, 0.3])
    return mne.make_bem_solution(model, verbose=False)


@lru_cache
def _trans():
    return _get_trans("fsaverage")[0]  # realistic, not the identity


def _sources(surf, n, seed, lo=0.15, hi=0.9):
    """Random sources strictly inside a star-shaped surface, random orientations."""
    rng = np.random.default_rng(seed)
    c = surf["rr"].mean(0)
    idx = rng.integers(0, len(surf["rr"]), n)
    rr = c + rng.uniform(lo, hi, (n, 1)) * (surf["rr"][idx] - c)
    nn = rng.standard_normal((n, 3))
    nn /= np.linalg.norm(nn, axis=1, keepdims=True)
    return rr, nn


def _brain(bem):
    return [s for s in bem["surfs"] if s["id"] == FIFF.FIFFV_BEM_SURF_ID_BRAIN][0]


def _col_err(gain, ref, info, *, meg=True, eeg=True):
    """Max over columns and channel types of ||gain - ref|| / ||ref||."""
    names = engine.gain_ch_names(info, meg=meg, eeg=eeg)
    kinds = np.array([info.get_channel_types([n])[0] for n in names])
    errs = []
    for kind in np.unique(kinds):
        rows = kinds == kind
        num = np.linalg.norm(gain[rows] - ref[rows], axis=0)
        errs.append((num / np.linalg.norm(ref[rows], axis=0)).max())
    return max(errs)


def _setup_bem(n_layers, n_src=60, seed=0, **kw):
    bem = _bem(n_layers)
    center = apply_trans(_trans(), _brain(bem)["rr"].mean(0))
    info = _make_info(center, **kw)
    rr, nn = _sources(_brain(bem), n_src, seed)
    return info, bem, rr, nn


# #############################################################################
# Agreement with mne.make_forward_solution


@pytest.mark.parametrize("orient", ["fixed", "free"])
def test_bem1_meg_matches_mne(orient):
    """1-layer BEM, magnetometers and planar gradiometers, realistic trans."""
    info, bem, rr, nn = _setup_bem(1)
    nnx = nn if orient == "fixed" else None
    gain = engine.compute_gain(info, _trans(), bem, rr, nnx, eeg=False)
    ref = engine.compute_gain_mne(info, _trans(), bem, rr, nnx, eeg=False)
    n_meg = len(mne.pick_types(info, meg=True))
    assert gain.shape == ref.shape == (n_meg, len(rr) * (1 if nnx is not None else 3))
    assert gain.dtype == np.float64 and gain.flags.f_contiguous
    assert _col_err(gain, ref, info, eeg=False) < TOL
    if orient == "free":  # fixed = projection of free on the head-frame orientation
        fixed = engine.compute_gain(info, _trans(), bem, rr, nn, eeg=False)
        nn_head = apply_trans(_trans(), nn, move=False)
        proj = np.einsum("cik,ik->ci", gain.reshape(n_meg, -1, 3), nn_head)
        np.testing.assert_allclose(fixed, proj, rtol=0, atol=1e-12 * np.abs(proj).max())


@pytest.mark.parametrize("orient", ["fixed", "free"])
def test_reference_channels_computed_then_dropped_like_mne(orient):
    """A reference magnetometer: MNE computes it, then post-picks it away."""
    info, bem, rr, nn = _setup_bem(1, n_src=30)
    ref_info = mne.create_info(["REF001"], 1000.0, ["ref_meg"])
    ref_info["chs"][0]["coil_type"] = FIFF.FIFFV_COIL_CTF_REF_MAG
    ref_info["chs"][0]["loc"][:] = np.r_[0.0, 0.0, 0.25, np.eye(3).ravel()]
    with ref_info._unlock():
        ref_info["dev_head_t"] = info["dev_head_t"]
    info = _merge_info([ref_info, info])
    nnx = nn if orient == "fixed" else None
    gain = engine.compute_gain(info, _trans(), bem, rr, nnx, eeg=False)
    ref = engine.compute_gain_mne(info, _trans(), bem, rr, nnx, eeg=False)
    assert gain.shape == ref.shape and gain.shape[0] == len(
        engine.gain_ch_names(info, eeg=False)
    )
    assert "REF001" not in engine.gain_ch_names(info)
    assert _col_err(gain, ref, info, eeg=False) < TOL


@pytest.mark.parametrize("orient", ["fixed", "free"])
def test_bem3_meeg_matches_mne(orient):
    """3-layer BEM, MEG and EEG together, channel order MEG then EEG."""
    info, bem, rr, nn = _setup_bem(3, n_src=40)
    nnx = nn if orient == "fixed" else None
    gain = engine.compute_gain(info, _trans(), bem, rr, nnx)
    ref = engine.compute_gain_mne(info, _trans(), bem, rr, nnx)
    assert gain.shape == ref.shape
    assert _col_err(gain, ref, info) < TOL


def test_bem3_eeg_only_and_channel_order():
    """EEG-only rows; EEG listed first in info still gives MNE's row order."""
    info, bem, rr, nn = _setup_bem(3, n_src=20, eeg_first=True)
    info["bads"] = [info["ch_names"][0], info["ch_names"][-1]]  # kept, like MNE
    src = mne.setup_volume_source_space(pos=dict(rr=rr, nn=nn), verbose=False)
    fwd = mne.make_forward_solution(info, _trans(), src, bem, verbose=False)
    names = engine.gain_ch_names(info)
    assert names == fwd["sol"]["row_names"]
    assert names[0].startswith("MEG") and len(names) == len(info["ch_names"])
    gain = engine.compute_gain(info, _trans(), bem, rr, None)
    assert _col_err(gain, fwd["sol"]["data"], info) < TOL
    eeg = engine.compute_gain(info, _trans(), bem, rr, nn, meg=False)
    ref = engine.compute_gain_mne(info, _trans(), bem, rr, nn, meg=False)
    assert eeg.shape == (
        len(mne.pick_types(info, meg=False, eeg=True, exclude=[])),
        len(rr),
    )
    assert _col_err(eeg, ref, info, meg=False) < TOL


def _sphere_setup(n_src=50, seed=1, head_radius=0.09):
    center = np.array([0.002, -0.01, 0.045])
    sphere = mne.make_sphere_model(
        r0=tuple(center), head_radius=head_radius, verbose=False
    )
    info = _make_info(center, eeg_radius=0.09 if head_radius else 0.1)
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n_src, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    rr = center + d * rng.uniform(0.005, 0.07, (n_src, 1))
    # orientations at least 25 degrees off radial (radial ones have ~no MEG
    # field in a sphere, so their relative error is meaningless)
    tang = np.cross(d, rng.standard_normal((n_src, 3)))
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)
    ang = rng.uniform(0, np.deg2rad(65), (n_src, 1))
    nn = np.cos(ang) * tang + np.sin(ang) * d
    return info, sphere, rr, nn


@pytest.mark.parametrize("orient", ["fixed", "free"])
def test_sphere_meeg_matches_mne(orient):
    """Sphere model: Sarvas for MEG, Berg-Scherg multi-shell for EEG."""
    info, sphere, rr, nn = _sphere_setup()
    nnx = nn if orient == "fixed" else None
    gain = engine.compute_gain(info, None, sphere, rr, nnx)
    ref = engine.compute_gain_mne(info, None, sphere, rr, nnx)
    assert gain.shape == ref.shape
    assert _col_err(gain, ref, info) < TOL


def test_sphere_meg_only_matches_mne():
    """A sphere without shells (MEG only) and an off-identity trans."""
    info, sphere, rr, nn = _sphere_setup(head_radius=None)
    trans = Transform("mri", "head", np.eye(4))
    trans["trans"][:3, 3] = [0.001, -0.002, 0.003]
    rr_mri = rr - trans["trans"][:3, 3]
    gain = engine.compute_gain(info, trans, sphere, rr_mri, nn, eeg=False)
    ref = engine.compute_gain_mne(info, trans, sphere, rr_mri, nn, eeg=False)
    assert _col_err(gain, ref, info, eeg=False) < TOL


# #############################################################################
# Independent physics


def _sarvas(rr, q, r0, rmag, cosmag, w, bins, n_coils):
    """Sarvas (1987), written out for dipole q at s (relative to the centre).

    B(r) = mu0 / (4 pi F^2) (F q x s - (q x s . r) grad F), a = r - s,
    F = |a| (|r| |a| + |r|^2 - s . r),
    grad F = (|a|^2/|r| + a.r/|a| + 2|a| + 2|r|) r - (|a| + 2|r| + a.r/|a|) s.
    """
    out = np.zeros((len(rr), n_coils))
    r = rmag - r0
    for i, (s, qi) in enumerate(zip(rr - r0, q)):
        a_vec = r - s
        a = np.linalg.norm(a_vec, axis=1)
        rn = np.linalg.norm(r, axis=1)
        F = a * (rn * a + rn**2 - r @ s)
        gradF = (a**2 / rn + (a_vec * r).sum(1) / a + 2 * a + 2 * rn)[:, None] * r - (
            a + 2 * rn + (a_vec * r).sum(1) / a
        )[:, None] * s
        qxs = np.cross(qi, s)
        B = (
            1e-7
            * (F[:, None] * qxs - ((qxs * r).sum(1))[:, None] * gradF)
            / F[:, None] ** 2
        )
        out[i] = np.bincount(bins, w * (B * cosmag).sum(1), n_coils)
    return out


def test_sphere_meg_equals_closed_form_sarvas():
    """Engine sphere MEG vs Sarvas' formula evaluated on MNE's coil points."""
    from mne.forward._compute_forward import _concatenate_coils
    from mne.forward._make_forward import _prep_meg_channels

    info, sphere, rr, nn = _sphere_setup(n_src=30, head_radius=None)
    coils = _prep_meg_channels(info, verbose=False)["defs"]
    rmag, cosmag, w, bins = _concatenate_coils(coils)
    expected = _sarvas(
        rr, nn, np.array(sphere["r0"]), rmag, cosmag, w, bins, len(coils)
    ).T
    gain = engine.compute_gain(info, None, sphere, rr, nn, eeg=False)
    assert _col_err(gain, expected, info, eeg=False) < 1e-10
    # a radial dipole has no external magnetic field in a spherical conductor
    radial = (rr - sphere["r0"]) / np.linalg.norm(
        rr - sphere["r0"], axis=1, keepdims=True
    )
    silent = engine.compute_gain(info, None, sphere, rr, radial, eeg=False)
    assert np.abs(silent).max() < 1e-9 * np.abs(gain).max()


def test_bem_of_spherical_mesh_approaches_sarvas():
    """A 1-layer BEM of an ico-3 sphere agrees with the sphere model to a few %."""
    surf = _get_ico_surface(3)
    model = _surfaces_to_bem(
        [dict(rr=surf["rr"] * 80.0, tris=surf["tris"])],
        [FIFF.FIFFV_BEM_SURF_ID_BRAIN],
        [0.3],
    )
    bem = mne.make_bem_solution(model, verbose=False)
    sphere = mne.make_sphere_model(r0=(0.0, 0.0, 0.0), head_radius=None, verbose=False)
    info = _make_info(np.zeros(3), n_eeg=0)
    rng = np.random.default_rng(3)
    d = rng.standard_normal((50, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    rr = d * rng.uniform(0.01, 0.06, (50, 1))
    nn = np.cross(d, rng.standard_normal((50, 3)))
    nn /= np.linalg.norm(nn, axis=1, keepdims=True)
    g_bem = engine.compute_gain(info, None, bem, rr, nn, eeg=False)
    g_sph = engine.compute_gain(info, None, sphere, rr, nn, eeg=False)
    err = np.linalg.norm(g_bem - g_sph, axis=0) / np.linalg.norm(g_sph, axis=0)
    assert err.max() < 0.08 and np.median(err) < 0.03


def test_field_matrix_matches_mne_bem_specify_coils():
    """The per-node rewrite of MNE's per-triangle field coefficients is exact."""
    from mne.forward._compute_forward import _bem_specify_coils
    from mne.forward._make_forward import _prep_meg_channels
    from mne.forward._make_forward import _setup_bem as _mne_setup_bem

    info, bem, _, _ = _setup_bem(3, n_src=1)
    bem = _mne_setup_bem(bem, "", 0, _trans(), verbose=False)
    defs = _prep_meg_channels(info, verbose=False)["defs"]
    mults = np.repeat(
        bem["source_mult"] / (4 * np.pi), [len(s["rr"]) for s in bem["surfs"]]
    )[None]
    ours = _engine_setup._meg_bem_solution(bem, defs, mults, _engine_numba._Threads(2))
    theirs = _bem_specify_coils(bem, defs, FIFF.FIFFV_COORD_HEAD, mults, 1)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-10 * np.abs(theirs).max())


# #############################################################################
# Chunks, parallel, float32


def test_chunks_and_parallel_give_identical_results():
    """Same chunk size: bitwise identical whatever the backend; else ~1e-16."""
    info, bem, rr, nn = _setup_bem(1, n_src=50)
    args = (info, _trans(), bem, rr)
    ref = engine.compute_gain(*args, nn, eeg=False, chunk_size=9)
    for kwargs in (dict(n_jobs=2, parallel="threading"), dict(n_jobs=1)):
        assert np.array_equal(
            engine.compute_gain(*args, nn, eeg=False, chunk_size=9, **kwargs), ref
        )
    other = engine.compute_gain(*args, nn, eeg=False, chunk_size=50)
    np.testing.assert_allclose(other, ref, rtol=0, atol=1e-14 * np.abs(ref).max())
    free = engine.compute_gain(*args, None, eeg=False, chunk_size=20)
    loky = engine.compute_gain(
        *args, None, eeg=False, chunk_size=20, n_jobs=2, parallel="loky"
    )
    assert np.array_equal(loky, free)
    info_s, sphere, rr_s, nn_s = _sphere_setup(n_src=30)
    ref_s = engine.compute_gain(info_s, None, sphere, rr_s, nn_s)
    assert np.array_equal(
        engine.compute_gain(info_s, None, sphere, rr_s, nn_s, chunk_size=4), ref_s
    )


@pytest.mark.parametrize("orient", ["fixed", "free"])
def test_float32_error_budget(orient):
    """float32 output: <= 1e-5 max relative column error vs MNE's float64."""
    info, bem, rr, nn = _setup_bem(1, n_src=80, seed=5)
    # include sources close to the inner skull, where cancellation is largest
    rr_near, nn_near = _sources(_brain(bem), 40, seed=6, lo=0.93, hi=0.97)
    rr, nn = np.r_[rr, rr_near], np.r_[nn, nn_near]
    nnx = nn if orient == "fixed" else None
    ref = engine.compute_gain_mne(info, _trans(), bem, rr, nnx, eeg=False)
    g32 = engine.compute_gain(info, _trans(), bem, rr, nnx, eeg=False, dtype=np.float32)
    assert g32.dtype == np.float32
    err = _col_err(g32.astype(float), ref, info, eeg=False)
    assert 1e-9 < err < 1e-5
    info_s, sphere, rr_s, nn_s = _sphere_setup(n_src=20)
    s32 = engine.compute_gain(info_s, None, sphere, rr_s, nn_s, dtype="float32")
    s64 = engine.compute_gain(info_s, None, sphere, rr_s, nn_s)
    assert _col_err(s32.astype(float), s64, info_s) < 1e-6


# #############################################################################
# Inside-the-inner-skull test


def _mne_keep(bem, trans, rr, mindist):
    """MNE's own decisions: the exact code path of make_forward_solution."""
    from mne.bem import _bem_find_surface
    from mne.source_space._source_space import _filter_source_spaces
    from mne.surface import _CheckInside, _CheckInsideSphere

    src = mne.setup_volume_source_space(
        pos=dict(rr=rr, nn=np.tile([0, 0, 1.0], (len(rr), 1))), verbose=False
    )
    mri_head_t = _get_trans(trans)[0]
    src._transform_to("head", mri_head_t)
    if bem["is_sphere"]:
        check = _CheckInsideSphere(bem)
    else:
        check = _CheckInside(_bem_find_surface(bem, "inner_skull"), verbose=False)
    _filter_source_spaces(
        check, limit=mindist, mri_head_t=mri_head_t, src=src, verbose=False
    )
    return src[0]["inuse"].astype(bool)


def test_check_inside_matches_mne():
    """Same decisions as MNE's own filtering, incl. rays through edges/vertices."""
    bem = _bem(1)
    surf = _brain(bem)
    rng = np.random.default_rng(7)
    c = surf["rr"].mean(0)
    idx = rng.integers(0, len(surf["rr"]), 1500)
    shell = c + rng.uniform(0.5, 1.2, (1500, 1)) * (surf["rr"][idx] - c)
    # very close to the surface (both sides), and rays through vertices/edges
    near = (
        surf["rr"][idx[:300]]
        + rng.choice([-1, 1], (300, 1)) * 1e-7 * surf["nn"][idx[:300]]
    )
    tris = surf["tris"][rng.integers(0, len(surf["tris"]), 200)]
    edge_mid = 0.5 * (surf["rr"][tris[:, 0]] + surf["rr"][tris[:, 1]])
    below = edge_mid.copy()
    below[:, 2] -= 0.01  # +z ray passes through an edge midpoint
    vert_ray = surf["rr"][idx[:100]].copy()
    vert_ray[:, 2] -= 0.005  # +z ray passes through a vertex
    box = c + rng.uniform(-0.12, 0.12, (500, 3))
    rr = np.concatenate([shell, near, below, vert_ray, box])
    for mindist in (0.0, 5.0):
        keep = engine.check_inside(bem, _trans(), rr, mindist)
        expected = _mne_keep(bem, _trans(), rr, mindist)
        assert 0 < keep.sum() < len(rr)
        np.testing.assert_array_equal(keep, expected)
    shifted = Transform("mri", "head", np.eye(4))
    shifted["trans"][:3, 3] = [0.0, 0.01, -0.02]
    for head_radius in (0.09, None):
        sphere = mne.make_sphere_model(
            r0=(0.0, 0.0, 0.04), head_radius=head_radius, verbose=False
        )
        rr_s = np.array([0.0, 0.0, 0.04]) + rng.uniform(-0.1, 0.1, (300, 3))
        for mindist, trans in ((0.0, None), (5.0, None), (5.0, shifted)):
            keep = engine.check_inside(sphere, trans, rr_s, mindist)
            np.testing.assert_array_equal(keep, _mne_keep(sphere, trans, rr_s, mindist))


def test_check_inside_agrees_with_make_forward_dropping():
    """The kept sources are make_forward_solution's vertno (mindist 3 mm)."""
    bem = _bem(1)
    info = _make_info(
        apply_trans(_trans(), _brain(bem)["rr"].mean(0)), n_loc=4, n_eeg=0
    )
    rr, nn = _sources(_brain(bem), 60, seed=9, lo=0.8, hi=1.05)
    keep = engine.check_inside(bem, _trans(), rr, 3.0)
    assert 0 < keep.sum() < len(rr)
    src = mne.setup_volume_source_space(pos=dict(rr=rr, nn=nn), verbose=False)
    fwd = mne.make_forward_solution(
        info, _trans(), src, bem, eeg=False, mindist=3.0, verbose=False
    )
    np.testing.assert_array_equal(np.flatnonzero(keep), fwd["src"][0]["vertno"])
    with pytest.raises(RuntimeError, match="dropped"):
        engine.compute_gain_mne(info, _trans(), bem, rr, nn, eeg=False)


# #############################################################################
# Errors and logging


def test_bad_input_errors():
    """Bad arguments raise errors naming the argument."""
    info, bem, rr, nn = _setup_bem(1, n_src=5)
    args = (info, _trans(), bem)
    with pytest.raises(ValueError, match="rr_mri must have shape"):
        engine.compute_gain(*args, rr[:, :2])
    with pytest.raises(ValueError, match="same shape as rr_mri"):
        engine.compute_gain(*args, rr, nn[:3])
    bad = nn.copy()
    bad[2] = 0
    with pytest.raises(ValueError, match="zero or non-finite"):
        engine.compute_gain(*args, rr, bad)
    with pytest.raises(ValueError, match="NaN"):
        engine.compute_gain(*args, np.full_like(rr, np.nan))
    with pytest.raises(ValueError, match="dtype"):
        engine.compute_gain(*args, rr, nn, dtype=np.int32)
    with pytest.raises(ValueError, match="parallel"):
        engine.compute_gain(*args, rr, nn, parallel="mpi")
    with pytest.raises(ValueError, match="chunk_size"):
        engine.compute_gain(*args, rr, nn, chunk_size=0)
    with pytest.raises(TypeError, match="rr_mri"):
        engine.compute_gain(*args, rr.tolist())
    with pytest.raises(RuntimeError, match="1-layer"):  # as MNE: no EEG on 1 layer
        engine.compute_gain(*args, rr, nn)
    with pytest.raises(ValueError, match="mindist"):
        engine.check_inside(bem, _trans(), rr, -1)
    # a MEG sensor inside the inner skull: refused, as by MNE
    inside_info = info.copy()
    inside_info["chs"][0]["loc"][:3] = apply_trans(_trans(), _brain(bem)["rr"].mean(0))
    with pytest.raises(RuntimeError, match="1 MEG sensor inside the inner skull"):
        engine.compute_gain(inside_info, _trans(), bem, rr, nn, eeg=False)
    with pytest.raises(RuntimeError, match="1 MEG sensor inside the inner skull"):
        engine.compute_gain_mne(inside_info, _trans(), bem, rr, nn, eeg=False)


def test_logging_reports_progress():
    """verbose=True logs what is computed."""
    info, bem, rr, nn = _setup_bem(1, n_src=30)
    with mne.utils.catch_logging() as log:
        engine.compute_gain(
            info, _trans(), bem, rr, nn, eeg=False, chunk_size=10, verbose=True
        )
    log = log.getvalue()
    assert (
        "Fast engine: 24 channels x 30 sources (fixed orientation, 642-node BEM" in log
    )
    assert "3 chunks" in log


def test_inputs_from_files(tmp_path):
    """info, trans and the BEM solution may be given as files, as to MNE."""
    info, bem, rr, nn = _setup_bem(1, n_src=10)
    mne.io.write_info(tmp_path / "meas-info.fif", info)
    mne.write_trans(tmp_path / "sub-trans.fif", _trans())
    mne.write_bem_solution(tmp_path / "sub-bem-sol.fif", bem)
    # (FIF stores sensor positions in float32: compare with the read-back objects)
    gain = engine.compute_gain(
        mne.io.read_info(tmp_path / "meas-info.fif", verbose=False),
        mne.read_trans(tmp_path / "sub-trans.fif"),
        mne.read_bem_solution(tmp_path / "sub-bem-sol.fif", verbose=False),
        rr,
        nn,
        eeg=False,
    )
    from_files = engine.compute_gain(
        tmp_path / "meas-info.fif",
        tmp_path / "sub-trans.fif",
        tmp_path / "sub-bem-sol.fif",
        rr,
        nn,
        eeg=False,
    )
    assert np.array_equal(from_files, gain)
    keep = engine.check_inside(tmp_path / "sub-bem-sol.fif", "fsaverage", rr)
    assert keep.all()
    with pytest.raises(FileNotFoundError, match="info"):
        engine.compute_gain(tmp_path / "nope-info.fif", _trans(), bem, rr, nn)
