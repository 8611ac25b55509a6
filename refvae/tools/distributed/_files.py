"""Arrays on disk: component files (a ``.npy`` file, an ``.npz`` member, a directory of
``means.npy`` and ``log_vars.npy`` with its manifest), read a few rows at a time, each read checking
that the file did not change since its header was read (:mod:`refvae.tools.distributed`)."""

from __future__ import annotations

import json
import os
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


class _FileArray:
    """A 2-D array in a ``.npy`` file or an ``.npz`` member; reads only the rows asked for."""

    def __init__(self, path, key, name):
        self.path = os.fspath(path)
        self.key = key
        self.name = name
        if not os.path.isfile(self.path):
            raise ValueError(f"{name}: file {self.path!r} does not exist")
        try:
            if key is None:
                arr = np.load(self.path, allow_pickle=False, mmap_mode="r")
                if not isinstance(arr, np.ndarray):
                    raise ValueError("not a .npy file")
                shape, dtype = arr.shape, arr.dtype
                del arr
            else:
                with zipfile.ZipFile(self.path) as zf:
                    with zf.open(_npz_member(zf, self.path, key)) as fh:
                        shape, _, dtype = _npz_member_header(fh)
            self.size = os.path.getsize(self.path)  # re-checked whenever rows are read
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

    def rows(self, a, b):
        """Rows a..b-1 as a float64 C-contiguous array (memory O((b - a) L)); a file whose shape,
        dtype or size on disk changed since the header was read is a ``ValueError``."""
        return _read_rows(self.path, self.key, a, b, self.shape, self.name, self.dtype.str, self.size)

    def full(self):
        return self.rows(0, self.shape[0])


def _read_rows(path, key, a, b, shape, name, dtype=None, size=None):
    """Rows a..b-1 of the array in ``path`` (``key`` None: a .npy file; else an .npz member).

    ``shape`` (and, when given, ``dtype``, a dtype string, and ``size``, the file's bytes on disk)
    are what the header said when the file was first opened: a file replaced since then (fewer
    rows, another dtype, another size) is a ``ValueError`` "<name>: component file <path> changed:
    expected ..., found ...", never fewer rows.
    """
    where = f"{name}: component file {path!r}" + ("" if key is None else f"[{key!r}]")
    shape = tuple(int(s) for s in shape)

    def check_size():
        if size is None:
            return
        try:
            found = os.path.getsize(path)
        except OSError as exc:
            raise ValueError(f"{where} changed: it cannot be read any more ({exc})") from None
        if found != size:
            raise ValueError(f"{where} changed: expected {size} bytes on disk (shape {shape}), "
                             f"found {found}")

    def check_header(fshape, fdtype):
        if tuple(fshape) != shape or (dtype is not None and fdtype != np.dtype(dtype)):
            raise ValueError(f"{where} changed: expected shape {shape}"
                             + ("" if dtype is None else f" ({np.dtype(dtype)})")
                             + f", found {tuple(fshape)}" + ("" if dtype is None else f" ({fdtype})"))

    if key is None:
        try:
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError) as exc:
            check_size()  # a shorter file: say so in bytes
            raise ValueError(f"{where} changed: expected a .npy file of shape {shape}, but it cannot "
                             f"be read ({exc})") from None
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{where} changed: expected a .npy file of shape {shape}, found an archive")
        check_header(arr.shape, arr.dtype)
        check_size()
        out = np.array(arr[a:b], dtype=np.float64, order="C")
        del arr
        if out.shape[0] != b - a:
            raise ValueError(f"{where} changed: expected rows {a}..{b - 1}, found {out.shape[0]} rows")
        return out
    try:
        with zipfile.ZipFile(path) as zf:
            with zf.open(_npz_member(zf, path, key)) as fh:
                fshape, fortran, fdtype = _npz_member_header(fh)
                check_header(fshape, fdtype)
                check_size()
                if fortran:  # column-major on disk: rows are not contiguous; read the member once
                    data = np.frombuffer(fh.read(), dtype=fdtype).reshape(fshape, order="F")
                    return np.array(data[a:b], dtype=np.float64, order="C")
                row = int(fshape[1]) * fdtype.itemsize
                fh.seek(a * row, 1)  # forward read of the stream: O(1) memory
                buf = fh.read((b - a) * row)
                if len(buf) != (b - a) * row:
                    raise ValueError(f"{where} is truncated")
                return np.array(np.frombuffer(buf, dtype=fdtype).reshape(b - a, fshape[1]),
                                dtype=np.float64, order="C")
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        check_size()
        raise ValueError(f"{where} changed: it cannot be read any more ({exc})") from None


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
