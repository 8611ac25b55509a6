r"""The standard Gaussian prior N(0, I) (text section 4.4.1.1)."""

from __future__ import annotations

import numpy as np

from .._validation import check_positive_int
from .base import LN_2PI, Prior, check_sample_size

__all__ = ["StandardPrior"]


class StandardPrior(Prior):
    r"""The standard Gaussian prior N(0, I) (text section 4.4.1.1).

    Forward: ``log p(z) = -1/2 sum_l (ln 2 pi + z_l^2)``.
    Backward: ``dz = -g z`` (d/dz_l of -z_l^2/2 is -z_l). No parameters.
    Shapes: z (B, L) -> (B,).
    """

    name = "standard"

    def forward(self, params, z):
        log_p = -0.5 * np.sum(LN_2PI + z * z, axis=-1)
        return log_p, {"z": z, "trace": [("prior.log_p", log_p)]}

    def backward(self, g, cache):
        return -g[:, None] * cache["z"], {}

    def sample(self, params, n, rng):
        n = check_positive_int(n, "n")
        check_sample_size(n, self.latent_dim, "a sample of the standard prior")
        return rng.standard_normal((n, self.latent_dim))
