"""The documentation: API and option references complete; tutorials run as scripts.

The Sphinx build itself (``python -m sphinx -W``, which executes every
tutorial) runs in ``.ci/run`` after the test suite.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
TUTORIALS = REPO / "tutorials"


def test_every_public_name_is_in_the_api_reference():
    import mne_laminar_plugin

    api = (DOCS / "api.rst").read_text(encoding="utf-8")
    listed = set(re.findall(r"^   (\w+)$", api, flags=re.M))
    public = {name for name in mne_laminar_plugin.__all__ if name != "__version__"}
    assert public - listed == set(), "add these to docs/api.rst"
    assert listed - public == set(), "docs/api.rst lists names that are not public"


def test_option_reference_is_generated_from_the_option_table(tmp_path):
    sys.path.insert(0, str(DOCS))
    try:
        import _docs_ext
    finally:
        sys.path.remove(str(DOCS))
    from mne_laminar_plugin.pipeline.options import OPTIONS

    class App:
        srcdir = str(tmp_path)

    _docs_ext._write_options(App())
    text = (tmp_path / "generated" / "options.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [re.match(r"\| `(\w+)`", r).group(1) for r in rows] == list(OPTIONS)
    for name, opt in OPTIONS.items():
        row = next(r for r in rows if r.startswith(f"| `{name}`"))
        assert f"`{opt.default!r}`" in row


def test_docs_pages_are_in_the_toctree():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    toctree = index.split("```{toctree}", 1)[1].split("```", 1)[0]
    entries = {line.strip() for line in toctree.splitlines() if line.strip() and ":" not in line}
    pages = {p.stem for p in DOCS.glob("*.md") if p.stem != "index"}
    assert pages - entries == set()


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, expected",
    [
        ("plot_02_layer_surfaces.py", ["link-vector orientations: True"]),
        (
            "plot_03_leadfield.py",
            [
                "random fixed shape: (12, 24)",
                "random free shape: (12, 24, 3)",
                "loaded shape: (12, 24)",
                "loaded equals simulate-like: True",
            ],
        ),
        ("plot_04_anatomical_predictors.py", ["Highest anatomical score at column"]),
    ],
)
def test_tutorial_runs_as_a_plain_script(pipeline_run, tmp_path, script, expected):
    """Each tutorial is a plain Python script a user can download and run; the
    seed-mirroring ones print what the seeds print."""
    demo, _ = pipeline_run
    data = tmp_path / "data"
    data.mkdir()
    (data / "demo").symlink_to(demo.root, target_is_directory=True)
    env = dict(os.environ, MNE_LAMINAR_DATA=str(data), MPLBACKEND="Agg")
    res = subprocess.run(
        [sys.executable, str(TUTORIALS / script)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=900,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    for line in expected:
        assert line in res.stdout, res.stdout[-4000:]
