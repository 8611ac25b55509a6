"""Speed of ``refvae.kernels.fastexp.exp_tile`` vs ``math.exp`` in a Numba loop vs ``np.exp``.

Usage: ``python validation/bench_fastexp.py`` (one thread, same run, same machine). Each number is
the minimum over 300 short timings of ~2e5 elements (robust to other processes sharing the
cores; a loaded machine shows up as a spread, not as a shifted minimum). Prints ns per element for arrays of 128 and 4096 float64 values, for arguments like the mixture kernel's
(``d = t - m`` uniform in [-40, 1], nothing underflows) and for arguments of which 3/4 lie below
the threshold ``lo = -50`` (where the old kernel skipped exp by a branch and exp_tile writes 0.0).

Rows:
- ``exp_tile``: ``exp_tile(d, out, lo)`` called from a Numba loop;
- ``exp_shift_tile``: ``exp_shift_tile(x, shift, out, lo)`` (subtraction fused);
- ``math.exp loop``: ``out[k] = math.exp(d[k])`` in Numba (libm, one value at a time);
- ``math.exp, if d >= lo``: the same with the data-dependent skip branch of the current kernel;
- ``np.exp(d, out=out)``: called from Python (includes ~0.5 us of call overhead per array).

To compile for another CPU set ``NUMBA_CPU_NAME`` *and* ``NUMBA_CPU_FEATURES`` (with the name alone
Numba keeps the host's features), e.g. for the AVX2-only Zen 1 machines::

    NUMBA_CPU_NAME=znver1 NUMBA_CPU_FEATURES=+avx,+avx2,+fma,+bmi,+bmi2,+f16c,+popcnt,+sse4.2,-avx512f \\
        python validation/bench_fastexp.py

The script prints which vector registers and LLVM vector types the exp_tile loop uses.
"""

import math
import os
import platform
import re
import time
import timeit

import llvmlite.binding as ll
import numba
import numpy as np
from numba import njit

from refvae.kernels.fastexp import exp_shift_tile, exp_tile

SEED = 20261125


def _repeated(step):
    """A Numba loop ``run(d, out, lo, reps)`` calling ``step(d, out, lo)`` reps times (inlined:
    the same code as writing the step into the loop) and reading one output each time."""
    @njit
    def run(d, out, lo, reps):
        s = 0.0
        for i in range(reps):
            step(d, out, lo)
            s += out[i % d.shape[0]]
        return s
    return run


@njit(inline="always")
def _step_tile(d, out, lo):
    exp_tile(d, out, lo)


@njit(inline="always")
def _step_shift_tile(d, out, lo):
    exp_shift_tile(d, 0.5, out, lo)


@njit(inline="always")
def _step_math(d, out, lo):
    for k in range(d.shape[0]):
        out[k] = math.exp(d[k])


@njit(inline="always")
def _step_math_branch(d, out, lo):
    for k in range(d.shape[0]):
        dk = d[k]
        if dk >= lo:  # the skip branch of the old kernel (data-dependent)
            out[k] = math.exp(dk)
        else:
            out[k] = 0.0


_rep_tile, _rep_shift_tile = _repeated(_step_tile), _repeated(_step_shift_tile)
_rep_math, _rep_math_branch = _repeated(_step_math), _repeated(_step_math_branch)


def _time_numba(fn, d, out, lo, total=2e5, repeat=300):
    reps = max(1, int(total // len(d)))
    fn(d, out, lo, 1)  # compile
    best = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(d, out, lo, reps)
        best.append(time.perf_counter() - t0)
    return min(best) / (reps * len(d)) * 1e9


def _time_numpy(d, out, total=2e5, repeat=300):
    reps = max(1, int(total // len(d)))
    with np.errstate(under="ignore"):
        t = min(timeit.repeat(lambda: np.exp(d, out=out), number=reps, repeat=repeat))
    return t / (reps * len(d)) * 1e9


def vector_registers():
    """Vector registers / LLVM vector types in a fresh (uncached) compile of exp_tile(C, C, f8)."""
    fresh = njit(exp_tile.py_func)  # cached code cannot be inspected
    arr = numba.types.float64[::1]
    fresh.compile((arr, arr, numba.types.float64))
    sig = fresh.signatures[0]
    asm = fresh.inspect_asm(sig)
    llvm = fresh.inspect_llvm(sig)
    return ({r: len(re.findall(r"%" + r + r"\d+", asm)) for r in ("xmm", "ymm", "zmm")},
            sorted(set(re.findall(r"<\d+ x (?:double|i64)>", llvm))),
            sorted(set(re.findall(r"call\s+\S+\s+([^\s(]+)", asm))))


def main():
    numba.set_num_threads(1)
    cpu = os.environ.get("NUMBA_CPU_NAME") or ll.get_host_cpu_name()
    if os.environ.get("NUMBA_CPU_FEATURES"):
        cpu += " [" + os.environ["NUMBA_CPU_FEATURES"] + "]"
    print(f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"llvmlite {ll.llvm_version_info}, host CPU {ll.get_host_cpu_name()}, code for {cpu}, seed {SEED}")
    rng = np.random.default_rng(SEED)
    rows = {}
    for n in (128, 4096):
        for label, d, lo in (("d in [-40, 1]", rng.uniform(-40.0, 1.0, n), -50.0),
                             ("3/4 below lo", np.where(rng.uniform(size=n) < 0.75,
                                                       rng.uniform(-800.0, -50.0, n),
                                                       rng.uniform(-50.0, 1.0, n)), -50.0)):
            out = np.empty(n)
            rows[(n, label)] = {
                "exp_tile": _time_numba(_rep_tile, d, out, lo),
                "exp_shift_tile": _time_numba(_rep_shift_tile, d, out, lo),
                "math.exp loop": _time_numba(_rep_math, d, out, lo),
                "math.exp, if d >= lo": _time_numba(_rep_math_branch, d, out, lo),
                "np.exp(d, out=out)": _time_numpy(d, out),
            }
    cols = list(rows)
    print(f"{'ns per element':24s}" + "".join(f"{f'n={n}, {lab}':>26s}" for n, lab in cols))
    for name in rows[cols[0]]:
        print(f"{name:24s}" + "".join(f"{rows[c][name]:26.2f}" for c in cols))
    regs, vtypes, calls = vector_registers()
    print(f"exp_tile asm register mentions {regs}; LLVM vector types {vtypes}; calls {calls or 'none'}")


if __name__ == "__main__":
    main()
