r"""The reference: refvae's own model for a case configuration, and every quantity of a case.

:func:`reference_outputs` is what a case stores (the forward trace, the loss, its gradients and the
prior sample made from given draws); :func:`prior_box` is the prior's support box (the prior's
:meth:`~refvae.priors.base.Prior.support_box`), used by the quadrature and the density checks.
"""

from __future__ import annotations

import numpy as np

from ..._validation import as_float_array

__all__ = ["reference_model", "reference_outputs", "prior_box"]


def reference_model(config, params):
    """A refvae VAE built from a case configuration, with ``params`` copied in (finite arrays of
    the model's shapes; else a ``ValueError`` naming the parameter)."""
    from ...vae import VAE
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (VAE.config() plus batch_size), got {type(config).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict name -> array, got {type(params).__name__}")
    cfg = {k: v for k, v in config.items() if k != "batch_size"}
    model = VAE.from_config(cfg, np.random.default_rng(0))
    missing = sorted(set(model.params) - set(params))
    extra = sorted(set(params) - set(model.params))
    if missing or extra:
        raise ValueError(f"parameters do not match the configuration: missing {missing}, extra {extra}")
    for k in model.params:
        model.params[k] = as_float_array(params[k], f"params[{k!r}]", shape=model.params[k].shape,
                                         allow_empty=True).copy()
    model.prior.bind(model.params)
    return model


def _noise(draws):
    """The prior's noise dict (``eps``, ``index``, ...) from a case's ``prior_sample.*`` draws."""
    prefix = "prior_sample."
    return {k[len(prefix):]: v for k, v in draws.items() if k.startswith(prefix)}


def _draws(noise):
    """A case's ``prior_sample.*`` draws from the prior's noise dict (inverse of :func:`_noise`)."""
    return {f"prior_sample.{k}": v for k, v in noise.items()}


def _check_model(model):
    if not (hasattr(model, "params") and hasattr(model, "prior") and hasattr(model, "latent_dim")):
        raise TypeError(f"model must be a refvae VAE, got {type(model).__name__}")
    return model


def reference_outputs(model, x, eps, draws=None, params=None):
    """Every quantity of a case, in data-flow order: trace, ``loss``, ``grad.*``, ``prior_sample.z``.

    ``draws`` (optional) holds the prior's noise with the prefix ``prior_sample.``
    (``prior_sample.eps``, and ``prior_sample.index`` for mixtures; see the prior's
    :meth:`~refvae.priors.base.Prior.draw_noise`); ``prior_sample.z`` is the prior's
    :meth:`~refvae.priors.base.Prior.sample_from_noise` of them (omitted for a prior without
    that map).
    """
    _check_model(model)
    p = model.params if params is None else params
    cache = model.forward(x, eps, p)
    out = {}
    for name, arr in cache.trace:
        out[name] = np.array(arr, dtype=np.float64)
    out["loss"] = np.array(float(np.mean(cache.per_example)))
    grads = model.backward(cache, "mean")
    for k in p:
        out[f"grad.{k}"] = np.array(grads[k], dtype=np.float64)
    if draws is not None:
        try:
            out["prior_sample.z"] = model.prior.sample_from_noise(p, _noise(draws))
        except NotImplementedError:
            pass  # a prior that does not map given draws to samples: no prior_sample.z
    return out


def prior_box(model):
    """``(lo, hi, h, outside)`` for an L = 2 prior: a box holding all but ``outside`` of its mass
    and a grid spacing h that resolves it (the prior's
    :meth:`~refvae.priors.base.Prior.support_box`: for the built-in priors [-10, 10]^2 with
    h = 0.25 for N(0, I); every component's mean +- 10 sd with h = (smallest sd) / 4 for the
    mixtures; a box containing f^-1([-7, 7]^2) with h = (longest side) / 700 for the flow).

    ``ValueError`` unless L = 2 and the prior states its box.
    """
    _check_model(model)
    if model.latent_dim != 2:
        raise ValueError(f"prior_box needs L = 2, the model has L = {model.latent_dim}")
    box = model.prior.support_box(model.params)
    if box is None:
        raise ValueError(f"the {model.prior.name} prior states no support box (Prior.support_box "
                         "returns None): no quadrature or density grid for it")
    return box
