r"""Comparison of two builds of the same case (regeneration: :func:`compare_cases`)."""

from __future__ import annotations

import numpy as np

from ..._validation import check_real
from ...tolerances import tolerance
from .case import GoldenCase, allowed_error

__all__ = ["compare_cases"]


def compare_cases(new, old, c_regen=None) -> list:
    """Differences between two builds of the same case beyond rounding; ``[]`` if none.

    Parameters, inputs and draws must be identical; values within
    ``c_regen u (S_q + |e|)`` with u = 2^-53 (``tolerances["golden_regeneration"]``); scales and
    Monte Carlo references within a relative 1e-6 (they are estimates computed with the same
    seeds: only rounding moves them).
    """
    c_regen = (tolerance("golden_regeneration").c if c_regen is None
               else check_real(c_regen, "c_regen", lo=0, lo_open=True))
    for arg, name in ((new, "new"), (old, "old")):
        if not isinstance(arg, GoldenCase):
            raise TypeError(f"{name} must be a GoldenCase (build_case or load_case), got "
                            f"{type(arg).__name__}")
    problems = []
    if new.config != old.config:
        problems.append(f"config differs: {new.config} vs {old.config}")

    def exact(kind, a, b):
        if list(a) != list(b):
            problems.append(f"{kind}: names differ: {list(a)} vs {list(b)}")
            return
        for k in a:
            if np.shape(a[k]) != np.shape(b[k]) or not np.array_equal(a[k], b[k]):
                problems.append(f"{kind} {k} differs")

    exact("param", new.params, old.params)
    exact("input", {"x": new.x, "eps": new.eps}, {"x": old.x, "eps": old.eps})
    exact("draw", new.draws, old.draws)
    if list(new.values) != list(old.values):
        problems.append(f"order differs: {list(new.values)} vs {list(old.values)}")
        return problems
    for k in new.values:
        a, b = new.values[k], old.values[k]
        if a.shape != b.shape:
            problems.append(f"value {k}: shape {a.shape} vs {b.shape}")
            continue
        allowed = allowed_error(b, old.scales[k], "float64", c=c_regen)
        err = np.abs(a - b)
        if np.any(err > allowed):
            i = np.unravel_index(int(np.argmax(err / allowed)), err.shape)
            problems.append(f"value {k} moved beyond rounding: at {tuple(int(j) for j in i)} "
                            f"{b[i]!r} -> {a[i]!r} (allowed {allowed[i]:.3e})")
        sa, sb = new.scales[k], old.scales[k]
        if np.any(np.abs(sa - sb) > 1e-6 * np.abs(sb) + 1e-300):
            problems.append(f"scale {k} moved by more than 1e-6 relative")
    for k in set(new.references) | set(old.references):
        if k not in new.references or k not in old.references:
            problems.append(f"reference {k} missing in one of the two")
            continue
        a, b = new.references[k], old.references[k]
        if a.shape != b.shape or np.any(np.abs(a - b) > 1e-6 * np.abs(b)):
            problems.append(f"reference {k} moved by more than 1e-6 relative: {b} -> {a}")
    return problems
