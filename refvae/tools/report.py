r"""The validation report: train every prior on the digits data, estimate the quantities of
section 4.4.1, check the identities of SPEC section 5, and write ``report.md`` / ``report.json``
and figures.

What a run does (``run_validation``; the command line is ``refvae validate``)
------------------------------------------------------------------------------
For each prior (``standard``, ``mog``, ``vamp``, ``gtm``, ``gtm_vamp``, ``flow``) and each latent
dimension L of the profile:

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
   trained model (``gradcheck.check_vjp``), on a batch where no relu/leaky_relu pre-activation lies
   within the ``gradcheck_kink_margin`` of its kink;
5. a **figure** (L = 2: prior density with the encoded test points, the holes, training curves,
   decoded prior samples; L > 2: curves and samples).

Once per report, the mixture kernel is compared with mpmath on random and adversarial points
(error in units of ``u (|f| + S)``, see :mod:`refvae.kernels.mixture`).

The identities (SPEC section 5) and their tolerances (``refvae.tolerances``)
---------------------------------------------------------------------------
- ``ELBO = RE + Omega`` — same draws, rounding only (``report_elbo_split``);
- ``Omega (MC) = -CE + H[q(z|x)]`` (4.43) — independent draws, ``|diff| <= k se`` with
  ``se = sqrt(se_1^2 + se_2^2)`` (``monte_carlo_k_sigma``);
- ELBO surgery ``E_x KL[q(z|x)||p] = I + KL[q(z)||p]`` — same draws, so the standard error of
  the difference is bounded by ``se_1 + se_2`` (Minkowski), ``|diff| <= k (se_1 + se_2)``;
- ``0 <= I <= ln N`` — ``-k se <= I_hat <= ln N + k se``;
- Gibbs ``CE[q(z)||p] >= H[q(z)]`` — ``KL_hat[q(z)||p] >= -k se`` (same draws);
- Jensen ``ln p_hat(x) >= mean_s lw_s`` per test point — exact up to rounding (``report_jensen``).

Randomness: every part draws from its own generator ``default_rng([seed, L, prior index, part])``
(prior index in ``PRIOR_ORDER``), so a run of one prior reproduces the same numbers as a run of all.

JSON: every number is finite; anything not computed is ``null`` with an entry in ``missing``.

Runs: the output directory is locked for the run (a second run into it is refused, naming this
run's pid); ``report.json`` is written "running" (with pid, host and start time under ``process``)
at the start and after each prior; SIGINT (Ctrl-C) or SIGTERM, also inside a Numba call, stops the
run with a "partial" report (``interrupted_by`` the signal, the running prior "interrupted"); a
"running" report whose process is gone is recognised as stale and overwritten; figures of
refvae's naming left by an earlier run are removed; ``files`` lists what the run wrote.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass

import numpy as np

from .. import estimators as est
from ..gradcheck import check_vjp
from ..io import _atomic_write, _atomic_write_bytes, _temp_prefix
from .provenance import DirectoryLock
from .provenance import (REPRODUCIBILITY, InterruptGuard, Interrupted, interrupt_exit_code,
                         interrupt_signal, run_identity)
from .._validation import as_float_array, check_choice, check_positive_int, check_real, check_rng
from ..tolerances import TOLERANCES, U, tolerance

__all__ = ["Profile", "PROFILES", "PRIOR_ORDER", "run_validation", "build_model", "load_data",
           "gradcheck_model", "near_kink", "choose_gradcheck_batch", "kernel_accuracy",
           "identities", "write_report", "prepare_out_dir", "parse_priors"]

PRIOR_ORDER = ("standard", "mog", "vamp", "gtm", "gtm_vamp", "flow")
KINKED = ("relu", "leaky_relu")
SCHEMA = "refvae-validation-report/1"


# =========================================================================== profiles

@dataclass(frozen=True)
class Profile:
    """Settings of one validation profile (all of them go into the report)."""

    name: str
    description: str
    data: str                      #: "digits" (sklearn, 1000/350/447) or "synthetic"
    n_train: int | None            #: None: the whole split
    n_val: int | None
    n_test: int | None
    latent_dims: tuple
    hidden: tuple                  #: encoder hidden widths (decoder: reversed)
    activation: str
    likelihood: str
    num_vals: int
    num_components: int            #: K of mog and vamp
    gtm_grid: int                  #: GTM grid side g (K = g^2)
    gtm_range: tuple               #: (u_min, u_max)
    prior_hidden: tuple            #: hidden widths of the GTM and flow MLPs
    flow_couplings: int
    optimizer: str
    lr: float
    batch_size: int
    patience: int
    max_epochs: int
    n_elbo: int                    #: draws per test point for RE, Omega, ELBO and CE
    n_agg: int                     #: draws per training point for the q(z) statistics
    n_holes: int                   #: prior draws for the hole metrics
    taus: tuple
    n_importance: int              #: importance samples S per test point for ln p(x)
    grid_n: int                    #: density grid n x n (L = 2 figures)
    n_gradcheck: int               #: batch size of the gradient check
    gradcheck_candidates: int      #: batches tried to stay away from activation kinks
    kernel_points: int             #: random points of the mpmath kernel check
    max_rows: int                  #: decoder rows per chunk in the estimators (memory and speed)


_TEXT = dict(data="digits", n_train=None, n_val=None, n_test=None, hidden=(256, 256),
             activation="leaky_relu", likelihood="categorical", num_vals=17, num_components=16,
             gtm_grid=4, gtm_range=(-10.0, 10.0), prior_hidden=(256, 256), flow_couplings=3,
             optimizer="adamax", lr=1e-3, batch_size=64, patience=20, taus=(0.1, 0.01),
             n_gradcheck=4, gradcheck_candidates=100, max_rows=512)

PROFILES = {
    "tiny": Profile(
        name="tiny", description="seconds: smoke test (synthetic digits-like data, small networks)",
        **{**_TEXT, "data": "synthetic", "n_train": 120, "n_val": 40, "n_test": 40,
           "hidden": (16, 16), "prior_hidden": (8,), "num_components": 4, "gtm_grid": 2,
           "flow_couplings": 2, "n_gradcheck": 3, "gradcheck_candidates": 10},
        latent_dims=(2,), max_epochs=2, n_elbo=2, n_agg=2, n_holes=400, n_importance=8,
        grid_n=25, kernel_points=24),
    "quick": Profile(
        name="quick", description="<= 5 minutes on a quiet 2-core machine: L = 2, at most 100 epochs, "
                                  "S = 200",
        **_TEXT, latent_dims=(2,), max_epochs=100, n_elbo=10, n_agg=10, n_holes=20000,
        n_importance=200, grid_n=121, kernel_points=300),
    "full": Profile(
        name="full", description="<= 60 minutes on a quiet 2-core machine: L = 2 and 16, S = 5000",
        **_TEXT, latent_dims=(2, 16), max_epochs=500, n_elbo=100, n_agg=100, n_holes=100000,
        n_importance=5000, grid_n=201, kernel_points=600),
}


_PROFILE_INTS = ("num_vals", "num_components", "gtm_grid", "flow_couplings", "batch_size", "patience",
                 "max_epochs", "n_elbo", "n_agg", "n_holes", "n_importance", "grid_n",
                 "n_gradcheck", "gradcheck_candidates", "kernel_points", "max_rows")


def _check_profile(profile, name="profile"):
    """A :class:`Profile` with positive integer sizes and a finite positive learning rate."""
    if not isinstance(profile, Profile):
        raise TypeError(f"{name} must be a refvae.tools.report.Profile (e.g. PROFILES['tiny']), got "
                        f"{type(profile).__name__}")
    for field in _PROFILE_INTS:
        check_positive_int(getattr(profile, field), f"{name}.{field}")
    check_real(profile.lr, f"{name}.lr", lo=0.0, lo_open=True)
    from ..layers import ACTIVATIONS
    from ..likelihoods import LIKELIHOODS
    from ..optim import OPTIMIZERS
    check_choice(profile.optimizer, f"{name}.optimizer", tuple(OPTIMIZERS))
    check_choice(profile.activation, f"{name}.activation", tuple(ACTIVATIONS))
    check_choice(profile.likelihood, f"{name}.likelihood", tuple(LIKELIHOODS))
    check_choice(profile.data, f"{name}.data", ("digits", "synthetic"))
    if not profile.latent_dims:
        raise ValueError(f"{name}.latent_dims must name at least one latent dimension")
    for L in profile.latent_dims:
        check_positive_int(L, f"{name}.latent_dims")
    return profile


def _check_model(model, name="model"):
    from ..vae import VAE
    if not isinstance(model, VAE):
        raise TypeError(f"{name} must be a refvae.VAE, got {type(model).__name__}")
    return model


def _check_seed(seed, name="seed"):
    return check_positive_int(seed, name, minimum=0)


def _check_priors(priors, name="priors"):
    """A non-empty sequence (not a string) of names from PRIOR_ORDER."""
    if isinstance(priors, str):
        raise TypeError(f"{name} must be a sequence of prior names such as ('standard', 'mog'), "
                        f"got the string {priors!r} (refvae.tools.report.parse_priors splits one)")
    try:
        names = tuple(priors)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of prior names, got "
                        f"{type(priors).__name__}") from None
    if not names:
        raise ValueError(f"{name} is empty; expected one or more of: " + ", ".join(PRIOR_ORDER))
    for p in names:
        if not isinstance(p, str) or p not in PRIOR_ORDER:
            raise ValueError(f"unknown prior {p!r} in {name}; expected one or more of: "
                             + ", ".join(PRIOR_ORDER))
    return tuple(dict.fromkeys(names))


def _check_path(path, name):
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"{name} must be a path (str or os.PathLike), got "
                        f"{type(path).__name__}") from None
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"{name} must name a directory, got {path!r}")
    return path


def parse_priors(text, flag="--priors"):
    """``"standard,mog"`` -> ("standard", "mog") in the given order; ValueError for unknown names."""
    names = [p.strip() for p in str(text).split(",") if p.strip()]
    if not names:
        raise ValueError(f"{flag} is empty; expected one or more of: " + ", ".join(PRIOR_ORDER))
    unknown = [p for p in names if p not in PRIOR_ORDER]
    if unknown:
        raise ValueError(f"unknown prior {unknown[0]!r} in {flag}; expected one or more of: "
                         + ", ".join(PRIOR_ORDER) + " (comma-separated)")
    return tuple(dict.fromkeys(names))


# =========================================================================== data and models

def load_data(profile, seed):
    """(data dict train/val/test, description dict) for a profile (a :class:`Profile`; seed an
    integer >= 0)."""
    _check_profile(profile)
    _check_seed(seed)
    from .. import data as D
    if profile.data == "digits":
        d = D.load_digits_split()
        desc = {"name": "digits", "source": "sklearn.datasets.load_digits (8x8, values 0..16)",
                "split": "in load order: train = rows 0..999, val = 1000..1349, test = 1350..1796"}
    elif profile.data == "synthetic":
        d = D.synthetic_split(np.random.default_rng([seed, 99]), profile.n_train, profile.n_val,
                              profile.n_test)
        desc = {"name": "synthetic", "source": f"refvae.data.synthetic_split(default_rng([{seed}, 99]))",
                "split": "one draw split in order"}
    else:  # pragma: no cover - profiles are data
        raise ValueError(f"unknown data set {profile.data!r}")
    for part, n in (("train", profile.n_train), ("val", profile.n_val), ("test", profile.n_test)):
        if n is not None:
            d[part] = d[part][:n]
    desc.update({"n_train": len(d["train"]), "n_val": len(d["val"]), "n_test": len(d["test"]),
                 "D": int(d["train"].shape[1]), "num_vals": profile.num_vals})
    return d, desc


def prior_kwargs(name, profile):
    """Constructor options of each prior under a profile (the text's settings)."""
    if name == "mog":
        return {"num_components": profile.num_components}
    if name == "vamp":
        return {"num_components": profile.num_components}
    if name == "gtm":
        return {"grid_size": profile.gtm_grid, "u_min": profile.gtm_range[0],
                "u_max": profile.gtm_range[1], "hidden": profile.prior_hidden,
                "activation": profile.activation}
    if name == "gtm_vamp":
        return {"grid_size": profile.gtm_grid, "u_min": profile.gtm_range[0],
                "u_max": profile.gtm_range[1], "hidden": profile.prior_hidden,
                "activation": profile.activation, "data_range": (0.0, float(profile.num_vals - 1))}
    if name == "flow":
        return {"num_couplings": profile.flow_couplings, "hidden": profile.prior_hidden,
                "activation": profile.activation}
    return {}


def build_model(name, latent_dim, x_dim, profile, rng):
    """The VAE of a profile for prior ``name`` (sizes are checked by the constructor)."""
    _check_profile(profile)
    from ..vae import VAE
    return VAE(x_dim, latent_dim, profile.hidden, profile.activation, profile.likelihood,
               profile.num_vals, name, rng=rng, prior_kwargs=prior_kwargs(name, profile))


def _rng(seed, latent_dim, prior, part):
    parts = {"train": 0, "elbo": 1, "omega": 2, "aggregated": 3, "holes": 4, "loglik": 5,
             "gradcheck": 6, "figure": 7}
    return np.random.default_rng([seed, latent_dim, PRIOR_ORDER.index(prior), parts[part]])


# =========================================================================== gradient check

def _mlp_activation(model, name):
    if name.startswith(("prior.gtm.", "prior.flow.")):
        return getattr(model.prior, "activation", model.activation)
    return model.activation


def near_kink(model, x, eps, margin=None):
    """Pre-activations of relu/leaky_relu hidden layers within ``margin`` of 0 on a batch.

    A hidden layer is a ``<prefix>.<i>.pre`` entry of the model's trace that has an ``.out``
    partner and a following ``<prefix>.<i+1>.pre`` (the last layer of an MLP has no kink).
    Returns ``(count, batch_independent, names)``; ``batch_independent`` counts those inside a
    prior's component network (GTM MLP at the fixed grid, the encoder at pseudo-inputs), which no
    choice of batch can move.
    """
    _check_model(model)
    margin = (tolerance("gradcheck_kink_margin").d if margin is None
              else check_real(margin, "margin", lo=0.0))
    trace = dict(model.forward(x, eps)["trace"])
    count = fixed = 0
    names = []
    for name, arr in trace.items():
        if not name.endswith(".pre"):
            continue
        prefix, _, idx = name[:-4].rpartition(".")
        if not idx.isdigit() or f"{prefix}.{idx}.out" not in trace or \
                f"{prefix}.{int(idx) + 1}.pre" not in trace:
            continue
        if _mlp_activation(model, name) not in KINKED:
            continue
        n = int(np.sum(np.abs(arr) < margin))
        if n:
            count += n
            names.append(name)
            if name.startswith("prior.") and model.prior.name != "flow":
                fixed += n
    return count, fixed, names


def choose_gradcheck_batch(model, x_pool, rng, batch_size, candidates):
    """The first of ``candidates`` random batches (x, eps) with no pre-activation near a kink,
    else the one with the fewest. Returns (x, eps, info dict).

    ``x_pool``: a non-empty finite (N, D) array; ``batch_size``, ``candidates``: integers >= 1."""
    _check_model(model)
    x_pool = as_float_array(x_pool, "x_pool", ndim=2)
    if x_pool.shape[0] == 0 or x_pool.shape[1] != model.x_dim:
        raise ValueError(f"x_pool must have shape (N >= 1, {model.x_dim}), got {x_pool.shape}")
    check_rng(rng)
    batch_size = check_positive_int(batch_size, "batch_size")
    candidates = check_positive_int(candidates, "candidates")
    best = None
    for c in range(1, candidates + 1):
        idx = np.sort(rng.choice(len(x_pool), size=min(batch_size, len(x_pool)), replace=False))
        eps = rng.standard_normal((len(idx), model.latent_dim))
        count, fixed, names = near_kink(model, x_pool[idx], eps)
        if best is None or count < best[0]:
            best = (count, fixed, names, idx, eps, c)
        if count == 0:
            break
    count, fixed, names, idx, eps, chosen = best
    info = {"batch_indices": idx.tolist(), "candidates_tried": c, "chosen_candidate": chosen,
            "near_kink": count, "near_kink_batch_independent": fixed, "near_kink_layers": names,
            "kink_margin": tolerance("gradcheck_kink_margin").d}
    return x_pool[idx], eps, info


#: step used to re-check, when a pre-activation that no batch choice can move (a prior's component
#: network) lies near a kink: 1000x smaller than eps**(1/3), so a step crosses the kink only if the
#: pre-activation is within ~1e-8 of it; the rounding floor of the check grows by the same factor.
KINK_RECHECK_STEP = 1e-3 * 2.0 ** (-52 / 3)


def gradcheck_model(model, x, eps, rng, near_kink_fixed=0):
    """check_vjp of the batch-mean neg_elbo w.r.t. every parameter; returns the GradcheckReport.

    If it fails while ``near_kink_fixed`` pre-activations sit near a leaky-ReLU kink that the
    batch cannot avoid, the failing arrays are checked again with :data:`KINK_RECHECK_STEP`
    (central differences across a kink measure the average of two slopes, not the derivative);
    the re-check replaces their entries and the report says so (``kink_rechecked``).
    ``near_kink_fixed`` is an integer >= 0.
    """
    _check_model(model)
    near_kink_fixed = check_positive_int(near_kink_fixed, "near_kink_fixed", minimum=0)
    def f(params):
        return np.asarray(model.neg_elbo(x, eps, params=params).value)

    def vjp(g, params):
        _, grads = model.neg_elbo_and_grad(x, eps, params=params)
        g = float(np.asarray(g))
        return {k: g * v for k, v in grads.items()}

    report = check_vjp(f, vjp, dict(model.params), rng=rng)
    report.kink_rechecked = []
    if not report.passed and near_kink_fixed:
        failing = [e.name for e in report.entries if not e.passed]
        again = check_vjp(f, vjp, dict(model.params), rng=rng, wrt=failing, step=KINK_RECHECK_STEP)
        redo = {e.name: e for e in again.entries}
        report.entries = [redo.get(e.name, e) for e in report.entries]
        report.kink_rechecked = failing
    return report


def group_of(name):
    return name.split(".", 1)[0]


def gradcheck_summary(report):
    """Worst relative error per parameter group (encoder, decoder, prior) of a GradcheckReport."""
    groups = {}
    for e in report.entries:
        g = groups.setdefault(group_of(e.name), {"max_rel_err": 0.0, "worst": None, "n": 0,
                                                "max_err_ratio": 0.0, "passed": True})
        g["n"] += 1
        g["passed"] = g["passed"] and bool(e.passed)
        g["max_err_ratio"] = max(g["max_err_ratio"], float(e.abs_err / e.allowed) if e.allowed > 0 else
                                 (0.0 if e.abs_err == 0 else math.inf))
        if g["worst"] is None or e.rel_err >= g["max_rel_err"]:
            g["max_rel_err"], g["worst"] = float(e.rel_err), e.name
    entries = [{"name": e.name, "analytic": e.analytic, "numeric": e.numeric, "abs_err": e.abs_err,
                "rel_err": e.rel_err, "allowed": e.allowed, "passed": bool(e.passed)}
               for e in report.entries]
    return {"method": report.method, "rtol": report.rtol, "passed": bool(report.passed),
            "groups": groups, "entries": entries}


# =========================================================================== kernel vs mpmath

def _kernel_cases(rng, n_random):
    """(name, kind, z, means, log_vars, log_weights) for the kernel accuracy check."""
    cases = []

    def random_case(name, n, K, L, uniform):
        means = rng.normal(size=(K, L)) * 3.0
        log_vars = rng.uniform(-4.0, 2.0, size=(K, L))
        w = None if uniform else rng.normal(size=K) * 2.0
        if w is not None:
            w = w - np.logaddexp.reduce(w)
        near = n // 2
        pick = rng.integers(0, K, size=near)
        z = np.vstack([means[pick] + np.exp(0.5 * log_vars[pick]) * rng.normal(size=(near, L)),
                       rng.normal(size=(n - near, L)) * 5.0])
        cases.append((name, "random", z, means, log_vars, w))

    n1 = max(2, int(0.4 * n_random))
    n3 = max(2, int(0.2 * n_random))
    random_case("random K=16, L=2 (mixture priors)", n1, 16, 2, False)
    random_case("random K=16, L=16 (mixture priors)", max(2, n_random - n1 - n3), 16, 16, False)
    random_case("random K=1000, L=2, uniform (aggregated posterior)", n3, 1000, 2, True)

    a = np.random.default_rng(20261125)  # adversarial cases: fixed, independent of --seed
    m, v, w = a.normal(size=(9, 3)), a.uniform(-1, 1, (9, 3)), a.normal(size=9)
    w[[0, 4, 8]] = -np.inf
    cases.append(("-inf log-weights (first, middle, last)", "adversarial", a.normal(size=(4, 3)), m, v, w))
    m, v, w = a.normal(size=(6, 3)), a.uniform(-1, 1, (6, 3)), a.normal(size=6)
    far = np.array([[1e3, -1e3, 1e3], [-1e3, 2e3, 5e2], [1e100, 1e100, -1e100], [0.0, 0.0, 3e150]])
    cases.append(("queries 1e3..3e150 away (every exp underflows)", "adversarial", far, m, v, w))
    m = a.normal(size=(7, 4)) * 3
    v = a.uniform(-30, 30, size=(7, 4))
    pick = a.integers(0, 7, size=4)
    z = m[pick] + a.choice([-1.0, 1.0], size=(4, 4)) * np.exp(0.5 * v[pick])
    cases.append(("log-variances in [-30, 30]", "adversarial", z, m, v, a.normal(size=7)))
    m = a.normal(size=(40, 8))
    v = a.uniform(-60, -50, size=(40, 8))
    pick = np.array([0, 17, 39])
    z = m[pick] + a.normal(size=(3, 8)) * np.exp(0.5 * v[pick])
    cases.append(("variances ~1e-24 (K L = 320)", "adversarial", z, m, v, None))
    L = 6
    m, v = a.normal(size=(3, L)), a.uniform(-8, 8, size=(3, L))
    w = 0.5 * np.sum(math.log(2 * math.pi) + v, axis=1) - math.log(3.0)
    z = m + 1e-3 * a.normal(size=(3, L)) * np.exp(0.5 * v)
    cases.append(("f ~ 0 by cancellation", "adversarial", z, m, v, w))
    m, v = a.normal(size=(129, 2)) * 2, a.uniform(-3, 3, (129, 2))
    cases.append(("B = 9, K = 129 (tile and block edges)", "adversarial", a.normal(size=(9, 2)), m, v,
                  a.normal(size=129)))
    m, v = a.normal(size=(400, 2)), a.uniform(-1, 1, (400, 2))
    cases.append(("log-weights rising 0.05 per component (reference moves)", "adversarial",
                  a.normal(size=(3, 2)), m, v, 0.05 * np.arange(400.0)))
    K = 130
    w = np.concatenate([[0.0], -(math.log(K) + 40.0) + a.uniform(-1, 1, K - 1)])
    cases.append(("terms at the exp-skip threshold", "adversarial", a.normal(size=(3, 2)) * 0.1,
                  np.zeros((K, 2)), np.zeros((K, 2)), w))
    m, v = a.normal(size=(5, 3)), a.uniform(-1, 1, (5, 3))
    cases.append(("log-weights +-1e300 and -inf", "adversarial", a.normal(size=(3, 3)), m, v,
                  np.array([-1e300, 1e300, -1e300, -np.inf, -1e300])))
    return cases


def _working_prec(*arrays):
    emax = 0
    vmax = 0.0
    for a in arrays:
        if a is None:
            continue
        fin = np.abs(a[np.isfinite(a)])
        if fin.size and fin.max() > 0:
            emax = max(emax, math.frexp(float(fin.max()))[1])
    if arrays[2] is not None:
        vmax = float(np.max(np.abs(arrays[2])))
    return max(256 + 2 * emax + int(1.5 * vmax), 208)


def _exact_c(mpmath, z, means, log_vars, log_weights, got):
    """Per query |f_hat - f| / (u (|f| + S)) with f, S exact (see refvae.kernels.mixture)."""
    K, L = means.shape
    prec = _working_prec(z, means, log_vars, log_weights)
    out = []
    with mpmath.workprec(prec):
        ln2pi = mpmath.log(2 * mpmath.pi)
        if log_weights is None:
            ww = [-mpmath.log(K)] * K
        else:
            ww = [mpmath.mpf(float(x)) if x > -np.inf else None for x in log_weights]
        mm = [[mpmath.mpf(float(x)) for x in row] for row in means]
        vv = [[mpmath.mpf(float(x)) for x in row] for row in log_vars]
        inv = [[mpmath.exp(-x) for x in row] for row in vv]
        const = [None if ww[k] is None else ww[k] - mpmath.fsum(ln2pi + x for x in vv[k]) / 2
                 for k in range(K)]
        pconst = [None if ww[k] is None else abs(ww[k]) + mpmath.fsum(ln2pi + abs(x) for x in vv[k]) / 2
                  for k in range(K)]
        for b in range(z.shape[0]):
            zb = [mpmath.mpf(float(x)) for x in z[b]]
            t, P = [], []
            for k in range(K):
                if const[k] is None:
                    continue
                q = mpmath.fsum((zb[l] - mm[k][l]) ** 2 * inv[k][l] for l in range(L))
                t.append(const[k] - q / 2)
                P.append(pconst[k] + q / 2)
            fh = float(got[b])
            if not t:
                out.append(0.0 if fh == -np.inf else math.inf)
                continue
            tmax = max(t)
            e = [mpmath.exp(x - tmax) for x in t]
            tot = mpmath.fsum(e)
            f = tmax + mpmath.log(tot)
            S = mpmath.fsum(ei / tot * Pi for ei, Pi in zip(e, P))
            if not math.isfinite(fh):
                out.append(math.inf)
                continue
            out.append(float(abs(mpmath.mpf(fh) - f) / (U * (abs(f) + S))))
    return np.array(out), prec


def kernel_accuracy(rng, n_random):
    """The mixture kernel's forward error against mpmath, as ``c`` in ``|f_hat - f| <= c u (|f| + S)``.

    Returns a dict (``available: False`` with a note when mpmath is not installed).
    ``n_random`` (an integer >= 1) sets the number of random points.
    """
    check_rng(rng)
    n_random = check_positive_int(n_random, "n_random")
    c_allowed = tolerance("mixture_kernel_c").c
    try:
        import mpmath
    except ImportError:
        return {"available": False, "c_allowed": c_allowed,
                "note": "skipped: mpmath is not installed (pip install refvae[test])"}
    from ..kernels.mixture import mixture_log_prob
    rows = []
    worst = (-1.0, None)
    n_pts = {"random": 0, "adversarial": 0}
    for name, kind, z, m, v, w in _kernel_cases(rng, n_random):
        got = mixture_log_prob(z, m, v, w)
        c, prec = _exact_c(mpmath, z, m, v, w, got)
        cmax = float(np.max(c))
        n_pts[kind] += len(c)
        rows.append({"name": name, "kind": kind, "B": int(z.shape[0]), "K": int(m.shape[0]),
                     "L": int(m.shape[1]), "max_c": cmax if math.isfinite(cmax) else None,
                     "prec_bits": prec, "passed": bool(cmax <= c_allowed)})
        if not math.isfinite(cmax) or cmax > worst[0]:
            worst = (cmax, name)
    finite = math.isfinite(worst[0])
    return {"available": True, "c_allowed": c_allowed, "max_c": worst[0] if finite else None,
            "worst_case": worst[1], "n_points": n_pts["random"] + n_pts["adversarial"],
            "n_random": n_pts["random"], "n_adversarial": n_pts["adversarial"],
            "passed": bool(finite and worst[0] <= c_allowed), "cases": rows,
            "oracle": f"mpmath {mpmath.__version__}, >= 208 bits, raised with the exponent range of "
                      "the inputs; error taken in mpmath (f_hat converted exactly)",
            "unit": "u (|f| + S), u = 2**-53, S = sum_k r_k (|w_k| + 1/2 sum_l (ln 2 pi + |v_kl| + "
                    "(z_l - mu_kl)^2 e^{-v_kl}))"}


# =========================================================================== identities

def _e(d, *keys):
    """(value, se) of a stored estimate, or None."""
    for k in keys:
        if d is None:
            return None
        d = d.get(k)
    if d is None or d.get("value") is None:
        return None
    return float(d["value"]), float(d["se"] if d.get("se") is not None else math.nan)


def identities(run, n_train):
    """The identities of SPEC section 5 for one run (a dict), from whatever parts it has (list of
    dicts); ``n_train`` is an integer >= 1."""
    if not isinstance(run, dict):
        raise TypeError(f"run must be a dict (one entry of a report's runs), got {type(run).__name__}")
    n_train = check_positive_int(n_train, "n_train")
    k = tolerance("monte_carlo_k_sigma").k
    out = []

    def add(name, where, tol_name, values=None, note=""):
        """values = (lhs, rhs, diff, allowed, passed), or None when a needed part is missing."""
        entry = {"identity": name, "data": where, "tolerance": tol_name}
        if values is None:
            entry.update(lhs=None, rhs=None, diff=None, allowed=None, passed=None,
                         note="missing: needs a part that was not computed")
        else:
            lhs, rhs, diff, allowed, passed = values
            entry.update(lhs=lhs, rhs=rhs, diff=diff, allowed=allowed, passed=bool(passed), note=note)
        out.append(entry)

    t = run.get("test") or {}
    a = run.get("train_set") or {}
    ll = run.get("log_likelihood") or {}
    re_, om, elbo = _e(t, "re"), _e(t, "omega"), _e(t, "elbo")
    ce, h = _e(t, "cross_entropy"), _e(t, "conditional_entropy")
    avg, split = _e(a, "avg_kl"), _e(a, "avg_kl_split")
    mi = _e(a, "mutual_information")
    ce_a, hq, klq = _e(a, "cross_entropy"), _e(a, "entropy_qz"), _e(a, "kl_qz_p")

    vals = None
    if re_ and om and elbo:
        tol = tolerance("report_elbo_split")
        diff = elbo[0] - (re_[0] + om[0])
        allowed = tol.atol + tol.rtol * (abs(re_[0]) + abs(om[0]))
        vals = (elbo[0], re_[0] + om[0], diff, allowed, abs(diff) <= allowed)
    add("ELBO = RE + Omega", "test", "report_elbo_split", vals,
        "same draws: rounding only; allowed = rtol (|RE| + |Omega|)")

    vals = None
    if om and ce and h:
        rhs = -ce[0] + h[0]
        allowed = k * math.hypot(om[1], ce[1])
        vals = (om[0], rhs, om[0] - rhs, allowed, abs(om[0] - rhs) <= allowed)
    add("Omega (MC) = -CE + H[q(z|x)]", "test", "monte_carlo_k_sigma", vals,
        f"independent draws: allowed = k sqrt(se_1^2 + se_2^2), k = {k:g}")

    vals = None
    if avg and split:
        allowed = k * (avg[1] + split[1])
        vals = (avg[0], split[0], avg[0] - split[0], allowed, abs(avg[0] - split[0]) <= allowed)
    add("E_x KL[q(z|x)||p] = I + KL[q(z)||p]", "train", "monte_carlo_k_sigma", vals,
        f"same draws: se of the difference <= se_1 + se_2; allowed = k (se_1 + se_2), k = {k:g}")

    vals = None
    if mi:
        ln_n = math.log(n_train)
        allowed = k * mi[1]
        margin = min(mi[0], ln_n - mi[0])
        vals = (mi[0], ln_n, margin, allowed, margin >= -allowed)
    add("0 <= I(x; z) <= ln N", "train", "monte_carlo_k_sigma", vals,
        f"lhs = I, rhs = ln N (N = {n_train}); diff = min(I, ln N - I) >= -allowed, allowed = k se, "
        f"k = {k:g}")

    vals = None
    if ce_a and hq and klq:
        allowed = k * klq[1]
        vals = (ce_a[0], hq[0], klq[0], allowed, klq[0] >= -allowed)
    add("Gibbs: CE[q(z)||p] >= H[q(z)]", "train", "monte_carlo_k_sigma", vals,
        f"same draws: diff = KL_hat[q(z)||p] = CE - H >= -allowed, allowed = k se, k = {k:g}")

    vals = None
    if ll.get("jensen_min_margin") is not None:
        vals = (ll["mean"]["value"], ll["mean_log_weight"], ll["jensen_min_margin"],
                ll["jensen_allowed"], ll["jensen_violations"] == 0)
    add("Jensen: ln p_hat(x) >= mean_s log-weight", "test", "report_jensen", vals,
        "per test point, exact up to rounding; lhs, rhs = test-set averages; diff = min_n "
        f"(ln p_hat(x_n) - mean_s lw_ns); {ll.get('jensen_violations')} violation(s)")
    return out


# =========================================================================== figures

def _mosaic(images, side=8, rows=8):
    n = images.shape[0]
    cols = int(math.ceil(n / rows))
    out = np.full((rows * (side + 1) - 1, cols * (side + 1) - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (side + 1):r * (side + 1) + side, c * (side + 1):c * (side + 1) + side] = \
            images[i].reshape(side, side)
    return out


def plot_run(path, run, model, data, aggregated, profile, rng):
    """Write the run's figure (PNG) and return its file name; matplotlib (Agg) imported here."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    L = model.latent_dim
    hist = run["training"]
    two_d = L == 2
    fig = Figure(figsize=(12, 10) if two_d else (12, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2) if two_d else np.array([fig.subplots(1, 2)])
    title = f"{run['prior']} prior, L = {L} ({profile.name} profile)"
    fig.suptitle(title, fontsize=13)
    if two_d:
        mu_test, _ = est.encode_all(model, data["test"])
        zp = model.prior.sample(model.params, 2000, rng)
        pts = np.vstack([zp, aggregated.means])
        lo = np.quantile(pts, 0.002, axis=0)
        hi = np.quantile(pts, 0.998, axis=0)
        pad = 0.15 * (hi - lo) + 0.5
        lims = ((lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1]))
        g = est.density_grid(model, None, n=profile.grid_n, lims=lims, aggregated=aggregated)
        Z1, Z2 = np.meshgrid(g["z1"], g["z2"])
        top = float(np.max(g["log_p"]))
        levels = np.linspace(top - 12.0, top, 13)
        ax = axes[0, 0]
        cs = ax.contourf(Z1, Z2, np.maximum(g["log_p"], top - 12.0), levels=levels, cmap="Blues")
        fig.colorbar(cs, ax=ax, label="ln p(z)")
        ax.scatter(mu_test[:, 0], mu_test[:, 1], s=4, c="tab:orange", alpha=0.7, lw=0,
                   label="encoded test points (mean of q(z|x))")
        ax.set_title("prior density ln p(z) and encoded test points")
        ax.legend(loc="upper right", fontsize=8)
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
        ax = axes[0, 1]
        qtop = float(np.max(g["log_q"]))
        ax.contour(Z1, Z2, g["log_q"], levels=np.linspace(qtop - 10.0, qtop, 6), colors="0.3",
                   linewidths=0.8, linestyles="solid")
        ax.contour(Z1, Z2, g["log_p"], levels=levels[::3], colors="tab:blue", linewidths=0.8,
                   linestyles="solid")
        # the prior's 99% highest-density region: ln p above the 1% quantile of ln p(z), z ~ p
        hpd = float(np.quantile(model.prior.forward(model.params, zp)[0], 0.01))
        mass = g["log_p"] >= hpd
        taus = sorted(profile.taus, reverse=True)
        colors = ["#f4a582", "#b2182b"]
        handles = []
        hm = (run.get("holes") or {}).get("hole_mass") or {}
        for tau, col in zip(taus, colors):
            region = ((g["log_ratio"] < math.log(tau)) & mass).astype(float)
            if region.any():
                ax.contourf(Z1, Z2, region, levels=[0.5, 1.5], colors=[col], alpha=0.8)
            m = hm.get(str(tau)) or {}
            lab = f"q(z)/p(z) < {tau:g}"
            if m.get("value") is not None:
                lab += f" (prior mass {m['value']:.3f})"
            handles.append(Patch(color=col, label=lab))
        handles.append(Patch(facecolor="none", edgecolor="0.4", label="ln q(z) contours"))
        handles.append(Patch(facecolor="none", edgecolor="tab:blue", label="ln p(z) contours"))
        ax.contour(Z1, Z2, g["log_p"], levels=[hpd], colors="k", linewidths=1.0, linestyles="dashed")
        handles.append(Patch(facecolor="none", edgecolor="k", ls="--",
                             label="99% highest-density region of p(z)"))
        ax.legend(handles=handles, loc="upper right", fontsize=8)
        ax.set_title("holes: q(z)/p(z) < tau inside the prior's 99% HPD region\n"
                     "(q(z): aggregated posterior of the training encodings)", fontsize=10)
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
        ax_curve, ax_samp = axes[1, 0], axes[1, 1]
    else:
        ax_curve, ax_samp = axes[0, 0], axes[0, 1]
    ep = np.arange(1, len(hist["train_loss"]) + 1)
    if len(ep):
        ax_curve.plot(ep, hist["train_loss"], label="training (minibatch mean)")
        ax_curve.plot(ep, hist["val_loss"], label="validation (fixed noise)")
        if hist["best_epoch"]:
            ax_curve.axvline(hist["best_epoch"], color="0.5", ls="--", lw=0.8,
                             label=f"best epoch {hist['best_epoch']}")
        vals = np.concatenate([hist["train_loss"], hist["val_loss"]])
        lo, hi = float(np.min(vals)), float(np.quantile(vals, 0.9))
        if hi > lo:
            ax_curve.set_ylim(lo - 0.05 * (hi - lo), hi + 0.1 * (hi - lo))
        ax_curve.legend(fontsize=8)
    ax_curve.set_xlabel("epoch")
    ax_curve.set_ylabel("negative ELBO (nats)")
    ax_curve.set_title("training and validation curves")
    x_samples = model.sample(64, rng, mode="mean")
    side = int(round(math.sqrt(model.x_dim)))
    if side * side == model.x_dim:
        ax_samp.imshow(_mosaic(x_samples, side), cmap="gray_r", vmin=0, vmax=profile.num_vals - 1,
                       interpolation="nearest")
    ax_samp.set_axis_off()
    ax_samp.set_title("64 samples decoded from the prior: E[x | z], z ~ p(z)")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    _atomic_write(path, lambda fh: fig.savefig(fh, format="png"))  # never a half-written PNG
    return os.path.basename(path)


def _have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# =========================================================================== one run

def _estimate(e):
    return {"value": float(e.value), "se": float(e.se), "n": int(e.n)}


def _timed(run, part, fn):
    t0 = time.perf_counter()
    out = fn()
    run["timing"][part] = time.perf_counter() - t0
    return out


def _evaluate(run, model, data, profile, seed, out_dir, plots, say):
    """Parts 2-5 of the module docstring, each stored in ``run`` as soon as it is done."""
    L, prior = model.latent_dim, run["prior"]
    xtr, xte = data["train"], data["test"]

    def r(part):
        return _rng(seed, L, prior, part)

    say("  estimating RE, Omega, ELBO on the test set")
    # chunks of ~max_rows decoder rows: 512 rows measured 1.7x faster than 8192 for S = 5000 (large
    # temporaries are mmap-ed and zeroed on every call: sys time); the results do not depend on it
    t = _timed(run, "elbo", lambda: est.elbo_terms(model, xte, r("elbo"), n_samples=profile.n_elbo,
                                                   batch_size=max(1, profile.max_rows // profile.n_elbo)))
    run["test"] = {k: _estimate(v) for k, v in t.items()}
    run["test"]["n_samples_per_point"] = profile.n_elbo
    o = _timed(run, "omega", lambda: est.omega_decomposition(model, xte, r("omega"),
                                                             n_samples=profile.n_elbo))
    run["test"]["cross_entropy"] = _estimate(o["cross_entropy"])
    run["test"]["conditional_entropy"] = _estimate(o["conditional_entropy"])
    run["test"]["omega_decomposition"] = _estimate(o["omega"])

    say("  aggregated posterior of the training encodings: H[q(z)], KL, I, holes")
    from ..priors.mixtures import AggregatedPosterior
    agg = AggregatedPosterior.from_model(model, xtr)
    a = _timed(run, "aggregated", lambda: est.aggregated_posterior_stats(
        model, xtr, r("aggregated"), n_samples=profile.n_agg, aggregated=agg))
    run["train_set"] = {k: _estimate(v) for k, v in a.items()}
    run["train_set"]["n_samples_per_point"] = profile.n_agg
    h = _timed(run, "holes", lambda: est.hole_metrics(model, xtr, r("holes"), n_samples=profile.n_holes,
                                                      taus=profile.taus, aggregated=agg))
    run["holes"] = {"reverse_kl": _estimate(h["reverse_kl"]),
                    "hole_mass": {str(tau): _estimate(e) for tau, e in h["hole_mass"].items()},
                    "n_prior_samples": profile.n_holes}

    say(f"  ln p(x) by importance sampling, S = {profile.n_importance}")
    ll = _timed(run, "loglik", lambda: est.log_likelihood(model, xte, r("loglik"),
                                                          n_samples=profile.n_importance,
                                                          max_rows=profile.max_rows))
    tol = tolerance("report_jensen")
    margin = ll["log_px"] - ll["elbo"]
    allowed = tol.atol + tol.rtol * np.abs(ll["elbo"])
    run["log_likelihood"] = {
        "mean": _estimate(ll["mean"]), "n_importance": profile.n_importance,
        "ess_mean": float(np.mean(ll["ess"])), "ess_min": float(np.min(ll["ess"])),
        "ess_below_10": int(np.sum(ll["ess"] < 10)), "n_test": int(len(ll["ess"])),
        "mean_log_weight": float(np.mean(ll["elbo"])),
        "jensen_min_margin": float(np.min(margin)), "jensen_allowed": float(np.max(allowed)),
        "jensen_violations": int(np.sum(margin < -allowed))}

    say("  gradient check on a training batch")
    grng = r("gradcheck")

    def do_gc():
        xb, eps, info = choose_gradcheck_batch(model, xtr, grng, profile.n_gradcheck,
                                               profile.gradcheck_candidates)
        rep = gradcheck_model(model, xb, eps, grng, info.get("near_kink_batch_independent", 0))
        return {**info, "batch_size": int(len(xb)), **gradcheck_summary(rep),
                "kink_rechecked": list(rep.kink_rechecked)}
    run["gradcheck"] = _timed(run, "gradcheck", do_gc)

    if plots:
        say("  figure")
        path = os.path.join(out_dir, "figures", f"{prior}_L{L}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        run["figure"] = "figures/" + _timed(run, "figure", lambda: plot_run(
            path, run, model, data, agg, profile, r("figure")))


def _train(run, model, data, profile, seed, quiet):
    from ..train import fit
    res = fit(model, data["train"], data["val"], rng=_rng(seed, model.latent_dim, run["prior"], "train"),
              optimizer=profile.optimizer, lr=profile.lr, batch_size=profile.batch_size,
              max_epochs=profile.max_epochs, patience=profile.patience, quiet=quiet, progress=True)
    run["training"] = {"train_loss": list(res.train_loss), "val_loss": list(res.val_loss),
                       "initial_val_loss": res.initial_val_loss, "best_epoch": res.best_epoch,
                       "best_val_loss": res.best_val_loss, "epochs_run": res.epochs_run,
                       "stopped_early": res.stopped_early, "max_epochs": profile.max_epochs,
                       "patience": profile.patience, "seconds": res.seconds}
    run["timing"]["train"] = res.seconds


# =========================================================================== the whole report

PARTS = ("training", "test", "train_set", "holes", "log_likelihood", "gradcheck", "figure")

#: names of the figures a run writes into ``<out>/figures`` (``<prior>_L<L>.png``); at the start
#: of a run every file of this naming is removed, so a report never links a previous run's figure
FIGURE_RE = re.compile(r"^(?:" + "|".join(PRIOR_ORDER) + r")_L[0-9]+\.png$")


def prepare_out_dir(out, subdirs=("figures",)):
    """Create ``out`` (and its ``subdirs``: plain names, no separators or '..') and prove it is
    writable; OSError with a clear message."""
    out = _check_path(out, "out")
    for d in subdirs:
        if not isinstance(d, str) or not d or d in (".", "..") or os.sep in d or "/" in d \
                or (os.altsep and os.altsep in d):
            raise ValueError(f"subdirs must be plain directory names inside out, got {d!r}")
    try:
        os.makedirs(out, exist_ok=True)
        for d in subdirs:
            os.makedirs(os.path.join(out, d), exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=_temp_prefix(os.path.join(out, "write-test"))):
            pass
    except OSError as exc:
        raise OSError(f"cannot write to the output directory {out!r}: "
                      f"{exc.strerror or exc}") from None
    return out


def remove_stale_figures(out):
    """Remove the files of refvae's figure naming (:data:`FIGURE_RE`) from ``<out>/figures``;
    nothing else is touched. Returns the removed names."""
    fig_dir = os.path.join(out, "figures")
    removed = []
    try:
        names = sorted(os.listdir(fig_dir))
    except OSError:
        return removed
    for name in names:
        full = os.path.join(fig_dir, name)
        if FIGURE_RE.match(name) and os.path.isfile(full) and not os.path.islink(full):
            try:
                os.unlink(full)
                removed.append(name)
            except OSError:
                pass
    return removed


def _previous_report(out):
    """The status/pid/host/started of an existing ``<out>/report.json`` (None if unreadable)."""
    try:
        with open(os.path.join(out, "report.json"), encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    proc = doc.get("process") if isinstance(doc.get("process"), dict) else {}
    return {"status": doc.get("status"), "pid": proc.get("pid"), "host": proc.get("host"),
            "started": proc.get("started") or doc.get("started")}


def run_validation(profile, *, seed=0, out="validation/report", priors=PRIOR_ORDER, plots=True,
                   quiet=False, command=None, threads=None):
    """Run the validation (module docstring) and write the report. Returns the exit code:
    0 (every run done, every check passed), 1 (a check failed or a run failed), 130 (interrupted
    by Ctrl-C/SIGINT) or 143 (SIGTERM): then a partial report is written, status "partial", the
    running prior "interrupted", ``interrupted_by`` the signal. An error in a prior's run marks
    that run "failed" and the next prior runs; an error outside (the kernel check, writing the
    report, MemoryError while building the report) is re-raised after the report is written with
    status "failed" and the error, so no report is left "running".

    The output directory is locked for the run (:class:`refvae.tools.provenance.DirectoryLock`): a second run
    into it raises :class:`refvae.tools.provenance.DirectoryInUseError` naming the other run's pid. A
    ``report.json`` left "running" by a killed run is recognised (its process holds no lock) and
    overwritten with a message on stderr; figures of refvae's naming from an earlier run are removed
    (:func:`remove_stale_figures`), so the directory holds only what this run wrote.

    Arguments are checked first (TypeError/ValueError naming them): ``profile`` a :class:`Profile`
    with positive sizes, known options and a finite lr > 0; ``seed`` an integer >= 0; ``priors`` a
    non-empty sequence of names from :data:`PRIOR_ORDER`; ``threads`` None (the current settings)
    or an integer >= 1 (:func:`refvae.tools.provenance.limit_threads` for the run).
    """
    _check_profile(profile)
    seed = _check_seed(seed)
    priors = _check_priors(priors)
    for flag, value in (("plots", plots), ("quiet", quiet)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{flag} must be True or False, got {type(value).__name__} {value!r}")
    if threads is not None:
        threads = check_positive_int(threads, "threads")
    out = prepare_out_dir(out)
    from contextlib import nullcontext

    from .provenance import limit_threads
    with DirectoryLock(out, command or "refvae validate"), InterruptGuard() as guard, \
            (limit_threads(threads) if threads is not None else nullcontext()):
        return _run_validation_locked(profile, seed, out, priors, plots, quiet, command, guard)


def _run_validation_locked(profile, seed, out, priors, plots, quiet, command, guard):
    t_start = time.perf_counter()

    def say(msg):
        guard.check()
        if not quiet:
            print(msg, flush=True)

    prev = _previous_report(out)
    if prev is not None and prev["status"] == "running":
        print(f"refvae validate: {os.path.join(out, 'report.json')} was left 'running' by pid "
              f"{prev['pid']} on {prev['host']} (started {prev['started']}), which no longer holds "
              f"the directory (killed?); it is stale and will be overwritten", file=sys.stderr)
    from .provenance import provenance
    data, data_desc = load_data(profile, seed)
    if plots and not _have_matplotlib():
        plots = False
        plot_note = "figures skipped: matplotlib is not installed (pip install refvae[plot])"
    elif not plots:
        plot_note = "figures skipped (--no-plots)"
    else:
        plot_note = None
    report = {
        "schema": SCHEMA, "title": "refvae validation report", "command": command,
        "status": "running", "interrupted_by": None, "process": run_identity(),
        "seed": seed, "profile": asdict(profile), "data": data_desc,
        "provenance": {**provenance(), "seed": seed, "profile": profile.name,
                       "reproducibility": REPRODUCIBILITY},
        "tolerances": {k: v.record() for k, v in TOLERANCES.items()},
        "kernel_accuracy": None, "runs": [], "timing": {}, "figures_note": plot_note,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    for L in profile.latent_dims:
        for p in priors:
            report["runs"].append({"prior": p, "latent_dim": L, "status": "pending", "timing": {},
                                   "seeds": {"generator": f"default_rng([{seed}, {L}, "
                                                          f"{PRIOR_ORDER.index(p)}, part])"}})
    if not quiet:
        print(f"refvae validate: profile {profile.name!r} ({profile.description})")
        for k, v in asdict(profile).items():
            if k not in ("name", "description"):
                print(f"  {k:<22} {v}")
        print(f"  {'seed':<22} {seed}")
        print(f"  {'priors':<22} {', '.join(priors)}")
        print(f"  {'data':<22} {data_desc['name']}: {data_desc['n_train']}/{data_desc['n_val']}/"
              f"{data_desc['n_test']} (train/val/test)")
        print(f"  {'output':<22} {out}")
        if plot_note:
            print(f"  note: {plot_note}")
    current = None
    try:
        write_report(report, out, t_start)  # "running", with this process's pid and host
        removed = remove_stale_figures(out)
        if removed:
            say(f"removed {len(removed)} figure(s) of an earlier run from "
                f"{os.path.join(out, 'figures')}")
        say("mixture kernel vs mpmath ...")
        t0 = time.perf_counter()
        report["kernel_accuracy"] = kernel_accuracy(np.random.default_rng([seed, 7777]),
                                                    profile.kernel_points)
        report["timing"]["kernel_accuracy"] = time.perf_counter() - t0
        write_report(report, out, t_start)
        n = len(report["runs"])
        for i, run in enumerate(report["runs"], 1):
            current = run
            say(f"[{i}/{n}] prior {run['prior']}, L = {run['latent_dim']}")
            try:
                model = build_model(run["prior"], run["latent_dim"], data_desc["D"], profile,
                                    _rng(seed, run["latent_dim"], run["prior"], "train"))
                run["model"] = model.config()
                run["status"] = "training"
                _train(run, model, data, profile, seed, quiet)
                run["status"] = "evaluating"
                _evaluate(run, model, data, profile, seed, out, plots, say)
                run["status"] = "done"
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # record, continue with the next prior
                sig = interrupt_signal(exc, guard)
                if sig is not None:  # e.g. SystemError from a Ctrl-C inside a Numba call
                    raise Interrupted(sig) from exc
                run["status"] = "failed"
                run["error"] = f"{type(exc).__name__}: {exc}"
                run["traceback"] = traceback.format_exc()
                print(f"refvae validate: {run['prior']} L = {run['latent_dim']} failed: "
                      f"{run['error']}", file=sys.stderr)
            guard.check()
            write_report(report, out, t_start)
        current = None
        guard.check()
        guard.cleaning = True  # the work is done: a signal from here on does not undo it
        report["status"] = "complete"
        summary = write_report(report, out, t_start)
    except BaseException as exc:
        if guard.received:
            guard.cleaning = True  # first: no repeated/second Ctrl-C while writing the partial report
        sig = interrupt_signal(exc, guard)
        if sig is None:  # an error outside a prior's run: never leave the report "running"
            report["status"] = "failed"
            report["error"] = f"{type(exc).__name__}: {exc}"
            try:
                write_report(report, out, t_start)
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
            raise
        guard.cleaning = True
        if current is not None and current["status"] not in ("done", "failed"):
            current["status"] = "interrupted"
        report["status"] = "partial"
        report["interrupted_by"] = sig
        write_report(report, out, t_start)
        what = "terminated (SIGTERM)" if sig == "SIGTERM" else f"interrupted ({sig})"
        print(f"refvae validate: {what}; partial report written to "
              f"{os.path.join(out, 'report.md')}", file=sys.stderr)
        return interrupt_exit_code(sig)
    say(f"report: {os.path.join(out, 'report.md')} and report.json "
        f"({summary['checks_failed']} failed check(s), {summary['runs_failed']} failed run(s), "
        f"{report['timing']['total_seconds']:.0f} s)")
    return 0 if summary["checks_failed"] == 0 and summary["runs_failed"] == 0 else 1


# =========================================================================== writing

def _clean(obj, path, missing):
    """JSON-able copy with only finite numbers: NaN/inf become null with a note in ``missing``."""
    if isinstance(obj, dict):
        return {str(k): _clean(v, f"{path}.{k}" if path else str(k), missing) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v, f"{path}[{i}]", missing) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist(), path, missing)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        if math.isfinite(obj):
            return float(obj)
        missing.append({"path": path, "reason": f"non-finite value ({float(obj)!r}) replaced by null"})
        return None
    return obj


def _run_label(run):
    return f"{run['prior']} (L = {run['latent_dim']})"


def _missing_parts(report):
    """Notes for every part that was not computed (and why)."""
    notes = []
    if report.get("kernel_accuracy") is None:
        notes.append({"path": "kernel_accuracy", "reason": "not computed (run interrupted)"})
    elif not report["kernel_accuracy"].get("available", True):
        notes.append({"path": "kernel_accuracy", "reason": report["kernel_accuracy"]["note"]})
    for i, run in enumerate(report["runs"]):
        status = run["status"]
        for part in PARTS:
            if run.get(part) is not None:
                continue
            if part == "figure" and status == "done":
                reason = report.get("figures_note") or "figure not written"
            elif status == "failed":
                reason = f"not computed: the run failed ({run.get('error')})"
            elif status == "interrupted":
                reason = "not computed: interrupted"
            elif status == "pending":
                reason = "not computed: the run did not start (interrupted earlier)"
            else:
                reason = f"not computed (run status {status})"
            notes.append({"path": f"runs[{i}].{part}", "run": _run_label(run), "reason": reason})
    return notes


def write_report(report, out, t_start=None):
    """Write ``report.json`` and ``report.md`` (atomically). Returns a summary dict.

    ``report`` is the dict :func:`run_validation` builds (keys ``data``, ``runs``, ``profile``,
    ``provenance``, ``timing``, ``status``, ...); a missing key is a ValueError naming it."""
    if not isinstance(report, dict):
        raise TypeError(f"report must be a dict (built by run_validation), got {type(report).__name__}")
    need = ("schema", "title", "status", "seed", "profile", "data", "provenance", "runs", "timing")
    missing = [k for k in need if k not in report]
    if missing:
        raise ValueError(f"report is missing key(s) {missing}; expected the dict built by "
                         f"run_validation")
    out = _check_path(out, "out")
    if t_start is not None:
        report["timing"]["total_seconds"] = time.perf_counter() - t_start
    n_train = report["data"]["n_train"]
    for run in report["runs"]:
        run["identities"] = identities(run, n_train) if run["status"] != "pending" else []
    missing = _missing_parts(report)
    doc = dict(report)
    doc["missing"] = missing
    doc["files"] = ["report.json", "report.md"] + [r["figure"] for r in report["runs"]
                                                   if r.get("figure")]
    checks_failed = _count_failures(report)
    doc["summary"] = {"checks_failed": checks_failed,
                      "runs_failed": sum(r["status"] == "failed" for r in report["runs"]),
                      "runs_done": sum(r["status"] == "done" for r in report["runs"]),
                      "runs_total": len(report["runs"])}
    nonfinite = []
    clean = _clean(doc, "", nonfinite)
    clean["missing"] = clean["missing"] + nonfinite
    text = json.dumps(clean, indent=1, allow_nan=False, sort_keys=False)
    _atomic_write_bytes(os.path.join(out, "report.json"), (text + "\n").encode("utf-8"))
    _atomic_write_bytes(os.path.join(out, "report.md"), render_markdown(clean).encode("utf-8"))
    return clean["summary"]


def _count_failures(report):
    n = 0
    ka = report.get("kernel_accuracy")
    if ka and ka.get("available") and not ka.get("passed"):
        n += 1
    for run in report["runs"]:
        n += sum(1 for i in run.get("identities", []) if i.get("passed") is False)
        gc = run.get("gradcheck")
        if gc is not None and not gc.get("passed"):
            n += 1
    return n


# --------------------------------------------------------------------------- Markdown

def _fmt(x, digits=3):
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    ax = abs(x)
    if ax != 0 and (ax < 1e-3 or ax >= 1e6):
        return f"{x:.3e}"
    return f"{x:.{digits}f}"


def _pm(e, digits=3):
    """value ± se; just the value when se is 0 (closed forms) or unknown."""
    if not e or e.get("value") is None:
        return "—"
    if not e.get("se"):
        return _fmt(e["value"], digits)
    return f"{_fmt(e['value'], digits)} ± {_fmt(e['se'], digits)}"


def _cell(c):
    return str(c).replace("|", "\\|")


def _table(header, rows):
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _sci(x):
    if x is None:
        return "—"
    return "0" if x == 0 else f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def _secs(x):
    return "—" if x is None else f"{x:.1f}"


def _hole(e):
    if not e or e.get("value") is None:
        return "—"
    if e["value"] == 0:
        return f"0 (0 of {e['n']} draws)"
    return f"{e['value']:.4f} ± {e['se']:.4f}"


def _ok(p):
    return "—" if p is None else ("pass" if p else "**FAIL**")


def render_markdown(r):
    """The report as Markdown (readable on its own; figures by relative path)."""
    prof, dd, prov = r["profile"], r["data"], r["provenance"]
    out = [f"# {r['title']}", ""]
    by = r.get("interrupted_by")
    why = "terminated by SIGTERM" if by == "SIGTERM" else f"interrupted ({by or 'Ctrl-C'})"
    proc = r.get("process") or {}
    status = {"complete": "complete", "partial": f"**PARTIAL** ({why}; see *Missing* below)",
              "running": f"in progress (written after each prior; pid {proc.get('pid')} on "
                         f"{proc.get('host')}; if that process is gone, the run was killed)"
              }.get(r["status"], r["status"])
    s = r["summary"]
    out += [f"Status: {status}. Runs done: {s['runs_done']}/{s['runs_total']}; failed runs: "
            f"{s['runs_failed']}; failed checks: {s['checks_failed']}.", ""]
    if r.get("error"):
        out += [f"Error: `{r['error']}`", ""]
    if r.get("command"):
        out += [f"Command: `{r['command']}`", ""]
    out += ["## Set-up", "",
            f"- Data: **{dd['name']}** — {dd['source']}; {dd['split']}; "
            f"N_train = {dd['n_train']}, N_val = {dd['n_val']}, N_test = {dd['n_test']}, "
            f"D = {dd['D']}, {dd['num_vals']} values per pixel.",
            f"- Profile **{prof['name']}**: {prof['description']}.",
            f"- Model: encoder MLP {prof['hidden']} → 2L, decoder reversed, {prof['activation']}, "
            f"{prof['likelihood']} likelihood with {prof['num_vals']} values. Priors: K = "
            f"{prof['num_components']} (mog, vamp); GTM {prof['gtm_grid']}×{prof['gtm_grid']} grid on "
            f"[{prof['gtm_range'][0]:g}, {prof['gtm_range'][1]:g}]²; flow {prof['flow_couplings']} "
            f"couplings; prior MLPs hidden {prof['prior_hidden']}.",
            f"- Training: {prof['optimizer']} lr {prof['lr']:g}, batch {prof['batch_size']}, at most "
            f"{prof['max_epochs']} epochs, early stopping with patience {prof['patience']} on the "
            f"validation negative ELBO (fixed noise); the best epoch's parameters are kept.",
            f"- Estimators: {prof['n_elbo']} draws per test point (RE, Ω, ELBO, CE); "
            f"{prof['n_agg']} per training point (q(z) statistics); {prof['n_holes']} prior draws "
            f"(holes); S = {prof['n_importance']} importance samples per test point (ln p(x)).",
            f"- Seed {r['seed']}; every part draws from `numpy.random.default_rng([seed, L, "
            f"prior index, part])`.", ""]
    out += ["Provenance: " + ", ".join(f"{k} `{prov.get(k)}`" for k in
            ("refvae", "git_revision", "git_dirty", "python", "numpy", "numba", "scipy", "platform",
             "cpu_model", "numba_threads", "blas_threads")), "",
            f"Reproducibility: {prov.get('reproducibility') or REPRODUCIBILITY}.", ""]

    runs = r["runs"]
    for L in prof["latent_dims"]:
        rows = []
        for run in (x for x in runs if x["latent_dim"] == L):
            t = run.get("test") or {}
            a = run.get("train_set") or {}
            h = run.get("holes") or {}
            ll = (run.get("log_likelihood") or {}).get("mean")
            hm = h.get("hole_mass") or {}
            rows.append([f"`{run['prior']}`", _pm(ll, 2), _pm(t.get("neg_elbo"), 2), _pm(t.get("re"), 2),
                         _pm(t.get("omega"), 2), _pm(a.get("cross_entropy"), 3),
                         _pm(a.get("conditional_entropy"), 3), _pm(a.get("entropy_qz"), 3),
                         _pm(a.get("kl_qz_p"), 3), _pm(a.get("mutual_information"), 3),
                         _pm(h.get("reverse_kl"), 3)]
                        + [_hole(hm.get(str(t_))) for t_ in prof["taus"]])
        out += [f"## Results, L = {L}", "",
                "Nats. *Test* columns: averages over the test set. *q(z)* columns: the aggregated "
                "posterior q(z) = 1/N Σₙ q(z|xₙ) built from the **training-set** encodings (N = "
                f"{dd['n_train']}), with draws z ~ q(z|xₙ) from the training points; CE[q(z)‖p] = "
                "−E_q(z) ln p(z), H[q(z|x)] the average closed-form posterior entropy (no Monte "
                "Carlo error; CE is closed form too for the standard prior), "
                "I(x; z) = H[q(z)] − H[q(z|x)]. Holes: KL[p‖q(z)] and the prior mass where "
                "q(z)/p(z) < τ, from prior draws. ± one Monte Carlo standard error. The negative "
                "ELBO is an upper bound on −ln p(x), not a log-likelihood.", "",
                _table(["prior", "test ln p(x) (IS)", "test −ELBO", "test RE", "test Ω",
                        "CE[q(z)‖p]", "H[q(z|x)]", "H[q(z)]", "KL[q(z)‖p]", "I(x; z)", "KL[p‖q(z)]"]
                       + [f"hole mass τ={t_:g}" for t_ in prof["taus"]], rows), ""]
        rows = []
        for run in (x for x in runs if x["latent_dim"] == L):
            tr = run.get("training") or {}
            ll = run.get("log_likelihood") or {}
            rows.append([f"`{run['prior']}`", run["status"], _fmt(tr.get("epochs_run")),
                         _fmt(tr.get("best_epoch")), _fmt(tr.get("stopped_early")),
                         _fmt(tr.get("best_val_loss"), 2), _fmt(ll.get("ess_mean"), 1),
                         _fmt(ll.get("ess_min"), 1),
                         "—" if ll.get("ess_below_10") is None else f"{ll['ess_below_10']}/{ll['n_test']}",
                         _fmt(tr.get("seconds"), 1)])
        out += [f"Training and importance sampling, L = {L}:", "",
                _table(["prior", "status", "epochs run", "best epoch", "stopped early",
                        "best val −ELBO", "IS ESS mean", "IS ESS min", "IS ESS < 10", "train s"], rows),
                "", "IS ESS: effective sample size (Σw)²/Σw² of the importance weights per test point; "
                "where it is small the estimate of ln p(x) for that point rests on a few draws (its "
                "standard error is then itself unreliable).", ""]

    out += ["## Correctness", "", "### Identities of SPEC §5", "",
            "Tolerances from `refvae.tolerances` (reasons in report.json); Monte Carlo checks use "
            f"k = {TOLERANCES['monte_carlo_k_sigma'].k:g} standard errors (false-failure "
            "probability ≤ 1e-6 per check).", ""]
    rows = []
    for run in runs:
        for i in run.get("identities", []):
            rows.append([_run_label(run), i["identity"], i["data"], _fmt(i["lhs"], 4), _fmt(i["rhs"], 4),
                         _sci(i["diff"]), _sci(i["allowed"]), f"`{i['tolerance']}`", _ok(i["passed"])])
    out += [_table(["run", "identity", "data", "lhs", "rhs", "diff", "allowed", "tolerance", "result"],
                   rows) if rows else "No run reached the identities.", ""]

    out += ["### Gradient check (trained models)", "",
            f"`check_vjp` (random direction, central differences, rtol "
            f"{TOLERANCES['vjp_central_difference'].rtol:g}, `vjp_central_difference`) of the batch-mean "
            "negative ELBO w.r.t. every parameter, on a small training batch; worst relative error "
            "per parameter group, then the largest abs err / allowed (< 1 passes; allowed = rtol "
            "max(|analytic|, |numeric|) plus the rounding floor 10 eps (|φ(h)| + |φ(−h)|) / h of the "
            "difference quotient, which dominates for arrays whose directional derivative is tiny "
            "compared with the loss, so their relative error is mostly rounding noise). "
            "The batch is chosen so that no relu/leaky_relu pre-activation lies "
            f"within {TOLERANCES['gradcheck_kink_margin'].d:g} of its kink "
            "(`gradcheck_kink_margin`); pre-activations of a prior's component network at fixed "
            "inputs do not depend on the batch and are counted separately.", ""]
    rows = []
    for run in runs:
        gc = run.get("gradcheck")
        if not gc:
            continue
        g = gc["groups"]

        def cell(name):
            x = g.get(name)
            if x is None:
                return "— (no parameters)"
            return f"{_sci(x['max_rel_err'])} / {_sci(x['max_err_ratio'])} ({x['n']} arrays)"
        rows.append([_run_label(run), cell("encoder"), cell("decoder"), cell("prior"),
                     str(gc["batch_size"]), f"{gc['near_kink']} ({gc['near_kink_batch_independent']} fixed)",
                     f"{gc['candidates_tried']} ({gc['chosen_candidate']})", _ok(gc["passed"])])
    out += [_table(["run", "encoder: rel err / err ratio", "decoder", "prior", "batch", "near kink",
                    "batches tried (chosen)",
                    "result"], rows) if rows else "Not computed.", ""]

    ka = r.get("kernel_accuracy")
    out += ["### Mixture kernel vs mpmath", ""]
    if ka is None:
        out += ["Not computed (interrupted).", ""]
    elif not ka.get("available"):
        out += [ka["note"] + ".", ""]
    else:
        out += [f"Forward error of `refvae.kernels.mixture.mixture_log_prob` on {ka['n_points']} points "
                f"({ka['n_random']} random, {ka['n_adversarial']} adversarial), as c = |f̂ − f| / "
                f"(u (|f| + S)), u = 2⁻⁵³ (`mixture_kernel_c`: c ≤ {ka['c_allowed']:g}). Oracle: "
                f"{ka['oracle']}. Worst: c = {_fmt(ka['max_c'])} ({ka['worst_case']}): "
                f"{_ok(ka['passed'])}.", "",
                _table(["case", "kind", "B", "K", "L", "max c", "result"],
                       [[c["name"], c["kind"], c["B"], c["K"], c["L"], _fmt(c["max_c"]), _ok(c["passed"])]
                        for c in ka["cases"]]), ""]

    out += ["## Figures", ""]
    if r.get("figures_note"):
        out += [f"Note: {r['figures_note']}.", ""]
    for run in runs:
        if run.get("figure"):
            L = run["latent_dim"]
            what = ("prior density with encoded test points; holes; training curves; samples"
                    if L == 2 else "training curves; samples")
            out += [f"### {_run_label(run)}", "", f"![{_run_label(run)}: {what}]({run['figure']})", ""]

    errs = [run for run in runs if run.get("error")]
    if errs:
        out += ["## Failed runs", ""] + [f"- {_run_label(x)}: `{x['error']}`" for x in errs] + [""]

    miss = r.get("missing") or []
    out += ["## Missing", ""]
    out += ([f"- `{m['path']}`: {m['reason']}" for m in miss] if miss else ["Nothing: every part was computed."])
    out += [""]

    tm = r.get("timing") or {}
    rows = [[_run_label(run)] + [_secs(run["timing"].get(p)) for p in
                                 ("train", "elbo", "omega", "aggregated", "holes", "loglik", "gradcheck",
                                  "figure")] for run in runs]
    out += ["## Wall time (seconds)", "",
            f"Total {_secs(tm.get('total_seconds'))} s; kernel check "
            f"{_secs(tm.get('kernel_accuracy'))} s.", "",
            _table(["run", "train", "ELBO", "Ω/CE", "q(z) stats", "holes", "ln p(x)", "gradcheck",
                    "figure"], rows), ""]
    return "\n".join(out)

