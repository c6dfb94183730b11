"""End to end on a non-Vectorview array: the CTF-275 demo through MBP and laminar.

MNE-BIDS-Pipeline runs for real on the offline demo with CTF's axial
gradiometers, reference channels and grade-3 compensation (``mne-laminar demo
--system ctf275``): MBP's preprocessing, sensor and source stages, then the
laminar stage.
"""

from __future__ import annotations

import json

import mne
import numpy as np
import pytest

from mne_laminar_plugin import bids
from mne_laminar_plugin.leadfield import leadfield_fname, read_leadfield

pytestmark = pytest.mark.slow

CTF = "275 CTF axial gradiometer (coil 5001), synthetic gradiometer compensation grade 3"


@pytest.fixture(scope="module")
def ctf_run(tmp_path_factory):
    from conftest import run_cli

    root = tmp_path_factory.mktemp("ctfdemo")
    res = run_cli("demo", str(root), "--system", "ctf275", "--seed", "5",
                  env={"_MNE_BIDS_STUDY_TESTING": "true"})  # fmt: skip
    assert res.returncode == 0, (res.stdout[-5000:], res.stderr[-5000:])
    return root, res


def test_ctf275_demo_through_mbp_and_laminar(ctf_run):
    root, res = ctf_run
    out = res.stdout + res.stderr
    for step in ("source/_04_make_forward", "laminar/_02_leadfield", "laminar/_03_predictors"):
        assert step in out, step
    bids_root = root / "bids"
    raw = mne.io.read_raw_fif(next(bids_root.glob("sub-01/meg/*_meg.fif")), verbose=False)
    assert raw.compensation_grade == 3
    assert len(mne.pick_types(raw.info, meg=False, ref_meg=True)) == 9
    mbp = bids_root / "derivatives" / "mne-bids-pipeline" / "sub-01" / "meg"
    fwd = mne.read_forward_solution(mbp / "sub-01_task-demo_fwd.fif"
                                    if (mbp / "sub-01_task-demo_fwd.fif").is_file()
                                    else next(mbp.glob("*_fwd.fif")), verbose=False)  # fmt: skip
    assert fwd["nchan"] == 275
    lam = bids.deriv_root(bids_root)
    data = read_leadfield(leadfield_fname(lam, "01"))
    assert data.n_sensors == 275 and set(data.ch_types) == {"mag"}
    assert data.provenance["sensors"] == CTF
    # the laminar leadfield's pial layer and MBP's forward see the same compensated
    # sensors: same channel names and order
    assert data.ch_names == fwd["sol"]["row_names"]
    tsv = next((lam / "sub-01" / "anat").glob("*_predictors.tsv"))
    side = json.loads(tsv.with_suffix(".json").read_text())
    assert CTF in json.dumps(side)
    import csv

    with open(tsv, encoding="utf-8") as fid:
        rows = list(csv.DictReader(fid, delimiter="\t"))
    values = np.array([float(r["lf_rms_diff"]) if r["lf_rms_diff"] != "n/a" else np.nan
                       for r in rows])  # fmt: skip
    assert len(values) > 1000 and np.isfinite(values).mean() > 0.9
