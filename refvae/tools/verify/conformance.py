r"""A conformance report of real libraries: their priors, mixtures, samplers and whole VAEs through
refvae's checks, one row per library x subject x check (issue 16, part 2).

Run it with ``python -m refvae.tools.verify.conformance --out validation/conformance`` (writes
``conformance.md`` and ``conformance.json``; ``--libraries torch,pyro`` for a subset). Each
*subject* is a piece of library code written as a user of that library would write it, kept here
as source text (:data:`SUBJECTS`), executed for the report and pasted into every reproduction, so a
failing row's snippet can go into an upstream bug report as it stands:

- ``torch``: ``Independent(Normal)`` (standard prior), ``MixtureSameFamily`` (mixture of Gaussians),
  ``TransformedDistribution`` with refvae's affine coupling as a ``Transform`` (flow prior);
- ``pyro``: ``Normal(...).to_event(1)``, ``MixtureOfDiagNormals`` (its own density and gradient);
- ``numpyro`` (JAX, float64 via ``jax_enable_x64``): ``Normal(...).to_event(1)``,
  ``MixtureSameFamily``;
- ``pythae`` 0.1.2: its ``VAE`` (standard prior, analytic KL) and ``VAMP`` (VampPrior), whole
  models with an MLP encoder/decoder, run without editing the library: the golden draws go in by
  patching ``torch.randn_like``, per-example values come from one forward per example, the VAMP
  samples are captured by a forward pre-hook on the decoder.

Checks per subject: for priors the golden ``prior.log_p`` at the case's z and, where the library
can be handed the noise, the golden ``prior_sample.z``; the normalisation, sampler and mixture
checks (:mod:`~refvae.tools.verify.density`, :mod:`~refvae.tools.verify.checks`); for mixtures the
adversarial inputs (:mod:`~refvae.tools.verify.adversarial`); for whole models every check of
:func:`refvae.tools.verify.run`. A library that cannot be imported is listed with the reason.
Versions are recorded per row; the versions tried are :data:`PINS`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time

import numpy as np

from .adversarial import check_adversarial

__all__ = ["PINS", "SUBJECTS", "run_conformance", "format_markdown", "main"]

#: the versions the committed report was made with (pip install pins)
PINS = {"torch": "2.13.0", "pyro-ppl": "1.9.2", "numpyro": "0.22.0", "jax": "0.10.2", "pythae": "0.1.2",
        "pydantic": "2.14.3"}

SCHEMA = "refvae-conformance-report/1"

# --------------------------------------------------------------------------- library sources
# Each source defines factory() -> adapter (prior-only: prior_log_prob / prior_sample /
# prior_sample_from; or a whole model: run / nll / ...) and, for mixtures, log_prob(z, means,
# log_vars, log_weights) and log_prob_grad(...) for the adversarial inputs. numpy and the library
# only: no refvae.

_TORCH_COMMON = '''
import math
import numpy as np
import torch

def T(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64))

def N(t):
    return t.detach().numpy().copy()
'''

#: refvae's MLP (W is (in, out), leaky ReLU 0.01 between layers) for the flow subjects
_TORCH_MLP = '''
def mlp(P, prefix, h):
    n = sum(1 for k in P if k.startswith(prefix + ".") and k.endswith(".W"))
    for i in range(n):
        h = h @ P[f"{prefix}.{i}.W"] + P[f"{prefix}.{i}.b"]
        if i < n - 1:
            h = torch.nn.functional.leaky_relu(h, 0.01)
    return h
'''

TORCH_STANDARD = _TORCH_COMMON + '''
from torch.distributions import Independent, Normal

class Prior:
    """N(0, I) as torch.distributions.Independent(Normal(0, 1), 1)."""
    def dist(self, config):
        L = config["latent_dim"]
        return Independent(Normal(torch.zeros(L, dtype=torch.float64), torch.ones(L, dtype=torch.float64)), 1)
    def prior_log_prob(self, config, params, z):
        return N(self.dist(config).log_prob(T(z)))
    def prior_sample(self, config, params, n, seed):
        torch.manual_seed(seed)
        return N(self.dist(config).sample((n,)))
    def prior_log_prob_grad(self, config, params, z):
        Z = T(z).requires_grad_(True)
        return {"z": N(torch.autograd.grad(self.dist(config).log_prob(Z).sum(), Z)[0])}

def factory():
    return Prior()
'''

# the prior-only adapter and the adversarial functions of a torch-based mixture, given the library's
# mixture(means, log_vars, logits) and set_seed(seed) (torch.distributions and pyro share it)
_TORCH_MIXTURE_ADAPTER = '''
class Prior:
    def dist(self, params):
        K = params["prior.means"].shape[0]
        logits = params.get("prior.logits", np.zeros(K))
        return mixture(T(params["prior.means"]), T(params["prior.log_vars"]), T(logits))
    def prior_log_prob(self, config, params, z):
        return N(self.dist(params).log_prob(T(z)))
    def prior_sample(self, config, params, n, seed):
        set_seed(seed)
        return N(self.dist(params).sample((n,)))
    def prior_log_prob_grad(self, config, params, z):
        K = params["prior.means"].shape[0]
        t = [T(a).requires_grad_(True) for a in (z, params["prior.means"], params["prior.log_vars"],
                                                   params.get("prior.logits", np.zeros(K)))]
        g = torch.autograd.grad(mixture(t[1], t[2], t[3]).log_prob(t[0]).sum(), t)
        return {"z": N(g[0]), **{k: N(v) for k, v in zip(("prior.means", "prior.log_vars", "prior.logits"), g[1:])
                                 if k in params}}

def factory():
    return Prior()

def _graph(z, means, log_vars, log_weights):
    t = [T(a).requires_grad_(True) for a in (z, means, log_vars, log_weights)]
    return t, mixture(t[1], t[2], t[3]).log_prob(t[0])

def log_prob(z, means, log_vars, log_weights):
    return N(_graph(z, means, log_vars, log_weights)[1])

def log_prob_grad(z, means, log_vars, log_weights):
    t, f = _graph(z, means, log_vars, log_weights)
    g = torch.autograd.grad(f.sum(), t)
    return dict(zip(("z", "means", "log_vars", "logits"), (N(v) for v in g)))
'''

TORCH_MIXTURE = _TORCH_COMMON + '''
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

def mixture(means, log_vars, logits):
    """refvae's mixture: weights softmax(logits), component k = N(means[k], diag exp(log_vars[k]))."""
    return MixtureSameFamily(Categorical(logits=logits), Independent(Normal(means, torch.exp(0.5 * log_vars)), 1))

def set_seed(seed):
    torch.manual_seed(seed)
''' + _TORCH_MIXTURE_ADAPTER

TORCH_FLOW = _TORCH_COMMON + _TORCH_MLP + '''
from torch.distributions import Independent, Normal, TransformedDistribution, constraints
from torch.distributions.transforms import Transform

class InverseCoupling(Transform):
    """refvae's coupling k (z -> out: y_b = (z_b - t) exp(-s), s = tanh(MLP_s(z_a)), then the halves
    reversed) as a torch Transform in the sampling direction out -> z."""
    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, P, k):
        super().__init__(cache_size=0)
        self.P, self.k = P, k

    def _st(self, z_a):
        return torch.tanh(mlp(self.P, f"prior.flow.{self.k}.s", z_a)), mlp(self.P, f"prior.flow.{self.k}.t", z_a)

    def _call(self, out):                         # out -> z
        y = torch.flip(out, dims=[-1])
        La = y.shape[-1] // 2
        s, t = self._st(y[..., :La])
        return torch.cat([y[..., :La], y[..., La:] * torch.exp(s) + t], dim=-1)

    def _inverse(self, z):                        # z -> out
        La = z.shape[-1] // 2
        s, t = self._st(z[..., :La])
        return torch.flip(torch.cat([z[..., :La], (z[..., La:] - t) * torch.exp(-s)], dim=-1), dims=[-1])

    def log_abs_det_jacobian(self, out, z):       # log |dz/dout| = +sum s
        La = z.shape[-1] // 2
        return self._st(z[..., :La])[0].sum(-1)

class Prior:
    def dist(self, config, params):
        P = {k: T(v) for k, v in params.items() if k.startswith("prior.flow.")}
        L, K = config["latent_dim"], config["prior_kwargs"]["num_couplings"]
        base = Independent(Normal(torch.zeros(L, dtype=torch.float64), torch.ones(L, dtype=torch.float64)), 1)
        return TransformedDistribution(base, [InverseCoupling(P, k) for k in reversed(range(K))])
    def prior_log_prob(self, config, params, z):
        with torch.no_grad():
            return N(self.dist(config, params).log_prob(T(z)))
    def prior_sample(self, config, params, n, seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return N(self.dist(config, params).sample((n,)))
    def prior_log_prob_grad(self, config, params, z):
        d = self.dist(config, params)
        P = {k: v.requires_grad_(True) for k, v in d.transforms[0].P.items()}
        Z = T(z).requires_grad_(True)
        g = torch.autograd.grad(d.log_prob(Z).sum(), [Z, *P.values()])
        return {"z": N(g[0]), **{k: N(v) for k, v in zip(P, g[1:])}}
    def prior_sample_from(self, config, params, noise):
        x = T(noise["eps"])                      # what TransformedDistribution.rsample does after the base draw
        with torch.no_grad():
            for t in self.dist(config, params).transforms:
                x = t(x)
        return N(x)

def factory():
    return Prior()
'''

PYRO_STANDARD = _TORCH_COMMON + '''
import pyro
import pyro.distributions as dist

class Prior:
    def prior_log_prob(self, config, params, z):
        L = config["latent_dim"]
        return N(dist.Normal(torch.zeros(L, dtype=torch.float64), 1.0).to_event(1).log_prob(T(z)))
    def prior_sample(self, config, params, n, seed):
        pyro.set_rng_seed(seed)
        L = config["latent_dim"]
        return N(dist.Normal(torch.zeros(L, dtype=torch.float64), 1.0).to_event(1).sample((n,)))
    def prior_log_prob_grad(self, config, params, z):
        Z = T(z).requires_grad_(True)
        f = dist.Normal(torch.zeros(config["latent_dim"], dtype=torch.float64), 1.0).to_event(1).log_prob(Z)
        return {"z": N(torch.autograd.grad(f.sum(), Z)[0])}

def factory():
    return Prior()
'''

PYRO_MIXTURE = _TORCH_COMMON + '''
import pyro
import pyro.distributions as dist

def mixture(means, log_vars, logits):
    return dist.MixtureOfDiagNormals(locs=means, coord_scale=torch.exp(0.5 * log_vars), component_logits=logits)

def set_seed(seed):
    pyro.set_rng_seed(seed)
''' + _TORCH_MIXTURE_ADAPTER

PYRO_FLOW = _TORCH_COMMON + _TORCH_MLP + '''
import pyro
import pyro.distributions as dist
from pyro.distributions.transforms import AffineCoupling, Permute

class HyperNet(torch.nn.Module):
    """refvae's coupling k as pyro's AffineCoupling hypernet: (mean, log_scale) = (MLP_t, tanh(MLP_s))."""
    def __init__(self, P, k):
        super().__init__()
        self.P, self.k = P, k
    def forward(self, z_a):
        return mlp(self.P, f"prior.flow.{self.k}.t", z_a), torch.tanh(mlp(self.P, f"prior.flow.{self.k}.s", z_a))

class Prior:
    """Sampling direction: per coupling, from the last to the first, reverse the halves (Permute), then
    z_b = y_b exp(s(y_a)) + t(y_a) (AffineCoupling; tanh keeps s inside pyro's clip [-5, 3])."""
    def dist(self, config, params):
        P = {k: T(v) for k, v in params.items() if k.startswith("prior.flow.")}
        L, K = config["latent_dim"], config["prior_kwargs"]["num_couplings"]
        transforms = []
        for k in reversed(range(K)):
            transforms += [Permute(torch.arange(L - 1, -1, -1)), AffineCoupling(L // 2, HyperNet(P, k))]
        base = dist.Normal(torch.zeros(L, dtype=torch.float64), 1.0).to_event(1)
        return dist.TransformedDistribution(base, transforms), P
    def prior_log_prob(self, config, params, z):
        with torch.no_grad():
            return N(self.dist(config, params)[0].log_prob(T(z)))
    def prior_sample(self, config, params, n, seed):
        pyro.set_rng_seed(seed)
        with torch.no_grad():
            return N(self.dist(config, params)[0].sample((n,)))
    def prior_sample_from(self, config, params, noise):
        x = T(noise["eps"])
        with torch.no_grad():
            for t in self.dist(config, params)[0].transforms:
                x = t(x)
        return N(x)
    def prior_log_prob_grad(self, config, params, z):
        d, P = self.dist(config, params)
        for v in P.values():
            v.requires_grad_(True)
        Z = T(z).requires_grad_(True)
        g = torch.autograd.grad(d.log_prob(Z).sum(), [Z, *P.values()])
        return {"z": N(g[0]), **{k: N(v) for k, v in zip(P, g[1:])}}

def factory():
    return Prior()
'''

_NUMPYRO_COMMON = '''
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

def N(a):
    return np.asarray(a, dtype=np.float64).copy()
'''

NUMPYRO_STANDARD = _NUMPYRO_COMMON + '''
class Prior:
    def prior_log_prob(self, config, params, z):
        L = config["latent_dim"]
        return N(dist.Normal(jnp.zeros(L), 1.0).to_event(1).log_prob(jnp.asarray(z)))
    def prior_sample(self, config, params, n, seed):
        L = config["latent_dim"]
        return N(dist.Normal(jnp.zeros(L), 1.0).to_event(1).sample(jax.random.PRNGKey(seed), (n,)))
    def prior_log_prob_grad(self, config, params, z):
        L = config["latent_dim"]
        f = lambda z: dist.Normal(jnp.zeros(L), 1.0).to_event(1).log_prob(z).sum()
        return {"z": N(jax.grad(f)(jnp.asarray(z)))}

def factory():
    return Prior()
'''

NUMPYRO_MIXTURE = _NUMPYRO_COMMON + '''
def mixture(means, log_vars, logits):
    return dist.MixtureSameFamily(dist.Categorical(logits=logits),
                                  dist.Normal(means, jnp.exp(0.5 * log_vars)).to_event(1))

class Prior:
    def dist(self, params):
        K = params["prior.means"].shape[0]
        return mixture(jnp.asarray(params["prior.means"]), jnp.asarray(params["prior.log_vars"]),
                       jnp.asarray(params.get("prior.logits", np.zeros(K))))
    def prior_log_prob(self, config, params, z):
        return N(self.dist(params).log_prob(jnp.asarray(z)))
    def prior_sample(self, config, params, n, seed):
        return N(self.dist(params).sample(jax.random.PRNGKey(seed), (n,)))
    def prior_log_prob_grad(self, config, params, z):
        K = params["prior.means"].shape[0]
        args = [jnp.asarray(a) for a in (z, params["prior.means"], params["prior.log_vars"],
                                         params.get("prior.logits", np.zeros(K)))]
        g = jax.grad(_f, argnums=(0, 1, 2, 3))(*args)
        return {"z": N(g[0]), **{k: N(v) for k, v in zip(("prior.means", "prior.log_vars", "prior.logits"), g[1:])
                                 if k in params}}

def factory():
    return Prior()

def _f(z, means, log_vars, logits):
    return mixture(means, log_vars, logits).log_prob(z).sum()

def log_prob(z, means, log_vars, log_weights):
    return N(mixture(jnp.asarray(means), jnp.asarray(log_vars), jnp.asarray(log_weights)).log_prob(jnp.asarray(z)))

def log_prob_grad(z, means, log_vars, log_weights):
    g = jax.grad(_f, argnums=(0, 1, 2, 3))(*(jnp.asarray(a) for a in (z, means, log_vars, log_weights)))
    return dict(zip(("z", "means", "log_vars", "logits"), (N(v) for v in g)))
'''

PYTHAE_MODELS = _TORCH_COMMON + '''
import contextlib
import io
from pythae.models import VAE, VAEConfig, VAMP, VAMPConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.samplers import NormalSampler, VAMPSampler

class MLP(torch.nn.Sequential):
    def __init__(self, sizes):
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(torch.nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(torch.nn.LeakyReLU(0.01))
        super().__init__(*layers)

class Encoder(BaseEncoder):
    def __init__(self, D, hidden, L):
        super().__init__()
        self.L, self.net = L, MLP([D, *hidden, 2 * L])
    def forward(self, x):
        h = self.net(x)
        return ModelOutput(embedding=h[:, :self.L], log_covariance=h[:, self.L:])

class Decoder(BaseDecoder):
    def __init__(self, L, hidden, D):
        super().__init__()
        self.net = MLP([L, *hidden, D])
    def forward(self, z):
        return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))   # 'bce' takes probabilities

@contextlib.contextmanager
def golden_noise(eps):
    """pythae draws its noise with torch.randn_like: hand it the golden eps instead."""
    original = torch.randn_like
    torch.randn_like = lambda t, *a, **k: T(eps).to(t.dtype).reshape(t.shape)
    try:
        yield
    finally:
        torch.randn_like = original

def linears(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]

class PythaeAdapter:
    """pythae's VAE (kind='vae') or VAMP (kind='vamp') with refvae's parameters loaded."""
    def __init__(self, kind):
        self.kind = kind

    def model(self, config, params):
        D, L, hidden = config["x_dim"], config["latent_dim"], config["hidden"]
        if self.kind == "vamp":
            K = params["prior.pseudo_inputs"].shape[0]
            cfg = VAMPConfig(input_dim=(D,), latent_dim=L, reconstruction_loss="bce", number_components=K)
            m = VAMP(cfg, encoder=Encoder(D, hidden, L), decoder=Decoder(L, hidden[::-1], D))
        else:
            cfg = VAEConfig(input_dim=(D,), latent_dim=L, reconstruction_loss="bce")
            m = VAE(cfg, encoder=Encoder(D, hidden, L), decoder=Decoder(L, hidden[::-1], D))
        m = m.double()
        with torch.no_grad():
            for prefix, net in (("encoder", m.encoder), ("decoder", m.decoder)):
                for i, lin in enumerate(linears(net)):
                    lin.weight.copy_(T(params[f"{prefix}.{i}.W"]).T)
                    lin.bias.copy_(T(params[f"{prefix}.{i}.b"]))
            if self.kind == "vamp":   # pseudo-inputs = Hardtanh(W eye(K) + b): W = U.T, b = 0
                lin = m.pseudo_inputs[0]
                lin.weight.copy_(T(params["prior.pseudo_inputs"]).T)
                lin.bias.zero_()
                m.idle_input = m.idle_input.double()   # pythae builds it in float32
        return m

    def grads(self, m):
        out = {}
        for prefix, net in (("encoder", m.encoder), ("decoder", m.decoder)):
            for i, lin in enumerate(linears(net)):
                out[f"grad.{prefix}.{i}.W"] = N(lin.weight.grad.T)
                out[f"grad.{prefix}.{i}.b"] = N(lin.bias.grad)
        if self.kind == "vamp":
            out["grad.prior.pseudo_inputs"] = N(m.pseudo_inputs[0].weight.grad.T)
        return out

    def run(self, config, params, x, eps):
        m = self.model(config, params)
        seen = {}

        def keep_first(module, inputs, output):   # the first encoder call of a forward is at x (VAMP
            seen.setdefault("enc", output)         # calls it again at the pseudo-inputs); returns None,
                                                   # so the output is not replaced
        m.encoder.register_forward_hook(keep_first)
        per = {k: [] for k in ("mu", "log_var", "z", "log_px_z", "kl", "neg_elbo", "log_pz")}
        for b in range(x.shape[0]):            # per-example values: one forward per example
            seen.clear()
            with golden_noise(eps[b:b + 1]), torch.no_grad():
                o = m({"data": T(x[b:b + 1])})
            per["mu"].append(seen["enc"].embedding); per["log_var"].append(seen["enc"].log_covariance)
            per["z"].append(o.z)
            per["log_px_z"].append(-o.recon_loss.reshape(1)); per["kl"].append(o.reg_loss.reshape(1))
            per["neg_elbo"].append(o.loss.reshape(1))
            if self.kind == "vamp":
                with torch.no_grad():
                    per["log_pz"].append(m._log_p_z(o.z))
        out = {k: N(torch.cat(v)) for k, v in per.items() if v}
        if self.kind == "vamp":
            out["prior.log_p"] = out["log_pz"]
        with golden_noise(eps):                # the batch loss and its gradient
            loss = m({"data": T(x)}).loss
        loss.backward()
        out["loss"] = N(loss)
        out.update(self.grads(m))
        return out

    def nll(self, config, params, x, seed):
        m = self.model(config, params)
        torch.manual_seed(seed)
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():   # get_nll prints progress
            return np.array([m.get_nll(T(x[b:b + 1]), n_samples=20000, batch_size=1000) for b in range(x.shape[0])])

class PythaeVAMP(PythaeAdapter):
    """VAMP adds the prior's log-density (VAMP._log_p_z) and the VAMPSampler."""
    def __init__(self):
        super().__init__("vamp")

    def prior_log_prob(self, config, params, z):
        with torch.no_grad():
            return N(self.model(config, params)._log_p_z(T(z)))

    def prior_sample(self, config, params, n, seed):
        """pythae's sampler for the model; the latent draws are captured at the decoder's input."""
        m = self.model(config, params)
        got = []
        m.decoder.register_forward_pre_hook(lambda mod, args: got.append(args[0].detach()))
        torch.manual_seed(seed)
        sampler = VAMPSampler(m) if self.kind == "vamp" else NormalSampler(m)
        with torch.no_grad():
            sampler.sample(num_samples=n, batch_size=500)
        return N(torch.cat(got))[:n]

def factory_vae():
    return PythaeAdapter("vae")

def factory_vamp():
    return PythaeVAMP()
'''


def _subject(library, module, label, source, kind, cases, factory="factory", adversarial=False, known=None):
    return {"library": library, "module": module, "subject": label, "source": source, "kind": kind,
            "cases": cases, "factory": factory, "adversarial": adversarial, "known": known}


#: pythae's VAMP omits the Gaussian constant in log p(z) and log q(z|x) alike (it cancels in its KL):
#: declared, so that the golden comparison goes on to what follows
_VAMP_CONSTANT = "pythae's VAMP._log_p_z omits -L/2 ln(2 pi) (so does its log q(z|x); the constant cancels in the KL)"
_VAMP_KNOWN = [{"case": "*", "quantity": q, "reason": _VAMP_CONSTANT} for q in ("prior.log_p", "log_pz")]
#: pythae's VAE has only the analytic KL: on a Monte Carlo KL case (the confident-pixel one) its kl
#: and what follows from it differ by convention; declared, so that log_px_z is what the case tests
_VAE_KNOWN = [{"case": "*-confident", "quantity": q,
               "reason": "pythae's VAE uses the analytic KL; this case's KL is the Monte Carlo one"}
              for q in ("kl", "neg_elbo", "loss", "grad.encoder.*")]


#: every subject of the report: library, importable module (for the version), label, source,
#: kind (prior / model), golden cases, factory name, whether it has a mixture log_prob for the
#: adversarial inputs
SUBJECTS = [
    _subject("torch", "torch", "Independent(Normal(0, 1), 1)", TORCH_STANDARD, "prior", ["standard-bernoulli"]),
    _subject("torch", "torch", "MixtureSameFamily(Categorical, Independent(Normal))", TORCH_MIXTURE, "prior",
             ["mog-categorical"], adversarial=True),
    _subject("torch", "torch", "TransformedDistribution(Normal, affine couplings as Transform)", TORCH_FLOW,
             "prior", ["flow-bernoulli"]),
    _subject("pyro", "pyro", "Normal(0, 1).to_event(1)", PYRO_STANDARD, "prior", ["standard-bernoulli"]),
    _subject("pyro", "pyro", "MixtureOfDiagNormals", PYRO_MIXTURE, "prior", ["mog-categorical"], adversarial=True),
    _subject("pyro", "pyro", "TransformedDistribution(Normal, [Permute, AffineCoupling] with refvae's nets)", PYRO_FLOW,
             "prior", ["flow-bernoulli"]),
    _subject("numpyro", "numpyro", "Normal(0, 1).to_event(1)", NUMPYRO_STANDARD, "prior", ["standard-bernoulli"]),
    _subject("numpyro", "numpyro", "MixtureSameFamily(Categorical, Normal.to_event(1))", NUMPYRO_MIXTURE, "prior",
             ["mog-categorical"], adversarial=True),
    _subject("pythae", "pythae", "VAE (bce, MLP encoder/decoder)", PYTHAE_MODELS, "model",
             ["standard-bernoulli-analytic_kl", "standard-bernoulli-confident"], factory="factory_vae",
             known=_VAE_KNOWN),
    _subject("pythae", "pythae", "VAMP (bce, MLP encoder/decoder)", PYTHAE_MODELS, "model", ["vamp-bernoulli"],
             factory="factory_vamp", known=_VAMP_KNOWN),
]

#: causes read in the libraries' source, attached to the rows they explain (library, subject
#: prefix, check) -> text. Only shown on a failing row.
CAUSES = {
    ("torch", "MixtureSameFamily", "adversarial.far-apart"):
        "Normal.log_prob divides (z - mu)^2 = inf by 2 var; the backward multiplies inf by the zero "
        "responsibility (inf * 0 = NaN) for the far component",
    ("torch", "MixtureSameFamily", "adversarial.log-var+-1000"):
        "Normal keeps scale and squares it: var = scale**2 underflows to 0 (inf/0, 0/0) for v < -745",
    ("pythae", "VAE", "golden"):
        "the decoder returns probabilities and loss_function takes F.binary_cross_entropy of them: "
        "log(1 - p) of a rounded p = sigmoid(a) loses ~|a| / 36 of the digits at confident pixels "
        "(relative error ~ u e^|a|; |a| ~ 20 here), and F.binary_cross_entropy clamps log p at -100",
    ("pythae", "VAE", "gradient"):
        "the loss is computed from rounded probabilities (see the golden row): at |a| ~ 20 it moves in "
        "steps of ~ u e^|a| ~ 1e-7 relative, which the finite differences (step ~ 6e-6) see as "
        "noise of the size found; autograd differentiates the rounded formula",
    ("numpyro", "MixtureSameFamily", "adversarial.zero-weight"):
        "numpyro's Categorical(logits=...) rejects a -inf logit (a zero weight) with ValueError "
        "(argument validation); a zero weight has to be written as a large negative finite logit",
    ("numpyro", "MixtureSameFamily", "adversarial.all-but-one-zero"):
        "as for zero-weight: -inf logits are rejected by argument validation",
    ("pythae", "VAMP", "golden"):
        "VAMP._log_p_z subtracts torch.log(torch.tensor(C).type(torch.float)): ln C computed in float32 "
        "(error 2.0e-8 for C = 3) shifts kl, neg_elbo and loss of a float64 model",
    ("pythae", "VAMP", "mixture"):
        "VAMP._log_p_z omits -L/2 ln(2 pi): it differs from the mixture's definition by the constant ln(2 pi) "
        "(L = 2)",
    ("pythae", "VAMP", "normalisation"):
        "VAMP._log_p_z omits -L/2 ln(2 pi): exp(log p) integrates to (2 pi)^(L/2)",
    ("pythae", "VAMP", "sampler"):
        "VAMPSampler.sample uses torch.tanh(encoder_output.log_covariance) as the log-variance (the "
        "model's own log_p_z uses log_covariance); it also takes the components in order, not at random",
    ("pythae", "", "nll"):
        "get_nll returns the mean of logsumexp(log w) - log S, i.e. log p(x), not -log p(x); "
        "log p(x|z) is F.binary_cross_entropy of probabilities (log clamped at -100)",
}


def _cause(row):
    for (lib, prefix, check), text in CAUSES.items():
        if row["library"] == lib and row["subject"].startswith(prefix) and row["check"] == check:
            return text
    return None


# --------------------------------------------------------------------------- running

def _load(source, factory):
    ns = {"__name__": "refvae_conformance_subject"}
    exec(compile(source, "<conformance subject>", "exec"), ns)  # noqa: S102 - our own source text
    return ns, ns[factory]()


_DISTRIBUTIONS = {"torch": "torch", "pyro": "pyro-ppl", "numpyro": "numpyro", "pythae": "pythae", "jax": "jax",
                  "jaxlib": "jaxlib", "pydantic": "pydantic"}


def _dist_version(module):
    from importlib import metadata
    try:
        return metadata.version(_DISTRIBUTIONS.get(module, module))
    except metadata.PackageNotFoundError:
        return getattr(sys.modules.get(module), "__version__", "?")


def _version(module):
    try:
        __import__(module)
    except Exception as exc:  # noqa: BLE001 - the reason is the report's content
        return None, f"{type(exc).__name__}: {exc}"
    return _dist_version(module), None


def _row(subj, version, check, case, status, summary, reproduction=None, details=None):
    row = {"library": subj["library"], "version": version, "subject": subj["subject"], "check": check,
           "case": case, "verdict": status, "diagnosis": summary, "reproduction": reproduction}
    cause = _cause(row) if status == "fail" else None
    if cause:
        row["cause"] = cause
    if details is not None:
        row["details"] = details
    return row


def _standalone(subj, snippet):
    """A harness snippet made standalone: the subject's source first, its factory as the adapter."""
    if not snippet:
        return None
    lines = [("adapter = " + subj["factory"] + "()") if ln.startswith("adapter = ") else ln
             for ln in snippet.splitlines()]
    return subj["source"].strip("\n") + "\n\n# refvae's check (pip install refvae):\n" + "\n".join(lines) + "\n"


def _qsummary(q):
    if q.status == "pass":
        return f"within tolerance (worst {q.ratio:.2g} of allowed)"
    if q.status in ("shape", "missing", "nonfinite"):
        return f"{q.status}: {q.message}"
    return (f"{q.n_failed} of {q.size} elements outside tolerance; worst at {q.index}: expected "
            f"{q.expected:.10g}, got {q.actual:.10g} (|diff| {abs(q.actual - q.expected):.3g}, "
            f"{q.ratio:.2g}x allowed){'; ' + q.message if q.message else ''}")


#: the checks reported per kind of subject (a prior-only adapter has no loss and no NLL)
_RELEVANT = {"prior": ("normalisation", "sampler", "mixture", "prior_gradient"),
             "model": ("gradient", "normalisation", "sampler", "mixture", "nll", "prior_gradient")}


def _case_rows(subj, version, adapter, case_name):
    """Rows of one subject on one case through :func:`refvae.tools.verify.run` (whole models, or
    prior-only adapters): the golden comparison, then every check that applies."""
    from . import run
    rep = run(adapter, cases=[case_name], known_deviations=subj["known"])
    r = rep.results[0]
    rows = []
    if r.error is not None:
        return [_row(subj, version, "golden", case_name, "fail", f"the adapter raised: {r.error}")]
    reported = [q for q in r.quantities if q.status != "missing"]
    known = [q for q in r.quantities if q.status == "known"]
    declared = (f"; declared deviations: {', '.join(q.name for q in known)} ({known[0].reason})" if known else "")
    if r.first_divergence is None:
        rows.append(_row(subj, version, "golden", case_name, "pass",
                         f"{len(reported) - len(known)} reported quantities within tolerance ("
                         + ", ".join(q.name for q in reported[:8]) + (", ..." if len(reported) > 8 else "") + ")"
                         + declared))
    else:
        failed = [q for q in r.quantities if q.failed]
        first = r.quantity(r.first_divergence)
        rows.append(_row(subj, version, "golden", case_name, "fail",
                         f"first divergence at {first.name}: {_qsummary(first)}; failing: "
                         + ", ".join(q.name for q in failed) + declared, _standalone(subj, first.reproduction)))
    for c in r.checks:
        if c.name not in _RELEVANT[subj["kind"]] or (c.status == "skip" and c.summary.startswith("not a mixture")):
            continue
        rows.append(_row(subj, version, c.name, case_name, c.status, c.summary,
                         _standalone(subj, c.reproduction) if c.status == "fail" else None))
    return rows


def _adversarial_rows(subj, version, ns):
    out = []
    for r in check_adversarial(ns["log_prob"], ns.get("log_prob_grad"), source=subj["source"]):
        out.append(_row(subj, version, r.name, "-", r.status, r.summary,
                        r.reproduction if r.status == "fail" else None))
    return out


def run_conformance(libraries=None, say=None):
    """Run every subject of :data:`SUBJECTS` (or those of ``libraries``, a list of library names)
    and return the report dict (schema ``refvae-conformance-report/1``): ``rows`` (one per library x
    subject x check), ``unavailable`` (libraries that could not be imported, with the reason),
    ``pins`` and ``provenance``."""
    known = sorted({s["library"] for s in SUBJECTS})
    if libraries is None:
        libraries = known
    if isinstance(libraries, str) or not isinstance(libraries, (list, tuple)):
        raise TypeError(f"libraries must be a list of names from {known} (or None), got {type(libraries).__name__}")
    if not libraries:
        raise ValueError(f"libraries must name at least one of {known}")
    for lib in libraries:
        if lib not in known:
            raise ValueError(f"libraries: unknown library {lib!r}; known: {known}")
    if say is not None and not callable(say):
        raise TypeError(f"say must be callable or None, got {type(say).__name__}")
    t0 = time.perf_counter()
    rows, unavailable, versions = [], {}, {}
    for subj in SUBJECTS:
        if subj["library"] not in libraries or subj["library"] in unavailable:
            continue
        version, why = _version(subj["module"])
        if why is not None:
            unavailable[subj["library"]] = why
            continue
        versions[subj["library"]] = version
        t1 = time.perf_counter()
        try:
            ns, adapter = _load(subj["source"], subj["factory"])
        except Exception as exc:  # noqa: BLE001
            unavailable[subj["library"]] = f"{type(exc).__name__}: {exc}"
            continue
        for case_name in subj["cases"]:
            rows += _case_rows(subj, version, adapter, case_name)
        if subj["adversarial"]:
            rows += _adversarial_rows(subj, version, ns)
        if say is not None:
            say(f"{subj['library']} {version}: {subj['subject']} ({time.perf_counter() - t1:.1f} s)")
    from ..provenance import provenance
    for mod in ("jax", "jaxlib", "pydantic"):
        if mod in sys.modules:
            versions[mod] = _dist_version(mod)
    return {"schema": SCHEMA, "libraries": list(libraries), "versions": versions, "pins": dict(PINS),
            "unavailable": unavailable, "rows": rows, "seconds": round(time.perf_counter() - t0, 1),
            "provenance": provenance()}


def format_markdown(report):
    """The report as a markdown page: the table of verdicts, then each failure's reproduction."""
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise ValueError(f"report must be a dict made by run_conformance (schema {SCHEMA!r})")
    lines = ["# Conformance of real libraries to refvae's checks", "",
             "Generated by `python -m refvae.tools.verify.conformance --out validation/conformance` "
             "(docs/verify-real-code.md explains the checks). Versions: "
             + ", ".join(f"{k} {v}" for k, v in sorted(report["versions"].items())) + ".", ""]
    if report["unavailable"]:
        lines += ["Not installed / not importable:", ""]
        lines += [f"- {lib}: {why}" for lib, why in sorted(report["unavailable"].items())]
        lines.append("")
    counts = {}
    for r in report["rows"]:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    lines += [f"{len(report['rows'])} rows: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), "",
              "| library | subject | case | check | verdict | diagnosis |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(report["rows"]):
        diag = r["diagnosis"].replace("|", "\\|").replace("\n", " ")
        if r.get("cause"):
            diag += f" **Cause:** {r['cause']}"
        if r.get("reproduction"):
            diag += f" ([reproduction](#row-{i}))"
        lines.append(f"| {r['library']} {r['version']} | {r['subject']} | {r['case']} | {r['check']} | "
                     f"**{r['verdict']}** | {diag} |")
    lines += ["", "## Reproductions", ""]
    for i, r in enumerate(report["rows"]):
        if r.get("reproduction"):
            lines += [f"### <a id=\"row-{i}\"></a>{r['library']}: {r['subject']}, {r['check']} ({r['case']})", "",
                      "```python", r["reproduction"].rstrip("\n"), "```", ""]
    return "\n".join(lines) + "\n"


def main(argv=None):
    """``python -m refvae.tools.verify.conformance [--out DIR] [--libraries a,b]``."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m refvae.tools.verify.conformance",
                                 description="Run real libraries through refvae's checks.")
    ap.add_argument("--out", default="validation/conformance", help="directory for conformance.md/.json")
    ap.add_argument("--libraries", default=None, help="comma-separated subset of "
                    + ",".join(sorted({s['library'] for s in SUBJECTS})))
    args = ap.parse_args(argv)
    libs = None if args.libraries is None else [s for s in args.libraries.split(",") if s]
    try:
        report = run_conformance(libs, say=print)
    except (TypeError, ValueError) as exc:
        ap.error(f"--libraries: {exc}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "conformance.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1, sort_keys=False, default=float)
        fh.write("\n")
    with open(os.path.join(args.out, "conformance.md"), "w", encoding="utf-8") as fh:
        fh.write(format_markdown(report))
    bad = sum(r["verdict"] == "fail" for r in report["rows"])
    print(f"{len(report['rows'])} rows, {bad} failing; written to {args.out}/conformance.md and .json "
          f"[{report['seconds']} s]")
    return 0


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
