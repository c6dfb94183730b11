"""The ``mne-laminar`` command line: ``run``, ``info``, ``demo``, ``sys-info``."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ._version import __version__

PROG = "mne-laminar"
DESCRIPTION = (
    "Laminar MEG analysis as MNE-BIDS-Pipeline steps. `run` takes every "
    "mne_bids_pipeline argument unchanged and runs MBP with all installed MBP "
    "plugins (entry-point group mne_bids_pipeline.plugins), including this "
    "package's `laminar` stage."
)
#: packages whose versions matter for results or for running
SYS_INFO_PACKAGES = (
    "mne-laminar-plugin", "mne", "mne-bids", "mne-bids-pipeline", "numpy", "scipy",
    "nibabel", "nilearn", "pluggy", "h5py", "numba", "matplotlib", "pyvista", "vtk",
    "pyvistaqt", "PySide6-Essentials", "dask", "distributed", "joblib", "pydantic",
    "bids-validator-deno",
)  # fmt: skip


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


# ---------------------------------------------------------------- display
@contextmanager
def virtual_display(enable: bool = True) -> Iterator[str | None]:
    """Provide a private X display (``Xvfb``) for MNE's Qt 3D figures.

    On Linux without ``DISPLAY``, with ``Xvfb`` on ``PATH``, a private
    virtual display is started for the run (child processes, e.g. loky or
    dask workers, inherit ``DISPLAY``) and stopped afterwards. Yields the
    display name, or None when none was started (see :func:`render_3d` for
    what happens then).
    """
    if not enable or os.environ.get("DISPLAY") or sys.platform != "linux":
        yield os.environ.get("DISPLAY")
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        yield None
        return
    proc = None
    for num in range(99, 199):
        if Path(f"/tmp/.X{num}-lock").exists() or Path(f"/tmp/.X11-unix/X{num}").exists():
            continue
        proc = subprocess.Popen(
            [xvfb, f":{num}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(50):
            if Path(f"/tmp/.X11-unix/X{num}").exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        if proc.poll() is None:
            break
        proc = None
    if proc is None:
        yield None
        return
    from .report._render import environ

    updates = {"DISPLAY": f":{num}"}
    if "MNE_3D_OPTION_MULTI_SAMPLES" not in os.environ:  # the user's value wins
        updates["MNE_3D_OPTION_MULTI_SAMPLES"] = "1"
    try:
        with environ(updates):
            yield updates["DISPLAY"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


#: the decision of the enclosing :func:`render_3d` of this process, if any
_ACTIVE_PATHS: list = []


@contextmanager
def render_3d(
    allow_xvfb: bool = True, need_mne_3d: bool = True, laminar_figures: bool = False,
    meanwhile=None,
) -> Iterator[object]:
    """Decide once how 3D report figures are drawn in this run, and set it up.

    Tries, each with a tiny render in a subprocess (a crashing GL driver
    cannot end the run): the user's ``DISPLAY``; a private ``Xvfb`` (when
    ``need_mne_3d``, i.e. MBP's forward/inverse steps are requested, and
    ``allow_xvfb``); offscreen VTK (EGL, then OSMesa); else 2D matplotlib
    figures. ``MNE_LAMINAR_3D`` forces a path. Prints one line saying which
    path is taken and yields the :class:`~mne_laminar_plugin.report._render.RenderPath`;
    the environment carries it to MBP's worker processes.

    With ``laminar_figures`` (laminar steps requested) the process that draws
    the laminar report figures (:mod:`~mne_laminar_plugin.report._worker`)
    is started at once, so that its start-up overlaps the run's; it stops at
    the end. ``meanwhile`` (a callable, e.g. importing MBP) is called while
    the first test render runs. Inside another ``render_3d`` of this process
    (``mne-laminar demo`` decides before it builds the data) the enclosing
    decision is used as it is.
    """
    from .report import _worker

    if _ACTIVE_PATHS:  # decided (and the worker started) by the enclosing call
        if meanwhile is not None:
            meanwhile()
        yield _ACTIVE_PATHS[-1]
        return
    if laminar_figures:  # its imports overlap the test render and MBP's imports
        _worker.prestart()
    try:
        with _decide_and_use(allow_xvfb, need_mne_3d, meanwhile) as path:
            _ACTIVE_PATHS.append(path)
            try:
                yield path
            finally:
                _ACTIVE_PATHS.pop()
    finally:
        _worker.shutdown()


@contextmanager
def _decide_and_use(allow_xvfb: bool, need_mne_3d: bool, meanwhile) -> Iterator[object]:
    """The body of :func:`render_3d`: probe, print the decision, set it up."""
    import dataclasses
    from contextlib import ExitStack

    from .report import _worker
    from .report._render import RenderPath, probe, probe_offscreen, requested_path, use_path

    def take_meanwhile():
        nonlocal meanwhile
        func, meanwhile = meanwhile, None
        return func

    forced = requested_path()
    mode = "qt" if need_mne_3d else "vtk"
    notes: list[str] = []
    path = RenderPath("2d", reason="MNE_LAMINAR_3D=2d") if forced == "2d" else None
    with ExitStack() as stack:
        display = os.environ.get("DISPLAY")
        if path is None and display and forced in ("auto", "display"):
            ok, info = probe(mode, meanwhile=take_meanwhile())
            if ok:
                path = RenderPath("display")
            else:
                notes.append(f"DISPLAY={display}: {info}")
        if path is None and need_mne_3d and not display and forced in ("auto", "xvfb"):
            if not allow_xvfb:
                notes.append("no X display (--no-xvfb)")
            elif shutil.which("Xvfb") is None or sys.platform != "linux":
                notes.append("no X display and no Xvfb on PATH")
            else:
                xvfb = ExitStack()
                if xvfb.enter_context(virtual_display()) is None:
                    notes.append("Xvfb did not start")
                else:
                    ok, info = probe("qt", meanwhile=take_meanwhile())
                    if ok:
                        path = RenderPath("xvfb")
                        stack.enter_context(xvfb)
                    else:
                        notes.append(f"Xvfb: {info}")
                if path is None:
                    xvfb.close()
        if path is None and forced in ("auto", "offscreen"):
            if not need_mne_3d and not notes:
                notes.append("no MBP 3D step requested")
            path, errors = probe_offscreen(meanwhile=take_meanwhile())
            if path is not None:
                path = dataclasses.replace(path, reason="; ".join(notes))
            notes += errors
        if path is None:
            if forced not in ("auto", "2d"):
                notes.insert(0, f"MNE_LAMINAR_3D={forced} does not work here")
            path = RenderPath("2d", reason="; ".join(notes) or "no OpenGL")
        func = take_meanwhile()
        if func is not None:  # no test render ran
            func()
        print(f"{PROG}: {path.describe()}", flush=True)
        with use_path(path):
            _worker.sync_environ(decide=False)  # the worker started before the decision
            yield path


def _requested_steps(mbp_args: Sequence[str]) -> list[str]:
    """The items of MBP's ``--steps`` (default ``all``)."""
    steps = "all"
    for i, arg in enumerate(mbp_args):
        if arg == "--steps" and i + 1 < len(mbp_args):
            steps = mbp_args[i + 1]
        elif arg.startswith("--steps="):
            steps = arg.split("=", 1)[1]
    return [item.strip() for item in steps.split(",")]


def _requests_stage(mbp_args: Sequence[str], stage: str) -> bool:
    """Whether ``--steps`` runs ``stage`` or one of its steps (``all`` does)."""
    return any(item in ("all", stage) or item.startswith(f"{stage}/")
               for item in _requested_steps(mbp_args))  # fmt: skip


def _needs_mne_3d(mbp_args: Sequence[str]) -> bool:
    """Whether the requested MBP steps include ones drawing with MNE's 3D backend."""
    return _requests_stage(mbp_args, "source")


def _needs_laminar(mbp_args: Sequence[str]) -> bool:
    """Whether the requested MBP steps include this package's laminar stage."""
    return _requests_stage(mbp_args, "laminar")


# ------------------------------------------------------------ BLAS threads
#: environment variables that set the BLAS/OpenMP thread count: when the user
#: set one, ``--blas-threads`` defaults to leaving the libraries alone
BLAS_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
BLAS_THREADS_HELP = (
    "BLAS threads of this process (default 1 unless OPENBLAS_NUM_THREADS, "
    "OMP_NUM_THREADS or MKL_NUM_THREADS is set; 0: the libraries' own default). "
    "The pipeline's linear algebra is mostly small: with more threads than free "
    "cores OpenBLAS's threads spin while they wait, e.g. the demo's data took 18.9 s "
    "instead of 8.0 s beside one other busy process on 2 cores. MBP's parallel "
    "workers (--n_jobs) get their own limit from joblib."
)


def _blas_threads_arg(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(
            f"expected a whole number >= 0 (0: the libraries' default), got {value!r}"
        )
    return n


@contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Limit the BLAS threads of this process to ``n`` (see ``--blas-threads``).

    ``n=None`` means the default: 1, unless one of :data:`BLAS_THREAD_ENV` is
    set (then the libraries' own setting is kept). ``n=0`` keeps it too.
    """
    if n is None:
        n = 0 if any(os.environ.get(name) for name in BLAS_THREAD_ENV) else 1
    if n == 0:
        yield
        return
    # threadpoolctl limits the libraries loaded now: load numpy's and scipy's BLAS
    # first (``mne-laminar run`` has imported neither yet)
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield


# ------------------------------------------------------------ subcommands
def cmd_run(args: argparse.Namespace) -> int:
    """Run MBP with every installed plugin."""
    from .pipeline.host import PluginHost, run_mbp

    mbp_args = list(args.mbp_args)
    if mbp_args and mbp_args[0] == "--":
        mbp_args = mbp_args[1:]
    if not mbp_args or mbp_args[0] in ("-h", "--help"):
        _print_run_help()
        return 0
    _check_run_args(mbp_args)
    host = getattr(args, "host", None) or PluginHost()  # (demo: installed already)
    with blas_threads(getattr(args, "blas_threads", None)), render_3d(
        allow_xvfb=not args.no_xvfb, need_mne_3d=_needs_mne_3d(mbp_args),
        laminar_figures=_needs_laminar(mbp_args),
        meanwhile=host.install,  # MBP's imports while the test render runs
    ):
        try:
            run_mbp(mbp_args, host=host)
        except SystemExit as exc:  # MBP's own argparse or on_error="abort"
            return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


def _check_run_args(mbp_args: Sequence[str]) -> None:
    # MBP resolves the config with strict=True and raises a traceback: say it first
    positional = []
    skip = False
    takes_value = {
        "--config", "--steps", "--root-dir", "--deriv_root", "--subject", "--session",
        "--task", "--run", "--n_jobs", "--logger-level", "--create-config",
    }  # fmt: skip
    config = None
    for i, arg in enumerate(mbp_args):
        if skip:
            skip = False
            continue
        if arg in takes_value:
            if arg == "--config" and i + 1 < len(mbp_args):
                config = mbp_args[i + 1]
            skip = True
            continue
        if arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        elif not arg.startswith("-"):
            positional.append(arg)
    if "--create-config" in mbp_args or any(
        a.startswith("--create-config=") for a in mbp_args
    ):
        return
    config = positional[0] if positional else config
    if config is not None and not Path(config).expanduser().is_file():
        raise CLIError(
            f"config file not found: {config!r}. Pass the path of an MBP config "
            "file (e.g. one written by `mne-laminar demo --no-run DIR`)."
        )


def _print_run_help() -> None:
    print(
        f"usage: {PROG} run [--no-xvfb] [--blas-threads N] CONFIG "
        "[mne_bids_pipeline options]\n\n"
        "Runs MNE-BIDS-Pipeline with every installed MBP plugin.\n"
        "  --no-xvfb          do not start a private Xvfb when no display is set\n"
        f"  --blas-threads N   {BLAS_THREADS_HELP}\n\n"
        "All mne_bids_pipeline options work unchanged, e.g.\n"
        f"  {PROG} run config.py --steps laminar --subject 01 --n_jobs 2\n"
        f"  {PROG} run config.py --steps all          # MBP's stages, then laminar\n"
        f"  {PROG} run config.py --steps laminar/leadfield --no-cache\n\n"
        "Options of mne_bids_pipeline:"
    )
    from mne_bids_pipeline import _main

    old = sys.argv
    sys.argv = [f"{PROG} run", "--help"]
    try:
        _main.main()
    except SystemExit:
        pass
    finally:
        sys.argv = old


def cmd_info(args: argparse.Namespace) -> int:
    """Print plugins, stages, steps and options."""
    from .pipeline.host import PluginHost, check_mbp_version, mbp_version

    host = PluginHost()
    lines = [f"mne-bids-pipeline {mbp_version()}"]
    try:
        check_mbp_version()
    except Exception as exc:  # still show what is installed
        lines.append(f"  WARNING: {exc}")
    lines.append("")
    lines.append("Plugins (entry-point group mne_bids_pipeline.plugins):")
    for name in host.plugin_names:
        lines.append(f"  {name}: {host.sources.get(name, '')}")
    lines.append("")
    lines.append("Stages and steps:")
    for stage, (plugin, group) in host.stages().items():
        where = "in `all` after " + (group.after or "the last stage") if group.in_all else "not in `all`"
        lines.append(f"  {stage}  (plugin {plugin}; {where})")
        for mod in group.modules:
            title = (mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else ""
            lines.append(f"    {stage}/{Path(mod.__file__).stem.lstrip('_0123456789')}: {title}")
    lines.append("")
    lines.append("Options (set them in your MBP config file):")
    for name, (plugin, opt) in host.options().items():
        lines.append(f"  {name}: {_type_name(opt.annotation)} = {opt.default!r}")
        lines.append(f"      {opt.doc}")
    print("\n".join(lines))
    return 0


def _type_name(annotation: object) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    if text is None:
        text = repr(annotation)
    for junk in ("typing.", "collections.abc.", "annotated_types."):
        text = text.replace(junk, "")
    return text


def options_markdown() -> str:
    """Return every plugin option as a Markdown table (option, type, default, meaning).

    The docs' option reference is generated from this, so the table that
    ``mne-laminar info`` prints and the one on the docs site come from one place.
    """
    from .pipeline.host import PluginHost

    rows = ["| option | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, (_plugin, opt) in PluginHost().options().items():
        doc = opt.doc.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        typ = _type_name(opt.annotation).replace("|", "\\|")
        rows.append(f"| `{name}` | `{typ}` | `{opt.default!r}` | {doc} |")
    return "\n".join(rows)


def demo_steps(n_subjects: int) -> str:
    """MBP's ``--steps`` of ``mne-laminar demo``: every stage, then laminar.

    With one subject there is nothing to average, so MBP's sensor-space group
    average (evoked and report of ``sub-average``, ~7 s of the demo) is left
    out; the decoding and time-frequency steps are off in the demo config
    anyway. With two or more subjects every stage runs (``all``).
    """
    if n_subjects > 1:
        return "all"
    return "preprocessing,sensor/make_evoked,sensor/make_cov,source,laminar"


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the demo dataset and run the full pipeline on it."""
    root = Path(args.directory).expanduser().resolve()
    if args.subjects < 1:
        raise CLIError(f"--subjects must be >= 1, got {args.subjects}")
    t0 = time.time()
    with blas_threads(args.blas_threads), contextlib.ExitStack() as stack:
        host = None
        if not args.no_run:
            from .pipeline.host import PluginHost

            # decided now, so that the figure worker starts while the data are built
            stack.enter_context(render_3d(allow_xvfb=not args.no_xvfb, need_mne_3d=True,
                                          laminar_figures=True))  # fmt: skip
            host = PluginHost()
        kwargs = dict(n_subjects=args.subjects, seed=args.seed, overwrite=args.overwrite,
                      system=args.system)  # fmt: skip
        demo = _build_demo(root, kwargs, separate=not args.no_run,
                           meanwhile=host.install if host else None)  # fmt: skip
        print(f"Demo dataset written in {time.time() - t0:.0f} s: {demo.bids_root}")
        print(f"MBP config: {demo.config_path}")
        if args.no_run:
            return 0
        run_args = [str(demo.config_path), "--steps", demo_steps(args.subjects)]
        if args.n_jobs:
            run_args += ["--n_jobs", str(args.n_jobs)]
        rc = cmd_run(argparse.Namespace(mbp_args=run_args, no_xvfb=args.no_xvfb,
                                        blas_threads=args.blas_threads, host=host))  # fmt: skip
    if rc:
        return rc
    reports = sorted(Path(demo.deriv_root).glob("sub-*/**/*_report.html"))
    print(f"Demo finished in {time.time() - t0:.0f} s.")
    for report in reports:
        print(f"Report: {report}")
    return 0


def _build_demo(root: Path, kwargs: dict, *, separate: bool, meanwhile=None):
    """Build the demo data (:func:`~mne_laminar_plugin.demo.make_demo_dataset`).

    With ``separate`` (the demo then runs MBP), in a child process with
    MNE's numba kernels off: building the data takes as long without them,
    and on a new installation their first compile (about 20 s) would be paid
    here. Meanwhile this process calls ``meanwhile`` (installing the plugin
    host: MBP's imports), and the figure worker compiles the kernels that
    MBP's and the laminar steps use
    (:func:`~mne_laminar_plugin.forward._warmup.warm_up_kernels`), on the
    other core, before they are needed.
    """
    import json

    from .demo import make_demo_dataset

    if not separate:
        try:
            return make_demo_dataset(root, **kwargs, progress=True)
        except FileExistsError as exc:  # the folder holds something else: nothing deleted
            raise CLIError(str(exc)) from None
    from .forward._warmup import warm_up_kernels
    from .report import _worker

    with contextlib.suppress(_worker.WorkerGone):
        _worker.submit(warm_up_kernels, system=kwargs["system"])
    env = _worker.child_environ(MNE_USE_NUMBA="false", PYTHONUNBUFFERED="1")
    child = subprocess.Popen(
        [sys.executable, "-m", "mne_laminar_plugin.demo",
         json.dumps(dict(kwargs, root=str(root), progress=True))],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        if meanwhile is not None:
            meanwhile()
    finally:
        _, stderr = child.communicate()
    if child.returncode == 2:  # the folder holds something else: nothing deleted
        raise CLIError(stderr.strip().splitlines()[-1] if stderr.strip() else "demo folder")
    if child.returncode:
        sys.stderr.write(stderr)
        raise RuntimeError(f"building the demo data failed (exit code {child.returncode})")
    sys.stderr.write(stderr)  # warnings, if any
    # built: this returns the finished demo (its stamp says so) without rebuilding it
    return make_demo_dataset(root, **dict(kwargs, overwrite=False))


def sys_info(fid=None) -> None:
    """Print the versions of everything that matters for this package."""
    import importlib.metadata

    fid = sys.stdout if fid is None else fid
    print(f"Platform:   {platform.platform()}", file=fid)
    print(f"Python:     {sys.version.split()[0]} ({sys.executable})", file=fid)
    try:
        import numpy as np

        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        print(f"BLAS:       {blas.get('name', '?')} {blas.get('version', '')}", file=fid)
    except Exception:  # pragma: no cover - numpy without show_config dicts
        pass
    print(f"CPUs:       {os.cpu_count()}", file=fid)
    for name in SYS_INFO_PACKAGES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        print(f"{name + ':':<21} {version}", file=fid)
    xvfb = shutil.which("Xvfb")
    print(f"{'Xvfb:':<21} {xvfb or 'not found'}", file=fid)


def cmd_sys_info(args: argparse.Namespace) -> int:
    sys_info()
    return 0


# ----------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    from ._conventions import MEG_SYSTEMS

    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # listed for `mne-laminar --help`; main() parses `run`'s own options (--no-xvfb,
    # --blas-threads) itself and passes the rest to MBP (see _print_run_help)
    sub.add_parser(
        "run",
        help="run MNE-BIDS-Pipeline with all MBP plugins (MBP arguments unchanged)",
        add_help=False,
    )

    p_info = sub.add_parser(
        "info", help="list plugins, stages, steps and every option with its default"
    )
    p_info.set_defaults(func=cmd_info)

    p_demo = sub.add_parser(
        "demo",
        help="build the offline demo dataset and run the full pipeline on it",
        description="Build the offline demo MEG dataset (BIDS raw data, FreeSurfer "
        "subject, MBP config) in DIRECTORY and run MBP on it with the laminar stage "
        "(every stage; one subject: no group average), ending with the path of the "
        "HTML report.",
    )
    p_demo.add_argument("directory", nargs="?", default="mne-laminar-demo",
                        help="where to write the demo (default: ./mne-laminar-demo)")
    p_demo.add_argument("--subjects", type=int, default=1, help="number of subjects")
    p_demo.add_argument("--seed", type=int, default=42, help="random seed")
    p_demo.add_argument("--system", default="vectorview",
                        choices=MEG_SYSTEMS,
                        help="MEG array: Vectorview-like 306 channels, CTF-275 (axial "
                        "gradiometers, references, grade-3 compensation) or on-scalp OPM")
    p_demo.add_argument("--no-run", action="store_true", help="only write the data")
    p_demo.add_argument("--n_jobs", type=int, default=None, help="MBP n_jobs")
    p_demo.add_argument("--overwrite", action="store_true",
                        help="delete and rebuild DIRECTORY/bids and DIRECTORY/demo_config.py "
                        "whatever the folder holds (without it: only an empty folder "
                        "or a demo made with the same settings)")
    p_demo.add_argument("--no-xvfb", action="store_true",
                        help="do not start a private Xvfb when no display is set")
    p_demo.add_argument("--blas-threads", type=_blas_threads_arg, default=None,
                        metavar="N", help=BLAS_THREADS_HELP)
    p_demo.set_defaults(func=cmd_demo)

    p_sys = sub.add_parser("sys-info", help="print versions of everything that matters")
    p_sys.set_defaults(func=cmd_sys_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    # `run` passes everything through, including -h and unknown options
    if argv and argv[0] == "run":
        # this package's own options come first; everything after goes to MBP
        no_xvfb, blas_threads, rest = False, None, argv[1:]
        while rest and (rest[0] == "--no-xvfb" or rest[0].startswith("--blas-threads")):
            arg = rest.pop(0)
            if arg == "--no-xvfb":
                no_xvfb = True
                continue
            value = arg.split("=", 1)[1] if "=" in arg else (rest.pop(0) if rest else "")
            try:
                blas_threads = _blas_threads_arg(value)
            except argparse.ArgumentTypeError as exc:
                print(f"{PROG} run: error: argument --blas-threads: {exc}", file=sys.stderr)
                return 2
        args = argparse.Namespace(
            command="run", func=cmd_run, no_xvfb=no_xvfb, blas_threads=blas_threads,
            mbp_args=rest,
        )  # fmt: skip
    else:
        args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .pipeline.host import PluginError

        if os.environ.get("MNE_LAMINAR_DEBUG") or os.environ.get(
            "_MNE_BIDS_STUDY_TESTING", ""
        ).lower() == "true":
            raise
        kind = "plugin error" if isinstance(exc, PluginError) else type(exc).__name__
        print(f"{PROG}: {kind}: {exc}", file=sys.stderr)
        print("(set MNE_LAMINAR_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
