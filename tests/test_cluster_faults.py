"""The cluster path under faults, on a REAL multi-process cluster (``dask scheduler`` and ``dask
worker`` processes started with subprocess on free loopback ports, killed by PID at the end:
tests/cluster_processes.py).

- every worker killed mid-run, a fresh one started: the same bits as the undisturbed run (the
  queries travel in the task graph, so the scheduler can send them again);
- no workers, a worker paused for memory, a worker without refvae or with another version, an
  HTTP port (the scheduler's web server) given as the scheduler: a clear error within the timeout
  (each call runs in a thread that must answer well within pytest's patience, else the test fails
  as "hung");
- ``refvae stats`` losing its only worker, or the scheduler, mid-run: one line on stderr and a
  nonzero exit, no traceback.

Workers are made slow where a test must act mid-run: a worker started with ``SLOW`` replaces
``_shard_partial`` by a version that first sleeps (time, not CPU: the machine is shared), so "mid-run"
does not depend on the machine's speed. No tolerance is involved: results are compared bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip(
    "distributed", reason="the cluster path needs dask[distributed]: pip install refvae[scale]")

from cluster_processes import ProcessCluster  # noqa: E402

from refvae.tools import distributed as dist  # noqa: E402
from refvae.vae import VAE  # noqa: E402

HUNG = 120.0  # seconds: a call that has not answered by then is reported as hung (timeouts used: <= 5 s)


def _run_dask(setup):
    """``python -c`` code that runs ``setup`` and then the ``dask`` command given as the next argument."""
    return [sys.executable, "-c",
            setup + "; import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"]


HIDE_REFVAE = _run_dask("import sys; sys.modules['refvae'] = None")
OTHER_VERSION = _run_dask("import refvae; refvae.__version__ = '0.0.0+other'")


def slow(seconds):
    """A worker whose shard tasks sleep ``seconds`` first (same values)."""
    return _run_dask(
        "import time, refvae.tools.distributed._shards as s; f = s._shard_partial; "
        f"s._shard_partial = lambda *a: (time.sleep({seconds}), f(*a))[1]")


def within(fn, seconds=HUNG):
    """``fn()``'s result or exception, raised here; fails the test if it has not answered in time."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            out["error"] = exc
    t0 = time.monotonic()
    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(seconds)
    if th.is_alive():
        pytest.fail(f"hung: no answer within {seconds:g} s")
    out["seconds"] = time.monotonic() - t0
    if "error" in out:
        raise out["error"]
    return out["value"], out["seconds"]


def case(N=6000, L=4, M=60, seed=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(M, L)), rng.normal(size=(N, L)), rng.uniform(-2.0, 0.0, size=(N, L))


def _scheduler_tasks(client):
    """``{key prefix: [states]}`` of the scheduler's tasks (run on the scheduler: pickled by value)."""
    def states(dask_scheduler=None):
        out = {}
        for k, ts in dask_scheduler.tasks.items():
            name = k[0] if isinstance(k, tuple) else k
            out.setdefault(str(name).split("-")[0] if not str(name).startswith("refvae-") else "queries",
                           []).append(ts.state)
        return out
    return client.run_on_scheduler(states)


def wait_until(pred, seconds=HUNG, what="condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    pytest.fail(f"{what} not reached within {seconds:g} s")


# =========================================================================== recoverable queries

def test_every_worker_lost_then_a_fresh_one_gives_the_same_bits(tmp_path):
    """Both workers are killed once the queries are on them and shards are done; a new worker
    joins; the run finishes with the bits of the undisturbed run. (With the queries scattered to
    the workers, as before, this failed at once: FutureCancelledError '... already forgotten'.)"""
    z, m, v = case()
    chunk = 400  # 15 shards of 0.4 s
    with ProcessCluster(tmp_path) as pc:
        workers = [pc.add_worker(prefix=slow(0.4)), pc.add_worker(prefix=slow(0.4))]
        client = pc.client()
        want = dist.log_qz(z, m, v, client=client, chunk=chunk, worker_timeout=30)
        got = {}

        def run():
            got["value"] = dist.log_qz(z, m, v, client=client, chunk=chunk, worker_timeout=60)
        th = threading.Thread(target=run, daemon=True)
        th.start()
        wait_until(lambda: _scheduler_tasks(client).get("_shard_partial", []).count("memory") >= 1,
                   what="a shard done (so the queries are on the workers)")
        for w in workers:
            pc.kill(w)
        wait_until(lambda: not client.scheduler_info()["workers"], 30, "the scheduler seeing no worker")
        pc.add_worker(name="fresh")
        th.join(HUNG)
        assert not th.is_alive(), "hung after the fresh worker joined"
        assert "value" in got, "the run failed (see the thread's exception above)"
        assert np.array_equal(got["value"], want)


# =========================================================================== no hangs

def test_no_workers_is_a_clear_error_within_the_timeout(tmp_path):
    z, m, v = case(N=50, M=5)
    with ProcessCluster(tmp_path) as pc:
        with pytest.raises(dist.ClusterError,
                           match=r"no Dask worker has joined the scheduler tcp://127\.0\.0\.1:\d+ after 2 s"):
            within(lambda: dist.log_qz(z, m, v, scheduler=pc.address, worker_timeout=2))


def test_http_port_as_scheduler_is_a_clear_error(tmp_path):
    """The scheduler's web server (where the dashboard lives) given as the scheduler's address:
    before, distributed.Client waited for a handshake for minutes (> 300 s with a 5 s timeout)."""
    z, m, v = case(N=50, M=5)
    with ProcessCluster(tmp_path) as pc:
        deadline = time.monotonic() + 30
        port = None
        while port is None and time.monotonic() < deadline:
            with open(os.path.join(pc.workdir, "scheduler.log")) as fh:
                found = re.search(r"dashboard at:\s+http://[\d.]+:(\d+)", fh.read())
            port = found and found.group(1)
            time.sleep(0.1)
        assert port, "the scheduler did not log its HTTP address"
        with pytest.raises(ConnectionError, match="no Dask handshake within 2 s: it is not a Dask scheduler"):
            within(lambda: dist.log_qz(z, m, v, scheduler=f"tcp://127.0.0.1:{port}",
                                                    connect_timeout=2))
        with pytest.raises(ValueError, match=r"web \(HTTP\) address, probably the dashboard"):
            dist.log_qz(z, m, v, scheduler=f"http://127.0.0.1:{port}", connect_timeout=2)


@pytest.mark.parametrize("prefix,found", [(HIDE_REFVAE, r"refvae not importable \(ModuleNotFoundError"),
                                          (OTHER_VERSION, r"refvae 0\.0\.0\+other")],
                         ids=["without refvae", "other version"])
def test_worker_with_another_environment_is_named(tmp_path, prefix, found):
    """Before: a worker without refvae died on its first task (FutureCancelledError or a hang);
    a worker with another refvae ran it silently."""
    z, m, v = case(N=50, M=5)
    with ProcessCluster(tmp_path) as pc:
        pc.add_worker(prefix=prefix, name="odd")
        pc.client()
        with pytest.raises(dist.ClusterError, match=r"worker tcp://127\.0\.0\.1:\d+ \(name odd\) has "
                           + found + r".*; this machine has refvae \d"):
            within(lambda: dist.log_qz(z, m, v, scheduler=pc.address, worker_timeout=5))


def test_worker_paused_for_memory_is_named(tmp_path):
    """A worker whose memory is above its pause threshold (here 0.1 % of its limit) runs nothing:
    the error names it, its state and memory, and the setting."""
    z, m, v = case(N=50, M=5)
    with ProcessCluster(tmp_path) as pc:
        pc.add_worker(env={"DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "0.001"}, name="full")
        with distributed.Client(pc.address, set_as_default=False) as client:  # no wait for running workers
            wait_until(lambda: [w["status"] for w in client.scheduler_info(n_workers=-1)["workers"].values()]
                       == ["paused"], 60, "the worker pausing")
        with pytest.raises(dist.ClusterError, match=r"\(name full\) is paused, memory [\d,]+ MiB of "
                                                    r"[\d,]+ MiB.*distributed\.worker\.memory\.pause"):
            within(lambda: dist.log_qz(z, m, v, scheduler=pc.address, worker_timeout=2))


def test_every_worker_paused_mid_run_is_named(tmp_path):
    """The worker pauses (as the memory monitor does it: its status set to paused; the monitor is
    off in this worker, so that it does not resume it) while the run is going: no task can finish;
    after worker_timeout the error names the paused worker."""
    z, m, v = case()
    with ProcessCluster(tmp_path) as pc:
        pc.add_worker(prefix=slow(0.5), name="pausing", env={"DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "False"})
        client = pc.client()
        errors = {}

        def run():
            try:
                dist.log_qz(z, m, v, client=client, chunk=400, worker_timeout=2)
            except Exception as exc:  # noqa: BLE001
                errors["error"] = exc
        th = threading.Thread(target=run, daemon=True)
        th.start()
        wait_until(lambda: _scheduler_tasks(client).get("_shard_partial", []).count("memory") >= 1,
                   what="a shard done")

        def pause(dask_worker=None):
            from distributed.core import Status
            dask_worker.status = Status.paused
        client.run(pause)
        th.join(HUNG)
        assert not th.is_alive(), "hung with every worker paused"
        assert isinstance(errors.get("error"), dist.ClusterError), errors
        assert re.search(r"every worker has been paused for 2 s \(\d+ of \d+ tasks done\): "
                         r"tcp://127\.0\.0\.1:\d+ \(name pausing\) paused", str(errors["error"]))


# =========================================================================== refvae stats mid-run

@pytest.fixture(scope="module")
def stats_inputs(tmp_path_factory):
    """A saved model (L = 2) and its components (N = 4000) in a directory."""
    d = tmp_path_factory.mktemp("stats")
    rng = np.random.default_rng(5)
    model = VAE(6, 2, (8,), "tanh", "gaussian", prior="standard", rng=rng)
    model.save(d / "model")
    dist.encode_to_shards(model, rng.normal(size=(4000, 6)), out_dir=str(d / "comps"))
    return d


def _stats_cli(d, address):
    exe = os.path.join(os.path.dirname(sys.executable), "refvae")
    return subprocess.Popen([exe, "stats", "--model", str(d / "model"), "--components", str(d / "comps"),
                             "--queries", "50", "--chunk", "200", "--scheduler", address,
                             "--worker-timeout", "3", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("lose", ["the only worker", "the scheduler"])
def test_stats_losing_the_worker_or_the_scheduler_mid_run(stats_inputs, tmp_path, lose):
    """``refvae stats`` on a 1-worker cluster; once shard tasks are running, the worker (or the
    scheduler) is killed: one line on stderr naming what happened, exit code 2, no traceback.
    Before: losing the only worker failed with FutureCancelledError (the scattered queries were
    lost with it), and a lost scheduler printed Dask's tracebacks."""
    with ProcessCluster(tmp_path) as pc:
        worker = pc.add_worker(prefix=slow(1.0))
        client = pc.client()
        proc = _stats_cli(stats_inputs, pc.address)
        try:
            wait_until(lambda: any(client.processing().values()) or proc.poll() is not None,
                       what="shard tasks running")
            assert proc.poll() is None, proc.communicate()
            t0 = time.monotonic()
            pc.kill(worker if lose == "the only worker" else pc.scheduler)
            out, err = proc.communicate(timeout=HUNG)
            seconds = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, err)
    want = ("every worker left the cluster mid-run and none joined for 3 s" if lose == "the only worker"
            else "lost the connection to the Dask scheduler at tcp://127.0.0.1:")
    assert lines[0].startswith("refvae stats: error: ") and want in lines[0], lines[0]
    assert seconds < HUNG


def test_stats_with_a_scheduler_file_gives_the_bits_of_the_address(stats_inputs, tmp_path):
    """``refvae stats --scheduler-file F`` (F written by ``dask scheduler --scheduler-file F``, as on
    Slurm) connects to the address in F: the same JSON results as ``--scheduler ADDRESS``."""
    exe = os.path.join(os.path.dirname(sys.executable), "refvae")
    base = [exe, "stats", "--model", str(stats_inputs / "model"), "--components",
            str(stats_inputs / "comps"), "--queries", "50", "--chunk", "200", "--quiet"]
    with ProcessCluster(tmp_path / "c") as pc:
        pc.add_worker()
        pc.client()
        by_address = subprocess.run(base + ["--scheduler", pc.address, "--out", str(tmp_path / "a.json")],
                                    capture_output=True, text=True, timeout=HUNG)
        by_file = subprocess.run(base + ["--scheduler-file", pc.scheduler_file,
                                         "--out", str(tmp_path / "f.json")],
                                 capture_output=True, text=True, timeout=HUNG)
    assert by_address.returncode == 0 and by_file.returncode == 0, (by_address.stderr, by_file.stderr)
    a = json.loads((tmp_path / "a.json").read_text())
    f = json.loads((tmp_path / "f.json").read_text())
    assert a["stats"] == f["stats"] and f["stats"], (a, f)


@pytest.mark.parametrize("content, words", [
    (None, "does not exist"),
    ("not json", "is not a scheduler file"),
    ('{"id": "Scheduler-1"}', "has no 'address' string"),
    ('["tcp://127.0.0.1:1"]', "has no 'address' string"),
])
def test_stats_scheduler_file_errors_are_one_line(stats_inputs, tmp_path, capsys, content, words):
    """A missing, unreadable or address-less --scheduler-file, or both flags: one named line, exit 2."""
    from refvae.tools.cli import main
    path = tmp_path / "scheduler.json"
    if content is not None:
        path.write_text(content)
    rc = main(["stats", "--model", str(stats_inputs / "model"), "--components", str(stats_inputs / "comps"),
               "--queries", "5", "--scheduler-file", str(path), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--scheduler-file" in err and words in err and "Traceback" not in err, err
    rc = main(["stats", "--model", str(stats_inputs / "model"), "--components", str(stats_inputs / "comps"),
               "--scheduler", "tcp://127.0.0.1:1", "--scheduler-file", str(path), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "not both" in err, err
