r"""Golden cases: small, complete, replayable runs of the reference model, for other implementations.

A golden case is a directory with two files:

``case.npz``
    Every array, read back with ``np.load(path, allow_pickle=False)``; member names carry a prefix:

    ==================  =========================================================================
    ``param.<name>``    the parameters, SPEC names (``encoder.0.W`` of shape (in, out), ...)
    ``input.x``         the data batch (B, D) (category indices 0..C-1 as float for categorical)
    ``input.eps``       the reparameterisation noise (B, L)
    ``draw.<name>``     every other random draw: ``draw.prior_sample.eps`` (n, L) and, for the
                        mixture priors, ``draw.prior_sample.index`` (n,) int64
    ``value.<q>``       every quantity q, in the data-flow order listed by the manifest: the
                        forward trace (``encoder.0.pre`` ... ``neg_elbo``), ``loss`` (the batch mean
                        of ``neg_elbo``), ``grad.<param>`` (gradient of ``loss``) and
                        ``prior_sample.z`` (the prior sample made from the draws)
    ``scales``          the condition scale S_q of every element of every quantity (float32; see
                        *Tolerances*): one flat array, the ravelled ``S_q`` concatenated in the
                        manifest's order (``load_case`` splits it into ``GoldenCase.scales``)
    ``reference.<r>``   references that are not part of the trace, each (B,): ``nll`` (exact
                        -ln p(x) by 2-D quadrature), ``nll_is``, ``nll_is_se``, ``nll_is_ess``
                        (refvae's importance-sampled estimate, S = 20000 proposals from q(z|x)),
                        ``neg_elbo_expectation`` (E_q[neg_elbo], Monte Carlo, same draws)
    ==================  =========================================================================

``manifest.json``
    The configuration (``VAE.config()`` plus the batch size), the conventions a reader must follow
    (:data:`CONVENTIONS`), the parameter shapes, the ordered list of quantities with their shapes,
    the draws, the tolerances with their derivation, and provenance (refvae version, git revision,
    numpy/numba/scipy/python versions, platform, seed and how every generator was seeded).

What a case holds, and why it is built as it is
-----------------------------------------------
Besides the 18 cases (6 priors x 3 likelihoods, Monte Carlo KL) the committed set holds the
standard prior with the closed-form KL (``kl="analytic"``, names ``standard-<likelihood>-analytic_kl``:
the most common VAE; same model, data and draws as the Monte Carlo case) and two *confident*
cases (``standard-bernoulli-confident``, ``standard-categorical-confident``: decoder output biases
+-20, so every decoder probability is within ~1e-7 of 0 or 1 and a probability clamp shows);
:func:`committed_cases` lists them.

Tiny models (D = 6, L = 2, encoder hidden (5,), decoder (5,), B = 3, C = 5 categories, K = 3
mixture components, a 2 x 2 GTM grid, 2 flow couplings with hidden (4,)), all with leaky-ReLU
hidden layers, so a reader can print every array (a case is 15-30 KB, mostly the per-array
overhead of the .npz format; the numbers themselves are a few KB). The parameters are
drawn from the refvae initialisers with a few changes that make each convention *visible*:

- the encoder's log-variance outputs are shifted by +1 (posterior sd ~ 1.6; the VampPrior
  components too), the GTM's by -1 and the MoG log-variances are drawn from U(-1.5, 0.5):
  ``exp(log_var)`` used as a standard deviation changes every sample. A posterior wider than the
  prior's components also keeps the importance weights p(x, z) / q(z|x) light-tailed, so the
  importance-sampled NLL reference agrees with the exact one (to ~0.03 nats);
- mixture logits are drawn from N(0, 1) (not 0): unnormalised logits change the density;
- flow MLPs use ``init="random"`` (not the identity start): every coupling has s, t != 0, so a
  log-determinant with the wrong sign or counted per dimension changes the density;
- the Gaussian decoder's ``decoder.log_var`` is drawn from U(-1, 0.5);
- **kink margin**: every pre-activation of every leaky-ReLU layer (encoder, decoder, and the
  prior's networks, at the batch and at the pseudo-inputs/grid) is at least
  :data:`KINK_MARGIN` = 0.1 away from 0. The generator nudges the bias of any unit that comes
  closer (the smallest shift that clears all rows; layer by layer in data-flow order), so neither
  float32 rounding nor a finite-difference step can move a value across a kink, and the left-slope
  convention at 0 never matters to a comparison.

Tolerances: the condition scale
-------------------------------
Each element e of each quantity q has a *condition scale*

.. math:: S_q = \Big( \mathbb E_r \big[ (J_q\,(\theta \odot r))^2 \big] \Big)^{1/2},

where theta holds every input of the case (parameters, eps, the prior-sample draws, and x for
the Gaussian likelihood; categorical and Bernoulli x are exact integers), J_q is the Jacobian of
q with respect to theta and r has independent random signs. It is the root-mean-square change of q
under independent relative perturbations of size 1 of all inputs, i.e. the (2-norm, componentwise
relative) condition of q times |q|. An implementation that rounds its inputs to a unit roundoff u
(independent errors, uniform in [-u, u]) changes q by about ``u S_q / sqrt(3)``; rounding inside
the computation adds comparable terms for each of the d ~ 10-30 stages on the way to q. The
tolerance of an element is therefore

.. math:: |a - e| \le c\,u\,(S_q + |e|) + \mathrm{tiny}

with u the profile's unit roundoff (2^-53 for float64, 2^-24 for float32) and the constant
``c = 64`` (``tolerances["verify_golden"]``): a 6-sigma margin on sqrt(d) stages
(6 sqrt(30)/sqrt(3) ~ 19) times 2 for the two implementations being compared, times ~1.7 for the
uncertainty of S_q estimated from 16 probes (an underestimate by more than 1.7x has probability
< 0.8% for Gaussian probe sums, chi-square with 16 degrees of freedom, the worst case; it would
still leave more than 3 standard deviations). ``|e|`` accounts for the final
rounding of q and for constants (ln 2 pi) that are not inputs. S_q is estimated at generation by
:data:`N_PROBES` central differences with relative step :data:`PROBE_STEP` (truncation and
rounding errors ~1e-10 relative, far below the factor c) and stored in ``scales``.

S_q models errors that act like perturbations of the inputs. Rounding of an intermediate is not
always one: where the last operation subtracts two separately rounded parts that an identity ties
together, the parts' rounding survives while the inputs' perturbations cancel. For those
quantities the magnitude of the parts, M_q, is added to the stored scale (``scales`` holds
S_q + M_q):

- ``kl = log_qz_x - log_pz`` (both carry -L/2 ln 2 pi): M = |log_qz_x| + |log_pz|;
- ``neg_elbo``: M = |log_px_z| + |log_qz_x| + |log_pz|, and ``loss`` its batch mean;
- ``grad.prior.logits = mean_b (pi_k - r_bk)`` (softmax weights minus responsibilities, each of
  size ~1/K and each from exp() of a sum of log-terms): M = mean_b (r_bk + pi_k).

Without M_q a correct float64 implementation (PyTorch) exceeds the tolerance of
``grad.prior.logits`` for the GTM-VampPrior, whose components are nearly equal (r ~ pi).

Checksums and regeneration
--------------------------
``SHA256SUMS`` (in the directory holding the cases) lists the SHA-256 of every committed file: it
detects a corrupted or hand-edited file, nothing else. It is **not** how regeneration is tested:
``manifest.json`` carries provenance (git revision, versions, platform) that changes on every
regeneration, and another BLAS may round matrix products differently. Regeneration is tested by
comparing the arrays (:func:`compare_cases`): parameters, inputs and draws exactly, values to
``c_regen u (S_q + |e|)`` with u = 2^-53 (``tolerances["golden_regeneration"]``), the scales and
the references (NLL, Monte Carlo) to a relative 1e-6.

The modules
-----------
One module per job: :mod:`~.case` (the :class:`GoldenCase` object, the constants, the tolerance
formula), :mod:`~.conventions` (what a reader follows; each prior's formula is its class attribute
``formula``), :mod:`~.reference` (refvae's model and outputs for a case), :mod:`~.generation`
(:func:`build_case` and the manifest) with :mod:`~.kinks` (the kink margin), :mod:`~.scales` (the
condition scales) and :mod:`~.quadrature` (the exact NLL), :mod:`~.writing`, :mod:`~.checksums`,
:mod:`~.reading` (:func:`load_case`) and :mod:`~.comparison` (:func:`compare_cases`). Every public
name is available here. Nothing in the package names a prior: a case asks the prior's protocol
(:class:`refvae.priors.base.Prior`) for its tiny settings, its parameter changes, its draws, its
sample from given draws and its support box, so a prior registered from outside refvae
(:func:`refvae.priors.register_prior`) gets golden cases with no edit here.

References: SPEC.md sections 1-5; STYLE.md ("Reports and golden files carry provenance").
"""

from __future__ import annotations

from .case import (ACTIVATION, ARRAYS_FILE, CASE_LIKELIHOODS, CHECKSUM_FILE, CONFIDENT_LIKELIHOODS,
                   CONFIDENT_LOGIT, DATA_RANGE, DEFAULT_SEED, FORMAT, FORMAT_VERSION, KINK_MARGIN,
                   MANIFEST_FILE, N_PROBES, NLL_SAMPLES, PROBE_STEP, PROFILE_ROUNDOFF, SIZES,
                   GoldenCase, _case_priors, _has_analytic_kl, allowed_error, case_name,
                   committed_cases, golden_dir)
from .checksums import require_checksums, verify_checksums, write_checksums
from .comparison import compare_cases
from .conventions import CONVENTIONS
from .generation import build_case
from .kinks import SHIFT_GRID
from .quadrature import _quadrature_nll  # noqa: F401 - named in every manifest's references
from .reading import list_cases, load_case
from .reference import prior_box, reference_model, reference_outputs
from .writing import write_case, write_cases

__all__ = ["CASE_PRIORS", "CASE_LIKELIHOODS", "DEFAULT_SEED", "CONVENTIONS", "KINK_MARGIN",
           "PROFILE_ROUNDOFF", "CONFIDENT_LOGIT", "GoldenCase", "case_name", "committed_cases", "build_case", "write_case", "write_cases",
           "load_case", "list_cases", "golden_dir", "write_checksums", "verify_checksums",
           "require_checksums", "compare_cases", "reference_model", "reference_outputs",
           "allowed_error", "prior_box"]


def __getattr__(name):
    """``CASE_PRIORS``: the names in :data:`refvae.priors.PRIORS` at the time of asking (the
    built-in six, then any prior registered from outside refvae)."""
    if name == "CASE_PRIORS":
        return _case_priors()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
