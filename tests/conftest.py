"""Shared test configuration.

Hypothesis profiles: ``dev`` (default, 50 examples) and ``ci`` (derandomised, loaded when the
environment variable ``CI`` is set, so that a CI failure reproduces exactly). ``deadline=None``
everywhere: the first call of a Numba kernel compiles it, and compile time is not test time.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=50, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def rng():
    """A fresh, fixed-seed generator for each test (SPEC section 1: explicit randomness)."""
    return np.random.default_rng(20261125)


# =========================================================================== hostile inputs
# Every test of a hostile input (tests/test_hostile_*.py) carries
# ``@pytest.mark.hostile(<class>, <outcome>)``: which class of input it tries and what refvae
# promises for it. ``validation/reliability_table.py`` turns these markers into the table of
# docs/reliability.md, and ``tests/test_reliability_table.py`` checks that the two agree, so the
# table lists exactly what the suite tries (and the suite fails if any of it fails).

HOSTILE_CLASSES = {
    "shape": "wrong shapes, empty arrays, mismatched sizes",
    "type": "wrong dtypes and types (complex, bool, str, lists of lists)",
    "non-finite": "NaN or ±inf where finite values are required",
    "magnitude": "finite values at the edges of float64 (1e300, log-variances beyond ±700)",
    "option": "unknown or meaningless options and settings",
    "file": "corrupt, truncated, tampered or hostile files",
    "flag": "bad command-line flags and config files",
    "interruption": "Ctrl-C, SIGTERM, SIGKILL, a stale run",
    "concurrency": "two runs into one place",
    "resources": "requests for more memory or work than is sensible",
}
HOSTILE_OUTCOMES = {
    "named error": "a ValueError/TypeError (or the CLI's one line and exit 2) naming the argument",
    "exact value": "the exact (or correctly rounded) value, checked against an oracle",
    "legal result": "the input is legal: a result with no NaN (its value is checked elsewhere)",
    "clean stop": "the run stops, says why, and leaves a consistent state on disk",
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "hostile(cls, outcome): a hostile-input case (class and promised outcome; "
        "see tests/conftest.py and docs/reliability.md)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        mark = item.get_closest_marker("hostile")
        in_module = os.path.basename(str(item.fspath)).startswith("test_hostile")
        if mark is None:
            if in_module:
                raise pytest.UsageError(f"{item.nodeid}: every hostile-input test needs "
                                        "@pytest.mark.hostile(cls, outcome)")
            continue
        if len(mark.args) != 2 or mark.args[0] not in HOSTILE_CLASSES \
                or mark.args[1] not in HOSTILE_OUTCOMES:
            raise pytest.UsageError(
                f"{item.nodeid}: hostile marker {mark.args!r} must be (cls, outcome) with cls in "
                f"{sorted(HOSTILE_CLASSES)} and outcome in {sorted(HOSTILE_OUTCOMES)}")


def pytest_addoption(parser):
    parser.addoption("--reliability-table", metavar="PATH", default=None,
                     help="write the hostile-input table (docs/reliability.md) from the collected "
                          "tests' hostile markers to PATH ('-': standard output)")


def reliability_table(items):
    """The Markdown table of docs/reliability.md, from the hostile markers of ``items``."""
    rows = {}                          # cls -> {outcome: n}
    tests = {}                         # cls -> {(module, function): [n, outcome, first line]}
    for item in items:
        mark = item.get_closest_marker("hostile")
        if mark is None:
            continue
        cls, outcome = mark.args
        rows.setdefault(cls, dict.fromkeys(HOSTILE_OUTCOMES, 0))[outcome] += 1
        fn = getattr(item, "function", None)
        doc = ((fn.__doc__ or "").strip().splitlines() or [""])[0] if fn else ""
        key = (os.path.basename(str(item.fspath)), item.originalname or item.name)
        entry = tests.setdefault(cls, {}).setdefault(key, [0, outcome, doc])
        entry[0] += 1
    out = ["# Reliability: what hostile input was tried, and what refvae does with it", "",
           "Generated from the `hostile` markers of `tests/test_hostile_*.py` by",
           "`python -m pytest --collect-only -q -m '' tests/test_hostile_*.py "
           "--reliability-table docs/reliability.md`",
           "(`tests/test_reliability_table.py` checks that this page is current). Every case runs",
           "in the default test suite, so CI fails if any promise below is broken.", "",
           "Outcomes: " + "; ".join(f"**{k}**: {v}" for k, v in HOSTILE_OUTCOMES.items()) + ".", "",
           "| class of input | what | cases | " + " | ".join(HOSTILE_OUTCOMES) + " |",
           "|---|---|---:|" + "---:|" * len(HOSTILE_OUTCOMES)]
    total = dict.fromkeys(HOSTILE_OUTCOMES, 0)
    for cls in HOSTILE_CLASSES:
        if cls not in rows:
            continue
        r = rows[cls]
        for k in total:
            total[k] += r[k]
        out.append(f"| {cls} | {HOSTILE_CLASSES[cls]} | {sum(r.values())} | "
                   + " | ".join(str(r[k]) for k in HOSTILE_OUTCOMES) + " |")
    out.append(f"| **all** | | **{sum(total.values())}** | "
               + " | ".join(f"**{total[k]}**" for k in HOSTILE_OUTCOMES) + " |")
    for cls in HOSTILE_CLASSES:
        if cls not in tests:
            continue
        out += ["", f"## {cls}", "", "| test | cases | outcome | what it tries |", "|---|---:|---|---|"]
        for (mod, name), (n, outcome, doc) in sorted(tests[cls].items()):
            out.append(f"| `{mod}::{name}` | {n} | {outcome} | {doc.replace('|', '/')} |")
    return "\n".join(out) + "\n"


def pytest_collection_finish(session):
    path = session.config.getoption("--reliability-table")
    if not path:
        return
    text = reliability_table(session.items)
    if path == "-":
        print(text)
    else:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
