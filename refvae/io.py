"""Saving and loading parameters without pickle.

A saved model is a directory with two files:

* ``params.npz`` — one float64 array per parameter, named by its dotted key (SPEC section 3), in
  NumPy's ``.npz`` format (an uncompressed ZIP of ``.npy`` files, exactly what ``np.savez``
  writes; the members are written one by one with ``numpy.lib.format.write_array`` and
  ``allow_pickle=False`` so that no key can collide with ``np.savez``'s own keyword arguments);
* ``config.json`` — the caller's configuration (a JSON object) with ``format_version`` and
  ``refvae_version`` added, written with sorted keys and without NaN/Infinity.

Reading parses each member's ``.npy`` header before reading its data, without pickle: an object
array (which would need pickle) is refused ("contains object arrays"), and an array whose header
announces more data than the member holds or than the available memory is refused before anything
is allocated ("array of shape ... needs ... GiB"); a file that is no ZIP archive, a corrupt ZIP
structure and CRC/zlib errors are each named as such. Every problem with a file — missing, unreadable, malformed, missing or extra or
mis-shaped arrays, non-float arrays, NaN/inf, a bad config — is a ``ValueError`` whose message
names the file and the offending key.

Each file is written to a temporary file in the same directory, flushed to disk and moved into
place with ``os.replace`` (atomic on POSIX and Windows), so a crash never leaves a half-written
``params.npz`` or ``config.json``. The temporary file is named
``.<name>.refvae-tmp-<host>-<pid>-<random>``; one left behind by a killed process (SIGKILL, power
loss) is removed by the next write into that directory once its process is gone from this host
(:func:`remove_stale_temporaries`; files of any other naming are never touched). The two files are replaced one after the other (parameters
first), so a crash between the two replacements can pair new parameters with the previous config;
``load_params`` with ``expected_keys_shapes`` detects a mismatch of keys or shapes.
"""

from __future__ import annotations

import io as _io
import json
import math
import os
import re
import socket
import struct
import tempfile
import zipfile
import zlib

import numpy as np

__all__ = ["FORMAT_VERSION", "PARAMS_FILE", "CONFIG_FILE", "save_params", "load_params",
           "remove_stale_temporaries", "pid_alive"]

FORMAT_VERSION = 1  #: version of the directory layout written by :func:`save_params`
PARAMS_FILE = "params.npz"
CONFIG_FILE = "config.json"
_RESERVED = ("format_version", "refvae_version")


# ---------------------------------------------------------------------- temporaries and locks
_TMP_MARK = ".refvae-tmp-"
#: ``.<name>.refvae-tmp-<host>-<pid>-<random>``: the names of refvae's own temporary files
_TMP_RE = re.compile(r"^\..+\.refvae-tmp-(?P<host>[A-Za-z0-9_]+)-(?P<pid>[0-9]+)-[A-Za-z0-9_]+$")
_CLEANED = set()  # directories already swept by this process


def _host_tag():
    """This host's name reduced to [A-Za-z0-9_] (at most 32 characters), for temporary-file names."""
    return (re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host")[:32]


def _fspath(path, name):
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(f"{name} must be a path (str or os.PathLike), got "
                        f"{type(path).__name__}") from None


def pid_alive(pid):
    """True if a process ``pid`` (an integer >= 1) exists on this host (it may belong to another
    user)."""
    from ._validation import check_positive_int
    pid = check_positive_int(pid, "pid")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _temp_prefix(path):
    return f".{os.path.basename(path)}{_TMP_MARK}{_host_tag()}-{os.getpid()}-"


def remove_stale_temporaries(directory, *, force=False):
    """Remove refvae's own temporary files in ``directory`` whose process is gone from this host.

    Only names of the form ``.<name>.refvae-tmp-<host>-<pid>-<random>`` (written by
    :func:`_atomic_write` and ``prepare_out_dir``) are considered, and only those made on this
    host by a process that no longer exists; nothing else is ever deleted. Each directory is swept
    once per process unless ``force``. Returns the list of removed paths. ``directory`` must be an
    existing directory (ValueError otherwise).
    """
    directory = _fspath(directory, "directory") or "."
    if not isinstance(force, (bool, np.bool_)):
        raise TypeError(f"force must be True or False, got {type(force).__name__}")
    if not os.path.isdir(directory):
        raise ValueError(f"directory {directory!r} is not an existing directory")
    return _sweep(directory, force)


def _sweep(directory, force=False):
    key = os.path.abspath(directory)
    if key in _CLEANED and not force:
        return []
    _CLEANED.add(key)
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    me, host = os.getpid(), _host_tag()
    for name in names:
        m = _TMP_RE.match(name)
        if m is None or m["host"] != host:
            continue
        pid = int(m["pid"])
        if pid <= 0 or pid == me or pid_alive(pid):
            continue
        full = os.path.join(directory, name)
        try:
            if os.path.isfile(full) and not os.path.islink(full):
                os.unlink(full)
                removed.append(full)
        except OSError:
            pass
    return removed


def _atomic_write(path, write):
    """Call ``write(fileobj)`` on a binary temporary file next to ``path``, fsync, and
    ``os.replace`` it onto ``path``: readers see the old file or the new one, never a part.

    The file gets the permissions of a normally created file (``0o666`` less the umask; mkstemp
    makes ``0o600``). On any error (KeyboardInterrupt included) the temporary file is removed and
    the error re-raised; one left by a killed process is named
    ``.<name>.refvae-tmp-<host>-<pid>-<random>`` and removed by the next write into the directory
    (:func:`remove_stale_temporaries`). The one writer of every file refvae saves (parameters,
    golden cases, reports, figures, statistics).
    """
    directory = os.path.dirname(path) or "."
    _sweep(directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_temp_prefix(path), suffix="")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _atomic_write_bytes(path, data):
    """:func:`_atomic_write` of the bytes ``data``."""
    _atomic_write(path, lambda fh: fh.write(data))


def _check_params_for_saving(params):
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict[str, array], got {type(params).__name__}")
    if not params:
        raise ValueError("params must not be empty")
    out = {}
    for k, v in params.items():
        if not isinstance(k, str) or not k or "/" in k or "\\" in k or k != k.strip():
            raise ValueError(f"params key {k!r} is not a valid name (a non-empty string without "
                             f"slashes or surrounding spaces)")
        arr = np.asarray(v)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating)
                                       or np.issubdtype(arr.dtype, np.integer)
                                       or arr.dtype == np.bool_):
            raise TypeError(f"params[{k!r}] must be an array of real numbers, got dtype {arr.dtype}")
        arr = np.asarray(arr, dtype=np.float64, order="C")  # keeps 0-d arrays 0-d
        if not np.all(np.isfinite(arr)):
            idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise ValueError(f"params[{k!r}] contains {float(arr[idx])} at index {idx}; refusing to save "
                             f"NaN or inf")
        out[k] = arr
    return out


def _config_for_saving(config):
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (a JSON object), got {type(config).__name__}")
    for k in config:
        if not isinstance(k, str):
            raise ValueError(f"config keys must be strings (JSON object keys), got {k!r}")
    from . import __version__
    full = dict(config)
    full["format_version"] = FORMAT_VERSION  # describes the file being written: always overwritten
    full["refvae_version"] = __version__
    try:
        text = json.dumps(full, sort_keys=True, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config is not JSON-serialisable without NaN/Infinity: {exc}") from None
    return text + "\n"


def save_params(directory, params, config):
    """Write ``params.npz`` and ``config.json`` into ``directory`` (created if missing).

    Parameters
    ----------
    directory : str or os.PathLike
    params : dict[str, array_like]
        Real, finite arrays; stored as float64 under their keys.
    config : dict
        A JSON-serialisable object. ``format_version`` and ``refvae_version`` (from
        ``refvae.__version__``) are set in the written copy, overwriting any such keys.

    Both files are written atomically (temporary file, fsync, ``os.replace``); nothing is pickled.
    """
    directory = _fspath(directory, "directory")
    arrays = _check_params_for_saving(params)
    text = _config_for_saving(config)
    os.makedirs(directory, exist_ok=True)

    def write_npz(fh):
        with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for k, arr in arrays.items():
                with zf.open(k + ".npy", mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)

    _atomic_write(os.path.join(directory, PARAMS_FILE), write_npz)
    _atomic_write(os.path.join(directory, CONFIG_FILE), lambda fh: fh.write(text.encode("utf-8")))


# ---------------------------------------------------------------------- loading
def _reject_constant(name):
    raise ValueError(f"non-finite number {name} is not allowed")


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _finite_float(text):
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"number {text} overflows float64")
    return x


def _load_config(path):
    if not os.path.isfile(path):
        raise ValueError(f"{path}: config file is missing")
    try:
        with open(path, encoding="utf-8") as fh:
            config = json.load(fh, parse_constant=_reject_constant, parse_float=_finite_float,
                               object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ValueError(f"{path}: malformed config: nested too deeply (arrays/objects nested "
                         f"beyond Python's recursion limit)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed config: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: config must be a JSON object, got {type(config).__name__}")
    version = config.get("format_version")
    if "format_version" not in config:
        raise ValueError(f"{path}: key 'format_version' is missing; not written by refvae.io")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{path}: key 'format_version' must be an integer, got {version!r}")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: key 'format_version' is {version}; this refvae reads version "
                         f"{FORMAT_VERSION}")
    if not isinstance(config.get("refvae_version"), str):
        raise ValueError(f"{path}: key 'refvae_version' is missing or not a string")
    return config


def _normalise_shapes(expected):
    if not isinstance(expected, dict):
        raise TypeError(f"expected_keys_shapes must be a dict name -> shape, got "
                        f"{type(expected).__name__}")
    out = {}
    for k, s in expected.items():
        try:
            shape = tuple(int(n) for n in s)
        except TypeError:
            raise TypeError(f"expected_keys_shapes[{k!r}] must be a shape (tuple of int), "
                            f"got {s!r}") from None
        out[k] = shape
    return out


def _available_memory():
    """Bytes of available memory, or None (:func:`refvae._validation.available_memory`)."""
    from ._validation import available_memory
    return available_memory()[0]


def _gib(n):
    return f"{n / 2.0 ** 30:.3g} GiB"


def _open_npz(path):
    """The ZipFile of an .npz file; ValueError saying what the file is when it is not one."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if not head:
        raise ValueError(f"{path}: not an .npz archive: the file is empty")
    if head.startswith(b"\x93NUMPY"):
        raise ValueError(f"{path}: not an .npz archive (a single .npy array?)")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise ValueError(f"{path}: not an .npz archive: no ZIP signature (the file starts with "
                         f"{head[:4]!r})")
    try:
        zf = zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as exc:
        raise ValueError(f"{path}: not an .npz archive: corrupt ZIP structure ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    # a damaged central directory can parse as fewer members: compare with the end record's count
    try:
        with open(path, "rb") as fh:
            end = zipfile._EndRecData(fh)
        total = None if end is None else int(end[zipfile._ECD_ENTRIES_TOTAL])
    except (AttributeError, IndexError, OSError, TypeError, ValueError):  # private API changed
        total = None
    if total is not None and total != len(zf.infolist()):
        zf.close()
        raise ValueError(f"{path}: not an .npz archive: corrupt ZIP structure (the end record "
                         f"counts {total} members, the central directory lists "
                         f"{len(zf.infolist())})")
    return zf


def _read_member(path, zf, info, k):
    """One member of an .npz archive as an ndarray, read without pickle.

    The ``.npy`` header is parsed first: an object dtype is refused ("contains object arrays"),
    and the size the header announces is checked against the member's size and the available
    memory before anything is allocated. CRC and zlib errors are reported as corruption.
    """
    where = f"{path}: key {k!r}"
    if not info.filename.endswith(".npy"):
        raise ValueError(f"{where}: member {info.filename!r} is not a .npy array")
    try:
        with zf.open(info) as fh:
            head = fh.read(6 + 2 + 4)
            buf = _io.BytesIO(head)
            try:
                version = np.lib.format.read_magic(buf)
            except ValueError:
                raise ValueError(f"{where}: not a .npy array (no NumPy header)") from None
            hdr_len_size = 2 if version == (1, 0) else 4
            fmt = "<H" if hdr_len_size == 2 else "<I"
            if len(head) < 8 + hdr_len_size:
                raise ValueError(f"{where}: truncated .npy header ({len(head)} bytes)")
            hlen = struct.unpack(fmt, head[8:8 + hdr_len_size])[0]
            rest = head[8 + hdr_len_size:]
            need = hlen - len(rest)
            if need > 100_000:
                raise ValueError(f"{where}: .npy header of {hlen} bytes is not plausible")
            header = head + fh.read(max(need, 0))
            try:
                hb = _io.BytesIO(header)
                np.lib.format.read_magic(hb)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(hb)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(hb)
                else:
                    shape, fortran, dtype = np.lib.format._read_array_header(hb, version)
            except ValueError as exc:
                raise ValueError(f"{where}: malformed .npy header ({exc})") from None
            if dtype.hasobject:
                raise ValueError(f"{where} contains object arrays (refused: no pickle; dtype "
                                 f"{dtype})")
            count = math.prod(shape)
            nbytes = count * dtype.itemsize
            payload = info.file_size - len(header)
            if nbytes > payload:
                raise ValueError(f"{where}: array of shape {shape} ({dtype}) needs {_gib(nbytes)} "
                                 f"({nbytes} bytes), but the archive member holds only {payload} "
                                 f"bytes of data (truncated or forged header)")
            avail = _available_memory()
            if avail is not None and nbytes > avail:
                raise ValueError(f"{where}: array of shape {shape} ({dtype}) needs {_gib(nbytes)}, "
                                 f"more than the {_gib(avail)} of available memory")
            if dtype.itemsize == 0 or dtype.kind not in "biufc":  # not a number: report the dtype
                return np.empty(0, dtype=dtype)
            arr = np.empty(count, dtype=dtype)  # read straight into the array, 16 MiB at a time
            buf = memoryview(arr.reshape(-1).view(np.uint8)) if count else memoryview(b"")
            pos = 0
            while pos < nbytes:
                chunk = fh.read(min(nbytes - pos, 1 << 24))
                if not chunk:
                    raise ValueError(f"{where}: truncated: {pos} of {nbytes} bytes of data")
                buf[pos:pos + len(chunk)] = chunk
                pos += len(chunk)
            if fh.read(1):
                raise ValueError(f"{where}: {payload - nbytes} unexpected bytes after the array data")
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ValueError(f"{where} is corrupt (CRC/zlib error: {exc})") from None
    except (NotImplementedError, RuntimeError) as exc:  # unknown compression, "encrypted", ...
        raise ValueError(f"{where}: unsupported ZIP member ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{where}: cannot be read: {exc.strerror or exc}") from None
    return arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)


def load_params(directory, expected_keys_shapes=None):
    """Read a directory written by :func:`save_params`; returns ``(params, config)``.

    Parameters
    ----------
    directory : str or os.PathLike
    expected_keys_shapes : dict[str, tuple of int], optional
        When given, the file must hold exactly these keys with exactly these shapes.

    Returns
    -------
    params : dict[str, numpy.ndarray]
        New, writeable, C-contiguous float64 arrays (float16/float32 arrays are upcast exactly).
    config : dict
        The stored config, including ``format_version`` and ``refvae_version``.

    Raises
    ------
    ValueError
        Naming the file and the offending key, if a file is missing or malformed (saying what:
        not an .npz archive, a corrupt ZIP structure, "corrupt (CRC/zlib error)", "array of shape
        ... needs ... GiB" when the header announces more data than the member holds or than the
        available memory, "contains object arrays", a config "nested too deeply"); if arrays are
        missing, extra or mis-shaped relative to ``expected_keys_shapes``; if an array is not a
        real floating-point array (integer, bool, complex, object/pickled, structured, or wider
        than float64) or contains NaN/inf; or if the config is not a JSON object with
        ``format_version`` = :data:`FORMAT_VERSION` and a string ``refvae_version``.
    """
    directory = _fspath(directory, "directory")
    expected = None if expected_keys_shapes is None else _normalise_shapes(expected_keys_shapes)
    path = os.path.join(directory, PARAMS_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: parameter file is missing")
    params = {}
    with _open_npz(path) as zf:
        members = {}
        for info in zf.infolist():
            k = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if k in members:
                raise ValueError(f"{path}: not a valid .npz archive: key {k!r} appears twice")
            members[k] = info
        keys = list(members)
        if expected is not None:
            missing = sorted(set(expected) - set(keys))
            extra = sorted(set(keys) - set(expected))
            if missing or extra:
                parts = ([f"missing key(s) {missing}"] if missing else []) + \
                        ([f"extra key(s) {extra}"] if extra else [])
                raise ValueError(f"{path}: " + "; ".join(parts))
        if not keys:
            raise ValueError(f"{path}: the archive holds no arrays")
        for k in keys:
            arr = _read_member(path, zf, members[k], k)
            if arr.dtype.kind != "f" or arr.dtype.itemsize > 8:
                raise ValueError(f"{path}: key {k!r} has dtype {getattr(arr, 'dtype', type(arr))}; "
                                 f"expected a float64 array")
            if expected is not None and arr.shape != expected[k]:
                raise ValueError(f"{path}: key {k!r} has shape {arr.shape}; expected {expected[k]}")
            if not (arr.dtype == np.float64 and arr.flags.c_contiguous):  # fresh array: copy
                arr = np.array(arr, dtype=np.float64, order="C")          # only to convert
            bad = ~np.isfinite(arr)
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(f"{path}: key {k!r} contains {float(arr[idx])} at index {idx}")
            params[k] = arr
    config = _load_config(os.path.join(directory, CONFIG_FILE))
    return params, config


def file_sha256(path, block=1 << 20):
    """SHA-256 hex digest of a file, read in blocks (golden-case checksums, component manifests)."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()
