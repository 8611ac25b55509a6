"""refvae: a numerically rigorous reference VAE and the priors of Tomczak, *Deep Generative
Modeling*, section 4.4.1, with hand-written forward and backward passes.

The mathematical contract is ``docs/SPEC.md``; every sign and convention used here is the one
written there.

The names below are imported on first use (PEP 562), so that ``import refvae`` (and the
``refvae`` command, before it installs its interrupt handler) does not load NumPy, SciPy and
Numba: a Ctrl-C during start-up then cannot land in a half-imported package.
"""

import importlib

__version__ = "0.1.0"

#: public name -> (module, attribute or None for the module itself)
_EXPORTS = {
    "VAE": ("vae", "VAE"), "PRIORS": ("priors", "PRIORS"), "make_prior": ("priors", "make_prior"),
    "register_prior": ("priors", "register_prior"),
    "MoGPrior": ("priors", "MoGPrior"), "VampPrior": ("priors", "VampPrior"),
    "GTMPrior": ("priors", "GTMPrior"), "GTMVampPrior": ("priors", "GTMVampPrior"),
    "AggregatedPosterior": ("priors", "AggregatedPosterior"),
    "FlowPrior": ("priors", "FlowPrior"),
    "mixture_log_prob": ("kernels.mixture", "mixture_log_prob"),
    "mixture_log_prob_vjp": ("kernels.mixture", "mixture_log_prob_vjp"),
    "mixture_partial": ("kernels.mixture", "mixture_partial"),
    "combine_partials": ("kernels.mixture", "combine_partials"),
    "finalize_partials": ("kernels.mixture", "finalize_partials"),
    "gaussian": ("gaussian", None), "primitives": ("primitives", None),
    "gradcheck": ("gradcheck", None), "tolerances": ("tolerances", None),
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'refvae' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    mod = importlib.import_module(f".{module}", __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
