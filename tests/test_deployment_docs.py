"""docs/deployment.md: the recipes run as written where this machine can run them.

- local cluster: the bash block is run as it stands (``dask scheduler`` and ``dask worker``
  processes, ``refvae stats --write-components`` then ``--components ... --scheduler``), with
  SHARED, MODEL and PORT set to a temporary directory, a small saved model and a free port; its
  statistics must be the same bits as the same command on this machine (one shard at this size:
  bit-identical by the module's promise);
- Slurm: the Python block up to ``cluster.scale`` is executed (dask-jobqueue makes the cluster
  object and a local scheduler; nothing is submitted) and the rendered ``#SBATCH`` job script must
  carry the resources, the shared environment's python, one thread per worker process and the umask;
- Kubernetes: nothing can run here; the block is only compiled (its syntax), which is all this
  test claims.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import refvae
from refvae.tools.cli import main

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "deployment.md")


def recipe(name):
    """The fenced block right after ``<!-- recipe: name -->`` in docs/deployment.md."""
    with open(DOC, encoding="utf-8") as fh:
        text = fh.read()
    m = re.search(r"<!-- recipe: " + re.escape(name) + r" -->\s*```\w*\n(.*?)```", text, re.S)
    assert m, f"docs/deployment.md has no recipe {name!r}"
    return m.group(1)


def _alive(pgid):
    """PIDs of the live processes in process group ``pgid``."""
    r = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_cluster_recipe_runs_and_matches_this_machine(tmp_path, capsys):
    pytest.importorskip("distributed", reason="the cluster path needs the 'scale' extra")
    shared = tmp_path / "shared"
    shared.mkdir()
    rng = np.random.default_rng(20261202)
    model = refvae.VAE(6, 3, (8,), "tanh", "gaussian", rng=rng)
    model.save(tmp_path / "model")
    np.save(shared / "x.npy", rng.normal(size=(1500, 6)))
    script = tmp_path / "recipe.sh"
    script.write_text("set -euo pipefail\n" + recipe("local-cluster"))
    env = dict(os.environ, SHARED=str(shared), MODEL=str(tmp_path / "model"), PORT=str(_free_port()),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    p = subprocess.Popen(["bash", str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=300)
        # the processes the recipe started end with it (its trap stops them; they take a moment)
        deadline = time.monotonic() + 30
        while _alive(p.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _alive(p.pid)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # anything of the recipe's still there
        except ProcessLookupError:
            pass
        p.wait()
    assert not left, f"the recipe left processes running: {left}"
    logs = {f: (shared / f).read_text()[-2000:] for f in ("scheduler.log", "workers.log")
            if (shared / f).exists()}
    assert p.returncode == 0, (out, logs)
    cluster = json.loads((shared / "stats.json").read_text())
    assert sorted(os.listdir(shared / "comps")) == ["components.json", "log_vars.npy", "means.npy"]
    rc = main(["stats", "--model", str(tmp_path / "model"), "--components", str(shared / "comps"),
               "--queries", "2000", "--holes", "1000", "--quiet", "--out", str(tmp_path / "here.json")])
    assert rc == 0, capsys.readouterr()
    here = json.loads((tmp_path / "here.json").read_text())
    assert cluster["scheduler"] and not here["scheduler"]
    assert "entropy_qz" in here["stats"] and "reverse_kl" in here["holes"]
    assert cluster["holes"] == here["holes"]
    # the two exact means over all N (E_x H[q(z|x)] in conditional_entropy, E_x KL in avg_kl) are
    # the correctly rounded sum on the cluster and np.mean here: within (d + 4) u mean|h| (module
    # docstring of refvae.tools.distributed, d = 24 + ceil(log2(N / 128)) = 28 at N = 1500);
    # every other number is the same bits (one shard)
    lv = np.load(shared / "comps" / "log_vars.npy")
    mean_abs = {"conditional_entropy": float(np.mean(np.abs(refvae.gaussian.entropy(lv)))),
                "avg_kl": abs(here["stats"]["avg_kl"]["value"])}  # KL >= 0 per row: mean|h| = mean h
    u = 2.0 ** -53
    for k in here["stats"]:
        a, b = cluster["stats"][k], here["stats"][k]
        if k in mean_abs:
            assert abs(a["value"] - b["value"]) <= (28 + 4) * u * mean_abs[k], (k, a, b)
            assert {**a, "value": 0} == {**b, "value": 0}, (k, a, b)
        else:
            assert a == b, (k, a, b)


def test_slurm_recipe_renders_the_job_script():
    pytest.importorskip("dask_jobqueue", reason="the Slurm recipe needs dask-jobqueue")
    code = recipe("slurm")
    head = code[:code.index("cluster.scale(")]
    ns = {}
    exec(compile(head, "docs/deployment.md (slurm)", "exec"), ns)  # noqa: S102 - our own doc
    cluster = ns["cluster"]
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for want in ("#SBATCH -p normal", "#SBATCH -A myproject", "#SBATCH -t 02:00:00",
                 "#SBATCH --cpus-per-task=16", "umask 0022", "export OMP_NUM_THREADS=1",
                 "/shared/venv/bin/python -m distributed.cli.dask_worker", "--nthreads 1",
                 "--nworkers 16"):
        assert want in script, (want, script)
    assert re.search(r"#SBATCH --mem=1[45]G", script), script


def test_kubernetes_recipe_compiles():
    """Only the syntax: no Kubernetes here (docs/deployment.md says the recipe is untested)."""
    compile(recipe("kubernetes"), "docs/deployment.md (kubernetes)", "exec")
