"""Fast forward engine for laminar leadfields.

A laminar leadfield has ``n_layers`` times the sources of an ordinary one. This
module computes exactly what :func:`mne.make_forward_solution` computes for a
discrete source space (same conductor models, coil definitions, integration
points and formulas), but organises the per-source work for throughput:

* everything that does not depend on the sources is done once, reusing MNE for
  it (sensor and coil definitions, BEM solution, EEG electrode projection,
  transforms);
* the infinite-medium potentials at the BEM nodes and the primary-current
  (infinite-medium) magnetic field are computed in bulk by numba kernels,
  oriented *before* the BEM product when a fixed orientation is asked for (a
  third of the floating-point work of MNE, which always computes the three
  dipole components);
* the BEM correction for MEG and EEG together is one BLAS matrix product per
  chunk of sources, accumulated straight into a preallocated output matrix, so
  peak memory stays close to the size of the result;
* chunks run on one thread per core, or are farmed out through joblib (loky,
  threading, or a dask cluster), with identical results;
* the inside-the-inner-skull test counts ray crossings (exact winding number)
  instead of summing solid angles over all triangles, with MNE's decisions.

With float32 output the BEM product is a float32 product, except for the
terms of the BEM nodes nearest to each source, kept in float64 (see
``_k_near_field``); the error stays below 1e-5 (``benchmarks/README.md``).

The formulas follow MNE-Python 1.13 (``mne/forward/_compute_forward.py`` and
``_compute_forward_numba.py``, BSD-3-Clause), which derive from Matti
Hämäläinen's MNE-C: Hämäläinen & Sarvas (1989), Mosher, Leahy & Lewis (1999),
Sarvas (1987) and the Berg-Scherg EEG sphere approximation.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
from mne.utils import (
    ProgressBar,
    _check_option,
    _ensure_int,
    _validate_type,
    logger,
    verbose,
)

from ._engine_numba import _get_kernels, _n_cpus
from ._engine_setup import _MAG_FACTOR, _check_sources, _make_plan, _near_table
from ._inside import _FastCheckInside, _inside_surface

__all__ = ["check_inside", "compute_gain", "gain_ch_names"]

_TIMINGS = dict()  # cumulative seconds per phase, summed over threads
_TIMINGS_LOCK = threading.Lock()
_CHUNK_BYTES = 16e6  # per-chunk work buffer (infinite potentials), per thread


# #############################################################################
# Per-chunk work


def _add_time(key, dt):
    with _TIMINGS_LOCK:
        _TIMINGS[key] = _TIMINGS.get(key, 0.0) + dt


def _compute_chunk(plan, rr_head, nn_head, out_T, dtype, work=None):
    """Compute the gain of a chunk of sources into out_T (n_dip, n_ch), C order.

    Long on purpose: the per-chunk arithmetic of MNE's forward (MEG and EEG,
    sphere and BEM, fixed and free) kept in one function so that every
    scheduler (threads, joblib, dask) runs exactly the same code.

    ``out_T`` is the transpose of a column block of the (F-ordered) output.
    Runs in the calling thread (call it with single-threaded BLAS). Returns
    the work buffer for reuse.
    """
    kernels = _get_kernels()
    n_src = len(rr_head)
    fixed = nn_head is not None
    n_ori = 1 if fixed else 3
    n_dip = n_ori * n_src
    assert out_T.shape == (n_dip, plan.n_ch)
    rr_head = np.ascontiguousarray(rr_head, float)
    nn_head = None if nn_head is None else np.ascontiguousarray(nn_head, float)
    t0 = time.perf_counter()
    if plan.is_sphere:
        meg_bufs = list()
        if plan.has_meg:
            meg_bufs = [np.empty((n_dip, len(g[0]))) for g in plan.meg_groups]
        eeg_buf = None
        if plan.has_eeg:
            eeg_buf = np.empty((n_dip, plan.eeg_starts.shape[0] - 1))
            q = (
                np.ascontiguousarray(nn_head[:, np.newaxis])
                if fixed
                else np.ascontiguousarray(np.broadcast_to(np.eye(3), (n_src, 3, 3)))
            )

        def fun(a, b):
            for (_, pos, cosm, w), buf in zip(plan.meg_groups, meg_bufs):
                if fixed:
                    kernels.sphere_fixed(
                        rr_head[a:b], nn_head[a:b], plan.r0, pos, cosm, w, buf[a:b]
                    )
                else:
                    kernels.sphere_free(
                        rr_head[a:b], plan.r0, pos, cosm, w, buf[3 * a : 3 * b]
                    )
            if eeg_buf is not None:
                kernels.eeg_sphere(
                    rr_head[a:b], q[a:b], plan.r0, plan.eeg_pos, plan.eeg_w,
                    plan.eeg_starts, plan.eeg_rad, plan.eeg_mu, plan.eeg_lambda,
                    eeg_buf[n_ori * a : n_ori * b],
                )  # fmt: skip

        fun(0, n_src)
        if eeg_buf is not None:
            eeg_buf *= 0.25 / np.pi
            out_T[:, plan.eeg_sl] = eeg_buf
        if plan.has_meg:
            out_T[:, plan.meg_sl] = _meg_rows(plan, meg_bufs, n_dip)
        _add_time("kernels", time.perf_counter() - t0)
        return work
    # BEM: infinite-medium potentials at the nodes (and the primary field),
    # then the BEM correction for all channels as one matrix product
    from mne.transforms import apply_trans

    mri_rr = np.ascontiguousarray(apply_trans(plan.head_mri, rr_head))
    q_mri = None
    if fixed:  # head direction e_k is mri_Q[k] in MRI (MNE: diff @ mri_Q.T)
        q_mri = np.ascontiguousarray(nn_head @ plan.mri_Q)
    n_nodes = plan.nodes.shape[1]
    if work is None or work.shape[0] < n_dip or work.dtype != dtype:
        work = np.empty((n_dip, n_nodes), dtype)
    v0 = work[:n_dip]

    single = dtype == np.float32
    # the primary field goes straight into the float64 near-field buffer
    # (float32 output), or into a coil buffer added after the product
    direct = plan.has_meg and plan.meg_post is None
    if single:  # the nearest nodes' terms are done in float64 (_k_near_field)
        near_out = np.empty((n_dip, plan.n_ch))
        if fixed:
            q_near = np.ascontiguousarray(q_mri[:, np.newaxis])
        else:
            q_near = np.ascontiguousarray(np.broadcast_to(plan.mri_Q, (n_src, 3, 3)))
    if single and direct:
        prim_out = near_out  # (MEG columns come first)
    elif plan.has_meg:
        prim_out = np.empty((n_dip, plan.meg_n_coils))
    add = single and direct  # the primary field adds to the near-field terms

    def fun(a, b):
        if fixed:
            kernels.inf_pots_fixed(mri_rr[a:b], q_mri[a:b], plan.nodes, v0[a:b])
        else:
            kernels.inf_pots_free(
                mri_rr[a:b], plan.mri_Q, plan.nodes, v0[3 * a : 3 * b]
            )
        if single:  # (zero-initialises its rows of near_out)
            kernels.near_field(
                mri_rr[a:b], q_near[a:b], plan.nodes, plan.near_table,
                plan.near_grid, plan.sol_T, v0[n_ori * a : n_ori * b],
                near_out[n_ori * a : n_ori * b],
            )  # fmt: skip
        if not plan.has_meg:
            return
        for _, rmag, cw, cols in plan.meg_groups:
            if fixed:
                kernels.prim_fixed(
                    rr_head[a:b], nn_head[a:b], rmag, cw, cols, add, prim_out[a:b]
                )
            else:
                kernels.prim_free(
                    rr_head[a:b], rmag, cw, cols, add, prim_out[3 * a : 3 * b]
                )

    fun(0, n_src)
    t1 = time.perf_counter()
    # (numpy releases the GIL during the product; scipy's BLAS wrappers don't)
    np.matmul(v0, plan.sol_T32 if single else plan.sol_T, out=out_T)
    t2 = time.perf_counter()
    if plan.has_meg and not add:
        prim = prim_out if direct else prim_out @ plan.meg_post
        (near_out if single else out_T)[:, plan.meg_sl] += prim
    if single:  # sum in float64, rounded once
        np.add(near_out, out_T, out=out_T, casting="same_kind")
    t3 = time.perf_counter()
    _add_time("kernels", t1 - t0 + t3 - t2)
    _add_time("gemm", t2 - t1)
    return work


def _meg_rows(plan, meg_bufs, n_dip):
    """Coil-group buffers -> MEG channel columns (x mu0/4pi, compensation)."""
    buf = np.empty((n_dip, plan.meg_n_coils))
    for (coils, *_), gbuf in zip(plan.meg_groups, meg_bufs):
        buf[:, coils] = gbuf
    buf *= _MAG_FACTOR
    if plan.meg_post is not None:
        buf = buf @ plan.meg_post
    return buf


def _chunks_task(plan, rr_head, nn_head, bounds, dtype):
    """Consecutive chunks in a joblib/dask worker: (n_ch, n_dip) F-ordered.

    ``bounds`` are the chunks' (start, stop), relative to ``rr_head``; the
    arithmetic per chunk is the in-process one, with one BLAS thread.
    """
    from threadpoolctl import threadpool_limits

    n_ori = 1 if nn_head is not None else 3
    out = np.empty((plan.n_ch, n_ori * len(rr_head)), dtype, order="F")
    work = None
    with threadpool_limits(limits=1, user_api="blas"):
        for a, b in bounds:
            work = _compute_chunk(
                plan,
                rr_head[a:b],
                None if nn_head is None else nn_head[a:b],
                out[:, n_ori * a : n_ori * b].T,
                dtype,
                work,
            )
    return out


# #############################################################################
# Public API




def _to_head(plan, rr, nn):
    """MRI -> head coordinates, as MNE's SourceSpaces._transform_to."""
    from mne.transforms import apply_trans

    rr_head = apply_trans(plan.mri_head, rr)
    nn_head = None if nn is None else apply_trans(plan.mri_head, nn, False)
    return rr_head, nn_head


def _default_chunk(plan, n_src, n_ori, dtype):
    """~16 MB of work buffer per chunk, and at least one chunk per CPU."""
    per_dip = np.dtype(dtype).itemsize * (
        plan.nodes.shape[1] if not plan.is_sphere else plan.n_ch
    )
    by_mem = int(max(64, _CHUNK_BYTES // (per_dip * n_ori)))
    by_cpu = -(-n_src // _n_cpus())
    return max(1, min(by_mem, by_cpu))


def _get_parallel(parallel, n_jobs):
    """Return a joblib.Parallel (or None to compute in-process)."""
    import joblib

    if parallel is None:
        if n_jobs is None or n_jobs == 1:
            return None
        return joblib.Parallel(n_jobs=n_jobs, return_as="generator")
    if isinstance(parallel, joblib.Parallel):
        return parallel
    _validate_type(parallel, (str, joblib.Parallel), "parallel")
    _check_option(
        "parallel", parallel, ("loky", "threading", "multiprocessing", "dask")
    )
    if parallel == "dask":
        try:
            from distributed import get_client

            get_client()
        except Exception as exc:
            raise RuntimeError(
                "parallel='dask' needs an active dask.distributed Client (create "
                f"one with distributed.Client(...) first): {exc}"
            ) from None
    with joblib.parallel_config(backend=parallel):
        return joblib.Parallel(
            n_jobs=-1 if n_jobs is None else n_jobs, return_as="generator"
        )


@verbose
def compute_gain(
    info,
    trans,
    bem,
    rr_mri,
    nn_mri=None,
    *,
    meg=True,
    eeg=True,
    n_jobs=None,
    dtype=np.float64,
    chunk_size=None,
    parallel=None,
    verbose=None,
):
    """Compute an MEG/EEG gain matrix with the fast engine.

    Gives the same numbers as :func:`mne.make_forward_solution` for a discrete
    source space at ``rr_mri`` (``sol['data']``, free orientation) or its
    fixed-orientation version along ``nn_mri``, to ~1e-12 relative error in
    float64.

    Parameters
    ----------
    info : mne.Info | path-like
        Measurement info (sensor definitions and ``dev_head_t``).
    trans : path-like | mne.transforms.Transform | None
        The MRI <-> head transform, as in :func:`mne.make_forward_solution`.
    bem : path-like | mne.bem.ConductorModel
        A BEM solution (1- or 3-layer, linear collocation) or a sphere model
        from :func:`mne.make_sphere_model`.
    rr_mri : ndarray, shape (n_sources, 3)
        Source positions in metres, MRI (surface RAS) frame. Sources are not
        checked against the inner skull: drop them first (:func:`check_inside`).
    nn_mri : ndarray, shape (n_sources, 3) | None
        Source orientations (MRI frame; normalised here). None computes the
        three head-frame components per source (free orientation).
    meg, eeg : bool
        Include MEG / EEG channels (as in :func:`mne.make_forward_solution`).
    n_jobs : int | None
        Number of joblib workers over chunks of sources. None or 1 computes in
        this process with one thread per available core (each thread computes
        whole chunks: numba kernels, then a single-threaded BLAS product).
    dtype : numpy dtype
        ``np.float64`` (default) or ``np.float32``. float32 halves the memory
        and about halves the time; max relative column error vs float64 below
        1e-5 (2-6e-6 measured, see ``benchmarks/README.md``).
    chunk_size : int | None
        Sources per chunk. None picks ~16 MB of work buffer per chunk (and at
        least one chunk per core). For a given ``chunk_size`` the result is
        bitwise identical whatever ``n_jobs`` and ``parallel`` are; different
        chunk sizes differ by BLAS rounding only (~1e-16 relative).
    parallel : None | str | joblib.Parallel
        How chunks are distributed: None (in-process unless ``n_jobs > 1``,
        which uses joblib's active backend, e.g. the one MNE-BIDS-Pipeline
        configures), ``'loky'``, ``'threading'``, ``'multiprocessing'``,
        ``'dask'`` (needs an active ``distributed.Client``), or a
        :class:`joblib.Parallel` instance. The result does not depend on it.
    %(verbose)s

    Returns
    -------
    gain : ndarray, shape (n_channels, n_sources) or (n_channels, 3 * n_sources)
        SI gain (T/Am for magnetometers, T/m/Am for planar gradiometers, V/Am
        for EEG). Rows are the channels in the order of
        :func:`mne.make_forward_solution` (MEG then EEG, see
        :func:`gain_ch_names`); columns are sources, or ``[x, y, z]`` head-frame
        components per source when ``nn_mri`` is None. Fortran-ordered (like
        MNE's ``sol['data']``): each column is contiguous.

    Notes
    -----
    Like :func:`mne.make_forward_solution` (``on_inside='raise'``), raises a
    RuntimeError if a MEG sensor is inside the scalp (3-layer BEM), the inner
    skull (1-layer BEM) or the outer sphere shell.
    """
    _validate_type(meg, bool, "meg")
    _validate_type(eeg, bool, "eeg")
    dtype = np.dtype(dtype)
    _check_option("dtype", dtype.name, ("float64", "float32"))
    rr, nn = _check_sources(rr_mri, nn_mri)
    if chunk_size is not None:
        chunk_size = _ensure_int(chunk_size, "chunk_size")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    runner = _get_parallel(parallel, n_jobs)
    t0 = time.perf_counter()
    plan = _make_plan(info, trans, bem, meg=meg, eeg=eeg, n_jobs=n_jobs)
    _add_time("setup", time.perf_counter() - t0)
    if not plan.is_sphere and dtype == np.float32:
        plan.sol_T32 = plan.sol_T.astype(np.float32)
        plan.near_table, plan.near_grid = _near_table(plan.nodes.T)
    rr_head, nn_head = _to_head(plan, rr, nn)
    n_ori = 1 if nn is not None else 3
    n_src = len(rr)
    if chunk_size is None:
        chunk_size = _default_chunk(plan, n_src, n_ori, dtype)
    bounds = np.arange(0, n_src, int(chunk_size)).tolist() + [n_src]
    bounds = list(zip(bounds[:-1], bounds[1:]))
    out = np.empty((plan.n_ch, n_ori * n_src), dtype, order="F")
    model = "sphere" if plan.is_sphere else f"{len(plan.nodes.T)}-node BEM"
    logger.info(
        f"Fast engine: {plan.n_ch} channels x {n_src} sources "
        f"({'fixed' if nn is not None else 'free'} orientation, {model}, "
        f"{dtype.name}, {len(bounds)} chunk{'s' if len(bounds) != 1 else ''})"
    )
    show = logger.level <= logging.INFO and len(bounds) >= 16
    pbar = ProgressBar(
        len(bounds), mesg="Gain chunks", which_tqdm=None if show else "off"
    )
    with pbar:
        if runner is None:
            _run_threads(plan, rr_head, nn_head, out, bounds, n_ori, dtype, pbar)
        else:
            from threadpoolctl import threadpool_limits

            _get_kernels()  # load/compile once here, before workers start
            tasks = _group_chunks(bounds, runner, n_jobs, plan.n_ch * n_ori, dtype)
            # (single-threaded BLAS here too, for thread-based backends)
            with threadpool_limits(limits=1, user_api="blas"):
                results = runner(
                    _delayed_chunks(plan, rr_head, nn_head, group, dtype)
                    for group in tasks
                )
                done = 0
                for group, res in zip(tasks, results):
                    a, b = group[0][0], group[-1][1]
                    out[:, n_ori * a : n_ori * b] = res
                    done += len(group)
                    pbar.update(done)
    return out


def _run_threads(plan, rr_head, nn_head, out, bounds, n_ori, dtype, pbar):
    """Compute the chunks on a pool of threads, each with single-threaded BLAS."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from threadpoolctl import threadpool_limits

    local = threading.local()

    def task(a, b):
        local.work = _compute_chunk(
            plan,
            rr_head[a:b],
            None if nn_head is None else nn_head[a:b],
            out[:, n_ori * a : n_ori * b].T,
            dtype,
            getattr(local, "work", None),
        )

    n_threads = min(_n_cpus(), len(bounds))
    with threadpool_limits(limits=1, user_api="blas"):
        if n_threads == 1:
            for ci, (a, b) in enumerate(bounds):
                task(a, b)
                pbar.update(ci + 1)
            return
        with ThreadPoolExecutor(n_threads, thread_name_prefix="laminar-gain") as ex:
            futures = [ex.submit(task, a, b) for a, b in bounds]
            for ci, fut in enumerate(as_completed(futures)):
                fut.result()
                pbar.update(ci + 1)


def _group_chunks(bounds, runner, n_jobs, bytes_per_src, dtype):
    """Group consecutive chunks into joblib tasks.

    Few tasks, so that the plan (a few MB) is sent a few times per worker,
    not once per chunk; but at most ~64 MB of result per task, and at least
    4 tasks per worker for load balance.
    """
    import joblib

    n_workers = getattr(runner, "n_jobs", None) or n_jobs or -1
    try:
        n_workers = joblib.effective_n_jobs(n_workers)
    except Exception:  # pragma: no cover (exotic backends)
        n_workers = _n_cpus()
    n_src = bounds[-1][1]
    total = n_src * bytes_per_src * np.dtype(dtype).itemsize
    n_tasks = int(max(4 * max(n_workers, 1), np.ceil(total / 64e6)))
    n_tasks = min(n_tasks, len(bounds))
    edges = np.linspace(0, len(bounds), n_tasks + 1).round().astype(int)
    return [bounds[e0:e1] for e0, e1 in zip(edges[:-1], edges[1:]) if e1 > e0]


def _delayed_chunks(plan, rr_head, nn_head, group, dtype):
    import joblib

    a, b = group[0][0], group[-1][1]
    rel = [(c0 - a, c1 - a) for c0, c1 in group]
    nn = None if nn_head is None else nn_head[a:b]
    return joblib.delayed(_chunks_task)(plan, rr_head[a:b], nn, rel, dtype)


@verbose
def gain_ch_names(info, *, meg=True, eeg=True, verbose=None):
    """Channel names of the gain rows, in :func:`mne.make_forward_solution` order.

    Parameters
    ----------
    info : mne.Info
        Measurement info.
    meg, eeg : bool
        Include MEG / EEG channels.
    %(verbose)s

    Returns
    -------
    ch_names : list of str
        MEG channels (without reference channels) then EEG channels, as the
        rows of ``fwd['sol']['data']``.
    """
    from ._forward import _gain_picks

    picks = _gain_picks(info, meg=meg, eeg=eeg)
    return [info["ch_names"][p] for p in picks]


@verbose
def check_inside(bem, trans, rr_mri, mindist=0.0, *, verbose=None):
    """Which sources :func:`mne.make_forward_solution` would keep.

    Reproduces MNE's decisions (inside the inner skull, or the innermost
    sphere, and at least ``mindist`` mm from it) with a fast exact test.

    Parameters
    ----------
    bem : path-like | mne.bem.ConductorModel
        The BEM solution or sphere model.
    trans : path-like | mne.transforms.Transform | None
        The MRI <-> head transform.
    rr_mri : ndarray, shape (n_sources, 3)
        Source positions in metres, MRI (surface RAS) frame.
    mindist : float
        Minimum distance from the inner skull in mm, as in
        :func:`mne.make_forward_solution` (MNE measures it to the nearest
        surface vertex; so does this function).
    %(verbose)s

    Returns
    -------
    keep : ndarray of bool, shape (n_sources,)
        True where MNE keeps the source.
    """
    from mne.bem import ConductorModel, _bem_find_surface, read_bem_solution
    from mne.surface import _CheckInsideSphere
    from mne.transforms import _get_trans, apply_trans, invert_transform

    rr, _ = _check_sources(rr_mri, None)
    mindist = float(mindist)
    if mindist < 0:
        raise ValueError(f"mindist must be >= 0 (mm), got {mindist}")
    _validate_type(bem, ("path-like", ConductorModel), "bem")
    if not isinstance(bem, ConductorModel):
        bem = read_bem_solution(bem, verbose=False)
    mri_head_t, _ = _get_trans(trans)
    # MNE transforms the source space to head coordinates, then (in
    # _filter_source_spaces) back with the inverse transform
    r1s = apply_trans(
        invert_transform(mri_head_t)["trans"], apply_trans(mri_head_t["trans"], rr)
    )
    if bem["is_sphere"]:
        # NB: like MNE 1.13, compares these MRI-frame points with the sphere
        # (whose centre is in head coordinates)
        check = _CheckInsideSphere(bem)
        inside = check(r1s)
    else:
        check = _FastCheckInside(_bem_find_surface(bem, "inner_skull"))
        inside = _inside_surface(check, r1s)
    if mindist > 0.0:
        idx = np.where(inside)[0]
        check_r1s = r1s[idx]
        if check.inner_r is not None:
            mask = (
                np.linalg.norm(check_r1s - check.center, axis=-1)
                >= check.inner_r - mindist / 1000.0
            )
            idx = idx[mask]
            check_r1s = check_r1s[mask]
        dists = check.query(check_r1s)[0]
        inside[idx[dists < mindist / 1000.0]] = False
    logger.info(f"    {inside.sum()}/{len(rr)} sources kept")
    return inside
