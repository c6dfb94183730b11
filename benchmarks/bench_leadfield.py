"""Benchmark: laminar leadfield ``simulate`` vs ``mne.make_forward_solution``.

Inputs are the demo subject's (nilearn fsaverage5 cortex, MNE's fsaverage
inner skull as a 1-layer ico-4 BEM, the 306-channel Vectorview-like array of
:func:`mne_laminar_plugin.demo.make_meg_info`, the fiducial head<->MRI
transform), at two scales:

- ``demo``: 11 layers x the oct5 columns (the demo config);
- ``full``: 11 layers x every fsaverage5 cortex column (~ 200k sources).

For each scale, in the same run and on identical inputs:

- ``laminar simulate (mne)``: ``LeadfieldBuilder.simulate`` with
  ``engine="mne"`` (column check in every layer, one MNE forward for all
  layers, fixed projection, unit conversion);
- ``laminar simulate (fast)``: the same with ``engine="fast"``, when
  :mod:`mne_laminar_plugin.forward` is available;
- ``mne.make_forward_solution``: MNE alone on one discrete source space with
  every layer-major source (``mindist=5``), free orientation as MNE computes
  it, plus ``convert_forward_solution(force_fixed=True)`` timed separately.

Each measurement runs in a forked child process; the peak memory is the
child's peak RSS above its RSS at the start (``VmHWM - VmRSS``), so inputs
shared with the parent are not counted. Prints one table per scale.

Usage::

    python benchmarks/bench_leadfield.py [--scale demo|full|both] [--workdir DIR]
        [--engines mne,fast] [--blas-threads N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_kb(field):
    with open("/proc/self/status") as fid:
        for line in fid:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


BLAS_THREADS = None  # set from --blas-threads


def _child(func, queue):
    import resource

    if BLAS_THREADS is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(BLAS_THREADS)
    start = _rss_kb("VmRSS")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    try:
        extra = func()
        err = None
    except Exception as exc:  # report, do not hide
        extra, err = None, f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    queue.put((elapsed, cpu, (_rss_kb("VmHWM") - start) / 1024.0, extra, err))


def measure(func):
    """(wall s, CPU s, peak extra MiB, extra info, error) of func() in a forked child.

    CPU time (user + system, all threads) is less sensitive than wall time to
    other jobs on a shared machine.
    """
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(func, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def setup(workdir: Path):
    """FreeSurfer subject, BEM solution, trans and 306-channel info (cached)."""
    import mne

    from mne_laminar_plugin import demo

    subjects_dir = workdir / "subjects"
    subject = "bench"
    sol_fname = subjects_dir / subject / "bem" / f"{subject}-5120-bem-sol.fif"
    geom_file = workdir / "geom.npz"
    if not sol_fname.is_file():
        geom = demo._write_fs_subject(subjects_dir, subject, 1.0)
        model = mne.make_bem_model(subject, ico=4, conductivity=(0.3,),
                                   subjects_dir=subjects_dir, verbose="error")  # fmt: skip
        mne.write_bem_solution(sol_fname, mne.make_bem_solution(model, verbose="error"),
                               overwrite=True, verbose="error")  # fmt: skip
        fid = geom["fiducials_mm"]
        np.savez(geom_file, head=geom["head"][0], **{k: np.asarray(v) for k, v in fid.items()})
    g = np.load(geom_file)
    fid = {k: np.asarray(g[k], float) / 1000.0 for k in ("nasion", "lpa", "rpa")}
    mri_head = mne.transforms.get_ras_to_neuromag_trans(fid["nasion"], fid["lpa"], fid["rpa"])
    trans = mne.transforms.Transform("mri", "head", mri_head)
    head_rr = mne.transforms.apply_trans(mri_head, g["head"] / 1000.0)
    info = demo.make_meg_info(head_rr)
    info = mne.pick_info(info, mne.pick_types(info, meg=True))
    bem = mne.read_bem_solution(sol_fname, verbose="error")
    return subjects_dir, subject, bem, trans, info


def run_scale(name, spacing, subjects_dir, subject, bem, trans, info, engines):
    import mne

    from mne_laminar_plugin import LaminarSurfaces, LeadfieldBuilder

    surf = LaminarSurfaces.from_freesurfer(subject, subjects_dir, n_layers=11,
                                           spacing=spacing, verbose="error")  # fmt: skip
    rr = surf.source_positions()
    nn = surf.source_orientations()
    n_src = len(rr)
    print(f"\n=== {name}: 11 layers x {surf.n_columns} columns = {n_src} sources, "
          f"{len(info['ch_names'])} channels, BEM {sum(s['np'] for s in bem['surfs'])} "
          f"nodes ===")  # fmt: skip
    rows = []

    def laminar(engine):
        def run():
            builder = LeadfieldBuilder(surfaces=surf, bem=bem, trans=trans, info=info,
                                       mindist=5.0, engine=engine, verbose="error")  # fmt: skip
            data = builder.simulate(subject, "fixed")
            t = data.provenance["timings_s"]
            return (f"{data.n_sources} sources kept, column check "
                    f"{t['column_check']:.1f} s, forward {t['forward']:.1f} s")  # fmt: skip
        return run

    def mne_alone():
        src = mne.setup_volume_source_space(subject=None, pos=dict(rr=rr, nn=nn.copy()),
                                            verbose="error")  # fmt: skip
        t0 = time.perf_counter()
        fwd = mne.make_forward_solution(info, trans, src, bem, mindist=5.0, verbose="error")
        t_fwd = time.perf_counter() - t0
        t0 = time.perf_counter()
        mne.convert_forward_solution(fwd, force_fixed=True, surf_ori=True, copy=False,
                                     verbose="error")  # fmt: skip
        t_conv = time.perf_counter() - t0
        return (f"{fwd['nsource']} sources kept, make_forward_solution {t_fwd:.1f} s, "
                f"+ force_fixed {t_conv:.1f} s")  # fmt: skip

    # MNE first, then the laminar runs (any drift in machine load then works
    # against this package, not for it)
    cases = [("mne.make_forward_solution (+fixed)", mne_alone)]
    cases += [(f"laminar simulate ({e})", laminar(e)) for e in engines]
    print(f"{'':38s} {'wall':>9s}  {'CPU':>9s}  {'peak':>12s}")
    for label, func in cases:
        secs, cpu, mib, extra, err = measure(func)
        rows.append((label, secs, cpu, mib, extra if err is None else f"FAILED {err}"))
        print(f"{label:38s} {secs:8.1f}s  {cpu:8.1f}s  {mib:8.0f} MiB  {rows[-1][4]}",
              flush=True)  # fmt: skip
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("demo", "full", "both"), default="demo")
    parser.add_argument("--workdir", default=None, help="cache folder for the inputs")
    parser.add_argument("--engines", default="mne,fast")
    parser.add_argument(
        "--blas-threads", type=int, default=None,
        help="limit BLAS threads in the measured processes (threadpoolctl). On a "
        "loaded machine, multi-threaded OpenBLAS makes scipy's Delaunay.transform "
        "(used by MNE's inside-skull check in every make_forward_solution call) "
        "take 3-30 s instead of 10 ms, which swamps the comparison.",
    )  # fmt: skip
    args = parser.parse_args()
    global BLAS_THREADS
    BLAS_THREADS = args.blas_threads
    import mne

    mne.set_log_level("error")
    workdir = Path(args.workdir or Path(tempfile.gettempdir()) / "mne_laminar_bench")
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    inputs = setup(workdir)
    from threadpoolctl import threadpool_info

    blas = {d["internal_api"]: d["num_threads"] for d in threadpool_info()}
    print(f"setup (subject, BEM solution, info): {time.perf_counter() - t0:.1f} s; "
          f"cpus {os.cpu_count()}, mne {mne.__version__}, BLAS threads {blas} "
          f"(measured with {args.blas_threads or 'default'}), load average "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "fast" in engines:
        from mne_laminar_plugin.forward._forward import _fast_engine

        try:
            _fast_engine()
        except RuntimeError as exc:
            print(f"(fast engine skipped: {exc})")
            engines.remove("fast")
    scales = {"demo": [("demo", "oct5")], "full": [("full", "all")],
              "both": [("demo", "oct5"), ("full", "all")]}[args.scale]  # fmt: skip
    for name, spacing in scales:
        run_scale(name, spacing, *inputs, engines)


if __name__ == "__main__":
    main()
