"""Gradient verification for any ``(f, vjp)`` pair: yours or refvae's.

Three checks, from cheapest to most instructive:

``check_vjp``
    The random-direction VJP check. For a random cotangent ``v`` (shape of ``f``'s output) and a
    random direction ``u`` (shape of one input ``x``), a correct VJP satisfies
    ``<vjp(v), u> = d/dt <v, f(x + t u)> |_{t=0}``. The right side is a scalar function of one
    variable, estimated by central differences ``(phi(h) - phi(-h)) / 2h``; one check costs two
    evaluations of ``f`` per input, whatever the input's size. Each input is checked in its own
    direction so that the report names the worst one.

    *Step size.* Central differences have truncation error ``h**2 |phi'''| / 6`` and rounding
    error about ``eps |phi| / h``; their sum is smallest at ``h ~ eps**(1/3) * scale``, where
    ``scale`` is the length over which ``f`` changes (the RMS of ``x``, at least 1), giving a
    relative error ~ ``eps**(2/3) ~ 4e-11``. With ``method="richardson"`` the estimates at ``h``
    and ``h/2`` are combined, ``(4 D(h/2) - D(h)) / 3``, cancelling the ``h**2`` term; the error
    is then ``O(h**4) + O(eps/h)``, smallest at ``h ~ eps**(1/5) * scale`` (~1e-13 relative).

``check_vjp_complex``
    The complex-step derivative ``Im <v, f(x + i h u)> / h`` with ``h = 1e-30``: no subtraction,
    hence no cancellation, so it agrees with a correct VJP to rounding. Only for code paths that
    are analytic and accept complex input (no ``abs``, ``max`` or comparisons on the value).

``check_elementwise``
    For teaching: perturbs individual entries one at a time and prints a table of analytic and
    numerical partial derivatives side by side.

Settings and vacuous checks
---------------------------
Meaningless settings are a ``ValueError``/``TypeError`` naming the setting before anything runs:
``n_directions`` and ``max_entries`` must be integers >= 1, ``step`` a finite number > 0, ``rtol``
a finite number in [0, 1) (a relative tolerance >= 1 passes a zero gradient:
``|0 - numeric| <= 1 * |numeric|``), ``f`` and ``vjp`` callables, ``args`` non-empty and ``wrt``
(when given) non-empty, and the inputs real and free of NaN (complex input is a ``TypeError``: the
complex-step check ``check_vjp_complex`` takes a *real* point and adds the imaginary step itself).
When the selected inputs are all empty arrays there is nothing to check: the report does *not*
pass (``passed`` is False, ``reason`` says why, ``worst`` is None, ``max_rel_err`` is inf and
``raise_if_failed`` raises).

Calling conventions
-------------------
``args`` is either a tuple of arrays, with ``f(*args)`` and ``vjp(g, *args)`` returning a tuple
(one gradient per argument, ``None`` for an argument without one), or a ``dict`` of named arrays
(a parameter dict), with ``f(args)`` and ``vjp(g, args)`` returning a dict with the same keys.
``f`` may return an array of any shape, including a scalar.

See also: docs/course/09-checking-gradients.md (random directions, the step size, the complex step,
rounding floors, kinks, and how a check can lie, with numbers).

Example
-------
>>> import numpy as np
>>> from refvae.gradcheck import check_vjp
>>> f = lambda x: np.sin(x) * x
>>> vjp = lambda g, x: (g * (np.cos(x) * x + np.sin(x)),)
>>> report = check_vjp(f, vjp, (np.linspace(0, 1, 5),), rng=np.random.default_rng(0))
>>> report.passed
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import math

import numpy as np

from ._validation import check_positive_int, check_real, check_rng
from .tolerances import EPS, tolerance

__all__ = ["check_vjp", "check_vjp_complex", "check_elementwise", "GradcheckReport",
           "GradcheckEntry", "GradcheckError"]


class GradcheckError(AssertionError):
    """Raised by :meth:`GradcheckReport.raise_if_failed`."""


@dataclass
class GradcheckEntry:
    """The check of one input: analytic and numerical directional derivatives."""

    name: str
    analytic: float
    numeric: float
    abs_err: float
    rel_err: float
    allowed: float  #: largest abs_err that passes: rtol * max(|analytic|, |numeric|) + noise floor
    step: float
    passed: bool


@dataclass
class GradcheckReport:
    """Result of a gradient check: one entry per checked input (and direction)."""

    method: str
    rtol: float
    entries: list = field(default_factory=list)
    #: why nothing was checked (an empty report never passes); empty when there are entries
    reason: str = ""

    @property
    def passed(self) -> bool:
        """True iff there is at least one entry and every entry passed (a check that checked
        nothing does not pass)."""
        return bool(self.entries) and all(e.passed for e in self.entries)

    @property
    def worst(self):
        """The entry with the largest relative error (failed entries first); None if empty."""
        if not self.entries:
            return None
        return max(self.entries, key=lambda e: (not e.passed, e.rel_err))

    @property
    def max_rel_err(self) -> float:
        """The largest relative error; ``inf`` for an empty report (nothing was shown to agree)."""
        return max((e.rel_err for e in self.entries), default=math.inf)

    def by_name(self) -> dict:
        """Largest relative error per input name."""
        out: dict = {}
        for e in self.entries:
            out[e.name] = max(out.get(e.name, 0.0), e.rel_err)
        return out

    def __str__(self) -> str:
        if not self.entries:
            return (f"gradient check ({self.method}, rtol={self.rtol:.1e}): NOT PASSED: nothing was "
                    f"checked ({self.reason or 'no entries'})")
        lines = [f"gradient check ({self.method}, rtol={self.rtol:.1e}): "
                 f"{'PASSED' if self.passed else 'FAILED'}; worst: {self.worst.name} "
                 f"rel err {self.worst.rel_err:.3e}",
                 f"{'input':<28} {'analytic':>14} {'numeric':>14} {'abs err':>10} {'rel err':>10}  ok"]
        for e in self.entries:
            lines.append(f"{e.name:<28} {e.analytic:>14.6e} {e.numeric:>14.6e} {e.abs_err:>10.2e} "
                         f"{e.rel_err:>10.2e}  {'yes' if e.passed else 'NO'}")
        return "\n".join(lines)

    def raise_if_failed(self):
        if not self.passed:
            raise GradcheckError(str(self))
        return self


# --------------------------------------------------------------------------- plumbing

def _as_named(args):
    """Return (names, arrays, is_dict) for a tuple or dict of inputs."""
    if isinstance(args, dict):
        names = list(args)
        return names, [np.asarray(args[k]) for k in names], True
    if isinstance(args, (tuple, list)):
        return [f"arg{i}" for i in range(len(args))], [np.asarray(a) for a in args], False
    raise TypeError(f"args must be a tuple of arrays or a dict of named arrays, got {type(args).__name__}")


def _real_inputs(names, arrays):
    """float64 copies of the inputs; complex, str or object inputs are a TypeError naming them,
    NaN a ValueError (+-inf is kept: a -inf log-weight is a legal input)."""
    if not names:
        raise ValueError("args is empty: there are no inputs to check (pass a tuple or dict of arrays)")
    out = []
    for n, a in zip(names, arrays):
        if np.iscomplexobj(a):
            raise TypeError(f"input {n} is complex ({a.dtype}); the checks take a real point (for a "
                            "complex-step check pass the real point to check_vjp_complex, which adds "
                            "the imaginary step itself)")
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise TypeError(f"input {n} must be an array of real numbers, got dtype {a.dtype}")
        a = np.array(a, dtype=np.float64)
        if np.isnan(a).any():
            idx = tuple(int(i) for i in np.argwhere(np.isnan(a))[0])
            raise ValueError(f"input {n} of args contains NaN at index {idx}; choose a point where the "
                             "inputs are numbers")
        out.append(a)
    return out


def _check_callables(f, vjp):
    for name, fn in (("f", f), ("vjp", vjp)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__} {fn!r:.60}")


def _check_settings(step=None, rtol=None):
    """Validate a step override (finite > 0) and rtol (finite, in [0, 1))."""
    if step is not None:
        step = check_real(step, "step", lo=0.0, lo_open=True)
    if rtol is not None:
        rtol = check_real(rtol, "rtol", lo=0.0, hi=1.0, hi_open=True)
    return step, rtol


def _empty_reason(names, todo, arrays):
    """Why a check would check nothing ('' if there is something to check)."""
    if all(arrays[names.index(n)].size == 0 for n in todo):
        return f"the selected inputs {todo} are all empty arrays"
    return ""


def _call(f, names, arrays, is_dict):
    return f(dict(zip(names, arrays))) if is_dict else f(*arrays)


def _call_vjp(vjp, g, names, arrays, is_dict):
    out = vjp(g, dict(zip(names, arrays))) if is_dict else vjp(g, *arrays)
    if is_dict:
        if not isinstance(out, dict):
            raise TypeError(f"vjp must return a dict of gradients, got {type(out).__name__}")
        extra = set(out) - set(names)
        if extra:
            raise ValueError(f"vjp returned gradients for unknown inputs: {sorted(extra)}")
        return [out.get(k) for k in names]
    if not isinstance(out, (tuple, list)):
        out = (out,)
    if len(out) != len(names):
        raise ValueError(f"vjp returned {len(out)} gradients for {len(names)} arguments")
    return list(out)


def _select(names, wrt):
    if wrt is None:
        return list(names)
    if not (isinstance(wrt, str) or hasattr(wrt, "__iter__")):
        raise TypeError(f"wrt must be an input name or a list of names, got {type(wrt).__name__}")
    wrt = [wrt] if isinstance(wrt, str) else list(wrt)
    if not wrt:
        raise ValueError(f"wrt is empty: it selects none of the inputs {names} (None checks all)")
    unknown = [w for w in wrt if w not in names]
    if unknown:
        raise ValueError(f"wrt names {unknown} are not among the inputs {names}")
    return wrt


def _scale(x):
    """RMS of the finite entries of x, at least 1 (a -inf log-weight must not make the step inf).

    Computed as ``m sqrt(mean((x/m)^2))`` with ``m = max|x|``, so that x ~ 1e300 does not
    overflow the squares."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if not x.size:
        return 1.0
    m = float(np.max(np.abs(x)))
    if m == 0.0:
        return 1.0
    y = x / m
    return max(1.0, m * float(np.sqrt(np.mean(y * y))))


def _setup(f, vjp, args, rng, wrt):
    _check_callables(f, vjp)
    check_rng(rng)
    names, arrays, is_dict = _as_named(args)
    arrays = _real_inputs(names, arrays)
    _select(names, wrt)   # settings first: before f runs
    out = np.asarray(_call(f, names, arrays, is_dict))
    if np.iscomplexobj(out):
        raise TypeError(f"f returned a complex value ({out.dtype}) at a real point; the checks need a "
                        "real-valued f")
    out = np.asarray(out, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError("f returned non-finite values at the check point; choose a point where f is finite")
    v = rng.standard_normal(out.shape)
    grads = _call_vjp(vjp, v, names, arrays, is_dict)
    return names, arrays, is_dict, v, grads, _select(names, wrt)


def _grad_of(grads, names, name, x):
    g = grads[names.index(name)]
    if g is None:
        return np.zeros_like(x)
    g = np.asarray(g, dtype=np.float64)
    if g.shape != x.shape:
        raise ValueError(f"gradient for {name} has shape {g.shape}, expected the input's shape {x.shape}")
    return g


# --------------------------------------------------------------------------- checks

def check_vjp(f, vjp, args, *, rng, wrt=None, method="central", step=None, rtol=None,
              n_directions=1) -> GradcheckReport:
    """Random-direction VJP check by central differences (see the module docstring).

    Parameters
    ----------
    f, vjp : callables (see "Calling conventions").
    args : tuple or dict of arrays; the point at which to check.
    rng : numpy.random.Generator; draws the cotangent and the directions.
    wrt : str or list of str, optional; which inputs to check (default all). Tuple inputs are
        named ``arg0``, ``arg1``, ...
    method : ``"central"`` (h = eps**(1/3) scale) or ``"richardson"`` (h = eps**(1/5) scale).
    step : float, optional; override the step (before multiplying by the scale).
    rtol : float in [0, 1), optional; default from the tolerance table (``vjp_central_difference``
        or ``vjp_richardson``).
    n_directions : int >= 1; independent directions per input.

    Raises ``ValueError``/``TypeError`` naming a meaningless setting (``n_directions < 1``,
    ``step <= 0`` or not finite, ``rtol`` outside [0, 1), empty ``args`` or ``wrt``, ``f`` or
    ``vjp`` not callable) or a complex or NaN input, before calling f.

    Returns
    -------
    GradcheckReport
        ``.passed``, ``.worst`` (the input with the largest relative error), printable table.
        An entry passes when ``|analytic - numeric| <= rtol * max(|analytic|, |numeric|) + floor``
        where ``floor = 10 eps (sum|v f(x+hu)| + sum|v f(x-hu)|) / h + 64 eps sum|g u|``: the
        rounding noise of the difference quotient and of the inner product <g, u>, which matter
        only where the directional derivative cancels (it is ~0 compared with its terms); for
        ``"central"`` the floor also holds the truncation estimate ``2 |D(h) - D(h/2)|`` (two
        more evaluations), which matters only near stationary points.
    """
    if method not in ("central", "richardson"):
        raise ValueError(f"unknown method {method!r}; expected 'central' or 'richardson'")
    n_directions = check_positive_int(n_directions, "n_directions")
    step, rtol = _check_settings(step, rtol)
    if rtol is None:
        rtol = tolerance("vjp_central_difference" if method == "central" else "vjp_richardson").rtol
    names, arrays, is_dict, v, grads, todo = _setup(f, vjp, args, rng, wrt)
    base_h = step if step is not None else (EPS ** (1 / 3) if method == "central" else EPS ** (1 / 5))
    reason = _empty_reason(names, todo, arrays)
    if reason:
        return GradcheckReport(method=method, rtol=rtol, reason=reason)

    def phi(idx, direction, t):
        """<v, f(x + t u)> and its rounding scale sum |v_i f_i|."""
        moved = list(arrays)
        moved[idx] = arrays[idx] + t * direction
        val = np.asarray(_call(f, names, moved, is_dict), dtype=np.float64)
        return float(np.sum(v * val)), float(np.sum(np.abs(v * val)))

    report = GradcheckReport(method=method, rtol=rtol)
    for name in todo:
        idx = names.index(name)
        x = arrays[idx]
        g = _grad_of(grads, names, name, x)
        if x.size == 0:
            continue   # nothing to perturb (the report is non-empty: another input was checked)
        for d in range(n_directions):
            u = rng.standard_normal(x.shape)
            h = base_h * _scale(x)

            def central(hh):
                (p, pa), (m, ma) = phi(idx, u, hh), phi(idx, u, -hh)
                return (p - m) / (2 * hh), pa + ma

            num, mag = central(h)
            num2, mag2 = central(h / 2)
            mag = max(mag, mag2)
            if method == "richardson":
                num = (4 * num2 - num) / 3
                trunc = 0.0
            else:
                # truncation estimate of D(h): D(h) - D(h/2) = (3/4) h^2 phi^(3) / 6 + O(h^4); it
                # matters only near stationary points, where the directional derivative is ~0
                trunc = 2.0 * abs(num - num2)
            ana = float(np.sum(g * u))
            floor = 10 * EPS * mag / h + 64 * EPS * float(np.sum(np.abs(g * u))) + trunc
            err = abs(ana - num)
            scale = max(abs(ana), abs(num))
            allowed = rtol * scale + floor
            rel = err / scale if scale > 0 else 0.0
            label = name if n_directions == 1 else f"{name}[dir {d}]"
            report.entries.append(GradcheckEntry(label, ana, num, err, rel, allowed, h,
                                                 bool(err <= allowed)))
    return report


def check_vjp_complex(f, vjp, args, *, rng, wrt=None, step=1e-30, rtol=None) -> GradcheckReport:
    """Complex-step check: ``Im <v, f(x + i h u)> / h`` against ``<vjp(v), u>``.

    ``f`` must evaluate on complex input along an analytic code path. With ``h = 1e-30`` the
    estimate's truncation error ``h**2 |phi'''|`` is far below rounding, and there is no
    cancellation, so the default ``rtol`` is the ``complex_step`` entry of the tolerance table.
    The error is measured relative to the largest of |analytic|, |numeric|, sum |g_i u_i| and
    sum |v_i Im f_i| / h, so that a direction in which the terms cancel is not a false failure.

    ``args`` is the *real* point (complex input is a ``TypeError``); ``step`` a finite number > 0
    and ``rtol`` in [0, 1) (``ValueError`` otherwise). Only empty inputs give a report that does
    not pass (see the module docstring).
    """
    step = check_real(step, "step", lo=0.0, lo_open=True)
    step, rtol = _check_settings(step, rtol)
    if rtol is None:
        rtol = tolerance("complex_step").rtol
    names, arrays, is_dict, v, grads, todo = _setup(f, vjp, args, rng, wrt)
    reason = _empty_reason(names, todo, arrays)
    if reason:
        return GradcheckReport(method="complex-step", rtol=rtol, reason=reason)
    report = GradcheckReport(method="complex-step", rtol=rtol)
    for name in todo:
        idx = names.index(name)
        x = arrays[idx]
        g = _grad_of(grads, names, name, x)
        if x.size == 0:
            continue
        u = rng.standard_normal(x.shape)
        moved = [a.astype(np.complex128) for a in arrays]
        moved[idx] = x + 1j * step * u
        val = np.asarray(_call(f, names, moved, is_dict))
        num = float(np.sum(v * val.imag)) / step
        ana = float(np.sum(g * u))
        err = abs(ana - num)
        scale = max(abs(ana), abs(num))
        # <g, u> may cancel for an unlucky direction: its rounding is relative to sum |g_i u_i|
        allowed = rtol * max(scale, float(np.sum(np.abs(g * u))), float(np.sum(np.abs(v * val.imag))) / step)
        report.entries.append(GradcheckEntry(name, ana, num, err, err / scale if scale > 0 else 0.0,
                                             allowed, step, bool(err <= allowed)))
    return report


def check_elementwise(f, vjp, args, *, rng, wrt=None, max_entries=8, step=None, rtol=None,
                      verbose=True) -> GradcheckReport:
    """Element-wise check, for teaching: one partial derivative at a time.

    For up to ``max_entries`` randomly chosen entries ``x[i]`` of each checked input, compares the
    analytic ``vjp(v)[i]`` with the central difference
    ``(<v, f(x + h e_i)> - <v, f(x - h e_i)>) / 2h``, ``h = eps**(1/3) max(1, |x[i]|)``, and (with
    ``verbose``) prints one row per entry. ``v`` is a random cotangent, or 1 for a scalar ``f``.

    ``max_entries`` is an integer >= 1, ``step`` a finite number > 0, ``rtol`` in [0, 1),
    ``verbose`` a bool; inputs are real (``ValueError``/``TypeError`` naming the setting). Only
    empty inputs give a report that does not pass (see the module docstring).
    """
    max_entries = check_positive_int(max_entries, "max_entries")
    step, rtol = _check_settings(step, rtol)
    if not isinstance(verbose, (bool, np.bool_)):
        raise TypeError(f"verbose must be True or False, got {verbose!r}")
    if rtol is None:
        rtol = tolerance("vjp_central_difference").rtol
    _check_callables(f, vjp)
    check_rng(rng)
    names, arrays, is_dict = _as_named(args)
    arrays = _real_inputs(names, arrays)
    _select(names, wrt)
    out = np.asarray(_call(f, names, arrays, is_dict))
    if np.iscomplexobj(out):
        raise TypeError(f"f returned a complex value ({out.dtype}) at a real point; the checks need a "
                        "real-valued f")
    out = np.asarray(out, dtype=np.float64)
    v = np.ones(out.shape) if out.ndim == 0 else rng.standard_normal(out.shape)
    grads = _call_vjp(vjp, v, names, arrays, is_dict)
    todo = _select(names, wrt)
    reason = _empty_reason(names, todo, arrays)
    if reason:
        report = GradcheckReport(method="element-wise", rtol=rtol, reason=reason)
        if verbose:
            print(report)
        return report
    report = GradcheckReport(method="element-wise", rtol=rtol)
    for name in todo:
        idx = names.index(name)
        x = arrays[idx]
        g = _grad_of(grads, names, name, x)
        flat = rng.permutation(x.size)[:max_entries]
        for j in flat:
            pos = np.unravel_index(j, x.shape)
            h = (step if step is not None else EPS ** (1 / 3)) * max(1.0, abs(float(x[pos])))
            vals = []
            for t in (h, -h):
                moved = list(arrays)
                moved[idx] = x.copy()
                moved[idx][pos] += t
                vals.append(float(np.sum(v * np.asarray(_call(f, names, moved, is_dict)))))
            num = (vals[0] - vals[1]) / (2 * h)
            ana = float(g[pos])
            err = abs(ana - num)
            scale = max(abs(ana), abs(num))
            floor = 10 * EPS * (abs(vals[0]) + abs(vals[1])) / h
            allowed = rtol * scale + floor
            label = f"{name}[{', '.join(map(str, pos))}]"
            report.entries.append(GradcheckEntry(label, ana, num, err, err / scale if scale > 0 else 0.0,
                                                 allowed, h, bool(err <= allowed)))
    if verbose:
        print(report)
    return report
