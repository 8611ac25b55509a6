"""Chapter 1 exercises. Fill in each function, then: python -m refvae.tools.course grade 1"""
import numpy as np


def two_layer_vjp(g, x, W1, b1, W2, b2):
    """Backward pass of y = tanh(x @ W1 + b1) @ W2 + b2.

    g: (B, out), the gradient with respect to y. Return (dx, dW1, db1, dW2, db2), each with the
    shape of its input. Recompute what you need from the forward pass (h, a) first.
    """
    raise NotImplementedError("exercise 1.1")
