"""How 3D report figures are drawn without a display: the decision and its figures.

Fast tests, real probes (subprocess renders) and real MNE reports on the demo
data; the end-to-end runs (the demo with Xvfb hidden from PATH, the Xvfb
path, the 2D path in loky workers) are in ``test_e2e.py``.
"""

from __future__ import annotations

import os
import pickle
import shutil

import mne
import numpy as np
import pytest
from mne_bids import BIDSPath, get_head_mri_trans, read_raw_bids

from conftest import path_without_xvfb

from mne_laminar_plugin.pipeline import _mbp_3d
from mne_laminar_plugin.report import _figures_3d, _render, viz
from mne_laminar_plugin.cli import _needs_mne_3d, render_3d
from mne_laminar_plugin.demo import TASK

_ENV = (_render.RENDER_ENV, _render._REASON_ENV, _render._DETAIL_ENV, _render._OPENGL_ENV,
        "VTK_DEFAULT_OPENGL_WINDOW")  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch):
    """No display, no decision taken yet; every variable restored afterwards.

    (``monkeypatch.delenv`` does not undo what the code under test sets on a
    variable that was absent, e.g. the decision's ``MNE_LAMINAR_3D``.)
    """
    keys = (*_ENV, "DISPLAY", "WAYLAND_DISPLAY", "MNE_3D_OPTION_MULTI_SAMPLES", "PATH")
    saved = {key: os.environ.get(key) for key in keys}
    for key in keys[:-1]:
        os.environ.pop(key, None)
    yield monkeypatch
    for key, val in saved.items():
        if val is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = val


@pytest.fixture(scope="module")
def coreg_inputs(demo):
    bp = BIDSPath(subject="01", task=TASK, datatype="meg", root=demo.bids_root)
    raw = read_raw_bids(bp, verbose="error")
    trans = get_head_mri_trans(bp, fs_subject="sub-01", fs_subjects_dir=demo.subjects_dir,
                               verbose="error")  # fmt: skip
    return raw.info, trans, demo.subjects_dir


def test_forced_2d_draws_labelled_matplotlib_coregistration(clean_env, coreg_inputs, tmp_path):
    info, trans, subjects_dir = coreg_inputs
    clean_env.setenv(_render.RENDER_ENV, "2d")
    path = _render.decide_in_process()
    assert path.kind == "2d" and not path.is_3d
    assert "MNE_LAMINAR_3D=2d" in path.reason
    orig = mne.Report.add_trans
    report = mne.Report(title="sub-01")
    with _figures_3d.report_3d_figures(path):
        # MNE's public API, as MBP's forward step calls it
        report.add_trans(trans=trans, info=info, title="Sensor alignment", subject="sub-01",
                         subjects_dir=subjects_dir, alpha=1, replace=True)  # fmt: skip
    assert mne.Report.add_trans is orig  # restored
    fname = tmp_path / "report.html"
    report.save(fname, open_browser=False, verbose="error")
    html = fname.read_text(encoding="utf-8")
    assert "Sensor alignment" in html
    assert "2D matplotlib projections because this machine cannot render 3D" in html
    assert "(MNE_LAMINAR_3D=2d)" in html
    assert "Average distance from" in html  # MNE's own coregistration check
    assert html.count('src="data:image/png;base64') >= 1


def test_coreg_scene_geometry(coreg_inputs):
    """Sensors outside the head, cortex inside, fiducials where MNE puts them."""
    info, trans, subjects_dir = coreg_inputs
    meshes, points = _figures_3d.coreg_scene(info, trans, "sub-01", subjects_dir)
    head, lh, rh, helmet = meshes
    by_label = {p.label: p for p in points}
    sensors = by_label["MEG sensors"].rr
    assert len(sensors) == 306
    # independent: MNE's own transform of the channel positions
    dev_mri = mne.transforms.combine_transforms(
        info["dev_head_t"], trans, "meg", "mri"
    )
    locs = np.array([ch["loc"][:3] for ch in info["chs"][:306]])
    np.testing.assert_allclose(sensors, mne.transforms.apply_trans(dev_mri, locs) * 1e3,
                               atol=1e-6)  # fmt: skip
    inside = mne.surface._CheckInside(dict(rr=head.rr / 1e3, tris=head.tris))
    assert not inside(sensors / 1e3).any()
    assert inside(lh.rr[::50] / 1e3).mean() > 0.95
    fid_head = {d["ident"]: d["r"] for d in info["dig"] if d["kind"] == 1}
    np.testing.assert_allclose(by_label["nasion"].rr[0],
                               mne.transforms.apply_trans(trans, fid_head[2]) * 1e3,
                               atol=1e-6)  # fmt: skip


def test_forced_2d_source_estimate_in_report(clean_env, demo, tmp_path):
    clean_env.setenv(_render.RENDER_ENV, "2d")
    path = _render.decide_in_process()
    src = mne.setup_source_space("sub-01", "oct3", subjects_dir=demo.subjects_dir,
                                 add_dist=False, verbose="error")  # fmt: skip
    vertices = [s["vertno"] for s in src]
    n = sum(len(v) for v in vertices)
    data = np.zeros((n, 20))
    data[3, 10] = 5.0  # one active source at t = 10 ms
    stc = mne.SourceEstimate(data, vertices, tmin=0.0, tstep=1e-3, subject="sub-01")
    report = mne.Report(title="sub-01")
    stc.save(tmp_path / "sub-01", ftype="h5", verbose="error")
    with _figures_3d.report_3d_figures(path):
        report.add_stc(stc=stc, title="Source", subject="sub-01",
                       subjects_dir=demo.subjects_dir, n_time_points=3, replace=True)  # fmt: skip
        # MBP passes a file name (a BIDSPath, a path-like)
        report.add_stc(stc=tmp_path / "sub-01-stc.h5", title="Source from file",
                       subject="sub-01", subjects_dir=demo.subjects_dir, n_time_points=3)  # fmt: skip
    fname = tmp_path / "report.html"
    report.save(fname, open_browser=False, verbose="error")
    html = fname.read_text(encoding="utf-8")
    assert html.count("2D matplotlib projections because this machine cannot render 3D") == 6
    scenes, _ = _figures_3d.stc_scenes(stc, "sub-01", demo.subjects_dir, 3)
    np.testing.assert_allclose([t for t, _ in scenes], [0.0, 0.010, 0.019])
    # the active source is coloured at 10 ms only, and on its own vertex
    for k, (_, meshes) in enumerate(scenes):
        colored = [np.flatnonzero(np.isfinite(m.values)) for m in meshes]
        if k == 1:
            assert vertices[0][3] in colored[0] and not len(colored[1])
        else:
            assert not any(len(c) for c in colored), k


def test_auto_decision_with_a_real_probe(clean_env, capsys):
    """No display: the real probe decides offscreen VTK or 2D; one log line."""
    clean_env.setenv("PATH", path_without_xvfb())
    with render_3d(allow_xvfb=True, need_mne_3d=True) as path:
        assert os.environ[_render.RENDER_ENV] == path.kind
        assert _render.current_path() == path
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "3D figures:" in ln]
    assert len(lines) == 1 and lines[0].startswith("mne-laminar: 3D figures: ")
    assert _render.RENDER_ENV not in os.environ  # restored
    assert path.kind in ("offscreen", "2d")
    assert "no Xvfb on PATH" in path.reason
    if path.kind == "offscreen":  # what the probe promised works in-process
        assert path.detail.split(",")[0] in ("EGL", "OSMesa")
        with _render.use_path(path):
            mesh = _figures_3d.Mesh(*_icosahedron())
            img = _figures_3d.render_vtk([mesh], [], ("left",), size=(64, 64))
        assert img.shape == (64, 64, 3) and img.std() > 0
    else:
        assert "EGL" in path.reason and "OSMesa" in path.reason


def _icosahedron():
    import mne.surface

    surf = mne.surface._get_ico_surface(2)
    return surf["rr"] * 50.0, surf["tris"]


def test_steps_needing_mne_3d():
    assert _needs_mne_3d(["cfg.py"])  # MBP's default is all
    assert _needs_mne_3d(["cfg.py", "--steps", "all"])
    assert _needs_mne_3d(["cfg.py", "--steps=preprocessing,source/make_forward"])
    assert not _needs_mne_3d(["cfg.py", "--steps", "laminar"])
    assert not _needs_mne_3d(["cfg.py", "--steps", "sensor,laminar/leadfield"])


def test_laminar_only_needs_no_xvfb(clean_env, capsys):
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb not installed")
    with render_3d(allow_xvfb=True, need_mne_3d=False) as path:
        assert path.kind in ("offscreen", "2d")
        assert "DISPLAY" not in os.environ  # no private Xvfb started
    assert "no MBP 3D step requested" in path.reason


def test_no_xvfb_flag_skips_xvfb(clean_env, capsys):
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb not installed")
    with render_3d(allow_xvfb=False, need_mne_3d=True) as path:
        assert "DISPLAY" not in os.environ
    assert path.kind in ("offscreen", "2d")
    assert "no X display (--no-xvfb)" in path.reason
    assert capsys.readouterr().out.count("3D figures:") == 1


def test_invalid_render_env(clean_env):
    clean_env.setenv(_render.RENDER_ENV, "opengl")
    with pytest.raises(ValueError, match="MNE_LAMINAR_3D='opengl' is not valid"):
        _render.requested_path()


def test_surface_map_follows_the_2d_decision(clean_env):
    rr, tris = _icosahedron()
    values = rr[:, 2].copy()
    clean_env.setenv(_render.RENDER_ENV, "2d")
    path = _render.decide_in_process()
    images = viz.plot_surface_map(rr / 1e3, tris, values, title="z", views=("lateral",),
                                  size=(160, 120))  # fmt: skip
    note = f"2D fallback, {viz.MPL_NOTE}: {path.reason}"
    kwargs = dict(title="z", cmap="viridis", clim=viz._clim(values, None), views=["lateral"],
                  hemi="rh", size=(160, 120), label=None)  # fmt: skip
    expected = viz._render_matplotlib(rr, tris, values, note=note, **kwargs)
    np.testing.assert_array_equal(images[0], expected[0])
    unlabelled = viz._render_matplotlib(rr, tris, values, note="", **kwargs)
    assert not np.array_equal(images[0], unlabelled[0])  # the label is drawn


def test_mbp_3d_steps_are_routed_and_picklable():
    import importlib

    from mne_bids_pipeline import __version__

    modules = [importlib.import_module(m) for m, _ in _mbp_3d.MBP_3D_STEPS]
    before = [getattr(mod, f) for mod, (_, f) in zip(modules, _mbp_3d.MBP_3D_STEPS)]
    try:
        patched = _mbp_3d.patch_mbp_3d_steps(__version__)
        assert _mbp_3d.patch_mbp_3d_steps(__version__) == patched  # idempotent
        assert len(patched) == len(_mbp_3d.MBP_3D_STEPS)
        for module, (module_name, func_name) in zip(modules, _mbp_3d.MBP_3D_STEPS):
            func = getattr(module, func_name)
            assert func is getattr(_mbp_3d, func_name)
            # MBP's own (failsafe-wrapped) function is kept for the call
            assert getattr(func, "__mne_laminar_orig__").__module__ == module_name
            # workers receive it by reference (loky and dask pickle it)
            assert pickle.loads(pickle.dumps(func)) is func
        assert _mbp_3d.patch_mbp_3d_steps("1.11.0") == []
    finally:
        for module, (_, func_name), func in zip(modules, _mbp_3d.MBP_3D_STEPS, before):
            setattr(module, func_name, getattr(func, "__mne_laminar_orig__", func))
