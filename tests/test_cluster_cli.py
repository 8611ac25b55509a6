"""``refvae stats``'s guards against dangerous defaults, and the cluster path's progress output.

- The pair count (S N^2 without ``--queries``, M N with it, plus the holes) and the core-hours at the
  measured rate (``cli_stats.PAIR_RATE``) are printed before anything runs; above
  ``cli_stats.LARGE_PAIRS`` the run is refused (one line with the way out) unless ``--allow-large``.
- ``--data`` with ``--scheduler`` above ``cli_stats.DATA_ON_CLIENT_BYTES`` is refused with the way
  out (``--write-components``, then ``--components --queries``), before any connection is tried.
- The progress (``refvae.tools.distributed._cluster._Watch``) in a log file (stderr not a terminal)
  writes at most one line per 10 s and per tenth of the elapsed time; on a terminal it is redrawn
  in place.

The thresholds are lowered with monkeypatch so that a tiny model exercises them; no cluster is needed
(the checks come before connecting). Counts are exact integers: no tolerance.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types

import numpy as np
import pytest

from refvae.tools import cli_stats
from refvae.vae import VAE

N = 300


def _args(argv):
    parser = argparse.ArgumentParser(prog="refvae")
    cli_stats.STATS.add_to(parser.add_subparsers(dest="command"))
    return parser.parse_args(["stats", *argv])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("stats_cli")
    rng = np.random.default_rng(7)
    VAE(5, 2, (6,), "tanh", "gaussian", prior="standard", rng=rng).save(d / "model")
    np.save(d / "x.npy", rng.normal(size=(N, 5)))
    return d


def test_pair_count_printed_and_large_runs_need_allow_large(files, tmp_path, capsys, monkeypatch):
    common = ["--model", str(files / "model"), "--data", str(files / "x.npy"), "--seed", "1"]
    # the count and the core-hours are printed first
    assert cli_stats.run(_args(common + ["--samples", "2", "--holes", "10"])) == 0
    out = capsys.readouterr().out
    pairs = 2 * N * N + 10 * N
    assert f"refvae stats: {pairs:.2e} (query, component) pairs (S N^2 = 2 x {N}^2" in out
    assert f"about {pairs / cli_stats.PAIR_RATE / 3600:.2g} core-hours" in out
    # above the threshold: refused, nothing written, the way out named
    monkeypatch.setattr(cli_stats, "LARGE_PAIRS", N * N)  # S = 1 gives exactly N^2: allowed
    assert cli_stats.run(_args(common + ["--quiet"])) == 0
    with pytest.raises(ValueError, match=re.escape(f"needs {2 * N * N:.2e} (query, component) pairs") + r" .*use "
                                         r"--queries M .* or pass --allow-large"):
        cli_stats.run(_args(common + ["--samples", "2", "--out", str(tmp_path / "a.json")]))
    assert not (tmp_path / "a.json").exists()
    with pytest.raises(ValueError, match=r"M N = 301 x 300.*pass --allow-large"):
        cli_stats.run(_args(common + ["--queries", str(N + 1), "--quiet"]))
    # --allow-large runs it
    assert cli_stats.run(_args(common + ["--samples", "2", "--allow-large", "--quiet",
                                         "--out", str(tmp_path / "b.json")])) == 0
    assert json.loads((tmp_path / "b.json").read_text())["N"] == N


def test_data_with_scheduler_above_the_size_is_refused_before_connecting(files, monkeypatch):
    """N D 8 + 16 N L bytes = 300 (40 + 32) = 21600 here; at 21600 it runs (and fails to connect to
    a port nobody listens on), one byte lower it is refused with the way out."""
    common = ["--model", str(files / "model"), "--data", str(files / "x.npy"), "--quiet",
              "--scheduler", "tcp://127.0.0.1:1", "--connect-timeout", "1"]
    monkeypatch.setattr(cli_stats, "DATA_ON_CLIENT_BYTES", N * (5 * 8 + 16 * 2))
    with pytest.raises(ConnectionError, match=r"tcp://127\.0\.0\.1:1"):
        cli_stats.run(_args(common))
    monkeypatch.setattr(cli_stats, "DATA_ON_CLIENT_BYTES", N * (5 * 8 + 16 * 2) - 1)
    with pytest.raises(ValueError, match=r"--data with --scheduler holds .* \(0\.0 GB for N = 300, D = 5, "
                                         r"L = 2\).*--write-components COMPS.*--components COMPS "
                                         r"--queries M --scheduler"):
        cli_stats.run(_args(common))
    with pytest.raises(ConnectionError, match=r"tcp://127\.0\.0\.1:1"):
        cli_stats.run(_args(common + ["--allow-large"]))


def _watch(tty):
    pytest.importorskip("distributed", reason="the cluster path needs dask[distributed]")
    from refvae.tools.distributed._cluster import _Watch
    client = types.SimpleNamespace(scheduler=types.SimpleNamespace(address="tcp://127.0.0.1:9"))
    now = [0.0]
    w = _Watch(client, [], 1000, True, "", 60.0)
    w.clock = lambda: now[0]
    w.started = 0.0
    w.tty = tty
    return w, now


def test_progress_in_a_log_file_is_rate_limited(capsys):
    """One call per 0.1 s over an hour (36000 calls, as a fast poll would make): at most one line
    per 10 s and per tenth of the elapsed time, i.e. about 10 + ln(360)/ln(1.1) ~ 72 lines, plus the
    final one; before (Dask's text bar), 5 lines a second went into the log."""
    w, now = _watch(tty=False)
    for i in range(36000):
        now[0] = 0.1 * (i + 1)
        w.done = i // 36
        w.show()
    w.show(final=True)
    lines = capsys.readouterr().err.splitlines()
    assert 20 <= len(lines) <= 75, len(lines)
    assert lines[-1] == "refvae: 1000/1000 tasks done (100%) after 3600 s"
    assert all(ln.startswith("refvae: ") and "tasks done" in ln for ln in lines)


def test_progress_on_a_terminal_is_redrawn_in_place(capsys):
    w, now = _watch(tty=True)
    for i in range(50):
        now[0] = float(i)
        w.done = 20 * i
        w.show()
    w.show(final=True)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n") and err.count("\r") == 51
    assert "100% | 1000/1000 tasks | 49 s" in err


class _FakeClient:
    """What _Watch.poll asks of a client: its status and the scheduler's state (fixed here)."""

    def __init__(self, state):
        self.status, self.state = "running", state
        self.scheduler = types.SimpleNamespace(address="tcp://127.0.0.1:9")

    def run_on_scheduler(self, fn, keys):
        return self.state


W = ("tcp://127.0.0.1:5", "w1")


def _poll_for(state, seconds, capsys=None):
    """Poll a _Watch (worker_timeout 5 s, progress on) once a second for ``seconds`` s of a
    fake clock; returns the ClusterError raised (or None) and the time it was raised."""
    pytest.importorskip("distributed", reason="the cluster path needs dask[distributed]")
    import refvae.tools.distributed  # noqa: F401 - loads the module below
    cl = sys.modules["refvae.tools.distributed._cluster"]  # (its name is shadowed by a function)
    client = _FakeClient(state)
    cl._CHECKED[client] = {w[0] for w in state["workers"]}  # environments already checked
    now = [0.0]
    w = cl._Watch(client, [types.SimpleNamespace(key="root")], 10, True, "", 5.0)
    w.clock = lambda: now[0]
    w.started = w.last_change = w.last_stall_note = 0.0
    for t in range(1, seconds + 1):
        now[0] = float(t)
        try:
            w.poll()
        except cl.ClusterError as exc:
            return exc, t
    return None, None


def test_watch_says_what_the_workers_do_when_nothing_finishes(capsys):
    """Tasks running but none finishing for worker_timeout: a line naming each worker, its state,
    memory and running tasks (no error: long tasks are legitimate)."""
    err, _ = _poll_for({"known": True, "pending": 5, "erred": 0,
                        "workers": [(*W, "running", 100 * 2**20, 1000 * 2**20, 1)]}, 20)
    assert err is None
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "no task finished" in ln]
    assert len(notes) == 3, notes  # at 6, 12, 18 s
    assert notes[0] == ("refvae: no task finished in the last 6 s; workers: tcp://127.0.0.1:5 (name w1) "
                        "running, memory 100 MiB of 1,000 MiB, 1 task(s) running")


@pytest.mark.parametrize("workers,message", [
    ([], r"the cluster has no workers and none joined for 5 s \(0 of 10 tasks done"),
    ([(*W, "paused", 900 * 2**20, 1000 * 2**20, 1)],
     r"every worker has been paused for 5 s .*\(name w1\) paused, memory 900 MiB of 1,000 MiB"),
    ([(*W, "running", 100 * 2**20, 0, 0)],
     r"nothing has run for 5 s although 1 worker\(s\) are running and 10 tasks are pending"),
], ids=["no worker", "all paused", "nothing running"])
def test_watch_gives_up_after_worker_timeout(workers, message):
    """No worker, every worker paused, or workers idle while tasks wait: a ClusterError once
    worker_timeout (5 s) has passed without progress -- not before (the first poll past 5 s
    after the condition began, at 1 s)."""
    err, t = _poll_for({"known": True, "pending": 10, "erred": 0, "workers": workers}, 30)
    assert err is not None and re.search(message, str(err)), err
    assert t == 7, t
