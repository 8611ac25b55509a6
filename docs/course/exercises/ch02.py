"""Chapter 2 exercises. Fill in each function, then: python -m refvae.tools.course grade 2"""
import numpy as np


def linear_vjp(g, x, W, b):
    """Backward pass of y = x @ W + b for a batch x (B, n), W (n, m), b (m,); g is (B, m).
    Return (dx, dW, db)."""
    raise NotImplementedError("exercise 2.1")


def leaky_relu_vjp(g, x):
    """Backward pass of leaky_relu (y = x for x > 0, 0.01 x otherwise), refvae's convention at
    x = 0. Return (dx,)."""
    raise NotImplementedError("exercise 2.2")
