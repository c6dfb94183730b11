"""
.. _tut-leadfield:

03. Leadfield construction: random, simulate and load
=====================================================

This mirrors the seed tutorial "Leadfield Construction" with this package: the
three retrieval modes of :class:`~mne_laminar_plugin.LeadfieldBuilder`
(``random``, ``simulate`` and ``load``), fixed and free orientation, units and
metadata, and the column-norm quality plot. Unlike the seed, ``simulate`` here
is the real MNE forward model of every layer of the demo subject.
"""

# %%
from tempfile import TemporaryDirectory

import matplotlib.pyplot as plt
import numpy as np
from mne.io.constants import FIFF

from mne_laminar_plugin import LaminarSurfaces, LeadfieldBuilder, get_data_path
from mne_laminar_plugin.cli import main as mne_laminar

RANDOM_SEED = 23
demo_dir = get_data_path() / "demo"
if not (demo_dir / "bids" / "derivatives" / "mne-laminar").is_dir():
    assert mne_laminar(["demo", str(demo_dir)]) == 0  # builds it once (tutorial 01)
bids_root = demo_dir / "bids"
subjects_dir = bids_root / "derivatives" / "freesurfer" / "subjects"
mbp_meg = bids_root / "derivatives" / "mne-bids-pipeline" / "sub-01" / "meg"

# %%
# Random retrieval mode
# ---------------------
# A standard-normal matrix for testing shape logic, marked synthetic, in
# arbitrary units.
builder = LeadfieldBuilder()
random_fixed = builder.get_leadfield(
    subject="demo", orientation_type="fixed", retrieve_mode="random",
    n_sensors=12, n_sources=24, return_metadata=True, random_state=RANDOM_SEED,
)
random_free = builder.get_leadfield(
    subject="demo", orientation_type="free", retrieve_mode="random",
    n_sensors=12, n_sources=24, return_metadata=True, random_state=RANDOM_SEED,
)
print("random fixed shape:", random_fixed.leadfield.shape)
print("random free shape:", random_free.leadfield.shape)
assert random_fixed.leadfield.shape == (12, 24)
assert random_free.leadfield.shape == (12, 24, 3)
print("synthetic:", random_fixed.synthetic, "units:", sorted(set(random_fixed.units)))

# %%
# Simulate retrieval mode
# -----------------------
# The MNE forward of all 11 layers of every column in one computation, on the
# demo subject's layer surfaces, the BEM solution, head<->MRI transform and
# sensors MBP made. Columns with a layer closer than ``mindist`` to the inner
# skull are dropped in every layer.
surfaces = LaminarSurfaces.from_freesurfer("sub-01", subjects_dir, n_layers=11, spacing="oct5")
sim = LeadfieldBuilder(
    surfaces=surfaces,
    bem=subjects_dir / "sub-01" / "bem" / "sub-01-5120-bem-sol.fif",
    trans=mbp_meg / "sub-01_trans.fif",
    info=mbp_meg / "sub-01_task-demo_ave.fif",
    mindist=5.0,
    engine="fast",
)
fixed = sim.get_leadfield("sub-01", "fixed", "simulate", return_metadata=True)
free = sim.get_leadfield("sub-01", "free", "simulate", return_metadata=True)
print(fixed)
print("free shape:", free.leadfield.shape)
for ch_type in ("mag", "grad"):
    pick = [i for i, t in enumerate(fixed.ch_types) if t == ch_type]
    print(f"{len(pick)} {ch_type} channels in {fixed.units[pick[0]]}")
print(f"{len(fixed.dropped_columns)} columns dropped, e.g. {fixed.dropped_reasons[0]!r}")

# %%
# The fixed leadfield is the free one projected on each column's orientation:
assert np.allclose(free.fixed().leadfield, fixed.leadfield, rtol=1e-6, atol=1e-9)

# %%
# Load retrieval mode
# -------------------
# The seed's load example: write a leadfield in CaliBrain's npz layout to a
# folder, then load it back through the same ``get_leadfield`` call.
rng = np.random.default_rng(RANDOM_SEED)
n_sensors, n_sources = 12, 24
source_positions = rng.normal(scale=0.04, size=(n_sources, 3))
sensor_positions = rng.normal(scale=0.08, size=(n_sensors, 3))
distances = np.linalg.norm(sensor_positions[:, None] - source_positions[None], axis=2)
simulated_leadfield = 1.0 / np.maximum(distances, 0.02) ** 2
simulated_leadfield *= rng.choice([-1.0, 1.0], size=simulated_leadfield.shape)
simulated_leadfield /= np.linalg.norm(simulated_leadfield, axis=0, keepdims=True)

tmpdir = TemporaryDirectory()
np.savez(
    f"{tmpdir.name}/demo_subject_fixed_leadfield.npz",
    leadfield=simulated_leadfield,
    sensor_kind=FIFF.FIFFV_MEG_CH,
    sensor_units=FIFF.FIFF_UNIT_T,
    sensor_unitmult=FIFF.FIFF_UNITM_F,
    coil_type=FIFF.FIFFV_COIL_VV_MAG_T1,
    src_coords=source_positions,
)
loaded = LeadfieldBuilder(leadfield_dir=tmpdir.name).get_leadfield(
    subject="demo_subject", orientation_type="fixed", retrieve_mode="load",
    return_metadata=True,
)
equal = np.allclose(loaded.leadfield, simulated_leadfield)
print("loaded shape:", loaded.leadfield.shape)
print("loaded equals simulate-like:", equal)
assert loaded.leadfield.shape == (12, 24) and equal

# %%
# The pipeline's own leadfield file loads the same way (``fname=`` names it):
lam_meg = bids_root / "derivatives" / "mne-laminar" / "sub-01" / "meg"
h5 = sorted(lam_meg.glob("*_desc-laminar_leadfield.h5"))[0]
from_step = LeadfieldBuilder(leadfield_dir=lam_meg).load("sub-01", fname=h5)
print(from_step)

# %%
# Leadfield magnitude check
# -------------------------
# The seed's quality-control plot, per channel type and coloured by layer:
# deeper layers have smaller norms than superficial ones in every column.
from mne_laminar_plugin.leadfield import plot_column_norms

fig = plot_column_norms(fixed)

# %%
fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
ax.plot(np.linalg.norm(random_fixed.leadfield, axis=0), label="random fixed")
ax.plot(np.linalg.norm(simulated_leadfield, axis=0), label="simulate-like fixed")
ax.plot(np.linalg.norm(loaded.leadfield, axis=0), "--", label="loaded fixed")
ax.set(xlabel="Source index", ylabel="Leadfield column norm", title="Leadfield magnitude check")
_ = ax.legend(loc="best")
