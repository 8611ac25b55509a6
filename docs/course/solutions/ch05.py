"""Chapter 5 solutions (try the exercises first)."""
import numpy as np


def latent_vjp(g, mu, log_var, eps):
    g = g[:, None]
    sd = np.exp(0.5 * log_var)
    z = mu + sd * eps
    # ln q(z|x): the path through z, and the direct paths into mu and log_var
    dz_q = -g * (z - mu) * np.exp(-log_var)
    dmu_q = -dz_q
    dlog_var_q = 0.5 * g * ((z - mu) ** 2 * np.exp(-log_var) - 1.0)
    # -ln p(z) with p = N(0, I): d/dz [+(z^2)/2] = z
    dz_p = g * z
    dz = dz_q + dz_p
    # back through z = mu + exp(v/2) eps
    return dmu_q + dz, dlog_var_q + dz * 0.5 * sd * eps
