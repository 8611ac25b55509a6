"""Chapter 4 exercises. Fill in each function, then: python -m refvae.tools.course grade 4"""
import numpy as np


def categorical_vjp(g, x, logits, num_vals):
    """Backward pass of the categorical log-likelihood sum_d log softmax(logits[b, d, :])[x[b, d]].

    x (B, D) holds integer values 0..C-1 (as floats), logits (B, D*C) reshape C-order to
    (B, D, C), g (B,). Return (dlogits,) with dlogits of shape (B, D*C). Keep tiny entries exact.
    """
    raise NotImplementedError("exercise 4.1")


def bernoulli_vjp(g, x, logits):
    """Backward pass of sum_d x log sigma(a) + (1 - x) log sigma(-a); x, logits (B, D), g (B,).
    Return (dlogits,). Keep tiny entries exact."""
    raise NotImplementedError("exercise 4.2")
