r"""Mixture priors (SPEC section 4; text section 4.4.1): MoG, VampPrior, GTM, GTM-VampPrior, and the
aggregated posterior.

Every prior here is a mixture of K diagonal Gaussians in the L-dimensional latent space,

.. math::

    \log p(z) = \operatorname{logsumexp}_k \big[ \log\pi_k + \log\mathcal N(z \mid \mu_k,
    \operatorname{diag} e^{v_k}) \big], \qquad \log\pi = \operatorname{log\_softmax}(\text{logits}),

never a product of per-dimension mixtures. The priors differ only in where the components
(mu_k, v_k) and the logits come from:

==================  ================================================================  ==============
prior               components (mu_k, v_k), each (K, L)                                weights
==================  ================================================================  ==============
``mog``             free parameters ``prior.means``, ``prior.log_vars``                ``prior.logits``
``vamp``            the model's encoder at pseudo-inputs ``prior.pseudo_inputs``       1/K, or logits
``gtm``             an MLP ``prior.gtm.*`` at a fixed g x g grid in [u_min, u_max]^2    ``prior.logits``
``gtm_vamp``        encoder( lo + (hi - lo) sigmoid(MLP ``prior.gtm.*``(grid)) )         ``prior.logits``
``aggregated``      q(z|x_n) for a data set x_1..x_N (fixed arrays, no parameters)      1/N
==================  ================================================================  ==============

The shared machinery
--------------------
*Forward.* Each prior computes its components and log-weights (``_components``), and the density is
evaluated by the streaming kernel :func:`refvae.kernels.mixture.mixture_log_prob` (no (B, K) array in the
density path). ``cache["trace"]`` lists, in data-flow order and with ``prior.`` names: the
intermediates that produce the components (the grid, the MLP's ``prior.gtm.<i>.pre/out``, the
pseudo-inputs, the encoder's trace renamed ``prior.encoder.<i>.pre/out``), then ``prior.means``,
``prior.log_vars``, ``prior.logits`` (when learnable), ``prior.log_weights``, the per-component
log-densities ``prior.component_log_prob`` and ``prior.log_p``.

``prior.component_log_prob`` is the (B, K) matrix ``log N(z_b | mu_k, diag e^{v_k})`` (*without*
the log-weight). It exists for golden files and debugging only and is formed only when
``K <= component_trace_limit`` (default 4096) **and** ``B * K <= 2**24`` entries; otherwise it is
left out of the trace (the aggregated posterior of a large data set never forms it).

*Backward.* The kernel's VJP :func:`refvae.kernels.mixture.mixture_log_prob_vjp` gives, with
responsibilities ``r_bk = exp(log pi_k + log N_bk - log p(z_b))`` and upstream gradient g (B,),

- ``dz_b    = -g_b sum_k r_bk (z_b - mu_k) e^{-v_k}``
- ``dmu_k   =  sum_b g_b r_bk (z_b - mu_k) e^{-v_k}``
- ``dv_k    =  sum_b g_b r_bk 1/2 ((z_b - mu_k)^2 e^{-v_k} - 1)``
- ``dlogpi_k = sum_b g_b r_bk``

and each prior chains (dmu, dv, dlogpi) back to its parameters by hand (``_components_backward``):
through ``log_softmax`` (``dlogits = dlogpi - softmax(logits) sum_k dlogpi_k``) and through the
encoder or MLP that made the components.

*Sampling.* Component indices first (``rng.choice`` with probabilities ``exp(log pi)``, or
``rng.integers`` for uniform weights), then ``eps = rng.standard_normal((n, L))``, then
``z = mu_idx + exp(1/2 v_idx) * eps`` (the standard deviation is ``exp(1/2 log_var)``, SPEC 2).

References: SPEC.md sections 2-4; Tomczak, *Deep Generative Modeling*, section 4.4.1 (4.4.1.2
mixture of Gaussians, 4.4.1.3 VampPrior, 4.4.1.4 GTM and GTM-VampPrior; eq. (4.44) the aggregated
posterior). See also: docs/course/06-mixtures.md (the log-sum-exp VJP and the responsibilities,
with numbers) and docs/course/07-vampprior.md (the encoder on two paths).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._validation import (NonFiniteIntermediateError, all_finite, as_float_array, check_choice,
                          check_parameter_memory, check_positive_int, check_real, check_rng,
                          check_layer_widths, first_non_finite)
from ..layers import ACTIVATIONS, mlp_backward, mlp_forward, mlp_init
from ..kernels.mixture import mixture_log_prob, mixture_log_prob_vjp
from ..primitives import log_softmax, log_softmax_vjp
from .base import Prior

__all__ = ["MoGPrior", "VampPrior", "GTMPrior", "GTMVampPrior", "AggregatedPosterior",
           "gtm_grid", "component_log_densities", "DEFAULT_COMPONENT_TRACE_LIMIT"]

LN_2PI = math.log(2.0 * math.pi)
DEFAULT_COMPONENT_TRACE_LIMIT = 4096  #: largest K for which the trace holds the (B, K) matrix
MAX_TRACE_ENTRIES = 2 ** 24           #: and the matrix is never larger than this many entries
#: largest MoG ``init_scale``: latent codes are O(1); a spread beyond this only makes the initial
#: components' densities underflow at every data point
MAX_INIT_SCALE = 1e6


# --------------------------------------------------------------------------- helpers

def component_log_densities(z, means, log_vars):
    r"""The (B, K) matrix ``log N(z_b | mu_k, diag exp(v_k))`` (for traces and tests only).

    Forward: ``-1/2 sum_l [ln 2 pi + v_kl + (z_bl - mu_kl)^2 e^{-v_kl}]``, computed in chunks of
    queries so that the (b, K, L) temporary stays below ~2**22 entries. Memory O(B K): never call
    it on a large mixture (the density itself goes through the streaming kernel).

    z (B, L), means and log_vars (K, L): finite real arrays (``ValueError``/``TypeError`` naming
    the argument otherwise).
    """
    z = as_float_array(z, "z", ndim=2)
    means = as_float_array(means, "means", ndim=2)
    if means.shape[1] != z.shape[1]:
        raise ValueError(f"means must have shape (K, L) = (K, {z.shape[1]}) for z of shape {z.shape}, "
                         f"got {means.shape}")
    log_vars = as_float_array(log_vars, "log_vars", shape=means.shape)
    B, L = z.shape
    K = means.shape[0]
    out = np.empty((B, K))
    inv_var = np.exp(-log_vars)
    const = -0.5 * np.sum(LN_2PI + log_vars, axis=-1)
    step = max(1, min(B, 2 ** 22 // max(1, K * L)))
    for b0 in range(0, B, step):
        diff = z[b0:b0 + step, None, :] - means[None]
        out[b0:b0 + step] = const[None] - 0.5 * np.sum(diff * diff * inv_var[None], axis=-1)
    return out


def gtm_grid(grid_size, u_min, u_max):
    r"""The fixed GTM grid: K = g^2 points of [u_min, u_max]^2, shape (K, 2).

    ``a = linspace(u_min, u_max, g)``; point ``k = i g + j`` is ``(a_i, a_j)`` (C order, as in the
    text's code). For g = 1 the single point is ``(u_min, u_min)``. ``u_min < u_max`` finite reals
    with a finite width (``TypeError``/``ValueError`` naming them otherwise).
    """
    g = check_positive_int(grid_size, "grid_size")
    lo, hi = check_real(u_min, "u_min"), check_real(u_max, "u_max")
    if not lo < hi:
        raise ValueError(f"u_min must be < u_max, got u_min={u_min!r}, u_max={u_max!r}")
    if not math.isfinite(hi - lo):
        raise ValueError(f"u_max - u_min must be finite in float64, got u_min={u_min!r}, u_max={u_max!r}")
    check_parameter_memory(2 * g * g, "the GTM grid", f"grid_size={g}", kind="values")
    a = np.linspace(lo, hi, g)
    ui, uj = np.meshgrid(a, a, indexing="ij")
    return np.ascontiguousarray(np.stack([ui.ravel(), uj.ravel()], axis=1))


def _check_range(value, name):
    """(lo, hi), finite floats with lo < hi and a finite width hi - lo.

    Not a pair: ``ValueError``; an entry that is not a real number (bool, str, None):
    ``TypeError``; NaN, inf, lo >= hi or hi - lo beyond float64: ``ValueError``.
    """
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be a pair (lo, hi) of finite numbers, got {value!r}")
    lo = check_real(value[0], f"{name}[0] (lo)")
    hi = check_real(value[1], f"{name}[1] (hi)")
    if not lo < hi:
        raise ValueError(f"{name} must be a pair (lo, hi) of finite numbers with lo < hi, got {value!r}")
    if not math.isfinite(hi - lo):
        raise ValueError(f"{name} must have a finite width hi - lo in float64, got {value!r}")
    return lo, hi


def _check_real(value, name):
    """A finite real number: ``TypeError`` for bool/str/None, ``ValueError`` for NaN/inf."""
    return check_real(value, name)


def _num(v):
    """A NumPy scalar as a Python float (complex if complex), for messages."""
    return complex(v) if np.iscomplexobj(v) else float(v)


def _mlp_count(sizes):
    """Number of parameters of an MLP with layer widths ``sizes`` (no allocation)."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _param(params, name, shape):
    """``params[name]`` as a checked float64 array of the given shape (ValueError naming it)."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of named arrays, got {type(params).__name__}")
    if name not in params:
        raise ValueError(f"params is missing {name!r} (shape {shape}); initialise with init_params(rng)")
    return as_float_array(params[name], name, shape=shape)


def _prefixed(trace, prefix="prior."):
    """Rename trace entries to carry the ``prior.`` prefix (``encoder.0.pre -> prior.encoder.0.pre``)."""
    return [(n if n.startswith(prefix) else prefix + n, a) for n, a in trace]


def _check_encoder(encoder, latent_dim, x_dim, who):
    """The encoder of a VampPrior-type prior: needs ``forward``, ``backward`` and matching sizes."""
    if encoder is None:
        raise ValueError(f"encoder is required for the {who} prior (the model's own encoder; the VAE "
                         "passes it because the class declares needs = ('encoder', 'x_dim'))")
    if not (callable(getattr(encoder, "forward", None)) and callable(getattr(encoder, "backward", None))):
        raise ValueError(f"encoder must have forward(params, x) and backward(dmu, dlog_var, cache), "
                         f"got {type(encoder).__name__}")
    enc_L = getattr(encoder, "latent_dim", latent_dim)
    if enc_L != latent_dim:
        raise ValueError(f"encoder has latent_dim {enc_L} but the prior has latent_dim {latent_dim}")
    enc_D = getattr(encoder, "x_dim", None)
    if x_dim is None:
        if enc_D is None:
            raise ValueError("x_dim is required (the data dimension D of the pseudo-inputs)")
        x_dim = enc_D
    x_dim = check_positive_int(x_dim, "x_dim")
    if enc_D is not None and enc_D != x_dim:
        raise ValueError(f"x_dim = {x_dim} does not match the encoder's x_dim = {enc_D}")
    return encoder, x_dim


class _MixturePrior(Prior):
    r"""Shared forward/backward/sample for priors that are mixtures of diagonal Gaussians.

    Subclasses provide ``_components(params) -> (means, log_vars, log_weights, ccache, trace)``,
    where ``log_weights`` is the normalised (K,) array or ``None`` for uniform 1/K, and
    ``_components_backward(dmeans, dlog_vars, dlog_weights, ccache) -> grads``. The density goes
    through :meth:`_log_density` (the streaming kernel) and samples through :meth:`_draw`; these
    two are the only places where the mixture is evaluated or sampled.
    """

    #: the networks of GTM and VampPrior read fixed inputs (a grid, pseudo-inputs), not z
    net_inputs_fixed = True

    def draw_noise(self, n, rng) -> dict:
        """``{"eps": (n, L) standard normal, "index": (n,)}`` where ``index`` takes every component
        in turn, in random order (stratified, not by weight: each component n/K times, so that a
        test case exercises all of them)."""
        eps = rng.standard_normal((n, self.latent_dim))
        return {"eps": eps, "index": rng.permutation(np.arange(n) % self.K).astype(np.int64)}

    def sample_from_noise(self, params, noise):
        """``z = mu_k + exp(v_k / 2) eps`` with ``k = noise["index"]``, row by row."""
        eps = self._check_noise(noise)
        idx = np.asarray(noise.get("index"))
        if idx.dtype.kind not in "iu" or idx.shape != eps.shape[:1] or np.any(idx < 0) \
                or np.any(idx >= self.K):
            raise ValueError(f"noise['index'] must hold {eps.shape[0]} component indices in "
                             f"0..{self.K - 1}")
        means, log_vars, _ = self.mixture_components(params)
        return means[idx] + np.exp(0.5 * log_vars[idx]) * eps

    def support_box(self, params):
        """Every component's mean +- 10 sd, h = (smallest sd) / 4; outside <= 4 Phi(-10)."""
        from scipy import stats
        means, log_vars, _ = self.mixture_components(params)
        sd = np.exp(0.5 * log_vars)
        R = 10.0
        return ((means - R * sd).min(axis=0), (means + R * sd).max(axis=0), float(sd.min()) / 4,
                4 * float(stats.norm.sf(R)))

    def __init__(self, latent_dim, component_trace_limit=DEFAULT_COMPONENT_TRACE_LIMIT):
        super().__init__(latent_dim)
        self.component_trace_limit = check_positive_int(component_trace_limit, "component_trace_limit",
                                                        minimum=0)

    # ---------------------------------------------------------------- hooks
    def _components(self, params):  # pragma: no cover - abstract
        raise NotImplementedError

    def _finite_components(self, params):
        """:meth:`_components`, with a :class:`NonFiniteIntermediateError` naming the first
        intermediate that overflowed when the (finite) parameters give non-finite components."""
        with np.errstate(over="ignore", invalid="ignore"):
            comps = self._components(params)
        means, log_vars = comps[0], comps[1]
        if not (all_finite(means) and all_finite(log_vars)):
            hit = first_non_finite(list(comps[4]) + [("prior.means", means), ("prior.log_vars", log_vars)])
            name, idx, val = hit
            raise NonFiniteIntermediateError(
                f"the {self.name} prior's components overflowed at {name} ({_num(val)!r} "
                f"at index {idx}): the parameters are finite, but {name} is not representable in "
                "float64 (parameters too large?)")
        return comps

    def _components_backward(self, dmeans, dlog_vars, dlog_weights, ccache):  # pragma: no cover
        raise NotImplementedError

    def _log_density(self, z, means, log_vars, log_weights):
        """log p(z) (B,) by the streaming kernel (log-weights as given; None = uniform)."""
        return mixture_log_prob(z, means, log_vars, log_weights)

    def _log_density_vjp(self, g, z, means, log_vars, log_weights, log_p):
        """(dz, dmeans, dlog_vars, dlog_weights) by the kernel's VJP."""
        return mixture_log_prob_vjp(g, z, means, log_vars, log_weights, ans=log_p)

    def _draw(self, means, log_vars, log_weights, n, rng):
        """n samples: component indices from the weights, then mu + exp(1/2 log_var) * eps."""
        K, L = means.shape
        if log_weights is None:
            idx = rng.integers(0, K, size=n)
        else:
            p = np.exp(log_weights)
            idx = rng.choice(K, size=n, p=p / p.sum())
        eps = rng.standard_normal((n, L))
        return means[idx] + np.exp(0.5 * log_vars[idx]) * eps

    # ---------------------------------------------------------------- interface
    @property
    def num_components(self) -> int:
        return self.K

    def mixture_components(self, params=None):
        """``(means, log_vars, log_weights)`` of the mixture, (K, L), (K, L), (K,) normalised."""
        means, log_vars, log_w, _, _ = self._finite_components(self._bound(params))
        if log_w is None:
            log_w = np.full(means.shape[0], -math.log(means.shape[0]))
        return means, log_vars, log_w

    def _want_component_trace(self, B, K):
        return K <= self.component_trace_limit and B * K <= MAX_TRACE_ENTRIES

    def forward(self, params, z):
        z = self.check_z(z)
        means, log_vars, log_w, ccache, trace = self._finite_components(params)
        try:
            log_p = self._log_density(z, means, log_vars, log_w)
        except ValueError as e:   # components out of the kernel's range: say where they come from
            if isinstance(e, NonFiniteIntermediateError) or not trace:
                raise
            raise ValueError(f"the {self.name} prior's components (prior.means, prior.log_vars, "
                             f"computed from the parameters) are out of range: {e} (parameters too "
                             "large?)") from None
        K = means.shape[0]
        trace = list(trace) + [("prior.means", means), ("prior.log_vars", log_vars)]
        logits = None if ccache is None else ccache.get("logits")
        if logits is not None:
            trace.append(("prior.logits", logits))
        trace.append(("prior.log_weights", np.full(K, -math.log(K)) if log_w is None else log_w))
        if self._want_component_trace(z.shape[0], K):
            # (the real parts under a complex-step forward: the matrix is for traces only)
            trace.append(("prior.component_log_prob",
                          component_log_densities(np.real(z), np.real(means), np.real(log_vars))))
        trace.append(("prior.log_p", log_p))
        cache = {"z": z, "means": means, "log_vars": log_vars, "log_weights": log_w,
                 "log_p": log_p, "components": ccache, "trace": trace}
        return log_p, cache

    def backward(self, g, cache):
        z = cache["z"]
        g = as_float_array(g, "g", shape=(z.shape[0],))
        dz, dmeans, dlog_vars, dlog_w = self._log_density_vjp(
            g, z, cache["means"], cache["log_vars"], cache["log_weights"], cache["log_p"])
        return dz, self._components_backward(dmeans, dlog_vars, dlog_w, cache["components"])

    def sample(self, params, n, rng):
        n = check_positive_int(n, "n")
        check_rng(rng)
        means, log_vars, log_w, _, _ = self._finite_components(params)
        return self._draw(means, log_vars, log_w, n, rng)

    # ---------------------------------------------------------------- logits helpers
    def _logit_weights(self, params):
        logits = _param(params, "prior.logits", (self.K,))
        return logits, log_softmax(logits)

    @staticmethod
    def _logits_backward(dlog_w, logits, log_w):
        return log_softmax_vjp(dlog_w, logits, ans=log_w)[0]


# =========================================================================== MoG

class MoGPrior(_MixturePrior):
    r"""Mixture-of-Gaussians prior with K learnable components (``mog``; text section 4.4.1.2).

    What it is
    ----------
    :math:`p(z) = \sum_k \pi_k \mathcal N(z \mid \mu_k, \operatorname{diag} e^{v_k})` with
    parameters ``prior.means`` (K, L), ``prior.log_vars`` (K, L), ``prior.logits`` (K,) and
    :math:`\pi = \operatorname{softmax}(\text{logits})`.

    Forward
    -------
    ``log p(z) = logsumexp_k [log_softmax(logits)_k + log N(z | mu_k, v_k)]`` by the streaming kernel.

    Backward
    --------
    With the kernel's VJP (module docstring) ``(dz, dmu, dv, dlogpi)``:

    - ``dz`` as returned by the kernel;
    - ``d prior.means = dmu``, ``d prior.log_vars = dv``;
    - ``d prior.logits = dlogpi - softmax(logits) * sum_k dlogpi_k`` (VJP of log_softmax).

    Shapes
    ------
    z (B, L) -> (B,); parameters as above.

    Numerics
    --------
    log_softmax is evaluated without overflow and keeps a weight that underflows (logit -800) as a
    finite log-weight; the kernel handles any finite means and log-variances (see
    :mod:`refvae.kernels.mixture`). Sampling with ``rng.choice`` on ``softmax(logits)``.

    Initialisation (``init_params``)
    --------------------------------
    ``means = init_scale * rng.standard_normal((K, L))`` (``init_scale`` in (0, 1e6], default 0.1: the prior
    starts within ~1% of N(0, I) in variance, with the symmetry between components broken),
    ``log_vars = 0``, ``logits = 0`` (uniform weights). The text's code draws the log-variances from
    N(0, 1) too; starting them at 0 makes the initial prior close to the standard one.

    References
    ----------
    SPEC.md section 4 (``mog``); Tomczak, *Deep Generative Modeling*, section 4.4.1.2.
    """

    name = "mog"

    @classmethod
    def settings(cls, profile):
        return {"num_components": profile.num_components}

    @classmethod
    def tiny_settings(cls, activation, data_range):
        return {"num_components": 3, "init_scale": 1.0}

    def randomize_params(self, params, rng):
        """Log-variances uniform on [-1.5, 0.5], then random logits."""
        params["prior.log_vars"][:] = rng.uniform(-1.5, 0.5, size=params["prior.log_vars"].shape)
        super().randomize_params(params, rng)

    def __init__(self, latent_dim, num_components=16, *, init_scale=0.1,
                 component_trace_limit=DEFAULT_COMPONENT_TRACE_LIMIT):
        super().__init__(latent_dim, component_trace_limit)
        self.K = check_positive_int(num_components, "num_components")
        self.init_scale = check_real(init_scale, "init_scale (the spread of the initial means)",
                                     lo=0.0, lo_open=True, hi=MAX_INIT_SCALE)
        check_parameter_memory(self.K * (2 * self.latent_dim + 1), "the mog prior",
                               f"num_components={self.K}, latent_dim={self.latent_dim}")

    @property
    def param_shapes(self):
        K, L = self.K, self.latent_dim
        return {"prior.means": (K, L), "prior.log_vars": (K, L), "prior.logits": (K,)}

    def init_params(self, rng):
        check_rng(rng)
        K, L = self.K, self.latent_dim
        return {"prior.means": self.init_scale * rng.standard_normal((K, L)),
                "prior.log_vars": np.zeros((K, L)), "prior.logits": np.zeros(K)}

    def config(self):
        return {"name": self.name, "kwargs": {"num_components": self.K, "init_scale": self.init_scale,
                                              "component_trace_limit": self.component_trace_limit}}

    def _components(self, params):
        K, L = self.K, self.latent_dim
        means = _param(params, "prior.means", (K, L))
        log_vars = _param(params, "prior.log_vars", (K, L))
        logits, log_w = self._logit_weights(params)
        return means, log_vars, log_w, {"logits": logits, "log_w": log_w}, []

    def _components_backward(self, dmeans, dlog_vars, dlog_w, ccache):
        return {"prior.means": dmeans, "prior.log_vars": dlog_vars,
                "prior.logits": self._logits_backward(dlog_w, ccache["logits"], ccache["log_w"])}


# =========================================================================== VampPrior

class VampPrior(_MixturePrior):
    r"""The VampPrior: a mixture of the model's own posteriors at learnable pseudo-inputs (``vamp``).

    What it is
    ----------
    :math:`p(z) = \sum_k \pi_k\, q_\phi(z \mid u_k)` with K pseudo-inputs ``prior.pseudo_inputs``
    u (K, D) passed through the model's encoder (its parameters ``encoder.*`` are shared with
    q(z|x)); ``(mu_k, v_k) = enc(u_k)``. Weights uniform 1/K (``learn_weights=False``, the default,
    as in the text) or ``softmax(prior.logits)`` (``learn_weights=True``).

    Forward
    -------
    ``(mu, v) = encoder.forward(params, u)``; ``log p(z) = logsumexp_k [log pi_k + log N(z | mu_k, v_k)]``
    by the streaming kernel (``log pi_k = -ln K`` or ``log_softmax(logits)_k``).

    Backward
    --------
    With the kernel's VJP ``(dz, dmu, dv, dlogpi)``:

    - ``dz`` as returned by the kernel;
    - ``(du, dphi) = encoder.backward(dmu, dv)`` at the pseudo-inputs (the encoder's own backward:
      ``dh = [dmu, dv]`` through the MLP): ``d prior.pseudo_inputs = du`` and ``d encoder.* = dphi``.
      This is the encoder's *prior path*; the VAE adds it to the path through q(z|x).
    - ``d prior.logits = dlogpi - softmax(logits) * sum_k dlogpi_k`` (``learn_weights=True`` only).

    The learned weights' VJP, derived: with ``l_b = log p(z_b) = logsumexp_k [log pi_k + log N_bk]``,
    ``d l_b / d log pi_k = exp(log pi_k + log N_bk - l_b) = r_bk`` (the responsibility), so
    ``dlogpi_k = sum_b g_b r_bk``; and ``log pi = log_softmax(a)`` has Jacobian
    ``d log pi_k / d a_j = delta_kj - pi_j``, so
    ``d a_j = sum_k dlogpi_k (delta_kj - pi_j) = dlogpi_j - pi_j sum_k dlogpi_k`` (the kernel gives
    ``dlogpi``, :func:`refvae.primitives.log_softmax_vjp` the rest). Since ``sum_k r_bk = 1``,
    ``sum_j d a_j = 0``: adding a constant to every logit changes nothing. Checked by central
    differences, Richardson and the complex step (tests/test_prior_mixtures.py).

    Shapes
    ------
    z (B, L) -> (B,); ``prior.pseudo_inputs`` (K, D); ``prior.logits`` (K,) if learnable. ``grads``
    holds ``prior.*`` and every ``encoder.*`` key.

    Numerics
    --------
    The encoder's log-variances at the pseudo-inputs are used as they come (any finite value; the
    kernel is overflow-free). Pseudo-inputs are unconstrained parameters (the encoder reads them
    as given, like data).

    Options
    -------
    ``init="uniform"`` (default): ``u ~ U(data_range)`` elementwise, ``data_range=(0, 16)`` for the
    digits data. ``init="data"`` (implied by passing ``init_data``): ``u = init_data``, an array of
    K chosen training points (K, D). ``encoder``/``x_dim`` are supplied by the VAE
    (``needs = ("encoder", "x_dim")``).

    References
    ----------
    SPEC.md section 4 (``vamp``); Tomczak, *Deep Generative Modeling*, section 4.4.1.3;
    Tomczak & Welling (2018), "VAE with a VampPrior".
    """

    name = "vamp"
    formula = "components (mu_k, log_var_k) = encoder(prior.pseudo_inputs[k]), the model's own encoder"
    needs = ("encoder", "x_dim")
    INITS = ("uniform", "data")

    @classmethod
    def settings(cls, profile):
        """K from the profile; learned weights (``vamp_learn_weights``) and the pseudo-inputs'
        range (``pseudo_input_range``) only when the profile sets them (defaults otherwise)."""
        out = {"num_components": profile.num_components}
        if getattr(profile, "vamp_learn_weights", False):
            out["learn_weights"] = True
        rng_ = getattr(profile, "pseudo_input_range", None)
        if rng_ is not None:
            out["data_range"] = tuple(rng_)
        return out

    @classmethod
    def tiny_settings(cls, activation, data_range):
        return {"num_components": 3, "data_range": tuple(data_range)}

    def __init__(self, latent_dim, num_components=16, *, encoder=None, x_dim=None, learn_weights=False,
                 init=None, data_range=(0.0, 16.0), init_data=None,
                 component_trace_limit=DEFAULT_COMPONENT_TRACE_LIMIT):
        super().__init__(latent_dim, component_trace_limit)
        self.K = check_positive_int(num_components, "num_components")
        self.encoder, self.x_dim = _check_encoder(encoder, self.latent_dim, x_dim, self.name)
        if not isinstance(learn_weights, (bool, np.bool_)):
            raise TypeError(f"learn_weights must be True or False, got {learn_weights!r}")
        check_parameter_memory(self.K * (self.x_dim + 1), "the vamp prior",
                               f"num_components={self.K}, x_dim={self.x_dim}")
        self.learn_weights = bool(learn_weights)
        if init is None:
            init = "data" if init_data is not None else "uniform"
        self.init = check_choice(init, "init", self.INITS)
        self.data_range = _check_range(data_range, "data_range")
        if self.init == "data":
            if init_data is None:
                raise ValueError("init_data is required with init='data' (K chosen training points, "
                                 f"shape ({self.K}, {self.x_dim}))")
            self.init_data = as_float_array(init_data, "init_data", shape=(self.K, self.x_dim)).copy()
        else:
            if init_data is not None:
                raise ValueError("init_data is only used with init='data'")
            self.init_data = None

    @property
    def param_shapes(self):
        shapes = {"prior.pseudo_inputs": (self.K, self.x_dim)}
        if self.learn_weights:
            shapes["prior.logits"] = (self.K,)
        return shapes

    def init_params(self, rng):
        check_rng(rng)
        if self.init == "uniform":
            lo, hi = self.data_range
            u = rng.uniform(lo, hi, size=(self.K, self.x_dim))
        else:
            u = self.init_data.copy()
        params = {"prior.pseudo_inputs": u}
        if self.learn_weights:
            params["prior.logits"] = np.zeros(self.K)
        return params

    def config(self):
        return {"name": self.name, "kwargs": {
            "num_components": self.K, "learn_weights": self.learn_weights, "init": self.init,
            "data_range": list(self.data_range),
            "init_data": None if self.init_data is None else self.init_data.tolist(),
            "component_trace_limit": self.component_trace_limit}}

    def _weights(self, params):
        if self.learn_weights:
            return self._logit_weights(params)
        return None, np.full(self.K, -math.log(self.K))

    def _components(self, params):
        u = _param(params, "prior.pseudo_inputs", (self.K, self.x_dim))
        means, log_vars, enc_cache = self.encoder.forward(params, u)
        logits, log_w = self._weights(params)
        trace = [("prior.pseudo_inputs", u)] + _prefixed(enc_cache["trace"])
        ccache = {"enc": enc_cache, "logits": logits, "log_w": log_w}
        return means, log_vars, log_w, ccache, trace

    def _components_backward(self, dmeans, dlog_vars, dlog_w, ccache):
        du, grads = self.encoder.backward(dmeans, dlog_vars, ccache["enc"])
        grads = dict(grads)
        grads["prior.pseudo_inputs"] = du
        if self.learn_weights:
            grads["prior.logits"] = self._logits_backward(dlog_w, ccache["logits"], ccache["log_w"])
        return grads

    def _draw(self, means, log_vars, log_weights, n, rng):
        # uniform weights are sampled with rng.integers (exactly uniform)
        return super()._draw(means, log_vars, None if not self.learn_weights else log_weights, n, rng)


# =========================================================================== GTM

def _gtm_activation(profile):
    """The activation of the GTM family's grid MLP under a profile: ``profile.gtm_activation`` when
    set (the companion code uses tanh there), else the encoder's ``profile.activation``."""
    return getattr(profile, "gtm_activation", None) or profile.activation


class _GridMixin:
    """The fixed GTM grid and the MLP ``prior.gtm.*`` that maps it (shared by GTM and GTM-Vamp)."""

    def _init_grid(self, grid_size, u_min, u_max, hidden, activation):
        self.grid_size = check_positive_int(grid_size, "grid_size")
        self.u_min = _check_real(u_min, "u_min")
        self.u_max = _check_real(u_max, "u_max")
        if not self.u_min < self.u_max:
            raise ValueError(f"u_min must be < u_max, got u_min={u_min!r}, u_max={u_max!r}")
        if not math.isfinite(self.u_max - self.u_min):
            raise ValueError(f"u_max - u_min must be finite in float64, got u_min={u_min!r}, "
                             f"u_max={u_max!r}")
        self.hidden = check_layer_widths(hidden)
        self.activation = check_choice(activation, "activation", tuple(ACTIVATIONS))
        self.K = self.grid_size ** 2

    def _check_grid_size(self, out_dim):
        """Parameters (grid MLP and logits) and the fixed grid, checked before allocating."""
        n = _mlp_count((2, *self.hidden, out_dim)) + self.K
        check_parameter_memory(n + 2 * self.K, f"the {self.name} prior",
                               f"grid_size={self.grid_size} (K = {self.K}), hidden={self.hidden}, "
                               f"{out_dim} outputs; the grid itself holds 2K values")
        self.grid = gtm_grid(self.grid_size, self.u_min, self.u_max)

    def _mlp_shapes(self, out_dim):
        sizes = (2, *self.hidden, out_dim)
        shapes = {}
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            shapes[f"prior.gtm.{i}.W"] = (a, b)
            shapes[f"prior.gtm.{i}.b"] = (b,)
        return sizes, shapes

    def _grid_config(self):
        return {"grid_size": self.grid_size, "u_min": self.u_min, "u_max": self.u_max,
                "hidden": list(self.hidden), "activation": self.activation,
                "component_trace_limit": self.component_trace_limit}

    @property
    def param_shapes(self):
        """The grid MLP's weights (``prior.gtm.*``) and the mixture logits ``prior.logits`` (K,)."""
        return {**self._shapes, "prior.logits": (self.K,)}

    def init_params(self, rng):
        """The grid MLP initialised by :func:`~refvae.layers.mlp_init`, uniform logits (zeros)."""
        check_rng(rng)
        params = mlp_init(self.sizes, "prior.gtm", rng)
        params["prior.logits"] = np.zeros(self.K)
        return params


class GTMPrior(_GridMixin, _MixturePrior):
    r"""Generative-topographic-mapping prior (``gtm``; text section 4.4.1.4).

    What it is
    ----------
    A fixed g x g grid ``u_k`` on [u_min, u_max]^2 (K = g^2; :func:`gtm_grid`) is mapped by an
    MLP ``prior.gtm.<i>.W/b`` with 2L outputs to ``h_k = MLP(u_k)``, split like the encoder's:
    ``mu_k = h_k[:L]``, ``v_k = h_k[L:]``. Weights ``softmax(prior.logits)``.

    Forward
    -------
    ``h = MLP(grid)`` (K, 2L); ``log p(z) = logsumexp_k [log_softmax(logits)_k + log N(z | mu_k, v_k)]``.

    Backward
    --------
    With the kernel's VJP ``(dz, dmu, dv, dlogpi)``:

    - ``dz`` as returned by the kernel;
    - ``d prior.gtm.* = mlp_backward([dmu, dv])`` (concatenation undoes the split; the grid is
      fixed, its gradient is discarded);
    - ``d prior.logits = dlogpi - softmax(logits) * sum_k dlogpi_k``.

    Shapes
    ------
    z (B, L) -> (B,); grid (K, 2); MLP sizes (2, *hidden, 2L); ``prior.logits`` (K,).

    Numerics
    --------
    The MLP's log-variance outputs are used as they come (the kernel is overflow-free). With the
    default leaky ReLU the prior is piecewise smooth in the MLP weights (kinks where a
    pre-activation crosses 0).

    Defaults
    --------
    ``grid_size=4`` (K = 16), ``u_min=-10``, ``u_max=10``, ``hidden=(256, 256)`` (two hidden layers,
    like the default encoder), ``activation="leaky_relu"``; ``prior.gtm.*`` initialised by
    :func:`refvae.layers.mlp_init` (PyTorch's default), ``prior.logits = 0``.

    References
    ----------
    SPEC.md section 4 (``gtm``); Tomczak, *Deep Generative Modeling*, section 4.4.1.4;
    Bishop, Svensen & Williams (1998), "GTM: the generative topographic mapping".
    """

    name = "gtm"
    formula = ("grid a = linspace(u_min, u_max, g); point k = i g + j is (a_i, a_j); (mu_k, log_var_k) = "
               "split of MLP prior.gtm(grid) (2L outputs, like the encoder)")

    @classmethod
    def settings(cls, profile):
        return {"grid_size": profile.gtm_grid, "u_min": profile.gtm_range[0],
                "u_max": profile.gtm_range[1], "hidden": profile.prior_hidden,
                "activation": _gtm_activation(profile)}

    @classmethod
    def tiny_settings(cls, activation, data_range):
        return {"grid_size": 2, "u_min": -1.0, "u_max": 1.0, "hidden": (4,), "activation": activation}

    def randomize_params(self, params, rng):
        """Random logits, then the log-variance half of the last bias lowered by 1."""
        super().randomize_params(params, rng)
        last = max(int(k.split(".")[2]) for k in params if k.startswith("prior.gtm.") and k.endswith(".b"))
        params[f"prior.gtm.{last}.b"][self.latent_dim:] -= 1.0

    def __init__(self, latent_dim, grid_size=4, *, u_min=-10.0, u_max=10.0, hidden=(256, 256),
                 activation="leaky_relu", component_trace_limit=DEFAULT_COMPONENT_TRACE_LIMIT):
        _MixturePrior.__init__(self, latent_dim, component_trace_limit)
        self._init_grid(grid_size, u_min, u_max, hidden, activation)
        self._check_grid_size(2 * self.latent_dim)
        self.sizes, self._shapes = self._mlp_shapes(2 * self.latent_dim)

    def config(self):
        return {"name": self.name, "kwargs": self._grid_config()}

    def _components(self, params):
        h, mcache = mlp_forward(params, "prior.gtm", self.grid, self.activation)
        L = self.latent_dim
        if h.shape != (self.K, 2 * L):
            raise ValueError(f"the prior.gtm MLP has {h.shape[1]} outputs, expected 2L = {2 * L}")
        logits, log_w = self._logit_weights(params)
        trace = [("prior.grid", self.grid)] + _prefixed(mcache["trace"])
        return h[:, :L], h[:, L:], log_w, {"mlp": mcache, "logits": logits, "log_w": log_w}, trace

    def _components_backward(self, dmeans, dlog_vars, dlog_w, ccache):
        _, grads = mlp_backward(np.concatenate([dmeans, dlog_vars], axis=1), ccache["mlp"])
        grads = dict(grads)
        grads["prior.logits"] = self._logits_backward(dlog_w, ccache["logits"], ccache["log_w"])
        return grads


class GTMVampPrior(_GridMixin, _MixturePrior):
    r"""GTM-VampPrior: GTM-generated pseudo-inputs passed through the model's encoder (``gtm_vamp``).

    What it is
    ----------
    The fixed grid ``u_k`` (K = g^2) is mapped by an MLP ``prior.gtm.<i>.W/b`` with D outputs and a
    sigmoid output activation, scaled to the data range:
    ``x_k = lo + (hi - lo) sigmoid(MLP(u_k))`` (e.g. 16 sigmoid for the digits, ``data_range=(0, 16)``).
    These are pseudo-inputs of the encoder: ``(mu_k, v_k) = enc(x_k)``. Weights ``softmax(prior.logits)``.

    Forward
    -------
    ``s = sigmoid(pre)``, ``pre = MLP(grid)``; ``x = lo + (hi - lo) s``; ``(mu, v) = encoder(x)``;
    ``log p(z) = logsumexp_k [log_softmax(logits)_k + log N(z | mu_k, v_k)]``.

    Backward
    --------
    With the kernel's VJP ``(dz, dmu, dv, dlogpi)``:

    - ``dz`` as returned by the kernel;
    - ``(dx, dphi) = encoder.backward(dmu, dv)`` at the pseudo-inputs: ``d encoder.* = dphi``;
    - ``ds = (hi - lo) dx``; ``dpre = ds * sigmoid(pre) sigmoid(-pre)``; then the MLP's backward:
      ``d prior.gtm.* = mlp_backward(ds)`` (``mlp_backward`` applies the sigmoid's derivative);
    - ``d prior.logits = dlogpi - softmax(logits) * sum_k dlogpi_k``.

    Shapes
    ------
    z (B, L) -> (B,); grid (K, 2); MLP sizes (2, *hidden, D); pseudo-inputs (K, D); ``prior.logits`` (K,).
    ``grads`` holds ``prior.*`` and every ``encoder.*`` key.

    Numerics
    --------
    The sigmoid is overflow-free and its derivative is ``sigmoid(x) sigmoid(-x)`` (no ``1 - s``
    cancellation); pseudo-inputs stay in (lo, hi) except where the sigmoid rounds to 0 or 1.

    Defaults
    --------
    ``grid_size=4``, ``u_min=-10``, ``u_max=10``, ``hidden=(256, 256)``, ``activation="leaky_relu"``,
    ``data_range=(0, 16)``; ``prior.logits = 0``.

    References
    ----------
    SPEC.md section 4 (``gtm_vamp``); Tomczak, *Deep Generative Modeling*, section 4.4.1.4.
    """

    name = "gtm_vamp"
    formula = ("pseudo-inputs lo + (hi - lo) sigmoid(MLP prior.gtm(grid)) with (lo, hi) = "
               "prior_kwargs.data_range, then the encoder")
    needs = ("encoder", "x_dim")

    @classmethod
    def settings(cls, profile):
        rng_ = getattr(profile, "pseudo_input_range", None)
        return {"grid_size": profile.gtm_grid, "u_min": profile.gtm_range[0],
                "u_max": profile.gtm_range[1], "hidden": profile.prior_hidden,
                "activation": _gtm_activation(profile),
                "data_range": (0.0, float(profile.num_vals - 1)) if rng_ is None else tuple(rng_)}

    @classmethod
    def tiny_settings(cls, activation, data_range):
        return {"grid_size": 2, "u_min": -1.0, "u_max": 1.0, "hidden": (4,), "activation": activation,
                "data_range": tuple(data_range)}

    def __init__(self, latent_dim, grid_size=4, *, encoder=None, x_dim=None, u_min=-10.0, u_max=10.0,
                 hidden=(256, 256), activation="leaky_relu", data_range=(0.0, 16.0),
                 component_trace_limit=DEFAULT_COMPONENT_TRACE_LIMIT):
        _MixturePrior.__init__(self, latent_dim, component_trace_limit)
        self._init_grid(grid_size, u_min, u_max, hidden, activation)
        self.encoder, self.x_dim = _check_encoder(encoder, self.latent_dim, x_dim, self.name)
        self.data_range = _check_range(data_range, "data_range")
        self._check_grid_size(self.x_dim)
        self.sizes, self._shapes = self._mlp_shapes(self.x_dim)

    def config(self):
        return {"name": self.name, "kwargs": {**self._grid_config(), "data_range": list(self.data_range)}}

    def _components(self, params):
        s, mcache = mlp_forward(params, "prior.gtm", self.grid, self.activation, out_activation="sigmoid")
        if s.shape != (self.K, self.x_dim):
            raise ValueError(f"the prior.gtm MLP has {s.shape[1]} outputs, expected D = {self.x_dim}")
        lo, hi = self.data_range
        u = lo + (hi - lo) * s
        means, log_vars, enc_cache = self.encoder.forward(params, u)
        logits, log_w = self._logit_weights(params)
        trace = ([("prior.grid", self.grid)] + _prefixed(mcache["trace"]) + [("prior.pseudo_inputs", u)]
                 + _prefixed(enc_cache["trace"]))
        ccache = {"mlp": mcache, "enc": enc_cache, "logits": logits, "log_w": log_w}
        return means, log_vars, log_w, ccache, trace

    def _components_backward(self, dmeans, dlog_vars, dlog_w, ccache):
        du, enc_grads = self.encoder.backward(dmeans, dlog_vars, ccache["enc"])
        lo, hi = self.data_range
        _, grads = mlp_backward((hi - lo) * du, ccache["mlp"])
        grads = {**dict(enc_grads), **grads}
        grads["prior.logits"] = self._logits_backward(dlog_w, ccache["logits"], ccache["log_w"])
        return grads


# =========================================================================== aggregated posterior

class AggregatedPosterior(_MixturePrior):
    r"""The aggregated posterior q(z) = 1/N sum_n q_phi(z | x_n) of a data set (``aggregated``; eq. 4.44).

    What it is
    ----------
    A uniform mixture of the N posteriors ``N(z | mu_n, diag e^{v_n})`` of a data set, built with
    :meth:`from_model` (encodes x chunk by chunk) or from arrays ``means``, ``log_vars`` (N, L). It
    is the prior that minimises Omega (the theoretical optimum, SPEC section 5). It has no
    learnable parameters (``param_shapes == {}``); the component arrays are fixed data.

    Forward
    -------
    ``log q(z) = logsumexp_n [-ln N + log N(z | mu_n, v_n)]`` by the streaming kernel with
    ``log_weights=None`` (uniform): memory O(B + N L), no (B, N) array, so N = 10^5 or 10^6 works.

    Backward
    --------
    ``dz_b = -g_b sum_n r_bn (z_b - mu_n) e^{-v_n}`` (the kernel's VJP). ``grads`` is empty: the
    components are data, not parameters (the gradient with respect to the encoder through q(z)
    is not part of this object).

    Shapes
    ------
    z (B, L) -> (B,); means, log_vars (N, L).

    Numerics
    --------
    See :mod:`refvae.kernels.mixture` (online log-sum-exp, error <= c u (|f| + S): c <= 26 proven,
    <= 4 tested). The trace holds the
    (B, N) matrix ``prior.component_log_prob`` only when ``N <= component_trace_limit`` (default
    0: never, since N is the size of a data set and the matrix would cost more than the kernel;
    pass a limit to see it) and ``B N <= 2**24``. The backward calls the kernel's VJP with ``z_only=True``: no pass
    over the components.

    Sampling
    --------
    ``n_idx = rng.integers(0, N, n)``, then ``z = mu_idx + exp(1/2 v_idx) * rng.standard_normal((n, L))``.

    References
    ----------
    SPEC.md sections 4 (``aggregated``) and 5; Tomczak, *Deep Generative Modeling*, eq. (4.44).
    """

    name = "aggregated"

    def __init__(self, latent_dim, means=None, log_vars=None, *, component_trace_limit=0):
        super().__init__(latent_dim, component_trace_limit)
        if means is None or log_vars is None:
            raise ValueError("means and log_vars (N, L) are required for the aggregated posterior; "
                             "build it with AggregatedPosterior.from_model(model, x)")
        means = as_float_array(means, "means", ndim=2)
        if means.shape[1] != self.latent_dim:
            raise ValueError(f"means has {means.shape[1]} columns but latent_dim is {self.latent_dim}; "
                             f"means must have shape (N, latent_dim) = (N, {self.latent_dim})")
        self.means = means
        self.log_vars = as_float_array(log_vars, "log_vars", shape=self.means.shape)
        self.K = self.means.shape[0]

    @classmethod
    def from_model(cls, model, x, batch_size=1024, *, params=None, component_trace_limit=0):
        """Encode the data set x (N, D) chunk by chunk with a model's encoder.

        ``model`` is a :class:`refvae.vae.VAE` (its ``encoder`` and ``params`` are used, unless
        ``params`` is given) or an encoder object with ``forward(params, x) -> (mu, log_var, cache)``
        (then ``params`` is required). ``batch_size`` rows are encoded at a time.
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        if hasattr(model, "encoder") and hasattr(model, "params"):
            encoder = model.encoder
            params = model.params if params is None else params
        elif callable(getattr(model, "forward", None)):
            encoder = model
            if params is None:
                raise ValueError("params is required when model is an encoder (not a VAE)")
        else:
            raise ValueError(f"model must be a VAE or an encoder, got {type(model).__name__}")
        L = check_positive_int(getattr(encoder, "latent_dim", None) or 0, "latent_dim")
        D = getattr(encoder, "x_dim", None)
        x = as_float_array(x, "x", shape=(None, D) if D is not None else None, ndim=2)
        N = x.shape[0]
        means = np.empty((N, L))
        log_vars = np.empty((N, L))
        for n0 in range(0, N, batch_size):
            mu, lv, _ = encoder.forward(params, x[n0:n0 + batch_size])
            means[n0:n0 + batch_size] = mu
            log_vars[n0:n0 + batch_size] = lv
        return cls(L, means, log_vars, component_trace_limit=component_trace_limit)

    def config(self):
        # the components are data: a saved model cannot rebuild this prior from its config alone
        return {"name": self.name, "kwargs": {"component_trace_limit": self.component_trace_limit},
                "num_components": self.K}

    def _components(self, params):
        return self.means, self.log_vars, None, None, []

    def _components_backward(self, dmeans, dlog_vars, dlog_w, ccache):
        return {}

    def _log_density_vjp(self, g, z, means, log_vars, log_weights, log_p):
        """dz only: the components are data, so their gradients are not computed."""
        return mixture_log_prob_vjp(g, z, means, log_vars, log_weights, ans=log_p, z_only=True)
