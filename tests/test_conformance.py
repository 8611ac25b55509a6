"""The conformance report (refvae.tools.verify.conformance) and docs/verify-real-code.md.

- the committed report (validation/conformance/conformance.{json,md}) is well-formed: schema, one
  row per subject x case x check with a verdict from the known set, a diagnosis on every row, a
  reproduction on every failure, versions equal to the pins, every subject present or its library
  listed as unavailable with a reason, the markdown made from the JSON;
- its torch rows reproduce: re-running the torch subjects (torch is in CI) gives the same verdicts,
  and the torch failures' reproductions run on their own and show the NaN they report;
- the command rejects a bad --libraries with exit 2;
- the page's adapter verifies the unedited library-style model (pass) and finds a bug planted in a
  copy of it at the right quantity; the page's adversarial example prints what the page says.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re

import pytest

from refvae.tools.verify import conformance as conf
from refvae.tools.verify import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = os.path.join(ROOT, "validation", "conformance")
PAGE = os.path.join(ROOT, "docs", "verify-real-code.md")
VERDICTS = {"pass", "fail", "skip", "known", "error"}


@pytest.fixture(scope="module")
def committed():
    with open(os.path.join(REPORT, "conformance.json"), encoding="utf-8") as fh:
        return json.load(fh)


def _key(row):
    return (row["library"], row["subject"], row["case"], row["check"])


def test_committed_report_is_well_formed(committed):
    assert committed["schema"] == conf.SCHEMA
    rows = committed["rows"]
    assert rows and len({_key(r) for r in rows}) == len(rows)  # one row per library x subject x case x check
    for r in rows:
        assert set(r) >= {"library", "version", "subject", "check", "case", "verdict", "diagnosis", "reproduction"}
        assert r["verdict"] in VERDICTS, r
        assert r["diagnosis"].strip(), r
        if r["verdict"] == "fail":
            assert r["reproduction"] and "import" in r["reproduction"], _key(r)
    # every subject is in the report, or its library is listed with the reason it could not run
    present = {(r["library"], r["subject"]) for r in rows}
    for s in conf.SUBJECTS:
        assert (s["library"], s["subject"]) in present or s["library"] in committed["unavailable"], s["subject"]
    for lib, why in committed["unavailable"].items():
        assert why.strip(), lib
    # the versions tried are the pinned ones
    dist = {"torch": "torch", "pyro": "pyro-ppl", "numpyro": "numpyro", "pythae": "pythae"}
    for lib, version in committed["versions"].items():
        pin = conf.PINS.get(dist.get(lib, lib))
        if pin is not None:
            assert version.split("+")[0] == pin, (lib, version, pin)
    # every mixture subject went through every adversarial input
    from refvae.tools.verify.adversarial import ADVERSARIAL_INPUTS
    for s in conf.SUBJECTS:
        if s["adversarial"] and s["library"] not in committed["unavailable"]:
            got = {r["check"] for r in rows if r["subject"] == s["subject"] and r["library"] == s["library"]}
            assert {f"adversarial.{n}" for n in ADVERSARIAL_INPUTS} <= got, s["subject"]
    with open(os.path.join(REPORT, "conformance.md"), encoding="utf-8") as fh:
        assert fh.read() == conf.format_markdown(committed)


@pytest.mark.torch
def test_torch_rows_reproduce(committed):
    pytest.importorskip("torch", reason="torch is an optional extra; the conformance report's torch rows need it")
    fresh = conf.run_conformance(["torch"])
    want = {_key(r): r["verdict"] for r in committed["rows"] if r["library"] == "torch"}
    got = {_key(r): r["verdict"] for r in fresh["rows"]}
    assert got == want
    assert fresh["versions"]["torch"] == committed["versions"]["torch"]
    # the torch failures are real: their reproductions run on their own and print the NaN
    failing = [r for r in fresh["rows"] if r["verdict"] == "fail"]
    assert {r["check"] for r in failing} == {"adversarial.far-apart", "adversarial.log-var+-1000"}
    for r in failing:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(r["reproduction"], f"<reproduction {r['check']}>", "exec"), {"__name__": "__repro__"})
        assert "nan" in out.getvalue(), (r["check"], out.getvalue())


def test_command_rejects_unknown_library(capsys):
    with pytest.raises(SystemExit) as exc:
        conf.main(["--libraries", "bogus", "--out", os.devnull])
    assert exc.value.code == 2
    assert "--libraries" in capsys.readouterr().err


def test_run_conformance_argument_errors():
    with pytest.raises(ValueError, match="unknown library 'bogus'"):
        conf.run_conformance(["bogus"])
    with pytest.raises(TypeError, match="libraries must be a list"):
        conf.run_conformance("torch")
    with pytest.raises(ValueError, match="report must be a dict"):
        conf.format_markdown({"rows": []})


# =========================================================================== docs/verify-real-code.md

def _blocks(lang):
    with open(PAGE, encoding="utf-8") as fh:
        return re.findall(rf"```{lang}\n(.*?)```", fh.read(), flags=re.S)


def _adapter_dir(tmp_path, planted=None):
    """The page's adapter next to a copy of examples/library_model.py (optionally with one edit).
    ``library_model`` is dropped from sys.modules: a copy imported by an earlier test would
    otherwise be the one the adapter gets."""
    import sys
    sys.modules.pop("library_model", None)
    d = tmp_path / ("planted" if planted else "as-is")
    d.mkdir()
    (d / "my_adapter.py").write_text(_blocks("python")[0])
    src = open(os.path.join(ROOT, "examples", "library_model.py"), encoding="utf-8").read()
    if planted:
        assert planted[0] in src
        src = src.replace(*planted)
    (d / "library_model.py").write_text(src)
    return d


@pytest.mark.torch
def test_page_adapter_verifies_the_unedited_library_model(tmp_path):
    pytest.importorskip("torch", reason="the page wraps a PyTorch model")
    d = _adapter_dir(tmp_path)
    rep = run(f"{d / 'my_adapter.py'}:factory", cases=["standard-bernoulli"], checks=("golden", "gradient"))
    assert rep.passed, rep.format()
    r = rep.results[0]
    reported = [q.name for q in r.quantities if q.status == "pass"]
    assert len(reported) == 18 and {"encoder.0.pre", "mu", "log_var", "decoder.1.pre", "neg_elbo", "loss",
                                     "grad.encoder.0.W"} <= set(reported)
    assert r.check("gradient").status == "pass"


@pytest.mark.torch
def test_page_adapter_finds_a_bug_planted_in_the_library(tmp_path):
    pytest.importorskip("torch", reason="the page wraps a PyTorch model")
    d = _adapter_dir(tmp_path, planted=("std = torch.exp(0.5 * log_var)", "std = torch.exp(log_var)"))
    rep = run(f"{d / 'my_adapter.py'}:factory", cases=["standard-bernoulli"], checks=("golden",))
    r = rep.results[0]
    assert not rep.passed and r.first_divergence == "decoder.0.pre", rep.format()
    before = r.quantities[:r.quantity("decoder.0.pre").position]
    assert {q.name for q in before if q.status == "pass"} >= {"encoder.0.pre", "encoder.1.pre", "mu", "log_var"}
    assert all(q.status in ("pass", "missing") for q in before)  # z is not reported: the model hides it
    assert "first divergence at decoder.0.pre" in rep.format()  # the line the page quotes


@pytest.mark.torch
def test_page_noise_injection_refuses_an_unexpected_draw(tmp_path):
    pytest.importorskip("torch", reason="the page wraps a PyTorch model")
    import importlib.util
    import torch
    d = _adapter_dir(tmp_path)
    spec = importlib.util.spec_from_file_location("page_adapter_noise", d / "my_adapter.py")
    module = importlib.util.module_from_spec(spec)
    import sys
    sys.path.insert(0, str(d))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(d))
    eps = torch.zeros(3, 2, dtype=torch.float64)
    with module.golden_noise(eps):
        assert torch.randn_like(eps).shape == (3, 2)
        with pytest.raises(RuntimeError, match="golden eps is"):
            torch.randn_like(torch.zeros(4, 2))
    assert torch.randn_like is not None and torch.randn_like(eps).std() > 0  # restored


@pytest.mark.torch
def test_page_adversarial_example_prints_what_the_page_says():
    pytest.importorskip("torch", reason="the page's example uses torch.distributions")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_blocks("python")[1], "<verify-real-code.md>", "exec"), {"__name__": "__page__"})
    lines = {ln.split()[0]: ln.split()[1] for ln in out.getvalue().splitlines()}
    fails = {k for k, v in lines.items() if v == "fail"}
    assert fails == {"adversarial.far-apart", "adversarial.log-var+-1000"}, out.getvalue()
    assert sum(v == "pass" for v in lines.values()) == 7


def test_page_commands_name_real_things():
    text = open(PAGE, encoding="utf-8").read()
    assert "python -m refvae.tools.verify.conformance --out validation/conformance" in text
    for lib, pin in conf.PINS.items():
        if lib in ("torch", "pyro-ppl", "numpyro", "pythae"):
            assert f"{lib}=={pin}" in text, lib


def test_a_library_that_cannot_be_imported_is_listed_with_the_reason(monkeypatch):
    subject = conf._subject("nosuchlib", "refvae_no_such_module_h16b", "Nothing", "def factory():\n    return None\n",
                            "prior", ["standard-bernoulli"])
    monkeypatch.setattr(conf, "SUBJECTS", conf.SUBJECTS + [subject])
    report = conf.run_conformance(["nosuchlib"])
    assert report["rows"] == []
    assert "ModuleNotFoundError" in report["unavailable"]["nosuchlib"]
    assert "Not installed / not importable:" in conf.format_markdown(report)
