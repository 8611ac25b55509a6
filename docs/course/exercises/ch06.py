"""Chapter 6 exercises. Fill in each function, then: python -m refvae.tools.course grade 6"""
import math

import numpy as np


def mixture_log_prob(z, means, log_vars, log_weights):
    """ln sum_k exp(log_weights[k] + ln N(z_b | means[k], diag exp(log_vars[k]))) for every row
    z_b of z (B, L); means, log_vars (K, L); log_weights (K,). Return shape (B,). Stay finite far
    from every component."""
    raise NotImplementedError("exercise 6.1")


def mixture_vjp(g, z, means, log_vars, log_weights):
    """Backward pass of mixture_log_prob; g (B,). Return (dz, dmeans, dlog_vars, dlog_weights)."""
    raise NotImplementedError("exercise 6.2")


def mixture_log_prob_buggy(z, means, log_vars, log_weights):
    """Find the bug: this is a density (it integrates to one), but not the mixture prior."""
    t = -0.5 * (math.log(2 * math.pi) + log_vars[None] + (z[:, None, :] - means[None]) ** 2
                * np.exp(-log_vars[None]))                       # (B, K, L)
    t = t + log_weights[None, :, None]
    m = t.max(axis=1, keepdims=True)
    return (m[:, 0] + np.log(np.sum(np.exp(t - m), axis=1))).sum(axis=1)
