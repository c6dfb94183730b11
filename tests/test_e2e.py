"""End to end: the demo through `mne-laminar run` (loky and dask), a second plugin.

These run MNE-BIDS-Pipeline for real on the offline demo dataset: MBP's
preprocessing, sensor and source stages, then the laminar stage.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from mne_laminar_plugin import bids

pytestmark = pytest.mark.slow

SECTIONS = ("Laminar surfaces", "Laminar leadfield", "Anatomical predictors")


@pytest.fixture(scope="module")
def loky_run(pipeline_run):
    return pipeline_run


def _laminar_files(bids_root: Path, subject: str) -> list[Path]:
    root = bids.deriv_root(bids_root) / f"sub-{subject}"
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_all_with_loky_runs_mbp_then_laminar(loky_run):
    demo, res = loky_run
    out = res.stdout + res.stderr
    # MBP's stages ran, then ours, in order
    order = [out.index(s) for s in ("preprocessing/_07_make_epochs", "source/_04_make_forward",
                                    "laminar/_01_layer_surfaces", "laminar/_02_leadfield",
                                    "laminar/_03_predictors")]
    assert order == sorted(order)
    for subject in demo.subjects:
        mbp = demo.deriv_root / f"sub-{subject}" / "meg"
        assert (mbp / f"sub-{subject}_fwd.fif").is_file()
        assert (mbp / f"sub-{subject}_inv.fif").is_file()
        files = [p.name for p in _laminar_files(demo.bids_root, subject)]
        assert any(n.endswith(".surf.gii") for n in files), files
        assert any("leadfield" in n for n in files), files
        assert any(n.endswith("_predictors.tsv") for n in files), files
        report = (mbp / f"sub-{subject}_report.html").read_text(encoding="utf-8")
        for section in SECTIONS:
            assert section in report, section
        # MBP's own sections are still there
        assert "Sensor alignment" in report and "Forward solution" in report
    # MBP's xlsx log has our steps' sheets
    import openpyxl

    logs = list(demo.deriv_root.glob("*_log.xlsx"))
    assert logs
    sheets = openpyxl.load_workbook(logs[0], read_only=True).sheetnames
    assert any(s.startswith("laminar-") for s in sheets), sheets


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
        assert int(n) == 60 and word == "bonjour"
    # both plugins coexist: laminar still runs in the same invocation
    res = run_cli("run", str(cfg), "--steps", "hello,laminar/layer_surfaces", env=env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
