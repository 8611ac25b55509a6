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

References: STYLE.md ("Reports and golden files carry provenance").
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from contextlib import contextmanager
from importlib import metadata

__all__ = ["provenance", "git_revision", "cpu_model", "limit_threads", "package_version"]

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
    """Installed version of a distribution, or None."""
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
    if installed); the previous settings are restored on exit.

    On a small machine shared with other jobs, multi-threaded BLAS on the small matrices of this
    model spends its time waiting for busy cores (a (100, 256) @ (256, 1088) product measured 13x
    slower with 2 OpenBLAS threads than with 1 on a loaded 2-core machine), so the command line
    defaults to one thread.
    """
    import numba
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
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

    from . import __version__
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
