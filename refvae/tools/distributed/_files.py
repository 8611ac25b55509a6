"""Arrays on disk: component files (a ``.npy`` file, an ``.npz`` member, a directory of
``means.npy`` and ``log_vars.npy`` with its manifest), read a few rows at a time, each read checking
that the file did not change since its header was read (:mod:`refvae.tools.distributed`)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import zipfile

import numpy as np

from ..._validation import as_float_array
from ._base import COMPONENT_FILES, COMPONENTS_FORMAT, COMPONENTS_MANIFEST


def _npz_member_header(fh):
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fh)
    raise ValueError(f"unsupported .npy format version {version}")


def _npz_member(zf, path, key):
    name = key + ".npy"
    if name not in zf.namelist():
        have = sorted(n[:-4] for n in zf.namelist() if n.endswith(".npy"))
        raise ValueError(f"{path}: no array {key!r} in the archive (it holds {have}); an .npz of "
                         f"components needs the keys 'means' and 'log_vars'")
    return name


_SAMPLE_BLOCKS = 16         #: blocks of rows hashed into a file's fingerprint (first and last included)
_SAMPLE_BYTES = 1 << 16     #: bytes per sampled block (at least one row)
_VERIFIED = {}              #: per process: (path, key, state on disk) -> fingerprint found there
_VERIFIED_MAX = 256
_READS = {"calls": 0, "bytes": 0}  #: reads of rows in this process (benchmarks count them)
_COMPRESSED_HINT = ("every shard would decompress the archive from its start (cost growing as "
                    "N^2); write it uncompressed (np.savez, not np.savez_compressed), as .npy files "
                    "or a directory (refvae stats --write-components DIR), or as zarr")


def _kind_of(path, key):
    """'npy', 'npz', 'zarr' or 'hdf5' from the path (and key: the array inside a container)."""
    if key is None:
        return "npy"
    low = path.lower().rstrip("/" + os.sep)
    if low.endswith(".zarr") or os.path.isdir(path):
        return "zarr"
    if low.endswith((".h5", ".hdf5")):
        return "hdf5"
    return "npz"


def _npz_stored_offset(path, zinfo):
    """Byte offset in ``path`` of the array data of an uncompressed (stored) .npz member, and its
    .npy header: ``(offset, shape, fortran, dtype, header bytes)`` (a stored member's bytes are
    the file's bytes there, so it can be memory-mapped like a .npy file)."""
    with open(path, "rb") as fh:
        fh.seek(zinfo.header_offset)
        local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"corrupt ZIP local header for {zinfo.filename!r}")
        nlen, elen = struct.unpack("<HH", local[26:30])
        start = zinfo.header_offset + 30 + nlen + elen
        fh.seek(start)
        shape, fortran, dtype = _npz_member_header(fh)
        off = fh.tell()
        fh.seek(start)
        return off, shape, fortran, dtype, fh.read(off - start)


class _Opened:
    """An open 2-D array of one of the four kinds: ``shape``, ``dtype``, ``header`` (bytes that
    describe it on disk: the .npy header, the zarr metadata), ``compressed`` (a deflated .npz
    member: rows cannot be read without decompressing everything before them), ``get(a, b)`` (rows
    a..b-1 in the file's dtype), ``close()``."""

    def __init__(self, path, key, kind):
        self.kind, self.compressed, self.header, self._close = kind, False, b"", None
        if kind == "npy":
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
            if not isinstance(arr, np.ndarray):
                raise ValueError("not a .npy file")
            self._arr = arr
            with open(path, "rb") as fh:
                self.header = fh.read(int(getattr(arr, "offset", 0)))
        elif kind == "npz":
            zf = zipfile.ZipFile(path)
            try:
                zinfo = zf.getinfo(_npz_member(zf, path, key))
                if zinfo.compress_type == zipfile.ZIP_STORED:
                    off, shape, fortran, dtype, self.header = _npz_stored_offset(path, zinfo)
                    self._arr = np.memmap(path, dtype=dtype, mode="r", offset=off, shape=tuple(shape),
                                          order="F" if fortran else "C") if int(np.prod(shape)) else \
                        np.empty(tuple(shape), dtype=dtype)
                else:
                    self.compressed = True
                    self._zf, self._name = zf, zinfo.filename
                    with zf.open(zinfo.filename) as fh:
                        shape, fortran, dtype = _npz_member_header(fh)
                    self._arr = None
                    self._shape, self._dtype, self._fortran = tuple(shape), dtype, fortran
                    self._close = zf.close
                    zf = None
            finally:
                if zf is not None:
                    zf.close()
        elif kind == "zarr":
            try:
                import zarr
            except ImportError:
                raise ValueError("reading zarr components needs the zarr package ('scale' extra: "
                                 "pip install refvae[scale])") from None
            try:
                group = zarr.open_group(path, mode="r")
                if key not in group:
                    have = sorted(group.array_keys())
                    raise ValueError(f"no array {key!r} in the zarr group (it holds {have}); zarr "
                                     f"components need the arrays 'means' and 'log_vars'")
                self._arr = group[key]
            except (OSError, KeyError, TypeError) as exc:
                raise ValueError(f"not a zarr group ({exc})") from None
            meta = os.path.join(path, key, "zarr.json")
            if os.path.isfile(meta):
                with open(meta, "rb") as fh:
                    self.header = fh.read()
        else:
            try:
                import h5py
            except ImportError:
                raise ValueError("reading HDF5 components needs the h5py package ('scale' extra: "
                                 "pip install refvae[scale])") from None
            f = h5py.File(path, "r")
            if key not in f or not isinstance(f[key], h5py.Dataset):
                have = sorted(k for k in f if isinstance(f[k], h5py.Dataset))
                f.close()
                raise ValueError(f"no dataset {key!r} in the HDF5 file (it holds {have}); HDF5 "
                                 f"components need the datasets 'means' and 'log_vars'")
            self._arr, self._close = f[key], f.close
        if self._arr is not None:
            self._shape, self._dtype = tuple(int(s) for s in self._arr.shape), np.dtype(self._arr.dtype)

    @property
    def shape(self):
        return tuple(int(s) for s in self._shape)

    @property
    def dtype(self):
        return self._dtype

    def get(self, a, b):
        if self.compressed:  # the whole member, once (the single-machine path reads it whole)
            with self._zf.open(self._name) as fh:
                _npz_member_header(fh)
                data = np.frombuffer(fh.read(), dtype=self._dtype)
            if data.size != int(np.prod(self._shape)):
                raise ValueError("the archive member is truncated")
            return data.reshape(self._shape, order="F" if self._fortran else "C")[a:b]
        return np.asarray(self._arr[a:b])

    def fingerprint(self, size):
        """``{"bytes": size on disk or None, "sha256": ...}``: SHA-256 of the kind, shape, dtype,
        the header bytes and ``_SAMPLE_BLOCKS`` evenly spaced blocks of rows (first and last
        included; at most ``_SAMPLE_BLOCKS * _SAMPLE_BYTES`` bytes read)."""
        h = hashlib.sha256()
        h.update(repr((self.kind, self.shape, self.dtype.str)).encode())
        h.update(self.header)
        N = self.shape[0]
        if N and not self.compressed:
            per = max(1, _SAMPLE_BYTES // max(1, self.shape[1] * self.dtype.itemsize))
            starts = sorted({int(round(t)) for t in np.linspace(0, max(0, N - per), _SAMPLE_BLOCKS)})
            for a in starts:
                h.update(np.ascontiguousarray(self.get(a, min(N, a + per))).tobytes())
        elif self.compressed:  # the archive's own CRC of the member, no decompression
            h.update(repr(self._zf.getinfo(self._name).CRC).encode())
        return {"bytes": size, "sha256": h.hexdigest()}

    def close(self):
        self._arr = None
        if self._close is not None:
            self._close()


def _size_on_disk(path):
    """Bytes of a file, or of all files under a directory (a zarr store)."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def _disk_state(path):
    """What changes when a file (or any file of a zarr store) is replaced or rewritten: device,
    inode, size and modification time of each; a cache key for fingerprints."""
    def one(p):
        st = os.stat(p)
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if os.path.isdir(path):
        return tuple(sorted((os.path.relpath(os.path.join(r, f), path), one(os.path.join(r, f)))
                            for r, _, fs in os.walk(path) for f in fs))
    return one(path)


def _where_am_i():
    """'worker tcp://...' on a Dask worker, else 'this machine (the client)' (Dask is not
    imported for this: a worker has it imported already)."""
    if "distributed" not in sys.modules:
        return "this machine (the client)"
    try:
        from distributed import get_worker
        return f"worker {get_worker().address}"
    except (ImportError, ValueError):
        return "this machine (the client)"


class _FileArray:
    """A 2-D array in a ``.npy`` file, an ``.npz`` member, a zarr group's array or an HDF5 dataset
    (``key``: the array's name in a container); reads only the rows asked for.

    The path is made absolute here (on the client), and the file's fingerprint (size and SHA-256
    of its header and sampled rows, :meth:`_Opened.fingerprint`) computed: every read of rows,
    wherever it runs, checks that it reads the same file."""

    def __init__(self, path, key, name):
        self.path = os.path.abspath(os.fspath(path))
        self.key = key
        self.name = name
        self.kind = _kind_of(self.path, key)
        if not (os.path.isdir(self.path) if self.kind == "zarr" else os.path.isfile(self.path)):
            raise ValueError(f"{name}: {'zarr store' if self.kind == 'zarr' else 'file'} "
                             f"{self.path!r} does not exist")
        try:
            opened = _Opened(self.path, key, self.kind)
            try:
                shape, dtype = opened.shape, opened.dtype
                self.compressed = opened.compressed
                self.size = _size_on_disk(self.path)  # re-checked whenever rows are read
                self.fingerprint = opened.fingerprint(self.size) if len(shape) == 2 else None
            finally:
                opened.close()
        except ValueError as exc:
            raise ValueError(f"{name}: cannot read {self.path!r} ({exc})") from None
        except (OSError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{name}: cannot read {self.path!r} ({exc})") from None
        if dtype.hasobject or not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
            raise ValueError(f"{name}: {self.path!r}{'' if key is None else f'[{key!r}]'} has dtype "
                             f"{dtype}; expected real numbers")
        if len(shape) != 2:
            raise ValueError(f"{name} must have 2 dimension(s), got shape {tuple(shape)} in {self.path!r}")
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype

    def __repr__(self):
        return f"_FileArray({self.path!r}, key={self.key!r}, shape={self.shape})"

    def spec(self):
        """What a shard task needs to read and check this file: ``(path, key, shape, name,
        dtype, size, fingerprint)`` (picklable)."""
        return (self.path, self.key, self.shape, self.name, self.dtype.str, self.size, self.fingerprint)

    def check_shardable(self):
        """A compressed ``.npz`` member cannot be read a shard at a time: ``ValueError``."""
        if self.compressed:
            raise ValueError(f"{self.name}: {self.path!r}[{self.key!r}] is compressed: "
                             + _COMPRESSED_HINT)

    def rows(self, a, b):
        """Rows a..b-1 as a float64 C-contiguous array (memory O((b - a) L)); a file whose shape,
        dtype, size or fingerprint changed since the header was read is a ``ValueError``."""
        return _read_rows(self.path, self.key, a, b, self.shape, self.name, self.dtype.str, self.size,
                          None if self.compressed else self.fingerprint)

    def full(self):
        return self.rows(0, self.shape[0])


def _short(fp):
    return "missing" if not fp else f"{fp.get('bytes')} bytes, sha256 {str(fp.get('sha256'))[:16]}"


def _read_rows(path, key, a, b, shape, name, dtype=None, size=None, fingerprint=None):
    """Rows a..b-1 of the array in ``path`` (``key`` None: a .npy file; else the member of an .npz
    archive, the array of a zarr group (``.zarr``) or the dataset of an HDF5 file (``.h5``)).

    ``shape`` (and, when given, ``dtype``, a dtype string, ``size``, the bytes on disk, and
    ``fingerprint``, :meth:`_FileArray` 's) are what the client found when it first opened the
    file. A file that differs here -- replaced since (fewer rows, another dtype, another size), or
    another file at the same path on this worker -- is a ``ValueError`` naming the worker and what
    differs ("<name>: component file <path> on worker <address> ..."), never wrong rows. The
    fingerprint is recomputed only when the file's inode, size or modification time changed since
    the last read in this process.
    """
    me = _where_am_i()
    where = f"{name}: component file {path!r}" + ("" if key is None else f"[{key!r}]")
    shape = tuple(int(s) for s in shape)
    kind = _kind_of(path, key)

    def check_size():
        if size is None:
            return
        try:
            found = _size_on_disk(path)
        except OSError as exc:
            raise ValueError(f"{where} changed: it cannot be read any more ({exc}; on {me})") from None
        if found != size:
            raise ValueError(f"{where} changed: expected {size} bytes on disk (shape {shape}), "
                             f"found {found} (on {me})")

    def check_header(fshape, fdtype):
        if tuple(fshape) != shape or (dtype is not None and fdtype != np.dtype(dtype)):
            raise ValueError(f"{where} changed: expected shape {shape}"
                             + ("" if dtype is None else f" ({np.dtype(dtype)})")
                             + f", found {tuple(fshape)}" + ("" if dtype is None else f" ({fdtype})")
                             + f" (on {me})")

    try:
        opened = _Opened(path, key, kind)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        check_size()  # a shorter file: say so in bytes
        raise ValueError(f"{where} changed: expected {'a .npy file' if kind == 'npy' else 'an array'} "
                         f"of shape {shape}, but it cannot be read ({exc}; on {me})") from None
    try:
        check_header(opened.shape, opened.dtype)
        check_size()
        if fingerprint is not None:
            state = (path, key, _disk_state(path))
            found = _VERIFIED.get(state)
            if found is None:
                found = opened.fingerprint(size)
                if len(_VERIFIED) >= _VERIFIED_MAX:
                    _VERIFIED.clear()
                _VERIFIED[state] = found
            if found != fingerprint:
                raise ValueError(
                    f"{where} on {me} is not the file the client read (fingerprint on the client: "
                    f"{_short(fingerprint)}; here: {_short(found)}): the workers must see the same "
                    f"file at the same absolute path (a shared file system), unchanged during the run")
        try:
            out = np.array(opened.get(a, b), dtype=np.float64, order="C")
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            check_size()
            raise ValueError(f"{where} changed: it cannot be read any more ({exc}; on {me})") from None
    finally:
        opened.close()
    _READS["calls"] += 1
    _READS["bytes"] += out.shape[0] * out.shape[1] * np.dtype(dtype or out.dtype).itemsize
    if out.shape[0] != b - a:
        raise ValueError(f"{where} changed: expected rows {a}..{b - 1}, found {out.shape[0]} rows "
                         f"(on {me})")
    return out


def _read_pair(mspec, lspec, a, b):
    """Rows a..b-1 of the means and of the log-variances in ONE task (specs of
    :meth:`_FileArray.spec`), so that a shard's two blocks are read on the same worker and never
    move between workers to meet."""
    return tuple(_read_rows(s[0], s[1], a, b, s[2], s[3], s[4], s[5], s[6]) for s in (mspec, lspec))


def load_array(path, key=None, name="data"):
    """Load a 2-D array from a ``.npy`` file (memory-mapped, ``allow_pickle=False``) or an ``.npz``
    file (``key``, else the member named ``x``, else its only member); returns float64."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{name}: {path!r} is a directory, not a .npy or .npz file")
    if not os.path.isfile(path):
        raise ValueError(f"{name}: file {path!r} does not exist")
    if path.endswith(".npz"):
        try:
            with zipfile.ZipFile(path) as zf:
                keys = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        except (OSError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{name}: cannot read {path!r} ({exc})") from None
        if key is None:
            if "x" in keys:
                key = "x"
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise ValueError(f"{name}: {path!r} holds {sorted(keys)}; say which array to use "
                                 f"(an array named 'x' is used by default)")
        fa = _FileArray(path, key, name)
    else:
        fa = _FileArray(path, None, name)
    return as_float_array(fa.full(), name, ndim=2)


def _file_sha256(path):
    from ...io import file_sha256
    return file_sha256(path)


def _check_components_manifest(directory, means, log_vars):
    """Check ``directory/components.json`` (when present) against the two component files.

    The manifest is written last by :func:`encode_to_shards`, after both files are in place, and
    removed before either is replaced; when present it must agree with the files: N, L, dtype,
    each file's size and SHA-256 (read here in 1 MiB blocks). Otherwise a ``ValueError`` names the
    manifest and what differs (an incomplete or mixed set of components). Without a manifest
    (files written otherwise) nothing can be checked.
    """
    path = os.path.join(directory, COMPONENTS_MANIFEST)
    if not os.path.isfile(path):
        return
    try:
        with open(path, "rb") as fh:
            m = json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"components manifest {path!r} is malformed ({exc})") from None
    expected = {"format": COMPONENTS_FORMAT, "format_version": 1, "N": means.shape[0],
                "L": means.shape[1], "dtype": "float64"}
    if not isinstance(m, dict) or not isinstance(m.get("files"), dict):
        raise ValueError(f"components manifest {path!r} must be an object with 'files'")
    for k, v in expected.items():
        if m.get(k) != v or isinstance(m.get(k), bool):
            raise ValueError(f"components manifest {path!r}: {k} is {m.get(k)!r:.60}, but the files "
                             f"hold {v!r} (an incomplete or mixed set of components)")
    for fa, fname in ((means, COMPONENT_FILES[0]), (log_vars, COMPONENT_FILES[1])):
        if fa.dtype != np.dtype("<f8"):
            raise ValueError(f"components manifest {path!r}: {fname} has dtype {fa.dtype}, the "
                             f"manifest says float64")
        entry = m["files"].get(fname)
        if not isinstance(entry, dict):
            raise ValueError(f"components manifest {path!r} does not list {fname}")
        if entry.get("bytes") != fa.size:
            raise ValueError(f"components manifest {path!r}: {fname} has {fa.size} bytes, the "
                             f"manifest says {entry.get('bytes')!r:.40} (an incomplete or mixed set "
                             f"of components)")
        if entry.get("sha256") != _file_sha256(fa.path):
            raise ValueError(f"components manifest {path!r}: {fname} does not match its SHA-256 "
                             f"(an incomplete or mixed set of components, or a changed file)")
