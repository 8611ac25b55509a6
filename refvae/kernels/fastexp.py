r"""A branch-free, vectorisable ``exp`` for Numba kernels (max error 0.76 ulp).

What it is
----------
``math.exp`` inside Numba is a call into libm for one value at a time (5-8 ns, 23-32 ns when the
result underflows; this llvmlite has no vector math library), so a loop of exps does not
vectorise. This module computes exp with plain floating-point and integer arithmetic that LLVM
auto-vectorises (AVX2 ``<4 x double>`` / AVX-512 ``<8 x double>``) **without** ``fastmath``:

- :func:`exp_tile` ``(d, out, lo)``: ``out[k] = exp(d[k])``, and exactly ``0.0`` where ``d[k] < lo``;
- :func:`exp_shift_tile` ``(x, shift, out, lo)``: the same for ``d[k] = x[k] - shift`` (the
  subtraction is rounded first, so the result equals ``exp_tile`` applied to ``x - shift``);
- :func:`fast_exp` ``(x)``: the scalar version (same arithmetic, same results bit for bit).

All are ``@njit`` functions, callable from other Numba kernels (and from Python).

Forward
-------
.. math::

    n = \operatorname{round}(x \log_2 e), \quad r = (x - n\,\ln 2_{hi}) - n\,\ln 2_{lo},
    \quad e^x = 2^n \big(1 + r + r^2 q(r)\big),

1. *Argument reduction.* ``t = x * log2(e) + 1.5 * 2^52`` rounds ``x log2 e`` to the nearest
   integer n (the "magic shifter": in [2^52, 2^53) the spacing of doubles is 1), and
   ``n = t - 1.5 * 2^52`` exactly; the integer n is also the low mantissa bits of t,
   ``bits(t) - 0x4338000000000000``. n may be off by one from the true rounding of x/ln2
   (``x * log2 e`` is rounded), so |r| <= ln2/2 + 1e-13.
2. *Cody-Waite.* ``ln2_hi`` (fdlibm's, 32 significant bits) times |n| <= 1076 is exact, and
   ``x - n ln2_hi`` is exact (Sterbenz); ``ln2_hi + ln2_lo`` equals ln 2 to 1.2e-26.
3. *Polynomial.* q has degree 9 (minimax for the relative error of ``1 + r + r^2 q(r)`` against
   e^r on |r| <= 0.3466, by Remez in mpmath at 60 digits: 3.6e-18 = 0.03 ulp, 0.10 ulp with the
   coefficients rounded to double), evaluated by Estrin's scheme (dependency depth 4 instead of
   Horner's 9; AVX2 code on a Zen 4 host: 2.5 ns/element with Horner, 1.7 with Estrin). The rounding
   error c of r (Fast2Sum) is added back, and 1 + r is split exactly into u + e, so the result is
   ``u + (e + (r^2 q + c))``: one final rounding of a sum whose small part is already accurate.
4. *Scaling.* 2^n is built from bits, ``(n + 1023) << 52``, in two halves n = n1 + n2,
   ``n1 = n >> 1`` (arithmetic shift), so each factor is a normal double for every n in
   [-1076, 1024]: ``(p * 2^n1) * 2^n2``. The first product is exact; the second rounds once, so a
   subnormal result is correctly rounded from p and an overflow gives +inf.

Bit casts between float64 and int64 are LLVM ``bitcast`` instructions (a Numba ``@intrinsic``),
so no scratch array and no memory round trip is needed; the whole loop body is straight-line
code with selects (no data-dependent branch), which the loop vectoriser turns into vector code.

Numerics
--------
*Accuracy.* Measured max error 0.755 ulp on 4.0e6 points against mpmath (2e6 uniform on
[-745.13, 709.78], 2e6 near multiples of ln2/2, the range ends, the subnormal range and 0):
0.748 ulp for normal results, 0.755 ulp (of the subnormal grid) for subnormal ones; 97.4% of
results are correctly rounded. ``validation/accuracy_fastexp.py`` reproduces this;
``tests/test_fastexp.py`` asserts <= 2 ulp (the kernel's budget) and <= 1 ulp on 1e5 points.

*Range and special values.* The argument is clamped to [max(lo, -746), 710] before the
reduction, so the bit tricks never see an out-of-range n: d = -inf, and any d < lo, gives exactly
0.0 (by a select, not a branch); d > 709.78 gives +inf (d = +inf too); NaN gives NaN. For
lo >= -708 no subnormal number is ever produced or multiplied (subnormal operands are slow on
some CPUs). lo may be -inf (then exp underflows to 0.0 by itself below -745.13).

*No fastmath.* The arithmetic is written for IEEE semantics: reassociation would destroy the
magic shifter (``(y + S) - S`` folds to y) and the Cody-Waite split. Results are identical across
runs, thread counts and vector widths (every lane does the same scalar operations; no FMA
contraction happens without fastmath).

How to use it in a kernel
-------------------------
Per thread (inside the ``prange`` body), allocate one output buffer of the tile size, then per
row of the tile::

    ebuf = np.empty(T)                          # once per thread / query block
    ...
    exp_shift_tile(acc[q], mq, ebuf, skip)      # ebuf[k] = exp(acc[q, k] - mq), 0.0 below skip
    for k in range(T):                          # consume ebuf (e.g. compensated sum)
        ...

``d``/``x`` and ``out`` should be C-contiguous 1-d float64 arrays (a row of a C-contiguous 2-d
array is); ``out`` must be at least as long as ``d`` and must not overlap it except exactly
(``exp_tile(d, d, lo)`` in place is fine).

References
----------
W. J. Cody and W. Waite, *Software Manual for the Elementary Functions* (1980), argument
reduction with a split constant; fdlibm ``e_exp.c`` (the ln2_hi/ln2_lo split);
``validation/results/bench_mixture.md``, "Machine peaks" (measured cost of ``math.exp`` in Numba:
4.26 ns per call for a normal result, 18.8 ns for a subnormal one, 21.4 ns for an underflow to 0;
:func:`exp_tile` 1.14, 2.63 and 2.64 ns per value).
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["exp_tile", "exp_shift_tile", "fast_exp", "EXP_MIN_ARG", "EXP_MAX_ARG"]

LOG2E = 1.4426950408889634            #: log2(e), rounded to nearest
LN2_HI = 6.93147180369123816490e-01   #: 0x3FE62E42FEE00000: 32 significant bits, n * LN2_HI exact
LN2_LO = 1.90821492927058770002e-10   #: ln 2 - LN2_HI, rounded to nearest
SHIFTER = 6755399441055744.0          #: 1.5 * 2**52 (bits 0x4338000000000000)
SHIFTER_BITS = 0x4338000000000000
EXP_MIN_ARG = -746.0  #: arguments are clamped below here: exp(-746) rounds to 0.0
EXP_MAX_ARG = 710.0   #: arguments are clamped above here: exp(710) overflows to +inf

# p(r) = 1 + r + r^2 (C2 + C3 r + ... + C11 r^9): minimax relative error on |r| <= 0.3466
# (Remez, mpmath dps=60): 3.6e-18 exact coefficients, 1.08e-17 = 0.10 ulp as these doubles.
C2 = 0.5000000000000011
C3 = 0.16666666666666413
C4 = 0.04166666666653018
C5 = 0.008333333333494435
C6 = 0.0013888888943622486
C7 = 0.00019841269506617754
C8 = 2.4801493107682442e-05
C9 = 2.755758635652893e-06
C10 = 2.7630244972917736e-07
C11 = 2.5000061421180977e-08


# --------------------------------------------------------------------------- bit casts

@intrinsic
def _f64_bits(typingctx, x):
    """The IEEE-754 bits of a float64 as an int64 (an LLVM bitcast; vectorises)."""
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits_f64(typingctx, n):
    """The float64 whose IEEE-754 bits are the int64 n (an LLVM bitcast; vectorises)."""
    if n != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


# --------------------------------------------------------------------------- core

@njit(inline="always")
def _exp_core(x):
    """exp(x) for x in [EXP_MIN_ARG, EXP_MAX_ARG] (or NaN): straight-line code, no branch."""
    t = x * LOG2E + SHIFTER          # round(x log2 e) in the low mantissa bits of t
    n = t - SHIFTER                  # exact
    hi = x - n * LN2_HI              # exact
    lo = n * LN2_LO
    r = hi - lo
    c = (hi - r) - lo                # the rounding error of r (Fast2Sum; ~1e-23 when |hi| < |lo|)
    # q(r) = C2 + C3 r + ... + C11 r^9 by Estrin's scheme (dependency depth 4 multiply-adds
    # instead of Horner's 9: the loop is latency-bound otherwise)
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    q01 = (C2 + C3 * r) + (C4 + C5 * r) * r2
    q23 = (C6 + C7 * r) + (C8 + C9 * r) * r2
    q4 = C10 + C11 * r
    q = (q01 + q23 * r4) + q4 * r8
    # p = 1 + r + (r^2 q + c) with 1 + r split exactly (Fast2Sum, |r| < 1): u + e = 1 + r
    u = 1.0 + r
    e = (1.0 - u) + r
    p = u + (e + (r2 * q + c))       # exp(r + c) = p(r) + c p(r); the dropped c r is < 0.1 ulp
    ni = _f64_bits(t) - SHIFTER_BITS  # n as an integer, |n| <= 1076
    n1 = ni >> 1
    n2 = ni - n1
    s1 = _bits_f64((n1 + 1023) << 52)
    s2 = _bits_f64((n2 + 1023) << 52)
    return (p * s1) * s2


@njit(inline="always")
def _clamp(d, lo):
    # NaN passes through both selects (comparisons with NaN are false)
    x = lo if d < lo else d
    return EXP_MAX_ARG if x > EXP_MAX_ARG else x


# --------------------------------------------------------------------------- public

@njit(cache=True)
def fast_exp(x):
    """exp(x) for a float64 scalar, within 0.76 ulp (same arithmetic as :func:`exp_tile`, same bits).

    0.0 below -745.13, +inf above 709.78, NaN for NaN.
    """
    return _exp_core(_clamp(x, EXP_MIN_ARG))


@njit(cache=True)
def exp_tile(d, out, lo):
    """``out[k] = exp(d[k])`` for k < len(d), and exactly ``0.0`` where ``d[k] < lo``.

    d, out : 1-d float64 arrays (C-contiguous for vector code); len(out) >= len(d).
    lo : float threshold; use lo >= -708 to keep every intermediate and result normal.
    Returns None. Branch-free loop body; vectorises without fastmath.
    """
    lo_c = max(lo, EXP_MIN_ARG)
    for k in range(d.shape[0]):
        dk = d[k]
        y = _exp_core(_clamp(dk, lo_c))
        out[k] = 0.0 if dk < lo else y


@njit(cache=True)
def exp_shift_tile(x, shift, out, lo):
    """``out[k] = exp(x[k] - shift)`` for k < len(x), and exactly ``0.0`` where ``x[k] - shift < lo``.

    Identical, bit for bit, to ``exp_tile(x - shift, out, lo)`` without the temporary.
    x, out : 1-d float64 arrays (C-contiguous for vector code); len(out) >= len(x).
    shift : float64 scalar (finite, or x[k] - shift is NaN/inf and handled as such).
    """
    lo_c = max(lo, EXP_MIN_ARG)
    for k in range(x.shape[0]):
        dk = x[k] - shift
        y = _exp_core(_clamp(dk, lo_c))
        out[k] = 0.0 if dk < lo else y
