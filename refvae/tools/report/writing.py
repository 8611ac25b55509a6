"""Writing the report: ``report.json`` (finite numbers only; anything not computed is ``null``
with an entry in ``missing``) and ``report.md``, both atomically."""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from ...io import _atomic_write_bytes
from ..profiles import _check_path
from .comparisons import analyse
from .identity_checks import identities
from .markdown import _run_label, render_markdown

__all__ = ["write_report"]

#: the parts of a run, each stored under its name in the run's dict (``null`` if not computed)
PARTS = ("training", "test", "train_set", "holes", "log_likelihood", "gradcheck", "figure")
#: parts computed for the first seed's runs only (correctness checks and figures)
FIRST_SEED_ONLY = ("gradcheck", "figure")

def _clean(obj, path, missing):
    """JSON-able copy with only finite numbers: NaN/inf become null with a note in ``missing``."""
    if isinstance(obj, dict):
        return {str(k): _clean(v, f"{path}.{k}" if path else str(k), missing) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v, f"{path}[{i}]", missing) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist(), path, missing)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        if math.isfinite(obj):
            return float(obj)
        missing.append({"path": path, "reason": f"non-finite value ({float(obj)!r}) replaced by null"})
        return None
    return obj


def _missing_parts(report):
    """Notes for every part that was not computed (and why)."""
    notes = []
    if report.get("kernel_accuracy") is None:
        notes.append({"path": "kernel_accuracy", "reason": "not computed (run interrupted)"})
    elif not report["kernel_accuracy"].get("available", True):
        notes.append({"path": "kernel_accuracy", "reason": report["kernel_accuracy"]["note"]})
    for i, run in enumerate(report["runs"]):
        status = run["status"]
        for part in PARTS:
            if run.get(part) is not None:
                continue
            if part in FIRST_SEED_ONLY and run.get("seed", report.get("seed")) != report.get("seed"):
                continue  # the first seed's models only
            if part == "figure" and status == "done":
                reason = report.get("figures_note") or "figure not written"
            elif status == "failed":
                reason = f"not computed: the run failed ({run.get('error')})"
            elif status == "interrupted":
                reason = "not computed: interrupted"
            elif status == "pending":
                reason = "not computed: the run did not start (interrupted earlier)"
            else:
                reason = f"not computed (run status {status})"
            notes.append({"path": f"runs[{i}].{part}", "run": _run_label(run), "reason": reason})
    return notes


def write_report(report, out, t_start=None):
    """Write ``report.json`` and ``report.md`` (atomically). Returns a summary dict.

    ``report`` is the dict :func:`run_validation` builds (keys ``data``, ``runs``, ``profile``,
    ``provenance``, ``timing``, ``status``, ...); a missing key is a ValueError naming it."""
    if not isinstance(report, dict):
        raise TypeError(f"report must be a dict (built by run_validation), got {type(report).__name__}")
    need = ("schema", "title", "status", "seed", "profile", "data", "provenance", "runs", "timing")
    missing = [k for k in need if k not in report]
    if missing:
        raise ValueError(f"report is missing key(s) {missing}; expected the dict built by "
                         f"run_validation")
    out = _check_path(out, "out")
    if t_start is not None:
        report["timing"]["total_seconds"] = time.perf_counter() - t_start
    n_train = report["data"]["n_train"]
    for run in report["runs"]:
        run["identities"] = identities(run, n_train) if run["status"] != "pending" else []
    missing = _missing_parts(report)
    doc = dict(report)
    doc["analysis"] = analyse(report)
    doc["missing"] = missing
    doc["files"] = ["report.json", "report.md"] + [r["figure"] for r in report["runs"]
                                                   if r.get("figure")]
    checks_failed = _count_failures(report)
    doc["summary"] = {"checks_failed": checks_failed,
                      "runs_failed": sum(r["status"] == "failed" for r in report["runs"]),
                      "runs_done": sum(r["status"] == "done" for r in report["runs"]),
                      "runs_total": len(report["runs"])}
    nonfinite = []
    clean = _clean(doc, "", nonfinite)
    clean["missing"] = clean["missing"] + nonfinite
    text = json.dumps(clean, indent=1, allow_nan=False, sort_keys=False)
    _atomic_write_bytes(os.path.join(out, "report.json"), (text + "\n").encode("utf-8"))
    _atomic_write_bytes(os.path.join(out, "report.md"), render_markdown(clean).encode("utf-8"))
    return clean["summary"]


def _count_failures(report):
    n = 0
    ka = report.get("kernel_accuracy")
    if ka and ka.get("available") and not ka.get("passed"):
        n += 1
    for run in report["runs"]:
        n += sum(1 for i in run.get("identities", []) if i.get("passed") is False)
        gc = run.get("gradcheck")
        if gc is not None and not gc.get("passed"):
            n += 1
    return n


