"""Training with minibatches, Adam/Adamax and early stopping on a fixed-noise validation loss.

:func:`fit` trains any model that follows this protocol (``refvae.vae.VAE`` does):

* ``model.params`` — the flat parameter dict (SPEC section 3), float64 arrays updated in place;
* ``model.latent_dim`` — int, the width L of the reparameterisation noise;
* ``model.neg_elbo_and_grad(x, eps)`` — ``(value, grads)``: the batch mean of the negative ELBO
  (a float) and its gradient, a dict with the keys and shapes of ``params``;
* ``model.loss(x, eps)`` — the batch mean of the negative ELBO as a float (validation).

Randomness (SPEC section 1) comes only from the explicit generator ``rng``, consumed in this
order, so that a run can be replayed exactly in another framework:

1. ``eps_val = rng.standard_normal((len(x_val), latent_dim))`` (only when ``eps_val`` is not given);
2. for each epoch: ``perm = rng.permutation(len(x_train))``; then for each minibatch
   ``batch = perm[i : i + batch_size]`` (i = 0, batch_size, ...; the last, partial batch is kept)
   ``eps = rng.standard_normal((len(batch), latent_dim))``, and one optimiser step on
   ``model.neg_elbo_and_grad(x_train[batch], eps)``.

The validation loss uses the same ``eps_val`` at every epoch (``val_noise="fixed"``, the default),
so it is a deterministic function of the parameters and the early-stopping criterion is not noisy
from epoch to epoch. With ``val_noise="redraw"`` (the companion code's choice: its validation pass
draws fresh noise every time) step 1 is skipped and a fresh
``eps_val = rng.standard_normal((len(x_val), latent_dim))`` is drawn before the initial validation
loss and after each epoch's last minibatch, before that epoch's validation loss.

An optional ``callback(epoch, model, result)`` is called after each epoch's validation and
bookkeeping (``result`` is the :class:`TrainResult` so far: ``epochs_run == epoch``, ``best_epoch``
and ``stopped_early`` already updated; ``model.params`` hold the parameters *after* that epoch,
not the best ones). It consumes nothing from ``rng`` and is given no reference that training
reads back, so training is bit-identical with and without it (unless it modifies ``model.params``,
which it must not do).
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from dataclasses import dataclass, field

from ._validation import as_float_array, check_choice, check_positive_int, check_rng, first_non_finite
from .optim import OPTIMIZERS, make_optimizer

__all__ = ["TrainResult", "fit"]


@dataclass
class TrainResult:
    """What :func:`fit` did. Epochs are numbered from 1; epoch 0 means "before training".

    Attributes
    ----------
    train_loss : list of float
        Per epoch (``len == epochs_run``): the mean of the minibatch losses weighted by batch size,
        each loss evaluated at the parameters *before* that batch's step (as training loops report
        it), so it equals the mean over the training set of the per-batch objective.
    val_loss : list of float
        Per epoch (``len == epochs_run``): ``model.loss(x_val, eps_val)`` after the epoch.
    initial_val_loss : float
        ``model.loss(x_val, eps_val)`` before the first epoch.
    best_epoch : int
        The epoch whose parameters were restored (0: the initial parameters were never improved on).
    best_val_loss : float
        Its validation loss (``val_loss[best_epoch - 1]``, or ``initial_val_loss`` if 0).
    epochs_run : int
    stopped_early : bool
        True iff training stopped before ``max_epochs`` because the validation loss had not
        improved for ``patience`` consecutive epochs.
    seconds : float
        Wall-clock time of the whole call.
    """

    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    initial_val_loss: float = math.nan
    best_epoch: int = 0
    best_val_loss: float = math.nan
    epochs_run: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def _check_model(model):
    for attr in ("params", "latent_dim", "neg_elbo_and_grad", "loss"):
        if not hasattr(model, attr):
            raise TypeError(f"model has no attribute {attr!r}; fit needs .params, .latent_dim, "
                            f".neg_elbo_and_grad(x, eps) and .loss(x, eps)")
    if not isinstance(model.params, dict):
        raise TypeError(f"model.params must be a dict[str, ndarray], got {type(model.params).__name__}")
    return check_positive_int(model.latent_dim, "model.latent_dim")


def _finite_loss(value, what):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a float, got {type(value).__name__}") from None
    if not math.isfinite(value):
        raise FloatingPointError(f"{what} is {value}; training diverged (try a smaller lr)")
    return value


def _check_grads(grads, epoch, batch, step):
    """Stop at the first non-finite gradient entry, naming the parameter, epoch, batch and step
    (before the optimiser sees it: one NaN would poison the moment estimates of every later step)."""
    if not isinstance(grads, dict):
        raise TypeError(f"model.neg_elbo_and_grad must return (value, dict of gradients), got "
                        f"gradients of type {type(grads).__name__}")
    hit = first_non_finite(grads.items())
    if hit is not None:
        name, idx, value = hit
        raise FloatingPointError(
            f"the gradient of parameter {name!r} is {value.item()!r} at index {idx} (epoch {epoch}, "
            f"batch {batch}, step {step}); training diverged (try a smaller lr)")


class _Reporter:
    """Nothing (quiet), a tqdm bar (progress and tqdm installed) or one printed line per epoch."""

    def __init__(self, max_epochs, quiet, progress):
        self.bar = None
        self.quiet = quiet
        if quiet or max_epochs == 0:
            return
        if progress:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=max_epochs, desc="fit", unit="epoch")
        self.max_epochs = max_epochs

    def epoch(self, epoch, train, val, best_epoch, best_val):
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.set_postfix(train=f"{train:.5g}", val=f"{val:.5g}", best=f"{best_val:.5g}",
                                 refresh=False)
            self.bar.update(1)
        else:
            print(f"epoch {epoch:>{len(str(self.max_epochs))}d}/{self.max_epochs}  "
                  f"train {train:.6g}  val {val:.6g}  best {best_val:.6g} (epoch {best_epoch})",
                  flush=True)

    def close(self, result=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.quiet or result is None:
            return
        how = (f"stopped early after epoch {result.epochs_run}" if result.stopped_early
               else f"ran {result.epochs_run} epoch(s)")
        print(f"fit: {how}; restored epoch {result.best_epoch} (val {result.best_val_loss:.6g}) "
              f"in {result.seconds:.1f} s", file=sys.stdout, flush=True)


VAL_NOISE = ("fixed", "redraw")


def fit(model, x_train, x_val, *, rng, optimizer="adamax", lr=1e-3, batch_size=64,
        max_epochs=1000, patience=20, quiet=False, progress=True, eps_val=None, callback=None,
        val_noise="fixed") -> TrainResult:
    """Train ``model`` by minibatch Adam/Adamax on the negative ELBO, with early stopping.

    Parameters
    ----------
    model
        Follows the protocol of the module docstring; ``model.params`` is updated in place.
    x_train, x_val : array_like, shapes (N_train, D) and (N_val, D)
        Non-empty, finite; converted to float64.
    rng : numpy.random.Generator
        The only source of randomness (order of use: module docstring).
    optimizer : {"adamax", "adam"}
        :class:`refvae.optim.Adamax` or :class:`refvae.optim.Adam` (PyTorch's update rules).
    lr : float > 0
        Learning rate (default 1e-3 for both optimisers, as in the text's code).
    batch_size : int >= 1
    max_epochs : int >= 0
    patience : int >= 0
        Stop when the validation loss has not improved (strictly decreased below the best so far,
        the initial loss included) for ``patience`` consecutive epochs; ``patience=0`` stops at
        the first epoch without improvement.
    quiet : bool
        Print nothing at all.
    progress : bool
        A tqdm progress bar when tqdm is installed (imported lazily; the ``progress`` extra);
        otherwise, or with ``progress=False``, one printed line per epoch.
    eps_val : array_like, shape (N_val, latent_dim), optional
        Fixed noise for the validation loss; drawn once from ``rng`` when not given (only with
        ``val_noise="fixed"``).
    callback : callable or None
        ``callback(epoch, model, result)`` after each epoch (module docstring); its return value is
        ignored. An exception it raises stops training like any other (best parameters restored).
    val_noise : {"fixed", "redraw"}
        ``"fixed"``: one ``eps_val`` for every validation loss; ``"redraw"``: fresh noise from
        ``rng`` for every validation loss (the companion code's choice; the early-stopping
        criterion is then noisy). ``eps_val`` must not be given with ``"redraw"``.

    Returns
    -------
    TrainResult
        Loss histories, best epoch and its validation loss, epochs run, early-stopping flag, time.

    At the end — also when an exception interrupts training — the parameters of the best epoch
    (by validation loss) are copied back into ``model.params``: the same dict and the same array
    objects, each overwritten in place.

    Raises
    ------
    ValueError
        An unknown optimizer or val_noise, lr <= 0, batch_size < 1, max_epochs or patience < 0,
        empty or mis-shaped data or eps_val, eps_val with val_noise="redraw" (the message names the
        argument).
    TypeError
        A callback that is neither callable nor None (the message names ``callback``).
    FloatingPointError
        If a training or validation loss is NaN or infinite, or a gradient entry is (checked at
        every step before the optimiser uses it; the message names the parameter, the epoch, the
        batch and the step). The best parameters are restored.
    """
    t_start = time.perf_counter()
    latent_dim = _check_model(model)
    rng = check_rng(rng)
    check_choice(optimizer, "optimizer", tuple(OPTIMIZERS))
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    batch_size = check_positive_int(batch_size, "batch_size")
    max_epochs = check_positive_int(max_epochs, "max_epochs", minimum=0)
    patience = check_positive_int(patience, "patience", minimum=0)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a callable callback(epoch, model, result) or None, got "
                        f"{type(callback).__name__}")
    check_choice(val_noise, "val_noise", VAL_NOISE)
    redraw = val_noise == "redraw"
    if redraw and eps_val is not None:
        raise ValueError("eps_val must not be given with val_noise='redraw' (the validation noise "
                         "is then drawn afresh from rng for every validation loss)")
    x_train = as_float_array(x_train, "x_train", ndim=2)
    x_val = as_float_array(x_val, "x_val", ndim=2)
    if x_val.shape[1] != x_train.shape[1]:
        raise ValueError(f"x_val must have the same number of columns as x_train "
                         f"({x_train.shape[1]}), got shape {x_val.shape}")
    n_train, n_val = x_train.shape[0], x_val.shape[0]
    if redraw:
        eps_val = None
    elif eps_val is None:
        eps_val = rng.standard_normal((n_val, latent_dim))
    else:
        eps_val = as_float_array(eps_val, "eps_val", shape=(n_val, latent_dim))

    params = model.params
    opt = make_optimizer(optimizer, params, lr)  # checks the params dict
    result = TrainResult()
    best = {k: v.copy() for k, v in params.items()}
    reporter = _Reporter(max_epochs, quiet, progress)
    try:
        if redraw:
            eps_val = rng.standard_normal((n_val, latent_dim))
        result.initial_val_loss = result.best_val_loss = _finite_loss(
            model.loss(x_val, eps_val), "the validation loss before training")
        since_best = 0
        step = 0
        for epoch in range(1, max_epochs + 1):
            perm = rng.permutation(n_train)
            weighted = []
            for start in range(0, n_train, batch_size):
                batch = perm[start:start + batch_size]
                eps = rng.standard_normal((len(batch), latent_dim))
                value, grads = model.neg_elbo_and_grad(x_train[batch], eps)
                value = _finite_loss(value, f"the training loss at epoch {epoch}, batch "
                                            f"{start // batch_size + 1}")
                step += 1
                _check_grads(grads, epoch, start // batch_size + 1, step)
                opt.step(grads)
                weighted.append(value * len(batch))
            train = math.fsum(weighted) / n_train
            if redraw:
                eps_val = rng.standard_normal((n_val, latent_dim))
            val = _finite_loss(model.loss(x_val, eps_val), f"the validation loss at epoch {epoch}")
            result.train_loss.append(train)
            result.val_loss.append(val)
            result.epochs_run = epoch
            if val < result.best_val_loss:
                result.best_val_loss, result.best_epoch, since_best = val, epoch, 0
                for k, v in params.items():
                    best[k] = v.copy()
            else:
                since_best += 1
            reporter.epoch(epoch, train, val, result.best_epoch, result.best_val_loss)
            stop = since_best > 0 and since_best >= patience and epoch < max_epochs
            result.stopped_early = stop
            if callback is not None:
                callback(epoch, model, result)
            if stop:
                break
    except BaseException:
        reporter.close()
        _restore(params, best)
        raise
    _restore(params, best)
    result.seconds = time.perf_counter() - t_start
    reporter.close(result)
    return result


def _restore(params, best):
    """Copy the saved arrays back into the same dict and the same array objects."""
    for k, v in best.items():
        params[k][...] = v
