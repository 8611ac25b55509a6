"""refvae's settings against the text's companion code, and the companion's choices as options.

The text (Tomczak, *Deep Generative Modeling*, section 4.4.1) gives no training settings; refvae's
profiles follow its companion code, jmtomczak/intro_dgm, notebook ``vaes/vae_priors_example.ipynb``
(read at commit 28bbc85 of that repository; "cell n" below is the index of the cell in the
notebook's JSON ``cells`` list, code and markdown cells counted), except where :data:`SETTINGS`
says they differ and why.

- :data:`SETTINGS`: one :class:`Setting` per model or training setting that differs or matters
  (``name, refvae, companion, why``, plus ``applied``: whether :func:`apply` adopts the companion's
  choice). The report renders it as its settings table.
- :func:`apply`: a profile with the companion's choices where they are defensible and
  implementable (learned VampPrior weights, tanh in the GTM nets, pseudo-inputs on (0, 17),
  PyTorch's default flow initialisation, fresh validation noise, the companion's stopping rule);
  the others are listed with the reason they are not adopted.

Nothing here is code of the companion: each value was read in the notebook and is cited by cell.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["Setting", "SETTINGS", "apply", "COMPANION_SOURCE"]

#: where the companion values come from
COMPANION_SOURCE = ("jmtomczak/intro_dgm, vaes/vae_priors_example.ipynb (commit 28bbc85); cells "
                    "numbered as in the notebook's JSON")


@dataclass(frozen=True)
class Setting:
    """One row of the settings table: refvae's value, the companion code's, why they differ (or
    why the setting matters), and whether :func:`apply` adopts the companion's value."""

    name: str
    refvae: str
    companion: str
    why: str
    applied: bool = False


# Each companion value below was read in vaes/vae_priors_example.ipynb; the cell is named in the
# comment above the record (cell indices of the notebook's JSON "cells" list).
SETTINGS = (
    # cell 4 (class Digits: data[:1000], [1000:1350], [1350:], float32, no transform)
    Setting("data", "sklearn digits 8x8, values 0..16 as given, split in load order 1000/350/447",
            "the same split (float32), no rescaling", "same"),
    # cells 4 and 0 (float32 arrays, torch defaults)
    Setting("arithmetic", "float64 everywhere", "float32 (PyTorch default)",
            "refvae is a reference: float64 keeps rounding far below every reported difference"),
    # cell 43: encoder_net / decoder_net (Linear(D, M), LeakyReLU, Linear(M, M), LeakyReLU, ...); M = 256 (cell 39)
    Setting("encoder and decoder", "MLPs 64-256-256-2L and L-256-256-17*64, leaky ReLU (slope 0.01)",
            "the same (nn.LeakyReLU default slope 0.01)", "same"),
    # cell 7: log_categorical clamps p to [EPS, 1 - EPS], EPS = 1e-5; cell 14: softmax then log
    Setting("categorical likelihood", "log_softmax of the logits, no clamping (SPEC section 2)",
            "log of softmax probabilities clamped to [1e-5, 1 - 1e-5]",
            "the clamp changes the density (it no longer sums to 1) and its gradient is 0 where it "
            "binds; refvae evaluates the model's own log-probabilities"),
    # cell 39: L = 2
    Setting("latent dimension L", "2 (quick); 2 and 16 (full)", "2",
            "L = 16 tests the priors where the figures cannot look"),
    # cells 16, 18, 20, 22: log_normal_diag(...) + log(w) is K x B x L, logsumexp over dim 0 gives
    # B x L; cell 29 sums it over L: a product of L one-dimensional mixtures
    Setting("mixture density (mog, vamp, gtm, gtm_vamp)",
            "logsumexp over the K components of the L-dimensional diagonal Gaussians (SPEC section 4)",
            "logsumexp per latent dimension, then summed over dimensions: a product of L "
            "one-dimensional mixtures",
            "the text's mixtures are mixtures of L-dimensional Gaussians; the per-dimension product is "
            "another model (K^L implied components). Not adopted"),
    # cells 16, 18, 20, 22 (sample): mean + eps * exp(logvar)
    Setting("sampling from mixture priors", "mu_k + exp(log_var_k / 2) * eps (SPEC section 2)",
            "mu_k + exp(log_var_k) * eps",
            "with exp(log_var) as the standard deviation the samples do not follow the prior's density "
            "(a bug; it affects only generated samples, not training). Not adopted"),
    # cell 26 (log_prob: log_standard_normal(z) + log_det_J.unsqueeze(1), B x L) and cell 29 (.sum(-1))
    Setting("flow prior log-determinant", "counted once per coupling",
            "added to each of the L per-dimension terms, so counted L times",
            "counting it L times leaves an unnormalised density for L >= 2 (the Jacobian of the flow "
            "enters once). Not adopted"),
    # cell 26 (torch.chunk(x, 2, 1), x.flip(1)) and cell 43 (nets: ..., LeakyReLU, Linear(M, L//2), Tanh; nett: LeakyReLU)
    Setting("flow prior", "3 RealNVP couplings, s = tanh(MLP), t = MLP, hidden 256-256 leaky ReLU, "
            "split first floor(L/2), reverse order", "the same (3 couplings, cell 43); chunk gives "
            "the first ceil(L/2) coordinates (equal for even L)", "same for the even L used here"),
    # cell 26 and 43: nn.Linear default initialisation of every layer of nets and nett
    Setting("flow prior initialisation", "identity: the last layer of every s- and t-net zero, so "
            "the prior starts as N(0, I)", "PyTorch's default for every layer",
            "zero last layers start training from the standard prior (as Glow); the companion's "
            "random start is implemented (FlowPrior init='random')", applied=True),
    # cell 39: num_components = 4**2 for mog/vamp; cell 22: means randn * multiplier, logvars randn
    Setting("MoG prior", "K = 16; means 0.1 N(0, 1), log-variances 0, logits 0",
            "K = 16; means N(0, 1) * multiplier with `multiplier` not defined in the notebook (the "
            "cell fails as published), log-variances N(0, 1), weights 0",
            "the companion's mean scale is undefined; starting near N(0, I) makes the initial prior "
            "the standard one. Not adopted"),
    # cell 18: self.w = nn.Parameter(torch.zeros(K, 1, 1)), softmax over K in log_prob
    Setting("VampPrior weights", "fixed uniform 1/K (the VampPrior paper and the text's formula)",
            "learned: softmax of K parameters initialised at 0",
            "implemented as VampPrior(learn_weights=True) with prior.logits (VJP derived and "
            "gradient-checked)", applied=True),
    # cell 18: u = torch.rand(K, D) * num_vals; num_vals = 17 (cell 43)
    Setting("VampPrior pseudo-inputs", "K = 16, initialised U(0, 16) (the data range)",
            "K = 16, initialised U(0, 17) (rand * num_vals)",
            "16 is the largest pixel value; the companion scales by the number of values", applied=True),
    # cell 18: the data= argument of VampPrior is not used (pseudo-inputs always random)
    Setting("data-initialised VampPrior", "init='data' uses K chosen training images",
            "the data-vampprior variants (cell 39) pass data= but VampPrior ignores it",
            "information only: the companion's variants are the uniform initialisation"),
    # cell 16 (grid by double loop, w zeros) and cell 43 (gtm_net: Linear(2, M), Tanh, Linear(M, M), Tanh, Linear(M, 2L); u in [-10, 10])
    Setting("GTM prior", "4 x 4 grid on [-10, 10]^2, MLP 2-256-256-2L with leaky ReLU, learned weights",
            "the same grid and weights; MLP with tanh",
            "refvae used the encoder's activation; tanh is implemented (profile gtm_activation)",
            applied=True),
    # cell 20 (h_gtm * num_vals) and cell 43 (gtm_net_vamp: ..., Tanh, Linear(M, D), Sigmoid)
    Setting("GTM-VampPrior", "MLP 2-256-256-64 with leaky ReLU, sigmoid output scaled to (0, 16)",
            "MLP with tanh, sigmoid output scaled by num_vals = 17",
            "as for GTM and the pseudo-inputs: implemented (gtm_activation, pseudo_input_range)",
            applied=True),
    # cell 45 (torch.optim.Adamax, lr from cell 39)
    Setting("optimiser", "Adamax, lr 1e-3, PyTorch's update rule", "Adamax, lr 1e-3", "same"),
    # cell 37 (DataLoader(train_data, batch_size=64, shuffle=True))
    Setting("minibatches", "64, reshuffled every epoch, last batch partial", "the same", "same"),
    # cell 39 (num_epochs = 1000)
    Setting("epoch cap", "100 (quick), 500 (full)", "1000",
            "the time budgets; the report says which runs stopped at the cap"),
    # cell 34 (patience counts epochs without improvement; break when patience > max_patience) and cell 39 (max_patience = 20)
    Setting("early stopping", "stop after 20 epochs without improvement of the validation loss",
            "stop after 21 (patience > 20); the first epoch is kept without comparison to the "
            "initial loss", "one epoch apart; apply() sets patience + 1", applied=True),
    # cell 32 (evaluation calls model.forward, which samples z with torch.randn_like, cell 12)
    Setting("validation noise", "one fixed draw for every validation loss",
            "fresh noise at every validation pass",
            "fixed noise makes the stopping criterion a deterministic function of the parameters; "
            "fresh noise is implemented (fit val_noise='redraw')", applied=True),
    # cells 32 and 49 (test loss = the one-sample negative ELBO, printed as "nll")
    Setting("test metric", "ln p(x) by importance sampling (S draws) and the ELBO, each with its "
            "uncertainty", "one-sample negative ELBO averaged over the test set (printed under "
            "the name of the negative log-likelihood)",
            "a negative ELBO is an upper bound on -ln p(x), not -ln p(x) itself; compare refvae's "
            "ELBO column with it"),
    # no seed is set anywhere in the notebook
    Setting("randomness", "explicit generators, seeds in the report", "global, unseeded",
            "replayable runs"),
)

#: the Profile fields that apply() sets, with the companion's values (patience: + 1)
_APPLIED_FIELDS = {"gtm_activation": "tanh", "vamp_learn_weights": True,
                   "pseudo_input_range": (0.0, 17.0), "flow_init": "random", "val_noise": "redraw"}


def apply(profile):
    """``profile`` with the companion code's choices that :data:`SETTINGS` marks ``applied``:
    ``gtm_activation="tanh"``, ``vamp_learn_weights=True``, ``pseudo_input_range=(0, num_vals)``,
    ``flow_init="random"``, ``val_noise="redraw"`` and ``patience + 1`` (the companion stops when
    its counter exceeds ``max_patience``). The name gets the suffix ``+companion``; everything else
    is unchanged; a profile already named ``...+companion`` is returned as it is.

    ``profile`` must be a :class:`refvae.tools.profiles.Profile` (``TypeError`` otherwise) whose
    class has these fields (a clear ``TypeError`` naming the missing field otherwise).
    """
    from .profiles import Profile, _check_profile
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a refvae.tools.profiles.Profile, got {type(profile).__name__}")
    _check_profile(profile)
    if profile.name.endswith("+companion"):
        return profile
    names = {f.name for f in dataclasses.fields(profile)}
    missing = [f for f in _APPLIED_FIELDS if f not in names]
    if missing:
        raise TypeError(f"the profile class {type(profile).__name__} has no field {missing[0]!r}: "
                        f"it cannot express the companion's settings (fields needed: "
                        f"{', '.join(_APPLIED_FIELDS)})")
    changes = dict(_APPLIED_FIELDS)
    changes["pseudo_input_range"] = (0.0, float(profile.num_vals))
    changes["patience"] = profile.patience + 1
    changes["name"] = profile.name + "+companion"
    changes["description"] = (profile.description + "; with the companion code's choices (refvae."
                              "tools.companion.SETTINGS, rows marked applied)")
    return dataclasses.replace(profile, **changes)
