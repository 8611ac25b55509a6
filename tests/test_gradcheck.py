"""refvae.gradcheck itself: it passes correct VJPs and fails wrong ones, on tuples and dicts.

A gradient check that cannot fail is worthless, so most tests here plant an error (a wrong sign,
a factor 1 + 1e-4, a dropped term, a gradient for the wrong input) and assert that the check
reports it and names the input.
"""

import numpy as np
import pytest

from refvae.gradcheck import (GradcheckError, check_elementwise, check_vjp, check_vjp_complex)


def f(x, y):
    return np.sin(x) * y ** 2 + np.exp(0.3 * x * y)


def vjp(g, x, y):
    e = np.exp(0.3 * x * y)
    return g * (np.cos(x) * y ** 2 + 0.3 * y * e), g * (2 * np.sin(x) * y + 0.3 * x * e)


def make(rng, n=7):
    return rng.normal(size=n), rng.normal(size=n)


@pytest.mark.parametrize("method", ["central", "richardson"])
def test_correct_vjp_passes(method, rng):
    report = check_vjp(f, vjp, make(rng), rng=rng, method=method, n_directions=3)
    assert report.passed, str(report)
    # well inside the table's rtol (1e-6 / 1e-8): the check has room to spare on a correct VJP
    assert report.max_rel_err < (1e-7 if method == "central" else 1e-8)


def test_complex_step_passes_and_is_tight(rng):
    report = check_vjp_complex(f, vjp, make(rng), rng=rng)
    assert report.passed, str(report)
    assert report.max_rel_err < 1e-14


@pytest.mark.parametrize("bug", ["sign", "factor", "dropped_term", "swapped"])
@pytest.mark.parametrize("checker", ["central", "richardson", "complex", "elementwise"])
def test_planted_errors_fail_and_are_named(bug, checker, rng):
    def bad_vjp(g, x, y):
        dx, dy = vjp(g, x, y)
        if bug == "sign":
            return dx, -dy
        if bug == "factor":
            return dx, dy * (1 + 1e-4)
        if bug == "dropped_term":
            return dx, g * 2 * np.sin(x) * y
        return dy, dx

    args = make(rng)
    if checker == "complex":
        report = check_vjp_complex(f, bad_vjp, args, rng=rng)
    elif checker == "elementwise":
        report = check_elementwise(f, bad_vjp, args, rng=rng, verbose=False)
    else:
        report = check_vjp(f, bad_vjp, args, rng=rng, method=checker)
    assert not report.passed
    if bug != "swapped":  # swapping breaks both gradients
        assert report.worst.name.startswith("arg1")
    with pytest.raises(GradcheckError, match="FAILED"):
        report.raise_if_failed()


def test_dict_inputs_and_report_by_name(rng):
    params = {"a": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}

    def loss(p):
        return float(np.sum(np.tanh(p["a"] @ p["b"])))

    def loss_vjp(g, p):
        s = 1 - np.tanh(p["a"] @ p["b"]) ** 2
        return {"a": g * np.outer(s, p["b"]), "b": g * (p["a"].T @ s)}

    report = check_vjp(loss, loss_vjp, params, rng=rng)
    assert report.passed and set(report.by_name()) == {"a", "b"}

    def wrong(g, p):
        d = loss_vjp(g, p)
        d["b"] = d["b"] * 1.001
        return d

    bad = check_vjp(loss, wrong, params, rng=rng)
    assert not bad.passed and bad.worst.name == "b"


def test_mis_shaped_or_unknown_gradients_are_errors(rng):
    params = {"a": rng.normal(size=3)}
    with pytest.raises(ValueError, match="shape"):
        check_vjp(lambda p: np.sum(p["a"]), lambda g, p: {"a": np.ones(4)}, params, rng=rng)
    with pytest.raises(ValueError, match="unknown inputs"):
        check_vjp(lambda p: np.sum(p["a"]), lambda g, p: {"c": np.ones(3)}, params, rng=rng)
    with pytest.raises(ValueError, match="method"):
        check_vjp(lambda p: np.sum(p["a"]), lambda g, p: {"a": np.ones(3)}, params, rng=rng, method="x")
    with pytest.raises(TypeError, match="Generator"):
        check_vjp(lambda p: np.sum(p["a"]), lambda g, p: {"a": np.ones(3)}, params, rng=0)


def test_elementwise_prints_a_table(rng, capsys):
    check_elementwise(f, vjp, make(rng), rng=rng, max_entries=3)
    out = capsys.readouterr().out
    assert "analytic" in out and "numeric" in out and "arg0[" in out
