"""Provenance for reports and golden files: what ran, where, with which versions.

:func:`provenance` returns a JSON-able dict with

- ``refvae`` (the package version) and ``git_revision`` (``git rev-parse HEAD`` run in the
  package's own directory; ``"unknown"`` when that is not a git checkout or git is missing) and
  ``git_dirty`` (``True`` when ``git status --porcelain`` lists changes, ``None`` when unknown);
- the versions of ``python``, ``numpy``, ``numba``, ``scipy`` (and of the optional packages
  ``mpmath``, ``matplotlib``, ``sklearn``, ``tqdm``, ``None`` when not installed);
- ``platform``, ``machine``, ``cpu_model`` (``/proc/cpuinfo`` on Linux, else
  ``platform.processor()``), ``cpu_count``;
- ``numba_threads`` and ``blas_threads`` (the thread counts in effect; see
  :func:`limit_threads`).

Nothing here raises: a value that cannot be determined is ``"unknown"`` or ``None``.
:data:`REPRODUCIBILITY` is the one-line reproducibility promise that reports carry.

Runs and interruption: :class:`InterruptGuard` (a context manager used by the command line and by
``refvae.tools.report.run_validation``) makes SIGINT (Ctrl-C) and SIGTERM raise :class:`Interrupted`
(a ``KeyboardInterrupt``) for the duration of a run and records which signal came, and
:func:`interrupt_signal` recognises an interrupt behind another exception: a Ctrl-C that lands
while a Numba dispatcher is running surfaces as ``SystemError("... returned a result with an
exception set")`` whose ``__cause__``/``__context__`` is the ``KeyboardInterrupt``.

References: STYLE.md ("Reports and golden files carry provenance").
"""

from __future__ import annotations

import errno
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from importlib import metadata

__all__ = ["provenance", "git_revision", "cpu_model", "limit_threads", "package_version",
           "REPRODUCIBILITY", "run_identity", "Interrupted", "InterruptGuard", "interrupt_signal",
           "interrupt_exit_code", "LOCK_FILE", "DirectoryLock", "DirectoryInUseError"]

#: The reproducibility promise, in one line (reports and histories carry it).
REPRODUCIBILITY = ("bit-identical on this machine for any number of refvae's (Numba) threads and on "
                   "repeated runs; another BLAS thread count or kernel (another machine, BLAS build) "
                   "can move the last printed digit (matrix products' rounding; README, "
                   "Reproducibility)")

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def _git(*args, timeout=5.0):
    """stdout of ``git <args>`` run in the package directory, or None on any failure."""
    try:
        out = subprocess.run(["git", *args], cwd=_PKG_DIR, capture_output=True, text=True,
                             timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip()


def git_revision() -> str:
    """``git rev-parse HEAD`` in the package's repository, or ``"unknown"``."""
    rev = _git("rev-parse", "HEAD")
    return rev if rev else "unknown"


def _git_dirty():
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``, else "unknown"."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(name: str):
    """Installed version of a distribution (``name`` a str), or None."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a distribution name (str), got {type(name).__name__}")
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [d.get("num_threads") for d in threadpool_info() if d.get("user_api") == "blas"]
    return max(counts) if counts else None


@contextmanager
def limit_threads(n):
    """Context manager: ``n`` threads for Numba's parallel kernels and for BLAS (via threadpoolctl,
    if installed); the previous settings are restored on exit. ``n`` is an integer >= 1
    (TypeError/ValueError otherwise); more than ``NUMBA_NUM_THREADS`` is clamped to it.

    On a small machine shared with other jobs, multi-threaded BLAS on the small matrices of this
    model spends its time waiting for busy cores (a (100, 256) @ (256, 1088) product measured 13x
    slower with 2 OpenBLAS threads than with 1 on a loaded 2-core machine), so the command line
    defaults to one thread.
    """
    import numba

    from .._validation import check_positive_int
    n = min(check_positive_int(n, "n"), numba.config.NUMBA_NUM_THREADS)
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    limiter = None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        import numpy  # noqa: F401  load both BLAS libraries (numpy's and scipy's) before limiting:
        import scipy.linalg  # noqa: F401  threadpoolctl only limits libraries already loaded
        limiter = threadpool_limits(limits=n, user_api="blas")
    try:
        yield n
    finally:
        numba.set_num_threads(old)
        if limiter is not None:
            limiter.restore_original_limits()


def provenance() -> dict:
    """Versions, revision, platform and thread counts (see the module docstring)."""
    import numba
    import numpy
    import scipy

    from .. import __version__
    return {
        "refvae": __version__,
        "git_revision": git_revision(),
        "git_dirty": _git_dirty(),
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "scipy": scipy.__version__,
        "mpmath": package_version("mpmath"),
        "matplotlib": package_version("matplotlib"),
        "sklearn": package_version("scikit-learn"),
        "tqdm": package_version("tqdm"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
        "blas_threads": _blas_threads(),
    }


# =========================================================================== runs and interruption

def run_identity() -> dict:
    """``{"pid", "host", "started"}`` of this process (written into reports and lock files)."""
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}


class Interrupted(KeyboardInterrupt):
    """Raised by :class:`InterruptGuard`'s handlers; ``signal_name`` is "SIGINT" or "SIGTERM"."""

    def __init__(self, signal_name="SIGINT"):
        super().__init__(signal_name)
        self.signal_name = signal_name


def interrupt_signal(exc, guard=None):
    """The name of the signal behind ``exc`` ("SIGINT", "SIGTERM"), or None if it is no interrupt.
    ``exc`` is an exception (or None); anything else is a TypeError.

    ``exc`` is an interrupt if it, or any exception on its ``__cause__``/``__context__`` chain, is
    a ``KeyboardInterrupt`` (a Ctrl-C inside a Numba call arrives as a ``SystemError`` caused by
    one), or if ``guard`` (an :class:`InterruptGuard`) has received a signal: then whatever
    exception the signal provoked is the interrupt, never a failure of the computation.
    """
    if exc is not None and not isinstance(exc, BaseException):
        raise TypeError(f"exc must be an exception, got {type(exc).__name__}")
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt):
            return getattr(e, "signal_name", None) or (guard.received if guard else None) or "SIGINT"
        todo += [e.__cause__, e.__context__]
    if guard is not None and guard.received:
        return guard.received
    return None


def interrupt_exit_code(signal_name):
    """128 + the signal number: 130 for SIGINT (Ctrl-C), 143 for SIGTERM (others: ValueError)."""
    if not isinstance(signal_name, str):
        raise TypeError(f"signal_name must be 'SIGINT' or 'SIGTERM', got {type(signal_name).__name__}")
    if signal_name not in ("SIGINT", "SIGTERM"):
        raise ValueError(f"signal_name must be 'SIGINT' or 'SIGTERM', got {signal_name!r}")
    return 143 if signal_name == "SIGTERM" else 130


class InterruptGuard:
    """Context manager: for its duration SIGINT and SIGTERM raise :class:`Interrupted`.

    Installed only in the main thread (elsewhere it does nothing but :meth:`check`); the previous
    handlers are restored on exit, and guards nest (the inner one shares the outer one's record).
    ``received`` is the name of the first signal received ("SIGINT"/"SIGTERM") or None. While
    ``cleaning`` is True (set it first thing when handling the interrupt, and while writing the
    final partial report) further signals are recorded but do not raise, so the clean-up finishes.

    A ``KeyboardInterrupt`` can be swallowed: raised inside a finaliser (llvmlite's ``__del__``
    during a Numba compilation was seen to print "Exception ignored ... KeyboardInterrupt" and let
    the run end "complete"). So after a signal the interrupt is raised again every
    :attr:`REPEAT` seconds (``SIGALRM`` timer, POSIX) until the run sets ``cleaning``, and
    :meth:`check` raises it at the run's own checkpoints (between steps).
    """

    _active = None  # the outermost active guard (main thread)
    REPEAT = 0.5    #: seconds between repeated interrupts until the run acknowledges one

    def __init__(self):
        self.received = None
        self._cleaning = False
        self._previous = None
        self._alarm_previous = None

    @property
    def cleaning(self):
        return self._cleaning

    @cleaning.setter
    def cleaning(self, value):
        self._cleaning = bool(value)
        if self._cleaning:
            self._disarm()

    def _arm(self):
        if self._previous is None or not hasattr(signal, "setitimer"):
            return
        if self._alarm_previous is None:
            self._alarm_previous = signal.signal(signal.SIGALRM, self._repeat)
        signal.setitimer(signal.ITIMER_REAL, self.REPEAT)

    def _disarm(self):
        if self._alarm_previous is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._alarm_previous)
            self._alarm_previous = None

    def _repeat(self, signum, frame):
        if self.received is None or self._cleaning:
            return
        signal.setitimer(signal.ITIMER_REAL, self.REPEAT)
        raise Interrupted(self.received)

    def _handler(self, signum, frame):
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = name
        if not self._cleaning:
            self._arm()
            raise Interrupted(name)

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        outer = InterruptGuard._active
        if outer is not None:  # nested: share the outer guard's record
            return outer
        # a signal the process was started with ignored (SIG_IGN: SIGINT of a background job or of
        # a command run with `nohup ... &`) stays ignored, as Python itself leaves it
        self._previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)
                          if signal.getsignal(s) is not signal.SIG_IGN}
        for s in self._previous:
            signal.signal(s, self._handler)
        InterruptGuard._active = self
        return self

    def __exit__(self, *exc_info):
        if self._previous is not None:
            self._disarm()
            for s, h in self._previous.items():
                signal.signal(s, h if h is not None else signal.SIG_DFL)
            self._previous = None
            InterruptGuard._active = None
        return False

    def check(self):
        """Raise :class:`Interrupted` if a signal was received (and we are not cleaning up)."""
        if self.received and not self.cleaning:
            raise Interrupted(self.received)


# =========================================================================== output-directory locks

LOCK_FILE = ".refvae.lock"  #: the lock file of an output directory (see :class:`DirectoryLock`)


class DirectoryInUseError(OSError):
    """Another refvae run holds the lock of an output directory (the CLI: one line, exit 2)."""


class DirectoryLock:
    """Context manager: an exclusive lock on an output directory, held for the whole run.

    ``fcntl.flock`` on ``<directory>/.refvae.lock`` (created if missing; never deleted, so no two
    runs can lock different files of the same name). The lock file holds the holder's pid, host,
    start time and command (JSON); a second run into the same directory gets a
    :class:`DirectoryInUseError` naming the directory and that pid. The operating system releases
    the lock when the holder exits in any way, SIGKILL included, so a lock is never stale. Where
    ``fcntl`` is unavailable (Windows) no lock is taken.
    """

    def __init__(self, directory, command="refvae"):
        if not isinstance(command, str):
            raise TypeError(f"command must be a str (recorded in the lock file), got "
                            f"{type(command).__name__}")
        from ..io import _fspath  # lazily: the CLI starts without NumPy
        self.directory = _fspath(directory, "directory")
        self.path = os.path.join(self.directory, LOCK_FILE)
        self.command = command
        self.fd = None
        self.info = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OSError(f"cannot create the lock file {self.path!r}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = {}
            try:
                holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
            except (OSError, ValueError):
                pass
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OSError(f"cannot lock {self.path!r}: {exc.strerror or exc}") from None
            who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
                   f"{holder.get('started', '?')}: {holder.get('command', '?')}"
                   if isinstance(holder, dict) and holder else "pid unknown")
            raise DirectoryInUseError(
                f"output directory {self.directory!r} is in use by another refvae run ({who}); "
                f"wait for it to finish or choose another output directory") from None
        self.info = {**run_identity(), "command": self.command}
        data = json.dumps(self.info).encode("utf-8")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError:
            pass
        self.fd = fd
        return self

    def __exit__(self, *exc_info):
        if self.fd is not None:
            import fcntl
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        return False
