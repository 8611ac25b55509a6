"""Hostile files and flags of ``refvae verify``, ``refvae golden`` and ``refvae stats`` (issue 13,
items 2.6, 2.7, 2.12, 2.13): tampered golden cases and checksum lists, malformed manifests (also
fuzzed), bad flags, requests beyond the machine's memory, and component files that are partial,
mixed or swapped while a run reads them.

Every CLI case runs in-process through ``refvae.tools.cli.main``: exit code 2, ONE line on stderr naming
the flag or the file, no traceback, and nothing reported as PASSED or blamed on the implementation.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refvae
from refvae.tools import cli_stats, golden
from refvae.tools import distributed as dist
from refvae.tools.cli import main

IMPL = "refvae.tools.verify:RefvaeAdapter"
CASE = "standard-bernoulli"


def one_line_error(capsys, rc, *words):
    """The single stderr line of a failed command (exit 2), with each of ``words`` in it."""
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err + out and "PASSED" not in out and "FAIL" not in out
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture
def cases(tmp_path):
    """A directory holding a copy of one committed case and its SHA256SUMS."""
    d = tmp_path / "cases"
    d.mkdir()
    shutil.copytree(os.path.join(golden.golden_dir(), CASE), d / CASE)
    golden.write_checksums(d)
    return d


def verify(d, *extra):
    return main(["verify", "--impl", IMPL, "--cases", str(d), "--checks", "golden", "--quiet", *extra])


# =========================================================================== 1. checksums

def _flip_byte(path, offset=-40):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_manifest_number(path):
    text = path.read_text()
    path.write_text(text.replace('"kink_margin": 0.1', '"kink_margin": 0.2', 1))


def _alter_first_digest(path):
    text = path.read_text()
    assert text.split()[1] == f"{CASE}/case.npz"
    path.write_text(("1" if text[0] == "0" else "0") + text[1:])


TAMPER = {
    "flipped byte in case.npz": ("case.npz", lambda d: _flip_byte(d / CASE / "case.npz"),
                                 "does not match SHA256SUMS"),
    "edited manifest.json": ("manifest.json", lambda d: _edit_manifest_number(d / CASE / "manifest.json"),
                             "does not match SHA256SUMS"),
    "deleted case.npz": ("case.npz", lambda d: (d / CASE / "case.npz").unlink(),
                         "is listed in SHA256SUMS but missing"),
    "unlisted file": ("manifest.json", lambda d: (d / "SHA256SUMS").write_text(
        "\n".join(l for l in (d / "SHA256SUMS").read_text().splitlines() if "manifest" not in l) + "\n"),
        "is not listed in SHA256SUMS"),
    "altered digest": ("case.npz", lambda d: _alter_first_digest(d / "SHA256SUMS"),
                       "does not match SHA256SUMS"),
}


@pytest.mark.hostile("file", "named error")
@pytest.mark.parametrize("how", list(TAMPER))
@pytest.mark.parametrize("select", ["directory", "--case", "case directory"])
def test_verify_refuses_a_case_that_does_not_match_its_checksums(cases, capsys, how, select):
    """refvae verify on a tampered golden case: 'corrupt golden case <name>: <file> ...', exit 2."""
    f, tamper, words = TAMPER[how]
    tamper(cases)
    argv = {"directory": [], "--case": ["--case", CASE]}.get(select)
    if argv is None:
        rc = verify(cases / CASE)
    else:
        rc = verify(cases, *argv)
    line = one_line_error(capsys, rc, f"corrupt golden case {CASE}: {f} {words}")
    assert "adapter" not in line and "implementation" not in line


@pytest.mark.hostile("file", "named error")
@pytest.mark.parametrize("select", ["directory", "--case", "case directory"])
def test_verify_needs_sha256sums_unless_told_otherwise(cases, capsys, select):
    """refvae verify without SHA256SUMS: a named error; --no-checksums runs the (intact) case."""
    (cases / "SHA256SUMS").unlink()
    argv = {"directory": [], "--case": ["--case", CASE]}.get(select, [])
    target = cases / CASE if select == "case directory" else cases
    one_line_error(capsys, verify(target, *argv), "SHA256SUMS is missing", "--no-checksums")
    assert verify(target, *argv, "--no-checksums") == 0
    assert capsys.readouterr().out.startswith("PASSED: 1 of 1 case(s) pass")


@pytest.mark.hostile("file", "named error")
@pytest.mark.parametrize("line,match", [
    ("garbage", "malformed checksum line"),
    ("0" * 64, "malformed checksum line"),
    ("0" * 63 + "  standard-bernoulli/case.npz", "malformed checksum line"),
    ("z" * 64 + "  standard-bernoulli/case.npz", "malformed checksum line"),
    ("0" * 64 + "  ../../etc/passwd", "not a relative path"),
    ("0" * 64 + "  /etc/passwd", "not a relative path"),
    ("LISTED-TWICE", "listed twice"),
])
def test_malformed_sha256sums_line_is_named_with_its_line_number(cases, capsys, line, match):
    """A malformed SHA256SUMS line: ValueError naming the file and line 2 (CLI: exit 2)."""
    first, *rest = (cases / "SHA256SUMS").read_text().splitlines()
    line = first if line == "LISTED-TWICE" else line
    (cases / "SHA256SUMS").write_text("\n".join([first, line, *rest]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{cases / 'SHA256SUMS'}, line 2: ") + ".*" + match):
        golden.verify_checksums(cases)
    one_line_error(capsys, verify(cases), "SHA256SUMS, line 2", match)


@pytest.mark.hostile("file", "named error")
def test_sha256sums_that_is_not_text_is_named(cases, capsys):
    """SHA256SUMS holding binary bytes: a named error, not a UnicodeDecodeError."""
    (cases / "SHA256SUMS").write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(ValueError, match="SHA256SUMS: cannot be read as a checksum list"):
        golden.verify_checksums(cases)
    one_line_error(capsys, verify(cases), "SHA256SUMS", "cannot be read")


# =========================================================================== 2. manifests

def _manifest(d):
    return json.loads((d / CASE / "manifest.json").read_text())


def _write_manifest(d, m):
    (d / CASE / "manifest.json").write_text(json.dumps(m))


def _set(m, path, value):
    obj = m
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value
    return m


def _drop(m, path):
    obj = m
    for k in path[:-1]:
        obj = obj[k]
    del obj[path[-1]]
    return m


MANIFESTS = {
    "a list": lambda m: [m],
    "null": lambda m: None,
    "a string": lambda m: "refvae-golden-case",
    "no format": lambda m: _drop(m, ["format"]),
    "format_version true": lambda m: _set(m, ["format_version"], True),
    "no name": lambda m: _drop(m, ["name"]),
    "name a number": lambda m: _set(m, ["name"], 3),
    "no config": lambda m: _drop(m, ["config"]),
    "config a list": lambda m: _set(m, ["config"], [1, 2]),
    "config.prior a number": lambda m: _set(m, ["config", "prior"], 7),
    "config.prior unknown": lambda m: _set(m, ["config", "prior"], "bogus"),
    "config.x_dim a string": lambda m: _set(m, ["config", "x_dim"], "6"),
    "config.x_dim huge": lambda m: _set(m, ["config", "x_dim"], 10 ** 12),
    "config.hidden huge": lambda m: _set(m, ["config", "hidden"], [10 ** 12]),
    "config.latent_dim 3": lambda m: _set(m, ["config", "latent_dim"], 3),
    "config.batch_size 4": lambda m: _set(m, ["config", "batch_size"], 4),
    "no parameters": lambda m: _drop(m, ["parameters"]),
    "parameters a list": lambda m: _set(m, ["parameters"], list(m["parameters"])),
    "parameter shape a string": lambda m: _set(m, ["parameters", "encoder.0.W"], "6x5"),
    "parameter shape wrong": lambda m: _set(m, ["parameters", "encoder.0.W"], [5, 6]),
    "parameter shape negative": lambda m: _set(m, ["parameters", "encoder.0.W"], [-6, 5]),
    "no order": lambda m: _drop(m, ["order"]),
    "order an object": lambda m: _set(m, ["order"], {"a": 1}),
    "order empty": lambda m: _set(m, ["order"], []),
    "order entry a string": lambda m: _set(m, ["order", 0], "encoder.0.pre"),
    "order entry without shape": lambda m: _drop(m, ["order", 0, "shape"]),
    "order shape floats": lambda m: _set(m, ["order", 0, "shape"], [3.0, 5.0]),
    "order shape huge": lambda m: _set(m, ["order", 0, "shape"], [2 ** 40, 5]),
    "order shape wrong": lambda m: _set(m, ["order", 0, "shape"], [5, 3]),
    "order name repeated": lambda m: _set(m, ["order", 1, "name"], m["order"][0]["name"]),
    "order name unknown": lambda m: _set(m, ["order", 0, "name"], "encoder.9.pre"),
}


@pytest.mark.hostile("file", "named error")
@pytest.mark.parametrize("how", list(MANIFESTS))
def test_malformed_manifest_is_named(cases, capsys, how):
    """A manifest.json that is not an object, lacks a key or has a wrong type: 'golden case <path>: manifest.json ...'."""
    _write_manifest(cases, MANIFESTS[how](_manifest(cases)))
    with pytest.raises(ValueError, match=re.escape(f"golden case {cases / CASE}: manifest.json")
                       + "|" + re.escape(f"golden case {cases / CASE}: case.npz")):
        golden.load_case(cases / CASE)
    one_line_error(capsys, verify(cases, "--no-checksums"), f"golden case {cases / CASE}:")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children,
                                                                       max_size=3),
    max_leaves=6)


def _key_paths(m):
    top = [[k] for k in m]
    config = [["config", k] for k in m["config"]]
    params = [["parameters", k] for k in m["parameters"]]
    order = [["order", i, k] for i in (0, 5) for k in m["order"][i]] + [["order", 3]]
    return top + config + params + order + [["new key"], ["config", "new key"]]


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(os.path.join(golden.golden_dir(), "gtm_vamp-gaussian"), d / "c")
    return d / "c"


@pytest.mark.hostile("file", "named error")
@settings(max_examples=60)
@given(data=st.data())
def test_fuzzed_manifest_gives_only_named_errors(fuzz_dir, data):
    """Random JSON values at random keys of manifest.json: only ValueError/TypeError naming the case."""
    m = json.loads(open(os.path.join(golden.golden_dir(), "gtm_vamp-gaussian", "manifest.json")).read())
    paths = _key_paths(m)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from(paths), label="key")
        value = data.draw(json_values, label="value")
        try:  # an earlier mutation may have replaced a parent of this key
            _set(m, path, value)
        except (TypeError, KeyError, IndexError):
            pass
    if data.draw(st.booleans(), label="whole manifest replaced"):
        m = data.draw(json_values, label="manifest")
    (fuzz_dir / "manifest.json").write_text(json.dumps(m))
    try:
        case = golden.load_case(fuzz_dir)
    except (ValueError, TypeError) as exc:
        assert f"golden case {fuzz_dir}:" in str(exc), str(exc)
    else:  # a harmless change (description, provenance, ...): the arrays are those of the case
        assert case.params.keys() == golden.load_case("gtm_vamp-gaussian").params.keys()


NPZ = {
    "NaN in a value": lambda a: a.__setitem__("value.loss", np.array(np.nan)),
    "inf in a parameter": lambda a: a["param.encoder.0.W"].__setitem__((0, 0), np.inf),
    "string array": lambda a: a.__setitem__("input.eps", np.array([["a", "b"]] * 3)),
    "no input.x": lambda a: a.pop("input.x"),
    "input.x 1-D": lambda a: a.__setitem__("input.x", a["input.x"].ravel()),
    "parameter of another shape": lambda a: a.__setitem__("param.encoder.0.W", np.zeros((5, 6))),
    "missing parameter": lambda a: a.pop("param.decoder.0.b"),
    "negative scales": lambda a: a.__setitem__("scales", -a["scales"]),
    "scales too short": lambda a: a.__setitem__("scales", a["scales"][:-1]),
    "eps of another width": lambda a: a.__setitem__("input.eps", np.zeros((3, 3))),
    "prior draw missing": lambda a: a.pop("draw.prior_sample.eps"),
}


@pytest.mark.hostile("file", "named error")
@pytest.mark.parametrize("how", list(NPZ))
def test_tampered_case_arrays_are_named(cases, how):
    """case.npz with NaN, strings, missing or mis-shaped arrays: 'golden case <path>: case.npz ...'."""
    with np.load(cases / CASE / "case.npz") as z:
        arrays = {k: z[k] for k in z.files}
    NPZ[how](arrays)
    np.savez(cases / CASE / "case.npz", **arrays)
    with pytest.raises(ValueError, match=re.escape(f"golden case {cases / CASE}: case.npz")):
        golden.load_case(cases / CASE)


# =========================================================================== 3. refvae stats flags

@pytest.fixture(scope="module")
def stats_dir(tmp_path_factory):
    """A saved MoG-prior model (D = 6, L = 2, K = 3) and N = 447 data points."""
    d = tmp_path_factory.mktemp("stats")
    rng = np.random.default_rng(20261202)
    model = refvae.VAE(6, 2, (8,), "tanh", "gaussian", prior="mog", rng=rng,
                       prior_kwargs={"num_components": 3})
    model.save(d / "model")
    np.save(d / "x.npy", rng.normal(size=(447, 6)))
    np.save(d / "y.npy", rng.normal(size=(447, 6)))
    return d


def stats(d, *argv):
    return main(["stats", "--model", str(d / "model"), "--data", str(d / "x.npy"), "--quiet", *argv])


@pytest.mark.hostile("non-finite", "named error")
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "-0.0"])
def test_stats_connect_timeout_must_be_finite_and_positive(stats_dir, capsys, tmp_path, value):
    """refvae stats --connect-timeout nan/inf/-1/0: one line naming the flag, exit 2, no file."""
    out = tmp_path / "s.json"
    one_line_error(capsys, stats(stats_dir, f"--connect-timeout={value}", "--out", str(out)),
                   "--connect-timeout must be a finite number of seconds > 0, got")
    assert not out.exists()


@pytest.mark.hostile("resources", "named error")
@pytest.mark.parametrize("flag,value", [("--samples", 10 ** 9), ("--queries", 10 ** 13),
                                        ("--holes", 10 ** 13), ("--samples", 2 ** 62)])
def test_stats_refuses_sizes_beyond_memory_before_allocating(stats_dir, capsys, flag, value):
    """refvae stats --samples 1e9 (and huge --queries/--holes): 'needs X GB ...; at most ... fits', exit 2."""
    line = one_line_error(capsys, stats(stats_dir, flag, str(value)),
                          f"{flag} {value} with N = 447, L = 2 needs about", "GB", f"at most {flag} ",
                          "fits in the")
    assert int(re.search(rf"at most {flag} (\d+) fits", line).group(1)) < value


@pytest.mark.hostile("resources", "exact value")
@pytest.mark.parametrize("flag,N,L,prior_bytes", [("--samples", 447, 2, 104), ("--queries", 10 ** 6, 16, 0),
                                                  ("--holes", 1000, 5, 49440)])
def test_stats_memory_limit_is_the_byte_count_of_the_arrays(flag, N, L, prior_bytes):
    """The memory check refuses exactly the requests whose arrays exceed the limit."""
    available = 10 ** 9 + 12345
    each = {"--samples": N * (8 * (6 + 3 * L) + prior_bytes),
            "--queries": 8 * (6 + 3 * L) + prior_bytes + 16 * L,
            "--holes": 8 * (4 + 3 * L) + prior_bytes}[flag]
    base = 16 * N * L
    fits = (available - base) // each

    def args(v):
        return SimpleNamespace(samples=v if flag == "--samples" else 1,
                               queries=v if flag == "--queries" else (1 if flag == "--holes" else None),
                               holes=v if flag == "--holes" else 0)
    cli_stats._check_memory(args(fits), N, L, prior_bytes, True, available=available)
    with pytest.raises(ValueError, match=rf"{flag} {fits + 1} .* at most {flag} {fits} fits"):
        cli_stats._check_memory(args(fits + 1), N, L, prior_bytes, True, available=available)


@pytest.mark.hostile("resources", "exact value")
@pytest.mark.parametrize("prior,kw", [("standard", {}), ("mog", {"num_components": 10}), ("flow", {}),
                                      ("gtm", {})])
def test_stats_prior_bytes_bound_what_the_prior_allocates(prior, kw):
    """The per-point memory of the prior's forward pass is measured (tracemalloc) and bounds a larger call."""
    import tracemalloc
    from refvae.estimators import _prior_log_prob
    model = refvae.VAE(6, 2, (8,), "tanh", "gaussian", prior=prior, rng=np.random.default_rng(0),
                       prior_kwargs=kw)
    per_point = cli_stats._prior_bytes_per_point(model)
    assert per_point > 0
    z = np.random.default_rng(1).normal(size=(20000, 2))
    tracemalloc.start()
    try:
        _prior_log_prob(model, model.params, z)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.5 * per_point * len(z) <= peak <= 1.1 * per_point * len(z)


@pytest.mark.hostile("flag", "named error")
@pytest.mark.parametrize("argv,words", [
    (["--out", "DIR"], ["--out", "is a directory"]),
    (["--out", ""], ["--out", "empty path"]),
    (["--out", "nowhere/s.json"], ["--out", "does not exist"]),
    (["--scheduler", ""], ["--scheduler", "empty address"]),
    (["--scheduler", "  "], ["--scheduler", "empty address"]),
    (["--samples", "0"], ["--samples"]),
    (["--samples", "-5"], ["--samples"]),
    (["--queries", "0"], ["--queries"]),
    (["--holes", "1"], ["--holes"]),
    (["--holes", "-1"], ["--holes"]),
    (["--chunk", "0"], ["--chunk"]),
    (["--chunk", "-3"], ["--chunk"]),
    (["--threads", "0"], ["--threads"]),
    (["--seed", "-1"], ["--seed"]),
    (["--key", "nope"], ["--data"]),
    (["--key", "x"], ["--key", "only an .npz --data file"]),
    (["--threads", "1000000"], ["--threads 1000000", "at most"]),
])
def test_stats_bad_flags_give_one_line(stats_dir, capsys, tmp_path, monkeypatch, argv, words):
    """refvae stats with empty, negative, zero or meaningless flags: one line naming the flag, exit 2."""
    monkeypatch.chdir(tmp_path)
    argv = [str(tmp_path) if a == "DIR" else a for a in argv]
    if argv == ["--key", "nope"]:
        np.savez(tmp_path / "x.npz", a=np.zeros((3, 6)), b=np.zeros((3, 6)))
        rc = main(["stats", "--model", str(stats_dir / "model"), "--data", str(tmp_path / "x.npz"),
                   "--quiet", *argv])
    else:
        rc = stats(stats_dir, *argv)
    one_line_error(capsys, rc, *words)


@pytest.mark.hostile("file", "named error")
@pytest.mark.parametrize("which,value,words", [
    ("--model", "MISSING", ["--model", "does not exist"]),
    ("--model", "FILE", ["--model", "is not a directory"]),
    ("--model", "", ["--model", "empty path"]),
    ("--data", "MISSING", ["--data", "does not exist"]),
    ("--data", "DIR", ["--data", "is a directory"]),
    ("--data", "FILE", ["--data", "cannot read"]),
    ("--data", "", ["--data", "empty path"]),
    ("--components", "FILE", ["--components", "neither a directory"]),
    ("--components", "DIR", ["--components", "means.npy", "does not exist"]),
    ("--components", "", ["--components", "empty path"]),
    ("--write-components", "FILE", ["--write-components", "not a directory"]),
    ("--write-components", "", ["--write-components", "empty path"]),
])
def test_stats_bad_paths_give_one_line(stats_dir, capsys, tmp_path, which, value, words):
    """refvae stats with nonexistent paths, directories for files and files for directories: one line, exit 2."""
    (tmp_path / "file.txt").write_text("not an array\n")
    (tmp_path / "dir").mkdir()
    value = {"MISSING": str(tmp_path / "missing"), "FILE": str(tmp_path / "file.txt"),
             "DIR": str(tmp_path / "dir")}.get(value, value)
    model = value if which == "--model" else str(stats_dir / "model")
    src = ([which, value] if which in ("--data", "--components")
           else ["--data", str(stats_dir / "x.npy")])
    extra = [which, value] if which == "--write-components" else []
    one_line_error(capsys, main(["stats", "--model", model, *src, *extra, "--quiet"]), *words)


# =========================================================================== 4. --write-components

def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.hostile("file", "exact value")
def test_write_components_files_are_readable_fsynced_and_described_last(stats_dir, tmp_path):
    """--write-components: umask permissions (not 0600), no temporary files, a manifest with N, L, sizes, SHA-256."""
    out = tmp_path / "comps"
    old = os.umask(0o022)
    try:
        assert stats(stats_dir, "--write-components", str(out)) == 0
    finally:
        os.umask(old)
    assert sorted(p.name for p in out.iterdir()) == ["components.json", "log_vars.npy", "means.npy"]
    m = json.loads((out / "components.json").read_text())
    assert (m["format"], m["N"], m["L"], m["dtype"]) == ("refvae-components", 447, 2, "float64")
    for f in ("means.npy", "log_vars.npy"):
        assert stat.S_IMODE(os.stat(out / f).st_mode) == 0o644
        assert m["files"][f] == {"bytes": (out / f).stat().st_size, "sha256": _sha(out / f)}
        assert np.load(out / f).shape == (447, 2)
    assert stat.S_IMODE(os.stat(out / "components.json").st_mode) == 0o644
    from refvae.estimators import encode_all
    mu, lv = encode_all(refvae.VAE.load(stats_dir / "model"), np.load(stats_dir / "x.npy"))
    assert np.array_equal(np.load(out / "means.npy"), mu) and np.array_equal(np.load(out / "log_vars.npy"), lv)


@pytest.fixture
def comps(stats_dir, tmp_path):
    """Components of x.npy written by --write-components, and those of y.npy (same N)."""
    for name, data in (("a", "x.npy"), ("b", "y.npy")):
        assert main(["stats", "--model", str(stats_dir / "model"), "--data", str(stats_dir / data),
                     "--write-components", str(tmp_path / name), "--quiet"]) == 0
    return tmp_path / "a", tmp_path / "b"


MIXED = {
    "log_vars of another run": (lambda a, b: shutil.copy(b / "log_vars.npy", a / "log_vars.npy"),
                                "log_vars.npy does not match its SHA-256"),
    "means truncated to fewer rows": (lambda a, b: np.save(a / "means.npy", np.load(a / "means.npy")[:400]),
                                      "N is 447, but the files hold 400"),
    "manifest N changed": (lambda a, b: (a / "components.json").write_text(
        (a / "components.json").read_text().replace('"N": 447', '"N": 448')), "N is 448"),
    "manifest truncated": (lambda a, b: (a / "components.json").write_text(
        (a / "components.json").read_text()[:30]), "is malformed"),
    "manifest a list": (lambda a, b: (a / "components.json").write_text("[]"), "must be an object"),
}


@pytest.mark.hostile("file", "named error")
@pytest.mark.parametrize("how", list(MIXED))
def test_components_manifest_tells_a_mixed_set_from_a_complete_one(stats_dir, comps, capsys, how):
    """--components DIR with a mixed or partial set (or a broken manifest): one line naming components.json, exit 2."""
    a, b = comps
    tamper, words = MIXED[how]
    tamper(a, b)
    rc = main(["stats", "--model", str(stats_dir / "model"), "--components", str(a), "--quiet"])
    one_line_error(capsys, rc, "--components", "components.json", words)


@pytest.mark.hostile("interruption", "clean stop")
def test_failed_write_components_keeps_the_previous_complete_set(stats_dir, comps, monkeypatch):
    """An encoder error in the middle of --write-components: the old files and manifest stay, no temp files."""
    a, _ = comps
    before = {p.name: p.read_bytes() for p in a.iterdir()}
    model = refvae.VAE.load(stats_dir / "model")
    calls = []
    real = model.encoder.forward

    def failing(p, x):
        calls.append(len(x))
        if len(calls) == 1:
            return real(p, x)
        raise FloatingPointError("disk full (simulated)")
    monkeypatch.setattr(model.encoder, "forward", failing)
    with pytest.raises(FloatingPointError, match="simulated"):
        dist.encode_to_shards(model, np.load(stats_dir / "x.npy"), chunk=100, out_dir=a)
    assert {p.name: p.read_bytes() for p in a.iterdir()} == before
    assert dist._Components(str(a), None).N == 447  # the manifest still matches


@pytest.mark.hostile("interruption", "clean stop")
def test_crash_between_the_two_replaces_leaves_no_manifest(stats_dir, comps, monkeypatch):
    """A crash after log_vars.npy is replaced but before means.npy: no manifest claims the mixed set is complete."""
    a, _ = comps
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("crash"))
                        if os.path.basename(dst) == "means.npy" else real(src, dst))
    with pytest.raises(OSError, match="crash"):
        dist.encode_to_shards(refvae.VAE.load(stats_dir / "model"), np.load(stats_dir / "y.npy"),
                              out_dir=a)
    assert sorted(p.name for p in a.iterdir()) == ["log_vars.npy", "means.npy"]


# =========================================================================== 5. shards re-checked

SWAPS = {
    "fewer rows": (lambda p: np.save(p, np.zeros((400, 2))), r"expected shape \(447, 2\).*found \(400, 2\)"),
    "float32": (lambda p: np.save(p, np.zeros((447, 2), np.float32)),
                r"expected shape \(447, 2\) \(float64\), found \(447, 2\) \(float32\)"),
    "trailing bytes": (lambda p: open(p, "ab").write(b"\0" * 16), "expected 7280 bytes on disk"),
    "deleted": (lambda p: os.unlink(p), "cannot be read any more"),
    "header only": (lambda p: open(p, "r+b").truncate(128), "expected 7280 bytes on disk"),
}


@pytest.mark.hostile("file", "named error")
@pytest.mark.parametrize("how", list(SWAPS))
@pytest.mark.parametrize("read", ["rows", "to_numpy", "shard task"])
def test_npy_shard_swapped_after_the_header_was_read_is_named(tmp_path, how, read):
    """A .npy component file replaced after its header was read: 'component file X changed: expected ..., found ...'."""
    rng = np.random.default_rng(3)
    np.save(tmp_path / "means.npy", rng.normal(size=(447, 2)))
    np.save(tmp_path / "log_vars.npy", rng.normal(size=(447, 2)))
    c = dist._Components(str(tmp_path), None)
    swap, match = SWAPS[how]
    swap(tmp_path / "means.npy")
    pattern = re.escape(f"means: component file {str(tmp_path / 'means.npy')!r} changed: ") + ".*(" + match + ")"
    with pytest.raises(ValueError, match=pattern):
        if read == "rows":
            c.means.rows(100, 447)
        elif read == "to_numpy":
            c.to_numpy()
        else:  # what a Dask worker runs for one shard
            dist._read_rows(c.means.path, None, 0, 447, c.means.shape, "means", c.means.dtype.str,
                            c.means.size)


# =========================================================================== 6. verify / golden flags

@pytest.mark.hostile("flag", "named error")
@pytest.mark.parametrize("argv,words", [
    (["--case", ",,"], ["--case", "names no case"]),
    (["--case", ""], ["--case", "names no case"]),
    (["--case", ".."], ["--case", "no such case"]),
    (["--case", "../cases/" + CASE], ["--case", "no such case"]),
    (["--json", "DIR"], ["--json", "is a directory"]),
    (["--json", ""], ["--json", "empty path"]),
    (["--json", "FILE/x.json"], ["--json", "is not a directory"]),
    (["--cases", "FILE"], ["--cases", "not a directory"]),
    (["--seed", "-1"], ["--seed"]),
    (["--checks", ""], ["--checks"]),
    (["--impl", "SYNTAX:factory"], ["--impl", "SyntaxError", "line 1"]),
    (["--impl", "RAISES:factory"], ["--impl", "factory() raised", "RuntimeError: no GPU"]),
    (["--impl", "DIR:factory"], ["--impl"]),
    (["--impl", ""], ["--impl"]),
    (["--known-deviations", "DIR"], ["--known-deviations", "cannot read"]),
    (["--known-deviations", "MISSING"], ["--known-deviations", "cannot read"]),
    (["--known-deviations", "FILE"], ["--known-deviations", "not JSON"]),
])
def test_verify_bad_flags_give_one_line(cases, capsys, tmp_path, argv, words):
    """refvae verify with empty selections, directories for files, broken adapters: one line naming the flag, exit 2."""
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "syntax.py").write_text("def factory(:\n")
    (tmp_path / "raises.py").write_text("def factory():\n    raise RuntimeError('no GPU')\n")
    subst = {"DIR": str(tmp_path), "FILE": str(tmp_path / "file.txt"), "SYNTAX": str(tmp_path / "syntax.py"),
             "RAISES": str(tmp_path / "raises.py"), "MISSING": str(tmp_path / "missing.json")}
    argv = [next((a.replace(k, v) for k, v in subst.items() if a.startswith(k)), a) for a in argv]
    base = {"--impl": IMPL, "--cases": str(cases), "--checks": "golden"}
    for k in list(base):
        if k in argv:
            base.pop(k)
    rc = main(["verify", *[x for kv in base.items() for x in kv], *argv, "--quiet"])
    one_line_error(capsys, rc, *words)


@pytest.mark.hostile("flag", "named error")
@pytest.mark.parametrize("argv,words", [
    (["--out", "FILE"], ["--out", "exists and is not a directory"]),
    (["--out", ""], ["--out", "empty path"]),
    (["--compare", "MISSING"], ["--compare", "no such directory"]),
    (["--compare", "FILE"], ["--compare", "exists and is not a directory"]),
    (["--compare", "DIR"], ["--compare", "holds no case 'standard-bernoulli'"]),
    (["--compare", ""], ["--compare", "empty path"]),
    (["--seed", "-3", "--out", "DIR"], ["--seed"]),
    (["--prior", ",", "--out", "DIR"], ["--prior"]),
])
def test_golden_bad_flags_give_one_line(capsys, tmp_path, argv, words):
    """refvae golden with files for directories, missing or empty directories: one line naming the flag, exit 2."""
    (tmp_path / "file.txt").write_text("x")
    subst = {"DIR": str(tmp_path), "FILE": str(tmp_path / "file.txt"), "MISSING": str(tmp_path / "missing")}
    argv = [subst.get(a, a) for a in argv]
    rc = main(["golden", "--prior", "standard", "--likelihood", "bernoulli", *argv, "--quiet"])
    one_line_error(capsys, rc, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def _api_cases():
    from refvae.tools import verify as v
    A = v.RefvaeAdapter()

    def case():
        return golden.load_case(CASE)
    return [
        ("run(cases=[])", lambda: v.run(A, cases=[], checks=("golden",)), ValueError, "cases must not be empty"),
        ("run(checks=())", lambda: v.run(A, cases=[CASE], checks=()), ValueError, "checks must name"),
        ("run(seed=nan)", lambda: v.run(A, cases=[CASE], checks=("golden",), seed=float("nan")),
         TypeError, "seed"),
        ("run(adapter=None)", lambda: v.run(None, cases=[CASE], checks=("golden",)), ValueError, "adapter"),
        ("run(checksums='yes')", lambda: v.run(A, cases=[CASE], checksums="yes"), TypeError, "checksums"),
        ("check_gradient(profile=None)", lambda: v.check_gradient(A, case(), profile=None), ValueError,
         "profile"),
        ("check_nll(case=None)", lambda: v.check_nll(A, None), TypeError, "case must be"),
        ("check_sampler(n=10**15)", lambda: v.check_sampler(A, case(), n=10 ** 15), ValueError, "n = "),
        ("check_mixture(n_points=0)", lambda: v.check_mixture(A, golden.load_case("mog-gaussian"),
                                                              n_points=0), ValueError, "n_points"),
        ("compare_case(outputs='abc')", lambda: v.compare_case("abc", case()), TypeError, "outputs"),
        ("load_known_deviations(None)", lambda: v.load_known_deviations(None), TypeError, "path"),
        ("compare_cases(c_regen=nan)", lambda: golden.compare_cases(case(), case(), c_regen=float("nan")),
         ValueError, "c_regen"),
        ("compare_cases(new=None)", lambda: golden.compare_cases(None, case()), TypeError, "new"),
        ("allowed_error(c=inf)", lambda: golden.allowed_error(1.0, 1.0, c=float("inf")), ValueError, "c must"),
        ("allowed_error(values=nan)", lambda: golden.allowed_error(float("nan"), 1.0), ValueError, "values"),
        ("allowed_error(scales=-1)", lambda: golden.allowed_error(1.0, -1.0), ValueError, "scales"),
        ("write_cases(priors=())", lambda: golden.write_cases("unused", priors=()), ValueError, "priors"),
        ("build_case(seed=-1)", lambda: golden.build_case("standard", "bernoulli", seed=-1), ValueError, "seed"),
        ("case_name(prior=None)", lambda: golden.case_name(None, "gaussian"), ValueError, "prior"),
        ("reference_model(config=[1])", lambda: golden.reference_model([1], {}), TypeError, "config"),
        ("require_checksums(cases='x')", lambda: golden.require_checksums(None, "standard-gaussian"),
         TypeError, "cases"),
        ("require_checksums(cases=['bogus'])", lambda: golden.require_checksums(None, ["bogus"]),
         ValueError, "no case 'bogus'"),
        ("load_case(None)", lambda: golden.load_case(None), TypeError, "path_or_name"),
        ("holes(taus='0.1')", lambda: dist.holes(None, None, np.random.default_rng(0), 10, taus="0.1"),
         TypeError, "model"),
        ("combine_tree(None)", lambda: dist.combine_tree(None), TypeError, "partials"),
        ("load_array(None)", lambda: dist.load_array(None), TypeError, "path"),
    ]


@pytest.mark.hostile("option", "named error")
@pytest.mark.parametrize("what,call,exc,match", _api_cases(), ids=[c[0] for c in _api_cases()])
def test_verify_golden_and_distributed_functions_name_bad_arguments(what, call, exc, match):
    """Bad seeds, profiles, cases, checks, tolerances and paths of the library functions: a named error."""
    with pytest.raises(exc, match=re.escape(match)):
        call()


@pytest.mark.hostile("option", "named error")
def test_verify_gradient_check_that_checked_nothing_fails(monkeypatch):
    """verify's gradient check whose finite-difference report has no entries: 'fail' with the
    reason, never 'pass' (a check that checked nothing must not pass)."""
    from refvae import gradcheck
    from refvae.tools import verify
    from refvae.gradcheck import GradcheckReport
    monkeypatch.setattr(gradcheck, "check_vjp", lambda *a, **k: GradcheckReport(
        "central", 1e-6, [], reason="every input is empty"))
    case = golden.load_case("standard-bernoulli")
    res = verify.check_gradient(verify.RefvaeAdapter(), case)
    assert res.status == "fail" and "nothing was checked (every input is empty)" in res.summary
