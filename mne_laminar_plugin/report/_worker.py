"""A background process that draws figures of the laminar report sections.

The laminar steps draw their report figures after their computation: VTK
surface maps (offscreen, :func:`.viz.plot_surface_map`) and matplotlib
figures. Drawing is single-threaded Python, so on the usual 2-core node one
core would idle while the other draws. The steps therefore hand figures to
one persistent worker process (:func:`submit`, through
:func:`.viz.submit_surface_map` and :func:`.viz.submit_figure`) as soon as
their data are known, go on with their files (and other figures), and
collect the images when they add them to the report.

The worker is a plain ``python -m mne_laminar_plugin.report._worker``
child reading requests on its stdin and answering on its stdout
(length-prefixed pickles, between this package's own two processes only).
It takes a request only when it is free (it says so); until then the
request waits in this process, and a step that needs its figure before the
worker got to it draws it itself (:meth:`RenderWorker.withdraw`). The worker
draws on the rendering path the run decided (:mod:`._render`; the decision's
environment variables are sent to it, :func:`sync_environ`), exits when its
stdin closes (the run ends or is killed) and writes no files. When it cannot
start, or dies, every figure is drawn in the calling process instead
(``MNE_LAMINAR_RENDER_WORKER=0`` forces that).
"""

from __future__ import annotations

import atexit
import collections
import os
import pickle
import struct
import subprocess
import sys
import threading
from concurrent.futures import Future

import numpy as np

#: environment variable: ``0`` draws every figure in the calling process
WORKER_ENV = "MNE_LAMINAR_RENDER_WORKER"
#: a request names a function of this package's library (never of ``pipeline``,
#: so that the worker imports neither MBP nor pluggy)
_LIBRARY = "mne_laminar_plugin."
_HEADER = struct.Struct(">Q")
#: what the worker sends when it is free to take a request
_READY = "ready"


class WorkerGone(RuntimeError):
    """The render worker is not running (did not start, or died)."""


def _frame(obj) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _read_frame(read) -> bytes | None:
    """One frame's pickle, read with ``read(n)`` (fewer bytes at the end); None at the end."""
    head = read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    data = read(size)
    return data if len(data) == size else None


def enabled() -> bool:
    """Whether figures may be drawn by a worker (``MNE_LAMINAR_RENDER_WORKER``).

    Not on Windows, whose pipes ``select`` cannot watch.
    """
    if sys.platform == "win32":
        return False
    return os.environ.get(WORKER_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _render_environ() -> dict[str, str | None]:
    """The environment variables the worker's drawing depends on (None: unset)."""
    from ._render import _DETAIL_ENV, _OPENGL_ENV, _REASON_ENV, RENDER_ENV

    keys = (RENDER_ENV, _REASON_ENV, _DETAIL_ENV, _OPENGL_ENV, "DISPLAY",
            "VTK_DEFAULT_OPENGL_WINDOW", "MNE_3D_OPTION_MULTI_SAMPLES")  # fmt: skip
    return {key: os.environ.get(key) for key in keys}


def child_environ(**updates: str) -> dict[str, str]:
    """This process's environment for a child process, with its BLAS thread limit.

    A limit set with threadpoolctl (``mne-laminar --blas-threads``) is not in
    the environment: the child gets it as ``OPENBLAS_NUM_THREADS`` (and the
    OpenMP/MKL equivalents), so that it computes, and reports, the same.
    """
    try:
        from threadpoolctl import threadpool_info

        counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception:  # pragma: no cover - threadpoolctl is a dependency
        counts = []
    env = dict(os.environ)
    if counts:
        n = str(max(counts))
        env.update(OPENBLAS_NUM_THREADS=n, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)
    env.update(updates)
    return env


class RenderWorker:
    """One worker process and the futures of the requests sent to it.

    Requests wait in :attr:`_queue` until the worker says it is free; a
    writer thread then sends the next one, a reader thread completes the
    futures. :meth:`withdraw` takes back a request the worker has not got.
    """

    def __init__(self) -> None:
        self.pid_parent = os.getpid()
        # this process's BLAS threads: the worker's system information says the same
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=child_environ(),
        )  # fmt: skip
        self._cv = threading.Condition()
        self._queue: collections.deque = collections.deque()  # (job, frame)
        self._pending: dict[int, Future] = {}
        self._next_id = 0
        self._free = 0  # requests the worker is ready to take
        self._gone: str | None = None
        self.environ: dict | None = None  # as last sent (sync_environ)
        #: ``mne.sys_info()`` as the worker sees it, from the last environment sync
        self.system_info: Future | None = None
        for target, name in ((self._write_requests, "requests"), (self._read_answers, "answers")):
            threading.Thread(target=target, daemon=True,
                             name=f"mne-laminar-render-{name}").start()  # fmt: skip

    @property
    def alive(self) -> bool:
        return self._gone is None and self._proc.poll() is None

    def submit(self, func, args: tuple, kwargs: dict) -> Future:
        """Queue one request; the future holds the function's return value."""
        future: Future = Future()
        with self._cv:
            if self._gone is not None:
                raise WorkerGone(self._gone)
            job = self._next_id
            self._next_id += 1
            future.job = job  # type: ignore[attr-defined]
            self._pending[job] = future
        frame = _frame((job, func, args, kwargs))  # outside the lock: it may be large
        with self._cv:
            if self._gone is not None:
                self._pending.pop(job, None)
                raise WorkerGone(self._gone)
            self._queue.append((job, frame))
            self._cv.notify_all()
        return future

    def withdraw(self, future: Future) -> bool:
        """Take back a request the worker has not received; True if it was."""
        job = getattr(future, "job", None)
        with self._cv:
            for item in self._queue:
                if item[0] == job:
                    self._queue.remove(item)
                    self._pending.pop(job, None)
                    return True
        return False

    def _fail(self, reason: str) -> None:
        """Mark the worker gone; every unanswered request raises :class:`WorkerGone`."""
        with self._cv:
            self._gone = self._gone or reason
            pending, self._pending = self._pending, {}
            self._queue.clear()
            self._cv.notify_all()
        for future in pending.values():
            future.set_exception(WorkerGone(self._gone))

    def _write_requests(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._gone is not None
                                  or (self._free > 0 and self._queue))  # fmt: skip
                if self._gone is not None:
                    break
                _, frame = self._queue.popleft()
                self._free -= 1
            try:
                self._proc.stdin.write(frame)
                self._proc.stdin.flush()
            except (OSError, ValueError) as exc:  # broken pipe: the worker died
                self._fail(f"the render worker is gone ({exc})")
                break
        try:
            self._proc.stdin.close()  # the worker exits when its stdin closes
        except OSError:
            pass

    def _read_answers(self) -> None:
        try:
            while True:
                frame = _read_frame(self._proc.stdout.read)
                if frame is None:
                    break
                answer = pickle.loads(frame)
                if answer == _READY:
                    with self._cv:
                        self._free += 1
                        self._cv.notify_all()
                    continue
                job, ok, value = answer
                with self._cv:
                    future = self._pending.pop(job, None)
                if future is None:
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except Exception as exc:  # a garbled answer: treat as gone
            reason = f"the render worker's answer could not be read ({exc})"
        else:
            reason = f"the render worker exited (code {self._proc.wait()})"
        self._fail(reason)

    def close(self) -> None:
        """Stop the worker: it exits after the request it is drawing (not waited for)."""
        self._fail("closed")


_WORKER: RenderWorker | None = None
_WORKER_FAILED = False
_START_LOCK = threading.RLock()


def get_worker(start: bool = True) -> RenderWorker | None:
    """This process's worker; None if disabled or dead.

    ``start`` starts one if there is none (and none died in this process).
    """
    global _WORKER, _WORKER_FAILED
    if not enabled():
        return None
    with _START_LOCK:
        if _WORKER is not None and _WORKER.pid_parent != os.getpid():
            _WORKER = None  # inherited by a fork: not ours to use
        if _WORKER is not None and not _WORKER.alive:
            _WORKER, _WORKER_FAILED = None, True  # died: draw in-process from now on
        if _WORKER is None and start and not _WORKER_FAILED:
            try:
                _WORKER = RenderWorker()
            except OSError as exc:
                from mne.utils import logger

                logger.info(f"Report figures are drawn in this process ({exc})")
                _WORKER_FAILED = True
        return _WORKER


def prestart() -> None:
    """Start the worker now, so that its imports overlap the run's own start-up.

    It draws nothing before it has the run's rendering decision
    (:func:`sync_environ`).
    """
    get_worker(start=True)


def sync_environ(*, decide: bool = True) -> None:
    """Send the run's rendering decision to the worker, and ask its ``sys_info``.

    ``mne-laminar`` calls this once it has decided (:func:`..cli.render_3d`);
    :func:`submit` calls it too, and with ``decide`` a process that has no
    decision yet (the library used from a script) probes once here
    (:func:`._render.decide_in_process`). Nothing is sent when the worker has
    the decision already.
    """
    from ._render import current_path, decide_in_process

    with _START_LOCK:
        worker = _WORKER
        if worker is None or not worker.alive:
            return
        if current_path() is None:
            if not decide:
                return
            decide_in_process()
        environ = _render_environ()
        if worker.environ == environ:
            return
        try:
            worker.submit(_apply_environ, (environ,), {})
            worker.system_info = worker.submit(system_info, (), {})
        except WorkerGone:
            return
        worker.environ = environ


def shutdown() -> None:
    """Stop this process's worker (the next request starts a new one)."""
    global _WORKER, _WORKER_FAILED
    with _START_LOCK:
        if _WORKER is not None and _WORKER.pid_parent == os.getpid():
            _WORKER.close()
        _WORKER, _WORKER_FAILED = None, False


def submit(func, *args, **kwargs) -> Future:
    """Run ``func(*args, **kwargs)`` in the worker; returns a future of its value.

    ``func`` is a module-level function (or a class's method) of this
    package's library. Raises :class:`WorkerGone` when there is no worker;
    the future raises it when the worker dies before answering, and the
    function's own exception when it fails there.
    """
    module = getattr(func, "__module__", "") or ""
    if not module.startswith(_LIBRARY) or module.startswith(_LIBRARY + "pipeline"):
        raise ValueError(
            f"func must be a function of the mne_laminar_plugin library, got {func!r}"
        )
    worker = get_worker()
    if worker is None:
        raise WorkerGone("no render worker (disabled, or it could not start or died)")
    sync_environ()
    return worker.submit(func, args, kwargs)


def withdraw(future: Future) -> bool:
    """Take back a request the worker has not received (the caller does it); True if so."""
    worker = _WORKER
    return worker is not None and worker.withdraw(future)


class Pending:
    """A call running in the render worker, with this process as the fallback.

    :meth:`result` returns what ``func(*args, **kwargs)`` returns (or raises
    what it raises). Without a worker (``MNE_LAMINAR_RENDER_WORKER=0``, or
    it could not start or died) the call runs in this process when
    :meth:`result` is called. Made for the laminar steps' figures
    (:func:`.viz.submit_figure`, :func:`.viz.submit_surface_map`) and other
    work they can hand over (e.g. the accuracy's cross-validation).
    """

    def __init__(self, func, args: tuple = (), kwargs: dict | None = None, *,
                 steal: bool = True) -> None:  # fmt: skip
        self._call = (func, args, kwargs or {})
        self._steal = steal
        self._future = None
        try:
            self._future = submit(func, *args, **(kwargs or {}))
        except WorkerGone:
            pass  # run in this process by result()

    def result(self):
        """The call's value; waits for the worker if it is on it.

        If the worker has not got to it yet (busy, or still starting), the
        call runs here instead, unless made with ``steal=False``.
        """
        if self._future is not None and not (self._steal and withdraw(self._future)):
            try:
                return self._future.result()
            except WorkerGone as exc:
                from mne.utils import logger

                logger.info(f"{exc}: running {self._call[0].__name__} in this process")
        self._future = None
        func, args, kwargs = self._call
        return func(*args, **kwargs)


def results(pending) -> list:
    """The values of several :class:`Pending` calls, in their order.

    Taken from the last: the worker works from the first, so this process
    does the ones the worker has not got to (from the back) instead of
    waiting for each in turn.
    """
    pending = list(pending)
    return [job.result() for job in pending[::-1]][::-1]


@atexit.register
def _close_at_exit() -> None:
    if _WORKER is not None and _WORKER.pid_parent == os.getpid():
        _WORKER.close()


# ------------------------------------------------------- system information
_SYSTEM_INFO: str | None = None


def system_info() -> str:
    """``mne.sys_info()`` as text (cached in this process)."""
    global _SYSTEM_INFO
    if _SYSTEM_INFO is None:
        import io

        import mne

        from ._render import known_gpu_info

        with io.StringIO() as fid, known_gpu_info():
            mne.sys_info(fid)
            _SYSTEM_INFO = fid.getvalue()
    return _SYSTEM_INFO


def system_info_from_worker(timeout: float = 60.0) -> str | None:
    """The worker's ``mne.sys_info()`` text, or None when this process should compute it.

    MBP adds ``mne.sys_info()`` to the report the first time a step of the
    process saves it (1-2 s: a subprocess for the OpenGL version, Qt, the
    versions of ~40 packages); the worker computes it as soon as it has the
    run's rendering decision, on the other core. If the worker is computing
    it, this waits for it (less than computing it again); if the worker has
    not started it (busy), it is taken back and None says: compute it here.
    """
    worker = get_worker(start=False)
    future = getattr(worker, "system_info", None)
    if future is None or withdraw(future):
        return None
    try:
        return future.result(timeout=timeout)
    except Exception:  # the worker died, or it failed there: MBP's own then
        return None


# ----------------------------------------------------------------- worker side
def _apply_environ(environ: dict) -> None:
    """Set the run's rendering decision in the worker's environment."""
    from ._render import set_environ

    set_environ(environ)


def _warm_up_parts():
    """What the first figures would pay, in parts, paid while nothing is asked.

    Before the run's decision: matplotlib (and its fonts) and pyvista, which
    do not depend on it. After it, between requests, in the order the steps
    need them: one small offscreen render (GL context, shaders), the
    library's figure code, scikit-learn (the accuracy's cross-validation).
    """
    import matplotlib

    matplotlib.use("agg")  # as MBP's steps draw (and as sys_info then says)
    from . import viz

    viz._PLOTTERS = {}  # this process draws many maps: keep the GL contexts
    viz.report_image(viz.plot_histograms({"x": np.arange(10.0)}, title="warm-up"))
    try:  # the slowest import (~0.6 s)
        import pyvista  # noqa: F401
    except ImportError:  # the [render] extra is not installed: maps in matplotlib
        pass
    yield  # (the decision is needed from here on)
    from ._render import current_path

    path = current_path()
    if path is not None and path.is_3d:
        rr = np.array([[0.0, 0, 0], [0.01, 0, 0], [0, 0.01, 0], [0, 0, 0.01]])
        tris = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
        try:
            viz.plot_surface_map(rr, tris, np.arange(4.0), title="warm-up", views=("lateral",),
                                 backend="pyvista")  # fmt: skip
        except Exception:  # the real requests fall back as plot_surface_map does
            pass
        yield
    from .. import inverse  # noqa: F401  (the figures' objects)

    yield
    from .. import simulation  # noqa: F401

    yield
    import sklearn.linear_model  # noqa: F401  (the accuracy's cross-validation)
    import sklearn.model_selection  # noqa: F401


def _exit_when_orphaned(fd: int) -> None:
    """Exit as soon as the run closes the requests (ends, or is killed).

    Even in the middle of a request or of the warm-up: nothing is asked any
    more, nothing is written, and a caller that captures the run's stderr
    waits for this process to let it go.
    """
    import select

    poller = select.poll()
    poller.register(fd, select.POLLHUP | select.POLLERR)
    while True:
        for _, event in poller.poll():
            if event & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                sys.stderr.flush()
                os._exit(0)


def _read_exact(fd: int, size: int) -> bytes:
    """``size`` bytes from the file descriptor (fewer at its end)."""
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


#: the worker's niceness: what it does can wait for the run's own processes
#: (the demo's data build, MBP's steps) when more is runnable than there are cores
NICE = 5


def _serve() -> None:
    import select

    try:
        os.nice(NICE)
    except (AttributeError, OSError):  # pragma: no cover - not on this platform
        pass
    requests = sys.stdin.fileno()  # unbuffered: select() tells whether a request waits
    threading.Thread(target=_exit_when_orphaned, args=(requests,), daemon=True).start()
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed (by Python or VTK's C++) goes to stderr
    sys.stdout = sys.stderr
    warm_up = _warm_up_parts()
    next(warm_up)  # what does not depend on the run's decision, before the first request
    decided = False  # the rest of the warm-up waits for the run's decision
    done = object()
    while True:
        try:
            answers.write(_frame(_READY))
            answers.flush()
        except OSError:  # nobody is listening any more
            return
        while decided and warm_up is not None and not select.select([requests], [], [], 0)[0]:
            if next(warm_up, done) is done:
                warm_up = None
        frame = _read_frame(lambda n: _read_exact(requests, n))
        if frame is None:  # the run ended (or was killed)
            return
        job, func, args, kwargs = pickle.loads(frame)
        try:
            answer = (job, True, func(*args, **kwargs))
        except Exception as exc:  # the caller gets the exception itself
            answer = (job, False, exc)
        try:
            frame = _frame(answer)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            frame = _frame((job, False, RuntimeError(f"{type(exc).__name__}: {exc}")))
        try:
            answers.write(frame)
            answers.flush()
        except OSError:
            return
        # (by name: this module runs as __main__ here, the request names the package's)
        if getattr(func, "__name__", "") == "system_info":
            decided = True  # asked right after the decision (sync_environ)


if __name__ == "__main__":
    _serve()
    # the run has ended: nothing here needs finalizing (no file is written), and
    # a caller capturing the run's stderr waits for this process to let it go
    sys.stderr.flush()
    os._exit(0)
