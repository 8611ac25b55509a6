r"""The run: every selected case through the golden comparison and the checks (:func:`run`)."""

from __future__ import annotations

import os
import sys
import time
import traceback

import numpy as np

from .. import golden as _golden
from ..._validation import check_choice
from .adapters import (PROFILES, _check_adapter, _check_seed, _Sub, adapter_outputs, is_prior_only,
                       load_adapter)
from .checks import _is_mixture, check_gradient, check_mixture, check_nll
from .comparison import _first_divergence, compare_case
from .density import _density_grid, _needs_l2, check_normalisation, check_sampler
from .known import _known, load_known_deviations, validate_known_deviations
from .prior_only import check_prior_gradient, prior_quantities
from .report import VerifyReport, _adapter_name
from .comparison import _as_array, _conform
from .results import CaseResult, CheckResult, QuantityResult, _path_of
from .snippets import _repro_check, _repro_quantity

__all__ = ["CHECKS", "run"]

CHECKS = ("golden", "gradient", "normalisation", "sampler", "mixture", "nll", "prior_gradient")


def run(adapter, cases=None, profile="float64", known_deviations=None, checks=CHECKS,
        prior_checks="once", json_out=None, impl=None, seed=0, say=None,
        checksums=True) -> VerifyReport:
    """Run the golden comparison and the checks; return a :class:`VerifyReport`.

    Parameters
    ----------
    adapter : the object a factory returns (or an ``impl`` spec string, loaded with
        :func:`load_adapter`).
    cases : None (the committed cases), a directory of cases, or a list of case names/paths/
        :class:`~refvae.tools.golden.GoldenCase` objects.
    profile : ``"float64"`` or ``"float32"``.
    known_deviations : None, a path, or a list of ``{case, quantity, reason}``.
    checks : which of :data:`CHECKS` to run.
    prior_checks : ``"once"`` (normalisation, sampler and mixture checks on the first selected case
        of each prior) or ``"all"`` (on every case).
    json_out : path of the JSON report (optional).
    impl : the factory spec, for the report and the reproduction snippets.
    seed : seed of the checks' random draws (directions, samples).
    say : callable for progress lines (e.g. ``print``), optional.
    checksums : bool (default True). Check every case read from disk against the ``SHA256SUMS``
        of its directory before anything runs (:func:`refvae.tools.golden.require_checksums`): a file
        that does not match is a ``ValueError`` "corrupt golden case <name>: <file> does not match
        SHA256SUMS" (the case is at fault, not the adapter), and so is a missing ``SHA256SUMS``.
        ``False`` uses the cases unchecked. Cases given as ``GoldenCase`` objects are not files.
    """
    t0 = time.perf_counter()
    adapter, impl, checks, seed, known = _run_args(adapter, impl, profile, prior_checks, checks, seed,
                                                   known_deviations, checksums)
    cases_dir, case_list = _resolve_cases(cases, checksums)
    results, seen_priors = [], set()
    for case in case_list:
        do_prior = prior_checks == "all" or case.prior not in seen_priors
        results.append(_verify_case(adapter, case, profile, checks, known, do_prior, seed, impl))
        if results[-1].error is None and results[-1].not_applicable is None:  # prior checks ran
            seen_priors.add(case.prior)
        if say is not None:
            say(f"{'PASS' if results[-1].passed else 'FAIL'}  {case.name} ({results[-1].seconds:.1f} s)")
    from ..provenance import provenance
    prov = provenance()
    prov["adapter"] = _adapter_name(adapter, impl)
    prov["seed"] = seed
    for mod in ("torch", "jax"):
        if mod in sys.modules:
            prov[f"{mod}_version"] = getattr(sys.modules[mod], "__version__", None)
    report = VerifyReport(impl, _adapter_name(adapter, impl), profile, cases_dir, results, known,
                          checks, time.perf_counter() - t0, prov)
    if json_out:
        report.write_json(json_out)
    return report


def _run_args(adapter, impl, profile, prior_checks, checks, seed, known_deviations, checksums):
    """The checked arguments of :func:`run`, in its order: ``(adapter, impl, checks, seed, known
    deviations)`` (an ``impl`` spec string loaded with :func:`load_adapter`)."""
    check_choice(profile, "profile", PROFILES)
    check_choice(prior_checks, "prior_checks", ("once", "all"))
    if isinstance(checks, str) or not isinstance(checks, (list, tuple)):
        raise TypeError(f"checks must be a list of names from {CHECKS}, got {type(checks).__name__}")
    checks = tuple(checks)
    if not checks:
        raise ValueError(f"checks must name at least one of {', '.join(CHECKS)}; got none")
    for c in checks:
        check_choice(c, "check", CHECKS)
    seed = _check_seed(seed)
    if isinstance(adapter, str):
        impl = impl or adapter
        try:
            adapter = load_adapter(adapter)
        except ValueError as exc:
            raise ValueError(f"adapter {adapter!r}: {exc}") from None
    _check_adapter(adapter)
    if known_deviations is None:
        known = []
    elif isinstance(known_deviations, (str, os.PathLike)):
        known = load_known_deviations(known_deviations)
    else:
        known = validate_known_deviations(known_deviations)
    if not isinstance(checksums, bool):
        raise TypeError(f"checksums must be True or False, got {type(checksums).__name__}")
    return adapter, impl, checks, seed, known


def _verify_case(adapter, case, profile, checks, known, do_prior, seed, impl):
    """One case: the adapter's outputs, the golden comparison (with its prior sample from the
    case's draws), the checks, the known deviations and the reproductions of the failures."""
    t1 = time.perf_counter()
    res = CaseResult(case.name, case.path or "")
    res.mode = "prior-only" if is_prior_only(adapter) else "model"
    try:
        res.not_applicable = _not_applicable(adapter, case)
    except Exception:  # noqa: BLE001 - supports() raising is the adapter's error
        res.error = traceback.format_exc(limit=4)
    if res.not_applicable is not None or res.error is not None:
        res.seconds = time.perf_counter() - t1
        return res
    errors = {}
    try:
        out = adapter_outputs(adapter, case, errors)
    except Exception:  # noqa: BLE001 - the adapter's own error is part of the report
        res.error = traceback.format_exc(limit=4)
        res.seconds = time.perf_counter() - t1
        return res
    res.ignored = sorted(k for k in out if k not in case.values and k != "nll")
    if "golden" in checks:
        res.quantities = _golden_quantities(case, profile, out, errors, res.mode)
    res.checks = _run_checks(adapter, case, profile, checks, out, do_prior, seed, res.mode)
    _nothing_verified(res, out)
    _diagnose(case, out, res.quantities, profile)
    _apply_known(res, known)
    res.first_divergence = _first_divergence(res.quantities)
    res.divergences = _divergences(res.quantities)
    for q in res.quantities:
        if q.failed:
            q.reproduction = _repro_quantity(impl, case, q.name, profile, q.status)
    for c in res.checks:
        if c.failed:
            kw = {"seed": seed} if c.name in ("gradient", "sampler", "nll") else {}
            c.reproduction = _repro_check(impl, case, c.name, profile, **kw)
    res.seconds = time.perf_counter() - t1
    return res


def _not_applicable(adapter, case):
    """Why the adapter declares it cannot run ``case`` (None when it can): its
    ``supports(config)`` returned False, or its ``cases`` attribute (fnmatch patterns of case
    names) matches none of the case's name."""
    import fnmatch
    supports = getattr(adapter, "supports", None)
    if callable(supports):
        ok = supports(case.inputs()[0])
        if not isinstance(ok, (bool, np.bool_)):
            raise TypeError(f"the adapter's supports(config) returned {type(ok).__name__}; "
                            "expected True or False")
        if not ok:
            return "the adapter's supports(config) returned False"
    patterns = getattr(adapter, "cases", None)
    if patterns is not None:
        if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
            raise TypeError("the adapter's cases attribute must be a list of case names or fnmatch "
                            f"patterns, got {patterns!r:.80}")
        if not any(fnmatch.fnmatchcase(case.name, p) for p in patterns):
            return f"not in the adapter's cases ({', '.join(patterns)})"
    return None


def _golden_quantities(case, profile, out, errors, mode):
    """:func:`compare_case` of the outputs (for a prior-only adapter: on the prior's quantities
    only, :func:`prior_quantities`); a part of the adapter that raised (``errors``) is a failure of
    the quantities it makes, and reporting none of the case's quantities is a failure."""
    view = case if mode == "model" else _Sub(case, prior_quantities(case))
    quantities = compare_case(out, view, profile)
    made_by = {"prior_sample.z": ("prior_sample.z",), "log_pz": ("log_pz", "prior.log_p"),
               "prior_trace": tuple(n for n in view.order if n.startswith("prior."))}
    for part, msg in errors.items():
        for q in quantities:
            if q.name in made_by.get(part, ()) and q.status == "missing":
                q.status, q.message = "fail", f"{part if part != 'log_pz' else 'prior_log_prob'} {msg}"
    return quantities


def _diagnose(case, out, quantities, profile):
    """The cheap diagnoses (:mod:`~.diagnoses`) of every failing quantity, and the KL convention:
    when ``kl`` follows the other convention, the ELBO terms and gradients that agree with refvae's
    model of that convention become ``consistent`` (not failures; ``kl`` carries the hint)."""
    from .comparison import _c, _u
    from .diagnoses import _kl_convention, _other_convention_values, _quantity_diagnosis
    by_name = {q.name: q for q in quantities}
    conv = None
    if "kl" in by_name and by_name["kl"].status == "fail":
        try:
            conv = _kl_convention(case, out, profile)
        except Exception:  # noqa: BLE001 - a diagnosis never breaks a report
            conv = None
    if conv is not None:
        text, other = conv
        by_name["kl"].diagnosis = text
        try:
            ref = _other_convention_values(case, other)
        except Exception:  # noqa: BLE001
            ref = {}
        for q in quantities:
            if q.status != "fail" or q.name not in ref or not (
                    q.name in ("neg_elbo", "loss") or q.name.startswith("grad.")):
                continue
            want = np.asarray(ref[q.name], np.float64)
            got = _conform(q.name, _as_array(out[q.name]), want.shape)[0]
            allowed = case.allowed(q.name, profile) + _c() * _u(profile) * np.abs(want)
            if got is not None and np.all(np.abs(got - want) <= allowed):
                q.status = "consistent"
                q.message = f"agrees with refvae's {other}-KL model (follows from kl)"
    for q in quantities:
        if q.status != "fail" or q.diagnosis or q.name not in case.values or q.name not in out:
            continue
        want = case.values[q.name]
        try:
            got = _conform(q.name, _as_array(out[q.name]), want.shape)[0]
            if got is None or not np.all(np.isfinite(got)):
                continue
            q.diagnosis = _quantity_diagnosis(case, q.name, got, want,
                                             case.allowed(q.name, profile), out)
        except Exception:  # noqa: BLE001 - a diagnosis never breaks a report
            q.diagnosis = None


def _divergences(quantities):
    """``{path: first failing quantity on it}`` (:func:`~.results._path_of`), in data-flow order."""
    out = {}
    for q in quantities:
        if q.failed and q.name != "(any)":
            out.setdefault(_path_of(q.name), q.name)
    return out


def _nothing_verified(res, out):
    """A failure ``(any)`` when the adapter reported none of the quantities and no check ran: a
    run that verified nothing never passes."""
    if any(q.status != "missing" for q in res.quantities):
        return
    if any(c.status in ("pass", "fail", "known", "error") for c in res.checks):
        return
    what = ("of the case's quantities" if res.mode == "model"
            else "of the prior's quantities (log_pz, prior.*, prior_sample.z)")
    res.quantities.append(QuantityResult(
        "(any)", len(res.quantities), "fail",
        message=f"the adapter reported none {what} (it returned {sorted(out)[:8]}) and no check "
                "ran: nothing was verified"))


def _checked(path, checksums):
    """``load_case(path)`` after checking the case's files against its directory's SHA256SUMS."""
    if checksums:
        full = os.path.abspath(path)
        _golden.require_checksums(os.path.dirname(full), [os.path.basename(full)])
    return _golden.load_case(path)


def _resolve_cases(cases, checksums=True):
    if cases is None or isinstance(cases, (str, os.PathLike)):
        directory = _golden.golden_dir() if cases is None else os.fspath(cases)
        if os.path.isfile(os.path.join(directory, _golden.MANIFEST_FILE)):
            return os.path.dirname(os.path.abspath(directory)), [_checked(directory, checksums)]
        paths = _golden.list_cases(directory)
        if checksums:  # every case of the directory, and nothing listed may be missing
            _golden.require_checksums(directory)
        return os.path.abspath(directory), [_golden.load_case(p) for p in paths]
    if not isinstance(cases, (list, tuple)):
        raise TypeError(f"cases must be None, a directory, or a list of case names/paths/GoldenCase "
                        f"objects, got {type(cases).__name__}")
    if not cases:
        raise ValueError("cases must not be empty: no golden case to verify against")
    out = []
    for c in cases:
        if isinstance(c, _golden.GoldenCase):
            out.append(c)
        elif isinstance(c, (str, os.PathLike)):
            p = os.fspath(c)
            out.append(_checked(p if os.path.isdir(p) else os.path.join(_golden.golden_dir(), p),
                                checksums))
        else:
            raise TypeError(f"cases[{len(out)}] must be a case name, a path or a GoldenCase, got "
                            f"{type(c).__name__}")
    dirs = {os.path.dirname(c.path) for c in out if c.path}
    return (dirs.pop() if len(dirs) == 1 else "(several)"), out


def _run_checks(adapter, case, profile, checks, out, do_prior, seed, mode="model"):
    results = []

    def guarded(name, fn):
        try:
            results.append(fn())
        except Exception as exc:  # noqa: BLE001 - an adapter error inside a check is a failure
            results.append(CheckResult(name, "error", f"raised {type(exc).__name__}: {exc}",
                                       details={"traceback": traceback.format_exc(limit=4)}))

    if "gradient" in checks and mode == "prior-only":
        results.append(CheckResult("gradient", "skip", "a prior-only adapter has no run(): no loss "
                                   "to differentiate"))
    elif "gradient" in checks:
        guarded("gradient", lambda: check_gradient(adapter, case, profile, seed, outputs=out))
    grid = {}

    def shared_grid():
        if "g" not in grid:
            grid["g"] = _density_grid(adapter, case)
        return grid["g"]

    if do_prior and "normalisation" in checks:
        guarded("normalisation", lambda: (
            check_normalisation(adapter, case, profile) if _needs_l2(case, "prior_log_prob", adapter)
            else check_normalisation(adapter, case, profile, grid=shared_grid())))
    if do_prior and "sampler" in checks:
        guarded("sampler", lambda: (
            check_sampler(adapter, case, profile, seed=seed)
            if (_needs_l2(case, "prior_sample", adapter) or _needs_l2(case, "prior_log_prob", adapter))
            else check_sampler(adapter, case, profile, grid=shared_grid(), seed=seed)))
    if do_prior and "mixture" in checks and _is_mixture(case):
        guarded("mixture", lambda: check_mixture(adapter, case, profile, outputs=out, seed=seed))
    if "nll" in checks:
        guarded("nll", lambda: check_nll(adapter, case, profile, outputs=out, seed=seed))
    if "prior_gradient" in checks:
        guarded("prior_gradient", lambda: check_prior_gradient(adapter, case, profile, seed))
    return results


def _apply_known(res, known):
    for x in res.quantities:
        e = _known(known, res.case, x.name)
        if e is not None and x.failed:
            x.status, x.reason = "known", e["reason"]
    for c in res.checks:
        e = _known(known, res.case, f"check.{c.name}")
        if e is not None and c.failed:
            c.status, c.reason = "known", e["reason"]
