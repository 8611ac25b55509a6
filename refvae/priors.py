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

from ._validation import (as_float_array, check_choice, check_parameter_memory, check_positive_int,
                          check_rng)

__all__ = ["Prior", "StandardPrior", "PRIORS", "make_prior"]

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


def check_sample_size(n, width, what):
    """``ValueError`` if an (n, width) float64 array would exceed the memory limit."""
    check_parameter_memory(n * width, what, f"n={n} rows of width {width}", kind="values")


#: name -> prior class. The priors defined in other modules are registered at the end of this
#: module (after ``Prior`` exists, so the subclassing modules can import it), so the registry is
#: complete whichever refvae module is imported first.
PRIORS = {"standard": StandardPrior}


def make_prior(name, latent_dim, **kwargs):
    """Construct a prior by name (``PRIORS`` lists them); options go to its constructor.

    An option the prior's constructor does not take is a ``ValueError`` naming it and the
    options it does take."""
    import inspect
    check_choice(name, "prior", tuple(PRIORS))
    cls = PRIORS[name]
    sig = inspect.signature(cls.__init__)
    if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        known = [p for p in sig.parameters if p not in ("self", "latent_dim")]
        unknown = [k for k in kwargs if k not in known]
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for the {name} prior; "
                             f"it takes {', '.join(known) if known else 'no options'}")
    return cls(latent_dim, **kwargs)


#: the order of the text (section 4.4.1), kept by the registry whatever the import order
_BUILTIN_ORDER = ("standard", "mog", "vamp", "gtm", "gtm_vamp", "flow")


def _register_builtin(*classes):
    """Add built-in prior classes to :data:`PRIORS`, keeping :data:`_BUILTIN_ORDER` first."""
    for cls in classes:
        PRIORS.setdefault(cls.name, cls)
    ordered = sorted(PRIORS, key=lambda n: _BUILTIN_ORDER.index(n) if n in _BUILTIN_ORDER
                     else len(_BUILTIN_ORDER))
    items = [(n, PRIORS[n]) for n in ordered]
    PRIORS.clear()
    PRIORS.update(items)


# the built-in priors of the other modules register themselves at the end of their modules; importing
# them here (as modules: they may be half-initialised when one of them is imported first) completes
# the registry whichever refvae module is imported first
from . import prior_flow, prior_mixtures  # noqa: E402,F401
