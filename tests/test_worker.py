"""The figure worker of the laminar steps, and the rest of the run's start-up.

Real worker processes (``python -m mne_laminar_plugin.report._worker``), real
offscreen renders, real MBP hooks: what the worker returns equals what this
process draws; without it (disabled, dead, busy) everything is drawn here;
it never outlives its run; MBP's system information and logs come out as
MBP writes them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from mne_laminar_plugin.report import _render, _worker, viz

_ENV = (_render.RENDER_ENV, _render._REASON_ENV, _render._DETAIL_ENV, _render._OPENGL_ENV,
        "VTK_DEFAULT_OPENGL_WINDOW", "DISPLAY", _worker.WORKER_ENV)  # fmt: skip


@pytest.fixture
def decided(monkeypatch):
    """This process decided the rendering path (as ``mne-laminar`` does); a fresh worker."""
    saved = {key: os.environ.get(key) for key in _ENV}
    os.environ.pop("DISPLAY", None)
    os.environ.pop(_worker.WORKER_ENV, None)
    for key in _ENV[:5]:
        os.environ.pop(key, None)
    _worker.shutdown()
    path = _render.decide_in_process()
    yield path
    _worker.shutdown()
    for key, val in saved.items():
        if val is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = val


def _started():
    """The worker, started and given the decision (as render_3d does)."""
    _worker.prestart()
    _worker.sync_environ()
    worker = _worker.get_worker(start=False)
    worker.system_info.result(timeout=120)
    return worker


def _sphere(n=2):
    import mne.surface

    surf = mne.surface._get_ico_surface(n)
    return surf["rr"] * 0.05, surf["tris"]  # metres


def _map_kwargs():
    rr, tris = _sphere(3)
    return dict(rr_m=rr, tris=tris, values=rr[:, 2].copy(), title="z", views=("lateral",),
                size=(160, 120), hemi="lh")  # fmt: skip


def test_worker_draws_what_this_process_draws(decided):
    """Surface maps and matplotlib figures: the worker's images are this process's."""
    kwargs = _map_kwargs()
    job = viz.submit_surface_map(**kwargs)
    worker = _worker.get_worker(start=False)
    assert worker is not None and worker.alive
    from_worker = job.result()
    here = viz.plot_surface_map(**kwargs)
    assert len(from_worker) == 1 and from_worker[0].shape == (120, 160, 3)
    # same renderer, same settings: the same picture (a reused GL context there)
    assert np.abs(from_worker[0].astype(int) - here[0].astype(int)).mean() < 1.0
    assert from_worker[0].std() > 0
    values = {"a": np.arange(100.0), "b": np.sin(np.arange(100.0))}
    fig = viz.submit_figure(viz.plot_histograms, values, title="t").result()
    np.testing.assert_array_equal(fig, viz.report_image(viz.plot_histograms(values, title="t")))
    # its exceptions come back as they are
    with pytest.raises(ValueError, match="values must have one entry per vertex"):
        viz.submit_surface_map(kwargs["rr_m"], kwargs["tris"], np.ones(3), title="z").result()


def test_a_kept_plotter_keeps_its_lights(decided):
    """The worker's kept plotters draw each map in the same light as a new plotter.

    (``Plotter.clear()`` also removed the light kit: maps after the first were
    drawn flat, and a new plotter drew its first view larger.)
    """
    kwargs = _map_kwargs()
    kwargs.update(views=("lateral", "medial"), backend="pyvista")
    viz._PLOTTERS = {}
    try:
        first = viz.plot_surface_map(**kwargs)
        n_lights = len(viz._PLOTTERS[tuple(kwargs["size"])].renderer.lights)
        assert n_lights > 0
        for values in (None, kwargs["values"] * 2):
            kept = viz.plot_surface_map(**dict(kwargs, values=values))
            assert len(viz._PLOTTERS[tuple(kwargs["size"])].renderer.lights) == n_lights
            saved, viz._PLOTTERS = viz._PLOTTERS, None
            new = viz.plot_surface_map(**dict(kwargs, values=values))
            viz._PLOTTERS = saved
            for kept_view, new_view in zip(kept, new):
                np.testing.assert_array_equal(kept_view, new_view)
        assert first[0].std() > 0
    finally:
        viz._PLOTTERS = None


def test_disabled_worker_draws_here(decided, monkeypatch):
    monkeypatch.setenv(_worker.WORKER_ENV, "0")
    job = viz.submit_figure(viz.plot_histograms, {"a": np.arange(10.0)})
    assert _worker.get_worker(start=False) is None  # none was started
    assert job.result().ndim == 3


def test_a_busy_worker_leaves_queued_figures_to_this_process(decided):
    """Requests wait here until the worker is free; a step takes back what it needs."""
    _started()
    big = {f"x{k}": np.random.default_rng(k).normal(size=1_000_000) for k in range(8)}
    busy = viz.submit_figure(viz.plot_histograms, big, bins=400)  # keeps it busy
    queued = [viz.submit_figure(viz.plot_histograms, {"a": np.arange(float(n))})
              for n in (10, 20, 30)]  # fmt: skip
    futures = [job._future for job in queued]
    # taken from the back: those the worker has not received are drawn here
    images = _worker.results(queued)
    assert all(job._future is None for job in queued)  # none waited for
    assert not any(_worker.withdraw(future) for future in futures)  # none left queued
    for img, n in zip(images, (10, 20, 30)):
        expected = viz.report_image(viz.plot_histograms({"a": np.arange(float(n))}))
        np.testing.assert_array_equal(img, expected)
    assert busy.result().ndim == 3  # the worker's, meanwhile


def test_dead_worker_falls_back_here_and_is_not_restarted(decided):
    worker = _started()
    os.kill(worker._proc.pid, signal.SIGKILL)
    worker._proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while worker.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    job = viz.submit_surface_map(**_map_kwargs())
    assert job.result()[0].std() > 0  # drawn here
    assert _worker.get_worker() is None  # not restarted in this process


_ORPHAN = textwrap.dedent("""
    import os, sys, time
    from mne_laminar_plugin.report import _render, _worker
    _render.decide_in_process()
    _worker.prestart()
    _worker.sync_environ()
    print("WORKER", _worker.get_worker(start=False)._proc.pid, flush=True)
    time.sleep(600)
""")


def test_worker_exits_when_its_run_is_killed(tmp_path):
    """SIGKILL of the run (not of its process group): the worker still ends."""
    proc = subprocess.Popen([sys.executable, "-c", _ORPHAN], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, DISPLAY=""))  # fmt: skip
    pid = int(next(ln for ln in proc.stdout if ln.startswith("WORKER")).split()[1])
    os.kill(pid, 0)  # running
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        try:  # a zombie (reparented, not reaped yet) counts as ended
            with open(f"/proc/{pid}/stat") as fid:
                if fid.read().split(")")[-1].split()[0] == "Z":
                    break
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the worker outlived its run by 30 s")


def test_sys_info_opengl_line_is_mnes_own(decided):
    """The OpenGL strings of the test render are what MNE finds with its own render."""
    import json
    import subprocess
    import sys

    from mne.utils import config

    if decided.kind != "offscreen":
        pytest.skip(f"no offscreen VTK here ({decided.describe()})")
    assert len(decided.opengl) == 2 and all(decided.opengl)
    code = ("import json; from mne.utils.config import _get_gpu_info; "
            "print(json.dumps(list(_get_gpu_info())))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(os.environ)).stdout  # fmt: skip
    assert list(decided.opengl) == json.loads(out.strip().splitlines()[-1])
    orig = config._get_gpu_info
    with _render.known_gpu_info():
        assert config._get_gpu_info() == list(decided.opengl)
    assert config._get_gpu_info is orig
    # the worker's sys_info has MNE's line with them
    version, renderer = decided.opengl
    assert f"(OpenGL {version} via {renderer})" in _started().system_info.result()


def test_system_info_from_the_worker_is_mbp_text(decided):
    text = _started().system_info.result()
    assert _worker.system_info_from_worker() == text
    for line in ("Platform", "Python", "mne ", "numpy", "pyvista"):
        assert line in text, line
    # MBP's cached function takes it (the plugin's patch), MBP's own as the fallback
    from mne_bids_pipeline import _report

    from mne_laminar_plugin.pipeline.plugin import patch_sys_info

    before = _report._cached_sys_info
    orig = getattr(before, "__mne_laminar_orig__", before)  # (another test may have patched)
    try:
        _report._cached_sys_info = orig
        patch_sys_info()
        patch_sys_info()  # idempotent
        assert _report._cached_sys_info.__mne_laminar_orig__ is orig
        assert _report._cached_sys_info() == text
        assert _report._cached_sys_info.cache_info().currsize == 1  # MBP asks this
    finally:
        _report._cached_sys_info = before


def test_blas_limit_applies_in_a_fresh_process():
    """``mne-laminar run`` limits BLAS before numpy is imported: the limit still holds."""
    code = textwrap.dedent("""
        from mne_laminar_plugin.cli import blas_threads
        with blas_threads(None):
            from threadpoolctl import threadpool_info
            print([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"])
    """)
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}  # fmt: skip
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    counts = eval(res.stdout.strip().splitlines()[-1])
    assert counts and set(counts) == {1}, counts  # numpy's (and scipy's) OpenBLAS


def test_child_environ_carries_the_blas_limit():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        env = _worker.child_environ(FOO="bar")
    assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == "1"
    assert env["FOO"] == "bar"


def test_probe_runs_meanwhile_and_cleans_up(monkeypatch):
    calls = []
    ok, info = _render.probe("vtk", env={"DISPLAY": ""}, meanwhile=lambda: calls.append(1))
    assert calls == [1]
    assert ok or isinstance(info, str)

    def boom():
        raise KeyboardInterrupt

    before = set(os.listdir("/proc"))
    with pytest.raises(KeyboardInterrupt):
        _render.probe("vtk", env={"DISPLAY": ""}, meanwhile=boom)
    # the test render was killed and reaped, not left behind
    time.sleep(0.1)
    for pid in set(os.listdir("/proc")) - before:
        try:
            with open(f"/proc/{pid}/cmdline") as fid:
                assert "MNE_LAMINAR_PROBE" not in fid.read()
        except OSError:
            pass


def test_render_3d_is_decided_once_per_process(decided, capsys):
    from mne_laminar_plugin.cli import render_3d

    os.environ.pop(_render.RENDER_ENV, None)
    os.environ.pop(_render._REASON_ENV, None)
    calls = []
    with render_3d(need_mne_3d=False, meanwhile=lambda: calls.append("outer")) as outer:
        with render_3d(need_mne_3d=True, meanwhile=lambda: calls.append("inner")) as inner:
            assert inner is outer
    assert calls == ["outer", "inner"]
    assert capsys.readouterr().out.count("3D figures:") == 1


def test_step_path_found_from_the_frames_as_mbp_does(tmp_path):
    """The patched ``_get_step_path`` answers as MBP's own, and names the log sheet."""
    from pathlib import Path
    from types import SimpleNamespace

    import pandas as pd
    from mne_bids_pipeline import _run

    from mne_laminar_plugin.pipeline.plugin import patch_step_path
    from mne_laminar_plugin.pipeline.steps.laminar import _03_predictors as step

    orig = getattr(_run._get_step_path, "__mne_laminar_orig__", _run._get_step_path)
    try:
        _run._get_step_path = orig
        patch_step_path()
        patch_step_path()  # idempotent
        patched = _run._get_step_path
        assert patched.__mne_laminar_orig__ is orig

        def from_local(func):
            __mne_bids_pipeline_step__ = Path("/x/steps/sensor/_01_make_evoked.py")  # noqa: F841
            return func()

        # a frame of a file under steps/ (as MBP's and this package's step modules)
        code = compile("found = func()", step.__file__, "exec")
        for func in (orig, patched):
            scope = dict(func=func)
            exec(code, scope)
            assert scope["found"] == Path(step.__file__)
            assert from_local(func) == Path("/x/steps/sensor/_01_make_evoked.py")
        config = SimpleNamespace(deriv_root=tmp_path, all_tasks=["demo"], n_jobs=1)
        log = pd.Series(dict(success=True, subject="01", time=1.0))
        scope = dict(save=_run.save_logs, config=config, logs=[log])
        exec(compile("save(config=config, logs=logs)", step.__file__, "exec"), scope)
        sheets = pd.ExcelFile(tmp_path / "task-demo_log.xlsx").sheet_names
        assert "laminar-_03_predictors" in sheets
    finally:
        _run._get_step_path = orig


def test_warm_up_compiles_the_pipeline_kernels():
    """Every numba kernel a demo run compiles is compiled (or loaded) by the warm-up."""
    from mne import _surface_numba, _transforms_numba
    from mne.forward import _compute_forward_numba

    from mne_laminar_plugin.forward import _engine_numba
    from mne_laminar_plugin.forward._warmup import warm_up_kernels

    done = warm_up_kernels()
    assert done == ["raw", "surfaces", "bem", "mne forward", "coregistration", "fast engine"]
    kernels = [_compute_forward_numba._bem_inf_pots, _compute_forward_numba._bem_inf_fields,
               _compute_forward_numba._do_lin_field_coeff, _surface_numba._jit_cross,
               _surface_numba._get_solids, _transforms_numba._fit_matched_points]  # fmt: skip
    if os.environ.get("MNE_USE_NUMBA", "true").lower() == "true":
        for kernel in kernels:
            assert kernel.signatures, kernel
    engine = _engine_numba._get_kernels()
    for name in ("inf_pots_fixed", "prim_fixed", "lin_field_coeff", "ray_winding"):
        assert getattr(engine, name).signatures, name
