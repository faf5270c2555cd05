"""Elman RNN forward and BPTT kernels (Triton, CUDA; TRITON_INTERPRET=1 on CPU).

Dimension legend: T steps, B batch, H hidden; BB rows of the batch per program,
BH = next power of two >= H, BN/BK output/reduction tiles of the hidden dim.
``xproj`` [T, B, H] is the input projection of every step (one GEMM, outside).
All tensors are contiguous; addresses are computed in int64.

One launch runs the whole sequence: program p owns rows [p*BB, (p+1)*BB) and
loops over time. Two layouts, chosen by the launcher:
  ONCHIP  (BH <= 128): W_hh^T is loaded into registers once, before the time
          loop, and the state never leaves the SM.
  tiled   (larger H):  the state round-trips through an L2-resident scratch
          buffer [2, B, H] (ping-pong), W_hh tiles stream from L2 each step;
          a CTA barrier separates the steps.
Variable lengths: row b runs processing steps s < len_b at time t = s (or
len_b - 1 - s when REVERSE); inactive rows keep their state, and positions past
a row's length are written as zeros. Accumulation is fp32 for any input dtype.
"""
import triton
import triton.language as tl

from .. import rnn_bwd_outputs, rnn_fwd_outputs
from ._common import (_copy_rows, _lengths, _precision, _rowdot, _rows, _slot, _tanh, _time,
                      _zero_padding)


@triton.jit
def _act(pre, RELU: tl.constexpr):
    if RELU:
        return tl.maximum(pre, 0.0)
    return _tanh(pre)


@triton.jit
def _act_grad(d, y, RELU: tl.constexpr):
    # derivative written in terms of the activation's output y
    if RELU:
        return tl.where(y > 0.0, d, 0.0)
    return d * (1.0 - y * y)


@triton.jit(do_not_specialize=["T"])
def rnn_fwd_kernel(xproj_ptr, h0_ptr, w_t_ptr, lengths_ptr, out_ptr, hn_ptr, state_ptr,
                   T, B, H,
                   REVERSE: tl.constexpr, RELU: tl.constexpr, VARLEN: tl.constexpr,
                   ONCHIP: tl.constexpr, PRECISION: tl.constexpr,
                   BB: tl.constexpr, BH: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    offs_b, row_ok, lens = _rows(B, BB, lengths_ptr)
    nsteps = tl.max(lens, axis=0)
    dt = out_ptr.dtype.element_ty
    if ONCHIP:
        offs_h = tl.arange(0, BH)
        h_ok = offs_h < H
        m2 = row_ok[:, None] & h_ok[None, :]
        w_t = tl.load(w_t_ptr + offs_h[:, None].to(tl.int64) * H + offs_h[None, :],
                      mask=h_ok[:, None] & h_ok[None, :], other=0.0)   # [BH, BH] stays on chip
        h = tl.load(h0_ptr + offs_b[:, None] * H + offs_h[None, :], mask=m2, other=0.0)
        h = h.to(tl.float32)                                             # [BB, BH]
        for s in range(0, nsteps):
            act = s < lens                                               # [BB]
            t = _time(s, lens, REVERSE)
            off = (t[:, None] * B + offs_b[:, None]) * H + offs_h[None, :]
            m = m2 & act[:, None]
            xp = tl.load(xproj_ptr + off, mask=m, other=0.0).to(tl.float32)
            pre = tl.dot(h.to(dt), w_t, input_precision=PRECISION) + xp
            y = _act(pre, RELU)
            tl.store(out_ptr + off, y.to(dt), mask=m)
            h = tl.where(act[:, None], y, h)
        tl.store(hn_ptr + offs_b[:, None] * H + offs_h[None, :], h.to(dt), mask=m2)
    else:
        # state[0] <- h0; step s reads state[s % 2] and writes state[(s + 1) % 2]
        _copy_rows(h0_ptr, state_ptr, offs_b, row_ok, H, BN)
        tl.debug_barrier()
        for s in range(0, nsteps):
            act = s < lens
            t = _time(s, lens, REVERSE)
            src = _slot(state_ptr, s, B, H)
            dst = _slot(state_ptr, s + 1, B, H)
            for n0 in range(0, H, BN):
                offs_n = n0 + tl.arange(0, BN)
                n_ok = offs_n < H
                acc = _rowdot(src, H, w_t_ptr, H, 0, offs_b, row_ok, offs_n, n_ok, H, dt,
                              PRECISION, BB, BN, BK)
                m = row_ok[:, None] & n_ok[None, :]
                ma = m & act[:, None]
                off = (t[:, None] * B + offs_b[:, None]) * H + offs_n[None, :]
                xp = tl.load(xproj_ptr + off, mask=ma, other=0.0).to(tl.float32)
                y = _act(acc + xp, RELU)
                tl.store(out_ptr + off, y.to(dt), mask=ma)
                old = tl.load(src + offs_b[:, None] * H + offs_n[None, :], mask=m, other=0.0)
                tl.store(dst + offs_b[:, None] * H + offs_n[None, :],
                         tl.where(act[:, None], y, old), mask=m)
            tl.debug_barrier()
        _copy_rows(_slot(state_ptr, nsteps, B, H), hn_ptr, offs_b, row_ok, H, BN)
    if VARLEN:
        _zero_padding(out_ptr, offs_b, lens, T, B, H, BB, BN)


@triton.jit(do_not_specialize=["T"])
def rnn_bwd_kernel(grad_out_ptr, grad_hn_ptr, out_ptr, w_ptr, lengths_ptr,
                   grad_pre_ptr, grad_h0_ptr, state_ptr, g_ptr,
                   T, B, H,
                   REVERSE: tl.constexpr, RELU: tl.constexpr, VARLEN: tl.constexpr,
                   ONCHIP: tl.constexpr, PRECISION: tl.constexpr,
                   BB: tl.constexpr, BH: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # dh carried back: dh_{t-1} = (dL/dpre_t) @ W_hh; rows join at their last step
    offs_b, row_ok, lens = _rows(B, BB, lengths_ptr)
    nsteps = tl.max(lens, axis=0)
    dt = out_ptr.dtype.element_ty
    if ONCHIP:
        offs_h = tl.arange(0, BH)
        h_ok = offs_h < H
        m2 = row_ok[:, None] & h_ok[None, :]
        w = tl.load(w_ptr + offs_h[:, None].to(tl.int64) * H + offs_h[None, :],
                    mask=h_ok[:, None] & h_ok[None, :], other=0.0)     # [BH, BH] stays on chip
        dh = tl.load(grad_hn_ptr + offs_b[:, None] * H + offs_h[None, :], mask=m2, other=0.0)
        dh = dh.to(tl.float32)                                          # [BB, BH]
        for i in range(0, nsteps):
            s = nsteps - 1 - i
            act = s < lens
            t = _time(s, lens, REVERSE)
            off = (t[:, None] * B + offs_b[:, None]) * H + offs_h[None, :]
            m = m2 & act[:, None]
            go = tl.load(grad_out_ptr + off, mask=m, other=0.0).to(tl.float32)
            y = tl.load(out_ptr + off, mask=m, other=0.0).to(tl.float32)
            g = tl.where(m, _act_grad(go + dh, y, RELU), 0.0)
            tl.store(grad_pre_ptr + off, g.to(dt), mask=m)
            dh_new = tl.dot(g.to(dt), w, input_precision=PRECISION)
            dh = tl.where(act[:, None], dh_new, dh)
        tl.store(grad_h0_ptr + offs_b[:, None] * H + offs_h[None, :], dh.to(dt), mask=m2)
    else:
        _copy_rows(grad_hn_ptr, state_ptr, offs_b, row_ok, H, BN)
        tl.debug_barrier()
        for i in range(0, nsteps):
            s = nsteps - 1 - i
            act = s < lens
            t = _time(s, lens, REVERSE)
            src = _slot(state_ptr, i, B, H)
            dst = _slot(state_ptr, i + 1, B, H)
            # phase 1: this step's pre-activation gradient, all of H, into g scratch
            for n0 in range(0, H, BN):
                offs_n = n0 + tl.arange(0, BN)
                m = row_ok[:, None] & (offs_n < H)[None, :]
                ma = m & act[:, None]
                off = (t[:, None] * B + offs_b[:, None]) * H + offs_n[None, :]
                dh = tl.load(src + offs_b[:, None] * H + offs_n[None, :], mask=m, other=0.0)
                go = tl.load(grad_out_ptr + off, mask=ma, other=0.0).to(tl.float32)
                y = tl.load(out_ptr + off, mask=ma, other=0.0).to(tl.float32)
                g = tl.where(ma, _act_grad(go + dh, y, RELU), 0.0)
                tl.store(grad_pre_ptr + off, g.to(dt), mask=ma)
                tl.store(g_ptr + offs_b[:, None] * H + offs_n[None, :], g.to(dt), mask=m)
            tl.debug_barrier()
            # phase 2: dh_prev = g @ W_hh, tile by tile
            for n0 in range(0, H, BN):
                offs_n = n0 + tl.arange(0, BN)
                n_ok = offs_n < H
                acc = _rowdot(g_ptr, H, w_ptr, H, 0, offs_b, row_ok, offs_n, n_ok, H, dt,
                              PRECISION, BB, BN, BK)
                m = row_ok[:, None] & n_ok[None, :]
                old = tl.load(src + offs_b[:, None] * H + offs_n[None, :], mask=m, other=0.0)
                tl.store(dst + offs_b[:, None] * H + offs_n[None, :],
                         tl.where(act[:, None], acc, old), mask=m)
            tl.debug_barrier()
        _copy_rows(_slot(state_ptr, nsteps, B, H), grad_h0_ptr, offs_b, row_ok, H, BN)
    if VARLEN:
        _zero_padding(grad_pre_ptr, offs_b, lens, T, B, H, BB, BN)


# ----------------------------------------------------------------- launchers
BB = 16   # rows per program: the smallest tl.dot M

# Largest BH whose weight tile stays in registers, and the tiles of the tiled
# layout, per operand width. Chosen so that every configuration compiles for
# sm_80 and sm_90a without spills (tests/test_triton_aot.py checks it): an fp32
# dot in IEEE precision runs on FMA units and needs far more registers than a
# 16-bit tensor-core dot.
_LIMITS = {4: dict(onchip_max=32, BN=16, BK=32, tiled_warps=4),
           2: dict(onchip_max=128, BN=64, BK=64, tiled_warps=8)}


def config(H, dtype):
    """The launch configuration for hidden size H: dict of constexprs + num_warps."""
    lim = _LIMITS[4 if dtype.itemsize == 4 else 2]
    BH = max(16, triton.next_power_of_2(H))
    if BH <= lim["onchip_max"]:
        return dict(ONCHIP=True, BB=BB, BH=BH, BN=BH, BK=BH, num_warps=4 if BH <= 64 else 8)
    # BH is unused by the tiled layout: pin it so that every large H shares one config
    return dict(ONCHIP=False, BB=BB, BH=lim["BN"], BN=lim["BN"], BK=lim["BK"],
                num_warps=lim["tiled_warps"])


def configs():
    """Every (dtype, configuration) the launchers can pick (compiled ahead of time in tests)."""
    import torch
    out = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for H in (16, 32, 64, 128, 256):
            if (dtype, config(H, dtype)) not in out:
                out.append((dtype, config(H, dtype)))
    return out


def rnn_fwd(*, xproj, h0, w_hh, lengths, reverse, nonlinearity, save=True):
    """xproj [T, B, H], h0 [B, H], w_hh [H, H] -> (out [T, B, H], h_n [B, H]).
    ``save`` is part of the launcher contract; an RNN saves nothing beyond ``out``."""
    import torch
    T, B, H = xproj.shape
    out, h_n = rnn_fwd_outputs(xproj)
    if B == 0:
        return out, h_n
    cfg = config(H, xproj.dtype)
    state = xproj if cfg["ONCHIP"] else torch.empty((2, B, H), dtype=torch.float32, device=xproj.device)
    rnn_fwd_kernel[(triton.cdiv(B, cfg["BB"]),)](
        xproj.contiguous(), h0.contiguous(), w_hh.t().contiguous(),
        _lengths(lengths, B, T, xproj.device), out, h_n, state, T, B, H,
        REVERSE=reverse, RELU=nonlinearity == "relu", VARLEN=lengths is not None,
        PRECISION=_precision(xproj.dtype), **cfg)
    return out, h_n


def rnn_bwd(*, grad_out, grad_hn, out, w_hh, lengths, reverse, nonlinearity):
    """-> (grad_pre [T, B, H] = dL/d(xproj) per step, grad_h0 [B, H])."""
    import torch
    T, B, H = out.shape
    grad_pre, grad_h0 = rnn_bwd_outputs(out)
    if B == 0:
        return grad_pre, grad_h0
    cfg = config(H, out.dtype)
    if cfg["ONCHIP"]:
        state = g = out
    else:
        state = torch.empty((2, B, H), dtype=torch.float32, device=out.device)
        g = torch.empty((B, H), dtype=out.dtype, device=out.device)
    rnn_bwd_kernel[(triton.cdiv(B, cfg["BB"]),)](
        grad_out.contiguous(), grad_hn.contiguous(), out, w_hh.contiguous(),
        _lengths(lengths, B, T, out.device), grad_pre, grad_h0, state, g, T, B, H,
        REVERSE=reverse, RELU=nonlinearity == "relu", VARLEN=lengths is not None,
        PRECISION=_precision(out.dtype), **cfg)
    return grad_pre, grad_h0
