r"""The RealNVP flow prior (SPEC section 4, ``flow``; text section 4.4.1, flow-based prior).

What it is
----------
A density on R^L defined by an invertible map ``f`` onto a standard Gaussian base:
``log p(z) = log N(f(z) | 0, I) + log |det df/dz|``. The map is a chain of T affine couplings
(Dinh, Sohl-Dickstein and Bengio, *Density estimation using Real NVP*, ICLR 2017). Coupling t
reads its input z (B, L) as (z_a, z_b) = (first ⌊L/2⌋ coordinates, the other L - ⌊L/2⌋) and computes

.. math::

    s = \tanh(\mathrm{MLP}_s(z_a)), \quad t = \mathrm{MLP}_t(z_a), \quad
    y_a = z_a, \quad y_b = (z_b - t) \odot e^{-s}, \quad
    \mathrm{out} = \mathrm{reverse}([y_a, y_b]),

where ``reverse`` reverses the order of the L coordinates (so every coordinate is transformed by
some coupling, also for odd L where the split is uneven). The Jacobian of one coupling is block
triangular with diagonal blocks I and diag(e^{-s}), so its log-determinant is ``-sum_j s_j``
(the reversal is a permutation, |det| = 1). Summed over couplings, once per coupling:

.. math::

    \log p(z) = \log \mathcal N(f(z) \mid 0, I) - \sum_{t=1}^{T} \sum_j s_{t,j}.

Parameters: two MLPs per coupling, widths (⌊L/2⌋, *hidden, L - ⌊L/2⌋), names
``prior.flow.<t>.s.<i>.W/b`` and ``prior.flow.<t>.t.<i>.W/b`` (SPEC section 3), ``W`` (in, out).

Initialisation (``init="identity"``, the default): every layer is drawn like PyTorch's
``nn.Linear`` (:func:`refvae.layers.mlp_init`) and then the *last* layer of every s- and t-MLP is
set to zero, so s = t = 0 at the start: each coupling is the coordinate reversal, f is a
permutation and the prior starts exactly as N(0, I) (as Glow's zero-initialised last layers). The
last layers still receive gradients, and through them the rest, from the first step on.
``init="random"`` keeps the PyTorch-like draw for every layer.

References: SPEC.md sections 3 and 4 (``flow``); Tomczak, *Deep Generative Modeling*, section
4.4.1 (flow-based prior); Dinh et al., RealNVP (arXiv:1605.08803).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._validation import (NonFiniteIntermediateError, all_finite, as_float_array, check_choice,
                          check_parameter_memory, check_positive_int, check_rng, checked,
                          first_non_finite)
from ..layers import ACTIVATIONS, mlp_backward, mlp_forward, mlp_init
from .base import Prior

__all__ = ["FlowPrior"]

LN_2PI = math.log(2.0 * math.pi)
_TANH_FWD, _TANH_BWD = ACTIVATIONS["tanh"]


def _check_transform_args(arguments):
    """Validator (:func:`refvae._validation.checked`) of :meth:`FlowPrior.transform`: the
    parameters (keys and shapes), then z (B, L), finite, float64 or complex128."""
    prior = arguments["self"]
    prior._check_params(arguments["params"])
    return dict(arguments, z=prior._check_z(arguments["z"], "z", allow_complex=True))


class FlowPrior(Prior):
    r"""RealNVP prior: T affine couplings with tanh-bounded scales onto N(0, I).

    Parameters
    ----------
    latent_dim : int, L >= 2. (L = 1 is rejected: a coupling keeps ⌊L/2⌋ = 0 coordinates, so the
        scale and shift would be constants and the prior could not be more than a Gaussian.)
    num_couplings : int >= 1, T (default 3).
    hidden : tuple of int (or an int), hidden widths of every s- and t-MLP (default (256, 256));
        ``()`` gives affine s and t.
    activation : hidden activation of the MLPs, one of :data:`refvae.layers.ACTIVATIONS`
        (default ``leaky_relu``, slope 0.01).
    init : ``"identity"`` (default: last layer of each MLP zero, f is a permutation at the start)
        or ``"random"`` (PyTorch-like draw for every layer).

    Forward
    -------
    ``forward(params, z) -> (log_p, cache)``; per coupling t (0-based, in data-flow order)
    ``s = tanh(MLP_s(z_a))``, ``t = MLP_t(z_a)``, ``y_b = (z_b - t) e^{-s}``,
    ``out = reverse([z_a, y_b])``, ``log_det_t = -sum_j s_j``; then
    ``log_p = -1/2 sum_l (ln 2 pi + u_l^2) + sum_t log_det_t`` with u = f(z) the last ``out``.

    Backward
    --------
    ``backward(g, cache) -> (dz, grads)``: see :meth:`backward` for the line-by-line derivation.

    Shapes
    ------
    z (B, L) -> log_p (B,). s, t, y_b: (B, L - ⌊L/2⌋); out (B, L); log_det (B,).

    Numerics
    --------
    The scales are tanh-bounded, |s| <= 1, so every factor exp(±s) lies in [e^-1, e]: no overflow,
    each coupling's log-det lies in [-(L - ⌊L/2⌋), L - ⌊L/2⌋], and the inverse
    ``z_b = y_b e^{s} + t`` amplifies rounding by at most e per coupling (plus the MLPs'
    sensitivity through z_a). The shift t is unbounded for unbounded activations. The base term
    underflows gracefully: |u| > ~1e154 gives log_p = -inf, the correct limit.

    References
    ----------
    SPEC.md section 4 (``flow``); text section 4.4.1; Dinh et al., RealNVP.
    """

    name = "flow"
    formula = ("RealNVP with T couplings; each splits z into z_a = z[:, :L//2], z_b = z[:, L//2:], "
               "s = tanh(MLP_s(z_a)), t = MLP_t(z_a), y_b = (z_b - t) exp(-s), out = reverse([z_a, y_b]) "
               "(coordinates in reverse order), log_det = -sum_j s_j once per coupling; log p(z) = "
               "log N(f(z) | 0, I) + sum_t log_det_t")

    @classmethod
    def settings(cls, profile):
        out = {"num_couplings": profile.flow_couplings, "hidden": profile.prior_hidden,
               "activation": profile.activation}
        if getattr(profile, "flow_init", "identity") != "identity":  # the companion's: "random"
            out["init"] = profile.flow_init
        return out

    @classmethod
    def tiny_settings(cls, activation, data_range):
        return {"num_couplings": 2, "hidden": (4,), "activation": activation, "init": "random"}

    def sample_from_noise(self, params, noise):
        """``z = f^{-1}(eps)``: the inverse flow applied to the base draws."""
        return self.inverse(params, self._check_noise(noise))

    def support_box(self, params):
        """A box containing f^-1([-7, 7]^2) (interval propagation, :meth:`_box`), h = (longest
        side) / 700; outside <= P(u not in [-7, 7]^2) <= 4 Phi(-7) ~ 5e-12."""
        from scipy import stats
        R = 7.0
        lo, hi = self._box(params, R)
        return lo, hi, float(np.max(hi - lo)) / 700, 4 * float(stats.norm.sf(R))

    def _box(self, params, R):
        """A box containing f^-1([-R, R]^2) for L = 2, by interval propagation through the
        inverse couplings: z_a = y_a, z_b = y_b e^s + t with s and t over their ranges on the
        interval of z_a (a 4001-point grid widened by the MLP's Lipschitz bound, the product of the
        layers' spectral norms; the activations are 1-Lipschitz)."""
        act, T = self.activation, self.num_couplings
        n_layers = len(self.sizes) - 1

        def ranges(k, lo, hi, m=4001):
            x = np.linspace(lo, hi, m)[:, None]
            half = (hi - lo) / (m - 1) / 2
            out = []
            for net in ("s", "t"):
                pre = mlp_forward(params, f"prior.flow.{k}.{net}", x, act)[0]
                v = np.tanh(pre) if net == "s" else pre
                lip = float(np.prod([np.linalg.norm(params[f"prior.flow.{k}.{net}.{i}.W"], 2)
                                     for i in range(n_layers)])) * half
                out.append((float(v.min()) - lip, float(v.max()) + lip))
            (smin, smax), (tmin, tmax) = out
            return (max(smin, -1.0), min(smax, 1.0)), (tmin, tmax)

        lo, hi = np.array([-R, -R]), np.array([R, R])
        for k in range(T - 1, -1, -1):
            lo, hi = lo[::-1].copy(), hi[::-1].copy()
            (smin, smax), (tmin, tmax) = ranges(k, lo[0], hi[0])
            corners = [lo[1] * math.exp(smin), lo[1] * math.exp(smax), hi[1] * math.exp(smin),
                       hi[1] * math.exp(smax)]
            lo[1], hi[1] = min(corners) + tmin, max(corners) + tmax
        return lo, hi

    def __init__(self, latent_dim, num_couplings=3, hidden=(256, 256), activation="leaky_relu",
                 init="identity"):
        super().__init__(latent_dim)
        if self.latent_dim < 2:
            raise ValueError(
                f"latent_dim must be >= 2 for the flow prior, got {self.latent_dim}: each coupling "
                "conditions on the first floor(L/2) coordinates, and floor(1/2) = 0 leaves nothing "
                "to condition on (s and t would be constants; use the standard or mog prior)")
        self.num_couplings = check_positive_int(num_couplings, "num_couplings")
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            hidden = (hidden,)
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise TypeError(f"hidden must be an int or a sequence of ints, got {hidden!r}")
        self.hidden = tuple(check_positive_int(h, f"hidden[{i}]") for i, h in enumerate(hidden))
        self.activation = check_choice(activation, "activation", tuple(ACTIVATIONS))
        self.init = check_choice(init, "init", ("identity", "random"))
        self.dim_a = self.latent_dim // 2             # ⌊L/2⌋ coordinates conditioned on
        self.dim_b = self.latent_dim - self.dim_a     # the rest, transformed
        self.sizes = (self.dim_a, *self.hidden, self.dim_b)
        per_mlp = sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        check_parameter_memory(2 * self.num_couplings * per_mlp, "the flow prior",
                               f"latent_dim={self.latent_dim}, num_couplings={self.num_couplings}, "
                               f"hidden={self.hidden}")

    # ------------------------------------------------------------------ parameters
    def _prefix(self, k, net):
        return f"prior.flow.{k}.{net}"

    @property
    def param_shapes(self) -> dict:
        shapes = {}
        for k in range(self.num_couplings):
            for net in ("s", "t"):
                for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
                    shapes[f"{self._prefix(k, net)}.{i}.W"] = (n_in, n_out)
                    shapes[f"{self._prefix(k, net)}.{i}.b"] = (n_out,)
        return shapes

    def init_params(self, rng) -> dict:
        """Parameters named ``prior.flow.<t>.<s|t>.<i>.<W|b>``; see the module doc for ``init``.

        Draw order: coupling 0 s-MLP, coupling 0 t-MLP, coupling 1 s-MLP, ... (each by
        :func:`refvae.layers.mlp_init`), so a seed gives the same values with either ``init``.
        """
        check_rng(rng)
        params = {}
        last = len(self.sizes) - 2
        for k in range(self.num_couplings):
            for net in ("s", "t"):
                prefix = self._prefix(k, net)
                params.update(mlp_init(self.sizes, prefix, rng))
                if self.init == "identity":
                    params[f"{prefix}.{last}.W"][...] = 0.0
                    params[f"{prefix}.{last}.b"][...] = 0.0
        return params

    def config(self) -> dict:
        return {"name": self.name,
                "kwargs": {"num_couplings": self.num_couplings, "hidden": list(self.hidden),
                           "activation": self.activation, "init": self.init}}

    def _check_params(self, params):
        if not isinstance(params, dict):
            raise TypeError(f"params must be a dict of named arrays, got {type(params).__name__}")
        for key, shape in self.param_shapes.items():
            if key not in params:
                raise ValueError(f"params is missing {key} (the flow prior with L={self.latent_dim}, "
                                 f"T={self.num_couplings}, hidden={self.hidden} needs shape {shape})")
            got = np.shape(params[key])
            if got != shape:
                raise ValueError(f"params[{key!r}] must have shape {shape}, got {got}")
        return params

    def _check_z(self, z, name, allow_complex=False):
        return as_float_array(z, name, shape=(None, self.latent_dim), allow_complex=allow_complex)

    # ------------------------------------------------------------------ one coupling
    def _scale_shift(self, params, k, z_a):
        """``s = tanh(MLP_s(z_a))`` and ``t = MLP_t(z_a)`` with their caches."""
        pre_s, cache_s = mlp_forward(params, self._prefix(k, "s"), z_a, self.activation)
        s, _ = _TANH_FWD(pre_s)
        t, cache_t = mlp_forward(params, self._prefix(k, "t"), z_a, self.activation)
        return s, pre_s, cache_s, t, cache_t

    @staticmethod
    def _coupling_log_det(s):
        """log |det| of one coupling: ``-sum_j s_j`` (B,), once per coupling."""
        return -np.sum(s, axis=1)

    def _coupling_forward(self, params, k, z):
        """Coupling k: ``(out, log_det, cache)``; ``out = reverse([z_a, (z_b - t) e^{-s}])``."""
        z_a, z_b = z[:, :self.dim_a], z[:, self.dim_a:]
        s, pre_s, cache_s, t, cache_t = self._scale_shift(params, k, z_a)
        e = np.exp(-s)
        y_b = (z_b - t) * e
        out = np.ascontiguousarray(np.concatenate([z_a, y_b], axis=1)[:, ::-1])
        log_det = self._coupling_log_det(s)
        p = f"prior.flow.{k}"
        trace = list(cache_s["trace"]) + [(f"{p}.s", s)] + list(cache_t["trace"]) + [
            (f"{p}.t", t), (f"{p}.out", out), (f"{p}.log_det", log_det)]
        cache = {"s": s, "pre_s": pre_s, "e": e, "y_b": y_b, "cache_s": cache_s,
                 "cache_t": cache_t, "trace": trace}
        return out, log_det, cache

    def _coupling_inverse(self, params, k, out):
        """Inverse of coupling k: undo the reversal, ``z_a = y_a``, ``z_b = y_b e^{s(z_a)} + t(z_a)``."""
        y = out[:, ::-1]
        z_a = np.ascontiguousarray(y[:, :self.dim_a])
        y_b = y[:, self.dim_a:]
        s, _, _, t, _ = self._scale_shift(params, k, z_a)
        z_b = y_b * np.exp(s) + t
        return np.concatenate([z_a, z_b], axis=1)

    # ------------------------------------------------------------------ the map and its inverse
    @checked(_check_transform_args)
    def transform(self, params, z, caches=None):
        """``(f(z), log |det df/dz|)``: the flow's output u = f(z) (B, L) and its log-det (B,).

        ``log_det = -sum_t sum_j s_{t,j}``, the couplings applied in order (class docstring).
        Accepts complex z and parameters (complex-step checks); otherwise float64. ``caches``,
        optional, a list to which each coupling's cache is appended (what :meth:`forward` keeps
        for :meth:`backward`). ``FlowPrior.transform.unchecked(self, params, z, caches)`` is the
        arithmetic without the checks, for arguments already checked.
        """
        log_det = np.zeros(z.shape[0], dtype=z.dtype)
        h = z
        for k in range(self.num_couplings):
            h, ld, c = self._coupling_forward(params, k, h)
            log_det = log_det + ld
            if caches is not None:
                caches.append(c)
        return h, log_det

    def inverse(self, params, y):
        """``f^{-1}(y)`` (B, L): the couplings' inverses in reverse order (exact up to rounding).

        For coupling t, from its output: ``[y_a, y_b] = reverse(out)``, ``z_a = y_a``,
        ``z_b = y_b e^{s(z_a)} + t(z_a)`` (solving ``y_b = (z_b - t) e^{-s}``; s and t depend on
        z_a = y_a only, which the coupling passes through unchanged).
        """
        self._check_params(params)
        h = self._check_z(y, "y", allow_complex=True)
        for k in range(self.num_couplings - 1, -1, -1):
            h = self._coupling_inverse(params, k, h)
        return np.ascontiguousarray(h)

    # ------------------------------------------------------------------ the prior interface
    def forward(self, params, z):
        r"""``log p(z)`` (B,) and the cache for :meth:`backward`.

        Forward
        -------
        ``u, log_det = transform(z)``; ``base = -1/2 sum_l (ln 2 pi + u_l^2)``;
        ``log_p = base + log_det``.

        Shapes
        ------
        z (B, L) -> log_p (B,). ``cache["trace"]``, in data-flow order, per coupling t: the
        s-MLP's ``prior.flow.<t>.s.<i>.pre/out``, ``prior.flow.<t>.s`` (B, L - ⌊L/2⌋), the t-MLP's
        trace, ``prior.flow.<t>.t``, ``prior.flow.<t>.out`` (B, L, after the reversal),
        ``prior.flow.<t>.log_det`` (B,); then ``prior.flow.base_log_prob`` and ``prior.log_p``.

        A coupling intermediate that overflows for finite z and parameters is a
        :class:`~refvae._validation.NonFiniteIntermediateError` naming it; only the base term may
        round to ``-inf`` (|u| beyond ~1e154, the correct limit of ``log_p``).
        """
        self._check_params(params)
        z = self._check_z(z, "z", allow_complex=True)
        with np.errstate(over="ignore", invalid="ignore"):
            caches = []
            u, log_det = FlowPrior.transform.unchecked(self, params, z, caches)
            trace = [item for c in caches for item in c["trace"]]
            if not (all_finite(u) and all_finite(log_det)):
                name, idx, val = first_non_finite(trace)
                raise NonFiniteIntermediateError(
                    f"the flow prior overflowed at {name} ({val!r} at index {idx}): z and the "
                    f"parameters are finite, but {name} is not representable in float64 "
                    "(parameters or z too large?)")
            base = -0.5 * np.sum(LN_2PI + u * u, axis=1)
        log_p = base + log_det
        trace += [("prior.flow.base_log_prob", base), ("prior.log_p", log_p)]
        return log_p, {"z": z, "u": u, "couplings": caches, "trace": trace}

    def backward(self, g, cache):
        r"""VJP of :meth:`forward`: ``(dz, grads)`` for an upstream gradient g (B,).

        Backward
        --------
        ``d<x>`` is the gradient of ``sum_b g_b log_p_b`` w.r.t. x. ``log_p = base(u) +
        sum_t log_det_t``, so ``dbase = g`` and ``dlog_det_t = g`` for every coupling.

        1. Base: ``d/du_l [-u_l^2 / 2] = -u_l``, so ``du = -g u`` (the gradient w.r.t. the last
           coupling's ``out``).
        2. Couplings t = T-1, ..., 0, with ``dout`` the gradient w.r.t. coupling t's output:

           - reversal ``out = reverse(y)``: a permutation, its VJP is the same permutation,
             ``dy = reverse(dout)``; split ``dy = [dy_a, dy_b]``;
           - ``y_b = (z_b - t) e^{-s}`` with ``e = e^{-s}``:
             ``dy_b/dz_b = e`` => ``dz_b = dy_b e``;
             ``dy_b/dt = -e`` => ``dt = -dy_b e``;
             ``dy_b/ds = -(z_b - t) e = -y_b`` => ``ds = -dy_b y_b`` (elementwise, per j);
           - ``log_det = -sum_j s_j``: ``dlog_det/ds_j = -1`` => ``ds += -g`` (broadcast over j;
             the log-det enters log_p once per coupling);
           - ``s = tanh(pre_s)``: ``dpre_s = ds (1 - s^2)``, evaluated as ``ds sech^2(pre_s)``
             (same value, full relative accuracy when tanh saturates);
           - ``pre_s = MLP_s(z_a)``, ``t = MLP_t(z_a)``: ``mlp_backward`` gives ``dz_a`` through
             each MLP and the MLPs' weight gradients;
           - ``y_a = z_a``: ``dz_a = dy_a + dz_a(MLP_s) + dz_a(MLP_t)`` (three paths add);
           - ``dz = [dz_a, dz_b]`` is ``dout`` of coupling t - 1 (or the result, for t = 0).

        Shapes
        ------
        g (B,); dz (B, L); ``grads`` has exactly the keys and shapes of :attr:`param_shapes`.

        Numerics
        --------
        Reuses the forward's s, e^{-s} and y_b; nothing is recomputed and no exp is re-evaluated.

        See also: docs/course/08-flow.md (the coupling's log-determinant, once per coupling, and
        this backward with numbers).
        """
        u = cache["u"]
        g = as_float_array(g, "g", shape=(u.shape[0],))
        grads = {}
        dout = -g[:, None] * u
        for k in range(self.num_couplings - 1, -1, -1):
            c = cache["couplings"][k]
            dy = dout[:, ::-1]
            dy_a, dy_b = dy[:, :self.dim_a], dy[:, self.dim_a:]
            e = c["e"]
            dz_b = dy_b * e
            dt = -dy_b * e
            ds = -dy_b * c["y_b"] - g[:, None]
            dpre_s = _TANH_BWD(ds, c["pre_s"])
            dza_s, g_s = mlp_backward(dpre_s, c["cache_s"])
            dza_t, g_t = mlp_backward(dt, c["cache_t"])
            grads.update(g_s)
            grads.update(g_t)
            dout = np.concatenate([dy_a + dza_s + dza_t, dz_b], axis=1)
        return np.ascontiguousarray(dout), {key: grads[key] for key in self.param_shapes}

    def sample(self, params, n, rng):
        """``n`` draws: ``u ~ N(0, I)`` (n, L) from ``rng.standard_normal``, then ``f^{-1}(u)``."""
        n = check_positive_int(n, "n")
        check_rng(rng)
        return self.inverse(params, rng.standard_normal((n, self.latent_dim)))
