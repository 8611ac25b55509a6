"""Input checking at the public boundary (SPEC section 1).

Every public function converts its array arguments with :func:`as_float_array`, which returns a
C-contiguous float64 copy (or view) and raises a ``ValueError``/``TypeError`` that names the
argument and says what was expected. Nothing downstream ever sees NaN it did not make itself.

One function per quantity: :func:`checked`
------------------------------------------
A quantity (``gaussian.log_prob``, ``primitives.logsumexp_vjp``, ``layers.mlp_forward``, ...) is
ONE function: the arithmetic, with its math docstring. Validation is not a hand-written twin but
a *validator* attached by the decorator :func:`checked`::

    @checked(_check_latent_args)      # validator: dict of the bound arguments -> converted dict
    def log_prob(z, mu, log_var):
        # the math docstring: Forward / Backward / Shapes / Numerics / References
        ...

The decorated name is the checking entry point for user data (it binds the call's arguments to
the function's signature, passes them by name to the validator, and calls the arithmetic with
what the validator returns); ``log_prob.unchecked`` is the bare arithmetic, for refvae's own
callers whose arrays are already checked (the VAE's training step, the priors, the kernels). On
valid input both give bit-identical results; the validator's error messages are the public ones.
"""

from __future__ import annotations

import functools
import inspect
import numbers

import numpy as np
from numba import njit

__all__ = ["as_float_array", "check_cotangent", "check_same_shape", "check_choice", "check_positive_int", "check_rng",
           "check_layer_widths",
           "check_real", "check_mapping", "all_finite", "first_non_finite",
           "NonFiniteIntermediateError", "check_parameter_memory", "MAX_PARAMETER_BYTES", "checked"]

_DBL_MAX = 1.7976931348623157e308
#: arrays at least this large are screened for non-finite entries by a Numba loop (one read, no
#: temporary); smaller ones, and every array that fails the screen, by NumPy (which finds the
#: first bad index for the error message)
_SCREEN_MIN_SIZE = 4096


@njit(cache=True)
def _screen(x, allow_neg_inf):
    """True iff no entry of the 1-d float64 array ``x`` is NaN or +-inf (with ``allow_neg_inf``:
    NaN or +inf). Written as an OR-reduction without early exit, so the loop vectorises."""
    bad = False
    if allow_neg_inf:
        for i in range(x.shape[0]):
            bad |= not x[i] < np.inf
    else:
        for i in range(x.shape[0]):
            bad |= not abs(x[i]) <= _DBL_MAX
    return not bad


def as_float_array(x, name, *, ndim=None, shape=None, finite=True, allow_neg_inf=False,
                   allow_empty=False, allow_complex=False):
    """Convert ``x`` to a C-contiguous float64 array and check it.

    Parameters
    ----------
    x : array_like
        The value to convert. Real numbers only (bool is accepted as 0/1).
    name : str
        The argument's name, used in every error message.
    ndim : int or tuple of int, optional
        Required number of dimensions (or one of several).
    shape : tuple, optional
        Required shape; an entry ``None`` matches any length.
    finite : bool
        Reject NaN and +-inf (default). With ``allow_neg_inf=True``, -inf is accepted but NaN and
        +inf are still rejected (log-weights of components that are switched off).
    allow_empty : bool
        Accept arrays with a zero-length axis (rejected by default).
    allow_complex : bool
        Keep complex input as complex128 (only for complex-step derivative checks of the
        analytic code paths); otherwise complex input is a ``TypeError``.

    Returns
    -------
    numpy.ndarray
        float64 (or complex128) and C-contiguous.
    """
    if type(x) is np.ndarray and x.dtype == np.float64 and x.flags.c_contiguous:
        arr = x   # already what the conversion below would return (the same object)
    else:
        if isinstance(x, (str, bytes)) or x is None:
            raise TypeError(f"{name} must be an array of real numbers, got {type(x).__name__}")
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as e:   # a ragged list of lists, an unconvertible object
            raise TypeError(f"{name} must be an array of real numbers (a rectangular nested list "
                            f"or an ndarray), got {type(x).__name__}: {e}") from None
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
        if np.iscomplexobj(arr):
            if not allow_complex:
                raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
            arr = np.asarray(arr, dtype=np.complex128, order="C")
        else:
            arr = np.asarray(arr, dtype=np.float64, order="C")  # keeps 0-d arrays 0-d
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{name} must have {want} dimension(s), got shape {arr.shape}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if finite:
        if arr.dtype == np.float64 and arr.size >= _SCREEN_MIN_SIZE \
                and _screen(arr.reshape(-1), allow_neg_inf):
            return arr
        real = arr.real if np.iscomplexobj(arr) else arr
        if allow_neg_inf:
            bad = np.isnan(real) | (real == np.inf)
            what = "NaN or +inf"
        else:
            bad = ~np.isfinite(real)
            what = "NaN or inf"
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name} must not contain {what}; found {real[idx]!r} at index {idx}")
    return arr


def check_cotangent(g, shape, name="g"):
    """A VJP's cotangent: finite (NaN or +-inf is a ``ValueError`` naming it: an infinite
    cotangent times a zero partial has no value), float64 or complex128, broadcast (a read-only
    view) to ``shape``, the output shape; a shape that does not broadcast is a ``ValueError``."""
    garr = as_float_array(g, name, allow_empty=True, allow_complex=True).reshape(np.shape(g))
    try:
        return np.broadcast_to(garr, shape)
    except ValueError:
        raise ValueError(f"{name} has shape {garr.shape}, which does not broadcast to the output "
                         f"shape {shape}") from None


def check_same_shape(a, b, name_a, name_b):
    """Raise ``ValueError`` unless two arrays have the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}")


def check_choice(value, name, choices):
    """Raise ``ValueError`` unless ``value`` is one of ``choices`` (listed in the message)."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def check_positive_int(value, name, *, minimum=1):
    """Return ``value`` as int if it is an integer >= ``minimum``; otherwise raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_rng(rng, name="rng"):
    """Require an explicit ``numpy.random.Generator`` (SPEC section 1: no global seeding)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name} must be a numpy.random.Generator (e.g. numpy.random.default_rng(0)), "
                        f"got {type(rng).__name__}")
    return rng


def check_real(value, name, *, lo=None, hi=None, lo_open=False, hi_open=False):
    """Return ``value`` as float if it is a finite real number in the given range; otherwise raise.

    ``bool``, ``str``, ``None`` and other non-numbers are a ``TypeError`` (a bool is not a number
    here); NaN, +-inf and values outside ``[lo, hi]`` (``(lo, ...`` with ``lo_open``, ``..., hi)``
    with ``hi_open``) are a ``ValueError`` naming ``name`` and the range.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    lo_ok = lo is None or (v > lo if lo_open else v >= lo)
    hi_ok = hi is None or (v < hi if hi_open else v <= hi)
    if not (np.isfinite(v) and lo_ok and hi_ok):
        if lo is not None and hi is not None:
            rng_txt = " in " + ("(" if lo_open else "[") + f"{lo:g}, {hi:g}" + (")" if hi_open else "]")
        elif lo is not None:
            rng_txt = (" > " if lo_open else " >= ") + f"{lo:g}"
        elif hi is not None:
            rng_txt = (" < " if hi_open else " <= ") + f"{hi:g}"
        else:
            rng_txt = ""
        raise ValueError(f"{name} must be a finite number{rng_txt}, got {value!r}")
    return v


def check_mapping(value, name):
    """``None`` -> ``{}``; a dict (any Mapping) -> a ``dict`` copy; anything else -> ``TypeError``."""
    from collections.abc import Mapping
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict (or None), got {type(value).__name__} {value!r}")
    return dict(value)


# --------------------------------------------------------------------------- checked entry points

def register_class(registry, cls, base, kind, example):
    """Add ``cls``, a subclass of ``base`` (the class named ``refvae.<kind>s.<base>``), to
    ``registry`` (name -> class) under its class attribute ``name``, and return it; the plug-in
    registries ``register_prior`` and ``register_likelihood``. ``TypeError`` unless ``cls``
    subclasses ``base``; ``ValueError`` if ``cls.name`` is not an identifier of its own (``example``
    shows one) or is taken by another class (the same class twice is allowed)."""
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"register_{kind}: cls must be a subclass of refvae.{kind}s.{base.__name__}, "
                        f"got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier() or name == base.name:
        raise ValueError(f"a registered {kind} needs its own class attribute name (an identifier "
                         f"such as {example!r}), got {name!r}")
    if registry.get(name, cls) is not cls:
        raise ValueError(f"the {kind} name {name!r} is taken by {registry[name].__qualname__}")
    registry[name] = cls
    return cls


def checked(validate, result=None):
    """Decorator: the checking entry point of an arithmetic function (module docstring).

    ``validate(arguments) -> arguments``: ``arguments`` is a dict of the call's arguments by
    name (defaults filled in, in signature order; ``self`` included for a method); it raises the
    public ``ValueError``/``TypeError`` or returns the dict of converted arguments the
    arithmetic is called with (by keyword). ``result(out, arguments)``, optional, checks the
    output (e.g. an overflow that must be an error) and returns it. The wrapper carries the
    function's name and docstring (``functools.wraps``) and exposes the bare function as
    ``.unchecked``. Its cost is about a microsecond per call (binding the arguments): refvae's
    hot paths call ``.unchecked``.
    """
    def decorate(fn):
        sig = inspect.signature(fn)
        params = tuple(sig.parameters.values())
        names = tuple(p.name for p in params)
        name_set = frozenset(names)
        defaults = {p.name: p.default for p in params if p.default is not p.empty}
        positional = tuple(p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD)
        simple = all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params)

        def bind(args, kwargs):
            """The arguments by name, or Python's own TypeError for a call that does not fit."""
            try:
                return sig.bind(*args, **kwargs).arguments
            except TypeError as e:
                raise TypeError(f"{fn.__name__}(): {e}") from None

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            # the common calls (positional arguments, known keywords) without inspect's binding
            given = dict(zip(positional, args))
            if (not simple or len(args) > len(positional)
                    or (kwargs and not (kwargs.keys() <= name_set
                                        and kwargs.keys().isdisjoint(given)))):
                given = bind(args, kwargs)
            elif kwargs:
                given.update(kwargs)
            if kwargs or len(given) < len(names):     # in signature order, defaults filled in
                try:
                    given = {n: given[n] if n in given else defaults[n] for n in names}
                except KeyError:                      # a required argument is missing
                    bind(args, kwargs)
                    raise
            arguments = validate(given)
            out = fn(**arguments)
            return out if result is None else result(out, arguments)

        wrapper.unchecked = fn
        return wrapper
    return decorate


# --------------------------------------------------------------------------- intermediates

class NonFiniteIntermediateError(ValueError, FloatingPointError):
    """Finite inputs gave a non-finite intermediate: an overflow (or inf - inf) inside a computation.

    A ``ValueError`` (the inputs are finite but too large for float64) and a ``FloatingPointError``
    (what a diverging training run raises), so either ``except`` clause catches it. The message
    names the first intermediate that became non-finite.
    """


def all_finite(a) -> bool:
    """True iff no entry of the array ``a`` (real or complex) is NaN or +-inf."""
    a = np.asarray(a)
    if a.dtype == np.float64 and a.size >= _SCREEN_MIN_SIZE:
        return bool(_screen(a.reshape(-1), False))
    return bool(np.all(np.isfinite(a)))


def first_non_finite(named_arrays):
    """The first ``(name, index, value)`` of the ``(name, array)`` pairs with a NaN or +-inf entry
    (in the given order), or ``None`` if all are finite."""
    for name, a in named_arrays:
        a = np.asarray(a)
        if a.dtype == object or not np.issubdtype(a.dtype, np.number):
            continue
        if not all_finite(a):
            bad = ~np.isfinite(a)
            idx = tuple(int(i) for i in np.argwhere(bad)[0]) if a.ndim else ()
            return name, idx, a[idx]
    return None


# --------------------------------------------------------------------------- memory

#: the largest parameter set (in bytes, 8 per float64 entry) a model or prior may ask for; a
#: configuration beyond it is rejected before anything is allocated (so a typo such as
#: ``hidden=[10**12]`` is a ValueError naming the sizes, not a MemoryError or a swapping machine)
MAX_PARAMETER_BYTES = 2 ** 34   # 16 GiB


def _physical_memory():
    try:
        import os
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):   # not POSIX: only the fixed limit applies
        return None


def _fmt_bytes(n):
    for unit, size in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def check_parameter_memory(count, what, detail="", kind="parameters"):
    """Raise ``ValueError`` if ``count`` float64 values (8 bytes each; ``kind`` says what they are)
    need more than ``MAX_PARAMETER_BYTES`` or more than the machine's physical memory; ``what``
    names the model and ``detail`` the sizes that determine ``count``. Returns ``count``."""
    need = 8 * int(count)
    limit = MAX_PARAMETER_BYTES
    phys = _physical_memory()
    if phys:
        limit = min(limit, phys)
    if need > limit:
        raise ValueError(f"{what} would have {int(count):,} {kind}, which need {_fmt_bytes(need)} "
                         f"(8 bytes each), more than the limit of {_fmt_bytes(limit)}"
                         f"{' (' + detail + ')' if detail else ''}; choose smaller sizes")
    return int(count)


def check_layer_widths(hidden, name="hidden"):
    """A tuple of positive layer widths from an int or a sequence of ints (TypeError otherwise)."""
    if isinstance(hidden, numbers.Integral) and not isinstance(hidden, (bool, np.bool_)):
        hidden = (hidden,)
    if isinstance(hidden, (str, bytes, dict)) or not hasattr(hidden, "__iter__"):
        raise TypeError(f"{name} must be an int or a sequence of positive ints (layer widths), "
                        f"got {type(hidden).__name__} {hidden!r}")
    return tuple(check_positive_int(h, f"{name}[{i}]") for i, h in enumerate(hidden))


def available_memory():
    """``(bytes, source)``: the memory this machine can allocate now (``MemAvailable`` of
    /proc/meminfo, else the free physical pages from ``os.sysconf``), or ``(None, None)``. Used to
    refuse a request (an array in a file, a sample size) before allocating it."""
    import os
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE")), "free pages"
    except (AttributeError, ValueError, OSError):
        return None, None
