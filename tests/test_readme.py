"""The README's set-up commands are the ones CI runs (so they stay true)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    commands = [c for c in readme_commands() if "python -m pytest" in c]
    assert len(commands) == 1, commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[0].strip() in ci


def test_ci_uses_a_fresh_numba_cache_and_the_ci_profile():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "NUMBA_CACHE_DIR" in ci and "mktemp -d" in ci
    assert "export CI" in ci


def test_the_teaching_page_example_runs_and_agrees(capsys):
    """docs/gradients-without-autograd.md: its element-wise check runs and every row agrees."""
    text = (ROOT / "docs" / "gradients-without-autograd.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    exec(compile(code, "gradients-without-autograd.md", "exec"), {})
    out = capsys.readouterr().out
    assert "PASSED" in out and " NO" not in out
