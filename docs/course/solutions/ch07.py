"""Chapter 7 solutions (try the exercises first)."""
import numpy as np

from refvae.kernels.mixture import mixture_log_prob_vjp_numpy


def vamp_vjp(g, W, U, x, z):
    L = z.shape[1]
    hk, hq = U @ W, x @ W                                        # the encoder, twice
    mk, vk, mq, vq = hk[:, :L], hk[:, L:], hq[:, :L], hq[:, L:]
    # prior path: the mixture's VJP to its components, then the encoder at the pseudo-inputs
    _, dmk, dvk, _ = mixture_log_prob_vjp_numpy(g, z, mk, vk)
    dhk = np.concatenate([dmk, dvk], axis=1)
    # q path: -ln N(z | mq, exp(vq)) (chapter 3 with cotangent -g), then the encoder at the data
    w = -g[:, None] * (z - mq) * np.exp(-vq)
    dmq = w
    dvq = 0.5 * -g[:, None] * ((z - mq) ** 2 * np.exp(-vq) - 1.0)
    dhq = np.concatenate([dmq, dvq], axis=1)
    dW = U.T @ dhk + x.T @ dhq                                   # W is on both paths: add
    dU = dhk @ W.T
    return dW, dU
