"""Vectorisable activations for the Numba kernels.

PyPI's Numba has no SVML, so ``np.tanh`` inside a compiled loop is a scalar libm
call (~16 ns here) that also stops LLVM from vectorising the loop. For float32 we
use a rational approximation (only +, *, / and min/max, which LLVM turns into
AVX2 code); float64 uses a vectorisable exp (below), accurate to ~1e-14.
Callers must compile with ``error_model="numpy"``: under Numba's default
('python') every division gets a ZeroDivisionError branch, which stops LLVM
from vectorising the loop (measured: 4.5 ns/element scalar vs 1.3 vectorised).

tanh(x) ~= x * P(x^2) / Q(x^2) on |x| <= 9, clamped outside: tanh(9) rounds to
1.0 in float32. P has degree 5 and Q degree 3 in x^2; the coefficients were fitted
for this project by iteratively re-weighted least squares on the relative error
(a Lawson-style minimax fit). Worst case over every float32 input, measured by
tests/test_activations.py: relative error below 4e-7 (about 6 ulp), odd, |y| <= 1.
"""
import math

import numpy as np
from numba import njit
from numba.extending import overload, register_jitable

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


# float64: np.exp/np.tanh are scalar libm calls here too (~16 ns). exp on [-40, 40]
# as (e^(x/64))^64 with a degree-16 Taylor polynomial for |x/64| <= 0.625: only
# +, * and selects, so it vectorises; relative error below 3e-14 (tested).
_EXP_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(16, -1, -1))
_TANH_SERIES = (-3.927832388331683e-05, 9.691537956929451e-05, -0.00023912911424355248,
                0.000590027440945586, -0.0014558343870513183, 0.003592128036572481,
                -0.008863235529902197, 0.021869488536155203, -0.05396825396825397,
                0.13333333333333333, -0.3333333333333333, 1.0)   # x^23 ... x^1 (odd)
(E16, E15, E14, E13, E12, E11, E10, E9, E8, E7, E6, E5, E4, E3, E2, E1, E0) = _EXP_TAYLOR
(S23, S21, S19, S17, S15, S13, S11, S9, S7, S5, S3, S1) = _TANH_SERIES


@register_jitable(inline="always")
def _exp_f64(x):
    x = x if x > -40.0 else -40.0
    x = x if x < 40.0 else 40.0
    y = x * 0.015625
    p = ((((((((E16 * y + E15) * y + E14) * y + E13) * y + E12) * y + E11) * y + E10) * y
          + E9) * y + E8) * y + E7
    p = ((((((((p * y + E6) * y + E5) * y + E4) * y + E3) * y + E2) * y + E1) * y + E0))
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    return p * p


@register_jitable(inline="always")
def _tanh_f64(x):
    # |x| < 0.25: odd Taylor series (no cancellation); else 1 - 2 / (e^2x + 1)
    u = x * x
    small = ((((((((((S23 * u + S21) * u + S19) * u + S17) * u + S15) * u + S13) * u + S11) * u
                + S9) * u + S7) * u + S5) * u + S3) * u * x + x
    large = 1.0 - 2.0 / (_exp_f64(2.0 * x) + 1.0)
    return small if abs(x) < 0.25 else large


def tanh(x):
    """Scalar tanh for use inside njit code; resolved per dtype by the overload."""
    return np.tanh(x)


@overload(tanh, inline="always")
def _tanh_overload(x):
    from numba import types
    if x == types.float32:
        return lambda x: _tanh_f32(x)
    return lambda x: _tanh_f64(x)


def sigmoid(x):
    """Scalar logistic sigmoid for njit code, resolved per dtype by the overload."""
    return 1.0 / (1.0 + np.exp(-x))


@overload(sigmoid, inline="always")
def _sigmoid_overload(x):
    from numba import types
    if x == types.float32:
        half = np.float32(0.5)
        # sigmoid(x) = (1 + tanh(x/2)) / 2: absolute error below 2.5e-7 (tested)
        return lambda x: half + half * _tanh_f32(half * x)
    return lambda x: 1.0 / (1.0 + _exp_f64(-x))


@njit(cache=True, error_model="numpy")
def sigmoid_array(x, out):
    """Elementwise sigmoid of a contiguous 1-D array (used by the accuracy test)."""
    for i in range(x.shape[0]):
        out[i] = sigmoid(x[i])


@njit(cache=True, error_model="numpy")
def tanh_array(x, out):
    """Elementwise tanh of a contiguous 1-D array (used by the accuracy test)."""
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])
