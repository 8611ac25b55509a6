r"""The case object: :class:`GoldenCase`, the constants of the format and the tolerance formula
(:func:`allowed_error`; the derivation is in :mod:`refvae.tools.golden`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..._validation import as_float_array, check_choice, check_real
from ...priors import PRIORS
from ...tolerances import tolerance

__all__ = ["CASE_LIKELIHOODS", "DEFAULT_SEED", "KINK_MARGIN", "PROFILE_ROUNDOFF", "CONFIDENT_LOGIT",
           "GoldenCase", "case_name", "golden_dir", "allowed_error", "committed_cases"]

FORMAT = "refvae-golden-case"
FORMAT_VERSION = 1
ARRAYS_FILE = "case.npz"
MANIFEST_FILE = "manifest.json"
CHECKSUM_FILE = "SHA256SUMS"

CASE_LIKELIHOODS = ("categorical", "bernoulli", "gaussian")
DEFAULT_SEED = 20261125

#: the tiny architecture of every case
#: (the prior's own sizes are its ``tiny_settings``: K = 3, a 2 x 2 grid, 2 couplings, hidden (4,))
SIZES = {"x_dim": 6, "latent_dim": 2, "hidden": (5,), "batch_size": 3, "num_vals": 5,
         "prior_sample_n": 6}
ACTIVATION = "leaky_relu"
KINK_MARGIN = 0.1           #: every leaky-ReLU pre-activation is at least this far from 0
N_PROBES = 16               #: random-sign probes for the condition scale S_q
PROBE_STEP = 1e-6           #: relative central-difference step of the probes
NLL_SAMPLES = 20000         #: importance samples per example of the reference NLL

#: data range of the pseudo-inputs (VampPrior init, GTM-VampPrior sigmoid scaling) per likelihood
DATA_RANGE = {"categorical": (0.0, 4.0), "bernoulli": (0.0, 1.0), "gaussian": (-2.0, 2.0)}

#: the decoder's output bias of a *confident* case: probabilities within ~1e-7 of 0 and 1
#: (sigmoid(17) = 1 - 4.1e-8 for the least confident pixel of the committed cases)
CONFIDENT_LOGIT = 20.0

#: the likelihoods with probabilities, where a confident case exists (a clamp shows there)
CONFIDENT_LIKELIHOODS = ("categorical", "bernoulli")

#: unit roundoff of each verification profile
PROFILE_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24}


def _case_priors() -> tuple:
    """The priors a case can be built for: every name in :data:`refvae.priors.PRIORS` (the
    built-in six in the text's order, then any registered from outside refvae). Their positions
    seed the cases' generators, so the built-in indices never change."""
    return tuple(PRIORS)


def _check_dir_arg(value, name):
    """``os.fspath(value)`` of a path argument (``TypeError`` naming it otherwise; not empty)."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")
    value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty path, got {value!r}")
    return value


def golden_dir() -> str:
    """The directory of the committed golden cases (package data ``refvae/tools/golden_cases``)."""
    tools = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(tools, "golden_cases")


def case_name(prior, likelihood, kl="mc", confident=False) -> str:
    """``"<prior>-<likelihood>"``, e.g. ``"mog-categorical"``, with the suffix ``-analytic_kl`` for
    ``kl="analytic"`` and ``-confident`` for a confident case; prior a name in
    :data:`refvae.priors.PRIORS`, likelihood in :data:`CASE_LIKELIHOODS`, kl ``"mc"`` or
    ``"analytic"``, confident a bool (else ``ValueError``/``TypeError``)."""
    check_choice(prior, "prior", _case_priors())
    check_choice(likelihood, "likelihood", CASE_LIKELIHOODS)
    check_choice(kl, "kl", ("mc", "analytic"))
    if not isinstance(confident, (bool, np.bool_)):
        raise TypeError(f"confident must be True or False, got {type(confident).__name__}")
    if kl == "analytic" and not _has_analytic_kl(prior):
        raise ValueError(f"kl='analytic' exists for the standard prior only (refvae.vae.VAE), not "
                         f"{prior!r}")
    if confident and likelihood not in CONFIDENT_LIKELIHOODS:
        raise ValueError(f"confident cases exist for the likelihoods with probabilities "
                         f"{CONFIDENT_LIKELIHOODS}, not {likelihood!r}")
    return (f"{prior}-{likelihood}" + ("-analytic_kl" if kl == "analytic" else "")
            + ("-confident" if confident else ""))


def _has_analytic_kl(prior):
    """True when :class:`refvae.vae.VAE` offers ``kl="analytic"`` for the prior (the standard
    prior only: the closed form KL[q || N(0, I)])."""
    return prior == "standard"


def committed_cases() -> list:
    """``(prior, likelihood, kl, confident)`` of every committed case, in the committed order: every
    built-in prior x every likelihood with the Monte Carlo KL (18), then the standard prior with
    the analytic KL for every likelihood (3), then the confident standard-prior cases of the
    likelihoods with probabilities (2)."""
    builtin = ("standard", "mog", "vamp", "gtm", "gtm_vamp", "flow")
    specs = [(p, li, "mc", False) for p in builtin for li in CASE_LIKELIHOODS]
    specs += [("standard", li, "analytic", False) for li in CASE_LIKELIHOODS]
    specs += [("standard", li, "mc", True) for li in CONFIDENT_LIKELIHOODS]
    return specs


def allowed_error(values, scales, profile="float64", c=None):
    """Per-element tolerance ``c u (S_q + |e|) + tiny`` (module docstring, *Tolerances*).

    ``values`` (finite) and ``scales`` (finite, >= 0, broadcastable to values); ``c`` a
    finite number > 0 (default ``tolerances["verify_golden"]``). Anything else is a ``ValueError``
    or ``TypeError`` naming the argument.
    """
    check_choice(profile, "profile", tuple(PROFILE_ROUNDOFF))
    u = PROFILE_ROUNDOFF[profile]
    c = tolerance("verify_golden").c if c is None else check_real(c, "c", lo=0, lo_open=True)
    values = as_float_array(values, "values", allow_empty=True)
    scales = as_float_array(scales, "scales", allow_empty=True)
    if np.any(scales < 0):
        raise ValueError("scales must be >= 0 (condition scales)")
    tiny = float(np.finfo(np.float32 if profile == "float32" else np.float64).tiny)
    return c * u * (np.asarray(scales, np.float64) + np.abs(np.asarray(values, np.float64))) + tiny


@dataclass
class GoldenCase:
    """One golden case in memory (from :func:`build_case` or :func:`load_case`).

    ``values`` is ordered in data-flow order (``order``); ``params`` in the model's order.
    """

    name: str
    config: dict
    params: dict
    x: np.ndarray
    eps: np.ndarray
    draws: dict
    values: dict
    scales: dict
    references: dict
    manifest: dict = field(default_factory=dict)
    path: str | None = None

    @property
    def order(self) -> list:
        return list(self.values)

    @property
    def prior(self) -> str:
        return self.config["prior"]

    @property
    def likelihood(self) -> str:
        return self.config["likelihood"]

    def allowed(self, name, profile="float64"):
        """Per-element tolerance of quantity ``name`` under ``profile``."""
        return allowed_error(self.values[name], self.scales[name], profile)

    def model(self):
        """A :class:`refvae.vae.VAE` with this case's configuration and parameters."""
        from .reference import reference_model
        return reference_model(self.config, self.params)

    def inputs(self):
        """Fresh copies of ``(config, params, x, eps)``: what an adapter is given."""
        return (json.loads(json.dumps(self.config)), {k: v.copy() for k, v in self.params.items()},
                self.x.copy(), self.eps.copy())

