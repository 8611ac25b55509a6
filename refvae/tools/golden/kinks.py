r"""The kink margin: every leaky-ReLU pre-activation of a case is at least :data:`KINK_MARGIN` from 0.

The generator nudges the bias of any unit that comes closer (the smallest shift that clears all
rows; layer by layer in data-flow order), so neither float32 rounding nor a finite-difference step
can move a value across a kink (module docstring of :mod:`refvae.tools.golden`).
"""

from __future__ import annotations

import math

import numpy as np

from .case import KINK_MARGIN


def _kinked_layers(trace_names):
    """[(pre name, bias parameter name)] of every hidden (leaky-ReLU) layer in a trace."""
    names = set(trace_names)
    out = []
    for n in trace_names:
        if not n.endswith(".pre"):
            continue
        prefix, i = n[:-4].rsplit(".", 1)
        if f"{prefix}.{int(i) + 1}.pre" in names:  # a hidden layer: the activation follows
            owner = "encoder" if prefix == "prior.encoder" else prefix
            out.append((n, f"{owner}.{i}.b"))
    return out


#: kink-clearing shifts are rounded outward to a multiple of this (2^-20): a bias shift computed
#: from pre-activations (matrix products) would otherwise inherit their last bits, which differ
#: between BLAS kernels, and the committed parameters would not be reproducible across machines.
#: A shift now changes only if a pre-activation's rounding moves it across a multiple of 2^-20
#: (probability ~ 1e-16 / 1e-6 per shift).
SHIFT_GRID = 2.0 ** -20


def _smallest_clear_shift(v, margin):
    """The shift d of least |d| with min_r |v_r + d| >= margin (v: the values of one unit).

    Candidates put one value just beyond the edge of the forbidden set (-margin, margin) and are
    rounded *outward* to the grid :data:`SHIFT_GRID` (down for the lower edge, up for the upper),
    so the shift is exactly reproducible on any BLAS build and still clears the kink.
    """
    target = margin * (1 + 1e-6)  # a little beyond, so that rounding cannot bring it back inside
    low = np.floor((-v - target) / SHIFT_GRID) * SHIFT_GRID
    high = np.ceil((-v + target) / SHIFT_GRID) * SHIFT_GRID
    cands = sorted({0.0, *low.tolist(), *high.tolist()}, key=abs)
    for d in cands:
        if np.all(np.abs(v + d) >= margin):
            return float(d)
    raise AssertionError("unreachable: an endpoint of the forbidden set is always allowed")


def _clear_kinks(model, x, eps, margin=KINK_MARGIN, max_rounds=200):
    """Nudge hidden biases until every leaky-ReLU pre-activation is >= ``margin`` from 0.

    Layer by layer in data-flow order: at the first offending unit, all rows that share its bias
    (the batch, and for the VampPrior family the pseudo-inputs through the same encoder) are
    cleared by the smallest shift; then the trace is recomputed (later layers move). Returns the
    number of shifts made.
    """
    shifts = 0
    for _ in range(max_rounds):
        trace = dict(model.forward(x, eps).trace)
        layers = _kinked_layers(list(trace))
        bad = None
        for pre, bias in layers:
            cols = np.nonzero(np.any(np.abs(trace[pre]) < margin, axis=0))[0]
            if cols.size:
                bad = (bias, int(cols[0]))
                break
        if bad is None:
            return shifts
        bias, j = bad
        rows = np.concatenate([trace[pre][:, j] for pre, b in layers if b == bias])
        model.params[bias][j] += _smallest_clear_shift(rows, margin)
        shifts += 1
    raise RuntimeError(f"could not clear the kinks in {max_rounds} rounds")


def _min_kink_distance(trace):
    layers = _kinked_layers(list(trace))
    return min((float(np.min(np.abs(trace[pre]))) for pre, _ in layers), default=math.inf)

