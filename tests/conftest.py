"""Shared fixtures: the demo dataset (built once per session, offline)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MNE_BIDS_PIPELINE_FORCE_TERMINAL", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MNE_TQDM", "off")
# console scripts of this environment (bids-validator-deno, mne-laminar) on PATH
# even when pytest is called by its full path without activating the venv
_bin = str(Path(sys.executable).parent)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The offline demo dataset (1 subject), data only."""
    from mne_laminar_plugin.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    return make_demo_dataset(root, n_subjects=1, seed=42)


def run_cli(*args: str, cwd: str | os.PathLike | None = None, env: dict | None = None,
            timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run ``mne-laminar`` in a subprocess (as a user would) and capture output."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mne_laminar_plugin.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def cli():
    return run_cli


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _mne_log_level():
    """MBP's config import sets MNE's log level for the process; reset it so
    that ``mne.utils.warn`` warnings reach ``pytest.warns`` in every test."""
    import mne

    old = mne.set_log_level("warning", return_old_level=True)
    yield
    mne.set_log_level(old)


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """The 2-subject demo through `mne-laminar run --steps all` (loky, n_jobs=2).

    One full MBP run shared by the end-to-end tests: MBP's preprocessing,
    sensor and source stages, then the laminar stage, with a group template
    ``tmpl`` (a copy of sub-01's spheres) so that the group step runs too.
    """
    import shutil

    from mne_laminar_plugin.demo import make_demo_dataset

    demo = make_demo_dataset(tmp_path_factory.mktemp("demo2"), n_subjects=2, seed=7)
    tpl = demo.subjects_dir / "tmpl" / "surf"
    tpl.mkdir(parents=True, exist_ok=True)
    for hemi in ("lh", "rh"):
        for kind in ("sphere.reg", "inflated", "pial"):
            shutil.copy(demo.subjects_dir / "sub-01" / "surf" / f"{hemi}.{kind}", tpl)
    with open(demo.config_path, "a") as fid:
        fid.write('\nlaminar_group_template = "tmpl"\n')
    res = run_cli("run", str(demo.config_path), "--steps", "all", "--n_jobs", "2",
                  env={"_MNE_BIDS_STUDY_TESTING": "true"})
    assert res.returncode == 0, (res.stdout[-5000:], res.stderr[-5000:])
    return demo, res
