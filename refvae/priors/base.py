r"""Priors p_lambda(z) (SPEC section 4) behind one interface.

The interface
-------------
A prior is an object with

- ``param_shapes`` : dict ``name -> shape`` of the parameters it owns (names start with ``prior.``);
- ``init_params(rng)`` : a dict with those keys;
- ``forward(params, z) -> (log_p, cache)`` : ``log p(z)`` per row, shape (B,); ``cache["trace"]`` is
  the ordered list of ``(name, array)`` intermediates (for golden files and the verification
  harness);
- ``backward(g, cache) -> (dz, grads)`` : the VJP of ``forward`` for an upstream gradient g (B,);
  ``grads`` maps parameter names to gradients. It contains the prior's own parameters and, for a
  prior that reads other parameters of the model (the VampPrior reads the encoder), those too;
- ``sample(params, n, rng) -> z`` of shape (n, L).

A prior is *bound* to a parameter dict (``prior.bind(params)``; the VAE binds its own ``params``)
so that the convenience methods ``log_prob(z)``, ``log_prob_vjp(g, z)`` and ``sample(n, rng)``
work without passing parameters.

References: SPEC.md section 4; Tomczak, *Deep Generative Modeling*, section 4.4.1.
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import (as_float_array, check_parameter_memory, check_positive_int,
                          check_rng)

__all__ = ["Prior"]

LN_2PI = math.log(2.0 * math.pi)


class Prior:
    """Base class: the convenience methods on top of ``forward``/``backward``/``sample``."""

    name = "prior"

    def __init__(self, latent_dim):
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.params = None

    # ---- to be provided by subclasses
    @property
    def param_shapes(self) -> dict:
        return {}

    def init_params(self, rng) -> dict:
        check_rng(rng)
        return {}

    def forward(self, params, z):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, g, cache):  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, params, n, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict:
        """JSON-able description (name and options) for saving a model."""
        return {"name": self.name}

    # ---- binding and convenience
    def bind(self, params):
        """Use ``params`` (a flat dict, usually the model's) for the convenience methods."""
        self.params = params
        return self

    def _bound(self, params):
        if params is not None:
            return params
        if self.params is None:
            if self.param_shapes:
                raise ValueError(f"the {self.name} prior is not bound to parameters: call bind(params) "
                                 "or pass params=")
            return {}
        return self.params

    def check_z(self, z):
        return as_float_array(z, "z", shape=(None, self.latent_dim))

    def log_prob(self, z, params=None):
        """log p(z) for each row of z (B, L) -> (B,)."""
        return self.forward(self._bound(params), self.check_z(z))[0]

    def log_prob_vjp(self, g, z, params=None):
        """VJP of ``log_prob``: ``(dz, grads)`` for an upstream gradient g (B,)."""
        z = self.check_z(z)
        g = as_float_array(g, "g", shape=(z.shape[0],))
        _, cache = self.forward(self._bound(params), z)
        return self.backward(g, cache)

    def draw(self, n, rng, params=None):
        """``n`` samples from the prior, shape (n, L) (alias of ``sample`` with bound params);
        ``n`` a positive int whose (n, L) sample fits the memory limit (``ValueError`` otherwise)."""
        n = check_positive_int(n, "n")
        check_sample_size(n, self.latent_dim, f"a sample of the {self.name} prior")
        return self.sample(self._bound(params), n, check_rng(rng))


def check_sample_size(n, width, what):
    """``ValueError`` if an (n, width) float64 array would exceed the memory limit."""
    check_parameter_memory(n * width, what, f"n={n} rows of width {width}", kind="values")
