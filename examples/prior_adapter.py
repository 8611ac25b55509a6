"""A prior-only adapter for ``refvae verify``: a mixture-of-Gaussians prior (and the standard one)
in PyTorch, float64, written from docs/SPEC.md section 4 (it never imports refvae).

A prior-only adapter has no ``run``: the harness gives it the golden z of each case and compares
``log_pz`` (and the ``prior.*`` intermediates it reports from ``prior_trace``) with the golden
values, its ``prior_sample_from`` with the golden prior sample, its gradient with refvae's, and
runs the normalisation, sampler and mixture checks::

    refvae verify --impl examples/prior_adapter.py:factory --case 'standard-*,mog-*'

Cases of priors it does not implement are reported as *not applicable* (``supports``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["MixturePrior", "factory"]

LN_2PI = math.log(2.0 * math.pi)


class MixturePrior:
    """p(z) = sum_k pi_k N(z | mu_k, diag exp(log_var_k)), pi = softmax(logits); N(0, I) for the
    standard prior (SPEC 4.1-4.2)."""

    name = "examples/prior_adapter.py (torch, float64)"

    def supports(self, config):
        """The cases this adapter can run: the standard and the mixture-of-Gaussians prior."""
        return config["prior"] in ("standard", "mog")

    # ------------------------------------------------------------------ the density
    @staticmethod
    def _components(config, P, L):
        if config["prior"] == "standard":
            zero = torch.zeros(1, L, dtype=torch.float64)
            return zero, zero, torch.zeros(1, dtype=torch.float64)
        return P["prior.means"], P["prior.log_vars"], torch.log_softmax(P["prior.logits"], dim=0)

    def _log_prob(self, config, P, z, trace):
        means, log_vars, log_w = self._components(config, P, z.shape[1])
        q = (z[:, None, :] - means[None]) ** 2 * torch.exp(-log_vars)[None]
        comp = -0.5 * (LN_2PI + log_vars[None] + q).sum(-1)              # (n, K)
        log_p = torch.logsumexp(log_w[None] + comp, dim=1)
        if config["prior"] == "mog":
            trace.update({"prior.means": means, "prior.log_vars": log_vars,
                          "prior.logits": P["prior.logits"], "prior.log_weights": log_w,
                          "prior.component_log_prob": comp})
        trace["prior.log_p"] = log_p
        return log_p

    @staticmethod
    def _params(params, requires_grad=False):
        return {k: torch.tensor(np.asarray(v, np.float64), requires_grad=requires_grad)
                for k, v in params.items() if k.startswith("prior.")}

    # ------------------------------------------------------------------ the prior-only protocol
    def prior_log_prob(self, config, params, z):
        with torch.no_grad():
            return self._log_prob(config, self._params(params), torch.tensor(z), {}).numpy()

    def prior_trace(self, config, params, z):
        trace = {}
        with torch.no_grad():
            self._log_prob(config, self._params(params), torch.tensor(z), trace)
        return {k: v.numpy() for k, v in trace.items()}

    def prior_log_prob_grad(self, config, params, z):
        """The gradient of sum_b log p(z_b) with respect to z and every prior parameter."""
        P = self._params(params, requires_grad=True)
        Z = torch.tensor(z, requires_grad=True)
        total = self._log_prob(config, P, Z, {}).sum()
        names = list(P)
        grads = torch.autograd.grad(total, [Z] + [P[k] for k in names])
        return {"z": grads[0].numpy(), **{k: g.numpy() for k, g in zip(names, grads[1:])}}

    def prior_sample_from(self, config, params, noise):
        """z = mu_index + exp(log_var_index / 2) * eps (the standard prior: z = eps)."""
        eps = torch.tensor(noise["eps"])
        if config["prior"] == "standard":
            return eps.numpy()
        with torch.no_grad():
            means, log_vars, _ = self._components(config, self._params(params), eps.shape[1])
            index = torch.as_tensor(np.asarray(noise["index"], np.int64))
            return (means[index] + torch.exp(0.5 * log_vars[index]) * eps).numpy()

    def prior_sample(self, config, params, n, seed):
        gen = torch.Generator().manual_seed(int(seed))
        noise = {"eps": torch.randn(n, config["latent_dim"], generator=gen, dtype=torch.float64).numpy()}
        if config["prior"] == "mog":
            probs = torch.softmax(torch.tensor(params["prior.logits"]), dim=0)
            noise["index"] = torch.multinomial(probs, n, replacement=True, generator=gen).numpy()
        return self.prior_sample_from(config, params, noise)


def factory():
    """``refvae verify --impl examples/prior_adapter.py:factory``."""
    return MixturePrior()
