"""Chapter 9 exercises. Fill in each function, then: python -m refvae.tools.course grade 9"""
import numpy as np


def x_sin_x_vjp(g, x):
    """VJP of the elementwise f(x) = x sin x. Return (dx,)."""
    raise NotImplementedError("exercise 9.1")


def logsumexp_vjp(g, x):
    """Find the bug: VJP of logsumexp over the last axis of x (B, K); g (B,). Return (dx,).
    Its author checked it with refvae.gradcheck.check_vjp at normalised log-probabilities."""
    return (g[:, None] * np.exp(x),)
