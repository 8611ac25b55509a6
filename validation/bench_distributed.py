#!/usr/bin/env python
r"""log q(z) of the aggregated posterior on one machine and sharded over a local Dask cluster
(a script, not a test): the Dask overhead, and the per-pair rate that validation/SCALING.md uses.

What it measures
----------------
For N components and M queries in L dimensions (default N = 10^5, M = 10^4, L = 16: 10^9
(query, component) pairs), in one run on one machine:

- **single machine**: ``refvae.tools.distributed.log_qz(z, means, log_vars)`` without a cluster, i.e.
  the streaming kernel ``mixture_log_prob`` with 2 Numba threads (both cores) and with 1 thread
  (one core: the per-core rate);
- **Dask**: a ``distributed.LocalCluster`` with 2 worker processes of 1 thread each (each shard
  task uses 1 Numba thread), for several chunkings (components per shard), in two ways:
  *end to end* (``log_qz(z, means, log_vars, client=...)`` with NumPy components: the components
  are shipped in the task graph on every call, the queries scattered to both workers, the partials
  combined by the fixed tree), and *components resident* (the components persisted on the workers
  beforehand as a Dask array, as in a deployment that evaluates several query batches against the
  same components; only the queries and partials move).

Reported: median wall times of ``--repeats`` runs after a warm-up, pairs per second, the Dask
overhead ratio t_dask / t_single (2 cores both ways; > 1 = Dask slower), the cluster's start-up
time, whether repeated Dask runs are bit-identical, the largest difference from the single-machine
result, and how many cores *other* processes used during each phase (this machine is shared: the
CPU time of this process and its worker processes is subtracted from the machine's busy time).

Usage
-----
    python validation/bench_distributed.py            # N = 1e5, M = 1e4, L = 16 (several minutes)
    python validation/bench_distributed.py --quick    # M = 1e3, one repeat (about a minute)

Results go to ``validation/results/bench_distributed.json`` and ``.md`` (``--quick`` writes
``bench_distributed_quick.*``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _bench.py sits next to this script
import _bench  # noqa: E402  (shared benchmark machinery)
import numpy as np  # noqa: E402

from _bench import log, med, run_timed  # noqa: E402


# ============================================================================ machine load

def _own_cpu():
    """CPU seconds of this process and all its descendants (the Dask workers, which os.times()
    would not count: they are not waited-for children)."""
    import psutil
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for ch in me.children(recursive=True):
        try:
            total += sum(ch.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def snapshot():
    return _bench.cpu_snapshot(own_cpu=_own_cpu)


def contention(s0, s1):
    return _bench.contention(s0, s1, steal=False)


# ============================================================================ provenance

def provenance(args):
    """_bench.provenance with the versions of Dask and distributed."""
    return _bench.provenance(seed=args.seed, extra_versions=("dask", "distributed"))


# ============================================================================ benchmark

def make_case(N, M, L, seed):
    rng = np.random.default_rng([seed, N, M, L])
    means = rng.normal(size=(N, L))
    log_vars = rng.normal(-2.0, 0.5, size=(N, L))
    idx = rng.integers(0, N, size=M)
    z = means[idx] + np.exp(0.5 * log_vars[idx]) * rng.standard_normal((M, L))
    return z, means, log_vars


def phase(name, fn, repeats, record):
    s0 = snapshot()
    out, ts = run_timed(fn, repeats, False)
    c = contention(s0, snapshot())
    record[name] = {"times_s": ts, "median_s": med(ts), "contention": c}
    log(f"  {name:<44s} {med(ts):8.3f} s  (runs {', '.join(f'{t:.2f}' for t in ts)}; "
        f"others use {c['others_cores']:.2f} cores)")
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="M = 1000 queries, one repeat")
    p.add_argument("--N", type=int, default=100_000)
    p.add_argument("--M", type=int, default=10_000)
    p.add_argument("--L", type=int, default=16)
    p.add_argument("--chunks", default="65536,25000,6250", help="components per shard, comma-separated")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--json", default=None)
    p.add_argument("--md", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.M = min(args.M, 1000)
        args.repeats = 1
    return args


def single_machine(z, means, log_vars, repeats, record):
    """log q(z) on this machine with all cores and with one: (the result, t_all_cores, t_one_core)."""
    import numba

    from refvae.kernels.mixture import mixture_log_prob
    from refvae.tools import distributed as dist
    mixture_log_prob(z[:8], means[:300], log_vars[:300])  # compile / load from cache
    old = numba.get_num_threads()
    numba.set_num_threads(min(os.cpu_count() or 1, numba.config.NUMBA_NUM_THREADS))
    name = f"single machine, {numba.get_num_threads()} Numba threads"
    single = phase(name, lambda: dist.log_qz(z, means, log_vars), repeats, record)
    numba.set_num_threads(1)
    phase("single machine, 1 Numba thread (one core)", lambda: dist.log_qz(z, means, log_vars),
          repeats, record)
    # the planning rate: CPU seconds of this process with one Numba thread (a loaded machine
    # stretches wall time, not the CPU time a call needs); best of the repeats
    cpu = []
    for _ in range(max(1, repeats)):
        c0 = time.process_time()
        dist.log_qz(z, means, log_vars)
        cpu.append(time.process_time() - c0)
    record["one core, CPU time"] = {"cpu_s": cpu, "best_cpu_s": min(cpu)}
    numba.set_num_threads(old)
    return single, record[name]["median_s"], record["single machine, 1 Numba thread (one core)"]["median_s"]


def start_cluster(workers):
    """A LocalCluster of ``workers`` processes x 1 thread with the kernel loaded in each:
    (cluster, client, start-up seconds)."""
    import distributed

    from refvae.kernels.mixture import mixture_partial
    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=40)
    client = distributed.Client(cluster, set_as_default=False)
    client.run(lambda: mixture_partial(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2)),
                                       np.zeros(1)))
    t_startup = time.perf_counter() - t0
    log(f"  LocalCluster start-up and kernel load: {t_startup:.2f} s; dashboard {client.dashboard_link}")
    return cluster, client, t_startup


def cluster_row(client, z, means, log_vars, chunk, single, t_single, repeats, record):
    """One chunking on the cluster: end to end (NumPy components in the graph) and with the
    components resident on the workers; the row of the report."""
    import dask.array as da
    import distributed

    from refvae.tools import distributed as dist
    n_shards = len(dist.shard_bounds(means.shape[0], chunk))
    dist.log_qz(z[:8], means, log_vars, client=client, chunk=chunk)  # warm-up
    name_e = f"Dask end to end, chunk {chunk} ({n_shards} shards)"
    r_e = phase(name_e, lambda: dist.log_qz(z, means, log_vars, client=client, chunk=chunk),
                repeats, record)
    with warnings.catch_warnings():  # the components travel in the graph here, once
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        md = client.persist(da.from_array(means, chunks=(chunk, means.shape[1])))
        lv = client.persist(da.from_array(log_vars, chunks=(chunk, means.shape[1])))
    with client.as_current():
        distributed.wait([md, lv])
    name_r = f"Dask components resident, chunk {chunk}"
    r_r = phase(name_r, lambda: dist.log_qz(z, md, lv, client=client, chunk=chunk), repeats, record)
    again = dist.log_qz(z, md, lv, client=client, chunk=chunk)
    del md, lv
    return {"chunk": chunk, "shards": n_shards,
            "end_to_end_s": record[name_e]["median_s"],
            "resident_s": record[name_r]["median_s"],
            "ratio_end_to_end": record[name_e]["median_s"] / t_single,
            "ratio_resident": record[name_r]["median_s"] / t_single,
            "bit_identical_repeat_and_sources": bool(np.array_equal(r_e, r_r)
                                                     and np.array_equal(r_r, again)),
            "max_abs_diff_vs_single": float(np.max(np.abs(r_e - single))),
            "max_rel_diff_vs_single": float(np.max(np.abs(r_e - single) / np.abs(single)))}


def main(argv=None):
    args = parse_args(argv)
    chunks = [int(c) for c in args.chunks.split(",")]
    json_path, md_path = _bench.output_paths(args, "bench_distributed")
    prov = provenance(args)
    N, M, L = args.N, args.M, args.L
    pairs = N * M
    log(f"bench_distributed: N = {N}, M = {M}, L = {L} ({pairs:.3g} pairs); chunks {chunks}; "
        f"{args.workers} workers x 1 thread; repeats {args.repeats}; load average {os.getloadavg()}")
    z, means, log_vars = make_case(N, M, L, args.seed)
    s_run = snapshot()
    record = {}
    cores = os.cpu_count() or 1
    single, t_single, t_one = single_machine(z, means, log_vars, args.repeats, record)
    cluster, client, t_startup = start_cluster(args.workers)
    try:
        rows = [cluster_row(client, z, means, log_vars, chunk, single, t_single, args.repeats, record)
                for chunk in chunks]
        run_c = contention(s_run, snapshot())  # before the workers (counted as ours) exit
    finally:
        client.close()
        cluster.close()

    rate2 = pairs / t_single
    rate1 = pairs / t_one
    bytes_components = N * L * 2 * 8
    settings = {"N": N, "M": M, "L": L, "pairs": pairs, "chunks": chunks, "workers": args.workers,
                "threads_per_worker": 1, "threads_per_task": 1, "repeats": args.repeats,
                "quick": args.quick, "cluster_startup_s": t_startup, "run_contention": run_c,
                "data": "means ~ N(0, 1), log_vars ~ N(-2, 0.5^2); queries drawn from q(z)"}
    rate_cpu = pairs / record["one core, CPU time"]["best_cpu_s"]
    summary = {"pairs_per_cpu_s_one_core": rate_cpu,
               "pairs_per_s_one_machine": rate2, "pairs_per_s_one_core": rate1,
               "ns_per_pair_one_core": 1e9 / rate1, "single_machine_s": t_single, "one_core_s": t_one,
               "bytes_components": bytes_components, "bytes_queries_per_worker": M * L * 8,
               "bytes_partial_per_shard": 2 * M * 8}
    report = {"provenance": prov, "settings": settings, "summary": summary, "rows": rows, "phases": record}
    log(f"\nper-core CPU rate at L = {L}: {rate_cpu:.3g} pairs per CPU-second")
    log(f"per-pair rate at L = {L}: {rate2:.3g} pairs/s on this {cores}-core machine "
        f"({rate1:.3g} pairs/s on one core, {1e9 / rate1:.2f} ns per pair)")
    for r in rows:
        log(f"  chunk {r['chunk']:>6d} ({r['shards']:>3d} shards): Dask/single = {r['ratio_end_to_end']:.2f} "
            f"end to end, {r['ratio_resident']:.2f} with resident components; bit-identical "
            f"{r['bit_identical_repeat_and_sources']}; max |diff| vs single "
            f"{r['max_abs_diff_vs_single']:.2e}")
    log(f"whole run: other processes used {run_c['others_cores']:.2f} of {cores} cores on average "
        f"(load average {run_c['loadavg'][0]:.2f})")
    _bench.write_report(json_path, md_path, report, markdown(report))
    return 0


def markdown(rep):
    p, s, m = rep["provenance"], rep["settings"], rep["summary"]
    rc = s["run_contention"]
    out = [f"# log q(z) on one machine and on a local Dask cluster (`validation/bench_distributed.py`)", "",
           f"refvae {p['refvae']} at `{p['git_revision']}`, {p['date_utc']}; {p['cpu_model']} "
           f"({p['cpu_count']} logical CPUs), {p['platform']}; Python {p['python']}, NumPy {p['numpy']}, "
           f"Numba {p['numba']}, Dask {p['dask']}, distributed {p['distributed']}. Command: "
           f"`{p['command']}`. Load average at start {p['loadavg_start'][0]:.2f}.", "",
           f"N = {s['N']} components, M = {s['M']} queries, L = {s['L']} ({s['pairs']:.3g} pairs); "
           f"{s['data']}. Median of {s['repeats']} run(s) after a warm-up. Cluster: LocalCluster, "
           f"{s['workers']} worker processes x 1 thread, 1 Numba thread per shard task; start-up and "
           f"kernel load {s['cluster_startup_s']:.1f} s (not in the times below).", "",
           f"**Machine load: other processes used {rc['others_cores']:.2f} cores on average during the "
           f"run** (of {p['cpu_count']}; load average at the end {rc['loadavg'][0]:.2f}). Timings on a "
           f"shared machine are upper bounds; the ratios compare phases run one after the other under a load that varied.", "",
           "## Rate (the input of validation/SCALING.md)", "",
           f"- **one core, CPU time** (1 Numba thread, `time.process_time`, best of {s['repeats']}): "
           f"**{m['pairs_per_cpu_s_one_core']:.3g} pairs per CPU-second** (the planning rate: other "
           f"processes stretch the wall times below, not the CPU time a call needs)",
           f"- one machine (2 Numba threads): {m['single_machine_s']:.2f} s, "
           f"**{m['pairs_per_s_one_machine']:.3g} pairs/s**",
           f"- one core (1 Numba thread): {m['one_core_s']:.2f} s, **{m['pairs_per_s_one_core']:.3g} "
           f"pairs/s** ({m['ns_per_pair_one_core']:.2f} ns per pair)", "",
           "## Dask overhead (t_dask / t_single, both on the same 2 cores)", "",
           "| chunk | shards | end to end | ratio | components resident | ratio | bit-identical | "
           "max abs diff vs single | max rel diff |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        out.append(f"| {r['chunk']} | {r['shards']} | {r['end_to_end_s']:.2f} s | "
                   f"{r['ratio_end_to_end']:.2f} | "
                   f"{r['resident_s']:.2f} s | {r['ratio_resident']:.2f} | "
                   f"{'yes' if r['bit_identical_repeat_and_sources'] else 'NO'} | "
                   f"{r['max_abs_diff_vs_single']:.1e} | {r['max_rel_diff_vs_single']:.1e} |")
    out += ["", "Per phase, cores used by other processes:", ""]
    for name, ph in rep["phases"].items():
        if "median_s" not in ph:  # the CPU-time measurement: in "Rate" above
            continue
        out.append(f"- {name}: {ph['median_s']:.2f} s; others {ph['contention']['others_cores']:.2f} cores")
    out += ["", "Bit-identical: the end-to-end and resident-component runs (different graphs, same "
            "chunking) and a repeated run give the same bits. The difference from the single machine "
            "is rounding (the sharded combination), within the bound of refvae.tools.distributed "
            "(module docstring).", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
