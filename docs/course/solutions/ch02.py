"""Chapter 2 solutions (try the exercises first)."""
import numpy as np


def linear_vjp(g, x, W, b):
    return g @ W.T, x.T @ g, g.sum(axis=0)      # sums over the batch, not means


def leaky_relu_vjp(g, x):
    return (g * np.where(x > 0, 1.0, 0.01),)    # x = 0 takes the left slope, 0.01
