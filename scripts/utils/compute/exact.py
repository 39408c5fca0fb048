"""Exact fixed-point arithmetic at BLAS speed, on NumPy or CuPy from one code path.

    python -c "import numpy as np; from scripts.utils.compute.exact import exact_matmul as m; \
               print(m(np, np.eye(2), np.ones((2, 2))))"

Values are quantized to steps of 2**-20 (``SCALE``), so a matrix product is
a product of integer matrices, ``qa @ qb``. Computed in int64 that is exact,
but NumPy's integer product uses no BLAS (and CuPy's no tensor cores): 260x
slower than float32 BLAS on our CPUs.

A float64 product of integer matrices is exact too, whatever BLAS kernel,
thread count, summation order or device computes it, as long as every
partial sum of every dot product is an integer below 2**53: float64 holds
those exactly, so no step rounds. ``integer_matmul`` checks that bound on
every product before it runs (``K * max|qa| * max|qb|``, then the tighter
Cauchy-Schwarz bound ``max row norm of qa * max column norm of qb``). When
it fails, the larger operand is split into high and low halves of its bits
(``q = hi * 2**s + lo``) and the halves' products, each within the bound,
are summed exactly in int64 (the error-free splitting of the Ozaki scheme).
A product whose exact value could reach 2**62 cannot be summed in int64:
it stops with ``InputError`` (exit 2) naming the product and the bound,
never rounding silently. The result, converted to float64 once, has the
same bits as ``(qa_int64 @ qb_int64).astype(float64)``.

Sums (``fixed_sum``) are int64 sums of quantized values: exact and
order-free, and cheap next to the products.
"""

from __future__ import annotations

import contextlib
import math
import os

from scripts.utils.errors import InputError

SCALE = 2.0**20
EXACT_LIMIT = 2.0**53  # every integer below this is a float64
INT64_HEADROOM = 2.0**62  # exact sums of split products stay below int64's 2**63
_MARGIN = 1.0 + 2.0**-30  # covers the rounding of the bound's own float64 arithmetic


def quantize(xp, values):
    """``values`` on the 2**-20 grid, as float64 integers (``rint(values * 2**20)``)."""
    quantized = xp.multiply(values, SCALE, dtype=xp.float64)
    return xp.rint(quantized, out=quantized)


def max_abs(xp, values) -> float:
    if values.size == 0:
        return 0.0
    return max(float(values.max().item()), -float(values.min().item()))


def _norm_bound(xp, qa, qb) -> float:
    """Cauchy-Schwarz: every |partial sum| <= sum |a_ik b_kj| <= max_i |a_i| * max_j |b_j|
    (2-norms)."""
    rows = float(xp.sqrt(xp.einsum("ik,ik->i", qa, qa).max()).item()) if qa.size else 0.0
    columns = float(xp.sqrt(xp.einsum("kj,kj->j", qb, qb).max()).item()) if qb.size else 0.0
    return rows * columns * _MARGIN


def product_bound(xp, qa, qb, maxima=None) -> float:
    """An upper bound on every partial sum of ``qa @ qb`` (cheap first, tighter when that one is
    too high)."""
    a_max, b_max = maxima or (max_abs(xp, qa), max_abs(xp, qb))
    cheap = qa.shape[-1] * a_max * b_max * _MARGIN
    if cheap < EXACT_LIMIT:
        return cheap
    return min(cheap, _norm_bound(xp, qa, qb))


def integer_matmul(xp, qa, qb, name: str = "product", maxima=None):
    """``qa @ qb`` for float64 arrays of integers, exactly, as float64 (rounded once, like int64 ->
    float64).

    ``maxima``: ``(max|qa|, max|qb|)`` when the caller already knows them.
    """
    bound = product_bound(xp, qa, qb, maxima)
    if bound < EXACT_LIMIT:
        return qa @ qb
    if math.isnan(bound):
        raise InputError(f"{name}: an operand holds NaN", layer=name)
    if bound >= INT64_HEADROOM:
        raise InputError(
            f"{name}: its exact value could exceed 2**62 (bound {bound:.3g}); the fixed-point "
            f"arithmetic cannot hold it: the values have grown too large",
            layer=name,
            bound=bound,
        )
    return _split_product(xp, qa, qb).astype(xp.float64)


def _split_product(xp, qa, qb):
    """``qa @ qb`` as an exact int64 array, splitting the larger operand until each product is
    within 2**53."""
    if product_bound(xp, qa, qb) < EXACT_LIMIT:
        return (qa @ qb).astype(xp.int64)
    a_max, b_max = max_abs(xp, qa), max_abs(xp, qb)
    if a_max >= b_max:
        shift, high, low = _halves(xp, qa, a_max)
        return _split_product(xp, high, qb) * (1 << shift) + _split_product(xp, low, qb)
    shift, high, low = _halves(xp, qb, b_max)
    return _split_product(xp, qa, high) * (1 << shift) + _split_product(xp, qa, low)


def _halves(xp, q, largest: float):
    """``q = high * 2**shift + low`` with 0 <= low < 2**shift: both exact in float64, about half
    the bits each."""
    shift = max(1, math.ceil(math.log2(largest + 1) / 2))
    step = 2.0**shift
    high = xp.floor(q / step)
    return shift, high, q - high * step


def exact_matmul(xp, a, b, name: str = "product"):
    """``a @ b`` on values quantized to 2**-20, exactly: the same bits on any BLAS, thread count
    or device."""
    return Fixed(xp, a).matmul(Fixed(xp, b), name)


class Fixed:
    """An array quantized once (``q``, float64 integers) with its largest magnitude, for use in
    several products: ``Fixed(xp, x) @ Fixed(xp, y)`` is ``exact_matmul(xp, x, y)``, bit for bit."""

    __slots__ = ("xp", "q", "largest")

    def __init__(self, xp, values=None, quantized=None, largest=None):
        self.xp = xp
        self.q = quantize(xp, values) if quantized is None else quantized
        self.largest = max_abs(xp, self.q) if largest is None else largest

    @property
    def T(self) -> Fixed:  # noqa: N802 - mirrors ndarray.T
        return Fixed(self.xp, quantized=self.q.T, largest=self.largest)

    def matmul(self, other: Fixed, name: str = "product"):
        """The exact product in real units (``integer_matmul / 2**40``)."""
        return integer_matmul(self.xp, self.q, other.q, name, (self.largest, other.largest)) / (
            SCALE * SCALE
        )


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def blas_threads():
    """A context in which BLAS runs one thread, unless the user set a thread count
    (``THREAD_VARIABLES``).

    The products are exact, so threads change only speed, and little of it (15% on 2 cores for
    large.toml); but two multi-threaded OpenBLAS processes on the same cores spin against each other
    (measured: two large.toml runs side by side took 122 s each with 2 threads, 19 s with 1).
    """
    if any(os.environ.get(name) for name in THREAD_VARIABLES):
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def fixed_sum(xp, values) -> float:
    """Sum in fixed point (2**-20 steps, int64): the same bits on any backend or thread count."""
    return float(xp.sum(xp.rint(values * SCALE).astype(xp.int64)).item()) / SCALE


def fixed_mean(xp, values) -> float:
    return fixed_sum(xp, values) / values.size
