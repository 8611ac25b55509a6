"""The training loop with tiny fake models whose losses and gradients are known exactly.

``Quadratic``: loss(x, eps) = mean_i [ 1/2 ||w - x_i||^2 + 1/2 ||a - eps_i||^2 ], gradient
(w - mean x, a - mean eps); its minimiser over a data set is w = mean(x).
``Scripted``: validation losses follow a given sequence, so the early-stopping bookkeeping can be
checked epoch by epoch.
"""

import sys

import numpy as np
import pytest

from refvae.train import TrainResult, fit


class Quadratic:
    def __init__(self, D=3, L=2, w0=None):
        self.latent_dim = L
        self.params = {"w": np.zeros(D) if w0 is None else np.array(w0, dtype=float),
                       "a": np.zeros(L)}
        self.calls = []       # (x, eps) of every training call
        self.snapshots = []   # params at every validation call (epoch 0, 1, 2, ...)

    def _value(self, x, eps):
        w, a = self.params["w"], self.params["a"]
        return float(np.mean(0.5 * np.sum((w - x) ** 2, 1) + 0.5 * np.sum((a - eps) ** 2, 1)))

    def neg_elbo_and_grad(self, x, eps):
        self.calls.append((x.copy(), eps.copy()))
        grads = {"w": self.params["w"] - x.mean(0), "a": self.params["a"] - eps.mean(0)}
        return self._value(x, eps), grads

    def loss(self, x, eps):
        self.snapshots.append({k: v.copy() for k, v in self.params.items()})
        return self._value(x, eps)


class Scripted(Quadratic):
    """Validation loss read from ``script`` (epoch 0 first), whatever the parameters."""

    def __init__(self, script):
        super().__init__()
        self.script = list(script)

    def loss(self, x, eps):
        super().loss(x, eps)
        return self.script[len(self.snapshots) - 1]


def data(rng, n_train=50, n_val=20, D=3, shift=2.0):
    return rng.normal(shift, 1.0, (n_train, D)), rng.normal(shift, 1.0, (n_val, D))


def test_loss_decreases_towards_the_known_minimum(rng):
    x_train, x_val = data(rng)
    model = Quadratic()
    res = fit(model, x_train, x_val, rng=rng, optimizer="adam", lr=0.05, batch_size=16,
              max_epochs=60, patience=60, quiet=True)
    assert isinstance(res, TrainResult)
    assert res.epochs_run == 60 and not res.stopped_early
    assert len(res.train_loss) == len(res.val_loss) == 60
    assert res.train_loss[-1] < 0.5 * res.train_loss[0]
    assert res.val_loss[-1] < 0.5 * res.initial_val_loss
    np.testing.assert_allclose(model.params["w"], x_train.mean(0), atol=0.3)


@pytest.mark.parametrize("optimizer", ["adam", "adamax"])
def test_early_stopping_restores_the_best_parameters(optimizer, rng):
    """Train drives w to mean(x_train) = 2; the validation data sit at 0.6, on the way there, so the
    validation loss improves, then gets worse after some epoch k; training stops patience epochs
    after k and the parameters of epoch k are restored."""
    x_train, _ = data(rng, shift=2.0)
    x_val = rng.normal(0.6, 0.1, (20, 3))
    model = Quadratic()
    params, arrays = model.params, dict(model.params)
    res = fit(model, x_train, x_val, rng=rng, optimizer=optimizer, lr=0.02, batch_size=10,
              max_epochs=500, patience=5, quiet=True)
    assert res.stopped_early
    k = res.best_epoch
    assert 1 <= k and res.epochs_run == k + 5
    assert res.best_val_loss == min(res.val_loss) == res.val_loss[k - 1] < res.initial_val_loss
    assert all(v >= res.best_val_loss for v in res.val_loss[k:])
    # restored: the same dict and array objects, holding the values seen at epoch k
    assert model.params is params and all(model.params[n] is arrays[n] for n in arrays)
    for n in params:
        np.testing.assert_array_equal(params[n], model.snapshots[k][n])
    assert not np.array_equal(params["w"], model.snapshots[-1]["w"])


@pytest.mark.parametrize("script, patience, best, run, early", [
    ([5, 4, 3, 2, 2.5, 2.6, 2.7, 1, 1, 1], 3, 3, 6, True),     # stop 3 epochs after the best
    ([5, 4, 3, 2, 2.5, 1.0, 1, 1, 1, 1], 3, 5, 8, True),       # an improvement resets the count
    ([5, 4, 4, 4, 4, 4, 4, 4, 4, 4], 0, 1, 2, True),            # patience 0: first non-improvement
    ([5, 5, 5, 5, 5, 5, 5, 5, 5, 5], 2, 0, 2, True),            # never better than the start
    ([5, 4, 3, 2, 1, 0, -1, -2, -3, -4], 2, 9, 9, False),       # ran to max_epochs
    ([5, 4, 3, 2, 2, 2, 2, 2, 2, 2], 6, 3, 9, False),           # criterion would fire at epoch 9
])
def test_early_stopping_bookkeeping(script, patience, best, run, early, rng):
    x_train, x_val = data(rng)
    model = Scripted(script)
    res = fit(model, x_train, x_val, rng=rng, max_epochs=9, patience=patience, quiet=True)
    assert (res.best_epoch, res.epochs_run, res.stopped_early) == (best, run, early)
    assert res.initial_val_loss == script[0] and res.val_loss == script[1:run + 1]
    assert res.best_val_loss == script[best]
    for n in model.params:
        np.testing.assert_array_equal(model.params[n], model.snapshots[best][n])


def test_same_seed_same_history_and_parameters():
    def run(seed):
        rng = np.random.default_rng(seed)
        x_train, x_val = data(rng)
        model = Quadratic()
        res = fit(model, x_train, x_val, rng=rng, batch_size=7, max_epochs=15, quiet=True)
        return res, model.params

    (r1, p1), (r2, p2), (r3, _) = run(5), run(5), run(6)
    assert r1.train_loss == r2.train_loss and r1.val_loss == r2.val_loss
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    assert r1.train_loss != r3.train_loss


def test_randomness_is_consumed_in_the_documented_order(rng):
    """eps_val first, then per epoch a permutation and one eps draw per batch (last batch partial)."""
    seed = 11
    x_train, x_val = data(np.random.default_rng(0), n_train=10, n_val=4)
    model = Quadratic()
    res = fit(model, x_train, x_val, rng=np.random.default_rng(seed), batch_size=4, max_epochs=2,
              patience=10, quiet=True)
    replay_draws(model, seed, x_train, n_val=4, redraw=False)
    assert [len(x) for x, _ in model.calls] == [4, 4, 2, 4, 4, 2]
    assert res.epochs_run == 2


def replay_draws(model, seed, x_train, n_val, redraw, epochs=2, batch_size=4, L=2):
    """Replay fit's documented use of ``default_rng(seed)`` and assert that every training call
    of ``model`` got the replayed batch and noise; returns the replayed validation noises (one
    fixed draw, or with ``redraw`` one before training and one after each epoch)."""
    replay = np.random.default_rng(seed)
    val_eps = [replay.standard_normal((n_val, L))]
    expected = []
    for _ in range(epochs):
        perm = replay.permutation(len(x_train))
        for start in range(0, len(x_train), batch_size):
            batch = perm[start:start + batch_size]
            expected.append((x_train[batch], replay.standard_normal((len(batch), L))))
        if redraw:
            val_eps.append(replay.standard_normal((n_val, L)))
    for (x, eps), (x_exp, eps_exp) in zip(model.calls, expected, strict=True):
        np.testing.assert_array_equal(x, x_exp)
        np.testing.assert_array_equal(eps, eps_exp)
    return val_eps


def test_train_loss_is_batch_size_weighted_and_val_noise_fixed(rng):
    x_train, x_val = data(rng, n_train=10, n_val=4)
    eps_val = rng.standard_normal((4, 2))
    model = Quadratic()
    losses = []
    original = model.neg_elbo_and_grad

    def recording(x, eps):
        value, grads = original(x, eps)
        losses.append((value, len(x)))
        return value, grads

    model.neg_elbo_and_grad = recording
    res = fit(model, x_train, x_val, rng=rng, batch_size=4, max_epochs=1, eps_val=eps_val, quiet=True)
    assert res.train_loss[0] == pytest.approx(sum(v * n for v, n in losses) / 10, rel=1e-15)
    # the validation loss is evaluated with the given eps_val: recompute it at the final params
    w, a = model.params["w"], model.params["a"]
    expected = np.mean(0.5 * np.sum((w - x_val) ** 2, 1) + 0.5 * np.sum((a - eps_val) ** 2, 1))
    assert res.val_loss[0] == pytest.approx(expected, rel=1e-15)


def test_zero_epochs(rng):
    x_train, x_val = data(rng)
    model = Quadratic(w0=[1.0, 2.0, 3.0])
    res = fit(model, x_train, x_val, rng=rng, max_epochs=0)
    assert (res.epochs_run, res.best_epoch, res.stopped_early, res.train_loss) == (0, 0, False, [])
    assert res.best_val_loss == res.initial_val_loss
    np.testing.assert_array_equal(model.params["w"], [1.0, 2.0, 3.0])


def test_quiet_prints_nothing(rng, capsys):
    x_train, x_val = data(rng)
    fit(Quadratic(), x_train, x_val, rng=rng, max_epochs=3, quiet=True)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_plain_progress_without_tqdm(rng, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    x_train, x_val = data(rng)
    fit(Quadratic(), x_train, x_val, rng=rng, max_epochs=3, patience=10)
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("epoch")] == ["1/3", "2/3", "3/3"]
    assert lines[-1].startswith("fit: ran 3 epoch(s)")


def test_progress_false_prints_plain_lines(rng, capsys):
    x_train, x_val = data(rng)
    fit(Quadratic(), x_train, x_val, rng=rng, max_epochs=2, progress=False)
    out, _ = capsys.readouterr()
    assert sum(ln.startswith("epoch") for ln in out.splitlines()) == 2


def test_tqdm_bar_when_installed(rng, capsys):
    pytest.importorskip("tqdm", reason="tqdm is the optional 'progress' extra (refvae[progress])")
    x_train, x_val = data(rng)
    fit(Quadratic(), x_train, x_val, rng=rng, max_epochs=2)
    out, err = capsys.readouterr()
    assert "fit" in err and not any(ln.startswith("epoch") for ln in out.splitlines())


def test_divergence_raises_and_restores(rng):
    x_train, x_val = data(rng)
    model = Scripted([5.0, 4.0, float("nan")])
    with pytest.raises(FloatingPointError, match="validation loss at epoch 2 is nan"):
        fit(model, x_train, x_val, rng=rng, max_epochs=5, quiet=True)
    for n in model.params:
        np.testing.assert_array_equal(model.params[n], model.snapshots[1][n])


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"optimizer": "sgd"}, ValueError, "optimizer"),
    ({"max_epochs": -1}, ValueError, "max_epochs"),
    ({"patience": -1}, ValueError, "patience"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": 2.5}, TypeError, "batch_size"),
    ({"lr": 0.0}, ValueError, "lr"),
    ({"lr": float("nan")}, ValueError, "lr"),
    ({"x_train": np.zeros((0, 3))}, ValueError, "x_train"),
    ({"x_val": np.zeros((0, 3))}, ValueError, "x_val"),
    ({"x_val": np.zeros((4, 2))}, ValueError, "x_val"),
    ({"x_train": np.zeros(5)}, ValueError, "x_train"),
    ({"eps_val": np.zeros((20, 3))}, ValueError, "eps_val"),
    ({"rng": 0}, TypeError, "rng"),
])
def test_argument_checks(kwargs, exc, match, rng):
    x_train, x_val = data(rng)
    args = {"x_train": x_train, "x_val": x_val, "rng": rng, "quiet": True, **kwargs}
    model = Quadratic()
    with pytest.raises(exc, match=match):
        fit(model, args.pop("x_train"), args.pop("x_val"), **args)
    assert model.calls == []


def test_model_protocol_is_checked(rng):
    x_train, x_val = data(rng)

    class NoLoss:
        params, latent_dim = {"w": np.zeros(3)}, 2

        def neg_elbo_and_grad(self, x, eps):
            raise AssertionError

    with pytest.raises(TypeError, match="'loss'"):
        fit(NoLoss(), x_train, x_val, rng=rng, quiet=True)


# =========================================================================== callback, val_noise

def _vae_run(callback=None, seed=3):
    """A tiny real VAE (mog prior, L = 2) trained for 4 epochs on synthetic digits-like data."""
    from refvae.data import synthetic_split
    from refvae.vae import VAE
    d = synthetic_split(np.random.default_rng(0), 60, 20, 10)
    model = VAE(64, 2, (8,), "leaky_relu", "categorical", 17, "mog",
                rng=np.random.default_rng(1), prior_kwargs={"num_components": 3})
    res = fit(model, d["train"], d["val"], rng=np.random.default_rng(seed), batch_size=16,
              max_epochs=4, patience=10, quiet=True, callback=callback)
    return model, res


def test_callback_changes_no_bit_of_training():
    """A callback that reads everything it is given (and the parameters) leaves training
    bit-identical: same histories, same best epoch, same final parameters."""
    seen = []

    def reader(epoch, model, result):
        seen.append((epoch, result.epochs_run, result.best_epoch, len(result.val_loss),
                     float(sum(np.sum(v) for v in model.params.values()))))
        model.loss(np.zeros((2, 64)), np.zeros((2, 2)))   # evaluating the model is allowed
    m1, r1 = _vae_run()
    m2, r2 = _vae_run(reader)
    assert r1.train_loss == r2.train_loss and r1.val_loss == r2.val_loss
    assert (r1.best_epoch, r1.best_val_loss) == (r2.best_epoch, r2.best_val_loss)
    assert all(np.array_equal(m1.params[k], m2.params[k]) for k in m1.params)
    assert [s[:4] for s in seen] == [(e, e, s[2], e) for e, s in zip(range(1, 5), seen)]


def test_callback_sees_each_epoch_after_bookkeeping(rng):
    """Called once per epoch, the last one included (also when stopping early), with the result
    already updated for that epoch and the parameters of that epoch (not the best ones)."""
    x_train, x_val = data(rng)
    model = Scripted([5.0, 4.0, 3.0, 3.5, 3.6, 3.7])
    calls = []

    def cb(epoch, m, result):
        calls.append((epoch, result.epochs_run, result.best_epoch, result.stopped_early,
                      result.val_loss[-1], m.params["w"].copy()))
    res = fit(model, x_train, x_val, rng=rng, max_epochs=10, patience=2, quiet=True, callback=cb)
    assert res.epochs_run == 4 and res.stopped_early
    assert [c[:5] for c in calls] == [(1, 1, 1, False, 4.0), (2, 2, 2, False, 3.0),
                                      (3, 3, 2, False, 3.5), (4, 4, 2, True, 3.6)]
    # the parameters passed are those after the epoch: the validation call of that epoch saw them
    for c in calls:
        np.testing.assert_array_equal(c[5], model.snapshots[c[0]]["w"])


def test_callback_error_restores_best_parameters(rng):
    x_train, x_val = data(rng)
    model = Scripted([5.0, 4.0, 6.0, 7.0])

    def cb(epoch, m, result):
        if epoch == 2:
            raise KeyError("stop")
    with pytest.raises(KeyError):
        fit(model, x_train, x_val, rng=rng, max_epochs=5, quiet=True, callback=cb)
    np.testing.assert_array_equal(model.params["w"], model.snapshots[1]["w"])


@pytest.mark.parametrize("bad", [1, "print", [print]])
def test_callback_must_be_callable(bad, rng):
    x_train, x_val = data(rng)
    model = Quadratic()
    with pytest.raises(TypeError, match="callback"):
        fit(model, x_train, x_val, rng=rng, quiet=True, callback=bad)
    assert model.calls == []


def test_val_noise_redraw_consumes_fresh_noise_in_the_documented_order():
    """val_noise="redraw": no eps_val before training; a fresh draw before the initial validation
    loss and after each epoch's last batch; the validation losses use exactly those draws."""
    seed = 5
    x_train, x_val = data(np.random.default_rng(0), n_train=10, n_val=4)
    model = Quadratic()
    res = fit(model, x_train, x_val, rng=np.random.default_rng(seed), batch_size=4, max_epochs=2,
              patience=10, quiet=True, val_noise="redraw")
    val_eps = replay_draws(model, seed, x_train, n_val=4, redraw=True)
    vals = []
    for snap, eps in zip(model.snapshots, val_eps, strict=True):
        w, a = snap["w"], snap["a"]
        vals.append(float(np.mean(0.5 * np.sum((w - x_val) ** 2, 1) + 0.5 * np.sum((a - eps) ** 2, 1))))
    assert [res.initial_val_loss, *res.val_loss] == vals


def test_val_noise_checks(rng):
    x_train, x_val = data(rng)
    with pytest.raises(ValueError, match="val_noise"):
        fit(Quadratic(), x_train, x_val, rng=rng, quiet=True, val_noise="fresh")
    with pytest.raises(ValueError, match="eps_val"):
        fit(Quadratic(), x_train, x_val, rng=rng, quiet=True, val_noise="redraw",
            eps_val=np.zeros((len(x_val), 2)))
