r"""Known deviations: a JSON list of ``{"case", "quantity", "reason"}`` (fnmatch patterns) that
turns listed failures into "known"."""

from __future__ import annotations

import fnmatch
import json
import os

__all__ = ["load_known_deviations"]


def load_known_deviations(path):
    """Read a known-deviations file: a JSON list of ``{"case", "quantity", "reason"}`` objects.

    ``case`` and ``quantity`` are fnmatch patterns (``"*"``, ``"grad.prior.*"``); a check is named
    ``check.<name>`` (``check.nll``). ``reason`` must be a non-empty string. Anything else is a
    ``ValueError`` naming the file and the entry.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path of the known-deviations file must be a path, got {type(path).__name__}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the known-deviations file: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: not JSON (or nested too deeply): {exc}") from None
    return validate_known_deviations(data, path)


def validate_known_deviations(data, where="known deviations"):
    if not isinstance(data, list):
        raise ValueError(f"{where}: must be a JSON list of {{case, quantity, reason}} objects")
    out = []
    for i, e in enumerate(data):
        if not isinstance(e, dict) or set(e) != {"case", "quantity", "reason"}:
            raise ValueError(f"{where}: entry {i} must be an object with exactly the keys case, "
                             f"quantity, reason; got {e!r}")
        if not all(isinstance(e[k], str) and e[k].strip() for k in ("case", "quantity", "reason")):
            raise ValueError(f"{where}: entry {i}: case, quantity and reason must be non-empty strings")
        out.append(dict(e))
    return out


def _known(known, case, quantity):
    for e in known:
        if fnmatch.fnmatchcase(case, e["case"]) and fnmatch.fnmatchcase(quantity, e["quantity"]):
            return e
    return None

