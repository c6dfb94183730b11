"""End to end: the demo through `mne-laminar run` (loky and dask), a second plugin.

These run MNE-BIDS-Pipeline for real on the offline demo dataset: MBP's
preprocessing, sensor and source stages, then the laminar stage.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mne_laminar_plugin import bids
from mne_laminar_plugin.demo import N_TRIALS

pytestmark = pytest.mark.slow

SECTIONS = ("Laminar surfaces", "Laminar leadfield", "Anatomical predictors",
            "Laminar model comparison", "Laminar accuracy")
#: caption of an MBP 3D figure replaced by 2D projections
TWO_D = "Drawn by mne-laminar as 2D matplotlib projections"


@pytest.fixture(scope="module")
def loky_run(pipeline_run):
    return pipeline_run


def _demo_config_value(name):
    """A value of the packaged demo config (the run's config)."""
    import ast

    from mne_laminar_plugin.demo import config_template

    for node in ast.parse(config_template()).body:
        if isinstance(node, ast.Assign) and node.targets[0].id == name:
            return ast.literal_eval(node.value)
    raise KeyError(name)


def _n_stc_images():
    """Source-estimate images of MBP's report: time points x conditions."""
    return len(_demo_config_value("conditions")) * _demo_config_value("report_stc_n_time_points")


def _laminar_files(bids_root: Path, subject: str) -> list[Path]:
    root = bids.deriv_root(bids_root) / f"sub-{subject}"
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_all_with_loky_runs_mbp_then_laminar(loky_run):
    demo, res = loky_run
    out = res.stdout + res.stderr
    # MBP's stages ran, then ours, in order
    order = [out.index(s) for s in ("preprocessing/_07_make_epochs", "source/_04_make_forward",
                                    "laminar/_01_layer_surfaces", "laminar/_02_leadfield",
                                    "laminar/_03_predictors", "laminar/_04_model_comparison",
                                    "laminar/_05_accuracy")]
    assert order == sorted(order)
    for subject in demo.subjects:
        mbp = demo.deriv_root / f"sub-{subject}" / "meg"
        assert (mbp / f"sub-{subject}_fwd.fif").is_file()
        assert (mbp / f"sub-{subject}_inv.fif").is_file()
        files = [p.name for p in _laminar_files(demo.bids_root, subject)]
        assert any(n.endswith(".surf.gii") for n in files), files
        assert any("leadfield" in n for n in files), files
        assert any(n.endswith("_predictors.tsv") for n in files), files
        # the demo config turns the accuracy simulation on (one map per SNR, hemi)
        assert any(n.endswith("_desc-laminar_accuracy.tsv") for n in files), files
        n_snr = len(np.atleast_1d(_demo_config_value("laminar_accuracy_snr_db")))
        assert sum("_run-" in n and n.endswith("_desc-accuracy_stat.func.gii")
                   for n in files) == 2 * n_snr  # fmt: skip
        report = (mbp / f"sub-{subject}_report.html").read_text(encoding="utf-8")
        for section in SECTIONS:
            assert section in report, section
        # MBP's own sections are still there
        assert "Sensor alignment" in report and "Forward solution" in report
        # MNE_LAMINAR_3D=2d reached the loky workers: the coregistration and
        # the source-estimate time points of every condition are labelled 2D
        assert report.count(TWO_D) == 1 + _n_stc_images(), report.count(TWO_D)
    lines = [ln for ln in out.splitlines() if "3D figures:" in ln]
    assert lines == ["mne-laminar: 3D figures: 2D matplotlib projections instead of 3D views; "
                     "MNE_LAMINAR_3D=2d"]  # fmt: skip
    # MBP's xlsx log has our steps' sheets
    import openpyxl

    logs = list(demo.deriv_root.glob("*_log.xlsx"))
    assert logs
    sheets = openpyxl.load_workbook(logs[0], read_only=True).sheetnames
    assert any(s.startswith("laminar-") for s in sheets), sheets


def test_model_comparison_equals_the_library(loky_run):
    """The step's TSV/JSON = compare_layers on the same files; the demo's layer
    condition is recovered at its column within one layer, strong evidence."""
    import json

    import mne
    import numpy as np
    import pandas as pd

    from mne_laminar_plugin import LaminarSurfaces, compare_layers
    from mne_laminar_plugin.leadfield import read_leadfield

    demo, _ = loky_run
    truth = json.loads((demo.bids_root / "sourcedata" / "demo_truth.json").read_text())
    root = bids.deriv_root(demo.bids_root)
    for subject in demo.subjects:
        tsv = root / f"sub-{subject}" / "meg" / f"sub-{subject}_task-demo_desc-laminar_evidence.tsv"
        df = pd.read_csv(tsv, sep="\t", na_values="n/a")
        side = json.loads(tsv.with_suffix(".json").read_text())
        assert side["free_energy"]["Units"] == "nats" and side["Method"] == "msp"
        assert side["PatchFWHM"] == 5.0 and side["TemporalModes"] == 4
        assert set(df["condition"]) == {"stim", "layer"} == set(side["Conditions"])
        assert set(df["prior"]) == set(side["Priors"]) == {
            "best", "label/lh.demo_roi.label", "label/lh.demo_column.label"}
        surf = LaminarSurfaces.load(root, subject, spacing="oct5", verbose="error")
        lf = read_leadfield(root / f"sub-{subject}" / "meg"
                            / f"sub-{subject}_desc-laminar_leadfield.h5", verbose="error")
        mbp = demo.deriv_root / f"sub-{subject}" / "meg"
        cov = mne.read_cov(mbp / f"sub-{subject}_proc-clean_cov.fif", verbose="error")
        rank = json.loads((mbp / f"sub-{subject}_proc-clean_rank.json").read_text())
        evokeds = {e.comment: e for e in mne.read_evokeds(
            mbp / f"sub-{subject}_task-demo_ave.fif", verbose="error")}
        for (cond, prior, window), rows in df.groupby(["condition", "prior", "window"]):
            rec = side["Priors"][prior]
            assert (rows["column"] == rec["column"]).all()
            assert (surf.vertno[rec["column"]], surf.hemi[rec["column"]]) == (
                rec["vertex"], rec["hemi"])
            kw = dict(surfaces=surf, prior=rec["column"], rank=rank, patch_fwhm=5.0)
            if window == "whole":
                ev = compare_layers(evokeds[cond], lf, cov, woi=(0.05, 0.15),
                                    n_temporal_modes=4, **kw)
                assert side["WindowOfInterest"] == list(ev.woi)
                F = rows.sort_values("layer")["free_energy"].to_numpy()
            else:
                ev = compare_layers(evokeds[cond], lf, cov, windows=(50.0, 10.0),
                                    n_temporal_modes=1, **kw)
                F = rows.pivot(index="layer", columns="time", values="free_energy").to_numpy()
                np.testing.assert_allclose(np.sort(rows["time"].unique()), ev.times)
            np.testing.assert_allclose(F, ev.free_energy, rtol=1e-12, atol=1e-9)
            np.testing.assert_allclose(rows.sort_values(["layer", "time"])["delta_f"],
                                       ev.delta_f.ravel(), atol=1e-9)
        # the demo's single-layer source, at its column (the demo_column ROI prior)
        src = truth["subjects"][subject]["layer_source"]
        assert side["Priors"]["label/lh.demo_column.label"]["vertex"] == src["vertex"]
        whole = df[(df["condition"] == "layer") & (df["window"] == "whole")
                   & (df["prior"] == "label/lh.demo_column.label")]
        win = whole[whole["best"]]
        assert len(win) == 1 and abs(int(win["layer"].iloc[0]) - src["layer"]) <= 1, whole
        F = whole.sort_values("layer")["free_energy"].to_numpy()
        far = np.abs(np.arange(len(F)) - src["layer"]) >= 2
        assert F[src["layer"]] - F[far].max() > 3.0, F  # strong vs layers 2+ away
        report = (mbp / f"sub-{subject}_report.html").read_text(encoding="utf-8")
        assert "Winning layers, task demo" in report and "ΔF per layer: layer" in report


def test_bids_validator_on_laminar_derivatives(loky_run):
    demo, _ = loky_run
    exe = shutil.which("bids-validator-deno")
    if exe is None:
        pytest.skip("bids-validator-deno not installed")
    import subprocess

    res = subprocess.run([exe, str(bids.deriv_root(demo.bids_root)), "--ignoreWarnings"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:]


def test_laminar_with_dask_gives_identical_results(loky_run):
    from conftest import run_cli

    demo, _ = loky_run
    before = {
        s: {p.relative_to(demo.bids_root): p.read_bytes()
            for p in _laminar_files(demo.bids_root, s) if p.suffix == ".tsv"}
        for s in demo.subjects
    }
    assert all(before.values())
    cfg = demo.config_path.with_name("demo_config_dask.py")
    cfg.write_text(
        demo.config_path.read_text()
        + textwrap.dedent(
            """
            parallel_backend = "dask"
            dask_worker_memory_limit = "4G"
            n_jobs = 2
            """
        )
    )
    for tsv in (p for s in before for p in before[s]):
        (demo.bids_root / tsv).unlink()
    res = run_cli("run", str(cfg), "--steps", "laminar", "--no-cache",
                  env={"_MNE_BIDS_STUDY_TESTING": "true"})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    assert "dask" in out.lower()
    for subject, files in before.items():
        for rel, content in files.items():
            assert (demo.bids_root / rel).read_bytes() == content, rel


def test_second_plugin_stage_through_the_cli(loky_run, tmp_path):
    """An independent package registers its own stage and runs through MBP."""
    from conftest import run_cli

    demo, _ = loky_run
    site = tmp_path / "site"
    pkg = site / "hello_mbp_plugin"
    (pkg / "steps" / "hello").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "steps" / "__init__.py").write_text("")
    (pkg / "steps" / "hello" / "__init__.py").write_text(
        "from . import _01_count_events\n_STEPS = (_01_count_events,)\n"
    )
    (pkg / "steps" / "hello" / "_01_count_events.py").write_text(textwrap.dedent(
        '''
        """Count epochs per subject (a tiny third-party MBP step)."""
        from types import SimpleNamespace

        import mne
        from mne_bids import BIDSPath
        from mne_bids_pipeline._config_utils import _bids_kwargs, _get_ss
        from mne_bids_pipeline._logging import gen_log_kwargs, logger
        from mne_bids_pipeline._parallel import get_parallel_backend, parallel_func
        from mne_bids_pipeline._run import _prep_out_files, failsafe_run, save_logs


        def _epo(cfg, subject, session):
            return BIDSPath(subject=subject, session=session, task=cfg.task,
                            processing="clean", suffix="epo", extension=".fif",
                            datatype=cfg.datatype, root=cfg.deriv_root, check=False)


        def get_input_fnames_count(*, cfg, subject, session):
            return dict(epochs=_epo(cfg, subject, session))


        @failsafe_run(get_input_fnames=get_input_fnames_count)
        def count(*, cfg, exec_params, subject, session, in_files):
            epochs = mne.read_epochs(in_files.pop("epochs"), verbose="error")
            out = _epo(cfg, subject, session).update(
                processing=None, suffix="hello", extension=".txt")
            out.fpath.write_text(f"{len(epochs)} {cfg.hello_greeting}\\n")
            logger.info(**gen_log_kwargs(message=f"counted {len(epochs)} epochs"))
            return _prep_out_files(exec_params=exec_params, out_files=dict(hello=out))


        def get_config(*, config, subject, session):
            return SimpleNamespace(task=config.task, hello_greeting=config.hello_greeting,
                                   **_bids_kwargs(config=config))


        def main(*, config):
            ss = _get_ss(config=config)
            with get_parallel_backend(config.exec_params):
                parallel, run_func = parallel_func(count, exec_params=config.exec_params,
                                                   n_iter=len(ss))
                logs = parallel(run_func(cfg=get_config(config=config, subject=s, session=ses),
                                         exec_params=config.exec_params, subject=s, session=ses)
                                for s, ses in ss)
            save_logs(config=config, logs=logs)
        '''))
    (pkg / "plugin.py").write_text(textwrap.dedent(
        '''
        from mne_laminar_plugin.pipeline.host import ConfigOption, StepGroup, hookimpl


        @hookimpl
        def mbp_register_steps():
            from .steps import hello
            return [StepGroup(stage="hello", modules=hello._STEPS)]


        @hookimpl
        def mbp_config_options():
            return {"hello_greeting": ConfigOption(str, "hi", "What to write.")}
        '''))
    info = site / "hello_mbp_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-mbp-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[mne_bids_pipeline.plugins]\nhello = hello_mbp_plugin.plugin\n"
    )
    cfg = demo.config_path.with_name("demo_config_hello.py")
    cfg.write_text(demo.config_path.read_text() + '\nhello_greeting = "bonjour"\n')
    env = {"PYTHONPATH": str(site), "_MNE_BIDS_STUDY_TESTING": "true"}
    res = run_cli("info", env=env)
    assert "hello: 'hello_mbp_plugin.plugin' from hello-mbp-plugin 0.1" in res.stdout
    assert "hello_greeting: str = 'hi'" in res.stdout
    res = run_cli("run", str(cfg), "--steps", "hello", "--n_jobs", "2", env=env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    for subject in demo.subjects:
        out = demo.deriv_root / f"sub-{subject}" / "meg" / f"sub-{subject}_task-demo_hello.txt"
        n, word = out.read_text().split()
        n_epochs = N_TRIALS * len(_demo_config_value("conditions"))  # every condition
        assert int(n) == n_epochs and word == "bonjour"
    # both plugins coexist: laminar still runs in the same invocation
    res = run_cli("run", str(cfg), "--steps", "hello,laminar/layer_surfaces", env=env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]


def test_demo_headless_without_xvfb(tmp_path):
    """The README's demo on a bare headless node: no DISPLAY, no Xvfb on PATH.

    Whatever OpenGL this machine has (EGL/OSMesa or none), the demo finishes
    and the report has MBP's forward section and the three laminar sections.
    """
    from conftest import path_without_xvfb, run_cli

    res = run_cli("demo", str(tmp_path / "demo"), env={"PATH": path_without_xvfb()},
                  unset=("DISPLAY", "WAYLAND_DISPLAY", "MNE_LAMINAR_3D"))  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    lines = [ln for ln in out.splitlines() if "3D figures:" in ln]
    assert len(lines) == 1, lines
    assert lines[0].startswith(("mne-laminar: 3D figures: offscreen VTK",
                                "mne-laminar: 3D figures: 2D matplotlib"))  # fmt: skip
    assert "no X display and no Xvfb on PATH" in lines[0]
    report = tmp_path / "demo/bids/derivatives/mne-bids-pipeline/sub-01/meg/sub-01_report.html"
    assert f"Report: {report}" in out
    html = report.read_text(encoding="utf-8")
    for section in (*SECTIONS, "Forward solution", "Sensor alignment", "BEM"):
        assert section in html, section
    # MBP's coregistration and source figures, drawn without MNE's Qt backend
    assert html.count("Drawn by mne-laminar") == 1 + _n_stc_images()
    # the data-building phase reported its progress
    assert "Demo dataset written in" in out and "Building the demo dataset" in out


def test_xvfb_path_draws_with_mne_3d(loky_run):
    """With Xvfb on PATH and no DISPLAY, MNE's own 3D backend draws MBP's figures."""
    from conftest import run_cli

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb not installed (the Debian package xvfb)")
    demo, _ = loky_run
    res = run_cli("run", str(demo.config_path), "--steps", "source/make_forward", "--no-cache",
                  env={"_MNE_BIDS_STUDY_TESTING": "true"},
                  unset=("DISPLAY", "WAYLAND_DISPLAY", "MNE_LAMINAR_3D"))  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    lines = [ln for ln in out.splitlines() if "3D figures:" in ln]
    assert len(lines) == 1 and "MNE's 3D backend on a private Xvfb" in lines[0], lines
    for subject in demo.subjects:
        report = demo.deriv_root / f"sub-{subject}" / "meg" / f"sub-{subject}_report.html"
        html = report.read_text(encoding="utf-8")
        # the coregistration is MNE's again (its caption has no replacement note);
        # the 3 source-estimate images of the 2D run are still 2D
        assert "Sensor alignment" in html and "Forward solution" in html
        assert html.count(TWO_D) == _n_stc_images(), html.count(TWO_D)
