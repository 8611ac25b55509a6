r"""The VAE: an MLP encoder, a decoder with a categorical, Bernoulli or Gaussian likelihood, and a
prior, with the forward pass and its hand-written backward pass.

What it computes (SPEC section 5)
---------------------------------
For a data point x and noise eps ~ N(0, I) (passed in, so a run can be replayed elsewhere):

.. math::

    (\mu, \log\sigma^2) = \mathrm{enc}(x), \quad z = \mu + e^{\frac12 \log\sigma^2} \odot \epsilon,\\
    \mathrm{elbo} = \ln p_\theta(x \mid z) + \ln p_\lambda(z) - \ln q_\phi(z \mid x),
    \qquad \mathrm{neg\_elbo} = -\mathrm{elbo}.

The loss is the batch mean of ``neg_elbo`` (``reduction="mean"``; ``"sum"`` available). For the
standard prior, ``kl="analytic"`` replaces ``ln p(z) - ln q(z|x)`` by ``-KL[q(z|x) || N(0, I)]``.

The backward pass, step by step (``d<name>`` is dLoss/d<name>)
--------------------------------------------------------------
With per-example weight c = 1/B (mean) or 1 (sum):

1. ``dlog_px_z = -c``, ``dlog_pz = -c``, ``dlog_qz = +c``.
2. Decoder: ``dlogits = likelihood_vjp(dlog_px_z)``; ``(dz_dec, grads) = mlp_backward(dlogits)``.
3. Prior: ``(dz_prior, grads) = prior.backward(dlog_pz)``.
4. Posterior density: ``(dz_q, dmu_q, dlog_var_q) = gaussian.log_prob_vjp(dlog_qz, z, mu, log_var)``.
5. ``dz = dz_dec + dz_prior + dz_q``.
6. Reparameterisation: ``dmu = dz + dmu_q``, ``dlog_var = dz * 1/2 sigma * eps + dlog_var_q``.
7. Encoder: ``(dx, grads) = mlp_backward([dmu, dlog_var])``.

Gradients of parameters that appear on several paths are summed (the VampPrior's pseudo-inputs go
through the encoder, so the encoder's gradient is the sum of its path through q(z|x) and its path
through the prior).

References: SPEC.md sections 2, 3, 5; Tomczak, *Deep Generative Modeling*, eqs. (4.33)-(4.35).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from . import gaussian, likelihoods
from ._validation import (NonFiniteIntermediateError, all_finite, as_float_array, check_choice,
                          check_mapping, check_parameter_memory, check_positive_int, check_real,
                          check_layer_widths, check_rng, first_non_finite)
from .layers import ACTIVATIONS, check_mlp_params, mlp_backward, mlp_forward, mlp_init
from .priors import PRIORS, Prior, check_sample_size, make_prior

__all__ = ["VAE", "Encoder", "Decoder", "NegElbo", "NonFiniteIntermediateError"]

#: a fixed decoder log-variance v must keep exp(+-v/2) finite in float64
MAX_ABS_DECODER_LOG_VAR = 1400.0
#: the keys of a model configuration (``VAE.config()``; ``VAE.from_config`` reads them)
CONFIG_REQUIRED = ("x_dim", "latent_dim", "hidden", "activation", "likelihood", "prior")
CONFIG_OPTIONAL = ("num_vals", "prior_kwargs", "decoder_log_var", "kl")


def _check_directory(directory):
    """A directory argument: a str or os.PathLike (TypeError naming it otherwise)."""
    import os
    if isinstance(directory, str) and not directory:
        raise ValueError("directory must be a non-empty path, got ''")
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a path (str or os.PathLike), got {type(directory).__name__} "
                        f"{directory!r}")
    return directory


def _max_abs(arrays):
    """(largest |entry|, name) over ``(name, array)`` pairs (for error messages)."""
    best, who = 0.0, None
    for name, a in arrays:
        a = np.asarray(a)
        if a.size and np.issubdtype(a.dtype, np.number):
            m = float(np.max(np.abs(a)))
            if who is None or m > best:
                best, who = m, name
    return best, who


class Encoder:
    r"""x (B, D) -> (mu, log_var), each (B, L): an MLP with 2L outputs, split in halves.

    Forward: ``h = MLP(x)``; ``mu = h[:, :L]``, ``log_var = h[:, L:]`` (SPEC section 3). x is read
    as given (no rescaling).
    Backward: ``dh = [dmu, dlog_var]`` (concatenation undoes the split), then the MLP's backward.
    """

    prefix = "encoder"

    def __init__(self, x_dim, latent_dim, hidden, activation):
        self.x_dim = x_dim = check_positive_int(x_dim, "x_dim")
        self.latent_dim = latent_dim = check_positive_int(latent_dim, "latent_dim")
        hidden = check_layer_widths(hidden)
        self.sizes = (x_dim, *hidden, 2 * latent_dim)
        self.activation = check_choice(activation, "activation", tuple(ACTIVATIONS))

    def init_params(self, rng):
        return mlp_init(self.sizes, self.prefix, rng)

    def forward(self, params, x):
        h, cache = mlp_forward(params, self.prefix, x, self.activation)
        L = self.latent_dim
        return h[:, :L], h[:, L:], cache

    def _forward(self, params, x):
        """:meth:`forward` for an ``x`` already checked by ``VAE._check_x`` (finite float64,
        C-contiguous, (B, x_dim)): the MLP does not check it again."""
        h, cache = mlp_forward.unchecked(check_mlp_params(params, self.prefix, x.shape[1]),
                                         self.prefix, x, self.activation)
        L = self.latent_dim
        return h[:, :L], h[:, L:], cache

    def backward(self, dmu, dlog_var, cache):
        return mlp_backward(np.concatenate([dmu, dlog_var], axis=1), cache)

    def _backward_sum(self, dmu, dmu_r, dlog_var, dlog_var_r, cache):
        """Unchecked ``backward(dmu + dmu_r, dlog_var + dlog_var_r, cache)``: the two sums are
        written straight into the halves of one (B, 2L) array (no concatenation)."""
        L = self.latent_dim
        dh = np.empty((dmu.shape[0], 2 * L))
        np.add(dmu, dmu_r, out=dh[:, :L])
        np.add(dlog_var, dlog_var_r, out=dh[:, L:])
        return mlp_backward.unchecked(dh, cache)


class Decoder:
    r"""z (B, L) -> the likelihood's parameters, and ``log p(x|z)`` with its VJP.

    - ``categorical``: an MLP with D*C outputs, reshaped C-order to (B, D, C) inside the likelihood;
    - ``bernoulli``: D logits;
    - ``gaussian``: D means, and ``log_var`` either the learned parameter ``decoder.log_var`` (D,)
      or a fixed float.
    """

    prefix = "decoder"

    def __init__(self, x_dim, latent_dim, hidden, activation, likelihood, num_vals, log_var):
        self.x_dim = x_dim = check_positive_int(x_dim, "x_dim")
        self.latent_dim = latent_dim = check_positive_int(latent_dim, "latent_dim")
        hidden = check_layer_widths(hidden)
        self.likelihood = check_choice(likelihood, "likelihood", tuple(likelihoods.LIKELIHOODS))
        if likelihood == "categorical" or num_vals is not None:
            num_vals = check_positive_int(num_vals, "num_vals", minimum=2)
        self.num_vals = num_vals
        if isinstance(log_var, str):
            if log_var != "learned":
                raise ValueError(f"log_var must be 'learned' or a finite float, got {log_var!r}")
            self.fixed_log_var = None
        else:
            self.fixed_log_var = check_real(log_var, "log_var (a fixed log-variance, or 'learned')",
                                            lo=-MAX_ABS_DECODER_LOG_VAR, hi=MAX_ABS_DECODER_LOG_VAR)
        out = x_dim * num_vals if likelihood == "categorical" else x_dim
        self.sizes = (latent_dim, *tuple(reversed(hidden)), out)
        self.activation = check_choice(activation, "activation", tuple(ACTIVATIONS))

    def init_params(self, rng):
        params = mlp_init(self.sizes, self.prefix, rng)
        if self.likelihood == "gaussian" and self.fixed_log_var is None:
            params["decoder.log_var"] = np.zeros(self.x_dim)
        return params

    def forward(self, params, z):
        return mlp_forward(params, self.prefix, z, self.activation)

    def _log_var(self, params):
        if self.fixed_log_var is not None:
            return np.full(self.x_dim, self.fixed_log_var)
        return params["decoder.log_var"]

    def log_prob(self, params, x, out):
        """ln p(x | z) per example, from the decoder's output ``out``."""
        if self.likelihood == "categorical":
            return likelihoods.categorical_log_prob(x, out, self.num_vals)
        if self.likelihood == "bernoulli":
            return likelihoods.bernoulli_log_prob(x, out)
        return likelihoods.gaussian_log_prob(x, out, self._log_var(params))

    def log_prob_vjp(self, g, params, x, out):
        """``(dout, grads)``: VJP of ``log_prob`` w.r.t. the decoder output (and decoder.log_var).

        Complex ``out`` (the cache of a complex-step forward) is differentiated at its real part."""
        out = np.real(out)
        if self.likelihood == "categorical":
            return likelihoods.categorical_log_prob_vjp(g, x, out, self.num_vals), {}
        if self.likelihood == "bernoulli":
            return likelihoods.bernoulli_log_prob_vjp(g, x, out), {}
        dmean, dlog_var = likelihoods.gaussian_log_prob_vjp(g, x, out, np.real(self._log_var(params)))
        grads = {} if self.fixed_log_var is not None else {"decoder.log_var": dlog_var}
        return dmean, grads

    def backward(self, dout, cache):
        return mlp_backward(dout, cache)

    # -- unchecked variants used by VAE.forward/backward (x validated once at the boundary) --
    def _check_x(self, x):
        """Cheap check that the (already float64, (B, D)) ``x`` suits the likelihood; returns the
        form the private likelihood path uses (category indices for ``categorical``)."""
        if self.likelihood == "categorical":
            return likelihoods._check_categorical_x(x, self.num_vals)
        return x

    def _log_prob(self, params, x, xl, out):
        """``(log_prob(params, x, out), lik_cache)``; ``xl`` from :meth:`_check_x`."""
        if self.likelihood == "categorical":
            a = out.reshape(out.shape[0], self.x_dim, self.num_vals)
            return likelihoods._categorical_log_prob_and_cache(xl, a)
        return self.log_prob(params, x, out), None

    def _log_prob_vjp(self, g, params, x, xl, out, lik_cache):
        """:meth:`log_prob_vjp` from the forward's ``lik_cache`` (no second pass over the logits'
        exponentials); complex logits take the checked public path."""
        if self.likelihood == "categorical" and not np.iscomplexobj(lik_cache[1]):
            d = likelihoods._categorical_vjp_from_cache(g, xl, lik_cache)
            return d.reshape(out.shape[0], -1), {}
        dout, grads = self.log_prob_vjp(g, params, x, out)
        return np.ascontiguousarray(dout, dtype=np.float64), grads

    def _backward(self, dout, cache):
        return mlp_backward.unchecked(dout, cache)

    def mean(self, params, out):
        """The likelihood's mean: E[x | z] (categorical: sum_c c p_c; Bernoulli: sigmoid)."""
        if self.likelihood == "categorical":
            logits = out.reshape(out.shape[0], self.x_dim, self.num_vals)
            p = np.exp(logits - logits.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            return p @ np.arange(self.num_vals, dtype=np.float64)
        if self.likelihood == "bernoulli":
            from .primitives import sigmoid
            return sigmoid(out)
        return out


@dataclass
class NegElbo:
    """The negative ELBO and its per-example parts (all (B,) except ``value``).

    ``per_example = -(log_px_z + log_pz - log_qz_x)``; ``kl = log_qz_x - log_pz`` (the Monte Carlo
    single-sample KL) or the analytic KL with ``kl="analytic"``, in which case ``log_pz`` and
    ``log_qz_x`` are still reported (evaluated at the same z) but the value uses the analytic KL.
    """

    value: float
    per_example: np.ndarray
    log_px_z: np.ndarray
    log_pz: np.ndarray
    log_qz_x: np.ndarray
    kl: np.ndarray
    reduction: str


class VAE:
    """A VAE with hand-written forward and backward passes (SPEC sections 2, 3, 5).

    Parameters
    ----------
    x_dim, latent_dim : int >= 1
    hidden : int or tuple of int >= 1. Encoder hidden widths; the decoder uses them reversed.
    activation : one of ``leaky_relu`` (slope 0.01), ``relu``, ``tanh``, ``sigmoid``, ``softplus``.
    likelihood : ``categorical`` (needs ``num_vals``), ``bernoulli`` or ``gaussian``.
    num_vals : int >= 2, number of categories C (17 for the digits data, values 0..16); ignored
        (but still checked when given) for the other likelihoods.
    prior : name in ``refvae.priors.PRIORS`` or a :class:`~refvae.priors.Prior` instance with the
        same ``latent_dim``.
    prior_kwargs : dict or None, options for a prior given by name (an error with an instance).
    decoder_log_var : ``"learned"`` or a real number in [-1400, 1400] (fixed log-variance of the
        Gaussian likelihood; a bool is a TypeError).
    kl : ``"mc"`` (single-sample Monte Carlo, default) or ``"analytic"`` (standard prior only).
    rng : numpy.random.Generator, for the initial parameters (required).

    Every argument is checked at construction (``TypeError``/``ValueError`` naming it), and so is
    the total parameter count: more than ``refvae._validation.MAX_PARAMETER_BYTES`` (16 GiB) or
    the machine's memory is a ``ValueError`` saying how much is needed, before any allocation.

    Attributes
    ----------
    params : dict[str, ndarray]
        Flat parameter dict, names as in SPEC section 3 (``encoder.0.W``, ..., ``prior.*``).
    """

    def __init__(self, x_dim, latent_dim, hidden=(256, 256), activation="leaky_relu",
                 likelihood="categorical", num_vals=17, prior="standard", *, rng,
                 prior_kwargs=None, decoder_log_var="learned", kl="mc"):
        check_rng(rng)
        self.x_dim = check_positive_int(x_dim, "x_dim")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.hidden = check_layer_widths(hidden)
        self.activation = check_choice(activation, "activation", tuple(ACTIVATIONS))
        self.likelihood = check_choice(likelihood, "likelihood", tuple(likelihoods.LIKELIHOODS))
        if num_vals is None:
            if likelihood == "categorical":
                raise TypeError("num_vals must be an integer >= 2 for the categorical likelihood, got None")
        else:
            num_vals = check_positive_int(num_vals, "num_vals", minimum=2)
        self.num_vals = num_vals if likelihood == "categorical" else None
        self.kl = check_choice(kl, "kl", ("mc", "analytic"))
        if isinstance(decoder_log_var, str):
            if decoder_log_var != "learned":
                raise ValueError(f"decoder_log_var must be 'learned' or a finite float, got {decoder_log_var!r}")
        else:
            decoder_log_var = check_real(decoder_log_var, "decoder_log_var (a fixed log-variance, or "
                                         "'learned')", lo=-MAX_ABS_DECODER_LOG_VAR,
                                         hi=MAX_ABS_DECODER_LOG_VAR)
        self.decoder_log_var = decoder_log_var
        self.encoder = Encoder(self.x_dim, self.latent_dim, self.hidden, self.activation)
        self.decoder = Decoder(self.x_dim, self.latent_dim, self.hidden, self.activation,
                               self.likelihood, self.num_vals, decoder_log_var)
        self.prior_kwargs = check_mapping(prior_kwargs, "prior_kwargs")
        if isinstance(prior, Prior):
            if prior.latent_dim != self.latent_dim:
                raise ValueError(f"prior has latent_dim {prior.latent_dim} but the VAE has latent_dim "
                                 f"{self.latent_dim}; they must be equal")
            if self.prior_kwargs:
                raise ValueError("prior_kwargs apply to a prior given by name; a Prior instance "
                                 f"({type(prior).__name__}) is used as constructed, got prior_kwargs "
                                 f"{self.prior_kwargs!r}")
            self.prior = prior
        else:
            if not isinstance(prior, str):
                raise TypeError(f"prior must be a name ({', '.join(map(repr, PRIORS))}) or a Prior "
                                f"instance, got {type(prior).__name__} {prior!r}")
            check_choice(prior, "prior", tuple(PRIORS))
            self.prior = make_prior(prior, self.latent_dim, **self._prior_context(prior),
                                    **self.prior_kwargs)
        if self.kl == "analytic" and self.prior.name != "standard":
            raise ValueError(f"kl='analytic' is available for the standard prior only, not {self.prior.name!r}")
        self._check_size()
        self.params = {}
        self.params.update(self.encoder.init_params(rng))
        self.params.update(self.decoder.init_params(rng))
        self.params.update(self.prior.init_params(rng))
        self.prior.bind(self.params)

    def _check_size(self):
        """The parameter count, checked against the memory limit before anything is allocated."""
        def mlp(sizes):
            return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
        n_enc, n_dec = mlp(self.encoder.sizes), mlp(self.decoder.sizes)
        n_dec += self.x_dim if (self.likelihood == "gaussian" and self.decoder_log_var == "learned") else 0
        n_prior = sum(math.prod(s) for s in self.prior.param_shapes.values())
        check_parameter_memory(n_enc + n_dec + n_prior, "the VAE",
                               f"x_dim={self.x_dim}, latent_dim={self.latent_dim}, hidden={self.hidden}"
                               + (f", num_vals={self.num_vals}" if self.num_vals else "")
                               + f"; encoder {n_enc:,}, decoder {n_dec:,}, prior {n_prior:,}")

    def _prior_context(self, name):
        """Arguments a prior may need from the model (the encoder, for the VampPrior family)."""
        needs = getattr(PRIORS[name], "needs", ())
        ctx = {}
        if "encoder" in needs:
            ctx["encoder"] = self.encoder
        if "x_dim" in needs:
            ctx["x_dim"] = self.x_dim
        return ctx

    # ------------------------------------------------------------------ configuration
    def config(self) -> dict:
        """JSON-able configuration; ``VAE.from_config(config, rng)`` rebuilds the architecture."""
        return {"x_dim": self.x_dim, "latent_dim": self.latent_dim, "hidden": list(self.hidden),
                "activation": self.activation, "likelihood": self.likelihood,
                "num_vals": self.num_vals, "prior": self.prior.name,
                "prior_kwargs": self.prior.config().get("kwargs", self.prior_kwargs),
                "decoder_log_var": self.decoder_log_var, "kl": self.kl}

    @classmethod
    def from_config(cls, config, rng=None):
        """Rebuild the architecture from :meth:`config`'s dict (parameters freshly initialised).

        Required keys: ``CONFIG_REQUIRED`` (x_dim, latent_dim, hidden, activation, likelihood,
        prior); optional: ``CONFIG_OPTIONAL`` (num_vals: default 17, or absent/None for a
        non-categorical likelihood; prior_kwargs: default {}; decoder_log_var: "learned"; kl: "mc").
        A missing or an unknown key is a ``ValueError`` naming it; every value is checked by the
        constructor (``num_vals: 0`` is an error, not the default).
        """
        from collections.abc import Mapping
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict (VAE.config()), got {type(config).__name__}")
        cfg = dict(config)
        missing = [k for k in CONFIG_REQUIRED if k not in cfg]
        if missing:
            raise ValueError(f"the model config is missing {', '.join(map(repr, missing))}; expected "
                             f"the keys {', '.join(CONFIG_REQUIRED)} (and optionally "
                             f"{', '.join(CONFIG_OPTIONAL)})")
        unknown = [k for k in cfg if k not in CONFIG_REQUIRED + CONFIG_OPTIONAL]
        if unknown:
            raise ValueError(f"the model config has unknown key(s) {', '.join(map(repr, unknown))}; "
                             f"expected the keys {', '.join(CONFIG_REQUIRED)} (and optionally "
                             f"{', '.join(CONFIG_OPTIONAL)})")
        num_vals = cfg.get("num_vals")
        if num_vals is None:
            num_vals = 17 if cfg["likelihood"] == "categorical" else None
        hidden = cfg["hidden"]
        if isinstance(hidden, list):
            hidden = tuple(hidden)
        return cls(cfg["x_dim"], cfg["latent_dim"], hidden, cfg["activation"],
                   cfg["likelihood"], num_vals, cfg["prior"],
                   rng=rng if rng is not None else np.random.default_rng(0),
                   prior_kwargs=cfg.get("prior_kwargs"),
                   decoder_log_var=cfg.get("decoder_log_var", "learned"), kl=cfg.get("kl", "mc"))

    def save(self, directory):
        """Write ``params.npz`` and ``config.json`` to ``directory`` (no pickle)."""
        from .io import save_params
        _check_directory(directory)
        save_params(directory, self.params, {"model": self.config()})

    @classmethod
    def load(cls, directory):
        """Rebuild a model saved with :meth:`save`; mismatched arrays give a ValueError."""
        from .io import load_params
        _check_directory(directory)
        _, cfg = load_params(directory)
        if "model" not in cfg:
            raise ValueError(f"{directory}/config.json has no 'model' entry; not a refvae model")
        try:
            model = cls.from_config(cfg["model"])
        except (TypeError, ValueError) as e:
            raise type(e)(f"{directory}/config.json: {e}") from None
        shapes = {k: v.shape for k, v in model.params.items()}
        params, _ = load_params(directory, shapes)
        for k in model.params:
            model.params[k] = params[k]
        return model

    # ------------------------------------------------------------------ checks
    def _check_x(self, x):
        x = as_float_array(x, "x", shape=(None, self.x_dim))
        return x

    def _check_eps(self, eps, B):
        return as_float_array(eps, "eps", shape=(B, self.latent_dim))

    # ------------------------------------------------------------------ forward
    def encode(self, x, params=None):
        """(mu, log_var) of q(z|x), each (B, L). An intermediate that overflows for finite x and
        parameters is a :class:`NonFiniteIntermediateError` naming it (as in :meth:`forward`)."""
        p = self.params if params is None else params
        x = self._check_x(x)
        with np.errstate(over="ignore", invalid="ignore"):
            mu, log_var, cache = self.encoder.forward(p, x)
        if not all_finite(cache["trace"][-1][1]):
            self._overflow(cache["trace"], x, None, p, where="encoder")
        return mu, log_var

    def decode(self, z, params=None):
        """The decoder's output for latents z (logits, or means for the Gaussian likelihood). An
        intermediate that overflows for finite z and parameters is a
        :class:`NonFiniteIntermediateError` naming it."""
        p = self.params if params is None else params
        z = as_float_array(z, "z", shape=(None, self.latent_dim))
        with np.errstate(over="ignore", invalid="ignore"):
            out, cache = self.decoder.forward(p, z)
        if not all_finite(out):
            self._overflow(cache["trace"], None, None, p, where="decoder")
        return out

    def _overflow(self, candidates, x, eps, p, where="forward"):
        """Raise :class:`NonFiniteIntermediateError` naming the first non-finite entry of the
        ``(name, array)`` pairs ``candidates`` (data-flow order) and the largest inputs."""
        hit = first_non_finite(candidates)
        name, idx, val = hit if hit is not None else ("neg_elbo", (), np.nan)
        val = complex(val) if np.iscomplexobj(val) else float(val)
        mp, pname = _max_abs(p.items()) if isinstance(p, dict) else (0.0, None)
        sizes = [(mp, "the parameters", f"|parameter| = {mp:.3g} ({pname})")]
        for arr, label in ((eps, "eps"), (x, "x")):
            if arr is not None:
                m = float(np.max(np.abs(arr))) if np.size(arr) else 0.0
                sizes.insert(0, (m, label, f"|{label}| = {m:.3g}"))
        # which input is out of its usual range: eps ~ N(0, 1), parameters ~ 1, data as given
        guess = max(sizes, key=lambda t: t[0])[1].replace("the parameters", "parameters")
        names = [t[1] for t in sizes]
        inputs = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        raise NonFiniteIntermediateError(
            f"the {where} pass overflowed at {name} ({val!r} at index {idx}): {inputs} are finite, "
            f"but {name} is not representable in float64; largest "
            f"{', '.join(t[2] for t in sizes)} ({guess} too large?)")

    def forward(self, x, eps, params=None):
        """The whole forward pass; returns a cache with every intermediate (``cache["trace"]``:
        ordered ``(name, array)`` pairs in data-flow order).

        x, eps and the parameters must be finite (``ValueError`` naming them otherwise). If they
        are finite but an intermediate overflows (or becomes inf - inf), the pass stops with
        :class:`~refvae._validation.NonFiniteIntermediateError` (a ``ValueError``) naming the first
        non-finite intermediate of the trace and the largest |x|, |eps| and |parameter|: never a
        NaN loss. With ``kl="analytic"``, ``log_pz`` and ``log_qz_x`` are reported but not used,
        and may be ``-inf`` (their rounded value) when z is huge.
        """
        p = self.params if params is None else params
        x = self._check_x(x)
        eps = self._check_eps(eps, x.shape[0])
        xl = self.decoder._check_x(x)       # x suits the likelihood (categorical: indices 0..C-1)

        def check(arr, trace):
            if not all_finite(arr):
                self._overflow(trace, x, eps, p)

        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            mu, log_var, enc_cache = self.encoder._forward(p, x)   # x checked above, not again
            trace = list(enc_cache["trace"])
            check(trace[-1][1], trace)
            # mu, log_var: C-contiguous copies of the encoder's output halves, as the public
            # gaussian.* functions would make them; the unchecked kernels then see the same arrays
            mu_c, log_var_c = np.ascontiguousarray(mu), np.ascontiguousarray(log_var)
            z = gaussian.reparameterize.unchecked(mu_c, log_var_c, eps)
            trace += [("mu", mu), ("log_var", log_var), ("eps", eps), ("z", z)]
            check(z, trace)
            out, dec_cache = self.decoder.forward(p, z)
            trace += list(dec_cache["trace"])
            check(out, trace)
            log_px_z, lik_cache = self.decoder._log_prob(p, x, xl, out)
            trace += [("log_px_z", log_px_z)]
            check(log_px_z, trace)
            used = list(trace)           # the intermediates the value depends on
            log_pz, prior_cache = self.prior.forward(p, z)
            log_qz_x = gaussian.log_prob.unchecked(z, mu_c, log_var_c)
            if self.kl == "analytic":
                zeros = np.zeros(self.latent_dim)
                kl = gaussian.kl.unchecked(mu_c, log_var_c, zeros, zeros)
            else:
                kl = log_qz_x - log_pz
                used += list(prior_cache["trace"]) + [("log_pz", log_pz), ("log_qz_x", log_qz_x)]
            per_example = -(log_px_z - kl)
            used += [("kl", kl), ("neg_elbo", per_example)]
            check(per_example, used)
        trace += list(prior_cache["trace"])
        trace += [("log_pz", log_pz), ("log_qz_x", log_qz_x), ("kl", kl), ("neg_elbo", per_example)]
        return {"x": x, "eps": eps, "mu": mu, "log_var": log_var, "z": z, "out": out,
                "log_px_z": log_px_z, "log_pz": log_pz, "log_qz_x": log_qz_x, "kl": kl,
                "per_example": per_example, "enc": enc_cache, "dec": dec_cache,
                "prior": prior_cache, "params": p, "trace": trace,
                "_x_lik": xl, "_lik": lik_cache, "_mu_c": mu_c, "_log_var_c": log_var_c}

    def trace(self, x, eps, params=None):
        """Every intermediate of the forward pass, as an ordered dict name -> array."""
        return dict(self.forward(x, eps, params)["trace"])

    @staticmethod
    def _reduce(per_example, reduction):
        """The batch mean or sum of finite per-example values. A mean whose sum overflows is
        computed with the values scaled by a power of two (exact scaling: the same rounding as the
        plain mean); a sum beyond float64 is a :class:`NonFiniteIntermediateError`."""
        check_choice(reduction, "reduction", ("mean", "sum"))
        with np.errstate(over="ignore", invalid="ignore"):
            value = np.mean(per_example) if reduction == "mean" else np.sum(per_example)
        if np.isfinite(value):
            return float(value.real if np.iscomplexobj(value) else value)
        if reduction == "mean" and not np.iscomplexobj(per_example) and all_finite(per_example):
            k = math.frexp(float(np.max(np.abs(per_example))))[1]
            with np.errstate(over="ignore"):
                value = math.ldexp(float(np.mean(np.ldexp(per_example, -k))), k) \
                    if k <= 1100 else math.inf
            if math.isfinite(value):
                return value
        raise NonFiniteIntermediateError(
            f"neg_elbo with reduction={reduction!r} is not representable in float64: the per-example "
            f"values are finite (largest |value| {float(np.max(np.abs(per_example))):.3g}) but their "
            f"{reduction} overflows" + ("; use reduction='mean'" if reduction == "sum" else ""))

    def neg_elbo(self, x, eps, reduction="mean", params=None) -> NegElbo:
        """Negative ELBO (SPEC section 5) with its per-example parts."""
        c = self.forward(x, eps, params)
        return NegElbo(self._reduce(c["per_example"], reduction), c["per_example"], c["log_px_z"],
                       c["log_pz"], c["log_qz_x"], c["kl"], reduction)

    def loss(self, x, eps, params=None) -> float:
        """Batch mean of neg_elbo (the training loss)."""
        return self.neg_elbo(x, eps, "mean", params).value

    # ------------------------------------------------------------------ backward
    def backward(self, cache, reduction="mean"):
        """Gradient dict (keys and shapes of ``params``) of the reduced neg_elbo; see module doc.

        A gradient entry that overflows (finite forward pass, non-finite gradient) is a
        :class:`~refvae._validation.NonFiniteIntermediateError` naming the parameter: never a
        silent NaN or inf gradient.
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            grads = self._backward(cache, reduction)
        for k, g in grads.items():
            if not all_finite(g):
                self._overflow([(f"grads[{k!r}]", g)], cache.get("x"), cache.get("eps"), cache.get("params"),
                               where="backward")
        return grads

    def _backward(self, cache, reduction):
        """:meth:`backward` without the final check of the gradients."""
        check_choice(reduction, "reduction", ("mean", "sum"))
        p = cache["params"]
        B = cache["x"].shape[0]
        c = np.full(B, 1.0 / B if reduction == "mean" else 1.0)
        # Gradients of parameters on several paths are summed in path order. The first term of
        # each is stored as ``v + 0.0`` (in place for arrays owned here), which has the bits of
        # ``zeros + v`` (-0.0 becomes +0.0) without the zeros; later terms are added in place.
        acc = {}

        def add(gs, owned=False):
            for k, v in gs.items():
                if k in acc:
                    acc[k] += v
                elif owned and isinstance(v, np.ndarray) and v.dtype == np.float64 \
                        and v.flags.writeable and isinstance(p[k], np.ndarray) \
                        and p[k].dtype == np.float64 and v.shape == p[k].shape:
                    acc[k] = np.add(v, 0.0, out=v)
                else:
                    acc[k] = np.zeros_like(p[k])
                    acc[k] += v

        if "_lik" in cache:
            x, xl = cache["x"], cache["_x_lik"]
            mu, log_var = cache["_mu_c"], cache["_log_var_c"]
            z, eps = cache["z"], cache["eps"]
            # decoder path: d(-log p(x|z))
            dout, g_lik = self.decoder._log_prob_vjp(-c, p, x, xl, cache["out"], cache["_lik"])
            add(g_lik)
            dz, g_dec = self.decoder._backward(dout, cache["dec"])
            add(g_dec, owned=True)
            if self.kl == "analytic":
                zeros = np.zeros(self.latent_dim)
                dmu, dlog_var, _, _ = gaussian.kl_vjp.unchecked(c, mu, log_var, zeros, zeros)
            else:
                dz_p, g_prior = self.prior.backward(-c, cache["prior"])
                add(g_prior)
                dz_q, dmu, dlog_var = gaussian.log_prob_vjp.unchecked(c, z, mu, log_var)
                dz = dz + dz_p + dz_q
            dmu_r, dlog_var_r, _ = gaussian.reparameterize_vjp.unchecked(dz, mu, log_var, eps)
            _, g_enc = self.encoder._backward_sum(dmu, dmu_r, dlog_var, dlog_var_r, cache["enc"])
            add(g_enc, owned=True)
        else:  # a cache assembled by hand (no private entries): the checked path
            mu, log_var, z, eps = cache["mu"], cache["log_var"], cache["z"], cache["eps"]
            dout, g_lik = self.decoder.log_prob_vjp(-c, p, cache["x"], cache["out"])
            add(g_lik)
            dz, g_dec = self.decoder.backward(dout, cache["dec"])
            add(g_dec)
            if self.kl == "analytic":
                zeros = np.zeros(self.latent_dim)
                dmu, dlog_var, _, _ = gaussian.kl_vjp(c, mu, log_var, zeros, zeros)
            else:
                dz_p, g_prior = self.prior.backward(-c, cache["prior"])
                add(g_prior)
                dz_q, dmu, dlog_var = gaussian.log_prob_vjp(c, z, mu, log_var)
                dz = dz + dz_p + dz_q
            dmu_r, dlog_var_r, _ = gaussian.reparameterize_vjp(dz, mu, log_var, eps)
            _, g_enc = self.encoder.backward(dmu + dmu_r, dlog_var + dlog_var_r, cache["enc"])
            add(g_enc)
        return {k: acc[k] if k in acc else np.zeros_like(v) for k, v in p.items()}

    def neg_elbo_and_grad(self, x, eps, reduction="mean", params=None):
        """``(value, grads)``: the reduced neg_elbo and its gradient w.r.t. every parameter."""
        cache = self.forward(x, eps, params)
        return self._reduce(cache["per_example"], reduction), self.backward(cache, reduction)

    # ------------------------------------------------------------------ sampling
    def sample(self, n, rng, params=None, mode="mean"):
        """Decode ``n`` draws from the prior: ``mode="mean"`` gives E[x|z], ``"sample"`` draws x."""
        check_rng(rng)
        check_choice(mode, "mode", ("mean", "sample"))
        p = self.params if params is None else params
        n = check_positive_int(n, "n")
        check_sample_size(n, max(self.latent_dim, *self.decoder.sizes), "the sample")
        z = self.prior.sample(p, n, rng)
        with np.errstate(over="ignore", invalid="ignore"):
            out, dec_cache = self.decoder.forward(p, z)
        if not all_finite(out):
            self._overflow([("z", z)] + list(dec_cache["trace"]), None, None, p, where="sampling")
        if mode == "mean":
            return self.decoder.mean(p, out)
        if self.likelihood == "categorical":
            logits = out.reshape(n, self.x_dim, self.num_vals)
            gumbel = -np.log(-np.log(rng.uniform(size=logits.shape)))
            return np.argmax(logits + gumbel, axis=-1).astype(np.float64)
        if self.likelihood == "bernoulli":
            return (rng.uniform(size=out.shape) < self.decoder.mean(p, out)).astype(np.float64)
        sd = np.exp(0.5 * self.decoder._log_var(p))
        return out + sd * rng.standard_normal(out.shape)
