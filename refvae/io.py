"""Saving and loading parameters without pickle.

A saved model is a directory with two files:

* ``params.npz`` — one float64 array per parameter, named by its dotted key (SPEC section 3), in
  NumPy's ``.npz`` format (an uncompressed ZIP of ``.npy`` files, exactly what ``np.savez``
  writes; the members are written one by one with ``numpy.lib.format.write_array`` and
  ``allow_pickle=False`` so that no key can collide with ``np.savez``'s own keyword arguments);
* ``config.json`` — the caller's configuration (a JSON object) with ``format_version`` and
  ``refvae_version`` added, written with sorted keys and without NaN/Infinity.

Reading uses ``np.load(..., allow_pickle=False)``: an object array (which would need pickle) is
refused. Every problem with a file — missing, unreadable, malformed, missing or extra or
mis-shaped arrays, non-float arrays, NaN/inf, a bad config — is a ``ValueError`` whose message
names the file and the offending key.

Each file is written to a temporary file in the same directory, flushed to disk and moved into
place with ``os.replace`` (atomic on POSIX and Windows), so a crash never leaves a half-written
``params.npz`` or ``config.json``. The two files are replaced one after the other (parameters
first), so a crash between the two replacements can pair new parameters with the previous config;
``load_params`` with ``expected_keys_shapes`` detects a mismatch of keys or shapes.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

__all__ = ["FORMAT_VERSION", "PARAMS_FILE", "CONFIG_FILE", "save_params", "load_params"]

FORMAT_VERSION = 1  #: version of the directory layout written by :func:`save_params`
PARAMS_FILE = "params.npz"
CONFIG_FILE = "config.json"
_RESERVED = ("format_version", "refvae_version")


def _atomic_write(path, write):
    """Call ``write(fileobj)`` on a binary temporary file next to ``path``, fsync, and
    ``os.replace`` it onto ``path``: readers see the old file or the new one, never a part.

    The file gets the permissions of a normally created file (``0o666`` less the umask; mkstemp
    makes ``0o600``). On any error the temporary file is removed and the error re-raised. The one
    writer of every file refvae saves (parameters, golden cases, reports, statistics).
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
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
    directory = os.fspath(directory)
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


def _load_config(path):
    if not os.path.isfile(path):
        raise ValueError(f"{path}: config file is missing")
    try:
        with open(path, encoding="utf-8") as fh:
            config = json.load(fh, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
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
        Naming the file and the offending key, if a file is missing or malformed; if arrays are
        missing, extra or mis-shaped relative to ``expected_keys_shapes``; if an array is not a
        real floating-point array (integer, bool, complex, object/pickled, structured, or wider
        than float64) or contains NaN/inf; or if the config is not a JSON object with
        ``format_version`` = :data:`FORMAT_VERSION` and a string ``refvae_version``.
    """
    directory = os.fspath(directory)
    expected = None if expected_keys_shapes is None else _normalise_shapes(expected_keys_shapes)
    path = os.path.join(directory, PARAMS_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: parameter file is missing")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported as malformed
        raise ValueError(f"{path}: not a readable .npz archive: {exc}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not an .npz archive (a single .npy array?)")
    params = {}
    with npz:
        keys = list(npz.files)
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
            try:
                arr = npz[k]
            except Exception as exc:  # noqa: BLE001 - object arrays, truncated members, ...
                raise ValueError(f"{path}: key {k!r} cannot be read without pickle: {exc}") from None
            if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f" or arr.dtype.itemsize > 8:
                raise ValueError(f"{path}: key {k!r} has dtype {getattr(arr, 'dtype', type(arr))}; "
                                 f"expected a float64 array")
            if expected is not None and arr.shape != expected[k]:
                raise ValueError(f"{path}: key {k!r} has shape {arr.shape}; expected {expected[k]}")
            arr = np.array(arr, dtype=np.float64, order="C", copy=True)
            bad = ~np.isfinite(arr)
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(f"{path}: key {k!r} contains {float(arr[idx])} at index {idx}")
            params[k] = arr
    config = _load_config(os.path.join(directory, CONFIG_FILE))
    return params, config
