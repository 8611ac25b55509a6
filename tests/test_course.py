"""The course docs/course/ (issue 18): every chapter runs and prints the numbers on its page, the
figures carry the chapters' numbers, every exercise stub fails its grader and every solution
passes, every planted classic mistake gets its own diagnosis, and every link into the code
resolves to a readable function whose docstring links back.

Tolerances: the grader's own (1e-9 relative per entry, reason in ``Exercise.tolerance_reason``);
the pages' printed numbers are compared as text (they are printed with 4-6 significant digits,
far above the rounding differences between BLAS builds, except blocks marked ``varies``).
"""

from __future__ import annotations

import functools
import inspect
import pathlib
import re

import numpy as np
import pytest

import refvae
from refvae.tools.course import EXERCISES, grade
from refvae.tools.course import __main__ as course_cli
from refvae.tools.course._exercises import FLOW_VARIANTS, MIX_VARIANTS, REPARAM_VARIANTS, EX_9_2
from refvae.tools.course._figures import FIGURES, png_labels
from refvae.tools.course._grader import answers_path, grade_function, load_module
from refvae.tools.course._pages import chapter_paths, check_chapter, run_page

ROOT = pathlib.Path(__file__).resolve().parents[1]
COURSE = ROOT / "docs" / "course"
CHAPTERS = chapter_paths()
IDS = list(EXERCISES)

#: the planted bug of each find-the-bug stub, by the name of the variant the grader must find
PLANTED = {"3.3": REPARAM_VARIANTS[0].name, "6.3": MIX_VARIANTS[0].name, "8.3": FLOW_VARIANTS[0].name,
           "9.2": EX_9_2.variants[0].name}


@functools.lru_cache(maxsize=None)
def _namespace(n):
    return run_page(CHAPTERS[n])[0]


def test_nine_chapters_in_the_issues_order():
    assert sorted(CHAPTERS) == list(range(1, 10))
    names = [p.name for _, p in sorted(CHAPTERS.items())]
    for n, word in zip(range(1, 10), ["chain-rule", "linear", "gaussian", "likelihoods", "three-paths",
                                       "mixtures", "vampprior", "flow", "checking"]):
        assert word in names[n - 1], names


@pytest.mark.parametrize("n", sorted(CHAPTERS))
def test_chapter_runs_and_prints_the_numbers_on_its_page(n):
    """Every python block runs; every ``text`` block after one is what it prints."""
    text = CHAPTERS[n].read_text(encoding="utf-8")
    assert "```python" in text and "```text" in text   # a chapter with no output would pass vacuously
    mismatches = check_chapter(n)
    assert not mismatches, "\n".join(f"line {line}: page says\n{want}\nthe code prints\n{got}"
                                     for line, want, got in mismatches)


def test_a_changed_number_on_a_page_is_caught(tmp_path, monkeypatch):
    """The comparison can fail: chapter 1 with one printed digit changed."""
    from refvae.tools.course import _pages
    page = tmp_path / "01-chain-rule.md"
    page.write_text(CHAPTERS[1].read_text(encoding="utf-8").replace("L = 0.2403", "L = 0.2404"),
                    encoding="utf-8")
    monkeypatch.setattr(_pages, "chapter_paths", lambda: {1: page})
    assert len(check_chapter(1)) == 1


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_numbers_are_the_chapters_numbers(name):
    """The committed PNG's labels (stored in it when it was drawn from the chapter's code) equal
    the labels computed now from the chapter's namespace."""
    chapter, _, labels = FIGURES[name]
    stored = png_labels(COURSE / "figures" / name)
    assert stored is not None, f"{name} carries no labels: redraw it (python -m refvae.tools.course figures)"
    assert stored == labels(_namespace(chapter))
    assert f"figures/{name}" in CHAPTERS[chapter].read_text(encoding="utf-8")


def test_chapter_1_shows_every_number_of_the_network():
    ns = _namespace(1)
    text = CHAPTERS[1].read_text(encoding="utf-8")
    for name in ("h", "a", "y", "dW1", "db1", "dW2", "db2", "dx", "dh", "da"):
        v = np.round(np.asarray(ns[name], dtype=float), 4)
        assert str(v.ravel()[0] + 0.0) in text or f"{v.ravel()[0]:.4f}".rstrip("0") in text, name


# --------------------------------------------------------------------------- exercises

def _answers(ex, which):
    return getattr(load_module(answers_path(ex.chapter, which)), ex.name)


@pytest.mark.parametrize("ex_id", IDS)
def test_each_stub_fails_its_grader(ex_id):
    ex = EXERCISES[ex_id]
    result = grade_function(ex, _answers(ex, "exercises"))
    assert not result.passed
    if ex.find_bug:
        assert result.status == "wrong" and result.diagnosis == PLANTED[ex_id]
        assert PLANTED[ex_id] not in str(result)          # hidden unless asked for
        assert PLANTED[ex_id] in str(grade_function(ex, _answers(ex, "exercises"), hint=True))
    else:
        assert result.status == "not written"


@pytest.mark.parametrize("ex_id", IDS)
def test_each_solution_passes(ex_id):
    ex = EXERCISES[ex_id]
    result = grade_function(ex, _answers(ex, "solutions"))
    assert result.passed, str(result)
    if ex.kind == "vjp":
        assert result.gradcheck is not None and result.gradcheck.passed


@pytest.mark.parametrize("ex_id,variant", [(e.id, i) for e in EXERCISES.values()
                                           for i in range(len(e.variants))])
def test_each_classic_mistake_gets_its_diagnosis(ex_id, variant):
    ex = EXERCISES[ex_id]
    v = ex.variants[variant]
    result = grade_function(ex, v.fn, hint=True)
    assert not result.passed
    assert result.diagnosis == v.name, str(result)
    assert v.diagnosis in str(result) and result.wrong


def test_the_classic_mistakes_of_the_issue_are_all_planted():
    names = " | ".join(v.name for e in EXERCISES.values() for v in e.variants)
    for mistake in ("log_var used as the log of the standard deviation", "-1/2 ln 2 pi",
                    "a mixture per latent dimension", "log-determinant added once per latent dimension",
                    "batch mean of g, not its sum", "1 - p_k", "the cotangent g is ignored",
                    "wrong sign"):
        assert mistake in names, mistake


# generic diagnoses: patterns that are not a listed variant

def _ref(ex_id):
    return EXERCISES[ex_id].reference


def test_generic_sign_flip():
    r = grade("3.2", lambda g, z, m, v: tuple(-a for a in _ref("3.2")(g, z, m, v)), verbose=False)
    assert not r.passed and r.diagnosis == "a sign flip"


def test_generic_sum_for_mean():
    r = grade("2.1", lambda g, x, W, b: (g @ W.T, x.T @ g * x.shape[0], g.sum(0)), verbose=False)
    assert not r.passed and r.diagnosis == "a sum where a mean was meant" and list(r.wrong) == ["dW"]


def test_generic_cotangent_ignored():
    r = grade("3.2", lambda g, z, m, v: _ref("3.2")(np.ones_like(g), z, m, v), verbose=False)
    assert not r.passed and r.diagnosis == "the cotangent g is ignored"


def test_generic_transposed_shape():
    r = grade("2.1", lambda g, x, W, b: (g @ W.T, g.T @ x, g.sum(0)), verbose=False)
    assert r.status == "wrong shape" and "transposed" in r.diagnosis


def test_generic_wrong_only_at_one_point():
    def fn(g, x, a):
        out = _ref("4.2")(g, x, a)[0]
        return (out * 1.5 if np.max(np.abs(a)) > 30 else out,)
    r = grade("4.2", fn, verbose=False)
    assert not r.passed and r.diagnosis.startswith("right except at the point 'confident")


def test_an_exception_is_a_verdict_not_a_crash():
    r = grade("1.1", lambda *a: 1 / 0, verbose=False)
    assert not r.passed and r.status == "raised" and "ZeroDivisionError" in str(r)


def test_grade_checks_its_arguments():
    with pytest.raises(ValueError, match="exercise"):
        grade("0.1", lambda *a: None)
    with pytest.raises(TypeError, match="exercise"):
        grade(3.2, lambda *a: None)
    with pytest.raises(TypeError, match="fn"):
        grade("3.2", "not a function")
    with pytest.raises(TypeError, match="hint"):
        grade("3.2", lambda *a: None, hint="yes")


def test_cli_grades_solutions_and_stubs(capsys):
    assert course_cli.main(["grade", "3", "--solutions"]) == 0
    assert course_cli.main(["grade", "3"]) == 1
    out = capsys.readouterr().out
    assert "NOT WRITTEN YET" in out and "RIGHT" in out
    with pytest.raises(SystemExit):
        course_cli.main(["grade", "12"])
    with pytest.raises(SystemExit):
        course_cli.main(["grade", "3", "--file", "/nonexistent/answers.py"])
    assert "--file: no such file" in capsys.readouterr().err


def test_every_exercise_is_announced_in_its_chapter():
    for ex in EXERCISES.values():
        text = CHAPTERS[ex.chapter].read_text(encoding="utf-8")
        assert f"**{ex.id}**" in text and f"`{ex.name}" in text, ex.id
        assert f"exercises/ch{ex.chapter:02d}.py" in text and f"solutions/ch{ex.chapter:02d}.py" in text
    assert {e.chapter for e in EXERCISES.values()} == set(CHAPTERS)


# --------------------------------------------------------------------------- links

_CODE_LINK = re.compile(r"\[`(refvae(?:\.\w+)+)`\]\(([^)]+)\)")
_ANY_LINK = re.compile(r"\]\(([^)#]+)(?:#[^)]*)?\)")


def _resolve(dotted):
    """The object a dotted name refers to: the longest importable module, then attributes."""
    import importlib
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _course_pages():
    return sorted(COURSE.glob("*.md"))


@pytest.mark.parametrize("page", [p.name for p in sorted(COURSE.glob("*.md"))])
def test_every_link_resolves(page):
    path = COURSE / page
    text = path.read_text(encoding="utf-8")
    for target in _ANY_LINK.findall(text):
        if target.startswith("http"):
            continue
        assert (path.parent / target).exists(), f"{page}: broken link {target}"
    for dotted, target in _CODE_LINK.findall(text):
        obj = _resolve(dotted)      # AttributeError/ImportError: the name no longer exists
        fn = getattr(obj, "unchecked", obj)
        fn = inspect.unwrap(getattr(fn, "__func__", fn))
        assert type(fn).__name__ not in ("CPUDispatcher", "Dispatcher"), f"{dotted} is a Numba kernel"
        src = pathlib.Path(inspect.getsourcefile(fn if not inspect.ismodule(obj) else obj)).resolve()
        assert src == (path.parent / target).resolve(), f"{page}: {dotted} lives in {src}, link says {target}"


def test_each_chapter_links_into_the_code():
    for n, path in CHAPTERS.items():
        assert _CODE_LINK.findall(path.read_text(encoding="utf-8")), f"chapter {n} links no function"


def _back_links():
    """{chapter file name: [dotted names of the objects whose docstring links to it]}."""
    out = {}
    seen = set()
    for mod_path in sorted((ROOT / "refvae").rglob("*.py")):
        if "tools" in mod_path.relative_to(ROOT / "refvae").parts:
            continue
        text = mod_path.read_text(encoding="utf-8")
        for m in re.finditer(r"docs/course/(\d\d-[\w-]+\.md)", text):
            out.setdefault(m.group(1), []).append(str(mod_path.relative_to(ROOT)))
            seen.add(m.group(1))
    return out


def test_docstrings_link_back_to_every_chapter():
    back = _back_links()
    for name in back:
        assert (COURSE / name).is_file(), f"a docstring links to docs/course/{name}, which does not exist"
    for n, path in CHAPTERS.items():
        assert path.name in back, f"no docstring in the core links back to {path.name}"


def test_back_links_sit_in_docstrings_of_linked_functions():
    """Each back-link is in the docstring of a function or class the chapter links to, or of a
    module it links into."""
    for n, path in CHAPTERS.items():
        linked = [_resolve(d) for d, _ in _CODE_LINK.findall(path.read_text(encoding="utf-8"))]
        docs = [inspect.getdoc(getattr(o, "unchecked", o)) or "" for o in linked]
        docs += [inspect.getdoc(inspect.getmodule(getattr(o, "unchecked", o))) or "" for o in linked]
        assert any(f"docs/course/{path.name}" in d for d in docs), path.name


def test_readme_third_use_points_at_chapter_1():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    third = re.search(r"^3\. \*\*learn gradients without autograd\*\*.*?(?=\n\n)", readme, re.S | re.M).group(0)
    assert "docs/course/01-chain-rule.md" in third
