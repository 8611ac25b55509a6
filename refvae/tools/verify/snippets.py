r"""Reproduction snippets: the Python code that reproduces one failure (a quantity or a check)."""

from __future__ import annotations

import os

from .. import golden as _golden


def _absolute_impl(impl):
    """The factory spec with a file path made absolute (so a snippet runs from any directory)."""
    if not impl:
        return impl
    mod, _, attr = impl.rpartition(":")
    if mod.endswith(".py") or "/" in mod or os.sep in mod:
        return f"{os.path.abspath(mod)}:{attr}"
    return impl


def _snippet_head(impl, case):
    impl = _absolute_impl(impl)
    impl_line = (f"adapter = load_adapter({impl!r})" if impl
                 else "adapter = ...  # the object your factory returns")
    where = case.path or case.name
    if case.path and os.path.dirname(os.path.abspath(case.path)) == os.path.abspath(_golden.golden_dir()):
        where = case.name  # a case shipped with refvae: the name is portable
    return ("import numpy as np\n"
            "from refvae.tools.golden import load_case\n"
            "from refvae.tools.verify import adapter_outputs, load_adapter\n"
            f"case = load_case({where!r})\n"
            f"{impl_line}\n")


def _repro_quantity(impl, case, name, profile, status="fail"):
    if name not in case.values:   # "(any)": nothing of the case was reported
        return (_snippet_head(impl, case)
                + "out = adapter_outputs(adapter, case)\n"
                + "print('reported', sorted(out), '\\nthe case has', list(case.values))\n")
    if status == "shape":
        return (_snippet_head(impl, case)
                + "out = adapter_outputs(adapter, case)\n"
                + f"print('got shape', np.shape(out[{name!r}]), 'expected', case.values[{name!r}].shape)\n")
    return (_snippet_head(impl, case)
            + "out = adapter_outputs(adapter, case)\n"
            + f"got = np.asarray(out[{name!r}], dtype=np.float64).reshape(case.values[{name!r}].shape)\n"
            + f"want, allowed = case.values[{name!r}], case.allowed({name!r}, {profile!r})\n"
            + "bad = np.abs(got - want) > allowed\n"
            + "print('expected', want[bad], '\\ngot     ', got[bad], '\\nallowed |diff|', allowed[bad])\n"
            + "print('at', np.argwhere(bad).tolist())\n")


def _repro_check(impl, case, check, profile, **kw):
    fn = f"check_{check}"
    extra = "".join(f", {k}={v!r}" for k, v in kw.items())
    return (_snippet_head(impl, case).replace("adapter_outputs, load_adapter",
                                              f"{fn}, load_adapter")
            + f"result = {fn}(adapter, case, {profile!r}{extra})\n"
            + "print(result.status, result.summary)\n")

