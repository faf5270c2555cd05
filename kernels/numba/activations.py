"""Vectorisable activations for the Numba kernels.

PyPI's Numba has no SVML, so ``np.tanh`` inside a compiled loop is a scalar libm
call (~16 ns here) that also stops LLVM from vectorising the loop. For float32 we
use a rational approximation (only +, *, / and min/max, which LLVM turns into
AVX2 code); float64 uses a vectorisable exp (below), accurate to about 1 ulp.
Callers compile with ``_common.KERNEL``: ``error_model="numpy"`` (under Numba's
default, 'python', every division gets a ZeroDivisionError branch, which stops
LLVM from vectorising the loop; measured 4.5 ns/element scalar vs 1.3
vectorised) and FMA contraction.

tanh(x) ~= x * P(x^2) / Q(x^2) on |x| <= 9, clamped outside: tanh(9) rounds to
1.0 in float32. P has degree 5 and Q degree 3 in x^2; the coefficients were fitted
for this project by iteratively re-weighted least squares on the relative error
(a Lawson-style minimax fit). Worst case over every float32 input, measured by
tests/test_activations.py: relative error below 4e-7 (about 6 ulp), odd, |y| <= 1.
"""
import math

import numpy as np
from numba import njit
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload, register_jitable

_CLAMP = 9.0
_P = (0.9999999419791883, 0.1291934369876704, 0.002920882959392147,
      9.26846915170434e-06, -1.2783360117572776e-08, 1.826214923669313e-11)
_Q = (1.0, 0.4625262786297968, 0.02376367206931283, 0.00022811656094324397)
P0, P1, P2, P3, P4, P5 = (np.float32(c) for c in _P)
Q0, Q1, Q2, Q3 = (np.float32(c) for c in _Q)
CLAMP = np.float32(_CLAMP)
ONE = np.float32(1.0)


@register_jitable(inline="always")
def _tanh_f32(x):
    # clamp first so u stays small; P/Q was fitted on [0, 9]
    x = min(max(x, -CLAMP), CLAMP)
    u = x * x
    p = ((((P5 * u + P4) * u + P3) * u + P2) * u + P1) * u + P0
    q = ((Q3 * u + Q2) * u + Q1) * u + Q0
    y = x * p / q
    return min(max(y, -ONE), ONE)


# float64: np.exp/np.tanh are scalar libm calls here too (~16 ns). Instead a
# Cody-Waite exp that LLVM vectorises: x = k ln2 + r with |r| <= ln2/2, e^r - 1 by a
# degree-12 Taylor polynomial (truncation below 2e-16), and 2^k built directly in
# the exponent bits (_pow2). Relative error about 1 ulp (tested). Only +, *, floor,
# selects and integer adds/shifts, so 4 lanes per AVX2 instruction: ~1.4 ns per
# exp against 2.3 for the previous (e^(x/64))^64 polynomial, which was also 50x
# less accurate.
_LN2_HI, _LN2_LO = 0.693147180369123816490, 1.90821492927058770002e-10   # fdlibm's split
_INV_LN2 = 1.4426950408889634
_SHIFTER = 6755399441055744.0       # 1.5 * 2^52: adding it puts round(k) in the low bits
_EXPM1_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(12, 1, -1))   # 1/12! ... 1/2!
(E12, E11, E10, E9, E8, E7, E6, E5, E4, E3, E2) = _EXPM1_TAYLOR


@intrinsic
def _pow2(typingctx, k):
    """2.0 ** k for an integer-valued float64 k in [-1022, 1023], without a libm call."""
    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        # k + 1.5 * 2^52 holds k (two's complement) in its low mantissa bits; shifting
        # k + 1023 into the exponent field drops the shifter's own bits
        bits = builder.bitcast(builder.fadd(args[0], ir.Constant(ir.DoubleType(), _SHIFTER)), i64)
        return builder.bitcast(builder.shl(builder.add(bits, ir.Constant(i64, 1023)),
                                           ir.Constant(i64, 52)), ir.DoubleType())
    return types.float64(types.float64), codegen


@register_jitable(inline="always")
def _exp_parts(x):
    # -> (2^k, e^r - 1) with e^x = 2^k (1 + (e^r - 1)); x clamped to [-708, 708]
    x = min(max(x, -708.0), 708.0)
    k = np.floor(x * _INV_LN2 + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    q = (((((((((E12 * r + E11) * r + E10) * r + E9) * r + E8) * r + E7) * r + E6) * r + E5)
          * r + E4) * r + E3) * r + E2
    return _pow2(k), q * r * r + r


@register_jitable(inline="always")
def _exp_f64(x):
    s, em = _exp_parts(x)
    return s * em + s


@register_jitable(inline="always")
def _tanh_f64(x):
    # tanh|x| = -m / (2 + m) with m = e^(-2|x|) - 1: no cancellation near 0, so one
    # formula serves every x (tanh rounds to 1 beyond |x| = 19.1, where m = -1)
    s, em = _exp_parts(-2.0 * abs(x))
    m = s * em + (s - 1.0)
    y = -m / (2.0 + m)
    return y if x >= 0.0 else -y


def tanh(x):
    """Scalar tanh for use inside njit code; resolved per dtype by the overload."""
    return np.tanh(x)


@overload(tanh, inline="always")
def _tanh_overload(x):
    if x == types.float32:
        return lambda x: _tanh_f32(x)
    return lambda x: _tanh_f64(x)


def sigmoid(x):
    """Scalar logistic sigmoid for njit code, resolved per dtype by the overload."""
    return 1.0 / (1.0 + np.exp(-x))


@overload(sigmoid, inline="always")
def _sigmoid_overload(x):
    if x == types.float32:
        half = np.float32(0.5)
        # sigmoid(x) = (1 + tanh(x/2)) / 2: absolute error below 2.5e-7 (tested)
        return lambda x: half + half * _tanh_f32(half * x)
    return lambda x: 1.0 / (1.0 + _exp_f64(-x))


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def sigmoid_array(x, out):
    """Elementwise sigmoid of a contiguous 1-D array (used by the accuracy test)."""
    for i in range(x.shape[0]):
        out[i] = sigmoid(x[i])


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def tanh_array(x, out):
    """Elementwise tanh of a contiguous 1-D array (used by the accuracy test)."""
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])
