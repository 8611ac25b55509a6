r"""Verify another implementation of the model against the golden cases and against the mathematics.

The adapter protocol
--------------------
A *factory* (``module:function`` or ``path/to/file.py:function``) returns an *adapter*: an object
with a method ``run(config, params, x, eps)`` (or the object itself callable with those arguments)
that returns a dict with whichever quantities it computes, named as in the golden cases:

- the trace (data-flow order): ``encoder.<i>.pre``, ``encoder.<i>.out``, ``mu``, ``log_var``,
  ``eps``, ``z``, ``decoder.<i>.pre``/``.out``, ``log_px_z``, the prior's intermediates
  (``prior.means``, ``prior.log_weights``, ``prior.component_log_prob`` (B, K), ``prior.flow.<t>.s``,
  ``prior.flow.<t>.log_det``, ..., ``prior.log_p``), ``log_pz``, ``log_qz_x``, ``kl``,
  ``neg_elbo`` (per example, (B,));
- ``loss`` (the batch mean of ``neg_elbo``) and ``grad.<param>`` (its gradient, the parameter's
  shape: ``grad.encoder.0.W`` is (in, out) like ``W``);
- ``nll`` (B,), an estimate of -ln p(x) per example (optional).

``config`` is the case's configuration (``VAE.config()`` plus ``batch_size``), ``params`` a dict of
float64 arrays with SPEC names, ``x`` (B, D) and ``eps`` (B, L) float64 arrays (copies: the adapter
may modify them). Values may be NumPy arrays, scalars or anything ``np.asarray`` converts.
Optional methods enable the checks that need no golden value:

- ``prior_log_prob(config, params, z)`` -> (n,): the prior's log-density at the rows of z;
- ``prior_sample(config, params, n, seed)`` -> (n, L): n draws from the prior;
- ``prior_sample_from(config, params, noise)`` -> (n, L): the sample made from given noise,
  ``noise["eps"]`` (n, L) and, for mixtures, ``noise["index"]`` (n,) (compared with the golden
  ``prior_sample.z``);
- ``nll(config, params, x, seed)`` -> (B,): used when ``run`` does not report ``nll``.

What is checked
---------------
1. **Golden values** (``golden``): every reported quantity against the case, per element,
   ``|a - e| <= c u (S + |e|)`` (see :mod:`refvae.tools.golden`, *Tolerances*: S is the condition
   scale stored with the case, u the profile's unit roundoff, c = 64). The report gives per
   quantity the largest absolute and relative difference and the largest ratio to the allowed
   difference, and names the **first** quantity in data-flow order that diverges: every quantity
   before it agrees, so it is the first place where the implementation departs from the math
   (a wrong encoder is reported at ``encoder.0.pre``, not at the ELBO).
2. Checks on the adapter's own functions (no golden value):

   - ``gradient``: the reported ``grad.*`` against central differences of the adapter's own loss,
     one random direction per parameter (:func:`refvae.gradcheck.check_vjp` for float64; the same
     check with float32's epsilon for the float32 profile);
   - ``normalisation`` (L = 2): the prior density integrates to one (trapezoid rule on a grid
     over a box that holds all but < 1e-11 of the mass of the reference prior);
   - ``sampler`` (L = 2): Pearson chi-square of ``prior_sample`` draws against the adapter's own
     density over 2-D cells (false-failure probability 1e-6 per check);
   - ``mixture`` (mixture priors): ``prior_log_prob`` equals the definition
     logsumexp_k [log pi_k + log N(z | mu_k, log_var_k)] with the adapter's own components;
   - ``nll``: a reported NLL against the exact -ln p(x) (2-D quadrature, stored with the case),
     refvae's importance-sampled estimate and the expected negative ELBO; a negative ELBO
     reported as an NLL is named as such.

Every failure comes with a Python snippet that reproduces it; :meth:`VerifyReport.to_dict`
is the JSON report (with provenance); a known-deviations file (a JSON list of
``{"case", "quantity", "reason"}``, fnmatch patterns allowed) turns listed failures into
"known" with the reason shown.

References: SPEC.md; STYLE.md (the array-api-tests model: adapters, reproductions, JSON report).
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import json
import math
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np

from . import golden as _golden
from .._validation import check_choice, check_positive_int
from ..io import _atomic_write_bytes
from ..tolerances import tolerance

__all__ = ["PROFILES", "CHECKS", "load_adapter", "call_adapter", "load_known_deviations", "run",
           "compare_case", "check_gradient", "check_normalisation", "check_sampler",
           "check_mixture", "check_nll", "QuantityResult", "CheckResult", "CaseResult",
           "VerifyReport", "RefvaeAdapter"]

PROFILES = tuple(_golden.PROFILE_ROUNDOFF)
CHECKS = ("golden", "gradient", "normalisation", "sampler", "mixture", "nll")
MIXTURE_PRIORS = ("mog", "vamp", "gtm", "gtm_vamp")
SCHEMA = "refvae-verify-report/1"
FAILING = ("fail", "shape", "nonfinite", "error")


# =========================================================================== adapters

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
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the adapter's own error, named in one line
            sys.modules.pop(name, None)
            raise ValueError(f"--impl {spec!r}: importing {path} raised {_where(exc)}") from exc
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
    if not (callable(getattr(adapter, "run", None)) or callable(adapter)):
        raise ValueError(f"--impl {spec!r}: {attr}() returned {type(adapter).__name__}, which has no "
                         "run(config, params, x, eps) method and is not callable")
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


MAX_SAMPLER_DRAWS = 10 ** 8  #: the largest ``n`` of :func:`check_sampler` (1.6 GB of draws at L = 2)


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


def _check_args(adapter, case, profile, seed=0, outputs=None):
    """The arguments every check shares: an adapter with run(), a GoldenCase, a profile, a seed."""
    _runner(adapter)
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
        draws = {"prior_sample.eps": np.asarray(noise["eps"], np.float64)}
        if "index" in noise:
            draws["prior_sample.index"] = np.asarray(noise["index"], np.int64)
        return _golden._prior_sample_from(model, model.params, draws)

    def nll(self, config, params, x, seed):
        from ..estimators import log_likelihood
        model = self._model(config, params)
        return -log_likelihood(model, x, np.random.default_rng(seed), n_samples=_golden.NLL_SAMPLES)["log_px"]


# =========================================================================== results

@dataclass
class QuantityResult:
    """The comparison of one quantity with its golden value."""

    name: str
    position: int                 #: index in the case's data-flow order
    status: str                   #: pass, fail, shape, nonfinite, missing, known
    size: int = 0
    n_failed: int = 0
    max_abs: float | None = None
    max_rel: float | None = None
    ratio: float | None = None    #: largest |a - e| / allowed over the elements
    index: list | None = None     #: the element with the largest ratio
    expected: float | None = None
    actual: float | None = None
    allowed: float | None = None
    message: str = ""
    reason: str | None = None     #: a known deviation's reason
    reproduction: str | None = None

    @property
    def failed(self):
        return self.status in FAILING


@dataclass
class CheckResult:
    """One check that needs no golden value (or ``golden`` summarised)."""

    name: str                     #: gradient, normalisation, sampler, mixture, nll
    status: str                   #: pass, fail, skip, known, error
    summary: str
    value: float | None = None
    allowed: float | None = None
    details: dict = field(default_factory=dict)
    reason: str | None = None
    reproduction: str | None = None

    @property
    def failed(self):
        return self.status in FAILING


@dataclass
class CaseResult:
    case: str
    path: str
    quantities: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    first_divergence: str | None = None
    error: str | None = None
    ignored: list = field(default_factory=list)  #: reported names that the case does not have
    seconds: float = 0.0

    @property
    def passed(self):
        return (self.error is None and not any(q.failed for q in self.quantities)
                and not any(c.failed for c in self.checks))

    def quantity(self, name):
        for q in self.quantities:
            if q.name == name:
                return q
        raise KeyError(name)

    def check(self, name):
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def failed_quantities(self):
        return [q.name for q in self.quantities if q.failed]

    @property
    def failed_checks(self):
        return [c.name for c in self.checks if c.failed]


# =========================================================================== golden comparison

def _as_array(value):
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        pass
    detach = getattr(value, "detach", None)  # a tensor that requires grad
    if callable(detach):
        return np.asarray(detach().cpu().numpy(), dtype=np.float64)
    raise TypeError(f"cannot convert {type(value).__name__} to a float64 array")


def _conform(name, a, shape):
    """``a`` reshaped to ``shape`` when only unit axes or a C-order split of trailing axes differ;
    ``(array, note)`` or ``(None, message)``."""
    shape = tuple(shape)
    if a.shape == shape:
        return a, ""
    if a.size == int(np.prod(shape, dtype=np.int64)):
        if tuple(s for s in a.shape if s != 1) == tuple(s for s in shape if s != 1):
            return a.reshape(shape), ""
        if a.ndim != len(shape) and a.ndim >= 1 and len(shape) >= 1 and a.shape[0] == shape[0]:
            return a.reshape(shape), f"reshaped (C order) from {a.shape}"
    msg = f"shape {a.shape}, expected {shape}"
    if len(shape) == 2 and a.shape == shape[::-1]:
        msg += (" (transposed? W has shape (in, out); PyTorch's nn.Linear.weight is W.T)"
                if name.endswith(".W") else " (transposed?)")
    elif name == "neg_elbo" and a.size == 1:
        msg += " (neg_elbo is per example; the batch mean is 'loss')"
    return None, msg


def _fmt_index(idx):
    return "(" + ", ".join(str(int(i)) for i in idx) + ("," if len(idx) == 1 else "") + ")"


def compare_case(outputs, case, profile="float64"):
    """Compare an adapter's outputs with a case: a list of :class:`QuantityResult` in data-flow
    order (``missing`` for quantities the adapter does not report)."""
    check_choice(profile, "profile", PROFILES)
    _check_case(case)
    if not isinstance(outputs, dict):
        raise TypeError(f"outputs must be a dict name -> array, got {type(outputs).__name__}")
    results = []
    for pos, name in enumerate(case.order):
        want = case.values[name]
        if name not in outputs:
            results.append(QuantityResult(name, pos, "missing", size=int(want.size)))
            continue
        try:
            a = _as_array(outputs[name])
        except TypeError as exc:
            results.append(QuantityResult(name, pos, "fail", size=int(want.size), message=str(exc)))
            continue
        a, note = _conform(name, a, want.shape)
        if a is None:
            results.append(QuantityResult(name, pos, "shape", size=int(want.size), message=note))
            continue
        allowed = case.allowed(name, profile)
        finite = np.isfinite(a)
        err = np.where(finite, np.abs(a - want), np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(want != 0, err / np.abs(want), np.where(err == 0, 0.0, np.inf))
            ratio = err / allowed
        i = np.unravel_index(int(np.argmax(ratio)), ratio.shape) if ratio.size else ()
        n_failed = int(np.sum(err > allowed))
        status = "pass" if n_failed == 0 else ("nonfinite" if not finite.all() else "fail")
        msg = note
        if not finite.all():
            j = tuple(int(t) for t in np.argwhere(~finite)[0])
            msg = (msg + "; " if msg else "") + f"non-finite value {a[j]!r} at {_fmt_index(j)}"
        results.append(QuantityResult(
            name, pos, status, size=int(want.size), n_failed=n_failed,
            max_abs=float(np.max(err)), max_rel=float(np.max(rel)), ratio=float(ratio[i]),
            index=[int(t) for t in i], expected=float(want[i]), actual=float(a[i]),
            allowed=float(allowed[i]), message=msg))
    return results


def _first_divergence(quantities):
    for q in quantities:
        if q.failed:
            return q.name
    return None


# =========================================================================== reproduction snippets

def _absolute_impl(impl):
    """The factory spec with a file path made absolute (so a snippet runs from any directory)."""
    if not impl:
        return impl
    mod, _, attr = impl.rpartition(":")
    if mod.endswith(".py") or "/" in mod or os.sep in mod:
        return f"{os.path.abspath(mod)}:{attr}"
    return impl


def _snippet_head(impl, case):
    impl = _absolute_impl(impl)
    impl_line = (f"adapter = load_adapter({impl!r})" if impl
                 else "adapter = ...  # the object your factory returns")
    where = case.path or case.name
    if case.path and os.path.dirname(os.path.abspath(case.path)) == os.path.abspath(_golden.golden_dir()):
        where = case.name  # a case shipped with refvae: the name is portable
    return ("import numpy as np\n"
            "from refvae.tools.golden import load_case\n"
            "from refvae.tools.verify import call_adapter, load_adapter\n"
            f"case = load_case({where!r})\n"
            f"{impl_line}\n")


def _repro_quantity(impl, case, name, profile, status="fail"):
    if status == "shape":
        return (_snippet_head(impl, case)
                + "out = call_adapter(adapter, case)\n"
                + f"print('got shape', np.shape(out[{name!r}]), 'expected', case.values[{name!r}].shape)\n")
    return (_snippet_head(impl, case)
            + "out = call_adapter(adapter, case)\n"
            + f"got = np.asarray(out[{name!r}], dtype=np.float64).reshape(case.values[{name!r}].shape)\n"
            + f"want, allowed = case.values[{name!r}], case.allowed({name!r}, {profile!r})\n"
            + "bad = np.abs(got - want) > allowed\n"
            + "print('expected', want[bad], '\\ngot     ', got[bad], '\\nallowed |diff|', allowed[bad])\n"
            + "print('at', np.argwhere(bad).tolist())\n")


def _repro_check(impl, case, check, profile, **kw):
    fn = f"check_{check}"
    extra = "".join(f", {k}={v!r}" for k, v in kw.items())
    return (_snippet_head(impl, case).replace("call_adapter, load_adapter",
                                              f"{fn}, load_adapter")
            + f"result = {fn}(adapter, case, {profile!r}{extra})\n"
            + "print(result.status, result.summary)\n")


# =========================================================================== checks

def _u(profile):
    return _golden.PROFILE_ROUNDOFF[profile]


def _c():
    return tolerance("verify_golden").c


def _loss_of(out):
    if "loss" in out:
        return float(np.ravel(_as_array(out["loss"]))[0])
    return float(np.mean(_as_array(out["neg_elbo"])))


def _directional_check(f, grads, params, rng, eps, rtol):
    """:func:`refvae.gradcheck.check_vjp` (central differences, one direction per input) with the
    machine epsilon ``eps`` of the function's arithmetic (float32 functions)."""
    from ..gradcheck import GradcheckEntry, GradcheckReport
    report = GradcheckReport(method=f"central (eps = {eps:.3g})", rtol=rtol)
    base_h = eps ** (1 / 3)
    for name, g in grads.items():
        x = params[name]
        u = rng.standard_normal(x.shape)
        fin = x[np.isfinite(x)]
        h = base_h * max(1.0, float(np.sqrt(np.mean(fin * fin)))) if fin.size else base_h

        def at(t):
            moved = dict(params)
            moved[name] = x + t * u
            return f(moved)

        def central(hh):
            p, m = at(hh), at(-hh)
            return (p - m) / (2 * hh), abs(p) + abs(m)

        num, mag = central(h)
        num2, mag2 = central(h / 2)
        ana = float(np.sum(g * u))
        floor = (10 * eps * max(mag, mag2) / h + 64 * eps * float(np.sum(np.abs(g * u)))
                 + 2.0 * abs(num - num2))
        err = abs(ana - num)
        scale = max(abs(ana), abs(num))
        report.entries.append(GradcheckEntry(name, ana, num, err, err / scale if scale > 0 else 0.0,
                                             rtol * scale + floor, h, bool(err <= rtol * scale + floor)))
    return report


def _outputs_or_run(adapter, case, outputs):
    """``outputs`` if given, else the adapter's outputs for the case ({} if it cannot run)."""
    if outputs is not None:
        return outputs
    try:
        return call_adapter(adapter, case)
    except Exception:  # noqa: BLE001 - the checks that need outputs then say so
        return {}


def check_gradient(adapter, case, profile="float64", seed=0, outputs=None):
    """The adapter's ``grad.*`` against central differences of its own ``loss`` (or the mean of
    its ``neg_elbo``), one random direction per parameter."""
    from ..gradcheck import check_vjp
    _check_args(adapter, case, profile, seed, outputs)
    out = call_adapter(adapter, case) if outputs is None else outputs
    names = [k for k in case.params if f"grad.{k}" in out]
    if not names or ("loss" not in out and "neg_elbo" not in out):
        return CheckResult("gradient", "skip", "needs 'loss' (or 'neg_elbo') and grad.* outputs")
    grads = {}
    for k in names:
        g, note = _conform(f"grad.{k}", _as_array(out[f"grad.{k}"]), case.params[k].shape)
        if g is None:
            return CheckResult("gradient", "fail", f"grad.{k}: {note}")
        grads[k] = g

    def f(p):
        return _loss_of(call_adapter(adapter, case, params=p))

    rng = np.random.default_rng(seed)
    base = {k: np.array(v) for k, v in case.params.items()}
    if profile == "float64":
        rep = check_vjp(f, lambda g, p: {k: g * grads[k] for k in names}, base, rng=rng, wrt=names)
    else:
        tol = tolerance("verify_gradient_float32")
        rep = _directional_check(f, grads, base, rng, 2.0 * _u(profile), tol.rtol)
    if not rep.entries:     # a check that checked nothing never passes
        return CheckResult("gradient", "fail",
                           f"nothing was checked ({getattr(rep, 'reason', None) or 'no entries'})")
    worst = rep.worst
    failed = [e.name for e in rep.entries if not e.passed]
    details = {"method": rep.method, "rtol": rep.rtol,
               "entries": [{"param": e.name, "analytic": e.analytic, "numeric": e.numeric,
                            "abs_err": e.abs_err, "rel_err": e.rel_err, "allowed": e.allowed,
                            "passed": e.passed} for e in rep.entries]}
    if failed:
        summary = (f"grad.{worst.name} disagrees with finite differences of your own loss: "
                   f"directional derivative {worst.analytic:.6e} (your gradient) vs {worst.numeric:.6e} "
                   f"(differences), |diff| {worst.abs_err:.2e} > allowed {worst.allowed:.2e}"
                   + (f"; also {', '.join('grad.' + n for n in failed if n != worst.name)}"
                      if len(failed) > 1 else ""))
        return CheckResult("gradient", "fail", summary, worst.abs_err, worst.allowed, details)
    return CheckResult("gradient", "pass",
                       f"{len(rep.entries)} parameters agree with finite differences (worst rel err "
                       f"{rep.max_rel_err:.1e}, {rep.method})", rep.max_rel_err, rep.rtol, details)


# ---------------------------------------------------------------- the L = 2 density grid

def _grid_spec(case):
    """(lo, hi, h, outside) of the reference prior: :func:`refvae.tools.golden.prior_box`."""
    return _golden.prior_box(case.model())


def _density_grid(adapter, case, chunk=1 << 16):
    lo, hi, h, outside = _grid_spec(case)
    xs = lo[0] + h * np.arange(int(math.ceil((hi[0] - lo[0]) / h)) + 1)
    ys = lo[1] + h * np.arange(int(math.ceil((hi[1] - lo[1]) / h)) + 1)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel()], axis=1)
    config, params = case.inputs()[:2]
    logp = np.empty(pts.shape[0])
    for i in range(0, pts.shape[0], chunk):
        v = _as_array(adapter.prior_log_prob(config, params, pts[i:i + chunk].copy()))
        if v.shape != (min(chunk, pts.shape[0] - i),):
            raise ValueError(f"prior_log_prob returned shape {v.shape} for {min(chunk, pts.shape[0] - i)} "
                             "points; expected one value per row of z")
        logp[i:i + chunk] = v
    return {"xs": xs, "ys": ys, "h": h, "logp": logp.reshape(X.shape), "outside": outside}


def _trapezoid(dens, h):
    wx = np.r_[0.5, np.ones(dens.shape[0] - 2), 0.5]
    wy = np.r_[0.5, np.ones(dens.shape[1] - 2), 0.5]
    return float(wx @ dens @ wy) * h * h


def _needs_l2(case, method, adapter):
    if case.config["latent_dim"] != 2:
        return f"needs L = 2 (the case has L = {case.config['latent_dim']})"
    if not callable(getattr(adapter, method, None)):
        return f"the adapter has no {method}()"
    return None


def check_normalisation(adapter, case, profile="float64", grid=None):
    """The adapter's prior density integrates to one (L = 2, trapezoid rule on a grid).

    Tolerance: ``|I - 1| <= floor + factor |I_h - I_2h| + outside + c u sum p |log p| h^2``, i.e. a
    floor (``tolerance("verify_normalisation").floor``), the rule's error estimate times
    ``factor`` = 10 (the rule's error is below |I_h - I_2h|: spectral convergence for Gaussian
    mixtures, O(h^2) with |I_h - I_2h| ~ 3x the error where leaky-ReLU MLPs make the density
    piecewise smooth), the reference prior's mass outside the box (<= 4 Phi(-R), R = 10 sd for
    mixtures, f^-1([-7, 7]^2) for the flow), and the rounding of exp(log p).
    """
    _check_args(adapter, case, profile)
    _check_grid(grid)
    why = _needs_l2(case, "prior_log_prob", adapter)
    if why:
        return CheckResult("normalisation", "skip", why)
    g = _density_grid(adapter, case) if grid is None else grid
    logp, h = g["logp"], g["h"]
    if np.any(np.isnan(logp)) or np.any(logp == np.inf):
        return CheckResult("normalisation", "fail", "prior_log_prob returned NaN or +inf on the grid")
    dens = np.exp(logp)
    integral = _trapezoid(dens, h)
    coarse = _trapezoid(dens[::2, ::2], 2 * h)
    rule = abs(integral - coarse)
    tol = tolerance("verify_normalisation")
    with np.errstate(invalid="ignore"):
        rounding = _c() * _u(profile) * float(np.nansum(dens * np.abs(np.where(dens > 0, logp, 0.0)))) * h * h
    allowed = tol.floor + tol.factor * rule + g["outside"] + rounding
    dev = abs(integral - 1.0)
    details = {"integral": integral, "integral_2h": coarse, "rule_estimate": rule,
               "outside_bound": g["outside"], "rounding": rounding, "h": h,
               "box": [[float(g["xs"][0]), float(g["xs"][-1])], [float(g["ys"][0]), float(g["ys"][-1])]],
               "nodes": int(logp.size)}
    if rule > 1e-3:
        return CheckResult("normalisation", "fail",
                           f"integral {integral:.6f}, but the quadrature did not converge (|I_h - I_2h| = "
                           f"{rule:.1e}): the density is not smooth at the grid scale h = {h:.3g}",
                           dev, allowed, details)
    status = "pass" if dev <= allowed else "fail"
    summary = f"integral of exp(prior_log_prob) over R^2 = {integral:.9f}; |I - 1| = {dev:.2e} "
    summary += f"{'<=' if status == 'pass' else '>'} allowed {allowed:.1e}"
    if status == "fail" and abs(integral - 2 * math.pi) < 0.05 * 2 * math.pi:
        summary += " (the integral is ~2 pi: a dropped -1/2 ln 2 pi per dimension?)"
    return CheckResult("normalisation", status, summary, dev, allowed, details)


def _snapped_edges(marginal, G):
    """Bin edges (node indices) at the marginal's G-quantiles, snapped to node boundaries."""
    cum = np.cumsum(marginal) / max(float(np.sum(marginal)), 1e-300)
    edges = np.unique(np.searchsorted(cum, np.arange(1, G) / G))
    return edges[(edges > 0) & (edges < marginal.size)]


def check_sampler(adapter, case, profile="float64", grid=None, n=20000, seed=0):
    """Pearson chi-square of ``prior_sample`` draws against the adapter's own density (L = 2).

    Cells: 8 x 8 bins at the quantiles of the density's marginals (snapped to grid-node boundaries;
    the outer bins extend to infinity); cell probabilities are the density's node sums over each
    cell, normalised to total 1 (normalisation is the other check). Cells with expected count < 20
    are pooled. Under a correct sampler the statistic is ~chi^2(cells - 1), and the check fails
    when the p-value is below ``tolerances["verify_chi_square"].atol`` = 1e-6 (the false-failure
    probability). With n = 20000, a sampler that uses exp(log_var) as the standard deviation gives
    statistics of 4000-18000 on 63 degrees of freedom on the committed cases (p = 0).
    ``n``: 2 <= n <= :data:`MAX_SAMPLER_DRAWS`.
    """
    from scipy import stats
    _check_args(adapter, case, profile, seed)
    _check_grid(grid)
    n = check_positive_int(n, "n", minimum=2)
    if n > MAX_SAMPLER_DRAWS:
        raise ValueError(f"n = {n} draws is more than the {MAX_SAMPLER_DRAWS} the sampler check "
                         f"allows ({16 * n / 1e9:.1f} GB of (n, 2) draws)")
    why = _needs_l2(case, "prior_sample", adapter) or _needs_l2(case, "prior_log_prob", adapter)
    if why:
        return CheckResult("sampler", "skip", why)
    g = _density_grid(adapter, case) if grid is None else grid
    config, params = case.inputs()[:2]
    z = _as_array(adapter.prior_sample(config, params, n, seed))
    L = config["latent_dim"]
    if z.shape != (n, L):
        return CheckResult("sampler", "fail", f"prior_sample returned shape {z.shape}, expected ({n}, {L})")
    if not np.all(np.isfinite(z)):
        return CheckResult("sampler", "fail", "prior_sample returned non-finite values")
    mass = np.exp(g["logp"])
    mass = mass / mass.sum()
    ex = _snapped_edges(mass.sum(axis=1), 8)
    ey = _snapped_edges(mass.sum(axis=0), 8)
    h, xs, ys = g["h"], g["xs"], g["ys"]
    bx = np.searchsorted(ex, np.arange(xs.size), side="right")
    by = np.searchsorted(ey, np.arange(ys.size), side="right")
    nbx, nby = ex.size + 1, ey.size + 1
    probs = np.zeros((nbx, nby))
    np.add.at(probs, (bx[:, None], by[None, :]), mass)
    ix = np.clip(np.floor((z[:, 0] - (xs[0] - h / 2)) / h).astype(np.int64), 0, xs.size - 1)
    iy = np.clip(np.floor((z[:, 1] - (ys[0] - h / 2)) / h).astype(np.int64), 0, ys.size - 1)
    counts = np.zeros((nbx, nby))
    np.add.at(counts, (bx[ix], by[iy]), 1.0)
    expected, observed = n * probs.ravel(), counts.ravel()
    keep = expected >= 20
    e = np.r_[expected[keep], expected[~keep].sum()]
    o = np.r_[observed[keep], observed[~keep].sum()]
    if e[-1] < 20:  # the pooled cell is too small: merge it into the smallest kept cell
        j = int(np.argmin(e[:-1]))
        e[j] += e[-1]
        o[j] += o[-1]
        e, o = e[:-1], o[:-1]
    stat = float(np.sum((o - e) ** 2 / e))
    dof = e.size - 1
    pvalue = float(stats.chi2.sf(stat, dof))
    alpha = tolerance("verify_chi_square").alpha
    worst = int(np.argmax((o - e) ** 2 / e))
    details = {"n": n, "seed": seed, "cells": int(e.size), "statistic": stat, "dof": dof,
               "p_value": pvalue, "alpha": alpha,
               "worst_cell": {"observed": float(o[worst]), "expected": float(e[worst])}}
    status = "pass" if pvalue >= alpha else "fail"
    summary = (f"chi-square {stat:.1f} on {dof} dof, p = {pvalue:.2e} "
               f"{'>=' if status == 'pass' else '<'} {alpha:.0e} (n = {n}, seed {seed})")
    if status == "fail":
        summary += (f"; the samples do not follow the density (worst cell: {o[worst]:.0f} samples, "
                    f"{e[worst]:.1f} expected)")
    return CheckResult("sampler", status, summary, pvalue, alpha, details)


def check_mixture(adapter, case, profile="float64", outputs=None, n_points=256, seed=0):
    """A mixture prior's ``prior_log_prob`` equals its definition (SPEC 4):
    ``logsumexp_k [log pi_k + log N(z | mu_k, log_var_k)]`` over L-dimensional components.

    The components are the adapter's own ``prior.means``/``prior.log_vars`` (from ``run``) when it
    reports them, else refvae's for the case's parameters; ``log pi = log_softmax(prior.logits)``
    or -ln K. Points: the batch's z, the component means, means +- 3 sd along each axis, and
    ``n_points`` uniform points in the box of means +- 6 sd. Per point the allowed difference is
    ``c u (|f| + sum_k r_k |t_k| + sum_l |df/dz_l| |z_l| + component term)`` with the component
    term ``sum_k r_k (|dt_k/dmu_k| S_mu + |dt_k/dv_k| S_v)`` (golden scales) when refvae's
    components are used. If the adapter reports ``prior.log_weights``, they must be normalised.
    """
    from ..primitives import log_softmax, logsumexp
    _check_args(adapter, case, profile, seed, outputs)
    n_points = check_positive_int(n_points, "n_points", minimum=1)
    if case.prior not in MIXTURE_PRIORS:
        return CheckResult("mixture", "skip", f"not a mixture prior ({case.prior})")
    if not callable(getattr(adapter, "prior_log_prob", None)):
        return CheckResult("mixture", "skip", "the adapter has no prior_log_prob()")
    out = _outputs_or_run(adapter, case, outputs)
    model = case.model()
    ref_means, ref_lv, _ = model.prior.mixture_components(model.params)
    source = "refvae's components (the adapter does not report prior.means and prior.log_vars)"
    means, lv, own = ref_means, ref_lv, False
    if "prior.means" in out and "prior.log_vars" in out:
        m, _ = _conform("prior.means", _as_array(out["prior.means"]), ref_means.shape)
        v, _ = _conform("prior.log_vars", _as_array(out["prior.log_vars"]), ref_lv.shape)
        if m is not None and v is not None and np.all(np.isfinite(m)) and np.all(np.isfinite(v)):
            means, lv, own, source = m, v, True, "the adapter's own prior.means and prior.log_vars"
    K, L = means.shape
    logits = case.params.get("prior.logits")
    log_w = log_softmax(logits) if logits is not None else np.full(K, -math.log(K))
    u, c = _u(profile), _c()
    problems = []
    if "prior.log_weights" in out:
        lw_user, _ = _conform("prior.log_weights", _as_array(out["prior.log_weights"]), (K,))
        if lw_user is not None:
            total = float(logsumexp(lw_user)) if np.all(np.isfinite(lw_user)) else float("nan")
            if not abs(total) <= c * u * (1 + float(np.max(np.abs(lw_user)))):
                problems.append(f"prior.log_weights are not normalised: logsumexp = {total:.6g} "
                                f"(mixture logits used without log_softmax?)")
    sd = np.exp(0.5 * lv)
    rng = np.random.default_rng(seed)
    lo, hi = (means - 6 * sd).min(axis=0), (means + 6 * sd).max(axis=0)
    pts = [case.values["z"], means]
    for j in range(L):
        for sgn in (-3.0, 3.0):
            p = means.copy()
            p[:, j] += sgn * sd[:, j]
            pts.append(p)
    pts.append(lo + (hi - lo) * rng.random((n_points, L)))
    z = np.concatenate(pts)
    config, params = case.inputs()[:2]
    got = _as_array(adapter.prior_log_prob(config, params, z.copy()))
    if got.shape != (z.shape[0],):
        return CheckResult("mixture", "fail", f"prior_log_prob returned shape {got.shape} for "
                           f"{z.shape[0]} points")
    diff = z[:, None, :] - means[None]
    q = diff * diff * np.exp(-lv)[None]
    comp = -0.5 * np.sum(math.log(2 * math.pi) + lv[None] + q, axis=-1)
    t = log_w[None] + comp
    f = logsumexp(t, axis=-1)
    r = np.exp(t - f[:, None])
    dfdz = -np.sum(r[:, :, None] * diff * np.exp(-lv)[None], axis=1)
    scale = (np.abs(f) + np.sum(r * np.abs(t), axis=1) + np.sum(np.abs(dfdz * z), axis=1)
             + np.sum(r * (np.abs(log_w)[None]), axis=1))
    if not own:
        s_mu = case.scales["prior.means"] + np.abs(case.values["prior.means"])
        s_v = case.scales["prior.log_vars"] + np.abs(case.values["prior.log_vars"])
        dt_dmu = np.abs(diff * np.exp(-lv)[None])
        dt_dv = 0.5 * np.abs(q - 1)
        scale = scale + np.sum(r[:, :, None] * (dt_dmu * s_mu[None] + dt_dv * s_v[None]), axis=(1, 2))
    allowed = c * u * scale
    err = np.where(np.isfinite(got), np.abs(got - f), np.inf)
    i = int(np.argmax(err / allowed))
    details = {"components": source, "points": int(z.shape[0]), "worst_z": z[i].tolist(),
               "expected": float(f[i]), "got": float(got[i]), "allowed": float(allowed[i]),
               "max_abs": float(err.max())}
    if np.any(err > allowed):
        n_bad = int(np.sum(err > allowed))
        summary = (f"prior_log_prob differs from the mixture's definition at {n_bad} of {z.shape[0]} "
                   f"points (worst z = {np.round(z[i], 4).tolist()}: definition {f[i]:.10g}, got "
                   f"{got[i]:.10g}, |diff| {err[i]:.2e} > allowed {allowed[i]:.1e}); components: "
                   f"{source}")
        # a per-dimension mixture (a product over l of 1-D mixtures) is a common slip: say so
        per_dim = np.sum(logsumexp(log_w[None, :, None] - 0.5 * (math.log(2 * math.pi) + lv[None]
                                                                 + q), axis=1), axis=-1)
        if np.max(np.abs(got - per_dim)) <= 1e-6 * (1 + np.max(np.abs(per_dim))):
            summary += ("; it equals a product of per-dimension mixtures (logsumexp over k per l, "
                        "then a sum over l)")
        unnorm = logsumexp((logits if logits is not None else np.zeros(K))[None] + comp, axis=-1)
        if logits is not None and np.max(np.abs(got - unnorm)) <= 1e-6 * (1 + np.max(np.abs(unnorm))):
            summary += "; it equals the mixture with unnormalised logits (log_softmax missing)"
        problems.insert(0, summary)
    if problems:
        return CheckResult("mixture", "fail", "; ".join(problems), float(err[i]), float(allowed[i]), details)
    return CheckResult("mixture", "pass", f"prior_log_prob equals the definition at {z.shape[0]} points "
                       f"(worst |diff| / allowed = {float(np.max(err / allowed)):.2g}; components: {source})",
                       float(err[i]), float(allowed[i]), details)


def check_nll(adapter, case, profile="float64", outputs=None, seed=0):
    """A reported NLL against the exact -ln p(x), refvae's importance-sampled estimate, and the
    expected negative ELBO.

    References stored with the case: ``reference.nll`` (exact for L = 2: the trapezoid rule over
    the prior's box, to 1e-4 nats), ``reference.nll_is`` with ``nll_is_se`` (refvae's
    importance-sampled estimate, S = 20000 proposals from q(z|x)) and
    ``reference.neg_elbo_expectation`` (E_q[neg_elbo], Monte Carlo over the same draws).
    Compared as batch means. The NLL passes when ``|nll - exact| <= k sqrt(2) se + atol``
    (``tolerances["verify_nll"]``: k = 5, se the standard error of refvae's estimate of the batch
    mean, sqrt(2) for an estimate of the same size on the adapter's side, atol for the upward
    bias of an importance-sampled NLL with fewer proposals). A value that equals the adapter's own
    single-sample ``neg_elbo`` to rounding, or that is closer to the expected negative ELBO than
    to the NLL, is reported as a negative ELBO labelled NLL.
    """
    _check_args(adapter, case, profile, seed, outputs)
    out = _outputs_or_run(adapter, case, outputs)
    config, params, x = case.inputs()[:3]
    if "nll" in out:
        src = "run()['nll']"
        nll = out["nll"]
    elif callable(getattr(adapter, "nll", None)):
        src = "nll()"
        nll = adapter.nll(config, params, x, seed)
    else:
        return CheckResult("nll", "skip", "the adapter reports no 'nll' and has no nll()")
    nll, note = _conform("nll", _as_array(nll), (case.x.shape[0],))
    if nll is None:
        return CheckResult("nll", "fail", f"nll: {note}")
    if not np.all(np.isfinite(nll)):
        return CheckResult("nll", "fail", f"nll is not finite: {nll.tolist()}")
    ref = case.references
    tol = tolerance("verify_nll")
    B = nll.size
    se = float(np.sqrt(np.sum(ref["nll_is_se"] ** 2))) / B
    allowed = tol.k * math.sqrt(2.0) * se + tol.slack
    m_user, m_ref = float(np.mean(nll)), float(np.mean(ref["nll"]))
    m_is, m_elbo = float(np.mean(ref["nll_is"])), float(np.mean(ref["neg_elbo_expectation"]))
    refs = (f"exact NLL {m_ref:.4f}, refvae's importance-sampled {m_is:.4f} +- {se:.4f}, "
            f"expected negative ELBO {m_elbo:.4f}")
    details = {"source": src, "nll": nll.tolist(), "exact_nll": ref["nll"].tolist(),
               "importance_sampled_nll": ref["nll_is"].tolist(),
               "importance_sampled_se": ref["nll_is_se"].tolist(),
               "expected_neg_elbo": ref["neg_elbo_expectation"].tolist(), "mean": m_user,
               "exact_mean": m_ref, "importance_sampled_mean": m_is, "expected_neg_elbo_mean": m_elbo,
               "allowed": allowed}
    if "neg_elbo" in out:
        own = _conform("neg_elbo", _as_array(out["neg_elbo"]), (B,))[0]
        if own is not None and np.allclose(nll, own, rtol=_c() * _u(profile), atol=0.0):
            return CheckResult("nll", "fail",
                               f"'nll' (mean {m_user:.4f}) equals this implementation's own single-sample "
                               f"neg_elbo: a negative ELBO reported as an NLL ({refs})",
                               abs(m_user - m_ref), allowed, details)
    d_nll, d_elbo = abs(m_user - m_ref), abs(m_user - m_elbo)
    if d_nll <= allowed:
        summary = f"mean nll {m_user:.4f}, |diff| {d_nll:.3f} <= {allowed:.3f} ({refs})"
        if m_elbo - m_ref < 2 * allowed:
            summary += "; here the NLL and the negative ELBO are too close to tell a mislabelled ELBO apart"
        return CheckResult("nll", "pass", summary, d_nll, allowed, details)
    if d_elbo < d_nll:
        what = ("matches the expected negative ELBO" if d_elbo <= allowed
                else "is closer to the expected negative ELBO than to the NLL")
        return CheckResult("nll", "fail",
                           f"'nll' (mean {m_user:.4f}) is a negative ELBO, not an NLL: it {what} "
                           f"(|diff| {d_elbo:.3f}; {refs}; |nll - exact| = {d_nll:.3f} > {allowed:.3f}). "
                           "An importance-sampled estimate with too few proposals drifts the same way",
                           d_nll, allowed, details)
    return CheckResult("nll", "fail", f"'nll' (mean {m_user:.4f}) differs from the exact NLL by "
                       f"{d_nll:.3f} > {allowed:.3f} ({refs})", d_nll, allowed, details)


def _check_prior_sample_from(adapter, case, profile, pos):
    """The adapter's ``prior_sample_from`` on the case's draws against ``prior_sample.z``."""
    name = "prior_sample.z"
    noise = {"eps": case.draws["prior_sample.eps"].copy()}
    if "prior_sample.index" in case.draws:
        noise["index"] = case.draws["prior_sample.index"].copy()
    config, params = case.inputs()[:2]
    q = compare_case({name: adapter.prior_sample_from(config, params, noise)}, _Sub(case, name),
                     profile)[0]
    q.position = pos
    return q


class _Sub:
    """A view of a case restricted to one quantity (for :func:`compare_case`)."""

    def __init__(self, case, name):
        self.values = {name: case.values[name]}
        self.order = [name]
        self._case = case

    def allowed(self, name, profile):
        return self._case.allowed(name, profile)


# =========================================================================== known deviations

def load_known_deviations(path):
    """Read a known-deviations file: a JSON list of ``{"case", "quantity", "reason"}`` objects.

    ``case`` and ``quantity`` are fnmatch patterns (``"*"``, ``"grad.prior.*"``); a check is named
    ``check.<name>`` (``check.nll``). ``reason`` must be a non-empty string. Anything else is a
    ``ValueError`` naming the file and the entry.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path of the known-deviations file must be a path, got {type(path).__name__}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the known-deviations file: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: not JSON (or nested too deeply): {exc}") from None
    return validate_known_deviations(data, path)


def validate_known_deviations(data, where="known deviations"):
    if not isinstance(data, list):
        raise ValueError(f"{where}: must be a JSON list of {{case, quantity, reason}} objects")
    out = []
    for i, e in enumerate(data):
        if not isinstance(e, dict) or set(e) != {"case", "quantity", "reason"}:
            raise ValueError(f"{where}: entry {i} must be an object with exactly the keys case, "
                             f"quantity, reason; got {e!r}")
        if not all(isinstance(e[k], str) and e[k].strip() for k in ("case", "quantity", "reason")):
            raise ValueError(f"{where}: entry {i}: case, quantity and reason must be non-empty strings")
        out.append(dict(e))
    return out


def _known(known, case, quantity):
    for e in known:
        if fnmatch.fnmatchcase(case, e["case"]) and fnmatch.fnmatchcase(quantity, e["quantity"]):
            return e
    return None


# =========================================================================== the run

@dataclass
class VerifyReport:
    impl: str | None
    adapter: str
    profile: str
    cases_dir: str
    results: list
    known_deviations: list
    checks: tuple
    seconds: float
    provenance: dict

    @property
    def passed(self):
        return all(r.passed for r in self.results)

    def case(self, name):
        for r in self.results:
            if r.case == name:
                return r
        raise KeyError(name)

    def to_dict(self):
        """The JSON report (schema ``refvae-verify-report/1``)."""
        def q(x):
            d = asdict(x)
            d["failed"] = x.failed
            return d
        return {
            "schema": SCHEMA, "passed": self.passed, "impl": self.impl, "adapter": self.adapter,
            "profile": self.profile, "unit_roundoff": _golden.PROFILE_ROUNDOFF[self.profile],
            "c": _c(), "tolerance_formula": "|actual - expected| <= c * u * (scale + |expected|) + tiny",
            "cases_dir": self.cases_dir, "checks": list(self.checks),
            "known_deviations": self.known_deviations, "seconds": self.seconds,
            "summary": {"cases": len(self.results),
                        "passed": sum(r.passed for r in self.results),
                        "failed": [r.case for r in self.results if not r.passed]},
            "cases": [{"case": r.case, "path": r.path, "passed": r.passed,
                       "first_divergence": r.first_divergence, "error": r.error,
                       "ignored_outputs": r.ignored, "seconds": r.seconds,
                       "quantities": [q(x) for x in r.quantities],
                       "checks": [q(x) for x in r.checks]} for r in self.results],
            "provenance": self.provenance,
        }

    def write_json(self, path):
        text = json.dumps(_jsonable(self.to_dict()), indent=1, allow_nan=False) + "\n"
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        _atomic_write_bytes(os.path.abspath(path), text.encode("utf-8"))
        return path

    def format(self, verbose=False):
        """The human-readable report (what ``refvae verify`` prints)."""
        u = _golden.PROFILE_ROUNDOFF[self.profile]
        lines = [f"refvae verify: {self.impl or self.adapter}, profile {self.profile} "
                 f"(u = 2^{int(round(math.log2(u)))}, c = {_c():g}), {len(self.results)} golden "
                 f"case(s) from {self.cases_dir}",
                 "tolerance per element: |got - expected| <= c u (S + |expected|), S the condition "
                 "scale stored with the case", ""]
        for r in self.results:
            lines += _format_case(r, verbose)
        n_pass = sum(r.passed for r in self.results)
        skipped = {}
        for r in self.results:
            for c in r.checks:
                if c.status == "skip":
                    skipped.setdefault(c.name, c.summary)
        lines.append("")
        if skipped:
            lines.append("checks not run: " + "; ".join(f"{k} ({v})" for k, v in sorted(skipped.items())))
        known = [(r.case, x.name, x.reason) for r in self.results for x in r.quantities + r.checks
                 if x.status == "known"]
        if known:
            lines.append(f"known deviations ({len(known)}): " + "; ".join(
                f"{c}/{n}: {why}" for c, n, why in known))
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(f"{verdict}: {n_pass} of {len(self.results)} case(s) pass"
                     + ("" if self.passed else "; failing: " + ", ".join(
                         f"{r.case} ({_short(r)})" for r in self.results if not r.passed))
                     + f" [{self.seconds:.1f} s]")
        return "\n".join(lines)


def _short(r):
    if r.error:
        return "adapter error"
    parts = []
    if r.first_divergence:
        parts.append(f"first divergence {r.first_divergence}")
    parts += [f"check {c}" for c in r.failed_checks]
    return ", ".join(parts)


def _g(x, spec=".3e"):
    return "-" if x is None else (f"{x:{spec}}" if math.isfinite(x) else str(x))


def _format_case(r, verbose):
    reported = [q for q in r.quantities if q.status != "missing"]
    lines = []
    if r.error:
        lines.append(f"FAIL  {r.case}: the adapter raised an error")
        lines += ["      " + s for s in r.error.rstrip().splitlines()[-6:]]
        return lines
    bad = [q for q in r.quantities if q.failed]
    worst = max((q for q in reported if q.ratio is not None and q.status == "pass"),
                key=lambda q: q.ratio, default=None)
    head = "PASS" if r.passed else "FAIL"
    if not bad:
        msg = f"{len(reported)} of {len(r.quantities)} quantities reported, all within tolerance"
        if worst is not None:
            msg += f" (closest: {worst.name} at {worst.ratio:.2g} of allowed)"
    else:
        first = r.quantity(r.first_divergence)
        msg = (f"first divergence at {first.name} (position {first.position + 1} of "
               f"{len(r.quantities)} in data-flow order; every reported quantity before it agrees)")
    lines.append(f"{head}  {r.case}: {msg}")
    if bad or verbose:
        lines.append(f"      {'quantity':<28} {'status':<9} {'max|diff|':>10} {'max rel':>9} "
                     f"{'/allowed':>9}  {'worst at':<9} {'expected':>14} {'got':>14}")
        show = reported if verbose else bad[:6]
        for q in show:
            lines.append(f"      {q.name:<28} {q.status:<9} {_g(q.max_abs, '.2e'):>10} "
                         f"{_g(q.max_rel, '.1e'):>9} {_g(q.ratio, '.1e'):>9}  "
                         f"{(_fmt_index(q.index) if q.index is not None else '-'):<9} "
                         f"{_g(q.expected, '.7g'):>14} {_g(q.actual, '.7g'):>14}"
                         + (f"  {q.message}" if q.message else ""))
        if not verbose and len(bad) > 6:
            lines.append(f"      ... and {len(bad) - 6} more later in data-flow order: "
                         + ", ".join(q.name for q in bad[6:14]) + (", ..." if len(bad) > 14 else ""))
    for q in r.quantities:
        if q.status == "known":
            lines.append(f"      known deviation {q.name}: {q.reason}")
    if r.ignored:
        lines.append(f"      ignored (not quantities of this case): {', '.join(r.ignored)}")
    for c in r.checks:
        if c.status == "skip" and not verbose:
            continue
        lines.append(f"      check {c.name:<13} {c.status.upper():<5} {c.summary}"
                     + (f" [known: {c.reason}]" if c.reason else ""))
    repros = ([(q.name, q.reproduction) for q in r.quantities if q.failed and q.name == r.first_divergence]
              + [("check " + c.name, c.reproduction) for c in r.checks if c.failed and c.reproduction])
    for what, code in repros:
        lines.append(f"      reproduce ({what}):")
        lines += ["        " + s for s in code.rstrip().splitlines()]
    return lines


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else str(v)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def _adapter_name(adapter, impl):
    name = getattr(adapter, "name", None)
    return str(name) if name else (impl or type(adapter).__name__)


def run(adapter, cases=None, profile="float64", known_deviations=None, checks=CHECKS,
        prior_checks="once", json_out=None, impl=None, seed=0, say=None,
        checksums=True) -> VerifyReport:
    """Run the golden comparison and the checks; return a :class:`VerifyReport`.

    Parameters
    ----------
    adapter : the object a factory returns (or an ``impl`` spec string, loaded with
        :func:`load_adapter`).
    cases : None (the committed cases), a directory of cases, or a list of case names/paths/
        :class:`~refvae.tools.golden.GoldenCase` objects.
    profile : ``"float64"`` or ``"float32"``.
    known_deviations : None, a path, or a list of ``{case, quantity, reason}``.
    checks : which of :data:`CHECKS` to run.
    prior_checks : ``"once"`` (normalisation, sampler and mixture checks on the first selected case
        of each prior) or ``"all"`` (on every case).
    json_out : path of the JSON report (optional).
    impl : the factory spec, for the report and the reproduction snippets.
    seed : seed of the checks' random draws (directions, samples).
    say : callable for progress lines (e.g. ``print``), optional.
    checksums : bool (default True). Check every case read from disk against the ``SHA256SUMS``
        of its directory before anything runs (:func:`refvae.tools.golden.require_checksums`): a file
        that does not match is a ``ValueError`` "corrupt golden case <name>: <file> does not match
        SHA256SUMS" (the case is at fault, not the adapter), and so is a missing ``SHA256SUMS``.
        ``False`` uses the cases unchecked. Cases given as ``GoldenCase`` objects are not files.
    """
    t0 = time.perf_counter()
    check_choice(profile, "profile", PROFILES)
    check_choice(prior_checks, "prior_checks", ("once", "all"))
    if isinstance(checks, str) or not isinstance(checks, (list, tuple)):
        raise TypeError(f"checks must be a list of names from {CHECKS}, got {type(checks).__name__}")
    checks = tuple(checks)
    if not checks:
        raise ValueError(f"checks must name at least one of {', '.join(CHECKS)}; got none")
    for c in checks:
        check_choice(c, "check", CHECKS)
    seed = _check_seed(seed)
    if isinstance(adapter, str):
        impl = impl or adapter
        try:
            adapter = load_adapter(adapter)
        except ValueError as exc:
            raise ValueError(f"adapter {adapter!r}: {exc}") from None
    _runner(adapter)
    if known_deviations is None:
        known = []
    elif isinstance(known_deviations, (str, os.PathLike)):
        known = load_known_deviations(known_deviations)
    else:
        known = validate_known_deviations(known_deviations)
    if not isinstance(checksums, bool):
        raise TypeError(f"checksums must be True or False, got {type(checksums).__name__}")
    cases_dir, case_list = _resolve_cases(cases, checksums)
    results, seen_priors = [], set()
    for case in case_list:
        t1 = time.perf_counter()
        res = CaseResult(case.name, case.path or "")
        results.append(res)
        try:
            out = call_adapter(adapter, case)
        except Exception:  # noqa: BLE001 - the adapter's own error is part of the report
            res.error = traceback.format_exc(limit=4)
            res.seconds = time.perf_counter() - t1
            continue
        res.ignored = sorted(k for k in out if k not in case.values and k != "nll")
        if "golden" in checks:
            res.quantities = compare_case(out, case, profile)
            if callable(getattr(adapter, "prior_sample_from", None)) and "prior_sample.z" in case.values:
                pos = case.order.index("prior_sample.z")
                try:
                    res.quantities[pos] = _check_prior_sample_from(adapter, case, profile, pos)
                except Exception as exc:  # noqa: BLE001
                    res.quantities[pos] = QuantityResult("prior_sample.z", pos, "fail",
                                                         message=f"prior_sample_from raised {exc!r}")
            if all(q.status == "missing" for q in res.quantities):
                res.quantities.append(QuantityResult(
                    "(any)", len(res.quantities), "fail",
                    message="the adapter reported none of the case's quantities "
                            f"(it returned {sorted(out)[:8]})"))
        do_prior = prior_checks == "all" or case.prior not in seen_priors
        seen_priors.add(case.prior)
        res.checks = _run_checks(adapter, case, profile, checks, out, do_prior, seed)
        _apply_known(res, known)
        res.first_divergence = _first_divergence(res.quantities)
        for q in res.quantities:
            if q.failed:
                q.reproduction = _repro_quantity(impl, case, q.name, profile, q.status)
        for c in res.checks:
            if c.failed:
                kw = {"seed": seed} if c.name in ("gradient", "sampler", "nll") else {}
                c.reproduction = _repro_check(impl, case, c.name, profile, **kw)
        res.seconds = time.perf_counter() - t1
        if say is not None:
            say(f"{'PASS' if res.passed else 'FAIL'}  {case.name} ({res.seconds:.1f} s)")
    from .provenance import provenance
    prov = provenance()
    prov["adapter"] = _adapter_name(adapter, impl)
    prov["seed"] = seed
    for mod in ("torch", "jax"):
        if mod in sys.modules:
            prov[f"{mod}_version"] = getattr(sys.modules[mod], "__version__", None)
    report = VerifyReport(impl, _adapter_name(adapter, impl), profile, cases_dir, results, known,
                          checks, time.perf_counter() - t0, prov)
    if json_out:
        report.write_json(json_out)
    return report


def _checked(path, checksums):
    """``load_case(path)`` after checking the case's files against its directory's SHA256SUMS."""
    if checksums:
        full = os.path.abspath(path)
        _golden.require_checksums(os.path.dirname(full), [os.path.basename(full)])
    return _golden.load_case(path)


def _resolve_cases(cases, checksums=True):
    if cases is None or isinstance(cases, (str, os.PathLike)):
        directory = _golden.golden_dir() if cases is None else os.fspath(cases)
        if os.path.isfile(os.path.join(directory, _golden.MANIFEST_FILE)):
            return os.path.dirname(os.path.abspath(directory)), [_checked(directory, checksums)]
        paths = _golden.list_cases(directory)
        if checksums:  # every case of the directory, and nothing listed may be missing
            _golden.require_checksums(directory)
        return os.path.abspath(directory), [_golden.load_case(p) for p in paths]
    if not isinstance(cases, (list, tuple)):
        raise TypeError(f"cases must be None, a directory, or a list of case names/paths/GoldenCase "
                        f"objects, got {type(cases).__name__}")
    if not cases:
        raise ValueError("cases must not be empty: no golden case to verify against")
    out = []
    for c in cases:
        if isinstance(c, _golden.GoldenCase):
            out.append(c)
        elif isinstance(c, (str, os.PathLike)):
            p = os.fspath(c)
            out.append(_checked(p if os.path.isdir(p) else os.path.join(_golden.golden_dir(), p),
                                checksums))
        else:
            raise TypeError(f"cases[{len(out)}] must be a case name, a path or a GoldenCase, got "
                            f"{type(c).__name__}")
    dirs = {os.path.dirname(c.path) for c in out if c.path}
    return (dirs.pop() if len(dirs) == 1 else "(several)"), out


def _run_checks(adapter, case, profile, checks, out, do_prior, seed):
    results = []

    def guarded(name, fn):
        try:
            results.append(fn())
        except Exception as exc:  # noqa: BLE001 - an adapter error inside a check is a failure
            results.append(CheckResult(name, "error", f"raised {type(exc).__name__}: {exc}",
                                       details={"traceback": traceback.format_exc(limit=4)}))

    if "gradient" in checks:
        guarded("gradient", lambda: check_gradient(adapter, case, profile, seed, outputs=out))
    grid = {}

    def shared_grid():
        if "g" not in grid:
            grid["g"] = _density_grid(adapter, case)
        return grid["g"]

    if do_prior and "normalisation" in checks:
        guarded("normalisation", lambda: (
            check_normalisation(adapter, case, profile) if _needs_l2(case, "prior_log_prob", adapter)
            else check_normalisation(adapter, case, profile, grid=shared_grid())))
    if do_prior and "sampler" in checks:
        guarded("sampler", lambda: (
            check_sampler(adapter, case, profile, seed=seed)
            if (_needs_l2(case, "prior_sample", adapter) or _needs_l2(case, "prior_log_prob", adapter))
            else check_sampler(adapter, case, profile, grid=shared_grid(), seed=seed)))
    if do_prior and "mixture" in checks and case.prior in MIXTURE_PRIORS:
        guarded("mixture", lambda: check_mixture(adapter, case, profile, outputs=out, seed=seed))
    if "nll" in checks:
        guarded("nll", lambda: check_nll(adapter, case, profile, outputs=out, seed=seed))
    return results


def _apply_known(res, known):
    for x in res.quantities:
        e = _known(known, res.case, x.name)
        if e is not None and x.failed:
            x.status, x.reason = "known", e["reason"]
    for c in res.checks:
        e = _known(known, res.case, f"check.{c.name}")
        if e is not None and c.failed:
            c.status, c.reason = "known", e["reason"]
