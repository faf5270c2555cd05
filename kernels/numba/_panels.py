"""The sequence kernels' step product on packed weight panels: out[:n] = a[:n] @ B.

Dimension legend: n rows of a (a thread's running rows), K the inner size, M the
output features; B [K, M] is the right-hand operand (W_hh^T forward, W_hh backward).

Why: ``_gemm.gemm_nt`` (dot-product form) ran 78 GFLOP/s at 16x128x512 on one Zen 4
core whose FMA peak is 117: every 4x3 tile ends in 12 horizontal sums, which at K = 128
cost as much as the FMAs. This is the BLIS/oneDNN form instead:

- Packing, once per launcher call (``pack``), reused at every step: B becomes
  ``panels`` [ceil(M / NR), K, NR], each panel NR consecutive output features, row k
  contiguous, zero-padded to NR, so a step streams each panel with unit stride.
- Micro-kernel, an outer product: for each k, MR broadcasts of a[r, k] times NV vector
  loads of the panel row into MR x NV vector accumulators, no reduction at the end.
  It is written as LLVM IR (a Numba ``intrinsic``: vector phis and llvm.fma), so the
  accumulators are registers by construction, not by a vectoriser's choice.
- Tile per ISA (``TILE``): AVX-512 (32 registers of 16 float32): MR = 8, NV = 2
  (16 accumulators + 2 panel vectors + 1 broadcast); AVX2 (16 of 8): MR = 6, NV = 2
  (12 + 3 = 15, no spills). NR = NV lanes: 32 float32 or 16 float64 on AVX-512.
- Row tails (n % MR) run the same micro-kernel with fewer rows; a partial last panel
  is computed into a scratch tile and its valid columns copied.

Measured single-thread, float32, AMD EPYC Zen 4 (AVX-512, peak 117 GFLOP/s by
bench/peak.py): 8x2 tile at 48x512x2048 115, 16x128x512 115, 32x512x2048 117,
64x1024x4096 109 GFLOP/s, against gemm_nt's 98 / 78 / 99 / 87 and torch.mm's
(one thread) 87 / 79 / 87 / 81 (bench/results/products.md has the committed table).
"""
import numpy as np
import llvmlite.binding as ll
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

_F = ll.get_host_cpu_features()
VEC_BYTES = 64 if _F.get("avx512f") else 32     # the widest vector register
MR, NV = (8, 2) if VEC_BYTES == 64 else (6, 2)
TILE = (MR, NV)


def panel_width(dtype):
    """NR: output features per panel for ``dtype`` (NV vectors)."""
    return NV * VEC_BYTES // np.dtype(dtype).itemsize


def pack(b, cols=None, out=None):
    """b [K, M] (a torch tensor, any strides) -> panels [ceil(M' / NR), K, NR], a
    contiguous numpy array zero-padded past M': the columns ``cols`` of b in that order
    (an int64 index array or a slice; all M columns by default); written into ``out``
    if given (a contiguous array of that shape)."""
    import torch
    b = b.detach()
    dtype = b.numpy(force=True).dtype
    nr = panel_width(dtype)
    M = _ncols(b, cols)
    shape = (-(-M // nr), b.shape[0], nr)
    out = np.empty(shape, dtype) if out is None else out
    if b.stride(0) < b.stride(1):                   # a transpose (W^T): see _pack_t
        w = b.t().numpy(force=True)                 # W [M, K], rows contiguous
        idx = np.arange(w.shape[0], dtype=np.int64)
        _pack_t(w, idx if cols is None else idx[cols], out)
        return out
    if cols is not None:
        b = b[:, cols if isinstance(cols, slice) else torch.as_tensor(cols)]
    if shape[0] * nr != M:
        b = torch.nn.functional.pad(b, (0, shape[0] * nr - M))
    torch.from_numpy(out).copy_(b.reshape(shape[1], shape[0], nr).permute(1, 0, 2))
    return out


def _ncols(b, cols):
    # how many columns of b [K, M] ``cols`` (None: all, a slice, or indices) selects
    if cols is None:
        return b.shape[1]
    return len(range(b.shape[1])[cols]) if isinstance(cols, slice) else len(cols)


def pack_groups(b, groups):
    """b [K, M] and S column-index arrays or slices -> (panels [sum of each group's
    panels, K, NR], offsets [S + 1] int64): group g packed on its own (``pack(b,
    groups[g])``), so ``gemm_packed(a, panels[offsets[g]:offsets[g + 1]], out_g, n)``
    fills out_g's columns in the group's order."""
    dtype = b.numpy(force=True).dtype
    nr = panel_width(dtype)
    offsets = np.zeros(len(groups) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([-(-_ncols(b, g) // nr) for g in groups])
    out = np.empty((offsets[-1], b.shape[0], nr), dtype)
    for g, cols in enumerate(groups):
        pack(b, cols, out[offsets[g]:offsets[g + 1]])
    return out, offsets


@njit(cache=True, parallel=True)
def _pack_t(w, cols, out):
    # out[p, k, j] = W[cols[p NR + j], k], zero past the last column: the panels of b =
    # W^T from W [M, K]: 16 k at a time, read along W's rows, so each block of a
    # panel ([16, NR], 2 KB) is written while in L1. Measured here (Zen 4), W_hh^T at
    # H = 512 (4 MB): 0.35 ms, against 0.7 ms column by column and 1.9 ms through
    # torch's transposing copies (a fifth of an LSTM forward at B = 1); the row-major
    # case keeps torch's copy (0.2 ms).
    P, K, NR = out.shape
    M = cols.shape[0]
    for p in prange(P):
        for k0 in range(0, K, 16):
            n = min(K - k0, 16)
            for j in range(NR):
                c = p * NR + j
                if c >= M:
                    for k in range(n):
                        out[p, k0 + k, j] = 0
                elif n == 16:                       # a fixed count: unrolled, vector loads
                    r = w[cols[c], k0:k0 + 16]
                    for k in range(16):
                        out[p, k0 + k, j] = r[k]
                else:
                    for k in range(n):
                        out[p, k0 + k, j] = w[cols[c], k0 + k]


def _tile(rows, accumulate=False):
    """An intrinsic out[ro:ro+rows, j:j+NR] = a[r:r+rows, :K] @ panels[p] ([K, NR]), or
    with ``accumulate`` +=, for matmul's blocks of K. Two families, not a runtime flag: the
    flag's loads and selects in every step kernel cost seconds of cold start."""
    @intrinsic
    def tile(typingctx, a, r, panels, p, out, ro, j):
        sig = types.void(a, r, panels, p, out, ro, j)

        def codegen(context, builder, signature, args):
            a_v, r_v, w_v, p_v, o_v, ro_v, j_v = args
            aty, _, wty, _, oty, _, _ = signature.args
            A = context.make_array(aty)(context, builder, a_v)
            W = context.make_array(wty)(context, builder, w_v)
            O = context.make_array(oty)(context, builder, o_v)
            ft = context.get_value_type(aty.dtype)
            size = aty.dtype.bitwidth // 8
            lanes = VEC_BYTES // size
            nr = NV * lanes
            vt = ir.VectorType(ft, lanes)
            i64 = ir.IntType(64)
            c64 = lambda v: ir.Constant(i64, v)         # noqa: E731
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vt, [vt, vt, vt]),
                f"llvm.fma.v{lanes}{'f32' if size == 4 else 'f64'}")
            # element strides (the arrays' byte strides over the item size)
            sa = cgutils.unpack_tuple(builder, A.strides, 2)
            lda = builder.sdiv(sa[0], c64(size))
            lak = builder.sdiv(sa[1], c64(size))   # 1, or matmul's a stored transposed
            ldo = builder.sdiv(cgutils.unpack_tuple(builder, O.strides, 2)[0], c64(size))
            K = cgutils.unpack_tuple(builder, W.shape, 3)[1]
            ldp = builder.sdiv(cgutils.unpack_tuple(builder, W.strides, 3)[0], c64(size))
            abase = builder.gep(A.data, [builder.mul(r_v, lda)])
            wbase = builder.gep(W.data, [builder.mul(p_v, ldp)])
            obase = builder.gep(O.data, [builder.add(builder.mul(ro_v, ldo), j_v)])
            optr = [[builder.bitcast(builder.gep(obase, [builder.add(
                builder.mul(c64(i), ldo), c64(v * lanes))]), vt.as_pointer())
                for v in range(NV)] for i in range(rows)]
            zero = ir.Constant(vt, [0.0] * lanes)
            init = [[builder.load(optr[i][v], align=size) if accumulate else zero
                     for v in range(NV)] for i in range(rows)]
            entry = builder.basic_block
            loop = builder.append_basic_block("panel.loop")
            done = builder.append_basic_block("panel.done")
            splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
            builder.branch(loop)
            builder.position_at_end(loop)
            k = builder.phi(i64)
            k.add_incoming(c64(0), entry)
            acc = [[builder.phi(vt) for _ in range(NV)] for _ in range(rows)]
            for i in range(rows):
                for v in range(NV):
                    acc[i][v].add_incoming(init[i][v], entry)
            wrow = builder.gep(wbase, [builder.mul(k, c64(nr))])
            acol = builder.gep(abase, [builder.mul(k, lak)])
            ws = [builder.load(builder.bitcast(builder.gep(wrow, [c64(v * lanes)]),
                                               vt.as_pointer()), align=size)
                  for v in range(NV)]
            new = []
            for i in range(rows):
                s = builder.load(builder.gep(acol, [builder.mul(c64(i), lda)]))
                one = builder.insert_element(ir.Constant(vt, ir.Undefined), s,
                                             ir.Constant(ir.IntType(32), 0))
                sv = builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined), splat)
                new.append([builder.call(fma, [sv, ws[v], acc[i][v]]) for v in range(NV)])
            k1 = builder.add(k, c64(1))
            k.add_incoming(k1, builder.basic_block)
            for i in range(rows):
                for v in range(NV):
                    acc[i][v].add_incoming(new[i][v], builder.basic_block)
            builder.cbranch(builder.icmp_signed("<", k1, K), loop, done)
            builder.position_at_end(done)
            for i in range(rows):
                for v in range(NV):
                    builder.store(new[i][v], optr[i][v], align=size)
            return context.get_dummy_value()
        return sig, codegen
    return tile


def _dispatch(tiles):
    """rows(a, r, m, ...): m rows (1..MR) at row r through ``tiles`` (the micro-kernels
    of 1..8 rows): one per row count, so each keeps its accumulators in registers (MR
    is at most 8 on every ISA here)."""
    t1, t2, t3, t4, t5, t6, t7, t8 = tiles

    @njit(cache=True)
    def rows(a, r, m, panels, p, out, ro, j):
        if m >= 8:
            t8(a, r, panels, p, out, ro, j)
        elif m == 7:
            t7(a, r, panels, p, out, ro, j)
        elif m == 6:
            t6(a, r, panels, p, out, ro, j)
        elif m == 5:
            t5(a, r, panels, p, out, ro, j)
        elif m == 4:
            t4(a, r, panels, p, out, ro, j)
        elif m == 3:
            t3(a, r, panels, p, out, ro, j)
        elif m == 2:
            t2(a, r, panels, p, out, ro, j)
        else:
            t1(a, r, panels, p, out, ro, j)
    return rows


_rows = _dispatch([_tile(m) for m in range(1, 9)])
_rows_acc = _dispatch([_tile(m, accumulate=True) for m in range(1, 9)])  # adds (matmul)


@njit(cache=True)
def gemm_packed(a, panels, out, n):
    # a [*, K] (unit stride along K), panels [P, K, NR] from pack(), out [*, M] (unit
    # stride along M); rows 0..n-1 of out are written, columns 0..M-1, nothing else
    M = out.shape[1]
    P, K, NR = panels.shape
    if n == 0:
        return
    if K == 0:
        for r in range(n):
            for c in range(M):
                out[r, c] = 0
        return
    scratch = np.empty((MR, NR), out.dtype)
    for p in range(P):
        j = p * NR
        full = j + NR <= M
        for r in range(0, n, MR):
            m = min(MR, n - r)
            if full:
                _rows(a, r, m, panels, p, out, r, j)
            else:                                   # the last panel: M % NR columns
                _rows(a, r, m, panels, p, scratch, 0, 0)
                for i in range(m):
                    for c in range(M - j):
                        out[r + i, j + c] = scratch[i, c]


@njit(cache=True)
def gemm_add(a, panels, out, n):
    # out[:n] += a[:n] @ B (matmul's blocks of K after the first); a any strides,
    # panels [P, K, NR], K > 0
    M = out.shape[1]
    P, K, NR = panels.shape
    scratch = np.zeros((MR, NR), out.dtype)
    for p in range(P):
        j = p * NR
        for r in range(0, n, MR):
            m = min(MR, n - r)
            if j + NR <= M:
                _rows_acc(a, r, m, panels, p, out, r, j)
            else:                                   # the last panel: M % NR columns
                for i in range(m):
                    for c in range(M - j):
                        scratch[i, c] = out[r + i, j + c]
                _rows_acc(a, r, m, panels, p, scratch, 0, 0)
                for i in range(m):
                    for c in range(M - j):
                        out[r + i, j + c] = scratch[i, c]
