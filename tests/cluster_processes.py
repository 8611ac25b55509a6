"""A real multi-process Dask cluster for tests: a ``dask scheduler`` process and ``dask worker``
processes started with subprocess (as a user starts them), on a free loopback port, each killed by
its PID at the end. Not a test module: imported by the tests that need separate processes.

    with ProcessCluster(tmp_path) as pc:
        pc.add_worker()                      # cwd, extra environment, a command prefix are options
        client = pc.client()                 # waits for the workers
        ...

``prefix`` runs the worker under another command, e.g. ``["unshare", "-m", "sh", "-c",
"mount --bind A B && exec \\"$0\\" \\"$@\\""]`` to give it its own view of the file system.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

def _dask_cli():
    """The ``dask`` command of this interpreter's environment (the venv's ``bin/dask``)."""
    exe = os.path.join(os.path.dirname(sys.executable), "dask")
    if os.path.exists(exe):
        return [exe]
    found = shutil.which("dask")
    if found is None:
        raise RuntimeError("the 'dask' command is not installed next to this Python (dask[distributed])")
    return [found]


class ProcessCluster:
    """A scheduler and workers as separate processes; ``close()`` (or the ``with`` block's end)
    kills every process started here by PID."""

    def __init__(self, workdir, startup_timeout=60.0):
        self.workdir = os.fspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.scheduler_file = os.path.join(self.workdir, "scheduler.json")
        if os.path.exists(self.scheduler_file):  # a previous scheduler's address: not ours
            os.unlink(self.scheduler_file)
        self.timeout = startup_timeout
        self.procs = []
        self._clients = []
        self.scheduler = self._start(_dask_cli() + [
            "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
            "--scheduler-file", self.scheduler_file], "scheduler")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.scheduler_file):
                try:
                    with open(self.scheduler_file) as fh:
                        self.address = json.load(fh)["address"]
                    break
                except (ValueError, KeyError):
                    pass
            if self.scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler exited: {self._log('scheduler')}")
            time.sleep(0.1)
        else:
            self.close()
            raise RuntimeError(f"dask scheduler did not start within {self.timeout} s")

    def _log(self, name):
        path = os.path.join(self.workdir, f"{name}.log")
        try:
            with open(path) as fh:
                return fh.read()[-3000:]
        except OSError:
            return ""

    def _start(self, argv, name, cwd=None, env=None):
        log = open(os.path.join(self.workdir, f"{name}.log"), "w")
        full_env = dict(os.environ)
        full_env.update(env or {})
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd or self.workdir,
                             env=full_env, start_new_session=True)
        log.close()
        self.procs.append(p)
        return p

    def add_worker(self, cwd=None, env=None, prefix=(), nthreads=1, name=None):
        """Start one ``dask worker`` process (1 worker, ``nthreads`` threads) in ``cwd``."""
        name = name or f"worker{len(self.procs)}"
        argv = list(prefix) + _dask_cli() + [
            "worker", self.address, "--nworkers", "1", "--nthreads", str(nthreads),
            "--no-dashboard", "--no-nanny", "--name", name,
            "--local-directory", os.path.join(self.workdir, name)]
        return self._start(argv, name, cwd=cwd, env=env)

    def client(self, n_workers=None):
        """A ``distributed.Client`` of this cluster, after ``n_workers`` (default: all started)
        workers have joined."""
        import distributed
        c = distributed.Client(self.address, timeout=self.timeout, set_as_default=False)
        self._clients.append(c)
        n = len(self.procs) - 1 if n_workers is None else n_workers
        try:
            c.wait_for_workers(n, timeout=self.timeout)
        except Exception:
            logs = {f"worker{i}": self._log(f"worker{i}") for i in range(1, len(self.procs))}
            raise RuntimeError(f"{n} worker(s) did not join within {self.timeout} s: {logs}") from None
        return c

    def kill(self, proc):
        """SIGKILL one process started here (and its process group)."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)

    def close(self):
        for c in self._clients:
            try:
                c.close(timeout=5)
            except Exception:  # noqa: BLE001 - the scheduler may be gone already
                pass
        for p in reversed(self.procs):
            self.kill(p)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
