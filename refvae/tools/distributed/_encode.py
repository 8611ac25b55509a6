"""Encoding a data set into the components of q(z), in memory or chunk by chunk into files with a
manifest written last (:func:`encode_to_shards`, :mod:`refvae.tools.distributed`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os

import numpy as np

from ..._validation import as_float_array
from ._base import COMPONENT_FILES, COMPONENTS_FORMAT, COMPONENTS_MANIFEST, ENCODE_CHUNK, _check_chunk, _is_path


def _encoder_of(model, params):
    if hasattr(model, "encoder") and hasattr(model, "params"):
        return model.encoder, (model.params if params is None else params)
    raise ValueError(f"model must be a refvae VAE (with encoder and params), got {type(model).__name__}")


def encode_to_shards(model, x, chunk=ENCODE_CHUNK, out_dir=None, *, params=None):
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

    With the default ``chunk`` (1024) the rows are encoded in the same batches as
    :func:`refvae.estimators.encode_all`, so the arrays are bit-identical to its output.
    """
    encoder, p = _encoder_of(model, params)
    chunk = _check_chunk(chunk)
    if _is_path(x):
        xs = np.load(os.fspath(x), allow_pickle=False, mmap_mode="r")
        if xs.ndim != 2 or xs.shape[1] != model.x_dim:
            raise ValueError(f"x must have shape (N, {model.x_dim}), got {xs.shape} in {os.fspath(x)!r}")
    else:
        xs = as_float_array(x, "x", shape=(None, model.x_dim))
    N, L = xs.shape[0], model.latent_dim
    if N == 0:
        raise ValueError("x must not be empty: N = 0 rows")

    def blocks():
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
