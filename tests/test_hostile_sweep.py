"""The systematic hostile-input sweep (issue 13, section 3): every public callable, every subcommand.

Part 1 -- functions. ``TABLE`` has one entry per public callable of the package (everything in
``refvae.__all__`` and in the ``__all__`` of each public module, found by introspection when this
module is imported: a public callable without an entry is a collection error, so a new function
cannot escape the sweep). An entry says how to build valid arguments at tiny sizes and which
arguments are arrays, sizes, real scalars, options, paths or other objects; the sweep then
perturbs ONE argument at a time:

- arrays: an extra / a missing dimension, a mismatched length, a zero-length axis, NaN, +inf,
  -inf, complex, a string, None, a ragged list of lists, an object array;
- sizes (integers): below the minimum, negative, bool, float, NaN, inf, a string, None (and the
  valid value as a NumPy integer, which must be accepted);
- real scalars: NaN, +-inf, complex, bool, a string, None;
- options: an unknown string, None, an integer;
- paths: nonexistent, a directory where a file is expected, a file where a directory is expected;
- other objects (models, generators, parameter dicts, callables): None, a string;

plus hand-written ``custom`` cases per entry. The expected outcome is a ``ValueError`` or
``TypeError`` (``OSError`` for file cases) whose message names the perturbed argument; where the
perturbed value is legal (``legal`` in the entry: -inf log-weights, broadcasting shapes, complex
input of the complex-step code paths, ...) the call must return a result without NaN (outcome
"legal result").

Entries marked ``exempt`` (records, argparse plumbing, functions without arguments) state why.
Functions that would start expensive work when a bad value is accepted have ``guards``: the
expensive step is replaced by a sentinel that fails the case ("accepted: reached ...").

Part 2 -- the command line: every subcommand of ``refvae`` with bad flags and bad files, run
in-process through ``refvae.tools.cli.main`` (a few in a subprocess). Expected: exit code 2, ONE line
on stderr naming the flag, no traceback.

Failure messages start with one of: ``ACCEPTED`` (no error; ``result has NaN`` said when it
has), ``WRONG TYPE`` (another exception type), ``UNNAMED`` (the right type but the message does
not name the argument), ``NAN`` (a legal value gave NaN), ``RAISED`` (a legal value raised),
``HANG`` (the case ran past its time limit), ``BASELINE`` (the valid call of the entry failed: the
table or the package is wrong).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib
import inspect
import json
import math
import os
import pkgutil
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refvae

from strategies import bad_shapes

# =========================================================================== introspection

#: modules of internal kernels: their callers validate the arguments (the kernels take
#: contiguous float64 arrays of checked shapes and are documented as internal)
INTERNAL_MODULES = {"kernels.fastexp", "kernels.rowkernels"}
PUBLIC_MODULES = sorted(m.name.removeprefix("refvae.")
                        for m in pkgutil.walk_packages(refvae.__path__, "refvae.")
                        if not any(part.startswith("_") for part in m.name.split("."))
                        and m.name.removeprefix("refvae.") not in INTERNAL_MODULES)


def public_callables():
    """{'module.qualname': object} for every public callable (deduplicated by definition)."""
    out = {}
    mods = [refvae] + [importlib.import_module(f"refvae.{m}") for m in PUBLIC_MODULES]
    for mod in mods:
        names = getattr(mod, "__all__", None)
        if names is None:  # a module without __all__: what it defines without a leading _
            names = [n for n, v in vars(mod).items() if not n.startswith("_") and callable(v)
                     and getattr(v, "__module__", None) == mod.__name__]
        for n in names:
            obj = getattr(mod, n)
            if inspect.ismodule(obj) or not callable(obj):
                continue
            key = f"{obj.__module__.removeprefix('refvae.')}.{obj.__qualname__}"
            out.setdefault(key, obj)
    return out


# =========================================================================== the table

@dataclasses.dataclass
class Entry:
    """How to call one public callable with valid tiny arguments, and what its arguments are."""

    build: object = None            #: build(ctx) -> (callable, kwargs) with valid arguments
    arrays: dict = dataclasses.field(default_factory=dict)   #: name -> axis for "mismatch" (or None)
    ints: dict = dataclasses.field(default_factory=dict)     #: name -> minimum legal value
    reals: tuple = ()               #: finite real scalars
    options: tuple = ()             #: option strings
    paths: dict = dataclasses.field(default_factory=dict)    #: name -> "file" | "dir" | "outdir"
    bases: dict = dataclasses.field(default_factory=dict)    #: name -> valid array to perturb when
    #                                                           the valid call passes None
    str_paths: tuple = ()           #: array arguments that may also be a path (str is a file case)
    objects: tuple = ()             #: models, generators, dicts, callables
    shape_kinds: tuple = ("extra", "missing", "mismatch", "empty")
    legal: tuple = ()               #: (arg, kind) pairs where the perturbed value is legal
    custom: list = dataclasses.field(default_factory=list)   #: (arg, kind, value(ctx), cls, expect)
    label: dict = dataclasses.field(default_factory=dict)    #: arg -> regex that names it
    guards: tuple = ()              #: (module, attribute) replaced by a sentinel
    errors: tuple = (ValueError, TypeError)
    baseline: bool = True           #: call the valid arguments once first (False: no cheap valid call)
    exempt: str | None = None
    extra: bool = False             #: a method, not in any __all__ (no completeness check)


def ex(reason):
    return Entry(exempt=reason)


RECORD = "a plain record (dataclass/exception) built by refvae itself; holds results, checks nothing"
ARGPARSE = ("argparse plumbing: takes a parser or a Namespace built by refvae.tools.cli; swept through "
            "refvae.tools.cli.main in the CLI part of this module")
NOARGS = "takes no arguments"


class Ctx:
    """Shared, lazily built inputs (tiny models, a saved model, golden cases, scratch paths)."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="refvae-hostile-")
        self._cache = {}
        self.n = 0

    def fresh(self, name="d"):
        """A new, empty directory path (not created)."""
        self.n += 1
        return os.path.join(self.tmp, f"{name}{self.n}")

    def afile(self):
        p = os.path.join(self.tmp, "a-regular-file.txt")
        if not os.path.exists(p):
            with open(p, "w") as fh:
                fh.write("not what you wanted\n")
        return p

    def adir(self):
        p = os.path.join(self.tmp, "a-directory")
        os.makedirs(p, exist_ok=True)
        return p

    def missing(self):
        return os.path.join(self.tmp, "does-not-exist", "nothing-here")

    @staticmethod
    def rng(seed=0):
        return np.random.default_rng(seed)

    @staticmethod
    def model(prior="standard", likelihood="gaussian", L=2, D=4, **pk):
        kw = {"mog": {"num_components": 3}, "vamp": {"num_components": 3},
              "gtm": {"grid_size": 2, "hidden": (3,)}, "gtm_vamp": {"grid_size": 2, "hidden": (3,)},
              "flow": {"num_couplings": 1, "hidden": (3,)}}.get(prior, {})
        kw.update(pk)
        return refvae.VAE(D, L, (3,), "tanh", likelihood, 5, prior, rng=np.random.default_rng(1),
                          prior_kwargs=kw)

    @staticmethod
    def x(n=5, D=4, likelihood="gaussian", seed=2):
        r = np.random.default_rng(seed)
        if likelihood == "categorical":
            return r.integers(0, 5, size=(n, D)).astype(float)
        if likelihood == "bernoulli":
            return r.integers(0, 2, size=(n, D)).astype(float)
        return r.normal(size=(n, D))

    def saved_model(self):
        if "saved" not in self._cache:
            d = os.path.join(self.tmp, "saved-model")
            self.model("mog").save(d)
            self._cache["saved"] = d
        return self._cache["saved"]

    def npy(self):
        if "npy" not in self._cache:
            p = os.path.join(self.tmp, "x.npy")
            np.save(p, self.x(30))
            self._cache["npy"] = p
        return self._cache["npy"]

    def case(self, name="standard-gaussian"):
        from refvae.tools import golden
        key = ("case", name)
        if key not in self._cache:
            self._cache[key] = golden.load_case(name)
        return self._cache[key]

    def cases_copy(self):
        """A private copy of one committed case directory (with its SHA256SUMS line)."""
        if "cases" not in self._cache:
            from refvae.tools import golden
            d = os.path.join(self.tmp, "cases")
            shutil.copytree(os.path.join(golden.golden_dir(), "standard-gaussian"),
                            os.path.join(d, "standard-gaussian"))
            golden.write_checksums(d)
            self._cache["cases"] = d
        return self._cache["cases"]



CTX = Ctx()
atexit.register(shutil.rmtree, CTX.tmp, ignore_errors=True)


def _rows(B=3, L=2, seed=0):
    return np.random.default_rng(seed).normal(size=(B, L))


def _mix(B=3, K=4, L=2, seed=0):
    r = np.random.default_rng(seed)
    return dict(z=r.normal(size=(B, L)), means=r.normal(size=(K, L)),
                log_vars=r.normal(size=(K, L)) * 0.3, log_weights=r.normal(size=K))


# ----------------------------------------------------------------------------- builders

def b(fn, **kwargs):
    """A builder returning ``fn`` and a fresh copy of ``kwargs`` (callables in kwargs are called
    with the context: lazily built models, paths)."""
    def build(ctx):
        out = {}
        for k, v in kwargs.items():
            out[k] = v(ctx) if callable(v) and getattr(v, "_lazy", False) else v
        return fn, out
    return build


def lazy(f):
    f._lazy = True
    return f


M = lazy(lambda c: c.model())
MOG = lazy(lambda c: c.model("mog"))
X = lazy(lambda c: c.x())
R = lazy(lambda c: c.rng())
CASE = lazy(lambda c: c.case())
ADAPTER = lazy(lambda c: __import__("refvae.tools.verify", fromlist=["x"]).RefvaeAdapter())


def _method(getter, name):
    """A callable that calls ``getter(ctx).name(**kw)``: methods of freshly built objects."""
    def build_fn(ctx):
        obj = getter(ctx)
        return getattr(obj, name)
    return build_fn


def mb(getter, name, **kwargs):
    inner = b(None, **kwargs)

    def build(ctx):
        _, kw = inner(ctx)
        return _method(getter, name)(ctx), kw
    return build


# ------------------------------------------------------------------ the entries, module by module

from refvae import (data, estimators, gaussian, gradcheck, io, layers, likelihoods,  # noqa: E402
                    optim, primitives, priors, tolerances, train)
from refvae.kernels import mixture  # noqa: E402
from refvae.priors import flow as prior_flow, mixtures as prior_mixtures  # noqa: E402
from refvae.tools import distributed, golden, profiles, provenance, report, verify  # noqa: E402

TABLE: dict = {}

# --- gaussian: broadcasting arrays; every array ends in L
_G = dict(z=_rows(), mu=_rows(seed=1), log_var=_rows(seed=2) * 0.3)
_BC = ("extra", "scalar", "mismatch", "empty")
for _name, _args in {"log_prob": ("z", "mu", "log_var"), "entropy": ("log_var",),
                     "cross_entropy": ("mu_q", "log_var_q", "mu_p", "log_var_p"),
                     "kl": ("mu_q", "log_var_q", "mu_p", "log_var_p"),
                     "reparameterize": ("mu", "log_var", "eps")}.items():
    _kw = {a: _rows(seed=i) * (0.3 if "log_var" in a else 1.0) for i, a in enumerate(_args)}
    # a trailing unit axis or a single row broadcasts; only a different L is an error
    _legal = [(a, "extra") for a in _args if len(_args) == 1]
    _axis = None if len(_args) == 1 else -1   # one argument: any L is legal
    TABLE[f"gaussian.{_name}"] = Entry(b(getattr(gaussian, _name), **_kw),
                                       arrays={a: _axis for a in _args}, shape_kinds=_BC,
                                       legal=_legal + [(a, "complex") for a in _args])
    _out_shape = (3,) if _name in ("log_prob", "cross_entropy", "kl", "entropy") else (3, 2)
    TABLE[f"gaussian.{_name}_vjp"] = Entry(
        b(getattr(gaussian, f"{_name}_vjp"), g=np.ones(_out_shape), **_kw),
        arrays={"g": -1, **{a: _axis for a in _args}}, shape_kinds=_BC,
        # a scalar cotangent broadcasts to the output shape
        legal=[(a, "complex") for a in _args] + [("g", "complex"), ("g", "scalar")])

# --- primitives: +-inf legal, NaN not; any number of dimensions
_P = np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -2.0]])
_ELEM = ("empty",)
for _name in ("softplus", "log_sigmoid", "sigmoid"):
    TABLE[f"primitives.{_name}"] = Entry(b(getattr(primitives, _name), x=_P.copy()),
                                         arrays={"x": None}, shape_kinds=_ELEM,
                                         legal=[("x", "posinf"), ("x", "neginf"),
                                                ("x", "complex")])
for _name in ("softplus_vjp", "log_sigmoid_vjp"):
    TABLE[f"primitives.{_name}"] = Entry(b(getattr(primitives, _name), g=np.ones((2, 3)), x=_P.copy()),
                                         arrays={"g": 0, "x": 0}, shape_kinds=("mismatch", "empty"),
                                         legal=[("x", "posinf"), ("x", "neginf"), ("x", "complex"),
                                                ("g", "complex")])
for _name in ("logsumexp", "log_softmax"):
    TABLE[f"primitives.{_name}"] = Entry(
        b(getattr(primitives, _name), x=_P.copy(), axis=-1), arrays={"x": None},
        shape_kinds=("extra", "missing", "empty"),
        legal=[("x", "extra"), ("x", "missing"), ("x", "posinf"), ("x", "neginf"), ("x", "complex")],
        custom=[("axis", "out of range", lambda c: 2, "option", "error"),
                ("axis", "out of range", lambda c: -3, "option", "error"),
                ("axis", "str", lambda c: "rows", "type", "error"),
                ("axis", "float", lambda c: 1.0, "type", "error"),
                ("axis", "bool", lambda c: True, "type", "error")])
TABLE["primitives.logsumexp_vjp"] = Entry(
    b(primitives.logsumexp_vjp, g=np.ones(2), x=_P.copy(), axis=-1, ans=None),
    arrays={"g": 0, "x": 0, "ans": 0}, shape_kinds=("mismatch", "empty"),
    bases={"ans": primitives.logsumexp(_P)},
    legal=[("ans", "none"), ("ans", "posinf"), ("ans", "neginf"), ("ans", "complex"),
           ("x", "posinf"), ("x", "neginf"), ("x", "complex"), ("g", "complex")])
TABLE["primitives.log_softmax_vjp"] = Entry(
    b(primitives.log_softmax_vjp, g=np.ones((2, 3)), x=_P.copy(), axis=-1, ans=None),
    arrays={"g": 0, "x": 0, "ans": 0}, shape_kinds=("mismatch", "empty"),
    bases={"ans": primitives.log_softmax(_P)},
    legal=[("ans", "none"), ("ans", "posinf"), ("ans", "neginf"), ("ans", "complex"),
           ("x", "posinf"), ("x", "neginf"), ("x", "complex"), ("g", "complex")])

# --- mixture
_MIXA = {"z": -1, "means": 0, "log_vars": 0, "log_weights": 0}
_MIXL = [("log_weights", "neginf"), ("log_weights", "none")]
for _name in ("mixture_log_prob", "mixture_log_prob_numpy"):
    # the NumPy twin accepts complex input for complex-step checks (its docstring)
    _cl = [(a, "complex") for a in _MIXA] if _name.endswith("numpy") else []
    TABLE[f"kernels.mixture.{_name}"] = Entry(b(getattr(mixture, _name), **_mix()), arrays=_MIXA,
                                      legal=_MIXL + _cl)
TABLE["kernels.mixture.check_mixture_args"] = Entry(
    b(mixture.check_mixture_args, **_mix(), require_weights=False), arrays=_MIXA, legal=_MIXL,
    custom=[("require_weights", "str", lambda c: "yes", "type", "error")])
TABLE["kernels.mixture.mixture_partial"] = Entry(b(mixture.mixture_partial, **_mix()), arrays=_MIXA,
                                         legal=[("log_weights", "neginf")])
TABLE["kernels.mixture.mixture_log_prob_vjp"] = Entry(
    b(mixture.mixture_log_prob_vjp, g=np.ones(3), **_mix(), ans=None, z_only=False),
    arrays={"g": 0, **_MIXA, "ans": 0}, legal=_MIXL + [("ans", "none")],
    bases={"ans": mixture.mixture_log_prob(**_mix())},
    custom=[("z_only", "str", lambda c: "yes", "type", "error"),
            ("ans", "not the forward value", lambda c: np.full(3, 50.0), "option", "error")])
TABLE["kernels.mixture.mixture_log_prob_vjp_numpy"] = Entry(
    b(mixture.mixture_log_prob_vjp_numpy, g=np.ones(3), **_mix()),
    arrays={"g": 0, **_MIXA}, legal=_MIXL)
_PART = mixture.mixture_partial(**_mix())
TABLE["kernels.mixture.combine_partials"] = Entry(
    b(mixture.combine_partials, partials=[_PART, mixture.mixture_partial(**_mix(seed=0))]),
    objects=("partials",),
    custom=[("partials", "empty list", lambda c: [], "shape", "error"),
            ("partials", "mismatched pair", lambda c: [_PART, (np.zeros(4), np.ones(4))], "shape",
             "error"),
            ("partials", "NaN entry", lambda c: [_PART, (np.full(3, np.nan), np.ones(3))],
             "non-finite", "error"),
            ("partials", "not pairs", lambda c: [np.zeros(3)], "type", "error")])
TABLE["kernels.mixture.finalize_partials"] = Entry(
    b(mixture.finalize_partials, m=_PART[0], s=_PART[1]), arrays={"m": 0, "s": 0},
    legal=[("m", "neginf")],
    custom=[("s", "negative", lambda c: -np.ones(3), "option", "error")])

# --- likelihoods
_B, _D, _C = 3, 4, 5
_xc = np.random.default_rng(3).integers(0, _C, size=(_B, _D)).astype(float)
_xb = np.random.default_rng(3).integers(0, 2, size=(_B, _D)).astype(float)
_xg = _rows(_B, _D, 3)
TABLE["likelihoods.categorical_log_prob"] = Entry(
    b(likelihoods.categorical_log_prob, x=_xc, logits=_rows(_B, _D * _C, 4), num_vals=_C),
    arrays={"x": 0, "logits": 0}, ints={"num_vals": 1}, legal=[("logits", "complex")],
    custom=[("x", "out of range", lambda c: _xc + _C, "option", "error"),
            ("x", "not integer", lambda c: _xc + 0.5, "option", "error"),
            ("logits", "not D*C columns", lambda c: _rows(_B, _D * _C - 1, 4), "shape", "error")])
TABLE["likelihoods.categorical_log_prob_vjp"] = Entry(
    b(likelihoods.categorical_log_prob_vjp, g=np.ones(_B), x=_xc, logits=_rows(_B, _D * _C, 4),
      num_vals=_C),
    arrays={"g": 0, "x": 0, "logits": 0}, ints={"num_vals": 1},
    custom=[("x", "out of range", lambda c: _xc + _C, "option", "error")])
TABLE["likelihoods.bernoulli_log_prob"] = Entry(
    b(likelihoods.bernoulli_log_prob, x=_xb, logits=_rows(_B, _D, 4)),
    arrays={"x": 0, "logits": 0}, legal=[("logits", "complex")],
    custom=[("x", "out of [0, 1]", lambda c: _xb + 2.0, "option", "error")])
TABLE["likelihoods.bernoulli_log_prob_vjp"] = Entry(
    b(likelihoods.bernoulli_log_prob_vjp, g=np.ones(_B), x=_xb, logits=_rows(_B, _D, 4)),
    arrays={"g": 0, "x": 0, "logits": 0})
TABLE["likelihoods.gaussian_log_prob"] = Entry(
    b(likelihoods.gaussian_log_prob, x=_xg, mean=_rows(_B, _D, 4), log_var=np.zeros(_D)),
    arrays={"x": 0, "mean": 0, "log_var": 0}, legal=[("mean", "complex"), ("log_var", "complex")])
TABLE["likelihoods.gaussian_log_prob_vjp"] = Entry(
    b(likelihoods.gaussian_log_prob_vjp, g=np.ones(_B), x=_xg, mean=_rows(_B, _D, 4),
      log_var=np.zeros(_D)),
    arrays={"g": 0, "x": 0, "mean": 0, "log_var": 0})
TABLE["likelihoods.Likelihood"] = Entry(b(likelihoods.Likelihood, x_dim=_D), ints={"x_dim": 1})
TABLE["likelihoods.Bernoulli"] = Entry(b(likelihoods.Bernoulli, x_dim=_D), ints={"x_dim": 1})
TABLE["likelihoods.Categorical"] = Entry(b(likelihoods.Categorical, x_dim=_D, num_vals=_C),
                                         ints={"x_dim": 1, "num_vals": 2})
TABLE["likelihoods.Gaussian"] = Entry(
    b(likelihoods.Gaussian, x_dim=_D, log_var="learned"), ints={"x_dim": 1},
    custom=[("log_var", "unknown option", lambda c: "fixed", "option", "error"),
            ("log_var", "NaN", lambda c: math.nan, "non-finite", "error"),
            ("log_var", "inf", lambda c: math.inf, "non-finite", "error")])
TABLE["likelihoods.make_likelihood"] = Entry(
    b(likelihoods.make_likelihood, name="categorical", x_dim=_D, num_vals=_C), options=("name",),
    ints={"x_dim": 1, "num_vals": 2}, label={"name": r"name|likelihood"},
    custom=[("bogus", "unknown keyword", lambda c: 1, "option", "error")])
# registering a built-in class again is allowed and changes nothing: the valid baseline call
TABLE["likelihoods.register_likelihood"] = Entry(
    b(likelihoods.register_likelihood, cls=likelihoods.Bernoulli), baseline=False,
    custom=[("cls", "None", lambda c: None, "type", "error"),
            ("cls", "str", lambda c: "bernoulli", "type", "error"),
            ("cls", "instance", lambda c: likelihoods.Bernoulli(2), "type", "error")])

# --- layers
_LX, _LW, _Lb = _rows(3, 4, 5), _rows(4, 2, 6), np.zeros(2)


def _cache_of(fwd, *args):
    return fwd(*args)[1]


TABLE["layers.linear_forward"] = Entry(b(layers.linear_forward, x=_LX, W=_LW, b=_Lb),
                                       arrays={"x": 1, "W": 0, "b": 0},
                                       legal=[("x", "complex"), ("W", "complex"), ("b", "complex")])
TABLE["layers.linear_backward"] = Entry(
    b(layers.linear_backward, dy=np.ones((3, 2)), cache=_cache_of(layers.linear_forward, _LX, _LW, _Lb)),
    arrays={"dy": 0}, objects=("cache",), shape_kinds=("extra", "missing", "mismatch", "empty"),
    custom=[("dy", "wrong width", lambda c: np.ones((3, 3)), "shape", "error")])
for _act in ("relu", "leaky_relu", "tanh", "sigmoid", "softplus"):
    _f = getattr(layers, f"{_act}_forward")
    TABLE[f"layers.{_act}_forward"] = Entry(b(_f, x=_LX), arrays={"x": None}, shape_kinds=("empty",),
                                            legal=[("x", "complex")])
    TABLE[f"layers.{_act}_backward"] = Entry(
        b(getattr(layers, f"{_act}_backward"), dy=np.ones((3, 4)), cache=_cache_of(_f, _LX)),
        arrays={"dy": 0}, objects=("cache",))
TABLE["layers.activation_forward"] = Entry(b(layers.activation_forward, name="tanh", x=_LX),
                                           arrays={"x": None}, shape_kinds=("empty",),
                                           options=("name",), legal=[("x", "complex")],
                                           label={"name": r"name|activation"})
TABLE["layers.activation_backward"] = Entry(
    b(layers.activation_backward, name="tanh", dy=np.ones((3, 4)),
      cache=_cache_of(layers.tanh_forward, _LX)),
    arrays={"dy": 0}, options=("name",), objects=("cache",), label={"name": r"name|activation"})
_MLP = layers.mlp_init([4, 3, 2], "enc", np.random.default_rng(0))
TABLE["layers.mlp_init"] = Entry(
    b(layers.mlp_init, sizes=[4, 3, 2], prefix="enc", rng=R), objects=("rng",),
    custom=[("sizes", "zero width", lambda c: [4, 0, 2], "option", "error"),
            ("sizes", "negative width", lambda c: [4, -3, 2], "option", "error"),
            ("sizes", "one size", lambda c: [4], "shape", "error"),
            ("sizes", "empty", lambda c: [], "shape", "error"),
            ("sizes", "float width", lambda c: [4, 2.5, 2], "type", "error"),
            ("sizes", "str", lambda c: "4,3,2", "type", "error"),
            ("sizes", "None", lambda c: None, "type", "error"),
            ("sizes", "bool width", lambda c: [4, True, 2], "type", "error"),
            ("prefix", "None", lambda c: None, "type", "error"),
            ("prefix", "int", lambda c: 3, "type", "error")])
TABLE["layers.mlp_forward"] = Entry(
    b(layers.mlp_forward, params=_MLP, prefix="enc", x=_LX, activation="tanh", out_activation=None),
    arrays={"x": 1}, options=("activation", "out_activation"), objects=("params",),
    legal=[("out_activation", "none"), ("x", "complex")],
    custom=[("prefix", "unknown", lambda c: "dec", "option", "error"),
            ("prefix", "None", lambda c: None, "type", "error"),
            ("params", "NaN weight", lambda c: {**_MLP, "enc.0.W": np.full((4, 3), np.nan)},
             "non-finite", "error"),
            ("params", "wrong weight shape", lambda c: {**_MLP, "enc.1.W": np.ones((2, 2))},
             "shape", "error")],
    label={"params": r"params|enc\.\d\.[Wb]", "prefix": r"prefix|enc|dec"})
TABLE["layers.mlp_backward"] = Entry(
    b(layers.mlp_backward, dy=np.ones((3, 2)), cache=layers.mlp_forward(_MLP, "enc", _LX, "tanh")[1]),
    arrays={"dy": 0}, objects=("cache",),
    custom=[("dy", "wrong width", lambda c: np.ones((3, 3)), "shape", "error")])
TABLE["layers.mlp_param_names"] = Entry(
    b(layers.mlp_param_names, params=_MLP, prefix="enc"), objects=("params",),
    custom=[("prefix", "None", lambda c: None, "type", "error"),
            ("prefix", "unknown", lambda c: "nope", "option", "error")])

# --- optim
_OP = lambda c: {"w": np.zeros(3), "b": np.zeros(2)}  # noqa: E731
_OP._lazy = True
for _cls in (optim.Adam, optim.Adamax):
    TABLE[f"optim.{_cls.__name__}"] = Entry(
        b(_cls, params=_OP, lr=1e-3, betas=(0.9, 0.999), eps=1e-8), reals=("lr", "eps"),
        objects=("params",), legal=[("lr", "none")],
        custom=[("lr", "negative", lambda c: -1e-3, "option", "error"),
                ("lr", "zero", lambda c: 0.0, "option", "error"),
                ("eps", "negative", lambda c: -1e-8, "option", "error"),
                ("betas", "beta1 = 1", lambda c: (1.0, 0.999), "option", "error"),
                ("betas", "negative", lambda c: (-0.1, 0.999), "option", "error"),
                ("betas", "one value", lambda c: (0.9,), "shape", "error"),
                ("betas", "NaN", lambda c: (math.nan, 0.999), "non-finite", "error"),
                ("betas", "str", lambda c: "0.9,0.999", "type", "error"),
                ("betas", "None", lambda c: None, "type", "error"),
                ("params", "empty dict", lambda c: {}, "shape", "error"),
                ("params", "NaN parameter", lambda c: {"w": np.array([np.nan])}, "non-finite", "error"),
                ("params", "str values", lambda c: {"w": "abc"}, "type", "error")])
TABLE["optim.make_optimizer"] = Entry(b(optim.make_optimizer, name="adam", params=_OP, lr=1e-3),
                                      options=("name",), reals=("lr",), objects=("params",),
                                      legal=[("lr", "none")],
                                      label={"name": r"name|optimizer"},
                                      custom=[("lr", "negative", lambda c: -1.0, "option", "error")])

# --- priors
_PRIOR_LABEL = {"latent_dim": r"latent_dim|\bL\b"}
TABLE["priors.base.Prior"] = Entry(b(priors.Prior, latent_dim=2), ints={"latent_dim": 1})
TABLE["priors.standard.StandardPrior"] = Entry(b(priors.StandardPrior, latent_dim=2), ints={"latent_dim": 1})
TABLE["priors.make_prior"] = Entry(
    b(priors.make_prior, name="mog", latent_dim=2), options=("name",), ints={"latent_dim": 1},
    label={"name": r"name|prior"},
    custom=[("bogus", "unknown keyword", lambda c: 1, "option", "error")])
TABLE["priors.mixtures.MoGPrior"] = Entry(
    b(prior_mixtures.MoGPrior, latent_dim=2, num_components=3, init_scale=0.1,
      component_trace_limit=10),
    ints={"latent_dim": 1, "num_components": 1, "component_trace_limit": 0}, reals=("init_scale",),
    custom=[("init_scale", "negative", lambda c: -0.1, "option", "error")])
_ENC = lazy(lambda c: c.model().encoder)
TABLE["priors.mixtures.VampPrior"] = Entry(
    b(prior_mixtures.VampPrior, latent_dim=2, num_components=3, encoder=_ENC, x_dim=4,
      learn_weights=False, init="uniform", data_range=(0.0, 16.0), init_data=None,
      component_trace_limit=10),
    ints={"latent_dim": 1, "num_components": 1, "x_dim": 1, "component_trace_limit": 0},
    options=("init",), objects=("encoder",), legal=[("x_dim", "none"), ("init", "none")],
    custom=[("data_range", "reversed", lambda c: (16.0, 0.0), "option", "error"),
            ("data_range", "NaN", lambda c: (math.nan, 1.0), "non-finite", "error"),
            ("data_range", "one value", lambda c: (1.0,), "shape", "error"),
            ("data_range", "str", lambda c: "0,16", "type", "error"),
            ("learn_weights", "str", lambda c: "yes", "type", "error"),
            ("init_data", "wrong width", lambda c: np.ones((5, 3)), "shape", "error"),
            ("init_data", "NaN", lambda c: np.full((5, 4), np.nan), "non-finite", "error")])
_GTM_CUSTOM = [("u_min", "above u_max", lambda c: 20.0, "option", "error"),
               ("hidden", "zero width", lambda c: (0,), "option", "error"),
               ("hidden", "negative width", lambda c: (-3,), "option", "error"),
               ("hidden", "str", lambda c: "3", "type", "error"),
               ("hidden", "float width", lambda c: (2.5,), "type", "error")]
TABLE["priors.mixtures.GTMPrior"] = Entry(
    b(prior_mixtures.GTMPrior, latent_dim=2, grid_size=2, u_min=-10.0, u_max=10.0, hidden=(3,),
      activation="tanh", component_trace_limit=10),
    ints={"latent_dim": 1, "grid_size": 1, "component_trace_limit": 0}, reals=("u_min", "u_max"),
    options=("activation",), custom=list(_GTM_CUSTOM))
TABLE["priors.mixtures.GTMVampPrior"] = Entry(
    b(prior_mixtures.GTMVampPrior, latent_dim=2, grid_size=2, encoder=_ENC, x_dim=4, u_min=-10.0,
      u_max=10.0, hidden=(3,), activation="tanh", data_range=(0.0, 16.0), component_trace_limit=10),
    ints={"latent_dim": 1, "grid_size": 1, "x_dim": 1, "component_trace_limit": 0},
    reals=("u_min", "u_max"), options=("activation",), objects=("encoder",),
    legal=[("x_dim", "none")],
    custom=list(_GTM_CUSTOM) + [("data_range", "reversed", lambda c: (16.0, 0.0), "option", "error"),
                                ("data_range", "inf", lambda c: (0.0, math.inf), "non-finite", "error")])
TABLE["priors.mixtures.AggregatedPosterior"] = Entry(
    b(prior_mixtures.AggregatedPosterior, latent_dim=2, means=_rows(5), log_vars=_rows(5, seed=1) * 0.3,
      component_trace_limit=0),
    arrays={"means": 0, "log_vars": 0}, ints={"latent_dim": 1, "component_trace_limit": 0},
    custom=[("latent_dim", "disagrees with means", lambda c: 3, "shape", "error")],
    label={"latent_dim": r"latent_dim|\bL\b"})
TABLE["priors.mixtures.gtm_grid"] = Entry(
    b(prior_mixtures.gtm_grid, grid_size=3, u_min=-1.0, u_max=1.0), ints={"grid_size": 1},
    reals=("u_min", "u_max"), custom=[("u_min", "above u_max", lambda c: 2.0, "option", "error")])
TABLE["priors.mixtures.component_log_densities"] = Entry(
    b(prior_mixtures.component_log_densities, z=_rows(3), means=_rows(4, seed=1),
      log_vars=_rows(4, seed=2) * 0.3),
    arrays={"z": -1, "means": 0, "log_vars": 0})
TABLE["priors.flow.FlowPrior"] = Entry(
    b(prior_flow.FlowPrior, latent_dim=2, num_couplings=1, hidden=(3,), activation="tanh",
      init="identity"),
    ints={"latent_dim": 2, "num_couplings": 1}, options=("activation", "init"),
    custom=[("hidden", "zero width", lambda c: (0,), "option", "error"),
            ("hidden", "str", lambda c: "3", "type", "error")])

# --- vae
from refvae import vae  # noqa: E402

TABLE["vae.VAE"] = Entry(
    b(vae.VAE, x_dim=4, latent_dim=2, hidden=(3,), activation="tanh", likelihood="gaussian",
      num_vals=5, prior="standard", rng=R, prior_kwargs=None, decoder_log_var="learned", kl="mc"),
    ints={"x_dim": 1, "latent_dim": 1}, options=("activation", "likelihood", "prior", "kl"),
    objects=("rng",), legal=[("prior_kwargs", "none")],
    custom=[("hidden", "zero width", lambda c: (0,), "option", "error"),
            ("hidden", "negative width", lambda c: (3, -1), "option", "error"),
            ("hidden", "str", lambda c: "3", "type", "error"),
            ("hidden", "None", lambda c: None, "type", "error"),
            ("decoder_log_var", "unknown option", lambda c: "fixed", "option", "error"),
            ("decoder_log_var", "NaN", lambda c: math.nan, "non-finite", "error"),
            ("decoder_log_var", "inf", lambda c: math.inf, "non-finite", "error"),
            ("prior_kwargs", "unknown keyword", lambda c: {"bogus": 1}, "option", "error"),
            ("prior_kwargs", "str", lambda c: "num_components=3", "type", "error"),
            ("num_vals", "one value (categorical)", lambda c: 1, "option", "error")],
    label={"prior_kwargs": r"prior_kwargs|bogus"})
TABLE["vae.Encoder"] = Entry(b(vae.Encoder, x_dim=4, latent_dim=2, hidden=(3,), activation="tanh"),
                             ints={"x_dim": 1, "latent_dim": 1}, options=("activation",),
                             custom=[("hidden", "zero width", lambda c: (0,), "option", "error")])
TABLE["vae.Decoder"] = Entry(
    b(vae.Decoder, x_dim=4, latent_dim=2, hidden=(3,), activation="tanh", likelihood="categorical",
      num_vals=5, log_var="learned"),
    ints={"x_dim": 1, "latent_dim": 1, "num_vals": 2}, options=("activation", "likelihood"),
    custom=[("hidden", "zero width", lambda c: (0,), "option", "error"),
            ("log_var", "unknown option", lambda c: "fixed", "option", "error")])
TABLE["vae.NegElbo"] = ex(RECORD)
TABLE["vae.VAECache"] = ex(RECORD + " (made by VAE.forward only)")
TABLE["_validation.NonFiniteIntermediateError"] = ex(RECORD + " (exported by refvae.vae)")
# methods of VAE and of a prior (not in any __all__, but the first thing a user calls)
_EPS = _rows(3, 2, 9)
TABLE["vae.VAE.neg_elbo"] = Entry(
    mb(lambda c: c.model(), "neg_elbo", x=lazy(lambda c: c.x(3)), eps=_EPS, reduction="mean"),
    arrays={"x": 1, "eps": 0}, options=("reduction",), extra=True)
TABLE["vae.VAE.encode"] = Entry(mb(lambda c: c.model(), "encode", x=X), arrays={"x": 1}, extra=True)
TABLE["vae.VAE.decode"] = Entry(mb(lambda c: c.model(), "decode", z=_rows(3)), arrays={"z": 1},
                                extra=True)
TABLE["vae.VAE.sample"] = Entry(mb(lambda c: c.model(), "sample", n=3, rng=R, mode="mean"),
                                ints={"n": 1}, options=("mode",), objects=("rng",), extra=True)
TABLE["vae.VAE.load"] = Entry(b(vae.VAE.load, directory=lazy(lambda c: c.saved_model())),
                              paths={"directory": "dir"}, extra=True)


def _bound_mog(c):
    p = refvae.make_prior("mog", 2, num_components=3)
    return p.bind(p.init_params(np.random.default_rng(0)))


TABLE["priors.Prior.log_prob"] = Entry(mb(_bound_mog, "log_prob", z=_rows(3)), arrays={"z": 1},
                                       extra=True)
TABLE["priors.Prior.draw"] = Entry(mb(_bound_mog, "draw", n=3, rng=R), ints={"n": 1},
                                   objects=("rng",), extra=True)

TABLE["vae.VAE.neg_elbo_and_grad"] = Entry(
    mb(lambda c: c.model(), "neg_elbo_and_grad", x=lazy(lambda c: c.x(3)), eps=_EPS,
       reduction="sum"),
    arrays={"x": 1, "eps": 0}, options=("reduction",), extra=True)
TABLE["vae.VAE.forward"] = Entry(mb(lambda c: c.model(), "forward", x=lazy(lambda c: c.x(3)), eps=_EPS),
                                 arrays={"x": 1, "eps": 0}, extra=True)
TABLE["vae.VAE.save"] = Entry(mb(lambda c: c.model(), "save", directory=lazy(lambda c: c.fresh("save"))),
                              paths={"directory": "outdir"}, extra=True,
                              label={"directory": r"directory|a-regular-file"})


def _config_text(c, **changes):
    cfg = c.model().config()
    cfg.update(changes)
    return cfg


TABLE["vae.VAE.from_config"] = Entry(
    b(vae.VAE.from_config, config=lazy(lambda c: c.model().config()), rng=R), extra=True,
    legal=[("rng", "none")],
    custom=[("config", "list", lambda c: [1, 2], "type", "error"),
            ("config", "None", lambda c: None, "type", "error"),
            ("config", "no x_dim", lambda c: {k: v for k, v in c.model().config().items()
                                              if k != "x_dim"}, "shape", "error"),
            ("config", "x_dim str", lambda c: _config_text(c, x_dim="four"), "type", "error"),
            ("config", "x_dim 0", lambda c: _config_text(c, x_dim=0), "option", "error"),
            ("config", "latent_dim NaN", lambda c: _config_text(c, latent_dim=math.nan),
             "non-finite", "error"),
            ("config", "unknown prior", lambda c: _config_text(c, prior="bogus"), "option", "error"),
            ("config", "hidden nested", lambda c: _config_text(c, hidden=[[3]]), "type", "error"),
            ("config", "huge sizes", lambda c: _config_text(c, x_dim=10 ** 9, hidden=[10 ** 9]),
             "resources", "error"),
            ("config", "unknown key", lambda c: _config_text(c, bogus=1), "option", "error")],
    label={"config": r"config|x_dim|latent_dim|prior|hidden|bogus"})
TABLE["priors.Prior.log_prob_vjp"] = Entry(mb(lambda c: _bound_mog(c), "log_prob_vjp", g=np.ones(3),
                                              z=_rows(3)),
                                           arrays={"g": 0, "z": 0}, extra=True)
TABLE["priors.flow.FlowPrior.transform"] = Entry(
    mb(lambda c: prior_flow.FlowPrior(2, 1, (3,), "tanh", "random"), "transform",
       params=lazy(lambda c: prior_flow.FlowPrior(2, 1, (3,), "tanh", "random").init_params(c.rng())),
       z=_rows(3)),
    arrays={"z": 1}, objects=("params",), legal=[("z", "complex")], extra=True,
    custom=[("params", "NaN weights", lambda c: {k: np.full(np.shape(v), np.nan) for k, v in
                                                 prior_flow.FlowPrior(2, 1, (3,), "tanh", "random")
                                                 .init_params(c.rng()).items()}, "non-finite", "error"),
            ("params", "missing key", lambda c: dict(list(prior_flow.FlowPrior(
                2, 1, (3,), "tanh", "random").init_params(c.rng()).items())[1:]), "shape", "error")],
    label={"params": r"params|prior\.|flow"})
TABLE["priors.mixtures.AggregatedPosterior.from_model"] = Entry(
    b(prior_mixtures.AggregatedPosterior.from_model, model=M, x=X, batch_size=2), extra=True,
    arrays={"x": 1}, ints={"batch_size": 1}, objects=("model",))
_OPT = lambda c: optim.Adam({"w": np.zeros(3), "b": np.zeros(2)})  # noqa: E731
TABLE["optim.Adam.step"] = Entry(
    mb(_OPT, "step", grads={"w": np.ones(3), "b": np.ones(2)}), extra=True,
    custom=[("grads", "NaN", lambda c: {"w": np.array([np.nan, 0, 0]), "b": np.ones(2)},
             "non-finite", "error"),
            ("grads", "inf", lambda c: {"w": np.array([np.inf, 0, 0]), "b": np.ones(2)},
             "non-finite", "error"),
            ("grads", "missing key", lambda c: {"w": np.ones(3)}, "shape", "error"),
            ("grads", "extra key", lambda c: {"w": np.ones(3), "b": np.ones(2), "v": np.ones(1)},
             "shape", "error"),
            ("grads", "wrong shape", lambda c: {"w": np.ones(4), "b": np.ones(2)}, "shape", "error"),
            ("grads", "complex", lambda c: {"w": np.ones(3) + 1j, "b": np.ones(2)}, "type", "error"),
            ("grads", "str", lambda c: {"w": "abc", "b": np.ones(2)}, "type", "error"),
            ("grads", "None", lambda c: None, "type", "error")],
    label={"grads": r"grads|\bw\b|\bb\b|\bv\b"})


def _state(c, **changes):
    st = _OPT(c).state_dict()
    st.update(changes)
    return st


TABLE["optim.Adam.load_state_dict"] = Entry(
    mb(_OPT, "load_state_dict", state=lazy(lambda c: _OPT(c).state_dict())), extra=True,
    custom=[("state", "list", lambda c: [1, 2], "type", "error"),
            ("state", "missing key", lambda c: {k: v for k, v in _OPT(c).state_dict().items()
                                                if k != "lr"}, "shape", "error"),
            ("state", "lr NaN", lambda c: _state(c, lr=math.nan), "non-finite", "error"),
            ("state", "t negative", lambda c: _state(c, t=-1), "option", "error"),
            ("state", "other type", lambda c: _state(c, type="Adamax"), "option", "error"),
            ("state", "betas str", lambda c: _state(c, betas="ab"), "type", "error")],
    label={"state": r"state"})

# --- estimators
_EST_OBJ = ("model", "rng")
_XL = {"x": r"\bx\b"}
TABLE["estimators.Estimate"] = ex(RECORD)
TABLE["estimators.encode_all"] = Entry(b(estimators.encode_all, model=M, x=X, params=None, batch_size=2),
                                       arrays={"x": 1}, ints={"batch_size": 1}, objects=("model",),
                                       legal=[("params", "none")])
TABLE["estimators.conditional_entropy"] = Entry(b(estimators.conditional_entropy, model=M, x=X),
                                                arrays={"x": 1}, objects=("model",))
for _name in ("cross_entropy", "omega_decomposition"):
    TABLE[f"estimators.{_name}"] = Entry(
        b(getattr(estimators, _name), model=MOG, x=X, rng=R, n_samples=2),
        arrays={"x": 1}, ints={"n_samples": 1}, objects=_EST_OBJ)
TABLE["estimators.elbo_terms"] = Entry(
    b(estimators.elbo_terms, model=M, x=X, rng=R, n_samples=2, batch_size=2),
    arrays={"x": 1}, ints={"n_samples": 1, "batch_size": 1}, objects=_EST_OBJ)
TABLE["estimators.aggregated_posterior_stats"] = Entry(
    b(estimators.aggregated_posterior_stats, model=MOG, x=X, rng=R, n_samples=2),
    arrays={"x": 1}, ints={"n_samples": 1}, objects=_EST_OBJ,
    custom=[("aggregated", "str", lambda c: "q", "type", "error")])
_TAUS = [("taus", "zero", lambda c: (0.0,), "option", "error"),
         ("taus", "negative", lambda c: (-0.1,), "option", "error"),
         ("taus", "NaN", lambda c: (math.nan,), "non-finite", "error"),
         ("taus", "str", lambda c: "0.1", "type", "error"),
         ("taus", "None", lambda c: None, "type", "error")]
TABLE["estimators.hole_metrics"] = Entry(
    b(estimators.hole_metrics, model=MOG, x=X, rng=R, n_samples=20, taus=(0.1, 0.01)),
    arrays={"x": 1}, ints={"n_samples": 2}, objects=_EST_OBJ, custom=list(_TAUS))
TABLE["estimators.log_likelihood"] = Entry(
    b(estimators.log_likelihood, model=M, x=X, rng=R, n_samples=10, max_rows=2),
    arrays={"x": 1}, ints={"n_samples": 1, "max_rows": 1}, objects=_EST_OBJ)
TABLE["estimators.density_grid"] = Entry(
    b(estimators.density_grid, model=MOG, x=X, n=5, lims=None),
    arrays={"x": 1}, ints={"n": 2}, objects=("model",), legal=[("lims", "none")],
    custom=[("lims", "reversed", lambda c: ((1.0, -1.0), (-1.0, 1.0)), "option", "error"),
            ("lims", "NaN", lambda c: ((math.nan, 1.0), (-1.0, 1.0)), "non-finite", "error"),
            ("lims", "one pair", lambda c: ((-1.0, 1.0),), "shape", "error"),
            ("lims", "str", lambda c: "-1,1", "type", "error"),
            ("model", "L = 3", lambda c: c.model(L=3), "shape", "error")],
    label={"model": r"model|latent_dim|L ="})

# --- distributed
_DIST_INTS = {"chunk": 1, "split_every": 2, "threads_per_task": 1}
_DIST_CUSTOM = [("scheduler", "int", lambda c: 8786, "type", "error"),
                ("connect_timeout", "negative", lambda c: -1.0, "option", "error"),
                ("worker_timeout", "negative", lambda c: -1.0, "option", "error"),
                ("worker_timeout", "nan", lambda c: float("nan"), "option", "error"),
                ("client", "str", lambda c: "tcp://nowhere:1", "type", "error")]
TABLE["tools.distributed.log_qz"] = Entry(
    b(distributed.log_qz, z=_rows(3), means=_rows(5, seed=1), log_vars=_rows(5, seed=2) * 0.3,
      chunk=2, split_every=2, threads_per_task=1),
    arrays={"z": 1, "means": 1, "log_vars": 0}, ints=_DIST_INTS, legal=[("threads_per_task", "none")],
    custom=list(_DIST_CUSTOM))
TABLE["tools.distributed.log_mixture"] = Entry(
    b(distributed.log_mixture, z=_rows(3), means=_rows(5, seed=1), log_vars=_rows(5, seed=2) * 0.3,
      log_weights=_rows(5, 1, 3).ravel(), chunk=2, split_every=2, threads_per_task=1),
    arrays={"z": 1, "means": 1, "log_vars": 0, "log_weights": 0}, ints=_DIST_INTS,
    legal=[("log_weights", "none"), ("log_weights", "neginf"), ("threads_per_task", "none")],
    custom=list(_DIST_CUSTOM))
_XOC = {"x_or_components": r"x_or_components|\bx\b|data"}
TABLE["tools.distributed.aggregated_stats"] = Entry(
    b(distributed.aggregated_stats, model=MOG, x_or_components=X, rng=R, n_samples=2, n_queries=None,
      chunk=2, split_every=2, threads_per_task=1),
    arrays={"x_or_components": 1}, ints={"n_samples": 1, "n_queries": 1, **_DIST_INTS},
    objects=_EST_OBJ, legal=[("n_queries", "none"), ("threads_per_task", "none")], label=_XOC,
    str_paths=("x_or_components",),
    custom=list(_DIST_CUSTOM) + [("n_queries", "one query", lambda c: 1, "option", "ok"),
                                 ("n_samples", "one sample of one row",
                                  lambda c: 1, "option", "ok")])
TABLE["tools.distributed.holes"] = Entry(
    b(distributed.holes, model=MOG, x_or_components=X, rng=R, n_samples=20, taus=(0.1, 0.01),
      chunk=2, split_every=2, threads_per_task=1),
    arrays={"x_or_components": 1}, ints={"n_samples": 2, **_DIST_INTS}, objects=_EST_OBJ,
    label=_XOC, str_paths=("x_or_components",), legal=[("threads_per_task", "none")],
    custom=list(_TAUS) + list(_DIST_CUSTOM))
TABLE["tools.distributed.encode_to_shards"] = Entry(
    b(distributed.encode_to_shards, model=M, x=X, chunk=2, out_dir=None),
    arrays={"x": 1}, ints={"chunk": 1}, objects=("model",), paths={"out_dir": "outdir"},
    legal=[("out_dir", "none")], str_paths=("x",),
    custom=[("x", "nonexistent .npy", lambda c: c.missing() + ".npy", "file", "error")])
TABLE["tools.distributed.components_to_dask"] = Entry(
    b(distributed.components_to_dask, means=_rows(5), log_vars=_rows(5, seed=1), chunk=2),
    arrays={"means": 1, "log_vars": 0}, ints={"chunk": 1})
TABLE["tools.distributed.shard_bounds"] = Entry(b(distributed.shard_bounds, N=10, chunk=3),
                                          ints={"N": 1, "chunk": 1})
TABLE["tools.distributed.combine_tree"] = Entry(
    b(distributed.combine_tree, partials=[_PART, _PART, _PART], split_every=2, combine=None),
    ints={"split_every": 2}, legal=[("combine", "none")],
    custom=[("partials", "empty", lambda c: [], "shape", "error"),
            ("partials", "None", lambda c: None, "type", "error"),
            ("combine", "not callable", lambda c: "sum", "type", "error")])
TABLE["tools.distributed.load_array"] = Entry(
    b(distributed.load_array, path=lazy(lambda c: c.npy()), key=None, name="data"),
    paths={"path": "file"}, legal=[("key", "none")],
    custom=[("key", "with a .npy", lambda c: "x", "option", "ok")],
    label={"path": r"path|data|does not exist|not a file"})
TABLE["tools.distributed.ClusterError"] = ex(RECORD)

# --- golden
TABLE["tools.golden.case.GoldenCase"] = ex(RECORD)
TABLE["tools.golden.case.golden_dir"] = ex(NOARGS)
TABLE["tools.golden.case.case_name"] = Entry(b(golden.case_name, prior="standard", likelihood="gaussian",
                                               kl="analytic"),
                                  options=("prior", "likelihood", "kl"))
TABLE["tools.golden.generation.build_case"] = Entry(b(golden.build_case, prior="standard", likelihood="bernoulli",
                                     seed=1), options=("prior", "likelihood"), ints={"seed": 0})
TABLE["tools.golden.case.committed_cases"] = ex(NOARGS)
TABLE["tools.golden.writing.write_case"] = Entry(
    b(golden.write_case, out_dir=lazy(lambda c: c.fresh("golden")), prior="standard",
      likelihood="bernoulli", seed=1, checksums=True),
    paths={"out_dir": "outdir"}, options=("prior", "likelihood"), ints={"seed": 0},
    label={"out_dir": r"out_dir|directory"})
TABLE["tools.golden.writing.write_cases"] = Entry(
    b(golden.write_cases, out_dir=lazy(lambda c: c.fresh("golden")), priors=("standard",),
      likelihoods=("bernoulli",), seed=1),
    paths={"out_dir": "outdir"}, ints={"seed": 0},
    custom=[("priors", "unknown", lambda c: ("bogus",), "option", "error"),
            ("priors", "str", lambda c: "standard", "type", "error"),
            ("priors", "empty", lambda c: (), "shape", "error"),
            ("likelihoods", "unknown", lambda c: ("bogus",), "option", "error"),
            ("say", "not callable", lambda c: "print", "type", "error")],
    label={"priors": r"priors?", "likelihoods": r"likelihoods?"})
TABLE["tools.golden.reading.load_case"] = Entry(b(golden.load_case, path_or_name="standard-gaussian", directory=None),
                                  legal=[("directory", "none")],
                                  custom=[("path_or_name", "unknown case", lambda c: "bogus-case",
                                           "file", "error"),
                                          ("path_or_name", "nonexistent path", lambda c: c.missing(),
                                           "file", "error"),
                                          ("path_or_name", "a file", lambda c: c.afile(), "file",
                                           "error"),
                                          ("path_or_name", "None", lambda c: None, "type", "error"),
                                          ("directory", "nonexistent", lambda c: c.missing(), "file",
                                           "error")],
                                  label={"path_or_name": r"path_or_name|bogus-case|does-not-exist|"
                                                         r"a-regular-file|case"})
TABLE["tools.golden.reading.list_cases"] = Entry(b(golden.list_cases, directory=None), legal=[("directory", "none")],
                                   paths={"directory": "dir"})
TABLE["tools.golden.checksums.write_checksums"] = Entry(b(golden.write_checksums,
                                          directory=lazy(lambda c: c.cases_copy())),
                                        paths={"directory": "dir"})
TABLE["tools.golden.checksums.verify_checksums"] = Entry(b(golden.verify_checksums,
                                           directory=lazy(lambda c: c.cases_copy())),
                                         paths={"directory": "dir"}, legal=[("directory", "none")])
TABLE["tools.golden.checksums.require_checksums"] = Entry(
    b(golden.require_checksums, directory=lazy(lambda c: c.cases_copy()), cases=None),
    paths={"directory": "dir"}, legal=[("directory", "none"), ("cases", "none")],
    custom=[("cases", "unknown case", lambda c: ["bogus-case"], "option", "error"),
            ("cases", "str", lambda c: "standard-gaussian", "type", "error")],
    label={"directory": r"directory|does-not-exist|a-regular-file|SHA256SUMS",
           "cases": r"cases|bogus-case"})
TABLE["tools.golden.comparison.compare_cases"] = Entry(b(golden.compare_cases, new=CASE, old=CASE, c_regen=None),
                                      objects=("new", "old"), reals=("c_regen",),
                                      legal=[("c_regen", "none")],
                                      custom=[("c_regen", "negative", lambda c: -1.0, "option",
                                               "error")])
TABLE["tools.golden.reference.reference_model"] = Entry(
    b(golden.reference_model, config=lazy(lambda c: dict(c.case().config)),
      params=lazy(lambda c: dict(c.case().params))),
    objects=("config", "params"),
    custom=[("config", "list", lambda c: [1, 2], "type", "error"),
            ("config", "missing key", lambda c: {k: v for k, v in c.case().config.items()
                                                 if k != "latent_dim"}, "shape", "error"),
            ("params", "missing key", lambda c: dict(list(c.case().params.items())[1:]), "shape",
             "error"),
            ("params", "NaN", lambda c: {k: np.full(np.shape(v), np.nan)
                                         for k, v in c.case().params.items()}, "non-finite", "error")],
    label={"config": r"config|latent_dim", "params": r"params|encoder|decoder"})
TABLE["tools.golden.reference.reference_outputs"] = Entry(
    b(golden.reference_outputs, model=lazy(lambda c: golden.reference_model(c.case().config,
                                                                            c.case().params)),
      x=lazy(lambda c: c.case().x), eps=lazy(lambda c: c.case().eps), draws=None),
    arrays={"x": 1, "eps": 0}, objects=("model",), legal=[("draws", "none")])
TABLE["tools.golden.case.allowed_error"] = Entry(
    b(golden.allowed_error, values=lazy(lambda c: c.case().values["loss"]),
      scales=lazy(lambda c: c.case().scales["loss"]), profile="float64", c=None),
    arrays={"values": None, "scales": None}, shape_kinds=("empty",), options=("profile",),
    reals=("c",), legal=[("c", "none"), ("values", "empty"), ("scales", "empty")],
    custom=[("c", "negative", lambda c: -1.0, "option", "error")])
TABLE["tools.golden.reference.prior_box"] = Entry(b(golden.prior_box, model=MOG), objects=("model",))

# --- verify
TABLE["tools.verify.results.QuantityResult"] = ex(RECORD)
TABLE["tools.verify.results.CheckResult"] = ex(RECORD)
TABLE["tools.verify.results.CaseResult"] = ex(RECORD)
TABLE["tools.verify.report.VerifyReport"] = ex(RECORD)
TABLE["tools.verify.adapters.RefvaeAdapter"] = ex(NOARGS)
TABLE["tools.verify.adapters.load_adapter"] = Entry(
    b(verify.load_adapter, spec="refvae.tools.verify:RefvaeAdapter"),
    custom=[("spec", "no colon", lambda c: "refvae.tools.verify", "option", "error"),
            ("spec", "unknown module", lambda c: "no_such_module_xyz:make", "option", "error"),
            ("spec", "unknown factory", lambda c: "refvae.tools.verify:no_such_factory", "option", "error"),
            ("spec", "missing file", lambda c: c.missing() + ".py:make", "file", "error"),
            ("spec", "a directory", lambda c: c.adir() + ":make", "file", "error"),
            ("spec", "empty", lambda c: "", "option", "error"),
            ("spec", "None", lambda c: None, "type", "error"),
            ("spec", "not callable", lambda c: "refvae.tools.verify:PROFILES", "type", "error")],
    label={"spec": r"spec|no_such|refvae\.tools\.verify|does-not-exist|a-directory|factory|adapter"})
TABLE["tools.verify.adapters.call_adapter"] = Entry(b(verify.call_adapter, adapter=ADAPTER, case=CASE, params=None),
                                     objects=("adapter", "case"), legal=[("params", "none")])


def _kd_file(c, text, name):
    p = os.path.join(c.tmp, name)
    with open(p, "w") as fh:
        fh.write(text)
    return p


TABLE["tools.verify.known.load_known_deviations"] = Entry(
    b(verify.load_known_deviations, path=lazy(lambda c: _kd_file(c, "[]", "kd-ok.json"))),
    paths={"path": "file"},
    custom=[("path", "not JSON", lambda c: _kd_file(c, "{oops", "kd1.json"), "file", "error"),
            ("path", "a dict", lambda c: _kd_file(c, '{"case": 1}', "kd2.json"), "file", "error"),
            ("path", "entries lack keys", lambda c: _kd_file(c, '[{"case": "x"}]', "kd3.json"),
             "file", "error"),
            ("path", "entries are numbers", lambda c: _kd_file(c, "[1, 2]", "kd4.json"), "file",
             "error"),
            ("path", "deeply nested", lambda c: _kd_file(c, "[" * 100000 + "]" * 100000,
                                                         "kd5.json"), "file", "error"),
            ("path", "empty file", lambda c: _kd_file(c, "", "kd6.json"), "file", "error"),
            ("path", "binary", lambda c: _kd_file(c, "\x00\xff\xfe", "kd7.json"), "file", "error")],
    label={"path": r"path|kd\d|kd-ok|known|does-not-exist|a-directory"})
_VCASE = lazy(lambda c: c.case())
_VADAPT = dict(adapter=ADAPTER, case=_VCASE, profile="float64")
_VCUSTOM = [("profile", "unknown", lambda c: "float16", "option", "error")]
TABLE["tools.verify.comparison.compare_case"] = Entry(
    b(verify.compare_case, outputs=lazy(lambda c: verify.call_adapter(verify.RefvaeAdapter(), c.case())),
      case=_VCASE, profile="float64"),
    objects=("outputs", "case"), options=("profile",))
TABLE["tools.verify.checks.check_gradient"] = Entry(b(verify.check_gradient, **_VADAPT, seed=0),
                                       objects=("adapter", "case"), options=("profile",),
                                       ints={"seed": 0})
TABLE["tools.verify.density.check_normalisation"] = Entry(
    b(verify.check_normalisation, **_VADAPT, grid=None), objects=("adapter", "case"),
    options=("profile",), legal=[("grid", "none")],
    custom=[("grid", "zero", lambda c: 0, "option", "error"),
            ("grid", "str", lambda c: "fine", "type", "error")])
TABLE["tools.verify.density.check_sampler"] = Entry(
    b(verify.check_sampler, **_VADAPT, grid=None, n=2000, seed=0), objects=("adapter", "case"),
    options=("profile",), ints={"n": 2, "seed": 0}, legal=[("grid", "none")],
    custom=[("n", "huge", lambda c: 10 ** 15, "resources", "error")])
TABLE["tools.verify.checks.check_mixture"] = Entry(
    b(verify.check_mixture, adapter=ADAPTER, case=lazy(lambda c: c.case("mog-gaussian")),
      profile="float64", n_points=16, seed=0),
    objects=("adapter", "case"), options=("profile",), ints={"n_points": 1, "seed": 0})
TABLE["tools.verify.checks.check_nll"] = Entry(b(verify.check_nll, **_VADAPT, seed=0), objects=("adapter", "case"),
                                  options=("profile",), ints={"seed": 0})
TABLE["tools.verify.adapters.RefvaePriorAdapter"] = ex(NOARGS)
TABLE["tools.verify.adapters.is_prior_only"] = ex("a predicate over any object: every input is legal "
                                                  "(it answers True or False)")
TABLE["tools.verify.adapters.adapter_outputs"] = Entry(
    b(verify.adapter_outputs, adapter=ADAPTER, case=CASE, errors=None), objects=("adapter", "case"),
    legal=[("errors", "none")])
TABLE["tools.verify.prior_only.prior_quantities"] = Entry(b(verify.prior_quantities, case=CASE),
                                                          objects=("case",))
TABLE["tools.verify.prior_only.check_prior_gradient"] = Entry(
    b(verify.check_prior_gradient, **_VADAPT, seed=0), objects=("adapter", "case"),
    options=("profile",), ints={"seed": 0})
TABLE["tools.verify.runner.run"] = Entry(
    b(verify.run, adapter=ADAPTER, cases=lazy(lambda c: [os.path.join(c.cases_copy(),
                                                                      "standard-gaussian")]),
      profile="float64", checks=("golden",), prior_checks="once", json_out=None, seed=0),
    objects=("adapter",), options=("profile", "prior_checks"), ints={"seed": 0},
    custom=[("checks", "unknown", lambda c: ("bogus",), "option", "error"),
            ("checks", "str", lambda c: "golden", "type", "error"),
            ("checks", "empty", lambda c: (), "shape", "error"),
            ("cases", "nonexistent", lambda c: c.missing(), "file", "error"),
            ("cases", "a file", lambda c: c.afile(), "file", "error"),
            ("cases", "empty list", lambda c: [], "shape", "error"),
            ("known_deviations", "nonexistent", lambda c: c.missing(), "file", "error"),
            ("json_out", "inside a file", lambda c: os.path.join(c.afile(), "r.json"), "file",
             "error"),
            ("json_out", "a directory", lambda c: c.adir(), "file", "error")],
    label={"checks": r"checks?|bogus", "cases": r"cases|does-not-exist|a-regular-file",
           "json_out": r"json_out|a-regular-file|a-directory",
           "known_deviations": r"known_deviations|does-not-exist"})

# --- verify: adversarial mixture inputs and the conformance report (issue 16, part 2)
from refvae.tools.verify import adversarial as _adv, conformance as _conf  # noqa: E402


def _kernel_log_prob(z, means, log_vars, log_weights):
    from refvae.kernels.mixture import mixture_log_prob
    return mixture_log_prob(z, means, log_vars, log_weights)


TABLE["tools.verify.adversarial.adversarial_input"] = Entry(b(_adv.adversarial_input, name="K=1"),
                                                           options=("name",))
TABLE["tools.verify.adversarial.check_adversarial"] = Entry(
    b(_adv.check_adversarial, log_prob=_kernel_log_prob, log_prob_grad=None, inputs=["K=1"], source=None),
    objects=("log_prob", "log_prob_grad", "source"), legal=[("log_prob_grad", "none"), ("source", "none"),
                                                            ("source", "str")],
    custom=[("inputs", "unknown", lambda c: ["bogus"], "option", "error"),
            ("inputs", "str", lambda c: "K=1", "type", "error"),
            ("inputs", "empty", lambda c: [], "shape", "error")])
TABLE["tools.verify.conformance.run_conformance"] = Entry(
    b(_conf.run_conformance, libraries=["torch"], say=None), baseline=False,
    guards=(("refvae.tools.verify.conformance", "_case_rows"),),
    custom=[("libraries", "unknown", lambda c: ["bogus"], "option", "error"),
            ("libraries", "str", lambda c: "torch", "type", "error"),
            ("libraries", "empty", lambda c: [], "shape", "error"),
            ("say", "not callable", lambda c: 5, "type", "error")])
TABLE["tools.verify.conformance.format_markdown"] = Entry(
    b(_conf.format_markdown, report={"schema": _conf.SCHEMA, "versions": {}, "unavailable": {}, "rows": []}),
    objects=("report",))
TABLE["tools.verify.conformance.main"] = ex("the command-line entry point (python -m "
                                            "refvae.tools.verify.conformance): argparse turns bad flags into "
                                            "exit 2 naming the flag; tests/test_conformance.py runs it")

# --- report
_TINY = profiles.PROFILES["tiny"]
TABLE["tools.profiles.Profile"] = ex(RECORD + " (the profiles are constants in refvae.tools.profiles.PROFILES; "
                             "run_validation is swept with a meaningless profile below)")
TABLE["tools.profiles.prior_names"] = ex(NOARGS)
TABLE["tools.profiles.prior_index"] = Entry(b(profiles.prior_index, name="mog"), options=("name",),
                                            label={"name": r"name|prior"})
TABLE["tools.profiles.parse_priors"] = Entry(
    b(profiles.parse_priors, text="standard,mog", flag="--priors"),
    custom=[("text", "empty", lambda c: "", "option", "error"),
            ("text", "unknown", lambda c: "standard,bogus", "option", "error"),
            ("text", "only commas", lambda c: ",,", "option", "error"),
            ("text", "None", lambda c: None, "type", "error"),
            ("text", "int", lambda c: 3, "type", "error")],
    label={"text": r"--priors|text|prior"})
TABLE["tools.profiles.prepare_out_dir"] = Entry(b(profiles.prepare_out_dir, out=lazy(lambda c: c.fresh("out")),
                                          subdirs=("figures",)),
                                        paths={"out": "outdir"},
                                        custom=[("subdirs", "str", lambda c: "figures", "type", "ok"),
                                                ("subdirs", "escaping", lambda c: ("../../x",),
                                                 "file", "error")],
                                        label={"out": r"out|output directory|a-regular-file"})
TABLE["tools.profiles.build_model"] = Entry(
    b(profiles.build_model, name="mog", latent_dim=2, x_dim=4, profile=_TINY, rng=R),
    options=("name",), ints={"latent_dim": 1, "x_dim": 1}, objects=("profile", "rng"),
    label={"name": r"name|prior"},
    custom=[("latent_dim", "huge", lambda c: 10 ** 12, "resources", "error")])
TABLE["tools.profiles.load_data"] = Entry(b(profiles.load_data, profile=_TINY, seed=0), objects=("profile",),
                                  ints={"seed": 0})
_GM = lazy(lambda c: c.model(D=4))
TABLE["tools.report.gradient_check.gradcheck_model"] = Entry(
    b(report.gradcheck_model, model=_GM, x=lazy(lambda c: c.x(3)), eps=_EPS, rng=R, near_kink_fixed=0),
    arrays={"x": 1, "eps": 0}, objects=("model", "rng"), ints={"near_kink_fixed": 0})
TABLE["tools.report.gradient_check.near_kink"] = Entry(
    b(report.near_kink, model=_GM, x=lazy(lambda c: c.x(3)), eps=_EPS, margin=None),
    arrays={"x": 1, "eps": 0}, objects=("model",), reals=("margin",), legal=[("margin", "none")],
    custom=[("margin", "negative", lambda c: -1.0, "option", "error")])
TABLE["tools.report.gradient_check.choose_gradcheck_batch"] = Entry(
    b(report.choose_gradcheck_batch, model=_GM, x_pool=X, rng=R, batch_size=2, candidates=2),
    arrays={"x_pool": 1}, objects=("model", "rng"), ints={"batch_size": 1, "candidates": 1})
TABLE["tools.report.kernel_check.kernel_accuracy"] = Entry(b(report.kernel_accuracy, rng=R, n_random=2),
                                        objects=("rng",), ints={"n_random": 0})
TABLE["tools.report.identity_checks.identities"] = Entry(b(report.identities, run={"prior": "standard", "latent_dim": 2},
                                     n_train=10),
                                   objects=("run",), ints={"n_train": 1},
                                   custom=[("run", "list", lambda c: [1, 2], "type", "error")])
TABLE["tools.report.identity_checks.extra_inputs"] = Entry(
    b(report.identity_checks.extra_inputs, model=_GM,
      data=lazy(lambda c: {"train": c.x(6), "test": c.x(4)}),
      aggregated=lazy(lambda c: prior_mixtures.AggregatedPosterior.from_model(c.model(D=4), c.x(6))),
      profile=_TINY, rng=R),
    objects=("model", "data", "aggregated", "profile", "rng"))
_VAL_GUARDS = (("refvae.tools.report.runner", "load_data"),)
TABLE["tools.report.runner.run_validation"] = Entry(
    b(report.run_validation, profile=_TINY, seed=0, out=lazy(lambda c: c.fresh("val")),
      priors=("standard",), plots=False, quiet=True),
    objects=("profile",), ints={"seed": 0}, paths={"out": "outdir"}, guards=_VAL_GUARDS,
    custom=[("priors", "unknown", lambda c: ("bogus",), "option", "error"),
            ("priors", "empty", lambda c: (), "shape", "error"),
            ("priors", "str", lambda c: "standard", "type", "error"),
            ("threads", "zero", lambda c: 0, "option", "error"),
            ("threads", "str", lambda c: "2", "type", "error"),
            ("profile", "batch_size 0", lambda c: dataclasses.replace(_TINY, batch_size=0), "option",
             "error"),
            ("profile", "lr NaN", lambda c: dataclasses.replace(_TINY, lr=math.nan), "non-finite",
             "error"),
            ("profile", "unknown optimizer", lambda c: dataclasses.replace(_TINY, optimizer="sgd"),
             "option", "error")],
    label={"out": r"out|output directory|a-regular-file", "priors": r"priors?|bogus",
           "profile": r"profile|batch_size|lr|optimizer"})

# --- train
TABLE["train.TrainResult"] = ex(RECORD)
TABLE["train.fit"] = Entry(
    b(train.fit, model=M, x_train=lazy(lambda c: c.x(6)), x_val=lazy(lambda c: c.x(3, seed=5)),
      rng=R, optimizer="adam", lr=1e-3, batch_size=3, max_epochs=1, patience=1, quiet=True,
      progress=False, eps_val=None, callback=None, val_noise="fixed"),
    arrays={"x_train": 1, "x_val": 1, "eps_val": 0}, options=("optimizer", "val_noise"), reals=("lr",),
    ints={"batch_size": 1, "max_epochs": 0, "patience": 0}, objects=_EST_OBJ,
    legal=[("eps_val", "none")], bases={"eps_val": _rows(3, 2, 11)},
    custom=[("lr", "negative", lambda c: -1e-3, "option", "error"),
            ("lr", "zero", lambda c: 0.0, "option", "error"),
            ("callback", "not callable", lambda c: "print", "type", "error"),
            ("callback", "a number", lambda c: 1, "type", "error")])

# --- report figures and snapshots, companion settings
from refvae.tools import companion as _companion  # noqa: E402
from refvae.tools.report import figures as _figures, snapshots as _snapshots  # noqa: E402
_HD_AGG = lazy(lambda c: prior_mixtures.AggregatedPosterior.from_model(c.model(D=4), c.x(6)))
TABLE["tools.report.figures.hole_decodes"] = Entry(
    b(_figures.hole_decodes, model=lazy(lambda c: c.model(D=4)), aggregated=_HD_AGG, rng=R, n=2,
      tau=0.5, x_ref=None, x_data=None, n_importance=2, n_draws=40),
    objects=("model", "aggregated", "rng"), ints={"n": 2, "n_importance": 2, "n_draws": 2},
    reals=("tau",), arrays={"x_ref": 1, "x_data": 1}, legal=[("x_ref", "none"), ("x_data", "none")],
    bases={"x_ref": _rows(6, 4), "x_data": _rows(3, 4, 1)},
    custom=[("tau", "one", lambda c: 1.0, "option", "error"),
            ("tau", "zero", lambda c: 0.0, "option", "error")])
TABLE["tools.report.figures.hole_regions"] = Entry(
    b(_figures.hole_regions, log_p=np.zeros((3, 3)), log_ratio=np.zeros((3, 3)), cell=0.1,
      taus=(0.1,), hpd=-1.0),
    arrays={"log_p": 1, "log_ratio": 1}, reals=("cell", "hpd"),
    shape_kinds=("extra", "missing", "mismatch"),
    legal=[("log_p", "neginf"), ("log_ratio", "neginf"), ("log_ratio", "posinf"),
           ("hpd", "neginf")],
    custom=[("cell", "zero", lambda c: 0.0, "option", "error"),
            ("taus", "negative", lambda c: (-0.1,), "option", "error"),
            ("taus", "empty", lambda c: (), "shape", "error")])
TABLE["tools.report.snapshots.Snapshots"] = Entry(
    b(_snapshots.Snapshots, x=lazy(lambda c: c.x(6)), epochs=(1, 2), grid_n=5, box=None, seed=0),
    arrays={"x": None}, ints={"grid_n": 2, "seed": 0}, legal=[("box", "none")],
    custom=[("epochs", "zero", lambda c: (0,), "option", "error"),
            ("epochs", "str", lambda c: "1", "type", "error"),
            ("box", "reversed", lambda c: ((1.0, 0.0), (0.0, 1.0)), "option", "error"),
            ("box", "NaN", lambda c: ((math.nan, 1.0), (0.0, 1.0)), "non-finite", "error")])
TABLE["tools.companion.Setting"] = ex(RECORD)
TABLE["tools.companion.apply"] = Entry(
    b(_companion.apply, profile=_TINY), objects=("profile",),
    custom=[("profile", "lr NaN", lambda c: dataclasses.replace(_TINY, lr=math.nan), "non-finite",
             "error")],
    label={"profile": r"profile|lr|no field"})

# --- io
_PARAMS = {"w": np.zeros((2, 3))}
TABLE["io.save_params"] = Entry(
    b(io.save_params, directory=lazy(lambda c: c.fresh("io")), params=_PARAMS, config={"a": 1}),
    paths={"directory": "outdir"}, objects=("params", "config"),
    custom=[("params", "NaN", lambda c: {"w": np.full(2, np.nan)}, "non-finite", "error"),
            ("params", "str values", lambda c: {"w": "abc"}, "type", "error"),
            ("params", "object array", lambda c: {"w": np.array([{}, 1], dtype=object)}, "type",
             "error"),
            ("params", "non-str keys", lambda c: {1: np.zeros(2)}, "type", "error"),
            ("config", "not JSON", lambda c: {"a": object()}, "type", "error"),
            ("config", "NaN value", lambda c: {"a": math.nan}, "non-finite", "error"),
            ("config", "list", lambda c: [1, 2], "type", "error")],
    label={"directory": r"directory|a-regular-file"})


def _saved_io(c):
    d = c.fresh("io")
    io.save_params(d, _PARAMS, {"a": 1})
    return d


TABLE["io.load_params"] = Entry(
    b(io.load_params, directory=lazy(_saved_io), expected_keys_shapes=None),
    paths={"directory": "dir"}, legal=[("expected_keys_shapes", "none")],
    custom=[("expected_keys_shapes", "other key", lambda c: {"v": (2, 3)}, "shape", "error"),
            ("expected_keys_shapes", "other shape", lambda c: {"w": (3, 2)}, "shape", "error"),
            ("expected_keys_shapes", "str", lambda c: "w", "type", "error")],
    label={"directory": r"directory|does-not-exist|a-regular-file|a-directory|params",
           "expected_keys_shapes": r"expected_keys_shapes|\bw\b|\bv\b"})



def _hold_lock(directory, command="refvae"):
    with provenance.DirectoryLock(directory, command=command):
        return directory


TABLE["tools.provenance.DirectoryInUseError"] = ex(RECORD)
TABLE["tools.provenance.DirectoryLock"] = Entry(
    b(_hold_lock, directory=lazy(lambda c: c.adir()), command="refvae"),
    custom=[("directory", "a file", lambda c: c.afile(), "file", "error"),
            ("directory", "inside a file", lambda c: os.path.join(c.afile(), "sub"), "file", "error"),
            ("directory", "None", lambda c: None, "type", "error"),
            ("command", "None", lambda c: None, "type", "error")],
    label={"directory": r"directory|a-regular-file"})
TABLE["io.pid_alive"] = Entry(b(io.pid_alive, pid=os.getpid()),
                              custom=[("pid", "None", lambda c: None, "type", "error"),
                                      ("pid", "str", lambda c: "1", "type", "error"),
                                      ("pid", "bool", lambda c: True, "type", "error"),
                                      ("pid", "float", lambda c: 1.5, "type", "error"),
                                      ("pid", "zero", lambda c: 0, "option", "error"),
                                      ("pid", "negative", lambda c: -1, "option", "error")])
TABLE["io.remove_stale_temporaries"] = Entry(
    b(io.remove_stale_temporaries, directory=lazy(lambda c: c.adir())),
    paths={"directory": "dir"},
    custom=[("force", "str", lambda c: "yes", "type", "error")],
    label={"directory": r"directory|a-regular-file|does-not-exist"})

# --- data
TABLE["data.load_digits_split"] = ex(NOARGS)
TABLE["data.synthetic_digits"] = Entry(
    b(data.synthetic_digits, n=5, rng=R, num_vals=17, side=8, n_prototypes=3),
    ints={"n": 1, "num_vals": 2, "side": 1, "n_prototypes": 1}, objects=("rng",),
    custom=[("n", "huge", lambda c: 10 ** 15, "resources", "error")])
TABLE["data.synthetic_split"] = Entry(
    b(data.synthetic_split, rng=R, n_train=5, n_val=3, n_test=2, num_vals=17, side=8, n_prototypes=3),
    ints={"n_train": 1, "n_val": 0, "n_test": 0, "num_vals": 2, "side": 1, "n_prototypes": 1},
    objects=("rng",))

# --- gradcheck
_GF = lambda a: np.sum(a ** 2)  # noqa: E731


def _gvjp(g, a):
    return {"a": 2.0 * g * a}


_GARGS = {"a": np.array([0.5, -1.0])}
for _name in ("check_vjp", "check_vjp_complex", "check_elementwise"):
    _kw = dict(f=lambda p: p["a"] ** 2, vjp=lambda g, p: {"a": 2.0 * g * p["a"]}, args=dict(_GARGS),
               rng=R)
    _ints, _opts, _reals = {}, (), ("rtol",)
    if _name == "check_vjp":
        _kw["method"] = "central"
        _opts = ("method",)
        _ints = {"n_directions": 1}
        _reals = ("rtol", "step")
    if _name == "check_elementwise":
        _ints = {"max_entries": 1}
        _kw["verbose"] = False
        _reals = ("rtol", "step")
    TABLE[f"gradcheck.{_name}"] = Entry(
        b(getattr(gradcheck, _name), **_kw), objects=("f", "vjp", "rng"), options=_opts, ints=_ints,
        legal=[("rtol", "none")] + ([] if _name == "check_vjp_complex" else [("step", "none")]),
        reals=_reals + (("step",) if _name == "check_vjp_complex" else ()),
        custom=[("wrt", "unknown", lambda c: "b", "option", "error"),
                ("args", "NaN", lambda c: {"a": np.array([np.nan, 1.0])}, "non-finite", "error"),
                ("args", "empty", lambda c: {}, "shape", "error"),
                ("args", "str", lambda c: "a", "type", "error"),
                ("rtol", "negative", lambda c: -1e-6, "option", "error"),
                ("step", "negative", lambda c: -1e-6, "option", "error")],
        label={"wrt": r"wrt|\bb\b", "args": r"args|\ba\b"})
TABLE["gradcheck.GradcheckReport"] = ex(RECORD)
TABLE["gradcheck.GradcheckEntry"] = ex(RECORD)
TABLE["gradcheck.GradcheckError"] = ex(RECORD)


# --- provenance
def _enter_limit_threads(n):
    with provenance.limit_threads(n):
        return n


TABLE["tools.provenance.InterruptGuard"] = ex(NOARGS)
TABLE["tools.provenance.Interrupted"] = ex(RECORD)
TABLE["tools.provenance.run_identity"] = ex(NOARGS)
TABLE["tools.provenance.interrupt_exit_code"] = Entry(b(provenance.interrupt_exit_code, signal_name="SIGINT"),
                                                options=("signal_name",))
TABLE["tools.provenance.interrupt_signal"] = Entry(
    b(provenance.interrupt_signal, exc=KeyboardInterrupt(), guard=None), legal=[("guard", "none")],
    custom=[("exc", "None", lambda c: None, "type", "ok"),
            ("exc", "str", lambda c: "SIGINT", "type", "error")])
TABLE["tools.provenance.provenance"] = ex(NOARGS)
TABLE["tools.provenance.git_revision"] = ex(NOARGS)
TABLE["tools.provenance.cpu_model"] = ex(NOARGS)
TABLE["tools.provenance.limit_threads"] = Entry(b(_enter_limit_threads, n=1), ints={"n": 1},
                                          # documented: more than NUMBA_NUM_THREADS is clamped
                                          custom=[("n", "above NUMBA_NUM_THREADS", lambda c: 10 ** 6,
                                                   "option", "ok")])
TABLE["tools.provenance.package_version"] = Entry(b(provenance.package_version, name="numpy"),
                                            custom=[("name", "None", lambda c: None, "type", "error"),
                                                    ("name", "int", lambda c: 3, "type", "error")])

# --- the course (docs/course): its grader and chapter runner
from refvae.tools import course as _course  # noqa: E402

TABLE["tools.course.grade"] = Entry(
    lambda ctx: (_course.grade, {"exercise": "9.1", "fn": lambda g, x: (g * (np.sin(x) + x * np.cos(x)),),
                                 "verbose": False}),   # (b() takes fn itself: a dict builder here)
    options=("exercise",), objects=("fn",))
TABLE["tools.course.run_chapter"] = Entry(b(_course.run_chapter, chapter=2, echo=False), ints={"chapter": 1})

# --- tolerances
TABLE["tolerances.Tolerance"] = ex(RECORD + " (the table of constants in refvae.tolerances)")
for _kind in ("RelAbs", "Rounding", "Sigma", "PValue", "Distance", "EstimateMultiple"):
    TABLE[f"tolerances.{_kind}"] = ex(RECORD + " (one kind of entry of the table in refvae.tolerances)")
TABLE["tolerances.tolerance"] = Entry(b(tolerances.tolerance, name="verify_golden"), options=("name",),
                                      errors=(ValueError, TypeError, KeyError),
                                      label={"name": r"name|tolerance"})

# --- the command line (functions)
from refvae.tools import cli  # noqa: E402

TABLE["tools.cli.main"] = Entry(b(cli.main, argv=["--version"]),
                          custom=[("argv", "str", lambda c: "validate", "type", "error"),
                                  ("argv", "int", lambda c: 3, "type", "error"),
                                  ("argv", "list of ints", lambda c: [1, 2], "type", "error")])
for _k in ("tools.cli.build_parser", "tools.cli.Subcommand", "tools.cli.subcommands", "tools.cli_stats.options",
           "tools.cli_stats.run", "tools.cli_verify.golden_options", "tools.cli_verify.verify_options",
           "tools.cli_verify.run_golden", "tools.cli_verify.run_verify"):
    TABLE[_k] = ex(ARGPARSE)

# write_report: no valid report to start from at tiny cost (a report comes out of run_validation);
# only the type of ``report`` is perturbed
TABLE["priors.register_prior"] = Entry(
    b(priors.register_prior, cls=priors.StandardPrior), baseline=False,
    custom=[("cls", "None", lambda c: None, "type", "error"),
            ("cls", "str", lambda c: "standard", "type", "error"),
            ("cls", "instance", lambda c: priors.StandardPrior(2), "type", "error"),
            ("cls", "not a Prior", lambda c: dict, "type", "error")])
TABLE["tools.report.writing.write_report"] = Entry(
    b(report.write_report, report=None, out=lazy(lambda c: c.fresh("rep"))), baseline=False,
    custom=[("report", "None", lambda c: None, "type", "error"),
            ("report", "str", lambda c: "report", "type", "error"),
            ("report", "empty dict", lambda c: {}, "shape", "error")])

# ---------------------------------------------------------------------- completeness at import time
_PUBLIC = public_callables()
_MISSING = sorted(set(_PUBLIC) - set(TABLE))
_STALE = sorted(k for k, e in TABLE.items() if k not in _PUBLIC and not (e and e.extra))
if _MISSING or _STALE:
    raise RuntimeError(f"tests/test_hostile_sweep.py: public callables without an entry in TABLE: "
                       f"{_MISSING}; entries that are not public callables: {_STALE}")


# =========================================================================== the cases

ARRAY_KINDS = {"extra": "shape", "missing": "shape", "mismatch": "shape", "empty": "shape",
               "scalar": "shape", "nan": "non-finite", "posinf": "non-finite",
               "neginf": "non-finite", "complex": "type", "str": "type", "none": "type",
               "ragged list": "type", "object array": "type"}
INT_KINDS = {"below minimum": "option", "negative": "option", "bool": "type", "float": "type",
             "nan": "non-finite", "inf": "non-finite", "str": "type", "none": "type",
             "numpy int": "type"}
REAL_KINDS = {"nan": "non-finite", "posinf": "non-finite", "neginf": "non-finite",
              "complex": "type", "bool": "type", "str": "type", "none": "type"}
OPTION_KINDS = {"unknown": "option", "none": "type", "int": "type"}
OBJECT_KINDS = {"none": "type", "str": "type"}


@dataclasses.dataclass(frozen=True)
class Case:
    key: str
    arg: str
    kind: str
    cls: str
    expect: str          # "error" or "ok"
    make: object = None  # make(ctx, base) -> value

    @property
    def id(self):
        return f"{self.key}:{self.arg}={self.kind.replace(' ', '_')}"


def _array_value(base, kind, axis):
    a = np.asarray(base, dtype=np.float64)
    if kind == "extra":
        return a[..., None]
    if kind == "missing":
        return a[0] if a.ndim else a.reshape(1, 1)
    if kind == "scalar":
        return np.float64(a.flat[0])
    if kind == "mismatch":
        return np.concatenate([a, a.take([0], axis=axis)], axis=axis)
    if kind == "empty":
        return a.take([], axis=0) if a.ndim else np.zeros(0)
    if kind in ("nan", "posinf", "neginf"):
        b = a.copy()
        b.flat[-1] = {"nan": np.nan, "posinf": np.inf, "neginf": -np.inf}[kind]
        return b
    if kind == "complex":
        return a + 0.5j
    if kind == "ragged list":      # lists of lists of unequal lengths
        lst = a.tolist() if a.ndim else [float(a)]
        if a.ndim >= 2:
            lst[0] = lst[0][:-1]
        else:
            lst = [lst[:1]] + lst[1:] + [1.0]
        return lst
    if kind == "object array":     # what a pickled array holds
        out = np.empty(a.shape, dtype=object)
        out[...] = a
        return out
    return {"str": "abc", "none": None}[kind]


def _int_value(minimum, kind):
    return {"below minimum": minimum - 1, "negative": -1, "bool": True, "float": 2.5,
            "nan": math.nan, "inf": math.inf, "str": "3", "none": None}[kind]


def _real_value(kind):
    return {"nan": math.nan, "posinf": math.inf, "neginf": -math.inf, "complex": 1.0 + 1.0j,
            "bool": True, "str": "0.5", "none": None}[kind]


def build_cases():
    cases = []
    for key, e in TABLE.items():
        if e.exempt:
            continue
        legal = set(e.legal)

        def add(arg, kind, cls, make):
            cases.append(Case(key, arg, kind, cls, "ok" if (arg, kind) in legal else "error", make))

        for arg, axis in e.arrays.items():
            for kind, cls in ARRAY_KINDS.items():
                if cls == "shape" and kind not in e.shape_kinds:
                    continue
                if kind == "mismatch" and axis is None:
                    continue
                if kind == "str" and arg in e.str_paths:
                    cls = "file"   # a string is read as a path: a nonexistent file
                add(arg, kind, cls, lambda c, base, k=kind, ax=axis: _array_value(base, k, ax))
        for arg, minimum in e.ints.items():
            for kind, cls in INT_KINDS.items():
                if kind == "negative" and minimum - 1 <= -1:
                    continue
                if kind == "numpy int":   # the valid value as a NumPy integer: legal
                    cases.append(Case(key, arg, kind, cls, "ok",
                                      lambda c, base, m=minimum: np.int64(m + 1 if base is None
                                                                          else base)))
                    continue
                add(arg, kind, cls, lambda c, base, k=kind, m=minimum: _int_value(m, k))
        for arg in e.reals:
            for kind, cls in REAL_KINDS.items():
                add(arg, kind, cls, lambda c, base, k=kind: _real_value(k))
        for arg in e.options:
            for kind, cls in OPTION_KINDS.items():
                add(arg, kind, cls, lambda c, base, k=kind: {"unknown": "no-such-option",
                                                             "none": None, "int": 3}[k])
        for arg, want in e.paths.items():
            if want == "outdir":   # an output directory that does not exist yet is created
                cases.append(Case(key, arg, "nonexistent", "file", "ok",
                                  lambda c, base: c.fresh("new")))
            else:
                add(arg, "nonexistent", "file", lambda c, base: c.missing())
            if want == "file":
                add(arg, "a directory", "file", lambda c, base: c.adir())
            else:
                add(arg, "a file", "file", lambda c, base: c.afile())
            add(arg, "none", "type", lambda c, base: None)
        for arg in e.objects:
            for kind, cls in OBJECT_KINDS.items():
                add(arg, kind, cls, lambda c, base, k=kind: {"none": None, "str": "abc"}[k])
        for arg, kind, make, cls, expect in e.custom:
            cases.append(Case(key, arg, kind, cls, expect, lambda c, base, f=make: f(c)))
    return cases


CASES = build_cases()


_SWEPT = set()


def cases_of(cls, expect):
    sel = [c for c in CASES if c.cls == cls and c.expect == expect]
    assert sel, (cls, expect)
    _SWEPT.add((cls, expect))
    return pytest.mark.parametrize("case", sel, ids=[c.id for c in sel])


# =========================================================================== running a case

class _Reached(BaseException):
    """A guarded expensive step was reached: the perturbed value was accepted."""


class _Hang(BaseException):
    """The case ran past its time limit."""


@contextlib.contextmanager
def _guards(guards):
    saved = []
    try:
        for modname, attr in guards:
            mod = importlib.import_module(modname)
            saved.append((mod, attr, getattr(mod, attr)))

            def sentinel(*a, _where=f"{modname}.{attr}", **k):
                raise _Reached(_where)
            setattr(mod, attr, sentinel)
        yield
    finally:
        for mod, attr, old in saved:
            setattr(mod, attr, old)


@contextlib.contextmanager
def _time_limit(seconds):
    if not hasattr(signal, "setitimer") or __import__("threading").current_thread() \
            is not __import__("threading").main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Hang(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def has_nan(obj, depth=0):
    """True if a NaN hides in ``obj`` (arrays, numbers, dicts, sequences, dataclasses)."""
    if depth > 6:
        return False
    if isinstance(obj, np.ndarray):
        return obj.dtype.kind in "fc" and bool(np.isnan(obj).any())
    if isinstance(obj, (float, complex, np.floating, np.complexfloating)):
        return bool(np.isnan(obj))
    if isinstance(obj, dict):
        return any(has_nan(v, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(has_nan(v, depth + 1) for v in obj[:1000])
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return any(has_nan(getattr(obj, f.name), depth + 1) for f in dataclasses.fields(obj))
    return False


_BASELINE = {}


def _call(entry, kw, limit=60):
    """Call the entry's callable with ``kw`` replacing valid arguments; ``limit`` seconds at most
    (the valid call first compiles the Numba kernels, which takes long on a loaded machine)."""
    fn, base_kw = entry.build(CTX)
    base_kw.update(kw)
    with _guards(entry.guards), _time_limit(limit):
        return fn(**base_kw)


def _declared_args(entry):
    names = set(entry.arrays) | set(entry.ints) | set(entry.reals) | set(entry.options)
    names |= set(entry.paths) | set(entry.objects) | {a for a, _ in entry.legal}
    return names | {c[0] for c in entry.custom}


def _check_signature(key, entry):
    """None if every argument the table perturbs is a parameter of the callable (a misspelt name
    would make every case 'pass' with Python's own TypeError 'unexpected keyword argument'), else
    what is wrong."""
    fn, _ = entry.build(CTX)
    target = fn.__init__ if isinstance(fn, type) else fn
    params = inspect.signature(target).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(_declared_args(entry) - set(params))
    return f"the table perturbs {unknown}, which {key} does not take" if unknown else None


def _baseline(key):
    entry = TABLE[key]
    if ("sig", key) not in _BASELINE:
        _BASELINE[("sig", key)] = _check_signature(key, entry)
    if _BASELINE[("sig", key)]:
        _fail(f"BASELINE {key}: {_BASELINE[('sig', key)]}")
    if not entry.baseline:
        return
    if key not in _BASELINE:
        try:
            _call(entry, {}, limit=300)
            _BASELINE[key] = None
        except _Reached:
            _BASELINE[key] = None
        except BaseException as exc:  # noqa: BLE001 - reported below
            _BASELINE[key] = f"{type(exc).__name__}: {exc}"
    if _BASELINE[key] is not None:
        _fail(f"BASELINE {key}: the valid call failed: {_BASELINE[key]}"[:600])


def _word(name):
    return rf"(?<![\w-]){re.escape(name)}(?!\w)"


def _names(entry, case, value):
    pat = entry.label.get(case.arg) or _word(case.arg)
    if case.kind == "mismatch" or (case.cls == "shape" and entry.shape_kinds == _BC):
        # a mismatch is between two arguments (with broadcasting, an extra axis changes the
        # output shape that the cotangent must match): naming either will do
        pat = "|".join([pat] + [entry.label.get(a) or _word(a) for a in entry.arrays])
    if case.cls == "file" and isinstance(value, str) and value:
        pat += "|" + re.escape(os.path.basename(value.rstrip(os.sep).split(":")[0]) or value)
    return pat


def run_case(case):
    entry = TABLE[case.key]
    _baseline(case.key)
    _, base_kw = entry.build(CTX)
    base = base_kw.get(case.arg)
    if base is None:
        base = entry.bases.get(case.arg)
    value = case.make(CTX, base)
    what = f"{case.key}({case.arg}={_short(value)})"
    try:
        result = _call(entry, {case.arg: value})
    except _Reached as exc:
        if case.expect == "ok":
            return   # a legal value: the run went on, as it should
        _fail(f"ACCEPTED {what}: no error; the run went on to {exc}")
    except _Hang as exc:
        _fail(f"HANG {what}: {exc}")
    except Exception as exc:  # noqa: BLE001 - classified below
        msg = " ".join(str(exc).split())
        if case.expect == "ok":
            _fail(f"RAISED {what}: a legal value raised {type(exc).__name__}: {msg}"[:800])
        allowed = entry.errors + ((OSError,) if case.cls == "file" else ())
        if not isinstance(exc, allowed):
            _fail(f"WRONG TYPE {what}: {type(exc).__name__}: {msg}"[:800])
        pat = _names(entry, case, value)
        if not re.search(pat, msg):
            _fail(f"UNNAMED {what}: {type(exc).__name__} does not name {case.arg!r}: "
                        f"{msg}"[:800])
        return
    if case.expect == "error":
        _fail(f"ACCEPTED {what}: no error" + ("; the result has NaN" if has_nan(result) else ""))
    if has_nan(result):
        _fail(f"NAN {what}: a legal value gave NaN")


def _fail(msg):
    """Fail the case with ``msg`` only (no traceback: hundreds of failing cases are expected today,
    and formatting each traceback of this large module costs ~0.2 s)."""
    pytest.fail(msg, pytrace=False)


def _short(v):
    if isinstance(v, np.ndarray):
        return f"array{v.shape}" + ("" if v.dtype == np.float64 else f"[{v.dtype}]")
    r = repr(v)
    return r if len(r) < 60 else r[:57] + "..."


# =========================================================================== function tests

@pytest.mark.hostile("shape", "named error")
@cases_of("shape", "error")
def test_shape_errors(case):
    """Wrong shapes (an extra/missing axis, a mismatched length, an empty axis) of every function."""
    run_case(case)


@pytest.mark.hostile("non-finite", "named error")
@cases_of("non-finite", "error")
def test_nonfinite_errors(case):
    """NaN, +inf, -inf in arrays, sizes and real scalars of every public function."""
    run_case(case)


@pytest.mark.hostile("type", "named error")
@cases_of("type", "error")
def test_type_errors(case):
    """Complex, str, None, bool and float where arrays, sizes, reals, options or objects are expected."""
    run_case(case)


@pytest.mark.hostile("option", "named error")
@cases_of("option", "error")
def test_option_errors(case):
    """Unknown option strings, zero/negative sizes and meaningless settings of every public function."""
    run_case(case)


@pytest.mark.hostile("file", "named error")
@cases_of("file", "error")
def test_file_errors(case):
    """Nonexistent paths, directories for files, files for directories, hostile file contents."""
    run_case(case)


@pytest.mark.hostile("resources", "named error")
@cases_of("resources", "error")
def test_resource_errors(case):
    """Sizes far beyond memory (1e12-1e15 rows, a million threads) are refused up front."""
    run_case(case)


@pytest.mark.hostile("shape", "legal result")
@cases_of("shape", "ok")
def test_legal_shapes(case):
    """Legal shape variations (broadcasting, any number of dimensions) return a result without NaN."""
    run_case(case)


@pytest.mark.hostile("non-finite", "legal result")
@cases_of("non-finite", "ok")
def test_legal_nonfinite(case):
    """Legal infinities (-inf log-weights, +-inf inputs of the primitives) give a result without NaN."""
    run_case(case)


@pytest.mark.hostile("type", "legal result")
@cases_of("type", "ok")
def test_legal_types(case):
    """Legal types (NumPy integers, None for optional arguments, complex-step input) give no NaN."""
    run_case(case)


@pytest.mark.hostile("option", "legal result")
@cases_of("option", "ok")
def test_legal_options(case):
    """Legal edge settings (one query, more threads than cores, a key for a .npy) give no NaN."""
    run_case(case)


@pytest.mark.hostile("file", "legal result")
@cases_of("file", "ok")
def test_legal_files(case):
    """Output directories that do not exist yet are created; the call returns without NaN."""
    run_case(case)


# every generated case is run by one of the functions above
_UNSWEPT = {(c.cls, c.expect) for c in CASES} - _SWEPT
if _UNSWEPT:
    raise RuntimeError(f"tests/test_hostile_sweep.py: no test function runs the cases of {_UNSWEPT}")


# --------------------------------------------------------------- hypothesis: random bad shapes

_HYP = [("kernels.mixture.mixture_log_prob", "z", (3, 2), (0,)),
        ("kernels.mixture.mixture_log_prob", "means", (4, 2), ()),
        ("kernels.mixture.mixture_log_prob", "log_vars", (4, 2), ()),
        ("kernels.mixture.mixture_log_prob", "log_weights", (4,), ()),
        ("layers.linear_forward", "x", (3, 4), (0,)),
        ("layers.linear_forward", "W", (4, 2), ()),
        ("likelihoods.bernoulli_log_prob", "logits", (3, 4), ()),
        ("likelihoods.gaussian_log_prob", "mean", (3, 4), ()),
        ("estimators.encode_all", "x", (5, 4), (0,)),
        ("tools.distributed.log_qz", "means", (5, 2), (0,))]


@pytest.mark.hostile("shape", "named error")
@pytest.mark.parametrize("key,arg,shape,free", _HYP, ids=[f"{k}:{a}" for k, a, _, _ in _HYP])
@settings(deadline=None, max_examples=25)
@given(data=st.data())
def test_random_bad_shapes(key, arg, shape, free, data):
    """Random invalid shapes (any rank 0-3, any lengths 0-4) of one argument give a named ValueError."""
    bad = data.draw(bad_shapes(shape, free), label="shape")
    value = np.ones(bad)
    entry = TABLE[key]
    try:
        _call(entry, {arg: value})
    except ValueError as exc:
        # a bad length of one argument may be reported as a mismatch with another one
        names = "|".join(_word(a) for a in [arg] + list(entry.arrays))
        assert re.search(names, str(exc)), f"UNNAMED {key}({arg}=array{bad}): {exc}"
        return
    except Exception as exc:  # noqa: BLE001
        _fail(f"WRONG TYPE {key}({arg}=array{bad}): {type(exc).__name__}: {exc}"[:800])
    _fail(f"ACCEPTED {key}({arg}=array{bad}): no error")


# =========================================================================== the command line

from refvae.tools.cli import main  # noqa: E402


def _write(path, text, mode="w"):
    with open(path, mode) as fh:
        fh.write(text)
    return path


def _model_copy(name, config=None, drop=None, params=None):
    """A copy of the saved tiny model with config.json replaced by ``config`` (text), or the file
    ``drop`` removed, or params.npz replaced by ``params`` (arrays for np.savez)."""
    d = os.path.join(CTX.tmp, "models", name)
    if not os.path.isdir(d):
        shutil.copytree(CTX.saved_model(), d)
        if config is not None:
            _write(os.path.join(d, "config.json"), config)
        if drop is not None:
            os.remove(os.path.join(d, drop))
        if params is not None:
            np.savez(os.path.join(d, "params.npz"), **params)
    return d


def _npy(name, arr):
    p = os.path.join(CTX.tmp, "data", name)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    if not os.path.exists(p):
        if name.endswith(".npz"):
            np.savez(p, **arr)
        else:
            np.save(p, arr, allow_pickle=True)
    return p


DEEP = "[" * 200000 + "]" * 200000          #: JSON nested far beyond Python's recursion limit
DEEP_OBJ = '{"a": ' * 200000 + "1" + "}" * 200000

F = SimpleNamespace(
    model=lambda: CTX.saved_model(),
    data=lambda: CTX.npy(),
    out=lambda: CTX.fresh("cli-out"),
    file=lambda: CTX.afile(),
    dir=lambda: CTX.adir(),
    missing=lambda: CTX.missing(),
    cases=lambda: CTX.cases_copy(),
)
IMPL = "refvae.tools.verify:RefvaeAdapter"


def _stats(*extra):
    return lambda: ["stats", "--model", F.model(), "--data", F.data(), *extra]


def _train(*extra, out=True):
    return lambda: ["train", "--prior", "standard", "--latent-dim", "2",
                    *(["--out", F.out()] if out else []), "--quiet", *extra]


def _validate(*extra):
    return lambda: ["validate", "--profile", "tiny", "--no-plots", "--quiet", "--out", F.out(), *extra]


def _verify(*extra):
    return lambda: ["verify", "--impl", IMPL, "--cases", F.cases(), "--checks", "golden", "--quiet",
                    *extra]


#: (id, argv(), flag that the one line must name)
CLI_FLAG_CASES = [
    # validate
    ("validate-profile-empty", _validate("--profile", ""), "--profile"),
    ("validate-max-epochs-zero", _validate("--max-epochs", "0"), "--max-epochs"),
    ("validate-max-epochs-nan", _validate("--max-epochs", "nan"), "--max-epochs"),
    ("validate-max-epochs-empty", _validate("--max-epochs", ""), "--max-epochs"),
    ("validate-max-epochs-float", _validate("--max-epochs", "1e3"), "--max-epochs"),
    ("validate-seed-negative", _validate("--seed", "-1"), "--seed"),
    ("validate-seed-inf", _validate("--seed", "inf"), "--seed"),
    ("validate-threads-zero", _validate("--threads", "0"), "--threads"),
    ("validate-threads-huge", _validate("--threads", "1000000"), "--threads"),
    ("validate-priors-empty", _validate("--priors", ""), "--priors"),
    ("validate-priors-commas", _validate("--priors", ",,"), "--priors"),
    ("validate-priors-unknown", _validate("--priors", "standard,bogus"), "--priors"),
    ("validate-out-empty", lambda: ["validate", "--profile", "tiny", "--quiet", "--out", ""], "--out"),
    ("validate-out-is-a-file", lambda: ["validate", "--profile", "tiny", "--quiet", "--out",
                                        F.file()], "--out"),
    ("validate-out-inside-a-file", lambda: ["validate", "--profile", "tiny", "--quiet", "--out",
                                            os.path.join(F.file(), "r")], "--out"),
    # train
    ("train-latent-dim-zero", lambda: ["train", "--prior", "standard", "--latent-dim", "0", "--out",
                                       F.out()], "--latent-dim"),
    ("train-latent-dim-negative", lambda: ["train", "--prior", "standard", "--latent-dim", "-2",
                                           "--out", F.out()], "--latent-dim"),
    ("train-latent-dim-nan", lambda: ["train", "--prior", "standard", "--latent-dim", "nan",
                                      "--out", F.out()], "--latent-dim"),
    ("train-latent-dim-huge", lambda: ["train", "--prior", "standard", "--latent-dim", "1000000000",
                                       "--out", F.out()], "--latent-dim"),
    ("train-prior-empty", lambda: ["train", "--prior", "", "--latent-dim", "2", "--out", F.out()],
     "--prior"),
    ("train-prior-two", lambda: ["train", "--prior", "mog,vamp", "--latent-dim", "2", "--out",
                                 F.out()], "--prior"),
    ("train-prior-unknown", lambda: ["train", "--prior", "bogus", "--latent-dim", "2", "--out",
                                     F.out()], "--prior"),
    ("train-max-epochs-negative", _train("--max-epochs", "-1"), "--max-epochs"),
    ("train-max-epochs-inf", _train("--max-epochs", "inf"), "--max-epochs"),
    ("train-seed-negative", _train("--seed", "-5"), "--seed"),
    ("train-seed-float", _train("--seed", "1e3"), "--seed"),
    ("train-threads-zero", _train("--threads", "0"), "--threads"),
    ("train-threads-huge", _train("--threads", "1000000"), "--threads"),
    ("train-out-missing", _train(out=False), "--out"),
    ("train-out-empty", lambda: ["train", "--prior", "standard", "--latent-dim", "2", "--out", ""],
     "--out"),
    ("train-out-is-a-file", lambda: ["train", "--prior", "standard", "--latent-dim", "2", "--out",
                                     F.file()], "--out"),
    ("train-data-unknown", _train("--data", "mnist"), "--data"),
    ("train-data-empty", _train("--data", ""), "--data"),
    # gradcheck
    ("gradcheck-prior-empty", lambda: ["gradcheck", "--prior", ""], "--prior"),
    ("gradcheck-prior-unknown", lambda: ["gradcheck", "--prior", "bogus"], "--prior"),
    ("gradcheck-likelihood-unknown", lambda: ["gradcheck", "--likelihood", "poisson"], "--likelihood"),
    ("gradcheck-likelihood-empty", lambda: ["gradcheck", "--likelihood", ""], "--likelihood"),
    ("gradcheck-activation-unknown", lambda: ["gradcheck", "--activation", "swish"], "--activation"),
    ("gradcheck-seed-negative", lambda: ["gradcheck", "--prior", "standard", "--seed", "-1"], "--seed"),
    ("gradcheck-seed-nan", lambda: ["gradcheck", "--seed", "nan"], "--seed"),
    ("gradcheck-threads-zero", lambda: ["gradcheck", "--prior", "standard", "--threads", "0"],
     "--threads"),
    ("gradcheck-threads-huge", lambda: ["gradcheck", "--prior", "standard", "--threads", "1000000"],
     "--threads"),
    # stats
    ("stats-model-missing", lambda: ["stats", "--model", F.missing(), "--data", F.data()], "--model"),
    ("stats-model-is-a-file", lambda: ["stats", "--model", F.file(), "--data", F.data()], "--model"),
    ("stats-model-empty-dir", lambda: ["stats", "--model", F.dir(), "--data", F.data()], "--model"),
    ("stats-model-empty-string", lambda: ["stats", "--model", "", "--data", F.data()], "--model"),
    ("stats-data-missing", lambda: ["stats", "--model", F.model(), "--data", F.missing()], "--data"),
    ("stats-data-is-a-dir", lambda: ["stats", "--model", F.model(), "--data", F.dir()], "--data"),
    ("stats-data-empty-string", lambda: ["stats", "--model", F.model(), "--data", ""], "--data"),
    ("stats-samples-zero", _stats("--samples", "0"), "--samples"),
    ("stats-samples-nan", _stats("--samples", "nan"), "--samples"),
    ("stats-samples-huge", _stats("--samples", str(10 ** 15)), "--samples"),
    ("stats-samples-float", _stats("--samples", "1.5"), "--samples"),
    ("stats-queries-zero", _stats("--queries", "0"), "--queries"),
    ("stats-queries-huge", _stats("--queries", str(10 ** 15)), "--queries"),
    ("stats-holes-one", _stats("--holes", "1"), "--holes"),
    ("stats-holes-negative", _stats("--holes", "-5"), "--holes"),
    ("stats-holes-huge", _stats("--holes", str(10 ** 15)), "--holes"),
    ("stats-chunk-zero", _stats("--chunk", "0"), "--chunk"),
    ("stats-chunk-empty", _stats("--chunk", ""), "--chunk"),
    ("stats-seed-negative", _stats("--seed", "-1"), "--seed"),
    ("stats-threads-zero", _stats("--threads", "0"), "--threads"),
    ("stats-threads-huge", _stats("--threads", "1000000"), "--threads"),
    ("stats-connect-timeout-nan", _stats("--connect-timeout", "nan"), "--connect-timeout"),
    ("stats-connect-timeout-negative", _stats("--connect-timeout", "-1"), "--connect-timeout"),
    ("stats-connect-timeout-inf", _stats("--connect-timeout", "inf"), "--connect-timeout"),
    ("stats-scheduler-empty", _stats("--scheduler", ""), "--scheduler"),
    ("stats-out-is-a-dir", _stats("--out", F.dir()), "--out"),
    ("stats-out-empty", _stats("--out", ""), "--out"),
    ("stats-out-inside-a-file", lambda: ["stats", "--model", F.model(), "--data", F.data(), "--out",
                                         os.path.join(F.file(), "s.json")], "--out"),
    ("stats-key-unknown", _stats("--key", "nope"), "--key"),
    ("stats-write-components-is-a-file", lambda: ["stats", "--model", F.model(), "--data", F.data(),
                                                  "--write-components", F.file()],
     "--write-components"),
    ("stats-components-missing-log-vars", lambda: ["stats", "--model", F.model(), "--components",
                                                   _npy("onlymeans.npz", {"means": np.zeros((3, 2))})],
     "--components"),
    # golden
    ("golden-prior-unknown", lambda: ["golden", "--prior", "bogus", "--out", F.out()], "--prior"),
    ("golden-prior-empty", lambda: ["golden", "--prior", "", "--out", F.out()], "--prior"),
    ("golden-prior-commas", lambda: ["golden", "--prior", ",", "--out", F.out()], "--prior"),
    ("golden-likelihood-unknown", lambda: ["golden", "--likelihood", "poisson", "--out", F.out()],
     "--likelihood"),
    ("golden-seed-negative", lambda: ["golden", "--seed", "-1", "--out", F.out()], "--seed"),
    ("golden-seed-nan", lambda: ["golden", "--seed", "nan", "--out", F.out()], "--seed"),
    ("golden-out-missing", lambda: ["golden", "--prior", "standard"], "--out"),
    ("golden-out-empty", lambda: ["golden", "--prior", "standard", "--out", ""], "--out"),
    ("golden-out-is-a-file", lambda: ["golden", "--prior", "standard", "--out", F.file()], "--out"),
    ("golden-compare-missing", lambda: ["golden", "--prior", "standard", "--likelihood", "gaussian",
                                        "--compare", F.missing()], "--compare"),
    ("golden-compare-is-a-file", lambda: ["golden", "--prior", "standard", "--likelihood", "gaussian",
                                          "--compare", F.file()], "--compare"),
    ("golden-compare-empty-dir", lambda: ["golden", "--prior", "standard", "--likelihood", "gaussian",
                                          "--compare", F.dir()], "--compare"),
    # verify
    ("verify-impl-empty", lambda: ["verify", "--impl", "", "--checks", "golden"], "--impl"),
    ("verify-impl-no-colon", lambda: ["verify", "--impl", "refvae.tools.verify", "--checks", "golden"],
     "--impl"),
    ("verify-impl-unknown-module", lambda: ["verify", "--impl", "no_such_module_xyz:make"], "--impl"),
    ("verify-impl-missing-file", lambda: ["verify", "--impl", F.missing() + ".py:make"], "--impl"),
    ("verify-impl-not-callable", lambda: ["verify", "--impl", "refvae.tools.verify:PROFILES"], "--impl"),
    ("verify-cases-missing", _verify("--cases", "/nonexistent/cases"), "--cases"),
    ("verify-cases-is-a-file", lambda: ["verify", "--impl", IMPL, "--cases", F.file()], "--cases"),
    ("verify-case-unknown", _verify("--case", "bogus-case"), "--case"),
    ("verify-case-commas", _verify("--case", ",,"), "--case"),
    ("verify-profile-unknown", _verify("--profile", "float16"), "--profile"),
    ("verify-checks-unknown", _verify("--checks", "bogus"), "--checks"),
    ("verify-checks-empty", _verify("--checks", ""), "--checks"),
    ("verify-prior-checks-unknown", _verify("--prior-checks", "some"), "--prior-checks"),
    ("verify-seed-negative", _verify("--seed", "-1"), "--seed"),
    ("verify-seed-nan", _verify("--seed", "nan"), "--seed"),
    ("verify-json-is-a-dir", _verify("--json", F.dir()), "--json"),
    ("verify-json-inside-a-file", lambda: ["verify", "--impl", IMPL, "--cases", F.cases(), "--json",
                                           os.path.join(F.file(), "r.json")], "--json"),
    ("verify-no-checksums-with-a-value", _verify("--no-checksums=yes"), "--no-checksums"),
    ("verify-known-deviations-missing", _verify("--known-deviations", "/nonexistent/kd.json"),
     "--known-deviations"),
    ("verify-known-deviations-is-a-dir", lambda: ["verify", "--impl", IMPL, "--cases", F.cases(),
                                                  "--known-deviations", F.dir()],
     "--known-deviations"),
    # the top level
    ("unknown-subcommand", lambda: ["frobnicate"], "frobnicate"),
    ("unknown-flag", lambda: ["stats", "--model", F.model(), "--data", F.data(), "--bogus", "1"],
     "--bogus"),
]

#: (id, argv(), flag): hostile FILES given to a flag
CLI_FILE_CASES = [
    ("stats-model-config-is-a-list", lambda: ["stats", "--model", _model_copy("list", "[1, 2]"),
                                              "--data", F.data()], "--model"),
    ("stats-model-config-lacks-keys", lambda: ["stats", "--model", _model_copy("nokeys", '{"x_dim": 4}'),
                                               "--data", F.data()], "--model"),
    ("stats-model-config-deeply-nested", lambda: ["stats", "--model", _model_copy("deep", DEEP_OBJ),
                                                  "--data", F.data()], "--model"),
    ("stats-model-config-not-json", lambda: ["stats", "--model", _model_copy("notjson", "{oops"),
                                             "--data", F.data()], "--model"),
    ("stats-model-config-wrong-types", lambda: ["stats", "--model", _model_copy(
        "types", json.dumps({"x_dim": "four", "latent_dim": [2], "hidden": "3", "activation": 1,
                             "likelihood": None, "prior": {"a": 1}})), "--data", F.data()], "--model"),
    ("stats-model-config-huge-sizes", lambda: ["stats", "--model", _model_copy(
        "huge", json.dumps({"x_dim": 10 ** 9, "latent_dim": 10 ** 9, "hidden": [10 ** 9],
                            "activation": "tanh", "likelihood": "gaussian", "prior": "standard"})),
        "--data", F.data()], "--model"),
    ("stats-model-without-params", lambda: ["stats", "--model", _model_copy("noparams",
                                                                            drop="params.npz"),
                                            "--data", F.data()], "--model"),
    ("stats-model-params-pickled", lambda: ["stats", "--model", _model_copy(
        "pickled", params={"encoder.0.W": np.array([{}, 1], dtype=object)}), "--data", F.data()],
        "--model"),
    ("stats-model-params-not-npz", lambda: ["stats", "--model", _model_copy("garbage-params"),
                                            "--data", F.data()], "--model"),
    ("stats-data-garbage", lambda: ["stats", "--model", F.model(), "--data",
                                    _write(os.path.join(CTX.tmp, "garbage.npy"), "not numpy")],
     "--data"),
    ("stats-data-nan", lambda: ["stats", "--model", F.model(), "--data",
                                _npy("nan.npy", np.full((5, 4), np.nan))], "--data"),
    ("stats-data-inf", lambda: ["stats", "--model", F.model(), "--data",
                                _npy("inf.npy", np.full((5, 4), np.inf))], "--data"),
    ("stats-data-wrong-width", lambda: ["stats", "--model", F.model(), "--data",
                                        _npy("w5.npy", np.zeros((5, 5)))], "--data"),
    ("stats-data-1d", lambda: ["stats", "--model", F.model(), "--data", _npy("1d.npy", np.zeros(4))],
     "--data"),
    ("stats-data-3d", lambda: ["stats", "--model", F.model(), "--data",
                               _npy("3d.npy", np.zeros((2, 5, 4)))], "--data"),
    ("stats-data-empty", lambda: ["stats", "--model", F.model(), "--data",
                                  _npy("empty.npy", np.zeros((0, 4)))], "--data"),
    ("stats-data-complex", lambda: ["stats", "--model", F.model(), "--data",
                                    _npy("complex.npy", np.zeros((5, 4), complex))], "--data"),
    ("stats-data-strings", lambda: ["stats", "--model", F.model(), "--data",
                                    _npy("str.npy", np.array([["a"] * 4] * 5))], "--data"),
    ("stats-data-pickled", lambda: ["stats", "--model", F.model(), "--data",
                                    _npy("obj.npy", np.array([{}, 1], dtype=object))], "--data"),
    ("stats-data-npz-ambiguous", lambda: ["stats", "--model", F.model(), "--data",
                                          _npy("two.npz", {"a": np.zeros((5, 4)),
                                                           "b": np.zeros((5, 4))})], "--data"),
    ("stats-components-nan", lambda: ["stats", "--model", F.model(), "--components",
                                      _npy("cnan.npz", {"means": np.full((3, 2), np.nan),
                                                        "log_vars": np.zeros((3, 2))})],
     "--components"),
    ("stats-components-mismatched", lambda: ["stats", "--model", F.model(), "--components",
                                             _npy("cmis.npz", {"means": np.zeros((3, 2)),
                                                               "log_vars": np.zeros((4, 2))})],
     "--components"),
    ("verify-known-deviations-not-json", _verify("--known-deviations",
                                                 lambda: _write(os.path.join(CTX.tmp, "kd-a.json"),
                                                                "{oops")), "--known-deviations"),
    ("verify-known-deviations-deeply-nested", _verify("--known-deviations", lambda: _write(
        os.path.join(CTX.tmp, "kd-b.json"), DEEP)), "--known-deviations"),
    ("verify-known-deviations-a-dict", _verify("--known-deviations", lambda: _write(
        os.path.join(CTX.tmp, "kd-c.json"), '{"case": "x"}')), "--known-deviations"),
    ("verify-known-deviations-numbers", _verify("--known-deviations", lambda: _write(
        os.path.join(CTX.tmp, "kd-d.json"), "[1, 2, 3]")), "--known-deviations"),
    ("verify-impl-file-with-syntax-error", lambda: ["verify", "--impl", _write(
        os.path.join(CTX.tmp, "bad_adapter.py"), "def make(:\n") + ":make", "--cases", F.cases()],
     "--impl"),
    ("verify-impl-factory-raises", lambda: ["verify", "--impl", _write(
        os.path.join(CTX.tmp, "raising_adapter.py"), "def make():\n    raise RuntimeError('no')\n")
        + ":make", "--cases", F.cases(), "--checks", "golden"], "--impl"),
    ("verify-cases-corrupt", lambda: ["verify", "--impl", IMPL, "--cases", _corrupt_cases(),
                                      "--checks", "golden"], "--cases"),
    ("verify-impl-factory-returns-int", lambda: ["verify", "--impl", _write(
        os.path.join(CTX.tmp, "int_adapter.py"), "def make():\n    return 3\n") + ":make",
        "--cases", F.cases(), "--checks", "golden"], "--impl"),
    ("golden-compare-corrupt", lambda: ["golden", "--prior", "standard", "--likelihood", "gaussian",
                                        "--compare", _corrupt_cases()], "--compare"),
    ("verify-cases-without-checksums", lambda: ["verify", "--impl", IMPL, "--cases", _unsummed_cases(),
                                                "--checks", "golden"], "--cases"),
]


def _unsummed_cases():
    d = os.path.join(CTX.tmp, "unsummed-cases")
    if not os.path.isdir(d):
        shutil.copytree(CTX.cases_copy(), d)
        os.remove(os.path.join(d, "SHA256SUMS"))
    return d


def _corrupt_cases():
    d = os.path.join(CTX.tmp, "corrupt-cases")
    if not os.path.isdir(d):
        shutil.copytree(CTX.cases_copy(), d)
        _write(os.path.join(d, "standard-gaussian", "case.npz"), "truncated")
    return d


def _materialise(argv):
    """Call the lazy entries of an argv list (paths built on demand)."""
    return [a() if callable(a) else a for a in argv]


_GARBAGE_DONE = []


@pytest.fixture
def cli(monkeypatch, capsys):
    """``run(argv, flag)``: ``refvae.tools.cli.main(argv)`` in-process with the expensive steps guarded;
    fails unless the exit code is 2, stderr holds exactly one line naming ``flag``, and no
    traceback is printed."""
    from refvae.tools import distributed as dist

    if not _GARBAGE_DONE:
        _write(os.path.join(_model_copy("garbage-params"), "params.npz"), "this is not a zip file")
        _GARBAGE_DONE.append(True)

    def sentinel(where):
        def f(*a, **k):
            raise _Reached(where)
        return f

    for mod, attr in (("refvae.train", "fit"), ("refvae.tools.report.runner", "load_data"),
                      ("refvae.tools.report.gradient_check", "gradcheck_model"), ("refvae.tools.verify", "run"),
                      ("refvae.tools.golden", "build_case"), ("refvae.tools.golden", "write_case")):
        monkeypatch.setattr(importlib.import_module(mod), attr, sentinel(f"{mod}.{attr}"))
    real_stats, real_holes = dist.aggregated_stats, dist.holes
    # (no guard on building a model: VAE refuses more than MAX_PARAMETER_BYTES of parameters
    # before allocating, so a huge --latent-dim cannot exhaust memory)

    def aggregated_stats(model, x, rng, n_samples=1, **kw):
        if n_samples > 10 ** 6 or (kw.get("n_queries") or 0) > 10 ** 6:
            raise _Reached(f"distributed.aggregated_stats with n_samples = {n_samples}, "
                           f"n_queries = {kw.get('n_queries')}")
        return real_stats(model, x, rng, n_samples, **kw)

    def holes(model, x, rng, n_samples=10000, *a, **kw):
        if n_samples > 10 ** 6:
            raise _Reached(f"distributed.holes with n_samples = {n_samples}")
        return real_holes(model, x, rng, n_samples, *a, **kw)

    monkeypatch.setattr(dist, "aggregated_stats", aggregated_stats)
    monkeypatch.setattr(dist, "holes", holes)

    def run(argv, flag, unguarded=()):
        for where in unguarded:
            mod, attr = where.rsplit(".", 1)
            monkeypatch.setattr(importlib.import_module(mod), attr, _REAL[where])
        argv = _materialise(argv)
        shown = " ".join(repr(a) if a == "" else (a if len(a) < 80 else a[:40] + "...")
                         for a in argv)
        try:
            with _time_limit(30):
                rc = main(argv)
        except _Reached as exc:
            _fail(f"ACCEPTED refvae {shown}: no error; the run went on to {exc}")
        except _Hang as exc:
            _fail(f"HANG refvae {shown}: {exc}")
        except BaseException as exc:  # noqa: BLE001 - what escapes main is a traceback
            _fail(f"TRACEBACK refvae {shown}: main raised {type(exc).__name__}: "
                  f"{' '.join(str(exc).split())[:300]}")
        out, err = capsys.readouterr()
        lines = [line for line in err.splitlines() if line.strip()]
        if "Traceback" in out + err:
            _fail(f"TRACEBACK refvae {shown}: a traceback was printed: {err[-400:]}")
        if rc != 2:
            _fail(f"EXIT {rc} refvae {shown}: expected exit code 2; stderr: {err[-300:]!r}")
        if len(lines) != 1:
            _fail(f"LINES refvae {shown}: {len(lines)} lines on stderr, expected one: {err[-400:]!r}")
        if not _flag_named(lines[0], flag, argv):
            _fail(f"UNNAMED refvae {shown}: the line does not name {flag} (or its value): "
                  f"{lines[0][:300]}")
    return run


def _flag_named(line, flag, argv):
    """The line names ``flag``, or the (non-empty) path given to it."""
    if flag in line:
        return True
    if flag in argv and argv.index(flag) + 1 < len(argv):
        value = argv[argv.index(flag) + 1]
        if value and os.sep in value:
            return value in line or value.rstrip(os.sep) in line
    return False


_REAL = {"refvae.tools.verify.run": verify.run}


@pytest.mark.hostile("flag", "named error")
@pytest.mark.parametrize("argv,flag", [c[1:] for c in CLI_FLAG_CASES],
                         ids=[c[0] for c in CLI_FLAG_CASES])
def test_cli_flag_errors(cli, argv, flag):
    """Every subcommand with empty, zero, negative, NaN, inf, huge, unknown and misplaced-path flags."""
    cli(argv(), flag)


@pytest.mark.hostile("file", "named error")
@pytest.mark.parametrize("argv,flag", [c[1:3] for c in CLI_FILE_CASES],
                         ids=[c[0] for c in CLI_FILE_CASES])
def test_cli_file_errors(cli, argv, flag, request):
    """Hostile files behind the flags: config.json a list/keyless/nested, NaN/complex/pickled data."""
    # corrupt cases and bad adapters are found inside verify.run (cheap: one case, --checks
    # golden), so it runs for real here
    unguarded = ("refvae.tools.verify.run",) if request.node.callspec.id.startswith("verify-") else ()
    cli(argv(), flag, unguarded)


_SUBPROCESS = [
    ("stats-model-config-deeply-nested", lambda: ["stats", "--model", _model_copy("deep", DEEP_OBJ),
                                                  "--data", F.data()], "--model"),
    ("train-latent-dim-nan", lambda: ["train", "--prior", "standard", "--latent-dim", "nan",
                                      "--out", F.out()], "--latent-dim"),
    ("verify-known-deviations-deeply-nested", lambda: _materialise(_verify("--known-deviations",
                                                                           lambda: _write(
        os.path.join(CTX.tmp, "kd-b.json"), DEEP))()), "--known-deviations"),
]


@pytest.mark.hostile("flag", "named error")
@pytest.mark.parametrize("argv,flag", [c[1:] for c in _SUBPROCESS], ids=[c[0] for c in _SUBPROCESS])
def test_cli_subprocess_flag_errors(argv, flag):
    """A few bad flags in a real ``python -m refvae.tools.cli`` process: exit 2, one line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "refvae.tools.cli", *argv()], capture_output=True,
                          text=True, timeout=120, cwd=CTX.tmp)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stdout + proc.stderr, \
        f"TRACEBACK: {proc.stderr[-600:]}"
    assert proc.returncode == 2, f"EXIT {proc.returncode}: {proc.stderr[-400:]}"
    assert len(lines) == 1, f"LINES: {proc.stderr[-400:]}"
    assert _flag_named(lines[0], flag, proc.args[3:]), f"UNNAMED {flag}: {lines[0][:300]}"
