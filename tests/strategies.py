"""Shared hypothesis strategies.

Arrays are generated as float64, C-contiguous, with elements bounded so that the quantities under
test are finite; adversarial corners (K = 1, B = 1, -inf weights, huge spreads, tiny variances)
are pinned with ``@example`` in the tests themselves.
"""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays


def floats(lo, hi):
    """Finite float64 in [lo, hi] (no NaN, no inf, no subnormal surprises)."""
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)


def float_arrays(shape, lo=-10.0, hi=10.0):
    """C-contiguous float64 array of the given shape with elements in [lo, hi]."""
    return arrays(np.float64, shape, elements=floats(lo, hi)).map(np.ascontiguousarray)


dims = st.integers(1, 6)             #: latent dimension L
small_counts = st.integers(1, 12)    #: B or K for property tests
log_vars_range = (-8.0, 8.0)          #: log-variances in property tests (adversarial tests go to +-60)


# --------------------------------------------------------------------------- layers/likelihoods

EXTREME_LOGITS = (1e3, -1e3, 1e300, -1e300, 7e2, -7e2, 0.0)  #: pinned by the likelihood tests


TINY = 1e-100  #: nonzero magnitudes below this are flushed to 0 where they multiply other inputs


def no_tiny(x):
    """Flush entries with 0 < |x| < TINY to 0.

    The complex step with h = 1e-30 underflows when a derivative times h is below 1e-308: for
    y = x W, d/dW at x = 1e-300 gives Im(x (W + i h u)) = 1e-330 -> 0. Such inputs are flushed
    where they multiply (linear layers, x - mean); elementwise activations keep them.
    """
    x = np.array(x, dtype=np.float64)
    x[np.abs(x) < TINY] = 0.0
    return x


def away_from_zero(x, margin):
    """Move entries with |x| < margin to +-margin (sign kept, 0 -> +margin).

    Finite differences across a kink of relu/leaky_relu measure a mixture of the two slopes; the
    tests shift inputs so that every point of the difference stencil is on one side.
    """
    x = np.array(x, dtype=np.float64)
    small = np.abs(x) < margin
    x[small] = np.where(x[small] < 0, -margin, margin)
    return x


@st.composite
def linear_args(draw, max_b=5, max_in=6, max_out=6, lo=-3.0, hi=3.0):
    """(x, W, b) for a linear layer: x (B, in), W (in, out), b (out,); tiny values flushed."""
    B, n_in, n_out = draw(st.integers(1, max_b)), draw(st.integers(1, max_in)), draw(st.integers(1, max_out))
    return (no_tiny(draw(float_arrays((B, n_in), lo, hi))), no_tiny(draw(float_arrays((n_in, n_out), lo, hi))),
            no_tiny(draw(float_arrays((n_out,), lo, hi))))


@st.composite
def activation_inputs(draw, max_b=4, max_d=5, lo=-10.0, hi=10.0):
    """A (B, D) array of pre-activations in [lo, hi]."""
    return draw(float_arrays((draw(st.integers(1, max_b)), draw(st.integers(1, max_d))), lo, hi))


@st.composite
def mlp_cases(draw, max_b=4, max_width=5, max_layers=3):
    """(sizes, seed, x): layer widths (2..max_layers+1 entries), an init seed, and x (B, sizes[0])."""
    n_layers = draw(st.integers(1, max_layers))
    sizes = [draw(st.integers(1, max_width)) for _ in range(n_layers + 1)]
    seed = draw(st.integers(0, 2**32 - 1))
    x = no_tiny(draw(float_arrays((draw(st.integers(1, max_b)), sizes[0]), -3.0, 3.0)))
    return sizes, seed, x


@st.composite
def categorical_cases(draw, max_b=4, max_d=4, max_c=6, lo=-30.0, hi=30.0, extreme=False):
    """(x, logits, C): x (B, D) integer-valued floats in 0..C-1, logits (B, D*C).

    With ``extreme=True`` logits are drawn from :data:`EXTREME_LOGITS` as well as [lo, hi].
    """
    B, D, C = draw(st.integers(1, max_b)), draw(st.integers(1, max_d)), draw(st.integers(1, max_c))
    x = draw(arrays(np.float64, (B, D), elements=st.integers(0, C - 1).map(float)))
    elem = floats(lo, hi)
    if extreme:
        elem = st.one_of(elem, st.sampled_from(EXTREME_LOGITS))
    logits = draw(arrays(np.float64, (B, D * C), elements=elem))
    return np.ascontiguousarray(x), np.ascontiguousarray(logits), C


@st.composite
def bernoulli_cases(draw, max_b=4, max_d=5, lo=-30.0, hi=30.0, extreme=False, soft=True):
    """(x, logits): x (B, D) binary (or, with ``soft``, sometimes fractional in [0, 1])."""
    B, D = draw(st.integers(1, max_b)), draw(st.integers(1, max_d))
    xs = st.sampled_from((0.0, 1.0))
    if soft:
        xs = st.one_of(xs, floats(0.0, 1.0))
    x = draw(arrays(np.float64, (B, D), elements=xs))
    elem = floats(lo, hi)
    if extreme:
        elem = st.one_of(elem, st.sampled_from(EXTREME_LOGITS))
    logits = draw(arrays(np.float64, (B, D), elements=elem))
    return np.ascontiguousarray(x), np.ascontiguousarray(logits)


@st.composite
def gaussian_cases(draw, max_b=4, max_d=5):
    """(x, mean, log_var): x, mean (B, D) in [-5, 5] (tiny values flushed, see :func:`no_tiny`);
    log_var (D,) or (B, D) in log_vars_range."""
    B, D = draw(st.integers(1, max_b)), draw(st.integers(1, max_d))
    lv_shape = draw(st.sampled_from([(D,), (B, D)]))
    return (no_tiny(draw(float_arrays((B, D), -5.0, 5.0))), no_tiny(draw(float_arrays((B, D), -5.0, 5.0))),
            draw(float_arrays(lv_shape, *log_vars_range)))


# --------------------------------------------------------------------------- mixture kernel
# (tests/test_mixture.py) Inputs for refvae.kernels.mixture: queries z (B, L), components means/log_vars
# (K, L), log-weights (K,) or None. B, K in 1..12 and L in 1..6 by default; the tile/block
# boundaries of the kernel (128 components, 8 queries) are covered by fixed cases in the tests.

@st.composite
def mixture_log_weights(draw, K, lo=-20.0, hi=20.0):
    """None (uniform -ln K), finite log-weights in [lo, hi], or the same with some entries -inf
    (switched-off components; possibly all of them)."""
    kind = draw(st.sampled_from(["none", "finite", "some_neg_inf"]))
    if kind == "none":
        return None
    w = draw(float_arrays((K,), lo, hi))
    if kind == "some_neg_inf":
        dead = draw(arrays(np.bool_, (K,)))
        w = np.where(dead, -np.inf, w)
    return np.ascontiguousarray(w)


@st.composite
def mixture_inputs(draw, max_b=12, max_k=12, max_l=6, coord=(-10.0, 10.0), log_var=log_vars_range,
                   weights=(-20.0, 20.0), allow_dead=True):
    """(z, means, log_vars, log_weights) for the mixture kernel.

    ``coord`` bounds z and means, ``log_var`` the log-variances, ``weights`` the finite
    log-weights; with ``allow_dead`` some (or all) log-weights may be -inf.
    """
    B, K, L = draw(st.integers(1, max_b)), draw(st.integers(1, max_k)), draw(st.integers(1, max_l))
    z = draw(float_arrays((B, L), *coord))
    means = draw(float_arrays((K, L), *coord))
    log_vars = draw(float_arrays((K, L), *log_var))
    if allow_dead:
        w = draw(mixture_log_weights(K, *weights))
    else:
        w = draw(st.one_of(st.none(), float_arrays((K,), *weights)))
    return z, means, log_vars, w


#: ranges for comparing gradients with the tolerance ``mixture_vjp_vs_twin``: that entry is stated
#: for moderate magnitudes (|f| + S + P up to ~1e3, see tests/test_mixture.py), which these bound:
#: (z - mu)^2 e^{-v} / 2 <= 18 e^2 = 133 per dimension.
mixture_vjp_coord = (-3.0, 3.0)
mixture_vjp_log_var = (-2.0, 2.0)
mixture_vjp_weights = (-5.0, 5.0)


# --------------------------------------------------------------------------- gaussian/primitives
# (tests/test_gaussian.py, tests/test_primitives.py)

@st.composite
def broadcast_gaussian_args(draw, names, log_var_names=(), max_b=5, max_l=4, coord=(-5.0, 5.0),
                            log_var=log_vars_range, full=None):
    """A dict name -> array for refvae.gaussian: every array ends in the same L; the leading axes
    broadcast, each array independently shaped (L,), (1, L) or (B, L), or (S, B, L) / (S, 1, L)
    with a shared S (at least one array is (B, L)-like, so the output is not always one row).

    Names in ``log_var_names`` get elements in ``log_var``, the others in ``coord``; names in
    ``full`` (default: none) always get the full (B, L) shape (e.g. the cotangent-shaped ``z``).
    """
    L, B, S = draw(st.integers(1, max_l)), draw(st.integers(1, max_b)), draw(st.integers(1, 3))
    choices = [(L,), (1, L), (B, L), (S, B, L), (S, 1, L)]
    shapes = {n: draw(st.sampled_from(choices)) for n in names}
    for n in (full or ()):
        shapes[n] = (B, L)
    out = {}
    for n in names:
        lo, hi = log_var if n in log_var_names else coord
        out[n] = draw(float_arrays(shapes[n], lo, hi))
    return out


@st.composite
def logit_rows(draw, max_rows=4, max_len=6, lo=-50.0, hi=50.0, neg_inf=True):
    """A (rows, n) array for logsumexp/log_softmax with elements in [lo, hi]; with ``neg_inf``,
    some entries may be -inf but every row keeps at least one finite entry (so the output and
    its gradient are finite)."""
    R, n = draw(st.integers(1, max_rows)), draw(st.integers(1, max_len))
    x = draw(float_arrays((R, n), lo, hi))
    if neg_inf:
        dead = draw(arrays(np.bool_, (R, n)))
        dead[:, draw(st.integers(0, n - 1))] = False
        x = np.where(dead, -np.inf, x)
    return np.ascontiguousarray(x)


@st.composite
def finite_logit_rows(draw, max_rows=4, max_len=17, lo=-50.0, hi=50.0, extreme=True):
    """A (rows, C) array of *finite* logits for the fused categorical kernel
    (``refvae.kernels.rowkernels``): elements in [lo, hi], with ``extreme`` also :data:`EXTREME_LOGITS`
    (+-1e300, +-1e3, +-700, 0: huge spreads, and ties at the maximum), and sometimes a row made
    of copies of one value (every entry maximal). C = 1 included."""
    R, C = draw(st.integers(1, max_rows)), draw(st.integers(1, max_len))
    elem = floats(lo, hi)
    if extreme:
        elem = st.one_of(elem, st.sampled_from(EXTREME_LOGITS))
    x = draw(arrays(np.float64, (R, C), elements=elem))
    if draw(st.booleans()):
        x[draw(st.integers(0, R - 1))] = draw(elem)   # a row of ties
    return np.ascontiguousarray(x)


# --- flow prior (tests/test_prior_flow.py)
flow_latent_dims = st.integers(2, 6)  #: L for the flow prior (L >= 2: a coupling conditions on floor(L/2) >= 1 coordinates)
flow_couplings = st.integers(1, 4)    #: number of affine couplings T
flow_seeds = st.integers(0, 2**32 - 1)  #: seeds for the flow's random weights and inputs


# --- mixture priors (tests/test_prior_mixtures.py)
@st.composite
def mog_parameters(draw, max_K=5, L=None, spread=6.0, log_var_range=(-3.0, 3.0)):
    """``(L, params)`` for a ``MoGPrior``: means in [-spread, spread], log-variances in
    ``log_var_range``, logits in [-20, 20] (weights down to ~e^-40, far from uniform)."""
    K = draw(st.integers(1, max_K))
    L = draw(dims) if L is None else L
    return L, {"prior.means": draw(float_arrays((K, L), -spread, spread)),
               "prior.log_vars": draw(float_arrays((K, L), *log_var_range)),
               "prior.logits": draw(float_arrays((K,), -20.0, 20.0))}


def check_vjp_robust(f, vjp, args, *, seed, method="central", retries=2):
    """``refvae.gradcheck.check_vjp`` (``method`` "central" or "richardson") or
    ``check_vjp_complex`` (``method="complex"``) that tells an unlucky draw from a wrong gradient.

    Both checks draw a random cotangent v and direction u and judge ``|<vjp(v), u> - D|``
    against ``rtol`` times the directional derivative, plus (central differences only) a rounding
    floor ``10 eps (|phi(h)| + |phi(-h)|) / h``. A *correct* VJP can fail when a sum cancels:
    ``<g, u>`` far below ``sum |g_i u_i|`` (its rounding, ~eps of the latter, then exceeds
    ``rtol |<g, u>|``), or ``phi = <v, f>`` far below ``sum |v_i f_i|`` (the floor then
    underestimates the rounding of f). Each happens for ~1e-4 of random draws, and Hypothesis
    finds such points (arrays of mostly zeros make short sums). An input whose entry fails is
    therefore re-checked alone with ``retries`` fresh draws of v and u and must pass in all of
    them: a wrong gradient is wrong in almost every direction, a cancellation happens in one.
    Raises ``GradcheckError`` otherwise. Returns the first report.
    """
    from refvae.gradcheck import GradcheckError, check_vjp, check_vjp_complex

    def run(rng, wrt=None):
        if method == "complex":
            return check_vjp_complex(f, vjp, args, rng=rng, wrt=wrt)
        return check_vjp(f, vjp, args, rng=rng, wrt=wrt, method=method)

    report = run(np.random.default_rng(seed))
    names = list(args) if isinstance(args, dict) else [f"arg{i}" for i in range(len(args))]
    for entry, name in zip(report.entries, names):
        if entry.passed:
            continue
        for r in range(1, retries + 1):
            again = run(np.random.default_rng([seed, r]), wrt=name)
            if not again.passed:
                raise GradcheckError(f"{report}\n\nre-check of {name} with a fresh cotangent and "
                                     f"direction:\n{again}")
    return report


# --- hostile shapes (tests/test_hostile_sweep.py)
@st.composite
def bad_shapes(draw, shape, free_axes=(), max_ndim=3, max_len=4):
    """A shape that is NOT valid for an argument whose valid shapes are ``shape`` with any
    positive length on the axes in ``free_axes`` (e.g. the batch axis): a different number of
    dimensions (0-d included), a different length on a fixed axis, or a zero-length axis."""
    n = len(shape)
    free = {a % n for a in free_axes} if n else set()

    def invalid(s):
        return (len(s) != n or any(d == 0 for d in s)
                or any(d != shape[i] for i, d in enumerate(s) if i not in free))
    return draw(st.lists(st.integers(0, max_len), min_size=0, max_size=max_ndim).map(tuple)
                .filter(invalid))
