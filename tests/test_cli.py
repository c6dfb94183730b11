"""The ``mne-laminar`` command line: every subcommand, bad arguments."""

from __future__ import annotations

import importlib.metadata

import pytest

from mne_laminar_plugin.pipeline.options import OPTIONS


def test_help(cli):
    res = cli("--help")
    assert res.returncode == 0
    for cmd in ("run", "info", "demo", "sys-info"):
        assert cmd in res.stdout
    for sub in ("info", "demo", "sys-info"):
        res = cli(sub, "--help")
        assert res.returncode == 0, res.stderr
        assert f"mne-laminar {sub}" in res.stdout
    res = cli("run", "--help")
    assert res.returncode == 0
    # MBP's own options are listed unchanged
    for opt in ("--steps", "--subject", "--n_jobs", "--no-cache", "--deriv_root"):
        assert opt in res.stdout


def test_version(cli):
    res = cli("--version")
    assert res.returncode == 0
    assert importlib.metadata.version("mne-laminar-plugin") in res.stdout


def test_info_lists_everything(cli):
    res = cli("info")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "laminar: 'mne_laminar_plugin.pipeline.plugin'" in out
    assert "laminar  (plugin laminar; in `all` after source)" in out
    for step in ("laminar/layer_surfaces", "laminar/leadfield", "laminar/predictors"):
        assert step in out
    for name, opt in OPTIONS.items():
        assert f"  {name}: " in out and f"= {opt.default!r}" in out
        assert opt.doc[:40] in out


def test_sys_info(cli):
    res = cli("sys-info")
    assert res.returncode == 0
    for pkg in ("mne:", "mne-bids:", "mne-bids-pipeline:", "numpy:", "nibabel:"):
        assert pkg in res.stdout
    assert importlib.metadata.version("mne-bids-pipeline") in res.stdout


@pytest.mark.parametrize(
    "args, code, message",
    [
        (("bogus",), 2, "invalid choice: 'bogus'"),
        ((), 2, "required: COMMAND"),
        (("run", "no_such_config.py"), 2, "config file not found: 'no_such_config.py'"),
        (("demo", "--subjects", "0", "--no-run", "x"), 2, "--subjects must be >= 1"),
        (("demo", "--subjects", "two"), 2, "invalid int value: 'two'"),
        (("run", "--blas-threads", "two", "c.py"), 2,
         "argument --blas-threads: expected a whole number >= 0 (0: the libraries' "
         "default), got 'two'"),
        (("run", "--blas-threads=-1", "c.py"), 2, "got '-1'"),
        (("demo", "--blas-threads", "x"), 2, "got 'x'"),
    ],
)
def test_bad_arguments(cli, tmp_path, args, code, message):
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == code
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_run_bad_step_is_an_error_not_a_traceback(cli, demo):
    res = cli("run", str(demo.config_path), "--steps", "nonsense",
              env={"_MNE_BIDS_STUDY_TESTING": "false"})
    assert res.returncode == 1
    assert "Invalid step requested: 'nonsense'" in res.stderr
    assert "'laminar'" in res.stderr  # the valid stages include ours
    assert "Traceback" not in res.stderr


def test_plain_mbp_does_not_know_laminar(demo):
    """The host is what adds the stage: plain MBP refuses it."""
    import subprocess
    import sys

    # mne_bids_pipeline._main has no __main__ guard: call main() explicitly
    res = subprocess.run(
        [sys.executable, "-c", "import sys; from mne_bids_pipeline._main import main; "
         f"sys.argv=['mbp', {str(demo.config_path)!r}, '--steps', 'laminar']; main()"],
        capture_output=True, text=True,
    )
    assert res.returncode != 0
    assert "Invalid step requested: 'laminar'" in res.stderr


def test_readme_documents_every_option_and_the_test_command():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    for name, opt in OPTIONS.items():
        assert f"| `{name}` | `{opt.default!r}`".replace("'", '"') in readme, name
    ci = (repo / ".ci" / "run").read_text()
    assert "python -m pytest -q tests" in readme and "python -m pytest -q tests" in ci


def _blas_threads_now() -> list[int]:
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_blas_threads_limit(monkeypatch):
    """``--blas-threads``: 1 by default, the user's environment respected, 0 = no limit."""
    import numpy  # noqa: F401  (loads the BLAS threadpoolctl sees)

    from mne_laminar_plugin.cli import BLAS_THREAD_ENV, blas_threads

    before = _blas_threads_now()
    assert before, "no BLAS library found by threadpoolctl"
    for name in BLAS_THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    with blas_threads(None):
        assert _blas_threads_now() == [1] * len(before)
    assert _blas_threads_now() == before  # restored on exit
    with blas_threads(0):
        assert _blas_threads_now() == before
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with blas_threads(None):  # the user chose: left alone
        assert _blas_threads_now() == before
    with blas_threads(1):  # an explicit limit wins
        assert _blas_threads_now() == [1] * len(before)


def test_demo_steps():
    from mne_laminar_plugin.cli import demo_steps

    assert demo_steps(2) == "all"
    steps = demo_steps(1).split(",")
    # a real MBP run up to the inverse, then laminar; no group average of one subject
    assert steps == ["preprocessing", "sensor/make_evoked", "sensor/make_cov", "source",
                     "laminar"]  # fmt: skip
