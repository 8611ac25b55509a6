"""Chapter 9 solutions (try the exercises first)."""
import numpy as np


def x_sin_x_vjp(g, x):
    return (g * (np.sin(x) + x * np.cos(x)),)          # g times the derivative (product rule)


def logsumexp_vjp(g, x):
    m = x.max(axis=-1, keepdims=True)
    lse = m + np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))
    return (g[:, None] * np.exp(x - lse),)             # the softmax weights, not exp(x)
