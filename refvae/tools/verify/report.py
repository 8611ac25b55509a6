r"""The report of a run: :class:`VerifyReport` (its JSON form and the text ``refvae verify`` prints)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from .. import golden as _golden
from ...io import _atomic_write_bytes
from .comparison import _c, _fmt_index

__all__ = ["VerifyReport"]

SCHEMA = "refvae-verify-report/1"


@dataclass
class VerifyReport:
    impl: str | None
    adapter: str
    profile: str
    cases_dir: str
    results: list
    known_deviations: list
    checks: tuple
    seconds: float
    provenance: dict

    @property
    def applicable(self):
        """The results of the cases the adapter did not declare not applicable."""
        return [r for r in self.results if r.not_applicable is None]

    @property
    def passed(self):
        """True when at least one case ran and every case that ran passed (cases the adapter
        declared not applicable are neither passes nor failures)."""
        return bool(self.applicable) and all(r.passed for r in self.applicable)

    def case(self, name):
        for r in self.results:
            if r.case == name:
                return r
        raise KeyError(name)

    def to_dict(self):
        """The JSON report (schema ``refvae-verify-report/1``)."""
        def q(x):
            d = asdict(x)
            d["failed"] = x.failed
            return d
        return {
            "schema": SCHEMA, "passed": self.passed, "impl": self.impl, "adapter": self.adapter,
            "profile": self.profile, "unit_roundoff": _golden.PROFILE_ROUNDOFF[self.profile],
            "c": _c(), "tolerance_formula": "|actual - expected| <= c * u * (scale + |expected|) + tiny",
            "cases_dir": self.cases_dir, "checks": list(self.checks),
            "known_deviations": self.known_deviations, "seconds": self.seconds,
            "summary": {"cases": len(self.results),
                        "passed": sum(r.passed for r in self.results),
                        "failed": [r.case for r in self.applicable if not r.passed],
                        "not_applicable": [r.case for r in self.results
                                           if r.not_applicable is not None]},
            "cases": [{"case": r.case, "path": r.path, "passed": r.passed, "mode": r.mode,
                       "not_applicable": r.not_applicable,
                       "first_divergence": r.first_divergence,
                       "divergences": r.divergences, "error": r.error,
                       "ignored_outputs": r.ignored, "seconds": r.seconds,
                       "quantities": [q(x) for x in r.quantities],
                       "checks": [q(x) for x in r.checks]} for r in self.results],
            "provenance": self.provenance,
        }

    def write_json(self, path):
        text = json.dumps(_jsonable(self.to_dict()), indent=1, allow_nan=False) + "\n"
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        _atomic_write_bytes(os.path.abspath(path), text.encode("utf-8"))
        return path

    def format(self, verbose=False):
        """The human-readable report (what ``refvae verify`` prints)."""
        u = _golden.PROFILE_ROUNDOFF[self.profile]
        lines = [f"refvae verify: {self.impl or self.adapter}, profile {self.profile} "
                 f"(u = 2^{int(round(math.log2(u)))}, c = {_c():g}), {len(self.results)} golden "
                 f"case(s) from {self.cases_dir}",
                 "tolerance per element: |got - expected| <= c u (S + |expected|), S the condition "
                 "scale stored with the case", ""]
        for r in self.results:
            lines += _format_case(r, verbose)
        n_pass = sum(r.passed for r in self.results)
        applicable = self.applicable
        n_na = len(self.results) - len(applicable)
        skipped = {}
        for r in self.results:
            for c in r.checks:
                if c.status == "skip":
                    skipped.setdefault(c.name, c.summary)
        lines.append("")
        if skipped:
            lines.append("checks not run: " + "; ".join(f"{k} ({v})" for k, v in sorted(skipped.items())))
        known = [(r.case, x.name, x.reason) for r in self.results for x in r.quantities + r.checks
                 if x.status == "known"]
        if known:
            lines.append(f"known deviations ({len(known)}): " + "; ".join(
                f"{c}/{n}: {why}" for c, n, why in known))
        verdict = "PASSED" if self.passed else "FAILED"
        failing = [r for r in applicable if not r.passed]
        line = f"{verdict}: {n_pass} of {len(applicable)} {'applicable ' if n_na else ''}case(s) pass"
        if not applicable:
            line += " (no case was applicable: nothing was verified)"
        if n_na:
            line += f"; {n_na} not applicable"
        if known:
            line += f"; {len(known)} known deviation(s)"
        if failing:
            line += "; failing: " + ", ".join(f"{r.case} ({_short(r)})" for r in failing)
        lines.append(line + f" [{self.seconds:.1f} s]")
        return "\n".join(lines)


def _short(r):
    if r.error:
        return "adapter error"
    parts = []
    if r.first_divergence:
        parts.append(f"first divergence {r.first_divergence}")
    parts += [f"{p} {n}" for p, n in _independent(r).items() if n != r.first_divergence]
    parts += [f"check {c}" for c in r.failed_checks]
    return ", ".join(parts)


def _g(x, spec=".3e"):
    return "-" if x is None else (f"{x:{spec}}" if math.isfinite(x) else str(x))


def _format_case(r, verbose):
    reported = [q for q in r.quantities if q.status != "missing"]
    lines = []
    if r.not_applicable is not None:
        return [f"N/A   {r.case}: not applicable ({r.not_applicable})"]
    if r.error:
        lines.append(f"FAIL  {r.case}: the adapter raised an error")
        lines += ["      " + s for s in r.error.rstrip().splitlines()[-6:]]
        return lines
    bad = [q for q in r.quantities if q.failed]
    worst = max((q for q in reported if q.ratio is not None and q.status == "pass"),
                key=lambda q: q.ratio, default=None)
    head = "PASS" if r.passed else "FAIL"
    n_known = sum(q.status == "known" for q in r.quantities)
    what = "prior quantities" if r.mode == "prior-only" else "quantities"
    if not bad:
        ran = [c for c in r.checks if c.status in ("pass", "fail", "known", "error")]
        if not reported:
            msg = f"0 of {len(r.quantities)} {what} reported (only the checks below ran)"
        elif n_known:
            msg = (f"{len(reported)} of {len(r.quantities)} {what} reported, {n_known} known "
                   f"deviation(s), the others within tolerance")
        else:
            msg = f"{len(reported)} of {len(r.quantities)} {what} reported, all within tolerance"
        if worst is not None:
            msg += f" (closest: {worst.name} at {worst.ratio:.2g} of allowed)"
        if r.mode == "prior-only":
            msg = "prior-only adapter: " + msg
    else:
        first = r.quantity(r.first_divergence)
        msg = (f"first divergence at {first.name} (position {first.position + 1} of "
               f"{len(r.quantities)} in data-flow order; every reported quantity before it agrees)")
    lines.append(f"{head}  {r.case}: {msg}")
    if bad:
        lines += _path_lines(r)
    if bad or verbose:
        lines.append(f"      {'quantity':<28} {'status':<9} {'max|diff|':>10} {'max rel':>9} "
                     f"{'/allowed':>9}  {'worst at':<9} {'expected':>14} {'got':>14}")
        firsts = set(r.divergences.values())
        show = reported if verbose else [q for i, q in enumerate(bad) if i < 6 or q.name in firsts]
        for q in show:
            note = "; ".join(t for t in (q.message, q.diagnosis and "<- " + q.diagnosis) if t)
            lines.append(f"      {q.name:<28} {q.status:<9} {_g(q.max_abs, '.2e'):>10} "
                         f"{_g(q.max_rel, '.1e'):>9} {_g(q.ratio, '.1e'):>9}  "
                         f"{(_fmt_index(q.index) if q.index is not None else '-'):<9} "
                         f"{_g(q.expected, '.7g'):>14} {_g(q.actual, '.7g'):>14}"
                         + (f"  {note}" if note else ""))
        rest = [q.name for q in bad if q not in show]
        if not verbose and rest:
            lines.append(f"      ... and {len(rest)} more later in data-flow order: " + ", ".join(rest))
    consistent = [q.name for q in r.quantities if q.status == "consistent"]
    if consistent:
        lines.append(f"      consistent with the other KL convention ({len(consistent)}): "
                     + ", ".join(consistent))
    for q in r.quantities:
        if q.status == "known":
            lines.append(f"      known deviation {q.name}: {q.reason}")
    if r.ignored:
        lines.append(f"      ignored (not quantities of this case): {', '.join(r.ignored)}")
    for c in r.checks:
        if c.status == "skip" and not verbose:
            continue
        lines.append(f"      check {c.name:<14} {c.status.upper():<5} {c.summary}"
                     + (f" [known: {c.reason}]" if c.reason else ""))
    firsts = set(_independent(r).values()) | {r.first_divergence}
    repros = ([(q.name, q.reproduction) for q in r.quantities if q.failed and q.name in firsts]
              + [("check " + c.name, c.reproduction) for c in r.checks if c.failed and c.reproduction])
    for what, code in repros:
        lines.append(f"      reproduce ({what}):")
        lines += ["        " + s for s in code.rstrip().splitlines()]
    return lines


def _independent(r):
    """``{path: first divergence}`` of the paths whose inputs agree (their own bug, not a
    consequence of another path's)."""
    from .results import PATH_INPUTS
    return {p: n for p, n in r.divergences.items()
            if not any(u in r.divergences for u in PATH_INPUTS[p])}


def _path_lines(r):
    """One line per independent path with a divergence (:data:`~.results.PATHS`): its first
    failing quantity, whether the quantities it reads agree, and the diagnosis."""
    from .results import PATH_INPUTS
    lines = []
    for path, name in r.divergences.items():
        q = r.quantity(name)
        ups = [p for p in PATH_INPUTS[path] if p in r.divergences]
        rel = ("independent: every quantity it reads agrees" if not ups else
               f"after {r.divergences[ups[0]]} ({ups[0]}): may follow from it")
        lines.append(f"      path {path:<15} first divergence {name} ({rel})"
                     + (f": {q.diagnosis}" if q.diagnosis else ""))
    return lines


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else str(v)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def _adapter_name(adapter, impl):
    name = getattr(adapter, "name", None)
    return str(name) if name else (impl or type(adapter).__name__)

