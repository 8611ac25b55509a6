r"""Adapters: loading a factory (``module:function`` or ``file.py:function``), calling an adapter
on a case, the argument checks every check shares, and refvae itself as an adapter."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback

import numpy as np

from .. import golden as _golden
from ..._validation import check_choice, check_positive_int

__all__ = ["PROFILES", "PRIOR_METHODS", "load_adapter", "call_adapter", "adapter_outputs",
           "is_prior_only", "RefvaeAdapter", "RefvaePriorAdapter"]

PROFILES = tuple(_golden.PROFILE_ROUNDOFF)

#: the methods of a prior-only adapter (any one of them, and no ``run``, makes one)
PRIOR_METHODS = ("prior_log_prob", "prior_sample", "prior_sample_from", "prior_log_prob_grad",
                 "prior_trace")


def is_prior_only(adapter):
    """True for a *prior-only* adapter: no ``run`` (and not callable), and at least one of
    :data:`PRIOR_METHODS`."""
    if callable(getattr(adapter, "run", None)) or callable(adapter):
        return False
    return any(callable(getattr(adapter, m, None)) for m in PRIOR_METHODS)


def load_adapter(spec):
    """``factory()`` for ``"package.module:factory"`` or ``"path/to/file.py:factory"``.

    Raises ``ValueError`` naming the spec when the module or the factory cannot be found, or when
    importing the module or calling the factory raises (the message gives the exception and the
    line of the adapter's file it came from).
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"--impl must be 'module:factory' or 'path/to/file.py:factory', got {spec!r}")
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise ValueError(f"--impl must be 'module:factory' or 'path/to/file.py:factory', got {spec!r}")
    if mod_name.endswith(".py") or os.sep in mod_name or "/" in mod_name:
        path = os.path.abspath(mod_name)
        if not os.path.isfile(path):
            raise ValueError(f"--impl {spec!r}: no such file {path}")
        name = "refvae_adapter_" + os.path.splitext(os.path.basename(path))[0]
        loader_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        folder = os.path.dirname(path)
        added = folder not in sys.path
        if added:  # the adapter's own folder, so that it can import its sibling modules
            sys.path.insert(0, folder)
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the adapter's own error, named in one line
            sys.modules.pop(name, None)
            raise ValueError(f"--impl {spec!r}: importing {path} raised {_where(exc)}") from exc
        finally:
            if added and folder in sys.path:
                sys.path.remove(folder)
    else:
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            raise ValueError(f"--impl {spec!r}: cannot import {mod_name!r} ({exc})") from None
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"--impl {spec!r}: importing {mod_name!r} raised {_where(exc)}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"--impl {spec!r}: {mod_name} has no callable {attr!r}")
    try:
        adapter = factory()
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"--impl {spec!r}: {attr}() raised {_where(exc)}") from exc
    if not (callable(getattr(adapter, "run", None)) or callable(adapter) or is_prior_only(adapter)):
        raise ValueError(f"--impl {spec!r}: {attr}() returned {type(adapter).__name__}, which has no "
                         "run(config, params, x, eps) method, is not callable and has none of the "
                         f"prior-only methods ({', '.join(PRIOR_METHODS)})")
    return adapter


def _where(exc):
    """``"Type: message (file, line n)"`` of an exception (its innermost frame)."""
    tb = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:
        loc = f" ({exc.filename}, line {exc.lineno})"
    elif tb:
        loc = f" ({tb[-1].filename}, line {tb[-1].lineno})"
    else:
        loc = ""
    return f"{type(exc).__name__}: {exc}{loc}"


def _runner(adapter):
    fn = getattr(adapter, "run", None)
    if callable(fn):
        return fn
    if callable(adapter):
        return adapter
    raise ValueError(f"the adapter ({type(adapter).__name__}) has no run(config, params, x, eps) "
                     "method and is not callable")


def _check_case(case):
    if not isinstance(case, (_golden.GoldenCase, _Sub)):
        raise TypeError(f"case must be a refvae.tools.golden.GoldenCase (from refvae.tools.golden.load_case), got "
                        f"{type(case).__name__}")
    return case


def _check_seed(seed):
    return check_positive_int(seed, "seed", minimum=0)


def _check_outputs(outputs):
    if outputs is not None and not isinstance(outputs, dict):
        raise TypeError(f"outputs must be a dict name -> array (or None), got {type(outputs).__name__}")
    return outputs


def _check_adapter(adapter):
    """An adapter: ``run`` (or callable), or a prior-only adapter (``ValueError`` otherwise, as
    for a factory that returns neither)."""
    if not (callable(getattr(adapter, "run", None)) or callable(adapter) or is_prior_only(adapter)):
        raise ValueError(f"adapter must have run(config, params, x, eps), be callable, or have one of "
                        f"the prior-only methods {', '.join(PRIOR_METHODS)}; got "
                        f"{type(adapter).__name__}")
    return adapter


def _check_args(adapter, case, profile, seed=0, outputs=None):
    """The arguments every check shares: an adapter (with run(), or prior-only), a GoldenCase, a
    profile, a seed."""
    _check_adapter(adapter)
    _check_case(case)
    check_choice(profile, "profile", PROFILES)
    _check_seed(seed)
    _check_outputs(outputs)


def _check_grid(grid):
    if grid is not None and not (isinstance(grid, dict) and "logp" in grid and "h" in grid):
        raise TypeError(f"grid must be None or the dict made by refvae.tools.verify._density_grid, got "
                        f"{type(grid).__name__}")


def call_adapter(adapter, case, params=None):
    """The adapter's outputs for a case (fresh copies of the inputs), as a dict."""
    _check_case(case)
    if params is not None and not isinstance(params, dict):
        raise TypeError(f"params must be a dict name -> array (or None), got {type(params).__name__}")
    config, p, x, eps = case.inputs()
    if params is not None:
        p = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    out = _runner(adapter)(config, p, x, eps)
    if not isinstance(out, dict):
        raise TypeError(f"the adapter returned {type(out).__name__}; expected a dict name -> array")
    return out


def _prior_inputs(case):
    """Fresh ``(config, params, z)``: the case's configuration, parameters and golden z (B, L)."""
    config, params = case.inputs()[:2]
    return config, params, np.array(case.values["z"], dtype=np.float64)


def adapter_outputs(adapter, case, errors=None):
    """Everything of an adapter that the harness compares with a case's golden values, as a dict.

    - a whole-model adapter: the dict its ``run(config, params, x, eps)`` returns;
    - a prior-only adapter (:func:`is_prior_only`): the ``prior.*`` intermediates that
      ``prior_trace(config, params, z)`` returns at the case's golden ``z`` (B, L), and ``log_pz``
      from ``prior_log_prob(config, params, z)`` (also ``prior.log_p`` when the trace has none);
    - either kind: ``prior_sample.z`` from ``prior_sample_from(config, params, noise)`` on the
      case's draws (``noise["eps"]`` and, for mixtures, ``noise["index"]``).

    ``errors``: None (an exception of the adapter propagates) or a dict that receives
    ``name -> "raised ..."`` for the optional parts (``prior_sample.z``, ``prior_trace``,
    ``log_pz``) that raised, so that the rest is still compared.
    """
    from ..golden.reference import _noise
    _check_case(case)
    _check_adapter(adapter)
    if errors is not None and not isinstance(errors, dict):
        raise TypeError(f"errors must be None or a dict, got {type(errors).__name__}")

    def guarded(name, fn):
        if errors is None:
            return fn()
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - recorded, the rest is still compared
            errors[name] = f"raised {type(exc).__name__}: {exc}"
            return None

    if not is_prior_only(adapter):
        out = dict(call_adapter(adapter, case))
    else:
        out = {}
        if callable(getattr(adapter, "prior_trace", None)):
            config, params, z = _prior_inputs(case)
            t = guarded("prior_trace", lambda: adapter.prior_trace(config, params, z))
            if t is not None and not isinstance(t, dict):
                msg = f"prior_trace returned {type(t).__name__}; expected a dict name -> array"
                if errors is None:
                    raise TypeError(msg)
                errors["prior_trace"] = msg
            elif t is not None:
                out.update(t)
        if callable(getattr(adapter, "prior_log_prob", None)):
            config, params, z = _prior_inputs(case)
            v = guarded("log_pz", lambda: adapter.prior_log_prob(config, params, z))
            if v is not None:
                out["log_pz"] = v
                out.setdefault("prior.log_p", v)
    if callable(getattr(adapter, "prior_sample_from", None)) and "prior_sample.z" in case.values:
        config, params = case.inputs()[:2]
        noise = {k: v.copy() for k, v in _noise(case.draws).items()}
        v = guarded("prior_sample.z", lambda: adapter.prior_sample_from(config, params, noise))
        if v is not None:
            out["prior_sample.z"] = v
    return out


class RefvaeAdapter:
    """refvae itself behind the adapter protocol (the reference passes every check by
    construction; useful to see the protocol in use and to test the harness)."""

    name = "refvae (reference)"

    def _model(self, config, params):
        return _golden.reference_model(config, params)

    def run(self, config, params, x, eps):
        return _golden.reference_outputs(self._model(config, params), x, eps)

    def prior_log_prob(self, config, params, z):
        model = self._model(config, params)
        return model.prior.forward(model.params, z)[0]

    def prior_sample(self, config, params, n, seed):
        model = self._model(config, params)
        return model.prior.sample(model.params, n, np.random.default_rng(seed))

    def prior_sample_from(self, config, params, noise):
        model = self._model(config, params)
        noise = {k: np.asarray(v, np.float64 if k == "eps" else None) for k, v in noise.items()}
        return model.prior.sample_from_noise(model.params, noise)

    def nll(self, config, params, x, seed):
        from ...estimators import log_likelihood
        model = self._model(config, params)
        return -log_likelihood(model, x, np.random.default_rng(seed), n_samples=_golden.NLL_SAMPLES)["log_px"]

    def prior_trace(self, config, params, z):
        model = self._model(config, params)
        return {k: np.array(v, dtype=np.float64) for k, v in
                model.prior.forward(model.params, np.asarray(z, np.float64))[1]["trace"]}

    def prior_log_prob_grad(self, config, params, z):
        model = self._model(config, params)
        z = np.asarray(z, np.float64)
        log_p, cache = model.prior.forward(model.params, z)
        dz, grads = model.prior.backward(np.ones_like(log_p), cache)
        return {"z": dz, **grads}


class RefvaePriorAdapter:
    """refvae's prior behind the *prior-only* protocol (no ``run``): ``prior_log_prob``,
    ``prior_sample``, ``prior_sample_from``, ``prior_log_prob_grad`` and ``prior_trace``."""

    name = "refvae prior (reference, prior-only)"

    def __init__(self):
        self._ref = RefvaeAdapter()

    def prior_log_prob(self, config, params, z):
        return self._ref.prior_log_prob(config, params, z)

    def prior_sample(self, config, params, n, seed):
        return self._ref.prior_sample(config, params, n, seed)

    def prior_sample_from(self, config, params, noise):
        return self._ref.prior_sample_from(config, params, noise)

    def prior_log_prob_grad(self, config, params, z):
        return self._ref.prior_log_prob_grad(config, params, z)

    def prior_trace(self, config, params, z):
        return self._ref.prior_trace(config, params, z)



class _Sub:
    """A view of a case restricted to some quantities (for :func:`compare_case`): one name, or a
    list of names (kept in the case's data-flow order)."""

    def __init__(self, case, names):
        names = [names] if isinstance(names, str) else [n for n in case.order if n in set(names)]
        self.values = {n: case.values[n] for n in names}
        self.order = names
        self._case = case
        self.name, self.path = case.name, case.path

    def allowed(self, name, profile):
        return self._case.allowed(name, profile)
