r"""Priors p_lambda(z) (SPEC section 4, the text's section 4.4.1) and their registry.

The package holds one module per family and :mod:`~refvae.priors.base`, the interface every prior
implements (read its docstring first):

- :mod:`~refvae.priors.standard` -- N(0, I);
- :mod:`~refvae.priors.mixtures` -- mixture of Gaussians, VampPrior, GTM, GTM-VampPrior and the
  aggregated posterior itself;
- :mod:`~refvae.priors.flow` -- the RealNVP flow prior.

:data:`PRIORS` is the single list of prior names: the VAE, the CLI, the golden cases, the
verification harness and the report all take their choices from it. A prior defined outside
refvae joins it with :func:`register_prior` and is then used by every tool with no edit to refvae.
"""

from __future__ import annotations

import inspect

from .._validation import check_choice, register_class
from .base import Prior, check_sample_size
from .flow import FlowPrior
from .mixtures import AggregatedPosterior, GTMPrior, GTMVampPrior, MoGPrior, VampPrior
from .standard import StandardPrior

__all__ = ["Prior", "PRIORS", "make_prior", "register_prior", "StandardPrior", "MoGPrior",
           "VampPrior", "GTMPrior", "GTMVampPrior", "FlowPrior", "AggregatedPosterior"]

#: name -> prior class, in the order of the text (section 4.4.1); :func:`register_prior` appends.
PRIORS = {cls.name: cls for cls in (StandardPrior, MoGPrior, VampPrior, GTMPrior, GTMVampPrior,
                                    FlowPrior)}


def register_prior(cls):
    """Add a :class:`Prior` subclass to :data:`PRIORS` under ``cls.name`` and return it (so it can
    be used as a class decorator).

    ``TypeError`` unless ``cls`` is a subclass of :class:`Prior`; ``ValueError`` if ``cls.name`` is
    not a non-empty identifier or is already taken by another class (registering the same class
    twice is allowed).
    """
    return register_class(PRIORS, cls, Prior, "prior", "student_t")


def make_prior(name, latent_dim, **kwargs):
    """Construct a prior by name (``PRIORS`` lists them); options go to its constructor.

    An option the prior's constructor does not take is a ``ValueError`` naming it and the
    options it does take."""
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
