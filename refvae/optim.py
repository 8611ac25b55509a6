"""Adam and Adamax, written out by hand exactly as PyTorch defines them.

Both optimisers update a flat parameter dict ``dict[str, ndarray]`` (SPEC section 3) **in place**:
``step(grads)`` takes a gradient dict with exactly the keys and shapes of the parameter dict and
writes the new values into the parameter arrays (the dict and its arrays stay the same objects, so
a model that holds the dict sees the update).

The update rules are those of ``torch.optim.Adam`` and ``torch.optim.Adamax`` with their defaults
``weight_decay=0``, ``amsgrad=False``, ``maximize=False``, in the order of operations of PyTorch's
single-tensor (non-fused, non-foreach) implementation — the one PyTorch uses for CPU tensors — in
``torch/optim/adam.py`` and ``torch/optim/adamax.py`` (torch 2.13):

* the first moment is a linear interpolation, ``exp_avg.lerp_(grad, 1 - beta1)``, i.e.
  ``m + w (g - m)`` with ``w = 1 - beta1`` (``g - (g - m)(1 - w)`` when ``w >= 0.5``, as ATen's
  ``lerp`` does), which equals ``beta1 m + (1 - beta1) g`` up to rounding;
* Adam's second moment is ``v.mul_(beta2).addcmul_(g, g, value=1 - beta2)``, i.e.
  ``beta2 v + ((1 - beta2) g) g``;
* Adam's denominator is ``sqrt(v) / sqrt(1 - beta2**t) + eps`` (eps added *after* the bias
  correction of the second moment), with ``sqrt(1 - beta2**t)`` computed as ``(1 - beta2**t)**0.5``;
* Adamax's infinity norm is ``u = max(beta2 u, |g| + eps)``: PyTorch adds eps to ``|g|`` *inside*
  the maximum, and divides by ``u`` with no further eps;
* the parameter update is ``addcdiv_(m, denom, value=-step_size)``, i.e.
  ``p + (-step_size * m) / denom`` with ``step_size = lr / (1 - beta1**t)``.

Implementation. Each parameter is updated by one fused, in-place Numba loop over its elements
(:func:`_adam_kernel`, :func:`_adamax_kernel`: no temporaries, one pass over p, m, v/u and g),
with exactly the floating-point operations of the NumPy in-place code (``_update_numpy``, used
for parameters that are not C-contiguous) in the same order, hence the same bits. The scalars
``beta**t``, the bias corrections and the step sizes are computed in Python, as before.

Numerics. Evaluated in float64 with these orderings the results agree with PyTorch float64 to a
few units in the last place per step, not bit for bit: on CPUs with FMA, PyTorch's vectorised
kernels round ``m + w (g - m)`` and ``beta2 v + ((1 - beta2) g) g`` once (a fused multiply-add)
where refvae rounds twice (NumPy, and the Numba loops, compiled without ``fastmath``, so without
FMA contraction). ``tests/test_optim.py`` checks both a 50-digit re-derivation of the
textbook formulas and, when torch is installed, ``torch.optim`` itself (tolerances
``optim_vs_exact`` and ``optim_vs_torch`` in :mod:`refvae.tolerances`).

References
----------
* PyTorch documentation, ``torch.optim.Adam``:
  https://pytorch.org/docs/stable/generated/torch.optim.Adam.html
* PyTorch documentation, ``torch.optim.Adamax``:
  https://pytorch.org/docs/stable/generated/torch.optim.Adamax.html
* D. P. Kingma and J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
  Algorithm 1 (Adam) and Algorithm 2, section 7.1 (AdaMax). PyTorch's Adamax differs from
  Algorithm 2 by the eps inside the maximum.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numba import njit

from ._validation import all_finite, as_float_array

__all__ = ["Adam", "Adamax", "OPTIMIZERS", "make_optimizer"]


def _check_hyper(value, name, *, upper=None, positive=False):
    """A finite real number ``>= 0`` (``> 0`` with ``positive``; ``< upper`` when given), as torch
    checks them (torch accepts lr = 0, a step that changes nothing; here it is an error)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or (upper is not None and value >= upper) \
            or (positive and value == 0.0):
        bound = (f"in [0, {upper})" if upper is not None
                 else ("> 0 and finite" if positive else ">= 0 and finite"))
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return value


def _check_params(params):
    """The parameter dict: str keys, writeable float64 ndarrays (they are updated in place)."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict[str, numpy.ndarray], got {type(params).__name__}")
    if not params:
        raise ValueError("params must not be empty")
    for k, p in params.items():
        if not isinstance(k, str):
            raise TypeError(f"params keys must be str, got {k!r}")
        if not isinstance(p, np.ndarray) or p.dtype != np.float64:
            what = p.dtype if isinstance(p, np.ndarray) else type(p).__name__
            raise TypeError(f"params[{k!r}] must be a float64 numpy.ndarray (it is updated in place), "
                            f"got {what}")
        if not p.flags.writeable:
            raise ValueError(f"params[{k!r}] is read-only; the optimiser updates parameters in place")
        if not all_finite(p):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(p))[0]) if p.ndim else ()
            raise ValueError(f"params[{k!r}] must not contain NaN or inf; found {float(p[bad])!r} at "
                             f"index {bad}")
    return params


def _as_array(x, name, shape):
    """``as_float_array`` with a required shape; 0-d arrays keep their shape ``()``.

    (``np.ascontiguousarray``, used by ``as_float_array``, turns a 0-d array into shape (1,).)
    """
    if shape == () and not isinstance(x, (str, bytes)) and x is not None and np.ndim(x) == 0:
        return as_float_array(np.reshape(x, (1,)), name).reshape(())
    return as_float_array(x, name, shape=shape, allow_empty=True)


def _key_mismatch(name, got, want):
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"extra {extra}")
    return f"{name} keys do not match the parameter keys: " + "; ".join(parts)


# --------------------------------------------------------------------------- fused kernels

@njit(inline="always")
def _lerp(m, g, w, one_minus_w):
    """ATen's ``lerp(m, g, w)``: ``m + (g - m) w`` for ``w < 0.5``, else ``g - (g - m)(1 - w)``
    (``one_minus_w`` is the Python float ``1.0 - w``, passed in so that its rounding is the same)."""
    if w < 0.5:
        return m + (g - m) * w
    return g - (g - m) * one_minus_w


@njit(cache=True, error_model="numpy")
def _adamax_kernel(p, m, u, g, w, one_minus_w, beta2, eps, neg_clr):
    r"""One fused, in-place Adamax update of the 1-d float64 arrays ``p, m, u`` with gradient ``g``.

    Forward, element-wise, with the same operations in the same order (hence the same bits) as
    the NumPy fallback :meth:`Adamax._update_numpy`:

    .. math::
        m &\leftarrow \operatorname{lerp}(m, g, w), \quad w = 1 - \beta_1, \\
        u &\leftarrow \max(u \beta_2,\ |g| + \epsilon), \\
        p &\leftarrow p + (m \cdot (-\mathrm{clr})) / u, \quad \mathrm{clr} = \gamma / (1 - \beta_1^t).

    ``max`` is ``np.maximum``'s: NaN if either operand is NaN, and the second operand when they
    compare equal (``max(-0.0, +0.0) = +0.0``). No ``fastmath``: no FMA contraction, no
    reassociation. ``error_model="numpy"``: IEEE division, so ``eps = 0`` with an all-zero
    gradient history gives 0/0 = NaN as in NumPy and PyTorch, not a ``ZeroDivisionError`` (it also
    lets the loop vectorise). (No backward: an optimiser step is not differentiated.)
    """
    for i in range(p.shape[0]):
        gi = g[i]
        mi = _lerp(m[i], gi, w, one_minus_w)
        m[i] = mi
        a = u[i] * beta2
        b = abs(gi) + eps
        ui = a if (a > b or a != a) else b
        u[i] = ui
        p[i] = p[i] + (mi * neg_clr) / ui


@njit(cache=True, error_model="numpy")
def _adam_kernel(p, m, v, g, w, one_minus_w, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step):
    r"""One fused, in-place Adam update of the 1-d float64 arrays ``p, m, v`` with gradient ``g``.

    Forward, element-wise, with the same operations in the same order (hence the same bits) as
    the NumPy fallback :meth:`Adam._update_numpy`:

    .. math::
        m &\leftarrow \operatorname{lerp}(m, g, w), \quad w = 1 - \beta_1, \\
        v &\leftarrow v \beta_2 + (g (1 - \beta_2)) g, \\
        p &\leftarrow p + (m \cdot (-s)) / (\sqrt{v} / \sqrt{1 - \beta_2^t} + \epsilon),
            \quad s = \gamma / (1 - \beta_1^t).

    The scalars ``1 - beta2``, ``(1 - beta2**t) ** 0.5`` and ``-s`` are computed in Python and
    passed in. ``math.sqrt`` is correctly rounded, like ``np.sqrt``. No ``fastmath``;
    ``error_model="numpy"`` (IEEE division: ``eps = 0`` and ``v = 0`` give 0/0 = NaN, as in NumPy).
    """
    for i in range(p.shape[0]):
        gi = g[i]
        mi = _lerp(m[i], gi, w, one_minus_w)
        m[i] = mi
        vi = v[i] * beta2 + (gi * one_minus_beta2) * gi
        v[i] = vi
        den = math.sqrt(vi) / bc2_sqrt + eps
        p[i] = p[i] + (mi * neg_step) / den


def _flat_views(*arrays):
    """1-d views of C-contiguous float64 arrays sharing their memory, or None if any is not
    (then the caller uses the NumPy update, which works in place on any layout)."""
    out = []
    for a in arrays:
        if a.dtype != np.float64 or not a.flags.c_contiguous or not a.flags.writeable:
            return None
        out.append(a.reshape(-1))
    return out


class _Optimizer:
    """Shared machinery: hyper-parameter and key checks, the step counter, the state dict."""

    _moment_names: tuple[str, str] = ("m", "v")
    _default_lr = 1e-3

    def __init__(self, params, lr=None, betas=(0.9, 0.999), eps=1e-8):
        self.params = _check_params(params)
        self.lr = _check_hyper(self._default_lr if lr is None else lr, "lr", positive=True)
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (_check_hyper(beta1, "betas[0]", upper=1.0), _check_hyper(beta2, "betas[1]", upper=1.0))
        self.eps = _check_hyper(eps, "eps")
        self.t = 0  #: number of steps taken
        self._shapes = {k: p.shape for k, p in params.items()}
        for name in self._moment_names:
            setattr(self, name, {k: np.zeros(s) for k, s in self._shapes.items()})

    # ------------------------------------------------------------------ checks
    def _check_grads(self, grads):
        if not isinstance(grads, dict):
            raise TypeError(f"grads must be a dict[str, array], got {type(grads).__name__}")
        if set(self.params) != set(self._shapes):
            raise ValueError(_key_mismatch("params (changed since the optimiser was made)",
                                           self.params, self._shapes))
        if set(grads) != set(self._shapes):
            raise ValueError(_key_mismatch("grads", grads, self._shapes))
        checked = {}
        for k, shape in self._shapes.items():
            p = self.params[k]
            if not isinstance(p, np.ndarray) or p.dtype != np.float64 or p.shape != shape \
                    or not p.flags.writeable:
                raise ValueError(f"params[{k!r}] was replaced by something other than a writeable "
                                 f"float64 array of shape {shape}")
            checked[k] = _as_array(grads[k], f"grads[{k!r}]", shape)
        return checked

    # ------------------------------------------------------------------ the step
    def step(self, grads):
        """One update of every parameter, in place. ``grads``: keys and shapes of ``params``.

        All gradients are checked (keys, shapes, finiteness) before any parameter is touched, so a
        ``ValueError`` leaves parameters and state unchanged.
        """
        grads = self._check_grads(grads)
        self.t += 1
        for k in self._shapes:
            self._update(k, self.params[k], grads[k])

    def _scratch(self, shape, which=0):
        """A float64 work array of ``shape`` (a view of a flat buffer the size of the largest
        parameter; ``which`` selects one of two). Not part of the optimiser's state."""
        bufs = self.__dict__.get("_bufs")
        size = math.prod(shape)
        if bufs is None or bufs[0].size < size:
            n = max([size, *(math.prod(s) for s in self._shapes.values())])
            bufs = self._bufs = (np.empty(n), np.empty(n))
        return bufs[which][:size].reshape(shape)

    def _lerp_moment(self, m, g, buf=None):
        """``m <- lerp(m, g, 1 - beta1)`` in ATen's order (``torch.Tensor.lerp_``).

        In place, with the work array ``buf`` (same operations and order, hence the same bits, as
        ``m += w * (g - m)`` / ``m[...] = g - (g - m) * (1 - w)``)."""
        w = 1.0 - self.betas[0]
        if buf is None:
            buf = np.empty(np.shape(m))
        np.subtract(g, m, out=buf)                   # g - m
        if w < 0.5:
            np.multiply(buf, w, out=buf)             # w * (g - m)
            np.add(m, buf, out=m)
        else:
            np.multiply(buf, 1.0 - w, out=buf)       # (g - m) * (1 - w)
            np.subtract(g, buf, out=m)

    def _update(self, k, p, g):  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """A copy of the optimiser's state: hyper-parameters, step count and moment arrays."""
        out = {"type": type(self).__name__, "t": self.t, "lr": self.lr, "betas": list(self.betas),
               "eps": self.eps}
        for name in self._moment_names:
            out[name] = {k: a.copy() for k, a in getattr(self, name).items()}
        return out

    def load_state_dict(self, state):
        """Restore a :meth:`state_dict` (same type, same parameter keys and shapes)."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        want = {"type", "t", "lr", "betas", "eps", *self._moment_names}
        if set(state) != want:
            raise ValueError(_key_mismatch("state", state, want).replace("parameter keys",
                                                                          "state-dict keys"))
        if state["type"] != type(self).__name__:
            raise ValueError(f"state['type'] is {state['type']!r}; this optimiser is {type(self).__name__}")
        t = state["t"]
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
            raise ValueError(f"state['t'] must be an integer >= 0, got {t!r}")
        lr = _check_hyper(state["lr"], "state['lr']", positive=True)
        b = state["betas"]
        if not isinstance(b, (list, tuple)) or len(b) != 2:
            raise ValueError(f"state['betas'] must be a pair, got {b!r}")
        betas = (_check_hyper(b[0], "state['betas'][0]", upper=1.0),
                 _check_hyper(b[1], "state['betas'][1]", upper=1.0))
        eps = _check_hyper(state["eps"], "state['eps']")
        moments = {}
        for name in self._moment_names:
            arrays = state[name]
            if not isinstance(arrays, dict) or set(arrays) != set(self._shapes):
                got = arrays if isinstance(arrays, dict) else {}
                raise ValueError(_key_mismatch(f"state[{name!r}]", got, self._shapes))
            moments[name] = {k: _as_array(arrays[k], f"state[{name!r}][{k!r}]", s).copy()
                             for k, s in self._shapes.items()}
        self.t, self.lr, self.betas, self.eps = int(t), lr, betas, eps
        for name, arrays in moments.items():
            setattr(self, name, arrays)

    def __repr__(self):
        return (f"{type(self).__name__}(lr={self.lr!r}, betas={self.betas!r}, eps={self.eps!r}, "
                f"t={self.t}, {len(self._shapes)} parameter arrays)")


class Adam(_Optimizer):
    r"""Adam (Kingma & Ba 2015, Algorithm 1) exactly as ``torch.optim.Adam`` computes it.

    ``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)``; ``step(grads)`` updates ``params``
    (a flat ``dict[str, float64 ndarray]``) in place. Defaults are PyTorch's.

    Forward (step t = 1, 2, ..., from m_0 = v_0 = 0), element-wise:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t
              \quad(\text{computed } m_{t-1} + (1-\beta_1)(g_t - m_{t-1})) \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2
              \quad(\text{computed } \beta_2 v_{t-1} + ((1-\beta_2) g_t) g_t) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \cdot
              \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    with learning rate γ = ``lr``. Note where ε sits: after the bias correction of √v, as in
    PyTorch (Kingma & Ba's Algorithm 1 writes √v̂ + ε, the same expression; the "efficient"
    variant of their section 2 puts ε before the correction and differs).

    State: ``m``, ``v`` (dicts of arrays with the parameter shapes) and ``t`` (steps taken).

    Numerics: same order of operations as PyTorch's single-tensor implementation; agreement with
    PyTorch float64 is to a few ulp (PyTorch fuses two multiply-adds on FMA hardware).
    ``eps = 0`` with an all-zero gradient history gives 0/0, as in PyTorch.

    References: https://pytorch.org/docs/stable/generated/torch.optim.Adam.html;
    ``torch/optim/adam.py::_single_tensor_adam`` (torch 2.13).
    """

    _moment_names = ("m", "v")
    _default_lr = 1e-3

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr, betas, eps)

    def _update(self, k, p, g):
        """The fused kernel :func:`_adam_kernel` (same bits as :meth:`_update_numpy`, which is used
        for parameters or moments that are not C-contiguous)."""
        beta1, beta2 = self.betas
        flat = _flat_views(p, self.m[k], self.v[k], g)
        if flat is None:
            return self._update_numpy(k, p, g)
        w = 1.0 - beta1
        bias_correction1 = 1.0 - beta1 ** self.t
        bias_correction2 = 1.0 - beta2 ** self.t
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        _adam_kernel(*flat, w, 1.0 - w, beta2, 1.0 - beta2, bias_correction2_sqrt, self.eps,
                     -step_size)

    def _update_numpy(self, k, p, g):
        beta1, beta2 = self.betas
        m, v = self.m[k], self.v[k]
        buf, den = self._scratch(p.shape, 0), self._scratch(p.shape, 1)
        # in place, same operations and order as the expressions in the comments
        self._lerp_moment(m, g, buf)                 # exp_avg.lerp_(grad, 1 - beta1)
        v *= beta2                                   # exp_avg_sq.mul_(beta2)
        np.multiply(g, 1.0 - beta2, out=buf)         #   .addcmul_(grad, grad, value=1 - beta2):
        np.multiply(buf, g, out=buf)                 #   v += ((1 - beta2) * g) * g
        np.add(v, buf, out=v)
        bias_correction1 = 1.0 - beta1 ** self.t
        bias_correction2 = 1.0 - beta2 ** self.t
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        np.sqrt(v, out=den)                          # denom = sqrt(v) / bias_correction2_sqrt + eps
        np.divide(den, bias_correction2_sqrt, out=den)
        np.add(den, self.eps, out=den)
        np.multiply(m, -step_size, out=buf)          # param.addcdiv_(exp_avg, denom, value=-step_size):
        np.divide(buf, den, out=buf)                 #   p += (-step_size * m) / denom
        np.add(p, buf, out=p)


class Adamax(_Optimizer):
    r"""Adamax (Kingma & Ba 2015, section 7.1) exactly as ``torch.optim.Adamax`` computes it.

    ``Adamax(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8)`` (PyTorch's defaults; note the
    default learning rate 2e-3); ``step(grads)`` updates ``params`` in place.

    Forward (step t = 1, 2, ..., from m_0 = u_0 = 0), element-wise:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t
              \quad(\text{computed } m_{t-1} + (1-\beta_1)(g_t - m_{t-1})) \\
        u_t &= \max(\beta_2 u_{t-1},\ |g_t| + \epsilon) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \cdot \frac{m_t}{u_t}

    ε is added to |g| *inside* the maximum (``torch.maximum(exp_inf.mul_(beta2),
    grad.abs().add_(eps))`` in ``torch/optim/adamax.py::_single_tensor_adamax``, torch 2.13) and
    the division by u has no further ε. Kingma & Ba's Algorithm 2 has no ε at all.

    State: ``m``, ``u`` (dicts of arrays with the parameter shapes) and ``t`` (steps taken).

    Numerics: the maximum and |g| + ε are exact up to one rounding; the first moment is computed
    in PyTorch's lerp order. With ``eps = 0`` a parameter whose gradients have all been zero gives
    0/0, as in PyTorch.

    References: https://pytorch.org/docs/stable/generated/torch.optim.Adamax.html.
    """

    _moment_names = ("m", "u")
    _default_lr = 2e-3

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr, betas, eps)

    def _update(self, k, p, g):
        """The fused kernel :func:`_adamax_kernel` (same bits as :meth:`_update_numpy`, which is
        used for parameters or moments that are not C-contiguous)."""
        beta1, beta2 = self.betas
        flat = _flat_views(p, self.m[k], self.u[k], g)
        if flat is None:
            return self._update_numpy(k, p, g)
        w = 1.0 - beta1
        bias_correction = 1.0 - beta1 ** self.t
        clr = self.lr / bias_correction
        _adamax_kernel(*flat, w, 1.0 - w, beta2, self.eps, -clr)

    def _update_numpy(self, k, p, g):
        beta1, beta2 = self.betas
        m, u = self.m[k], self.u[k]
        buf = self._scratch(p.shape)
        # in place, same operations and order as the expressions in the comments
        self._lerp_moment(m, g, buf)                 # exp_avg.lerp_(grad, 1 - beta1)
        u *= beta2                                   # exp_inf.mul_(beta2)
        np.abs(g, out=buf)                           # torch.maximum(..., grad.abs().add_(eps)):
        np.add(buf, self.eps, out=buf)               #   u = max(u, |g| + eps)
        np.maximum(u, buf, out=u)
        bias_correction = 1.0 - beta1 ** self.t
        clr = self.lr / bias_correction
        np.multiply(m, -clr, out=buf)                # param.addcdiv_(exp_avg, exp_inf, value=-clr):
        np.divide(buf, u, out=buf)                   #   p += (-clr * m) / u
        np.add(p, buf, out=p)


#: Optimisers by name (the names :func:`refvae.train.fit` accepts).
OPTIMIZERS = {"adam": Adam, "adamax": Adamax}


def make_optimizer(name, params, lr=None, **kwargs):
    """``OPTIMIZERS[name](params, lr, **kwargs)``; ``lr=None`` means the optimiser's default."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of "
                         f"{', '.join(map(repr, OPTIMIZERS))}")
    cls = OPTIMIZERS[name]
    return cls(params, **({} if lr is None else {"lr": lr}), **kwargs)
