"""Executable pages: the course's chapters are Markdown files whose ``python`` code blocks run in
order in one namespace, and whose ``text`` blocks (a ``text`` block directly after a ``python``
block) are that block's printed output.

Why Markdown and not notebooks: a chapter reads on GitHub and in any editor exactly as it runs,
its numbers are in the text (checked by :func:`check_chapter`, so a number on the page is the
number the code prints), a diff of a chapter is a diff of prose and code, and CI needs nothing
beyond NumPy and refvae (no Jupyter kernel). A learner who prefers a notebook pastes the blocks
into cells in order; ``python -m refvae.tools.course run N`` runs a chapter in a terminal.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[3]
COURSE = ROOT / "docs" / "course"

_FENCE = re.compile(r"^```([A-Za-z0-9_-]*)([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)


def course_dir():
    """``docs/course`` of the source tree (the course is documentation, not package data)."""
    if not COURSE.is_dir():
        raise FileNotFoundError(f"the course's pages are not here: {COURSE} (they live in the "
                                "source tree, docs/course/; run from a git checkout of refvae)")
    return COURSE


def chapter_paths():
    """{chapter number: path} of ``docs/course/NN-*.md``."""
    out = {}
    for p in sorted(course_dir().glob("[0-9][0-9]-*.md")):
        out[int(p.name[:2])] = p
    return out


def chapter_path(n):
    paths = chapter_paths()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"chapter must be an integer 1..{max(paths)}, got {n!r}")
    if int(n) not in paths:
        raise ValueError(f"chapter must be one of {sorted(paths)}, got {n!r}")
    return paths[int(n)]


def blocks(text):
    """The fenced blocks of a page: list of dicts ``lang, info, code, start, end, body, output``
    where ``output`` is the index of the ``text`` block that follows a ``python`` block (or None).
    A ``text`` block whose info string says ``varies`` is the block's output too, but
    :func:`check_chapter` does not compare it."""
    found = [{"lang": m.group(1), "info": m.group(2).strip(), "code": m.group(3), "start": m.start(),
              "end": m.end(), "body": (m.start(3), m.end(3)), "output": None}
             for m in _FENCE.finditer(text)]
    for i, b in enumerate(found[:-1]):
        nxt = found[i + 1]
        if b["lang"] == "python" and nxt["lang"] == "text" and not text[b["end"]:nxt["start"]].strip():
            b["output"] = i + 1
    return found


def run_page(path, *, echo=False):
    """Execute the python blocks of ``path`` in order in one namespace.

    Returns ``(namespace, results)`` with one ``(block, printed, expected)`` per python block
    (``expected`` is the text of the following ``text`` block, or None). NumPy's print options
    are the defaults at the start and restored at the end."""
    text = pathlib.Path(path).read_text(encoding="utf-8")
    found = blocks(text)
    ns = {"__name__": "__course__"}
    results = []
    with np.printoptions():
        np.set_printoptions(**_DEFAULT_PRINT)
        for b in found:
            if b["lang"] != "python":
                continue
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                exec(compile(b["code"], f"{pathlib.Path(path).name}:{_line(text, b['start'])}", "exec"), ns)
            printed = buf.getvalue()
            if echo:
                print(printed, end="")
            out = found[b["output"]] if b["output"] is not None else None
            # a ```text varies block is shown, not compared: its last digits are the platform's
            # libm rounding (stated on the page)
            expected = out["code"] if out is not None and "varies" not in out["info"] else None
            results.append((b, printed, expected))
    return ns, results


_DEFAULT_PRINT = dict(precision=8, threshold=1000, edgeitems=3, linewidth=75, suppress=False,
                      floatmode="maxprec", sign="-")


def _line(text, pos):
    return text.count("\n", 0, pos) + 2


def _norm(s):
    return "\n".join(line.rstrip() for line in s.strip("\n").splitlines())


def check_chapter(n):
    """Run chapter ``n``; a list of mismatches ``(line, expected, printed)`` between each
    ``text`` block and what its python block printed (empty: every number on the page is the
    code's)."""
    path = chapter_path(n)
    text = path.read_text(encoding="utf-8")
    _, results = run_page(path)
    bad = []
    for b, printed, expected in results:
        if expected is not None and _norm(expected) != _norm(printed):
            bad.append((_line(text, b["start"]), expected, printed))
    return bad


def update_chapter(n):
    """Rewrite the ``text`` blocks of chapter ``n`` with what the code prints (authoring tool)."""
    path = chapter_path(n)
    text = path.read_text(encoding="utf-8")
    found = blocks(text)
    _, results = run_page(path)
    edits = []
    for b, printed, expected in results:
        if b["output"] is not None:
            lo, hi = found[b["output"]]["body"]
            edits.append((lo, hi, _norm(printed) + "\n"))
    for lo, hi, new in sorted(edits, reverse=True):
        text = text[:lo] + new + text[hi:]
    path.write_text(text, encoding="utf-8")
    return len(edits)
