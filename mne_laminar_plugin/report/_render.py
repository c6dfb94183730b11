"""How 3D report figures are drawn: a display, a private Xvfb, offscreen VTK, or 2D.

MBP's forward and inverse steps draw their report figures (coregistration,
source estimates) with MNE's Qt 3D backend, which needs an X display; the
laminar steps draw theirs with pyvista offscreen. On a headless machine this
module decides, once per run, which rendering path works and tells every
process (MBP's loky or dask workers inherit the environment):

``display``
    ``DISPLAY`` is set and MNE's Qt 3D backend renders on it.
``xvfb``
    A private ``Xvfb`` (started by ``mne-laminar``) and MNE's Qt 3D backend.
``offscreen``
    No X server, but VTK renders off screen (EGL, else OSMesa): MBP's 3D
    figures are drawn with VTK directly (:mod:`._figures_3d`), since
    MNE's Qt backend cannot run without X.
``2d``
    No OpenGL at all: every 3D figure is replaced by labelled matplotlib
    projections; the report caption says why.

Each candidate is tried by a tiny render in a subprocess, so that a crash
of a GL driver (segfault, abort) cannot end the run. ``MNE_LAMINAR_3D``
(``auto``, ``display``, ``xvfb``, ``offscreen`` or ``2d``) forces a path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from mne.utils import logger

#: environment variable: the path a user forces (or ``auto``); after the
#: decision it holds the path taken, for MBP's worker processes
RENDER_ENV = "MNE_LAMINAR_3D"
#: environment variables carrying the decision's reason and details
_REASON_ENV = "_MNE_LAMINAR_3D_REASON"
_DETAIL_ENV = "_MNE_LAMINAR_3D_DETAIL"
#: environment variable: the OpenGL version and renderer the test render found
#: (JSON ``[version, renderer]``; offscreen VTK only)
_OPENGL_ENV = "_MNE_LAMINAR_3D_OPENGL"
PATHS = ("display", "xvfb", "offscreen", "2d")
_CHOICES = ("auto", *PATHS)
#: VTK render window classes for rendering without X, in order of preference
_OFFSCREEN_WINDOWS = (("EGL", "vtkEGLRenderWindow"), ("OSMesa", "vtkOSOpenGLRenderWindow"))
PROBE_TIMEOUT = 90.0

_PROBE_CODE = r"""
import json, re, sys
mode = sys.argv[1]
if mode == "vtk":
    import numpy as np
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkFiltersSources import vtkSphereSource
    from vtkmodules.vtkRenderingCore import (vtkActor, vtkPolyDataMapper,
        vtkRenderer, vtkRenderWindow, vtkWindowToImageFilter)
    import vtkmodules.vtkRenderingOpenGL2  # noqa: F401
    win = vtkRenderWindow()
    win.SetOffScreenRendering(1)
    win.SetSize(24, 24)
    ren = vtkRenderer()
    ren.SetBackground(1.0, 1.0, 1.0)
    win.AddRenderer(ren)
    sphere = vtkSphereSource()
    mapper = vtkPolyDataMapper()
    mapper.SetInputConnection(sphere.GetOutputPort())
    actor = vtkActor()
    actor.SetMapper(mapper)
    ren.AddActor(actor)
    win.Render()
    grab = vtkWindowToImageFilter()
    grab.SetInput(win)
    grab.Update()
    img = vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars())
    caps = win.ReportCapabilities()
    found = {key: re.findall(f"OpenGL {key} string:(.+)\n", caps)
             for key in ("renderer", "version")}
    out = dict(std=float(np.std(img)), window=win.GetClassName(),
               **{key: value[0].strip() if value else "" for key, value in found.items()})
else:  # MNE's own Qt 3D backend, as MNE's report uses it
    import numpy as np
    import pyvista
    from mne.viz.backends import renderer
    renderer.set_3d_backend("pyvistaqt", verbose="error")
    fig = renderer.create_3d_figure((24, 24), bgcolor=(1.0, 1.0, 1.0))
    fig.plotter.add_mesh(pyvista.Sphere(), color="red")
    img = renderer.backend._take_3d_screenshot(figure=fig)
    renderer.backend._close_3d_figure(fig)
    out = dict(std=float(np.std(img)), window="Qt", renderer="")
print("MNE_LAMINAR_PROBE " + json.dumps(out), flush=True)
"""


@dataclasses.dataclass(frozen=True)
class RenderPath:
    """The rendering path of 3D figures, and why it was taken.

    Attributes
    ----------
    kind : str
        ``"display"``, ``"xvfb"``, ``"offscreen"`` or ``"2d"``.
    reason : str
        Why this path (shown in the log and in 2D figure captions).
    detail : str
        What renders (e.g. ``"EGL, llvmpipe (LLVM 15.0.6, 256 bits)"``).
    opengl : tuple of str
        The OpenGL version and renderer strings of the test render (offscreen
        VTK; empty otherwise): what ``mne.sys_info()`` would find with a
        render of its own (:func:`known_gpu_info`).
    """

    kind: str
    reason: str = ""
    detail: str = ""
    opengl: tuple[str, ...] = ()

    @property
    def is_3d(self) -> bool:
        return self.kind != "2d"

    def describe(self) -> str:
        """The one log line of the decision."""
        what = {
            "display": "MNE's 3D backend on DISPLAY={}".format(os.environ.get("DISPLAY", "")),
            "xvfb": "MNE's 3D backend on a private Xvfb (DISPLAY={})".format(
                os.environ.get("DISPLAY", "")
            ),
            "offscreen": "offscreen VTK",
            "2d": "2D matplotlib projections instead of 3D views",
        }[self.kind]
        if self.detail:
            what += f" ({self.detail})"
        return f"3D figures: {what}" + (f"; {self.reason}" if self.reason else "")

    def env(self) -> dict[str, str]:
        """Environment variables that carry this decision to other processes."""
        out = {RENDER_ENV: self.kind, _REASON_ENV: self.reason, _DETAIL_ENV: self.detail}
        out[_OPENGL_ENV] = json.dumps(list(self.opengl)) if self.opengl else ""
        if self.kind == "offscreen":
            window = dict(_OFFSCREEN_WINDOWS).get(self.detail.split(",")[0])
            if window:
                out["VTK_DEFAULT_OPENGL_WINDOW"] = window
        if self.kind == "xvfb" and "MNE_3D_OPTION_MULTI_SAMPLES" not in os.environ:
            out["MNE_3D_OPTION_MULTI_SAMPLES"] = "1"  # Xvfb's GLX has no multisampling
        return out


def requested_path() -> str:
    """The path forced with ``MNE_LAMINAR_3D`` (``"auto"`` when unset)."""
    value = os.environ.get(RENDER_ENV, "auto").strip().lower() or "auto"
    if value not in _CHOICES:
        raise ValueError(
            f"Environment variable {RENDER_ENV}={value!r} is not valid: use one of "
            f"{', '.join(_CHOICES)} (or unset it)."
        )
    return value


def probe(
    mode: str, env: Mapping[str, str] | None = None, *, meanwhile=None
) -> tuple[bool, dict | str]:
    """Render a tiny image in a subprocess; return (success, info or error).

    Parameters
    ----------
    mode : ``"vtk"`` | ``"qt"``
        ``vtk``: a plain VTK offscreen render window (the class VTK picks,
        or ``VTK_DEFAULT_OPENGL_WINDOW``). ``qt``: MNE's Qt 3D backend on the
        current ``DISPLAY``.
    env : dict | None
        Variables to set for the subprocess (on top of ``os.environ``).
    meanwhile : callable | None
        Called (no arguments) while the subprocess runs, e.g. the run's own
        imports.

    Returns
    -------
    ok : bool
        True if the render produced a non-blank image.
    info : dict | str
        The render window class and OpenGL renderer, or why it failed.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.pop(RENDER_ENV, None)
    full_env.setdefault("MNE_3D_OPTION_MULTI_SAMPLES", "1")
    proc = subprocess.Popen(
        [sys.executable, "-c", _PROBE_CODE, mode],
        env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        if meanwhile is not None:
            meanwhile()
        stdout, stderr = proc.communicate(timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return False, f"test render timed out after {PROBE_TIMEOUT:.0f} s"
    finally:
        if proc.poll() is None:  # meanwhile raised: do not leave it behind
            proc.kill()
            proc.communicate()
    for line in stdout.splitlines()[::-1]:
        if line.startswith("MNE_LAMINAR_PROBE "):
            info = json.loads(line.split(" ", 1)[1])
            if info["std"] > 0:
                return True, info
            return False, "test render returned a blank image"
    if proc.returncode < 0:
        import signal

        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = str(-proc.returncode)
        why = f"test render crashed ({name})"
    else:
        lines = [ln for ln in (stderr or "").strip().splitlines() if ln.strip()]
        why = f"test render failed: {lines[-1].strip()[:200]}" if lines else (
            f"test render failed (exit code {proc.returncode})"
        )
    return False, why


def probe_offscreen(*, meanwhile=None) -> tuple[RenderPath | None, list[str]]:
    """Try VTK's display-less render windows (EGL, then OSMesa).

    ``meanwhile`` is called while the first test render runs (see :func:`probe`).
    """
    errors = []
    for name, window in _OFFSCREEN_WINDOWS:
        env = {"VTK_DEFAULT_OPENGL_WINDOW": window}
        ok, info = probe("vtk", env={**env, "DISPLAY": ""}, meanwhile=meanwhile)
        meanwhile = None
        if ok and info.get("window") == window:
            detail = name + (f", {info['renderer']}" if info.get("renderer") else "")
            opengl = (info["version"], info["renderer"]) if info.get("version") else ()
            return RenderPath("offscreen", detail=detail, opengl=opengl), errors
        errors.append(f"{name}: {info if not ok else 'VTK chose ' + info.get('window', '?')}")
    return None, errors


def current_path() -> RenderPath | None:
    """The path decided for this run, read from the environment (None if none).

    A decision sets :data:`RENDER_ENV` together with the reason variable; a
    bare ``MNE_LAMINAR_3D`` is a user's request, not a decision.
    """
    kind = os.environ.get(RENDER_ENV, "").strip().lower()
    if kind not in PATHS or _REASON_ENV not in os.environ:
        return None
    try:
        opengl = tuple(json.loads(os.environ.get(_OPENGL_ENV) or "[]"))
    except ValueError:  # set by hand: not a decision of ours
        opengl = ()
    return RenderPath(
        kind, reason=os.environ.get(_REASON_ENV, ""), detail=os.environ.get(_DETAIL_ENV, ""),
        opengl=opengl,
    )  # fmt: skip


def decide_in_process() -> RenderPath:
    """The path of this process: the run's decision, else probe now (no Xvfb).

    Used when the laminar figures or MBP's patched steps run outside
    ``mne-laminar`` (e.g. the library from a script). The result is stored in
    the environment, so this probes at most once per process.
    """
    path = current_path()
    if path is not None:
        return path
    forced = requested_path()
    if forced == "2d":
        path = RenderPath("2d", reason=f"{RENDER_ENV}=2d")
    elif os.environ.get("DISPLAY") and forced in ("auto", "display"):
        path = RenderPath("display")
    else:
        path, errors = probe_offscreen()
        if path is None:
            path = RenderPath("2d", reason="no OpenGL: " + "; ".join(errors))
    logger.info(path.describe())
    os.environ.update(path.env())
    return path


def set_environ(values: Mapping[str, str | None]) -> None:
    """Set ``values`` in ``os.environ``; a None value unsets the variable."""
    for key, val in values.items():
        if val is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = val


@contextmanager
def environ(updates: Mapping[str, str]) -> Iterator[None]:
    """Set ``updates`` in ``os.environ`` (children inherit them); restore on exit."""
    old = {key: os.environ.get(key) for key in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        set_environ(old)


@contextmanager
def known_gpu_info() -> Iterator[None]:
    """Inside this block ``mne.sys_info()`` takes its OpenGL line from the decision.

    MNE finds the OpenGL version and renderer with a render of its own in a
    subprocess, which starts another (``mne.utils.config._get_gpu_info``,
    about 0.8 s). After an offscreen decision the test render has found both
    strings, with the same render window class in the same environment
    (:attr:`RenderPath.opengl`): here MNE's function returns them. Without
    them (other paths, no decision) nothing changes.
    """
    from mne.utils import config

    path = current_path()
    orig = getattr(config, "_get_gpu_info", None)
    if path is None or len(path.opengl) != 2 or orig is None:
        yield
        return
    config._get_gpu_info = lambda: list(path.opengl)
    try:
        yield
    finally:
        config._get_gpu_info = orig


@contextmanager
def use_path(path: RenderPath) -> Iterator[RenderPath]:
    """Set the environment of ``path`` for this process (and its children)."""
    with environ(path.env()):
        yield path
