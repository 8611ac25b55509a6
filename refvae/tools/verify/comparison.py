r"""Golden comparison: an adapter's outputs against a case, per element, in data-flow order."""

from __future__ import annotations

import numpy as np

from .. import golden as _golden
from ..._validation import check_choice
from ...tolerances import tolerance
from .adapters import PROFILES, _check_case
from .results import QuantityResult

__all__ = ["compare_case"]


def _u(profile):
    return _golden.PROFILE_ROUNDOFF[profile]


def _c():
    return tolerance("verify_golden").c


def _as_array(value):
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        pass
    detach = getattr(value, "detach", None)  # a tensor that requires grad
    if callable(detach):
        return np.asarray(detach().cpu().numpy(), dtype=np.float64)
    raise TypeError(f"cannot convert {type(value).__name__} to a float64 array")


def _conform(name, a, shape):
    """``a`` reshaped to ``shape`` when only unit axes or a C-order split of trailing axes differ;
    ``(array, note)`` or ``(None, message)``."""
    shape = tuple(shape)
    if a.shape == shape:
        return a, ""
    if a.size == int(np.prod(shape, dtype=np.int64)):
        if tuple(s for s in a.shape if s != 1) == tuple(s for s in shape if s != 1):
            return a.reshape(shape), ""
        if a.ndim != len(shape) and a.ndim >= 1 and len(shape) >= 1 and a.shape[0] == shape[0]:
            return a.reshape(shape), f"reshaped (C order) from {a.shape}"
    msg = f"shape {a.shape}, expected {shape}"
    if len(shape) == 2 and a.shape == shape[::-1]:
        msg += (" (transposed? W has shape (in, out); PyTorch's nn.Linear.weight is W.T)"
                if name.endswith(".W") else " (transposed?)")
    elif name == "neg_elbo" and a.size == 1:
        msg += " (neg_elbo is per example; the batch mean is 'loss')"
    return None, msg


def _fmt_index(idx):
    return "(" + ", ".join(str(int(i)) for i in idx) + ("," if len(idx) == 1 else "") + ")"


def compare_case(outputs, case, profile="float64"):
    """Compare an adapter's outputs with a case: a list of :class:`QuantityResult` in data-flow
    order (``missing`` for quantities the adapter does not report)."""
    check_choice(profile, "profile", PROFILES)
    _check_case(case)
    if not isinstance(outputs, dict):
        raise TypeError(f"outputs must be a dict name -> array, got {type(outputs).__name__}")
    results = []
    for pos, name in enumerate(case.order):
        want = case.values[name]
        if name not in outputs:
            results.append(QuantityResult(name, pos, "missing", size=int(want.size)))
            continue
        try:
            a = _as_array(outputs[name])
        except TypeError as exc:
            results.append(QuantityResult(name, pos, "fail", size=int(want.size), message=str(exc)))
            continue
        a, note = _conform(name, a, want.shape)
        if a is None:
            results.append(QuantityResult(name, pos, "shape", size=int(want.size), message=note))
            continue
        allowed = case.allowed(name, profile)
        finite = np.isfinite(a)
        err = np.where(finite, np.abs(a - want), np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(want != 0, err / np.abs(want), np.where(err == 0, 0.0, np.inf))
            ratio = err / allowed
        i = np.unravel_index(int(np.argmax(ratio)), ratio.shape) if ratio.size else ()
        n_failed = int(np.sum(err > allowed))
        status = "pass" if n_failed == 0 else ("nonfinite" if not finite.all() else "fail")
        msg = note
        if not finite.all():
            j = tuple(int(t) for t in np.argwhere(~finite)[0])
            msg = (msg + "; " if msg else "") + f"non-finite value {a[j]!r} at {_fmt_index(j)}"
        results.append(QuantityResult(
            name, pos, status, size=int(want.size), n_failed=n_failed,
            max_abs=float(np.max(err)), max_rel=float(np.max(rel)), ratio=float(ratio[i]),
            index=[int(t) for t in i], expected=float(want[i]), actual=float(a[i]),
            allowed=float(allowed[i]), message=msg))
    return results


def _first_divergence(quantities):
    for q in quantities:
        if q.failed:
            return q.name
    return None

