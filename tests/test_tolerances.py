"""The typed tolerance table (refvae.tolerances): every number as before the entries were typed,
one kind per entry with its own accessors, and a reason that names what its number means.

Until the entries were typed, every entry was ``Tolerance(rtol, atol, reason)`` and ten of them
stored something else in those slots (a rounding multiple c, k standard errors, a p-value, a
distance, a factor on an error estimate). ``OLD`` below is that table's (rtol, atol) pairs, copied
from the source before the change: the typed entries must hold the same numbers, and
``record()`` (what report.json stores) must put them back in the same slots.
"""

from __future__ import annotations

import copy
import math
import pickle
import re

import numpy as np
import pytest

from refvae import tolerances as T
from refvae.tolerances import (KINDS, TOLERANCES, Distance, EstimateMultiple, PValue, RelAbs, Rounding, Sigma,
                               tolerance)

#: name -> (rtol, atol) of the table before the entries were typed (commit 3707d54)
OLD = {
    "closed_form_vs_scipy": (1.4210854715202004e-14, 1.4210854715202004e-14),
    "closed_form_vs_quadrature": (1e-09, 1e-10),
    "log_softmax_vjp_vs_mpmath": (8.881784197001252e-16, 0.0),
    "primitive_vs_mpmath": (8.881784197001252e-16, 0.0),
    "vjp_central_difference": (1e-06, 0.0),
    "vjp_richardson": (1e-08, 0.0),
    "complex_step": (1e-13, 0.0),
    "mixture_kernel_c": (4.0, 0.0),
    "mixture_vs_twin": (1e-13, 1e-13),
    "mixture_vjp_vs_twin": (1e-11, 1e-12),
    "likelihood_vs_mpmath": (3.552713678800501e-15, 0.0),
    "categorical_kernel": (3.552713678800501e-15, 2e-323),
    "activation_derivative_vs_mpmath": (1.7763568394002505e-15, 0.0),
    "vs_torch_float64": (1e-12, 0.0),
    "optim_vs_exact": (3.552713678800501e-15, 0.0),
    "optim_vs_torch": (3.552713678800501e-15, 0.0),
    "mixture_vjp_vs_mpmath": (8.0, 0.0),
    "mixture_vjp_extreme_single": (1.7763568394002505e-15, 0.0),
    "gaussian_extreme_vs_mpmath": (1.7763568394002505e-15, 0.0),
    "logsumexp_vs_mpmath_conditioned": (8.881784197001252e-16, 8.881784197001252e-16),
    "kl_vs_mpmath": (3.552713678800501e-15, 8e-323),
    "subnormal_spacing": (0.0, 2e-323),
    "monte_carlo_k_sigma": (5.0, 0.0),
    "mixture_prior_normalisation": (0.0, 1e-06),
    "mixture_prior_vs_mpmath": (3.552713678800501e-15, 0.0),
    "mixture_prior_chi_square": (0.0, 1e-06),
    "mixture_prior_path_sum": (1e-12, 1e-15),
    "mixture_prior_vs_torch": (1e-11, 1e-12),
    "flow_inverse": (1e-12, 0.0),
    "flow_log_det_fd": (0.0, 1e-06),
    "flow_normalisation": (0.0, 1e-06),
    "report_elbo_split": (1e-12, 0.0),
    "report_jensen": (1.4210854715202004e-14, 0.0),
    "report_closed_form_rounding": (64.0, 0.0),
    "gradcheck_rounding": (64.0, 0.0),
    "gradcheck_kink_margin": (0.0, 0.001),
    "verify_golden": (64.0, 0.0),
    "blas_thread_count": (7.105427357601002e-15, 0.0),
    "golden_regeneration": (32.0, 0.0),
    "verify_gradient_float32": (8.0, 0.0),
    "verify_normalisation": (10.0, 1e-06),
    "verify_chi_square": (0.0, 1e-06),
    "verify_nll": (5.0, 0.02),
}

#: the ten entries whose rtol/atol meant something else, with their typed numbers
TYPED = {
    "mixture_kernel_c": (Rounding, {"c": 4.0}),
    "mixture_vjp_vs_mpmath": (Rounding, {"c": 8.0}),
    "verify_golden": (Rounding, {"c": 64.0}),
    "golden_regeneration": (Rounding, {"c": 32.0}),
    "report_closed_form_rounding": (Rounding, {"c": 64.0}),
    "gradcheck_rounding": (Rounding, {"c": 64.0}),
    "monte_carlo_k_sigma": (Sigma, {"k": 5.0, "slack": 0.0}),
    "verify_nll": (Sigma, {"k": 5.0, "slack": 0.02}),
    "verify_gradient_float32": (Sigma, {"k": 8.0, "slack": 0.0}),
    "mixture_prior_chi_square": (PValue, {"alpha": 1e-6}),
    "verify_chi_square": (PValue, {"alpha": 1e-6}),
    "gradcheck_kink_margin": (Distance, {"d": 1e-3}),
    "verify_normalisation": (EstimateMultiple, {"factor": 10.0, "floor": 1e-6}),
}

#: the accessors of each kind (everything else raises TypeError)
OWN = {"relabs": {"rtol", "atol", "check"}, "rounding": {"c"},
       "sigma": {"k", "slack", "false_failure_probability"}, "pvalue": {"alpha"}, "distance": {"d"},
       "estimate": {"factor", "floor"}}
ALL_ACCESSORS = set().union(*OWN.values())

#: words by which a reason names its kind
KIND_WORDS = {"relabs": r"\brelative\b|\babsolute\b|\brtol\b|\batol\b", "rounding": r"\bc(_g)? u\b",
              "sigma": r"standard error", "pvalue": r"p-value", "distance": r"\bdistance\b",
              "estimate": r"\bestimate\b"}


def test_same_entries_and_numbers_as_before():
    assert list(TOLERANCES) == list(OLD)            # same names, same order (report.json's key order)
    for name, (rtol, atol) in OLD.items():
        tol = tolerance(name)
        cls, numbers = TYPED.get(name, (RelAbs, {"rtol": rtol, "atol": atol}))
        assert type(tol) is cls, (name, type(tol))
        assert tol.numbers() == numbers, (name, tol.numbers())
        rec = tol.record()          # the report's slots hold exactly the old numbers, plus the kind
        assert (rec["rtol"], rec["atol"]) == (rtol, atol), (name, rec)
        assert set(rec) == {"kind", "rtol", "atol", "reason"} and rec["kind"] == tol.kind


def test_entries_per_kind():
    counts = {kind: sum(v.kind == kind for v in TOLERANCES.values()) for kind in KINDS}
    assert counts == {"relabs": 30, "rounding": 6, "sigma": 3, "pvalue": 2, "distance": 1, "estimate": 1}


@pytest.mark.parametrize("name", list(OLD))
def test_wrong_accessor_is_a_type_error(name):
    tol = tolerance(name)
    for acc in OWN[tol.kind]:
        getattr(tol, acc)                               # its own accessors work
    for acc in sorted(ALL_ACCESSORS - OWN[tol.kind]):
        with pytest.raises(TypeError, match=rf"{tol.kind}.*\.{acc}\b.*belongs to"):
            getattr(tol, acc)
    with pytest.raises(AttributeError):                 # an unknown name stays an AttributeError
        getattr(tol, "no_such_accessor")
    assert not hasattr(tol, "no_such_accessor")


def test_the_overloaded_uses_now_fail():
    """The misreadings the typing prevents: k as a relative tolerance, alpha as an absolute one."""
    with pytest.raises(TypeError):
        tolerance("monte_carlo_k_sigma").rtol
    with pytest.raises(TypeError):
        tolerance("verify_chi_square").atol
    with pytest.raises(TypeError):
        tolerance("mixture_kernel_c").check(1.0, 1.0)
    with pytest.raises(TypeError):
        tolerance("closed_form_vs_scipy").c


@pytest.mark.parametrize("name", list(OLD))
def test_reason_names_its_kind(name):
    tol = tolerance(name)
    assert tol.kind in KINDS and KINDS[tol.kind] is type(tol)
    assert isinstance(tol.reason, str) and len(tol.reason) > 40, name
    assert re.search(KIND_WORDS[tol.kind], tol.reason), (name, tol.kind, tol.reason)
    assert tol.reason == " ".join(tol.reason.split()), name     # one line, single spaces


def test_sigma_false_failure_probability():
    k = tolerance("monte_carlo_k_sigma")
    assert k.false_failure_probability == pytest.approx(5.733e-7, rel=1e-3)     # P(|N(0,1)| > 5)
    assert k.false_failure_probability <= 1e-6
    assert Sigma(k=2.0, reason="x").false_failure_probability == pytest.approx(math.erfc(2 / math.sqrt(2)))


def test_relabs_check_unchanged():
    tol = tolerance("closed_form_vs_scipy")
    e = np.array([1.0, -2.0, np.inf, -np.inf, 0.0])
    a = e + np.array([1e-14, 3e-14, 0.0, 0.0, 2e-14])
    assert tol.check(a, e).tolist() == [True, True, True, True, False]
    assert not tol.check(np.nan, 1.0) and not tol.check(1.0, np.nan)
    # an infinite expected value is matched only by itself (rtol * inf would admit anything)
    assert not tol.check(np.inf, -np.inf) and not tol.check(1.0, np.inf) and not tol.check(-1e308, -np.inf)


def test_entries_are_frozen_values():
    tol = tolerance("verify_nll")
    with pytest.raises(AttributeError):
        tol.k = 6.0
    assert copy.deepcopy(tol) == tol and pickle.loads(pickle.dumps(tol)) == tol
    with pytest.raises(TypeError):              # keyword-only: no positional (rtol, atol) mix-up
        RelAbs(1e-3, 0.0, "r")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="known: .*verify_nll"):
        tolerance("no_such_tolerance")
    assert T.U == 2.0 ** -53 and T.EPS == 2.0 ** -52
