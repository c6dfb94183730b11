"""Benchmark: the whole-brain laminar accuracy simulation (Szul et al. 2025).

On the offline demo subject (fsaverage5 cortex, 306 channels, single-layer
BEM, 11 layers), every column x 11 true layers x 11 layer models (MSP):

(a) demo scale: every oct5 column, one SNR (-20 dB);
(b) paper scale: every fsaverage5 cortex column (spacing "all"), one SNR;
(c) a 6-level SNR sweep on 1,000 columns of (b);
(d) one inversion at a time through the public API (``compare_layers`` on an
    Evoked per simulation, the same protocol), timed on a sample and
    extrapolated, for the ratio;
(e) predictivity of the anatomical score on (b) (5-fold CV ROC-AUC), to set
    next to the paper's 0.810.

Each simulation runs on one core (the process pinned to one CPU), with
``n_jobs=1`` (in-process threads, one per core) and with ``n_jobs=2`` (loky),
one BLAS thread per process or thread. Leadfield and surface times are printed separately (the
simulation reuses what the pipeline's earlier steps computed).

Run: python benchmarks/bench_simulation.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import mne
import numpy as np


def _timed(label, func, *args, **kwargs):
    w0, c0 = time.perf_counter(), time.process_time()
    out = func(*args, **kwargs)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"  {label:<52s} wall {wall:7.2f} s   cpu(parent) {cpu:7.2f} s", flush=True)
    return out, wall


def _setup(root, spacing):
    from mne_bids import BIDSPath, get_head_mri_trans, read_raw_bids

    from mne_laminar_plugin import LaminarSurfaces, LeadfieldBuilder

    sd = root / "bids" / "derivatives" / "freesurfer" / "subjects"
    surf, _ = _timed(f"surfaces ({spacing})", LaminarSurfaces.from_freesurfer, "sub-01", sd,
                     n_layers=11, spacing=spacing, verbose="error")  # fmt: skip
    bp = BIDSPath(subject="01", task="demo", datatype="meg", root=root / "bids")
    raw = read_raw_bids(bp, verbose="error")
    trans = get_head_mri_trans(bp, fs_subject="sub-01", fs_subjects_dir=sd, verbose="error")
    model = mne.make_bem_model("sub-01", ico=3, conductivity=(0.3,), subjects_dir=sd,
                               verbose="error")  # fmt: skip
    bem = mne.make_bem_solution(model, verbose="error")
    info = mne.pick_info(raw.info, mne.pick_types(raw.info, meg=True))
    with info._unlock():
        info["sfreq"] = 600.0
        info["lowpass"] = 300.0
    builder = LeadfieldBuilder(surfaces=surf, bem=bem, trans=trans, info=info, eeg=False,
                               engine="fast", verbose="error")  # fmt: skip
    lf, _ = _timed(f"leadfield ({spacing}, fast engine)", builder.simulate, "sub-01")
    cov = mne.make_ad_hoc_cov(info, std=dict(mag=10e-15, grad=5e-13), verbose="error")
    return dict(surf=surf, lf=lf, cov=cov, info=info, sd=sd)


def _simulate(g, label, **kw):
    from mne_laminar_plugin import simulate_laminar_accuracy

    import os

    out = {}
    acc = None
    cpus = os.sched_getaffinity(0)
    for key, n_jobs, pin in (("one core", 1, True), ("n_jobs=1", 1, False),
                             ("n_jobs=2", 2, False)):  # fmt: skip
        if pin:  # one CPU: the in-process pool has one thread
            os.sched_setaffinity(0, {min(cpus)})
        try:
            acc, wall = _timed(f"{label}, {key}", simulate_laminar_accuracy, g["lf"],
                               g["surf"], noise_cov=g["cov"], random_state=0, n_jobs=n_jobs,
                               verbose="error", **kw)  # fmt: skip
        finally:
            os.sched_setaffinity(0, cpus)
        out[key] = wall
    n_sim = acc.n_columns * len(acc.true_layers) * len(acc.snr_db)
    out.update(n_columns=acc.n_columns, n_simulations=n_sim,
               n_layer_models=n_sim * acc.n_layers,
               accurate_fraction=acc.accurate.mean(1).tolist(),
               mean_layer_error=acc.layer_error.mean(1).tolist(),
               mean_bias=acc.bias.mean(1).tolist(), snr_db=acc.snr_db.tolist())  # fmt: skip
    print(f"    {acc}")
    return acc, out


def _one_at_a_time(g, n_sample=40):
    """Seconds per simulation (11 layer models) via Evoked + compare_layers."""
    from mne_laminar_plugin import compare_layers
    from mne_laminar_plugin.inverse._patches import mesh_edges, patch_kernel

    surf, lf, info, cov = g["surf"], g["lf"], g["info"], g["cov"]
    kept = np.asarray(lf.columns)
    keep = np.isin(np.arange(surf.n_columns), kept)
    to_kept = np.cumsum(keep) - 1
    edges = mesh_edges(surf.combined_tris(), surf.n_columns)
    si = 10.0 ** (np.broadcast_to(lf.sensor_unitmult, (lf.n_sensors,)) + 9.0)
    std = np.sqrt(cov.data)
    times = -1.0 + np.arange(1201) / 600.0
    wave = 10.0 * np.exp(-(times**2) / (2 * 0.4**2))
    rng = np.random.default_rng(1)
    n_kept = len(kept)
    # warm-up (whitener cache, numba/JIT-free but imports)
    compare_layers(mne.EvokedArray(rng.normal(size=(lf.n_sensors, 1201)) * std[:, None], info,
                                   tmin=-1.0, verbose="error"),
                   lf, cov, surfaces=surf, prior=int(kept[0]), woi=(-0.025, 0.025),
                   verbose="error")  # fmt: skip
    t0 = time.perf_counter()
    for _ in range(n_sample):
        c, k = int(rng.choice(kept)), int(rng.integers(11))
        K = patch_kernel(surf.layers[k] * 1e3, edges, 5.0, [c], keep=keep).tocoo()
        topo = (lf.leadfield[:, k * n_kept + to_kept[K.col]] * K.data).sum(1) * si * 1e-8
        sig = np.outer(topo, wave)
        sd = (sig / std[:, None]).std(axis=1, ddof=1).mean() * 10 ** (20 / 20)
        ev = mne.EvokedArray(sig + rng.normal(size=sig.shape) * sd * std[:, None], info,
                             tmin=-1.0, verbose="error")  # fmt: skip
        compare_layers(ev, lf, cov, surfaces=surf, prior=c, woi=(-0.025, 0.025), verbose="error")
    per = (time.perf_counter() - t0) / n_sample
    print(f"  one simulation through the public API (Evoked + compare_layers, 11 models): "
          f"{1e3 * per:.1f} ms", flush=True)  # fmt: skip
    return per


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="demo scale only")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from pathlib import Path

    from mne_laminar_plugin.demo import make_demo_dataset

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "demo"
        make_demo_dataset(root, n_subjects=1, seed=42)
        print("(a) demo scale (oct5)")
        g = _setup(root, "oct5")
        _, results["a_demo_one_snr"] = _simulate(g, "every column, -20 dB", snr_db=-20.0)
        per = _one_at_a_time(g)
        results["one_at_a_time_s_per_simulation"] = per
        n_a = results["a_demo_one_snr"]["n_simulations"]
        results["a_ratio"] = per * n_a / results["a_demo_one_snr"]["n_jobs=2"]
        print(f"  ratio (one at a time, 1 process) / batched (n_jobs=2): {results['a_ratio']:.0f}x")
        if args.quick:
            print(json.dumps(results, indent=1))
            return results
        del g
        print("(b) paper scale (every fsaverage5 cortex column)")
        g = _setup(root, "all")
        acc, results["b_paper_one_snr"] = _simulate(g, "every column, -20 dB", snr_db=-20.0)
        n_b = results["b_paper_one_snr"]["n_simulations"]
        results["b_ratio"] = per * n_b / results["b_paper_one_snr"]["n_jobs=2"]
        print(f"  one at a time, extrapolated: {per * n_b / 60:.1f} min; ratio "
              f"{results['b_ratio']:.0f}x")  # fmt: skip
        print("(c) 6-level SNR sweep on 1,000 columns")
        cols = np.asarray(g["lf"].columns)[:: max(len(g["lf"].columns) // 1000, 1)][:1000]
        _, results["c_sweep"] = _simulate(g, "1,000 columns x 6 SNRs",
                                          snr_db=[-40.0, -30.0, -20.0, -10.0, 0.0, 10.0],
                                          columns=cols)  # fmt: skip
        print("(e) predictivity of the anatomical score (paper scale)")
        from mne_laminar_plugin import compute_predictors
        from mne_laminar_plugin.predictors import read_scalp

        pred, _ = _timed("predictors", compute_predictors, g["surf"], g["lf"],
                         read_scalp("sub-01", g["sd"]), whitener=g["cov"], info=g["info"],
                         verbose="error")  # fmt: skip
        for snr in (-20.0, 0.0):
            acc0 = acc
            if snr != -20.0:
                from mne_laminar_plugin import simulate_laminar_accuracy

                acc0 = simulate_laminar_accuracy(g["lf"], g["surf"], noise_cov=g["cov"],
                                                 snr_db=snr, random_state=0, n_jobs=2,
                                                 verbose="error")  # fmt: skip
            try:
                p = acc0.predictivity(pred, random_forest=True)
            except ValueError as err:
                print(f"  {snr} dB: {err}")
                continue
            keep = {k: v for k, v in p.items() if k not in ("roc_score", "confusion")}
            keep["confusion"] = p["confusion"].tolist()
            results[f"e_predictivity_{snr:g}dB"] = keep
            print(f"  {snr:g} dB: {p['n_accurate']}/{p['n_columns']} accurate; AUC raw "
                  f"{p['auc_raw'][0]:.3f} +- {p['auc_raw'][1]:.3f}, z-scored "
                  f"{p['auc_zscored'][0]:.3f}, score alone {p['auc_score']:.3f}, random "
                  f"forest {p['auc_random_forest'][0]:.3f} (paper 0.810 +- 0.013)")  # fmt: skip
    paper_inversions = 29130 * 11 * 11
    results["paper_protocol"] = dict(jobs=29130, cpus_per_job=4, concurrent_jobs=200,
                                     spm_inversions=paper_inversions)  # fmt: skip
    print(json.dumps(results, indent=1, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return results


if __name__ == "__main__":
    main()
