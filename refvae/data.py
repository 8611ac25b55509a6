"""Data: the 8x8 digits split of the text, and a synthetic stand-in that needs no extra package.

Both give the same format: float64 arrays of shape (n, side*side) (8x8 images flattened in C order,
so D = 64) whose entries are the integers 0..num_vals-1 (num_vals = 17 for the digits, values
0..16) — the input of the categorical decoder with C = 17 (SPEC section 2). The encoder reads the
raw values, with no rescaling (SPEC section 3).

* :func:`load_digits_split` — scikit-learn's ``load_digits`` (1797 images) split in its own order
  into ``train`` (the first 1000), ``val`` (the next 350) and ``test`` (the remaining 447), the
  split of the text's code. Needs the ``data`` extra (``pip install refvae[data]``).
* :func:`synthetic_digits` / :func:`synthetic_split` — images drawn around a few random "stroke"
  prototypes with integer noise; deterministic given the ``numpy.random.Generator``. For tests and
  for users without scikit-learn.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_parameter_memory, check_positive_int, check_rng

__all__ = ["DIGITS_SPLIT", "load_digits_split", "synthetic_digits", "synthetic_split"]

#: Sizes of the digits split (train, val, test); they add up to scikit-learn's 1797 images.
DIGITS_SPLIT = (1000, 350, 447)


def load_digits_split():
    """scikit-learn's 8x8 digits, split in load order into train / val / test = 1000 / 350 / 447.

    Returns
    -------
    dict
        ``{"train": (1000, 64), "val": (350, 64), "test": (447, 64)}``, each a new C-contiguous
        float64 array with the integer pixel values 0..16 (``load_digits().data`` rows 0..999,
        1000..1349 and 1350..1796, unshuffled and unscaled).

    Raises
    ------
    ImportError
        If scikit-learn is not installed (``pip install refvae[data]``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "refvae.data.load_digits_split needs scikit-learn, which is not installed; install the "
            "'data' extra with `pip install refvae[data]` (or use refvae.data.synthetic_split, "
            "which needs no extra package)") from exc
    x = np.asarray(load_digits().data, dtype=np.float64)
    n_total = sum(DIGITS_SPLIT)
    if x.shape != (n_total, 64):
        raise RuntimeError(f"scikit-learn's load_digits returned shape {x.shape}; expected "
                           f"({n_total}, 64). The digits split assumes the standard data set.")
    if not (np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= 16):
        raise RuntimeError("scikit-learn's load_digits returned values outside the integers 0..16")
    n_train, n_val, _ = DIGITS_SPLIT
    return {"train": np.ascontiguousarray(x[:n_train]).copy(),
            "val": np.ascontiguousarray(x[n_train:n_train + n_val]).copy(),
            "test": np.ascontiguousarray(x[n_train + n_val:]).copy()}


def _stroke_prototype(rng, side, num_vals):
    """One prototype: 2 or 3 thick line segments with random end points and intensities."""
    img = np.zeros((side, side))
    top = num_vals - 1
    for _ in range(int(rng.integers(2, 4))):
        p0, p1 = rng.uniform(0.0, side - 1.0, size=(2, 2))
        intensity = float(rng.integers((top + 1) // 2, top + 1)) if top > 0 else 0.0
        for s in np.linspace(0.0, 1.0, 4 * side):
            r, c = np.rint(p0 + s * (p1 - p0)).astype(int)
            img[r, c] = max(img[r, c], intensity)
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):  # a soft edge: half intensity
                rr, cc = r + dr, c + dc
                if 0 <= rr < side and 0 <= cc < side:
                    img[rr, cc] = max(img[rr, cc], np.floor(intensity / 2))
    return img.ravel()


def synthetic_digits(n, rng, num_vals=17, side=8, *, n_prototypes=10):
    """``n`` synthetic images in the digits format, deterministic given ``rng``.

    Structure: ``n_prototypes`` prototype images are drawn first, each 2 or 3 thick line segments
    ("strokes") with integer intensities in the upper half of 0..num_vals-1. Each sample picks a
    prototype uniformly and adds independent integer noise, uniform on {-a, ..., a} with
    ``a = max(1, (num_vals - 1) // 8)`` (a = 2 for 17 values), then clips to 0..num_vals-1. So the
    data has a few clusters, correlated pixels and a known-noise floor, like a small digits set.

    Parameters
    ----------
    n : int >= 1
        Number of images.
    rng : numpy.random.Generator
        The only source of randomness: prototypes, then prototype choices, then noise.
    num_vals : int >= 2
        Number of pixel values (17 for the digits: 0..16).
    side : int >= 2
        Image side; each image is flattened to ``side * side`` values in C order.
    n_prototypes : int >= 1
        Number of prototypes (clusters).

    Returns
    -------
    numpy.ndarray
        Shape (n, side*side), float64, C-contiguous, integer values in 0..num_vals-1.

    Raises
    ------
    TypeError, ValueError
        Naming the argument, for a non-integer or too small size, a non-Generator ``rng``, or
        sizes whose arrays (2 values of 8 bytes per pixel) would not fit in memory.
    """
    n = check_positive_int(n, "n")
    rng = check_rng(rng)
    num_vals = check_positive_int(num_vals, "num_vals", minimum=2)
    side = check_positive_int(side, "side", minimum=2)
    n_prototypes = check_positive_int(n_prototypes, "n_prototypes")
    # the images and their int64 noise: 2 values of 8 bytes per pixel, checked before allocating
    check_parameter_memory(2 * n * side * side, "synthetic_digits", f"n={n}, side={side}",
                           kind="pixel values")
    protos = np.stack([_stroke_prototype(rng, side, num_vals) for _ in range(n_prototypes)])
    labels = rng.integers(0, n_prototypes, size=n)
    a = max(1, (num_vals - 1) // 8)
    noise = rng.integers(-a, a + 1, size=(n, side * side))
    x = np.clip(protos[labels] + noise, 0, num_vals - 1)
    return np.ascontiguousarray(x, dtype=np.float64)


def synthetic_split(rng, n_train=1000, n_val=350, n_test=447, *, num_vals=17, side=8,
                    n_prototypes=10):
    """A train / val / test split of one :func:`synthetic_digits` draw (same prototypes for all).

    Defaults match the digits split (1000 / 350 / 447). ``n_train >= 1``; ``n_val`` and ``n_test``
    may be 0 (an empty (0, side*side) array). Rows are drawn once, ``n_train + n_val + n_test`` of
    them, and split in order, so the three parts come from the same distribution.

    Returns
    -------
    dict
        ``{"train": (n_train, D), "val": (n_val, D), "test": (n_test, D)}``, D = side*side, float64.
    """
    rng = check_rng(rng)
    n_train = check_positive_int(n_train, "n_train")
    n_val = check_positive_int(n_val, "n_val", minimum=0)
    n_test = check_positive_int(n_test, "n_test", minimum=0)
    x = synthetic_digits(n_train + n_val + n_test, rng, num_vals, side, n_prototypes=n_prototypes)
    return {"train": x[:n_train].copy(), "val": x[n_train:n_train + n_val].copy(),
            "test": x[n_train + n_val:].copy()}
