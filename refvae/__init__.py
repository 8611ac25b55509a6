"""refvae: a numerically rigorous reference VAE and the priors of Tomczak, *Deep Generative
Modeling*, section 4.4.1, with hand-written forward and backward passes.

The mathematical contract is ``docs/SPEC.md``; every sign and convention used here is the one
written there.
"""

__version__ = "0.1.0"

from . import gaussian, gradcheck, primitives, tolerances  # noqa: E402
from .mixture import (combine_partials, finalize_partials, mixture_log_prob,  # noqa: E402
                      mixture_log_prob_vjp, mixture_partial)
from .priors import PRIORS, make_prior  # noqa: E402
from .prior_flow import FlowPrior  # noqa: E402
from .prior_mixtures import (AggregatedPosterior, GTMPrior, GTMVampPrior, MoGPrior,  # noqa: E402
                             VampPrior)

for _cls in (MoGPrior, VampPrior, GTMPrior, GTMVampPrior, FlowPrior):
    PRIORS[_cls.name] = _cls
del _cls
from .vae import VAE  # noqa: E402

__all__ = ["VAE", "PRIORS", "make_prior", "MoGPrior", "VampPrior", "GTMPrior", "GTMVampPrior",
           "FlowPrior", "AggregatedPosterior", "mixture_log_prob", "mixture_log_prob_vjp",
           "mixture_partial", "combine_partials", "finalize_partials", "gaussian", "primitives",
           "gradcheck", "tolerances", "__version__"]
