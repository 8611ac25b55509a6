r"""Reading: :func:`load_case` (every problem named with the case and the file) and
:func:`list_cases`."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from .case import (ARRAYS_FILE, CASE_LIKELIHOODS, FORMAT, FORMAT_VERSION, MANIFEST_FILE, GoldenCase,
                   _case_priors, _check_dir_arg, case_name, golden_dir)
from .reference import _noise, reference_model

__all__ = ["list_cases", "load_case"]


def list_cases(directory=None) -> list:
    """The case directories in ``directory`` (default: the committed cases), sorted by name in
    the order of :data:`refvae.priors.PRIORS` x :data:`CASE_LIKELIHOODS`, each base case followed
    by its variants (``-analytic_kl``, ``-confident``), others after, alphabetically."""
    directory = golden_dir() if directory is None else os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"{directory}: not a directory of golden cases")
    names = [n for n in os.listdir(directory)
             if os.path.isfile(os.path.join(directory, n, MANIFEST_FILE))]
    known = [case_name(p, li) for p in _case_priors() for li in CASE_LIKELIHOODS]

    def key(n):  # a variant (-analytic_kl, -confident) right after its base case
        for i, base in enumerate(known):
            if n == base or n.startswith(base + "-"):
                return (i, n != base, n)
        return (len(known), True, n)

    names.sort(key=key)
    if not names:
        raise ValueError(f"{directory}: holds no golden cases (subdirectories with {MANIFEST_FILE})")
    return [os.path.join(directory, n) for n in names]


def _config_sizes(config):
    """``(key, number of entries)`` for the sizes of a case configuration that determine how much a
    model allocates (x_dim, latent_dim, num_vals, batch_size, hidden widths; the prior's
    num_components, grid_size (its square: the grid points), num_couplings and hidden widths)."""
    def ints(d, keys, prefix):
        for k in keys:
            v = d.get(k)
            vals = v if isinstance(v, list) else [v]
            for x in vals:
                if isinstance(x, int) and not isinstance(x, bool):
                    yield f"{prefix}{k}", (x * x if k == "grid_size" else x)

    yield from ints(config, ("x_dim", "latent_dim", "num_vals", "batch_size", "hidden"), "")
    pk = config.get("prior_kwargs")
    if isinstance(pk, dict):
        yield from ints(pk, ("num_components", "grid_size", "num_couplings", "hidden"), "prior_kwargs.")


def _check_manifest(m, where):
    """The structure of a parsed ``manifest.json`` (``where`` names it in every message); returns
    ``(order, parameter_shapes)``: ``[(name, shape), ...]`` and ``{name: shape}``."""
    if not isinstance(m, dict):
        raise ValueError(f"{where} holds a JSON {type(m).__name__}, expected an object")
    fmt, version = m.get("format"), m.get("format_version")
    if fmt != FORMAT or type(version) is not int or version != FORMAT_VERSION:
        raise ValueError(f"{where}: format {fmt!r:.80} version {version!r:.80}; this refvae reads "
                         f"{FORMAT!r} version {FORMAT_VERSION}")

    def shape_of(v, what):
        if not isinstance(v, list) or len(v) > 8 or any(type(s) is not int or not 0 <= s <= 2 ** 31
                                                        for s in v):
            raise ValueError(f"{where}: {what} must be a shape (a list of at most 8 integers in "
                             f"[0, 2^31]), got {v!r:.80}")
        return tuple(v)

    name = m.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: 'name' must be a non-empty string, got {name!r:.80}")
    config = m.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{where}: 'config' must be an object (VAE.config() plus batch_size), got "
                         f"{config!r:.80}")
    for k in ("prior", "likelihood"):
        if not isinstance(config.get(k), str):
            raise ValueError(f"{where}: config.{k} must be a string, got {config.get(k)!r:.80}")
    params = m.get("parameters")
    if not isinstance(params, dict) or not params:
        raise ValueError(f"{where}: 'parameters' must be a non-empty object {{name: shape}}, got "
                         f"{params!r:.80}")
    shapes = {k: shape_of(v, f"parameters[{k!r}]") for k, v in params.items()}
    order = m.get("order")
    if not isinstance(order, list) or not order:
        raise ValueError(f"{where}: 'order' must be a non-empty list of {{name, shape}} objects, got "
                         f"{order!r:.80}")
    out, seen = [], set()
    for i, e in enumerate(order):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not e["name"]:
            raise ValueError(f"{where}: order[{i}] must be an object with a non-empty 'name' string "
                             f"and a 'shape', got {e!r:.80}")
        if e["name"] in seen:
            raise ValueError(f"{where}: order[{i}] repeats the quantity {e['name']!r}")
        seen.add(e["name"])
        out.append((e["name"], shape_of(e.get("shape"), f"order[{i}].shape")))
    return out, shapes


def load_case(path_or_name, directory=None) -> GoldenCase:
    """Read a case: a directory path, or a case name in ``directory`` (default: the committed cases).

    Every problem is a ``ValueError`` naming the case directory and the file (``"golden case
    <path>: manifest.json ..."``): a missing file, pickle, an unknown format, a manifest that is
    not an object or lacks a key or has a value of the wrong type, arrays that do not match the
    manifest, non-real or non-finite arrays, a configuration that does not build a refvae model
    with these parameters (each size in it -- widths, dimensions, components, grid points -- must be
    at most the number of numbers in ``case.npz``, so a tampered size cannot allocate more than
    the case holds), prior-sample draws the prior cannot map to its sample. Integrity against
    ``SHA256SUMS`` is checked separately (:func:`require_checksums`).
    """
    path = _check_dir_arg(path_or_name, "path_or_name")
    if not os.path.isdir(path):
        path = os.path.join(golden_dir() if directory is None else _check_dir_arg(directory, "directory"),
                            path)
    mpath, apath = os.path.join(path, MANIFEST_FILE), os.path.join(path, ARRAYS_FILE)
    if not (os.path.isfile(mpath) and os.path.isfile(apath)):
        raise ValueError(f"{path}: not a golden case (needs {MANIFEST_FILE} and {ARRAYS_FILE})")
    where, awhere = f"golden case {path}: {MANIFEST_FILE}", f"golden case {path}: {ARRAYS_FILE}"
    manifest = _read_manifest(mpath, where)
    order_shapes, param_shapes = _check_manifest(manifest, where)
    arrays = _read_arrays(apath, awhere)
    values, scales = _values_and_scales(arrays, order_shapes, awhere)
    params = _params(arrays, param_shapes, awhere)
    x = np.asarray(arrays["input.x"], np.float64)
    eps = np.asarray(arrays["input.eps"], np.float64)
    if x.shape[0] != eps.shape[0]:
        raise ValueError(f"{awhere}: input.x has {x.shape[0]} rows but input.eps has {eps.shape[0]}")
    config = manifest["config"]
    model = _case_model(config, params, x, eps, sum(a.size for a in arrays.values()), where, awhere)
    draws = _take(arrays, "draw.")
    if "prior_sample.z" in values:
        _check_draws(model, draws, values["prior_sample.z"], awhere)
    references = {k: np.asarray(v, np.float64) for k, v in _take(arrays, "reference.").items()}
    return GoldenCase(manifest["name"], config, params, x, eps, draws, values, scales,
                      references, manifest, os.path.abspath(path))


def _take(arrays, prefix):
    """The members with ``prefix``, the prefix removed."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _read_manifest(mpath, where):
    try:
        with open(mpath, "rb") as fh:
            return json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ValueError(f"{where} is malformed: {exc}") from None


def _read_arrays(apath, awhere):
    """Every member of ``case.npz`` (real, finite; 2-D ``input.x`` and ``input.eps``)."""
    try:
        with np.load(apath, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable archive is reported as malformed
        raise ValueError(f"{awhere} cannot be read without pickle: {exc}") from None
    for k, v in arrays.items():
        if v.dtype.kind not in "fiu":
            raise ValueError(f"{awhere}: member {k!r} has dtype {v.dtype}; expected real numbers")
        if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
            raise ValueError(f"{awhere}: member {k!r} holds NaN or inf")
    for k in ("input.x", "input.eps"):
        if k not in arrays or arrays[k].ndim != 2:
            raise ValueError(f"{awhere}: needs a 2-D array {k!r}"
                             + (f", got shape {arrays[k].shape}" if k in arrays else ""))
    return arrays


def _values_and_scales(arrays, order_shapes, awhere):
    """``(values, scales)`` in the manifest's order, each quantity of its manifest shape."""
    values_raw = _take(arrays, "value.")
    order = [n for n, _ in order_shapes]
    if set(order) != set(values_raw):
        raise ValueError(f"{awhere}: value. arrays do not match the manifest's order "
                         f"(missing {sorted(set(order) - set(values_raw))}, "
                         f"extra {sorted(set(values_raw) - set(order))})")
    flat = np.asarray(arrays.get("scales", np.zeros(0)), np.float64)
    sizes = [math.prod(shape) for _, shape in order_shapes]
    if flat.shape != (sum(sizes),):
        raise ValueError(f"{awhere}: 'scales' has shape {flat.shape}, expected ({sum(sizes)},) "
                         f"(every quantity's scale, ravelled, in the manifest's order)")
    if np.any(flat < 0):
        raise ValueError(f"{awhere}: 'scales' has negative entries (condition scales are >= 0)")
    offsets = np.cumsum([0] + sizes)
    for n, shape in order_shapes:
        if values_raw[n].shape != shape:
            raise ValueError(f"{awhere}: value.{n} has shape {values_raw[n].shape}, the manifest "
                             f"says {shape}")
    values = {n: np.asarray(values_raw[n], np.float64) for n in order}
    scales = {n: flat[offsets[i]:offsets[i + 1]].reshape(shape)
              for i, (n, shape) in enumerate(order_shapes)}
    return values, scales


def _params(arrays, param_shapes, awhere):
    """The parameters in the manifest's order, each of its manifest shape."""
    params = {k: np.asarray(v, np.float64) for k, v in _take(arrays, "param.").items()}
    if set(params) != set(param_shapes):
        raise ValueError(f"{awhere}: param. arrays do not match the manifest's parameters "
                         f"(missing {sorted(set(param_shapes) - set(params))}, "
                         f"extra {sorted(set(params) - set(param_shapes))})")
    params = {k: params[k] for k in param_shapes}
    for k, shape in param_shapes.items():
        if params[k].shape != shape:
            raise ValueError(f"{awhere}: param.{k} has shape {params[k].shape}, the manifest says "
                             f"{shape}")
    return params


def _case_model(config, params, x, eps, numbers, where, awhere):
    """The reference model of the configuration, checked against the arrays (no size in the
    configuration beyond the ``numbers`` in ``case.npz``; parameters, x and eps of its shapes)."""
    big = [(k, n) for k, n in _config_sizes(config) if abs(n) > numbers]
    if big:
        raise ValueError(f"{where}: config.{big[0][0]} asks for {big[0][1]} entries, more than the "
                         f"{numbers} numbers in {ARRAYS_FILE}; not the configuration of these arrays")
    if "batch_size" in config and (type(config["batch_size"]) is not int
                                   or config["batch_size"] != x.shape[0]):
        raise ValueError(f"{where}: config.batch_size is {config['batch_size']!r:.80} but input.x "
                         f"has {x.shape[0]} rows")
    try:
        model = reference_model(config, params)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
            ZeroDivisionError) as exc:
        raise ValueError(f"{where}: config does not describe a refvae model with the parameters of "
                         f"{ARRAYS_FILE}: {type(exc).__name__}: {exc}") from None
    for k in params:
        if params[k].shape != model.params[k].shape:
            raise ValueError(f"{awhere}: param.{k} has shape {params[k].shape}, the configuration "
                             f"needs {model.params[k].shape}")
    if x.shape[1] != model.x_dim or eps.shape[1] != model.latent_dim:
        raise ValueError(f"{awhere}: input.x {x.shape} and input.eps {eps.shape} do not fit the "
                         f"configuration (x_dim {model.x_dim}, latent_dim {model.latent_dim})")
    return model


def _check_draws(model, draws, z, awhere):
    """The prior-sample draws have the shape of ``prior_sample.z`` and the prior maps them to a
    sample (its ``sample_from_noise`` validates them: component indices of a mixture, ...)."""
    d_eps = draws.get("prior_sample.eps")
    if d_eps is None or d_eps.shape != z.shape:
        raise ValueError(f"{awhere}: draw.prior_sample.eps must have the shape of "
                         f"value.prior_sample.z {z.shape}")
    try:
        model.prior.sample_from_noise(model.params, _noise(draws))
    except NotImplementedError:
        pass  # a prior without the map: the case cannot store prior_sample.z (not built here)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{awhere}: draw.prior_sample.* do not fit the {model.prior.name} prior: "
                         f"{exc}") from None
