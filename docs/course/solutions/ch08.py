"""Chapter 8 solutions (try the exercises first)."""
import math

import numpy as np


def coupling_log_prob(z, Ws, bs, Wt, bt):
    za, zb = z[:, :1], z[:, 1:]
    s = np.tanh(za @ Ws + bs)
    t = za @ Wt + bt
    u = np.concatenate([za, (zb - t) * np.exp(-s)], axis=1)[:, ::-1]
    return -0.5 * np.sum(math.log(2 * math.pi) + u * u, axis=1) - np.sum(s, axis=1)   # log-det once


def coupling_vjp(g, z, Ws, bs, Wt, bt):
    za, zb = z[:, :1], z[:, 1:]
    s = np.tanh(za @ Ws + bs)
    t = za @ Wt + bt
    e = np.exp(-s)
    yb = (zb - t) * e
    u = np.concatenate([za, yb], axis=1)[:, ::-1]
    du = -g[:, None] * u                                  # base: d(-u^2/2) = -u
    dy = du[:, ::-1]                                      # undo the reversal
    dya, dyb = dy[:, :1], dy[:, 1:]
    dzb = dyb * e
    dt = -dyb * e
    ds = -dyb * yb - g[:, None]                           # y_b's dependence, and the log-det (once)
    dpre = ds * (1.0 - s * s)                             # tanh'
    dza = dya + dpre @ Ws.T + dt @ Wt.T                   # three paths into z_a
    return np.concatenate([dza, dzb], axis=1), za.T @ dpre, dpre.sum(0), za.T @ dt, dt.sum(0)


def coupling_log_prob_buggy(z, Ws, bs, Wt, bt):
    return coupling_log_prob(z, Ws, bs, Wt, bt)
