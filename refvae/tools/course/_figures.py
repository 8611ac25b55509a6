"""The course's figures, drawn from the numbers its chapters compute.

Each figure function runs its chapter's code blocks (:func:`refvae.tools.course._pages.run_page`)
and draws the values it finds in their namespace, so a figure's numbers are the chapter's numbers.
The labels are also stored in the PNG (a ``tEXt`` chunk, key ``Description``, JSON), which lets a
test compare the committed figure with the chapter without matplotlib: :func:`png_labels` reads
them back, :func:`graph_labels` / :func:`paths_labels` compute them from a chapter's namespace.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

from ._pages import chapter_path, course_dir, run_page


def _fmt(a):
    a = np.round(np.asarray(a, dtype=float), 4) + 0.0     # + 0.0: no "-0."
    if a.size == 1:
        return f"{a.item():.4f}"
    rows = np.atleast_2d(a)
    return "; ".join(", ".join(f"{v:.4f}" for v in r) for r in rows)


def graph_labels(ns):
    """Chapter 1: ``[(node, value, gradient), ...]`` from the chapter's namespace."""
    L = 0.5 * (ns["y"][0, 0] - ns["t"]) ** 2
    return [("x", _fmt(ns["x"]), _fmt(ns["dx"])), ("W1", _fmt(ns["W1"]), _fmt(ns["dW1"])),
            ("b1", _fmt(ns["b1"]), _fmt(ns["db1"])), ("h", _fmt(ns["h"]), _fmt(ns["dh"])),
            ("a", _fmt(ns["a"]), _fmt(ns["da"])), ("W2", _fmt(ns["W2"]), _fmt(ns["dW2"])),
            ("b2", _fmt(ns["b2"]), _fmt(ns["db2"])), ("y", _fmt(ns["y"]), _fmt(ns["dy"])),
            ("L", _fmt(L), "1.0000")]


def paths_labels(ns):
    """Chapter 5: the three gradients into z (example 0) and their sum, with z itself."""
    b = 0
    return [("z", _fmt(ns["z"][b]), _fmt(ns["dz"][b])),
            ("decoder path", "ln p(x|z)", _fmt(ns["dz_dec"][b])),
            ("prior path", "ln p(z)", _fmt(ns["dz_p"][b])),
            ("posterior path", "ln q(z|x)", _fmt(ns["dz_q"][b]))]


def png_labels(path):
    """The labels stored in a course PNG (its ``Description`` text chunk), or None."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    pos = 8
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"tEXt":
            key, _, text = body.partition(b"\0")
            if key == b"Description":
                return [tuple(r) for r in json.loads(text.decode("latin-1"))]
        if kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            if key == b"Description":
                return [tuple(r) for r in json.loads(zlib.decompress(rest[1:]).decode("latin-1"))]
        pos += 12 + n
    return None


def _box(ax, xy, title, value, grad, color="#f4f4f4"):
    from matplotlib.patches import FancyBboxPatch
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - 1.1, y - 0.55), 2.2, 1.1, boxstyle="round,pad=0.05",
                                fc=color, ec="#555555", lw=1))
    ax.text(x, y + 0.3, title, ha="center", va="center", fontsize=10, weight="bold")
    ax.text(x, y + 0.0, value, ha="center", va="center", fontsize=7, color="black")
    ax.text(x, y - 0.3, "d: " + grad, ha="center", va="center", fontsize=7, color="#c0392b")


def _arrow(ax, a, b, color="black", rad=0.0, style="-|>"):
    from matplotlib.patches import FancyArrowPatch
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=12, color=color, lw=1.2,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2))


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, ax, xlim, ylim, path, labels):
    """Frame, save with the labels in the PNG's Description chunk (see :func:`png_labels`), close."""
    import matplotlib.pyplot as plt
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Description": json.dumps(labels)})
    plt.close(fig)
    return path


def draw_graph(path):
    """Figure 1: the two-layer network of chapter 1, values forward and gradients backward."""
    plt = _pyplot()
    ns, _ = run_page(chapter_path(1))
    labels = graph_labels(ns)
    pos = {"x": (0, 0), "W1": (2.3, 2.2), "b1": (4.9, 2.2), "h": (3.6, 0), "a": (6.6, 0),
           "W2": (8.5, 2.2), "b2": (11.0, 2.2), "y": (9.8, 0), "L": (12.9, 0)}
    fig, ax = plt.subplots(figsize=(13, 4.2))
    for name, val, grad in labels:
        _box(ax, pos[name], name, val, grad, "#eaf2fb" if name in ("W1", "b1", "W2", "b2") else "#f4f4f4")
    edges = [("x", "h"), ("W1", "h"), ("b1", "h"), ("h", "a"), ("a", "y"), ("W2", "y"), ("b2", "y"),
             ("y", "L")]
    for u, v in edges:
        (x0, y0), (x1, y1) = pos[u], pos[v]
        if y0 == y1:
            _arrow(ax, (x0 + 1.15, y0 + 0.12), (x1 - 1.15, y1 + 0.12))
            _arrow(ax, (x1 - 1.15, y1 - 0.18), (x0 + 1.15, y0 - 0.18), color="#c0392b")
        else:
            _arrow(ax, (x0, y0 - 0.6), (x1 - 0.2 * np.sign(x1 - x0), y1 + 0.6))
            _arrow(ax, (x1 + 0.3 * np.sign(x0 - x1), y1 + 0.6), (x0 + 0.25, y0 - 0.6), color="#c0392b")
    steps = {("x", "h"): "h = x W1 + b1", ("h", "a"): "a = tanh(h)", ("a", "y"): "y = a W2 + b2",
             ("y", "L"): "L = (y - t)^2 / 2"}
    for (u, v), text in steps.items():
        ax.text((pos[u][0] + pos[v][0]) / 2, -0.85, text, ha="center", fontsize=8, style="italic")
    ax.text(12.35, 2.2, "black: value (forward)\nred: d = dL/d(array)\n(backward)\ntarget t = 1.0",
            fontsize=8, va="center")
    return _save(fig, ax, (-1.3, 14.2), (-1.2, 3.0), path, labels)


def draw_paths(path):
    """Figure 5: the three paths into z (chapter 5), with example 0's gradients on them."""
    plt = _pyplot()
    ns, _ = run_page(chapter_path(5))
    labels = paths_labels(ns)
    fig, ax = plt.subplots(figsize=(12, 4.6))
    P = {"x": (0, 0), "enc": (2.3, 0), "mu": (4.6, 0.9), "lv": (4.6, -0.9), "eps": (4.6, 2.6),
         "z": (7.5, 0.9), "dec": (10.4, 2.6), "prior": (10.4, 0.9), "q": (10.4, -0.9), "loss": (13.2, 0.9)}
    z, dec, prior, q = labels
    simple = {"x": ("x", "data"), "enc": ("encoder MLP", "encoder.0.W, ..."), "mu": ("mu", ""),
              "lv": ("log_var", ""), "eps": ("eps", "noise"), "loss": ("loss", "mean of -ELBO")}
    from matplotlib.patches import FancyBboxPatch
    for k, (t1, t2) in simple.items():
        x, y = P[k]
        ax.add_patch(FancyBboxPatch((x - 0.9, y - 0.4), 1.8, 0.8, boxstyle="round,pad=0.05",
                                    fc="#f4f4f4", ec="#555555"))
        ax.text(x, y + 0.12, t1, ha="center", fontsize=10, weight="bold")
        ax.text(x, y - 0.2, t2, ha="center", fontsize=8)
    _box(ax, P["z"], "z", "z[0] = " + z[1], z[2] + " (sum)", "#fdf2e9")
    ax.text(P["z"][0], P["z"][1] - 0.85, "z = mu + e^(log_var/2) eps", ha="center", fontsize=8,
            style="italic")
    for key, (name, term, grad) in zip(("dec", "prior", "q"), (dec, prior, q)):
        _box(ax, P[key], term, name, grad, "#eaf2fb")
    for u, v in [("x", "enc"), ("enc", "mu"), ("enc", "lv"), ("mu", "z"), ("lv", "z"), ("eps", "z"),
                 ("z", "dec"), ("z", "prior"), ("z", "q"), ("dec", "loss"), ("prior", "loss"), ("q", "loss")]:
        (x0, y0), (x1, y1) = P[u], P[v]
        _arrow(ax, (x0 + 0.95, y0), (x1 - 1.0, y1))
    for u in ("mu", "lv"):
        (x0, y0), (x1, y1) = P[u], P["q"]
        _arrow(ax, (x0 + 0.9, y0 - 0.3), (x1 - 1.0, y1 - 0.35), color="#7f8c8d", rad=0.25)
    ax.text(7.4, -1.9, "grey: the direct path of mu and log_var into ln q(z|x) (it does not go through z)",
            ha="center", fontsize=8, color="#7f8c8d")
    ax.text(10.4, 3.6, "red: each term's gradient reaching z (example 0); they add up to dz",
            ha="center", fontsize=8, color="#c0392b")
    return _save(fig, ax, (-1, 14.3), (-2.2, 3.9), path, labels)


FIGURES = {"01-graph.png": (1, draw_graph, graph_labels), "05-three-paths.png": (5, draw_paths, paths_labels)}


def draw_all():
    out = []
    for name, (_, draw, _) in FIGURES.items():
        out.append(draw(course_dir() / "figures" / name))
    return out
