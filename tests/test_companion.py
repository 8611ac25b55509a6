"""refvae.tools.companion: the settings table's records and apply(profile)."""

import dataclasses

import numpy as np
import pytest

from refvae.priors.flow import FlowPrior
from refvae.priors.mixtures import GTMPrior, GTMVampPrior, VampPrior
from refvae.tools import companion
from refvae.tools.profiles import PROFILES, build_model

#: the Profile fields apply() sets, with refvae's defaults
_NEW = {"gtm_activation": None, "vamp_learn_weights": False, "pseudo_input_range": None,
        "flow_init": "identity", "val_noise": "fixed"}


def profile(name="tiny"):
    p = PROFILES[name]
    assert {k: getattr(p, k) for k in _NEW} == _NEW, "a built-in profile must keep refvae's defaults"
    return p


def test_settings_records_are_complete_and_unique():
    assert len(companion.SETTINGS) >= 15
    names = [s.name for s in companion.SETTINGS]
    assert len(set(names)) == len(names)
    for s in companion.SETTINGS:
        assert isinstance(s, companion.Setting)
        assert all(isinstance(v, str) and v.strip() for v in (s.name, s.refvae, s.companion, s.why))
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.name = "x"
    # the settings the issue names are all there
    for needed in ("VampPrior weights", "VampPrior pseudo-inputs", "GTM prior", "GTM-VampPrior",
                   "early stopping", "validation noise", "MoG prior", "flow prior initialisation",
                   "optimiser", "minibatches", "epoch cap"):
        assert needed in names, needed


def test_apply_adopts_exactly_the_rows_marked_applied():
    base = profile("quick")
    comp = companion.apply(base)
    assert comp.name == "quick+companion" and comp.description.startswith(base.description)
    assert (comp.gtm_activation, comp.vamp_learn_weights, comp.pseudo_input_range, comp.flow_init,
            comp.val_noise) == ("tanh", True, (0.0, 17.0), "random", "redraw")
    assert comp.patience == base.patience + 1
    changed = {f.name for f in dataclasses.fields(base) if getattr(base, f.name) != getattr(comp, f.name)}
    assert changed == {"name", "description", "patience", *_NEW}
    applied = {s.name for s in companion.SETTINGS if s.applied}
    assert applied == {"flow prior initialisation", "VampPrior weights", "VampPrior pseudo-inputs",
                       "GTM prior", "GTM-VampPrior", "early stopping", "validation noise"}
    assert companion.apply(comp) is comp


def test_applied_profile_builds_the_companion_priors():
    """Through each prior's settings(profile): learned VampPrior weights on (0, 17), tanh GTM nets,
    sigmoid scaled to 17, random flow initialisation; the refvae profile keeps the defaults."""
    base, comp = profile("tiny"), companion.apply(profile("tiny"))
    rng = np.random.default_rng(0)
    vamp = build_model("vamp", 2, 64, comp, rng).prior
    assert vamp.learn_weights and vamp.data_range == (0.0, 17.0) and "prior.logits" in vamp.param_shapes
    assert not build_model("vamp", 2, 64, base, rng).prior.learn_weights
    assert GTMPrior.settings(comp)["activation"] == "tanh" == build_model("gtm", 2, 64, comp, rng).prior.activation
    assert build_model("gtm", 2, 64, base, rng).prior.activation == base.activation
    gv = build_model("gtm_vamp", 2, 64, comp, rng).prior
    assert gv.activation == "tanh" and gv.data_range == (0.0, 17.0)
    assert GTMVampPrior.settings(base)["data_range"] == (0.0, 16.0)
    assert build_model("flow", 2, 64, comp, rng).prior.init == "random"
    assert build_model("flow", 2, 64, base, rng).prior.init == "identity"
    assert VampPrior.settings(base) == {"num_components": base.num_components}
    assert "init" not in FlowPrior.settings(base)


def test_apply_checks_its_argument():
    with pytest.raises(TypeError, match="profile"):
        companion.apply("quick")
    with pytest.raises(ValueError, match="lr"):
        companion.apply(dataclasses.replace(profile("tiny"), lr=-1.0))


def test_apply_names_a_missing_field(monkeypatch):
    """A profile class without a field apply() sets: a TypeError naming the field (a field name
    that no Profile has stands in for the five, so the test runs whichever fields Profile has)."""
    monkeypatch.setitem(companion._APPLIED_FIELDS, "no_such_field", 1)
    with pytest.raises(TypeError, match="has no field 'no_such_field'"):
        companion.apply(profile("tiny"))
