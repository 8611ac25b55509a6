"""Accuracy of ``refvae.kernels.fastexp`` against mpmath: max error in ulps of the exact exp.

Usage: ``python validation/accuracy_fastexp.py [n_uniform] [n_edge] [n_numpy]`` (defaults 2e6, 2e6,
2e7). Prints, with provenance:

1. the max ulp error of ``exp_tile`` on ``n_uniform`` uniform points in [-745.13, 709.78] and
   ``n_edge`` points near multiples of ln2/2 (where the reduced argument is largest and the rounding
   of n flips), near the ends of the range (overflow 709.78, -708, underflow -745.13), in the
   subnormal range, and near 0 -- all against mpmath exp at 120 bits;
2. the max ulp error of ``np.exp`` on the same points (so that it can serve as a reference);
3. the max ulp distance between ``exp_tile`` and ``np.exp`` on ``n_numpy`` further uniform points.

ulp = the spacing of doubles in the binade of the exact value (2^-1074 in the subnormal range).
Error = |f - e| / ulp(e), computed as |(f - c) / ulp - (e - c) / ulp| with c = float(e): the first
term is exact in double, the second is formed in mpmath.
"""

import math
import platform
import sys
import time
from multiprocessing import Pool

import mpmath as mp
import numba
import numpy as np

from refvae.kernels.fastexp import exp_tile, fast_exp

SEED = 20261125
LN2 = math.log(2.0)


def _exact(chunk):
    """For each x: c = float(exp(x)), delta = (exp(x) - c) / ulp in ulps, ex = log2(ulp).

    ulp = 2^(ex) with ex = max(floor(log2 exp(x)), -1022) - 52. delta is formed in mpmath and
    scaled before rounding to double (a raw exp(x) - c would itself round to the subnormal grid).
    """
    mp.mp.prec = 120
    c = np.empty(len(chunk))
    delta = np.empty(len(chunk))
    ex = np.empty(len(chunk), dtype=np.int64)
    for i, x in enumerate(chunk):
        e = mp.exp(mp.mpf(float(x)))
        c[i] = float(e)
        ex[i] = max(int(mp.frexp(e)[1]) - 1, -1022) - 52
        delta[i] = float(mp.ldexp(e - mp.mpf(c[i]), -int(ex[i])))
    return c, delta, ex


def exact_parts(x, processes=2):
    chunks = np.array_split(np.asarray(x, dtype=np.float64), max(1, len(x) // 20000))
    with Pool(processes) as pool:
        parts = pool.map(_exact, chunks)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def ulp_errors(f, c, delta, ex):
    """|f - exp(x)| / ulp(exp(x)); f - c is exact in double (f and c are neighbours)."""
    return np.abs(np.ldexp(f - c, -ex) - delta)


def edge_points(n, rng):
    """Points near j ln2/2 (every j in range), near the range ends, subnormal range, near 0."""
    js = np.arange(math.ceil(-745.13 / (LN2 / 2)), math.floor(709.78 / (LN2 / 2)) + 1)
    base = js * (LN2 / 2)
    per = max(1, (n // 2) // len(base))
    pts = [base]
    # nextafter steps and relative offsets around each multiple of ln2/2
    for _ in range(per):
        k = rng.integers(-64, 65, size=len(base))
        rel = rng.choice([1e-16, 1e-14, 1e-12, 1e-10, 1e-8, 1e-6], size=len(base))
        pts.append(base + k * np.spacing(np.maximum(np.abs(base), 1e-300)))
        pts.append(base * (1 + rng.uniform(-1, 1, len(base)) * rel) + rng.uniform(-1, 1, len(base)) * rel)
    m = n - sum(len(p) for p in pts)
    q = max(0, m) // 6
    pts += [
        709.782712893384 - rng.uniform(0, 1e-3, q),       # just below overflow
        -708.0 + rng.uniform(-0.5, 0.5, q),                # around the default lower threshold
        -745.1332191019411 + rng.uniform(0, 1e-3, q),      # just above total underflow
        rng.uniform(-745.13, -708.4, q),                   # subnormal results
        rng.choice([-1, 1], q) * np.exp(rng.uniform(-700, 0, q)),  # tiny |x|
        rng.uniform(-1, 1, max(0, m) - 5 * q),             # near 0 (the kernel's d <= 1)
    ]
    x = np.concatenate(pts)
    return x[(x >= -745.13) & (x <= 709.78)]


def main():
    n_uni = int(float(sys.argv[1])) if len(sys.argv) > 1 else 2_000_000
    n_edge = int(float(sys.argv[2])) if len(sys.argv) > 2 else 2_000_000
    n_np = int(float(sys.argv[3])) if len(sys.argv) > 3 else 20_000_000
    rng = np.random.default_rng(SEED)
    print(f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"mpmath {mp.__version__}, {platform.machine()}, seed {SEED}")
    sets = {"uniform": rng.uniform(-745.13, 709.78, n_uni), "edge": edge_points(n_edge, rng)}
    worst_all = 0.0
    for name, x in sets.items():
        t0 = time.perf_counter()
        c, delta, ex = exact_parts(x)
        f = np.empty_like(x)
        exp_tile(x, f, -np.inf)
        err = ulp_errors(f, c, delta, ex)
        with np.errstate(under="ignore"):
            err_np = ulp_errors(np.exp(x), c, delta, ex)
        normal = c >= 2.2250738585072014e-308
        i = int(np.argmax(err))
        worst_all = max(worst_all, float(err.max()))
        scalar_same = bool(np.all(np.array([fast_exp(v) for v in x[:20000]]) == f[:20000]))
        print(f"{name:8s} {len(x):>9d} points: exp_tile max {err.max():.3f} ulp at x = {x[i]!r} "
              f"(normal results {err[normal].max():.3f}, subnormal {err[~normal].max() if (~normal).any() else 0:.3f}); "
              f"mean {err.mean():.3f}; > 0.5 ulp: {np.mean(err > 0.5):.2e}; > 1 ulp: {int(np.sum(err > 1))}; "
              f"np.exp max {err_np.max():.3f} ulp; fast_exp == exp_tile: {scalar_same} "
              f"[{time.perf_counter() - t0:.0f} s]")
    print(f"max over {sum(len(x) for x in sets.values())} mpmath points: {worst_all:.3f} ulp")
    # many more points against np.exp (its own error is measured above)
    x = rng.uniform(-708.0, 709.78, n_np)
    f = np.empty_like(x)
    exp_tile(x, f, -np.inf)
    r = np.exp(x)
    d = np.abs(f - r) / np.spacing(r)
    print(f"vs np.exp on {n_np} uniform points in [-708, 709.78]: max {d.max():.3f} ulp(np.exp), "
          f"identical {np.mean(f == r):.4f}")


if __name__ == "__main__":
    main()
