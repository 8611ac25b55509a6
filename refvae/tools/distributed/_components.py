"""The components of q(z) (means and log-variances, (N, L)) in one of three forms -- NumPy, Dask,
files -- and as Dask arrays chunked over components (:mod:`refvae.tools.distributed`)."""

from __future__ import annotations

import math
import operator
import os

import numpy as np

from ..._validation import as_float_array
from ._base import (COMPONENT_FILES, DEFAULT_CHUNK, _check_chunk, _is_dask_array, _is_path,
                    _require_dask, shard_bounds)
from ._files import _check_components_manifest, _FileArray, _read_pair, _read_rows


def _is_zarr(p):
    """A zarr store: a path ending in .zarr, or a directory holding zarr.json (zarr v3)."""
    return p.lower().rstrip("/" + os.sep).endswith(".zarr") or os.path.isfile(os.path.join(p, "zarr.json"))


class _Components:
    """means and log_vars (N, L) in one of three forms: NumPy, Dask, or files."""

    def __init__(self, means, log_vars):
        if _is_path(means):
            if log_vars is not None and not _is_path(log_vars):
                raise ValueError("means is a path, so log_vars must be a path too (or None for an "
                                 ".npz file or a directory holding means.npy and log_vars.npy)")
            p = os.fspath(means)
            if log_vars is None:
                if os.path.isdir(p) and not _is_zarr(p):
                    self.means = _FileArray(os.path.join(p, COMPONENT_FILES[0]), None, "means")
                    self.log_vars = _FileArray(os.path.join(p, COMPONENT_FILES[1]), None, "log_vars")
                    _check_components_manifest(p, self.means, self.log_vars)
                elif p.lower().endswith((".npz", ".h5", ".hdf5")) or _is_zarr(p):
                    self.means = _FileArray(p, "means", "means")
                    self.log_vars = _FileArray(p, "log_vars", "log_vars")
                else:
                    raise ValueError(f"means: {p!r} is neither an .npz file with keys 'means' and "
                                     f"'log_vars', a zarr group (.zarr) or HDF5 file (.h5) with "
                                     f"those arrays, nor a directory with means.npy and "
                                     f"log_vars.npy; for a .npy file pass log_vars as well")
            else:
                self.means = _FileArray(p, None, "means")
                self.log_vars = _FileArray(log_vars, None, "log_vars")
            self.kind = "file"
        elif _is_dask_array(means) or _is_dask_array(log_vars):
            if not (_is_dask_array(means) and _is_dask_array(log_vars)):
                raise ValueError("means and log_vars must both be Dask arrays or neither")
            for a, nm in ((means, "means"), (log_vars, "log_vars")):
                if a.ndim != 2:
                    raise ValueError(f"{nm} must have 2 dimension(s), got shape {a.shape}")
                if any(isinstance(s, float) and math.isnan(s) for s in a.shape):
                    raise ValueError(f"{nm} is a Dask array of unknown shape {a.shape}; call "
                                     f"compute_chunk_sizes() first")
            self.means, self.log_vars = means, log_vars
            self.kind = "dask"
        else:
            if log_vars is None:
                raise ValueError("log_vars is required with array means")
            self.means = as_float_array(means, "means", ndim=2)
            self.log_vars = as_float_array(log_vars, "log_vars", ndim=2)
            self.kind = "numpy"
        shape = tuple(int(s) for s in self.means.shape)
        if shape[0] == 0:
            raise ValueError(f"means must not be empty: N = 0 components (shape {shape})")
        if shape[1] == 0:
            raise ValueError(f"means must have L >= 1 columns, got shape {shape}")
        if tuple(int(s) for s in self.log_vars.shape) != shape:
            raise ValueError(f"log_vars must have the shape of means {shape}, "
                             f"got {tuple(self.log_vars.shape)}")
        self.N, self.L = shape
        self._client, self._kept = None, {}

    def to_numpy(self):
        """(means, log_vars) as checked float64 arrays on this machine (memory O(N L))."""
        if self.kind == "numpy":
            return self.means, self.log_vars
        if self.kind == "file":
            return tuple(as_float_array(fa.full(), f"{fa.name} (in {fa.path!r})", shape=(self.N, self.L))
                         for fa in (self.means, self.log_vars))
        return (as_float_array(np.asarray(self.means.compute()), "means", shape=(self.N, self.L)),
                as_float_array(np.asarray(self.log_vars.compute()), "log_vars", shape=(self.N, self.L)))

    def to_dask(self, chunk):
        """(means, log_vars) as Dask arrays with chunks (chunk, L)."""
        _, da, _ = _require_dask()
        import dask
        bounds = shard_bounds(self.N, chunk)
        if self.kind == "file":
            for fa in (self.means, self.log_vars):
                fa.check_shardable()
        out = []
        for a in (self.means, self.log_vars):
            if self.kind == "numpy":
                out.append(da.from_array(a, chunks=(chunk, self.L), name=False))
            elif self.kind == "dask":
                out.append(a.astype(np.float64).rechunk((chunk, self.L)))
            else:
                blocks = [da.from_delayed(dask.delayed(_read_rows, pure=True)(*_spec_args(a, lo, hi)),
                                          shape=(hi - lo, self.L), dtype=np.float64)
                          for lo, hi in bounds]
                out.append(da.concatenate(blocks, axis=0) if len(blocks) > 1 else blocks[0])
        return out[0], out[1]

    def keep_on(self, client):
        """Keep the shards read from files on the workers of ``client`` for as long as this object
        lives (the passes of one run read each shard once, not once per pass). Other kinds: no-op."""
        self._client = client if self.kind == "file" else None
        self._kept = {}

    def shard_blocks(self, chunk):
        """``(bounds, mblocks, lblocks)``: the shards' row ranges [a, b) and one delayed block of
        the means and one of the log-variances per shard.

        For files, ONE task reads both blocks of a shard (:func:`_read_pair`; so the two never move
        between workers to meet) and checks the client's fingerprints; after :meth:`keep_on`, these
        tasks are computed once and their results kept on the workers (recomputed from the files
        if a worker is lost), so the next pass of the run reads nothing. Other kinds: the blocks of
        :meth:`to_dask`."""
        bounds = shard_bounds(self.N, chunk)
        if self.kind != "file":
            means_da, log_vars_da = self.to_dask(chunk)
            mblocks, lblocks = means_da.to_delayed().ravel(), log_vars_da.to_delayed().ravel()
            assert len(mblocks) == len(lblocks) == len(bounds)
            return bounds, list(mblocks), list(lblocks)
        import dask
        for fa in (self.means, self.log_vars):
            fa.check_shardable()
        client = getattr(self, "_client", None)
        pairs = self._kept.get(chunk) if client is not None else None
        if pairs is None:
            read = dask.delayed(_read_pair, pure=True)
            mspec, lspec = self.means.spec(), self.log_vars.spec()
            pairs = [read(mspec, lspec, lo, hi) for lo, hi in bounds]
            if client is not None:
                pairs = self._kept[chunk] = client.compute(pairs)
        pick = dask.delayed(operator.getitem, pure=True)
        return bounds, [pick(pr, 0) for pr in pairs], [pick(pr, 1) for pr in pairs]


def _spec_args(fa, lo, hi):
    """The arguments of :func:`_read_rows` for rows lo..hi-1 of the _FileArray ``fa``."""
    path, key, shape, name, dtype, size, fingerprint = fa.spec()
    return path, key, lo, hi, shape, name, dtype, size, fingerprint


def components_to_dask(means, log_vars=None, chunk=DEFAULT_CHUNK):
    """The components as Dask arrays chunked over components, ``chunks = (chunk, L)``.

    ``means``, ``log_vars``: NumPy arrays, Dask arrays, or paths (see the module docstring).
    Nothing is read but file headers.
    """
    return _Components(means, log_vars).to_dask(_check_chunk(chunk))
