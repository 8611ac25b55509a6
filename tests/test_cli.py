"""The ``refvae`` command line and the validation report (``refvae.tools.cli``, ``refvae.tools.report``).

Everything runs in-process through ``refvae.tools.cli.main([...])`` (exit codes are return values).
The smoke tests use the ``tiny`` profile (synthetic digits-like data, 2 epochs, small networks;
seconds), with and without figures, and check the outputs rather than the numbers: the files
exist, every number in report.json is finite (null, with a note in ``missing``, for anything not
computed), the Markdown names every prior. Error paths: one line on stderr, exit code 2, no
traceback.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import refvae
from refvae.tools import profiles
from refvae.tools import report as rep
from refvae.tools.cli import main
from refvae.tools.report import runner, writing

PRIORS = ("standard", "mog", "vamp", "gtm", "gtm_vamp", "flow")


def walk_numbers(obj, path="$"):
    """Yield (path, value) for every number in a parsed JSON document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from walk_numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from walk_numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def load_strict_json(path):
    """Parse JSON, refusing the non-standard constants NaN, Infinity, -Infinity."""
    def refuse(name):
        raise AssertionError(f"{path} contains the non-JSON constant {name}")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh, parse_constant=refuse)


def assert_one_line_error(capsys, rc, *words):
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "Traceback" not in out
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# =========================================================================== help and parser

def test_help_lists_the_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("validate", "train", "gradcheck"):
        assert name in out


def test_subcommands_come_from_the_registry():
    from refvae.tools import cli_stats, cli_verify
    from refvae.tools.cli import COMMANDS, build_parser, subcommands
    commands = subcommands()
    assert list(commands) == ["validate", "train", "gradcheck", "stats", "golden", "verify"]
    assert build_parser().parse_args(["validate", "--profile", "tiny"]).func is commands["validate"].run
    # one mechanism: every subcommand module lists Subcommand records in COMMANDS
    assert [c.name for c in COMMANDS + cli_stats.COMMANDS + cli_verify.COMMANDS] == list(commands)
    assert build_parser().parse_args(["stats", "--model", "m", "--data", "d"]).func is cli_stats.run


def test_train_imports_no_report_module(tmp_path):
    """``refvae train`` takes its profile and model from refvae.tools.profiles: a (tiny) training
    run loads no module of refvae.tools.report."""
    code = ("import sys; from refvae.tools.cli import main; "
            f"rc = main(['train', '--prior', 'mog', '--latent-dim', '2', '--data', 'synthetic', "
            f"'--max-epochs', '1', '--quiet', '--out', {str(tmp_path / 'm')!r}]); "
            "print(rc, sorted(m for m in sys.modules if m.startswith('refvae.tools.report')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.split() == ["0", "[]"], out.stdout + out.stderr
    assert (tmp_path / "m" / "history.json").is_file()


def test_stored_quick_report_renders_to_the_committed_markdown():
    """render_markdown of the committed quick report's JSON gives its committed Markdown, byte for
    byte (the Markdown is one function per section; this pins the output)."""
    from refvae.tools.report.markdown import render_markdown
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "validation",
                        "report-quick")
    with open(os.path.join(root, "report.json"), encoding="utf-8") as fh:
        doc = json.load(fh)
    with open(os.path.join(root, "report.md"), encoding="utf-8", newline="") as fh:
        assert render_markdown(doc) == fh.read()


def test_tools_take_the_prior_names_from_the_registry():
    """No list of prior names in the tools: the CLI's choices, the report's default priors and the
    generators' prior index are the registry's."""
    from refvae.priors import PRIORS
    assert profiles.prior_names() == tuple(PRIORS)
    assert [profiles.prior_index(p) for p in PRIORS] == list(range(len(PRIORS)))
    assert profiles.parse_priors(",".join(reversed(PRIORS))) == tuple(reversed(PRIORS))
    tools = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "refvae", "tools")
    report = os.path.join(tools, "report")
    paths = [os.path.join(tools, f) for f in ("profiles.py", "cli.py", "cli_stats.py", "cli_verify.py")]
    paths += [os.path.join(report, f) for f in os.listdir(report) if f.endswith(".py")]
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        assert "PRIOR_ORDER" not in text and not re.search(r"prior\.name [!=]= ", text), path


_BARE_PRIOR = '''
import math, sys
import numpy as np
from refvae.priors import Prior, register_prior

@register_prior
class Shifted(Prior):
    """N(m, I) with a learned mean m: nothing of the tools' protocol beyond the base defaults."""
    name = "bare_shift"
    @property
    def param_shapes(self):
        return {"prior.m": (self.latent_dim,)}
    def init_params(self, rng):
        return {"prior.m": np.zeros(self.latent_dim)}
    def forward(self, params, z):
        d = z - params["prior.m"]
        lp = -0.5 * np.sum(d * d, axis=1) - 0.5 * self.latent_dim * math.log(2 * math.pi)
        return lp, {"d": d, "trace": [("prior.log_p", lp)]}
    def backward(self, g, cache):
        return -g[:, None] * cache["d"], {"prior.m": np.sum(g[:, None] * cache["d"], axis=0)}
    def sample(self, params, n, rng):
        return params["prior.m"] + rng.standard_normal((n, self.latent_dim))

from refvae.tools.cli import main
sys.exit(main(["validate", "--profile", "tiny", "--priors", "bare_shift", "--quiet",
               "--out", sys.argv[1]]))
'''


def test_a_prior_with_only_the_base_defaults_runs_every_report_path(tmp_path):
    """A prior registered from outside refvae with no settings, support box, mixture components
    or closed forms: the tiny report (every part, the figure included) runs and passes; in a
    subprocess, so the registry of this process is not changed."""
    pytest.importorskip("matplotlib")
    script = tmp_path / "bare.py"
    script.write_text(_BARE_PRIOR)
    out = tmp_path / "r"
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((out / "report.json").read_text())
    assert doc["status"] == "complete" and doc["summary"]["checks_failed"] == 0
    run, run1 = doc["runs"]  # the tiny profile's two seeds
    assert run["prior"] == "bare_shift" and run["status"] == "done" and run1["status"] == "done"
    assert (run["seed"], run1["seed"]) == (0, 1)
    assert run["figure"] == "figures/bare_shift_L2.png" and (out / run["figure"]).is_file()
    assert run["seeds"]["generator"].endswith(", 6, part])")  # index 6: after the six built-ins
    assert doc["missing"] == []


def test_profiles_are_data_with_the_shared_settings():
    for name in ("tiny", "quick", "full"):
        assert rep.PROFILES[name].name == name
    quick, full = rep.PROFILES["quick"], rep.PROFILES["full"]
    for p in (quick, full):
        assert p.hidden == (256, 256) and p.num_components == 16 and p.gtm_grid == 4
        assert p.gtm_range == (-10.0, 10.0) and p.flow_couplings == 3 and p.prior_hidden == (256, 256)
        assert (p.optimizer, p.lr, p.batch_size, p.patience) == ("adamax", 1e-3, 64, 20)
        assert (p.likelihood, p.num_vals, p.activation) == ("categorical", 17, "leaky_relu")
    assert quick.latent_dims == (2,) and full.latent_dims == (2, 16)
    # seeds: a verdict needs 5 (full); quick trains 3 and says it cannot rank
    assert (quick.seeds, full.seeds) == (3, 5)
    # S on every seed, a larger S on the first for the estimator's bias (blocks of S / 2)
    assert (full.n_importance, full.n_importance_ref) == (1000, 5000)
    assert (quick.n_importance, quick.n_importance_ref) == (200, 1000)


@pytest.mark.parametrize("field, value, words", [
    ("n_importance", 7, "even"), ("n_importance", 2, "even"),
    ("n_importance_ref", 150, "multiple"), ("n_importance_ref", 100, "multiple"),
    ("seeds", 0, "seeds"), ("workers", 0, "workers")])
def test_profile_sample_sizes_are_checked(field, value, words):
    """S must split into two blocks of S/2; the reference S a multiple of the block >= S."""
    import dataclasses
    bad = dataclasses.replace(profiles.PROFILES["quick"], **{field: value})
    with pytest.raises(ValueError, match=words):
        profiles._check_profile(bad)


# =========================================================================== smoke tests

@pytest.mark.parametrize("plots", [True, False], ids=["plots", "no-plots"])
def test_validate_tiny_writes_a_complete_finite_report(tmp_path, capsys, plots):
    if plots:
        pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    args = ["validate", "--profile", "tiny", "--out", str(out), "--seed", "3"]
    args += ["--quiet"] if plots else ["--no-plots"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    if not plots:  # the profile's settings are printed at the start
        assert "profile 'tiny'" in stdout and "max_epochs" in stdout and "n_importance" in stdout
    else:
        assert stdout == ""
    assert (out / "report.md").is_file() and (out / "report.json").is_file()
    doc = load_strict_json(out / "report.json")
    numbers = list(walk_numbers(doc))
    assert len(numbers) > 100
    bad = [(p, v) for p, v in numbers if not math.isfinite(v)]
    assert not bad, bad[:5]
    assert doc["status"] == "complete"
    seeds = rep.PROFILES["tiny"].seeds
    assert doc["summary"]["checks_failed"] == 0 and doc["summary"]["runs_done"] == seeds * len(PRIORS)
    assert doc["schema"] == "refvae-validation-report/2" and doc["seeds"] == [3, 4]
    prov = doc["provenance"]
    for key in ("refvae", "git_revision", "numpy", "numba", "scipy", "python", "platform",
                "cpu_model", "seed", "profile"):
        assert prov.get(key) is not None, key
    assert prov["seed"] == 3 and prov["profile"] == "tiny"
    assert "report_elbo_split" in doc["tolerances"] and "monte_carlo_k_sigma" in doc["tolerances"]
    assert doc["timing"]["total_seconds"] > 0
    md = (out / "report.md").read_text()
    for prior in PRIORS:
        assert f"`{prior}`" in md
    assert "NLL" not in md and "−ELBO" in md
    run = doc["runs"][0]
    assert run["identities"] and all(i["passed"] is not False for i in run["identities"])
    assert set(run["gradcheck"]["groups"]) == {"encoder", "decoder"}
    for i, run in enumerate(doc["runs"]):
        assert run["status"] == "done" and run["timing"]["train"] >= 0
        assert run["cpu_seconds"]["train"] >= 0 and run["cpu_seconds"]["loglik"] >= 0
        assert {"re", "omega", "neg_elbo"} <= set(run["test"])
        assert run["seed"] == 3 + i // len(PRIORS)
        assert len(run["log_likelihood"]["per_image"]["log_px"]) == doc["data"]["n_test"]
        assert ("gradcheck" in run) == (run["seed"] == 3)  # the first seed's models only
    assert "## What this report can conclude" in md and "cannot rank the priors" in md
    assert "## Time spent" in md and "CPU" in md
    assert len(doc["analysis"]["per_L"]["2"]["pairs"]) == len(PRIORS) * (len(PRIORS) - 1) // 2
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    if plots:
        assert figures == sorted(f"{p}_L2.png" for p in PRIORS)
        for p in PRIORS:
            assert f"](figures/{p}_L2.png)" in md
        assert doc["missing"] == []
    else:
        assert figures == []
        assert "figures skipped" in md
        # figures are drawn for the first seed only: only those are missing
        assert {m["path"] for m in doc["missing"]} == {f"runs[{i}].figure" for i in range(len(PRIORS))}


def test_interrupt_keeps_finished_priors_and_exits_130(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the second prior trains: the first prior's results stay, the report says
    what is missing, exit code 130."""
    real_train = runner._train

    def train(run, *a, **k):
        if run["prior"] == "mog":
            raise KeyboardInterrupt
        return real_train(run, *a, **k)

    monkeypatch.setattr(runner, "_train", train)
    out = tmp_path / "r"
    rc = main(["validate", "--profile", "tiny", "--out", str(out), "--priors", "standard,mog,flow",
               "--no-plots", "--quiet"])
    assert rc == 130
    assert "partial report" in capsys.readouterr().err
    doc = load_strict_json(out / "report.json")
    assert doc["status"] == "partial"
    assert [r["status"] for r in doc["runs"]] == ["done", "interrupted"] + ["pending"] * 4
    assert doc["runs"][0]["log_likelihood"]["mean"]["value"] is not None
    missing = {m["path"] for m in doc["missing"]}
    assert {"runs[1].training", "runs[2].training", "runs[2].log_likelihood"} <= missing
    md = (out / "report.md").read_text()
    assert "PARTIAL" in md and "runs[1].training" in md


# =========================================================================== other subcommands

def test_gradcheck_subcommand_passes_on_tiny_models(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    for prior in PRIORS:
        assert f"prior {prior}" in out
    assert "PASSED" in out and "FAILED" not in out


@pytest.mark.parametrize("likelihood,activation", [("bernoulli", "relu"), ("gaussian", "tanh")])
def test_gradcheck_subcommand_other_likelihoods(capsys, likelihood, activation):
    assert main(["gradcheck", "--prior", "vamp", "--likelihood", likelihood,
                 "--activation", activation]) == 0
    assert "PASSED" in capsys.readouterr().out


def test_train_subcommand_saves_a_loadable_model(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "m"
    assert main(["train", "--prior", "mog", "--latent-dim", "2", "--out", str(out),
                 "--max-epochs", "1", "--quiet"]) == 0
    history = load_strict_json(out / "history.json")
    assert history["epochs_run"] == 1 and len(history["val_loss"]) == 1
    model = refvae.VAE.load(out)
    assert model.prior.name == "mog" and model.latent_dim == 2 and model.hidden == (256, 256)


# =========================================================================== error paths

@pytest.mark.parametrize("args,words", [
    (["validate", "--priors", "standard,nonsense"], ["unknown prior", "nonsense"]),
    (["validate", "--max-epochs", "-3"], ["--max-epochs", "-3"]),
    (["validate", "--profile", "enormous"], ["--profile", "enormous"]),
    (["train", "--prior", "nonsense", "--latent-dim", "2", "--out", "x"], ["unknown prior"]),
    (["train", "--prior", "mog", "--latent-dim", "2", "--out", "x", "--max-epochs", "-1"],
     ["--max-epochs"]),
    (["gradcheck", "--prior", "nonsense"], ["unknown prior"]),
    (["gradcheck", "--activation", "swish"], ["activation"]),
    (["frobnicate"], ["frobnicate"]),
    ([], ["subcommand"]),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(capsys, main(args), *words)
    assert not (tmp_path / "x").exists()


def test_output_inside_a_regular_file_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    line = assert_one_line_error(capsys, main(["validate", "--profile", "tiny", "--out",
                                               str(blocker / "report")]), "cannot write")
    assert str(blocker) in line


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores directory permissions, so a read-only directory is writable")
def test_read_only_output_directory_is_refused(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert_one_line_error(capsys, main(["validate", "--profile", "tiny", "--out", str(ro)]),
                              "cannot write")
    finally:
        ro.chmod(0o700)


def test_unwritable_output_directory_is_refused_even_as_root(tmp_path, capsys, monkeypatch):
    """The read-only case through the same code path, for runs as root (which bypasses modes)."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(profiles.tempfile, "NamedTemporaryFile", refuse)
    line = assert_one_line_error(capsys, main(["validate", "--profile", "tiny", "--out",
                                               str(tmp_path / "out")]), "cannot write")
    assert "Permission denied" in line


def test_missing_scikit_learn_names_the_data_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    line = assert_one_line_error(capsys, main(["train", "--prior", "standard", "--latent-dim", "2",
                                               "--out", str(tmp_path / "m")]), "scikit-learn")
    assert "refvae[data]" in line


# =========================================================================== refvae stats --components

@pytest.fixture(scope="module")
def stats_files(tmp_path_factory):
    """A small saved MoG-prior model (D = 6, L = 2), N = 300 data points in x.npy, and their
    components written by ``refvae stats --write-components``."""
    d = tmp_path_factory.mktemp("stats")
    rng = np.random.default_rng(20261125)
    model = refvae.VAE(6, 2, (8,), "tanh", "gaussian", prior="mog", rng=rng,
                       prior_kwargs={"num_components": 3})
    model.save(d / "model")
    np.save(d / "x.npy", rng.normal(size=(300, 6)) * 2.0)
    assert main(["stats", "--model", str(d / "model"), "--data", str(d / "x.npy"),
                 "--write-components", str(d / "comps"), "--quiet"]) == 0
    return d


def _stats_json(d, source, out, *extra):
    assert main(["stats", "--model", str(d / "model"), *source, "--samples", "2", "--seed", "4",
                 "--holes", "50", "--out", str(out), "--quiet", *extra]) == 0
    return load_strict_json(out)


def test_write_components_equals_encode_all(stats_files):
    from refvae.estimators import encode_all
    d = stats_files
    mu, lv = encode_all(refvae.VAE.load(d / "model"), np.load(d / "x.npy"))
    assert sorted(p.name for p in (d / "comps").iterdir()) == ["components.json", "log_vars.npy",
                                                               "means.npy"]
    assert np.array_equal(np.load(d / "comps" / "means.npy"), mu)
    assert np.array_equal(np.load(d / "comps" / "log_vars.npy"), lv)


@pytest.mark.parametrize("queries", [None, 100], ids=["all-draws", "queries"])
def test_stats_from_components_equal_stats_from_data(stats_files, tmp_path, queries):
    """On this machine ``--components`` (directory or .npz) gives the statistics and holes of
    ``--data`` to the bit; the JSON records which input was used."""
    d = stats_files
    extra = [] if queries is None else ["--queries", str(queries)]
    a = _stats_json(d, ["--data", str(d / "x.npy")], tmp_path / "a.json", *extra)
    b = _stats_json(d, ["--components", str(d / "comps")], tmp_path / "b.json", *extra)
    np.savez(tmp_path / "c.npz", means=np.load(d / "comps" / "means.npy"),
             log_vars=np.load(d / "comps" / "log_vars.npy"))
    c = _stats_json(d, ["--components", str(tmp_path / "c.npz")], tmp_path / "c.json", *extra)
    assert (a["data"], a["components"]) == (str(d / "x.npy"), None)
    assert (b["data"], b["components"]) == (None, str(d / "comps"))
    assert c["components"] == str(tmp_path / "c.npz")
    for other in (b, c):
        assert other["N"] == a["N"] == 300 and other["queries"] == queries
        assert other["stats"] == a["stats"] and other["holes"] == a["holes"]


def test_stats_from_components_on_a_cluster(stats_files, tmp_path, monkeypatch):
    """``--components DIR --queries M --scheduler`` (one shard): the same statistics as ``--data``
    on this machine; H[q(z|x)] is then the correctly rounded mean instead of ``np.mean``, within
    ``(d + 4) u mean|h|`` (refvae.tools.distributed, "Drawn rows and exact sums"), the rest to the bit.
    The client never reads the (N, L) components (``to_numpy`` and full reads raise)."""
    distributed = pytest.importorskip("distributed")
    from refvae.tools import distributed as dist
    d = stats_files
    a = _stats_json(d, ["--data", str(d / "x.npy")], tmp_path / "a.json", "--queries", "100")

    def refuse(self, *args, **kwargs):
        raise AssertionError("the client materialised the (N, L) components")
    monkeypatch.setattr(dist._Components, "to_numpy", refuse)
    monkeypatch.setattr(dist._FileArray, "full", refuse)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0", silence_logs=50) as cluster:
        b = _stats_json(d, ["--components", str(d / "comps")], tmp_path / "b.json", "--queries",
                        "100", "--scheduler", cluster.scheduler_address, "--chunk", "300")
    assert b["path"] == "dask" and b["components"] == str(d / "comps") and b["data"] is None
    sa, sb = dict(a["stats"]), dict(b["stats"])
    ha, hb = sa.pop("conditional_entropy"), sb.pop("conditional_entropy")
    assert sb == sa and b["holes"] == a["holes"]
    from refvae import gaussian
    mean_abs = float(np.mean(np.abs(gaussian.entropy(np.load(d / "comps" / "log_vars.npy")))))
    u, depth = 2.0 ** -53, 26  # d = 24 + ceil(log2(300 / 128))
    assert abs(hb["value"] - ha["value"]) <= (depth + 4) * u * mean_abs
    assert (hb["se"], hb["n"]) == (ha["se"], ha["n"]) == (0.0, 300)


@pytest.mark.parametrize("source,words", [
    ([], ["--data", "--components"]),
    (["--data", "x.npy", "--components", "comps"], ["--data", "--components", "both"]),
    (["--components", "nowhere"], ["--components", "nowhere", "does not exist"]),
    (["--components", "x.npy"], ["--components", "x.npy", "directory", ".npz"]),
    (["--components", "empty"], ["--components", "means.npy", "does not exist"]),
    (["--components", "comps", "--write-components", "w"], ["--write-components", "--components"]),
    (["--data", "x.npy", "--write-components", "w", "--queries", "5"], ["--write-components",
                                                                        "--queries"]),
])
def test_stats_input_errors_give_one_line_and_exit_2(stats_files, tmp_path, capsys, monkeypatch,
                                                     source, words):
    d = stats_files
    monkeypatch.chdir(d)
    (d / "empty").mkdir(exist_ok=True)
    out = tmp_path / "out.json"
    rc = main(["stats", "--model", str(d / "model"), *source, "--out", str(out)]
              if "--write-components" not in source else ["stats", "--model", str(d / "model"), *source])
    assert_one_line_error(capsys, rc, *words)
    assert not out.exists() and not (d / "w").exists()


# =========================================================================== report internals

def test_json_cleaning_turns_non_finite_numbers_into_null_with_a_note():
    missing = []
    out = writing._clean({"a": [1.0, float("nan")], "b": {"c": np.float64(-np.inf), "d": np.int64(3)}},
                     "", missing)
    assert out == {"a": [1.0, None], "b": {"c": None, "d": 3}}
    assert [m["path"] for m in missing] == ["a[1]", "b.c"]
    json.dumps(out, allow_nan=False)


def test_near_kink_sees_a_pre_activation_at_zero():
    model = refvae.VAE(4, 2, (3,), rng=np.random.default_rng(0))
    x = np.ones((1, 4))
    eps = np.zeros((1, 2))
    pre = model.forward(x, eps).trace[0][1]  # encoder.0.pre
    model.params["encoder.0.b"][0] -= pre[0, 0]  # move unit 0 onto its kink
    count, fixed, names = rep.near_kink(model, x, eps)
    assert count >= 1 and fixed == 0 and "encoder.0.pre" in names


def test_kernel_accuracy_within_the_documented_constant():
    pytest.importorskip("mpmath")
    ka = rep.kernel_accuracy(np.random.default_rng(0), 12)
    assert ka["available"] and ka["passed"] and ka["max_c"] <= ka["c_allowed"]
    assert ka["n_adversarial"] > 0 and ka["n_random"] >= 10
