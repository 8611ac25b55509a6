"""The VAE's forward pass against its definition and its backward pass against finite differences.

Gradient checks use ``refvae.gradcheck.check_vjp`` (random direction, central differences,
h = eps**(1/3) * scale, tolerance ``vjp_central_difference`` from the table) with respect to every
parameter, for every decoder x activation. Finite differences are only valid away from the kinks
of relu/leaky_relu: each check first asserts that no pre-activation lies within 1e-3 of 0, so a
seed that lands near a kink is reported as such rather than as a wrong gradient (the step moves a
pre-activation by ~1e-5 at most).
"""

import numpy as np
import pytest

from refvae import gaussian
from refvae.gradcheck import check_vjp
from refvae.priors import StandardPrior
from refvae.vae import VAE

LIKELIHOODS = ["categorical", "bernoulli", "gaussian"]
ACTIVATIONS = ["leaky_relu", "relu", "tanh", "sigmoid", "softplus"]


def make_data(likelihood, rng, B, D, C=5):
    if likelihood == "categorical":
        return rng.integers(0, C, size=(B, D)).astype(float)
    if likelihood == "bernoulli":
        return (rng.uniform(size=(B, D)) < 0.4).astype(float)
    return rng.normal(size=(B, D))


def tiny_model(likelihood, activation, rng, prior="standard", kl="mc", D=6, L=2, hidden=(7, 5)):
    return VAE(D, L, hidden, activation, likelihood, num_vals=5, prior=prior, rng=rng, kl=kl)


def away_from_kinks(model, x, eps, margin=1e-3):
    """True unless a relu/leaky_relu input (a hidden layer's pre-activation) is within margin of 0."""
    if model.activation not in ("relu", "leaky_relu"):
        return True
    trace = model.trace(x, eps)
    last = len(model.hidden)  # the output layer has no activation
    pre = [v for k, v in trace.items() if k.endswith(".pre") and not k.endswith(f".{last}.pre")]
    return min(float(np.min(np.abs(p))) for p in pre) > margin


def loss_check(model, x, eps, rng, reduction="mean", **kw):
    """check_vjp on params -> reduced neg_elbo (a scalar)."""
    def f(params):
        return model.neg_elbo(x, eps, reduction, params=params).value

    def vjp(g, params):
        _, grads = model.neg_elbo_and_grad(x, eps, reduction, params=params)
        return {k: g * v for k, v in grads.items()}

    return check_vjp(f, vjp, dict(model.params), rng=rng, **kw)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_neg_elbo_gradient_every_parameter(likelihood, activation, rng):
    model = tiny_model(likelihood, activation, rng)
    x = make_data(likelihood, rng, 4, model.x_dim)
    eps = rng.standard_normal((4, model.latent_dim))
    assert away_from_kinks(model, x, eps), "seed puts a pre-activation within 1e-3 of a kink"
    report = loss_check(model, x, eps, rng)
    assert report.passed, str(report)
    assert {e.name for e in report.entries} == set(model.params)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradient_reduction_and_analytic_kl(reduction, rng):
    for kl in ("mc", "analytic"):
        model = tiny_model("categorical", "tanh", rng, kl=kl)
        x = make_data("categorical", rng, 3, model.x_dim)
        eps = rng.standard_normal((3, model.latent_dim))
        report = loss_check(model, x, eps, rng, reduction=reduction, method="richardson")
        assert report.passed, str(report)


def test_gradient_dict_has_exactly_the_parameter_keys_and_shapes(rng):
    model = tiny_model("gaussian", "leaky_relu", rng)
    x = make_data("gaussian", rng, 3, model.x_dim)
    _, grads = model.neg_elbo_and_grad(x, rng.standard_normal((3, 2)))
    assert set(grads) == set(model.params)
    assert all(grads[k].shape == model.params[k].shape for k in grads)
    assert "decoder.log_var" in grads


def test_parameter_names_follow_the_spec(rng):
    model = VAE(64, 2, (256, 256), "leaky_relu", "categorical", num_vals=17, prior="standard", rng=rng)
    shapes = {k: v.shape for k, v in model.params.items()}
    assert shapes == {
        "encoder.0.W": (64, 256), "encoder.0.b": (256,), "encoder.1.W": (256, 256),
        "encoder.1.b": (256,), "encoder.2.W": (256, 4), "encoder.2.b": (4,),
        "decoder.0.W": (2, 256), "decoder.0.b": (256,), "decoder.1.W": (256, 256),
        "decoder.1.b": (256,), "decoder.2.W": (256, 64 * 17), "decoder.2.b": (64 * 17,)}


def test_neg_elbo_equals_its_definition(rng):
    """neg_elbo = -(ln p(x|z) + ln p(z) - ln q(z|x)), each term recomputed independently."""
    model = tiny_model("gaussian", "tanh", rng)
    x = make_data("gaussian", rng, 5, model.x_dim)
    eps = rng.standard_normal((5, model.latent_dim))
    res = model.neg_elbo(x, eps)
    mu, log_var = model.encode(x)
    z = mu + np.exp(0.5 * log_var) * eps
    mean = model.decode(z)
    lv = model.params["decoder.log_var"]
    ln2pi = np.log(2 * np.pi)
    log_px = -0.5 * np.sum(ln2pi + lv + (x - mean) ** 2 / np.exp(lv), axis=1)
    log_pz = -0.5 * np.sum(ln2pi + z ** 2, axis=1)
    log_q = -0.5 * np.sum(ln2pi + log_var + eps ** 2, axis=1)
    expected = -(log_px + log_pz - log_q)
    np.testing.assert_allclose(res.per_example, expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(res.value, expected.mean(), rtol=1e-13)
    assert model.neg_elbo(x, eps, "sum").value == pytest.approx(expected.sum(), rel=1e-13)


def test_batch_mean_is_not_a_sum(rng):
    """The training loss is the batch *mean*: doubling the batch by repetition leaves it unchanged."""
    model = tiny_model("bernoulli", "tanh", rng)
    x = make_data("bernoulli", rng, 4, model.x_dim)
    eps = rng.standard_normal((4, 2))
    one = model.loss(x, eps)
    two = model.loss(np.vstack([x, x]), np.vstack([eps, eps]))
    assert two == pytest.approx(one, rel=1e-14)
    _, g1 = model.neg_elbo_and_grad(x, eps)
    _, g2 = model.neg_elbo_and_grad(np.vstack([x, x]), np.vstack([eps, eps]))
    for k in g1:
        np.testing.assert_allclose(g2[k], g1[k], rtol=1e-12, atol=1e-15)


def test_analytic_kl_is_the_expectation_of_the_mc_kl(rng):
    """E_eps[ln q(z|x) - ln p(z)] = KL[q(z|x) || N(0, I)] for each x.

    Monte Carlo with n = 20000 draws per example; the standard error is estimated from the draws
    and the tolerance is 5.3 standard errors, so each of the 3 comparisons fails by chance with
    probability < 1.2e-7 (normal approximation; the summand has finite fourth moment), 3.6e-7 in
    all; seed fixed. A missing -1/2 ln 2 pi in either density shifts the mean by 0.92 per latent
    dimension, > 100 standard errors here.
    """
    model = tiny_model("categorical", "tanh", rng)
    x = make_data("categorical", rng, 3, model.x_dim)
    mu, log_var = model.encode(x)
    n = 20000
    for b in range(3):
        eps = np.random.default_rng(7 + b).standard_normal((n, model.latent_dim))
        xb = np.repeat(x[b:b + 1], n, axis=0)
        res = model.neg_elbo(xb, eps)
        mc = res.kl
        exact = gaussian.kl(mu[b], log_var[b], np.zeros(2), np.zeros(2))
        se = mc.std(ddof=1) / np.sqrt(n)
        assert abs(mc.mean() - exact) < 5.3 * se, (mc.mean(), exact, se)


def test_trace_is_in_data_flow_order(rng):
    model = tiny_model("categorical", "relu", rng)
    x = make_data("categorical", rng, 2, model.x_dim)
    names = list(model.trace(x, rng.standard_normal((2, 2))))
    order = ["encoder.0.pre", "encoder.0.out", "encoder.2.pre", "mu", "log_var", "eps", "z",
             "decoder.0.pre", "decoder.2.pre", "log_px_z", "log_pz", "log_qz_x", "neg_elbo"]
    positions = [names.index(n) for n in order]
    assert positions == sorted(positions), names


def test_prior_interface_standard(rng):
    prior = StandardPrior(3)
    z = rng.normal(size=(4, 3))
    np.testing.assert_allclose(prior.log_prob(z), gaussian.log_prob(z, np.zeros(3), np.zeros(3)),
                               rtol=1e-15)
    report = check_vjp(lambda z: prior.log_prob(z), lambda g, z: (prior.log_prob_vjp(g, z)[0],),
                       (z,), rng=rng)
    assert report.passed, str(report)
    assert prior.draw(5, rng).shape == (5, 3)


def test_sample_shapes_and_ranges(rng):
    model = tiny_model("categorical", "tanh", rng)
    xs = model.sample(6, rng, mode="sample")
    assert xs.shape == (6, model.x_dim) and set(np.unique(xs)) <= set(range(5))
    xm = model.sample(6, rng)
    assert np.all((xm >= 0) & (xm <= 4))


def test_save_load_round_trip(tmp_path, rng):
    model = tiny_model("gaussian", "softplus", rng)
    model.save(tmp_path / "m")
    back = VAE.load(tmp_path / "m")
    assert back.config() == model.config()
    for k in model.params:
        np.testing.assert_array_equal(back.params[k], model.params[k])


@pytest.mark.parametrize("bad, match", [
    (dict(x=np.zeros((2, 5))), "x"),
    (dict(x=np.full((2, 6), np.nan)), "x"),
    (dict(eps=np.zeros((2, 3))), "eps"),
    (dict(eps=np.array([[np.inf, 0.0], [0.0, 0.0]])), "eps"),
])
def test_bad_input_is_named(bad, match, rng):
    model = tiny_model("gaussian", "tanh", rng)
    args = dict(x=np.zeros((2, 6)), eps=np.zeros((2, 2)))
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        model.neg_elbo(args["x"], args["eps"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(likelihood="poisson"), "likelihood"),
    (dict(activation="gelu"), "activation"),
    (dict(prior="nope"), "prior"),
    (dict(kl="exact"), "kl"),
    (dict(latent_dim=0), "latent_dim"),
])
def test_bad_configuration_is_named(kwargs, match, rng):
    base = dict(x_dim=6, latent_dim=2, hidden=(4,), activation="tanh", likelihood="gaussian")
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        VAE(**base, rng=rng)


def test_reduction_must_be_known(rng):
    model = tiny_model("gaussian", "tanh", rng)
    with pytest.raises(ValueError, match="reduction"):
        model.neg_elbo(np.zeros((2, 6)), np.zeros((2, 2)), reduction="avg")


@pytest.mark.torch
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_same_expression_in_torch_float64(likelihood, rng):
    """micrograd-style: the same model in PyTorch float64 autograd gives the same loss and grads."""
    torch = pytest.importorskip("torch", reason="torch is an optional extra (refvae[torch])")
    model = tiny_model(likelihood, "leaky_relu", rng)
    x = make_data(likelihood, rng, 5, model.x_dim)
    eps = rng.standard_normal((5, model.latent_dim))
    value, grads = model.neg_elbo_and_grad(x, eps)

    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in model.params.items()}
    X, E = torch.tensor(x), torch.tensor(eps)

    def mlp(prefix, h, n):
        for i in range(n):
            h = h @ P[f"{prefix}.{i}.W"] + P[f"{prefix}.{i}.b"]
            if i < n - 1:
                h = torch.nn.functional.leaky_relu(h, 0.01)
        return h

    h = mlp("encoder", X, 3)
    mu, lv = h[:, :2], h[:, 2:]
    z = mu + torch.exp(0.5 * lv) * E
    out = mlp("decoder", z, 3)
    normal = torch.distributions.Normal
    if likelihood == "categorical":
        logp = torch.log_softmax(out.reshape(5, model.x_dim, 5), -1)
        lpx = logp.gather(-1, X.long().unsqueeze(-1)).squeeze(-1).sum(-1)
    elif likelihood == "bernoulli":
        lpx = -torch.nn.functional.binary_cross_entropy_with_logits(out, X, reduction="none").sum(-1)
    else:
        lpx = normal(out, torch.exp(0.5 * P["decoder.log_var"])).log_prob(X).sum(-1)
    lpz = normal(torch.zeros(2, dtype=torch.float64), 1.0).log_prob(z).sum(-1)
    lq = normal(mu, torch.exp(0.5 * lv)).log_prob(z).sum(-1)
    loss = -(lpx + lpz - lq).mean()
    loss.backward()
    assert value == pytest.approx(loss.item(), rel=1e-13)
    for k, g in grads.items():
        np.testing.assert_allclose(g, P[k].grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=k)


def test_sum_paths_adds_in_path_order_from_positive_zero():
    """_sum_paths: (0 + g_1) + g_2 per parameter in path order (-0.0 becomes +0.0, as a sum into
    zeros), zeros off every path; owned arrays are reused, the others left untouched."""
    from refvae.vae import _sum_paths
    params = {"a": np.zeros(3), "b": np.zeros(2), "c": np.zeros(())}
    prior = {"a": np.array([-0.0, 1e16, -0.0]), "b": np.array([-0.0, 2.0])}
    net = {"a": np.array([-0.0, 1.0, 3.0])}
    prior_copy = {k: v.copy() for k, v in prior.items()}
    total = _sum_paths(params, prior, net, owned=(net,))
    assert list(total) == ["a", "b", "c"]
    assert np.array_equal(total["a"], [0.0, 1e16 + 1.0, 3.0]) and not np.signbit(total["a"]).any()
    assert np.array_equal(total["b"], [0.0, 2.0]) and not np.signbit(total["b"]).any()
    assert total["c"].shape == () and total["c"] == 0.0
    assert all(np.array_equal(prior[k], prior_copy[k]) and
               np.array_equal(np.signbit(prior[k]), np.signbit(prior_copy[k])) for k in prior)
    # an owned path's array becomes the sum (no copy)
    own = {"b": np.array([-0.0, 5.0])}
    total = _sum_paths(params, own, owned=(own,))
    assert total["b"] is own["b"] and not np.signbit(total["b"]).any()


def test_teaching_page_quotes_vae_backward():
    """docs/gradients-without-autograd.md shows VAE.backward's lines verbatim (the page says "one
    line per step": it must stay the code)."""
    import inspect
    import os
    import re
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "gradients-without-autograd.md"), encoding="utf-8") as fh:
        block = re.search(r"## The same steps in the code.*?```py\n(.*?)```", fh.read(), re.S).group(1)
    code = [line.strip() for line in inspect.getsource(VAE.backward).splitlines()]
    quoted = [line.strip() for line in block.splitlines()]
    assert len(quoted) >= 10 and all(line in code for line in quoted), quoted
    start = code.index(quoted[0])
    assert code[start:start + len(quoted)] == quoted      # in order, nothing left out in between
