r"""What a reader of a golden case must follow: the conventions copied into every manifest.

The general entries (parameters, layers, Gaussians, likelihoods, the ELBO, reductions, samples, the
NLL references) are written here; each prior's own formula is its class attribute ``formula``
(:class:`refvae.priors.base.Prior`), so a prior added with :func:`refvae.priors.register_prior`
brings its own.
"""

from __future__ import annotations

from ...priors import PRIORS

__all__ = ["CONVENTIONS"]

#: the general conventions up to the mixture density (every prior's formula follows them)
_HEAD = {
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
}

#: the general conventions after the priors' formulas
_TAIL = {
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


def _built_in(cls):
    """True for the priors that refvae ships (defined in the refvae.priors package)."""
    return cls.__module__.startswith("refvae.priors.")


def _formula(cls):
    """A prior's ``formula``, or the first line of its class docstring (for a prior from outside
    refvae that has none)."""
    if cls.formula is not None:
        return cls.formula
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else f"the {cls.name} prior (no formula given)"


#: what a reader of a case must follow (copied into every manifest): the general entries and the
#: formula of every prior refvae ships (in the order of the registry)
CONVENTIONS = {**_HEAD,
               **{cls.name: cls.formula for cls in PRIORS.values()
                  if _built_in(cls) and cls.formula is not None},
               **_TAIL}


def _case_conventions(prior_cls) -> dict:
    """The conventions of a case of the prior class ``prior_cls``: :data:`CONVENTIONS`, plus the
    prior's formula under its name when it is a prior from outside refvae."""
    if _built_in(prior_cls):
        return CONVENTIONS
    return {**CONVENTIONS, prior_cls.name: _formula(prior_cls)}
