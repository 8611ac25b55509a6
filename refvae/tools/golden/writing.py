r"""Writing: a case as ``case.npz`` (deterministic bytes) and ``manifest.json``."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np

from ..._validation import check_choice, check_positive_int
from ...io import _atomic_write_bytes
from .case import (ARRAYS_FILE, CASE_LIKELIHOODS, DEFAULT_SEED, MANIFEST_FILE, _case_priors,
                   _check_dir_arg)
from .checksums import write_checksums
from .generation import build_case

__all__ = ["write_case", "write_cases"]


def _npz_bytes(arrays):
    """A deterministic .npz (fixed timestamps and member order; deflated; no pickle)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, mode="w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k, a in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.array(a, order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(k + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    return buf.getvalue()


def _case_arrays(case):
    arrays = {}
    for k, v in case.params.items():
        arrays[f"param.{k}"] = np.asarray(v, np.float64)
    arrays["input.x"] = case.x
    arrays["input.eps"] = case.eps
    for k, v in case.draws.items():
        arrays[f"draw.{k}"] = v
    for k, v in case.values.items():
        arrays[f"value.{k}"] = np.asarray(v, np.float64)
    # one member for all scales (they are tolerance data, not model values): the ravelled
    # scale of each quantity, concatenated in the manifest's order
    arrays["scales"] = np.concatenate([np.ravel(case.scales[k]) for k in case.values]).astype(np.float32)
    for k, v in case.references.items():
        arrays[f"reference.{k}"] = np.asarray(v, np.float64)
    return arrays


_ONE_LINE_ENTRIES = ("parameters", "inputs", "draws", "order")


def _manifest_text(manifest):
    """JSON with one line per entry of the long tables (``order``, ``parameters``, ...)."""
    parts = []
    for k, v in manifest.items():
        key = json.dumps(k)
        if k in _ONE_LINE_ENTRIES and isinstance(v, (list, dict)) and v:
            if isinstance(v, list):
                rows = [json.dumps(e, allow_nan=False) for e in v]
                parts.append(f" {key}: [\n  " + ",\n  ".join(rows) + "\n ]")
            else:
                rows = [f"{json.dumps(n)}: {json.dumps(e, allow_nan=False)}" for n, e in v.items()]
                parts.append(f" {key}: {{\n  " + ",\n  ".join(rows) + "\n }")
        else:
            parts.append(f" {key}: " + json.dumps(v, indent=1, allow_nan=False).replace("\n", "\n "))
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _write_case_files(case, directory):
    os.makedirs(directory, exist_ok=True)
    _atomic_write_bytes(os.path.join(directory, ARRAYS_FILE), _npz_bytes(_case_arrays(case)))
    _atomic_write_bytes(os.path.join(directory, MANIFEST_FILE),
                        _manifest_text(case.manifest).encode("utf-8"))
    return directory


def write_case(out_dir, prior, likelihood, seed=DEFAULT_SEED, checksums=True, kl="mc",
               confident=False) -> str:
    """Build the case (prior, likelihood, kl, confident: :func:`build_case`) and write it to
    ``out_dir/<name>/`` (:func:`case_name`).

    With ``checksums``, ``out_dir/SHA256SUMS`` is rewritten for every case in ``out_dir``.
    Returns the case directory.
    """
    out_dir = _check_dir_arg(out_dir, "out_dir")
    case = build_case(prior, likelihood, seed, kl=kl, confident=confident)
    path = _write_case_files(case, os.path.join(os.fspath(out_dir), case.name))
    if checksums:
        write_checksums(out_dir)
    return path


def write_cases(out_dir, priors=None, likelihoods=CASE_LIKELIHOODS, seed=DEFAULT_SEED,
                say=None) -> list:
    """Write every (prior, likelihood) case to ``out_dir`` and the checksum list; returns the paths.

    ``priors``/``likelihoods``: non-empty lists of names (``priors`` default: every name in
    :data:`refvae.priors.PRIORS`); ``say``: None or a callable.
    """
    out_dir = _check_dir_arg(out_dir, "out_dir")
    priors = _case_priors() if priors is None else priors
    for arg, name, choices in ((priors, "priors", _case_priors()),
                               (likelihoods, "likelihoods", CASE_LIKELIHOODS)):
        if isinstance(arg, str) or not isinstance(arg, (list, tuple)):
            raise TypeError(f"{name} must be a list of names from {choices}, got {type(arg).__name__}")
        if not arg:
            raise ValueError(f"{name} must not be empty")
        for a in arg:
            check_choice(a, name[:-1], choices)
    seed = check_positive_int(seed, "seed", minimum=0)
    if say is not None and not callable(say):
        raise TypeError(f"say must be None or a callable (e.g. print), got {type(say).__name__}")
    paths = []
    for prior in priors:
        for likelihood in likelihoods:
            paths.append(write_case(out_dir, prior, likelihood, seed, checksums=False))
            if say is not None:
                say(f"wrote {paths[-1]}")
    write_checksums(out_dir)
    return paths

