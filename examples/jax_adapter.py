"""A JAX implementation of the whole refvae model (every prior, every likelihood), float64, as an
adapter for ``refvae verify``.

Written from docs/SPEC.md with plain ``jax.numpy`` (no flax, no refvae import); float64 through
``jax.config.update("jax_enable_x64", True)``, set when this module is imported. Gradients come
from ``jax.value_and_grad`` of the loss, which also returns the trace (``has_aux``). Nothing is
``jax.jit``-compiled: jitting the whole step compiles once per case configuration (measured ~5 s
a case here), while op-by-op execution compiles each primitive once per shape and reuses it
across cases, so a run over many small cases is faster without it::

    pip install "jax[cpu]==0.10.2"
    refvae verify --impl examples/jax_adapter.py:factory

The adapter protocol (docs/verify.md): ``factory()`` returns an object whose ``run(config, params,
x, eps)`` returns the quantities of a golden case under their trace names; ``prior_log_prob``,
``prior_sample``, ``prior_sample_from`` and ``nll`` enable the checks that need no golden value.
Every building block is a method, so a planted bug is a three-line subclass
(tests/test_jax_adapter.py does exactly that). Priors: :data:`PRIOR_FAMILIES`.
"""

from __future__ import annotations

import math

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402 - after enabling float64
import numpy as np  # noqa: E402

__all__ = ["ACTIVATIONS", "PRIOR_FAMILIES", "JaxVAE", "factory"]

LN_2PI = math.log(2.0 * math.pi)

#: the activations this adapter implements (SPEC 3)
ACTIVATIONS = {"leaky_relu": lambda h: jax.nn.leaky_relu(h, negative_slope=0.01), "relu": jax.nn.relu,
               "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "softplus": jax.nn.softplus}

#: the priors this adapter implements (SPEC 4): name -> family (methods ``<family>_log_p`` and
#: ``<family>_sample_from``; a mixture's components come from ``<name>_components``)
PRIOR_FAMILIES = {"standard": "standard", "mog": "mixture", "vamp": "mixture", "gtm": "mixture",
                  "gtm_vamp": "mixture", "flow": "flow"}


class JaxVAE:
    """The VAE of SPEC.md in JAX (float64)."""

    def __init__(self):
        self.name = f"examples/jax_adapter.py (jax {jax.__version__}, float64)"

    # ------------------------------------------------------------------ conversions
    @staticmethod
    def array(a):
        return jnp.asarray(np.asarray(a, dtype=np.float64))

    @staticmethod
    def numpy(a):
        return np.array(a, dtype=np.float64)

    def params(self, params):
        return {k: self.array(v) for k, v in params.items()}

    # ------------------------------------------------------------------ building blocks
    @staticmethod
    def activation(name, h):
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; this adapter implements {sorted(ACTIVATIONS)}")
        return ACTIVATIONS[name](h)

    def mlp(self, P, prefix, h, act, out_act=None, trace=None, name=None):
        """``<prefix>.<i>.W`` (in, out) and ``.b``; records ``<name>.<i>.pre`` / ``.out``."""
        name = prefix if name is None else name
        n = sum(1 for k in P if k.startswith(prefix + ".") and k.endswith(".W")
                and k[len(prefix) + 1:-2].isdigit())
        for i in range(n):
            h = h @ P[f"{prefix}.{i}.W"] + P[f"{prefix}.{i}.b"]     # W is (in, out)
            if trace is not None:
                trace[f"{name}.{i}.pre"] = h
            a = act if i < n - 1 else out_act
            if a is not None:
                h = self.activation(a, h)
                if trace is not None:
                    trace[f"{name}.{i}.out"] = h
        return h

    def encoder_input(self, x):
        return x

    def encode(self, P, cfg, x, trace=None, name="encoder"):
        h = self.mlp(P, "encoder", x, cfg["activation"], trace=trace, name=name)
        L = cfg["latent_dim"]
        return h[:, :L], h[:, L:]

    @staticmethod
    def reparameterize(mu, log_var, eps):
        return mu + jnp.exp(0.5 * log_var) * eps

    @staticmethod
    def log_normal(z, mu, log_var):
        """log N(z | mu, diag exp(log_var)), summed over the last axis, every constant included."""
        return -0.5 * (LN_2PI + log_var + (z - mu) ** 2 * jnp.exp(-log_var)).sum(-1)

    def log_px_z(self, P, cfg, x, out):
        lik = cfg["likelihood"]
        B, D = x.shape
        if lik == "categorical":
            C = cfg["num_vals"]
            logp = jax.nn.log_softmax(out.reshape(B, D, C), axis=-1)    # C-order reshape
            idx = x.astype(jnp.int32)[..., None]
            return jnp.take_along_axis(logp, idx, axis=-1)[..., 0].sum(-1)
        if lik == "bernoulli":
            return (x * jax.nn.log_sigmoid(out) + (1 - x) * jax.nn.log_sigmoid(-out)).sum(-1)
        return self.log_normal(x, out, P["decoder.log_var"])

    # ---- priors
    @staticmethod
    def log_weights(logits):
        return jax.nn.log_softmax(logits, axis=-1)

    def mixture_log_prob(self, z, means, log_vars, log_w, trace=None):
        comp = self.log_normal(z[:, None, :], means[None], log_vars[None])        # (B, K)
        if trace is not None:
            trace["prior.component_log_prob"] = comp
        return jax.scipy.special.logsumexp(log_w + comp, axis=-1)

    def grid(self, kw):
        a = jnp.linspace(kw["u_min"], kw["u_max"], kw["grid_size"])
        ui, uj = jnp.meshgrid(a, a, indexing="ij")
        return jnp.stack([ui.reshape(-1), uj.reshape(-1)], axis=1)

    @staticmethod
    def family(cfg):
        if cfg["prior"] not in PRIOR_FAMILIES:
            raise ValueError(f"this adapter implements the priors {', '.join(PRIOR_FAMILIES)}, not "
                             f"{cfg['prior']!r}")
        return PRIOR_FAMILIES[cfg["prior"]]

    def supports(self, config):
        """The cases of the priors this adapter implements; others are 'not applicable'."""
        return config["prior"] in PRIOR_FAMILIES

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

    def mixture_components(self, P, cfg, trace):
        means, log_vars = getattr(self, f"{cfg['prior']}_components")(P, cfg, trace)
        logits = P.get("prior.logits")
        K = means.shape[0]
        log_w = self.log_weights(logits) if logits is not None else jnp.full((K,), -math.log(K))
        trace["prior.means"], trace["prior.log_vars"] = means, log_vars
        if logits is not None:
            trace["prior.logits"] = logits
        trace["prior.log_weights"] = log_w
        return means, log_vars, log_w

    @staticmethod
    def coupling_log_det(s, latent_dim):
        """log |det| of one affine coupling: -sum_j s_j (once per coupling)."""
        return -s.sum(-1)

    def coupling(self, P, kw, k, z, trace):
        La = z.shape[1] // 2
        z_a, z_b = z[:, :La], z[:, La:]
        s = jnp.tanh(self.mlp(P, f"prior.flow.{k}.s", z_a, kw["activation"], trace=trace))
        trace[f"prior.flow.{k}.s"] = s
        t = self.mlp(P, f"prior.flow.{k}.t", z_a, kw["activation"], trace=trace)
        trace[f"prior.flow.{k}.t"] = t
        out = jnp.flip(jnp.concatenate([z_a, (z_b - t) * jnp.exp(-s)], axis=1), axis=1)
        log_det = self.coupling_log_det(s, z.shape[1])
        trace[f"prior.flow.{k}.out"], trace[f"prior.flow.{k}.log_det"] = out, log_det
        return out, log_det

    def coupling_inverse(self, P, kw, k, out):
        y = jnp.flip(out, axis=1)
        La = y.shape[1] // 2
        z_a, y_b = y[:, :La], y[:, La:]
        s = jnp.tanh(self.mlp(P, f"prior.flow.{k}.s", z_a, kw["activation"]))
        t = self.mlp(P, f"prior.flow.{k}.t", z_a, kw["activation"])
        return jnp.concatenate([z_a, y_b * jnp.exp(s) + t], axis=1)

    def standard_log_p(self, P, cfg, z, trace):
        return self.log_normal(z, jnp.zeros_like(z), jnp.zeros_like(z))

    def flow_log_p(self, P, cfg, z, trace):
        kw = cfg["prior_kwargs"]
        h, log_det = z, 0.0
        for k in range(kw["num_couplings"]):
            h, ld = self.coupling(P, kw, k, h, trace)
            log_det = log_det + ld
        base = self.log_normal(h, jnp.zeros_like(h), jnp.zeros_like(h))
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
    def kl(cfg, mu, log_var, log_qz_x, log_pz):
        """The KL term: ``log q - log p`` at z (``kl: "mc"``), or in closed form against N(0, I)
        (``kl: "analytic"``, the standard prior only): 1/2 sum(mu^2 + exp(log_var) - 1 - log_var)."""
        if cfg.get("kl", "mc") == "analytic":
            return 0.5 * (mu ** 2 + jnp.exp(log_var) - 1.0 - log_var).sum(-1)
        return log_qz_x - log_pz

    @staticmethod
    def reduce(per_example):
        """The training loss: the batch mean of neg_elbo (SPEC 5)."""
        return per_example.mean()

    def sample_mixture(self, means, log_vars, log_w, index, eps):
        return means[index] + jnp.exp(0.5 * log_vars[index]) * eps

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
        kl = self.kl(cfg, mu, log_var, log_qz_x, log_pz)
        trace.update({"log_px_z": log_px_z, "log_pz": log_pz, "log_qz_x": log_qz_x, "kl": kl,
                      "neg_elbo": -(log_px_z - kl)})
        return trace

    # ------------------------------------------------------------------ the adapter protocol
    def run(self, config, params, x, eps):
        """Every intermediate, the loss and its gradient w.r.t. every parameter."""
        X, E = self.array(x), self.array(eps)

        def loss_fn(P):
            trace = self.forward(P, config, X, E)
            return self.reduce(trace["neg_elbo"]), trace

        (loss, trace), grads = jax.value_and_grad(loss_fn, has_aux=True)(self.params(params))
        out = {k: self.numpy(v) for k, v in trace.items()}
        out["loss"] = self.numpy(loss)
        out.update({f"grad.{k}": self.numpy(g) for k, g in grads.items()})
        return out

    def prior_log_prob(self, config, params, z):
        return self.numpy(self.prior_log_p(self.params(params), config, self.array(z), {}))

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
        index = jnp.asarray(np.asarray(noise["index"], dtype=np.int64))
        return self.sample_mixture(means, log_vars, log_w, index, eps)

    def prior_sample_from(self, config, params, noise):
        """The prior sample made from given noise: ``eps`` (n, L) and, for mixtures, ``index``."""
        P, eps = self.params(params), self.array(noise["eps"])
        return self.numpy(getattr(self, f"{self.family(config)}_sample_from")(P, config, noise, eps))

    def prior_sample(self, config, params, n, seed):
        k_eps, k_index = jax.random.split(jax.random.PRNGKey(int(seed)))
        noise = {"eps": np.asarray(jax.random.normal(k_eps, (n, config["latent_dim"]), dtype=jnp.float64))}
        if self.family(config) == "mixture":
            _, _, log_w = self.mixture_components(self.params(params), config, {})
            noise["index"] = np.asarray(jax.random.categorical(k_index, log_w, shape=(n,)))
        return self.prior_sample_from(config, params, noise)

    def nll(self, config, params, x, seed, n_samples=20000):
        """-ln p(x) per example by importance sampling with q(z|x) as the proposal."""
        P, X = self.params(params), self.array(x)
        mu, log_var = self.encode(P, config, self.encoder_input(X))
        keys = jax.random.split(jax.random.PRNGKey(int(seed)), X.shape[0])
        out = []
        for b in range(X.shape[0]):
            eps = jax.random.normal(keys[b], (n_samples, mu.shape[1]), dtype=jnp.float64)
            z = self.reparameterize(mu[b], log_var[b], eps)
            xb = jnp.broadcast_to(X[b:b + 1], (n_samples, X.shape[1]))
            dec = self.mlp(P, "decoder", z, config["activation"])
            lw = (self.log_px_z(P, config, xb, dec) + self.prior_log_p(P, config, z, {})
                  - self.log_normal(z, mu[b], log_var[b]))
            out.append(-(jax.scipy.special.logsumexp(lw) - math.log(n_samples)))
        return np.array([float(v) for v in out])


def factory():
    """The float64 adapter (``refvae verify --impl examples/jax_adapter.py:factory``)."""
    return JaxVAE()
