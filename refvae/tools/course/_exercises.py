"""The course's exercises: for each, the test points, refvae's answer (the oracle) and the known
wrong variants (the classic mistakes, the same planted bugs the "find the bug" exercises use)."""

from __future__ import annotations

import math

import numpy as np

from ... import gaussian, layers
from ...kernels.mixture import mixture_log_prob_numpy, mixture_log_prob_vjp_numpy
from ...likelihoods import bernoulli_log_prob, bernoulli_log_prob_vjp, categorical_log_prob, \
    categorical_log_prob_vjp
from ...primitives import logsumexp, logsumexp_vjp
from ...priors.flow import FlowPrior
from ._grader import Exercise, Point, Variant

LN_2PI = math.log(2 * math.pi)


def _named(name):
    """Wrap an oracle so that the grader's verdict names it (refvae's functions are not modified)."""
    def deco(fn):
        def reference(*args):
            return fn(*args)
        reference.oracle_name = name
        reference.__name__ = getattr(fn, "__name__", "reference")
        return reference
    return deco


def _std(rng, *shape, scale=1.0):
    return scale * rng.standard_normal(shape)


# =========================================================================== chapter 1

def _two_layer_params(W1, b1, W2, b2):
    return {"net.0.W": W1, "net.0.b": b1, "net.1.W": W2, "net.1.b": b2}


def two_layer_forward(x, W1, b1, W2, b2):
    y, _ = layers.mlp_forward(_two_layer_params(W1, b1, W2, b2), "net", x, "tanh")
    return y


@_named("refvae.layers.mlp_backward (tanh)")
def _two_layer_ref(g, x, W1, b1, W2, b2):
    _, cache = layers.mlp_forward(_two_layer_params(W1, b1, W2, b2), "net", x, "tanh")
    dx, gr = layers.mlp_backward(g, cache)
    return dx, gr["net.0.W"], gr["net.0.b"], gr["net.1.W"], gr["net.1.b"]


def _two_layer_bug(act_grad):
    def fn(g, x, W1, b1, W2, b2):
        h = x @ W1 + b1
        a = np.tanh(h)
        dW2, db2, da = a.T @ g, g.sum(0), g @ W2.T
        dh = da * act_grad(h, a)
        return dh @ W1.T, x.T @ dh, dh.sum(0), dW2, db2
    return fn


def _ch1_points(rng):
    return [Point("random, B=3, 2 -> 3 -> 2", dict(x=_std(rng, 3, 2), W1=_std(rng, 2, 3), b1=_std(rng, 3),
                                                  W2=_std(rng, 3, 2), b2=_std(rng, 2)), _std(rng, 3, 2))]


EX_1_1 = Exercise(
    "1.1", "two_layer_vjp", "backward pass of y = tanh(x W1 + b1) W2 + b2", "vjp",
    ("x", "W1", "b1", "W2", "b2"), ("dx", "dW1", "db1", "dW2", "db2"), _ch1_points, _two_layer_ref,
    forward=two_layer_forward, diff=("x", "W1", "b1", "W2", "b2"),
    variants=(
        Variant("tanh' evaluated at the wrong value: 1 - h^2 with h the pre-activation",
                "tanh'(h) = 1 - tanh(h)^2 = 1 - a^2 with a = tanh(h) the layer's OUTPUT",
                _two_layer_bug(lambda h, a: 1 - h * h)),
        Variant("the activation's derivative is missing (dh = da)",
                "between a = tanh(h) and h the gradient is multiplied by tanh'(h) = 1 - a^2",
                _two_layer_bug(lambda h, a: 1.0)),
    ))


# =========================================================================== chapter 2

@_named("refvae.layers.linear_backward")
def _linear_ref(g, x, W, b):
    return layers.linear_backward(g, (x, W))


def _linear_points(rng):
    return [Point("random, B=4, 3 -> 2", dict(x=_std(rng, 4, 3), W=_std(rng, 3, 2), b=_std(rng, 2)),
                  _std(rng, 4, 2))]


EX_2_1 = Exercise(
    "2.1", "linear_vjp", "backward pass of the linear layer y = x W + b", "vjp",
    ("x", "W", "b"), ("dx", "dW", "db"), _linear_points, _linear_ref,
    forward=lambda x, W, b: x @ W + b, diff=("x", "W", "b"),
    variants=(
        Variant("db is the batch mean of g, not its sum",
                "b is added to every row, so each row's gradient adds: db = g.sum(axis=0)",
                lambda g, x, W, b: (g @ W.T, x.T @ g, g.mean(axis=0))),
        Variant("dW averaged over the batch (x.T @ g / B)",
                "the loss already carries its 1/B (the upstream g holds it); the layer sums over rows",
                lambda g, x, W, b: (g @ W.T, x.T @ g / x.shape[0], g.sum(axis=0))),
    ))


@_named("refvae.layers.leaky_relu_backward")
def _leaky_ref(g, x):
    return (layers.leaky_relu_backward(g, x),)


def _leaky_points(rng):
    x = _std(rng, 3, 4)
    x2 = x.copy()
    x2[0, 0] = x2[1, 2] = x2[2, 1] = 0.0
    return [Point("random, no entry at the kink", dict(x=x), _std(rng, 3, 4)),
            Point("three entries exactly at the kink x = 0", dict(x=x2), _std(rng, 3, 4))]


EX_2_2 = Exercise(
    "2.2", "leaky_relu_vjp", "backward pass of leaky_relu (slope 0.01 for x <= 0)", "vjp",
    ("x",), ("dx",), _leaky_points, _leaky_ref,
    forward=lambda x: layers.leaky_relu_forward(x)[0], diff=("x",),
    variants=(
        Variant("slope 1 at the kink (x >= 0 taken as the positive side)",
                "SPEC section 3: at x = 0 the derivative is the LEFT slope, 0.01 (as PyTorch); a "
                "gradient check cannot decide this (the function has no derivative there)",
                lambda g, x: (g * np.where(x >= 0, 1.0, 0.01),)),
        Variant("relu's slope: 0 on the negative side instead of 0.01",
                "leaky_relu(x) = 0.01 x for x <= 0, so its slope there is 0.01",
                lambda g, x: (g * np.where(x > 0, 1.0, 0.0),)),
    ))


# =========================================================================== chapter 3

def _gauss_points(rng):
    return [Point("random, B=4, L=3", dict(z=_std(rng, 4, 3), mu=_std(rng, 4, 3),
                                          log_var=_std(rng, 4, 3, scale=0.7)), _std(rng, 4))]


@_named("refvae.gaussian.log_prob")
def _log_prob_ref(z, mu, log_var):
    return gaussian.log_prob(z, mu, log_var)


EX_3_1 = Exercise(
    "3.1", "log_prob", "ln N(z | mu, diag exp(log_var)), one value per row", "forward",
    ("z", "mu", "log_var"), ("value",), _gauss_points, _log_prob_ref,
    variants=(
        Variant("the -1/2 ln 2 pi constant is missing",
                "every row is off by L/2 ln 2 pi: a density needs all its constants (SPEC section 2)",
                lambda z, mu, v: -0.5 * np.sum(v + (z - mu) ** 2 * np.exp(-v), axis=-1)),
        Variant("log_var used as the log of the standard deviation",
                "sigma = exp(log_var / 2): the variance is exp(log_var), not exp(2 log_var)",
                lambda z, mu, v: -0.5 * np.sum(LN_2PI + 2 * v + (z - mu) ** 2 * np.exp(-2 * v), axis=-1)),
        Variant("the log-determinant term log_var is missing",
                "ln N has -1/2 ln(sigma^2) = -1/2 log_var per dimension (the normaliser of the variance)",
                lambda z, mu, v: -0.5 * np.sum(LN_2PI + (z - mu) ** 2 * np.exp(-v), axis=-1)),
    ))


@_named("refvae.gaussian.log_prob_vjp")
def _log_prob_vjp_ref(g, z, mu, log_var):
    return gaussian.log_prob_vjp(g, z, mu, log_var)


def _lp_vjp_std(g, z, mu, v):
    w = g[:, None] * (z - mu) * np.exp(-2 * v)
    return -w, w, g[:, None] * ((z - mu) ** 2 * np.exp(-2 * v) - 1.0)


EX_3_2 = Exercise(
    "3.2", "log_prob_vjp", "backward pass of ln N(z | mu, diag exp(log_var))", "vjp",
    ("z", "mu", "log_var"), ("dz", "dmu", "dlog_var"), _gauss_points, _log_prob_vjp_ref,
    forward=lambda z, mu, log_var: gaussian.log_prob(z, mu, log_var), diff=("z", "mu", "log_var"),
    variants=(
        Variant("log_var used as the log of the standard deviation",
                "the variance is exp(log_var): dz = -g (z - mu) exp(-log_var), and the log_var "
                "derivative has a 1/2",
                _lp_vjp_std),
        Variant("dlog_var lacks the -1/2 from the log-determinant",
                "d/dv [-(v + r^2 e^-v)/2] = (r^2 e^-v - 1)/2: the -1/2 comes from the -v/2 term",
                lambda g, z, mu, v: (-(g[:, None] * (z - mu) * np.exp(-v)), g[:, None] * (z - mu) * np.exp(-v),
                                     0.5 * g[:, None] * (z - mu) ** 2 * np.exp(-v))),
        Variant("dz and dmu have each other's sign",
                "ln N falls as z moves away from mu: dz = -g (z - mu)/sigma^2 and dmu = -dz",
                lambda g, z, mu, v: (g[:, None] * (z - mu) * np.exp(-v), -(g[:, None] * (z - mu) * np.exp(-v)),
                                     0.5 * g[:, None] * ((z - mu) ** 2 * np.exp(-v) - 1))),
    ))


@_named("refvae.gaussian.reparameterize")
def _reparam_ref(mu, log_var, eps):
    return gaussian.reparameterize(mu, log_var, eps)


def _reparam_points(rng):
    return [Point("random, B=4, L=3", dict(mu=_std(rng, 4, 3), log_var=_std(rng, 4, 3, scale=0.7),
                                          eps=_std(rng, 4, 3)))]


REPARAM_VARIANTS = (
    Variant("log_var used as the log of the standard deviation (mu + exp(log_var) eps)",
            "z must have variance exp(log_var), so sigma = exp(log_var / 2); with exp(log_var) the "
            "samples have variance exp(2 log_var) and disagree with log_prob",
            lambda mu, v, eps: mu + np.exp(v) * eps),
    Variant("the variance used as the standard deviation's square root... twice (mu + exp(log_var/4) eps)",
            "sigma = exp(log_var / 2)",
            lambda mu, v, eps: mu + np.exp(v / 4) * eps),
)

EX_3_3 = Exercise(
    "3.3", "reparameterize", "find the bug: the reparameterisation z = mu + sigma eps", "forward",
    ("mu", "log_var", "eps"), ("z",), _reparam_points, _reparam_ref, variants=REPARAM_VARIANTS,
    find_bug=True)


# =========================================================================== chapter 4

def _cat_points(rng):
    B, D, C = 2, 3, 4
    x = rng.integers(0, C, size=(B, D)).astype(float)
    conf = np.full((B, D * C), -40.0)
    conf.reshape(B, D, C)[..., 0] = 0.0
    xc = np.zeros((B, D))
    return [Point("random logits, B=2, D=3, C=4", dict(x=x, logits=_std(rng, B, D * C), num_vals=C), _std(rng, B)),
            Point("confident and right: logits [0, -40, -40, -40], x = 0", dict(x=xc, logits=conf, num_vals=C),
                  _std(rng, B))]


@_named("refvae.likelihoods.categorical_log_prob_vjp")
def _cat_ref(g, x, logits, num_vals):
    return (categorical_log_prob_vjp(g, x, logits, num_vals),)


def _softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _cat_one_minus(g, x, logits, C):
    B, D = x.shape
    a = logits.reshape(B, D, C)
    p = _softmax(a)
    onehot = np.eye(C)[x.astype(int)]
    return (g[:, None, None] * (onehot - p)).reshape(B, D * C)


def _cat_reshape_cd(g, x, logits, C):
    B, D = x.shape
    a = logits.reshape(B, C, D).transpose(0, 2, 1)
    p = _softmax(a)
    onehot = np.eye(C)[x.astype(int)]
    return (g[:, None, None] * (onehot - p)).transpose(0, 2, 1).reshape(B, D * C)


EX_4_1 = Exercise(
    "4.1", "categorical_vjp", "backward pass of the categorical log-likelihood", "vjp",
    ("x", "logits", "num_vals"), ("dlogits",), _cat_points, _cat_ref,
    forward=lambda x, logits, num_vals: categorical_log_prob(x, logits, num_vals), diff=("logits",),
    variants=(
        Variant("1 - p_k at the observed value (cancels when the model is confident)",
                "1 - p_k and sum_{c != k} p_c are equal in exact arithmetic, but when p_k rounds to "
                "1 the subtraction gives 0 (or 1 digit) where the sum of the small p_c keeps every digit",
                lambda g, x, logits, C: (_cat_one_minus(g, x, logits, C),)),
        Variant("the logits read as (B, C, D) instead of (B, D, C)",
                "SPEC section 2: the D*C outputs reshape C-order to (B, D, C); row [b, d, :] holds "
                "the C logits of dimension d",
                lambda g, x, logits, C: (_cat_reshape_cd(g, x, logits, C),)),
        Variant("the one-hot term is missing (-g p only)",
                "d/da_c [a_k - lse(a)] = [c = k] - p_c: the observed logit also appears on its own",
                lambda g, x, logits, C: ((-g[:, None, None] * _softmax(logits.reshape(x.shape[0], x.shape[1], C)))
                                         .reshape(x.shape[0], -1),)),
    ), atol_scale=0.0,
    tolerance_reason="relative per entry, no absolute floor: the point of the exercise is that "
                     "tiny entries (1e-17) keep their digits")


def _bern_points(rng):
    B, D = 3, 4
    x = rng.integers(0, 2, size=(B, D)).astype(float)
    xc = np.array([[1.0, 0.0, 1.0, 0.0]] * 2)
    ac = np.array([[40.0, -40.0, 38.0, -38.0]] * 2)
    return [Point("random, binary x, B=3, D=4", dict(x=x, logits=_std(rng, B, D, scale=2)), _std(rng, B)),
            Point("confident and right: x = 1 with a = 40, x = 0 with a = -40", dict(x=xc, logits=ac),
                  _std(rng, 2))]


def _sig(a):
    return 0.5 * (1 + np.tanh(0.5 * a))


EX_4_2 = Exercise(
    "4.2", "bernoulli_vjp", "backward pass of the Bernoulli log-likelihood", "vjp",
    ("x", "logits"), ("dlogits",), _bern_points,
    _named("refvae.likelihoods.bernoulli_log_prob_vjp")(lambda g, x, logits: (bernoulli_log_prob_vjp(g, x, logits),)),
    forward=lambda x, logits: bernoulli_log_prob(x, logits), diff=("logits",),
    variants=(
        Variant("x - sigma(a) formed as a difference (cancels when the model is confident)",
                "for x = 1 the gradient is sigma(-a) = 4.2e-18 at a = 40; x - sigma(a) gives 0 "
                "because sigma(40) rounds to 1. Write x sigma(-a) - (1 - x) sigma(a)",
                lambda g, x, a: (g[:, None] * (x - 1.0 / (1.0 + np.exp(-a))),)),
        Variant("sigma(a) - x (the sign of the gradient of the NEGATIVE log-likelihood)",
                "this function is log p, not -log p: d/da log p = x - sigma(a)",
                lambda g, x, a: (g[:, None] * (_sig(a) - x),)),
    ), atol_scale=0.0,
    tolerance_reason="relative per entry, no absolute floor: tiny entries must keep their digits")


# =========================================================================== chapter 5

def _latent_f(mu, log_var, eps):
    """ln q(z|x) - ln p(z) per example, z = mu + exp(log_var/2) eps, p = N(0, I)."""
    z = gaussian.reparameterize(mu, log_var, eps)
    zeros = np.zeros(mu.shape[-1])
    return gaussian.log_prob(z, mu, log_var) - gaussian.log_prob(z, zeros, zeros)


def _latent_parts(g, mu, log_var, eps):
    z = gaussian.reparameterize(mu, log_var, eps)
    zeros = np.zeros(mu.shape[-1])
    dz_q, dmu_q, dlv_q = gaussian.log_prob_vjp(g, z, mu, log_var)
    dz_p = gaussian.log_prob_vjp(-g, z, zeros, zeros)[0]
    return z, dz_q, dmu_q, dlv_q, dz_p


@_named("refvae.gaussian.log_prob_vjp and refvae.gaussian.reparameterize_vjp")
def _latent_ref(g, mu, log_var, eps):
    z, dz_q, dmu_q, dlv_q, dz_p = _latent_parts(g, mu, log_var, eps)
    dmu_r, dlv_r, _ = gaussian.reparameterize_vjp(dz_q + dz_p, mu, log_var, eps)
    return dmu_q + dmu_r, dlv_q + dlv_r


def _latent_bug(direct=True, through_q=True, half=0.5, prior_sign=1.0):
    def fn(g, mu, v, eps):
        z, dz_q, dmu_q, dlv_q, dz_p = _latent_parts(g, mu, v, eps)
        dz = (dz_q if through_q else 0.0) + prior_sign * dz_p
        dmu = dz + (dmu_q if direct else 0.0)
        dlv = dz * half * np.exp(v / 2) * eps + (dlv_q if direct else 0.0)
        return dmu, dlv
    return fn


def _latent_points(rng):
    return [Point("random, B=3, L=2", dict(mu=_std(rng, 3, 2), log_var=_std(rng, 3, 2, scale=0.5),
                                          eps=_std(rng, 3, 2)), _std(rng, 3))]


EX_5_1 = Exercise(
    "5.1", "latent_vjp", "backward of ln q(z|x) - ln p(z) with z = mu + sigma eps, to (mu, log_var)",
    "vjp", ("mu", "log_var", "eps"), ("dmu", "dlog_var"), _latent_points, _latent_ref,
    forward=_latent_f, diff=("mu", "log_var"),
    variants=(
        Variant("the path through z into ln q(z|x) is missing",
                "z appears in ln q(z|x) too: dz = dz_dec + dz_prior + dz_q, three paths into z",
                _latent_bug(through_q=False)),
        Variant("the direct path into ln q(z|x) is missing (only the paths through z)",
                "ln q(z|x) depends on mu and log_var directly as well as through z; both add",
                _latent_bug(direct=False)),
        Variant("the reparameterisation's 1/2 is missing (dlog_var += dz sigma eps)",
                "d/dv exp(v/2) = exp(v/2) / 2",
                _latent_bug(half=1.0)),
        Variant("the prior's term has the wrong sign",
                "the function is ln q - ln p: the prior enters with cotangent -g",
                _latent_bug(prior_sign=-1.0)),
    ))


# =========================================================================== chapter 6

def _mix_points(rng):
    B, K, L = 4, 3, 2
    w = np.log(np.array([0.5, 0.3, 0.2]))
    base = dict(means=_std(rng, K, L), log_vars=_std(rng, K, L, scale=0.5), log_weights=w)
    far = dict(base, z=np.array([[50.0, -50.0], [0.3, 0.1]]))
    return [Point("random, B=4, K=3, L=2", dict(base, z=_std(rng, B, L)), _std(rng, B)),
            Point("a query 50 standard deviations away (every term below -745)", far, _std(rng, 2))]


def _per_dim_terms(z, means, log_vars, log_weights):
    t = -0.5 * (LN_2PI + log_vars[None] + (z[:, None, :] - means[None]) ** 2 * np.exp(-log_vars[None]))
    return t + log_weights[None, :, None]        # (B, K, L)


def _per_dim(z, means, log_vars, log_weights):
    t = _per_dim_terms(z, means, log_vars, log_weights)
    return logsumexp(t, axis=1).sum(axis=1)


def _naive_mix(z, means, log_vars, log_weights):
    t = log_weights[None] - 0.5 * np.sum(LN_2PI + log_vars[None] + (z[:, None] - means[None]) ** 2
                                         * np.exp(-log_vars[None]), axis=-1)
    with np.errstate(divide="ignore"):
        return np.log(np.sum(np.exp(t), axis=1))


MIX_VARIANTS = (
    Variant("a mixture per latent dimension (logsumexp over k for each l, then a sum over l)",
            "the prior is sum_k pi_k N(z | mu_k, ...) over the whole vector z: one logsumexp over k "
            "of the full L-dimensional log-densities. The per-dimension product also integrates to "
            "one, so only a comparison with the definition catches it",
            _per_dim),
    Variant("no shift by the maximum: log(sum(exp(t)))",
            "exp(t) underflows to 0 far from every component and the log gives -inf; "
            "logsumexp(t) = m + log sum exp(t - m) with m = max_k t",
            _naive_mix),
    Variant("the log-weights are missing",
            "log p(z) = logsumexp_k [log pi_k + log N(z | mu_k, ...)]",
            lambda z, m, v, w: mixture_log_prob_numpy(z, m, v, np.zeros_like(w))),
)


EX_6_1 = Exercise(
    "6.1", "mixture_log_prob", "ln of a mixture of K diagonal Gaussians, one value per row", "forward",
    ("z", "means", "log_vars", "log_weights"), ("value",), _mix_points,
    _named("refvae.kernels.mixture.mixture_log_prob_numpy")(mixture_log_prob_numpy), variants=MIX_VARIANTS)

EX_6_3 = Exercise(
    "6.3", "mixture_log_prob_buggy", "find the bug: a mixture log-density that integrates to one",
    "forward", ("z", "means", "log_vars", "log_weights"), ("value",), _mix_points,
    _named("refvae.kernels.mixture.mixture_log_prob_numpy")(mixture_log_prob_numpy), variants=MIX_VARIANTS,
    find_bug=True)


def _mix_vjp_unnorm(g, z, means, log_vars, log_weights):
    t = log_weights[None] - 0.5 * np.sum(LN_2PI + log_vars[None] + (z[:, None] - means[None]) ** 2
                                         * np.exp(-log_vars[None]), axis=-1)
    r = np.exp(t)                                   # not divided by p(z)
    return _mix_vjp_from_r(g, z, means, log_vars, r)


def _mix_vjp_from_r(g, z, means, log_vars, r):
    gr = g[:, None] * r
    ivd = (z[:, None] - means[None]) * np.exp(-log_vars[None])
    quad = (z[:, None] - means[None]) ** 2 * np.exp(-log_vars[None])
    return (-np.einsum("bk,bkl->bl", gr, ivd), np.einsum("bk,bkl->kl", gr, ivd),
            np.einsum("bk,bkl->kl", gr, 0.5 * (quad - 1)), gr.sum(axis=0))


def _mix_vjp_perdim(g, z, means, log_vars, log_weights):
    t = _per_dim_terms(z, means, log_vars, log_weights)          # (B, K, L)
    r = np.exp(t - logsumexp(t, axis=1)[:, None, :])             # per-dimension responsibilities
    gr = g[:, None, None] * r
    ivd = (z[:, None] - means[None]) * np.exp(-log_vars[None])
    quad = (z[:, None] - means[None]) ** 2 * np.exp(-log_vars[None])
    return (-(gr * ivd).sum(axis=1), (gr * ivd).sum(axis=0), (gr * 0.5 * (quad - 1)).sum(axis=0),
            gr.sum(axis=(0, 2)))


def _mix_vjp_points(rng):
    B, K, L = 4, 3, 2
    return [Point("random, B=4, K=3, L=2", dict(z=_std(rng, B, L), means=_std(rng, K, L),
                                               log_vars=_std(rng, K, L, scale=0.5),
                                               log_weights=np.log(np.array([0.5, 0.3, 0.2]))), _std(rng, B))]


EX_6_2 = Exercise(
    "6.2", "mixture_vjp", "backward pass of the mixture log-density: responsibilities", "vjp",
    ("z", "means", "log_vars", "log_weights"), ("dz", "dmeans", "dlog_vars", "dlog_weights"),
    _mix_vjp_points, _named("refvae.kernels.mixture.mixture_log_prob_vjp_numpy")(mixture_log_prob_vjp_numpy),
    forward=mixture_log_prob_numpy, diff=("z", "means", "log_vars", "log_weights"),
    variants=(
        Variant("responsibilities not normalised: exp(t_bk) instead of exp(t_bk - log p(z_b))",
                "d/dt_k logsumexp(t) = exp(t_k - logsumexp(t)): the weights sum to one over k",
                _mix_vjp_unnorm),
        Variant("a mixture per latent dimension (responsibilities per (b, l))",
                "one responsibility r_bk per query and component, shared by every dimension l",
                _mix_vjp_perdim),
    ))


# =========================================================================== chapter 7

def _enc(W, v, L):
    h = v @ W
    return h[:, :L], h[:, L:]


def vamp_objective(W, U, x, z):
    """Per example: ln p_vamp(z_b) - ln q(z_b | x_b); components (mu_k, v_k) = enc(U_k), q's
    (mu, v) = enc(x_b), enc(v) = v W split in halves (a linear encoder, no bias)."""
    L = z.shape[1]
    mk, vk = _enc(W, U, L)
    mq, vq = _enc(W, x, L)
    return mixture_log_prob_numpy(z, mk, vk) - gaussian.log_prob(z, mq, vq)


def _vamp_paths(g, W, U, x, z):
    L = z.shape[1]
    mk, vk = _enc(W, U, L)
    mq, vq = _enc(W, x, L)
    _, dmk, dvk, _ = mixture_log_prob_vjp_numpy(g, z, mk, vk)
    _, dmq, dvq = gaussian.log_prob_vjp(-g, z, mq, vq)
    dU, dW_prior, _ = layers.linear_backward(np.concatenate([dmk, dvk], axis=1), (U, W))
    _, dW_q, _ = layers.linear_backward(np.concatenate([dmq, dvq], axis=1), (x, W))
    return dW_prior, dW_q, dU


@_named("refvae's mixture VJP, gaussian.log_prob_vjp and layers.linear_backward")
def _vamp_ref(g, W, U, x, z):
    dW_prior, dW_q, dU = _vamp_paths(g, W, U, x, z)
    return dW_q + dW_prior, dU


def _vamp_points(rng):
    D, L, K, B = 3, 2, 3, 4
    return [Point("random, D=3, L=2, K=3, B=4", dict(W=_std(rng, D, 2 * L, scale=0.5), U=_std(rng, K, D),
                                                    x=_std(rng, B, D), z=_std(rng, B, L)), _std(rng, B))]


EX_7_1 = Exercise(
    "7.1", "vamp_vjp", "gradient of ln p_vamp(z) - ln q(z|x) w.r.t. the shared encoder W and the "
    "pseudo-inputs U", "vjp", ("W", "U", "x", "z"), ("dW", "dU"), _vamp_points, _vamp_ref,
    forward=vamp_objective, diff=("W", "U"),
    variants=(
        Variant("only the q(z|x) path: the prior's own pass through the encoder is missing",
                "W is used twice, at the data (q) and at the pseudo-inputs (the prior); its "
                "gradient is the sum of both paths",
                lambda g, W, U, x, z: (_vamp_paths(g, W, U, x, z)[1], _vamp_paths(g, W, U, x, z)[2])),
        Variant("only the prior path: q(z|x)'s gradient was overwritten, not added",
                "accumulate: grads[W] = dW_q + dW_prior (refvae's _sum_paths adds in path order)",
                lambda g, W, U, x, z: (_vamp_paths(g, W, U, x, z)[0], _vamp_paths(g, W, U, x, z)[2])),
    ))


# =========================================================================== chapter 8

FLOW = FlowPrior(3, num_couplings=1, hidden=(), activation="tanh")


def _flow_params(Ws, bs, Wt, bt):
    return {"prior.flow.0.s.0.W": Ws, "prior.flow.0.s.0.b": bs,
            "prior.flow.0.t.0.W": Wt, "prior.flow.0.t.0.b": bt}


def coupling_forward(z, Ws, bs, Wt, bt):
    return FLOW.forward(_flow_params(Ws, bs, Wt, bt), z)[0]


def _coupling_bug(ld_factor=1.0, base_const=True):
    def fn(z, Ws, bs, Wt, bt):
        za, zb = z[:, :1], z[:, 1:]
        s = np.tanh(za @ Ws + bs)
        t = za @ Wt + bt
        u = np.concatenate([za, (zb - t) * np.exp(-s)], axis=1)[:, ::-1]
        base = -0.5 * np.sum((LN_2PI if base_const else 0.0) + u * u, axis=1)
        return base - ld_factor * np.sum(s, axis=1)
    return fn


def _flow_points(rng):
    return [Point("random, L=3 (z_a 1 coordinate, z_b 2), B=4",
                  dict(z=_std(rng, 4, 3), Ws=_std(rng, 1, 2), bs=_std(rng, 2, scale=0.3),
                       Wt=_std(rng, 1, 2), bt=_std(rng, 2, scale=0.3)), _std(rng, 4))]


FLOW_VARIANTS = (
    Variant("the log-determinant added once per latent dimension (L sum_j s_j)",
            "a coupling's Jacobian is triangular with diagonal (1, ..., 1, e^{-s_1}, ...): its "
            "log-determinant is -sum_j s_j, added ONCE per coupling",
            _coupling_bug(ld_factor=3.0)),
    Variant("the log-determinant with the wrong sign (+sum_j s_j)",
            "y_b = (z_b - t) e^{-s}: the diagonal entries are e^{-s_j}, so log|det| = -sum_j s_j",
            _coupling_bug(ld_factor=-1.0)),
    Variant("the base density lacks its -1/2 ln 2 pi",
            "log N(u | 0, I) = -1/2 sum_l (ln 2 pi + u_l^2)",
            _coupling_bug(base_const=False)),
)

EX_8_1 = Exercise(
    "8.1", "coupling_log_prob", "ln p(z) under one RealNVP coupling onto N(0, I)", "forward",
    ("z", "Ws", "bs", "Wt", "bt"), ("value",), _flow_points,
    _named("refvae.priors.FlowPrior.forward")(coupling_forward), variants=FLOW_VARIANTS)

EX_8_3 = Exercise(
    "8.3", "coupling_log_prob_buggy", "find the bug: a flow density that no longer integrates to one",
    "forward", ("z", "Ws", "bs", "Wt", "bt"), ("value",), _flow_points,
    _named("refvae.priors.FlowPrior.forward")(coupling_forward), variants=FLOW_VARIANTS, find_bug=True)


@_named("refvae.priors.FlowPrior.backward")
def _coupling_vjp_ref(g, z, Ws, bs, Wt, bt):
    lp, cache = FLOW.forward(_flow_params(Ws, bs, Wt, bt), z)
    dz, gr = FLOW.backward(g, cache)
    return (dz, gr["prior.flow.0.s.0.W"], gr["prior.flow.0.s.0.b"], gr["prior.flow.0.t.0.W"],
            gr["prior.flow.0.t.0.b"])


def _coupling_vjp_bug(ld=1.0, tanh_grad=True, direct=True):
    def fn(g, z, Ws, bs, Wt, bt):
        za, zb = z[:, :1], z[:, 1:]
        pre = za @ Ws + bs
        s = np.tanh(pre)
        t = za @ Wt + bt
        e = np.exp(-s)
        yb = (zb - t) * e
        u = np.concatenate([za, yb], axis=1)[:, ::-1]
        dy = (-g[:, None] * u)[:, ::-1]
        dya, dyb = dy[:, :1], dy[:, 1:]
        dzb, dt = dyb * e, -dyb * e
        ds = -dyb * yb - ld * g[:, None]
        dpre = ds * (1 - s * s) if tanh_grad else ds
        dza = (dya if direct else 0.0) + dpre @ Ws.T + dt @ Wt.T
        return (np.concatenate([dza, dzb], axis=1), za.T @ dpre, dpre.sum(0), za.T @ dt, dt.sum(0))
    return fn


EX_8_2 = Exercise(
    "8.2", "coupling_vjp", "backward pass of one RealNVP coupling's ln p(z)", "vjp",
    ("z", "Ws", "bs", "Wt", "bt"), ("dz", "dWs", "dbs", "dWt", "dbt"), _flow_points, _coupling_vjp_ref,
    forward=coupling_forward, diff=("z", "Ws", "bs", "Wt", "bt"),
    variants=(
        Variant("the log-determinant's gradient is missing (ds lacks -g)",
                "log p = base + log_det and log_det = -sum_j s_j: every s_j also gets -g",
                _coupling_vjp_bug(ld=0.0)),
        Variant("the log-determinant's gradient taken once per latent dimension (ds -= L g)",
                "the log-determinant enters once per coupling, so ds gets -g once",
                _coupling_vjp_bug(ld=3.0)),
        Variant("tanh's derivative is missing (dpre_s = ds)",
                "s = tanh(pre_s): dpre_s = ds (1 - s^2)",
                _coupling_vjp_bug(tanh_grad=False)),
        Variant("z_a's direct path is missing (y_a = z_a passes through)",
                "z_a reaches the output three ways: directly as y_a, through s and through t",
                _coupling_vjp_bug(direct=False)),
    ))


# =========================================================================== chapter 9

def _xsinx_points(rng):
    return [Point("random, 5 entries", dict(x=_std(rng, 5)), _std(rng, 5))]


EX_9_1 = Exercise(
    "9.1", "x_sin_x_vjp", "VJP of the elementwise f(x) = x sin x", "vjp", ("x",), ("dx",),
    _xsinx_points, _named("g (sin x + x cos x), the product rule")(lambda g, x: (g * (np.sin(x) + x * np.cos(x)),)),
    forward=lambda x: x * np.sin(x), diff=("x",),
    variants=(
        Variant("the cotangent g is ignored (returns the derivative, not g times it)",
                "a VJP returns g * f'(x); a check with g = 1 or a scalar loss cannot see the difference",
                lambda g, x: (np.sin(x) + x * np.cos(x),)),
        Variant("half of the product rule (x cos x only)",
                "(x sin x)' = sin x + x cos x",
                lambda g, x: (g * x * np.cos(x),)),
    ))


def _lse_points(rng):
    x = _std(rng, 3, 4)
    xn = x - logsumexp(x, axis=-1)[:, None]          # rows with logsumexp = 0
    return [Point("rows with logsumexp exactly 0 (normalised log-probabilities)", dict(x=xn), _std(rng, 3)),
            Point("random rows (logsumexp != 0)", dict(x=x + 2.0), _std(rng, 3))]


EX_9_2 = Exercise(
    "9.2", "logsumexp_vjp", "find the bug: a logsumexp VJP that passes a check at one point", "vjp",
    ("x",), ("dx",), _lse_points,
    _named("refvae.primitives.logsumexp_vjp")(lambda g, x: logsumexp_vjp(g, x, axis=-1)),
    forward=lambda x: logsumexp(x, axis=-1), diff=("x",),
    variants=(
        Variant("unnormalised weights exp(x) instead of exp(x - logsumexp(x))",
                "d/dx_k log sum_j e^{x_j} = e^{x_k} / sum_j e^{x_j} = exp(x_k - ans): equal to "
                "exp(x_k) only where logsumexp(x) = 0, the point where a single check was made",
                lambda g, x: (g[:, None] * np.exp(x),)),
    ), find_bug=True)


EXERCISES = {e.id: e for e in (EX_1_1, EX_2_1, EX_2_2, EX_3_1, EX_3_2, EX_3_3, EX_4_1, EX_4_2, EX_5_1,
                               EX_6_1, EX_6_2, EX_6_3, EX_7_1, EX_8_1, EX_8_2, EX_8_3, EX_9_1, EX_9_2)}
