"""Vectorisable activations for the Numba kernels.

PyPI's Numba has no SVML, so ``np.tanh`` inside a compiled loop is a scalar libm
call (~16 ns here) that also stops LLVM from vectorising the loop. For float32 we
use a rational approximation (only +, *, / and min/max, which LLVM turns into
AVX2 code); float64 uses a vectorisable exp (below), accurate to about 1 ulp.
Callers compile with ``_common.KERNEL``: ``error_model="numpy"`` (under Numba's
default, 'python', every division gets a ZeroDivisionError branch, which stops
LLVM from vectorising the loop; measured 4.5 ns/element scalar vs 1.3
vectorised) and FMA contraction.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# Every activation is an ``intrinsic``: its LLVM IR is written straight into the
# caller, so Numba compiles nothing per call site (the previous inline="always"
# functions were inlined at Numba's IR level, which re-types the whole caller for each
# site: about 2 s of a cold LSTM compile per cell inlined), and LLVM vectorises the
# loops around them as before. Their arithmetic carries the kernels' "contract" flag
# (a*b + c may become one FMA).
_CLAMP = 9.0
_P = (0.9999999419791883, 0.1291934369876704, 0.002920882959392147,
      9.26846915170434e-06, -1.2783360117572776e-08, 1.826214923669313e-11)
_Q = (1.0, 0.4625262786297968, 0.02376367206931283, 0.00022811656094324397)

# float64: np.exp/np.tanh are scalar libm calls here too (~16 ns). Instead a
# Cody-Waite exp that LLVM vectorises: x = k ln2 + r with |r| <= ln2/2, e^r - 1 by a
# degree-12 Taylor polynomial (truncation below 2e-16), and 2^k built directly in
# the exponent bits. Relative error about 1 ulp (tested). Only +, *, floor, selects
# and integer adds/shifts, so 4 lanes per AVX2 instruction: ~1.4 ns per exp.
_LN2_HI, _LN2_LO = 0.693147180369123816490, 1.90821492927058770002e-10   # fdlibm's split
_INV_LN2 = 1.4426950408889634
_SHIFTER = 6755399441055744.0       # 1.5 * 2^52: adding it puts round(k) in the low bits
_EXPM1_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(12, 1, -1))   # 1/12! ... 1/2!
_FLAGS = ("contract",)


class _Emit:
    """Float arithmetic on one LLVM type (float or double) at a builder."""

    def __init__(self, builder, ty):
        self.b, self.ty = builder, ty

    def c(self, v):
        return ir.Constant(self.ty, float(np.float32(v)) if self.ty == ir.FloatType() else v)

    def add(self, x, y):
        return self.b.fadd(x, y, flags=_FLAGS)

    def sub(self, x, y):
        return self.b.fsub(x, y, flags=_FLAGS)

    def mul(self, x, y):
        return self.b.fmul(x, y, flags=_FLAGS)

    def div(self, x, y):
        return self.b.fdiv(x, y, flags=_FLAGS)

    def clamp(self, x, lo, hi):
        # ordered compares: NaN is neither below nor above, so it passes through
        x = self.b.select(self.b.fcmp_ordered("<", x, self.c(lo)), self.c(lo), x)
        return self.b.select(self.b.fcmp_ordered(">", x, self.c(hi)), self.c(hi), x)

    def horner(self, coeffs, u):
        # coeffs highest degree first
        acc = self.c(coeffs[0])
        for k in coeffs[1:]:
            acc = self.add(self.mul(acc, u), self.c(k))
        return acc

    def call(self, name, x):
        fn = self.b.module.declare_intrinsic(name, [self.ty])
        return self.b.call(fn, [x])


def _tanh_f32(e, x):
    # tanh(x) ~= x * P(x^2) / Q(x^2) on |x| <= 9, clamped outside: tanh(9) rounds to
    # 1.0 in float32. P has degree 5 and Q degree 3 in x^2; the coefficients were
    # fitted for this project by iteratively re-weighted least squares on the relative
    # error (a Lawson-style minimax fit). Worst case over every float32 input, measured
    # by tests/test_activations.py: relative error below 4e-7 (about 6 ulp), odd, |y| <= 1.
    x = e.clamp(x, -_CLAMP, _CLAMP)
    u = e.mul(x, x)
    y = e.div(e.mul(x, e.horner(_P[::-1], u)), e.horner(_Q[::-1], u))
    return e.clamp(y, -1.0, 1.0)


def _exp_parts(e, x):
    # -> (2^k, e^r - 1) with e^x = 2^k (1 + (e^r - 1)); x clamped to [-708, 708]
    b, i64 = e.b, ir.IntType(64)
    x = e.clamp(x, -708.0, 708.0)
    k = e.call("llvm.floor", e.add(e.mul(x, e.c(_INV_LN2)), e.c(0.5)))
    r = e.sub(e.sub(x, e.mul(k, e.c(_LN2_HI))), e.mul(k, e.c(_LN2_LO)))
    q = e.horner(_EXPM1_TAYLOR, r)
    # 2^k: k + 1.5 * 2^52 holds k (two's complement) in its low mantissa bits; shifting
    # k + 1023 into the exponent field drops the shifter's own bits
    bits = b.bitcast(b.fadd(k, e.c(_SHIFTER)), i64)
    s = b.bitcast(b.shl(b.add(bits, ir.Constant(i64, 1023)), ir.Constant(i64, 52)), e.ty)
    return s, e.add(e.mul(e.mul(q, r), r), r)


def _exp_f64(e, x):
    s, em = _exp_parts(e, x)
    return e.add(e.mul(s, em), s)


def _tanh_f64(e, x):
    # tanh|x| = -m / (2 + m) with m = e^(-2|x|) - 1: no cancellation near 0, so one
    # formula serves every x (tanh rounds to 1 beyond |x| = 19.1, where m = -1)
    s, em = _exp_parts(e, e.mul(e.c(-2.0), e.call("llvm.fabs", x)))
    m = e.add(e.mul(s, em), e.sub(s, e.c(1.0)))
    y = e.div(e.b.fneg(m), e.add(e.c(2.0), m))
    return e.b.select(e.b.fcmp_ordered(">=", x, e.c(0.0)), y, e.b.fneg(y))


def _sigmoid_f32(e, x):
    # sigmoid(x) = (1 + tanh(x/2)) / 2: absolute error below 2.5e-7 (tested)
    half = e.c(0.5)
    return e.add(half, e.mul(half, _tanh_f32(e, e.mul(half, x))))


def _sigmoid_f64(e, x):
    one = e.c(1.0)
    return e.div(one, e.add(one, _exp_f64(e, e.b.fneg(x))))


def _activation(f32, f64):
    def typer(typingctx, x):
        if x not in (types.float32, types.float64):
            return None

        def codegen(context, builder, sig, args):
            ty = context.get_value_type(sig.args[0])
            return (f32 if sig.args[0] == types.float32 else f64)(_Emit(builder, ty), args[0])
        return x(x), codegen
    return typer


tanh = intrinsic(_activation(_tanh_f32, _tanh_f64))
tanh.__doc__ = "Scalar tanh for njit code (float32: rational fit; float64: via exp)."
sigmoid = intrinsic(_activation(_sigmoid_f32, _sigmoid_f64))
sigmoid.__doc__ = "Scalar logistic sigmoid for njit code."


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
