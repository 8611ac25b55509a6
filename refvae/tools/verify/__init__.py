r"""Verify another implementation of the model against the golden cases and against the mathematics.

The adapter protocol
--------------------
A *factory* (``module:function`` or ``path/to/file.py:function``) returns an *adapter*: an object
with a method ``run(config, params, x, eps)`` (or the object itself callable with those arguments)
that returns a dict with whichever quantities it computes, named as in the golden cases:

- the trace (data-flow order): ``encoder.<i>.pre``, ``encoder.<i>.out``, ``mu``, ``log_var``,
  ``eps``, ``z``, ``decoder.<i>.pre``/``.out``, ``log_px_z``, the prior's intermediates
  (``prior.means``, ``prior.log_weights``, ``prior.component_log_prob`` (B, K), ``prior.flow.<t>.s``,
  ``prior.flow.<t>.log_det``, ..., ``prior.log_p``), ``log_pz``, ``log_qz_x``, ``kl``,
  ``neg_elbo`` (per example, (B,));
- ``loss`` (the batch mean of ``neg_elbo``) and ``grad.<param>`` (its gradient, the parameter's
  shape: ``grad.encoder.0.W`` is (in, out) like ``W``);
- ``nll`` (B,), an estimate of -ln p(x) per example (optional).

``config`` is the case's configuration (``VAE.config()`` plus ``batch_size``), ``params`` a dict of
float64 arrays with SPEC names, ``x`` (B, D) and ``eps`` (B, L) float64 arrays (copies: the adapter
may modify them). Values may be NumPy arrays, scalars or anything ``np.asarray`` converts.
Optional methods enable the checks that need no golden value:

- ``prior_log_prob(config, params, z)`` -> (n,): the prior's log-density at the rows of z;
- ``prior_sample(config, params, n, seed)`` -> (n, L): n draws from the prior;
- ``prior_sample_from(config, params, noise)`` -> (n, L): the sample made from given noise,
  ``noise["eps"]`` (n, L) and, for mixtures, ``noise["index"]`` (n,) (compared with the golden
  ``prior_sample.z``);
- ``nll(config, params, x, seed)`` -> (B,): used when ``run`` does not report ``nll``;
- ``supports(config) -> bool`` or a ``cases`` attribute (case names or fnmatch patterns): the
  cases it cannot run are reported as *not applicable* (neither passed nor failed).

A **prior-only** adapter has no ``run``, only some of ``prior_log_prob``, ``prior_sample``,
``prior_sample_from``, ``prior_trace(config, params, z) -> dict`` (``prior.*`` intermediates) and
``prior_log_prob_grad(config, params, z) -> {"z": (n, L), "<param>": ...}`` (the gradient of
``sum(log_prob)``): it is compared on ``log_pz``, ``prior.*`` and ``prior_sample.z`` at the case's
golden z and draws and runs the prior checks (:mod:`~.prior_only`).

What is checked
---------------
1. **Golden values** (``golden``): every reported quantity against the case, per element,
   ``|a - e| <= c u (S + |e|)`` (see :mod:`refvae.tools.golden`, *Tolerances*: S is the condition
   scale stored with the case, u the profile's unit roundoff, c = 64). The report gives per
   quantity the largest absolute and relative difference and the largest ratio to the allowed
   difference, and names the **first** quantity in data-flow order that diverges: every quantity
   before it agrees, so it is the first place where the implementation departs from the math
   (a wrong encoder is reported at ``encoder.0.pre``, not at the ELBO).
2. Checks on the adapter's own functions (no golden value):

   - ``gradient``: the reported ``grad.*`` against central differences of the adapter's own loss,
     one random direction per parameter (:func:`refvae.gradcheck.check_vjp` for float64; the same
     check with float32's epsilon for the float32 profile);
   - ``normalisation`` (L = 2): the prior density integrates to one (trapezoid rule on a grid
     over a box that holds all but < 1e-11 of the mass of the reference prior);
   - ``sampler`` (L = 2): Pearson chi-square of ``prior_sample`` draws against refvae's density of
     the case's parameters over 2-D cells (false-failure probability 1e-6 per check), with the
     adapter's own density compared too, so the report says whether the sampler or the density
     departs;
   - ``mixture`` (mixture priors): ``prior_log_prob`` equals the definition
     logsumexp_k [log pi_k + log N(z | mu_k, log_var_k)] with the adapter's own components;
   - ``nll``: a reported NLL against the exact -ln p(x) (2-D quadrature, stored with the case),
     refvae's importance-sampled estimate and the expected negative ELBO; a negative ELBO
     reported as an NLL is named as such.

The report names the first divergence per independent path (encoder/decoder, prior density,
ELBO, gradients, prior sampler: :data:`~.results.PATHS`) and the slip a failing value equals, when
it equals one (:mod:`~.diagnoses`: sign flip, batch sum, ln 2 pi offset, float32 log of a count,
flow log-determinant per dimension, variance as standard deviation, tanh(log_var), the other KL
convention). Every failure comes with a Python snippet that reproduces it; :meth:`VerifyReport.to_dict`
is the JSON report (with provenance); a known-deviations file (a JSON list of
``{"case", "quantity", "reason"}``, fnmatch patterns allowed) turns listed failures into
"known" with the reason shown.

The modules
-----------
One module per job: :mod:`~.adapters` (loading and calling an adapter; refvae as one),
:mod:`~.results` (the result records), :mod:`~.comparison` (the golden comparison),
:mod:`~.snippets` (reproductions), :mod:`~.checks` (gradient, mixture, NLL), :mod:`~.density` (the
L = 2 density grid: normalisation and sampler), :mod:`~.known` (known deviations),
:mod:`~.report` (:class:`VerifyReport`) and :mod:`~.runner` (:func:`run`). Every public name is
available here. No check names a prior: the mixture check runs where the case's prior has mixture
components (:meth:`refvae.priors.base.Prior.mixture_components`), the density checks on the box
the prior states (:meth:`~refvae.priors.base.Prior.support_box`), so a prior registered from
outside refvae is verified with no edit here.

References: SPEC.md; STYLE.md (the array-api-tests model: adapters, reproductions, JSON report).
"""

from __future__ import annotations

from .adapters import (PRIOR_METHODS, PROFILES, RefvaeAdapter, RefvaePriorAdapter, adapter_outputs,
                       call_adapter, is_prior_only, load_adapter)
from .checks import check_gradient, check_mixture, check_nll
from .comparison import compare_case
from .density import MAX_SAMPLER_DRAWS, check_normalisation, check_sampler
from .known import load_known_deviations, validate_known_deviations
from .prior_only import check_prior_gradient, prior_quantities
from .report import SCHEMA, VerifyReport
from .results import FAILING, CaseResult, CheckResult, QuantityResult
from .runner import CHECKS, run

__all__ = ["PROFILES", "CHECKS", "PRIOR_METHODS", "load_adapter", "call_adapter", "adapter_outputs",
           "is_prior_only", "load_known_deviations", "run", "compare_case", "check_gradient",
           "check_normalisation", "check_sampler", "check_mixture", "check_nll",
           "check_prior_gradient", "prior_quantities", "QuantityResult", "CheckResult",
           "CaseResult", "VerifyReport", "RefvaeAdapter", "RefvaePriorAdapter"]
