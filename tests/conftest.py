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
            timeout: float = 1800, unset: tuple = ()) -> subprocess.CompletedProcess:
    """Run ``mne-laminar`` in a subprocess (as a user would) and capture output.

    ``env`` adds to (or replaces in) this process's environment, ``unset``
    names variables to remove.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    for key in unset:
        full_env.pop(key, None)
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


def path_without_xvfb() -> str:
    """``PATH`` minus every directory holding an ``Xvfb`` (as on a bare headless node).

    The directory of this Python comes first, so ``mne-laminar`` is found.
    """
    keep = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not (Path(d) / "Xvfb").exists()]  # fmt: skip
    return os.pathsep.join([str(Path(sys.executable).parent), *keep])


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
    3D figures are forced to the 2D fallback (``MNE_LAMINAR_3D=2d``), so that
    the fallback is checked in loky workers (2 subjects, ``n_jobs=2``); the
    other paths are checked by ``test_e2e.py``'s Xvfb and headless-demo tests.
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
                  env={"_MNE_BIDS_STUDY_TESTING": "true", "MNE_LAMINAR_3D": "2d"})
    assert res.returncode == 0, (res.stdout[-5000:], res.stderr[-5000:])
    return demo, res
