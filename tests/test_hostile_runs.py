"""Hostile runs: interruption (Ctrl-C, SIGTERM, SIGKILL, a swallowed or disguised interrupt), two
runs into one output directory, stale reports / figures / temporary files, corrupt parameter
files and config files, and bad flags of the subcommands ``validate``, ``train``, ``gradcheck``
and ``golden`` (issue 13, items 2.1, 2.2, 2.3, 2.7-json, 2.11-io, 2.12-io).

Real signals are sent to ``refvae`` subprocesses (the tiny profile / synthetic data); the moments
are found by polling ``report.json`` (or the first printed line of ``refvae train``). The promise
checked everywhere: the run stops, exits 130 (SIGINT) or 143 (SIGTERM) with one line on stderr
and no traceback, and what is on disk is consistent (``report.json`` "partial", the running prior
"interrupted", the later ones "pending", none "failed").
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refvae import io as rio
import refvae.estimators as est
from refvae.tools import report as rep
from refvae.tools.report import runner
from refvae.tools.cli import main
from refvae.io import CONFIG_FILE, PARAMS_FILE, load_params, save_params
from refvae.tools.provenance import DirectoryLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = "import sys; from refvae.tools.cli import main; sys.exit(main())"
STATUS_RE = re.compile(r"^(done,)*(interrupted,)?(pending,)*$")


# =========================================================================== helpers

def spawn(*args, quiet=True):
    """``refvae <args>`` as a subprocess (stdout/stderr captured)."""
    return subprocess.Popen([sys.executable, "-c", RUN, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(pred, proc, timeout=60.0, what="condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process exited ({proc.returncode}) before {what}: {out}\n{err}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"timeout waiting for {what}")


def read_json(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def err_lines(err):
    """stderr lines without tqdm's progress bars (which are redrawn with carriage returns)."""
    return [ln for ln in re.split(r"[\r\n]+", err) if ln.strip() and not ln.startswith("fit:")]


def assert_consistent_partial(doc, sig):
    assert doc["status"] == "partial", doc["status"]
    assert doc["interrupted_by"] == sig
    statuses = [r["status"] for r in doc["runs"]]
    assert "failed" not in statuses, statuses
    assert STATUS_RE.match("".join(s + "," for s in statuses)), statuses
    for r in doc["runs"]:
        assert r.get("error") is None


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def interrupt_error(*a, **k):
    """What a Ctrl-C inside a Numba dispatcher turns into: SystemError caused by KeyboardInterrupt."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as ki:
        raise SystemError("<CPUDispatcher(<function _kernel>)> returned a result with an exception "
                          "set") from ki


# =========================================================================== real signals

@pytest.mark.hostile("interruption", "clean stop")
@pytest.mark.parametrize("moment, sig", [("kernel-check", signal.SIGINT),
                                         ("first-prior", signal.SIGTERM),
                                         ("next-prior", signal.SIGINT)])
def test_signal_to_validate_subprocess_gives_a_partial_report(tmp_path, moment, sig):
    """Ctrl-C (SIGINT) or SIGTERM to `refvae validate --profile tiny` at the start, while the first
    prior trains (Numba kernels) and as the next prior starts: report "partial", the running prior
    "interrupted", the rest "pending", none "failed"; exit 130/143 and one line, no traceback."""
    out = tmp_path / "r"
    epochs = {"kernel-check": "300", "first-prior": "300", "next-prior": "10"}[moment]
    proc = spawn("validate", "--profile", "tiny", "--seeds", "1", "--out", str(out), "--no-plots", "--quiet",
                 "--max-epochs", epochs, "--priors", "standard,mog,vamp,flow")
    report = out / "report.json"
    wait_for(lambda: (read_json(report) or {}).get("status") == "running", proc, what="report.json")
    if moment == "first-prior":  # report.json is rewritten once the kernel check is done
        wait_for(lambda: (read_json(report) or {}).get("kernel_accuracy") is not None, proc,
                 what="the kernel check")
        time.sleep(0.5)
    elif moment == "next-prior":
        wait_for(lambda: (read_json(report) or {}).get("summary", {}).get("runs_done", 0) >= 1, proc,
                 what="the first prior")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    name, code = ("SIGTERM", 143) if sig == signal.SIGTERM else ("SIGINT", 130)
    what = "terminated (SIGTERM)" if sig == signal.SIGTERM else "interrupted (SIGINT)"
    assert proc.returncode == code, err
    assert err_lines(err) == [f"refvae validate: {what}; partial report written to "
                              f"{out / 'report.md'}"], err
    doc = read_json(report)
    assert_consistent_partial(doc, name)
    statuses = [r["status"] for r in doc["runs"]]
    if moment == "kernel-check":
        assert statuses[1:] == ["pending"] * 3
    if moment == "first-prior":
        assert statuses == ["interrupted", "pending", "pending", "pending"]
    if moment == "next-prior":
        assert statuses[0] == "done" and statuses[-1] == "pending"  # (between priors: none running)
    md = (out / "report.md").read_text()
    assert ("**PARTIAL** (terminated by SIGTERM" if name == "SIGTERM"
            else "**PARTIAL** (interrupted (SIGINT)") in md


@pytest.mark.hostile("interruption", "clean stop")
@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted (SIGINT)")])
def test_signal_to_train_subprocess_one_line_no_traceback(tmp_path, sig, code, word):
    """Ctrl-C (SIGINT) to `refvae train --data synthetic` while it trains: one line on stderr,
    exit 130, no traceback, no half-saved model."""
    out = tmp_path / "m"
    proc = spawn("train", "--prior", "gtm", "--latent-dim", "2", "--out", str(out), "--data",
                 "synthetic", "--max-epochs", "500")
    line = proc.stdout.readline()
    assert line.startswith("refvae train: prior gtm"), line
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    lines = err_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"refvae train: {word} after"), lines
    assert not (out / PARAMS_FILE).exists() and not (out / "history.json").exists()
    assert [n for n in os.listdir(out) if "refvae-tmp" in n] == []


SLOW_WRITER = """
import sys, time
from refvae import io
def write(fh):
    fh.write(b"x" * 100000)
    fh.flush()
    print("writing", flush=True)
    time.sleep(60)
io._atomic_write(sys.argv[1], write)
"""


@pytest.mark.hostile("interruption", "clean stop")
def test_sigkill_during_save_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    """SIGKILL while params.npz is being written: the old file stays intact, the temporary is
    named .params.npz.refvae-tmp-<host>-<pid>-*, and the next save into the directory removes it
    (and nothing of any other naming, nor a live process's temporary)."""
    params = {"a": np.arange(3.0)}
    save_params(tmp_path, params, {"v": 1})
    before = (tmp_path / PARAMS_FILE).read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(tmp_path / PARAMS_FILE)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait()
    tmps = [n for n in os.listdir(tmp_path) if n.startswith(".params.npz.refvae-tmp-")]
    assert len(tmps) == 1 and f"-{proc.pid}-" in tmps[0], tmps
    assert (tmp_path / tmps[0]).stat().st_size == 100000
    assert (tmp_path / PARAMS_FILE).read_bytes() == before
    host = rio._host_tag()
    keep = [".params.npz.abc123.tmp", "notes.tmp", f".x.refvae-tmp-{host}-{os.getppid()}-live1",
            f".x.refvae-tmp-otherhost-{proc.pid}-remote"]
    for name in keep:
        (tmp_path / name).write_bytes(b"keep")
    rio._CLEANED.discard(os.path.abspath(tmp_path))
    save_params(tmp_path, {"a": np.arange(4.0)}, {"v": 2})
    assert sorted(os.listdir(tmp_path)) == sorted([CONFIG_FILE, PARAMS_FILE] + keep)
    assert load_params(tmp_path)[0]["a"].tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.fixture(autouse=True)
def default_sigint_handler():
    """These tests send SIGINT to themselves and to child processes: start from Python's default
    handler even when the suite runs with SIGINT ignored (a background job of a non-interactive
    shell inherits SIG_IGN, and so would the children), and restore what was there."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.mark.hostile("interruption", "clean stop")
def test_an_ignored_sigint_stays_ignored(tmp_path, capsys):
    """Started with SIGINT ignored (a background job, `nohup cmd &`): refvae's guard leaves it
    ignored during the run and restores it after (as Python does); SIGTERM still stops the run."""
    from refvae.tools.provenance import InterruptGuard
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with InterruptGuard():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGINT)        # ignored: nothing raised
        time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# =========================================================================== in-process interrupts

@pytest.mark.hostile("interruption", "clean stop")
@pytest.mark.parametrize("where", ["train", "evaluate", "kernel-check", "swallowed", "after-signal",
                                   "swallowed-then-busy"])
def test_disguised_interrupt_is_never_a_prior_failure(tmp_path, monkeypatch, capsys, where):
    """A SystemError caused by KeyboardInterrupt (Ctrl-C inside Numba) in training, evaluation or
    the kernel check, a Ctrl-C that a library swallowed (then 10 s of work without a checkpoint),
    and an error raised after a signal: the run stops promptly as interrupted (exit 130,
    "partial"), never marks a prior failed or ends complete."""
    real_train = runner._train
    real_ll = est.log_likelihood

    def train(run, *a, **k):
        if run["prior"] == "mog":
            if where == "train":
                interrupt_error()
            if where.startswith(("swallowed", "after-signal")):
                try:
                    os.kill(os.getpid(), signal.SIGINT)   # handled by refvae's guard ...
                    time.sleep(1.0)
                except KeyboardInterrupt:                 # ... and swallowed by "a library"
                    pass
                if where == "after-signal":
                    raise ValueError("some error provoked by the interrupt")
                if where == "swallowed-then-busy":        # no checkpoint for 10 s: the guard
                    for _ in range(200):                  # repeats the interrupt (SIGALRM)
                        time.sleep(0.05)
        return real_train(run, *a, **k)

    def log_likelihood(model, *a, **k):
        if model.prior.name == "mog":
            interrupt_error()
        return real_ll(model, *a, **k)

    monkeypatch.setattr(runner, "_train", train)
    monkeypatch.setattr(est, "log_likelihood", log_likelihood if where == "evaluate" else real_ll)
    if where == "kernel-check":
        monkeypatch.setattr(runner, "kernel_accuracy", interrupt_error)
    out = tmp_path / "r"
    t0 = time.monotonic()
    rc = main(["validate", "--profile", "tiny", "--seeds", "1", "--out", str(out), "--priors", "standard,mog,vamp",
               "--no-plots", "--quiet"])
    seconds = time.monotonic() - t0
    err = capsys.readouterr().err
    assert rc == 130, err
    assert "Traceback" not in err and "failed" not in err
    doc = read_json(out / "report.json")
    assert_consistent_partial(doc, "SIGINT")
    expected = (["pending"] * 3 if where == "kernel-check"
                else ["done", "interrupted", "pending"])
    assert [r["status"] for r in doc["runs"]] == expected
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL and signal.getitimer(
        signal.ITIMER_REAL) == (0.0, 0.0)
    if where == "swallowed-then-busy":
        assert seconds < 8.0, seconds  # stopped by the repeated interrupt, not after the 10 s


@pytest.mark.hostile("interruption", "clean stop")
def test_interrupt_in_the_second_seed_keeps_the_first_seeds_runs(tmp_path, monkeypatch, capsys):
    """Two seeds per prior: a Ctrl-C (disguised by Numba) while mog trains on seed 1 leaves every
    run of seed 0 "done", mog of seed 1 "interrupted", the rest "pending", exit 130, no run
    "failed"."""
    real_train = runner._train

    def train(run, *a, **k):
        if run["prior"] == "mog" and run["seed"] == 1:
            interrupt_error()
        return real_train(run, *a, **k)

    monkeypatch.setattr(runner, "_train", train)
    out = tmp_path / "r"
    rc = main(["validate", "--profile", "tiny", "--seeds", "2", "--out", str(out),
               "--priors", "standard,mog", "--no-plots", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 130, err
    doc = read_json(out / "report.json")
    assert_consistent_partial(doc, "SIGINT")
    status = {(r["prior"], r["seed"]): r["status"] for r in doc["runs"]}
    assert status[("standard", 0)] == status[("mog", 0)] == "done", status
    assert status[("mog", 1)] == "interrupted", status
    assert set(status.values()) <= {"done", "interrupted", "pending"}, status


@pytest.mark.hostile("interruption", "clean stop")
def test_disguised_interrupt_in_train_subcommand(tmp_path, monkeypatch, capsys):
    """`refvae train` whose training raises SystemError from KeyboardInterrupt: one line, exit 130."""
    import refvae.train
    monkeypatch.setattr(refvae.train, "fit", interrupt_error)
    rc = main(["train", "--prior", "standard", "--latent-dim", "2", "--out", str(tmp_path / "m"),
               "--data", "synthetic", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 130
    assert err_lines(err) == [err.strip()] and err.startswith("refvae train: interrupted (SIGINT) after")
    assert "Traceback" not in err + out


# =========================================================================== stale state

@pytest.mark.hostile("interruption", "clean stop")
def test_stale_running_report_and_lock_of_a_killed_run_are_recognised(tmp_path, capsys):
    """A report.json left "running" (and a lock file) by a SIGKILLed run: the next run says it is
    stale (naming the dead pid), overwrites it and ends complete with its own pid and host."""
    out = tmp_path / "r"
    out.mkdir()
    pid = dead_pid()
    stale = {"status": "running", "process": {"pid": pid, "host": socket.gethostname(),
                                              "started": "2026-01-01 00:00:00 +0000"}, "runs": []}
    (out / "report.json").write_text(json.dumps(stale))
    (out / ".refvae.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    rc = main(["validate", "--profile", "tiny", "--out", str(out), "--priors", "standard",
               "--no-plots", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"left 'running' by pid {pid}" in err and "stale" in err
    doc = read_json(out / "report.json")
    assert doc["status"] == "complete"
    assert doc["process"]["pid"] == os.getpid() and doc["process"]["host"] == socket.gethostname()
    from refvae.tools.provenance import REPRODUCIBILITY
    assert doc["provenance"]["reproducibility"] == REPRODUCIBILITY
    assert REPRODUCIBILITY.startswith("bit-identical on this machine for any number of refvae's")
    assert "Reproducibility: bit-identical on this machine" in (out / "report.md").read_text()


@pytest.mark.hostile("concurrency", "clean stop")
def test_rerun_with_fewer_priors_removes_only_refvaes_stale_figures(tmp_path, capsys):
    """A re-run into a directory with another run's figures (more priors, other L): refvae's
    figure names it does not produce are removed, files of any other naming are kept, PNGs are
    written atomically with umask permissions and listed in report.json."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "r"
    fig = out / "figures"
    fig.mkdir(parents=True)
    stale = ["mog_L2.png", "standard_L16.png", "flow_L2.png"]
    foreign = ["notes.png", "mog_L2.png.orig", "keep.txt", "my_standard_L2.png"]
    for n in stale + foreign:
        (fig / n).write_bytes(b"old")
    assert main(["validate", "--profile", "tiny", "--out", str(out), "--priors", "standard",
                 "--quiet"]) == 0
    assert sorted(os.listdir(fig)) == sorted(foreign + ["standard_L2.png"])
    png = fig / "standard_L2.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    umask = os.umask(0)
    os.umask(umask)
    assert png.stat().st_mode & 0o777 == 0o666 & ~umask
    doc = read_json(out / "report.json")
    assert doc["files"] == ["report.json", "report.md", "figures/standard_L2.png"]
    assert [n for n in os.listdir(out) if "refvae-tmp" in n] == []


@pytest.mark.hostile("resources", "clean stop")
def test_out_of_memory_outside_a_prior_leaves_a_failed_report_not_a_running_one(tmp_path, monkeypatch,
                                                                               capsys):
    """MemoryError in the kernel check (outside any prior's run): one line, exit 1, and report.json
    says "failed" with the error — never "running"."""
    def oom(*a, **k):
        raise MemoryError("cannot allocate 745 GiB")

    monkeypatch.setattr(runner, "kernel_accuracy", oom)
    out = tmp_path / "r"
    rc = main(["validate", "--profile", "tiny", "--seeds", "1", "--out", str(out), "--priors", "standard",
               "--no-plots", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err_lines(err) == [err.strip()] and "Traceback" not in err
    assert "MemoryError: cannot allocate 745 GiB" in err
    doc = read_json(out / "report.json")
    assert doc["status"] == "failed" and doc["error"] == "MemoryError: cannot allocate 745 GiB"
    assert [r["status"] for r in doc["runs"]] == ["pending"]
    assert "Error: `MemoryError: cannot allocate 745 GiB`" in (out / "report.md").read_text()


# =========================================================================== two runs, one directory

@pytest.mark.hostile("concurrency", "named error")
@pytest.mark.parametrize("cmd", ["validate", "train"])
def test_second_run_into_a_locked_directory_is_refused(tmp_path, capsys, cmd):
    """A second `refvae validate`/`train` into an --out another run holds: one line naming the
    directory and the other run's pid, exit 2, nothing written."""
    out = tmp_path / "r"
    out.mkdir()
    with DirectoryLock(out, "refvae validate (the first run)"):
        if cmd == "validate":
            args = ["validate", "--profile", "tiny", "--out", str(out), "--no-plots", "--quiet"]
        else:
            args = ["train", "--prior", "standard", "--latent-dim", "2", "--out", str(out),
                    "--data", "synthetic", "--quiet"]
        rc = main(args)
    out_, err = capsys.readouterr()
    assert rc == 2
    lines = err_lines(err)
    assert len(lines) == 1 and "Traceback" not in err
    assert str(out) in lines[0] and f"pid {os.getpid()}" in lines[0] and "in use" in lines[0]
    assert set(os.listdir(out)) <= {".refvae.lock", "figures"}  # nothing but the (empty) layout
    assert not (out / "figures").exists() or os.listdir(out / "figures") == []


@pytest.mark.hostile("concurrency", "named error")
def test_second_validate_against_a_running_subprocess_is_refused(tmp_path, capsys):
    """Two real `refvae validate` runs into one --out: the second is refused naming the first's
    pid and leaves the first's report alone; after a SIGKILL of the first, its "running" report
    names the dead pid (which the next run recognises as stale)."""
    out = tmp_path / "r"
    proc = spawn("validate", "--profile", "tiny", "--seeds", "1", "--out", str(out), "--no-plots", "--quiet",
                 "--max-epochs", "300", "--priors", "vamp")
    wait_for(lambda: (read_json(out / "report.json") or {}).get("status") == "running", proc,
             what="report.json")
    rc = main(["validate", "--profile", "tiny", "--seeds", "1", "--out", str(out), "--no-plots", "--quiet",
               "--priors", "standard,mog"])
    err = capsys.readouterr().err
    assert rc == 2 and f"pid {proc.pid} on" in err and str(out) in err
    proc.kill()
    proc.communicate(timeout=60)
    doc = read_json(out / "report.json")
    assert [r["prior"] for r in doc["runs"]] == ["vamp"]
    assert doc["status"] == "running" and doc["process"]["pid"] == proc.pid
    assert runner._previous_report(str(out))["pid"] == proc.pid


# =========================================================================== corrupt files

def _npz_bytes(arrays, compressed=False):
    import io
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _forged_header_npz(shape):
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        with zf.open("a.npy", "w") as m:
            np.lib.format.write_array_header_1_0(m, {"descr": "<f8", "fortran_order": False,
                                                     "shape": shape})
            m.write(np.ones(3).tobytes())
    return buf.getvalue()


def _flip_data_byte(data, member_name, compressed):
    """Change one byte inside a member's stored data (past the .npy header)."""
    with zipfile.ZipFile(__import__("io").BytesIO(data)) as zf:
        info = zf.getinfo(member_name)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    # the local header's extra field may differ from the central directory's: read it
    n_name, n_extra = np.frombuffer(data[info.header_offset + 26:info.header_offset + 30], "<u2")
    start = info.header_offset + 30 + int(n_name) + int(n_extra)
    pos = start + info.compress_size // 2 if compressed else start + info.compress_size - 5
    b = bytearray(data)
    b[pos] ^= 0xFF
    return bytes(b)


def _cases():
    good = {"a": np.arange(64.0), "b": np.ones((4, 3))}
    plain = _npz_bytes(good)
    comp = _npz_bytes({"a": np.linspace(0.0, 1.0, 4000)}, compressed=True)
    obj = _npz_bytes({"a": np.array([1.0, {"x": 1}], dtype=object)})
    npy = __import__("io").BytesIO()
    np.save(npy, np.ones(3))
    odd = __import__("io").BytesIO()
    with zipfile.ZipFile(odd, "w") as zf:
        zf.writestr("readme.txt", "hello")
    short = __import__("io").BytesIO()
    with zipfile.ZipFile(short, "w") as zf:
        zf.writestr("a.npy", b"\x93NUMPY\x02\x00\x10\x00")
    return [
        ("empty", b"", "not an .npz archive: the file is empty"),
        ("random bytes", bytes(np.random.default_rng(5).integers(0, 256, 300, dtype=np.uint8)),
         "not an .npz archive: no ZIP signature"),
        ("pickle", pickle.dumps({"a": np.ones(2)}), "not an .npz archive: no ZIP signature"),
        ("single npy", npy.getvalue(), r"not an .npz archive \(a single .npy array\?\)"),
        ("truncated", plain[: len(plain) // 2], "not an .npz archive: corrupt ZIP structure"),
        ("bad CRC", _flip_data_byte(plain, "a.npy", False), r"key 'a' is corrupt \(CRC/zlib error"),
        ("zlib error", _flip_data_byte(comp, "a.npy", True), r"key 'a' is corrupt \(CRC/zlib error"),
        ("745 GiB header", _forged_header_npz((10 ** 11,)),
         r"key 'a': array of shape \(100000000000,\) \(float64\) needs 745 GiB"),
        ("object array", obj, r"key 'a' contains object arrays \(refused: no pickle"),
        ("not a .npy member", odd.getvalue(), r"key 'readme.txt': member 'readme.txt' is not a .npy"),
        ("short .npy header", short.getvalue(), r"key 'a': truncated .npy header \(10 bytes\)"),
    ]


@pytest.mark.hostile("file", "named error")
@pytest.mark.parametrize("name, data, message", _cases(), ids=[c[0] for c in _cases()])
def test_corrupt_params_file_says_what_happened(tmp_path, name, data, message):
    """Empty, random, pickled, .npy, truncated, bad-CRC, zlib-corrupt, forged-745-GiB-header,
    object-array, non-.npy-member and short-header params.npz: a ValueError saying what happened,
    naming the file, never suggesting allow_pickle."""
    save_params(tmp_path, {"a": np.ones(3)}, {})
    (tmp_path / PARAMS_FILE).write_bytes(data)
    with pytest.raises(ValueError, match=message) as info:
        load_params(tmp_path)
    msg = str(info.value)
    assert str(tmp_path / PARAMS_FILE) in msg
    assert "allow_pickle" not in msg and "cannot be read without pickle" not in msg


@pytest.mark.hostile("file", "named error")
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(1, 255)), min_size=1, max_size=4))
def test_fuzzed_params_file_is_read_exactly_or_refused_by_name(tmp_path_factory, flips):
    """Random byte flips anywhere in a params.npz: either the exact arrays come back or a
    ValueError naming the file — never another exception, never allow_pickle advice."""
    d = tmp_path_factory.mktemp("fuzz")
    params = {"encoder.0.W": np.arange(12.0).reshape(3, 4), "b": np.array([0.5, -1.0])}
    save_params(d, params, {"x": 1})
    data = bytearray((d / PARAMS_FILE).read_bytes())
    for pos, x in flips:
        data[pos % len(data)] ^= x
    (d / PARAMS_FILE).write_bytes(bytes(data))
    try:
        got, _ = load_params(d)
    except ValueError as exc:
        assert str(d / PARAMS_FILE) in str(exc) and "allow_pickle" not in str(exc)
    else:  # a flip in a part that is not checked (e.g. a ZIP timestamp): the data are exact
        assert set(got) == set(params)
        for k in params:
            assert got[k].shape == params[k].shape and np.array_equal(got[k], params[k]), k


@pytest.mark.hostile("resources", "named error")
def test_array_larger_than_available_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    """A params.npz whose array needs more than the available memory: named error with the size."""
    save_params(tmp_path, {"w": np.ones((5, 3))}, {})
    monkeypatch.setattr(rio, "_available_memory", lambda: 64)
    with pytest.raises(ValueError, match=r"key 'w': array of shape \(5, 3\) \(float64\) needs "
                                         r"1.12e-07 GiB, more than the 5.96e-08 GiB of available"):
        load_params(tmp_path)


@pytest.mark.hostile("file", "named error")
@pytest.mark.parametrize("text, message", [
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"a": ' * 60000 + "1" + "}" * 60000, "nested too deeply"),
    ('{"format_version": 1, "refvae_version": "0", "x": 1e999}', "number 1e999 overflows float64"),
    ("[1, 2]", "config must be a JSON object, got list"),
    ("3", "config must be a JSON object, got int"),
    ("null", "config must be a JSON object, got NoneType"),
    ('"model"', "config must be a JSON object, got str"),
])
def test_hostile_config_json_gives_a_named_error(tmp_path, text, message):
    """Deeply nested (RecursionError), overflowing (1e999) and non-object config.json: a
    ValueError naming the file."""
    save_params(tmp_path, {"a": np.ones(3)}, {})
    (tmp_path / CONFIG_FILE).write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_params(tmp_path)
    assert str(tmp_path / CONFIG_FILE) in str(info.value)


@pytest.fixture
def saved_model(tmp_path):
    import refvae
    model = refvae.VAE(6, 2, (5,), "tanh", "gaussian", prior="standard",
                       rng=np.random.default_rng(0))
    model.save(tmp_path / "model")
    np.save(tmp_path / "x.npy", np.random.default_rng(1).normal(size=(20, 6)))
    return tmp_path / "model", tmp_path / "x.npy"


@pytest.mark.hostile("flag", "named error")
@pytest.mark.parametrize("config, words", [
    ("[" * 100000 + "]" * 100000, ["config.json", "nested too deeply"]),
    ("[1]", ["config.json", "JSON object"]),
    (json.dumps({"format_version": 1, "refvae_version": "0", "model": {"latent_dim": 2}}),
     ["x_dim"]),
])
def test_cli_with_a_hostile_model_config_gives_one_line(saved_model, capsys, config, words):
    """`refvae stats --model DIR` whose config.json is nested too deeply, not an object or misses
    x_dim: one line on stderr, exit 2, no traceback."""
    model_dir, x = saved_model
    (model_dir / CONFIG_FILE).write_text(config)
    rc = main(["stats", "--model", str(model_dir), "--data", str(x), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 2, err
    lines = err_lines(err)
    assert len(lines) == 1 and "Traceback" not in err + out
    for w in words:
        assert w in lines[0], (w, lines[0])


# =========================================================================== flags

@pytest.mark.hostile("flag", "named error")
@pytest.mark.parametrize("args, words", [
    (["train", "--prior", "mog", "--latent-dim", "2", "--out", "m", "--data", "mnist"],
     ["--data", "mnist"]),
    (["train", "--prior", "mog", "--latent-dim", "0", "--out", "m"], ["--latent-dim"]),
    (["train", "--prior", "mog,vamp", "--latent-dim", "2", "--out", "m"], ["--prior"]),
    (["train", "--prior", "mog", "--latent-dim", "2", "--out", "m", "--threads", "0"], ["--threads"]),
    (["train", "--prior", "mog", "--latent-dim", "2", "--out", "m", "--seed", "-1"], ["--seed"]),
    (["train", "--prior", "mog", "--latent-dim", "two", "--out", "m"], ["--latent-dim", "two"]),
    (["train", "--prior", "standard", "--latent-dim", "1000000000", "--out", "m", "--data",
      "synthetic"], ["--latent-dim 1000000000", "TiB"]),
    (["validate", "--profile", "tiny", "--seed", "-5", "--out", "m"], ["--seed"]),
    (["validate", "--profile", "tiny", "--threads", "-2", "--out", "m"], ["--threads"]),
    (["validate", "--priors", ",,", "--out", "m"], ["--priors", "empty"]),
    (["validate", "--max-epochs", "0", "--out", "m"], ["--max-epochs"]),
    (["gradcheck", "--likelihood", "poisson"], ["--likelihood", "poisson"]),
    (["gradcheck", "--activation", "swish"], ["--activation", "swish"]),
    (["gradcheck", "--threads", "1000000"], ["--threads", "1000000", "at most"]),
    (["validate", "--profile", "tiny", "--threads", "1000000", "--out", "m"], ["--threads"]),
    (["train", "--prior", "mog", "--latent-dim", "2", "--out", "m", "--threads", "99999"],
     ["--threads", "99999"]),
    (["validate", "--profile", "tiny", "--out", ""], ["--out", "''"]),
    (["train", "--prior", "mog", "--latent-dim", "2", "--out", " "], ["--out"]),
    (["gradcheck", "--seed", "-1"], ["--seed"]),
    (["golden", "--seed", "-1", "--out", "m"], ["--seed"]),
])
def test_bad_flags_give_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, words):
    """Bad flags of validate, train, gradcheck and golden: one line naming the flag, exit 2,
    no traceback, no output directory created."""
    monkeypatch.chdir(tmp_path)
    rc = main(args)
    out, err = capsys.readouterr()
    assert rc == 2, err
    lines = err_lines(err)
    assert len(lines) == 1 and "Traceback" not in err + out
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not (tmp_path / "m").exists()


# =========================================================================== the run API's arguments

def _api_cases():
    import dataclasses
    import math

    import refvae
    from refvae import data as rdata
    from refvae.tools import provenance as prov
    tiny = rep.PROFILES["tiny"]
    model = refvae.VAE(4, 2, (3,), "tanh", "gaussian", prior="standard",
                       rng=np.random.default_rng(0))
    x = np.zeros((5, 4))
    g = np.random.default_rng(0)
    return {
        "type": [
            (rep.choose_gradcheck_batch, dict(model="m", x_pool=x, rng=g, batch_size=2,
                                              candidates=2), TypeError, "model must be a refvae.VAE"),
            (rep.choose_gradcheck_batch, dict(model=model, x_pool=x, rng=g, batch_size=2.5,
                                              candidates=2), TypeError, "batch_size"),
            (rep.choose_gradcheck_batch, dict(model=model, x_pool=x.astype(complex), rng=g,
                                              batch_size=2, candidates=2), TypeError, "x_pool"),
            (rep.near_kink, dict(model=model, x=x, eps=np.zeros((5, 2)), margin="0.5"), TypeError,
             "margin"),
            (rep.kernel_accuracy, dict(rng=None, n_random=2), TypeError, "rng"),
            (rep.identities, dict(run=[1, 2], n_train=3), TypeError, "run must be a dict"),
            (rep.load_data, dict(profile="tiny", seed=0), TypeError, "profile must be"),
            (rep.run_validation, dict(profile=tiny, priors="standard"), TypeError, "priors"),
            (rep.run_validation, dict(profile=tiny, priors=("standard",), threads="2"), TypeError,
             "threads"),
            (rep.prepare_out_dir, dict(out=None), TypeError, "out must be a path"),
            (rio.save_params, dict(directory=None, params={"a": np.ones(1)}, config={}), TypeError,
             "directory"),
            (rio.pid_alive, dict(pid="1"), TypeError, "pid"),
            (prov.limit_threads(2.5).__enter__, {}, TypeError, "n must be an integer"),
            (prov.interrupt_signal, dict(exc="SIGINT"), TypeError, "exc must be an exception"),
            (main, dict(argv="validate"), TypeError, "argv must be a list of strings"),
        ],
        "option": [
            (rep.choose_gradcheck_batch, dict(model=model, x_pool=np.zeros((5, 3)), rng=g,
                                              batch_size=2, candidates=2), ValueError, "x_pool"),
            (rep.choose_gradcheck_batch, dict(model=model, x_pool=x, rng=g, batch_size=2,
                                              candidates=0), ValueError, "candidates"),
            (rep.near_kink, dict(model=model, x=x, eps=np.zeros((5, 2)), margin=math.nan),
             ValueError, "margin"),
            (rep.gradcheck_model, dict(model=model, x=x, eps=np.zeros((5, 2)), rng=g,
                                       near_kink_fixed=-1), ValueError, "near_kink_fixed"),
            (rep.identities, dict(run={}, n_train=0), ValueError, "n_train"),
            (rep.run_validation, dict(profile=dataclasses.replace(tiny, lr=math.nan)), ValueError,
             "profile.lr"),
            (rep.run_validation, dict(profile=dataclasses.replace(tiny, optimizer="sgd")),
             ValueError, "profile.optimizer"),
            (rep.run_validation, dict(profile=dataclasses.replace(tiny, batch_size=0)), ValueError,
             "profile.batch_size"),
            (rep.run_validation, dict(profile=tiny, priors=()), ValueError, "priors is empty"),
            (rep.run_validation, dict(profile=tiny, priors=("bogus",)), ValueError, "bogus"),
            (rep.run_validation, dict(profile=tiny, seed=-1), ValueError, "seed"),
            (rep.write_report, dict(report={}, out="x"), ValueError, "report is missing key"),
            (rep.prepare_out_dir, dict(out="x", subdirs=("../../escape",)), ValueError, "subdirs"),
            (rio.pid_alive, dict(pid=0), ValueError, "pid"),
            (prov.interrupt_exit_code, dict(signal_name="SIGHUP"), ValueError, "signal_name"),
            (rdata.synthetic_digits, dict(n=10 ** 15, rng=g), ValueError,
             "synthetic_digits would have"),
        ],
    }


@pytest.mark.hostile("type", "named error")
@pytest.mark.parametrize("case", range(15))
def test_run_api_wrong_types_are_named(tmp_path, monkeypatch, case):
    """Wrong-typed arguments of the run/report/io/provenance API (model, x_pool, sizes, margin,
    rng, run, profile, priors, threads, paths, pid, n, exc, argv): a TypeError naming them."""
    monkeypatch.chdir(tmp_path)
    fn, kwargs, exc, match = _api_cases()["type"][case]
    with pytest.raises(exc, match=match):
        fn(**kwargs)
    assert os.listdir(tmp_path) == []


@pytest.mark.hostile("option", "named error")
@pytest.mark.parametrize("case", range(16))
def test_run_api_bad_values_are_named(tmp_path, monkeypatch, case):
    """Bad values for the run/report/io/provenance API (mismatched x_pool, zero/negative sizes,
    NaN margin, profiles with NaN lr / unknown optimizer / batch 0, empty or unknown priors,
    escaping subdirs, pid 0, unknown signal, a petabyte of synthetic data): a ValueError naming
    the argument, before anything is written."""
    monkeypatch.chdir(tmp_path)
    fn, kwargs, exc, match = _api_cases()["option"][case]
    with pytest.raises(exc, match=match):
        fn(**kwargs)
    assert os.listdir(tmp_path) == []


@pytest.mark.hostile("interruption", "clean stop")
def test_ctrl_c_while_the_cli_starts_is_one_line(monkeypatch, capsys):
    """Ctrl-C while the CLI builds its parser (before the subcommand's guard): one line, exit 130."""
    import refvae.tools.cli as cli

    def interrupted():
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["train", "--out", "x"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "refvae: interrupted (SIGINT) while starting" and "Traceback" not in err


@pytest.mark.hostile("interruption", "clean stop")
def test_import_refvae_cli_loads_no_numerics():
    """`import refvae.tools.cli` (what the console script does before main) loads neither NumPy nor Numba,
    so the start-up window in which a Ctrl-C could print Python's traceback is a few milliseconds."""
    import subprocess
    import sys
    code = ("import sys, refvae.tools.cli; "
            "print(sorted(m for m in ('numpy', 'numba', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
