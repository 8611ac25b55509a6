r"""Checksums: ``SHA256SUMS`` of the case files, for integrity (not for regeneration: module
docstring of :mod:`refvae.tools.golden`)."""

from __future__ import annotations

import os
import re

from ...io import _atomic_write_bytes
from .case import ARRAYS_FILE, CHECKSUM_FILE, MANIFEST_FILE, _check_dir_arg, golden_dir

__all__ = ["write_checksums", "verify_checksums", "require_checksums"]


def _sha256(path):
    from ...io import file_sha256
    return file_sha256(path)


def _case_files(directory):
    out = []
    for name in sorted(os.listdir(directory)):
        sub = os.path.join(directory, name)
        if os.path.isdir(sub) and os.path.isfile(os.path.join(sub, MANIFEST_FILE)):
            for f in (ARRAYS_FILE, MANIFEST_FILE):
                if os.path.isfile(os.path.join(sub, f)):
                    out.append(f"{name}/{f}")
    return out


def write_checksums(directory) -> str:
    """Write ``directory/SHA256SUMS`` (``sha256sum -c`` format) for every case file in it."""
    directory = _check_dir_arg(directory, "directory")
    if not os.path.isdir(directory):
        raise ValueError(f"directory {directory!r}: not a directory of golden cases")
    lines = [f"{_sha256(os.path.join(directory, rel))}  {rel}" for rel in _case_files(directory)]
    path = os.path.join(directory, CHECKSUM_FILE)
    _atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path


_CHECKSUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")


def _read_checksums(path):
    """``{relative path: digest}`` from a ``SHA256SUMS`` file (``sha256sum`` format).

    A line that is not ``<64 hex digits>  <case>/<file>``, a path that leaves the directory
    (absolute, ``..``) or a path listed twice is a ``ValueError`` naming the file and the line.
    """
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot be read as a checksum list ({exc})") from None
    entries = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _CHECKSUM_LINE.fullmatch(line)
        if m is None:
            raise ValueError(f"{path}, line {i}: malformed checksum line {line[:80]!r}; expected "
                             f"'<64 hex digits>  <case>/<file>'")
        digest, rel = m.group(1).lower(), m.group(2)
        if rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in rel.split("/")):
            raise ValueError(f"{path}, line {i}: {rel!r} is not a relative path inside "
                             f"{os.path.dirname(path)!r}")
        if rel in entries:
            raise ValueError(f"{path}, line {i}: {rel!r} is listed twice")
        entries[rel] = digest
    return entries


def _checksum_problems(directory, cases=None):
    """``(sums_path, [(rel, kind), ...])`` with kind in 'missing-sums', 'differs', 'listed but
    missing', 'not listed'; only the files of ``cases`` (names) when given."""
    directory = golden_dir() if directory is None else _check_dir_arg(directory, "directory")
    if not os.path.isdir(directory):
        raise ValueError(f"directory {directory!r}: not a directory of golden cases")
    wanted = None
    if cases is not None:
        if isinstance(cases, str) or not isinstance(cases, (list, tuple, set)):
            raise TypeError(f"cases must be a list of case names, got {type(cases).__name__}")
        wanted = set()
        for c in cases:
            if not isinstance(c, str) or not os.path.isdir(os.path.join(directory, c)) \
                    or os.sep in c or "/" in c or c in (".", ".."):
                raise ValueError(f"cases: no case {c!r} in {directory}")
            wanted.add(c)
    path = os.path.join(directory, CHECKSUM_FILE)
    if not os.path.isfile(path):
        return path, [(CHECKSUM_FILE, "missing-sums")]

    def selected(rel):
        return wanted is None or rel.split("/", 1)[0] in wanted

    problems = []
    listed = _read_checksums(path)
    for rel, digest in listed.items():
        if not selected(rel):
            continue
        full = os.path.join(directory, rel)
        if not os.path.isfile(full):
            problems.append((rel, "listed but missing"))
        elif _sha256(full) != digest:
            problems.append((rel, "differs"))
    for rel in _case_files(directory):
        if selected(rel) and rel not in listed:
            problems.append((rel, "not listed"))
    return path, problems


def verify_checksums(directory=None, cases=None) -> list:
    """Problems with ``SHA256SUMS`` in ``directory`` (default: the committed cases); [] if none.

    ``cases``: names of the cases to check (default: every file listed and every case present).
    Integrity only (a corrupted or edited file): see the module docstring for why regeneration
    is compared by value instead. A missing ``SHA256SUMS`` is one problem; a directory that does
    not exist, or a malformed line of ``SHA256SUMS``, is a ``ValueError`` naming it (and the line).
    """
    path, problems = _checksum_problems(directory, cases)
    text = {"differs": f"SHA-256 differs from {CHECKSUM_FILE}", "listed but missing": "listed but missing",
            "not listed": f"not listed in {CHECKSUM_FILE}"}
    return [f"{path} is missing" if kind == "missing-sums" else f"{rel}: {text[kind]}"
            for rel, kind in problems]


def require_checksums(directory=None, cases=None):
    """Raise ``ValueError`` unless every file of the cases in ``directory`` (only ``cases``, names,
    when given) matches ``SHA256SUMS``: ``"corrupt golden case <name>: <file> does not match
    SHA256SUMS"``; a missing ``SHA256SUMS`` is an error too (it says how to go on without it)."""
    path, problems = _checksum_problems(directory, cases)
    if not problems:
        return
    msgs = []
    for rel, kind in problems:
        if kind == "missing-sums":
            raise ValueError(f"golden cases in {os.path.dirname(path)}: {CHECKSUM_FILE} is missing, so "
                             f"the cases cannot be checked for corruption; write it with "
                             f"refvae.tools.golden.write_checksums (refvae golden does) or pass --no-checksums "
                             f"(checksums=False) to use the cases unchecked")
        case, _, f = rel.partition("/")
        msgs.append(f"corrupt golden case {case}: {f} " + {
            "differs": f"does not match {CHECKSUM_FILE}",
            "listed but missing": f"is listed in {CHECKSUM_FILE} but missing",
            "not listed": f"is not listed in {CHECKSUM_FILE} (regenerate it, or pass --no-checksums)"}[kind])
    more = f" (and {len(msgs) - 1} more problem(s))" if len(msgs) > 1 else ""
    raise ValueError(f"{msgs[0]} ({path}){more}")

