"""Helpers shared by the Triton kernels and launchers (see rnn.py for the legend)."""
import triton
import triton.language as tl


@triton.jit
def _tanh(x):
    # 1 - 2 / (exp(2x) + 1): saturates to +-1 without overflow for large |x|
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _time(s, lens, REVERSE: tl.constexpr):
    # [BB] time index of every row at processing step s
    if REVERSE:
        return (lens - 1 - s).to(tl.int64)
    return (tl.zeros_like(lens) + s).to(tl.int64)


@triton.jit
def _rows(B, BB: tl.constexpr, lengths_ptr):
    offs_b = tl.program_id(0).to(tl.int64) * BB + tl.arange(0, BB)   # [BB]
    row_ok = offs_b < B
    lens = tl.load(lengths_ptr + offs_b, mask=row_ok, other=0)         # [BB]
    return offs_b, row_ok, lens


@triton.jit
def _copy_rows(src_ptr, dst_ptr, offs_b, row_ok, H, BN: tl.constexpr):
    # dst[b, :] = src[b, :] for this program's rows, converted to dst's dtype
    for n0 in range(0, H, BN):
        offs_n = n0 + tl.arange(0, BN)
        m = row_ok[:, None] & (offs_n < H)[None, :]
        off = offs_b[:, None] * H + offs_n[None, :]
        v = tl.load(src_ptr + off, mask=m, other=0.0)
        tl.store(dst_ptr + off, v.to(dst_ptr.dtype.element_ty), mask=m)


@triton.jit
def _zero_padding(ptr, offs_b, lens, T, B, H, BB: tl.constexpr, BH: tl.constexpr):
    # positions past a row's length: zeros, like pad_packed_sequence
    for n0 in range(0, H, BH):
        offs_h = n0 + tl.arange(0, BH)
        for t in range(0, T):
            pad = ((t >= lens) & (offs_b < B))[:, None] & (offs_h < H)[None, :]
            tl.store(ptr + (t * B + offs_b[:, None]) * H + offs_h[None, :],
                     tl.zeros((BB, BH), ptr.dtype.element_ty), mask=pad)


@triton.jit
def _slot(state_ptr, k, B, W):
    # ping-pong scratch [2, B, W]: step k reads slot k % 2 and writes slot (k + 1) % 2
    return state_ptr + ((k % 2) * B).to(tl.int64) * W


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _rowdot(a_ptr, a_stride, w_ptr, w_stride, w_col, offs_b, row_ok, offs_n, n_ok, K,
            dt: tl.constexpr, PRECISION: tl.constexpr, BB: tl.constexpr, BN: tl.constexpr,
            BK: tl.constexpr):
    # [BB, BN] = a[rows, :K] @ w[:K, w_col + offs_n]; a and w row-major with the given strides
    acc = tl.zeros((BB, BN), tl.float32)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        k_ok = offs_k < K
        ak = tl.load(a_ptr + offs_b[:, None] * a_stride + offs_k[None, :],
                     mask=row_ok[:, None] & k_ok[None, :], other=0.0).to(dt)
        wk = tl.load(w_ptr + offs_k[:, None].to(tl.int64) * w_stride + w_col + offs_n[None, :],
                     mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc += tl.dot(ak, wk, input_precision=PRECISION)
    return acc


def _precision(dtype):
    import torch
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"          # torch's fp32 semantics unless the user allowed tf32
    return "tf32" if dtype == torch.float32 else "ieee"


def _lengths(lengths, B, T, device):
    import torch
    if lengths is None:
        return torch.full((B,), T, dtype=torch.int64, device=device)
    return lengths.to(device=device, dtype=torch.int64)
