"""Encoding a data set into the components of q(z), in memory or chunk by chunk into files with a
manifest written last (:func:`encode_to_shards`, :mod:`refvae.tools.distributed`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os

import numpy as np

from ..._validation import as_float_array, check_positive_int
from ._base import COMPONENT_FILES, COMPONENTS_FORMAT, COMPONENTS_MANIFEST, ENCODE_CHUNK, _check_chunk, _is_path
from ._files import _FileArray, _read_rows


def _encoder_of(model, params):
    if hasattr(model, "encoder") and hasattr(model, "params"):
        return model.encoder, (model.params if params is None else params)
    raise ValueError(f"model must be a refvae VAE (with encoder and params), got {type(model).__name__}")


ROWS_PER_TASK = 64  #: encoding batches per task on a cluster (65536 rows at chunk 1024)


def _encode_rows(parts, x, a, b, chunk):
    """Task: rows a..b-1 of x encoded in batches of ``chunk`` starting at a (a multiple of
    ``chunk``: the batches of the serial encoding). ``x``: an (b - a, D) array, or the spec of an
    x file (``_FileArray.spec()``: read here, its fingerprint checked). Returns (means, log_vars)."""
    encoder, p, x_dim = parts
    if isinstance(x, tuple):
        x = _read_rows(x[0], x[1], a, b, x[2], x[3], x[4], x[5], x[6])
    mus, lvs = [], []
    for n0 in range(0, b - a, chunk):
        xb = as_float_array(x[n0:n0 + chunk], "x", shape=(None, x_dim))
        mu, lv, _ = encoder.forward(p, xb)
        mus.append(mu)
        lvs.append(lv)
    return np.concatenate(mus), np.concatenate(lvs)


def _blocks_on(client, encoder, p, x_dim, xs, N, chunk, rows_per_task):
    """``(n0, means, log_vars)`` blocks in row order, encoded by tasks on the cluster of ``client``
    (at most a few tasks' results held at a time here)."""
    from ._base import _require_dask
    dask, _, _ = _require_dask()
    # the encoder travels in the graph (the scheduler keeps it: a lost worker's tasks are redone)
    parts = dask.delayed((encoder, p, x_dim), traverse=False)
    task = dask.delayed(_encode_rows, pure=True)
    step = chunk * rows_per_task
    spec = xs.spec() if isinstance(xs, _FileArray) else None
    graph = [task(parts, spec if spec is not None else xs[a:a + step], a, min(N, a + step), chunk)
             for a in range(0, N, step)]
    futs = client.compute(graph)
    try:
        for i, f in enumerate(futs):
            mu, lv = f.result()
            futs[i] = None  # release it on the cluster
            yield i * step, mu, lv
    finally:
        client.cancel([f for f in futs if f is not None])


def _write_in_chunks(arrs, blocks, chunk_rows):
    """Write the (n0, means, log_vars) ``blocks`` (in row order) into the two arrays ``arrs``
    (zarr arrays or HDF5 datasets) a whole storage chunk of ``chunk_rows`` rows at a time (no
    chunk is written twice: no read-modify-write of a compressed chunk)."""
    buf, rows, done = [[], []], 0, 0
    for _, mu, lv in blocks:
        buf[0].append(mu)
        buf[1].append(lv)
        rows += len(mu)
        while rows >= chunk_rows:
            for j in (0, 1):
                cat = np.concatenate(buf[j])
                arrs[j][done:done + chunk_rows] = cat[:chunk_rows]
                buf[j] = [cat[chunk_rows:]]
            done += chunk_rows
            rows -= chunk_rows
    if rows:
        for j in (0, 1):
            arrs[j][done:done + rows] = np.concatenate(buf[j])


def _write_container(out, blocks, N, L, chunk_rows):
    """Means and log-variances into a zarr group (``.zarr``, chunks (chunk_rows, L)) or an HDF5
    file (``.h5``/``.hdf5``, datasets chunked the same), written under a temporary name next to
    ``out`` and moved into place when complete (a previous one is removed just before)."""
    import shutil
    import tempfile
    parent = os.path.dirname(os.path.abspath(out)) or "."
    tmp = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(out) + ".refvae-tmp-")
    chunks = (min(N, chunk_rows), L)
    try:
        if out.lower().endswith(".zarr"):
            try:
                import zarr
            except ImportError:
                raise ImportError("writing zarr components needs zarr: pip install refvae[scale]") from None
            target = os.path.join(tmp, "store.zarr")
            g = zarr.open_group(target, mode="w")
            g.attrs.update({"format": COMPONENTS_FORMAT, "format_version": 1,
                            "written_by": "refvae.tools.distributed.encode_to_shards"})
            _write_in_chunks([g.create_array(k, shape=(N, L), chunks=chunks, dtype="<f8")
                              for k in ("means", "log_vars")], blocks, chunks[0])
        else:
            try:
                import h5py
            except ImportError:
                raise ImportError("writing HDF5 components needs h5py: pip install refvae[scale]") from None
            target = os.path.join(tmp, "store.h5")
            with h5py.File(target, "w") as f:
                f.attrs["format"] = COMPONENTS_FORMAT
                _write_in_chunks([f.create_dataset(k, shape=(N, L), dtype="<f8", chunks=chunks)
                                  for k in ("means", "log_vars")], blocks, chunks[0])
                f.flush()
        umask = os.umask(0)
        os.umask(umask)
        for r, ds, fs in os.walk(target):
            for name in ds:
                os.chmod(os.path.join(r, name), 0o777 & ~umask)
            for name in fs:
                os.chmod(os.path.join(r, name), 0o666 & ~umask)
        os.chmod(target, (0o777 if os.path.isdir(target) else 0o666) & ~umask)
        if os.path.isdir(out) and not os.path.islink(out):
            shutil.rmtree(out)
        elif os.path.lexists(out):
            os.unlink(out)
        os.replace(target, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, out


def encode_to_shards(model, x, chunk=ENCODE_CHUNK, out_dir=None, *, params=None, client=None,
                     rows_per_task=ROWS_PER_TASK):
    """Encode a data set chunk by chunk with the model's own encoder: the components of q(z).

    ``x``: (N, D) array, or a path to a ``.npy`` file (memory-mapped: rows are read ``chunk`` at a
    time). Returns ``(means, log_vars)``, each (N, L): arrays, or with ``out_dir`` the paths of
    ``out_dir/means.npy`` and ``out_dir/log_vars.npy``, written chunk by chunk (memory O(chunk))
    through :func:`refvae.io._atomic_write` (temporary files, fsynced, given the permissions of a
    normally created file, 0o666 less the umask, so workers running as another user can read them,
    and moved into place only when complete: a crash leaves no half-written file under either
    name). Then ``out_dir/components.json`` is written LAST (N, L, dtype, each file's size and
    SHA-256); an existing one is removed before either file is replaced, so a present manifest
    means a complete set, and readers of the directory (:class:`_Components`) check it. The
    paths, or ``out_dir`` itself, can be passed to :func:`log_qz` and :func:`aggregated_stats` as
    the components.

    An ``out_dir`` ending in ``.zarr`` is written as a zarr group with the arrays ``means`` and
    ``log_vars`` (float64, chunks of ``chunk * rows_per_task`` rows: one chunk per shard at the
    defaults), one ending in ``.h5``/``.hdf5`` as an HDF5 file with those datasets (chunked the
    same); each under a temporary name and moved into place when complete. Both return
    ``(out_dir, out_dir)`` and hold the same float64 values as the ``.npy`` files, bit for bit.

    ``client``: a ``distributed.Client``: the rows are encoded by tasks of ``rows_per_task``
    batches on its workers (the encoder and parameters travel in the task graph; an ``x`` path is
    read by the workers, so it must be visible to them at its absolute path, and is checked
    against the client's fingerprint). This machine receives the encoded blocks in row order and
    writes them as above (at most the cluster's in-flight blocks held here). Every batch is the
    same as in the serial encoding, so the result is bit-identical to it.

    With the default ``chunk`` (1024) the rows are encoded in the same batches as
    :func:`refvae.estimators.encode_all`, so the arrays are bit-identical to its output.
    """
    encoder, p = _encoder_of(model, params)
    chunk = _check_chunk(chunk)
    rows_per_task = check_positive_int(rows_per_task, "rows_per_task")
    if client is not None:
        from ._base import _check_cluster_args
        _check_cluster_args(client, None, 1.0)
    if _is_path(x):
        if client is not None:
            xs = _FileArray(x, None, "x")
            if xs.shape[1] != model.x_dim:
                raise ValueError(f"x must have shape (N, {model.x_dim}), got {xs.shape} in {xs.path!r}")
        else:
            xs = np.load(os.fspath(x), allow_pickle=False, mmap_mode="r")
            if xs.ndim != 2 or xs.shape[1] != model.x_dim:
                raise ValueError(f"x must have shape (N, {model.x_dim}), got {xs.shape} in {os.fspath(x)!r}")
    else:
        xs = as_float_array(x, "x", shape=(None, model.x_dim))
    N, L = xs.shape[0], model.latent_dim
    if N == 0:
        raise ValueError("x must not be empty: N = 0 rows")

    def blocks():
        if client is not None:
            yield from _blocks_on(client, encoder, p, model.x_dim, xs, N, chunk, rows_per_task)
            return
        for n0 in range(0, N, chunk):
            xb = as_float_array(xs[n0:n0 + chunk], "x", shape=(None, model.x_dim))
            mu, lv, _ = encoder.forward(p, xb)
            yield n0, mu, lv

    if out_dir is None:
        means = np.empty((N, L))
        log_vars = np.empty((N, L))
        for n0, mu, lv in blocks():
            means[n0:n0 + len(mu)] = mu
            log_vars[n0:n0 + len(mu)] = lv
        return means, log_vars
    out_dir = os.fspath(out_dir)
    if out_dir.lower().rstrip("/" + os.sep).endswith((".zarr", ".h5", ".hdf5")):
        return _write_container(out_dir.rstrip("/" + os.sep), blocks(), N, L, chunk * rows_per_task)
    os.makedirs(out_dir, exist_ok=True)
    finals = [os.path.join(out_dir, COMPONENT_FILES[0]), os.path.join(out_dir, COMPONENT_FILES[1])]
    manifest_path = os.path.join(out_dir, COMPONENTS_MANIFEST)
    from ...io import _atomic_write, _atomic_write_bytes
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f8")), "fortran_order": False,
              "shape": (N, L)}
    files = {}

    def write_both(fm, fl):
        hm, hl = _HashingWriter(fm), _HashingWriter(fl)
        for h in (hm, hl):
            np.lib.format.write_array_header_1_0(h, header)
        for _, mu, lv in blocks():
            hm.write(np.ascontiguousarray(mu, dtype="<f8").tobytes())
            hl.write(np.ascontiguousarray(lv, dtype="<f8").tobytes())
        files[COMPONENT_FILES[0]], files[COMPONENT_FILES[1]] = hm.summary(), hl.summary()
        # everything is encoded: the old set stops being described before either file is replaced
        with contextlib.suppress(FileNotFoundError):
            os.unlink(manifest_path)

    # log_vars.npy is replaced first (inner), then means.npy; each fsynced, umask permissions
    _atomic_write(finals[0], lambda fm: _atomic_write(finals[1], lambda fl: write_both(fm, fl)))
    manifest = {"format": COMPONENTS_FORMAT, "format_version": 1, "N": int(N), "L": int(L),
                "dtype": "float64", "files": files,
                "written_by": "refvae.tools.distributed.encode_to_shards"}
    _atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
    return finals[0], finals[1]


class _HashingWriter:
    """A binary file wrapper that counts and SHA-256-hashes what is written through it."""

    def __init__(self, fh):
        self.fh, self.sha, self.bytes = fh, hashlib.sha256(), 0

    def write(self, data):
        self.sha.update(data)
        self.bytes += len(data)
        return self.fh.write(data)

    def summary(self):
        return {"bytes": self.bytes, "sha256": self.sha.hexdigest()}
