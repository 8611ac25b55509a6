r"""The decoders' log-likelihoods ``log p(x | z)`` and their VJPs with respect to the decoder outputs.

Three likelihoods (SPEC section 2), one value per example (shape (B,)):

=================  ===========================  ===================================================
name               decoder output               ``log p(x|z)``
=================  ===========================  ===================================================
``categorical``    logits (B, D*C)              ``sum_d log_softmax(logits[b, d, :])[x_bd]``
``bernoulli``      logits a (B, D)              ``sum_d x_d log sigma(a_d) + (1 - x_d) log sigma(-a_d)``
``gaussian``       mean (B, D), log_var         ``sum_d log N(x_d | mean_d, exp(log_var_d))``
=================  ===========================  ===================================================

Each ``<name>_log_prob_vjp(g, ...)`` returns the gradient of ``sum_b g_b log p(x_b | z_b)`` with
respect to the decoder outputs, each with its input's shape. The data ``x`` is never differentiated.

No probability is ever clamped: the categorical and Bernoulli log-likelihoods are assembled from
the log-domain primitives (:func:`refvae.primitives.log_softmax`, :func:`refvae.primitives.log_sigmoid`),
finite for every finite logit (``+-1e300`` included).

The forwards accept complex128 decoder outputs (logits, mean, log_var) for complex-step checks;
the data ``x`` is real.

The VAE reads a likelihood through an object with the interface of :class:`Likelihood` (shaped
like :class:`refvae.priors.Prior`): :class:`Categorical`, :class:`Bernoulli` and :class:`Gaussian`
call the functions above. :data:`LIKELIHOODS` (name -> class) is the single list of names; a
likelihood defined outside refvae joins it with :func:`register_likelihood`.
"""

from __future__ import annotations

import numpy as np

from .kernels import rowkernels as _rowkernels
from . import gaussian
from ._validation import as_float_array, check_choice, check_positive_int, check_real, register_class
from .primitives import log_sigmoid, log_softmax, sigmoid

__all__ = ["LIKELIHOODS", "Likelihood", "Categorical", "Bernoulli", "Gaussian", "make_likelihood",
           "register_likelihood", "categorical_log_prob", "categorical_log_prob_vjp",
           "bernoulli_log_prob", "bernoulli_log_prob_vjp", "gaussian_log_prob",
           "gaussian_log_prob_vjp"]

#: a fixed decoder log-variance v must keep exp(+-v/2) finite in float64
MAX_ABS_DECODER_LOG_VAR = 1400.0


def _check_g(g, B):
    return as_float_array(g, "g", shape=(B,))


# =========================================================================== categorical

def _check_categorical_x(x, C):
    """``x`` (B, D) float64 holding category indices 0..C-1, as ``intp``; ValueError naming x."""
    if np.any(x != np.floor(x)):
        idx = tuple(int(i) for i in np.argwhere(x != np.floor(x))[0])
        raise ValueError(f"x must hold integer category indices 0..{C - 1}; found {x[idx]!r} at index {idx}")
    bad = (x < 0) | (x > C - 1)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"x must hold category indices in 0..{C - 1} (num_vals={C}); "
                         f"found {x[idx]!r} at index {idx}")
    return x.astype(np.intp)


def _check_categorical(x, logits, num_vals, allow_complex=True):
    C = check_positive_int(num_vals, "num_vals")
    x = as_float_array(x, "x", ndim=2)
    B, D = x.shape
    logits = as_float_array(logits, "logits", ndim=2, allow_complex=allow_complex)
    if logits.shape != (B, D * C):
        raise ValueError(f"logits must have shape (B, D*C) = ({B}, {D * C}) for x of shape {x.shape} "
                         f"and num_vals={C}, got {logits.shape}")
    return _check_categorical_x(x, C), logits.reshape(B, D, C), C


def _categorical_log_prob_and_cache(xi, a):
    """Unchecked :func:`categorical_log_prob` on ``xi`` (B, D) intp and logits ``a`` (B, D, C)
    (float64 or complex128). Returns ``(log_prob, cache)`` for :func:`_categorical_vjp_from_cache`
    (the VAE computes the row normalisation once per step).

    Real finite logits go through the fused kernel :func:`refvae.kernels.rowkernels.categorical_forward`,
    and ``cache = ("p", softmax weights)``; complex logits (complex-step checks) and real logits
    with an infinite (or NaN) entry take the NumPy path (:func:`refvae.primitives.log_softmax`,
    which handles +-inf), and ``cache = ("lsm", log_softmax)``. The public functions make the same
    choice, so the two paths give the same bits."""
    if not np.iscomplexobj(a):
        a = np.ascontiguousarray(a, dtype=np.float64)
        ok, lp, p = _rowkernels.categorical_forward(np.ascontiguousarray(xi, dtype=np.intp), a)
        if ok:
            return lp, ("p", p)
    lsm = log_softmax.unchecked(a, axis=-1)
    return np.take_along_axis(lsm, xi[:, :, None], axis=-1)[:, :, 0].sum(axis=1), ("lsm", lsm)


def _categorical_vjp_from_cache(g, xi, cache):
    """Unchecked :func:`categorical_log_prob_vjp` from the forward's ``cache`` (see
    :func:`_categorical_log_prob_and_cache`; real logits only: for complex logits call the public
    function, which differentiates at their real part) and ``g`` (B,) float64; returns dlogits
    (B, D, C) float64.

    ``("p", p)``: the fused kernel :func:`refvae.kernels.rowkernels.categorical_vjp`. ``("lsm", lsm)``
    (non-finite logits): ``p = exp(lsm)`` in NumPy, with the observed entry as
    ``sum_{c != k} p_c``; ``g * (-p)`` is formed as ``(-g) * p`` (negation is exact and the product
    commutes), in place in the array ``p``."""
    kind, arr = cache
    g = np.ascontiguousarray(g, dtype=np.float64)
    if kind == "p":
        return _rowkernels.categorical_vjp(g, np.ascontiguousarray(xi, dtype=np.intp), arr)
    with np.errstate(under="ignore"):
        p = np.exp(arr)
    np.put_along_axis(p, xi[:, :, None], 0.0, axis=-1)
    s = p.sum(axis=-1, keepdims=True)
    gb = g[:, None, None]
    np.multiply(-gb, p, out=p)
    np.put_along_axis(p, xi[:, :, None], gb * s, axis=-1)
    return p


def categorical_log_prob(x, logits, num_vals):
    r"""Log-likelihood of a factorised categorical decoder, one value per example.

    What it is
    ----------
    Each of the D data dimensions takes one of C = ``num_vals`` values; the decoder's D*C outputs
    are reshaped C-order to (B, D, C), row ``logits[b, d, :]`` holding the logits of dimension d.

    Forward
    -------
    .. math::

        \log p(x_b \mid z_b) = \sum_{d=1}^{D} \log\operatorname{softmax}(a_{bd})_{x_{bd}}
        = \sum_d \Big[a_{bd x_{bd}} - \log \sum_{c} e^{a_{bdc}}\Big].

    Backward
    --------
    See :func:`categorical_log_prob_vjp`.

    Shapes
    ------
    x (B, D), integer values in 0..C-1 (a float array holding integers is fine); logits (B, D*C);
    output (B,).

    Numerics
    --------
    The algorithm of :func:`refvae.primitives.log_softmax` (exact shift by the row maximum,
    ``expm1`` for the maximal term, ``log1p``), fused per row into one Numba kernel
    (:mod:`refvae.kernels.rowkernels`; complex logits take the NumPy path): finite for every finite
    logit, e.g. ``[1e300, -1e300]`` gives ``[0, -2e300]``; within a few ulp of the exact value
    per row, summed over d in order. No clamping. Non-integer or out-of-range ``x`` is a
    ``ValueError`` naming x.

    References
    ----------
    SPEC.md section 2 (categorical decoder, C = 17 for the digits data).
    """
    xi, a, _ = _check_categorical(x, logits, num_vals)
    if np.iscomplexobj(a):   # complex step: the NumPy log_softmax (analytic in the logits)
        lsm = log_softmax(a, axis=-1)
        return np.take_along_axis(lsm, xi[:, :, None], axis=-1)[:, :, 0].sum(axis=1)
    return _categorical_log_prob_and_cache(xi, a)[0]   # the fused kernel (logits are finite here)


def categorical_log_prob_vjp(g, x, logits, num_vals):
    r"""VJP of :func:`categorical_log_prob` with respect to the logits.

    Backward
    --------
    From :math:`\log\operatorname{softmax}(a)_k = a_k - \log\sum_c e^{a_c}`,
    :math:`\partial/\partial a_c = [c = k] - \operatorname{softmax}(a)_c`; with the cotangent
    :math:`g_b` on example b,

    .. math:: \frac{\partial L}{\partial a_{bdc}} = g_b\,\big([c = x_{bd}] - \operatorname{softmax}(a_{bd})_c\big),

    returned reshaped C-order back to (B, D*C).

    Shapes
    ------
    g (B,); x (B, D); logits (B, D*C); dlogits (B, D*C).

    Numerics
    --------
    ``softmax_c = exp(a_c - m) / (1 + s')`` from the forward's exact shift (:mod:`refvae.kernels.rowkernels`;
    a few ulp): <= 1, no overflow; entries far below the row maximum underflow to 0, which is
    their correct value to within the smallest float. Complex logits are a ``TypeError`` (the
    VJP is evaluated at a real point; only the forward takes the complex step). At the observed value the
    entry :math:`1 - \operatorname{softmax}_k` is computed as :math:`\sum_{c \ne k}\operatorname{softmax}_c`
    (positive terms only): the subtraction would lose every digit when the prediction is confident
    (logits [0, -19, -19] give 1 - p_k = 1.1e-8, of which 1 - p_k in float64 keeps 8 digits).

    References
    ----------
    SPEC.md section 2. See also: docs/course/04-likelihoods.md (why the sum and not
    1 - p_k, with numbers).
    """
    xi, a, C = _check_categorical(x, logits, num_vals, allow_complex=False)
    B, D, _ = a.shape
    g = _check_g(g, B)
    # the fused kernels, as in the VAE's fast path: softmax weights from the forward, then
    # d = -g p off the observed value and g sum_{c != k} p_c at the observed value k
    _, cache = _categorical_log_prob_and_cache(xi, np.ascontiguousarray(np.real(a)))
    return _categorical_vjp_from_cache(g, xi, cache).reshape(B, D * C)


# =========================================================================== Bernoulli

def _check_bernoulli(x, logits, allow_complex=True):
    x = as_float_array(x, "x", ndim=2)
    logits = as_float_array(logits, "logits", ndim=2, allow_complex=allow_complex)
    if logits.shape != x.shape:
        raise ValueError(f"logits must have the shape of x {x.shape}, got {logits.shape}")
    bad = (x < 0) | (x > 1)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"x must lie in [0, 1] for the Bernoulli likelihood; found {x[idx]!r} at index {idx}")
    return x, logits


def bernoulli_log_prob(x, logits):
    r"""Log-likelihood of a factorised Bernoulli decoder with logits ``a``, one value per example.

    Forward
    -------
    .. math::

        \log p(x_b \mid z_b) = \sum_d \big[x_{bd}\log\sigma(a_{bd}) + (1 - x_{bd})\log\sigma(-a_{bd})\big].

    Backward
    --------
    See :func:`bernoulli_log_prob_vjp`.

    Shapes
    ------
    x (B, D) with values in [0, 1] (binary data, or intensities used as soft targets); logits
    (B, D); output (B,).

    Numerics
    --------
    Computed with :func:`refvae.primitives.log_sigmoid` (``-softplus(-a)``), never forming
    :math:`\sigma(a)`: finite for every finite logit (``log_sigmoid(-1e300) = -1e300``), and a
    term whose weight is 0 contributes exactly 0. No clamping.

    References
    ----------
    SPEC.md section 2 (Bernoulli decoder).
    """
    x, a = _check_bernoulli(x, logits)
    return np.sum(x * log_sigmoid(a) + (1.0 - x) * log_sigmoid(-a), axis=1)


def bernoulli_log_prob_vjp(g, x, logits):
    r"""VJP of :func:`bernoulli_log_prob` with respect to the logits: ``g[:, None] * (x - sigma(a))``.

    Backward
    --------
    :math:`\frac{d}{da}\log\sigma(a) = \sigma(-a)` and :math:`\frac{d}{da}\log\sigma(-a) = -\sigma(a)`, so

    .. math:: \frac{\partial L}{\partial a_{bd}} = g_b\big(x_{bd}\,\sigma(-a_{bd}) - (1 - x_{bd})\,\sigma(a_{bd})\big)
              = g_b\,(x_{bd} - \sigma(a_{bd})),

    using :math:`\sigma(a) + \sigma(-a) = 1`.

    Shapes
    ------
    g (B,); x, logits, dlogits (B, D).

    Numerics
    --------
    The first form is evaluated: for binary x it is exactly one term, :math:`\sigma(-a)` or
    :math:`-\sigma(a)`, with full relative accuracy even where ``x - sigmoid(a)`` would cancel
    (x = 1, a = 40 gives 4.2e-18, not 0). Complex logits are a ``TypeError`` (the VJP is
    evaluated at a real point).

    References
    ----------
    SPEC.md section 2. See also: docs/course/04-likelihoods.md (Bernoulli without forming sigma).
    """
    x, a = _check_bernoulli(x, logits, allow_complex=False)
    g = _check_g(g, x.shape[0])
    return g[:, None] * (x * sigmoid(-a) - (1.0 - x) * sigmoid(a))


# =========================================================================== Gaussian

def _check_gaussian(x, mean, log_var, allow_complex=True):
    x = as_float_array(x, "x", ndim=2)
    mean = as_float_array(mean, "mean", ndim=2, allow_complex=allow_complex)
    if mean.shape != x.shape:
        raise ValueError(f"mean must have the shape of x {x.shape}, got {mean.shape}")
    log_var = as_float_array(log_var, "log_var", ndim=(1, 2), allow_complex=allow_complex)
    B, D = x.shape
    if log_var.shape not in ((D,), (B, D)):
        raise ValueError(f"log_var must have shape (D,) = ({D},) or (B, D) = {(B, D)}, got {log_var.shape}")
    return x, mean, log_var


def gaussian_log_prob(x, mean, log_var):
    r"""Log-likelihood of a diagonal Gaussian decoder, one value per example.

    Forward
    -------
    .. math::

        \log p(x_b \mid z_b) = -\tfrac12 \sum_d \big[\ln 2\pi + v_d + (x_{bd} - \mu_{bd})^2 e^{-v_d}\big],

    with :math:`\mu` the decoder's mean and :math:`v` = ``log_var``, either one learned or fixed
    value per dimension (shape (D,), shared by the batch) or one per example and dimension.

    Backward
    --------
    See :func:`gaussian_log_prob_vjp`.

    Shapes
    ------
    x, mean (B, D); log_var (D,) or (B, D); output (B,).

    Numerics
    --------
    Delegates to :func:`refvae.gaussian.log_prob` (all normalising constants included).

    References
    ----------
    SPEC.md section 2 (diagonal Gaussian; Gaussian decoder).
    """
    x, mean, log_var = _check_gaussian(x, mean, log_var)
    return gaussian.log_prob(x, mean, log_var)


def gaussian_log_prob_vjp(g, x, mean, log_var):
    r"""VJP of :func:`gaussian_log_prob`: ``(dmean, dlog_var)``.

    Backward
    --------
    Differentiating :math:`-\tfrac12[\ln 2\pi + v + (x - \mu)^2 e^{-v}]`:

    - :math:`\partial/\partial\mu = (x - \mu)\,e^{-v}` :math:`\Rightarrow`
      ``dmean = g[:, None] * (x - mean) * exp(-log_var)``;
    - :math:`\partial/\partial v = \tfrac12[(x - \mu)^2 e^{-v} - 1]`; for a (D,) ``log_var`` shared
      by the batch the per-example terms are summed over b (the broadcast's adjoint).

    Both come from :func:`refvae.gaussian.log_prob_vjp`.

    Shapes
    ------
    g (B,); x, mean, dmean (B, D); dlog_var has log_var's shape, (D,) or (B, D).

    Numerics
    --------
    As :func:`refvae.gaussian.log_prob_vjp`. Complex ``mean`` or ``log_var`` is a ``TypeError``
    (the VJP is evaluated at a real point).

    References
    ----------
    SPEC.md section 2.
    """
    x, mean, log_var = _check_gaussian(x, mean, log_var, allow_complex=False)
    g = _check_g(g, x.shape[0])
    _, dmean, dlog_var = gaussian.log_prob_vjp(g, x, mean, log_var)
    return dmean, dlog_var  # gaussian.log_prob_vjp sums a (D,) log_var's gradient over the batch


# =========================================================================== the Likelihood protocol

def check_log_var(log_var, name="log_var"):
    """A decoder log-variance option: ``"learned"``, or a real number in [-1400, 1400] returned as
    float (``ValueError``/``TypeError`` naming ``name`` otherwise; a bool is a TypeError)."""
    if isinstance(log_var, str):
        if log_var != "learned":
            raise ValueError(f"{name} must be 'learned' or a finite float, got {log_var!r}")
        return log_var
    return check_real(log_var, f"{name} (a fixed log-variance, or 'learned')",
                      lo=-MAX_ABS_DECODER_LOG_VAR, hi=MAX_ABS_DECODER_LOG_VAR)


class Likelihood:
    r"""A decoder likelihood ``p(x | z)`` read from the decoder's output, shaped like
    :class:`refvae.priors.Prior`. A likelihood object has

    - ``name`` : its key in :data:`LIKELIHOODS` (a class attribute);
    - ``options`` (class attribute) : the names of the :class:`~refvae.vae.VAE` options its
      constructor takes besides ``x_dim`` (``num_vals``, ``log_var``);
    - ``out_dim`` : the width of the decoder's output it reads;
    - ``param_shapes`` : dict ``name -> shape`` of the parameters it owns (``decoder.log_var`` for a
      learned Gaussian variance), and ``init_params(rng)``;
    - ``check_x(x)`` : the data (already a finite float64 (B, D) array) in the form ``forward``
      reads, checked against the likelihood (``ValueError`` naming x);
    - ``forward(params, x, out) -> (log_px, cache)`` : ``ln p(x | z)`` per example, shape (B,), for
      ``x`` from ``check_x``;
    - ``backward(g, cache) -> (dout, grads)`` : the VJP of ``forward`` for an upstream gradient g
      (B,): dout (float64, C-contiguous, the shape of ``out``) and the gradients of its parameters;
    - ``log_prob(params, x, out)`` : ``ln p(x | z)`` with every argument checked (the module's
      public functions);
    - ``mean(params, out)`` : ``E[x | z]``; ``sample(params, out, rng)`` : one draw of x per row;
    - ``config()`` : the JSON-able options.

    A subclass provides ``log_prob``, ``backward``, ``mean`` and ``sample`` (and ``forward`` when
    its backward wants more than ``(params, x, out)``, as the categorical's does).
    """

    name = "likelihood"
    options = ()

    def __init__(self, x_dim):
        self.x_dim = check_positive_int(x_dim, "x_dim")

    @property
    def out_dim(self) -> int:
        return self.x_dim

    @property
    def param_shapes(self) -> dict:
        return {}

    def init_params(self, rng) -> dict:
        return {k: np.zeros(s) for k, s in self.param_shapes.items()}

    def check_x(self, x):
        """Default: ``x`` as it is (the public functions check it in :meth:`log_prob`)."""
        return x

    def forward(self, params, x, out):
        """Default: :meth:`log_prob`, with the cache ``(params, x, out)``."""
        return self.log_prob(params, x, out), (params, x, out)

    def config(self) -> dict:
        return {"name": self.name}


class Categorical(Likelihood):
    """``categorical``: the decoder outputs D*C logits (C = ``num_vals``), reshaped C-order to
    (B, D, C); see :func:`categorical_log_prob`. ``forward`` keeps the softmax weights of the fused
    row kernel for ``backward`` (one pass over the logits' exponentials per step)."""

    name = "categorical"
    options = ("num_vals",)

    def __init__(self, x_dim, num_vals):
        super().__init__(x_dim)
        if num_vals is None:
            raise TypeError("num_vals must be an integer >= 2 for the categorical likelihood, got None")
        self.num_vals = check_positive_int(num_vals, "num_vals", minimum=2)

    @property
    def out_dim(self):
        return self.x_dim * self.num_vals

    def check_x(self, x):
        """Category indices 0..C-1 as ``intp`` (``ValueError`` naming x)."""
        return _check_categorical_x(x, self.num_vals)

    def log_prob(self, params, x, out):
        return categorical_log_prob(x, out, self.num_vals)

    def forward(self, params, x, out):
        a = out.reshape(out.shape[0], self.x_dim, self.num_vals)
        log_px, rows = _categorical_log_prob_and_cache(x, a)
        return log_px, (x, a, rows)

    def backward(self, g, cache):
        """Complex logits (a complex-step forward) are differentiated at their real part."""
        xi, a, rows = cache
        if np.iscomplexobj(rows[1]):
            rows = _categorical_log_prob_and_cache(xi, np.ascontiguousarray(np.real(a)))[1]
        return _categorical_vjp_from_cache(g, xi, rows).reshape(a.shape[0], -1), {}

    def mean(self, params, out):
        """``sum_c c p_c`` per dimension."""
        logits = out.reshape(out.shape[0], self.x_dim, self.num_vals)
        p = np.exp(logits - logits.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        return p @ np.arange(self.num_vals, dtype=np.float64)

    def sample(self, params, out, rng):
        """The Gumbel-max draw: ``argmax_c (a_c - ln(-ln u_c))``."""
        logits = out.reshape(out.shape[0], self.x_dim, self.num_vals)
        gumbel = -np.log(-np.log(rng.uniform(size=logits.shape)))
        return np.argmax(logits + gumbel, axis=-1).astype(np.float64)

    def config(self):
        return {"name": self.name, "num_vals": self.num_vals}


class Bernoulli(Likelihood):
    """``bernoulli``: the decoder outputs D logits; see :func:`bernoulli_log_prob`."""

    name = "bernoulli"

    def log_prob(self, params, x, out):
        return bernoulli_log_prob(x, out)

    def backward(self, g, cache):
        _, x, out = cache
        return np.ascontiguousarray(bernoulli_log_prob_vjp(g, x, np.real(out)), dtype=np.float64), {}

    def mean(self, params, out):
        return sigmoid(out)

    def sample(self, params, out, rng):
        return (rng.uniform(size=out.shape) < self.mean(params, out)).astype(np.float64)


class Gaussian(Likelihood):
    """``gaussian``: the decoder outputs D means; the log-variance is the learned parameter
    ``decoder.log_var`` (D,) (``log_var="learned"``) or a fixed float. See
    :func:`gaussian_log_prob`."""

    name = "gaussian"
    options = ("log_var",)

    def __init__(self, x_dim, log_var="learned"):
        super().__init__(x_dim)
        log_var = check_log_var(log_var)
        self.fixed_log_var = None if log_var == "learned" else log_var

    @property
    def param_shapes(self):
        return {"decoder.log_var": (self.x_dim,)} if self.fixed_log_var is None else {}

    def log_var(self, params):
        """The decoder's log-variance (D,)."""
        if self.fixed_log_var is not None:
            return np.full(self.x_dim, self.fixed_log_var)
        return params["decoder.log_var"]

    def log_prob(self, params, x, out):
        return gaussian_log_prob(x, out, self.log_var(params))

    def backward(self, g, cache):
        params, x, out = cache
        dmean, dlog_var = gaussian_log_prob_vjp(g, x, np.real(out), np.real(self.log_var(params)))
        grads = {} if self.fixed_log_var is not None else {"decoder.log_var": dlog_var}
        return np.ascontiguousarray(dmean, dtype=np.float64), grads

    def mean(self, params, out):
        return out

    def sample(self, params, out, rng):
        return out + np.exp(0.5 * self.log_var(params)) * rng.standard_normal(out.shape)

    def config(self):
        return {"name": self.name,
                "log_var": "learned" if self.fixed_log_var is None else self.fixed_log_var}


#: name -> likelihood class, the single list of names; :func:`register_likelihood` appends.
LIKELIHOODS = {cls.name: cls for cls in (Categorical, Bernoulli, Gaussian)}


def register_likelihood(cls):
    """Add a :class:`Likelihood` subclass to :data:`LIKELIHOODS` under ``cls.name`` and return it
    (usable as a class decorator); the VAE, the CLI and ``VAE.from_config`` then take the name.
    ``TypeError`` unless ``cls`` subclasses :class:`Likelihood`; ``ValueError`` if ``cls.name`` is
    not its own identifier or is taken by another class (the same class twice is allowed)."""
    return register_class(LIKELIHOODS, cls, Likelihood, "likelihood", "poisson")


def make_likelihood(name, x_dim, **options):
    """Construct a likelihood by name (:data:`LIKELIHOODS` lists them); ``options`` go to its
    constructor (the class attribute ``options`` names those it takes: ``num_vals`` for the
    categorical, ``log_var`` for the Gaussian). An option it does not take is a ``ValueError``
    naming it."""
    check_choice(name, "likelihood", tuple(LIKELIHOODS))
    cls = LIKELIHOODS[name]
    unknown = [k for k in options if k not in cls.options]
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for the {name} likelihood; "
                         f"it takes {', '.join(cls.options) if cls.options else 'no options'}")
    return cls(x_dim, **options)
