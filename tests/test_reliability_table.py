"""docs/reliability.md is generated from the hostile markers of tests/test_hostile_*.py and must be
current: the page lists exactly the classes of hostile input the suite tries, and how many cases
of each promise a named error, an exact value or a clean stop."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "", "-p", "no:cacheprovider"]
_CACHE = {}


def generated_table(tmp_dir):
    if "table" not in _CACHE:
        modules = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_hostile_*.py"))
        assert modules, "no tests/test_hostile_*.py modules"
        path = Path(tmp_dir) / "reliability.md"
        out = subprocess.run(COMMAND + ["--reliability-table", str(path)] + modules, cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        _CACHE["table"] = path.read_text(encoding="utf-8")
    return _CACHE["table"]


def test_reliability_page_is_generated_from_the_current_tests(tmp_path):
    page = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert page == generated_table(tmp_path), (
        "docs/reliability.md is stale: regenerate it with "
        "python -m pytest --collect-only -q -m '' tests/test_hostile_*.py "
        "--reliability-table docs/reliability.md")


def test_every_hostile_class_is_tried(tmp_path):
    """The suite tries every class of hostile input named in tests/conftest.py at least once."""
    from conftest import HOSTILE_CLASSES
    table = generated_table(tmp_path)
    for cls in HOSTILE_CLASSES:
        assert f"\n| {cls} |" in table, f"no hostile test of class {cls!r}"
