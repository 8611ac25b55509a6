"""The numbers behind the figures (refvae.tools.report.figures and .snapshots).

- hole_regions: the mass printed for a shaded region is the prior mass of exactly that region
  (checked against the closed form for Gaussians), and the figure's legend prints that number;
- Snapshots: the grids of p(z) and q(z) integrate to ~1 over a box that holds them, training is
  bit-identical with the callback, and the states are the requested epochs plus the best one;
- ellipse radii are k exp(log_var / 2);
- hole_decodes: JSON-able, its hole fraction is the hole mass of estimators.hole_metrics on the
  same prior draws, and it works without matplotlib;
- plot_run writes the PNG and stores the hole decodes and the snapshot summary in the run.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from refvae import estimators as est
from refvae.priors.mixtures import AggregatedPosterior
from refvae.tools.profiles import PROFILES, build_model, load_data
from refvae.tools.report import figures
from refvae.tools.report.snapshots import Snapshots
from refvae.train import fit

TINY = PROFILES["tiny"]


def _grid(n=301, half=6.0):
    z = np.linspace(-half, half, n)
    Z1, Z2 = np.meshgrid(z, z)
    return Z1, Z2, (z[1] - z[0]) ** 2


def test_hole_region_mass_is_the_prior_mass_of_the_shaded_region():
    """p = N(0, I), q = N(0, s^2 I): ln q/p = -2 ln s - r^2 (1/s^2 - 1) / 2, so q/p < tau is
    r^2 > a(tau); with the HPD cut ln p >= h (r^2 <= b) the shaded mass is exp(-a/2) - exp(-b/2)
    (the chi-square tail with 2 degrees of freedom). Grid 301 x 301 on [-6, 6]^2: Riemann error of
    a smooth density ~1e-4 plus the jagged mask boundary (~ cell x perimeter x density ~2e-3)."""
    Z1, Z2, cell = _grid()
    r2 = Z1 ** 2 + Z2 ** 2
    s = 0.6
    log_p = -math.log(2 * math.pi) - r2 / 2
    log_q = -math.log(2 * math.pi * s * s) - r2 / (2 * s * s)
    b = 4.0 ** 2
    hpd = -math.log(2 * math.pi) - b / 2
    regions = figures.hole_regions(log_p, log_q - log_p, cell, (0.1, 0.01), hpd)
    for tau, (mask, mass) in regions.items():
        a = (math.log(tau) + 2 * math.log(s)) / -(1 / s ** 2 - 1) * 2
        exact = math.exp(-a / 2) - math.exp(-b / 2)
        assert mass == pytest.approx(exact, abs=3e-3), (tau, mass, exact)
        assert mass == float(np.sum(np.exp(log_p[mask])) * cell)       # from the returned mask
        assert not mask[r2 > b + 0.1].any() and mask[(r2 > a + 0.1) & (r2 < b - 0.1)].all()
    # without the HPD cut the region is the whole tail r^2 > a
    (mask, mass), = figures.hole_regions(log_p, log_q - log_p, cell, (0.1,)).values()
    a = (math.log(0.1) + 2 * math.log(s)) / -(1 / s ** 2 - 1) * 2
    assert mass == pytest.approx(math.exp(-a / 2), abs=3e-3)


def test_hole_regions_checks_its_arguments():
    with pytest.raises(ValueError, match="log_p"):
        figures.hole_regions(np.zeros((3, 3)), np.zeros((3, 4)), 0.1, (0.1,))
    with pytest.raises(ValueError, match="cell"):
        figures.hole_regions(np.zeros((3, 3)), np.zeros((3, 3)), 0.0, (0.1,))
    with pytest.raises(ValueError, match="taus"):
        figures.hole_regions(np.zeros((3, 3)), np.zeros((3, 3)), 0.1, (-1.0,))


def test_ellipse_radii_are_k_standard_deviations():
    lv = np.log(np.array([[4.0, 0.25], [1.0, 9.0]]))
    np.testing.assert_allclose(figures.ellipse_radii(lv), [[4.0, 1.0], [2.0, 6.0]], rtol=1e-15)
    np.testing.assert_allclose(figures.ellipse_radii(lv, k=1.0), [[2.0, 0.5], [1.0, 3.0]], rtol=1e-15)


@pytest.fixture(scope="module")
def trained():
    """A tiny mog model (L = 2) trained 6 epochs with Snapshots, and the same run without them."""
    data, _ = load_data(TINY, 0)

    def run(callback):
        model = build_model("mog", 2, data["train"].shape[1], TINY, np.random.default_rng(0))
        res = fit(model, data["train"], data["val"], rng=np.random.default_rng(1), max_epochs=6,
                  patience=2, batch_size=32, quiet=True, callback=callback)
        return model, res
    snaps = Snapshots(data["train"], epochs=(1, 3, 100), grid_n=161, box=((-9, 9), (-9, 9)))
    model, res = run(snaps)
    plain, plain_res = run(None)
    return data, model, res, snaps, plain, plain_res


def test_snapshots_leave_training_bit_identical(trained):
    _, model, res, _, plain, plain_res = trained
    assert res.val_loss == plain_res.val_loss and res.train_loss == plain_res.train_loss
    assert all(np.array_equal(model.params[k], plain.params[k]) for k in model.params)


def test_snapshot_grids_integrate_to_one_over_the_box(trained):
    """Both densities on a 161 x 161 grid over [-9, 9]^2, which holds them (tiny model: latents
    within a few units): the Riemann sums are 1 within 2e-3 (grid error of smooth densities whose
    narrowest component is >= 0.3 wide, cell 0.11; a missing -ln 2 pi / 2 would give 2.5)."""
    data, model, res, snaps, _, _ = trained
    snaps.finalize(model, res)
    assert snaps.records, "no states recorded"
    for r in snaps.records:
        assert r["mass_p"] == pytest.approx(1.0, abs=2e-3), r["label"]
        assert r["mass_q"] == pytest.approx(1.0, abs=2e-3), r["label"]
        assert r["log_p"].shape == r["log_q"].shape == (161, 161)
    epochs = [r["epoch"] for r in snaps.records]
    assert epochs == sorted(epochs) and 1 in epochs and 3 in epochs and 100 not in epochs
    assert res.best_epoch in epochs and res.epochs_run in epochs
    best = [r for r in snaps.records if r["epoch"] == res.best_epoch][-1]
    # the best state is the trained model: its prior grid is the model's own density there
    pts = np.column_stack([g.ravel() for g in np.meshgrid(snaps.z1, snaps.z2)])
    np.testing.assert_array_equal(best["log_p"].ravel(), model.prior.forward(model.params, pts)[0])
    agg = AggregatedPosterior.from_model(model, data["train"])
    np.testing.assert_allclose(best["log_q"].ravel(), agg.log_prob(pts), rtol=0, atol=1e-12)
    json.dumps(snaps.summary())


def test_snapshots_keep_nothing_for_other_latent_dims_and_check_arguments():
    class M:
        latent_dim, params = 3, {"w": np.zeros(2)}
    s = Snapshots(np.zeros((4, 2)), epochs=(1,))
    s(1, M())
    assert s.finalize(M()).records == []
    with pytest.raises(ValueError, match="epochs"):
        Snapshots(np.zeros((4, 2)), epochs=(0,))
    with pytest.raises(TypeError, match="epochs"):
        Snapshots(np.zeros((4, 2)), epochs="1")
    with pytest.raises(ValueError, match="box"):
        Snapshots(np.zeros((4, 2)), box=((1, 0), (0, 1)))
    with pytest.raises(ValueError, match="grid_n"):
        Snapshots(np.zeros((4, 2)), grid_n=1)


def test_hole_decodes_numbers(trained):
    """JSON-able; the hole group's fraction is the hole mass of estimators.hole_metrics on the same
    prior draws (same generator state, same number of draws); groups are disjoint by construction
    (q/p < tau < 1 <= q/p) and the shown latents are the group's first draws."""
    data, model, _, _, _, _ = trained
    agg = AggregatedPosterior.from_model(model, data["train"])
    hd = figures.hole_decodes(model, agg, np.random.default_rng(5), n=8, tau=0.5, x_ref=data["train"],
                              x_data=data["train"][:5], n_importance=4, n_draws=3000)
    json.dumps(hd)
    # the yardstick: real images; training images are their own nearest neighbours (distance 0)
    assert hd["data"]["n"] == 5 and hd["data"]["nn_rms"]["value"] == 0.0
    assert np.isfinite(hd["data"]["log_px"]["value"])
    h = est.hole_metrics(model, data["train"], np.random.default_rng(5), n_samples=3000, taus=(0.5,),
                         aggregated=agg)
    assert hd["groups"]["hole"]["fraction"]["value"] == h["hole_mass"][0.5].value
    assert hd["groups"]["hole"]["fraction"]["se"] == pytest.approx(h["hole_mass"][0.5].se, rel=1e-12)
    for g, e in hd["groups"].items():
        z = np.asarray(e["z_shown"])
        if len(z):
            lr = agg.log_prob(z) - model.prior.forward(model.params, z)[0]
            assert (lr < math.log(0.5)).all() if g == "hole" else (lr >= 0).all()
        if e["n"] >= 2:
            assert e["log_px"]["n"] == e["n"] and e["nn_rms"]["value"] >= 0
    with pytest.raises(ValueError, match="tau"):
        figures.hole_decodes(model, agg, np.random.default_rng(0), tau=1.5)
    with pytest.raises(TypeError, match="aggregated"):
        figures.hole_decodes(model, None, np.random.default_rng(0))


def test_hole_decodes_without_matplotlib():
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "import numpy as np\n"
            "from refvae.tools.profiles import PROFILES, build_model, load_data\n"
            "from refvae.priors.mixtures import AggregatedPosterior\n"
            "from refvae.tools.report.figures import hole_decodes\n"
            "d, _ = load_data(PROFILES['tiny'], 0)\n"
            "m = build_model('standard', 2, 64, PROFILES['tiny'], np.random.default_rng(0))\n"
            "a = AggregatedPosterior.from_model(m, d['train'])\n"
            "r = hole_decodes(m, a, np.random.default_rng(1), n=4, n_importance=2, n_draws=500)\n"
            "print(sorted(r['groups']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "['covered', 'hole']" in out.stdout


def test_plot_run_writes_the_figure_and_its_numbers(trained, tmp_path):
    pytest.importorskip("matplotlib", reason="figures need the optional 'plot' extra")
    data, model, res, snaps, _, _ = trained
    agg = AggregatedPosterior.from_model(model, data["train"])
    h = est.hole_metrics(model, data["train"], np.random.default_rng(2), n_samples=400,
                         taus=TINY.taus, aggregated=agg)
    run = {"prior": "mog", "training": {"train_loss": res.train_loss, "val_loss": res.val_loss,
                                        "best_epoch": res.best_epoch},
           "holes": {"hole_mass": {str(t): {"value": e.value, "se": e.se}
                                   for t, e in h["hole_mass"].items()}}}
    name = figures.plot_run(str(tmp_path / "mog_L2.png"), run, model, data, agg, TINY,
                            np.random.default_rng(3), snapshots=snaps)
    assert name == "mog_L2.png" and (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(run["hole_decodes"]["groups"]) == {"hole", "covered"} and "data" in run["hole_decodes"]
    assert [s["epoch"] for s in run["snapshots"]["states"]] == [r["epoch"] for r in snaps.records]
    json.dumps(run)


def test_holes_legend_prints_the_mass_of_the_shaded_mask(monkeypatch):
    """The legend of the Fig. 4.8 panel prints, for each tau, the mass hole_regions computes from
    the mask that is shaded (not the Monte Carlo estimate of another region): p = N(0, I),
    q = N(0, 0.36 I) on a grid, a stub model whose prior is N(0, I)."""
    pytest.importorskip("matplotlib", reason="figures need the optional 'plot' extra")
    from matplotlib.figure import Figure
    Z1, Z2, cell = _grid(121)
    r2 = Z1 ** 2 + Z2 ** 2
    log_p = -math.log(2 * math.pi) - r2 / 2
    log_q = -math.log(2 * math.pi * 0.36) - r2 / (2 * 0.36)
    g = {"Z1": Z1, "Z2": Z2, "log_p": log_p, "log_q": log_q, "log_ratio": log_q - log_p,
         "cell": cell, "lims": ((-6, 6), (-6, 6))}

    def log_n(z):
        return -math.log(2 * math.pi) - np.sum(z * z, 1) / 2

    class Prior:
        def sample(self, params, n, rng):
            return rng.standard_normal((n, 2))

        def forward(self, params, z):
            return log_n(z), None

    class Model:
        prior, params = Prior(), {}

    monkeypatch.setattr(est, "encode_all", lambda model, x: (np.zeros((3, 2)), np.zeros((3, 2))))
    ax = Figure().subplots()
    figures._holes_panel(ax, g, Model(), {"train": np.zeros((3, 64))},
                         {"holes": {"hole_mass": {"0.1": {"value": 0.5, "se": 0.01}}}},
                         TINY, np.random.default_rng(0))
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    replay = np.random.default_rng(0)
    replay.standard_normal((3, 2))                        # the encoder samples
    hpd = float(np.quantile(log_n(replay.standard_normal((5000, 2))), 0.001))
    for tau in TINY.taus:
        (_, mass), = figures.hole_regions(log_p, log_q - log_p, cell, (tau,), hpd).values()
        label = [t for t in texts if t.startswith(f"q(z)/p(z) < {tau:g}:")]
        assert label and f"shaded region {mass:.4f}" in label[0], (texts, mass)
    assert any("Monte Carlo, whole plane: 0.5000" in t for t in texts)


def test_plot_run_for_other_latent_dims_draws_the_hole_decodes(tmp_path):
    """L = 3: no density panels, but the decodes from holes and covered regions (and their
    numbers in the run), the curves and the samples; snapshots are ignored."""
    pytest.importorskip("matplotlib", reason="figures need the optional 'plot' extra")
    data, _ = load_data(TINY, 0)
    model = build_model("standard", 3, data["train"].shape[1], TINY, np.random.default_rng(0))
    snaps = Snapshots(data["train"], epochs=(1,))
    res = fit(model, data["train"], data["val"], rng=np.random.default_rng(1), max_epochs=2,
              quiet=True, callback=snaps)
    agg = AggregatedPosterior.from_model(model, data["train"])
    run = {"prior": "standard", "training": {"train_loss": res.train_loss, "val_loss": res.val_loss,
                                             "best_epoch": res.best_epoch}}
    name = figures.plot_run(str(tmp_path / "standard_L3.png"), run, model, data, agg, TINY,
                            np.random.default_rng(3), snapshots=snaps)
    assert (tmp_path / name).stat().st_size > 1000
    assert run["hole_decodes"]["tau"] == max(TINY.taus) and "snapshots" not in run
    assert snaps.records == []
