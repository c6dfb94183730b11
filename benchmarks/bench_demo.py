"""Benchmark: the offline demo end to end, and the laminar stage alone.

Runs, each as a fresh ``mne-laminar`` process (as a user would):

1. ``demo``: ``mne-laminar demo DIR`` in an empty folder (data, MBP's ``all``,
   the laminar stage);
2. ``laminar``: ``mne-laminar run DIR/demo_config.py --steps laminar --no-cache``
   on the result of 1.

For each it reports the wall time of the whole command (interpreter start to
exit), the time of the demo data (``make_demo_dataset``), of the rendering
path decision (the subprocess probes) and of every MBP and laminar step
(each step module's ``main``, timed in the process: wall time, and the CPU
time of the process, which depends less on other jobs). The child process is
this script itself with ``--child``: it wraps the step modules MBP runs and
then calls ``mne_laminar_plugin.cli.main``.

``--hide-xvfb`` removes every directory holding ``Xvfb`` from ``PATH`` and
unsets ``DISPLAY`` (a bare headless node); by default the environment is
used as it is. The load (``/proc/loadavg``) before and after each run is
printed next to the figures: the machine may be shared.

Usage::

    python benchmarks/bench_demo.py [--workdir DIR] [--hide-xvfb] [--blas-threads N]
        [--json out.json] [--laminar-only DEMO_DIR] [--cold] [--repeat N]

``--laminar-only DEMO_DIR`` skips run 1 and times run 2 on a finished demo.

``--cold`` deletes numba's on-disk caches of MNE and of this package first,
as on a new installation (the first run after ``pip install`` compiles the
kernels; ``mne-laminar demo`` compiles them in its figure worker while the
data are built). ``--repeat N`` runs everything N times and prints the
minimum, median and maximum of each figure. Each run also times a fixed
Python loop (``speed``), so that a slow spell of a shared machine shows.

``--blas-threads 1`` shows what a loaded machine costs: OpenBLAS's threads
spin while they wait for a core, so on a 2-core machine shared with other
jobs an SVD of MBP's inverse step took 17 s with 2 threads and 1.3 s with 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_TIMES_ENV = "_MNE_LAMINAR_BENCH_TIMES"


# ------------------------------------------------------------------ child
def _child(argv: list[str]) -> int:
    """Run ``mne-laminar`` with every MBP step, the data and the probes timed."""
    import atexit

    from mne_bids_pipeline import _config_utils, _main

    from mne_laminar_plugin import cli
    from mne_laminar_plugin.pipeline import host
    from mne_laminar_plugin.report import _render as _headless

    records: list[tuple[str, float, float]] = []

    def _timed(name, func):
        def wrapper(*args, **kwargs):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return func(*args, **kwargs)
            finally:
                records.append((name, time.perf_counter() - t0, time.process_time() - c0))

        wrapper.__bench__ = True
        return wrapper

    orig_install = host._install_stages

    def install(groups):
        orig_install(groups)
        get = _config_utils._get_step_modules

        def get_step_modules():
            mods = get()
            for modules in mods.values():
                for mod in modules:
                    if not getattr(mod.main, "__bench__", False):
                        step = f"{Path(mod.__file__).parent.name}/{Path(mod.__file__).stem}"
                        mod.main = _timed(step, mod.main)
            return mods

        _config_utils._get_step_modules = get_step_modules
        _main._get_step_modules = get_step_modules

    host._install_stages = install
    # the demo data are built by cli._build_demo (in a child process for `demo`)
    cli._build_demo = _timed("demo data", cli._build_demo)
    _headless.probe = _timed("3D probe", _headless.probe)  # (with what runs meanwhile)

    def dump():
        Path(os.environ[_TIMES_ENV]).write_text(json.dumps(records))

    atexit.register(dump)
    return cli.main(argv)


# ----------------------------------------------------------------- parent
def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _env(hide_xvfb: bool, blas_threads: int | None) -> dict:
    env = dict(os.environ)
    env.setdefault("MNE_BIDS_PIPELINE_FORCE_TERMINAL", "false")
    if blas_threads:
        for key in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[key] = str(blas_threads)
    if hide_xvfb:
        env.pop("DISPLAY", None)
        keep = [d for d in env.get("PATH", "").split(os.pathsep)
                if d and not (Path(d) / "Xvfb").exists()]  # fmt: skip
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), *keep])
    return env


def _clear_numba_caches() -> int:
    """Delete the numba cache files of MNE and of this package (a new installation)."""
    import mne

    import mne_laminar_plugin

    if os.environ.get("NUMBA_CACHE_DIR"):
        sys.exit("--cold: NUMBA_CACHE_DIR is set; clear that folder by hand instead")
    n = 0
    for pkg in (mne, mne_laminar_plugin):
        for path in Path(pkg.__file__).parent.rglob("__pycache__/*.nb[ic]"):
            path.unlink()
            n += 1
    return n


def _speed() -> float:
    """Seconds of a fixed pure-Python loop: the machine's speed right now."""
    t0 = time.perf_counter()
    total = 0
    for i in range(3_000_000):
        total += i * i
    return time.perf_counter() - t0


def _run(name: str, argv: list[str], env: dict, workdir: Path) -> dict:
    times = workdir / f"times-{name}.json"
    env = dict(env, **{_TIMES_ENV: str(times)})
    load_before = _load()
    speed = _speed()
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, __file__, "--child", *argv], env=env,
                         capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - t0
    if res.returncode:
        sys.exit(f"{name} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    path_line = next((ln for ln in res.stdout.splitlines() if "3D figures:" in ln), "")
    return dict(
        name=name, argv=argv, wall=wall, load_before=load_before, load_after=_load(),
        speed_s=speed,
        steps=json.loads(times.read_text()), render_path=path_line,
        blas_threads=env.get("OPENBLAS_NUM_THREADS"),
    )  # fmt: skip


def _table(run: dict) -> str:
    lines = [
        f"### `{' '.join(['mne-laminar', *run['argv']])}`",
        "",
        f"Wall time **{run['wall']:.1f} s** (load average before/after: "
        f"{run['load_before']} / {run['load_after']}, {os.cpu_count()} CPUs, "
        f"BLAS threads: {run['blas_threads'] or 'default'}, speed loop "
        f"{run['speed_s']:.3f} s{', numba caches cleared first' if run.get('cold') else ''})",
        f"Rendering path: `{run['render_path'].split('3D figures: ', 1)[-1]}`",
        "",
        "| part | wall (s) | CPU (s) |",
        "| --- | --- | --- |",
    ]
    steps = run["steps"]
    for name, wall, cpu in steps:
        if name != "3D probe" and wall >= 0.005:
            lines.append(f"| {name} | {wall:.2f} | {cpu:.2f} |")

    def total(keep):
        picked = [(w, c) for name, w, c in steps if keep(name)]
        return sum(w for w, _ in picked), sum(c for _, c in picked)

    probes = total(lambda n: n == "3D probe")
    mbp = total(lambda n: "/" in n and not n.startswith("laminar/"))
    lam = total(lambda n: n.startswith("laminar/"))
    timed = total(lambda n: n != "3D probe")[0] + probes[0]
    lines.append(f"| 3D path decision (test render; MBP imports meanwhile) | {probes[0]:.2f} | |")
    lines.append(f"| **MBP steps** | **{mbp[0]:.2f}** | {mbp[1]:.2f} |")
    lines.append(f"| **laminar steps** | **{lam[0]:.2f}** | {lam[1]:.2f} |")
    lines.append(f"| start-up (imports, config), exit | {run['wall'] - timed:.2f} | |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(_child(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--hide-xvfb", action="store_true",
                        help="no DISPLAY and no Xvfb on PATH (a bare headless node)")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="BLAS/OpenMP threads of the runs (default: the libraries' own)")
    parser.add_argument("--json", type=Path, default=None, help="write all numbers here")
    parser.add_argument("--laminar-only", type=Path, default=None, metavar="DEMO_DIR",
                        help="skip run 1: time only the laminar rerun of this finished demo")
    parser.add_argument("--cold", action="store_true",
                        help="delete numba's caches of MNE and this package first (a new "
                        "installation)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of everything")
    args = parser.parse_args()
    base = args.workdir or Path(tempfile.mkdtemp(prefix="bench-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    env = _env(args.hide_xvfb, args.blas_threads)
    if args.laminar_only is not None:
        demo_dir = args.laminar_only.resolve()
        if not (demo_dir / "demo_config.py").is_file():
            sys.exit(f"--laminar-only {demo_dir}: no demo_config.py there (a finished demo?)")
    all_runs = []
    for k in range(args.repeat):
        workdir = base / f"run{k + 1}" if args.repeat > 1 else base
        workdir.mkdir(parents=True, exist_ok=True)
        runs = []
        if args.laminar_only is None:
            demo_dir = workdir / "demo"
            if demo_dir.exists():
                sys.exit(f"{demo_dir} exists: pass an empty --workdir")
            cold = args.cold and _clear_numba_caches() > 0
            runs.append(dict(_run("demo", ["demo", str(demo_dir)], env, workdir), cold=cold))
        runs.append(_run("laminar", ["run", str(demo_dir / "demo_config.py"), "--steps",
                                     "laminar", "--no-cache"], env, workdir))  # fmt: skip
        print("\n\n".join(_table(run) for run in runs), flush=True)
        all_runs.append(runs)
    if args.repeat > 1:
        print("\n" + _summary(all_runs))
    if args.json:
        args.json.write_text(json.dumps(all_runs if args.repeat > 1 else all_runs[0], indent=2))


def _summary(all_runs: list[list[dict]]) -> str:
    """Minimum, median, maximum over the repeats of each command's wall time."""
    import statistics

    lines = ["| command | runs | min (s) | median (s) | max (s) | speed loop, median (s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for i, run in enumerate(all_runs[0]):
        walls = [runs[i]["wall"] for runs in all_runs]
        speeds = [runs[i]["speed_s"] for runs in all_runs]
        cmd = " ".join(["mne-laminar", *run["argv"][:1]])
        lines.append(f"| `{cmd}` | {len(walls)} | {min(walls):.1f} | "
                     f"{statistics.median(walls):.1f} | {max(walls):.1f} | "
                     f"{statistics.median(speeds):.3f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
