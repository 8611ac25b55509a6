"""Gradient-check helpers shared by the test modules (asserting wrappers around refvae.gradcheck)."""

from refvae.gradcheck import check_vjp, check_vjp_complex


def checked(f, vjp, args, rng, method, step=None):
    """One gradient check (``method`` = "central", "richardson" or "complex"), asserted, with a
    re-check of entries lost to cancellation.

    The checkers' allowances are relative to the directional derivative ``<g, u>`` and to the
    probed value ``<v, f>``; when either is small by cancellation between its terms (``|<g, u>|``
    below ~1e-3 of ``sum_i |g_i u_i|``, which happens for a random direction u or cotangent v
    with probability ~1e-3), the rounding of the sums alone (~eps times the sum of the absolute
    values of their terms) can exceed the allowance. A failing input is therefore checked again in
    two fresh directions (new u and v), both of which must pass: a wrong gradient fails (almost)
    every direction, and the false-failure probability drops from ~1e-3 to ~1e-9 per input.
    """
    def run(wrt=None):
        if method == "complex":
            return check_vjp_complex(f, vjp, args, rng=rng, wrt=wrt)
        return check_vjp(f, vjp, args, rng=rng, wrt=wrt, method=method, step=step)

    report = run()
    for e in report.entries:
        if not e.passed:
            for _ in range(2):
                again = run(e.name)
                assert again.passed, f"{report}\nre-check in a fresh direction:\n{again}"
    return report


def all_checks(f, vjp, args, rng, steps=None):
    """Central differences, Richardson and the complex step, each via :func:`checked`."""
    steps = steps or {}
    for method in ("central", "richardson", "complex"):
        checked(f, vjp, args, rng, method, steps.get(method))
