"""The ``refvae golden`` and ``refvae verify`` subcommands.

``refvae golden --prior NAME --likelihood NAME [--kl mc|analytic|all] [--confident] --out DIR``
    Writes the golden case ``DIR/<name>/`` (``case.npz`` + ``manifest.json``; the name is
    ``<prior>-<likelihood>`` with ``-analytic_kl``/``-confident`` for the variants) and rewrites
    ``DIR/SHA256SUMS`` (every case in DIR). ``all`` (the default) for --prior or --likelihood
    writes every combination; ``refvae golden --committed --out refvae/tools/golden_cases``
    regenerates the committed set. With
    ``--compare DIR`` nothing is written: the cases are rebuilt in memory and compared with those
    in DIR (exit 1 if a value moved beyond rounding).

``refvae verify --impl module:factory [--cases DIR] [--profile float64|float32]
[--known-deviations FILE] [--json OUT] [--no-checksums]``
    Runs :func:`refvae.tools.verify.run` and prints its report; exit 0 when everything passes, 1 when
    something fails (every failure has a reproduction snippet in the report). The cases are first
    checked against the ``SHA256SUMS`` of their directory: a file that does not match is
    "corrupt golden case <name>: <file> does not match SHA256SUMS" (exit 2, nothing is run and
    nothing is blamed on the implementation); a missing ``SHA256SUMS`` is an error too unless
    ``--no-checksums`` is given.

Both functions take an ``argparse.Namespace`` and return the exit code; input errors (an unknown
prior, a missing file) raise ``ValueError``, which ``refvae.tools.cli.main`` prints in one line with
exit code 2. The subcommands are :data:`GOLDEN` and :data:`VERIFY` (:class:`refvae.tools.cli.Subcommand`
records, listed in ``COMMANDS`` for ``refvae.tools.cli``, as every subcommand module does); a plain
``argparse`` sub-parser collection takes them with ``GOLDEN.add_to(subparsers)`` and
``VERIFY.add_to(subparsers)``.
"""

from __future__ import annotations

import os
import sys

from .cli import Subcommand

__all__ = ["GOLDEN_HELP", "VERIFY_HELP", "GOLDEN", "VERIFY", "COMMANDS", "golden_options",
           "verify_options", "run_golden", "run_verify"]

GOLDEN_HELP = "write golden cases (every intermediate and gradient of tiny models) for other implementations"
VERIFY_HELP = "verify another implementation (an adapter) against the golden cases and the mathematics"


def _names(value, choices, flag):
    if value in (None, "all"):
        return tuple(choices)
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [n for n in names if n not in choices]
    if bad or not names:
        raise ValueError(f"{flag}: unknown {', '.join(map(repr, bad)) or repr(value)}; expected "
                         f"'all' or a comma-separated subset of {', '.join(choices)}")
    return names


# =========================================================================== golden

def golden_options(p):
    """Add the options of ``refvae golden`` to an argparse parser."""
    from .golden import CASE_LIKELIHOODS, CASE_PRIORS, DEFAULT_SEED
    p.add_argument("--prior", default="all",
                   help=f"{', '.join(CASE_PRIORS)}, a comma-separated subset, or all (default)")
    p.add_argument("--likelihood", default="all",
                   help=f"{', '.join(CASE_LIKELIHOODS)}, a comma-separated subset, or all (default)")
    p.add_argument("--out", default=None,
                   help="directory to write <prior>-<likelihood>/ case directories and SHA256SUMS into")
    p.add_argument("--compare", default=None, metavar="DIR",
                   help="rebuild the cases in memory and compare them with those in DIR instead of "
                        "writing (exit 1 if a value moved beyond rounding)")
    p.add_argument("--kl", default="mc", choices=("mc", "analytic", "all"),
                   help="the ELBO's KL term: mc (single-sample Monte Carlo, default), analytic (the "
                        "closed form, standard prior only: <prior>-<likelihood>-analytic_kl), or all "
                        "(both, analytic where the prior has it)")
    p.add_argument("--confident", action="store_true",
                   help="the confident variants (<prior>-<likelihood>-confident: decoder "
                        "probabilities within 1e-7 of 0 and 1; categorical and bernoulli only)")
    p.add_argument("--committed", action="store_true",
                   help="every committed case (refvae.tools.golden.committed_cases(): the 18 Monte "
                        "Carlo cases, the analytic-KL and the confident ones); ignores --prior, "
                        "--likelihood, --kl and --confident")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"base seed of every generator (default {DEFAULT_SEED}, the committed cases)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")


def _golden_specs(args, golden):
    """``(prior, likelihood, kl, confident)`` of the cases the options select. With ``--prior`` or
    ``--likelihood`` 'all', combinations without the variant (analytic KL for a prior other than
    the standard one; a confident Gaussian case) are left out; named explicitly they are an error."""
    if getattr(args, "committed", False):
        return golden.committed_cases()
    priors = _names(args.prior, golden.CASE_PRIORS, "--prior")
    likelihoods = _names(args.likelihood, golden.CASE_LIKELIHOODS, "--likelihood")
    kl = getattr(args, "kl", "mc")
    kls = ("mc", "analytic") if kl == "all" else (kl,)
    confident = bool(getattr(args, "confident", False))
    specs = []
    for prior in priors:
        for lik in likelihoods:
            for k in kls:
                try:
                    golden.case_name(prior, lik, k, confident)
                except ValueError as exc:
                    if (args.prior in (None, "all") and k == "analytic") or \
                            (confident and args.likelihood in (None, "all")) or kl == "all":
                        continue
                    raise ValueError(f"--prior {prior} --likelihood {lik} --kl {k}"
                                     f"{' --confident' if confident else ''}: {exc}") from None
                specs.append((prior, lik, k, confident))
    if not specs:
        raise ValueError("the options select no golden case (analytic KL: --prior standard; "
                         "--confident: --likelihood categorical or bernoulli)")
    return specs


def run_golden(args) -> int:
    """Write (or, with ``--compare``, check) golden cases; returns the exit code."""
    from . import golden
    specs = _golden_specs(args, golden)
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    quiet = getattr(args, "quiet", False)
    for flag, value in (("--out", args.out), ("--compare", args.compare)):
        if value is not None and not str(value).strip():
            raise ValueError(f"{flag}: empty path; give a directory")
        if value is not None and os.path.exists(value) and not os.path.isdir(value):
            raise ValueError(f"{flag} {value}: exists and is not a directory")
    if args.compare is not None:
        if not os.path.isdir(args.compare):
            raise ValueError(f"--compare {args.compare}: no such directory of golden cases")
        failed = []
        for prior, lik, kl, confident in specs:
            name = golden.case_name(prior, lik, kl, confident)
            if not os.path.isdir(os.path.join(args.compare, name)):
                raise ValueError(f"--compare {args.compare}: holds no case {name!r} (choose the "
                                 f"cases with --prior/--likelihood/--kl/--confident)")
            old = golden.load_case(os.path.join(args.compare, name))
            problems = golden.compare_cases(golden.build_case(prior, lik, args.seed, kl=kl,
                                                              confident=confident), old)
            if problems:
                failed.append(name)
                print(f"MOVED {name}:", file=sys.stderr)
                for line in problems:
                    print(f"  {line}", file=sys.stderr)
            elif not quiet:
                print(f"same  {name} (every value within rounding of {args.compare})")
        return 1 if failed else 0
    if args.out is None:
        raise ValueError("--out DIR is required (or --compare DIR)")
    os.makedirs(args.out, exist_ok=True)
    if not os.access(args.out, os.W_OK):
        raise ValueError(f"--out {args.out}: the directory is not writable")
    for prior, lik, kl, confident in specs:
        path = golden.write_case(args.out, prior, lik, args.seed, checksums=False, kl=kl,
                                 confident=confident)
        if not quiet:
            print(f"wrote {path}")
    sums = golden.write_checksums(args.out)
    if not quiet:
        print(f"wrote {sums}")
    return 0


# =========================================================================== verify

def _select_cases(spec, cases_dir):
    """The case directories ``--case`` selects: comma-separated names or fnmatch patterns
    (``'mog-*'``, ``'*-bernoulli'``), in the directory's order; a name or pattern that matches no
    case is a ``ValueError`` listing the valid names."""
    import fnmatch
    from . import golden
    wanted = list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
    if not wanted:
        raise ValueError(f"--case {spec!r}: names no case; give comma-separated case names or "
                         f"patterns (or omit --case for every case in {cases_dir})")
    try:
        available = [os.path.basename(p) for p in golden.list_cases(cases_dir)]
    except ValueError:
        available = []
    chosen = []
    for n in wanted:
        if os.sep in n or "/" in n or n in (".", ".."):
            raise ValueError(f"--case {n!r}: no such case (a case name or pattern, not a path; use "
                             f"--cases DIR)")
        hits = [a for a in available if fnmatch.fnmatchcase(a, n)]
        if not hits:
            raise ValueError(f"--case {n!r}: no such case in {cases_dir}; the cases are: "
                             f"{', '.join(available) or '(none)'}")
        chosen += [h for h in hits if h not in chosen]
    order = {a: i for i, a in enumerate(available)}
    return [os.path.join(cases_dir, n) for n in sorted(chosen, key=order.get)]


def verify_options(p):
    """Add the options of ``refvae verify`` to an argparse parser."""
    p.add_argument("--impl", required=True, metavar="MODULE:FACTORY",
                   help="the adapter factory: 'package.module:factory' or 'path/to/file.py:factory' "
                        "(see docs/verify.md)")
    p.add_argument("--cases", default=None, metavar="DIR",
                   help="a directory of golden cases, or one case directory (default: the cases "
                        "shipped with refvae)")
    p.add_argument("--case", default=None, metavar="NAMES",
                   help="comma-separated case names or fnmatch patterns ('mog-*', '*-bernoulli') to "
                        "run (default: every case in --cases)")
    p.add_argument("--profile", default="float64", choices=("float64", "float32"),
                   help="tolerances for a float64 (default) or a float32 implementation")
    p.add_argument("--known-deviations", default=None, metavar="FILE",
                   help="JSON list of {case, quantity, reason}: listed failures are reported as known")
    p.add_argument("--json", default=None, metavar="OUT", help="write the JSON report to OUT")
    p.add_argument("--checks", default="all", metavar="NAMES",
                   help="comma-separated subset of golden,gradient,normalisation,sampler,mixture,nll,"
                        "prior_gradient (default all)")
    p.add_argument("--prior-checks", default="once", choices=("once", "all"),
                   help="run the normalisation/sampler/mixture checks on the first case of each prior "
                        "(once, default) or on every case (all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the checks' random draws (default 0)")
    p.add_argument("--verbose", action="store_true", help="list every quantity and check")
    p.add_argument("--quiet", action="store_true", help="print only the final verdict line")
    p.add_argument("--no-checksums", action="store_true",
                   help="use the cases without checking them against SHA256SUMS (by default a "
                        "missing SHA256SUMS or a file that does not match it is an error)")


def run_verify(args) -> int:
    """Run the harness, print the report, write ``--json``; 0 if everything passes, else 1."""
    from . import golden
    from .verify import CHECKS, load_adapter, load_known_deviations, run
    checks = _names(getattr(args, "checks", "all"), CHECKS, "--checks")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.known_deviations is not None:
        try:  # a bad file is a usage error, before any work
            load_known_deviations(args.known_deviations)
        except (ValueError, TypeError, OSError) as exc:
            raise ValueError(f"--known-deviations: {exc}") from None
    cases_dir = args.cases if args.cases is not None else golden.golden_dir()
    if not os.path.isdir(cases_dir):
        raise ValueError(f"--cases {cases_dir}: not a directory")
    if getattr(args, "case", None) is not None:
        cases = _select_cases(args.case, cases_dir)
    else:
        cases = cases_dir
    if args.json is not None:
        if not args.json.strip():
            raise ValueError("--json: empty path; give the file to write the JSON report to")
        if os.path.isdir(args.json):
            raise ValueError(f"--json {args.json}: is a directory; give the file to write the JSON "
                             f"report to")
        d = os.path.dirname(os.path.abspath(args.json))
        if os.path.exists(d) and not os.path.isdir(d):
            raise ValueError(f"--json {args.json}: {d} is not a directory")
        if os.path.exists(d) and not os.access(d, os.W_OK):
            raise ValueError(f"--json {args.json}: the directory is not writable")
    adapter = load_adapter(args.impl)
    quiet = getattr(args, "quiet", False)
    report = run(adapter, cases=cases, profile=args.profile,
                 known_deviations=args.known_deviations, checks=checks,
                 prior_checks=getattr(args, "prior_checks", "once"), json_out=args.json,
                 impl=args.impl, seed=args.seed,
                 checksums=not getattr(args, "no_checksums", False))
    text = report.format(verbose=getattr(args, "verbose", False))
    print(text.splitlines()[-1] if quiet else text)
    if args.json is not None and not quiet:
        print(f"JSON report: {args.json}")
    return 0 if report.passed else 1


GOLDEN = Subcommand("golden", GOLDEN_HELP, golden_options, run_golden)
VERIFY = Subcommand("verify", VERIFY_HELP, verify_options, run_verify)
COMMANDS = (GOLDEN, VERIFY)
