"""The dot-product step product of the decoding steps and tree kernels: out[:n] = a[:n] @ W^T.

(The sequence kernels use the packed-panel ``_panels.gemm_packed``, 15-45% faster at
their shapes; this one reads W in place, which a one-step call that cannot amortise a
packing copy needs.)

One register-blocked loop serves every size; no BLAS call inside the kernels.
Why not ``np.dot`` (SciPy's OpenBLAS) for large H: a step GEMM has few rows (a
thread's share of the batch) against a large weight, so BLAS re-packs the whole
weight on every call for only a few rows of work, and ran at 30-45 GFLOP/s on one
core; this loop reads W in place. Layout of the loop:

- dot-product form over k (W row j is output feature j, contiguous), so LLVM
  vectorises the k-loop (``fastmath`` reassociation only; no NaN/inf assumptions);
- 4 rows of a x 3 rows of W per tile: 12 vector accumulators, enough independent
  FMAs in flight to cover their latency, 7 loads per 12 FMAs, and no spills on
  AVX2's 16 registers (2x6 and 3x4 spilled and ran at half speed);
- the W rows of a tile stay in L1 while the tile walks down a block of
  ``ROW_BLOCK`` rows of a (kept in L2), so W streams from L3 once per block
  instead of once per row pair;
- the 2x3 and 1x3 row tails repeat the tile's code on purpose: a loop over a
  runtime row count would keep the accumulators in memory, and a thread's share
  of a small batch (4 rows at B=8) or the rows still running with variable lengths
  often leave a tail (1x3-only tails ran at half speed for 3 rows).

Measured single-thread on the 2-core AVX2 bench machine, float32, against the
previous row-outer 2x4 loop and OpenBLAS sgemm: 32x512x2048 at 68-76 GFLOP/s
(39 and 39-43); 16x128x512 at 45-63 (42-54 and 26-33); 4x32x128 at 22-24 (22-28
and 8-10). float64 at 32x512x2048: 30 (19 and 22).
"""
from numba import njit

ROW_BLOCK = 32     # rows of a per pass over W: 32 x K floats stay in L2 up to K = 4096


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def gemm_nt(a, w, out, n):
    # a [*, K], w [M, K] (row j is output feature j), out [*, M]; rows 0..n-1
    M, K = w.shape
    zero = a.dtype.type(0)
    for r0 in range(0, n, ROW_BLOCK):
        r1 = min(n, r0 + ROW_BLOCK)
        j = 0
        while j + 2 < M:
            r = r0
            while r + 3 < r1:
                s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = s30 = s31 = s32 = zero
                for k in range(K):
                    a0, a1, a2, a3 = a[r, k], a[r + 1, k], a[r + 2, k], a[r + 3, k]
                    w0, w1, w2 = w[j, k], w[j + 1, k], w[j + 2, k]
                    s00 += a0 * w0
                    s01 += a0 * w1
                    s02 += a0 * w2
                    s10 += a1 * w0
                    s11 += a1 * w1
                    s12 += a1 * w2
                    s20 += a2 * w0
                    s21 += a2 * w1
                    s22 += a2 * w2
                    s30 += a3 * w0
                    s31 += a3 * w1
                    s32 += a3 * w2
                out[r, j], out[r, j + 1], out[r, j + 2] = s00, s01, s02
                out[r + 1, j], out[r + 1, j + 1], out[r + 1, j + 2] = s10, s11, s12
                out[r + 2, j], out[r + 2, j + 1], out[r + 2, j + 2] = s20, s21, s22
                out[r + 3, j], out[r + 3, j + 1], out[r + 3, j + 2] = s30, s31, s32
                r += 4
            if r + 1 < r1:                      # 2 or 3 rows left: a 2x3 tile
                s00 = s01 = s02 = s10 = s11 = s12 = zero
                for k in range(K):
                    a0, a1 = a[r, k], a[r + 1, k]
                    w0, w1, w2 = w[j, k], w[j + 1, k], w[j + 2, k]
                    s00 += a0 * w0
                    s01 += a0 * w1
                    s02 += a0 * w2
                    s10 += a1 * w0
                    s11 += a1 * w1
                    s12 += a1 * w2
                out[r, j], out[r, j + 1], out[r, j + 2] = s00, s01, s02
                out[r + 1, j], out[r + 1, j + 1], out[r + 1, j + 2] = s10, s11, s12
                r += 2
            if r < r1:                          # 1 row left: a 1x3 tile
                s0 = s1 = s2 = zero
                for k in range(K):
                    a0 = a[r, k]
                    s0 += a0 * w[j, k]
                    s1 += a0 * w[j + 1, k]
                    s2 += a0 * w[j + 2, k]
                out[r, j], out[r, j + 1], out[r, j + 2] = s0, s1, s2
            j += 3
        for jj in range(j, M):                  # M % 3 features left: plain dots
            for r in range(r0, r1):
                s = zero
                for k in range(K):
                    s += a[r, k] * w[jj, k]
                out[r, jj] = s
