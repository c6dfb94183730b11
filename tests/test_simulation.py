"""simulate_laminar_accuracy: brute force, statistics, reproducibility, bad input.

The demo subject (fsaverage5 cortex, 306 channels), 11 layers at oct5, its
laminar leadfield from a single-layer BEM; the brute-force path builds the
sensor data of each simulation itself and calls the public compare_layers
once per simulation.
"""

from __future__ import annotations

import mne
import numpy as np
import pytest
from scipy import stats

from mne_laminar_plugin import (
    LaminarAccuracy,
    LaminarSurfaces,
    LeadfieldBuilder,
    compare_layers,
    compute_predictors,
    simulate_laminar_accuracy,
)
from mne_laminar_plugin.inverse._patches import mesh_edges, patch_kernel
from mne_laminar_plugin.inverse._temporal import dct_basis
from mne_laminar_plugin.simulation._kernel import (
    column_bases,
    draw_noise,
    layer_free_energy,
    noise_stats,
)
from mne_laminar_plugin.simulation._simulate import _simulate

N_LAYERS = 11
SFREQ = 600.0
WOI = (-0.025, 0.025)


class Sim:
    def __init__(self, demo):
        from mne_bids import BIDSPath, get_head_mri_trans, read_raw_bids

        subject = "sub-01"
        sd = self.subjects_dir = demo.subjects_dir
        self.surf = LaminarSurfaces.from_freesurfer(subject, sd, n_layers=N_LAYERS,
                                                    spacing="oct5", verbose="error")  # fmt: skip
        bp = BIDSPath(subject="01", task="demo", datatype="meg", root=demo.bids_root)
        raw = read_raw_bids(bp, verbose="error")
        self.trans = get_head_mri_trans(bp, fs_subject=subject, fs_subjects_dir=sd,
                                        verbose="error")  # fmt: skip
        model = mne.make_bem_model(subject, ico=3, conductivity=(0.3,), subjects_dir=sd,
                                   verbose="error")  # fmt: skip
        self.bem = mne.make_bem_solution(model, verbose="error")
        info = mne.pick_info(raw.info, mne.pick_types(raw.info, meg=True))
        with info._unlock():
            info["sfreq"] = SFREQ
            info["lowpass"] = SFREQ / 2
        self.info = info
        self.lf = LeadfieldBuilder(surfaces=self.surf, bem=self.bem, trans=self.trans, info=info,
                                   eeg=False, verbose="error").simulate(subject)  # fmt: skip
        self.cov = mne.make_ad_hoc_cov(info, std=dict(mag=10e-15, grad=5e-13), verbose="error")
        self.kept = np.asarray(self.lf.columns)

    def run(self, **kw):
        kw.setdefault("noise_cov", self.cov)
        kw.setdefault("random_state", 0)
        return simulate_laminar_accuracy(self.lf, self.surf, verbose="error", **kw)


@pytest.fixture(scope="module")
def sim(demo):
    return Sim(demo)


@pytest.fixture(scope="module")
def sweep(sim):
    """300 columns (every 6th), SNR sweep, common noise draws."""
    return sim.run(snr_db=[-100.0, -40.0, -30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0],
                   columns=sim.kept[::6][:300])  # fmt: skip


# ------------------------------------------------------------- brute force
@pytest.mark.parametrize("n_trials", [1, 2])
def test_matches_compare_layers_one_at_a_time(sim, n_trials):
    """Same data built by hand -> compare_layers per simulation: same F and peaks."""
    rng = np.random.default_rng(3)
    cols = sim.kept[[40, 900, 1700]]
    true = np.arange(N_LAYERS) if n_trials == 1 else np.array([0, 5, 10])
    snrs = [-10.0, 5.0]
    W, _ = mne.cov.compute_whitener(sim.cov, sim.info, pca=True, verbose="error")
    n = W.shape[0]
    times = -1.0 + np.arange(1201) / SFREQ
    i0 = int(np.argmin(np.abs(times - WOI[0])))
    i1 = int(np.argmin(np.abs(times - WOI[1]))) + 1
    E = rng.standard_normal((len(cols), len(true), n_trials, n, 1201))
    res = _simulate(
        sim.lf, sim.surf, noise_cov=sim.cov, snr_db=snrs, n_trials=n_trials, woi=WOI,
        patch_fwhm=5.0, n_temporal_modes=4, columns=cols, true_layers=true, method="msp",
        coreg_error_mm=0.0, inversion_leadfield=None, bem=None, hann=True, band=(0.0, 256.0),
        rank=None, random_state=0, n_jobs=None, noise=E[..., i0:i1],
    )  # fmt: skip
    # independent sensor data: 10 nAm patch, paper's Gaussian, SPM SNR
    wave = 10.0 * np.exp(-(times**2) / (2 * 0.4**2))
    n_kept = len(sim.kept)
    keep = np.isin(np.arange(sim.surf.n_columns), sim.kept)
    to_kept = np.cumsum(keep) - 1
    edges = mesh_edges(sim.surf.combined_tris(), sim.surf.n_columns)
    si = 10.0 ** (np.broadcast_to(sim.lf.sensor_unitmult, (306,)) + 9.0)
    std = np.sqrt(sim.cov.data)
    Wp = np.linalg.pinv(W)
    for ci, c in enumerate(cols):
        for ti, k in enumerate(true):
            Kp = patch_kernel(sim.surf.layers[k] * 1e3, edges, 5.0, [c], keep=keep).tocoo()
            topo = (sim.lf.leadfield[:, k * n_kept + to_kept[Kp.col]] * Kp.data).sum(1)
            topo *= si * 10e-9
            sig = np.outer(topo, wave)
            for si_, snr in enumerate(snrs):
                sd = (sig / std[:, None]).std(axis=1, ddof=1).mean() * 10 ** (-snr / 20)
                X = sig + Wp @ (sd * E[ci, ti])  # (K, n_ch, times)
                ev = mne.EpochsArray(X, sim.info, tmin=-1.0, verbose="error")
                ref = compare_layers(ev, sim.lf, sim.cov, surfaces=sim.surf, prior=int(c),
                                     woi=WOI, verbose="error")  # fmt: skip
                got = res.free_energy[si_, ci, :, ti]
                assert np.argmax(got) == ref.best_layer == res.peak[si_, ci, ti]
                np.testing.assert_allclose(got - got.min(), ref.delta_f, rtol=1e-6,
                                           atol=1e-6 * ref.delta_f.max())  # fmt: skip
                np.testing.assert_allclose(got, ref.free_energy, rtol=1e-9)


def test_sampler_has_the_distribution_of_the_full_noise(sim):
    """Wishart + projected normals vs explicit n x Nb noise: same F distribution."""
    rng = np.random.default_rng(5)
    n, nb, L, M = 120, 31, 11, 3000
    base = rng.standard_normal((n, 3))
    U = base @ rng.standard_normal((3, L)) + 0.3 * rng.standard_normal((n, L))
    U /= np.linalg.norm(U, axis=0)
    U = np.broadcast_to(U, (1, n, L)).copy()
    Q = column_bases(U, None)
    b = np.einsum("cnd,cnl->cdl", Q, U)
    a = 2.0 * b[:, :, [4]]
    T_full, freqs = dct_basis(nb, SFREQ, (0, np.inf))
    band = np.flatnonzero(freqs <= 256)
    H = T_full[:, band]
    ghat = np.exp(-np.linspace(-1, 1, nb) ** 2) @ T_full
    alpha = np.ones((1, M))
    a = np.repeat(a, M, axis=2)  # one simulation per draw

    def F(P, W):
        return layer_free_energy(b, a, ghat, alpha, P, W, H, band, 4, n, 1)[0]  # (L, M)

    P1, W1 = draw_noise(rng, (1, M), 1, L, nb, n - L)
    P2, W2 = noise_stats(rng.standard_normal((1, M, 1, n, nb)), Q, T_full)
    np.testing.assert_allclose(W1.mean(1)[0], (n - L) * np.eye(nb), atol=0.6 * np.sqrt(n))
    F1, F2 = F(P1, W1), F(P2, W2)
    for layer in (0, 4, 10):
        assert stats.ks_2samp(F1[layer], F2[layer]).pvalue > 1e-3
    d1, d2 = F1[4] - F1[0], F2[4] - F2[0]
    assert stats.ks_2samp(d1, d2).pvalue > 1e-3


# ------------------------------------------------------------- statistics
def test_chance_at_minus_100_db(sweep):
    """Pure noise: exact recovery ~ 1/n_layers and |error| ~ a shuffled null."""
    i = 0
    peak = sweep.peak[i]
    true = sweep.true_layers
    assert abs((peak == true).mean() - 1 / N_LAYERS) < 0.05
    rng = np.random.default_rng(0)
    null = np.mean([np.abs(rng.permuted(np.broadcast_to(true, peak.shape), axis=1) - peak).mean()
                    for _ in range(20)])  # fmt: skip
    err = sweep.layer_error[i].mean()
    assert abs(err - null) < 0.1 * null, (err, null)


def test_error_falls_with_snr_and_saturates(sweep):
    err = sweep.layer_error.mean(1)[1:]  # from -40 dB
    assert np.all(np.diff(err) <= 1e-12), err
    assert err[0] - err[-1] > 1.5, err
    assert err[-1] < 0.05 and abs(err[-1] - err[-2]) < 0.05, err
    acc = sweep.accurate.mean(1)
    assert acc[-1] > 0.95 and acc[-1] >= acc[1]


def test_bias_small_at_0_db(sweep):
    i = int(np.flatnonzero(sweep.snr_db == 0.0)[0])
    assert abs(sweep.bias[i].mean()) < 0.2


def test_metrics_against_their_definitions(sweep):
    i = 4
    F = sweep.free_energy[i]
    peak = np.argmax(F, axis=1)
    true = sweep.true_layers
    np.testing.assert_array_equal(sweep.peak[i], peak)
    np.testing.assert_allclose(sweep.layer_error[i], np.abs(true - peak).mean(1))
    np.testing.assert_allclose(sweep.bias[i], (true - peak).mean(1))
    np.testing.assert_allclose(sweep.error_mm_paper[i],
                               np.abs(true - peak).mean(1) * sweep.thickness_mm / N_LAYERS)  # fmt: skip
    # equidistant layers: the exact spacing is thickness / (n_layers - 1)
    np.testing.assert_allclose(sweep.error_mm_exact[i],
                               np.abs(true - peak).mean(1) * sweep.thickness_mm / (N_LAYERS - 1),
                               rtol=1e-6)  # fmt: skip
    np.testing.assert_array_equal(sweep.accurate[i], (peak == true).all(1))
    assert sweep.confusion[i].sum() == peak.size
    np.testing.assert_allclose(sweep.mean_delta_f[i], (F - F.min(1, keepdims=True)).mean(0))
    df = sweep.to_dataframe()
    assert len(df) == sweep.free_energy.shape[0] * sweep.n_columns
    assert set(df.columns) >= {"snr_db", "column", "accurate", "error_mm_paper", "bias"}


def test_reproducible_and_identical_for_n_jobs(sim):
    cols = sim.kept[::7][:260]  # 3 chunks
    a = sim.run(snr_db=-10.0, columns=cols, random_state=42, n_jobs=1)
    b = sim.run(snr_db=-10.0, columns=cols, random_state=42, n_jobs=2)
    c = sim.run(snr_db=-10.0, columns=cols, random_state=43, n_jobs=1)
    np.testing.assert_array_equal(a.free_energy, b.free_energy)
    assert not np.array_equal(a.free_energy, c.free_energy)
    assert a.settings["random_state_entropy"] == 42


def test_coregistration_error_lowers_accuracy(sim):
    cols = sim.kept[::10][:150]
    ok = sim.run(snr_db=0.0, columns=cols)
    bad = sim.run(snr_db=0.0, columns=cols, coreg_error_mm=3.0, bem=sim.bem)
    assert bad.settings["inversion_leadfield"].startswith("recomputed")
    assert bad.accurate.mean() < ok.accurate.mean()
    assert bad.layer_error.mean() > ok.layer_error.mean()
    # an explicit inversion leadfield equal to the simulation's = no error
    same = sim.run(snr_db=0.0, columns=cols, inversion_leadfield=sim.lf.copy())
    np.testing.assert_allclose(same.free_energy, ok.free_energy, rtol=1e-10)


def test_predictivity_and_plot(sim, demo):
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score

    acc = sim.run(snr_db=[0.0, 10.0], columns=sim.kept[::2])
    from mne_laminar_plugin.predictors import read_scalp

    pred = compute_predictors(sim.surf, sim.lf, read_scalp("sub-01", sim.subjects_dir),
                              whitener=sim.cov, info=sim.info, verbose="error")  # fmt: skip
    out = acc.predictivity(pred, snr_db=0.0, random_forest=True)
    y = acc.accurate[0]
    score = pred.score()[acc.columns]
    ok = np.isfinite(score)
    # the score's AUC = the Mann-Whitney probability that accurate > inaccurate
    s1, s0 = score[ok][y[ok]], score[ok][~y[ok]]
    u = (s1[:, None] > s0[None]).mean() + 0.5 * (s1[:, None] == s0[None]).mean()
    assert out["auc_score"] == pytest.approx(u, abs=1e-12)
    assert out["auc_score"] == pytest.approx(roc_auc_score(y[ok], score[ok]))
    for key in ("auc_raw", "auc_zscored", "auc_random_forest"):
        assert 0.0 <= out[key][0] <= 1.0 and out[key][1] >= 0
    assert out["confusion"].sum() == out["n_columns"] and out["n_accurate"] == y[ok].sum()
    assert set(out["importances"]) == {"lf_rms_diff", "radiality", "distance", "thickness"}
    assert out["paper_auc"] == (0.810, 0.013)
    # the score's weights (laminar_score_weights) are those of auc_score and its ROC
    w = {"thickness": 0.0, "distance": 2.0}
    out_w = acc.predictivity(pred, snr_db=0.0, weights=w)
    score_w = pred.score(w)[acc.columns]
    assert out_w["auc_score"] == pytest.approx(roc_auc_score(y[ok], score_w[ok]), abs=1e-12)
    assert out_w["auc_score"] != pytest.approx(out["auc_score"], abs=1e-6)
    assert out_w["auc_raw"] == out["auc_raw"]  # the regression does not use the weights
    fig = acc.plot()
    assert len(fig.axes) >= 3
    plt.close(fig)
    with pytest.raises(ValueError, match="pass snr_db"):
        acc.predictivity(pred)


# --------------------------------------------------------------- bad input
def test_bad_input(sim):
    with pytest.raises(ValueError, match="columns .* not columns with sources"):
        sim.run(columns=[10**6])
    with pytest.raises(ValueError, match="snr_db must be a finite"):
        sim.run(snr_db=np.inf)
    with pytest.raises(ValueError, match="snr_db must be a finite"):
        sim.run(snr_db=[0.0, np.nan])
    no_layout = sim.lf.copy()
    no_layout.layer = None
    with pytest.raises(ValueError, match="no layer/column layout"):
        simulate_laminar_accuracy(no_layout, sim.surf)
    wrong = LaminarSurfaces(sim.surf.layers[:, :-1], sim.surf.orientations[:-1],
                            sim.surf.hemi[:-1], sim.surf.vertno[:-1],
                            {"lh": sim.surf.tris["lh"], "rh": np.zeros((0, 3))},
                            sim.surf.fractions)  # fmt: skip
    with pytest.raises(ValueError, match="surfaces have .* columns"):
        simulate_laminar_accuracy(sim.lf, wrong)
    with pytest.raises(ValueError, match="true_layers"):
        sim.run(true_layers=[11])
    with pytest.raises(ValueError, match="method"):
        sim.run(method="ebb")
    with pytest.raises(ValueError, match="coreg_error_mm"):
        sim.run(coreg_error_mm=-1.0)
    with pytest.raises(ValueError, match="pass bem="):
        sim.run(coreg_error_mm=2.0, columns=sim.kept[:3])
    no_info = sim.lf.copy()
    no_info.info = None
    with pytest.raises(ValueError, match="no measurement info"):
        simulate_laminar_accuracy(no_info, sim.surf)
    assert isinstance(sim.run(columns=sim.kept[:2], snr_db=0.0), LaminarAccuracy)
