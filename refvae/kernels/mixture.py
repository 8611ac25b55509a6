r"""The streaming mixture log-sum-exp kernel: log-density of a diagonal Gaussian mixture.

What it is
----------
For queries ``z`` (B, L) and K components with means and log-variances (K, L) and log-weights
``w`` (K,), the kernel returns for every row b

.. math::

    f_b = \log \sum_{k=1}^{K} \exp\big(w_k + \log \mathcal N(z_b \mid \mu_k, \operatorname{diag} e^{v_k})\big),
    \qquad
    t_{bk} = w_k - \tfrac12 \sum_l \big[\ln 2\pi + v_{kl} + (z_{bl} - \mu_{kl})^2 e^{-v_{kl}}\big].

This is the density of every mixture prior (SPEC section 4) and of the aggregated posterior
q(z) = 1/N sum_n q(z|x_n) (text eq. 4.44), where K = N can be 10^5 or more.

**Log-weights are used as given** (unnormalised): the result is a normalised mixture density
exactly when ``logsumexp(w) = 0``. Adding a constant c to every log-weight adds c to every
output. Pass ``log_softmax(logits)`` for mixture weights; ``log_weights=None`` means uniform
weights ``w_k = -ln K`` (the aggregated posterior).

Backward
--------
With responsibilities :math:`r_{bk} = \exp(t_{bk} - f_b)` (they sum to one over k) and an upstream
gradient g (B,), since :math:`\partial f_b / \partial t_{bk} = r_{bk}`:

- ``dz[b, l]      = -g_b sum_k r_bk (z_bl - mu_kl) e^{-v_kl}``
- ``dmeans[k, l]  =  sum_b g_b r_bk (z_bl - mu_kl) e^{-v_kl}``
- ``dlog_vars[k, l] = sum_b g_b r_bk * 1/2 ((z_bl - mu_kl)^2 e^{-v_kl} - 1)``
- ``dlog_weights[k] = sum_b g_b r_bk``

Shapes
------
z (B, L); means, log_vars (K, L); log_weights (K,) or None; g (B,); output (B,).

Numerics
--------
*Streaming.* No (B, K) or (B, K, L) array is ever formed: extra memory is O(B + K L) (the
components are copied once into tiles of ``TILE`` components laid out (L, TILE), so that the inner
loop runs over contiguous memory and vectorises). Queries are processed in blocks of
``QUERY_BLOCK`` so that each loaded tile is reused for several queries.

*Online log-sum-exp with a lazy reference.* Each query keeps a reference m and a sum
s = sum_k exp(t_k - m). When a tile's largest term exceeds m by more than 1, s is rescaled by
exp(m_old - m_new) and m moves; otherwise m stays. Hence at every point all terms satisfy
t - m <= 1 (no overflow, exp(t - m) <= e), the true maximum lies in [m, m + 1] at the end, and the
rescalings that do happen each shrink the old sum by at least e, so their rounding errors form a
geometric series (< 1.6 u in total). f = m + log(s).

*exp.* Exponentials are computed a tile row at a time by a branch-free, vectorised polynomial
exp (:mod:`refvae.kernels.fastexp`, <= 0.76 ulp against mpmath), which returns exactly 0.0 below a
threshold; ``math.exp`` in Numba runs one value at a time.

*Skipping terms.* A term with t - m < -(ln K + 40) counts as 0: all such terms together
contribute at most K e^{-(ln K + 40)} = e^{-40} ~ 4e-18 < u/25 relative to s >= 1, so the skip
costs at most 0.04 u absolute in f. It does not save exp evaluations: the vectorised exp runs on
every term of a tile and returns 0.0 for those below the threshold, so the forward's time does not
depend on how spread out the mixture is (``validation/SCALING.md``; at (B, K, L) = (10000, 10000,
16) 2.4% of the pairs are above the threshold, ``validation/results/bench_mixture.md``). The VJP
skips only terms whose responsibility underflows to exactly 0 (t - f < -746), so no gradient
entry is lost.

*Compensated sums.* s is accumulated with Kahan summation, the quadratic form sum_l w_l^2 on its
own accumulator (all its terms are >= 0; it is subtracted from the constant at the end, so its
rounding does not scale with |w_k|), four dimensions at a time: the four squares are added
pairwise (<= 2u) and the group sums with Kahan summation (2u whatever L). Grouping made the
forward 1.35x faster at L = 16 (the compensation's additions, not exp, bound the loop), and the
largest observed c moved from 2.19 to 2.36. The per-component
constant w_k - 1/2 sum_l (ln 2 pi + v_kl) with Neumaier summation. ``w = (z - mu) * a`` with
``a = sqrt(1/2) e^{-v/2}``: no overflow of (z - mu)^2 when the product with e^{-v} is
representable; a square that does overflow makes its term -inf (its exact value is below -1e308).

*Error bound.* With S_b = sum_k r_bk (|w_k| + 1/2 sum_l (ln 2 pi + |v_kl| + (z_bl - mu_kl)^2 e^{-v_kl})),
the natural scale of the rounding in this computation, the forward error is
``|f_hat - f| <= c u (|f| + S)``, u = 2^-53. A priori (worst case, every rounding in the same
direction): each w carries <= 6u relative error (the <= 1 ulp of exp in a, the constant sqrt(1/2),
the subtraction and the product), so a term's quadratic is within 13u of itself, the pairwise
group sums add 2u, the compensated sums 2u each, the exps 2u, the final log and addition 2u:
c <= 26 is the proven bound. Observed: max c = 2.36 over the 58 cases (40 random, 18 adversarial)
against mpmath (>= 200 bits) recorded in ``validation/kernel_accuracy.json``. Tested: the tests
assert c <= 4 (``tolerance("mixture_kernel_c").c``) on every case they generate; 4 is that test
threshold, not a guarantee.

*Range.* Log-variances must lie in [-1416, 1416] (``LOG_VAR_LIMIT``; a ``ValueError`` naming
``log_vars`` otherwise): there ``a`` and ``2a`` are normal finite doubles. Within it the forward
and the VJP are exact in the sense above for every finite z, mu: the VJP never forms e^{-v} on its
own (it overflows for v < -709.78 and underflows for v > 745 where the gradients are finite) but
``(z - mu) e^{-v} = ((z - mu) 2a) a`` (the first product overflows only when the result does, and
underflows only when the result is below it) and ``1/2 ((z - mu)^2 e^{-v} - 1) = w^2 - 1/2`` from
the forward's ``w = (z - mu) a``; with g = 1 a gradient is +-inf only when its exact value
overflows. (Not covered: |z - mu| > 1.27e308, which needs |z| or |mu| > 6e307 -- the difference
or (z - mu) 2a can overflow there, making the term -inf or the gradient inf.)

*Special values.* A component with w_k = -inf contributes nothing and gets exactly zero gradient.
If every term is -inf (all weights -inf, or every quadratic overflows), f = -inf and all gradients
are 0, never NaN. No ``fastmath``: it lets LLVM assume that no value is infinite, and the forward
kernel compiled with ``fastmath=True`` returned NaN instead of -inf for all 64 queries of a
mixture whose log-weights are all -inf (measured with Numba 0.68.1; B = 64, K = 300, L = 5).

*Determinism.* The forward and dz are computed per query; dmeans, dlog_vars, dlog_weights are
computed per component tile, each summing over queries in index order. No atomics, no shared
accumulators: results are bit-identical on repeated runs and for any number of threads.

*Sharding.* :func:`mixture_partial` returns the pair (m, s) for a shard of the components and
:func:`combine_partials` merges pairs; :func:`mixture_log_prob` is the one-shard case of the same
code path.

References
----------
SPEC.md section 4 (mixture densities), text eq. (4.44) (aggregated posterior);
``validation/results/bench_mixture.md`` (measured times, exp rates and where the time goes;
``validation/bench_mixture.py`` reproduces it).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from .fastexp import exp_shift_tile
from .._validation import as_float_array

__all__ = ["mixture_log_prob", "mixture_log_prob_vjp", "mixture_partial", "combine_partials",
           "finalize_partials", "mixture_log_prob_numpy", "mixture_log_prob_vjp_numpy",
           "check_mixture_args", "TILE", "QUERY_BLOCK", "LOG_VAR_LIMIT"]

LN_2PI = math.log(2.0 * math.pi)
SQRT_HALF = math.sqrt(0.5)
TILE = 128          #: components per tile (a multiple of 4: the sum runs in four lanes)
QUERY_BLOCK = 16    #: queries per block (each tile is reused for this many queries)
SKIP_MARGIN = 40.0  #: forward skips exp for t - m < -(ln K + SKIP_MARGIN)
VJP_UNDERFLOW = -746.0  #: exp(x) == 0.0 exactly for x < -745.14
#: log-variances must lie in [-LOG_VAR_LIMIT, LOG_VAR_LIMIT]: there a = sqrt(1/2) e^{-v/2} and 2a
#: are normal finite doubles (2a overflows below -1418.9, a is subnormal above 1416.1), which is
#: what the forward and the VJP need to be exact (see Numerics, "Range")
LOG_VAR_LIMIT = 1416.0


# --------------------------------------------------------------------------- input checking

def check_mixture_args(z, means, log_vars, log_weights=None, *, require_weights=False):
    """Validate and convert the kernel's arguments (float64, C-contiguous).

    Raises ``ValueError`` naming the argument for: wrong number of dimensions, K = 0 or B = 0 or
    L = 0, mismatched L between ``z`` and the components, ``log_vars`` not shaped like ``means``,
    NaN or inf in z/means/log_vars, ``log_vars`` outside ``[-LOG_VAR_LIMIT, LOG_VAR_LIMIT]`` =
    [-1416, 1416], ``log_weights`` of the wrong length or containing NaN or +inf (-inf is allowed:
    a switched-off component).
    """
    if not isinstance(require_weights, (bool, np.bool_)):
        raise TypeError(f"require_weights must be a bool, got {type(require_weights).__name__}")
    z = as_float_array(z, "z", ndim=2)
    means = as_float_array(means, "means", ndim=2)
    K, L = means.shape
    if z.shape[1] != L:
        raise ValueError(f"z has L = {z.shape[1]} columns but means has L = {L}; z must have shape (B, {L})")
    log_vars = as_float_array(log_vars, "log_vars", shape=(K, L))
    if not (np.min(log_vars) >= -LOG_VAR_LIMIT and np.max(log_vars) <= LOG_VAR_LIMIT):
        bad = np.argwhere(np.abs(log_vars) > LOG_VAR_LIMIT)[0]
        raise ValueError(f"log_vars must lie in [-{LOG_VAR_LIMIT:g}, {LOG_VAR_LIMIT:g}] (variances "
                         f"e^v within the float64 range); found {log_vars[tuple(bad)]!r} at index "
                         f"{tuple(int(i) for i in bad)}")
    if log_weights is None:
        if require_weights:
            raise ValueError("log_weights is required for a partial over a shard of components "
                             "(pass the global log-weights, e.g. full(K, -log N))")
        log_weights = np.full(K, -math.log(K))
    else:
        log_weights = as_float_array(log_weights, "log_weights", shape=(K,), allow_neg_inf=True)
    return z, means, log_vars, log_weights


# --------------------------------------------------------------------------- component layout

@njit(cache=True)
def _tile_components(means, log_vars, log_weights, tile):
    """Copy components into tiles: muT, aT (n_tiles, L, tile), const (n_tiles, tile).

    aT = sqrt(1/2) exp(-v/2); const = w - 1/2 sum_l (ln 2 pi + v_l) (Neumaier sum). Padding
    components have const = -inf.
    """
    K, L = means.shape
    n_tiles = (K + tile - 1) // tile
    muT = np.zeros((n_tiles, L, tile))
    aT = np.zeros((n_tiles, L, tile))
    const = np.full((n_tiles, tile), -np.inf)
    for k in range(K):
        t, j = k // tile, k % tile
        w = log_weights[k]
        if w == -np.inf:
            continue  # stays -inf with mu = 0, a = 0: contributes nothing, gets zero gradient
        # Neumaier-compensated sum of w and -1/2 (ln 2 pi + v_l)
        s = w
        c = 0.0
        for l in range(L):
            x = -0.5 * (LN_2PI + log_vars[k, l])
            tt = s + x
            if abs(s) >= abs(x):
                c += (s - tt) + x
            else:
                c += (x - tt) + s
            s = tt
            muT[t, l, j] = means[k, l]
            aT[t, l, j] = SQRT_HALF * math.exp(-0.5 * log_vars[k, l])
        const[t, j] = s + c
    return muT, aT, const


@njit(inline="always")
def _tile_terms(acc, qc, z, b0, nb, muT, aT, const, ti):
    """acc[q, k] = const[ti, k] - sum_l ((z[b0+q, l] - mu_kl) a_kl)^2 for one tile.

    The quadratic is accumulated on its own, from 0, in groups of four dimensions: each group's
    four squares are added pairwise, ``(w0^2 + w1^2) + (w2^2 + w3^2)`` (all terms >= 0, so this
    costs <= 2u relative), and the group sums are added with Kahan compensation, so the rounding
    of the whole quadratic is <= 4u of itself whatever L; it is subtracted from the constant at
    the end. A group of four costs one compensated addition instead of four: the compensation's
    additions, not the exps, were the forward's bottleneck. L mod 4 left-over dimensions form one
    last group of two and/or one. Loops run over contiguous tile rows (vectorised), and each tile
    row is reused for the nb queries of the block. A square that overflows gives a -inf term.
    """
    L = muT.shape[1]
    T = muT.shape[2]
    for q in range(nb):
        for k in range(T):
            acc[q, k] = 0.0
            qc[q, k] = 0.0
    l4 = L - L % 4
    for l in range(0, l4, 4):
        mu0, mu1, mu2, mu3 = muT[ti, l], muT[ti, l + 1], muT[ti, l + 2], muT[ti, l + 3]
        a0, a1, a2, a3 = aT[ti, l], aT[ti, l + 1], aT[ti, l + 2], aT[ti, l + 3]
        for q in range(nb):
            z0, z1, z2, z3 = z[b0 + q, l], z[b0 + q, l + 1], z[b0 + q, l + 2], z[b0 + q, l + 3]
            acc_q = acc[q]
            qc_q = qc[q]
            for k in range(T):
                w0 = (z0 - mu0[k]) * a0[k]
                w1 = (z1 - mu1[k]) * a1[k]
                w2 = (z2 - mu2[k]) * a2[k]
                w3 = (z3 - mu3[k]) * a3[k]
                y = (w0 * w0 + w1 * w1) + (w2 * w2 + w3 * w3) - qc_q[k]
                t = acc_q[k] + y
                qc_q[k] = (t - acc_q[k]) - y
                acc_q[k] = t
    if L - l4 >= 2:
        l = l4
        mu0, mu1 = muT[ti, l], muT[ti, l + 1]
        a0, a1 = aT[ti, l], aT[ti, l + 1]
        for q in range(nb):
            z0, z1 = z[b0 + q, l], z[b0 + q, l + 1]
            acc_q = acc[q]
            qc_q = qc[q]
            for k in range(T):
                w0 = (z0 - mu0[k]) * a0[k]
                w1 = (z1 - mu1[k]) * a1[k]
                y = (w0 * w0 + w1 * w1) - qc_q[k]
                t = acc_q[k] + y
                qc_q[k] = (t - acc_q[k]) - y
                acc_q[k] = t
    if L % 2 == 1:
        l = L - 1
        mu0 = muT[ti, l]
        a0 = aT[ti, l]
        for q in range(nb):
            z0 = z[b0 + q, l]
            acc_q = acc[q]
            qc_q = qc[q]
            for k in range(T):
                w0 = (z0 - mu0[k]) * a0[k]
                y = w0 * w0 - qc_q[k]
                t = acc_q[k] + y
                qc_q[k] = (t - acc_q[k]) - y
                acc_q[k] = t
    for q in range(nb):
        for k in range(T):
            v = acc[q, k]
            # v is NaN only if a square overflowed (inf - inf in the compensation): the true
            # quadratic exceeds the float range, so the term is -inf
            acc[q, k] = const[ti, k] - v if v == v else -np.inf


# --------------------------------------------------------------------------- forward

@njit(parallel=True, cache=True)
def _forward_partial_kernel(z, muT, aT, const, skip, qb):
    B = z.shape[0]
    n_tiles, L, T = muT.shape
    m_out = np.empty(B)
    s_out = np.empty(B)
    n_blocks = (B + qb - 1) // qb
    for blk in prange(n_blocks):
        b0 = blk * qb
        nb = min(qb, B - b0)
        acc = np.empty((qb, T))
        qc = np.empty((qb, T))
        ebuf = np.empty(T)
        m = np.full(qb, -np.inf)
        # four independent Kahan accumulators per query (lanes j = k mod 4): independent
        # dependency chains, combined in a fixed order at the end, so still deterministic
        s = np.zeros((qb, 4))
        comp = np.zeros((qb, 4))
        for ti in range(n_tiles):
            _tile_terms(acc, qc, z, b0, nb, muT, aT, const, ti)
            # online log-sum-exp with a lazy reference
            for q in range(nb):
                tmax = -np.inf
                for k in range(T):
                    if acc[q, k] > tmax:
                        tmax = acc[q, k]
                if tmax == -np.inf:
                    continue
                mq = m[q]
                if tmax > mq + 1.0:
                    if mq != -np.inf:
                        f = math.exp(mq - tmax)
                        for j in range(4):
                            s[q, j] *= f
                            comp[q, j] *= f
                    mq = tmax
                    m[q] = mq
                # ebuf[k] = exp(acc[q, k] - mq), exactly 0.0 below the skip threshold; branch-free
                # and vectorised (refvae.kernels.fastexp, <= 0.76 ulp)
                exp_shift_tile(acc[q], mq, ebuf, skip)
                s0, s1, s2, s3 = s[q, 0], s[q, 1], s[q, 2], s[q, 3]
                c0, c1, c2, c3 = comp[q, 0], comp[q, 1], comp[q, 2], comp[q, 3]
                for k in range(0, T, 4):
                    y0 = ebuf[k] - c0
                    t0 = s0 + y0
                    c0 = (t0 - s0) - y0
                    s0 = t0
                    y1 = ebuf[k + 1] - c1
                    t1 = s1 + y1
                    c1 = (t1 - s1) - y1
                    s1 = t1
                    y2 = ebuf[k + 2] - c2
                    t2 = s2 + y2
                    c2 = (t2 - s2) - y2
                    s2 = t2
                    y3 = ebuf[k + 3] - c3
                    t3 = s3 + y3
                    c3 = (t3 - s3) - y3
                    s3 = t3
                s[q, 0], s[q, 1], s[q, 2], s[q, 3] = s0, s1, s2, s3
                comp[q, 0], comp[q, 1], comp[q, 2], comp[q, 3] = c0, c1, c2, c3
        for q in range(nb):
            m_out[b0 + q] = m[q]
            s_out[b0 + q] = ((s[q, 0] - comp[q, 0]) + (s[q, 1] - comp[q, 1])) + \
                ((s[q, 2] - comp[q, 2]) + (s[q, 3] - comp[q, 3]))
    return m_out, s_out


def _skip_threshold(K):
    return -(math.log(K) + SKIP_MARGIN)


def _partial_checked(z, means, log_vars, log_weights):
    muT, aT, const = _tile_components(means, log_vars, log_weights, TILE)
    return _forward_partial_kernel(z, muT, aT, const, _skip_threshold(means.shape[0]), QUERY_BLOCK)


def _check_partial(m, s, m_name, s_name):
    """A (m, s) partial as float64 arrays of one shape: m finite or -inf (an empty shard), s finite
    and >= 0, s > 0 where m is finite (the sum includes its maximal term). ``ValueError`` naming
    the offending argument otherwise."""
    m = as_float_array(m, m_name, allow_neg_inf=True, allow_empty=True).reshape(np.shape(m))
    s = as_float_array(s, s_name, allow_empty=True).reshape(np.shape(s))
    if m.shape != s.shape:
        raise ValueError(f"{m_name} and {s_name} must have the same shape (one entry per query), "
                         f"got {m.shape} and {s.shape}")
    bad = (s < 0) | ((s == 0) & (m > -np.inf))
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        raise ValueError(f"{s_name} must be >= 0, and > 0 where {m_name} is finite (s sums "
                         f"exp(t - m) over the shard's terms); found s = {float(s[i])!r} with "
                         f"m = {float(m[i])!r} at index {i}")
    return m, s


def finalize_partials(m, s):
    """Turn a (m, s) partial into log-densities: f = m + log(s), and -inf where m = -inf.

    ``m``: finite or -inf; ``s``: same shape, finite, >= 0, and > 0 where m is finite (m = -inf
    with s = 0 is an empty shard). Anything else is a ``ValueError`` naming ``m`` or ``s``.
    """
    m, s = _check_partial(m, s, "m", "s")
    out = np.full(m.shape, -np.inf)
    ok = m > -np.inf
    out[ok] = m[ok] + np.log(s[ok])
    return out


def mixture_partial(z, means, log_vars, log_weights):
    """The kernel's partial result over a shard of the components.

    Returns ``(m, s)``, arrays of shape (B,), with ``sum_k exp(t_bk) = exp(m_b) * s_b`` over the
    shard's components (``log_weights`` are the *global* log-weights of these components and are
    required). ``m = -inf, s = 0`` for a shard whose terms are all -inf. Combine shards with
    :func:`combine_partials`; :func:`finalize_partials` gives the log-density.
    """
    z, means, log_vars, log_weights = check_mixture_args(z, means, log_vars, log_weights,
                                                         require_weights=True)
    return _partial_checked(z, means, log_vars, log_weights)


def combine_partials(partials):
    """Merge (m, s) partials of disjoint shards, in the given order.

    ``m = max_i m_i``, ``s = sum_i s_i exp(m_i - m)`` (shards with m_i = -inf contribute 0).
    Exact up to one rounding per shard; the fixed order makes the result reproducible.

    Each partial is a pair ``(m_i, s_i)`` checked as in :func:`finalize_partials` (m finite or
    -inf, s finite, >= 0 and > 0 where m is finite), all of one shape; otherwise a ``TypeError``
    (not a pair) or ``ValueError`` naming ``partials[i]``. The result's s is finite: terms are
    scaled by exp(m_i - m) <= 1, so it exceeds the float range only if the sum of the s_i does.
    """
    try:
        partials = list(partials)
    except TypeError:
        raise TypeError(f"partials must be a sequence of (m, s) pairs, got "
                        f"{type(partials).__name__}") from None
    if not partials:
        raise ValueError("partials must contain at least one (m, s) pair")
    checked = []
    for i, p in enumerate(partials):
        if isinstance(p, (str, bytes)) or not hasattr(p, "__len__") or len(p) != 2:
            raise TypeError(f"partials[{i}] must be an (m, s) pair of arrays, got "
                            f"{type(p).__name__}" + (f" of length {len(p)}" if hasattr(p, "__len__") else ""))
        mi, si = _check_partial(p[0], p[1], f"partials[{i}] m", f"partials[{i}] s")
        if checked and mi.shape != checked[0][0].shape:
            raise ValueError(f"partials[{i}] has shape {mi.shape} but partials[0] has "
                             f"{checked[0][0].shape}: all partials must cover the same queries")
        checked.append((mi, si))
    ms = [mi for mi, _ in checked]
    shape = ms[0].shape
    m = ms[0].copy()
    for mi in ms[1:]:
        m = np.maximum(m, mi)
    s = np.zeros(shape)
    finite = m > -np.inf
    for mi, si in checked:
        use = finite & (mi > -np.inf)
        s[use] += si[use] * np.exp(mi[use] - m[use])
    return m, s


def mixture_log_prob(z, means, log_vars, log_weights=None):
    """Log-density of a diagonal Gaussian mixture at each row of ``z`` (see module docstring).

    Forward: ``f_b = logsumexp_k [ w_k + log N(z_b | mu_k, diag exp(v_k)) ]``.

    Parameters
    ----------
    z : (B, L) queries.
    means, log_vars : (K, L) component means and log-variances; log-variances within
        ``[-LOG_VAR_LIMIT, LOG_VAR_LIMIT]`` = [-1416, 1416] (a ``ValueError`` naming ``log_vars``
        otherwise; module docstring, "Range").
    log_weights : (K,) or None. Used as given (unnormalised); None means ``-ln K`` each.

    Returns
    -------
    (B,) float64. Error ``<= c u (|f| + S)`` with c <= 26 proven, c <= 4 asserted by the tests and
    2.36 the largest observed; see the module docstring.
    """
    z, means, log_vars, log_weights = check_mixture_args(z, means, log_vars, log_weights)
    m, s = _partial_checked(z, means, log_vars, log_weights)
    return finalize_partials(m, s)


# --------------------------------------------------------------------------- VJP

@njit(inline="always")
def _responsibility_coefs(acc, coef, g, f, b0, nb, ebuf):
    """coef[q, k] = g_b r_bk = g_b exp(t_bk - f_b) for the nb queries of a block (acc holds t).

    r is exactly 0 where t - f < -746 (exp underflows) and on rows with f = -inf (no term is
    finite, so no gradient flows). Returns whether any coefficient of the block is nonzero.
    """
    T = acc.shape[1]
    any_live = False
    for q in range(nb):
        fb = f[b0 + q]
        gb = g[b0 + q]
        c_q = coef[q]
        if fb == -np.inf or gb == 0.0:
            for k in range(T):
                c_q[k] = 0.0
            continue
        exp_shift_tile(acc[q], fb, ebuf, VJP_UNDERFLOW)  # r = exp(t - f), 0.0 below -746
        for k in range(T):
            c_q[k] = gb * ebuf[k]
        any_live = True
    return any_live


@njit(parallel=True, cache=True)
def _vjp_z_kernel(g, z, f, muT, aT, const, qb, want_max=False):
    """dz[b] = -g_b sum_k r_bk (z_b - mu_k) e^{-v_k}; parallel over query blocks.

    Returns ``(dz, tmax)``; with ``want_max``, ``tmax[b] = max_k t_bk`` (the terms are at hand:
    one compare per term, to check an ``ans`` passed in), otherwise ``tmax`` is all -inf.

    Per tile: the terms of the block's queries (:func:`_tile_terms`, shared with the forward),
    coef = g r, then for each dimension the products coef_k (z_l - mu_kl) e^{-v_kl} into a tile
    row (vectorised; a product whose coef is 0 is set to 0 by a select, so a component whose
    quadratic overflowed -- r = 0, (z - mu) e^{-v} possibly inf -- never gives 0 * inf = NaN),
    summed in four lanes combined in a fixed order.
    """
    B, L = z.shape
    n_tiles, _, T = muT.shape
    dz = np.zeros((B, L))
    tmax = np.full(B, -np.inf)
    n_blocks = (B + qb - 1) // qb
    for blk in prange(n_blocks):
        b0 = blk * qb
        nb = min(qb, B - b0)
        acc = np.empty((qb, T))
        qc = np.empty((qb, T))
        coef = np.empty((qb, T))
        ebuf = np.empty(T)
        prod = np.empty(T)
        for ti in range(n_tiles):
            _tile_terms(acc, qc, z, b0, nb, muT, aT, const, ti)
            if want_max:
                for q in range(nb):
                    mx = tmax[b0 + q]
                    acc_q = acc[q]
                    for k in range(T):
                        mx = max(mx, acc_q[k])
                    tmax[b0 + q] = mx
            if not _responsibility_coefs(acc, coef, g, f, b0, nb, ebuf):
                continue
            for l in range(L):
                mu_row = muT[ti, l]
                a_row = aT[ti, l]
                for q in range(nb):
                    zl = z[b0 + q, l]
                    c_q = coef[q]
                    for k in range(T):
                        a = a_row[k]
                        # coef (z - mu) e^{-v} = coef ((z - mu) 2a) a: e^{-v} = 2 a^2 is never
                        # formed on its own (it overflows for v < -709.78 and underflows for
                        # v > 745 where the product is finite); (z - mu) 2a overflows only if the
                        # product does (a >= 1) and underflows only below it (2a < 1 or a < 1)
                        x = c_q[k] * (((zl - mu_row[k]) * (2.0 * a)) * a)
                        prod[k] = x if c_q[k] != 0.0 else 0.0
                    s0 = 0.0
                    s1 = 0.0
                    s2 = 0.0
                    s3 = 0.0
                    for k in range(0, T, 4):
                        s0 += prod[k]
                        s1 += prod[k + 1]
                        s2 += prod[k + 2]
                        s3 += prod[k + 3]
                    dz[b0 + q, l] -= (s0 + s1) + (s2 + s3)
    return dz, tmax


@njit(parallel=True, cache=True)
def _vjp_components_kernel(g, z, f, muT, aT, const, K):
    """dmeans, dlog_vars, dlog_weights: parallel over component tiles, each summing over b in order.

    Each tile takes the queries in blocks of QUERY_BLOCK (the terms of a block come from
    :func:`_tile_terms`, reusing each tile row for the block), then adds query by query, in
    index order, coef_k (z_l - mu_kl) e^{-v_kl} and coef_k 1/2 ((z_l - mu_kl)^2 e^{-v_kl} - 1)
    to the tile's rows (vectorised over the tile; zero coefficients select 0, never 0 * inf).
    """
    B, L = z.shape
    n_tiles, _, T = muT.shape
    qb = QUERY_BLOCK
    dmeans = np.zeros((K, L))
    dlog_vars = np.zeros((K, L))
    dlog_weights = np.zeros(K)
    n_blocks = (B + qb - 1) // qb
    for ti in prange(n_tiles):
        acc = np.empty((qb, T))
        qc = np.empty((qb, T))
        coef = np.empty((qb, T))
        ebuf = np.empty(T)
        dmu = np.zeros((L, T))
        dlv = np.zeros((L, T))
        dw = np.zeros(T)
        for blk in range(n_blocks):
            b0 = blk * qb
            nb = min(qb, B - b0)
            _tile_terms(acc, qc, z, b0, nb, muT, aT, const, ti)
            if not _responsibility_coefs(acc, coef, g, f, b0, nb, ebuf):
                continue
            for q in range(nb):
                c_q = coef[q]
                for k in range(T):
                    dw[k] += c_q[k]
                for l in range(L):
                    zl = z[b0 + q, l]
                    mu_row = muT[ti, l]
                    a_row = aT[ti, l]
                    dmu_row = dmu[l]
                    dlv_row = dlv[l]
                    for k in range(T):
                        a = a_row[k]
                        c = c_q[k]
                        diff = zl - mu_row[k]
                        w = diff * a   # the forward's residual, w^2 = (z - mu)^2 e^{-v} / 2
                        # (z - mu) e^{-v} = ((z - mu) 2a) a and 1/2 ((z - mu)^2 e^{-v} - 1) =
                        # w^2 - 1/2: e^{-v} = 2 a^2 is never formed on its own (it overflows for
                        # v < -709.78 and underflows for v > 745 where these are finite)
                        x_mu = c * ((diff * (2.0 * a)) * a)
                        x_lv = c * (w * w - 0.5)
                        dmu_row[k] += x_mu if c != 0.0 else 0.0
                        dlv_row[k] += x_lv if c != 0.0 else 0.0
        k0 = ti * T
        for j in range(min(T, K - k0)):
            dlog_weights[k0 + j] = dw[j]
            for l in range(L):
                dmeans[k0 + j, l] = dmu[l, j]
                dlog_vars[k0 + j, l] = dlv[l, j]
    return dmeans, dlog_vars, dlog_weights


def mixture_log_prob_vjp(g, z, means, log_vars, log_weights=None, *, ans=None, z_only=False):
    """VJP of :func:`mixture_log_prob`: returns ``(dz, dmeans, dlog_vars, dlog_weights)``.

    The function-level VJP convention (:mod:`refvae.primitives`, "Conventions"): ``g`` first,
    then the forward's inputs, ``ans`` the forward's output (keyword, optional).

    Backward (module docstring): with r_bk = exp(t_bk - f_b),
    ``dz = -g r (z - mu) e^{-v}`` summed over k, ``dmeans = +g r (z - mu) e^{-v}`` summed over b,
    ``dlog_vars = g r 1/2 ((z - mu)^2 e^{-v} - 1)`` summed over b, ``dlog_weights = g r`` summed
    over b. With ``log_weights=None`` the last entry is the gradient with respect to the uniform
    log-weights (the column sums of g r).

    Parameters
    ----------
    g : (B,) finite upstream gradient.
    ans : (B,), optional. The forward result ``mixture_log_prob(z, means, log_vars,
        log_weights)``, if already computed (saves one pass). It is checked, not trusted: shape
        (B,), no NaN or +inf, and ``max_k t_bk <= ans_b <= max_k t_bk + ln K`` up to a slack of
        ``LOG_PROB_CHECK_RTOL (1 + |max_k t_bk|)`` (1e-8 relative), ``-inf`` exactly on rows
        whose terms are all ``-inf``; otherwise a ``ValueError`` naming ``ans``. (A value off by less than the slack passes and
        scales the gradients by up to ``e^{slack}``.)
    z_only : bool. Compute dz only and return ``None`` for the component gradients (saves the
        pass over components, e.g. for the aggregated posterior, whose components are data).
    """
    if not isinstance(z_only, (bool, np.bool_)):
        raise TypeError(f"z_only must be a bool, got {type(z_only).__name__}")
    z, means, log_vars, log_weights = check_mixture_args(z, means, log_vars, log_weights)
    B = z.shape[0]
    g = as_float_array(g, "g", shape=(B,))
    muT, aT, const = _tile_components(means, log_vars, log_weights, TILE)
    if ans is None:
        m, s = _forward_partial_kernel(z, muT, aT, const, _skip_threshold(means.shape[0]), QUERY_BLOCK)
        f = finalize_partials(m, s)
    else:
        f = as_float_array(ans, "ans", shape=(B,), allow_neg_inf=True)
    dz, tmax = _vjp_z_kernel(g, z, f, muT, aT, const, QUERY_BLOCK, ans is not None)
    if ans is not None:
        _check_log_prob(f, tmax, means.shape[0])
    if z_only:
        return dz, None, None, None
    dmeans, dlog_vars, dlog_weights = _vjp_components_kernel(g, z, f, muT, aT, const, means.shape[0])
    return dz, dmeans, dlog_vars, dlog_weights


#: slack of the check of a given ``ans`` (the forward's log_prob): relative to 1 + |max_k t_bk|,
#: far above the rounding of any
#: forward (the kernel, the sharded path, the NumPy twin), far below a wrong value that matters
LOG_PROB_CHECK_RTOL = 1e-8


def _check_log_prob(f, tmax, K):
    """Reject an ``ans`` (a given log_prob ``f``) that cannot be the forward: since
    f = tmax + ln sum_k e^{t_k - tmax},
    ``tmax <= f <= tmax + ln K`` (up to rounding), and f = -inf exactly when every term is -inf."""
    live = tmax > -np.inf
    slack = LOG_PROB_CHECK_RTOL * (1.0 + np.abs(np.where(live, tmax, 0.0)))
    with np.errstate(invalid="ignore"):
        ok = np.where(live, (f >= tmax - slack) & (f <= tmax + math.log(K) + slack), f == -np.inf)
    if not ok.all():
        b = int(np.argmin(ok))
        raise ValueError(
            f"ans is not the forward mixture_log_prob(z, means, log_vars, log_weights): "
            f"ans[{b}] = {float(f[b])!r}, but it must lie in [max_k t, max_k t + ln K] = "
            f"[{float(tmax[b])!r}, {float(tmax[b]) + math.log(K)!r}] (up to rounding); pass ans=None to "
            f"recompute it")


# --------------------------------------------------------------------------- NumPy twin

def _twin_terms(z, means, log_vars, log_weights):
    """t[b, k] for a chunk of queries (complex-safe: no abs/max on the value).

    Also returns ``w = (z - mu) e^{-v/2}`` (b, K, L) and ``inv_sd = e^{-v/2}`` (K, L): the
    gradients use ``w inv_sd = (z - mu) e^{-v}`` and ``w^2``, never ``e^{-v}`` on its own (which
    overflows for v < -709.78 and underflows for v > 745 where the products are finite).
    """
    inv_sd = np.exp(-0.5 * log_vars)                              # (K, L)
    const = log_weights - 0.5 * np.sum(LN_2PI + log_vars, axis=-1)  # (K,)
    w = (z[:, None, :] - means[None, :, :]) * inv_sd[None]        # (b, K, L)
    with np.errstate(over="ignore"):  # an overflowing square is a -inf term, as in the kernel
        quad = np.sum(w * w, axis=-1)
    return const[None, :] - 0.5 * quad, w, inv_sd


def _twin_chunk(B, K, L, budget=2 ** 22):
    return max(1, min(B, budget // max(1, K * L)))


def mixture_log_prob_numpy(z, means, log_vars, log_weights=None, *, _checked=False):
    """Plain NumPy twin of :func:`mixture_log_prob` (broadcast, chunked over queries).

    Same definition and conventions, written as directly as possible:
    ``t = w - 1/2 sum(ln 2 pi + v) - 1/2 sum((z - mu)^2 e^{-v})``, then
    ``f = max_k t + log sum_k exp(t - max_k t)``. Accepts complex input (for complex-step
    derivative checks): the shift is the maximum of the real part. See also:
    docs/course/06-mixtures.md (log-sum-exp, responsibilities, streaming, with numbers).
    """
    if not _checked:
        z, means, log_vars, log_weights = _twin_args(z, means, log_vars, log_weights)
    B, L = z.shape
    K = means.shape[0]
    out = np.empty(B, dtype=np.result_type(z, means, log_vars, log_weights))
    step = _twin_chunk(B, K, L)
    for b0 in range(0, B, step):
        t, _, _ = _twin_terms(z[b0:b0 + step], means, log_vars, log_weights)
        shift = np.max(t.real, axis=1)
        fin = np.isfinite(shift)
        safe = np.where(fin, shift, 0.0)
        with np.errstate(under="ignore", divide="ignore"):  # log(0) on all -inf rows, masked below
            val = safe + np.log(np.sum(np.exp(t - safe[:, None]), axis=1))
        out[b0:b0 + step] = np.where(fin, val, -np.inf)
    return out


def mixture_log_prob_vjp_numpy(g, z, means, log_vars, log_weights=None):
    """Plain NumPy twin of :func:`mixture_log_prob_vjp` (forms the (b, K, L) chunk explicitly).

    Real input only (checked as by :func:`check_mixture_args`); ``g`` finite, shape (B,). See also:
    docs/course/06-mixtures.md (the responsibilities derived, and an exercise).
    """
    z, means, log_vars, log_weights = check_mixture_args(z, means, log_vars, log_weights)
    B, L = z.shape
    K = means.shape[0]
    g = as_float_array(g, "g", shape=(B,))
    f = mixture_log_prob_numpy(z, means, log_vars, log_weights, _checked=True)
    dz = np.zeros((B, L))
    dmeans = np.zeros((K, L))
    dlog_vars = np.zeros((K, L))
    dlog_weights = np.zeros(K)
    step = _twin_chunk(B, K, L)
    for b0 in range(0, B, step):
        sl = slice(b0, b0 + step)
        t, w, inv_sd = _twin_terms(z[sl], means, log_vars, log_weights)
        fb = f[sl]
        live = np.isfinite(fb)
        with np.errstate(under="ignore", invalid="ignore"):
            r = np.where(live[:, None], np.exp(t - np.where(live, fb, 0.0)[:, None]), 0.0)
        gr = g[sl][:, None] * r                                   # (b, K)
        with np.errstate(over="ignore", invalid="ignore"):
            ivd = w * inv_sd[None]                                # (z - mu) e^{-v}, (b, K, L)
            # (w is subnormal only where z - mu is; the twin accepts that loss of accuracy)
            quad = w * w                                          # (z - mu)^2 e^{-v}
        dead = (r == 0)[:, :, None]                               # never 0 * inf
        ivd = np.where(dead, 0.0, ivd)
        quad = np.where(dead, 0.0, quad)
        dz[sl] = -np.einsum("bk,bkl->bl", gr, ivd)
        dmeans += np.einsum("bk,bkl->kl", gr, ivd)
        dlog_vars += np.einsum("bk,bkl->kl", gr, 0.5 * (quad - 1.0) * ~dead)
        dlog_weights += gr.sum(axis=0)
    return dz, dmeans, dlog_vars, dlog_weights


def _is_complex(a):
    """True for complex array-likes; anything NumPy cannot read (ragged lists) is left to
    :func:`check_mixture_args`, which names the argument."""
    try:
        return a is not None and np.iscomplexobj(a)
    except (ValueError, TypeError):
        return False


def _twin_args(z, means, log_vars, log_weights):
    if any(_is_complex(a) for a in (z, means, log_vars, log_weights)):
        z = np.asarray(z, dtype=np.complex128)
        means = np.asarray(means, dtype=np.complex128)
        log_vars = np.asarray(log_vars, dtype=np.complex128)
        K = means.shape[0]
        log_weights = (np.full(K, -math.log(K), dtype=np.complex128) if log_weights is None
                       else np.asarray(log_weights, dtype=np.complex128))
        return z, means, log_vars, log_weights
    return check_mixture_args(z, means, log_vars, log_weights)


def set_num_threads(n):
    """Set the number of Numba threads used by the kernels (results do not depend on it)."""
    numba.set_num_threads(int(n))
