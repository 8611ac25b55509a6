"""Chapter 8 exercises. Fill in each function, then: python -m refvae.tools.course grade 8

One coupling with L = 3: z_a = z[:, :1], z_b = z[:, 1:]; s = tanh(z_a @ Ws + bs),
t = z_a @ Wt + bt (Ws, Wt (1, 2); bs, bt (2,)); y_b = (z_b - t) exp(-s);
u = reverse([z_a, y_b]) (the coordinate order reversed); ln p(z) = ln N(u | 0, I) + log_det.
"""
import math

import numpy as np


def coupling_log_prob(z, Ws, bs, Wt, bt):
    """ln p(z) for z (B, 3): one value per row."""
    raise NotImplementedError("exercise 8.1")


def coupling_vjp(g, z, Ws, bs, Wt, bt):
    """Backward pass of coupling_log_prob; g (B,). Return (dz, dWs, dbs, dWt, dbt)."""
    raise NotImplementedError("exercise 8.2")


def coupling_log_prob_buggy(z, Ws, bs, Wt, bt):
    """Find the bug: this trains, but the density does not integrate to one."""
    za, zb = z[:, :1], z[:, 1:]
    s = np.tanh(za @ Ws + bs)
    t = za @ Wt + bt
    u = np.concatenate([za, (zb - t) * np.exp(-s)], axis=1)[:, ::-1]
    base = -0.5 * np.sum(math.log(2 * math.pi) + u * u, axis=1)
    log_det = 0.0
    for _ in range(z.shape[1]):          # every latent dimension
        log_det = log_det - np.sum(s, axis=1)
    return base + log_det
