"""Benchmark: layer surfaces of full-resolution hemispheres.

nilearn's fsaverage5 (10,242 vertices per hemisphere) subdivided twice gives
163,842 vertices per hemisphere (FreeSurfer full resolution, like
fsaverage7). Times ``LaminarSurfaces.from_freesurfer`` (reading, medial-wall
mask, 11 layers, orientations, quality checks) with ``spacing="all"``, for
both depth methods and every orientation, plus ``oct6`` subsampling and the
derivative files (save + load).

Run: ``python benchmarks/bench_surfaces.py [--n-subdivide 2] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _fs_fixtures import make_fsaverage5_subject  # noqa: E402

from mne_laminar_plugin.surfaces import (  # noqa: E402
    LaminarSurfaces,
    equivolume_beta,
    vertex_areas,
    vertex_normals,
)


def _best(func, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = func()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-subdivide", type=int, default=2)
    parser.add_argument("--n-layers", type=int, default=11)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n_layers, repeat = args.n_layers, args.repeat

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        fs = make_fsaverage5_subject(tmp / "subjects", "full", n_subdivide=args.n_subdivide)
        n_vert = {h: len(fs.white[h]) for h in ("lh", "rh")}
        print(
            f"subject: {n_vert['lh']:,} + {n_vert['rh']:,} vertices "
            f"(made in {time.perf_counter() - t0:.1f} s); {n_layers} layers, best of {repeat}"
        )

        # the vectorised kernels alone, one hemisphere
        rr_w, rr_p, tris = fs.white["lh"], fs.pial["lh"], fs.tris["lh"]
        t, _ = _best(lambda: vertex_normals(rr_p, tris), repeat)
        print(f"  kernel vertex_normals (lh, {len(tris):,} faces): {t * 1e3:8.1f} ms")
        t, _ = _best(lambda: vertex_areas(rr_p, tris), repeat)
        print(f"  kernel vertex_areas   (lh):                {t * 1e3:8.1f} ms")
        a_p, a_w = vertex_areas(rr_p, tris), vertex_areas(rr_w, tris)
        alpha = 1 - np.linspace(1, 0, n_layers)
        t, _ = _best(lambda: equivolume_beta(alpha, a_p, a_w), repeat)
        print(f"  kernel equivolume_beta (lh, {n_layers} layers):     {t * 1e3:8.1f} ms")

        kw = dict(n_layers=n_layers, verbose=False)
        rows = [
            ("all", "equidistant", "link_vector"),
            ("all", "equivolume", "link_vector"),
            ("all", "equidistant", "pial_normal"),
            ("all", "equidistant", "surface_normal"),
            ("oct6", "equidistant", "link_vector"),
        ]
        surf = None
        for spacing, method, orientation in rows:
            t, s = _best(
                lambda spacing=spacing, method=method, orientation=orientation: (
                    LaminarSurfaces.from_freesurfer(
                        "full", fs.subjects_dir, method=method, spacing=spacing,
                        orientation=orientation, **kw,
                    )  # fmt: skip
                ),
                repeat,
            )
            if spacing == "all" and orientation == "link_vector" and surf is None:
                surf = s
            print(
                f"  from_freesurfer spacing={spacing:<4} {method:<11} {orientation:<14}: "
                f"{t:6.2f} s  ({s.n_columns:,} columns, {s.n_layers * s.n_columns:,} "
                f"sources; dropped {s.qc['dropped_total']})"
            )

        root = tmp / "deriv"
        t, paths = _best(lambda: surf.save(root, "01", verbose=False), 1)
        size = sum(p.stat().st_size for p in paths) / 1e6
        print(f"  save (spacing all): {t:6.2f} s, {len(paths)} files, {size:.0f} MB")
        t, loaded = _best(lambda: LaminarSurfaces.load(root, "01", verbose=False), repeat)
        same = np.array_equal(loaded.layers, surf.layers)
        print(f"  load (spacing all): {t:6.2f} s (exact round trip: {same})")


if __name__ == "__main__":
    main()
