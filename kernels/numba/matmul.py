"""The GEMMs outside the recurrences on the step products' micro-kernel: c = a @ b (+ add).

Dimension legend: c [m, n] = a [m, K] @ b [K, n]. The layers' GEMMs outside the
kernels are the input projection x [TB, I] @ W_ih^T (+ bias), in BPTT dx = dgates @
W_ih, and the weight gradients dgates^T @ x and dgates^T @ h_prev, whose K is every
step's rows (T B: 16384 at the large bench shape).

Why: torch.mm (MKL on this wheel) ran these at 137-188 GFLOP/s on 2 Zen 4 cores whose
FMA peak is 2 x 110 (bench/phases.py: input projection 145, weight gradients 152 in
the committed run), while the packed micro-kernel of ``_panels`` holds 85-98% of a
core's peak at every row count. So the layers' GEMMs run on it too, on Numba's threads:

- K in blocks of KC (``_KC``): per block, b's rows are packed into panels [P, kc, NR]
  (one parallel pass over the panels); each thread then takes MC rows at a time
  (``_MC``) and runs the tiles of every panel on them, adding to c after the first
  block. The tiles read a in place through both strides, also where it is stored
  transposed (the weight gradients' dgates^T: K is its leading dimension); packing it
  into k-major blocks first measured slower on Zen 4. A thread's a block (MC x kc x
  4 B = 128 KB) stays in its L2 while it walks the panels, each panel (kc x NR x 4 B =
  64 KB) is read from L2 or L3 once per MC rows.
- ``add`` ([n] or [m, n]) is added to each row block as its last K block finishes, while
  those rows are still in cache (a separate pass over [TB, G] cost 15% of the GEMM).
- Operands are passed as the C-contiguous arrays they are stored in, with a flag for
  "stored transposed", so one compiled kernel serves all four layouts.

Deterministic: each element of c is summed in the same order on any thread count.
"""
import os

import llvmlite.binding as ll
import numpy as np
import torch
from numba import njit, prange

from .. import new_output
from ._common import KERNEL, as_numpy
from ._panels import VEC_BYTES, gemm_add, gemm_packed, panel_width

_KC = 512                  # rows of b per block (panels of kc x NR: 64 KB in float32)
_MC = 64                   # rows of a (and c) per thread job


@njit(**KERNEL)
def matmul_kernel(a, a_t, b, b_t, add, has_add, c, nr):
    # c [m, n] = A @ B (+ add): A = a (a [m, K]) or a^T (a_t: a [K, m]); B = b ([K, n]) or
    # b^T (b_t: b [n, K]); add [1 or m, n], read when has_add; K > 0
    m, n = c.shape
    K = a.shape[0] if a_t else a.shape[1]
    P = (n + nr - 1) // nr
    jobs = (m + _MC - 1) // _MC
    A = a.T if a_t else a                           # [m, K]: the tiles read it in place
    for k0 in range(0, K, _KC):
        kc = min(_KC, K - k0)
        panels = np.empty((P, kc, nr), c.dtype)     # [P, kc, NR] this block's B
        for p in prange(P):
            for k in range(kc):
                for jj in range(nr):
                    col = p * nr + jj
                    if col >= n:
                        panels[p, k, jj] = 0
                    elif b_t:
                        panels[p, k, jj] = b[col, k0 + k]
                    else:
                        panels[p, k, jj] = b[k0 + k, col]
        for q in prange(jobs):
            r0 = q * _MC
            rows = min(_MC, m - r0)
            cr = c[r0:r0 + rows]
            if k0 == 0:
                gemm_packed(A[r0:r0 + rows, k0:k0 + kc], panels, cr, rows)
            else:
                gemm_add(A[r0:r0 + rows, k0:k0 + kc], panels, cr, rows)
            if has_add and k0 + kc == K:            # the rows' last block: still in cache
                for i in range(rows):
                    ar = add[0] if add.shape[0] == 1 else add[r0 + i]
                    for jj in range(n):
                        cr[i, jj] += ar[jj]


# Below this many flops (2 m k n) torch's GEMM is taken. Measured side by side on 2 Zen 4
# cores, torch.mm's rate against this kernel's: at the large LSTM's GEMMs (34 GFLOP
# each) 1.0-1.2x faster and never slower; at the middle shape's (0.42 GFLOP) even
# within the machine's noise (0.8-1.2x by the minute), so there torch's lower fixed
# cost and no first-use compile of this kernel win.
MIN_FLOPS = 1e9


def _measured_faster():
    """Whether this CPU is one where ``mm`` measured faster than torch.mm: AMD with
    AVX-512 (Zen 4 above). On 2 Intel Xeon (Sapphire Rapids) cores, whose two AVX-512 FMA
    units torch's MKL/oneDNN kernels keep busier, torch.mm ran the large LSTM's GEMMs at
    306 / 338 / 307 GFLOP/s (x W_ih^T, dgates W_ih, dgates^T x) against this kernel's
    229 / 270 / 131, so there and on CPUs not measured torch's GEMM stays.
    FASTRNN_OWN_GEMM=1 or 0 forces the choice (A/B runs, tests)."""
    forced = os.environ.get("FASTRNN_OWN_GEMM")
    if forced in ("0", "1"):
        return forced == "1"
    # LLVM's name of this CPU, as _panels reads its features: znver4 for Zen 4
    return ll.get_host_cpu_name().startswith("znver") and VEC_BYTES == 64


OWN = _measured_faster()


def mm_pays(m, k, n):
    """Whether ``mm`` is the faster at an [m, k] @ [k, n] product on this CPU (see OWN
    and MIN_FLOPS)."""
    return OWN and 2 * m * k * n >= MIN_FLOPS


def _stored(t):
    """-> (the C-contiguous array t is stored as, whether that is t transposed)."""
    if not t.is_contiguous() and t.t().is_contiguous():
        return t.t().numpy(force=True), True
    return as_numpy(t), False


def mm(a, b, add=None):
    """a [m, K] @ b [K, n] (+ add, broadcast to [m, n]) -> a new [m, n] tensor; a, b and
    add float32 or float64 CPU tensors of one dtype, no autograd (callers keep the graph)."""
    m, n = a.shape[0], b.shape[1]
    c = new_output((m, n), a)                      # NaN under kernels.POISON: all written
    if m == 0 or n == 0 or a.shape[1] == 0:        # K = 0: c = add, or zeros
        return c.zero_() if add is None else c.copy_(add.expand(m, n))
    av, a_t = _stored(a)
    bv, b_t = _stored(b)
    cv = c.numpy()
    if add is None:
        addv = np.zeros((1, 1), cv.dtype)
    else:
        add = add.reshape(1, n) if add.dim() < 2 or add.stride(0) == 0 else add.expand(m, n)
        addv = as_numpy(add[:1] if add.shape[0] == 1 else add)
    matmul_kernel(av, a_t, bv, b_t, addv, add is not None, cv, panel_width(cv.dtype))
    return c
