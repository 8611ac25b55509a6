"""The ``refvae`` command line.

Subcommands: every subcommand is one :class:`Subcommand` record (name, help, an options function
that adds its flags to an argparse parser, and ``run(args) -> exit code``), listed in the
``COMMANDS`` tuple of its module; :func:`subcommands` collects them (this module's, then
:mod:`refvae.tools.cli_stats` and :mod:`refvae.tools.cli_verify`) and :func:`build_parser` adds each
with :meth:`Subcommand.add_to`, the same call a stand-alone parser uses.

- ``refvae validate`` — train every prior on the digits data and write the validation report
  (:mod:`refvae.tools.report`);
- ``refvae train`` — train one model on the digits data and save it (``VAE.save``) with its history
  (settings from :mod:`refvae.tools.profiles`; the report is not imported);
- ``refvae gradcheck`` — gradient checks of ``neg_elbo`` on tiny models;
- ``refvae stats`` (:mod:`refvae.tools.cli_stats`), ``refvae golden`` and ``refvae verify``
  (:mod:`refvae.tools.cli_verify`).

The prior choices of every subcommand are the names of the registry :data:`refvae.priors.PRIORS`.
Importing this module loads neither NumPy nor Numba (the console script imports it before
:func:`main` installs the interrupt guard).

Errors in the input (unknown prior or profile, a negative number of epochs, an output directory
that cannot be written or is in use by another run, a bad config file, a missing optional package)
print one line on stderr and exit with code 2, without a traceback; an unexpected error prints one
line too and exits with 1 (set ``REFVAE_TRACEBACK=1`` to see the traceback).

Interruption: for the duration of every subcommand, SIGINT (Ctrl-C) and SIGTERM raise an interrupt
(:class:`refvae.tools.provenance.InterruptGuard`), also when they land inside a Numba call (where they
surface as a ``SystemError`` caused by the ``KeyboardInterrupt``). The command prints one line and
exits with 130 (SIGINT) or 143 (SIGTERM); an interrupted ``validate`` first writes a partial report
(status "partial", the running prior "interrupted"). ``validate`` and ``train`` lock their output
directory (:class:`refvae.tools.provenance.DirectoryLock`): a second run into it is refused (exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

__all__ = ["main", "Subcommand", "subcommands", "build_parser"]


class UsageError(Exception):
    """A command-line error (reported in one line, exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors raise :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


@dataclass(frozen=True)
class Subcommand:
    """One subcommand of ``refvae``: ``options(parser)`` adds its flags, ``run(args)`` returns the
    exit code. A module lists its subcommands in a ``COMMANDS`` tuple."""

    name: str
    help: str
    options: Callable
    run: Callable

    def add_to(self, subparsers):
        """Add this subcommand to an argparse sub-parser collection; returns its parser."""
        p = subparsers.add_parser(self.name, help=self.help, description=self.help)
        self.options(p)
        p.set_defaults(func=self.run)
        return p


def _positive_int(value, flag, minimum=1):
    if value is None:
        return None
    if value < minimum:
        raise ValueError(f"{flag} must be an integer >= {minimum}, got {value}")
    return value


def _threads(value):
    """``--threads``: an integer from 1 to the number of threads Numba may use."""
    _positive_int(value, "--threads")
    import numba
    top = numba.config.NUMBA_NUM_THREADS
    if value > top:
        raise ValueError(f"--threads must be at most {top} (the threads available to Numba on this "
                         f"machine; NUMBA_NUM_THREADS), got {value}")
    return value


def _out_dir(value):
    """``--out``: a non-empty path."""
    if not value or not value.strip():
        raise ValueError(f"--out must name a directory, got {value!r}")
    return value


def _common(p, seed=True):
    if seed:
        p.add_argument("--seed", type=int, default=0, help="seed of every generator (default 0)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for Numba kernels and BLAS, 1 to NUMBA_NUM_THREADS (default 1: "
                        "fastest for these small matrices, and much faster on a shared machine)")


def _digits():
    """The digits split; ImportError with a message naming the 'data' extra if sklearn is missing."""
    from ..data import load_digits_split
    return load_digits_split()


# =========================================================================== validate

def _validate_options(p):
    from .profiles import PROFILES, prior_names
    p.add_argument("--profile", choices=list(PROFILES), default="quick",
                   help="quick (<= 5 min, L = 2, 3 seeds, under-trained), full (<= 60 min, L = 2 "
                        "and 16, 5 seeds) or tiny (seconds; smoke test on synthetic data). "
                        "Default: quick")
    p.add_argument("--out", default=os.path.join("validation", "report"),
                   help="output directory (default validation/report)")
    p.add_argument("--priors", default=None,
                   help=f"comma-separated subset of {','.join(prior_names())} (default all)")
    p.add_argument("--max-epochs", type=int, default=None, help="override the profile's maximum epochs")
    p.add_argument("--seeds", type=int, default=None,
                   help="training seeds per prior and L (default: the profile's; quick 3, full 5; "
                        "a verdict between priors needs 5)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes sharing the runs (default: the profile's; the numbers do not "
                        "depend on it)")
    if _companion() is not None:
        p.add_argument("--settings", choices=["refvae", "companion"], default="refvae",
                       help="refvae's settings (default) or the companion code's choices where "
                            "refvae differs (the report's settings table)")
    p.add_argument("--no-plots", action="store_true", help="do not write figures")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    _common(p)


def _companion():
    """refvae.tools.companion when it offers ``apply(profile) -> Profile``, else None."""
    try:
        from . import companion
    except ImportError:
        return None
    return companion if callable(getattr(companion, "apply", None)) else None


def cmd_validate(args):
    from dataclasses import replace

    from .profiles import PROFILES, parse_priors
    from .provenance import limit_threads
    from .report import run_validation
    profile = PROFILES[args.profile]
    priors = parse_priors(args.priors) if args.priors is not None else None  # None: every prior
    if args.max_epochs is not None:
        profile = replace(profile, max_epochs=_positive_int(args.max_epochs, "--max-epochs"))
    if args.seeds is not None:
        profile = replace(profile, seeds=_positive_int(args.seeds, "--seeds"))
    workers = None if args.workers is None else _positive_int(args.workers, "--workers")
    if getattr(args, "settings", "refvae") == "companion":
        profile = _companion().apply(profile)
    _positive_int(args.seed, "--seed", minimum=0)
    _threads(args.threads)
    _out_dir(args.out)
    # the threads are set by run_validation, after it has started its worker processes (forked
    # before this process starts Numba's threading layer)
    return run_validation(profile, seed=args.seed, out=args.out, priors=priors,
                          plots=not args.no_plots, quiet=args.quiet, workers=workers,
                          threads=args.threads, command="refvae " + " ".join(args.argv))


# =========================================================================== train

def _train_options(p):
    from .profiles import prior_names
    p.add_argument("--prior", required=True, help=f"one of {', '.join(prior_names())}")
    p.add_argument("--latent-dim", type=int, required=True, help="latent dimension L")
    p.add_argument("--out", required=True, help="directory for params.npz, config.json, history.json")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="maximum epochs (default: the full profile's)")
    p.add_argument("--data", choices=("digits", "synthetic"), default="digits",
                   help="digits (scikit-learn, 1000/350/447; default) or synthetic (the same sizes "
                        "from refvae.data.synthetic_split(default_rng([seed, 99])); no extra package)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    _common(p)


def cmd_train(args):
    from contextlib import ExitStack
    from dataclasses import asdict

    import numpy as np

    from ..io import _atomic_write_bytes
    from .provenance import DirectoryLock
    from .provenance import REPRODUCIBILITY, InterruptGuard, limit_threads, provenance
    from .profiles import PROFILES, build_model, parse_priors, prepare_out_dir
    from ..train import fit
    if "," in args.prior:
        raise ValueError(f"--prior takes one name, got {args.prior!r}")
    (prior,) = parse_priors(args.prior, "--prior")
    profile = PROFILES["full"]
    max_epochs = _positive_int(args.max_epochs, "--max-epochs") or profile.max_epochs
    latent_dim = _positive_int(args.latent_dim, "--latent-dim")
    _positive_int(args.seed, "--seed", minimum=0)
    _threads(args.threads)
    _out_dir(args.out)
    with limit_threads(args.threads), InterruptGuard() as guard, ExitStack() as held:
        if args.data == "digits":
            data, data_name = _digits(), "digits 1000/350/447"
        else:
            from ..data import synthetic_split
            data = synthetic_split(np.random.default_rng([args.seed, 99]))
            data_name = f"synthetic_split(default_rng([{args.seed}, 99])) 1000/350/447"
        rng = np.random.default_rng([args.seed, latent_dim])
        try:  # the profile and data are fixed: a refused model is refused for its latent size
            model = build_model(prior, latent_dim, data["train"].shape[1], profile, rng)
        except ValueError as exc:
            raise ValueError(f"--latent-dim {latent_dim} with --prior {prior}: {exc}") from None
        prepare_out_dir(args.out, subdirs=())  # after every check of the arguments
        held.enter_context(DirectoryLock(args.out, "refvae " + " ".join(args.argv)))
        if not args.quiet:
            print(f"refvae train: prior {prior}, L = {latent_dim}, at most {max_epochs} epochs "
                  f"(patience {profile.patience}), seed {args.seed}, output {args.out}")
        res = fit(model, data["train"], data["val"], rng=rng, optimizer=profile.optimizer, lr=profile.lr,
                  batch_size=profile.batch_size, max_epochs=max_epochs, patience=profile.patience,
                  quiet=args.quiet)
        guard.check()
        guard.cleaning = True  # a signal while saving is acted on once both files are written
        model.save(args.out)
        history = {"prior": prior, "latent_dim": latent_dim, "seed": args.seed,
                   "rng": f"default_rng([{args.seed}, {latent_dim}])", "data": data_name,
                   "settings": {k: v for k, v in asdict(profile).items()
                                if k in ("hidden", "activation", "likelihood", "num_vals", "optimizer", "lr",
                                         "batch_size", "patience")} | {"max_epochs": max_epochs},
                   "train_loss": res.train_loss, "val_loss": res.val_loss,
                   "initial_val_loss": res.initial_val_loss, "best_epoch": res.best_epoch,
                   "best_val_loss": res.best_val_loss, "epochs_run": res.epochs_run,
                   "stopped_early": res.stopped_early, "seconds": res.seconds,
                   "provenance": {**provenance(), "reproducibility": REPRODUCIBILITY}}
        text = json.dumps(history, indent=1, allow_nan=False) + "\n"
        _atomic_write_bytes(os.path.join(args.out, "history.json"), text.encode("utf-8"))
        guard.cleaning = False
        guard.check()
        if not args.quiet:
            print(f"saved {os.path.join(args.out, 'params.npz')}, config.json and history.json "
                  f"(best validation negative ELBO {res.best_val_loss:.4f} at epoch {res.best_epoch})")
    return 0


# =========================================================================== gradcheck

def _gradcheck_options(p):
    from ..likelihoods import LIKELIHOODS
    from ..layers import ACTIVATIONS
    from .profiles import prior_names
    p.add_argument("--prior", default=None,
                   help=f"one of {', '.join(prior_names())} (default: every prior)")
    p.add_argument("--likelihood", default="categorical",
                   help=f"{', '.join(LIKELIHOODS)} (default categorical)")
    p.add_argument("--activation", default="leaky_relu",
                   help=f"{', '.join(ACTIVATIONS)} (default leaky_relu)")
    _common(p)


def tiny_model(prior, likelihood, activation, rng):
    """A tiny VAE (D = 6, L = 2, hidden (5, 4)) and a batch of 3 matching data points; the prior's
    options are its ``tiny_settings(activation, data_range)`` (those of the golden cases)."""
    from ..priors import PRIORS
    from ..vae import VAE
    D, L = 6, 2
    data_range = (0.0, 16.0) if likelihood == "categorical" else (0.0, 1.0)
    kw = PRIORS[prior].tiny_settings(activation, data_range)
    model = VAE(D, L, (5, 4), activation, likelihood, 17, prior, rng=rng, prior_kwargs=kw)
    if likelihood == "categorical":
        x = rng.integers(0, 17, size=(3, D)).astype(float)
    elif likelihood == "bernoulli":
        x = rng.integers(0, 2, size=(3, D)).astype(float)
    else:
        x = rng.normal(size=(3, D))
    return model, x


def cmd_gradcheck(args):
    import numpy as np

    from .._validation import check_choice
    from ..layers import ACTIVATIONS
    from ..likelihoods import LIKELIHOODS
    from .provenance import limit_threads
    from .profiles import parse_priors, prior_index, prior_names
    from .report.gradient_check import gradcheck_model, near_kink
    priors = prior_names() if args.prior is None else parse_priors(args.prior, "--prior")
    check_choice(args.likelihood, "--likelihood", tuple(LIKELIHOODS))
    check_choice(args.activation, "--activation", tuple(ACTIVATIONS))
    _positive_int(args.seed, "--seed", minimum=0)
    _threads(args.threads)
    failed = []
    with limit_threads(args.threads):
        for prior in priors:
            rng = np.random.default_rng([args.seed, prior_index(prior)])
            for attempt in range(1, 51):  # a model and batch with no pre-activation near a kink
                model, x = tiny_model(prior, args.likelihood, args.activation, rng)
                eps = rng.standard_normal((x.shape[0], model.latent_dim))
                if near_kink(model, x, eps)[0] == 0:
                    break
            report = gradcheck_model(model, x, eps, rng)
            print(f"== prior {prior}, likelihood {args.likelihood}, activation {args.activation} "
                  f"(D = 6, L = 2, hidden (5, 4), batch 3, draw {attempt}) ==")
            print(report)
            print()
            if not report.passed:
                failed.append(prior)
    if failed:
        print(f"gradcheck FAILED for: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"gradcheck passed for every prior checked ({', '.join(priors)})")
    return 0


# =========================================================================== main

COMMANDS = (
    Subcommand("validate", "train every prior on the digits data and write the validation report",
               _validate_options, cmd_validate),
    Subcommand("train", "train one model on the digits data and save it with its history",
               _train_options, cmd_train),
    Subcommand("gradcheck", "gradient checks of neg_elbo w.r.t. every parameter of tiny models",
               _gradcheck_options, cmd_gradcheck),
)


def subcommands():
    """``name -> Subcommand`` of every subcommand, in the order of ``refvae --help``: the
    ``COMMANDS`` of this module, of :mod:`refvae.tools.cli_stats` and of :mod:`refvae.tools.cli_verify`."""
    from . import cli_stats, cli_verify
    return {c.name: c for c in COMMANDS + cli_stats.COMMANDS + cli_verify.COMMANDS}


def build_parser():
    parser = _Parser(prog="refvae", description="refvae: a numerically rigorous reference VAE "
                     "and the priors of Tomczak, Deep Generative Modeling, section 4.4.1.")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"refvae {__version__}")
    commands = subcommands()
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(commands) + "}",
                                title="subcommands")
    for command in commands.values():
        command.add_to(sub)
    return parser


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv=None) -> int:
    """Entry point of the ``refvae`` console script; returns the exit code. ``argv``: a list of
    strings (default ``sys.argv[1:]``); anything else is a TypeError."""
    if argv is not None and (isinstance(argv, (str, bytes)) or not isinstance(argv, (list, tuple))
                             or not all(isinstance(a, str) for a in argv)):
        raise TypeError(f"argv must be a list of strings (the command-line arguments), got {argv!r}")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:                       # before the subcommand's interrupt guard: a Ctrl-C is one line too
        parser = build_parser()
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print("refvae: interrupted (SIGINT) while starting", file=sys.stderr)
        return 130
    if getattr(args, "func", None) is None:
        print("refvae: error: a subcommand is required: " + ", ".join(subcommands())
              + " (see refvae --help)", file=sys.stderr)
        return 2
    args.argv = argv
    from .provenance import InterruptGuard
    started = time.perf_counter()
    guard = None
    try:
        with InterruptGuard() as guard:
            return int(args.func(args))
    except Exception as exc:  # noqa: BLE001 - every error becomes one line (see _failure)
        return _failure(args.command, exc, guard, started)
    except KeyboardInterrupt as exc:
        return _failure(args.command, exc, guard, started)


def _failure(command, exc, guard, started):
    """One line on stderr for an exception of a subcommand; returns the exit code.

    Interrupts (also a ``SystemError`` caused by a ``KeyboardInterrupt``, and any error after a
    signal was received): 130 (SIGINT) or 143 (SIGTERM). Bad input (ValueError, TypeError,
    OSError, a missing optional package): 2. Anything else: 1, with the traceback only when the
    environment variable ``REFVAE_TRACEBACK`` is set.
    """
    from .provenance import interrupt_exit_code, interrupt_signal
    sig = interrupt_signal(exc, guard)
    if sig is not None:
        what = "terminated (SIGTERM)" if sig == "SIGTERM" else f"interrupted ({sig})"
        print(f"refvae {command}: {what} after {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
        return interrupt_exit_code(sig)
    if isinstance(exc, ImportError):
        msg = _one_line(exc)
        if "scikit-learn" in msg or "sklearn" in msg:
            msg = ("the digits data needs scikit-learn, which is not installed; install the 'data' "
                   "extra: pip install refvae[data]")
        print(f"refvae {command}: error: {msg}", file=sys.stderr)
        return 2
    if isinstance(exc, (ValueError, TypeError, OSError)):
        print(f"refvae {command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    if isinstance(exc, RecursionError):
        print(f"refvae {command}: error: input nested too deeply ({_one_line(exc)})", file=sys.stderr)
        return 2
    if os.environ.get("REFVAE_TRACEBACK"):
        import traceback
        traceback.print_exception(exc)
    print(f"refvae {command}: unexpected error: {type(exc).__name__}: {_one_line(exc)} "
          f"(set REFVAE_TRACEBACK=1 to see the traceback)", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
