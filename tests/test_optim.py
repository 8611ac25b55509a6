"""Adam and Adamax against their formulas and against torch.optim.

Two independent references:

* the textbook recurrences re-derived here in mpmath (dps=50; every float64 input converted
  exactly), compared after every step — tolerance ``optim_vs_exact``;
* ``torch.optim.Adam`` / ``torch.optim.Adamax`` in float64 with ``foreach=False`` (the
  single-tensor implementation whose order of operations refvae follows), 20 steps, compared after
  every step — tolerance ``optim_vs_torch``, skipped with a stated reason when torch is absent.

Errors are element-wise and relative to the magnitude of the terms each entry is made of (the
usual scale for a rounding error when terms can cancel), ``|actual - expected| <= rtol * scale``:

* first moment: ``M_t = beta1 M_{t-1} + (1 - beta1) |g_t|`` (m_t with |g| in place of g);
* second moment v (Adam) and infinity norm u (Adamax): the value itself (non-negative terms);
* parameters: ``P_t = P_{t-1} + step_t * M_t / denom_t * kappa_t`` from ``P_0 = |p_0|``, where
  ``kappa_t = 1 + beta1^t / (1 - beta1^t) [+ beta2^t / (2 (1 - beta2^t)) for Adam]`` is the
  condition number of the bias corrections ``1 - beta^t`` with respect to the rounding of
  ``beta^t``: PyTorch computes them in float64 as ``1 - beta**t``, which loses up to
  ``log2(1 / (1 - beta2^t))`` bits at small t (about 9 bits at t = 2 for beta2 = 0.999).

Gradients span 1e-9..1e3 and contain exact zeros so that the placement of eps matters (Adam:
after the bias correction of sqrt(v); Adamax: inside the maximum), and one hyper-parameter set
has beta1 < 0.5 so that both branches of ATen's lerp are exercised.
"""

import mpmath
import numpy as np
import pytest

from refvae.optim import OPTIMIZERS, Adam, Adamax, make_optimizer
from refvae.tolerances import tolerance

SHAPES = {"encoder.0.W": (4, 3), "encoder.0.b": (3,), "prior.means": (2, 1, 2), "decoder.log_var": ()}

HYPER = {
    "defaults": {},
    "custom": {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6},
    "beta1_below_half": {"lr": 0.01, "betas": (0.3, 0.9), "eps": 1e-7},
}


def random_problem(rng, steps):
    params = {k: np.array(rng.standard_normal(s)) for k, s in SHAPES.items()}
    grads = []
    for _ in range(steps):
        g = {}
        for k, s in SHAPES.items():
            a = np.array(rng.standard_normal(s) * 10.0 ** rng.uniform(-9, 3, size=s))
            a[rng.uniform(size=s) < 0.15] = 0.0
            g[k] = a
        grads.append(g)
    return params, grads


def relative_to_scale(actual, expected, scale):
    """max |actual - expected| / scale over the entries (0 where they agree exactly)."""
    diff = np.abs(np.asarray(actual) - np.asarray(expected))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / scale)
    return float(np.max(ratio))


class Scales:
    """The magnitudes the errors are measured against (module docstring), updated after each step
    from the optimiser's own state (they only need to be right to a factor of ~2)."""

    def __init__(self, opt, params):
        self.opt = opt
        self.m = {k: np.zeros(np.shape(p)) for k, p in params.items()}
        self.p = {k: np.abs(p) for k, p in params.items()}

    def update(self, grads):
        opt, t = self.opt, self.opt.t
        b1, b2 = opt.betas
        kappa = 1 + b1 ** t / (1 - b1 ** t)
        for k, g in grads.items():
            self.m[k] = b1 * self.m[k] + (1 - b1) * np.abs(g)
            if isinstance(opt, Adam):
                denom = np.sqrt(opt.v[k]) / np.sqrt(1 - b2 ** t) + opt.eps
                kappa_k = kappa + b2 ** t / (2 * (1 - b2 ** t))
            else:
                denom, kappa_k = opt.u[k], kappa
            self.p[k] = self.p[k] + opt.lr / (1 - b1 ** t) * self.m[k] / denom * kappa_k


def hyper_of(cls, kw):
    lr = kw.get("lr", 1e-3 if cls is Adam else 2e-3)
    b1, b2 = kw.get("betas", (0.9, 0.999))
    return lr, b1, b2, kw.get("eps", 1e-8)


class ExactReference:
    """The textbook recurrences in mpmath, element by element, from float64 inputs taken exactly."""

    def __init__(self, kind, params, lr, b1, b2, eps):
        mp = mpmath.mpf
        self.kind = kind
        self.lr, self.b1, self.b2, self.eps = mp(lr), mp(b1), mp(b2), mp(eps)
        self.p = {k: [mp(x) for x in v.ravel()] for k, v in params.items()}
        self.m = {k: [mp(0)] * len(v) for k, v in self.p.items()}
        self.s = {k: [mp(0)] * len(v) for k, v in self.p.items()}
        self.t = 0

    def step(self, grads):
        self.t += 1
        t, b1, b2, eps, lr = self.t, self.b1, self.b2, self.eps, self.lr
        for k in self.p:
            g = [mpmath.mpf(x) for x in grads[k].ravel()]
            self.m[k] = [b1 * m + (1 - b1) * gi for m, gi in zip(self.m[k], g)]
            if self.kind == "adam":
                # m_hat / (sqrt(v_hat) + eps), v_hat = v / (1 - b2^t): Kingma & Ba, Algorithm 1
                self.s[k] = [b2 * v + (1 - b2) * gi ** 2 for v, gi in zip(self.s[k], g)]
                self.p[k] = [p - lr * (m / (1 - b1 ** t)) / (mpmath.sqrt(v / (1 - b2 ** t)) + eps)
                             for p, m, v in zip(self.p[k], self.m[k], self.s[k])]
            else:
                # torch's Adamax: u = max(b2 u, |g| + eps), p -= lr / (1 - b1^t) * m / u
                self.s[k] = [max(b2 * u, abs(gi) + eps) for u, gi in zip(self.s[k], g)]
                self.p[k] = [p - lr / (1 - b1 ** t) * m / u
                             for p, m, u in zip(self.p[k], self.m[k], self.s[k])]

    def arrays(self, which):
        d = getattr(self, which)
        return {k: np.array([float(x) for x in d[k]]).reshape(SHAPES[k]) for k in d}


@pytest.mark.parametrize("hyper", list(HYPER))
@pytest.mark.parametrize("cls", [Adam, Adamax], ids=["adam", "adamax"])
def test_matches_exact_formulas_step_by_step(cls, hyper, rng):
    kw = HYPER[hyper]
    params, grads = random_problem(rng, steps=8)
    with mpmath.workdps(50):
        ref = ExactReference("adam" if cls is Adam else "adamax", params, *hyper_of(cls, kw))
        opt = cls(params, **kw)
        scales = Scales(opt, params)
        second = "v" if cls is Adam else "u"
        tol = tolerance("optim_vs_exact")
        for t, g in enumerate(grads, 1):
            opt.step(g)
            ref.step(g)
            scales.update(g)
            assert opt.t == t
            for which, mine in (("p", params), ("m", opt.m), ("s", getattr(opt, second))):
                exact = ref.arrays(which)
                for k in SHAPES:
                    scale = {"p": scales.p, "m": scales.m}[which][k] if which != "s" else np.abs(exact[k])
                    err = relative_to_scale(mine[k], exact[k], scale)
                    assert err <= tol.rtol, (f"step {t}, {which}[{k!r}]: error {err:.3g} relative to "
                                             f"the scale of its terms > {tol.rtol:.3g}")


def test_update_is_in_place_and_keeps_objects(rng):
    params, grads = random_problem(rng, steps=1)
    ids = {k: id(v) for k, v in params.items()}
    before = {k: v.copy() for k, v in params.items()}
    opt = Adamax(params)
    opt.step(grads[0])
    assert opt.params is params
    assert {k: id(v) for k, v in params.items()} == ids
    assert all(not np.array_equal(params[k], before[k]) for k in params)


def test_first_adam_step_is_lr_times_sign():
    """Known answer: after one Adam step with eps=0, every parameter moves by exactly -lr*sign(g)
    up to rounding (m_hat = g, sqrt(v_hat) = |g|)."""
    params = {"w": np.array([1.0, -2.0, 3.0])}
    g = np.array([0.3, -7.0, 1e-4])
    Adam(params, lr=0.1, eps=0.0).step({"w": g})
    np.testing.assert_allclose(params["w"], [0.9, -1.9, 2.9], rtol=4 * 2.0 ** -52)


def test_adamax_eps_inside_the_maximum():
    """With a zero gradient the infinity norm is max(beta2 u, 0 + eps) = eps, not 0."""
    params = {"w": np.zeros(2)}
    opt = Adamax(params, eps=1e-8)
    opt.step({"w": np.array([0.0, 1.0])})
    assert opt.u["w"][0] == 1e-8 and opt.u["w"][1] == 1.0 + 1e-8
    assert params["w"][0] == 0.0  # m = 0 there


@pytest.mark.parametrize("cls", [Adam, Adamax])
def test_bad_gradients_name_the_key_and_change_nothing(cls):
    params = {"a": np.ones((2, 3)), "b": np.zeros(4)}
    opt = cls(params)
    good = {"a": np.ones((2, 3)), "b": np.ones(4)}
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        opt.step({"a": np.ones((2, 3))})
    with pytest.raises(ValueError, match=r"extra \['c'\]"):
        opt.step({**good, "c": np.ones(1)})
    with pytest.raises(ValueError, match=r"grads\['a'\] must have shape \(2, 3\)"):
        opt.step({"a": np.ones((3, 2)), "b": np.ones(4)})
    with pytest.raises(ValueError, match=r"grads\['b'\] must not contain NaN"):
        opt.step({"a": np.ones((2, 3)), "b": np.array([1.0, np.nan, 0.0, 0.0])})
    assert opt.t == 0
    np.testing.assert_array_equal(params["a"], 1.0)
    np.testing.assert_array_equal(params["b"], 0.0)


def test_bad_construction():
    with pytest.raises(ValueError, match="lr"):
        Adam({"a": np.ones(2)}, lr=-1.0)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        Adamax({"a": np.ones(2)}, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="eps"):
        Adam({"a": np.ones(2)}, eps=float("nan"))
    with pytest.raises(TypeError, match=r"params\['a'\] must be a float64"):
        Adam({"a": np.ones(2, dtype=np.float32)})
    ro = np.ones(2)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        Adam({"a": ro})
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        make_optimizer("sgd", {"a": np.ones(2)})
    assert set(OPTIMIZERS) == {"adam", "adamax"}


@pytest.mark.parametrize("cls", [Adam, Adamax])
def test_state_dict_round_trip_resumes_identically(cls, rng):
    params, grads = random_problem(rng, steps=6)
    copy = {k: v.copy() for k, v in params.items()}
    a = cls(params)
    for g in grads[:3]:
        a.step(g)
    state = a.state_dict()
    b = cls(copy)
    for k in copy:
        copy[k][...] = params[k]
    b.load_state_dict(state)
    for g in grads[3:]:
        a.step(g)
        b.step(g)
    for k in params:
        np.testing.assert_array_equal(params[k], copy[k])
    bad = dict(state, m={"encoder.0.W": state["m"]["encoder.0.W"]})
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict(bad)


@pytest.mark.torch
@pytest.mark.parametrize("hyper", list(HYPER))
@pytest.mark.parametrize("name", ["adam", "adamax"])
def test_same_updates_as_torch_float64(name, hyper, rng):
    torch = pytest.importorskip("torch", reason="torch is an optional extra (refvae[torch])")
    kw = HYPER[hyper]
    cls = OPTIMIZERS[name]
    params, grads = random_problem(rng, steps=20)
    tparams = {k: torch.tensor(v.copy(), dtype=torch.float64) for k, v in params.items()}
    tcls = torch.optim.Adam if name == "adam" else torch.optim.Adamax
    topt = tcls(list(tparams.values()), foreach=False, **kw)
    opt = cls(params, **kw)
    scales = Scales(opt, params)
    tol = tolerance("optim_vs_torch")
    for t, g in enumerate(grads, 1):
        opt.step(g)
        scales.update(g)
        for k, tp in tparams.items():
            tp.grad = torch.tensor(g[k], dtype=torch.float64)
        topt.step()
        for k, tp in tparams.items():
            st = topt.state[tp]
            pairs = [("param", params[k], tp.numpy(), scales.p[k]),
                     ("exp_avg", opt.m[k], st["exp_avg"].numpy(), scales.m[k])]
            if name == "adam":
                pairs.append(("exp_avg_sq", opt.v[k], st["exp_avg_sq"].numpy(), st["exp_avg_sq"].numpy()))
            else:
                pairs.append(("exp_inf", opt.u[k], st["exp_inf"].numpy(), st["exp_inf"].numpy()))
            for what, mine, theirs, scale in pairs:
                err = relative_to_scale(mine, theirs, scale)
                assert err <= tol.rtol, (f"step {t}, {what} of {k!r}: error {err:.3g} relative to the "
                                         f"scale of its terms > {tol.rtol:.3g}")
