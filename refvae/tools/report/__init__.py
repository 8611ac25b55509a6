r"""The validation report: train every prior on the digits data, estimate the quantities of
section 4.4.1, check the identities of SPEC section 5, and write ``report.md`` / ``report.json``
and figures.

What a run does (``run_validation``; the command line is ``refvae validate``)
------------------------------------------------------------------------------
For each prior (every name of :data:`refvae.priors.PRIORS`: ``standard``, ``mog``, ``vamp``,
``gtm``, ``gtm_vamp``, ``flow`` and any prior registered with :func:`refvae.priors.register_prior`)
and each latent dimension L of the profile (:mod:`refvae.tools.profiles`):

1. **train** a VAE (``refvae.train.fit``: Adamax, lr 1e-3, batch 64, early stopping with
   patience 20 on the validation negative ELBO) on the training split;
2. on the **test** split: ``RE``, ``Omega``, the negative ELBO (``estimators.elbo_terms``),
   ``CE`` and ``H[q(z|x)]`` with independent draws (``estimators.omega_decomposition``) and
   ``ln p(x)`` by importance sampling (``estimators.log_likelihood``);
3. with the aggregated posterior ``q(z) = 1/N sum_n q(z|x_n)`` of the **training** encodings:
   ``CE[q(z)||p]``, ``H[q(z|x)]``, ``H[q(z)]``, ``KL[q(z)||p]``, ``I(x; z)`` and ELBO surgery
   (``estimators.aggregated_posterior_stats``), and the holes, ``KL[p||q(z)]`` and the hole mass
   ``P_p[q(z)/p(z) < tau]`` (``estimators.hole_metrics``);
4. a **gradient check** of ``neg_elbo`` w.r.t. every parameter on a small training batch of the
   trained model (:func:`~refvae.tools.report.gradient_check.gradcheck_model`: Richardson quotients
   taken where no relu/leaky_relu pre-activation changes sign, allowance = rounding floor +
   truncation bound), on a batch with few pre-activations within ``gradcheck_kink_margin`` of a kink;
5. a **figure** (L = 2: prior density with the encoded test points, the holes, training curves,
   decoded prior samples; L > 2: curves and samples).

Once per report, the mixtThe identities (SPEC section 5)
------------------------------
Each row compares a reported number with a second, independent computation of it (``ln q(z)``
against mpmath, ``H[q(z)]``, ``CE``, ``RE``, ``Omega`` and ``ln p(x)`` against estimates with other
draws and other evaluators, ``H[q(z|x)]`` against the closed form in extended precision), computed
by :func:`~refvae.tools.report.identity_checks.extra_inputs`; ``ELBO = RE + Omega`` and Jensen are
labelled arithmetic, ``0 <= I <= ln N`` and Gibbs bounds (see
:mod:`refvae.tools.report.identity_checks` for the rows and their allowances).

KL_hat[q(z)||p] >= -k se`` (same draws);
- Jensen ``ln p_hat(x) >= mean_s lw_s`` per test point — exact up to rounding (``report_jensen``).

Randomness: every part draws from its own generator ``default_rng([seed, L, prior index, part])``
(prior index: the prior's position in :data:`refvae.priors.PRIORS`), so a run of one prior
reproduces the same numbers as a run of all.

JSON: every number is finite; anything not computed is ``null`` with an entry in ``missing``.

Runs: the output directory is locked for the run (a second run into it is refused, naming this
run's pid); ``report.json`` is written "running" (with pid, host and start time under ``process``)
at the start and after each prior; SIGINT (Ctrl-C) or SIGTERM, also inside a Numba call, stops the
run with a "partial" report (``interrupted_by`` the signal, the running prior "interrupted"); a
"running" report whose process is gone is recognised as stale and overwritten; figures of
refvae's naming left by an earlier run are removed; ``files`` lists what the run wrote.

The package, one module per job
-------------------------------
- :mod:`~refvae.tools.report.gradient_check` -- part 4 (``near_kink``, ``choose_gradcheck_batch``,
  ``gradcheck_model``, ``gradcheck_summary``);
- :mod:`~refvae.tools.report.kernel_check` -- the mixture kernel against mpmath;
- :mod:`~refvae.tools.report.identity_checks` -- the identities of SPEC section 5;
- :mod:`~refvae.tools.report.figures` -- part 5;
- :mod:`~refvae.tools.report.single_run` -- parts 1-5 for one prior and latent dimension;
- :mod:`~refvae.tools.report.runner` -- the whole report (``run_validation``);
- :mod:`~refvae.tools.report.writing` -- ``report.json`` and ``report.md``;
- :mod:`~refvae.tools.report.markdown` -- the Markdown, one function per section.

The profiles, the data and the models of a profile are in :mod:`refvae.tools.profiles` (shared
with ``refvae train``, which does not import the report); they are re-exported here.

A prior needs nothing beyond the :class:`refvae.priors.Prior` basics to be reported: its options
come from ``settings(profile)`` (default: none), its networks' kinks are counted as fixed when
``net_inputs_fixed`` is true, and the figure uses only ``sample`` and ``forward``.
"""

from __future__ import annotations

from ..profiles import PROFILES, Profile, build_model, load_data, parse_priors, prepare_out_dir
from .gradient_check import choose_gradcheck_batch, gradcheck_model, near_kink
from .identity_checks import identities
from .kernel_check import kernel_accuracy
from .markdown import render_markdown
from .runner import run_validation
from .writing import write_report

__all__ = ["Profile", "PROFILES", "run_validation", "build_model", "load_data",
           "gradcheck_model", "near_kink", "choose_gradcheck_batch", "kernel_accuracy",
           "identities", "write_report", "prepare_out_dir", "parse_priors"]
