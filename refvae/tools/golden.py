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

References: SPEC.md sections 1-5; STYLE.md ("Reports and golden files carry provenance").
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np

from .._validation import as_float_array, check_choice, check_positive_int, check_real
from ..io import _atomic_write_bytes
from ..tolerances import tolerance

__all__ = ["CASE_PRIORS", "CASE_LIKELIHOODS", "DEFAULT_SEED", "CONVENTIONS", "KINK_MARGIN",
           "PROFILE_ROUNDOFF", "GoldenCase", "case_name", "build_case", "write_case", "write_cases",
           "load_case", "list_cases", "golden_dir", "write_checksums", "verify_checksums",
           "require_checksums",
           "compare_cases", "reference_model", "reference_outputs", "allowed_error", "prior_box"]

FORMAT = "refvae-golden-case"
FORMAT_VERSION = 1
ARRAYS_FILE = "case.npz"
MANIFEST_FILE = "manifest.json"
CHECKSUM_FILE = "SHA256SUMS"

CASE_PRIORS = ("standard", "mog", "vamp", "gtm", "gtm_vamp", "flow")
CASE_LIKELIHOODS = ("categorical", "bernoulli", "gaussian")
DEFAULT_SEED = 20261125

#: the tiny architecture of every case
SIZES = {"x_dim": 6, "latent_dim": 2, "hidden": (5,), "batch_size": 3, "num_vals": 5,
         "num_components": 3, "grid_size": 2, "prior_hidden": (4,), "num_couplings": 2,
         "prior_sample_n": 6}
ACTIVATION = "leaky_relu"
KINK_MARGIN = 0.1           #: every leaky-ReLU pre-activation is at least this far from 0
N_PROBES = 16               #: random-sign probes for the condition scale S_q
PROBE_STEP = 1e-6           #: relative central-difference step of the probes
NLL_SAMPLES = 20000         #: importance samples per example of the reference NLL

#: data range of the pseudo-inputs (VampPrior init, GTM-VampPrior sigmoid scaling) per likelihood
DATA_RANGE = {"categorical": (0.0, 4.0), "bernoulli": (0.0, 1.0), "gaussian": (-2.0, 2.0)}

#: unit roundoff of each verification profile
PROFILE_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24}

#: what a reader of a case must follow (copied into every manifest)
CONVENTIONS = {
    "parameters": "a flat dict of float64 arrays named <module>.<layer index>.<W|b> (SPEC 3): "
                  "encoder.<i>, decoder.<i>, decoder.log_var (Gaussian likelihood), prior.means, "
                  "prior.log_vars, prior.logits, prior.pseudo_inputs, prior.gtm.<i>, "
                  "prior.flow.<t>.<s|t>.<i>",
    "linear": "y = x @ W + b with W of shape (in, out); PyTorch's nn.Linear.weight is W.T",
    "activation": "leaky_relu with negative slope 0.01 on every hidden layer (encoder, decoder, GTM "
                  "and flow MLPs); the derivative at a kink is the left slope (relu'(0) = 0, "
                  "leaky_relu'(0) = 0.01), although no pre-activation of a case is within "
                  "kink_margin of 0",
    "encoder": "h = MLP(x) with 2L outputs; mu = h[:, :L], log_var = h[:, L:]; x is read as given "
               "(no rescaling)",
    "gaussian": "diagonal Gaussians are parameterised by mean and log-variance (natural log of the "
                "variance); sd = exp(0.5 * log_var); log N(z | mu, log_var) = -1/2 sum_l "
                "[ln 2 pi + log_var_l + (z_l - mu_l)^2 exp(-log_var_l)], every constant included",
    "reparameterisation": "z = mu + exp(0.5 * log_var) * eps with eps = input.eps",
    "categorical": "the decoder's last layer has D*C outputs, reshaped C-order to (B, D, C); "
                   "log p(x|z) = sum_d log_softmax(logits[b, d, :])[x_bd]; x holds category "
                   "indices 0..C-1 stored as float",
    "bernoulli": "decoder outputs logits a; log p(x|z) = sum_d x_d log sigmoid(a_d) + "
                 "(1 - x_d) log sigmoid(-a_d)",
    "gaussian_likelihood": "decoder outputs the mean; log-variance decoder.log_var (D,), learned",
    "mixture": "log p(z) = logsumexp_k [log pi_k + log N(z | mu_k, log_var_k)] over L-dimensional "
               "components (never a product of per-dimension mixtures); log pi = "
               "log_softmax(prior.logits), or -ln K where there are no logits (VampPrior default)",
    "vamp": "components (mu_k, log_var_k) = encoder(prior.pseudo_inputs[k]), the model's own encoder",
    "gtm": "grid a = linspace(u_min, u_max, g); point k = i g + j is (a_i, a_j); (mu_k, log_var_k) = "
           "split of MLP prior.gtm(grid) (2L outputs, like the encoder)",
    "gtm_vamp": "pseudo-inputs lo + (hi - lo) sigmoid(MLP prior.gtm(grid)) with (lo, hi) = "
                "prior_kwargs.data_range, then the encoder",
    "flow": "RealNVP with T couplings; each splits z into z_a = z[:, :L//2], z_b = z[:, L//2:], "
            "s = tanh(MLP_s(z_a)), t = MLP_t(z_a), y_b = (z_b - t) exp(-s), out = reverse([z_a, y_b]) "
            "(coordinates in reverse order), log_det = -sum_j s_j once per coupling; log p(z) = "
            "log N(f(z) | 0, I) + sum_t log_det_t",
    "elbo": "neg_elbo = -(log_px_z + log_pz - log_qz_x) per example (B,); kl = log_qz_x - log_pz "
            "(single-sample Monte Carlo KL)",
    "reduction": "loss = mean over the batch of neg_elbo; grad.<param> is the gradient of loss "
                 "(reparameterisation gradient with eps held fixed, including the path through "
                 "log q(z|x) and, for the VampPrior family, through the prior's encoder)",
    "prior_sample": "standard: z = eps; mixtures: z = mu[index] + exp(0.5 * log_var[index]) * eps; "
                    "flow: z = f^-1(eps) (the exact inverse), with eps = draw.prior_sample.eps and "
                    "index = draw.prior_sample.index",
    "nll": "reference.nll is the exact -ln p(x) (2-D quadrature); reference.nll_is the importance-"
           "sampled estimate with proposals q(z|x) (refvae.estimators.log_likelihood); "
           "reference.neg_elbo_expectation is E_q[neg_elbo]; a negative ELBO is not an NLL",
}


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
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden_cases")


def case_name(prior, likelihood) -> str:
    """``"<prior>-<likelihood>"``, e.g. ``"mog-categorical"``; prior in :data:`CASE_PRIORS`,
    likelihood in :data:`CASE_LIKELIHOODS` (else ``ValueError``)."""
    check_choice(prior, "prior", CASE_PRIORS)
    check_choice(likelihood, "likelihood", CASE_LIKELIHOODS)
    return f"{prior}-{likelihood}"


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


# =========================================================================== the case object

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
        return reference_model(self.config, self.params)

    def inputs(self):
        """Fresh copies of ``(config, params, x, eps)``: what an adapter is given."""
        return (json.loads(json.dumps(self.config)), {k: v.copy() for k, v in self.params.items()},
                self.x.copy(), self.eps.copy())


# =========================================================================== the reference

def reference_model(config, params):
    """A refvae VAE built from a case configuration, with ``params`` copied in (finite arrays of
    the model's shapes; else a ``ValueError`` naming the parameter)."""
    from ..vae import VAE
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (VAE.config() plus batch_size), got {type(config).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict name -> array, got {type(params).__name__}")
    cfg = {k: v for k, v in config.items() if k != "batch_size"}
    model = VAE.from_config(cfg, np.random.default_rng(0))
    missing = sorted(set(model.params) - set(params))
    extra = sorted(set(params) - set(model.params))
    if missing or extra:
        raise ValueError(f"parameters do not match the configuration: missing {missing}, extra {extra}")
    for k in model.params:
        model.params[k] = as_float_array(params[k], f"params[{k!r}]", shape=model.params[k].shape,
                                         allow_empty=True).copy()
    model.prior.bind(model.params)
    return model


def _prior_sample_from(model, params, draws):
    """The prior sample made from given draws (CONVENTIONS["prior_sample"])."""
    eps = draws["prior_sample.eps"]
    name = model.prior.name
    if name == "standard":
        return eps.copy()
    if name == "flow":
        return model.prior.inverse(params, eps)
    means, log_vars, _ = model.prior.mixture_components(params)
    idx = np.asarray(draws["prior_sample.index"], dtype=np.int64)
    return means[idx] + np.exp(0.5 * log_vars[idx]) * eps


def reference_outputs(model, x, eps, draws=None, params=None):
    """Every quantity of a case, in data-flow order: trace, ``loss``, ``grad.*``, ``prior_sample.z``.

    ``draws`` (optional) holds ``prior_sample.eps`` (and ``prior_sample.index`` for mixtures).
    """
    _check_model(model)
    p = model.params if params is None else params
    cache = model.forward(x, eps, p)
    out = {}
    for name, arr in cache["trace"]:
        out[name] = np.array(arr, dtype=np.float64)
    out["loss"] = np.array(float(np.mean(cache["per_example"])))
    grads = model.backward(cache, "mean")
    for k in p:
        out[f"grad.{k}"] = np.array(grads[k], dtype=np.float64)
    if draws is not None:
        out["prior_sample.z"] = _prior_sample_from(model, p, draws)
    return out


# =========================================================================== generation

def _case_config(prior, likelihood):
    S = SIZES
    kw = {"standard": {},
          "mog": {"num_components": S["num_components"], "init_scale": 1.0},
          "vamp": {"num_components": S["num_components"], "data_range": DATA_RANGE[likelihood]},
          "gtm": {"grid_size": S["grid_size"], "u_min": -1.0, "u_max": 1.0,
                  "hidden": S["prior_hidden"], "activation": ACTIVATION},
          "gtm_vamp": {"grid_size": S["grid_size"], "u_min": -1.0, "u_max": 1.0,
                       "hidden": S["prior_hidden"], "activation": ACTIVATION,
                       "data_range": DATA_RANGE[likelihood]},
          "flow": {"num_couplings": S["num_couplings"], "hidden": S["prior_hidden"],
                   "activation": ACTIVATION, "init": "random"}}[prior]
    return kw


def _draw_data(likelihood, rng, B, D, C):
    if likelihood == "categorical":
        return rng.integers(0, C, size=(B, D)).astype(np.float64)
    if likelihood == "bernoulli":
        return rng.integers(0, 2, size=(B, D)).astype(np.float64)
    return rng.standard_normal((B, D))


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
        trace = dict(model.forward(x, eps)["trace"])
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


def _condition_scales(model, x, eps, draws, rng, perturb_x):
    """S_q for every quantity by random-sign probes (module docstring, *Tolerances*)."""
    p0 = model.params
    base = reference_outputs(model, x, eps, draws, p0)
    acc = {k: np.zeros_like(v) for k, v in base.items()}
    h = PROBE_STEP
    for _ in range(N_PROBES):
        rp = {k: rng.choice([-1.0, 1.0], size=v.shape) for k, v in p0.items()}
        re = rng.choice([-1.0, 1.0], size=eps.shape)
        rx = rng.choice([-1.0, 1.0], size=x.shape) if perturb_x else np.zeros_like(x)
        rd = rng.choice([-1.0, 1.0], size=draws["prior_sample.eps"].shape)
        outs = []
        for sgn in (1.0, -1.0):
            p = {k: v * (1 + sgn * h * rp[k]) for k, v in p0.items()}
            d = dict(draws)
            d["prior_sample.eps"] = draws["prior_sample.eps"] * (1 + sgn * h * rd)
            outs.append(reference_outputs(model, x * (1 + sgn * h * rx), eps * (1 + sgn * h * re), d, p))
        for k in acc:
            acc[k] += ((outs[0][k] - outs[1][k]) / (2 * h)) ** 2
    return base, {k: np.sqrt(v / N_PROBES) for k, v in acc.items()}


def _cancellation_terms(values):
    """M_q for the quantities whose last operation subtracts separately rounded parts that an
    identity ties together (module docstring, *Tolerances*); {} entries are added to S_q."""
    v = values
    parts = np.abs(v["log_qz_x"]) + np.abs(v["log_pz"])
    out = {"kl": parts, "neg_elbo": parts + np.abs(v["log_px_z"])}
    out["loss"] = np.array(float(np.mean(out["neg_elbo"])))
    if "grad.prior.logits" in v and "prior.component_log_prob" in v:
        # d loss / d logits_k = mean_b (pi_k - r_bk): responsibilities and weights of size ~1/K
        # cancel to a small difference; each is computed from exp() of a sum of log-terms
        log_w = v["prior.log_weights"]
        r = np.exp(log_w[None] + v["prior.component_log_prob"] - v["prior.log_p"][:, None])
        out["grad.prior.logits"] = np.mean(r + np.exp(log_w)[None], axis=0)
    return out


def _flow_box(model, params, R):
    """A box containing f^-1([-R, R]^2) for the L = 2 flow, by interval propagation through the
    inverse couplings: z_a = y_a, z_b = y_b e^s + t with s and t over their ranges on the interval
    of z_a (a 4001-point grid widened by the MLP's Lipschitz bound, the product of the layers'
    spectral norms; the activations are 1-Lipschitz)."""
    from ..layers import mlp_forward
    prior = model.prior
    act, T = prior.activation, prior.num_couplings
    n_layers = len(prior.sizes) - 1

    def ranges(k, lo, hi, m=4001):
        x = np.linspace(lo, hi, m)[:, None]
        half = (hi - lo) / (m - 1) / 2
        out = []
        for net in ("s", "t"):
            pre = mlp_forward(params, f"prior.flow.{k}.{net}", x, act)[0]
            v = np.tanh(pre) if net == "s" else pre
            lip = float(np.prod([np.linalg.norm(params[f"prior.flow.{k}.{net}.{i}.W"], 2)
                                 for i in range(n_layers)])) * half
            out.append((float(v.min()) - lip, float(v.max()) + lip))
        (smin, smax), (tmin, tmax) = out
        return (max(smin, -1.0), min(smax, 1.0)), (tmin, tmax)

    lo, hi = np.array([-R, -R]), np.array([R, R])
    for k in range(T - 1, -1, -1):
        lo, hi = lo[::-1].copy(), hi[::-1].copy()
        (smin, smax), (tmin, tmax) = ranges(k, lo[0], hi[0])
        corners = [lo[1] * math.exp(smin), lo[1] * math.exp(smax), hi[1] * math.exp(smin),
                   hi[1] * math.exp(smax)]
        lo[1], hi[1] = min(corners) + tmin, max(corners) + tmax
    return lo, hi


def prior_box(model):
    """``(lo, hi, h, outside)`` for an L = 2 prior: a box holding all but ``outside`` of its mass
    and a grid spacing h that resolves it.

    - standard: [-10, 10]^2, h = 0.25; outside <= 4 Phi(-10) ~ 3e-23;
    - mixtures: every component's mean +- 10 sd, h = (smallest sd) / 4; outside <= 4 Phi(-10);
    - flow: a box containing f^-1([-7, 7]^2) (interval propagation, :func:`_flow_box`),
      h = (longest side) / 700; outside <= P(u not in [-7, 7]^2) <= 4 Phi(-7) ~ 5e-12.
    """
    from scipy import stats
    _check_model(model)
    if model.latent_dim != 2:
        raise ValueError(f"prior_box needs L = 2, the model has L = {model.latent_dim}")
    name = model.prior.name
    if name == "standard":
        R = 10.0
        return np.array([-R, -R]), np.array([R, R]), 0.25, 4 * float(stats.norm.sf(R))
    if name == "flow":
        R = 7.0
        lo, hi = _flow_box(model, model.params, R)
        return lo, hi, float(np.max(hi - lo)) / 700, 4 * float(stats.norm.sf(R))
    means, log_vars, _ = model.prior.mixture_components(model.params)
    sd = np.exp(0.5 * log_vars)
    R = 10.0
    return ((means - R * sd).min(axis=0), (means + R * sd).max(axis=0), float(sd.min()) / 4,
            4 * float(stats.norm.sf(R)))


def _grid_logsumexp(fn, lo, hi, h, B, chunk=1 << 15):
    """Per example b, log of the trapezoid sum h^2 sum_nodes exp(fn(z)[b]) over the box (nodes
    spaced h), for nodes and for every other node (spacing 2h); fn(z) -> (B, n) log-integrand."""
    from ..primitives import logsumexp
    xs = lo[0] + h * np.arange(int(math.ceil((hi[0] - lo[0]) / h)) + 1)
    ys = lo[1] + h * np.arange(int(math.ceil((hi[1] - lo[1]) / h)) + 1)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    wx = np.r_[0.5, np.ones(xs.size - 2), 0.5]
    wy = np.r_[0.5, np.ones(ys.size - 2), 0.5]
    lw = np.log(np.outer(wx, wy)).ravel()
    cx = np.zeros(xs.size, bool)
    cx[::2] = True
    cy = np.zeros(ys.size, bool)
    cy[::2] = True
    coarse = np.outer(cx, cy).ravel()
    wx2 = np.r_[0.5, np.ones(cx.sum() - 2), 0.5]
    wy2 = np.r_[0.5, np.ones(cy.sum() - 2), 0.5]
    lw2 = np.full(X.size, -np.inf)
    lw2[coarse] = np.log(np.outer(wx2, wy2)).ravel()
    pts = np.stack([X.ravel(), Y.ravel()], axis=1)
    fine, crs = [], []
    for i in range(0, pts.shape[0], chunk):
        v = fn(pts[i:i + chunk])
        fine.append(logsumexp(v + lw[None, i:i + chunk], axis=-1))
        crs.append(logsumexp(v + lw2[None, i:i + chunk], axis=-1))
    fine = logsumexp(np.stack(fine, axis=1), axis=-1) + 2 * math.log(h)
    crs = logsumexp(np.stack(crs, axis=1), axis=-1) + 2 * math.log(2 * h)
    return fine, crs


def _quadrature_nll(model, x, max_halvings=4, atol=1e-4):
    """Exact (L = 2) -ln p(x) per example: -ln int p(x|z) p(z) dz by the trapezoid rule.

    A coarse grid (150 intervals along the longer side) over the prior's box (:func:`prior_box`)
    locates the integrand; the fine grid covers the nodes within e^-40 of its maximum, padded by
    three coarse cells (the coarse estimate of the mass left outside must be < 1e-9 relative;
    p(x|z) is bounded, so the prior's mass outside its box is negligible too). The fine spacing
    starts at 1/200 of the fine box and is halved until the rule at h and 2h agrees to ``atol``
    = 1e-4 nats (the trapezoid rule's error is below |I_h - I_2h|; the NLL check's tolerance is
    >= 0.02 nats).
    """
    p = model.params
    lo, hi, _, _ = prior_box(model)
    h0 = float(np.max(hi - lo)) / 150
    xs = lo[0] + h0 * np.arange(int(math.ceil((hi[0] - lo[0]) / h0)) + 1)
    ys = lo[1] + h0 * np.arange(int(math.ceil((hi[1] - lo[1]) / h0)) + 1)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    nodes = np.stack([X.ravel(), Y.ravel()], axis=1)

    def log_joint(b):
        def fn(z):
            out = model.decoder.forward(p, z)[0]
            return (model.decoder.log_prob(p, np.repeat(x[b:b + 1], z.shape[0], 0), out)
                    + model.prior.forward(p, z)[0])[None]
        return fn

    nll = np.empty(x.shape[0])
    for b in range(x.shape[0]):
        fn = log_joint(b)
        v = np.concatenate([fn(nodes[i:i + 65536])[0] for i in range(0, nodes.shape[0], 65536)])
        keep = v >= v.max() - 40.0
        blo = np.maximum(nodes[keep].min(axis=0) - 3 * h0, lo)
        bhi = np.minimum(nodes[keep].max(axis=0) + 3 * h0, hi)
        inside = np.all((nodes >= blo) & (nodes <= bhi), axis=1)
        w = np.exp(v - v.max())
        if w[~inside].sum() > 1e-9 * w.sum():
            raise RuntimeError("the NLL quadrature box leaves too much mass outside")
        h = float(np.max(bhi - blo)) / 200
        for _ in range(max_halvings + 1):
            fine, crs = _grid_logsumexp(fn, blo, bhi, h, 1)
            if abs(fine[0] - crs[0]) <= atol:
                break
            h /= 2
        else:
            raise RuntimeError(f"the NLL quadrature did not converge (|I_h - I_2h| = "
                               f"{abs(fine[0] - crs[0]):.1e})")
        nll[b] = -fine[0]
    return nll


def _check_model(model):
    if not (hasattr(model, "params") and hasattr(model, "prior") and hasattr(model, "latent_dim")):
        raise TypeError(f"model must be a refvae VAE, got {type(model).__name__}")
    return model


def build_case(prior, likelihood, seed=DEFAULT_SEED) -> GoldenCase:
    """Build one golden case in memory (deterministic given ``seed``).

    Generators: ``default_rng([seed, i, j])`` for the model, data and draws (i, j the positions of
    ``prior`` in :data:`CASE_PRIORS` and ``likelihood`` in :data:`CASE_LIKELIHOODS`),
    ``default_rng([seed, i, j, 1])`` for the condition probes and ``[seed, i, j, 2]`` for the
    reference NLL.
    """
    from ..estimators import log_likelihood
    from .provenance import provenance
    from ..vae import VAE
    check_choice(prior, "prior", CASE_PRIORS)
    check_choice(likelihood, "likelihood", CASE_LIKELIHOODS)
    seed = check_positive_int(seed, "seed", minimum=0)
    ip, il = CASE_PRIORS.index(prior), CASE_LIKELIHOODS.index(likelihood)
    rng = np.random.default_rng([seed, ip, il])
    S = SIZES
    D, L, B, C = S["x_dim"], S["latent_dim"], S["batch_size"], S["num_vals"]
    model = VAE(D, L, S["hidden"], ACTIVATION, likelihood, C, prior, rng=rng,
                prior_kwargs=_case_config(prior, likelihood), decoder_log_var="learned")
    p = model.params
    last = len(S["hidden"])
    p[f"encoder.{last}.b"][L:] += 1.0
    if likelihood == "gaussian":
        p["decoder.log_var"][:] = rng.uniform(-1.0, 0.5, size=D)
    if prior == "mog":
        p["prior.log_vars"][:] = rng.uniform(-1.5, 0.5, size=p["prior.log_vars"].shape)
    if "prior.logits" in p:
        p["prior.logits"][:] = rng.standard_normal(p["prior.logits"].shape)
    if prior == "gtm":
        p[f"prior.gtm.{len(S['prior_hidden'])}.b"][L:] -= 1.0
    x = _draw_data(likelihood, rng, B, D, C)
    eps = rng.standard_normal((B, L))
    n = S["prior_sample_n"]
    draws = {"prior_sample.eps": rng.standard_normal((n, L))}
    if prior not in ("standard", "flow"):
        K = model.prior.K
        draws["prior_sample.index"] = rng.permutation(np.arange(n) % K).astype(np.int64)
    shifts = _clear_kinks(model, x, eps)
    values, scales = _condition_scales(model, x, eps, draws, np.random.default_rng([seed, ip, il, 1]),
                                       perturb_x=likelihood == "gaussian")
    for k, m in _cancellation_terms(values).items():
        scales[k] = scales[k] + m
    ll = log_likelihood(model, x, np.random.default_rng([seed, ip, il, 2]), n_samples=NLL_SAMPLES)
    references = {"nll": _quadrature_nll(model, x), "neg_elbo_expectation": -ll["elbo"],
                  "nll_is": -ll["log_px"], "nll_is_se": ll["se"], "nll_is_ess": ll["ess"]}
    config = dict(model.config())
    config["batch_size"] = B
    name = case_name(prior, likelihood)
    manifest = _manifest(name, config, model, x, eps, draws, values, seed, (ip, il), shifts,
                         provenance())
    return GoldenCase(name, config, {k: v.copy() for k, v in p.items()}, x, eps, draws, values,
                      scales, references, manifest)


def _manifest(name, config, model, x, eps, draws, values, seed, idx, shifts, prov):
    ip, il = idx
    trace_names = [n for n in values if n != "loss" and not n.startswith(("grad.", "prior_sample."))]
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name,
        "description": (f"refvae golden case: prior {config['prior']}, likelihood "
                        f"{config['likelihood']}, D = {config['x_dim']}, L = {config['latent_dim']}, "
                        f"hidden {tuple(config['hidden'])}, batch {config['batch_size']}"),
        "config": config,
        "conventions": CONVENTIONS,
        "kink_margin": KINK_MARGIN,
        "kink_margin_observed": _min_kink_distance(values),
        "kink_bias_shifts": shifts,
        "arrays": {"file": ARRAYS_FILE, "read_with": "numpy.load(path, allow_pickle=False)",
                   "prefixes": {"param.": "parameters (SPEC names)", "input.": "x and eps",
                                "draw.": "other random draws", "value.": "quantities, see order",
                                "scales": "condition scales S_q of all quantities (float32), "
                                          "ravelled and concatenated in the order below",
                                "reference.": "nll (exact, quadrature), nll_is, nll_is_se, "
                                              "nll_is_ess (importance sampling), "
                                              "neg_elbo_expectation (Monte Carlo)"}},
        "parameters": {k: list(v.shape) for k, v in model.params.items()},
        "inputs": {"x": list(x.shape), "eps": list(eps.shape)},
        "draws": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in draws.items()},
        "order": [{"name": k, "shape": list(np.shape(v)),
                   "group": ("trace" if k in trace_names else "loss" if k == "loss"
                             else "gradient" if k.startswith("grad.") else "prior_sample")}
                  for k, v in values.items()],
        "references": {
            "nll": "exact -ln p(x) per example: trapezoid rule for int p(x|z) p(z) dz over the "
                   "prior's box, converged to 1e-4 nats (refvae.tools.golden._quadrature_nll)",
            "nll_is": f"refvae.estimators.log_likelihood with {NLL_SAMPLES} proposals from q(z|x); "
                      "nll_is_se its standard error, nll_is_ess its effective sample size",
            "neg_elbo_expectation": f"E_q[neg_elbo], the mean over the same {NLL_SAMPLES} draws"},
        "tolerances": {
            "formula": "|actual - expected| <= c * u * (scale + |expected|) + tiny, per element",
            "c": tolerance("verify_golden").c,
            "c_reason": tolerance("verify_golden").reason,
            "unit_roundoff": {"float64": PROFILE_ROUNDOFF["float64"],
                              "float32": PROFILE_ROUNDOFF["float32"]},
            "tiny": {"float64": float(np.finfo(np.float64).tiny),
                     "float32": float(np.finfo(np.float32).tiny)},
            "scale": (f"S_q = RMS over {N_PROBES} random-sign probes r of J_q (theta * r), "
                      f"theta = every input (parameters, eps, prior-sample draws, x if Gaussian), "
                      f"by central differences with relative step {PROBE_STEP}"),
            "regeneration": {"c": tolerance("golden_regeneration").c,
                             "reason": tolerance("golden_regeneration").reason},
        },
        "provenance": {**prov, "seed": seed,
                       "rng": {"model_data_draws": f"numpy.random.default_rng([{seed}, {ip}, {il}])",
                               "condition_probes": f"numpy.random.default_rng([{seed}, {ip}, {il}, 1])",
                               "reference_nll": f"numpy.random.default_rng([{seed}, {ip}, {il}, 2])"},
                       "generated_by": "refvae.tools.golden.write_case"},
    }


# =========================================================================== writing

def _npz_bytes(arrays):
    """A deterministic .npz (fixed timestamps and member order; deflated; no pickle)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, mode="w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k, a in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.array(a, order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(k + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    return buf.getvalue()


def _case_arrays(case):
    arrays = {}
    for k, v in case.params.items():
        arrays[f"param.{k}"] = np.asarray(v, np.float64)
    arrays["input.x"] = case.x
    arrays["input.eps"] = case.eps
    for k, v in case.draws.items():
        arrays[f"draw.{k}"] = v
    for k, v in case.values.items():
        arrays[f"value.{k}"] = np.asarray(v, np.float64)
    # one member for all scales (they are tolerance data, not model values): the ravelled
    # scale of each quantity, concatenated in the manifest's order
    arrays["scales"] = np.concatenate([np.ravel(case.scales[k]) for k in case.values]).astype(np.float32)
    for k, v in case.references.items():
        arrays[f"reference.{k}"] = np.asarray(v, np.float64)
    return arrays


_ONE_LINE_ENTRIES = ("parameters", "inputs", "draws", "order")


def _manifest_text(manifest):
    """JSON with one line per entry of the long tables (``order``, ``parameters``, ...)."""
    parts = []
    for k, v in manifest.items():
        key = json.dumps(k)
        if k in _ONE_LINE_ENTRIES and isinstance(v, (list, dict)) and v:
            if isinstance(v, list):
                rows = [json.dumps(e, allow_nan=False) for e in v]
                parts.append(f" {key}: [\n  " + ",\n  ".join(rows) + "\n ]")
            else:
                rows = [f"{json.dumps(n)}: {json.dumps(e, allow_nan=False)}" for n, e in v.items()]
                parts.append(f" {key}: {{\n  " + ",\n  ".join(rows) + "\n }")
        else:
            parts.append(f" {key}: " + json.dumps(v, indent=1, allow_nan=False).replace("\n", "\n "))
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _write_case_files(case, directory):
    os.makedirs(directory, exist_ok=True)
    _atomic_write_bytes(os.path.join(directory, ARRAYS_FILE), _npz_bytes(_case_arrays(case)))
    _atomic_write_bytes(os.path.join(directory, MANIFEST_FILE),
                        _manifest_text(case.manifest).encode("utf-8"))
    return directory


def write_case(out_dir, prior, likelihood, seed=DEFAULT_SEED, checksums=True) -> str:
    """Build the case (prior, likelihood) and write it to ``out_dir/<prior>-<likelihood>/``.

    With ``checksums``, ``out_dir/SHA256SUMS`` is rewritten for every case in ``out_dir``.
    Returns the case directory.
    """
    out_dir = _check_dir_arg(out_dir, "out_dir")
    case = build_case(prior, likelihood, seed)
    path = _write_case_files(case, os.path.join(os.fspath(out_dir), case.name))
    if checksums:
        write_checksums(out_dir)
    return path


def write_cases(out_dir, priors=CASE_PRIORS, likelihoods=CASE_LIKELIHOODS, seed=DEFAULT_SEED,
                say=None) -> list:
    """Write every (prior, likelihood) case to ``out_dir`` and the checksum list; returns the paths.

    ``priors``/``likelihoods``: non-empty lists of names; ``say``: None or a callable.
    """
    out_dir = _check_dir_arg(out_dir, "out_dir")
    for arg, name, choices in ((priors, "priors", CASE_PRIORS),
                               (likelihoods, "likelihoods", CASE_LIKELIHOODS)):
        if isinstance(arg, str) or not isinstance(arg, (list, tuple)):
            raise TypeError(f"{name} must be a list of names from {choices}, got {type(arg).__name__}")
        if not arg:
            raise ValueError(f"{name} must not be empty")
        for a in arg:
            check_choice(a, name[:-1], choices)
    seed = check_positive_int(seed, "seed", minimum=0)
    if say is not None and not callable(say):
        raise TypeError(f"say must be None or a callable (e.g. print), got {type(say).__name__}")
    paths = []
    for prior in priors:
        for likelihood in likelihoods:
            paths.append(write_case(out_dir, prior, likelihood, seed, checksums=False))
            if say is not None:
                say(f"wrote {paths[-1]}")
    write_checksums(out_dir)
    return paths


# =========================================================================== checksums

def _sha256(path):
    from ..io import file_sha256
    return file_sha256(path)


def _case_files(directory):
    out = []
    for name in sorted(os.listdir(directory)):
        sub = os.path.join(directory, name)
        if os.path.isdir(sub) and os.path.isfile(os.path.join(sub, MANIFEST_FILE)):
            for f in (ARRAYS_FILE, MANIFEST_FILE):
                if os.path.isfile(os.path.join(sub, f)):
                    out.append(f"{name}/{f}")
    return out


def write_checksums(directory) -> str:
    """Write ``directory/SHA256SUMS`` (``sha256sum -c`` format) for every case file in it."""
    directory = _check_dir_arg(directory, "directory")
    if not os.path.isdir(directory):
        raise ValueError(f"directory {directory!r}: not a directory of golden cases")
    lines = [f"{_sha256(os.path.join(directory, rel))}  {rel}" for rel in _case_files(directory)]
    path = os.path.join(directory, CHECKSUM_FILE)
    _atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path


_CHECKSUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")


def _read_checksums(path):
    """``{relative path: digest}`` from a ``SHA256SUMS`` file (``sha256sum`` format).

    A line that is not ``<64 hex digits>  <case>/<file>``, a path that leaves the directory
    (absolute, ``..``) or a path listed twice is a ``ValueError`` naming the file and the line.
    """
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot be read as a checksum list ({exc})") from None
    entries = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _CHECKSUM_LINE.fullmatch(line)
        if m is None:
            raise ValueError(f"{path}, line {i}: malformed checksum line {line[:80]!r}; expected "
                             f"'<64 hex digits>  <case>/<file>'")
        digest, rel = m.group(1).lower(), m.group(2)
        if rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in rel.split("/")):
            raise ValueError(f"{path}, line {i}: {rel!r} is not a relative path inside "
                             f"{os.path.dirname(path)!r}")
        if rel in entries:
            raise ValueError(f"{path}, line {i}: {rel!r} is listed twice")
        entries[rel] = digest
    return entries


def _checksum_problems(directory, cases=None):
    """``(sums_path, [(rel, kind), ...])`` with kind in 'missing-sums', 'differs', 'listed but
    missing', 'not listed'; only the files of ``cases`` (names) when given."""
    directory = golden_dir() if directory is None else _check_dir_arg(directory, "directory")
    if not os.path.isdir(directory):
        raise ValueError(f"directory {directory!r}: not a directory of golden cases")
    wanted = None
    if cases is not None:
        if isinstance(cases, str) or not isinstance(cases, (list, tuple, set)):
            raise TypeError(f"cases must be a list of case names, got {type(cases).__name__}")
        wanted = set()
        for c in cases:
            if not isinstance(c, str) or not os.path.isdir(os.path.join(directory, c)) \
                    or os.sep in c or "/" in c or c in (".", ".."):
                raise ValueError(f"cases: no case {c!r} in {directory}")
            wanted.add(c)
    path = os.path.join(directory, CHECKSUM_FILE)
    if not os.path.isfile(path):
        return path, [(CHECKSUM_FILE, "missing-sums")]

    def selected(rel):
        return wanted is None or rel.split("/", 1)[0] in wanted

    problems = []
    listed = _read_checksums(path)
    for rel, digest in listed.items():
        if not selected(rel):
            continue
        full = os.path.join(directory, rel)
        if not os.path.isfile(full):
            problems.append((rel, "listed but missing"))
        elif _sha256(full) != digest:
            problems.append((rel, "differs"))
    for rel in _case_files(directory):
        if selected(rel) and rel not in listed:
            problems.append((rel, "not listed"))
    return path, problems


def verify_checksums(directory=None, cases=None) -> list:
    """Problems with ``SHA256SUMS`` in ``directory`` (default: the committed cases); [] if none.

    ``cases``: names of the cases to check (default: every file listed and every case present).
    Integrity only (a corrupted or edited file): see the module docstring for why regeneration
    is compared by value instead. A missing ``SHA256SUMS`` is one problem; a directory that does
    not exist, or a malformed line of ``SHA256SUMS``, is a ``ValueError`` naming it (and the line).
    """
    path, problems = _checksum_problems(directory, cases)
    text = {"differs": f"SHA-256 differs from {CHECKSUM_FILE}", "listed but missing": "listed but missing",
            "not listed": f"not listed in {CHECKSUM_FILE}"}
    return [f"{path} is missing" if kind == "missing-sums" else f"{rel}: {text[kind]}"
            for rel, kind in problems]


def require_checksums(directory=None, cases=None):
    """Raise ``ValueError`` unless every file of the cases in ``directory`` (only ``cases``, names,
    when given) matches ``SHA256SUMS``: ``"corrupt golden case <name>: <file> does not match
    SHA256SUMS"``; a missing ``SHA256SUMS`` is an error too (it says how to go on without it)."""
    path, problems = _checksum_problems(directory, cases)
    if not problems:
        return
    msgs = []
    for rel, kind in problems:
        if kind == "missing-sums":
            raise ValueError(f"golden cases in {os.path.dirname(path)}: {CHECKSUM_FILE} is missing, so "
                             f"the cases cannot be checked for corruption; write it with "
                             f"refvae.tools.golden.write_checksums (refvae golden does) or pass --no-checksums "
                             f"(checksums=False) to use the cases unchecked")
        case, _, f = rel.partition("/")
        msgs.append(f"corrupt golden case {case}: {f} " + {
            "differs": f"does not match {CHECKSUM_FILE}",
            "listed but missing": f"is listed in {CHECKSUM_FILE} but missing",
            "not listed": f"is not listed in {CHECKSUM_FILE} (regenerate it, or pass --no-checksums)"}[kind])
    more = f" (and {len(msgs) - 1} more problem(s))" if len(msgs) > 1 else ""
    raise ValueError(f"{msgs[0]} ({path}){more}")


# =========================================================================== reading

def list_cases(directory=None) -> list:
    """The case directories in ``directory`` (default: the committed cases), sorted by name in
    the order of :data:`CASE_PRIORS` x :data:`CASE_LIKELIHOODS` (others after, alphabetically)."""
    directory = golden_dir() if directory is None else os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"{directory}: not a directory of golden cases")
    names = [n for n in os.listdir(directory)
             if os.path.isfile(os.path.join(directory, n, MANIFEST_FILE))]
    known = [case_name(p, li) for p in CASE_PRIORS for li in CASE_LIKELIHOODS]
    names.sort(key=lambda n: (known.index(n) if n in known else len(known), n))
    if not names:
        raise ValueError(f"{directory}: holds no golden cases (subdirectories with {MANIFEST_FILE})")
    return [os.path.join(directory, n) for n in names]


def _config_sizes(config):
    """``(key, number of entries)`` for the sizes of a case configuration that determine how much a
    model allocates (x_dim, latent_dim, num_vals, batch_size, hidden widths; the prior's
    num_components, grid_size (its square: the grid points), num_couplings and hidden widths)."""
    def ints(d, keys, prefix):
        for k in keys:
            v = d.get(k)
            vals = v if isinstance(v, list) else [v]
            for x in vals:
                if isinstance(x, int) and not isinstance(x, bool):
                    yield f"{prefix}{k}", (x * x if k == "grid_size" else x)

    yield from ints(config, ("x_dim", "latent_dim", "num_vals", "batch_size", "hidden"), "")
    pk = config.get("prior_kwargs")
    if isinstance(pk, dict):
        yield from ints(pk, ("num_components", "grid_size", "num_couplings", "hidden"), "prior_kwargs.")


def _check_manifest(m, where):
    """The structure of a parsed ``manifest.json`` (``where`` names it in every message); returns
    ``(order, parameter_shapes)``: ``[(name, shape), ...]`` and ``{name: shape}``."""
    if not isinstance(m, dict):
        raise ValueError(f"{where} holds a JSON {type(m).__name__}, expected an object")
    fmt, version = m.get("format"), m.get("format_version")
    if fmt != FORMAT or type(version) is not int or version != FORMAT_VERSION:
        raise ValueError(f"{where}: format {fmt!r:.80} version {version!r:.80}; this refvae reads "
                         f"{FORMAT!r} version {FORMAT_VERSION}")

    def shape_of(v, what):
        if not isinstance(v, list) or len(v) > 8 or any(type(s) is not int or not 0 <= s <= 2 ** 31
                                                        for s in v):
            raise ValueError(f"{where}: {what} must be a shape (a list of at most 8 integers in "
                             f"[0, 2^31]), got {v!r:.80}")
        return tuple(v)

    name = m.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: 'name' must be a non-empty string, got {name!r:.80}")
    config = m.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{where}: 'config' must be an object (VAE.config() plus batch_size), got "
                         f"{config!r:.80}")
    for k in ("prior", "likelihood"):
        if not isinstance(config.get(k), str):
            raise ValueError(f"{where}: config.{k} must be a string, got {config.get(k)!r:.80}")
    params = m.get("parameters")
    if not isinstance(params, dict) or not params:
        raise ValueError(f"{where}: 'parameters' must be a non-empty object {{name: shape}}, got "
                         f"{params!r:.80}")
    shapes = {k: shape_of(v, f"parameters[{k!r}]") for k, v in params.items()}
    order = m.get("order")
    if not isinstance(order, list) or not order:
        raise ValueError(f"{where}: 'order' must be a non-empty list of {{name, shape}} objects, got "
                         f"{order!r:.80}")
    out, seen = [], set()
    for i, e in enumerate(order):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not e["name"]:
            raise ValueError(f"{where}: order[{i}] must be an object with a non-empty 'name' string "
                             f"and a 'shape', got {e!r:.80}")
        if e["name"] in seen:
            raise ValueError(f"{where}: order[{i}] repeats the quantity {e['name']!r}")
        seen.add(e["name"])
        out.append((e["name"], shape_of(e.get("shape"), f"order[{i}].shape")))
    return out, shapes


def load_case(path_or_name, directory=None) -> GoldenCase:
    """Read a case: a directory path, or a case name in ``directory`` (default: the committed cases).

    Every problem is a ``ValueError`` naming the case directory and the file (``"golden case
    <path>: manifest.json ..."``): a missing file, pickle, an unknown format, a manifest that is
    not an object or lacks a key or has a value of the wrong type, arrays that do not match the
    manifest, non-real or non-finite arrays, a configuration that does not build a refvae model
    with these parameters (each size in it -- widths, dimensions, components, grid points -- must be
    at most the number of numbers in ``case.npz``, so a tampered size cannot allocate more than
    the case holds). Integrity against
    ``SHA256SUMS`` is checked separately (:func:`require_checksums`).
    """
    path = _check_dir_arg(path_or_name, "path_or_name")
    if not os.path.isdir(path):
        path = os.path.join(golden_dir() if directory is None else _check_dir_arg(directory, "directory"),
                            path)
    mpath, apath = os.path.join(path, MANIFEST_FILE), os.path.join(path, ARRAYS_FILE)
    if not (os.path.isfile(mpath) and os.path.isfile(apath)):
        raise ValueError(f"{path}: not a golden case (needs {MANIFEST_FILE} and {ARRAYS_FILE})")
    where, awhere = f"golden case {path}: {MANIFEST_FILE}", f"golden case {path}: {ARRAYS_FILE}"
    try:
        with open(mpath, "rb") as fh:
            manifest = json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ValueError(f"{where} is malformed: {exc}") from None
    order_shapes, param_shapes = _check_manifest(manifest, where)
    try:
        with np.load(apath, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable archive is reported as malformed
        raise ValueError(f"{awhere} cannot be read without pickle: {exc}") from None
    for k, v in arrays.items():
        if v.dtype.kind not in "fiu":
            raise ValueError(f"{awhere}: member {k!r} has dtype {v.dtype}; expected real numbers")
        if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
            raise ValueError(f"{awhere}: member {k!r} holds NaN or inf")
    for k in ("input.x", "input.eps"):
        if k not in arrays or arrays[k].ndim != 2:
            raise ValueError(f"{awhere}: needs a 2-D array {k!r}"
                             + (f", got shape {arrays[k].shape}" if k in arrays else ""))

    def take(prefix):
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    params = {k: np.asarray(v, np.float64) for k, v in take("param.").items()}
    values_raw = take("value.")
    order = [n for n, _ in order_shapes]
    if set(order) != set(values_raw):
        raise ValueError(f"{awhere}: value. arrays do not match the manifest's order "
                         f"(missing {sorted(set(order) - set(values_raw))}, "
                         f"extra {sorted(set(values_raw) - set(order))})")
    flat = np.asarray(arrays.get("scales", np.zeros(0)), np.float64)
    sizes = [math.prod(shape) for _, shape in order_shapes]
    if flat.shape != (sum(sizes),):
        raise ValueError(f"{awhere}: 'scales' has shape {flat.shape}, expected ({sum(sizes)},) "
                         f"(every quantity's scale, ravelled, in the manifest's order)")
    if np.any(flat < 0):
        raise ValueError(f"{awhere}: 'scales' has negative entries (condition scales are >= 0)")
    offsets = np.cumsum([0] + sizes)
    for n, shape in order_shapes:
        if values_raw[n].shape != shape:
            raise ValueError(f"{awhere}: value.{n} has shape {values_raw[n].shape}, the manifest "
                             f"says {shape}")
    values = {n: np.asarray(values_raw[n], np.float64) for n in order}
    scales = {n: flat[offsets[i]:offsets[i + 1]].reshape(shape)
              for i, (n, shape) in enumerate(order_shapes)}
    if set(params) != set(param_shapes):
        raise ValueError(f"{awhere}: param. arrays do not match the manifest's parameters "
                         f"(missing {sorted(set(param_shapes) - set(params))}, "
                         f"extra {sorted(set(params) - set(param_shapes))})")
    params = {k: params[k] for k in param_shapes}
    for k, shape in param_shapes.items():
        if params[k].shape != shape:
            raise ValueError(f"{awhere}: param.{k} has shape {params[k].shape}, the manifest says "
                             f"{shape}")
    x = np.asarray(arrays["input.x"], np.float64)
    eps = np.asarray(arrays["input.eps"], np.float64)
    if x.shape[0] != eps.shape[0]:
        raise ValueError(f"{awhere}: input.x has {x.shape[0]} rows but input.eps has {eps.shape[0]}")
    config = manifest["config"]
    numbers = sum(a.size for a in arrays.values())
    big = [(k, n) for k, n in _config_sizes(config) if abs(n) > numbers]
    if big:
        raise ValueError(f"{where}: config.{big[0][0]} asks for {big[0][1]} entries, more than the "
                         f"{numbers} numbers in {ARRAYS_FILE}; not the configuration of these arrays")
    if "batch_size" in config and (type(config["batch_size"]) is not int
                                   or config["batch_size"] != x.shape[0]):
        raise ValueError(f"{where}: config.batch_size is {config['batch_size']!r:.80} but input.x "
                         f"has {x.shape[0]} rows")
    try:
        model = reference_model(config, params)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
            ZeroDivisionError) as exc:
        raise ValueError(f"{where}: config does not describe a refvae model with the parameters of "
                         f"{ARRAYS_FILE}: {type(exc).__name__}: {exc}") from None
    for k in params:
        if params[k].shape != model.params[k].shape:
            raise ValueError(f"{awhere}: param.{k} has shape {params[k].shape}, the configuration "
                             f"needs {model.params[k].shape}")
    if x.shape[1] != model.x_dim or eps.shape[1] != model.latent_dim:
        raise ValueError(f"{awhere}: input.x {x.shape} and input.eps {eps.shape} do not fit the "
                         f"configuration (x_dim {model.x_dim}, latent_dim {model.latent_dim})")
    draws = take("draw.")
    if "prior_sample.z" in values:
        d_eps, d_idx = draws.get("prior_sample.eps"), draws.get("prior_sample.index")
        if d_eps is None or d_eps.shape != values["prior_sample.z"].shape:
            raise ValueError(f"{awhere}: draw.prior_sample.eps must have the shape of "
                             f"value.prior_sample.z {values['prior_sample.z'].shape}")
        K = getattr(model.prior, "K", None) if model.prior.name not in ("standard", "flow") else None
        if K is not None and (d_idx is None or d_idx.dtype.kind not in "iu"
                              or d_idx.shape != d_eps.shape[:1] or np.any(d_idx < 0)
                              or np.any(d_idx >= K)):
            raise ValueError(f"{awhere}: draw.prior_sample.index must hold {d_eps.shape[0]} "
                             f"component indices in 0..{K - 1}")
    references = {k: np.asarray(v, np.float64) for k, v in take("reference.").items()}
    return GoldenCase(manifest["name"], config, params, x, eps, draws, values, scales,
                      references, manifest, os.path.abspath(path))


# =========================================================================== comparison

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
