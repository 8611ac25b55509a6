r"""Adversarial inputs for a Gaussian-mixture log-density: :func:`check_adversarial`.

A mixture log-density ``f_b = logsumexp_k [w_k + log N(z_b | mu_k, diag exp(v_k))]`` (SPEC 4)
that passes on ordinary inputs can still return NaN, -inf or a wrong value, or a NaN gradient,
where the arithmetic is tight: a component of weight exactly zero, a log-weight of -inf,
log-variances of +-700 (sigma^2 = e^{+-700} is still a normal double), components 1e300 apart,
K = 1, one component that dominates the weights, a query far from every component.
:func:`check_adversarial` runs a user's function (and its gradient, if given) on each input of
:data:`ADVERSARIAL_INPUTS` and compares with the exact values (mpmath at 60 digits; refvae's kernel
:func:`refvae.kernels.mixture.mixture_log_prob` agrees with them on every input, which the tests
assert), one :class:`~refvae.tools.verify.results.CheckResult` per input with a verdict, a
diagnosis and a reproduction that runs without refvae.

Tolerances (stated, not tuned)
------------------------------
- value: ``|f - f*| <= 1e-9 (|f*| + S_b)`` with ``S_b = sum_k r_bk s_bk``, ``r`` the exact
  responsibilities and ``s_bk = |w_k| + 1/2 sum_l (ln 2 pi + |v_kl| + q_bkl + |z_bl - mu_kl| |z_bl|
  e^{-v_kl} + |z_bl - mu_kl| |mu_kl| e^{-v_kl})`` the magnitude of the term's parts and of its
  sensitivity to rounding z and mu. Rounding every input and every operation moves f by a few
  units of u = 2^-53 times this scale; 1e-9 (~ 10^7 u) passes any float64 evaluation order and
  fails what this check is for (NaN, -inf for a finite density, a lost term, an underflowed weight).
- gradient: per array, ``|g - g*| <= 1e-6 (G + max G)`` with G the sum of the magnitudes of the
  entry's summands (``sum_k r_bk |z_bl - mu_kl| e^{-v_kl}`` for dz, ``sum_b r_bk + B pi_k`` for
  the logits, ...), i.e. normwise relative 1e-6 against the scale the entry is computed at (the
  responsibilities carry relative errors up to ~ u |t| ~ 1e-10 at |t| ~ 5e5; a gradient that is 0
  by cancellation, like the logits' at uniform responsibilities, is judged against its summands):
  NaN, a zero gradient, a missing factor or a wrong sign fail by orders of magnitude.

The function's protocol: ``log_prob(z, means, log_vars, log_weights) -> (B,)``, float64 NumPy
arrays in; the log-weights are normalised (``logsumexp = 0``; ``-inf`` for a zero weight).
``log_prob_grad(z, means, log_vars, log_weights) -> dict`` with any of ``z``, ``means``,
``log_vars`` and either ``log_weights`` (the function uses the log-weights as given) or
``logits`` (it normalises them, ``log_softmax``, as ``Categorical(logits=...)`` does): the
gradients of ``sum_b f_b``. A function that cannot take an input (uniform weights only, say)
raises ``NotImplementedError``: that input is skipped with the message.
"""

from __future__ import annotations

import math

import numpy as np

from .results import CheckResult

__all__ = ["ADVERSARIAL_INPUTS", "adversarial_input", "check_adversarial"]

VALUE_RTOL = 1e-9     #: value tolerance factor (module docstring)
GRAD_RTOL = 1e-6      #: gradient tolerance factor (module docstring)
_DPS = 60             #: mpmath digits of the exact reference
_LN_2PI = math.log(2.0 * math.pi)


def _lw(*w):
    """Normalised log-weights from weights (an exact 0 gives -inf)."""
    w = np.asarray(w, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(w / w.sum())


def _inputs():
    """name -> (what it tests, z, means, log_vars, log_weights)."""
    two = np.array([[0.0, 0.0], [1.5, -1.0]])
    out = {
        "zero-weight": ("a component of weight exactly 0 (log-weight -inf) next to two ordinary ones: the "
                        "value ignores it, its gradients are exactly 0 (not NaN)",
                        np.array([[0.3, -0.2], [1.4, -0.9], [-2.0, 2.0]]),
                        np.array([[0.0, 0.0], [1.5, -1.0], [-2.0, 2.0]]), np.zeros((3, 2)),
                        _lw(0.5, 0.5, 0.0)),
        "all-but-one-zero": ("log-weights (0, -inf, -inf): the mixture is its one live Gaussian",
                             two, np.array([[0.0, 0.0], [3.0, 1.0], [-1.0, 4.0]]),
                             np.array([[0.0, 0.5], [-1.0, 1.0], [2.0, 0.0]]), _lw(1.0, 0.0, 0.0)),
        "log-var+700": ("log-variances +700 (sigma = e^350 = 1e152): queries at O(1) and O(sigma)",
                        np.array([[0.5, -0.5], [1e152, -2e152]]), np.array([[0.0, 0.0], [1.0, 1.0]]),
                        np.array([[700.0, 700.0], [0.0, 0.0]]), _lw(0.5, 0.5)),
        "log-var-700": ("log-variances -700 (sigma = e^-350 = 1e-152): queries a few sigma from the "
                        "narrow component (log-density ~ +700, gradient ~ 1e152)",
                        np.array([[1.0 + 1e-152, 2.0 - 5e-153], [1.0 - 2e-152, 2.0]]),
                        np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[-700.0, -700.0], [0.0, 0.0]]),
                        _lw(0.25, 0.75)),
        "log-var+-1000": ("log-variances +-1000: sigma^2 = e^{+-1000} overflows / underflows a double "
                          "(|v| > 709.78), though the density and sigma itself are representable "
                          "(refvae's kernel takes |v| <= 1416)",
                          np.array([[1.0 + 7e-218, 2.0], [3e217, 0.0]]),
                          np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[-1000.0, -1000.0], [1000.0, 1000.0]]),
                          _lw(0.5, 0.5)),
        "far-apart": ("two components 1e300 apart ((z - mu)^2 overflows for the far one): each query "
                      "sits near one of them",
                      np.array([[0.5, 0.5], [1e300, 0.5]]), np.array([[0.0, 0.0], [1e300, 0.0]]),
                      np.zeros((2, 2)), _lw(0.5, 0.5)),
        "K=1": ("a single component: the mixture is that Gaussian",
                two, np.array([[0.2, -0.3]]), np.array([[0.4, -0.6]]), np.zeros(1)),
        "dominant": ("log-weights (0, -800, -800) (e^-800 underflows to 0 as a probability): a query at a "
                     "tiny component 100 sd from the dominant one, where f ~ -802",
                     np.array([[100.0, 0.0], [0.0, 100.0]]), np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]]),
                     np.zeros((3, 2)), np.array([0.0, -800.0, -800.0])),
        "far-query": ("queries 1000 sd from every component (every term ~ -5e5: exp underflows, a "
                      "log-sum-exp without the shift returns -inf)",
                      np.array([[1000.0, 0.0], [-700.0, 700.0]]), np.array([[0.0, 0.0], [1.0, 1.0]]),
                      np.zeros((2, 2)), _lw(0.5, 0.5)),
    }
    return out


#: the adversarial inputs, name -> what it tests (arrays: :func:`adversarial_input`)
ADVERSARIAL_INPUTS = {k: v[0] for k, v in _inputs().items()}


def adversarial_input(name):
    """``(z, means, log_vars, log_weights)`` of one of :data:`ADVERSARIAL_INPUTS` (fresh copies)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str naming one of {list(ADVERSARIAL_INPUTS)}, got {type(name).__name__}")
    if name not in ADVERSARIAL_INPUTS:
        raise ValueError(f"name must be one of {list(ADVERSARIAL_INPUTS)}, got {name!r}")
    return tuple(np.array(a, dtype=np.float64) for a in _inputs()[name][1:])


def _exact(z, means, log_vars, log_w):
    """Exact f, responsibilities, gradients and the value scale S, by mpmath at 60 digits."""
    import mpmath
    mp = mpmath.mp.clone() if hasattr(mpmath.mp, "clone") else mpmath.mp
    old = mp.dps
    mp.dps = _DPS
    try:
        B, L = z.shape
        K = means.shape[0]
        Z = [[mp.mpf(float(v)) for v in row] for row in z]
        M = [[mp.mpf(float(v)) for v in row] for row in means]
        V = [[mp.mpf(float(v)) for v in row] for row in log_vars]
        W = [mp.mpf(float(v)) for v in log_w]
        ln2pi = mp.log(2 * mp.pi)
        f = np.empty(B)
        S = np.empty(B)
        r = [[mp.mpf(0)] * K for _ in range(B)]
        fs = []
        for b in range(B):
            t = []
            for k in range(K):
                q = mp.fsum(((Z[b][l] - M[k][l]) ** 2) * mp.exp(-V[k][l]) for l in range(L))
                t.append(W[k] - (L * ln2pi + mp.fsum(V[k]) + q) / 2)
            tmax = max(t)
            fb = tmax + mp.log(mp.fsum(mp.exp(tk - tmax) for tk in t)) if tmax != mp.ninf else mp.ninf
            fs.append(fb)
            f[b] = float(fb)
            sb = mp.mpf(0)
            for k in range(K):
                r[b][k] = mp.exp(t[k] - fb) if t[k] != mp.ninf else mp.mpf(0)
                if r[b][k] == 0:
                    continue
                s = abs(W[k]) + mp.fsum(ln2pi + abs(V[k][l]) + ((Z[b][l] - M[k][l]) ** 2) * mp.exp(-V[k][l])
                                        + abs(Z[b][l] - M[k][l]) * (abs(Z[b][l]) + abs(M[k][l])) * mp.exp(-V[k][l])
                                        for l in range(L)) / 2
                sb += r[b][k] * s
            S[b] = float(sb)
        g = {"z": np.zeros((B, L)), "means": np.zeros((K, L)), "log_vars": np.zeros((K, L)),
             "log_weights": np.zeros(K), "logits": np.zeros(K)}
        scale = {k: np.zeros_like(v) for k, v in g.items()}  # sums of |summands|
        gm = [[mp.mpf(0)] * L for _ in range(K)]
        gv = [[mp.mpf(0)] * L for _ in range(K)]
        for b in range(B):
            for l in range(L):
                acc = mp.mpf(0)
                for k in range(K):
                    if r[b][k] == 0:
                        continue
                    d = (Z[b][l] - M[k][l]) * mp.exp(-V[k][l])
                    acc -= r[b][k] * d
                    gm[k][l] += r[b][k] * d
                    qq = (Z[b][l] - M[k][l]) ** 2 * mp.exp(-V[k][l])
                    gv[k][l] += r[b][k] * (qq - 1) / 2
                    scale["z"][b, l] += float(r[b][k] * abs(d))
                    scale["means"][k, l] += float(r[b][k] * abs(d))
                    scale["log_vars"][k, l] += float(r[b][k] * (qq + 1) / 2)
                g["z"][b, l] = float(acc)
        for k in range(K):
            for l in range(L):
                g["means"][k, l] = float(gm[k][l])
                g["log_vars"][k, l] = float(gv[k][l])
            rk = mp.fsum(r[b][k] for b in range(B))
            g["log_weights"][k] = float(rk)
            g["logits"][k] = float(rk - B * mp.exp(W[k]))
            scale["log_weights"][k] = float(rk)
            scale["logits"][k] = float(rk + B * mp.exp(W[k]))
        return f, S, g, scale
    finally:
        mp.dps = old


def _lit(a):
    """A NumPy array as Python source that round-trips exactly (inf/nan spelled for NumPy)."""
    def one(v):
        if math.isnan(v):
            return "np.nan"
        if math.isinf(v):
            return "np.inf" if v > 0 else "-np.inf"
        return repr(float(v))

    def rec(x):
        if np.ndim(x) == 0:
            return one(float(x))
        return "[" + ", ".join(rec(e) for e in x) + "]"
    return f"np.array({rec(np.asarray(a))})"


def _reproduction(name, arrays, source, f_exact, g_exact, grad_key):
    z, means, log_vars, log_w = arrays
    lines = [f"# adversarial input {name!r}: {ADVERSARIAL_INPUTS[name]}", "import numpy as np"]
    if source:
        lines.append(source.strip("\n"))
    lines += [f"z = {_lit(z)}", f"means = {_lit(means)}", f"log_vars = {_lit(log_vars)}",
              f"log_weights = {_lit(log_w)}  # normalised; -inf is a zero weight",
              "print('log_prob', log_prob(z, means, log_vars, log_weights))",
              f"print('exact   ', {_lit(f_exact)})"]
    if grad_key is not None:
        lines.append("print('grads', log_prob_grad(z, means, log_vars, log_weights))")
        exact = {k: g_exact[k] for k in ("z", "means", "log_vars", grad_key)}
        lines.append("print('exact', {" + ", ".join(f"{k!r}: {_lit(v)}" for k, v in exact.items()) + "})")
    return "\n".join(lines) + "\n"


def _describe_value_error(got, f, allowed):
    bad = ~(np.abs(got - f) <= allowed)
    i = int(np.argmax(np.where(bad, np.abs(np.nan_to_num(got - f, nan=np.inf)), -1.0)))
    what = "NaN" if np.isnan(got[i]) else ("-inf" if got[i] == -np.inf else ("+inf" if got[i] == np.inf
                                                                           else f"{got[i]:.10g}"))
    return f"log_prob[{i}] = {what}, exact {f[i]:.10g} (|diff| allowed {allowed[i]:.1e})"


def _check_grads(grads, g, scale):
    """Problems with the returned gradients (a list of strings) and the key used for the weights."""
    problems, wkey = [], None
    if not isinstance(grads, dict):
        return [f"log_prob_grad returned {type(grads).__name__}, expected a dict"], None
    if "log_weights" in grads and "logits" in grads:
        return ["log_prob_grad returned both 'log_weights' and 'logits'; give one"], None
    for key, got in grads.items():
        if key not in g:
            problems.append(f"unknown gradient {key!r} (expected z, means, log_vars, log_weights or logits)")
            continue
        if key in ("log_weights", "logits"):
            wkey = key
        want = g[key]
        got = np.asarray(got, dtype=np.float64)
        if got.shape != want.shape:
            problems.append(f"grad {key} has shape {got.shape}, expected {want.shape}")
            continue
        allowed = GRAD_RTOL * (scale[key] + float(np.max(scale[key], initial=0.0)))
        bad = ~(np.abs(got - want) <= allowed)
        if np.any(bad):
            idx = tuple(int(v) for v in np.argwhere(bad)[0])
            kind = ("NaN" if np.isnan(got[idx]) else "inf" if np.isinf(got[idx]) else f"{got[idx]:.6g}")
            problems.append(f"grad {key}{list(idx)} = {kind}, exact {want[idx]:.6g} "
                            f"({int(bad.sum())} of {bad.size} entries wrong)")
    return problems, wkey


def check_adversarial(log_prob, log_prob_grad=None, inputs=None, source=None):
    """Run ``log_prob`` (and ``log_prob_grad``) on adversarial mixture inputs; one
    :class:`CheckResult` per input, named ``adversarial.<input>``.

    Parameters
    ----------
    log_prob : callable ``(z, means, log_vars, log_weights) -> (B,)`` (module docstring).
    log_prob_grad : callable returning a dict of gradients of ``sum(log_prob)`` (optional).
    inputs : None (all of :data:`ADVERSARIAL_INPUTS`) or a list of their names.
    source : optional Python source defining ``log_prob`` (and ``log_prob_grad``) with the
        library's imports; it is put at the top of each reproduction so that it runs on its own.

    Each result's ``status`` is ``pass``, ``fail`` (a wrong or non-finite value or gradient, or an
    exception: the summary says which element and the exact value) or ``skip`` (the function raised
    ``NotImplementedError``); ``details`` hold the exact values, ``reproduction`` a script that
    prints the function's values next to the exact ones.
    """
    if not callable(log_prob):
        raise TypeError(f"log_prob must be callable (z, means, log_vars, log_weights) -> (B,), got "
                        f"{type(log_prob).__name__}")
    if log_prob_grad is not None and not callable(log_prob_grad):
        raise TypeError(f"log_prob_grad must be callable or None, got {type(log_prob_grad).__name__}")
    if source is not None and not isinstance(source, str):
        raise TypeError(f"source must be a str (Python source) or None, got {type(source).__name__}")
    if inputs is None:
        names = list(ADVERSARIAL_INPUTS)
    else:
        if isinstance(inputs, str) or not isinstance(inputs, (list, tuple)):
            raise TypeError(f"inputs must be a list of names from {list(ADVERSARIAL_INPUTS)} (or None), "
                            f"got {type(inputs).__name__}")
        if not inputs:
            raise ValueError("inputs must name at least one adversarial input (or be None for all)")
        for n in inputs:
            if n not in ADVERSARIAL_INPUTS:
                raise ValueError(f"inputs: unknown adversarial input {n!r}; known: {list(ADVERSARIAL_INPUTS)}")
        names = list(inputs)
    return [_one(name, log_prob, log_prob_grad, source) for name in names]


def _one(name, log_prob, log_prob_grad, source):
    arrays = adversarial_input(name)
    z, means, log_vars, log_w = arrays
    f, S, g, gscale = _exact(*arrays)
    allowed = VALUE_RTOL * (np.abs(f) + S)
    details = {"input": name, "what": ADVERSARIAL_INPUTS[name], "exact": f.tolist(),
               "allowed": allowed.tolist()}
    rname = f"adversarial.{name}"
    problems = []
    try:
        got = np.asarray(log_prob(*(a.copy() for a in arrays)), dtype=np.float64)
    except NotImplementedError as exc:
        return CheckResult(rname, "skip", f"not applicable: {exc}", details=details)
    except Exception as exc:  # noqa: BLE001 - the user's function failing is the finding
        got = None
        problems.append(f"log_prob raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    if got is not None:
        got = got.reshape(-1) if got.size == f.size else got
        details["got"] = got.tolist()
        if got.shape != f.shape:
            problems.append(f"log_prob returned shape {got.shape}, expected {f.shape}")
        elif not np.all(np.abs(got - f) <= allowed):
            problems.append(_describe_value_error(got, f, allowed))
    wkey = None
    if log_prob_grad is not None:
        try:
            grads = log_prob_grad(*(a.copy() for a in arrays))
        except NotImplementedError as exc:
            grads = None
            details["grad_skipped"] = str(exc)
        except Exception as exc:  # noqa: BLE001
            grads = None
            problems.append(f"log_prob_grad raised {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}")
        if grads is not None:
            gp, wkey = _check_grads(grads, g, gscale)
            problems += gp
            details["grads"] = {k: np.asarray(v, dtype=np.float64).tolist() for k, v in grads.items()
                                if isinstance(grads, dict)}
            details["exact_grads"] = {k: v.tolist() for k, v in g.items()}
    repro = _reproduction(name, arrays, source, f, g, (wkey or "log_weights") if log_prob_grad else None)
    if problems:
        return CheckResult(rname, "fail", "; ".join(problems), details=details, reproduction=repro)
    checked = "value" + (" and gradients" if log_prob_grad is not None and "grads" in details else "")
    return CheckResult(rname, "pass", f"{checked} exact to the stated tolerance ({ADVERSARIAL_INPUTS[name]})",
                       details=details, reproduction=repro)
