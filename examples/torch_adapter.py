"""A PyTorch implementation of the whole refvae model (every prior, every likelihood), as an adapter
for ``refvae verify``.

It is written from docs/SPEC.md alone (it imports torch and numpy, never refvae), so it is a second
engine for the same mathematics. Run it against the golden cases::

    refvae verify --impl examples/torch_adapter.py:factory                      # float64
    refvae verify --impl examples/torch_adapter.py:factory32 --profile float32  # float32

The adapter protocol (docs/verify.md): ``factory()`` returns an object whose ``run(config, params,
x, eps)`` returns a dict of any subset of the quantities of a golden case, named as in its trace
(``"encoder.0.pre"``, ``"mu"``, ``"z"``, ``"log_px_z"``, ``"prior.log_p"``, ``"neg_elbo"``,
``"loss"``, ``"grad.<param>"``, ...). The optional methods ``prior_log_prob``, ``prior_sample``,
``prior_sample_from`` and ``nll`` enable the checks that need no golden value.

Every building block is a method, so a planted bug is a three-line subclass (tests/test_verify.py
does exactly that).

Which priors it covers: the six that refvae ships, listed in :data:`PRIOR_FAMILIES` (standard, mog,
vamp, gtm, gtm_vamp, flow), each implemented here in torch; a case of any other prior (one
registered in refvae from outside) is a ``ValueError`` naming the ones it knows. Activations:
:data:`ACTIVATIONS`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["ACTIVATIONS", "PRIOR_FAMILIES", "TorchVAE", "factory", "factory32"]

LN_2PI = math.log(2.0 * math.pi)

#: the activations this adapter implements (SPEC 3)
ACTIVATIONS = {"leaky_relu": lambda h: torch.nn.functional.leaky_relu(h, 0.01), "relu": torch.relu,
               "tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": torch.nn.functional.softplus}

#: the priors this adapter implements (SPEC 4): name -> family. A family has the methods
#: ``<family>_log_p`` and ``<family>_sample_from``; a mixture's components come from the method
#: ``<name>_components``.
PRIOR_FAMILIES = {"standard": "standard", "mog": "mixture", "vamp": "mixture", "gtm": "mixture",
                  "gtm_vamp": "mixture", "flow": "flow"}


class TorchVAE:
    """The VAE of SPEC.md in PyTorch, float64 or float32 (``dtype``)."""

    def __init__(self, dtype=torch.float64):
        self.dtype = dtype
        precision = str(dtype).replace("torch.", "")
        self.name = f"examples/torch_adapter.py (torch {torch.__version__}, {precision})"

    # ------------------------------------------------------------------ conversions
    def tensor(self, a, requires_grad=False):
        t = torch.tensor(np.asarray(a, dtype=np.float64), dtype=self.dtype)
        return t.requires_grad_(requires_grad)

    @staticmethod
    def numpy(t):
        return t.detach().to(torch.float64).numpy().copy()

    # ------------------------------------------------------------------ building blocks
    @staticmethod
    def activation(name, h):
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; this adapter implements {sorted(ACTIVATIONS)}")
        return ACTIVATIONS[name](h)

    def mlp(self, P, prefix, h, act, out_act=None, trace=None, name=None):
        """``<prefix>.<i>.W`` (in, out) and ``.b``; hidden layers use ``act``. Records
        ``<name>.<i>.pre`` / ``.out`` in ``trace`` (name defaults to prefix)."""
        name = prefix if name is None else name
        n = sum(1 for k in P if k.startswith(prefix + ".") and k.endswith(".W")
                and k[len(prefix) + 1:-2].isdigit())
        for i in range(n):
            h = h @ P[f"{prefix}.{i}.W"] + P[f"{prefix}.{i}.b"]   # W is (in, out): no transpose
            if trace is not None:
                trace[f"{name}.{i}.pre"] = h
            a = act if i < n - 1 else out_act
            if a is not None:
                h = self.activation(a, h)
                if trace is not None:
                    trace[f"{name}.{i}.out"] = h
        return h

    def encoder_input(self, x):
        """What the encoder reads from the data: x as given (SPEC 3: no rescaling)."""
        return x

    def encode(self, P, cfg, x, trace=None, name="encoder"):
        """(mu, log_var) of the encoder at x (data, or the VampPrior's pseudo-inputs)."""
        h = self.mlp(P, "encoder", x, cfg["activation"], trace=trace, name=name)
        L = cfg["latent_dim"]
        return h[:, :L], h[:, L:]

    @staticmethod
    def reparameterize(mu, log_var, eps):
        return mu + torch.exp(0.5 * log_var) * eps

    @staticmethod
    def log_normal(z, mu, log_var):
        """log N(z | mu, diag exp(log_var)), summed over the last axis, every constant included."""
        return -0.5 * (LN_2PI + log_var + (z - mu) ** 2 * torch.exp(-log_var)).sum(-1)

    def log_px_z(self, P, cfg, x, out):
        lik = cfg["likelihood"]
        B, D = x.shape
        if lik == "categorical":
            C = cfg["num_vals"]
            logp = torch.log_softmax(out.reshape(B, D, C), dim=-1)   # C-order reshape
            return logp.gather(-1, x.long()[..., None])[..., 0].sum(-1)
        if lik == "bernoulli":
            return (x * torch.nn.functional.logsigmoid(out)
                    + (1 - x) * torch.nn.functional.logsigmoid(-out)).sum(-1)
        return self.log_normal(x, out, P["decoder.log_var"])

    # ---- priors
    @staticmethod
    def log_weights(logits):
        return torch.log_softmax(logits, dim=-1)

    def mixture_log_prob(self, z, means, log_vars, log_w, trace=None):
        comp = self.log_normal(z[:, None, :], means[None], log_vars[None])       # (B, K)
        if trace is not None:
            trace["prior.component_log_prob"] = comp
        return torch.logsumexp(log_w + comp, dim=-1)

    def grid(self, kw):
        g = kw["grid_size"]
        a = torch.linspace(kw["u_min"], kw["u_max"], g, dtype=self.dtype)
        ui, uj = torch.meshgrid(a, a, indexing="ij")
        return torch.stack([ui.reshape(-1), uj.reshape(-1)], dim=1)

    @staticmethod
    def family(cfg):
        """The family of the case's prior (:data:`PRIOR_FAMILIES`; ``ValueError`` for another prior)."""
        if cfg["prior"] not in PRIOR_FAMILIES:
            raise ValueError(f"this adapter implements the priors {', '.join(PRIOR_FAMILIES)}, not "
                             f"{cfg['prior']!r}")
        return PRIOR_FAMILIES[cfg["prior"]]

    def mog_components(self, P, cfg, trace):
        return P["prior.means"], P["prior.log_vars"]

    def vamp_components(self, P, cfg, trace):
        u = P["prior.pseudo_inputs"]
        trace["prior.pseudo_inputs"] = u
        return self.encode(P, cfg, u, trace, name="prior.encoder")

    def gtm_components(self, P, cfg, trace):
        kw, L = cfg["prior_kwargs"], cfg["latent_dim"]
        grid = self.grid(kw)
        trace["prior.grid"] = grid
        h = self.mlp(P, "prior.gtm", grid, kw["activation"], trace=trace)
        return h[:, :L], h[:, L:]

    def gtm_vamp_components(self, P, cfg, trace):
        kw = cfg["prior_kwargs"]
        grid = self.grid(kw)
        trace["prior.grid"] = grid
        s = self.mlp(P, "prior.gtm", grid, kw["activation"], out_act="sigmoid", trace=trace)
        lo, hi = kw["data_range"]
        u = lo + (hi - lo) * s
        trace["prior.pseudo_inputs"] = u
        return self.encode(P, cfg, u, trace, name="prior.encoder")

    def uniform_log_weights(self, K):
        """log(1/K) for each of K equally weighted components (computed in float64)."""
        return torch.full((K,), -math.log(K), dtype=self.dtype)

    def mixture_components(self, P, cfg, trace):
        """(means, log_vars, log_weights) of a mixture prior, recording the prior's trace."""
        if self.family(cfg) != "mixture":
            raise ValueError(f"{cfg['prior']!r} is not a mixture prior")
        means, log_vars = getattr(self, f"{cfg['prior']}_components")(P, cfg, trace)
        logits = P.get("prior.logits")
        K = means.shape[0]
        if logits is not None:
            log_w = self.log_weights(logits)
        else:
            log_w = self.uniform_log_weights(K)
        trace["prior.means"], trace["prior.log_vars"] = means, log_vars
        if logits is not None:
            trace["prior.logits"] = logits
        trace["prior.log_weights"] = log_w
        return means, log_vars, log_w

    @staticmethod
    def coupling_log_det(s, latent_dim):
        """log |det| of one affine coupling: -sum_j s_j (once per coupling, whatever L is)."""
        return -s.sum(-1)

    def coupling(self, P, kw, k, z, trace):
        La = z.shape[1] // 2
        z_a, z_b = z[:, :La], z[:, La:]
        s = torch.tanh(self.mlp(P, f"prior.flow.{k}.s", z_a, kw["activation"], trace=trace))
        trace[f"prior.flow.{k}.s"] = s
        t = self.mlp(P, f"prior.flow.{k}.t", z_a, kw["activation"], trace=trace)
        trace[f"prior.flow.{k}.t"] = t
        y_b = (z_b - t) * torch.exp(-s)
        out = torch.flip(torch.cat([z_a, y_b], dim=1), dims=[1])
        log_det = self.coupling_log_det(s, z.shape[1])
        trace[f"prior.flow.{k}.out"], trace[f"prior.flow.{k}.log_det"] = out, log_det
        return out, log_det

    def coupling_inverse(self, P, kw, k, out):
        y = torch.flip(out, dims=[1])
        La = y.shape[1] // 2
        z_a, y_b = y[:, :La], y[:, La:]
        s = torch.tanh(self.mlp(P, f"prior.flow.{k}.s", z_a, kw["activation"]))
        t = self.mlp(P, f"prior.flow.{k}.t", z_a, kw["activation"])
        return torch.cat([z_a, y_b * torch.exp(s) + t], dim=1)

    def standard_log_p(self, P, cfg, z, trace):
        return self.log_normal(z, torch.zeros_like(z), torch.zeros_like(z))

    def flow_log_p(self, P, cfg, z, trace):
        kw = cfg["prior_kwargs"]
        h, log_det = z, 0.0
        for k in range(kw["num_couplings"]):
            h, ld = self.coupling(P, kw, k, h, trace)
            log_det = log_det + ld
        base = self.log_normal(h, torch.zeros_like(h), torch.zeros_like(h))
        trace["prior.flow.base_log_prob"] = base
        return base + log_det

    def mixture_log_p(self, P, cfg, z, trace):
        means, log_vars, log_w = self.mixture_components(P, cfg, trace)
        return self.mixture_log_prob(z, means, log_vars, log_w, trace)

    def prior_log_p(self, P, cfg, z, trace):
        log_p = getattr(self, f"{self.family(cfg)}_log_p")(P, cfg, z, trace)
        trace["prior.log_p"] = log_p
        return log_p

    @staticmethod
    def analytic_kl(mu, log_var):
        """KL[N(mu, diag exp(log_var)) || N(0, I)] per row, the closed form of ``kl="analytic"``
        (standard prior only; SPEC 2)."""
        return 0.5 * (torch.expm1(log_var) - log_var + mu * mu).sum(-1)

    @staticmethod
    def reduce(per_example):
        """The training loss: the batch mean of neg_elbo (SPEC 5)."""
        return per_example.mean()

    def sample_mixture(self, means, log_vars, log_w, index, eps):
        return means[index] + torch.exp(0.5 * log_vars[index]) * eps

    # ------------------------------------------------------------------ the whole model
    def forward(self, P, cfg, x, eps):
        trace = {}
        mu, log_var = self.encode(P, cfg, self.encoder_input(x), trace)
        z = self.reparameterize(mu, log_var, eps)
        trace.update({"mu": mu, "log_var": log_var, "eps": eps, "z": z})
        out = self.mlp(P, "decoder", z, cfg["activation"], trace=trace)
        log_px_z = self.log_px_z(P, cfg, x, out)
        log_pz = self.prior_log_p(P, cfg, z, trace)
        log_qz_x = self.log_normal(z, mu, log_var)
        kl = self.analytic_kl(mu, log_var) if cfg.get("kl", "mc") == "analytic" else log_qz_x - log_pz
        neg_elbo = -(log_px_z - kl)
        trace.update({"log_px_z": log_px_z, "log_pz": log_pz, "log_qz_x": log_qz_x, "kl": kl,
                      "neg_elbo": neg_elbo})
        return trace

    def params(self, params, requires_grad=False):
        return {k: self.tensor(v, requires_grad) for k, v in params.items()}

    # ------------------------------------------------------------------ the adapter protocol
    def run(self, config, params, x, eps):
        """Every intermediate, the loss and its gradient w.r.t. every parameter."""
        P = self.params(params, requires_grad=True)
        trace = self.forward(P, config, self.tensor(x), self.tensor(eps))
        loss = self.reduce(trace["neg_elbo"])
        names = list(P)
        grads = torch.autograd.grad(loss, [P[k] for k in names], allow_unused=True)
        out = {k: self.numpy(v) for k, v in trace.items()}
        out["loss"] = self.numpy(loss)
        for k, g in zip(names, grads):
            out[f"grad.{k}"] = np.zeros(np.shape(params[k])) if g is None else self.numpy(g)
        return out

    def prior_log_prob(self, config, params, z):
        with torch.no_grad():
            return self.numpy(self.prior_log_p(self.params(params), config, self.tensor(z), {}))

    def standard_sample_from(self, P, cfg, noise, eps):
        return eps

    def flow_sample_from(self, P, cfg, noise, eps):
        kw = cfg["prior_kwargs"]
        h = eps
        for k in range(kw["num_couplings"] - 1, -1, -1):
            h = self.coupling_inverse(P, kw, k, h)
        return h

    def mixture_sample_from(self, P, cfg, noise, eps):
        means, log_vars, log_w = self.mixture_components(P, cfg, {})
        index = torch.as_tensor(np.asarray(noise["index"], dtype=np.int64))
        return self.sample_mixture(means, log_vars, log_w, index, eps)

    def prior_sample_from(self, config, params, noise):
        """The prior sample made from given noise: ``eps`` (n, L) and, for mixtures, ``index``."""
        with torch.no_grad():
            P, eps = self.params(params), self.tensor(noise["eps"])
            return self.numpy(getattr(self, f"{self.family(config)}_sample_from")(P, config, noise, eps))

    def prior_sample(self, config, params, n, seed):
        gen = torch.Generator().manual_seed(int(seed))
        L = config["latent_dim"]
        noise = {"eps": torch.randn(n, L, generator=gen, dtype=torch.float64).numpy()}
        if self.family(config) == "mixture":
            with torch.no_grad():
                _, _, log_w = self.mixture_components(self.params(params), config, {})
            probs = torch.exp(log_w.to(torch.float64))
            noise["index"] = torch.multinomial(probs, n, replacement=True, generator=gen).numpy()
        return self.prior_sample_from(config, params, noise)

    def nll(self, config, params, x, seed, n_samples=20000):
        """-ln p(x) per example by importance sampling with q(z|x) as the proposal."""
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            P, X = self.params(params), self.tensor(x)
            mu, log_var = self.encode(P, config, self.encoder_input(X))
            out = []
            for b in range(X.shape[0]):
                eps = torch.randn(n_samples, mu.shape[1], generator=gen, dtype=torch.float64).to(self.dtype)
                z = self.reparameterize(mu[b], log_var[b], eps)
                xb = X[b:b + 1].expand(n_samples, -1)
                dec = self.mlp(P, "decoder", z, config["activation"])
                lw = (self.log_px_z(P, config, xb, dec) + self.prior_log_p(P, config, z, {})
                      - self.log_normal(z, mu[b], log_var[b]))
                out.append(-(torch.logsumexp(lw.to(torch.float64), 0) - math.log(n_samples)))
            return np.array([float(v) for v in out])


def factory():
    """The float64 adapter (``refvae verify --impl examples/torch_adapter.py:factory``)."""
    return TorchVAE(torch.float64)


def factory32():
    """The float32 adapter (``--impl examples/torch_adapter.py:factory32 --profile float32``)."""
    return TorchVAE(torch.float32)
