"""Exact reference values for the mixture log-density and its gradients (mpmath).

Provenance: every float64 input is converted to an ``mpmath.mpf`` *exactly* (a binary64 number is
a dyadic rational), and the log-density

    f_b = log sum_k exp(t_bk),
    t_bk = w_k - 1/2 sum_l [ ln 2 pi + v_kl + (z_bl - mu_kl)^2 exp(-v_kl) ]

is evaluated in mpmath binary arithmetic with a working precision of at least 200 bits
(dps >= 60). Inputs with huge magnitudes (log-weights near +-1e300, coordinates near 1e154) make
sums absorb small terms at any fixed precision, so the precision is raised with the exponent range
of the inputs: ``prec = 256 + 2 * (largest binary exponent) + 1.5 * max |v|`` bits. At that
precision every t_bk - t_bj difference that matters is exact to far below float64 rounding.

Returned values are mpmath numbers (use ``float()`` to round once) together with the scales that
the error bounds are stated against:

* ``S_b = sum_k r_bk (|w_k| + 1/2 sum_l (ln 2 pi + |v_kl| + (z_bl - mu_kl)^2 e^{-v_kl}))`` with the
  exact responsibilities ``r_bk = exp(t_bk - f_b)`` (refvae.kernels.mixture docstring, "Error bound");
* for each gradient entry, the sum of the absolute values of its terms (the natural scale of the
  rounding of a sum of terms of either sign).

A component with ``w_k = -inf`` has r_bk = 0 and is skipped; a row whose terms are all -inf has
f_b = -inf, S_b = 0 and zero gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mpmath
import numpy as np

DPS_MIN = 60  #: the oracle never works below this many decimal digits


def working_prec(z, means, log_vars, log_weights):
    """Working precision in bits for inputs with this exponent range (see module docstring)."""
    emax = 0
    for a in (z, means, log_vars, log_weights):
        a = np.asarray(a, dtype=np.float64)
        fin = a[np.isfinite(a)]
        if fin.size and np.max(np.abs(fin)) > 0:
            emax = max(emax, math.frexp(float(np.max(np.abs(fin))))[1])
    lv = np.asarray(log_vars, dtype=np.float64)
    vmax = float(np.max(np.abs(lv))) if lv.size else 0.0
    prec = 256 + 2 * emax + int(1.5 * vmax)
    return max(prec, int(DPS_MIN * 3.33) + 8)


@dataclass
class MixtureExact:
    """Exact forward values, responsibilities and scales for one set of inputs."""

    f: list            #: (B,) mpf, -inf where every term is -inf
    S: list            #: (B,) mpf, the error-bound scale S_b
    r: list            #: (B, K) nested lists of mpf responsibilities
    P: list            #: (B, K) mpf magnitudes |w_k| + 1/2 sum_l (ln 2 pi + |v_kl| + q_bkl) (None if w_k = -inf)
    prec: int          #: working precision in bits

    def f_float(self):
        return np.array([float(x) for x in self.f])

    def S_float(self):
        return np.array([float(x) for x in self.S])


def _to_mp(a):
    a = np.asarray(a, dtype=np.float64)
    return [[mpmath.mpf(float(x)) for x in row] for row in a] if a.ndim == 2 else \
        [mpmath.mpf(float(x)) for x in a]


def _prepare(z, means, log_vars, log_weights):
    z = np.asarray(z, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    log_vars = np.asarray(log_vars, dtype=np.float64)
    K = means.shape[0]
    if log_weights is not None:
        log_weights = np.asarray(log_weights, dtype=np.float64)
    return z, means, log_vars, log_weights, K


def exact_mixture(z, means, log_vars, log_weights=None, *, prec=None) -> MixtureExact:
    """Exact f, S and r (see module docstring). ``log_weights=None`` means exactly -ln K each."""
    z, means, log_vars, log_weights, K = _prepare(z, means, log_vars, log_weights)
    B, L = z.shape
    if prec is None:
        prec = working_prec(z, means, log_vars, np.zeros(1) if log_weights is None else log_weights)
    with mpmath.workprec(prec):
        ln2pi = mpmath.log(2 * mpmath.pi)
        zz, mm, vv = _to_mp(z), _to_mp(means), _to_mp(log_vars)
        if log_weights is None:
            ww = [-mpmath.log(K)] * K
            live = [True] * K
        else:
            live = [bool(x > -np.inf) for x in log_weights]
            ww = [mpmath.mpf(float(x)) if lv else None for x, lv in zip(log_weights, live)]
        inv = [[mpmath.exp(-v) for v in row] for row in vv]
        f_all, S_all, r_all, P_all = [], [], [], []
        for b in range(B):
            t = [None] * K
            P = [None] * K
            for k in range(K):
                if not live[k]:
                    continue
                q = mpmath.mpf(0)
                c = mpmath.mpf(0)
                cabs = mpmath.mpf(0)
                for l in range(L):
                    d = zz[b][l] - mm[k][l]
                    ql = d * d * inv[k][l]
                    q += ql
                    c += ln2pi + vv[k][l]
                    cabs += ln2pi + abs(vv[k][l])
                t[k] = ww[k] - (c + q) / 2
                P[k] = abs(ww[k]) + (cabs + q) / 2
            P_all.append(P)
            live_t = [x for x in t if x is not None]
            if not live_t:
                f_all.append(mpmath.mpf("-inf"))
                S_all.append(mpmath.mpf(0))
                r_all.append([mpmath.mpf(0)] * K)
                continue
            tmax = max(live_t)
            e = [mpmath.exp(x - tmax) if x is not None else mpmath.mpf(0) for x in t]
            tot = mpmath.fsum(e)
            f_all.append(tmax + mpmath.log(tot))
            r = [x / tot for x in e]
            r_all.append(r)
            S_all.append(mpmath.fsum(r[k] * P[k] for k in range(K) if P[k] is not None))
    return MixtureExact(f_all, S_all, r_all, P_all, prec)


@dataclass
class VjpExact:
    """Exact gradients (rounded to float64 once) and the sum of |terms| of each entry."""

    dz: np.ndarray
    dmeans: np.ndarray
    dlog_vars: np.ndarray
    dlog_weights: np.ndarray
    dz_abs: np.ndarray
    dmeans_abs: np.ndarray
    dlog_vars_abs: np.ndarray
    dlog_weights_abs: np.ndarray
    dz_w: np.ndarray
    dmeans_w: np.ndarray
    dlog_vars_w: np.ndarray
    dlog_weights_w: np.ndarray
    exact: MixtureExact


def exact_vjp(g, z, means, log_vars, log_weights=None, *, prec=None) -> VjpExact:
    """Exact VJP of the mixture log-density (formulas of the refvae.kernels.mixture docstring).

    ``dz[b,l] = -g_b sum_k r_bk (z_bl - mu_kl) e^{-v_kl}``,
    ``dmeans[k,l] = sum_b g_b r_bk (z_bl - mu_kl) e^{-v_kl}``,
    ``dlog_vars[k,l] = sum_b g_b r_bk 1/2 ((z_bl - mu_kl)^2 e^{-v_kl} - 1)``,
    ``dlog_weights[k] = sum_b g_b r_bk``; each also with the sum of the absolute values of its terms
    (``*_abs``) and the sum of |term| * (P_bk + |f_b| + S_b) (``*_w``): the absolute error of a term
    g r_bk x is dominated by that of r_bk = exp(t_bk - f_b), i.e. by the rounding of t_bk (scale
    P_bk) and of f_b (scale |f_b| + S_b), so ``*_w`` is the natural scale of a gradient entry's error.
    """
    z, means, log_vars, lw, K = _prepare(z, means, log_vars, log_weights)
    B, L = z.shape
    ex = exact_mixture(z, means, log_vars, lw, prec=prec)
    g = np.asarray(g, dtype=np.float64)
    with mpmath.workprec(ex.prec):
        zz, mm, vv = _to_mp(z), _to_mp(means), _to_mp(log_vars)
        gg = _to_mp(g)
        inv = [[mpmath.exp(-v) for v in row] for row in vv]
        dz = [[mpmath.mpf(0)] * L for _ in range(B)]
        dz_a = [[mpmath.mpf(0)] * L for _ in range(B)]
        dm = [[mpmath.mpf(0)] * L for _ in range(K)]
        dm_a = [[mpmath.mpf(0)] * L for _ in range(K)]
        dv = [[mpmath.mpf(0)] * L for _ in range(K)]
        dv_a = [[mpmath.mpf(0)] * L for _ in range(K)]
        dw = [mpmath.mpf(0)] * K
        dw_a = [mpmath.mpf(0)] * K
        dz_w = [[mpmath.mpf(0)] * L for _ in range(B)]
        dm_w = [[mpmath.mpf(0)] * L for _ in range(K)]
        dv_w = [[mpmath.mpf(0)] * L for _ in range(K)]
        dw_w = [mpmath.mpf(0)] * K
        for b in range(B):
            for k in range(K):
                gr = gg[b] * ex.r[b][k]
                if gr == 0:
                    continue
                scale = ex.P[b][k] + abs(ex.f[b]) + ex.S[b]
                dw[k] += gr
                dw_a[k] += abs(gr)
                dw_w[k] += abs(gr) * scale
                for l in range(L):
                    d = zz[b][l] - mm[k][l]
                    ivd = d * inv[k][l]
                    term = gr * ivd
                    dz[b][l] -= term
                    dz_a[b][l] += abs(term)
                    dz_w[b][l] += abs(term) * scale
                    dm[k][l] += term
                    dm_a[k][l] += abs(term)
                    dm_w[k][l] += abs(term) * scale
                    tv = gr * (ivd * d - 1) / 2
                    dv[k][l] += tv
                    dv_a[k][l] += abs(tv)
                    dv_w[k][l] += abs(tv) * scale

    def arr(x):
        return np.array([[float(y) for y in row] for row in x]) if isinstance(x[0], list) else \
            np.array([float(y) for y in x])

    return VjpExact(arr(dz), arr(dm), arr(dv), arr(dw), arr(dz_a), arr(dm_a), arr(dv_a), arr(dw_a),
                    arr(dz_w), arr(dm_w), arr(dv_w), arr(dw_w), ex)


def exact_log_prob(z, means, log_vars, log_weights=None):
    """Exact f rounded once to float64 (convenience)."""
    return exact_mixture(z, means, log_vars, log_weights).f_float()
