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
:meth:`VAE.forward` returns a :class:`VAECache` (every intermediate, and the caches of the
encoder, decoder, likelihood and prior); :meth:`VAE.backward` reads it, one line per step.
With per-example weight c = 1/B (mean) or 1 (sum):

1. ``dlog_px = -c``, ``dlog_pz = -c``, ``dlog_qz = +c``.
2. Decoder: ``(dout, grads) = likelihood.backward(dlog_px)``; ``(dz, grads) = mlp_backward(dout)``.
3. Prior: ``(dz_p, grads) = prior.backward(dlog_pz)``.
4. Posterior density: ``(dz_q, dmu_q, dlog_var_q) = gaussian.log_prob_vjp(dlog_qz, z, mu, log_var)``.
5. ``dz = dz + dz_p + dz_q``.
6. Reparameterisation: ``(dmu_r, dlog_var_r) = gaussian.reparameterize_vjp(dz, mu, log_var, eps)``,
   i.e. ``dmu_r = dz``, ``dlog_var_r = dz * 1/2 sigma * eps``.
7. Encoder: ``(dx, grads) = mlp_backward([dmu_q + dmu_r, dlog_var_q + dlog_var_r])``.

With ``kl="analytic"`` steps 3-5 are replaced by ``(dmu_q, dlog_var_q) = gaussian.kl_vjp(c, mu,
log_var, 0, 0)`` (z then has the decoder's path only).

Gradients of parameters that appear on several paths are summed in path order (likelihood,
decoder, prior, encoder), starting from zero (:func:`_sum_paths`): the VampPrior's pseudo-inputs go
through the encoder, so the encoder's gradient is the sum of its path through q(z|x) and its path
through the prior.

The likelihood is a :class:`~refvae.likelihoods.Likelihood` object (``LIKELIHOODS``: categorical,
Bernoulli, Gaussian, and any registered with ``register_likelihood``), as the prior is a
:class:`~refvae.priors.Prior`; the VAE never branches on their names.

References: SPEC.md sections 2, 3, 5; Tomczak, *Deep Generative Modeling*, eqs. (4.33)-(4.35).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import gaussian, likelihoods
from .likelihoods import MAX_ABS_DECODER_LOG_VAR  # noqa: F401  (re-exported: the VAE's bound)
from ._validation import (NonFiniteIntermediateError, all_finite, as_float_array, check_choice,
                          check_mapping, check_parameter_memory, check_positive_int,
                          check_layer_widths, check_rng, first_non_finite)
from .layers import ACTIVATIONS, mlp_backward, mlp_forward, mlp_init
from .priors import PRIORS, Prior, check_sample_size, make_prior

__all__ = ["VAE", "Encoder", "Decoder", "NegElbo", "VAECache", "NonFiniteIntermediateError"]

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

    def backward(self, dmu, dlog_var, cache):
        """``(dx, grads)``, checked (``VAE.backward`` runs the MLP's backward on its own cache).

        See also: docs/course/07-vampprior.md (the VampPrior calls it at the pseudo-inputs: the
        encoder's second path).
        """
        return mlp_backward(np.concatenate([dmu, dlog_var], axis=1), cache)


class Decoder:
    r"""z (B, L) -> the likelihood's parameters (an MLP), and ``log p(x|z)`` from them.

    ``likelihood`` names a :class:`~refvae.likelihoods.Likelihood` (``LIKELIHOODS``); the object is
    ``self.likelihood`` and sets the output width (``categorical``: D*C logits, reshaped C-order to
    (B, D, C); ``bernoulli``: D logits; ``gaussian``: D means, with ``log_var`` the learned
    parameter ``decoder.log_var`` (D,) or a fixed float).
    """

    prefix = "decoder"

    def __init__(self, x_dim, latent_dim, hidden, activation, likelihood, num_vals, log_var):
        self.x_dim = x_dim = check_positive_int(x_dim, "x_dim")
        self.latent_dim = latent_dim = check_positive_int(latent_dim, "latent_dim")
        hidden = check_layer_widths(hidden)
        check_choice(likelihood, "likelihood", tuple(likelihoods.LIKELIHOODS))
        if num_vals is not None:
            num_vals = check_positive_int(num_vals, "num_vals", minimum=2)
        log_var = likelihoods.check_log_var(log_var)
        given = {"num_vals": num_vals, "log_var": log_var}    # the options a likelihood may take
        cls = likelihoods.LIKELIHOODS[likelihood]
        self.likelihood = likelihoods.make_likelihood(likelihood, x_dim,
                                                      **{k: given[k] for k in cls.options})
        self.sizes = (latent_dim, *tuple(reversed(hidden)), self.likelihood.out_dim)
        self.activation = check_choice(activation, "activation", tuple(ACTIVATIONS))

    def init_params(self, rng):
        params = mlp_init(self.sizes, self.prefix, rng)
        params.update(self.likelihood.init_params(rng))
        return params

    def forward(self, params, z):
        return mlp_forward(params, self.prefix, z, self.activation)

    def log_prob(self, params, x, out):
        """ln p(x | z) per example, from the decoder's output ``out`` (arguments checked)."""
        return self.likelihood.log_prob(params, x, out)

    def backward(self, dout, cache):
        """``(dz, grads)``, checked (``VAE.backward`` runs the MLP's backward on its own cache)."""
        return mlp_backward(dout, cache)

    def mean(self, params, out):
        """The likelihood's mean: E[x | z] (categorical: sum_c c p_c; Bernoulli: sigmoid)."""
        return self.likelihood.mean(params, out)


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


@dataclass(frozen=True, eq=False)
class VAECache:
    """Every intermediate of one forward pass, made by :meth:`VAE.forward` only (the input of
    :meth:`VAE.backward`). Arrays are (B, ...) for a batch of B rows; do not modify them.

    ``x``, ``eps`` : the checked inputs; ``mu``, ``log_var`` : q(z|x)'s parameters (B, L), and
    ``z = mu + exp(log_var / 2) * eps``; ``out`` : the decoder's output; ``log_px_z``, ``log_pz``,
    ``log_qz_x``, ``kl``, ``per_example`` (= neg_elbo per row) : the terms of the ELBO (B,);
    ``enc``, ``dec``, ``prior``, ``lik`` : the caches of the encoder's and decoder's MLPs, of the
    prior and of the likelihood; ``params`` : the parameter dict used; ``trace`` : the ordered
    ``(name, array)`` intermediates (data-flow order, for golden files and the verification harness).
    """

    x: np.ndarray
    eps: np.ndarray
    mu: np.ndarray
    log_var: np.ndarray
    z: np.ndarray
    out: np.ndarray
    log_px_z: np.ndarray
    log_pz: np.ndarray
    log_qz_x: np.ndarray
    kl: np.ndarray
    per_example: np.ndarray
    enc: dict
    dec: dict
    prior: dict
    lik: object
    params: dict
    trace: list


def _sum_paths(params, *paths, owned=()):
    """Each parameter's gradient: its terms on ``paths`` summed in path order from +0.0, i.e.
    ``(0 + g_1) + g_2 + ...`` (0 + g turns -0.0 into +0.0), and zeros off every path.

    The arrays of the ``owned`` paths (fresh arrays no one else holds) are reused for the sums;
    the others are copied."""
    total = {}
    for grads in paths:
        reuse = any(grads is o for o in owned)
        for k, g in grads.items():
            if k in total:
                total[k] += g
            elif reuse and g.dtype == params[k].dtype and g.shape == params[k].shape:
                total[k] = np.add(g, 0.0, out=g)
            else:
                total[k] = np.zeros_like(params[k])
                total[k] += g
    return {k: total[k] if k in total else np.zeros_like(v) for k, v in params.items()}


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
        check_choice(likelihood, "likelihood", tuple(likelihoods.LIKELIHOODS))
        if num_vals is not None:
            num_vals = check_positive_int(num_vals, "num_vals", minimum=2)
        self.kl = check_choice(kl, "kl", ("mc", "analytic"))
        self.decoder_log_var = likelihoods.check_log_var(decoder_log_var, "decoder_log_var")
        self.encoder = Encoder(self.x_dim, self.latent_dim, self.hidden, self.activation)
        self.decoder = Decoder(self.x_dim, self.latent_dim, self.hidden, self.activation,
                               likelihood, num_vals, self.decoder_log_var)
        #: the :class:`~refvae.likelihoods.Likelihood` object (its ``name`` is the option's value)
        self.likelihood = self.decoder.likelihood
        self.num_vals = getattr(self.likelihood, "num_vals", None)
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
        n_dec += sum(math.prod(s) for s in self.likelihood.param_shapes.values())
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
                "activation": self.activation, "likelihood": self.likelihood.name,
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
        lik = cfg["likelihood"]
        if num_vals is None and isinstance(lik, str) and \
                "num_vals" in getattr(likelihoods.LIKELIHOODS.get(lik), "options", ()):
            num_vals = 17
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

    def forward(self, x, eps, params=None) -> "VAECache":
        """The whole forward pass: a :class:`VAECache` with every intermediate (``.trace``: ordered
        ``(name, array)`` pairs in data-flow order), the input of :meth:`backward`.

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
        x_lik = self.likelihood.check_x(x)      # x suits the likelihood (categorical: indices 0..C-1)

        def check(arr, trace):
            if not all_finite(arr):
                self._overflow(trace, x, eps, p)

        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            mu, log_var, enc = self.encoder.forward(p, x)
            trace = list(enc["trace"])
            check(trace[-1][1], trace)
            # C-contiguous copies of the encoder's output halves, as the public gaussian.*
            # functions would make them; the unchecked kernels then see the same arrays
            mu, log_var = np.ascontiguousarray(mu), np.ascontiguousarray(log_var)
            z = gaussian.reparameterize.unchecked(mu, log_var, eps)
            trace += [("mu", mu), ("log_var", log_var), ("eps", eps), ("z", z)]
            check(z, trace)
            out, dec = self.decoder.forward(p, z)
            trace += list(dec["trace"])
            check(out, trace)
            log_px_z, lik = self.likelihood.forward(p, x_lik, out)
            trace += [("log_px_z", log_px_z)]
            check(log_px_z, trace)
            used = list(trace)           # the intermediates the value depends on
            log_pz, prior = self.prior.forward(p, z)
            log_qz_x = gaussian.log_prob.unchecked(z, mu, log_var)
            if self.kl == "analytic":
                zeros = np.zeros(self.latent_dim)     # N(0, I): mean and log-variance
                kl = gaussian.kl.unchecked(mu, log_var, zeros, zeros)
            else:
                kl = log_qz_x - log_pz
                used += list(prior["trace"]) + [("log_pz", log_pz), ("log_qz_x", log_qz_x)]
            per_example = -(log_px_z - kl)
            used += [("kl", kl), ("neg_elbo", per_example)]
            check(per_example, used)
        trace += list(prior["trace"])
        trace += [("log_pz", log_pz), ("log_qz_x", log_qz_x), ("kl", kl), ("neg_elbo", per_example)]
        return VAECache(x, eps, mu, log_var, z, out, log_px_z, log_pz, log_qz_x, kl, per_example,
                        enc, dec, prior, lik, p, trace)

    def trace(self, x, eps, params=None):
        """Every intermediate of the forward pass, as an ordered dict name -> array."""
        return dict(self.forward(x, eps, params).trace)

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
        return NegElbo(self._reduce(c.per_example, reduction), c.per_example, c.log_px_z, c.log_pz,
                       c.log_qz_x, c.kl, reduction)

    def loss(self, x, eps, params=None) -> float:
        """Batch mean of neg_elbo (the training loss)."""
        return self.neg_elbo(x, eps, "mean", params).value

    # ------------------------------------------------------------------ backward
    def backward(self, cache: "VAECache", reduction="mean"):
        """Gradient dict (keys and shapes of ``params``) of the reduced neg_elbo at the
        :class:`VAECache` of :meth:`forward`: the chain rule of the module docstring, one line per step.

        A gradient entry that overflows (finite forward pass, non-finite gradient) is a
        :class:`~refvae._validation.NonFiniteIntermediateError` naming the parameter: never a
        silent NaN or inf gradient.

        See also: docs/course/05-elbo-three-paths.md (this walk with numbers: the three paths into
        z, down to ``encoder.0.W``) and docs/course/07-vampprior.md (the encoder on two paths).
        """
        check_choice(reduction, "reduction", ("mean", "sum"))
        x, eps, mu, log_var, z = cache.x, cache.eps, cache.mu, cache.log_var, cache.z
        c = np.full(x.shape[0], 1.0 / x.shape[0] if reduction == "mean" else 1.0)   # d loss/d per_example
        zeros = np.zeros(self.latent_dim)                        # N(0, I)'s mean and log-variance
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            dlog_px, dlog_pz, dlog_qz = -c, -c, c                                             # 1.
            dout, g_lik = self.likelihood.backward(dlog_px, cache.lik)                        # 2.
            dz, g_dec = mlp_backward.unchecked(dout, cache.dec)
            if self.kl == "analytic":     # -KL[q(z|x) || N(0, I)] replaces ln p(z) - ln q(z|x)
                dmu_q, dlog_var_q, _, _ = gaussian.kl_vjp.unchecked(dlog_qz, mu, log_var, zeros, zeros)
                g_prior = {}
            else:
                dz_p, g_prior = self.prior.backward(dlog_pz, cache.prior)                     # 3.
                dz_q, dmu_q, dlog_var_q = gaussian.log_prob_vjp.unchecked(dlog_qz, z, mu, log_var)  # 4.
                dz = dz + dz_p + dz_q                                                         # 5.
            dmu_r, dlog_var_r, _ = gaussian.reparameterize_vjp.unchecked(dz, mu, log_var, eps)   # 6.
            dh = np.concatenate([dmu_q + dmu_r, dlog_var_q + dlog_var_r], axis=1)             # 7.
            _, g_enc = mlp_backward.unchecked(dh, cache.enc)
            grads = _sum_paths(cache.params, g_lik, g_dec, g_prior, g_enc, owned=(g_dec, g_enc))
        for k, g in grads.items():
            if not all_finite(g):
                self._overflow([(f"grads[{k!r}]", g)], x, eps, cache.params, where="backward")
        return grads

    def neg_elbo_and_grad(self, x, eps, reduction="mean", params=None):
        """``(value, grads)``: the reduced neg_elbo and its gradient w.r.t. every parameter."""
        cache = self.forward(x, eps, params)
        return self._reduce(cache.per_example, reduction), self.backward(cache, reduction)

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
            return self.likelihood.mean(p, out)
        return self.likelihood.sample(p, out, rng)
