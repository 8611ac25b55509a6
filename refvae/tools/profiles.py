"""The settings and set-up shared by ``refvae train`` and ``refvae validate``: the validation
profiles (:class:`Profile`, :data:`PROFILES`), the data of a profile (:func:`load_data`), the model
of a profile for a prior (:func:`build_model`), the list of prior names (:func:`prior_names`,
:func:`parse_priors`) and the output directory (:func:`prepare_out_dir`).

Training depends on this module and not on the report (:mod:`refvae.tools.report`), which uses it
too. The priors come from the registry :data:`refvae.priors.PRIORS`, read when a function is
called, so a prior registered later (:func:`refvae.priors.register_prior`) is included; the
constructor options of a prior under a profile are its ``settings(profile)``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

from ..io import _temp_prefix
from .._validation import check_choice, check_positive_int, check_real

__all__ = ["Profile", "PROFILES", "prior_names", "prior_index", "parse_priors", "load_data", "build_model",
           "prepare_out_dir"]


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
    seeds: int = 1                 #: training seeds seed, seed + 1, ... (paired comparisons: >= 2)
    n_importance_ref: int = 0      #: S on the first seed (bias of the S estimate); 0: n_importance
    workers: int = 1               #: processes for the runs (the numbers do not depend on it)
    # the companion code's options (refvae.tools.companion.apply sets them; defaults: refvae's)
    gtm_activation: str | None = None   #: GTM / GTM-VampPrior MLPs (None: ``activation``)
    vamp_learn_weights: bool = False    #: VampPrior weights softmax(prior.logits) learned
    pseudo_input_range: tuple | None = None  #: VampPrior init U(lo, hi), GTM-Vamp sigmoid scale;
    #                                          None: (0, num_vals - 1)
    flow_init: str = "identity"         #: FlowPrior init ("identity" or "random")
    val_noise: str = "fixed"            #: train.fit's val_noise ("fixed" or "redraw")


#: the settings shared by the profiles: the model and training of the companion code of the text
#: (jmtomczak/intro_dgm) where the report's settings table says so, refvae's own choices where it
#: says they differ (the text itself, section 4.4.1, gives no training settings)
_SHARED = dict(data="digits", n_train=None, n_val=None, n_test=None, hidden=(256, 256),
             activation="leaky_relu", likelihood="categorical", num_vals=17, num_components=16,
             gtm_grid=4, gtm_range=(-10.0, 10.0), prior_hidden=(256, 256), flow_couplings=3,
             optimizer="adamax", lr=1e-3, batch_size=64, patience=20, taus=(0.1, 0.01),
             n_gradcheck=4, gradcheck_candidates=100, max_rows=512)

PROFILES = {
    "tiny": Profile(
        name="tiny", description="seconds: smoke test (synthetic digits-like data, small networks)",
        **{**_SHARED, "data": "synthetic", "n_train": 120, "n_val": 40, "n_test": 40,
           "hidden": (16, 16), "prior_hidden": (8,), "num_components": 4, "gtm_grid": 2,
           "flow_couplings": 2, "n_gradcheck": 3, "gradcheck_candidates": 10},
        latent_dims=(2,), max_epochs=2, n_elbo=2, n_agg=2, n_holes=400, n_importance=8,
        grid_n=25, kernel_points=24, seeds=2, n_importance_ref=16, workers=1),
    "quick": Profile(
        name="quick", description="<= 5 minutes on a quiet 2-core machine: L = 2, 3 seeds, at most "
                                  "100 epochs (under-trained: too few seeds and epochs to rank the "
                                  "priors), S = 200 (1000 on the first seed)",
        **_SHARED, latent_dims=(2,), max_epochs=100, n_elbo=10, n_agg=10, n_holes=20000,
        n_importance=200, grid_n=121, kernel_points=300, seeds=3, n_importance_ref=1000,
        workers=2),
    "full": Profile(
        name="full", description="<= 60 minutes on a quiet 2-core machine: L = 2 and 16, 5 seeds, "
                                 "S = 1000 (5000 on the first seed)",
        **_SHARED, latent_dims=(2, 16), max_epochs=500, n_elbo=100, n_agg=100, n_holes=100000,
        n_importance=1000, grid_n=201, kernel_points=600, seeds=5, n_importance_ref=5000,
        workers=2),
}


_PROFILE_INTS = ("num_vals", "num_components", "gtm_grid", "flow_couplings", "batch_size", "patience",
                 "max_epochs", "n_elbo", "n_agg", "n_holes", "n_importance", "grid_n",
                 "n_gradcheck", "gradcheck_candidates", "kernel_points", "max_rows", "seeds",
                 "workers")


def _check_profile(profile, name="profile"):
    """A :class:`Profile` with positive integer sizes and a finite positive learning rate."""
    if not isinstance(profile, Profile):
        raise TypeError(f"{name} must be a refvae.tools.profiles.Profile (e.g. PROFILES['tiny']), got "
                        f"{type(profile).__name__}")
    for field in _PROFILE_INTS:
        check_positive_int(getattr(profile, field), f"{name}.{field}")
    check_real(profile.lr, f"{name}.lr", lo=0.0, lo_open=True)
    _check_importance(profile, name)
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


def _check_importance(profile, name):
    """ln p(x) is estimated in blocks of ``n_importance // 2`` draws (two on every seed, so the S
    and S/2 estimates share draws; more on the first seed up to ``n_importance_ref``): S must be
    even and >= 4, the reference 0 or a multiple of the block >= S."""
    S = profile.n_importance
    if S < 4 or S % 2:
        raise ValueError(f"{name}.n_importance must be an even integer >= 4 (two blocks of S/2 "
                         f"draws), got {S!r}")
    ref = check_positive_int(profile.n_importance_ref, f"{name}.n_importance_ref", minimum=0)
    if ref and (ref < S or ref % (S // 2)):
        raise ValueError(f"{name}.n_importance_ref must be 0 or a multiple of n_importance/2 = "
                         f"{S // 2} that is >= n_importance = {S}, got {ref!r}")


def _check_seed(seed, name="seed"):
    return check_positive_int(seed, name, minimum=0)


# =========================================================================== prior names

def prior_names():
    """The names of the registered priors, in registration order (the text's order for the
    built-in ones): ``tuple(refvae.priors.PRIORS)`` read now, so a prior registered later with
    :func:`refvae.priors.register_prior` is included."""
    from ..priors import PRIORS
    return tuple(PRIORS)


def prior_index(name):
    """The position of a registered prior in :func:`prior_names` (the ``prior index`` of the
    report's generators; 0..5 for the built-in priors in the text's order)."""
    names = prior_names()
    return names.index(check_choice(name, "name (the prior)", names))


def _check_priors(priors, name="priors"):
    """A non-empty sequence (not a string) of registered prior names."""
    known = prior_names()
    if isinstance(priors, str):
        raise TypeError(f"{name} must be a sequence of prior names such as ('standard', 'mog'), "
                        f"got the string {priors!r} (refvae.tools.profiles.parse_priors splits one)")
    try:
        names = tuple(priors)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of prior names, got "
                        f"{type(priors).__name__}") from None
    if not names:
        raise ValueError(f"{name} is empty; expected one or more of: " + ", ".join(known))
    for p in names:
        if not isinstance(p, str) or p not in known:
            raise ValueError(f"unknown prior {p!r} in {name}; expected one or more of: "
                             + ", ".join(known))
    return tuple(dict.fromkeys(names))


def parse_priors(text, flag="--priors"):
    """``"standard,mog"`` -> ("standard", "mog") in the given order; ValueError for unknown names."""
    known = prior_names()
    names = [p.strip() for p in str(text).split(",") if p.strip()]
    if not names:
        raise ValueError(f"{flag} is empty; expected one or more of: " + ", ".join(known))
    unknown = [p for p in names if p not in known]
    if unknown:
        raise ValueError(f"unknown prior {unknown[0]!r} in {flag}; expected one or more of: "
                         + ", ".join(known) + " (comma-separated)")
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


def build_model(name, latent_dim, x_dim, profile, rng):
    """The VAE of a profile for prior ``name``, with the prior's ``settings(profile)`` (sizes are
    checked by the constructor)."""
    _check_profile(profile)
    from ..priors import PRIORS
    from ..vae import VAE
    check_choice(name, "name (the prior)", tuple(PRIORS))
    return VAE(x_dim, latent_dim, profile.hidden, profile.activation, profile.likelihood,
               profile.num_vals, name, rng=rng, prior_kwargs=PRIORS[name].settings(profile))


# =========================================================================== output directory

def _check_path(path, name):
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"{name} must be a path (str or os.PathLike), got "
                        f"{type(path).__name__}") from None
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"{name} must name a directory, got {path!r}")
    return path


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
