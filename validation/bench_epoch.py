#!/usr/bin/env python
r"""One training epoch of refvae against the same network in PyTorch (a script, not a test).

What it measures
----------------
One epoch of minibatch training on the digits data (scikit-learn ``load_digits``, the first 1000
images, integer values 0..16), categorical likelihood with C = 17, latent dimension L = 2 and
L = 16, hidden widths (256, 256), leaky ReLU (slope 0.01), batch size 64 (15 batches of 64 and one
of 40), the standard prior with the single-sample Monte Carlo KL (refvae's default ``kl="mc"``),
Adamax with lr 1e-3 (PyTorch's betas and eps), in one run on one machine with one thread count
(default 2, for NumPy's BLAS and PyTorch: environment variables set before NumPy is imported, and
``torch.set_num_threads``):

- **refvae**: ``VAE.neg_elbo_and_grad(x[batch], eps)`` + ``refvae.optim.Adamax.step(grads)``;
- **torch float64**: the same network as ``torch.nn.Linear`` layers whose weights are refvae's
  initial parameters (``weight = W.T``, ``bias = b``), the same batches, the same eps, PyTorch CPU
  autograd (``loss.backward()``) and ``torch.optim.Adamax(lr=1e-3)`` (default betas, eps; the
  single-tensor implementation PyTorch picks for CPU tensors);
- **torch float32**: the same, cast to float32 (for context only: the usual PyTorch setting).

Every timed epoch starts from the *same* initial parameters and a fresh optimiser (the reset is
not timed), with the same batch order and noise, so every repeat is the same computation and the
three engines do the same arithmetic. Timed: the loop over the 16 minibatches (indexing the batch,
forward, backward, optimiser step, reading the loss as a Python float). Repeats run in rounds,
each round timing every engine once in a rotated order (load drift on a shared machine hits all
engines alike); a short pause separates epochs so that BLAS/OpenMP worker threads spinning after
one engine do not steal cycles from the next. Reported: the median over rounds after one warm-up
epoch per engine, and the median of the per-round ratios refvae / torch.

Agreement ("the loss after one epoch from the same start"): after one epoch,

- ``train_loss``: the epoch's training loss (mean of the minibatch losses weighted by batch size,
  each evaluated before its step, as ``refvae.train.fit`` reports it);
- ``loss_after``: the loss on the 1000 training images at the parameters after the epoch, with a
  fixed noise ``eps_eval`` (a deterministic function of the parameters);
- the largest relative parameter difference after the epoch (``max_k ||Δp_k|| / ||p_k||``).

Target: torch float64 agrees with refvae to within 1e-8 relative on both losses; refvae's epoch
time <= 1.0x torch float64's.

Where refvae's time goes (always measured, discussed when refvae is slower): a waterfall of
(1) only the 17 GEMMs per minibatch on the same shapes (NumPy ``matmul`` into preallocated arrays),
(2) a bare NumPy twin of the same forward/backward/Adamax with no input checks and in-place
updates, (3) refvae's ``neg_elbo_and_grad`` alone and (4) with ``Adamax.step``; plus a cProfile of
one refvae epoch with the self time of NumPy internals and builtins folded into the refvae function
that called them, grouped into categories (input validation, matmul, activations, likelihood,
optimiser, ...). cProfile inflates code with many small Python calls (validation most), so its
percentages are read next to the unprofiled waterfall.

Shared machines
---------------
Each phase records how many cores other processes used meanwhile (from /proc/stat); a phase above
0.25 cores is flagged CONTENDED. On a 2-core machine with other work running, 2-thread BLAS and
OpenMP degrade far more than proportionally (a worker thread waits at a barrier for a descheduled
sibling; single minibatch GEMMs were seen to take 10-30x longer), which distorts the ratio between
engines; ``--threads 1`` gives a load-robust comparison and ``--wait-idle SECONDS`` waits for a quiet
machine first.

Randomness
----------
For latent dimension L: the model is ``VAE(64, L, (256, 256), rng=default_rng([seed, L]))``; the
schedule comes from ``rng = default_rng([seed, L, 1])`` in this order: ``eps_eval =
rng.standard_normal((1000, L))``, ``perm = rng.permutation(1000)``, then for each minibatch
``eps = rng.standard_normal((len(batch), L))`` (the order ``refvae.train.fit`` uses).

Usage
-----
    python validation/bench_epoch.py              # L = 2 and 16, 7 rounds (about a minute)
    python validation/bench_epoch.py --quick      # L = 2, 2 rounds (seconds)
    python validation/bench_epoch.py --latent 16 --repeats 15 --json out.json

Results go to ``validation/results/bench_epoch.json`` and ``.md`` (``--quick`` writes
``bench_epoch_quick.*``; ``--json`` / ``--md`` override either).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _bench.py sits next to this script
import _bench  # noqa: E402  (shared benchmark machinery; imports no NumPy)

THREADS = _bench.setup_threads(sys.argv[1:])  # BLAS thread env vars, before NumPy is imported

import cProfile  # noqa: E402
import math  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from _bench import contention, cpu_snapshot, fmt_t, log, med, run_timed  # noqa: E402
from refvae.optim import Adamax  # noqa: E402
from refvae.vae import VAE  # noqa: E402

numba.set_num_threads(THREADS)

LN_2PI = math.log(2.0 * math.pi)
N_TRAIN = 1000
NUM_VALS = 17
HIDDEN = (256, 256)
BATCH = 64
LR = 1e-3
LEAKY = 0.01
DEFAULT_LATENTS = (2, 16)
TARGET_RATIO = 1.0      # refvae epoch time / torch float64 epoch time
TARGET_REL_LOSS = 1e-8  # |loss_torch64 - loss_refvae| / |loss_refvae|
PAUSE_S = 0.2           # idle time between timed epochs (lets spinning BLAS/OpenMP threads sleep)


# ============================================================================ provenance

def provenance(args, torch, torch_status):
    """_bench.provenance with torch's BLAS and the BLAS pools' library paths."""
    return _bench.provenance(threads=THREADS, seed=args.seed, torch=torch, torch_status=torch_status,
                             with_torch_blas=True,
                             pool_keys=("internal_api", "num_threads", "version", "filepath"))


# ============================================================================ data and schedule

def load_train():
    """The first 1000 digits (refvae.data.load_digits_split()['train']: load order, values 0..16)."""
    from refvae.data import load_digits_split
    return load_digits_split()["train"]


def make_case(L, seed, x):
    """refvae model, its initial parameters, and the epoch schedule (module docstring)."""
    model = VAE(x.shape[1], L, HIDDEN, "leaky_relu", "categorical", NUM_VALS, "standard",
                rng=np.random.default_rng([seed, L]))
    init = {k: v.copy() for k, v in model.params.items()}
    rng = np.random.default_rng([seed, L, 1])
    eps_eval = rng.standard_normal((x.shape[0], L))
    perm = rng.permutation(x.shape[0])
    batches, eps = [], []
    for start in range(0, x.shape[0], BATCH):
        b = perm[start:start + BATCH]
        batches.append(b)
        eps.append(rng.standard_normal((len(b), L)))
    return model, init, {"eps_eval": eps_eval, "perm": perm, "batches": batches, "eps": eps}


def reset_refvae(model, init):
    for k, v in init.items():
        model.params[k][...] = v
    return Adamax(model.params, lr=LR)


def run_epoch(loss_and_grad, step, x, batches, eps_list):
    """The timed loop: ``loss_and_grad(x[b], eps)`` and the optimiser's ``step(grads)`` per
    minibatch; returns the batch losses."""
    losses = []
    for b, eps in zip(batches, eps_list):
        value, grads = loss_and_grad(x[b], eps)
        step(grads)
        losses.append(value)
    return losses


def refvae_epoch(model, opt, x, batches, eps_list):
    """refvae's gradient and Adamax step per minibatch (:func:`run_epoch`)."""
    return run_epoch(model.neg_elbo_and_grad, opt.step, x, batches, eps_list)


def epoch_loss(losses, batches):
    return math.fsum(v * len(b) for v, b in zip(losses, batches)) / sum(len(b) for b in batches)


# ============================================================================ PyTorch twin

def make_torch_vae(torch, L, D):
    """The same network as nn.Linear layers (weight = W.T) and the same loss expression as refvae."""
    nn = torch.nn
    F = torch.nn.functional

    class TorchVAE(nn.Module):
        def __init__(self):
            super().__init__()
            enc = (D, *HIDDEN, 2 * L)
            dec = (L, *reversed(HIDDEN), D * NUM_VALS)
            self.enc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(enc[:-1], enc[1:]))
            self.dec = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dec[:-1], dec[1:]))

        @staticmethod
        def _mlp(layers, h):
            for lin in layers[:-1]:
                h = F.leaky_relu(lin(h), LEAKY)
            return layers[-1](h)

        def per_example(self, x, xi, eps):
            h = self._mlp(self.enc, x)
            mu, lv = h[:, :L], h[:, L:]
            z = mu + torch.exp(0.5 * lv) * eps
            out = self._mlp(self.dec, z)
            logp = torch.log_softmax(out.view(x.shape[0], D, NUM_VALS), dim=-1)
            lpx = logp.gather(-1, xi.unsqueeze(-1)).squeeze(-1).sum(-1)
            lpz = -0.5 * (LN_2PI + z * z).sum(-1)                 # StandardPrior.forward
            r = (z - mu) * torch.exp(-0.5 * lv)                   # gaussian.log_prob
            lq = -0.5 * (LN_2PI + lv + r * r).sum(-1)
            kl = lq - lpz
            return -(lpx - kl)                                    # VAE.forward's per_example

        def loss(self, x, xi, eps):
            return self.per_example(x, xi, eps).mean()

    return TorchVAE()


def torch_load_params(torch, net, params, dtype):
    """Copy refvae's parameter dict into the torch net (weight = W.T); returns the name map."""
    with torch.no_grad():
        for mod_name, layers in (("encoder", net.enc), ("decoder", net.dec)):
            for i, lin in enumerate(layers):
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(params[f"{mod_name}.{i}.W"].T)))
                lin.bias.copy_(torch.from_numpy(params[f"{mod_name}.{i}.b"]))
    return net


def torch_params_as_refvae(net):
    out = {}
    for mod_name, layers in (("encoder", net.enc), ("decoder", net.dec)):
        for i, lin in enumerate(layers):
            out[f"{mod_name}.{i}.W"] = lin.weight.detach().double().numpy().T.copy()
            out[f"{mod_name}.{i}.b"] = lin.bias.detach().double().numpy().copy()
    return out


class TorchCase:
    """One torch engine (dtype) for one latent size: network, data tensors, schedule tensors."""

    def __init__(self, torch, L, x, init, sched, dtype):
        self.torch = torch
        self.dtype = dtype
        self.net = make_torch_vae(torch, L, x.shape[1]).to(dtype)
        self.init = init
        self.X = torch.from_numpy(x).to(dtype)
        self.Xi = torch.from_numpy(x.astype(np.int64))
        self.batches = [torch.from_numpy(b.astype(np.int64)) for b in sched["batches"]]
        self.eps = [torch.from_numpy(e).to(dtype) for e in sched["eps"]]
        self.eps_eval = torch.from_numpy(sched["eps_eval"]).to(dtype)

    def reset(self):
        torch_load_params(self.torch, self.net, {k: v for k, v in self.init.items()}, self.dtype)
        for p in self.net.parameters():
            p.grad = None
        return self.torch.optim.Adamax(self.net.parameters(), lr=LR)

    def epoch(self, opt):
        """The timed loop: zero_grad, forward, backward, step per minibatch; returns the losses."""
        net, X, Xi = self.net, self.X, self.Xi
        losses = []
        for b, eps in zip(self.batches, self.eps):
            opt.zero_grad(set_to_none=True)
            loss = net.loss(X[b], Xi[b], eps)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    def loss_after(self):
        with self.torch.no_grad():
            return float(self.net.loss(self.X, self.Xi, self.eps_eval).item())


# ============================================================================ the NumPy twin (waterfall)

class NumpyTwin:
    """The same forward/backward/Adamax in bare NumPy: no checks, no dicts per call, preallocated
    buffers and in-place updates where the formula allows. A lower reference for refvae's
    pure-NumPy cost (same BLAS, same shapes), not a replacement: it skips refvae's careful
    ``1 - p_k`` and log-softmax edge cases (finite inputs only)."""

    def __init__(self, init, L):
        self.L = L
        self.names = list(init)
        self.init = init

    def reset(self):
        self.P = {k: v.copy() for k, v in self.init.items()}
        self.m = {k: np.zeros_like(v) for k, v in self.init.items()}
        self.u = {k: np.zeros_like(v) for k, v in self.init.items()}
        self.t = 0
        self.tmp = {k: np.empty_like(v) for k, v in self.init.items()}

    def _mlp_fwd(self, prefix, n, h):
        hs, pres = [h], []
        for i in range(n):
            pre = h @ self.P[f"{prefix}.{i}.W"]
            pre += self.P[f"{prefix}.{i}.b"]
            pres.append(pre)
            if i < n - 1:
                h = np.where(pre > 0, pre, LEAKY * pre)
                hs.append(h)
        return pre, hs, pres

    def _mlp_bwd(self, prefix, n, d, hs, pres, grads, need_dx):
        for i in range(n - 1, -1, -1):
            if i < n - 1:
                d *= np.where(pres[i] > 0, 1.0, LEAKY)
            grads[f"{prefix}.{i}.W"] = hs[i].T @ d
            grads[f"{prefix}.{i}.b"] = d.sum(axis=0)
            if i > 0 or need_dx:
                d = d @ self.P[f"{prefix}.{i}.W"].T
        return d

    def loss_and_grad(self, x, eps):
        L = self.L
        B, D = x.shape
        c = 1.0 / B
        h, hs_e, pre_e = self._mlp_fwd("encoder", 3, x)
        mu, lv = h[:, :L], h[:, L:]
        sd = np.exp(0.5 * lv)
        z = mu + sd * eps
        out, hs_d, pre_d = self._mlp_fwd("decoder", 3, z)
        a = out.reshape(B, D, NUM_VALS)
        mx = a.max(axis=-1, keepdims=True)
        e = np.exp(a - mx)
        s = e.sum(axis=-1, keepdims=True)
        xi = x.astype(np.intp)[:, :, None]
        lpx = (np.take_along_axis(a, xi, axis=-1) - mx - np.log(s))[:, :, 0].sum(axis=1)
        lpz = -0.5 * np.sum(LN_2PI + z * z, axis=-1)
        inv_sd = 1.0 / sd
        r = (z - mu) * inv_sd
        lq = -0.5 * np.sum(LN_2PI + lv + r * r, axis=-1)
        loss = float(np.mean(-(lpx - (lq - lpz))))
        # backward
        e /= s                                   # softmax
        np.put_along_axis(e, xi, np.take_along_axis(e, xi, axis=-1) - 1.0, axis=-1)
        e *= c                                   # d(-c lpx)/da = c (p - onehot)
        grads = {}
        dz = self._mlp_bwd("decoder", 3, e.reshape(B, D * NUM_VALS), hs_d, pre_d, grads, True)
        w = c * r * inv_sd                       # c (z - mu) / var
        dz += c * z - w                          # prior path (+c z) and q path (-c (z-mu)/var)
        dmu = w + dz
        dlv = 0.5 * c * (r * r - 1.0) + dz * (0.5 * sd * eps)
        self._mlp_bwd("encoder", 3, np.concatenate([dmu, dlv], axis=1), hs_e, pre_e, grads, False)
        return loss, grads

    def step(self, grads):
        self.t += 1
        b1, b2 = 0.9, 0.999
        clr = LR / (1.0 - b1 ** self.t)
        for k in self.names:
            g, m, u, p, tmp = grads[k], self.m[k], self.u[k], self.P[k], self.tmp[k]
            np.subtract(g, m, out=tmp)
            tmp *= 1.0 - b1
            m += tmp
            u *= b2
            np.abs(g, out=tmp)
            tmp += 1e-8
            np.maximum(u, tmp, out=u)
            np.divide(m, u, out=tmp)
            tmp *= -clr
            p += tmp

    def epoch(self, x, batches, eps_list):
        return run_epoch(self.loss_and_grad, self.step, x, batches, eps_list)


def gemm_only_epoch(init, L, batch_sizes, D):
    """A closure running only the 17 GEMMs per minibatch of the forward and backward passes on the
    same shapes, into preallocated outputs (the BLAS floor of one epoch)."""
    rng = np.random.default_rng(0)
    enc = (D, *HIDDEN, 2 * L)
    dec = (L, *reversed(HIDDEN), D * NUM_VALS)
    plans = []
    for B in sorted(set(batch_sizes)):
        ops = []
        for sizes, prefix in ((enc, "encoder"), (dec, "decoder")):
            n = len(sizes) - 1
            for i in range(n):
                W = init[f"{prefix}.{i}.W"]
                h = rng.standard_normal((B, sizes[i]))
                dy = rng.standard_normal((B, sizes[i + 1]))
                ops.append((h, W, np.empty((B, sizes[i + 1]))))             # forward h @ W
                ops.append((h.T, dy, np.empty((sizes[i], sizes[i + 1]))))    # dW = h.T @ dy
                if not (prefix == "encoder" and i == 0):
                    ops.append((dy, W.T, np.empty((B, sizes[i]))))          # dx = dy @ W.T
        plans.append((B, ops))
    by_b = dict(plans)

    def run():
        for B in batch_sizes:
            for a, b, out in by_b[B]:
                np.matmul(a, b, out=out)
    return run, sum(len(ops) for _, ops in plans[:1])


# ============================================================================ stage timings

def stage_timings(model, init, x, sched, reps):
    """Unprofiled per-minibatch cost of each step of refvae's forward/backward/Adamax.

    Mirrors ``VAE.forward`` / ``VAE.backward`` / ``Adamax.step`` call by call on the first
    minibatch (64 rows) at the initial parameters, each stage timed alone: median of ``reps`` calls
    after 3 warm-up calls. Pieces of a stage are timed separately where they are public or
    private-but-stable (reported as unavailable otherwise). Times are per minibatch.
    """
    from refvae import gaussian, likelihoods, primitives
    for k, v in init.items():
        model.params[k][...] = v
    p = model.params
    b = sched["batches"][0]
    xb = x[b]
    eps = sched["eps"][0]
    B = xb.shape[0]
    c = np.full(B, 1.0 / B)
    rows = []

    def T(name, fn, group):
        for _ in range(3):
            out = fn()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = fn()
            ts.append(time.perf_counter() - t0)
        rows.append({"stage": name, "group": group, "s": float(np.median(ts)), "min_s": float(min(ts))})
        return out

    try:
        T("input checks of x and eps (VAE._check_x/_check_eps)",
          lambda: (model._check_x(xb), model._check_eps(eps, B)), "forward")
        mu, lv, enc_cache = T("encoder forward (mlp_forward, 3 layers)",
                              lambda: model.encoder.forward(p, xb), "forward")
        T("  of which: MLP parameter checks (mlp_param_names + as_float_array of W, b, x)",
          lambda: _mlp_checks(p, "encoder", xb), "detail")
        z = T("reparameterize", lambda: gaussian.reparameterize(mu, lv, eps), "forward")
        out, dec_cache = T("decoder forward (mlp_forward, 3 layers)",
                           lambda: model.decoder.forward(p, z), "forward")
        T("  reference: the decoder's 3 matmuls + bias, no activation or checks",
          lambda: _bare_mlp(p, "decoder", z), "detail")
        T("categorical log_prob (checks + fused Numba row kernel)",
          lambda: model.decoder.log_prob(p, xb, out), "forward")
        a = out.reshape(B, x.shape[1], NUM_VALS)
        T("  of which: _check_categorical (as_float_array x2, integer and range checks)",
          lambda: likelihoods._check_categorical(xb, out, NUM_VALS), "detail")
        T("  reference: NumPy log_softmax on (64, 64, 17) (refvae.primitives, not on this path)",
          lambda: primitives.log_softmax(a, axis=-1), "detail")
        T("  reference: plain x - max - log(sum(exp)) on the same array",
          lambda: _plain_log_softmax(a), "detail")
        T("prior forward (standard)", lambda: model.prior.forward(p, z), "forward")
        T("gaussian log_prob (q(z|x))", lambda: gaussian.log_prob(z, mu, lv), "forward")
        cache = T("whole VAE.forward", lambda: model.forward(xb, eps), "total")
        T("grads = zeros_like for every parameter (VAE.backward)",
          lambda: {k: np.zeros_like(v) for k, v in p.items()}, "backward")
        dout = T("categorical log_prob_vjp (checks + fused forward again + VJP kernel)",
                 lambda: likelihoods.categorical_log_prob_vjp(-c, xb, out, NUM_VALS), "backward")
        dz, g_dec = T("decoder backward (mlp_backward)", lambda: model.decoder.backward(dout, dec_cache),
                      "backward")
        T("prior backward", lambda: model.prior.backward(-c, cache.prior), "backward")
        dz_q, dmu, dlv = T("gaussian log_prob_vjp", lambda: gaussian.log_prob_vjp(c, z, mu, lv), "backward")
        dmu_r, dlv_r, _ = T("reparameterize_vjp", lambda: gaussian.reparameterize_vjp(dz, mu, lv, eps),
                            "backward")
        _, g_enc = T("encoder backward (concatenate + mlp_backward)",
                     lambda: model.encoder.backward(dmu + dmu_r, dlv + dlv_r, enc_cache), "backward")
        grads = model.backward(cache)

        def accumulate():
            gz = {k: np.zeros_like(v) for k, v in p.items()}
            for gs in (g_dec, g_enc):
                for k, v in gs.items():
                    gz[k] += v
            return gz
        T("grads: zeros + accumulate (+=) over the parameter dict", accumulate, "backward")
        T("whole VAE.backward", lambda: model.backward(cache), "total")
        T("whole neg_elbo_and_grad", lambda: model.neg_elbo_and_grad(xb, eps), "total")
        scratch = {k: v.copy() for k, v in init.items()}
        opt = Adamax(scratch, lr=LR)
        T("Adamax.step (checks + update of ~440k parameters)", lambda: opt.step(grads), "optimizer")
        T("  of which: _check_grads (as_float_array of every gradient)",
          lambda: opt._check_grads(grads), "detail")
        twin = NumpyTwin(init, model.latent_dim)
        twin.reset()
        T("reference: in-place Adamax (NumPy twin)", lambda: twin.step(grads), "optimizer")
        T("reference: NumPy twin loss_and_grad", lambda: twin.loss_and_grad(xb, eps), "total")
    except Exception as exc:  # private API moved: keep what was measured
        rows.append({"stage": f"stopped: {type(exc).__name__}: {exc}", "group": "error", "s": None,
                     "min_s": None})
    return rows


def _mlp_checks(params, prefix, x):
    from refvae._validation import as_float_array
    from refvae.layers import mlp_param_names
    names = mlp_param_names(params, prefix)
    as_float_array(x, "x", ndim=2, allow_complex=True)
    for nm in names:
        as_float_array(params[nm], nm, allow_complex=True)


def _bare_mlp(params, prefix, h):
    for i in range(3):
        h = h @ params[f"{prefix}.{i}.W"] + params[f"{prefix}.{i}.b"]
    return h


def _plain_log_softmax(a):
    m = a.max(axis=-1, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis=-1, keepdims=True))


# ============================================================================ profile

CATEGORIES = (  # (category, predicate on (module file stem, function name))
    ("input validation", lambda mod, fn: mod == "_validation" or fn.startswith(("_check", "check_"))
     or fn in ("mlp_param_names", "_as_array", "_param")),
    ("matmul (linear layers)", lambda mod, fn: fn in ("linear_forward", "linear_backward")),
    ("activations", lambda mod, fn: mod == "layers" and fn.startswith(("leaky_relu_", "relu_", "tanh_",
                                                                         "sigmoid_", "softplus_"))),
    ("MLP glue (layers.py)", lambda mod, fn: mod == "layers"),
    ("likelihood + log_softmax", lambda mod, fn: mod in ("likelihoods", "primitives")),
    ("optimizer (Adamax arithmetic)", lambda mod, fn: mod == "optim"),
    ("gaussian / prior / reparam", lambda mod, fn: mod in ("gaussian", "priors")),
    ("VAE glue (vae.py: dicts, zeros, concatenation)", lambda mod, fn: mod == "vae"),
    ("benchmark loop (batch indexing)", lambda mod, fn: mod == "bench_epoch"),
)


def _owner_key(func):
    fname = func[0]
    if "/refvae/" in fname or fname.endswith("bench_epoch.py"):
        return func
    return None


def profile_epoch(model, init, x, sched, top=20):
    """cProfile of one refvae epoch; NumPy-internal and builtin self time is folded into the nearest
    refvae (or benchmark-loop) caller, pro rata over its callers' edge times."""
    opt = reset_refvae(model, init)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    refvae_epoch(model, opt, x, sched["batches"], sched["eps"])
    prof.disable()
    wall = time.perf_counter() - t0
    st = pstats.Stats(prof).stats  # func -> (cc, nc, tt, ct, callers)
    owned = {}

    def distribute(func, amount, depth=0):
        if amount <= 0.0:
            return
        if _owner_key(func) is not None:
            owned[func] = owned.get(func, 0.0) + amount
            return
        entry = st.get(func)
        callers = entry[4] if entry else {}
        if depth > 30 or not callers:
            owned[("~", 0, "<unattributed>")] = owned.get(("~", 0, "<unattributed>"), 0.0) + amount
            return
        weights = {c: max(edge[2] if len(edge) > 2 else 0.0, 0.0) for c, edge in callers.items()}
        tot = sum(weights.values())
        for c, w in weights.items():
            share = amount * (w / tot if tot > 0 else 1.0 / len(weights))
            if c != func:
                distribute(c, share, depth + 1)

    for func, (_cc, _nc, tt, _ct, _callers) in st.items():
        distribute(func, tt)
    total = sum(owned.values())
    rows = []
    for func, t in owned.items():
        mod = Path(func[0]).stem
        rows.append({"function": f"{mod}.{func[2]}", "module": mod, "name": func[2],
                     "line": func[1], "self_s_folded": t, "calls": st.get(func, (0, 0))[1]})
    rows.sort(key=lambda r: -r["self_s_folded"])
    cats = {}
    for r in rows:
        cat = next((c for c, pred in CATEGORIES if pred(r["module"], r["name"])), "other")
        r["category"] = cat
        cats[cat] = cats.get(cat, 0.0) + r["self_s_folded"]
    cat_rows = sorted(({"category": c, "s": s, "fraction": s / total if total else 0.0}
                       for c, s in cats.items()), key=lambda r: -r["s"])
    raw = sorted(({"function": f"{Path(f[0]).stem}:{f[1]}({f[2]})", "tottime_s": v[2],
                   "cumtime_s": v[3], "calls": v[1]} for f, v in st.items()),
                 key=lambda r: -r["tottime_s"])[:top]
    return {"wall_profiled_s": wall, "total_self_s": total, "categories": cat_rows,
            "top_functions": rows[:top], "top_raw_tottime": raw,
            "calls_total": int(sum(v[1] for v in st.values()))}


# ============================================================================ timing

def timed(fn):
    """(wall time, result) of one call of fn, after a garbage collection."""
    out, (t,) = run_timed(fn, 1, False)
    return t, out


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def param_rel_diff(pa, pb):
    return max(float(np.linalg.norm(pa[k] - pb[k]) / max(np.linalg.norm(pb[k]), 1e-300)) for k in pb)


def bench_latent(L, x, args, torch):
    model, init, sched = make_case(L, args.seed, x)
    batches, eps_list = sched["batches"], sched["eps"]
    n_params = int(sum(v.size for v in init.values()))
    log(f"\n=== L = {L}: {len(batches)} minibatches ({', '.join(str(len(b)) for b in batches[-2:])} "
        f"in the last two), {n_params} parameters")
    r = {"latent_dim": L, "n_batches": len(batches), "n_params": n_params, "contention": {}}
    load = _bench.LoadTracker(r["contention"])  # load.phase(name): contention since the last phase

    engines = {}

    def run_refvae():
        opt = reset_refvae(model, init)
        t, losses = timed(lambda: refvae_epoch(model, opt, x, batches, eps_list))
        return t, losses, {k: v.copy() for k, v in model.params.items()}

    engines["refvae"] = run_refvae
    tcases = {}
    if torch is not None:
        for name, dt in (("torch64", torch.float64), ("torch32", torch.float32)):
            tc = TorchCase(torch, L, x, init, sched, dt)
            tcases[name] = tc

            def run_t(tc=tc):
                opt = tc.reset()
                t, losses = timed(lambda: tc.epoch(opt))
                return t, losses, torch_params_as_refvae(tc.net)

            engines[name] = run_t

    # warm-up: one epoch per engine (BLAS/OpenMP pools, torch dispatch caches, allocator)
    for name, fn in engines.items():
        fn()
        time.sleep(PAUSE_S)
    load.phase("warmup")

    names = list(engines)
    times = {n: [] for n in names}
    first = {}
    for rnd in range(args.repeats):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for name in order:
            t, losses, params_after = engines[name]()
            times[name].append(t)
            if name not in first:
                first[name] = (losses, params_after)
            elif losses != first[name][0]:
                r.setdefault("nondeterministic", []).append(name)
            time.sleep(PAUSE_S)
    load.phase("timed_rounds")
    for n in names:
        r[f"{n}_times"] = times[n]
        r[f"{n}_s"] = med(times[n])
    if "torch64" in times:
        paired = [a / b for a, b in zip(times["refvae"], times["torch64"])]
        r["ratio_refvae_over_torch64"] = r["refvae_s"] / r["torch64_s"]
        r["ratio_refvae_over_torch64_paired_median"] = med(paired)
        r["ratio_refvae_over_torch32"] = r["refvae_s"] / r["torch32_s"]
        r["pass_speed"] = r["ratio_refvae_over_torch64"] <= TARGET_RATIO
    log("times    " + "   ".join(
        f"{n} {fmt_t(r[f'{n}_s'])} [{fmt_t(min(times[n]))}–{fmt_t(max(times[n]))}]" for n in names))
    if "torch64" in times:
        log(f"ratio    refvae / torch float64 = {r['ratio_refvae_over_torch64']:.2f}× (median of "
            f"per-round ratios {r['ratio_refvae_over_torch64_paired_median']:.2f}×; target <= "
            f"{TARGET_RATIO:g}×: {'PASS' if r['pass_speed'] else 'FAIL'}); refvae / torch float32 = "
            f"{r['ratio_refvae_over_torch32']:.2f}×")

    # ---- agreement after one epoch from the same start
    ref_losses, ref_params = first["refvae"]
    model_params_backup = {k: v.copy() for k, v in model.params.items()}
    for k in model.params:
        model.params[k][...] = ref_params[k]
    ref_after = model.loss(x, sched["eps_eval"])
    for k in model.params:
        model.params[k][...] = model_params_backup[k]
    r["refvae_train_loss"] = epoch_loss(ref_losses, batches)
    r["refvae_loss_after"] = ref_after
    r["refvae_batch_losses"] = ref_losses
    agree = {}
    for name, tc in tcases.items():
        losses, params_after = first[name]
        torch_load_params(torch, tc.net, params_after, tc.dtype)  # the state after the epoch
        after = tc.loss_after()
        a = {"train_loss": epoch_loss(losses, batches), "loss_after": after,
             "batch_losses": losses,
             "rel_train_loss": rel(epoch_loss(losses, batches), r["refvae_train_loss"]),
             "rel_loss_after": rel(after, ref_after),
             "max_rel_batch_loss": max(rel(a_, b_) for a_, b_ in zip(losses, ref_losses)),
             "max_rel_param": param_rel_diff(params_after, ref_params)}
        agree[name] = a
    r["agreement"] = agree
    if "torch64" in agree:
        a = agree["torch64"]
        r["pass_agreement"] = max(a["rel_train_loss"], a["rel_loss_after"]) <= TARGET_REL_LOSS
    log(f"loss     refvae: epoch train loss {r['refvae_train_loss']:.12g}, loss after the epoch "
        f"{ref_after:.12g}")
    for name, a in agree.items():
        log(f"         {name}: train loss {a['train_loss']:.12g} (rel. diff {a['rel_train_loss']:.1e}), "
            f"loss after {a['loss_after']:.12g} (rel. diff {a['rel_loss_after']:.1e}); max rel. batch-loss "
            f"diff {a['max_rel_batch_loss']:.1e}, max rel. parameter diff {a['max_rel_param']:.1e}"
            + (f"  [target <= {TARGET_REL_LOSS:g}: {'PASS' if r['pass_agreement'] else 'FAIL'}]"
               if name == "torch64" else ""))
    if r.get("nondeterministic"):
        log(f"WARNING  repeated epochs gave different losses for {r['nondeterministic']}")
    load.phase("agreement")

    # ---- waterfall: GEMMs only -> bare NumPy twin -> refvae gradient only -> refvae with Adamax
    twin = NumpyTwin(init, L)
    gemm, n_gemm = gemm_only_epoch(init, L, [len(b) for b in batches], x.shape[1])

    def run_twin():
        twin.reset()
        return timed(lambda: twin.epoch(x, batches, eps_list))

    def run_grad_only():
        reset_refvae(model, init)
        return timed(lambda: [model.neg_elbo_and_grad(x[b], e) for b, e in zip(batches, eps_list)])

    def run_twin_grad_only():
        twin.reset()
        return timed(lambda: [twin.loss_and_grad(x[b], e) for b, e in zip(batches, eps_list)])

    def run_refvae_steps_only():
        # Adamax.step alone, on the gradients of the first epoch's batches (recomputed untimed)
        opt = reset_refvae(model, init)
        gs = [model.neg_elbo_and_grad(x[b], e)[1] for b, e in zip(batches, eps_list)]
        return timed(lambda: [opt.step(g) for g in gs])

    def run_twin_steps_only():
        twin.reset()
        gs = [twin.loss_and_grad(x[b], e)[1] for b, e in zip(batches, eps_list)]
        return timed(lambda: [twin.step(g) for g in gs])

    twin.reset()
    twin_losses = twin.epoch(x, batches, eps_list)
    r["twin_max_rel_batch_loss_vs_refvae"] = max(rel(a_, b_) for a_, b_ in zip(twin_losses, ref_losses))
    stages = {"gemm_only": lambda: timed(gemm), "numpy_twin_grad_only": run_twin_grad_only,
              "numpy_twin_epoch": run_twin, "refvae_grad_only": run_grad_only,
              "numpy_twin_adamax_steps_only": run_twin_steps_only,
              "refvae_adamax_steps_only": run_refvae_steps_only}
    wf = {k: [] for k in stages}
    for fn in stages.values():
        fn()
    for rnd in range(args.repeats):
        for k, fn in stages.items():
            wf[k].append(fn()[0])
            time.sleep(0.05)
    r["waterfall"] = {k: med(v) for k, v in wf.items()}
    r["waterfall_times"] = wf
    r["waterfall"]["refvae_epoch"] = r["refvae_s"]
    r["gemms_per_batch"] = n_gemm
    w = r["waterfall"]
    log(f"where    GEMMs only {fmt_t(w['gemm_only'])} ({n_gemm} per minibatch); bare NumPy twin: gradient "
        f"{fmt_t(w['numpy_twin_grad_only'])}, Adamax steps alone {fmt_t(w['numpy_twin_adamax_steps_only'])}, "
        f"epoch {fmt_t(w['numpy_twin_epoch'])}; refvae: gradient "
        f"{fmt_t(w['refvae_grad_only'])}, Adamax steps alone {fmt_t(w['refvae_adamax_steps_only'])}, epoch "
        f"{fmt_t(w['refvae_epoch'])} (twin's batch losses agree to "
        f"{r['twin_max_rel_batch_loss_vs_refvae']:.1e} rel.)")
    load.phase("waterfall")

    # ---- unprofiled stage timings (one minibatch)
    r["stages"] = stage_timings(model, init, x, sched, args.stage_reps)
    log("stages   per minibatch of 64 (median of unprofiled calls):")
    for st in r["stages"]:
        log(f"         {fmt_t(st['s']):>9}  {st['stage']}")
    load.phase("stages")

    # ---- cProfile of one refvae epoch
    r["profile"] = profile_epoch(model, init, x, sched)
    p = r["profile"]
    log(f"profile  one refvae epoch under cProfile: {fmt_t(p['wall_profiled_s'])} wall, "
        f"{p['calls_total']} Python-level calls; self time folded into refvae callers:")
    for c in p["categories"]:
        log(f"         {100 * c['fraction']:5.1f}%  {fmt_t(c['s']):>9}  {c['category']}")
    log("         top functions: " + ", ".join(f"{t['function']} {fmt_t(t['self_s_folded'])}"
                                             for t in p["top_functions"][:8]))
    _bench.flag_contended(r, steal=True)
    return r


# ============================================================================ findings and report

def findings(results):
    """Plain-language lines from the waterfall and the profile."""
    out = []
    for r in results:
        w = r["waterfall"]
        L = r["latent_dim"]
        ep = w["refvae_epoch"]
        gemm = w["gemm_only"]
        twin = w["numpy_twin_epoch"]
        ad = w["refvae_adamax_steps_only"]
        grad = w["refvae_grad_only"]
        twin_ad = w["numpy_twin_adamax_steps_only"]
        slower = r.get("ratio_refvae_over_torch64") is not None and r["ratio_refvae_over_torch64"] > 1.0
        head = (f"L = {L}: refvae's epoch {fmt_t(ep)}"
                + (f" is {r['ratio_refvae_over_torch64']:.2f}× torch float64's {fmt_t(r['torch64_s'])}"
                   if r.get("torch64_s") else ""))
        out.append(head + f". GEMMs alone {fmt_t(gemm)} ({100 * gemm / ep:.0f}% of the epoch); bare NumPy "
                   f"twin {fmt_t(twin)} ({100 * twin / ep:.0f}%); refvae gradient {fmt_t(grad)} vs twin "
                   f"gradient {fmt_t(w['numpy_twin_grad_only'])} (package overhead "
                   f"{fmt_t(grad - w['numpy_twin_grad_only'])}); Adamax steps {fmt_t(ad)} vs in-place twin "
                   f"{fmt_t(twin_ad)}." + (" refvae is slower than torch float64." if slower else ""))
        st = {row["stage"].split(" (")[0].strip(): row["s"] for row in r.get("stages", [])
              if row.get("s") is not None}
        need = ("categorical log_prob", "categorical log_prob_vjp", "reference: NumPy log_softmax on",
                "reference: plain x - max - log", "Adamax.step", "reference: in-place Adamax",
                "of which: _check_grads", "of which: MLP parameter checks", "whole neg_elbo_and_grad",
                "reference: NumPy twin loss_and_grad")
        key = {n: next((k for k in st if k.startswith(n)), None) for n in need}
        if all(key.values()):
            v = {n: st[key[n]] for n in need}
            out.append(
                f"L = {L}: per minibatch (unprofiled): gradient {fmt_t(v['whole neg_elbo_and_grad'])} vs "
                f"bare twin {fmt_t(v['reference: NumPy twin loss_and_grad'])}; categorical log_prob "
                f"{fmt_t(v['categorical log_prob'])} + its VJP {fmt_t(v['categorical log_prob_vjp'])} "
                f"(fused row kernels; for reference, refvae.primitives.log_softmax in NumPy takes "
                f"{fmt_t(v['reference: NumPy log_softmax on'])} and a plain one "
                f"{fmt_t(v['reference: plain x - max - log'])}); Adamax.step "
                f"{fmt_t(v['Adamax.step'])} vs in-place {fmt_t(v['reference: in-place Adamax'])} "
                f"(_check_grads {fmt_t(v['of which: _check_grads'])}); MLP parameter checks "
                f"{fmt_t(v['of which: MLP parameter checks'])} per mlp_forward.")
        cats = r["profile"]["categories"][:5]
        out.append(f"L = {L}: profile (folded self time): " + "; ".join(
            f"{c['category']} {100 * c['fraction']:.0f}%" for c in cats) + ".")
    return out


def markdown(results, prov, args, run_contention, notes):
    out = _bench.md_header(
        "One training epoch: refvae vs PyTorch (`validation/bench_epoch.py`)", prov,
        f", scikit-learn {prov['sklearn']}, torch {prov['torch']}",
        f"(torch {prov['torch_threads']}, BLAS env vars {prov['threads']}, Numba {prov['numba_threads']})")
    out += [f"Setup: digits (first {N_TRAIN} images, values 0..16), categorical likelihood C = {NUM_VALS}, "
            f"hidden {HIDDEN}, leaky ReLU, batch {BATCH}, standard prior (MC KL), Adamax lr {LR:g}. "
            "Every timed epoch starts from the same initial parameters (refvae's, copied into "
            "`nn.Linear` as weight = W.T) with a fresh optimiser, the same batches and the same eps. "
            f"Median over {args.repeats} round(s) after one warm-up epoch per engine; each round "
            "times every engine once, in a rotated order. Ratio = refvae / torch (lower = refvae "
            f"faster; target ≤ {TARGET_RATIO:g}×).", ""]
    bad = [str(r["latent_dim"]) for r in results if r["contended"]]
    out += [_bench.md_machine_load(run_contention, "Contended (timings unreliable): L = " + ", ".join(bad)
                                   if bad else None), ""]
    out += ["## Time per epoch", "",
            "| L | refvae | torch float64 | torch float32 | refvae / torch64 (paired) | refvae / torch32 | speed target |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        def cell(n):
            if f"{n}_s" not in r:
                return "not run"
            ts = r[f"{n}_times"]
            return f"{fmt_t(r[f'{n}_s'])} [{fmt_t(min(ts))}–{fmt_t(max(ts))}]"
        if "ratio_refvae_over_torch64" in r:
            rat = (f"{r['ratio_refvae_over_torch64']:.2f}× ({r['ratio_refvae_over_torch64_paired_median']:.2f}×)")
            rat32 = f"{r['ratio_refvae_over_torch32']:.2f}×"
            st = "PASS" if r["pass_speed"] else "FAIL"
        else:
            rat = rat32 = st = "-"
        out.append(f"| {r['latent_dim']} | {cell('refvae')} | {cell('torch64')} | {cell('torch32')} | "
                   f"{rat} | {rat32} | {st} |")
    out += ["", "## Loss after one epoch from the same start", "",
            "| L | engine | epoch train loss | rel. diff | loss after the epoch | rel. diff | max rel. batch loss diff | max rel. param diff | target ≤ 1e-8 |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        out.append(f"| {r['latent_dim']} | refvae | {r['refvae_train_loss']:.12g} | | "
                   f"{r['refvae_loss_after']:.12g} | | | | |")
        for name, a in r["agreement"].items():
            st = ("PASS" if r["pass_agreement"] else "FAIL") if name == "torch64" else "(context)"
            out.append(f"| {r['latent_dim']} | {name} | {a['train_loss']:.12g} | {a['rel_train_loss']:.1e} | "
                       f"{a['loss_after']:.12g} | {a['rel_loss_after']:.1e} | {a['max_rel_batch_loss']:.1e} | "
                       f"{a['max_rel_param']:.1e} | {st} |")
    out += ["", "## Where refvae's time goes", "",
            "Unprofiled medians of the same epoch (same batches, same start):", "",
            "| L | GEMMs only | NumPy twin: gradient | NumPy twin: Adamax steps | NumPy twin: epoch | "
            "refvae: gradient | refvae: Adamax steps | refvae: epoch |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        w = r["waterfall"]
        out.append(f"| {r['latent_dim']} | {fmt_t(w['gemm_only'])} | {fmt_t(w['numpy_twin_grad_only'])} | "
                   f"{fmt_t(w['numpy_twin_adamax_steps_only'])} | "
                   f"{fmt_t(w['numpy_twin_epoch'])} | {fmt_t(w['refvae_grad_only'])} | "
                   f"{fmt_t(w['refvae_adamax_steps_only'])} | {fmt_t(w['refvae_epoch'])} |")
    out += ["", "\"GEMMs only\": the 17 matrix products per minibatch (6 forward, 6 dW, 5 dx) on the same "
            "shapes into preallocated outputs. \"NumPy twin\": the same forward/backward and Adamax in "
            "bare NumPy without input checks, with in-place optimiser updates (a lower reference, not "
            "a replacement: it skips refvae's careful 1 − p_k and edge cases).", ""]
    for r in results:
        if not r.get("stages"):
            continue
        out += [f"Unprofiled stages of one minibatch (64 rows), L = {r['latent_dim']} (median of "
                f"{args.stage_reps} calls; indented rows are parts of, or references for, the row above):", "",
                "| stage | per minibatch | × 16 minibatches |", "|---|---|---|"]
        for st in r["stages"]:
            name = st["stage"].replace("|", "\\|")
            if st["s"] is None:
                out.append(f"| {name} | | |")
            else:
                out.append(f"| {name} | {fmt_t(st['s'])} | {fmt_t(16 * st['s'])} |")
        out.append("")
    for r in results:
        p = r["profile"]
        out += [f"cProfile, L = {r['latent_dim']}: {fmt_t(p['wall_profiled_s'])} wall under the profiler, "
                f"{p['calls_total']} Python-level calls per epoch. Self time of NumPy internals and "
                "builtins folded into the refvae function that called them:", "",
                "| category | time | share |", "|---|---|---|"]
        for c in p["categories"]:
            out.append(f"| {c['category']} | {fmt_t(c['s'])} | {100 * c['fraction']:.1f}% |")
        out += ["", "| function (folded self time) | calls | time |", "|---|---|---|"]
        for t in p["top_functions"][:12]:
            out.append(f"| `{t['function']}` | {t['calls']} | {fmt_t(t['self_s_folded'])} |")
        out.append("")
    out += ["## Findings", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


# ============================================================================ main

def build_parser():
    p = _bench.arg_parser(__doc__, "L = 2 only, 2 rounds (seconds)")
    p.add_argument("--latent", type=int, nargs="+", default=None, help="latent sizes (default 2 16)")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (median); default 7")
    p.add_argument("--stage-reps", type=int, default=50,
                   help="calls per stage in the per-minibatch stage timings (median); default 50")
    return _bench.add_run_options(p, "bench_epoch")


def main(argv=None):
    args = build_parser().parse_args(argv)
    latents = args.latent or list(DEFAULT_LATENTS)
    if args.quick:
        latents = latents[:1]
        args.repeats = min(args.repeats, 2)
        args.stage_reps = min(args.stage_reps, 10)
    args.repeats = max(1, args.repeats)
    json_path, md_path = _bench.output_paths(args, "bench_epoch")

    torch, torch_status = _bench.import_torch(args.no_torch, THREADS)
    _bench.wait_before_run(args.wait_idle)
    t_start = time.perf_counter()
    snap_run = cpu_snapshot()
    x = load_train()
    prov = provenance(args, torch, torch_status)
    log(f"refvae {prov['refvae']} ({prov['git_revision']}); Python {prov['python']}, NumPy "
        f"{prov['numpy']}, torch {prov['torch']} ({prov['torch_blas']}), scikit-learn {prov['sklearn']}")
    _bench.log_uncommitted(prov)
    log(f"CPU {prov['cpu_model']} ({prov['cpu_count']} logical); threads {THREADS} (torch "
        f"{prov['torch_threads']}, env " + ", ".join(f"{k}={v}" for k, v in prov["thread_env"].items())
        + f"); seed {args.seed}; load average {prov['loadavg_start']}")

    results = [bench_latent(L, x, args, torch) for L in latents]
    run_contention = contention(snap_run, cpu_snapshot())
    notes = findings(results)
    log("\n=== findings")
    for n in notes:
        log("- " + n)
    total = time.perf_counter() - t_start
    log(f"whole run: other processes used {run_contention['others_cores']:.2f} cores on average; "
        f"total {total:.0f} s")
    report = {"provenance": prov, "settings": {
        "latents": latents, "repeats": args.repeats, "quick": args.quick, "n_train": N_TRAIN,
        "hidden": list(HIDDEN), "batch_size": BATCH, "lr": LR, "num_vals": NUM_VALS,
        "activation": "leaky_relu", "prior": "standard", "kl": "mc", "optimizer": "Adamax",
        "pause_between_epochs_s": PAUSE_S, "target_ratio": TARGET_RATIO,
        "target_rel_loss": TARGET_REL_LOSS, "total_s": total, "contention": run_contention},
        "results": results, "findings": notes}
    _bench.write_report(json_path, md_path, report, markdown(results, prov, args, run_contention, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
