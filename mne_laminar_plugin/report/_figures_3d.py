"""MBP's 3D report figures without MNE's Qt backend: offscreen VTK or 2D matplotlib.

MNE's ``Report.add_trans`` (coregistration) and ``Report.add_stc`` (source
estimate) draw with MNE's Qt 3D backend, which needs an X display. When the
run's rendering path (:mod:`._render`) is ``offscreen`` or ``2d``,
:func:`report_3d_figures` replaces those two methods, for the duration of an
MBP step, by :func:`add_trans` and :func:`add_stc` here, which draw the same
content (head, MEG helmet and sensors, digitised points, cortex; source
amplitudes on the inflated cortex) as a *scene* of meshes and points, either
with VTK off screen (EGL/OSMesa, no X) or as matplotlib orthographic
projections (painter's algorithm). Captions say which and why.
"""

from __future__ import annotations

import dataclasses
import html
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from mne.utils import logger

from . import viz

#: camera direction (from the focal point) and view-up, MRI (RAS) coordinates
VIEWS = {
    "left": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "right": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "front": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "back": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "top": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "bottom": ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
}
COREG_VIEWS = ("left", "front", "right", "top")
#: decimation grid (mm) of meshes drawn with matplotlib
_MPL_GRID_MM = 2.5
_STC_DEFAULT_N_TIMES = 5


@dataclasses.dataclass
class Mesh:
    """A triangle mesh of a scene (positions in mm)."""

    rr: np.ndarray
    tris: np.ndarray
    color: tuple = (0.8, 0.8, 0.8)
    opacity: float = 1.0
    values: np.ndarray | None = None  # per vertex; NaN drawn in ``color``
    cmap: str = "hot"
    clim: tuple[float, float] | None = None


@dataclasses.dataclass
class Points:
    """A point set of a scene (positions in mm)."""

    rr: np.ndarray
    color: tuple
    size: float = 6.0  # pixels (VTK); matplotlib marker area size**2 / 6
    label: str = ""


# --------------------------------------------------------------- renderers
def _basis(view: str):
    direction, up = (np.asarray(v, float) for v in VIEWS[view])
    right = np.cross(up, direction)
    return right, up, direction


def _decimate(rr: np.ndarray, tris: np.ndarray, grid_mm: float):
    """Vertex clustering on a grid: fewer triangles, same shape (for matplotlib).

    Returns the new positions, triangles and each old vertex's cluster (None
    when the mesh is small enough as it is).
    """
    if len(tris) < 4000:
        return rr, tris, None
    key = np.floor(rr / grid_mm).astype(np.int64)
    _, cluster, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    cluster = cluster.ravel()
    centers = np.zeros((len(counts), 3))
    np.add.at(centers, cluster, rr)
    centers /= counts[:, None]
    new = cluster[tris]
    keep = (new[:, 0] != new[:, 1]) & (new[:, 1] != new[:, 2]) & (new[:, 0] != new[:, 2])
    new = np.unique(np.sort(new[keep], axis=1), axis=0)
    return centers, new, cluster


def _vertex_colors(mesh: Mesh) -> np.ndarray:
    from matplotlib import colormaps

    n = len(mesh.rr)
    rgba = np.tile([*mesh.color[:3], mesh.opacity], (n, 1)).astype(float)
    if mesh.values is not None:
        vals = np.asarray(mesh.values, float)
        ok = np.isfinite(vals)
        lo, hi = mesh.clim if mesh.clim is not None else (np.nanmin(vals), np.nanmax(vals))
        scaled = np.clip((vals[ok] - lo) / max(hi - lo, 1e-30), 0, 1)
        rgba[ok, :3] = colormaps[mesh.cmap](scaled)[:, :3]
    return rgba


def render_matplotlib(
    meshes: Sequence[Mesh], points: Sequence[Points], views: Sequence[str], *,
    size=(400, 400), title: str = "", label: str = "",
) -> np.ndarray:  # fmt: skip
    """Orthographic projections of a scene, one panel per view (matplotlib, Agg).

    Triangles of all meshes are sorted by depth and drawn back to front
    (painter's algorithm) with Lambert shading; points are drawn on top.
    ``label`` is written under the panels. Returns one RGB image.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    dpi = 100
    ncols = min(len(views), 2 if len(views) == 4 else len(views))
    nrows = -(-len(views) // ncols)
    fig = Figure(
        figsize=(size[0] * ncols / dpi, size[1] * nrows / dpi + 0.5), dpi=dpi,
        layout="constrained",
    )  # fmt: skip
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    prepared = []
    for mesh in meshes:
        rgba = _vertex_colors(mesh)
        rr, tris, cluster = _decimate(mesh.rr, mesh.tris, _MPL_GRID_MM)
        if cluster is not None:  # decimated: average colours per cluster
            summed = np.zeros((len(rr), 4))
            np.add.at(summed, cluster, rgba)
            rgba = summed / np.bincount(cluster, minlength=len(rr))[:, None]
        p0, p1, p2 = rr[tris[:, 0]], rr[tris[:, 1]], rr[tris[:, 2]]
        normal = np.cross(p1 - p0, p2 - p0)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-30
        prepared.append((rr[tris], normal, rgba[tris].mean(axis=1)))
    all_pts = np.concatenate([m.rr for m in meshes] + [p.rr for p in points if len(p.rr)])
    center = (all_pts.min(0) + all_pts.max(0)) / 2
    half = (all_pts.max(0) - all_pts.min(0)).max() / 2 * 1.05
    for ax, view in zip(axes, views):
        right, up, direction = _basis(view)
        polys, depths, colors = [], [], []
        for tri_rr, normal, rgba in prepared:
            rel = tri_rr - center
            polys.append(np.stack([rel @ right, rel @ up], axis=-1))
            depths.append((rel @ direction).mean(axis=1))
            shade = 0.35 + 0.65 * np.abs(normal @ direction)
            col = rgba.copy()
            col[:, :3] *= shade[:, None]
            colors.append(col)
        if polys:
            polys_a, depth_a, col_a = (np.concatenate(x) for x in (polys, depths, colors))
            order = np.argsort(depth_a)  # far first
            ax.add_collection(
                PolyCollection(polys_a[order], facecolors=col_a[order], edgecolors="none")
            )
        for pts in points:
            if not len(pts.rr):
                continue
            rel = pts.rr - center
            ax.scatter(rel @ right, rel @ up, s=pts.size**2 / 6, color=pts.color,
                       label=pts.label or None, zorder=3, edgecolors="none")  # fmt: skip
        ax.set_xlim(-half, half)
        ax.set_ylim(-half, half)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(view, fontsize=9)
    for ax in axes[len(views):]:
        ax.set_axis_off()
    if any(p.label for p in points):
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=8)
    if title or label:
        fig.suptitle(
            "\n".join(t for t in (title, label) if t), fontsize=9, color="black"
        )
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def render_vtk(
    meshes: Sequence[Mesh], points: Sequence[Points], views: Sequence[str], *,
    size=(400, 400), title: str = "",
) -> np.ndarray:  # fmt: skip
    """The scene rendered with VTK off screen (pyvista), one tile per view."""
    import pyvista as pv

    pl = viz.new_plotter(size)  # (pyvista: the meshes and points below)
    try:
        for mesh in meshes:
            faces = np.column_stack([np.full(len(mesh.tris), 3), mesh.tris]).ravel()
            poly = pv.PolyData(np.asarray(mesh.rr, float), faces)
            # render=False everywhere: one render per view, by the screenshot
            if mesh.values is None:
                pl.add_mesh(poly, color=mesh.color, opacity=mesh.opacity, smooth_shading=True,
                            render=False)  # fmt: skip
            else:
                poly.point_data["rgb"] = (_vertex_colors(mesh)[:, :3] * 255).astype(np.uint8)
                pl.add_mesh(poly, scalars="rgb", rgb=True, opacity=mesh.opacity,
                            smooth_shading=True, render=False)  # fmt: skip
        for pts in points:
            if len(pts.rr):
                pl.add_points(np.asarray(pts.rr, float), color=pts.color,
                              point_size=pts.size, render_points_as_spheres=True,
                              render=False)  # fmt: skip
        images = []
        for view in views:
            _, up, direction = _basis(view)
            pl.view_vector(direction, viewup=up, render=False)
            pl.camera.view_angle = viz._VIEW_ANGLE  # zoom() narrowed it for the last view
            pl.reset_camera(render=False)
            pl.camera.zoom(1.25)
            text = pl.add_text(f"{title} ({view})" if title else view, font_size=8,
                               color="black", render=False)  # fmt: skip
            images.append(np.asarray(pl.screenshot(return_img=True))[..., :3].copy())
            pl.remove_actor(text)
    finally:
        pl.close()
    return viz.image_grid(images, ncols=2 if len(images) == 4 else len(images))


def render_scene(path, meshes, points, views, *, size=(400, 400), title=""):
    """Render with VTK when the path allows 3D, else as labelled projections."""
    if path.is_3d:
        try:
            return render_vtk(meshes, points, views, size=size, title=title)
        except Exception as exc:  # the probe succeeded: should not happen
            logger.info(f"Offscreen VTK rendering failed ({exc}); drawing 2D projections")
    return render_matplotlib(
        meshes, points, views, size=size, title=title, label=two_d_label(path)
    )


def two_d_label(path) -> str:
    """The label of a 2D replacement figure."""
    why = path.reason if path.kind == "2d" and path.reason else "3D rendering failed"
    return f"2D projections, not a 3D view: {why}"


def caption_note(path) -> str:
    """What drew a replaced figure, and why (for the report caption)."""
    if path.kind == "2d":
        return (
            f"Drawn by mne-laminar as 2D matplotlib projections because this machine "
            f"cannot render 3D ({path.reason}). Installing Xvfb or an EGL/OSMesa "
            "library (e.g. Debian's libegl1 + libgl1-mesa-dri) gives MNE's 3D view."
        )
    return (
        f"Drawn by mne-laminar with offscreen VTK ({path.detail}) because MNE's Qt "
        "3D backend needs an X display and none is available; installing Xvfb "
        "gives MNE's own view."
    )


# ------------------------------------------------------------------ scenes
def _read_mesh_mm(fname: Path):
    import mne

    if fname.suffix == ".fif":
        surf = mne.read_bem_surfaces(fname, verbose="error")[0]
        return surf["rr"] * 1e3, surf["tris"]
    rr, tris = mne.read_surface(fname, verbose="error")[:2]
    return rr, tris


def _head_surface(subject: str, subjects_dir: Path):
    bem = Path(subjects_dir) / subject / "bem"
    for name in (f"{subject}-head-dense.fif", f"{subject}-head-medium.fif",
                 f"{subject}-head.fif", "outer_skin.surf"):  # fmt: skip
        if (bem / name).is_file():
            return _read_mesh_mm(bem / name)
    return None


def _head_mri_t(trans, subject, subjects_dir):
    import mne
    from mne.io.constants import FIFF

    if isinstance(trans, str | Path) and str(trans) not in ("fsaverage", "auto"):
        trans = mne.read_trans(trans)
    elif not isinstance(trans, mne.transforms.Transform):
        trans = mne.read_trans(
            Path(subjects_dir) / subject / "bem" / f"{subject}-trans.fif"
        )
    if trans["from"] == FIFF.FIFFV_COORD_MRI:
        trans = mne.transforms.invert_transform(trans)
    return trans


def coreg_scene(info, trans, subject: str, subjects_dir) -> tuple[list, list]:
    """Head, cortex, MEG helmet and sensors, EEG electrodes, digitised points (MRI mm)."""
    import mne
    from mne.io.constants import FIFF

    subjects_dir = Path(subjects_dir)
    head_mri = _head_mri_t(trans, subject, subjects_dir)
    to_mri = head_mri["trans"].copy()
    to_mri[:3, 3] *= 1e3
    meshes, points = [], []
    head = _head_surface(subject, subjects_dir)
    if head is not None:
        meshes.append(Mesh(head[0], head[1], color=(0.9, 0.75, 0.65), opacity=0.35))
    for hemi in ("lh", "rh"):
        fname = subjects_dir / subject / "surf" / f"{hemi}.pial"
        if fname.is_file():
            rr, tris = _read_mesh_mm(fname)
            meshes.append(Mesh(rr, tris, color=(0.75, 0.75, 0.75)))
    meg = mne.pick_types(info, meg=True, ref_meg=False, exclude=())
    if len(meg):
        try:
            helmet = mne.surface.get_meg_helmet_surf(info, head_mri, verbose="error")
            meshes.append(Mesh(helmet["rr"] * 1e3, helmet["tris"], color=(0.0, 0.25, 0.5),
                               opacity=0.15))  # fmt: skip
        except Exception as exc:  # unknown system: sensors alone
            logger.info(f"No MEG helmet surface ({exc})")
        dev_head = info["dev_head_t"]["trans"] if info["dev_head_t"] is not None else np.eye(4)
        locs = np.array([info["chs"][k]["loc"][:3] for k in meg])
        pos = mne.transforms.apply_trans(to_mri @ _scale_t(dev_head), locs * 1e3)
        points.append(Points(pos, color=(0.1, 0.3, 0.9), size=8, label="MEG sensors"))
    eeg = mne.pick_types(info, meg=False, eeg=True, exclude=())
    if len(eeg):
        locs = np.array([info["chs"][k]["loc"][:3] for k in eeg]) * 1e3
        points.append(Points(mne.transforms.apply_trans(to_mri, locs), color=(0.9, 0.8, 0.0),
                             size=10, label="EEG electrodes"))  # fmt: skip
    dig = [d for d in (info["dig"] or []) if d["coord_frame"] == FIFF.FIFFV_COORD_HEAD]
    extra = np.array([d["r"] for d in dig if d["kind"] == FIFF.FIFFV_POINT_EXTRA]) * 1e3
    if len(extra):
        points.append(Points(mne.transforms.apply_trans(to_mri, extra), color=(0.85, 0.1, 0.1),
                             size=5, label="head shape points"))  # fmt: skip
    names = {FIFF.FIFFV_POINT_LPA: ("LPA", (0.6, 0.0, 0.6)),
             FIFF.FIFFV_POINT_NASION: ("nasion", (0.0, 0.6, 0.0)),
             FIFF.FIFFV_POINT_RPA: ("RPA", (0.9, 0.5, 0.0))}  # fmt: skip
    for d in dig:
        if d["kind"] == FIFF.FIFFV_POINT_CARDINAL and d["ident"] in names:
            name, color = names[d["ident"]]
            rr = mne.transforms.apply_trans(to_mri, np.asarray(d["r"])[None] * 1e3)
            points.append(Points(rr, color=color, size=16, label=name))
    if not meshes:
        raise FileNotFoundError(
            f"No head or cortex surface of subject {subject!r} in {subjects_dir}"
        )
    return meshes, points


def _scale_t(t: np.ndarray) -> np.ndarray:
    """A metre transform acting on mm."""
    out = np.array(t, float)
    out[:3, 3] *= 1e3
    return out


def stc_scenes(stc, subject, subjects_dir, n_time_points):
    """One scene per time point: |stc| on the inflated cortex of each hemisphere."""
    import mne
    from scipy.spatial import cKDTree

    subjects_dir = Path(subjects_dir)
    n = int(n_time_points or _STC_DEFAULT_N_TIMES)
    n = max(1, min(n, len(stc.times)))
    idx = np.unique(np.rint(np.linspace(0, len(stc.times) - 1, n)).astype(int))
    data = np.abs(stc.data)
    lo, hi = np.percentile(data, [96, 99.95])
    if hi <= lo:
        hi = lo + 1e-30
    hemis = []
    offset = 0
    for k, hemi in enumerate(("lh", "rh")):
        verts = stc.vertices[k] if k < len(stc.vertices) else np.array([], int)
        rows = np.arange(offset, offset + len(verts))
        offset += len(verts)
        if not len(verts):
            continue
        surf_dir = subjects_dir / subject / "surf"
        kind = "inflated" if (surf_dir / f"{hemi}.inflated").is_file() else "white"
        rr, tris = mne.read_surface(surf_dir / f"{hemi}.{kind}", verbose="error")[:2]
        if kind == "inflated":  # hemispheres side by side, as MNE's Brain does
            rr = rr.copy()
            rr[:, 0] -= rr[:, 0].max() + 2.5 if hemi == "lh" else rr[:, 0].min() - 2.5
        nearest = cKDTree(rr[verts]).query(rr)[1]
        hemis.append((hemi, rr, tris, rows[nearest]))
    scenes = []
    for t in idx:
        meshes = []
        for hemi, rr, tris, src_row in hemis:
            vals = data[src_row, t].astype(float)
            vals[~(vals > lo)] = np.nan  # below the threshold: grey cortex
            meshes.append(Mesh(rr, tris, color=(0.7, 0.7, 0.7), values=vals, cmap="hot",
                               clim=(lo, hi)))  # fmt: skip
        scenes.append((float(stc.times[t]), meshes))
    return scenes, (lo, hi)


# ----------------------------------------------------- Report replacements
def add_trans(report, trans, *, info, title, subject=None, subjects_dir=None,
              alpha=None, coord_frame="mri", plot_kwargs=None,
              tags=("coregistration",), section=None, replace=False, path=None):  # fmt: skip
    """``mne.Report.add_trans`` drawn without MNE's Qt backend (same signature)."""
    import mne

    from ._render import decide_in_process

    path = decide_in_process() if path is None else path
    subjects_dir = mne.utils.get_subjects_dir(subjects_dir, raise_error=True)
    subject = subject if subject is not None else report.subject
    if not isinstance(info, mne.Info):
        info = mne.io.read_info(info, verbose="error")
    meshes, points = coreg_scene(info, trans, subject, subjects_dir)
    img = render_scene(path, meshes, points, COREG_VIEWS, title="Sensor alignment")
    try:
        dists = mne.dig_mri_distances(info, _head_mri_t(trans, subject, subjects_dir),
                                      subject, subjects_dir=subjects_dir,
                                      on_defects="ignore", verbose="error")  # fmt: skip
        caption = (
            f"Average distance from {len(dists)} digitized points to head: "
            f"{1e3 * np.mean(dists):.2f} mm. "
        )
    except Exception:
        caption = ""
    viz.add_figure(report, img, title=title, caption=caption + caption_note(path),
                   tags=tags, section=section, replace=replace)  # fmt: skip


def add_stc(report, stc, title, *, subject=None, subjects_dir=None, n_time_points=None,
            tags=("source-estimate",), replace=False, section=None,
            stc_plot_kwargs=None, path=None):  # fmt: skip
    """``mne.Report.add_stc`` drawn without MNE's Qt backend (same signature)."""
    import mne

    from ._render import decide_in_process

    path = decide_in_process() if path is None else path
    if isinstance(stc, str | os.PathLike):  # a file name or a BIDSPath (MBP)
        stc = mne.read_source_estimate(stc)
    if isinstance(stc, mne.VectorSourceEstimate):
        stc = stc.magnitude()
    subject = subject or stc.subject or report.subject
    subjects_dir = mne.utils.get_subjects_dir(subjects_dir, raise_error=True)
    if not isinstance(stc, mne.SourceEstimate):  # volume or mixed source space
        note = (
            f"{type(stc).__name__} not drawn: MNE's 3D view is not available here "
            f"({path.reason or path.detail or path.kind}) and mne-laminar's "
            "replacement draws surface source estimates only."
        )
        logger.info(f"Report: {title!r}: {note}")
        report.add_html(f"<p>{html.escape(note)}</p>", title=title, tags=tags,
                        section=section, replace=replace)  # fmt: skip
        return
    scenes, (lo, hi) = stc_scenes(stc, subject, subjects_dir, n_time_points)
    images, captions = [], []
    for t, meshes in scenes:
        images.append(render_scene(path, meshes, [], ("left", "right"), size=(360, 300),
                                   title=f"t = {t:.3f} s"))  # fmt: skip
        captions.append(
            f"|source| at t = {t:.3f} s, colour from {lo:.3g} (96th percentile) to "
            f"{hi:.3g}, inflated cortex. " + caption_note(path)
        )
    viz.add_figure(report, images if len(images) > 1 else images[0], title=title,
                   caption=captions if len(captions) > 1 else captions[0],
                   tags=tags, section=section, replace=replace)  # fmt: skip


@contextmanager
def report_3d_figures(path) -> Iterator[None]:
    """Within the block, ``mne.Report`` draws 3D figures the way ``path`` allows.

    For ``display`` and ``xvfb`` nothing changes (MNE's Qt backend). For
    ``offscreen`` and ``2d``, ``Report.add_trans`` and ``Report.add_stc`` are
    replaced by :func:`add_trans` and :func:`add_stc`.
    """
    import mne

    if path.kind in ("display", "xvfb"):
        yield
        return
    orig = {name: getattr(mne.Report, name) for name in ("add_trans", "add_stc")}

    def _trans(self, *args, **kwargs):
        return add_trans(self, *args, path=path, **kwargs)

    def _stc(self, *args, **kwargs):
        return add_stc(self, *args, path=path, **kwargs)

    _trans.__doc__, _stc.__doc__ = orig["add_trans"].__doc__, orig["add_stc"].__doc__
    mne.Report.add_trans, mne.Report.add_stc = _trans, _stc
    try:
        yield
    finally:
        mne.Report.add_trans, mne.Report.add_stc = orig["add_trans"], orig["add_stc"]
