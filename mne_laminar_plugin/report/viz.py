"""Report figures of the laminar steps, rendered offscreen.

Shared helpers (used by every laminar step):

- :func:`plot_surface_map`: a value per vertex on a triangle mesh, rendered
  with pyvista offscreen (EGL when no display), checked for a blank image,
  falling back to matplotlib ``plot_trisurf`` (Agg, labelled as such), and
  drawn with matplotlib directly when the run's rendering path is ``2d``
  (see :mod:`._render`). Returns RGB images.
- :func:`image_grid`: tile RGB images into one (for one report figure).
- :func:`html_table`: a small escaped HTML table for ``Report.add_html``.
- :func:`add_figure`: ``Report.add_figure`` with the laminar figures' image
  format (:data:`REPORT_IMAGE_FORMAT`).

Layer-surface figures: :func:`plot_layer_slices` (coronal and axial planes
through ``T1.mgz`` with every layer's intersection line, coloured by depth).

Nothing here opens a window or needs Qt: MNE's own 3D (``mne.viz.Brain``)
needs a display and is kept out of the report code on purpose.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence

import numpy as np
from mne.utils import _check_option, logger, warn

from .._conventions import layer_order

#: Camera direction (from the focal point) and view-up of the named views,
#: for the left hemisphere; the right hemisphere mirrors x.
_VIEWS = {
    "lateral": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "medial": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "dorsal": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "ventral": ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
    "anterior": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "posterior": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
}
#: label of surface maps drawn with matplotlib (a 3D projection, not a render)
MPL_NOTE = "matplotlib 3D projection (no OpenGL rendering)"
#: image format of every figure this package adds to a report: PNG encodes about
#: 8 times faster than MNE's default lossless WebP (0.02 s against 0.14 s for an
#: 850 x 500 figure) for about 15 % more bytes, and is just as exact
REPORT_IMAGE_FORMAT = "png"
_PLANES = {"coronal": (1, (0, 2)), "axial": (2, (0, 1)), "sagittal": (0, (1, 2))}
_AXIS_NAMES = "xyz"


def _ensure_offscreen_env() -> None:
    """Without a display, prefer EGL for VTK offscreen rendering.

    Unless the user, or the run's rendering path (EGL or OSMesa, see
    :mod:`._render`), chose already; with a display VTK's default is used.
    """
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def _view_vector(view: str, hemi: str):
    direction, up = _VIEWS[view]
    direction = np.array(direction)
    if hemi == "rh":
        direction[0] *= -1
    return direction, np.array(up)


def _auto_hemi(rr) -> str:
    return "lh" if float(np.mean(rr[:, 0])) < 0 else "rh"


def _check_mesh(rr_m, tris, values):
    rr = np.asarray(rr_m, float)
    tris = np.asarray(tris, np.int64)
    if rr.ndim != 2 or rr.shape[1] != 3:
        raise ValueError(f"rr_m must have shape (n_vertices, 3), got {rr.shape}")
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(f"tris must have shape (n_tris, 3), got {tris.shape}")
    if len(tris) and (tris.min() < 0 or tris.max() >= len(rr)):
        raise ValueError(f"tris must index 0..{len(rr) - 1}")
    if values is not None:
        values = np.asarray(values, float)
        if values.shape != (len(rr),):
            raise ValueError(
                f"values must have one entry per vertex ({len(rr)},), got {values.shape}"
            )
    return rr, tris, values


def _clim(values, clim):
    if values is None:
        return None
    if clim is not None:
        return (float(clim[0]), float(clim[1]))
    finite = values[np.isfinite(values)]
    if not len(finite):
        return (0.0, 1.0)
    lo, hi = np.percentile(finite, [2, 98])
    if hi <= lo:
        hi = lo + 1.0
    return (float(lo), float(hi))


#: plotters kept for reuse by size, in a process that draws many maps (the render
#: worker, :mod:`._worker`): a new GL context compiles its shaders again, about
#: 40 % of a map's time with llvmpipe. Off (None) elsewhere.
_PLOTTERS: dict | None = None
#: VTK's default camera view angle (degrees), restored before each view
_VIEW_ANGLE = 30.0


def new_plotter(size):
    """A white offscreen pyvista plotter of ``size`` (pixels), without multisampling.

    llvmpipe (the usual headless OpenGL) draws MSAA in software: a
    report-sized surface map took 0.2 s with pyvista's 8 samples, 0.12 s with
    1; edges are slightly rougher.
    """
    import pyvista as pv

    pl = pv.Plotter(off_screen=True, window_size=list(size))
    pl.ren_win.SetMultiSamples(1)
    pl.set_background("white")
    # pyvista sets up the camera on a plotter's first screenshot: taken here, on
    # the empty scene, so that a new plotter draws the first view of a map as
    # a kept one does (it drew it about 1.3 times larger)
    pl.screenshot(return_img=True)
    return pl


def _plotter(size):
    """An offscreen plotter of ``size``: a kept one (emptied) or a new one."""
    key = tuple(size)
    if _PLOTTERS is not None and key in _PLOTTERS:
        return _PLOTTERS[key]
    pl = new_plotter(size)
    if _PLOTTERS is not None:
        _PLOTTERS[key] = pl
    return pl


def _render_pyvista(rr_mm, tris, values, *, title, cmap, clim, views, hemi, size, label):
    _ensure_offscreen_env()
    import pyvista as pv

    faces = np.column_stack([np.full(len(tris), 3), tris]).ravel()
    mesh = pv.PolyData(rr_mm, faces)
    images = []
    # one plotter (GL context, uploaded mesh) for every view
    pl = _plotter(size)
    ok = False
    added = []
    try:
        # render=False everywhere: one render per view, by the screenshot
        if values is None:
            added.append(pl.add_mesh(mesh, color="lightgray", smooth_shading=True, render=False))
        else:
            mesh.point_data["values"] = values
            added.append(pl.add_mesh(
                mesh, scalars="values", cmap=cmap, clim=clim, smooth_shading=True,
                nan_color="lightgray", render=False,
                scalar_bar_args=dict(
                    title=label or "", color="black", vertical=False, n_labels=3,
                    fmt="%.3g", position_x=0.2, position_y=0.03, width=0.6, height=0.08,
                ),
            ))  # fmt: skip
        text = pl.add_text("", font_size=9, color="black", render=False)
        added.append(text)
        for view in views:
            text.set_text("upper_left", f"{title} ({hemi} {view})")
            direction, up = _view_vector(view, hemi)
            pl.view_vector(direction, viewup=up, render=False)
            pl.camera.view_angle = _VIEW_ANGLE  # zoom() narrowed it for the last view
            pl.reset_camera(render=False)
            pl.camera.zoom(1.3)
            images.append(np.asarray(pl.screenshot(return_img=True))[..., :3].copy())
        ok = True
    finally:
        if ok and _PLOTTERS is not None:
            # what this map added goes; the GL context and the lights stay, so a
            # kept plotter draws the next map as a new one would
            # (Plotter.clear() would also remove the light kit: flat maps)
            for actor in added:
                pl.remove_actor(actor, render=False)
            if values is not None:
                pl.remove_scalar_bar(render=False)
        else:
            if _PLOTTERS is not None:
                _PLOTTERS.pop(tuple(size), None)
            pl.close()
    return images


def _render_matplotlib(
    rr_mm, tris, values, *, title, cmap, clim, views, hemi, size, label, note=MPL_NOTE
):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = []
    dpi = 100
    for view in views:
        fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(projection="3d")
        coll = ax.plot_trisurf(
            rr_mm[:, 0], rr_mm[:, 1], rr_mm[:, 2], triangles=tris, linewidth=0,
            antialiased=False, color="lightgray", shade=values is None,
        )  # fmt: skip
        if values is not None:
            face = np.nanmean(values[tris], axis=1)
            coll.set_array(face)
            coll.set_cmap(cmap)
            coll.set_clim(*clim)
            fig.colorbar(coll, ax=ax, shrink=0.6, orientation="horizontal", label=label)
        direction, up = _view_vector(view, hemi)
        elev = float(np.degrees(np.arcsin(np.clip(direction[2], -1, 1))))
        azim = float(np.degrees(np.arctan2(direction[1], direction[0])))
        ax.view_init(elev=elev, azim=azim)
        ax.set_box_aspect(np.ptp(rr_mm, axis=0) + 1e-9)
        ax.set_axis_off()
        ax.set_title(f"{title} ({hemi} {view})", fontsize=9)
        if note:
            fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=7, color="0.3",
                     wrap=True)  # fmt: skip
        fig.canvas.draw()
        img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        images.append(img)
    return images


def plot_surface_map(
    rr_m,
    tris,
    values,
    *,
    title,
    cmap="viridis",
    clim=None,
    views=("lateral", "medial"),
    hemi=None,
    label=None,
    size=(420, 315),
    backend="auto",
):
    """Render a per-vertex map on a triangle mesh offscreen, one image per view.

    Parameters
    ----------
    rr_m : array, shape (n_vertices, 3)
        Vertex positions in metres (MRI surface RAS); drawn in mm.
    tris : array, shape (n_tris, 3)
        Triangles (0-based vertex indices).
    values : array, shape (n_vertices,) | None
        Value per vertex (NaN drawn grey); None draws the bare surface.
    title : str
        Title drawn on each image (the hemisphere and view are appended).
    cmap : str
        Matplotlib colormap name.
    clim : (float, float) | None
        Colour limits; None uses the 2nd and 98th percentiles.
    views : sequence of str
        Any of ``"lateral"``, ``"medial"``, ``"dorsal"``, ``"ventral"``,
        ``"anterior"``, ``"posterior"``.
    hemi : ``"lh"`` | ``"rh"`` | None
        Sets which side is lateral; None guesses from the sign of the mean x.
    label : str | None
        Colour bar label (e.g. ``"thickness (mm)"``).
    size : (int, int)
        Image width and height in pixels. The default keeps a 2-column
        :func:`image_grid` within ``mne.Report``'s 850-pixel image width (so
        the report stores it as is instead of resampling it).
    backend : ``"auto"`` | ``"pyvista"`` | ``"matplotlib"``
        ``auto`` follows the run's rendering path (:mod:`._render`, probed
        once in a subprocess): matplotlib when it is ``2d``, else pyvista
        offscreen, falling back to matplotlib when that fails or returns a
        blank image (``std == 0``). Matplotlib images are labelled as such.

    Returns
    -------
    images : list of array, shape (height, width, 3), uint8
        One RGB image per view.
    """
    rr, tris, values = _check_mesh(rr_m, tris, values)
    _check_option("backend", backend, ("auto", "pyvista", "matplotlib"))
    views = [views] if isinstance(views, str) else list(views)
    for view in views:
        _check_option("views", view, tuple(_VIEWS))
    if hemi is None:
        hemi = _auto_hemi(rr)
    _check_option("hemi", hemi, ("lh", "rh"))
    clim = _clim(values, clim)
    kwargs = dict(
        title=title, cmap=cmap, clim=clim, views=views, hemi=hemi, size=tuple(size),
        label=label,
    )  # fmt: skip
    rr_mm = rr * 1e3
    note = MPL_NOTE
    if backend == "auto":
        from ._render import decide_in_process

        path = decide_in_process()
        if not path.is_3d:  # decided once per run: do not try GL in this process
            backend = "matplotlib"
            note = f"2D fallback, {MPL_NOTE}: {path.reason}" if path.reason else MPL_NOTE
    if backend in ("auto", "pyvista"):
        try:
            images = _render_pyvista(rr_mm, tris, values, **kwargs)
        except Exception as exc:  # no GL at all: fall back
            if backend == "pyvista":
                raise
            logger.info(f"pyvista offscreen rendering failed ({exc}); using matplotlib")
        else:
            if all(img.std() > 0 for img in images):
                return [np.asarray(img, np.uint8) for img in images]
            if backend == "pyvista":
                raise RuntimeError("pyvista offscreen rendering returned a blank image")
            warn("pyvista offscreen rendering returned a blank image; using matplotlib")
    images = _render_matplotlib(rr_mm, tris, values, note=note, **kwargs)
    return [np.asarray(img, np.uint8) for img in images]


def submit_surface_map(rr_m, tris, values, **kwargs):
    """Start :func:`plot_surface_map` in the render worker; ``.result()`` gives the images.

    The laminar steps render their surface maps in one background process
    (:mod:`._worker`) while they write their files and draw their other
    figures, so that both cores work. Arguments are those of
    :func:`plot_surface_map`; the images are the same.
    """
    from ._worker import Pending

    # waited for, not drawn here: that would load VTK and a GL context in this process
    return Pending(plot_surface_map, (), dict(rr_m=rr_m, tris=tris, values=values, **kwargs),
                   steal=False)


def submit_figure(plot, *args, **kwargs):
    """Start ``plot(*args, **kwargs)`` in the render worker; ``.result()`` gives the image.

    ``plot`` is a function of this package's library that returns a
    matplotlib figure (or a tuple whose first item is one); the result is
    that figure drawn by :func:`report_image` (an RGB array, as
    ``mne.Report`` would store the figure).
    """
    from ._worker import Pending

    return Pending(_figure_image, (plot, args, kwargs))


def _figure_image(plot, args, kwargs) -> np.ndarray:
    fig = plot(*args, **kwargs)
    return report_image(fig[0] if isinstance(fig, tuple) else fig)


def image_grid(images: Sequence[np.ndarray], ncols: int = 2, pad: int = 4) -> np.ndarray:
    """Tile RGB images (padded white to a common size) into one image."""
    images = [np.asarray(img)[..., :3] for img in images]
    if not images:
        raise ValueError("image_grid needs at least one image")
    h = max(img.shape[0] for img in images)
    w = max(img.shape[1] for img in images)
    ncols = max(1, min(int(ncols), len(images)))
    nrows = -(-len(images) // ncols)
    out = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad, 3), 255, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, ncols)
        y, x = r * (h + pad), c * (w + pad)
        out[y : y + img.shape[0], x : x + img.shape[1]] = img
    return out


def add_figure(report, fig, **kwargs) -> None:
    """Add ``fig`` to ``report`` as :data:`REPORT_IMAGE_FORMAT` (``Report.add_figure``).

    Parameters
    ----------
    report : mne.Report
        The report (e.g. the one MBP's ``_open_report`` yields).
    fig : matplotlib.figure.Figure | array | list
        What ``Report.add_figure`` takes: a figure, an RGB image, or a list
        of them (a slider).
    **kwargs
        ``title``, ``caption``, ``section``, ``tags``, ``replace``, ...
        (passed on unchanged).
    """
    report.add_figure(fig=fig, image_format=REPORT_IMAGE_FORMAT, **kwargs)


def html_table(
    header: Sequence[str], rows: Sequence[Sequence], *, caption: str | None = None
) -> str:
    """A small HTML table (every cell escaped) for ``mne.Report.add_html``."""

    def _cell(val):
        if isinstance(val, float | np.floating):
            val = f"{val:.4g}"
        return html.escape(str(val))

    parts = ['<table class="table table-sm table-striped">']
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{_cell(h)}</th>" for h in header) + "</tr></thead>")
    parts.append("<tbody>")
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"Row {list(row)} has {len(row)} cells, header has {len(header)}")
        parts.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts)


# ---------------------------------------------------------------- slices
def mesh_plane_segments(rr, tris, axis: int, value: float) -> np.ndarray:
    """Line segments where a triangle mesh crosses the plane ``rr[:, axis] == value``.

    Parameters
    ----------
    rr : array, shape (n_vertices, 3)
    tris : array, shape (n_tris, 3)
    axis : int
        0, 1 or 2 (x, y, z).
    value : float
        Plane position, in the unit of ``rr``.

    Returns
    -------
    segments : array, shape (n_segments, 2, 3)
        End points of one segment per crossing triangle. A vertex exactly on
        the plane counts as on the positive side.
    """
    rr = np.asarray(rr, float)
    tris = np.asarray(tris, np.int64)
    d = rr[:, axis] - value
    side = d[tris] >= 0
    cross = side.any(axis=1) & ~side.all(axis=1)
    t = tris[cross]
    if not len(t):
        return np.zeros((0, 2, 3))
    a = t
    b = np.roll(t, -1, axis=1)  # edges (0,1), (1,2), (2,0)
    da, db = d[a], d[b]
    on_edge = (da >= 0) != (db >= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(on_edge, da / (da - db), 0.0)
    pts = rr[a] + w[..., None] * (rr[b] - rr[a])  # (n, 3 edges, 3)
    return pts[on_edge].reshape(-1, 2, 3)


def _t1_slice(t1_fname, axis, value_mm, extent_mm, n=256):
    """Sample ``T1.mgz`` on a plane of tkRAS (mm); returns (image, extent)."""
    import nibabel as nib
    from scipy.ndimage import map_coordinates

    img = nib.load(str(t1_fname))
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    tkr = img.header.get_vox2ras_tkr()
    _, (u, v) = next((p for p in _PLANES.values() if p[0] == axis))
    (u0, u1), (v0, v1) = extent_mm
    gu, gv = np.meshgrid(np.linspace(u0, u1, n), np.linspace(v0, v1, n))
    xyz = np.zeros((gu.size, 3))
    xyz[:, axis] = value_mm
    xyz[:, u] = gu.ravel()
    xyz[:, v] = gv.ravel()
    ijk = (np.linalg.inv(tkr) @ np.column_stack([xyz, np.ones(len(xyz))]).T)[:3]
    vals = map_coordinates(data, ijk, order=1, mode="constant", cval=0.0)
    return vals.reshape(n, n)


def plot_layer_slices(
    layers,
    tris,
    *,
    t1_fname=None,
    planes=("coronal", "axial"),
    positions=None,
    cmap="plasma",
    title=None,
    margin_mm=10.0,
):
    """Planes through the brain with every layer's intersection line.

    Parameters
    ----------
    layers : array, shape (n_layers, n_vertices, 3)
        Layer positions (m), layer 0 = pial.
    tris : array, shape (n_tris, 3)
        Triangles shared by all layers (indices into the vertices).
    t1_fname : path-like | None
        ``mri/T1.mgz`` drawn in grey behind the lines, if given and present.
    planes : sequence of str
        ``"coronal"``, ``"axial"`` and/or ``"sagittal"``.
    positions : dict | None
        Plane position (mm) per plane name; default: the centre of the
        pial layer's bounding box for coronal and axial, the centre of the
        left hemisphere's for sagittal.
    cmap : str
        Colormap from layer 0 (pial) to the last layer (white).
    title : str | None
        Figure title.
    margin_mm : float
        Margin around the surfaces' extent.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One panel per plane (Agg, never shown).
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm
    from matplotlib.figure import Figure

    layers_mm = np.asarray(layers, float) * 1e3
    if layers_mm.ndim != 3 or layers_mm.shape[2] != 3:
        raise ValueError(
            f"layers must have shape (n_layers, n_vertices, 3), got {layers_mm.shape}"
        )
    n_layers = len(layers_mm)
    tris = np.asarray(tris, np.int64)
    planes = [planes] if isinstance(planes, str) else list(planes)
    for plane in planes:
        _check_option("planes", plane, tuple(_PLANES))
    lo, hi = layers_mm.reshape(-1, 3).min(0), layers_mm.reshape(-1, 3).max(0)
    center = (lo + hi) / 2
    pos = {}
    for plane in planes:
        axis = _PLANES[plane][0]
        pos[plane] = float(center[axis])
        if plane == "sagittal":
            left = layers_mm[0][layers_mm[0][:, 0] < 0]
            pos[plane] = float(np.median(left[:, 0])) if len(left) else float(center[0])
    pos.update(positions or {})
    have_t1 = t1_fname is not None and os.path.isfile(t1_fname)
    colors = colormaps[cmap](np.linspace(0, 1, n_layers))
    fig = Figure(figsize=(5.0 * len(planes) + 1.0, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(planes), squeeze=False)[0]
    for ax, plane in zip(axes, planes):
        axis, (u, v) = _PLANES[plane]
        ext = ((lo[u] - margin_mm, hi[u] + margin_mm), (lo[v] - margin_mm, hi[v] + margin_mm))
        if have_t1:
            try:
                img = _t1_slice(t1_fname, axis, pos[plane], ext)
                ax.imshow(
                    img, cmap="gray", origin="lower", extent=(*ext[0], *ext[1]),
                    interpolation="bilinear",
                )  # fmt: skip
            except Exception as exc:
                logger.info(f"Could not draw {t1_fname}: {exc}")
        else:
            ax.set_facecolor("0.15")
        n_seg = 0
        for layer in range(n_layers):
            seg = mesh_plane_segments(layers_mm[layer], tris, axis, pos[plane])
            n_seg += len(seg)
            if len(seg):
                ax.add_collection(
                    LineCollection(seg[:, :, [u, v]], colors=[colors[layer]], linewidths=0.7)
                )
        ax.set_xlim(*ext[0])
        ax.set_ylim(*ext[1])
        ax.set_aspect("equal")
        ax.set_xlabel(f"{_AXIS_NAMES[u]} (mm)")
        ax.set_ylabel(f"{_AXIS_NAMES[v]} (mm)")
        ax.set_title(f"{plane} {_AXIS_NAMES[axis]} = {pos[plane]:.1f} mm", fontsize=10)
        if not n_seg:
            ax.text(0.5, 0.5, "plane misses the surfaces", transform=ax.transAxes, ha="center")
    norm = BoundaryNorm(np.arange(n_layers + 1) - 0.5, n_layers)
    sm = ScalarMappable(norm=norm, cmap=colormaps[cmap].resampled(n_layers))
    cb = fig.colorbar(sm, ax=list(axes), shrink=0.8)
    ticks = np.unique(np.linspace(0, n_layers - 1, min(n_layers, 6)).round().astype(int))
    cb.set_ticks(ticks)
    cb.set_label(f"layer ({layer_order(brief=True)})")
    fig.suptitle(title or f"{n_layers} layer surfaces (tkRAS)")
    return fig


def figure_to_image(fig) -> np.ndarray:
    """RGB image of a matplotlib figure (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def report_image(fig) -> np.ndarray:
    """Draw ``fig`` now as ``mne.Report`` would store it; returns the RGB image.

    ``Report.add_figure`` draws a matplotlib figure at most 850 pixels wide
    and at most 100 dpi; this draws it the same way, so that a step can draw
    its matplotlib figures while the render worker finishes its surface maps
    and add them in the section's order afterwards (an image that size is
    stored as it is). The figure is closed.
    """
    import matplotlib.pyplot as plt

    try:
        from mne.report.report import MAX_IMG_RES, MAX_IMG_WIDTH
    except ImportError:  # pragma: no cover - MNE's values since 1.0
        MAX_IMG_RES, MAX_IMG_WIDTH = 100, 850
    dpi = min(fig.get_dpi(), MAX_IMG_WIDTH / fig.get_size_inches()[0], MAX_IMG_RES)
    fig.set_dpi(dpi)
    img = figure_to_image(fig)
    plt.close(fig)
    return img


# ------------------------------------------------------- model comparison
def plot_evidence(whole, sliding=None):
    """ΔF per layer over the whole window, beside ΔF over time in sliding windows.

    Parameters
    ----------
    whole : LayerEvidence
        :func:`~mne_laminar_plugin.compare_layers` on the whole window.
    sliding : LayerEvidence | None
        The same in sliding windows (``sliding=True``); None: one panel.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    n = 2 if sliding is not None else 1
    # fixed margins, not a layout engine: several such figures per report, and a
    # constrained layout costs about as much as drawing the figure
    fig, axes = plt.subplots(1, n, figsize=(6.4 * n, 3.8), squeeze=False)
    fig.subplots_adjust(left=0.08 / n, right=1 - 0.02 / n, bottom=0.25, top=0.91,
                        wspace=0.18)  # fmt: skip
    whole.plot(ax=axes[0, 0])
    if sliding is not None:
        sliding.plot(ax=axes[0, 1])
    return fig


# ------------------------------------------------------------ accuracy
def plot_score_roc(predictivity):
    """ROC curve of the anatomical score at each SNR (records of ``predictivity``).

    Parameters
    ----------
    predictivity : list of dict
        :meth:`~mne_laminar_plugin.simulation.LaminarAccuracy.predictivity`
        records; those without ``roc_score`` (one class only) are left out.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.0), layout="constrained")
    for rec in predictivity:
        if "roc_score" in rec:
            fpr, tpr = rec["roc_score"]
            ax.plot(fpr, tpr, label=f"{rec['snr_db']:g} dB (AUC {rec['auc_score']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title="ROC of the anatomical score")  # fmt: skip
    ax.legend(frameon=False, fontsize="small")
    return fig


# ------------------------------------------------------------ predictors
def plot_histograms(values, *, units=None, bins=50, title=None):
    """One histogram per named array (non-finite values left out), in a row.

    Parameters
    ----------
    values : dict of str -> array
        Name -> values.
    units : dict of str -> str | None
        Axis label units by name.
    bins : int
        Histogram bins.
    title : str | None
        Figure title.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    names = list(values)
    fig = Figure(figsize=(3.0 * len(names), 2.8), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        x = np.asarray(values[name], float)
        finite = x[np.isfinite(x)]
        if finite.size:
            ax.hist(finite, bins=bins, histtype="stepfilled", color="C0", alpha=0.85)
            ax.axvline(np.median(finite), color="k", lw=1, ls="--")
        unit = (units or {}).get(name)
        ax.set_xlabel(f"{name} ({unit})" if unit and unit != "arbitrary" else name)
        n_bad = x.size - finite.size
        ax.set_title(f"n = {finite.size}" + (f", {n_bad} NaN" if n_bad else ""), fontsize=9)
    axes[0].set_ylabel("columns")
    if title:
        fig.suptitle(title)
    return fig


def plot_correlation_matrix(values, *, title=None):
    """Pearson correlation matrix of named arrays over rows where all are finite.

    Parameters
    ----------
    values : dict of str -> array
        Name -> values (same length).
    title : str | None
        Figure title.

    Returns
    -------
    fig : matplotlib.figure.Figure
    corr : array, shape (n, n)
        The correlation matrix (NaN for a constant variable).
    """
    from matplotlib.figure import Figure

    names = list(values)
    x = np.stack([np.asarray(values[n], float) for n in names])
    x = x[:, np.isfinite(x).all(axis=0)]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(x) if x.shape[1] > 1 else np.full((len(names),) * 2, np.nan)
    fig = Figure(figsize=(1.1 * len(names) + 2.5, 1.1 * len(names) + 1.5), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            val = corr[i, j]
            ax.text(j, i, "n/a" if not np.isfinite(val) else f"{val:.2f}", ha="center",
                    va="center", fontsize=8, color="w" if abs(np.nan_to_num(val)) > 0.6 else "k")  # fmt: skip
    fig.colorbar(im, ax=ax, shrink=0.8, label="Pearson r")
    ax.set_title(title or f"Correlation over {x.shape[1]} columns", fontsize=10)
    return fig, corr
