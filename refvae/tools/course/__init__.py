"""The course "Gradients without autograd" (docs/course/): its exercises' grader and its runner.

From a chapter or a Python session::

    from refvae.tools.course import grade
    grade("3.2", my_log_prob_vjp)        # prints RIGHT / WRONG, which entries, the probable mistake

From a shell (the exercises are the functions in ``docs/course/exercises/chNN.py``)::

    python -m refvae.tools.course grade 3            # grade every exercise of chapter 3
    python -m refvae.tools.course grade 3 --hint     # also show find-the-bug hints
    python -m refvae.tools.course run 1              # execute chapter 1, printing what it prints
    python -m refvae.tools.course check              # every chapter's printed numbers match its page
    python -m refvae.tools.course list

The grader compares a learner's function with refvae's own (the oracle) entry by entry at fixed
test points, runs :func:`refvae.gradcheck.check_vjp` on a backward pass (central differences of
refvae's forward: evidence that does not rest on the oracle), and names the probable classic
mistake by comparing the answer with the known wrong variants (the planted bugs of the
find-the-bug exercises) and with generic patterns (a sign flip, a constant factor such as a sum
for a mean, the cotangent ignored, wrong only at one special point).
"""

from __future__ import annotations

from ._exercises import EXERCISES
from ._grader import GradeResult, grade_function
from ._pages import run_page, chapter_path

__all__ = ["grade", "run_chapter", "EXERCISES"]


def grade(exercise, fn, *, hint=None, verbose=True) -> GradeResult:
    """Grade ``fn`` on ``exercise`` (an id such as ``"3.2"``); print and return the verdict.

    ``hint`` (default: True for write-it exercises, False for find-the-bug ones) shows the
    probable mistake. The result is truthy exactly when the answer is right; ``.diagnosis`` names
    the mistake found ("" if none), ``.wrong`` lists the wrong entries per output.
    """
    if not isinstance(exercise, str):
        raise TypeError(f"exercise must be an exercise id such as '3.2', got {type(exercise).__name__}")
    if exercise not in EXERCISES:
        raise ValueError(f"exercise must be one of {', '.join(EXERCISES)}, got {exercise!r}")
    if hint is not None and not isinstance(hint, bool):
        raise TypeError(f"hint must be None, True or False, got {hint!r}")
    if not isinstance(verbose, bool):
        raise TypeError(f"verbose must be True or False, got {verbose!r}")
    result = grade_function(EXERCISES[exercise], fn, hint=hint)
    if verbose:
        print(result)
    return result


def run_chapter(chapter, *, echo=True):
    """Execute chapter ``chapter`` (1..9) of the course, printing what its code prints; returns
    the namespace its code blocks ran in."""
    if not isinstance(echo, bool):
        raise TypeError(f"echo must be True or False, got {echo!r}")
    ns, _ = run_page(chapter_path(chapter), echo=echo)
    return ns
