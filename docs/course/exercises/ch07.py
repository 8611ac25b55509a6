"""Chapter 7 exercises. Fill in each function, then: python -m refvae.tools.course grade 7"""
import numpy as np

from refvae.kernels.mixture import mixture_log_prob_vjp_numpy   # the mixture's VJP (chapter 6)


def vamp_vjp(g, W, U, x, z):
    """f(W, U) = ln p_vamp(z_b) - ln q(z_b | x_b) per row, with the linear encoder enc(v) = v @ W
    split in halves [mu, log_var] (W (D, 2L)), p_vamp = uniform mixture of N(enc(U_k)) (U (K, D)),
    q = N(enc(x_b)) (x (B, D)), z (B, L) fixed, g (B,). Return (dW, dU)."""
    raise NotImplementedError("exercise 7.1")
