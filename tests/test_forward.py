"""Laminar forward (mne_laminar_plugin.forward) against MNE and analytic solutions.

Geometry: a "cortex" of concentric spheres (same directions at every depth,
random column orientations) inside a sphere model or a spherical ico-3 BEM,
a small Vectorview-like MEG array (mag 3022 / planar grad 3012) and EEG
electrodes, and a non-identity head<->MRI transform so frame mistakes show.
The helpers are imported by ``test_leadfield.py``.
"""

from __future__ import annotations

import mne
import numpy as np
import pytest
from mne.io.constants import FIFF
from mne.transforms import Transform, apply_trans, rotation

from mne_laminar_plugin import mesh
from mne_laminar_plugin.forward import _forward as F

CENTER = np.array([0.0, 0.0, 0.04])  # head/MRI centre of the spheres (m)


# ---------------------------------------------------------------- helpers
def fib_hemisphere(n, radius, center=CENTER):
    """``n`` points on the upper hemisphere (Fibonacci) and their outward normals."""
    i = np.arange(n) + 0.5
    z = 1 - i / max(n, 1)
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    u = np.c_[r * np.cos(phi), r * np.sin(phi), z]
    return np.asarray(center) + radius * u, u


def make_info(n_mag=6, n_grad=6, n_eeg=0, *, mag_coil=FIFF.FIFFV_COIL_VV_MAG_T1,
              radius=0.12, eeg_first=False):  # fmt: skip
    """Small MEG/EEG Info: mags spread among planar grads on a helmet-like shell.

    Channel order is interleaved (mag, grad, grad, mag, ...) and EEG is put
    first when ``eeg_first`` so that MNE's MEG-then-EEG row order differs from
    the Info order.
    """
    n_meg = n_mag + n_grad
    pos, ez = fib_hemisphere(n_meg, radius)
    tmp = np.where(np.abs(ez[:, [0]]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    ex = np.cross(tmp, ez)
    ex /= np.linalg.norm(ex, axis=1, keepdims=True)
    ey = np.cross(ez, ex)
    is_mag = np.zeros(n_meg, bool)
    if n_mag:
        is_mag[np.round(np.linspace(0, n_meg - 1, n_mag)).astype(int)] = True
    chans = []
    for i in range(n_meg):
        kind = "mag" if is_mag[i] else "grad"
        coil = mag_coil if is_mag[i] else FIFF.FIFFV_COIL_VV_PLANAR_T1
        chans.append((f"MEG{i:03d}", kind, coil, np.r_[pos[i], ex[i], ey[i], ez[i]]))
    epos = fib_hemisphere(n_eeg, 0.085)[0] if n_eeg else np.zeros((0, 3))
    eeg = [(f"EEG{j:03d}", "eeg", FIFF.FIFFV_COIL_EEG, np.r_[epos[j], np.zeros(9)])
           for j in range(n_eeg)]  # fmt: skip
    chans = eeg + chans if eeg_first else chans + eeg
    info = mne.create_info([c[0] for c in chans], 1000.0, [c[1] for c in chans])
    with info._unlock():
        info["dev_head_t"] = Transform("meg", "head")
        for ch, (_, _, coil, loc) in zip(info["chs"], chans):
            ch["loc"][:] = loc
            ch["coil_type"] = coil
            meg = ch["kind"] == FIFF.FIFFV_MEG_CH
            ch["coord_frame"] = FIFF.FIFFV_COORD_DEVICE if meg else FIFF.FIFFV_COORD_HEAD
    return info


class SphereCortex:
    """LaminarSurfaces stand-in: concentric spheres, one column per ico vertex."""

    def __init__(self, n_layers=3, grade=2, r_pial=0.066, r_white=0.060,
                 center=CENTER, seed=0, per_layer=False):  # fmt: skip
        ico = mne.surface._get_ico_surface(grade)
        u = ico["rr"] / np.linalg.norm(ico["rr"], axis=1, keepdims=True)
        radii = np.linspace(r_pial, r_white, n_layers)
        self.layers = np.asarray(center) + radii[:, None, None] * u[None]
        rng = np.random.default_rng(seed)
        shape = (n_layers, *u.shape) if per_layer else u.shape
        ori = rng.normal(size=shape)
        self.orientations = ori / np.linalg.norm(ori, axis=-1, keepdims=True)
        self.hemi = np.where(u[:, 0] < 0, "lh", "rh")
        self.vertno = np.arange(len(u))
        self.n_layers = n_layers

    @property
    def n_columns(self):
        return self.layers.shape[1]


def some_trans(angle=8.0, shift=(0.002, -0.003, 0.004)):
    """A non-trivial MRI -> head transform (rotation about CENTER + shift)."""
    rot = rotation(np.deg2rad(angle), np.deg2rad(-angle / 2), np.deg2rad(angle / 3))
    t = np.eye(4)
    t[:3, :3] = rot[:3, :3]
    t[:3, 3] = CENTER - rot[:3, :3] @ CENTER + np.asarray(shift)
    return Transform("mri", "head", t)


def sphere_bem(radius=0.08, grade=3, center=CENTER):
    """One-layer BEM solution on an ico-``grade`` sphere (MRI frame)."""
    ico = mne.surface._get_ico_surface(grade)
    surf = dict(rr=(ico["rr"] * radius + center) * 1000.0, tris=ico["tris"])
    model = mne.bem._surfaces_to_bem([surf], [FIFF.FIFFV_BEM_SURF_ID_BRAIN], [0.3])
    return mne.make_bem_solution(model, verbose=False)


def mne_forward(info, trans, bem, rr, nn, *, mindist=0.0, meg=True, eeg=True):
    """MNE's free forward on one discrete space (the reference)."""
    src = mne.setup_volume_source_space(subject=None, pos=dict(rr=rr, nn=nn.copy()),
                                        verbose=False)  # fmt: skip
    return mne.make_forward_solution(info, trans, src, bem, meg=meg, eeg=eeg,
                                     mindist=mindist, verbose=False)  # fmt: skip


def sarvas(rq, q, rs, ns, r0):
    """Sarvas (1987): field of current dipoles (rq, q) in a sphere at r0, along ns."""
    r = rs - r0
    rq = rq - r0
    av = r[:, None] - rq[None]
    a = np.linalg.norm(av, axis=-1)
    rn = np.linalg.norm(r, axis=-1)[:, None]
    adr = np.einsum("mnk,mk->mn", av, r)
    big_f = a * (rn * a + rn**2 - np.einsum("mk,nk->mn", r, rq))
    c1 = a**2 / rn + adr / a + 2 * a + 2 * rn
    c2 = a + 2 * rn + adr / a
    grad_f = c1[..., None] * r[:, None] - c2[..., None] * rq[None]
    qxr = np.cross(q, rq)
    b = (1e-7 / big_f[..., None] ** 2) * (
        big_f[..., None] * qxr[None] - np.einsum("nk,mk->mn", qxr, r)[..., None] * grad_f
    )
    return np.einsum("mnk,mk->mn", b, ns)


@pytest.fixture(scope="module")
def bem():
    return sphere_bem()


@pytest.fixture(scope="module")
def info():
    return make_info(6, 8, 0)


# ------------------------------------------------------------- analytic
@pytest.mark.parametrize("ori", ["fixed", "free"])
def test_sarvas_point_magnetometers(ori):
    """Sphere model, point magnetometers: the leadfield is Sarvas' formula."""
    info = make_info(12, 0, 0, mag_coil=FIFF.FIFFV_COIL_POINT_MAGNETOMETER)
    cortex = SphereCortex(n_layers=3, grade=2)
    sphere = mne.make_sphere_model(r0=CENTER, head_radius=None)
    trans = some_trans()
    fwd = F.compute_laminar_forward(cortex, info, trans, sphere, orientation_type=ori,
                                    mindist=0.0)  # fmt: skip
    assert fwd.dropped["columns"].size == 0  # MEG-only sphere: nothing to drop
    rs = np.array([ch["loc"][:3] for ch in fwd.info["chs"]])
    ns = np.array([ch["loc"][9:12] for ch in fwd.info["chs"]])
    rr_head = apply_trans(trans, cortex.layers.reshape(-1, 3))
    np.testing.assert_allclose(fwd.rr_head, rr_head, rtol=0, atol=1e-15)
    if ori == "fixed":
        q = np.tile(cortex.orientations, (3, 1)) @ trans["trans"][:3, :3].T
        expected = sarvas(rr_head, q, rs, ns, CENTER)
    else:
        expected = np.stack(
            [sarvas(rr_head, np.tile(e, (len(rr_head), 1)), rs, ns, CENTER) for e in np.eye(3)],
            axis=-1,
        ).reshape(len(rs), -1)
    rel = np.linalg.norm(fwd.gain - expected, axis=0) / np.linalg.norm(expected, axis=0)
    assert rel.max() < 1e-10
    # radial dipoles are silent in a sphere: the fixed projection must honour it
    radial = SphereCortex(n_layers=2, grade=1)
    radial.orientations = (radial.layers[0] - CENTER) / np.linalg.norm(
        radial.layers[0] - CENTER, axis=1, keepdims=True
    )
    fwd_r = F.compute_laminar_forward(radial, info, "identity", sphere, mindist=0.0)
    assert np.abs(fwd_r.gain).max() < 1e-12 * np.abs(expected).max()


# ----------------------------------------------------------- versus MNE
def test_single_layer_matches_mne(info, bem):
    """One layer: equals mne.make_forward_solution (+ same projection) to 1e-6."""
    cortex = SphereCortex(n_layers=1, grade=3, r_pial=0.07, r_white=0.07, seed=1,
                          center=CENTER + [0.006, 0, 0])  # fmt: skip
    trans = some_trans()
    fwd = F.compute_laminar_forward(cortex, info, trans, bem, mindist=5.0)
    kept = fwd.columns
    assert 0 < len(kept) < cortex.n_columns  # the margin bites on this geometry
    ref = mne_forward(info, trans, bem, cortex.layers[0, kept], cortex.orientations[kept])
    assert ref["sol"]["row_names"] == fwd.ch_names
    nn_head = cortex.orientations[kept] @ trans["trans"][:3, :3].T
    ref_free = ref["sol"]["data"]
    ref_fixed = np.einsum("csk,sk->cs", ref_free.reshape(len(info["ch_names"]), -1, 3), nn_head)
    rel = np.linalg.norm(fwd.gain - ref_fixed, axis=0) / np.linalg.norm(ref_fixed, axis=0)
    assert rel.max() < 1e-6
    # ... which is MNE's own fixed conversion of a discrete space (float32 there)
    conv = mne.convert_forward_solution(ref, force_fixed=True, surf_ori=True, verbose=False)
    np.testing.assert_allclose(fwd.gain, conv["sol"]["data"], rtol=1e-5,
                               atol=1e-5 * np.abs(ref_fixed).max())  # fmt: skip
    free = F.compute_laminar_forward(cortex, info, trans, bem, mindist=5.0,
                                     orientation_type="free")  # fmt: skip
    rel = np.linalg.norm(free.gain - ref_free, axis=0) / np.linalg.norm(ref_free, axis=0)
    assert rel.max() < 1e-6


@pytest.mark.parametrize("ori", ["fixed", "free"])
def test_mne_internals_equal_public_api(info, bem, monkeypatch, ori):
    """engine='mne' via MNE's internals equals the make_forward_solution path."""
    cortex = SphereCortex(n_layers=2, grade=2, seed=5)
    trans = some_trans()
    assert F._mne_internals() is not None  # MNE 1.13 has them
    fast_path = F.compute_laminar_forward(cortex, info, trans, bem, mindist=3.0,
                                          orientation_type=ori)  # fmt: skip
    monkeypatch.setattr(F, "_USE_MNE_INTERNALS", False)
    public = F.compute_laminar_forward(cortex, info, trans, bem, mindist=3.0,
                                       orientation_type=ori)  # fmt: skip
    np.testing.assert_array_equal(fast_path.columns, public.columns)
    assert fast_path.ch_names == public.ch_names
    np.testing.assert_allclose(fast_path.gain, public.gain, rtol=1e-12,
                               atol=1e-12 * np.abs(public.gain).max())  # fmt: skip


def test_multilayer_is_per_layer(info, bem):
    """All layers in one computation equal separate single-layer forwards."""
    cortex = SphereCortex(n_layers=3, grade=2, per_layer=True, seed=3)
    trans = some_trans()
    fwd = F.compute_laminar_forward(cortex, info, trans, bem, mindist=2.0)
    n_kept = len(fwd.columns)
    np.testing.assert_array_equal(fwd.layer, np.repeat(np.arange(3), n_kept))
    np.testing.assert_array_equal(fwd.column, np.tile(fwd.columns, 3))
    for layer in range(3):
        one = SphereCortex(n_layers=1, grade=2)
        one.layers = cortex.layers[[layer]][:, fwd.columns]
        one.orientations = cortex.orientations[layer, fwd.columns]
        ref = F.compute_laminar_forward(one, info, trans, bem, mindist=0.0)
        got = fwd.gain[:, layer * n_kept : (layer + 1) * n_kept]
        np.testing.assert_allclose(got, ref.gain, rtol=1e-10, atol=1e-20)


def test_dropped_columns_match_mne_and_geometry(info, bem):
    """A cortex crossing the inner skull: whole columns dropped, never fewer than MNE."""
    # layers at 84 .. 70 mm around a 80 mm (ico-3) inner skull, off-centre so
    # some columns cross it; white at 70 mm is inside everywhere
    cortex = SphereCortex(n_layers=4, grade=2, r_pial=0.079, r_white=0.070,
                          center=CENTER + [0.004, 0, 0], seed=2)  # fmt: skip
    trans = Transform("mri", "head")
    mindist = 3.0
    fwd = F.compute_laminar_forward(cortex, info, trans, bem, mindist=mindist)
    # independent reference: brute-force point-to-triangle distance and the
    # convex-hull half-spaces (the ico-3 sphere is convex)
    from scipy.spatial import ConvexHull

    surf = bem["surfs"][0]
    hull = ConvexHull(surf["rr"])
    pts = cortex.layers.reshape(-1, 3)
    inside = (pts @ hull.equations[:, :3].T + hull.equations[:, 3] < 0).all(1)
    tris = surf["tris"]
    rr = surf["rr"]
    n_p, n_t = len(pts), len(tris)
    dist = mesh.point_triangle_distance(
        np.repeat(pts, n_t, 0), np.tile(rr[tris[:, 0]], (n_p, 1)),
        np.tile(rr[tris[:, 1]], (n_p, 1)), np.tile(rr[tris[:, 2]], (n_p, 1)),
    ).reshape(n_p, n_t).min(1)  # fmt: skip
    outside_col = (~inside).reshape(4, -1).any(0)
    close_col = (inside & (dist < mindist / 1e3)).reshape(4, -1).any(0)
    expect_drop = outside_col | close_col
    assert 0 < expect_drop.sum() < cortex.n_columns
    np.testing.assert_array_equal(np.sort(fwd.dropped["columns"]), np.flatnonzero(expect_drop))
    reasons = dict(zip(fwd.dropped["columns"].tolist(), fwd.dropped["reasons"]))
    for col in np.flatnonzero(outside_col):
        assert reasons[col] == F.REASON_OUTSIDE
    for col in np.flatnonzero(close_col & ~outside_col):
        assert reasons[col] == F.REASON_MINDIST
    assert sum(fwd.dropped["counts"].values()) == expect_drop.sum()
    # MNE on the same points drops per source; everything it drops we drop too
    ref = mne_forward(info, trans, bem, pts, np.tile(cortex.orientations, (4, 1)),
                      mindist=mindist)  # fmt: skip
    mne_kept = np.zeros(len(pts), bool)
    mne_kept[ref["src"][0]["vertno"]] = True
    mne_drop_col = (~mne_kept).reshape(4, -1).any(0)
    assert not (mne_drop_col & ~expect_drop).any()
    # ... and it keeps sources in layers of columns we drop (the layer mismatch)
    assert (mne_kept.reshape(4, -1)[:, expect_drop]).any()


def test_sphere_model_drop_is_analytic(info):
    """Sphere model: a column drops iff a layer is beyond R_inner - mindist."""
    sphere = mne.make_sphere_model(r0=CENTER, head_radius=0.09)
    r_in = sphere["layers"][0]["rad"]
    cortex = SphereCortex(n_layers=3, grade=2, r_pial=r_in - 0.002, r_white=r_in - 0.02,
                          center=CENTER + [0.005, 0, 0])  # fmt: skip
    trans = some_trans(shift=(0, 0, 0))
    fwd = F.compute_laminar_forward(cortex, info, trans, sphere, mindist=4.0)
    radius = np.linalg.norm(apply_trans(trans, cortex.layers) - CENTER, axis=-1)
    expect = (radius > r_in - 0.004).any(0)
    assert 0 < expect.sum() < cortex.n_columns
    np.testing.assert_array_equal(fwd.dropped["columns"], np.flatnonzero(expect))


# ------------------------------------------------------------- geometry
def test_project_fixed_chunks():
    rng = np.random.default_rng(2)
    g = rng.normal(size=(7, 3 * 50))
    nn = rng.normal(size=(50, 3))
    out = F.project_fixed(g, nn, max_bytes=7 * 24 * 4)  # 4 sources per block
    expected = np.stack([g[:, 3 * i : 3 * i + 3] @ nn[i] for i in range(50)], 1)
    np.testing.assert_allclose(out, expected, rtol=1e-14)
    assert F.project_fixed(g, nn, dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="expected 3"):
        F.project_fixed(g[:, :-1], nn)


# ---------------------------------------------------------------- engines
def test_fast_engine(info, bem, monkeypatch):
    """engine='fast' matches 'mne' when the engine exists; clear error otherwise."""
    cortex = SphereCortex(n_layers=2, grade=2)
    trans = some_trans()
    ref = F.compute_laminar_forward(cortex, info, trans, bem, mindist=5.0)
    try:
        F._fast_engine()
    except RuntimeError:
        pass
    else:
        fast = F.compute_laminar_forward(cortex, info, trans, bem, mindist=5.0, engine="fast")
        np.testing.assert_array_equal(fast.columns, ref.columns)
        rel = np.linalg.norm(fast.gain - ref.gain, axis=0) / np.linalg.norm(ref.gain, axis=0)
        assert rel.max() < 1e-6
    import mne_laminar_plugin.forward._engine as engine_mod

    monkeypatch.delattr(engine_mod, "compute_gain")
    with pytest.raises(RuntimeError, match="engine='fast' needs .*compute_gain.*engine='mne'"):
        F.compute_laminar_forward(cortex, info, trans, bem, engine="fast")


# ----------------------------------------------------------------- errors
def test_input_errors(info, bem, tmp_path):
    cortex = SphereCortex(n_layers=2, grade=1)
    with pytest.raises(ValueError, match="trans is required"):
        F.compute_laminar_forward(cortex, info, None, bem)
    with pytest.raises(FileNotFoundError, match="trans file not found"):
        F.compute_laminar_forward(cortex, info, tmp_path / "nope-trans.fif", bem)
    with pytest.raises(FileNotFoundError, match="BEM solution file not found.*make_bem_solution"):
        F.compute_laminar_forward(cortex, info, "identity", tmp_path / "x-bem-sol.fif")
    with pytest.raises(FileNotFoundError, match="info file not found"):
        F.compute_laminar_forward(cortex, tmp_path / "x_ave.fif", "identity", bem)
    with pytest.raises(ValueError, match="Invalid value for the 'engine'"):
        F.compute_laminar_forward(cortex, info, "identity", bem, engine="gpu")
    with pytest.raises(ValueError, match="orientation_type"):
        F.compute_laminar_forward(cortex, info, "identity", bem, orientation_type="loose")
    with pytest.raises(ValueError, match="mindist must be >= 0"):
        F.compute_laminar_forward(cortex, info, "identity", bem, mindist=-1)
    with pytest.raises(TypeError, match="LaminarSurfaces"):
        F.compute_laminar_forward(object(), info, "identity", bem)
    bad = SphereCortex(n_layers=2, grade=1)
    bad.orientations = bad.orientations[:5]
    with pytest.raises(ValueError, match="orientations must have shape"):
        F.compute_laminar_forward(bad, info, "identity", bem)
    eeg_only = make_info(0, 0, 4)
    with pytest.raises(ValueError, match="No MEG channels"):
        F.compute_laminar_forward(cortex, eeg_only, "identity", bem, eeg=False)
    far = SphereCortex(n_layers=2, grade=1, r_pial=0.2, r_white=0.19)
    with pytest.raises(RuntimeError, match="No column .* inside the inner skull"):
        F.compute_laminar_forward(far, info, "identity", bem)


def test_zero_orientation_and_nonfinite_columns_dropped(info, bem):
    cortex = SphereCortex(n_layers=2, grade=1)
    cortex.orientations = cortex.orientations.copy()
    cortex.orientations[3] = 0.0
    cortex.layers = cortex.layers.copy()
    cortex.layers[1, 5] = np.nan
    fwd = F.compute_laminar_forward(cortex, info, "identity", bem, mindist=0.0)
    reasons = dict(zip(fwd.dropped["columns"].tolist(), fwd.dropped["reasons"]))
    assert reasons == {3: F.REASON_ZERO_ORI, 5: F.REASON_NONFINITE}
    assert np.isfinite(fwd.gain).all()
    assert fwd.gain.shape == (len(info["ch_names"]), 2 * (cortex.n_columns - 2))


def test_channel_order_and_float32(bem):
    """Rows follow MNE (MEG first, then EEG) even when the Info starts with EEG."""
    info = make_info(3, 4, 5, eeg_first=True)
    sphere = mne.make_sphere_model(r0=CENTER, head_radius=0.09)
    cortex = SphereCortex(n_layers=2, grade=1)
    fwd = F.compute_laminar_forward(cortex, info, "identity", sphere, mindist=0.0)
    assert fwd.ch_names[:7] == [n for n in info["ch_names"] if n.startswith("MEG")]
    assert fwd.ch_names[7:] == [n for n in info["ch_names"] if n.startswith("EEG")]
    f32 = F.compute_laminar_forward(cortex, info, "identity", sphere, mindist=0.0,
                                    dtype=np.float32)  # fmt: skip
    assert f32.gain.dtype == np.float32
    np.testing.assert_allclose(f32.gain, fwd.gain, rtol=1e-5, atol=1e-6 * np.abs(fwd.gain).max())
