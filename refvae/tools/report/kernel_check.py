"""The mixture kernel against mpmath: its forward error in units of ``u (|f| + S)`` on random and
adversarial points (once per report; see :mod:`refvae.kernels.mixture`)."""

from __future__ import annotations

import math

import numpy as np

from ..._validation import check_positive_int, check_rng
from ...tolerances import U, tolerance

__all__ = ["kernel_accuracy"]


def _kernel_cases(rng, n_random):
    """(name, kind, z, means, log_vars, log_weights) for the kernel accuracy check."""
    cases = []

    def random_case(name, n, K, L, uniform):
        means = rng.normal(size=(K, L)) * 3.0
        log_vars = rng.uniform(-4.0, 2.0, size=(K, L))
        w = None if uniform else rng.normal(size=K) * 2.0
        if w is not None:
            w = w - np.logaddexp.reduce(w)
        near = n // 2
        pick = rng.integers(0, K, size=near)
        z = np.vstack([means[pick] + np.exp(0.5 * log_vars[pick]) * rng.normal(size=(near, L)),
                       rng.normal(size=(n - near, L)) * 5.0])
        cases.append((name, "random", z, means, log_vars, w))

    n1 = max(2, int(0.4 * n_random))
    n3 = max(2, int(0.2 * n_random))
    random_case("random K=16, L=2 (mixture priors)", n1, 16, 2, False)
    random_case("random K=16, L=16 (mixture priors)", max(2, n_random - n1 - n3), 16, 16, False)
    random_case("random K=1000, L=2, uniform (aggregated posterior)", n3, 1000, 2, True)

    a = np.random.default_rng(20261125)  # adversarial cases: fixed, independent of --seed
    m, v, w = a.normal(size=(9, 3)), a.uniform(-1, 1, (9, 3)), a.normal(size=9)
    w[[0, 4, 8]] = -np.inf
    cases.append(("-inf log-weights (first, middle, last)", "adversarial", a.normal(size=(4, 3)), m, v, w))
    m, v, w = a.normal(size=(6, 3)), a.uniform(-1, 1, (6, 3)), a.normal(size=6)
    far = np.array([[1e3, -1e3, 1e3], [-1e3, 2e3, 5e2], [1e100, 1e100, -1e100], [0.0, 0.0, 3e150]])
    cases.append(("queries 1e3..3e150 away (every exp underflows)", "adversarial", far, m, v, w))
    m = a.normal(size=(7, 4)) * 3
    v = a.uniform(-30, 30, size=(7, 4))
    pick = a.integers(0, 7, size=4)
    z = m[pick] + a.choice([-1.0, 1.0], size=(4, 4)) * np.exp(0.5 * v[pick])
    cases.append(("log-variances in [-30, 30]", "adversarial", z, m, v, a.normal(size=7)))
    m = a.normal(size=(40, 8))
    v = a.uniform(-60, -50, size=(40, 8))
    pick = np.array([0, 17, 39])
    z = m[pick] + a.normal(size=(3, 8)) * np.exp(0.5 * v[pick])
    cases.append(("variances ~1e-24 (K L = 320)", "adversarial", z, m, v, None))
    L = 6
    m, v = a.normal(size=(3, L)), a.uniform(-8, 8, size=(3, L))
    w = 0.5 * np.sum(math.log(2 * math.pi) + v, axis=1) - math.log(3.0)
    z = m + 1e-3 * a.normal(size=(3, L)) * np.exp(0.5 * v)
    cases.append(("f ~ 0 by cancellation", "adversarial", z, m, v, w))
    m, v = a.normal(size=(129, 2)) * 2, a.uniform(-3, 3, (129, 2))
    cases.append(("B = 9, K = 129 (tile and block edges)", "adversarial", a.normal(size=(9, 2)), m, v,
                  a.normal(size=129)))
    m, v = a.normal(size=(400, 2)), a.uniform(-1, 1, (400, 2))
    cases.append(("log-weights rising 0.05 per component (reference moves)", "adversarial",
                  a.normal(size=(3, 2)), m, v, 0.05 * np.arange(400.0)))
    K = 130
    w = np.concatenate([[0.0], -(math.log(K) + 40.0) + a.uniform(-1, 1, K - 1)])
    cases.append(("terms at the exp-skip threshold", "adversarial", a.normal(size=(3, 2)) * 0.1,
                  np.zeros((K, 2)), np.zeros((K, 2)), w))
    m, v = a.normal(size=(5, 3)), a.uniform(-1, 1, (5, 3))
    cases.append(("log-weights +-1e300 and -inf", "adversarial", a.normal(size=(3, 3)), m, v,
                  np.array([-1e300, 1e300, -1e300, -np.inf, -1e300])))
    return cases


def _working_prec(*arrays):
    emax = 0
    vmax = 0.0
    for a in arrays:
        if a is None:
            continue
        fin = np.abs(a[np.isfinite(a)])
        if fin.size and fin.max() > 0:
            emax = max(emax, math.frexp(float(fin.max()))[1])
    if arrays[2] is not None:
        vmax = float(np.max(np.abs(arrays[2])))
    return max(256 + 2 * emax + int(1.5 * vmax), 208)


def _exact_c(mpmath, z, means, log_vars, log_weights, got):
    """Per query |f_hat - f| / (u (|f| + S)) with f, S exact (see refvae.kernels.mixture)."""
    K, L = means.shape
    prec = _working_prec(z, means, log_vars, log_weights)
    out = []
    with mpmath.workprec(prec):
        ln2pi = mpmath.log(2 * mpmath.pi)
        if log_weights is None:
            ww = [-mpmath.log(K)] * K
        else:
            ww = [mpmath.mpf(float(x)) if x > -np.inf else None for x in log_weights]
        mm = [[mpmath.mpf(float(x)) for x in row] for row in means]
        vv = [[mpmath.mpf(float(x)) for x in row] for row in log_vars]
        inv = [[mpmath.exp(-x) for x in row] for row in vv]
        const = [None if ww[k] is None else ww[k] - mpmath.fsum(ln2pi + x for x in vv[k]) / 2
                 for k in range(K)]
        pconst = [None if ww[k] is None else abs(ww[k]) + mpmath.fsum(ln2pi + abs(x) for x in vv[k]) / 2
                  for k in range(K)]
        for b in range(z.shape[0]):
            zb = [mpmath.mpf(float(x)) for x in z[b]]
            t, P = [], []
            for k in range(K):
                if const[k] is None:
                    continue
                q = mpmath.fsum((zb[l] - mm[k][l]) ** 2 * inv[k][l] for l in range(L))
                t.append(const[k] - q / 2)
                P.append(pconst[k] + q / 2)
            fh = float(got[b])
            if not t:
                out.append(0.0 if fh == -np.inf else math.inf)
                continue
            tmax = max(t)
            e = [mpmath.exp(x - tmax) for x in t]
            tot = mpmath.fsum(e)
            f = tmax + mpmath.log(tot)
            S = mpmath.fsum(ei / tot * Pi for ei, Pi in zip(e, P))
            if not math.isfinite(fh):
                out.append(math.inf)
                continue
            out.append(float(abs(mpmath.mpf(fh) - f) / (U * (abs(f) + S))))
    return np.array(out), prec


def kernel_accuracy(rng, n_random):
    """The mixture kernel's forward error against mpmath, as ``c`` in ``|f_hat - f| <= c u (|f| + S)``.

    Returns a dict (``available: False`` with a note when mpmath is not installed).
    ``n_random`` (an integer >= 1) sets the number of random points.
    """
    check_rng(rng)
    n_random = check_positive_int(n_random, "n_random")
    c_allowed = tolerance("mixture_kernel_c").c
    try:
        import mpmath
    except ImportError:
        return {"available": False, "c_allowed": c_allowed,
                "note": "skipped: mpmath is not installed (pip install mpmath: a dependency of refvae)"}
    from ...kernels.mixture import mixture_log_prob
    rows = []
    worst = (-1.0, None)
    n_pts = {"random": 0, "adversarial": 0}
    for name, kind, z, m, v, w in _kernel_cases(rng, n_random):
        got = mixture_log_prob(z, m, v, w)
        c, prec = _exact_c(mpmath, z, m, v, w, got)
        cmax = float(np.max(c))
        n_pts[kind] += len(c)
        rows.append({"name": name, "kind": kind, "B": int(z.shape[0]), "K": int(m.shape[0]),
                     "L": int(m.shape[1]), "max_c": cmax if math.isfinite(cmax) else None,
                     "prec_bits": prec, "passed": bool(cmax <= c_allowed)})
        if not math.isfinite(cmax) or cmax > worst[0]:
            worst = (cmax, name)
    finite = math.isfinite(worst[0])
    return {"available": True, "c_allowed": c_allowed, "max_c": worst[0] if finite else None,
            "worst_case": worst[1], "n_points": n_pts["random"] + n_pts["adversarial"],
            "n_random": n_pts["random"], "n_adversarial": n_pts["adversarial"],
            "passed": bool(finite and worst[0] <= c_allowed), "cases": rows,
            "oracle": f"mpmath {mpmath.__version__}, >= 208 bits, raised with the exponent range of "
                      "the inputs; error taken in mpmath (f_hat converted exactly)",
            "unit": "u (|f| + S), u = 2**-53, S = sum_k r_k (|w_k| + 1/2 sum_l (ln 2 pi + |v_kl| + "
                    "(z_l - mu_kl)^2 e^{-v_kl}))"}


