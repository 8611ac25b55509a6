"""The grader: compares a learner's function with refvae's own (the oracle) at fixed points, runs
refvae's gradient check on it, and names the probable classic mistake.

A verdict is "right" only when every returned entry agrees with the oracle at every test point
(per entry: ``|got - want| <= rtol |want| + atol``, ``atol = atol_scale * max |want|`` of that
output) *and*, for a backward pass, :func:`refvae.gradcheck.check_vjp` passes on it at the first
point (the check that needs no oracle: it compares the learner's VJP with central differences of
refvae's forward). When it is wrong, the grader lists which outputs and which entries are wrong,
then looks for the mistake: first the exercise's known wrong variants (each planted-bug function
evaluated at the same points: the learner's answer "is" a variant when it agrees with it
everywhere), then generic patterns (a sign flip, a constant factor, the cotangent ignored, wrong
only at one special point).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import pathlib
import traceback

import numpy as np

from ... import gradcheck


class NotWritten(Exception):
    """Internal marker: the stub still raises NotImplementedError."""


@dataclasses.dataclass
class Variant:
    """A known wrong answer: ``fn`` has the learner's signature; ``diagnosis`` explains it."""

    name: str
    diagnosis: str
    fn: object


@dataclasses.dataclass
class Point:
    """A test point: named arguments (and for a backward pass the cotangent ``g``)."""

    description: str
    args: dict
    g: object = None


@dataclasses.dataclass
class Exercise:
    id: str                    #: "3.2"
    name: str                  #: the function's name in exercises/chNN.py and solutions/chNN.py
    title: str
    kind: str                  #: "vjp" (returns one gradient per name in ``diff``) or "forward"
    arg_names: tuple           #: the learner's arguments after g (for "vjp"), in order
    outputs: tuple             #: names of the returned arrays ("dz", ...) or ("value",)
    points: object             #: rng -> list of Point
    reference: object          #: refvae's answer, same signature as the learner's
    forward: object = None     #: for "vjp": f(**args) -> array, the function differentiated
    diff: tuple = ()           #: for "vjp": the argument names differentiated, order of outputs
    variants: tuple = ()
    find_bug: bool = False
    rtol: float = 1e-9
    atol_scale: float = 1e-12
    tolerance_reason: str = ("the learner's arithmetic may run in another order than refvae's: a "
                             "few ulp per entry; 1e-9 relative (+ 1e-12 of the output's largest "
                             "entry, for entries that cancel) leaves 10^6 times that room and is "
                             "far below every planted mistake at the test points")
    seed: int = 0

    @property
    def chapter(self) -> int:
        return int(self.id.split(".")[0])


@dataclasses.dataclass
class GradeResult:
    exercise: Exercise
    passed: bool
    status: str                 #: "right", "wrong", "not written", "raised", "wrong shape"
    lines: list
    wrong: dict = dataclasses.field(default_factory=dict)   #: output name -> list of (point, index, got, want)
    diagnosis: str = ""         #: the variant's name, or a generic pattern; "" if none found
    explanation: str = ""
    gradcheck: object = None

    def __str__(self):
        return "\n".join(self.lines)

    def __bool__(self):
        return self.passed


def _as_tuple(out, n):
    if n == 1 and not isinstance(out, (tuple, list)):
        out = (out,)
    if not isinstance(out, (tuple, list)):
        raise TypeError(f"return a tuple of {n} arrays, got {type(out).__name__}")
    return tuple(np.asarray(o, dtype=float) if not np.iscomplexobj(o) else np.asarray(o) for o in out)


def _call(ex, fn, point, g=None):
    args = [point.args[k] for k in ex.arg_names]
    args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]   # the learner may write in place
    if ex.kind == "vjp":
        gg = point.g if g is None else g
        out = fn(gg.copy() if isinstance(gg, np.ndarray) else gg, *args)
    else:
        out = fn(*args)
    return _as_tuple(out, len(ex.outputs))


def _call_learner(ex, fn, point, g=None):
    try:
        return _call(ex, fn, point, g), None
    except NotImplementedError:
        raise NotWritten()
    except Exception as e:  # the learner's exception is the verdict, not a crash of the grader
        return None, f"{type(e).__name__}: {e}"


def _mismatch(got, want, ex):
    """Boolean array of wrong entries (NaN is wrong; +-inf must match exactly)."""
    atol = ex.atol_scale * float(np.max(np.abs(want[np.isfinite(want)]), initial=0.0))
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.abs(got - want) <= ex.rtol * np.abs(want) + atol
    ok |= (got == want)
    return ~ok


def _agrees(a_outs, b_outs, ex):
    return all(x.shape == y.shape and not _mismatch(x, y, ex).any() for x, y in zip(a_outs, b_outs))


def _fmt(x):
    return f"{float(np.real(x)):.6g}"


def grade_function(ex, fn, *, hint=None):
    """Grade ``fn`` (the learner's function) on exercise ``ex``; returns a :class:`GradeResult`."""
    if not callable(fn):
        raise TypeError(f"fn must be the function to grade (a callable), got {type(fn).__name__}")
    hint = (not ex.find_bug) if hint is None else bool(hint)
    head = f"exercise {ex.id} ({ex.name}): {ex.title}"
    rng = np.random.default_rng(ex.seed)
    points = ex.points(rng)
    wants = [_call(ex, ex.reference, p) for p in points]
    gots = []
    try:
        for p in points:
            got, err = _call_learner(ex, fn, p)
            if err is not None:
                return GradeResult(ex, False, "raised", [head, f"WRONG: it raised {err} at the point "
                                                        f"'{p.description}'"], diagnosis="raised")
            gots.append(got)
    except NotWritten:
        return GradeResult(ex, False, "not written",
                           [head, "NOT WRITTEN YET: the stub raises NotImplementedError; write the "
                                  "function in docs/course/exercises/ and grade again"],
                           diagnosis="not written")
    # shapes
    for got, want in zip(gots, wants):
        if len(got) != len(want):
            return GradeResult(ex, False, "wrong shape",
                               [head, f"WRONG: returned {len(got)} arrays, expected {len(want)} "
                                      f"({', '.join(ex.outputs)})"], diagnosis="wrong number of outputs")
        for name, a, b in zip(ex.outputs, got, want):
            if a.shape != b.shape:
                why = ("transposed (rows and columns swapped)" if a.shape == b.shape[::-1]
                       else "not summed over the batch axis" if a.shape[1:] == b.shape and a.ndim == b.ndim + 1
                       else "")
                lines = [head, f"WRONG: {name} has shape {a.shape}, expected {b.shape} (the shape of "
                               f"the input it is the gradient of)" if ex.kind == "vjp" else
                         f"WRONG: {name} has shape {a.shape}, expected {b.shape}"]
                if why:
                    lines.append(f"probable mistake: {name} is {why}")
                return GradeResult(ex, False, "wrong shape", lines, diagnosis=why or "wrong shape")
    # values
    wrong = {}
    for pi, (got, want) in enumerate(zip(gots, wants)):
        for name, a, b in zip(ex.outputs, got, want):
            bad = _mismatch(a, b, ex)
            for idx in np.argwhere(bad)[:5]:
                idx = tuple(int(i) for i in idx)
                wrong.setdefault(name, []).append((pi, idx, a[idx], b[idx]))
    lines = [head]
    if not wrong and ex.kind == "vjp":
        report = _gradcheck(ex, fn, points[0])
        if report.passed:
            lines += [f"RIGHT: every entry agrees with {_oracle_name(ex)} at {_n_points(points)} "
                      f"(rtol {ex.rtol:g})",
                      f"gradient check (refvae.gradcheck.check_vjp, central differences of refvae's "
                      f"forward, no oracle): PASSED, worst relative error {report.max_rel_err:.1e}"]
            return GradeResult(ex, True, "right", lines, gradcheck=report)
        lines += ["WRONG: agrees with the oracle but the gradient check fails (report this: "
                  "the oracle is wrong)", str(report)]
        return GradeResult(ex, False, "wrong", lines, gradcheck=report, diagnosis="oracle disagrees")
    if not wrong:
        lines.append(f"RIGHT: every entry agrees with {_oracle_name(ex)} at {_n_points(points)} "
                     f"(rtol {ex.rtol:g})")
        return GradeResult(ex, True, "right", lines)
    names = [n for n in ex.outputs if n in wrong]
    okn = [n for n in ex.outputs if n not in wrong]
    lines.append(f"WRONG: {', '.join(names)} {'disagrees' if len(names) == 1 else 'disagree'} with "
                 f"{_oracle_name(ex)}"
                 + (f" ({', '.join(okn)} right)" if okn else ""))
    for n in names:
        for pi, idx, a, b in wrong[n][:3]:
            lines.append(f"  {n}{list(idx)} at point {pi} ('{points[pi].description}'): got {_fmt(a)}, "
                         f"expected {_fmt(b)}")
    diag, expl = _diagnose(ex, fn, points, gots, wants, wrong)
    if diag:
        if hint:
            lines.append(f"probable mistake: {diag}")
            if expl:
                lines.append(f"  {expl}")
        else:
            lines.append("(a find-the-bug exercise: the probable mistake is hidden; grade with "
                         "hint=True or --hint to see it)")
    else:
        lines.append("no known mistake matches; compare your formula with the chapter's, one "
                     "output at a time")
    return GradeResult(ex, False, "wrong", lines, wrong=wrong, diagnosis=diag, explanation=expl)


def _n_points(points):
    return f"{len(points)} test point{'s' if len(points) > 1 else ''}"


def _oracle_name(ex):
    ref = ex.reference
    return getattr(ref, "oracle_name", getattr(ref, "__name__", "the reference"))


def _gradcheck(ex, fn, point):
    """refvae.gradcheck.check_vjp of the learner's VJP against refvae's forward at ``point``."""
    names = list(ex.diff)
    fixed = dict(point.args)

    def f(*xs):
        return ex.forward(**dict(fixed, **dict(zip(names, xs))))

    def vjp(g, *xs):
        args = dict(fixed, **dict(zip(names, xs)))
        return _call(ex, fn, Point("", args, g), g)

    return gradcheck.check_vjp(f, vjp, tuple(fixed[n] for n in names),
                               rng=np.random.default_rng(ex.seed + 1))


def _diagnose(ex, fn, points, gots, wants, wrong):
    """(name, explanation) of the probable mistake, or ("", "")."""
    for v in ex.variants:
        outs = [_call(ex, v.fn, p) for p in points]
        if all(_agrees(g, o, ex) for g, o in zip(gots, outs)):
            return v.name, v.diagnosis
    # generic patterns, on the wrong outputs
    names = [n for n in ex.outputs if n in wrong]
    idx = [ex.outputs.index(n) for n in names]
    pts = sorted({pi for n in names for pi, *_ in wrong[n]})
    if len(points) > 1 and len(pts) == 1:
        return (f"right except at the point '{points[pts[0]].description}'",
                "that point is where a naive formula loses its digits or a convention decides; "
                "see the chapter's numerics section")
    if ex.kind == "vjp":
        try:
            ones = [_call(ex, ex.reference, p, np.ones_like(p.g)) for p in points]
            if all(_agrees(g, o, ex) for g, o in zip(gots, ones)):
                return ("the cotangent g is ignored",
                        "a VJP returns g times the derivative, not the derivative (chapter 9: why "
                        "the lambda is `g * grad`)")
        except Exception:
            pass
    ratios = []
    for got, want in zip(gots, wants):
        for i in idx:
            a, b = got[i].ravel(), want[i].ravel()
            m = np.abs(b) > 1e-8 * max(1.0, float(np.max(np.abs(b), initial=0.0)))
            ratios.extend((a[m] / b[m]).tolist())
    if ratios:
        r = np.asarray(ratios)
        c = float(np.median(r))
        if c != 0 and np.all(np.abs(r - c) <= 1e-8 * abs(c)):
            known = {-1.0: "a sign flip", 2.0: "a factor 2: a missing 1/2",
                     0.5: "a factor 1/2 too many"}
            for k, text in known.items():
                if abs(c - k) <= 1e-8:
                    return text, f"every wrong entry is {c:g} times the right value"
            B = _batch(points[0])
            if B and abs(c - B) <= 1e-8 * B:
                return ("a sum where a mean was meant", f"every wrong entry is B = {B} times the "
                                                        "right value")
            if B and abs(c - 1 / B) <= 1e-8:
                return ("a mean where a sum was meant", f"every wrong entry is 1/B = 1/{B} of the "
                                                        "right value")
            return (f"a constant factor {c:.6g}", "every wrong entry is the same multiple of the "
                                                  "right value")
    if all(np.all(got[i] == 0) for got in gots for i in idx):
        return "returns zeros", "the wrong outputs are all zero"
    return "", ""


def _batch(point):
    for v in point.args.values():
        if isinstance(v, np.ndarray) and v.ndim == 2:
            return v.shape[0]
    return None


# --------------------------------------------------------------------------- answer files

def answers_path(chapter, which="exercises"):
    from ._pages import course_dir
    if which not in ("exercises", "solutions"):
        raise ValueError(f"which must be 'exercises' or 'solutions', got {which!r}")
    return course_dir() / which / f"ch{int(chapter):02d}.py"


def load_module(path):
    """Import a Python file by path (the learner's exercises or the solutions)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    spec = importlib.util.spec_from_file_location(f"_course_{path.parent.name}_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
