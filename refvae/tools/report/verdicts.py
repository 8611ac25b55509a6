r"""Verdicts with their uncertainty: paired comparisons of priors over several training seeds.

Every comparison of the report is *paired*: two priors are compared on the same test images (ln p(x)
per image) and on the same seed's data split, so the image-to-image variation that both priors
share cancels.

Two-level interval (:func:`paired_interval`)
--------------------------------------------
For two priors a, b, m seeds and N test images, ``d[s, n] = ln p_a(x_n) - ln p_b(x_n)`` as
estimated on seed s. Model (two-way random effects, no replication)::

    d[s, n] = mu + beta_s + alpha_n + eps_sn,
    beta_s ~ (0, s_b^2)   seed effect (training randomness: the seed's models differ),
    alpha_n ~ (0, s_a^2)  image effect (which test images were drawn from the population),
    eps_sn ~ (0, s_e^2)   interaction and the Monte Carlo error of the two estimates,

all independent. ``mu`` is the expected difference over training runs and test images. Its
estimate is the grand mean ``D = mean_sn d[s, n]`` with
``Var(D) = s_b^2 / m + s_a^2 / N + s_e^2 / (m N)``. With the mean squares::

    MS_seeds  = N sum_s (d_s. - D)^2 / (m - 1),           E = N s_b^2 + s_e^2
    MS_images = m sum_n (d_.n - D)^2 / (N - 1),           E = m s_a^2 + s_e^2
    MS_resid  = sum_sn (d_sn - d_s. - d_.n + D)^2 / ((m - 1)(N - 1)),   E = s_e^2

``V = (MS_seeds + MS_images - MS_resid) / (m N)`` is unbiased for Var(D). It can come out
smaller than the seeds-only variance ``MS_seeds / (m N)`` (the variance of the mean of the m
per-seed means, which covers seeds and interaction but not the choice of images) when the image
term is estimated below zero; the report then uses the seeds-only variance, so an interval is
never narrower than the t interval over the per-seed means. Degrees of freedom: Satterthwaite's
``nu = V^2 / sum_i (c_i MS_i)^2 / df_i``, at least ``m - 1`` (``m - 1`` in the seeds-only case). The interval is
``D +- t_{0.975, nu} sqrt(V)``, the p-value that of ``|D| / sqrt(V)`` under t(nu). Its coverage is
checked by simulation with known answers in ``tests/test_report_verdicts.py``.

A quantity measured once per model (the hole mass, KL[p||q(z)]) has no image level: its paired
difference per seed gives a t interval over seeds (:func:`seed_interval`), whose spread includes
the Monte Carlo error of each estimate.

Multiple comparisons (:func:`holm`): Holm's step-down rule over a family (the 15 pairs of six
priors at one L; the learnable priors' hole tests at one L), family-wise error rate 5 %. A pair is
called different only when Holm rejects; otherwise "not distinguishable at this size".
"""

from __future__ import annotations

import math

import numpy as np

from ..._validation import as_float_array, check_real

__all__ = []  # used by comparisons (the report); tested in tests/test_report_verdicts.py

#: the fewest seeds for which the report states a verdict (below it: intervals only). With m
#: seeds the seed part of a variance has m - 1 degrees of freedom; at m = 3 the 97.5 % t quantile
#: is 4.3 (vs 2.8 at m = 5), and a single unusual seed moves the verdict.
MIN_SEEDS_FOR_VERDICT = 5
#: the family-wise error rate of Holm's rule and the coverage 1 - ALPHA of the intervals
ALPHA = 0.05


def _t_quantile(p, df):
    from scipy.stats import t
    return float(t.ppf(p, df))


def _t_pvalue(stat, df):
    from scipy.stats import t
    return float(2.0 * t.sf(abs(stat), df))


def _check_level(level):
    return check_real(level, "level", lo=0.0, hi=1.0, lo_open=True, hi_open=True)


def _check_mc_se(mc_se, shape):
    """None, or standard errors >= 0 of the values' shape."""
    if mc_se is None:
        return None
    mc_se = as_float_array(mc_se, "mc_se", ndim=len(shape))
    if mc_se.shape != shape:
        raise ValueError(f"mc_se must have the shape of the values {shape}, got {mc_se.shape}")
    if (mc_se < 0).any():
        raise ValueError("mc_se must be >= 0 (standard errors)")
    return mc_se


def paired_interval(d, mc_se=None, level=0.95):
    """The two-level interval (module docstring) of the mean of ``d`` (m seeds x N images, m >= 2,
    N >= 2, finite). ``mc_se`` (optional, shape (m, N), >= 0): the Monte Carlo standard error of
    each d[s, n], reported as the Monte Carlo part (it is inside the interaction term already).

    Returns a dict: ``mean``, ``se`` (sqrt V), ``df``, ``lo``, ``hi``, ``p`` (two-sided, mean 0),
    ``n_seeds``, ``n_images``, ``per_seed`` (the m per-seed means), ``seed_sd`` (their SD),
    ``image_se`` (SD over images of the seed-averaged differences / sqrt N), ``mc_se`` (Monte Carlo
    standard error of the grand mean, or None), ``seeds_only`` (True when the seeds-only variance
    was used), ``mean_squares``.
    """
    d = as_float_array(d, "d", ndim=2)
    m, n = d.shape
    if m < 2 or n < 2:
        raise ValueError(f"d must have at least 2 seeds (rows) and 2 images (columns), got shape {d.shape}")
    level = _check_level(level)
    mc_se = _check_mc_se(mc_se, d.shape)
    grand = float(d.mean())
    by_seed = d.mean(axis=1)
    by_image = d.mean(axis=0)
    resid = d - by_seed[:, None] - by_image[None, :] + grand
    ms_s = n * float(np.sum((by_seed - grand) ** 2)) / (m - 1)
    ms_n = m * float(np.sum((by_image - grand) ** 2)) / (n - 1)
    df_e = (m - 1) * (n - 1)
    ms_e = float(np.sum(resid * resid)) / df_e
    c = 1.0 / (m * n)
    v = c * (ms_s + ms_n - ms_e)
    v_seeds = c * ms_s
    seeds_only = not v > v_seeds
    if seeds_only:
        v, df = v_seeds, float(m - 1)
    else:  # Satterthwaite; floored at the seeds-only m - 1 (the subtracted MS_resid can drive the
        # formula below it although V > V_seeds; the floor keeps a near-tie of the seeds from
        # producing an absurd t quantile)
        df = v * v / ((c * ms_s) ** 2 / (m - 1) + (c * ms_n) ** 2 / (n - 1) + (c * ms_e) ** 2 / df_e)
        df = max(df, float(m - 1))
    se = math.sqrt(v)
    half = _t_quantile(0.5 + level / 2, df) * se
    p = _t_pvalue(grand / se, df) if se > 0 else (0.0 if grand != 0 else 1.0)
    mc = None
    if mc_se is not None:
        mc = float(math.sqrt(np.sum(mc_se * mc_se))) / (m * n)
    return {"mean": grand, "se": se, "df": float(df), "lo": grand - half, "hi": grand + half,
            "p": p, "level": level, "n_seeds": m, "n_images": n,
            "per_seed": [float(x) for x in by_seed],
            "seed_sd": float(np.std(by_seed, ddof=1)),
            "image_se": float(np.std(by_image, ddof=1)) / math.sqrt(n),
            "mc_se": mc, "seeds_only": bool(seeds_only),
            "mean_squares": {"seeds": ms_s, "images": ms_n, "residual": ms_e}}


def seed_interval(v, mc_se=None, level=0.95):
    """t interval over seeds of the mean of ``v`` (one finite value per seed, at least 2): the
    mean, its se ``SD / sqrt(m)``, ``df = m - 1``, ``lo``, ``hi``, ``p`` (two-sided, mean 0),
    ``seed_sd`` and (with ``mc_se``, one standard error >= 0 per seed) the Monte Carlo part of the
    se, ``sqrt(sum mc_se^2) / m``."""
    v = as_float_array(v, "v", ndim=1)
    m = len(v)
    if m < 2:
        raise ValueError(f"v must have at least 2 values (one per seed), got {m}")
    level = _check_level(level)
    mc_se = _check_mc_se(mc_se, v.shape)
    mean = float(np.mean(v))
    sd = float(np.std(v, ddof=1))
    se = sd / math.sqrt(m)
    half = _t_quantile(0.5 + level / 2, m - 1) * se
    p = _t_pvalue(mean / se, m - 1) if se > 0 else (0.0 if mean != 0 else 1.0)
    return {"mean": mean, "se": se, "df": float(m - 1), "lo": mean - half, "hi": mean + half,
            "p": p, "level": level, "n_seeds": m, "per_seed": [float(x) for x in v],
            "seed_sd": sd,
            "mc_se": None if mc_se is None else float(math.sqrt(np.sum(mc_se * mc_se))) / m}


def holm(pvalues, alpha=ALPHA):
    """Holm's step-down rule: which hypotheses of a family are rejected at family-wise error rate
    ``alpha``. ``pvalues``: a 1-d sequence of p-values in [0, 1]. Sorted ascending, p_(i) is
    rejected while p_(i) <= alpha / (k - i) (i = 0, 1, ..., k the family size); the first that is
    not stops the rule. Returns a list of booleans in the input order."""
    p = as_float_array(pvalues, "pvalues", ndim=1)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("pvalues must lie in [0, 1]")
    alpha = check_real(alpha, "alpha", lo=0.0, hi=1.0, lo_open=True)
    k = len(p)
    reject = [False] * k
    for i, j in enumerate(np.argsort(p, kind="stable")):
        if p[j] <= alpha / (k - i):
            reject[int(j)] = True
        else:
            break
    return reject
