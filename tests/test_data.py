"""The digits split (sizes, values, order) and the synthetic stand-in (format, determinism)."""

import sys

import numpy as np
import pytest

from refvae.data import DIGITS_SPLIT, load_digits_split, synthetic_digits, synthetic_split


def is_integer_valued(x, top):
    return bool(np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= top)


def test_digits_split_sizes_values_and_order():
    datasets = pytest.importorskip(
        "sklearn.datasets", reason="scikit-learn is the optional 'data' extra (pip install refvae[data])")
    split = load_digits_split()
    assert set(split) == {"train", "val", "test"}
    assert DIGITS_SPLIT == (1000, 350, 447)
    for name, n in zip(("train", "val", "test"), DIGITS_SPLIT):
        x = split[name]
        assert x.shape == (n, 64), name
        assert x.dtype == np.float64 and x.flags.c_contiguous, name
        assert is_integer_valued(x, 16), name
    assert split["train"].max() == 16 and split["train"].min() == 0
    full = datasets.load_digits().data
    np.testing.assert_array_equal(split["train"], full[:1000])
    np.testing.assert_array_equal(split["val"], full[1000:1350])
    np.testing.assert_array_equal(split["test"], full[1350:])
    # new arrays, not views into scikit-learn's (a caller may modify them)
    assert not np.shares_memory(split["train"], full)


def test_missing_sklearn_names_the_data_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install refvae\[data\]"):
        load_digits_split()


@pytest.mark.parametrize("num_vals, side", [(17, 8), (2, 5), (256, 12)])
def test_synthetic_format(num_vals, side):
    x = synthetic_digits(300, np.random.default_rng(0), num_vals, side)
    assert x.shape == (300, side * side)
    assert x.dtype == np.float64 and x.flags.c_contiguous
    assert is_integer_valued(x, num_vals - 1)
    assert x.max() > 0


def test_synthetic_deterministic_per_seed():
    a = synthetic_digits(200, np.random.default_rng(7))
    b = synthetic_digits(200, np.random.default_rng(7))
    c = synthetic_digits(200, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    s1 = synthetic_split(np.random.default_rng(3), 40, 10, 5)
    s2 = synthetic_split(np.random.default_rng(3), 40, 10, 5)
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(s1[k], s2[k])


def test_synthetic_has_structure():
    """Pixels are correlated (a prototype + noise), unlike i.i.d. noise: the leading principal
    component carries far more than the 1/64 share of the variance that independent pixels give."""
    x = synthetic_digits(2000, np.random.default_rng(1))
    var = np.linalg.eigvalsh(np.cov(x, rowvar=False))
    assert var[-1] / var.sum() > 0.1
    # the noise floor: pixel values vary around their prototype, so no column is constant
    assert np.all(x.std(axis=0) > 0)


def test_synthetic_split_sizes_and_shared_distribution():
    s = synthetic_split(np.random.default_rng(2))
    assert [s[k].shape for k in ("train", "val", "test")] == [(1000, 64), (350, 64), (447, 64)]
    # one draw split in order: the same prototypes, so the means agree to sampling error
    assert np.max(np.abs(s["train"].mean(0) - s["test"].mean(0))) < 2.0
    empty = synthetic_split(np.random.default_rng(2), 5, 0, 0)
    assert empty["val"].shape == (0, 64) and empty["test"].shape == (0, 64)


def test_synthetic_argument_checks():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        synthetic_digits(0, rng)
    with pytest.raises(ValueError, match="num_vals must be >= 2"):
        synthetic_digits(5, rng, num_vals=1)
    with pytest.raises(ValueError, match="side must be >= 2"):
        synthetic_digits(5, rng, side=1)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        synthetic_digits(5, 0)
    with pytest.raises(ValueError, match="n_train must be >= 1"):
        synthetic_split(rng, 0, 1, 1)
    with pytest.raises(ValueError, match="n_val must be >= 0"):
        synthetic_split(rng, 1, -1, 1)
