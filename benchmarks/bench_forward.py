"""Benchmark the fast laminar forward engine against mne.make_forward_solution.

Same inputs for both, in the same run, back to back:

* conductor: single-layer BEM of MNE's bundled fsaverage inner skull decimated
  to ico-4 (5120 triangles, 2562 nodes), conductivity 0.3 S/m;
* sensors: a 306-channel Vectorview-like array (102 locations on MNE's bundled
  306m helmet, each a 3022 magnetometer and two orthogonal 3012 planar
  gradiometers; MNE's "accurate" coil integration points);
* sources: 11 layers between fsaverage5 pial (layer 0) and white (layer 10),
  fixed orientation along the pial -> white link vectors; medial wall (pial ==
  white) dropped, and columns any of whose layers is outside the inner skull
  dropped (``engine.check_inside``);
* scale (a): oct5 columns (the demo spacing), (b): all fsaverage5 columns.

Each computation runs in its own subprocess so that its peak memory (resident
set size sampled every 2 ms, minus the size just before the call) is its own.
MNE computes free orientation (it always does); its fixed-orientation gain is
the projection on the link vectors (included in its time). The BLAS lower
bound is the BEM-correction product alone: 2 x n_orient * N x n_nodes x n_ch
flops at the GFLOP/s this machine's BLAS reaches on that shape (measured here).

Usage::

    python benchmarks/bench_forward.py                # (a) and (b)
    python benchmarks/bench_forward.py --scales a     # quick
    python benchmarks/bench_forward.py --full         # + full-resolution run

The CPU may be shared: compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import os.path as op
import resource
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = op.dirname(op.abspath(__file__))
N_LAYERS = 11


# #############################################################################
# Inputs


def _fs5_dir():
    import nilearn

    return op.join(op.dirname(nilearn.__file__), "datasets", "data", "fsaverage5")


def _load_gii(fname):
    import nibabel as nib

    img = nib.load(fname)
    return [d.data for d in img.darrays]


def _subdivide(rr_list, tris, levels):
    """Midpoint subdivision (ico-like) applied to several aligned meshes."""
    for _ in range(levels):
        edges = np.sort(
            np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1
        )
        uniq, inv = np.unique(edges, axis=0, return_inverse=True)
        n_v = len(rr_list[0])
        mid = n_v + inv.reshape(3, -1).T  # (n_tri, 3): ab, bc, ca
        rr_list = [
            np.concatenate([rr, 0.5 * (rr[uniq[:, 0]] + rr[uniq[:, 1]])])
            for rr in rr_list
        ]
        a, b, c = tris.T
        ab, bc, ca = mid.T
        tris = np.concatenate(
            [np.c_[a, ab, ca], np.c_[ab, b, bc], np.c_[ca, bc, c], np.c_[ab, bc, ca]]
        )
    return rr_list, tris


def laminar_columns(spacing):
    """(layers (L, C, 3) m MRI, link (C, 3)) for fsaverage5 cortex columns.

    spacing: 'oct5' (MNE's oct5 on ?h.sphere), 'all' (every fsaverage5 vertex)
    or 'full' (fsaverage5 meshes subdivided twice: 163842 vertices per
    hemisphere, the vertex count of a full-resolution fsaverage).
    """
    from mne.surface import _tessellate_sphere_surf
    from scipy.spatial import cKDTree

    d = _fs5_dir()
    whites, pials = [], []
    for hemi in ("left", "right"):
        white, tris = _load_gii(op.join(d, f"white_{hemi}.gii.gz"))
        pial = _load_gii(op.join(d, f"pial_{hemi}.gii.gz"))[0]
        white = white.astype(float) / 1000.0
        pial = pial.astype(float) / 1000.0
        medial = np.all(white == pial, axis=1)
        if spacing == "oct5":
            sphere = _load_gii(op.join(d, f"sphere_{hemi}.gii.gz"))[0].astype(float)
            sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
            oct_rr = _tessellate_sphere_surf(5)["rr"]
            use = np.unique(cKDTree(sphere).query(oct_rr)[1])
        elif spacing == "all":
            use = np.arange(len(white))
        else:
            assert spacing == "full"
            (white, pial, med), _ = _subdivide(
                [white, pial, medial.astype(float)], tris.astype(np.int64), 2
            )
            medial = med == 1.0  # midpoints of two medial-wall vertices
            use = np.arange(len(white))
        use = use[~medial[use]]
        whites.append(white[use])
        pials.append(pial[use])
    white = np.concatenate(whites)
    pial = np.concatenate(pials)
    link = white - pial
    link /= np.linalg.norm(link, axis=1, keepdims=True)
    f = np.linspace(0.0, 1.0, N_LAYERS)[:, np.newaxis, np.newaxis]
    layers = pial[np.newaxis] + f * (white - pial)[np.newaxis]
    return layers, link


def make_bem():
    """Single-layer BEM solution: fsaverage inner skull at ico-4."""
    import mne
    from mne.bem import _surfaces_to_bem
    from mne.io.constants import FIFF

    fname = op.join(
        op.dirname(mne.__file__), "data", "fsaverage", "fsaverage-inner_skull-bem.fif"
    )
    surf = mne.read_bem_surfaces(fname, verbose=False)[0]
    surf = dict(rr=surf["rr"] * 1000.0, tris=surf["tris"].copy())
    surfs = _surfaces_to_bem([surf], [FIFF.FIFFV_BEM_SURF_ID_BRAIN], [0.3], ico=4)
    return mne.make_bem_solution(surfs, verbose=False)


def vectorview_info(mri_head_t, bem):
    """102 locations on the 306m helmet, mag + 2 planar grads each."""
    import mne
    from mne.bem import _fit_sphere
    from mne.io.constants import FIFF
    from mne.transforms import Transform, apply_trans

    fname = op.join(op.dirname(mne.__file__), "data", "helmets", "306m.fif.gz")
    helmet = mne.read_bem_surfaces(
        fname, s_id=FIFF.FIFFV_MNE_SURF_MEG_HELMET, verbose=False
    )
    rr, nn = helmet["rr"], helmet["nn"]
    idx = [int(np.argmax(rr[:, 2]))]  # farthest-point sampling
    dist = np.linalg.norm(rr - rr[idx[0]], axis=1)
    for _ in range(101):
        idx.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(rr - rr[idx[-1]], axis=1))
    _, center_dev = _fit_sphere(rr)
    names, types, locs, coils = [], [], [], []
    for li, i in enumerate(sorted(idx)):
        ez = nn[i] / np.linalg.norm(nn[i])
        tmp = (
            np.array([0.0, 0.0, 1.0]) if abs(ez[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        )
        ex = np.cross(tmp, ez)
        ex /= np.linalg.norm(ex)
        ey = np.cross(ez, ex)
        for suffix, (a, b), coil, kind in (
            ("1", (ex, ey), FIFF.FIFFV_COIL_VV_MAG_T1, "mag"),
            ("2", (ex, ey), FIFF.FIFFV_COIL_VV_PLANAR_T1, "grad"),
            ("3", (ey, -ex), FIFF.FIFFV_COIL_VV_PLANAR_T1, "grad"),
        ):
            names.append(f"MEG{li + 1:03d}{suffix}")
            types.append(kind)
            coils.append(coil)
            locs.append(np.r_[rr[i], a, b, ez])
    info = mne.create_info(names, 1000.0, types)
    # the inner-skull centre 1.5 cm below the helmet's sphere centre
    center_head = apply_trans(mri_head_t, bem["surfs"][0]["rr"].mean(0))
    dev_head = np.eye(4)
    dev_head[:3, 3] = center_head - (center_dev + [0.0, 0.0, -0.015])
    with info._unlock():
        info["dev_head_t"] = Transform("meg", "head", dev_head)
    for ch, loc, coil in zip(info["chs"], locs, coils):
        ch["loc"][:] = loc
        ch["coil_type"] = coil
    return info


# #############################################################################
# Measurement helpers


class PeakRSS:
    """Peak resident set size above the size at entry, sampled every 2 ms."""

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *args):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self.extra = self.peak - self.base


def col_errors(gain, ref, ch_types):
    """Max over columns of ||gain - ref|| / ||ref||, per channel type."""
    out = dict()
    for kind in np.unique(ch_types):
        rows = np.flatnonzero(ch_types == kind)
        num = np.zeros(gain.shape[1])
        den = np.zeros(gain.shape[1])
        for a in range(0, gain.shape[1], 20000):  # bounded temporaries
            g = np.asarray(gain[rows, a : a + 20000], float)
            r = np.asarray(ref[rows, a : a + 20000], float)
            num[a : a + 20000] = np.linalg.norm(g - r, axis=0)
            den[a : a + 20000] = np.linalg.norm(r, axis=0)
        out[str(kind)] = float((num / den).max())
    return out


def blas_rate(n_nodes, n_ch, dtype, n_rows=4000, repeats=5):
    """Best GFLOP/s of this machine's BLAS on the BEM-correction shape."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n_rows, n_nodes)).astype(dtype)
    b = rng.standard_normal((n_nodes, n_ch)).astype(dtype)
    c = np.empty((n_rows, n_ch), dtype)
    np.matmul(a, b, out=c)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n_rows * n_nodes * n_ch / best / 1e9


def blas_replay(n_dip, n_nodes, n_ch, dtype, chunk=4000):
    """Time the BEM product alone: (n_dip x n_nodes) @ (n_nodes x n_ch).

    Chunks of a random matrix into a freshly allocated (n_ch, n_dip) output,
    like the engine's product, with the library's own threading; includes the
    cost of faulting in the output's pages, which the engine pays as well.
    """
    rng = np.random.default_rng(0)
    v0 = rng.standard_normal((chunk, n_nodes)).astype(dtype)
    sol = rng.standard_normal((n_nodes, n_ch)).astype(dtype)
    t0 = time.perf_counter()
    out = np.empty((n_ch, n_dip), dtype, order="F")
    for a in range(0, n_dip, chunk):
        b = min(n_dip, a + chunk)
        np.matmul(v0[: b - a], sol, out=out[:, a:b].T)
    return time.perf_counter() - t0


# #############################################################################
# Worker (one computation per subprocess)


def run_worker(task_file):
    """Run one task (MNE, engine or inside test) and write its results."""
    import mne

    from mne_laminar_plugin import forward as engine
    from mne_laminar_plugin.forward import _engine

    mne.set_log_level("warning")
    with open(task_file) as fid:
        task = json.load(fid)
    d = task["dir"]
    info = mne.io.read_info(op.join(d, "info.fif"), verbose=False)
    trans = mne.read_trans(op.join(d, "bench-trans.fif"))
    bem = mne.read_bem_solution(op.join(d, "bem-sol.fif"), verbose=False)
    rr = np.load(op.join(d, f"rr_{task['scale']}.npy"))
    nn = np.load(op.join(d, f"nn_{task['scale']}.npy"))
    dtype = np.dtype(task.get("dtype", "float64"))
    res = dict(task)
    if task["what"] == "mne":
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            free = engine.compute_gain_mne(info, trans, bem, rr, None)
            t1 = time.perf_counter()
            # fixed = projection of MNE's free gain on the orientations
            nn_head = mne.transforms.apply_trans(
                mne.transforms._get_trans(trans)[0], nn, move=False
            )
            fixed = np.einsum("cik,ik->ci", free.reshape(len(free), -1, 3), nn_head)
            t2 = time.perf_counter()
        res.update(time_free=t1 - t0, time_fixed=t2 - t0, peak_extra=mem.extra)
        np.save(op.join(d, f"mne_free_{task['scale']}.npy"), free)
        np.save(op.join(d, f"mne_fixed_{task['scale']}.npy"), fixed)
        res["out_bytes_free"] = free.nbytes
        res["out_bytes_fixed"] = fixed.nbytes
    elif task["what"] == "inside":
        from mne.bem import _bem_find_surface
        from mne.surface import _CheckInside

        layers = np.load(op.join(d, f"layers_{task['scale']}.npy"))
        pts = layers.reshape(-1, 3)
        t0 = time.perf_counter()
        ours = engine.check_inside(bem, trans, pts)
        t1 = time.perf_counter()
        check = _CheckInside(_bem_find_surface(bem, "inner_skull"))
        theirs = check(pts)
        t2 = time.perf_counter()
        res.update(
            time_engine=t1 - t0,
            time_mne=t2 - t1,
            n_points=len(pts),
            n_inside=int(ours.sum()),
            n_disagree=int((ours != theirs).sum()),
        )
    else:  # engine
        nnx = nn if task["orient"] == "fixed" else None
        engine.compute_gain(
            info, trans, bem, rr[:64], None if nnx is None else nnx[:64], dtype=dtype
        )
        times, peaks, breakdown, rates, replays = [], [], [], [], []
        n_nodes = len(bem["surfs"][0]["rr"])
        n_ch = len(info["ch_names"])
        ref_file = op.join(d, f"mne_{task['orient']}_{task['scale']}.npy")
        for rep in range(task["repeats"]):
            # the machine may be shared: measure the BLAS rate right before
            rates.append(blas_rate(n_nodes, n_ch, dtype, repeats=3))
            _engine._TIMINGS.clear()
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                gain = engine.compute_gain(
                    info, trans, bem, rr, nnx, dtype=dtype, n_jobs=task.get("n_jobs"),
                    parallel=task.get("parallel"),
                )  # fmt: skip
                times.append(time.perf_counter() - t0)
            peaks.append(mem.extra)
            breakdown.append(dict(_engine._TIMINGS))
            out_bytes = gain.nbytes
            if rep == 0 and op.isfile(ref_file):
                ref = np.load(ref_file, mmap_mode="r")
                ch_types = np.array(info.get_channel_types())
                res["errors"] = col_errors(gain, ref, ch_types)
                del ref
            n_dip = gain.shape[1]
            del gain
            # and right after: the BEM product alone, same shape, same output
            # layout, multithreaded BLAS, into a fresh output of the same size
            replays.append(blas_replay(n_dip, n_nodes, n_ch, dtype))
        res.update(
            times=times,
            peak_extra=max(peaks),
            out_bytes=out_bytes,
            breakdown=breakdown,
            blas_gflops=rates,
            replay=replays,
        )
    res["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open(task_file, "w") as fid:
        json.dump(res, fid)


def spawn(task, d):
    """Run a task in a fresh subprocess and return its results."""
    task = dict(task, dir=d)
    fname = op.join(
        d,
        f"task_{task['what']}_{task['scale']}_{task.get('orient', '')}_{task.get('dtype', '')}.json",
    )
    with open(fname, "w") as fid:
        json.dump(task, fid)
    env = dict(os.environ)
    subprocess.run(
        [sys.executable, op.abspath(__file__), "--worker", fname], check=True, env=env
    )
    with open(fname) as fid:
        return json.load(fid)


# #############################################################################
# Main


def main():
    """Build the inputs, run every computation, print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", nargs="+", default=["a", "b"], choices=["a", "b"])
    parser.add_argument("--repeats", type=int, default=3, help="engine repeats")
    parser.add_argument("--skip-mne", action="store_true")
    parser.add_argument(
        "--full", action="store_true", help="full-resolution run (engine only)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write all results to this file")
    args = parser.parse_args()
    if args.worker:
        return run_worker(args.worker)

    import mne

    from mne_laminar_plugin import forward as engine

    mne.set_log_level("warning")
    results = dict(cpu_count=os.cpu_count(), mne=mne.__version__)
    with tempfile.TemporaryDirectory(prefix="bench_forward_") as d:
        t0 = time.perf_counter()
        bem = make_bem()
        print(
            f"BEM solution (ico-4, {len(bem['surfs'][0]['rr'])} nodes): {time.perf_counter() - t0:.1f} s (not timed below)"
        )
        trans = mne.transforms._get_trans("fsaverage")[0]
        info = vectorview_info(trans, bem)
        mne.io.write_info(op.join(d, "info.fif"), info)
        mne.write_trans(op.join(d, "bench-trans.fif"), trans)
        mne.write_bem_solution(op.join(d, "bem-sol.fif"), bem)
        n_nodes = len(bem["surfs"][0]["rr"])
        n_ch = len(info["ch_names"])
        rates = {dt: blas_rate(n_nodes, n_ch, dt) for dt in ("float64", "float32")}
        results["blas_gflops"] = rates
        print(
            f"BLAS on ({4000} x {n_nodes}) @ ({n_nodes} x {n_ch}): "
            f"{rates['float64']:.1f} GFLOP/s float64, {rates['float32']:.1f} float32"
        )
        scales = [(s, "oct5" if s == "a" else "all") for s in args.scales]
        if args.full:
            scales.append(("full", "full"))
        for scale, spacing in scales:
            layers, link = laminar_columns(spacing)
            n_col = layers.shape[1]
            t0 = time.perf_counter()
            keep = np.ones(n_col, bool)
            for layer in layers:
                keep &= engine.check_inside(bem, trans, layer)
            t_inside = time.perf_counter() - t0
            layers, link = layers[:, keep], link[keep]
            rr = layers.reshape(-1, 3)
            nn = np.tile(link, (N_LAYERS, 1))
            np.save(op.join(d, f"rr_{scale}.npy"), rr)
            np.save(op.join(d, f"nn_{scale}.npy"), nn)
            np.save(op.join(d, f"layers_{scale}.npy"), layers)
            n_src = len(rr)
            print(
                f"\n=== scale ({scale}): {N_LAYERS} layers x {keep.sum()} columns "
                f"({spacing}; {n_col - keep.sum()} dropped outside the inner skull) "
                f"= {n_src} sources, {n_ch} channels, {n_nodes} BEM nodes"
            )
            print(f"engine.check_inside on {N_LAYERS * n_col} points: {t_inside:.2f} s")
            res = dict(
                n_sources=n_src, n_columns=int(keep.sum()), time_check_inside=t_inside
            )
            if scale != "full" and not args.skip_mne:
                r = spawn(dict(what="inside", scale=scale), d)
                print(
                    f"inside test on the kept points: engine {r['time_engine']:.2f} s, "
                    f"MNE _CheckInside {r['time_mne']:.2f} s; disagreements: {r['n_disagree']}"
                )
                res["inside"] = r
                r = spawn(dict(what="mne", scale=scale), d)
                res["mne"] = r
                print(
                    f"MNE make_forward_solution (free, numba): {r['time_free']:.1f} s, "
                    f"peak +{r['peak_extra'] / 1e9:.2f} GB "
                    f"({r['peak_extra'] / r['out_bytes_free']:.2f}x its output)"
                )
            configs = [
                ("fixed", "float64"),
                ("free", "float64"),
                ("fixed", "float32"),
                ("free", "float32"),
            ]
            if scale == "full":
                configs = [("fixed", "float64"), ("fixed", "float32")]
            for orient, dtype in configs:
                r = spawn(
                    dict(
                        what="engine",
                        scale=scale,
                        orient=orient,
                        dtype=dtype,
                        repeats=1 if scale == "full" else args.repeats,
                    ),
                    d,
                )
                n_ori = 1 if orient == "fixed" else 3
                flops = 2.0 * n_ori * n_src * n_nodes * n_ch
                # the machine's BLAS capability: the best rate measured so far
                # in this session (the CPU is shared, rates drop under load)
                rates[dtype] = max([rates[dtype], *r["blas_gflops"]])
                bound = flops / (rates[dtype] * 1e9)
                ib = int(np.argmin(r["times"]))
                best = r["times"][ib]
                local = [
                    t * g * 1e9 / flops for t, g in zip(r["times"], r["blas_gflops"])
                ]
                rep = r["replay"]
                line = (
                    f"engine {orient:5s} {dtype}: {best:6.2f} s (runs: "
                    f"{', '.join(f'{t:.2f}' for t in r['times'])}); BLAS bound {bound:5.2f} s "
                    f"at {rates[dtype]:.0f} GFLOP/s -> {best / bound:.2f}x the bound\n"
                    f"    (vs the BLAS rate measured just before each run: "
                    f"{', '.join(f'{x:.2f}' for x in local)}x)\n"
                    f"    the BEM product alone, run right after each run "
                    f"(incl. faulting in a new output): "
                    f"{', '.join(f'{x:.2f}' for x in rep)} s -> engine/product "
                    f"{', '.join(f'{t / x:.2f}' for t, x in zip(r['times'], rep))}x; peak "
                    f"+{r['peak_extra'] / 1e9:.2f} GB = {r['peak_extra'] / r['out_bytes']:.2f}x "
                    f"the {r['out_bytes'] / 1e9:.2f} GB output"
                )
                if "mne" in res:
                    t_mne = res["mne"][
                        "time_fixed" if orient == "fixed" else "time_free"
                    ]
                    line += (
                        f"\n    speed-up vs MNE: {t_mne / best:.1f}x ({t_mne / (best + t_inside):.1f}x "
                        "including engine.check_inside on all layers); max relative column "
                        "error vs MNE: "
                        + ", ".join(
                            f"{k} {v:.1e}" for k, v in r.get("errors", {}).items()
                        )
                    )
                print(line)
                bd = r["breakdown"][ib]
                print(
                    "    thread-seconds: "
                    + ", ".join(f"{k} {v:.2f}" for k, v in bd.items())
                )
                r.update(
                    bound=bound,
                    best=best,
                    ratio=best / bound,
                    ratio_replay=min(t / x for t, x in zip(r["times"], rep)),
                )
                res[f"engine_{orient}_{dtype}"] = r
            results[scale] = res
    if args.json:
        with open(args.json, "w") as fid:
            json.dump(results, fid, indent=1)


if __name__ == "__main__":
    main()
