r"""Priors p_lambda(z) (SPEC section 4) behind one interface.

The interface
-------------
A prior is an object with (the arithmetic; every subclass provides these)

- ``name`` : its key in :data:`refvae.priors.PRIORS` (a class attribute);
- ``param_shapes`` : dict ``name -> shape`` of the parameters it owns (names start with ``prior.``);
- ``init_params(rng)`` : a dict with those keys;
- ``forward(params, z) -> (log_p, cache)`` : ``log p(z)`` per row, shape (B,); ``cache["trace"]`` is
  the ordered list of ``(name, array)`` intermediates (for golden files and the verification
  harness);
- ``backward(g, cache) -> (dz, grads)`` : the VJP of ``forward`` for an upstream gradient g (B,);
  ``grads`` maps parameter names to gradients. It contains the prior's own parameters and, for a
  prior that reads other parameters of the model (the VampPrior reads the encoder), those too;
- ``sample(params, n, rng) -> z`` of shape (n, L);
- ``config()`` : the JSON-able constructor options, for saving a model.

and, for the tools (the report, the golden cases, the verification harness; each has a default
here, so a new prior needs none of them to train and to be reported):

- ``settings(profile)`` / ``tiny_settings(activation, data_range)`` (class methods): constructor
  options under a validation-report profile, and for the tiny models of golden cases and gradient
  checks (default: none);
- ``randomize_params(params, rng)`` : move freshly initialised parameters off their symmetric
  starting values so that a test case exercises every path (default: random ``prior.logits``);
- ``draw_noise(n, rng)`` and ``sample_from_noise(params, noise)`` : sampling split into the random
  draws (a dict of arrays: ``"eps"`` (n, L), and ``"index"`` (n,) for a mixture) and a
  deterministic map, so that a sampler can be compared draw by draw (default: ``eps`` only, and
  :class:`NotImplementedError` for the map -- a prior without it has no sampler check);
- ``support_box(params)`` : ``(lo, hi, h, outside)``, a box holding all but ``outside`` of the
  mass and a grid spacing that resolves the density, for plots and quadrature (default ``None``:
  unknown, and the checks that need it say so);
- ``mixture_components(params)`` : ``(means, log_vars, log_weights)`` when the prior is a
  Gaussian mixture, else ``None`` (the default);
- ``cross_entropy_closed_form(params, mu, log_var)`` : ``CE[N(mu, e^log_var) || p]`` per row when
  it has a closed form, else ``None`` (the default);
- ``kl_closed_form(params, mu, log_var)`` : ``KL[N(mu, e^log_var) || p]`` per row in closed form
  (default: ``CE - H`` from ``cross_entropy_closed_form``, ``None`` when that is ``None``; the
  standard prior overrides it with :func:`refvae.gaussian.kl`, which avoids the cancellation);
- ``net_inputs_fixed`` (class attribute) : ``True`` when the prior's networks read fixed inputs
  (a grid, pseudo-inputs) rather than ``z``, so their activation kinks do not move with the data.
- ``formula`` (class attribute) : ``log p(z)`` in words, for the readers of golden cases (copied
  into the conventions of their manifests under the prior's name); ``None`` (the default) when the
  general conventions already say it (N(0, I); a plain mixture of Gaussians). A prior from
  outside refvae without one is described by the first line of its class docstring.

A prior is *bound* to a parameter dict (``prior.bind(params)``; the VAE binds its own ``params``)
so that the convenience methods ``log_prob(z)``, ``log_prob_vjp(g, z)`` and ``draw(n, rng)``
work without passing parameters.

References: SPEC.md section 4; Tomczak, *Deep Generative Modeling*, section 4.4.1.
"""

from __future__ import annotations

import math

import numpy as np

from .. import gaussian
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

    # ---- what the tools ask of a prior (defaults that any prior may override)
    #: True when the prior's networks read fixed inputs (a grid, pseudo-inputs), not z
    net_inputs_fixed = False

    #: log p(z) in words for golden-case manifests; None: the general conventions say it
    formula = None

    @classmethod
    def settings(cls, profile) -> dict:
        """Constructor options under a validation-report profile (an object with the attributes
        of :class:`refvae.tools.profiles.Profile`: ``num_components``, ``gtm_grid``, ``gtm_range``,
        ``prior_hidden``, ``activation``, ``flow_couplings``, ``num_vals``). Default: none."""
        return {}

    @classmethod
    def tiny_settings(cls, activation, data_range) -> dict:
        """Constructor options of the tiny models (L = 2) of golden cases and gradient checks;
        ``data_range`` is the (lo, hi) range of the data. Default: none."""
        return {}

    def randomize_params(self, params, rng):
        """Move freshly initialised parameters (in place) off their symmetric starting values, so
        that a test case exercises every path. Default: standard-normal ``prior.logits``."""
        if "prior.logits" in params:
            params["prior.logits"][:] = rng.standard_normal(params["prior.logits"].shape)

    def draw_noise(self, n, rng) -> dict:
        """The random draws of ``n`` samples: ``{"eps": (n, L) standard normal}``."""
        return {"eps": rng.standard_normal((n, self.latent_dim))}

    def sample_from_noise(self, params, noise):
        """The samples made from given draws (see :meth:`draw_noise`), shape (n, L)."""
        raise NotImplementedError(f"the {self.name} prior does not map given draws to samples")

    def support_box(self, params):
        """``(lo, hi, h, outside)`` for L = 2: a box holding all but ``outside`` of the mass and a
        grid spacing ``h`` that resolves the density; ``None`` when the prior does not say."""
        return None

    def mixture_components(self, params=None):
        """``(means, log_vars, log_weights)`` when the prior is a Gaussian mixture, else ``None``."""
        return None

    def cross_entropy_closed_form(self, params, mu, log_var):
        """``CE[N(mu, diag e^log_var) || p]`` per row when it has a closed form, else ``None``."""
        return None

    def kl_closed_form(self, params, mu, log_var):
        """``KL[N(mu, diag e^log_var) || p]`` per row: ``CE - H`` when the cross-entropy has a
        closed form, else ``None``."""
        ce = self.cross_entropy_closed_form(params, mu, log_var)
        if ce is None:
            return None
        return ce - gaussian.entropy(log_var)

    def _check_noise(self, noise, n=None):
        """``noise["eps"]`` as a finite (n, L) array (``ValueError`` naming it otherwise)."""
        if not isinstance(noise, dict) or "eps" not in noise:
            raise TypeError(f"noise must be a dict with 'eps' (from draw_noise), got {type(noise).__name__}")
        return as_float_array(noise["eps"], "noise['eps']", shape=(n, self.latent_dim))

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
