"""Benchmark: the four anatomical predictors for 11 layers x 300k columns.

Synthetic data of paper size (whole cortex at full resolution): 300,000
columns x 11 layers (3.3 M sources), a float32 leadfield of 64 channels
(0.85 GB) and two scalps: MNE's bundled fsaverage head (2,033 vertices) and a
dense ellipsoid (40,962 vertices, like ``-head-dense.fif``). Prints the time
of each predictor (wall and CPU) and of the score.

Run: python benchmarks/bench_predictors.py [n_columns] [n_channels]
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import mne
import numpy as np

from mne_laminar_plugin import predictors as P


def _timed(label, func, *args, **kwargs):
    w0, c0 = time.perf_counter(), time.process_time()
    out = func(*args, **kwargs)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"  {label:<34s} wall {wall:6.2f} s   cpu {cpu:6.2f} s")
    return out, wall


def _surfaces(n_col, n_layers, rng):
    """Columns on a bumpy closed surface ~ 65 mm from the head centre."""
    u = rng.normal(size=(n_col, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    bump = 1 + 0.08 * np.sin(7 * u[:, 0]) * np.cos(5 * u[:, 1]) + 0.05 * np.sin(11 * u[:, 2])
    radii = np.array([0.062, 0.078, 0.068])
    pial = u * radii * bump[:, np.newaxis]
    thick = rng.uniform(1.5e-3, 4.5e-3, n_col)
    white = pial - thick[:, np.newaxis] * u
    frac = np.linspace(1, 0, n_layers)
    layers = white[np.newaxis] + frac[:, np.newaxis, np.newaxis] * (pial - white)
    ori = (white - pial) / thick[:, np.newaxis]
    hemi = np.where(u[:, 0] < 0, "lh", "rh")
    return SimpleNamespace(
        layers=layers, orientations=ori, hemi=hemi, vertno=np.arange(n_col), subject=None
    )


def main(n_col=300_000, n_ch=64, n_layers=11):
    rng = np.random.default_rng(0)
    print(f"Anatomical predictors: {n_layers} layers x {n_col} columns, {n_ch} channels")
    t0 = time.perf_counter()
    surf = _surfaces(n_col, n_layers, rng)
    lf = np.empty((n_ch, n_layers * n_col), np.float32)
    for layer in range(n_layers):  # layer-major blocks
        lf[:, layer * n_col : (layer + 1) * n_col] = rng.standard_normal(
            (n_ch, n_col), dtype=np.float32
        )
    print(f"  synthetic data: {time.perf_counter() - t0:.1f} s, leadfield {lf.nbytes / 1e9:.2f} GB")
    head = mne.read_bem_surfaces(
        mne.__path__[0] + "/data/fsaverage/fsaverage-head.fif", verbose="error"
    )[0]
    centre = head["rr"].mean(axis=0)
    ico = mne.surface._get_ico_surface(6)
    dense_rr = ico["rr"] / np.linalg.norm(ico["rr"], axis=1, keepdims=True)
    dense_rr = dense_rr * np.array([0.080, 0.100, 0.092])
    scalps = {
        f"fsaverage head ({len(head['rr'])} vertices)": (head["rr"], head["tris"]),
        f"dense ellipsoid ({len(dense_rr)} vertices)": (dense_rr + centre, ico["tris"]),
    }
    surf.layers = surf.layers + centre
    total = 0.0
    thick, dt = _timed(
        "thickness", lambda: np.linalg.norm(surf.layers[0] - surf.layers[-1], axis=1) * 1e3
    )
    total += dt
    (lf_diff, meta), dt = _timed("lf_rms_diff", P.leadfield_rms_diff, lf, n_layers)
    total += dt
    for name, (rr, tris) in scalps.items():
        print(f" scalp: {name}")
        (dist, closest, tri), dt_d = _timed(
            "distance (exact closest point)", P.closest_points_on_mesh, surf.layers[0], rr, tris
        )
        nn, dt_n = _timed("radiality (normal at closest point)",
                          P.surface_normals_at, rr, tris, closest, tri)  # fmt: skip
        rad = np.abs(np.einsum("ij,ij->i", nn, surf.orientations))
        print(f"    distance {np.percentile(dist * 1e3, [5, 50, 95]).round(1)} mm, "
              f"radiality median {np.median(rad):.2f}")  # fmt: skip
    for n_jobs in (1, -1):
        pred, dt_all = _timed(
            f"compute_predictors, n_jobs={n_jobs}", P.compute_predictors, surf, lf,
            scalp=scalps[list(scalps)[1]], n_jobs=n_jobs, verbose="error",
        )  # fmt: skip
    _, dt_s = _timed("score + best column", lambda: (pred.score(), pred.best_vertex()))
    print(f"Total, four predictors + score (dense scalp, all cores): {dt_all + dt_s:.2f} s wall")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*args)
