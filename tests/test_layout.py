"""The layout's one rule: the tools (refvae.tools) import the core; the core never imports a tool.

Checked twice, so that either kind of slip fails: statically (no import statement in a core module
names refvae.tools, relative or absolute, at any depth inside functions too) and dynamically
(importing every core module in a fresh interpreter loads no refvae.tools module). That
``refvae train`` loads no report module is checked in tests/test_cli.py.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "refvae"
CORE = sorted(p for p in PKG.rglob("*.py") if "tools" not in p.relative_to(PKG).parts)


def _module_name(path, root=PKG):
    parts = ("refvae",) + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path, root=PKG):
    """Absolute names of every module an import statement in ``path`` refers to."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out.append(base)
            out += [f"{base}.{a.name}" for a in node.names]
    return out


def test_the_core_is_found():
    names = {_module_name(p) for p in CORE}
    assert {"refvae.vae", "refvae.priors.base", "refvae.kernels.mixture", "refvae.estimators"} <= names
    assert not any(n.startswith("refvae.tools") for n in names)


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(PKG)))
def test_core_module_imports_no_tool(path):
    bad = [m for m in _imported(path) if m == "refvae.tools" or m.startswith("refvae.tools.")]
    assert not bad, f"{path.relative_to(PKG)} imports {bad}: the core must not import refvae.tools"


def test_the_static_check_can_fail(tmp_path):
    """A planted tool import, relative or absolute and inside a function, is found."""
    path = tmp_path / "refvae" / "priors" / "mixtures.py"
    path.parent.mkdir(parents=True)
    path.write_text("def f():\n    from ..tools import report\n    from .. import tools\n"
                    "    import refvae.tools.golden\n    from .base import Prior\n")
    names = _imported(path, root=tmp_path / "refvae")
    assert {"refvae.tools.report", "refvae.tools", "refvae.tools.golden"} <= set(names)
    assert "refvae.priors.base.Prior" in names


def test_importing_the_core_loads_no_tool():
    mods = [_module_name(p) for p in CORE]
    code = ("import importlib, sys\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.startswith('refvae.tools')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"importing the core loaded tools: {out.stdout}"
