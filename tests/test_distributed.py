"""The streaming kernel sharded over a Dask cluster (:mod:`refvae.tools.distributed`) and ``refvae stats``.

On a local cluster of 2 worker processes (and one of 1), with N = 2 * 10^4 components in L = 2 and
16 dimensions and M = 200 queries:

- log q(z) on the cluster agrees with the single-machine kernel within the bound of the module
  docstring, for chunkings that divide N or not, with a shard of one component, many shards, and
  one shard (then bit-identical);
- the result is bit-identical with 1 and 2 workers, with 1 and 2 Numba threads per task, on
  repeated runs, for every source of the components (NumPy, Dask, .npy, .npz, directory), after a
  worker is killed mid-computation, and equal to the same combination tree computed in-process;
- shards whose components all have log-weight -inf contribute nothing;
- the estimators equal the single-machine ones for the same generator;
- bad input and an unreachable scheduler give clear errors; the CLI's ``run()`` works end to end.

Tolerance (sharded vs single machine, per query): both are within the kernel's bound of the exact
value (``mixture_kernel_c``: c = 4 as tested, 26 proven); the sharded one also carries the shards' spread (ln n) and the
combination tree's rounding, so ``|f_dist - f_single| <= c u (2 (|f| + S) + ln n) +
D (k + 3 + ln k) u + 2 u`` (refvae.tools.distributed docstring). That is ~1e-13 here, while a wrong
log-weight (-ln chunk instead of -ln N) is off by >= ln 2, and a dropped shard by > 1e-4.
"""

import argparse
import json
import math
import os

import numpy as np
import pytest
import scipy.special

distributed = pytest.importorskip(
    "distributed", reason="the cluster path needs dask[distributed]: pip install refvae[scale]")
import dask.array as da  # noqa: E402

from refvae.tools import cli_stats  # noqa: E402
from refvae import gaussian  # noqa: E402
from refvae.tools import distributed as dist  # noqa: E402
from refvae.estimators import (_draw_posterior, aggregated_posterior_stats, encode_all,  # noqa: E402
                               hole_metrics)
from refvae.kernels.mixture import finalize_partials, mixture_log_prob, mixture_partial  # noqa: E402
from refvae.priors.mixtures import AggregatedPosterior  # noqa: E402
from refvae.tolerances import U, tolerance  # noqa: E402
from refvae.vae import VAE  # noqa: E402

C_BOUND = tolerance("mixture_kernel_c").c
LN_2PI = math.log(2 * math.pi)
N = 20000
M = 200
SEED = 20261125
CHUNKS = {  # chunk -> what it exercises
    20000: "one shard (bit-identical to the single machine)",
    19999: "the last shard holds one component",
    4096: "tile-aligned shards, 4096 does not divide N",
    3001: "unequal last shard (2994)",
    777: "26 shards, two tree levels",
    97: "207 shards, three tree levels",
}


# =========================================================================== helpers

def make_case(L, seed=SEED):
    """Components like an encoder's (means ~ N(0, 1), log-variances ~ U(-3, 0)); queries: 180 drawn
    from q(z), 20 far out (|z| ~ 6), where one component dominates."""
    rng = np.random.default_rng([seed, L])
    means = rng.normal(size=(N, L))
    log_vars = rng.uniform(-3.0, 0.0, size=(N, L))
    idx = rng.integers(0, N, size=M - 20)
    z = np.concatenate([means[idx] + np.exp(0.5 * log_vars[idx]) * rng.normal(size=(M - 20, L)),
                        rng.normal(scale=6.0, size=(20, L))])
    return z, means, log_vars


def error_scale(z, means, log_vars, log_weights=None):
    """``|f| + S`` per query (float64, chunked): ``S_b = sum_k r_bk P_bk``,
    ``P_bk = |w_k| + 1/2 sum_l (ln 2 pi + |v_kl| + (z_bl - mu_kl)^2 e^{-v_kl})`` (refvae.kernels.mixture)."""
    K, L = means.shape
    w = np.full(K, -math.log(K)) if log_weights is None else log_weights
    live = w > -np.inf
    half_inv_sd = np.exp(-0.5 * log_vars)
    const = np.where(live, w, 0.0) - 0.5 * np.sum(LN_2PI + log_vars, axis=1)
    cabs = np.where(live, np.abs(w), 0.0) + 0.5 * np.sum(LN_2PI + np.abs(log_vars), axis=1)
    out = np.empty(len(z))
    step = max(1, 2 ** 22 // (K * L))
    for b0 in range(0, len(z), step):
        y = (z[b0:b0 + step, None, :] - means[None]) * half_inv_sd[None]
        q = 0.5 * np.sum(y * y, axis=2)
        t = np.where(live[None], const[None] - q, -np.inf)
        f = scipy.special.logsumexp(t, axis=1)
        fin = np.isfinite(f)
        with np.errstate(invalid="ignore", under="ignore"):
            r = np.where(fin[:, None], np.exp(t - np.where(fin, f, 0.0)[:, None]), 0.0)
        S = np.sum(r * (cabs[None] + q), axis=1)
        out[b0:b0 + step] = np.where(fin, np.abs(f) + S, 0.0)
    return out


def depth(n, k=dist.DEFAULT_SPLIT_EVERY):
    d = 0
    while n > 1:
        n = -(-n // k)
        d += 1
    return d


def sharded_bound(scale, n_shards, k=dist.DEFAULT_SPLIT_EVERY):
    """Allowed |f_dist - f_single| per query (module docstring)."""
    return (C_BOUND * U * (2 * scale + math.log(n_shards))
            + U * (depth(n_shards, k) * (k + 3 + math.log(k)) + 2))


def assert_within(actual, expected, allowed, what):
    same_inf = np.isinf(expected) & (actual == expected)
    err = np.where(same_inf, 0.0, np.abs(actual - expected))
    ok = err <= allowed
    if not ok.all():
        i = int(np.argmax(np.where(ok, -np.inf, err / allowed)))
        raise AssertionError(f"{what}: {int((~ok).sum())} of {ok.size} queries outside the bound; worst "
                             f"{i}: {actual[i]!r} vs {expected[i]!r}, err {err[i]:.3e} > {allowed[i]:.3e}")


def tree_in_process(z, means, log_vars, chunk, log_weights=None):
    """The documented computation (shards in order, fixed tree), done here without Dask."""
    K = means.shape[0]
    w = np.full(K, -math.log(K)) if log_weights is None else log_weights
    parts = [mixture_partial(z, means[a:b], log_vars[a:b], w[a:b]) for a, b in dist.shard_bounds(K, chunk)]
    root, _ = dist.combine_tree(parts)
    return finalize_partials(*root)


def load_or_die(block, index, marker):
    """Dask task: return a block of components -- except that the first time block ``index`` is
    loaded (no ``marker`` file yet) it creates the marker and kills its worker process."""
    if index == 3 and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        os._exit(1)
    return block


# =========================================================================== fixtures

def _local_cluster(n_workers):
    cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=50)
    client = distributed.Client(cluster, set_as_default=False)
    # load the compiled kernel in every worker (Numba's on-disk cache) before any timing matters
    client.run(lambda: mixture_partial(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2)), np.zeros(1)))
    return cluster, client


def _cluster_fixture(n_workers):
    """A module-scoped fixture: a local cluster of ``n_workers`` processes and its client."""
    @pytest.fixture(scope="module")
    def fixture():
        cluster, client = _local_cluster(n_workers)
        yield cluster, client
        client.close()
        cluster.close()
    return fixture


cluster1 = _cluster_fixture(1)
cluster2 = _cluster_fixture(2)


@pytest.fixture(scope="module")
def cases():
    """(z, means, log_vars, |f| + S, single-machine log q(z)) for L = 2 and 16."""
    out = {}
    for L in (2, 16):
        z, m, v = make_case(L)
        out[L] = (z, m, v, error_scale(z, m, v), mixture_log_prob(z, m, v))
    return out


@pytest.fixture(scope="module")
def tiny():
    """A small MoG-prior model (D = 6, L = 2) and N = 1500 data points."""
    rng = np.random.default_rng(SEED)
    model = VAE(6, 2, (8,), "tanh", "gaussian", prior="mog", rng=rng,
                prior_kwargs={"num_components": 3})
    x = rng.normal(size=(1500, 6)) * 2.0
    return model, x


# =========================================================================== log q(z)

@pytest.mark.parametrize("chunk,L", [(c, L) for c in sorted(CHUNKS, reverse=True) for L in (2, 16)
                                     if not (c == 97 and L == 16)],  # 207 shards: once (time)
                         ids=lambda v: str(v))
def test_log_qz_matches_single_machine(cluster2, cases, L, chunk):
    """log q(z) on 2 workers vs ``mixture_log_prob`` (the single-machine path) within the bound;
    with one shard bit-identical. The bound is far below any real error (checked)."""
    _, client = cluster2
    z, m, v, scale, single = cases[L]
    got = dist.log_qz(z, m, v, client=client, chunk=chunk)
    assert got.shape == (M,) and got.dtype == np.float64
    n = len(dist.shard_bounds(N, chunk))
    allowed = sharded_bound(scale, n)
    assert allowed.max() < 1e-11  # |f| + S reaches ~2e3 at the far queries (L = 16)
    assert_within(got, single, allowed, f"chunk {chunk} ({CHUNKS[chunk]}), L = {L}")
    if n == 1:
        assert np.array_equal(got, single)
    assert np.array_equal(dist.log_qz(z, m, v), single)  # the single-machine path is the kernel


@pytest.mark.parametrize("chunk", [19999, 3001, 777], ids=lambda c: f"chunk{c}")
def test_bit_identical_across_workers_threads_and_runs(cluster1, cluster2, cases, chunk):
    """Same chunking: the same bits with 1 and 2 workers, 1 and 2 Numba threads per task, on a
    repeated run, and as the fixed tree computed in this process."""
    z, m, v, _, _ = cases[16]
    r2 = dist.log_qz(z, m, v, client=cluster2[1], chunk=chunk)
    r2_again = dist.log_qz(z, m, v, client=cluster2[1], chunk=chunk)
    r1 = dist.log_qz(z, m, v, client=cluster1[1], chunk=chunk, threads_per_task=2)
    here = tree_in_process(z, m, v, chunk)
    for other, what in ((r2_again, "repeated run"), (r1, "1 worker, 2 threads per task"),
                        (here, "the same tree in-process")):
        assert np.array_equal(r2, other), f"chunk {chunk}: not bit-identical to {what}"


def test_component_sources_give_the_same_bits(cluster2, cases, tmp_path):
    """NumPy arrays, Dask arrays (other chunks, rechunked), .npy files, an .npz file (uncompressed;
    a compressed one is refused on the cluster path: tests/test_distributed_storage.py) and a
    directory: the same bits for the same chunking."""
    z, m, v, _, _ = cases[16]
    client = cluster2[1]
    want = dist.log_qz(z, m, v, client=client, chunk=3001)
    np.save(tmp_path / "means.npy", m)
    np.save(tmp_path / "log_vars.npy", v)
    np.savez(tmp_path / "c.npz", means=m, log_vars=v)
    sources = {"dask": (da.from_array(m, chunks=(5000, 16)), da.from_array(v, chunks=(1234, 16))),
               ".npy": (str(tmp_path / "means.npy"), str(tmp_path / "log_vars.npy")),
               ".npz": (tmp_path / "c.npz", None),
               "directory": (tmp_path, None)}
    for what, (a, b) in sources.items():
        assert np.array_equal(dist.log_qz(z, a, b, client=client, chunk=3001), want), what
    assert np.array_equal(dist.log_qz(z, tmp_path / "c.npz"), mixture_log_prob(z, m, v))


def test_shards_with_only_neg_inf_weights(cluster2, cases):
    """Given log-weights with whole shards switched off (first shard, two middle shards, a single
    component): the partials of dead shards are (-inf, 0) and contribute nothing; all -inf -> -inf."""
    z, m, v, _, _ = cases[2]
    rng = np.random.default_rng(3)
    w = scipy.special.log_softmax(rng.normal(size=N))
    w[:1000] = -np.inf
    w[5000:7000] = -np.inf
    w[N - 1] = -np.inf
    client = cluster2[1]
    got = dist.log_mixture(z, m, v, w, client=client, chunk=1000)
    want = mixture_log_prob(z, m, v, w)
    assert_within(got, want, sharded_bound(error_scale(z, m, v, w), 20), "dead shards")
    dead = dist._shard_partial(z, m[:1000], v[:1000], w[:1000], 0, 0, 1000, 1)
    assert np.all(dead[0] == -np.inf) and np.all(dead[1] == 0.0)
    assert np.all(dist.log_mixture(z, m, v, np.full(N, -np.inf), client=client, chunk=1000) == -np.inf)


def test_worker_lost_mid_computation(cluster2, cases, tmp_path):
    """A worker process dies while the shards are being evaluated (the task loading shard 3 kills
    its worker the first time it runs); Dask restarts it and recomputes the lost tasks from the
    graph. The result is bit-identical to the undisturbed run."""
    cluster, client = cluster2
    z, m, v, _, _ = cases[16]
    chunk = 1000
    want = dist.log_qz(z, m, v, client=client, chunk=chunk)
    marker = str(tmp_path / "killed")
    import dask
    blocks = [da.from_delayed(dask.delayed(load_or_die, pure=False)(m[a:b], i, marker),
                              shape=(b - a, 16), dtype=np.float64)
              for i, (a, b) in enumerate(dist.shard_bounds(N, chunk))]
    means = da.concatenate(blocks)
    before = set(client.scheduler_info()["workers"])
    got = dist.log_qz(z, means, da.from_array(v, chunks=(chunk, 16)), client=client, chunk=chunk)
    assert os.path.exists(marker), "the worker was not killed"
    client.wait_for_workers(2, timeout=60)
    assert set(client.scheduler_info()["workers"]) != before, "no worker was replaced"
    assert np.array_equal(got, want)


# =========================================================================== estimators

def test_aggregated_stats_equal_single_machine(cluster2, tiny):
    """Same generator: identical to ``aggregated_posterior_stats`` with one shard (and on the
    single-machine path); with 6 shards the terms through ln q(z) move by at most the kernel's
    bound, the others are identical."""
    model, x = tiny
    S = 2
    want = aggregated_posterior_stats(model, x, np.random.default_rng(5), S)
    assert dist.aggregated_stats(model, x, np.random.default_rng(5), S) == want
    assert dist.aggregated_stats(model, x, np.random.default_rng(5), S, client=cluster2[1],
                                 chunk=len(x)) == want
    got = dist.aggregated_stats(model, x, np.random.default_rng(5), S, client=cluster2[1], chunk=257)
    mu, lv = encode_all(model, x)
    z = _draw_posterior(mu, lv, S, np.random.default_rng(5)).reshape(-1, 2)
    eps_q = float(np.max(sharded_bound(error_scale(z, mu, lv), 6)))
    for k in want:
        if k in ("cross_entropy", "conditional_entropy", "avg_kl"):
            assert got[k] == want[k], k
        else:
            assert abs(got[k].value - want[k].value) <= eps_q, k
            assert abs(got[k].se - want[k].se) <= 4 * eps_q, k
            assert got[k].n == want[k].n


def test_aggregated_stats_from_components_and_subsampled_queries(cluster2, tiny, tmp_path):
    """Components from ``encode_to_shards`` files (bit-identical to ``encode_all``) give the same
    statistics as the data; ``n_queries`` draws like ``AggregatedPosterior.sample``."""
    model, x = tiny
    mu, lv = encode_all(model, x)
    paths = dist.encode_to_shards(model, x, out_dir=tmp_path)
    assert np.array_equal(np.load(paths[0]), mu) and np.array_equal(np.load(paths[1]), lv)
    a, b = dist.encode_to_shards(model, x, chunk=333)
    assert np.allclose(a, mu, rtol=1e-13, atol=1e-13) and np.allclose(b, lv, rtol=1e-13, atol=1e-13)
    from_x = dist.aggregated_stats(model, x, np.random.default_rng(9), client=cluster2[1], chunk=500)
    from_files = dist.aggregated_stats(model, tmp_path, np.random.default_rng(9), client=cluster2[1],
                                       chunk=500)
    assert from_files == from_x
    rng = np.random.default_rng(11)
    sub = dist.aggregated_stats(model, (mu, lv), rng, n_queries=300)
    zq = AggregatedPosterior(2, mu, lv).sample({}, 300, np.random.default_rng(11))
    assert sub["entropy_qz"].value == float(np.mean(-mixture_log_prob(zq, mu, lv)))
    assert sub["entropy_qz"].n == 300


def mean_bound(values):
    """Allowed |exact-sum mean - np.mean| (refvae.tools.distributed docstring, "aggregated_stats"):
    ``(d + 4) u mean_n |h_n|`` with ``d = 24 + max(0, ceil(log2(N / 128)))`` the rounding depth of
    NumPy's pairwise summation of N terms."""
    n = len(values)
    d = 24 + max(0, math.ceil(math.log2(n / 128)))
    return (d + 4) * U * float(np.mean(np.abs(values)))


def test_exact_sum_is_exact():
    """``_exact_sum``'s terms add up to the exact sum (checked in rationals), on cancelling and
    wide-range values; combining any split of the values gives the correctly rounded total."""
    from fractions import Fraction
    rng = np.random.default_rng(17)
    cases = [np.array([1e16, 1.0, -1e16, 2.0 ** -60]), np.array([0.1] * 10), np.zeros(5),
             rng.normal(size=5000) * 10.0 ** rng.integers(-30, 30, size=5000),
             np.concatenate([np.full(100, 1e300), np.full(100, -1e300), [5e-324, 1.0]])]
    for v in cases:
        terms = dist._exact_sum(v)
        exact = sum(map(Fraction, v.tolist()), Fraction(0))
        assert sum(map(Fraction, terms), Fraction(0)) == exact
        assert terms[0] == math.fsum(v)
        cuts = np.sort(rng.integers(0, len(v) + 1, size=3))
        parts = [dist._exact_sum(p) for p in np.split(v, cuts)]
        assert dist._combine_exact_sums(parts) == math.fsum(v) == float(exact)
    assert dist._exact_sum(np.array([1.0, np.inf])) == (np.inf,)
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, as np.mean gives
        assert math.isnan(dist._combine_exact_sums([(np.inf,), (-np.inf,)]))


@pytest.fixture(scope="module")
def tiny_standard(tmp_path_factory):
    """A small standard-prior model (D = 6, L = 2), N = 1500 data points and their components
    in files (``encode_to_shards``)."""
    rng = np.random.default_rng([SEED, 1])
    model = VAE(6, 2, (8,), "tanh", "gaussian", prior="standard", rng=rng)
    x = rng.normal(size=(1500, 6)) * 2.0
    out = tmp_path_factory.mktemp("standard_components")
    dist.encode_to_shards(model, x, out_dir=out)
    return model, x, out


def _forbid_client_materialisation(monkeypatch):
    """Any attempt to build the (N, L) components on the client now fails."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("the client materialised the (N, L) components")
    monkeypatch.setattr(dist._Components, "to_numpy", refuse)
    monkeypatch.setattr(dist._FileArray, "full", refuse)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("prior", ["standard", "mog"])
def test_queries_from_files_equal_in_memory_components(cluster1, cluster2, tiny, tiny_standard,
                                                       tmp_path, monkeypatch, workers, prior):
    """``n_queries=M`` with components in files or Dask arrays, which the client never loads
    (``to_numpy`` and full reads raise): the same draws as with the components in memory (the
    previous path, which NumPy components still take), so every Monte Carlo term is bit-identical;
    H[q(z|x)] and, for the standard prior, E_x KL[q(z|x)||p] are the exactly rounded sums over
    the shards divided by N: identical for any chunking and number of workers, and within
    ``mean_bound`` of ``np.mean`` (the previous value)."""
    client = (cluster1 if workers == 1 else cluster2)[1]
    if prior == "standard":
        model, x, files = tiny_standard
    else:
        model, x = tiny
        files = tmp_path
        dist.encode_to_shards(model, x, out_dir=files)
    mu, lv = encode_all(model, x)
    Nx = len(x)
    M_q = 300
    want = dist.aggregated_stats(model, (mu, lv), np.random.default_rng(21), n_queries=M_q,
                                 client=client, chunk=257)
    single = dist.aggregated_stats(model, (mu, lv), np.random.default_rng(21), n_queries=M_q)
    ent = gaussian.entropy(lv)
    exact = {"conditional_entropy": ent}
    if prior == "standard":
        exact["avg_kl"] = gaussian.kl(mu, lv, np.zeros(2), np.zeros(2))
    for k, v in exact.items():
        assert want[k] == single[k] and want[k].value == float(np.mean(v)), k  # previous path
    sources = {"directory": (files,), "dask": ((da.from_array(mu, chunks=(400, 2)),
                                                da.from_array(lv, chunks=(700, 2))),)}
    _forbid_client_materialisation(monkeypatch)
    results = []
    for what, (src,) in sources.items():
        for chunk in (257, Nx, 100):
            got = dist.aggregated_stats(model, src, np.random.default_rng(21), n_queries=M_q,
                                        client=client, chunk=chunk)
            results.append(got)
            for k in want:
                if k in exact:
                    v = exact[k]
                    assert got[k].value == math.fsum(v.tolist()) / Nx, (what, chunk, k)
                    assert got[k].se == 0.0 and got[k].n == Nx
                    assert abs(got[k].value - want[k].value) <= mean_bound(v), (what, chunk, k)
                elif chunk == 257:
                    assert got[k] == want[k], (what, k)
                else:  # another chunking: ln q(z) moves by the sharding's rounding only
                    assert got[k].n == want[k].n and abs(got[k].value - want[k].value) < 1e-11, k
    for k in exact:
        assert len({r[k] for r in results}) == 1, k
    with pytest.raises(AssertionError, match="materialised"):
        dist._Components(files, None).to_numpy()


def test_queries_from_files_client_memory(cluster2, tmp_path):
    """The client's allocations (tracemalloc peak) in ``n_queries=M`` mode with components in
    files stay far below one (N, L) array: O(M L + shards), not O(N L)."""
    import tracemalloc
    rng = np.random.default_rng(23)
    Nb, Lb, Mb = 100_000, 16, 100
    np.save(tmp_path / "means.npy", rng.normal(size=(Nb, Lb)))
    np.save(tmp_path / "log_vars.npy", rng.uniform(-3.0, 0.0, size=(Nb, Lb)))
    model = VAE(6, Lb, (8,), "tanh", "gaussian", prior="standard", rng=rng)
    client = cluster2[1]
    kw = dict(n_queries=Mb, client=client, chunk=16384)
    dist.aggregated_stats(model, tmp_path, np.random.default_rng(1), **kw)  # warm-up (imports)
    tracemalloc.start()
    try:
        got = dist.aggregated_stats(model, tmp_path, np.random.default_rng(2), **kw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_array = Nb * Lb * 8  # 12.8 MB; the previous path allocated > 5 times this (to_numpy, KL)
    assert peak < one_array / 2, f"client peak {peak / 1e6:.2f} MB"
    assert got["conditional_entropy"].n == Nb and got["entropy_qz"].n == Mb


def test_queries_from_files_non_finite_names_the_shard(cluster2, tiny_standard, tmp_path):
    """A NaN in the log-variance file is found on the workers while the drawn rows and sums are
    collected, and reported with its shard."""
    model, x, files = tiny_standard
    lv = np.load(os.path.join(files, "log_vars.npy"))
    lv[700, 0] = np.nan
    np.save(tmp_path / "log_vars.npy", lv)
    np.save(tmp_path / "means.npy", np.load(os.path.join(files, "means.npy")))
    with pytest.raises(ValueError, match=r"shard 2 \(components 600\.\.899\).*log_vars.*nan"):
        dist.aggregated_stats(model, tmp_path, np.random.default_rng(0), n_queries=50,
                              client=cluster2[1], chunk=300)


def test_holes_equal_single_machine(cluster2, tiny):
    """Same generator: ``holes`` = ``hole_metrics`` (one shard: identical; 6 shards: reverse KL
    within the bound, hole masses identical unless a draw lies within the bound of ln tau)."""
    model, x = tiny
    want = hole_metrics(model, x, np.random.default_rng(7), 400)
    one = dist.holes(model, x, np.random.default_rng(7), 400, client=cluster2[1], chunk=len(x))
    assert one == want
    got = dist.holes(model, x, np.random.default_rng(7), 400, client=cluster2[1], chunk=257)
    mu, lv = encode_all(model, x)
    zp = model.prior.sample(model.params, 400, np.random.default_rng(7))
    eps_q = float(np.max(sharded_bound(error_scale(zp, mu, lv), 6)))
    assert abs(got["reverse_kl"].value - want["reverse_kl"].value) <= eps_q
    assert got["hole_mass"] == want["hole_mass"]


# =========================================================================== bad input

def test_bad_input_is_a_clear_error(cases, tmp_path):
    z, m, v, _, _ = cases[2]
    with pytest.raises(ValueError, match=r"z has L = 3 columns .* L = 2"):
        dist.log_qz(np.zeros((4, 3)), m, v)
    for chunk in (0, -5):
        with pytest.raises(ValueError, match="chunk"):
            dist.log_qz(z, m, v, chunk=chunk)
    with pytest.raises(ValueError, match="chunk"):
        dist.log_qz(z, m, v, chunk=2.5)
    with pytest.raises(ValueError, match="means"):
        dist.log_qz(z, np.zeros((0, 2)), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="log_vars"):
        dist.log_qz(z, m, v[:-1])
    with pytest.raises(ValueError, match="split_every"):
        dist.log_qz(z, m, v, split_every=1)
    with pytest.raises(ValueError, match="threads_per_task"):
        dist.log_qz(z, m, v, threads_per_task=0)
    with pytest.raises(ValueError, match="log_weights"):
        dist.log_mixture(z, m, v, np.zeros(5))
    with pytest.raises(ValueError, match="does not exist"):
        dist.log_qz(z, str(tmp_path / "nope.npy"), str(tmp_path / "nope2.npy"))
    np.savez(tmp_path / "wrong.npz", mu=m, lv=v)
    with pytest.raises(ValueError, match="'means'"):
        dist.log_qz(z, tmp_path / "wrong.npz")


def test_non_finite_component_in_a_file_names_the_shard(cluster2, cases, tmp_path):
    z, m, v, _, _ = cases[2]
    bad = m.copy()
    bad[12345, 1] = np.nan
    np.save(tmp_path / "means.npy", bad)
    np.save(tmp_path / "log_vars.npy", v)
    with pytest.raises(ValueError, match=r"shard 12 \(components 12000\.\.12999\).*means.*NaN"):
        dist.log_qz(z, tmp_path, client=cluster2[1], chunk=1000)


def test_unreachable_scheduler(cases):
    z, m, v, _, _ = cases[2]
    with pytest.raises(ConnectionError, match=r"tcp://127\.0\.0\.1:1"):
        dist.log_qz(z, m, v, scheduler="tcp://127.0.0.1:1", connect_timeout=2)
    with pytest.raises(ValueError, match="client or scheduler"):
        dist.log_qz(z, m, v, scheduler="tcp://127.0.0.1:1", client=object())


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "distributed", None)
    with pytest.raises(ImportError, match=r"pip install refvae\[scale\]"):
        dist._require_dask()


# =========================================================================== CLI

def _stats_args(argv):
    parser = argparse.ArgumentParser(prog="refvae")
    cli_stats.STATS.add_to(parser.add_subparsers(dest="command"))
    return parser.parse_args(["stats", *argv])


def test_cli_run(cluster2, tiny, tmp_path):
    """``refvae stats`` on a saved model and a data file: the JSON holds the single-machine
    estimators' values for the same seed, on this machine and (one shard) on the cluster; an
    unreachable scheduler raises and writes nothing."""
    model, x = tiny
    model.save(tmp_path / "model")
    np.save(tmp_path / "x.npy", x)
    want = aggregated_posterior_stats(VAE.load(tmp_path / "model"), x, np.random.default_rng(4), 2)
    common = ["--model", str(tmp_path / "model"), "--data", str(tmp_path / "x.npy"), "--samples", "2",
              "--seed", "4", "--quiet"]
    assert cli_stats.run(_stats_args(common + ["--out", str(tmp_path / "a.json"), "--holes", "50"])) == 0
    out = json.loads((tmp_path / "a.json").read_text())
    assert out["path"] == "single-machine" and out["N"] == len(x)
    for k, e in want.items():
        assert out["stats"][k] == {"value": e.value, "se": e.se, "n": e.n}, k
    assert set(out["holes"]["hole_mass"]) == {"0.1", "0.01"}
    address = cluster2[0].scheduler_address
    np.savez(tmp_path / "x.npz", x=x)
    assert cli_stats.run(_stats_args(common + ["--data", str(tmp_path / "x.npz"), "--scheduler", address,
                                               "--chunk", str(len(x)),
                                               "--out", str(tmp_path / "b.json")])) == 0
    assert json.loads((tmp_path / "b.json").read_text())["stats"] == out["stats"]
    with pytest.raises(ConnectionError, match=r"tcp://127\.0\.0\.1:1"):
        cli_stats.run(_stats_args(common + ["--scheduler", "tcp://127.0.0.1:1", "--connect-timeout", "2",
                                            "--out", str(tmp_path / "c.json")]))
    assert not (tmp_path / "c.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
