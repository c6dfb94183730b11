"""compare_layers on the demo geometry: simulations, invariances, bad input.

The demo subject (nilearn's fsaverage5 cortex, 306 Vectorview-like channels)
with 11 equidistant layers at oct5 (1994 columns), its laminar leadfield from
a single-layer BEM, and simulated evoked data following the paper's protocol
(patch on one layer, Gaussian time course, SPM's SNR definition, white noise
after whitening).
"""

from __future__ import annotations

import mne
import numpy as np
import pytest
from scipy import stats

from mne_laminar_plugin import (
    AnatomicalPredictors,
    LaminarSurfaces,
    LayerEvidence,
    LeadfieldBuilder,
    compare_layers,
)
from mne_laminar_plugin.inverse._compare import (
    _ebb_free_energy,
    _msp_free_energy_batch,
    _msp_rho,
)
from mne_laminar_plugin.inverse._patches import layer_patches, mesh_edges, patch_kernel
from mne_laminar_plugin.inverse._reml import reml
from mne_laminar_plugin.leadfield import si_factors
from mne_laminar_plugin.inverse._temporal import dct_basis, hann, temporal_modes

SFREQ = 600.0
WOI = (-0.025, 0.025)
N_LAYERS = 11


class Sim:
    """Demo geometry, leadfield, noise covariance and a simulator."""

    def __init__(self, demo):
        from mne_bids import BIDSPath, get_head_mri_trans, read_raw_bids

        subject = "sub-01"
        self.subjects_dir = demo.subjects_dir
        self.surf = LaminarSurfaces.from_freesurfer(
            subject, demo.subjects_dir, n_layers=N_LAYERS, spacing="oct5", verbose="error"
        )
        bp = BIDSPath(subject="01", task="demo", datatype="meg", root=demo.bids_root)
        raw = read_raw_bids(bp, verbose="error")
        trans = get_head_mri_trans(bp, fs_subject=subject, fs_subjects_dir=demo.subjects_dir,
                                   verbose="error")  # fmt: skip
        model = mne.make_bem_model(subject, ico=3, conductivity=(0.3,),
                                   subjects_dir=demo.subjects_dir, verbose="error")  # fmt: skip
        bem = mne.make_bem_solution(model, verbose="error")
        info = mne.pick_info(raw.info, mne.pick_types(raw.info, meg=True))
        with info._unlock():
            info["sfreq"] = SFREQ
            info["lowpass"] = SFREQ / 2
        self.info = info
        self.lf = LeadfieldBuilder(surfaces=self.surf, bem=bem, trans=trans, info=info,
                                   eeg=False, verbose="error").simulate(subject)  # fmt: skip
        self.cov = mne.make_ad_hoc_cov(info, std=dict(mag=10e-15, grad=5e-13), verbose="error")
        self.std = np.sqrt(self.cov.data)
        self.kept = np.asarray(self.lf.columns)
        self.n_kept = len(self.kept)
        self.keep = np.zeros(self.surf.n_columns, bool)
        self.keep[self.kept] = True
        self.to_kept = np.full(self.surf.n_columns, -1)
        self.to_kept[self.kept] = np.arange(self.n_kept)
        self.edges = mesh_edges(self.surf.combined_tris(), self.surf.n_columns)
        self.si = si_factors(self.lf)
        self.times = np.arange(-1.0, 1.0 + 1e-9, 1 / SFREQ)
        self.wave = np.exp(-(self.times**2) / (2 * 0.4**2))  # paper: sigma 0.4 s

    def topography(self, column, layer):
        """SI field (T, T/m) of a 10 nAm patch at the column on the layer."""
        K = patch_kernel(self.surf.layers[layer] * 1e3, self.edges, 5.0, [column],
                         keep=self.keep).tocoo()  # fmt: skip
        src = layer * self.n_kept + self.to_kept[K.col]
        return (self.lf.leadfield[:, src] * K.data).sum(1) * self.si * 10.0

    def evoked(self, column, layer, snr_db, rng, *, n_trials=None, scale=1.0):
        sig = np.outer(self.topography(column, layer), self.wave)
        white = sig / self.std[:, None]
        sd = white.std(axis=1).mean() * 10 ** (-snr_db / 20.0)
        if n_trials is None:
            noise = rng.normal(size=sig.shape) * sd * self.std[:, None]
            return mne.EvokedArray((sig + noise) * scale, self.info, tmin=-1.0, verbose="error")
        noise = rng.normal(size=(n_trials, *sig.shape)) * sd * self.std[:, None]
        return mne.EpochsArray((sig + noise) * scale, self.info, tmin=-1.0, verbose="error")


@pytest.fixture(scope="module")
def sim(demo):
    return Sim(demo)


def _compare(sim, ev, prior, **kw):
    kw.setdefault("woi", WOI)
    return compare_layers(ev, sim.lf, sim.cov, surfaces=sim.surf, prior=prior, **kw)


# ------------------------------------------------------------ simulations
def test_recovers_the_layer_at_10db(sim):
    """A patch on layer k at +10 dB: best layer = k in >= 90 % of 50 draws."""
    rng = np.random.default_rng(11)
    hits, clear = 0, 0
    for _ in range(50):
        c, k = int(rng.choice(sim.kept)), int(rng.integers(N_LAYERS))
        res = _compare(sim, sim.evoked(c, k, 10.0, rng), c)
        hits += res.best_layer == k
        clear += res.delta_f.max() > 3  # adjacent layers (0.25 mm) stay close
    assert hits >= 45, hits
    assert clear >= 45, clear


def test_no_better_than_chance_at_minus_100db(sim):
    """At -100 dB the data are noise: the true layer is found no more often
    than a guess independent of the truth (1/11), binomial 99.9 % bound."""
    rng = np.random.default_rng(12)
    hits = 0
    for _ in range(50):
        c, k = int(rng.choice(sim.kept)), int(rng.integers(N_LAYERS))
        res = _compare(sim, sim.evoked(c, k, -100.0, rng), c)
        hits += res.best_layer == k
        assert not res.strong
    assert hits <= stats.binom.ppf(0.999, 50, 1 / N_LAYERS), hits


def test_delta_f_grows_with_snr(sim):
    """F(true layer) - F(worst layer), averaged over draws, grows with SNR."""
    rng = np.random.default_rng(13)
    draws = [(int(rng.choice(sim.kept)), int(rng.integers(N_LAYERS))) for _ in range(12)]
    means = []
    for snr in (-30.0, -20.0, -10.0, 0.0, 10.0):
        dF = [_compare(sim, sim.evoked(c, k, snr, rng), c).delta_f[k] for c, k in draws]
        means.append(np.mean(dF))
    assert np.all(np.diff(means) > 0), means


def test_epochs_keep_trials(sim):
    """Epochs: trials enter YY separately (N = modes x trials); one epoch
    equals the Evoked of the same data; 20 trials at -10 dB per trial find
    the layer."""
    rng = np.random.default_rng(4)
    c, k = int(sim.kept[700]), 6
    ep = sim.evoked(c, k, -10.0, rng, n_trials=20)
    res = _compare(sim, ep, c)
    assert res.settings["n_trials"] == 20 and res.best_layer == k
    one = mne.EpochsArray(ep.get_data()[:1], sim.info, tmin=-1.0, verbose="error")
    ev = mne.EvokedArray(ep.get_data()[0], sim.info, tmin=-1.0, verbose="error")
    np.testing.assert_allclose(_compare(sim, one, c).free_energy,
                               _compare(sim, ev, c).free_energy, rtol=1e-12)  # fmt: skip


def test_ebb_recovers_the_layer(sim):
    rng = np.random.default_rng(5)
    for c, k in ((int(sim.kept[300]), 2), (int(sim.kept[1500]), 8)):
        res = _compare(sim, sim.evoked(c, k, 10.0, rng), c, method="ebb")
        assert abs(res.best_layer - k) <= 1, (res.best_layer, k)
        assert res.method == "ebb"


def test_ebb_grouped_equals_dense(sim):
    """EBB's fit in the eigenbasis of its prior = the dense n x n ReML."""
    rng = np.random.default_rng(6)
    n, N = 40, 4
    Ys = rng.normal(size=(n, N)) + 3 * np.outer(rng.normal(size=n), rng.normal(size=N))
    G = rng.normal(size=(n, 60))
    from scipy import sparse

    kernel = sparse.identity(60, format="csr")
    F = _ebb_free_energy(Ys, G, kernel, N)
    # independent: the power prior written out, then the dense fit
    AYYA = Ys @ Ys.T
    delta = max(np.spacing(np.abs(AYYA).sum(1).max()) * n, np.exp(-32))
    iC = np.linalg.inv(AYYA + delta * np.eye(n))
    p = (G**2).sum(0) / np.einsum("ij,ik,kj->j", G, iC, G)
    p /= p.max()
    K = (G * p) @ G.T
    ref = reml(AYYA, [np.eye(n) / n, K], N).free_energy
    # (the reference inverts AYYA + delta I, condition ~1e16: p to ~1e-7)
    np.testing.assert_allclose(F, ref, rtol=1e-6)


# -------------------------------------------------------------- invariances
def test_scaling_shifts_every_layer_equally(sim):
    rng = np.random.default_rng(7)
    c = int(sim.kept[100])
    ev = sim.evoked(c, 4, 0.0, rng)
    ev3 = ev.copy()
    ev3.data *= 3.0
    a, b = _compare(sim, ev, c), _compare(sim, ev3, c)
    shift = b.free_energy - a.free_energy
    n, N = a.settings["rank"], a.settings["n_temporal_modes"]
    np.testing.assert_allclose(shift, -N * n * np.log(3.0), rtol=1e-9)
    np.testing.assert_allclose(b.delta_f, a.delta_f, atol=1e-6)


def test_channel_permutation_changes_nothing(sim):
    rng = np.random.default_rng(8)
    c = int(sim.kept[900])
    ev = sim.evoked(c, 3, 5.0, rng)
    ref = _compare(sim, ev, c)
    perm = rng.permutation(len(ev.ch_names))
    names = [ev.ch_names[i] for i in perm]
    ev_p = ev.copy().reorder_channels(names)
    lf_p = sim.lf.copy()
    lf_p.leadfield = sim.lf.leadfield[perm]
    lf_p.ch_names = names
    lf_p.units = [sim.lf.units[i] for i in perm]
    lf_p.ch_types = [sim.lf.ch_types[i] for i in perm]
    lf_p.sensor_unitmult = np.broadcast_to(sim.lf.sensor_unitmult, (306,))[perm]
    lf_p.sensor_units = np.broadcast_to(sim.lf.sensor_units, (306,))[perm]
    cov_p = sim.cov.copy()
    cov_p["names"] = names
    cov_p["data"] = sim.cov.data[perm]  # diagonal: the variances
    res = compare_layers(ev_p, lf_p, cov_p, surfaces=sim.surf, prior=c, woi=WOI)
    np.testing.assert_allclose(res.free_energy, ref.free_energy, rtol=1e-10)


def test_identity_covariance_equals_unwhitened(sim):
    """With an identity noise covariance the result is the unwhitened
    computation written out here (SI data and SI leadfield, no whitener)."""
    rng = np.random.default_rng(9)
    c, k = int(sim.kept[1200]), 5
    ev = sim.evoked(c, k, 10.0, rng)
    ev.data /= sim.std[:, None]  # unit-variance noise, as a whitened recording would be
    eye = mne.Covariance(np.eye(306), ev.ch_names, [], [], nfree=1000, verbose="error")
    res = compare_layers(ev, sim.lf, eye, surfaces=sim.surf, prior=c, woi=WOI)
    # unwhitened: topographies from the SI leadfield, modes of the raw data
    lay, vert, wt = layer_patches(sim.surf.layers * 1e3, sim.edges, 5.0, c, keep=sim.keep)
    G = sim.lf.leadfield[:, lay * sim.n_kept + sim.to_kept[vert]] * sim.si[:, None]
    U = np.stack([G[:, lay == layer] @ wt[lay == layer] for layer in range(N_LAYERS)], 1)
    U /= np.linalg.norm(U, axis=0)
    i0, i1 = np.searchsorted(ev.times, [WOI[0] - 1e-9, WOI[1] + 1e-9])
    D = ev.data[None, None, :, i0:i1]
    T, _ = dct_basis(i1 - i0, SFREQ)
    Y, _ = temporal_modes(D, T, 4, window=hann(i1 - i0))
    tau, rho = _msp_rho(Y, U)
    F = _msp_free_energy_batch(tau[:, None], rho, 306, 4)[0]
    np.testing.assert_allclose(res.free_energy, F, rtol=1e-9)


def test_h5_leadfield_and_prior_forms(sim, tmp_path):
    """The leadfield derivative file works directly; (hemi, vertex) = column;
    a one-element list = the int; the ROI prior is the ROI's best column."""
    from mne_laminar_plugin.leadfield import read_leadfield
    from mne_laminar_plugin.predictors import roi_columns, select_prior

    rng = np.random.default_rng(10)
    c = int(sim.kept[400])
    ev = sim.evoked(c, 2, 5.0, rng)
    ref = _compare(sim, ev, c)
    fname = sim.lf.save(tmp_path / "sub-01_leadfield.h5")
    lf2 = read_leadfield(fname)
    res = compare_layers(ev, lf2, sim.cov, surfaces=sim.surf, prior=c, woi=WOI)
    np.testing.assert_allclose(res.free_energy, ref.free_energy, rtol=1e-10)
    # a bilaminar comparison read from the same file: each layer model's F
    # depends only on that layer, so it is the pial and white entries
    bi = compare_layers(ev, read_leadfield(fname, layers=[0, N_LAYERS - 1]), sim.cov,
                        surfaces=sim.surf, prior=c, woi=WOI)  # fmt: skip
    np.testing.assert_allclose(bi.free_energy, ref.free_energy[[0, -1]], rtol=1e-10)
    np.testing.assert_allclose(bi.layer_depths["fraction"], [1.0, 0.0])
    pair = (str(sim.surf.hemi[c]), int(sim.surf.vertno[c]))
    np.testing.assert_allclose(_compare(sim, ev, pair).free_energy, ref.free_energy)
    np.testing.assert_allclose(_compare(sim, ev, [c]).free_energy, ref.free_energy,
                               rtol=1e-6)  # dense ReML path, same model  # fmt: skip
    assert res.prior[0]["hemi"] == pair[0] and res.prior[0]["vertex"] == pair[1]
    pred = _predictors(sim, rng)
    roi = "label/lh.demo_roi.label"
    col = select_prior(pred.score(), roi_columns(roi, pred.hemi, pred.vertno, "sub-01",
                                                 sim.subjects_dir))  # fmt: skip
    got = _compare(sim, ev, roi, predictors=pred, subjects_dir=sim.subjects_dir)
    assert got.prior[0]["column"] == col
    best = _compare(sim, ev, "best", predictors=pred)
    assert best.prior[0]["column"] == pred.best_vertex()


def _predictors(sim, rng):
    n = sim.surf.n_columns
    vals = rng.random((3, n))
    vals[:, ~sim.keep] = np.nan
    return AnatomicalPredictors(
        thickness=sim.surf.thickness(), lf_rms_diff=vals[0], radiality=vals[1],
        distance=vals[2] * 20, hemi=sim.surf.hemi, vertno=sim.surf.vertno,
    )  # fmt: skip


def test_multi_patch_and_spatial_modes(sim):
    rng = np.random.default_rng(14)
    c1, c2, k = int(sim.kept[200]), int(sim.kept[1700]), 7
    ev = sim.evoked(c1, k, 10.0, rng)
    ev.data += sim.evoked(c2, k, 200.0, rng).data
    res = _compare(sim, ev, [c1, c2])
    assert res.best_layer == k and len(res.prior) == 2
    one = sim.evoked(c1, k, 10.0, rng)
    for m in (100, 200):  # one projection (top modes of all layers' L L^T)
        red = _compare(sim, one, c1, spatial_modes=m)
        assert red.settings["n_spatial_dims"] == m and red.best_layer == k


def test_sliding_windows(sim):
    """Windows centred on every sample inside the woi; the window that spans
    the same samples as a whole-window call gives the same F."""
    rng = np.random.default_rng(15)
    c, k = int(sim.kept[1000]), 4
    ev = sim.evoked(c, k, 10.0, rng)
    res = _compare(sim, ev, c, woi=(-0.2, 0.2), windows=(50.0, None), n_temporal_modes=1)
    n_win = len(res.times)
    assert res.free_energy.shape == (N_LAYERS, n_win)
    assert res.times[0] >= -0.2 - 1e-9 and res.times[-1] <= 0.2 + 1e-9
    np.testing.assert_allclose(np.diff(res.times), 1 / SFREQ)
    assert (res.best_layer == k).mean() > 0.9
    mid = int(np.argmin(np.abs(res.times)))
    half = 15  # 50 ms at 600 Hz: 31 samples
    t = res.times[mid]
    one = _compare(sim, ev, c, woi=(t - half / SFREQ, t + half / SFREQ), n_temporal_modes=1)
    np.testing.assert_allclose(res.free_energy[:, mid], one.free_energy, rtol=1e-10)
    df = res.to_dataframe()
    assert len(df) == N_LAYERS * n_win
    fig = res.plot()
    assert fig.axes[0].get_xlabel() == "window centre (ms)"
    stepped = _compare(sim, ev, c, woi=(-0.2, 0.2), windows=(50.0, 10.0), n_temporal_modes=1)
    np.testing.assert_allclose(np.diff(stepped.times), 6 / SFREQ)


def test_layer_evidence_outputs(sim):
    rng = np.random.default_rng(16)
    c, k = int(sim.kept[50]), 3
    res = _compare(sim, sim.evoked(c, k, 10.0, rng), c)
    assert isinstance(res, LayerEvidence) and res.free_energy.shape == (N_LAYERS,)
    assert res.delta_f.min() == 0 and res.delta_f[res.best_layer] == res.delta_f.max()
    top2 = np.sort(res.free_energy)[-2:]
    assert res.strong == (top2[1] - top2[0] > 3)
    np.testing.assert_allclose(res.layer_depths["fraction"], np.linspace(1, 0, N_LAYERS))
    thick = sim.surf.thickness()[c]
    np.testing.assert_allclose(res.layer_depths["mm"], np.linspace(0, thick, N_LAYERS),
                               rtol=1e-6)  # fmt: skip
    df = res.to_dataframe()
    assert list(df.columns) == ["layer", "fraction", "depth_mm", "time", "free_energy",
                                "delta_f", "best", "strong"]  # fmt: skip
    np.testing.assert_allclose(df["free_energy"], res.free_energy)
    assert df["best"].sum() == 1 and int(df.loc[df["best"], "layer"].iloc[0]) == res.best_layer
    assert res.settings["units"] == "nats"
    fig = res.plot()
    assert "ΔF" in fig.axes[0].get_ylabel()
    assert "MSP" in repr(res)


# --------------------------------------------------------------- bad input
def test_bad_input(sim, tmp_path):
    rng = np.random.default_rng(17)
    c = int(sim.kept[10])
    ev = sim.evoked(c, 3, 10.0, rng)
    renamed = ev.copy().rename_channels({ev.ch_names[0]: "MEG 9999"})
    with pytest.raises(ValueError, match="not in the leadfield.*MEG 9999"):
        _compare(sim, renamed, c)
    cov_small = sim.cov.copy().pick_channels(ev.ch_names[5:], ordered=False)
    with pytest.raises(ValueError, match="not in the noise_cov"):
        compare_layers(ev, sim.lf, cov_small, surfaces=sim.surf, prior=c)
    dropped = int(sim.lf.dropped_columns[0])
    with pytest.raises(ValueError, match=f"prior column {dropped} has no sources.*dropped"):
        _compare(sim, ev, dropped)
    with pytest.raises(ValueError, match="outside the model's columns"):
        _compare(sim, ev, 10**6)
    with pytest.raises(ValueError, match="vertex 999999 of lh is not a column"):
        _compare(sim, ev, ("lh", 999999))
    with pytest.raises(ValueError, match=r"woi .* is outside the data"):
        _compare(sim, ev, c, woi=(0.5, 2.0))
    with pytest.raises(ValueError, match="woi must be"):
        _compare(sim, ev, c, woi=(0.1, 0.0))
    pred = _predictors(sim, rng)
    with pytest.raises(ValueError, match="not an ROI known to the predictors.*lh.nowhere"):
        _compare(sim, ev, "label/lh.nowhere.label", predictors=pred,
                 subjects_dir=sim.subjects_dir)  # fmt: skip
    with pytest.raises(ValueError, match="pass predictors="):
        _compare(sim, ev, "label/lh.demo_roi.label")
    for fwhm in (0.0, -2.0):
        with pytest.raises(ValueError, match="patch_fwhm must be a positive"):
            _compare(sim, ev, c, patch_fwhm=fwhm)
    with pytest.raises(ValueError, match="Invalid value for the 'method'"):
        _compare(sim, ev, c, method="lcmv")
    with pytest.raises(ValueError, match="MSP only"):
        _compare(sim, ev, c, method="ebb", windows=(50, None))
    with pytest.raises(ValueError, match="n_temporal_modes=40 exceeds"):
        _compare(sim, ev, c, n_temporal_modes=40)
    with pytest.raises(ValueError, match="spatial_modes"):
        _compare(sim, ev, c, spatial_modes="some")
    with pytest.raises(ValueError, match="windows are in milliseconds"):
        _compare(sim, ev, c, windows=(0.05, None))
    with pytest.raises(ValueError, match="needs surfaces="):
        compare_layers(ev, sim.lf, sim.cov, prior=c)
    other = LaminarSurfaces.from_freesurfer("sub-01", sim.subjects_dir, n_layers=3,
                                            spacing="oct4", verbose="error")  # fmt: skip
    with pytest.raises(ValueError, match="surfaces have .* columns but the leadfield"):
        compare_layers(ev, sim.lf, sim.cov, surfaces=other, prior=c)
    with pytest.raises(TypeError, match="noise_cov"):
        compare_layers(ev, sim.lf, np.eye(306), surfaces=sim.surf, prior=c)
    with pytest.raises(TypeError, match="evoked"):
        compare_layers(ev.data, sim.lf, sim.cov, surfaces=sim.surf, prior=c)
    with pytest.raises(ValueError, match="prior lists a column twice"):
        _compare(sim, ev, [c, c])


def test_batched_topographies_equal_public_path(sim):
    """The batched route a simulation takes (whole-layer kernels for many
    columns, reduced data, the batch core) = compare_layers one at a time."""
    from mne_laminar_plugin.inverse._compare import _patch_topographies

    rng = np.random.default_rng(18)
    cols = rng.choice(sim.kept, 5, replace=False)
    W = np.diag(1.0 / sim.std)  # whitener of the diagonal ad hoc covariance
    U = _patch_topographies(sim.lf, sim.surf, W, None, cols, 5.0)
    assert U.shape == (N_LAYERS, 5, 306)
    i0, i1 = np.searchsorted(sim.times, [WOI[0] - 1e-9, WOI[1] + 1e-9])
    T, _ = dct_basis(i1 - i0, SFREQ)
    for j, c in enumerate(cols):
        ev = sim.evoked(int(c), int(rng.integers(N_LAYERS)), 0.0, rng)
        D = (W @ ev.data[:, i0:i1])[None, None]
        Y, _ = temporal_modes(D, T, 4, window=hann(i1 - i0))
        tau, rho = _msp_rho(Y, U[:, j].T)
        F = _msp_free_energy_batch(tau[:, None], rho, 306, 4)[0]
        ref = _compare(sim, ev, int(c))
        np.testing.assert_allclose(F, ref.free_energy, rtol=1e-9)


def test_rank_deficient_data_ssp(sim):
    """An SSP projector on the data: the whitener is rank-reduced (305 of
    306) and applied with the projector to the leadfield too; the layer is
    still found. An EEG channel the MEG-only leadfield lacks is left out."""
    rng = np.random.default_rng(19)
    c, k = int(sim.kept[600]), 6
    ev = sim.evoked(c, k, 10.0, rng)
    mags = [n for n, t in zip(ev.ch_names, ev.get_channel_types()) if t == "mag"]
    v = rng.normal(size=len(mags))
    proj = mne.Projection(
        data=dict(nrow=1, ncol=len(mags), row_names=None, col_names=mags,
                  data=(v / np.linalg.norm(v))[None]),
        kind=1, desc="test-ssp", active=False, explained_var=None,
    )  # fmt: skip
    ev.add_proj([proj]).apply_proj()
    eeg = mne.EvokedArray(rng.normal(size=(1, len(ev.times))) * 1e-6,
                          mne.create_info(["EEG 001"], SFREQ, "eeg"), tmin=-1.0,
                          verbose="error")  # fmt: skip
    with eeg.info._unlock():
        eeg.info["dev_head_t"] = ev.info["dev_head_t"]
    ev.add_channels([eeg], force_update_info=True)
    res = _compare(sim, ev, c)
    assert res.settings["rank"] == 305 and res.settings["n_channels"] == 306
    assert res.best_layer == k


def test_demo_layer_condition_is_recovered(sim, demo):
    """The demo's 'layer' condition (one layer of one column, the model's own
    patch) is recovered within one layer of demo_truth.json, with strong evidence."""
    import json

    from mne_bids import BIDSPath, read_raw_bids

    truth = json.loads((demo.bids_root / "sourcedata" / "demo_truth.json").read_text())
    src = truth["subjects"]["01"]["layer_source"]
    assert src["condition"] == "layer" and src["n_layers"] == N_LAYERS
    assert sim.surf.vertno[src["column"]] == src["vertex"] and sim.surf.hemi[src["column"]] == "lh"
    bp = BIDSPath(subject="01", task="demo", datatype="meg", root=demo.bids_root)
    raw = read_raw_bids(bp, verbose="error").load_data(verbose="error")
    raw.filter(None, 40.0, verbose="error")
    events, event_id = mne.events_from_annotations(raw, verbose="error")
    epochs = mne.Epochs(raw, events, event_id["layer"], -0.2, 0.5, baseline=(None, 0),
                        picks="meg", preload=True, verbose="error")  # fmt: skip
    assert len(epochs) == 60
    cov = mne.compute_covariance(epochs, tmax=0.0, verbose="error")
    evoked = epochs.average()
    ev = compare_layers(evoked, sim.lf, cov, surfaces=sim.surf, prior=("lh", src["vertex"]),
                        woi=(0.05, 0.15))  # fmt: skip
    assert abs(ev.best_layer - src["layer"]) <= 1, ev.free_energy
    # strong evidence against the surface (pial, white) models and every layer two or
    # more away; adjacent layers are 0.25 mm apart (measured: layer 8 wins, 0.6 nats
    # over layer 7, 80 nats over pial, 7 over white)
    F = ev.free_energy
    far = np.abs(np.arange(N_LAYERS) - src["layer"]) >= 2
    assert F[src["layer"]] - F[far].max() > 3.0, F
    assert (events[:, 2] == event_id["stim"]).sum() == 60
