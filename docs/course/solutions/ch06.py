"""Chapter 6 solutions (try the exercises first)."""
import math

import numpy as np


def _terms(z, means, log_vars, log_weights):
    """t[b, k] = log_weights[k] + ln N(z_b | means[k], exp(log_vars[k])), summed over all L."""
    return log_weights[None] - 0.5 * np.sum(math.log(2 * math.pi) + log_vars[None]
                                            + (z[:, None] - means[None]) ** 2 * np.exp(-log_vars[None]),
                                            axis=-1)


def mixture_log_prob(z, means, log_vars, log_weights):
    t = _terms(z, means, log_vars, log_weights)
    m = t.max(axis=1)                                            # shift by the largest term
    return m + np.log(np.sum(np.exp(t - m[:, None]), axis=1))


def mixture_vjp(g, z, means, log_vars, log_weights):
    t = _terms(z, means, log_vars, log_weights)
    f = mixture_log_prob(z, means, log_vars, log_weights)
    gr = g[:, None] * np.exp(t - f[:, None])                     # g_b r_bk
    diff = z[:, None] - means[None]                              # (B, K, L)
    ivd = diff * np.exp(-log_vars[None])
    dz = -np.einsum("bk,bkl->bl", gr, ivd)
    dmeans = np.einsum("bk,bkl->kl", gr, ivd)
    dlog_vars = np.einsum("bk,bkl->kl", gr, 0.5 * (diff * ivd - 1.0))
    return dz, dmeans, dlog_vars, gr.sum(axis=0)


def mixture_log_prob_buggy(z, means, log_vars, log_weights):
    return mixture_log_prob(z, means, log_vars, log_weights)    # one logsumexp over the full vectors
