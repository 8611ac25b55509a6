"""The whole report: :func:`run_validation` (the command line is ``refvae validate``) runs the
kernel check and every prior and latent dimension of a profile, writing the report after each
(locking, interruption and stale reports: the module docstring of :mod:`refvae.tools.report`)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
from dataclasses import asdict

import numpy as np

from ..._validation import check_positive_int
from ...tolerances import TOLERANCES
from ..profiles import (_check_priors, _check_profile, _check_seed, build_model,
                        load_data, prepare_out_dir, prior_index, prior_names)
from ..provenance import (REPRODUCIBILITY, DirectoryLock, InterruptGuard, Interrupted,
                          interrupt_exit_code, interrupt_signal, run_identity)
from .figures import have_matplotlib
from .kernel_check import kernel_accuracy
from .single_run import _evaluate, _snapshot_recorder, _train
from .writing import write_report

__all__ = ["run_validation"]

#: version 2: several training seeds per (prior, L) (``seeds``, each run's ``seed``), per-image
#: ln p(x) / -ELBO, the paired comparisons and hole verdicts (``analysis``), CPU seconds per part
SCHEMA = "refvae-validation-report/2"


def figure_re():
    """The names of the figures a run writes into ``<out>/figures`` (``<prior>_L<L>.png``, for every
    registered prior); at the start of a run every file of this naming is removed, so a report
    never links a previous run's figure."""
    return re.compile(r"^(?:" + "|".join(map(re.escape, prior_names())) + r")_L[0-9]+\.png$")


def remove_stale_figures(out):
    """Remove the files of refvae's figure naming (:func:`figure_re`) from ``<out>/figures``;
    nothing else is touched. Returns the removed names."""
    fig_dir = os.path.join(out, "figures")
    removed = []
    try:
        names = sorted(os.listdir(fig_dir))
    except OSError:
        return removed
    pattern = figure_re()
    for name in names:
        full = os.path.join(fig_dir, name)
        if pattern.match(name) and os.path.isfile(full) and not os.path.islink(full):
            try:
                os.unlink(full)
                removed.append(name)
            except OSError:
                pass
    return removed


def _previous_report(out):
    """The status/pid/host/started of an existing ``<out>/report.json`` (None if unreadable)."""
    try:
        with open(os.path.join(out, "report.json"), encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    proc = doc.get("process") if isinstance(doc.get("process"), dict) else {}
    return {"status": doc.get("status"), "pid": proc.get("pid"), "host": proc.get("host"),
            "started": proc.get("started") or doc.get("started")}


def run_validation(profile, *, seed=0, out="validation/report", priors=None, plots=True,
                   quiet=False, command=None, threads=None, workers=None):
    """Run the validation (module docstring) and write the report. Returns the exit code:
    0 (every run done, every check passed), 1 (a check failed or a run failed), 130 (interrupted
    by Ctrl-C/SIGINT) or 143 (SIGTERM): then a partial report is written, status "partial", the
    running prior "interrupted", ``interrupted_by`` the signal. An error in a prior's run marks
    that run "failed" and the next prior runs; an error outside (the kernel check, writing the
    report, MemoryError while building the report) is re-raised after the report is written with
    status "failed" and the error, so no report is left "running".

    The output directory is locked for the run (:class:`refvae.tools.provenance.DirectoryLock`): a second run
    into it raises :class:`refvae.tools.provenance.DirectoryInUseError` naming the other run's pid. A
    ``report.json`` left "running" by a killed run is recognised (its process holds no lock) and
    overwritten with a message on stderr; figures of refvae's naming from an earlier run are removed
    (:func:`remove_stale_figures`), so the directory holds only what this run wrote.

    Arguments are checked first (TypeError/ValueError naming them): ``profile`` a :class:`Profile`
    with positive sizes, known options and a finite lr > 0; ``seed`` an integer >= 0; ``priors`` a
    non-empty sequence of registered prior names (default None: every prior of
    :data:`refvae.priors.PRIORS`, in its order); ``threads`` None (the current settings)
    or an integer >= 1 (:func:`refvae.tools.provenance.limit_threads` for the run; in each
    worker process when there are workers); ``workers`` None (the profile's) or an integer >= 1:
    the runs (prior, L, seed) are shared among that many processes (1: in this process). Each
    run's numbers are the same bits whichever process computes it (its generators are its own).

    The runs are seeds ``seed, seed + 1, ..., seed + profile.seeds - 1`` of every prior and L;
    the data (and so the test images of the paired comparisons) are those of ``seed``.
    """
    _check_profile(profile)
    seed = _check_seed(seed)
    priors = prior_names() if priors is None else _check_priors(priors)
    for flag, value in (("plots", plots), ("quiet", quiet)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{flag} must be True or False, got {type(value).__name__} {value!r}")
    if threads is not None:
        threads = check_positive_int(threads, "threads")
    workers = profile.workers if workers is None else check_positive_int(workers, "workers")
    out = prepare_out_dir(out)
    from contextlib import nullcontext

    from ..provenance import limit_threads
    with DirectoryLock(out, command or "refvae validate"), InterruptGuard() as guard:
        t_start, c_start = time.perf_counter(), time.process_time()
        pool = None
        try:  # the workers first: before this process sets its threads (Numba's threading layer)
            if workers > 1:
                pool = _start_pool(workers, threads, profile, seed, out, plots)
            started = (time.perf_counter() - t_start, time.process_time() - c_start)
            with limit_threads(threads) if threads is not None else nullcontext():
                return _run_validation_locked(profile, seed, out, priors, plots, quiet, command,
                                              guard, workers, pool, (t_start, c_start), started)
        finally:
            if pool is not None:  # our own worker processes (already closed after a whole run)
                pool.terminate()
                pool.join()


def _run_validation_locked(profile, seed, out, priors, plots, quiet, command, guard, workers=1,
                           pool=None, t0c0=None, started=None):
    t_start, c_start = t0c0 or (time.perf_counter(), time.process_time())

    def say(msg):
        guard.check()
        if not quiet:
            print(msg, flush=True)

    _warn_if_stale(out)
    data, data_desc = load_data(profile, seed)
    plots, plot_note = _plots_and_note(plots)
    report = _new_report(profile, seed, priors, data_desc, command, plot_note)
    report["workers"] = workers if pool is not None else 1
    if workers > 1 and pool is None:
        report["workers_note"] = (f"{workers} worker processes were asked for; the runs went one "
                                  "after the other in the main process (Numba's threading layer "
                                  "was already running there, so forking was not safe)")
    if not quiet:
        _print_settings(profile, seed, priors, data_desc, out, plot_note, workers)
    current = []
    if started is not None and pool is not None:
        report["timing"]["start_workers"], report["cpu_seconds"]["start_workers"] = started
    try:
        write_report(report, out, t_start)  # "running", with this process's pid and host
        removed = remove_stale_figures(out)
        if removed:
            say(f"removed {len(removed)} figure(s) of an earlier run from "
                f"{os.path.join(out, 'figures')}")
        say("mixture kernel vs mpmath ...")
        t0, c0 = time.perf_counter(), time.process_time()
        report["kernel_accuracy"] = kernel_accuracy(np.random.default_rng([seed, 7777]),
                                                    profile.kernel_points)
        report["timing"]["kernel_accuracy"] = time.perf_counter() - t0
        report["cpu_seconds"]["kernel_accuracy"] = time.process_time() - c0
        write_report(report, out, t_start)
        if pool is None:
            _run_serial(report, data, data_desc, profile, out, plots, quiet, say, guard, current,
                        t_start)
        else:
            _run_parallel(report, pool, say, guard, current, out, t_start)
            pool.close()
            pool.join()
        current.clear()
        guard.check()
        guard.cleaning = True  # the work is done: a signal from here on does not undo it
        report["status"] = "complete"
        report["cpu_seconds"]["main_process"] = time.process_time() - c_start
        summary = write_report(report, out, t_start)
    except BaseException as exc:
        if pool is not None:  # our own worker processes: stop them before writing the report
            pool.terminate()
            pool.join()
        report["cpu_seconds"]["main_process"] = time.process_time() - c_start
        return _stopped(exc, report, current, out, t_start, guard)
    say(f"report: {os.path.join(out, 'report.md')} and report.json "
        f"({summary['checks_failed']} failed check(s), {summary['runs_failed']} failed run(s), "
        f"{report['timing']['total_seconds']:.0f} s)")
    return 0 if summary["checks_failed"] == 0 and summary["runs_failed"] == 0 else 1


def _warn_if_stale(out):
    """One line on stderr when ``out`` holds a report left "running" by a process that is gone
    (this run holds the directory's lock, so that process does not)."""
    prev = _previous_report(out)
    if prev is not None and prev["status"] == "running":
        print(f"refvae validate: {os.path.join(out, 'report.json')} was left 'running' by pid "
              f"{prev['pid']} on {prev['host']} (started {prev['started']}), which no longer holds "
              f"the directory (killed?); it is stale and will be overwritten", file=sys.stderr)


def _plots_and_note(plots):
    """(draw figures?, the note on figures not drawn or None)."""
    if plots and not have_matplotlib():
        return False, "figures skipped: matplotlib is not installed (pip install refvae[plot])"
    if not plots:
        return False, "figures skipped (--no-plots)"
    return True, None


def _run_serial(report, data, data_desc, profile, out, plots, quiet, say, guard, current, t_start):
    """The runs one after the other in this process, the report written after each."""
    n = len(report["runs"])
    first = report["seeds"][0]
    for i, run in enumerate(report["runs"], 1):
        current[:] = [run]
        say(f"[{i}/{n}] prior {run['prior']}, L = {run['latent_dim']}, seed {run['seed']}")
        _run_one(run, data, data_desc, profile, out, plots, quiet, say, guard,
                 first_seed=run["seed"] == first)
        guard.check()
        write_report(report, out, t_start)


# --------------------------------------------------------------------------- worker processes

_WORKER = {}  # in a worker process: the data, profile, output directory and figure switch


def _start_pool(workers, threads, profile, seed, out, plots):
    """``workers`` forked processes (multiprocessing), each loading the data of ``seed`` itself,
    or None when forking is not safe here: this process has already started Numba's threading
    layer (a forked OpenMP runtime hangs or aborts; run_validation starts the workers before it
    sets its threads, so this happens only when the caller ran a parallel kernel or set Numba's
    threads before), or the platform has no fork. None: the runs go one after the other in this
    process (the same numbers). The workers ignore SIGINT: Ctrl-C reaches the whole process
    group, and this process stops them (``terminate``) and writes the partial report."""
    import multiprocessing as mp
    if not _fork_is_safe():
        return None
    return mp.get_context("fork").Pool(workers, initializer=_worker_init,
                                       initargs=(threads, profile, seed, out, plots))


def _fork_is_safe():
    import multiprocessing as mp
    if "fork" not in mp.get_all_start_methods():
        return False
    try:
        from numba.np.ufunc import parallel
    except ImportError:  # pragma: no cover - numba is a dependency
        return True
    return not getattr(parallel, "_is_initialized", True)


def _worker_init(threads, profile, seed, out, plots):
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    data, data_desc = load_data(profile, seed)
    if threads is not None:
        from ..provenance import limit_threads
        ctx = limit_threads(threads)
        ctx.__enter__()  # for the life of the worker
        _WORKER["threads"] = ctx
    _WORKER.update(data=data, data_desc=data_desc, profile=profile, out=out, plots=plots)


def _worker_run(run, first_seed):
    """One run in a worker process: the run's dict, done or failed (never raises)."""
    w = _WORKER
    _run_one(run, w["data"], w["data_desc"], w["profile"], w["out"], w["plots"], True,
             lambda msg: None, None, first_seed=first_seed)
    return run


def _run_parallel(report, pool, say, guard, current, out, t_start):
    """The runs in the worker processes (submitted in the report's order, seed by seed); each
    result replaces its run in the report, which is written after each. While waiting, the
    earliest runs not yet back are the ones the workers hold ("running"; "interrupted" if the
    run stops)."""
    runs = report["runs"]
    first = report["seeds"][0]
    pending = {i: pool.apply_async(_worker_run, (run, run["seed"] == first))
               for i, run in enumerate(runs)}
    n, done = len(runs), 0
    while pending:
        for i in [i for i, res in pending.items() if res.ready()]:
            result = pending.pop(i).get()
            runs[i].clear()
            runs[i].update(result)
            done += 1
            say(f"[{done}/{n}] {runs[i]['status']}: prior {runs[i]['prior']}, L = "
                f"{runs[i]['latent_dim']}, seed {runs[i]['seed']}")
            write_report(report, out, t_start)
        busy = sorted(pending)[:report["workers"]]
        current[:] = [runs[i] for i in busy]
        for run in current:
            run["status"] = "running"
        guard.check()
        time.sleep(0.1)


def _new_report(profile, seed, priors, data_desc, command, plot_note):
    """The report dict at the start of a run: status "running", every run "pending"."""
    from ..provenance import provenance
    report = {
        "schema": SCHEMA, "title": "refvae validation report", "command": command,
        "status": "running", "interrupted_by": None, "process": run_identity(),
        "seed": seed, "profile": asdict(profile), "data": data_desc,
        "provenance": {**provenance(), "seed": seed, "profile": profile.name,
                       "reproducibility": REPRODUCIBILITY},
        "tolerances": {k: v.record() for k, v in TOLERANCES.items()},
        "kernel_accuracy": None, "runs": [], "timing": {}, "cpu_seconds": {},
        "figures_note": plot_note, "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "seeds": [seed + i for i in range(profile.seeds)],
    }
    for s in report["seeds"]:
        for L in profile.latent_dims:
            for p in priors:
                report["runs"].append({"prior": p, "latent_dim": L, "seed": s, "status": "pending",
                                       "timing": {}, "cpu_seconds": {},
                                       "seeds": {"generator": f"default_rng([{s}, {L}, "
                                                              f"{prior_index(p)}, part])"}})
    return report


def _print_settings(profile, seed, priors, data_desc, out, plot_note, workers=1):
    print(f"refvae validate: profile {profile.name!r} ({profile.description})")
    for k, v in asdict(profile).items():
        if k not in ("name", "description"):
            print(f"  {k:<22} {v}")
    print(f"  {'seed':<22} {seed} (training seeds {seed}..{seed + profile.seeds - 1})")
    print(f"  {'worker processes':<22} {workers}")
    print(f"  {'priors':<22} {', '.join(priors)}")
    print(f"  {'data':<22} {data_desc['name']}: {data_desc['n_train']}/{data_desc['n_val']}/"
          f"{data_desc['n_test']} (train/val/test)")
    print(f"  {'output':<22} {out}")
    if plot_note:
        print(f"  note: {plot_note}")


def _run_one(run, data, data_desc, profile, out, plots, quiet, say, guard, first_seed=True):
    """Build, train and evaluate the model of one run. An error marks the run "failed" (with the
    error and traceback) and returns, so the next prior runs; an interrupt, also one disguised as
    another error (a SystemError from a Ctrl-C inside a Numba call), is raised."""
    from .single_run import _rng
    try:
        model = build_model(run["prior"], run["latent_dim"], data_desc["D"], profile,
                            _rng(run["seed"], run["latent_dim"], run["prior"], "train"))
        run["model"] = model.config()
        run["prior_learnable"] = any(k.startswith("prior.") for k in model.params)
        run["status"] = "training"
        snaps = _snapshot_recorder(model, data, profile, first_seed) if plots else None
        _train(run, model, data, profile, quiet, callback=snaps)
        run["status"] = "evaluating"
        _evaluate(run, model, data, profile, out, plots, say, first_seed=first_seed,
                  snapshots=snaps)
        run["status"] = "done"
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # record, continue with the next prior
        sig = interrupt_signal(exc, guard)
        if sig is not None:  # e.g. SystemError from a Ctrl-C inside a Numba call
            raise Interrupted(sig) from exc
        run["status"] = "failed"
        run["error"] = f"{type(exc).__name__}: {exc}"
        run["traceback"] = traceback.format_exc()
        print(f"refvae validate: {run['prior']} L = {run['latent_dim']} failed: "
              f"{run['error']}", file=sys.stderr)


def _stopped(exc, report, current, out, t_start, guard):
    """The run stopped with ``exc``: an interrupt writes the partial report and returns 130/143;
    any other error writes the report "failed" (never left "running") and is re-raised.
    ``current``: the runs in progress."""
    if guard.received:
        guard.cleaning = True  # first: no repeated/second Ctrl-C while writing the partial report
    sig = interrupt_signal(exc, guard)
    if sig is None:  # an error outside a prior's run: never leave the report "running"
        report["status"] = "failed"
        report["error"] = f"{type(exc).__name__}: {exc}"
        try:
            write_report(report, out, t_start)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        raise  # the exception being handled by the caller's except clause
    guard.cleaning = True
    for run in current:
        if run["status"] not in ("done", "failed"):
            run["status"] = "interrupted"
    report["status"] = "partial"
    report["interrupted_by"] = sig
    write_report(report, out, t_start)
    what = "terminated (SIGTERM)" if sig == "SIGTERM" else f"interrupted ({sig})"
    print(f"refvae validate: {what}; partial report written to "
          f"{os.path.join(out, 'report.md')}", file=sys.stderr)
    return interrupt_exit_code(sig)
