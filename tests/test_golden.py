"""Golden cases (``refvae.tools.golden``, ``refvae golden``): the committed files, their regeneration,
the format a reader relies on, and the tolerance scale stored with them.

- *Integrity*: ``SHA256SUMS`` lists every committed file with its digest (a changed byte is found).
- *Regeneration*: rebuilding a case must reproduce it value by value: parameters, inputs and
  draws exactly, values within ``golden_regeneration`` (c u (S + |e|), u = 2^-53), scales and
  references within 1e-6 relative. Checksums are not the test: the manifest's provenance changes
  on every regeneration and another BLAS may round differently. Six cases (every prior, every
  likelihood twice) run by default; all eighteen with ``-m slow``.
- *Format*: readable with ``allow_pickle=False``; the manifest lists the conventions, the data-flow
  order (the VAE's trace, then ``loss``, the gradients and ``prior_sample.z``), shapes, tolerances
  and provenance; every leaky-ReLU pre-activation is at least the kink margin from 0.
- *Scale*: evaluating refvae itself on inputs rounded to float32 stays within the float32
  tolerance with a wide margin (the main term of the derivation in ``refvae.tools.golden``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import zipfile

import numpy as np
import pytest

from refvae.tolerances import tolerance
from refvae.tools import golden
from refvae.tools.cli_verify import GOLDEN, run_golden
from refvae.tools.golden import (CASE_LIKELIHOODS, CASE_PRIORS, CONVENTIONS, KINK_MARGIN, build_case,
                           compare_cases, load_case, reference_outputs)

ALL = [(p, li) for p in CASE_PRIORS for li in CASE_LIKELIHOODS]
#: every committed case as (prior, likelihood, kl, confident): ALL, then the variants
SPECS = golden.committed_cases()
NAMES = [golden.case_name(*s) for s in SPECS]
VARIANTS = [s for s in SPECS if s[2] != "mc" or s[3]]
#: regenerated in the default run: every prior once, every likelihood twice
DEFAULT = [("standard", "categorical"), ("mog", "bernoulli"), ("vamp", "gaussian"),
           ("gtm", "categorical"), ("gtm_vamp", "bernoulli"), ("flow", "gaussian")]


def _parse(argv):
    parser = argparse.ArgumentParser()
    GOLDEN.add_to(parser.add_subparsers())
    return parser.parse_args(["golden", *argv])


@pytest.fixture(scope="module")
def committed():
    return {n: load_case(n) for n in NAMES}


# =========================================================================== the committed set

def test_committed_set_is_complete():
    names = [os.path.basename(p) for p in golden.list_cases()]
    assert sorted(names) == sorted(NAMES) and len(names) == 23
    assert [(p, li, "mc", False) for p, li in ALL] == SPECS[:18]
    # each variant listed right after its base case; the built-in order of the base cases kept
    assert [n for n in names if n.count("-") == 1] == [golden.case_name(p, li) for p, li in ALL]
    for i, n in enumerate(names):
        if n.count("-") > 1:
            assert names[i - 1].startswith(n.rsplit("-", 1)[0].split("-analytic_kl")[0]), n
    assert names[-1] == "flow-gaussian"


@pytest.mark.parametrize("spec", [VARIANTS[0], VARIANTS[-1]], ids=lambda s: golden.case_name(*s))
def test_regenerated_variant_matches_committed(spec, committed):
    new = build_case(spec[0], spec[1], kl=spec[2], confident=spec[3])
    assert compare_cases(new, committed[golden.case_name(*spec)]) == []


@pytest.mark.slow
@pytest.mark.parametrize("spec", VARIANTS[1:-1], ids=lambda s: golden.case_name(*s))
def test_regenerated_variant_matches_committed_all(spec, committed):
    new = build_case(spec[0], spec[1], kl=spec[2], confident=spec[3])
    assert compare_cases(new, committed[golden.case_name(*spec)]) == []


@pytest.mark.parametrize("likelihood", CASE_LIKELIHOODS)
def test_analytic_kl_cases(likelihood, committed):
    """The analytic-KL case is its Monte Carlo twin with the closed-form KL: same parameters, data
    and draws; kl = KL[N(mu, e^log_var) || N(0, I)]; neg_elbo = -(log_px_z - kl); log_pz and
    log_qz_x still in the trace."""
    from refvae import gaussian
    a = committed[f"standard-{likelihood}-analytic_kl"]
    m = committed[f"standard-{likelihood}"]
    assert a.config["kl"] == "analytic" and m.config["kl"] == "mc"
    for k in m.params:
        assert np.array_equal(a.params[k], m.params[k]), k
    assert np.array_equal(a.x, m.x) and np.array_equal(a.eps, m.eps)
    mu, lv = a.values["mu"], a.values["log_var"]
    assert np.allclose(a.values["kl"], gaussian.kl(mu, lv, np.zeros(2), np.zeros(2)), rtol=1e-14)
    assert np.allclose(a.values["neg_elbo"], -(a.values["log_px_z"] - a.values["kl"]), rtol=1e-14)
    assert np.all(np.abs(a.values["kl"] - m.values["kl"]) > 1e-3)   # the conventions differ
    assert {"log_pz", "log_qz_x"} <= set(a.order)


@pytest.mark.parametrize("likelihood", ["bernoulli", "categorical"])
def test_confident_cases_reach_confident_pixels(likelihood, committed):
    """Every decoder probability of a confident case is within 1e-6 of 0 or 1, and the data
    disagree with some (a clamp at 1e-6 would change log_px_z by more than 10 nats)."""
    case = committed[f"standard-{likelihood}-confident"]
    out = case.values["decoder.1.pre"]
    B, D = case.x.shape
    if likelihood == "bernoulli":
        p = 1 / (1 + np.exp(-out))
        assert np.all(np.minimum(p, 1 - p) < 1e-6)
        agree = (p > 0.5) == (case.x > 0.5)
    else:
        logits = out.reshape(B, D, 5)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        assert np.all(1 - p.max(-1) < 1e-6)
        agree = p.argmax(-1) == case.x
    assert agree.any() and (~agree).any()
    assert np.all(case.values["log_px_z"] < -15)


def test_checksums_match_committed_files():
    assert golden.verify_checksums() == []


def test_checksums_detect_a_changed_byte(tmp_path):
    src = os.path.join(golden.golden_dir(), "standard-bernoulli")
    shutil.copytree(src, tmp_path / "standard-bernoulli")
    golden.write_checksums(tmp_path)
    assert golden.verify_checksums(tmp_path) == []
    path = tmp_path / "standard-bernoulli" / "manifest.json"
    data = bytearray(path.read_bytes())
    data[10] ^= 1
    path.write_bytes(bytes(data))
    assert golden.verify_checksums(tmp_path) == [
        "standard-bernoulli/manifest.json: SHA-256 differs from SHA256SUMS"]


@pytest.mark.parametrize("prior,likelihood", DEFAULT)
def test_regenerated_case_matches_committed(prior, likelihood, committed):
    new = build_case(prior, likelihood)
    assert compare_cases(new, committed[golden.case_name(prior, likelihood)]) == []


@pytest.mark.slow
@pytest.mark.parametrize("prior,likelihood", [c for c in ALL if c not in DEFAULT])
def test_regenerated_case_matches_committed_all(prior, likelihood, committed):
    new = build_case(prior, likelihood)
    assert compare_cases(new, committed[golden.case_name(prior, likelihood)]) == []


def test_compare_cases_finds_a_moved_value(committed):
    case = committed["mog-categorical"]
    moved = load_case("mog-categorical")
    moved.values["prior.log_p"] = moved.values["prior.log_p"] * (1 + 1e-12)
    problems = compare_cases(moved, case)
    assert len(problems) == 1 and problems[0].startswith("value prior.log_p moved beyond rounding")
    moved = load_case("mog-categorical")
    moved.params["prior.logits"] = moved.params["prior.logits"].copy()
    moved.params["prior.logits"][0] = np.nextafter(moved.params["prior.logits"][0], 1.0)
    assert compare_cases(moved, case) == ["param prior.logits differs"]


@pytest.mark.parametrize("name", NAMES)
def test_values_are_refvae_outputs(name, committed):
    """The stored values are what refvae computes from the stored inputs (cheap: no probes)."""
    case = committed[name]
    out = reference_outputs(case.model(), case.x, case.eps, case.draws)
    assert list(out) == case.order
    for k in case.order:
        allowed = golden.allowed_error(case.values[k], case.scales[k], "float64",
                                       c=tolerance("golden_regeneration").c)
        assert np.all(np.abs(out[k] - case.values[k]) <= allowed), k


# =========================================================================== the format

@pytest.mark.parametrize("name", NAMES)
def test_format_and_manifest(name, committed):
    case = committed[name]
    path = os.path.join(golden.golden_dir(), name)
    with np.load(os.path.join(path, "case.npz"), allow_pickle=False) as npz:
        files = set(npz.files)
        assert all(npz[k].dtype != object for k in files)
    with open(os.path.join(path, "manifest.json"), encoding="utf-8") as fh:
        m = json.load(fh, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert m["format"] == "refvae-golden-case" and m["format_version"] == 1 and m["name"] == name
    assert m["conventions"] == CONVENTIONS
    for key in ("parameters", "linear", "activation", "gaussian", "categorical", "reduction",
                "mixture", "flow"):
        assert m["conventions"][key]
    assert "W.T" in m["conventions"]["linear"] and "0.01" in m["conventions"]["activation"]
    assert "left slope" in m["conventions"]["activation"] and "C-order" in m["conventions"]["categorical"]
    assert "mean over the batch" in m["conventions"]["reduction"]
    prov = m["provenance"]
    for key in ("refvae", "git_revision", "numpy", "numba", "scipy", "python", "seed", "rng"):
        assert key in prov, key
    assert m["tolerances"]["c"] == tolerance("verify_golden").c
    # parameters, arrays and order agree
    assert {f"param.{k}" for k in m["parameters"]} | {"input.x", "input.eps", "scales"} \
        | {f"draw.{k}" for k in m["draws"]} | {f"value.{e['name']}" for e in m["order"]} \
        | {f"reference.{k}" for k in ("nll", "nll_is", "nll_is_se", "nll_is_ess",
                                       "neg_elbo_expectation")} == files
    # data-flow order: the VAE's trace, then loss, the gradients (parameter order), the sample
    trace = [n for n, _ in case.model().forward(case.x, case.eps).trace]
    assert case.order == trace + ["loss"] + [f"grad.{k}" for k in case.params] + ["prior_sample.z"]
    assert [e["group"] for e in m["order"]] == (["trace"] * len(trace) + ["loss"]
                                                + ["gradient"] * len(case.params) + ["prior_sample"])
    for k, v in case.params.items():
        assert case.values[f"grad.{k}"].shape == v.shape
    assert set(case.config) >= {"x_dim", "latent_dim", "hidden", "activation", "likelihood",
                                "prior", "prior_kwargs", "batch_size"}
    assert case.x.shape == (3, 6) and case.eps.shape == (3, 2)


@pytest.mark.parametrize("name", NAMES)
def test_kink_margin_and_visible_conventions(name, committed):
    """No leaky-ReLU pre-activation within KINK_MARGIN of 0; the conventions are visible in the
    numbers (posterior log-variances far from 0, nonzero mixture logits, flow scales)."""
    case = committed[name]
    layers = golden.kinks._kinked_layers(case.order)
    assert layers, "every case has hidden leaky-ReLU layers"
    for pre, _ in layers:
        assert np.min(np.abs(case.values[pre])) >= KINK_MARGIN, pre
    assert np.mean(case.values["log_var"]) > 0.5
    if "prior.logits" in case.params:
        assert np.ptp(case.params["prior.logits"]) > 0.5
    if case.prior in ("mog", "vamp", "gtm", "gtm_vamp"):
        assert np.max(np.abs(case.values["prior.log_vars"])) > 0.5
    if case.prior == "flow":
        for t in range(2):
            assert np.max(np.abs(case.values[f"prior.flow.{t}.s"])) > 0.1


def test_nll_references_agree(committed):
    """The exact NLL (quadrature) and refvae's importance-sampled estimate agree within 5 se
    + 0.01 nats on every case (the IS estimate's bias is O(se^2)); the expected negative ELBO is
    above the NLL (Jensen) by more than the NLL check's tolerance."""
    for case in committed.values():
        r = case.references
        assert np.all(np.abs(r["nll"] - r["nll_is"]) <= 5 * r["nll_is_se"] + 0.01), case.name
        assert np.mean(r["neg_elbo_expectation"] - r["nll"]) > 0.1, case.name


@pytest.mark.parametrize("name", ["mog-categorical", "vamp-bernoulli", "gtm_vamp-gaussian",
                                  "flow-categorical"])
def test_scale_covers_float32_input_rounding(name, committed):
    """refvae on inputs rounded to float32 (parameters, eps, draws, Gaussian x) moves every value
    by at most a small fraction of the float32 tolerance c u32 (S + |e|): the first term of the
    derivation, measured; the rest of the margin is for internal rounding and two implementations."""
    case = committed[name]
    r32 = lambda a: np.asarray(a, np.float32).astype(np.float64)  # noqa: E731
    model = golden.reference_model(case.config, {k: r32(v) for k, v in case.params.items()})
    draws = dict(case.draws)
    draws["prior_sample.eps"] = r32(draws["prior_sample.eps"])
    out = reference_outputs(model, r32(case.x), r32(case.eps), draws)
    worst = max(float(np.max(np.abs(out[k] - case.values[k]) / case.allowed(k, "float32")))
                for k in case.order)
    assert worst < 0.1


# =========================================================================== writing and reading

def test_npz_is_deterministic():
    arrays = {"param.a": np.arange(3.0), "value.loss": np.array(1.5), "draw.i": np.arange(4)}
    assert golden.writing._npz_bytes(arrays) == golden.writing._npz_bytes(arrays)
    with np.load(io.BytesIO(golden.writing._npz_bytes(arrays)), allow_pickle=False) as npz:
        assert npz["value.loss"].shape == () and npz["draw.i"].dtype == np.int64


def test_cli_writes_a_case_that_matches_the_committed_one(tmp_path, capsys):
    args = _parse(["--prior", "standard", "--likelihood", "bernoulli", "--out", str(tmp_path)])
    assert run_golden(args) == 0
    out = capsys.readouterr().out
    assert "standard-bernoulli" in out and "SHA256SUMS" in out
    assert golden.verify_checksums(tmp_path) == []
    case = load_case(tmp_path / "standard-bernoulli")
    assert compare_cases(case, load_case("standard-bernoulli")) == []
    # the same build written twice gives the same bytes (checksums are stable on one machine)
    first = (tmp_path / "standard-bernoulli" / "case.npz").read_bytes()
    assert run_golden(_parse(["--prior", "standard", "--likelihood", "bernoulli", "--out",
                              str(tmp_path), "--quiet"])) == 0
    assert (tmp_path / "standard-bernoulli" / "case.npz").read_bytes() == first


def test_cli_compare(tmp_path, capsys):
    args = _parse(["--prior", "standard", "--likelihood", "gaussian", "--compare", golden.golden_dir()])
    assert run_golden(args) == 0
    assert "same  standard-gaussian" in capsys.readouterr().out
    shutil.copytree(os.path.join(golden.golden_dir(), "standard-gaussian"), tmp_path / "standard-gaussian")
    npz = tmp_path / "standard-gaussian" / "case.npz"
    with np.load(npz, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["value.kl"] = arrays["value.kl"] + 1e-9
    npz.write_bytes(golden.writing._npz_bytes(arrays))
    args = _parse(["--prior", "standard", "--likelihood", "gaussian", "--compare", str(tmp_path)])
    assert run_golden(args) == 1
    assert "MOVED standard-gaussian" in capsys.readouterr().err


def test_cli_kl_and_confident_selection(tmp_path, capsys):
    """--kl analytic writes the analytic-KL variant; --kl all with every prior leaves the analytic
    variant out where the prior has none; named explicitly it is an error."""
    assert run_golden(_parse(["--prior", "standard", "--likelihood", "gaussian", "--kl", "analytic",
                              "--compare", golden.golden_dir()])) == 0
    assert "same  standard-gaussian-analytic_kl" in capsys.readouterr().out
    from refvae.tools.cli_verify import _golden_specs
    specs = _golden_specs(_parse(["--kl", "all", "--out", "x"]), golden)
    assert len(specs) == 21 and sum(s[2] == "analytic" for s in specs) == 3
    specs = _golden_specs(_parse(["--confident", "--out", "x"]), golden)
    assert [golden.case_name(*s) for s in specs[:2]] == ["standard-categorical-confident",
                                                         "standard-bernoulli-confident"]
    assert len(specs) == 12       # 6 priors x (categorical, bernoulli)
    assert _golden_specs(_parse(["--committed", "--out", "x"]), golden) == SPECS
    with pytest.raises(ValueError, match="standard prior only"):
        run_golden(_parse(["--prior", "mog", "--kl", "analytic", "--out", str(tmp_path)]))
    with pytest.raises(ValueError, match="likelihoods with probabilities"):
        run_golden(_parse(["--prior", "mog", "--likelihood", "gaussian", "--confident", "--out",
                           str(tmp_path)]))


@pytest.mark.parametrize("argv,match", [
    (["--prior", "normal", "--out", "x"], "--prior: unknown 'normal'"),
    (["--likelihood", "poisson", "--out", "x"], "--likelihood: unknown 'poisson'"),
    (["--prior", "mog"], "--out DIR is required"),
    (["--prior", "mog", "--out", "x", "--seed", "-1"], "--seed must be >= 0"),
])
def test_cli_rejects_bad_input(argv, match):
    with pytest.raises(ValueError, match=match):
        run_golden(_parse(argv))


def test_load_case_errors(tmp_path):
    with pytest.raises(ValueError, match="not a golden case"):
        load_case(tmp_path)
    case_dir = tmp_path / "c"
    shutil.copytree(os.path.join(golden.golden_dir(), "mog-bernoulli"), case_dir)
    m = json.loads((case_dir / "manifest.json").read_text())
    m["format_version"] = 99
    (case_dir / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="version 99"):
        load_case(case_dir)
    shutil.copy(os.path.join(golden.golden_dir(), "mog-bernoulli", "manifest.json"), case_dir)
    # an object array (needs pickle) is refused
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        member = io.BytesIO()
        np.lib.format.write_array(member, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        zf.writestr("value.loss.npy", member.getvalue())
    (case_dir / "case.npz").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="without pickle"):
        load_case(case_dir)


def test_conventions_take_each_prior_formula_from_its_class():
    """The prior entries of the conventions are the priors' ``formula`` attributes (none is named in
    the golden package); the general entries surround them in the committed order."""
    from refvae.priors import PRIORS
    keys = list(CONVENTIONS)
    formulas = [n for n, cls in PRIORS.items() if cls.formula is not None]
    assert formulas == ["vamp", "gtm", "gtm_vamp", "flow"]
    for n in formulas:
        assert CONVENTIONS[n] == PRIORS[n].formula
    assert keys[keys.index("mixture") + 1:keys.index("elbo")] == formulas
