"""The per-step product of the recurrent kernels: out[:n] = a[:n] @ W^T.

For small hidden sizes a register-blocked loop beats a BLAS call: no call and
dispatch overhead per step, and 2x4 independent dot products per block let LLVM
keep eight vector accumulators busy (``fastmath`` reassociation only, so the
k-loop vectorises; no NaN/inf assumptions). Measured on the 2-core AVX2 bench
machine, single thread: 8x128x128 at 42 GFLOP/s vs OpenBLAS sgemm 15; 32x512x512
at 41 vs 64, so large sizes still go to BLAS (``np.dot`` -> SciPy's OpenBLAS).
"""
import numpy as np
from numba import njit

SMALL_H = 128      # largest hidden size whose step GEMM uses gemm_nt


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def gemm_nt(a, w, out, n):
    # a [*, K], w [M, K] (row j is output feature j), out [*, M]; rows 0..n-1
    M, K = w.shape
    zero = a.dtype.type(0)
    r = 0
    while r + 1 < n:
        j = 0
        while j + 3 < M:
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            for k in range(K):
                a0, a1 = a[r, k], a[r + 1, k]
                w0, w1, w2, w3 = w[j, k], w[j + 1, k], w[j + 2, k], w[j + 3, k]
                s00 += a0 * w0
                s01 += a0 * w1
                s02 += a0 * w2
                s03 += a0 * w3
                s10 += a1 * w0
                s11 += a1 * w1
                s12 += a1 * w2
                s13 += a1 * w3
            out[r, j], out[r, j + 1], out[r, j + 2], out[r, j + 3] = s00, s01, s02, s03
            out[r + 1, j], out[r + 1, j + 1], out[r + 1, j + 2], out[r + 1, j + 3] = s10, s11, s12, s13
            j += 4
        for jj in range(j, M):
            s0 = s1 = zero
            for k in range(K):
                s0 += a[r, k] * w[jj, k]
                s1 += a[r + 1, k] * w[jj, k]
            out[r, jj], out[r + 1, jj] = s0, s1
        r += 2
    if r < n:
        for j in range(M):
            s = zero
            for k in range(K):
                s += a[r, k] * w[j, k]
            out[r, j] = s


@njit(cache=True, error_model="numpy", inline="always")
def matmul_nt(a, w, w_t, out, n, small):
    # out[:n] = a[:n] @ w^T; w_t is w^T, contiguous, for the BLAS path
    if small:
        gemm_nt(a, w, out, n)
    else:
        np.dot(a[:n], w_t, out[:n])
