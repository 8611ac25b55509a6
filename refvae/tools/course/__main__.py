"""``python -m refvae.tools.course {list,grade,run,check,update,figures}`` (see the package doc)."""

from __future__ import annotations

import argparse
import sys

from . import EXERCISES, grade
from ._grader import answers_path, load_module
from ._pages import chapter_paths, check_chapter, run_page, update_chapter


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m refvae.tools.course",
                                 description="the course 'Gradients without autograd' (docs/course)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="chapters and exercises")
    g = sub.add_parser("grade", help="grade a chapter's exercises")
    g.add_argument("chapter", type=int)
    g.add_argument("--file", help="the Python file holding your functions (default "
                                  "docs/course/exercises/chNN.py)")
    g.add_argument("--solutions", action="store_true", help="grade the model solutions instead")
    g.add_argument("--hint", action="store_true", help="show the probable mistake in find-the-bug exercises")
    r = sub.add_parser("run", help="execute a chapter, printing its output")
    r.add_argument("chapter", type=int)
    c = sub.add_parser("check", help="every printed number on the pages is the code's")
    c.add_argument("chapter", type=int, nargs="*")
    u = sub.add_parser("update", help="(authors) rewrite a chapter's output blocks")
    u.add_argument("chapter", type=int, nargs="+")
    sub.add_parser("figures", help="(authors) redraw docs/course/figures/*.png (needs matplotlib)")
    a = ap.parse_args(argv)
    chapters = chapter_paths()
    for n in ([a.chapter] if hasattr(a, "chapter") and isinstance(a.chapter, int) else
              getattr(a, "chapter", None) or []):
        if n not in chapters:
            ap.error(f"chapter must be one of {sorted(chapters)}, got {n}")
    if a.cmd == "list":
        for n, p in chapters.items():
            ids = [e for e in EXERCISES.values() if e.chapter == n]
            print(f"{n}. {p.name}")
            for e in ids:
                print(f"     {e.id} {e.name}: {e.title}{' (find the bug)' if e.find_bug else ''}")
        return 0
    if a.cmd == "grade":
        if a.file and a.solutions:
            ap.error("--file and --solutions exclude each other")
        path = a.file or answers_path(a.chapter, "solutions" if a.solutions else "exercises")
        try:
            mod = load_module(path)
        except FileNotFoundError:
            ap.error(f"--file: no such file: {path}")
        ok = True
        for e in (e for e in EXERCISES.values() if e.chapter == a.chapter):
            fn = getattr(mod, e.name, None)
            if fn is None:
                print(f"exercise {e.id}: {path} defines no function {e.name}")
                ok = False
                continue
            ok &= bool(grade(e.id, fn, hint=True if a.hint else None))
            print()
        return 0 if ok else 1
    if a.cmd == "run":
        run_page(chapters[a.chapter], echo=True)
        return 0
    if a.cmd == "check":
        bad = 0
        for n in a.chapter or sorted(chapters):
            mism = check_chapter(n)
            print(f"chapter {n}: {'ok' if not mism else f'{len(mism)} output blocks differ'}")
            for line, want, got in mism:
                print(f"  block at line {line}:\n--- page\n{want}--- printed\n{got}")
            bad += len(mism)
        return 0 if not bad else 1
    if a.cmd == "update":
        for n in a.chapter:
            print(f"chapter {n}: {update_chapter(n)} output blocks written")
        return 0
    if a.cmd == "figures":
        from ._figures import draw_all
        for p in draw_all():
            print(p)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
