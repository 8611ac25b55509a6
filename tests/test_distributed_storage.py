"""Storage the Dask world uses (:mod:`refvae.tools.distributed`, issue 17): on a REAL multi-process
cluster (``dask scheduler`` and ``dask worker`` processes started here, tests/cluster_processes.py):

- component paths are made absolute on the client and fingerprinted (size + SHA-256 of the header
  and of sampled rows); a worker in another directory gets the client's file (a relative path is
  no longer read relative to each worker's cwd), and a worker that sees ANOTHER file at that path
  (its own mount of the directory), or a file replaced after the client read it, fails with an
  error naming the worker and both fingerprints -- never a result from the wrong numbers;
- a compressed .npz is refused on the cluster path (every shard would decompress it from its start)
  and read once on this machine;
- zarr groups and HDF5 files give the same bits as .npy files, through the API and the CLI
  (``--write-components x.zarr``, ``--components x.zarr``);
- encoding on the workers (``encode_to_shards(client=...)``) is bit-identical to the serial one;
- a shard's means and log-variances are read by ONE task.

Bit-identity is asserted where refvae promises it (the same chunking, one machine); no tolerance
is involved anywhere in this file.
"""

import json
import os
import subprocess

import numpy as np
import pytest

distributed = pytest.importorskip(
    "distributed", reason="the cluster path needs dask[distributed]: pip install refvae[scale]")

import refvae  # noqa: E402
from refvae.estimators import encode_all  # noqa: E402
from refvae.kernels.mixture import mixture_log_prob  # noqa: E402
from refvae.tools import distributed as dist  # noqa: E402
from refvae.tools.cli import main  # noqa: E402
from refvae.tools.distributed._cluster import _log_mixture_on  # noqa: E402

from cluster_processes import ProcessCluster  # noqa: E402  (tests/ is on sys.path under pytest)

N, L, M, CHUNK = 3000, 4, 60, 700


def _components(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, L)), rng.uniform(-3.0, 0.0, size=(N, L))


def _write_dir(d, means, log_vars):
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "means.npy"), means)
    np.save(os.path.join(d, "log_vars.npy"), log_vars)


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory):
    """The workers' working directory: it holds ``comps/``, components of the same shape as the
    client's but other values (what a relative path would find on a worker started there)."""
    d = tmp_path_factory.mktemp("worker-cwd")
    _write_dir(d / "comps", *_components(2))
    return d


@pytest.fixture(scope="module")
def pcluster(tmp_path_factory, elsewhere):
    """A scheduler and two worker processes (1 thread each), the workers started in ``elsewhere``."""
    with ProcessCluster(tmp_path_factory.mktemp("pcluster")) as pc:
        pc.add_worker(cwd=str(elsewhere))
        pc.add_worker(cwd=str(elsewhere))
        yield pc, pc.client()


@pytest.fixture(scope="module")
def data():
    m, v = _components(1)
    z = np.random.default_rng(3).normal(size=(M, L))
    return z, m, v


@pytest.fixture
def in_client_dir(tmp_path, monkeypatch, data):
    """This process's cwd holds ``comps/`` with the client's components."""
    _, m, v = data
    _write_dir(tmp_path / "comps", m, v)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# =========================================================================== paths and fingerprints

def test_relative_path_reads_the_clients_file_on_a_worker_elsewhere(pcluster, data, in_client_dir):
    """``log_qz(z, "comps")`` with workers whose cwd holds another ``comps/``: the client's files
    are read (the path is made absolute before it is sent): bit-identical to NumPy components."""
    _, client = pcluster
    z, m, v = data
    want = dist.log_qz(z, m, v, client=client, chunk=CHUNK)
    assert np.array_equal(dist.log_qz(z, "comps", client=client, chunk=CHUNK), want)
    assert np.array_equal(dist.log_qz(z, "comps/means.npy", "comps/log_vars.npy", client=client,
                                      chunk=CHUNK), want)
    # the other directory's components give other numbers: reading them would be a wrong answer
    other = dist.log_qz(z, *_components(2), client=client, chunk=CHUNK)
    assert np.max(np.abs(other - want)) > 1e-3


def test_file_replaced_after_the_client_read_it_names_the_worker(pcluster, data, in_client_dir):
    """A component file replaced (same shape, dtype and size) after the client fingerprinted it:
    a ValueError naming the worker's address and both fingerprints, not a result."""
    _, client = pcluster
    z, m, v = data
    comps = dist._Components("comps", None)
    np.save(in_client_dir / "comps" / "means.npy", _components(2)[0])
    with pytest.raises(ValueError) as info:
        _log_mixture_on(client, z, comps, None, CHUNK, 8, 1, False)
    msg = str(info.value)
    assert "is not the file the client read" in msg, msg
    assert "on worker tcp://127.0.0.1:" in msg, msg
    assert msg.count("sha256") == 2 and comps.means.fingerprint["sha256"][:16] in msg, msg


def _unshare_works(tmp_path):
    a, b = tmp_path / "ua", tmp_path / "ub"
    a.mkdir()
    b.mkdir()
    (b / "f").write_text("b")
    try:
        r = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {b} {a} && cat {a}/f"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and r.stdout == "b"


@pytest.fixture(scope="module")
def stats_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("stats-model")
    rng = np.random.default_rng(20261202)
    model = refvae.VAE(6, L, (8,), "tanh", "gaussian", rng=rng)
    model.save(d / "model")
    x = rng.normal(size=(N, 6))
    np.save(d / "x.npy", x)
    return d, model, x


def test_worker_seeing_another_file_at_the_same_path_fails(tmp_path, data, stats_model, capsys):
    """A worker whose node has ANOTHER file at the components' absolute path (here: its own mount
    namespace with another directory bound over it, as on a node without the shared file system):
    ``refvae stats --components DIR --queries M --scheduler`` exits 2 with one line naming the
    worker; the Python API raises the same ValueError. Before the fingerprints: exit 0 with wrong
    numbers."""
    if not _unshare_works(tmp_path):
        pytest.skip("needs 'unshare -m' and bind mounts (root in a Linux mount namespace); the "
                    "same check is exercised by test_file_replaced_after_the_client_read_it_names_the_worker")
    d, model, x = stats_model
    mine, theirs = tmp_path / "comps", tmp_path / "theirs"
    mu, lv = encode_all(model, x)
    _write_dir(mine, mu, lv)
    _write_dir(theirs, *_components(5))
    prefix = ["unshare", "-m", "sh", "-c", f"mount --bind {theirs} {mine} && exec \"$0\" \"$@\""]
    with ProcessCluster(tmp_path / "pc") as pc:
        pc.add_worker(prefix=prefix)
        client = pc.client()
        seen = list(client.run(lambda: float(np.load(str(mine / "means.npy"))[0, 0])).values())
        assert seen == [float(_components(5)[0][0, 0])], "the worker does not see its own file"
        rc = main(["stats", "--model", str(d / "model"), "--components", str(mine), "--queries", "50",
                   "--scheduler", pc.address, "--quiet", "--out", str(tmp_path / "s.json")])
        out, err = capsys.readouterr()
        assert rc == 2, (rc, out, err)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert "is not the file the client read" in lines[0] and "on worker tcp://" in lines[0], err
        assert not (tmp_path / "s.json").exists()
        with pytest.raises(ValueError, match="is not the file the client read"):
            dist.aggregated_stats(model, str(mine), np.random.default_rng(0), n_queries=50,
                                  client=client, chunk=CHUNK)


# =========================================================================== formats

def test_compressed_npz_refused_on_the_cluster_read_once_here(pcluster, data, tmp_path):
    """A compressed .npz: on the cluster a ValueError naming the file and the way out (np.savez
    or .npy files); on this machine it is read once, bit-identical to the kernel."""
    _, client = pcluster
    z, m, v = data
    np.savez_compressed(tmp_path / "cc.npz", means=m, log_vars=v)
    with pytest.raises(ValueError, match=r"cc\.npz'\['means'\] is compressed.*np\.savez"):
        dist.log_qz(z, tmp_path / "cc.npz", client=client, chunk=CHUNK)
    assert np.array_equal(dist.log_qz(z, tmp_path / "cc.npz"), mixture_log_prob(z, m, v))


def test_stored_npz_member_is_memory_mapped(data, tmp_path):
    """An uncompressed .npz member is read like a .npy file (a memory map at the member's offset):
    the rows asked for, exactly, also for a Fortran-ordered member."""
    _, m, v = data
    np.savez(tmp_path / "c.npz", means=m, log_vars=np.asfortranarray(v))
    c = dist._Components(tmp_path / "c.npz", None)
    assert np.array_equal(c.means.rows(17, 1234), m[17:1234])
    assert np.array_equal(c.log_vars.rows(2999, 3000), v[2999:3000])
    assert np.array_equal(c.log_vars.rows(0, N), v)


def test_zarr_and_hdf5_give_the_same_bits_as_npy(pcluster, data, tmp_path):
    """The same components as .npy files, a zarr group (chunks that do not align with the shards)
    and an HDF5 file: bit-identical ln q(z) on the cluster, and on this machine."""
    zarr = pytest.importorskip("zarr", reason="zarr components need the 'scale' extra")
    h5py = pytest.importorskip("h5py", reason="HDF5 components need the 'scale' extra")
    _, client = pcluster
    z, m, v = data
    _write_dir(tmp_path / "npy", m, v)
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="w")
    for k, a in (("means", m), ("log_vars", v)):
        g.create_array(k, shape=a.shape, chunks=(512, L), dtype="<f8")[:] = a
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["means"], f["log_vars"] = m, v
    want = dist.log_qz(z, tmp_path / "npy", client=client, chunk=CHUNK)
    for src in ("c.zarr", "c.h5"):
        assert np.array_equal(dist.log_qz(z, tmp_path / src, client=client, chunk=CHUNK), want), src
        assert np.array_equal(dist.log_qz(z, tmp_path / src), mixture_log_prob(z, m, v)), src


def test_cli_write_and_read_zarr_components(pcluster, stats_model, tmp_path):
    """``--write-components x.zarr`` then ``--components x.zarr --queries --scheduler``: the same
    JSON numbers as through a directory of .npy files (and the zarr arrays are encode_all's)."""
    pytest.importorskip("zarr", reason="zarr components need the 'scale' extra")
    pc, _ = pcluster
    d, model, x = stats_model
    base = ["stats", "--model", str(d / "model"), "--quiet"]
    for out in ("c.zarr", "cdir"):
        assert main(base + ["--data", str(d / "x.npy"), "--write-components", str(tmp_path / out)]) == 0
    import zarr
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    mu, lv = encode_all(model, x)
    assert np.array_equal(g["means"][:], mu) and np.array_equal(g["log_vars"][:], lv)
    res = {}
    for src in ("c.zarr", "cdir"):
        assert main(base + ["--components", str(tmp_path / src), "--queries", "40", "--scheduler",
                            pc.address, "--chunk", str(CHUNK), "--out", str(tmp_path / f"{src}.json")]) == 0
        res[src] = json.loads((tmp_path / f"{src}.json").read_text())
    keys = [k for k in res["cdir"] if isinstance(res["cdir"][k], dict) and "value" in res["cdir"][k]]
    stats_a = {k: v for k, v in res["c.zarr"].items() if k not in ("components", "seconds", "provenance")}
    stats_b = {k: v for k, v in res["cdir"].items() if k not in ("components", "seconds", "provenance")}
    assert stats_a == stats_b, keys


# =========================================================================== encoding on workers

@pytest.mark.parametrize("source", ["array", "npy path"])
def test_encoding_on_workers_is_bit_identical(pcluster, stats_model, tmp_path, source):
    """encode_to_shards(client=...) with tasks of 2 batches (N = 3000: a short last task): the
    same bits as the serial encoding, in memory, as .npy files with their manifest, zarr and HDF5."""
    _, client = pcluster
    d, model, x = stats_model
    xx = x if source == "array" else str(d / "x.npy")
    mu, lv = encode_all(model, x)
    got = dist.encode_to_shards(model, xx, client=client, rows_per_task=2)
    assert np.array_equal(got[0], mu) and np.array_equal(got[1], lv)
    serial = dist.encode_to_shards(model, x, out_dir=tmp_path / "serial")
    dist.encode_to_shards(model, xx, out_dir=tmp_path / "workers", client=client, rows_per_task=2)
    for f in ("means.npy", "log_vars.npy", "components.json"):
        assert (tmp_path / "serial" / f).read_bytes() == (tmp_path / "workers" / f).read_bytes(), f
    assert serial[0] == str(tmp_path / "serial" / "means.npy")
    for out in ("w.zarr", "w.h5"):
        pytest.importorskip("zarr" if out.endswith("zarr") else "h5py")
        dist.encode_to_shards(model, xx, out_dir=tmp_path / out, client=client, rows_per_task=2)
        a, b = dist._Components(tmp_path / out, None).to_numpy()
        assert np.array_equal(a, mu) and np.array_equal(b, lv), out


# =========================================================================== one read per shard

def test_a_shards_means_and_log_vars_are_read_by_one_task(data, tmp_path):
    """The shard blocks of file components: one reading task per shard (``_read_pair``), on which
    both the shard's means block and its log-variances block depend (also after Dask optimises the
    graph: the read is not copied into each block)."""
    import dask
    _, m, v = data
    _write_dir(tmp_path / "c", m, v)
    bounds, mblocks, lblocks = dist._Components(tmp_path / "c", None).shard_blocks(CHUNK)
    assert len(bounds) == len(mblocks) == len(lblocks) == len(dist.shard_bounds(N, CHUNK))
    opt = dask.optimize(*mblocks, *lblocks)  # what client.compute does to the graph
    graph = {}
    for b in opt:
        graph.update(dict(b.__dask_graph__()))
    reads = {k for k, t in graph.items() if "_read_pair" in repr(t)}
    assert len(reads) == len(bounds), reads
    assert not [k for k, t in graph.items() if "_read_rows" in repr(t)]
    for i, (bm, bl) in enumerate(zip(opt[:len(bounds)], opt[len(bounds):])):
        deps_m = set(graph[bm.key].dependencies) & reads
        deps_l = set(graph[bl.key].dependencies) & reads
        assert len(deps_m) == 1 and deps_m == deps_l, (i, deps_m, deps_l)


def test_components_are_read_once_per_run(pcluster, stats_model, tmp_path):
    """aggregated_stats(n_queries=M) with file components makes two passes (drawn rows and exact
    sums; ln q(z)): each shard's files are read ONCE on the workers (they are kept there for the
    run), not once per pass; a plain log_qz call keeps nothing."""
    _, client = pcluster
    d, model, x = stats_model
    dist.encode_to_shards(model, x, out_dir=tmp_path / "c")

    def reads(reset=False):
        from refvae.tools.distributed import _files
        n = _files._READS["calls"]
        if reset:
            _files._READS.update(calls=0, bytes=0)
        return n
    client.run(reads, True)
    dist.aggregated_stats(model, str(tmp_path / "c"), np.random.default_rng(0), n_queries=40,
                          client=client, chunk=CHUNK)
    n_shards = len(dist.shard_bounds(N, CHUNK))
    assert sum(client.run(reads, True).values()) == 2 * n_shards  # two files, once each
    dist.log_qz(np.zeros((3, L)), str(tmp_path / "c"), client=client, chunk=CHUNK)
    assert sum(client.run(reads, True).values()) == 2 * n_shards
    # nothing kept after the calls
    assert not any(client.run(lambda dask_worker: [k for k in dask_worker.data.keys()
                                                   if "read_pair" in str(k)]).values())


# =========================================================================== resume

def test_resumed_run_gives_the_same_bits(pcluster, data, tmp_path):
    """Inside ``_resume_from(DIR)`` every shard's partial is saved; a run that finds some of them
    (a client that died after those shards) loads them and computes the rest: the same bits as a
    run without resuming. The saved partials are really used (a planted different one changes the
    result) and a malformed one is a ValueError naming it."""
    from refvae.tools.distributed._shards import RESUME_PREFIX, _resume_from
    _, client = pcluster
    z, m, v = data
    _write_dir(tmp_path / "c", m, v)
    want = dist.log_qz(z, tmp_path / "c", client=client, chunk=CHUNK)
    d = tmp_path / "resume"
    with _resume_from(d):
        first = dist.log_qz(z, tmp_path / "c", client=client, chunk=CHUNK)
    files = sorted(p for p in os.listdir(d) if p.startswith(RESUME_PREFIX))
    n = len(dist.shard_bounds(N, CHUNK))
    assert np.array_equal(first, want) and len(files) == n
    for f in files[::2]:  # the client "died" before these shards finished
        os.unlink(d / f)
    with _resume_from(d):
        again = dist.log_qz(z, tmp_path / "c", client=client, chunk=CHUNK)
    assert np.array_equal(again, want)
    assert sorted(p for p in os.listdir(d) if p.startswith(RESUME_PREFIX)) == files
    # other queries: other files (no stale partial is ever used for them)
    with _resume_from(d):
        other = dist.log_qz(z[:7], tmp_path / "c", client=client, chunk=CHUNK)
    assert other.shape == (7,)
    assert len([p for p in os.listdir(d) if p.startswith(RESUME_PREFIX)]) == 2 * n
    # the saved partials are what a resumed run uses
    arr = np.load(d / files[1])
    np.save(d / files[1], np.stack([arr[0] + 1.0, arr[1]]))
    with _resume_from(d):
        planted = dist.log_qz(z, tmp_path / "c", client=client, chunk=CHUNK)
    assert not np.array_equal(planted, want)
    np.save(d / files[1], arr[:, :5])
    with pytest.raises(ValueError, match="resume file .* holds an array of shape"):
        with _resume_from(d):
            dist.log_qz(z, tmp_path / "c", client=client, chunk=CHUNK)


def test_cli_resume_after_the_client_died(pcluster, stats_model, tmp_path):
    """``refvae stats --resume DIR``: the client is killed (SIGKILL) once some shards' partials
    are saved; the same command run again finishes, and its statistics are the same bits as a run
    that was never interrupted. ``--resume`` without ``--scheduler``: exit 2."""
    import signal
    import sys
    import time
    from refvae.tools.distributed._shards import RESUME_PREFIX
    pc, _ = pcluster
    d, model, x = stats_model
    base = ["stats", "--model", str(d / "model"), "--quiet"]
    assert main(base + ["--data", str(d / "x.npy"), "--write-components", str(tmp_path / "c")]) == 0
    run = base + ["--components", str(tmp_path / "c"), "--queries", "100000", "--holes", "100000",
                  "--scheduler", pc.address, "--chunk", "50"]
    assert main(run + ["--out", str(tmp_path / "plain.json")]) == 0
    rdir = tmp_path / "resume"
    cmd = [sys.executable, "-m", "refvae.tools.cli"] + run + ["--resume", str(rdir), "--out",
                                                              str(tmp_path / "r.json")]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            if rdir.exists() and len([f for f in os.listdir(rdir) if f.startswith(RESUME_PREFIX)]) >= 5:
                break
            time.sleep(0.02)
        killed = p.poll() is None
        if killed:
            p.send_signal(signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    saved = len([f for f in os.listdir(rdir) if f.startswith(RESUME_PREFIX)])
    n = len(dist.shard_bounds(N, 50))
    assert killed and 5 <= saved < 2 * n and not (tmp_path / "r.json").exists(), (killed, saved)
    assert main(run + ["--resume", str(rdir), "--out", str(tmp_path / "r.json")]) == 0
    plain = json.loads((tmp_path / "plain.json").read_text())
    resumed = json.loads((tmp_path / "r.json").read_text())
    assert resumed["stats"] == plain["stats"] and resumed["holes"] == plain["holes"]
    assert main(base + ["--components", str(tmp_path / "c"), "--resume", str(rdir)]) == 2


def test_cli_hdf5_components(stats_model, tmp_path):
    """``--write-components x.h5`` (twice: the second replaces the first) and ``--components x.h5``
    on this machine: the same JSON statistics as from the directory of .npy files."""
    pytest.importorskip("h5py", reason="HDF5 components need the 'scale' extra")
    d, _, _ = stats_model
    base = ["stats", "--model", str(d / "model"), "--quiet"]
    for out in ("c.h5", "c.h5", "cdir"):
        assert main(base + ["--data", str(d / "x.npy"), "--write-components", str(tmp_path / out)]) == 0
    res = {}
    for src in ("c.h5", "cdir"):
        assert main(base + ["--components", str(tmp_path / src), "--queries", "300",
                            "--out", str(tmp_path / f"{src}.json")]) == 0
        res[src] = json.loads((tmp_path / f"{src}.json").read_text())
    assert res["c.h5"]["stats"] == res["cdir"]["stats"]


def test_cli_write_components_on_the_workers(pcluster, stats_model, tmp_path):
    """``--write-components DIR --scheduler ADDRESS`` encodes on the workers: the same files, byte
    for byte (manifest included), as without ``--scheduler``."""
    pc, _ = pcluster
    d, _, _ = stats_model
    base = ["stats", "--model", str(d / "model"), "--data", str(d / "x.npy"), "--quiet"]
    assert main(base + ["--write-components", str(tmp_path / "here")]) == 0
    assert main(base + ["--write-components", str(tmp_path / "there"), "--scheduler", pc.address]) == 0
    for f in ("means.npy", "log_vars.npy", "components.json"):
        assert (tmp_path / "here" / f).read_bytes() == (tmp_path / "there" / f).read_bytes(), f
